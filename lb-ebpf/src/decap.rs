//! The real servers' side of TUN: strips the outer header of IPv4-in-IPv4
//! and IPv6-in-IPv6 packets addressed to this host and passes the inner
//! packet up, for hosts without the `ipip` or `ip6_tunnel` module (run by
//! `lbd decap --interface IF`).
//!
//! Only tunnels from the configured directors (`--from`), carrying a packet
//! for one of this host's VIPs, are opened: anything else unwrapped here
//! would reach the host as if it had arrived natively, past source-address
//! filters, and be forwarded where forwarding is on. Everything else passes
//! to the kernel untouched, counted by reason (without the modules the
//! kernel drops IP-in-IP). Each family has its own maps; both share the
//! counters. A tunnel mixing the families (IPv6 in IPv4, protocol 41; IPv4
//! in IPv6, next header 4) is not opened: lbd's directors never send one.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_xdp_adjust_head,
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use lb_common::{IPPROTO_IPIP, IPPROTO_IPV6, decap};

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

/// The same three for IPv6, keyed by the address as
/// `lb_common::ipv6_words` stores it (four words in network order).
#[map]
static DECAP_ADDRS6: HashMap<[u32; 4], u8> = HashMap::with_max_entries(decap::MAX_ADDRS, 0);
#[map]
static DECAP_SOURCES6: HashMap<[u32; 4], u8> = HashMap::with_max_entries(decap::MAX_SOURCES, 0);
#[map]
static DECAP_VIPS6: HashMap<[u32; 4], u8> = HashMap::with_max_entries(decap::MAX_VIPS, 0);

/// Flags ([`decap::ANY_SOURCE`], for both families).
#[map]
static DECAP_CONFIG: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static DECAP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(decap::COUNT, 0);

const ETH_HLEN: usize = 14;
const IPV6_HLEN: usize = 40;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

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
    let outer = match proto {
        ETH_P_IP => outer4(start, end, l3)?,
        ETH_P_IPV6 => outer6(start, end, l3)?,
        _ => return Err(decap::NOT_TUNNEL),
    };
    open(ctx, start, end, &eth, l3, outer)
}

/// The length of the outer IPv4 header of a tunnel to open, or why not.
#[inline(always)]
fn outer4(start: usize, end: usize, l3: usize) -> Result<usize, u32> {
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
    Ok(outer)
}

/// The length of the outer IPv6 header of a tunnel to open (40: no
/// extension header is skipped, one before next header 41 makes it no
/// tunnel here), or why not.
#[inline(always)]
fn outer6(start: usize, end: usize, l3: usize) -> Result<usize, u32> {
    let ip = start + l3;
    if ip + IPV6_HLEN > end {
        return Err(decap::NOT_TUNNEL);
    }
    // SAFETY: the outer IPv6 header is inside the packet, checked above.
    let (version, payload_len, next_header, saddr, daddr) = unsafe {
        let ip = ip as *const u8;
        (
            *ip >> 4,
            u16::from_be_bytes([*ip.add(4), *ip.add(5)]) as usize,
            *ip.add(6),
            core::ptr::read_unaligned(ip.add(8) as *const [u32; 4]),
            core::ptr::read_unaligned(ip.add(24) as *const [u32; 4]),
        )
    };
    // Masked where LLVM cannot drop the mask: Debian 12's 6.1 verifier does
    // not bound a byte swap's result and refused `inner + payload_len`.
    // SAFETY: a read of a local variable.
    let payload_len = unsafe { core::ptr::read_volatile(&payload_len) } & 0xFFFF;
    if version != 6 || next_header != IPPROTO_IPV6 {
        return Err(decap::NOT_TUNNEL);
    }
    if DECAP_ADDRS6.get_ptr(&daddr).is_none() {
        return Err(decap::NOT_FOR_US);
    }
    if !from_director6(&saddr) {
        return Err(decap::FOREIGN_SOURCE);
    }
    // The inner packet must be IPv6 too, for one of our VIPs. Its header's
    // check comes first, at a constant offset the verifier follows.
    let inner = ip + IPV6_HLEN;
    if inner + IPV6_HLEN > end {
        return Err(decap::TRUNCATED);
    }
    // What the outer header says it carries must be there, and hold the
    // inner header (a jumbogram's 0 needs a hop-by-hop header: no tunnel).
    if payload_len < IPV6_HLEN || inner + payload_len > end {
        return Err(decap::TRUNCATED);
    }
    // SAFETY: a whole IPv6 header from `inner`, checked above.
    let (inner_version, inner_daddr) = unsafe {
        let inner = inner as *const u8;
        (*inner >> 4, core::ptr::read_unaligned(inner.add(24) as *const [u32; 4]))
    };
    if inner_version != 6 {
        return Err(decap::NOT_TUNNEL);
    }
    if DECAP_VIPS6.get_ptr(&inner_daddr).is_none() {
        return Err(decap::NOT_A_VIP);
    }
    Ok(IPV6_HLEN)
}

/// Strips the `outer` header: the tunnel's packet is IP of the outer
/// header's family, so the EtherType stays as it is (IPv4's or IPv6's).
#[inline(always)]
fn open(
    ctx: &XdpContext,
    start: usize,
    end: usize,
    eth: &[u8; ETH_HLEN + 4],
    l3: usize,
    outer: usize,
) -> Result<(), u32> {
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
            core::ptr::write_unaligned(moved_to as *mut [u8; ETH_HLEN + 4], *eth);
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

/// The same for an IPv6 source.
#[inline(always)]
fn from_director6(saddr: &[u32; 4]) -> bool {
    DECAP_CONFIG.get(0).is_some_and(|flags| flags & decap::ANY_SOURCE != 0) || DECAP_SOURCES6.get_ptr(saddr).is_some()
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
