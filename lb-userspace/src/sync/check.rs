//! The receiver's checks of each record before it is installed: a record
//! comes from the network, and is trusted no further than these checks.
//!
//! IPVS's backup (`ip_vs_proc_sync_conn`) refuses a protocol it does not
//! know and a state beyond the protocol's states ("BACKUP, Invalid %s state
//! %u"), then `ip_vs_proc_conn` binds the connection to the real server
//! found by `ip_vs_find_dest` (real address and port, VIP and VIP port) and
//! takes the timeout as sent (capped at `MAX_SCHEDULE_TIMEOUT`). lb checks
//! more, as its entries are used by the datapath as they are:
//!
//! * protocol: TCP or UDP;
//! * state: a TCP connection's state is one of TCP's (NONE..SYNACK), a UDP
//!   connection's is UDP, a template's is NONE or ASSURED;
//! * timeout: at most what this director gives the state itself (a
//!   template: its service's persistence timeout, or the re-arm time if
//!   longer), so that an entry cannot outlive what this director's own
//!   entries can;
//! * ports: a connection of a one-port service is to that port (else the
//!   service of port 80 would forward VIP:22); a template's client port is 0,
//!   its VIP port the service's, its client address under the service's
//!   persistence netmask, and its service persistent;
//! * firewall marks: a connection of a mark's service is one its matches
//!   take (else a synced entry would forward what the mark does not); a
//!   mark's template is keyed as IPVS keys it (protocol 0, the mark for the
//!   VIP, ports 0).
//!
//! The service and the real server must exist here (found by the caller).

use std::fmt;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::conn_state;

use crate::model::MarkMatch;

use super::wire::{RecordKind, SyncRecord};

const TCP: u8 = 6;
const UDP: u8 = 17;

/// What the receiver knows of the record's service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceView<'a> {
    /// Its port (0: every port, or a firewall-mark service).
    pub port: u16,
    /// A firewall-mark service's mark (else 0) and matches.
    pub fwmark: u32,
    pub matches: &'a [MarkMatch],
    /// Persistent services: the longest a template lives here and the
    /// netmask of its client addresses.
    pub persistence: Option<(u32, crate::model::Netmask)>,
}

/// Why a record is not installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    Protocol(u8),
    State {
        kind: RecordKind,
        protocol: u8,
        state: u8,
    },
    Timeout {
        state: u8,
        timeout: u32,
        max: u32,
    },
    /// A connection to another port than its one-port service's.
    Port {
        vip_port: u16,
        service_port: u16,
    },
    /// A template that is not one of this service's.
    Template(&'static str),
    /// No such service here (the directors' configs differ).
    UnknownService,
    /// No such real server in the service here.
    UnknownReal,
    /// A connection of a firewall-mark service its matches do not take.
    Unmatched,
}

impl Refusal {
    /// The counter it is counted under (`sync_refused_<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Protocol(_) => "protocol",
            Self::State { .. } => "state",
            Self::Timeout { .. } => "timeout",
            Self::Port { .. } => "port",
            Self::Template(_) => "template",
            Self::UnknownService => "unknown_service",
            Self::UnknownReal => "unknown_real",
            Self::Unmatched => "unmatched",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Protocol(p) => write!(f, "protocol {p} is not TCP or UDP"),
            Self::State { kind: RecordKind::Template, state, .. } => write!(f, "state {state} is not a template's"),
            Self::State { protocol, state, .. } => {
                write!(f, "state {state} is not a {} state", if *protocol == TCP { "TCP" } else { "UDP" })
            }
            Self::Timeout { state, timeout, max } => {
                write!(f, "timeout {timeout} s is above this director's {max} s for {}", conn_state::name(*state))
            }
            Self::Port { vip_port, service_port } => {
                write!(f, "VIP port {vip_port} is not its service's port {service_port}")
            }
            Self::Template(why) => write!(f, "template {why}"),
            Self::UnknownService => f.write_str("no such service here"),
            Self::UnknownReal => f.write_str("no such real server in the service here"),
            Self::Unmatched => f.write_str("a connection its firewall mark's matches do not take"),
        }
    }
}

