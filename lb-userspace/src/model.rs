//! lbd's vocabulary, shared by the config, the controller and the tables.
//! The enums and the timeouts are defined where lbctl shares them without
//! the datapath's crates (lb-common's `model`, lb-ipvsadm's `snapshot`);
//! they are re-exported here so lbd's modules name them in one place.
//! [`ServiceId`] and [`ServiceOptions`] are lbd's own.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

pub use lb_common::{Forwarding, Protocol, Scheduler};

/// `ipvsadm -M`: a mask for an IPv4 service, a prefix length for an IPv6 one.
pub use lb_ipvsadm::command::Netmask;
/// `ipvsadm --set tcp tcpfin udp`, seconds.
pub use lb_ipvsadm::snapshot::Timeouts;

/// A virtual service, as ipvsadm names one: protocol, VIP and port, or a
/// firewall mark and an address family (IPVS's ip_vs_service_user has the
/// same fields). The config's services, the table in force, health checks,
/// VRRP's tracked services and lbctl's `-Z` all name services by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceId {
    /// Tcp for a firewall-mark service (whose packets may be of any).
    pub protocol: Protocol,
    /// A firewall-mark service's is the unspecified address of its family.
    pub vip: IpAddr,
    /// 0 = every port of the VIP (and for a firewall-mark service).
    pub port: u16,
    /// 0, or the firewall mark that alone names the service (with the
    /// family of `vip`).
    pub fwmark: u32,
}

impl ServiceId {
    /// The service of protocol, VIP and port.
    pub fn address(protocol: Protocol, vip: IpAddr, port: u16) -> Self {
        Self { protocol, vip, port, fwmark: 0 }
    }

    /// Firewall-mark service `mark`, of IPv6 or IPv4.
    pub fn fwmark(mark: u32, ipv6: bool) -> Self {
        let vip = if ipv6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        Self { protocol: Protocol::Tcp, vip, port: 0, fwmark: mark }
    }
}

/// "tcp 172.16.100.1:80", as keepalived's logs and `track_service` write it;
/// an IPv6 VIP in brackets, as ipvsadm writes it: "tcp [2001:db8::1]:80".
/// A firewall-mark service: "fwmark 1", "fwmark 2 IPv6" (ipvsadm's `FWM  2
/// IPv6`).
impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fwmark != 0 {
            return write!(f, "fwmark {}{}", self.fwmark, if self.vip.is_ipv6() { " IPv6" } else { "" });
        }
        write!(f, "{} {}", self.protocol.name(), SocketAddr::new(self.vip, self.port))
    }
}

/// "PROTOCOL VIP:PORT", the protocol in either case, an IPv6 VIP in
/// brackets; or "fwmark MARK" with "IPv6" after it for an IPv6 one.
impl FromStr for ServiceId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "\"{text}\" is not \"PROTOCOL VIP:PORT\" (such as \"tcp 172.16.100.1:80\") or \"fwmark MARK [IPv6]\""
            )
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        if words.first().is_some_and(|w| w.eq_ignore_ascii_case("fwmark")) {
            return match words[1..] {
                [mark] => mark.parse().ok().filter(|m| *m != 0).map(|m| Self::fwmark(m, false)),
                [mark, family] if family.eq_ignore_ascii_case("ipv6") => {
                    mark.parse().ok().filter(|m| *m != 0).map(|m| Self::fwmark(m, true))
                }
                _ => None,
            }
            .ok_or_else(bad);
        }
        let [protocol, addr] = words[..] else { return Err(bad()) };
        let protocol: Protocol = protocol.to_ascii_lowercase().parse()?;
        let addr = addr.parse::<SocketAddr>().map_err(|_| bad())?;
        Ok(Self::address(protocol, addr.ip(), addr.port()))
    }
}

/// One `match` of a firewall-mark service: what the firewall rule marking
/// its packets would have matched (at XDP there is no mark to read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkMatch {
    pub protocol: Protocol,
    /// The network's first address (its host bits zero).
    pub net: IpAddr,
    /// 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix_len: u8,
    /// Destination ports, each range inclusive.
    pub ports: Vec<(u16, u16)>,
}

impl MarkMatch {
    /// Whether a packet could match both (same protocol and family, one
    /// network within the other, a port in common).
    pub fn overlaps(&self, other: &MarkMatch) -> bool {
        let prefix = self.prefix_len.min(other.prefix_len);
        self.protocol == other.protocol
            && self.net.is_ipv6() == other.net.is_ipv6()
            && net_bits(self.net, prefix) == net_bits(other.net, prefix)
            && self.ports.iter().any(|a| other.ports.iter().any(|b| a.0 <= b.1 && b.0 <= a.1))
    }

