//! Stage 4: send the packet to its real server.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{Director, IPPROTO_IPIP, RealServer, reason};

use crate::{
    maps::TX_PORTS,
    parse::{ETH_HLEN, Packet},
    reply,
};

/// Direct routing: the frame goes to the real server's MAC, out of the
/// interface on its segment; the IP packet is untouched (the real server
/// holds the VIP on a non-ARPing interface and answers the client
/// directly).
#[inline(always)]
pub fn direct_route(ctx: &XdpContext, real: &RealServer) -> (u32, u32) {
    to_real(ctx, real, reason::TX_DR)
}

/// Sends the frame (its IP packet ready) to the real server's next hop,
/// from the MAC of the interface toward it, counted as `sent`.
#[inline(always)]
pub fn to_real(ctx: &XdpContext, real: &RealServer, sent: u32) -> (u32, u32) {
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    // SAFETY: the Ethernet header lies inside the packet, checked above.
    unsafe { set_real_macs(start, real) };
    send(ctx, real.ifindex, sent)
}

/// Sends the frame out of interface `ifindex` to the MAC `dst` from `src`
/// (as the kernel's FIB gave them), counted as `sent`.
#[inline(always)]
pub fn to_next_hop(ctx: &XdpContext, ifindex: u32, dst: [u16; 3], src: [u16; 3], sent: u32) -> (u32, u32) {
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    // SAFETY: the Ethernet header lies inside the packet, checked above.
    unsafe { set_macs(start, dst, src) };
    send(ctx, ifindex, sent)
}

/// Sends the frame out of interface `ifindex`: back out of the one it came
/// in on with `XDP_TX` (also for 0, "the same"), else redirected through
/// [`TX_PORTS`] (which holds every interface carrying the program).
#[inline(always)]
pub fn send(ctx: &XdpContext, ifindex: u32, sent: u32) -> (u32, u32) {
    if ifindex == 0 || ifindex as usize == ctx.ingress_ifindex() {
        return (xdp_action::XDP_TX, sent);
    }
    match TX_PORTS.redirect(ifindex, xdp_action::XDP_DROP as u64) {
        Ok(action) => (action, sent),
        Err(_) => (xdp_action::XDP_DROP, reason::DROP_NO_TX_PORT),
    }
}

/// Writes the destination MAC (the real server's or next hop's) and the
/// source MAC (its interface's) into the Ethernet header at `eth`.
///
/// # Safety
/// As [`set_macs`].
#[inline(always)]
pub(crate) unsafe fn set_real_macs(eth: usize, real: &RealServer) {
    const _: () = assert!(core::mem::offset_of!(RealServer, mac) % 2 == 0);
    const _: () = assert!(core::mem::offset_of!(RealServer, src_mac) % 2 == 0);
    // SAFETY: both MACs sit at even offsets of the 4-aligned struct; the
    // packet side is the caller's promise.
    unsafe {
        let dst = core::ptr::read((&raw const real.mac).cast::<[u16; 3]>());
        let src = core::ptr::read((&raw const real.src_mac).cast::<[u16; 3]>());
        set_macs(eth, dst, src);
    }
}

/// Writes the destination and source MACs, as three 16-bit words each,
/// into the Ethernet header at `eth`: a plain `[u8; 6]` assignment becomes
/// a call to a byte-by-byte memmove on BPF.
///
/// # Safety
/// The 12 bytes at `eth` must be in the packet, 2-byte aligned (as every
/// frame start, see `parse::words`).
#[inline(always)]
pub unsafe fn set_macs(eth: usize, dst: [u16; 3], src: [u16; 3]) {
    // SAFETY: the caller's promise.
    unsafe { core::ptr::write(eth as *mut [u16; 6], [dst[0], dst[1], dst[2], src[0], src[1], src[2]]) };
}

/// Outer IPv4 header of a tunnelled packet.
const OUTER_LEN: usize = 20;

/// IP-in-IP (TUN): the packet is wrapped in an outer IPv4 header from the
/// director to the real server and sent to the next hop toward it (which
/// the controller resolves from the kernel's routing and neighbour tables),
/// so real servers may sit on other subnets. A packet that would not fit
/// the path MTU gets "fragmentation needed" back if it forbids
/// fragmentation (as IPVS does) and `may_answer` (no ICMP error is ever
/// answered with another, RFC 1122 3.2.2); XDP cannot fragment the others,
/// so they are dropped and counted.
#[inline(always)]
pub fn tunnel(ctx: &XdpContext, pkt: &Packet, real: &RealServer, director: &Director, may_answer: bool) -> (u32, u32) {
    let outer_total = pkt.ip_len as usize + OUTER_LEN;
    if outer_total > real.mtu as usize {
        if !pkt.dont_fragment || !may_answer {
            return (xdp_action::XDP_DROP, reason::DROP_TOO_BIG);
        }
        let inner_mtu = (real.mtu as usize).saturating_sub(OUTER_LEN) as u16;
        return reply::answer(
            ctx,
            pkt,
            director,
            reply::ICMP_FRAG_NEEDED,
            inner_mtu,
            reason::TX_ICMP_FRAG_NEEDED,
            reason::DROP_TOO_BIG,
        );
    }

    let l3 = pkt.l3_off;
    if l3 < ETH_HLEN || l3 > ETH_HLEN + 4 {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    // SAFETY: growing the head keeps the old bytes where they were.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(OUTER_LEN as i32)) } != 0 {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    let start = ctx.data();
    let end = ctx.data_end();
    // The Ethernet header moves to the front: constant offsets below 18 + 20.
    if start + ETH_HLEN + 4 + OUTER_LEN > end {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    // SAFETY: offsets below ETH_HLEN + 4 + OUTER_LEN, checked just above.
    unsafe {
        let old = (start + OUTER_LEN) as *const u8;
        let new = start as *mut u8;
        for i in 12..18 {
            if i < l3 {
                *new.add(i) = *old.add(i);
            }
        }
        set_real_macs(start, real);
    }
    let mut ip = [0u16; 10];
    ip[0] = (0x4500u16 | pkt.tos as u16).to_be();
    ip[1] = (outer_total as u16).to_be();
    ip[3] = if pkt.dont_fragment { 0x4000u16.to_be() } else { 0 };
    ip[4] = (64u16 << 8 | IPPROTO_IPIP as u16).to_be();
    let src = director.tun_source[0].to_ne_bytes();
    let dst = real.addr[0].to_ne_bytes();
    ip[6] = u16::from_ne_bytes([src[0], src[1]]);
    ip[7] = u16::from_ne_bytes([src[2], src[3]]);
    ip[8] = u16::from_ne_bytes([dst[0], dst[1]]);
    ip[9] = u16::from_ne_bytes([dst[2], dst[3]]);
    ip[5] = reply::ipv4_header_checksum(&ip);
    let ip_at = start + l3;
    if ip_at + OUTER_LEN > end {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    // SAFETY: 20 bytes from `ip_at`, checked just above.
    unsafe { core::ptr::write_unaligned(ip_at as *mut [u16; 10], ip) };
    send(ctx, real.ifindex, reason::TX_TUN)
}
