//! TUN for IPv6: the packet wrapped in an outer IPv6 header from the
//! director to the real server (next header 41, IPv6 in IPv6), as IPVS's
//! ip_vs_tunnel_xmit_v6, and sent to the next hop toward it. A packet that
//! would not fit the path gets "packet too big" back (IPv6 routers never
//! fragment, so every packet is answered, as ensure_mtu_is_adequate does),
//! unless it is an ICMPv6 error itself (RFC 4443 2.4 e: dropped).
//!
//! A BPF global function (see `schedule`): the verifier checks it once on
//! its own, instead of along every path of the pipeline that reaches it;
//! inlined, it and its reply took `lb_xdp6` from 74k to over 160k
//! instructions. It reaches the packet only through `ctx`.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::bpf_xdp_adjust_head,
    programs::XdpContext,
};
use lb_common::{Director, IPPROTO_IPV6, RealServer, reason};

use crate::{
    forward::{send, set_real_macs},
    parse::{ETH_HLEN, Packet},
    parse6::IPV6_HLEN,
    reply6,
};

/// The smallest MTU an IPv6 link has (RFC 8200 5): "packet too big" never
/// names less, as icmpv6_send's callers clamp it.
const IPV6_MIN_MTU: u32 = 1280;
/// Where the IP header starts behind a VLAN tag.
const VLAN_L3: usize = ETH_HLEN + 4;

/// [`tunnel`] as a global function: `(action << 32) | reason`. `may_answer`
/// (0 or 1): whether a packet too big for the path may be answered.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_tunnel6(
    ctx: *mut xdp_md,
    pkt: *const Packet,
    real: *const RealServer,
    director: *const Director,
    may_answer: u32,
) -> u64 {
    // SAFETY: null or the caller's packet summary and map values.
    let (Some(pkt), Some(real), Some(director)) = (unsafe { pkt.as_ref() }, unsafe { real.as_ref() }, unsafe {
        director.as_ref()
    }) else {
        return (xdp_action::XDP_DROP as u64) << 32 | reason::DROP_INTERNAL as u64;
    };
    // The header's offset as a constant on each path: the verifier knows
    // nothing of what the callee reads from its pointer argument, and 6.1's
    // loses the packet's bounds at a variable offset.
    let ctx = XdpContext::new(ctx);
    let (action, why) = match pkt.l3_off {
        ETH_HLEN => tunnel::<ETH_HLEN>(&ctx, pkt, real, director, may_answer != 0),
        VLAN_L3 => tunnel::<VLAN_L3>(&ctx, pkt, real, director, may_answer != 0),
        _ => (xdp_action::XDP_DROP, reason::DROP_INTERNAL),
    };
    (action as u64) << 32 | why as u64
}

#[inline(always)]
fn tunnel<const L3: usize>(
    ctx: &XdpContext,
    pkt: &Packet,
    real: &RealServer,
    director: &Director,
    may_answer: bool,
) -> (u32, u32) {
    let mtu = real.mtu as u32;
    if pkt.ip_len + IPV6_HLEN as u32 > mtu {
        let inner_mtu = mtu.saturating_sub(IPV6_HLEN as u32).max(IPV6_MIN_MTU);
        if pkt.ip_len <= inner_mtu || !may_answer {
            // The path is narrower than IPv6 allows (nothing to tell), or
            // an error is not answered with another.
            return (xdp_action::XDP_DROP, reason::DROP_TOO_BIG);
        }
        return reply6::answer(
            ctx,
            pkt,
            L3,
            director,
            reply6::ICMPV6_PKT_TOOBIG,
            0,
            inner_mtu,
            reason::TX_ICMP_FRAG_NEEDED,
            reason::DROP_TOO_BIG,
        );
    }

    let l3 = L3;
    // SAFETY: growing the head keeps the old bytes where they were.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(IPV6_HLEN as i32)) } != 0 {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    let start = ctx.data();
    let end = ctx.data_end();
    // The Ethernet header moves to the front (its EtherType stays IPv6).
    if start + ETH_HLEN + 4 + IPV6_HLEN > end {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    // SAFETY: offsets below ETH_HLEN + 4 + IPV6_HLEN, checked just above.
    unsafe {
        let old = (start + IPV6_HLEN) as *const u8;
        let new = start as *mut u8;
        for i in 12..18 {
            if i < l3 {
                *new.add(i) = *old.add(i);
            }
        }
        set_real_macs(start, real);
    }
    // version 6, the inner packet's class, flow 0 | payload length, IPv6,
    // hop limit 64 | source: the director | destination: the real server
    let mut ip = [0u32; 10];
    ip[0] = (0x6000_0000u32 | (pkt.tos as u32) << 20).to_be();
    ip[1] = (pkt.ip_len << 16 | (IPPROTO_IPV6 as u32) << 8 | 64).to_be();
    let (src, dst) = (director.tun_source6, real.addr);
    ip[2] = src[0];
    ip[3] = src[1];
    ip[4] = src[2];
    ip[5] = src[3];
    ip[6] = dst[0];
    ip[7] = dst[1];
    ip[8] = dst[2];
    ip[9] = dst[3];
    let ip_at = start + l3;
    if ip_at + IPV6_HLEN > end {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    // SAFETY: 40 bytes from `ip_at`, checked just above.
    unsafe { core::ptr::write_unaligned(ip_at as *mut [u32; 10], ip) };
    send(ctx, real.ifindex, reason::TX_TUN)
}
