//! VRRP over a real link: lbd's VRRP instances in two network namespaces
//! joined by a veth pair (root only; skipped otherwise), and keepalived on
//! the other end when it is installed.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_tests::{
    keepalived::{self, Keepalived},
    netns::{VETH_ADDR_A as ADDR_A, VETH_ADDR_B as ADDR_B, VethPair, spawn_in_netns},
};
use lb_ipvsadm::vrrp::VrrpStatus;
use lb_userspace::{
    model::{Protocol, ServiceId},
    vrrp::{
        config::{TrackService, Vip, VrrpConfig},
        instance::VrrpInstance,
        net::{AdvertSocket, if_index},
        packet::{AUTH_NONE, Advert, Version},
        state::State,
    },
};
use tokio::sync::{oneshot, watch};

enum Stop {
    Clean,
    Abort,
}

/// An instance running on its own thread inside a namespace.
struct Running {
    status: watch::Receiver<VrrpStatus>,
    alive: tokio::sync::mpsc::UnboundedSender<(usize, bool)>,
    stop: Option<oneshot::Sender<Stop>>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    fn start(ns: &str, config: VrrpConfig) -> Self {
        let (status_tx, status_rx) = mpsc::channel();
        let (stop_tx, mut stop_rx) = oneshot::channel();
        let (alive_tx, mut alive_rx) = tokio::sync::mpsc::unbounded_channel();
        let thread = spawn_in_netns(ns, move || async move {
            let instance = VrrpInstance::start(config).await.expect("start the instance");
            status_tx.send(instance.watch()).unwrap();
            let stop = loop {
                tokio::select! {
                    stop = &mut stop_rx => break stop,
                    Some((index, alive)) = alive_rx.recv() => instance.set_service_alive(index, alive),
                }
            };
            match stop {
                Ok(Stop::Clean) | Err(_) => instance.shutdown().await,
                Ok(Stop::Abort) => instance.abort(),
            }
        });
        let status = status_rx.recv_timeout(Duration::from_secs(10)).expect("the instance started");
        Self { status, alive: alive_tx, stop: Some(stop_tx), thread: Some(thread) }
    }

    fn set_service_alive(&self, index: usize, alive: bool) {
        self.alive.send((index, alive)).unwrap();
    }

    fn status(&self) -> VrrpStatus {
        self.status.borrow().clone()
    }

    fn state(&self) -> State {
        self.status.borrow().state
    }

