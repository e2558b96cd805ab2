//! The `[sync]` table.
//!
//! ```toml
//! [sync]
//! enabled = true               # default true when the table is present
//! interface = "eth0"           # required: where datagrams go out and come in
//! sync_id = 0                  # 0..=255; a receiver with 0 takes any (ipvsadm's --syncid)
//! transport = "multicast"      # multicast (to group:port) | unicast (to each peer:port)
//! peers = ["172.16.100.3"]     # the other directors: only their datagrams are accepted
//! address = "172.16.100.2"     # ours: datagrams leave from it, unicast ones come to it
//!                              # (default: the interface's primary address)
//! group = "224.0.0.81"         # IPVS's sync group
//! port = 8848                  # IPVS's sync port
//! max_len = 1472               # UDP payload per datagram (IPVS's sync_maxlen)
//! key = "a long shared secret" # HMAC-SHA256 key, at least 16 bytes; both directors the same
//! insecure = false             # true: sync without a key (anyone on the link can inject)
//! scan_interval = "200ms"      # how often the master looks for new or changed entries
//! refresh_period = "60s"       # an entry with traffic is sent again at least this often
//! ```
//!
//! A `key` is required unless `insecure = true` says to go without one
//! (then a datagram's only check is its source address, which anyone on
//! the link can forge; lbd says so at every start). Without a key, `peers`
//! are required; `transport = "unicast"` needs `peers` in any case.

use std::{fmt, net::Ipv4Addr, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::wire::{DEFAULT_MAX_LEN, MAX_MAX_LEN, MIN_MAX_LEN};
use crate::config::check::{Checker, DurationRange, RawDuration, is_unicast};

pub const DEFAULT_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
pub const DEFAULT_PORT: u16 = 8848;
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_millis(200);
pub const DEFAULT_REFRESH_PERIOD: Duration = Duration::from_secs(60);
pub const MIN_KEY_LEN: usize = 16;

/// The `[sync]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub enabled: Option<Spanned<bool>>,
    pub interface: Spanned<String>,
    pub sync_id: Option<Spanned<i64>>,
    pub transport: Option<Spanned<String>>,
    pub peers: Option<Spanned<Vec<Spanned<String>>>>,
    pub group: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub max_len: Option<Spanned<i64>>,
    pub key: Option<Spanned<String>>,
    pub insecure: Option<Spanned<bool>>,
    pub address: Option<Spanned<String>>,
    pub scan_interval: Option<Spanned<RawDuration>>,
    pub refresh_period: Option<Spanned<RawDuration>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// To `group:port` with TTL 1 on the interface.
    Multicast,
    /// To every peer's `port`.
    Unicast,
}

/// The shared key; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SyncKey(pub Vec<u8>);

impl fmt::Debug for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncKey(..)")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    pub enabled: bool,
    pub interface: String,
    pub sync_id: u8,
    pub transport: Transport,
    /// Accepted sources (and unicast destinations). Empty: any source (a
    /// key is then required).
    pub peers: Vec<Ipv4Addr>,
    pub group: Ipv4Addr,
    pub port: u16,
    pub max_len: usize,
    pub key: Option<SyncKey>,
    /// No key, and the config says that is meant.
    pub insecure: bool,
    /// Our address on the interface; `None`: its primary address.
    pub address: Option<Ipv4Addr>,
    pub scan_interval: Duration,
    pub refresh_period: Duration,
}

impl SyncConfig {
    /// Defaults (multicast, no peers, no key: not valid as is).
    pub fn new(interface: &str) -> Self {
        Self {
            enabled: true,
            interface: interface.to_string(),
            sync_id: 0,
            transport: Transport::Multicast,
            peers: Vec::new(),
            group: DEFAULT_GROUP,
            port: DEFAULT_PORT,
            max_len: DEFAULT_MAX_LEN,
            key: None,
            insecure: false,
            address: None,
            scan_interval: DEFAULT_SCAN_INTERVAL,
            refresh_period: DEFAULT_REFRESH_PERIOD,
        }
    }

    pub fn key_bytes(&self) -> Option<&[u8]> {
        self.key.as_ref().map(|k| k.0.as_slice())
    }

    /// Validates the table, reporting each mistake to `c`; `None` if there
    /// was one. `prefix` names the table (`sync`).
    pub fn resolve(raw: &Spanned<RawSync>, prefix: &str, c: &mut Checker) -> Option<SyncConfig> {
        c.if_clean(|e| Self::resolve_table(raw, prefix, e))
    }

