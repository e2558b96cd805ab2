//! The planner against IPVS's reference models and a fake datapath.

use super::*;
use lb_common::sched::models::{RrModel, SchedReal, WrrModel};

fn real(last_octet: u8, weight: u32) -> WantedReal {
    WantedReal {
        address: IpAddr::from([10, 0, 0, last_octet]),
        port: 0,
        weight,
        forwarding: Forwarding::Dr,
        mac: Some([2, 0, 0, 0, 0, last_octet]),
        mtu: 1500,
        port_out: TxPort::default(),
        upper_threshold: 0,
        lower_threshold: 0,
        in_service: true,
        expire_conns: false,
    }
}

fn service(scheduler: Scheduler, reals: Vec<WantedReal>) -> WantedService {
    WantedService {
        protocol: Protocol::Tcp,
        vip: IpAddr::from([10, 0, 0, 100]),
        port: 80,
        fwmark: 0,
        matches: Vec::new(),
        scheduler,
        options: ServiceOptions::default(),
        reals,
    }
}

/// A fake datapath: applies ops to plain maps and walks the tables as
/// the XDP program does.
#[derive(Default)]
struct FakeMaps {
    reals: BTreeMap<u32, RealServer>,
    table: BTreeMap<u32, u32>,
    services: BTreeMap<ServiceKey, Service>,
    positions: BTreeMap<u32, u64>,
    fwmark_matches: BTreeMap<MatchKey, u32>,
}

impl FakeMaps {
    fn apply(&mut self, ops: &[MapOp]) {
        for op in ops {
            match op {
                MapOp::SetReal(id, d) => {
                    self.reals.insert(*id, *d);
                }
                MapOp::SetSchedTable { start, real_ids } => {
                    for (i, id) in real_ids.iter().enumerate() {
                        self.table.insert(start + i as u32, *id);
                    }
                }
                MapOp::SetService(k, v) => {
                    self.services.insert(*k, *v);
                }
                MapOp::DeleteService(k) => {
                    assert!(
                        !self.fwmark_matches.values().any(|m| lb_common::fwmark_service_key(*m, k.family) == *k),
                        "a match still leads to the removed service"
                    );
                    self.services.remove(k);
                }
                MapOp::SetFwmarkMatch { key, mark, replaced } => {
                    let service = lb_common::fwmark_service_key(*mark, key.1.family);
                    assert!(self.services.contains_key(&service), "a match before its service");
                    assert_eq!(self.fwmark_matches.insert(*key, *mark), *replaced);
                }
                MapOp::DeleteFwmarkMatch { key, mark } => {
                    assert_eq!(self.fwmark_matches.remove(key), Some(*mark));
                }
                MapOp::SetSchedPosition(id, p) => {
                    self.positions.insert(*id, *p);
                }
                MapOp::ZeroRealStats(_)
                | MapOp::ZeroServiceStats(_)
                | MapOp::SetRealList { .. }
                | MapOp::SetVipFilter(_)
                | MapOp::SetServiceFlags(..) => {}
            }
        }
    }

    /// The last octet of the address the datapath would pick.
    fn pick(&mut self, key: &ServiceKey) -> Option<u8> {
        let svc = self.services[key];
        if svc.table_len == 0 {
            return None;
        }
        let pos = self.positions.entry(svc.id).or_default();
        let slot = svc.table_start + (*pos % svc.table_len as u64) as u32;
        *pos += 1;
        let d = self.reals[&self.table[&slot]];
        Some(lb_common::ipv4_octets(d.addr)[3])
    }
}

fn plan(tables: &mut Tables, maps: &mut FakeMaps, wanted: &[WantedService]) {
    let positions = maps.positions.clone();
    let planned = tables.plan(wanted, &|id| positions.get(&id).copied().unwrap_or(0)).unwrap();
    maps.apply(&planned.ops);
    tables.commit(planned);
}

fn model_reals(reals_ipvs_order: &[(u8, u32)]) -> Vec<SchedReal> {
    reals_ipvs_order.iter().map(|&(_, w)| SchedReal::new(w)).collect()
}

