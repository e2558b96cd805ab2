//! The explanation from hand-made map states: each verdict, and the
//! schedulers' picks against IPVS's reference models.

use lb_common::{
    Conn, LblcEntry, NO_REAL, Protocol, RealConns, RealServer, Service, ServiceKey, conn_state, forwarding, ipv4_words,
    real_flag,
    sched::{self, models},
    scheduler, service_flag,
};
use lb_ipvsadm::explain::{ExplainQuery, Explanation, NonSyn, Verdict};

use super::*;

const SEC: u64 = 1_000_000_000;
const NOW: u64 = 1_000 * SEC;

fn query(client_port: u16) -> ExplainQuery {
    ExplainQuery {
        protocol: Protocol::Tcp,
        client: format!("10.0.0.9:{client_port}").parse().unwrap(),
        vip: "10.0.0.1:80".parse().unwrap(),
    }
}

fn real(last: u8, weight: u32) -> RealServer {
    RealServer {
        addr: ipv4_words([10, 0, 1, last]),
        port: 80u16.to_be(),
        family: lb_common::AF_INET,
        forwarding: forwarding::DR,
        weight,
        flags: real_flag::AVAILABLE,
        ..RealServer::default()
    }
}

fn conns(active: i64, inactive: i64) -> RealConns {
    RealConns { active, inactive, ..RealConns::default() }
}

/// A service of `scheduler` over reals 1..=n (ids 1..=n, list in that
/// order) with these weights and (active, inactive) counts.
fn view(sched: u8, weights: &[u32], counts: &[(i64, i64)], client_port: u16) -> View {
    let flow = flow_key(&query(client_port));
    let list: Vec<u32> = (1..=weights.len() as u32).collect();
    let reals = list
        .iter()
        .zip(weights.iter().zip(counts))
        .map(|(&id, (&w, &(a, i)))| (id, (real(id as u8, w), conns(a, i))))
        .collect();
    let key = ServiceKey { addr: flow.dst, port: flow.dport, protocol: flow.protocol, family: flow.family };
    let service = Service { id: 7, scheduler: sched, reals_len: list.len() as u32, ..Service::default() };
    View {
        flow,
        now_ns: NOW,
        found: Some(Found { key, service, by: MatchedBy::VipPort, list, table: Vec::new(), position: 0 }),
        reals,
        ..View::default()
    }
}

fn found(v: &mut View) -> &mut Found {
    v.found.as_mut().unwrap()
}

fn picked(e: &Explanation) -> Option<u8> {
    e.decision.real.map(|r| match r.ip() {
        std::net::IpAddr::V4(a) => a.octets()[3],
        _ => unreachable!(),
    })
}

#[test]
fn no_service_passes() {
    let v = View { flow: flow_key(&query(5000)), now_ns: NOW, ..View::default() };
    let e = explain(query(5000), &v);
    assert_eq!(e.decision.verdict, Verdict::NoService);
    assert!(e.service.is_none() && e.connection.is_none());
}

#[test]
fn a_live_entry_decides_an_expired_one_does_not() {
    let mut v = view(scheduler::WLC, &[1, 1], &[(1, 0), (0, 0)], 5000);
    v.conn = Some(Conn {
        real_id: 1,
        service_id: 7,
        state: conn_state::ESTABLISHED,
        timeout: 900,
        last_seen_ns: NOW - 100 * SEC,
        ..Conn::default()
    });
    let e = explain(query(5000), &v);
    assert_eq!(e.decision.verdict, Verdict::Connection);
    assert_eq!(picked(&e), Some(1));
    let c = e.connection.unwrap();
    assert_eq!((c.state.as_str(), c.expires_in, c.live), ("ESTABLISHED", 800, true));
    // Expired: scheduled afresh (wlc: the idle server 2).
    v.conn.as_mut().unwrap().last_seen_ns = NOW - 901 * SEC;
    let e = explain(query(5000), &v);
    assert_eq!(e.decision.verdict, Verdict::Scheduled);
    assert_eq!(picked(&e), Some(2));
    assert!(!e.connection.unwrap().live);
    // Its server failed out (EXPIRE_CONNS): not followed either.
    v.conn.as_mut().unwrap().last_seen_ns = NOW;
    v.reals.get_mut(&1).unwrap().0.flags |= real_flag::EXPIRE_CONNS;
    assert_eq!(explain(query(5000), &v).decision.verdict, Verdict::Scheduled);
}

