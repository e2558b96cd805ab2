//! What a service's real-server set becomes given its servers' health, and
//! whether the service holds its quorum (keepalived's ipwrapper.c).

use std::time::Duration;

use super::notify;
use crate::model::ServiceId;

/// One real server's configured weight and health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RealHealth {
    /// The configured weight.
    pub weight: u32,
    pub up: bool,
    /// The weight an exec check set, used instead while up.
    pub dynamic_weight: Option<u32>,
    pub inhibit_on_failure: bool,
}

impl RealHealth {
    /// The weight the server is listed with, or `None` when it is removed:
    /// up → its (dynamic) weight; down → weight 0 under
    /// inhibit_on_failure, else removed.
    pub fn effective_weight(&self) -> Option<u32> {
        if self.up {
            Some(self.live_weight())
        } else if self.inhibit_on_failure {
            Some(0)
        } else {
            None
        }
    }

    /// What it adds to the service's live weight (keepalived's
    /// `weigh_live_realservers`): its weight while up, else 0.
    pub fn live_weight(&self) -> u32 {
        if self.up { self.dynamic_weight.unwrap_or(self.weight) } else { 0 }
    }
}

/// A service's real-server set as its servers' health makes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EffectivePool {
    /// One per real server, in the order given: `Some(weight)` listed,
    /// `None` removed.
    pub weights: Vec<Option<u32>>,
    /// Whether the sorry server is to be listed: it has one and no real
    /// server is up.
    pub sorry_server: bool,
}

/// The service's real-server set. The sorry server stands in only while
/// every real server is down (this project's rule; keepalived swaps it in
/// whenever the quorum is lost, which is the same with its default quorum
/// of 1 and positive weights).
pub fn effective_pool(reals: &[RealHealth], has_sorry_server: bool) -> EffectivePool {
    EffectivePool {
        weights: reals.iter().map(RealHealth::effective_weight).collect(),
        sorry_server: has_sorry_server && !reals.iter().any(|r| r.up),
    }
}

/// The sum of the weights of the servers that are up.
pub fn live_weight(reals: &[RealHealth]) -> u64 {
    reals.iter().map(|r| u64::from(r.live_weight())).sum()
}

/// keepalived's `quorum` and `hysteresis`: a service whose live weight
/// falls below quorum - hysteresis (or to 0) is down; it is up again at
/// quorum + hysteresis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// At least 1.
    pub quorum: u32,
    pub hysteresis: u32,
}

impl Default for Quorum {
    /// keepalived's defaults.
    fn default() -> Self {
        Self { quorum: 1, hysteresis: 0 }
    }
}

impl Quorum {
    /// Live weight at which a service without quorum gets it back.
    pub fn up_threshold(&self) -> u64 {
        u64::from(self.quorum) + u64::from(self.hysteresis)
    }

    /// Live weight below which a service with quorum loses it.
    pub fn down_threshold(&self) -> i64 {
        i64::from(self.quorum) - i64::from(self.hysteresis)
    }

    /// The state at start: up only at the up threshold, as keepalived's
    /// `set_quorum_states`.
    pub fn initial(&self, live_weight: u64) -> QuorumState {
        QuorumState { up: live_weight >= self.up_threshold() }
    }
}

/// Whether a service holds its quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumState {
    pub up: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumChange {
    Gained,
    Lost,
}

impl QuorumState {
    /// Takes the service's live weight now; returns the change, if any.
    pub fn update(&mut self, quorum: &Quorum, live_weight: u64) -> Option<QuorumChange> {
        if !self.up && live_weight >= quorum.up_threshold() {
            self.up = true;
            Some(QuorumChange::Gained)
        } else if self.up && (live_weight == 0 || (live_weight as i64) < quorum.down_threshold()) {
            self.up = false;
            Some(QuorumChange::Lost)
        } else {
            None
        }
    }
}

impl QuorumChange {
    /// The log line for it.
    pub fn describe(self, service: &ServiceId, quorum: &Quorum, live_weight: u64) -> String {
        let (q, h) = (quorum.quorum, quorum.hysteresis);
        match self {
            Self::Gained => format!("{service} has its quorum: live weight {live_weight} >= {q}+{h}"),
            Self::Lost => format!("{service} lost its quorum: live weight {live_weight} < {q}-{h}"),
        }
    }

