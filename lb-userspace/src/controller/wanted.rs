//! The table to install: the table in force with the health checks' view
//! and VRRP's standby VIPs applied, and the health side of the controller
//! (what to check, the monitor's states, keepalived's quorums).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use anyhow::Result;

use super::Controller;
use crate::{
    config::ServiceConfig,
    environment::{NextHop, Paths},
    health::{self, HealthEvent, HealthMonitor, MonitoredReal, RealHealth, RealStatus},
    model::{Forwarding, ServiceId},
    tables::{TxPort, WantedReal, WantedService},
};

/// What the health checks say of the checked real servers, by service and
/// the address each is checked at. A server it does not name is up.
pub(super) type HealthView = BTreeMap<(ServiceId, SocketAddr), RealStatus>;

/// Where each real server's frames go in the datapath now: its next hop's
/// MAC, the path MTU and the interface, by (server, forwarding).
pub(super) type LastPaths = BTreeMap<(IpAddr, Forwarding), ([u8; 6], u32, TxPort)>;

/// The paths of the servers of `installed` (the table as last applied)
/// that have one.
pub(super) fn last_paths<'a>(installed: impl Iterator<Item = &'a WantedService>) -> LastPaths {
    installed
        .flat_map(|s| s.reals.iter())
        .filter_map(|r| Some(((r.address, r.forwarding), (r.mac?, r.mtu, r.port_out))))
        .filter(|(_, (_, mtu, _))| *mtu > 0)
        .collect()
}

/// The table to install, the one place it is made: `table` (the one in
/// force) with `health` applied (a failed server leaves its service, or
/// gets weight 0 with inhibit_on_failure; the sorry server stands in when
/// none is up), the services of the VIPs this director is VRRP backup for
/// (`standby`) flagged to stand by, and each server's next hop (`paths`)
/// and that hop's MAC (`macs`) — or, where the kernel has no usable route
/// (a TUN server's vanished) or the next hop no MAC yet, the path it had
/// (`last`), so that its connections go on as they went (see
/// `environment::RouteLoss`). Standby is IPv4's: an IPv6 service never
/// stands by (VRRP moves an IPv6 VIP, but its traffic reaches only the
/// director that holds it).
pub(super) fn wanted_table(
    table: &[ServiceConfig],
    health: &HealthView,
    standby: &BTreeSet<IpAddr>,
    paths: &Paths,
    macs: &BTreeMap<IpAddr, [u8; 6]>,
    last: &LastPaths,
) -> Vec<WantedService> {
    // Where a server's frames go: its next hop's MAC, the path MTU and the
    // interface.
    let reach = |address: IpAddr, forwarding: Forwarding| {
        let hop = paths.get(&(address, forwarding));
        let port = |h: &NextHop| TxPort { ifindex: h.ifindex, mac: h.src_mac };
        match (hop, hop.and_then(|h| macs.get(&h.address))) {
            (Some(hop), Some(mac)) => (Some(*mac), hop.mtu, port(hop)),
            _ => match last.get(&(address, forwarding)) {
                Some((mac, mtu, p)) => (Some(*mac), *mtu, *p),
                None => (None, hop.map_or(0, |h| h.mtu), hop.map(port).unwrap_or_default()),
            },
        }
    };
    table
        .iter()
        .map(|s| {
            let pool = health::effective_pool(&real_health(s, health), s.sorry_server.is_some());
            let mut reals: Vec<WantedReal> = s
                .reals
                .iter()
                .zip(&pool.weights)
                .map(|(r, weight)| {
                    let (mac, mtu, port_out) = reach(r.address, r.forwarding);
                    WantedReal {
                        address: r.address,
                        port: r.port,
                        weight: weight.unwrap_or(0),
                        forwarding: r.forwarding,
                        mac,
                        mtu,
                        port_out,
                        upper_threshold: r.upper_threshold,
                        lower_threshold: r.lower_threshold,
                        in_service: weight.is_some(),
                        expire_conns: !s.drain_on_failure,
                    }
                })
                .collect();
            if let (true, Some(sorry)) = (pool.sorry_server, s.sorry_server) {
                let (mac, mtu, port_out) = reach(sorry, s.forwarding);
                reals.push(WantedReal {
                    address: sorry,
                    port: s.port,
                    weight: 1,
                    forwarding: s.forwarding,
                    mac,
                    mtu,
                    port_out,
                    upper_threshold: 0,
                    lower_threshold: 0,
                    in_service: true,
                    expire_conns: false,
                });
            }
            let mut options = s.options;
            if stands_by(s, standby) {
                options.flags |= lb_common::service_flag::STANDBY;
            }
            WantedService {
                protocol: s.protocol,
                vip: s.vip,
                port: s.port,
                fwmark: s.fwmark,
                matches: s.matches.clone(),
                scheduler: s.scheduler,
                options,
                reals,
            }
        })
        .collect()
}

