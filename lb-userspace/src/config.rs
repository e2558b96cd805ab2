//! The TOML config: parsed and validated completely before anything touches
//! the kernel. Every error names the file, the line and the key.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::Range,
    path::{Path, PathBuf},
};

use lb_common::{MAX_DESTS_PER_SERVICE, MAX_SERVICES, sched::MAX_SEQUENCE_LEN};
use serde::Deserialize;
use toml::Spanned;

use crate::{
    health::{HealthCheck, Quorum, RawHealthCheck, ResolveContext},
    sync::config::{RawSync, SyncConfig},
    vrrp::{RawVrrp, VrrpConfig},
    model::{Forwarding, Protocol, SCHED_FLAGS, Scheduler, ServiceOptions, Timeouts},
};

pub const DEFAULT_PATH: &str = "/etc/lb/lb.toml";
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/lb";
pub const DEFAULT_CONTROL_SOCKET: &str = lb_ipvsadm::control::DEFAULT_SOCKET;
/// ipvsadm accepts weights 0..=65535.
pub const MAX_WEIGHT: u32 = 65535;

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// Native (driver) mode if the NIC supports it, else generic.
    Auto,
    Native,
    Generic,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub path: PathBuf,
    pub director: DirectorConfig,
    pub services: Vec<ServiceConfig>,
    /// VRRP instances moving the VIPs between directors.
    pub vrrp: Vec<VrrpConfig>,
    /// Connection sync with the other director(s).
    pub sync: Option<SyncConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DirectorConfig {
    pub interface: String,
    /// Where `interface` is set, for errors about the interface itself.
    pub interface_line: usize,
    pub xdp_mode: XdpMode,
    pub conn_table_size: u32,
    /// bpffs directory the maps and the XDP link are pinned in; `None`
    /// (config `pin_path = ""`) pins nothing.
    pub pin_path: Option<PathBuf>,
    pub control_socket: PathBuf,
    pub timeouts: Timeouts,
    /// Outer source address of TUN packets; default: the interface's own
    /// (first non-VIP) address.
    pub tun_source: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    pub line: usize,
    pub protocol: Protocol,
    pub vip: Ipv4Addr,
    /// 0 = every port of the VIP.
    pub port: u16,
    pub scheduler: Scheduler,
    pub options: ServiceOptions,
    pub forwarding: Forwarding,
    pub reals: Vec<RealConfig>,
    /// The service's own health check (what a real server without
    /// overrides gets; also given to servers added with lbctl).
    pub health: HealthCheck,
    /// Takes the service's connections while every real server is down.
    pub sorry_server: Option<Ipv4Addr>,
    /// Live weight below which the service counts as down (keepalived).
    pub quorum: Quorum,
    pub quorum_up: Option<String>,
    pub quorum_down: Option<String>,
    /// A failed server keeps its open connections (default: they move to a
    /// live server on their next packet, IPVS's expire_nodest_conn).
    pub drain_on_failure: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RealConfig {
    /// Where its `[[service.real]]` table starts.
    pub line: usize,
    /// Where `address` is set, for errors about the address itself.
    pub address_line: usize,
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub forwarding: Forwarding,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    /// The service's check with this server's overrides (kind none: always up).
    pub health: HealthCheck,
}

/// One thing wrong with the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted path of the key, e.g. `service[1].real[0].weight`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Everything wrong with a config, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// The file as written, with spans for error messages.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    director: Spanned<RawDirector>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
    #[serde(default)]
    vrrp: Vec<Spanned<RawVrrp>>,
    sync: Option<Spanned<RawSync>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirector {
    interface: Spanned<String>,
    xdp_mode: Option<Spanned<String>>,
    conn_table_size: Option<Spanned<i64>>,
    pin_path: Option<Spanned<String>>,
    control_socket: Option<Spanned<String>>,
    timeout_tcp: Option<Spanned<i64>>,
    timeout_tcpfin: Option<Spanned<i64>>,
    timeout_udp: Option<Spanned<i64>>,
    tun_source: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    vip: Spanned<String>,
    protocol: Option<Spanned<String>>,
    scheduler: Option<Spanned<String>>,
    sched_flags: Option<Spanned<Vec<String>>>,
    forwarding: Option<Spanned<String>>,
    persistence_timeout: Option<Spanned<i64>>,
    persistence_netmask: Option<Spanned<String>>,
    sloppy_tcp: Option<Spanned<bool>>,
    health_check: Option<Spanned<RawHealthCheck>>,
    sorry_server: Option<Spanned<String>>,
    quorum: Option<Spanned<i64>>,
    hysteresis: Option<Spanned<i64>>,
    quorum_up: Option<Spanned<String>>,
    quorum_down: Option<Spanned<String>>,
    drain_on_failure: Option<Spanned<bool>>,
    #[serde(default)]
    real: Vec<Spanned<RawReal>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    address: Spanned<String>,
    weight: Option<Spanned<i64>>,
    forwarding: Option<Spanned<String>>,
    upper_threshold: Option<Spanned<i64>>,
    lower_threshold: Option<Spanned<i64>>,
    health_check: Option<Spanned<RawHealthCheck>>,
}

/// Byte offsets to line numbers.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Self { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&s| s <= offset)
    }
}

