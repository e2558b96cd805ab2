//! The least-connection family (lc, wlc, sed, nq, fo, ovf): one scan of the
//! service's servers in IPVS list order with the counts the datapath keeps,
//! with each kernel scheduler's overhead, skip and tie rules. Ties keep the
//! first found, as the kernel's strict comparisons do.
//!
//! The scan runs under `bpf_loop`, so the verifier checks one step instead
//! of 256, and each rule has its own step (a const parameter), so it checks
//! only that rule's branches.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use lb_common::{MAX_REALS_PER_SERVICE, NO_REAL, Service, real_flag, scheduler};

use super::{NEXT, STOP, conn_counts, overloaded, scratch, wlc_overhead};
use crate::maps::{REAL_CONNS, REAL_LISTS, REALS, scan_slot};

/// The server the scheduler `rule` (a `scheduler` number of this family)
/// picks among the service's servers, or `NO_REAL`. A BPF global function
/// (see the module above); lblc and lblcr call it for wlc.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_least(svc: *const Service, rule: u32) -> u32 {
    // SAFETY: null or a service value the caller holds.
    let Some(svc) = (unsafe { svc.as_ref() }) else { return NO_REAL };
    let Some(scan) = scratch::<Scan>(scan_slot::LEAST) else { return NO_REAL };
    // Zeroed by volatile stores: LLVM merges plain zero stores into a call
    // to a byte-by-byte memset subprogram on BPF.
    // SAFETY: this CPU's scratch slot, valid for this program run and ours
    // alone while it runs.
    unsafe {
        (&raw mut (*scan).reals_start).write(svc.reals_start);
        (&raw mut (*scan).best).write(NO_REAL);
        (&raw mut (*scan).best_overhead).write_volatile(0);
        (&raw mut (*scan).best_weight).write_volatile(0);
    }
    let n = svc.reals_len.min(MAX_REALS_PER_SERVICE);
    let step = match rule as u8 {
        scheduler::LC => scan_step::<{ scheduler::LC }> as *mut c_void,
        scheduler::WLC => scan_step::<{ scheduler::WLC }> as *mut c_void,
        scheduler::SED => scan_step::<{ scheduler::SED }> as *mut c_void,
        scheduler::NQ => scan_step::<{ scheduler::NQ }> as *mut c_void,
        scheduler::FO => scan_step::<{ scheduler::FO }> as *mut c_void,
        scheduler::OVF => scan_step::<{ scheduler::OVF }> as *mut c_void,
        _ => return NO_REAL,
    };
    let mut state = scan;
    // SAFETY: the callback only reads maps and writes the scan state, whose
    // pointer it finds in `state` on our stack, which outlives the call.
    unsafe {
        bpf_loop(n, step, (&raw mut state).cast(), 0);
        (*scan).best
    }
}

/// State of a scan, in a scratch slot, handed to each step.
#[repr(C)]
struct Scan {
    reals_start: u32,
    /// The chosen real server id, `NO_REAL` while none.
    best: u32,
    best_overhead: u64,
    best_weight: u64,
}

#[inline(never)]
extern "C" fn scan_step<const RULE: u8>(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` points to the pointer to the `Scan` that
    // `lb_sched_least` passed.
    let scan = unsafe { &mut **(ctx as *mut *mut Scan) };
    let Some(&real_id) = REAL_LISTS.get(scan.reals_start.wrapping_add(i)) else { return STOP };
    let Some(real) = REALS.get(real_id) else { return STOP };
    let Some(conns) = REAL_CONNS.get_ptr_mut(real_id) else { return STOP };
    if real.flags & real_flag::AVAILABLE == 0 || overloaded(real, conns) {
        return NEXT;
    }
    let (active, inactive) = conn_counts(conns);
    let weight = real.weight as u64;
    let none_yet = scan.best == NO_REAL;
    let (overhead, better) = match RULE {
        // ip_vs_lc.c: fewest (active << 8) + inactive among weight > 0.
        scheduler::LC => {
            let oh = wlc_overhead(active, inactive);
            (oh, weight > 0 && (none_yet || oh < scan.best_overhead))
        }
        // ip_vs_wlc.c, ip_vs_sed.c: the first server with weight > 0
        // starts; a later one wins if best_overhead * w > overhead * best_w.
        scheduler::WLC | scheduler::SED => {
            let oh = if RULE == scheduler::WLC { wlc_overhead(active, inactive) } else { active + 1 };
            let better = if none_yet { weight > 0 } else { scan.best_overhead * weight > oh * scan.best_weight };
            (oh, better)
        }
        // ip_vs_nq.c: an idle server at once; otherwise as sed.
        scheduler::NQ => {
            if weight == 0 {
                return NEXT;
            }
            if active == 0 {
                scan.best = real_id;
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
        scan.best = real_id;
        scan.best_overhead = overhead;
        scan.best_weight = weight;
    }
    NEXT
}
