//! VRRPv3 over IPv6 end to end (issue 15): two directors on the client
//! segment of a lab with IPv6 on every host, a `[[vrrp]]` instance for the
//! IPv6 VIP, an IPv6 DR service on it, curl -6 as the client.
//!
//! * Two lbd: the master holds the VIP (nodad, deprecated as keepalived
//!   adds it) and forwards; it crashes and its host drops off the link; the
//!   backup takes over within its master-down interval, its unsolicited
//!   neighbour advertisements move the client's neighbour entry (well
//!   before any NUD probe would), and curl -6 works through it.
//! * lbd beside keepalived (an IPv6 `virtual_ipaddress`: VRRPv3 over IPv6),
//!   either one master: each hears the other's adverts, the higher priority
//!   wins, neither complains; the master crashes, the other takes over.
//!
//! Needs root (else each test prints a message and passes) and, for the
//! second, keepalived; build lbd first (`cargo build -p lb-userspace -p lbctl`).

use std::time::{Duration, Instant};

use lb_tests::director::Director;
use lb_tests::failover::{TAKEOVER_SLACK, Vrrp, counter, crash, detach_dead, vrrp_status, wait_for, wait_state};
use lb_tests::failover6::{self, VRID6, link_local, wait_backup_of6, wait_client_moved_to6};
use lb_tests::keepalived::{self, Keepalived};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns;
use lb_tests::scenario::{finish, root_or_skip, teardown};
use lb_tests::{Host, Lab};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const INTERVAL_MS: u64 = 200;

fn lab6(name: &str, k: u8) -> Lab {
    failover6::lab6(LAB_SERVER, name, k)
}

fn lbd6<'a>(lab: &'a Lab, host: &Host, vrrp: &Vrrp) -> Director<'a> {
    failover6::lbd6(lab, host, vrrp, None)
}

/// The line of `ip -6 addr show dev eth0` in `ns` for the VIP, if there.
fn vip6_line(lab: &Lab, ns: &str) -> Option<String> {
    let out = netns::ip(&["-n", ns, "-6", "-o", "addr", "show", "dev", HOST_IFACE]).unwrap();
    let vip = format!(" {}/", lab.vip6());
    out.lines().find(|l| l.contains(&vip)).map(str::to_owned)
}

fn has_vip6(lab: &Lab, ns: &str) -> bool {
    vip6_line(lab, ns).is_some()
}

