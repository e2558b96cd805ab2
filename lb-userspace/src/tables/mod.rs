//! The controller's model of what the datapath maps hold, and the planning
//! of changes to them: ids for services and real servers, regions of the
//! shared scheduling-table and list arrays, and the order of writes that
//! keeps every packet seeing a consistent service.
//!
//! Planning is pure (it yields [`MapOp`]s); `datapath` executes them. That
//! keeps all id and region bookkeeping unit-testable without a kernel.
//!
//! This file holds the vocabulary ([`WantedService`], [`MapOp`]) and the
//! planner; `region` allocates the shared arrays' slot ranges, `walk`
//! continues rr and wrr walks across a rebuilt table, `adopt` takes over
//! the maps a previous lbd filled.

mod adopt;
mod region;
mod walk;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use lb_common::{
    FWMARK_MATCH_FIXED_BITS, FwmarkMatch, MAX_REALS, MAX_SERVICES, REAL_LIST_SLOTS, RealServer, SCHED_TABLE_SLOTS,
    Service, ServiceKey, ip_words, real_flag, sched, service_flag,
};

pub use self::adopt::Adopted;
use self::{
    region::{Region, RegionPool},
    walk::{WalkResume, fresh_walk, resume_walk},
};
use crate::model::{Forwarding, MarkMatch, Protocol, Scheduler, ServiceId, ServiceOptions, persistence_mask_words};

/// A virtual service as it should be, with everything resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct WantedService {
    pub protocol: Protocol,
    pub vip: IpAddr,
    pub port: u16,
    /// 0, or the firewall mark naming the service (`vip` then holds only
    /// its family, see [`ServiceId`]).
    pub fwmark: u32,
    /// A firewall-mark service's packets.
    pub matches: Vec<MarkMatch>,
    pub scheduler: Scheduler,
    pub options: ServiceOptions,
    /// In the order they were added (oldest first); the datapath keeps
    /// IPVS's order, the newest first.
    pub reals: Vec<WantedReal>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WantedReal {
    /// Of its service's VIP's family.
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub forwarding: Forwarding,
    /// The real server's MAC on the director's segment, once resolved. A
    /// real server without one takes no new connections.
    pub mac: Option<[u8; 6]>,
    /// TUN: the path MTU toward the server.
    pub mtu: u32,
    /// The director interface its frames leave by.
    pub port_out: TxPort,
    /// Connection thresholds (ipvsadm -x, -y); 0 = none.
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    /// False for a server its health check took out of the service: it
    /// leaves the list (as keepalived removes it from IPVS).
    pub in_service: bool,
    /// Out of service: its open connections move to a live server on their
    /// next packet (IPVS's expire_nodest_conn) instead of draining.
    pub expire_conns: bool,
}

/// A director interface frames leave by: its index (0: the one they came
/// in on) and MAC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxPort {
    pub ifindex: u32,
    pub mac: [u8; 6],
}

impl WantedService {
    pub fn id(&self) -> ServiceId {
        ServiceId { protocol: self.protocol, vip: self.vip, port: self.port, fwmark: self.fwmark }
    }

    /// Its key in the `SERVICES` map.
    pub fn key(&self) -> ServiceKey {
        if self.fwmark != 0 {
            return lb_common::fwmark_service_key(self.fwmark.to_be(), ip_words(self.vip).1);
        }
        service_key(self.protocol, self.vip, self.port)
    }
}

/// A key of `FWMARK_MATCHES`: its prefix length (bits) and data.
pub type MatchKey = (u32, FwmarkMatch);

/// The `FWMARK_MATCHES` entries of `wanted`'s firewall-mark services: each
/// (protocol, port, network) to its mark in network order.
fn fwmark_entries(wanted: &[WantedService]) -> BTreeMap<MatchKey, u32> {
    let mut entries = BTreeMap::new();
    for w in wanted.iter().filter(|w| w.fwmark != 0) {
        for m in &w.matches {
            let (addr, family) = ip_words(m.net);
            let prefix_len = FWMARK_MATCH_FIXED_BITS + u32::from(m.prefix_len);
            for &(first, last) in &m.ports {
                for port in first..=last {
                    let data = FwmarkMatch { protocol: m.protocol.number(), family, port: port.to_be(), addr };
                    entries.insert((prefix_len, data), w.fwmark.to_be());
                }
            }
        }
    }
    entries
}

