//! Every forwarding method through a second director interface: the
//! client on eth0's segment, the real servers behind eth1 (and a router for
//! the answers DR and TUN send straight to the client). DR, TUN and NAT
//! each carry a random payload to a real server and back, compared byte
//! for byte, and their frames leave the director by eth1 (a redirect
//! through the device map, not XDP_TX).
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root.

use std::net::SocketAddrV4;
use std::path::Path;
use std::time::Duration;

use lb_tests::director::{Director, ServiceSpec, userspace_binary};
use lb_tests::lab::INSIDE_IFACE;
use lb_tests::scenario::{finish, root_or_skip};
use lb_tests::{Lab, LabSpec};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

#[test]
fn dr_tun_and_nat_leave_by_the_real_servers_interface() {
    if !root_or_skip("second_nic") {
        return;
    }
    let lab = Lab::build(LabSpec::new("second_nic").reals(2).subnet_index(67).remote_reals().nat_reals()).unwrap();
    let lbd = userspace_binary("lbd").unwrap();
    let director_ip = lab.director().ip.to_string();
    for real in lab.reals() {
        let args = [lbd.to_str().unwrap(), "decap", "--interface", "eth0", "--from", &director_ip];
        lab.spawn(&real.ns, "decap", &args).unwrap();
    }
    // DR on VIP:80, TUN on VIP:81 (the servers answer on the VIP's port),
    // NAT on VIP:82 to the servers' 8080.
    for port in [80, 81, 8080] {
        lab.start_http_servers_on(Path::new(LAB_SERVER), port).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let vip = |port| SocketAddrV4::new(lab.vip(), port);
    let mut nat = ServiceSpec::tcp(vip(82), "rr").forwarding("nat");
    let (mut dr, mut tun) = (ServiceSpec::tcp(vip(80), "rr"), ServiceSpec::tcp(vip(81), "rr").forwarding("tun"));
    for real in lab.reals() {
        dr = dr.real(real.ip, 1);
        tun = tun.real(real.ip, 1);
        nat = nat.real(real.ip, 1).real_with(real.ip, "port = 8080");
    }
    let mut director = Director::new(&lab).unwrap();
    director.director_setting(&format!("interfaces = [\"{INSIDE_IFACE}\"]"));
    director.write_config(&[dr, tun, nat]).unwrap();
    director.start().unwrap();

    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2_246_822_519) >> 11) as u8).collect();
    let sent = lab.log_dir().join("payload");
    std::fs::write(&sent, &payload).unwrap();
    let inside_before = lab.link_stats(&lab.director().ns, INSIDE_IFACE).unwrap();
    for (method, port, counter) in [("dr", 80, "tx_dr"), ("tun", 81, "tx_tun"), ("nat", 82, "tx_nat")] {
        let before = director.counters().unwrap()[counter];
        let received = lab.log_dir().join(format!("received-{method}"));
        let url = format!("http://{}/echo", vip(port));
        let out = lab.run(
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
                &url,
            ],
        );
        assert!(out.is_ok(), "{method}: {out:?}\nlbd log:\n{}", director.log());
        assert!(std::fs::read(&received).unwrap() == payload, "{method}: the echoed payload differs");
        let after = director.counters().unwrap()[counter];
        assert!(after > before, "{method}: {counter} {before} -> {after}");
    }
    let inside_after = lab.link_stats(&lab.director().ns, INSIDE_IFACE).unwrap();
    assert!(
        inside_after.tx_packets >= inside_before.tx_packets + 3 * 600,
        "the payloads left by {INSIDE_IFACE}: {inside_before:?} -> {inside_after:?}"
    );
    finish(director);
}