/// curl -6 through the VIP until it answers (new connections, 1 s each,
/// for `timeout`); who answered.
fn curl6(lab: &Lab, timeout: Duration) -> String {
    let url = format!("http://[{}]:80/", lab.vip6());
    let start = Instant::now();
    loop {
        match lab.run(&lab.client().ns, &["curl", "-6sS", "--max-time", "1", &url]) {
            Ok(body) => return body.trim().to_owned(),
            Err(e) if start.elapsed() >= timeout => panic!("no answer through the IPv6 VIP in {timeout:?}: {e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A request through the VIP, forwarded by `d` (its `conn_new` grew).
fn assert_forwards6(lab: &Lab, d: &Director<'_>, what: &str) -> String {
    let before = counter(d, "conn_new");
    let answer = curl6(lab, Duration::from_secs(3));
    assert!(answer == "rs1" || answer == "rs2", "{what}: {answer:?}");
    assert!(counter(d, "conn_new") > before, "{what}: conn_new did not grow\n{}", d.log());
    answer
}

/// The VIP as lbd (and keepalived) add it: nodad, deprecated (preferred
/// lifetime 0), so the director's own connections never take it.
fn assert_added_as_keepalived_does(lab: &Lab, ns: &str) {
    let line = vip6_line(lab, ns).expect("the VIP on the master");
    assert!(line.contains("nodad") && line.contains("deprecated"), "{line}");
    assert!(line.contains("preferred_lft 0sec"), "{line}");
}

#[test]
fn vrrp6_failover_between_two_lbd() {
    if !root_or_skip("vrrp6 failover") {
        return;
    }
    let lab = lab6("vrrp6-failover", 93);
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let (high, low) = (Vrrp::v3(INTERVAL_MS, 150), Vrrp::v3(INTERVAL_MS, 100));
    let mut d1 = lbd6(&lab, &h1, &high);
    let mut d2 = lbd6(&lab, &h2, &low);
    d1.start().unwrap();
    wait_state(&d1, "master", Duration::from_secs(5) + 2 * high.master_down());
    d2.start().unwrap();
    wait_backup_of6(&d2, link_local(&h1.ns), "director2 hearing director1 over IPv6", Duration::from_secs(5));
    let (s1, s2) = (vrrp_status(&d1), vrrp_status(&d2));
    assert_eq!((s1["state"].as_str(), s1["version"].as_u64()), (Some("master"), Some(3)), "{s1}");
    assert_eq!(s1["source_address"], link_local(&h1.ns).to_string(), "{s1}");
    assert_eq!(s2["source_address"], link_local(&h2.ns).to_string(), "{s2}");
    assert_eq!(s1["transitions"], 2, "INIT -> BACKUP -> MASTER only: {s1}");
    assert!(has_vip6(&lab, &h1.ns) && !has_vip6(&lab, &h2.ns), "the VIP on director1 only");
    assert_added_as_keepalived_does(&lab, &h1.ns);

    // The master forwards; the backup nothing.
    assert_forwards6(&lab, &d1, "director1 forwards");
    assert_eq!(counter(&d2, "conn_new"), 0, "the backup forwarded nothing");
    wait_client_moved_to6(&lab, &h1, Duration::from_secs(1));
    assert_eq!(vrrp_status(&d2)["bad_adverts"], 0);

    // The backup's datapath stands by for the IPv6 VIP: a packet sent to
    // it anyway (a neighbour entry still pointing there) passes to its
    // kernel instead of being forwarded.
    let (client, vip) = (lab.client().ns.clone(), lab.vip6().to_string());
    let neigh = |args: &[&str]| netns::ip(&[&["-n", &client, "-6", "neigh"], args, &["dev", HOST_IFACE]].concat());
    neigh(&["replace", &vip, "lladdr", &h2.mac.to_string(), "nud", "permanent"]).unwrap();
    let url = format!("http://[{vip}]:80/");
    let _ = lab.run(&client, &["curl", "-6sS", "--max-time", "1", &url]);
    neigh(&["del", &vip]).unwrap();
    assert!(counter(&d2, "pass_standby") > 0, "the backup stood by\n{}", d2.log());
    assert_eq!(counter(&d2, "conn_new"), 0, "the backup forwarded nothing");
    assert_forwards6(&lab, &d1, "director1 forwards again");

    // director1 dies: lbd SIGKILLed (no priority-0 advert), its host off
    // the link (its kernel keeps the VIP, as a crash leaves it).
    let killed = crash(&mut d1);
    detach_dead(&d1);
    netns::ip(&["-n", &h1.ns, "link", "set", HOST_IFACE, "down"]).unwrap();
    wait_state(&d2, "master", low.master_down() + TAKEOVER_SLACK);
    let took = killed.elapsed();
    eprintln!(
        "vrrp6: director2 master {:.3} s after the SIGKILL (master-down interval {:.3} s)",
        took.as_secs_f64(),
        low.master_down().as_secs_f64()
    );
    assert!(took <= low.master_down() + TAKEOVER_SLACK, "{took:?}");
    assert_added_as_keepalived_does(&lab, &h2.ns);
    // Unsolicited NAs (override) move the client's entry at once: without
    // them it would point to director1 for a reachable time and more.
    let moved = wait_client_moved_to6(&lab, &h2, Duration::from_secs(2));
    eprintln!("vrrp6: the client's neighbour entry moved {:.3} s after the takeover", moved.as_secs_f64());
    assert_forwards6(&lab, &d2, "director2 forwards after the takeover");

    // A clean stop removes the VIP.
    finish(d2);
    assert!(!has_vip6(&lab, &h2.ns), "a stopped master removes the VIP");
    drop(d1);
    teardown(lab);
}

// ---- keepalived -------------------------------------------------------------

/// keepalived.conf with the same instance (an IPv6 VIP: VRRPv3 over IPv6;
/// `vrrp_version` left at its default 2, which keepalived overrides).
fn keepalived6_conf(lab: &Lab, host: &Host, vrrp: &Vrrp) -> String {
    format!(
        "global_defs {{\n    router_id lbt_{}\n}}\n\nvrrp_instance VI_6 {{\n    state BACKUP\n    interface {HOST_IFACE}\n    \
         virtual_router_id {VRID6}\n    priority {}\n    advert_int {}\n    garp_master_repeat 3\n    \
         virtual_ipaddress {{\n        {}/128\n    }}\n}}\n",
        host.name,
        vrrp.priority,
        vrrp.interval.as_secs_f64(),
        lab.vip6()
    )
}

fn wait_keepalived(lab: &Lab, ka: &Keepalived, master: bool, timeout: Duration) -> Duration {
    let state = if master { "Entering MASTER STATE" } else { "Entering BACKUP STATE" };
    wait_for(&format!("keepalived {state}"), timeout, || {
        (has_vip6(lab, ka.ns()) == master && ka.count(state) >= 1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}; keepalived's log:\n{}", ka.log()))
    .1
}

/// Lines of keepalived's log that complain about what it received.
fn keepalived_complaints(ka: &Keepalived) -> Vec<String> {
    ka.log()
        .lines()
        .filter(|l| {
            let l = l.to_lowercase();
            ["invalid", "mismatch", "not present", "bad ", "error", "wrong"].iter().any(|w| l.contains(w))
        })
        .map(str::to_owned)
        .collect()
}

fn interop6(name: &str, k: u8, keepalived_master: bool) {
    let lab = lab6(name, k);
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let (high, low) = (Vrrp::v3(INTERVAL_MS, 150), Vrrp::v3(INTERVAL_MS, 100));
    // director1 has the higher priority, whichever runs there.
    let (ka_host, lbd_host) = if keepalived_master { (&h1, &h2) } else { (&h2, &h1) };
    let (ka_vrrp, lbd_vrrp) = if keepalived_master { (high, low) } else { (low, high) };
    let mut ka = Keepalived::new(&ka_host.ns, lab.log_dir(), &ka_host.name);
    let mut lbd = lbd6(&lab, lbd_host, &lbd_vrrp);

    if keepalived_master {
        ka.start(&keepalived6_conf(&lab, ka_host, &ka_vrrp));
        wait_keepalived(&lab, &ka, true, Duration::from_secs(5) + 2 * ka_vrrp.master_down());
        lbd.start().unwrap();
        wait_backup_of6(
            &lbd,
            link_local(&ka_host.ns),
            "lbd hearing keepalived's IPv6 adverts",
            Duration::from_secs(5) + 2 * lbd_vrrp.master_down(),
        );
        std::thread::sleep(2 * lbd_vrrp.master_down());
        assert_eq!(lbd.vrrp_state().unwrap(), "backup", "the higher priority (keepalived) stays master");
        assert_eq!(ka.count("Entering MASTER STATE"), 1, "{}", ka.log());
        assert!(has_vip6(&lab, &ka_host.ns) && !has_vip6(&lab, &lbd_host.ns));
        // keepalived adds it as lbd does.
        assert_added_as_keepalived_does(&lab, &ka_host.ns);
    } else {
        lbd.start().unwrap();
        wait_state(&lbd, "master", Duration::from_secs(5) + 2 * lbd_vrrp.master_down());
        ka.start(&keepalived6_conf(&lab, ka_host, &ka_vrrp));
        wait_keepalived(&lab, &ka, false, Duration::from_secs(5));
        std::thread::sleep(2 * ka_vrrp.master_down());
        assert_eq!(ka.count("Entering MASTER STATE"), 0, "keepalived must stay backup:\n{}", ka.log());
        assert_eq!(lbd.vrrp_state().unwrap(), "master");
        assert_eq!(vrrp_status(&lbd)["transitions"], 2);
        assert_forwards6(&lab, &lbd, "lbd (master) forwards");
    }
    let s = vrrp_status(&lbd);
    assert_eq!(s["bad_adverts"], 0, "lbd refused keepalived's adverts: {s}");
    assert!(!keepalived_master || s["adverts_received"].as_u64().unwrap() > 0, "{s}");
    let complaints = keepalived_complaints(&ka);
    assert!(complaints.is_empty(), "keepalived complained about lbd's adverts:\n{}", complaints.join("\n"));
    // The client talks to the VIP, so that it has a neighbour entry for
    // the NAs to update (they create none).
    let _ = lab.run(&lab.client().ns, &["curl", "-6s", "--max-time", "1", &format!("http://[{}]/", lab.vip6())]);
    wait_client_moved_to6(&lab, &h1, Duration::from_secs(2));

    // The master crashes; the other takes over and moves the client.
    let killed = Instant::now();
    let took = if keepalived_master {
        ka.kill();
        netns::ip(&["-n", &ka_host.ns, "link", "set", HOST_IFACE, "down"]).unwrap();
        wait_state(&lbd, "master", low.master_down() + TAKEOVER_SLACK);
        let took = killed.elapsed();
        wait_client_moved_to6(&lab, lbd_host, Duration::from_secs(2));
        assert_forwards6(&lab, &lbd, "lbd forwards after taking over from keepalived");
        took
    } else {
        crash(&mut lbd);
        detach_dead(&lbd);
        netns::ip(&["-n", &lbd_host.ns, "link", "set", HOST_IFACE, "down"]).unwrap();
        wait_keepalived(&lab, &ka, true, low.master_down() + TAKEOVER_SLACK);
        let took = killed.elapsed();
        wait_client_moved_to6(&lab, ka_host, Duration::from_secs(2));
        took
    };
    eprintln!(
        "{name}: {} master {:.3} s after the crash (master-down interval {:.3} s)",
        if keepalived_master { "lbd" } else { "keepalived" },
        took.as_secs_f64(),
        low.master_down().as_secs_f64()
    );
    let complaints = keepalived_complaints(&ka);
    assert!(complaints.is_empty(), "keepalived complained:\n{}", complaints.join("\n"));
    ka.stop();
    if keepalived_master {
        finish(lbd);
    } else {
        drop(lbd);
    }
    teardown(lab);
}

#[test]
fn vrrp6_keepalived_master_lbd_backup() {
    if !root_or_skip("vrrp6 keepalived master") || !keepalived::installed_or_skip("vrrp6 keepalived master") {
        return;
    }
    interop6("vrrp6-ka-master", 94, true);
}

#[test]
fn vrrp6_lbd_master_keepalived_backup() {
    if !root_or_skip("vrrp6 lbd master") || !keepalived::installed_or_skip("vrrp6 lbd master") {
        return;
    }
    interop6("vrrp6-lbd-master", 95, false);
}