#[test]
fn rr_and_wrr_follow_ipvs_across_changes() {
    // Each step is the config's reals (oldest first); between steps the
    // datapath makes some picks. The model gets the same changes as
    // IPVS would see them (ipvsadm -a adds in front, -d removes, -e edits).
    let steps: Vec<Vec<(u8, u32)>> = vec![
        vec![(1, 3), (2, 1)],
        vec![(1, 3), (2, 1), (3, 2)],
        vec![(1, 3), (3, 2)],
        vec![(1, 1), (3, 2)],
        vec![(1, 1), (3, 2), (4, 4), (5, 0)],
        vec![(3, 2), (4, 4), (5, 5)],
    ];
    for scheduler in [Scheduler::Rr, Scheduler::Wrr] {
        let mut tables = Tables::new();
        let mut maps = FakeMaps::default();
        let mut rr = RrModel::default();
        let mut wrr = WrrModel::empty();
        // IPVS order of the model's list: newest first.
        let mut list: Vec<(u8, u32)> = Vec::new();
        for (step, reals) in steps.iter().enumerate() {
            // Replay the change on the model one ipvsadm command at a time.
            for (i, entry) in list.clone().iter().enumerate().rev() {
                if !reals.iter().any(|r| r.0 == entry.0) {
                    list.remove(i);
                    rr.remove(i);
                    wrr.changed(&model_reals(&list));
                }
            }
            for &(octet, weight) in reals {
                match list.iter().position(|e| e.0 == octet) {
                    Some(i) if list[i].1 != weight => {
                        list[i].1 = weight;
                        wrr.changed(&model_reals(&list));
                    }
                    Some(_) => {}
                    None => {
                        list.insert(0, (octet, weight));
                        rr.add_front();
                        wrr.changed(&model_reals(&list));
                    }
                }
            }
            let wanted = service(scheduler, reals.iter().map(|&(o, w)| real(o, w)).collect());
            plan(&mut tables, &mut maps, std::slice::from_ref(&wanted));
            for pick in 0..(7 + step * 3) {
                let d = model_reals(&list);
                let want = match scheduler {
                    Scheduler::Wrr => wrr.schedule(&d),
                    _ => rr.schedule(&d),
                }
                .map(|i| list[i].0);
                assert_eq!(maps.pick(&wanted.key()), want, "{scheduler} step {step} pick {pick}");
            }
        }
    }
}

#[test]
fn unchanged_config_writes_nothing() {
    let mut tables = Tables::new();
    let mut maps = FakeMaps::default();
    let w = vec![service(Scheduler::Wrr, vec![real(1, 3), real(2, 1)])];
    plan(&mut tables, &mut maps, &w);
    let planned = tables.plan(&w, &|_| 0).unwrap();
    assert!(planned.ops.is_empty(), "{:?}", planned.ops);
}

#[test]
fn a_plan_not_committed_leaves_the_model_as_it_was() {
    let mut tables = Tables::new();
    let mut maps = FakeMaps::default();
    let one = vec![service(Scheduler::Wrr, vec![real(1, 3), real(2, 1)])];
    plan(&mut tables, &mut maps, &one);
    let two = vec![service(Scheduler::Rr, vec![real(1, 1), real(2, 1), real(3, 1)])];
    // Planned, but the datapath did not take it.
    let untaken = tables.plan(&two, &|_| 0).unwrap();
    assert!(!untaken.ops.is_empty());
    assert_eq!(tables.wanted().cloned().collect::<Vec<_>>(), one);
    // Planned again from the same model: the same writes.
    let again = tables.plan(&two, &|_| 0).unwrap();
    assert_eq!(again.ops, untaken.ops);
    maps.apply(&again.ops);
    tables.commit(again);
    assert_eq!(tables.wanted().cloned().collect::<Vec<_>>(), two);
    assert!(tables.plan(&two, &|_| 0).unwrap().ops.is_empty());
}

#[test]
fn a_removed_server_keeps_its_slot_until_released() {
    let mut tables = Tables::new();
    let mut maps = FakeMaps::default();
    plan(&mut tables, &mut maps, &[service(Scheduler::Rr, vec![real(1, 1), real(2, 1)])]);
    let ids: Vec<u32> = tables.real_ids().collect();
    plan(&mut tables, &mut maps, &[service(Scheduler::Rr, vec![real(1, 1)])]);
    let gone = ids.iter().copied().find(|id| lb_common::ipv4_octets(maps.reals[id].addr)[3] == 2).unwrap();
    assert_eq!(maps.reals[&gone].flags & real_flag::AVAILABLE, 0, "retired, not available");
    assert_eq!(maps.reals[&gone].mac, [2, 0, 0, 0, 0, 2], "still forwards its connections");
    let retired = tables.retired();
    assert_eq!(retired.reals, BTreeSet::from([gone]));
    // Still referenced: kept.
    assert!(tables.release_unreferenced(&retired, &BTreeSet::from([gone]), &BTreeSet::new()).ops.is_empty());
    // Retired after the walk began: kept (the walk may have passed its connections).
    assert!(tables.release_unreferenced(&Default::default(), &BTreeSet::new(), &BTreeSet::new()).ops.is_empty());
    let released = tables.release_unreferenced(&retired, &BTreeSet::new(), &BTreeSet::new());
    assert_eq!(released.ops, vec![MapOp::SetReal(gone, RealServer::default())]);
    maps.apply(&released.ops);
    tables.commit(released);
    assert!(tables.retired().reals.is_empty());
    // Back again: a fresh slot.
    plan(&mut tables, &mut maps, &[service(Scheduler::Rr, vec![real(1, 1), real(2, 1)])]);
    assert_eq!(tables.real_ids().count(), 2);
}

