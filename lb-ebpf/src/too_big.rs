//! A program the verifier refuses for its size: it walks more than the
//! kernel's 1,000,000 instructions through it. Named as the datapath's entry
//! point, for the test of how lbd reports a refusal (`lbd
//! --datapath-object`); never shipped.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, helpers::bpf_get_prandom_u32, macros::xdp, programs::XdpContext};

#[xdp]
pub fn lb_xdp(_ctx: XdpContext) -> u32 {
    // A bounded loop whose counter the verifier must track exactly (it
    // decides when the loop ends), so it walks every iteration: 4,000 of
    // some 300 instructions each. Few iterations of long bodies keep the
    // verifier's saved states, and so its time, small.
    // SAFETY: a helper without arguments.
    let mut acc = unsafe { bpf_get_prandom_u32() } as u64;
    let mut i: u32 = 0;
    while i < 4_000 {
        // SAFETY: reads of our own stack variable; volatile keeps LLVM from
        // folding the work away.
        unsafe {
            for _ in 0..64 {
                acc = core::ptr::read_volatile(&acc).rotate_left(7) ^ i as u64;
            }
        }
        i += 1;
    }
    if acc & 1 == 0 { xdp_action::XDP_PASS } else { xdp_action::XDP_DROP }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
