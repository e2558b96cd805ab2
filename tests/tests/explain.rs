//! `lbctl explain` end to end: in one lab, the service's scheduler changed
//! with `lbctl -E` through every scheduler lbd supports; for each, with
//! some connections held open (so the counting schedulers have counts to
//! weigh and the rr/wrr position has moved), explain's prediction for a new
//! client tuple must be the real server that the very connection (curl
//! from that fixed source port) then reaches, and explain of a held
//! connection must report its entry and real server. Then persistence:
//! a client's template, reported by explain, decides its next connection.
//! And UDP (`-u`): the predicted real server is the one whose echo answers
//! a datagram from that client port, and explain then reports the flow's
//! `UDP` entry there.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs
//! root (otherwise the test prints a message and passes).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use lb_common::Scheduler;
use lb_tests::director::{Director, ServiceSpec};
use lb_tests::netns::run_in_netns;
use lb_tests::scenario::{
    finish, lab_with_servers, root_or_skip, start_configured, teardown, vip_url, vip80,
};
use lb_tests::{HeldConnection, Lab, LabSpec};
use serde_json::Value;

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
/// This test's lab subnets.
const SUBNET: u8 = 220;
const SUBNET6: u8 = 221;
/// The lab's UDP echo service (lab-server `--udp`).
const UDP_PORT: u16 = 5353;

const SCHEDULERS: [Scheduler; 13] = [
    Scheduler::Rr,
    Scheduler::Wrr,
    Scheduler::Lc,
    Scheduler::Wlc,
    Scheduler::Sed,
    Scheduler::Nq,
    Scheduler::Sh,
    Scheduler::Dh,
    Scheduler::Mh,
    Scheduler::Lblc,
    Scheduler::Lblcr,
    Scheduler::Fo,
    Scheduler::Ovf,
];

/// `lbctl --json explain -t CLIENT VIP`.
fn explain(director: &Director<'_>, client: SocketAddrV4, vip: SocketAddrV4) -> Value {
    explain_protocol(director, "-t", client, vip)
}

/// `lbctl --json explain -t|-u CLIENT VIP`.
fn explain_protocol(director: &Director<'_>, option: &str, client: SocketAddrV4, vip: SocketAddrV4) -> Value {
    let out = director
        .lbctl(&["--json", "explain", option, &client.to_string(), &vip.to_string()])
        .unwrap_or_else(|e| panic!("lbctl explain {client} {vip}: {e:#}"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("explain's JSON: {e}\n{out}"))
}

fn real_ip(v: &Value) -> Option<Ipv4Addr> {
    v.as_str()
        .map(|s| match s.parse::<SocketAddr>().unwrap().ip() {
            std::net::IpAddr::V4(a) => a,
            other => panic!("an IPv6 real {other}"),
        })
}

/// The lab server's name at `ip`.
fn name_of(lab: &Lab, ip: Ipv4Addr) -> String {
    lab.reals()
        .iter()
        .find(|r| r.ip == ip)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| format!("? {ip}"))
}

/// One GET of the VIP from the client's source port `port`: the name of
/// the real server that answered.
fn curl_from_port(lab: &Lab, port: u16) -> String {
    let args = [
        "curl",
        "-sS",
        "--max-time",
        "5",
        "--local-port",
        &port.to_string(),
        &vip_url(lab, "/"),
    ];
    lab.run(&lab.client().ns, &args)
        .unwrap_or_else(|e| panic!("curl from port {port}: {e:#}"))
        .trim_end()
        .to_owned()
}

