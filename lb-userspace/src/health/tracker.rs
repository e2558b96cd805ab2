//! Up or down, from a server's check results.
//!
//! keepalived (check_tcp.c `tcp_epilog` and its siblings) does this: a
//! failed check of an up server is retried `retry` more times,
//! `delay_before_retry` apart, before the server is declared down; one
//! passed check brings a down server back; `alpha` starts a new server
//! down instead of up; checks come `delay_loop` apart otherwise.
//!
//! Here, as the issue defines it, `retry` counts all the failures in a row
//! that take a server down (keepalived's `retry N` is our `retry = N + 1`),
//! and `rise` successes in a row bring it back (keepalived: always 1).
//! While either count is under way the next check comes after
//! `delay_before_retry`; otherwise after `interval`. Unlike keepalived we
//! do not make retry bursts for a server that is already down: they could
//! change nothing.
//!
//! A check that could not be made ([`CheckResult::NotChecked`]: no file
//! descriptor left, a `source_address` not on the host yet, no process
//! for an exec check) is the director's fault and says nothing of the
//! server: it changes no state and no count, and the check is tried again
//! after `delay_before_retry`. keepalived does the same: its
//! `tcp_connect_thread` and `http_connect_thread` reschedule ("Rescheduling")
//! when `socket()` or `bind()` fails, `socket_connect` (layer4.c) counts
//! only ENETUNREACH, EHOSTUNREACH, ECONNREFUSED, EHOSTDOWN, ENETDOWN,
//! ECONNRESET, ECONNABORTED and ETIMEDOUT against the server, and a failed
//! `fork()` in `system_call_script` is only logged. (keepalived tries again
//! after `delay_loop`; the sooner retry here makes checks resume soon once,
//! say, the source address is there.)

use std::time::Duration;

use super::config::HealthCheck;

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Up,
    /// Up, with the weight an exec check's exit code set (misc_dynamic).
    UpWithWeight(u32),
    /// Down, and why in a few words.
    Down(String),
    /// Not checked: the director could not make the check (its own fault,
    /// not the server's), and why in a few words.
    NotChecked(String),
}

/// A change of a server's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down {
        /// The last check's reason, with the number of tries when more than
        /// one: "connect timeout after 3 tries".
        reason: String,
    },
    /// Still up, with a new dynamic weight (exec checks with dynamic_weight).
    WeightChanged,
}

/// One server's health state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    retry: u32,
    rise: u32,
    up: bool,
    /// Failed checks in a row while up.
    failures: u32,
    /// Passed checks in a row while down.
    successes: u32,
    dynamic_weight: Option<u32>,
    /// The last check could not be made.
    not_checked: bool,
}

impl Tracker {
    /// A new server: down under `alpha`, else up.
    pub fn new(check: &HealthCheck) -> Self {
        Self::resume(check, !check.alpha, None)
    }

