//! ipvsadm's commands as typed values: what a command line means, what
//! lbctl sends lbd (serde, in [`crate::control::Request::Apply`]), and the
//! canonical command line back ([`Command::to_args`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use lb_common::{Forwarding, Protocol, Scheduler};
use serde::{Deserialize, Serialize};

use crate::format::ListOptions;
use crate::snapshot::Timeouts;

/// An address family: a firewall-mark service's (`-6` for IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv6() { Self::Ipv6 } else { Self::Ipv4 }
    }
}

/// A virtual service as ipvsadm names one: by protocol, address and port
/// (`-t|-u host[:port]`), or by firewall mark (`-f mark [-6]`).
///
/// In JSON (lbctl's requests, lbd's snapshots):
/// `{"address":{"protocol":"tcp","addr":"10.0.0.1","port":80}}` or
/// `{"fwmark":{"mark":1,"family":"ipv6"}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VirtualService {
    Address(ServiceAddress),
    Fwmark(FwmarkService),
}

/// A service given by `-t|-u host[:port]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceAddress {
    pub protocol: Protocol,
    /// IPv4, or IPv6 (`[addr]:port`).
    pub addr: IpAddr,
    /// 0 when none was given: every port (only with `-p`).
    pub port: u16,
}

/// A firewall-mark service, `-f mark [-6]`: the packets of one address
/// family that the firewall marked `mark`, whatever their protocol,
/// address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FwmarkService {
    /// 1..=u32::MAX (ipvsadm refuses 0, which means "no mark").
    pub mark: u32,
    pub family: Family,
}

impl From<ServiceAddress> for VirtualService {
    fn from(s: ServiceAddress) -> Self {
        Self::Address(s)
    }
}

impl From<FwmarkService> for VirtualService {
    fn from(s: FwmarkService) -> Self {
        Self::Fwmark(s)
    }
}

impl VirtualService {
    /// The service's address family (its VIP's, or the mark's `-6`).
    pub fn family(&self) -> Family {
        match self {
            Self::Address(a) => Family::of(a.addr),
            Self::Fwmark(f) => f.family,
        }
    }

    pub fn is_ipv6(&self) -> bool {
        self.family() == Family::Ipv6
    }

    /// The `-t|-u` service, `None` for a firewall-mark one.
    pub fn address(&self) -> Option<ServiceAddress> {
        match self {
            Self::Address(a) => Some(*a),
            Self::Fwmark(_) => None,
        }
    }

    /// The firewall-mark service, `None` for a `-t|-u` one.
    pub fn fwmark(&self) -> Option<FwmarkService> {
        match self {
            Self::Address(_) => None,
            Self::Fwmark(f) => Some(*f),
        }
    }

    /// The service as `ipvsadm -S -n` writes it: `-t 10.0.0.1:80`,
    /// `-u [2001:db8::1]:53`, `-f 1`, `-f 2 -6`.
    pub fn args(&self) -> Vec<String> {
        match self {
            Self::Address(a) => vec![a.option().to_owned(), a.address_arg()],
            Self::Fwmark(f) => {
                let mut args = vec!["-f".to_owned(), f.mark.to_string()];
                if f.family == Family::Ipv6 {
                    args.push("-6".to_owned());
                }
                args
            }
        }
    }

    fn push_args(&self, args: &mut Vec<String>) {
        args.extend(self.args());
    }
}

impl ServiceAddress {
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// `-t` or `-u`.
    pub fn option(&self) -> &'static str {
        match self.protocol {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
        }
    }

    /// `addr:port`, IPv6 in brackets, as ipvsadm writes it with `-S -n`.
    pub fn address_arg(&self) -> String {
        SocketAddr::new(self.addr, self.port).to_string()
    }
}