/// Networks of a firewall-mark match up to this many addresses set the VIP
/// filter's bit of each address; a wider one turns the filter off (every
/// bit set: each packet is looked up, as when the filter is full).
pub const FILTERED_NET_ADDRESSES: u128 = 256;

/// Every address a match's network holds, if there are few enough to put
/// in the VIP filter one by one.
fn filter_addresses(m: &MarkMatch) -> Option<Vec<[u32; 4]>> {
    if m.addresses() > FILTERED_NET_ADDRESSES {
        return None;
    }
    let base = crate::model::net_bits(m.net, m.prefix_len);
    let ip = |n: u128| match m.net {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from_bits(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from_bits(n)),
    };
    Some((0..m.addresses()).map(|i| ip_words(ip(base + i)).0).collect())
}

use lb_common::NO_REAL;

/// The `SERVICES` key of a service: its VIP as [`ip_words`] stores it, with
/// its family.
pub fn service_key(protocol: Protocol, vip: impl Into<IpAddr>, port: u16) -> ServiceKey {
    let (addr, family) = ip_words(vip.into());
    ServiceKey { addr, port: port.to_be(), protocol: protocol.number(), family }
}

/// One write to the datapath maps, in the order they must happen.
#[derive(Clone, Debug, PartialEq)]
pub enum MapOp {
    SetReal(u32, RealServer),
    /// The counters of a real server slot newly taken into use.
    ZeroRealStats(u32),
    /// Write real server ids into `SCHED_TABLE` from `start`: always a region no
    /// service refers to yet (a later `SetService` points at it).
    SetSchedTable {
        start: u32,
        real_ids: Vec<u32>,
    },
    /// Write real server ids into `REAL_LISTS` from `start` (a region no service
    /// refers to yet, as for `SetSchedTable`).
    SetRealList {
        start: u32,
        real_ids: Vec<u32>,
    },
    /// The counters of a service id newly taken into use.
    ZeroServiceStats(u32),
    SetService(ServiceKey, Service),
    SetSchedPosition(u32, u64),
    DeleteService(ServiceKey),
    /// The whole VIP pre-filter (`VIP_FILTER_WORDS` words).
    SetVipFilter(Vec<u64>),
    /// A service's flags by id, for packets of known connections.
    SetServiceFlags(u32, u32),
    /// A firewall-mark match: packets it takes go to the service of `mark`
    /// (network order). It replaces the mark the entry had, if it had one
    /// (a trie's lookups are by longest prefix: the datapath could not
    /// read the exact entry back to undo the write).
    SetFwmarkMatch { key: MatchKey, mark: u32, replaced: Option<u32> },
    /// Removes the match, which held `mark`.
    DeleteFwmarkMatch { key: MatchKey, mark: u32 },
}

impl MapOp {
    /// The write in a few words, for messages.
    pub fn describe(&self) -> String {
        let service = |key: &ServiceKey| {
            if key.protocol == 0 {
                let v6 = if key.family == lb_common::AF_INET6 { " IPv6" } else { "" };
                return format!("fwmark {}{v6}", u32::from_be(key.addr[0]));
            }
            let protocol = Protocol::from_number(key.protocol).map_or("?", |p| p.name());
            let vip = lb_common::ip_from_words(key.addr, key.family);
            format!("{protocol} {}", SocketAddr::new(vip, u16::from_be(key.port)))
        };
        match self {
            MapOp::SetReal(id, _) => format!("real server {id}"),
            MapOp::ZeroRealStats(id) => format!("the counters of real server {id}"),
            MapOp::SetSchedTable { start, real_ids } => {
                format!("scheduling table slots {start}..{}", start + real_ids.len() as u32)
            }
            MapOp::SetRealList { start, real_ids } => {
                format!("real server list slots {start}..{}", start + real_ids.len() as u32)
            }
            MapOp::ZeroServiceStats(id) => format!("the counters of service {id}"),
            MapOp::SetService(key, _) => format!("service {}", service(key)),
            MapOp::SetSchedPosition(id, _) => format!("the scheduler position of service {id}"),
            MapOp::DeleteService(key) => format!("the removal of service {}", service(key)),
            MapOp::SetVipFilter(_) => "the VIP filter".into(),
            MapOp::SetServiceFlags(id, _) => format!("the flags of service {id}"),
            MapOp::SetFwmarkMatch { key, mark, .. } => {
                format!("{} of fwmark {}", fwmark_match(key), u32::from_be(*mark))
            }
            MapOp::DeleteFwmarkMatch { key, .. } => format!("the removal of {}", fwmark_match(key)),
        }
    }
}

