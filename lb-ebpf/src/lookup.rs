//! Stage 2: which virtual service the packet is for, and whether it belongs
//! to a connection the director already knows.

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::maps::lpm_trie::Key as LpmKey;
use lb_common::{
    Conn, Director, FWMARK_MATCH_FULL_BITS, FlowKey, FwmarkMatch, RealServer, Service, ServiceKey, conn_state,
    conn_state::tcp_flag, fwmark_service_key, real_flag,
};

use crate::maps::{CONN_TABLE, FWMARK_MATCHES, REAL_CONNS, REALS, SERVICE_FLAGS, SERVICES, VIP_FILTER};

/// Whether the destination may be a VIP (no: certainly not; yes: look it
/// up). One array read.
#[inline(always)]
pub fn may_be_vip(flow: &FlowKey) -> bool {
    let bit = lb_common::vip_filter_bit(&flow.dst);
    match VIP_FILTER.get(bit >> 6) {
        Some(word) => (*word >> (bit & 63)) & 1 != 0,
        None => true,
    }
}

/// The flags of a service by id (standby).
#[inline(always)]
pub fn service_flags(service_id: u32) -> u32 {
    SERVICE_FLAGS.get(service_id).copied().unwrap_or(0)
}

/// The service for (VIP, port, protocol), else the VIP's every-port
/// service, else the firewall-mark service whose match takes the packet.
/// IPVS looks a marked packet's fwmark service up first
/// (ip_vs_service_find); here nothing marks packets, and a service named
/// by its own VIP is the more specific rule, so it wins over a mark's
/// match.
#[inline(always)]
pub fn service(flow: &FlowKey) -> Option<&'static Service> {
    let mut key = ServiceKey { addr: flow.dst, port: flow.dport, protocol: flow.protocol, family: flow.family };
    // SAFETY: service values are only replaced whole by the controller (a
    // hash update swaps in a new element), never written in place.
    if let Some(svc) = unsafe { SERVICES.get(&key) } {
        return Some(svc);
    }
    key.port = 0;
    if let Some(svc) = unsafe { SERVICES.get(&key) } {
        return Some(svc);
    }
    let mark = lb_fwmark_match(flow);
    if mark == 0 {
        return None;
    }
    unsafe { SERVICES.get(&fwmark_service_key(mark, flow.family)) }
}

/// The mark (network order) of the firewall-mark service whose match takes
/// the flow, 0 for none (no mark is 0). A BPF global function: verified
/// once on its own, and its trie key lives in its own frame, not in the
/// pipeline's, which the schedulers' calls stack on.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_fwmark_match(flow: *const FlowKey) -> u32 {
    // SAFETY: null or a value the caller holds.
    let Some(flow) = (unsafe { flow.as_ref() }) else { return 0 };
    let matched = FwmarkMatch { protocol: flow.protocol, family: flow.family, port: flow.dport, addr: flow.dst };
    FWMARK_MATCHES.get(LpmKey::new(FWMARK_MATCH_FULL_BITS, matched)).copied().unwrap_or(0)
}

#[inline(always)]
pub fn expired(conn: &Conn, now: u64) -> bool {
    now.wrapping_sub(conn.last_seen_ns) > conn.timeout as u64 * 1_000_000_000
}

/// What the connection table holds for a flow. A plain struct, fully
/// initialised on every path: an enum with a payload would leave bytes
/// undefined on some paths, and LLVM then stores stale registers the
/// verifier refuses to let us read.
pub struct Entry {
    /// A live connection (null if none): later packets go where it went.
    pub live: *mut Conn,
    /// Its real server (valid when `live` is).
    pub live_real: *const RealServer,
    /// An entry that timed out, or that a new SYN finds closing (IPVS's
    /// connection reuse for a client port used again): the packet is
    /// scheduled afresh and this entry replaced.
    pub stale: Conn,
    pub has_stale: bool,
}

