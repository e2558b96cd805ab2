//! The IPVS schedulers end to end: lbd in the namespace lab, real
//! connections from the client, and what lands where checked against
//! lb-common's reference models of IPVS (`lb_common::sched::models`), which
//! take the real servers in IPVS's own list order: the last added first, i.e.
//! the reverse of the config file's order.
//!
//! * sh: every connection of one client goes to the server its address
//!   hashes to; other client addresses (extra addresses on the client's
//!   eth0, `curl --interface`) to theirs.
//! * lc, wlc: connections held open one after another land as IPVS's
//!   least-connection rules say, and `lbctl -L -n` counts them as
//!   ActiveConn, then as InActConn (FIN_WAIT) once closed.
//! * persistence: one client keeps its server through a template shown by
//!   `lbctl -c` as IPVS shows it; the template lives while its connections
//!   do, then lets go, and the client is scheduled anew.
//!
//! (rr, wrr: tests/director.rs; rr over TUN: tests/tun.rs.)
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root
//! (otherwise each test prints a message and passes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use lb_common::sched::{self, models, models::ConnView};
use lb_tests::director::{ConnEntry, Director, ServiceSpec};
use lb_tests::lab::HTTP_PORT;
use lb_tests::scenario::{
    counts, finish, lab_with_servers, root_or_skip, row_of, start_configured, start_director,
    tally, teardown, vip_url, vip80, wait_until,
};
use lb_tests::{HeldConnection, Host, Lab};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// One GET of the VIP from the client, from source address `from` (None:
/// the client's own); the name of the real server that answered.
fn curl_vip_from(lab: &Lab, from: Option<Ipv4Addr>) -> String {
    let url = vip_url(lab, "/");
    let mut args = vec![
        "curl".to_owned(),
        "-sS".to_owned(),
        "--max-time".to_owned(),
        "5".to_owned(),
    ];
    if let Some(a) = from {
        args.push("--interface".to_owned());
        args.push(a.to_string());
    }
    args.push(url);
    lab.run(&lab.client().ns, &args)
        .unwrap_or_else(|e| panic!("curl to the VIP from {from:?}: {e:#}"))
        .trim_end()
        .to_owned()
}

/// The real servers in IPVS's list order: the last added first.
fn ipvs_order(lab: &Lab) -> Vec<&Host> {
    lab.reals().iter().rev().collect()
}

// ---- sh --------------------------------------------------------------------

#[test]
fn sh_keeps_each_client_address_on_its_hashed_server() {
    if !root_or_skip("sh") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "sched-sh", 70, 3);
    // More client addresses on the client's eth0; the real servers answer
    // them directly (same segment).
    let extra: Vec<Ipv4Addr> = (11..=18).map(|i| Ipv4Addr::new(10, 70, 0, i)).collect();
    for a in &extra {
        lb_tests::netns::ip(&[
            "-n",
            &lab.client().ns,
            "addr",
            "add",
            &format!("{a}/24"),
            "dev",
            "eth0",
        ])
        .unwrap();
    }
    let director = start_director(&lab, &[ServiceSpec::lab_http(&lab, "sh")]);

    // IPVS's sh: 256 buckets filled in list order by weight, the source
    // address hashed into them (no sh-port: the port plays no part).
    let order = ipvs_order(&lab);
    let table = sched::sh_table(&vec![1; order.len()]);
    let views = vec![ConnView::new(1, 0, 0); order.len()];
    let expected = |client: Ipv4Addr| -> String {
        let i = models::sh_pick(
            &table,
            &views,
            lb_common::ipv4_words(client.octets()),
            0,
            false,
            false,
        )
        .expect("sh picks a server when all are available");
        order[i].name.clone()
    };

    // One client, 20 new connections: one server, the one its address hashes to.
    let client = lab.client().ip;
    let names: Vec<String> = (0..20).map(|_| curl_vip_from(&lab, None)).collect();
    assert_eq!(
        tally(&names),
        counts(&[(&expected(client), 20)]),
        "sh must keep client {client} on one server: {names:?}"
    );

    // Other client addresses: each sticks to its own hashed server, and
    // together they reach more than one server.
    let mut placed = BTreeMap::new();
    for &a in &extra {
        let names: Vec<String> = (0..3).map(|_| curl_vip_from(&lab, Some(a))).collect();
        assert_eq!(
            tally(&names),
            counts(&[(&expected(a), 3)]),
            "client {a}: {names:?}"
        );
        placed.insert(a, names[0].clone());
    }
    let servers: BTreeSet<&String> = placed.values().collect();
    assert!(
        servers.len() >= 2,
        "every client address hashed to one server: {placed:?}"
    );
    eprintln!("sh: {client} -> {}, others: {placed:?}", expected(client));

    // 20 + 8 * 3 connections, all finished: InActConn only, split as placed.
    let total: usize = 20 + extra.len() * 3;
    let rows = wait_until(
        "every finished connection in InActConn",
        Duration::from_secs(5),
        || {
            let rows = director.real_rows().unwrap();
            let done = rows.iter().map(|r| r.inactive).sum::<u64>() == total as u64;
            (done, rows)
        },
    );
    for real in lab.reals() {
        let want = names.iter().filter(|n| **n == real.name).count()
            + placed.values().filter(|n| **n == real.name).count() * 3;
        let row = row_of(&rows, real, HTTP_PORT);
        assert_eq!(
            (row.active, row.inactive),
            (0, want as u64),
            "{}: {rows:#?}",
            real.name
        );
    }
    finish(director);
    teardown(lab);
}

