//! `lbctl explain`: where a flow went or would go, and why. A pure function
//! from what the datapath's maps hold for the flow ([`View`], read by
//! `Datapath::explain_view`) to lb-ipvsadm's [`Explanation`], following the
//! datapath's own steps: the service lookup (`lookup::service`: the VIP's
//! port, its every-port service, then the firewall-mark matches), the flow's
//! connection entry (`lookup::connection`), a persistent service's template
//! (`lookup::persistent_real`), and else the scheduler's pick now
//! ([`schedule`], with lb-common's reference models of IPVS).

mod schedule;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use lb_common::{
    AF_INET6, Conn, FlowKey, Forwarding, LblcEntry, Protocol, RealConns, RealServer, Scheduler, Service, ServiceKey,
    conn_state, ip_from_words, real_flag, service_flag,
};
use lb_ipvsadm::explain::{Decision, Entry, ExplainQuery, Explanation, MatchedService, NonSyn, RealLoad, Verdict};

use crate::model::ServiceId;

/// How the datapath's lookup found the flow's service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchedBy {
    VipPort,
    /// The VIP's every-port service (port 0).
    AllPorts,
    /// A firewall-mark service, through `FWMARK_MATCHES`.
    Fwmark,
}

/// The flow's service as the maps hold it.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    pub key: ServiceKey,
    pub service: Service,
    pub by: MatchedBy,
    /// Its real server ids, IPVS's list order (`REAL_LISTS`).
    pub list: Vec<u32>,
    /// Its region of `SCHED_TABLE`: real server ids (`NO_REAL`: empty slot).
    pub table: Vec<u32>,
    /// rr's and wrr's shared position (`SCHED_STATE`).
    pub position: u64,
}

/// What the datapath's maps hold for one flow, read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    pub flow: FlowKey,
    /// The datapath's clock (ns), as its entries' `last_seen_ns`.
    pub now_ns: u64,
    pub found: Option<Found>,
    /// Every real server named by the list, the entries or the lblc cache.
    pub reals: BTreeMap<u32, (RealServer, RealConns)>,
    /// `CONN_TABLE` at the flow's key.
    pub conn: Option<Conn>,
    /// `CONN_TABLE` at the service's template key for this client.
    pub template: Option<Conn>,
    /// `LBLC_CACHE` at (service, destination address), lblc and lblcr.
    pub lblc: Option<LblcEntry>,
}

impl View {
    fn real(&self, id: u32) -> Option<&(RealServer, RealConns)> {
        self.reals.get(&id)
    }

    /// A real server's address as lbctl shows it (port 0: the packet's own).
    fn address(&self, id: u32) -> String {
        self.real(id).map_or_else(|| format!("real #{id} (gone)"), |(r, _)| real_address(r).to_string())
    }
}

pub fn real_address(r: &RealServer) -> SocketAddr {
    SocketAddr::new(ip_from_words(r.addr, r.family), u16::from_be(r.port))
}

fn forwarding_name(code: u8) -> String {
    match Forwarding::from_code(code) {
        Some(Forwarding::Dr) => "Route",
        Some(Forwarding::Tun) => "Tunnel",
        Some(Forwarding::Nat) => "Masq",
        Some(Forwarding::FullNat) => "FullNat",
        None => "?",
    }
    .to_owned()
}

/// The flow of `query` as the datapath keys it.
pub fn flow_key(query: &ExplainQuery) -> FlowKey {
    let (src, family) = lb_common::ip_words(query.client.ip());
    let (dst, _) = lb_common::ip_words(query.vip.ip());
    FlowKey {
        src,
        dst,
        sport: query.client.port().to_be(),
        dport: query.vip.port().to_be(),
        protocol: query.protocol.number(),
        family,
        kind: lb_common::flow_kind::CONNECTION,
        pad0: 0,
    }
}

/// The datapath's `lookup::expired`.
fn expired(conn: &Conn, now: u64) -> bool {
    now.wrapping_sub(conn.last_seen_ns) > conn.timeout as u64 * 1_000_000_000
}

fn expires_in(conn: &Conn, now: u64) -> u64 {
    let end = conn.last_seen_ns.wrapping_add(conn.timeout as u64 * 1_000_000_000);
    let left = end.wrapping_sub(now);
    if expired(conn, now) { 0 } else { left.div_ceil(1_000_000_000) }
}

fn entry(view: &View, conn: &Conn, live: bool, note: Option<String>) -> Entry {
    let (real, forwarding) = match view.real(conn.real_id) {
        Some((r, _)) => (real_address(r), forwarding_name(r.forwarding)),
        None => (SocketAddr::new(ip_from_words([0; 4], view.flow.family), 0), "?".to_owned()),
    };
    Entry {
        state: conn_state::name(conn.state).to_owned(),
        real,
        forwarding,
        expires_in: expires_in(conn, view.now_ns),
        live,
        note,
    }
}

/// The flow's own entry and whether the datapath follows it
/// (`lookup::connection`): not expired and its server not failed out.
fn connection(view: &View) -> Option<Entry> {
    let conn = view.conn.as_ref()?;
    let gone = view.real(conn.real_id).is_none_or(|(r, _)| r.flags & real_flag::EXPIRE_CONNS != 0);
    let (live, note) = if gone {
        (false, Some("its real server failed and hands its connections on: scheduled afresh".to_owned()))
    } else if expired(conn, view.now_ns) {
        (false, Some("expired: the next packet is scheduled afresh".to_owned()))
    } else if matches!(conn.state, conn_state::FIN_WAIT | conn_state::TIME_WAIT | conn_state::CLOSE) {
        (true, Some("closing: a new SYN on this tuple is scheduled afresh (IPVS's connection reuse)".to_owned()))
    } else {
        (true, None)
    };
    Some(entry(view, conn, live, note))
}

