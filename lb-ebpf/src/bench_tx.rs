//! The benchmark's yardstick (`cargo xtask bench`): an XDP program that
//! does nothing but send every frame back out (`XDP_TX`). No parsing, no
//! maps, no writes: what running any XDP program at all costs on this
//! kernel, the stand-in for the physical limit the datapath is measured
//! against.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
