//! lbd beside Debian's keepalived (issue 5): on the two directors of the
//! failover lab, each as master and as backup, VRRPv2 (with simple-text
//! authentication) and VRRPv3: election, crash failover, preemption,
//! `nopreempt`, and a clean stop's hand-over. keepalived is run only for
//! the VRRP part (`-P`): it moves the VIP and forwards nothing; lbd on the
//! other director forwards. A SIGKILLed director's XDP program is detached
//! by removing its pins, as in `failover.rs`.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs
//! root and keepalived (otherwise each test prints a message and passes).

use std::time::{Duration, Instant};

use lb_tests::Lab;
use lb_tests::director::Director;
use lb_tests::failover::{
    TAKEOVER_SLACK, Vrrp, assert_forwards, configure, crash, detach_dead, failover_lab, has_vip, has_vip_in,
    lbd_on, start_master, vrrp_status, wait_backup_of, wait_client_moved_to, wait_for, wait_garps, wait_state,
    wait_vip_gone,
};
use lb_tests::keepalived::{self, Keepalived};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns::watch_arp;
use lb_tests::scenario::{finish, root_or_skip};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
/// What keepalived logs when its event loop ran late (it was not scheduled).
const KEEPALIVED_STALLED: &str = "A thread timer expired";

/// True with root and keepalived installed; otherwise says that `test` is skipped.
fn root_and_keepalived_or_skip(test: &str) -> bool {
    root_or_skip(test) && keepalived::installed_or_skip(test)
}

/// Waits until keepalived holds the VIP (master) or not (backup): the
/// address on its interface and the matching "Entering ... STATE" lines.
fn wait_keepalived(
    lab: &Lab,
    ka: &Keepalived,
    master: bool,
    entered: usize,
    timeout: Duration,
) -> Duration {
    let state = if master {
        "Entering MASTER STATE"
    } else {
        "Entering BACKUP STATE"
    };
    let result = wait_for(&format!("keepalived {state}"), timeout, || {
        (has_vip_in(lab, ka.ns()) == master && ka.count(state) >= entered).then_some(())
    });
    match result {
        Ok(((), took)) => took,
        Err(e) => panic!("{e:#} (#{entered}); keepalived's log:\n{}", ka.log()),
    }
}

