//! The real servers' side of TUN: strips the outer header of IP-in-IP
//! packets addressed to this host and passes the inner packet up, for hosts
//! without the `ipip` module (run by `lbd decap --interface IF`). Anything
//! else passes untouched.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{HashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{IPPROTO_IPIP, decap};

/// This host's IPv4 addresses (network order): only tunnels to them are
/// opened.
#[map]
static DECAP_ADDRS: HashMap<u32, u8> = HashMap::with_max_entries(decap::MAX_ADDRS, 0);

#[map]
static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(decap::COUNT, 0);

const ETH_HLEN: usize = 14;

#[xdp]
pub fn lb_decap(ctx: XdpContext) -> u32 {
    let counter = match strip(&ctx) {
        Ok(()) => decap::DECAPSULATED,
        Err(reason) => reason,
    };
    if let Some(c) = DECAP_STATS.get_ptr_mut(counter) {
        // SAFETY: this CPU's own slot.
        unsafe { *c += 1 };
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn strip(ctx: &XdpContext) -> Result<(), u32> {
    // One packet pointer for everything below, with one constant-size check
    // up front (anything shorter is no tunnel): the verifier tracks ranges
    // per pointer, and LLVM drops checks it finds implied by others.
    let start = ctx.data();
    let end = ctx.data_end();
    if start + ETH_HLEN + 4 + 20 > end {
        return Err(decap::NOT_TUNNEL);
    }
    // SAFETY: offsets below ETH_HLEN + 4 + 20, checked above.
    let (eth, proto, tagged_proto) = unsafe {
        (
            core::ptr::read_unaligned(start as *const [u8; ETH_HLEN + 4]),
            u16::from_be_bytes(core::ptr::read_unaligned((start + 12) as *const [u8; 2])),
            u16::from_be_bytes(core::ptr::read_unaligned((start + 16) as *const [u8; 2])),
        )
    };
    let (l3, proto) = if proto == 0x8100 || proto == 0x88A8 { (ETH_HLEN + 4, tagged_proto) } else { (ETH_HLEN, proto) };
    if proto != 0x0800 {
        return Err(decap::NOT_TUNNEL);
    }
    let ip = start + l3;
    if ip + 20 > end {
        return Err(decap::NOT_TUNNEL);
    }
    // SAFETY: the outer IPv4 header is inside the packet, checked above.
    let (version_ihl, frag_off, protocol, daddr) = unsafe {
        let ip = ip as *const u8;
        (
            *ip,
            u16::from_be_bytes([*ip.add(6), *ip.add(7)]),
            *ip.add(9),
            core::ptr::read_unaligned(ip.add(16) as *const u32),
        )
    };
    if protocol != IPPROTO_IPIP {
        return Err(decap::NOT_TUNNEL);
    }
    if DECAP_ADDRS.get_ptr(&daddr).is_none() {
        return Err(decap::NOT_FOR_US);
    }
    // A fragmented outer packet is left to the kernel to reassemble.
    if version_ihl >> 4 != 4 || frag_off & 0x3FFF != 0 {
        return Err(decap::NOT_TUNNEL);
    }
    let outer = ((version_ihl & 0x0F) as usize) * 4;
    if outer < 20 {
        return Err(decap::NOT_TUNNEL);
    }
    // The inner packet must be IPv4 too.
    let inner = start + l3 + outer;
    if inner + 4 > end {
        return Err(decap::TRUNCATED);
    }
    // SAFETY: checked just above.
    if unsafe { *(inner as *const u8) } >> 4 != 4 {
        return Err(decap::NOT_TUNNEL);
    }
    // Move the Ethernet header (and tag) forward over the outer header,
    // then drop what is in front of it.
    let moved_to = start + outer;
    if moved_to + ETH_HLEN + 4 > end {
        return Err(decap::TRUNCATED);
    }
    // SAFETY: 18 bytes from `moved_to` are in the packet, checked above;
    // without a tag only the first 14 are written (the inner IP header
    // starts right after them).
    unsafe {
        if l3 == ETH_HLEN {
            let mut plain = [0u8; ETH_HLEN];
            plain.copy_from_slice(&eth[..ETH_HLEN]);
            core::ptr::write_unaligned(moved_to as *mut [u8; ETH_HLEN], plain);
        } else {
            core::ptr::write_unaligned(moved_to as *mut [u8; ETH_HLEN + 4], eth);
        }
        if bpf_xdp_adjust_head(ctx.ctx, outer as i32) != 0 {
            return Err(decap::NOT_TUNNEL);
        }
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
