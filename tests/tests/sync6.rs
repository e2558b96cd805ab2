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
//! Needs root (else it prints a message and passes); build lbd first
//! (`cargo build -p lb-userspace -p lbctl`).

use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::failover::{TAKEOVER_SLACK, Vrrp, counter, crash, detach_dead, wait_for, wait_state};
use lb_tests::failover6::{lab6, lbd6, link_local, wait_backup_of6, wait_client_moved_to6};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns;
use lb_tests::scenario::{finish, root_or_skip, teardown};
use lb_tests::{HeldConnection6, Lab};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const INTERVAL_MS: u64 = 100;
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
            Some(Entry6 {
                source: f[3].parse().ok()?,
                destination: f[5].parse().ok()?,
                state: f[2].to_owned(),
            })
        })
        .filter(|e| e.source.is_ipv6())
        .collect()
}

/// The lab's name of the real server at `destination`.
fn real_name(lab: &Lab, destination: SocketAddr) -> Option<String> {
    lab.reals()
        .iter()
        .find(|r| destination.ip() == r.ip6())
        .map(|r| r.name.clone())
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
    match wait_for(
        "the held IPv6 connections synced to director2",
        Duration::from_secs(5),
        all_there,
    ) {
        Ok(((), took)) => took,
        Err(e) => panic!(
            "{e:#}\nheld: {:?}\ndirector2's entries: {:?}\ndirector2's counters: {:?}\nits log:\n{}",
            held.iter()
                .map(|c| (c.local, &c.server))
                .collect::<Vec<_>>(),
            entries6(d),
            d.counters(),
            d.log()
        ),
    }
}

#[test]
fn ipv6_connections_survive_failover_with_sync() {
    if !root_or_skip("ipv6 connection sync") {
        return;
    }
    let lab = lab6(LAB_SERVER, "sync6", 230);
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let (high, low) = (Vrrp::v3(INTERVAL_MS, 150), Vrrp::v3(INTERVAL_MS, 100));
    let mut d1 = lbd6(&lab, &h1, &high, Some(&h2));
    let mut d2 = lbd6(&lab, &h2, &low, Some(&h1));
    d1.start().unwrap();
    wait_state(
        &d1,
        "master",
        Duration::from_secs(5) + 2 * high.master_down(),
    );
    d2.start().unwrap();
    wait_backup_of6(
        &d2,
        link_local(&h1.ns),
        "director2 hearing director1 over IPv6",
        Duration::from_secs(5),
    );

    // Keep-alive connections through the master, to both real servers (rr).
    let target = SocketAddrV6::new(lab.vip6(), 80, 0, 0);
    let mut held: Vec<HeldConnection6> = (0..HELD)
        .map(|_| lab.hold_http_connection6(&lab.client().ns, target).unwrap())
        .collect();
    let servers: Vec<String> = held.iter().map(|c| c.server.clone()).collect();
    assert!(
        servers.contains(&"rs1".to_owned()) && servers.contains(&"rs2".to_owned()),
        "{servers:?}"
    );
    assert_eq!(counter(&d2, "conn_new"), 0, "the backup forwarded nothing");

    // The backup learned every one of them through sync (it forwarded none).
    let took = wait_synced(&lab, &d2, &held);
    eprintln!(
        "sync6: {HELD} IPv6 entries on director2 within {:.3} s",
        took.as_secs_f64()
    );
    assert!(counter(&d2, "sync_records_installed") >= HELD as u64);

    // director1 crashes (SIGKILL: no priority-0 advert) and its host drops
    // off the link (its kernel keeps the VIP, as after a crash).
    crash(&mut d1);
    detach_dead(&d1);
    netns::ip(&["-n", &h1.ns, "link", "set", HOST_IFACE, "down"]).unwrap();
    wait_state(&d2, "master", low.master_down() + TAKEOVER_SLACK);
    wait_client_moved_to6(&lab, &h2, Duration::from_secs(2));

    // Every held connection goes on, on its own real server, through
    // director2's datapath (which knows it from the synced entry).
    let forwarded_before = counter(&d2, "tx_dr");
    let not_syn_before = counter(&d2, "pass_tcp_not_syn");
    for (i, c) in held.iter_mut().enumerate() {
        c.stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let body = c.ask("/whoami").unwrap_or_else(|e| {
            panic!(
                "held IPv6 connection {i} ({}) after the failover: {e:#}\n{}",
                c.local,
                d2.log()
            )
        });
        let server = body.split_whitespace().next().unwrap_or_default();
        assert_eq!(
            server, servers[i],
            "held IPv6 connection {i} ({}) changed real server",
            c.local
        );
    }
    assert_eq!(
        counter(&d2, "pass_tcp_not_syn"),
        not_syn_before,
        "no held packet went to director2's kernel"
    );
    let forwarded = counter(&d2, "tx_dr") - forwarded_before;
    assert!(
        forwarded >= HELD as u64,
        "director2 forwarded the held connections' packets: {forwarded}"
    );
    assert_eq!(
        counter(&d2, "conn_new"),
        0,
        "no held connection was scheduled afresh"
    );

    drop(held);
    finish(d2);
    drop(d1);
    teardown(lab);
}
