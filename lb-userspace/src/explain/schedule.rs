//! The scheduler's pick for a new connection now, and why: the datapath's
//! `schedule::pick` on the maps' current state, with lb-common's reference
//! models of IPVS (`sched::models`, which the datapath is tested against)
//! wherever a model takes the state as it is; rr and wrr walk the
//! controller's precomputed sequence (built by `sched::rr_table` and
//! `sched::wrr_table` from IPVS's walks) at the shared position, as the
//! datapath does.

use lb_common::{
    LBLC_EXPIRATION_NS, LBLCR_MAX_SET, NO_REAL, RealConns, RealServer, Scheduler, hash, real_flag,
    sched::models::{self, ConnView, LbReal},
    service_flag,
};

use super::{Found, View};

/// rr's and wrr's bound on servers skipped in one walk (the datapath's
/// `sequence::MAX_SKIPS`).
const MAX_SKIPS: u64 = 8;
/// How many of the sequence's next entries to show.
const SHOW_NEXT: u64 = 5;

/// A pick and its reasons.
pub struct Pick {
    pub real: Option<u32>,
    pub why: Vec<String>,
}

/// The datapath's `overloaded` without its side effect: the flag it keeps,
/// set at `upper_threshold` connections and cleared below the lower one
/// (3/4 of the upper one when none), as IPVS's IP_VS_DEST_F_OVERLOAD.
pub fn overloaded(real: &RealServer, conns: &RealConns) -> bool {
    let total = conns.active + conns.inactive;
    let (upper, lower) = (real.upper_threshold as i64, real.lower_threshold as i64);
    if conns.overloaded != 0 {
        let clear = if lower != 0 {
            total < lower
        } else if upper != 0 {
            total * 4 < upper * 3
        } else {
            true
        };
        !clear
    } else {
        upper != 0 && total >= upper
    }
}

/// The datapath's `takes_new_connections`.
fn takes(real: &RealServer, conns: &RealConns) -> bool {
    real.flags & real_flag::AVAILABLE != 0 && real.weight > 0 && !overloaded(real, conns)
}

/// Why a server takes no new connection.
fn refusal(real: &RealServer, conns: &RealConns) -> &'static str {
    if real.flags & real_flag::AVAILABLE == 0 {
        "not available"
    } else if real.weight == 0 {
        "weight 0"
    } else if overloaded(real, conns) {
        "overloaded"
    } else {
        "takes connections"
    }
}

/// A server as the connection-counting models see it: one the datapath
/// skips (unavailable or overloaded) is "overloaded" to them.
fn conn_view(real: &RealServer, conns: &RealConns) -> ConnView {
    ConnView {
        weight: real.weight,
        active: conns.active.max(0) as u64,
        inactive: conns.inactive.max(0) as u64,
        overloaded: real.flags & real_flag::AVAILABLE == 0 || overloaded(real, conns),
    }
}

pub fn pick(found: &Found, view: &View) -> Pick {
    let Some(scheduler) = Scheduler::from_code(found.service.scheduler) else {
        return Pick { real: None, why: vec![format!("unknown scheduler {}", found.service.scheduler)] };
    };
    // The list as the models take it: servers the maps lack are left out.
    let list: Vec<(u32, &RealServer, &RealConns)> =
        found.list.iter().filter_map(|&id| view.real(id).map(|(r, c)| (id, r, c))).collect();
    let views: Vec<ConnView> = list.iter().map(|(_, r, c)| conn_view(r, c)).collect();
    let index_pick = |i: Option<usize>| i.map(|i| list[i].0);
    match scheduler {
        Scheduler::Rr | Scheduler::Wrr => sequence(scheduler, found, view),
        Scheduler::Lc | Scheduler::Wlc | Scheduler::Sed | Scheduler::Nq | Scheduler::Fo | Scheduler::Ovf => {
            let model = models::least_connection(scheduler).unwrap_or(models::ovf);
            let mut why = vec![least_rule(scheduler).to_owned()];
            why.extend(list.iter().zip(&views).map(|((id, r, c), v)| load_line(scheduler, view, *id, r, c, v)));
            Pick { real: index_pick(model(&views)), why }
        }
        Scheduler::Sh | Scheduler::Dh | Scheduler::Mh => hashed(scheduler, found, view, &list, &views),
        Scheduler::Lblc | Scheduler::Lblcr => locality(scheduler, found, view, &list, &views),
    }
}

