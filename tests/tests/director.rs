//! End-to-end tests of the director: lbd in the namespace lab, driven the
//! way an LVS operator tests a DR cluster (curl to the VIP, ipvsadm-style
//! listings with lbctl, SIGHUP reloads, SIGTERM).
//!
//! lbd and lbctl belong to the lb-userspace and lbctl packages; `cargo test`
//! does not build them for this one. Build them first:
//!
//! ```text
//! cargo build -p lb-userspace -p lbctl && cargo test -p lb-tests --test director
//! ```
//!
//! `LB_BIN_DIR=DIR` takes lbd and lbctl from DIR instead (see
//! `lb_tests::bins`).
//!
//! Needs root (otherwise each test prints a message and passes). Each test
//! builds its own lab with its own subnet, config, control socket and bpffs
//! pin directory (`/sys/fs/bpf/<lab id>`), so the tests run in parallel.
//! Each test ends by stopping lbd with SIGTERM and checking that nothing is
//! left: no XDP program on the director, no pin directory, no namespace.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::lab::HTTP_PORT;
use lb_tests::scenario::{
    counts, curl_vip, finish, lab_with_servers, root_or_skip, start_director, tally, teardown,
    vip_url, vip80, wait_until,
};
use lb_tests::{Lab, LabSpec};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// Waits until `lbctl -L -n -c` lists exactly `n` entries, all in FIN_WAIT
/// (each finished curl's FIN has reached the director); returns the listing.
fn wait_for_fin_wait(director: &Director<'_>, n: usize) -> String {
    wait_until(
        &format!("{n} connection entries, all in FIN_WAIT"),
        Duration::from_secs(5),
        || {
            let out = director.lbctl(&["-L", "-n", "-c"]).unwrap();
            let entries: Vec<&str> = out.lines().skip(2).collect();
            let done = entries.len() == n
                && entries
                    .iter()
                    .all(|l| l.split_whitespace().nth(2) == Some("FIN_WAIT"));
            (done, out)
        },
    )
}

/// One `/whoami` answer: the real server's name and the client's port.
fn whoami(body: &str) -> (String, u16) {
    let fields: Vec<&str> = body.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "not a /whoami answer: {body:?}");
    let port = fields[1]
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no client port in {body:?}"));
    (fields[0].to_owned(), port)
}

/// 1-based number of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
        + 1
}

// ---- scheduling ------------------------------------------------------------

#[test]
fn rr_splits_new_connections_exactly_evenly() {
    if !root_or_skip("rr") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "dir-rr", 40, 2);
    let director = start_director(&lab, &[ServiceSpec::lab_http(&lab, "rr")]);
    assert!(
        director.xdp_attached().unwrap(),
        "{}",
        director.director_link().unwrap()
    );

    let names = curl_vip(&lab, 32);
    assert_eq!(
        tally(&names),
        counts(&[("rs1", 16), ("rs2", 16)]),
        "{names:?}"
    );
    // Round robin alternates: no server twice in a row.
    for pair in names.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "rr picked the same server twice in a row: {names:?}"
        );
    }
    finish(director);
    teardown(lab);
}

#[test]
fn wrr_weights_3_to_1_give_24_and_8() {
    if !root_or_skip("wrr") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "dir-wrr", 41, 2);
    let service = ServiceSpec::tcp(vip80(&lab), "wrr")
        .real(lab.real(0).ip, 3)
        .real(lab.real(1).ip, 1);
    let director = start_director(&lab, &[service]);

    let names = curl_vip(&lab, 32);
    assert_eq!(
        tally(&names),
        counts(&[("rs1", 24), ("rs2", 8)]),
        "{names:?}"
    );
    // IPVS's wrr walk for 3:1 has period 4 (rs1 rs1 rs1 rs2): any four
    // consecutive picks hold rs2 exactly once, wherever the walk started.
    for window in names.windows(4) {
        let rs2 = window.iter().filter(|n| *n == "rs2").count();
        assert_eq!(rs2, 1, "not IPVS's wrr sequence: {names:?}");
    }
    finish(director);
    teardown(lab);
}

// ---- connections stay where they were scheduled ----------------------------

