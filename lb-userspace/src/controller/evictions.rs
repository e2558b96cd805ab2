//! The connection table's evictions, which the kernel does not count: an
//! LRU hash map makes room for an insert by dropping its least recently
//! used entry, silently. They are derived from inserts against live
//! entries, at the end of each complete sweep pass.
//!
//! The datapath counts each entry in when it inserts it (a connection or a
//! template, into its real server's ActiveConn, InActConn or PersistConn)
//! and out when it removes it, as the sweep does for what it removes; an
//! entry the LRU evicts leaves uncounted. So what the counts hold beyond
//! the live entries a pass finds — with the sweep's own corrections of the
//! counts (`sweep::DriftFilter`) added back — is the entries evicted:
//! inserts − removals − live.
//!
//! A pass over a table that churns finds a little less or more than the
//! table holds at any one moment; of the last [`WINDOW`] passes' figures
//! the smallest counts, so that a pass that found too little is not taken
//! for evictions (during a flood the figure grows far faster than that
//! noise; once it is over every pass agrees). A counter never goes down.

/// Passes whose figures are compared.
const WINDOW: usize = 3;

#[derive(Debug, Default)]
pub(super) struct Evictions {
    /// How far the sweep's corrections took the counts down so far (up:
    /// negative).
    corrected: i64,
    /// The last passes' figures.
    recent: Vec<i64>,
    total: u64,
}

impl Evictions {
    /// A complete pass: `gap`, what the servers' counts held beyond the
    /// live entries it found; `corrected`, by how much the sweep then took
    /// the counts down.
    pub(super) fn after_pass(&mut self, gap: i64, corrected: i64) {
        self.recent.push(self.corrected + gap);
        if self.recent.len() > WINDOW {
            self.recent.remove(0);
        }
        self.corrected += corrected;
        if self.recent.len() == WINDOW
            && let Some(&least) = self.recent.iter().min()
        {
            self.total = self.total.max(least.max(0) as u64);
        }
    }

    /// Entries evicted since lbd started (counts it adopted included).
    pub(super) fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_are_counted_in_less_what_the_table_holds() {
        let mut e = Evictions::default();
        // Nothing evicted: counts and table agree.
        for _ in 0..5 {
            e.after_pass(0, 0);
        }
        assert_eq!(e.total(), 0);
        // 100 evicted: seen by three passes, then the sweep corrects the
        // counts and the gap closes; the total stays.
        e.after_pass(100, 0);
        e.after_pass(100, 0);
        assert_eq!(e.total(), 0, "not before three passes agree");
        e.after_pass(100, 100);
        assert_eq!(e.total(), 100);
        for _ in 0..5 {
            e.after_pass(0, 0);
        }
        assert_eq!(e.total(), 100);
        // A flood: the gap grows, one pass finds too little (a larger gap).
        for (gap, corrected) in [(1000, 0), (2500, 0), (2000, 1000), (2500, 0)] {
            e.after_pass(gap, corrected);
        }
        assert_eq!(e.total(), 100 + 2000, "the least of the last three");
        for _ in 0..3 {
            e.after_pass(1600, 0);
        }
        assert_eq!(e.total(), 2700);
    }

    #[test]
    fn entries_never_counted_in_are_no_evictions_and_the_total_never_falls() {
        let mut e = Evictions::default();
        for _ in 0..3 {
            e.after_pass(50, 0);
        }
        assert_eq!(e.total(), 50);
        // Entries the counts never held (written from outside the
        // datapath): a negative gap, corrected up.
        for (gap, corrected) in [
            (-1000, 0),
            (-1000, 0),
            (-1000, -1000),
            (0, 0),
            (0, 0),
            (0, 0),
        ] {
            e.after_pass(gap + 50, corrected);
        }
        assert_eq!(e.total(), 50);
    }
}
