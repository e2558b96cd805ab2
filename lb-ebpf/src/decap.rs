//! The real servers' side of TUN: strips the outer header of IP-in-IP
//! packets addressed to this host and passes the inner packet up, for hosts
//! without the `ipip` module (run by `lbd decap --interface IF`).
//!
//! Only tunnels from the configured directors (`--from`), carrying a packet
//! for one of this host's VIPs, are opened: anything else unwrapped here
//! would reach the host as if it had arrived natively, past source-address
//! filters, and be forwarded where forwarding is on. Everything else passes
//! to the kernel untouched, counted by reason (without the `ipip` module the
//! kernel drops IP-in-IP).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{IPPROTO_IPIP, decap};

/// This host's IPv4 addresses (network order): only tunnels to them are
/// opened.
#[map]
static DECAP_ADDRS: HashMap<u32, u8> = HashMap::with_max_entries(decap::MAX_ADDRS, 0);

/// The directors (network order): only tunnels from them are opened,
/// unless `DECAP_CONFIG` says any source.
#[map]
static DECAP_SOURCES: HashMap<u32, u8> = HashMap::with_max_entries(decap::MAX_SOURCES, 0);

/// This host's VIPs (network order): only packets for them are unwrapped.
#[map]
static DECAP_VIPS: HashMap<u32, u8> = HashMap::with_max_entries(decap::MAX_VIPS, 0);

/// Flags ([`decap::ANY_SOURCE`]).
#[map]
static DECAP_CONFIG: Array<u32> = Array::with_max_entries(1, 0);

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
    let (version_ihl, frag_off, protocol, saddr, daddr) = unsafe {
        let ip = ip as *const u8;
        (
            *ip,
            u16::from_be_bytes([*ip.add(6), *ip.add(7)]),
            *ip.add(9),
            core::ptr::read_unaligned(ip.add(12) as *const u32),
            core::ptr::read_unaligned(ip.add(16) as *const u32),
        )
    };
    if protocol != IPPROTO_IPIP {
        return Err(decap::NOT_TUNNEL);
    }
    if DECAP_ADDRS.get_ptr(&daddr).is_none() {
        return Err(decap::NOT_FOR_US);
    }
    if !from_director(saddr) {
        return Err(decap::FOREIGN_SOURCE);
    }
    // A fragmented outer packet is left to the kernel to reassemble.
    if version_ihl >> 4 != 4 || frag_off & 0x3FFF != 0 {
        return Err(decap::NOT_TUNNEL);
    }
    let outer = ((version_ihl & 0x0F) as usize) * 4;
    if outer < 20 {
        return Err(decap::NOT_TUNNEL);
    }
    // The inner packet must be IPv4 too, for one of our VIPs.
    let inner = start + l3 + outer;
    if inner + 20 > end {
        return Err(decap::TRUNCATED);
    }
    // SAFETY: a whole IPv4 header from `inner`, checked just above.
    let (inner_version, inner_daddr) = unsafe {
        let inner = inner as *const u8;
        (*inner >> 4, core::ptr::read_unaligned(inner.add(16) as *const u32))
    };
    if inner_version != 4 {
        return Err(decap::NOT_TUNNEL);
    }
    if DECAP_VIPS.get_ptr(&inner_daddr).is_none() {
        return Err(decap::NOT_A_VIP);
    }
    // Move the Ethernet header (and tag) forward over the outer header,
    // then drop what is in front of it. LLVM finds this check implied by
    // the inner header's and drops it, but the verifier keeps ranges per
    // pointer and needs it for `moved_to`: the barrier hides where
    // `moved_to` comes from (as the kernel's `barrier_var`).
    let moved_to = core::hint::black_box(start + outer);
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

/// Whether `saddr` (network order) is a configured director, or any
/// source is allowed.
#[inline(always)]
fn from_director(saddr: u32) -> bool {
    DECAP_CONFIG.get(0).is_some_and(|flags| flags & decap::ANY_SOURCE != 0) || DECAP_SOURCES.get_ptr(&saddr).is_some()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