/// Whether the record's protocol and state are valid (before its service
/// is looked up).
pub fn check_shape(r: &SyncRecord) -> Result<(), Refusal> {
    // A firewall mark's template is of every protocol: IPPROTO_IP (0).
    let protocol_ok = match r.kind {
        RecordKind::Template if r.fwmark != 0 => r.protocol == 0,
        _ => r.protocol == TCP || r.protocol == UDP,
    };
    if !protocol_ok {
        return Err(Refusal::Protocol(r.protocol));
    }
    let valid = match r.kind {
        RecordKind::Template => matches!(r.state, conn_state::TEMPLATE_NONE | conn_state::TEMPLATE_ASSURED),
        RecordKind::Connection if r.protocol == TCP => r.state <= conn_state::SYNACK,
        RecordKind::Connection => r.state == conn_state::UDP,
    };
    if !valid {
        return Err(Refusal::State { kind: r.kind, protocol: r.protocol, state: r.state });
    }
    Ok(())
}

/// Whether the record fits its service here and this director's timeouts
/// (`state_timeouts`, by state number). Checks [`check_shape`] first.
pub fn check_record(
    r: &SyncRecord,
    service: &ServiceView,
    state_timeouts: &[u32; conn_state::COUNT],
) -> Result<(), Refusal> {
    check_shape(r)?;
    let max = match r.kind {
        RecordKind::Connection => {
            if service.port != 0 && r.vip.port() != service.port {
                return Err(Refusal::Port { vip_port: r.vip.port(), service_port: service.port });
            }
            if service.fwmark != 0 && !service.matches.iter().any(|m| m.takes(r.protocol, r.vip.ip(), r.vip.port())) {
                return Err(Refusal::Unmatched);
            }
            state_timeouts[usize::from(r.state)]
        }
        RecordKind::Template => {
            let Some((longest, mask)) = service.persistence else {
                return Err(Refusal::Template("of a service that is not persistent"));
            };
            if r.client.port() != 0 || r.vip.port() != service.port {
                return Err(Refusal::Template("with ports that are not its service's"));
            }
            if !crate::model::is_masked(r.client.ip(), mask) {
                return Err(Refusal::Template("for a client address not under the persistence netmask"));
            }
            if service.fwmark != 0 && r.vip.ip() != mark_address(service.fwmark, r.vip.is_ipv6()) {
                return Err(Refusal::Template("of a firewall mark, keyed by another address than its mark"));
            }
            longest
        }
    };
    if r.timeout > max {
        return Err(Refusal::Timeout { state: r.state, timeout: r.timeout, max });
    }
    Ok(())
}

