//! The `health_check` table: a service's, overridden key by key by a real
//! server's own, validated into a [`HealthCheck`].
//!
//! ```toml
//! [service.health_check]
//! kind = "http"             # tcp | http | https | ping | exec | none
//! interval = "5s"           # "500ms", "5s", "1m", "1m30s", 2.5 or 5 (seconds)
//! connect_timeout = "3s"
//! retry = 3                 # failed checks in a row that take a server down
//! delay_before_retry = "1s"
//! rise = 1                  # passed checks in a row that bring it back
//! path = "/health"
//! status = [200, "300-399"]
//! ```
//!
//! Every value is checked here, so the config can report each mistake with
//! its line; the checks themselves never meet a bad value.

use std::{fmt, net::IpAddr, ops::Range, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use super::config::{CheckKind, HealthCheck, HttpProbe, Probe, StatusCodes, load_ca_file};
use crate::config::check::{Checker, DurationRange, RawDuration, in_range};

/// The most `retry` or `rise` accepted.
pub const MAX_COUNT: i64 = 1000;

/// Whether the key `key` means anything for a check of kind `kind`.
fn applies(kind: CheckKind, key: &str) -> bool {
    use CheckKind::*;
    match key {
        "kind" => true,
        "source_address" => matches!(kind, Tcp | Http | Https | Ping),
        "port" => matches!(kind, Tcp | Http | Https),
        "path" | "status" | "body_contains" | "digest" | "host" => matches!(kind, Http | Https),
        "verify_certificate" | "ca_file" => kind == Https,
        "command" | "dynamic_weight" => kind == Exec,
        // interval, timeouts, retry, rise, alpha, inhibit_on_failure, notify_*
        _ => kind != None,
    }
}

/// Where the tables being resolved sit in the config.
#[derive(Clone, Debug)]
pub struct ResolveContext<'a> {
    /// Key prefix of the service's table, e.g. `service[0].health_check`.
    pub service_key: &'a str,
    /// Key prefix of the real server's table, e.g. `service[0].real[1].health_check`.
    pub real_key: &'a str,
    /// The real server's address, to match `source_address` against.
    pub address: Option<IpAddr>,
    /// The real server's port (the service's; 0 = every port).
    pub port: u16,
    /// Where to point a mistake no single value holds (a missing `kind`).
    pub span: Range<usize>,
}

// The table as written.

/// A `health_check` table as written; every key is optional so that a
/// real server's table can override some of its service's.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub kind: Option<Spanned<String>>,
    pub interval: Option<Spanned<RawDuration>>,
    pub connect_timeout: Option<Spanned<RawDuration>>,
    pub retry: Option<Spanned<i64>>,
    pub delay_before_retry: Option<Spanned<RawDuration>>,
    pub rise: Option<Spanned<i64>>,
    pub alpha: Option<Spanned<bool>>,
    pub inhibit_on_failure: Option<Spanned<bool>>,
    pub source_address: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub status: Option<Spanned<RawStatus>>,
    pub body_contains: Option<Spanned<String>>,
    pub digest: Option<Spanned<String>>,
    pub verify_certificate: Option<Spanned<bool>>,
    pub ca_file: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub command: Option<Spanned<String>>,
    pub dynamic_weight: Option<Spanned<bool>>,
    pub notify_up: Option<Spanned<String>>,
    pub notify_down: Option<Spanned<String>>,
}

impl RawHealthCheck {
    /// Every key set, with where.
    fn keys(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut keys = Vec::new();
        macro_rules! collect {
            ($($field:ident),*) => {
                $( if let Some(v) = &self.$field { keys.push((stringify!($field), v.span())); } )*
            };
        }
        collect!(
            kind,
            interval,
            connect_timeout,
            retry,
            delay_before_retry,
            rise,
            alpha,
            inhibit_on_failure,
            source_address,
            port,
            path,
            status,
            body_contains,
            digest,
            verify_certificate,
            ca_file,
            host,
            command,
            dynamic_weight,
            notify_up,
            notify_down
        );
        keys
    }
}

/// `status` as written: a code, a "lo-hi" range, or a list of those.
#[derive(Clone, Debug, PartialEq)]
pub struct RawStatus(pub Vec<RawStatusItem>);

