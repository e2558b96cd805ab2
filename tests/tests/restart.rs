//! A planned restart of lbd on the VRRP master (issue 12): `SIGUSR2` makes
//! lbd exit for a restart, leaving its XDP program forwarding and its VIPs
//! on the interface; the next lbd adopts the datapath and, back within the
//! backup's master-down interval, resumes as master at once. The VIP does
//! not move and no request fails, old or new.
//!
//! Back too late, when the other director has taken over, the restarted
//! lbd does not claim the VIP: it joins the election as any starting lbd.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs
//! root (otherwise each test prints a message and passes).

use std::time::{Duration, Instant};

use lb_tests::director::Director;
use lb_tests::failover::{
    Vrrp, failover_lab, has_vip, start_pair, vrrp_status, wait_backup_of, wait_for, wait_state,
};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns::watch_arp;
use lb_tests::scenario::{finish, root_or_skip, vip_url, vip80};
use lb_tests::steady::{NewConnections, RstWatch};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// Asks lbd to exit for a restart and waits until it has; its log.
fn exit_for_restart(d: &mut Director<'_>) -> String {
    d.signal(libc::SIGUSR2).unwrap();
    wait_for("lbd to exit for a restart", Duration::from_secs(10), || {
        (!d.is_running()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", d.log()));
    let status = d.stop().unwrap();
    let log = d.log();
    assert!(status.success(), "lbd exited with {status}:\n{log}");
    assert!(log.contains("exiting for a restart"), "{log}");
    // What it leaves: the program forwarding (its link pinned), the VIP.
    assert!(d.xdp_attached().unwrap(), "the XDP program stays attached");
    log
}

#[test]
fn a_restart_on_the_master_moves_nothing_and_drops_nothing() {
    if !root_or_skip("a_restart_on_the_master_moves_nothing_and_drops_nothing") {
        return;
    }
    let lab = failover_lab(LAB_SERVER, "restart", 92);
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let high = Vrrp::v3(1000, 150);
    let low = Vrrp::v3(1000, 100);
    let (mut d1, d2) = start_pair(&lab, &high, &low, true);
    let backup_before = vrrp_status(&d2);

    let resets = RstWatch::start(&lab);
    let arps = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    let slow_seconds = 8;
    let url = vip_url(&lab, &format!("/slow?seconds={slow_seconds}"));
    let download = lab
        .spawn(
            &lab.client().ns,
            "slow-download",
            &["curl", "-sS", "-N", "--max-time", "30", &url],
        )
        .unwrap();
    let requests = NewConnections::start(&lab, vip80(&lab), Duration::from_millis(20));
    wait_for("the loop's first answers", Duration::from_secs(5), || {
        (requests.answered() >= 5).then_some(())
    })
    .unwrap();

    let away = Instant::now();
    exit_for_restart(&mut d1);
    assert!(has_vip(&lab, &h1), "the VIP stays on director1");
    d1.start().unwrap();
    wait_state(&d1, "master", Duration::from_secs(1));
    eprintln!(
        "lbd on director1 away and back as master in {:.3} s (the backup's master-down interval {:.3} s)",
        away.elapsed().as_secs_f64(),
        low.master_down().as_secs_f64()
    );
    let s1 = vrrp_status(&d1);
    assert_eq!(s1["transitions"], 1, "INIT -> MASTER only: {s1}");
    assert!(d1.log().contains("resumes as master"), "{}", d1.log());
    // Long past the backup's master-down interval from the old lbd's last
    // advert: had the new one been silent, the backup would have taken over.
    std::thread::sleep(low.master_down() + Duration::from_millis(500));

    wait_for(
        "the slow download to end",
        Duration::from_secs(2 * slow_seconds + 10),
        || (!lab.is_running(&download)).then_some(()),
    )
    .unwrap();
    let status = lab.stop(&download).unwrap();
    let output = lab.read_log(&download);
    let report = requests.stop();
    let resets = resets.stop();
    eprintln!(
        "new connections: {} answered, {} failed; slow download: {status}; {} resets from the VIP",
        report.answered,
        report.failed.len(),
        resets.len()
    );

    let backup_after = vrrp_status(&d2);
    assert_eq!(backup_after["state"], "backup", "{backup_after}");
    assert_eq!(
        backup_after["transitions"],
        backup_before["transitions"],
        "director2 never left backup: {backup_before} -> {backup_after}\n{}",
        d2.log()
    );
    assert!(!has_vip(&lab, &h2), "the VIP never went to director2");
    let moved: Vec<_> = arps
        .stop()
        .into_iter()
        .filter(|a| a.is_gratuitous() && a.sender_mac == h2.mac)
        .collect();
    assert!(moved.is_empty(), "director2 announced the VIP: {moved:?}");
    assert!(
        report.failed.is_empty(),
        "failed requests (time since the loop began, why): {:?}",
        report.failed
    );
    assert!(status.success(), "the download broke: {status}\n{output}");
    let lines: Vec<&str> = output.lines().filter(|l| l.starts_with("rs")).collect();
    assert_eq!(lines.len(), slow_seconds as usize, "{output}");
    assert!(resets.is_empty(), "resets from the VIP: {resets:?}");
    finish(d1);
    finish(d2);
}

#[test]
fn back_too_late_the_restarted_master_joins_the_election() {
    if !root_or_skip("back_too_late_the_restarted_master_joins_the_election") {
        return;
    }
    let lab = failover_lab(LAB_SERVER, "restart_late", 93);
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let high = Vrrp::v3(200, 150);
    let low = Vrrp::v3(200, 100);
    let (mut d1, d2) = start_pair(&lab, &high, &low, false);

    exit_for_restart(&mut d1);
    // Away longer than the backup waits: it takes over.
    wait_state(&d2, "master", low.master_down() + Duration::from_secs(1));
    std::thread::sleep(high.interval);
    d1.start().unwrap();
    let log = d1.log();
    assert!(!log.contains("resumes as master"), "{log}");
    assert!(log.contains("not resuming as master"), "{log}");
    // The election as at any start: backup, then it preempts the lower
    // priority master.
    wait_state(&d1, "master", high.master_down() + Duration::from_secs(2));
    wait_backup_of(&d2, &h1, "director2 back to backup", Duration::from_secs(2));
    let s1 = vrrp_status(&d1);
    assert_eq!(s1["transitions"], 2, "INIT -> BACKUP -> MASTER: {s1}");
    assert!(has_vip(&lab, &h1) && !has_vip(&lab, &h2));
    finish(d1);
    finish(d2);
}
