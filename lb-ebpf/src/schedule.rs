//! Stage 3: choose a real server for a packet that starts a new connection.
//!
//! rr and wrr walk a sequence the controller precomputed from IPVS's rules
//! (see `lb_common::sched`): one atomic add on the service's position picks
//! the next entry, so all CPUs share one walk, exactly as IPVS's single
//! locked pointer does, without a lock.
//!
//! The least-connection family (lc, wlc, sed, nq, fo, ovf) scans the
//! service's servers in IPVS order with the counts the datapath keeps, with
//! each kernel scheduler's overhead, skip and tie rules.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::helpers::bpf_loop;

use lb_common::{
    Dest, DestConns, FlowKey, LBLC_EXPIRATION_NS, LBLCR_MAX_SET, LblcEntry, LblcKey, hash, IPPROTO_TCP, MAX_DESTS_PER_SERVICE, Service, conn_state::tcp_flag, dest_flag,
    scheduler, service_flag,
};

use crate::{
    lookup,
    maps::{DEST_CONNS, DEST_LISTS, DESTS, LBLC_CACHE, SCHED_STATE, SCHED_TABLE},
};

/// How many overloaded servers a walk may skip before giving up.
const MAX_SKIPS: u32 = 8;

/// Whether this packet may start a connection: any UDP datagram; for TCP a
/// SYN without ACK, unless the service schedules sloppily.
#[inline(always)]
pub fn starts_connection(flow: &FlowKey, tcp_flags: u8, svc: &Service) -> bool {
    if flow.protocol != IPPROTO_TCP || svc.flags & service_flag::SLOPPY_TCP != 0 {
        return true;
    }
    tcp_flags & (tcp_flag::SYN | tcp_flag::ACK | tcp_flag::RST) == tcp_flag::SYN
}

/// The real server for a new connection: the one a persistent service's
/// template names for this client, else the scheduler's choice (which a
/// persistent service then records in the client's template).
#[inline(always)]
pub fn choose(svc: &Service, flow: &FlowKey, now: u64) -> Option<u32> {
    if svc.persistence_timeout == 0 {
        return pick(svc, flow, now);
    }
    let key = svc.template_key(flow);
    if let Some(dest) = lookup::persistent_dest(&key, now) {
        return Some(dest);
    }
    let dest = pick(svc, flow, now)?;
    lookup::set_template(&key, svc, dest, now);
    Some(dest)
}

/// The chosen real server's id, or `None` when no server can take it.
#[inline(always)]
pub fn pick(svc: &Service, flow: &FlowKey, now: u64) -> Option<u32> {
    match svc.scheduler {
        scheduler::RR | scheduler::WRR => walk_sequence(svc),
        scheduler::LC | scheduler::WLC | scheduler::SED | scheduler::NQ | scheduler::FO | scheduler::OVF => {
            least(svc, svc.scheduler)
        }
        scheduler::SH | scheduler::DH | scheduler::MH => hashed(svc, flow),
        scheduler::LBLC | scheduler::LBLCR => locality(svc, flow, now),
        _ => None,
    }
}

/// An empty slot of a hash table.
const NO_DEST: u32 = u32::MAX;

/// The dest in slot `index` of the service's table, if it takes new
/// connections; `Err(())` for an empty slot (ends a fallback walk).
#[inline(always)]
fn table_slot(svc_table_start: u32, index: u32) -> Result<Option<u32>, ()> {
    let Some(&dest_id) = SCHED_TABLE.get(svc_table_start.wrapping_add(index)) else { return Err(()) };
    if dest_id == NO_DEST {
        return Err(());
    }
    let (Some(dest), Some(conns)) = (DESTS.get(dest_id), DEST_CONNS.get_ptr_mut(dest_id)) else { return Err(()) };
    Ok(takes_new_connections(dest, conns).then_some(dest_id))
}

