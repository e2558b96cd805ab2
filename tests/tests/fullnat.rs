//! Full NAT: the client's address is rewritten too, to one of the
//! director's `fullnat_source` addresses and a port from its pool, so the
//! real servers need no route back to the clients (here they have none).
//! Replies are found by the rewritten tuple and go back to the client from
//! the VIP; a connection's port returns to the pool when it is gone.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::lab::INSIDE_IFACE;
use lb_tests::scenario::{UdpFlow, counts, curl_vip, finish, root_or_skip, tally, wait_until};
use lb_tests::{Lab, LabSpec};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const REAL_PORT: u16 = 8080;
const ECHO_PORT: u16 = 5300;

/// How many full-NAT connections hold a local port now (entries of the
/// pinned `FULLNAT_LOCAL`).
fn ports_held(director: &Director<'_>) -> usize {
    let find = std::process::Command::new("find")
        .args([director.pin_path.to_str().unwrap(), "-name", "FULLNAT_LOCAL"])
        .output()
        .unwrap();
    let path = String::from_utf8(find.stdout).unwrap();
    let path = path.lines().next().expect("FULLNAT_LOCAL pinned");
    let dump = std::process::Command::new("bpftool").args(["-j", "map", "dump", "pinned", path]).output().unwrap();
    let entries: serde_json::Value = serde_json::from_slice(&dump.stdout).unwrap();
    entries.as_array().map_or(0, Vec::len)
}

#[test]
fn real_servers_without_a_route_back_serve_through_full_nat_and_ports_come_back() {
    if !root_or_skip("fullnat") {
        return;
    }
    let lab = Lab::build(LabSpec::new("fullnat").reals(2).subnet_index(68).isolated_reals()).unwrap();
    lab.start_http_servers_on(Path::new(LAB_SERVER), REAL_PORT).unwrap();
    lab.start_udp_servers_with(Path::new(LAB_SERVER), ECHO_PORT).unwrap();
    // A local address of the director's for the clients' side, its own.
    let local = Ipv4Addr::new(10, 68, 1, 9);
    lab.run(&lab.director().ns, &["ip", "addr", "add", &format!("{local}/32"), "dev", INSIDE_IFACE]).unwrap();
    let route = lab.run(&lab.real(0).ns, &["ip", "route", "get", &lab.client().ip.to_string()]);
    assert!(route.is_err(), "the real servers must have no route to the client: {route:?}");

    let mut http = ServiceSpec::lab_http(&lab, "rr").forwarding("fullnat");
    let mut echo = ServiceSpec::lab_udp(&lab, 53, "rr").forwarding("fullnat");
    for real in lab.reals() {
        http = http.real_with(real.ip, &format!("port = {REAL_PORT}"));
        echo = echo.real_with(real.ip, &format!("port = {ECHO_PORT}"));
    }
    let mut director = Director::new(&lab).unwrap();
    director.director_setting(&format!("interfaces = [\"{INSIDE_IFACE}\"]"));
    director.director_setting(&format!("fullnat_source = [\"{local}\"]"));
    director.director_setting("timeout_udp = 2");
    director.write_config(&[http, echo]).unwrap();
    director.start().unwrap();

    let answers = curl_vip(&lab, 8);
    assert_eq!(tally(&answers), counts(&[("rs1", 4), ("rs2", 4)]), "lbd log:\n{}", director.log());
    // The server sees the director's local address, not the client's.
    let whoami = lab.curl(&format!("http://{}:80/whoami", lab.vip())).unwrap();
    assert!(whoami.contains(&format!(" {local}:")), "{whoami}");
    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    assert!(listing.contains("FullNat"), "{listing}");

    // Short UDP connections, each its own flow and so its own local port.
    let flows = 10_000;
    for i in 0..flows {
        let mut flow = UdpFlow::open(&lab, 53);
        let server = flow.exchange();
        assert!(server == "rs1" || server == "rs2", "flow {i}: {server}");
    }
    // (The first flows may have expired and given theirs back already.)
    let held = ports_held(&director);
    assert!(held >= 1000, "{held} ports held right after {flows} flows");
    let counters = director.counters().unwrap();
    assert_eq!(counters["drop_fullnat_no_port"], 0, "{counters:?}");
    assert!(counters["tx_fullnat_reply"] >= flows as u64, "{counters:?}");

    // They expire (2 s) and the sweep gives every port back (the TCP
    // connections' too, once theirs expire: TIME_WAIT is IPVS's 120 s).
    let held = wait_until("the UDP flows' ports back in the pool", Duration::from_secs(30), || {
        let held = ports_held(&director);
        (held <= 9, held)
    });
    assert!(held <= 9, "{held}");
    finish(director);
}
