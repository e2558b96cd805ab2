//! Forged VRRP adverts (issue 11) against two lbd directors on the lab's
//! client segment, sent from the client's namespace with made-up source
//! addresses, as any host on the link could send them.
//!
//! * One VRRPv3 advert with priority 254 and the longest interval (4095 cs)
//!   takes the master down for its own master-down interval at most (it
//!   used to put both directors into backup for 3 × 40.95 s).
//! * A forger that keeps sending is followed, as VRRP says, but its
//!   interval is believed up to ten times ours: once it stops, the master
//!   is back within that bounded master-down interval.
//! * With `unicast_peer`, adverts from anyone else change nothing, and the
//!   log says so once, not once per forged source.
//!
//! Build lbd and lbctl first: `cargo build -p lb-userspace -p lbctl`. Needs
//! root (otherwise each test prints a message and passes).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use lb_tests::director::{Director, ServiceSpec};
use lb_tests::lab::HOST_IFACE;
use lb_tests::netns::spawn_in_netns;
use lb_tests::scenario::{finish, root_or_skip};
use lb_tests::{Host, Lab, LabSpec};
use lb_userspace::vrrp::packet::{
    AUTH_NONE, Advert, IPPROTO_VRRP, MAX_V3_INTERVAL_CS, VRRP_GROUP, VRRP_TTL, Version, internet_checksum,
};

const VRID: u8 = 51;
const INTERVAL: Duration = Duration::from_millis(200);
const HIGH: u8 = 200;
const LOW: u8 = 100;
/// Allowed on top of a master-down interval for a change to show in
/// `lbctl --vrrp` (its runs, a busy machine).
const SLACK: Duration = Duration::from_millis(1500);

/// Master_Down_Interval of a VRRPv3 backup of `priority` whose master
/// adverts every `interval`.
fn master_down(priority: u8, interval: Duration) -> Duration {
    3 * interval + interval * (256 - u32::from(priority)) / 256
}

fn lab(name: &str, k: u8) -> Lab {
    Lab::build(LabSpec::new(name).directors(2).without_static_vip().subnet_index(k)).unwrap()
}

/// lbd on `host` with the lab's HTTP service and one VRRPv3 instance for
/// the VIP, unicast to `peer` if given; started.
fn start_lbd<'a>(lab: &'a Lab, host: &Host, priority: u8, peer: Option<&Host>) -> Director<'a> {
    let mut d = Director::on_host(lab, host).unwrap();
    let mut vrrp = format!(
        "[[vrrp]]\nname = \"VI_1\"\ninterface = \"{HOST_IFACE}\"\nvirtual_router_id = {VRID}\npriority = {priority}\n\
         version = 3\nadvert_interval = \"{}ms\"\nvirtual_ipaddress = [\"{}/32\"]\n",
        INTERVAL.as_millis(),
        lab.vip(),
    );
    if let Some(peer) = peer {
        vrrp.push_str(&format!("unicast_peer = [\"{}\"]\n", peer.ip));
    }
    d.add_section(&vrrp);
    d.write_config(&[ServiceSpec::lab_http(lab, "rr")]).unwrap();
    d.start().unwrap();
    d
}

fn status(d: &Director<'_>) -> serde_json::Value {
    d.vrrp_status().unwrap().into_iter().next().expect("one VRRP instance")
}

/// Polls every 10 ms until `cond` holds; how long it took, or `None` after
/// `timeout`.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `d1` master and `d2` its backup.
fn settled(d1: &Director<'_>, d2: &Director<'_>) -> bool {
    let (s1, s2) = (status(d1), status(d2));
    s1["state"] == "master" && s2["state"] == "backup" && s2["master_address"] == d1.host().ip.to_string()
}

/// Two lbd directors, `director` (priority 200) master and `director2`
/// (100) its backup.
fn start_pair<'a>(lab: &'a Lab, unicast: bool) -> (Director<'a>, Director<'a>) {
    let (h1, h2) = (&lab.directors()[0], &lab.directors()[1]);
    let d1 = start_lbd(lab, h1, HIGH, unicast.then_some(h2));
    wait_for(Duration::from_secs(5), || status(&d1)["state"] == "master")
        .unwrap_or_else(|| panic!("director1 master: {}\n{}", status(&d1), d1.log()));
    let d2 = start_lbd(lab, h2, LOW, unicast.then_some(h1));
    wait_for(Duration::from_secs(5), || settled(&d1, &d2))
        .unwrap_or_else(|| panic!("director2 backup of director1: {}\n{}", status(&d2), d2.log()));
    (d1, d2)
}

/// The advert of issue 11 for the lab's VIP: priority 254, 40.95 s.
fn forged_advert(lab: &Lab) -> Advert {
    Advert {
        version: Version::V3,
        vrid: VRID,
        priority: 254,
        interval_cs: MAX_V3_INTERVAL_CS,
        addresses: vec![lab.vip().into()],
        auth_type: AUTH_NONE,
        auth_data: [0; 8],
    }
}