    /// Logs the change and starts `command` (`quorum_up` or `quorum_down`,
    /// whichever fits) in the background with the event in its environment.
    /// Must be called within a tokio runtime when there is a command.
    pub fn announce(
        self,
        service: &ServiceId,
        quorum: &Quorum,
        live_weight: u64,
        command: Option<&str>,
        limit: Duration,
    ) {
        let line = self.describe(service, quorum, live_weight);
        match self {
            Self::Gained => tracing::info!("{line}"),
            Self::Lost => tracing::warn!("{line}"),
        }
        if let Some(command) = command {
            let env = vec![
                ("LB_EVENT", if self == Self::Gained { "quorum_up" } else { "quorum_down" }.to_string()),
                ("LB_SERVICE", service.to_string()),
                ("LB_PROTOCOL", service.protocol.name().to_string()),
                ("LB_VIP", service.vip.to_string()),
                ("LB_VPORT", service.port.to_string()),
                ("LB_LIVE_WEIGHT", live_weight.to_string()),
                ("LB_QUORUM", quorum.quorum.to_string()),
            ];
            notify::spawn(command, env, limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Protocol;

    fn real(weight: u32, up: bool) -> RealHealth {
        RealHealth { weight, up, dynamic_weight: None, inhibit_on_failure: false }
    }

    #[test]
    fn down_servers_are_removed_or_inhibited() {
        let inhibited = RealHealth { inhibit_on_failure: true, ..real(3, false) };
        let dynamic = RealHealth { dynamic_weight: Some(7), ..real(2, true) };
        let pool = effective_pool(&[real(2, true), real(5, false), inhibited, dynamic], true);
        assert_eq!(pool, EffectivePool { weights: vec![Some(2), None, Some(0), Some(7)], sorry_server: false });
        assert_eq!(live_weight(&[real(2, true), real(5, false), inhibited, dynamic]), 9);
    }

    #[test]
    fn the_sorry_server_stands_in_only_when_all_are_down() {
        let inhibited = RealHealth { inhibit_on_failure: true, ..real(3, false) };
        assert_eq!(
            effective_pool(&[real(1, false), inhibited], true),
            EffectivePool { weights: vec![None, Some(0)], sorry_server: true }
        );
        assert!(!effective_pool(&[real(1, false), inhibited], false).sorry_server, "none configured");
        assert!(!effective_pool(&[real(1, false), real(0, true)], true).sorry_server, "one is up, if at weight 0");
        assert!(effective_pool(&[], true).sorry_server);
    }

    #[test]
    fn quorum_with_hysteresis() {
        let q = Quorum { quorum: 5, hysteresis: 2 };
        assert!(!q.initial(6).up, "starts up only at quorum + hysteresis");
        assert!(q.initial(7).up);

        let mut state = q.initial(7);
        let mut changes = Vec::new();
        for live in [7, 4, 3, 2, 3, 5, 6, 7, 8, 3] {
            changes.push(state.update(&q, live));
        }
        use QuorumChange::*;
        assert_eq!(changes, [None, None, None, Some(Lost), None, None, None, Some(Gained), None, None]);
        assert_eq!(state.update(&q, 2), Some(Lost));
    }

    #[test]
    fn no_live_weight_is_always_lost() {
        // Hysteresis at or above the quorum: only an empty pool loses it.
        let q = Quorum { quorum: 2, hysteresis: 3 };
        let mut state = QuorumState { up: true };
        assert_eq!(state.update(&q, 1), None);
        assert_eq!(state.update(&q, 0), Some(QuorumChange::Lost));
        assert_eq!(state.update(&q, 4), None);
        assert_eq!(state.update(&q, 5), Some(QuorumChange::Gained));

        let mut state = Quorum::default().initial(1);
        assert_eq!(state.update(&Quorum::default(), 0), Some(QuorumChange::Lost));
        assert_eq!(state.update(&Quorum::default(), 1), Some(QuorumChange::Gained));
    }

    #[test]
    fn quorum_log_lines() {
        let service = ServiceId::address(Protocol::Tcp, "172.16.100.1".parse().unwrap(), 80);
        let q = Quorum { quorum: 3, hysteresis: 1 };
        assert_eq!(
            QuorumChange::Lost.describe(&service, &q, 1),
            "tcp 172.16.100.1:80 lost its quorum: live weight 1 < 3-1"
        );
        assert_eq!(
            QuorumChange::Gained.describe(&service, &q, 4),
            "tcp 172.16.100.1:80 has its quorum: live weight 4 >= 3+1"
        );
    }
}
