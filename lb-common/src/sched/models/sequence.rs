//! IPVS's rr and wrr walks, literally (ip_vs_rr.c, ip_vs_wrr.c), and the
//! controller's tables checked against them.

use crate::sched::sequence::{wrr_changed_cw, wrr_params};

/// What the schedulers need to know of one real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SchedReal {
    pub weight: u32,
    pub overloaded: bool,
}

impl SchedReal {
    pub const fn new(weight: u32) -> Self {
        Self { weight, overloaded: false }
    }
}

/// IPVS's rr, literally: a pointer into the list (`None` = the list head),
/// moved to the next server with weight > 0 that is not overloaded.
#[derive(Clone, Debug, Default)]
pub struct RrModel {
    last: Option<usize>,
}

impl RrModel {
    pub fn schedule(&mut self, reals: &[SchedReal]) -> Option<usize> {
        let n = reals.len();
        if n == 0 {
            return None;
        }
        let start = self.last.map_or(0, |l| l + 1);
        // One full turn, ending with the last one chosen.
        for k in 0..n {
            let i = (start + k) % n;
            if !reals[i].overloaded && reals[i].weight > 0 {
                self.last = Some(i);
                return Some(i);
            }
        }
        None
    }

    /// The list changed under the pointer: a removed server at index
    /// `removed` moves the pointer back to its predecessor, as IPVS's del_dest.
    pub fn remove(&mut self, removed: usize) {
        if let Some(l) = self.last {
            self.last = match l.cmp(&removed) {
                std::cmp::Ordering::Less => Some(l),
                std::cmp::Ordering::Equal => l.checked_sub(1),
                std::cmp::Ordering::Greater => Some(l - 1),
            };
        }
    }

    /// A server was added at the list head (IPVS adds in front).
    pub fn add_front(&mut self) {
        if let Some(l) = self.last {
            self.last = Some(l + 1);
        }
    }

    pub fn last(&self) -> Option<usize> {
        self.last
    }
}

/// IPVS's wrr, literally (`ip_vs_wrr.c`): current list pointer, current
/// weight, max weight and step, including its end-of-list and overload rules.
#[derive(Clone, Debug)]
pub struct WrrModel {
    /// `None` = the list head.
    cl: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

impl WrrModel {
    /// A service given all these servers at once (as when its scheduler is
    /// set to wrr: `ip_vs_wrr_init_svc`).
    pub fn new(reals: &[SchedReal]) -> Self {
        let (di, mw) = wrr_params(&weights(reals));
        Self { cl: None, cw: mw as i64, mw: mw as i64, di: di as i64 }
    }

    /// A service created with no servers yet.
    pub fn empty() -> Self {
        Self { cl: None, cw: 0, mw: 0, di: 1 }
    }

    /// The server set or a weight changed: back to the head, current weight
    /// kept where IPVS keeps it.
    pub fn changed(&mut self, reals: &[SchedReal]) {
        let ws = weights(reals);
        let (di, mw) = wrr_params(&ws);
        self.cl = None;
        self.di = di as i64;
        self.mw = mw as i64;
        self.cw = wrr_changed_cw(self.cw, &ws);
    }

    pub fn current_weight(&self) -> i64 {
        self.cw
    }

    pub fn schedule(&mut self, reals: &[SchedReal]) -> Option<usize> {
        if self.mw == 0 {
            return None;
        }
        let last = self.cl;
        let mut stop: Option<usize> = None;
        let mut last_pass = false;
        let mut restarted = false;
        let mut pos = self.cl;
        loop {
            // Continue from the element after `pos` to the end of the list.
            let from = pos.map_or(0, |p| p + 1);
            for (i, d) in reals.iter().enumerate().skip(from) {
                if !d.overloaded && d.weight as i64 >= self.cw {
                    self.cl = Some(i);
                    return Some(i);
                }
                if stop == Some(i) {
                    self.cl = Some(i);
                    return None;
                }
            }
            pos = None;
            self.cw -= self.di;
            if self.cw <= 0 {
                self.cw = self.mw;
                if last_pass || last.is_none() {
                    self.cl = None;
                    return None;
                }
                restarted = true;
            }
            last_pass = self.cw <= self.di;
            if last_pass && restarted && last.is_some() {
                stop = last;
            }
        }
    }
}

fn weights(reals: &[SchedReal]) -> Vec<u32> {
    reals.iter().map(|d| d.weight).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sched::{rr_table, wrr_current_weight_at, wrr_period, wrr_resume_position, wrr_table};

    fn reals(ws: &[u32]) -> Vec<SchedReal> {
        ws.iter().map(|&w| SchedReal::new(w)).collect()
    }

    fn walk(table: &[u32], n: usize) -> Vec<usize> {
        (0..n).map(|i| table[i % table.len()] as usize).collect()
    }

    #[test]
    fn rr_table_matches_the_model() {
        for ws in [&[1u32, 1][..], &[4, 3, 0], &[0, 5, 0, 2], &[1]] {
            let d = reals(ws);
            let mut m = RrModel::default();
            let model: Vec<usize> = (0..50).map(|_| m.schedule(&d).unwrap()).collect();
            assert_eq!(walk(&rr_table(ws), 50), model, "weights {ws:?}");
        }
    }

    #[test]
    fn wrr_table_matches_the_model() {
        for ws in [
            &[3u32, 1][..],
            &[4, 3, 2],
            &[6, 4, 2],
            &[5, 0, 5],
            &[1, 1, 1],
            &[100, 7, 13, 1],
            &[9, 6, 3, 0, 12],
        ] {
            let d = reals(ws);
            let mut m = WrrModel::new(&d);
            let table = wrr_table(ws);
            assert_eq!(table.len() as u64, wrr_period(ws));
            let n = table.len() * 3 + 7;
            let model: Vec<usize> = (0..n).map(|_| m.schedule(&d).unwrap()).collect();
            assert_eq!(walk(&table, n), model, "weights {ws:?}");
        }
    }

    #[test]
    fn wrr_3_to_1_gives_24_and_8_over_32() {
        let t = wrr_table(&[3, 1]);
        let w = walk(&t, 32);
        assert_eq!(w.iter().filter(|&&i| i == 0).count(), 24);
    }

    #[test]
    fn all_weights_zero_schedules_nothing() {
        assert!(rr_table(&[0, 0]).is_empty());
        assert!(wrr_table(&[0, 0]).is_empty());
        let d = reals(&[0, 0]);
        assert_eq!(WrrModel::new(&d).schedule(&d), None);
        assert_eq!(RrModel::default().schedule(&d), None);
    }

    #[test]
    fn wrr_resume_follows_the_model_across_a_change() {
        let before = [4u32, 3, 2];
        let after = [4u32, 3, 2, 6];
        let d0 = reals(&before);
        let d1 = reals(&after);
        for picks_before in 0..20u64 {
            let mut m = WrrModel::new(&d0);
            for _ in 0..picks_before {
                m.schedule(&d0);
            }
            // What the controller can see: the table position.
            let cw = wrr_current_weight_at(&before, picks_before);
            assert_eq!(cw, m.current_weight(), "cw after {picks_before} picks");
            m.changed(&d1);
            let mut shadow = WrrModel::new(&d0);
            shadow.cw = cw;
            shadow.changed(&d1);
            let table = wrr_table(&after);
            let start = wrr_resume_position(&after, shadow.current_weight());
            for k in 0..40u64 {
                let want = m.schedule(&d1).unwrap();
                let got = table[((start + k) % table.len() as u64) as usize] as usize;
                assert_eq!(got, want, "after {picks_before} picks, pick {k}");
            }
        }
    }
}
