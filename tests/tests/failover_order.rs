//! At failover the datapath takes the VIP's traffic before the VIP is
//! announced (issue 12): the new master leaves standby first, then adds
//! the VIP and sends its gratuitous ARPs. In the other order the new
//! master's own stack holds the VIP while its datapath still passes the
//! VIP's packets to it, and answers every packet of a connection it does
//! not know (all of them: the synced ones live in the datapath) with a
//! reset.
//!
//! Thousands of connections, held open through the master and synced to
//! the backup, are asked again and again from several threads while the
//! master crashes and the backup takes over: no reset from the VIP reaches
//! the client (tcpdump in its namespace), and every connection goes on, on
//! its own real server.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs
//! root (otherwise the test prints a message and passes).

use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use lb_tests::HeldConnection;
use lb_tests::failover::{
    TAKEOVER_SLACK, Vrrp, counter, crash, detach_dead, failover_lab, start_pair,
    wait_client_moved_to, wait_for, wait_garps, wait_state,
};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns::watch_arp;
use lb_tests::scenario::{finish, root_or_skip, vip80};
use lb_tests::steady::{Asking, RstWatch};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
/// Connections held open through the master and synced to the backup.
const CONNECTIONS: usize = 2000;
/// Threads asking on them, so that packets arrive all the time.
const THREADS: usize = 8;

#[test]
fn no_reset_from_the_vip_while_the_backup_takes_over() {
    if !root_or_skip("no_reset_from_the_vip_while_the_backup_takes_over") {
        return;
    }
    let lab = failover_lab(LAB_SERVER, "fo_order", 91);
    let h2 = lab.directors()[1].clone();
    let high = Vrrp::v3(100, 150);
    let low = Vrrp::v3(100, 100);
    let (mut d1, d2) = start_pair(&lab, &high, &low, true);

    let target = vip80(&lab);
    let opened = Instant::now();
    let conns: Vec<HeldConnection> = (0..CONNECTIONS)
        .map(|i| {
            lab.hold_http_connection(&lab.client().ns, target)
                .unwrap_or_else(|e| panic!("connection {i}: {e:#}"))
        })
        .collect();
    eprintln!(
        "{CONNECTIONS} connections open in {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    let locals: BTreeSet<SocketAddrV4> = conns.iter().map(|c| c.local).collect();
    let (synced, took) = wait_for(
        "every connection synced to director2",
        Duration::from_secs(30),
        || {
            let entries = d2.connection_entries().ok()?;
            let n = entries
                .iter()
                .filter(|e| locals.contains(&e.source))
                .count();
            (n == CONNECTIONS).then_some(n)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\ndirector2's log:\n{}", d2.log()));
    eprintln!(
        "{synced} entries on director2 within {:.1} s",
        took.as_secs_f64()
    );

    let resets = RstWatch::start(&lab);
    let asking = Asking::start(conns, THREADS);
    wait_for(
        "requests on the held connections",
        Duration::from_secs(10),
        || (asking.answered() >= 2 * CONNECTIONS as u64).then_some(()),
    )
    .unwrap();

    // The master crashes (its XDP program forwards on until the client
    // moves: nothing of its own can answer).
    let watch = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    let tx_before = counter(&d2, "tx_dr");
    let killed = crash(&mut d1);
    wait_state(&d2, "master", low.master_down() + TAKEOVER_SLACK);
    wait_garps(&lab, &watch, &h2);
    wait_client_moved_to(&lab, &h2, Duration::from_secs(2));
    eprintln!(
        "the client moved to director2 {:.3} s after the SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    // Traffic goes on through the new master for a while.
    let answered = asking.answered();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        asking.answered() > answered + CONNECTIONS as u64,
        "requests go on after the failover"
    );

    let (conns, report) = asking.stop();
    let resets = resets.stop();
    eprintln!(
        "{} requests answered; {} connections broken; {} resets from the VIP",
        report.answered,
        report.broken.len(),
        resets.len()
    );
    assert!(
        counter(&d2, "tx_dr") > tx_before,
        "director2 forwarded after the takeover"
    );
    assert!(
        resets.is_empty(),
        "the client got {} resets from the VIP, e.g. {:?}\ndirector2's log:\n{}",
        resets.len(),
        &resets[..resets.len().min(5)],
        d2.log()
    );
    assert!(
        report.broken.is_empty(),
        "{} connections broke, e.g. {:?}",
        report.broken.len(),
        &report.broken[..report.broken.len().min(5)]
    );
    drop(conns);
    detach_dead(&d1);
    finish(d2);
}
