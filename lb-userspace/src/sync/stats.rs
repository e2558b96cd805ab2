//! Connection sync's counters, for `lbctl --counters` (`sync_*`), and its
//! log at a bounded rate: a datagram or record refused for one reason is
//! logged at once, then at most once per [`LOG_INTERVAL`] with the number
//! refused since, however fast a flood comes.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

/// The shortest time between two log lines of one reason.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counters of one director's sync, shared by the sending and receiving
/// tasks and the daemon, which installs.
#[derive(Debug, Default)]
pub struct SyncStats {
    pub datagrams_sent: AtomicU64,
    pub records_sent: AtomicU64,
    /// Datagrams the socket did not take (their records are sent again).
    pub send_errors: AtomicU64,
    /// Records not sent: the send queue was full, or their datagram's send
    /// failed. Sent again at the next scan.
    pub records_unsent: AtomicU64,
    pub datagrams_received: AtomicU64,
    pub records_received: AtomicU64,
    pub records_installed: AtomicU64,
    /// Datagrams dropped whole (`sync_rejected_<reason>`) and records not
    /// installed (`sync_refused_<reason>`), by reason.
    reasons: Mutex<BTreeMap<String, u64>>,
    pub last_rejected: Mutex<Option<String>>,
    /// When a received entry was last installed (the metrics' sync lag).
    pub last_installed: Mutex<Option<SystemTime>>,
    log: Mutex<LogLimiter>,
}

impl SyncStats {
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts `n` under `name` (e.g. `sync_refused_state`).
    pub fn count(&self, name: &str, n: u64) {
        let mut reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        *reasons.entry(name.to_string()).or_default() += n;
    }

    /// One counter by its full name, 0 if never counted.
    pub fn reason(&self, name: &str) -> u64 {
        self.reasons.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied().unwrap_or(0)
    }

    /// Datagrams dropped whole, whatever the reason.
    pub fn rejected(&self) -> u64 {
        let reasons = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        reasons.iter().filter(|(k, _)| k.starts_with("sync_rejected_")).map(|(_, v)| v).sum()
    }

    /// Whether to log a line about `reason` now; `Some(n)`: yes, and `n`
    /// more were not logged since the last line.
    pub fn should_log(&self, reason: &str) -> Option<u64> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).should_log(reason, Instant::now())
    }

    /// Notes that received entries were installed just now.
    pub fn installed_now(&self) {
        *self.last_installed.lock().unwrap_or_else(|p| p.into_inner()) = Some(SystemTime::now());
    }

    pub fn last_installed(&self) -> Option<SystemTime> {
        *self.last_installed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every counter by its `lbctl --counters` name.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = [
            ("sync_datagrams_sent", &self.datagrams_sent),
            ("sync_records_sent", &self.records_sent),
            ("sync_send_errors", &self.send_errors),
            ("sync_records_unsent", &self.records_unsent),
            ("sync_datagrams_received", &self.datagrams_received),
            ("sync_records_received", &self.records_received),
            ("sync_records_installed", &self.records_installed),
        ]
        .into_iter()
        .map(|(name, c)| (name.to_string(), Self::get(c)))
        .collect();
        out.extend(self.reasons.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)));
        out
    }
}

/// Per reason: when it was last logged and how many were not logged since.
#[derive(Debug, Default)]
pub struct LogLimiter {
    reasons: BTreeMap<String, (Instant, u64)>,
}

impl LogLimiter {
    /// `Some(suppressed)` if a line about `reason` may be logged at `now`.
    /// The reasons are a fixed set of names, so the map stays small.
    pub fn should_log(&mut self, reason: &str, now: Instant) -> Option<u64> {
        match self.reasons.get_mut(reason) {
            Some((last, suppressed)) if now.duration_since(*last) < LOG_INTERVAL => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                self.reasons.insert(reason.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// " (and 12 more since)" when some were not logged.
pub fn more_since(suppressed: u64) -> String {
    if suppressed == 0 { String::new() } else { format!(" (and {suppressed} more since the last line)") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_once_per_interval() {
        let mut l = LogLimiter::default();
        let t0 = Instant::now();
        assert_eq!(l.should_log("bad_mac", t0), Some(0));
        for i in 1..1000 {
            assert_eq!(l.should_log("bad_mac", t0 + Duration::from_millis(i)), None);
        }
        // Another reason has its own budget.
        assert_eq!(l.should_log("replay", t0), Some(0));
        assert_eq!(l.should_log("bad_mac", t0 + LOG_INTERVAL), Some(999));
        assert_eq!(l.should_log("bad_mac", t0 + LOG_INTERVAL + Duration::from_secs(1)), None);
        assert_eq!(l.should_log("bad_mac", t0 + 3 * LOG_INTERVAL), Some(1));
        assert_eq!(more_since(0), "");
        assert_eq!(more_since(3), " (and 3 more since the last line)");
    }

    #[test]
    fn counters_by_name() {
        let s = SyncStats::default();
        SyncStats::add(&s.records_installed, 2);
        s.count("sync_refused_state", 1);
        s.count("sync_refused_state", 2);
        let c = s.counters();
        assert_eq!(c["sync_records_installed"], 2);
        assert_eq!(c["sync_refused_state"], 3);
        assert_eq!(c["sync_datagrams_sent"], 0);
        assert_eq!(s.reason("sync_rejected_replay"), 0);
        s.count("sync_rejected_replay", 2);
        s.count("sync_rejected_bad_mac", 1);
        assert_eq!((s.reason("sync_rejected_replay"), s.rejected()), (2, 3));
    }
}
