//! ICMP errors the director answers itself, turning the offending packet
//! around in place: "port unreachable" when no real server can take a new
//! connection (as IPVS does), "fragmentation needed" when a packet would not
//! fit the tunnel to its real server.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};

use crate::parse::{ETH_HLEN, EthHdr, Packet};

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

/// Replaces the packet with an ICMP destination-unreachable message (`code`,
/// and for fragmentation-needed the next-hop `mtu`) from the packet's
/// destination back to its source, sent out the way it came.
#[inline(always)]
pub fn icmp_unreachable(ctx: &XdpContext, pkt: &Packet, code: u8, mtu: u16) -> Result<(), ()> {
    // Bounded for the verifier: 14 or 18, and 20..=60.
    let l3 = pkt.l3_off;
    let ihl = pkt.ihl;
    if l3 < ETH_HLEN || l3 > ETH_HLEN + 4 || ihl < 20 || ihl > 60 {
        return Err(());
    }
    let quote = ihl + QUOTED_PAYLOAD;
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return Err(());
    }
    // SAFETY: the Ethernet header is in the packet, checked above.
    let eth: EthHdr = unsafe { core::ptr::read_unaligned(start as *const EthHdr) };

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
        (*new_eth).dst = eth.src;
        (*new_eth).src = eth.dst;
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
