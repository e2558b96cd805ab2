//! The sweep of the connection table: expired entries out (and out of
//! their servers' counts), persistence templates re-armed while they still
//! control connections, counts that drifted from the table corrected, and
//! the slots of removed servers freed once no connection uses them.
//!
//! A pass over the table is spread over ticks (one a second): each tick
//! reads [`ENTRIES_PER_TICK`] entries on from where the last stopped, so a
//! large table costs the same each second, and a pass takes
//! `capacity / ENTRIES_PER_TICK` seconds. The controller's lock is never
//! held across the walk: a tick takes what the walk needs under it
//! ([`SweepView`]), walks without it, and applies what it found under it
//! again, in short turns, so lbctl, health checks and VRRP are never kept
//! waiting by the table's size.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::MutexGuard,
};

use anyhow::Result;
use lb_common::{Conn, FlowKey, Service, conn_state, flow_kind};

use super::{Controller, conns::is_expired, evictions::Evictions};
use crate::{
    datapath::{ConnTable, CountField, Cursor},
    tables::Retired,
};

/// Entries a tick reads: what a pass costs each second on a large table.
pub const ENTRIES_PER_TICK: usize = 65_536;
/// Removals (each checked again right before) per turn under the lock.
const CHANGES_PER_LOCK: usize = 512;

/// How long IPVS re-arms a persistence template that outlived its timeout
/// but still controls connections (`ip_vs_conn_expire`).
pub(super) const TEMPLATE_REARM_SECS: u32 = 60;

/// The sweep between ticks: the pass under way and the counts' history.
#[derive(Default)]
pub struct Sweeper {
    pass: Option<Pass>,
    drift: DriftFilter,
    evictions: Evictions,
}

/// One pass over the table, tallied as it goes.
struct Pass {
    cursor: Cursor,
    /// Real servers and services retired when the pass began: only these can be
    /// freed at its end (a connection of one retired later may sit in a
    /// bucket the pass had already read).
    release: Retired,
    tally: Tally,
}

/// What a pass found.
#[derive(Default)]
struct Tally {
    used_reals: BTreeSet<u32>,
    used_services: BTreeSet<u32>,
    /// The live entries per server and count.
    exact: BTreeMap<(u32, CountField), i64>,
    /// Template keys of the persistent services' connections, with the
    /// server each connection is on.
    controlling: BTreeMap<FlowKey, u32>,
    /// Expired templates wait for the end of the pass: whether one still
    /// controls a connection is known only then.
    expired_templates: Vec<FlowKey>,
}

/// What a tick's walk needs, taken under the controller's lock.
struct SweepView {
    conns: ConnTable,
    now: u64,
    /// Persistent services by id.
    persistent: BTreeMap<u32, Service>,
    retired: Retired,
}

impl Tally {
    fn count(&mut self, key: &FlowKey, conn: &Conn, persistent: &BTreeMap<u32, Service>) {
        self.used_reals.insert(conn.real_id);
        self.used_services.insert(conn.service_id);
        *self.exact.entry((conn.real_id, count_field(key, conn.state))).or_default() += 1;
        if key.kind != flow_kind::TEMPLATE
            && let Some(svc) = persistent.get(&conn.service_id)
        {
            self.controlling.insert(svc.template_key(key), conn.real_id);
        }
    }
}

impl Sweeper {
    /// One tick: the next stretch of the pass, and the pass's conclusions
    /// when it reaches the end of the table. `lock` takes the controller's
    /// lock; it is held only to look and to change, never across the walk.
    pub fn tick<'a>(&mut self, lock: impl Fn() -> MutexGuard<'a, Controller>) -> Result<()> {
        let view = lock().sweep_view();
        let pass = self.pass.get_or_insert_with(|| Pass {
            cursor: Cursor::new(),
            release: view.retired.clone(),
            tally: Tally::default(),
        });
        let mut expired = Vec::new();
        let Pass { cursor, tally, .. } = pass;
        view.conns.walk(cursor, ENTRIES_PER_TICK, |key, conn| {
            if !is_expired(conn, view.now) {
                tally.count(key, conn, &view.persistent);
            } else if key.kind == flow_kind::TEMPLATE {
                tally.expired_templates.push(*key);
            } else {
                expired.push(*key);
            }
        })?;
        for chunk in expired.chunks(CHANGES_PER_LOCK) {
            let mut c = lock();
            for key in chunk {
                if let Some(alive) = c.remove_if_expired(key, view.now)? {
                    tally.count(key, &alive, &view.persistent);
                }
            }
        }
        if !cursor.is_done() {
            return Ok(());
        }
        let Some(Pass { cursor, release, mut tally }) = self.pass.take() else { return Ok(()) };
        if !cursor.is_complete() {
            // Cut short (a key-by-key walk the kernel sent back to the
            // start): what it missed would read as drift, as unused slots,
            // as templates controlling nothing. The next pass concludes.
            tracing::debug!("a sweep pass was cut short after {} entries", cursor.visited());
            return Ok(());
        }
        // As IPVS: a template expires `persistence_timeout` after its last
        // use, unless it still controls connections; then it is re-armed
        // for another 60 s.
        let templates = std::mem::take(&mut tally.expired_templates);
        for chunk in templates.chunks(CHANGES_PER_LOCK) {
            let mut c = lock();
            for key in chunk {
                if let Some(template) = c.settle_template(key, &tally.controlling, view.now)? {
                    tally.count(key, &template, &BTreeMap::new());
                }
            }
        }
        let (gap, corrected) = lock().end_pass(&mut self.drift, &release, &tally)?;
        self.evictions.after_pass(gap, corrected);
        Ok(())
    }

    /// Entries the connection table's LRU evicted to make room, since lbd
    /// started, derived from inserts against live entries (see
    /// `evictions`).
    pub fn evictions(&self) -> u64 {
        self.evictions.total()
    }
}

