//! Connection sync against a hostile segment (issue 11): crafted datagrams
//! sent to a running lbd, and to lbd's receiver over a veth pair.
//!
//! * Without a key, a forged datagram from a peer's address passes the only
//!   check there is (the source), but its records are checked one by one:
//!   a state no protocol has, a timeout above this director's, a VIP port
//!   other than its service's are not installed, and are counted
//!   (`lbctl --counters`, `sync_refused_*`) and logged at a bounded rate.
//! * With a key, captured datagrams of two boots of a peer replayed
//!   alternately are refused once the newer boot was seen, as is a
//!   datagram replayed from another peer's address.
//! * The receiver hears the group (or, unicast, its own address) only.
//! * `lbd --check` refuses sync without a key unless `insecure = true`.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs
//! root (otherwise each test prints a message and passes).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use lb_common::conn_state;
use lb_tests::director::{Director, ServiceSpec};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns::{self, VETH_ADDR_A as ADDR_A, VETH_ADDR_B as ADDR_B, VethPair, spawn_in_netns};
use lb_tests::scenario::{finish, lab_with_servers, root_or_skip, start_configured, wait_until};
use lb_tests::{Host, Lab};
use lb_userspace::sync::{
    SyncReceiver, SyncStats,
    config::{SyncConfig, SyncKey, Transport},
    wire::{Encoder, RecordKind, SyncRecord},
};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const SYNC_PORT: u16 = 8848;
const KEY: &str = "hostile test shared key 0123456789";

/// A peer address on the lab's segment that no host has: the tests give it
/// to the client, which plays the attacker (or the peer).
fn fake_peer(lab: &Lab, last: u8) -> Ipv4Addr {
    let o = lab.client().ip.octets();
    Ipv4Addr::new(o[0], o[1], o[2], last)
}

/// A connection record of the lab's HTTP service to its first real server.
fn record(lab: &Lab, client_port: u16) -> SyncRecord {
    SyncRecord {
        kind: RecordKind::Connection,
        protocol: 6,
        state: conn_state::ESTABLISHED,
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), client_port),
        vip: SocketAddr::new(IpAddr::V4(lab.vip()), 80),
        service_port: 80,
        fwmark: 0,
        real: SocketAddr::new(IpAddr::V4(lab.real(0).ip), 80),
        timeout: 900,
        idle_ms: 0,
    }
}

/// Sends `datagrams` from the client's namespace, from `from`, to the
/// director's sync port, in order.
fn send_from_client(lab: &Lab, from: Ipv4Addr, to: Ipv4Addr, datagrams: Vec<Vec<u8>>) {
    netns::run_in_netns(&lab.client().ns, move || {
        let socket = UdpSocket::bind(SocketAddrV4::new(from, 0)).unwrap();
        for d in datagrams {
            socket.send_to(&d, SocketAddrV4::new(to, SYNC_PORT)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .unwrap();
}

/// lbd on the lab's director with the HTTP service and `sync` (no VRRP:
/// it sends and installs).
fn director_with_sync<'a>(lab: &'a Lab, sync: &str) -> Director<'a> {
    let mut d = Director::new(lab).unwrap();
    d.add_section(sync);
    start_configured(d, &[ServiceSpec::lab_http(lab, "rr")])
}

/// A counter of `lbctl --counters` (0 if absent).
fn counter(d: &Director<'_>, name: &str) -> u64 {
    d.counters().unwrap().get(name).copied().unwrap_or(0)
}

/// Whether lbd's table has an entry from 198.51.100.7:`port`.
fn has_entry(d: &Director<'_>, port: u16) -> bool {
    let source = SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), port);
    d.connection_entries().unwrap().iter().any(|e| e.source == source)
}

fn add_address(host: &Host, address: Ipv4Addr) {
    netns::ip(&["-n", &host.ns, "addr", "add", &format!("{address}/32"), "dev", HOST_IFACE]).unwrap();
}