/// Whether `s` stands by: its VIP is one this director is VRRP backup for;
/// for a firewall-mark service, one of its matches' networks holds such a
/// VIP (the master takes those packets, and the mark's persistence with
/// them).
fn stands_by(s: &ServiceConfig, standby: &BTreeSet<IpAddr>) -> bool {
    standby.iter().any(|vip| s.covers(*vip))
}

/// Each real server of `s` with its configured weight and what `health`
/// says of it: what keepalived's pool and quorum are computed from. With
/// the stateless fallback a failed server is inhibited (weight 0, in its
/// place) whatever its check says: removed and added back, it would come
/// back first in IPVS's order and change the consistent hash's table, no
/// longer the other directors'.
fn real_health(s: &ServiceConfig, health: &HealthView) -> Vec<RealHealth> {
    let keep_places = s.options.flags & lb_common::service_flag::STATELESS_FALLBACK != 0;
    s.reals
        .iter()
        .map(|r| {
            let status = health.get(&(s.id(), real_addr(s, r)));
            RealHealth {
                weight: r.weight,
                up: status.is_none_or(|st| st.up),
                dynamic_weight: status.and_then(|st| st.dynamic_weight),
                inhibit_on_failure: r.health.inhibit_on_failure || keep_places,
            }
        })
        .collect()
}

impl Controller {
    /// What the datapath should hold now ([`wanted_table`]).
    pub fn wanted(&self) -> Vec<WantedService> {
        let last = last_paths(self.tables.wanted());
        wanted_table(&self.table, &self.health, &self.standby_vips, &self.paths, &self.macs, &last)
    }

