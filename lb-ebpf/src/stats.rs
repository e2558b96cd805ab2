//! Stage 5: counters. Per-CPU, so the hot path never shares a cache line.

use lb_common::Counters;

use crate::maps::{REAL_STATS, REASON_STATS, SERVICE_STATS};

#[inline(always)]
pub fn count_reason(reason: u32) {
    if let Some(counter) = REASON_STATS.get_ptr_mut(reason) {
        // SAFETY: this CPU's own slot.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
fn add(counters: Option<*mut Counters>, bytes: u32, new_conn: bool) {
    if let Some(c) = counters {
        // SAFETY: this CPU's own slot.
        let c = unsafe { &mut *c };
        c.in_packets += 1;
        c.in_bytes += bytes as u64;
        if new_conn {
            c.conns += 1;
        }
    }
}

/// One packet of `bytes` forwarded for the service to the real server.
#[inline(always)]
pub fn account(service_id: u32, real_id: u32, bytes: u32, new_conn: bool) {
    add(SERVICE_STATS.get_ptr_mut(service_id), bytes, new_conn);
    add(REAL_STATS.get_ptr_mut(real_id), bytes, new_conn);
}

/// One reply packet of `bytes` from the real server to the client (NAT,
/// where the director sees replies).
#[inline(always)]
pub fn account_out(service_id: u32, real_id: u32, bytes: u32) {
    for counters in [SERVICE_STATS.get_ptr_mut(service_id), REAL_STATS.get_ptr_mut(real_id)] {
        if let Some(c) = counters {
            // SAFETY: this CPU's own slot.
            let c = unsafe { &mut *c };
            c.out_packets += 1;
            c.out_bytes += bytes as u64;
        }
    }
}
