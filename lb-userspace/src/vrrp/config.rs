//! The `[[vrrp]]` tables: one VRRP instance (virtual router) each.
//!
//! ```toml
//! [[vrrp]]
//! name = "VI_1"                 # default "IFACE-VRID"; shown by lbctl
//! interface = "eth0"            # required
//! virtual_router_id = 51        # required, 1..=255
//! priority = 100                # 1..=255, 255 = address owner; default 100
//! version = 3                   # 2 | 3; default 2, as keepalived (3 for IPv6 addresses)
//! advert_interval = "1s"        # v2: whole seconds 1..=255; v3: 10ms..=40.95s in 10 ms steps
//! preempt = true                # default true; false is keepalived's nopreempt
//! preempt_delay = "0s"          # 0..=1000s, only with preempt
//! virtual_ipaddress = ["172.16.100.1/24"]   # required; /32 (/128) if no prefix; "ADDR/P dev eth1" on another
//!                               # interface (keepalived's `dev`: a NAT director's inside gateway address);
//!                               # all IPv4 or all IPv6 ("2001:db8::1/64": VRRPv3 over IPv6, from the
//!                               # interface's link-local address to ff02::12)
//! unicast_peer = ["172.16.100.3"]           # IPv4 only; default: multicast to 224.0.0.18
//! auth_pass = "secret"          # v2 only, 1 to 8 characters (simple text)
//! notify_master = "/etc/lb/master.sh"       # run with sh -c on entering the state
//! notify_backup = "..."
//! notify_fault = "..."
//! track_interface = ["eth1"]    # any of them down = FAULT (the instance's own interface always counts)
//! track_service = [             # keepalived's track_script weights, for a service's real servers:
//!   { service = "tcp 172.16.100.1:80", weight = -20 },  # < 0: added while it has no live real server
//!   { service = "udp 172.16.100.1:53", weight = 10 },   # > 0: added while it has one
//!   { service = "tcp 172.16.100.1:443" },               # 0 (default): FAULT while it has none
//! ]
//! garp_master_delay = "5s"      # second set of gratuitous ARPs after becoming master; 0 = none
//! garp_master_repeat = 5        # gratuitous ARPs per address in each set, 1..=100
//! garp_master_refresh = "0s"    # one gratuitous ARP per address this often while master; 0 = off
//! ```
//!
//! Every mistake is reported with its span and dotted key (`vrrp[0].priority`),
//! as the health-check tables do.

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::{
    packet::{Expect, MAX_V3_INTERVAL_CS, Version, simple_auth_data},
    state::Params,
};
use crate::{
    config::check::{Checker, DurationRange, RawDuration, fmt_duration, is_unicast},
    model::ServiceId,
};

/// keepalived's defaults.
pub const DEFAULT_PRIORITY: u8 = 100;
pub const DEFAULT_GARP_MASTER_DELAY: Duration = Duration::from_secs(5);
pub const DEFAULT_GARP_MASTER_REPEAT: u32 = 5;
/// keepalived's limit on `preempt_delay`.
pub const MAX_PREEMPT_DELAY: Duration = Duration::from_secs(1000);

/// A `[[vrrp]]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVrrp {
    pub name: Option<Spanned<String>>,
    pub interface: Spanned<String>,
    pub virtual_router_id: Spanned<i64>,
    pub priority: Option<Spanned<i64>>,
    pub version: Option<Spanned<i64>>,
    pub advert_interval: Option<Spanned<RawDuration>>,
    pub preempt: Option<Spanned<bool>>,
    pub preempt_delay: Option<Spanned<RawDuration>>,
    pub virtual_ipaddress: Spanned<Vec<Spanned<String>>>,
    pub unicast_peer: Option<Spanned<Vec<Spanned<String>>>>,
    pub auth_pass: Option<Spanned<String>>,
    pub notify_master: Option<Spanned<String>>,
    pub notify_backup: Option<Spanned<String>>,
    pub notify_fault: Option<Spanned<String>>,
    pub track_interface: Option<Spanned<Vec<Spanned<String>>>>,
    pub track_service: Option<Spanned<Vec<Spanned<RawTrackService>>>>,
    pub garp_master_delay: Option<Spanned<RawDuration>>,
    pub garp_master_repeat: Option<Spanned<i64>>,
    pub garp_master_refresh: Option<Spanned<RawDuration>>,
}

/// One `track_service` entry as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrackService {
    /// "PROTOCOL VIP:PORT", a `[[service]]` of this config.
    pub service: Spanned<String>,
    pub weight: Option<Spanned<i64>>,
}

