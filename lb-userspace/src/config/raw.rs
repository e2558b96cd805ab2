//! The config file as written, each value with its span for error
//! messages; `load` checks it table by table.

use serde::Deserialize;
use toml::Spanned;

use crate::{bgp::RawBgp, health::RawHealthCheck, metrics::RawMetrics, sync::config::RawSync, vrrp::RawVrrp};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) director: Spanned<RawDirector>,
    #[serde(default)]
    pub(super) service: Vec<Spanned<RawService>>,
    #[serde(default)]
    pub(super) vrrp: Vec<Spanned<RawVrrp>>,
    pub(super) sync: Option<Spanned<RawSync>>,
    pub(super) bgp: Option<Spanned<RawBgp>>,
    pub(super) metrics: Option<Spanned<RawMetrics>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirector {
    pub(super) interface: Spanned<String>,
    pub(super) interfaces: Option<Vec<Spanned<String>>>,
    pub(super) xdp_mode: Option<Spanned<String>>,
    pub(super) conn_table_size: Option<Spanned<i64>>,
    pub(super) pin_path: Option<Spanned<String>>,
    pub(super) control_socket: Option<Spanned<String>>,
    pub(super) control_group: Option<Spanned<String>>,
    pub(super) timeout_tcp: Option<Spanned<i64>>,
    pub(super) timeout_tcpfin: Option<Spanned<i64>>,
    pub(super) timeout_udp: Option<Spanned<i64>>,
    pub(super) tun_source: Option<Spanned<String>>,
    pub(super) tun_source6: Option<Spanned<String>>,
    pub(super) fullnat_source: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) icmp_rate_limit: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    /// Absent for a firewall-mark service.
    pub(super) vip: Option<Spanned<String>>,
    pub(super) fwmark: Option<Spanned<i64>>,
    /// A firewall-mark service's packets.
    #[serde(rename = "match")]
    pub(super) matches: Option<Spanned<Vec<Spanned<RawMatch>>>>,
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) scheduler: Option<Spanned<String>>,
    pub(super) sched_flags: Option<Spanned<Vec<String>>>,
    pub(super) forwarding: Option<Spanned<String>>,
    pub(super) persistence_timeout: Option<Spanned<i64>>,
    pub(super) persistence_netmask: Option<Spanned<RawNetmask>>,
    pub(super) sloppy_tcp: Option<Spanned<bool>>,
    pub(super) stateless_fallback: Option<Spanned<bool>>,
    pub(super) health_check: Option<Spanned<RawHealthCheck>>,
    pub(super) sorry_server: Option<Spanned<String>>,
    pub(super) quorum: Option<Spanned<i64>>,
    pub(super) hysteresis: Option<Spanned<i64>>,
    pub(super) quorum_up: Option<Spanned<String>>,
    pub(super) quorum_down: Option<Spanned<String>>,
    pub(super) drain_on_failure: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) real: Vec<Spanned<RawReal>>,
}

/// One `match` of a firewall-mark service.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub(super) vip: Spanned<String>,
    pub(super) ports: Spanned<Vec<Spanned<RawPort>>>,
    pub(super) protocol: Option<Spanned<String>>,
}

/// A port, or a range of them as "8000-8080".
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawPort {
    Number(i64),
    Range(String),
}

/// `persistence_netmask`: a dotted mask (IPv4 services) or a prefix length
/// (IPv6 services, as ipvsadm's `-M`), written as a number or a string.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawNetmask {
    Text(String),
    PrefixLength(i64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReal {
    pub(super) address: Spanned<String>,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) weight: Option<Spanned<i64>>,
    pub(super) forwarding: Option<Spanned<String>>,
    pub(super) upper_threshold: Option<Spanned<i64>>,
    pub(super) lower_threshold: Option<Spanned<i64>>,
    pub(super) health_check: Option<Spanned<RawHealthCheck>>,
}
