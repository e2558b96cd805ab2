//! ICMP errors the director answers itself, turning the offending packet
//! around in place: "port unreachable" when no real server can take a new
//! connection (as IPVS does), "fragmentation needed" when a packet would not
//! fit the tunnel to its real server. Never to a source that is no single
//! host, and no more than the director's rate limit allows.

use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{Director, reason};

use crate::{
    clock,
    maps::ICMP_BUCKET,
    parse::{ETH_HLEN, EthHdr, Packet},
};

pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_PORT_UNREACH: u8 = 3;
pub const ICMP_FRAG_NEEDED: u8 = 4;
/// An outer IP header and an ICMP header go in front of the quoted packet.
const GROW: usize = 28;
/// ICMP quotes the offending IP header and 8 bytes of what follows it.
const QUOTED_PAYLOAD: usize = 8;

/// Folds a 32-bit one's complement sum to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Checksum of a 20-byte IPv4 header without options, from its fields
/// (all in network byte order as stored).
#[inline(always)]
pub fn ipv4_header_checksum(words: &[u16; 10]) -> u16 {
    let mut sum: u64 = 0;
    for w in words {
        sum += u16::from_be(*w) as u64;
    }
    fold(sum).to_be()
}

/// Answers the packet with an ICMP destination-unreachable message (`code`,
/// and for fragmentation-needed the next-hop `mtu`) if it may be answered:
/// `(XDP_TX, sent)`; else it is dropped, counted as a bad source, as over
/// the rate limit, or as `failed` (the message could not be built).
#[inline(always)]
pub fn answer(
    ctx: &XdpContext,
    pkt: &Packet,
    director: &Director,
    code: u8,
    mtu: u16,
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
    match icmp_unreachable(ctx, pkt, &eth, director, code, mtu) {
        Ok(()) => (xdp_action::XDP_TX, sent),
        Err(()) => (xdp_action::XDP_DROP, failed),
    }
}

/// Whether an ICMP error about this packet may go back to its sender:
/// never about a datagram whose source is no single host (0.0.0.0/8,
/// loopback, multicast, class E and the limited broadcast), nor about one
/// sent as a link-layer broadcast or multicast or to another host's MAC
/// (RFC 1812 4.3.2.7, RFC 1122 3.2.2; the kernel never answers these
/// either: martian sources never route, __icmp_send wants PACKET_HOST and
/// ip_rcv drops PACKET_OTHERHOST), nor from a group MAC. Nor to the VIP
/// itself, a spoofed packet from the VIP to the VIP. (A subnet's directed
/// broadcast is not known here; it only reaches us from that subnet's own
/// router.)
#[inline(always)]
fn single_host(pkt: &Packet, eth: &EthHdr, director: &Director) -> bool {
    // The first octet of the source (the address is stored in network order).
    let first = pkt.flow.src[0].to_ne_bytes()[0];
    first != 0
        && first != 127
        && first < 224
        && pkt.flow.src[0] != pkt.flow.dst[0]
        && eth.src[0] & 1 == 0
        && mac_words(&eth.dst) == mac_words(&director.mac)
}

/// A MAC as three 16-bit words: compared without a call to a byte-wise
/// `memcmp` subprogram.
#[inline(always)]
pub fn mac_words(mac: &[u8; 6]) -> [u16; 3] {
    // SAFETY: 6 bytes; an unaligned read of them.
    unsafe { core::ptr::read_unaligned(mac.as_ptr().cast::<[u16; 3]>()) }
}

const NS_PER_SEC: u64 = 1_000_000_000;

/// Whether the director may send one more ICMP error now, taking it from
/// the one token bucket all CPUs share: the kernel's icmp_global_allow and
/// icmp_global_consume (net/ipv4/icmp.c, Linux 6.x), with the director's
/// `icmp_rate_limit` for `icmp_msgs_per_sec` and `icmp_burst` for
/// `icmp_msgs_burst`. An empty bucket is refilled for the time since the
/// last refill (at most a second's worth, at most the burst), at most every
/// 20 ms; whoever moves the stamp (compare-and-exchange) refills. Unlike the
/// kernel a reply always takes one token, not 0 to 2 at random: the kernel
/// hides its shared budget from an attacker who probes other flows' ports
/// through it (CVE-2020-25705); ours is spent only on packets to VIPs, on
/// facts the prober could see anyway (a service without a live server, a
/// path MTU).
#[inline(always)]
pub fn allow(director: &Director) -> bool {
    let rate = director.icmp_rate_limit as u64;
    if rate == 0 {
        return false;
    }
    let Some(bucket) = ICMP_BUCKET.get_ptr_mut(0) else { return false };
    // SAFETY: the map's one element, valid for this program run; shared by
    // every CPU, so only written atomically (BPF has no atomic load: an
    // aligned 8-byte load is one, and volatile keeps it a fresh one).
    unsafe {
        let credit = &raw mut (*bucket).credit;
        let stamp = &raw mut (*bucket).stamp_ns;
        if credit.read_volatile() <= 0 {
            let now = clock::now_ns(director);
            let last = stamp.read_volatile();
            let elapsed = now.wrapping_sub(last);
            let elapsed = if elapsed > NS_PER_SEC { NS_PER_SEC } else { elapsed };
            if elapsed < NS_PER_SEC / 50 {
                return false;
            }
            let incr = rate * elapsed / NS_PER_SEC;
            if incr == 0 {
                return false;
            }
            let (_, won) =
                atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(stamp, last, now);
            if won {
                // Refilled only when empty, so adding at most the burst
                // keeps it at most the burst.
                let burst = if director.icmp_burst == 0 { 1 } else { director.icmp_burst as u64 };
                let incr = if incr > burst { burst } else { incr };
                atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(credit, incr as i64);
            }
        }
        // SeqCst: LLVM's BPF backend makes a relaxed add the non-fetching
        // `lock +=`, and the old value is the answer (as in `sequence`).
        if atomic_xadd::<i64, i64, { AtomicOrdering::SeqCst }>(credit, -1) > 0 {
            return true;
        }
        // Another CPU took the last one: give it back.
        atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(credit, 1);
    }
    false
}