    /// Tells the instance to stop; returns at once.
    fn stop(&mut self, how: Stop) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
    }

    /// Stops (if not yet) and waits for the thread.
    fn join(&mut self) {
        self.stop(Stop::Clean);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("instance thread");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop(Stop::Clean);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn config(interface: &str, priority: u8, interval: Duration) -> VrrpConfig {
    let mut c = VrrpConfig::new(interface, 42, &[Vip::new(VIP, 24)]);
    c.priority = priority;
    c.advert_interval = interval;
    c
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns how
/// long it took, or `None`.
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

/// Skew time of a v3 backup of this priority whose master adverts every
/// `interval`.
fn skew(priority: u8, interval: Duration) -> Duration {
    interval * (256 - u32::from(priority)) / 256
}

#[test]
fn two_instances_elect_a_master_and_fail_over_on_clean_shutdown() {
    let Some(net) = VethPair::new("vrrp1") else { return };
    let interval = Duration::from_millis(300);
    let notes = std::env::temp_dir().join(format!("lbt-vrrpnotify-{}", std::process::id()));
    let _ = std::fs::remove_file(&notes);
    let mut a = Running::start(&net.a, config("va", 200, interval));
    let mut cb = config("vb", 100, interval);
    let append =
        |what: &str| format!("echo {what} $LB_VRRP_STATE $LB_VRRP_INSTANCE $LB_VRRP_PRIORITY >> {}", notes.display());
    cb.notify_master = Some(append("master"));
    cb.notify_backup = Some(append("backup"));
    let mut b = Running::start(&net.b, cb);

    let elected = wait_for(Duration::from_secs(10), || {
        let (sa, sb) = (a.status(), b.status());
        sa.state == State::Master && sb.state == State::Backup && sb.master_address == Some(ADDR_A.into())
    });
    assert!(elected.is_some(), "no election: {:?} / {:?}", a.status(), b.status());
    assert!(net.has_address(&net.a, "va", "192.0.2.100"), "the master holds the VIP");
    assert!(!net.has_address(&net.b, "vb", "192.0.2.100"), "the backup does not");

    // Stable over a few adverts, none of them bad.
    std::thread::sleep(4 * interval);
    let (sa, sb) = (a.status(), b.status());
    assert_eq!((sa.state, sb.state), (State::Master, State::Backup));
    assert_eq!(sa.master_address, Some(ADDR_A.into()));
    assert!(sb.adverts_received >= 3, "{sb:?}");
    assert_eq!((sa.bad_adverts, sb.bad_adverts), (0, 0), "{sa:?} {sb:?}");
    assert_eq!((sa.source_address, sb.source_address), (ADDR_A.into(), ADDR_B.into()));

    // A clean stop: priority 0, and the backup is master after its skew
    // time, well before the master-down interval.
    a.stop(Stop::Clean);
    let took = wait_for(Duration::from_secs(5), || b.state() == State::Master).expect("the backup took over");
    let master_down = 3 * interval + skew(100, interval);
    eprintln!("takeover after a clean stop: {took:?} (skew {:?}, master down {master_down:?})", skew(100, interval));
    assert!(took < skew(100, interval) + Duration::from_millis(500), "{took:?}");
    assert!(took < master_down, "{took:?}");
    a.join();
    assert!(!net.has_address(&net.a, "va", "192.0.2.100"), "the old master removed the VIP");
    assert!(
        wait_for(Duration::from_secs(2), || net.has_address(&net.b, "vb", "192.0.2.100")).is_some(),
        "the new master holds the VIP"
    );
    assert_eq!(b.status().master_address, Some(ADDR_B.into()));
    let expected = "backup BACKUP vb-42 100\nmaster MASTER vb-42 100\n";
    wait_for(Duration::from_secs(5), || std::fs::read_to_string(&notes).unwrap_or_default() == expected)
        .unwrap_or_else(|| panic!("notify commands: {:?}", std::fs::read_to_string(&notes)));
    let _ = std::fs::remove_file(&notes);
    b.join();
    assert!(!net.has_address(&net.b, "vb", "192.0.2.100"), "a clean stop removes the VIP");
}

#[test]
fn a_crashed_master_is_replaced_after_the_master_down_interval() {
    let Some(net) = VethPair::new("vrrp2") else { return };
    let interval = Duration::from_millis(200);
    let mut a = Running::start(&net.a, config("va", 200, interval));
    let b = Running::start(&net.b, config("vb", 100, interval));
    wait_for(Duration::from_secs(10), || a.state() == State::Master && b.state() == State::Backup).expect("election");
    std::thread::sleep(2 * interval);
    a.stop(Stop::Abort);
    a.join();
    let start = Instant::now();
    wait_for(Duration::from_secs(5), || b.state() == State::Master).expect("the backup took over");
    let took = start.elapsed();
    let master_down = 3 * interval + skew(100, interval);
    eprintln!("takeover after a crash: {took:?} (master down {master_down:?})");
    assert!(took > master_down - interval - Duration::from_millis(50), "{took:?}: too early for a crash");
    assert!(took < master_down + Duration::from_millis(700), "{took:?}");
}

#[test]
fn a_tracked_interface_going_down_hands_over() {
    let Some(net) = VethPair::new("vrrp5") else { return };
    // d0's carrier is d1's state (no dummy driver here).
    net.ip(&net.a, &["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    net.ip(&net.a, &["link", "set", "d0", "up"]);
    net.ip(&net.a, &["link", "set", "d1", "up"]);
    let interval = Duration::from_millis(200);
    let mut ca = config("va", 200, interval);
    ca.track_interface = vec!["d0".into()];
    let a = Running::start(&net.a, ca);
    let b = Running::start(&net.b, config("vb", 100, interval));
    wait_for(Duration::from_secs(10), || a.state() == State::Master && b.state() == State::Backup).expect("election");
    net.ip(&net.a, &["link", "set", "d1", "down"]);
    // No carrier on d0: seen within the link poll; a's priority-0 advert hands over at once.
    wait_for(Duration::from_secs(3), || a.state() == State::Fault && b.state() == State::Master)
        .unwrap_or_else(|| panic!("{:?} / {:?}", a.status(), b.status()));
    assert!(!net.has_address(&net.a, "va", "192.0.2.100"));
    net.ip(&net.a, &["link", "set", "d1", "up"]);
    // Back: backup first, then it preempts b with its higher priority.
    wait_for(Duration::from_secs(5), || a.state() == State::Master && b.state() == State::Backup)
        .unwrap_or_else(|| panic!("{:?} / {:?}", a.status(), b.status()));
}

#[test]
fn a_tracked_service_without_real_servers_lowers_the_priority() {
    let Some(net) = VethPair::new("vrrp6") else { return };
    let interval = Duration::from_millis(200);
    let mut ca = config("va", 200, interval);
    let service = ServiceId::address(Protocol::Tcp, VIP.into(), 80);
    ca.track_service = vec![TrackService { service, weight: -150 }];
    let a = Running::start(&net.a, ca);
    let b = Running::start(&net.b, config("vb", 100, interval));
    wait_for(Duration::from_secs(10), || a.state() == State::Master && b.state() == State::Backup).expect("election");
    a.set_service_alive(0, false);
    wait_for(Duration::from_secs(5), || a.state() == State::Backup && b.state() == State::Master)
        .unwrap_or_else(|| panic!("{:?} / {:?}", a.status(), b.status()));
    assert_eq!(a.status().effective_priority, 50);
    assert_eq!(a.status().master_address, Some(ADDR_B.into()));
    a.set_service_alive(0, true);
    wait_for(Duration::from_secs(5), || a.state() == State::Master && b.state() == State::Backup)
        .unwrap_or_else(|| panic!("{:?} / {:?}", a.status(), b.status()));
    assert_eq!(a.status().effective_priority, 200);
}

/// A packet socket counting the gratuitous ARPs for `vip` seen on `dev`.
fn count_garps(dev: &str, vip: Ipv4Addr, wait: Duration) -> usize {
    let ifindex = if_index(dev).unwrap();
    // SAFETY: plain syscall; the fd is owned right after the check.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from((libc::ETH_P_ARP as u16).to_be())) };
    assert!(raw >= 0);
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: all-zero sockaddr_ll is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: a valid sockaddr_ll.
    let rc = unsafe {
        libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), std::mem::size_of::<libc::sockaddr_ll>() as u32)
    };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + wait;
    let mut count = 0;
    while Instant::now() < deadline {
        let mut pollfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = deadline.saturating_duration_since(Instant::now()).as_millis() as i32;
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pollfd, 1, ms.max(1)) } <= 0 {
            continue;
        }
        let mut buf = [0u8; 64];
        // SAFETY: a valid buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 28 && buf[6..8] == [0, 1] && buf[14..18] == vip.octets() && buf[24..28] == vip.octets() {
            count += 1;
        }
    }
    count
}