#[test]
fn a_live_template_decides_a_persistent_services_new_connection() {
    let mut v = view(scheduler::RR, &[1, 1], &[(0, 0), (0, 0)], 5000);
    found(&mut v).service.persistence_timeout = 300;
    found(&mut v).table = vec![1, 2];
    let template = Conn {
        real_id: 2,
        state: conn_state::TEMPLATE_NONE,
        timeout: 300,
        last_seen_ns: NOW - 10 * SEC,
        ..Conn::default()
    };
    v.template = Some(template);
    let e = explain(query(5000), &v);
    assert_eq!(e.decision.verdict, Verdict::Template);
    assert_eq!(picked(&e), Some(2));
    assert_eq!(e.template.unwrap().expires_in, 290);
    // Its server left the service: rr picks (position 0: server 1).
    v.reals.get_mut(&2).unwrap().0.flags &= !real_flag::AVAILABLE;
    let e = explain(query(5000), &v);
    assert_eq!(e.decision.verdict, Verdict::Scheduled);
    assert_eq!(picked(&e), Some(1));
}

/// The pick is for a SYN: without a live entry, a TCP packet that is not
/// one is passed to the host (`pass_tcp_not_syn`) unless the service has
/// sloppy_tcp or stateless_fallback (lb-ebpf's `starts_connection`).
#[test]
fn a_tcp_flow_without_an_entry_names_what_a_non_syn_gets() {
    let mut v = view(scheduler::WLC, &[1, 1], &[(0, 0), (0, 0)], 5000);
    assert_eq!(explain(query(5000), &v).decision.non_syn, Some(NonSyn::PassTcpNotSyn));
    found(&mut v).service.flags = service_flag::SLOPPY_TCP;
    assert_eq!(explain(query(5000), &v).decision.non_syn, Some(NonSyn::ScheduledSloppyTcp));
    found(&mut v).service.flags = service_flag::STATELESS_FALLBACK | service_flag::MH_FALLBACK;
    assert_eq!(explain(query(5000), &v).decision.non_syn, Some(NonSyn::ScheduledStatelessFallback));
    // No server can take it: a non-SYN is still passed, not refused.
    let e = explain(query(5000), &view(scheduler::WLC, &[0, 0], &[(0, 0); 2], 5000));
    assert_eq!((e.decision.verdict, e.decision.non_syn), (Verdict::NoServer, Some(NonSyn::PassTcpNotSyn)));
    // A live entry sends any packet on.
    let mut v = view(scheduler::WLC, &[1, 1], &[(0, 0), (0, 0)], 5000);
    v.conn =
        Some(Conn { real_id: 1, state: conn_state::ESTABLISHED, timeout: 900, last_seen_ns: NOW, ..Conn::default() });
    assert_eq!(explain(query(5000), &v).decision.non_syn, None);
    // UDP: every datagram may start a connection.
    let mut q = query(5000);
    q.protocol = Protocol::Udp;
    let mut v = view(scheduler::WLC, &[1, 1], &[(0, 0), (0, 0)], 5000);
    v.flow = flow_key(&q);
    assert_eq!(explain(q, &v).decision.non_syn, None);
    // No service: nothing to say.
    let v = View { flow: flow_key(&query(5000)), now_ns: NOW, ..View::default() };
    assert_eq!(explain(query(5000), &v).decision.non_syn, None);
}

/// wrr's sequence walked by explain position after position names the
/// servers IPVS's own walk (`models::WrrModel`) names.
#[test]
fn wrr_follows_ipvs_walk_position_by_position() {
    let weights = [4, 3, 2];
    let mut v = view(scheduler::WRR, &weights, &[(0, 0); 3], 5000);
    let table: Vec<u32> = sched::wrr_table(&weights).iter().map(|&i| i + 1).collect();
    found(&mut v).table = table.clone();
    let reals: Vec<models::SchedReal> = weights.iter().map(|&w| models::SchedReal::new(w)).collect();
    let mut model = models::WrrModel::new(&reals);
    for position in 0..2 * table.len() as u64 {
        found(&mut v).position = position;
        let e = explain(query(5000), &v);
        let want = model.schedule(&reals).unwrap() as u8 + 1;
        assert_eq!(picked(&e), Some(want), "position {position}: {:?}", e.decision.why);
    }
    // A server with weight 0 in its slot is skipped, as the datapath does.
    found(&mut v).position = 0;
    v.reals.get_mut(&1).unwrap().0.weight = 0;
    let e = explain(query(5000), &v);
    assert_eq!(picked(&e), Some(table.iter().map(|&id| id as u8).find(|&id| id != 1).unwrap()));
    assert!(e.decision.why.iter().any(|l| l.contains("skipped (weight 0)")), "{:?}", e.decision.why);
}

