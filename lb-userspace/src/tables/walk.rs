//! Where an rr or wrr walk continues when its table is rebuilt, so the
//! choices go on as IPVS's would.

use lb_common::sched;

use super::InstalledService;
use crate::model::Scheduler;

/// Where a scheduler walk stands, to continue it as IPVS would after the
/// table is rebuilt.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct WalkResume {
    /// The position the current table was entered at.
    pub(super) position: u64,
    /// rr: the real server the walk stood on then (`None` = the list head).
    pub(super) rr_last: Option<u32>,
    /// wrr: the current weight then.
    pub(super) wrr_cw: i64,
}

/// Where a new service's walk starts: rr at the list head; wrr at IPVS's
/// current weight after its servers were added one by one, or (a scheduler
/// change) all at once.
pub(super) fn fresh_walk(scheduler: Scheduler, weights: &[u32], one_by_one: bool) -> WalkResume {
    match scheduler {
        Scheduler::Wrr => {
            let cw = if one_by_one {
                sched::wrr_cw_after_adding(weights)
            } else {
                sched::wrr_changed_cw(0, weights)
            };
            WalkResume { position: sched::wrr_resume_position(weights, cw), rr_last: None, wrr_cw: cw }
        }
        _ => WalkResume { position: 0, rr_last: None, wrr_cw: 0 },
    }
}

/// Where the walk continues in the rebuilt table so the choices go on as
/// IPVS's would after the same change. `position` is the datapath's current
/// position in the old table.
pub(super) fn resume_walk(scheduler: Scheduler, old: &InstalledService, position: u64, real_ids: &[u32], weights: &[u32]) -> WalkResume {
    let untouched = position == old.resume.position;
    match scheduler {
        Scheduler::Wrr => {
            let cw = if untouched { old.resume.wrr_cw } else { sched::wrr_current_weight_at(&old.table_weights, position) };
            let cw = sched::wrr_changed_cw(cw, weights);
            WalkResume { position: sched::wrr_resume_position(weights, cw), rr_last: None, wrr_cw: cw }
        }
        _ => {
            let old_table = sched::rr_table(&old.table_weights);
            let last = if untouched || old_table.is_empty() {
                old.resume.rr_last
            } else {
                let i = old_table[((position - 1) % old_table.len() as u64) as usize];
                Some(old.real_ids[i as usize])
            };
            // A removed server hands the pointer to its predecessor (IPVS's
            // rr del_dest), repeatedly if that one went too.
            let mut pointer = last;
            while let Some(p) = pointer {
                if real_ids.contains(&p) {
                    break;
                }
                let i = old.real_ids.iter().position(|&d| d == p).unwrap_or(0);
                pointer = if i == 0 { None } else { Some(old.real_ids[i - 1]) };
            }
            let start = pointer.map_or(0, |p| real_ids.iter().position(|&d| d == p).map_or(0, |i| i + 1));
            let n = real_ids.len();
            let next = (0..n).map(|k| (start + k) % n).find(|&i| weights[i] > 0);
            // The table lists eligible servers in list order: the next one's
            // index there is how many eligible servers precede it.
            let position = next.map_or(0, |i| weights[..i].iter().filter(|&&w| w > 0).count() as u64);
            WalkResume { position, rr_last: pointer, wrr_cw: 0 }
        }
    }
}
