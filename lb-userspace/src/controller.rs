//! lbd's state and what it does with it: turn the config into the wanted
//! table, apply it to the datapath, answer the control socket, sweep the
//! connection table, estimate rates.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::Result;
use lb_common::{Conn, Director, FlowKey, Service, conn_state, flow_kind, ipv4_octets, service_flag};

use crate::{
    config::Config,
    environment::{Paths, next_hop_addresses},
    datapath::{CountField, Datapath},
    netinfo::Interface,
    rate::Estimator,
    snapshot::{self, Connection, Stats},
    tables::{Tables, WantedReal, WantedService},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Counted {
    Service(u32),
    Dest(u32),
}

pub struct Controller {
    pub config: Config,
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

/// Seconds since boot on the clock the datapath stamps entries with.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

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
        let mut c =
            Self { config, interface, datapath, tables, paths, macs, estimators: BTreeMap::new(), drift: DriftFilter::default() };
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
            ..Director::default()
        }
    }

    /// The outer source of TUN packets: configured, or the interface's own
    /// address (the first that is not a VIP).
    pub fn tun_source(&self) -> Option<Ipv4Addr> {
        self.config.director.tun_source.or_else(|| {
            let vips: BTreeSet<Ipv4Addr> = self.config.services.iter().map(|s| s.vip).collect();
            self.interface.ipv4.iter().copied().find(|a| !vips.contains(a))
        })
    }

    /// The table the config asks for, with what is known of each server.
    pub fn wanted(&self) -> Vec<WantedService> {
        self.config
            .services
            .iter()
            .map(|s| WantedService {
                protocol: s.protocol,
                vip: s.vip,
                port: s.port,
                scheduler: s.scheduler,
                options: s.options,
                reals: s
                    .reals
                    .iter()
                    .map(|r| {
                        let hop = self.paths.get(&(r.address, r.forwarding));
                        WantedReal {
                        address: r.address,
                        port: r.port,
                        weight: r.weight,
                        forwarding: r.forwarding,
                        mac: hop.and_then(|h| self.macs.get(&h.address).copied()),
                        mtu: hop.map_or(0, |h| h.mtu),
                        upper_threshold: r.upper_threshold,
                        lower_threshold: r.lower_threshold,
                    }})
                    .collect(),
            })
            .collect()
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

    /// Takes a new config (already checked against the host).
    pub fn reload(&mut self, config: Config, interface: Interface, paths: Paths) -> Result<()> {
        let old = std::mem::replace(&mut self.config, config);
        let old_interface = std::mem::replace(&mut self.interface, interface);
        let old_paths = std::mem::replace(&mut self.paths, paths);
        if let Err(e) = self.apply() {
            self.config = old;
            self.interface = old_interface;
            self.paths = old_paths;
            return Err(e);
        }
        Ok(())
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
        let now = monotonic_ns();
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
        let mut templates: Vec<(FlowKey, Conn)> = Vec::new();
        for (key, conn) in self.datapath.connections()? {
            let conn = if is_expired(&conn, now) {
                // Check again right before deleting: the datapath may have
                // reused the entry for a new connection meanwhile.
                match self.datapath.connection(&key) {
                    Some(c) if is_expired(&c, monotonic_ns()) => {
                        self.datapath.remove_connection(&key)?;
                        self.datapath.add_dest_conns(c.dest_id, c.state, -1);
                        continue;
                    }
                    Some(c) => c,
                    None => continue,
                }
            } else {
                conn
            };
            used_dests.insert(conn.dest_id);
            used_services.insert(conn.service_id);
            *exact.entry((conn.dest_id, count_field(&key, conn.state))).or_default() += 1;
            if key.kind == flow_kind::TEMPLATE {
                templates.push((key, conn));
            } else if let Some(svc) = persistent.get(&conn.service_id) {
                controlling.insert(template_key(svc, &key), conn.dest_id);
            }
        }
        for (key, mut template) in templates {
            if controlling.get(&key) == Some(&template.dest_id) {
                let assured = if template.state == conn_state::TEMPLATE_NONE { conn_state::TEMPLATE_ASSURED } else { template.state };
                template.last_seen_ns = template.last_seen_ns.max(monotonic_ns());
                template.state = assured;
                self.datapath.set_connection(&key, &template)?;
            }
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
        let now = monotonic_ns();
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
        out.sort_by(|a, b| (a.vip, a.vport, a.client, a.client_port).cmp(&(b.vip, b.vport, b.client, b.client_port)));
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

/// The persistence template a connection of this service belongs to (the
/// datapath's `template_key`).
fn template_key(svc: &Service, conn: &FlowKey) -> FlowKey {
    let m = svc.persistence_mask;
    FlowKey {
        src: [conn.src[0] & m[0], conn.src[1] & m[1], conn.src[2] & m[2], conn.src[3] & m[3]],
        dst: conn.dst,
        sport: 0,
        dport: if svc.flags & service_flag::ALL_PORTS != 0 { 0 } else { conn.dport },
        protocol: conn.protocol,
        family: conn.family,
        kind: flow_kind::TEMPLATE,
        pad0: 0,
    }
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
