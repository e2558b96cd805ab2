//! One real server's checking task: a check every interval, its result
//! through the server's [`Tracker`], and for each transition a log line, a
//! notify command and an event to the controller.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::mpsc;

use super::{
    config::HealthCheck,
    monitor::{HealthEvent, RealStatus, ServiceKey},
    notify,
    probe::check_once,
    tracker::{CheckResult, Tracker, Transition},
};

/// Between a server's task and the monitor.
pub(super) struct Shared {
    pub(super) status: RealStatus,
    /// Set when the task is dropped: from then on it changes nothing and
    /// sends nothing (an abort takes effect only at its next await), so a
    /// replacement can resume from a status no late result overwrites.
    pub(super) stopped: bool,
}

/// One real server's checking task.
pub(super) struct Watch {
    pub(super) service: ServiceKey,
    pub(super) real: SocketAddr,
    pub(super) check: HealthCheck,
    pub(super) tracker: Tracker,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) events: mpsc::Sender<HealthEvent>,
    pub(super) notify_timeout: Duration,
}

impl Watch {
    pub(super) async fn run(mut self, first_delay: Duration) {
        tokio::time::sleep(first_delay).await;
        loop {
            let result = check_once(&self.check, self.real).await;
            let transition = self.tracker.record(&result);
            {
                let mut shared = self.shared.lock().unwrap();
                if shared.stopped {
                    return;
                }
                shared.status = RealStatus {
                    up: self.tracker.is_up(),
                    dynamic_weight: self.tracker.dynamic_weight(),
                    last_failure: match result {
                        CheckResult::Down(reason) => Some(reason),
                        _ => None,
                    },
                };
            }
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

/// What a notify_up/notify_down command is told, in its environment.
fn notify_env(
    service: &ServiceKey,
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
