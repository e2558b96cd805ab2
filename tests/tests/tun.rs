//! LVS-TUN end to end: real servers on another subnet behind a router, the
//! director wrapping packets in IP-in-IP toward them, and `lbd decap` on the
//! real servers (this kernel has no ipip module) unwrapping them.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root.

use std::path::Path;
use std::time::Duration;

use lb_tests::director::{Director, ServiceSpec, userspace_binary};
use lb_tests::scenario::{curl_vip, finish, root_or_skip, vip_url};
use lb_tests::{Lab, LabSpec};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// A lab with its real servers behind a router, each running the decap
/// program (tunnels from the director only, for the VIP on lo) and an
/// HTTP server.
fn tun_lab(name: &str, k: u8) -> Lab {
    let lab = Lab::build(LabSpec::new(name).reals(2).subnet_index(k).remote_reals()).unwrap();
    let lbd = userspace_binary("lbd").unwrap();
    let director = lab.director().ip.to_string();
    for real in lab.reals() {
        let lbd = lbd.to_str().unwrap();
        lab.spawn(&real.ns, "decap", &[lbd, "decap", "--interface", "eth0", "--from", &director]).unwrap();
    }
    lab.start_http_servers_with(Path::new(LAB_SERVER)).unwrap();
    // The decap programs are attached once they log their addresses.
    std::thread::sleep(Duration::from_millis(500));
    lab
}

#[test]
fn tun_service_reaches_real_servers_on_another_subnet() {
    if !root_or_skip("tun") {
        return;
    }
    let lab = tun_lab("tun", 61);
    let service = ServiceSpec::lab_http(&lab, "rr").forwarding("tun");
    let mut director = Director::new(&lab).unwrap();
    director.write_config(&[service]).unwrap();
    director.start().unwrap();

    let answers = curl_vip(&lab, 16);
    let rs1 = answers.iter().filter(|a| *a == "rs1").count();
    let rs2 = answers.iter().filter(|a| *a == "rs2").count();
    assert_eq!((rs1, rs2), (8, 8), "answers: {answers:?}\nlbd log:\n{}", director.log());

    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    for real in lab.reals() {
        let line = format!("  -> {}:80", real.ip);
        let row = listing.lines().find(|l| l.starts_with(&line)).unwrap_or_else(|| panic!("{listing}"));
        assert!(row.contains("Tunnel"), "{row}");
    }
    let counters = director.counters().unwrap();
    assert!(counters["tx_tun"] > 0, "{counters:?}");
    assert_eq!(counters["tx_dr"], 0);

    // A request larger than the tunnel's path MTU: full-size segments
    // (1500 bytes, DF) get "fragmentation needed" with MTU 1480 back, the
    // client lowers its path MTU and the upload goes through.
    let body = "x".repeat(200_000);
    let body_file = lab.log_dir().join("body");
    std::fs::write(&body_file, &body).unwrap();
    let url = vip_url(&lab, "/");
    let out = lab
        .run(
            &lab.client().ns,
            &["curl", "-s", "-m", "10", "--data-binary", &format!("@{}", body_file.display()), &url],
        )
        .unwrap();
    assert!(out.trim() == "rs1" || out.trim() == "rs2", "upload answer: {out:?}");
    let counters = director.counters().unwrap();
    assert!(counters["tx_icmp_frag_needed"] > 0, "{counters:?}");
    let route = lab.run(&lab.client().ns, &["ip", "route", "get", &lab.vip().to_string()]).unwrap();
    assert!(route.contains("mtu 1480"), "the client learned the tunnel's MTU: {route}");

    finish(director);
}
