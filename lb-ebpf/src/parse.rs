//! Stage 1: read the headers. Ethernet with at most one 802.1Q/802.1ad tag,
//! IPv4 with any header length, then the TCP or UDP ports (or, for ICMP,
//! nothing more: `related` reads it). Everything after the IP header is
//! read within the IP total length, never from the Ethernet padding after
//! it. Anything else is a pass reason; nothing is written here.

use aya_ebpf::programs::XdpContext;
use lb_common::{AF_INET, FlowKey, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, reason};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Fragment offset and more-fragments bits of `frag_off`.
const IP_FRAGMENT_MASK: u16 = 0x3FFF;
const IP_DONT_FRAGMENT: u16 = 0x4000;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub proto: u16,
}

/// What the later stages need to know of a packet.
pub struct Packet {
    pub flow: FlowKey,
    /// Offset of the IP header (after Ethernet and an optional VLAN tag).
    pub l3_off: usize,
    /// IP header length in bytes: for IPv4 20..=60, for IPv6 the fixed
    /// header and the extension headers walked (where TCP or UDP starts).
    pub ihl: usize,
    /// Where the IP packet ends (`l3_off` + its total length): what lies
    /// beyond, up to the frame's end, is padding.
    pub ip_end: usize,
    /// The whole frame's length.
    pub frame_len: usize,
    /// IP total length (for IPv6 the fixed header and its payload), what
    /// IPVS counts as bytes.
    pub ip_len: u32,
    /// IPv4's TOS, IPv6's traffic class.
    pub tos: u8,
    /// The Don't Fragment bit is set (always, for IPv6: no router
    /// fragments it).
    pub dont_fragment: bool,
    /// TCP flags byte, 0 for UDP.
    pub tcp_flags: u8,
}

/// The `N` 16-bit words at `offset`, if the packet holds all of them.
///
/// Headers are read a word at a time, not byte by byte: BPF has no
/// unaligned loads, so an unaligned read of an address costs four byte
/// loads and six shifts and ors, and the parser reads many. A frame starts
/// 2-byte aligned (the kernel's own model of packet data: the verifier
/// checks packet alignment on that assumption where it matters, NET_IP_ALIGN),
/// and every offset read here is even (Ethernet 14, a tag 4, an IPv4 header
/// a multiple of 4, IPv6's headers multiples of 8), so each word is
/// aligned.
#[inline(always)]
pub fn words<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<[u16; N], u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + 2 * N > end {
        return Err(reason::PASS_MALFORMED);
    }
    // SAFETY: the words lie inside the packet (checked just above) and are
    // 2-byte aligned (see above).
    Ok(unsafe { core::ptr::read((start + offset) as *const [u16; N]) })
}

/// `value`, through the stack, where LLVM cannot follow it: for what LLVM
/// knows and the verifier does not. The end of the IP packet: LLVM knows it
/// lies within the frame (checked), so it would drop each later frame check
/// of a header already checked against the IP packet's end, and the
/// verifier, which learns a packet's bounds only from comparisons with the
/// frame's end, would refuse the read. The IP total length: see there.
#[inline(always)]
pub fn opaque(value: usize) -> usize {
    // SAFETY: a read of a local variable.
    unsafe { core::ptr::read_volatile(&value) }
}

/// The two bytes of a word as they are in the packet.
#[inline(always)]
pub fn bytes(word: u16) -> [u8; 2] {
    word.to_ne_bytes()
}

/// Two consecutive words as the 4 bytes they hold (an address in network
/// order, as the maps store it).
#[inline(always)]
pub fn join(a: u16, b: u16) -> u32 {
    let (a, b) = (a.to_ne_bytes(), b.to_ne_bytes());
    u32::from_ne_bytes([a[0], a[1], b[0], b[1]])
}

/// The EtherType (network order) after at most one 802.1Q/802.1ad tag,
/// and where the header it announces starts.
#[inline(always)]
pub fn link(ctx: &XdpContext) -> Result<(u16, usize), u32> {
    let [mut proto] = words::<1>(ctx, 12).map_err(|_| reason::PASS_NOT_IP)?;
    let mut l3_off = ETH_HLEN;
    if proto == ETH_P_8021Q.to_be() || proto == ETH_P_8021AD.to_be() {
        let [_tci, inner] = words::<2>(ctx, ETH_HLEN).map_err(|_| reason::PASS_NOT_IP)?;
        proto = inner;
        l3_off += 4;
    }
    Ok((proto, l3_off))
}

