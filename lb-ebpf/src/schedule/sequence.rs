//! rr and wrr walk a sequence the controller precomputed from IPVS's rules
//! (see `lb_common::sched`): one atomic add on the service's position picks
//! the next entry, so all CPUs share one walk, exactly as IPVS's single
//! locked pointer does, without a lock.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use lb_common::{NO_REAL, Service};

use super::takes_new_connections;
use crate::maps::{REAL_CONNS, REALS, SCHED_STATE, SCHED_TABLE};

/// How many unavailable or overloaded servers a walk may skip before giving
/// up.
const MAX_SKIPS: u32 = 8;

/// The next server of the service's sequence that takes new connections,
/// or `NO_REAL`. A BPF global function (see the module above).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_sequence(svc: *const Service) -> u32 {
    // SAFETY: null or a service value the caller looked up.
    let Some(svc) = (unsafe { svc.as_ref() }) else { return NO_REAL };
    walk(svc).unwrap_or(NO_REAL)
}

#[inline(always)]
fn walk(svc: &Service) -> Option<u32> {
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
        let real_id = *SCHED_TABLE.get(slot)?;
        let real = REALS.get(real_id)?;
        let conns = REAL_CONNS.get_ptr_mut(real_id)?;
        if takes_new_connections(real, conns) {
            return Some(real_id);
        }
    }
    None
}