/// A virtual address and the prefix it is added with, on the instance's
/// interface or another (`dev`, as keepalived's).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Vip {
    pub address: IpAddr,
    pub prefix_len: u8,
    pub dev: Option<String>,
}

impl Vip {
    /// On the instance's own interface.
    pub fn new(address: impl Into<IpAddr>, prefix_len: u8) -> Self {
        Self { address: address.into(), prefix_len, dev: None }
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)?;
        match &self.dev {
            Some(dev) => write!(f, " dev {dev}"),
            None => Ok(()),
        }
    }
}

/// A virtual service whose real servers move the priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrackService {
    pub service: ServiceId,
    /// < 0: added to the priority while the service has no live real server;
    /// > 0: added while it has at least one; 0: FAULT while it has none.
    pub weight: i32,
}

impl TrackService {
    /// The priority change and whether it faults, for the service's state.
    pub fn effect(&self, alive: bool) -> (i32, bool) {
        match (self.weight, alive) {
            (0, alive) => (0, !alive),
            (w, false) if w < 0 => (w, false),
            (w, true) if w > 0 => (w, false),
            _ => (0, false),
        }
    }
}

impl fmt::Display for TrackService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.service.fmt(f)
    }
}

/// One validated VRRP instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub version: Version,
    /// A multiple of 10 ms (v2: of 1 s).
    pub advert_interval: Duration,
    pub preempt: bool,
    pub preempt_delay: Duration,
    /// All IPv4 or all IPv6.
    pub virtual_ipaddress: Vec<Vip>,
    /// Empty: multicast to 224.0.0.18 (IPv6: ff02::12). IPv4 only.
    pub unicast_peer: Vec<IpAddr>,
    pub auth_pass: Option<String>,
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
    /// Besides `interface`, which is always tracked.
    pub track_interface: Vec<String>,
    pub track_service: Vec<TrackService>,
    pub garp_master_delay: Duration,
    pub garp_master_repeat: u32,
    pub garp_master_refresh: Option<Duration>,
}

impl VrrpConfig {
    /// A config with keepalived's defaults (but VRRPv3), for code and tests.
    pub fn new(interface: &str, vrid: u8, vips: &[Vip]) -> Self {
        Self {
            name: format!("{interface}-{vrid}"),
            interface: interface.to_string(),
            vrid,
            priority: DEFAULT_PRIORITY,
            version: Version::V3,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            virtual_ipaddress: vips.to_vec(),
            unicast_peer: Vec::new(),
            auth_pass: None,
            notify_master: None,
            notify_backup: None,
            notify_fault: None,
            track_interface: Vec::new(),
            track_service: Vec::new(),
            garp_master_delay: DEFAULT_GARP_MASTER_DELAY,
            garp_master_repeat: DEFAULT_GARP_MASTER_REPEAT,
            garp_master_refresh: None,
        }
    }

    /// Whether this instance moves IPv6 addresses (VRRPv3 over IPv6).
    pub fn is_ipv6(&self) -> bool {
        self.virtual_ipaddress.first().is_some_and(|v| v.address.is_ipv6())
    }

    pub fn advert_interval_cs(&self) -> u16 {
        (self.advert_interval.as_millis() / 10) as u16
    }

    /// The state machine's settings.
    pub fn params(&self) -> Params {
        Params {
            version: self.version,
            priority: self.priority,
            advert_interval_cs: self.advert_interval_cs(),
            preempt: self.preempt,
            preempt_delay: self.preempt_delay,
            garp_master_delay: self.garp_master_delay,
            garp_master_repeat: self.garp_master_repeat,
            garp_master_refresh: self.garp_master_refresh,
        }
    }

    /// What received adverts are checked against.
    pub fn expect(&self) -> Expect {
        Expect {
            version: self.version,
            vrid: self.vrid,
            addresses: self.virtual_ipaddress.iter().map(|v| v.address).collect(),
            interval_cs: self.advert_interval_cs(),
            auth: self.auth_pass.as_deref().map(simple_auth_data),
            peers: self.unicast_peer.clone(),
        }
    }

    /// The interfaces whose link state matters: the instance's own first.
    pub fn tracked_interfaces(&self) -> Vec<String> {
        let mut all = vec![self.interface.clone()];
        all.extend(self.track_interface.iter().filter(|i| **i != self.interface).cloned());
        all
    }
}

/// Validates every `[[vrrp]]` table, reporting each mistake to `c`; `None`
/// if there was one. `prefix` names the array (`vrrp`).
pub fn resolve_all(raw: &[Spanned<RawVrrp>], prefix: &str, c: &mut Checker) -> Option<Vec<VrrpConfig>> {
    c.if_clean(|e| resolve_tables(raw, prefix, e))
}