/// Collects errors while validating.
struct Checker<'a> {
    file: &'a str,
    lines: Lines,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line: Some(self.lines.line(span.start)),
            key: key.into(),
            message: message.into(),
        });
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.lines.line(span.start)
    }

    /// A string value parsed with `FromStr`, or an error at its line.
    fn parse<T: std::str::FromStr<Err = String>>(&mut self, value: &Spanned<String>, key: &str) -> Option<T> {
        match value.get_ref().parse() {
            Ok(v) => Some(v),
            Err(message) => {
                self.error(value.span(), key, message);
                None
            }
        }
    }

    fn integer(&mut self, value: &Option<Spanned<i64>>, key: &str, range: Range<i64>, default: i64) -> Option<i64> {
        let Some(value) = value else { return Some(default) };
        let v = *value.get_ref();
        if range.contains(&v) {
            Some(v)
        } else {
            self.error(value.span(), key, format!("{v} is out of range {}..={}", range.start, range.end - 1));
            None
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.display().to_string(),
                line: None,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(&text, path)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let lines = Lines::new(text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| lines.line(s.start));
            ConfigErrors(vec![ConfigError {
                file: file.clone(),
                line,
                key: String::new(),
                message: e.message().trim_end().to_string(),
            }])
        })?;
        let mut c = Checker { file: &file, lines, errors: Vec::new() };
        let director = check_director(&mut c, &raw.director);
        let mut services = Vec::new();
        let mut seen: HashMap<(Protocol, Ipv4Addr, u16), usize> = HashMap::new();
        if raw.service.len() > MAX_SERVICES as usize {
            c.error(raw.service[MAX_SERVICES as usize].span(), "service", format!("more than {MAX_SERVICES} services"));
        }
        for (i, svc) in raw.service.iter().enumerate() {
            if let Some(s) = check_service(&mut c, svc, i) {
                if let Some(first) = seen.insert((s.protocol, s.vip, s.port), s.line) {
                    c.error(
                        svc.get_ref().vip.span(),
                        format!("service[{i}].vip"),
                        format!("{} {}:{} is already defined at line {first}", s.protocol.name(), s.vip, s.port),
                    );
                }
                services.push(s);
            }
        }
        let vrrp = match crate::vrrp::resolve_all(&raw.vrrp, "vrrp") {
            Ok(v) => v,
            Err(errors) => {
                for e in errors {
                    c.error(e.span, e.key, e.message);
                }
                Vec::new()
            }
        };
        // Tracked services must be services of this file.
        for (i, (instance, raw_instance)) in vrrp.iter().zip(&raw.vrrp).enumerate() {
            for (j, t) in instance.track_service.iter().enumerate() {
                if !services.iter().any(|s| (s.protocol, s.vip, s.port) == (t.protocol, t.vip, t.port)) {
                    let span = raw_instance
                        .get_ref()
                        .track_service
                        .as_ref()
                        .and_then(|l| l.get_ref().get(j).map(|e| e.span()))
                        .unwrap_or(raw_instance.span());
                    c.error(span, format!("vrrp[{i}].track_service[{j}]"), format!("{t} is not a service of this file"));
                }
            }
        }
        let sync = match &raw.sync {
            None => None,
            Some(raw_sync) => match SyncConfig::resolve(raw_sync, "sync") {
                Ok(s) => s.enabled.then_some(s),
                Err(errors) => {
                    for e in errors {
                        c.error(e.span, e.key, e.message);
                    }
                    None
                }
            },
        };
        match director {
            Some(director) if c.errors.is_empty() => {
                Ok(Config { path: path.to_path_buf(), director, services, vrrp, sync })
            }
            _ => Err(ConfigErrors(c.errors)),
        }
    }
}

