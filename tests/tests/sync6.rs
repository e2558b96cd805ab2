//! Connection sync over IPv6 end to end (issue 15): two lbd directors with
//! a VRRPv3 instance for an IPv6 VIP, an IPv6 DR service on it and
//! connection sync between them, curl-like keep-alive connections from the
//! client through the VIP.
//!
//! The master syncs its IPv6 entries; the backup's table has each held
//! connection, to the same real server, before the failover. The master
//! crashes and its host drops off the link; the backup takes over and
//! every held connection goes on, on its own real server. Without the
//! synced entries the new master would not know them: their packets are
//! not SYNs, so its datapath passes them to its kernel, which holds the
//! VIP and resets them (`tests/failover.rs` shows that over IPv4).
//!
//! The same with an IPv6 firewall-mark service (ports 80 and 8443,
//! persistent): the held connection's entry and the client's template,
//! keyed by the mark, reach the backup, so after the failover the held
//! connection goes on and the client's new connections to the other port
//! go to the same real server.
//!
//! Needs root (else it prints a message and passes); build lbd first
//! (`cargo build -p lb-userspace -p lbctl`).

use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::failover::{TAKEOVER_SLACK, Vrrp, counter, crash, detach_dead, wait_for, wait_state};
use lb_tests::failover6::{lab6, lbd6_with, link_local, service6, wait_backup_of6, wait_client_moved_to6};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns;
use lb_tests::scenario::{finish, root_or_skip, teardown};
use lb_tests::{HeldConnection6, Lab};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const HIGH: Vrrp = Vrrp { version: 3, interval: Duration::from_millis(100), priority: 150, preempt: true };
const LOW: Vrrp = Vrrp { priority: 100, ..HIGH };
const HELD: usize = 4;

/// One row of `lbctl -L -n -c`: source, destination, state.
#[derive(Debug)]
struct Entry6 {
    source: SocketAddr,
    destination: SocketAddr,
    state: String,
}

/// `lbctl -L -n -c` on `d`, its IPv6 rows (`[addr]:port`).
fn entries6(d: &Director<'_>) -> Vec<Entry6> {
    let out = d.lbctl(&["-L", "-n", "-c"]).unwrap();
    out.lines()
        .skip(2)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() == 6).then_some(())?;
            Some(Entry6 { source: f[3].parse().ok()?, destination: f[5].parse().ok()?, state: f[2].to_owned() })
        })
        .filter(|e| e.source.is_ipv6())
        .collect()
}

/// The lab's name of the real server at `destination`.
fn real_name(lab: &Lab, destination: SocketAddr) -> Option<String> {
    lab.reals().iter().find(|r| destination.ip() == r.ip6()).map(|r| r.name.clone())
}

/// Waits until `d`'s table has every held connection, ESTABLISHED, to its
/// own real server; how long it took.
fn wait_synced(lab: &Lab, d: &Director<'_>, held: &[HeldConnection6]) -> Duration {
    let all_there = || {
        let entries = entries6(d);
        held.iter()
            .all(|c| {
                entries.iter().any(|e| {
                    e.source == SocketAddr::V6(c.local)
                        && e.state == "ESTABLISHED"
                        && real_name(lab, e.destination).as_deref() == Some(c.server.as_str())
                })
            })
            .then_some(())
    };
    wait_entries(d, "the held IPv6 connections synced to director2", held, all_there)
}

/// Waits until `check` says `d`'s table is as wanted; how long it took.
fn wait_entries(d: &Director<'_>, what: &str, held: &[HeldConnection6], check: impl FnMut() -> Option<()>) -> Duration {
    match wait_for(what, Duration::from_secs(5), check) {
        Ok(((), took)) => took,
        Err(e) => panic!(
            "{e:#}\nheld: {:?}\ndirector2's entries: {:?}\ndirector2's counters: {:?}\nits log:\n{}",
            held.iter().map(|c| (c.local, &c.server)).collect::<Vec<_>>(),
            entries6(d),
            d.counters(),
            d.log()
        ),
    }
}

/// Two lbd directors with `services`, VRRP for the IPv6 VIP and sync:
/// director1 master, director2 its backup.
fn start_pair<'a>(lab: &'a Lab, services: &str) -> (Director<'a>, Director<'a>) {
    let (h1, h2) = (&lab.directors()[0], &lab.directors()[1]);
    let mut d1 = lbd6_with(lab, h1, &HIGH, Some(h2), services);
    let mut d2 = lbd6_with(lab, h2, &LOW, Some(h1), services);
    d1.start().unwrap();
    wait_state(&d1, "master", Duration::from_secs(5) + 2 * HIGH.master_down());
    d2.start().unwrap();
    wait_backup_of6(&d2, link_local(&h1.ns), "director2 hearing director1 over IPv6", Duration::from_secs(5));
    (d1, d2)
}

/// director1 crashes (SIGKILL: no priority-0 advert) and its host drops
/// off the link (its kernel keeps the VIP, as after a crash); director2
/// takes over and the client's neighbour entry moves to it.
fn fail_over(lab: &Lab, d1: &mut Director<'_>, d2: &Director<'_>) {
    crash(d1);
    detach_dead(d1);
    netns::ip(&["-n", &lab.directors()[0].ns, "link", "set", HOST_IFACE, "down"]).unwrap();
    wait_state(d2, "master", LOW.master_down() + TAKEOVER_SLACK);
    wait_client_moved_to6(lab, &lab.directors()[1], Duration::from_secs(2));
}

