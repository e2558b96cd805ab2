//! NAT (LVS-NAT, IPVS's masquerading): a connection's packets go to the
//! real server with their destination rewritten to its address and port
//! (ip_vs_nat_xmit); its replies come back through the director and leave
//! for the client with their source rewritten to the VIP and its port
//! (handle_response), routed by the kernel's FIB. Neither direction goes
//! through the director's IP stack.

use aya_ebpf::{
    bindings::{bpf_fib_lookup, xdp_action},
    helpers::bpf_fib_lookup as fib_lookup,
    programs::XdpContext,
};
use lb_common::{
    AF_INET, Director, FlowKey, IPPROTO_TCP, RealServer, conn_state::tcp_dir, flow_kind, forwarding, reason, service_flag,
};

use crate::{
    forward, lookup,
    maps::{CONN_TABLE, KEY_SCRATCH, NAT_REPLIES, NEIGH_WANTED, REALS},
    parse::{self, ETH_HLEN, Packet},
    related::Quoted,
    reply, stats,
};

/// Which end of a packet is rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// A packet of a NAT connection to its real server. A new connection's
/// replies are registered first (`new_conn`).
#[inline(always)]
pub fn to_real(ctx: &XdpContext, pkt: &Packet, real: &RealServer, new_conn: bool) -> (u32, u32) {
    let port = if real.port == 0 { pkt.flow.dport } else { real.port };
    if new_conn {
        register_reply(&pkt.flow, real.addr, port, pkt.flow.src[0], pkt.flow.sport);
    }
    if rewrite(ctx, pkt, End::Destination, real.addr[0], port).is_err() {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    forward::to_real(ctx, real, reason::TX_NAT)
}

/// Registers the replies of a new NAT or full-NAT connection (`flow`):
/// from the real server's address and port to `dst`:`dport` (the client's
/// end, or full NAT's local one). The key is built in a per-CPU slot, not
/// on the stack: the XDP program's frame, which the schedulers' calls stack
/// on, must stay small (Linux 6.1 counts 512 bytes for the whole chain).
/// An insert fails only without memory: the replies then pass to the
/// kernel.
#[inline(always)]
pub fn register_reply(flow: &FlowKey, real_addr: [u32; 4], real_port: u16, dst: u32, dport: u16) {
    let Some(key) = KEY_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's own slot, written field by field.
    unsafe {
        (*key).src = real_addr;
        (*key).dst = [dst, 0, 0, 0];
        (*key).sport = real_port;
        (*key).dport = dport;
        (*key).protocol = flow.protocol;
        (*key).family = flow.family;
        (*key).kind = flow_kind::NAT_REPLY;
        (*key).pad0 = 0;
        let _ = NAT_REPLIES.insert(&*key, flow, 0);
    }
}

/// A real server's reply to a NAT connection's client, if `pkt` is one:
/// `Err(PASS_NO_SERVICE)` when it is not (no such connection, or one gone
/// or moved to another server).
#[inline(always)]
pub fn reply(ctx: &XdpContext, pkt: &Packet, director: &Director, now: u64) -> Result<(u32, u32), u32> {
    let mut key = pkt.flow;
    key.kind = flow_kind::NAT_REPLY;
    // SAFETY: values are only replaced whole; copied out at once.
    let conn_key = *unsafe { NAT_REPLIES.get(&key) }.ok_or(reason::PASS_NO_SERVICE)?;
    let conn = CONN_TABLE.get_ptr_mut(&conn_key).ok_or(reason::PASS_NO_SERVICE)?;
    // SAFETY: a live element of the connection table for this program run.
    let conn = unsafe { &mut *conn };
    if lookup::expired(conn, now) {
        return Err(reason::PASS_NO_SERVICE);
    }
    let real = REALS.get(conn.real_id).ok_or(reason::PASS_NO_SERVICE)?;
    let full = real.forwarding == forwarding::FULLNAT;
    if (real.forwarding != forwarding::NAT && !full) || real.addr[0] != pkt.flow.src[0] || real.port != pkt.flow.sport {
        return Err(reason::PASS_NO_SERVICE);
    }
    if lookup::service_flags(conn.service_id) & service_flag::STANDBY as u32 != 0 {
        return Err(reason::PASS_STANDBY);
    }
    // Forwarded as a router forwards it (IPVS's replies go through
    // ip_forward): a datagram with no hop left is the kernel's, which
    // answers "time exceeded".
    match decrement_ttl(ctx, pkt) {
        Ok(true) => {}
        Ok(false) => return Err(reason::PASS_NAT_TTL_EXCEEDED),
        Err(()) => return Ok((xdp_action::XDP_DROP, reason::DROP_INTERNAL)),
    }
    lookup::track(conn, pkt.flow.protocol, pkt.tcp_flags, tcp_dir::OUTPUT, now, director);
    stats::account_out(conn.service_id, conn.real_id, pkt.ip_len);

    let vip = conn_key.dst[0];
    if rewrite(ctx, pkt, End::Source, vip, conn_key.dport).is_err() {
        return Ok((xdp_action::XDP_DROP, reason::DROP_INTERNAL));
    }
    // Full NAT: to the client, from its connection's local end.
    if full && rewrite(ctx, pkt, End::Destination, conn_key.src[0], conn_key.sport).is_err() {
        return Ok((xdp_action::XDP_DROP, reason::DROP_INTERNAL));
    }
    let (ifindex, dmac, smac) = match route_to_client(ctx, pkt, vip, conn_key.src[0]) {
        Ok(hop) => hop,
        Err(why) => return Ok((xdp_action::XDP_DROP, why)),
    };
    Ok(forward::to_next_hop(ctx, ifindex, dmac, smac, if full { reason::TX_FULLNAT_REPLY } else { reason::TX_NAT_REPLY }))
}

const BPF_FIB_LKUP_RET_SUCCESS: i64 = 0;
const BPF_FIB_LKUP_RET_FRAG_NEEDED: i64 = 4;
const BPF_FIB_LKUP_RET_NO_NEIGH: i64 = 7;

/// The kernel's route from the VIP to the client of a reply: the egress
/// interface and the next hop's and the interface's MACs (as the kernel
/// would forward it; needs forwarding on the interface the reply came in
/// on). A next hop without a neighbour entry is left for the controller
/// to resolve.
#[inline(always)]
fn route_to_client(ctx: &XdpContext, pkt: &Packet, vip: u32, client: u32) -> Result<(u32, [u16; 3], [u16; 3]), u32> {
    const _: () = assert!(core::mem::size_of::<bpf_fib_lookup>() == 64);
    // Zeroed as whole words, not by a byte-wise memset.
    let mut raw = [0u64; 8];
    let params = raw.as_mut_ptr().cast::<bpf_fib_lookup>();
    // SAFETY: `raw` is 64 zeroed, 8-aligned bytes: a valid bpf_fib_lookup.
    unsafe {
        (*params).family = AF_INET;
        (*params).l4_protocol = pkt.flow.protocol;
        (*params).sport = pkt.flow.sport;
        (*params).dport = pkt.flow.dport;
        (*params).__bindgen_anon_1.tot_len = pkt.ip_len as u16;
        (*params).ifindex = ctx.ingress_ifindex() as u32;
        (*params).__bindgen_anon_2.tos = pkt.tos;
        (*params).__bindgen_anon_3.ipv4_src = vip;
        (*params).__bindgen_anon_4.ipv4_dst = client;
    }
    // SAFETY: the helper reads and writes `params`, 64 bytes.
    let rc = unsafe { fib_lookup(ctx.ctx.cast(), params, 64, 0) };
    // SAFETY: written by the helper or still zero.
    let (ifindex, next_hop) = unsafe { ((*params).ifindex, (*params).__bindgen_anon_4.ipv4_dst) };
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => {}
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            let _ = NEIGH_WANTED.insert(&next_hop, &ifindex, 0);
            return Err(reason::DROP_NAT_NO_NEIGH);
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => return Err(reason::DROP_TOO_BIG),
        _ => return Err(reason::DROP_NAT_NO_ROUTE),
    }
    // SAFETY: smac at byte 52 and dmac at 58 of the 8-aligned buffer:
    // 2-aligned reads inside it.
    let (smac, dmac) = unsafe {
        let base = raw.as_ptr().cast::<u8>();
        (core::ptr::read(base.add(52).cast::<[u16; 3]>()), core::ptr::read(base.add(58).cast::<[u16; 3]>()))
    };
    Ok((ifindex, dmac, smac))
}

