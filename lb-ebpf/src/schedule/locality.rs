//! lblc and lblcr (ip_vs_lblc.c, ip_vs_lblcr.c): a cache from destination
//! address to a server (lblc) or a server set (lblcr) in front of wlc.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use lb_common::{
    FlowKey, LBLC_EXPIRATION_NS, LBLCR_MAX_SET, LblcEntry, LblcKey, MAX_REALS_PER_SERVICE, NO_REAL, Service,
    scheduler,
};

use super::{Load, NEXT, STOP, conn_counts, least::lb_sched_least, load, scratch, wlc_overhead};
use crate::maps::{LBLC_CACHE, REAL_CONNS, REAL_LISTS, REALS, scan_slot};

/// lblc's choice for the flow's destination address, or `NO_REAL`. A BPF
/// global function (see the module above).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_lblc(svc: *const Service, flow: *const FlowKey, now: u64) -> u32 {
    // SAFETY: null or values the caller holds.
    let (Some(svc), Some(flow)) = (unsafe { svc.as_ref() }, unsafe { flow.as_ref() }) else { return NO_REAL };
    let Some(en) = cached(svc, flow, now) else { return remember(svc, flow, now) };
    let id = en.reals[0];
    if let Some(l) = load(id) {
        if l.in_list && l.weight > 0 && !is_overloaded(svc, &l) {
            return id;
        }
    }
    let id = wlc(svc);
    if id != NO_REAL {
        en.reals[0] = id;
        en.len = 1;
    }
    id
}

/// lblcr's choice for the flow's destination address, or `NO_REAL`. A BPF
/// global function (see the module above).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_lblcr(svc: *const Service, flow: *const FlowKey, now: u64) -> u32 {
    // SAFETY: null or values the caller holds.
    let (Some(svc), Some(flow)) = (unsafe { svc.as_ref() }, unsafe { flow.as_ref() }) else { return NO_REAL };
    let Some(en) = cached(svc, flow, now) else { return remember(svc, flow, now) };
    let chosen = lb_sched_set_min(en);
    // An old set sheds its most loaded member.
    if en.len > 1 && now.wrapping_sub(en.lastmod_ns) > LBLC_EXPIRATION_NS {
        let m = lb_sched_set_max(en) as usize;
        if m < LBLCR_MAX_SET {
            for k in 0..LBLCR_MAX_SET - 1 {
                if k >= m && (k as u32) + 1 < en.len {
                    en.reals[k] = en.reals[k + 1];
                }
            }
            en.len -= 1;
            en.lastmod_ns = now;
        }
    }
    if chosen != NO_REAL {
        if let Some(l) = load(chosen) {
            if !is_overloaded(svc, &l) {
                return chosen;
            }
        }
    }
    let id = wlc(svc);
    if id == NO_REAL {
        return NO_REAL;
    }
    let mut present = false;
    for k in 0..LBLCR_MAX_SET {
        if (k as u32) < en.len && en.reals[k] == id {
            present = true;
        }
    }
    // New members go in front; a full set forgets its oldest.
    if !present {
        for k in (1..LBLCR_MAX_SET).rev() {
            en.reals[k] = en.reals[k - 1];
        }
        en.reals[0] = id;
        if (en.len as usize) < LBLCR_MAX_SET {
            en.len += 1;
        }
        en.lastmod_ns = now;
    }
    id
}

#[inline(always)]
fn cache_key(svc: &Service, flow: &FlowKey) -> LblcKey {
    LblcKey { service_id: svc.id, pad0: 0, addr: flow.dst }
}

/// The cache entry of the flow's destination address, if one is live; using
/// it keeps it so.
#[inline(always)]
fn cached(svc: &Service, flow: &FlowKey, now: u64) -> Option<&'static mut LblcEntry> {
    let en = LBLC_CACHE.get_ptr_mut(&cache_key(svc, flow))?;
    // SAFETY: a live cache element for this program run.
    let en = unsafe { &mut *en };
    if now.wrapping_sub(en.lastuse_ns) >= LBLC_EXPIRATION_NS {
        return None;
    }
    en.lastuse_ns = now;
    Some(en)
}

/// A destination address without a live entry: wlc's choice, remembered.
#[inline(always)]
fn remember(svc: &Service, flow: &FlowKey, now: u64) -> u32 {
    let id = wlc(svc);
    if id == NO_REAL {
        return NO_REAL;
    }
    // Built in a per-CPU slot, not on this function's stack: the XDP
    // program's frame and this call's stack up, and Linux 6.1 counts 512
    // bytes for the whole chain.
    let Some(entry) = scratch::<LblcEntry>(scan_slot::LBLC_ENTRY) else { return id };
    // SAFETY: this CPU's own slot, written whole before the insert reads it.
    unsafe {
        (*entry).reals = [0; LBLCR_MAX_SET];
        (*entry).reals[0] = id;
        (*entry).len = 1;
        (*entry).pad0 = 0;
        (*entry).lastuse_ns = now;
        (*entry).lastmod_ns = now;
        let _ = LBLC_CACHE.insert(&cache_key(svc, flow), &*entry, 0);
    }
    id
}

#[inline(always)]
fn wlc(svc: &Service) -> u32 {
    lb_sched_least(svc, scheduler::WLC as u32)
}

