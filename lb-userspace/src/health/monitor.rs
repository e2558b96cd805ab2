//! The running checks: one tokio task per monitored real server (see
//! [`super::watch`]), started, restarted on a changed check and stopped as
//! the configuration says, their transitions sent to the controller on a
//! channel.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    config::HealthCheck,
    notify::DEFAULT_NOTIFY_TIMEOUT,
    probe::random_u64,
    tracker::{Tracker, Transition},
    watch::{CheckFn, Shared, Watch, check_for_real, lock},
};
use crate::{
    log_limit::{self, LogLimiter},
    model::ServiceId,
};

/// The log of checks the director could not make, shared by the tasks
/// (see [`super::watch`]), keyed by reason.
pub(super) type NotCheckedLog = Arc<Mutex<LogLimiter<String>>>;

/// The most a server's first check is put off, spread at random so that a
/// start or reload does not check everything at once (keepalived's
/// `warmup`, which defaults to all of `delay_loop`; shorter here so that
/// `alpha` servers come up soon).
pub const DEFAULT_STARTUP_SPREAD: Duration = Duration::from_secs(1);

/// A real server of a service to monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitoredReal {
    pub service: ServiceId,
    /// The real server's address and port (the check may use another port).
    pub real: SocketAddr,
    pub check: HealthCheck,
}

/// A transition of one real server, as sent to the controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthEvent {
    pub service: ServiceId,
    pub real: SocketAddr,
    pub transition: Transition,
    /// The weight an exec check set; `None` = the configured weight.
    pub dynamic_weight: Option<u32>,
}

/// What the monitor knows of a real server now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealStatus {
    pub up: bool,
    pub dynamic_weight: Option<u32>,
    /// Why the last check failed; `None` when it passed or none ran yet.
    pub last_failure: Option<String>,
}

/// When a server's state last changed (or its monitoring began) and how
/// long its last check took: for the metrics, apart from [`RealStatus`],
/// whose changes the controller acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckTiming {
    pub changed_at: SystemTime,
    /// `None` until a check ran, and for `kind = "none"`.
    pub last_duration: Option<Duration>,
}

impl CheckTiming {
    fn starting_now() -> Self {
        Self { changed_at: SystemTime::now(), last_duration: None }
    }
}

/// A monitored server as the metrics show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub service: ServiceId,
    pub real: SocketAddr,
    pub up: bool,
    pub timing: CheckTiming,
}

/// What an [`HealthMonitor::update`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorChanges {
    pub added: usize,
    pub removed: usize,
    /// Kept, with a changed check (restarted, keeping its up/down state).
    pub replaced: usize,
}

/// The running checks. Dropping it stops them.
pub struct HealthMonitor {
    events: mpsc::Sender<HealthEvent>,
    notify_timeout: Duration,
    startup_spread: Duration,
    check_fn: CheckFn,
    reals: HashMap<(ServiceId, SocketAddr), Monitored>,
    not_checked_log: NotCheckedLog,
}

struct Monitored {
    check: HealthCheck,
    shared: Arc<Mutex<Shared>>,
    /// `None` for `kind = "none"`: nothing to run.
    task: Option<JoinHandle<()>>,
}

impl Monitored {
    /// Stops the task; returns the last status it reported and its timing.
    fn stop(&mut self) -> (RealStatus, CheckTiming) {
        let mut shared = lock(&self.shared);
        shared.stopped = true;
        if let Some(task) = &self.task {
            task.abort();
        }
        (shared.status.clone(), shared.timing)
    }
}

impl Drop for Monitored {
    fn drop(&mut self) {
        self.stop();
    }
}

impl HealthMonitor {
    /// Transitions go to `events`. A task whose send finds the receiver
    /// gone stops.
    pub fn new(events: mpsc::Sender<HealthEvent>) -> Self {
        Self {
            events,
            notify_timeout: DEFAULT_NOTIFY_TIMEOUT,
            startup_spread: DEFAULT_STARTUP_SPREAD,
            check_fn: check_for_real,
            reals: HashMap::new(),
            not_checked_log: Arc::new(Mutex::new(LogLimiter::new(log_limit::DEFAULT_PERIOD))),
        }
    }

    /// How long a notify command may run before it is killed.
    pub fn with_notify_timeout(mut self, limit: Duration) -> Self {
        self.notify_timeout = limit;
        self
    }

    /// The most a first check is put off (0 = check at once).
    pub fn with_startup_spread(mut self, spread: Duration) -> Self {
        self.startup_spread = spread;
        self
    }