#[inline(always)]
pub fn connection(flow: &FlowKey, tcp_flags: u8, now: u64) -> Entry {
    let mut entry =
        Entry { live: core::ptr::null_mut(), live_real: core::ptr::null(), stale: Conn::default(), has_stale: false };
    let Some(ptr) = CONN_TABLE.get_ptr_mut(flow) else {
        return entry;
    };
    // SAFETY: a pointer to a live element, valid for this program run.
    let conn = unsafe { &*ptr };
    let new_syn = tcp_flags & (tcp_flag::SYN | tcp_flag::ACK | tcp_flag::RST) == tcp_flag::SYN;
    // A server whose health check failed hands its connections on (IPVS's
    // expire_nodest_conn), unless its service drains them.
    let real = REALS.get_ptr(conn.real_id);
    let real_gone = match real {
        // SAFETY: an array element, valid for this program run.
        Some(d) => (unsafe { (*d).flags } & real_flag::EXPIRE_CONNS) != 0,
        None => true,
    };
    if real_gone
        || expired(conn, now)
        || (new_syn && matches!(conn.state, conn_state::FIN_WAIT | conn_state::TIME_WAIT | conn_state::CLOSE))
    {
        entry.stale = *conn;
        entry.has_stale = true;
    } else if let Some(d) = real {
        entry.live = ptr;
        entry.live_real = d;
    }
    entry
}

/// How often (ns) an unchanged entry's last-seen stamp is refreshed: often
/// enough for second-resolution expiry, rarely enough to keep the hot path
/// from writing the entry on every packet.
const REFRESH_NS: u64 = 250_000_000;

/// Adds `delta` to the real server's count for a connection in `state`.
#[inline(always)]
pub fn count(real_id: u32, state: u8, delta: i64) {
    let Some(c) = REAL_CONNS.get_ptr_mut(real_id) else {
        return;
    };
    // SAFETY: an array element, valid for this program run; shared with
    // other CPUs and the controller, so only touched atomically.
    unsafe {
        let field = if state == conn_state::TEMPLATE_NONE || state == conn_state::TEMPLATE_ASSURED {
            &raw mut (*c).persistent
        } else if conn_state::is_active(state) {
            &raw mut (*c).active
        } else {
            &raw mut (*c).inactive
        };
        atomic_xadd::<i64, i64, { AtomicOrdering::Relaxed }>(field, delta);
    }
}

/// Advances the entry's state with this packet, which went in direction
/// `dir` (`conn_state::tcp_dir`), and keeps it alive. True when the
/// connection has just become established.
#[inline(always)]
pub fn track(conn: &mut Conn, protocol: u8, tcp_flags: u8, dir: usize, now: u64, director: &Director) -> bool {
    let state = if protocol == lb_common::IPPROTO_TCP {
        conn_state::tcp_next_in(dir, conn.state, tcp_flags)
    } else {
        conn.state
    };
    if state != conn.state {
        if conn_state::is_active(state) != conn_state::is_active(conn.state) {
            count(conn.real_id, conn.state, -1);
            count(conn.real_id, state, 1);
        }
        conn.state = state;
        conn.timeout = director.state_timeouts[state as usize & (conn_state::COUNT - 1)];
        conn.last_seen_ns = now;
        return state == conn_state::ESTABLISHED;
    } else if now.wrapping_sub(conn.last_seen_ns) > REFRESH_NS {
        conn.last_seen_ns = now;
        // The state's own timeout again, as IPVS's set_tcp_state sets it
        // on every packet: a connection installed mid-flow started on a
        // short one (see insert_connection), and this later packet shows
        // its flow is real.
        conn.timeout = director.state_timeouts[conn.state as usize & (conn_state::COUNT - 1)];
    }
    false
}

/// A connection a persistence template placed got established: the
/// template becomes ASSURED (IPVS's ip_vs_control_assure_ct).
#[inline(always)]
pub fn assure_template(svc: &Service, flow: &FlowKey) {
    if let Some(t) = CONN_TABLE.get_ptr_mut(svc.template_key(flow)) {
        // SAFETY: a live element for this program run.
        unsafe {
            if (*t).state == conn_state::TEMPLATE_NONE {
                (*t).state = conn_state::TEMPLATE_ASSURED;
            }
        }
    }
}