/// lblc's and lblcr's `is_overloaded`: more active connections than its
/// weight while some server of the list has fewer than half its weight.
#[inline(always)]
fn is_overloaded(svc: &Service, l: &Load) -> bool {
    l.active > l.weight && lb_sched_some_light(svc) != 0
}

/// Whether some server of the service has fewer active connections than
/// half its weight (1) or not (0). A BPF global function, so its scan is
/// verified once for both schedulers' several calls.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_some_light(svc: *const Service) -> u32 {
    // SAFETY: null or a service value the caller holds.
    let Some(svc) = (unsafe { svc.as_ref() }) else { return 0 };
    let mut scan = LightScan { reals_start: svc.reals_start, found: 0 };
    let n = svc.reals_len.min(MAX_REALS_PER_SERVICE);
    // SAFETY: the callback only reads maps and writes `scan` on our stack.
    unsafe {
        bpf_loop(n, light_step as *mut c_void, (&raw mut scan).cast(), 0);
    }
    scan.found
}

/// State of the "is some server lightly loaded" scan, on the stack.
#[repr(C)]
struct LightScan {
    reals_start: u32,
    found: u32,
}

#[inline(never)]
extern "C" fn light_step(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `LightScan` that `lb_sched_some_light` passed.
    let scan = unsafe { &mut *(ctx as *mut LightScan) };
    let Some(&real_id) = REAL_LISTS.get(scan.reals_start.wrapping_add(i)) else { return STOP };
    let Some(l) = load(real_id) else { return STOP };
    if l.active * 2 < l.weight {
        scan.found = 1;
        return STOP;
    }
    NEXT
}

/// State of a walk over an lblcr set, in a scratch slot: the set, and the
/// best member found so far.
#[repr(C)]
struct SetScan {
    set: LblcEntry,
    /// Set position (set_max) or real server id (set_min) of the best; NO_REAL = none.
    best: u32,
    pad0: u32,
    best_overhead: u64,
    best_weight: u64,
}

/// Runs `step` over the members of `set`; the best it found.
#[inline(always)]
fn walk_set(set: &LblcEntry, step: *mut c_void) -> u32 {
    let Some(scan) = scratch::<SetScan>(scan_slot::LBLCR_SET) else { return NO_REAL };
    // SAFETY: this CPU's scratch slot, valid for this program run and ours
    // alone while it runs. Zeroes by volatile stores (no memset subprogram).
    unsafe {
        (&raw mut (*scan).set).write(*set);
        (&raw mut (*scan).best).write(NO_REAL);
        (&raw mut (*scan).pad0).write_volatile(0);
        (&raw mut (*scan).best_overhead).write_volatile(0);
        (&raw mut (*scan).best_weight).write_volatile(0);
    }
    let n = set.len.min(LBLCR_MAX_SET as u32);
    let mut state = scan;
    // SAFETY: the callback only reads maps and writes the scan state, whose
    // pointer it finds in `state` on our stack.
    unsafe {
        bpf_loop(n, step, (&raw mut state).cast(), 0);
        (*scan).best
    }
}

/// `ip_vs_dest_set_min`: in set order, skipping overloaded members, the
/// first one in the list with weight > 0, then wlc's comparison over the
/// members after it that are in the list. Returns a real server id or `NO_REAL`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_set_min(set: *const LblcEntry) -> u32 {
    // SAFETY: null or a cache entry the caller holds.
    let Some(set) = (unsafe { set.as_ref() }) else { return NO_REAL };
    walk_set(set, set_min_step as *mut c_void)
}

#[inline(never)]
extern "C" fn set_min_step(k: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` points to the pointer to the `SetScan` that `walk_set`
    // passed.
    let scan = unsafe { &mut **(ctx as *mut *mut SetScan) };
    let Some(&id) = scan.set.reals.get(k as usize) else { return STOP };
    let Some(l) = load(id) else { return NEXT };
    if l.overloaded {
        return NEXT;
    }
    let better = if scan.best == NO_REAL {
        l.weight > 0 && l.in_list
    } else {
        scan.best_overhead * l.weight > l.overhead() * scan.best_weight && l.in_list
    };
    if better {
        scan.best = id;
        scan.best_overhead = l.overhead();
        scan.best_weight = l.weight;
    }
    NEXT
}

/// `ip_vs_dest_set_max`: in set order, the first member with weight > 0,
/// then any later one with weight > 0 and a strictly higher
/// overhead / weight. Returns its position in the set, or `NO_REAL`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_set_max(set: *const LblcEntry) -> u32 {
    // SAFETY: null or a cache entry the caller holds.
    let Some(set) = (unsafe { set.as_ref() }) else { return NO_REAL };
    walk_set(set, set_max_step as *mut c_void)
}

#[inline(never)]
extern "C" fn set_max_step(k: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` points to the pointer to the `SetScan` that `walk_set`
    // passed.
    let scan = unsafe { &mut **(ctx as *mut *mut SetScan) };
    let Some(&id) = scan.set.reals.get(k as usize) else { return STOP };
    let weight = REALS.get(id).map_or(0, |d| d.weight as u64);
    let overhead = REAL_CONNS.get_ptr_mut(id).map_or(0, |c| {
        let (active, inactive) = conn_counts(c);
        wlc_overhead(active, inactive)
    });
    let better = weight > 0 && (scan.best == NO_REAL || scan.best_overhead * weight < overhead * scan.best_weight);
    if better {
        scan.best = k;
        scan.best_overhead = overhead;
        scan.best_weight = weight;
    }
    NEXT
}
