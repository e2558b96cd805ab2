//! Stage 4: send the packet to its real server.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{Dest, Director, reason};

use crate::parse::{ETH_HLEN, EthHdr};

/// Direct routing: the frame goes back out of the same NIC, addressed to
/// the real server's MAC; the IP packet is untouched (the real server holds
/// the VIP on a non-ARPing interface and answers the client directly).
#[inline(always)]
pub fn direct_route(ctx: &XdpContext, dest: &Dest, director: &Director) -> (u32, u32) {
    let start = ctx.data();
    if start + ETH_HLEN > ctx.data_end() {
        return (xdp_action::XDP_ABORTED, reason::DROP_INTERNAL);
    }
    let eth = start as *mut EthHdr;
    // SAFETY: the Ethernet header lies inside the packet, checked above.
    unsafe {
        (*eth).dst = dest.mac;
        (*eth).src = director.mac;
    }
    (xdp_action::XDP_TX, reason::TX_DR)
}
