//! Failover end to end (issue 5): two directors on the client segment, each
//! running lbd with a VRRP instance for the VIP, real servers as in the
//! other lab tests (DR: they answer the client directly).
//!
//! * A master crash (SIGKILL, so no priority-0 advert) moves the VIP to the
//!   backup within its master-down interval; the new master's gratuitous
//!   ARPs move the client; requests through the VIP work again; the old
//!   master takes the VIP back when it returns with `preempt`, not with
//!   `preempt = false` (keepalived's `nopreempt`).
//! * Connections open through the VIP before the crash go on to the same
//!   real server with connection sync, and are reset without it.
//! * lbd beside Debian's keepalived, each as master and as backup, VRRPv2
//!   (with simple-text authentication) and VRRPv3: election, crash
//!   failover, preemption, `nopreempt`, and a clean stop's hand-over.
//! * Failover time, from the SIGKILL to the first request answered through
//!   the VIP, for advert intervals of 1 s and 0.1 s (printed).
//!
//! A SIGKILLed lbd leaves its XDP program attached (the link is pinned) and
//! the VIP on its interface, as a crash does. Where a test needs the dead
//! director to stop forwarding it removes that pin dir, which detaches the
//! program. keepalived is run only for the VRRP part (`-P`): it moves the
//! VIP and forwards nothing; lbd on the other director forwards.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs root
//! (otherwise each test prints a message and passes) and, for the
//! interoperability tests, keepalived (skipped with a message if missing).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail, ensure};
use lb_tests::director::{Director, ServiceSpec};
use lb_tests::keepalived::{self, Keepalived};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns::{self, ArpWatch, MacAddr, watch_arp};
use lb_tests::scenario::{finish, root_or_skip, vip_url, vip80};
use lb_tests::{HeldConnection, Host, Lab, LabSpec};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
const VRID: u8 = 51;
/// Gratuitous ARPs per address when a director becomes master (lbd and keepalived).
const GARP_REPEAT: usize = 3;
/// Allowed on top of a master-down interval for a takeover to be seen: the
/// polling (lbctl or `ip` runs, ~10-30 ms each) and a busy machine.
const TAKEOVER_SLACK: Duration = Duration::from_millis(700);
/// Allowed on top of a master-down interval for the first answer through
/// the VIP: the gratuitous ARPs reaching the client, the probe's retry
/// period and the request itself.
const ANSWER_SLACK: Duration = Duration::from_millis(800);
/// The connection-sync key both directors share.
const SYNC_KEY: &str = "failover test shared key 0123456789";
/// What keepalived logs when its event loop ran late (it was not scheduled).
const KEEPALIVED_STALLED: &str = "A thread timer expired";
/// keepalived's VRRPv2 password in the interoperability tests.
const AUTH_PASS: &str = "lbtest";

// ---- VRRP settings --------------------------------------------------------

/// One side's VRRP instance for the lab's VIP.
#[derive(Clone, Copy, Debug)]
struct Vrrp {
    version: u8,
    interval: Duration,
    priority: u8,
    preempt: bool,
}

impl Vrrp {
    fn v3(interval_ms: u64, priority: u8) -> Self {
        Vrrp {
            version: 3,
            interval: Duration::from_millis(interval_ms),
            priority,
            preempt: true,
        }
    }

    /// VRRPv2: whole seconds; 1 s here.
    fn v2(priority: u8) -> Self {
        Vrrp {
            version: 2,
            interval: Duration::from_secs(1),
            priority,
            preempt: true,
        }
    }

    fn version(version: u8, interval_ms: u64, priority: u8) -> Self {
        match version {
            2 => Self::v2(priority),
            _ => Self::v3(interval_ms, priority),
        }
    }

    fn nopreempt(mut self) -> Self {
        self.preempt = false;
        self
    }

    /// RFC 3768/5798 Skew_Time of a backup with this priority.
    fn skew(&self) -> Duration {
        let weight = 256 - u32::from(self.priority);
        match self.version {
            2 => Duration::from_secs(1) * weight / 256,
            _ => self.interval * weight / 256,
        }
    }

    /// Master_Down_Interval of a backup with this priority (the master
    /// advertises the same interval in every test).
    fn master_down(&self) -> Duration {
        3 * self.interval + self.skew()
    }

    /// lbd's `[[vrrp]]` table.
    fn lbd_toml(&self, lab: &Lab) -> String {
        let mut t = format!(
            "[[vrrp]]\n\
             name = \"VI_1\"\n\
             interface = \"{HOST_IFACE}\"\n\
             virtual_router_id = {VRID}\n\
             priority = {}\n\
             version = {}\n\
             advert_interval = \"{}ms\"\n\
             preempt = {}\n\
             virtual_ipaddress = [\"{}/32\"]\n\
             garp_master_repeat = {GARP_REPEAT}\n",
            self.priority,
            self.version,
            self.interval.as_millis(),
            self.preempt,
            lab.vip(),
        );
        if self.version == 2 {
            t.push_str(&format!("auth_pass = \"{AUTH_PASS}\"\n"));
        }
        t
    }

    /// keepalived.conf with the same instance.
    fn keepalived_conf(&self, lab: &Lab, host: &Host) -> String {
        let mut instance = format!(
            "    state BACKUP\n    interface {HOST_IFACE}\n    virtual_router_id {VRID}\n    priority {}\n    \
             advert_int {}\n    garp_master_repeat {GARP_REPEAT}\n",
            self.priority,
            self.interval.as_secs_f64(),
        );
        if !self.preempt {
            instance.push_str("    nopreempt\n");
        }
        if self.version == 2 {
            instance.push_str(&format!(
                "    authentication {{\n        auth_type PASS\n        auth_pass {AUTH_PASS}\n    }}\n"
            ));
        }
        instance.push_str(&format!(
            "    virtual_ipaddress {{\n        {}/32\n    }}\n",
            lab.vip()
        ));
        format!(
            "global_defs {{\n    router_id lbt_{}\n    vrrp_version {}\n}}\n\nvrrp_instance VI_1 {{\n{instance}}}\n",
            host.name, self.version
        )
    }
}