fn check_director(c: &mut Checker, raw: &Spanned<RawDirector>) -> Option<DirectorConfig> {
    let d = raw.get_ref();
    let interface = d.interface.get_ref().trim().to_string();
    if interface.is_empty() || interface.len() > 15 || interface.contains('/') {
        c.error(d.interface.span(), "director.interface", format!("\"{interface}\" is not an interface name"));
    }
    let xdp_mode = match d.xdp_mode.as_ref().map(|m| m.get_ref().as_str()) {
        None | Some("auto") => XdpMode::Auto,
        Some("native") => XdpMode::Native,
        Some("generic") => XdpMode::Generic,
        Some(other) => {
            let span = d.xdp_mode.as_ref().map(|m| m.span()).unwrap_or(raw.span());
            c.error(span, "director.xdp_mode", format!("\"{other}\" is not one of auto, native, generic"));
            XdpMode::Auto
        }
    };
    let conn_table_size = c.integer(
        &d.conn_table_size,
        "director.conn_table_size",
        1024..(1 << 27) + 1,
        lb_common::DEFAULT_CONN_TABLE_SIZE as i64,
    );
    let pin_path = match &d.pin_path {
        None => Some(PathBuf::from(DEFAULT_PIN_PATH)),
        Some(p) if p.get_ref().is_empty() => None,
        Some(p) if !p.get_ref().starts_with('/') => {
            c.error(p.span(), "director.pin_path", "must be an absolute path (in a bpffs mount) or \"\"");
            None
        }
        Some(p) => Some(PathBuf::from(p.get_ref())),
    };
    let control_socket = match &d.control_socket {
        None => PathBuf::from(DEFAULT_CONTROL_SOCKET),
        Some(p) if !p.get_ref().starts_with('/') => {
            c.error(p.span(), "director.control_socket", "must be an absolute path");
            PathBuf::new()
        }
        Some(p) => PathBuf::from(p.get_ref()),
    };
    let defaults = Timeouts::default();
    let day = 86_400 * 365;
    let tcp = c.integer(&d.timeout_tcp, "director.timeout_tcp", 1..day, defaults.tcp as i64);
    let tcpfin = c.integer(&d.timeout_tcpfin, "director.timeout_tcpfin", 1..day, defaults.tcpfin as i64);
    let udp = c.integer(&d.timeout_udp, "director.timeout_udp", 1..day, defaults.udp as i64);
    let tun_source = match &d.tun_source {
        None => None,
        Some(a) => match a.get_ref().parse::<Ipv4Addr>() {
            Ok(addr) if !addr.is_unspecified() && !addr.is_multicast() => Some(addr),
            _ => {
                c.error(a.span(), "director.tun_source", format!("\"{}\" is not a unicast IPv4 address", a.get_ref()));
                None
            }
        },
    };
    Some(DirectorConfig {
        tun_source,
        interface,
        interface_line: c.line(&d.interface.span()),
        xdp_mode,
        conn_table_size: conn_table_size? as u32,
        pin_path,
        control_socket,
        timeouts: Timeouts { tcp: tcp? as u32, tcpfin: tcpfin? as u32, udp: udp? as u32 },
    })
}