/// Explain predicts the next new connection from `port`; that connection
/// must land there. Returns the server's name.
fn predict_and_connect(
    lab: &Lab,
    director: &Director<'_>,
    port: u16,
    what: &str,
) -> (String, Value) {
    let client = SocketAddrV4::new(lab.client().ip, port);
    let e = explain(director, client, vip80(lab));
    let verdict = e["decision"]["verdict"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        verdict == "scheduled" || verdict == "template",
        "{what}: a new tuple is scheduled or follows a template, not {verdict}: {e:#}"
    );
    assert_eq!(e["decision"]["non_syn"], "pass_tcp_not_syn", "{what}: {e:#}");
    let predicted = name_of(
        lab,
        real_ip(&e["decision"]["real"]).unwrap_or_else(|| panic!("{what}: no real: {e:#}")),
    );
    let landed = curl_from_port(lab, port);
    assert_eq!(
        landed, predicted,
        "{what}: explain predicted {predicted}, the connection reached {landed}: {e:#}"
    );
    (landed, e)
}

/// One datagram from the client's UDP `port` to the lab's UDP echo at the
/// VIP: the name of the server that answered (lab-server's answer is
/// "NAME PAYLOAD").
fn datagram_from_port(lab: &Lab, port: u16) -> String {
    let target = SocketAddrV4::new(lab.vip(), UDP_PORT);
    let answer = run_in_netns(&lab.client().ns, move || {
        let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).unwrap();
        socket.connect(target).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        socket.send(b"explain").unwrap();
        let mut buf = [0u8; 2048];
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no echo to port {port}: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .unwrap();
    let (server, echoed) = answer.split_once(' ').unwrap_or_else(|| panic!("bad answer {answer:?}"));
    assert_eq!(echoed, "explain");
    server.to_owned()
}

/// UDP: for fixed client ports, explain's rr pick is the server whose echo
/// answers a datagram from that port; explain then reports the flow's
/// live `UDP` entry on it.
fn check_udp(lab: &Lab, director: &Director<'_>) {
    let vip = SocketAddrV4::new(lab.vip(), UDP_PORT);
    let mut landed_on = Vec::new();
    for port in [23_001u16, 23_002] {
        let client = SocketAddrV4::new(lab.client().ip, port);
        let e = explain_protocol(director, "-u", client, vip);
        assert_eq!(e["decision"]["verdict"], "scheduled", "UDP port {port}: {e:#}");
        assert!(e["decision"]["non_syn"].is_null(), "UDP has no SYN: {e:#}");
        let predicted = name_of(lab, real_ip(&e["decision"]["real"]).unwrap());
        let landed = datagram_from_port(lab, port);
        assert_eq!(landed, predicted, "UDP port {port}: explain predicted {predicted}: {e:#}");
        let e = explain_protocol(director, "-u", client, vip);
        assert_eq!(e["decision"]["verdict"], "connection", "UDP port {port}: {e:#}");
        assert_eq!(e["connection"]["state"], "UDP", "{e:#}");
        assert_eq!(e["connection"]["live"], true, "{e:#}");
        assert_eq!(name_of(lab, real_ip(&e["connection"]["real"]).unwrap()), landed, "{e:#}");
        eprintln!("UDP: port {port} -> {landed} ({})", e["connection"]["state"]);
        landed_on.push(landed);
    }
    // rr moved on after the first flow.
    assert_ne!(landed_on[0], landed_on[1], "{landed_on:?}");
}

/// Explain of a held connection reports its live entry and its server.
fn check_held(lab: &Lab, director: &Director<'_>, held: &HeldConnection, what: &str) {
    let e = explain(director, held.local, vip80(lab));
    assert_eq!(
        e["decision"]["verdict"], "connection",
        "{what}: held {held:?}: {e:#}"
    );
    let conn = &e["connection"];
    assert_eq!(conn["live"], true, "{what}: {e:#}");
    assert!(e["decision"]["non_syn"].is_null(), "{what}: a live entry takes any packet: {e:#}");
    assert_eq!(conn["state"], "ESTABLISHED", "{what}: {e:#}");
    assert!(conn["expires_in"].as_u64().unwrap() > 0, "{what}: {e:#}");
    assert_eq!(
        name_of(lab, real_ip(&conn["real"]).unwrap()),
        held.server,
        "{what}: {e:#}"
    );
}

#[test]
fn explain_predicts_every_scheduler_and_reports_entries() {
    if !root_or_skip("explain") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "explain", SUBNET, 3);
    lab.start_udp_servers_with(LAB_SERVER.as_ref(), UDP_PORT).unwrap();
    // And a firewall-mark service matching the VIP's port 8080 (explained
    // only: nothing listens there).
    let mut director = Director::new(&lab).unwrap();
    let (vip_ip, rs1) = (lab.vip(), lab.real(0).ip);
    director.add_section(&format!(
        "[[service]]\nfwmark = 1\nmatch = [{{ vip = \"{vip_ip}\", ports = [8080] }}]\nscheduler = \"wlc\"\n\n\
         [[service.real]]\naddress = \"{rs1}\"\nweight = 1\n"
    ));
    let director =
        start_configured(director, &[ServiceSpec::lab_http(&lab, "rr"), ServiceSpec::lab_udp(&lab, UDP_PORT, "rr")]);
    check_udp(&lab, &director);
    let vip = vip80(&lab).to_string();
    // Weights 3, 2, 1 (config order), so weighted rules differ from plain ones.
    for (real, w) in lab.reals().iter().zip([3, 2, 1]) {
        director
            .lbctl(&[
                "-e",
                "-t",
                &vip,
                "-r",
                &real.ip.to_string(),
                "-w",
                &w.to_string(),
            ])
            .unwrap();
    }
    // Fixed client ports below the kernel's ephemeral range (32768-60999),
    // so that no held connection has one already.
    let mut port = 20_000u16;
    for sched in SCHEDULERS {
        let name = sched.name();
        director.lbctl(&["-E", "-t", &vip, "-s", name]).unwrap();
        let held: Vec<HeldConnection> = (0..3)
            .map(|_| {
                lab.hold_http_connection(&lab.client().ns, vip80(&lab))
                    .unwrap()
            })
            .collect();
        for (i, h) in held.iter().enumerate() {
            check_held(&lab, &director, h, &format!("{name}, held connection {i}"));
        }
        for k in 0..3 {
            port += 1;
            let (landed, e) = predict_and_connect(
                &lab,
                &director,
                port,
                &format!("{name}, new connection {k}"),
            );
            assert_eq!(e["service"]["scheduler"], name, "{e:#}");
            eprintln!(
                "{name}: port {port} -> {landed} ({})",
                e["decision"]["why"][0]
            );
        }
        if sched == Scheduler::Wlc {
            let client = format!("{}:{}", lab.client().ip, port + 1);
            eprintln!(
                "{}",
                director.lbctl(&["explain", "-t", &client, &vip]).unwrap()
            );
        }
        drop(held);
    }

    // Persistence: the first connection makes the client's template; explain
    // then reports it, and the next connection follows it.
    director
        .lbctl(&["-E", "-t", &vip, "-s", "rr", "-p", "60"])
        .unwrap();
    port += 1;
    let (first, _) = predict_and_connect(&lab, &director, port, "persistent, first");
    for k in 0..3 {
        port += 1;
        let (landed, e) = predict_and_connect(
            &lab,
            &director,
            port,
            &format!("persistent, connection {k}"),
        );
        assert_eq!(e["decision"]["verdict"], "template", "{e:#}");
        assert_eq!(e["template"]["live"], true, "{e:#}");
        assert_eq!(
            name_of(&lab, real_ip(&e["template"]["real"]).unwrap()),
            first,
            "{e:#}"
        );
        assert_eq!(landed, first);
    }

    // The mark's match takes VIP:8080, which has no service of its own.
    let e = explain(
        &director,
        SocketAddrV4::new(lab.client().ip, 29_998),
        SocketAddrV4::new(vip_ip, 8080),
    );
    assert_eq!(e["service"]["name"], "fwmark 1", "{e:#}");
    assert!(
        e["service"]["matched_by"]
            .as_str()
            .unwrap()
            .contains("firewall-mark"),
        "{e:#}"
    );
    assert_eq!(e["decision"]["verdict"], "scheduled", "{e:#}");
    assert_eq!(real_ip(&e["decision"]["real"]), Some(rs1), "{e:#}");

    // Not a service: the host's stack gets it.
    let other = SocketAddrV4::new(lab.vip(), 81);
    let e = explain(&director, SocketAddrV4::new(lab.client().ip, 29_999), other);
    assert_eq!(e["decision"]["verdict"], "no_service", "{e:#}");
    // The human format names the parts.
    let text = director
        .lbctl(&["explain", "-t", &format!("{}:30000", lab.client().ip), &vip])
        .unwrap();
    eprintln!("{text}");
    assert!(
        text.contains("Service:  tcp ") && text.contains("Decision: persistence template"),
        "{text}"
    );
    // No entry for that tuple: a packet that is not a SYN would go to the host.
    assert!(text.contains("Not SYN:  the pick is for a SYN") && text.contains("pass_tcp_not_syn"), "{text}");

    finish(director);
    teardown(lab);
}

