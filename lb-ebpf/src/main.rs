//! The XDP load balancer. The entry point reads as the pipeline: parse,
//! find the connection (or the service, and schedule a new one), count,
//! forward; ICMP errors about a connection go where the connection goes.
//! Whatever is not for a virtual service passes to the kernel untouched.
//! IPv6 frames go on to `lb_xdp6`, the same pipeline for IPv6, by a tail
//! call: each program has the verifier's budget and stack to itself.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod clock;
mod family;
mod forward;
mod fullnat;
mod lookup;
mod maps;
mod nat;
mod parse;
mod parse6;
mod related;
mod related6;
mod reply;
mod reply6;
mod schedule;
mod stats;
mod tunnel6;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    conn_state::{tcp_dir, tcp_flag}, director_flag, forwarding, prog_slot, reason, service_flag,
};

use crate::{
    family::{Family, Ipv4, Ipv6},
    maps::{DIRECTOR, PROGS, REALS},
    parse::Packet,
};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    let (action, why) = match balance(&ctx) {
        Ok(verdict) => verdict,
        Err(pass_reason) => (xdp_action::XDP_PASS, pass_reason),
    };
    if why == reason::PASS_IPV6 {
        // SAFETY: the frame is untouched; on success this program ends
        // here. An empty slot (no IPv6 program loaded) falls through, and
        // the frame passes counted as IPv6.
        unsafe { PROGS.tail_call(&ctx, prog_slot::IPV6) };
    }
    stats::count_reason(why);
    action
}

#[xdp]
pub fn lb_xdp6(ctx: XdpContext) -> u32 {
    let (action, why) = match balance6(&ctx) {
        Ok(verdict) => verdict,
        Err(pass_reason) => (xdp_action::XDP_PASS, pass_reason),
    };
    stats::count_reason(why);
    action
}

/// [`balance`] for IPv6.
#[inline(always)]
fn balance6(ctx: &XdpContext) -> Result<(u32, u32), u32> {
    let pkt = parse6::packet(ctx)?;
    if pkt.flow.protocol == IPPROTO_ICMPV6 {
        return related6::icmp6(ctx, &pkt);
    }
    if !lookup::may_be_vip(&pkt.flow) {
        return Err(reason::PASS_NO_SERVICE);
    }
    to_service::<Ipv6>(ctx, &pkt)
}

/// `Ok((action, reason))` for packets the balancer handles, `Err(reason)`
/// for packets it passes on untouched.
#[inline(always)]
fn balance(ctx: &XdpContext) -> Result<(u32, u32), u32> {
    let pkt = parse::packet(ctx)?;
    if pkt.flow.protocol == IPPROTO_ICMP {
        return related::icmp(ctx, &pkt);
    }
    if lookup::may_be_vip(&pkt.flow) {
        match to_service::<Ipv4>(ctx, &pkt) {
            Err(reason::PASS_NO_SERVICE) => {}
            verdict => return verdict,
        }
    }
    // Not for a virtual service: perhaps a NAT real server's reply. (The
    // director entry is read on each path, not once before both: a value
    // live across the service path costs the program's frame, which the
    // schedulers' calls stack on.)
    let director = DIRECTOR.get(0).ok_or(reason::PASS_NO_SERVICE)?;
    if director.flags & director_flag::NAT != 0 {
        return nat::reply(ctx, &pkt, director, clock::now_ns(director));
    }
    Err(reason::PASS_NO_SERVICE)
}

/// A packet to a VIP: its connection's, or a new connection's if it may
/// start one.
#[inline(always)]
fn to_service<F: Family>(ctx: &XdpContext, pkt: &Packet) -> Result<(u32, u32), u32> {
    let director = DIRECTOR.get(0).ok_or(reason::PASS_NO_SERVICE)?;
    let now = clock::now_ns(director);
    // A known connection first, as IPVS does: its packets skip the service
    // lookup.
    let entry = lookup::connection(&pkt.flow, pkt.tcp_flags, now);
    let (service_id, real_id, real, new_conn) = if !entry.live.is_null() {
        // SAFETY: a live entry of the connection table and its real server.
        let (conn, real) = unsafe { (&mut *entry.live, &*entry.live_real) };
        if lookup::service_flags(conn.service_id) & service_flag::STANDBY as u32 != 0 {
            return Err(reason::PASS_STANDBY);
        }
        if lookup::track(conn, pkt.flow.protocol, pkt.tcp_flags, direction(real), now, director) {
            if let Some(svc) = lookup::service(&pkt.flow) {
                if svc.persistence_timeout != 0 {
                    lookup::assure_template(svc, &pkt.flow);
                }
            }
        }
        (conn.service_id, conn.real_id, real, false)
    } else {
        let svc = lookup::service(&pkt.flow).ok_or(reason::PASS_NO_SERVICE)?;
        if svc.flags & service_flag::STANDBY != 0 {
            return Err(reason::PASS_STANDBY);
        }
        if !schedule::starts_connection(&pkt.flow, pkt.tcp_flags, svc) {
            return Err(reason::PASS_TCP_NOT_SYN);
        }
        let Some(real_id) = schedule::choose(svc, &pkt.flow, now) else {
            return Ok(F::refuse(ctx, pkt, director));
        };
        let Some(real) = REALS.get(real_id) else {
            return Ok((xdp_action::XDP_DROP, reason::DROP_INTERNAL));
        };
        let dir = direction(real);
        if lookup::insert_connection(&pkt.flow, svc.id, real_id, pkt.tcp_flags, dir, now, director, &entry).is_err() {
            return Ok((xdp_action::XDP_DROP, reason::DROP_CONN_TABLE_FULL));
        }
        stats::count_reason(reason::CONN_NEW);
        if pkt.flow.protocol == IPPROTO_TCP && pkt.tcp_flags & tcp_flag::SYN == 0 {
            stats::count_reason(reason::CONN_MID_FLOW);
        }
        (svc.id, real_id, real, true)
    };

    stats::account(service_id, real_id, pkt.ip_len, new_conn);
    Ok(F::forward(ctx, pkt, real, director, new_conn))
}

/// Which of IPVS's TCP tables a client's packet moves its connection by:
/// under NAT the director sees both halves (IPVS clears NOOUTPUT only for
/// masquerading).
#[inline(always)]
fn direction(real: &lb_common::RealServer) -> usize {
    if real.forwarding == forwarding::NAT || real.forwarding == forwarding::FULLNAT {
        tcp_dir::INPUT
    } else {
        tcp_dir::INPUT_ONLY
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: any path to here would be an
    // unbounded loop, which the verifier rejects at load time.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