#[test]
fn a_master_hearing_a_lower_master_stays_and_sends_garps_again() {
    let Some(net) = VethPair::new("vrrp3") else { return };
    let interval = Duration::from_millis(200);
    let mut c = config("va", 200, interval);
    c.garp_master_delay = Duration::ZERO;
    let a = Running::start(&net.a, c);
    wait_for(Duration::from_secs(10), || a.state() == State::Master).expect("master");
    // Let the first gratuitous ARPs pass.
    std::thread::sleep(Duration::from_millis(300));

    // From b: a master advert with priority 50 (as if b had been master
    // while the link was cut), then the ARPs a sends.
    let garps = spawn_in_netns(&net.b, || async {
        let listener = std::thread::spawn(|| count_garps("vb", VIP, Duration::from_millis(600)));
        std::thread::sleep(Duration::from_millis(50));
        let socket = AdvertSocket::open("vb", if_index("vb").unwrap(), ADDR_B.into(), &[]).unwrap();
        let advert = Advert {
            version: Version::V3,
            vrid: 42,
            priority: 50,
            interval_cs: 20,
            addresses: vec![VIP.into()],
            auth_type: AUTH_NONE,
            auth_data: [0; 8],
        };
        socket.send(&advert).await.unwrap();
        listener.join().unwrap()
    })
    .join()
    .unwrap();
    let s = a.status();
    assert_eq!(s.state, State::Master);
    assert_eq!(s.adverts_received, 1);
    assert_eq!(garps, 5, "garp_master_repeat gratuitous ARPs right after the lower master's advert");
}