/// The tables with defaults in place of their mistakes.
fn resolve_tables(raw: &[Spanned<RawVrrp>], prefix: &str, e: &mut Checker) -> Vec<VrrpConfig> {
    let mut all = Vec::new();
    let mut seen_vrid: HashMap<(String, u8), usize> = HashMap::new();
    let mut seen_name: HashMap<String, usize> = HashMap::new();
    for (i, table) in raw.iter().enumerate() {
        let key = |k: &str| format!("{prefix}[{i}].{k}");
        let config = resolve_one(table.get_ref(), &format!("{prefix}[{i}]"), e);
        if let Some(first) = seen_vrid.insert((config.interface.clone(), config.vrid), i) {
            let v = &table.get_ref().virtual_router_id;
            e.error(
                v.span(),
                key("virtual_router_id"),
                format!("{prefix}[{first}] has VRID {} on {} already", config.vrid, config.interface),
            );
        }
        if let Some(first) = seen_name.insert(config.name.clone(), i) {
            let span = table.get_ref().name.as_ref().map_or(table.span(), |n| n.span());
            e.error(span, key("name"), format!("{prefix}[{first}] is named \"{}\" already", config.name));
        }
        all.push(config);
    }
    all
}

/// Validates one table, `prefix` its key (`vrrp[0]`); its mistakes go to
/// `e`, and the returned config holds defaults in their place.
fn resolve_one(raw: &RawVrrp, prefix: &str, e: &mut Checker) -> VrrpConfig {
    let key = |k: &str| format!("{prefix}.{k}");
    e.interface_name(&raw.interface, &key("interface"));
    let interface = raw.interface.get_ref().trim().to_string();
    let vrid =
        e.integer(&Some(raw.virtual_router_id.clone()), &key("virtual_router_id"), 1..=255, 1).unwrap_or(1) as u8;
    let mut c = VrrpConfig::new(&interface, vrid, &[]);
    // The first address's family is the instance's: IPv6 runs VRRPv3 (as
    // keepalived does, unless told otherwise: then it is a mistake).
    let ipv6 = raw.virtual_ipaddress.get_ref().first().is_some_and(|v| {
        let text = v.get_ref().split_whitespace().next().unwrap_or("");
        text.split_once('/').map_or(text, |(a, _)| a).parse::<Ipv6Addr>().is_ok()
    });
    c.version = if ipv6 { Version::V3 } else { Version::V2 };
    if let Some(name) = e.text(&raw.name, &key("name")) {
        c.name = name.trim().to_string();
    }
    let default = i64::from(DEFAULT_PRIORITY);
    c.priority = e.integer(&raw.priority, &key("priority"), 1..=255, default).unwrap_or(default) as u8;
    if let Some(v) = &raw.version {
        match v.get_ref() {
            2 if ipv6 => e.error(
                v.span(),
                key("version"),
                "VRRPv2 carries IPv4 addresses only: IPv6 virtual addresses need version = 3",
            ),
            2 => c.version = Version::V2,
            3 => c.version = Version::V3,
            n => e.error(v.span(), key("version"), format!("{n} is not a VRRP version (2 or 3)")),
        }
    }

    // The advert interval: whole seconds in v2, centiseconds in v3.
    if let Some(v) = &raw.advert_interval {
        // Any duration here; the version decides the range.
        match v.get_ref().check(DurationRange::Within(Duration::ZERO, Duration::MAX)) {
            Err(message) => e.error(v.span(), key("advert_interval"), message),
            Ok(d) => match c.version {
                Version::V2 if d.subsec_nanos() != 0 || !(1..=255).contains(&d.as_secs()) => {
                    let hint = if d < Duration::from_secs(1) { " (sub-second intervals need version = 3)" } else { "" };
                    e.error(
                        v.span(),
                        key("advert_interval"),
                        format!("{} is not 1s..=255s in whole seconds{hint}", fmt_duration(d)),
                    )
                }
                Version::V3
                    if d.as_nanos() % 10_000_000 != 0
                        || d.is_zero()
                        || d.as_millis() / 10 > u128::from(MAX_V3_INTERVAL_CS) =>
                {
                    e.error(
                        v.span(),
                        key("advert_interval"),
                        format!("{} is not 10ms..=40950ms in steps of 10ms", fmt_duration(d)),
                    )
                }
                _ => c.advert_interval = d,
            },
        }
    }

    c.preempt = raw.preempt.as_ref().is_none_or(|p| *p.get_ref());
    let delay_range = DurationRange::Within(Duration::ZERO, MAX_PREEMPT_DELAY);
    c.preempt_delay =
        e.duration(&raw.preempt_delay, &key("preempt_delay"), delay_range, Duration::ZERO).unwrap_or_default();
    if let Some(d) = &raw.preempt_delay
        && !c.preempt
    {
        e.error(d.span(), key("preempt_delay"), "does not apply with preempt = false");
    }

    let vips = &raw.virtual_ipaddress;
    if vips.get_ref().is_empty() {
        e.error(vips.span(), key("virtual_ipaddress"), "needs at least one address");
    }
    if vips.get_ref().len() > 255 {
        e.error(vips.span(), key("virtual_ipaddress"), "more than 255 addresses (an advert lists at most 255)");
    }
    for v in vips.get_ref() {
        let full = v.get_ref().trim();
        let mut words = full.split_whitespace();
        let text = words.next().unwrap_or("");
        let dev = match (words.next(), words.next(), words.next()) {
            (None, _, _) => None,
            (Some("dev"), Some(name), None) => {
                if !e.interface_name(&Spanned::new(v.span(), name.to_string()), &key("virtual_ipaddress")) {
                    continue;
                }
                Some(name.to_string())
            }
            _ => {
                e.error(v.span(), key("virtual_ipaddress"), format!("\"{full}\" is not ADDRESS[/PREFIX] [dev INTERFACE]"));
                continue;
            }
        };
        let (addr, prefix) = text.split_once('/').map_or((text, None), |(a, p)| (a, Some(p)));
        let address = addr.parse::<IpAddr>().ok().filter(|a| is_unicast(*a));
        let max_prefix = if address.is_some_and(|a| a.is_ipv6()) { 128 } else { 32 };
        let prefix_len = match prefix {
            None => Some(max_prefix),
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max_prefix),
        };
        match (address, prefix_len) {
            // keepalived refuses both families in one instance: an advert
            // carries addresses of its IP header's family.
            (Some(address), Some(_)) if address.is_ipv6() != ipv6 => {
                let (first, this) = if ipv6 { ("IPv6", "IPv4") } else { ("IPv4", "IPv6") };
                e.error(
                    v.span(),
                    key("virtual_ipaddress"),
                    format!(
                        "{address} is {this}, the instance's first address {first}: one instance moves \
                         addresses of one family (a [[vrrp]] for each)"
                    ),
                )
            }
            (Some(address), Some(prefix_len)) => {
                if c.virtual_ipaddress.iter().any(|x| x.address == address) {
                    e.error(v.span(), key("virtual_ipaddress"), format!("{address} is listed twice"));
                } else {
                    c.virtual_ipaddress.push(Vip { address, prefix_len, dev: dev.filter(|d| *d != interface) });
                }
            }
            _ => e.error(
                v.span(),
                key("virtual_ipaddress"),
                format!("\"{text}\" is not a unicast IPv4 or IPv6 ADDRESS[/PREFIX]"),
            ),
        }
    }

    if let Some(peers) = &raw.unicast_peer {
        if peers.get_ref().is_empty() {
            e.error(peers.span(), key("unicast_peer"), "needs at least one address (or leave it out for multicast)");
        }
        if ipv6 {
            e.error(peers.span(), key("unicast_peer"), "IPv6 instances advertise by multicast only (to ff02::12)");
        }
        for p in peers.get_ref().iter().filter(|_| !ipv6) {
            match p.get_ref().trim().parse::<Ipv4Addr>() {
                Ok(a) if is_unicast(a) && !c.unicast_peer.contains(&a.into()) => c.unicast_peer.push(a.into()),
                Ok(a) if is_unicast(a) => e.error(p.span(), key("unicast_peer"), format!("{a} is listed twice")),
                _ => {
                    e.error(p.span(), key("unicast_peer"), format!("\"{}\" is not a unicast IPv4 address", p.get_ref()))
                }
            }
        }
    }

    if let Some(pass) = &raw.auth_pass {
        let text = pass.get_ref();
        if ipv6 {
            e.error(pass.span(), key("auth_pass"), "VRRPv3 (IPv6) has no authentication");
        } else if c.version != Version::V2 {
            e.error(pass.span(), key("auth_pass"), "VRRPv3 has no authentication (needs version = 2)");
        } else if text.is_empty() || text.len() > 8 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            e.error(pass.span(), key("auth_pass"), "must be 1 to 8 printable ASCII characters");
        } else {
            c.auth_pass = Some(text.clone());
        }
    }

    c.notify_master = e.text(&raw.notify_master, &key("notify_master"));
    c.notify_backup = e.text(&raw.notify_backup, &key("notify_backup"));
    c.notify_fault = e.text(&raw.notify_fault, &key("notify_fault"));

    if let Some(list) = &raw.track_interface {
        for t in list.get_ref() {
            let name = t.get_ref().trim();
            if !e.interface_name(t, &key("track_interface")) {
                continue;
            }
            if c.track_interface.iter().any(|x| x == name) {
                e.error(t.span(), key("track_interface"), format!("\"{name}\" is listed twice"));
            } else {
                c.track_interface.push(name.to_string());
            }
        }
    }

    if let Some(list) = &raw.track_service {
        for (j, t) in list.get_ref().iter().enumerate() {
            let t = t.get_ref();
            let entry = |k: &str| key(&format!("track_service[{j}].{k}"));
            let weight = e.integer(&t.weight, &entry("weight"), -253..=253, 0).unwrap_or(0) as i32;
            if weight != 0
                && c.priority == 255
                && let Some(w) = &t.weight
            {
                e.error(
                    w.span(),
                    entry("weight"),
                    "the address owner (priority 255) keeps its priority: only weight 0 applies",
                );
            }
            match t.service.get_ref().parse::<ServiceId>() {
                Ok(service) => {
                    let track = TrackService { service, weight };
                    if c.track_service.iter().any(|x| x.service == service) {
                        e.error(t.service.span(), entry("service"), format!("{track} is listed twice"));
                    } else {
                        c.track_service.push(track);
                    }
                }
                Err(message) => e.error(t.service.span(), entry("service"), message),
            }
        }
    }

    c.garp_master_delay = e
        .duration(&raw.garp_master_delay, &key("garp_master_delay"), delay_range, DEFAULT_GARP_MASTER_DELAY)
        .unwrap_or(DEFAULT_GARP_MASTER_DELAY);
    let default = i64::from(DEFAULT_GARP_MASTER_REPEAT);
    c.garp_master_repeat =
        e.integer(&raw.garp_master_repeat, &key("garp_master_repeat"), 1..=100, default).unwrap_or(default) as u32;
    let up_to_a_day = DurationRange::Within(Duration::ZERO, Duration::from_secs(86_400));
    let refresh = e
        .duration(&raw.garp_master_refresh, &key("garp_master_refresh"), up_to_a_day, Duration::ZERO)
        .unwrap_or_default();
    c.garp_master_refresh = (!refresh.is_zero()).then_some(refresh);
    if let (Some(r), Some(v)) = (c.garp_master_refresh, &raw.garp_master_refresh)
        && r < Duration::from_millis(100)
    {
        e.error(v.span(), key("garp_master_refresh"), "must be 0 (off) or at least 100ms");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::check::Source, model::Protocol};

    #[derive(Deserialize)]
    struct Doc {
        #[serde(default)]
        vrrp: Vec<Spanned<RawVrrp>>,
    }

    fn resolve(text: &str) -> Result<Vec<VrrpConfig>, Vec<String>> {
        let doc: Doc = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let source = Source::new("lb.toml", text);
        let mut c = Checker::new(&source);
        resolve_all(&doc.vrrp, "vrrp", &mut c).ok_or_else(|| c.line_key_messages())
    }

    fn one(text: &str) -> VrrpConfig {
        resolve(text).unwrap().remove(0)
    }

    fn error(text: &str) -> String {
        let e = resolve(text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].clone()
    }

    const MINIMAL: &str =
        "[[vrrp]]\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"172.16.100.1/24\"]\n";

    #[test]
    fn the_issue_example() {
        let c = one(r#"
[[vrrp]]
interface = "eth0"
virtual_router_id = 51
priority = 100
version = 3                 # 2 | 3
advert_interval = "1s"      # v3: down to 10ms
preempt = true
virtual_ipaddress = ["172.16.100.1/24"]
"#);
        assert_eq!(c.name, "eth0-51");
        assert_eq!((c.vrid, c.priority, c.version), (51, 100, Version::V3));
        assert_eq!(c.advert_interval, Duration::from_secs(1));
        assert_eq!(c.virtual_ipaddress, [Vip::new("172.16.100.1".parse::<IpAddr>().unwrap(), 24)]);
        assert_eq!(c.params().advert_interval_cs, 100);
    }

    #[test]
    fn an_address_may_go_on_another_interface() {
        let c = one(&MINIMAL.replace("[\"172.16.100.1/24\"]", "[\"172.16.100.1/24\", \"192.168.10.1/24 dev eth1\", \"10.9.9.9 dev eth0\"]"));
        let gateway = Vip { address: "192.168.10.1".parse().unwrap(), prefix_len: 24, dev: Some("eth1".into()) };
        assert_eq!(c.virtual_ipaddress[1], gateway);
        assert_eq!(gateway.to_string(), "192.168.10.1/24 dev eth1");
        assert_eq!(c.virtual_ipaddress[2].dev, None, "the instance's own interface");
    }

    #[test]
    fn keepalived_defaults() {
        let c = one(MINIMAL);
        assert_eq!(c.version, Version::V2, "keepalived's default vrrp_version");
        assert_eq!(c.priority, 100);
        assert!(c.preempt);
        assert_eq!(c.preempt_delay, Duration::ZERO);
        assert_eq!(c.advert_interval, Duration::from_secs(1));
        assert_eq!(
            (c.garp_master_delay, c.garp_master_repeat, c.garp_master_refresh),
            (Duration::from_secs(5), 5, None)
        );
        assert!(c.unicast_peer.is_empty() && c.auth_pass.is_none() && c.track_service.is_empty());
        assert_eq!(c.tracked_interfaces(), ["eth0"]);
    }

    #[test]
    fn every_key() {
        let c = one(r#"
[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 7
priority = 254
version = 2
advert_interval = 2
preempt = true
preempt_delay = "30s"
virtual_ipaddress = ["172.16.100.1/24", "172.16.100.2"]
unicast_peer = ["172.16.100.3", "172.16.100.4"]
auth_pass = "secret"
notify_master = "logger master"
notify_backup = "logger backup"
notify_fault = "logger fault"
track_interface = ["eth1", "eth0"]
track_service = [
  { service = "tcp 172.16.100.1:80", weight = -20 },
  { service = "UDP 172.16.100.1:53", weight = 10 },
  { service = "tcp 172.16.100.1:443" },
]
garp_master_delay = "0s"
garp_master_repeat = 3
garp_master_refresh = "60s"
"#);
        assert_eq!(c.name, "VI_1");
        assert_eq!(c.advert_interval, Duration::from_secs(2));
        assert_eq!(c.preempt_delay, Duration::from_secs(30));
        assert_eq!(c.virtual_ipaddress[1].to_string(), "172.16.100.2/32");
        assert_eq!(c.unicast_peer.len(), 2);
        assert_eq!(c.expect().auth, Some(*b"secret\0\0"));
        assert_eq!(c.expect().peers, c.unicast_peer);
        assert_eq!(c.notify_fault.as_deref(), Some("logger fault"));
        assert_eq!(c.tracked_interfaces(), ["eth0", "eth1"]);
        assert_eq!(c.track_service[0].to_string(), "tcp 172.16.100.1:80");
        assert_eq!((c.track_service[1].service.protocol, c.track_service[1].weight), (Protocol::Udp, 10));
        assert_eq!(c.track_service[2].weight, 0);
        assert_eq!((c.garp_master_delay, c.garp_master_repeat), (Duration::ZERO, 3));
        assert_eq!(c.garp_master_refresh, Some(Duration::from_secs(60)));
    }

    #[test]
    fn v3_takes_centiseconds() {
        let v3 = |interval: &str| {
            resolve(&format!("{MINIMAL}version = 3\nadvert_interval = {interval}\n"))
                .map(|mut c| c.remove(0).advert_interval)
        };
        assert_eq!(v3("\"10ms\""), Ok(Duration::from_millis(10)));
        assert_eq!(v3("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(v3("\"40950ms\""), Ok(Duration::from_millis(40_950)));
        assert!(v3("\"5ms\"").is_err());
        assert!(v3("\"15ms\"").is_err());
        assert!(v3("\"41s\"").is_err());
        assert!(v3("0").is_err());
    }

    #[test]
    fn each_mistake_names_line_and_key() {
        let with = |extra: &str| error(&format!("{MINIMAL}{extra}\n"));
        assert_eq!(with("priority = 0"), "5: vrrp[0].priority: 0 is out of range 1..=255");
        assert_eq!(with("version = 4"), "5: vrrp[0].version: 4 is not a VRRP version (2 or 3)");
        assert_eq!(
            with("advert_interval = \"500ms\""),
            "5: vrrp[0].advert_interval: 500ms is not 1s..=255s in whole seconds (sub-second intervals need version = 3)"
        );
        assert_eq!(
            with("advert_interval = \"1x\""),
            "5: vrrp[0].advert_interval: \"1x\" is not a duration (like \"500ms\", \"5s\", \"1m\", or a number of seconds)"
        );
        assert_eq!(
            with("version = 3\nauth_pass = \"x\""),
            "6: vrrp[0].auth_pass: VRRPv3 has no authentication (needs version = 2)"
        );
        assert_eq!(
            with("auth_pass = \"123456789\""),
            "5: vrrp[0].auth_pass: must be 1 to 8 printable ASCII characters"
        );
        assert_eq!(
            with("preempt = false\npreempt_delay = 5"),
            "6: vrrp[0].preempt_delay: does not apply with preempt = false"
        );
        assert_eq!(with("preempt_delay = 1001"), "5: vrrp[0].preempt_delay: 1001s is out of range 0s..=1000s");
        assert_eq!(
            with("unicast_peer = [\"224.0.0.18\"]"),
            "5: vrrp[0].unicast_peer: \"224.0.0.18\" is not a unicast IPv4 address"
        );
        assert_eq!(
            with("unicast_peer = []"),
            "5: vrrp[0].unicast_peer: needs at least one address (or leave it out for multicast)"
        );
        assert_eq!(with("notify_master = \" \""), "5: vrrp[0].notify_master: must not be empty");
        assert_eq!(with("track_interface = [\"a/b\"]"), "5: vrrp[0].track_interface: \"a/b\" is not an interface name");
        assert_eq!(
            with("track_service = [{ service = \"tcp 172.16.100.1\" }]"),
            "5: vrrp[0].track_service[0].service: \"tcp 172.16.100.1\" is not \"PROTOCOL VIP:PORT\" (such as \"tcp 172.16.100.1:80\") \
             or \"fwmark MARK [IPv6]\""
        );
        assert_eq!(
            with("track_service = [{ service = \"sctp 172.16.100.1:80\" }]"),
            "5: vrrp[0].track_service[0].service: unknown protocol \"sctp\" (tcp or udp)"
        );
        assert_eq!(
            with("track_service = [{ service = \"tcp 172.16.100.1:80\", weight = -254 }]"),
            "5: vrrp[0].track_service[0].weight: -254 is out of range -253..=253"
        );
        assert_eq!(
            with("priority = 255\ntrack_service = [{ service = \"tcp 172.16.100.1:80\", weight = -10 }]"),
            "6: vrrp[0].track_service[0].weight: the address owner (priority 255) keeps its priority: only weight 0 applies"
        );
        assert_eq!(with("garp_master_repeat = 0"), "5: vrrp[0].garp_master_repeat: 0 is out of range 1..=100");
        assert_eq!(
            with("garp_master_refresh = \"10ms\""),
            "5: vrrp[0].garp_master_refresh: must be 0 (off) or at least 100ms"
        );

        let vips = |list: &str| {
            error(&format!("[[vrrp]]\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddress = {list}\n"))
        };
        assert_eq!(vips("[]"), "4: vrrp[0].virtual_ipaddress: needs at least one address");
        assert_eq!(
            vips("[\"10.0.0.1/33\"]"),
            "4: vrrp[0].virtual_ipaddress: \"10.0.0.1/33\" is not a unicast IPv4 or IPv6 ADDRESS[/PREFIX]"
        );
        assert_eq!(vips("[\"10.0.0.1\", \"10.0.0.1/24\"]"), "4: vrrp[0].virtual_ipaddress: 10.0.0.1 is listed twice");
        assert_eq!(
            vips("[\"10.0.0.1 on eth1\"]"),
            "4: vrrp[0].virtual_ipaddress: \"10.0.0.1 on eth1\" is not ADDRESS[/PREFIX] [dev INTERFACE]"
        );
        assert_eq!(vips("[\"10.0.0.1 dev a/b\"]"), "4: vrrp[0].virtual_ipaddress: \"a/b\" is not an interface name");

        assert_eq!(
            error("[[vrrp]]\ninterface = \"eth0\"\nvirtual_router_id = 0\nvirtual_ipaddress = [\"10.0.0.1\"]\n"),
            "3: vrrp[0].virtual_router_id: 0 is out of range 1..=255"
        );
        let e = resolve(
            "[[vrrp]]\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddress = [\"10.0.0.1\"]\nprioity = 3\n",
        )
        .unwrap_err();
        assert!(e[0].contains("unknown field `prioity`"), "{e:?}");
        let e = resolve("[[vrrp]]\ninterface = \"eth0\"\nvirtual_ipaddress = [\"10.0.0.1\"]\n").unwrap_err();
        assert!(e[0].contains("missing field `virtual_router_id`"), "{e:?}");
    }

    #[test]
    fn ipv6_addresses_run_vrrpv3() {
        let v6 = "[[vrrp]]\ninterface = \"eth0\"\nvirtual_router_id = 61\n\
                  virtual_ipaddress = [\"2001:db8::100/64\", \"2001:db8::101\"]\n";
        let c = one(v6);
        assert!(c.is_ipv6());
        assert_eq!(c.version, Version::V3, "keepalived runs VRRPv3 for IPv6 whatever its vrrp_version");
        assert_eq!(c.virtual_ipaddress[0], Vip::new("2001:db8::100".parse::<Ipv6Addr>().unwrap(), 64));
        assert_eq!(c.virtual_ipaddress[1].to_string(), "2001:db8::101/128");
        let addresses: Vec<IpAddr> = ["2001:db8::100", "2001:db8::101"].map(|a| a.parse().unwrap()).into();
        assert_eq!(c.expect().addresses, addresses);
        assert_eq!(one(&format!("{v6}version = 3\nadvert_interval = \"100ms\"\n")).advert_interval_cs(), 10);
        assert!(!one(MINIMAL).is_ipv6());

        let with = |extra: &str| error(&format!("{v6}{extra}\n"));
        assert_eq!(
            with("version = 2"),
            "5: vrrp[0].version: VRRPv2 carries IPv4 addresses only: IPv6 virtual addresses need version = 3"
        );
        assert_eq!(with("auth_pass = \"secret\""), "5: vrrp[0].auth_pass: VRRPv3 (IPv6) has no authentication");
        assert_eq!(
            with("unicast_peer = [\"2001:db8::2\"]"),
            "5: vrrp[0].unicast_peer: IPv6 instances advertise by multicast only (to ff02::12)"
        );

        let vips = |list: &str| {
            error(&format!("[[vrrp]]\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddress = {list}\n"))
        };
        // keepalived refuses an instance of both families; so does lbd.
        assert_eq!(
            vips("[\"2001:db8::1/64\", \"10.0.0.1\"]"),
            "4: vrrp[0].virtual_ipaddress: 10.0.0.1 is IPv4, the instance's first address IPv6: one instance moves \
             addresses of one family (a [[vrrp]] for each)"
        );
        assert_eq!(
            vips("[\"10.0.0.1\", \"2001:db8::1\"]"),
            "4: vrrp[0].virtual_ipaddress: 2001:db8::1 is IPv6, the instance's first address IPv4: one instance moves \
             addresses of one family (a [[vrrp]] for each)"
        );
        assert_eq!(
            vips("[\"2001:db8::1/129\"]"),
            "4: vrrp[0].virtual_ipaddress: \"2001:db8::1/129\" is not a unicast IPv4 or IPv6 ADDRESS[/PREFIX]"
        );
        assert_eq!(
            vips("[\"ff02::12\"]"),
            "4: vrrp[0].virtual_ipaddress: \"ff02::12\" is not a unicast IPv4 or IPv6 ADDRESS[/PREFIX]"
        );
        assert_eq!(
            vips("[\"2001:db8::1\", \"2001:db8::1/64\"]"),
            "4: vrrp[0].virtual_ipaddress: 2001:db8::1 is listed twice"
        );
    }

    #[test]
    fn instances_must_differ() {
        let e = resolve(&format!("{MINIMAL}{MINIMAL}")).unwrap_err();
        assert_eq!(
            e,
            [
                "7: vrrp[1].virtual_router_id: vrrp[0] has VRID 51 on eth0 already",
                "5: vrrp[1].name: vrrp[0] is named \"eth0-51\" already",
            ]
        );
        // Same VRID on another interface is another virtual router.
        let other = MINIMAL.replace("eth0", "eth1");
        assert_eq!(resolve(&format!("{MINIMAL}{other}")).unwrap().len(), 2);
    }

    #[test]
    fn all_mistakes_at_once() {
        let e = resolve(&format!("{MINIMAL}priority = 0\nversion = 9\ngarp_master_repeat = -1\n")).unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
    }

    #[test]
    fn track_service_weights() {
        let service = ServiceId::address(Protocol::Tcp, Ipv4Addr::LOCALHOST.into(), 80);
        let t = |weight| TrackService { service, weight };
        assert_eq!(t(-20).effect(false), (-20, false));
        assert_eq!(t(-20).effect(true), (0, false));
        assert_eq!(t(10).effect(true), (10, false));
        assert_eq!(t(10).effect(false), (0, false));
        assert_eq!(t(0).effect(false), (0, true));
        assert_eq!(t(0).effect(true), (0, false));
    }
}