/// One curl run fetching `url` `n` times over one keep-alive connection;
/// returns the `/whoami` bodies and the number of connections curl made.
fn keep_alive_run(lab: &Lab, url: &str, n: usize) -> (Vec<(String, u16)>, u64) {
    let mut args: Vec<String> = [
        "curl",
        "-sS",
        "--max-time",
        "20",
        "--write-out",
        "connects=%{num_connects}\\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(std::iter::repeat_n(url.to_owned(), n));
    let out = lab.run(&lab.client().ns, &args).unwrap();
    let mut bodies = Vec::new();
    let mut connects = 0;
    for line in out.lines() {
        if let Some(c) = line.strip_prefix("connects=") {
            connects += c.parse::<u64>().unwrap();
        } else {
            bodies.push(whoami(line));
        }
    }
    assert_eq!(bodies.len(), n, "curl output:\n{out}");
    (bodies, connects)
}

#[test]
fn a_keep_alive_connection_stays_on_one_real_server() {
    if !root_or_skip("keep_alive") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "dir-keepalive", 42, 2);
    let director = start_director(&lab, &[ServiceSpec::lab_http(&lab, "rr")]);
    let url = vip_url(&lab, "/whoami");

    let mut connections = Vec::new();
    for run in 0..2 {
        let (bodies, connects) = keep_alive_run(&lab, &url, 25);
        assert_eq!(
            connects, 1,
            "run {run}: curl opened {connects} connections for 25 requests"
        );
        let (server, port) = bodies[0].clone();
        for (i, b) in bodies.iter().enumerate() {
            assert_eq!(
                b,
                &(server.clone(), port),
                "run {run}: request {} left the connection's real server: {bodies:?}",
                i + 1
            );
        }
        connections.push((server, port));
    }
    // Each connection was scheduled once: rr gave the second one the other server.
    assert_ne!(connections[0].0, connections[1].0, "{connections:?}");

    let json: serde_json::Value =
        serde_json::from_str(&director.lbctl(&["-L", "-n", "--json"]).unwrap()).unwrap();
    let service = &json["services"][0];
    assert_eq!(service["stats"]["conns"], 2, "{json:#}");
    for real in service["reals"].as_array().unwrap() {
        assert_eq!(real["stats"]["conns"], 1, "{json:#}");
    }
    // One connection entry each, pointing at the server that answered.
    let conns = director.lbctl(&["-L", "-n", "-c"]).unwrap();
    assert_eq!(
        conns.lines().count(),
        2 + 2,
        "two connection entries:\n{conns}"
    );
    for (server, port) in &connections {
        let real = lab.reals().iter().find(|r| &r.name == server).unwrap();
        let source = format!("{}:{port}", lab.client().ip);
        let destination = format!("{}:{HTTP_PORT}", real.ip);
        assert!(
            conns.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(3) == Some(&source.as_str()) && f.get(5) == Some(&destination.as_str())
            }),
            "no entry {source} -> {destination}:\n{conns}"
        );
    }
    finish(director);
    teardown(lab);
}