#[test]
fn a_server_back_before_release_gets_its_old_slot() {
    let mut tables = Tables::new();
    let mut maps = FakeMaps::default();
    let both = [service(Scheduler::Rr, vec![real(1, 1), real(2, 1)])];
    plan(&mut tables, &mut maps, &both);
    let before: BTreeSet<u32> = tables.real_ids().collect();
    plan(&mut tables, &mut maps, &[service(Scheduler::Rr, vec![real(1, 1)])]);
    plan(&mut tables, &mut maps, &both);
    assert_eq!(tables.real_ids().collect::<BTreeSet<_>>(), before);
}

#[test]
fn removing_a_service_deletes_it() {
    let mut tables = Tables::new();
    let mut maps = FakeMaps::default();
    let s = service(Scheduler::Rr, vec![real(1, 1)]);
    plan(&mut tables, &mut maps, std::slice::from_ref(&s));
    assert!(maps.services.contains_key(&s.key()));
    plan(&mut tables, &mut maps, &[]);
    assert!(!maps.services.contains_key(&s.key()));
}

/// Directors behind ECMP must pick alike: two controllers started from
/// the same config (two lbd processes, or one restarted) write the same
/// mh table, slot for slot, and the same service entry.
#[test]
fn the_same_config_gives_byte_identical_mh_tables() {
    let reals = vec![real(21, 1), real(22, 2), real(23, 1), real(24, 3)];
    let wanted = [service(Scheduler::Mh, reals)];
    let writes = |tables: &Tables| {
        let ops = tables.plan(&wanted, &|_| 0).unwrap().ops;
        let sched: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                MapOp::SetSchedTable { start, real_ids } => Some((*start, real_ids.clone())),
                _ => None,
            })
            .collect();
        let service: Vec<_> = ops
            .iter()
            .filter_map(|op| match op {
                MapOp::SetService(k, v) => Some((*k, *v)),
                _ => None,
            })
            .collect();
        (sched, service)
    };
    let first = writes(&Tables::new());
    assert_eq!(first.0.len(), 1, "one mh table");
    assert_eq!(
        first.0[0].1.len(),
        lb_common::hash::MH_DEFAULT_TAB_SIZE as usize
    );
    assert_eq!(first, writes(&Tables::new()), "a second controller");
    // The bytes the datapath gets.
    let bytes = |ids: &[u32]| {
        ids.iter()
            .flat_map(|id| id.to_ne_bytes())
            .collect::<Vec<u8>>()
    };
    assert_eq!(bytes(&first.0[0].1), bytes(&writes(&Tables::new()).0[0].1));
}