    /// VRRP says which VIPs this director is backup for.
    pub fn set_standby(&mut self, vips: BTreeSet<IpAddr>) -> Result<()> {
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

    /// Whether the service holds keepalived's quorum (see [`Self::update_quorums`]).
    pub fn holds_quorum(&self, service: ServiceId) -> bool {
        match self.quorums.get(&service) {
            Some(q) => q.up,
            // No transition seen yet (no checks, or none reported): the
            // state at start.
            None => self.table.iter().find(|s| s.id() == service).is_some_and(|s| {
                s.quorum.initial(health::live_weight(&real_health(s, &self.health))).up
            }),
        }
    }

    /// Whether `s` stands by: a VRRP instance of this director is backup
    /// for its VIP (a firewall mark: for a VIP in one of its networks).
    pub fn service_stands_by(&self, s: &ServiceConfig) -> bool {
        stands_by(s, &self.standby_vips)
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
            let live = health::live_weight(&real_health(s, &self.health));
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
    SocketAddr::new(r.address, r.port)
}

/// "TCP 10.0.0.100:80", "TCP [2001:db8::100]:80", "FWM 1", "FWM 2 IPv6".
fn service_name(s: &WantedService) -> String {
    if s.fwmark != 0 {
        return format!("FWM {}{}", s.fwmark, if s.vip.is_ipv6() { " IPv6" } else { "" });
    }
    format!("{} {}", s.protocol.name().to_uppercase(), SocketAddr::new(s.vip, s.port))
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
                        None => lines.push(format!(
                            "service {}: real server {} added, weight {}",
                            service_name(s),
                            r.address,
                            r.weight
                        )),
                        Some(o) if o.weight != r.weight => lines.push(format!(
                            "service {}: real server {} weight {} -> {}",
                            service_name(s),
                            r.address,
                            o.weight,
                            r.weight
                        )),
                        Some(o) if o.mac.is_none() && r.mac.is_some() => lines.push(format!(
                            "service {}: real server {} is reachable now",
                            service_name(s),
                            r.address
                        )),
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
                let resolution = if r.address.is_ipv6() { "neighbour discovery" } else { "ARP" };
                lines.push(format!(
                    "service {}: real server {} (or its next hop) does not answer {resolution} yet: no new connections for it until it does",
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use lb_common::service_flag::STANDBY;

    use super::*;
    use crate::{config::Config, environment::NextHop};

    const FILE: &str = r#"
[director]
interface = "eth0"

[[service]]
vip = "10.0.0.100:80"
scheduler = "wrr"
sorry_server = "10.0.0.99"

[service.health_check]
kind = "tcp"

[[service.real]]
address = "10.0.0.21"
weight = 3

[[service.real]]
address = "10.0.0.22"
weight = 1
"#;

    #[test]
    fn the_wanted_table_has_health_standby_and_next_hops_applied() {
        let table = Config::parse(FILE, Path::new("lb.toml")).unwrap().services;
        let id = table[0].id();
        let [a, b, sorry] = [21, 22, 99].map(|last| IpAddr::from([10, 0, 0, last]));
        let paths: Paths = [a, b, sorry]
            .into_iter()
            .map(|r| ((r, Forwarding::Dr), NextHop { ifindex: 2, src_mac: [2; 6], address: r, mtu: 1500 }))
            .collect();
        // b's and the sorry server's MACs are not known yet.
        let macs = BTreeMap::from([(a, [2, 0, 0, 0, 0, 21])]);
        let down = |real: IpAddr| {
            (
                (id, SocketAddr::new(real, 80)),
                RealStatus { up: false, dynamic_weight: None, last_failure: None },
            )
        };

        let master = BTreeSet::new();
        let w = &wanted_table(&table, &HealthView::new(), &master, &paths, &macs, &LastPaths::new())[0];
        assert_eq!((w.id(), w.options.flags & STANDBY), (id, 0));
        let reals: Vec<_> =
            w.reals.iter().map(|r| (r.address, r.weight, r.in_service, r.mac.is_some(), r.mtu)).collect();
        assert_eq!(reals, [(a, 3, true, true, 1500), (b, 1, true, false, 1500)]);

        // a failed; this director is VRRP backup for the VIP.
        let backup = BTreeSet::from([IpAddr::from([10, 0, 0, 100])]);
        let w = &wanted_table(&table, &HealthView::from([down(a)]), &backup, &paths, &macs, &LastPaths::new())[0];
        assert_eq!(w.options.flags & STANDBY, STANDBY);
        let reals: Vec<_> = w.reals.iter().map(|r| (r.address, r.weight, r.in_service, r.expire_conns)).collect();
        assert_eq!(reals, [(a, 0, false, true), (b, 1, true, true)]);

        // Every real server failed: the sorry server stands in.
        let w =
            &wanted_table(&table, &HealthView::from([down(a), down(b)]), &master, &paths, &macs, &LastPaths::new())[0];
        let listed: Vec<_> = w.reals.iter().filter(|r| r.in_service).map(|r| (r.address, r.port, r.weight)).collect();
        assert_eq!(listed, [(sorry, 80, 1)]);
    }

    #[test]
    fn a_server_without_a_route_keeps_the_path_it_had() {
        let file = FILE.replace("[[service.real]]", "[[service.real]]\nforwarding = \"tun\"");
        let table = Config::parse(&file, Path::new("lb.toml")).unwrap().services;
        let [a, b] = [21, 22].map(|last| IpAddr::from([10, 0, 0, last]));
        let router = IpAddr::from([10, 0, 0, 254]);
        let hop = NextHop { ifindex: 2, src_mac: [2; 6], address: router, mtu: 1480 };
        let macs = BTreeMap::from([(router, [2, 0, 0, 0, 0, 254])]);
        let routed: Paths = [a, b].into_iter().map(|r| ((r, Forwarding::Tun), hop)).collect();
        let none = BTreeSet::new();
        let reach = |w: &WantedService| -> Vec<_> { w.reals.iter().map(|r| (r.address, r.mac, r.mtu)).collect() };
        let before = wanted_table(&table, &HealthView::new(), &none, &routed, &macs, &LastPaths::new());
        let mac = Some([2, 0, 0, 0, 0, 254]);
        assert_eq!(reach(&before[0]), [(a, mac, 1480), (b, mac, 1480)]);

        // b's route vanished: not MTU 0 and no MAC (every packet answered
        // with fragmentation-needed), but the path it had.
        let only_a: Paths = routed.iter().filter(|(k, _)| k.0 == a).map(|(k, h)| (*k, *h)).collect();
        let last = last_paths(before.iter());
        let after = wanted_table(&table, &HealthView::new(), &none, &only_a, &macs, &last);
        assert_eq!(after, before);
        // Without a path before either: nothing to keep, no new connections.
        let fresh = wanted_table(&table, &HealthView::new(), &none, &only_a, &macs, &LastPaths::new());
        assert_eq!(reach(&fresh[0]), [(a, mac, 1480), (b, None, 0)]);
        // A new next hop not resolved yet: the old one meanwhile.
        let moved: Paths = routed
            .keys()
            .map(|k| (*k, NextHop { ifindex: 2, src_mac: [2; 6], address: IpAddr::from([10, 0, 0, 253]), mtu: 1400 }))
            .collect();
        let after = wanted_table(&table, &HealthView::new(), &none, &moved, &macs, &last);
        assert_eq!(after, before);
    }
}
