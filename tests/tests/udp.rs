//! UDP services end to end: lbd in the namespace lab in front of
//! lab-server's UDP echo on the real servers.
//!
//! * Each new flow (client address and port) is scheduled (rr alternates),
//!   later datagrams of a flow stay on its server; `lbctl -c` shows the
//!   flows as IPVS does (`UDP`, expiry from `timeout_udp`), `lbctl -L -n`
//!   counts them as InActConn, `lbctl --timeout` shows the timeouts.
//! * With the connection table full (LRU, `conn_table_size = 1024`, far
//!   more flows than that), the per-server counts end up equal to what the
//!   table holds, and drop to 0 once the flows expire.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root
//! (otherwise each test prints a message and passes).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use lb_tests::Lab;
use lb_tests::director::{Director, ServiceSpec};
use lb_tests::netns::run_in_netns;
use lb_tests::scenario::{
    UdpFlow, finish, lab_with_udp_servers, root_or_skip, row_of, start_configured, teardown,
    wait_until,
};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const PORT: u16 = 5353;

/// A started director with `settings` in `[director]` (and a connection
/// table of `table_size` entries, if given) and UDP VIP:PORT rr over both
/// real servers.
fn start_director<'a>(lab: &'a Lab, table_size: Option<u32>, settings: &[&str]) -> Director<'a> {
    let service = ServiceSpec::lab_udp(lab, PORT, "rr");
    let mut director = Director::new(lab).unwrap();
    if let Some(size) = table_size {
        director.conn_table_size = size;
    }
    for line in settings {
        director.director_setting(line);
    }
    start_configured(director, &[service])
}

fn vip(lab: &Lab) -> SocketAddrV4 {
    SocketAddrV4::new(lab.vip(), PORT)
}

/// From one client socket (a fresh port), `n` datagrams to the VIP, each
/// waiting for its echo; the socket's port and the server named in each
/// answer. The socket is connected: only answers from the VIP count.
fn exchange(lab: &Lab, n: usize) -> (u16, Vec<String>) {
    let mut flow = UdpFlow::open(lab, PORT);
    let servers = (0..n).map(|_| flow.exchange()).collect();
    (flow.port(), servers)
}

#[test]
fn udp_flows_are_scheduled_per_source_port_and_listed_like_ipvs() {
    if !root_or_skip("udp") {
        return;
    }
    let lab = lab_with_udp_servers(LAB_SERVER, "udp-rr", 80, 2, PORT);
    let director = start_director(&lab, None, &["timeout_udp = 10"]);

    // New source port, new flow: rr alternates.
    let mut flows: BTreeMap<u16, String> = BTreeMap::new();
    let mut order = Vec::new();
    for _ in 0..8 {
        let (port, servers) = exchange(&lab, 1);
        order.push(servers[0].clone());
        flows.insert(port, servers[0].clone());
    }
    for pair in order.windows(2) {
        assert_ne!(
            pair[0], pair[1],
            "rr picked the same server twice in a row: {order:?}"
        );
    }
    assert_eq!(order.iter().filter(|s| *s == "rs1").count(), 4, "{order:?}");

    // One source port: every datagram of the flow on one server.
    let (port, servers) = exchange(&lab, 10);
    assert!(
        servers.iter().all(|s| *s == servers[0]),
        "one flow went to several servers: {servers:?}"
    );
    flows.insert(port, servers[0].clone());
    assert_eq!(
        flows.len(),
        9,
        "the sockets' ports were not all different: {flows:?}"
    );

    // The connection table: one UDP entry per flow, expiring within timeout_udp.
    let listing = director.lbctl(&["-L", "-n", "-c"]).unwrap();
    eprintln!("{listing}");
    let entries = lb_tests::director::parse_connection_entries(&listing).unwrap();
    assert_eq!(entries.len(), flows.len(), "{listing}");
    let client = lab.client().ip;
    for e in &entries {
        assert_eq!(
            (e.protocol.as_str(), e.state.as_str()),
            ("UDP", "UDP"),
            "{listing}"
        );
        assert!(
            (5..=10).contains(&e.expires_in),
            "expiry not within timeout_udp = 10: {e:?}\n{listing}"
        );
        assert_eq!(*e.source.ip(), client, "{listing}");
        assert_eq!(e.virtual_, vip(&lab), "{listing}");
        let server = flows
            .get(&e.source.port())
            .unwrap_or_else(|| panic!("unknown flow {e:?}\n{listing}"));
        let real = lab.reals().iter().find(|r| r.name == *server).unwrap();
        assert_eq!(e.destination, SocketAddrV4::new(real.ip, PORT), "{listing}");
    }
    assert!(
        listing.lines().skip(2).all(|l| l.starts_with("UDP 00:")),
        "{listing}"
    );

    // -L -n: the flows are InActConn (UDP has no established state).
    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    let service_line = format!("UDP  {} rr", vip(&lab));
    assert!(
        listing.lines().any(|l| l.trim_end() == service_line),
        "no {service_line:?} in\n{listing}"
    );
    let rows = lb_tests::director::parse_real_rows(&listing).unwrap();
    for real in lab.reals() {
        let want = flows.values().filter(|s| **s == real.name).count() as u64;
        let row = row_of(&rows, real, PORT);
        assert_eq!(
            (row.active, row.inactive),
            (0, want),
            "{}:\n{listing}",
            real.name
        );
        assert_eq!(row.forward, "Route", "{listing}");
    }

    let timeouts = director.lbctl(&["-L", "--timeout"]).unwrap();
    assert_eq!(timeouts, "Timeout (tcp tcpfin udp): 900 120 10\n");
    finish(director);
    teardown(lab);
}

