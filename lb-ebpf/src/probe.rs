//! Feature probes: tiny programs lbd loads before the datapath, each using
//! one kernel feature the datapath needs and no other, so a refusal names
//! the missing feature instead of failing somewhere in the big program.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};

#[map]
static PROBE_COUNTER: Array<u64> = Array::with_max_entries(1, 0);

/// BPF atomic fetch-and-add (ISA v3): how rr and wrr share their position.
#[xdp]
pub fn probe_atomic_fetch(_ctx: XdpContext) -> u32 {
    let Some(counter) = PROBE_COUNTER.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: an array element, valid for this program run.
    let old = unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(counter, 1) };
    if old == u64::MAX { xdp_action::XDP_DROP } else { xdp_action::XDP_PASS }
}

/// BPF global functions taking a pointer (verified on their own, with BTF):
/// how the scheduler families are built.
#[xdp]
pub fn probe_global_function(ctx: XdpContext) -> u32 {
    let value = ctx.data() as u64;
    lb_probe_global(&value)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_probe_global(value: *const u64) -> u32 {
    // SAFETY: null or the caller's stack variable.
    match unsafe { value.as_ref() } {
        Some(v) if *v & 1 == 1 => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