#[inline(always)]
pub fn packet(ctx: &XdpContext) -> Result<Packet, u32> {
    let (proto, l3_off) = link(ctx)?;
    if proto == ETH_P_IPV6.to_be() {
        return Err(reason::PASS_IPV6);
    }
    if proto != ETH_P_IP.to_be() {
        return Err(reason::PASS_NOT_IP);
    }

    // version/ihl, tos | total length | id | frag_off | ttl, protocol |
    // checksum | source (2 words) | destination (2 words)
    let ip = words::<10>(ctx, l3_off)?;
    let [version_ihl, tos] = bytes(ip[0]);
    let [_ttl, protocol] = bytes(ip[4]);
    let frag_off = u16::from_be(ip[3]);
    // Masked so the verifier sees a bounded header length (20..=60).
    let ihl = ((version_ihl & 0x0F) as usize) * 4;
    // Masked where LLVM cannot drop the mask: Debian 12's 6.1 verifier
    // does not bound the result of a byte swap (6.18's does), and refused
    // the frame check below with it unbounded.
    let ip_len = opaque(u16::from_be(ip[1]) as usize) & 0xFFFF;
    if version_ihl >> 4 != 4 || ihl < 20 || ip_len < ihl {
        return Err(reason::PASS_MALFORMED);
    }
    if ctx.data() + l3_off + ip_len > ctx.data_end() {
        return Err(reason::PASS_MALFORMED);
    }
    if frag_off & IP_FRAGMENT_MASK != 0 {
        return Err(reason::PASS_FRAGMENT);
    }

    let l4_off = l3_off + ihl;
    let ip_end = opaque(l3_off + ip_len);
    let (sport, dport, tcp_flags) = match protocol {
        IPPROTO_TCP | IPPROTO_UDP => transport(ctx, protocol, l4_off, ip_end)?,
        // Read by `related` (an error about a VIP's connection?).
        IPPROTO_ICMP => (0, 0, 0),
        _ => return Err(reason::PASS_OTHER_PROTOCOL),
    };

    Ok(Packet {
        flow: FlowKey {
            src: [join(ip[6], ip[7]), 0, 0, 0],
            dst: [join(ip[8], ip[9]), 0, 0, 0],
            sport,
            dport,
            protocol,
            family: AF_INET,
            kind: lb_common::flow_kind::CONNECTION,
            pad0: 0,
        },
        l3_off,
        ihl,
        ip_end,
        frame_len: ctx.data_end() - ctx.data(),
        ip_len: ip_len as u32,
        tos,
        dont_fragment: frag_off & IP_DONT_FRAGMENT != 0,
        tcp_flags,
    })
}

/// The ports (network order, as the maps store them) and the TCP flags (0
/// for UDP) of the TCP or UDP header at `l4_off`. The header must lie
/// within the IP packet, which ends at `ip_end` (as the kernel trims a
/// frame to its IP length before TCP or UDP read it), not in the padding
/// after it.
#[inline(always)]
pub fn transport(ctx: &XdpContext, protocol: u8, l4_off: usize, ip_end: usize) -> Result<(u16, u16, u8), u32> {
    if protocol == IPPROTO_TCP {
        // ports | sequence | acknowledgement | data offset, flags | ...
        if l4_off + 20 > ip_end {
            return Err(reason::PASS_MALFORMED);
        }
        let tcp = words::<10>(ctx, l4_off)?;
        let [data_offset, flags] = bytes(tcp[6]);
        let tcp_len = ((data_offset >> 4) as usize) * 4;
        if tcp_len < 20 || l4_off + tcp_len > ip_end {
            return Err(reason::PASS_MALFORMED);
        }
        Ok((tcp[0], tcp[1], flags))
    } else {
        // ports | length | checksum
        if l4_off + 8 > ip_end {
            return Err(reason::PASS_MALFORMED);
        }
        let udp = words::<4>(ctx, l4_off)?;
        let udp_len = u16::from_be(udp[2]) as usize;
        if udp_len < 8 || l4_off + udp_len > ip_end {
            return Err(reason::PASS_MALFORMED);
        }
        Ok((udp[0], udp[1], 0))
    }
}

/// The `N` 16-bit words at `offset`, to write, if the packet holds all of
/// them (aligned as for [`words`]). The offset goes through [`opaque`]:
/// LLVM would otherwise drop a check that an earlier one at a larger
/// offset implies, and the verifier, which knows the packet's bounds only
/// per pointer, would refuse the access.
#[inline(always)]
pub fn word_mut<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<*mut [u16; N]> {
    let offset = opaque(offset);
    let start = ctx.data();
    if start + offset + 2 * N > ctx.data_end() {
        return None;
    }
    Some((start + offset) as *mut [u16; N])
}