#[test]
fn sighup_weight_zero_drains_a_server_and_keeps_its_open_connection() {
    if !root_or_skip("sighup_weight") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "dir-hup-weight", 43, 2);
    let mut service = ServiceSpec::lab_http(&lab, "rr");
    let director = start_director(&lab, std::slice::from_ref(&service));

    // A long-lived connection: /slow streams the server's name once a second.
    const SECONDS: usize = 8;
    let slow_url = vip_url(&lab, &format!("/slow?seconds={SECONDS}"));
    let slow = lab
        .spawn(
            &lab.client().ns,
            "slow-curl",
            // -N: write each line as it arrives (not at exit).
            &["curl", "-sS", "-N", "--max-time", "30", slow_url.as_str()],
        )
        .unwrap();
    let first = wait_until(
        "the slow connection streamed its first line",
        Duration::from_secs(5),
        || {
            let log = lab.read_log(&slow);
            (log.contains('\n'), log)
        },
    );
    let x = first.lines().next().unwrap().to_owned();
    let (x_real, other) = match x.as_str() {
        "rs1" => (lab.real(0), "rs2"),
        "rs2" => (lab.real(1), "rs1"),
        _ => panic!("unexpected answer on the slow connection: {first:?}"),
    };

    // Drain X: weight 0, SIGHUP.
    service.set_weight(x_real.ip, 0);
    director
        .write_config(std::slice::from_ref(&service))
        .unwrap();
    let log = director.reload().unwrap();
    assert!(
        log.contains(&format!(
            "SIGHUP: reloading {}",
            director.config_path.display()
        )),
        "{log}"
    );
    assert!(log.contains("reload done"), "{log}");
    assert!(
        log.contains(&format!(
            "service TCP {}:{HTTP_PORT}: real server {} weight 1 -> 0",
            lab.vip(),
            x_real.ip
        )),
        "{log}"
    );
    assert!(
        lab.is_running(&slow),
        "the slow connection ended early: {:?}",
        lab.read_log(&slow)
    );

    // Right after the reload (the stream lasts only SECONDS, and under
    // emulation the curls below take longer than that): weight 0, and the
    // slow connection is the one active connection, still on X.
    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    let x_line = listing
        .lines()
        .find(|l| l.contains(&format!("{}:{HTTP_PORT} ", x_real.ip)))
        .unwrap_or_else(|| panic!("{} missing:\n{listing}", x_real.ip));
    assert_eq!(
        x_line.split_whitespace().nth(3),
        Some("0"),
        "weight of {x}:\n{listing}"
    );
    assert_eq!(
        x_line.split_whitespace().nth(4),
        Some("1"),
        "ActiveConn of {x}:\n{listing}"
    );

    // New connections all go to the other server.
    let names = curl_vip(&lab, 16);
    assert_eq!(tally(&names), counts(&[(other, 16)]), "{names:?}");

    // The open connection streams to the end, from X.
    wait_until(
        "the slow curl finished",
        Duration::from_secs(SECONDS as u64 + 10),
        || (!lab.is_running(&slow), lab.read_log(&slow)),
    );
    let status = lab.stop(&slow).unwrap();
    let output = lab.read_log(&slow);
    assert!(status.success(), "slow curl: {status}: {output:?}");
    assert_eq!(
        output,
        format!("{x}\n").repeat(SECONDS),
        "the drained connection's stream"
    );
    finish(director);
    teardown(lab);
}

#[test]
fn an_invalid_file_on_sighup_is_refused_and_the_running_table_stays() {
    if !root_or_skip("sighup_invalid") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "dir-hup-invalid", 44, 2);
    let service = ServiceSpec::lab_http(&lab, "rr");
    let director = start_director(&lab, std::slice::from_ref(&service));
    let names = curl_vip(&lab, 8);
    assert_eq!(
        tally(&names),
        counts(&[("rs1", 4), ("rs2", 4)]),
        "{names:?}"
    );
    // Once every client's FIN went through, the listing holds still.
    wait_for_fin_wait(&director, 8);
    let listing_before = director.lbctl(&["-L", "-n"]).unwrap();

    // A typo'd weight (out of range) and drop rs1 from the file: none of it
    // may be applied.
    let mut broken = service.clone();
    broken.set_weight(lab.real(1).ip, 70000);
    broken.reals.remove(0);
    let text = director.config_text(&[broken]);
    director.write_config_text(&text).unwrap();
    let log = director.reload().unwrap();
    assert!(
        log.contains("reload refused: the running configuration stays"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{}:{}: service[0].real[0].weight: 70000 is out of range 0..=65535",
            director.config_path.display(),
            line_of(&text, "weight = 70000")
        )),
        "{log}"
    );
    assert!(!log.contains("reload done"), "{log}");
    assert!(director.is_running(), "lbd died on a bad reload:\n{log}");

    // Same table, same balancing.
    assert_eq!(director.lbctl(&["-L", "-n"]).unwrap(), listing_before);
    let before = names;
    let names = curl_vip(&lab, 32);
    assert_eq!(
        tally(&names),
        counts(&[("rs1", 16), ("rs2", 16)]),
        "{names:?}"
    );
    // The rr walk carries on where it was.
    let all: Vec<String> = before.iter().chain(&names).cloned().collect();
    for pair in all.windows(2) {
        assert_ne!(pair[0], pair[1], "{before:?} then {names:?}");
    }
    finish(director);
    teardown(lab);
}

// ---- what is not a service passes -------------------------------------------

