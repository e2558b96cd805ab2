//! The connection-counting schedulers: lc, wlc, sed, nq, fo and ovf.
//!
//! Each is one pass over the list in IPVS order with the kernel's integer
//! arithmetic (counters and overheads are `int`, products `__s64`), so the
//! datapath can run the very same loop over its destination list.

/// A real server as the connection-counting schedulers see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnView {
    pub weight: u32,
    /// IPVS's `activeconns`.
    pub active: u64,
    /// IPVS's `inactconns`.
    pub inactive: u64,
    /// `IP_VS_DEST_F_OVERLOAD`: over its upper connection threshold.
    pub overloaded: bool,
}

impl ConnView {
    pub const fn new(weight: u32, active: u64, inactive: u64) -> Self {
        Self { weight, active, inactive, overloaded: false }
    }

    /// The same server with its overload flag set.
    pub const fn with_overload(mut self) -> Self {
        self.overloaded = true;
        self
    }
}

/// A connection counter as the kernel reads it: `atomic_t` holds an `int`,
/// so the low 32 bits, signed (differs from the count only past 2^31).
#[inline]
pub(super) fn counter(n: u64) -> i32 {
    n as i32
}

/// A weight as the kernel reads it (`int`; IPVS refuses weights above
/// INT_MAX, and so must the controller).
#[inline]
pub(super) fn weight_of(d: &ConnView) -> i64 {
    d.weight as i64
}

/// `ip_vs_dest_conn_overhead` (include/net/ip_vs.h): `(activeconns << 8) +
/// inactconns`, computed in `int` and wrapping as the kernel's does.
pub fn conn_overhead(d: &ConnView) -> i32 {
    counter(d.active).wrapping_shl(8).wrapping_add(counter(d.inactive))
}

/// sed's and nq's overhead (`ip_vs_sed_dest_overhead`,
/// `ip_vs_nq_dest_overhead`): `activeconns + 1`; inactive ones don't count.
pub fn sed_overhead(d: &ConnView) -> i32 {
    counter(d.active).wrapping_add(1)
}

/// lc (ip_vs_lc.c, `ip_vs_lc_schedule`): skip overloaded servers and weight
/// 0; the least `conn_overhead`, compared as `unsigned int`, strictly less,
/// so the first in list order wins a tie. Weights play no other part.
pub fn lc(reals: &[ConnView]) -> Option<usize> {
    let mut least = None;
    let mut loh = 0u32;
    for (i, d) in reals.iter().enumerate() {
        if d.overloaded || d.weight == 0 {
            continue;
        }
        let doh = conn_overhead(d) as u32;
        if least.is_none() || doh < loh {
            least = Some(i);
            loh = doh;
        }
    }
    least
}

/// The two-stage weighted-least loop wlc, sed, lblc and lblcr share
/// (ip_vs_wlc.c, ip_vs_sed.c, `__ip_vs_lblc_schedule`,
/// `__ip_vs_lblcr_schedule`): the first server that is not overloaded and
/// has weight > 0 is the candidate; every later server that is not
/// overloaded replaces it when `(s64)loh * w > (s64)doh * lw` (strictly, so
/// ties keep the earlier one). The second stage does not skip weight 0
/// explicitly; with `w = 0` the left side is 0 and (for a non-negative
/// overhead) cannot exceed the right, which is what keeps such servers out.
pub(super) fn weighted_least<T>(
    items: &[T],
    view: impl Fn(&T) -> &ConnView,
    overhead: fn(&ConnView) -> i32,
) -> Option<usize> {
    let first = items.iter().position(|t| {
        let d = view(t);
        !d.overloaded && d.weight > 0
    })?;
    let mut least = first;
    let mut loh = overhead(view(&items[first])) as i64;
    for (i, t) in items.iter().enumerate().skip(first + 1) {
        let d = view(t);
        if d.overloaded {
            continue;
        }
        let doh = overhead(d) as i64;
        if loh * weight_of(d) > doh * weight_of(view(&items[least])) {
            least = i;
            loh = doh;
        }
    }
    Some(least)
}

/// wlc (ip_vs_wlc.c, `ip_vs_wlc_schedule`): least `conn_overhead / weight`.
/// The first server not overloaded with weight > 0 is the candidate; each
/// later one not overloaded replaces it if `(s64)loh * w > (s64)doh * lw`
/// (strictly: ties keep the earlier). Weight 0 is not skipped in that second
/// stage, but `loh * 0` cannot exceed `doh * lw`, so it is never taken.
pub fn wlc(reals: &[ConnView]) -> Option<usize> {
    weighted_least(reals, |d| d, conn_overhead)
}

