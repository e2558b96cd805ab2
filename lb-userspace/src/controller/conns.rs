//! The connection table's entries: when they expire, and connection
//! sync's records, sent and installed. (`sweep` tends the table.)

use std::{collections::BTreeMap, net::SocketAddr};

use lb_common::{Conn, conn_state};

use super::{Controller, sweep::TEMPLATE_REARM_SECS};
use crate::{
    datapath::ConnTable,
    sync::{
        ChangeTracker, SyncRecord,
        check::{Refusal, ServiceView, check_record, check_shape},
    },
};

/// What became of a synced datagram's records.
#[derive(Debug, Default)]
pub struct InstallReport {
    pub installed: usize,
    /// The records not installed, and why.
    pub refused: Vec<(Refusal, SyncRecord)>,
}

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
    /// Each service's port and firewall mark (0: none), by service id.
    services: BTreeMap<u32, (u16, u32)>,
    /// Each real server's address and port, by its id.
    reals: BTreeMap<u32, SocketAddr>,
}

impl SyncView {
    /// The entries to send after this scan (new, changed, due for a
    /// refresh), as records the other director can place in its own
    /// tables, pending in `tracker` as one batch until the sender says they
    /// went out.
    pub fn records(&self, tracker: &mut ChangeTracker) -> (u64, Vec<SyncRecord>) {
        let scan = tracker.scan(self.conns.iter(), self.now);
        let records = scan
            .changes
            .into_iter()
            .filter_map(|(key, conn, _)| {
                let (port, fwmark) = *self.services.get(&conn.service_id)?;
                let real = *self.reals.get(&conn.real_id)?;
                SyncRecord::from_entry(&key, &conn, port, fwmark, real, self.now)
            })
            .collect();
        (scan.batch, records)
    }
}

impl Controller {
    /// Connection sync, sending side: what [`SyncView::records`] needs.
    pub fn sync_view(&self) -> SyncView {
        // A firewall-mark service's entries carry its mark, as IPVS's
        // (`ip_vs_sync_conn` sends `cp->fwmark`, templates included).
        let services = self
            .tables
            .wanted()
            .filter_map(|w| Some((self.tables.service_id(&w.key())?, (w.port, w.fwmark))))
            .collect();
        let reals = self
            .tables
            .real_ids()
            .filter_map(|id| {
                let real = self.tables.real(id)?;
                let ip = lb_common::ip_from_words(real.addr, real.family);
                Some((id, SocketAddr::new(ip, u16::from_be(real.port))))
            })
            .collect();
        SyncView { conns: self.datapath.conn_table(), now: self.datapath.now_ns(), services, reals }
    }

    /// Connection sync, receiving side: installs the other director's
    /// entries with this director's ids (so the connections continue to the
    /// same real servers after a failover), each checked first
    /// ([`crate::sync::check`]): what it refuses is not installed.
    pub fn install_synced(&mut self, records: &[SyncRecord]) -> InstallReport {
        let now = self.datapath.now_ns();
        let state_timeouts = self.director_value().state_timeouts;
        let mut report = InstallReport::default();
        for r in records {
            let (service_id, real_id) = match self.synced_real(r, &state_timeouts) {
                Ok(ids) => ids,
                Err(refusal) => {
                    report.refused.push((refusal, *r));
                    continue;
                }
            };
            // A full-NAT connection's local end is this director's own:
            // not synced (the peer could not use it).
            if self.tables.real(real_id).is_some_and(|d| d.forwarding == lb_common::forwarding::FULLNAT) {
                continue;
            }
            let flow = r.flow_key();
            let conn = r.conn(real_id, service_id, now);
            if is_expired(&conn, now) {
                continue;
            }
            let old = self.datapath.connection(&flow);
            if self.datapath.set_connection(&flow, &conn).is_err() {
                continue;
            }
            // A NAT connection's replies are found by their own key.
            if let Some(real) = self.tables.real(real_id)
                && real.forwarding == lb_common::forwarding::NAT
                && let Err(e) = self.datapath.set_nat_reply(&flow.nat_reply(real.addr, real.port), &flow)
            {
                tracing::debug!("NAT reply entry of a synced connection: {e:#}");
            }
            // The entry it replaces was counted until now (expired or not:
            // the sweeper counts expired ones out when it removes them).
            if let Some(old) = old {
                self.datapath.add_real_conns(old.real_id, old.state, -1);
            }
            self.datapath.add_real_conns(real_id, conn.state, 1);
            report.installed += 1;
        }
        report
    }

    /// The (service, real server) ids a synced record is for here, if it passes
    /// the checks: its service and real server (address and port, as
    /// IPVS's `ip_vs_find_dest`) exist here, its state, timeout and ports
    /// fit them.
    fn synced_real(&self, r: &SyncRecord, state_timeouts: &[u32; conn_state::COUNT]) -> Result<(u32, u32), Refusal> {
        check_shape(r)?;
        let key = r.service_key();
        let service = self.tables.wanted().find(|w| w.key() == key).ok_or(Refusal::UnknownService)?;
        let service_id = self.tables.service_id(&key).ok_or(Refusal::UnknownService)?;
        let view = ServiceView {
            port: service.port,
            fwmark: service.fwmark,
            matches: &service.matches,
            persistence: service
                .options
                .persistence_timeout
                .map(|t| (t.max(TEMPLATE_REARM_SECS), service.options.persistence_netmask)),
        };
        check_record(r, &view, state_timeouts)?;
        let (addr, port) = (lb_common::ip_words(r.real.ip()).0, r.real.port().to_be());
        let real_id = self
            .tables
            .service_reals(&key)
            .iter()
            .copied()
            .find(|&d| self.tables.real(d).is_some_and(|v| v.addr == addr && v.port == port))
            .ok_or(Refusal::UnknownReal)?;
        Ok((service_id, real_id))
    }
}