    /// Goes on from a known state, e.g. when a reload changed the check.
    pub fn resume(check: &HealthCheck, up: bool, dynamic_weight: Option<u32>) -> Self {
        Self {
            retry: check.retry.max(1),
            rise: check.rise.max(1),
            up,
            failures: 0,
            successes: 0,
            dynamic_weight,
            not_checked: false,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The weight an exec check last set; `None` = the configured weight.
    /// keepalived keeps it across exit 0 and while the server is down.
    pub fn dynamic_weight(&self) -> Option<u32> {
        self.dynamic_weight
    }

    /// Takes one check's result; returns the transition it causes, if any.
    pub fn record(&mut self, result: &CheckResult) -> Option<Transition> {
        self.not_checked = matches!(result, CheckResult::NotChecked(_));
        if self.not_checked {
            return None;
        }
        let reweighted = match result {
            CheckResult::UpWithWeight(w) if self.dynamic_weight != Some(*w) => {
                self.dynamic_weight = Some(*w);
                true
            }
            _ => false,
        };
        match (self.up, result) {
            (true, CheckResult::Down(reason)) => {
                self.failures += 1;
                if self.failures < self.retry {
                    return None;
                }
                let tries = std::mem::take(&mut self.failures);
                self.up = false;
                self.successes = 0;
                let reason = if tries > 1 { format!("{reason} after {tries} tries") } else { reason.clone() };
                Some(Transition::Down { reason })
            }
            (true, _) => {
                self.failures = 0;
                reweighted.then_some(Transition::WeightChanged)
            }
            (false, CheckResult::Down(_)) => {
                self.successes = 0;
                None
            }
            (false, _) => {
                self.successes += 1;
                if self.successes < self.rise {
                    return None;
                }
                self.successes = 0;
                self.failures = 0;
                self.up = true;
                Some(Transition::Up)
            }
        }
    }

    /// Time until the next check: sooner while a change is under way, or
    /// after a check that could not be made.
    pub fn next_delay(&self, check: &HealthCheck) -> Duration {
        if self.failures > 0 || self.successes > 0 || self.not_checked {
            check.delay_before_retry
        } else {
            check.interval
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::config::CheckKind;

    fn check(retry: u32, rise: u32, alpha: bool) -> HealthCheck {
        HealthCheck {
            retry,
            rise,
            alpha,
            interval: Duration::from_secs(10),
            delay_before_retry: Duration::from_secs(1),
            ..HealthCheck::defaults(CheckKind::Tcp)
        }
    }

    fn down(reason: &str) -> CheckResult {
        CheckResult::Down(reason.into())
    }

    /// The transitions a sequence of results ("u" up, "d" down, "x" not
    /// checked) causes, one letter per result: "-" none, "U" up, "D" down.
    fn run(c: &HealthCheck, results: &str) -> String {
        let mut t = Tracker::new(c);
        results
            .chars()
            .map(|r| {
                let result = match r {
                    'u' => CheckResult::Up,
                    'x' => CheckResult::NotChecked("cannot bind to 10.0.0.5: address not available".into()),
                    _ => down("connect timeout"),
                };
                match t.record(&result) {
                    None => '-',
                    Some(Transition::Up) => 'U',
                    Some(Transition::Down { .. }) => 'D',
                    Some(Transition::WeightChanged) => 'W',
                }
            })
            .collect()
    }

    #[test]
    fn retry_counts_failures_in_a_row() {
        assert_eq!(run(&check(1, 1, false), "uduu"), "-DU-");
        assert_eq!(run(&check(3, 1, false), "ddudddd"), "-----D-");
        assert_eq!(run(&check(3, 1, false), "dddu"), "--DU");
    }

    #[test]
    fn rise_counts_successes_in_a_row() {
        assert_eq!(run(&check(1, 3, false), "duuduuuu"), "D-----U-");
        assert_eq!(run(&check(2, 2, false), "dduudduu"), "-D-U-D-U");
    }

    #[test]
    fn alpha_starts_down() {
        let c = check(3, 1, true);
        assert!(!Tracker::new(&c).is_up());
        assert_eq!(run(&c, "ddu"), "--U");
        assert_eq!(run(&check(3, 2, true), "uu"), "-U");
        assert!(Tracker::new(&check(3, 1, false)).is_up());
    }

    #[test]
    fn the_down_reason_counts_the_tries() {
        let mut t = Tracker::new(&check(3, 1, false));
        t.record(&down("connection refused"));
        t.record(&down("connect timeout"));
        assert_eq!(
            t.record(&down("connect timeout")),
            Some(Transition::Down { reason: "connect timeout after 3 tries".into() })
        );
        let mut t = Tracker::new(&check(1, 1, false));
        assert_eq!(
            t.record(&down("connection refused")),
            Some(Transition::Down { reason: "connection refused".into() })
        );
    }

    #[test]
    fn retries_and_rises_come_sooner() {
        let c = check(3, 2, false);
        let mut t = Tracker::new(&c);
        assert_eq!(t.next_delay(&c), Duration::from_secs(10));
        t.record(&down("x"));
        assert_eq!(t.next_delay(&c), Duration::from_secs(1));
        t.record(&CheckResult::Up);
        assert_eq!(t.next_delay(&c), Duration::from_secs(10));
        t.record(&down("x"));
        t.record(&down("x"));
        t.record(&down("x"));
        assert!(!t.is_up());
        assert_eq!(t.next_delay(&c), Duration::from_secs(10), "a down server is checked at the interval");
        t.record(&CheckResult::Up);
        assert_eq!(t.next_delay(&c), Duration::from_secs(1), "on its way back up");
        assert_eq!(t.record(&CheckResult::Up), Some(Transition::Up));
        assert_eq!(t.next_delay(&c), Duration::from_secs(10));
    }

    #[test]
    fn dynamic_weights() {
        let c = check(1, 1, false);
        let mut t = Tracker::new(&c);
        assert_eq!(t.dynamic_weight(), None);
        assert_eq!(t.record(&CheckResult::UpWithWeight(5)), Some(Transition::WeightChanged));
        assert_eq!(t.record(&CheckResult::UpWithWeight(5)), None);
        assert_eq!(t.record(&CheckResult::Up), None, "exit 0 leaves the weight as it was");
        assert_eq!(t.dynamic_weight(), Some(5));
        assert_eq!(
            t.record(&down("command exited with 1")),
            Some(Transition::Down { reason: "command exited with 1".into() })
        );
        assert_eq!(
            t.record(&CheckResult::UpWithWeight(8)),
            Some(Transition::Up),
            "the weight comes back with the server"
        );
        assert_eq!(t.dynamic_weight(), Some(8));
    }

    #[test]
    fn checks_not_made_change_nothing() {
        // Up servers stay up, down ones down, however long it lasts...
        assert_eq!(run(&check(1, 1, false), "xxxxxxxx"), "--------");
        assert_eq!(run(&check(1, 1, true), "xxxxxxxxu"), "--------U");
        // ...and the counts under way go on where they were.
        assert_eq!(run(&check(3, 1, false), "ddxxxxd"), "------D");
        assert_eq!(run(&check(2, 3, false), "ddxuxuxxu"), "-D------U");
        let c = check(3, 1, false);
        let mut t = Tracker::new(&c);
        t.record(&CheckResult::NotChecked("cannot create a socket: too many open files".into()));
        assert_eq!(t.next_delay(&c), Duration::from_secs(1), "tried again soon");
        t.record(&CheckResult::Up);
        assert_eq!(t.next_delay(&c), Duration::from_secs(10));
    }

    #[test]
    fn resume_keeps_the_state() {
        let c = check(2, 1, true);
        let t = Tracker::resume(&c, true, Some(3));
        assert!(t.is_up());
        assert_eq!(t.dynamic_weight(), Some(3));
    }
}
