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

pub mod config;
mod gobgp;
pub mod plan;

use std::{collections::BTreeSet, net::Ipv4Addr, time::Instant};

use anyhow::Result;
use tracing::{info, warn};

pub use config::{BgpConfig, RawBgp};
pub use plan::ServiceState;
use plan::Step;

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

    async fn announce(&self, vip: Ipv4Addr) -> Result<()> {
        match self {
            Speaker::GoBgp(g) => g.announce(vip).await,
        }
    }

    async fn withdraw(&self, vip: Ipv4Addr) -> Result<()> {
        match self {
            Speaker::GoBgp(g) => g.withdraw(vip).await,
        }
    }

    /// The host routes the daemon originates now.
    async fn announced(&self) -> Result<BTreeSet<Ipv4Addr>> {
        match self {
            Speaker::GoBgp(g) => g.announced().await,
        }
    }
}

/// What lbd has told its speaker, and what it wants told.
pub struct Announcer {
    speaker: Speaker,
    config: BgpConfig,
    /// What the daemon holds of our VIPs, as far as we know: updated by
    /// each step that succeeded and by each check.
    announced: BTreeSet<Ipv4Addr>,
    wanted: BTreeSet<Ipv4Addr>,
    failures: LogLimiter<()>,
}

impl Announcer {
    pub fn new(config: BgpConfig) -> Self {
        Announcer {
            speaker: Speaker::new(&config),
            config,
            announced: BTreeSet::new(),
            wanted: BTreeSet::new(),
            failures: LogLimiter::new(DEFAULT_PERIOD),
        }
    }

    pub fn config(&self) -> &BgpConfig {
        &self.config
    }

    /// The VIPs announced (as far as lbd knows).
    pub fn announced(&self) -> &BTreeSet<Ipv4Addr> {
        &self.announced
    }

    /// Takes the services' state now and tells the daemon the difference.
    pub async fn update(&mut self, services: &[ServiceState]) {
        self.wanted = plan::wanted(&self.config.vips, services);
        self.apply().await;
    }

    /// Reads what the daemon holds (a restarted daemon holds nothing; an
    /// lbd before this one may have left routes), then corrects it. Of the
    /// routes the daemon originates, only the VIPs of this config are
    /// lbd's to withdraw.
    pub async fn check(&mut self, services: &[ServiceState]) {
        match self.speaker.announced().await {
            Ok(held) => {
                let ours = |v: &Ipv4Addr| {
                    services.iter().any(|s| s.vip == *v) || self.config.vips.contains(v)
                };
                self.announced = held.into_iter().filter(ours).collect();
            }
            Err(e) => self.failed(&format!("reading the announced routes: {e:#}")),
        }
        self.update(services).await;
    }

    /// Withdraws every VIP (a stop), then waits the drain time, the
    /// datapath still forwarding what the routers send meanwhile.
    pub async fn withdraw_all(&mut self) {
        self.wanted.clear();
        let had = !self.announced.is_empty();
        self.apply().await;
        if had {
            info!(
                "BGP: routes withdrawn; forwarding on for the drain time ({:?})",
                self.config.drain_time
            );
            tokio::time::sleep(self.config.drain_time).await;
        }
    }

    async fn apply(&mut self) {
        for step in plan::steps(&self.announced, &self.wanted) {
            let result = match step {
                Step::Announce(vip) => self.speaker.announce(vip).await,
                Step::Withdraw(vip) => self.speaker.withdraw(vip).await,
            };
            match (step, result) {
                (Step::Announce(vip), Ok(())) => {
                    info!("BGP: announcing {vip}/32");
                    self.announced.insert(vip);
                }
                (Step::Withdraw(vip), Ok(())) => {
                    info!("BGP: withdrew {vip}/32");
                    self.announced.remove(&vip);
                }
                (Step::Announce(vip), Err(e)) => {
                    self.failed(&format!("announcing {vip}/32: {e:#}"))
                }
                (Step::Withdraw(vip), Err(e)) => {
                    self.failed(&format!("withdrawing {vip}/32: {e:#}"))
                }
            }
        }
    }

    fn failed(&mut self, what: &str) {
        if let Some(line) = self.failures.event((), Instant::now(), || {
            format!("BGP: {what}; trying again at the next check")
        }) {
            warn!("{line}");
        }
    }
}
