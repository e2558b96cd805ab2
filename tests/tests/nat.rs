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
use lb_tests::scenario::{UdpFlow, counts, curl_vip, finish, root_or_skip, tally, vip_url};
use lb_tests::{Lab, LabSpec, ProcHandle};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const REAL_PORT: u16 = 8080;

/// The lab and its HTTP servers (on [`REAL_PORT`]).
fn nat_lab(name: &str, k: u8) -> (Lab, Vec<ProcHandle>) {
    let lab = Lab::build(LabSpec::new(name).reals(2).subnet_index(k).nat_reals()).unwrap();
    let servers = lab.start_http_servers_on(Path::new(LAB_SERVER), REAL_PORT).unwrap();
    (lab, servers)
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
    let (lab, _servers) = nat_lab("nat", 63);
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

#[test]
fn nat_carries_udp_translates_the_servers_icmp_errors_and_follows_health_checks() {
    if !root_or_skip("nat") {
        return;
    }
    const ECHO_PORT: u16 = 5300;
    let (lab, servers) = nat_lab("nat_udp", 64);
    lab.start_udp_servers_with(Path::new(LAB_SERVER), ECHO_PORT).unwrap();
    let mut echo = ServiceSpec::lab_udp(&lab, 53, "rr").forwarding("nat");
    // Nobody listens on 5999: the real servers answer "port unreachable".
    let mut closed = ServiceSpec::lab_udp(&lab, 54, "rr").forwarding("nat");
    for real in lab.reals() {
        echo = echo.real_with(real.ip, &format!("port = {ECHO_PORT}"));
        closed = closed.real_with(real.ip, "port = 5999");
    }
    // The HTTP service checked on the servers' own port, every 100 ms.
    let mut http = nat_service(&lab, "rr");
    for line in ["kind = \"tcp\"", "interval = \"100ms\"", "connect_timeout = \"300ms\"", "retry = 1", "rise = 2"] {
        http = http.check(line);
    }
    let mut director = Director::new(&lab).unwrap();
    director.director_setting(&format!("interfaces = [\"{INSIDE_IFACE}\"]"));
    director.write_config(&[http, echo, closed]).unwrap();
    director.start().unwrap();

    // UDP: each flow (source port) on one server, rr across flows, the
    // echo from the VIP (the client's socket is connected to it).
    let mut flows: Vec<UdpFlow> = (0..4).map(|_| UdpFlow::open(&lab, 53)).collect();
    let first: Vec<String> = flows.iter_mut().map(UdpFlow::exchange).collect();
    assert_eq!(tally(&first), counts(&[("rs1", 2), ("rs2", 2)]), "lbd log:\n{}", director.log());
    let again: Vec<String> = flows.iter_mut().map(UdpFlow::exchange).collect();
    assert_eq!(first, again, "a flow stays on its server");

    // The server's "port unreachable" reaches the client from the VIP,
    // quoting the client's own datagram: its socket sees the refusal.
    let vip54 = std::net::SocketAddr::V4(std::net::SocketAddrV4::new(lab.vip(), 54));
    let refused = lab.udp_request(&lab.client().ns, vip54, b"anyone?", std::time::Duration::from_secs(2));
    let error = format!("{:#}", refused.expect_err("no answer expected"));
    assert!(error.contains("refused"), "the client's socket: {error}");
    let counters = director.counters().unwrap();
    assert!(counters["tx_nat_icmp_to_client"] > 0, "{counters:?}");

    // A server whose port closes leaves its service; the other takes all.
    let up = curl_vip(&lab, 4);
    assert_eq!(tally(&up), counts(&[("rs1", 2), ("rs2", 2)]));
    lab.stop(&servers[1]).unwrap();
    let listing = lb_tests::scenario::wait_until("rs2 out of its service", std::time::Duration::from_secs(10), || {
        let listing = director.lbctl(&["-L", "-n"]).unwrap();
        (!listing.contains(&format!("{}:{REAL_PORT}", lab.real(1).ip)), listing)
    });
    assert!(listing.contains(&format!("{}:{REAL_PORT}", lab.real(0).ip)), "{listing}");
    let after = curl_vip(&lab, 4);
    assert_eq!(tally(&after), counts(&[("rs1", 4)]));

    finish(director);
}

#[test]
fn nat_keeps_a_persistent_client_on_its_server() {
    if !root_or_skip("nat") {
        return;
    }
    let (lab, _servers) = nat_lab("nat_persist", 69);
    let service = nat_service(&lab, "rr").with("persistence_timeout = 300");
    let mut director = Director::new(&lab).unwrap();
    director.director_setting(&format!("interfaces = [\"{INSIDE_IFACE}\"]"));
    director.write_config(&[service]).unwrap();
    director.start().unwrap();
    // rr would alternate; the template keeps every new connection of the
    // client on the first server.
    let answers = curl_vip(&lab, 6);
    assert_eq!(tally(&answers).len(), 1, "{answers:?}\nlbd log:\n{}", director.log());
    finish(director);
}