/// An IPv6 service by direct routing: its key, servers, persistence mask
/// and VIP filter bit in the datapath's IPv6 form, and a second lbd adopting
/// them reads the same service back.
#[test]
fn ipv6_services_are_written_with_their_family_and_adopted_back() {
    use lb_common::{AF_INET6, ipv6_words};

    use crate::model::Netmask;

    let v6 = |text: &str| text.parse::<std::net::Ipv6Addr>().unwrap();
    let reals = ["2001:db8::21", "2001:db8::22"]
        .map(|a| WantedReal { address: IpAddr::V6(v6(a)), port: 80, ..real(21, 1) })
        .to_vec();
    let mut wanted = service(Scheduler::Sh, reals);
    wanted.vip = IpAddr::V6(v6("2001:db8::100"));
    wanted.options = ServiceOptions {
        persistence_timeout: Some(300),
        persistence_netmask: Netmask::V6(64),
        ..ServiceOptions::for_vip(wanted.vip)
    };
    let ops = Tables::new().plan(std::slice::from_ref(&wanted), &|_| 0).unwrap().ops;

    let vip_words = ipv6_words(v6("2001:db8::100").octets());
    let key = ServiceKey { addr: vip_words, port: 80u16.to_be(), protocol: 6, family: AF_INET6 };
    assert_eq!(wanted.key(), key);
    let value = ops.iter().find_map(|op| if let MapOp::SetService(_, v) = op { Some(*v) } else { None }).unwrap();
    // /64: the first two words, as the packet holds them.
    assert_eq!(value.persistence_mask, [u32::MAX, u32::MAX, 0, 0]);
    let servers: BTreeSet<_> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::SetReal(_, d) => Some((d.addr, d.family, u16::from_be(d.port))),
            _ => None,
        })
        .collect();
    let expected = ["2001:db8::21", "2001:db8::22"].map(|a| (ipv6_words(v6(a).octets()), AF_INET6, 80));
    assert_eq!(servers, BTreeSet::from(expected));
    let filter =
        ops.iter().find_map(|op| if let MapOp::SetVipFilter(f) = op { Some(f.clone()) } else { None }).unwrap();
    let bit = lb_common::vip_filter_bit(&vip_words);
    assert_eq!(filter.iter().map(|w| w.count_ones()).sum::<u32>(), 1);
    assert_ne!(filter[(bit >> 6) as usize] & 1 << (bit & 63), 0);
    assert_eq!(
        MapOp::SetService(key, value).describe(),
        "service tcp [2001:db8::100]:80",
        "messages write the VIP as ipvsadm does"
    );

    // What a previous lbd left in the maps, read back.
    let mut tables = Tables::new();
    let planned = tables.plan(std::slice::from_ref(&wanted), &|_| 0).unwrap();
    let mut adopted = Adopted {
        services: vec![],
        reals: BTreeMap::new(),
        service_reals: BTreeMap::new(),
        tables: BTreeMap::new(),
        positions: BTreeMap::new(),
        fwmark_matches: Vec::new(),
    };
    for op in &planned.ops {
        match op {
            MapOp::SetService(k, v) => adopted.services.push((*k, *v)),
            MapOp::SetReal(id, d) => {
                adopted.reals.insert(*id, *d);
            }
            MapOp::SetRealList { real_ids, .. } => {
                adopted.service_reals.insert(key, real_ids.clone());
            }
            MapOp::SetSchedTable { real_ids, .. } => {
                adopted.tables.insert(key, real_ids.clone());
            }
            _ => {}
        }
    }
    tables.commit(planned);
    let again = Tables::adopt(&adopted);
    let back: Vec<_> = again.wanted().cloned().collect();
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].vip, back[0].options.persistence_netmask), (wanted.vip, Netmask::V6(64)));
    let addresses: BTreeSet<_> = back[0].reals.iter().map(|r| r.address).collect();
    assert_eq!(addresses, wanted.reals.iter().map(|r| r.address).collect());
    // (The filter is written again after any adoption: it is not read back.)
    let replan = again.plan(std::slice::from_ref(&wanted), &|_| 0).unwrap().ops;
    assert!(
        !replan.iter().any(|op| matches!(op, MapOp::SetService(..) | MapOp::SetReal(..))),
        "nothing to rewrite: {replan:?}"
    );
}

/// A firewall-mark service of `reals` whose matches are TCP 10.0.0.100
/// (ports 80 and 443) and UDP 10.0.1.0/30 (ports 5000-5001).
fn mark_service(mark: u32, reals: Vec<WantedReal>) -> WantedService {
    let m = |protocol, net: [u8; 4], prefix_len, ports: &[(u16, u16)]| MarkMatch {
        protocol,
        net: IpAddr::from(net),
        prefix_len,
        ports: ports.to_vec(),
    };
    WantedService {
        vip: IpAddr::from([0, 0, 0, 0]),
        port: 0,
        fwmark: mark,
        matches: vec![
            m(Protocol::Tcp, [10, 0, 0, 100], 32, &[(80, 80), (443, 443)]),
            m(Protocol::Udp, [10, 0, 1, 0], 30, &[(5000, 5001)]),
        ],
        ..service(Scheduler::Wlc, reals)
    }
}