fn least_rule(s: Scheduler) -> &'static str {
    match s {
        Scheduler::Lc => "lc: the least overhead (active << 8) + inactive; the first in list order on ties",
        Scheduler::Wlc => "wlc: the least overhead (active << 8) + inactive per weight; the first on ties",
        Scheduler::Sed => "sed: the least (active + 1) per weight; the first on ties",
        Scheduler::Nq => "nq: the first idle server (no active connection), else sed's least (active + 1) per weight",
        Scheduler::Fo => "fo: the highest weight; the first on ties",
        _ => "ovf: the highest weight among servers with no more active connections than their weight",
    }
}

fn load_line(s: Scheduler, view: &View, id: u32, r: &RealServer, c: &RealConns, v: &ConnView) -> String {
    let skipped =
        if v.overloaded || v.weight == 0 { format!(" — skipped: {}", refusal(r, c)) } else { String::new() };
    let overhead = match s {
        Scheduler::Lc => format!(", overhead {}", models::conn_overhead(v)),
        Scheduler::Wlc => per_weight(models::conn_overhead(v), v.weight),
        Scheduler::Sed | Scheduler::Nq => per_weight(models::sed_overhead(v), v.weight),
        _ => String::new(),
    };
    format!(
        "  {}: weight {}, active {}, inactive {}{overhead}{skipped}",
        view.address(id),
        v.weight,
        v.active,
        v.inactive
    )
}

fn per_weight(overhead: i32, weight: u32) -> String {
    match weight {
        0 => format!(", overhead {overhead}"),
        w => format!(", overhead {overhead}, {:.2} per weight", overhead as f64 / w as f64),
    }
}

/// rr, wrr: the sequence entry at the shared position, skipping servers
/// that take no connection (at most [`MAX_SKIPS`] tries), as the
/// datapath's `sequence::walk`.
fn sequence(s: Scheduler, found: &Found, view: &View) -> Pick {
    let len = found.table.len() as u64;
    let name = s.name();
    if len == 0 {
        return Pick { real: None, why: vec![format!("{name}: the sequence is empty (no server with weight > 0)")] };
    }
    let mut why = vec![format!(
        "{name}: one period of IPVS's walk is a sequence of {len} entries; the service's position is {} (entry {})",
        found.position,
        found.position % len
    )];
    let at = |step: u64| found.table[(step % len) as usize];
    let mut real = None;
    let mut next_step = found.position;
    for k in 0..MAX_SKIPS {
        let step = found.position + k;
        let id = at(step);
        next_step = step + 1;
        match view.real(id) {
            Some((r, c)) if takes(r, c) => {
                why.push(format!("entry {} -> {}", step % len, view.address(id)));
                real = Some(id);
                break;
            }
            Some((r, c)) => why.push(format!("entry {}: {} skipped ({})", step % len, view.address(id), refusal(r, c))),
            None => why.push(format!("entry {}: real #{id} missing, skipped", step % len)),
        }
    }
    let next: Vec<String> = (next_step..next_step + SHOW_NEXT.min(len)).map(|s| view.address(at(s))).collect();
    why.push(format!("then: {}", next.join(", ")));
    Pick { real, why }
}

/// sh, dh, mh: the slot the flow hashes to in the controller's table, with
/// the fallback walks (`models::sh_pick`, `dh_pick`, `mh_pick`).
fn hashed(
    s: Scheduler,
    found: &Found,
    view: &View,
    list: &[(u32, &RealServer, &RealConns)],
    views: &[ConnView],
) -> Pick {
    let flow = &view.flow;
    let flags = found.service.flags;
    // The table holds real server ids; the models take list indices.
    let table: Vec<Option<u32>> = found
        .table
        .iter()
        .map(|&id| if id == NO_REAL { None } else { list.iter().position(|(l, _, _)| *l == id).map(|i| i as u32) })
        .collect();
    let len = table.len() as u32;
    let (use_port, fallback) = match s {
        Scheduler::Sh => (flags & service_flag::SH_PORT != 0, flags & service_flag::SH_FALLBACK != 0),
        Scheduler::Mh => (flags & service_flag::MH_PORT != 0, flags & service_flag::MH_FALLBACK != 0),
        _ => (false, false),
    };
    let (what, slot, picked) = match s {
        Scheduler::Sh => (
            if use_port { "source address and port" } else { "source address" },
            hash::sh_bucket(flow.src, flow.sport, use_port, 0),
            models::sh_pick(&table, views, flow.src, flow.sport, fallback, use_port),
        ),
        Scheduler::Dh => ("destination address", hash::dh_bucket(flow.dst), models::dh_pick(&table, views, flow.dst)),
        _ => (
            if use_port { "source address and port" } else { "source address" },
            hash::mh_index(flow.src, flow.sport, use_port, 0, len.max(1)),
            models::mh_pick(&table, views, flow.src, flow.sport, fallback, use_port),
        ),
    };
    let owner = table.get(slot as usize).copied().flatten().map(|i| list[i as usize].0);
    let mut why = vec![format!(
        "{}: the {what} hashes to slot {slot} of {len}, which holds {}",
        s.name(),
        owner.map_or_else(|| "no server".to_owned(), |id| view.address(id))
    )];
    let real = picked.map(|i| list[i].0);
    if let (Some(o), Some((r, c))) = (owner, owner.and_then(|o| view.real(o)))
        && real != Some(o)
    {
        why.push(format!(
            "{} takes no connection ({}); {}",
            view.address(o),
            refusal(r, c),
            if fallback { "the fallback walk goes on along the probe sequence" } else { "no fallback flag: none" }
        ));
    }
    Pick { real, why }
}

