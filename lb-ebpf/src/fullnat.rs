//! Full NAT: beyond IPVS mainline, the client's end is rewritten too, to a
//! local end (one of the director's `fullnat_source` addresses and a port)
//! from the pool the controller fills, so the real servers need no route
//! back through the director. Replies come back to the local end and go
//! through [`crate::nat::reply`] like NAT's.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{NatLocal, RealServer, reason};

use crate::{
    forward, lookup,
    maps::{FULLNAT_LOCAL, FULLNAT_PORTS},
    nat::{self, End, rewrite},
    parse::Packet,
};

/// Returns a local end to the pool.
#[inline(always)]
pub fn give_back(local: &NatLocal) {
    let _ = FULLNAT_PORTS.push(local, 0);
}

/// A packet of a full-NAT connection to its real server: from the
/// connection's local end to RIP:RPORT. A new connection takes its local
/// end here (its key's old one, else one from the pool) and registers it
/// and its replies' key; without a free port it is dropped, its entry
/// taken out again.
#[inline(always)]
pub fn to_real_full(ctx: &XdpContext, pkt: &Packet, real: &RealServer, new_conn: bool) -> (u32, u32) {
    let port = if real.port == 0 { pkt.flow.dport } else { real.port };
    // SAFETY: values are only replaced whole; copied out at once.
    let local = match unsafe { FULLNAT_LOCAL.get(&pkt.flow) } {
        Some(l) => *l,
        None if new_conn => {
            let local = match FULLNAT_PORTS.pop() {
                Ok(Some(local)) => local,
                _ => {
                    lookup::forget_new_connection(&pkt.flow);
                    return (xdp_action::XDP_DROP, reason::DROP_FULLNAT_NO_PORT);
                }
            };
            if FULLNAT_LOCAL.insert(&pkt.flow, &local, 0).is_err() {
                give_back(&local);
                lookup::forget_new_connection(&pkt.flow);
                return (xdp_action::XDP_DROP, reason::DROP_FULLNAT_NO_LOCAL);
            }
            local
        }
        None => return (xdp_action::XDP_DROP, reason::DROP_FULLNAT_NO_LOCAL),
    };
    if new_conn {
        nat::register_reply(&pkt.flow, real.addr, port, local.addr, local.port);
    }
    if rewrite(ctx, pkt, End::Destination, real.addr[0], port).is_err()
        || rewrite(ctx, pkt, End::Source, local.addr, local.port).is_err()
    {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    forward::to_real(ctx, real, reason::TX_FULLNAT)
}
