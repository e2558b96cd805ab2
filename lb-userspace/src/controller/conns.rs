//! The connection table's entries: when they expire, and connection
//! sync's records, sent and installed. (`sweep` tends the table.)

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use lb_common::{Conn, ipv4_octets};

use super::Controller;
use crate::{
    datapath::ConnTable,
    sync::{ChangeTracker, SyncRecord},
};

/// Seconds until the entry expires (0 if it has).
pub(super) fn expires_in(conn: &Conn, now: u64) -> u32 {
    let deadline = conn.last_seen_ns + conn.timeout as u64 * 1_000_000_000;
    (deadline.saturating_sub(now) / 1_000_000_000) as u32
}

pub(super) fn is_expired(conn: &Conn, now: u64) -> bool {
    now.saturating_sub(conn.last_seen_ns) > conn.timeout as u64 * 1_000_000_000
}

/// What connection sync's sending side needs to turn entries into records,
/// taken under the controller's lock; the table is walked without it
/// ([`SyncView::records`]).
pub struct SyncView {
    conns: ConnTable,
    now: u64,
    /// Each service's port, by service id.
    ports: BTreeMap<u32, u16>,
    /// Each real server's address and port, by dest id.
    reals: BTreeMap<u32, SocketAddr>,
}

impl SyncView {
    /// The entries new or changed since the last scan, as records the
    /// other director can place in its own tables.
    pub fn records(&self, tracker: &mut ChangeTracker) -> Vec<SyncRecord> {
        tracker
            .scan(self.conns.iter(), self.now)
            .into_iter()
            .filter_map(|(key, conn, _)| {
                let port = *self.ports.get(&conn.service_id)?;
                let real = *self.reals.get(&conn.dest_id)?;
                SyncRecord::from_entry(&key, &conn, port, real, self.now)
            })
            .collect()
    }
}

impl Controller {
    /// Connection sync, sending side: what [`SyncView::records`] needs.
    pub fn sync_view(&self) -> SyncView {
        let ports = self.tables.wanted().filter_map(|w| Some((self.tables.service_id(&w.key())?, w.port))).collect();
        let reals = self
            .tables
            .dest_ids()
            .filter_map(|id| {
                let dest = self.tables.dest(id)?;
                let ip = IpAddr::V4(Ipv4Addr::from(ipv4_octets(dest.addr)));
                Some((id, SocketAddr::new(ip, u16::from_be(dest.port))))
            })
            .collect();
        SyncView { conns: self.datapath.conn_table(), now: self.datapath.now_ns(), ports, reals }
    }

    /// Connection sync, receiving side: installs the other director's
    /// entries with this director's ids (so the connections continue to the
    /// same real servers after a failover). Returns how many were installed
    /// and how many name a service or server unknown here.
    pub fn install_synced(&mut self, records: &[SyncRecord]) -> (usize, usize) {
        let now = self.datapath.now_ns();
        let (mut installed, mut unknown) = (0, 0);
        for r in records {
            let key = r.service_key();
            let Some(service_id) = self.tables.service_id(&key) else {
                unknown += 1;
                continue;
            };
            let real = match r.real.ip() {
                IpAddr::V4(a) => lb_common::ipv4_words(a.octets()),
                IpAddr::V6(_) => {
                    unknown += 1;
                    continue;
                }
            };
            let Some(dest_id) = self.tables.service_dests(&key).iter().copied().find(|&d| self.tables.dest(d).is_some_and(|v| v.addr == real))
            else {
                unknown += 1;
                continue;
            };
            let flow = r.flow_key();
            let conn = r.conn(dest_id, service_id, now);
            if is_expired(&conn, now) {
                continue;
            }
            let old = self.datapath.connection(&flow);
            if self.datapath.set_connection(&flow, &conn).is_err() {
                continue;
            }
            // The entry it replaces was counted until now (expired or not:
            // the sweeper counts expired ones out when it removes them).
            if let Some(old) = old {
                self.datapath.add_dest_conns(old.dest_id, old.state, -1);
            }
            self.datapath.add_dest_conns(dest_id, conn.state, 1);
            installed += 1;
        }
        (installed, unknown)
    }
}
