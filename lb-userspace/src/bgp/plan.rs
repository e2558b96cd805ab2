//! What to announce, as a function of the services' state, and the steps
//! from what the daemon holds to that: no I/O here.

use std::{
    collections::BTreeSet,
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use crate::config::ServiceConfig;

/// An IPv4 prefix lbd announces: a VIP's host route (/32), or a
/// firewall-mark service's match network (its packets are the mark's,
/// whichever address in it they go to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The network's first address (its host bits zero).
    pub addr: Ipv4Addr,
    /// 0..=32.
    pub len: u8,
}

impl Prefix {
    /// A VIP's host route.
    pub fn host(vip: Ipv4Addr) -> Self {
        Prefix { addr: vip, len: 32 }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// "A.B.C.D" (a host route) or "A.B.C.D/N" with its host bits zero.
impl FromStr for Prefix {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad =
            || format!("\"{text}\" is not an IPv4 address or network (A.B.C.D/N, host bits zero)");
        let (addr, len) = match text.split_once('/') {
            Some((a, n)) => (a, n.parse::<u8>().map_err(|_| bad())?),
            None => (text, 32),
        };
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let mask = u32::MAX
            .checked_shl(32 - u32::from(len.min(32)))
            .unwrap_or(0);
        if len > 32 || addr.to_bits() & !mask != 0 {
            return Err(bad());
        }
        Ok(Prefix { addr, len })
    }
}

/// What announcing `s` means: its VIP's host route, or for a firewall-mark
/// service each of its IPv4 match networks (a network over several ports
/// or protocols once). IPv6 ones are not announced (gobgp is driven for
/// IPv4 routes only, for now).
pub fn service_prefixes(s: &ServiceConfig) -> Vec<Prefix> {
    if s.fwmark == 0 {
        return match s.vip {
            IpAddr::V4(vip) => vec![Prefix::host(vip)],
            IpAddr::V6(_) => vec![],
        };
    }
    let networks: BTreeSet<Prefix> = s
        .matches
        .iter()
        .filter_map(|m| match m.net {
            IpAddr::V4(addr) => Some(Prefix {
                addr,
                len: m.prefix_len,
            }),
            IpAddr::V6(_) => None,
        })
        .collect();
    networks.into_iter().collect()
}

/// One service as route health injection sees it: a VIP's service, or a
/// firewall-mark service once for each of its IPv4 match networks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceState {
    pub prefix: Prefix,
    /// keepalived's quorum: enough live weight among its real servers.
    pub quorum: bool,
    /// A VRRP instance of this director is backup for the VIP.
    pub standby: bool,
}