/// Replaces the packet with an ICMP destination-unreachable message (`code`,
/// and for fragmentation-needed the next-hop `mtu`) from the packet's
/// destination back to its source (`eth`: its Ethernet header as it came),
/// sent out the way it came from the director's MAC.
#[inline(always)]
fn icmp_unreachable(
    ctx: &XdpContext,
    pkt: &Packet,
    eth: &EthHdr,
    director: &Director,
    code: u8,
    mtu: u16,
) -> Result<(), ()> {
    // Bounded for the verifier: 14 or 18, and 20..=60.
    let l3 = pkt.l3_off;
    let ihl = pkt.ihl;
    if l3 < ETH_HLEN || l3 > ETH_HLEN + 4 || ihl < 20 || ihl > 60 {
        return Err(());
    }
    let quote = ihl + QUOTED_PAYLOAD;

    // SAFETY: growing the head keeps the old bytes where they were.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(GROW as i32)) } != 0 {
        return Err(());
    }
    let start = ctx.data();
    let end = ctx.data_end();
    // The Ethernet part: constant offsets below 18 + GROW.
    if start + ETH_HLEN + 4 + GROW > end {
        return Err(());
    }
    let new_eth = start as *mut EthHdr;
    // SAFETY: offsets below ETH_HLEN + 4 + GROW, checked just above.
    unsafe {
        // Word writes, as forward::set_macs (the frame start stays 2-aligned).
        let (dst, src) = (mac_words(&eth.src), mac_words(&director.mac));
        core::ptr::write(new_eth.cast::<[u16; 6]>(), [dst[0], dst[1], dst[2], src[0], src[1], src[2]]);
        // The EtherType (and a VLAN tag) from the old header, now GROW on.
        let old = (start + GROW) as *const u8;
        let new = start as *mut u8;
        for i in 12..18 {
            if i < l3 {
                *new.add(i) = *old.add(i);
            }
        }
    }
    let ip_total = (20 + 8 + quote) as u16;
    let mut ip = [0u16; 10];
    ip[0] = 0x45c0u16.to_be(); // IPv4, 20 bytes, TOS internetwork control
    ip[1] = ip_total.to_be();
    ip[4] = (64u16 << 8 | 1).to_be(); // TTL 64, protocol ICMP
    let vip = pkt.flow.dst[0].to_ne_bytes();
    let client = pkt.flow.src[0].to_ne_bytes();
    ip[6] = u16::from_ne_bytes([vip[0], vip[1]]);
    ip[7] = u16::from_ne_bytes([vip[2], vip[3]]);
    ip[8] = u16::from_ne_bytes([client[0], client[1]]);
    ip[9] = u16::from_ne_bytes([client[2], client[3]]);
    ip[5] = ipv4_header_checksum(&ip);
    // A pointer past a variable offset needs its own bounds check.
    let ip_at = start + l3;
    if ip_at + 28 > end {
        return Err(());
    }
    let mtu = mtu.to_be_bytes();
    // SAFETY: 28 bytes from `ip_at`, checked just above.
    unsafe {
        core::ptr::write_unaligned(ip_at as *mut [u16; 10], ip);
        core::ptr::write_unaligned((ip_at + 20) as *mut [u8; 8], [ICMP_DEST_UNREACH, code, 0, 0, 0, 0, mtu[0], mtu[1]]);
    }
    // The ICMP checksum covers its header and the quote.
    let icmp_at = start + l3 + 20;
    let mut sum: u64 = 0;
    for i in 0..19usize {
        let off = i * 4;
        if off >= 8 + quote {
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
    let check_at = start + l3 + 22;
    if check_at + 2 > end {
        return Err(());
    }
    // SAFETY: bounds checked on the line above.
    unsafe { core::ptr::write_unaligned(check_at as *mut [u8; 2], fold(sum).to_be_bytes()) };

    // Sizes from the parse, not from packet pointers (the verifier refuses
    // 32-bit arithmetic on pointers, which a pointer difference can become).
    let keep = (l3 + 20 + 8 + quote) as i32;
    let have = (GROW + pkt.frame_len) as i32;
    // SAFETY: shrinking the tail to what the message needs.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, keep - have) } != 0 {
        return Err(());
    }
    Ok(())
}