/// "match tcp 10.0.0.0/24:80", for messages.
fn fwmark_match((prefix_len, m): &MatchKey) -> String {
    let protocol = Protocol::from_number(m.protocol).map_or("?", |p| p.name());
    let net = lb_common::ip_from_words(m.addr, m.family);
    format!("match {protocol} {net}/{}:{}", prefix_len - FWMARK_MATCH_FIXED_BITS, u16::from_be(m.port))
}

/// Changes planned against the model: the writes, and the model as it is
/// once the datapath has taken them ([`Tables::commit`]). Until then the
/// model stays as it was, so a plan the maps did not take leaves both as
/// they were.
#[must_use = "commit the plan once the datapath has executed its ops"]
#[derive(Debug)]
pub struct Planned {
    pub ops: Vec<MapOp>,
    next: Tables,
}

/// The real servers and services retired at some moment (see
/// [`Tables::release_unreferenced`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retired {
    pub reals: BTreeSet<u32>,
    pub services: BTreeSet<u32>,
}

#[derive(Clone, Debug)]
struct InstalledService {
    wanted: WantedService,
    id: u32,
    /// RealServer ids, IPVS order (newest first).
    real_ids: Vec<u32>,
    /// The effective weights (same order) the table was built from.
    table_weights: Vec<u32>,
    /// The table as written (real server ids, `NO_REAL` for an empty slot).
    table_ids: Vec<u32>,
    table: Region,
    list: Region,
    resume: WalkResume,
    /// The value in the `SERVICES` map.
    value: Service,
}

#[derive(Clone, Debug)]
struct InstalledReal {
    value: RealServer,
    service: ServiceKey,
    /// IPVS's `last_weight`: the latest non-zero weight (mh keeps a
    /// quiesced server's slots with it).
    last_weight: u32,
}

/// The datapath's configuration maps as the controller wrote them.
#[derive(Clone, Debug)]
pub struct Tables {
    services: BTreeMap<ServiceKey, InstalledService>,
    reals: BTreeMap<u32, InstalledReal>,
    /// Real servers removed from their service but kept while connections may
    /// still point at them (IPVS's trash), keyed by id.
    retired_reals: BTreeSet<u32>,
    /// Ids of removed services, kept while connections may point at them.
    retired_services: BTreeSet<u32>,
    free_service_ids: BTreeSet<u32>,
    free_real_ids: BTreeSet<u32>,
    table_space: RegionPool,
    list_space: RegionPool,
    /// Regions replaced by the last apply, released at the next one (by then
    /// no packet can still be reading them).
    pending_table_frees: Vec<Region>,
    pending_list_frees: Vec<Region>,
    /// The VIP pre-filter as written (empty: not written yet).
    vip_filter: Vec<u64>,
    /// `FWMARK_MATCHES` as written.
    fwmark_matches: BTreeMap<MatchKey, u32>,
}

impl Default for Tables {
    fn default() -> Self {
        Self::new()
    }
}

/// Why a change cannot be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("too many virtual services (the datapath holds {MAX_SERVICES})")]
    TooManyServices,
    #[error("too many real servers in all (the datapath holds {MAX_REALS})")]
    TooManyReals,
    #[error("the scheduling tables are full")]
    TableSpaceFull,
}

