//! Active-active directors behind ECMP: a router (BIRD, BGP multipath, L4
//! hash) in front of three directors, each running lbd and gobgpd; lbd
//! announces the VIP through gobgpd. Real servers by DR on the directors'
//! segment; the client behind the router.
//!
//! What must hold: every director carries traffic; a stopped director
//! (SIGTERM) withdraws its route before it stops forwarding, and no
//! request fails; a dead director (host gone) leaves the router within
//! the hold time; long-lived connections that were on a director that
//! left go on through another, to the same real server (mh with the
//! stateless fallback); a director back takes traffic again without
//! breaking any; a director whose health checks all fail (a partition)
//! withdraws its route and nothing else changes. The three directors'
//! mh tables are the same, slot for slot, also after a real server is
//! added; connection sync between all three keeps the flows that addition
//! would move on their servers.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`.
//! Needs root, BIRD 2 and GoBGP (`cargo xtask setup` installs them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::scenario::{root_or_skip, vip80, vip_url};
use lb_tests::{HeldConnection, Host, Lab, LabSpec, ProcHandle};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
/// BIRD's hold time in the lab (see `lab::bgp`), and slack for the
/// kernel route to follow.
const HOLD_TIME: Duration = Duration::from_secs(3);
const SLACK: Duration = Duration::from_secs(2);
/// lbd's drain time after withdrawing (long enough to watch it forward on).
const DRAIN: Duration = Duration::from_secs(5);
const HELD: usize = 24;
/// Sync's refresh period: how soon a director that comes back has the
/// others' entries.
const REFRESH: Duration = Duration::from_secs(1);

fn tools_present() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["bird", "birdc", "gobgpd", "gobgp"].iter().all(|t| std::env::split_paths(&path).any(|d| d.join(t).is_file()))
}

/// The HTTP service on the first `reals` real servers of the lab, by mh
/// (with the port in the hash, so one client's flows spread), with the
/// stateless fallback and a fast TCP health check.
fn service(lab: &Lab, reals: usize) -> ServiceSpec {
    unchecked_service(lab, reals)
        .check("kind = \"tcp\"")
        .check("interval = \"200ms\"")
        .check("connect_timeout = \"300ms\"")
        .check("retry = 1")
        .check("delay_before_retry = \"200ms\"")
        .check("rise = 2")
}

/// [`service`] without a health check (it holds its quorum from the start).
fn unchecked_service(lab: &Lab, reals: usize) -> ServiceSpec {
    let mut s =
        ServiceSpec::tcp(vip80(lab), "mh").with("sched_flags = [\"mh-port\"]").with("stateless_fallback = true");
    for real in &lab.reals()[..reals] {
        s = s.real(real.ip, 1);
    }
    s
}

/// lbd on `host` with [`service`] over two real servers, `[bgp]` through
/// the namespace's gobgpd, and `[sync]` with the other directors; without
/// `sync`, neither sync nor health checks.
fn director<'a>(lab: &'a Lab, host: &Host, sync: bool) -> Director<'a> {
    let mut d = Director::on_host(lab, host).unwrap();
    d.add_section(&format!("[bgp]\ndrain_time = \"{}s\"\ncheck_interval = \"1s\"\n", DRAIN.as_secs()));
    if !sync {
        d.write_config(&[unchecked_service(lab, 2)]).unwrap();
        return d;
    }
    let peers: Vec<String> =
        lab.directors().iter().filter(|h| h.name != host.name).map(|h| format!("\"{}\"", h.ip)).collect();
    d.add_section(&format!(
        "[sync]\ninterface = \"eth0\"\ntransport = \"unicast\"\npeers = [{}]\nkey = \"active active test key 0123456789\"\n\
         scan_interval = \"100ms\"\nrefresh_period = \"{}s\"\n",
        peers.join(", "),
        REFRESH.as_secs()
    ));
    d.write_config(&[service(lab, 2)]).unwrap();
    d
}

fn start(d: &mut Director<'_>) {
    d.start().unwrap_or_else(|e| panic!("{e:#}\n{}", d.log()));
}

fn hops(hosts: &[&Host]) -> BTreeSet<Ipv4Addr> {
    hosts.iter().map(|h| h.ip).collect()
}

