//! ipvsadm 1.31's command line, parsed into typed [`Command`]s, so that
//! operators' scripts run unchanged with `lbctl` in place of `ipvsadm`.
//!
//! The grammar, the checks and the error messages follow ipvsadm.c (1.31,
//! built with popt) step by step, in its order, so that a command ipvsadm
//! rejects is rejected here with the same words, and the first error found is
//! the one ipvsadm would print:
//!
//! 1. popt reads the options left to right. Short options may be clustered
//!    (`-Ln`, `-At VIP:80`, `-w3`, `-w=3`); long ones take `--opt=value` or
//!    `--opt value`; a required value is the next word even when it starts
//!    with `-`; the optional value of `-p` is the next word unless that starts
//!    with `-`; words that are not options are kept aside ("leftovers"); `--`
//!    ends the options. Long names must be spelled out (no abbreviations);
//!    a flag given a value (`--stats=1`, `-n=1`) is refused (popt 1.18).
//! 2. The *first* option must be the command (`-A`, `-a`, `-L`, `--set`,
//!    ...). Otherwise ipvsadm only prints "Try `ipvsadm -h' or 'ipvsadm
//!    --help' for more information." and exits 255. `-h` and `-v` there end
//!    the parsing at once, whatever follows.
//! 3. Every further option is checked as it is read (address syntax, number
//!    ranges, a second use of an option, a second command); the first failure
//!    ends the parsing.
//! 4. `--set` takes three leftovers; any other leftover is an "unexpected
//!    argument".
//! 5. `-b` flags are checked against the scheduler named by `-s` (wlc when
//!    none), whatever their order.
//! 6. ipvsadm's table of which options each command needs, allows or
//!    forbids is checked, in the table's column order.
//! 7. The per-command checks: zero port without persistence, address
//!    families, tunnel options, list option conflicts.
//!
//! Exit statuses, as ipvsadm's: [`EXIT_USAGE`] (2) for what ipvsadm reports
//! through its `fail(2, ...)`; [`EXIT_OPTION`] (255) for popt's own errors
//! ("--foo: unknown option", "-t: missing argument") and for the try-help
//! line. See [`KernelError`] for the errors ipvsadm only learns from the
//! kernel, which the controller produces.
//!
//! What ipvsadm accepts but this load balancer does not have is rejected
//! after all of ipvsadm's own checks passed, with [`ErrorKind::Unsupported`]
//! and status 2: firewall-mark services (`-f`, and `-6`), SCTP services,
//! persistence engines (`--pe`), one-packet scheduling (`-o`), and the gue
//! and gre tunnel types. An unknown scheduler, which ipvsadm leaves to the
//! kernel, is rejected here with the kernel's wording and ipvsadm's status
//! for kernel errors (255). Parsed but left for the caller to refuse: IPv6
//! addresses, NAT (`-m`) and the sync daemons (see
//! [`Command::unsupported_reason`]).
//!
//! Other deliberate differences from ipvsadm:
//! - Host names are looked up in a [`Names`] table (`/etc/hosts` syntax), not
//!   in DNS; port names in `/etc/services` syntax, as `getservbyname` does.
//! - `-E` without `-s` gives `scheduler: None`. ipvsadm 1.31 sends wlc then
//!   (it fills in the default for `-E` as for `-A`); the controller decides
//!   (see [`ServiceConfig::scheduler`]).
//! - `-R` input: a word starting with `#` starts a comment to the end of the
//!   line (ipvsadm 1.31 would pass it on as an argument and stop with the
//!   try-help line). Words are otherwise split at blanks, tabs and carriage
//!   returns, without quoting, and the word `ipvsadm` is dropped, as ipvsadm
//!   does. [`parse_restore`] stops at the first bad line; ipvsadm goes on
//!   after a popt error there (see [`RestoreError`]).
//! - A `-b` value made only of commas is rejected (ipvsadm crashes on it).
//!
//! Use: `lbctl` parses its arguments with [`parse`] (with [`Names::system`]),
//! prints [`ParseError::message`] and exits with [`ParseError::exit_code`];
//! prints [`usage`] for [`Command::Help`]; for [`Command::Restore`] reads
//! stdin and parses it with [`parse_restore`].
//!
//! Friendly names: when the first argument is one of [`FRIENDLY_COMMANDS`]
//! it stands for the ipvsadm options shown there, and the other arguments
//! follow (`lbctl stats --exact`, `lbctl list -t VIP:80`). No ipvsadm command
//! line starts with a word that is not an option, so these never change the
//! meaning of an ipvsadm command line.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::{Forwarding, Protocol, Scheduler};

use crate::format::ListOptions;
use crate::snapshot::Timeouts;

/// Exit status of ipvsadm's `fail(2, ...)`: malformed or illegal options.
pub const EXIT_USAGE: i32 = 2;
/// Exit status for popt's errors and the try-help line (ipvsadm returns -1
/// from `main` or calls `exit(-1)`).
pub const EXIT_OPTION: i32 = 255;
/// Exit status when a change is refused by the kernel (ipvsadm's `main`
/// returns libipvs's -1). See [`KernelError`].
pub const EXIT_KERNEL: i32 = 255;
/// Exit status when listing fails (`-L -t VIP:PORT` of a missing service:
/// "No such service"); ipvsadm calls `exit(1)` there.
pub const EXIT_LIST: i32 = 1;

/// `-p` without a value: libipvs's IPVS_SVC_PERSISTENT_TIMEOUT, 6 minutes.
/// (300 is often quoted, as in ipvsadm's manual page; ipvsadm 1.31 sends 360.)
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 6 * 60;
/// Largest timeout for `-p` and `--set`: 31 days.
pub const MAX_TIMEOUT: u32 = 86400 * 31;
/// Weight of a real server added without `-w` (and of one edited without it).
pub const DEFAULT_WEIGHT: u32 = 1;
/// Multicast interface of `--start-daemon` without `--mcast-interface`.
pub const DEFAULT_MCAST_INTERFACE: &str = "eth0";
/// What `-v` prints (and the first line of `-h`).
pub const IPVSADM_VERSION_LINE: &str = "ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)";

/// lbctl's own words for common listings and actions, and the ipvsadm
/// options each stands for. The other arguments follow; a `-n`/`--numeric`
/// among them is dropped where the word already implies it.
pub const FRIENDLY_COMMANDS: [(&str, &[&str]); 8] = [
    ("list", &["-L", "-n"]),
    ("stats", &["-L", "-n", "--stats"]),
    ("rate", &["-L", "-n", "--rate"]),
    ("connections", &["-L", "-n", "-c"]),
    ("save", &["-S", "-n"]),
    ("clear", &["-C"]),
    ("zero", &["-Z"]),
    ("timeouts", &["-L", "--timeout"]),
];

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// ipvsadm's own parse-time refusal (its `fail(2, ...)`), status 2.
    Usage,
    /// popt's error ("--foo: unknown option", "-t: missing argument"),
    /// status 255.
    Option,
    /// The try-help line (no command first), status 255.
    TryHelp,
    /// Accepted by ipvsadm but not by this load balancer, status 2.
    Unsupported,
    /// What ipvsadm would only hear from the kernel (unknown scheduler),
    /// status 255.
    Kernel,
}

/// A refused command line: print `message` (plus a newline) on stderr and
/// exit with `exit_code`, as ipvsadm does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
    pub exit_code: i32,
    pub kind: ErrorKind,
}

impl ParseError {
    fn usage(message: impl Into<String>) -> Self {
        Self { message: message.into(), exit_code: EXIT_USAGE, kind: ErrorKind::Usage }
    }

    fn option(message: impl Into<String>) -> Self {
        Self { message: message.into(), exit_code: EXIT_OPTION, kind: ErrorKind::Option }
    }

    fn unsupported(message: impl Into<String>) -> Self {
        Self { message: message.into(), exit_code: EXIT_USAGE, kind: ErrorKind::Unsupported }
    }

    fn kernel(error: KernelError) -> Self {
        Self { message: error.message().to_owned(), exit_code: error.exit_code(), kind: ErrorKind::Kernel }
    }

    fn try_help(program: &str) -> Self {
        Self {
            message: format!("Try `{program} -h' or '{program} --help' for more information."),
            exit_code: EXIT_OPTION,
            kind: ErrorKind::TryHelp,
        }
    }
}

/// A refused `-R` input: the first bad line (1-based) and why.
///
/// ipvsadm reads and runs the input line by line: it has applied the lines
/// before a bad one, and stops at it, unless the error is popt's
/// ([`ErrorKind::Option`]) or the kernel's ([`KernelError`]): those it
/// reports and goes on with the next line (the exit status is the last
/// line's). [`parse_restore_line`] gives the lines one at a time for a caller
/// that wants to do the same.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RestoreError {
    pub line: usize,
    pub message: String,
    pub exit_code: i32,
}

/// The errors ipvsadm reports after the kernel refused a change, with
/// ipvsadm's wording (libipvs's `ipvs_strerror`), for the controller to
/// produce. ipvsadm prints the message alone on stderr and exits with
/// [`EXIT_KERNEL`] (255), except listings, which exit with [`EXIT_LIST`] (1).
/// Under `-R` a refused line is reported and the next line is read; the
/// status is that of the last line.
///
/// | command | condition | error |
/// |---|---|---|
/// | `-A` | the service exists | [`ServiceExists`](Self::ServiceExists) |
/// | `-A`, `-E` | unknown scheduler | [`SchedulerNotFound`](Self::SchedulerNotFound) |
/// | `-E`, `-D`, `-Z svc`, `-L svc` | no such service | [`NoSuchService`](Self::NoSuchService) |
/// | `-a`, `-e`, `-d` | no such service | [`ServiceNotDefined`](Self::ServiceNotDefined) |
/// | `-a` | the real server exists | [`DestinationExists`](Self::DestinationExists) |
/// | `-e`, `-d` | no such real server | [`NoSuchDestination`](Self::NoSuchDestination) |
/// | `-a`, `-e` | lower threshold above upper (also `-y N` without `-x`) | [`OutOfRange`](Self::OutOfRange) |
/// | `-a`, `-e` | real server address not unicast (`0.0.0.0`, broadcast, multicast) | [`InvalidOperation`](Self::InvalidOperation) |
/// | any | not root | [`PermissionDenied`](Self::PermissionDenied) |
/// | any | out of memory | [`MemoryAllocation`](Self::MemoryAllocation) |
/// | `--start-daemon` | already running | [`DaemonRunning`](Self::DaemonRunning) |
/// | `--stop-daemon` | not running | [`NoDaemon`](Self::NoDaemon) |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelError {
    /// EEXIST on add-service.
    ServiceExists,
    /// ENOENT on add/edit-service.
    SchedulerNotFound,
    /// ESRCH on edit/delete/zero-service or a one-service listing.
    NoSuchService,
    /// ESRCH on add/edit/delete-server.
    ServiceNotDefined,
    /// EEXIST on add-server.
    DestinationExists,
    /// ENOENT on edit/delete-server.
    NoSuchDestination,
    /// ERANGE (no entry in ipvsadm's table: `strerror`).
    OutOfRange,
    /// EINVAL.
    InvalidOperation,
    /// EPERM.
    PermissionDenied,
    /// ENOMEM.
    MemoryAllocation,
    /// EOPNOTSUPP.
    Ipv6NotSupported,
    /// EAFNOSUPPORT.
    AddressFamilyNotSupported,
    /// EEXIST on start-daemon.
    DaemonRunning,
    /// ESRCH on stop-daemon.
    NoDaemon,
}

impl KernelError {
    /// ipvsadm's words.
    pub fn message(self) -> &'static str {
        match self {
            Self::ServiceExists => "Service already exists",
            Self::SchedulerNotFound => "Scheduler or persistence engine not found",
            Self::NoSuchService => "No such service",
            Self::ServiceNotDefined => "Service not defined",
            Self::DestinationExists => "Destination already exists",
            Self::NoSuchDestination => "No such destination",
            Self::OutOfRange => "Numerical result out of range",
            Self::InvalidOperation => "Invalid operation.  Possibly wrong module version, address not unicast, ...",
            Self::PermissionDenied => "Permission denied (you must be root)",
            Self::MemoryAllocation => "Memory allocation problem",
            Self::Ipv6NotSupported => "Operation not supported with IPv6",
            Self::AddressFamilyNotSupported => "Operation not supported with specified address family",
            Self::DaemonRunning => "Daemon has already run",
            Self::NoDaemon => "No daemon is running",
        }
    }

    /// ipvsadm's status for a refused change; a listing exits with
    /// [`EXIT_LIST`] instead.
    pub fn exit_code(self) -> i32 {
        EXIT_KERNEL
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

// ---------------------------------------------------------------------------
// Typed commands
// ---------------------------------------------------------------------------

/// A virtual service given by `-t|-u host[:port]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VirtualService {
    pub protocol: Protocol,
    /// IPv4, or IPv6 (`[addr]:port`): check [`Self::is_ipv6`].
    pub addr: IpAddr,
    /// 0 when none was given: every port (only with `-p`).
    pub port: u16,
}

impl VirtualService {
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

    fn push_args(&self, args: &mut Vec<String>) {
        args.push(self.option().to_owned());
        args.push(self.address_arg());
    }
}

/// The persistence granularity (`-M`): a mask for IPv4 services, a prefix
/// length for IPv6 ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Netmask {
    V4(Ipv4Addr),
    V6(u8),
}

impl Netmask {
    /// Whether this is the default (one client per template).
    pub fn is_host(&self) -> bool {
        matches!(self, Self::V4(m) if *m == Ipv4Addr::BROADCAST) || matches!(self, Self::V6(128))
    }
}

/// The scheduler flags of `-b`, as IPVS keeps them: three bits whose names
/// depend on the scheduler (`sh-fallback`/`mh-fallback` are flag-1,
/// `sh-port`/`mh-port` flag-2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
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

impl ServiceConfig {
    /// The scheduler ipvsadm 1.31 would set: the given one, else wlc.
    pub fn ipvsadm_scheduler(&self) -> Scheduler {
        self.scheduler.unwrap_or(Scheduler::Wlc)
    }
}

