//! IPVS's rate estimator (`ip_vs_est.c`): every 2 seconds the counters'
//! growth feeds an exponentially weighted average with weight 1/4, kept in
//! fixed point, so `lbctl --rate` shows what `ipvsadm --rate` would.

use lb_ipvsadm::snapshot::{Rates, Stats};

/// How often [`Estimator::sample`] must be called.
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone, Debug, Default)]
pub struct Estimator {
    last: Stats,
    /// Scaled averages: rates per second << 10 for conns and packets, << 5
    /// for bytes (IPVS's scaling).
    cps: i64,
    in_pps: i64,
    out_pps: i64,
    in_bps: i64,
    out_bps: i64,
}

impl Estimator {
    /// Starts from the current counters, so history before it is not a burst.
    pub fn new(now: Stats) -> Self {
        Self { last: now, ..Self::default() }
    }

    /// Feeds the counters as they are now (one call per [`INTERVAL`]).
    pub fn sample(&mut self, now: Stats) {
        fn step(avg: &mut i64, now: u64, last: u64, shift: u32) {
            // Growth over 2 s, scaled: << 9 over 2 s is << 10 per second.
            let rate = (now.wrapping_sub(last) as i64) << shift;
            *avg += (rate - *avg) >> 2;
        }
        step(&mut self.cps, now.conns, self.last.conns, 9);
        step(&mut self.in_pps, now.in_packets, self.last.in_packets, 9);
        step(&mut self.out_pps, now.out_packets, self.last.out_packets, 9);
        step(&mut self.in_bps, now.in_bytes, self.last.in_bytes, 4);
        step(&mut self.out_bps, now.out_bytes, self.last.out_bytes, 4);
        self.last = now;
    }

    pub fn rates(&self) -> Rates {
        let unscale = |v: i64, shift: u32, round: i64| ((v + round) >> shift).max(0) as u64;
        Rates {
            cps: unscale(self.cps, 10, 0x1FF),
            in_pps: unscale(self.in_pps, 10, 0x1FF),
            out_pps: unscale(self.out_pps, 10, 0x1FF),
            in_bps: unscale(self.in_bps, 5, 0xF),
            out_bps: unscale(self.out_bps, 5, 0xF),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_rate_converges_to_itself() {
        let mut e = Estimator::new(Stats::default());
        let mut s = Stats::default();
        for _ in 0..40 {
            s.conns += 200; // 100 per second
            s.in_packets += 1000;
            s.in_bytes += 100_000;
            e.sample(s);
        }
        let r = e.rates();
        assert_eq!((r.cps, r.in_pps), (100, 500));
        // The fixed-point average settles a hair under (as IPVS's does).
        assert!((49_999..=50_000).contains(&r.in_bps), "{}", r.in_bps);
    }

    #[test]
    fn idle_decays_to_zero() {
        let mut e = Estimator::new(Stats::default());
        e.sample(Stats { conns: 100, ..Stats::default() });
        assert!(e.rates().cps > 0);
        for _ in 0..60 {
            e.sample(Stats { conns: 100, ..Stats::default() });
        }
        assert_eq!(e.rates().cps, 0);
    }
}
