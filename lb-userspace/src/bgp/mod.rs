//! Route health injection for active-active directors behind ECMP: lbd
//! does not speak BGP; it tells a BGP daemon the operator runs which VIPs
//! to announce. A VIP is announced while its services hold their quorum
//! (and the datapath is attached: announcing starts after the attach, and
//! a stop withdraws before detaching), withdrawn when quorum is lost; the
//! daemon's hold timer (or BFD) withdraws them when the host dies.
//!
//! * [`config`]: the `[bgp]` table.
//! * [`plan`]: what to announce and the steps to get there (pure).
//! * [`gobgp`]: the speaker adapter for GoBGP. Another daemon is another
//!   [`Speaker`] variant with the same three calls.
//!
//! The speaker's calls run in a task of their own ([`Bgp`]): a slow or
//! absent daemon never holds up the main loop (health checks, VRRP,
//! lbctl); the main loop only hands it the services' state.

pub mod config;
mod gobgp;
pub mod plan;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::sync::{oneshot, watch};
use tracing::{error, info, warn};

pub use config::{BgpConfig, RawBgp};
use plan::Step;
pub use plan::{Prefix, ServiceState};

use crate::log_limit::{DEFAULT_PERIOD, LogLimiter};

/// A BGP daemon lbd drives.
pub enum Speaker {
    GoBgp(gobgp::GoBgp),
}

impl Speaker {
    pub fn new(config: &BgpConfig) -> Self {
        match config.speaker {
            config::SpeakerKind::GoBgp => Speaker::GoBgp(gobgp::GoBgp::new(config)),
        }
    }

    async fn announce(&self, prefix: Prefix) -> Result<()> {
        match self {
            Speaker::GoBgp(g) => g.announce(prefix).await,
        }
    }

    async fn withdraw(&self, prefix: Prefix) -> Result<()> {
        match self {
            Speaker::GoBgp(g) => g.withdraw(prefix).await,
        }
    }

    /// The routes the daemon originates now.
    async fn announced(&self) -> Result<BTreeSet<Prefix>> {
        match self {
            Speaker::GoBgp(g) => g.announced().await,
        }
    }
}

/// Route health injection, running beside the main loop.
pub struct Bgp {
    states: watch::Sender<Vec<ServiceState>>,
    stop: oneshot::Sender<oneshot::Sender<bool>>,
    drain_time: Duration,
}

/// How long a stop may spend withdrawing (each call has its own limit,
/// [`gobgp`]'s 3 s).
const WITHDRAW_DEADLINE: Duration = Duration::from_secs(20);

impl Bgp {
    /// Starts announcing what `states` call for (call once the datapath is
    /// attached): the daemon's routes are read, lbd's (re)announced with
    /// this config's attributes, then checked every `check_interval`.
    pub fn start(config: BgpConfig, states: Vec<ServiceState>) -> Self {
        let drain_time = config.drain_time;
        let (states_tx, states_rx) = watch::channel(states);
        let (stop, stop_rx) = oneshot::channel();
        tokio::spawn(run(Announcer::new(config), states_rx, stop_rx));
        Bgp { states: states_tx, stop, drain_time }
    }

    /// The services' state now; the task tells the daemon the difference.
    pub fn update(&self, states: Vec<ServiceState>) {
        self.states.send_if_modified(|s| {
            let changed = *s != states;
            *s = states;
            changed
        });
    }

    /// A stop: withdraws every VIP and, if that worked, waits the drain
    /// time, the datapath still forwarding what the routers send meanwhile.
    /// False if a route may still be out (the daemon did not take the
    /// withdrawal in time): then the datapath must stay.
    pub async fn withdraw_all(self) -> bool {
        let (reply, done) = oneshot::channel();
        if self.stop.send(reply).is_err() {
            return false;
        }
        let withdrawn = matches!(tokio::time::timeout(WITHDRAW_DEADLINE, done).await, Ok(Ok(true)));
        if withdrawn {
            info!("BGP: routes withdrawn; forwarding on for the drain time ({:?})", self.drain_time);
            tokio::time::sleep(self.drain_time).await;
        }
        withdrawn
    }
}