#[test]
fn traffic_to_the_directors_own_address_passes_untouched() {
    if !root_or_skip("own_address") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "dir-own-addr", 45, 2);
    let director = start_director(&lab, &[ServiceSpec::lab_http(&lab, "rr")]);
    let d = lab.director();

    // A server on the director's own address (not the VIP).
    let listen = SocketAddrV4::new(d.ip, HTTP_PORT).to_string();
    let server = lab
        .spawn(
            &d.ns,
            "http-director",
            &[LAB_SERVER, "--name", "director", "--http", listen.as_str()],
        )
        .unwrap();
    let own_url = format!("http://{}:{HTTP_PORT}/", d.ip);
    lab.wait_for_http(&own_url, "director\n", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.read_log(&server)));

    let before = director.counters().unwrap();
    for _ in 0..5 {
        assert_eq!(lab.curl(&own_url).unwrap(), "director\n");
    }
    let after = director.counters().unwrap();
    let delta = |k: &str| after[k] - before[k];
    // Each curl is at least SYN, ACK, request, FIN: all passed for want of a service.
    assert!(
        delta("pass_no_service") >= 5 * 4,
        "before {before:?}\nafter {after:?}"
    );
    assert_eq!(
        delta("tx_dr"),
        0,
        "director-bound traffic was forwarded: {after:?}"
    );
    assert_eq!(delta("conn_new"), 0, "{after:?}");

    // ICMP to the director and to the VIP is answered by the director's stack.
    let before = director.counters().unwrap();
    for target in [d.ip, lab.vip()] {
        assert_eq!(
            ping(&lab.client().ns, target, 3),
            3,
            "echo replies from {target}"
        );
    }
    let after = director.counters().unwrap();
    assert!(
        after["pass_other_protocol"] - before["pass_other_protocol"] >= 6,
        "before {before:?}\nafter {after:?}"
    );
    assert_eq!(after["tx_dr"], before["tx_dr"], "{after:?}");

    // ARP passes: the director answers for its address and the VIP.
    let before = director.counters().unwrap();
    assert_eq!(lab.arp_probe_from_client(d.ip).unwrap(), vec![d.mac]);
    assert_eq!(lab.arp_probe_from_client(lab.vip()).unwrap(), vec![d.mac]);
    let after = director.counters().unwrap();
    assert!(
        after["pass_not_ip"] > before["pass_not_ip"],
        "before {before:?}\nafter {after:?}"
    );

    // Meanwhile the VIP is still balanced (and that does count as tx_dr).
    let names = curl_vip(&lab, 2);
    assert_eq!(tally(&names), counts(&[("rs1", 1), ("rs2", 1)]));
    let last = director.counters().unwrap();
    assert!(last["tx_dr"] > after["tx_dr"], "{last:?}");
    assert_eq!(last["conn_new"] - after["conn_new"], 2, "{last:?}");

    // The text form lists the same counters.
    let text = director.lbctl(&["--counters"]).unwrap();
    for name in [
        "pass_no_service",
        "pass_not_ip",
        "pass_other_protocol",
        "tx_dr",
    ] {
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{text}"
        );
    }
    finish(director);
    teardown(lab);
}

/// Internet checksum (RFC 1071).
fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends `count` ICMP echo requests from namespace `ns` to `target` (raw
/// socket, no ping binary needed) and returns how many were answered.
fn ping(ns: &str, target: Ipv4Addr, count: u16) -> u16 {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    lb_tests::netns::run_in_netns(ns, move || {
        // SAFETY: plain socket calls on a socket this closure owns, with
        // buffers and lengths that match.
        unsafe {
            let raw = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
            assert!(
                raw >= 0,
                "raw ICMP socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = OwnedFd::from_raw_fd(raw);
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(target).to_be(),
                },
                sin_zero: [0; 8],
            };
            let id = (std::process::id() as u16) ^ 0x4c42;
            let mut answered = 0;
            for seq in 0..count {
                let mut packet = vec![8u8, 0, 0, 0];
                packet.extend_from_slice(&id.to_be_bytes());
                packet.extend_from_slice(&seq.to_be_bytes());
                packet.extend_from_slice(b"lb director test");
                let sum = inet_checksum(&packet);
                packet[2..4].copy_from_slice(&sum.to_be_bytes());
                let sent = libc::sendto(
                    fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&addr as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                );
                assert_eq!(
                    sent,
                    packet.len() as isize,
                    "{}",
                    std::io::Error::last_os_error()
                );
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut buf = [0u8; 1500];
                while Instant::now() < deadline {
                    let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n < 28 {
                        continue;
                    }
                    // The raw socket hands over the IP header too.
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    let icmp = &buf[ihl..n as usize];
                    let from = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                    if from == target
                        && icmp.len() >= 8
                        && icmp[0] == 0
                        && icmp[4..6] == id.to_be_bytes()
                        && icmp[6..8] == seq.to_be_bytes()
                    {
                        answered += 1;
                        break;
                    }
                }
            }
            answered
        }
    })
    .unwrap()
}

