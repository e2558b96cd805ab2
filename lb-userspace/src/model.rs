//! Vocabulary shared by the config, the controller and the CLI.

use std::{fmt, str::FromStr};

pub use crate::snapshot::{Forwarding, Protocol};

/// The LVS schedulers, with ipvsadm's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheduler {
    Rr,
    Wrr,
    Lc,
    Wlc,
    Sed,
    Nq,
    Sh,
    Dh,
    Lblc,
    Lblcr,
    Mh,
    Fo,
    Ovf,
}

impl Scheduler {
    pub const ALL: [Scheduler; 13] = [
        Self::Rr,
        Self::Wrr,
        Self::Lc,
        Self::Wlc,
        Self::Sed,
        Self::Nq,
        Self::Sh,
        Self::Dh,
        Self::Lblc,
        Self::Lblcr,
        Self::Mh,
        Self::Fo,
        Self::Ovf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Lc => "lc",
            Self::Wlc => "wlc",
            Self::Sed => "sed",
            Self::Nq => "nq",
            Self::Sh => "sh",
            Self::Dh => "dh",
            Self::Lblc => "lblc",
            Self::Lblcr => "lblcr",
            Self::Mh => "mh",
            Self::Fo => "fo",
            Self::Ovf => "ovf",
        }
    }

    /// The number the datapath knows it by.
    pub fn code(self) -> u8 {
        use lb_common::scheduler as s;
        match self {
            Self::Rr => s::RR,
            Self::Wrr => s::WRR,
            Self::Lc => s::LC,
            Self::Wlc => s::WLC,
            Self::Sed => s::SED,
            Self::Nq => s::NQ,
            Self::Sh => s::SH,
            Self::Dh => s::DH,
            Self::Lblc => s::LBLC,
            Self::Lblcr => s::LBLCR,
            Self::Mh => s::MH,
            Self::Fo => s::FO,
            Self::Ovf => s::OVF,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|s| s.name()).collect();
            format!("unknown scheduler \"{s}\" (one of {})", names.join(", "))
        })
    }
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => lb_common::IPPROTO_TCP,
            Self::Udp => lb_common::IPPROTO_UDP,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            lb_common::IPPROTO_TCP => Some(Self::Tcp),
            lb_common::IPPROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            _ => Err(format!("unknown protocol \"{s}\" (tcp or udp)")),
        }
    }
}

impl Forwarding {
    pub fn code(self) -> u8 {
        match self {
            Self::Dr => lb_common::forwarding::DR,
            Self::Tun => lb_common::forwarding::TUN,
            Self::Nat => lb_common::forwarding::NAT,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            lb_common::forwarding::DR => Some(Self::Dr),
            lb_common::forwarding::TUN => Some(Self::Tun),
            lb_common::forwarding::NAT => Some(Self::Nat),
            _ => None,
        }
    }

    pub fn is_implemented(self) -> bool {
        matches!(self, Self::Dr | Self::Tun)
    }
}

impl FromStr for Forwarding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dr" => Ok(Self::Dr),
            "tun" => Ok(Self::Tun),
            "nat" => Ok(Self::Nat),
            _ => Err(format!("unknown forwarding method \"{s}\" (dr, tun or nat)")),
        }
    }
}

/// `ipvsadm --set tcp tcpfin udp`, seconds.
pub use crate::snapshot::Timeouts;

impl Default for Timeouts {
    fn default() -> Self {
        Self { tcp: 900, tcpfin: 120, udp: 300 }
    }
}

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
