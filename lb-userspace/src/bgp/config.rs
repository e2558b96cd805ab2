//! The `[bgp]` table: which VIPs this director announces, through which
//! BGP daemon, with which attributes.
//!
//! ```toml
//! [bgp]
//! speaker = "gobgp"              # the daemon lbd drives (gobgpd, through its gobgp CLI)
//! command = "gobgp"              # that CLI: a name in PATH or a path
//! api = "127.0.0.1:50051"        # gobgpd's gRPC API (its default)
//! vips = ["192.0.2.10"]          # default: every service's VIP and every firewall mark's match network
//!                                # (a mark's network as "192.0.2.64/26")
//! drain_time = "2s"              # SIGTERM: withdraw, forward this long, then detach
//! check_interval = "5s"          # how often lbd compares the daemon's routes with its own
//! med = 10                       # MULTI_EXIT_DISC (a lower one is preferred)
//! communities = ["65000:100"]    # standard communities
//! as_path_prepend = [65001, 65001] # ASNs put before the path (a less preferred site)
//! next_hop = "10.2.0.11"         # default: the daemon's own address toward each peer
//! ```
//!
//! A VIP (a /32) or a firewall mark's network is announced while each of
//! its services holds its quorum and stands by for no VRRP instance; see
//! [`super::plan`].

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::plan::Prefix;
use crate::config::check::{Checker, DurationRange, RawDuration, is_unicast};

pub const DEFAULT_COMMAND: &str = "gobgp";
pub const DEFAULT_API: &str = "127.0.0.1:50051";
pub const DEFAULT_DRAIN_TIME: Duration = Duration::from_secs(2);
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The `[bgp]` table as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBgp {
    pub speaker: Option<Spanned<String>>,
    pub command: Option<Spanned<String>>,
    pub api: Option<Spanned<String>>,
    pub vips: Option<Vec<Spanned<String>>>,
    pub drain_time: Option<Spanned<RawDuration>>,
    pub check_interval: Option<Spanned<RawDuration>>,
    pub med: Option<Spanned<i64>>,
    pub communities: Option<Vec<Spanned<String>>>,
    pub as_path_prepend: Option<Vec<Spanned<i64>>>,
    pub next_hop: Option<Spanned<String>>,
}

/// The BGP daemons lbd can drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpeakerKind {
    /// GoBGP: routes added and removed through its API at run time, no
    /// config file rewritten (see [`super::gobgp`]).
    GoBgp,
}

/// What every announced route carries besides its prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteAttributes {
    pub med: Option<u32>,
    /// (ASN, value) pairs, written "ASN:VALUE".
    pub communities: Vec<(u16, u16)>,
    pub as_path_prepend: Vec<u32>,
    pub next_hop: Option<Ipv4Addr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpConfig {
    pub speaker: SpeakerKind,
    pub command: String,
    pub api: SocketAddr,
    /// Empty: every service's VIP and every firewall mark's IPv4 match
    /// network.
    pub vips: Vec<Prefix>,
    pub drain_time: Duration,
    pub check_interval: Duration,
    pub attributes: RouteAttributes,
}

impl BgpConfig {
    /// Validates the table; `service_prefixes` are the file's services'
    /// (each VIP's host route, each mark's match networks): an announced
    /// prefix must be one. `None` after a mistake.
    pub fn resolve(
        raw: &Spanned<RawBgp>,
        service_prefixes: &[Prefix],
        c: &mut Checker,
    ) -> Option<BgpConfig> {
        c.if_clean(|e| resolve_table(raw.get_ref(), service_prefixes, e))
    }
}

fn resolve_table(b: &RawBgp, service_prefixes: &[Prefix], e: &mut Checker) -> BgpConfig {
    let key = |k: &str| format!("bgp.{k}");
    let speaker = match &b.speaker {
        None => SpeakerKind::GoBgp,
        Some(s) if s.get_ref() == "gobgp" => SpeakerKind::GoBgp,
        Some(s) => {
            e.error(
                s.span(),
                key("speaker"),
                format!("\"{}\" is not a speaker lbd drives (gobgp)", s.get_ref()),
            );
            SpeakerKind::GoBgp
        }
    };
    let command = match &b.command {
        Some(c) if c.get_ref().trim().is_empty() => {
            e.error(c.span(), key("command"), "must name the speaker's command");
            String::new()
        }
        Some(c) => c.get_ref().trim().to_string(),
        None => DEFAULT_COMMAND.to_string(),
    };
    let default_api: SocketAddr = DEFAULT_API.parse().expect("a socket address");
    let api = match &b.api {
        None => default_api,
        Some(a) => a.get_ref().trim().parse().unwrap_or_else(|_| {
            e.error(
                a.span(),
                key("api"),
                format!("\"{}\" is not ADDRESS:PORT", a.get_ref()),
            );
            default_api
        }),
    };
    let mut vips = Vec::new();
    for v in b.vips.iter().flatten() {
        match v.get_ref().trim().parse::<Prefix>() {
            Ok(a) if !service_prefixes.contains(&a) && a.len == 32 => e.error(
                v.span(),
                key("vips"),
                format!("{} is the VIP of no service of this file", a.addr),
            ),
            Ok(a) if !service_prefixes.contains(&a) => e.error(
                v.span(),
                key("vips"),
                format!("{a} is the match network of no firewall-mark service of this file"),
            ),
            Ok(a) if vips.contains(&a) => {
                e.error(v.span(), key("vips"), format!("{a} is listed twice"))
            }
            Ok(a) => vips.push(a),
            Err(why) => e.error(v.span(), key("vips"), why),
        }
    }
    let range = DurationRange::Within(Duration::ZERO, Duration::from_secs(3600));
    let drain_time = e
        .duration(&b.drain_time, &key("drain_time"), range, DEFAULT_DRAIN_TIME)
        .unwrap_or(DEFAULT_DRAIN_TIME);
    let range = DurationRange::Within(Duration::from_millis(100), Duration::from_secs(3600));
    let check_interval = e
        .duration(
            &b.check_interval,
            &key("check_interval"),
            range,
            DEFAULT_CHECK_INTERVAL,
        )
        .unwrap_or(DEFAULT_CHECK_INTERVAL);
    let mut attributes = RouteAttributes::default();
    if b.med.is_some() {
        attributes.med = e
            .integer(&b.med, &key("med"), 0..=u32::MAX as i64, 0)
            .map(|m| m as u32);
    }
    for c in b.communities.iter().flatten() {
        match parse_community(c.get_ref()) {
            Some(pair) => attributes.communities.push(pair),
            None => e.error(
                c.span(),
                key("communities"),
                format!("\"{}\" is not ASN:VALUE (each 0..=65535)", c.get_ref()),
            ),
        }
    }
    for asn in b.as_path_prepend.iter().flatten() {
        if let Some(a) = e.integer(
            &Some(asn.clone()),
            &key("as_path_prepend"),
            1..=u32::MAX as i64,
            1,
        ) {
            attributes.as_path_prepend.push(a as u32);
        }
    }
    if let Some(n) = &b.next_hop {
        match n.get_ref().trim().parse::<Ipv4Addr>() {
            Ok(a) if is_unicast(a) => attributes.next_hop = Some(a),
            _ => e.error(
                n.span(),
                key("next_hop"),
                format!("\"{}\" is not a unicast IPv4 address", n.get_ref()),
            ),
        }
    }
    BgpConfig {
        speaker,
        command,
        api,
        vips,
        drain_time,
        check_interval,
        attributes,
    }
}

