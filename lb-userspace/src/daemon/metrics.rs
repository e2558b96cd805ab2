//! The metrics snapshot: what the daemon knows, gathered once a period
//! (`Event::PublishMetrics`) for the HTTP server to answer scrapes from.

use std::{sync::Arc, time::SystemTime};

use tokio::sync::watch;

use super::{Daemon, lock};
use crate::{
    metrics::{Snapshot, SyncSnapshot},
    sync::SyncStats,
};

/// The channel the daemon publishes on, and the server's end of it.
pub fn channel() -> (watch::Sender<Arc<Snapshot>>, watch::Receiver<Arc<Snapshot>>) {
    watch::channel(Arc::new(Snapshot::default()))
}

impl Daemon {
    /// Publishes metrics from now on, on `to`: at once, then at each
    /// [`super::Event::PublishMetrics`].
    pub fn publish_metrics_on(&mut self, to: watch::Sender<Arc<Snapshot>>) {
        self.metrics = Some(to);
        self.publish_metrics();
    }

    pub(super) fn publish_metrics(&self) {
        let Some(to) = &self.metrics else { return };
        let (table, reasons, conn_entries) = {
            let c = lock(&self.shared);
            let mut table = c.table_snapshot();
            // The size in force, as lbctl shows it.
            table.conn_table_size = c.datapath.conn_table_size();
            (table, c.reason_counters(), c.conn_entries())
        };
        let sync = self.sync.as_ref().map(|link| {
            let stats: Arc<SyncStats> = link.stats();
            SyncSnapshot { counters: stats.counters(), last_installed: stats.last_installed() }
        });
        let snapshot = Snapshot {
            table,
            health: self.monitor.observed(),
            reasons,
            conn_entries,
            conn_evictions: self.sweeper.evictions(),
            vrrp: self.instances.iter().map(|i| i.status()).collect(),
            sync,
            reloads: self.reloads,
            taken: Some(SystemTime::now()),
        };
        to.send_replace(Arc::new(snapshot));
    }
}
