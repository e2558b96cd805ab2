//! A TUN real server whose route vanishes from the director (issue 12):
//! its connections keep the last path lbd knew (next hop and path MTU)
//! rather than being answered with "fragmentation needed, MTU 0" on every
//! packet; lbd says so in its log and counts it (`tun_no_route` in
//! `lbctl --counters`). New connections are scheduled there as before, as
//! IPVS does (its schedulers know nothing of routes; a health check
//! decides whether the server is gone). When the route comes back, so
//! does the path the kernel gives.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs
//! root (otherwise the test prints a message and passes).

use std::time::Duration;

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::lab::PREFIX_LEN;
use lb_tests::scenario::{curl_vip, finish, root_or_skip, tun_lab, vip80};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
/// lbd reads the routes again every 10 s.
const REFRESH: Duration = Duration::from_secs(15);

#[test]
fn a_tun_server_whose_route_vanishes_keeps_its_connections() {
    if !root_or_skip("a_tun_server_whose_route_vanishes_keeps_its_connections") {
        return;
    }
    let k = 62;
    let lab = tun_lab(LAB_SERVER, "tun_route", k);
    let service = ServiceSpec::lab_http(&lab, "rr").forwarding("tun");
    let mut director = Director::new(&lab).unwrap();
    director.write_config(&[service]).unwrap();
    director.start().unwrap();
    let mut held = lab
        .hold_http_connection(&lab.client().ns, vip80(&lab))
        .unwrap();
    held.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();

    // The director's route toward the real servers' subnet goes.
    let remote = format!("10.{k}.1.0/{PREFIX_LEN}");
    let router = lab.router().unwrap().ip.to_string();
    let ns = lab.director().ns.clone();
    lab.run(&ns, &["ip", "route", "del", &remote]).unwrap();
    // Past lbd's next look at the routes.
    let logged = director.wait_for_log("no usable route", 2, REFRESH);

    // The open connection goes on, on its server, through the last path.
    let body = held.ask("/whoami").unwrap_or_else(|e| {
        panic!(
            "the held connection broke: {e:#}\ncounters: {:?}\n{}",
            director.counters(),
            director.log()
        )
    });
    assert!(body.starts_with(&held.server), "{body}");
    let log = logged.unwrap();
    let line = log.lines().find(|l| l.contains("no usable route")).unwrap();
    assert!(line.contains(&format!("through {router}")), "{line}");
    let counters = director.counters().unwrap();
    assert!(counters["tun_no_route"] >= 2, "{counters:?}");
    let frag_needed = counters["tx_icmp_frag_needed"];
    // New connections still go to both servers.
    let mut answers = curl_vip(&lab, 4);
    answers.sort();
    assert_eq!(answers, ["rs1", "rs1", "rs2", "rs2"]);
    let counters = director.counters().unwrap();
    assert_eq!(
        counters["tx_icmp_frag_needed"], frag_needed,
        "no fragmentation-needed for a lost route: {counters:?}"
    );

    // The route comes back: lbd says so, and goes on with the kernel's path.
    lab.run(&ns, &["ip", "route", "add", &remote, "via", &router])
        .unwrap();
    director.wait_for_log("routed again", 2, REFRESH).unwrap();
    let body = held.ask("/whoami").unwrap();
    assert!(body.starts_with(&held.server), "{body}");
    eprintln!(
        "{}",
        director
            .log()
            .lines()
            .filter(|l| l.contains("route") || l.contains("reached"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    held.close();
    finish(director);
}
