//! Connection sync under stress keeps every entry (issue 12): two lbd
//! directors with VRRP and sync, sync blocked for a while, connections
//! opened (and left idle) meanwhile; after the block, the master crashes
//! and every connection goes on through the backup, to its own server.
//!
//! * Blocked at the sender: a tc filter on the master's link makes every
//!   send fail (ENOBUFS, as a full device queue does). The entries count as
//!   sent only once they went out, so they go out when the block ends.
//! * Lost on the way: the backup's link drops sync datagrams silently (a
//!   tc filter redirects them to a dead veth); the master's sends succeed.
//!   The periodic refresh sends idle entries too, so the backup has them
//!   within a refresh period (2 s here) once the drop ends.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs
//! root (otherwise each test prints a message and passes).

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::{Duration, Instant};

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns::{self, MacAddr};
use lb_tests::scenario::{finish, root_or_skip, vip80};
use lb_tests::{HeldConnection, Host, Lab, LabSpec};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const SYNC_KEY: &str = "blocked sync test shared key 0123";
const ADVERT_MS: u64 = 100;

/// lbd on `host`: VRRPv3 for the VIP (adverts every 100 ms) with
/// `priority`, and sync with `peer` (`sync_extra`: more `[sync]` lines).
fn lbd_on<'a>(lab: &'a Lab, host: &Host, priority: u8, peer: &Host, sync_extra: &str) -> Director<'a> {
    let mut d = Director::on_host(lab, host).unwrap();
    d.add_section(&format!(
        "[[vrrp]]\nname = \"VI_1\"\ninterface = \"{HOST_IFACE}\"\nvirtual_router_id = 52\npriority = {priority}\n\
         version = 3\nadvert_interval = \"{ADVERT_MS}ms\"\nvirtual_ipaddress = [\"{}/32\"]\n",
        lab.vip()
    ));
    d.add_section(&format!(
        "[sync]\ninterface = \"{HOST_IFACE}\"\npeers = [\"{}\"]\nkey = \"{SYNC_KEY}\"\nscan_interval = \"100ms\"\n{sync_extra}",
        peer.ip
    ));
    d.write_config(&[ServiceSpec::lab_http(lab, "rr")]).unwrap();
    d
}

fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            eprintln!("{what}: not within {timeout:?}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_state(d: &Director<'_>, state: &str, timeout: Duration) {
    let ok = wait_for(&format!("{} {state}", d.host().name), timeout, || {
        (d.vrrp_state().ok()? == state).then_some(())
    });
    assert!(ok.is_some(), "{} not {state}; its log:\n{}", d.host().name, d.log());
}

fn counter(d: &Director<'_>, name: &str) -> u64 {
    d.counters().unwrap().get(name).copied().unwrap_or(0)
}

/// The held connections `d` has an entry for, to the same real server.
fn synced(lab: &Lab, d: &Director<'_>, held: &[HeldConnection]) -> usize {
    let entries = d.connection_entries().unwrap_or_default();
    held.iter()
        .filter(|c| {
            entries.iter().any(|e| {
                e.source == c.local
                    && lab.reals().iter().any(|r| r.ip == *e.destination.ip() && r.name == c.server)
            })
        })
        .count()
}

/// The client's neighbour entry for the VIP.
fn client_neighbour(lab: &Lab) -> Option<MacAddr> {
    let vip = lab.vip().to_string();
    let out = netns::ip(&["-n", &lab.client().ns, "-j", "neigh", "show", &vip, "dev", HOST_IFACE]).ok()?;
    let json: serde_json::Value = serde_json::from_str(&out).ok()?;
    json[0]["lladdr"].as_str()?.parse().ok()
}