// ---- lc and wlc ----------------------------------------------------------

/// Opens `n` connections to the VIP one after another and holds them open
/// (each idle and ESTABLISHED after its `/whoami`). Before each, `model`
/// is asked where IPVS would place it, given the connections held so far
/// (all of them active) over the servers in IPVS order; the connection must
/// land there. Returns the held connections.
fn hold_and_check(
    lab: &Lab,
    weights_in_config_order: &[u32],
    n: usize,
    model: fn(&[ConnView]) -> Option<usize>,
) -> Vec<HeldConnection> {
    let order = ipvs_order(lab);
    let weights: Vec<u32> = weights_in_config_order.iter().rev().copied().collect();
    let mut held: Vec<HeldConnection> = Vec::new();
    for i in 0..n {
        let views: Vec<ConnView> = order
            .iter()
            .zip(&weights)
            .map(|(real, &w)| {
                let active = held.iter().filter(|c| c.server == real.name).count() as u64;
                ConnView::new(w, active, 0)
            })
            .collect();
        let want = &order[model(&views).expect("a server is available")].name;
        let conn = lab
            .hold_http_connection(&lab.client().ns, vip80(lab))
            .unwrap();
        assert_eq!(
            &conn.server,
            want,
            "connection {} of {n}: IPVS would pick {want} (views in IPVS order {views:?}); so far {:?}",
            i + 1,
            held.iter().map(|c| &c.server).collect::<Vec<_>>()
        );
        held.push(conn);
    }
    held
}

/// `lbctl -L -n` must show exactly the held connections as ActiveConn and
/// nothing inactive; after closing them, ActiveConn 0 and the same numbers
/// as InActConn (FIN_WAIT entries).
fn check_counts_then_close(director: &Director<'_>, lab: &Lab, held: Vec<HeldConnection>) {
    let per_server: BTreeMap<String, u64> = tally(held.iter().map(|c| &c.server))
        .into_iter()
        .map(|(k, v)| (k, v as u64))
        .collect();
    let of = |real: &Host| per_server.get(&real.name).copied().unwrap_or(0);
    let rows = wait_until(
        "ActiveConn = the held connections",
        Duration::from_secs(5),
        || {
            let rows = director.real_rows().unwrap();
            let done = lab.reals().iter().all(|r| {
                let row = row_of(&rows, r, HTTP_PORT);
                (row.active, row.inactive) == (of(r), 0)
            });
            (done, rows)
        },
    );
    eprintln!("held {per_server:?}; lbctl -L -n: {rows:?}");
    let entries = director.connection_entries().unwrap();
    assert_eq!(entries.len(), held.len(), "{entries:#?}");
    assert!(
        entries.iter().all(|e| e.state == "ESTABLISHED"),
        "{entries:#?}"
    );
    // timeout_tcp is 900 s: "14:5x".
    assert!(
        entries.iter().all(|e| (890..=900).contains(&e.expires_in)),
        "{entries:#?}"
    );
    for c in &held {
        let e = entries
            .iter()
            .find(|e| e.source == c.local)
            .unwrap_or_else(|| panic!("no entry for {}: {entries:#?}", c.local));
        let real = lab.reals().iter().find(|r| r.name == c.server).unwrap();
        assert_eq!(
            e.destination,
            SocketAddrV4::new(real.ip, HTTP_PORT),
            "{e:?}"
        );
    }

    for c in held {
        c.close();
    }
    let rows = wait_until(
        "closed connections counted as InActConn (FIN_WAIT)",
        Duration::from_secs(5),
        || {
            let rows = director.real_rows().unwrap();
            let done = lab.reals().iter().all(|r| {
                let row = row_of(&rows, r, HTTP_PORT);
                (row.active, row.inactive) == (0, of(r))
            });
            (done, rows)
        },
    );
    let entries = director.connection_entries().unwrap();
    assert!(
        entries.iter().all(|e| e.state == "FIN_WAIT"),
        "{entries:#?}\n{rows:#?}"
    );
}

