//! The datapath's clock: `jiffies × tick_ns`. The verifier inlines
//! `bpf_jiffies64` as one load, where `bpf_ktime_get_coarse_ns` is a call
//! (and, on CPUs with return thunks, a costly one) on every packet.

use aya_ebpf::{bindings::xdp_action, helpers, macros::xdp, programs::XdpContext};
use lb_common::Director;

/// Now, in nanoseconds from the clock's own epoch, advancing a tick at a
/// time: what connection entries are stamped with.
#[inline(always)]
pub fn now_ns(director: &Director) -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { helpers::bpf_jiffies64() }.wrapping_mul(director.tick_ns as u64)
}

/// Writes jiffies and CLOCK_MONOTONIC (ns), 8 bytes each in host order, at
/// the start of the packet. Never attached: the loader runs it with
/// `BPF_PROG_TEST_RUN`, twice at start to measure HZ, then whenever the
/// controller needs the datapath's time (expiry sweeps, sync, listings).
#[xdp]
pub fn lb_clock(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 16 > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: 16 bytes checked just above; unaligned writes.
    unsafe {
        let p = start as *mut u64;
        p.write_unaligned(helpers::bpf_jiffies64());
        p.add(1).write_unaligned(helpers::bpf_ktime_get_ns());
    }
    xdp_action::XDP_PASS
}
