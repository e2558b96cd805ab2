//! ICMPv6 errors about a VIP's connections, as `related` for IPv4 (IPVS's
//! ip_vs_in_icmp_v6): a router that cannot forward a real server's answer
//! (too big for its next link, hop limit exceeded, no route) sends its
//! error to the answer's source, the VIP. The error quotes the answer's
//! IPv6 header and what follows: VIP:port → client:port, the connection's
//! key reversed. An error about a live connection goes to its real server
//! whole and unchanged, as the connection's packets go (DR: new MACs; TUN:
//! encapsulated), so the real server's stack learns the path MTU; IPv6
//! routers never fragment, so without this every real server behind a
//! narrower link is a path-MTU black hole. Neighbour discovery, echo and
//! everything else pass to the kernel.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{AF_INET6, FlowKey, IPPROTO_TCP, IPPROTO_UDP, flow_kind, forwarding, reason, service_flag};

use crate::{
    clock, forward, lookup,
    maps::DIRECTOR,
    parse::{self, Packet},
    parse6::IPV6_HLEN,
    stats, tunnel6,
};

const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_TIME_EXCEED: u8 = 3;
const ICMPV6_PARAMPROB: u8 = 4;

/// An ICMPv6 packet (`pkt`, as `parse6` read it): forwarded to a real
/// server if it is an error about one of its connections, else a pass
/// reason.
#[inline(always)]
pub fn icmp6(ctx: &XdpContext, pkt: &Packet) -> Result<(u32, u32), u32> {
    // type, code | checksum | MTU or pointer (4 bytes) | the quoted IPv6
    // header | its ports (a quote with extension headers is no
    // connection's we can find: passed).
    let l4 = pkt.l3_off + pkt.ihl;
    if l4 + 8 > pkt.ip_end {
        return Err(reason::PASS_ICMPV6);
    }
    let [type_code] = parse::words::<1>(ctx, l4)?;
    let [kind, code] = parse::bytes(type_code);
    // The highest code of each (RFC 4443; RFC 7112's additions).
    let max_code = match kind {
        ICMPV6_DEST_UNREACH => 8,
        ICMPV6_PKT_TOOBIG => 0,
        ICMPV6_TIME_EXCEED => 1,
        ICMPV6_PARAMPROB => 3,
        _ => return Err(reason::PASS_ICMPV6),
    };
    if !lookup::may_be_vip(&pkt.flow) {
        return Err(reason::PASS_ICMPV6);
    }
    let quote = l4 + 8;
    if code > max_code || quote + IPV6_HLEN + 4 > pkt.ip_end {
        return Err(reason::PASS_ICMP_MALFORMED);
    }
    // version, class, flow (2 words) | payload length | next header, hop
    // limit | source (8 words) | destination (8 words) | ports
    let q = parse::words::<22>(ctx, quote).map_err(|_| reason::PASS_ICMP_MALFORMED)?;
    let [protocol, _hop_limit] = parse::bytes(q[3]);
    if u16::from_be(q[0]) >> 12 != 6 {
        return Err(reason::PASS_ICMP_MALFORMED);
    }
    let source = [parse::join(q[4], q[5]), parse::join(q[6], q[7]), parse::join(q[8], q[9]), parse::join(q[10], q[11])];
    // The answer came from the VIP the error is addressed to.
    if source != pkt.flow.dst {
        return Err(reason::PASS_ICMP_MALFORMED);
    }
    if protocol != IPPROTO_TCP && protocol != IPPROTO_UDP {
        return Err(reason::PASS_ICMP_NO_CONN);
    }

    // The connection, as the client's packets find it.
    let key = FlowKey {
        src: [parse::join(q[12], q[13]), parse::join(q[14], q[15]), parse::join(q[16], q[17]), parse::join(q[18], q[19])],
        dst: source,
        sport: q[21],
        dport: q[20],
        protocol,
        family: AF_INET6,
        kind: flow_kind::CONNECTION,
        pad0: 0,
    };
    let director = DIRECTOR.get(0).ok_or(reason::PASS_ICMP_NO_CONN)?;
    let entry = lookup::connection(&key, 0, clock::now_ns(director));
    if entry.live.is_null() {
        return Err(reason::PASS_ICMP_NO_CONN);
    }
    // SAFETY: a live entry of the connection table and its real server.
    let (conn, real) = unsafe { (&*entry.live, &*entry.live_real) };
    if lookup::service_flags(conn.service_id) & service_flag::STANDBY as u32 != 0 {
        return Err(reason::PASS_STANDBY);
    }
    // Counted for the connection's service and server, as ip_vs_in_stats.
    stats::account(conn.service_id, conn.real_id, pkt.ip_len, false);
    Ok(match real.forwarding {
        forwarding::DR => match forward::direct_route(ctx, real) {
            (action, reason::TX_DR) => (action, reason::TX_DR_ICMP_ERROR),
            other => other,
        },
        forwarding::TUN => {
            let verdict = tunnel6::lb_tunnel6(ctx.ctx, pkt, real, director, 0);
            match ((verdict >> 32) as u32, verdict as u32) {
                (action, reason::TX_TUN) => (action, reason::TX_TUN_ICMP_ERROR),
                other => other,
            }
        }
        _ => (xdp_action::XDP_DROP, reason::DROP_INTERNAL),
    })
}
