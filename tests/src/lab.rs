//! The namespace lab: an LVS-DR cluster on one machine.
//!
//! Every device lives in a namespace the lab creates; nothing touches the
//! root namespace. For subnet index `k` (see [`LabSpec`]):
//!
//! ```text
//!   <id>-switch    br0, with one port per host: p-client, p-director, p-rs1..
//!   <id>-client    eth0 10.k.0.10/24
//!   <id>-director  eth0 10.k.0.1/24 + VIP 10.k.0.100/32   (XDP goes here)
//!   <id>-directorN eth0 10.k.0.N/24 (N = 2..; only with `LabSpec::directors`)
//!   <id>-rsI       eth0 10.k.0.(20+I)/24, VIP/32 on lo, arp_ignore=1, arp_announce=2
//! ```
//!
//! `<id>` is `lbt-<name>-<pid>-<seq>`, unique per lab, so tests can run in
//! parallel (the same subnet in two labs is fine: they share nothing). The
//! owner pid in the name lets [`cleanup_stale_labs`] remove what a crashed
//! run left behind. Dropping a [`Lab`] kills the processes it spawned and
//! deletes its namespaces, also while unwinding from a panic.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::bins::find_binary;
use crate::netns::{self, DEFAULT_COMMAND_TIMEOUT, MacAddr};

/// Prefix of every namespace (and log dir) a lab creates.
pub const LAB_PREFIX: &str = "lbt-";
/// Interface name of each host's link to the switch.
pub const HOST_IFACE: &str = "eth0";
/// Name of the bridge in the switch namespace.
pub const BRIDGE: &str = "br0";
/// Port the lab's HTTP servers listen on.
pub const HTTP_PORT: u16 = 80;
pub const DEFAULT_REALS: usize = 2;
pub const DEFAULT_SUBNET_INDEX: u8 = 10;
/// Prefix length of the lab subnet.
pub const PREFIX_LEN: u8 = 24;
/// Overrides where the XDP pass program for the director's bridge port is loaded from.
pub const XDP_PASS_OBJ_ENV: &str = "LB_LAB_XDP_PASS_OBJ";
/// Where xdp-tools installs its "allow everything" filter program (section `xdp`).
const XDP_PASS_OBJ_CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_all.o",
    "/usr/lib/aarch64-linux-gnu/bpf/xdpfilt_alw_all.o",
    "/usr/lib/bpf/xdpfilt_alw_all.o",
    "/usr/lib64/bpf/xdpfilt_alw_all.o",
    "/usr/share/xdp-tools/xdpfilt_alw_all.o",
];
const MAX_REALS: usize = 79; // .21 ..= .99, below the VIP at .100
const MAX_DIRECTORS: usize = 9; // .1 ..= .9, below the client at .10

/// Counter that makes lab ids unique within one process.
static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

/// What to build.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// Short name, usually the test's; becomes part of the namespace names.
    pub name: String,
    /// Number of real servers (default 2).
    pub reals: usize,
    /// `k` in the subnet 10.k.0.0/24 (default 10).
    pub subnet_index: u8,
    /// Attach an XDP pass program to the director's bridge port (default true).
    /// Without it, frames the director sends with native XDP_TX are dropped:
    /// a veth only delivers XDP frames when its peer has an XDP program.
    pub xdp_pass_on_director_port: bool,
    /// The XDP object for that (section `xdp`); default [`xdp_pass_object`].
    pub xdp_pass_object: Option<PathBuf>,
    /// Put the real servers on their own subnet (10.k.1.0/24, bridge `br1`)
    /// behind a router namespace (10.k.0.254 / 10.k.1.254), as for LVS-TUN.
    pub remote_reals: bool,
    /// Number of directors on the client segment (default 1): `director`
    /// (10.k.0.1), then `director2` (10.k.0.2), ... Each gets the XDP pass
    /// program on its bridge port (with `xdp_pass_on_director_port`).
    pub directors: usize,
    /// Put the VIP on the (first) director's eth0 at build time (default
    /// true). Off for VRRP, which adds the VIP on whichever director is master.
    pub static_vip: bool,
}

impl LabSpec {
    pub fn new(name: &str) -> Self {
        LabSpec {
            name: name.to_owned(),
            reals: DEFAULT_REALS,
            subnet_index: DEFAULT_SUBNET_INDEX,
            xdp_pass_on_director_port: true,
            xdp_pass_object: None,
            remote_reals: false,
            directors: 1,
            static_vip: true,
        }
    }

