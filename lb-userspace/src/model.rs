//! lbd's vocabulary, shared by the config, the controller and the tables.
//! The enums and the timeouts are defined where lbctl shares them without
//! the datapath's crates (lb-common's `model`, lb-ipvsadm's `snapshot`);
//! they are re-exported here so lbd's modules name them in one place.

pub use lb_common::{Forwarding, Protocol, Scheduler};

/// `ipvsadm --set tcp tcpfin udp`, seconds.
pub use lb_ipvsadm::snapshot::Timeouts;

/// Per-service options beyond the scheduler (ipvsadm -p, -M, -b).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceOptions {
    /// `lb_common::service_flag` bits for the scheduler flags and sloppy TCP.
    pub flags: u16,
    /// Seconds a client sticks to its real server after its last
    /// connection; `None` when the service is not persistent.
    pub persistence_timeout: Option<u32>,
    /// Clients in the same network under this mask share the server.
    pub persistence_netmask: std::net::Ipv4Addr,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self { flags: 0, persistence_timeout: None, persistence_netmask: std::net::Ipv4Addr::BROADCAST }
    }
}

/// Scheduler flags with ipvsadm's names (`-b`), and the bit each sets.
pub const SCHED_FLAGS: [(&str, u16); 4] = [
    ("sh-fallback", lb_common::service_flag::SH_FALLBACK),
    ("sh-port", lb_common::service_flag::SH_PORT),
    ("mh-fallback", lb_common::service_flag::MH_FALLBACK),
    ("mh-port", lb_common::service_flag::MH_PORT),
];

impl ServiceOptions {
    /// The scheduler flags set, by ipvsadm name, in ipvsadm's order.
    pub fn sched_flag_names(&self) -> Vec<String> {
        SCHED_FLAGS.iter().filter(|(_, bit)| self.flags & bit != 0).map(|(n, _)| n.to_string()).collect()
    }
}
