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
//! With [`LabSpec::ipv6`] every host also has fd00:k:x::(last octet)/64
//! on eth0 (DAD off, so addresses work at once), and the VIP has an IPv6
//! twin, fd00:k::100 (`Lab::vip6`): on the director's eth0 and the real
//! servers' lo, as the IPv4 VIP (Linux answers neighbour solicitations only
//! for addresses of the interface they came in on, so no sysctl is needed).
//!
//! With [`LabSpec::remote_client`] the client sits on 10.k.2.0/24 (`br2`)
//! behind a router (10.k.0.254 / 10.k.2.254), as behind an ECMP router.
//!
//! With [`LabSpec::nat_reals`] the real servers sit on a private segment
//! instead (LVS-NAT): `br1`, `rsI` at 10.k.1.(20+I)/24 with 10.k.1.1 as
//! their default gateway, no VIP; each director has `eth1` there
//! (forwarding on): the first holds 10.k.1.1 itself, or without a static
//! VIP each has 10.k.1.(1+N) and VRRP moves 10.k.1.1.
//!
//! `<id>` is `lbt-<name>-<pid>-<seq>`, unique per lab, so tests can run in
//! parallel (the same subnet in two labs is fine: they share nothing). The
//! owner pid in the name lets [`cleanup_stale_labs`] remove what a crashed
//! run left behind. Dropping a [`Lab`] kills the processes it spawned and
//! deletes its namespaces, also while unwinding from a panic.
//!
//! The lab's parts: `topology` (namespaces, links, addresses, sysctls),
//! `processes` (what runs in it, the lab's HTTP and UDP servers), `traffic`
//! (requests, held connections, ARP probes, counters), `stale` (leftovers of
//! crashed runs).

mod bgp;
mod processes;
mod stale;
mod topology;
mod traffic;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};

pub use bgp::{DIRECTOR_AS, ROUTER_AS};
pub use processes::ProcHandle;
use processes::{Tracked, terminate};
pub use stale::cleanup_stale_labs;
use stale::sanitize_name;
pub use topology::{XDP_PASS_OBJ_ENV, read_sysctl, set_sysctls, xdp_pass_object};
pub use traffic::{HeldConnection, HeldConnection6, LinkStats};

use crate::netns::{self, MacAddr};

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
    /// Real servers on a private segment behind the director (LVS-NAT).
    pub nat_reals: bool,
    /// With `nat_reals`: no route from the real servers to anywhere but
    /// their own segment (full NAT needs none).
    pub reals_without_gateway: bool,
    /// The client on its own subnet (10.k.2.0/24, bridge `br2`) behind a
    /// router (10.k.0.254 / 10.k.2.254) that reaches the VIP through the
    /// directors: every host of the main segment routes by it (ECMP).
    pub remote_client: bool,
    /// IPv6 beside IPv4 on every host, and an IPv6 VIP (see the module
    /// docs). Off by default: IPv6's own chatter (router and neighbour
    /// solicitations, MLD) stays out of the IPv4 tests' captures.
    pub ipv6: bool,
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
            nat_reals: false,
            reals_without_gateway: false,
            remote_client: false,
            ipv6: false,
        }
    }

    /// IPv6 on every host and an IPv6 VIP (see [`LabSpec::ipv6`]).
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// The client behind a router (see [`LabSpec::remote_client`]).
    pub fn remote_client(mut self) -> Self {
        self.remote_client = true;
        self
    }

    /// Real servers on a private segment with no route off it (full NAT).
    pub fn isolated_reals(mut self) -> Self {
        self.nat_reals = true;
        self.reals_without_gateway = true;
        self
    }

    /// Real servers on a private segment, the director their gateway.
    pub fn nat_reals(mut self) -> Self {
        self.nat_reals = true;
        self
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
    /// Its IPv6 address on eth0 with [`LabSpec::ipv6`]: fd00:k:segment::last.
    pub fn ip6(&self) -> Ipv6Addr {
        let [_, k, segment, last] = self.ip.octets();
        lab_ipv6(k, segment, last)
    }

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

/// The lab's IPv6 twin of 10.k.segment.last.
fn lab_ipv6(k: u8, segment: u8, last: u8) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, k as u16, segment as u16, 0, 0, 0, 0, last as u16)
}

/// Prefix length of the lab's IPv6 segments.
pub const PREFIX_LEN6: u8 = 64;

/// The router between the lab's two segments.
pub const ROUTER_LAST_OCTET: u8 = 254;
/// The director's interface on the NAT real servers' segment.
pub const INSIDE_IFACE: &str = "eth1";
/// The real servers' bridge when they are remote.
pub const REMOTE_BRIDGE: &str = "br1";
/// The client's bridge when it is remote, and its segment (third octet).
pub const CLIENT_BRIDGE: &str = "br2";
pub const CLIENT_SEGMENT: u8 = 2;

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
        ensure!((1..=MAX_REALS).contains(&spec.reals), "reals must be between 1 and {MAX_REALS}, not {}", spec.reals);
        ensure!(!(spec.remote_client && spec.remote_reals), "one router: remote_client or remote_reals");
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
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let mut lab = Lab {
            switch_ns: format!("{id}-switch"),
            client: Host::on_segment(&id, "client", k, if spec.remote_client { CLIENT_SEGMENT } else { 0 }, 10),
            director: Host::new(&id, "director", k, 1),
            directors: (1..=spec.directors)
                .map(|n| {
                    let name = if n == 1 { "director".to_owned() } else { format!("director{n}") };
                    Host::new(&id, &name, k, n as u8)
                })
                .collect(),
            reals: (1..=spec.reals)
                .map(|i| {
                    let segment = (spec.remote_reals || spec.nat_reals) as u8;
                    Host::on_segment(&id, &format!("rs{i}"), k, segment, 20 + i as u8)
                })
                .collect(),
            router: (spec.remote_reals || spec.remote_client).then(|| Host::new(&id, "router", k, ROUTER_LAST_OCTET)),
            vip: Ipv4Addr::new(10, k, 0, 100),
            created: Vec::new(),
            children: Mutex::new(Vec::new()),
            log_dir,
            spawn_seq: AtomicU32::new(0),
            id,
            spec,
        };
        // If setup fails, dropping `lab` tears down the partial topology.
        lab.setup().with_context(|| format!("building lab {}", lab.id))?;
        Ok(lab)
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
    /// The IPv6 VIP (with [`LabSpec::ipv6`]).
    pub fn vip6(&self) -> Ipv6Addr {
        let [_, k, segment, last] = self.vip.octets();
        lab_ipv6(k, segment, last)
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
        std::iter::once(&self.client).chain(&self.directors).chain(&self.reals).chain(&self.router)
    }

    /// The NAT real servers' default gateway (see [`LabSpec::nat_reals`]).
    pub fn inside_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.spec.subnet_index, 1, 1)
    }

    /// The router in front of remote real servers.
    pub fn router(&self) -> Option<&Host> {
        self.router.as_ref()
    }
    /// All namespaces of this lab, switch first.
    pub fn namespaces(&self) -> Vec<String> {
        std::iter::once(self.switch_ns.clone()).chain(self.hosts().map(|h| h.ns.clone())).collect()
    }
    /// Directory holding the logs of spawned processes (kept if a test panics).
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    // ---- teardown --------------------------------------------------------

    fn teardown(&mut self) {
        let mut children = std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
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
            eprintln!("lab {}: keeping process logs in {}", self.id, self.log_dir.display());
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

#[cfg(test)]
mod tests {
    use super::*;

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