/// `-a`/`-e`: a real server of a virtual service and its whole
/// configuration (as in ipvsadm, `-e` resets what it does not give: weight
/// 1, direct routing, no thresholds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `-A`.
    AddService(ServiceConfig),
    /// `-E`.
    EditService(ServiceConfig),
    /// `-D`.
    DeleteService(VirtualService),
    /// `-C`.
    Clear,
    /// `-R`: read rules from stdin, see [`parse_restore`].
    Restore,
    /// `-S [-n]`.
    Save { numeric: bool },
    /// `-a`.
    AddServer(ServerConfig),
    /// `-e`.
    EditServer(ServerConfig),
    /// `-d`: the real server's port is the one given, else the service's.
    DeleteServer { service: VirtualService, server: SocketAddr },
    /// `-L`/`-l`, or no arguments.
    List(List),
    /// `-Z [virtual-service]`.
    Zero(Option<VirtualService>),
    /// `--set tcp tcpfin udp` (0 leaves a timeout unchanged).
    SetTimeouts(Timeouts),
    /// `--start-daemon` (parsed; see [`Command::unsupported_reason`]).
    StartDaemon(DaemonConfig),
    /// `--stop-daemon` (parsed; see [`Command::unsupported_reason`]).
    StopDaemon { state: DaemonState, syncid: Option<u8> },
    /// `-h`: print [`usage`] on stdout, exit 0.
    Help,
    /// `-v`: print the version line on stdout, exit 0.
    Version,
}

impl Command {
    /// Why the load balancer cannot carry out this (well-formed) command,
    /// for the parts left to the caller: the sync daemons and IPv6
    /// addresses. (NAT and tunnelling are for the caller to judge with
    /// [`Forwarding::is_implemented`].)
    pub fn unsupported_reason(&self) -> Option<&'static str> {
        const IPV6: &str = "IPv6 services and real servers are not supported";
        let v6 = |s: &VirtualService| s.is_ipv6();
        match self {
            Self::StartDaemon(_) | Self::StopDaemon { .. } => {
                Some("connection synchronisation daemons are not supported")
            }
            Self::AddService(c) | Self::EditService(c) if v6(&c.service) => Some(IPV6),
            Self::AddServer(c) | Self::EditServer(c) if v6(&c.service) || c.server.is_ipv6() => Some(IPV6),
            Self::DeleteServer { service, server } if v6(service) || server.is_ipv6() => Some(IPV6),
            Self::DeleteService(s) | Self::Zero(Some(s)) if v6(s) => Some(IPV6),
            Self::List(List { target: ListTarget::Service(s), .. }) if v6(s) => Some(IPV6),
            _ => None,
        }
    }

    /// The command as ipvsadm arguments (without the program name), in
    /// ipvsadm's canonical form: `-A`/`-a` exactly as `ipvsadm -S -n` writes
    /// them. [`parse`] gives the command back.
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
                    let mask = match c.netmask {
                        Netmask::V4(m) => m.to_string(),
                        Netmask::V6(p) => p.to_string(),
                    };
                    push(&mut args, &["-M", &mask]);
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

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// Host and port names, looked up as ipvsadm's `gethostbyname` and
/// `getservbyname` would find them in `/etc/hosts` and `/etc/services` (no
/// DNS). The default knows no names: numbers only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    /// (protocol, name or alias) -> port; the first entry wins.
    ports: HashMap<(Proto, String), u16>,
    /// Lower-cased name or alias -> IPv4 address; the first entry wins.
    hosts: HashMap<String, Ipv4Addr>,
}

impl Names {
    /// Adds `/etc/services` entries: `name port/proto [aliases] [# comment]`
    /// (tcp, udp and sctp; malformed lines are skipped).
    pub fn with_services(mut self, text: &str) -> Self {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (fields.next(), fields.next()) else { continue };
            let Some((port, proto)) = port_proto.split_once('/') else { continue };
            let Ok(port) = port.parse::<u16>() else { continue };
            let proto = match proto {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                "sctp" => Proto::Sctp,
                _ => continue,
            };
            for n in std::iter::once(name).chain(fields) {
                self.ports.entry((proto, n.to_owned())).or_insert(port);
            }
        }
        self
    }

    /// Adds `/etc/hosts` entries: `address name [aliases] [# comment]`
    /// (IPv4 addresses only: ipvsadm's lookup takes no others).
    pub fn with_hosts(mut self, text: &str) -> Self {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            let Some(Ok(addr)) = fields.next().map(str::parse::<Ipv4Addr>) else { continue };
            for name in fields {
                self.hosts.entry(name.to_ascii_lowercase()).or_insert(addr);
            }
        }
        self
    }

    /// The system's `/etc/services` and `/etc/hosts` (missing files add
    /// nothing).
    pub fn system() -> Self {
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        Self::default().with_services(&read("/etc/services")).with_hosts(&read("/etc/hosts"))
    }

    fn port(&self, name: &str, proto: Proto) -> Option<u16> {
        self.ports.get(&(proto, name.to_owned())).copied()
    }

    fn host(&self, name: &str) -> Option<Ipv4Addr> {
        self.hosts.get(&name.to_ascii_lowercase()).copied()
    }
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// Parses `args` (without the program name) as `lbctl` would: friendly
/// names first, then ipvsadm's grammar. Error messages name the program
/// `lbctl`.
pub fn parse<S: AsRef<str>>(args: &[S], names: &Names) -> Result<Command, ParseError> {
    parse_as("lbctl", args, names)
}

/// [`parse`] with the program name for the try-help line.
pub fn parse_as<S: AsRef<str>>(program: &str, args: &[S], names: &Names) -> Result<Command, ParseError> {
    let args = expand_friendly(args);
    if args.is_empty() {
        // ipvsadm with no arguments lists the table.
        return Ok(Command::List(List::all()));
    }
    process(program, &args, names, false)
}

/// The arguments with a leading friendly name replaced by its ipvsadm
/// options (see [`FRIENDLY_COMMANDS`]); other arguments unchanged.
pub fn expand_friendly<S: AsRef<str>>(args: &[S]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    let Some(first) = out.first() else { return out };
    let Some((_, options)) = FRIENDLY_COMMANDS.iter().find(|(name, _)| name == first) else { return out };
    let numeric = options.contains(&"-n");
    let rest = out.split_off(1);
    let mut expanded: Vec<String> = options.iter().map(|s| s.to_string()).collect();
    expanded.extend(rest.into_iter().filter(|a| !(numeric && (a == "-n" || a == "--numeric"))));
    expanded
}

/// Parses the rules `-R` reads from stdin (what `-S` writes): one command
/// per line, split into words at blanks; blank and comment lines are
/// skipped. Any command but `-R` may appear, as in ipvsadm. Stops at the
/// first bad line.
pub fn parse_restore(text: &str, names: &Names) -> Result<Vec<Command>, RestoreError> {
    let mut commands = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_restore_line("lbctl", line, names) {
            None => {}
            Some(Ok(c)) => commands.push(c),
            Some(Err(e)) => return Err(RestoreError { line: i + 1, message: e.message, exit_code: e.exit_code }),
        }
    }
    Ok(commands)
}

/// One line of `-R` input: `None` for a line without words.
pub fn parse_restore_line(program: &str, line: &str, names: &Names) -> Option<Result<Command, ParseError>> {
    let words = split_restore_line(line);
    if words.is_empty() {
        return None;
    }
    Some(process(program, &words, names, true))
}

/// The words of a `-R` line as ipvsadm's reader splits it: at blanks, tabs
/// and carriage returns, no quoting, the word `ipvsadm` dropped; here also
/// everything from a word starting with `#` on.
pub fn split_restore_line(line: &str) -> Vec<String> {
    line.split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
        .take_while(|w| !w.starts_with('#'))
        .filter(|w| *w != "ipvsadm")
        .map(str::to_owned)
        .collect()
}

/// What `-h` prints, with `program` in the usage lines (for "ipvsadm",
/// byte for byte ipvsadm 1.31's).
pub fn usage(program: &str) -> String {
    let mut out = format!("{IPVSADM_VERSION_LINE}\nUsage:\n");
    for line in USAGE_LINES {
        out.push_str(&format!("  {program} {line}\n"));
    }
    out.push_str(USAGE_BODY);
    out
}

const USAGE_LINES: [&str; 13] = [
    "-A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe persistence_engine] [-b sched-flags]",
    "-D virtual-service",
    "-C",
    "-R",
    "-S [-n]",
    "-a|e virtual-service -r server-address [options]",
    "-d virtual-service -r server-address",
    "-L|l [virtual-service] [options]",
    "-Z [virtual-service]",
    "--set tcp tcpfin udp",
    "--start-daemon {master|backup} [daemon-options]",
    "--stop-daemon {master|backup}",
    "-h",
];

const USAGE_BODY: &str = concat!(
    "\n",
    "Commands:\n",
    "Either long or short options are allowed.\n",
    "  --add-service     -A        add virtual service with options\n",
    "  --edit-service    -E        edit virtual service with options\n",
    "  --delete-service  -D        delete virtual service\n",
    "  --clear           -C        clear the whole table\n",
    "  --restore         -R        restore rules from stdin\n",
    "  --save            -S        save rules to stdout\n",
    "  --add-server      -a        add real server with options\n",
    "  --edit-server     -e        edit real server with options\n",
    "  --delete-server   -d        delete real server\n",
    "  --list            -L|-l     list the table\n",
    "  --zero            -Z        zero counters in a service or all services\n",
    "  --set tcp tcpfin udp        set connection timeout values\n",
    "  --start-daemon              start connection sync daemon\n",
    "  --stop-daemon               stop connection sync daemon\n",
    "  --help            -h        display this help message\n",
    "\n",
    "virtual-service:\n",
    "  --tcp-service|-t  service-address   service-address is host[:port]\n",
    "  --udp-service|-u  service-address   service-address is host[:port]\n",
    "  --sctp-service    service-address   service-address is host[:port]\n",
    "  --fwmark-service|-f fwmark          fwmark is an integer greater than zero\n",
    "\n",
    "Options:\n",
    "  --ipv6         -6                   fwmark entry uses IPv6\n",
    "  --scheduler    -s scheduler         one of rr|wrr|lc|wlc|lblc|lblcr|dh|sh|sed|nq|fo|ovf|mh,\n",
    "                                      the default scheduler is wlc.\n",
    "  --pe            engine              alternate persistence engine may be sip,\n",
    "                                      not set by default.\n",
    "  --persistent   -p [timeout]         persistent service\n",
    "  --netmask      -M netmask           persistent granularity mask\n",
    "  --real-server  -r server-address    server-address is host (and port)\n",
    "  --gatewaying   -g                   gatewaying (direct routing) (default)\n",
    "  --ipip         -i                   ipip encapsulation (tunneling)\n",
    "  --masquerading -m                   masquerading (NAT)\n",
    "  --tun-type      type                one of ipip|gue|gre,\n",
    "                                      the default tunnel type is ipip.\n",
    "  --tun-port      port                tunnel destination port\n",
    "  --tun-nocsum                        tunnel encapsulation without checksum\n",
    "  --tun-csum                          tunnel encapsulation with checksum\n",
    "  --tun-remcsum                       tunnel encapsulation with remote checksum\n",
    "  --weight       -w weight            capacity of real server\n",
    "  --u-threshold  -x uthreshold        upper threshold of connections\n",
    "  --l-threshold  -y lthreshold        lower threshold of connections\n",
    "  --connection   -c                   output of current IPVS connections\n",
    "  --timeout                           output of timeout (tcp tcpfin udp)\n",
    "  --daemon                            output of daemon information\n",
    "  --stats                             output of statistics information\n",
    "  --rate                              output of rate information\n",
    "  --exact                             expand numbers (display exact values)\n",
    "  --thresholds                        output of thresholds information\n",
    "  --persistent-conn                   output of persistent connection info\n",
    "  --tun-info                          output of tunnel information\n",
    "  --nosort                            disable sorting output of service/server entries\n",
    "  --sort                              does nothing, for backwards compatibility\n",
    "  --ops          -o                   one-packet scheduling\n",
    "  --numeric      -n                   numeric output of addresses and ports\n",
    "  --sched-flags  -b flags             scheduler flags (comma-separated)\n",
    "Daemon Options:\n",
    "  --syncid sid                        syncid for connection sync (default=255)\n",
    "  --sync-maxlen length                Max sync message length (default=1472)\n",
    "  --mcast-interface interface         multicast interface for connection sync\n",
    "  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)\n",
    "  --mcast-port port                   UDP port (default=8848)\n",
    "  --mcast-ttl ttl                     Multicast TTL (default=1)\n",
);

// ---------------------------------------------------------------------------
// popt, as ipvsadm uses it
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    AddService,
    EditService,
    DeleteService,
    Clear,
    List,
    Zero,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masquerading,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    Optional,
}

/// ipvsadm's popt table: long name, short name, argument.
const OPTIONS: [(&str, Option<char>, Arg, Opt); 58] = [
    ("add-service", Some('A'), Arg::None, Opt::AddService),
    ("edit-service", Some('E'), Arg::None, Opt::EditService),
    ("delete-service", Some('D'), Arg::None, Opt::DeleteService),
    ("clear", Some('C'), Arg::None, Opt::Clear),
    ("list", Some('L'), Arg::None, Opt::List),
    ("list", Some('l'), Arg::None, Opt::List),
    ("zero", Some('Z'), Arg::None, Opt::Zero),
    ("add-server", Some('a'), Arg::None, Opt::AddServer),
    ("edit-server", Some('e'), Arg::None, Opt::EditServer),
    ("delete-server", Some('d'), Arg::None, Opt::DeleteServer),
    ("set", None, Arg::None, Opt::Set),
    ("help", Some('h'), Arg::None, Opt::Help),
    ("version", Some('v'), Arg::None, Opt::Version),
    ("restore", Some('R'), Arg::None, Opt::Restore),
    ("save", Some('S'), Arg::None, Opt::Save),
    ("start-daemon", None, Arg::Required, Opt::StartDaemon),
    ("stop-daemon", None, Arg::Required, Opt::StopDaemon),
    ("tcp-service", Some('t'), Arg::Required, Opt::Tcp),
    ("udp-service", Some('u'), Arg::Required, Opt::Udp),
    ("sctp-service", None, Arg::Required, Opt::Sctp),
    ("fwmark-service", Some('f'), Arg::Required, Opt::Fwmark),
    ("scheduler", Some('s'), Arg::Required, Opt::Scheduler),
    ("persistent", Some('p'), Arg::Optional, Opt::Persistent),
    ("netmask", Some('M'), Arg::Required, Opt::Netmask),
    ("real-server", Some('r'), Arg::Required, Opt::RealServer),
    ("masquerading", Some('m'), Arg::None, Opt::Masquerading),
    ("ipip", Some('i'), Arg::None, Opt::Ipip),
    ("gatewaying", Some('g'), Arg::None, Opt::Gatewaying),
    ("weight", Some('w'), Arg::Required, Opt::Weight),
    ("u-threshold", Some('x'), Arg::Required, Opt::UThreshold),
    ("l-threshold", Some('y'), Arg::Required, Opt::LThreshold),
    ("numeric", Some('n'), Arg::None, Opt::Numeric),
    ("connection", Some('c'), Arg::None, Opt::Connection),
    ("mcast-interface", None, Arg::Required, Opt::McastInterface),
    ("syncid", None, Arg::Required, Opt::SyncId),
    ("timeout", None, Arg::None, Opt::Timeout),
    ("daemon", None, Arg::None, Opt::Daemon),
    ("stats", None, Arg::None, Opt::Stats),
    ("rate", None, Arg::None, Opt::Rate),
    ("thresholds", None, Arg::None, Opt::Thresholds),
    ("persistent-conn", None, Arg::None, Opt::PersistentConn),
    ("nosort", None, Arg::None, Opt::NoSort),
    ("sort", None, Arg::None, Opt::Sort),
    ("exact", Some('X'), Arg::None, Opt::Exact),
    ("ipv6", Some('6'), Arg::None, Opt::Ipv6),
    ("ops", Some('o'), Arg::None, Opt::Ops),
    ("pe", None, Arg::Required, Opt::Pe),
    ("sched-flags", Some('b'), Arg::Required, Opt::SchedFlags),
    ("mcast-group", None, Arg::Required, Opt::McastGroup),
    ("mcast-port", None, Arg::Required, Opt::McastPort),
    ("mcast-ttl", None, Arg::Required, Opt::McastTtl),
    ("sync-maxlen", None, Arg::Required, Opt::SyncMaxlen),
    ("tun-info", None, Arg::None, Opt::TunInfo),
    ("tun-type", None, Arg::Required, Opt::TunType),
    ("tun-port", None, Arg::Required, Opt::TunPort),
    ("tun-nocsum", None, Arg::None, Opt::TunNocsum),
    ("tun-csum", None, Arg::None, Opt::TunCsum),
    ("tun-remcsum", None, Arg::None, Opt::TunRemcsum),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PoptError {
    BadOption,
    NoArg,
    UnwantedArg,
}

impl PoptError {
    fn message(self) -> &'static str {
        match self {
            Self::BadOption => "unknown option",
            Self::NoArg => "missing argument",
            Self::UnwantedArg => "option does not take an argument",
        }
    }
}