/// sh, dh and mh: the slot the packet's address hashes to (ip_vs_sh.c,
/// ip_vs_dh.c, ip_vs_mh.c), or with the fallback flag the first server
/// that takes connections along IPVS's probe sequence.
#[inline(always)]
fn hashed(svc: &Service, flow: &FlowKey) -> Option<u32> {
    let (port_flag, fallback_flag) = match svc.scheduler {
        scheduler::SH => (service_flag::SH_PORT, service_flag::SH_FALLBACK),
        scheduler::MH => (service_flag::MH_PORT, service_flag::MH_FALLBACK),
        _ => (0, 0),
    };
    let use_port = svc.flags & port_flag != 0;
    let first = match svc.scheduler {
        scheduler::SH => hash::sh_bucket(flow.src, flow.sport, use_port, 0),
        scheduler::DH => hash::dh_bucket(flow.dst),
        _ => {
            if svc.table_len == 0 {
                return None;
            }
            hash::mh_index(flow.src, flow.sport, use_port, 0, svc.table_len)
        }
    };
    if first >= svc.table_len {
        return None;
    }
    match table_slot(svc.table_start, first) {
        Ok(Some(dest)) => return Some(dest),
        Err(()) => return None,
        Ok(None) => {}
    }
    if svc.flags & fallback_flag == 0 {
        return None;
    }
    let mut probe = Probe {
        scheduler: svc.scheduler,
        table_start: svc.table_start,
        table_len: svc.table_len,
        addr: flow.src,
        port: flow.sport,
        use_port: use_port as u8,
        first,
        found: NO_DEST,
    };
    // SAFETY: the callback only reads maps and writes `probe` on our stack.
    unsafe {
        bpf_loop(svc.table_len, probe_step as *mut c_void, (&raw mut probe).cast(), 0);
    }
    if probe.found == NO_DEST { None } else { Some(probe.found) }
}

/// State of a fallback walk, on the stack.
#[repr(C)]
struct Probe {
    scheduler: u8,
    use_port: u8,
    port: u16,
    table_start: u32,
    table_len: u32,
    first: u32,
    found: u32,
    addr: [u32; 4],
}

