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
//!
//! lbctl's listings are checked in `director_lbctl.rs`, config mistakes in
//! `director_config.rs`.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use lb_tests::Lab;
use lb_tests::director::ServiceSpec;
use lb_tests::lab::HTTP_PORT;
use lb_tests::scenario::{
    counts, curl_vip, finish, lab_with_servers, line_of, root_or_skip, start_director, tally, teardown,
    vip_url, vip80, wait_for_fin_wait, wait_until, whoami,
};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

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
