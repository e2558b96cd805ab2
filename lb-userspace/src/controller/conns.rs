//! The connection table: sweeps (expiry, persistence templates, the
//! servers' connection counts and their drift) and connection sync's
//! records, sent and installed.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use anyhow::Result;
use lb_common::{Conn, FlowKey, Service, conn_state, flow_kind, ipv4_octets};

use super::Controller;
use crate::{
    datapath::CountField,
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

/// How long IPVS re-arms a persistence template that outlived its timeout
/// but still controls connections (`ip_vs_conn_expire`).
const TEMPLATE_REARM_SECS: u32 = 60;

/// Seconds until the entry expires (0 if it has).
pub(super) fn expires_in(conn: &Conn, now: u64) -> u32 {
    let deadline = conn.last_seen_ns + conn.timeout as u64 * 1_000_000_000;
    (deadline.saturating_sub(now) / 1_000_000_000) as u32
}

pub(super) fn is_expired(conn: &Conn, now: u64) -> bool {
    now.saturating_sub(conn.last_seen_ns) > conn.timeout as u64 * 1_000_000_000
}

impl Controller {
    /// Connection sync, sending side: the entries to send after this scan
    /// (new, changed, due for a refresh), as records the other director can
    /// place in its own tables, pending in `tracker` as one batch until the
    /// sender says they went out.
    pub fn sync_records(&self, tracker: &mut ChangeTracker) -> (u64, Vec<SyncRecord>) {
        let now = self.datapath.now_ns();
        let Ok(entries) = self.datapath.connections() else { return (0, Vec::new()) };
        let ports: BTreeMap<u32, u16> =
            self.tables.wanted().filter_map(|w| Some((self.tables.service_id(&w.key())?, w.port))).collect();
        let scan = tracker.scan(entries, now);
        let records = scan
            .changes
            .into_iter()
            .filter_map(|(key, conn, _)| {
                let port = *ports.get(&conn.service_id)?;
                let dest = self.tables.dest(conn.dest_id)?;
                let real = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ipv4_octets(dest.addr))), u16::from_be(dest.port));
                SyncRecord::from_entry(&key, &conn, port, real, now)
            })
            .collect();
        (scan.batch, records)
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
            let (service_id, dest_id) = match self.synced_dest(r, &state_timeouts) {
                Ok(ids) => ids,
                Err(refusal) => {
                    report.refused.push((refusal, *r));
                    continue;
                }
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
            report.installed += 1;
        }
        report
    }

    /// The (service, dest) ids a synced record is for here, if it passes
    /// the checks: its service and real server (address and port, as
    /// IPVS's `ip_vs_find_dest`) exist here, its state, timeout and ports
    /// fit them.
    fn synced_dest(&self, r: &SyncRecord, state_timeouts: &[u32; conn_state::COUNT]) -> Result<(u32, u32), Refusal> {
        check_shape(r)?;
        let key = r.service_key();
        let service = self.tables.wanted().find(|w| w.key() == key).ok_or(Refusal::UnknownService)?;
        let service_id = self.tables.service_id(&key).ok_or(Refusal::UnknownService)?;
        let view = ServiceView {
            port: service.port,
            persistence: service
                .options
                .persistence_timeout
                .map(|t| (t.max(TEMPLATE_REARM_SECS), service.options.persistence_netmask)),
        };
        check_record(r, &view, state_timeouts)?;
        let IpAddr::V4(real) = r.real.ip() else { return Err(Refusal::UnknownReal) };
        let (addr, port) = (lb_common::ipv4_words(real.octets()), r.real.port().to_be());
        let dest_id = self
            .tables
            .service_dests(&key)
            .iter()
            .copied()
            .find(|&d| self.tables.dest(d).is_some_and(|v| v.addr == addr && v.port == port))
            .ok_or(Refusal::UnknownReal)?;
        Ok((service_id, dest_id))
    }

    /// Removes expired entries (taking them out of their server's counts),
    /// corrects counts that drifted (entries the LRU table evicted), and
    /// frees the slots of removed servers no connection uses any more.
    pub fn sweep(&mut self) -> Result<()> {
        let now = self.datapath.now_ns();
        let mut used_dests = BTreeSet::new();
        let mut used_services = BTreeSet::new();
        let mut exact: BTreeMap<(u32, CountField), i64> = BTreeMap::new();
        // Persistent services by id: a template stays alive while any
        // connection it placed does (IPVS re-arms a template that still
        // controls connections).
        let persistent: BTreeMap<u32, Service> = self
            .tables
            .installed_values()
            .filter(|s| s.persistence_timeout > 0)
            .map(|s| (s.id, *s))
            .collect();
        let mut controlling: BTreeMap<FlowKey, u32> = BTreeMap::new();
        // Expired templates wait until we know whether they still control
        // a connection.
        let mut expired_templates: Vec<FlowKey> = Vec::new();
        for (key, conn) in self.datapath.connections()? {
            if is_expired(&conn, now) && key.kind == flow_kind::TEMPLATE {
                expired_templates.push(key);
                continue;
            }
            let conn = if is_expired(&conn, now) {
                match self.remove_if_expired(&key, now)? {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                conn
            };
            used_dests.insert(conn.dest_id);
            used_services.insert(conn.service_id);
            *exact.entry((conn.dest_id, count_field(&key, conn.state))).or_default() += 1;
            if key.kind != flow_kind::TEMPLATE
                && let Some(svc) = persistent.get(&conn.service_id)
            {
                controlling.insert(svc.template_key(&key), conn.dest_id);
            }
        }
        // As IPVS: a template expires `persistence_timeout` after its last
        // use, unless it still controls connections; then it is re-armed for
        // another 60 s.
        for key in expired_templates {
            let Some(mut template) = self.datapath.connection(&key) else { continue };
            if controlling.get(&key) == Some(&template.dest_id) {
                template.last_seen_ns = now;
                template.timeout = TEMPLATE_REARM_SECS;
                self.datapath.set_connection(&key, &template)?;
            } else {
                match self.remove_if_expired(&key, now)? {
                    Some(alive) => template = alive,
                    None => continue,
                }
            }
            used_dests.insert(template.dest_id);
            used_services.insert(template.service_id);
            *exact.entry((template.dest_id, CountField::Persistent)).or_default() += 1;
        }
        // What the datapath counts against what the table holds. A gap seen
        // by one sweep can be a connection that came or changed while we
        // walked; a gap that stays is drift, and is closed.
        let mut gaps = BTreeMap::new();
        for id in self.tables.dest_ids() {
            let kept = self.datapath.dest_conns(id);
            for (field, value) in
                [(CountField::Active, kept.active), (CountField::Inactive, kept.inactive), (CountField::Persistent, kept.persistent)]
            {
                gaps.insert((id, field), value - exact.get(&(id, field)).copied().unwrap_or(0));
            }
        }
        for ((id, field), correction) in self.drift.observe(gaps) {
            tracing::debug!("connection count of dest {id} ({field:?}) corrected by {correction}");
            self.datapath.correct_dest_conns(id, field, correction);
        }
        let ops = self.tables.release_unreferenced(&used_dests, &used_services);
        self.datapath.execute(&ops)
    }

    /// Deletes an expired entry (taking it out of its server's counts),
    /// checking again right before: the datapath may have reused it for a
    /// new connection meanwhile (then it is stamped after the sweep's `now`,
    /// and not expired). Returns the entry if it is alive after all.
    fn remove_if_expired(&mut self, key: &FlowKey, now: u64) -> Result<Option<Conn>> {
        match self.datapath.connection(key) {
            Some(c) if is_expired(&c, now) => {
                self.datapath.remove_connection(key)?;
                self.datapath.add_dest_conns(c.dest_id, c.state, -1);
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

fn count_field(key: &FlowKey, state: u8) -> CountField {
    if key.kind == flow_kind::TEMPLATE {
        CountField::Persistent
    } else if conn_state::is_active(state) {
        CountField::Active
    } else {
        CountField::Inactive
    }
}

/// Tells drift from noise in connection counts: a gap between the
/// datapath's count and the table must show, with the same sign, in
/// `CONFIRMATIONS` sweeps in a row before it is corrected, and then only by
/// the smallest gap seen.
#[derive(Default)]
pub(super) struct DriftFilter {
    recent: BTreeMap<(u32, CountField), Vec<i64>>,
}

const CONFIRMATIONS: usize = 3;

impl DriftFilter {
    fn observe(&mut self, gaps: BTreeMap<(u32, CountField), i64>) -> Vec<((u32, CountField), i64)> {
        self.recent.retain(|k, _| gaps.contains_key(k));
        let mut corrections = Vec::new();
        for (key, gap) in gaps {
            let seen = self.recent.entry(key).or_default();
            if gap == 0 {
                seen.clear();
                continue;
            }
            seen.push(gap);
            if seen.len() > CONFIRMATIONS {
                seen.remove(0);
            }
            let same_sign = seen.iter().all(|g| g.signum() == gap.signum());
            if seen.len() == CONFIRMATIONS && same_sign {
                let smallest = seen.iter().map(|g| g.abs()).min().unwrap_or(0);
                corrections.push((key, -gap.signum() * smallest));
                seen.clear();
            }
        }
        corrections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(v: &[(u32, i64)]) -> BTreeMap<(u32, CountField), i64> {
        v.iter().map(|&(id, g)| ((id, CountField::Active), g)).collect()
    }

    #[test]
    fn a_passing_gap_is_left_alone() {
        let mut f = DriftFilter::default();
        assert!(f.observe(gaps(&[(1, 1)])).is_empty());
        assert!(f.observe(gaps(&[(1, 0)])).is_empty());
        assert!(f.observe(gaps(&[(1, 1)])).is_empty());
        assert!(f.observe(gaps(&[(1, -1)])).is_empty());
        assert!(f.observe(gaps(&[(1, 1)])).is_empty());
    }

    #[test]
    fn a_lasting_gap_is_closed_by_the_smallest_seen() {
        let mut f = DriftFilter::default();
        assert!(f.observe(gaps(&[(7, 5)])).is_empty());
        assert!(f.observe(gaps(&[(7, 3)])).is_empty());
        assert_eq!(f.observe(gaps(&[(7, 4)])), vec![((7, CountField::Active), -3)]);
        // Counted too few (evicted entries never counted down is the other way).
        let mut f = DriftFilter::default();
        for _ in 0..2 {
            assert!(f.observe(gaps(&[(2, -2)])).is_empty());
        }
        assert_eq!(f.observe(gaps(&[(2, -2)])), vec![((2, CountField::Active), 2)]);
    }
}