/// Rewrites one end's address and port (both in network order, as
/// stored) and updates the IPv4 header checksum and the TCP or UDP
/// checksum to match, incrementally (RFC 1624). A one's complement sum does
/// not depend on byte order, so the words are summed as they lie in the
/// packet.
#[inline(always)]
pub fn rewrite(ctx: &XdpContext, pkt: &Packet, end: End, addr: u32, port: u16) -> Result<(), ()> {
    // Bounded again where the verifier may have lost them.
    let l3 = pkt.l3_off;
    if l3 < ETH_HLEN || l3 > ETH_HLEN + 4 {
        return Err(());
    }
    let ihl = pkt.ihl & 0x3C;
    if ihl < 20 {
        return Err(());
    }
    let (old_addr, new_addr) = set_address(ctx, l3, end, addr)?;
    let l4 = l3 + ihl;
    let old_port = set_port(ctx, l4, end, port)?;
    let tcp = pkt.flow.protocol == IPPROTO_TCP;
    let check_at = parse::word_mut::<1>(ctx, l4 + if tcp { 16 } else { 6 }).ok_or(())?;
    // SAFETY: in the packet, checked by `word_mut` just above.
    unsafe {
        let check = (*check_at)[0];
        // A UDP datagram without a checksum keeps none.
        if !tcp && check == 0 {
            return Ok(());
        }
        let sum = checksum_update(check, &old_addr, &new_addr);
        let mut sum = checksum_update(sum, &[old_port], &[port]);
        if !tcp && sum == 0 {
            sum = 0xFFFF;
        }
        (*check_at)[0] = sum;
    }
    Ok(())
}

