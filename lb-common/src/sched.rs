//! Scheduling tables the controller builds and the datapath walks, and
//! reference models of IPVS's schedulers that the tables are tested against.
//!
//! A service's real servers are always given in IPVS's list order (the last
//! added first). rr and wrr are deterministic walks over that list, so the
//! controller precomputes one period of the walk as a table of list indices;
//! the datapath takes `table[position++ % len]` with one atomic add, skipping
//! entries whose server is overloaded. That reproduces IPVS's choices exactly
//! without a lock on the packet path.
//!
//! The connection-counting schedulers (lc, wlc, sed, nq, fo, ovf) are pure
//! functions of the list and its counters, written as the single loops the
//! datapath runs too. sh, dh and mh are lookup tables the controller builds
//! here and the datapath indexes with the hashes of [`crate::hash`]. lblc and
//! lblcr keep per-destination-address caches; their models here are the
//! reference the datapath's cache maps are tested against.
//!
//! Every rule cites the function of the kernel's `net/netfilter/ipvs/` it
//! reproduces; ties always go to the first server in list order.

use std::collections::HashMap;

use crate::hash;

/// What the schedulers need to know of one real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedDest {
    pub weight: u32,
    pub overloaded: bool,
}

impl SchedDest {
    pub const fn new(weight: u32) -> Self {
        Self { weight, overloaded: false }
    }
}

/// Longest wrr period the controller will build (entries), so one service
/// cannot eat the shared table: sum(weights)/gcd must stay under it.
pub const MAX_SEQUENCE_LEN: usize = 1 << 16;

