//! Stage 1 for IPv6: the fixed header, then a bounded walk over the
//! extension headers a host may skip (hop-by-hop, routing, destination
//! options), as IPVS finds the transport header with ipv6_find_hdr. A
//! fragment passes to the kernel, as for IPv4; so does a chain longer than
//! the walk, counted. TCP and UDP are read as for IPv4, within the payload
//! length, never from the frame's padding; ICMPv6 goes on without ports.

use aya_ebpf::programs::XdpContext;
use lb_common::{AF_INET6, FlowKey, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, reason};

use crate::parse::{ETH_P_IPV6, Packet, bytes, join, link, opaque, transport, words};

/// The fixed IPv6 header.
pub const IPV6_HLEN: usize = 40;
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_DEST: u8 = 60;
/// Extension headers walked before the transport header: a hop-by-hop, a
/// destination options, a routing and a second destination options header
/// is the longest chain RFC 8200's order allows without repeats.
pub const MAX_EXT_HEADERS: usize = 4;

#[inline(always)]
fn is_skippable(next: u8) -> bool {
    next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST
}

#[inline(always)]
pub fn packet(ctx: &XdpContext) -> Result<Packet, u32> {
    let (proto, l3_off) = link(ctx)?;
    if proto != ETH_P_IPV6.to_be() {
        return Err(reason::PASS_NOT_IP);
    }
    // version, class, flow label (2 words) | payload length | next header,
    // hop limit | source (8 words) | destination (8 words)
    let ip = words::<20>(ctx, l3_off)?;
    let first = u16::from_be(ip[0]);
    let traffic_class = (first >> 4) as u8;
    // Masked where LLVM cannot drop the mask, as IPv4's total length.
    let payload_len = opaque(u16::from_be(ip[2]) as usize) & 0xFFFF;
    let [mut next, _hop_limit] = bytes(ip[3]);
    // A payload length of 0 announces a jumbogram: not on an Ethernet.
    if first >> 12 != 6 || payload_len == 0 {
        return Err(reason::PASS_MALFORMED);
    }
    if ctx.data() + l3_off + IPV6_HLEN + payload_len > ctx.data_end() {
        return Err(reason::PASS_MALFORMED);
    }
    let ip_end = opaque(l3_off + IPV6_HLEN + payload_len);

    let mut l4_off = l3_off + IPV6_HLEN;
    for _ in 0..MAX_EXT_HEADERS {
        if !is_skippable(next) {
            break;
        }
        // next header, length in 8-byte units after the first 8 | ...
        if l4_off + 8 > ip_end {
            return Err(reason::PASS_MALFORMED);
        }
        let [word] = words::<1>(ctx, l4_off)?;
        let [header_after, units] = bytes(word);
        next = header_after;
        l4_off += (units as usize + 1) * 8;
    }
    if next == NEXTHDR_FRAGMENT {
        return Err(reason::PASS_FRAGMENT);
    }
    if is_skippable(next) {
        return Err(reason::PASS_IPV6_EXT_HEADERS);
    }
    let (sport, dport, tcp_flags) = match next {
        IPPROTO_TCP | IPPROTO_UDP => transport(ctx, next, l4_off, ip_end)?,
        // No ports: `related6` reads what it needs.
        IPPROTO_ICMPV6 => (0, 0, 0),
        _ => return Err(reason::PASS_OTHER_PROTOCOL),
    };

    Ok(Packet {
        flow: FlowKey {
            src: [join(ip[4], ip[5]), join(ip[6], ip[7]), join(ip[8], ip[9]), join(ip[10], ip[11])],
            dst: [join(ip[12], ip[13]), join(ip[14], ip[15]), join(ip[16], ip[17]), join(ip[18], ip[19])],
            sport,
            dport,
            protocol: next,
            family: AF_INET6,
            kind: lb_common::flow_kind::CONNECTION,
            pad0: 0,
        },
        l3_off,
        ihl: l4_off - l3_off,
        ip_end,
        frame_len: ctx.data_end() - ctx.data(),
        ip_len: (IPV6_HLEN + payload_len) as u32,
        tos: traffic_class,
        dont_fragment: true,
        tcp_flags,
    })
}
