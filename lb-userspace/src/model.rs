//! lbd's vocabulary, shared by the config, the controller and the tables.
//! The enums and the timeouts are defined where lbctl shares them without
//! the datapath's crates (lb-common's `model`, lb-ipvsadm's `snapshot`);
//! they are re-exported here so lbd's modules name them in one place.
//! [`ServiceId`] and [`ServiceOptions`] are lbd's own.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    str::FromStr,
};

pub use lb_common::{Forwarding, Protocol, Scheduler};

/// `ipvsadm -M`: a mask for an IPv4 service, a prefix length for an IPv6 one.
pub use lb_ipvsadm::command::Netmask;
/// `ipvsadm --set tcp tcpfin udp`, seconds.
pub use lb_ipvsadm::snapshot::Timeouts;

/// A virtual service, as ipvsadm names one: protocol, VIP and port. The
/// config's services, the table in force, health checks, VRRP's tracked
/// services and lbctl's `-Z` all name services by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    pub protocol: Protocol,
    pub vip: IpAddr,
    /// 0 = every port of the VIP.
    pub port: u16,
}

/// "tcp 172.16.100.1:80", as keepalived's logs and `track_service` write it;
/// an IPv6 VIP in brackets, as ipvsadm writes it: "tcp [2001:db8::1]:80".
impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol.name(), SocketAddr::new(self.vip, self.port))
    }
}

/// "PROTOCOL VIP:PORT", the protocol in either case, an IPv6 VIP in brackets.
impl FromStr for ServiceId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("\"{text}\" is not \"PROTOCOL VIP:PORT\" (such as \"tcp 172.16.100.1:80\")");
        let mut words = text.split_whitespace();
        let (Some(protocol), Some(addr), None) = (words.next(), words.next(), words.next()) else { return Err(bad()) };
        let protocol: Protocol = protocol.to_ascii_lowercase().parse()?;
        let addr = addr.parse::<SocketAddr>().map_err(|_| bad())?;
        Ok(Self { protocol, vip: addr.ip(), port: addr.port() })
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
    /// Clients in the same network under this mask share the server. Of
    /// the VIP's family: [`Netmask::host`] of it when not set.
    pub persistence_netmask: Netmask,
}

/// The persistence netmask as the datapath's maps hold it
/// (`lb_common::Service::persistence_mask`): address words, as
/// `lb_common::ip_words` stores an address of the mask's family.
pub fn persistence_mask_words(mask: Netmask) -> [u32; 4] {
    match mask {
        Netmask::V4(m) => lb_common::ipv4_words(m.octets()),
        Netmask::V6(prefix) => lb_common::ipv6_words(ipv6_prefix_bits(prefix).to_be_bytes()),
    }
}

/// An IPv6 prefix length as a mask (`Ipv6Addr::to_bits` order).
pub fn ipv6_prefix_bits(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0)
}

/// Whether `client` is the first address of its network under `mask` (what
/// a persistence template's client address is): false across families.
pub fn is_masked(client: IpAddr, mask: Netmask) -> bool {
    match (client, mask) {
        (IpAddr::V4(a), Netmask::V4(m)) => a.to_bits() & m.to_bits() == a.to_bits(),
        (IpAddr::V6(a), Netmask::V6(p)) => a.to_bits() & ipv6_prefix_bits(p) == a.to_bits(),
        _ => false,
    }
}

/// The netmask the datapath's `words` hold for a service of `family`
/// (`lb_common::AF_INET6` or IPv4), as [`persistence_mask_words`] wrote it.
pub fn persistence_mask_from_words(words: [u32; 4], family: u8) -> Netmask {
    match lb_common::ip_from_words(words, family) {
        IpAddr::V4(m) => Netmask::V4(m),
        IpAddr::V6(m) => Netmask::V6(u128::from(m).leading_ones() as u8),
    }
}

/// The flag bits a service's `stateless_fallback` sets under `scheduler`:
/// the fallback itself and the scheduler's own walk past a server out of
/// service (mh-fallback, sh-fallback), so that every director gives a
/// flow the same server. `None` for a scheduler that cannot: one that
/// counts, rotates or caches, and dh, which hashes the VIP alone and has
/// no walk (its one server out, the whole VIP would be).
pub fn stateless_fallback_bits(scheduler: Scheduler) -> Option<u16> {
    use lb_common::service_flag as f;
    match scheduler {
        Scheduler::Mh => Some(f::STATELESS_FALLBACK | f::MH_FALLBACK),
        Scheduler::Sh => Some(f::STATELESS_FALLBACK | f::SH_FALLBACK),
        _ => None,
    }
}

impl Default for ServiceOptions {
    fn default() -> Self {
        Self { flags: 0, persistence_timeout: None, persistence_netmask: Netmask::V4(Ipv4Addr::BROADCAST) }
    }
}

impl ServiceOptions {
    /// The defaults for a service whose VIP is `vip`: one client per
    /// template, in the VIP's family.
    pub fn for_vip(vip: IpAddr) -> Self {
        Self { persistence_netmask: Netmask::host(vip), ..Self::default() }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ids_read_like_ipvsadm() {
        let id = ServiceId { protocol: Protocol::Tcp, vip: IpAddr::from([172, 16, 100, 1]), port: 80 };
        assert_eq!(id.to_string(), "tcp 172.16.100.1:80");
        assert_eq!("TCP 172.16.100.1:80".parse(), Ok(id));
        assert_eq!(
            "tcp 172.16.100.1".parse::<ServiceId>(),
            Err("\"tcp 172.16.100.1\" is not \"PROTOCOL VIP:PORT\" (such as \"tcp 172.16.100.1:80\")".into())
        );
        assert_eq!("sctp 172.16.100.1:80".parse::<ServiceId>(), Err("unknown protocol \"sctp\" (tcp or udp)".into()));
    }

    #[test]
    fn ipv6_service_ids_are_bracketed() {
        let vip: IpAddr = "2001:db8::1".parse().unwrap();
        let id = ServiceId { protocol: Protocol::Udp, vip, port: 53 };
        assert_eq!(id.to_string(), "udp [2001:db8::1]:53");
        assert_eq!("UDP [2001:db8::1]:53".parse(), Ok(id));
        // Unbracketed, the port cannot be told from the address.
        assert!("udp 2001:db8::1:53".parse::<ServiceId>().is_err());
    }

    #[test]
    fn persistence_masks_as_the_maps_hold_them() {
        let v4 = Netmask::V4(Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(persistence_mask_words(v4), lb_common::ipv4_words([255, 255, 255, 0]));
        let all = u32::MAX;
        let top_bit = u32::from_ne_bytes([0x80, 0, 0, 0]);
        for (prefix, words) in [(128, [all; 4]), (64, [all, all, 0, 0]), (1, [top_bit, 0, 0, 0])] {
            assert_eq!(persistence_mask_words(Netmask::V6(prefix)), words, "/{prefix}");
            assert_eq!(persistence_mask_from_words(words, lb_common::AF_INET6), Netmask::V6(prefix));
        }
        assert_eq!(persistence_mask_from_words(persistence_mask_words(v4), lb_common::AF_INET), v4);
        assert!(is_masked("2001:db8:1:2::".parse().unwrap(), Netmask::V6(64)));
        assert!(!is_masked("2001:db8:1:2::1".parse().unwrap(), Netmask::V6(64)));
        assert!(!is_masked("10.0.0.0".parse().unwrap(), Netmask::V6(64)), "across families");
    }
}