/// sed (ip_vs_sed.c, `ip_vs_sed_schedule`): [`wlc`]'s two stages and
/// comparison with [`sed_overhead`] (`active + 1`) in place of
/// [`conn_overhead`].
pub fn sed(reals: &[ConnView]) -> Option<usize> {
    weighted_least(reals, |d| d, sed_overhead)
}

/// nq (ip_vs_nq.c): one pass skipping overloaded servers and weight 0; the
/// first server with no active connection is taken at once, whatever the
/// others; otherwise sed's rule (`(s64)loh * w > (s64)doh * lw`, first wins
/// ties).
pub fn nq(reals: &[ConnView]) -> Option<usize> {
    let mut least: Option<usize> = None;
    let mut loh = 0i64;
    for (i, d) in reals.iter().enumerate() {
        if d.overloaded || d.weight == 0 {
            continue;
        }
        let doh = sed_overhead(d) as i64;
        if counter(d.active) == 0 {
            return Some(i);
        }
        let better = match least {
            None => true,
            Some(l) => loh * weight_of(d) > doh * weight_of(&reals[l]),
        };
        if better {
            least = Some(i);
            loh = doh;
        }
    }
    least
}

/// fo (ip_vs_fo.c): the highest weight among servers not overloaded
/// (`weight > hw`, hw starting at 0: weight 0 never, the first wins ties).
pub fn fo(reals: &[ConnView]) -> Option<usize> {
    let mut h = None;
    let mut hw = 0i64;
    for (i, d) in reals.iter().enumerate() {
        if !d.overloaded && weight_of(d) > hw {
            h = Some(i);
            hw = weight_of(d);
        }
    }
    h
}

/// ovf (ip_vs_ovf.c): skip servers overloaded, with weight 0, or with more
/// active connections than their weight (`active > weight`; equal still
/// takes one more); the highest weight of the rest, the first on ties.
pub fn ovf(reals: &[ConnView]) -> Option<usize> {
    let mut h = None;
    let mut hw = 0i64;
    for (i, d) in reals.iter().enumerate() {
        let w = weight_of(d);
        if d.overloaded || counter(d.active) as i64 > w || w == 0 {
            continue;
        }
        if h.is_none() || w > hw {
            h = Some(i);
            hw = w;
        }
    }
    h
}

