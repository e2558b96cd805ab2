//! lblc and lblcr: per-destination-address caches in front of wlc.
//!
//! Modelled exactly, with these differences, all about when cache entries
//! disappear (the choices for a given cache are IPVS's):
//! * Entries expire when the caller calls `expire(now)`: it removes what
//!   IPVS's full check removes (idle for at least the expiration). IPVS runs
//!   that check from a 60 s timer every 30th run, so there an idle entry
//!   lives between `expiration` and `expiration` + ~30 min.
//! * IPVS's early collection when a service caches more than 16384
//!   addresses (entries idle over 6 min, in hash-bucket order, up to a goal)
//!   is not modelled.
//! * `now` is any monotonic clock that does not wrap (IPVS: jiffies).
//! * lblc's `activeconns * 2 < weight` is evaluated in 64 bits (the kernel's
//!   `int` product overflows past 2^30 connections).

use std::collections::HashMap;

use super::least::{ConnView, conn_overhead, counter, weight_of, weighted_least};

/// A real server of a service's list, with the identity the caches keep
/// (the datapath's real server id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbReal {
    pub id: u32,
    pub view: ConnView,
}

/// `lblc_expiration` / `lblcr_expiration` default: 24 h, in seconds.
pub const LBLC_DEFAULT_EXPIRATION_SECS: u64 = 24 * 60 * 60;

/// lblc's and lblcr's `is_overloaded`: more active connections than its
/// weight while some server of the list (any, itself included, flags and
/// weight 0 notwithstanding) has `active * 2 < weight`.
pub fn lblc_overloaded(list: &[LbReal], d: &ConnView) -> bool {
    counter(d.active) as i64 > weight_of(d)
        && list.iter().any(|m| counter(m.view.active) as i64 * 2 < weight_of(&m.view))
}

/// `__ip_vs_lblc_schedule` / `__ip_vs_lblcr_schedule`: exactly wlc.
fn lb_wlc(list: &[LbReal]) -> Option<usize> {
    weighted_least(list, |d| &d.view, conn_overhead)
}

/// One lblc cache entry (`struct ip_vs_lblc_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LblcEntry {
    pub real_id: u32,
    pub lastuse: u64,
}

/// IPVS's lblc (ip_vs_lblc.c): destination address -> server.
#[derive(Clone, Debug)]
pub struct LblcModel {
    expiration: u64,
    cache: HashMap<[u32; 4], LblcEntry>,
}

impl LblcModel {
    /// `expiration` in the unit of the `now` values given later.
    pub fn new(expiration: u64) -> Self {
        Self { expiration, cache: HashMap::new() }
    }

    pub fn entry(&self, daddr: [u32; 4]) -> Option<LblcEntry> {
        self.cache.get(&daddr).copied()
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// `ip_vs_lblc_schedule`: a cached server is used if it is still in the
    /// list (`IP_VS_DEST_F_AVAILABLE`), has weight > 0 and is not
    /// [`lblc_overloaded`] (its overload flag is not looked at); the entry's
    /// last use is refreshed either way. Otherwise wlc over the whole list,
    /// and the result replaces the entry (`ip_vs_lblc_new`). If wlc finds
    /// nothing, none, and the entry stays.
    pub fn schedule(&mut self, list: &[LbReal], daddr: [u32; 4], now: u64) -> Option<usize> {
        if let Some(en) = self.cache.get_mut(&daddr) {
            en.lastuse = now;
            if let Some(i) = list.iter().position(|d| d.id == en.real_id) {
                let d = &list[i].view;
                if d.weight > 0 && !lblc_overloaded(list, d) {
                    return Some(i);
                }
            }
        }
        let i = lb_wlc(list)?;
        self.cache.insert(daddr, LblcEntry { real_id: list[i].id, lastuse: now });
        Some(i)
    }

    /// `ip_vs_lblc_full_check`: drop entries idle for at least the
    /// expiration (`!time_before(now, lastuse + expiration)`).
    pub fn expire(&mut self, now: u64) {
        let exp = self.expiration;
        self.cache.retain(|_, en| now < en.lastuse.saturating_add(exp));
    }

    /// The service was deleted or its scheduler changed (`ip_vs_lblc_flush`).
    pub fn flush(&mut self) {
        self.cache.clear();
    }
}

/// One lblcr cache entry (`struct ip_vs_lblcr_entry` and its
/// `ip_vs_dest_set`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LblcrEntry {
    /// Real server ids, the last inserted first (`list_add_rcu`).
    pub set: Vec<u32>,
    /// Last insertion into or removal from the set.
    pub lastmod: u64,
    pub lastuse: u64,
}