/// Number of distinct flows the full-table test creates.
const FLOWS: u16 = 3000;
const TABLE: u32 = 1024;
const TIMEOUT_UDP: u64 = 10;

#[test]
fn counts_match_the_table_when_the_lru_table_overflows() {
    if !root_or_skip("udp lru") {
        return;
    }
    let lab = lab_with_udp_servers(LAB_SERVER, "udp-lru", 81, 2, PORT);
    let timeout = format!("timeout_udp = {TIMEOUT_UDP}");
    let director = start_director(&lab, Some(TABLE), &[&timeout]);
    assert!(
        director
            .lbctl(&["-L", "-n"])
            .unwrap()
            .starts_with(&format!("IP Virtual Server version 1.2.1 (size={TABLE})"))
    );

    // FLOWS datagrams from FLOWS source ports (outside the ephemeral
    // range), answers ignored. Paced a little so the veths drop nothing.
    let target = SocketAddr::V4(vip(&lab));
    let client = lab.client().ip;
    let sent = run_in_netns(&lab.client().ns, move || {
        let mut sent = 0u32;
        for (i, port) in (20000..20000 + FLOWS).enumerate() {
            let Ok(socket) = UdpSocket::bind(SocketAddrV4::new(client, port)) else {
                continue;
            };
            if socket.send_to(b"flow", target).is_ok() {
                sent += 1;
            }
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        sent
    })
    .unwrap();
    let sent_at = Instant::now();
    assert!(sent > TABLE + 500, "only {sent} datagrams sent");

    // The sweeper (every second) closes lasting gaps after 3 sweeps: each
    // server's count becomes the number of its entries in the table.
    let mut lowest = 0i64;
    let mut check = || {
        // Raw counts of every server slot: never below 0.
        for c in director.raw_real_conns().unwrap() {
            lowest = lowest.min(c.active).min(c.inactive).min(c.persistent);
        }
        assert!(lowest >= 0, "a connection count went negative: {lowest}");
        let rows = director.real_rows().unwrap();
        let entries = director.connection_entries().unwrap();
        let per_server: Vec<(Ipv4Addr, u64, u64, usize)> = lab
            .reals()
            .iter()
            .map(|r| {
                let row = row_of(&rows, r, PORT);
                let listed = entries
                    .iter()
                    .filter(|e| e.destination == SocketAddrV4::new(r.ip, PORT))
                    .count();
                (r.ip, row.active, row.inactive, listed)
            })
            .collect();
        (entries.len(), per_server)
    };
    let first = check();
    eprintln!("right after sending: {first:?}");
    let (listed, per_server) = wait_until(
        "ActiveConn + InActConn of each server equal to its entries in the table",
        Duration::from_secs(TIMEOUT_UDP - 2),
        || {
            let (total, per_server) = check();
            let done = total > 0 && per_server.iter().all(|&(_, a, i, n)| a + i == n as u64);
            (done, (total, per_server))
        },
    );
    eprintln!(
        "{sent} flows sent; after {:?}: {listed} entries listed, per server {per_server:?}",
        sent_at.elapsed()
    );
    assert!(
        listed <= TABLE as usize,
        "{listed} entries in a table of {TABLE}"
    );
    assert!(
        listed < sent as usize,
        "the table evicted nothing: {listed} entries for {sent} flows"
    );
    for &(ip, active, inactive, _) in &per_server {
        assert_eq!(active, 0, "{ip}: UDP flows are never active");
        assert!(
            inactive <= TABLE as u64,
            "{ip}: {inactive} above the table size"
        );
    }
    assert!(
        per_server.iter().all(|&(_, _, i, _)| i > 0),
        "rr placed flows on both servers: {per_server:?}"
    );

    // No more traffic: the flows expire after timeout_udp, the sweeper
    // takes them out, and the counts come back to 0, no lower.
    let (total, per_server) = wait_until(
        "the counts back to 0 after the flows expired",
        Duration::from_secs(TIMEOUT_UDP + 8).saturating_sub(sent_at.elapsed()),
        || {
            let (total, per_server) = check();
            let done = total == 0 && per_server.iter().all(|&(_, a, i, _)| a + i == 0);
            (done, (total, per_server))
        },
    );
    eprintln!(
        "after {:?}: {total} entries, per server {per_server:?}",
        sent_at.elapsed()
    );
    // And they stay there (a correction in the wrong direction would show now).
    std::thread::sleep(Duration::from_secs(4));
    let (total, per_server) = check();
    assert_eq!(total, 0);
    assert!(
        per_server.iter().all(|&(_, a, i, _)| a + i == 0),
        "{per_server:?}"
    );
    finish(director);
    teardown(lab);
}