/// Why an IPv6 real server is refused with `-m`: the datapath's IPv6
/// program routes and tunnels (IPv6 in IPv6), it does not rewrite, for now.
pub const IPV6_DR_TUN_ONLY: &str = "IPv6 services support direct routing (-g) and tunnelling (-i) only for now";

/// Why a firewall-mark service's real server is refused with `-m`: its
/// real servers listen on each packet's own port, reached as the packet
/// came (lbd's datapath matches the packets, see the README).
pub const FWMARK_DR_TUN_ONLY: &str =
    "firewall-mark services forward by direct routing (-g) or tunnelling (-i) only";

/// Why a server of the other family is refused (ipvsadm allows it for
/// tunnelling; the datapath tunnels IPv4 in IPv4 only).
pub const MIXED_FAMILIES_UNSUPPORTED: &str =
    "a real server of another address family than its service's is not supported";

/// The persistence granularity (`-M`): a mask for IPv4 services, a prefix
/// length for IPv6 ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Netmask {
    V4(Ipv4Addr),
    V6(u8),
}

impl Netmask {
    /// The default for a service on `addr`: one client per template.
    pub fn host(addr: IpAddr) -> Self {
        Self::host_of(Family::of(addr))
    }

    /// The default for a service of `family`: one client per template.
    pub fn host_of(family: Family) -> Self {
        match family {
            Family::Ipv4 => Self::V4(Ipv4Addr::BROADCAST),
            Family::Ipv6 => Self::V6(128),
        }
    }

    /// Whether this is the default (one client per template).
    pub fn is_host(&self) -> bool {
        matches!(self, Self::V4(m) if *m == Ipv4Addr::BROADCAST) || matches!(self, Self::V6(128))
    }
}

/// As ipvsadm writes `-M` and `mask`: dotted for IPv4, the prefix length
/// for IPv6.
impl fmt::Display for Netmask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::V4(m) => write!(f, "{m}"),
            Self::V6(prefix) => write!(f, "{prefix}"),
        }
    }
}

/// The scheduler flags of `-b`, as IPVS keeps them: three bits whose names
/// depend on the scheduler (`sh-fallback`/`mh-fallback` are flag-1,
/// `sh-port`/`mh-port` flag-2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchedFlags(pub u8);

impl SchedFlags {
    pub const FLAG_1: u8 = 1;
    pub const FLAG_2: u8 = 2;
    pub const FLAG_3: u8 = 4;

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags' names for the scheduler named `scheduler`, as `-S` and
    /// `-L` print them (plus `flag-3`, which ipvsadm does not print for sh
    /// and mh).
    pub fn names(self, scheduler: &str) -> Vec<&'static str> {
        let names: [&str; 3] = match scheduler {
            "sh" => ["sh-fallback", "sh-port", "flag-3"],
            "mh" => ["mh-fallback", "mh-port", "flag-3"],
            _ => ["flag-1", "flag-2", "flag-3"],
        };
        (0..3).filter(|i| self.0 & (1 << i) != 0).map(|i| names[i]).collect()
    }
}

/// `-A`/`-E`: a virtual service and its whole configuration. As in ipvsadm,
/// `-E` replaces the configuration: what it does not give is reset to the
/// default (not persistent, host mask, no flags).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceArgs {
    pub service: VirtualService,
    /// `-s`. Always set for `-A` (wlc by default). For `-E`, `None` when
    /// `-s` was not given: ipvsadm 1.31 then sets wlc; keeping the current
    /// scheduler is the kinder reading.
    pub scheduler: Option<Scheduler>,
    /// `-p [timeout]`, seconds; `None` when not persistent.
    pub persistence_timeout: Option<u32>,
    /// `-M`; [`Netmask::is_host`] when not given.
    pub netmask: Netmask,
    /// `-b`.
    pub sched_flags: SchedFlags,
}

impl ServiceArgs {
    /// The scheduler ipvsadm 1.31 would set: the given one, else wlc.
    pub fn ipvsadm_scheduler(&self) -> Scheduler {
        self.scheduler.unwrap_or(Scheduler::Wlc)
    }
}