/// Every held connection answers on its real server.
fn all_go_on(held: &mut [HeldConnection], when: &str) {
    for (i, c) in held.iter_mut().enumerate() {
        let body = c.ask("/whoami").unwrap_or_else(|e| panic!("{when}: held connection {i} ({}): {e:#}", c.local));
        let server = body.split_whitespace().next().unwrap_or_default();
        assert_eq!(server, c.server, "{when}: held connection {i} ({}) changed real server", c.local);
    }
}

/// The sum over `directors` of a datapath counter.
fn counter(directors: &[&Director<'_>], name: &str) -> u64 {
    directors.iter().map(|d| d.counters().unwrap().get(name).copied().unwrap_or(0)).sum()
}

fn can_run() -> bool {
    if !root_or_skip("active_active") {
        return false;
    }
    if !tools_present() {
        eprintln!("skipped: needs bird, birdc, gobgpd and gobgp (cargo xtask setup installs them)");
        return false;
    }
    true
}

/// Without sync, the stateless fallback alone: the flows of a director
/// that stops go on through the others, each installed there from its
/// next packet. (No health checks either: such a service holds its quorum
/// from the start, and its VIP is announced.)
#[test]
fn without_sync_the_fallback_carries_a_stopped_directors_flows() {
    if !can_run() {
        return;
    }
    let lab = Lab::build(LabSpec::new("ecmp-nosync").remote_client().directors(3).without_static_vip().subnet_index(73))
        .unwrap();
    lab.start_http_servers_with(Path::new(LAB_SERVER)).unwrap();
    let hosts: Vec<Host> = lab.directors().to_vec();
    let _bird = lab.start_bird_router(&hosts).unwrap();
    let speakers: Vec<ProcHandle> = hosts.iter().map(|h| lab.start_gobgpd(h).unwrap()).collect();
    let mut directors: Vec<Director<'_>> = hosts.iter().map(|h| director(&lab, h, false)).collect();
    for d in &mut directors {
        start(d);
    }
    let all: Vec<&Host> = hosts.iter().collect();
    lab.wait_for_next_hops(lab.vip(), &hops(&all), Duration::from_secs(30)).unwrap();
    let mut held: Vec<HeldConnection> =
        (0..HELD).map(|_| lab.hold_http_connection(&lab.client().ns, vip80(&lab)).unwrap()).collect();
    let on_last = {
        let entries = directors[2].connection_entries().unwrap();
        held.iter().filter(|c| entries.iter().any(|e| e.source == c.local)).count()
    };
    let mut last = directors.pop().unwrap();
    last.stop().unwrap();
    lab.wait_for_next_hops(lab.vip(), &hops(&all[..2]), SLACK).unwrap();
    all_go_on(&mut held, "director3 stopped");
    let taken: u64 = counter(&directors.iter().collect::<Vec<_>>(), "conn_mid_flow");
    eprintln!("{on_last} of {HELD} held connections were on director3; {taken} taken over by the fallback");
    assert!(on_last > 0, "no held connection went through director3: nothing was shown");
    // Linux's ECMP (hash-threshold) moves flows between the directors that
    // stay, too: those are taken over the same way.
    assert!(taken >= on_last as u64, "each of director3's flows installed on another director from its next packet");
    for c in held {
        c.close();
    }

    // gobgpd hangs (stopped): director1's lbd cannot withdraw on SIGTERM,
    // so it leaves the datapath attached under the route, and says so.
    // SAFETY: kill(2) on a process of this lab.
    unsafe { libc::kill(speakers[0].pid as i32, libc::SIGSTOP) };
    let status = directors[0].stop_within(Duration::from_secs(30)).unwrap();
    unsafe { libc::kill(speakers[0].pid as i32, libc::SIGCONT) };
    let log = directors[0].log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("the daemon did not take every withdrawal"), "{log}");
    assert!(directors[0].xdp_attached().unwrap(), "the datapath left under a route:\n{log}");
    assert!(lab.router_next_hops(lab.vip()).unwrap().contains(&hosts[0].ip));
    directors[0].remove_pins().unwrap();
    directors[1].stop().unwrap();
}

