//! The TOML config: parsed and validated completely before anything touches
//! the kernel. Every error names the file, the line and the key.
//!
//!
//! This file holds the validated config's types; the rest, each on top of
//! the one before:
//!
//! - [`check`]: the checker every table reports through, the one error
//!   type, and the values several tables share (durations, interface
//!   names, unicast addresses);
//! - `raw`: the file as written, with spans;
//! - `director`, and `service` with the service's `options`, `real`
//!   servers and `health` settings: one check per table (the
//!   `health_check`, `[[vrrp]]`, `[sync]` and `[metrics]` tables are
//!   checked by [`crate::health`], [`crate::vrrp`], [`crate::sync`] and
//!   [`crate::metrics`]);
//! - `load`: [`Config::load`] and [`Config::parse`].

pub mod check;
mod director;
mod fwmark;
mod health;
mod load;
mod options;
mod raw;
mod real;
mod service;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

pub use self::check::{ConfigError, ConfigErrors};
use crate::{
    health::{HealthCheck, Quorum},
    model::{Forwarding, MarkMatch, Protocol, Scheduler, ServiceId, ServiceOptions, Timeouts},
    bgp::BgpConfig,
    metrics::MetricsConfig,
    sync::config::SyncConfig,
    vrrp::VrrpConfig,
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
    /// VIPs announced through a BGP daemon (active-active directors).
    pub bgp: Option<BgpConfig>,
    /// Where the Prometheus metrics are served, if anywhere.
    pub metrics: Option<MetricsConfig>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DirectorConfig {
    pub interface: String,
    /// Where `interface` is set, for errors about the interface itself.
    pub interface_line: usize,
    /// Other interfaces carrying the program (real servers' or NAT
    /// clients' sides), each with the line it is named on.
    pub interfaces: Vec<(String, usize)>,
    pub xdp_mode: XdpMode,
    pub conn_table_size: u32,
    /// bpffs directory the maps and the XDP link are pinned in; `None`
    /// (config `pin_path = ""`) pins nothing.
    pub pin_path: Option<PathBuf>,
    pub control_socket: PathBuf,
    /// Besides root, the members of this group may use the control socket
    /// (mode 0660 then, else 0600).
    pub control_group: Option<ControlGroup>,
    pub timeouts: Timeouts,
    /// Outer source address of TUN packets; default: the interface's own
    /// (first non-VIP) address.
    pub tun_source: Option<Ipv4Addr>,
    /// The same for IPv6 TUN packets; default: the interface's own (first
    /// non-VIP, not link-local) IPv6 address.
    pub tun_source6: Option<Ipv6Addr>,
    /// Full NAT's local addresses (the director's own), each with its
    /// ports 1024..=65535.
    pub fullnat_source: Vec<Ipv4Addr>,
    /// Where `fullnat_source` is set (0: not set).
    pub fullnat_source_line: usize,
    /// ICMP errors the datapath sends itself, at most this many a second
    /// (`lb_common::Director::icmp_rate_limit`); 0 sends none.
    pub icmp_rate_limit: u32,
}

/// A group of this host, by name and id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlGroup {
    pub name: String,
    pub gid: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ServiceConfig {
    pub line: usize,
    /// Tcp for a firewall-mark service (its matches have their own).
    pub protocol: Protocol,
    /// IPv6 only with DR forwarding, for now (the datapath's IPv6 program
    /// routes; it neither tunnels nor rewrites addresses). A firewall-mark
    /// service's is the unspecified address of its family.
    pub vip: IpAddr,
    /// 0 = every port of the VIP (and for a firewall-mark service).
    pub port: u16,
    /// 0, or the firewall mark naming this service (ipvsadm's `-f`).
    pub fwmark: u32,
    /// A firewall-mark service's packets: what the firewall rule marking
    /// them would have matched. Only the config file gives them.
    pub matches: Vec<MarkMatch>,
    pub scheduler: Scheduler,
    pub options: ServiceOptions,
    pub forwarding: Forwarding,
    pub reals: Vec<RealConfig>,
    /// The service's own health check (what a real server without
    /// overrides gets; also given to servers added with lbctl).
    pub health: HealthCheck,
    /// Takes the service's connections while every real server is down.
    /// Of the VIP's family.
    pub sorry_server: Option<IpAddr>,
    /// Live weight below which the service counts as down (keepalived).
    pub quorum: Quorum,
    pub quorum_up: Option<String>,
    pub quorum_down: Option<String>,
    /// A failed server keeps its open connections (default: they move to a
    /// live server on their next packet, IPVS's expire_nodest_conn).
    pub drain_on_failure: bool,
}

impl ServiceConfig {
    /// Whether packets to `addr` may be this service's: its VIP, or for a
    /// firewall-mark service an address of one of its matches' networks.
    pub fn covers(&self, addr: IpAddr) -> bool {
        if self.fwmark == 0 {
            return self.vip == addr;
        }
        self.matches.iter().any(|m| {
            m.net.is_ipv6() == addr.is_ipv6()
                && crate::model::net_bits(m.net, m.prefix_len) == crate::model::net_bits(addr, m.prefix_len)
        })
    }

    pub fn id(&self) -> ServiceId {
        ServiceId { protocol: self.protocol, vip: self.vip, port: self.port, fwmark: self.fwmark }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RealConfig {
    /// Where its `[[service.real]]` table starts.
    pub line: usize,
    /// Where `address` is set, for errors about the address itself.
    pub address_line: usize,
    /// Of the VIP's family.
    pub address: IpAddr,
    /// The server's port: the VIP's, but for NAT, which may map it
    /// (`port`, ipvsadm's `-r RIP:RPORT -m`).
    pub port: u16,
    pub weight: u32,
    pub forwarding: Forwarding,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    /// The service's check with this server's overrides (kind none: always up).
    pub health: HealthCheck,
}