/// `-a`/`-e`: a real server of a virtual service and its whole
/// configuration (as in ipvsadm, `-e` resets what it does not give: weight
/// 1, direct routing, no thresholds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerArgs {
    pub service: VirtualService,
    /// `-r host[:port]`. With direct routing and tunnelling ipvsadm sets the
    /// port to the service's, whatever was given; with NAT a missing port is
    /// the service's.
    pub server: SocketAddr,
    /// `-g` (default), `-i` (always ipip: `--tun-type ipip` or none), `-m`.
    pub forwarding: Forwarding,
    /// `-w`, 0..=65535.
    pub weight: u32,
    /// `-x`, 0 = none.
    pub upper_threshold: u32,
    /// `-y`, 0 = none.
    pub lower_threshold: u32,
}

/// What `-L` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListTarget {
    /// Every service (`-L`, or no arguments at all).
    All,
    /// One service (`-L -t|-u VIP:PORT`); no header line.
    Service(VirtualService),
    /// The connection table (`-L -c`).
    Connections,
    /// `-L --timeout`.
    Timeouts,
    /// `-L --daemon`.
    Daemon,
}

/// `-L|-l` and its options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    pub target: ListTarget,
    /// `-n`.
    pub numeric: bool,
    /// `--stats`.
    pub stats: bool,
    /// `--rate`.
    pub rate: bool,
    /// `--thresholds`.
    pub thresholds: bool,
    /// `--persistent-conn`.
    pub persistent_conn: bool,
    /// `--tun-info`.
    pub tun_info: bool,
    /// `--exact` (or `-X`).
    pub exact: bool,
    /// `--nosort`.
    pub nosort: bool,
}

impl List {
    /// Plain `-L`.
    pub fn all() -> Self {
        Self {
            target: ListTarget::All,
            numeric: false,
            stats: false,
            rate: false,
            thresholds: false,
            persistent_conn: false,
            tun_info: false,
            exact: false,
            nosort: false,
        }
    }

    /// The formatter's options for this listing.
    pub fn list_options(&self) -> ListOptions {
        ListOptions {
            numeric: self.numeric,
            stats: self.stats,
            rate: self.rate,
            exact: self.exact,
            thresholds: self.thresholds,
            persistent_conn: self.persistent_conn,
            tun_info: self.tun_info,
            sort: !self.nosort,
        }
    }
}

/// `--start-daemon`/`--stop-daemon`'s argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DaemonState {
    Master,
    Backup,
}

impl DaemonState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Backup => "backup",
        }
    }
}

/// `--start-daemon` and its options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonArgs {
    pub state: DaemonState,
    /// `--mcast-interface` (15 bytes at most, as ipvsadm cuts it), eth0 by
    /// default.
    pub mcast_interface: String,
    /// `--syncid`.
    pub syncid: Option<u8>,
    /// `--sync-maxlen`.
    pub sync_maxlen: Option<u16>,
    /// `--mcast-group` (a multicast address).
    pub mcast_group: Option<IpAddr>,
    /// `--mcast-port`.
    pub mcast_port: Option<u16>,
    /// `--mcast-ttl`.
    pub mcast_ttl: Option<u8>,
}