#[test]
fn bad_adverts_are_counted_and_ignored() {
    let Some(net) = VethPair::new("vrrp4") else { return };
    let interval = Duration::from_millis(200);
    let a = Running::start(&net.a, config("va", 100, interval));
    wait_for(Duration::from_secs(10), || a.state() == State::Master).expect("master");
    spawn_in_netns(&net.b, || async {
        let socket = AdvertSocket::open("vb", if_index("vb").unwrap(), ADDR_B.into(), &[]).unwrap();
        let mut advert = Advert {
            version: Version::V3,
            vrid: 42,
            priority: 250,
            interval_cs: 20,
            addresses: vec![Ipv4Addr::new(192, 0, 2, 99).into()],
            auth_type: AUTH_NONE,
            auth_data: [0; 8],
        };
        // Other addresses: bad. Another VRID: not ours, not bad.
        socket.send(&advert).await.unwrap();
        advert.vrid = 43;
        socket.send(&advert).await.unwrap();
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let s = a.status();
    assert_eq!(s.state, State::Master, "a higher priority in a bad advert changes nothing");
    assert_eq!(s.bad_adverts, 1, "{s:?}");
    assert!(s.last_bad_advert.unwrap().contains("virtual addresses differ"));
}

// keepalived on the other end.

fn interop(version: Version, tag: &str) {
    let Some(net) = VethPair::new(tag) else { return };
    if !keepalived::installed_or_skip(tag) {
        return;
    }
    let dir = std::env::temp_dir().join(format!("lbt-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (interval, advert_int, auth) = match version {
        Version::V2 => {
            (Duration::from_secs(1), "1", "  authentication {\n    auth_type PASS\n    auth_pass lbsecret\n  }\n")
        }
        Version::V3 => (Duration::from_millis(300), "0.3", ""),
    };
    let conf = format!(
        "global_defs {{\n  router_id {tag}\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  interface va\n  virtual_router_id 42\n  priority 100\n  advert_int {advert_int}\n  version {}\n{auth}  virtual_ipaddress {{\n    192.0.2.100/24\n  }}\n}}\n",
        version.number()
    );
    let mut keepalived = Keepalived::new(&net.a, &dir, tag);
    keepalived.start(&conf);
    let ours = |priority| {
        let mut c = config("vb", priority, interval);
        c.version = version;
        if version == Version::V2 {
            c.auth_pass = Some("lbsecret".into());
        }
        c
    };
    let keepalived_has_vip = || net.has_address(&net.a, "va", "192.0.2.100");
    let log_text = || keepalived.log();

    // keepalived alone: master.
    wait_for(Duration::from_secs(15), keepalived_has_vip)
        .unwrap_or_else(|| panic!("keepalived master: {}", log_text()));

    // Ours with priority 150 preempts it.
    let mut high = Running::start(&net.b, ours(150));
    let took = wait_for(Duration::from_secs(15), || {
        high.state() == State::Master && !keepalived_has_vip() && net.has_address(&net.b, "vb", "192.0.2.100")
    });
    assert!(took.is_some(), "ours did not take over: {:?}\n{}", high.status(), log_text());
    let s = high.status();
    assert!(s.adverts_received > 0, "heard keepalived: {s:?}");
    assert_eq!(s.bad_adverts, 0, "{s:?}");
    std::thread::sleep(3 * interval);
    assert_eq!(high.state(), State::Master);
    assert!(!keepalived_has_vip());
    assert!(log_text().contains("Entering BACKUP STATE"), "{}", log_text());

    // A clean stop: keepalived takes over after its skew time, not its
    // master-down interval.
    high.stop(Stop::Clean);
    let took = wait_for(Duration::from_secs(10), keepalived_has_vip).expect("keepalived took over");
    let keepalived_skew = match version {
        Version::V2 => Duration::from_secs(1) * 156 / 256,
        Version::V3 => skew(100, interval),
    };
    eprintln!("keepalived took over after {took:?} (its skew {keepalived_skew:?})");
    assert!(took < keepalived_skew + Duration::from_millis(600), "{took:?}");
    high.join();

    // Ours with priority 50: backup, keepalived stays master.
    let low = Running::start(&net.b, ours(50));
    wait_for(Duration::from_secs(5), || low.status().master_address == Some(ADDR_A.into())).expect("backup of keepalived");
    std::thread::sleep(4 * interval);
    let s = low.status();
    assert_eq!(s.state, State::Backup, "{s:?}");
    assert!(s.adverts_received >= 3, "{s:?}");
    assert_eq!(s.bad_adverts, 0, "{s:?}");
    assert!(keepalived_has_vip());
    drop(low);
    keepalived.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn interoperates_with_keepalived_vrrpv3() {
    interop(Version::V3, "ka3");
}

#[test]
fn interoperates_with_keepalived_vrrpv2_with_a_password() {
    interop(Version::V2, "ka2");
}