/// A persistent service's template and whether it holds
/// (`lookup::persistent_real`): not expired, its server still in the list.
fn template(view: &View) -> Option<Entry> {
    let t = view.template.as_ref()?;
    let available = view.real(t.real_id).is_some_and(|(r, _)| r.flags & real_flag::AVAILABLE != 0);
    let (live, note) = if expired(t, view.now_ns) {
        (false, Some("expired: a new connection is scheduled and gets a new template".to_owned()))
    } else if !available {
        (false, Some("its real server left the service".to_owned()))
    } else {
        (true, None)
    };
    Some(entry(view, t, live, note))
}

fn service_name(found: &Found) -> String {
    let (key, svc) = (&found.key, &found.service);
    let id = if svc.flags & service_flag::FWMARK != 0 {
        ServiceId::fwmark(u32::from_be(svc.fwmark), key.family == AF_INET6)
    } else {
        let protocol = Protocol::from_number(key.protocol).unwrap_or(Protocol::Tcp);
        ServiceId::address(protocol, ip_from_words(key.addr, key.family), u16::from_be(key.port))
    };
    id.to_string()
}

fn matched_service(view: &View, found: &Found) -> MatchedService {
    let matched_by = match found.by {
        MatchedBy::VipPort => "its VIP and port".to_owned(),
        MatchedBy::AllPorts => "the VIP's every-port service".to_owned(),
        MatchedBy::Fwmark => "a firewall-mark match (no VIP:port service took it)".to_owned(),
    };
    let reals = found
        .list
        .iter()
        .filter_map(|&id| view.real(id))
        .map(|(r, c)| RealLoad {
            address: real_address(r),
            forwarding: forwarding_name(r.forwarding),
            weight: r.weight,
            active: c.active,
            inactive: c.inactive,
            persistent: c.persistent,
            available: r.flags & real_flag::AVAILABLE != 0,
            overloaded: schedule::overloaded(r, c),
        })
        .collect();
    MatchedService {
        name: service_name(found),
        matched_by,
        scheduler: Scheduler::from_code(found.service.scheduler).map_or("?", Scheduler::name).to_owned(),
        persistence_timeout: found.service.persistence_timeout,
        reals,
    }
}

/// For a TCP flow without a live entry, what a packet that is not a SYN
/// gets: lb-ebpf's `schedule::starts_connection` schedules it only for a
/// service with `sloppy_tcp` or `stateless_fallback`, else `main` passes
/// it (`pass_tcp_not_syn`).
fn non_syn(view: &View, found: &Found) -> Option<NonSyn> {
    if view.flow.protocol != Protocol::Tcp.number() {
        return None;
    }
    let flags = found.service.flags;
    Some(if flags & service_flag::SLOPPY_TCP != 0 {
        NonSyn::ScheduledSloppyTcp
    } else if flags & service_flag::STATELESS_FALLBACK != 0 {
        NonSyn::ScheduledStatelessFallback
    } else {
        NonSyn::PassTcpNotSyn
    })
}

/// The explanation of `query`'s flow from what the maps hold (`view`).
pub fn explain(query: ExplainQuery, view: &View) -> Explanation {
    let connection = connection(view);
    let template = view.found.as_ref().filter(|f| f.service.persistence_timeout > 0).and_then(|_| template(view));
    let service = view.found.as_ref().map(|f| matched_service(view, f));
    let real_of = |id: u32| view.real(id).map(|(r, _)| real_address(r));
    let decision = if let Some(c) = connection.as_ref().filter(|c| c.live) {
        Decision {
            verdict: Verdict::Connection,
            real: Some(c.real),
            why: vec![format!("the flow's connection entry ({}) sends it on to {}", c.state, c.real)],
            non_syn: None,
        }
    } else if let Some(found) = &view.found {
        let mut why = Vec::new();
        if found.service.persistence_timeout > 0 {
            let t = template.as_ref().filter(|t| t.live);
            if let (Some(t), Some(conn)) = (t, view.template.as_ref()) {
                why.push(format!(
                    "persistent service: the client's template sends it to {} (expires in {} s)",
                    t.real, t.expires_in
                ));
                return Explanation {
                    query,
                    service,
                    connection,
                    template,
                    decision: Decision {
                        verdict: Verdict::Template,
                        real: real_of(conn.real_id),
                        why,
                        non_syn: non_syn(view, found),
                    },
                };
            }
            why.push(
                "persistent service without a live template: the scheduler picks, and a template records it".to_owned(),
            );
        }
        let pick = schedule::pick(found, view);
        why.extend(pick.why);
        match pick.real {
            Some(id) => Decision { verdict: Verdict::Scheduled, real: real_of(id), why, non_syn: non_syn(view, found) },
            None => Decision { verdict: Verdict::NoServer, real: None, why, non_syn: non_syn(view, found) },
        }
    } else {
        Decision {
            verdict: Verdict::NoService,
            real: None,
            why: vec!["no VIP:port service, no every-port service of the VIP, no firewall-mark match".to_owned()],
            non_syn: None,
        }
    };
    Explanation { query, service, connection, template, decision }
}
