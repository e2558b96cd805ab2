//! What the end-to-end tests in `tests/` share: skipping without root, a lab
//! with lab-server answering on its real servers, a started director and its
//! clean end, requests through the VIP and their tally, `/whoami` answers,
//! polling (for lbctl's listings too), a line's number in a text.
//!
//! Unlike the rest of this crate these helpers panic on failure, as the
//! tests themselves do. The lab-server binary is passed in by the tests
//! (`env!("CARGO_BIN_EXE_lab-server")`, set only for integration tests).

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::director::{BPFFS, Director, RealRow, ServiceSpec};
use crate::lab::{HTTP_PORT, Host, Lab, LabSpec};
use crate::netns::{namespace_exists, run_in_netns};

/// True when running as root; otherwise says that `test` is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if !crate::is_root() {
        eprintln!("skipping {test}: the namespace lab needs root");
    }
    crate::is_root()
}

/// A lab with `reals` real servers on subnet 10.k.0.0/24, `lab_server`
/// answering HTTP on port 80 of each.
pub fn lab_with_servers(lab_server: impl AsRef<Path>, name: &str, k: u8, reals: usize) -> Lab {
    let lab = Lab::build(LabSpec::new(name).reals(reals).subnet_index(k)).unwrap();
    lab.start_http_servers_with(lab_server.as_ref()).unwrap();
    lab
}

/// A lab with its two real servers behind a router (LVS-TUN), each running
/// the decap program (tunnels from the director only, for the VIP on lo)
/// and `lab_server` on port 80.
pub fn tun_lab(lab_server: impl AsRef<Path>, name: &str, k: u8) -> Lab {
    let lab = Lab::build(LabSpec::new(name).reals(2).subnet_index(k).remote_reals()).unwrap();
    let lbd = crate::director::userspace_binary("lbd").unwrap();
    let lbd = lbd.to_str().unwrap();
    let director = lab.director().ip.to_string();
    for real in lab.reals() {
        lab.spawn(&real.ns, "decap", &[lbd, "decap", "--interface", "eth0", "--from", &director]).unwrap();
    }
    lab.start_http_servers_with(lab_server.as_ref()).unwrap();
    // The decap programs are attached once they log their addresses.
    std::thread::sleep(Duration::from_millis(500));
    lab
}

/// A lab with `reals` real servers on subnet 10.k.0.0/24, `lab_server`'s
/// UDP echo on `port` of each (see [`Lab::start_udp_servers_with`]).
pub fn lab_with_udp_servers(lab_server: impl AsRef<Path>, name: &str, k: u8, reals: usize, port: u16) -> Lab {
    let lab = Lab::build(LabSpec::new(name).reals(reals).subnet_index(k)).unwrap();
    lab.start_udp_servers_with(lab_server.as_ref(), port).unwrap();
    lab
}

/// A director for `lab` with `services`, started (see [`start_configured`]).
pub fn start_director<'a>(lab: &'a Lab, services: &[ServiceSpec]) -> Director<'a> {
    start_configured(Director::new(lab).unwrap(), services)
}

/// Writes `director`'s config with `services` (and whatever else was set on
/// it, e.g. [`Director::director_setting`]) and starts lbd, which must have
/// found every real server's MAC.
pub fn start_configured<'a>(mut director: Director<'a>, services: &[ServiceSpec]) -> Director<'a> {
    director.write_config(services).unwrap();
    director.start().unwrap_or_else(|e| {
        panic!(
            "{e:#}\nconfig:\n{}",
            std::fs::read_to_string(&director.config_path).unwrap_or_default()
        )
    });
    let log = director.log();
    assert!(
        !log.contains("does not answer ARP yet"),
        "lbd started without every real server's MAC:\n{log}"
    );
    director
}

/// Ends a test's director: SIGTERM to lbd, which must exit 0 with XDP
/// detached and its pin dir and socket gone.
pub fn finish(mut director: Director<'_>) {
    director.stop_and_check_clean().unwrap();
}

/// Drops the lab; none of its namespaces (nor the director's pin dir) may remain.
pub fn teardown(lab: Lab) {
    let namespaces = lab.namespaces();
    let pin_path = Path::new(BPFFS).join(lab.id());
    drop(lab);
    for ns in &namespaces {
        assert!(!namespace_exists(ns), "namespace {ns} left behind");
    }
    assert!(!pin_path.exists(), "{} left behind", pin_path.display());
}

