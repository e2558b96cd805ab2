//! Stage 3: choose a real server for a packet that starts a new connection.
//!
//! Each scheduler family is a BPF *global* function (`sequence`, `least`,
//! `hashed`, `locality`): the verifier checks it once, on its own, for any
//! service it could be handed, and the caller sees only its `u32` result.
//! Inlined into the pipeline instead, every family multiplied the paths the
//! verifier walks through the rest of the program, and the program sat at
//! the kernel's 1,000,000-instruction limit (issue 9). The rules for such a
//! function: `#[unsafe(no_mangle)] extern "C"` (so it stays a global symbol
//! with its own BTF), raw pointers that it checks for null (the verifier
//! hands it memory that may be null), plain integers in and out, and no
//! packet access.

mod hashed;
mod least;
mod locality;
mod sequence;

use lb_common::{
    FlowKey, IPPROTO_TCP, NO_REAL, RealConns, RealServer, Service, conn_state::tcp_flag, real_flag, scheduler,
    service_flag,
};

use crate::{
    lookup,
    maps::{REAL_CONNS, REALS, SCAN_SCRATCH, ScanSlot},
};

/// `bpf_loop` callback results.
const STOP: i64 = 1;
const NEXT: i64 = 0;

/// This CPU's slot `slot` of `SCAN_SCRATCH`, as a scan state `T` (see there
/// why a scan whose steps depend on each other keeps its state in a map).
/// The callback gets a pointer to a stack variable holding this pointer:
/// `bpf_loop` hands on only stack pointers.
#[inline(always)]
fn scratch<T>(slot: u32) -> Option<*mut T> {
    const { assert!(size_of::<T>() <= size_of::<ScanSlot>() && align_of::<T>() <= align_of::<ScanSlot>()) };
    SCAN_SCRATCH.get_ptr_mut(slot).map(|p| p.cast::<T>())
}

/// Whether this packet may start a connection: any UDP datagram; for TCP a
/// SYN without ACK, unless the service schedules sloppily or falls back to
/// its consistent hash for flows it has no entry of.
#[inline(always)]
pub fn starts_connection(flow: &FlowKey, tcp_flags: u8, svc: &Service) -> bool {
    if flow.protocol != IPPROTO_TCP || svc.flags & (service_flag::SLOPPY_TCP | service_flag::STATELESS_FALLBACK) != 0 {
        return true;
    }
    tcp_flags & (tcp_flag::SYN | tcp_flag::ACK | tcp_flag::RST) == tcp_flag::SYN
}

/// The real server for a new connection: the one a persistent service's
/// template names for this client, else the scheduler's choice (which a
/// persistent service then records in the client's template).
#[inline(always)]
pub fn choose(svc: &Service, flow: &FlowKey, now: u64) -> Option<u32> {
    if svc.persistence_timeout == 0 {
        return pick(svc, flow, now);
    }
    let key = svc.template_key(flow);
    if let Some(real) = lookup::persistent_real(&key, now) {
        return Some(real);
    }
    let real = pick(svc, flow, now)?;
    lookup::set_template(&key, svc, real, now);
    Some(real)
}

/// The scheduler's choice, or `None` when no server can take it.
#[inline(always)]
fn pick(svc: &Service, flow: &FlowKey, now: u64) -> Option<u32> {
    let id = match svc.scheduler {
        scheduler::RR | scheduler::WRR => sequence::lb_sched_sequence(svc),
        scheduler::LC | scheduler::WLC | scheduler::SED | scheduler::NQ | scheduler::FO | scheduler::OVF => {
            least::lb_sched_least(svc, svc.scheduler as u32)
        }
        scheduler::SH | scheduler::DH | scheduler::MH => hashed::lb_sched_hashed(svc, flow),
        scheduler::LBLC => locality::lb_sched_lblc(svc, flow, now),
        scheduler::LBLCR => locality::lb_sched_lblcr(svc, flow, now),
        _ => NO_REAL,
    };
    if id == NO_REAL { None } else { Some(id) }
}

/// IPVS's overload flag with its thresholds: set once the server holds
/// `upper_threshold` connections, cleared when it falls below
/// `lower_threshold` (or 3/4 of the upper one when no lower is set).
#[inline(always)]
fn overloaded(real: &RealServer, conns: *mut RealConns) -> bool {
    // SAFETY: an element of REAL_CONNS, valid for this program run; the flag
    // is a plain word both writers set to the same function of the counts.
    unsafe {
        let total = (*conns).active + (*conns).inactive;
        let upper = real.upper_threshold as i64;
        let lower = real.lower_threshold as i64;
        if (*conns).overloaded != 0 {
            let clear = if lower != 0 {
                total < lower
            } else if upper != 0 {
                total * 4 < upper * 3
            } else {
                true
            };
            if clear {
                (*conns).overloaded = 0;
            }
            !clear
        } else if upper != 0 && total >= upper {
            (*conns).overloaded = 1;
            true
        } else {
            false
        }
    }
}

#[inline(always)]
fn takes_new_connections(real: &RealServer, conns: *mut RealConns) -> bool {
    real.flags & real_flag::AVAILABLE != 0 && real.weight > 0 && !overloaded(real, conns)
}

/// A real server's weight and connection counts, as the least-connection
/// rules read them.
struct Load {
    weight: u64,
    active: u64,
    inactive: u64,
    /// In its service's list now (not retired).
    in_list: bool,
    overloaded: bool,
}

impl Load {
    #[inline(always)]
    fn overhead(&self) -> u64 {
        wlc_overhead(self.active, self.inactive)
    }
}

/// wlc's (and lc's) overhead of a server: `(active << 8) + inactive`.
#[inline(always)]
fn wlc_overhead(active: u64, inactive: u64) -> u64 {
    (active << 8) + inactive
}

/// A real server's active and inactive connections.
#[inline(always)]
fn conn_counts(conns: *mut RealConns) -> (u64, u64) {
    // SAFETY: a valid element of REAL_CONNS; aligned 64-bit loads are never
    // torn.
    unsafe { ((*conns).active.max(0) as u64, (*conns).inactive.max(0) as u64) }
}

#[inline(always)]
fn load(real_id: u32) -> Option<Load> {
    let real = REALS.get(real_id)?;
    let conns = REAL_CONNS.get_ptr_mut(real_id)?;
    let (active, inactive) = conn_counts(conns);
    Some(Load {
        weight: real.weight as u64,
        active,
        inactive,
        in_list: real.flags & real_flag::AVAILABLE != 0,
        overloaded: overloaded(real, conns),
    })
}