/// The model of a connection-counting scheduler (lc, wlc, sed, nq, fo,
/// ovf); `None` for the others.
pub fn least_connection(scheduler: crate::model::Scheduler) -> Option<fn(&[ConnView]) -> Option<usize>> {
    use crate::model::Scheduler as S;
    match scheduler {
        S::Lc => Some(lc),
        S::Wlc => Some(wlc),
        S::Sed => Some(sed),
        S::Nq => Some(nq),
        S::Fo => Some(fo),
        S::Ovf => Some(ovf),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::fixtures::cv;

    // ---- lc ----------------------------------------------------------------

    #[test]
    fn lc_skips_overloaded_and_weight_0_and_first_wins_ties() {
        let d = [cv(0, 0, 0), cv(5, 0, 0).with_overload(), cv(1, 1, 0), cv(9, 1, 0)];
        assert_eq!(lc(&d), Some(2));
        assert_eq!(lc(&[cv(0, 0, 0), cv(3, 0, 0).with_overload()]), None);
        assert_eq!(lc(&[]), None);
    }

    #[test]
    fn lc_overhead_is_active_times_256_plus_inactive() {
        // 256 vs 255: the second.
        assert_eq!(lc(&[cv(1, 1, 0), cv(1, 0, 255)]), Some(1));
        // 256 vs 256: a tie, the first.
        assert_eq!(lc(&[cv(1, 1, 0), cv(1, 0, 256)]), Some(0));
        // Weights play no part beyond 0 = quiesced.
        assert_eq!(lc(&[cv(100, 2, 0), cv(1, 1, 0)]), Some(1));
        assert_eq!(conn_overhead(&cv(1, 3, 7)), 3 * 256 + 7);
    }

    #[test]
    fn overhead_wraps_like_the_kernels_int() {
        // 2^23 active connections: (2^23 << 8) = 2^31 wraps to INT_MIN.
        assert_eq!(conn_overhead(&cv(1, 1 << 23, 0)), i32::MIN);
        // lc compares as unsigned int: 2^31 > 5.
        assert_eq!(lc(&[cv(1, 1 << 23, 0), cv(1, 0, 5)]), Some(1));
    }

    // ---- wlc ---------------------------------------------------------------

    #[test]
    fn wlc_weights_3_to_1() {
        // 768/3 vs 256/1: equal, the first stays.
        assert_eq!(wlc(&[cv(3, 3, 0), cv(1, 1, 0)]), Some(0));
        // 1024/3 > 256/1: the second.
        assert_eq!(wlc(&[cv(3, 4, 0), cv(1, 1, 0)]), Some(1));
        // Inactive connections count 1/256 of an active one.
        assert_eq!(wlc(&[cv(3, 3, 1), cv(1, 1, 0)]), Some(1));
        assert_eq!(wlc(&[cv(3, 3, 0), cv(1, 1, 1)]), Some(0));
    }

    #[test]
    fn wlc_never_picks_weight_0() {
        // First stage skips weight 0 explicitly ...
        assert_eq!(wlc(&[cv(0, 0, 0), cv(1, 5, 0)]), Some(1));
        // ... the second stage by its comparison: loh * 0 > 0 * lw is false.
        assert_eq!(wlc(&[cv(1, 5, 0), cv(0, 0, 0)]), Some(0));
        assert_eq!(wlc(&[cv(0, 0, 0), cv(0, 0, 0)]), None);
    }

    #[test]
    fn wlc_skips_overloaded_in_both_stages() {
        assert_eq!(wlc(&[cv(1, 0, 0).with_overload(), cv(1, 9, 0), cv(1, 3, 0)]), Some(2));
        assert_eq!(wlc(&[cv(1, 9, 0), cv(1, 0, 0).with_overload()]), Some(0));
    }

    // ---- sed and nq --------------------------------------------------------

    #[test]
    fn sed_counts_the_incoming_job_and_ignores_inactive() {
        // (1+1)/2 vs (0+1)/1: equal, the first.
        assert_eq!(sed(&[cv(2, 1, 0), cv(1, 0, 0)]), Some(0));
        // (2+1)/2 > 1/1: the second.
        assert_eq!(sed(&[cv(2, 2, 0), cv(1, 0, 0)]), Some(1));
        // Inactive connections don't count.
        assert_eq!(sed(&[cv(2, 1, 1000), cv(1, 0, 0)]), Some(0));
        // Where wlc and sed differ: wlc sees 0 vs 256 and keeps the idle
        // weight-1 server; sed sees 1/1 vs 2/10 and takes the heavy one.
        let d = [cv(1, 0, 0), cv(10, 1, 0)];
        assert_eq!(wlc(&d), Some(0));
        assert_eq!(sed(&d), Some(1));
    }

    #[test]
    fn nq_takes_an_idle_server_even_if_heavier_ones_exist() {
        assert_eq!(nq(&[cv(100, 1, 0), cv(1, 0, 0)]), Some(1));
        // The first idle one, not the best idle one.
        assert_eq!(nq(&[cv(1, 0, 0), cv(10, 0, 0)]), Some(0));
        // Idle but overloaded or quiesced: skipped.
        assert_eq!(nq(&[cv(1, 0, 0).with_overload(), cv(0, 0, 0), cv(10, 3, 0)]), Some(2));
        // Inactive connections don't make a server busy.
        assert_eq!(nq(&[cv(100, 1, 0), cv(1, 0, 50)]), Some(1));
        // Nobody idle: sed's rule, first wins ties: 2/2 vs 2/1.
        assert_eq!(nq(&[cv(2, 1, 0), cv(1, 1, 0)]), Some(0));
        assert_eq!(nq(&[cv(1, 1, 0), cv(2, 1, 0)]), Some(1));
        assert_eq!(nq(&[cv(1, 2, 0), cv(2, 5, 0)]), Some(0));
        assert_eq!(nq(&[cv(0, 0, 0)]), None);
    }

    // ---- fo and ovf --------------------------------------------------------

    #[test]
    fn fo_takes_the_highest_weight_first_on_ties() {
        assert_eq!(fo(&[cv(3, 0, 0), cv(5, 9, 0), cv(5, 0, 0), cv(4, 0, 0)]), Some(1));
        assert_eq!(fo(&[cv(3, 0, 0), cv(5, 0, 0).with_overload(), cv(5, 0, 0), cv(4, 0, 0)]), Some(2));
        assert_eq!(fo(&[cv(0, 0, 0), cv(0, 0, 0)]), None);
    }

    #[test]
    fn ovf_skips_servers_with_more_active_than_weight() {
        // 6 > 5 skipped; 3 == 3 still eligible and first of weight 3.
        assert_eq!(ovf(&[cv(5, 6, 0), cv(3, 3, 0), cv(3, 0, 0)]), Some(1));
        assert_eq!(ovf(&[cv(5, 5, 0), cv(8, 9, 0)]), Some(0));
        // Inactive connections don't count.
        assert_eq!(ovf(&[cv(5, 0, 100)]), Some(0));
        assert_eq!(ovf(&[cv(5, 0, 0).with_overload(), cv(0, 0, 0), cv(2, 3, 0)]), None);
    }
}