fn check_service(c: &mut Checker, raw: &Spanned<RawService>, i: usize) -> Option<ServiceConfig> {
    let s = raw.get_ref();
    let key = |k: &str| format!("service[{i}].{k}");
    let line = c.line(&raw.span());

    let vip = match s.vip.get_ref().parse::<SocketAddr>() {
        Ok(SocketAddr::V4(v4)) => Some((*v4.ip(), v4.port())),
        Ok(SocketAddr::V6(_)) => {
            c.error(s.vip.span(), key("vip"), "IPv6 services are not supported yet");
            None
        }
        Err(_) => {
            let hint = if s.vip.get_ref().parse::<IpAddr>().is_ok() { " (add :PORT, or :0 for every port)" } else { "" };
            c.error(s.vip.span(), key("vip"), format!("\"{}\" is not ADDRESS:PORT{hint}", s.vip.get_ref()));
            None
        }
    };
    if let Some((ip, _)) = vip
        && (ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback())
    {
        c.error(s.vip.span(), key("vip"), format!("{ip} cannot be a virtual IP"));
    }
    let protocol = match &s.protocol {
        None => Some(Protocol::Tcp),
        Some(p) => c.parse::<Protocol>(p, &key("protocol")),
    };
    let scheduler = match &s.scheduler {
        // ipvsadm's default.
        None => Some(Scheduler::Wlc),
        Some(v) => c.parse::<Scheduler>(v, &key("scheduler")),
    };
    if let Some(sched) = scheduler
        && !sched.is_implemented()
    {
        let span = s.scheduler.as_ref().map_or(s.vip.span(), |v| v.span());
        c.error(span, key("scheduler"), format!("scheduler \"{sched}\" is not implemented yet (rr, wrr)"));
    }
    let forwarding = match &s.forwarding {
        None => Some(Forwarding::Dr),
        Some(f) => check_forwarding(c, f, &key("forwarding")),
    };
    let mut options = ServiceOptions::default();
    if let Some(flags) = &s.sched_flags {
        for name in flags.get_ref() {
            match SCHED_FLAGS.iter().find(|(n, _)| n == name) {
                Some((_, bit)) => options.flags |= bit,
                None => {
                    let names: Vec<_> = SCHED_FLAGS.iter().map(|(n, _)| *n).collect();
                    c.error(flags.span(), key("sched_flags"), format!("unknown flag \"{name}\" (one of {})", names.join(", ")));
                }
            }
        }
        let wants = |bits: u16| options.flags & bits != 0;
        use lb_common::service_flag as f;
        let for_sh = wants(f::SH_FALLBACK | f::SH_PORT);
        let for_mh = wants(f::MH_FALLBACK | f::MH_PORT);
        if (for_sh && scheduler != Some(Scheduler::Sh)) || (for_mh && scheduler != Some(Scheduler::Mh)) {
            c.error(flags.span(), key("sched_flags"), "sh-* flags need scheduler sh, mh-* flags need scheduler mh");
        }
    }
    if let Some(sloppy) = &s.sloppy_tcp
        && *sloppy.get_ref()
    {
        options.flags |= lb_common::service_flag::SLOPPY_TCP;
    }
    if let Some(t) = &s.persistence_timeout {
        options.persistence_timeout = c.integer(&Some(t.clone()), &key("persistence_timeout"), 1..(1 << 31), 300).map(|v| v as u32);
    }
    if let Some(m) = &s.persistence_netmask {
        match m.get_ref().parse::<Ipv4Addr>() {
            Ok(mask) if (!u32::from(mask)).wrapping_add(1).is_power_of_two() || u32::from(mask) == 0 => {
                options.persistence_netmask = mask;
                if s.persistence_timeout.is_none() {
                    c.error(m.span(), key("persistence_netmask"), "needs persistence_timeout");
                }
            }
            _ => c.error(m.span(), key("persistence_netmask"), format!("\"{}\" is not a netmask", m.get_ref())),
        }
    }

    if s.real.len() > MAX_DESTS_PER_SERVICE as usize {
        c.error(
            s.real[MAX_DESTS_PER_SERVICE as usize].span(),
            key("real"),
            format!("more than {MAX_DESTS_PER_SERVICE} real servers"),
        );
    }
    let mut reals: Vec<RealConfig> = Vec::new();
    for (j, r) in s.real.iter().enumerate() {
        let rkey = |k: &str| format!("service[{i}].real[{j}].{k}");
        let rs = r.get_ref();
        let address = match rs.address.get_ref().parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() => {
                c.error(rs.address.span(), rkey("address"), format!("{a} cannot be a real server"));
                None
            }
            Ok(IpAddr::V4(a)) => Some(a),
            Ok(IpAddr::V6(_)) => {
                c.error(rs.address.span(), rkey("address"), "IPv6 real servers are not supported yet");
                None
            }
            Err(_) => {
                let hint = if rs.address.get_ref().contains(':') {
                    " (give the address alone: in DR and TUN the real server listens on the VIP's port)"
                } else {
                    ""
                };
                c.error(rs.address.span(), rkey("address"), format!("\"{}\" is not an IPv4 address{hint}", rs.address.get_ref()));
                None
            }
        };
        let weight = c.integer(&rs.weight, &rkey("weight"), 0..MAX_WEIGHT as i64 + 1, 1);
        let upper = c.integer(&rs.upper_threshold, &rkey("upper_threshold"), 0..(1 << 31), 0);
        let lower = c.integer(&rs.lower_threshold, &rkey("lower_threshold"), 0..(1 << 31), 0);
        if let (Some(u), Some(l), Some(span)) = (upper, lower, rs.lower_threshold.as_ref().map(|l| l.span()))
            && u != 0
            && l > u
        {
            c.error(span, rkey("lower_threshold"), format!("{l} is above upper_threshold {u}"));
        }
        let real_forwarding = match &rs.forwarding {
            None => forwarding,
            Some(f) => check_forwarding(c, f, &rkey("forwarding")),
        };
        if let (Some(address), Some(weight), Some(fwd), Some((_, port))) = (address, weight, real_forwarding, vip) {
            if let Some(first) = reals.iter().find(|r| r.address == address) {
                c.error(
                    rs.address.span(),
                    rkey("address"),
                    format!("{address} is already a real server of this service (line {})", first.line),
                );
            }
            if Some(IpAddr::V4(address)) == vip.map(|(ip, _)| IpAddr::V4(ip)) {
                c.error(rs.address.span(), rkey("address"), "a real server cannot be the VIP itself");
            }
            let health = {
                let service_key = format!("service[{i}].health_check");
                let real_key = format!("service[{i}].real[{j}].health_check");
                let ctx = ResolveContext {
                    service_key: &service_key,
                    real_key: &real_key,
                    address: Some(IpAddr::V4(address)),
                    port,
                    span: rs.health_check.as_ref().map_or(r.span(), |h| h.span()),
                };
                let svc_check = s.health_check.as_ref().map(|h| h.get_ref());
                let real_check = rs.health_check.as_ref().map(|h| h.get_ref());
                match HealthCheck::resolve(svc_check, real_check, &ctx) {
                    Ok(h) => h,
                    Err(errors) => {
                        // The service's own mistakes show once, at its first server.
                        for e in errors {
                            let own = e.key.starts_with(&real_key);
                            if own || j == 0 {
                                c.error(e.span, e.key, e.message);
                            }
                        }
                        HealthCheck::default()
                    }
                }
            };
            reals.push(RealConfig {
                health,
                line: c.line(&r.span()),
                address_line: c.line(&rs.address.span()),
                address,
                port,
                weight: weight as u32,
                forwarding: fwd,
                upper_threshold: upper.unwrap_or(0) as u32,
                lower_threshold: lower.unwrap_or(0) as u32,
            });
        }
    }
    if scheduler == Some(Scheduler::Wrr) {
        let weights: Vec<u32> = reals.iter().map(|r| r.weight).collect();
        let period = lb_common::sched::wrr_period(&weights);
        if period > MAX_SEQUENCE_LEN as u64 {
            c.error(
                raw.get_ref().vip.span(),
                key("real"),
                format!(
                    "wrr weights give a sequence of {period} picks (sum of weights / their gcd); \
                     the limit is {MAX_SEQUENCE_LEN}: use smaller weights or a common divisor"
                ),
            );
        }
    }

    // The service's own check; a service without servers reports its
    // mistakes here (with servers, they show at the first one).
    let mut service_health = HealthCheck::default();
    if let (Some(check), Some((ip, port))) = (&s.health_check, vip) {
        let key = format!("service[{i}].health_check");
        let ctx = ResolveContext { service_key: &key, real_key: &key, address: Some(IpAddr::V4(ip)), port, span: check.span() };
        match HealthCheck::resolve(Some(check.get_ref()), None, &ctx) {
            Ok(h) => service_health = h,
            Err(errors) if s.real.is_empty() => {
                for e in errors {
                    c.error(e.span, e.key, e.message);
                }
            }
            Err(_) => {}
        }
    }
    let sorry_server = match &s.sorry_server {
        None => None,
        Some(v) => match v.get_ref().parse::<Ipv4Addr>() {
            Ok(a) if !a.is_unspecified() && !a.is_multicast() && !a.is_loopback() => Some(a),
            _ => {
                c.error(v.span(), key("sorry_server"), format!("\"{}\" is not an IPv4 address", v.get_ref()));
                None
            }
        },
    };
    let quorum = Quorum {
        quorum: c.integer(&s.quorum, &key("quorum"), 1..(1 << 31), 1).unwrap_or(1) as u32,
        hysteresis: c.integer(&s.hysteresis, &key("hysteresis"), 0..(1 << 31), 0).unwrap_or(0) as u32,
    };
    let (vip, port) = vip?;
    Some(ServiceConfig {
        health: service_health,
        sorry_server,
        quorum,
        quorum_up: s.quorum_up.as_ref().map(|v| v.get_ref().clone()),
        quorum_down: s.quorum_down.as_ref().map(|v| v.get_ref().clone()),
        drain_on_failure: s.drain_on_failure.as_ref().is_some_and(|v| *v.get_ref()),
        line,
        protocol: protocol?,
        vip,
        port,
        scheduler: scheduler?,
        options,
        forwarding: forwarding?,
        reals,
    })
}