#[test]
fn lc_spreads_held_connections_evenly_in_ipvs_order() {
    if !root_or_skip("lc") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "sched-lc", 71, 3);
    let director = start_director(&lab, &[ServiceSpec::lab_http(&lab, "lc")]);
    let held = hold_and_check(&lab, &[1, 1, 1], 6, models::lc);
    let order: Vec<&str> = held.iter().map(|c| c.server.as_str()).collect();
    // Ties go to the first in IPVS order, the last configured: rs3 rs2 rs1, twice.
    assert_eq!(order, ["rs3", "rs2", "rs1", "rs3", "rs2", "rs1"]);
    check_counts_then_close(&director, &lab, held);
    finish(director);
    teardown(lab);
}

#[test]
fn wlc_spreads_held_connections_by_weight() {
    if !root_or_skip("wlc") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "sched-wlc", 72, 3);
    let weights = [3, 2, 1];
    let mut service = ServiceSpec::tcp(vip80(&lab), "wlc");
    for (real, w) in lab.reals().iter().zip(weights) {
        service = service.real(real.ip, w);
    }
    let director = start_director(&lab, &[service]);
    let held = hold_and_check(&lab, &weights, 12, models::wlc);
    eprintln!(
        "wlc order: {:?}",
        held.iter().map(|c| &c.server).collect::<Vec<_>>()
    );
    assert_eq!(
        tally(held.iter().map(|c| &c.server)),
        counts(&[("rs1", 6), ("rs2", 4), ("rs3", 2)])
    );
    check_counts_then_close(&director, &lab, held);
    finish(director);
    teardown(lab);
}

// ---- persistence -----------------------------------------------------------

/// The persistence template of `client` in a `-c` listing.
fn template_of(entries: &[ConnEntry], client: Ipv4Addr) -> Option<&ConnEntry> {
    entries
        .iter()
        .find(|e| e.is_template() && *e.source.ip() == client)
}