#[inline(never)]
extern "C" fn probe_step(k: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Probe` that `hashed` passed.
    let p = unsafe { &mut *(ctx as *mut Probe) };
    let use_port = p.use_port != 0;
    let index = if p.scheduler == scheduler::SH {
        hash::sh_probe_bucket(p.addr, p.port, use_port, p.first, k)
    } else {
        hash::mh_probe_index(p.addr, p.port, use_port, p.first, k, p.table_len)
    };
    if index >= p.table_len {
        return STOP;
    }
    match table_slot(p.table_start, index) {
        Ok(Some(dest)) => {
            p.found = dest;
            STOP
        }
        Ok(None) => NEXT,
        Err(()) => STOP,
    }
}

/// IPVS's overload flag with its thresholds: set once the server holds
/// `upper_threshold` connections, cleared when it falls below
/// `lower_threshold` (or 3/4 of the upper one when no lower is set).
#[inline(always)]
fn overloaded(dest: &Dest, conns: *mut DestConns) -> bool {
    // SAFETY: an element of DEST_CONNS, valid for this program run; the flag
    // is a plain word both writers set to the same function of the counts.
    unsafe {
        let total = (*conns).active + (*conns).inactive;
        let upper = dest.upper_threshold as i64;
        let lower = dest.lower_threshold as i64;
        if (*conns).overloaded != 0 {
            let clear = if lower != 0 {
                total < lower
            } else if upper != 0 {
                total * 4 < upper * 3
            } else {
                true
            };
            if clear {
                (*conns).overloaded = 0;
            }
            !clear
        } else if upper != 0 && total >= upper {
            (*conns).overloaded = 1;
            true
        } else {
            false
        }
    }
}

#[inline(always)]
fn takes_new_connections(dest: &Dest, conns: *mut DestConns) -> bool {
    dest.flags & dest_flag::AVAILABLE != 0 && dest.weight > 0 && !overloaded(dest, conns)
}

#[inline(always)]
fn walk_sequence(svc: &Service) -> Option<u32> {
    if svc.table_len == 0 {
        return None;
    }
    let state = SCHED_STATE.get_ptr_mut(svc.id)?;
    for _ in 0..MAX_SKIPS {
        // SAFETY: an array element stays valid while the program runs; the
        // position is only ever touched atomically. The intrinsic because the
        // BPF target offers no `AtomicU64::fetch_add`; SeqCst because LLVM's
        // BPF backend turns a relaxed add into the non-fetching `lock +=`,
        // losing the old value we need.
        let step = unsafe {
            atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut (*state).position, 1)
        };
        let slot = svc.table_start + (step % svc.table_len as u64) as u32;
        let dest_id = *SCHED_TABLE.get(slot)?;
        let dest = DESTS.get(dest_id)?;
        let conns = DEST_CONNS.get_ptr_mut(dest_id)?;
        if takes_new_connections(dest, conns) {
            return Some(dest_id);
        }
    }
    None
}

/// State of a least-connection scan, on the stack, handed to each step.
#[repr(C)]
struct Scan {
    scheduler: u8,
    dests_start: u32,
    /// The chosen dest id, `u32::MAX` while none.
    best: u32,
    best_overhead: u64,
    best_weight: u64,
}

/// The least-connection family, one scan in IPVS list order. Ties keep the
/// first found, as the kernel's strict comparisons do. The scan runs under
/// `bpf_loop`, so the verifier checks one step instead of 256.
#[inline(always)]
fn least(svc: &Service, rule: u8) -> Option<u32> {
    let mut scan = Scan {
        scheduler: rule,
        dests_start: svc.dests_start,
        best: u32::MAX,
        // Placeholders, zeroed just below.
        best_overhead: 1,
        best_weight: 1,
    };
    // Zeroed by volatile stores: LLVM merges plain zero stores into a call
    // to a byte-by-byte memset subprogram on BPF, on every new connection.
    // SAFETY: plain stores to our own stack variable.
    unsafe {
        (&raw mut scan.best_overhead).write_volatile(0);
        (&raw mut scan.best_weight).write_volatile(0);
    }
    let n = if svc.dests_len > MAX_DESTS_PER_SERVICE { MAX_DESTS_PER_SERVICE } else { svc.dests_len };
    // SAFETY: the callback only reads maps and writes the scan state on our
    // stack, which outlives the call.
    unsafe {
        bpf_loop(n, scan_step as *mut c_void, (&raw mut scan).cast(), 0);
    }
    if scan.best == u32::MAX { None } else { Some(scan.best) }
}

/// Stop the scan (nq found an idle server).
const STOP: i64 = 1;
const NEXT: i64 = 0;

#[inline(never)]
extern "C" fn scan_step(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Scan` that `least` passed.
    let scan = unsafe { &mut *(ctx as *mut Scan) };
    let Some(&dest_id) = DEST_LISTS.get(scan.dests_start.wrapping_add(i)) else { return STOP };
    let Some(dest) = DESTS.get(dest_id) else { return STOP };
    let Some(conns) = DEST_CONNS.get_ptr_mut(dest_id) else { return STOP };
    if dest.flags & dest_flag::AVAILABLE == 0 || overloaded(dest, conns) {
        return NEXT;
    }
    // SAFETY: a valid element; aligned 64-bit loads are never torn.
    let (active, inactive) = unsafe { ((*conns).active.max(0) as u64, (*conns).inactive.max(0) as u64) };
    let weight = dest.weight as u64;
    let none_yet = scan.best == u32::MAX;
    let (overhead, better) = match scan.scheduler {
        // ip_vs_lc.c: fewest (active << 8) + inactive among weight > 0.
        scheduler::LC => {
            let oh = (active << 8) + inactive;
            (oh, weight > 0 && (none_yet || oh < scan.best_overhead))
        }
        // ip_vs_wlc.c, ip_vs_sed.c: the first server with weight > 0
        // starts; a later one wins if best_overhead * w > overhead * best_w.
        scheduler::WLC | scheduler::SED => {
            let oh = if scan.scheduler == scheduler::WLC { (active << 8) + inactive } else { active + 1 };
            let better = if none_yet { weight > 0 } else { scan.best_overhead * weight > oh * scan.best_weight };
            (oh, better)
        }
        // ip_vs_nq.c: an idle server at once; otherwise as sed.
        scheduler::NQ => {
            if weight == 0 {
                return NEXT;
            }
            if active == 0 {
                scan.best = dest_id;
                return STOP;
            }
            let oh = active + 1;
            (oh, none_yet || scan.best_overhead * weight > oh * scan.best_weight)
        }
        // ip_vs_fo.c: the highest weight, the first of equals.
        scheduler::FO => (0, weight > scan.best_weight),
        // ip_vs_ovf.c: the highest weight among servers whose active
        // connections do not exceed it.
        _ => {
            if weight == 0 || active > weight {
                return NEXT;
            }
            (0, none_yet || weight > scan.best_weight)
        }
    };
    if better {
        scan.best = dest_id;
        scan.best_overhead = overhead;
        scan.best_weight = weight;
    }
    NEXT
}

