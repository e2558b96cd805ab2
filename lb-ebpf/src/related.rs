//! ICMP errors about a VIP's connections (IPVS's ip_vs_in_icmp; Katran
//! does the same). In DR and TUN a real server answers its clients straight
//! from the VIP; a router on the way that cannot forward such an answer (too
//! big with DF set, TTL exceeded, no route) sends its error to the answer's
//! source, the VIP, and so to the director. The error quotes the answer's IP
//! header and the first 8 bytes after it: VIP:port → client:port, the
//! connection's key reversed. An error that quotes a live connection goes
//! to that connection's real server, whole and unchanged, the way the
//! connection's own packets go (DR: new MACs; TUN: encapsulated), so the
//! real server's stack learns the path MTU (without it, a path-MTU black
//! hole for every real server) or tells the socket. Everything else passes
//! to the kernel, as before.
//!
//! Unlike IPVS (whose lookup re-arms the entry's timer), an error does not
//! keep its connection alive: anyone who can guess a flow can send one.

use lb_common::{
    AF_INET, FlowKey, IPPROTO_TCP, IPPROTO_UDP, director_flag, flow_kind, forwarding, reason, service_flag,
};

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};

use crate::{
    clock, forward, lookup,
    maps::DIRECTOR,
    nat,
    parse::{self, Packet},
    stats,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;
/// The fragment offset of `frag_off`: a later fragment carries no ports.
const IP_OFFSET: u16 = 0x1FFF;

/// An ICMP packet (`pkt`, as `parse` read its IP header): forwarded to a
/// real server if it is an error about one of its connections, else a pass
/// reason. The kinds of error are IPVS's (destination unreachable, time
/// exceeded) and parameter problem; not source quench, which RFC 6633
/// retired.
#[inline(always)]
pub fn icmp(ctx: &XdpContext, pkt: &Packet) -> Result<(u32, u32), u32> {
    // type, code | checksum | the rest of the header (the next-hop MTU of
    // "fragmentation needed") | the quoted IP header and 8 bytes. The
    // checksum is the real server's to check: the error reaches it as sent.
    let l4 = pkt.l3_off + pkt.ihl;
    if l4 + 8 > pkt.ip_end {
        return Err(reason::PASS_MALFORMED);
    }
    let [type_code] = parse::words::<1>(ctx, l4)?;
    let [kind, code] = type_code.to_ne_bytes();
    // The highest code of each: NR_ICMP_UNREACH, ICMP_EXC_FRAGTIME, and
    // RFC 1108's "bad length".
    let max_code = match kind {
        ICMP_DEST_UNREACH => 15,
        ICMP_TIME_EXCEEDED => 1,
        ICMP_PARAMETERPROB => 2,
        // Echo and the rest: the director's own stack answers them.
        _ => return Err(reason::PASS_OTHER_PROTOCOL),
    };
    if !lookup::may_be_vip(&pkt.flow) {
        // Perhaps about a NAT connection, from its real server's side.
        let director = DIRECTOR.get(0).ok_or(reason::PASS_OTHER_PROTOCOL)?;
        if director.flags & director_flag::NAT == 0 || code > max_code {
            return Err(reason::PASS_OTHER_PROTOCOL);
        }
        let quote = quoted(ctx, pkt, l4).map_err(|_| reason::PASS_OTHER_PROTOCOL)?;
        if !quote.of_connection() {
            return Err(reason::PASS_OTHER_PROTOCOL);
        }
        return nat::icmp_to_client(ctx, pkt, &quote, clock::now_ns(director));
    }
    if code > max_code {
        return Err(reason::PASS_ICMP_MALFORMED);
    }
    let quote = quoted(ctx, pkt, l4)?;
    let Quoted { source, destination, sport, dport, protocol, .. } = quote;
    // The answer came from the VIP the error is addressed to.
    if source != pkt.flow.dst[0] {
        return Err(reason::PASS_ICMP_MALFORMED);
    }
    if !quote.of_connection() {
        return Err(reason::PASS_ICMP_NO_CONN);
    }

    // The connection, as the client's packets find it.
    let key = FlowKey {
        src: [destination, 0, 0, 0],
        dst: [source, 0, 0, 0],
        sport: dport,
        dport: sport,
        protocol,
        family: AF_INET,
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
    if real.forwarding == forwarding::NAT {
        return Ok(nat::icmp_to_real(ctx, pkt, &quote, real));
    }
    // Full NAT's errors are not translated (yet): the kernel's.
    if real.forwarding == forwarding::FULLNAT {
        return Err(reason::PASS_ICMP_NO_CONN);
    }
    Ok(match real.forwarding {
        forwarding::DR => match forward::direct_route(ctx, real) {
            (action, reason::TX_DR) => (action, reason::TX_DR_ICMP_ERROR),
            other => other,
        },
        forwarding::TUN => match forward::tunnel(ctx, pkt, real, director, false) {
            (action, reason::TX_TUN) => (action, reason::TX_TUN_ICMP_ERROR),
            other => other,
        },
        _ => (xdp_action::XDP_DROP, reason::DROP_INTERNAL),
    })
}

/// The packet an ICMP error quotes: its IP header and the first 8 bytes
/// after it, within the error.
pub struct Quoted {
    /// Where the quoted IP header starts, and its length.
    pub offset: usize,
    pub ihl: usize,
    pub source: u32,
    pub destination: u32,
    pub sport: u16,
    pub dport: u16,
    pub protocol: u8,
    /// Not a later fragment (which carries no ports).
    pub first_fragment: bool,
}

impl Quoted {
    /// Whether it may be a connection's packet: TCP or UDP, with its ports.
    #[inline(always)]
    pub fn of_connection(&self) -> bool {
        (self.protocol == IPPROTO_TCP || self.protocol == IPPROTO_UDP) && self.first_fragment
    }
}

/// Reads the quote of the ICMP error whose header is at `l4`, as `parse`
/// reads a packet: a readable IPv4 header and 8 bytes.
#[inline(always)]
fn quoted(ctx: &XdpContext, pkt: &Packet, l4: usize) -> Result<Quoted, u32> {
    // version/ihl, tos | total length | id | frag_off | ttl, protocol |
    // checksum | source | destination.
    let quote = l4 + 8;
    if quote + 20 > pkt.ip_end {
        return Err(reason::PASS_ICMP_MALFORMED);
    }
    let ip = parse::words::<10>(ctx, quote).map_err(|_| reason::PASS_ICMP_MALFORMED)?;
    let [version_ihl, _tos] = ip[0].to_ne_bytes();
    let [_ttl, protocol] = ip[4].to_ne_bytes();
    // Masked: 20..=60 once checked, as the verifier sees it.
    let ihl = ((version_ihl & 0x0F) as usize) * 4;
    let total = u16::from_be(ip[1]) as usize;
    if version_ihl >> 4 != 4 || ihl < 20 || total < ihl + 8 || quote + ihl + 8 > pkt.ip_end {
        return Err(reason::PASS_ICMP_MALFORMED);
    }
    let [sport, dport] = parse::words::<2>(ctx, quote + ihl).map_err(|_| reason::PASS_ICMP_MALFORMED)?;
    Ok(Quoted {
        offset: quote,
        ihl,
        source: parse::join(ip[6], ip[7]),
        destination: parse::join(ip[8], ip[9]),
        sport,
        dport,
        protocol,
        first_fragment: u16::from_be(ip[3]) & IP_OFFSET == 0,
    })
}