/// A connection-table entry, written field by field with the padding
/// zeroed by volatile stores: a struct literal with `pad0: [0; 3]` (or any
/// run of zero stores, which LLVM merges into a memset) becomes a call to a
/// byte-by-byte memset subprogram on BPF, on every new connection.
#[inline(always)]
fn conn_entry(real_id: u32, service_id: u32, state: u8, timeout: u32, last_seen_ns: u64) -> Conn {
    let mut conn = core::mem::MaybeUninit::<Conn>::uninit();
    let c = conn.as_mut_ptr();
    // SAFETY: every field of the (padding-free, plain-integer) Conn is
    // written before it is read.
    unsafe {
        (&raw mut (*c).real_id).write(real_id);
        (&raw mut (*c).service_id).write(service_id);
        (&raw mut (*c).state).write(state);
        let pad = (&raw mut (*c).pad0).cast::<u8>();
        pad.write_volatile(0);
        pad.add(1).write_volatile(0);
        pad.add(2).write_volatile(0);
        (&raw mut (*c).timeout).write(timeout);
        (&raw mut (*c).last_seen_ns).write(last_seen_ns);
        conn.assume_init()
    }
}

/// A new entry for a connection just scheduled to `real_id`, replacing a
/// stale one if there was (whose count it takes back).
#[inline(always)]
pub fn insert_connection(
    flow: &FlowKey,
    service_id: u32,
    real_id: u32,
    tcp_flags: u8,
    dir: usize,
    now: u64,
    director: &Director,
    replaced: &Entry,
) -> Result<(), i32> {
    let state = if flow.protocol == lb_common::IPPROTO_TCP {
        conn_state::tcp_next_in(dir, conn_state::NONE, tcp_flags)
    } else {
        conn_state::UDP
    };
    let mut timeout = director.state_timeouts[state as usize & (conn_state::COUNT - 1)];
    if flow.protocol == lb_common::IPPROTO_TCP && tcp_flags & tcp_flag::SYN == 0 {
        // Installed from a packet that is not a SYN (the stateless
        // fallback, sloppy TCP): a SYN_RECV's timeout until a later packet
        // of the flow (track), so that spoofed ACKs hold the table no
        // longer than spoofed SYNs do.
        let syn_recv = director.state_timeouts[conn_state::SYN_RECV as usize];
        if syn_recv < timeout {
            timeout = syn_recv;
        }
    }
    let conn = conn_entry(real_id, service_id, state, timeout, now);
    CONN_TABLE.insert(flow, &conn, 0)?;
    if replaced.has_stale {
        count(replaced.stale.real_id, replaced.stale.state, -1);
    }
    count(real_id, state, 1);
    Ok(())
}

/// Takes a connection just inserted out again (its packet is dropped after
/// all), with its count.
#[inline(always)]
pub fn forget_new_connection(flow: &FlowKey) {
    if let Some(conn) = CONN_TABLE.get_ptr(flow) {
        // SAFETY: a live element for this program run.
        let (real_id, state) = unsafe { ((*conn).real_id, (*conn).state) };
        if CONN_TABLE.remove(flow).is_ok() {
            count(real_id, state, -1);
        }
    }
}

/// The real server a live template sends this client to, if that server is
/// still in the service (IPVS's ip_vs_check_template: a quiesced server,
/// weight 0, keeps its persistent clients). Using it restarts the template.
#[inline(always)]
pub fn persistent_real(key: &FlowKey, now: u64) -> Option<u32> {
    let t = CONN_TABLE.get_ptr_mut(key)?;
    // SAFETY: a live element for this program run.
    let t = unsafe { &mut *t };
    if expired(t, now) {
        return None;
    }
    let real = REALS.get(t.real_id)?;
    if real.flags & real_flag::AVAILABLE == 0 {
        return None;
    }
    t.last_seen_ns = now;
    Some(t.real_id)
}

/// Points the client's template at `real_id`, replacing an expired or
/// invalid one (whose count it takes back).
#[inline(always)]
pub fn set_template(key: &FlowKey, svc: &Service, real_id: u32, now: u64) {
    let mut replaced =
        Entry { live: core::ptr::null_mut(), live_real: core::ptr::null(), stale: Conn::default(), has_stale: false };
    if let Some(old) = CONN_TABLE.get_ptr(key) {
        // SAFETY: a live element for this program run.
        replaced.stale = unsafe { *old };
        replaced.has_stale = true;
    }
    let template = conn_entry(real_id, svc.id, conn_state::TEMPLATE_NONE, svc.persistence_timeout, now);
    if CONN_TABLE.insert(key, &template, 0).is_ok() {
        if replaced.has_stale {
            count(replaced.stale.real_id, replaced.stale.state, -1);
        }
        count(real_id, conn_state::TEMPLATE_NONE, 1);
    }
}
