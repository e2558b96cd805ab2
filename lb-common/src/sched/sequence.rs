//! rr and wrr: one period of IPVS's walk over the list, as a table of list
//! indices the datapath walks with one atomic add. Checked against IPVS's
//! walks (`RrModel`, `WrrModel`) in `models/sequence.rs`.

/// Longest wrr period the controller will build (entries), so one service
/// cannot eat the shared table: sum(weights)/gcd must stay under it.
pub const MAX_SEQUENCE_LEN: usize = 1 << 16;

/// rr: the servers with weight > 0, in list order.
pub fn rr_table(weights: &[u32]) -> Vec<u32> {
    (0..weights.len() as u32).filter(|&i| weights[i as usize] > 0).collect()
}

pub(super) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// wrr's step (gcd of the positive weights, 1 if none) and its first current
/// weight `max - (gcd - 1)`, as IPVS computes them.
pub(super) fn wrr_params(weights: &[u32]) -> (u32, u32) {
    let di = weights.iter().filter(|&&w| w > 0).fold(0, |g, &w| if g == 0 { w } else { gcd(g, w) });
    let di = di.max(1);
    let max = weights.iter().copied().max().unwrap_or(0);
    (di, max.saturating_sub(di - 1))
}

/// Length of the wrr period for these weights, without building it.
pub fn wrr_period(weights: &[u32]) -> u64 {
    let (di, mw) = wrr_params(weights);
    if mw == 0 {
        return 0;
    }
    // In the round with current weight cw, every server with weight >= cw
    // is chosen once; cw runs mw, mw-di, ..., down to 1..=di.
    let mut len = 0u64;
    let mut cw = mw as i64;
    while cw > 0 {
        len += weights.iter().filter(|&&w| w as i64 >= cw).count() as u64;
        cw -= di as i64;
    }
    len
}

/// wrr: one period of IPVS's walk started from a fresh state (list head,
/// current weight = max - (gcd - 1)): round after round, every server whose
/// weight reaches the current weight, in list order.
pub fn wrr_table(weights: &[u32]) -> Vec<u32> {
    let (di, mw) = wrr_params(weights);
    let mut table = Vec::new();
    let mut cw = mw as i64;
    while mw > 0 && cw > 0 {
        table.extend((0..weights.len() as u32).filter(|&i| weights[i as usize] as i64 >= cw));
        cw -= di as i64;
    }
    table
}

/// The current weight IPVS's wrr keeps when the server set or a weight
/// changes (`ip_vs_wrr_dest_changed`).
pub fn wrr_changed_cw(cw: i64, weights: &[u32]) -> i64 {
    let (di, mw) = wrr_params(weights);
    let (di, mw) = (di as i64, mw as i64);
    if cw > mw || cw == 0 {
        mw
    } else if di > 1 {
        (cw / di) * di + 1
    } else {
        cw
    }
}

/// The current weight of a wrr service created empty and then given its
/// servers one by one (`ipvsadm -A` then `-a` for each, as keepalived does).
/// `weights_in_ipvs_order` is the final list, newest first.
pub fn wrr_cw_after_adding(weights_in_ipvs_order: &[u32]) -> i64 {
    let n = weights_in_ipvs_order.len();
    // An empty service starts with current weight 0; each addition applies
    // the change rule to the list as it then is (the k oldest, newest first).
    (1..=n).fold(0, |cw, k| wrr_changed_cw(cw, &weights_in_ipvs_order[n - k..]))
}

/// Where in a freshly built wrr table IPVS's walk continues after a change:
/// the walk restarts from the head at the model's current weight, which is
/// the start of that weight's round in the table.
pub fn wrr_resume_position(weights: &[u32], current_weight: i64) -> u64 {
    let (di, mw) = wrr_params(weights);
    let mut pos = 0u64;
    let mut cw = mw as i64;
    while cw > current_weight && cw > 0 {
        pos += weights.iter().filter(|&&w| w as i64 >= cw).count() as u64;
        cw -= di as i64;
    }
    pos
}

/// The current weight of IPVS's wrr walk right after the table entry at
/// `position - 1` was taken (the round that entry belongs to).
pub fn wrr_current_weight_at(weights: &[u32], position: u64) -> i64 {
    let (di, mw) = wrr_params(weights);
    let period = wrr_period(weights);
    if period == 0 {
        return mw as i64;
    }
    if position == 0 {
        return mw as i64;
    }
    let target = (position - 1) % period;
    let mut seen = 0u64;
    let mut cw = mw as i64;
    while cw > 0 {
        let round = weights.iter().filter(|&&w| w as i64 >= cw).count() as u64;
        if target < seen + round {
            return cw;
        }
        seen += round;
        cw -= di as i64;
    }
    mw as i64
}
