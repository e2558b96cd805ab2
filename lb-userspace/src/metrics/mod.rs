//! Prometheus metrics (`[metrics] listen = "127.0.0.1:9469"`): the daemon
//! publishes a [`Snapshot`] of what it knows every second
//! (`daemon::metrics`); the HTTP server ([`server`]) answers each scrape
//! from the latest one ([`encode`]), so a scrape never waits for the main
//! loop nor holds the controller's lock.

mod config;
pub mod encode;
pub mod server;

use std::{collections::BTreeMap, time::SystemTime};

use lb_ipvsadm::{snapshot::Table, vrrp::VrrpStatus};

pub use self::config::{DEFAULT_PORT, MetricsConfig, RawMetrics};
use crate::health::Observed;

/// How often the daemon publishes a snapshot.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// lbd's version and the commit it was built from (`--version`, `lb_build_info`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("LB_COMMIT");

/// What lbd knows at one moment, as plain data.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// What `lbctl -L --stats --json` shows: services, real servers,
    /// counters, connection counts, weights.
    pub table: Table,
    /// The checked real servers (the others are always up).
    pub health: Vec<Observed>,
    /// The datapath's reason counters and lbd's `tun_no_route`
    /// (`lbctl --counters`, without `sync_*`).
    pub reasons: BTreeMap<String, u64>,
    /// Live connection-table entries at the last complete sweep pass.
    pub conn_entries: Option<u64>,
    /// Entries the connection table's LRU evicted (derived by the sweep:
    /// `controller::Sweeper::evictions`).
    pub conn_evictions: u64,
    pub vrrp: Vec<VrrpStatus>,
    pub sync: Option<SyncSnapshot>,
    pub reloads: Reloads,
    /// When the snapshot was taken.
    pub taken: Option<SystemTime>,
}

/// Connection sync's counters by their `lbctl --counters` names, and when
/// a received entry was last installed.
#[derive(Clone, Debug, Default)]
pub struct SyncSnapshot {
    pub counters: BTreeMap<String, u64>,
    pub last_installed: Option<SystemTime>,
}

/// SIGHUP reloads since lbd started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reloads {
    pub succeeded: u64,
    pub failed: u64,
    /// When the last one was, and whether it succeeded.
    pub last: Option<(SystemTime, bool)>,
}

impl Reloads {
    pub fn record(&mut self, ok: bool) {
        if ok {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        self.last = Some((SystemTime::now(), ok));
    }
}