#[test]
fn forged_records_are_refused_and_counted() {
    if !root_or_skip("forged_records_are_refused_and_counted") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "sync_forged", 150, 2);
    let peer = fake_peer(&lab, 200);
    let d = director_with_sync(
        &lab,
        &format!(
            "[sync]\ninterface = \"{HOST_IFACE}\"\ntransport = \"unicast\"\npeers = [\"{peer}\"]\n\
             insecure = true\nscan_interval = \"100ms\"\n"
        ),
    );
    // The choice is logged at the start.
    assert!(d.log().contains("connection sync without a key"), "{}", d.log());
    // The attacker forges the peer's address (the only check without a key).
    add_address(lab.client(), peer);
    let director = lab.director().ip;
    let forged_state = SyncRecord { state: 200, ..record(&lab, 1001) };
    let forged_timeout = SyncRecord { timeout: u32::MAX, ..record(&lab, 1002) };
    let forged_port = SyncRecord { vip: SocketAddr::new(IpAddr::V4(lab.vip()), 22), ..record(&lab, 1003) };
    let all_three = SyncRecord { state: 200, timeout: u32::MAX, ..forged_port };
    let all_three = SyncRecord { client: SocketAddr::new(all_three.client.ip(), 1004), ..all_three };
    let good = record(&lab, 1005);
    let mut enc = Encoder::new(0, 1472, None, peer, Encoder::new_boot_id(None));
    let d1 = enc.encode(&[forged_state, forged_timeout, forged_port, all_three, good]);
    send_from_client(&lab, peer, director, d1);
    wait_until("the good record installed", Duration::from_secs(5), || {
        (counter(&d, "sync_records_installed") >= 1, d.counters().unwrap())
    });
    assert!(has_entry(&d, 1005), "{:?}", d.connection_entries());
    for port in 1001..=1004 {
        assert!(!has_entry(&d, port), "forged entry {port} installed: {:?}", d.connection_entries());
    }
    let c = d.counters().unwrap();
    assert_eq!(
        (c["sync_refused_state"], c["sync_refused_timeout"], c["sync_refused_port"], c["sync_records_installed"]),
        (2, 1, 1, 1),
        "{c:?}"
    );
    let log = d.log();
    assert!(log.contains("state 200 is not a TCP state"), "{log}");
    assert!(log.contains("timeout 4294967295 s is above this director's 900 s"), "{log}");
    assert!(log.contains("VIP port 22 is not its service's port 80"), "{log}");

    // A flood: every record counted, the log bounded (one line per reason
    // per 10 s).
    let flood: Vec<Vec<u8>> = (0..100u16)
        .flat_map(|i| enc.encode(&[SyncRecord { state: 200, ..record(&lab, 2000 + i) }]))
        .collect();
    send_from_client(&lab, peer, director, flood);
    wait_until("the flood counted", Duration::from_secs(10), || {
        let n = counter(&d, "sync_refused_state");
        (n >= 102, n)
    });
    let lines = d.log().matches("is not a TCP state").count();
    assert!(lines <= 3, "{lines} log lines for one reason:\n{}", d.log());
    // Not from the peer: dropped whole.
    let stranger = lab.client().ip;
    let mut other = Encoder::new(0, 1472, None, stranger, Encoder::new_boot_id(None));
    send_from_client(&lab, stranger, director, other.encode(&[record(&lab, 3000)]));
    wait_until("the stranger counted", Duration::from_secs(5), || {
        (counter(&d, "sync_rejected_not_peer") == 1, d.counters().unwrap())
    });
    assert!(!has_entry(&d, 3000));
    finish(d);

    // Without insecure = true, no key is refused, with the file's line and key.
    let director = Director::new(&lab).unwrap();
    let config = lab.log_dir().join("no-key.toml");
    let text = format!(
        "{}\n{}\n[sync]\ninterface = \"{HOST_IFACE}\"\npeers = [\"{peer}\"]\n",
        director.director_toml(),
        ServiceSpec::lab_http(&lab, "rr").to_toml()
    );
    std::fs::write(&config, &text).unwrap();
    let run = director.check(&config).unwrap();
    assert!(!run.status.success(), "{run:?}");
    let line = text.lines().position(|l| l == "[sync]").unwrap() + 1;
    let said = format!("{}{}", run.stdout, run.stderr);
    assert!(said.contains(&format!("no-key.toml:{line}: sync.key: required")), "{said}");
}