/// Sets one end's address of the IPv4 header at `l3` and updates its
/// checksum: the address's words before and after, and the checksum's.
#[inline(always)]
fn set_address(ctx: &XdpContext, l3: usize, end: End, addr: u32) -> Result<([u16; 2], [u16; 2]), ()> {
    let new = split(addr);
    let ip_check = parse::word_mut::<1>(ctx, l3 + 10).ok_or(())?;
    let addr_at = parse::word_mut::<2>(ctx, l3 + if end == End::Source { 12 } else { 16 }).ok_or(())?;
    // SAFETY: both lie in the packet, checked by `word_mut` just above.
    let old = unsafe {
        let old = *addr_at;
        *addr_at = new;
        (*ip_check)[0] = checksum_update((*ip_check)[0], &old, &new);
        old
    };
    Ok((old, new))
}

/// Sets one end's port of the TCP or UDP header at `l4`; the old port.
#[inline(always)]
fn set_port(ctx: &XdpContext, l4: usize, end: End, port: u16) -> Result<u16, ()> {
    let port_at = parse::word_mut::<1>(ctx, l4 + if end == End::Source { 0 } else { 2 }).ok_or(())?;
    // SAFETY: in the packet, checked by `word_mut` just above.
    Ok(unsafe { core::mem::replace(&mut (*port_at)[0], port) })
}

/// An ICMP error about a NAT connection from the client's side (a router
/// quoting our reply, VIP:port → client): to the real server, as IPVS's
/// ip_vs_nat_icmp translates it: the outer destination and the quote's
/// source become the real server's address and port.
#[inline(always)]
pub fn icmp_to_real(ctx: &XdpContext, pkt: &Packet, quote: &Quoted, real: &RealServer) -> (u32, u32) {
    let port = if real.port == 0 { quote.sport } else { real.port };
    if translate_icmp(ctx, pkt, quote, End::Destination, real.addr[0], End::Source, port).is_err() {
        return (xdp_action::XDP_DROP, reason::DROP_INTERNAL);
    }
    forward::to_real(ctx, real, reason::TX_NAT_ICMP_TO_REAL)
}

/// An ICMP error about a NAT connection from the real server's side (the
/// server, or a router between, quoting what we sent it, client → RIP:port)
/// to the client: the outer source and the quote's destination become the
/// VIP and its port, and it is routed as the connection's replies.
/// `Err(PASS_OTHER_PROTOCOL)` when it quotes no NAT connection.
#[inline(always)]
pub fn icmp_to_client(
    ctx: &XdpContext,
    pkt: &Packet,
    quote: &Quoted,
    now: u64,
) -> Result<(u32, u32), u32> {
    let not_ours = reason::PASS_OTHER_PROTOCOL;
    // To the client the quote comes from.
    if pkt.flow.dst[0] != quote.source {
        return Err(not_ours);
    }
    let key = lb_common::FlowKey {
        src: [quote.destination, 0, 0, 0],
        dst: [quote.source, 0, 0, 0],
        sport: quote.dport,
        dport: quote.sport,
        protocol: quote.protocol,
        family: AF_INET,
        kind: flow_kind::NAT_REPLY,
        pad0: 0,
    };
    // SAFETY: values are only replaced whole; copied out at once.
    let conn_key = *unsafe { NAT_REPLIES.get(&key) }.ok_or(not_ours)?;
    let conn = CONN_TABLE.get_ptr(&conn_key).ok_or(not_ours)?;
    // SAFETY: a live element of the connection table for this program run.
    let conn = unsafe { &*conn };
    if lookup::expired(conn, now) {
        return Err(not_ours);
    }
    let real = REALS.get(conn.real_id).ok_or(not_ours)?;
    if real.forwarding != forwarding::NAT || real.addr[0] != quote.destination || real.port != quote.dport {
        return Err(not_ours);
    }
    if lookup::service_flags(conn.service_id) & service_flag::STANDBY as u32 != 0 {
        return Err(reason::PASS_STANDBY);
    }
    match decrement_ttl(ctx, pkt) {
        Ok(true) => {}
        Ok(false) => return Err(reason::PASS_NAT_TTL_EXCEEDED),
        Err(()) => return Ok((xdp_action::XDP_DROP, reason::DROP_INTERNAL)),
    }
    stats::account_out(conn.service_id, conn.real_id, pkt.ip_len);
    let vip = conn_key.dst[0];
    if translate_icmp(ctx, pkt, quote, End::Source, vip, End::Destination, conn_key.dport).is_err() {
        return Ok((xdp_action::XDP_DROP, reason::DROP_INTERNAL));
    }
    let (ifindex, dmac, smac) = match route_to_client(ctx, pkt, vip, pkt.flow.dst[0]) {
        Ok(hop) => hop,
        Err(why) => return Ok((xdp_action::XDP_DROP, why)),
    };
    Ok(forward::to_next_hop(ctx, ifindex, dmac, smac, reason::TX_NAT_ICMP_TO_CLIENT))
}

