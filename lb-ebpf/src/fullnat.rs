//! Full NAT: beyond IPVS mainline, the client's end is rewritten too, to a
//! local end (one of the director's `fullnat_source` addresses and a port)
//! from the pool the controller fills, so the real servers need no route
//! back through the director. Replies come back to the local end and go
//! through [`crate::nat::reply`] like NAT's.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{FlowKey, NatLocal, RealServer, reason};

use crate::{
    forward,
    maps::{FULLNAT_LOCAL, FULLNAT_PORTS, NAT_REPLIES},
    nat::{End, rewrite},
    parse::{ETH_HLEN, Packet},
};

/// A new full-NAT connection's local end: the one its key had (a closed
/// connection's tuple used again keeps its port), else a free one from the
/// pool; with whether it was taken from the pool.
#[inline(always)]
pub fn take_local(flow: &FlowKey) -> Option<(NatLocal, bool)> {
    // SAFETY: values are only replaced whole; copied out at once.
    if let Some(local) = unsafe { FULLNAT_LOCAL.get(flow) } {
        return Some((*local, false));
    }
    match FULLNAT_PORTS.pop() {
        Ok(Some(local)) => Some((local, true)),
        _ => None,
    }
}

/// Returns a local end to the pool.
#[inline(always)]
pub fn give_back(local: &NatLocal) {
    let _ = FULLNAT_PORTS.push(local, 0);
}

/// A packet of a full-NAT connection to its real server: from the
/// connection's local end (`local` for a new one, which is registered with
/// its replies' key; a known one's looked up) to RIP:RPORT.
#[inline(always)]
pub fn to_real_full(ctx: &XdpContext, pkt: &Packet, real: &RealServer, new_conn: bool, local: NatLocal) -> (u32, u32) {
    let port = if real.port == 0 { pkt.flow.dport } else { real.port };
    let local = if new_conn {
        if FULLNAT_LOCAL.insert(&pkt.flow, &local, 0).is_err() {
            give_back(&local);
            return (xdp_action::XDP_DROP, reason::DROP_FULLNAT_NO_LOCAL);
        }
        let _ = NAT_REPLIES.insert(&pkt.flow.fullnat_reply(real.addr, port, &local), &pkt.flow, 0);
        local
    } else {
        // SAFETY: values are only replaced whole; copied out at once.
        match unsafe { FULLNAT_LOCAL.get(&pkt.flow) } {
            Some(l) => *l,
            None => return (xdp_action::XDP_DROP, reason::DROP_FULLNAT_NO_LOCAL),
        }
    };
    if rewrite(ctx, pkt, End::Destination, real.addr[0], port).is_err()
        || rewrite(ctx, pkt, End::Source, local.addr, local.port).is_err()
    {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    // SAFETY: the Ethernet header lies inside the packet, checked above.
    unsafe { forward::set_real_macs(start, real) };
    forward::send(ctx, real.ifindex, reason::TX_FULLNAT)
}