/// lbd (one director) and keepalived (the other) for the same VRID and VIP:
/// the one with priority 150 starts first and is master, the other joins as
/// backup; the master crashes and the backup takes over within its
/// master-down interval; the crashed one returns and preempts; it crashes
/// again and returns with nopreempt, and stays backup; finally a clean stop
/// of the master hands over at once.
fn interop(name: &str, k: u8, version: u8, keepalived_master: bool) {
    let lab = failover_lab(LAB_SERVER, name, k);
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let high = Vrrp::version(version, 100, 150);
    let low = Vrrp::version(version, 100, 100);
    let (ka_host, lbd_host) = if keepalived_master {
        (&h1, &h2)
    } else {
        (&h2, &h1)
    };
    let (ka_vrrp, lbd_vrrp) = if keepalived_master {
        (high, low)
    } else {
        (low, high)
    };
    let mut ka = Keepalived::new(&ka_host.ns, lab.log_dir(), &ka_host.name);
    let mut lbd = lbd_on(&lab, lbd_host, &lbd_vrrp, None);
    let v = format!("VRRPv{version}");
    let lbd_bad_adverts = |lbd: &Director<'_>| {
        let s = vrrp_status(lbd);
        assert_eq!(s["bad_adverts"], 0, "lbd refused keepalived's adverts: {s}");
    };
    let keepalived_complaints = |ka: &Keepalived| {
        let log = ka.log();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                [
                    "invalid",
                    "mismatch",
                    "not present",
                    "bad ",
                    "error",
                    "wrong",
                ]
                .iter()
                .any(|w| l.contains(w))
            })
            .collect();
        assert!(
            bad.is_empty(),
            "keepalived complained about lbd's adverts:\n{}",
            bad.join("\n")
        );
    };
    let lbd_forwards = |lbd: &Director<'_>| {
        assert_forwards(&lab, lbd, "lbd forwarded the request");
    };

    // Election: the higher priority is master, the other joins as backup.
    if keepalived_master {
        ka.start(&ka_vrrp.keepalived_conf(&lab, ka_host));
        wait_keepalived(
            &lab,
            &ka,
            true,
            1,
            Duration::from_secs(5) + 2 * ka_vrrp.master_down(),
        );
        lbd.start().unwrap();
        wait_backup_of(
            &lbd,
            ka_host,
            "lbd hearing keepalived",
            Duration::from_secs(5) + 2 * lbd_vrrp.master_down(),
        );
        // Well past lbd's master-down interval: it stays backup.
        std::thread::sleep(2 * lbd_vrrp.master_down());
        assert_eq!(lbd.vrrp_state().unwrap(), "backup");
        assert_eq!(ka.count("Entering MASTER STATE"), 1, "{}", ka.log());
    } else {
        start_master(&mut lbd, &lbd_vrrp);
        ka.start(&ka_vrrp.keepalived_conf(&lab, ka_host));
        wait_keepalived(&lab, &ka, false, 1, Duration::from_secs(5));
        std::thread::sleep(2 * ka_vrrp.master_down());
        assert_eq!(
            ka.count("Entering MASTER STATE"),
            0,
            "keepalived must stay backup:\n{}",
            ka.log()
        );
        assert_eq!(lbd.vrrp_state().unwrap(), "master");
        assert_eq!(vrrp_status(&lbd)["transitions"], 2);
        lbd_forwards(&lbd);
    }
    assert_eq!(
        lab.arp_probe_from_client(lab.vip()).unwrap(),
        vec![h1.mac],
        "only the master answers ARP"
    );
    // The client has talked to the VIP (so it has an ARP entry for the
    // gratuitous ARPs to update; they create none), even where keepalived
    // holds it and only its kernel answers (with a reset).
    let _ = lab.exec(
        &lab.client().ns,
        &[
            "curl",
            "-s",
            "--max-time",
            "1",
            &format!("http://{}/", lab.vip()),
        ],
    );
    wait_client_moved_to(&lab, &h1, Duration::from_secs(2));
    assert!(vrrp_status(&lbd)["adverts_received"].as_u64().unwrap() > 0 || !keepalived_master);
    lbd_bad_adverts(&lbd);
    keepalived_complaints(&ka);
    eprintln!(
        "{name}: election done ({v}, {} master)",
        if keepalived_master {
            "keepalived"
        } else {
            "lbd"
        }
    );

    // The master crashes; the backup takes over within its master-down interval.
    let watch = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    let killed = Instant::now();
    let took = if keepalived_master {
        ka.kill();
        wait_state(&lbd, "master", low.master_down() + TAKEOVER_SLACK);
        let took = killed.elapsed();
        wait_garps(&lab, &watch, lbd_host);
        wait_client_moved_to(&lab, lbd_host, Duration::from_secs(2));
        took
    } else {
        crash(&mut lbd);
        detach_dead(&lbd);
        wait_keepalived(&lab, &ka, true, 1, low.master_down() + TAKEOVER_SLACK);
        let took = killed.elapsed();
        wait_garps(&lab, &watch, ka_host);
        wait_client_moved_to(&lab, ka_host, Duration::from_secs(2));
        took
    };
    eprintln!(
        "{name}: {} took over {:.3} s after the master's crash (master-down interval {:.3} s)",
        if keepalived_master {
            "lbd"
        } else {
            "keepalived"
        },
        took.as_secs_f64(),
        low.master_down().as_secs_f64()
    );
    assert!(
        took <= low.master_down() + TAKEOVER_SLACK + Duration::from_millis(100),
        "{took:?}"
    );
    if keepalived_master {
        lbd_forwards(&lbd);
    }
    drop(watch);

    // The crashed master returns and preempts.
    let restarted = Instant::now();
    if keepalived_master {
        ka.start(&ka_vrrp.keepalived_conf(&lab, ka_host));
        wait_keepalived(
            &lab,
            &ka,
            true,
            2,
            Duration::from_secs(5) + 2 * ka_vrrp.master_down(),
        );
        wait_state(&lbd, "backup", Duration::from_secs(2));
        wait_vip_gone(&lab, lbd_host, "the VIP gone from lbd's director");
    } else {
        configure(&mut lbd, &lbd_vrrp, None);
        start_master(&mut lbd, &lbd_vrrp);
        wait_keepalived(&lab, &ka, false, 2, Duration::from_secs(3));
        lbd_forwards(&lbd);
    }
    eprintln!(
        "{name}: preempted {:.3} s after the restart",
        restarted.elapsed().as_secs_f64()
    );
    wait_client_moved_to(&lab, &h1, Duration::from_secs(3));
    lbd_bad_adverts(&lbd);
    keepalived_complaints(&ka);

    // Again, now returning with nopreempt: it stays backup.
    if keepalived_master {
        ka.kill();
        wait_state(&lbd, "master", low.master_down() + TAKEOVER_SLACK);
        ka.start(&ka_vrrp.nopreempt().keepalived_conf(&lab, ka_host));
        wait_keepalived(&lab, &ka, false, 3, Duration::from_secs(5));
    } else {
        crash(&mut lbd);
        detach_dead(&lbd);
        wait_keepalived(&lab, &ka, true, 2, low.master_down() + TAKEOVER_SLACK);
        configure(&mut lbd, &lbd_vrrp.nopreempt(), None);
        lbd.start().unwrap();
        wait_state(&lbd, "backup", Duration::from_secs(2));
    }
    let masters_before = ka.count("Entering MASTER STATE");
    let stalls_before = ka.count(KEEPALIVED_STALLED);
    let observe = (3 * high.master_down()).max(Duration::from_secs(2));
    std::thread::sleep(observe);
    if keepalived_master {
        assert_eq!(
            ka.count("Entering MASTER STATE"),
            masters_before,
            "nopreempt keepalived took over:\n{}",
            ka.log()
        );
        assert!(!has_vip(&lab, ka_host));
        assert_eq!(lbd.vrrp_state().unwrap(), "master");
        lbd_forwards(&lbd);
    } else if ka.count(KEEPALIVED_STALLED) > stalls_before && lbd.vrrp_state().unwrap() != "backup"
    {
        // keepalived was not scheduled for longer than lbd's master-down
        // interval (a loaded machine): no adverts, so lbd rightly took over.
        eprintln!(
            "{name}: WARNING: keepalived stalled (\"{KEEPALIVED_STALLED}\" in its log) and lbd took over as it \
             should; nopreempt not judged this time"
        );
    } else {
        assert_eq!(
            lbd.vrrp_state().unwrap(),
            "backup",
            "nopreempt lbd took over:\n{}",
            lbd.log()
        );
        assert_eq!(vrrp_status(&lbd)["master_address"], ka_host.ip.to_string());
        assert!(has_vip(&lab, ka_host) && !has_vip(&lab, lbd_host));
        assert_eq!(ka.count("Entering BACKUP STATE"), 2, "{}", ka.log());
    }
    eprintln!("{name}: nopreempt held for {:.1} s", observe.as_secs_f64());
    lbd_bad_adverts(&lbd);
    keepalived_complaints(&ka);

    // A clean stop of the master (priority 0): the backup takes over after its skew time.
    let stopped = Instant::now();
    if keepalived_master {
        finish(lbd);
        assert!(!has_vip(&lab, lbd_host), "lbd removed the VIP on stopping");
        wait_keepalived(
            &lab,
            &ka,
            true,
            masters_before + 1,
            ka_vrrp.skew() + TAKEOVER_SLACK,
        );
        eprintln!(
            "{name}: keepalived master {:.3} s after lbd's clean stop",
            stopped.elapsed().as_secs_f64()
        );
        ka.stop();
    } else {
        ka.terminate();
        wait_state(&lbd, "master", lbd_vrrp.skew() + TAKEOVER_SLACK);
        eprintln!(
            "{name}: lbd master {:.3} s after keepalived's SIGTERM",
            stopped.elapsed().as_secs_f64()
        );
        ka.stop();
        assert!(
            !has_vip(&lab, ka_host),
            "keepalived removed the VIP on stopping"
        );
        lbd_forwards(&lbd);
        finish(lbd);
    }
    assert!(ka.vrrp_pid().is_none(), "keepalived's VRRP process is gone");
}

#[test]
fn keepalived_master_lbd_backup_vrrp_v2() {
    if !root_and_keepalived_or_skip("keepalived_master_lbd_backup_vrrp_v2") {
        return;
    }
    interop("ka_master_v2", 87, 2, true);
}

#[test]
fn keepalived_master_lbd_backup_vrrp_v3() {
    if !root_and_keepalived_or_skip("keepalived_master_lbd_backup_vrrp_v3") {
        return;
    }
    interop("ka_master_v3", 88, 3, true);
}

#[test]
fn lbd_master_keepalived_backup_vrrp_v2() {
    if !root_and_keepalived_or_skip("lbd_master_keepalived_backup_vrrp_v2") {
        return;
    }
    interop("lbd_master_v2", 89, 2, false);
}

#[test]
fn lbd_master_keepalived_backup_vrrp_v3() {
    if !root_and_keepalived_or_skip("lbd_master_keepalived_backup_vrrp_v3") {
        return;
    }
    interop("lbd_master_v3", 90, 3, false);
}