/// popt's `poptGetNextOpt` (1.18) over ipvsadm's table.
struct Popt<'a> {
    argv: &'a [String],
    /// Next word to read.
    next: usize,
    /// Inside a cluster of short options: word and byte offset of the next
    /// option letter.
    cluster: Option<(usize, usize)>,
    /// After `--`: every word is a leftover.
    rest_leftover: bool,
    leftovers: Vec<&'a str>,
}

type OptArg<'a> = (Opt, Option<&'a str>);

impl<'a> Popt<'a> {
    fn new(argv: &'a [String]) -> Self {
        Self { argv, next: 0, cluster: None, rest_leftover: false, leftovers: Vec::new() }
    }

    /// The word popt names in its errors (and ipvsadm in "invalid option"):
    /// the last one read.
    fn bad_option(&self) -> &'a str {
        self.argv.get(self.next.wrapping_sub(1)).map_or("", String::as_str)
    }

    fn next_opt(&mut self) -> Result<Option<OptArg<'a>>, PoptError> {
        loop {
            if let Some((word, offset)) = self.cluster.take() {
                let rest = &self.argv[word][offset..];
                let Some(letter) = rest.chars().next() else { return Err(PoptError::BadOption) };
                let (_, _, arg, opt) = *OPTIONS.iter().find(|o| o.1 == Some(letter)).ok_or(PoptError::BadOption)?;
                let after = offset + letter.len_utf8();
                let more = &self.argv[word][after..];
                if arg == Arg::None {
                    // -L=x: popt 1.18 refuses a value for a flag.
                    if more.starts_with('=') {
                        return Err(PoptError::UnwantedArg);
                    }
                    self.cluster = (!more.is_empty()).then_some((word, after));
                    return Ok(Some((opt, None)));
                }
                if !more.is_empty() {
                    // -w3, and -w=3.
                    return Ok(Some((opt, Some(more.strip_prefix('=').unwrap_or(more)))));
                }
                return self.take_value(arg).map(|value| Some((opt, value)));
            }

            let Some(word) = self.argv.get(self.next) else { return Ok(None) };
            self.next += 1;
            if self.rest_leftover || !word.starts_with('-') || word == "-" {
                self.leftovers.push(word);
                continue;
            }
            if word == "--" {
                self.rest_leftover = true;
                continue;
            }
            if let Some(long) = word.strip_prefix("--") {
                let (name, value) = match long.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (long, None),
                };
                let (_, _, arg, opt) = *OPTIONS.iter().find(|o| o.0 == name).ok_or(PoptError::BadOption)?;
                return match (arg, value) {
                    (Arg::None, Some(_)) => Err(PoptError::UnwantedArg),
                    (Arg::None, None) => Ok(Some((opt, None))),
                    (_, Some(value)) => Ok(Some((opt, Some(value)))),
                    (_, None) => self.take_value(arg).map(|value| Some((opt, value))),
                };
            }
            self.cluster = Some((self.next - 1, 1));
        }
    }

    /// An option's value from the next word: a required one whatever it is,
    /// an optional one unless it starts with '-'.
    fn take_value(&mut self, arg: Arg) -> Result<Option<&'a str>, PoptError> {
        match self.argv.get(self.next) {
            None if arg == Arg::Optional => Ok(None),
            None => Err(PoptError::NoArg),
            Some(word) if arg == Arg::Optional && word.starts_with('-') => Ok(None),
            Some(word) => {
                self.next += 1;
                Ok(Some(word))
            }
        }
    }
}

// ---------------------------------------------------------------------------
// ipvsadm's commands and options table
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    /// Row in [`COMMANDS_V_OPTIONS`] and name in ipvsadm's messages.
    fn row(self) -> (usize, &'static str) {
        match self {
            Self::Add => (0, "add-service"),
            Self::Edit => (1, "edit-service"),
            Self::Del => (2, "delete-service"),
            Self::Flush => (3, "flush"),
            Self::List => (4, "list"),
            Self::AddDest => (5, "add-server"),
            Self::DelDest => (6, "delete-server"),
            Self::EditDest => (7, "edit-server"),
            Self::Timeout => (8, "set"),
            Self::StartDaemon => (9, "start-daemon"),
            Self::StopDaemon => (10, "stop-daemon"),
            Self::Restore => (11, "restore"),
            Self::Save => (12, "save"),
            Self::Zero => (13, "zero"),
        }
    }
}

/// ipvsadm's option columns, in its table's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Col {
    Numeric = 0,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Mcast,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
    OnePacket,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

const NUMBER_OF_OPT: usize = 34;

const OPT_NAMES: [&str; NUMBER_OF_OPT] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

/// Which options each command takes: '+' needed, 'x' illegal, '1' at most
/// one of the '1's, ' ' allowed. Columns as [`Col`], rows as [`Cmd::row`].
#[rustfmt::skip]
const COMMANDS_V_OPTIONS: [&[u8; NUMBER_OF_OPT]; 14] = [
    //0         1         2         3
    //0123456789012345678901234567890123
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // add-service
    b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx", // edit-service
    b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-service
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // flush
    b" 11xxxxxxxxx11       xxxxxxx xxxxx", // list
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // add-server
    b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx", // delete-server
    b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ", // edit-server
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // set
    b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx", // start-daemon
    b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx", // stop-daemon
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // restore
    b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // save
    b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", // zero
];

/// Tunnel types in ipvsadm's order.
const TUN_NAMES: [&str; 3] = ["ipip", "gue", "gre"];
/// The tunnel options checked per tunnel type.
const TUN_OPTS: [Col; 4] = [Col::TunPort, Col::TunNocsum, Col::TunCsum, Col::TunRemcsum];
/// Which tunnel options each type takes (same key as COMMANDS_V_OPTIONS).
const TUNNEL_TYPES_V_OPTIONS: [&[u8; 4]; 3] = [b"xxxx", b"+111", b"x11x"];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Af {
    #[default]
    Unspec,
    Inet,
    Inet6,
}