fn check_forwarding(c: &mut Checker, value: &Spanned<String>, key: &str) -> Option<Forwarding> {
    let f = c.parse::<Forwarding>(value, key)?;
    if !f.is_implemented() {
        c.error(value.span(), key, format!("forwarding \"{}\" is not implemented yet (dr, tun)", value.get_ref()));
        return None;
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[director]
interface = "eth0"
xdp_mode = "auto"

[[service]]
vip = "172.16.100.1:80"
protocol = "tcp"
scheduler = "wrr"
forwarding = "dr"

[[service.real]]
address = "172.16.100.7"
weight = 2

[[service.real]]
address = "172.16.100.8"
weight = 1
"#;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("lb.toml")) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn the_readme_example_parses() {
        let c = Config::parse(GOOD, Path::new("lb.toml")).unwrap();
        assert_eq!(c.director.interface, "eth0");
        assert_eq!(c.services.len(), 1);
        let s = &c.services[0];
        assert_eq!((s.vip, s.port, s.scheduler), ("172.16.100.1".parse().unwrap(), 80, Scheduler::Wrr));
        assert_eq!(s.reals.len(), 2);
        assert_eq!(s.reals[0].weight, 2);
        assert_eq!(s.reals[1].line, 16);
        assert_eq!(c.director.timeouts, Timeouts::default());
    }

    #[test]
    fn each_mistake_names_line_and_key() {
        let bad = GOOD.replace("172.16.100.8\"", "172.16.100.x\"");
        assert_eq!(errors(&bad), ["lb.toml:17: service[0].real[1].address: \"172.16.100.x\" is not an IPv4 address"]);

        let bad = GOOD.replace("weight = 2", "weight = 70000");
        assert_eq!(errors(&bad), ["lb.toml:14: service[0].real[0].weight: 70000 is out of range 0..=65535"]);

        let bad = GOOD.replace("\"wrr\"", "\"fastest\"");
        assert!(errors(&bad)[0].starts_with("lb.toml:9: service[0].scheduler: unknown scheduler \"fastest\""));

        let bad = GOOD.replace("172.16.100.1:80", "172.16.100.1");
        assert_eq!(errors(&bad), ["lb.toml:7: service[0].vip: \"172.16.100.1\" is not ADDRESS:PORT (add :PORT, or :0 for every port)"]);

        let bad = GOOD.replace("weight = 1", "weigth = 1");
        let e = errors(&bad);
        assert!(e[0].starts_with("lb.toml:18: unknown field `weigth`"), "{e:?}");

        let bad = GOOD.replace("\"tcp\"", "\"sctp\"");
        assert_eq!(errors(&bad), ["lb.toml:8: service[0].protocol: unknown protocol \"sctp\" (tcp or udp)"]);

        let bad = GOOD.replace("xdp_mode = \"auto\"", "xdp_mode = \"turbo\"");
        assert_eq!(errors(&bad), ["lb.toml:4: director.xdp_mode: \"turbo\" is not one of auto, native, generic"]);

        let bad = GOOD.replace("[director]\ninterface = \"eth0\"\n", "[director]\n");
        assert!(errors(&bad)[0].contains("missing field `interface`"));
    }

    #[test]
    fn duplicates_are_refused() {
        let twice = format!("{GOOD}\n[[service]]\nvip = \"172.16.100.1:80\"\nscheduler = \"rr\"\n");
        assert_eq!(
            errors(&twice),
            ["lb.toml:21: service[1].vip: tcp 172.16.100.1:80 is already defined at line 6"]
        );
        let same_real = GOOD.replace("172.16.100.8", "172.16.100.7");
        assert_eq!(
            errors(&same_real),
            ["lb.toml:17: service[0].real[1].address: 172.16.100.7 is already a real server of this service (line 12)"]
        );
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let bad = GOOD.replace("172.16.100.8\"", "nope\"").replace("weight = 2", "weight = -1");
        assert_eq!(errors(&bad).len(), 2);
    }

    #[test]
    fn port_zero_is_every_port_and_udp_works() {
        let text = GOOD.replace(":80", ":0").replace("\"tcp\"", "\"udp\"");
        let c = Config::parse(&text, Path::new("x")).unwrap();
        assert_eq!(c.services[0].port, 0);
        assert_eq!(c.services[0].protocol, Protocol::Udp);
    }
}