/// An IPv4 packet carrying `payload` as VRRP from `src` to `dst`, TTL 255.
fn ip_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0xc0];
    p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, VRRP_TTL, IPPROTO_VRRP, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let sum = internet_checksum(&[&p]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Sends `advert` from the client's namespace once per (source, destination)
/// pair, `gap` apart, on a raw socket that writes its own IP header: the
/// source addresses are whatever the forger likes.
fn forge(lab: &Lab, sends: Vec<(Ipv4Addr, Ipv4Addr)>, advert: Advert, gap: Duration) {
    spawn_in_netns(&lab.client().ns, move || async move {
        // SAFETY: plain syscall; the fd is owned right after the check.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(raw >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh fd nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let dev = HOST_IFACE.as_bytes();
        // SAFETY: a valid buffer of the given length.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                dev.as_ptr().cast(),
                dev.len() as u32,
            )
        };
        assert_eq!(rc, 0, "SO_BINDTODEVICE: {}", std::io::Error::last_os_error());
        for (i, (src, dst)) in sends.into_iter().enumerate() {
            if i > 0 {
                std::thread::sleep(gap);
            }
            let packet = ip_packet(src, dst, &advert.encode(src.into(), dst.into()));
            let to = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(dst.octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: a valid buffer and sockaddr_in.
            let sent = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    packet.as_ptr().cast(),
                    packet.len(),
                    0,
                    (&raw const to).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            };
            assert_eq!(sent, packet.len() as isize, "sendto {dst}: {}", std::io::Error::last_os_error());
        }
    })
    .join()
    .unwrap();
}

#[test]
fn a_forged_advert_stops_the_master_no_longer_than_the_bounded_interval() {
    if !root_or_skip("vrrp_forged") {
        return;
    }
    let lab = lab("vrrp-forged", 111);
    let (d1, d2) = start_pair(&lab, false);
    let forger = Ipv4Addr::new(10, 111, 0, 66);
    let transitions = |d: &Director<'_>| status(d)["transitions"].as_u64().unwrap();
    let before = transitions(&d1);

    // One forged advert: director1 yields to priority 254, as VRRP says,
    // and is master again after its own master-down interval.
    let sent = Instant::now();
    forge(&lab, vec![(forger, VRRP_GROUP)], forged_advert(&lab), Duration::ZERO);
    let bound = master_down(HIGH, INTERVAL) + SLACK;
    let back = wait_for(bound + Duration::from_secs(10), || {
        transitions(&d1) >= before + 2 && status(&d1)["state"] == "master"
    });
    let took = sent.elapsed();
    assert!(back.is_some(), "director1 is not master again: {}\n{}", status(&d1), d1.log());
    eprintln!("one forged advert: director1 master again after {took:?}");
    assert!(took < bound, "master again after {took:?}, not within {bound:?}\n{}", d1.log());
    wait_for(Duration::from_secs(3), || settled(&d1, &d2))
        .unwrap_or_else(|| panic!("director2 back to director1: {}", status(&d2)));

    // A forger that keeps sending is followed; its interval is believed up
    // to 10 × 200 ms. When it stops, director1 is back within the
    // master-down interval of that.
    let sends = vec![(forger, VRRP_GROUP); 5];
    forge(&lab, sends, forged_advert(&lab), INTERVAL);
    let stopped = Instant::now();
    let s1 = status(&d1);
    assert_eq!(s1["state"], "backup", "{s1}");
    assert_eq!(s1["master_address"], forger.to_string(), "{s1}");
    let bound = master_down(HIGH, 10 * INTERVAL) + SLACK;
    let back = wait_for(bound + Duration::from_secs(10), || status(&d1)["state"] == "master");
    let took = stopped.elapsed();
    assert!(back.is_some(), "director1 is not master again: {}\n{}", status(&d1), d1.log());
    eprintln!("a forger sending 5 adverts: director1 master again {took:?} after the last");
    assert!(took < bound, "master again after {took:?}, not within {bound:?}\n{}", d1.log());
    wait_for(Duration::from_secs(3), || settled(&d1, &d2))
        .unwrap_or_else(|| panic!("director2 back to director1: {}", status(&d2)));

    // keepalived's line for another interval, once for this sender.
    let log = d1.log();
    let mismatch =
        format!("advertisement interval mismatch with {forger}: ours 200 ms, theirs 40950 ms, taken as 2000 ms");
    assert_eq!(log.matches(&mismatch).count(), 1, "{log}");
    finish(d2);
    finish(d1);
}

#[test]
fn with_unicast_peers_adverts_from_anyone_else_change_nothing_and_are_logged_once() {
    if !root_or_skip("vrrp_forged_unicast") {
        return;
    }
    let lab = lab("vrrp-unicast", 112);
    let (d1, d2) = start_pair(&lab, true);
    let transitions = (status(&d1)["transitions"].clone(), status(&d2)["transitions"].clone());

    // Twenty forged sources, each to both directors.
    let mut sends = Vec::new();
    for i in 0..20 {
        let src = Ipv4Addr::new(10, 112, 0, 200 + i);
        sends.push((src, d1.host().ip));
        sends.push((src, d2.host().ip));
    }
    forge(&lab, sends, forged_advert(&lab), Duration::from_millis(5));
    std::thread::sleep(5 * INTERVAL);

    let (s1, s2) = (status(&d1), status(&d2));
    assert!(settled(&d1, &d2), "{s1}\n{s2}");
    assert_eq!((s1["transitions"].clone(), s2["transitions"].clone()), transitions, "{s1}\n{s2}");
    for s in [&s1, &s2] {
        assert_eq!(s["bad_adverts"], 20, "{s}");
        assert!(s["last_bad_advert"].as_str().unwrap().contains("is not a unicast peer"), "{s}");
    }
    // One line for twenty bad adverts (the rest are counted in the next
    // line, ten seconds on).
    for d in [&d1, &d2] {
        let log = d.log();
        assert_eq!(log.matches("is not a unicast peer").count(), 1, "{log}");
    }
    finish(d2);
    finish(d1);
}