/// The `[sync]` table of a director whose peer is `peer`.
fn sync_toml(peer: &Host) -> String {
    format!(
        "[sync]\n\
         interface = \"{HOST_IFACE}\"\n\
         peers = [\"{}\"]\n\
         key = \"{SYNC_KEY}\"\n\
         scan_interval = \"100ms\"\n",
        peer.ip
    )
}

// ---- the lab ----------------------------------------------------------------

/// Two directors (no static VIP: VRRP adds it), two real servers with
/// lab-server on port 80.
fn failover_lab(name: &str, k: u8) -> Lab {
    let lab = Lab::build(
        LabSpec::new(name)
            .directors(2)
            .without_static_vip()
            .subnet_index(k),
    )
    .unwrap();
    lab.start_http_servers_with(Path::new(LAB_SERVER)).unwrap();
    lab
}

/// lbd on `host` with the lab's HTTP service (rr), `vrrp` and, with
/// `sync_peer`, connection sync with that director. Not started.
fn lbd_on<'a>(lab: &'a Lab, host: &Host, vrrp: &Vrrp, sync_peer: Option<&Host>) -> Director<'a> {
    let mut d = Director::on_host(lab, host).unwrap();
    configure(&mut d, vrrp, sync_peer);
    d
}

/// (Re)writes a director's config with `vrrp` (and sync).
fn configure(d: &mut Director<'_>, vrrp: &Vrrp, sync_peer: Option<&Host>) {
    let lab = d.lab();
    d.extra_sections.clear();
    d.add_section(&vrrp.lbd_toml(lab));
    if let Some(peer) = sync_peer {
        d.add_section(&sync_toml(peer));
    }
    d.write_config(&[ServiceSpec::lab_http(lab, "rr")]).unwrap();
}