    /// Checks servers with `check_fn` instead of the real checks.
    #[cfg(test)]
    fn with_check_fn(mut self, check_fn: CheckFn) -> Self {
        self.check_fn = check_fn;
        self
    }

    /// Monitors exactly `wanted` from now on: new servers start (down under
    /// `alpha`, else up), gone ones stop, ones whose check changed restart
    /// keeping their state, the rest carry on untouched. Must be called
    /// within a tokio runtime.
    ///
    /// A state that changes here is not sent as an event (e.g. a new alpha
    /// server is down, a server switched to `kind = "none"` is up): read
    /// [`Self::status`] after an update.
    pub fn update(&mut self, wanted: impl IntoIterator<Item = MonitoredReal>) -> MonitorChanges {
        let mut changes = MonitorChanges::default();
        let mut next = HashMap::new();
        for MonitoredReal { service, real, check } in wanted {
            let key = (service, real);
            let monitored = match self.reals.remove(&key) {
                Some(same) if same.check == check => same,
                Some(mut changed) => {
                    changes.replaced += 1;
                    let before = changed.stop();
                    self.start(service, real, check, Some(before))
                }
                None => {
                    changes.added += 1;
                    self.start(service, real, check, None)
                }
            };
            next.insert(key, monitored);
        }
        changes.removed = self.reals.len();
        self.reals = next;
        changes
    }

    /// What is known of `real` in `service`, if monitored.
    pub fn status(&self, service: &ServiceId, real: SocketAddr) -> Option<RealStatus> {
        self.reals.get(&(*service, real)).map(|m| lock(&m.shared).status.clone())
    }

    /// Every monitored server's state and timing, for the metrics.
    pub fn observed(&self) -> Vec<Observed> {
        self.reals
            .iter()
            .map(|(&(service, real), m)| {
                let shared = lock(&m.shared);
                Observed { service, real, up: shared.status.up, timing: shared.timing }
            })
            .collect()
    }

    /// How many real servers are monitored (`kind = "none"` included).
    pub fn len(&self) -> usize {
        self.reals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reals.is_empty()
    }