/// One ipvsadm command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// `-A`.
    AddService(ServiceArgs),
    /// `-E`.
    EditService(ServiceArgs),
    /// `-D`.
    DeleteService(VirtualService),
    /// `-C`.
    Clear,
    /// `-R`: read rules from stdin, see [`parse_restore`](crate::grammar::parse_restore).
    Restore,
    /// `-S [-n]`.
    Save { numeric: bool },
    /// `-a`.
    AddServer(ServerArgs),
    /// `-e`.
    EditServer(ServerArgs),
    /// `-d`: the real server's port is the one given, else the service's.
    DeleteServer { service: VirtualService, server: SocketAddr },
    /// `-L`/`-l`, or no arguments.
    List(List),
    /// `-Z [virtual-service]`.
    Zero(Option<VirtualService>),
    /// `--set tcp tcpfin udp` (0 leaves a timeout unchanged).
    SetTimeouts(Timeouts),
    /// `--start-daemon` (parsed; see [`Command::unsupported_reason`]).
    StartDaemon(DaemonArgs),
    /// `--stop-daemon` (parsed; see [`Command::unsupported_reason`]).
    StopDaemon { state: DaemonState, syncid: Option<u8> },
    /// `-h`: print [`usage`](crate::usage::usage) on stdout, exit 0.
    Help,
    /// `-v`: print the version line on stdout, exit 0.
    Version,
}

impl Command {
    /// The virtual service the command names, if any (`-A -E -D -a -e -d`,
    /// `-L` of one service, `-Z` of one service).
    pub fn virtual_service(&self) -> Option<&VirtualService> {
        match self {
            Self::AddService(c) | Self::EditService(c) => Some(&c.service),
            Self::AddServer(c) | Self::EditServer(c) => Some(&c.service),
            Self::DeleteService(s) | Self::DeleteServer { service: s, .. } | Self::Zero(Some(s)) => Some(s),
            Self::List(List { target: ListTarget::Service(s), .. }) => Some(s),
            _ => None,
        }
    }