/// IPv6, in ipvsadm's bracket syntax: explain's wrr picks for new client
/// ports are where those connections land.
#[test]
fn explain_predicts_ipv6_flows() {
    if !root_or_skip("explain_ipv6") {
        return;
    }
    let lab = Lab::build(
        LabSpec::new("explain6")
            .reals(2)
            .subnet_index(SUBNET6)
            .ipv6(),
    )
    .unwrap();
    let _servers = lab.start_http_servers_with(LAB_SERVER.as_ref()).unwrap();
    let vip = SocketAddr::new(IpAddr::V6(lab.vip6()), 80);
    let mut director = Director::new(&lab).unwrap();
    let mut config = director.director_toml();
    config.push_str(&format!(
        "\n[[service]]\nvip = \"{vip}\"\nprotocol = \"tcp\"\nscheduler = \"wrr\"\nforwarding = \"dr\"\n"
    ));
    for (real, weight) in lab.reals().iter().zip([2, 1]) {
        config.push_str(&format!(
            "\n[[service.real]]\naddress = \"{}\"\nweight = {weight}\n",
            real.ip6()
        ));
    }
    director.write_config_text(&config).unwrap();
    director
        .start()
        .unwrap_or_else(|e| panic!("{e:#}\nconfig:\n{config}"));
    let mut landed_on = Vec::new();
    for port in 21_001u16..21_007 {
        let client = SocketAddr::new(IpAddr::V6(lab.client().ip6()), port);
        let out = director
            .lbctl(&[
                "--json",
                "explain",
                "-t",
                &client.to_string(),
                &vip.to_string(),
            ])
            .unwrap();
        let e: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(e["decision"]["verdict"], "scheduled", "{e:#}");
        let predicted: SocketAddr = e["decision"]["real"].as_str().unwrap().parse().unwrap();
        let name = lab
            .reals()
            .iter()
            .find(|r| IpAddr::V6(r.ip6()) == predicted.ip())
            .map(|r| r.name.clone())
            .unwrap_or_else(|| panic!("no real at {predicted}: {e:#}"));
        let url = format!("http://{vip}/");
        let args = [
            "curl",
            "-6sS",
            "--max-time",
            "5",
            "--local-port",
            &port.to_string(),
            &url,
        ];
        let landed = lab
            .run(&lab.client().ns, &args)
            .unwrap()
            .trim_end()
            .to_owned();
        assert_eq!(landed, name, "port {port}: explain predicted {name}: {e:#}");
        landed_on.push(landed);
    }
    // wrr 2:1 over 6 connections: both servers, twice as often the first.
    assert_eq!(
        landed_on
            .iter()
            .filter(|n| **n == lab.reals()[0].name)
            .count(),
        4,
        "{landed_on:?}"
    );
    finish(director);
    teardown(lab);
}
