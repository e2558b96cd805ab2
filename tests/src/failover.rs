//! What the failover tests (`tests/failover.rs`, `tests/failover_keepalived.rs`)
//! share: the VRRP instance lbd and keepalived are both given, the lab of
//! two directors, and the steps and waits of a failover (VRRP states, the
//! VIP, the client's neighbour entry, gratuitous ARPs, a director crashing
//! and coming back).
//!
//! Like [`crate::scenario`]'s, these helpers panic on failure, as the tests
//! themselves do.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::director::{Director, ServiceSpec};
use crate::lab::HOST_IFACE;
use crate::netns::{self, ArpWatch, MacAddr};
use crate::scenario::vip_url;
use crate::{Host, Lab, LabSpec};

pub const VRID: u8 = 51;
/// Gratuitous ARPs per address when a director becomes master (lbd and keepalived).
pub const GARP_REPEAT: usize = 3;
/// Allowed on top of a master-down interval for a takeover to be seen: the
/// polling (lbctl or `ip` runs, ~10-30 ms each) and a busy machine.
pub const TAKEOVER_SLACK: Duration = Duration::from_millis(700);
/// The connection-sync key both directors share.
const SYNC_KEY: &str = "failover test shared key 0123456789";
/// keepalived's VRRPv2 password in the interoperability tests.
const AUTH_PASS: &str = "lbtest";

// ---- VRRP settings --------------------------------------------------------

/// One side's VRRP instance for the lab's VIP.
#[derive(Clone, Copy, Debug)]
pub struct Vrrp {
    pub version: u8,
    pub interval: Duration,
    pub priority: u8,
    pub preempt: bool,
}

impl Vrrp {
    pub fn v3(interval_ms: u64, priority: u8) -> Self {
        Vrrp {
            version: 3,
            interval: Duration::from_millis(interval_ms),
            priority,
            preempt: true,
        }
    }

    /// VRRPv2: whole seconds; 1 s here.
    pub fn v2(priority: u8) -> Self {
        Vrrp {
            version: 2,
            interval: Duration::from_secs(1),
            priority,
            preempt: true,
        }
    }

    pub fn version(version: u8, interval_ms: u64, priority: u8) -> Self {
        match version {
            2 => Self::v2(priority),
            _ => Self::v3(interval_ms, priority),
        }
    }

    pub fn nopreempt(mut self) -> Self {
        self.preempt = false;
        self
    }

    /// RFC 3768/5798 Skew_Time of a backup with this priority.
    pub fn skew(&self) -> Duration {
        let weight = 256 - u32::from(self.priority);
        match self.version {
            2 => Duration::from_secs(1) * weight / 256,
            _ => self.interval * weight / 256,
        }
    }

    /// Master_Down_Interval of a backup with this priority (the master
    /// advertises the same interval in every test).
    pub fn master_down(&self) -> Duration {
        3 * self.interval + self.skew()
    }

