//! One real server's checking task: a check every interval, its result
//! through the server's [`Tracker`], and for each transition a log line, a
//! notify command and an event to the controller. A check the director
//! could not make is logged at a bounded rate (one line per reason per
//! period, for all servers together) and changes nothing.
//!
//! The task is supervised: nothing but a stop should end it, so a panic (a
//! bug, such as an overflow on what a server sent) is logged and the check
//! restarted from the state it had; otherwise the server would keep its
//! last state for good, with nobody told.

use std::{
    any::Any,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use futures_util::{FutureExt as _, future::BoxFuture};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    config::HealthCheck,
    monitor::{CheckTiming, HealthEvent, NotCheckedLog, RealStatus},
    notify,
    probe::check_once,
    tracker::{CheckResult, Tracker, Transition},
};
use crate::model::ServiceId;

/// How a server is checked once: [`check_once`], or a stand-in in tests.
pub(super) type CheckFn = for<'a> fn(&'a HealthCheck, SocketAddr) -> BoxFuture<'a, CheckResult>;

/// The [`CheckFn`] of lbd.
pub(super) fn check_for_real(check: &HealthCheck, real: SocketAddr) -> BoxFuture<'_, CheckResult> {
    Box::pin(check_once(check, real))
}

/// Between a server's task and the monitor.
pub(super) struct Shared {
    pub(super) status: RealStatus,
    /// For the metrics: when the state last changed, how long checks take.
    pub(super) timing: CheckTiming,
    /// Set when the task is dropped: from then on it changes nothing and
    /// sends nothing (an abort takes effect only at its next await), so a
    /// replacement can resume from a status no late result overwrites.
    pub(super) stopped: bool,
}

/// Locks `shared`, also after a panic of the task that held it: what it
/// holds is a plain value, whole at any time.
pub(super) fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One real server's checking task.
pub(super) struct Watch {
    pub(super) service: ServiceId,
    pub(super) real: SocketAddr,
    pub(super) check: HealthCheck,
    pub(super) tracker: Tracker,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) events: mpsc::Sender<HealthEvent>,
    pub(super) notify_timeout: Duration,
    pub(super) check_fn: CheckFn,
    /// Shared by every server's task.
    pub(super) not_checked_log: NotCheckedLog,
}

impl Watch {
    /// Starts the checks on a task of their own, the first after
    /// `first_delay`.
    pub(super) fn spawn(self, first_delay: Duration) -> JoinHandle<()> {
        tokio::spawn(self.supervise(first_delay))
    }

    /// Runs the checks until they end as they should (stopped, or nobody
    /// listens to their events any more). After a panic the check starts
    /// again one interval later, its tracker resumed from the last status
    /// it reported.
    async fn supervise(mut self, first_delay: Duration) {
        let mut delay = first_delay;
        loop {
            let Err(panic) = AssertUnwindSafe(self.run(delay)).catch_unwind().await else { return };
            tracing::error!(
                service = %self.service,
                "the check of {} failed unexpectedly ({}); restarting it",
                self.real,
                panic_message(panic.as_ref())
            );
            let before = lock(&self.shared).status.clone();
            self.tracker = Tracker::resume(&self.check, before.up, before.dynamic_weight);
            delay = self.check.interval;
        }
    }

    async fn run(&mut self, first_delay: Duration) {
        tokio::time::sleep(first_delay).await;
        loop {
            let started = std::time::Instant::now();
            let result = (self.check_fn)(&self.check, self.real).await;
            let took = started.elapsed();
            let transition = self.tracker.record(&result);
            {
                let mut shared = lock(&self.shared);
                if shared.stopped {
                    return;
                }
                let last_failure = match &result {
                    CheckResult::Down(reason) => Some(reason.clone()),
                    CheckResult::NotChecked(_) => shared.status.last_failure.take(),
                    _ => None,
                };
                shared.status = RealStatus {
                    up: self.tracker.is_up(),
                    dynamic_weight: self.tracker.dynamic_weight(),
                    last_failure,
                };
                // A check the director could not make took no time of the server's.
                if !matches!(result, CheckResult::NotChecked(_)) {
                    shared.timing.last_duration = Some(took);
                }
                if matches!(transition, Some(Transition::Up | Transition::Down { .. })) {
                    shared.timing.changed_at = std::time::SystemTime::now();
                }
            }
            self.log_not_checked(&result);
            if let Some(transition) = transition {
                self.announce(&transition);
                let event = HealthEvent {
                    service: self.service,
                    real: self.real,
                    transition,
                    dynamic_weight: self.tracker.dynamic_weight(),
                };
                if self.events.send(event).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(self.tracker.next_delay(&self.check)).await;
        }
    }

    /// A check not made is logged, at most once per reason per period for
    /// all the servers (the reason names no server: one missing source
    /// address is one line, not one per server); held-back lines are
    /// counted in the next.
    fn log_not_checked(&self, result: &CheckResult) {
        let now = std::time::Instant::now();
        let mut log = self.not_checked_log.lock().unwrap_or_else(PoisonError::into_inner);
        if let CheckResult::NotChecked(reason) = result {
            let (real, up) = (self.real, self.tracker.is_up());
            let line = log.event(reason.clone(), now, || {
                format!(
                    "cannot check {real}: {reason}; that is this director's fault, not the server's: \
                     it stays {}, and checks go on",
                    if up { "up" } else { "down" }
                )
            });
            if let Some(line) = line {
                tracing::warn!(service = %self.service, "{line}");
            }
        }
        for line in log.due(now) {
            tracing::warn!("{line}");
        }
    }

    /// The transition's log line and notify command.
    fn announce(&self, transition: &Transition) {
        let (service, real) = (&self.service, self.real);
        let command = match transition {
            Transition::Down { reason } => {
                tracing::warn!(service = %service, "{real} is gone: {reason}");
                &self.check.notify_down
            }
            Transition::Up => {
                tracing::info!(service = %service, "{real} is back");
                &self.check.notify_up
            }
            Transition::WeightChanged => {
                let weight = self.tracker.dynamic_weight().map_or("its configured weight".into(), |w| w.to_string());
                tracing::info!(service = %service, "{real} weight set to {weight} by its check");
                &None
            }
        };
        if let Some(command) = command {
            notify::spawn(
                command,
                notify_env(service, real, transition, self.tracker.dynamic_weight()),
                self.notify_timeout,
            );
        }
    }
}

/// What a panic said, if it said it with a string.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text,
        (_, Some(text)) => text,
        _ => "a panic",
    }
}

/// What a notify_up/notify_down command is told, in its environment.
fn notify_env(
    service: &ServiceId,
    real: SocketAddr,
    transition: &Transition,
    weight: Option<u32>,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("LB_EVENT", if matches!(transition, Transition::Down { .. }) { "down" } else { "up" }.to_string()),
        ("LB_SERVICE", service.to_string()),
        ("LB_PROTOCOL", service.protocol.name().to_string()),
        ("LB_VIP", service.vip.to_string()),
        ("LB_VPORT", service.port.to_string()),
        ("LB_REAL_ADDRESS", real.ip().to_string()),
        ("LB_REAL_PORT", real.port().to_string()),
    ];
    if let Transition::Down { reason } = transition {
        env.push(("LB_REASON", reason.clone()));
    }
    if let Some(weight) = weight {
        env.push(("LB_WEIGHT", weight.to_string()));
    }
    env
}