/// IPVS's lblcr (ip_vs_lblcr.c): destination address -> server set.
#[derive(Clone, Debug)]
pub struct LblcrModel {
    expiration: u64,
    cache: HashMap<[u32; 4], LblcrEntry>,
}

/// Where a set member stands: its list index if it is in the service's list
/// (available), and its counters. A member removed from the service keeps
/// its weight and counters in IPVS's trash; one the caller doesn't know is
/// taken as weight 0.
fn set_member(id: u32, list: &[LbReal], trash: &[LbReal]) -> (Option<usize>, ConnView) {
    if let Some(i) = list.iter().position(|d| d.id == id) {
        return (Some(i), list[i].view);
    }
    (None, trash.iter().find(|d| d.id == id).map(|d| d.view).unwrap_or_default())
}

/// `ip_vs_dest_set_min`: in set order, skipping overloaded members, the
/// first available one with weight > 0, then wlc's strict comparison over
/// the rest, taking only available members. Returns a list index.
fn lblcr_set_min(set: &[u32], list: &[LbReal]) -> Option<usize> {
    let mut start = None;
    for (k, &id) in set.iter().enumerate() {
        let (idx, v) = set_member(id, list, &[]);
        if v.overloaded {
            continue;
        }
        if let (true, Some(i)) = (v.weight > 0, idx) {
            start = Some((k, i));
            break;
        }
    }
    let (k, mut least) = start?;
    let mut loh = conn_overhead(&list[least].view) as i64;
    for &id in &set[k + 1..] {
        let (idx, v) = set_member(id, list, &[]);
        if v.overloaded {
            continue;
        }
        let doh = conn_overhead(&v) as i64;
        if let (true, Some(i)) = (loh * weight_of(&v) > doh * weight_of(&list[least].view), idx) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// `ip_vs_dest_set_max`: in set order, the first member with weight > 0
/// (available or not, overloaded or not), then any later one with weight >
/// 0 and `(s64)moh * w < (s64)doh * mw` (strictly: the first wins ties).
/// Returns a real server id.
fn lblcr_set_max(set: &[u32], list: &[LbReal], trash: &[LbReal]) -> Option<u32> {
    let k = set.iter().position(|&id| set_member(id, list, trash).1.weight > 0)?;
    let mut most = set[k];
    let mut mv = set_member(most, list, trash).1;
    let mut moh = conn_overhead(&mv) as i64;
    for &id in &set[k + 1..] {
        let v = set_member(id, list, trash).1;
        let doh = conn_overhead(&v) as i64;
        if moh * weight_of(&v) < doh * weight_of(&mv) && v.weight > 0 {
            most = id;
            mv = v;
            moh = doh;
        }
    }
    Some(most)
}

impl LblcrModel {
    /// `expiration` (lblcr_expiration) in the unit of the `now` values given
    /// later; it is both the idle time after which [`expire`](Self::expire)
    /// drops an entry and the time a set must go unmodified before its most
    /// loaded member is dropped.
    pub fn new(expiration: u64) -> Self {
        Self { expiration, cache: HashMap::new() }
    }

    pub fn entry(&self, daddr: [u32; 4]) -> Option<&LblcrEntry> {
        self.cache.get(&daddr)
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// `ip_vs_lblcr_schedule`. On a cache hit (last use refreshed):
    /// 1. the set's least loaded available member (`ip_vs_dest_set_min`:
    ///    in set order, skipping overloaded members, wlc's rule among the
    ///    members still in the list with weight > 0);
    /// 2. if the set has more than one member and was last modified more
    ///    than the expiration ago (`time_after`), its most loaded member
    ///    (`ip_vs_dest_set_max`: in set order, among members with weight >
    ///    0 whether in the list or not, the first with the highest
    ///    overhead / weight; it may be the one just chosen, or one no longer
    ///    in the service, whose counters come from `trash`) is removed;
    /// 3. the member from 1 is used unless there is none or it is
    ///    [`lblc_overloaded`];
    /// 4. else wlc over the whole list, added to the set (front) unless
    ///    already there; none if wlc finds nothing.
    ///
    /// On a miss: wlc, and a new entry whose set holds just that server.
    /// `trash`: servers removed from the service that sets may still name.
    pub fn schedule(&mut self, list: &[LbReal], trash: &[LbReal], daddr: [u32; 4], now: u64) -> Option<usize> {
        let exp = self.expiration;
        if let Some(en) = self.cache.get_mut(&daddr) {
            en.lastuse = now;
            let real = lblcr_set_min(&en.set, list);
            if en.set.len() > 1
                && now > en.lastmod.saturating_add(exp)
                && let Some(m) = lblcr_set_max(&en.set, list, trash)
                && let Some(pos) = en.set.iter().position(|&id| id == m)
            {
                en.set.remove(pos);
                en.lastmod = now;
            }
            if let Some(i) = real
                && !lblc_overloaded(list, &list[i].view)
            {
                return Some(i);
            }
            let i = lb_wlc(list)?;
            if !en.set.contains(&list[i].id) {
                en.set.insert(0, list[i].id);
                en.lastmod = now;
            }
            return Some(i);
        }
        let i = lb_wlc(list)?;
        self.cache.insert(daddr, LblcrEntry { set: vec![list[i].id], lastmod: now, lastuse: now });
        Some(i)
    }

    /// `ip_vs_lblcr_full_check`: drop entries idle for at least the
    /// expiration (`!time_after(lastuse + expiration, now)`).
    pub fn expire(&mut self, now: u64) {
        let exp = self.expiration;
        self.cache.retain(|_, en| now < en.lastuse.saturating_add(exp));
    }

    /// The service was deleted or its scheduler changed (`ip_vs_lblcr_flush`).
    pub fn flush(&mut self) {
        self.cache.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ipv4_words;
    use crate::sched::fixtures::cv;

    fn lb(id: u32, weight: u32, active: u64) -> LbReal {
        LbReal { id, view: cv(weight, active, 0) }
    }

    #[test]
    fn lblc_keeps_a_destination_on_its_server() {
        let mut m = LblcModel::new(100);
        let d1 = ipv4_words([1, 1, 1, 1]);
        let d2 = ipv4_words([2, 2, 2, 2]);
        let mut list = [lb(10, 1, 0), lb(11, 1, 0)];
        // Miss: wlc (tie, the first).
        assert_eq!(m.schedule(&list, d1, 0), Some(0));
        assert_eq!(m.entry(d1), Some(LblcEntry { real_id: 10, lastuse: 0 }));
        list[0].view.active = 1;
        // Hit: stays on 10 though 11 is idle (1 > 1 is not overloaded).
        assert_eq!(m.schedule(&list, d1, 5), Some(0));
        assert_eq!(m.entry(d1).unwrap().lastuse, 5);
        // Another destination: wlc picks 11.
        assert_eq!(m.schedule(&list, d2, 6), Some(1));
        // The server moves in the list (a server added in front): found by id.
        let list2 = [lb(12, 1, 9), list[0], list[1]];
        assert_eq!(m.schedule(&list2, d1, 7), Some(1));
    }

    #[test]
    fn lblc_reschedules_when_the_cached_server_is_overloaded() {
        let mut m = LblcModel::new(100);
        let d = ipv4_words([1, 1, 1, 1]);
        let mut list = [lb(10, 2, 0), lb(11, 4, 3)];
        assert_eq!(m.schedule(&list, d, 0), Some(0));
        // 10 has 3 > 2 active, but nobody has active * 2 < weight: stays.
        list[0].view.active = 3;
        assert_eq!(m.schedule(&list, d, 1), Some(0));
        // 11 gets room (1 * 2 < 4): 10 counts as overloaded, wlc -> 11,
        // and the entry now names 11.
        list[1].view.active = 1;
        assert_eq!(m.schedule(&list, d, 2), Some(1));
        assert_eq!(m.entry(d).unwrap().real_id, 11);
    }

    #[test]
    fn lblc_cached_server_quiesced_removed_or_flagged() {
        let d = ipv4_words([1, 1, 1, 1]);
        let mut m = LblcModel::new(100);
        let mut list = vec![lb(10, 1, 0), lb(11, 1, 5)];
        assert_eq!(m.schedule(&list, d, 0), Some(0));
        // The overload flag is not looked at on a hit (IPVS quirk).
        list[0].view.overloaded = true;
        assert_eq!(m.schedule(&list, d, 1), Some(0));
        list[0].view.overloaded = false;
        // Weight 0: rescheduled.
        list[0].view.weight = 0;
        assert_eq!(m.schedule(&list, d, 2), Some(1));
        assert_eq!(m.entry(d).unwrap().real_id, 11);
        // Removed from the service: rescheduled.
        list = vec![lb(10, 1, 0)];
        assert_eq!(m.schedule(&list, d, 3), Some(0));
        assert_eq!(m.entry(d).unwrap().real_id, 10);
        // Nothing schedulable: none, the entry stays (refreshed).
        list[0].view.weight = 0;
        assert_eq!(m.schedule(&list, d, 4), None);
        assert_eq!(m.entry(d), Some(LblcEntry { real_id: 10, lastuse: 4 }));
    }

    #[test]
    fn lblc_expiry() {
        let d = ipv4_words([1, 1, 1, 1]);
        let mut m = LblcModel::new(LBLC_DEFAULT_EXPIRATION_SECS);
        let list = [lb(10, 1, 0)];
        m.schedule(&list, d, 1000);
        m.expire(1000 + LBLC_DEFAULT_EXPIRATION_SECS - 1);
        assert_eq!(m.len(), 1);
        m.expire(1000 + LBLC_DEFAULT_EXPIRATION_SECS);
        assert!(m.is_empty());
        m.schedule(&list, d, 0);
        m.flush();
        assert!(m.is_empty());
    }

    // ---- lblcr -------------------------------------------------------------

    #[test]
    fn lblcr_grows_the_set_when_its_best_member_is_overloaded() {
        let d = ipv4_words([3, 3, 3, 3]);
        let mut m = LblcrModel::new(100);
        let mut list = [lb(10, 2, 0), lb(11, 4, 0)];
        // Miss: wlc picks 10 (tie), set {10}.
        assert_eq!(m.schedule(&list, &[], d, 0), Some(0));
        assert_eq!(m.entry(d).unwrap().set, [10]);
        // 10 overloaded by the rule (3 > 2, and 11 has 0 * 2 < 4): wlc over
        // the list -> 11, added in front.
        list[0].view.active = 3;
        assert_eq!(m.schedule(&list, &[], d, 1), Some(1));
        let en = m.entry(d).unwrap();
        assert_eq!(en.set, [11, 10]);
        assert_eq!(en.lastmod, 1);
        // Now the set's least loaded member by wlc: 11 (0/4 vs 768/2).
        list[1].view.active = 1;
        assert_eq!(m.schedule(&list, &[], d, 2), Some(1));
        // Ties within the set go to the set's first member (the newest):
        // 11 at 2/4 and 10 at 1/2.
        list[0].view.active = 1;
        list[1].view.active = 2;
        assert_eq!(m.schedule(&list, &[], d, 3), Some(1));
        // Re-choosing a member already in the set doesn't modify it.
        assert_eq!(m.entry(d).unwrap().lastmod, 1);
    }

    #[test]
    fn lblcr_drops_the_most_loaded_member_after_the_expiration() {
        let d = ipv4_words([3, 3, 3, 3]);
        let mut m = LblcrModel::new(100);
        let mut list = [lb(10, 1, 0), lb(11, 1, 0), lb(12, 1, 0)];
        assert_eq!(m.schedule(&list, &[], d, 0), Some(0));
        list[0].view.active = 5;
        list[2].view.active = 5;
        // 10 overloaded (5 > 1, 11 has room): wlc -> 11. Set {11, 10}.
        assert_eq!(m.schedule(&list, &[], d, 10), Some(1));
        // Not yet: lastmod 10 + 100 is not before 110.
        assert_eq!(m.schedule(&list, &[], d, 110), Some(1));
        assert_eq!(m.entry(d).unwrap().set, [11, 10]);
        // After: the most loaded (10) goes, lastmod moves.
        assert_eq!(m.schedule(&list, &[], d, 111), Some(1));
        let en = m.entry(d).unwrap();
        assert_eq!(en.set, [11]);
        assert_eq!((en.lastmod, en.lastuse), (111, 111));
        // A single member is never dropped.
        assert_eq!(m.schedule(&list, &[], d, 1000), Some(1));
        assert_eq!(m.entry(d).unwrap().set, [11]);
    }

    #[test]
    fn lblcr_removed_members() {
        let d = ipv4_words([3, 3, 3, 3]);
        let mut m = LblcrModel::new(100);
        let mut list = vec![lb(10, 1, 0), lb(11, 1, 0)];
        assert_eq!(m.schedule(&list, &[], d, 0), Some(0));
        list[0].view.active = 2;
        assert_eq!(m.schedule(&list, &[], d, 1), Some(1));
        assert_eq!(m.entry(d).unwrap().set, [11, 10]);
        // 11 leaves the service (still in IPVS's trash, lightly loaded):
        // the set's min skips it, 10 is used (2 > 1 but nobody has room).
        let trash = [lb(11, 1, 0)];
        list.remove(1);
        assert_eq!(m.schedule(&list, &trash, d, 2), Some(0));
        // After the expiration the most loaded member goes: 10 (2/1 vs 0/1),
        // though it is the one being used; the unavailable 11 stays.
        assert_eq!(m.schedule(&list, &trash, d, 200), Some(0));
        assert_eq!(m.entry(d).unwrap().set, [11]);
        // The set has no available member now: wlc, 10 added back.
        assert_eq!(m.schedule(&list, &trash, d, 201), Some(0));
        assert_eq!(m.entry(d).unwrap().set, [10, 11]);
        // Expiry of whole entries, as lblc.
        m.expire(201 + 99);
        assert_eq!(m.len(), 1);
        m.expire(201 + 100);
        assert!(m.is_empty());
    }

    #[test]
    fn lblcr_set_max_prefers_the_first_on_ties_and_skips_weight_0() {
        let list = [lb(10, 1, 1), lb(11, 1, 1), lb(12, 0, 50)];
        assert_eq!(lblcr_set_max(&[10, 11, 12], &list, &[]), Some(10));
        assert_eq!(lblcr_set_max(&[12, 11, 10], &list, &[]), Some(11));
        assert_eq!(lblcr_set_max(&[12], &list, &[]), None);
        assert_eq!(lblcr_set_min(&[12, 11, 10], &list), Some(1));
    }
}