#[derive(Clone, Debug, PartialEq)]
pub enum RawStatusItem {
    Code(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawStatusItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RawStatusItem;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP status code or a range such as \"200-299\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawStatusItem, E> {
                Ok(RawStatusItem::Code(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawStatusItem, E> {
                Ok(RawStatusItem::Code(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStatusItem, E> {
                Ok(RawStatusItem::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawStatus;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an HTTP status code, a range such as \"200-299\", or a list of those")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawStatus, E> {
                Ok(RawStatus(vec![RawStatusItem::Code(v)]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawStatus, E> {
                Ok(RawStatus(vec![RawStatusItem::Code(i64::try_from(v).unwrap_or(i64::MAX))]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawStatus, E> {
                Ok(RawStatus(vec![RawStatusItem::Text(v.to_string())]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<RawStatus, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawStatus(items))
            }
        }
        d.deserialize_any(V)
    }
}

// Resolving.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Service,
    Real,
}

/// A value picked from the real's table, else the service's.
struct Field<'r, T> {
    value: &'r T,
    span: Range<usize>,
    level: Level,
    name: &'static str,
}

struct Resolver<'r, 's> {
    service: Option<&'r RawHealthCheck>,
    real: Option<&'r RawHealthCheck>,
    ctx: &'r ResolveContext<'r>,
    c: &'r mut Checker<'s>,
}

impl<'r> Resolver<'r, '_> {
    fn pick<T>(
        &self,
        name: &'static str,
        get: fn(&'r RawHealthCheck) -> &'r Option<Spanned<T>>,
    ) -> Option<Field<'r, T>> {
        let from = |table: Option<&'r RawHealthCheck>, level| {
            table.and_then(|t| get(t).as_ref()).map(|v| Field { value: v.get_ref(), span: v.span(), level, name })
        };
        from(self.real, Level::Real).or_else(|| from(self.service, Level::Service))
    }

    fn key(&self, level: Level, name: &str) -> String {
        let prefix = match level {
            Level::Service => self.ctx.service_key,
            Level::Real => self.ctx.real_key,
        };
        if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
    }

    fn error<T>(&mut self, field: &Field<'_, T>, message: impl Into<String>) {
        let key = self.key(field.level, field.name);
        self.c.error(field.span.clone(), key, message);
    }

    fn duration(
        &mut self,
        name: &'static str,
        get: fn(&'r RawHealthCheck) -> &'r Option<Spanned<RawDuration>>,
        default: Duration,
        min: Duration,
    ) -> Duration {
        let Some(field) = self.pick(name, get) else { return default };
        match field.value.check(DurationRange::AtLeast(min)) {
            Ok(d) => d,
            Err(message) => {
                self.error(&field, message);
                default
            }
        }
    }

    fn count(
        &mut self,
        name: &'static str,
        get: fn(&'r RawHealthCheck) -> &'r Option<Spanned<i64>>,
        default: u32,
        what: &str,
    ) -> u32 {
        let Some(field) = self.pick(name, get) else { return default };
        match in_range(*field.value, &(1..=MAX_COUNT)) {
            Ok(v) => v as u32,
            Err(message) => {
                self.error(&field, format!("{message} ({what})"));
                default
            }
        }
    }

    fn flag(
        &self,
        name: &'static str,
        get: fn(&'r RawHealthCheck) -> &'r Option<Spanned<bool>>,
        default: bool,
    ) -> bool {
        self.pick(name, get).map_or(default, |f| *f.value)
    }

    fn text(
        &mut self,
        name: &'static str,
        get: fn(&'r RawHealthCheck) -> &'r Option<Spanned<String>>,
    ) -> Option<Field<'r, String>> {
        let field = self.pick(name, get)?;
        if field.value.trim().is_empty() {
            self.error(&field, "must not be empty");
            return None;
        }
        Some(field)
    }
}

impl HealthCheck {
    /// The check for one real server: the service's table overridden key by
    /// key by the real's. No table at all means no check (`kind = "none"`).
    /// Every mistake is reported to `c`, each with its line and key; `None`
    /// if there was one.
    pub fn resolve(
        service: Option<&RawHealthCheck>,
        real: Option<&RawHealthCheck>,
        ctx: &ResolveContext,
        c: &mut Checker,
    ) -> Option<HealthCheck> {
        c.if_clean(|c| Self::resolve_tables(service, real, ctx, c))
    }

    /// [`Self::resolve`], with defaults in place of mistakes.
    fn resolve_tables(
        service: Option<&RawHealthCheck>,
        real: Option<&RawHealthCheck>,
        ctx: &ResolveContext,
        c: &mut Checker,
    ) -> HealthCheck {
        if service.is_none() && real.is_none() {
            return HealthCheck::default();
        }
        let mut r = Resolver { service, real, ctx, c };

        let kind_field = r.pick("kind", |h| &h.kind);
        let kind = match &kind_field {
            None => {
                let level = if real.is_some() { Level::Real } else { Level::Service };
                let names: Vec<_> = CheckKind::ALL.iter().map(|k| k.name()).collect();
                let key = r.key(level, "kind");
                r.c.error(ctx.span.clone(), key, format!("missing kind (one of {})", names.join(", ")));
                None
            }
            Some(f) => match f.value.parse::<CheckKind>() {
                Ok(kind) => Some(kind),
                Err(message) => {
                    r.error(f, message);
                    None
                }
            },
        };

        // A key the kind does not use is a mistake where it was written next
        // to (or below) the kind; a key inherited from the service while the
        // real server switched kind is simply unused.
        if let (Some(kind), Some(kind_field)) = (kind, &kind_field) {
            for (level, table) in [(Level::Service, service), (Level::Real, real)] {
                let inherited = level == Level::Service && kind_field.level == Level::Real;
                for (name, span) in table.map(|t| t.keys()).unwrap_or_default() {
                    if !inherited && !applies(kind, name) {
                        let key = r.key(level, name);
                        let message = if kind == CheckKind::None {
                            "does not apply: kind \"none\" checks nothing".to_string()
                        } else {
                            format!("does not apply to kind \"{kind}\"")
                        };
                        r.c.error(span, key, message);
                    }
                }
            }
        }
        let kind_known = kind.is_some();
        let kind = kind.unwrap_or(CheckKind::Tcp);
        let mut check = HealthCheck::defaults(kind);

        check.interval = r.duration("interval", |h| &h.interval, check.interval, Duration::from_millis(10));
        check.connect_timeout =
            r.duration("connect_timeout", |h| &h.connect_timeout, check.connect_timeout, Duration::from_millis(1));
        check.delay_before_retry =
            r.duration("delay_before_retry", |h| &h.delay_before_retry, check.delay_before_retry, Duration::ZERO);
        check.retry = r.count("retry", |h| &h.retry, check.retry, "failed checks in a row before a server is down");
        check.rise = r.count("rise", |h| &h.rise, check.rise, "passed checks in a row before a server is up again");
        check.alpha = r.flag("alpha", |h| &h.alpha, false);
        check.inhibit_on_failure = r.flag("inhibit_on_failure", |h| &h.inhibit_on_failure, false);
        check.notify_up = r.text("notify_up", |h| &h.notify_up).map(|f| f.value.clone());
        check.notify_down = r.text("notify_down", |h| &h.notify_down).map(|f| f.value.clone());

        if let Some(f) = r.pick("source_address", |h| &h.source_address) {
            match f.value.parse::<IpAddr>() {
                Ok(ip) if ip.is_multicast() || ip == IpAddr::V4(std::net::Ipv4Addr::BROADCAST) => {
                    r.error(&f, format!("{ip} cannot be a source address"))
                }
                Ok(ip) if ctx.address.is_some_and(|a| a.is_ipv4() != ip.is_ipv4()) => {
                    let real = ctx.address.unwrap_or(ip);
                    r.error(&f, format!("{ip} cannot reach the real server {real} (another address family)"))
                }
                Ok(ip) => check.source_address = Some(ip),
                Err(_) => r.error(&f, format!("\"{}\" is not an IP address", f.value)),
            }
        }

        if let Some(f) = r.pick("port", |h| &h.port) {
            match in_range(*f.value, &(1..=65535)) {
                Ok(p) => check.port = Some(p as u16),
                Err(message) => r.error(&f, message),
            }
        } else if kind_known && ctx.port == 0 && matches!(kind, CheckKind::Tcp | CheckKind::Http | CheckKind::Https) {
            let level = if real.is_some() { Level::Real } else { Level::Service };
            let span = kind_field.as_ref().map_or(ctx.span.clone(), |f| f.span.clone());
            let key = r.key(level, "port");
            r.c.error(span, key, format!("the service has port 0 (every port): a {kind} check needs a port"));
        }

        match &mut check.probe {
            Probe::Http(http) => resolve_http(&mut r, http, kind),
            Probe::Exec(exec) if kind_known => match r.text("command", |h| &h.command) {
                Some(f) => {
                    exec.command = f.value.clone();
                    exec.dynamic_weight = r.flag("dynamic_weight", |h| &h.dynamic_weight, false);
                }
                None if r.pick("command", |h| &h.command).is_none() => {
                    let span = kind_field.as_ref().map_or(ctx.span.clone(), |f| f.span.clone());
                    let level = kind_field.as_ref().map_or(Level::Service, |f| f.level);
                    let key = r.key(level, "command");
                    r.c.error(span, key, "an exec check needs a command");
                }
                None => {}
            },
            Probe::None | Probe::Tcp | Probe::Ping | Probe::Exec(_) => {}
        }

        check
    }
}

fn resolve_http(r: &mut Resolver, http: &mut HttpProbe, kind: CheckKind) {
    if let Some(f) = r.pick("path", |h| &h.path) {
        if f.value.starts_with('/') && f.value.bytes().all(|b| b.is_ascii_graphic()) {
            http.path = f.value.clone();
        } else {
            r.error(&f, format!("\"{}\" is not a request path (it starts with / and has no spaces)", f.value));
        }
    }
    if let Some(f) = r.pick("status", |h| &h.status) {
        match status_codes(&f.value.0) {
            Ok(codes) => http.status = codes,
            Err(message) => r.error(&f, message),
        }
    }
    http.body_contains = r.text("body_contains", |h| &h.body_contains).map(|f| f.value.clone());
    if let Some(f) = r.pick("digest", |h| &h.digest) {
        match parse_md5(f.value) {
            Some(d) => http.digest = Some(d),
            None => r.error(&f, format!("\"{}\" is not an MD5 digest (32 hex digits)", f.value)),
        }
    }
    if let Some(f) = r.text("host", |h| &h.host) {
        let valid_header = f.value.bytes().all(|b| b.is_ascii_graphic());
        let valid_name = rustls::pki_types::ServerName::try_from(f.value.as_str()).is_ok();
        if !valid_header || (kind == CheckKind::Https && !valid_name) {
            r.error(&f, format!("\"{}\" is not a host name", f.value));
        } else {
            http.host = Some(f.value.clone());
        }
    }
    if let Some(tls) = &mut http.tls {
        tls.verify_certificate = r.flag("verify_certificate", |h| &h.verify_certificate, false);
        if let Some(f) = r.text("ca_file", |h| &h.ca_file) {
            let path = PathBuf::from(f.value);
            if !path.is_absolute() {
                r.error(&f, "must be an absolute path");
            } else if !tls.verify_certificate {
                r.error(&f, "needs verify_certificate = true");
            } else {
                match load_ca_file(&path) {
                    Ok(_) => tls.ca_file = Some(path),
                    Err(message) => r.error(&f, message),
                }
            }
        }
    }
}

fn status_codes(items: &[RawStatusItem]) -> Result<StatusCodes, String> {
    if items.is_empty() {
        return Err("needs at least one status code".into());
    }
    let code = |v: i64| u16::try_from(v).ok().filter(|c| (100..=599).contains(c));
    let mut ranges = Vec::new();
    for item in items {
        let range = match item {
            RawStatusItem::Code(v) => code(*v).map(|c| (c, c)),
            RawStatusItem::Text(t) => {
                let (lo, hi) = t.split_once('-').unwrap_or((t, t));
                match (lo.trim().parse().ok().and_then(code), hi.trim().parse().ok().and_then(code)) {
                    (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
                    _ => None,
                }
            }
        };
        match range {
            Some(r) => ranges.push(r),
            None => {
                let shown = match item {
                    RawStatusItem::Code(v) => v.to_string(),
                    RawStatusItem::Text(t) => format!("\"{t}\""),
                };
                return Err(format!("{shown} is not a status code (100-599) or a range such as \"200-299\""));
            }
        }
    }
    Ok(StatusCodes(ranges))
}

fn parse_md5(text: &str) -> Option<[u8; 16]> {
    let text = text.trim();
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut digest = [0u8; 16];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::check::Source,
        health::config::{ExecProbe, TlsOptions},
    };

    /// The two tables as a test writes them, with line numbers for spans.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        service: Option<RawHealthCheck>,
        real: Option<RawHealthCheck>,
    }

    fn resolve_with_port(text: &str, port: u16) -> Result<HealthCheck, Vec<String>> {
        let doc: Doc = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let ctx = ResolveContext {
            service_key: "service[0].health_check",
            real_key: "service[0].real[0].health_check",
            address: Some("172.16.100.7".parse().unwrap()),
            port,
            span: 0..0,
        };
        let source = Source::new("lb.toml", text);
        let mut c = Checker::new(&source);
        HealthCheck::resolve(doc.service.as_ref(), doc.real.as_ref(), &ctx, &mut c).ok_or_else(|| c.line_key_messages())
    }

    fn resolve(text: &str) -> Result<HealthCheck, Vec<String>> {
        resolve_with_port(text, 80)
    }

    #[test]
    fn the_issue_example_resolves() {
        let check = resolve(
            r#"
[service]
kind = "http"
interval = "5s"
connect_timeout = "3s"
retry = 3
delay_before_retry = "1s"
rise = 1
alpha = false
inhibit_on_failure = false
source_address = "10.0.0.1"
port = 8080
path = "/health"
status = [200]
body_contains = "OK"
digest = "9b3a0c85a887a256d6939da88aabd8cd"
host = "example.org"
notify_up = "logger up"
notify_down = "logger down"
"#,
        )
        .unwrap();
        assert_eq!(check.kind(), CheckKind::Http);
        assert_eq!(check.interval, Duration::from_secs(5));
        assert_eq!(check.connect_timeout, Duration::from_secs(3));
        assert_eq!((check.retry, check.rise), (3, 1));
        assert_eq!(check.source_address, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(check.target("172.16.100.7:80".parse().unwrap()), "172.16.100.7:8080".parse().unwrap());
        let Probe::Http(http) = &check.probe else { panic!() };
        assert_eq!(http.path, "/health");
        assert_eq!(http.status, StatusCodes(vec![(200, 200)]));
        assert_eq!(http.digest.unwrap()[..2], [0x9b, 0x3a]);
        assert_eq!(http.host.as_deref(), Some("example.org"));
        assert_eq!(http.tls, None);
        assert_eq!(check.notify_down.as_deref(), Some("logger down"));
    }

    #[test]
    fn keepalived_defaults() {
        let tcp = resolve("[service]\nkind = \"tcp\"\n").unwrap();
        assert_eq!(tcp.interval, Duration::from_secs(60));
        assert_eq!(tcp.connect_timeout, Duration::from_secs(5));
        assert_eq!(tcp.retry, 2, "keepalived's retry 1 is one extra attempt");
        assert_eq!(tcp.delay_before_retry, Duration::from_secs(1));
        assert_eq!((tcp.rise, tcp.alpha, tcp.inhibit_on_failure), (1, false, false));
        assert_eq!(tcp.port, None);

        let https = resolve("[service]\nkind = \"https\"\n").unwrap();
        assert_eq!(https.delay_before_retry, Duration::from_secs(3));
        let Probe::Http(http) = &https.probe else { panic!() };
        assert_eq!((http.path.as_str(), http.status.to_string()), ("/", "200-299".to_string()));
        assert_eq!(http.tls, Some(TlsOptions { verify_certificate: false, ca_file: None }));

        let exec = resolve("[service]\nkind = \"exec\"\ncommand = \"true\"\n").unwrap();
        assert_eq!(exec.retry, 1, "keepalived's MISC_CHECK retries 0 times");
        assert_eq!(exec.probe, Probe::Exec(ExecProbe { command: "true".into(), dynamic_weight: false }));

        assert_eq!(resolve("").unwrap(), HealthCheck::default());
        assert!(!resolve("").unwrap().is_active());
    }

    #[test]
    fn a_real_overrides_its_services_keys() {
        let text = r#"
[service]
kind = "http"
interval = 5
path = "/health"

[real]
interval = "2.5s"
retry = 4
"#;
        let check = resolve(text).unwrap();
        assert_eq!(check.interval, Duration::from_millis(2500));
        assert_eq!(check.retry, 4);
        let Probe::Http(http) = &check.probe else { panic!() };
        assert_eq!(http.path, "/health");

        // A real switching kind leaves the service's http keys unused.
        let check = resolve(&format!("{text}kind = \"tcp\"\n")).unwrap();
        assert_eq!(check.kind(), CheckKind::Tcp);
        assert_eq!(check.interval, Duration::from_millis(2500));

        // ...but http keys written next to a tcp kind are a mistake.
        let e = resolve("[service]\nkind = \"tcp\"\n[real]\npath = \"/x\"\n").unwrap_err();
        assert_eq!(e, ["4: service[0].real[0].health_check.path: does not apply to kind \"tcp\""]);

        // A real can switch checks off.
        let check = resolve(&format!("{text}kind = \"none\"\n")).unwrap_err();
        assert_eq!(check.len(), 2, "{check:?}"); // interval and retry next to none
        let check = resolve("[service]\nkind = \"tcp\"\ninterval = 1\n[real]\nkind = \"none\"\n").unwrap();
        assert!(!check.is_active());
    }

    #[test]
    fn each_mistake_names_line_and_key() {
        let one = |text: &str| {
            let e = resolve(text).unwrap_err();
            assert_eq!(e.len(), 1, "{e:?}");
            e[0].clone()
        };
        assert_eq!(
            one("[service]\nkind = \"smtp\"\n"),
            "2: service[0].health_check.kind: unknown health check kind \"smtp\" (one of tcp, http, https, ping, exec, none)"
        );
        assert_eq!(
            one("[service]\nkind = \"tcp\"\ninterval = \"5x\"\n"),
            "3: service[0].health_check.interval: \"5x\" is not a duration (like \"500ms\", \"5s\", \"1m\", or a number of seconds)"
        );
        assert_eq!(
            one("[service]\nkind = \"tcp\"\ninterval = 0\n"),
            "3: service[0].health_check.interval: must be at least 10ms"
        );
        assert_eq!(
            one("[service]\nkind = \"tcp\"\n[real]\nretry = 0\n"),
            "4: service[0].real[0].health_check.retry: 0 is out of range 1..=1000 (failed checks in a row before a server is down)"
        );
        assert_eq!(
            one("[service]\nkind = \"exec\"\n"),
            "2: service[0].health_check.command: an exec check needs a command"
        );
        assert_eq!(
            one("[service]\nkind = \"exec\"\ncommand = \" \"\n"),
            "3: service[0].health_check.command: must not be empty"
        );
        assert_eq!(
            one("[service]\nkind = \"http\"\ndigest = \"9b3a0c85\"\n"),
            "3: service[0].health_check.digest: \"9b3a0c85\" is not an MD5 digest (32 hex digits)"
        );
        assert_eq!(
            one("[service]\nkind = \"http\"\ndigest = \"zz3a0c85a887a256d6939da88aabd8cd\"\n"),
            "3: service[0].health_check.digest: \"zz3a0c85a887a256d6939da88aabd8cd\" is not an MD5 digest (32 hex digits)"
        );
        assert_eq!(
            one("[service]\nkind = \"http\"\nstatus = [200, \"500-400\"]\n"),
            "3: service[0].health_check.status: \"500-400\" is not a status code (100-599) or a range such as \"200-299\""
        );
        assert_eq!(
            one("[service]\nkind = \"http\"\npath = \"health\"\n"),
            "3: service[0].health_check.path: \"health\" is not a request path (it starts with / and has no spaces)"
        );
        assert_eq!(
            one("[service]\nkind = \"tcp\"\nsource_address = \"10.0.0\"\n"),
            "3: service[0].health_check.source_address: \"10.0.0\" is not an IP address"
        );
        assert_eq!(
            one("[service]\nkind = \"tcp\"\nsource_address = \"2001:db8::1\"\n"),
            "3: service[0].health_check.source_address: 2001:db8::1 cannot reach the real server 172.16.100.7 (another address family)"
        );
        assert_eq!(
            one("[service]\nkind = \"tcp\"\nport = 70000\n"),
            "3: service[0].health_check.port: 70000 is out of range 1..=65535"
        );
        assert_eq!(
            one("[service]\nkind = \"http\"\nverify_certificate = true\n"),
            "3: service[0].health_check.verify_certificate: does not apply to kind \"http\""
        );
        assert_eq!(
            one("[service]\nkind = \"https\"\nca_file = \"/nonexistent/ca.pem\"\nverify_certificate = true\n"),
            "3: service[0].health_check.ca_file: cannot read /nonexistent/ca.pem: No such file or directory (os error 2)"
        );
        // Found while fuzzing the config: a device or a FIFO read forever,
        // or waited forever for a writer.
        let ca_file = |path: &str| {
            one(&format!("[service]\nkind = \"https\"\nca_file = \"{path}\"\nverify_certificate = true\n"))
        };
        assert_eq!(ca_file("/dev/zero"), "3: service[0].health_check.ca_file: /dev/zero is not a regular file");
        let dir = std::env::temp_dir().join(format!("lb-ca-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let big = dir.join("big.pem");
        std::fs::write(&big, vec![b'x'; crate::health::config::MAX_CA_FILE as usize + 1]).unwrap();
        assert_eq!(
            ca_file(&fifo.display().to_string()),
            format!("3: service[0].health_check.ca_file: {} is not a regular file", fifo.display())
        );
        assert_eq!(
            ca_file(&big.display().to_string()),
            format!("3: service[0].health_check.ca_file: {} is larger than 1024 KiB", big.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            one("[service]\nkind = \"https\"\nca_file = \"/etc/ca.pem\"\n"),
            "3: service[0].health_check.ca_file: needs verify_certificate = true"
        );
        assert_eq!(
            one("[service]\nkind = \"https\"\nhost = \"a b\"\n"),
            "3: service[0].health_check.host: \"a b\" is not a host name"
        );
        assert_eq!(
            one("[service]\nkind = \"none\"\nretry = 3\n"),
            "3: service[0].health_check.retry: does not apply: kind \"none\" checks nothing"
        );
        assert_eq!(
            one("[real]\nretry = 3\n"),
            "1: service[0].real[0].health_check.kind: missing kind (one of tcp, http, https, ping, exec, none)"
        );
        let e = resolve("[service]\nkind = \"tcp\"\nretriy = 3\n").unwrap_err();
        assert!(e[0].contains("unknown field `retriy`"), "{e:?}");
    }

    #[test]
    fn all_mistakes_are_reported_at_once() {
        let e = resolve("[service]\nkind = \"http\"\nretry = 0\nrise = -1\ninterval = \"x\"\ndigest = \"0\"\n")
            .unwrap_err();
        assert_eq!(e.len(), 4, "{e:?}");
    }

    #[test]
    fn an_unknown_kind_hides_no_other_mistake_and_adds_none() {
        let e = resolve_with_port("[service]\nkind = \"smtp\"\nretry = 0\n", 0).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
    }

    #[test]
    fn port_zero_services_need_a_check_port() {
        let e = resolve_with_port("[service]\nkind = \"tcp\"\n", 0).unwrap_err();
        assert_eq!(
            e,
            ["2: service[0].health_check.port: the service has port 0 (every port): a tcp check needs a port"]
        );
        assert!(resolve_with_port("[service]\nkind = \"tcp\"\nport = 22\n", 0).is_ok());
        assert!(resolve_with_port("[service]\nkind = \"ping\"\n", 0).is_ok());
    }

    #[test]
    fn status_forms() {
        let status = |v: &str| {
            let check = resolve(&format!("[service]\nkind = \"http\"\nstatus = {v}\n")).unwrap();
            let Probe::Http(http) = check.probe else { panic!() };
            http.status
        };
        assert_eq!(status("204"), StatusCodes(vec![(204, 204)]));
        assert_eq!(status("\"200-399\""), StatusCodes(vec![(200, 399)]));
        let mixed = status("[200, \"301-302\", 404]");
        assert_eq!(mixed.to_string(), "200, 301-302, 404");
        assert!(mixed.contains(302) && mixed.contains(404) && !mixed.contains(303));
        assert!(resolve("[service]\nkind = \"http\"\nstatus = []\n").is_err());
        assert!(resolve("[service]\nkind = \"http\"\nstatus = 99\n").is_err());
    }
}
