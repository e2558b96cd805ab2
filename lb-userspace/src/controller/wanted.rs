//! The table to install: the table in force with the health checks' view
//! and VRRP's standby VIPs applied, and the health side of the controller
//! (what to check, the monitor's states, keepalived's quorums).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use anyhow::Result;

use super::Controller;
use crate::{
    config::ServiceConfig,
    health::{self, HealthEvent, HealthMonitor, MonitoredReal, RealHealth},
    model::ServiceId,
    tables::{WantedReal, WantedService},
};

impl Controller {
    /// What the datapath should hold: the table, with each real server's
    /// health (a failed one leaves its service, or gets weight 0 with
    /// inhibit_on_failure; the sorry server stands in when none is up) and
    /// where its frames go.
    pub fn wanted(&self) -> Vec<WantedService> {
        self.table
            .iter()
            .map(|s| {
                let key = s.id();
                let states: Vec<RealHealth> = s
                    .reals
                    .iter()
                    .map(|r| {
                        let status = self.health.get(&(key, real_addr(s, r)));
                        RealHealth {
                            weight: r.weight,
                            up: status.is_none_or(|st| st.up),
                            dynamic_weight: status.and_then(|st| st.dynamic_weight),
                            inhibit_on_failure: r.health.inhibit_on_failure,
                        }
                    })
                    .collect();
                let pool = health::effective_pool(&states, s.sorry_server.is_some());
                let mut reals: Vec<WantedReal> = s
                    .reals
                    .iter()
                    .zip(&pool.weights)
                    .map(|(r, weight)| self.wanted_real(r.address, r.port, weight.unwrap_or(0), r.forwarding, r.upper_threshold, r.lower_threshold, weight.is_some(), !s.drain_on_failure))
                    .collect();
                if let (true, Some(sorry)) = (pool.sorry_server, s.sorry_server) {
                    reals.push(self.wanted_real(sorry, s.port, 1, s.forwarding, 0, 0, true, false));
                }
                let mut options = s.options;
                if self.standby_vips.contains(&s.vip) {
                    options.flags |= lb_common::service_flag::STANDBY;
                }
                WantedService { protocol: s.protocol, vip: s.vip, port: s.port, scheduler: s.scheduler, options, reals }
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn wanted_real(
        &self,
        address: Ipv4Addr,
        port: u16,
        weight: u32,
        forwarding: crate::model::Forwarding,
        upper_threshold: u32,
        lower_threshold: u32,
        in_service: bool,
        expire_conns: bool,
    ) -> WantedReal {
        let hop = self.paths.get(&(address, forwarding));
        WantedReal {
            address,
            port,
            weight,
            forwarding,
            mac: hop.and_then(|h| self.macs.get(&h.address).copied()),
            mtu: hop.map_or(0, |h| h.mtu),
            upper_threshold,
            lower_threshold,
            in_service,
            expire_conns,
        }
    }

    /// VRRP says which VIPs this director is backup for.
    pub fn set_standby(&mut self, vips: BTreeSet<Ipv4Addr>) -> Result<()> {
        if vips == self.standby_vips {
            return Ok(());
        }
        for v in vips.difference(&self.standby_vips) {
            tracing::info!("{v}: VRRP backup, its services stand by");
        }
        for v in self.standby_vips.difference(&vips) {
            tracing::info!("{v}: VRRP master, forwarding its services");
        }
        self.standby_vips = vips;
        self.apply()
    }

    /// Whether the service has a live real server (VRRP's track_service).
    pub fn service_alive(&self, service: ServiceId) -> bool {
        self.wanted()
            .iter()
            .find(|w| w.id() == service)
            .is_some_and(|w| w.reals.iter().any(|r| r.in_service && r.weight > 0 && r.mac.is_some()))
    }

    /// The real servers to health-check, with their checks.
    pub fn monitored(&self) -> Vec<MonitoredReal> {
        self.table
            .iter()
            .flat_map(|s| {
                s.reals.iter().filter(|r| r.health.is_active()).map(move |r| MonitoredReal {
                    service: s.id(),
                    real: real_addr(s, r),
                    check: r.health.clone(),
                })
            })
            .collect()
    }

    /// Takes the monitor's view of every checked server (after it was
    /// updated, or at start): servers it starts down (alpha) included.
    pub fn sync_health(&mut self, monitor: &HealthMonitor) -> Result<()> {
        let mut health = BTreeMap::new();
        for m in self.monitored() {
            if let Some(status) = monitor.status(&m.service, m.real) {
                health.insert((m.service, m.real), status);
            }
        }
        if health != self.health {
            self.health = health;
            self.update_quorums();
            self.apply()?;
        }
        Ok(())
    }

    /// One health transition.
    pub fn health_event(&mut self, event: &HealthEvent, monitor: &HealthMonitor) -> Result<()> {
        if let Some(status) = monitor.status(&event.service, event.real) {
            self.health.insert((event.service, event.real), status);
        }
        self.update_quorums();
        self.apply()
    }

    /// keepalived's quorum: log (and run quorum_up/quorum_down) when a
    /// service's live weight crosses it.
    pub(super) fn update_quorums(&mut self) {
        let mut seen = BTreeSet::new();
        for s in &self.table {
            let key = s.id();
            seen.insert(key);
            let states: Vec<RealHealth> = s
                .reals
                .iter()
                .map(|r| {
                    let st = self.health.get(&(key, real_addr(s, r)));
                    RealHealth {
                        weight: r.weight,
                        up: st.is_none_or(|st| st.up),
                        dynamic_weight: st.and_then(|st| st.dynamic_weight),
                        inhibit_on_failure: r.health.inhibit_on_failure,
                    }
                })
                .collect();
            let live = health::live_weight(&states);
            match self.quorums.get_mut(&key) {
                None => {
                    self.quorums.insert(key, s.quorum.initial(live));
                }
                Some(state) => {
                    if let Some(change) = state.update(&s.quorum, live) {
                        let command = match change {
                            health::QuorumChange::Gained => s.quorum_up.clone(),
                            health::QuorumChange::Lost => s.quorum_down.clone(),
                        };
                        change.announce(&key, &s.quorum, live, command.as_deref(), health::DEFAULT_NOTIFY_TIMEOUT);
                    }
                }
            }
        }
        self.quorums.retain(|k, _| seen.contains(k));
    }
}

/// The address a real server is checked at (its port; for an every-port
/// service the check's own port applies).
fn real_addr(s: &ServiceConfig, r: &crate::config::RealConfig) -> SocketAddr {
    let _ = s;
    SocketAddr::new(IpAddr::V4(r.address), r.port)
}

fn service_name(s: &WantedService) -> String {
    format!("{} {}:{}", s.protocol.name().to_uppercase(), s.vip, s.port)
}

/// One log line per change an operator would care about.
pub fn describe_changes(before: &[WantedService], after: &[WantedService]) -> Vec<String> {
    let mut lines = Vec::new();
    let find = |list: &[WantedService], s: &WantedService| list.iter().find(|x| x.id() == s.id()).cloned();
    for s in after {
        match find(before, s) {
            None => lines.push(format!(
                "service {} added ({}, {} real servers)",
                service_name(s),
                s.scheduler,
                s.reals.len()
            )),
            Some(old) => {
                if old.scheduler != s.scheduler {
                    lines.push(format!("service {}: scheduler {} -> {}", service_name(s), old.scheduler, s.scheduler));
                }
                for r in &s.reals {
                    match old.reals.iter().find(|o| o.address == r.address) {
                        None => lines.push(format!("service {}: real server {} added, weight {}", service_name(s), r.address, r.weight)),
                        Some(o) if o.weight != r.weight => lines.push(format!(
                            "service {}: real server {} weight {} -> {}",
                            service_name(s),
                            r.address,
                            o.weight,
                            r.weight
                        )),
                        Some(o) if o.mac.is_none() && r.mac.is_some() => {
                            lines.push(format!("service {}: real server {} is reachable now", service_name(s), r.address))
                        }
                        _ => {}
                    }
                }
                for o in &old.reals {
                    if !s.reals.iter().any(|r| r.address == o.address) {
                        lines.push(format!(
                            "service {}: real server {} removed (its connections continue until they expire)",
                            service_name(s),
                            o.address
                        ));
                    }
                }
            }
        }
        if before.iter().all(|b| b.id() != s.id()) {
            for r in s.reals.iter().filter(|r| r.mac.is_none()) {
                lines.push(format!(
                    "service {}: real server {} (or its next hop) does not answer ARP yet: no new connections for it until it does",
                    service_name(s),
                    r.address
                ));
            }
        }
    }
    for s in before {
        if find(after, s).is_none() {
            lines.push(format!("service {} removed", service_name(s)));
        }
    }
    lines
}
