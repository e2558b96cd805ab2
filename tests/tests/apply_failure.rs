//! A map write that fails halfway through an apply: the maps and the
//! controller's model stay as they were (the writes before the failure are
//! undone, the model is committed only once every write succeeded), and
//! the next apply succeeds with the maps matching the model.
//!
//! The failure is a real one: another writer filled the service map, so
//! the new service's insert (the last write of its plan, after its real
//! servers, tables, flags and the VIP filter) has no room. Needs root (the
//! real program and maps, as in `datapath.rs`).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use aya::maps::{HashMap, Map, MapData};
use lb_common::{RealServer, Service, ServiceKey, map_name};
use lb_tests::{
    harness::{Harness, XDP_PASS, XDP_TX, real_mac, service},
    is_root,
    packets::{PacketSpec, tcp},
};
use lb_userspace::{
    model::{Protocol, Scheduler},
    tables::WantedService,
};

const VIP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const VIP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
const CLIENT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 40000);

/// What the configuration maps hold, comparable.
#[derive(Debug, PartialEq)]
struct Maps {
    services: BTreeMap<ServiceKey, Service>,
    reals: BTreeMap<u32, RealServer>,
    service_reals: BTreeMap<ServiceKey, Vec<u32>>,
    tables: BTreeMap<ServiceKey, Vec<u32>>,
}

fn read_maps(h: &Harness) -> Maps {
    let a = h.datapath.read_back().unwrap();
    Maps {
        services: a.services.into_iter().collect(),
        reals: a.reals,
        service_reals: a.service_reals,
        tables: a.tables,
    }
}

/// The same, as the model says the maps are.
fn model(h: &Harness) -> Maps {
    let t = &h.tables;
    let keys: Vec<ServiceKey> = t.wanted().map(WantedService::key).collect();
    let services = keys
        .iter()
        .map(|k| {
            (
                *k,
                *t.installed_values()
                    .find(|v| Some(v.id) == t.service_id(k))
                    .unwrap(),
            )
        })
        .collect();
    let service_reals: BTreeMap<ServiceKey, Vec<u32>> = keys
        .iter()
        .map(|k| (*k, t.service_reals(k).to_vec()))
        .collect();
    let reals = t.real_ids().map(|id| (id, *t.real(id).unwrap())).collect();
    Maps {
        services,
        reals,
        service_reals,
        tables: Default::default(),
    }
}

/// The service map of this harness's program (found through the program,
/// so parallel tests' maps are never touched).
fn service_map(h: &Harness) -> HashMap<MapData, ServiceKey, Service> {
    let ids = h
        .datapath
        .program()
        .info()
        .unwrap()
        .map_ids()
        .unwrap()
        .unwrap();
    let data = ids
        .into_iter()
        .map(|id| MapData::from_id(id).unwrap())
        .find(|m| m.info().unwrap().name_as_str() == Some(map_name::SERVICES))
        .expect("the program uses SERVICES");
    HashMap::try_from(Map::HashMap(data)).unwrap()
}

fn junk_key(i: u32) -> ServiceKey {
    ServiceKey {
        addr: [0xC0A8_0000 + i, 0, 0, 0],
        port: 9u16.to_be(),
        protocol: 6,
        family: 2,
    }
}

fn syn_verdict(h: &Harness, vip: Ipv4Addr) -> (u32, Vec<u8>) {
    let out = h
        .run(&PacketSpec::tcp(CLIENT, SocketAddrV4::new(vip, 80), tcp::SYN).build())
        .unwrap();
    (
        out.verdict,
        out.output.get(0..6).map(<[u8]>::to_vec).unwrap_or_default(),
    )
}

#[test]
fn a_map_write_failing_halfway_leaves_maps_and_model_as_they_were() {
    if !is_root() {
        eprintln!("skipped: loading the datapath needs root");
        return;
    }
    let mut h = Harness::new().unwrap();
    let reals = |last: [u8; 2]| last.map(|o| (Ipv4Addr::new(10, 0, 0, o), 1)).to_vec();
    let a = service(Protocol::Tcp, VIP_A, 80, Scheduler::Rr, &reals([21, 22]));
    let b = service(Protocol::Tcp, VIP_B, 80, Scheduler::Wrr, &reals([23, 24]));
    h.apply(std::slice::from_ref(&a)).unwrap();
    let before = read_maps(&h);
    let model_before = model(&h);

    // Another writer takes every free slot of the service map.
    let mut services = service_map(&h);
    let mut junk = 0;
    while services
        .insert(junk_key(junk), Service::default(), 0)
        .is_ok()
    {
        junk += 1;
    }
    assert!(
        junk > 0 && junk < lb_common::MAX_SERVICES,
        "filled {junk} slots"
    );

    let error = h
        .apply(&[a.clone(), b.clone()])
        .expect_err("B's service has no room in the map");
    eprintln!("the apply failed as it should: {error:#}");
    for i in 0..junk {
        services.remove(&junk_key(i)).unwrap();
    }
    assert_eq!(
        read_maps(&h),
        before,
        "the writes before the failure were not undone"
    );
    assert_eq!(model(&h), model_before, "the model went ahead of the maps");
    assert_eq!(
        h.tables.wanted().cloned().collect::<Vec<_>>(),
        std::slice::from_ref(&a)
    );
    assert_eq!(syn_verdict(&h, VIP_B).0, XDP_PASS, "B is not a service yet");

    // The next apply (room again) installs B, and the maps are the model.
    h.apply(&[a.clone(), b.clone()]).unwrap();
    let (verdict, mac) = syn_verdict(&h, VIP_B);
    assert_eq!(verdict, XDP_TX, "B's SYN was not forwarded");
    let to: Vec<[u8; 6]> = [23, 24]
        .map(|o| real_mac(Ipv4Addr::new(10, 0, 0, o)))
        .to_vec();
    assert!(
        to.iter().any(|m| m[..] == mac[..]),
        "B's SYN went to {mac:02x?}"
    );
    let (maps, model) = (read_maps(&h), model(&h));
    assert_eq!(maps.services, model.services);
    assert_eq!(maps.service_reals, model.service_reals);
    assert_eq!(maps.reals, model.reals);
    // And A still forwards as before.
    assert_eq!(syn_verdict(&h, VIP_A).0, XDP_TX);
}