    /// Stops every check and waits until their tasks are gone (an exec
    /// check's command is killed). Notify commands already started run on.
    pub async fn shutdown(&mut self) {
        let tasks: Vec<_> = self
            .reals
            .drain()
            .filter_map(|(_, mut m)| {
                m.stop();
                m.task.take()
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    fn start(
        &self,
        service: ServiceId,
        real: SocketAddr,
        check: HealthCheck,
        before: Option<(RealStatus, CheckTiming)>,
    ) -> Monitored {
        let (before, timing) = match before {
            Some((status, timing)) => (Some(status), timing),
            None => (None, CheckTiming::starting_now()),
        };
        if !check.is_active() {
            let status = RealStatus { up: true, dynamic_weight: None, last_failure: None };
            let timing = CheckTiming { last_duration: None, ..timing };
            let shared = Arc::new(Mutex::new(Shared { status, timing, stopped: false }));
            return Monitored { check, shared, task: None };
        }
        let tracker = match &before {
            Some(b) => Tracker::resume(&check, b.up, b.dynamic_weight),
            None => Tracker::new(&check),
        };
        let status = RealStatus {
            up: tracker.is_up(),
            dynamic_weight: tracker.dynamic_weight(),
            last_failure: before.and_then(|b| b.last_failure),
        };
        let shared = Arc::new(Mutex::new(Shared { status, timing, stopped: false }));
        let spread = self.startup_spread.min(check.interval);
        let first_delay =
            if spread.is_zero() { Duration::ZERO } else { spread.mul_f64((random_u64() % 1000) as f64 / 1000.0) };
        let watch = Watch {
            service,
            real,
            check: check.clone(),
            tracker,
            shared: shared.clone(),
            events: self.events.clone(),
            notify_timeout: self.notify_timeout,
            check_fn: self.check_fn,
            not_checked_log: self.not_checked_log.clone(),
        };
        let task = watch.spawn(first_delay);
        Monitored { check, shared, task: Some(task) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::future::BoxFuture;
    use tokio::{net::TcpListener, time::timeout};

    use super::*;
    use crate::{
        health::{
            config::{CheckKind, Probe},
            tracker::CheckResult,
        },
        model::Protocol,
    };

    fn service() -> ServiceId {
        ServiceId::address(Protocol::Tcp, "172.16.100.1".parse().unwrap(), 80)
    }

    fn fast_tcp() -> HealthCheck {
        HealthCheck {
            interval: Duration::from_millis(100),
            delay_before_retry: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(500),
            retry: 2,
            ..HealthCheck::defaults(CheckKind::Tcp)
        }
    }

    async fn next_event(rx: &mut mpsc::Receiver<HealthEvent>) -> HealthEvent {
        timeout(Duration::from_secs(3), rx.recv()).await.expect("no event within 3 s").unwrap()
    }

    #[tokio::test]
    async fn transitions_are_sent_logged_and_notified() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real = listener.local_addr().unwrap();
        let marker = std::env::temp_dir().join(format!("lb-health-notify-{}-{}", std::process::id(), real.port()));
        let _ = std::fs::remove_file(&marker);
        let check = HealthCheck {
            alpha: true,
            notify_down: Some(format!(
                "echo \"$LB_EVENT $LB_SERVICE $LB_REAL_ADDRESS:$LB_REAL_PORT $LB_REASON\" > {}",
                marker.display()
            )),
            ..fast_tcp()
        };
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx).with_startup_spread(Duration::ZERO);
        let changes = monitor.update([MonitoredReal { service: service(), real, check: check.clone() }]);
        assert_eq!(changes, MonitorChanges { added: 1, ..Default::default() });
        assert!(!monitor.status(&service(), real).unwrap().up, "alpha starts down");

        let up = next_event(&mut rx).await;
        assert_eq!(up, HealthEvent { service: service(), real, transition: Transition::Up, dynamic_weight: None });
        assert!(monitor.status(&service(), real).unwrap().up);

        drop(listener);
        let down = next_event(&mut rx).await;
        assert_eq!(down.transition, Transition::Down { reason: "connection refused after 2 tries".into() });
        assert!(!monitor.status(&service(), real).unwrap().up);

        let mut written = String::new();
        for _ in 0..50 {
            written = std::fs::read_to_string(&marker).unwrap_or_default();
            if !written.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(written.trim(), format!("down tcp 172.16.100.1:80 {real} connection refused after 2 tries"));
        let _ = std::fs::remove_file(&marker);

        // A changed check restarts from the state it had; an unchanged one
        // is left alone.
        let slower = HealthCheck { interval: Duration::from_millis(150), ..check.clone() };
        let wanted = || MonitoredReal { service: service(), real, check: slower.clone() };
        assert_eq!(monitor.update([wanted()]), MonitorChanges { replaced: 1, ..Default::default() });
        assert_eq!(monitor.update([wanted()]), MonitorChanges::default());
        assert!(!monitor.status(&service(), real).unwrap().up, "still down after the reload");

        let listener = TcpListener::bind(real).await.unwrap();
        assert_eq!(next_event(&mut rx).await.transition, Transition::Up);

        // Removed: no more checks, no more events.
        assert_eq!(monitor.update([]), MonitorChanges { removed: 1, ..Default::default() });
        assert!(monitor.is_empty());
        drop(listener);
        assert!(timeout(Duration::from_millis(600), rx.recv()).await.is_err(), "a removed server sent an event");
        monitor.shutdown().await;
    }

    #[tokio::test]
    async fn checks_do_not_wait_for_each_other() {
        // One server never answers within its (long) timeout; the other,
        // checked alongside, still comes up at once.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let mut held = Vec::new();
        tokio::spawn(async move {
            loop {
                held.push(silent.accept().await.unwrap());
            }
        });
        let ok = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ok_addr = ok.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = ok.accept().await.unwrap();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await;
                });
            }
        });
        let http = HealthCheck {
            alpha: true,
            interval: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(10),
            ..HealthCheck::defaults(CheckKind::Http)
        };
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx).with_startup_spread(Duration::ZERO);
        monitor.update([
            MonitoredReal { service: service(), real: silent_addr, check: http.clone() },
            MonitoredReal { service: service(), real: ok_addr, check: http },
        ]);
        let event = next_event(&mut rx).await;
        assert_eq!((event.real, event.transition), (ok_addr, Transition::Up));
        monitor.shutdown().await;
    }

    #[tokio::test]
    async fn exec_weights_and_none() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx).with_startup_spread(Duration::ZERO);
        let real: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let exec = HealthCheck {
            probe: crate::health::config::Probe::Exec(crate::health::config::ExecProbe {
                command: "exit 7".into(),
                dynamic_weight: true,
            }),
            interval: Duration::from_millis(100),
            ..HealthCheck::defaults(CheckKind::Exec)
        };
        let other = ServiceId { port: 443, ..service() };
        monitor.update([
            MonitoredReal { service: service(), real, check: exec },
            MonitoredReal { service: other, real, check: HealthCheck::default() },
        ]);
        let event = next_event(&mut rx).await;
        assert_eq!((event.transition, event.dynamic_weight), (Transition::WeightChanged, Some(5)));
        assert_eq!(monitor.status(&service(), real).unwrap().dynamic_weight, Some(5));
        assert_eq!(
            monitor.status(&other, real).unwrap(),
            RealStatus { up: true, dynamic_weight: None, last_failure: None }
        );
        assert_eq!(monitor.len(), 2);
        monitor.shutdown().await;
        assert!(monitor.is_empty());
    }

    #[tokio::test]
    async fn a_check_task_that_panics_is_restarted() {
        // A check that panics on its first run, as a bug would, then finds
        // the server up.
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        fn panics_once(_: &HealthCheck, _: SocketAddr) -> BoxFuture<'_, CheckResult> {
            Box::pin(async {
                if RUNS.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("a bug in a check");
                }
                CheckResult::Up
            })
        }
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx).with_startup_spread(Duration::ZERO).with_check_fn(panics_once);
        let real: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let check = HealthCheck { alpha: true, ..fast_tcp() };
        monitor.update([MonitoredReal { service: service(), real, check }]);
        assert_eq!(next_event(&mut rx).await.transition, Transition::Up, "checked again after the panic");
        assert!(RUNS.load(Ordering::SeqCst) >= 2);
        assert!(monitor.status(&service(), real).unwrap().up);
        monitor.shutdown().await;
    }

    #[tokio::test]
    async fn a_hostile_chunk_size_takes_the_server_down_and_the_checks_go_on() {
        // The first two answers declare a chunk of u64::MAX bytes, which
        // once panicked the task and left the server up for good.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const HOSTILE: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc";
        const GOOD: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n0\r\n\r\n";
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answered in 0.. {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(if answered < 2 { HOSTILE } else { GOOD }).await;
            }
        });
        let mut check = HealthCheck { connect_timeout: Duration::from_millis(500), ..fast_tcp() };
        check.probe = HealthCheck::defaults(CheckKind::Http).probe;
        let Probe::Http(probe) = &mut check.probe else { unreachable!() };
        probe.body_contains = Some("OK".into());
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx).with_startup_spread(Duration::ZERO);
        monitor.update([MonitoredReal { service: service(), real, check }]);
        let down = next_event(&mut rx).await.transition;
        assert_eq!(down, Transition::Down { reason: "response body larger than 1 MiB after 2 tries".into() });
        assert_eq!(next_event(&mut rx).await.transition, Transition::Up);
        monitor.shutdown().await;
    }

    #[tokio::test]
    async fn a_source_address_not_on_the_host_takes_no_server_out() {
        // The real checks, from an address this host does not have: up
        // servers stay up, an alpha one stays down, nothing is sent.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real = listener.local_addr().unwrap();
        let check = HealthCheck { source_address: Some("192.0.2.1".parse().unwrap()), ..fast_tcp() };
        let other = ServiceId { port: 81, ..service() };
        let (tx, mut rx) = mpsc::channel(16);
        let mut monitor = HealthMonitor::new(tx).with_startup_spread(Duration::ZERO);
        monitor.update([
            MonitoredReal { service: service(), real, check: check.clone() },
            MonitoredReal { service: other, real, check: HealthCheck { alpha: true, ..check.clone() } },
        ]);
        assert!(timeout(Duration::from_millis(800), rx.recv()).await.is_err(), "no transition");
        assert!(monitor.status(&service(), real).unwrap().up);
        assert!(!monitor.status(&other, real).unwrap().up);
        // The address is there now (the same check from one it has): the
        // checks go on as usual.
        let check = HealthCheck { source_address: Some("127.0.0.1".parse().unwrap()), ..check };
        monitor.update([
            MonitoredReal { service: service(), real, check: check.clone() },
            MonitoredReal { service: other, real, check: HealthCheck { alpha: true, ..check } },
        ]);
        let up = next_event(&mut rx).await;
        assert_eq!((up.service, up.transition), (other, Transition::Up));
        drop(listener);
        let down = next_event(&mut rx).await;
        assert!(matches!(down.transition, Transition::Down { .. }), "{down:?}");
        monitor.shutdown().await;
    }
}