    /// Whether it takes a packet of `protocol` (its number) to `addr`:`port`.
    pub fn takes(&self, protocol: u8, addr: IpAddr, port: u16) -> bool {
        self.protocol.number() == protocol
            && addr.is_ipv6() == self.net.is_ipv6()
            && net_bits(addr, self.prefix_len) == net_bits(self.net, self.prefix_len)
            && self.ports.iter().any(|&(first, last)| (first..=last).contains(&port))
    }

    /// How many addresses the network holds, capped (IPv6's do not fit).
    pub fn addresses(&self) -> u128 {
        let bits = if self.net.is_ipv6() { 128 } else { 32 };
        1u128.checked_shl(u32::from(bits - self.prefix_len.min(bits))).unwrap_or(u128::MAX)
    }

    /// How many (port, network) entries the datapath holds for it.
    pub fn entries(&self) -> usize {
        self.ports.iter().map(|(a, b)| usize::from(b - a) + 1).sum()
    }

    /// "tcp 10.0.0.0/24 ports 80,8000-8080", for messages.
    pub fn describe(&self) -> String {
        let ports: Vec<String> =
            self.ports.iter().map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
        format!("{} {}/{} ports {}", self.protocol.name(), self.net, self.prefix_len, ports.join(","))
    }
}

/// The first `prefix` bits of `addr`, as a number.
pub fn net_bits(addr: IpAddr, prefix: u8) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(a.to_bits() & u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)),
        IpAddr::V6(a) => a.to_bits() & ipv6_prefix_bits(prefix),
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
        let id = ServiceId::address(Protocol::Tcp, IpAddr::from([172, 16, 100, 1]), 80);
        assert_eq!(id.to_string(), "tcp 172.16.100.1:80");
        assert_eq!("TCP 172.16.100.1:80".parse(), Ok(id));
        assert_eq!(
            "tcp 172.16.100.1".parse::<ServiceId>(),
            Err("\"tcp 172.16.100.1\" is not \"PROTOCOL VIP:PORT\" (such as \"tcp 172.16.100.1:80\") or \"fwmark MARK [IPv6]\""
                .into())
        );
        assert_eq!("sctp 172.16.100.1:80".parse::<ServiceId>(), Err("unknown protocol \"sctp\" (tcp or udp)".into()));
    }

    #[test]
    fn firewall_mark_service_ids() {
        let v4 = ServiceId::fwmark(1, false);
        assert_eq!(v4.to_string(), "fwmark 1");
        assert_eq!("FWMARK 1".parse(), Ok(v4));
        let v6 = ServiceId::fwmark(2, true);
        assert_eq!(v6.to_string(), "fwmark 2 IPv6");
        assert_eq!("fwmark 2 ipv6".parse(), Ok(v6));
        assert_ne!(v4, ServiceId::fwmark(1, true));
        assert!("fwmark 0".parse::<ServiceId>().is_err());
        assert!("fwmark 1 ipv4".parse::<ServiceId>().is_err());
    }

    #[test]
    fn mark_matches_overlap_on_a_common_packet() {
        let m = |net: &str, prefix_len: u8, ports: &[(u16, u16)]| MarkMatch {
            protocol: Protocol::Tcp,
            net: net.parse().unwrap(),
            prefix_len,
            ports: ports.to_vec(),
        };
        let web = m("10.0.0.0", 24, &[(80, 80), (443, 443)]);
        assert!(web.overlaps(&m("10.0.0.7", 32, &[(443, 443)])), "a host of the network, a common port");
        assert!(!web.overlaps(&m("10.0.0.7", 32, &[(8000, 8080)])), "no common port");
        assert!(!web.overlaps(&m("10.0.1.0", 24, &[(80, 80)])), "another network");
        assert!(m("10.0.0.0", 8, &[(1, 100)]).overlaps(&web), "the wider one first");
        assert!(!web.overlaps(&MarkMatch { protocol: Protocol::Udp, ..web.clone() }), "another protocol");
        assert!(!web.overlaps(&m("::", 0, &[(80, 80)])), "another family");
        assert_eq!((web.entries(), web.addresses()), (2, 256));
        assert_eq!(m("2001:db8::", 64, &[(8000, 8080)]).entries(), 81);
        assert_eq!(web.describe(), "tcp 10.0.0.0/24 ports 80,443");
    }

    #[test]
    fn ipv6_service_ids_are_bracketed() {
        let vip: IpAddr = "2001:db8::1".parse().unwrap();
        let id = ServiceId::address(Protocol::Udp, vip, 53);
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