    /// lbd's `[[vrrp]]` table.
    pub fn lbd_toml(&self, lab: &Lab) -> String {
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
    pub fn keepalived_conf(&self, lab: &Lab, host: &Host) -> String {
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
pub fn sync_toml(peer: &Host) -> String {
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
/// `lab_server` on port 80.
pub fn failover_lab(lab_server: impl AsRef<Path>, name: &str, k: u8) -> Lab {
    let lab = Lab::build(
        LabSpec::new(name)
            .directors(2)
            .without_static_vip()
            .subnet_index(k),
    )
    .unwrap();
    lab.start_http_servers_with(lab_server.as_ref()).unwrap();
    lab
}

/// lbd on `host` with the lab's HTTP service (rr), `vrrp` and, with
/// `sync_peer`, connection sync with that director. Not started.
pub fn lbd_on<'a>(lab: &'a Lab, host: &Host, vrrp: &Vrrp, sync_peer: Option<&Host>) -> Director<'a> {
    let mut d = Director::on_host(lab, host).unwrap();
    configure(&mut d, vrrp, sync_peer);
    d
}

/// (Re)writes a director's config with `vrrp` (and sync).
pub fn configure(d: &mut Director<'_>, vrrp: &Vrrp, sync_peer: Option<&Host>) {
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
pub fn wait_for<T>(
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
pub fn wait_state(d: &Director<'_>, state: &str, timeout: Duration) -> Duration {
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
pub fn vrrp_status(d: &Director<'_>) -> serde_json::Value {
    d.vrrp_status()
        .unwrap()
        .into_iter()
        .next()
        .expect("one VRRP instance")
}

/// Whether `host` has the VIP on eth0.
pub fn has_vip(lab: &Lab, host: &Host) -> bool {
    has_vip_in(lab, &host.ns)
}

/// Whether namespace `ns` has the VIP on eth0.
pub fn has_vip_in(lab: &Lab, ns: &str) -> bool {
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
pub fn wait_client_moved_to(lab: &Lab, host: &Host, timeout: Duration) -> Duration {
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
pub fn wait_garps(lab: &Lab, watch: &ArpWatch, host: &Host) -> usize {
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
pub fn real_name(lab: &Lab, address: Ipv4Addr) -> String {
    lab.reals()
        .iter()
        .find(|r| r.ip == address)
        .map(|r| r.name.clone())
        .unwrap_or_else(|| address.to_string())
}

/// curl through the VIP until it answers (new connections; a few tries over
/// `timeout`); the server's name.
pub fn curl_vip(lab: &Lab, timeout: Duration) -> String {
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
pub fn counter(d: &Director<'_>, name: &str) -> u64 {
    d.counters().unwrap().get(name).copied().unwrap_or(0)
}

/// SIGKILLs lbd (a crash: no priority-0 advert, XDP and VIP stay).
pub fn crash(d: &mut Director<'_>) -> Instant {
    let at = Instant::now();
    d.kill().unwrap();
    at
}

/// Detaches a killed lbd's XDP program by removing its pins, and checks it is gone.
pub fn detach_dead(d: &Director<'_>) {
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
pub fn start_master(d: &mut Director<'_>, vrrp: &Vrrp) -> Duration {
    let start = Instant::now();
    d.start().unwrap();
    wait_state(d, "master", Duration::from_secs(5) + 3 * vrrp.master_down());
    start.elapsed()
}

/// Restarts the crashed lbd `d` with `vrrp`, which preempts: waits until
/// it is master again and `other` backup. Returns how long `d` took to
/// become master once its lbd answered.
pub fn restart_and_preempt(d: &mut Director<'_>, other: &Director<'_>, vrrp: &Vrrp) -> Duration {
    configure(d, vrrp, None);
    d.start().unwrap();
    let took = wait_state(d, "master", Duration::from_secs(2) + 2 * vrrp.master_down());
    wait_state(other, "backup", Duration::from_secs(2));
    took
}

/// Waits until lbd's first VRRP instance is backup and hears `master`'s adverts.
pub fn wait_backup_of(d: &Director<'_>, master: &Host, what: &str, timeout: Duration) {
    wait_for(what, timeout, || {
        let s = vrrp_status(d);
        (s["state"] == "backup" && s["master_address"] == master.ip.to_string()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e:#}: {}\n{}", vrrp_status(d), d.log()));
}

/// Waits (2 s at most) until `host` no longer has the VIP; `what` says so.
pub fn wait_vip_gone(lab: &Lab, host: &Host, what: &str) {
    wait_for(what, Duration::from_secs(2), || {
        (!has_vip(lab, host)).then_some(())
    })
    .unwrap();
}

/// A request through the VIP is answered (see [`curl_vip`]) and lbd `d`
/// forwarded it: its `conn_new` counter grew (else fails saying `what`).
/// Returns the server that answered.
pub fn assert_forwards(lab: &Lab, d: &Director<'_>, what: &str) -> String {
    let before = counter(d, "conn_new");
    let answer = curl_vip(lab, Duration::from_secs(3));
    assert!(counter(d, "conn_new") > before, "{what}");
    answer
}

/// Two lbd directors: `director` with priority 150 (master), `director2`
/// with 100 (backup), started in that order; both agree on the master.
pub fn start_pair<'a>(
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
