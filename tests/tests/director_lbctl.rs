//! lbctl against lbd in the namespace lab, ipvsadm style: the table, its
//! statistics and rates, the connection table and JSON, as an LVS operator
//! reads them.
//!
//! Build lbd and lbctl first (`cargo build -p lb-userspace -p lbctl`), as
//! for `tests/director.rs`; needs root (otherwise the test prints a message
//! and passes).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use lb_tests::director::ServiceSpec;
use lb_tests::lab::HTTP_PORT;
use lb_tests::scenario::{
    finish, lab_with_servers, root_or_skip, start_director, teardown, vip_url, wait_for_fin_wait, wait_until, whoami,
};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

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
    // A service named by address (a firewall-mark service is `fwmark`).
    let id = &s["id"]["address"];
    assert_eq!(id["protocol"], "tcp", "{json:#}");
    assert_eq!(id["addr"], vip.to_string());
    assert_eq!(id["port"], HTTP_PORT);
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