impl Af {
    fn of(addr: &IpAddr) -> Self {
        if addr.is_ipv4() { Self::Inet } else { Self::Inet6 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Proto {
    Tcp,
    Udp,
    Sctp,
}

/// ipvsadm's `struct ipvs_command_entry` plus its option bits, filled in as
/// the options are read.
struct Entry {
    cmd: Cmd,
    options: u64,
    // The service.
    svc_af: Af,
    svc_proto: Option<Proto>,
    svc_addr: Option<IpAddr>,
    svc_port: u16,
    fwmark: u32,
    sched_name: String,
    persistent: bool,
    timeout: u32,
    /// An IPv4 mask (as a number), or an IPv6 prefix length.
    netmask: u32,
    one_packet: bool,
    sched_flags_arg: String,
    sched_flags: u8,
    // The real server.
    dest_af: Af,
    dest_addr: Option<IpAddr>,
    dest_port: u16,
    forwarding: Forwarding,
    weight: u32,
    u_threshold: u32,
    l_threshold: u32,
    tun_type: usize,
    // --set
    timeouts: Timeouts,
    // The sync daemon.
    daemon_state: DaemonState,
    mcast_interface: String,
    syncid: Option<u8>,
    sync_maxlen: Option<u16>,
    mcast_group: Option<IpAddr>,
    mcast_port: Option<u16>,
    mcast_ttl: Option<u8>,
}

impl Entry {
    fn new(cmd: Cmd) -> Self {
        Self {
            cmd,
            options: 0,
            svc_af: Af::Unspec,
            svc_proto: None,
            svc_addr: None,
            svc_port: 0,
            fwmark: 0,
            sched_name: String::new(),
            persistent: false,
            timeout: 0,
            netmask: u32::MAX,
            one_packet: false,
            sched_flags_arg: String::new(),
            sched_flags: 0,
            dest_af: Af::Unspec,
            dest_addr: None,
            dest_port: 0,
            forwarding: Forwarding::Dr,
            weight: DEFAULT_WEIGHT,
            u_threshold: 0,
            l_threshold: 0,
            tun_type: 0,
            timeouts: Timeouts { tcp: 0, tcpfin: 0, udp: 0 },
            daemon_state: DaemonState::Master,
            mcast_interface: String::new(),
            syncid: None,
            sync_maxlen: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        }
    }

    fn has(&self, col: Col) -> bool {
        self.options & (1 << col as u32) != 0
    }

    fn set_option(&mut self, col: Col) -> Result<(), ParseError> {
        if self.has(col) {
            return Err(ParseError::usage(format!("multiple '{}' options specified", OPT_NAMES[col as usize])));
        }
        self.options |= 1 << col as u32;
        Ok(())
    }
}

/// ipvsadm's process_options for one command line (`argv` without the
/// program name, not empty).
fn process(program: &str, argv: &[String], names: &Names, reading_stdin: bool) -> Result<Command, ParseError> {
    let mut popt = Popt::new(argv);

    // The command comes first.
    let Ok(Some((first, value))) = popt.next_opt() else { return Err(ParseError::try_help(program)) };
    let cmd = match first {
        Opt::AddService => Cmd::Add,
        Opt::EditService => Cmd::Edit,
        Opt::DeleteService => Cmd::Del,
        Opt::AddServer => Cmd::AddDest,
        Opt::EditServer => Cmd::EditDest,
        Opt::DeleteServer => Cmd::DelDest,
        Opt::Clear => Cmd::Flush,
        Opt::List => Cmd::List,
        Opt::Zero => Cmd::Zero,
        Opt::Set => Cmd::Timeout,
        Opt::Restore => Cmd::Restore,
        Opt::Save => Cmd::Save,
        Opt::StartDaemon => Cmd::StartDaemon,
        Opt::StopDaemon => Cmd::StopDaemon,
        Opt::Help => return Ok(Command::Help),
        Opt::Version => return Ok(Command::Version),
        _ => return Err(ParseError::try_help(program)),
    };
    let mut ce = Entry::new(cmd);
    if let Some(state) = value {
        ce.daemon_state = match state {
            "master" => DaemonState::Master,
            "backup" => DaemonState::Backup,
            _ if cmd == Cmd::StartDaemon => {
                return Err(ParseError::usage("illegal start-daemon parameter specified"));
            }
            // sic
            _ => return Err(ParseError::usage("illegal start_daemon specified")),
        };
    }

    // The options, in order.
    loop {
        let (opt, value) = match popt.next_opt() {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => return Err(ParseError::option(format!("{}: {}", popt.bad_option(), e.message()))),
        };
        let given = value;
        let value = value.unwrap_or_default();
        match opt {
            Opt::Tcp | Opt::Udp | Opt::Sctp => {
                ce.set_option(Col::Service)?;
                let proto = match opt {
                    Opt::Tcp => Proto::Tcp,
                    Opt::Udp => Proto::Udp,
                    _ => Proto::Sctp,
                };
                ce.svc_proto = Some(proto);
                let parsed = parse_service(value, Some(proto), names)
                    .ok_or_else(|| ParseError::usage("illegal virtual server address[:port] specified"))?;
                ce.svc_af = Af::of(&parsed.addr);
                ce.svc_addr = Some(parsed.addr);
                if parsed.addr.is_ipv6() {
                    ce.netmask = 128;
                }
                if let Some(port) = parsed.port {
                    ce.svc_port = port;
                }
            }
            Opt::Fwmark => {
                ce.set_option(Col::Service)?;
                ce.svc_af = Af::Inet;
                ce.svc_proto = Some(Proto::Tcp);
                ce.fwmark = match strtol(value) {
                    Some(mark) if (1..=u32::MAX as i64).contains(&mark) => mark as u32,
                    _ => return Err(ParseError::usage(format!("invalid fwmark value `{value}' specified"))),
                };
            }
            Opt::Scheduler => {
                ce.set_option(Col::Scheduler)?;
                ce.sched_name = truncate(value, 15).to_owned();
            }
            Opt::Persistent => {
                ce.set_option(Col::Persistent)?;
                ce.persistent = true;
                ce.timeout = match given {
                    None => DEFAULT_PERSISTENCE_TIMEOUT,
                    Some(v) => parse_timeout(v, 1, MAX_TIMEOUT)?,
                };
            }
            Opt::Netmask => {
                ce.set_option(Col::Netmask)?;
                if ce.svc_af != Af::Inet6 {
                    let mask = inet_aton(value)
                        .or_else(|| names.host(value))
                        .ok_or_else(|| ParseError::usage("illegal virtual server persistent mask specified"))?;
                    ce.netmask = u32::from(mask);
                } else {
                    let prefix = atoi(value);
                    if !(1..=128).contains(&prefix) {
                        return Err(ParseError::usage("illegal ipv6 netmask specified"));
                    }
                    ce.netmask = prefix as u32;
                }
            }
            Opt::RealServer => {
                ce.set_option(Col::Server)?;
                let parsed = parse_service(value, ce.svc_proto, names)
                    .ok_or_else(|| ParseError::usage("illegal real server address[:port] specified"))?;
                ce.dest_af = Af::of(&parsed.addr);
                ce.dest_addr = Some(parsed.addr);
                // No port: the service's (so far).
                ce.dest_port = parsed.port.unwrap_or(ce.svc_port);
            }
            Opt::Ipip | Opt::Gatewaying | Opt::Masquerading => {
                ce.set_option(Col::Forward)?;
                ce.forwarding = match opt {
                    Opt::Ipip => Forwarding::Tun,
                    Opt::Gatewaying => Forwarding::Dr,
                    _ => Forwarding::Nat,
                };
            }
            Opt::Weight => {
                ce.set_option(Col::Weight)?;
                ce.weight = string_to_number(value, 0, 65535)
                    .ok_or_else(|| ParseError::usage("illegal weight specified"))? as u32;
            }
            Opt::UThreshold => {
                ce.set_option(Col::UThreshold)?;
                ce.u_threshold = string_to_number(value, 0, i32::MAX as i64)
                    .ok_or_else(|| ParseError::usage("illegal u_threshold specified"))?
                    as u32;
            }
            Opt::LThreshold => {
                ce.set_option(Col::LThreshold)?;
                ce.l_threshold = string_to_number(value, 0, i32::MAX as i64)
                    .ok_or_else(|| ParseError::usage("illegal l_threshold specified"))?
                    as u32;
            }
            Opt::Connection => ce.set_option(Col::Connection)?,
            Opt::Numeric => ce.set_option(Col::Numeric)?,
            Opt::McastInterface => {
                ce.set_option(Col::Mcast)?;
                ce.mcast_interface = truncate(value, 15).to_owned();
            }
            Opt::SyncId => {
                ce.set_option(Col::SyncId)?;
                ce.syncid =
                    Some(string_to_number(value, 0, 255).ok_or_else(|| ParseError::usage("illegal syncid specified"))?
                        as u8);
            }
            Opt::Timeout => ce.set_option(Col::Timeout)?,
            Opt::Daemon => ce.set_option(Col::Daemon)?,
            Opt::Stats => ce.set_option(Col::Stats)?,
            Opt::Rate => ce.set_option(Col::Rate)?,
            Opt::Thresholds => ce.set_option(Col::Thresholds)?,
            Opt::PersistentConn => ce.set_option(Col::PersistentConn)?,
            Opt::NoSort => ce.set_option(Col::NoSort)?,
            // Sorting is the default: a no-op kept for compatibility.
            Opt::Sort => {}
            Opt::Exact => ce.set_option(Col::Exact)?,
            Opt::Ipv6 => {
                if ce.fwmark == 0 {
                    return Err(ParseError::usage("-6 used before -f\n"));
                }
                ce.svc_af = Af::Inet6;
                ce.netmask = 128;
            }
            Opt::Ops => {
                ce.set_option(Col::OnePacket)?;
                ce.one_packet = true;
            }
            Opt::Pe => ce.set_option(Col::Pe)?,
            Opt::SchedFlags => {
                ce.set_option(Col::SchedFlags)?;
                ce.sched_flags_arg = truncate(value, 127).to_owned();
            }
            Opt::McastGroup => {
                ce.set_option(Col::McastGroup)?;
                ce.mcast_group = Some(if value.contains(':') {
                    match value.parse::<Ipv6Addr>() {
                        Ok(a) if a.is_multicast() => IpAddr::V6(a),
                        _ => return Err(ParseError::usage(format!("invalid IPv6 mcast-group `{value}'"))),
                    }
                } else {
                    match value.parse::<Ipv4Addr>() {
                        Ok(a) if a.is_multicast() => IpAddr::V4(a),
                        _ => return Err(ParseError::usage(format!("invalid IPv4 mcast-group `{value}'"))),
                    }
                });
            }
            Opt::McastPort => {
                ce.set_option(Col::McastPort)?;
                ce.mcast_port = Some(
                    string_to_number(value, 1, 65535)
                        .ok_or_else(|| ParseError::usage("illegal mcast-port specified"))? as u16,
                );
            }
            Opt::McastTtl => {
                ce.set_option(Col::McastTtl)?;
                ce.mcast_ttl = Some(
                    string_to_number(value, 1, 255).ok_or_else(|| ParseError::usage("illegal mcast-ttl specified"))?
                        as u8,
                );
            }
            Opt::SyncMaxlen => {
                ce.set_option(Col::SyncMaxlen)?;
                ce.sync_maxlen = Some(
                    string_to_number(value, 1, 65535 - 20 - 8)
                        .ok_or_else(|| ParseError::usage("illegal sync-maxlen specified"))? as u16,
                );
            }
            Opt::TunInfo => ce.set_option(Col::TunInfo)?,
            Opt::TunType => {
                ce.set_option(Col::TunType)?;
                ce.tun_type = TUN_NAMES
                    .iter()
                    .position(|n| *n == value)
                    .ok_or_else(|| ParseError::usage("illegal tunnel type specified"))?;
            }
            Opt::TunPort => {
                ce.set_option(Col::TunPort)?;
                string_to_number(value, 1, 65535).ok_or_else(|| ParseError::usage("illegal tunnel port specified"))?;
            }
            Opt::TunNocsum => ce.set_option(Col::TunNocsum)?,
            Opt::TunCsum => ce.set_option(Col::TunCsum)?,
            Opt::TunRemcsum => ce.set_option(Col::TunRemcsum)?,
            Opt::AddService
            | Opt::EditService
            | Opt::DeleteService
            | Opt::Clear
            | Opt::List
            | Opt::Zero
            | Opt::AddServer
            | Opt::EditServer
            | Opt::DeleteServer
            | Opt::Set
            | Opt::Help
            | Opt::Version
            | Opt::Restore
            | Opt::Save
            | Opt::StartDaemon
            | Opt::StopDaemon => {
                return Err(ParseError::usage(format!("invalid option `{}'", popt.bad_option())));
            }
        }
    }

    let mut leftovers = popt.leftovers.iter().copied();
    if cmd == Cmd::Timeout {
        let (Some(tcp), Some(tcpfin), Some(udp)) = (leftovers.next(), leftovers.next(), leftovers.next()) else {
            return Err(ParseError::usage("--set option requires 3 timeout values"));
        };
        ce.timeouts = Timeouts {
            tcp: parse_timeout(tcp, 0, MAX_TIMEOUT)?,
            tcpfin: parse_timeout(tcpfin, 0, MAX_TIMEOUT)?,
            udp: parse_timeout(udp, 0, MAX_TIMEOUT)?,
        };
    }
    if let Some(extra) = leftovers.next() {
        return Err(ParseError::usage(format!("unexpected argument {extra}")));
    }
    if !ce.sched_flags_arg.is_empty() {
        ce.sched_flags = parse_sched_flags(&ce.sched_name, &ce.sched_flags_arg)?;
    }

    generic_opt_check(&ce)?;

    if matches!(cmd, Cmd::Add | Cmd::Edit) {
        if ce.fwmark == 0 && ce.svc_port == 0 && !ce.persistent {
            return Err(ParseError::usage("Zero port specified for non-persistent service"));
        }
        if ce.one_packet && ce.fwmark == 0 && ce.svc_proto != Some(Proto::Udp) {
            return Err(ParseError::usage("One-Packet Scheduling is only for UDP virtual services"));
        }
    }
    if matches!(cmd, Cmd::AddDest | Cmd::EditDest) {
        if ce.fwmark == 0 && matches!(ce.forwarding, Forwarding::Tun | Forwarding::Dr) {
            ce.dest_port = ce.svc_port;
        }
        if ce.dest_af != ce.svc_af && ce.forwarding != Forwarding::Tun {
            return Err(ParseError::usage("Different address family is allowed only for tunneling servers"));
        }
        let tunnel_options = [Col::TunType, Col::TunPort, Col::TunNocsum, Col::TunCsum, Col::TunRemcsum];
        if tunnel_options.iter().any(|c| ce.has(*c)) && ce.forwarding != Forwarding::Tun {
            return Err(ParseError::usage("Tunnel options conflict with forward method"));
        }
        tunnel_opt_check(&ce)?;
    }
    if cmd == Cmd::List {
        let any = |cols: &[Col]| cols.iter().any(|c| ce.has(*c));
        if (any(&[Col::Connection, Col::Timeout, Col::Daemon]) && any(&[Col::Stats, Col::Rate, Col::Thresholds]))
            || (any(&[Col::Timeout, Col::Daemon]) && ce.has(Col::PersistentConn))
        {
            return Err(ParseError::usage("options conflicts in the list command"));
        }
    }
    if cmd == Cmd::Restore && reading_stdin {
        return Err(ParseError::try_help(program));
    }

    build(&ce)
}

/// The typed command from a checked entry, refusing what ipvsadm accepts
/// but the load balancer does not have.
fn build(ce: &Entry) -> Result<Command, ParseError> {
    let service = || -> Result<VirtualService, ParseError> {
        if ce.fwmark != 0 {
            return Err(ParseError::unsupported("firewall-mark services are not supported"));
        }
        let protocol = match ce.svc_proto {
            Some(Proto::Tcp) => Protocol::Tcp,
            Some(Proto::Udp) => Protocol::Udp,
            _ => return Err(ParseError::unsupported("SCTP services are not supported")),
        };
        let addr = ce.svc_addr.expect("a service address was parsed");
        Ok(VirtualService { protocol, addr, port: ce.svc_port })
    };
    Ok(match ce.cmd {
        Cmd::Add | Cmd::Edit => {
            let service = service()?;
            if ce.has(Col::Pe) {
                return Err(ParseError::unsupported("persistence engines (--pe) are not supported"));
            }
            if ce.one_packet {
                return Err(ParseError::unsupported("one-packet scheduling (-o, --ops) is not supported"));
            }
            let scheduler = if ce.sched_name.is_empty() {
                (ce.cmd == Cmd::Add).then_some(Scheduler::Wlc)
            } else {
                Some(ce.sched_name.parse().map_err(|_| ParseError::kernel(KernelError::SchedulerNotFound))?)
            };
            let config = ServiceConfig {
                service,
                scheduler,
                persistence_timeout: ce.persistent.then_some(ce.timeout),
                netmask: if ce.svc_af == Af::Inet6 {
                    Netmask::V6(ce.netmask as u8)
                } else {
                    Netmask::V4(Ipv4Addr::from(ce.netmask))
                },
                sched_flags: SchedFlags(ce.sched_flags),
            };
            if ce.cmd == Cmd::Add { Command::AddService(config) } else { Command::EditService(config) }
        }
        Cmd::Del => Command::DeleteService(service()?),
        Cmd::Flush => Command::Clear,
        Cmd::List => Command::List(List {
            target: if ce.has(Col::Connection) {
                ListTarget::Connections
            } else if ce.has(Col::Service) {
                ListTarget::Service(service()?)
            } else if ce.has(Col::Timeout) {
                ListTarget::Timeouts
            } else if ce.has(Col::Daemon) {
                ListTarget::Daemon
            } else {
                ListTarget::All
            },
            numeric: ce.has(Col::Numeric),
            stats: ce.has(Col::Stats),
            rate: ce.has(Col::Rate),
            thresholds: ce.has(Col::Thresholds),
            persistent_conn: ce.has(Col::PersistentConn),
            tun_info: ce.has(Col::TunInfo),
            exact: ce.has(Col::Exact),
            nosort: ce.has(Col::NoSort),
        }),
        Cmd::AddDest | Cmd::EditDest => {
            let service = service()?;
            if ce.tun_type != 0 {
                return Err(ParseError::unsupported(format!(
                    "tunnel type '{}' is not supported: tunnels are ipip",
                    TUN_NAMES[ce.tun_type]
                )));
            }
            let config = ServerConfig {
                service,
                server: SocketAddr::new(ce.dest_addr.expect("a real server was parsed"), ce.dest_port),
                forwarding: ce.forwarding,
                weight: ce.weight,
                upper_threshold: ce.u_threshold,
                lower_threshold: ce.l_threshold,
            };
            if ce.cmd == Cmd::AddDest { Command::AddServer(config) } else { Command::EditServer(config) }
        }
        Cmd::DelDest => Command::DeleteServer {
            service: service()?,
            server: SocketAddr::new(ce.dest_addr.expect("a real server was parsed"), ce.dest_port),
        },
        Cmd::Timeout => Command::SetTimeouts(ce.timeouts),
        Cmd::StartDaemon => Command::StartDaemon(DaemonConfig {
            state: ce.daemon_state,
            mcast_interface: if ce.mcast_interface.is_empty() {
                DEFAULT_MCAST_INTERFACE.to_owned()
            } else {
                ce.mcast_interface.clone()
            },
            syncid: ce.syncid,
            sync_maxlen: ce.sync_maxlen,
            mcast_group: ce.mcast_group,
            mcast_port: ce.mcast_port,
            mcast_ttl: ce.mcast_ttl,
        }),
        Cmd::StopDaemon => Command::StopDaemon { state: ce.daemon_state, syncid: ce.syncid },
        Cmd::Restore => Command::Restore,
        Cmd::Save => Command::Save { numeric: ce.has(Col::Numeric) },
        Cmd::Zero => Command::Zero(if ce.has(Col::Service) { Some(service()?) } else { None }),
    })
}

/// ipvsadm's generic_opt_check: the options table, column by column.
fn generic_opt_check(ce: &Entry) -> Result<(), ParseError> {
    let (row, command) = ce.cmd.row();
    let mut first_exclusive: Option<usize> = None;
    for (j, &rule) in COMMANDS_V_OPTIONS[row].iter().enumerate() {
        let set = ce.options & (1 << j) != 0;
        if !set {
            if rule == b'+' {
                return Err(ParseError::usage(format!(
                    "You need to supply the '{}' option for the '{command}' command",
                    OPT_NAMES[j]
                )));
            }
            continue;
        }
        if rule == b'x' {
            return Err(ParseError::usage(format!("Illegal '{}' option with the '{command}' command", OPT_NAMES[j])));
        }
        if rule == b'1' {
            match first_exclusive {
                None => first_exclusive = Some(j),
                Some(last) => {
                    return Err(ParseError::usage(format!(
                        "The option '{}' conflicts with the '{}' option in the '{command}' command",
                        OPT_NAMES[j], OPT_NAMES[last]
                    )));
                }
            }
        }
    }
    Ok(())
}

/// ipvsadm's tunnel_opt_check: the tunnel options table of the tunnel type.
fn tunnel_opt_check(ce: &Entry) -> Result<(), ParseError> {
    let tunnel = TUN_NAMES[ce.tun_type];
    let mut first_exclusive: Option<Col> = None;
    for (j, &rule) in TUNNEL_TYPES_V_OPTIONS[ce.tun_type].iter().enumerate() {
        let col = TUN_OPTS[j];
        let name = OPT_NAMES[col as usize];
        if !ce.has(col) {
            if rule == b'+' {
                return Err(ParseError::usage(format!(
                    "You need to supply the '{name}' option for the '{tunnel}' tunnel type"
                )));
            }
            continue;
        }
        if rule == b'x' {
            return Err(ParseError::usage(format!("Illegal '{name}' option with the '{tunnel}' tunnel type")));
        }
        if rule == b'1' {
            match first_exclusive {
                None => first_exclusive = Some(col),
                Some(last) => {
                    return Err(ParseError::usage(format!(
                        "The option '{name}' conflicts with the '{}' option in the '{tunnel}' tunnel type",
                        OPT_NAMES[last as usize]
                    )));
                }
            }
        }
    }
    Ok(())
}

/// ipvsadm's parse_sched_flags, against the scheduler named by `-s` (wlc
/// when none).
fn parse_sched_flags(sched: &str, arg: &str) -> Result<u8, ParseError> {
    let sched = if sched.is_empty() { "wlc" } else { sched };
    let mut flags = 0;
    let mut any = false;
    for flag in arg.split(',').filter(|f| !f.is_empty()) {
        any = true;
        let (bit, needs) = match flag {
            "flag-1" => (SchedFlags::FLAG_1, None),
            "flag-2" => (SchedFlags::FLAG_2, None),
            "flag-3" => (SchedFlags::FLAG_3, None),
            "sh-fallback" => (SchedFlags::FLAG_1, Some("sh")),
            "sh-port" => (SchedFlags::FLAG_2, Some("sh")),
            "mh-fallback" => (SchedFlags::FLAG_1, Some("mh")),
            "mh-port" => (SchedFlags::FLAG_2, Some("mh")),
            _ => return Err(ParseError::usage(format!("invalid scheduler flag `{flag}'"))),
        };
        flags |= bit;
        if needs.is_some_and(|s| s != sched) {
            return Err(ParseError::usage(format!("incompatible scheduler flag `{flag}'")));
        }
    }
    if !any {
        return Err(ParseError::usage(format!("invalid scheduler flag `{arg}'")));
    }
    Ok(flags)
}

// ---------------------------------------------------------------------------
// ipvsadm's (and libc's) little parsers
// ---------------------------------------------------------------------------

/// parse_timeout: a number in min..=max, else ipvsadm's complaint.
fn parse_timeout(value: &str, min: u32, max: u32) -> Result<u32, ParseError> {
    string_to_number(value, min as i64, max as i64)
        .map(|n| n as u32)
        .ok_or_else(|| ParseError::usage(format!("invalid timeout value `{value}' specified")))
}

/// string_to_number: strtol(s, 10) consuming the whole (non-empty) string,
/// within min..=max.
fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    strtol(s).filter(|n| (min..=max).contains(n))
}

/// C's isspace in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// strtol(s, &end, 10) that must end at the end of `s` having read a
/// digit, without overflow.
fn strtol(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let negative = match b.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let start = i;
    let mut n: i64 = 0;
    let mut overflow = false;
    while i < b.len() && b[i].is_ascii_digit() {
        let d = (b[i] - b'0') as i64;
        match n.checked_mul(10).and_then(|n| if negative { n.checked_sub(d) } else { n.checked_add(d) }) {
            Some(v) => n = v,
            None => overflow = true,
        }
        i += 1;
    }
    (i > start && i == b.len() && !overflow).then_some(n)
}

/// atoi: leading blanks, a sign, digits; 0 when there are none.
fn atoi(s: &str) -> i64 {
    let t = s.trim_start_matches(|c: char| c.is_ascii() && is_c_space(c as u8));
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits = t.bytes().take_while(u8::is_ascii_digit).take(18).fold(0i64, |n, d| n * 10 + (d - b'0') as i64);
    if negative { -digits } else { digits }
}

/// glibc's inet_aton: one to four parts, each decimal, octal (0...) or hex
/// (0x...): a (32 bits), a.b (8.24), a.b.c (8.8.16) or a.b.c.d; trailing
/// blanks and what follows them are ignored.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    let mut parts: Vec<u32> = Vec::with_capacity(4);
    let mut i = 0;
    let last = loop {
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let (value, used) = strtoul_base0(&b[i..])?;
        i += used;
        if b.get(i) == Some(&b'.') {
            if parts.len() >= 3 || value > 0xff {
                return None;
            }
            parts.push(value);
            i += 1;
        } else {
            break value;
        }
    };
    if let Some(&c) = b.get(i)
        && !(c.is_ascii() && is_c_space(c))
    {
        return None;
    }
    let limit: u32 = match parts.len() {
        0 => u32::MAX,
        1 => 0xff_ffff,
        2 => 0xffff,
        _ => 0xff,
    };
    if last > limit {
        return None;
    }
    let high = parts.iter().enumerate().fold(0u32, |acc, (k, p)| acc | (p << (24 - 8 * k)));
    Some(Ipv4Addr::from(high | last))
}

/// strtoul(s, &end, 0) from a digit: the value (None when above 32 bits)
/// and how many bytes it read.
fn strtoul_base0(b: &[u8]) -> Option<(u32, usize)> {
    let (radix, start) = if b.len() >= 3 && b[0] == b'0' && matches!(b[1], b'x' | b'X') && b[2].is_ascii_hexdigit() {
        (16, 2)
    } else if b[0] == b'0' {
        (8, 0)
    } else {
        (10, 0)
    };
    let mut value: u64 = 0;
    let mut i = start;
    while let Some(d) = b.get(i).and_then(|c| (*c as char).to_digit(radix)) {
        value = value.saturating_mul(radix as u64).saturating_add(d as u64);
        i += 1;
    }
    (value <= u32::MAX as u64).then_some((value as u32, i))
}

/// An address (and port) that parse_service read.
struct AddrPort {
    addr: IpAddr,
    port: Option<u16>,
}

/// ipvsadm's parse_service: `host[:port]`, `[ipv6]:port` or a bare IPv6
/// address; the host by inet_aton or name, the port by number or by name
/// for `proto`. None when ipvsadm finds no address (or a bad port).
fn parse_service(buf: &str, proto: Option<Proto>, names: &Names) -> Option<AddrPort> {
    if buf.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut host = buf;
    let mut port: Option<&str> = None;
    if let Some(inner) = buf.strip_prefix('[') {
        let close = inner.find(']')?;
        port = Some(inner[close + 1..].strip_prefix(':')?);
        host = &inner[..close];
    }
    let addr = if let Ok(v6) = host.parse::<Ipv6Addr>() {
        IpAddr::V6(v6)
    } else {
        // ipvsadm looks for the port again in what is left (so a bracketed
        // IPv4 address loses its port).
        port = None;
        if let Some(i) = host.rfind(':') {
            port = Some(&host[i + 1..]);
            host = &host[..i];
        }
        IpAddr::V4(inet_aton(host).or_else(|| names.host(host))?)
    };
    let port = match port {
        None => None,
        Some(p) => Some(match string_to_number(p, 0, 65535) {
            Some(n) => n as u16,
            None => names.port(p, proto?)?,
        }),
    };
    Some(AddrPort { addr, port })
}

/// The first `max` bytes of `s` (ipvsadm's strncpy into fixed buffers), on
/// a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const S_N: &str = include_str!("../tests/fixtures/ipvsadm/S-n.txt");
    const S: &str = include_str!("../tests/fixtures/ipvsadm/S.txt");