impl Tables {
    pub fn new() -> Self {
        Self {
            services: BTreeMap::new(),
            reals: BTreeMap::new(),
            retired_reals: BTreeSet::new(),
            retired_services: BTreeSet::new(),
            free_service_ids: (0..MAX_SERVICES).collect(),
            free_real_ids: (0..MAX_REALS).collect(),
            table_space: RegionPool::new(SCHED_TABLE_SLOTS),
            list_space: RegionPool::new(REAL_LIST_SLOTS),
            pending_table_frees: Vec::new(),
            pending_list_frees: Vec::new(),
            vip_filter: Vec::new(),
            fwmark_matches: BTreeMap::new(),
        }
    }

    /// The wanted services as last applied.
    pub fn wanted(&self) -> impl Iterator<Item = &WantedService> {
        self.services.values().map(|s| &s.wanted)
    }

    /// The service values as written to the datapath.
    pub fn installed_values(&self) -> impl Iterator<Item = &Service> {
        self.services.values().map(|s| &s.value)
    }

    pub fn service_id(&self, key: &ServiceKey) -> Option<u32> {
        self.services.get(key).map(|s| s.id)
    }

    /// RealServer ids of a service in IPVS order.
    pub fn service_reals(&self, key: &ServiceKey) -> &[u32] {
        self.services.get(key).map_or(&[], |s| &s.real_ids)
    }

    pub fn real(&self, id: u32) -> Option<&RealServer> {
        self.reals.get(&id).map(|d| &d.value)
    }

