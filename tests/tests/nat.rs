//! LVS-NAT end to end: real servers on a private segment behind the
//! director (their default gateway), HTTP on port 8080 behind VIP:80. The
//! director's XDP program rewrites the client's packets to RIP:8080 and
//! redirects them out of its inside interface, and rewrites the replies
//! back to VIP:80 and sends them to the client: neither direction goes
//! through the director's IP stack.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root.

use std::path::Path;

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::lab::INSIDE_IFACE;
use lb_tests::scenario::{counts, curl_vip, finish, root_or_skip, tally, vip_url};
use lb_tests::{Lab, LabSpec};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const REAL_PORT: u16 = 8080;

fn nat_lab(name: &str, k: u8) -> Lab {
    let lab = Lab::build(LabSpec::new(name).reals(2).subnet_index(k).nat_reals()).unwrap();
    lab.start_http_servers_on(Path::new(LAB_SERVER), REAL_PORT).unwrap();
    lab
}

fn nat_service(lab: &Lab, scheduler: &str) -> ServiceSpec {
    let mut service = ServiceSpec::lab_http(lab, scheduler).forwarding("nat");
    for real in lab.reals() {
        service = service.real_with(real.ip, &format!("port = {REAL_PORT}"));
    }
    service
}

#[test]
fn nat_maps_the_vip_port_to_private_real_servers_and_their_replies_back() {
    if !root_or_skip("nat") {
        return;
    }
    let lab = nat_lab("nat", 63);
    let mut service = nat_service(&lab, "wrr");
    service.set_weight(lab.real(0).ip, 3);
    let mut director = Director::new(&lab).unwrap();
    director.director_setting(&format!("interfaces = [\"{INSIDE_IFACE}\"]"));
    director.write_config(&[service]).unwrap();
    director.start().unwrap();

    // wrr 3:1, each curl a new connection through the VIP.
    let answers = curl_vip(&lab, 16);
    assert_eq!(tally(&answers), counts(&[("rs1", 12), ("rs2", 4)]), "lbd log:\n{}", director.log());

    // ipvsadm's view: the mapped port, Masq.
    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    for real in lab.reals() {
        let line = format!("  -> {}:{REAL_PORT}", real.ip);
        let row = listing.lines().find(|l| l.starts_with(&line)).unwrap_or_else(|| panic!("{listing}"));
        assert!(row.contains("Masq"), "{row}");
    }

    // Keep-alive: two requests on one connection reach one server.
    let url = vip_url(&lab, "/whoami");
    let both = lab.run(&lab.client().ns, &["curl", "-sS", "--max-time", "5", &url, &url]).unwrap();
    let servers: Vec<&str> = both.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(servers.len(), 2, "{both}");
    assert_eq!(servers[0], servers[1], "{both}");
    // The server sees the client's own address (NAT keeps it) on its port.
    let first = both.lines().next().unwrap();
    assert!(first.contains(&format!(" {}:", lab.client().ip)), "{first}");
    assert!(first.ends_with(&format!(":{REAL_PORT}")), "{first}");

    // A large transfer both ways, byte for byte: checksums rewritten right
    // on every segment (a wrong one is dropped by the receiving stack and
    // the transfer stalls).
    let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let sent = lab.log_dir().join("payload");
    let received = lab.log_dir().join("received");
    std::fs::write(&sent, &payload).unwrap();
    let echo = vip_url(&lab, "/echo");
    lab.run(
        &lab.client().ns,
        &[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "--data-binary",
            &format!("@{}", sent.display()),
            "-o",
            &received.display().to_string(),
            &echo,
        ],
    )
    .unwrap();
    assert!(std::fs::read(&received).unwrap() == payload, "the echoed payload differs");

    let counters = director.counters().unwrap();
    assert!(counters["tx_nat"] > 0, "{counters:?}");
    assert!(counters["tx_nat_reply"] > 0, "{counters:?}");
    assert_eq!(counters["tx_dr"], 0, "{counters:?}");

    // The director's own traffic to a real server passes untouched.
    let own = lab.curl_from(&lab.director().ns, &format!("http://{}:{REAL_PORT}/", lab.real(1).ip)).unwrap();
    assert_eq!(own.trim(), "rs2");

    finish(director);
}