#[test]
fn least_connection_rules_weigh_the_counts() {
    let counts = [(3, 10), (1, 500), (2, 0)];
    // lc: overheads 778, 756, 512: server 3. wlc with weights 1, 1, 3: 512/3 least.
    let e = explain(query(5000), &view(scheduler::LC, &[1, 1, 1], &counts, 5000));
    assert_eq!(picked(&e), Some(3));
    assert!(e.decision.why.iter().any(|l| l.contains("overhead 756")), "{:?}", e.decision.why);
    // sed: active + 1 per weight: 4/4, 2/1, 3/1: server 1.
    let e = explain(query(5000), &view(scheduler::SED, &[4, 1, 1], &counts, 5000));
    assert_eq!(picked(&e), Some(1));
    // nq: no idle server; sed's rule.
    assert_eq!(picked(&explain(query(5000), &view(scheduler::NQ, &[4, 1, 1], &counts, 5000))), Some(1));
    // fo: the highest weight; ovf: the highest weight with active <= weight.
    assert_eq!(picked(&explain(query(5000), &view(scheduler::FO, &[1, 5, 2], &counts, 5000))), Some(2));
    assert_eq!(picked(&explain(query(5000), &view(scheduler::OVF, &[2, 1, 2], &counts, 5000))), Some(3));
    // Over its upper threshold: overloaded, skipped.
    let mut v = view(scheduler::LC, &[1, 1, 1], &counts, 5000);
    v.reals.get_mut(&3).unwrap().0.upper_threshold = 2;
    let e = explain(query(5000), &v);
    assert_eq!(picked(&e), Some(2));
    assert!(e.service.unwrap().reals[2].overloaded);
    // No server takes it.
    let e = explain(query(5000), &view(scheduler::WLC, &[0, 0], &[(0, 0); 2], 5000));
    assert_eq!(e.decision.verdict, Verdict::NoServer);
}

#[test]
fn sh_and_mh_pick_the_models_slot() {
    let weights = [1, 1, 1];
    for port in [5000, 5001, 6000] {
        let mut v = view(scheduler::SH, &weights, &[(0, 0); 3], port);
        found(&mut v).table = sched::sh_table(&weights).iter().map(|s| s.map_or(NO_REAL, |i| i + 1)).collect();
        let table = sched::sh_table(&weights);
        let views = vec![models::ConnView::new(1, 0, 0); 3];
        let want = models::sh_pick(&table, &views, v.flow.src, v.flow.sport, false, false).unwrap() as u8 + 1;
        assert_eq!(picked(&explain(query(port), &v)), Some(want));
        // With sh-port the port takes part.
        found(&mut v).service.flags = service_flag::SH_PORT;
        let want = models::sh_pick(&table, &views, v.flow.src, v.flow.sport, false, true).unwrap() as u8 + 1;
        assert_eq!(picked(&explain(query(port), &v)), Some(want));

        let mut v = view(scheduler::MH, &weights, &[(0, 0); 3], port);
        let mh: Vec<_> = (1..=3)
            .map(|i| sched::MhReal { addr: ipv4_words([10, 0, 1, i]), port_be: 80u16.to_be(), weight: 1 })
            .collect();
        let table = sched::mh_table(&mh, 251);
        found(&mut v).table = table.iter().map(|s| s.map_or(NO_REAL, |i| i + 1)).collect();
        let want = models::mh_pick(&table, &views, v.flow.src, v.flow.sport, false, false).unwrap() as u8 + 1;
        assert_eq!(picked(&explain(query(port), &v)), Some(want));
    }
}

#[test]
fn lblc_follows_its_cache_until_the_server_cannot_take_it() {
    let mut v = view(scheduler::LBLC, &[1, 1], &[(0, 0), (0, 0)], 5000);
    // No entry: wlc (the first of equals).
    assert_eq!(picked(&explain(query(5000), &v)), Some(1));
    let mut entry = LblcEntry { len: 1, lastuse_ns: NOW - SEC, ..LblcEntry::default() };
    entry.reals[0] = 2;
    v.lblc = Some(entry);
    let e = explain(query(5000), &v);
    assert_eq!(picked(&e), Some(2));
    assert!(e.decision.why[0].contains("cached on 10.0.1.2:80"), "{:?}", e.decision.why);
    // Over its weight while server 1 is light: wlc instead.
    v.reals.get_mut(&2).unwrap().1.active = 5;
    assert_eq!(picked(&explain(query(5000), &v)), Some(1));
    // lblcr: the set's least loaded member.
    let mut v = view(scheduler::LBLCR, &[1, 1, 1], &[(3, 0), (1, 0), (0, 0)], 5000);
    let mut entry = LblcEntry { len: 2, lastuse_ns: NOW, lastmod_ns: NOW, ..LblcEntry::default() };
    entry.reals[..2].copy_from_slice(&[1, 2]);
    v.lblc = Some(entry);
    assert_eq!(picked(&explain(query(5000), &v)), Some(2));
}