/// "65000:100" as (65000, 100).
fn parse_community(text: &str) -> Option<(u16, u16)> {
    let (asn, value) = text.trim().split_once(':')?;
    Some((asn.parse().ok()?, value.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const SERVICE: &str = r#"
[director]
interface = "eth0"

[[service]]
vip = "10.9.0.1:80"
scheduler = "mh"

[[service.real]]
address = "10.2.0.21"

[[service]]
fwmark = 1
match = [{ vip = "10.9.1.0/24", ports = [80] }, { vip = "10.9.1.0/24", ports = [443] }]

[[service.real]]
address = "10.2.0.21"
"#;

    fn parse(bgp: &str) -> Result<Config, String> {
        Config::parse(&format!("{SERVICE}\n{bgp}"), Path::new("lb.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_announce_every_vip_through_gobgp() {
        let c = parse("[bgp]\n").unwrap().bgp.unwrap();
        assert_eq!(c.speaker, super::SpeakerKind::GoBgp);
        assert_eq!(c.command, "gobgp");
        assert_eq!(c.api.to_string(), "127.0.0.1:50051");
        assert!(c.vips.is_empty());
        assert_eq!(c.drain_time, super::DEFAULT_DRAIN_TIME);
        assert_eq!(c.attributes, super::RouteAttributes::default());
    }

    #[test]
    fn attributes_are_read() {
        let c = parse(
            "[bgp]\nvips = [\"10.9.0.1\"]\nmed = 20\ncommunities = [\"65000:100\"]\nas_path_prepend = [65001, 65001]\n\
             next_hop = \"10.2.0.11\"\ndrain_time = \"500ms\"\n",
        )
        .unwrap()
        .bgp
        .unwrap();
        assert_eq!(c.vips, [super::Prefix::host("10.9.0.1".parse().unwrap())]);
        assert_eq!(c.attributes.med, Some(20));
        assert_eq!(c.attributes.communities, [(65000, 100)]);
        assert_eq!(c.attributes.as_path_prepend, [65001, 65001]);
        assert_eq!(c.attributes.next_hop, Some("10.2.0.11".parse().unwrap()));
        assert_eq!(c.drain_time, std::time::Duration::from_millis(500));
    }

    #[test]
    fn mistakes_name_line_and_key() {
        let e = parse(
            "[bgp]\nvips = [\"10.9.0.2\"]\ncommunities = [\"65000\"]\nspeaker = \"quagga\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("bgp.vips: 10.9.0.2 is the VIP of no service of this file"),
            "{e}"
        );
        assert!(
            e.contains("bgp.communities: \"65000\" is not ASN:VALUE"),
            "{e}"
        );
        assert!(
            e.contains("bgp.speaker: \"quagga\" is not a speaker"),
            "{e}"
        );
        assert!(e.contains("lb.toml:21:"), "{e}");
    }

    #[test]
    fn a_firewall_marks_networks_may_be_chosen() {
        let c = parse("[bgp]\nvips = [\"10.9.1.0/24\", \"10.9.0.1/32\"]\n")
            .unwrap()
            .bgp
            .unwrap();
        assert_eq!(
            c.vips,
            [
                "10.9.1.0/24".parse().unwrap(),
                super::Prefix::host("10.9.0.1".parse().unwrap())
            ]
        );
        for (vips, why) in [
            (
                "10.9.1.0/25",
                "bgp.vips: 10.9.1.0/25 is the match network of no firewall-mark service of this file",
            ),
            (
                "10.9.1.1/24",
                "bgp.vips: \"10.9.1.1/24\" is not an IPv4 address or network",
            ),
            (
                "2001:db8:9::/64",
                "bgp.vips: \"2001:db8:9::/64\" is not an IPv4 address or network",
            ),
        ] {
            let e = parse(&format!("[bgp]\nvips = [\"{vips}\"]\n")).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
