//! Stage 3: choose a real server for a packet that starts a new connection.
//!
//! rr and wrr walk a sequence the controller precomputed from IPVS's rules
//! (see `lb_common::sched`): one atomic add on the service's position picks
//! the next entry, so all CPUs share one walk, exactly as IPVS's single
//! locked pointer does, without a lock.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use lb_common::{Dest, FlowKey, IPPROTO_TCP, Service, conn_state::tcp_flag, dest_flag, scheduler, service_flag};

use crate::maps::{DESTS, SCHED_STATE, SCHED_TABLE};

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

/// The chosen real server's id, or `None` when no server can take it.
#[inline(always)]
pub fn pick(svc: &Service) -> Option<u32> {
    match svc.scheduler {
        scheduler::RR | scheduler::WRR => walk_sequence(svc),
        _ => None,
    }
}

#[inline(always)]
fn takes_new_connections(dest: &Dest) -> bool {
    dest.flags & (dest_flag::AVAILABLE | dest_flag::OVERLOAD) == dest_flag::AVAILABLE
        && dest.weight > 0
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
        if takes_new_connections(dest) {
            return Some(dest_id);
        }
    }
    None
}