    /// The table with defaults in place of its mistakes.
    fn resolve_table(raw: &Spanned<RawSync>, prefix: &str, e: &mut Checker) -> SyncConfig {
        let s = raw.get_ref();
        let key = |k: &str| format!("{prefix}.{k}");
        e.interface_name(&s.interface, &key("interface"));
        let interface = s.interface.get_ref().trim();
        let mut c = SyncConfig::new(interface);
        c.enabled = s.enabled.as_ref().is_none_or(|v| *v.get_ref());
        c.sync_id = e.integer(&s.sync_id, &key("sync_id"), 0..=255, 0).unwrap_or(0) as u8;
        if let Some(t) = &s.transport {
            match t.get_ref().as_str() {
                "multicast" => c.transport = Transport::Multicast,
                "unicast" => c.transport = Transport::Unicast,
                other => e.error(t.span(), key("transport"), format!("\"{other}\" is not multicast or unicast")),
            }
        }
        if let Some(peers) = &s.peers {
            for p in peers.get_ref() {
                match p.get_ref().trim().parse::<Ipv4Addr>() {
                    Ok(a) if !is_unicast(a) => e.error(p.span(), key("peers"), format!("{a} cannot be a peer")),
                    Ok(a) if c.peers.contains(&a) => e.error(p.span(), key("peers"), format!("{a} is listed twice")),
                    Ok(a) => c.peers.push(a),
                    Err(_) => e.error(p.span(), key("peers"), format!("\"{}\" is not an IPv4 address", p.get_ref())),
                }
            }
        }
        if let Some(a) = &s.address {
            match a.get_ref().trim().parse::<Ipv4Addr>() {
                Ok(addr) if is_unicast(addr) => c.address = Some(addr),
                _ => e.error(a.span(), key("address"), format!("\"{}\" is not a unicast IPv4 address", a.get_ref())),
            }
        }
        if let Some(g) = &s.group {
            match g.get_ref().trim().parse::<Ipv4Addr>() {
                Ok(a) if a.is_multicast() => c.group = a,
                _ => e.error(g.span(), key("group"), format!("\"{}\" is not an IPv4 multicast address", g.get_ref())),
            }
            if c.transport == Transport::Unicast {
                e.error(g.span(), key("group"), "does not apply with transport = \"unicast\"");
            }
        }
        let default = i64::from(DEFAULT_PORT);
        c.port = e.integer(&s.port, &key("port"), 1..=65535, default).unwrap_or(default) as u16;
        let default = DEFAULT_MAX_LEN as i64;
        c.max_len = e
            .integer(&s.max_len, &key("max_len"), MIN_MAX_LEN as i64..=MAX_MAX_LEN as i64, default)
            .unwrap_or(default) as usize;
        if let Some(k) = &s.key {
            if k.get_ref().len() < MIN_KEY_LEN {
                e.error(k.span(), key("key"), format!("must be at least {MIN_KEY_LEN} bytes"));
            } else {
                c.key = Some(SyncKey(k.get_ref().as_bytes().to_vec()));
            }
        }
        let range = DurationRange::Within(Duration::from_millis(10), Duration::from_secs(10));
        c.scan_interval = e
            .duration(&s.scan_interval, &key("scan_interval"), range, DEFAULT_SCAN_INTERVAL)
            .unwrap_or(DEFAULT_SCAN_INTERVAL);
        let range = DurationRange::Within(Duration::from_secs(1), Duration::from_secs(86_400));
        c.refresh_period = e
            .duration(&s.refresh_period, &key("refresh_period"), range, DEFAULT_REFRESH_PERIOD)
            .unwrap_or(DEFAULT_REFRESH_PERIOD);

        c.insecure = s.insecure.as_ref().is_some_and(|v| *v.get_ref());
        let none_given = s.peers.as_ref().is_none_or(|p| p.get_ref().is_empty());
        if c.transport == Transport::Unicast && none_given {
            let span = s.transport.as_ref().map_or(raw.span(), |t| t.span());
            e.error(span, key("peers"), "transport = \"unicast\" needs peers");
        }
        match (&s.key, &s.insecure) {
            (Some(_), Some(i)) if *i.get_ref() => {
                e.error(i.span(), key("insecure"), "insecure = true and a key: the key is used; remove one of them");
            }
            (None, insecure) if !c.insecure => {
                let span = insecure.as_ref().map_or(raw.span(), |i| i.span());
                e.error(
                    span,
                    key("key"),
                    "required: without one, anyone on the link can inject connections \
                     (set insecure = true to sync without a key all the same)",
                );
            }
            (None, _) if none_given && c.transport == Transport::Multicast => {
                let span = s.peers.as_ref().map_or(raw.span(), |p| p.span());
                e.error(span, key("peers"), "required without a key: else any source on the link is taken");
            }
            _ => {}
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::Source;

    #[derive(Deserialize)]
    struct Doc {
        sync: Spanned<RawSync>,
    }

    fn resolve(text: &str) -> Result<SyncConfig, Vec<String>> {
        let doc: Doc = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let source = Source::new("lb.toml", text);
        let mut c = Checker::new(&source);
        SyncConfig::resolve(&doc.sync, "sync", &mut c).ok_or_else(|| c.line_key_messages())
    }

    const BASE: &str = "[sync]\ninterface = \"eth0\"\npeers = [\"172.16.100.3\"]\nkey = \"0123456789abcdef\"\n";

    #[test]
    fn defaults() {
        let c = resolve(BASE).unwrap();
        assert!(c.enabled);
        assert_eq!(
            (c.sync_id, c.transport, c.group, c.port, c.max_len),
            (0, Transport::Multicast, DEFAULT_GROUP, 8848, 1472)
        );
        assert_eq!(c.peers, ["172.16.100.3".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!((c.insecure, c.address), (false, None));
        assert_eq!(c.key_bytes(), Some(&b"0123456789abcdef"[..]));
        assert_eq!((c.scan_interval, c.refresh_period), (Duration::from_millis(200), Duration::from_secs(60)));
    }

    #[test]
    fn every_key() {
        let c = resolve(
            "[sync]\nenabled = false\ninterface = \"eth1\"\nsync_id = 7\ntransport = \"unicast\"\npeers = [\"10.0.0.2\", \"10.0.0.3\"]\naddress = \"10.0.0.1\"\nport = 9000\nmax_len = 9000\nkey = \"0123456789abcdef\"\nscan_interval = \"100ms\"\nrefresh_period = \"30s\"\n",
        )
        .unwrap();
        assert!(!c.enabled);
        assert_eq!(
            (c.interface.as_str(), c.sync_id, c.transport, c.port, c.max_len),
            ("eth1", 7, Transport::Unicast, 9000, 9000)
        );
        assert_eq!(c.peers.len(), 2);
        assert_eq!(c.address, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.key_bytes(), Some(&b"0123456789abcdef"[..]));
        assert_eq!(format!("{:?}", c.key), "Some(SyncKey(..))");
        assert_eq!((c.scan_interval, c.refresh_period), (Duration::from_millis(100), Duration::from_secs(30)));
        // A key alone is enough (multicast, any source that has the key).
        assert!(resolve("[sync]\ninterface = \"eth0\"\nkey = \"0123456789abcdef\"\n").is_ok());
    }

    #[test]
    fn without_a_key_only_if_insecure_is_said() {
        let no_key = "[sync]\ninterface = \"eth0\"\npeers = [\"172.16.100.3\"]\n";
        let required = "sync.key: required: without one, anyone on the link can inject connections \
                        (set insecure = true to sync without a key all the same)";
        assert_eq!(resolve(no_key).unwrap_err(), [format!("1: {required}")]);
        assert_eq!(
            resolve(&format!("{no_key}transport = \"unicast\"\n")).unwrap_err(),
            [format!("1: {required}")]
        );
        assert_eq!(resolve(&format!("{no_key}insecure = false\n")).unwrap_err(), [format!("4: {required}")]);
        for transport in ["multicast", "unicast"] {
            let c = resolve(&format!("{no_key}insecure = true\ntransport = \"{transport}\"\n")).unwrap();
            assert!(c.insecure && c.key.is_none());
        }
        // Without a key, peers are the only check: required.
        assert_eq!(
            resolve("[sync]\ninterface = \"eth0\"\ninsecure = true\n").unwrap_err(),
            ["1: sync.peers: required without a key: else any source on the link is taken"]
        );
        assert_eq!(
            resolve(&format!("{BASE}insecure = true\n")).unwrap_err(),
            ["5: sync.insecure: insecure = true and a key: the key is used; remove one of them"]
        );
        assert!(resolve(&format!("{BASE}insecure = false\n")).is_ok());
    }

    #[test]
    fn mistakes() {
        let one = |extra: &str| {
            let e = resolve(&format!("{BASE}{extra}\n")).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            e[0].clone()
        };
        assert_eq!(one("sync_id = 256"), "5: sync.sync_id: 256 is out of range 0..=255");
        assert_eq!(one("transport = \"tcp\""), "5: sync.transport: \"tcp\" is not multicast or unicast");
        assert_eq!(one("group = \"10.0.0.1\""), "5: sync.group: \"10.0.0.1\" is not an IPv4 multicast address");
        assert_eq!(one("address = \"224.0.0.1\""), "5: sync.address: \"224.0.0.1\" is not a unicast IPv4 address");
        assert_eq!(one("port = 0"), "5: sync.port: 0 is out of range 1..=65535");
        assert_eq!(one("max_len = 100"), "5: sync.max_len: 100 is out of range 136..=65507");
        assert_eq!(one("scan_interval = \"1ms\""), "5: sync.scan_interval: 1ms is out of range 10ms..=10s");
        assert_eq!(
            one("transport = \"unicast\"\ngroup = \"224.0.0.81\""),
            "6: sync.group: does not apply with transport = \"unicast\""
        );
        let e = resolve("[sync]\ninterface = \"eth0\"\npeers = [\"172.16.100.3\"]\nkey = \"short\"\n").unwrap_err();
        assert_eq!(e, ["4: sync.key: must be at least 16 bytes"]);
        let e =
            resolve("[sync]\ninterface = \"eth0\"\ntransport = \"unicast\"\nkey = \"0123456789abcdef\"\n").unwrap_err();
        assert_eq!(e, ["3: sync.peers: transport = \"unicast\" needs peers"]);
        let e = resolve(
            "[sync]\ninterface = \"eth0\"\nkey = \"0123456789abcdef\"\npeers = [\"x\", \"224.0.0.1\", \"10.0.0.1\", \"10.0.0.1\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(resolve("[sync]\ninterface = \"eth0\"\npeer = []\n").unwrap_err()[0].contains("unknown field `peer`"));
    }
}
