//! ICMPv6 errors the director answers itself, as `reply` does for IPv4:
//! "port unreachable" when no real server can take a new connection, and
//! "packet too big" when a tunnelled packet would not fit the path (IPVS
//! sends both with icmpv6_send). The packet is turned around in place; the
//! message quotes its IPv6 header, the extension headers walked and 8 bytes
//! of TCP or UDP (RFC 4443 asks for as much as fits in 1280 bytes; the
//! client's stack needs only the addresses and ports). Never to a source
//! that is no single host (RFC 4443 2.4 e), and within the rate limit all
//! ICMP errors of the director share.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{Director, IPPROTO_ICMPV6, reason};

use crate::{
    parse::{ETH_HLEN, EthHdr, Packet},
    parse6::IPV6_HLEN,
    reply::{allow, fold, mac_words},
};

pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PORT_UNREACH: u8 = 4;
pub const ICMPV6_PKT_TOOBIG: u8 = 2;
/// An IPv6 header and an ICMPv6 header go in front of the quoted packet.
const GROW: usize = IPV6_HLEN + 8;
/// The most of the offending packet quoted: its fixed header, up to 64
/// bytes of extension headers, and 8 bytes of what follows.
const MAX_QUOTE: usize = IPV6_HLEN + 64 + 8;

/// Answers the packet (its IPv6 header at `l3`: the caller's constant where
/// it has one) with an ICMPv6 error (`icmp_type`, `code`, and `info`, the
/// 32-bit field after the checksum) if it may be answered: `(XDP_TX,
/// sent)`; else it is dropped, counted as a bad source, as over the rate
/// limit, or as `failed` (the message could not be built).
#[inline(always)]
pub fn answer(
    ctx: &XdpContext,
    pkt: &Packet,
    l3: usize,
    director: &Director,
    icmp_type: u8,
    code: u8,
    info: u32,
    sent: u32,
    failed: u32,
) -> (u32, u32) {
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return (xdp_action::XDP_DROP, failed);
    }
    // SAFETY: the Ethernet header is in the packet, checked above.
    let eth: EthHdr = unsafe { core::ptr::read_unaligned(start as *const EthHdr) };
    if !single_host(pkt, &eth, director) {
        return (xdp_action::XDP_DROP, reason::DROP_ICMP_BAD_SOURCE);
    }
    if !allow(director) {
        return (xdp_action::XDP_DROP, reason::DROP_ICMP_RATE_LIMITED);
    }
    match icmp6_error(ctx, pkt, l3, &eth, director, icmp_type, code, info) {
        Ok(()) => (xdp_action::XDP_TX, sent),
        Err(()) => (xdp_action::XDP_DROP, failed),
    }
}

/// Whether the source is one host that may be told: not the unspecified
/// address, loopback, a multicast group or the VIP itself, and the frame
/// from a unicast MAC to the director's.
#[inline(always)]
fn single_host(pkt: &Packet, eth: &EthHdr, director: &Director) -> bool {
    let src = pkt.flow.src;
    let first = src[0].to_ne_bytes()[0];
    let unspecified = src[0] == 0 && src[1] == 0 && src[2] == 0 && src[3] == 0;
    let loopback = src[0] == 0 && src[1] == 0 && src[2] == 0 && src[3] == 1u32.to_be();
    let is_vip = src[0] == pkt.flow.dst[0]
        && src[1] == pkt.flow.dst[1]
        && src[2] == pkt.flow.dst[2]
        && src[3] == pkt.flow.dst[3];
    !unspecified
        && !loopback
        && first != 0xff
        && !is_vip
        && eth.src[0] & 1 == 0
        && mac_words(&eth.dst) == mac_words(&director.mac)
}

/// The sum of an address's 16-bit words (for a checksum).
#[inline(always)]
fn address_sum(words: &[u32; 4]) -> u64 {
    let mut sum = 0u64;
    for w in words {
        let b = w.to_ne_bytes();
        sum += u16::from_be_bytes([b[0], b[1]]) as u64 + u16::from_be_bytes([b[2], b[3]]) as u64;
    }
    sum
}

