//! Stage 2: which virtual service the packet is for, and whether it belongs
//! to a connection the director already knows.

use lb_common::{Conn, Director, FlowKey, Service, ServiceKey, conn_state, conn_state::tcp_flag};

use crate::maps::{CONN_TABLE, SERVICES};

/// The service for (VIP, port, protocol), else the VIP's every-port service.
#[inline(always)]
pub fn service(flow: &FlowKey) -> Option<&'static Service> {
    let mut key = ServiceKey {
        addr: flow.dst,
        port: flow.dport,
        protocol: flow.protocol,
        family: flow.family,
    };
    // SAFETY: service values are only replaced whole by the controller (a
    // hash update swaps in a new element), never written in place.
    if let Some(svc) = unsafe { SERVICES.get(&key) } {
        return Some(svc);
    }
    key.port = 0;
    unsafe { SERVICES.get(&key) }
}

/// Nanoseconds since boot, the clock connection entries are stamped with.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() }
}

#[inline(always)]
pub fn expired(conn: &Conn, now: u64) -> bool {
    now.wrapping_sub(conn.last_seen_ns) > conn.timeout as u64 * 1_000_000_000
}

/// The live connection entry of this flow, if any. An entry that timed out,
/// or that a new SYN finds closing (IPVS's connection reuse for a client port
/// used again), counts as none: the packet is scheduled afresh.
#[inline(always)]
pub fn connection(flow: &FlowKey, tcp_flags: u8, now: u64) -> Option<*mut Conn> {
    let ptr = CONN_TABLE.get_ptr_mut(flow)?;
    // SAFETY: a pointer to a live element, valid for this program run.
    let conn = unsafe { &*ptr };
    if expired(conn, now) {
        return None;
    }
    let new_syn = tcp_flags & (tcp_flag::SYN | tcp_flag::ACK | tcp_flag::RST) == tcp_flag::SYN;
    if new_syn && matches!(conn.state, conn_state::FIN_WAIT | conn_state::TIME_WAIT | conn_state::CLOSE) {
        return None;
    }
    Some(ptr)
}

/// How often (ns) an unchanged entry's last-seen stamp is refreshed: often
/// enough for second-resolution expiry, rarely enough to keep the hot path
/// from writing the entry on every packet.
const REFRESH_NS: u64 = 250_000_000;

/// Advances the entry's state with this packet and keeps it alive.
#[inline(always)]
pub fn track(conn: &mut Conn, protocol: u8, tcp_flags: u8, now: u64, director: &Director) {
    let state = if protocol == lb_common::IPPROTO_TCP {
        conn_state::tcp_next(conn.state, tcp_flags)
    } else {
        conn.state
    };
    if state != conn.state {
        conn.state = state;
        conn.timeout = director.state_timeouts[state as usize & (conn_state::COUNT - 1)];
        conn.last_seen_ns = now;
    } else if now.wrapping_sub(conn.last_seen_ns) > REFRESH_NS {
        conn.last_seen_ns = now;
    }
}

/// A new entry for a connection just scheduled to `dest_id`.
#[inline(always)]
pub fn insert_connection(
    flow: &FlowKey,
    service_id: u32,
    dest_id: u32,
    tcp_flags: u8,
    now: u64,
    director: &Director,
) -> Result<(), i32> {
    let state = if flow.protocol == lb_common::IPPROTO_TCP {
        conn_state::tcp_next(conn_state::NONE, tcp_flags)
    } else {
        conn_state::UDP
    };
    let conn = Conn {
        dest_id,
        service_id,
        state,
        pad0: [0; 3],
        timeout: director.state_timeouts[state as usize & (conn_state::COUNT - 1)],
        last_seen_ns: now,
    };
    CONN_TABLE.insert(flow, &conn, 0)
}