/// Translates an ICMP error: the outer header's `outer` end becomes `addr`,
/// the quote's `inner` end becomes `addr` and `port` (the quoted IP
/// checksum follows; the quoted TCP/UDP checksum is left, as IPVS leaves
/// it: nobody checks it), and the ICMP checksum follows the quote.
#[inline(always)]
fn translate_icmp(
    ctx: &XdpContext,
    pkt: &Packet,
    quote: &Quoted,
    outer: End,
    addr: u32,
    inner: End,
    port: u16,
) -> Result<(), ()> {
    let l3 = pkt.l3_off;
    if l3 < ETH_HLEN || l3 > ETH_HLEN + 4 {
        return Err(());
    }
    let ihl = pkt.ihl & 0x3C;
    let quote_ihl = quote.ihl & 0x3C;
    if ihl < 20 || quote_ihl < 20 {
        return Err(());
    }
    let l4 = l3 + ihl;
    let quote_l3 = l4 + 8;
    if quote.offset != quote_l3 {
        return Err(());
    }
    set_address(ctx, l3, outer, addr)?;
    // The quoted IP checksum before, to follow its change in the ICMP sum.
    let quote_check = parse::word_mut::<1>(ctx, quote_l3 + 10).ok_or(())?;
    // SAFETY: in the packet, checked by `word_mut` just above.
    let check_before = unsafe { (*quote_check)[0] };
    let (old_addr, new_addr) = set_address(ctx, quote_l3, inner, addr)?;
    let old_port = set_port(ctx, quote_l3 + quote_ihl, inner, port)?;
    let quote_check = parse::word_mut::<1>(ctx, quote_l3 + 10).ok_or(())?;
    let icmp_check = parse::word_mut::<1>(ctx, l4 + 2).ok_or(())?;
    // SAFETY: both in the packet, checked by `word_mut` just above.
    unsafe {
        let check_after = (*quote_check)[0];
        let sum = checksum_update((*icmp_check)[0], &old_addr, &new_addr);
        let sum = checksum_update(sum, &[check_before, old_port], &[check_after, port]);
        (*icmp_check)[0] = sum;
    }
    Ok(())
}

/// Takes a hop off the IPv4 header's TTL (checksum updated); false, and
/// nothing changed, when none is left to take.
#[inline(always)]
fn decrement_ttl(ctx: &XdpContext, pkt: &Packet) -> Result<bool, ()> {
    let l3 = pkt.l3_off;
    if l3 < ETH_HLEN || l3 > ETH_HLEN + 4 {
        return Err(());
    }
    let ttl_at = parse::word_mut::<1>(ctx, l3 + 8).ok_or(())?;
    let check_at = parse::word_mut::<1>(ctx, l3 + 10).ok_or(())?;
    // SAFETY: both in the packet, checked by `word_mut` just above.
    unsafe {
        let old = (*ttl_at)[0];
        let [ttl, protocol] = old.to_ne_bytes();
        if ttl <= 1 {
            return Ok(false);
        }
        let new = u16::from_ne_bytes([ttl - 1, protocol]);
        (*ttl_at)[0] = new;
        (*check_at)[0] = checksum_update((*check_at)[0], &[old], &[new]);
    }
    Ok(true)
}

/// An address as the two words it has in the packet.
#[inline(always)]
fn split(addr: u32) -> [u16; 2] {
    let b = addr.to_ne_bytes();
    [u16::from_ne_bytes([b[0], b[1]]), u16::from_ne_bytes([b[2], b[3]])]
}

/// The checksum `check` after the words `old` became `new`: RFC 1624's
/// HC' = ~(~HC + ~m + m').
#[inline(always)]
fn checksum_update<const N: usize>(check: u16, old: &[u16; N], new: &[u16; N]) -> u16 {
    let mut sum = (!check) as u64;
    for i in 0..N {
        sum += (!old[i]) as u64 + new[i] as u64;
    }
    reply::fold(sum)
}