/// lblc, lblcr: the destination address's cache entry, else wlc
/// (`lb_sched_lblc`, `lb_sched_lblcr`; IPVS's `ip_vs_lblc_schedule`,
/// `ip_vs_lblcr_schedule`).
fn locality(
    s: Scheduler,
    _found: &Found,
    view: &View,
    list: &[(u32, &RealServer, &RealConns)],
    views: &[ConnView],
) -> Pick {
    let lb_list: Vec<LbReal> = list.iter().zip(views).map(|((id, _, _), v)| LbReal { id: *id, view: *v }).collect();
    let wlc = models::wlc(views).map(|i| list[i].0);
    let name = s.name();
    let dst = lb_common::ip_from_words(view.flow.dst, view.flow.family);
    let mut why = Vec::new();
    let live = view.lblc.filter(|e| view.now_ns.wrapping_sub(e.lastuse_ns) < LBLC_EXPIRATION_NS);
    let wlc_why = |why: &mut Vec<String>| {
        why.push(format!("wlc over the list: {}", wlc.map_or_else(|| "no server".to_owned(), |id| view.address(id))));
        for ((id, r, c), v) in list.iter().zip(views) {
            why.push(load_line(Scheduler::Wlc, view, *id, r, c, v));
        }
    };
    let Some(entry) = live else {
        why.push(format!("{name}: no live cache entry for destination {dst}: wlc picks, and the cache remembers it"));
        wlc_why(&mut why);
        return Pick { real: wlc, why };
    };
    // A cached server as `load` reads it, whatever list it is in.
    let cached_view = |id: u32| view.real(id).map(|(r, c)| (r.flags & real_flag::AVAILABLE != 0, conn_view_raw(r, c)));
    let chosen = if s == Scheduler::Lblc {
        let id = entry.reals[0];
        why.push(format!("lblc: destination {dst} is cached on {}", view.address(id)));
        cached_view(id).filter(|(in_list, v)| *in_list && v.weight > 0).map(|_| id)
    } else {
        let set: Vec<u32> = entry.reals[..(entry.len as usize).min(LBLCR_MAX_SET)].to_vec();
        let names: Vec<String> = set.iter().map(|&id| view.address(id)).collect();
        why.push(format!("lblcr: destination {dst} is cached on the set [{}]", names.join(", ")));
        set_min(&set, view)
    };
    if let Some(id) = chosen
        && let Some((_, v)) = cached_view(id)
        && !models::lblc_overloaded(&lb_list, &v)
    {
        why.push(format!("{} takes it (not overloaded by lblc's rule)", view.address(id)));
        return Pick { real: Some(id), why };
    }
    why.push("no cached server can take it (gone, weight 0, or active > weight while another is light)".to_owned());
    wlc_why(&mut why);
    Pick { real: wlc, why }
}

/// The raw counts, overload by the flag's hysteresis only.
fn conn_view_raw(r: &RealServer, c: &RealConns) -> ConnView {
    ConnView {
        weight: r.weight,
        active: c.active.max(0) as u64,
        inactive: c.inactive.max(0) as u64,
        overloaded: overloaded(r, c),
    }
}

/// `ip_vs_dest_set_min` (the datapath's `lb_sched_set_min`): in set order,
/// skipping overloaded members, the first in the list with weight > 0, then
/// wlc's strict comparison over the later members in the list.
fn set_min(set: &[u32], view: &View) -> Option<u32> {
    let mut best: Option<(u32, u64, u64)> = None;
    for &id in set {
        let Some((r, c)) = view.real(id) else {
            continue;
        };
        let v = conn_view_raw(r, c);
        if v.overloaded {
            continue;
        }
        let in_list = r.flags & real_flag::AVAILABLE != 0;
        let oh = (v.active << 8) + v.inactive;
        let w = v.weight as u64;
        let better = match best {
            None => w > 0 && in_list,
            Some((_, boh, bw)) => boh * w > oh * bw && in_list,
        };
        if better {
            best = Some((id, oh, w));
        }
    }
    best.map(|(id, _, _)| id)
}