/// Polls `check` every 10 ms until it gives a value or `timeout` passes;
/// returns the value and how long it took.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<(T, Duration)> {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return Ok((v, start.elapsed()));
        }
        if start.elapsed() >= timeout {
            bail!("{what}: not within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until lbd's first VRRP instance is in `state`; returns how long it took.
fn wait_state(d: &Director<'_>, state: &str, timeout: Duration) -> Duration {
    let host = d.host().name.clone();
    match wait_for(&format!("lbd on {host} {state}"), timeout, || {
        (d.vrrp_state().ok()? == state).then_some(())
    }) {
        Ok(((), took)) => took,
        Err(e) => panic!(
            "{e:#}\nlbctl --vrrp: {:?}\nlbd's log:\n{}",
            d.vrrp_status(),
            d.log()
        ),
    }
}

/// lbd's first VRRP instance, as `lbctl --vrrp --json` shows it.
fn vrrp_status(d: &Director<'_>) -> serde_json::Value {
    d.vrrp_status()
        .unwrap()
        .into_iter()
        .next()
        .expect("one VRRP instance")
}

/// Whether `host` has the VIP on eth0.
fn has_vip(lab: &Lab, host: &Host) -> bool {
    has_vip_in(lab, &host.ns)
}

/// Whether namespace `ns` has the VIP on eth0.
fn has_vip_in(lab: &Lab, ns: &str) -> bool {
    let out = netns::ip(&["-n", ns, "-j", "addr", "show", "dev", HOST_IFACE]).unwrap();
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let vip = lab.vip().to_string();
    json[0]["addr_info"].as_array().is_some_and(|addrs| {
        addrs
            .iter()
            .any(|a| a["local"].as_str() == Some(vip.as_str()))
    })
}

/// The MAC the client's neighbour table has for the VIP, if any.
fn client_neighbour(lab: &Lab) -> Option<MacAddr> {
    let vip = lab.vip().to_string();
    let out = netns::ip(&[
        "-n",
        &lab.client().ns,
        "-j",
        "neigh",
        "show",
        &vip,
        "dev",
        HOST_IFACE,
    ])
    .ok()?;
    let json: serde_json::Value = serde_json::from_str(&out).ok()?;
    json[0]["lladdr"].as_str()?.parse().ok()
}

/// Waits until the client's neighbour entry for the VIP is `host`'s MAC.
fn wait_client_moved_to(lab: &Lab, host: &Host, timeout: Duration) -> Duration {
    wait_for(
        &format!(
            "the client's ARP entry for the VIP pointing to {}",
            host.name
        ),
        timeout,
        || (client_neighbour(lab) == Some(host.mac)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e:#} (it is {:?})", client_neighbour(lab)))
    .1
}

/// Waits for at least `GARP_REPEAT` gratuitous ARPs for the VIP from `host`.
fn wait_garps(lab: &Lab, watch: &ArpWatch, host: &Host) -> usize {
    let vip = lab.vip();
    let count = || {
        watch
            .gratuitous_for(vip)
            .iter()
            .filter(|a| a.sender_mac == host.mac)
            .count()
    };
    match wait_for(
        &format!("{GARP_REPEAT} gratuitous ARPs from {}", host.name),
        Duration::from_secs(2),
        || (count() >= GARP_REPEAT).then_some(()),
    ) {
        Ok(_) => count(),
        Err(e) => panic!("{e:#}; seen: {:?}", watch.seen()),
    }
}

/// The real server (name) behind `address`.
fn real_name(lab: &Lab, address: Ipv4Addr) -> String {
    lab.reals()
        .iter()
        .find(|r| r.ip == address)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| address.to_string())
}

/// curl through the VIP until it answers (new connections; a few tries over
/// `timeout`); the server's name.
fn curl_vip(lab: &Lab, timeout: Duration) -> String {
    let url = vip_url(lab, "/");
    let start = Instant::now();
    loop {
        let out = lab.run(&lab.client().ns, &["curl", "-sS", "--max-time", "1", &url]);
        match out {
            Ok(body) => return body.trim().to_owned(),
            Err(e) if start.elapsed() >= timeout => {
                panic!("no answer through the VIP within {timeout:?}: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A counter of lbd's datapath.
fn counter(d: &Director<'_>, name: &str) -> u64 {
    d.counters().unwrap().get(name).copied().unwrap_or(0)
}

/// SIGKILLs lbd (a crash: no priority-0 advert, XDP and VIP stay).
fn crash(d: &mut Director<'_>) -> Instant {
    let at = Instant::now();
    d.kill().unwrap();
    at
}

/// Detaches a killed lbd's XDP program by removing its pins, and checks it is gone.
fn detach_dead(d: &Director<'_>) {
    d.remove_pins().unwrap();
    let detached = wait_for(
        "the killed director's XDP program detached",
        Duration::from_secs(5),
        || (!d.xdp_attached().ok()?).then_some(()),
    );
    if let Err(e) = detached {
        panic!("{e:#}: {}", d.director_link().unwrap_or_default());
    }
}

/// Starts lbd on `d`, waits until it is master (alone or by preemption).
fn start_master(d: &mut Director<'_>, vrrp: &Vrrp) -> Duration {
    let start = Instant::now();
    d.start().unwrap();
    wait_state(d, "master", Duration::from_secs(5) + 3 * vrrp.master_down());
    start.elapsed()
}

/// Restarts the crashed lbd `d` with `vrrp`, which preempts: waits until
/// it is master again and `other` backup. Returns how long `d` took to
/// become master once its lbd answered.
fn restart_and_preempt(d: &mut Director<'_>, other: &Director<'_>, vrrp: &Vrrp) -> Duration {
    configure(d, vrrp, None);
    d.start().unwrap();
    let took = wait_state(d, "master", Duration::from_secs(2) + 2 * vrrp.master_down());
    wait_state(other, "backup", Duration::from_secs(2));
    took
}

/// Waits until lbd's first VRRP instance is backup and hears `master`'s adverts.
fn wait_backup_of(d: &Director<'_>, master: &Host, what: &str, timeout: Duration) {
    wait_for(what, timeout, || {
        let s = vrrp_status(d);
        (s["state"] == "backup" && s["master_address"] == master.ip.to_string()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}\n{}", vrrp_status(d), d.log()));
}

/// Waits (2 s at most) until `host` no longer has the VIP; `what` says so.
fn wait_vip_gone(lab: &Lab, host: &Host, what: &str) {
    wait_for(what, Duration::from_secs(2), || {
        (!has_vip(lab, host)).then_some(())
    })
    .unwrap();
}

/// A request through the VIP is answered (see [`curl_vip`]) and lbd `d`
/// forwarded it: its `conn_new` counter grew (else fails saying `what`).
/// Returns the server that answered.
fn assert_forwards(lab: &Lab, d: &Director<'_>, what: &str) -> String {
    let before = counter(d, "conn_new");
    let answer = curl_vip(lab, Duration::from_secs(3));
    assert!(counter(d, "conn_new") > before, "{what}");
    answer
}

/// Two lbd directors: `director` with priority 150 (master), `director2`
/// with 100 (backup), started in that order; both agree on the master.
fn start_pair<'a>(
    lab: &'a Lab,
    high: &Vrrp,
    low: &Vrrp,
    sync: bool,
) -> (Director<'a>, Director<'a>) {
    let (h1, h2) = (&lab.directors()[0], &lab.directors()[1]);
    let mut d1 = lbd_on(lab, h1, high, sync.then_some(h2));
    let mut d2 = lbd_on(lab, h2, low, sync.then_some(h1));
    start_master(&mut d1, high);
    d2.start().unwrap();
    wait_backup_of(
        &d2,
        h1,
        "director2 hearing director1's adverts",
        Duration::from_secs(5),
    );
    // The backup joining did not disturb the master.
    let s1 = vrrp_status(&d1);
    assert_eq!(s1["state"], "master", "{s1}");
    assert_eq!(
        s1["transitions"], 2,
        "director1 went INIT -> BACKUP -> MASTER only: {s1}"
    );
    assert!(
        has_vip(lab, h1) && !has_vip(lab, h2),
        "the VIP is on director1 only"
    );
    (d1, d2)
}

// ---- crash, GARPs, preemption ---------------------------------------------

/// The master crashes; the backup takes the VIP within its master-down
/// interval and announces it; the old master returns and takes the VIP
/// back (preempt) or leaves it (nopreempt).
fn crash_and_return(name: &str, k: u8, preempt: bool) {
    let lab = failover_lab(name, k);
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let high = Vrrp::v3(200, 150);
    let low = Vrrp::v3(200, 100);
    let (mut d1, d2) = start_pair(&lab, &high, &low, false);

    // Only the master answers ARP for the VIP; it forwards.
    assert_eq!(lab.arp_probe_from_client(lab.vip()).unwrap(), vec![h1.mac]);
    let answer = curl_vip(&lab, Duration::from_secs(3));
    assert!(answer == "rs1" || answer == "rs2", "{answer:?}");
    assert!(counter(&d1, "conn_new") >= 1);
    assert_eq!(counter(&d2, "conn_new"), 0, "the backup forwarded nothing");

    // SIGKILL: no priority-0 advert; the backup waits out its master-down interval.
    let watch = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    let killed = crash(&mut d1);
    detach_dead(&d1);
    wait_state(&d2, "master", low.master_down() + TAKEOVER_SLACK);
    let since_kill = killed.elapsed();
    eprintln!(
        "{name}: director2 master {:.3} s after the SIGKILL (master-down interval {:.3} s)",
        since_kill.as_secs_f64(),
        low.master_down().as_secs_f64()
    );
    assert!(
        since_kill <= low.master_down() + TAKEOVER_SLACK,
        "{since_kill:?}"
    );
    assert!(has_vip(&lab, &h2), "the new master holds the VIP");
    assert!(
        has_vip(&lab, &h1),
        "a crashed director keeps the VIP on its interface"
    );
    let garps = wait_garps(&lab, &watch, &h2);
    eprintln!("{name}: {garps} gratuitous ARPs from director2");
    wait_client_moved_to(&lab, &h2, Duration::from_secs(2));
    let answer = assert_forwards(&lab, &d2, "director2 forwarded the request");
    assert!(answer == "rs1" || answer == "rs2", "{answer:?}");
    drop(watch);

    // The old master comes back.
    let watch = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    if preempt {
        let took = restart_and_preempt(&mut d1, &d2, &high);
        eprintln!(
            "{name}: director1 master again {:.3} s after its lbd answered",
            took.as_secs_f64()
        );
        wait_vip_gone(&lab, &h2, "the VIP gone from director2");
        assert!(has_vip(&lab, &h1));
        wait_garps(&lab, &watch, &h1);
        wait_client_moved_to(&lab, &h1, Duration::from_secs(2));
        assert_eq!(lab.arp_probe_from_client(lab.vip()).unwrap(), vec![h1.mac]);
        assert_forwards(&lab, &d1, "director1 forwards again");
    } else {
        configure(&mut d1, &high.nopreempt(), None);
        d1.start().unwrap();
        // Long enough to have taken over several times.
        let observe = (4 * high.master_down()).max(Duration::from_secs(2));
        wait_state(&d1, "backup", Duration::from_secs(2));
        // It removed the address its crashed run left behind.
        wait_vip_gone(&lab, &h1, "the stale VIP gone from director1");
        let end = Instant::now() + observe;
        while Instant::now() < end {
            assert_eq!(
                d1.vrrp_state().unwrap(),
                "backup",
                "nopreempt: director1 must not take over\n{}",
                d1.log()
            );
            assert_eq!(d2.vrrp_state().unwrap(), "master", "{}", d2.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        let s1 = vrrp_status(&d1);
        assert_eq!(s1["master_address"], h2.ip.to_string(), "{s1}");
        assert!(
            watch
                .gratuitous_for(lab.vip())
                .iter()
                .all(|a| a.sender_mac != h1.mac),
            "director1 announced the VIP"
        );
        assert!(has_vip(&lab, &h2) && !has_vip(&lab, &h1));
        assert_eq!(lab.arp_probe_from_client(lab.vip()).unwrap(), vec![h2.mac]);
        assert_forwards(&lab, &d2, "director2 still forwards");
    }
    drop(watch);

    // Clean stops: the master's priority-0 advert hands over at once.
    let (master, backup) = if preempt { (d1, d2) } else { (d2, d1) };
    let master_host = master.host().clone();
    finish(master);
    let took = wait_state(&backup, "master", low.skew() + TAKEOVER_SLACK);
    eprintln!(
        "{name}: after {}'s clean stop the other was master in {:.3} s (skew time {:.3} s)",
        master_host.name,
        took.as_secs_f64(),
        low.skew().as_secs_f64()
    );
    assert!(!has_vip(&lab, &master_host), "a clean stop removes the VIP");
    finish(backup);
    assert!(!has_vip(&lab, &lab.directors()[0]) && !has_vip(&lab, &lab.directors()[1]));
}

#[test]
fn master_crash_moves_the_vip_and_preemption_returns_it() {
    if !root_or_skip("master_crash_moves_the_vip_and_preemption_returns_it") {
        return;
    }
    crash_and_return("fo_preempt", 81, true);
}

#[test]
fn nopreempt_leaves_the_vip_on_the_new_master() {
    if !root_or_skip("nopreempt_leaves_the_vip_on_the_new_master") {
        return;
    }
    crash_and_return("fo_nopreempt", 82, false);
}

// ---- long-lived connections --------------------------------------------------

/// What became of a connection opened before the failover.
#[derive(Debug, PartialEq, Eq)]
enum After {
    /// Answered by this server.
    Answered(String),
    Reset,
    Stalled,
    Failed(String),
}

/// Asks `/whoami` again on a held connection.
fn ask_again(conn: &mut HeldConnection) -> After {
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    match conn.ask("/whoami") {
        Ok(body) => After::Answered(
            body.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        Err(e) => match e.downcast_ref::<std::io::Error>().map(|io| io.kind()) {
            Some(std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {
                After::Reset
            }
            Some(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => After::Stalled,
            _ => After::Failed(format!("{e:#}")),
        },
    }
}

/// Interactive sessions (keep-alive HTTP, idle across the failover) and a
/// slow download, opened through the VIP before the master is killed.
fn long_lived_connections(name: &str, k: u8, sync: bool) {
    let lab = failover_lab(name, k);
    let h2 = lab.directors()[1].clone();
    let high = Vrrp::v3(100, 150);
    let low = Vrrp::v3(100, 100);
    let (mut d1, d2) = start_pair(&lab, &high, &low, sync);

    let target = vip80(&lab);
    let mut held: Vec<HeldConnection> = (0..4)
        .map(|_| lab.hold_http_connection(&lab.client().ns, target).unwrap())
        .collect();
    let servers: Vec<String> = held.iter().map(|c| c.server.clone()).collect();
    assert!(
        servers.contains(&"rs1".to_owned()) && servers.contains(&"rs2".to_owned()),
        "{servers:?}"
    );
    let slow_seconds: usize = 6;
    let url = vip_url(&lab, &format!("/slow?seconds={slow_seconds}"));
    let download = lab
        .spawn(
            &lab.client().ns,
            "slow-download",
            &["curl", "-sS", "-N", "--max-time", "30", &url],
        )
        .unwrap();
    // The download has begun (its first line is there).
    wait_for(
        "the slow download's first line",
        Duration::from_secs(5),
        || (!lab.read_log(&download).is_empty()).then_some(()),
    )
    .unwrap();

    if sync {
        // The backup has every connection, with the same real server.
        let wanted: Vec<(SocketAddrV4, String)> =
            held.iter().map(|c| (c.local, c.server.clone())).collect();
        let result = wait_for(
            "the held connections synced to director2",
            Duration::from_secs(5),
            || {
                let entries = d2.connection_entries().ok()?;
                wanted
                    .iter()
                    .all(|(local, server)| {
                        entries.iter().any(|e| {
                            e.source == *local && real_name(&lab, *e.destination.ip()) == *server
                        })
                    })
                    .then_some(entries.len())
            },
        );
        let (entries, took) = result.unwrap_or_else(|e| {
            panic!(
                "{e:#}\ndirector2's entries: {:?}\nits log:\n{}",
                d2.connection_entries(),
                d2.log()
            )
        });
        eprintln!(
            "{name}: {entries} entries on director2 within {:.3} s",
            took.as_secs_f64()
        );
    } else {
        std::thread::sleep(Duration::from_millis(500));
        let entries = d2.connection_entries().unwrap();
        assert!(
            entries.is_empty(),
            "no sync, yet director2 has entries: {entries:?}"
        );
    }

    // lbd crashes; its XDP program forwards on until the client moves.
    let watch = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    let killed = crash(&mut d1);
    wait_state(&d2, "master", low.master_down() + TAKEOVER_SLACK);
    wait_garps(&lab, &watch, &h2);
    wait_client_moved_to(&lab, &h2, Duration::from_secs(2));
    eprintln!(
        "{name}: the client moved to director2 {:.3} s after the SIGKILL",
        killed.elapsed().as_secs_f64()
    );
    // From here on only director2 can forward.
    detach_dead(&d1);

    let not_syn_before = counter(&d2, "pass_tcp_not_syn");
    let after: Vec<After> = held.iter_mut().map(ask_again).collect();
    eprintln!("{name}: held connections after the failover: {after:?} (were {servers:?})");
    // New connections work either way.
    let answer = curl_vip(&lab, Duration::from_secs(3));
    assert!(answer == "rs1" || answer == "rs2", "{answer:?}");

    let (status, output) = {
        let _ = wait_for(
            "the slow download to end",
            Duration::from_secs(2 * slow_seconds as u64 + 10),
            || (!lab.is_running(&download)).then_some(()),
        );
        let status = lab.stop(&download).unwrap();
        (status, lab.read_log(&download))
    };
    // The server's lines (curl's error message, if any, aside).
    let lines: Vec<&str> = output.lines().filter(|l| l.starts_with("rs")).collect();
    eprintln!(
        "{name}: slow download: {status}, {} lines: {:?}",
        lines.len(),
        lines
    );

    if sync {
        for (a, server) in after.iter().zip(&servers) {
            assert_eq!(
                *a,
                After::Answered(server.clone()),
                "every session goes on, on its own server"
            );
        }
        assert!(
            status.success(),
            "the download finished: {status}\n{output}"
        );
        assert_eq!(lines.len(), slow_seconds, "{output}");
        assert!(
            lines.iter().all(|l| *l == lines[0]),
            "one server all along: {output}"
        );
    } else {
        for a in &after {
            assert!(
                matches!(a, After::Reset | After::Stalled),
                "without sync the session breaks: {a:?}"
            );
        }
        // Why: the new master knows none of them; not SYNs, they go to its
        // kernel, which holds the VIP and answers with a reset.
        assert!(counter(&d2, "pass_tcp_not_syn") > not_syn_before);
        assert!(
            !status.success(),
            "without sync the download breaks: {status}\n{output}"
        );
        assert!(lines.len() < slow_seconds, "{output}");
    }
    drop(held);
    finish(d2);
}

#[test]
fn long_lived_connections_survive_failover_with_sync() {
    if !root_or_skip("long_lived_connections_survive_failover_with_sync") {
        return;
    }
    long_lived_connections("fo_sync", 83, true);
}

#[test]
fn long_lived_connections_break_on_failover_without_sync() {
    if !root_or_skip("long_lived_connections_break_on_failover_without_sync") {
        return;
    }
    long_lived_connections("fo_nosync", 84, false);
}

// ---- failover time ----------------------------------------------------------

/// One GET through the VIP on a new connection (HTTP/1.1, close); the body.
fn get_once(target: SocketAddrV4, timeout: Duration) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&target.into(), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(
        format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer: {answer:?}"))?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.trim().to_owned())
}

/// From the client: GETs through the VIP every 10 ms until one is answered;
/// the time since `since` and the number of attempts.
fn first_answer(lab: &Lab, since: Instant, timeout: Duration) -> Result<(Duration, u32)> {
    let target = vip80(lab);
    netns::run_in_netns(&lab.client().ns, move || {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match get_once(target, Duration::from_millis(200)) {
                Ok(_) => return Ok((since.elapsed(), attempts)),
                Err(e) if since.elapsed() >= timeout => {
                    return Err(e).context(format!("no answer through the VIP within {timeout:?}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })?
}

/// The wall-clock time of the last log line containing `needle`
/// (tracing's `2025-01-02T03:04:05.678901Z` prefix), as seconds of the day.
fn log_time_of_day(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains(needle))?;
    let t = line
        .split_whitespace()
        .next()?
        .split_once('T')?
        .1
        .trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn time_of_day(t: SystemTime) -> f64 {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_nanos()) / 1e9
}

/// A pseudo-random duration in [0, `max`) (from the clock's nanoseconds).
fn random_fraction(max: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    max.mul_f64(f64::from(nanos % 1_000_000) / 1_000_000.0)
}

/// Kills the master `runs` times and measures how long until the client
/// gets an answer through the VIP again (the dead director detached at
/// once, so only the new master can answer); the old master is restarted
/// and preempts between runs.
fn measure_failover(name: &str, k: u8, interval_ms: u64, runs: usize) {
    let lab = failover_lab(name, k);
    let h1 = lab.directors()[0].clone();
    let high = Vrrp::v3(interval_ms, 150);
    let low = Vrrp::v3(interval_ms, 100);
    let (mut d1, d2) = start_pair(&lab, &high, &low, false);
    let label = if interval_ms >= 1000 {
        format!("{}s", interval_ms / 1000)
    } else {
        format!("{:.1}s", interval_ms as f64 / 1000.0)
    };
    let mdi = low.master_down();
    let mut times = Vec::new();
    for run in 1..=runs {
        curl_vip(&lab, Duration::from_secs(3));
        let before = counter(&d2, "conn_new");
        // At a random point of the advert period: the takeover comes one
        // master-down interval after the last advert heard, so anywhere
        // from (master-down - interval) to master-down after the kill.
        std::thread::sleep(random_fraction(high.interval));
        let wall = SystemTime::now();
        let killed = crash(&mut d1);
        detach_dead(&d1);
        let (took, attempts) = first_answer(&lab, killed, mdi + Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e:#}\ndirector2's log:\n{}", d2.log()));
        let master_at = log_time_of_day(&d2.log(), "VRRP BACKUP -> MASTER")
            .map(|t| format!("{:.3} s", t - time_of_day(wall)))
            .unwrap_or_else(|| "?".into());
        eprintln!(
            "failover with advert_interval {label} (run {run}): {:.3} s from the SIGKILL to the first answer \
             through the VIP ({attempts} attempts; director2 master after {master_at}; master-down interval {:.3} s)",
            took.as_secs_f64(),
            mdi.as_secs_f64()
        );
        assert!(
            counter(&d2, "conn_new") > before,
            "the answer came through director2"
        );
        // Never sooner than the last advert heard + the master-down interval.
        // (50 ms for the master's advert timer running late.)
        assert!(
            took + low.interval + Duration::from_millis(50) >= mdi,
            "{took:?}: faster than possible (master-down interval {mdi:?})"
        );
        assert!(
            took <= mdi + ANSWER_SLACK,
            "failover took {took:?}; expected at most {mdi:?} + {ANSWER_SLACK:?}"
        );
        times.push(took);
        if run < runs {
            // Back to the start: director1 master again, the client with it.
            restart_and_preempt(&mut d1, &d2, &high);
            wait_client_moved_to(&lab, &h1, Duration::from_secs(3));
        }
    }
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    eprintln!(
        "failover with advert_interval {label}: mean {:.3} s over {runs} runs (each {:?})",
        mean.as_secs_f64(),
        times
            .iter()
            .map(|t| format!("{:.3}", t.as_secs_f64()))
            .collect::<Vec<_>>()
    );
    finish(d2);
}

#[test]
fn failover_time_with_advert_interval_1s() {
    if !root_or_skip("failover_time_with_advert_interval_1s") {
        return;
    }
    measure_failover("fo_time_1s", 85, 1000, 2);
}

#[test]
fn failover_time_with_advert_interval_100ms() {
    if !root_or_skip("failover_time_with_advert_interval_100ms") {
        return;
    }
    measure_failover("fo_time_100ms", 86, 100, 3);
}

// ---- keepalived ----------------------------------------------------------------

/// True with root and keepalived installed; otherwise says that `test` is skipped.
fn root_and_keepalived_or_skip(test: &str) -> bool {
    root_or_skip(test) && keepalived::installed_or_skip(test)
}

/// Waits until keepalived holds the VIP (master) or not (backup): the
/// address on its interface and the matching "Entering ... STATE" lines.
fn wait_keepalived(
    lab: &Lab,
    ka: &Keepalived,
    master: bool,
    entered: usize,
    timeout: Duration,
) -> Duration {
    let state = if master {
        "Entering MASTER STATE"
    } else {
        "Entering BACKUP STATE"
    };
    let result = wait_for(&format!("keepalived {state}"), timeout, || {
        (has_vip_in(lab, ka.ns()) == master && ka.count(state) >= entered).then_some(())
    });
    match result {
        Ok(((), took)) => took,
        Err(e) => panic!("{e:#} (#{entered}); keepalived's log:\n{}", ka.log()),
    }
}

/// lbd (one director) and keepalived (the other) for the same VRID and VIP:
/// the one with priority 150 starts first and is master, the other joins as
/// backup; the master crashes and the backup takes over within its
/// master-down interval; the crashed one returns and preempts; it crashes
/// again and returns with nopreempt, and stays backup; finally a clean stop
/// of the master hands over at once.
fn interop(name: &str, k: u8, version: u8, keepalived_master: bool) {
    let lab = failover_lab(name, k);
    let (h1, h2) = (lab.directors()[0].clone(), lab.directors()[1].clone());
    let high = Vrrp::version(version, 100, 150);
    let low = Vrrp::version(version, 100, 100);
    let (ka_host, lbd_host) = if keepalived_master {
        (&h1, &h2)
    } else {
        (&h2, &h1)
    };
    let (ka_vrrp, lbd_vrrp) = if keepalived_master {
        (high, low)
    } else {
        (low, high)
    };
    let mut ka = Keepalived::new(&ka_host.ns, lab.log_dir(), &ka_host.name);
    let mut lbd = lbd_on(&lab, lbd_host, &lbd_vrrp, None);
    let v = format!("VRRPv{version}");
    let lbd_bad_adverts = |lbd: &Director<'_>| {
        let s = vrrp_status(lbd);
        assert_eq!(s["bad_adverts"], 0, "lbd refused keepalived's adverts: {s}");
    };
    let keepalived_complaints = |ka: &Keepalived| {
        let log = ka.log();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                [
                    "invalid",
                    "mismatch",
                    "not present",
                    "bad ",
                    "error",
                    "wrong",
                ]
                .iter()
                .any(|w| l.contains(w))
            })
            .collect();
        assert!(
            bad.is_empty(),
            "keepalived complained about lbd's adverts:\n{}",
            bad.join("\n")
        );
    };
    let lbd_forwards = |lbd: &Director<'_>| {
        assert_forwards(&lab, lbd, "lbd forwarded the request");
    };

    // Election: the higher priority is master, the other joins as backup.
    if keepalived_master {
        ka.start(&ka_vrrp.keepalived_conf(&lab, ka_host));
        wait_keepalived(
            &lab,
            &ka,
            true,
            1,
            Duration::from_secs(5) + 2 * ka_vrrp.master_down(),
        );
        lbd.start().unwrap();
        wait_backup_of(
            &lbd,
            ka_host,
            "lbd hearing keepalived",
            Duration::from_secs(5) + 2 * lbd_vrrp.master_down(),
        );
        // Well past lbd's master-down interval: it stays backup.
        std::thread::sleep(2 * lbd_vrrp.master_down());
        assert_eq!(lbd.vrrp_state().unwrap(), "backup");
        assert_eq!(ka.count("Entering MASTER STATE"), 1, "{}", ka.log());
    } else {
        start_master(&mut lbd, &lbd_vrrp);
        ka.start(&ka_vrrp.keepalived_conf(&lab, ka_host));
        wait_keepalived(&lab, &ka, false, 1, Duration::from_secs(5));
        std::thread::sleep(2 * ka_vrrp.master_down());
        assert_eq!(
            ka.count("Entering MASTER STATE"),
            0,
            "keepalived must stay backup:\n{}",
            ka.log()
        );
        assert_eq!(lbd.vrrp_state().unwrap(), "master");
        assert_eq!(vrrp_status(&lbd)["transitions"], 2);
        lbd_forwards(&lbd);
    }
    assert_eq!(
        lab.arp_probe_from_client(lab.vip()).unwrap(),
        vec![h1.mac],
        "only the master answers ARP"
    );
    // The client has talked to the VIP (so it has an ARP entry for the
    // gratuitous ARPs to update; they create none), even where keepalived
    // holds it and only its kernel answers (with a reset).
    let _ = lab.exec(
        &lab.client().ns,
        &[
            "curl",
            "-s",
            "--max-time",
            "1",
            &format!("http://{}/", lab.vip()),
        ],
    );
    wait_client_moved_to(&lab, &h1, Duration::from_secs(2));
    assert!(vrrp_status(&lbd)["adverts_received"].as_u64().unwrap() > 0 || !keepalived_master);
    lbd_bad_adverts(&lbd);
    keepalived_complaints(&ka);
    eprintln!(
        "{name}: election done ({v}, {} master)",
        if keepalived_master {
            "keepalived"
        } else {
            "lbd"
        }
    );

    // The master crashes; the backup takes over within its master-down interval.
    let watch = watch_arp(&lab.client().ns, HOST_IFACE).unwrap();
    let killed = Instant::now();
    let took = if keepalived_master {
        ka.kill();
        wait_state(&lbd, "master", low.master_down() + TAKEOVER_SLACK);
        let took = killed.elapsed();
        wait_garps(&lab, &watch, lbd_host);
        wait_client_moved_to(&lab, lbd_host, Duration::from_secs(2));
        took
    } else {
        crash(&mut lbd);
        detach_dead(&lbd);
        wait_keepalived(&lab, &ka, true, 1, low.master_down() + TAKEOVER_SLACK);
        let took = killed.elapsed();
        wait_garps(&lab, &watch, ka_host);
        wait_client_moved_to(&lab, ka_host, Duration::from_secs(2));
        took
    };
    eprintln!(
        "{name}: {} took over {:.3} s after the master's crash (master-down interval {:.3} s)",
        if keepalived_master {
            "lbd"
        } else {
            "keepalived"
        },
        took.as_secs_f64(),
        low.master_down().as_secs_f64()
    );
    assert!(
        took <= low.master_down() + TAKEOVER_SLACK + Duration::from_millis(100),
        "{took:?}"
    );
    if keepalived_master {
        lbd_forwards(&lbd);
    }
    drop(watch);

    // The crashed master returns and preempts.
    let restarted = Instant::now();
    if keepalived_master {
        ka.start(&ka_vrrp.keepalived_conf(&lab, ka_host));
        wait_keepalived(
            &lab,
            &ka,
            true,
            2,
            Duration::from_secs(5) + 2 * ka_vrrp.master_down(),
        );
        wait_state(&lbd, "backup", Duration::from_secs(2));
        wait_vip_gone(&lab, lbd_host, "the VIP gone from lbd's director");
    } else {
        configure(&mut lbd, &lbd_vrrp, None);
        start_master(&mut lbd, &lbd_vrrp);
        wait_keepalived(&lab, &ka, false, 2, Duration::from_secs(3));
        lbd_forwards(&lbd);
    }
    eprintln!(
        "{name}: preempted {:.3} s after the restart",
        restarted.elapsed().as_secs_f64()
    );
    wait_client_moved_to(&lab, &h1, Duration::from_secs(3));
    lbd_bad_adverts(&lbd);
    keepalived_complaints(&ka);

    // Again, now returning with nopreempt: it stays backup.
    if keepalived_master {
        ka.kill();
        wait_state(&lbd, "master", low.master_down() + TAKEOVER_SLACK);
        ka.start(&ka_vrrp.nopreempt().keepalived_conf(&lab, ka_host));
        wait_keepalived(&lab, &ka, false, 3, Duration::from_secs(5));
    } else {
        crash(&mut lbd);
        detach_dead(&lbd);
        wait_keepalived(&lab, &ka, true, 2, low.master_down() + TAKEOVER_SLACK);
        configure(&mut lbd, &lbd_vrrp.nopreempt(), None);
        lbd.start().unwrap();
        wait_state(&lbd, "backup", Duration::from_secs(2));
    }
    let masters_before = ka.count("Entering MASTER STATE");
    let stalls_before = ka.count(KEEPALIVED_STALLED);
    let observe = (3 * high.master_down()).max(Duration::from_secs(2));
    std::thread::sleep(observe);
    if keepalived_master {
        assert_eq!(
            ka.count("Entering MASTER STATE"),
            masters_before,
            "nopreempt keepalived took over:\n{}",
            ka.log()
        );
        assert!(!has_vip(&lab, ka_host));
        assert_eq!(lbd.vrrp_state().unwrap(), "master");
        lbd_forwards(&lbd);
    } else if ka.count(KEEPALIVED_STALLED) > stalls_before && lbd.vrrp_state().unwrap() != "backup"
    {
        // keepalived was not scheduled for longer than lbd's master-down
        // interval (a loaded machine): no adverts, so lbd rightly took over.
        eprintln!(
            "{name}: WARNING: keepalived stalled (\"{KEEPALIVED_STALLED}\" in its log) and lbd took over as it \
             should; nopreempt not judged this time"
        );
    } else {
        assert_eq!(
            lbd.vrrp_state().unwrap(),
            "backup",
            "nopreempt lbd took over:\n{}",
            lbd.log()
        );
        assert_eq!(vrrp_status(&lbd)["master_address"], ka_host.ip.to_string());
        assert!(has_vip(&lab, ka_host) && !has_vip(&lab, lbd_host));
        assert_eq!(ka.count("Entering BACKUP STATE"), 2, "{}", ka.log());
    }
    eprintln!("{name}: nopreempt held for {:.1} s", observe.as_secs_f64());
    lbd_bad_adverts(&lbd);
    keepalived_complaints(&ka);

    // A clean stop of the master (priority 0): the backup takes over after its skew time.
    let stopped = Instant::now();
    if keepalived_master {
        finish(lbd);
        assert!(!has_vip(&lab, lbd_host), "lbd removed the VIP on stopping");
        wait_keepalived(
            &lab,
            &ka,
            true,
            masters_before + 1,
            ka_vrrp.skew() + TAKEOVER_SLACK,
        );
        eprintln!(
            "{name}: keepalived master {:.3} s after lbd's clean stop",
            stopped.elapsed().as_secs_f64()
        );
        ka.stop();
    } else {
        ka.terminate();
        wait_state(&lbd, "master", lbd_vrrp.skew() + TAKEOVER_SLACK);
        eprintln!(
            "{name}: lbd master {:.3} s after keepalived's SIGTERM",
            stopped.elapsed().as_secs_f64()
        );
        ka.stop();
        assert!(
            !has_vip(&lab, ka_host),
            "keepalived removed the VIP on stopping"
        );
        lbd_forwards(&lbd);
        finish(lbd);
    }
    assert!(ka.vrrp_pid().is_none(), "keepalived's VRRP process is gone");
}

#[test]
fn keepalived_master_lbd_backup_vrrp_v2() {
    if !root_and_keepalived_or_skip("keepalived_master_lbd_backup_vrrp_v2") {
        return;
    }
    interop("ka_master_v2", 87, 2, true);
}

#[test]
fn keepalived_master_lbd_backup_vrrp_v3() {
    if !root_and_keepalived_or_skip("keepalived_master_lbd_backup_vrrp_v3") {
        return;
    }
    interop("ka_master_v3", 88, 3, true);
}

#[test]
fn lbd_master_keepalived_backup_vrrp_v2() {
    if !root_and_keepalived_or_skip("lbd_master_keepalived_backup_vrrp_v2") {
        return;
    }
    interop("lbd_master_v2", 89, 2, false);
}

#[test]
fn lbd_master_keepalived_backup_vrrp_v3() {
    if !root_and_keepalived_or_skip("lbd_master_keepalived_backup_vrrp_v3") {
        return;
    }
    interop("lbd_master_v3", 90, 3, false);
}