/// Where a firewall mark's template has its VIP: the mark in the first
/// word (`lb_common::Service::template_key`, IPVS's `ip_vs_sched_persist`).
fn mark_address(fwmark: u32, ipv6: bool) -> IpAddr {
    if ipv6 { IpAddr::V6(Ipv6Addr::from(u128::from(fwmark) << 96)) } else { IpAddr::V4(Ipv4Addr::from(fwmark)) }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use super::*;
    use crate::model::Netmask;

    fn conn() -> SyncRecord {
        SyncRecord {
            kind: RecordKind::Connection,
            protocol: TCP,
            state: conn_state::ESTABLISHED,
            client: "198.51.100.7:40000".parse().unwrap(),
            vip: "192.0.2.100:80".parse().unwrap(),
            service_port: 80,
            fwmark: 0,
            real: "192.0.2.10:80".parse().unwrap(),
            timeout: 900,
            idle_ms: 0,
        }
    }

    const HTTP: ServiceView = ServiceView { port: 80, fwmark: 0, matches: &[], persistence: None };
    const TIMEOUTS: [u32; conn_state::COUNT] = conn_state::default_timeouts();

    #[test]
    fn what_a_master_sends_passes() {
        assert_eq!(check_record(&conn(), &HTTP, &TIMEOUTS), Ok(()));
        for state in 0..=conn_state::SYNACK {
            let r = SyncRecord { state, timeout: TIMEOUTS[usize::from(state)], ..conn() };
            assert_eq!(check_record(&r, &HTTP, &TIMEOUTS), Ok(()), "{state}");
        }
        let udp = SyncRecord { protocol: UDP, state: conn_state::UDP, timeout: 300, ..conn() };
        assert_eq!(check_record(&udp, &HTTP, &TIMEOUTS), Ok(()));
        // An every-port service: any VIP port.
        let all = ServiceView {
            port: 0,
            fwmark: 0,
            matches: &[],
            persistence: Some((300, Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)))),
        };
        let r = SyncRecord { vip: "192.0.2.100:22".parse().unwrap(), service_port: 0, ..conn() };
        assert_eq!(check_record(&r, &all, &TIMEOUTS), Ok(()));
        let template = SyncRecord {
            kind: RecordKind::Template,
            state: conn_state::TEMPLATE_ASSURED,
            client: "198.51.100.0:0".parse().unwrap(),
            vip: "192.0.2.100:0".parse().unwrap(),
            timeout: 300,
            ..r
        };
        assert_eq!(check_record(&template, &all, &TIMEOUTS), Ok(()));
    }

    #[test]
    fn forged_fields_are_refused() {
        let r = SyncRecord { state: 200, ..conn() };
        let refused = check_record(&r, &HTTP, &TIMEOUTS).unwrap_err();
        assert_eq!((refused.name(), refused.to_string().as_str()), ("state", "state 200 is not a TCP state"));
        let r = SyncRecord { state: conn_state::UDP, ..conn() };
        assert_eq!(check_record(&r, &HTTP, &TIMEOUTS).unwrap_err().name(), "state");
        let r = SyncRecord { protocol: UDP, state: conn_state::ESTABLISHED, ..conn() };
        assert_eq!(check_shape(&r).unwrap_err().to_string(), "state 1 is not a UDP state");
        let r = SyncRecord { protocol: 1, ..conn() };
        assert_eq!(check_shape(&r), Err(Refusal::Protocol(1)));
        let r = SyncRecord { timeout: u32::MAX, ..conn() };
        assert_eq!(
            check_record(&r, &HTTP, &TIMEOUTS).unwrap_err().to_string(),
            "timeout 4294967295 s is above this director's 900 s for ESTABLISHED"
        );
        let r = SyncRecord { state: conn_state::FIN_WAIT, timeout: 900, ..conn() };
        assert_eq!(check_record(&r, &HTTP, &TIMEOUTS).unwrap_err().name(), "timeout");
        // VIP:22 through the port-80 service.
        let r = SyncRecord { vip: "192.0.2.100:22".parse().unwrap(), ..conn() };
        assert_eq!(check_record(&r, &HTTP, &TIMEOUTS), Err(Refusal::Port { vip_port: 22, service_port: 80 }));
    }

    #[test]
    fn templates_must_be_their_services() {
        let mask = Netmask::V4(Ipv4Addr::new(255, 255, 255, 0));
        let persistent = ServiceView { port: 80, fwmark: 0, matches: &[], persistence: Some((300, mask)) };
        let t = SyncRecord {
            kind: RecordKind::Template,
            state: conn_state::TEMPLATE_NONE,
            client: "198.51.100.0:0".parse().unwrap(),
            timeout: 300,
            ..conn()
        };
        assert_eq!(check_record(&t, &persistent, &TIMEOUTS), Ok(()));
        let bad = |r: SyncRecord, service: &ServiceView| check_record(&r, service, &TIMEOUTS).unwrap_err().name();
        assert_eq!(bad(t, &HTTP), "template");
        assert_eq!(bad(SyncRecord { state: conn_state::ESTABLISHED, ..t }, &persistent), "state");
        assert_eq!(bad(SyncRecord { client: "198.51.100.7:0".parse().unwrap(), ..t }, &persistent), "template");
        assert_eq!(bad(SyncRecord { client: "198.51.100.0:1".parse().unwrap(), ..t }, &persistent), "template");
        assert_eq!(bad(SyncRecord { vip: "192.0.2.100:22".parse().unwrap(), ..t }, &persistent), "template");
        assert_eq!(bad(SyncRecord { timeout: 301, ..t }, &persistent), "timeout");
        let v6 = SyncRecord { client: SocketAddr::new("2001:db8::".parse().unwrap(), 0), ..t };
        assert_eq!(bad(v6, &persistent), "template");
    }

    #[test]
    fn firewall_mark_records_must_be_their_marks() {
        use crate::model::{MarkMatch, Protocol};
        let matches = [MarkMatch {
            protocol: Protocol::Tcp,
            net: "192.0.2.96".parse().unwrap(),
            prefix_len: 28,
            ports: vec![(80, 80), (8000, 8099)],
        }];
        let mask = Netmask::V4(Ipv4Addr::new(255, 255, 255, 255));
        let mark = ServiceView { port: 0, fwmark: 1, matches: &matches, persistence: Some((300, mask)) };
        // A connection to a port and address the mark takes.
        let c = SyncRecord { vip: "192.0.2.100:8042".parse().unwrap(), service_port: 0, fwmark: 1, ..conn() };
        assert_eq!(check_record(&c, &mark, &TIMEOUTS), Ok(()));
        let bad = |r: SyncRecord| check_record(&r, &mark, &TIMEOUTS).unwrap_err();
        assert_eq!(bad(SyncRecord { vip: "192.0.2.100:22".parse().unwrap(), ..c }), Refusal::Unmatched);
        assert_eq!(bad(SyncRecord { vip: "192.0.2.200:80".parse().unwrap(), ..c }), Refusal::Unmatched);
        let udp = SyncRecord { protocol: UDP, state: conn_state::UDP, timeout: 300, ..c };
        assert_eq!(bad(udp).name(), "unmatched");
        // Its template: protocol 0, the mark for the VIP, ports 0.
        let t = SyncRecord {
            kind: RecordKind::Template,
            protocol: 0,
            state: conn_state::TEMPLATE_ASSURED,
            client: "198.51.100.7:0".parse().unwrap(),
            vip: "0.0.0.1:0".parse().unwrap(),
            timeout: 300,
            ..c
        };
        assert_eq!(check_record(&t, &mark, &TIMEOUTS), Ok(()));
        assert_eq!(bad(SyncRecord { vip: "192.0.2.100:0".parse().unwrap(), ..t }).name(), "template");
        assert_eq!(bad(SyncRecord { protocol: TCP, ..t }), Refusal::Protocol(TCP));
        // Protocol 0 is a mark's template's only.
        assert_eq!(check_shape(&SyncRecord { fwmark: 0, ..t }), Err(Refusal::Protocol(0)));
        assert_eq!(check_shape(&SyncRecord { protocol: 0, ..c }), Err(Refusal::Protocol(0)));
        // IPv6: the mark in the address's first word.
        let mask6 = Netmask::V6(128);
        let mark6 = ServiceView { persistence: Some((300, mask6)), matches: &[], ..mark };
        let t6 = SyncRecord {
            client: "[2001:db8::7]:0".parse().unwrap(),
            vip: "[0:1::]:0".parse().unwrap(),
            real: "[2001:db8::10]:0".parse().unwrap(),
            ..t
        };
        assert_eq!(check_record(&t6, &mark6, &TIMEOUTS), Ok(()));
        assert_eq!(
            check_record(&SyncRecord { vip: "[::1]:0".parse().unwrap(), ..t6 }, &mark6, &TIMEOUTS).unwrap_err().name(),
            "template"
        );
    }
}
