//! Log lines at a bounded rate: at most one line per kind of event per
//! period, and what was held back said as a count with the next line.
//!
//! For what the network (a forged advert) or a broken host (no file
//! descriptors left) can make happen thousands of times a second: each
//! would otherwise be a log line. Pure: the caller hands in the time.
//!
//! keepalived's `log_rate_limited_error` (vrrp.c) logs each kind of bad
//! advert once, until an advert is accepted from a new master; here a kind
//! is logged again after the period, with a count of the ones in between,
//! so a lasting attack stays visible without flooding the log.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

/// The period VRRP and the health checks use.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(10);

/// Kinds tracked at most; past it, new kinds are counted but not logged
/// until a period has passed (the kinds are ours, a short fixed list, so
/// this only guards against a bug).
const MAX_KINDS: usize = 256;

/// Rate-limits log lines by kind `K`.
#[derive(Debug)]
pub struct LogLimiter<K> {
    period: Duration,
    kinds: HashMap<K, Slot>,
}

#[derive(Debug)]
struct Slot {
    /// When the last line of this kind was logged.
    logged_at: Instant,
    /// Events held back since.
    held: u64,
    /// The message of the last one held back.
    last: String,
}

impl<K: Hash + Eq + Clone> LogLimiter<K> {
    pub fn new(period: Duration) -> Self {
        Self { period, kinds: HashMap::new() }
    }

    /// One event of `kind` at `now`, described by `message`. Returns the
    /// line to log now, if any: the message, with the count of the events
    /// held back since the last line of this kind.
    pub fn event(&mut self, kind: K, now: Instant, message: impl FnOnce() -> String) -> Option<String> {
        if let Some(slot) = self.kinds.get_mut(&kind) {
            if now < slot.logged_at + self.period {
                slot.held += 1;
                slot.last = message();
                return None;
            }
            let held = std::mem::take(&mut slot.held);
            slot.logged_at = now;
            slot.last.clear();
            return Some(with_count(message(), held, self.period));
        }
        if self.kinds.len() >= MAX_KINDS {
            let period = self.period;
            self.kinds.retain(|_, s| s.held > 0 || now < s.logged_at + period);
            if self.kinds.len() >= MAX_KINDS {
                return None;
            }
        }
        self.kinds.insert(kind, Slot { logged_at: now, held: 0, last: String::new() });
        Some(message())
    }

    /// The lines due at `now`: for each kind whose period has passed with
    /// events held back, the last one's message and their count. Call it
    /// now and then, so a burst that stopped is still told.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let period = self.period;
        let mut lines = Vec::new();
        for slot in self.kinds.values_mut() {
            if slot.held > 0 && now >= slot.logged_at + period {
                let held = std::mem::take(&mut slot.held);
                slot.logged_at = now;
                // The line is the last one held back: it is not counted twice.
                lines.push(with_count(std::mem::take(&mut slot.last), held - 1, period));
            }
        }
        lines
    }
}

fn with_count(message: String, held: u64, period: Duration) -> String {
    match held {
        0 => message,
        1 => format!("{message} (and 1 more like it in the last {}s)", period.as_secs()),
        n => format!("{message} (and {n} more like it in the last {}s)", period.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_period_with_a_count() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut limit = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(limit.event("ttl", at(0), || "TTL 64".into()).as_deref(), Some("TTL 64"));
        for i in 1..=500 {
            assert_eq!(limit.event("ttl", at(i), || format!("TTL {i}")), None);
        }
        // Another kind has its own period.
        assert_eq!(limit.event("peer", at(600), || "not a peer".into()).as_deref(), Some("not a peer"));
        assert_eq!(limit.due(at(9_999)), Vec::<String>::new());
        assert_eq!(
            limit.event("ttl", at(10_000), || "TTL 1".into()).as_deref(),
            Some("TTL 1 (and 500 more like it in the last 10s)")
        );
        assert_eq!(limit.event("ttl", at(10_001), || "TTL 2".into()), None);
        assert_eq!(limit.event("ttl", at(10_002), || "TTL 3".into()), None);
    }

    #[test]
    fn a_burst_that_stopped_is_told_when_due() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut limit = LogLimiter::new(Duration::from_secs(10));
        limit.event("ttl", at(0), || "TTL 64".into());
        limit.event("ttl", at(1), || "TTL 63".into());
        limit.event("ttl", at(2), || "TTL 62".into());
        assert_eq!(limit.due(at(5_000)), Vec::<String>::new());
        assert_eq!(limit.due(at(10_000)), ["TTL 62 (and 1 more like it in the last 10s)"]);
        assert_eq!(limit.due(at(30_000)), Vec::<String>::new(), "told once");
        // The due line started a period of its own.
        limit.event("ttl", at(12_000), || "TTL 1".into());
        assert_eq!(limit.due(at(20_000)), ["TTL 1"]);
        assert_eq!(limit.event("ttl", at(31_000), || "TTL 0".into()).as_deref(), Some("TTL 0"));
    }
}
