//! `lbctl -c`'s filters on a table of a million entries, and the
//! connection table's evictions in the metrics, in the namespace lab.
//!
//! * The pinned connection table of a running lbd is filled with
//!   1,000,000 entries written straight into the map (as the datapath
//!   would hold them, stamped with the datapath's clock), a handful of them
//!   distinct; `--vip`, `--real` and `--client`, alone and together, list
//!   exactly those, in ipvsadm's format; the unfiltered listing lists all.
//! * While a filtered listing walks the million entries, page by page,
//!   `lbctl -L -n` answers, again and again, before the listing ends.
//! * A SYN flood through a small table: `lb_conn_table_evictions_total`
//!   comes to what the datapath inserted (`conn_new`) less what the table
//!   holds.
//!
//! Build lbd, lbctl and lab-server first (`cargo build -p lb-userspace -p
//! lbctl -p lb-tests --bins`). Needs root (otherwise it passes with a
//! message).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, Map, MapData};
use lb_common::{Conn, FlowKey, RealServer, Service, ServiceKey, conn_state, map_name};
use lb_tests::director::{Director, ServiceSpec, userspace_binary};
use lb_tests::flood::SynFlood;
use lb_tests::scenario::{
    finish, lab_with_servers, root_or_skip, start_configured, teardown, vip_url, wait_until,
};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const ENTRIES: u32 = 1_000_000;
/// Room above the entries: the LRU's free lists are per CPU, and a table
/// filled to its last slot evicts.
const TABLE: u32 = 1 << 20;
const SECOND_PORT: u16 = 8080;
const TIMEOUT: u32 = 900;