// lblc and lblcr (ip_vs_lblc.c, ip_vs_lblcr.c): a cache from destination
// address to server (lblc) or server set (lblcr) in front of wlc.

/// The real server's weight and active connections, and whether it is in
/// its service's list now (not retired).
#[inline(always)]
fn member(dest_id: u32) -> Option<(u64, u64, bool, bool)> {
    let dest = DESTS.get(dest_id)?;
    let conns = DEST_CONNS.get_ptr_mut(dest_id)?;
    // SAFETY: valid elements; aligned 64-bit loads are never torn.
    let (active, inactive) = unsafe { ((*conns).active.max(0) as u64, (*conns).inactive.max(0) as u64) };
    let _ = inactive;
    let in_list = dest.flags & dest_flag::AVAILABLE != 0;
    Some((dest.weight as u64, active, in_list, overloaded(dest, conns)))
}

/// wlc's overhead of a server.
#[inline(always)]
fn overhead(dest_id: u32) -> u64 {
    let Some(conns) = DEST_CONNS.get_ptr_mut(dest_id) else { return 0 };
    // SAFETY: a valid element; aligned 64-bit loads are never torn.
    unsafe { (((*conns).active.max(0) as u64) << 8) + (*conns).inactive.max(0) as u64 }
}

/// State of the "is some server lightly loaded" scan, on the stack.
#[repr(C)]
struct LightScan {
    dests_start: u32,
    found: u32,
}