/// A mark service is written under its mark with the FWMARK flag, its
/// matches one entry per port after it, and its networks in the VIP
/// filter; removed, its matches go first. The fake maps check the order.
#[test]
fn firewall_mark_services_are_found_by_their_matches() {
    let mut tables = Tables::new();
    let mut maps = FakeMaps::default();
    let mut wanted = vec![service(Scheduler::Rr, vec![real(1, 1)]), mark_service(7, vec![real(21, 2), real(22, 1)])];
    let ops = tables.plan(&wanted, &|_| 0).unwrap().ops;
    let key = lb_common::fwmark_service_key(7u32.to_be(), lb_common::AF_INET);
    assert_eq!(wanted[1].key(), key);
    assert_eq!(wanted[1].id(), ServiceId::fwmark(7, false));
    let value = ops
        .iter()
        .find_map(|op| match op {
            MapOp::SetService(k, v) if *k == key => Some(*v),
            _ => None,
        })
        .unwrap();
    assert_eq!((value.flags & service_flag::FWMARK, value.fwmark), (service_flag::FWMARK, 7u32.to_be()));
    assert_eq!(value.flags & service_flag::ALL_PORTS, 0);
    let matches: Vec<(u32, u8, u16, [u8; 4])> = ops
        .iter()
        .filter_map(|op| match op {
            MapOp::SetFwmarkMatch { key: (len, m), mark, replaced: None } if *mark == 7u32.to_be() => {
                Some((*len, m.protocol, u16::from_be(m.port), lb_common::ipv4_octets(m.addr)))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        BTreeSet::from_iter(matches),
        BTreeSet::from([
            (64, 6, 80, [10, 0, 0, 100]),
            (64, 6, 443, [10, 0, 0, 100]),
            (62, 17, 5000, [10, 0, 1, 0]),
            (62, 17, 5001, [10, 0, 1, 0])
        ])
    );
    // The explicit service's VIP, the mark's host and the /30's four.
    let filter = ops.iter().find_map(|op| if let MapOp::SetVipFilter(f) = op { Some(f.clone()) } else { None });
    let filter = filter.unwrap();
    for addr in [[10, 0, 0, 100], [10, 0, 1, 0], [10, 0, 1, 1], [10, 0, 1, 2], [10, 0, 1, 3]] {
        let bit = lb_common::vip_filter_bit(&lb_common::ipv4_words(addr));
        assert_ne!(filter[(bit >> 6) as usize] & 1 << (bit & 63), 0, "{addr:?}");
    }
    assert!(filter.iter().map(|w| w.count_ones()).sum::<u32>() <= 5);
    // Its real servers keep each packet's port.
    assert!(ops.iter().all(|op| !matches!(op, MapOp::SetReal(_, d) if d.service_id == value.id && d.port != 0)));
    plan(&mut tables, &mut maps, &wanted);
    assert_eq!(maps.fwmark_matches.len(), 4);

    // A wider network turns the filter off rather than list its addresses.
    wanted[1].matches[1].prefix_len = 16;
    wanted[1].matches[1].net = IpAddr::from([10, 0, 0, 0]);
    plan(&mut tables, &mut maps, &wanted);
    let ops = tables.plan(&wanted, &|_| 0).unwrap().ops;
    assert!(ops.is_empty(), "nothing changed: {ops:?}");
    let replan = Tables::new().plan(&wanted, &|_| 0).unwrap().ops;
    let filter = replan.iter().find_map(|op| if let MapOp::SetVipFilter(f) = op { Some(f.clone()) } else { None });
    assert!(filter.unwrap().iter().all(|w| *w == u64::MAX));

    // Removed: matches first, then the service (FakeMaps checks).
    wanted.pop();
    plan(&mut tables, &mut maps, &wanted);
    assert!(maps.fwmark_matches.is_empty());
    assert!(!maps.services.contains_key(&key));
}

/// The template of a mark service's client is the same whatever the port,
/// protocol and address its packet went to (ip_vs_sched_persist with
/// svc->fwmark): the mark for the VIP, ports 0, protocol 0.
#[test]
fn firewall_mark_templates_are_keyed_by_the_mark() {
    let wanted = mark_service(7, vec![real(21, 1)]);
    let ops = Tables::new().plan(std::slice::from_ref(&wanted), &|_| 0).unwrap().ops;
    let value = ops.iter().find_map(|op| if let MapOp::SetService(_, v) = op { Some(*v) } else { None }).unwrap();
    let flow = |dst: [u8; 4], dport: u16, protocol: u8| lb_common::FlowKey {
        src: lb_common::ipv4_words([192, 0, 2, 9]),
        dst: lb_common::ipv4_words(dst),
        sport: 40000u16.to_be(),
        dport: dport.to_be(),
        protocol,
        family: lb_common::AF_INET,
        kind: lb_common::flow_kind::CONNECTION,
        pad0: 0,
    };
    let http = value.template_key(&flow([10, 0, 0, 100], 80, 6));
    assert_eq!(http, value.template_key(&flow([10, 0, 0, 100], 443, 6)));
    assert_eq!(http, value.template_key(&flow([10, 0, 1, 2], 5000, 17)));
    assert_eq!((http.dst, http.dport, http.sport, http.protocol), ([7u32.to_be(), 0, 0, 0], 0, 0, 0));
    assert_eq!(MapOp::SetService(wanted.key(), value).describe(), "service fwmark 7");
}