/// The task: follows the states, checks the daemon every interval, and
/// withdraws everything when asked to stop.
async fn run(
    mut announcer: Announcer,
    mut states: watch::Receiver<Vec<ServiceState>>,
    mut stop: oneshot::Receiver<oneshot::Sender<bool>>,
) {
    let first = states.borrow_and_update().clone();
    announcer.check(&first, true).await;
    let mut tick = tokio::time::interval(announcer.config.check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.reset();
    loop {
        tokio::select! {
            biased;
            reply = &mut stop => {
                let withdrawn = announcer.withdraw_all().await;
                if let Ok(reply) = reply {
                    let _ = reply.send(withdrawn);
                }
                return;
            }
            changed = states.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = states.borrow_and_update().clone();
                announcer.update(&now).await;
            }
            _ = tick.tick() => {
                let now = states.borrow().clone();
                announcer.check(&now, false).await;
            }
        }
    }
}

/// What lbd has told its speaker, and what it wants told.
struct Announcer {
    speaker: Speaker,
    config: BgpConfig,
    /// What the daemon holds of our VIPs, as far as we know: updated by
    /// each step that succeeded and by each check.
    announced: BTreeSet<Prefix>,
    wanted: BTreeSet<Prefix>,
    failures: LogLimiter<()>,
}

impl Announcer {
    fn new(config: BgpConfig) -> Self {
        Announcer {
            speaker: Speaker::new(&config),
            config,
            announced: BTreeSet::new(),
            wanted: BTreeSet::new(),
            failures: LogLimiter::new(DEFAULT_PERIOD),
        }
    }

    /// Takes the services' state now and tells the daemon the difference.
    async fn update(&mut self, services: &[ServiceState]) {
        self.wanted = plan::wanted(&self.config.vips, services);
        self.apply().await;
    }

    /// Reads what the daemon holds (a restarted daemon holds nothing; an
    /// lbd before this one may have left routes), then corrects it. lbd's
    /// own are the prefixes `vips` names, or without it every service's
    /// (VIPs' host routes, marks' networks): only those does it withdraw. The `first` check announces every
    /// wanted VIP again, so that routes an lbd before this one left carry
    /// this config's attributes.
    async fn check(&mut self, services: &[ServiceState], first: bool) {
        match self.speaker.announced().await {
            Ok(held) => {
                let chosen = &self.config.vips;
                let ours = |v: &Prefix| {
                    if chosen.is_empty() { services.iter().any(|s| s.prefix == *v) } else { chosen.contains(v) }
                };
                self.announced = held.into_iter().filter(ours).collect();
                if first {
                    let wanted = plan::wanted(&self.config.vips, services);
                    self.announced.retain(|v| !wanted.contains(v));
                }
            }
            Err(e) => self.failed(&format!("reading the announced routes: {e:#}")),
        }
        self.update(services).await;
    }

    /// Withdraws every VIP lbd announced; true if none is left out.
    async fn withdraw_all(&mut self) -> bool {
        self.wanted.clear();
        for step in plan::steps(&self.announced, &self.wanted) {
            let Step::Withdraw(prefix) = step else { continue };
            match self.speaker.withdraw(prefix).await {
                Ok(()) => {
                    info!("BGP: withdrew {prefix}");
                    self.announced.remove(&prefix);
                }
                Err(e) => error!("BGP: withdrawing {prefix} on the way out: {e:#}"),
            }
        }
        self.announced.is_empty()
    }

    async fn apply(&mut self) {
        for step in plan::steps(&self.announced, &self.wanted) {
            let result = match step {
                Step::Announce(prefix) => self.speaker.announce(prefix).await,
                Step::Withdraw(prefix) => self.speaker.withdraw(prefix).await,
            };
            match (step, result) {
                (Step::Announce(prefix), Ok(())) => {
                    info!("BGP: announcing {prefix}");
                    self.announced.insert(prefix);
                }
                (Step::Withdraw(prefix), Ok(())) => {
                    info!("BGP: withdrew {prefix}");
                    self.announced.remove(&prefix);
                }
                (Step::Announce(prefix), Err(e)) => self.failed(&format!("announcing {prefix}: {e:#}")),
                (Step::Withdraw(prefix), Err(e)) => self.failed(&format!("withdrawing {prefix}: {e:#}")),
            }
        }
    }

    fn failed(&mut self, what: &str) {
        if let Some(line) =
            self.failures.event((), Instant::now(), || format!("BGP: {what}; trying again at the next check"))
        {
            warn!("{line}");
        }
    }
}