/// Two directors with sync; `block` cuts sync from director1 to director2
/// and returns how to undo it; connections are opened while it holds; then
/// the master crashes and every connection must go on.
fn blocked_then_failover(
    name: &str,
    k: u8,
    sync_extra: &str,
    sends_fail: bool,
    block: impl Fn(&Lab, &Host, &Host) -> Box<dyn Fn()>,
) {
    let lab = Lab::build(LabSpec::new(name).directors(2).without_static_vip().subnet_index(k)).unwrap();
    lab.start_http_servers_with(Path::new(LAB_SERVER)).unwrap();
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let mut d1 = lbd_on(&lab, &h1, 150, &h2, sync_extra);
    let mut d2 = lbd_on(&lab, &h2, 100, &h1, sync_extra);
    d1.start().unwrap();
    wait_state(&d1, "master", Duration::from_secs(5));
    d2.start().unwrap();
    wait_state(&d2, "backup", Duration::from_secs(5));

    let unblock = block(&lab, &h1, &h2);
    let target: SocketAddrV4 = vip80(&lab);
    let mut held: Vec<HeldConnection> =
        (0..6).map(|_| lab.hold_http_connection(&lab.client().ns, target).unwrap()).collect();
    let servers: Vec<String> = held.iter().map(|c| c.server.clone()).collect();
    // Many scans while blocked: the backup has none of them.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(synced(&lab, &d2, &held), 0, "the block let sync through: {:?}", d2.connection_entries());
    let (unsent, errors) = (counter(&d1, "sync_records_unsent"), counter(&d1, "sync_send_errors"));
    eprintln!("{name}: while blocked, director1 counted {unsent} records unsent, {errors} send errors");
    unblock();
    let took = Instant::now();
    let all = wait_for("the held connections on director2", Duration::from_secs(6), || {
        (synced(&lab, &d2, &held) == held.len()).then_some(())
    });
    assert!(
        all.is_some(),
        "after the block, director2 has {} of {} connections: {:?}\ndirector1's counters: {:?}\nits log:\n{}",
        synced(&lab, &d2, &held),
        held.len(),
        d2.connection_entries(),
        d1.counters(),
        d1.log()
    );
    eprintln!("{name}: director2 had them all {:.3} s after the block ended", took.elapsed().as_secs_f64());
    // The failed sends were seen and counted (a silent loss is not).
    assert_eq!(unsent > 0 && errors > 0, sends_fail, "{:?}", d1.counters());

    // The master crashes; its XDP program goes with its pins.
    d1.kill().unwrap();
    d1.remove_pins().unwrap();
    wait_state(&d2, "master", Duration::from_secs(3));
    let moved = wait_for("the client moved to director2", Duration::from_secs(3), || {
        (client_neighbour(&lab) == Some(h2.mac)).then_some(())
    });
    assert!(moved.is_some(), "the client's ARP entry for the VIP is {:?}", client_neighbour(&lab));
    for (c, server) in held.iter_mut().zip(&servers) {
        c.stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let answer = c.ask("/whoami").unwrap_or_else(|e| panic!("{server}'s connection broke: {e:#}\n{}", d2.log()));
        assert_eq!(answer.split_whitespace().next(), Some(server.as_str()), "on its own server");
    }
    drop(held);
    finish(d2);
}

/// Sends the sync datagrams crossing `host`'s eth0 in `direction`
/// ("ingress", "egress") to a veth `sink` instead: with the sink down, the
/// redirect fails and the sender's send fails (ENOBUFS, as with a full
/// device queue); with it up and its peer down, they vanish silently.
/// Returns how to undo it.
fn divert_sync(lab: &Lab, host: &Host, direction: &str, sink_up: bool) -> Box<dyn Fn()> {
    let mut commands = vec![
        vec!["ip", "link", "add", "sink", "type", "veth", "peer", "name", "sink2"],
        vec!["tc", "qdisc", "add", "dev", HOST_IFACE, "clsact"],
        vec![
            "tc", "filter", "add", "dev", HOST_IFACE, direction, "protocol", "ip", "u32", "match", "ip", "protocol",
            "17", "0xff", "match", "ip", "dport", "8848", "0xffff", "action", "mirred", "egress", "redirect", "dev",
            "sink",
        ],
    ];
    if sink_up {
        commands.insert(1, vec!["ip", "link", "set", "sink", "up"]);
    }
    for args in commands {
        lab.run(&host.ns, &args).unwrap();
    }
    let ns = host.ns.clone();
    Box::new(move || {
        for args in [&["tc", "qdisc", "del", "dev", HOST_IFACE, "clsact"][..], &["ip", "link", "del", "sink"]] {
            let out = netns::command_in(&ns, args).output().unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        }
    })
}

#[test]
fn entries_blocked_at_the_sender_survive_failover() {
    if !root_or_skip("entries_blocked_at_the_sender_survive_failover") {
        return;
    }
    // Every send of director1 fails while the block holds.
    blocked_then_failover("sync_blocked", 152, "", true, |lab, h1, _h2| divert_sync(lab, h1, "egress", false));
}

#[test]
fn entries_lost_on_the_way_survive_failover() {
    if !root_or_skip("entries_lost_on_the_way_survive_failover") {
        return;
    }
    // director1's sends succeed; director2 never sees them.
    blocked_then_failover("sync_lost", 153, "refresh_period = \"2s\"\n", false, |lab, _h1, h2| {
        divert_sync(lab, h2, "ingress", true)
    });
}
