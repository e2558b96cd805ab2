//! The live state as lbd reports it over the control socket and lbctl prints
//! it: what `ipvsadm -L` would show, in plain data.

use std::net::IpAddr;

use lb_common::{Forwarding, Protocol};
use serde::{Deserialize, Serialize};

use crate::command::{Netmask, VirtualService};

/// Cumulative counters (ipvsadm `--stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// Estimated rates per second (ipvsadm `--rate`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rates {
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Real {
    pub address: IpAddr,
    /// The real server's port (for DR and TUN the VIP port; 0 for an
    /// every-port service, and as given, 0 by default, for a firewall-mark
    /// service's).
    pub port: u16,
    pub forwarding: Forwarding,
    pub weight: u32,
    pub active_conns: u64,
    pub inactive_conns: u64,
    pub persistent_conns: u64,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    pub stats: Stats,
    pub rates: Rates,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// What names the service: protocol, VIP and port (0 = every port of
    /// the VIP), or a firewall mark and an address family. In JSON
    /// `"id":{"address":{"protocol":"tcp","addr":"10.0.0.1","port":80}}` or
    /// `"id":{"fwmark":{"mark":1,"family":"ipv4"}}`.
    pub id: VirtualService,
    pub scheduler: String,
    /// Scheduler flags as ipvsadm names them (`sh-fallback`, `sh-port`, ...).
    pub sched_flags: Vec<String>,
    /// Seconds; `None` when not persistent.
    pub persistence_timeout: Option<u32>,
    /// Of the service's family (a prefix length for IPv6, as ipvsadm's).
    pub persistence_netmask: Option<Netmask>,
    pub stats: Stats,
    pub rates: Rates,
    /// In IPVS's own order (the last added first); formatters sort as
    /// ipvsadm does.
    pub reals: Vec<Real>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Size of the connection table (`size=` in ipvsadm's header line).
    pub conn_table_size: u32,
    pub services: Vec<Service>,
}

/// One connection-table entry (ipvsadm `-L -c`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub protocol: Protocol,
    /// Seconds until the entry expires.
    pub expires_in: u32,
    pub state: String,
    pub client: IpAddr,
    pub client_port: u16,
    pub vip: IpAddr,
    pub vport: u16,
    pub real: IpAddr,
    pub real_port: u16,
    /// A persistence template rather than a connection.
    pub template: bool,
    /// Set on the persistence templates of a firewall-mark service only:
    /// the mark. IPVS keeps such a template under protocol `IP` with the
    /// mark where the virtual address goes and port 0, and ipvsadm shows
    /// it so (`IP ... 0.0.0.1:0`; `[0:4::]:0` for mark 4 of an IPv6
    /// service: the mark is the first 32 bits): `protocol`, `vip` and
    /// `vport` are then not shown. `None` for every other entry, the
    /// connections of firewall-mark services included (they show their own
    /// protocol and virtual address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
}

/// `ipvsadm --set` / `-L --timeout`, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcpfin: u32,
    pub udp: u32,
}

impl Default for Timeouts {
    /// IPVS's own.
    fn default() -> Self {
        Self { tcp: 900, tcpfin: 120, udp: 300 }
    }
}