#[test]
fn filters_list_exactly_their_entries_of_a_million_while_lbd_answers() {
    if !root_or_skip("conn filters") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "conn-filter", 225, 2);
    let (vip, rs1, rs2) = (lab.vip(), lab.real(0).ip, lab.real(1).ip);
    let web = ServiceSpec::lab_http(&lab, "rr");
    let mut second = ServiceSpec::tcp(SocketAddrV4::new(vip, SECOND_PORT), "rr");
    second.reals = web.reals.clone();
    let mut director = Director::new(&lab).unwrap();
    director.conn_table_size = TABLE;
    let director = start_configured(director, &[web, second]);

    let mut table: HashMap<MapData, FlowKey, Conn> = HashMap::try_from(Map::LruHashMap(pinned(
        &director.pin_path,
        map_name::CONN_TABLE,
    )))
    .unwrap();
    // The datapath's clock, from a connection of its own.
    lab.curl(&vip_url(&lab, "/whoami")).unwrap();
    let client = lab.client().ip;
    let (own_key, own) = table
        .iter()
        .filter_map(Result::ok)
        .find(|(k, _)| k.src[0] == u32::from(client).to_be())
        .expect("the curl's connection in the table");
    table.remove(&own_key).unwrap();
    let now = own.last_seen_ns;
    let written_at = Instant::now();

    let real_id = |port: u16, real: Ipv4Addr| real_id(&director.pin_path, vip, port, real);
    let entry = |real: u32| Conn {
        real_id: real,
        state: conn_state::ESTABLISHED,
        timeout: TIMEOUT,
        last_seen_ns: now,
        ..Conn::default()
    };
    // The distinct ones: (client, its port, VIP port, real server).
    let special: [(Ipv4Addr, u16, u16, Ipv4Addr); 5] = [
        (Ipv4Addr::new(192, 0, 2, 1), 5000, 80, rs2),
        (Ipv4Addr::new(192, 0, 2, 1), 5001, 80, rs1),
        (Ipv4Addr::new(192, 0, 2, 2), 6000, SECOND_PORT, rs2),
        (Ipv4Addr::new(192, 0, 2, 3), 6001, SECOND_PORT, rs1),
        (Ipv4Addr::new(192, 0, 2, 4), 7000, 80, rs2),
    ];
    for &(src, sport, vport, real) in &special {
        table
            .insert(key(src, sport, vip, vport), entry(real_id(vport, real)), 0)
            .unwrap();
    }
    // The rest: clients of 100.64.0.0/10 to VIP:80 on rs1.
    let bulk = entry(real_id(80, rs1));
    let started = Instant::now();
    for i in 0..ENTRIES - special.len() as u32 {
        table
            .insert(key(Ipv4Addr::from(0x6440_0000 + i), 1024, vip, 80), bulk, 0)
            .unwrap();
    }
    eprintln!("{ENTRIES} entries written in {:?}", started.elapsed());

    // Each filter: exactly its entries, in lbctl -c's order.
    let line = |(src, sport, vport, real): (Ipv4Addr, u16, u16, Ipv4Addr)| {
        format!(
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            "TCP",
            "EXPIRE",
            "ESTABLISHED",
            format!("{src}:{sport}"),
            format!("{vip}:{vport}"),
            format!("{real}:{vport}")
        )
    };
    let (rs1s, rs2s, vips) = (rs1.to_string(), rs2.to_string(), vip.to_string());
    let cases: Vec<(Vec<String>, Vec<usize>)> = vec![
        (
            vec!["--vip".into(), format!("{vip}:{SECOND_PORT}")],
            vec![2, 3],
        ),
        (vec!["--real".into(), rs2s.clone()], vec![0, 4, 2]),
        (
            vec!["--real".into(), format!("{rs2}:{SECOND_PORT}")],
            vec![2],
        ),
        (vec!["--client".into(), "192.0.2.1".into()], vec![0, 1]),
        (vec!["--client=192.0.2.1:5001".into()], vec![1]),
        (
            vec![
                "--vip".into(),
                format!("{vip}:80"),
                "--real".into(),
                rs2s.clone(),
                "--client".into(),
                "192.0.2.1".into(),
            ],
            vec![0],
        ),
        (
            vec![
                "--client".into(),
                "192.0.2.3".into(),
                "--vip".into(),
                vips.clone(),
            ],
            vec![3],
        ),
        (
            vec![
                "--real".into(),
                format!("{rs1s}:{SECOND_PORT}"),
                "--vip".into(),
                vips.clone(),
            ],
            vec![3],
        ),
        (vec!["--client".into(), "192.0.2.99".into()], vec![]),
    ];
    for (filters, want) in &cases {
        let mut args = vec!["-L", "-n", "-c"];
        args.extend(filters.iter().map(String::as_str));
        let started = Instant::now();
        let out = director.lbctl(&args).unwrap();
        eprintln!("lbctl {args:?}: {:?}", started.elapsed());
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("IPVS connection entries"), "{out}");
        assert_eq!(
            lines.next(),
            Some("pro expire state       source             virtual            destination"),
            "{out}"
        );
        let got: Vec<String> = lines.map(|l| masked_expiry(l, written_at)).collect();
        let want: Vec<String> = want.iter().map(|&i| line(special[i])).collect();
        assert_eq!(got, want, "lbctl {args:?}:\n{out}");
    }
    // A filter with anything but -c is refused.
    let out = director
        .lbctl_output(&["-L", "-n", "--vip", &vips])
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = director
        .lbctl_output(&["-L", "-n", "-c", "--vip", "[2001:db8::1"])
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--vip"),
        "{out:?}"
    );

    // While a filtered listing walks the million entries, lbd answers
    // others: `lbctl -L -n`, again and again, each before the listing ends.
    let lbctl = userspace_binary("lbctl").unwrap();
    let socket = director.socket.to_str().unwrap().to_owned();
    let mut listing = Command::new(&lbctl)
        .args([
            "--socket",
            &socket,
            "-L",
            "-n",
            "-c",
            "--client",
            "192.0.2.1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut answered_during = 0;
    let mut answers = Vec::new();
    loop {
        let asked = Instant::now();
        let out = Command::new(&lbctl)
            .args(["--socket", &socket, "-L", "-n"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&format!("TCP  {vip}:{SECOND_PORT} rr"))
        );
        answers.push(asked.elapsed());
        if listing.try_wait().unwrap().is_some() {
            break;
        }
        answered_during += 1;
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the listing does not end"
        );
    }
    let listed_in = started.elapsed();
    let out = listing.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2 + 2,
        "{out:?}"
    );
    eprintln!(
        "the filtered listing took {listed_in:?}; lbctl -L -n answered {answered_during} times meanwhile \
         (slowest {:?})",
        answers.iter().max().unwrap()
    );
    assert!(
        answered_during >= 2,
        "lbctl -L -n answered only {answered_during} times while the listing ran ({listed_in:?})"
    );

    // Unfiltered, as ever: every entry once.
    let started = Instant::now();
    let out = director.lbctl_output(&["-L", "-n", "-c"]).unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "unfiltered: {} bytes in {:?}",
        text.len(),
        started.elapsed()
    );
    assert_eq!(text.lines().count(), 2 + ENTRIES as usize);
    let listed: Vec<String> = text
        .lines()
        .skip(2)
        .map(|l| masked_expiry(l, written_at))
        .collect();
    for i in 0..special.len() {
        assert!(
            listed.contains(&line(special[i])),
            "no {} in the unfiltered listing",
            line(special[i])
        );
    }
    // In lbctl -c's order: VIP:80's clients, then VIP:8080's.
    assert_eq!(listed.last().unwrap(), &line(special[3]));

    finish(director);
    teardown(lab);
}