/// The prefixes to announce: each of `chosen` (every service's, when
/// empty) whose services all hold their quorum and none stands by. A VIP
/// that cannot serve all its ports goes to the directors that can; a
/// prefix with no service here is never announced.
pub fn wanted(chosen: &[Prefix], services: &[ServiceState]) -> BTreeSet<Prefix> {
    let candidates: BTreeSet<Prefix> = if chosen.is_empty() {
        services.iter().map(|s| s.prefix).collect()
    } else {
        chosen.iter().copied().collect()
    };
    candidates
        .into_iter()
        .filter(|prefix| {
            let mut of_vip = services.iter().filter(|s| s.prefix == *prefix).peekable();
            of_vip.peek().is_some() && of_vip.all(|s| s.quorum && !s.standby)
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Announce(Prefix),
    Withdraw(Prefix),
}

/// From `announced` (what the daemon holds of ours) to `wanted`:
/// withdrawals first, so a VIP that cannot be served leaves before anything
/// else is said.
pub fn steps(announced: &BTreeSet<Prefix>, wanted: &BTreeSet<Prefix>) -> Vec<Step> {
    announced
        .difference(wanted)
        .map(|v| Step::Withdraw(*v))
        .chain(wanted.difference(announced).map(|v| Step::Announce(*v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Prefix {
        Prefix::host(Ipv4Addr::new(10, 9, 0, last))
    }

    fn svc(vip: u8, quorum: bool) -> ServiceState {
        ServiceState {
            prefix: ip(vip),
            quorum,
            standby: false,
        }
    }

    #[test]
    fn a_vip_is_announced_while_all_its_services_hold_quorum() {
        let services = [
            svc(1, true),
            svc(1, true),
            svc(2, true),
            svc(2, false),
            svc(3, false),
        ];
        assert_eq!(wanted(&[], &services), BTreeSet::from([ip(1)]));
    }

    #[test]
    fn only_chosen_vips_and_never_one_without_a_service() {
        let services = [svc(1, true), svc(2, true)];
        assert_eq!(wanted(&[ip(2), ip(4)], &services), BTreeSet::from([ip(2)]));
    }

    #[test]
    fn a_vrrp_backup_does_not_announce() {
        let services = [ServiceState {
            standby: true,
            ..svc(1, true)
        }];
        assert!(wanted(&[], &services).is_empty());
    }

    #[test]
    fn withdrawals_come_first() {
        let announced = BTreeSet::from([ip(1), ip(2)]);
        let wanted = BTreeSet::from([ip(2), ip(3)]);
        assert_eq!(
            steps(&announced, &wanted),
            [Step::Withdraw(ip(1)), Step::Announce(ip(3))]
        );
        assert!(steps(&wanted, &wanted).is_empty());
    }

    #[test]
    fn a_firewall_marks_networks_are_announced_as_its_vips_are() {
        let net: Prefix = "10.9.1.0/24".parse().unwrap();
        let mark = |prefix, quorum, standby| ServiceState {
            prefix,
            quorum,
            standby,
        };
        // A mark over two networks, beside a VIP's service.
        let other: Prefix = "10.9.2.128/25".parse().unwrap();
        let services = [
            mark(net, true, false),
            mark(other, true, false),
            svc(1, true),
        ];
        assert_eq!(wanted(&[], &services), BTreeSet::from([ip(1), net, other]));
        // Chosen, or not.
        assert_eq!(wanted(&[net], &services), BTreeSet::from([net]));
        // A network shared with another mark that lost its quorum, or
        // standing by for VRRP, is not announced.
        let services = [
            mark(net, true, false),
            mark(net, false, false),
            mark(other, true, true),
        ];
        assert!(wanted(&[], &services).is_empty());
        assert_eq!(
            steps(&BTreeSet::from([net]), &BTreeSet::new()),
            [Step::Withdraw(net)]
        );
    }

    #[test]
    fn prefixes_are_written_and_read_as_in_the_config() {
        assert_eq!("10.9.0.1".parse(), Ok(ip(1)));
        let net: Prefix = "10.9.1.0/24".parse().unwrap();
        assert_eq!(
            (net.addr, net.len, net.to_string().as_str()),
            (Ipv4Addr::new(10, 9, 1, 0), 24, "10.9.1.0/24")
        );
        assert_eq!("0.0.0.0/0".parse::<Prefix>().map(|p| p.len), Ok(0));
        for bad in [
            "10.9.1.1/24",
            "10.9.1.0/33",
            "10.9.1.0/",
            "2001:db8::/64",
            "vip",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_service_announces_its_vip_or_its_marks_ipv4_networks() {
        let text = r#"
[director]
interface = "eth0"

[[service]]
vip = "10.9.0.1:80"

[[service.real]]
address = "10.2.0.21"

[[service]]
fwmark = 1
match = [{ vip = "10.9.1.0/24", ports = [80] }, { vip = "10.9.1.0/24", ports = [443] }, { vip = "10.9.3.7", ports = [80] }]

[[service.real]]
address = "10.2.0.21"

[[service]]
fwmark = 2
match = [{ vip = "2001:db8:9::/64", ports = [80] }]

[[service.real]]
address = "2001:db8::21"
"#;
        let c = crate::config::Config::parse(text, std::path::Path::new("lb.toml")).unwrap();
        let prefixes: Vec<Vec<String>> = c
            .services
            .iter()
            .map(|s| service_prefixes(s).iter().map(Prefix::to_string).collect())
            .collect();
        assert_eq!(
            prefixes,
            [
                vec!["10.9.0.1/32"],
                vec!["10.9.1.0/24", "10.9.3.7/32"],
                vec![]
            ]
        );
    }
}