    /// Every real server slot in use (live or retired).
    pub fn real_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.reals.keys().copied()
    }

    /// Plans the writes that make the maps hold `wanted` (every service;
    /// services not listed are removed). `position` reads a service's current
    /// scheduler position from the datapath. The model changes only when
    /// the plan is committed.
    pub fn plan(&self, wanted: &[WantedService], position: &dyn Fn(u32) -> u64) -> Result<Planned, PlanError> {
        let mut next = self.clone();
        let ops = next.plan_in_place(wanted, position)?;
        Ok(Planned { ops, next })
    }

    /// The datapath took the plan's writes: the model is what they made.
    pub fn commit(&mut self, planned: Planned) {
        *self = planned.next;
    }

    fn plan_in_place(
        &mut self,
        wanted: &[WantedService],
        position: &dyn Fn(u32) -> u64,
    ) -> Result<Vec<MapOp>, PlanError> {
        let mut ops = Vec::new();
        for r in std::mem::take(&mut self.pending_table_frees) {
            self.table_space.release(r);
        }
        for r in std::mem::take(&mut self.pending_list_frees) {
            self.list_space.release(r);
        }

        // The filter first, so a new VIP's packets are not passed by it; a
        // removed VIP's bit going early only passes what is being removed.
        let mut filter = vec![0u64; lb_common::VIP_FILTER_WORDS as usize];
        let mark_addresses: Option<Vec<Vec<[u32; 4]>>> =
            wanted.iter().flat_map(|w| &w.matches).map(filter_addresses).collect();
        let vips = wanted.iter().filter(|w| w.fwmark == 0).map(|w| ip_words(w.vip).0);
        match mark_addresses {
            Some(lists) => {
                for addr in vips.chain(lists.into_iter().flatten()) {
                    let bit = lb_common::vip_filter_bit(&addr);
                    filter[(bit >> 6) as usize] |= 1 << (bit & 63);
                }
            }
            None => filter.fill(u64::MAX),
        }
        if filter != self.vip_filter {
            ops.push(MapOp::SetVipFilter(filter.clone()));
            self.vip_filter = filter;
        }

        // Matches go before their services and after them: a packet a
        // match takes finds its service.
        let matches = fwmark_entries(wanted);
        for (key, mark) in self.fwmark_matches.iter().filter(|(k, _)| !matches.contains_key(k)) {
            ops.push(MapOp::DeleteFwmarkMatch { key: *key, mark: *mark });
        }

        let wanted_keys: BTreeSet<ServiceKey> = wanted.iter().map(|w| w.key()).collect();
        let removed: Vec<ServiceKey> = self.services.keys().filter(|k| !wanted_keys.contains(k)).copied().collect();
        for key in removed {
            let svc = self.services.remove(&key).expect("listed");
            ops.push(MapOp::DeleteService(key));
            for id in &svc.real_ids {
                self.retire_real(*id, false, &mut ops);
            }
            self.retired_services.insert(svc.id);
            self.pending_table_frees.push(svc.table);
            self.pending_list_frees.push(svc.list);
        }

        for w in wanted {
            self.plan_service(w, position, &mut ops)?;
        }
        for (key, mark) in &matches {
            let replaced = self.fwmark_matches.get(key).copied();
            if replaced != Some(*mark) {
                ops.push(MapOp::SetFwmarkMatch { key: *key, mark: *mark, replaced });
            }
        }
        self.fwmark_matches = matches;
        Ok(ops)
    }

    fn retire_real(&mut self, id: u32, expire_conns: bool, ops: &mut Vec<MapOp>) {
        if let Some(d) = self.reals.get_mut(&id) {
            d.value.flags &= !real_flag::AVAILABLE;
            if expire_conns {
                d.value.flags |= real_flag::EXPIRE_CONNS;
            }
            ops.push(MapOp::SetReal(id, d.value));
            self.retired_reals.insert(id);
        }
    }

    fn plan_service(
        &mut self,
        w: &WantedService,
        position: &dyn Fn(u32) -> u64,
        ops: &mut Vec<MapOp>,
    ) -> Result<(), PlanError> {
        let key = w.key();
        let existing = self.services.remove(&key);
        let is_new = existing.is_none();
        let previous_value = existing.as_ref().map(|s| s.value);
        let id = match &existing {
            Some(s) => s.id,
            None => self.free_service_ids.pop_first().ok_or(PlanError::TooManyServices)?,
        };
        if is_new {
            ops.push(MapOp::ZeroServiceStats(id));
        }

        // IPVS order: real servers kept from before keep their relative order, new
        // ones go in front, later config entries in front of earlier ones.
        let old_real_ids: Vec<u32> = existing.as_ref().map_or(Vec::new(), |s| s.real_ids.clone());
        let mut kept = Vec::new();
        let mut added = Vec::new();
        let mut real_of: BTreeMap<u32, &WantedReal> = BTreeMap::new();
        let expiring: BTreeSet<[u32; 4]> = w
            .reals
            .iter()
            .filter(|r| !r.in_service && r.expire_conns)
            .map(|r| ip_words(r.address).0)
            .collect();
        for real in w.reals.iter().filter(|r| r.in_service) {
            let found = old_real_ids.iter().copied().find(|id| self.reals[id].value.addr == ip_words(real.address).0);
            let id = match found {
                Some(id) => {
                    kept.push(id);
                    id
                }
                None => {
                    let id = self.find_or_alloc_real(&key, real, ops)?;
                    added.push(id);
                    id
                }
            };
            real_of.insert(id, real);
        }
        for id in &old_real_ids {
            if !kept.contains(id) {
                let expire = expiring.contains(&self.reals[id].value.addr);
                self.retire_real(*id, expire, ops);
            }
        }
        let kept_in_old_order: Vec<u32> = old_real_ids.iter().copied().filter(|id| kept.contains(id)).collect();
        let mut real_ids: Vec<u32> = added.iter().rev().copied().collect();
        real_ids.extend(kept_in_old_order);

        // RealServer values.
        for &real_id in &real_ids {
            let real = real_of[&real_id];
            let value = real_value(real, id, w.port);
            let newly_added = added.contains(&real_id);
            let d = self.reals.get_mut(&real_id).expect("allocated");
            d.service = key;
            d.last_weight = sched::mh_last_weight(newly_added, d.last_weight, real.weight);
            if d.value != value {
                d.value = value;
                ops.push(MapOp::SetReal(real_id, value));
            }
        }

        // Scheduling table: a walk (rr, wrr) or a hash table (sh, dh, mh);
        // the others scan the list.
        let weights: Vec<u32> = real_ids.iter().map(|id| effective_weight(&self.reals[id].value)).collect();
        let slot = |i: Option<u32>| i.map_or(NO_REAL, |i| real_ids[i as usize]);
        let table_ids: Vec<u32> = match w.scheduler {
            Scheduler::Wrr => sched::wrr_table(&weights).into_iter().map(|i| slot(Some(i))).collect(),
            Scheduler::Rr => sched::rr_table(&weights).into_iter().map(|i| slot(Some(i))).collect(),
            Scheduler::Sh => {
                let weights: Vec<u32> = real_ids.iter().map(|id| self.reals[id].value.weight).collect();
                sched::sh_table(&weights).into_iter().map(slot).collect()
            }
            Scheduler::Dh => sched::dh_table(real_ids.len()).into_iter().map(slot).collect(),
            Scheduler::Mh => {
                let mh: Vec<sched::MhReal> = real_ids
                    .iter()
                    .map(|id| {
                        let d = &self.reals[id];
                        sched::MhReal { addr: d.value.addr, port_be: d.value.port, weight: d.last_weight }
                    })
                    .collect();
                let table = sched::mh_table(&mh, lb_common::hash::MH_DEFAULT_TAB_SIZE);
                match (table.is_empty(), &existing) {
                    // IPVS keeps its old table when it cannot build one.
                    (true, Some(old)) => old.table_ids.clone(),
                    _ => table.into_iter().map(slot).collect(),
                }
            }
            _ => Vec::new(),
        };
        let is_walk = matches!(w.scheduler, Scheduler::Rr | Scheduler::Wrr);

        let (table, list, resume, position_op) = match existing {
            Some(old)
                if old.real_ids == real_ids
                    && old.table_ids == table_ids
                    && (!is_walk || old.table_weights == weights)
                    && old.wanted.scheduler == w.scheduler =>
            {
                (old.table, old.list, old.resume, None)
            }
            old => {
                let table = self.table_space.alloc(table_ids.len() as u32).ok_or(PlanError::TableSpaceFull)?;
                let list = self.list_space.alloc(real_ids.len() as u32).ok_or(PlanError::TableSpaceFull)?;
                ops.push(MapOp::SetSchedTable { start: table.start, real_ids: table_ids.clone() });
                ops.push(MapOp::SetRealList { start: list.start, real_ids: real_ids.clone() });
                let resume = match &old {
                    Some(old) if old.wanted.scheduler == w.scheduler => {
                        resume_walk(w.scheduler, old, position(old.id), &real_ids, &weights)
                    }
                    // A new scheduler starts on the whole list at once.
                    Some(_) => fresh_walk(w.scheduler, &weights, false),
                    // A new service gets its servers one by one.
                    None => fresh_walk(w.scheduler, &weights, true),
                };
                if let Some(old) = &old {
                    self.pending_table_frees.push(old.table);
                    self.pending_list_frees.push(old.list);
                }
                let op = MapOp::SetSchedPosition(id, resume.position);
                (table, list, resume, Some(op))
            }
        };

        let value = Service {
            id,
            scheduler: w.scheduler.code(),
            pad0: 0,
            flags: w.options.flags
                | match (w.fwmark, w.port) {
                    (0, 0) => service_flag::ALL_PORTS,
                    (0, _) => 0,
                    _ => service_flag::FWMARK,
                },
            table_start: table.start,
            table_len: table.len,
            reals_start: list.start,
            reals_len: list.len,
            persistence_timeout: w.options.persistence_timeout.unwrap_or(0),
            fwmark: w.fwmark.to_be(),
            persistence_mask: persistence_mask_words(w.options.persistence_netmask),
        };
        // The position goes first when the service is new (nothing reads it
        // yet); otherwise after the swap, so the old table never sees it.
        if is_new {
            ops.extend(position_op.clone());
        }
        if previous_value.map(|v| v.flags) != Some(value.flags) {
            ops.push(MapOp::SetServiceFlags(id, value.flags as u32));
        }
        if previous_value != Some(value) {
            ops.push(MapOp::SetService(key, value));
        }
        if !is_new {
            ops.extend(position_op);
        }
        self.services.insert(
            key,
            InstalledService {
                wanted: w.clone(),
                id,
                real_ids,
                table_weights: weights,
                table_ids,
                table,
                list,
                resume,
                value,
            },
        );
        Ok(())
    }

    fn find_or_alloc_real(
        &mut self,
        key: &ServiceKey,
        real: &WantedReal,
        ops: &mut Vec<MapOp>,
    ) -> Result<u32, PlanError> {
        // A server removed a moment ago comes back with its connections and
        // counters, as IPVS takes a real server back from its trash.
        // The service key holds the family: one service's servers are of one.
        let addr = ip_words(real.address).0;
        let revived = self
            .retired_reals
            .iter()
            .copied()
            .find(|id| self.reals[id].service == *key && self.reals[id].value.addr == addr);
        if let Some(id) = revived {
            self.retired_reals.remove(&id);
            return Ok(id);
        }
        let id = self.free_real_ids.pop_first().ok_or(PlanError::TooManyReals)?;
        self.reals.insert(id, InstalledReal { value: RealServer::default(), service: *key, last_weight: real.weight });
        ops.push(MapOp::ZeroRealStats(id));
        Ok(id)
    }

    /// The real servers and services retired now, still kept for the connections
    /// that may refer to them.
    pub fn retired(&self) -> Retired {
        Retired { reals: self.retired_reals.clone(), services: self.retired_services.clone() }
    }

    /// Frees the retired real servers and services of `candidates` (retired when a
    /// walk of the connection table began: none can get a connection after
    /// that) that are still retired and that no connection of the walk
    /// referred to (`referenced`: the real server and service ids it found).
    /// Planned as the ops that clear their slots.
    pub fn release_unreferenced(
        &self,
        candidates: &Retired,
        referenced_reals: &BTreeSet<u32>,
        referenced_services: &BTreeSet<u32>,
    ) -> Planned {
        let mut next = self.clone();
        let mut ops = Vec::new();
        let done: Vec<u32> = candidates
            .reals
            .iter()
            .copied()
            .filter(|id| next.retired_reals.contains(id) && !referenced_reals.contains(id))
            .collect();
        for id in done {
            next.retired_reals.remove(&id);
            next.reals.remove(&id);
            next.free_real_ids.insert(id);
            ops.push(MapOp::SetReal(id, RealServer::default()));
        }
        let done: Vec<u32> = candidates
            .services
            .iter()
            .copied()
            .filter(|id| next.retired_services.contains(id) && !referenced_services.contains(id))
            .collect();
        for id in done {
            next.retired_services.remove(&id);
            next.free_service_ids.insert(id);
        }
        Planned { ops, next }
    }
}

/// The value the datapath holds for a real server.
fn real_value(real: &WantedReal, service_id: u32, vport: u16) -> RealServer {
    // Without its next hop's MAC a server cannot be sent to.
    let flags = if real.mac.is_some() { real_flag::AVAILABLE } else { 0 };
    let (addr, family) = ip_words(real.address);
    RealServer {
        addr,
        port: if real.port == 0 { vport.to_be() } else { real.port.to_be() },
        family,
        forwarding: real.forwarding.code(),
        mac: real.mac.unwrap_or([0; 6]),
        mtu: real.mtu.min(u16::MAX as u32) as u16,
        weight: real.weight,
        flags,
        service_id,
        upper_threshold: real.upper_threshold,
        lower_threshold: real.lower_threshold,
        ifindex: real.port_out.ifindex,
        src_mac: real.port_out.mac,
        pad0: [0; 2],
    }
}

/// The weight the scheduler uses: 0 for a server that cannot take new
/// connections now.
fn effective_weight(d: &RealServer) -> u32 {
    if d.flags & real_flag::AVAILABLE == 0 { 0 } else { d.weight }
}

#[cfg(test)]
mod tests;