    /// The reference machine's /etc/services entries for the named ports
    /// (Debian netbase), so the tests do not depend on this host's.
    const REFERENCE_SERVICES: &str = "\
domain          53/tcp                          # Domain Name Server
domain          53/udp
http            80/tcp          www             # WorldWideWeb HTTP
https           443/tcp                         # http protocol over TLS/SSL
https           443/udp                         # HTTP/3
tproxy          8081/tcp                        # Transparent Proxy
";

    const VIP: &str = "10.200.1.100";

    fn names() -> Names {
        Names::default().with_services(REFERENCE_SERVICES).with_hosts("10.200.1.100 vip.example vip\n")
    }

    fn words(line: &str) -> Vec<&str> {
        line.split_whitespace().collect()
    }

    fn ok(line: &str) -> Command {
        parse(&words(line), &names()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
    }

    fn err(line: &str) -> ParseError {
        match parse(&words(line), &names()) {
            Ok(c) => panic!("{line:?} parsed as {c:?}"),
            Err(e) => e,
        }
    }

    /// The error's message and status.
    fn fails(line: &str) -> (String, i32) {
        let e = err(line);
        (e.message, e.exit_code)
    }

    fn usage_error(message: &str) -> (String, i32) {
        (message.to_owned(), EXIT_USAGE)
    }

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    fn tcp(addr: &str, port: u16) -> VirtualService {
        VirtualService { protocol: Protocol::Tcp, addr: v4(addr), port }
    }

    fn sock(addr: &str, port: u16) -> SocketAddr {
        SocketAddr::new(v4(addr), port)
    }

    fn service(svc: VirtualService, scheduler: Option<Scheduler>) -> ServiceConfig {
        ServiceConfig {
            service: svc,
            scheduler,
            persistence_timeout: None,
            netmask: Netmask::V4(Ipv4Addr::BROADCAST),
            sched_flags: SchedFlags::default(),
        }
    }

    fn server(svc: VirtualService, addr: &str, port: u16, forwarding: Forwarding, weight: u32) -> ServerConfig {
        ServerConfig {
            service: svc,
            server: sock(addr, port),
            forwarding,
            weight,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    fn assert_round_trip(c: &Command) {
        let args = c.to_args();
        assert_eq!(parse(&args, &names()).as_ref(), Ok(c), "{args:?}");
    }

    fn is_fwmark_rule(line: &str) -> bool {
        line.starts_with("-A -f ") || line.starts_with("-a -f ")
    }

    const FWMARK: &str = "firewall-mark services are not supported";

    // --- ipvsadm -S output -------------------------------------------------

    /// Every rule `ipvsadm -S -n` wrote parses, and is written back the
    /// same; the firewall-mark ones are refused.
    #[test]
    fn every_numeric_save_line_parses_and_is_written_back() {
        let mut rules = 0;
        for line in S_N.lines() {
            let result = parse(&words(line), &names());
            if is_fwmark_rule(line) {
                let e = result.unwrap_err();
                assert_eq!((e.message.as_str(), e.exit_code, e.kind), (FWMARK, 2, ErrorKind::Unsupported), "{line}");
                continue;
            }
            let c = result.unwrap_or_else(|e| panic!("{line}: {e:?}"));
            assert_eq!(c.to_args().join(" "), line);
            assert_eq!(c.to_string(), line);
            assert_round_trip(&c);
            rules += 1;
        }
        assert_eq!(rules, 66);
    }

    /// `ipvsadm -S` (port names) gives the same commands as `-S -n`.
    #[test]
    fn every_named_save_line_parses_like_its_numeric_twin() {
        assert_eq!(S.lines().count(), S_N.lines().count());
        for (named, numeric) in S.lines().zip(S_N.lines()) {
            if is_fwmark_rule(named) {
                assert_eq!(err(named).message, FWMARK);
                continue;
            }
            assert_eq!(ok(named), ok(numeric), "{named}");
            assert_eq!(ok(named).to_string(), numeric);
        }
    }

    #[test]
    fn save_lines_have_the_expected_meaning() {
        let svc81 = tcp(VIP, 81);
        assert_eq!(
            ok("-A -t 10.200.1.100:81 -s sh -b sh-fallback,sh-port"),
            Command::AddService(ServiceConfig {
                sched_flags: SchedFlags(SchedFlags::FLAG_1 | SchedFlags::FLAG_2),
                ..service(svc81, Some(Scheduler::Sh))
            })
        );
        // tproxy is 8081/tcp; NAT keeps the real server's own port.
        assert_eq!(
            ok("-a -t 10.200.1.100:81 -r 10.200.1.21:tproxy -m -w 1"),
            Command::AddServer(server(svc81, "10.200.1.21", 8081, Forwarding::Nat, 1))
        );
        assert_eq!(
            ok("-a -t 10.200.1.100:81 -r 10.200.1.22:81 -i -w 1 --tun-type ipip"),
            Command::AddServer(server(svc81, "10.200.1.22", 81, Forwarding::Tun, 1))
        );
        assert_eq!(
            ok("-A -t 10.200.1.100:https -s rr -p 300"),
            Command::AddService(ServiceConfig {
                persistence_timeout: Some(300),
                ..service(tcp(VIP, 443), Some(Scheduler::Rr))
            })
        );
        let dns = VirtualService { protocol: Protocol::Udp, addr: v4(VIP), port: 53 };
        assert_eq!(ok("-A -u 10.200.1.100:domain -s rr"), Command::AddService(service(dns, Some(Scheduler::Rr))));
        assert_eq!(
            ok("-a -u 10.200.1.100:domain -r 10.200.1.21:domain -g -w 1"),
            Command::AddServer(server(dns, "10.200.1.21", 53, Forwarding::Dr, 1))
        );
        // Every scheduler of the table.
        for s in Scheduler::ALL {
            let c = ok(&format!("-A -t 10.200.1.100:80 -s {}", s.name()));
            assert!(matches!(c, Command::AddService(ServiceConfig { scheduler: Some(x), .. }) if x == s));
        }
    }

    #[test]
    fn restore_reads_save_output_up_to_the_first_refused_line() {
        let e = parse_restore(S_N, &names()).unwrap_err();
        let first_fwm = S_N.lines().position(is_fwmark_rule).unwrap() + 1;
        assert_eq!(e, RestoreError { line: first_fwm, message: FWMARK.to_owned(), exit_code: 2 });
        assert_eq!(e.to_string(), format!("line {first_fwm}: {FWMARK}"));

        let without_fwm: String = S.lines().filter(|l| !is_fwmark_rule(l)).map(|l| format!("{l}\n")).collect();
        let commands = parse_restore(&without_fwm, &names()).unwrap();
        assert_eq!(commands.len(), 66);
        let numeric: Vec<Command> = S_N.lines().filter(|l| !is_fwmark_rule(l)).map(ok).collect();
        assert_eq!(commands, numeric);
    }

    #[test]
    fn restore_skips_blank_and_comment_lines_and_the_word_ipvsadm() {
        let text = "\n\
            # saved by hand\n\
            \t  \r\n\
            ipvsadm -A -t 10.0.0.1:80 -s rr   # the web\n\
            -a\t-t 10.0.0.1:80 -r 10.0.0.2 -g -w 2\r\n\
            -C\n";
        let commands = parse_restore(text, &names()).unwrap();
        assert_eq!(
            commands,
            vec![
                Command::AddService(service(tcp("10.0.0.1", 80), Some(Scheduler::Rr))),
                Command::AddServer(server(tcp("10.0.0.1", 80), "10.0.0.2", 80, Forwarding::Dr, 2)),
                Command::Clear,
            ]
        );
        assert_eq!(split_restore_line("ipvsadm -L # -n"), vec!["-L"]);
        assert_eq!(parse_restore_line("ipvsadm", "   ", &names()), None);
    }

    #[test]
    fn restore_reports_the_line_and_refuses_a_nested_restore() {
        let text = "-A -t 10.0.0.1:80\n\n-a -t 10.0.0.1:80 -r 10.0.0.2 -w 70000\n";
        assert_eq!(
            parse_restore(text, &names()),
            Err(RestoreError { line: 3, message: "illegal weight specified".into(), exit_code: 2 })
        );
        let e = parse_restore("-R\n", &names()).unwrap_err();
        assert_eq!((e.line, e.exit_code), (1, 255));
        assert_eq!(e.message, "Try `lbctl -h' or 'lbctl --help' for more information.");
        // A stray word is not a command.
        assert_eq!(parse_restore("10.0.0.1\n", &names()).unwrap_err().exit_code, 255);
    }

    // --- the classic director script ----------------------------------------

    #[test]
    fn classic_director_script() {
        let svc = tcp("192.168.1.100", 80);
        let script = [
            ("-C", Command::Clear),
            ("-A -t 192.168.1.100:80 -s wlc", Command::AddService(service(svc, Some(Scheduler::Wlc)))),
            (
                "-a -t 192.168.1.100:80 -r 192.168.1.11 -g -w 3",
                Command::AddServer(server(svc, "192.168.1.11", 80, Forwarding::Dr, 3)),
            ),
            (
                "-a -t 192.168.1.100:80 -r 192.168.1.12:80 -g -w 2",
                Command::AddServer(server(svc, "192.168.1.12", 80, Forwarding::Dr, 2)),
            ),
            ("-E -t 192.168.1.100:80 -s rr", Command::EditService(service(svc, Some(Scheduler::Rr)))),
            (
                "-e -t 192.168.1.100:80 -r 192.168.1.11 -g -w 5",
                Command::EditServer(server(svc, "192.168.1.11", 80, Forwarding::Dr, 5)),
            ),
            (
                "-d -t 192.168.1.100:80 -r 192.168.1.12",
                Command::DeleteServer { service: svc, server: sock("192.168.1.12", 80) },
            ),
            ("-D -t 192.168.1.100:80", Command::DeleteService(svc)),
        ];
        for (line, expected) in script {
            assert_eq!(ok(line), expected, "{line}");
            assert_round_trip(&expected);
        }
        // The same with long options, in another order.
        assert_eq!(
            ok("--add-server --real-server 192.168.1.11 --weight 3 --gatewaying --tcp-service 192.168.1.100:80"),
            Command::AddServer(server(svc, "192.168.1.11", 80, Forwarding::Dr, 3))
        );
        assert_eq!(
            ok("--add-service --tcp-service=192.168.1.100:http --scheduler=wlc"),
            Command::AddService(service(svc, Some(Scheduler::Wlc)))
        );
    }

    #[test]
    fn defaults_of_add_and_edit() {
        let svc = tcp("10.0.0.1", 80);
        // -A: wlc. -E without -s: none given (ipvsadm would send wlc).
        assert_eq!(ok("-A -t 10.0.0.1:80"), Command::AddService(service(svc, Some(Scheduler::Wlc))));
        let edit = ok("-E -t 10.0.0.1:80 -p");
        let Command::EditService(config) = &edit else { panic!("{edit:?}") };
        assert_eq!(config.scheduler, None);
        assert_eq!(config.ipvsadm_scheduler(), Scheduler::Wlc);
        assert_eq!(config.persistence_timeout, Some(DEFAULT_PERSISTENCE_TIMEOUT));
        assert_round_trip(&edit);
        // -a: direct routing, weight 1, the service's port.
        assert_eq!(
            ok("-a -t 10.0.0.1:80 -r 10.0.0.2"),
            Command::AddServer(server(svc, "10.0.0.2", 80, Forwarding::Dr, 1))
        );
        // An empty scheduler name counts as none.
        assert_eq!(ok("-A -t 10.0.0.1:80 -s="), ok("-A -t 10.0.0.1:80"));
    }

    #[test]
    fn real_server_ports() {
        let svc = tcp("10.0.0.1", 80);
        // Direct routing and tunnelling use the service's port whatever is given.
        assert_eq!(
            ok("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -g"),
            Command::AddServer(server(svc, "10.0.0.2", 80, Forwarding::Dr, 1))
        );
        assert_eq!(
            ok("-e -t 10.0.0.1:80 -r 10.0.0.2:8080 -i"),
            Command::EditServer(server(svc, "10.0.0.2", 80, Forwarding::Tun, 1))
        );
        // NAT keeps it, or takes the service's.
        assert_eq!(
            ok("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m"),
            Command::AddServer(server(svc, "10.0.0.2", 8080, Forwarding::Nat, 1))
        );
        assert_eq!(
            ok("-a -t 10.0.0.1:80 -r 10.0.0.2 --masquerading"),
            Command::AddServer(server(svc, "10.0.0.2", 80, Forwarding::Nat, 1))
        );
        // ... the service's so far: -r before -t finds port 0.
        assert_eq!(
            ok("-a -r 10.0.0.2 -m -t 10.0.0.1:80"),
            Command::AddServer(server(svc, "10.0.0.2", 0, Forwarding::Nat, 1))
        );
        // ... and no port names before the protocol is known.
        assert_eq!(
            fails("-a -r 10.0.0.2:http -m -t 10.0.0.1:80"),
            usage_error("illegal real server address[:port] specified")
        );
        // -d keeps the port given.
        assert_eq!(
            ok("-d -t 10.0.0.1:80 -r 10.0.0.2:8080"),
            Command::DeleteServer { service: svc, server: sock("10.0.0.2", 8080) }
        );
    }

    #[test]
    fn persistence_and_netmask() {
        let persistent = |line: &str| match ok(line) {
            Command::AddService(c) => (c.persistence_timeout, c.netmask, c.scheduler),
            c => panic!("{c:?}"),
        };
        let host = Netmask::V4(Ipv4Addr::BROADCAST);
        assert_eq!(persistent("-A -t 10.0.0.1:80 -p"), (Some(360), host, Some(Scheduler::Wlc)));
        assert_eq!(persistent("-A -t 10.0.0.1:80 -p 60"), (Some(60), host, Some(Scheduler::Wlc)));
        assert_eq!(persistent("-A -t 10.0.0.1:80 -p60"), (Some(60), host, Some(Scheduler::Wlc)));
        assert_eq!(persistent("-A -t 10.0.0.1:80 --persistent=60"), (Some(60), host, Some(Scheduler::Wlc)));
        assert_eq!(persistent("-A -t 10.0.0.1:80 --persistent 60"), (Some(60), host, Some(Scheduler::Wlc)));
        // The optional value is not taken from a word starting with '-'.
        assert_eq!(persistent("-A -t 10.0.0.1:80 -p -s rr"), (Some(360), host, Some(Scheduler::Rr)));
        assert_eq!(persistent("-A -p -t 10.0.0.1:80"), (Some(360), host, Some(Scheduler::Wlc)));
        let mask = Netmask::V4(Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(persistent("-A -t 10.0.0.1:80 -p 60 -M 255.255.255.0"), (Some(60), mask, Some(Scheduler::Wlc)));
        // inet_aton reads a bare number as an address.
        assert_eq!(persistent("-A -t 10.0.0.1:80 -p -M 24").1, Netmask::V4(Ipv4Addr::new(0, 0, 0, 24)));
        // Port 0 (every port) needs persistence.
        assert_eq!(persistent("-A -t 10.0.0.1 -p"), (Some(360), host, Some(Scheduler::Wlc)));
        assert_eq!(persistent("-A -t 10.0.0.1:0 -p 10"), (Some(10), host, Some(Scheduler::Wlc)));
        for bad in ["-A -t 10.0.0.1:0", "-A -t 10.0.0.1", "-E -t 10.0.0.1:0 -s rr"] {
            assert_eq!(fails(bad), usage_error("Zero port specified for non-persistent service"), "{bad}");
        }
        assert_eq!(fails("-A -t 10.0.0.1:80 -p 0"), usage_error("invalid timeout value `0' specified"));
        assert_eq!(fails("-A -t 10.0.0.1:80 -p 2678401"), usage_error("invalid timeout value `2678401' specified"));
        assert_eq!(fails("-A -t 10.0.0.1:80 -p 1h"), usage_error("invalid timeout value `1h' specified"));
        assert_eq!(persistent("-A -t 10.0.0.1:80 -p 2678400").0, Some(2_678_400));
        assert_eq!(
            fails("-A -t 10.0.0.1:80 -p -M 255.255.255.256"),
            usage_error("illegal virtual server persistent mask specified")
        );
    }

    #[test]
    fn scheduler_flags() {
        let flags = |line: &str| match ok(line) {
            Command::AddService(c) | Command::EditService(c) => c.sched_flags,
            c => panic!("{c:?}"),
        };
        assert_eq!(flags("-A -t 10.0.0.1:80 -s mh -b mh-port"), SchedFlags(SchedFlags::FLAG_2));
        // Checked against the scheduler, whatever the order.
        assert_eq!(flags("-A -t 10.0.0.1:80 -b mh-fallback -s mh"), SchedFlags(SchedFlags::FLAG_1));
        assert_eq!(flags("-A -t 10.0.0.1:80 -b flag-3,,flag-1"), SchedFlags(5));
        assert_eq!(fails("-A -t 10.0.0.1:80 -s rr -b sh-port"), usage_error("incompatible scheduler flag `sh-port'"));
        // Without -s the flags are checked against wlc, for -E too.
        assert_eq!(fails("-E -t 10.0.0.1:80 -b sh-port"), usage_error("incompatible scheduler flag `sh-port'"));
        assert_eq!(fails("-A -t 10.0.0.1:80 -s sh -b sh-port,bogus"), usage_error("invalid scheduler flag `bogus'"));
        assert_eq!(fails("-A -t 10.0.0.1:80 -s sh -b ,"), usage_error("invalid scheduler flag `,'"));
        // An empty -b is ignored.
        assert_eq!(flags("-A -t 10.0.0.1:80 -b="), SchedFlags(0));
        // Written back by the scheduler's names.
        let c = ok("-A -t 10.0.0.1:80 -s sh -b flag-2,flag-1,flag-3");
        assert_eq!(c.to_string(), "-A -t 10.0.0.1:80 -s sh -b sh-fallback,sh-port,flag-3");
        assert_round_trip(&c);
        assert_eq!(SchedFlags(7).names("rr"), ["flag-1", "flag-2", "flag-3"]);
    }

    #[test]
    fn thresholds_are_only_range_checked() {
        let svc = tcp("10.0.0.1", 80);
        // Lower above upper is the kernel's ERANGE, not a parse error.
        assert_eq!(
            ok("-a -t 10.0.0.1:80 -r 10.0.0.2 -x 10 -y 20"),
            Command::AddServer(ServerConfig {
                upper_threshold: 10,
                lower_threshold: 20,
                ..server(svc, "10.0.0.2", 80, Forwarding::Dr, 1)
            })
        );
        let c = ok("-a -t 10.0.0.1:80 -r 10.0.0.2 --u-threshold 100 --l-threshold=50 -w 0");
        assert_eq!(c.to_string(), "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 0 -x 100 -y 50");
        assert_round_trip(&c);
        assert_eq!(fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -x -1"), usage_error("illegal u_threshold specified"));
        assert_eq!(fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -y 2147483648"), usage_error("illegal l_threshold specified"));
        assert!(matches!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 -y 2147483647"), Command::AddServer(_)));
        assert_eq!(KernelError::OutOfRange.message(), "Numerical result out of range");
    }

    #[test]
    fn weights() {
        let weight = |line: &str| match ok(line) {
            Command::AddServer(c) | Command::EditServer(c) => c.weight,
            c => panic!("{c:?}"),
        };
        assert_eq!(weight("-a -t 10.0.0.1:80 -r 10.0.0.2 -w 65535"), 65535);
        assert_eq!(weight("-a -t 10.0.0.1:80 -r 10.0.0.2 -w0"), 0);
        assert_eq!(weight("-a -t 10.0.0.1:80 -r 10.0.0.2 -w=7"), 7);
        assert_eq!(weight("-a -t 10.0.0.1:80 -r 10.0.0.2 --weight=+8"), 8);
        for bad in ["70000", "65536", "-1", "x", "3x", "0x10", "=", ""] {
            let line = format!("-a -t 10.0.0.1:80 -r 10.0.0.2 --weight={bad}");
            assert_eq!(fails(&line), usage_error("illegal weight specified"), "{line}");
        }
        assert_eq!(fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -w 70000"), usage_error("illegal weight specified"));
    }

    // --- addresses ----------------------------------------------------------

    #[test]
    fn malformed_addresses() {
        let bad_vs = usage_error("illegal virtual server address[:port] specified");
        for addr in [
            "10.0.0.300:80",
            "10.0.0.1:99999",
            "10.0.0.1:65536",
            "10.0.0.1:",
            "10.0.0.1:-1",
            "10.0.0.1:nosuchport",
            "80",
            ":80",
            "10.0.0.1.5:80",
            "10..0.1:80",
            "08.0.0.1:80",
            "unknown.host:80",
            "[::1]",
            "[::1]80",
            "[::1:80",
        ] {
            assert_eq!(fails(&format!("-A -t {addr}")), bad_vs, "{addr}");
        }
        // UDP names are looked up for UDP: tproxy is TCP only.
        assert_eq!(fails("-A -u 10.0.0.1:tproxy"), bad_vs);
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.256"),
            usage_error("illegal real server address[:port] specified")
        );
    }

    #[test]
    fn address_forms_inet_aton_and_names_accept() {
        let vs = |line: &str| match ok(line) {
            Command::AddService(c) => c.service,
            c => panic!("{c:?}"),
        };
        assert_eq!(vs("-A -t 10.1:80"), tcp("10.0.0.1", 80));
        assert_eq!(vs("-A -t 10.1.2:80"), tcp("10.1.0.2", 80));
        assert_eq!(vs("-A -t 167772161:80"), tcp("10.0.0.1", 80));
        assert_eq!(vs("-A -t 0x0a.0.0.010:80"), tcp("10.0.0.8", 80));
        assert_eq!(vs("-A -t 10.0.0.1:+80"), tcp("10.0.0.1", 80));
        assert_eq!(vs("-A -t vip.example:www"), tcp(VIP, 80));
        assert_eq!(vs("-A -t VIP:http"), tcp(VIP, 80));
        // Port names are case-sensitive, host names not.
        assert_eq!(fails("-A -t vip:HTTP").0, "illegal virtual server address[:port] specified");
    }

    #[test]
    fn ipv6_is_parsed_and_flagged() {
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let svc = VirtualService { protocol: Protocol::Tcp, addr: IpAddr::V6(v6), port: 80 };
        let c = ok("-A -t [2001:db8::1]:80 -s rr -p 60 -M 64");
        assert_eq!(
            c,
            Command::AddService(ServiceConfig {
                persistence_timeout: Some(60),
                netmask: Netmask::V6(64),
                ..service(svc, Some(Scheduler::Rr))
            })
        );
        assert!(svc.is_ipv6());
        assert_eq!(c.unsupported_reason(), Some("IPv6 services and real servers are not supported"));
        assert_round_trip(&c);
        assert_eq!(fails("-A -t [2001:db8::1]:80 -M 129"), usage_error("illegal ipv6 netmask specified"));
        // A bare IPv6 address has no port.
        assert_eq!(fails("-A -t 2001:db8::1:80").0, "Zero port specified for non-persistent service");
        let real = ok("-a -t [2001:db8::1]:80 -r [2001:db8::2]:80 -m");
        assert_eq!(real.to_string(), "-a -t [2001:db8::1]:80 -r [2001:db8::2]:80 -m -w 1");
        assert_round_trip(&real);
        assert_eq!(
            fails("-a -t [2001:db8::1]:80 -r 10.0.0.2 -g"),
            usage_error("Different address family is allowed only for tunneling servers")
        );
        // Tunnelling may cross families.
        assert!(ok("-a -t 10.0.0.1:80 -r [2001:db8::2]:80 -i").unsupported_reason().is_some());
        assert_eq!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 -i").unsupported_reason(), None);
        // A bracketed IPv4 address loses its port, as in ipvsadm.
        assert_eq!(fails("-A -t [10.0.0.1]:80").0, "Zero port specified for non-persistent service");
    }

    // --- listings -----------------------------------------------------------

    #[test]
    fn list_variants() {
        let list = |line: &str| match parse(&words(line), &names()) {
            Ok(Command::List(l)) => l,
            other => panic!("{line:?}: {other:?}"),
        };
        let plain = List::all();
        let numeric = List { numeric: true, ..plain };
        assert_eq!(list(""), plain);
        assert_eq!(list("-L"), plain);
        assert_eq!(list("-l"), plain);
        assert_eq!(list("--list"), plain);
        assert_eq!(list("-L --sort"), plain);
        assert_eq!(list("-L -n"), numeric);
        assert_eq!(list("-Ln"), numeric);
        assert_eq!(list("-ln"), numeric);
        assert_eq!(list("--list --numeric"), numeric);
        assert_eq!(list("-L -n --stats"), List { stats: true, ..numeric });
        assert_eq!(list("-L -n --stats --exact"), List { stats: true, exact: true, ..numeric });
        assert_eq!(list("-LnX --stats"), List { stats: true, exact: true, ..numeric });
        assert_eq!(list("-L -n --rate"), List { rate: true, ..numeric });
        assert_eq!(list("-L -n --thresholds"), List { thresholds: true, ..numeric });
        assert_eq!(list("-L -n --persistent-conn"), List { persistent_conn: true, ..numeric });
        assert_eq!(list("-L -n --tun-info"), List { tun_info: true, ..numeric });
        assert_eq!(list("-L -n --nosort"), List { nosort: true, ..numeric });
        assert_eq!(list("-L -n -c"), List { target: ListTarget::Connections, ..numeric });
        assert_eq!(list("-Lnc"), List { target: ListTarget::Connections, ..numeric });
        assert_eq!(list("-L --connection"), List { target: ListTarget::Connections, ..plain });
        assert_eq!(
            list("-L -c --persistent-conn"),
            List { target: ListTarget::Connections, persistent_conn: true, ..plain }
        );
        assert_eq!(list("-L --timeout"), List { target: ListTarget::Timeouts, ..plain });
        assert_eq!(list("-L --daemon"), List { target: ListTarget::Daemon, ..plain });
        assert_eq!(list("-L -n -t 10.0.0.1:80"), List { target: ListTarget::Service(tcp("10.0.0.1", 80)), ..numeric });
        assert_eq!(list("-L -t 10.0.0.1"), List { target: ListTarget::Service(tcp("10.0.0.1", 0)), ..plain });
        // Ignored but legal, as in ipvsadm.
        assert_eq!(list("-L --syncid 3"), plain);

        assert_eq!(
            list("-L -n --stats --exact --nosort").list_options(),
            ListOptions { numeric: true, stats: true, exact: true, sort: false, ..ListOptions::default() }
        );
        assert_eq!(plain.list_options(), ListOptions::default());

        for l in [
            list("-L"),
            list("-Ln --rate"),
            list("-L -c -n"),
            list("-L --daemon"),
            list("-L --timeout"),
            list("-L -t 10.0.0.1:80 --thresholds --nosort --exact"),
            list("-L -n --tun-info --persistent-conn --stats"),
        ] {
            assert_round_trip(&Command::List(l));
        }
    }

    #[test]
    fn list_conflicts() {
        assert_eq!(fails("-L -c --stats"), usage_error("options conflicts in the list command"));
        assert_eq!(fails("-L --timeout --rate"), usage_error("options conflicts in the list command"));
        assert_eq!(fails("-L --daemon --persistent-conn"), usage_error("options conflicts in the list command"));
        assert_eq!(
            fails("-L -c --timeout"),
            usage_error("The option 'timeout' conflicts with the 'connection' option in the 'list' command")
        );
        assert_eq!(
            fails("-L -t 10.0.0.1:80 -c"),
            usage_error("The option 'service-address' conflicts with the 'connection' option in the 'list' command")
        );
        assert_eq!(fails("-L -s rr"), usage_error("Illegal 'scheduler' option with the 'list' command"));
        assert_eq!(fails("-L -n -n"), usage_error("multiple 'numeric' options specified"));
        assert_eq!(err("-L -f 1").kind, ErrorKind::Unsupported);
    }

    // --- other commands -------------------------------------------------------

    #[test]
    fn set_timeouts() {
        assert_eq!(ok("--set 600 60 120"), Command::SetTimeouts(Timeouts { tcp: 600, tcpfin: 60, udp: 120 }));
        assert_eq!(ok("--set 0 0 0"), Command::SetTimeouts(Timeouts { tcp: 0, tcpfin: 0, udp: 0 }));
        assert_round_trip(&ok("--set 900 120 300"));
        assert_eq!(fails("--set 600 60"), usage_error("--set option requires 3 timeout values"));
        assert_eq!(fails("--set"), usage_error("--set option requires 3 timeout values"));
        assert_eq!(fails("--set 600 x 120"), usage_error("invalid timeout value `x' specified"));
        assert_eq!(fails("--set 600 60 2678401"), usage_error("invalid timeout value `2678401' specified"));
        assert_eq!(fails("--set 600 60 120 7"), usage_error("unexpected argument 7"));
        assert_eq!(fails("--set 600 60 120 -n"), usage_error("Illegal 'numeric' option with the 'set' command"));
        // A negative number is an option to popt.
        assert_eq!(fails("--set 600 -1 120"), ("-1: unknown option".to_owned(), 255));
    }

    #[test]
    fn save_zero_clear_restore() {
        assert_eq!(ok("-S"), Command::Save { numeric: false });
        assert_eq!(ok("-S -n"), Command::Save { numeric: true });
        assert_eq!(ok("--save --numeric"), Command::Save { numeric: true });
        assert_eq!(ok("-Sn"), Command::Save { numeric: true });
        assert_eq!(ok("-C"), Command::Clear);
        assert_eq!(ok("--clear"), Command::Clear);
        assert_eq!(ok("-R"), Command::Restore);
        assert_eq!(ok("--restore"), Command::Restore);
        assert_eq!(ok("-Z"), Command::Zero(None));
        assert_eq!(
            ok("--zero -u 10.0.0.1:53"),
            Command::Zero(Some(VirtualService { protocol: Protocol::Udp, addr: v4("10.0.0.1"), port: 53 }))
        );
        assert_eq!(fails("-C -n"), usage_error("Illegal 'numeric' option with the 'flush' command"));
        assert_eq!(fails("-R -n"), usage_error("Illegal 'numeric' option with the 'restore' command"));
        assert_eq!(fails("-S -c"), usage_error("Illegal 'connection' option with the 'save' command"));
        assert_eq!(fails("-Z -n"), usage_error("Illegal 'numeric' option with the 'zero' command"));
        assert_eq!(
            fails("-D"),
            usage_error("You need to supply the 'service-address' option for the 'delete-service' command")
        );
        assert_eq!(
            fails("-D -t 10.0.0.1:80 -s rr"),
            usage_error("Illegal 'scheduler' option with the 'delete-service' command")
        );
        for c in ["-S", "-S -n", "-C", "-R", "-Z", "-Z -u 10.0.0.1:53", "-D -t 10.0.0.1:80"] {
            assert_round_trip(&ok(c));
        }
    }

    #[test]
    fn help_and_version() {
        for line in ["-h", "--help", "-h --bogus", "-h -A"] {
            assert_eq!(ok(line), Command::Help, "{line}");
        }
        for line in ["-v", "--version", "-v -L"] {
            assert_eq!(ok(line), Command::Version, "{line}");
        }
        // After the command they are just illegal.
        assert_eq!(fails("-L -h"), usage_error("invalid option `-h'"));
        assert_round_trip(&Command::Help);
        assert_round_trip(&Command::Version);
    }

    #[test]
    fn usage_is_ipvsadms_help() {
        let text = usage("ipvsadm");
        assert!(
            text.starts_with("ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS v1.2.1)\nUsage:\n  ipvsadm -A|E")
        );
        assert!(usage("lbctl").contains("\n  lbctl -L|l [virtual-service] [options]\n"));
        assert!(text.ends_with("  --mcast-ttl ttl                     Multicast TTL (default=1)\n"));
        // The literal `ipvsadm -h` output, where the reference material is.
        match std::fs::read_to_string("/work/shared/reference/ipvsadm/help.txt") {
            Ok(reference) => assert_eq!(text, reference),
            Err(e) => eprintln!("help.txt not compared: {e}"),
        }
    }

    #[test]
    fn daemons_are_parsed_and_marked_unsupported() {
        let c = ok("--start-daemon master");
        assert_eq!(
            c,
            Command::StartDaemon(DaemonConfig {
                state: DaemonState::Master,
                mcast_interface: "eth0".into(),
                syncid: None,
                sync_maxlen: None,
                mcast_group: None,
                mcast_port: None,
                mcast_ttl: None,
            })
        );
        assert_eq!(c.unsupported_reason(), Some("connection synchronisation daemons are not supported"));
        let full = ok("--start-daemon=backup --mcast-interface eth1 --syncid 7 --sync-maxlen 1472 \
             --mcast-group 224.0.0.81 --mcast-port 8848 --mcast-ttl 1");
        assert_round_trip(&full);
        assert_round_trip(&ok("--start-daemon master --mcast-group ff02::1"));
        assert_eq!(ok("--stop-daemon backup"), Command::StopDaemon { state: DaemonState::Backup, syncid: None });
        assert_round_trip(&ok("--stop-daemon master --syncid 3"));
        assert_eq!(fails("--start-daemon foo"), usage_error("illegal start-daemon parameter specified"));
        assert_eq!(fails("--stop-daemon foo"), usage_error("illegal start_daemon specified"));
        assert_eq!(fails("--start-daemon master --syncid 256"), usage_error("illegal syncid specified"));
        assert_eq!(
            fails("--start-daemon master --mcast-group 10.0.0.1"),
            usage_error("invalid IPv4 mcast-group `10.0.0.1'")
        );
        assert_eq!(fails("--start-daemon master --mcast-group ::1"), usage_error("invalid IPv6 mcast-group `::1'"));
        assert_eq!(fails("--start-daemon master --mcast-port 0"), usage_error("illegal mcast-port specified"));
        assert_eq!(fails("--start-daemon master --mcast-ttl 256"), usage_error("illegal mcast-ttl specified"));
        assert_eq!(fails("--start-daemon master --sync-maxlen 65508"), usage_error("illegal sync-maxlen specified"));
        assert_eq!(
            fails("--stop-daemon master --mcast-interface eth1"),
            usage_error("Illegal 'mcast-interface' option with the 'stop-daemon' command")
        );
        assert_eq!(fails("--start-daemon"), ("Try `lbctl -h' or 'lbctl --help' for more information.".into(), 255));
    }

    // --- refusals -------------------------------------------------------------

    #[test]
    fn unknown_options_and_misplaced_commands() {
        let try_help = ("Try `lbctl -h' or 'lbctl --help' for more information.".to_owned(), EXIT_OPTION);
        // The first option must be a command.
        assert_eq!(fails("--bogus"), try_help);
        assert_eq!(fails("-Q"), try_help);
        assert_eq!(fails("-t 10.0.0.1:80 -A"), try_help);
        assert_eq!(fails("-nL"), try_help);
        assert_eq!(fails("10.0.0.1"), try_help);
        // After it, popt names the bad word.
        assert_eq!(fails("-A -t 10.0.0.1:80 --bogus"), ("--bogus: unknown option".into(), 255));
        assert_eq!(fails("-L -q"), ("-q: unknown option".into(), 255));
        assert_eq!(fails("-Lnq"), ("-Lnq: unknown option".into(), 255));
        assert_eq!(fails("-L --numer"), ("--numer: unknown option".into(), 255));
        assert_eq!(fails("-L --numeric=yes"), ("--numeric=yes: option does not take an argument".into(), 255));
        assert_eq!(fails("-A -t"), ("-t: missing argument".into(), 255));
        assert_eq!(fails("-a -t 10.0.0.1:80 -r"), ("-r: missing argument".into(), 255));
        // A second command.
        assert_eq!(fails("-A -t 10.0.0.1:80 -D"), usage_error("invalid option `-D'"));
        assert_eq!(fails("-LA"), usage_error("invalid option `-LA'"));
        assert_eq!(fails("-L --set 1 2 3"), usage_error("invalid option `--set'"));
        // Leftovers.
        assert_eq!(fails("-A -t 10.0.0.1:80 foo"), usage_error("unexpected argument foo"));
        assert_eq!(fails("-L -- -n"), usage_error("unexpected argument -n"));
        assert_eq!(fails("-L -"), usage_error("unexpected argument -"));
        // Errors come in the order ipvsadm meets them.
        assert_eq!(
            fails("-A -t 10.0.0.300:80 -w 70000"),
            usage_error("illegal virtual server address[:port] specified")
        );
        assert_eq!(fails("-A -w 70000 -t 10.0.0.300:80"), usage_error("illegal weight specified"));
        assert_eq!(fails("-A -t 10.0.0.1:80 -w 3 --bogus"), ("--bogus: unknown option".into(), 255));
    }

    #[test]
    fn missing_and_illegal_options() {
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -w 3"),
            usage_error("You need to supply the 'real-server' option for the 'add-server' command")
        );
        assert_eq!(
            fails("-d -t 10.0.0.1:80"),
            usage_error("You need to supply the 'real-server' option for the 'delete-server' command")
        );
        assert_eq!(
            fails("-a -r 10.0.0.2"),
            usage_error("You need to supply the 'service-address' option for the 'add-server' command")
        );
        assert_eq!(
            fails("-A -s rr"),
            usage_error("You need to supply the 'service-address' option for the 'add-service' command")
        );
        // Checked in the table's column order, not the command line's.
        assert_eq!(
            fails("-A -t 10.0.0.1:80 -w 3 -n"),
            usage_error("Illegal 'numeric' option with the 'add-service' command")
        );
        assert_eq!(
            fails("-A -t 10.0.0.1:80 -w 3"),
            usage_error("Illegal 'weight' option with the 'add-service' command")
        );
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -s rr"),
            usage_error("Illegal 'scheduler' option with the 'add-server' command")
        );
        assert_eq!(
            fails("-d -t 10.0.0.1:80 -r 10.0.0.2 -g"),
            usage_error("Illegal 'forwarding-method' option with the 'delete-server' command")
        );
        assert_eq!(
            fails("-A -t 10.0.0.1:80 -t 10.0.0.1:81"),
            usage_error("multiple 'service-address' options specified")
        );
        assert_eq!(
            fails("-A -t 10.0.0.1:80 -u 10.0.0.1:81"),
            usage_error("multiple 'service-address' options specified")
        );
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -g -m"),
            usage_error("multiple 'forwarding-method' options specified")
        );
        assert_eq!(fails("-A -t 10.0.0.1:80 -s rr -s wrr"), usage_error("multiple 'scheduler' options specified"));
    }

    #[test]
    fn unknown_scheduler_is_refused_with_the_kernels_words() {
        let e = err("-A -t 10.0.0.1:80 -s bogus");
        assert_eq!(
            (e.message.as_str(), e.exit_code, e.kind),
            ("Scheduler or persistence engine not found", 255, ErrorKind::Kernel)
        );
        assert_eq!(err("-E -t 10.0.0.1:80 -s RR").kind, ErrorKind::Kernel);
        // ipvsadm's own checks come first.
        assert_eq!(fails("-A -t 10.0.0.1:0 -s bogus"), usage_error("Zero port specified for non-persistent service"));
    }

    #[test]
    fn nat_is_parsed_for_the_caller_to_refuse() {
        let c = ok("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m -w 2");
        let Command::AddServer(config) = &c else { panic!("{c:?}") };
        assert_eq!(config.forwarding, Forwarding::Nat);
        assert_eq!(config.server, sock("10.0.0.2", 8080));
        assert_round_trip(&c);
    }

    #[test]
    fn tunnels() {
        let tun = Command::AddServer(server(tcp("10.0.0.1", 80), "10.0.0.2", 80, Forwarding::Tun, 1));
        assert_eq!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 -i"), tun);
        assert_eq!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 --ipip --tun-type ipip"), tun);
        assert_eq!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 --tun-type=ipip -i"), tun);
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 --tun-type ipip"),
            usage_error("Tunnel options conflict with forward method")
        );
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -g --tun-type ipip"),
            usage_error("Tunnel options conflict with forward method")
        );
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type vxlan"),
            usage_error("illegal tunnel type specified")
        );
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type ipip --tun-port 6080"),
            usage_error("Illegal 'tun-port' option with the 'ipip' tunnel type")
        );
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue"),
            usage_error("You need to supply the 'tun-port' option for the 'gue' tunnel type")
        );
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 6080 --tun-csum --tun-nocsum"),
            usage_error("The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel type")
        );
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-remcsum"),
            usage_error("Illegal 'tun-remcsum' option with the 'gre' tunnel type")
        );
        assert_eq!(
            fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 0"),
            usage_error("illegal tunnel port specified")
        );
        // Well-formed gue and gre: refused as unsupported.
        let e = err("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 6080");
        assert_eq!(
            (e.message.as_str(), e.kind),
            ("tunnel type 'gue' is not supported: tunnels are ipip", ErrorKind::Unsupported)
        );
        assert_eq!(
            err("-e -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-csum").message,
            "tunnel type 'gre' is not supported: tunnels are ipip"
        );
        assert_eq!(fails("-L --tun-type ipip"), usage_error("Illegal 'tun-type' option with the 'list' command"));
    }

    #[test]
    fn unsupported_features() {
        let unsupported = |line: &str| {
            let e = err(line);
            assert_eq!((e.kind, e.exit_code), (ErrorKind::Unsupported, 2), "{line}");
            e.message
        };
        for line in [
            "-A -f 1 -s wrr -p 60 -M 255.255.255.0",
            "-a -f 1 -r 10.200.1.21:0 -g -w 2",
            "-A -f 1 -6 -p",
            "-D -f 1",
            "-Z -f 1",
            "-L -f 1",
            "-d -f 1 -r 10.0.0.2",
        ] {
            assert_eq!(unsupported(line), FWMARK);
        }
        assert_eq!(unsupported("-A --sctp-service 10.0.0.1:80"), "SCTP services are not supported");
        assert_eq!(unsupported("-A -t 10.0.0.1:80 -p --pe sip"), "persistence engines (--pe) are not supported");
        assert_eq!(unsupported("-A -u 10.0.0.1:53 -o"), "one-packet scheduling (-o, --ops) is not supported");
        // ipvsadm's checks still come first.
        assert_eq!(fails("-A -f 0"), usage_error("invalid fwmark value `0' specified"));
        assert_eq!(fails("-A -f 4294967296"), usage_error("invalid fwmark value `4294967296' specified"));
        assert_eq!(fails("-A -t 10.0.0.1:80 -6"), usage_error("-6 used before -f\n"));
        assert_eq!(
            fails("-A -t 10.0.0.1:80 --ops"),
            usage_error("One-Packet Scheduling is only for UDP virtual services")
        );
        assert_eq!(
            fails("-a -f 1 -6 -r 10.0.0.2 -g"),
            usage_error("Different address family is allowed only for tunneling servers")
        );
        assert_eq!(fails("-A -f 1 -f 2"), usage_error("multiple 'service-address' options specified"));
    }

    // --- friendly names -------------------------------------------------------

    #[test]
    fn friendly_names() {
        let numeric = List { numeric: true, ..List::all() };
        assert_eq!(ok("list"), Command::List(numeric));
        assert_eq!(ok("list -n"), Command::List(numeric));
        assert_eq!(ok("list --numeric --rate"), Command::List(List { rate: true, ..numeric }));
        assert_eq!(
            ok("list -t 10.0.0.1:80"),
            Command::List(List { target: ListTarget::Service(tcp("10.0.0.1", 80)), ..numeric })
        );
        assert_eq!(ok("stats"), Command::List(List { stats: true, ..numeric }));
        assert_eq!(ok("stats --exact"), Command::List(List { stats: true, exact: true, ..numeric }));
        assert_eq!(ok("rate"), Command::List(List { rate: true, ..numeric }));
        assert_eq!(ok("connections"), Command::List(List { target: ListTarget::Connections, ..numeric }));
        assert_eq!(ok("save"), Command::Save { numeric: true });
        assert_eq!(ok("clear"), Command::Clear);
        assert_eq!(ok("zero"), Command::Zero(None));
        assert_eq!(ok("zero -t 10.0.0.1:80"), Command::Zero(Some(tcp("10.0.0.1", 80))));
        assert_eq!(ok("timeouts"), Command::List(List { target: ListTarget::Timeouts, ..List::all() }));
        // Only first, and only these words.
        assert_eq!(fails("-L list"), usage_error("unexpected argument list"));
        assert_eq!(fails("lists").1, EXIT_OPTION);
        assert_eq!(expand_friendly(&["stats", "-n", "--exact"]), ["-L", "-n", "--stats", "--exact"]);
        assert_eq!(expand_friendly(&["clear", "-n"]), ["-C", "-n"]);
        assert_eq!(expand_friendly::<&str>(&[]), Vec::<String>::new());
    }

    #[test]
    fn program_name_in_try_help() {
        let e = parse_as("ipvsadm", &["--bogus"], &Names::default()).unwrap_err();
        assert_eq!(e.message, "Try `ipvsadm -h' or 'ipvsadm --help' for more information.");
        assert_eq!(e.kind, ErrorKind::TryHelp);
    }

    // --- popt ---------------------------------------------------------------

    #[test]
    fn popt_clusters_and_values() {
        let svc = tcp("10.0.0.1", 80);
        assert_eq!(ok("-At 10.0.0.1:80 -srr"), Command::AddService(service(svc, Some(Scheduler::Rr))));
        assert_eq!(ok("-At10.0.0.1:80 -s=rr"), Command::AddService(service(svc, Some(Scheduler::Rr))));
        assert_eq!(
            ok("-at 10.0.0.1:80 -gr 10.0.0.2 -w2"),
            Command::AddServer(server(svc, "10.0.0.2", 80, Forwarding::Dr, 2))
        );
        // A required value is the next word, even an option.
        assert_eq!(fails("-A -t 10.0.0.1:80 -s -p"), ("Scheduler or persistence engine not found".into(), 255));
        // A flag takes no value.
        assert_eq!(fails("-L -n="), ("-n=: option does not take an argument".into(), 255));
        assert_eq!(fails("-L -cn=1"), ("-cn=1: option does not take an argument".into(), 255));
        // ... and a popt error before the command is the try-help line.
        assert_eq!(err("-L=").kind, ErrorKind::TryHelp);
        assert_eq!(fails("-L --stats=1"), ("--stats=1: option does not take an argument".into(), 255));
    }

    #[test]
    fn names_tables() {
        let names = Names::default()
            .with_services("# c\nwww 80/tcp http web\nalt 80/tcp\nbad\nx 99999/tcp\nsip 5060/sctp\n")
            .with_hosts("127.0.0.1 localhost\n::1 ip6-localhost\n10.0.0.9 Web web2 # x\n10.0.0.8 web\n");
        assert_eq!(names.port("web", Proto::Tcp), Some(80));
        assert_eq!(names.port("alt", Proto::Tcp), Some(80));
        assert_eq!(names.port("www", Proto::Udp), None);
        assert_eq!(names.port("sip", Proto::Sctp), Some(5060));
        assert_eq!(names.host("WEB"), Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(names.host("ip6-localhost"), None);
        assert_eq!(
            parse(&["-A", "-t", "web2:http"], &names),
            Ok(Command::AddService(service(tcp("10.0.0.9", 80), Some(Scheduler::Wlc))))
        );
        // Without names only numbers do.
        assert!(parse(&["-A", "-t", "10.0.0.1:http"], &Names::default()).is_err());
    }

    #[test]
    fn libc_number_parsers() {
        assert_eq!(strtol(" 42"), Some(42));
        assert_eq!(strtol("+42"), Some(42));
        assert_eq!(strtol("-0"), Some(0));
        assert_eq!(strtol("42 "), None);
        assert_eq!(strtol(""), None);
        assert_eq!(strtol("-"), None);
        assert_eq!(strtol("9223372036854775807"), Some(i64::MAX));
        assert_eq!(strtol("9223372036854775808"), None);
        assert_eq!(atoi("64abc"), 64);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(inet_aton("1.2.3.4 trailing"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(inet_aton("0xff.0377.1.0x"), None);
        assert_eq!(inet_aton("0xff.0377.1.0"), Some(Ipv4Addr::new(255, 255, 1, 0)));
        assert_eq!(inet_aton("1.2.65535"), Some(Ipv4Addr::new(1, 2, 255, 255)));
        assert_eq!(inet_aton("1.2.65536"), None);
        assert_eq!(inet_aton("4294967295"), Some(Ipv4Addr::BROADCAST));
        assert_eq!(inet_aton("4294967296"), None);
        assert_eq!(inet_aton("1.2.3.4."), None);
        assert_eq!(inet_aton(""), None);
    }

    #[test]
    fn options_table_is_ipvsadms() {
        // Spot checks of the table against ipvsadm.c's.
        let rule = |cmd: Cmd, col: Col| COMMANDS_V_OPTIONS[cmd.row().0][col as usize];
        assert_eq!(rule(Cmd::Add, Col::Service), b'+');
        assert_eq!(rule(Cmd::Add, Col::SchedFlags), b' ');
        assert_eq!(rule(Cmd::Add, Col::McastGroup), b'x');
        assert_eq!(rule(Cmd::List, Col::TunInfo), b' ');
        assert_eq!(rule(Cmd::List, Col::Daemon), b'1');
        assert_eq!(rule(Cmd::List, Col::OnePacket), b'x');
        assert_eq!(rule(Cmd::AddDest, Col::TunRemcsum), b' ');
        assert_eq!(rule(Cmd::AddDest, Col::TunInfo), b'x');
        assert_eq!(rule(Cmd::StartDaemon, Col::SyncMaxlen), b' ');
        assert_eq!(rule(Cmd::StartDaemon, Col::Exact), b'x');
        assert_eq!(rule(Cmd::StopDaemon, Col::SyncId), b' ');
        assert_eq!(rule(Cmd::Save, Col::Numeric), b' ');
        assert_eq!(rule(Cmd::Zero, Col::Service), b' ');
        assert_eq!(OPT_NAMES[Col::TunRemcsum as usize], "tun-remcsum");
        assert_eq!(OPT_NAMES[Col::OnePacket as usize], "ops");
    }

    #[test]
    fn kernel_errors_have_ipvsadms_words() {
        assert_eq!(KernelError::ServiceNotDefined.to_string(), "Service not defined");
        assert_eq!(KernelError::DestinationExists.message(), "Destination already exists");
        assert_eq!(KernelError::MemoryAllocation.message(), "Memory allocation problem");
        assert_eq!(KernelError::ServiceExists.exit_code(), 255);
    }

    #[test]
    fn round_trips() {
        for line in [
            "-A -t 10.0.0.1:80",
            "-A -u 10.0.0.1:53 -s sh -b sh-port -p 100 -M 255.255.0.0",
            "-A -t 10.0.0.1:0 -p",
            "-E -t 10.0.0.1:80",
            "-E -t 10.0.0.1:80 -s mh -b mh-fallback,mh-port",
            "-e -t 10.0.0.1:80 -r 10.0.0.2:9 -m -w 0 -x 5",
            "-a -u 10.0.0.1:53 -r 10.0.0.2 -i -y 3",
            "-d -u 10.0.0.1:53 -r 10.0.0.2:5353",
            "-L -u 10.0.0.1:53 --stats --exact",
            "-Z -t 10.0.0.1:80",
        ] {
            assert_round_trip(&ok(line));
        }
    }
}
