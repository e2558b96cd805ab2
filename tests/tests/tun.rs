//! LVS-TUN end to end: real servers on another subnet behind a router, the
//! director wrapping packets in IP-in-IP toward them, and `lbd decap` on the
//! real servers (this kernel has no ipip module) unwrapping them.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root.

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::scenario::{curl_vip, finish, root_or_skip, tun_lab, vip_url};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

#[test]
fn tun_service_reaches_real_servers_on_another_subnet() {
    if !root_or_skip("tun") {
        return;
    }
    let lab = tun_lab(LAB_SERVER, "tun", 61);
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