    /// Why the load balancer cannot carry out this (well-formed) command,
    /// for the parts left to the caller: the sync daemons, masquerading
    /// for firewall-mark services, and real servers IPv6 services cannot
    /// have yet. lbctl refuses these before asking lbd; lbd refuses them
    /// too (and a firewall-mark service whose matches its config lacks).
    pub fn unsupported_reason(&self) -> Option<&'static str> {
        match self {
            Self::AddServer(c) | Self::EditServer(c)
                if c.service.fwmark().is_some() && matches!(c.forwarding, Forwarding::Nat | Forwarding::FullNat) =>
            {
                Some(FWMARK_DR_TUN_ONLY)
            }
            Self::StartDaemon(_) | Self::StopDaemon { .. } => {
                Some("connection synchronisation daemons are not supported")
            }
            Self::AddServer(c) | Self::EditServer(c) if c.service.is_ipv6() != c.server.is_ipv6() => {
                Some(MIXED_FAMILIES_UNSUPPORTED)
            }
            Self::AddServer(c) | Self::EditServer(c)
                if c.server.is_ipv6() && matches!(c.forwarding, Forwarding::Nat | Forwarding::FullNat) =>
            {
                Some(IPV6_DR_TUN_ONLY)
            }
            _ => None,
        }
    }

    /// The command as ipvsadm arguments (without the program name), in
    /// ipvsadm's canonical form: `-A`/`-a` exactly as `ipvsadm -S -n` writes
    /// them. [`parse`](crate::grammar::parse) gives the command back.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let push = |args: &mut Vec<String>, items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
        match self {
            Self::AddService(c) | Self::EditService(c) => {
                push(&mut args, &[if matches!(self, Self::AddService(_)) { "-A" } else { "-E" }]);
                c.service.push_args(&mut args);
                if let Some(s) = c.scheduler {
                    push(&mut args, &["-s", s.name()]);
                }
                if let Some(t) = c.persistence_timeout {
                    push(&mut args, &["-p", &t.to_string()]);
                }
                if !c.netmask.is_host() {
                    push(&mut args, &["-M", &c.netmask.to_string()]);
                }
                if !c.sched_flags.is_empty() {
                    let sched = c.ipvsadm_scheduler();
                    push(&mut args, &["-b", &c.sched_flags.names(sched.name()).join(",")]);
                }
            }
            Self::DeleteService(s) => {
                push(&mut args, &["-D"]);
                s.push_args(&mut args);
            }
            Self::Clear => push(&mut args, &["-C"]),
            Self::Restore => push(&mut args, &["-R"]),
            Self::Save { numeric } => {
                push(&mut args, &["-S"]);
                if *numeric {
                    push(&mut args, &["-n"]);
                }
            }
            Self::AddServer(c) | Self::EditServer(c) => {
                push(&mut args, &[if matches!(self, Self::AddServer(_)) { "-a" } else { "-e" }]);
                c.service.push_args(&mut args);
                let fwd = match c.forwarding {
                    Forwarding::Dr => "-g",
                    Forwarding::Tun => "-i",
                    Forwarding::Nat => "-m",
                    Forwarding::FullNat => "--fullnat",
                };
                push(&mut args, &["-r", &c.server.to_string(), fwd, "-w", &c.weight.to_string()]);
                if c.upper_threshold != 0 {
                    push(&mut args, &["-x", &c.upper_threshold.to_string()]);
                }
                if c.lower_threshold != 0 {
                    push(&mut args, &["-y", &c.lower_threshold.to_string()]);
                }
                if c.forwarding == Forwarding::Tun {
                    push(&mut args, &["--tun-type", "ipip"]);
                }
            }
            Self::DeleteServer { service, server } => {
                push(&mut args, &["-d"]);
                service.push_args(&mut args);
                push(&mut args, &["-r", &server.to_string()]);
            }
            Self::List(l) => {
                push(&mut args, &["-L"]);
                match l.target {
                    ListTarget::All => {}
                    ListTarget::Service(s) => s.push_args(&mut args),
                    ListTarget::Connections => push(&mut args, &["-c"]),
                    ListTarget::Timeouts => push(&mut args, &["--timeout"]),
                    ListTarget::Daemon => push(&mut args, &["--daemon"]),
                }
                for (on, flag) in [
                    (l.numeric, "-n"),
                    (l.stats, "--stats"),
                    (l.rate, "--rate"),
                    (l.thresholds, "--thresholds"),
                    (l.persistent_conn, "--persistent-conn"),
                    (l.tun_info, "--tun-info"),
                    (l.exact, "--exact"),
                    (l.nosort, "--nosort"),
                ] {
                    if on {
                        push(&mut args, &[flag]);
                    }
                }
            }
            Self::Zero(s) => {
                push(&mut args, &["-Z"]);
                if let Some(s) = s {
                    s.push_args(&mut args);
                }
            }
            Self::SetTimeouts(t) => {
                push(&mut args, &["--set", &t.tcp.to_string(), &t.tcpfin.to_string(), &t.udp.to_string()]);
            }
            Self::StartDaemon(d) => {
                push(&mut args, &["--start-daemon", d.state.name(), "--mcast-interface", &d.mcast_interface]);
                if let Some(v) = d.syncid {
                    push(&mut args, &["--syncid", &v.to_string()]);
                }
                if let Some(v) = d.sync_maxlen {
                    push(&mut args, &["--sync-maxlen", &v.to_string()]);
                }
                if let Some(v) = d.mcast_group {
                    push(&mut args, &["--mcast-group", &v.to_string()]);
                }
                if let Some(v) = d.mcast_port {
                    push(&mut args, &["--mcast-port", &v.to_string()]);
                }
                if let Some(v) = d.mcast_ttl {
                    push(&mut args, &["--mcast-ttl", &v.to_string()]);
                }
            }
            Self::StopDaemon { state, syncid } => {
                push(&mut args, &["--stop-daemon", state.name()]);
                if let Some(v) = syncid {
                    push(&mut args, &["--syncid", &v.to_string()]);
                }
            }
            Self::Help => push(&mut args, &["-h"]),
            Self::Version => push(&mut args, &["-v"]),
        }
        args
    }
}

impl fmt::Display for Command {
    /// [`Command::to_args`] joined by blanks.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_args().join(" "))
    }
}