    /// `n` directors on the client segment (see [`LabSpec::directors`]).
    pub fn directors(mut self, n: usize) -> Self {
        self.directors = n;
        self
    }

    /// No VIP on any director at build time (VRRP adds it).
    pub fn without_static_vip(mut self) -> Self {
        self.static_vip = false;
        self
    }

    /// Real servers on another subnet, behind a router.
    pub fn remote_reals(mut self) -> Self {
        self.remote_reals = true;
        self
    }

    pub fn reals(mut self, reals: usize) -> Self {
        self.reals = reals;
        self
    }

    pub fn subnet_index(mut self, k: u8) -> Self {
        self.subnet_index = k;
        self
    }
}

/// One machine of the lab: a namespace with `eth0` plugged into the switch.
#[derive(Clone, Debug)]
pub struct Host {
    /// "client", "director", "rs1", ...
    pub name: String,
    /// Namespace name (`/run/netns/<ns>`).
    pub ns: String,
    /// Its own address on eth0.
    pub ip: Ipv4Addr,
    /// eth0's MAC, fixed as 02:00:0a:<k>:00:<last octet of ip>.
    pub mac: MacAddr,
    /// The peer veth, a port of the bridge in the switch namespace.
    pub bridge_port: String,
}

impl Host {
    fn new(id: &str, name: &str, subnet_index: u8, last_octet: u8) -> Host {
        Self::on_segment(id, name, subnet_index, 0, last_octet)
    }

    /// A host on segment `segment` (third octet) of the lab's 10.k.x.0/24s.
    fn on_segment(id: &str, name: &str, subnet_index: u8, segment: u8, last_octet: u8) -> Host {
        Host {
            name: name.to_owned(),
            ns: format!("{id}-{name}"),
            ip: Ipv4Addr::new(10, subnet_index, segment, last_octet),
            mac: MacAddr([0x02, segment, 10, subnet_index, 0, last_octet]),
            bridge_port: format!("p-{name}"),
        }
    }
}

/// The router between the lab's two segments.
pub const ROUTER_LAST_OCTET: u8 = 254;
/// The real servers' bridge when they are remote.
pub const REMOTE_BRIDGE: &str = "br1";

/// Packet counters of one interface (see [`Lab::link_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// A process started with [`Lab::spawn`]; its stdout and stderr go to `log`.
#[derive(Clone, Debug)]
pub struct ProcHandle {
    pub pid: u32,
    pub label: String,
    pub ns: String,
    pub log: PathBuf,
}

struct Tracked {
    handle: ProcHandle,
    child: Child,
}

/// A built lab; see the module docs.
pub struct Lab {
    spec: LabSpec,
    id: String,
    switch_ns: String,
    client: Host,
    director: Host,
    /// Every director, `director` first.
    directors: Vec<Host>,
    reals: Vec<Host>,
    /// With remote real servers: the router, eth0 on the client segment,
    /// eth1 on the real servers' segment.
    router: Option<Host>,
    vip: Ipv4Addr,
    /// Namespaces created so far, for teardown (also after a failed build).
    created: Vec<String>,
    children: Mutex<Vec<Tracked>>,
    log_dir: PathBuf,
    spawn_seq: AtomicU32,
}

impl Lab {
    /// Builds the topology. Stale labs of dead processes are removed first.
    /// On error, whatever was created is removed again.
    pub fn build(spec: LabSpec) -> Result<Lab> {
        ensure!(
            (1..=MAX_REALS).contains(&spec.reals),
            "reals must be between 1 and {MAX_REALS}, not {}",
            spec.reals
        );
        ensure!(
            (1..=MAX_DIRECTORS).contains(&spec.directors),
            "directors must be between 1 and {MAX_DIRECTORS}, not {}",
            spec.directors
        );
        if let Err(e) = cleanup_stale_labs() {
            eprintln!("lab: cleaning up stale labs failed: {e:#}");
        }
        let name = sanitize_name(&spec.name);
        let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
        let id = format!("{LAB_PREFIX}{name}-{}-{seq}", std::process::id());
        let k = spec.subnet_index;
        let log_dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let mut lab = Lab {
            switch_ns: format!("{id}-switch"),
            client: Host::new(&id, "client", k, 10),
            director: Host::new(&id, "director", k, 1),
            directors: (1..=spec.directors)
                .map(|n| {
                    let name = if n == 1 {
                        "director".to_owned()
                    } else {
                        format!("director{n}")
                    };
                    Host::new(&id, &name, k, n as u8)
                })
                .collect(),
            reals: (1..=spec.reals)
                .map(|i| Host::on_segment(&id, &format!("rs{i}"), k, spec.remote_reals as u8, 20 + i as u8))
                .collect(),
            router: spec.remote_reals.then(|| Host::new(&id, "router", k, ROUTER_LAST_OCTET)),
            vip: Ipv4Addr::new(10, k, 0, 100),
            created: Vec::new(),
            children: Mutex::new(Vec::new()),
            log_dir,
            spawn_seq: AtomicU32::new(0),
            id,
            spec,
        };
        // If setup fails, dropping `lab` tears down the partial topology.
        lab.setup()
            .with_context(|| format!("building lab {}", lab.id))?;
        Ok(lab)
    }