#[inline(never)]
extern "C" fn light_step(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LightScan` that `lblc_overloaded` passed.
    let scan = unsafe { &mut *(ctx as *mut LightScan) };
    let Some(&dest_id) = DEST_LISTS.get(scan.dests_start.wrapping_add(i)) else { return STOP };
    let Some((weight, active, _, _)) = member(dest_id) else { return STOP };
    if active * 2 < weight {
        scan.found = 1;
        return STOP;
    }
    NEXT
}

/// lblc's and lblcr's `is_overloaded`: more active connections than its
/// weight while some server of the list has fewer than half its weight.
#[inline(always)]
fn lblc_overloaded(svc: &Service, weight: u64, active: u64) -> bool {
    if active <= weight {
        return false;
    }
    let mut scan = LightScan { dests_start: svc.dests_start, found: 0 };
    let n = if svc.dests_len > MAX_DESTS_PER_SERVICE { MAX_DESTS_PER_SERVICE } else { svc.dests_len };
    // SAFETY: the callback only reads maps and writes `scan` on our stack.
    unsafe {
        bpf_loop(n, light_step as *mut c_void, (&raw mut scan).cast(), 0);
    }
    scan.found != 0
}

/// State of a walk over an lblcr set, on the stack: the set, and the best
/// member found so far.
#[repr(C)]
struct SetScan {
    set: LblcEntry,
    /// Set position (set_max) or dest id (set_min) of the best; MAX = none.
    best: u32,
    best_overhead: u64,
    best_weight: u64,
}

/// `ip_vs_dest_set_min`: in set order, skipping overloaded members, the
/// first one in the list with weight > 0, then wlc's comparison over the
/// members after it that are in the list. Returns a dest id or `u32::MAX`.
#[inline(always)]
fn set_min(set: &LblcEntry) -> u32 {
    let mut scan = SetScan { set: *set, best: u32::MAX, best_overhead: 0, best_weight: 0 };
    let n = if set.len as usize > LBLCR_MAX_SET { LBLCR_MAX_SET as u32 } else { set.len };
    // SAFETY: the callback only reads maps and writes `scan` on our stack.
    unsafe {
        bpf_loop(n, set_min_step as *mut c_void, (&raw mut scan).cast(), 0);
    }
    scan.best
}

#[inline(never)]
extern "C" fn set_min_step(k: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `SetScan` that `set_min` passed.
    let scan = unsafe { &mut *(ctx as *mut SetScan) };
    let Some(&id) = scan.set.dests.get(k as usize) else { return STOP };
    let Some((weight, _, in_list, over)) = member(id) else { return NEXT };
    if over {
        return NEXT;
    }
    if scan.best == u32::MAX {
        if weight > 0 && in_list {
            scan.best = id;
            scan.best_overhead = overhead(id);
            scan.best_weight = weight;
        }
        return NEXT;
    }
    let oh = overhead(id);
    if scan.best_overhead * weight > oh * scan.best_weight && in_list {
        scan.best = id;
        scan.best_overhead = oh;
        scan.best_weight = weight;
    }
    NEXT
}

/// `ip_vs_dest_set_max`: in set order, the first member with weight > 0,
/// then any later one with weight > 0 and a strictly higher
/// overhead / weight. Returns its position in the set, or `u32::MAX`.
#[inline(always)]
fn set_max(set: &LblcEntry) -> u32 {
    let mut scan = SetScan { set: *set, best: u32::MAX, best_overhead: 0, best_weight: 0 };
    let n = if set.len as usize > LBLCR_MAX_SET { LBLCR_MAX_SET as u32 } else { set.len };
    // SAFETY: the callback only reads maps and writes `scan` on our stack.
    unsafe {
        bpf_loop(n, set_max_step as *mut c_void, (&raw mut scan).cast(), 0);
    }
    scan.best
}

#[inline(never)]
extern "C" fn set_max_step(k: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `SetScan` that `set_max` passed.
    let scan = unsafe { &mut *(ctx as *mut SetScan) };
    let Some(&id) = scan.set.dests.get(k as usize) else { return STOP };
    let weight = DESTS.get(id).map_or(0, |d| d.weight as u64);
    let oh = overhead(id);
    let better = if scan.best == u32::MAX {
        weight > 0
    } else {
        scan.best_overhead * weight < oh * scan.best_weight && weight > 0
    };
    if better {
        scan.best = k;
        scan.best_overhead = oh;
        scan.best_weight = weight;
    }
    NEXT
}

#[inline(always)]
fn locality(svc: &Service, flow: &FlowKey, now: u64) -> Option<u32> {
    let key = LblcKey { service_id: svc.id, pad0: 0, addr: flow.dst };
    let is_lblcr = svc.scheduler == scheduler::LBLCR;
    if let Some(en) = LBLC_CACHE.get_ptr_mut(&key) {
        // SAFETY: a live cache element for this program run.
        let en = unsafe { &mut *en };
        if now.wrapping_sub(en.lastuse_ns) < LBLC_EXPIRATION_NS {
            en.lastuse_ns = now;
            if !is_lblcr {
                let id = en.dests[0];
                if let Some((weight, active, in_list, _)) = member(id) {
                    if in_list && weight > 0 && !lblc_overloaded(svc, weight, active) {
                        return Some(id);
                    }
                }
                let id = least(svc, scheduler::WLC)?;
                en.dests[0] = id;
                en.len = 1;
                return Some(id);
            }
            let chosen = set_min(en);
            // An old set sheds its most loaded member.
            if en.len > 1 && now.wrapping_sub(en.lastmod_ns) > LBLC_EXPIRATION_NS {
                let m = set_max(en) as usize;
                if m < LBLCR_MAX_SET {
                    for k in 0..LBLCR_MAX_SET - 1 {
                        if k >= m && (k as u32) + 1 < en.len {
                            en.dests[k] = en.dests[k + 1];
                        }
                    }
                    en.len -= 1;
                    en.lastmod_ns = now;
                }
            }
            if chosen != u32::MAX {
                if let Some((weight, active, _, _)) = member(chosen) {
                    if !lblc_overloaded(svc, weight, active) {
                        return Some(chosen);
                    }
                }
            }
            let id = least(svc, scheduler::WLC)?;
            let mut present = false;
            for k in 0..LBLCR_MAX_SET {
                if (k as u32) < en.len && en.dests[k] == id {
                    present = true;
                }
            }
            // New members go in front; a full set forgets its oldest.
            if !present {
                for k in (1..LBLCR_MAX_SET).rev() {
                    en.dests[k] = en.dests[k - 1];
                }
                en.dests[0] = id;
                if (en.len as usize) < LBLCR_MAX_SET {
                    en.len += 1;
                }
                en.lastmod_ns = now;
            }
            return Some(id);
        }
    }
    let id = least(svc, scheduler::WLC)?;
    let mut entry = LblcEntry { dests: [0; LBLCR_MAX_SET], len: 1, pad0: 0, lastuse_ns: now, lastmod_ns: now };
    entry.dests[0] = id;
    let _ = LBLC_CACHE.insert(&key, &entry, 0);
    Some(id)
}