#[test]
fn persistence_keeps_a_client_until_its_template_expires() {
    if !root_or_skip("persistence") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "sched-persist", 73, 2);
    let service = ServiceSpec::lab_http(&lab, "rr").with("persistence_timeout = 3");
    let mut director = Director::new(&lab).unwrap();
    director.director_setting("timeout_tcpfin = 2");
    let director = start_configured(director, &[service]);
    let client = lab.client().ip;

    // rr alone would alternate; the template keeps all ten on one server.
    let names: Vec<String> = (0..10).map(|_| curl_vip_from(&lab, None)).collect();
    let last_curl = Instant::now();
    let first = names[0].clone();
    assert_eq!(tally(&names), counts(&[(&first, 10)]), "{names:?}");
    let server = lab
        .reals()
        .iter()
        .find(|r| r.name == first)
        .unwrap()
        .clone();
    let other = lab
        .reals()
        .iter()
        .find(|r| r.name != first)
        .unwrap()
        .clone();

    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    let service_line = format!("TCP  {} rr persistent 3", vip80(&lab));
    assert!(
        listing.lines().any(|l| l.trim_end() == service_line),
        "no {service_line:?} in\n{listing}"
    );

    // The template: client address, port 0, ASSURED (it controlled
    // established connections) or NONE, toward the chosen server.
    let listing = director.lbctl(&["-L", "-n", "-c"]).unwrap();
    eprintln!("{listing}");
    let entries = lb_tests::director::parse_connection_entries(&listing).unwrap();
    let template = template_of(&entries, client)
        .unwrap_or_else(|| panic!("no template for {client}:\n{listing}"));
    assert_eq!(template.protocol, "TCP", "{listing}");
    assert!(
        ["ASSURED", "NONE"].contains(&template.state.as_str()),
        "{listing}"
    );
    assert_eq!(template.virtual_, vip80(&lab), "{listing}");
    assert_eq!(
        template.destination,
        SocketAddrV4::new(server.ip, HTTP_PORT),
        "{listing}"
    );
    assert!(template.expires_in <= 3, "{listing}");
    let line = listing
        .lines()
        .find(|l| l.contains(&format!("{client}:0 ")))
        .unwrap();
    assert!(
        line.starts_with("TCP 00:0")
            && line.contains(&format!("{:<18} {}", format!("{client}:0"), vip80(&lab))),
        "template line not in ipvsadm's layout: {line:?}"
    );
    for e in entries.iter().filter(|e| !e.is_template()) {
        assert_eq!(e.destination, template.destination, "{listing}");
    }
    // IPVS marks the template ASSURED as soon as a connection it controls
    // is established (ip_vs_control_assure_ct); lbd at its next sweep.
    wait_until(
        "the template to become ASSURED",
        Duration::from_secs(3),
        || {
            let entries = director.connection_entries().unwrap();
            let assured = template_of(&entries, client).is_some_and(|t| t.state == "ASSURED");
            (assured, entries)
        },
    );

    // PersistConn counts the template.
    let listing = director.lbctl(&["-L", "-n", "--persistent-conn"]).unwrap();
    for (real, want) in [(&server, "1"), (&other, "0")] {
        let row = listing
            .lines()
            .find(|l| l.starts_with(&format!("  -> {}:{HTTP_PORT} ", real.ip)))
            .unwrap_or_else(|| panic!("{listing}"));
        assert_eq!(
            row.split_whitespace().nth(3),
            Some(want),
            "PersistConn of {}:\n{listing}",
            real.ip
        );
    }

    // While FIN_WAIT entries remain (2 s), they keep the template; it goes
    // at the latest 3 s after they do (plus a sweep or two). IPVS itself
    // lets it go 3 s after its last use here, the FIN_WAIT entries being
    // gone by then.
    let start = last_curl;
    let gone_after = wait_until(
        "the template to expire",
        Duration::from_secs(2 + 3 + 3),
        || {
            let entries = director.connection_entries().unwrap();
            let conns = entries.iter().filter(|e| !e.is_template()).count();
            let template = template_of(&entries, client).is_some();
            assert!(
                template || conns == 0,
                "the template went while {conns} of its connections remained: {entries:#?}"
            );
            (!template, (start.elapsed(), entries))
        },
    )
    .0;
    eprintln!("template gone {gone_after:?} after the last connection");
    assert!(
        gone_after >= Duration::from_secs(3),
        "the template went before its 3 s: {gone_after:?}"
    );
    let rows = director.real_rows().unwrap();
    for real in lab.reals() {
        let row = row_of(&rows, real, HTTP_PORT);
        assert_eq!((row.active, row.inactive), (0, 0), "{rows:#?}");
    }

    // Scheduled anew: rr made one pick for the ten (the template took the
    // rest), so the next connection goes to the other server, and a new
    // template with it.
    assert_eq!(curl_vip_from(&lab, None), other.name);
    let entries = director.connection_entries().unwrap();
    let template = template_of(&entries, client).unwrap_or_else(|| panic!("{entries:#?}"));
    assert_eq!(
        template.destination,
        SocketAddrV4::new(other.ip, HTTP_PORT),
        "{entries:#?}"
    );
    finish(director);
    teardown(lab);
}