/// rr: the servers with weight > 0, in list order.
pub fn rr_table(weights: &[u32]) -> Vec<u32> {
    (0..weights.len() as u32).filter(|&i| weights[i as usize] > 0).collect()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// wrr's step (gcd of the positive weights, 1 if none) and its first current
/// weight `max - (gcd - 1)`, as IPVS computes them.
fn wrr_params(weights: &[u32]) -> (u32, u32) {
    let di = weights.iter().filter(|&&w| w > 0).fold(0, |g, &w| if g == 0 { w } else { gcd(g, w) });
    let di = di.max(1);
    let max = weights.iter().copied().max().unwrap_or(0);
    (di, max.saturating_sub(di - 1))
}

/// Length of the wrr period for these weights, without building it.
pub fn wrr_period(weights: &[u32]) -> u64 {
    let (di, mw) = wrr_params(weights);
    if mw == 0 {
        return 0;
    }
    // In the round with current weight cw, every server with weight >= cw
    // is chosen once; cw runs mw, mw-di, ..., down to 1..=di.
    let mut len = 0u64;
    let mut cw = mw as i64;
    while cw > 0 {
        len += weights.iter().filter(|&&w| w as i64 >= cw).count() as u64;
        cw -= di as i64;
    }
    len
}

/// wrr: one period of IPVS's walk started from a fresh state (list head,
/// current weight = max - (gcd - 1)): round after round, every server whose
/// weight reaches the current weight, in list order.
pub fn wrr_table(weights: &[u32]) -> Vec<u32> {
    let (di, mw) = wrr_params(weights);
    let mut table = Vec::new();
    let mut cw = mw as i64;
    while mw > 0 && cw > 0 {
        table.extend((0..weights.len() as u32).filter(|&i| weights[i as usize] as i64 >= cw));
        cw -= di as i64;
    }
    table
}

/// IPVS's rr, literally: a pointer into the list (`None` = the list head),
/// moved to the next server with weight > 0 that is not overloaded.
#[derive(Clone, Debug, Default)]
pub struct RrModel {
    last: Option<usize>,
}

impl RrModel {
    pub fn schedule(&mut self, dests: &[SchedDest]) -> Option<usize> {
        let n = dests.len();
        if n == 0 {
            return None;
        }
        let start = self.last.map_or(0, |l| l + 1);
        // One full turn, ending with the last one chosen.
        for k in 0..n {
            let i = (start + k) % n;
            if !dests[i].overloaded && dests[i].weight > 0 {
                self.last = Some(i);
                return Some(i);
            }
        }
        None
    }

    /// The list changed under the pointer: a removed server at index
    /// `removed` moves the pointer back to its predecessor, as IPVS's del_dest.
    pub fn remove(&mut self, removed: usize) {
        if let Some(l) = self.last {
            self.last = match l.cmp(&removed) {
                std::cmp::Ordering::Less => Some(l),
                std::cmp::Ordering::Equal => l.checked_sub(1),
                std::cmp::Ordering::Greater => Some(l - 1),
            };
        }
    }

    /// A server was added at the list head (IPVS adds in front).
    pub fn add_front(&mut self) {
        if let Some(l) = self.last {
            self.last = Some(l + 1);
        }
    }

    pub fn last(&self) -> Option<usize> {
        self.last
    }
}

/// IPVS's wrr, literally (`ip_vs_wrr.c`): current list pointer, current
/// weight, max weight and step, including its end-of-list and overload rules.
#[derive(Clone, Debug)]
pub struct WrrModel {
    /// `None` = the list head.
    cl: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

impl WrrModel {
    /// A service given all these servers at once (as when its scheduler is
    /// set to wrr: `ip_vs_wrr_init_svc`).
    pub fn new(dests: &[SchedDest]) -> Self {
        let (di, mw) = wrr_params(&weights(dests));
        Self { cl: None, cw: mw as i64, mw: mw as i64, di: di as i64 }
    }

    /// A service created with no servers yet.
    pub fn empty() -> Self {
        Self { cl: None, cw: 0, mw: 0, di: 1 }
    }

    /// The server set or a weight changed: back to the head, current weight
    /// kept where IPVS keeps it.
    pub fn changed(&mut self, dests: &[SchedDest]) {
        let ws = weights(dests);
        let (di, mw) = wrr_params(&ws);
        self.cl = None;
        self.di = di as i64;
        self.mw = mw as i64;
        self.cw = wrr_changed_cw(self.cw, &ws);
    }

    pub fn current_weight(&self) -> i64 {
        self.cw
    }

    pub fn schedule(&mut self, dests: &[SchedDest]) -> Option<usize> {
        if self.mw == 0 {
            return None;
        }
        let last = self.cl;
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        let mut pos = self.cl;
        loop {
            // Continue from the element after `pos` to the end of the list.
            let from = pos.map_or(0, |p| p + 1);
            for (i, d) in dests.iter().enumerate().skip(from) {
                if !d.overloaded && d.weight as i64 >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
            }
            pos = None;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}

fn weights(dests: &[SchedDest]) -> Vec<u32> {
    dests.iter().map(|d| d.weight).collect()
}

/// The current weight IPVS's wrr keeps when the server set or a weight
/// changes (`ip_vs_wrr_dest_changed`).
pub fn wrr_changed_cw(cw: i64, weights: &[u32]) -> i64 {
    let (di, mw) = wrr_params(weights);
    let (di, mw) = (di as i64, mw as i64);
    if cw > mw || cw == 0 {
        mw
    } else if di > 1 {
        (cw / di) * di + 1
    } else {
        cw
    }
}

/// The current weight of a wrr service created empty and then given its
/// servers one by one (`ipvsadm -A` then `-a` for each, as keepalived does).
/// `weights_in_ipvs_order` is the final list, newest first.
pub fn wrr_cw_after_adding(weights_in_ipvs_order: &[u32]) -> i64 {
    let n = weights_in_ipvs_order.len();
    // An empty service starts with current weight 0; each addition applies
    // the change rule to the list as it then is (the k oldest, newest first).
    (1..=n).fold(0, |cw, k| wrr_changed_cw(cw, &weights_in_ipvs_order[n - k..]))
}

/// Where in a freshly built wrr table IPVS's walk continues after a change:
/// the walk restarts from the head at the model's current weight, which is
/// the start of that weight's round in the table.
pub fn wrr_resume_position(weights: &[u32], current_weight: i64) -> u64 {
    let (di, mw) = wrr_params(weights);
    let mut pos = 0u64;
    let mut cw = mw as i64;
    while cw > current_weight && cw > 0 {
        pos += weights.iter().filter(|&&w| w as i64 >= cw).count() as u64;
        cw -= di as i64;
    }
    pos
}

/// The current weight of IPVS's wrr walk right after the table entry at
/// `position - 1` was taken (the round that entry belongs to).
pub fn wrr_current_weight_at(weights: &[u32], position: u64) -> i64 {
    let (di, mw) = wrr_params(weights);
    let period = wrr_period(weights);
    if period == 0 {
        return mw as i64;
    }
    if position == 0 {
        return mw as i64;
    }
    let target = (position - 1) % period;
    let mut seen = 0u64;
    let mut cw = mw as i64;
    while cw > 0 {
        let round = weights.iter().filter(|&&w| w as i64 >= cw).count() as u64;
        if target < seen + round {
            return cw;
        }
        seen += round;
        cw -= di as i64;
    }
    mw as i64
}

// ===========================================================================
// The connection-counting schedulers: lc, wlc, sed, nq, fo and ovf.
//
// Each is one pass over the list in IPVS order with the kernel's integer
// arithmetic (counters and overheads are `int`, products `__s64`), so the
// datapath can run the very same loop over its destination list.

/// A real server as the connection-counting schedulers see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnView {
    pub weight: u32,
    /// IPVS's `activeconns`.
    pub active: u64,
    /// IPVS's `inactconns`.
    pub inactive: u64,
    /// `IP_VS_DEST_F_OVERLOAD`: over its upper connection threshold.
    pub overloaded: bool,
}

impl ConnView {
    pub const fn new(weight: u32, active: u64, inactive: u64) -> Self {
        Self { weight, active, inactive, overloaded: false }
    }

    /// The same server with its overload flag set.
    pub const fn with_overload(mut self) -> Self {
        self.overloaded = true;
        self
    }
}

/// A connection counter as the kernel reads it: `atomic_t` holds an `int`,
/// so the low 32 bits, signed (differs from the count only past 2^31).
#[inline]
fn counter(n: u64) -> i32 {
    n as i32
}

/// A weight as the kernel reads it (`int`; IPVS refuses weights above
/// INT_MAX, and so must the controller).
#[inline]
fn weight_of(d: &ConnView) -> i64 {
    d.weight as i64
}

/// `ip_vs_dest_conn_overhead` (include/net/ip_vs.h): `(activeconns << 8) +
/// inactconns`, computed in `int` and wrapping as the kernel's does.
pub fn conn_overhead(d: &ConnView) -> i32 {
    counter(d.active).wrapping_shl(8).wrapping_add(counter(d.inactive))
}

/// sed's and nq's overhead (`ip_vs_sed_dest_overhead`,
/// `ip_vs_nq_dest_overhead`): `activeconns + 1`; inactive ones don't count.
pub fn sed_overhead(d: &ConnView) -> i32 {
    counter(d.active).wrapping_add(1)
}

/// lc (ip_vs_lc.c, `ip_vs_lc_schedule`): skip overloaded servers and weight
/// 0; the least `conn_overhead`, compared as `unsigned int`, strictly less,
/// so the first in list order wins a tie. Weights play no other part.
pub fn lc(dests: &[ConnView]) -> Option<usize> {
    let mut least = None;
    let mut loh = 0u32;
    for (i, d) in dests.iter().enumerate() {
        if d.overloaded || d.weight == 0 {
            continue;
        }
        let doh = conn_overhead(d) as u32;
        if least.is_none() || doh < loh {
            least = Some(i);
            loh = doh;
        }
    }
    least
}

/// The two-stage weighted-least loop wlc, sed, lblc and lblcr share
/// (ip_vs_wlc.c, ip_vs_sed.c, `__ip_vs_lblc_schedule`,
/// `__ip_vs_lblcr_schedule`): the first server that is not overloaded and
/// has weight > 0 is the candidate; every later server that is not
/// overloaded replaces it when `(s64)loh * w > (s64)doh * lw` (strictly, so
/// ties keep the earlier one). The second stage does not skip weight 0
/// explicitly; with `w = 0` the left side is 0 and (for a non-negative
/// overhead) cannot exceed the right, which is what keeps such servers out.
fn weighted_least<T>(items: &[T], view: impl Fn(&T) -> &ConnView, overhead: fn(&ConnView) -> i32) -> Option<usize> {
    let first = items.iter().position(|t| {
        let d = view(t);
        !d.overloaded && d.weight > 0
    })?;
    let mut least = first;
    let mut loh = overhead(view(&items[first])) as i64;
    for (i, t) in items.iter().enumerate().skip(first + 1) {
        let d = view(t);
        if d.overloaded {
            continue;
        }
        let doh = overhead(d) as i64;
        if loh * weight_of(d) > doh * weight_of(view(&items[least])) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// wlc (ip_vs_wlc.c, `ip_vs_wlc_schedule`): least `conn_overhead / weight`.
/// The first server not overloaded with weight > 0 is the candidate; each
/// later one not overloaded replaces it if `(s64)loh * w > (s64)doh * lw`
/// (strictly: ties keep the earlier). Weight 0 is not skipped in that second
/// stage, but `loh * 0` cannot exceed `doh * lw`, so it is never taken.
pub fn wlc(dests: &[ConnView]) -> Option<usize> {
    weighted_least(dests, |d| d, conn_overhead)
}

/// sed (ip_vs_sed.c, `ip_vs_sed_schedule`): [`wlc`]'s two stages and
/// comparison with [`sed_overhead`] (`active + 1`) in place of
/// [`conn_overhead`].
pub fn sed(dests: &[ConnView]) -> Option<usize> {
    weighted_least(dests, |d| d, sed_overhead)
}

/// nq (ip_vs_nq.c): one pass skipping overloaded servers and weight 0; the
/// first server with no active connection is taken at once, whatever the
/// others; otherwise sed's rule (`(s64)loh * w > (s64)doh * lw`, first wins
/// ties).
pub fn nq(dests: &[ConnView]) -> Option<usize> {
    let mut least: Option<usize> = None;
    let mut loh = 0i64;
    for (i, d) in dests.iter().enumerate() {
        if d.overloaded || d.weight == 0 {
            continue;
        }
        let doh = sed_overhead(d) as i64;
        if counter(d.active) == 0 {
            return Some(i);
        }
        let better = match least {
            None => true,
            Some(l) => loh * weight_of(d) > doh * weight_of(&dests[l]),
        };
        if better {
            least = Some(i);
            loh = doh;
        }
    }
    least
}

/// fo (ip_vs_fo.c): the highest weight among servers not overloaded
/// (`weight > hw`, hw starting at 0: weight 0 never, the first wins ties).
pub fn fo(dests: &[ConnView]) -> Option<usize> {
    let mut h = None;
    let mut hw = 0i64;
    for (i, d) in dests.iter().enumerate() {
        if !d.overloaded && weight_of(d) > hw {
            h = Some(i);
            hw = weight_of(d);
        }
    }
    h
}

/// ovf (ip_vs_ovf.c): skip servers overloaded, with weight 0, or with more
/// active connections than their weight (`active > weight`; equal still
/// takes one more); the highest weight of the rest, the first on ties.
pub fn ovf(dests: &[ConnView]) -> Option<usize> {
    let mut h = None;
    let mut hw = 0i64;
    for (i, d) in dests.iter().enumerate() {
        let w = weight_of(d);
        if d.overloaded || counter(d.active) as i64 > w || w == 0 {
            continue;
        }
        if h.is_none() || w > hw {
            h = Some(i);
            hw = w;
        }
    }
    h
}

// ===========================================================================
// sh, dh and mh: lookup tables of list indices (`None` = no server), built
// by the controller, and the pick the datapath makes with them.

/// sh's and mh's `is_unavailable` (and dh's check): weight <= 0 or
/// overloaded. A server in the list is always `IP_VS_DEST_F_AVAILABLE`.
fn available(views: &[ConnView], i: usize) -> bool {
    views.get(i).is_some_and(|d| d.weight > 0 && !d.overloaded)
}

fn slot(table: &[Option<u32>], h: u32) -> Option<usize> {
    table.get(h as usize).copied().flatten().map(|i| i as usize)
}

/// sh's 256 buckets (`ip_vs_sh_reassign`, ip_vs_sh.c), given the current
/// weights in list order: walking the list cyclically, each server fills
/// `weight` consecutive buckets (`++count >= weight` moves on, so weight 0
/// still takes one bucket, and a weight over 256 takes all that are left).
/// IPVS rebuilds it on every add, delete and edit of a server. Empty list:
/// all `None`.
pub fn sh_table(weights: &[u32]) -> Vec<Option<u32>> {
    let size = hash::SH_TAB_SIZE as usize;
    if weights.is_empty() {
        return vec![None; size];
    }
    let mut table = Vec::with_capacity(size);
    let mut p = 0usize;
    let mut count = 0i64;
    for _ in 0..size {
        table.push(Some(p as u32));
        count += 1;
        if count >= weights[p] as i64 {
            p = (p + 1) % weights.len();
            count = 0;
        }
    }
    table
}

/// dh's 256 buckets (`ip_vs_dh_reassign`, ip_vs_dh.c): bucket i holds server
/// `i % len`; weights are ignored. Empty list: all `None`.
pub fn dh_table(len: usize) -> Vec<Option<u32>> {
    (0..hash::DH_TAB_SIZE as usize).map(|i| (len > 0).then(|| (i % len) as u32)).collect()
}

/// sh's choice for a packet (`ip_vs_sh_schedule`): the server in the
/// source address's bucket ([`hash::sh_bucket`], with the source port when
/// `use_port`, i.e. sh-port), unless it is unavailable (weight 0 or
/// overloaded): then none, or with sh-fallback (`ip_vs_sh_get_fallback`)
/// the first available server along [`hash::sh_probe_bucket`]'s 256 steps
/// (an empty bucket ends the walk).
pub fn sh_pick(
    table: &[Option<u32>],
    views: &[ConnView],
    addr: [u32; 4],
    port_be: u16,
    fallback: bool,
    use_port: bool,
) -> Option<usize> {
    let first = hash::sh_bucket(addr, port_be, use_port, 0);
    let dest = slot(table, first)?;
    if available(views, dest) {
        return Some(dest);
    }
    if !fallback {
        return None;
    }
    for k in 0..hash::SH_TAB_SIZE {
        let dest = slot(table, hash::sh_probe_bucket(addr, port_be, use_port, first, k))?;
        if available(views, dest) {
            return Some(dest);
        }
    }
    None
}

/// dh's choice (`ip_vs_dh_schedule`): the server in the destination
/// address's bucket ([`hash::dh_bucket`]) if available, else none.
pub fn dh_pick(table: &[Option<u32>], views: &[ConnView], addr: [u32; 4]) -> Option<usize> {
    let dest = slot(table, hash::dh_bucket(addr))?;
    available(views, dest).then_some(dest)
}

/// A real server as mh places it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MhDest {
    /// As the maps store it. For an IPv4 service with an IPv6 server, IPVS
    /// hashes only the first word: pass `[addr[0], 0, 0, 0]`.
    pub addr: [u32; 4],
    /// The server's port, network order, as IPVS stores it.
    pub port_be: u16,
    /// IPVS's `last_weight`, not the current weight (see
    /// [`mh_last_weight`]): a server quiesced to weight 0 keeps its slots, so
    /// that the table does not move; it is only skipped at lookup.
    pub weight: u32,
}

/// The `last_weight` IPVS keeps for mh (`__ip_vs_update_dest`,
/// ip_vs_ctl.c): "the latest non-0 weight", i.e. the weight given when the
/// server is added, or on an edit the new weight unless it is 0.
pub fn mh_last_weight(added: bool, last_weight: u32, new_weight: u32) -> u32 {
    if added || new_weight != 0 { new_weight } else { last_weight }
}

/// mh's lookup table (ip_vs_mh.c, `ip_vs_mh_reassign`), for the servers in
/// list order and a prime `table_size` (IPVS default 4093, see
/// [`hash::MH_PRIMES`]):
///
/// * gcd of the positive weights; none (empty list, or all 0): all `None`
///   (`ip_vs_mh_reset`).
/// * `rshift = max(0, fls(max_weight / gcd) - IP_VS_MH_TAB_BITS)`
///   (`ip_vs_mh_shift_weight`), and each server's turns
///   `(weight / gcd) >> rshift`, or 1 if that is 0 but the weight is not
///   (`ip_vs_mh_permutate`); weight 0: no turns, no slots.
/// * each server's offset = hsiphash(hash1, port + addr) % size and skip =
///   hsiphash(hash2, port + addr) % (size - 1) + 1.
/// * rounds over the list (`ip_vs_mh_populate`): each server in turn takes
///   `turns` slots, each time the next free slot along its permutation
///   `offset, offset + skip, ...` (mod size), until every slot is taken.
///
/// IPVS refuses (-EINVAL, keeping the old table) more servers than slots:
/// then, and for a size below 2, this returns an empty Vec, and the caller
/// should keep its previous table.
pub fn mh_table(dests: &[MhDest], table_size: u32) -> Vec<Option<u32>> {
    let size = table_size as usize;
    if table_size < 2 || dests.len() > size {
        return Vec::new();
    }
    let g = dests
        .iter()
        .filter(|d| d.weight > 0)
        .fold(0, |g, d| if g > 0 { gcd(d.weight, g) } else { d.weight });
    let mut table = vec![None; size];
    if g < 1 {
        return table;
    }
    let max = dests.iter().map(|d| d.weight).max().unwrap_or(0);
    let fls = 32 - (max / g).leading_zeros();
    let rshift = fls.saturating_sub(hash::mh_tab_bits(table_size));

    struct Setup {
        perm: u32,
        skip: u32,
        turns: u32,
    }
    let mut setup: Vec<Setup> = dests
        .iter()
        .map(|d| {
            let offset = hash::mh_hashkey(d.addr, d.port_be, &hash::MH_HASH1_KEY, 0) % table_size;
            let skip = hash::mh_hashkey(d.addr, d.port_be, &hash::MH_HASH2_KEY, 0) % (table_size - 1) + 1;
            let turns = match (d.weight / g) >> rshift {
                0 => (d.weight != 0) as u32,
                t => t,
            };
            Setup { perm: offset, skip, turns }
        })
        .collect();

    let mut used = vec![false; size];
    let mut filled = 0usize;
    let mut dt_count = 0u32;
    // g >= 1 means some server has turns, so every round takes a slot.
    loop {
        let mut i = 0;
        while i < setup.len() {
            let ds = &mut setup[i];
            if ds.turns < 1 {
                i += 1;
                continue;
            }
            while used[ds.perm as usize] {
                ds.perm += ds.skip;
                if ds.perm >= table_size {
                    ds.perm -= table_size;
                }
            }
            used[ds.perm as usize] = true;
            table[ds.perm as usize] = Some(i as u32);
            filled += 1;
            if filled == size {
                return table;
            }
            dt_count += 1;
            if dt_count >= ds.turns {
                dt_count = 0;
                i += 1;
            }
        }
    }
}

/// mh's choice for a packet (`ip_vs_mh_schedule`): the server in the
/// source address's slot ([`hash::mh_index`], with the source port when
/// `use_port`, i.e. mh-port), unless unavailable (weight 0 or overloaded):
/// then none, or with mh-fallback (`ip_vs_mh_get_fallback`) the first
/// available server along [`hash::mh_probe_index`]'s `table.len()` steps.
pub fn mh_pick(
    table: &[Option<u32>],
    views: &[ConnView],
    addr: [u32; 4],
    port_be: u16,
    fallback: bool,
    use_port: bool,
) -> Option<usize> {
    let size = u32::try_from(table.len()).ok().filter(|&s| s > 0)?;
    let first = hash::mh_index(addr, port_be, use_port, 0, size);
    let dest = slot(table, first)?;
    if available(views, dest) {
        return Some(dest);
    }
    if !fallback {
        return None;
    }
    for k in 0..size {
        let dest = slot(table, hash::mh_probe_index(addr, port_be, use_port, first, k, size))?;
        if available(views, dest) {
            return Some(dest);
        }
    }
    None
}

// ===========================================================================
// lblc and lblcr: per-destination-address caches in front of wlc.
//
// Modelled exactly, with these differences, all about when cache entries
// disappear (the choices for a given cache are IPVS's):
// * Entries expire when the caller calls `expire(now)`: it removes what
//   IPVS's full check removes (idle for at least the expiration). IPVS runs
//   that check from a 60 s timer every 30th run, so there an idle entry
//   lives between `expiration` and `expiration` + ~30 min.
// * IPVS's early collection when a service caches more than 16384
//   addresses (entries idle over 6 min, in hash-bucket order, up to a goal)
//   is not modelled.
// * `now` is any monotonic clock that does not wrap (IPVS: jiffies).
// * lblc's `activeconns * 2 < weight` is evaluated in 64 bits (the kernel's
//   `int` product overflows past 2^30 connections).

/// A real server of a service's list, with the identity the caches keep
/// (the datapath's dest id).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbDest {
    pub id: u32,
    pub view: ConnView,
}

/// `lblc_expiration` / `lblcr_expiration` default: 24 h, in seconds.
pub const LBLC_DEFAULT_EXPIRATION_SECS: u64 = 24 * 60 * 60;

/// lblc's and lblcr's `is_overloaded`: more active connections than its
/// weight while some server of the list (any, itself included, flags and
/// weight 0 notwithstanding) has `active * 2 < weight`.
pub fn lblc_overloaded(list: &[LbDest], d: &ConnView) -> bool {
    counter(d.active) as i64 > weight_of(d)
        && list.iter().any(|m| counter(m.view.active) as i64 * 2 < weight_of(&m.view))
}

/// `__ip_vs_lblc_schedule` / `__ip_vs_lblcr_schedule`: exactly wlc.
fn lb_wlc(list: &[LbDest]) -> Option<usize> {
    weighted_least(list, |d| &d.view, conn_overhead)
}

/// One lblc cache entry (`struct ip_vs_lblc_entry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LblcEntry {
    pub dest_id: u32,
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
    pub fn schedule(&mut self, list: &[LbDest], daddr: [u32; 4], now: u64) -> Option<usize> {
        if let Some(en) = self.cache.get_mut(&daddr) {
            en.lastuse = now;
            if let Some(i) = list.iter().position(|d| d.id == en.dest_id) {
                let d = &list[i].view;
                if d.weight > 0 && !lblc_overloaded(list, d) {
                    return Some(i);
                }
            }
        }
        let i = lb_wlc(list)?;
        self.cache.insert(daddr, LblcEntry { dest_id: list[i].id, lastuse: now });
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
    /// Dest ids, the last inserted first (`list_add_rcu`).
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
fn set_member(id: u32, list: &[LbDest], trash: &[LbDest]) -> (Option<usize>, ConnView) {
    if let Some(i) = list.iter().position(|d| d.id == id) {
        return (Some(i), list[i].view);
    }
    (None, trash.iter().find(|d| d.id == id).map(|d| d.view).unwrap_or_default())
}

/// `ip_vs_dest_set_min`: in set order, skipping overloaded members, the
/// first available one with weight > 0, then wlc's strict comparison over
/// the rest, taking only available members. Returns a list index.
fn lblcr_set_min(set: &[u32], list: &[LbDest]) -> Option<usize> {
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
/// Returns a dest id.
fn lblcr_set_max(set: &[u32], list: &[LbDest], trash: &[LbDest]) -> Option<u32> {
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
    pub fn schedule(&mut self, list: &[LbDest], trash: &[LbDest], daddr: [u32; 4], now: u64) -> Option<usize> {
        let exp = self.expiration;
        if let Some(en) = self.cache.get_mut(&daddr) {
            en.lastuse = now;
            let dest = lblcr_set_min(&en.set, list);
            if en.set.len() > 1
                && now > en.lastmod.saturating_add(exp)
                && let Some(m) = lblcr_set_max(&en.set, list, trash)
                && let Some(pos) = en.set.iter().position(|&id| id == m)
            {
                en.set.remove(pos);
                en.lastmod = now;
            }
            if let Some(i) = dest
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

    fn dests(ws: &[u32]) -> Vec<SchedDest> {
        ws.iter().map(|&w| SchedDest::new(w)).collect()
    }

    fn walk(table: &[u32], n: usize) -> Vec<usize> {
        (0..n).map(|i| table[i % table.len()] as usize).collect()
    }

    #[test]
    fn rr_table_matches_the_model() {
        for ws in [&[1u32, 1][..], &[4, 3, 0], &[0, 5, 0, 2], &[1]] {
            let d = dests(ws);
            let mut m = RrModel::default();
            let model: Vec<usize> = (0..50).map(|_| m.schedule(&d).unwrap()).collect();
            assert_eq!(walk(&rr_table(ws), 50), model, "weights {ws:?}");
        }
    }

    #[test]
    fn wrr_table_matches_the_model() {
        for ws in [
            &[3u32, 1][..],
            &[4, 3, 2],
            &[6, 4, 2],
            &[5, 0, 5],
            &[1, 1, 1],
            &[100, 7, 13, 1],
            &[9, 6, 3, 0, 12],
        ] {
            let d = dests(ws);
            let mut m = WrrModel::new(&d);
            let table = wrr_table(ws);
            assert_eq!(table.len() as u64, wrr_period(ws));
            let n = table.len() * 3 + 7;
            let model: Vec<usize> = (0..n).map(|_| m.schedule(&d).unwrap()).collect();
            assert_eq!(walk(&table, n), model, "weights {ws:?}");
        }
    }

    #[test]
    fn wrr_3_to_1_gives_24_and_8_over_32() {
        let t = wrr_table(&[3, 1]);
        let w = walk(&t, 32);
        assert_eq!(w.iter().filter(|&&i| i == 0).count(), 24);
    }

    #[test]
    fn all_weights_zero_schedules_nothing() {
        assert!(rr_table(&[0, 0]).is_empty());
        assert!(wrr_table(&[0, 0]).is_empty());
        let d = dests(&[0, 0]);
        assert_eq!(WrrModel::new(&d).schedule(&d), None);
        assert_eq!(RrModel::default().schedule(&d), None);
    }

    #[test]
    fn wrr_resume_follows_the_model_across_a_change() {
        let before = [4u32, 3, 2];
        let after = [4u32, 3, 2, 6];
        let d0 = dests(&before);
        let d1 = dests(&after);
        for picks_before in 0..20u64 {
            let mut m = WrrModel::new(&d0);
            for _ in 0..picks_before {
                m.schedule(&d0);
            }
            // What the controller can see: the table position.
            let cw = wrr_current_weight_at(&before, picks_before);
            assert_eq!(cw, m.current_weight(), "cw after {picks_before} picks");
            m.changed(&d1);
            let mut shadow = WrrModel::new(&d0);
            shadow.cw = cw;
            shadow.changed(&d1);
            let table = wrr_table(&after);
            let start = wrr_resume_position(&after, shadow.current_weight());
            for k in 0..40u64 {
                let want = m.schedule(&d1).unwrap();
                let got = table[((start + k) % table.len() as u64) as usize] as usize;
                assert_eq!(got, want, "after {picks_before} picks, pick {k}");
            }
        }
    }
}

#[cfg(test)]
mod ipvs_tests {
    use super::*;
    use crate::abi::ipv4_words;

    fn cv(weight: u32, active: u64, inactive: u64) -> ConnView {
        ConnView::new(weight, active, inactive)
    }

    // ---- lc ----------------------------------------------------------------

    #[test]
    fn lc_skips_overloaded_and_weight_0_and_first_wins_ties() {
        let d = [cv(0, 0, 0), cv(5, 0, 0).with_overload(), cv(1, 1, 0), cv(9, 1, 0)];
        assert_eq!(lc(&d), Some(2));
        assert_eq!(lc(&[cv(0, 0, 0), cv(3, 0, 0).with_overload()]), None);
        assert_eq!(lc(&[]), None);
    }

    #[test]
    fn lc_overhead_is_active_times_256_plus_inactive() {
        // 256 vs 255: the second.
        assert_eq!(lc(&[cv(1, 1, 0), cv(1, 0, 255)]), Some(1));
        // 256 vs 256: a tie, the first.
        assert_eq!(lc(&[cv(1, 1, 0), cv(1, 0, 256)]), Some(0));
        // Weights play no part beyond 0 = quiesced.
        assert_eq!(lc(&[cv(100, 2, 0), cv(1, 1, 0)]), Some(1));
        assert_eq!(conn_overhead(&cv(1, 3, 7)), 3 * 256 + 7);
    }

    #[test]
    fn overhead_wraps_like_the_kernels_int() {
        // 2^23 active connections: (2^23 << 8) = 2^31 wraps to INT_MIN.
        assert_eq!(conn_overhead(&cv(1, 1 << 23, 0)), i32::MIN);
        // lc compares as unsigned int: 2^31 > 5.
        assert_eq!(lc(&[cv(1, 1 << 23, 0), cv(1, 0, 5)]), Some(1));
    }

    // ---- wlc ---------------------------------------------------------------

    #[test]
    fn wlc_weights_3_to_1() {
        // 768/3 vs 256/1: equal, the first stays.
        assert_eq!(wlc(&[cv(3, 3, 0), cv(1, 1, 0)]), Some(0));
        // 1024/3 > 256/1: the second.
        assert_eq!(wlc(&[cv(3, 4, 0), cv(1, 1, 0)]), Some(1));
        // Inactive connections count 1/256 of an active one.
        assert_eq!(wlc(&[cv(3, 3, 1), cv(1, 1, 0)]), Some(1));
        assert_eq!(wlc(&[cv(3, 3, 0), cv(1, 1, 1)]), Some(0));
    }

    #[test]
    fn wlc_never_picks_weight_0() {
        // First stage skips weight 0 explicitly ...
        assert_eq!(wlc(&[cv(0, 0, 0), cv(1, 5, 0)]), Some(1));
        // ... the second stage by its comparison: loh * 0 > 0 * lw is false.
        assert_eq!(wlc(&[cv(1, 5, 0), cv(0, 0, 0)]), Some(0));
        assert_eq!(wlc(&[cv(0, 0, 0), cv(0, 0, 0)]), None);
    }

    #[test]
    fn wlc_skips_overloaded_in_both_stages() {
        assert_eq!(wlc(&[cv(1, 0, 0).with_overload(), cv(1, 9, 0), cv(1, 3, 0)]), Some(2));
        assert_eq!(wlc(&[cv(1, 9, 0), cv(1, 0, 0).with_overload()]), Some(0));
    }

    // ---- sed and nq --------------------------------------------------------

    #[test]
    fn sed_counts_the_incoming_job_and_ignores_inactive() {
        // (1+1)/2 vs (0+1)/1: equal, the first.
        assert_eq!(sed(&[cv(2, 1, 0), cv(1, 0, 0)]), Some(0));
        // (2+1)/2 > 1/1: the second.
        assert_eq!(sed(&[cv(2, 2, 0), cv(1, 0, 0)]), Some(1));
        // Inactive connections don't count.
        assert_eq!(sed(&[cv(2, 1, 1000), cv(1, 0, 0)]), Some(0));
        // Where wlc and sed differ: wlc sees 0 vs 256 and keeps the idle
        // weight-1 server; sed sees 1/1 vs 2/10 and takes the heavy one.
        let d = [cv(1, 0, 0), cv(10, 1, 0)];
        assert_eq!(wlc(&d), Some(0));
        assert_eq!(sed(&d), Some(1));
    }

    #[test]
    fn nq_takes_an_idle_server_even_if_heavier_ones_exist() {
        assert_eq!(nq(&[cv(100, 1, 0), cv(1, 0, 0)]), Some(1));
        // The first idle one, not the best idle one.
        assert_eq!(nq(&[cv(1, 0, 0), cv(10, 0, 0)]), Some(0));
        // Idle but overloaded or quiesced: skipped.
        assert_eq!(nq(&[cv(1, 0, 0).with_overload(), cv(0, 0, 0), cv(10, 3, 0)]), Some(2));
        // Inactive connections don't make a server busy.
        assert_eq!(nq(&[cv(100, 1, 0), cv(1, 0, 50)]), Some(1));
        // Nobody idle: sed's rule, first wins ties: 2/2 vs 2/1.
        assert_eq!(nq(&[cv(2, 1, 0), cv(1, 1, 0)]), Some(0));
        assert_eq!(nq(&[cv(1, 1, 0), cv(2, 1, 0)]), Some(1));
        assert_eq!(nq(&[cv(1, 2, 0), cv(2, 5, 0)]), Some(0));
        assert_eq!(nq(&[cv(0, 0, 0)]), None);
    }

    // ---- fo and ovf --------------------------------------------------------

    #[test]
    fn fo_takes_the_highest_weight_first_on_ties() {
        assert_eq!(fo(&[cv(3, 0, 0), cv(5, 9, 0), cv(5, 0, 0), cv(4, 0, 0)]), Some(1));
        assert_eq!(fo(&[cv(3, 0, 0), cv(5, 0, 0).with_overload(), cv(5, 0, 0), cv(4, 0, 0)]), Some(2));
        assert_eq!(fo(&[cv(0, 0, 0), cv(0, 0, 0)]), None);
    }

    #[test]
    fn ovf_skips_servers_with_more_active_than_weight() {
        // 6 > 5 skipped; 3 == 3 still eligible and first of weight 3.
        assert_eq!(ovf(&[cv(5, 6, 0), cv(3, 3, 0), cv(3, 0, 0)]), Some(1));
        assert_eq!(ovf(&[cv(5, 5, 0), cv(8, 9, 0)]), Some(0));
        // Inactive connections don't count.
        assert_eq!(ovf(&[cv(5, 0, 100)]), Some(0));
        assert_eq!(ovf(&[cv(5, 0, 0).with_overload(), cv(0, 0, 0), cv(2, 3, 0)]), None);
    }

    // ---- sh and dh ---------------------------------------------------------

    #[test]
    fn sh_table_fills_weight_buckets_per_server() {
        let t = sh_table(&[2, 0, 1]);
        assert_eq!(t.len(), 256);
        // Weight 0 still takes one bucket (++count >= 0).
        let first: Vec<_> = t[..8].iter().map(|b| b.unwrap()).collect();
        assert_eq!(first, [0, 0, 1, 2, 0, 0, 1, 2]);
        assert_eq!(t[255], Some([0, 0, 1, 2][255 % 4]));
        // A weight beyond the table takes all of it.
        assert!(sh_table(&[300, 1]).iter().all(|&b| b == Some(0)));
        assert!(sh_table(&[]).iter().all(|b| b.is_none()));
    }

    #[test]
    fn sh_maps_an_address_to_the_bucket_computed_by_hand() {
        // hash_32(0x0A000001, 8) = 39 (see hash.rs). Weights [3,1,2] repeat
        // 0,0,0,1,2,2 every 6 buckets; 39 % 6 = 3: server 1.
        let t = sh_table(&[3, 1, 2]);
        let views = [cv(3, 0, 0), cv(1, 0, 0), cv(2, 0, 0)];
        let a = ipv4_words([10, 0, 0, 1]);
        assert_eq!(sh_pick(&t, &views, a, 80u16.to_be(), false, false), Some(1));
        // With sh-port, port 80: bucket 0xB6 = 182, 182 % 6 = 2: server 0.
        assert_eq!(sh_pick(&t, &views, a, 80u16.to_be(), false, true), Some(0));
        // Empty table: nobody.
        assert_eq!(sh_pick(&sh_table(&[]), &[], a, 0, true, false), None);
    }

    #[test]
    fn sh_fallback_walk() {
        // Buckets 0,1,2,0,1,2,...: 10.0.0.1 is in bucket 39 -> server 0.
        let t = sh_table(&[1, 1, 1]);
        let a = ipv4_words([10, 0, 0, 1]);
        let mut views = [cv(1, 0, 0), cv(1, 0, 0), cv(1, 0, 0)];
        assert_eq!(sh_pick(&t, &views, a, 0, false, false), Some(0));
        views[0].weight = 0;
        // Unavailable and no fallback: nobody.
        assert_eq!(sh_pick(&t, &views, a, 0, false, false), None);
        // Fallback step 0 looks at (39 + 39) = 78 -> server 0 again, step 1
        // at 79 -> server 1.
        assert_eq!(sh_pick(&t, &views, a, 0, true, false), Some(1));
        views[1].overloaded = true;
        // Step 2: 80 -> server 2.
        assert_eq!(sh_pick(&t, &views, a, 0, true, false), Some(2));
        views[2].weight = 0;
        assert_eq!(sh_pick(&t, &views, a, 0, true, false), None);
    }

    #[test]
    fn dh_round_robin_buckets_and_pick() {
        let t = dh_table(3);
        assert_eq!(t.len(), 256);
        assert!(t.iter().enumerate().all(|(i, &b)| b == Some((i % 3) as u32)));
        assert!(dh_table(0).iter().all(|b| b.is_none()));
        // dh_bucket(10.0.0.1) = 39; 39 % 3 = 0.
        let a = ipv4_words([10, 0, 0, 1]);
        let mut views = [cv(1, 0, 0), cv(5, 0, 0), cv(5, 0, 0)];
        assert_eq!(dh_pick(&t, &views, a), Some(0));
        views[0].overloaded = true;
        assert_eq!(dh_pick(&t, &views, a), None);
    }

    // ---- mh ----------------------------------------------------------------

    fn mh_dest(last_octet: u8, weight: u32) -> MhDest {
        MhDest { addr: ipv4_words([10, 1, 0, last_octet]), port_be: 80u16.to_be(), weight }
    }

    fn counts(table: &[Option<u32>], n: usize) -> Vec<usize> {
        (0..n).map(|i| table.iter().filter(|&&s| s == Some(i as u32)).count()).collect()
    }

    #[test]
    fn mh_shares_follow_the_weights() {
        let dests = [mh_dest(1, 1), mh_dest(2, 2), mh_dest(3, 3)];
        let t = mh_table(&dests, 4093);
        assert_eq!(t.len(), 4093);
        assert!(t.iter().all(|s| s.is_some()));
        // Rounds of 1 + 2 + 3 slots: 682 full rounds take 4092, the 683rd
        // ends after the first server's turn.
        let c = counts(&t, 3);
        assert_eq!(c, [683, 1364, 2046]);
        for (i, &n) in c.iter().enumerate() {
            let want = 4093.0 * (i + 1) as f64 / 6.0;
            assert!((n as f64 - want).abs() <= 0.01 * want, "server {i}: {n} vs {want}");
        }
        // Weights are divided by their gcd first: same table.
        let scaled = [mh_dest(1, 100), mh_dest(2, 200), mh_dest(3, 300)];
        assert_eq!(mh_table(&scaled, 4093), t);
    }

    #[test]
    fn mh_large_weights_are_shifted() {
        // max/gcd = 1000: fls = 10, IP_VS_MH_TAB_BITS = 6, rshift 4: turns
        // 1000 >> 4 = 62 and (1 >> 4 = 0 -> 1). Rounds of 63: 64 full ones
        // (4032 slots), then 61 more.
        let small_first = mh_table(&[mh_dest(1, 1), mh_dest(2, 1000)], 4093);
        assert_eq!(counts(&small_first, 2), [65, 4028]);
        let big_first = mh_table(&[mh_dest(2, 1000), mh_dest(1, 1)], 4093);
        assert_eq!(counts(&big_first, 2), [4029, 64]);
        // A smaller table has fewer bits: 251 -> 4, rshift 6, turns 15 and 1.
        let t = mh_table(&[mh_dest(1, 1), mh_dest(2, 1000)], 251);
        assert_eq!(counts(&t, 2), [16, 235]);
    }

    #[test]
    fn mh_weight_0_and_empty() {
        let t = mh_table(&[mh_dest(1, 1), mh_dest(2, 0), mh_dest(3, 1)], 251);
        assert_eq!(counts(&t, 3)[1], 0);
        assert!(t.iter().all(|s| s.is_some()));
        assert!(mh_table(&[mh_dest(1, 0)], 251).iter().all(|s| s.is_none()));
        assert_eq!(mh_table(&[], 251).len(), 251);
        assert!(mh_table(&[], 251).iter().all(|s| s.is_none()));
        // More servers than slots: IPVS refuses.
        let many: Vec<_> = (0..5).map(|i| mh_dest(i, 1)).collect();
        assert!(mh_table(&many, 3).is_empty());
        assert_eq!(mh_last_weight(true, 7, 0), 0);
        assert_eq!(mh_last_weight(false, 7, 0), 7);
        assert_eq!(mh_last_weight(false, 7, 3), 3);
    }

    #[test]
    fn mh_first_slots_follow_each_servers_permutation() {
        // With one server of weight 1, slot offset is filled first, then
        // offset + skip, ...: check the first two by hand from the hashes.
        let d = mh_dest(9, 1);
        let size = 251;
        let offset = hash::mh_hashkey(d.addr, d.port_be, &hash::MH_HASH1_KEY, 0) % size;
        let skip = hash::mh_hashkey(d.addr, d.port_be, &hash::MH_HASH2_KEY, 0) % (size - 1) + 1;
        // Two servers: the newer (index 0) takes its offset first, the other
        // its own offset (or next free), alternating.
        let e = mh_dest(10, 1);
        let t = mh_table(&[d, e], size);
        assert_eq!(t[offset as usize], Some(0));
        let e_offset = hash::mh_hashkey(e.addr, e.port_be, &hash::MH_HASH1_KEY, 0) % size;
        if e_offset != offset {
            assert_eq!(t[e_offset as usize], Some(1));
            let second = (offset + skip) % size;
            if second != e_offset {
                assert_eq!(t[second as usize], Some(0));
            }
        }
    }

    #[test]
    fn mh_adding_a_server_moves_few_slots() {
        let old = [mh_dest(1, 1), mh_dest(2, 1), mh_dest(3, 1)];
        // IPVS adds in front.
        let new = [mh_dest(4, 1), mh_dest(1, 1), mh_dest(2, 1), mh_dest(3, 1)];
        let t0 = mh_table(&old, 4093);
        let t1 = mh_table(&new, 4093);
        let owner = |t: &[Option<u32>], list: &[MhDest], s: usize| list[t[s].unwrap() as usize].addr;
        let mut to_new = 0;
        let mut shuffled = 0;
        for s in 0..4093 {
            let (a, b) = (owner(&t0, &old, s), owner(&t1, &new, s));
            if b == new[0].addr {
                to_new += 1;
            } else if a != b {
                shuffled += 1;
            }
        }
        // The new server takes its quarter (rounds of 4: 1023 full ones and
        // the list head's extra slot); of the rest, under 1% move between
        // the old servers (9 slots here).
        assert_eq!(to_new, 1024);
        assert!(shuffled <= 4093 / 100, "{shuffled} slots moved between old servers");
    }

    #[test]
    fn mh_pick_and_fallback() {
        let dests = [mh_dest(1, 1), mh_dest(2, 1), mh_dest(3, 1)];
        let t = mh_table(&dests, 251);
        let mut views = [cv(1, 0, 0), cv(1, 0, 0), cv(1, 0, 0)];
        let a = ipv4_words([172, 16, 3, 4]);
        let first = hash::mh_index(a, 0, false, 0, 251);
        let owner = t[first as usize].unwrap() as usize;
        assert_eq!(mh_pick(&t, &views, a, 1234u16.to_be(), false, false), Some(owner));
        views[owner].weight = 0;
        assert_eq!(mh_pick(&t, &views, a, 1234u16.to_be(), false, false), None);
        // The fallback walk, by hand.
        let want = (0..251)
            .map(|k| t[hash::mh_probe_index(a, 0, false, first, k, 251) as usize].unwrap() as usize)
            .find(|&i| i != owner);
        assert_eq!(mh_pick(&t, &views, a, 1234u16.to_be(), true, false), want);
        // mh-port changes the slot the packet hashes to.
        let with_port = hash::mh_index(a, 1234u16.to_be(), true, 0, 251);
        let views = [cv(1, 0, 0); 3];
        assert_eq!(
            mh_pick(&t, &views, a, 1234u16.to_be(), false, true),
            Some(t[with_port as usize].unwrap() as usize)
        );
        assert_eq!(mh_pick(&[], &views, a, 0, true, false), None);
    }

    // ---- lblc --------------------------------------------------------------

    fn lb(id: u32, weight: u32, active: u64) -> LbDest {
        LbDest { id, view: cv(weight, active, 0) }
    }

    #[test]
    fn lblc_keeps_a_destination_on_its_server() {
        let mut m = LblcModel::new(100);
        let d1 = ipv4_words([1, 1, 1, 1]);
        let d2 = ipv4_words([2, 2, 2, 2]);
        let mut list = [lb(10, 1, 0), lb(11, 1, 0)];
        // Miss: wlc (tie, the first).
        assert_eq!(m.schedule(&list, d1, 0), Some(0));
        assert_eq!(m.entry(d1), Some(LblcEntry { dest_id: 10, lastuse: 0 }));
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
        assert_eq!(m.entry(d).unwrap().dest_id, 11);
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
        assert_eq!(m.entry(d).unwrap().dest_id, 11);
        // Removed from the service: rescheduled.
        list = vec![lb(10, 1, 0)];
        assert_eq!(m.schedule(&list, d, 3), Some(0));
        assert_eq!(m.entry(d).unwrap().dest_id, 10);
        // Nothing schedulable: none, the entry stays (refreshed).
        list[0].view.weight = 0;
        assert_eq!(m.schedule(&list, d, 4), None);
        assert_eq!(m.entry(d), Some(LblcEntry { dest_id: 10, lastuse: 4 }));
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
