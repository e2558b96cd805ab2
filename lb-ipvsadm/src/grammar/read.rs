//! The first step of ipvsadm's process_options: reading the options left to
//! right into an [`Entry`], each checked as it is read (address syntax,
//! number ranges, a second use of an option, a second command); then the
//! leftovers (`--set`'s three timeouts) and the `-b` flags against the
//! scheduler.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::Forwarding;

use crate::c_compat::{atoi, inet_aton, strtol, string_to_number, truncate};
use crate::command::{DaemonState, SchedFlags};
use crate::error::ParseError;
use crate::names::{Names, Proto};
use crate::popt::{Opt, Popt};
use crate::snapshot::Timeouts;

use super::table::{Cmd, Col, OPT_NAMES, TUN_NAMES};
use super::{DEFAULT_PERSISTENCE_TIMEOUT, DEFAULT_WEIGHT, MAX_TIMEOUT};

/// An address family as ipvsadm keeps it (unspecified until an address is
/// read).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Af {
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

/// ipvsadm's `struct ipvs_command_entry` plus its option bits, filled in as
/// the options are read.
pub(super) struct Entry {
    pub(super) cmd: Cmd,
    pub(super) options: u64,
    // The service.
    pub(super) svc_af: Af,
    pub(super) svc_proto: Option<Proto>,
    pub(super) svc_addr: Option<IpAddr>,
    pub(super) svc_port: u16,
    pub(super) fwmark: u32,
    pub(super) sched_name: String,
    pub(super) persistent: bool,
    pub(super) timeout: u32,
    /// An IPv4 mask (as a number), or an IPv6 prefix length.
    pub(super) netmask: u32,
    pub(super) one_packet: bool,
    pub(super) sched_flags_arg: String,
    pub(super) sched_flags: u8,
    // The real server.
    pub(super) dest_af: Af,
    pub(super) dest_addr: Option<IpAddr>,
    pub(super) dest_port: u16,
    pub(super) forwarding: Forwarding,
    pub(super) weight: u32,
    pub(super) u_threshold: u32,
    pub(super) l_threshold: u32,
    pub(super) tun_type: usize,
    // --set
    pub(super) timeouts: Timeouts,
    // The sync daemon.
    pub(super) daemon_state: DaemonState,
    pub(super) mcast_interface: String,
    pub(super) syncid: Option<u8>,
    pub(super) sync_maxlen: Option<u16>,
    pub(super) mcast_group: Option<IpAddr>,
    pub(super) mcast_port: Option<u16>,
    pub(super) mcast_ttl: Option<u8>,
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

    pub(super) fn has(&self, col: Col) -> bool {
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

/// What reading a command line gave: a command's entry, or `-h`/`-v`, which
/// end the parsing at once whatever follows.
pub(super) enum Read {
    Entry(Entry),
    Help,
    Version,
}

/// Reads `argv` (without the program name, not empty): the command first,
/// then its options in order, then the leftovers.
pub(super) fn read(program: &str, argv: &[String], names: &Names) -> Result<Read, ParseError> {
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
        Opt::Help => return Ok(Read::Help),
        Opt::Version => return Ok(Read::Version),
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
        read_option(&mut ce, opt, value, names, popt.bad_option())?;
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
    Ok(Read::Entry(ce))
}

/// One option and its value (`word` is the word it came from, for the
/// error messages).
fn read_option(ce: &mut Entry, opt: Opt, given: Option<&str>, names: &Names, word: &str) -> Result<(), ParseError> {
    let value = given.unwrap_or_default();
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
        Opt::Ipip | Opt::Gatewaying | Opt::Masquerading | Opt::FullNat => {
            ce.set_option(Col::Forward)?;
            ce.forwarding = match opt {
                Opt::Ipip => Forwarding::Tun,
                Opt::Gatewaying => Forwarding::Dr,
                Opt::FullNat => Forwarding::FullNat,
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
            return Err(ParseError::usage(format!("invalid option `{word}'")));
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

/// parse_timeout: a number in min..=max, else ipvsadm's complaint.
fn parse_timeout(value: &str, min: u32, max: u32) -> Result<u32, ParseError> {
    string_to_number(value, min as i64, max as i64)
        .map(|n| n as u32)
        .ok_or_else(|| ParseError::usage(format!("invalid timeout value `{value}' specified")))
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