#[test]
fn evictions_are_what_was_inserted_less_what_the_table_holds() {
    if !root_or_skip("conn table evictions") {
        return;
    }
    const SMALL: u32 = 4096;
    const LISTEN: &str = "127.0.0.1:9469";
    let lab = lab_with_servers(LAB_SERVER, "conn-evict", 226, 2);
    let mut director = Director::new(&lab).unwrap();
    director.conn_table_size = SMALL;
    director.add_section(&format!("[metrics]\nlisten = \"{LISTEN}\"\n"));
    let director = start_configured(director, &[ServiceSpec::lab_http(&lab, "rr")]);
    let ns = lab.director().ns.clone();
    let scrape = || {
        lab.run(&ns, &["curl", "-sf", &format!("http://{LISTEN}/metrics")])
            .unwrap()
    };
    let sample = |text: &str, series: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    };
    assert_eq!(
        sample(&scrape(), "lb_conn_table_evictions_total"),
        Some(0.0)
    );

    let flood = SynFlood::start(
        &lab.client().ns,
        lab.client().mac,
        lab.director().mac,
        SocketAddrV4::new(lab.vip(), 80),
    )
    .unwrap();
    while flood.sent() < u64::from(SMALL) * 8 && flood.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = flood.stop().unwrap();
    assert!(
        stats.sent >= u64::from(SMALL) * 8,
        "the flood sent only {}",
        stats.sent
    );
    // Passes of a small table take a second each; the counts' gap is closed
    // after three that agree.
    let (evictions, inserted, live) =
        wait_until("the evictions counted", Duration::from_secs(30), || {
            let text = scrape();
            let inserted = director.counters().unwrap()["conn_new"] as f64;
            let evictions = sample(&text, "lb_conn_table_evictions_total").unwrap_or(-1.0);
            let live = sample(&text, "lb_conn_table_entries").unwrap_or(-1.0);
            (
                evictions > 0.0 && evictions == inserted - live,
                (evictions, inserted, live),
            )
        });
    eprintln!(
        "{} SYNs; {inserted} inserted, {live} live, {evictions} evicted",
        stats.sent
    );
    assert!(live <= f64::from(SMALL) && inserted > f64::from(SMALL) * 2.0);
    let text = scrape();
    assert!(
        text.contains("# TYPE lb_conn_table_evictions_total counter")
            && text.contains(
                "# HELP lb_conn_table_evictions_total Entries the connection table's LRU evicted"
            ),
        "{text}"
    );
    finish(director);
    teardown(lab);
}

fn key(src: Ipv4Addr, sport: u16, vip: Ipv4Addr, vport: u16) -> FlowKey {
    FlowKey {
        src: [u32::from(src).to_be(), 0, 0, 0],
        dst: [u32::from(vip).to_be(), 0, 0, 0],
        sport: sport.to_be(),
        dport: vport.to_be(),
        protocol: 6,
        family: 2,
        ..FlowKey::default()
    }
}

/// The line with its expiry (mm:ss) checked against the entries' timeout
/// and the time since they were stamped, and replaced by `EXPIRE`.
fn masked_expiry(line: &str, stamped: Instant) -> String {
    let expire = line.get(4..10).unwrap_or_default().trim_end();
    let (mm, ss) = expire
        .split_once(':')
        .unwrap_or_else(|| panic!("no expiry in {line:?}"));
    let left = mm.parse::<u32>().unwrap() * 60 + ss.parse::<u32>().unwrap();
    let elapsed = stamped.elapsed().as_secs() as u32;
    assert!(
        left <= TIMEOUT && left + elapsed + 2 >= TIMEOUT,
        "{line:?}: {left} s left {elapsed} s after a {TIMEOUT} s stamp"
    );
    format!("{}EXPIRE{}", &line[..4], &line[10..])
}

/// The id of `real`'s slot in the service VIP:`port`, from the pinned maps.
fn real_id(pins: &Path, vip: Ipv4Addr, port: u16, real: Ipv4Addr) -> u32 {
    let services: HashMap<MapData, ServiceKey, Service> =
        HashMap::try_from(Map::HashMap(pinned(pins, map_name::SERVICES))).unwrap();
    let service = services
        .iter()
        .filter_map(Result::ok)
        .find(|(k, _)| k.addr[0] == u32::from(vip).to_be() && u16::from_be(k.port) == port)
        .map(|(_, s)| s.id)
        .unwrap_or_else(|| panic!("no service {vip}:{port}"));
    let reals: Array<MapData, RealServer> =
        Array::try_from(Map::Array(pinned(pins, map_name::REALS))).unwrap();
    (0..reals.len())
        .find(|&i| {
            reals
                .get(&i, 0)
                .is_ok_and(|r| r.service_id == service && r.addr[0] == u32::from(real).to_be())
        })
        .unwrap_or_else(|| panic!("no real server {real} in {vip}:{port}"))
}

fn pinned(dir: &Path, name: &str) -> MapData {
    lb_tests::director::open_pinned(dir, name).unwrap()
}