/// The lab's HTTP service address, VIP:80.
pub fn vip80(lab: &Lab) -> SocketAddrV4 {
    SocketAddrV4::new(lab.vip(), HTTP_PORT)
}

/// `http://VIP:80{path}`.
pub fn vip_url(lab: &Lab, path: &str) -> String {
    format!("http://{}{path}", vip80(lab))
}

/// `n` sequential curls (new connections) to the VIP; the name of the real
/// server that answered each, in order.
pub fn curl_vip(lab: &Lab, n: usize) -> Vec<String> {
    let url = vip_url(lab, "/");
    (0..n)
        .map(|i| {
            let body = lab
                .curl(&url)
                .unwrap_or_else(|e| panic!("curl {} of {n} to the VIP: {e:#}", i + 1));
            body.trim_end().to_owned()
        })
        .collect()
}

/// How many of `names` are each name.
pub fn tally<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for n in names {
        *counts.entry(n.clone()).or_insert(0) += 1;
    }
    counts
}

/// A tally written out: `counts(&[("rs1", 2), ("rs2", 2)])`.
pub fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// Calls `probe` every 100 ms until it says done; returns its last value,
/// or panics after `timeout` with `what` and that value.
pub fn wait_until<T: std::fmt::Debug>(what: &str, timeout: Duration, mut probe: impl FnMut() -> (bool, T)) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let (done, value) = probe();
        if done {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("{what} within {timeout:?}; last seen: {value:#?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `lbctl -L -n` row of real server `real` on `port`.
pub fn row_of<'r>(rows: &'r [RealRow], real: &Host, port: u16) -> &'r RealRow {
    rows.iter()
        .find(|r| r.real == SocketAddrV4::new(real.ip, port))
        .unwrap_or_else(|| panic!("no row for {} in {rows:#?}", real.ip))
}

/// Waits until `lbctl -L -n -c` lists exactly `n` entries, all in FIN_WAIT
/// (each finished curl's FIN has reached the director); returns the listing.
pub fn wait_for_fin_wait(director: &Director<'_>, n: usize) -> String {
    wait_until(
        &format!("{n} connection entries, all in FIN_WAIT"),
        Duration::from_secs(5),
        || {
            let out = director.lbctl(&["-L", "-n", "-c"]).unwrap();
            let entries: Vec<&str> = out.lines().skip(2).collect();
            let done = entries.len() == n
                && entries
                    .iter()
                    .all(|l| l.split_whitespace().nth(2) == Some("FIN_WAIT"));
            (done, out)
        },
    )
}

/// One `/whoami` answer: the real server's name and the client's port.
pub fn whoami(body: &str) -> (String, u16) {
    let fields: Vec<&str> = body.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "not a /whoami answer: {body:?}");
    let port = fields[1]
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("no client port in {body:?}"));
    (fields[0].to_owned(), port)
}

/// 1-based number of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in\n{text}"))
        + 1
}

/// One UDP flow from the client to VIP:`port`, to lab-server's echo: a
/// socket in the client's namespace with one source port for every
/// datagram. It is connected, so only answers from the VIP count.
pub struct UdpFlow {
    socket: UdpSocket,
    seq: u32,
}

impl UdpFlow {
    pub fn open(lab: &Lab, port: u16) -> UdpFlow {
        let target = SocketAddr::V4(SocketAddrV4::new(lab.vip(), port));
        // The socket stays in the client's namespace after this thread ends.
        let socket = run_in_netns(&lab.client().ns, move || {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket.connect(target).unwrap();
            socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            socket
        })
        .unwrap();
        UdpFlow { socket, seq: 0 }
    }

    /// The flow's source port.
    pub fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// One datagram and its echo: the name of the server that answered.
    pub fn exchange(&mut self) -> String {
        self.seq += 1;
        let payload = format!("datagram {}", self.seq);
        self.socket.send(payload.as_bytes()).unwrap();
        let mut buf = [0u8; 2048];
        let n = self
            .socket
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no answer to {payload:?} from port {}: {e}", self.port()));
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (server, echoed) = answer
            .split_once(' ')
            .unwrap_or_else(|| panic!("bad answer {answer:?}"));
        assert_eq!(echoed, payload);
        server.to_owned()
    }
}