/// Every held connection goes on, on its own real server, through
/// director2's datapath (which knows it from the synced entry): none of
/// its packets went to director2's kernel, none was scheduled afresh.
fn assert_held_go_on(d2: &Director<'_>, held: &mut [HeldConnection6]) {
    let forwarded_before = counter(d2, "tx_dr");
    let not_syn_before = counter(d2, "pass_tcp_not_syn");
    let new_before = counter(d2, "conn_new");
    for (i, c) in held.iter_mut().enumerate() {
        c.stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let body = c.ask("/whoami").unwrap_or_else(|e| {
            panic!("held IPv6 connection {i} ({}) after the failover: {e:#}\n{}", c.local, d2.log())
        });
        let server = body.split_whitespace().next().unwrap_or_default();
        assert_eq!(server, c.server, "held IPv6 connection {i} ({}) changed real server", c.local);
    }
    assert_eq!(counter(d2, "pass_tcp_not_syn"), not_syn_before, "no held packet went to director2's kernel");
    let forwarded = counter(d2, "tx_dr") - forwarded_before;
    assert!(forwarded >= held.len() as u64, "director2 forwarded the held connections' packets: {forwarded}");
    assert_eq!(counter(d2, "conn_new"), new_before, "no held connection was scheduled afresh");
}

#[test]
fn ipv6_connections_survive_failover_with_sync() {
    if !root_or_skip("ipv6 connection sync") {
        return;
    }
    let lab = lab6(LAB_SERVER, "sync6", 230);
    let (mut d1, d2) = start_pair(&lab, &service6(&lab));

    // Keep-alive connections through the master, to both real servers (rr).
    let target = SocketAddrV6::new(lab.vip6(), 80, 0, 0);
    let mut held: Vec<HeldConnection6> =
        (0..HELD).map(|_| lab.hold_http_connection6(&lab.client().ns, target).unwrap()).collect();
    let servers: Vec<&str> = held.iter().map(|c| c.server.as_str()).collect();
    assert!(servers.contains(&"rs1") && servers.contains(&"rs2"), "{servers:?}");
    assert_eq!(counter(&d2, "conn_new"), 0, "the backup forwarded nothing");

    // The backup learned every one of them through sync (it forwarded none).
    let took = wait_synced(&lab, &d2, &held);
    eprintln!("sync6: {HELD} IPv6 entries on director2 within {:.3} s", took.as_secs_f64());
    assert!(counter(&d2, "sync_records_installed") >= HELD as u64);

    fail_over(&lab, &mut d1, &d2);
    assert_held_go_on(&d2, &mut held);

    drop(held);
    finish(d2);
    drop(d1);
    teardown(lab);
}

/// The second port of the firewall mark.
const SECOND_PORT: u16 = 8443;

/// An IPv6 firewall-mark service, mark 1: the VIP's ports 80 and
/// [`SECOND_PORT`], persistent (a client keeps its server on both).
fn mark6(lab: &Lab) -> String {
    let mut text = format!(
        "\n[[service]]\nfwmark = 1\nmatch = [{{ vip = \"{}\", ports = [80, {SECOND_PORT}] }}]\nscheduler = \"rr\"\n\
         persistence_timeout = 300\n",
        lab.vip6()
    );
    for real in lab.reals() {
        text.push_str(&format!("\n[[service.real]]\naddress = \"{}\"\nweight = 1\n", real.ip6()));
    }
    text
}

#[test]
fn ipv6_firewall_mark_entries_and_templates_survive_failover_with_sync() {
    if !root_or_skip("ipv6 firewall-mark sync") {
        return;
    }
    let lab = lab6(LAB_SERVER, "sync6-mark", 231);
    lab.start_http_servers_on(LAB_SERVER.as_ref(), SECOND_PORT).unwrap();
    let (mut d1, d2) = start_pair(&lab, &mark6(&lab));

    // One keep-alive connection through the master: its entry and the
    // client's template (source port 0) reach the backup.
    let client = &lab.client().ns;
    let mut held = vec![lab.hold_http_connection6(client, SocketAddrV6::new(lab.vip6(), 80, 0, 0)).unwrap()];
    let server = held[0].server.clone();
    let template = SocketAddr::new((*held[0].local.ip()).into(), 0);
    let took = wait_entries(&d2, "the connection and template of mark 1 synced to director2", &held, || {
        let entries = entries6(&d2);
        let to_server = |e: &&Entry6| real_name(&lab, e.destination).as_deref() == Some(server.as_str());
        let conn = entries.iter().filter(to_server).any(|e| e.source == SocketAddr::V6(held[0].local));
        let template = entries.iter().filter(to_server).any(|e| e.source == template);
        (conn && template).then_some(())
    });
    eprintln!("sync6-mark: the entry and template on director2 within {:.3} s", took.as_secs_f64());

    fail_over(&lab, &mut d1, &d2);
    assert_held_go_on(&d2, &mut held);
    // New connections to the mark's other port: the synced template keeps
    // the client on its server (rr alone would alternate between the two).
    let new_before = counter(&d2, "conn_new");
    for i in 0..4 {
        let c = lab.hold_http_connection6(client, SocketAddrV6::new(lab.vip6(), SECOND_PORT, 0, 0)).unwrap();
        assert_eq!(c.server, server, "new connection {i} to port {SECOND_PORT} left the client's server");
    }
    assert_eq!(counter(&d2, "conn_new"), new_before + 4, "director2 scheduled them");

    drop(held);
    finish(d2);
    drop(d1);
    teardown(lab);
}