impl Controller {
    fn sweep_view(&self) -> SweepView {
        SweepView {
            conns: self.datapath.conn_table(),
            now: self.datapath.now_ns(),
            persistent: self
                .tables
                .installed_values()
                .filter(|s| s.persistence_timeout > 0)
                .map(|s| (s.id, *s))
                .collect(),
            retired: self.tables.retired(),
        }
    }

    /// Deletes an expired entry (taking it out of its server's counts),
    /// checking again right before: the datapath may have reused it for a
    /// new connection meanwhile (then it is stamped after the sweep's `now`,
    /// and not expired). Returns the entry if it is alive after all.
    fn remove_if_expired(&mut self, key: &FlowKey, now: u64) -> Result<Option<Conn>> {
        match self.datapath.connection(key) {
            Some(c) if is_expired(&c, now) => {
                self.datapath.remove_connection(key)?;
                self.datapath.add_real_conns(c.real_id, c.state, -1);
                self.release_fullnat(key, c.real_id)?;
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// A gone full-NAT connection's local end back to the pool (nothing
    /// for other connections).
    fn release_fullnat(&mut self, key: &FlowKey, real_id: u32) -> Result<()> {
        let real = self.tables.real(real_id).map_or(([0; 4], 0), |r| (r.addr, r.port));
        self.datapath.release_fullnat(key, real)
    }

    /// Local ends of full-NAT connections the table no longer holds (the
    /// LRU made room, or a write failed between the two): back to the
    /// pool, at the end of each pass.
    fn release_orphaned_fullnat(&mut self) -> Result<()> {
        for key in self.datapath.fullnat_keys() {
            if self.datapath.connection(&key).is_none() {
                // The server is unknown now: its reply entry is the LRU's.
                self.datapath.release_fullnat(&key, ([0; 4], 0))?;
            }
        }
        Ok(())
    }

    /// An expired template: re-armed if it still controls a connection on
    /// its server, removed otherwise. Returns it if it stays.
    fn settle_template(&mut self, key: &FlowKey, controlling: &BTreeMap<FlowKey, u32>, now: u64) -> Result<Option<Conn>> {
        let Some(mut template) = self.datapath.connection(key) else { return Ok(None) };
        if controlling.get(key) == Some(&template.real_id) {
            template.last_seen_ns = now;
            template.timeout = TEMPLATE_REARM_SECS;
            self.datapath.set_connection(key, &template)?;
            Ok(Some(template))
        } else {
            self.remove_if_expired(key, now)
        }
    }

    /// The end of a pass: counts against what the table held, and the
    /// retired slots no connection used. Returns what the servers' counts
    /// held beyond what the pass found, and by how much the corrections
    /// then took them down (see `evictions`).
    fn end_pass(&mut self, drift: &mut DriftFilter, release: &Retired, tally: &Tally) -> Result<(i64, i64)> {
        self.conn_entries = Some(tally.exact.values().map(|&n| n.max(0) as u64).sum());
        // What the datapath counts against what the table holds. A gap seen
        // by one pass can be a connection that came or changed while it
        // walked; a gap that stays is drift, and is closed.
        let mut gaps = BTreeMap::new();
        for id in self.tables.real_ids() {
            let kept = self.datapath.real_conns(id);
            for (field, value) in
                [(CountField::Active, kept.active), (CountField::Inactive, kept.inactive), (CountField::Persistent, kept.persistent)]
            {
                gaps.insert((id, field), value - tally.exact.get(&(id, field)).copied().unwrap_or(0));
            }
        }
        let gap = gaps.values().sum();
        let corrections = drift.observe(gaps);
        for &((id, field), correction) in &corrections {
            tracing::debug!("connection count of real server {id} ({field:?}) corrected by {correction}");
            self.datapath.correct_real_conns(id, field, correction);
        }
        self.release_orphaned_fullnat()?;
        let planned = self.tables.release_unreferenced(release, &tally.used_reals, &tally.used_services);
        self.execute(planned)?;
        Ok((gap, -corrections.iter().map(|&(_, c)| c).sum::<i64>()))
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
/// `CONFIRMATIONS` passes in a row before it is corrected, and then only by
/// the smallest gap seen.
#[derive(Default)]
struct DriftFilter {
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
