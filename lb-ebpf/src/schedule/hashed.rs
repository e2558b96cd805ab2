//! sh, dh and mh: the slot the packet's address hashes to (ip_vs_sh.c,
//! ip_vs_dh.c, ip_vs_mh.c) in the table the controller built, or with the
//! fallback flag the first server that takes connections along IPVS's probe
//! sequence.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;
use lb_common::{FlowKey, NO_REAL, Service, hash, scheduler, service_flag};

use super::{NEXT, STOP, takes_new_connections};
use crate::maps::{REAL_CONNS, REALS, SCHED_TABLE};

/// The server the flow hashes to, or `NO_REAL`. A BPF global function (see
/// the module above).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn lb_sched_hashed(svc: *const Service, flow: *const FlowKey) -> u32 {
    // SAFETY: null or values the caller holds.
    let (Some(svc), Some(flow)) = (unsafe { svc.as_ref() }, unsafe { flow.as_ref() }) else { return NO_REAL };
    hashed(svc, flow).unwrap_or(NO_REAL)
}

/// The real server in slot `index` of the service's table, if it takes new
/// connections; `Err(())` for an empty slot (ends a fallback walk).
#[inline(always)]
fn table_slot(svc_table_start: u32, index: u32) -> Result<Option<u32>, ()> {
    let Some(&real_id) = SCHED_TABLE.get(svc_table_start.wrapping_add(index)) else { return Err(()) };
    if real_id == NO_REAL {
        return Err(());
    }
    let (Some(real), Some(conns)) = (REALS.get(real_id), REAL_CONNS.get_ptr_mut(real_id)) else { return Err(()) };
    Ok(takes_new_connections(real, conns).then_some(real_id))
}

#[inline(always)]
fn hashed(svc: &Service, flow: &FlowKey) -> Option<u32> {
    let (port_flag, fallback_flag) = match svc.scheduler {
        scheduler::SH => (service_flag::SH_PORT, service_flag::SH_FALLBACK),
        scheduler::MH => (service_flag::MH_PORT, service_flag::MH_FALLBACK),
        _ => (0, 0),
    };
    let use_port = svc.flags & port_flag != 0;
    let first = match svc.scheduler {
        scheduler::SH => hash::sh_bucket(flow.src, flow.sport, use_port, 0),
        scheduler::DH => hash::dh_bucket(flow.dst),
        _ => {
            if svc.table_len == 0 {
                return None;
            }
            hash::mh_index(flow.src, flow.sport, use_port, 0, svc.table_len)
        }
    };
    if first >= svc.table_len {
        return None;
    }
    match table_slot(svc.table_start, first) {
        Ok(Some(real)) => return Some(real),
        Err(()) => return None,
        Ok(None) => {}
    }
    if svc.flags & fallback_flag == 0 {
        return None;
    }
    let mut probe = Probe {
        scheduler: svc.scheduler,
        table_start: svc.table_start,
        table_len: svc.table_len,
        addr: flow.src,
        port: flow.sport,
        use_port: use_port as u8,
        first,
        found: NO_REAL,
    };
    // SAFETY: the callback only reads maps and writes `probe` on our stack.
    unsafe {
        bpf_loop(svc.table_len, probe_step as *mut c_void, (&raw mut probe).cast(), 0);
    }
    if probe.found == NO_REAL { None } else { Some(probe.found) }
}

/// State of a fallback walk, on the stack.
#[repr(C)]
struct Probe {
    scheduler: u8,
    use_port: u8,
    port: u16,
    table_start: u32,
    table_len: u32,
    first: u32,
    found: u32,
    addr: [u32; 4],
}

#[inline(never)]
extern "C" fn probe_step(k: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Probe` that `hashed` passed.
    let p = unsafe { &mut *(ctx as *mut Probe) };
    let use_port = p.use_port != 0;
    let index = if p.scheduler == scheduler::SH {
        hash::sh_probe_bucket(p.addr, p.port, use_port, p.first, k)
    } else {
        hash::mh_probe_index(p.addr, p.port, use_port, p.first, k, p.table_len)
    };
    if index >= p.table_len {
        return STOP;
    }
    match table_slot(p.table_start, index) {
        Ok(Some(real)) => {
            p.found = real;
            STOP
        }
        Ok(None) => NEXT,
        Err(()) => STOP,
    }
}
