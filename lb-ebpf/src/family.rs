//! What differs between IPv4 and IPv6 once a packet's connection is known:
//! how a new connection nobody can take is refused, and how a packet goes
//! to its real server. The pipeline (`main`) is written once over
//! [`Family`]; each XDP program is built for one family.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{Director, RealServer, forwarding, reason};

use crate::{forward, fullnat, nat, parse::Packet, reply, reply6, tunnel6};

pub trait Family {
    /// No real server can take the new connection.
    fn refuse(ctx: &XdpContext, pkt: &Packet, director: &Director) -> (u32, u32);
    /// Sends the packet of a connection to its real server.
    fn forward(ctx: &XdpContext, pkt: &Packet, real: &RealServer, director: &Director, new_conn: bool) -> (u32, u32);
}

pub struct Ipv4;

impl Family for Ipv4 {
    #[inline(always)]
    fn refuse(ctx: &XdpContext, pkt: &Packet, director: &Director) -> (u32, u32) {
        // As IPVS: the client learns at once that nobody is there.
        reply::answer(
            ctx,
            pkt,
            director,
            reply::ICMP_PORT_UNREACH,
            0,
            reason::TX_ICMP_UNREACHABLE,
            reason::DROP_NO_REAL,
        )
    }

    #[inline(always)]
    fn forward(ctx: &XdpContext, pkt: &Packet, real: &RealServer, director: &Director, new_conn: bool) -> (u32, u32) {
        match real.forwarding {
            forwarding::DR => forward::direct_route(ctx, real),
            forwarding::TUN => forward::tunnel(ctx, pkt, real, director, true),
            forwarding::NAT => nat::to_real(ctx, pkt, real, new_conn),
            forwarding::FULLNAT => fullnat::to_real_full(ctx, pkt, real, new_conn),
            _ => (xdp_action::XDP_DROP, reason::DROP_INTERNAL),
        }
    }
}

/// IPv6 services forward by direct routing or tunnel; the controller
/// refuses NAT for them.
pub struct Ipv6;

impl Family for Ipv6 {
    #[inline(always)]
    fn refuse(ctx: &XdpContext, pkt: &Packet, director: &Director) -> (u32, u32) {
        reply6::answer(
            ctx,
            pkt,
            pkt.l3_off,
            director,
            reply6::ICMPV6_DEST_UNREACH,
            reply6::ICMPV6_PORT_UNREACH,
            0,
            reason::TX_ICMP_UNREACHABLE,
            reason::DROP_NO_REAL,
        )
    }

    #[inline(always)]
    fn forward(ctx: &XdpContext, pkt: &Packet, real: &RealServer, director: &Director, _new_conn: bool) -> (u32, u32) {
        match real.forwarding {
            forwarding::DR => forward::direct_route(ctx, real),
            forwarding::TUN => {
                let verdict = tunnel6::lb_tunnel6(ctx.ctx, pkt, real, director, 1);
                ((verdict >> 32) as u32, verdict as u32)
            }
            _ => (xdp_action::XDP_DROP, reason::DROP_INTERNAL),
        }
    }
}