// ---- lbctl, ipvsadm style ----------------------------------------------------

/// Fields of the real-server line for `addr` in an lbctl listing.
fn real_line_fields(listing: &str, addr: &str) -> Vec<String> {
    listing
        .lines()
        .find(|l| l.starts_with("  -> ") && l.split_whitespace().nth(1) == Some(addr))
        .unwrap_or_else(|| panic!("no line for {addr} in\n{listing}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn lbctl_lists_the_table_stats_connections_and_json_like_ipvsadm() {
    if !root_or_skip("lbctl_listing") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "dir-lbctl", 46, 2);
    let vip = lab.vip();
    let (rs1, rs2) = (lab.real(0).ip, lab.real(1).ip);
    // rr ignores weights (other than 0), but lists them.
    let service = ServiceSpec::tcp(SocketAddrV4::new(vip, HTTP_PORT), "rr")
        .real(rs1, 3)
        .real(rs2, 1);
    let director = start_director(&lab, &[service]);
    let size = director.conn_table_size;

    // Before any traffic.
    let empty = director.lbctl(&["-L", "-n"]).unwrap();
    let row = |addr: Ipv4Addr, weight: u32, active: u64, inactive: u64| {
        format!(
            "  -> {:<28} {:<7} {:<6} {:<10} {:<10}\n",
            format!("{addr}:{HTTP_PORT}"),
            "Route",
            weight,
            active,
            inactive
        )
    };
    let header = format!(
        "IP Virtual Server version 1.2.1 (size={size})\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  {vip}:{HTTP_PORT} rr\n"
    );
    assert_eq!(
        empty,
        format!("{header}{}{}", row(rs1, 3, 0, 0), row(rs2, 1, 0, 0))
    );

    // Seven connections: who got which client port.
    let url = vip_url(&lab, "/whoami");
    let answers: Vec<(String, u16)> = (0..7).map(|_| whoami(&lab.curl(&url).unwrap())).collect();
    let got = |name: &str| answers.iter().filter(|(n, _)| n == name).count() as u64;
    let (n1, n2) = (got("rs1"), got("rs2"));
    assert_eq!(n1 + n2, 7);
    assert!(n1.abs_diff(n2) == 1, "rr split 7 as {n1}/{n2}");

    // -c: one entry per curl, FIN_WAIT once the client's FIN went through.
    let conns = wait_for_fin_wait(&director, 7);
    let mut lines = conns.lines();
    assert_eq!(lines.next(), Some("IPVS connection entries"), "{conns}");
    assert_eq!(
        lines.next(),
        Some("pro expire state       source             virtual            destination"),
        "{conns}"
    );
    let client = lab.client().ip;
    for (name, port) in &answers {
        let source = format!("{client}:{port}");
        let line = conns
            .lines()
            .find(|l| l.split_whitespace().nth(3) == Some(source.as_str()))
            .unwrap_or_else(|| panic!("no entry for {source}:\n{conns}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        let real = if name == "rs1" { rs1 } else { rs2 };
        assert_eq!(f[0], "TCP", "{line}");
        assert_eq!(f[2], "FIN_WAIT", "{line}");
        assert_eq!(f[4], format!("{vip}:{HTTP_PORT}"), "{line}");
        assert_eq!(
            f[5],
            format!("{real}:{HTTP_PORT}"),
            "{name} answered {source}, but: {line}"
        );
        // tcpfin timeout 120 s: "01:xx" or "02:00".
        assert!(f[1] > "01:00" && f[1] <= "02:00", "expire: {line}");
    }

    // -L -n: finished connections are inactive.
    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    assert_eq!(
        listing,
        format!("{header}{}{}", row(rs1, 3, 0, n1), row(rs2, 1, 0, n2))
    );

    // --stats: Conns per real server are the curls each got; the director
    // sees only the inbound half of DR traffic, so OutPkts stays 0.
    // Settled: the clients' last ACKs may trail their FINs by a moment.
    let stats = wait_until("--stats to settle", Duration::from_secs(5), || {
        let first = director.lbctl(&["-L", "-n", "--stats"]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let second = director.lbctl(&["-L", "-n", "--stats"]).unwrap();
        (first == second, second)
    });
    let mut lines = stats.lines();
    assert_eq!(
        lines.next(),
        Some(format!("IP Virtual Server version 1.2.1 (size={size})").as_str())
    );
    assert_eq!(
        lines.next(),
        Some("Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes")
    );
    assert_eq!(lines.next(), Some("  -> RemoteAddress:Port"));
    let svc: Vec<String> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        svc[..3],
        [
            "TCP".to_owned(),
            format!("{vip}:{HTTP_PORT}"),
            "7".to_owned()
        ],
        "{stats}"
    );
    let mut in_pkts = 0;
    for (addr, n) in [(rs1, n1), (rs2, n2)] {
        let f = real_line_fields(&stats, &format!("{addr}:{HTTP_PORT}"));
        let num = |i: usize| f[i].parse::<u64>().unwrap();
        assert_eq!(num(2), n, "Conns of {addr}:\n{stats}");
        assert!(num(3) >= 4 * n, "InPkts of {addr}:\n{stats}");
        assert_eq!(num(4), 0, "OutPkts of {addr}:\n{stats}");
        assert!(num(5) >= 40 * num(3), "InBytes of {addr}:\n{stats}");
        assert_eq!(num(6), 0, "OutBytes of {addr}:\n{stats}");
        in_pkts += num(3);
    }
    assert_eq!(
        svc[3].parse::<u64>().unwrap(),
        in_pkts,
        "service InPkts is the sum:\n{stats}"
    );

    // --json: the same, machine-readable.
    let json: serde_json::Value =
        serde_json::from_str(&director.lbctl(&["-L", "-n", "--json"]).unwrap())
            .expect("lbctl -L -n --json is JSON");
    assert_eq!(json["conn_table_size"], size, "{json:#}");
    let s = &json["services"][0];
    assert_eq!(s["protocol"], "tcp");
    assert_eq!(s["vip"], vip.to_string());
    assert_eq!(s["port"], HTTP_PORT);
    assert_eq!(s["scheduler"], "rr");
    assert_eq!(s["stats"]["conns"], 7);
    let reals = s["reals"].as_array().unwrap();
    assert_eq!(reals.len(), 2, "{json:#}");
    for (addr, weight, n) in [(rs1, 3, n1), (rs2, 1, n2)] {
        let r = reals
            .iter()
            .find(|r| r["address"] == addr.to_string())
            .unwrap_or_else(|| panic!("{addr} missing: {json:#}"));
        assert_eq!(r["forwarding"], "dr");
        assert_eq!(r["weight"], weight);
        assert_eq!(r["stats"]["conns"], n);
        assert_eq!(r["inactive_conns"], n);
        assert_eq!(r["active_conns"], 0);
    }
    let conns_json: serde_json::Value =
        serde_json::from_str(&director.lbctl(&["-L", "-n", "-c", "--json"]).unwrap()).unwrap();
    assert_eq!(
        conns_json.as_array().map(Vec::len),
        Some(7),
        "{conns_json:#}"
    );
    assert!(
        conns_json
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"] == "FIN_WAIT")
    );

    assert_eq!(
        director.lbctl(&["-L", "--timeout"]).unwrap(),
        "Timeout (tcp tcpfin udp): 900 120 300\n"
    );
    finish(director);
    teardown(lab);
}

// ---- config errors -------------------------------------------------------------

/// A config mistake and what lbd must say about it.
struct Mistake {
    name: &'static str,
    text: String,
    /// The line the message must name.
    line: usize,
    /// What must follow "FILE:LINE: " in the message.
    message: String,
}

#[test]
fn config_mistakes_are_named_by_file_line_and_key_and_nothing_is_attached() {
    if !root_or_skip("config_errors") {
        return;
    }
    let lab = Lab::build(LabSpec::new("dir-config").reals(2).subnet_index(47)).unwrap();
    let director = Director::new(&lab).unwrap();
    let (vip, rs1, rs2) = (lab.vip(), lab.real(0).ip, lab.real(1).ip);
    let good = director.config_text(&[ServiceSpec::tcp(SocketAddrV4::new(vip, HTTP_PORT), "wrr")
        .real(rs1, 2)
        .real(rs2, 1)]);
    let dir = lab.log_dir().to_path_buf();
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };

    // The good file passes, so each mistake below is the only problem.
    let good_path = write("good", &good);
    let run = director.check(&good_path).unwrap();
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout,
        format!("{}: OK (1 services)\n", good_path.display())
    );

    // A gateway route for a subnet that is not on the director's segment.
    lab.run(
        &lab.director().ns,
        &[
            "ip",
            "route",
            "add",
            "192.168.77.0/24",
            "via",
            &lab.client().ip.to_string(),
        ],
    )
    .unwrap();

    let mut mistakes: Vec<Mistake> = Vec::new();
    // Adds a mistake whose message must name the line holding `marker`.
    fn mistake(
        list: &mut Vec<Mistake>,
        name: &'static str,
        text: String,
        marker: &str,
        message: String,
    ) {
        let line = line_of(&text, marker);
        list.push(Mistake {
            name,
            text,
            line,
            message,
        });
    }
    let m = &mut mistakes;
    let rs1_addr = format!("address = \"{rs1}\"");
    let rs2_addr = format!("address = \"{rs2}\"");
    mistake(
        m,
        "bad-address",
        good.replace(&rs2_addr, &format!("address = \"{rs2}x\"")),
        &format!("{rs2}x"),
        format!("service[0].real[1].address: \"{rs2}x\" is not an IPv4 address"),
    );
    mistake(
        m,
        "weight-out-of-range",
        good.replace("weight = 2", "weight = 65536"),
        "weight = 65536",
        "service[0].real[0].weight: 65536 is out of range 0..=65535".into(),
    );
    mistake(
        m,
        "unknown-scheduler",
        good.replace("scheduler = \"wrr\"", "scheduler = \"fastest\""),
        "fastest",
        "service[0].scheduler: unknown scheduler \"fastest\"".into(),
    );
    mistake(
        m,
        "unknown-key",
        good.replace("weight = 1", "wieght = 1"),
        "wieght",
        "unknown field `wieght`".into(),
    );
    // The same service twice: the error is at the second one's vip, and
    // names the first one's line.
    let service_start = good.find("[[service]]").unwrap();
    let twice = format!("{good}\n{}", &good[service_start..]);
    let second_vip = twice.lines().filter(|l| l.starts_with("vip = ")).count();
    assert_eq!(second_vip, 2);
    let vip_line = |text: &str, nth: usize| {
        text.lines()
            .enumerate()
            .filter(|(_, l)| l.starts_with("vip = "))
            .nth(nth)
            .unwrap()
            .0
            + 1
    };
    m.push(Mistake {
        name: "duplicate-service",
        line: vip_line(&twice, 1),
        message: format!(
            "service[1].vip: tcp {vip}:{HTTP_PORT} is already defined at line {}",
            line_of(&good, "[[service]]")
        ),
        text: twice,
    });
    // The same real server twice: the error is at the second address, and
    // names the first one's [[service.real]] line.
    let same = good.replace(&rs2_addr, &rs1_addr);
    let first_real = line_of(&good, "[[service.real]]");
    let second_address = same
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&rs1_addr))
        .nth(1)
        .unwrap()
        .0
        + 1;
    m.push(Mistake {
        name: "duplicate-real",
        line: second_address,
        message: format!(
            "service[0].real[1].address: {rs1} is already a real server of this service (line {first_real})"
        ),
        text: same,
    });
    mistake(
        m,
        "missing-interface",
        good.replace("interface = \"eth0\"\n", ""),
        "[director]",
        "missing field `interface`".into(),
    );
    mistake(
        m,
        "no-such-interface",
        good.replace("interface = \"eth0\"", "interface = \"eth9\""),
        "eth9",
        "director.interface: no interface named \"eth9\"".into(),
    );
    mistake(
        m,
        "real-behind-gateway",
        good.replace(&rs1_addr, "address = \"192.168.77.5\""),
        "192.168.77.5",
        format!(
            "service[0].real[0].address: 192.168.77.5 is reached through the gateway {}: direct \
             routing needs the real server on eth0's segment",
            lab.client().ip
        ),
    );
    let director_ip = lab.director().ip;
    mistake(
        m,
        "real-is-the-director",
        good.replace(&rs1_addr, &format!("address = \"{director_ip}\"")),
        &format!("\"{director_ip}\""),
        format!("service[0].real[0].address: {director_ip} is an address of this director"),
    );
    mistake(
        m,
        "real-is-the-vip",
        good.replace(&rs1_addr, &format!("address = \"{vip}\"")),
        &format!("address = \"{vip}\""),
        "service[0].real[0].address: a real server cannot be the VIP itself".into(),
    );

    let mut failures = Vec::new();
    for m in &mistakes {
        let path = write(m.name, &m.text);
        let run = director.check(&path).unwrap();
        let expected = format!("{}:{}: {}", path.display(), m.line, m.message);
        if run.status.code() != Some(1) || !run.stderr.contains(&expected) || !run.stdout.is_empty()
        {
            failures.push(format!(
                "{}: exit {:?}, expected {expected:?} in\n{}{}",
                m.name,
                run.status.code(),
                run.stderr,
                run.stdout
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mistake(s) not reported as expected:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );

    // lbd itself (not --check) refuses a bad file before touching anything:
    // no XDP program, no pins, no control socket. One mistake found by
    // parsing, one found by checking the host.
    for name in ["weight-out-of-range", "real-behind-gateway"] {
        let path = dir.join(format!("{name}.toml"));
        let run = director
            .run_lbd(&["--config", &path.to_string_lossy()])
            .unwrap();
        assert_eq!(run.status.code(), Some(1), "lbd with {name}: {run:?}");
        assert!(
            run.stderr.contains(&format!("{}:", path.display())),
            "{run:?}"
        );
        let link = director.director_link().unwrap();
        assert!(
            !lb_tests::director::has_xdp(&link),
            "lbd attached with {name}:\n{link}"
        );
        assert!(
            !director.pin_path.exists(),
            "lbd created {} with {name}",
            director.pin_path.display()
        );
        assert!(
            !director.socket.exists(),
            "lbd created its socket with {name}"
        );
    }
    drop(director);
    teardown(lab);
}

// ---- stopping ----------------------------------------------------------------------

#[test]
fn sigterm_detaches_and_the_vip_falls_back_to_the_directors_stack() {
    if !root_or_skip("sigterm") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "dir-sigterm", 48, 2);
    let d = lab.director();
    // The director's own stack also listens on the VIP; while lbd runs it
    // never sees VIP traffic.
    let listen = vip80(&lab).to_string();
    let server = lab
        .spawn(
            &d.ns,
            "http-director-vip",
            &[LAB_SERVER, "--name", "director", "--http", listen.as_str()],
        )
        .unwrap();
    let mut director = start_director(&lab, &[ServiceSpec::lab_http(&lab, "rr")]);
    let names = curl_vip(&lab, 4);
    assert_eq!(
        tally(&names),
        counts(&[("rs1", 2), ("rs2", 2)]),
        "{names:?}"
    );
    assert!(director.xdp_attached().unwrap());
    // Pins live in a directory per map layout version (v1, v2, ...).
    let layout_dir = std::fs::read_dir(&director.pin_path)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir())
        .expect("a layout directory under the pin path");
    let pins: Vec<String> = std::fs::read_dir(layout_dir)
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(pins.iter().any(|p| p == "xdp_link_eth0"), "pins: {pins:?}");

    let status = director.stop().unwrap();
    let log = director.log();
    assert!(status.success(), "lbd exited with {status}:\n{log}");
    assert!(log.contains("detached from eth0; exiting"), "{log}");
    let link = director.director_link().unwrap();
    assert!(
        !lb_tests::director::has_xdp(&link),
        "XDP still attached after SIGTERM:\n{link}"
    );
    assert!(
        !director.pin_path.exists(),
        "pin dir left: {}",
        director.pin_path.display()
    );
    assert!(!director.socket.exists(), "control socket left behind");
    let out = director.lbctl_output(&["-L", "-n"]).unwrap();
    assert!(!out.status.success(), "lbctl still got an answer");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach lbd"),
        "{out:?}"
    );

    // The VIP belongs to the director again: its own server answers, the
    // real servers see no VIP traffic.
    let rx_packets = || -> Vec<u64> {
        lab.reals()
            .iter()
            .map(|r| lab.link_stats(&r.ns, "eth0").unwrap().rx_packets)
            .collect()
    };
    let before = rx_packets();
    for _ in 0..4 {
        assert_eq!(
            lab.curl(&vip_url(&lab, "/")).unwrap(),
            "director\n",
            "{}",
            lab.read_log(&server)
        );
    }
    let after = rx_packets();
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        // Four curls would be 20+ packets; allow a stray ARP broadcast or two.
        assert!(
            a - b <= 2,
            "rs{} received {} packets after lbd stopped",
            i + 1,
            a - b
        );
    }

    drop(director);
    teardown(lab);
}
