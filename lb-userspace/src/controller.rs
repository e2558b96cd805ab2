//! lbd's state and what it does with it: turn the config into the wanted
//! table, apply it to the datapath, answer the control socket, sweep the
//! connection table, estimate rates.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::Result;
use lb_common::{Conn, Director, FlowKey, Service, conn_state, flow_kind, ipv4_octets};

use std::net::SocketAddr;

use lb_ipvsadm::snapshot::{self, Connection, Stats};

use crate::{
    config::{Config, ServiceConfig},
    health::{self, HealthEvent, HealthMonitor, MonitoredReal, QuorumState, RealHealth, RealStatus},
    environment::{Paths, next_hop_addresses},
    datapath::{CountField, Datapath},
    netinfo::Interface,
    rate::Estimator,
    tables::{Tables, WantedReal, WantedService},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Counted {
    Service(u32),
    Dest(u32),
}

pub struct Controller {
    pub config: Config,
    /// The virtual-server table in force: the config's, as changed since by
    /// lbctl's ipvsadm commands (a reload puts the config's back).
    table: Vec<ServiceConfig>,
    /// Health of the checked real servers (unchecked ones are always up).
    health: BTreeMap<(health::ServiceKey, SocketAddr), RealStatus>,
    quorums: BTreeMap<health::ServiceKey, QuorumState>,
    /// VIPs this director is VRRP backup for: their services pass packets
    /// to the kernel until it becomes master.
    standby_vips: BTreeSet<Ipv4Addr>,
    /// `lbctl --set` changed the timeouts since the file was loaded.
    timeouts_changed: bool,
    pub interface: Interface,
    pub datapath: Datapath,
    tables: Tables,
    /// Where each real server's frames go (next hop, path MTU).
    paths: Paths,
    /// Next hops' MACs on the director's segment.
    macs: BTreeMap<Ipv4Addr, [u8; 6]>,
    estimators: BTreeMap<Counted, Estimator>,
    drift: DriftFilter,
}

/// How long IPVS re-arms a persistence template that outlived its timeout
/// but still controls connections (`ip_vs_conn_expire`).
const TEMPLATE_REARM_SECS: u32 = 60;

/// Seconds until the entry expires (0 if it has).
fn expires_in(conn: &Conn, now: u64) -> u32 {
    let deadline = conn.last_seen_ns + conn.timeout as u64 * 1_000_000_000;
    (deadline.saturating_sub(now) / 1_000_000_000) as u32
}

fn is_expired(conn: &Conn, now: u64) -> bool {
    now.saturating_sub(conn.last_seen_ns) > conn.timeout as u64 * 1_000_000_000
}

impl Controller {
    /// Takes over a loaded datapath: adopts what a previous lbd left in its
    /// maps, then makes them hold `config`.
    pub fn new(
        config: Config,
        interface: Interface,
        datapath: Datapath,
        paths: Paths,
        macs: BTreeMap<Ipv4Addr, [u8; 6]>,
    ) -> Result<Self> {
        let tables = if datapath.adopted() {
            let adopted = datapath.read_back()?;
            tracing::info!(
                "adopting the running datapath: {} services, {} connections kept",
                adopted.services.len(),
                datapath.connections().map_or(0, |c| c.len())
            );
            Tables::adopt(&adopted)
        } else {
            Tables::new()
        };
        let table = config.services.clone();
        let mut c = Self {
            config,
            table,
            health: BTreeMap::new(),
            quorums: BTreeMap::new(),
            standby_vips: BTreeSet::new(),
            timeouts_changed: false,
            interface,
            datapath,
            tables,
            paths,
            macs,
            estimators: BTreeMap::new(),
            drift: DriftFilter::default(),
        };
        c.apply()?;
        Ok(c)
    }

    /// The director entry of the datapath for the current config.
    fn director_value(&self) -> Director {
        let t = self.config.director.timeouts;
        let tun_source = self.tun_source().map_or([0; 4], |a| lb_common::ipv4_words(a.octets()));
        Director {
            ifindex: self.interface.index,
            mac: self.interface.mac,
            tun_source,
            tun_source_family: lb_common::AF_INET,
            state_timeouts: conn_state::with_set_timeouts(conn_state::default_timeouts(), t.tcp, t.tcpfin, t.udp),
            tick_ns: self.datapath.tick_ns(),
            icmp_rate_limit: self.config.director.icmp_rate_limit,
            icmp_burst: lb_common::icmp_burst(self.config.director.icmp_rate_limit),
            ..Director::default()
        }
    }

    /// The outer source of TUN packets: configured, or the interface's own
    /// address (the first that is not a VIP).
    pub fn tun_source(&self) -> Option<Ipv4Addr> {
        self.config.director.tun_source.or_else(|| {
            let vips: BTreeSet<Ipv4Addr> = self.table.iter().map(|s| s.vip).collect();
            self.interface.ipv4.iter().copied().find(|a| !vips.contains(a))
        })
    }

    /// The virtual-server table in force.
    pub fn table(&self) -> &[ServiceConfig] {
        &self.table
    }

    /// What the datapath should hold: the table, with each real server's
    /// health (a failed one leaves its service, or gets weight 0 with
    /// inhibit_on_failure; the sorry server stands in when none is up) and
    /// where its frames go.
    pub fn wanted(&self) -> Vec<WantedService> {
        self.table
            .iter()
            .map(|s| {
                let key = health_key(s);
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
    pub fn service_alive(&self, protocol: crate::model::Protocol, vip: Ipv4Addr, port: u16) -> bool {
        self.wanted()
            .iter()
            .find(|w| (w.protocol, w.vip, w.port) == (protocol, vip, port))
            .is_some_and(|w| w.reals.iter().any(|r| r.in_service && r.weight > 0 && r.mac.is_some()))
    }

    /// Connection sync, sending side: the entries new or changed since the
    /// last scan, as records the other director can place in its own
    /// tables.
    pub fn sync_records(&self, tracker: &mut crate::sync::ChangeTracker) -> Vec<crate::sync::SyncRecord> {
        let now = self.datapath.now_ns();
        let Ok(entries) = self.datapath.connections() else { return Vec::new() };
        let ports: BTreeMap<u32, u16> =
            self.tables.wanted().filter_map(|w| Some((self.tables.service_id(&w.key())?, w.port))).collect();
        tracker
            .scan(entries, now)
            .into_iter()
            .filter_map(|(key, conn, _)| {
                let port = *ports.get(&conn.service_id)?;
                let dest = self.tables.dest(conn.dest_id)?;
                let real = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ipv4_octets(dest.addr))), u16::from_be(dest.port));
                crate::sync::SyncRecord::from_entry(&key, &conn, port, real, now)
            })
            .collect()
    }

    /// Connection sync, receiving side: installs the other director's
    /// entries with this director's ids (so the connections continue to the
    /// same real servers after a failover). Returns how many were installed
    /// and how many name a service or server unknown here.
    pub fn install_synced(&mut self, records: &[crate::sync::SyncRecord]) -> (usize, usize) {
        let now = self.datapath.now_ns();
        let (mut installed, mut unknown) = (0, 0);
        for r in records {
            let key = r.service_key();
            let Some(service_id) = self.tables.service_id(&key) else {
                unknown += 1;
                continue;
            };
            let real = match r.real.ip() {
                IpAddr::V4(a) => lb_common::ipv4_words(a.octets()),
                IpAddr::V6(_) => {
                    unknown += 1;
                    continue;
                }
            };
            let Some(dest_id) = self.tables.service_dests(&key).iter().copied().find(|&d| self.tables.dest(d).is_some_and(|v| v.addr == real))
            else {
                unknown += 1;
                continue;
            };
            let flow = r.flow_key();
            let conn = r.conn(dest_id, service_id, now);
            if is_expired(&conn, now) {
                continue;
            }
            let old = self.datapath.connection(&flow);
            if self.datapath.set_connection(&flow, &conn).is_err() {
                continue;
            }
            // The entry it replaces was counted until now (expired or not:
            // the sweeper counts expired ones out when it removes them).
            if let Some(old) = old {
                self.datapath.add_dest_conns(old.dest_id, old.state, -1);
            }
            self.datapath.add_dest_conns(dest_id, conn.state, 1);
            installed += 1;
        }
        (installed, unknown)
    }

    /// The real servers to health-check, with their checks.
    pub fn monitored(&self) -> Vec<MonitoredReal> {
        self.table
            .iter()
            .flat_map(|s| {
                s.reals.iter().filter(|r| r.health.is_active()).map(move |r| MonitoredReal {
                    service: health_key(s),
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
    fn update_quorums(&mut self) {
        let mut seen = BTreeSet::new();
        for s in &self.table {
            let key = health_key(s);
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

    /// Makes `table` the one in force (already checked: commands and the
    /// host), with the next hops toward its servers.
    pub fn set_table(&mut self, table: Vec<ServiceConfig>, paths: Paths, macs: BTreeMap<Ipv4Addr, [u8; 6]>) -> Result<()> {
        let old = std::mem::replace(&mut self.table, table);
        let old_paths = std::mem::replace(&mut self.paths, paths);
        self.update_macs(macs);
        if let Err(e) = self.apply() {
            self.table = old;
            self.paths = old_paths;
            return Err(e);
        }
        self.update_quorums();
        Ok(())
    }

    /// Writes the difference between the maps and the wanted table.
    pub fn apply(&mut self) -> Result<()> {
        let director = self.director_value();
        if self.datapath.director().ok() != Some(director) {
            self.datapath.set_director(&director)?;
        }
        let wanted = self.wanted();
        let before: Vec<WantedService> = self.tables.wanted().cloned().collect();
        let datapath = &self.datapath;
        let ops = self.tables.plan(&wanted, &|id| datapath.sched_position(id))?;
        self.datapath.execute(&ops)?;
        for line in describe_changes(&before, &wanted) {
            tracing::info!("{line}");
        }
        Ok(())
    }

    /// Takes a new config (already checked against the host). Its table
    /// replaces the one in force, runtime changes included: the file is
    /// the source of truth, as keepalived re-applies its config.
    pub fn reload(&mut self, config: Config, interface: Interface, paths: Paths) -> Result<()> {
        if self.table != self.config.services {
            tracing::warn!("reload: changes made with lbctl since the last load are replaced by the file's table");
        }
        if self.timeouts_changed {
            tracing::warn!("reload: timeouts are the file's again (lbctl --set changes are replaced)");
        }
        self.timeouts_changed = false;
        let table = config.services.clone();
        let old = std::mem::replace(&mut self.config, config);
        let old_table = std::mem::replace(&mut self.table, table);
        let old_interface = std::mem::replace(&mut self.interface, interface);
        let old_paths = std::mem::replace(&mut self.paths, paths);
        if let Err(e) = self.apply() {
            self.config = old;
            self.table = old_table;
            self.interface = old_interface;
            self.paths = old_paths;
            return Err(e);
        }
        self.update_quorums();
        Ok(())
    }

    /// `ipvsadm --set`: new timeouts for connections from now on.
    pub fn set_timeouts(&mut self, t: crate::model::Timeouts) -> Result<()> {
        self.timeouts_changed = true;
        let d = &mut self.config.director.timeouts;
        if t.tcp != 0 {
            d.tcp = t.tcp;
        }
        if t.tcpfin != 0 {
            d.tcpfin = t.tcpfin;
        }
        if t.udp != 0 {
            d.udp = t.udp;
        }
        self.apply()
    }

    /// `ipvsadm -Z`: zeroes the counters of one service (and its servers) or
    /// of all.
    pub fn zero(&mut self, service: Option<(crate::model::Protocol, Ipv4Addr, u16)>) -> Result<()> {
        let mut ops = Vec::new();
        for w in self.tables.wanted() {
            if service.is_some_and(|(p, v, port)| (p, v, port) != (w.protocol, w.vip, w.port)) {
                continue;
            }
            let key = w.key();
            if let Some(id) = self.tables.service_id(&key) {
                ops.push(crate::tables::MapOp::ZeroServiceStats(id));
            }
            for &d in self.tables.service_dests(&key) {
                ops.push(crate::tables::MapOp::ZeroDestStats(d));
            }
        }
        self.estimators.clear();
        self.datapath.execute(&ops)
    }

    /// New routes toward the real servers; true if any next hop changed.
    pub fn update_paths(&mut self, paths: Paths) -> bool {
        if paths == self.paths {
            return false;
        }
        for (key, hop) in &paths {
            if self.paths.get(key).map(|h| h.address) != Some(hop.address) {
                tracing::info!("{} is reached through {} now (path MTU {})", key.0, hop.address, hop.mtu);
            }
        }
        self.paths = paths;
        true
    }

    /// Records newly learned MACs; true if any changed.
    pub fn update_macs(&mut self, macs: BTreeMap<Ipv4Addr, [u8; 6]>) -> bool {
        let mut changed = false;
        for (addr, mac) in macs {
            let old = self.macs.insert(addr, mac);
            if old != Some(mac) {
                changed = true;
                match old {
                    None => tracing::info!("{addr} resolved to {}", fmt_mac(&mac)),
                    Some(o) => tracing::warn!("{addr} moved from {} to {}", fmt_mac(&o), fmt_mac(&mac)),
                }
            }
        }
        changed
    }

    /// Next hops whose MACs are not known yet.
    pub fn unresolved(&self) -> Vec<Ipv4Addr> {
        next_hop_addresses(&self.paths).into_iter().filter(|a| !self.macs.contains_key(a)).collect()
    }

    pub fn next_hops(&self) -> Vec<Ipv4Addr> {
        next_hop_addresses(&self.paths)
    }

    /// Removes expired entries (taking them out of their server's counts),
    /// corrects counts that drifted (entries the LRU table evicted), and
    /// frees the slots of removed servers no connection uses any more.
    pub fn sweep(&mut self) -> Result<()> {
        let now = self.datapath.now_ns();
        let mut used_dests = BTreeSet::new();
        let mut used_services = BTreeSet::new();
        let mut exact: BTreeMap<(u32, CountField), i64> = BTreeMap::new();
        // Persistent services by id: a template stays alive while any
        // connection it placed does (IPVS re-arms a template that still
        // controls connections).
        let persistent: BTreeMap<u32, Service> = self
            .tables
            .installed_values()
            .filter(|s| s.persistence_timeout > 0)
            .map(|s| (s.id, *s))
            .collect();
        let mut controlling: BTreeMap<FlowKey, u32> = BTreeMap::new();
        // Expired templates wait until we know whether they still control
        // a connection.
        let mut expired_templates: Vec<FlowKey> = Vec::new();
        for (key, conn) in self.datapath.connections()? {
            if is_expired(&conn, now) && key.kind == flow_kind::TEMPLATE {
                expired_templates.push(key);
                continue;
            }
            let conn = if is_expired(&conn, now) {
                match self.remove_if_expired(&key, now)? {
                    Some(c) => c,
                    None => continue,
                }
            } else {
                conn
            };
            used_dests.insert(conn.dest_id);
            used_services.insert(conn.service_id);
            *exact.entry((conn.dest_id, count_field(&key, conn.state))).or_default() += 1;
            if key.kind != flow_kind::TEMPLATE
                && let Some(svc) = persistent.get(&conn.service_id)
            {
                controlling.insert(svc.template_key(&key), conn.dest_id);
            }
        }
        // As IPVS: a template expires `persistence_timeout` after its last
        // use, unless it still controls connections; then it is re-armed for
        // another 60 s.
        for key in expired_templates {
            let Some(mut template) = self.datapath.connection(&key) else { continue };
            if controlling.get(&key) == Some(&template.dest_id) {
                template.last_seen_ns = now;
                template.timeout = TEMPLATE_REARM_SECS;
                self.datapath.set_connection(&key, &template)?;
            } else {
                match self.remove_if_expired(&key, now)? {
                    Some(alive) => template = alive,
                    None => continue,
                }
            }
            used_dests.insert(template.dest_id);
            used_services.insert(template.service_id);
            *exact.entry((template.dest_id, CountField::Persistent)).or_default() += 1;
        }
        // What the datapath counts against what the table holds. A gap seen
        // by one sweep can be a connection that came or changed while we
        // walked; a gap that stays is drift, and is closed.
        let mut gaps = BTreeMap::new();
        for id in self.tables.dest_ids() {
            let kept = self.datapath.dest_conns(id);
            for (field, value) in
                [(CountField::Active, kept.active), (CountField::Inactive, kept.inactive), (CountField::Persistent, kept.persistent)]
            {
                gaps.insert((id, field), value - exact.get(&(id, field)).copied().unwrap_or(0));
            }
        }
        for ((id, field), correction) in self.drift.observe(gaps) {
            tracing::debug!("connection count of dest {id} ({field:?}) corrected by {correction}");
            self.datapath.correct_dest_conns(id, field, correction);
        }
        let ops = self.tables.release_unreferenced(&used_dests, &used_services);
        self.datapath.execute(&ops)
    }

    /// Deletes an expired entry (taking it out of its server's counts),
    /// checking again right before: the datapath may have reused it for a
    /// new connection meanwhile (then it is stamped after the sweep's `now`,
    /// and not expired). Returns the entry if it is alive after all.
    fn remove_if_expired(&mut self, key: &FlowKey, now: u64) -> Result<Option<Conn>> {
        match self.datapath.connection(key) {
            Some(c) if is_expired(&c, now) => {
                self.datapath.remove_connection(key)?;
                self.datapath.add_dest_conns(c.dest_id, c.state, -1);
                Ok(None)
            }
            other => Ok(other),
        }
    }

    /// One estimator step for every service and real server.
    pub fn sample_rates(&mut self) {
        let mut seen = BTreeSet::new();
        for svc in self.tables.wanted().map(|w| w.key()).collect::<Vec<_>>() {
            let Some(id) = self.tables.service_id(&svc) else { continue };
            let stats = to_stats(self.datapath.service_counters(id));
            seen.insert(Counted::Service(id));
            self.estimators.entry(Counted::Service(id)).or_insert_with(|| Estimator::new(stats)).sample(stats);
            for &d in self.tables.service_dests(&svc) {
                let stats = to_stats(self.datapath.dest_counters(d));
                seen.insert(Counted::Dest(d));
                self.estimators.entry(Counted::Dest(d)).or_insert_with(|| Estimator::new(stats)).sample(stats);
            }
        }
        self.estimators.retain(|k, _| seen.contains(k));
    }

    fn rates(&self, what: Counted) -> snapshot::Rates {
        self.estimators.get(&what).map(|e| e.rates()).unwrap_or_default()
    }

    /// What `ipvsadm -L` shows.
    pub fn table_snapshot(&self) -> snapshot::Table {
        let services = self
            .tables
            .wanted()
            .map(|w| {
                let key = w.key();
                let id = self.tables.service_id(&key).unwrap_or(0);
                let reals = self
                    .tables
                    .service_dests(&key)
                    .iter()
                    .filter_map(|&d| {
                        let dest = self.tables.dest(d)?;
                        let c = self.datapath.dest_conns(d);
                        let (active, inactive, persistent) =
                            (c.active.max(0) as u64, c.inactive.max(0) as u64, c.persistent.max(0) as u64);
                        Some(snapshot::Real {
                            address: IpAddr::V4(Ipv4Addr::from(ipv4_octets(dest.addr))),
                            port: u16::from_be(dest.port),
                            forwarding: crate::model::Forwarding::from_code(dest.forwarding)
                                .unwrap_or(crate::model::Forwarding::Dr),
                            weight: dest.weight,
                            active_conns: active,
                            inactive_conns: inactive,
                            persistent_conns: persistent,
                            upper_threshold: dest.upper_threshold,
                            lower_threshold: dest.lower_threshold,
                            stats: to_stats(self.datapath.dest_counters(d)),
                            rates: self.rates(Counted::Dest(d)),
                        })
                    })
                    .collect();
                snapshot::Service {
                    protocol: w.protocol,
                    vip: IpAddr::V4(w.vip),
                    port: w.port,
                    scheduler: w.scheduler.name().to_string(),
                    sched_flags: w.options.sched_flag_names(),
                    persistence_timeout: w.options.persistence_timeout,
                    persistence_netmask: w
                        .options
                        .persistence_timeout
                        .map(|_| w.options.persistence_netmask),
                    stats: to_stats(self.datapath.service_counters(id)),
                    rates: self.rates(Counted::Service(id)),
                    reals,
                }
            })
            .collect();
        snapshot::Table { conn_table_size: self.config.director.conn_table_size, services }
    }

    /// What `ipvsadm -L -c` shows.
    pub fn connections_snapshot(&self) -> Vec<Connection> {
        let now = self.datapath.now_ns();
        let mut out: Vec<Connection> = self
            .datapath
            .connections()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, c)| !is_expired(c, now))
            .filter_map(|(key, conn)| connection_snapshot(&key, &conn, self.tables.dest(conn.dest_id)?, now))
            .collect();
        // Soonest to expire last, like the kernel's hash walk has no order;
        // sort for stable output.
        out.sort_by_key(|c| (c.vip, c.vport, c.client, c.client_port));
        out
    }

    pub fn reason_counters(&self) -> BTreeMap<String, u64> {
        self.datapath.reason_counters().into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}

fn connection_snapshot(key: &FlowKey, conn: &Conn, dest: &lb_common::Dest, now: u64) -> Option<Connection> {
    let ip = |w: [u32; 4]| IpAddr::V4(Ipv4Addr::from(ipv4_octets(w)));
    let vport = u16::from_be(key.dport);
    let dest_port = u16::from_be(dest.port);
    Some(Connection {
        protocol: crate::model::Protocol::from_number(key.protocol)?,
        expires_in: expires_in(conn, now),
        state: conn_state::name(conn.state).to_string(),
        client: ip(key.src),
        client_port: u16::from_be(key.sport),
        vip: ip(key.dst),
        vport,
        real: ip(dest.addr),
        real_port: if dest_port == 0 { vport } else { dest_port },
        template: key.kind == flow_kind::TEMPLATE,
    })
}

fn count_field(key: &FlowKey, state: u8) -> CountField {
    if key.kind == flow_kind::TEMPLATE {
        CountField::Persistent
    } else if conn_state::is_active(state) {
        CountField::Active
    } else {
        CountField::Inactive
    }
}

/// Tells drift from noise in connection counts: a gap between the
/// datapath's count and the table must show, with the same sign, in
/// `CONFIRMATIONS` sweeps in a row before it is corrected, and then only by
/// the smallest gap seen.
#[derive(Default)]
struct DriftFilter {
    recent: BTreeMap<(u32, CountField), Vec<i64>>,
}

const CONFIRMATIONS: usize = 3;

impl DriftFilter {
    fn observe(&mut self, gaps: BTreeMap<(u32, CountField), i64>) -> Vec<((u32, CountField), i64)> {
        self.recent.retain(|k, _| gaps.contains_key(k));
        let mut corrections = Vec::new();
        for (key, gap) in gaps {
            let seen = self.recent.entry(key).or_default();
            if gap == 0 {
                seen.clear();
                continue;
            }
            seen.push(gap);
            if seen.len() > CONFIRMATIONS {
                seen.remove(0);
            }
            let same_sign = seen.iter().all(|g| g.signum() == gap.signum());
            if seen.len() == CONFIRMATIONS && same_sign {
                let smallest = seen.iter().map(|g| g.abs()).min().unwrap_or(0);
                corrections.push((key, -gap.signum() * smallest));
                seen.clear();
            }
        }
        corrections
    }
}

/// The health monitor's name for a service.
fn health_key(s: &ServiceConfig) -> health::ServiceKey {
    health::ServiceKey { protocol: s.protocol, vip: IpAddr::V4(s.vip), port: s.port }
}

/// The address a real server is checked at (its port; for an every-port
/// service the check's own port applies).
fn real_addr(s: &ServiceConfig, r: &crate::config::RealConfig) -> SocketAddr {
    let _ = s;
    SocketAddr::new(IpAddr::V4(r.address), r.port)
}

fn to_stats(c: lb_common::Counters) -> Stats {
    Stats {
        conns: c.conns,
        in_packets: c.in_packets,
        out_packets: c.out_packets,
        in_bytes: c.in_bytes,
        out_bytes: c.out_bytes,
    }
}

pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn service_name(s: &WantedService) -> String {
    format!("{} {}:{}", s.protocol.name().to_uppercase(), s.vip, s.port)
}

/// One log line per change an operator would care about.
pub fn describe_changes(before: &[WantedService], after: &[WantedService]) -> Vec<String> {
    let mut lines = Vec::new();
    let find = |list: &[WantedService], s: &WantedService| list.iter().find(|x| x.key() == s.key()).cloned();
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
        if before.iter().all(|b| b.key() != s.key()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(v: &[(u32, i64)]) -> BTreeMap<(u32, CountField), i64> {
        v.iter().map(|&(id, g)| ((id, CountField::Active), g)).collect()
    }

    #[test]
    fn a_passing_gap_is_left_alone() {
        let mut f = DriftFilter::default();
        assert!(f.observe(gaps(&[(1, 1)])).is_empty());
        assert!(f.observe(gaps(&[(1, 0)])).is_empty());
        assert!(f.observe(gaps(&[(1, 1)])).is_empty());
        assert!(f.observe(gaps(&[(1, -1)])).is_empty());
        assert!(f.observe(gaps(&[(1, 1)])).is_empty());
    }

    #[test]
    fn a_lasting_gap_is_closed_by_the_smallest_seen() {
        let mut f = DriftFilter::default();
        assert!(f.observe(gaps(&[(7, 5)])).is_empty());
        assert!(f.observe(gaps(&[(7, 3)])).is_empty());
        assert_eq!(f.observe(gaps(&[(7, 4)])), vec![((7, CountField::Active), -3)]);
        // Counted too few (evicted entries never counted down is the other way).
        let mut f = DriftFilter::default();
        for _ in 0..2 {
            assert!(f.observe(gaps(&[(2, -2)])).is_empty());
        }
        assert_eq!(f.observe(gaps(&[(2, -2)])), vec![((2, CountField::Active), 2)]);
    }
}