#[test]
fn replayed_boots_are_refused() {
    if !root_or_skip("replayed_boots_are_refused") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "sync_replay", 151, 2);
    let (peer, other_peer) = (fake_peer(&lab, 200), fake_peer(&lab, 201));
    let d = director_with_sync(
        &lab,
        &format!(
            "[sync]\ninterface = \"{HOST_IFACE}\"\ntransport = \"unicast\"\n\
             peers = [\"{peer}\", \"{other_peer}\"]\nkey = \"{KEY}\"\nscan_interval = \"100ms\"\n"
        ),
    );
    add_address(lab.client(), peer);
    add_address(lab.client(), other_peer);
    let director = lab.director().ip;
    // Captured datagrams of two boots of the peer: the older one first.
    let older = Encoder::new_boot_id(None) - (60_000 << 16);
    let mut boot_a = Encoder::new(0, 1472, Some(KEY.as_bytes()), peer, older);
    let mut boot_b = Encoder::new(0, 1472, Some(KEY.as_bytes()), peer, Encoder::new_boot_id(None));
    let a1 = boot_a.encode(&[record(&lab, 4001)]).remove(0);
    let a2 = boot_a.encode(&[record(&lab, 4002)]).remove(0);
    let b1 = boot_b.encode(&[record(&lab, 4101)]).remove(0);
    let b2 = boot_b.encode(&[record(&lab, 4102)]).remove(0);
    // Replayed alternately: a1, b1, a2, b1, a1; then b2 from the other
    // peer's address (its origin is the first peer).
    send_from_client(&lab, peer, director, vec![a1.clone(), b1.clone(), a2, b1, a1]);
    send_from_client(&lab, other_peer, director, vec![b2.clone()]);
    wait_until("the replays counted", Duration::from_secs(5), || {
        let c = d.counters().unwrap();
        let seen = ["sync_rejected_old_boot", "sync_rejected_replay", "sync_rejected_wrong_origin"]
            .map(|k| c.get(k).copied().unwrap_or(0));
        (seen == [2, 1, 1], c)
    });
    assert_eq!(counter(&d, "sync_datagrams_received"), 2);
    assert!(has_entry(&d, 4001) && has_entry(&d, 4101), "{:?}", d.connection_entries());
    assert!(!has_entry(&d, 4002), "an older boot's datagram after the newer one");
    assert!(!has_entry(&d, 4102), "a datagram replayed from another peer's address");
    // From the peer's own address, b2 is new: taken.
    send_from_client(&lab, peer, director, vec![b2]);
    wait_until("b2 installed", Duration::from_secs(5), || (has_entry(&d, 4102), ()));
    let log = d.log();
    assert!(log.contains("from an older boot of its sender"), "{log}");
    assert!(log.contains(&format!("says it is from {peer}, comes from {other_peer}")), "{log}");
    finish(d);
}

/// lbd's receiver, multicast or unicast, in namespace b of a veth pair;
/// returns the client ports of the records it accepted within `wait`.
fn receive(net: &VethPair, transport: Transport, ready: std::sync::mpsc::Sender<()>) -> std::thread::JoinHandle<Vec<u16>> {
    let mut c = SyncConfig::new("vb");
    c.transport = transport;
    c.peers = vec![ADDR_A];
    c.port = 18849;
    c.key = Some(SyncKey(KEY.as_bytes().to_vec()));
    spawn_in_netns(&net.b, move || async move {
        let mut receiver = SyncReceiver::open(&c, std::sync::Arc::new(SyncStats::default())).expect("receiver");
        ready.send(()).unwrap();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
        while let Ok(Ok(batch)) = tokio::time::timeout_at(deadline, receiver.recv()).await {
            got.extend(batch.records.iter().map(|r| r.client.port()));
        }
        got
    })
}

#[test]
fn only_the_group_or_our_address_is_heard() {
    let Some(net) = VethPair::new("synch1") else { return };
    // A second address of b: unicast to it is not for sync.
    net.ip(&net.b, &["addr", "add", "192.0.2.3/24", "dev", "vb"]);
    let record = |port: u16| SyncRecord {
        kind: RecordKind::Connection,
        protocol: 6,
        state: 1,
        client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), port),
        vip: "192.0.2.100:80".parse().unwrap(),
        service_port: 80,
        fwmark: 0,
        real: "192.0.2.10:80".parse().unwrap(),
        timeout: 900,
        idle_ms: 0,
    };
    for (transport, heard, unheard) in [
        (Transport::Multicast, Ipv4Addr::new(224, 0, 0, 81), [ADDR_B, Ipv4Addr::new(192, 0, 2, 255)]),
        (Transport::Unicast, ADDR_B, [Ipv4Addr::new(192, 0, 2, 3), Ipv4Addr::new(192, 0, 2, 255)]),
    ] {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let receiver = receive(&net, transport, ready_tx);
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        spawn_in_netns(&net.a, move || async move {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
            socket.set_broadcast(true).unwrap();
            socket.bind(&SocketAddrV4::new(ADDR_A, 0).into()).unwrap();
            socket.bind_device(Some(b"va")).unwrap();
            let mut enc = Encoder::new(0, 1472, Some(KEY.as_bytes()), ADDR_A, Encoder::new_boot_id(None));
            for (i, to) in unheard.iter().enumerate() {
                let d = enc.encode(&[record(100 + i as u16)]).remove(0);
                socket.send_to(&d, &SocketAddrV4::new(*to, 18849).into()).unwrap();
            }
            let d = enc.encode(&[record(1)]).remove(0);
            socket.send_to(&d, &SocketAddrV4::new(heard, 18849).into()).unwrap();
        })
        .join()
        .unwrap();
        assert_eq!(receiver.join().unwrap(), [1], "{transport:?}: only what goes to {heard}");
    }
}