#[test]
fn directors_behind_ecmp_share_flows_and_leave_without_breaking_them() {
    if !can_run() {
        return;
    }
    let lab =
        Lab::build(LabSpec::new("ecmp").remote_client().directors(3).reals(3).without_static_vip().subnet_index(72))
            .unwrap();
    lab.start_http_servers_with(Path::new(LAB_SERVER)).unwrap();
    let hosts: Vec<Host> = lab.directors().to_vec();
    let (h1, h2, h3) = (&hosts[0], &hosts[1], &hosts[2]);
    let _bird = lab.start_bird_router(&hosts).unwrap();
    let mut speakers: BTreeMap<String, ProcHandle> =
        hosts.iter().map(|h| (h.name.clone(), lab.start_gobgpd(h).unwrap())).collect();
    let mut d1 = director(&lab, h1, true);
    let mut d2 = director(&lab, h2, true);
    let mut d3 = director(&lab, h3, true);
    for d in [&mut d1, &mut d2, &mut d3] {
        start(d);
    }
    let vip = lab.vip();
    let took = lab.wait_for_next_hops(vip, &hops(&[h1, h2, h3]), Duration::from_secs(30)).unwrap();
    eprintln!("the router has three next hops to {vip} after {took:?}");

    // The same mh table on every director, slot for slot.
    let tables = d1.sched_tables().unwrap();
    let key = vip80(&lab).to_string();
    let slots = &tables[&key];
    assert_eq!(slots.iter().collect::<BTreeSet<_>>().len(), 2, "both real servers in the table");
    assert_eq!(d2.sched_tables().unwrap(), tables, "director2's mh table");
    assert_eq!(d3.sched_tables().unwrap(), tables, "director3's mh table");

    // New connections spread over the directors and the real servers.
    let url = vip_url(&lab, "/");
    let mut servers = BTreeSet::new();
    for i in 0..60 {
        let body = lab.curl(&url).unwrap_or_else(|e| panic!("curl {i} through ECMP: {e:#}"));
        servers.insert(body.trim().to_owned());
    }
    assert_eq!(servers.len(), 2, "{servers:?}");
    for d in [&d1, &d2, &d3] {
        assert!(counter(&[d], "tx_dr") > 0, "{} carried no traffic", d.host().name);
    }
    let mut held: Vec<HeldConnection> =
        (0..HELD).map(|_| lab.hold_http_connection(&lab.client().ns, vip80(&lab)).unwrap()).collect();

    // A third real server on every director: the mh table changes, the
    // same everywhere; new flows reach it; the held ones stay where they
    // are (their entries, on every director by sync).
    std::thread::sleep(REFRESH);
    for d in [&d1, &d2, &d3] {
        d.write_config(&[service(&lab, 3)]).unwrap();
        let log = d.reload().unwrap();
        assert!(!log.contains("reload refused"), "{log}");
    }
    let tables = d1.sched_tables().unwrap();
    assert_eq!(tables[&key].iter().collect::<BTreeSet<_>>().len(), 3, "three real servers in the table");
    assert_eq!(d2.sched_tables().unwrap(), tables, "director2's mh table with three");
    assert_eq!(d3.sched_tables().unwrap(), tables, "director3's mh table with three");
    let mut servers = BTreeSet::new();
    for i in 0..60 {
        servers.insert(lab.curl(&url).unwrap_or_else(|e| panic!("curl {i} with three: {e:#}")).trim().to_owned());
    }
    assert_eq!(servers.len(), 3, "{servers:?}");
    all_go_on(&mut held, "a real server added");

    // SIGTERM on director3: the route goes first, lbd forwards on for the
    // drain time, no request fails meanwhile.
    let mid_flow_before = counter(&[&d1, &d2], "conn_mid_flow");
    let stop = AtomicBool::new(false);
    let failures = std::thread::scope(|s| {
        let requests = s.spawn(|| {
            let mut failed = Vec::new();
            for i in 0..400 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Err(e) = lab.curl(&url) {
                    failed.push(format!("request {i}: {e:#}"));
                }
            }
            failed
        });
        d3.signal(libc::SIGTERM).unwrap();
        let gone = lab.wait_for_next_hops(vip, &hops(&[h1, h2]), SLACK).unwrap();
        assert!(d3.is_running(), "lbd on director3 exited before the router let go of it");
        eprintln!("SIGTERM: the router dropped director3 after {gone:?}, lbd still forwarding");
        // Its SIGTERM already runs: the drain time, then the detach.
        d3.stop_within(DRAIN + Duration::from_secs(5)).unwrap();
        stop.store(true, Ordering::Relaxed);
        requests.join().unwrap()
    });
    assert!(failures.is_empty(), "requests failed while director3 stopped: {failures:#?}");
    let log = d3.log();
    let withdrew = log.find("BGP: withdrew").unwrap_or_else(|| panic!("no withdrawal in:\n{log}"));
    let detached = log.find("detached from").unwrap_or_else(|| panic!("no detach in:\n{log}"));
    assert!(withdrew < detached, "withdrawn after detaching:\n{log}");
    all_go_on(&mut held, "director3 stopped");
    let taken_by_fallback = counter(&[&d1, &d2], "conn_mid_flow") - mid_flow_before;
    eprintln!("director3's flows went on: the others had their entries by sync ({taken_by_fallback} by the fallback)");

    // Director2's host dies: its link goes, its processes with it. The
    // router notices at the hold time.
    let port = format!("p-{}", h2.name);
    lab.run(lab.switch_ns(), &["ip", "link", "set", &port, "down"]).unwrap();
    d2.kill().unwrap();
    lab.kill(&speakers.remove(&h2.name).unwrap()).unwrap();
    let gone = lab.wait_for_next_hops(vip, &hops(&[h1]), HOLD_TIME + SLACK).unwrap();
    eprintln!("director2 died: the router dropped it after {gone:?}");
    all_go_on(&mut held, "director2 dead");

    // Both come back: director2 adopts its pinned table, director3 starts
    // afresh; the flows spread again and none breaks.
    lab.run(lab.switch_ns(), &["ip", "link", "set", &port, "up"]).unwrap();
    speakers.insert(h2.name.clone(), lab.start_gobgpd(h2).unwrap());
    start(&mut d2);
    start(&mut d3);
    let back = lab.wait_for_next_hops(vip, &hops(&[h1, h2, h3]), Duration::from_secs(30)).unwrap();
    eprintln!("directors 2 and 3 back in the router after {back:?}");
    // Director3 started afresh: the others' refresh gives it their entries.
    std::thread::sleep(REFRESH * 2);
    all_go_on(&mut held, "directors back");
    // Adopted (director2) or built afresh (director3): the same table.
    let tables = d1.sched_tables().unwrap();
    assert_eq!(d2.sched_tables().unwrap(), tables, "director2's adopted mh table");
    assert_eq!(d3.sched_tables().unwrap(), tables, "director3's new mh table");
    for i in 0..30 {
        lab.curl(&url).unwrap_or_else(|e| panic!("curl {i} after the directors came back: {e:#}"));
    }
    for d in [&d2, &d3] {
        assert!(counter(&[d], "tx_dr") > 0, "{} took no traffic back", d.host().name);
    }

    // A partition between director1 and the real servers: its checks
    // fail, it withdraws; the others keep announcing and serving.
    for real in lab.reals() {
        lab.run(&real.ns, &["ip", "route", "add", "blackhole", &format!("{}/32", h1.ip)]).unwrap();
    }
    let gone = lab.wait_for_next_hops(vip, &hops(&[h2, h3]), Duration::from_secs(10)).unwrap();
    eprintln!("director1 lost its real servers: withdrawn after {gone:?}");
    assert!(d1.is_running());
    all_go_on(&mut held, "director1 partitioned");
    for i in 0..20 {
        lab.curl(&url).unwrap_or_else(|e| panic!("curl {i} with director1 partitioned: {e:#}"));
    }
    for real in lab.reals() {
        lab.run(&real.ns, &["ip", "route", "del", "blackhole", &format!("{}/32", h1.ip)]).unwrap();
    }
    lab.wait_for_next_hops(vip, &hops(&[h1, h2, h3]), Duration::from_secs(10)).unwrap();
    // Its failed servers kept their places: its table is the others' still.
    assert_eq!(d1.sched_tables().unwrap(), d2.sched_tables().unwrap(), "director1's mh table after the partition");
    all_go_on(&mut held, "director1 healed");

    for c in held {
        c.close();
    }
    for d in [&mut d1, &mut d2, &mut d3] {
        d.stop().unwrap();
    }
    d2.remove_pins().unwrap();
}