    fn setup(&mut self) -> Result<()> {
        let switch = self.switch_ns.clone();
        self.add_namespace(&switch)?;
        netns::ip(&["-n", &switch, "link", "add", BRIDGE, "type", "bridge"])?;
        netns::ip(&["-n", &switch, "link", "set", BRIDGE, "up"])?;

        if self.spec.remote_reals {
            netns::ip(&["-n", &switch, "link", "add", REMOTE_BRIDGE, "type", "bridge"])?;
            netns::ip(&["-n", &switch, "link", "set", REMOTE_BRIDGE, "up"])?;
        }
        let mut segment_hosts = vec![self.client.clone()];
        segment_hosts.extend(self.directors.iter().cloned());
        for host in segment_hosts {
            self.add_host(&host, BRIDGE)?;
        }
        let real_bridge = if self.spec.remote_reals { REMOTE_BRIDGE } else { BRIDGE };
        for host in self.reals.clone() {
            self.add_host(&host, real_bridge)?;
        }
        if let Some(router) = self.router.clone() {
            self.add_router(&router)?;
        }

        // The director holds the VIP next to its own address, as an LVS
        // director does (unless VRRP is to add it).
        let vip32 = format!("{}/32", self.vip);
        if self.spec.static_vip {
            netns::ip(&[
                "-n",
                &self.director.ns,
                "addr",
                "add",
                &vip32,
                "dev",
                HOST_IFACE,
            ])?;
        }

        // LVS-DR real servers: the VIP on lo so they accept packets for it,
        // but never answer ARP for it (arp_ignore=1: only for addresses on the
        // receiving interface) nor use it as ARP source (arp_announce=2).
        for real in &self.reals {
            netns::ip(&["-n", &real.ns, "addr", "add", &vip32, "dev", "lo"])?;
            set_sysctls(
                &real.ns,
                &[
                    ("net.ipv4.conf.all.arp_ignore", "1"),
                    ("net.ipv4.conf.all.arp_announce", "2"),
                    ("net.ipv4.conf.eth0.arp_ignore", "1"),
                    ("net.ipv4.conf.eth0.arp_announce", "2"),
                ],
            )?;
        }

        if self.spec.xdp_pass_on_director_port {
            for director in self.directors.clone() {
                self.attach_xdp_pass_to_bridge_port(&director)?;
            }
        }
        Ok(())
    }

    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        netns::ip(&["netns", "add", ns])?;
        self.created.push(ns.to_owned());
        // Quiet, predictable namespaces: no IPv6 (no DAD/RS/MLD chatter in
        // captures and counters) and no reverse-path filtering inherited from
        // the host. Set before creating links so `default` applies to eth0.
        set_sysctls(
            ns,
            &[
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
            ],
        )?;
        // IPv6 may be disabled on the host altogether; then these keys do not exist.
        let _ = set_sysctls(
            ns,
            &[
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
            ],
        );
        Ok(())
    }

    /// The router: eth0 on the client segment (already added as a host),
    /// eth1 on the real servers' segment, forwarding between them; routes
    /// both ways.
    fn add_router(&mut self, router: &Host) -> Result<()> {
        self.add_host(router, BRIDGE)?;
        let k = self.spec.subnet_index;
        let port = "p-router1";
        netns::ip(&["link", "add", "eth1", "netns", &router.ns, "type", "veth", "peer", "name", port, "netns", &self.switch_ns])?;
        netns::ip(&["-n", &self.switch_ns, "link", "set", port, "master", REMOTE_BRIDGE, "up"])?;
        let eth1 = format!("{}/{PREFIX_LEN}", Ipv4Addr::new(10, k, 1, ROUTER_LAST_OCTET));
        netns::ip(&["-n", &router.ns, "addr", "add", &eth1, "dev", "eth1"])?;
        netns::ip(&["-n", &router.ns, "link", "set", "eth1", "up"])?;
        self.run(&router.ns, &["ethtool", "-K", "eth1", "tx", "off", "tso", "off", "gso", "off", "gro", "off"])?;
        set_sysctls(&router.ns, &[("net.ipv4.ip_forward", "1")])?;
        let remote = format!("10.{k}.1.0/{PREFIX_LEN}");
        let via_a = Ipv4Addr::new(10, k, 0, ROUTER_LAST_OCTET).to_string();
        let mut segment_ns = vec![self.client.ns.clone()];
        segment_ns.extend(self.directors.iter().map(|d| d.ns.clone()));
        for ns in segment_ns {
            netns::ip(&["-n", &ns, "route", "add", &remote, "via", &via_a])?;
        }
        let via_b = Ipv4Addr::new(10, k, 1, ROUTER_LAST_OCTET).to_string();
        for real in self.reals.clone() {
            netns::ip(&["-n", &real.ns, "route", "add", "default", "via", &via_b])?;
        }
        Ok(())
    }

    fn add_host(&mut self, host: &Host, bridge: &str) -> Result<()> {
        self.add_namespace(&host.ns)?;
        let (ns, port, switch) = (
            host.ns.as_str(),
            host.bridge_port.as_str(),
            self.switch_ns.as_str(),
        );
        // Created directly in the two namespaces, never in the root one.
        netns::ip(&[
            "link", "add", HOST_IFACE, "netns", ns, "type", "veth", "peer", "name", port, "netns",
            switch,
        ])?;
        netns::ip(&["-n", switch, "link", "set", port, "master", bridge, "up"])?;
        netns::ip(&[
            "-n",
            ns,
            "link",
            "set",
            HOST_IFACE,
            "address",
            &host.mac.to_string(),
        ])?;
        netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        netns::ip(&["-n", ns, "link", "set", HOST_IFACE, "up"])?;
        let addr = format!("{}/{PREFIX_LEN}", host.ip);
        netns::ip(&["-n", ns, "addr", "add", &addr, "dev", HOST_IFACE])?;
        // veth offloads hand XDP frames with only partial checksums (CHECKSUM_PARTIAL
        // from local sockets), and GRO/GSO/TSO make packets that are not wire
        // frames; turn them all off so XDP sees and forwards real packets.
        self.run(
            ns,
            &[
                "ethtool", "-K", HOST_IFACE, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
            ],
        )?;
        Ok(())
    }

    /// Attaches a native XDP pass program to `host`'s port on the bridge.
    ///
    /// Needed on the director: a frame sent with XDP_TX (or redirected) into
    /// a veth is dropped (counted as xdp_tx_errors) unless the peer veth has a
    /// native XDP program. Generic (skb) mode on the peer or enabling GRO on
    /// it does not help.
    pub fn attach_xdp_pass_to_bridge_port(&self, host: &Host) -> Result<()> {
        let obj = match &self.spec.xdp_pass_object {
            Some(path) => path.clone(),
            None => xdp_pass_object()?,
        };
        let obj = obj
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 path {obj:?}"))?;
        netns::ip(&[
            "-n",
            &self.switch_ns,
            "link",
            "set",
            "dev",
            &host.bridge_port,
            "xdpdrv",
            "obj",
            obj,
            "sec",
            "xdp",
        ])
        .map(|_| ())
    }

    // ---- accessors -------------------------------------------------------

    /// Unique id, also the namespace name prefix.
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }
    pub fn switch_ns(&self) -> &str {
        &self.switch_ns
    }
    pub fn client(&self) -> &Host {
        &self.client
    }
    pub fn director(&self) -> &Host {
        &self.director
    }
    /// Every director, [`Lab::director`] first (see [`LabSpec::directors`]).
    pub fn directors(&self) -> &[Host] {
        &self.directors
    }
    pub fn reals(&self) -> &[Host] {
        &self.reals
    }
    /// Real server `i`, counting from 0 (its name is `rs{i+1}`).
    pub fn real(&self, i: usize) -> &Host {
        &self.reals[i]
    }
    pub fn vip(&self) -> Ipv4Addr {
        self.vip
    }
    /// The director's interface toward the switch, where XDP is attached.
    pub fn director_iface(&self) -> &str {
        HOST_IFACE
    }
    /// Network address of the lab subnet and its prefix length.
    pub fn subnet(&self) -> (Ipv4Addr, u8) {
        (Ipv4Addr::new(10, self.spec.subnet_index, 0, 0), PREFIX_LEN)
    }
    /// Client, the director(s), then the real servers (and the router, if any).
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        std::iter::once(&self.client)
            .chain(&self.directors)
            .chain(&self.reals)
            .chain(&self.router)
    }

    /// The router in front of remote real servers.
    pub fn router(&self) -> Option<&Host> {
        self.router.as_ref()
    }
    /// All namespaces of this lab, switch first.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch_ns.clone())
            .chain(self.hosts().map(|h| h.ns.clone()))
            .collect()
    }
    /// Directory holding the logs of spawned processes (kept if a test panics).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    // ---- running things --------------------------------------------------

    /// Runs a command in `ns` (see [`netns::command_in`]) with a 30 s limit;
    /// the exit status is not checked.
    pub fn exec<S: AsRef<OsStr>>(&self, ns: &str, args: &[S]) -> Result<Output> {
        netns::output_with_timeout(netns::command_in(ns, args), DEFAULT_COMMAND_TIMEOUT)
    }

    /// Runs a command in `ns`, fails unless it succeeds, returns its stdout.
    pub fn run<S: AsRef<OsStr>>(&self, ns: &str, args: &[S]) -> Result<String> {
        netns::run_checked(netns::command_in(ns, args), DEFAULT_COMMAND_TIMEOUT)
    }

    /// Runs a shell script in `ns`; fails unless it succeeds.
    pub fn sh(&self, ns: &str, script: &str) -> Result<String> {
        self.run(ns, &["sh", "-c", script])
    }

    /// Starts a long-running process in `ns`, stdout and stderr to a log file
    /// named after `label`. It is killed when the lab is dropped.
    pub fn spawn<S: AsRef<OsStr>>(&self, ns: &str, label: &str, args: &[S]) -> Result<ProcHandle> {
        let seq = self.spawn_seq.fetch_add(1, Ordering::Relaxed);
        let log = self
            .log_dir
            .join(format!("{seq:02}-{}.log", sanitize_name(label)));
        let stdout = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let stderr = stdout.try_clone()?;
        let mut cmd: Command = netns::command_in(ns, args);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let handle = ProcHandle {
            pid: child.id(),
            label: label.to_owned(),
            ns: ns.to_owned(),
            log,
        };
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Tracked {
                handle: handle.clone(),
                child,
            });
        Ok(handle)
    }

    /// Whether a spawned process is still running.
    pub fn is_running(&self, handle: &ProcHandle) -> bool {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children
            .iter_mut()
            .find(|t| t.handle.pid == handle.pid)
            .is_some_and(|t| matches!(t.child.try_wait(), Ok(None)))
    }

    /// Stops a spawned process: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&self, handle: &ProcHandle) -> Result<ExitStatus> {
        let tracked = {
            let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
            let pos = children
                .iter()
                .position(|t| t.handle.pid == handle.pid)
                .ok_or_else(|| {
                    anyhow!(
                        "{} (pid {}) is not a process of this lab",
                        handle.label,
                        handle.pid
                    )
                })?;
            children.remove(pos)
        };
        let mut all = vec![tracked];
        let statuses = terminate(&mut all, Duration::from_secs(5));
        statuses
            .into_iter()
            .next()
            .flatten()
            .ok_or_else(|| anyhow!("could not reap {}", handle.label))
    }

    /// The output a spawned process wrote so far.
    pub fn read_log(&self, handle: &ProcHandle) -> String {
        std::fs::read_to_string(&handle.log).unwrap_or_default()
    }

    // ---- traffic helpers -------------------------------------------------

    /// GET `url` from the client (5 s limit); the body, or an error with curl's message.
    pub fn curl(&self, url: &str) -> Result<String> {
        self.curl_from(&self.client.ns, url)
    }

    /// GET `url` from namespace `ns` (5 s limit).
    pub fn curl_from(&self, ns: &str, url: &str) -> Result<String> {
        self.run(ns, &["curl", "-sS", "--max-time", "5", url])
    }

    /// Retries GET `url` from the client until the body is `expected` or `timeout` passes.
    pub fn wait_for_http(&self, url: &str, expected: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.run(&self.client.ns, &["curl", "-sS", "--max-time", "1", url]);
            match last {
                Ok(body) if body == expected => return Ok(()),
                _ if Instant::now() >= deadline => {
                    bail!("{url} did not answer {expected:?} within {timeout:?}; last: {last:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Sends one UDP datagram from `ns` to `target` and returns the reply.
    /// The socket is connected, so a reply from any other address is ignored
    /// (as a real client would): in DR the reply must come from the VIP.
    pub fn udp_request(
        &self,
        ns: &str,
        target: SocketAddr,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let payload = payload.to_vec();
        netns::run_in_netns(ns, move || -> Result<Vec<u8>> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.connect(target)?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send(&payload)?;
            let mut buf = vec![0u8; 65536];
            let n = socket
                .recv(&mut buf)
                .with_context(|| format!("no UDP reply from {target}"))?;
            buf.truncate(n);
            Ok(buf)
        })?
    }

    /// Opens a TCP connection from namespace `ns` to `target` (an HTTP
    /// server of the lab, usually through the VIP), asks `/whoami` on it
    /// with keep-alive and keeps it open, idle and established, until the
    /// returned [`HeldConnection`] is closed or dropped. The answer tells
    /// which real server the connection reached.
    pub fn hold_http_connection(&self, ns: &str, target: SocketAddrV4) -> Result<HeldConnection> {
        netns::run_in_netns(ns, move || -> Result<HeldConnection> {
            // The socket stays in `ns` after this thread ends.
            let mut stream = TcpStream::connect_timeout(&target.into(), Duration::from_secs(5))
                .with_context(|| format!("connecting to {target}"))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.set_nodelay(true)?;
            let local = match stream.local_addr()? {
                SocketAddr::V4(a) => a,
                other => bail!("unexpected local address {other}"),
            };
            let request =
                format!("GET /whoami HTTP/1.1\r\nHost: {target}\r\nConnection: keep-alive\r\n\r\n");
            stream.write_all(request.as_bytes())?;
            let body = read_http_body(&mut stream)
                .with_context(|| format!("reading the /whoami answer from {target}"))?;
            let server = body
                .split_whitespace()
                .next()
                .ok_or_else(|| anyhow!("empty /whoami answer from {target}"))?
                .to_owned();
            Ok(HeldConnection {
                stream,
                server,
                local,
            })
        })?
    }

    /// Who answers ARP for `target` on the client's segment (see [`netns::arp_probe`]).
    pub fn arp_probe_from_client(&self, target: Ipv4Addr) -> Result<Vec<MacAddr>> {
        let client = &self.client;
        netns::arp_probe(
            &client.ns,
            HOST_IFACE,
            (client.mac, client.ip),
            target,
            Duration::from_secs(1),
        )
    }

    // ---- counters --------------------------------------------------------

    /// Kernel packet counters of `iface` in `ns` (`ip -s -j link`).
    pub fn link_stats(&self, ns: &str, iface: &str) -> Result<LinkStats> {
        let out = netns::ip(&["-n", ns, "-s", "-j", "link", "show", "dev", iface])?;
        let json: serde_json::Value = serde_json::from_str(&out)?;
        let stats = &json[0]["stats64"];
        let get = |dir: &str, key: &str| -> Result<u64> {
            stats[dir][key]
                .as_u64()
                .ok_or_else(|| anyhow!("no {dir}.{key} for {iface} in {ns}: {out}"))
        };
        Ok(LinkStats {
            rx_packets: get("rx", "packets")?,
            rx_dropped: get("rx", "dropped")?,
            tx_packets: get("tx", "packets")?,
            tx_dropped: get("tx", "dropped")?,
        })
    }

    /// Driver counters of `iface` in `ns` (`ethtool -S`), e.g. veth's
    /// `rx_queue_0_xdp_tx` and `rx_queue_0_xdp_tx_errors`.
    pub fn ethtool_stats(&self, ns: &str, iface: &str) -> Result<BTreeMap<String, u64>> {
        let out = self.run(ns, &["ethtool", "-S", iface])?;
        Ok(out
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(':')?;
                Some((key.trim().to_owned(), value.trim().parse().ok()?))
            })
            .collect())
    }

    // ---- servers ---------------------------------------------------------

    /// Starts lab-server (found with [`find_binary`]) on port 80 in every real server.
    pub fn start_http_servers(&self) -> Result<Vec<ProcHandle>> {
        self.start_http_servers_with(&find_binary("lab-server")?)
    }

    /// Starts `bin --name rsI --http 0.0.0.0:80` in every real server and
    /// waits until each answers the client on its own address.
    /// Binding 0.0.0.0 also covers the VIP on lo.
    pub fn start_http_servers_with(&self, bin: &Path) -> Result<Vec<ProcHandle>> {
        let listen = format!("0.0.0.0:{HTTP_PORT}");
        let mut handles = Vec::new();
        for real in &self.reals {
            let args = [
                bin.as_os_str(),
                "--name".as_ref(),
                real.name.as_ref(),
                "--http".as_ref(),
                listen.as_ref(),
            ];
            handles.push(self.spawn(&real.ns, &format!("http-{}", real.name), &args)?);
        }
        for (real, handle) in self.reals.iter().zip(&handles) {
            let url = format!("http://{}:{HTTP_PORT}/", real.ip);
            self.wait_for_http(&url, &format!("{}\n", real.name), Duration::from_secs(10))
                .with_context(|| format!("log of {}:\n{}", handle.label, self.read_log(handle)))?;
        }
        Ok(handles)
    }

    /// Starts lab-server UDP echo on `port` in every real server, bound to
    /// the VIP and to the real's own address (a 0.0.0.0 socket would answer
    /// VIP traffic from the wrong source address), and waits until each
    /// answers the client directly.
    pub fn start_udp_servers_with(&self, bin: &Path, port: u16) -> Result<Vec<ProcHandle>> {
        let mut handles = Vec::new();
        for real in &self.reals {
            let on_vip = SocketAddrV4::new(self.vip, port).to_string();
            let on_own = SocketAddrV4::new(real.ip, port).to_string();
            let args = [
                bin.as_os_str(),
                "--name".as_ref(),
                real.name.as_ref(),
                "--udp".as_ref(),
                on_vip.as_ref(),
                "--udp".as_ref(),
                on_own.as_ref(),
            ];
            handles.push(self.spawn(&real.ns, &format!("udp-{}", real.name), &args)?);
        }
        for (real, handle) in self.reals.iter().zip(&handles) {
            let target = SocketAddr::V4(SocketAddrV4::new(real.ip, port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match self.udp_request(&self.client.ns, target, b"ping", Duration::from_millis(200))
                {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(e).context(format!(
                            "log of {}:\n{}",
                            handle.label,
                            self.read_log(handle)
                        ));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        Ok(handles)
    }

    /// Like [`Lab::start_udp_servers_with`] with lab-server found by [`find_binary`].
    pub fn start_udp_servers(&self, port: u16) -> Result<Vec<ProcHandle>> {
        self.start_udp_servers_with(&find_binary("lab-server")?, port)
    }

    // ---- teardown --------------------------------------------------------

    fn teardown(&mut self) {
        let mut children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        terminate(&mut children, Duration::from_secs(2));
        // Hosts first, the switch last; deleting a namespace kills whatever
        // is left in it and destroys its devices (and their veth peers).
        for ns in self.created.iter().rev() {
            if let Err(e) = netns::delete_namespace(ns) {
                eprintln!("lab {}: deleting namespace {ns}: {e:#}", self.id);
            }
        }
        self.created.clear();
        if std::thread::panicking() {
            eprintln!(
                "lab {}: keeping process logs in {}",
                self.id,
                self.log_dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// An established, idle TCP connection held open by the test (see
/// [`Lab::hold_http_connection`]). Dropping it closes it (FIN).
#[derive(Debug)]
pub struct HeldConnection {
    pub stream: TcpStream,
    /// The real server that answered ("rs1", ...).
    pub server: String,
    /// The client's end.
    pub local: SocketAddrV4,
}

impl HeldConnection {
    /// Asks `path` again on the held connection (keep-alive) and returns
    /// the body of the answer; fails if the connection was reset, closed or
    /// stays silent for the read timeout (5 s unless changed on `stream`).
    pub fn ask(&mut self, path: &str) -> Result<String> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n");
        self.stream.write_all(request.as_bytes())?;
        read_http_body(&mut self.stream)
    }

    /// Closes the connection: the client sends its FIN.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// Reads one HTTP/1.1 response with a Content-Length from `stream` and
/// returns its body (nothing more is read, so the connection can stay open).
fn read_http_body(stream: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(head.len() < 64 * 1024, "response head too long");
        let n = stream.read(&mut byte)?;
        ensure!(n == 1, "connection closed inside the response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    ensure!(
        head.starts_with("HTTP/1.1 200"),
        "not a 200 answer: {head:?}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .ok_or_else(|| anyhow!("no Content-Length in {head:?}"))?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// SIGTERM all, wait up to `grace` for them together, SIGKILL the rest; reaps
/// every child. Returns each exit status (None if it could not be reaped).
fn terminate(children: &mut [Tracked], grace: Duration) -> Vec<Option<ExitStatus>> {
    for t in children.iter_mut() {
        if matches!(t.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(t.handle.pid as i32, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + grace;
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    loop {
        for (t, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = t.child.try_wait().ok().flatten();
            }
        }
        if statuses.iter().all(Option::is_some) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (t, status) in children.iter_mut().zip(statuses.iter_mut()) {
        if status.is_none() {
            let _ = t.child.kill();
            *status = t.child.wait().ok();
        }
    }
    statuses
}

/// Writes sysctls of namespace `ns` through /proc/sys from a thread inside
/// it (/proc/sys/net follows the thread's namespace), without a procps dependency.
pub fn set_sysctls(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    netns::run_in_netns(ns, || -> Result<()> {
        for (key, value) in settings {
            let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, value)
                .with_context(|| format!("setting {key}={value} in {ns}"))?;
        }
        Ok(())
    })?
}

/// Reads a sysctl of namespace `ns` (e.g. "net.ipv4.conf.all.arp_ignore").
pub fn read_sysctl(ns: &str, key: &str) -> Result<String> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    netns::run_in_netns(ns, || std::fs::read_to_string(&path))?
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("reading {key} in {ns}"))
}

/// The XDP pass object: `$LB_LAB_XDP_PASS_OBJ` or xdp-tools' xdpfilt_alw_all.o.
pub fn xdp_pass_object() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(XDP_PASS_OBJ_ENV) {
        return Ok(PathBuf::from(path));
    }
    XDP_PASS_OBJ_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "no XDP pass program found (tried {XDP_PASS_OBJ_CANDIDATES:?}); install xdp-tools \
                 or set {XDP_PASS_OBJ_ENV}"
            )
        })
}

/// Lowercase ASCII letters, digits and '_' only, at most 24 characters.
/// No '-' so the owner pid can be parsed back out of namespace names.
fn sanitize_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    if cleaned.is_empty() {
        "lab".to_owned()
    } else {
        cleaned
    }
}

/// The pid that created a lab namespace or log dir named `lbt-<name>-<pid>-...`.
fn owner_pid(entry: &str) -> Option<u32> {
    let rest = entry.strip_prefix(LAB_PREFIX)?;
    let mut parts = rest.split('-');
    let _name = parts.next()?;
    parts.next()?.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes lab namespaces (and log dirs) whose creating process is gone,
/// i.e. leftovers of crashed or killed runs. Labs of live processes, such as
/// tests running in parallel, are left alone. Returns the deleted namespaces.
pub fn cleanup_stale_labs() -> Result<Vec<String>> {
    let mut deleted = Vec::new();
    for ns in netns::list_namespaces()? {
        if let Some(pid) = owner_pid(&ns)
            && !process_alive(pid)
        {
            netns::delete_namespace(&ns)
                .with_context(|| format!("deleting stale namespace {ns}"))?;
            deleted.push(ns);
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = owner_pid(&name)
                && !process_alive(pid)
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized_and_pids_parse_back() {
        assert_eq!(sanitize_name("Lab-Topology::x"), "lab_topology__x");
        assert_eq!(sanitize_name(""), "lab");
        assert_eq!(owner_pid("lbt-lab_2-1234-0-rs1"), Some(1234));
        assert_eq!(owner_pid("lbt-lab-topology-1-0"), None);
        assert_eq!(owner_pid("other-1-2"), None);
    }

    #[test]
    fn a_lab_can_be_shared_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Lab>();
    }

    #[test]
    fn hosts_get_the_address_plan() {
        let h = Host::new("lbt-x-1-0", "rs2", 7, 22);
        assert_eq!(h.ns, "lbt-x-1-0-rs2");
        assert_eq!(h.ip, Ipv4Addr::new(10, 7, 0, 22));
        assert_eq!(h.mac.to_string(), "02:00:0a:07:00:16");
        assert_eq!(h.bridge_port, "p-rs2");
    }
}