/// Replaces the packet with an ICMPv6 error from the packet's destination
/// back to its source (`eth`: its Ethernet header as it came), sent out the
/// way it came from the director's MAC.
#[inline(always)]
fn icmp6_error(
    ctx: &XdpContext,
    pkt: &Packet,
    l3: usize,
    eth: &EthHdr,
    director: &Director,
    icmp_type: u8,
    code: u8,
    info: u32,
) -> Result<(), ()> {
    if l3 < ETH_HLEN || l3 > ETH_HLEN + 4 {
        return Err(());
    }
    // What the parse read of the packet (headers and 8 bytes of TCP or
    // UDP, all within it), at most MAX_QUOTE; a multiple of 8.
    let mut quote = pkt.ihl + 8;
    if quote > MAX_QUOTE {
        quote = MAX_QUOTE;
    }
    let icmp_len = 8 + quote;

    // SAFETY: growing the head keeps the old bytes where they were.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(GROW as i32)) } != 0 {
        return Err(());
    }
    let start = ctx.data();
    let end = ctx.data_end();
    if start + ETH_HLEN + 4 + GROW > end {
        return Err(());
    }
    // SAFETY: offsets below ETH_HLEN + 4 + GROW, checked just above.
    unsafe {
        let (dst, src) = (mac_words(&eth.src), mac_words(&director.mac));
        core::ptr::write(start as *mut [u16; 6], [dst[0], dst[1], dst[2], src[0], src[1], src[2]]);
        // The EtherType (and a VLAN tag) from the old header, now GROW on.
        let old = (start + GROW) as *const u8;
        let new = start as *mut u8;
        for i in 12..18 {
            if i < l3 {
                *new.add(i) = *old.add(i);
            }
        }
    }
    // version 6, class 0, flow 0 | payload length | ICMPv6, hop limit 255 |
    // source: the VIP | destination: the client
    let mut ip = [0u32; 10];
    ip[0] = 0x6000_0000u32.to_be();
    ip[1] = ((icmp_len as u32) << 16 | (IPPROTO_ICMPV6 as u32) << 8 | 255).to_be();
    let (vip, client) = (pkt.flow.dst, pkt.flow.src);
    ip[2] = vip[0];
    ip[3] = vip[1];
    ip[4] = vip[2];
    ip[5] = vip[3];
    ip[6] = client[0];
    ip[7] = client[1];
    ip[8] = client[2];
    ip[9] = client[3];
    let ip_at = start + l3;
    if ip_at + GROW > end {
        return Err(());
    }
    // SAFETY: GROW bytes from `ip_at`, checked just above.
    unsafe {
        core::ptr::write_unaligned(ip_at as *mut [u32; 10], ip);
        // Hidden from LLVM, which would merge the zero bytes of a known
        // code and MTU into a call to memset: a BPF subprogram whose frame
        // the verifier adds to the callers' (over 512 bytes under
        // `lb_tunnel6` on 6.1).
        let header = (icmp_type as u64) << 56 | (code as u64) << 48 | info as u64;
        let header = core::ptr::read_volatile(&header).to_be_bytes();
        core::ptr::write_unaligned((ip_at + IPV6_HLEN) as *mut [u8; 8], header);
    }
    // The checksum covers the pseudo-header (addresses, length, next
    // header), the ICMPv6 header and the quote.
    let mut sum = address_sum(&vip) + address_sum(&client) + icmp_len as u64 + IPPROTO_ICMPV6 as u64;
    let icmp_at = ip_at + IPV6_HLEN;
    for i in 0..(8 + MAX_QUOTE) / 4 {
        let off = i * 4;
        if off >= icmp_len {
            break;
        }
        let word_at = icmp_at + off;
        if word_at + 4 > end {
            return Err(());
        }
        // SAFETY: bounds checked on the line above.
        let word = unsafe { core::ptr::read_unaligned(word_at as *const [u8; 4]) };
        sum += u16::from_be_bytes([word[0], word[1]]) as u64 + u16::from_be_bytes([word[2], word[3]]) as u64;
    }
    let check_at = icmp_at + 2;
    if check_at + 2 > end {
        return Err(());
    }
    // SAFETY: bounds checked on the line above.
    unsafe { core::ptr::write_unaligned(check_at as *mut [u8; 2], fold(sum).to_be_bytes()) };

    // Sizes from the parse, not from packet pointers (see `reply`).
    let keep = (l3 + IPV6_HLEN + icmp_len) as i32;
    let have = (GROW + pkt.frame_len) as i32;
    // SAFETY: shrinking the tail to what the message needs.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, keep - have) } != 0 {
        return Err(());
    }
    Ok(())
}
