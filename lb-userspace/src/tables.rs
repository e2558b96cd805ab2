//! The controller's model of what the datapath maps hold, and the planning
//! of changes to them: ids for services and real servers, regions of the
//! shared scheduling-table and list arrays, and the order of writes that
//! keeps every packet seeing a consistent service.
//!
//! Planning is pure (it yields [`MapOp`]s); `datapath` executes them. That
//! keeps all id and region bookkeeping unit-testable without a kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use lb_common::{
    AF_INET, DEST_LIST_SLOTS, Dest, MAX_DESTS, MAX_SERVICES, SCHED_TABLE_SLOTS, Service, ServiceKey,
    dest_flag, ipv4_words, sched, service_flag,
};

use crate::model::{Forwarding, Protocol, Scheduler, ServiceOptions};

/// A virtual service as it should be, with everything resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct WantedService {
    pub protocol: Protocol,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub scheduler: Scheduler,
    pub options: ServiceOptions,
    /// In the order they were added (oldest first); the datapath keeps
    /// IPVS's order, the newest first.
    pub reals: Vec<WantedReal>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WantedReal {
    pub address: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub forwarding: Forwarding,
    /// The real server's MAC on the director's segment, once resolved. A
    /// real server without one takes no new connections.
    pub mac: Option<[u8; 6]>,
    /// TUN: the path MTU toward the server.
    pub mtu: u32,
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

impl WantedService {
    pub fn key(&self) -> ServiceKey {
        service_key(self.protocol, self.vip, self.port)
    }
}

use lb_common::NO_DEST;

pub fn service_key(protocol: Protocol, vip: Ipv4Addr, port: u16) -> ServiceKey {
    ServiceKey { addr: ipv4_words(vip.octets()), port: port.to_be(), protocol: protocol.number(), family: AF_INET }
}

/// One write to the datapath maps, in the order they must happen.
#[derive(Clone, Debug, PartialEq)]
pub enum MapOp {
    SetDest(u32, Dest),
    ZeroDestStats(u32),
    /// Write dest ids into `SCHED_TABLE` from `start`.
    SetSchedTable { start: u32, dest_ids: Vec<u32> },
    /// Write dest ids into `DEST_LISTS` from `start`.
    SetDestList { start: u32, dest_ids: Vec<u32> },
    ZeroServiceStats(u32),
    SetService(ServiceKey, Service),
    SetSchedPosition(u32, u64),
    DeleteService(ServiceKey),
    /// The whole VIP pre-filter (`VIP_FILTER_WORDS` words).
    SetVipFilter(Vec<u64>),
    /// A service's flags by id, for packets of known connections.
    SetServiceFlags(u32, u32),
}

/// The maps' content as a previous lbd left it (`Datapath::read_back`), for
/// [`Tables::adopt`].
pub struct Adopted {
    pub services: Vec<(ServiceKey, Service)>,
    pub dests: BTreeMap<u32, Dest>,
    /// Each service's dest ids in IPVS order.
    pub service_dests: BTreeMap<ServiceKey, Vec<u32>>,
    /// Each service's scheduling table.
    pub tables: BTreeMap<ServiceKey, Vec<u32>>,
    pub positions: BTreeMap<u32, u64>,
}

/// A range of slots in one of the shared arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Region {
    start: u32,
    len: u32,
}

/// First-fit allocator of slot ranges.
#[derive(Clone, Debug)]
struct RegionPool {
    /// Free ranges by start.
    free: BTreeMap<u32, u32>,
}

impl RegionPool {
    fn new(size: u32) -> Self {
        Self { free: BTreeMap::from([(0, size)]) }
    }

    fn alloc(&mut self, len: u32) -> Option<Region> {
        if len == 0 {
            return Some(Region { start: 0, len: 0 });
        }
        let (&start, &free_len) = self.free.iter().find(|&(_, &l)| l >= len)?;
        self.free.remove(&start);
        if free_len > len {
            self.free.insert(start + len, free_len - len);
        }
        Some(Region { start, len })
    }

    fn release(&mut self, r: Region) {
        if r.len == 0 {
            return;
        }
        let mut start = r.start;
        let mut len = r.len;
        // Merge with the neighbours on both sides.
        if let Some((&s, &l)) = self.free.range(..start).next_back()
            && s + l == start
        {
            self.free.remove(&s);
            start = s;
            len += l;
        }
        if let Some(&l) = self.free.get(&(r.start + r.len)) {
            self.free.remove(&(r.start + r.len));
            len += l;
        }
        self.free.insert(start, len);
    }

    /// Marks a region as used (when adopting maps a previous lbd filled).
    fn take(&mut self, r: Region) -> bool {
        if r.len == 0 {
            return true;
        }
        let Some((&s, &l)) = self.free.range(..=r.start).next_back() else { return false };
        if s + l < r.start + r.len {
            return false;
        }
        self.free.remove(&s);
        if r.start > s {
            self.free.insert(s, r.start - s);
        }
        if s + l > r.start + r.len {
            self.free.insert(r.start + r.len, s + l - r.start - r.len);
        }
        true
    }
}

/// Where a scheduler walk stands, to continue it as IPVS would after the
/// table is rebuilt.
#[derive(Clone, Debug, PartialEq)]
struct WalkResume {
    /// The position the current table was entered at.
    position: u64,
    /// rr: the dest the walk stood on then (`None` = the list head).
    rr_last: Option<u32>,
    /// wrr: the current weight then.
    wrr_cw: i64,
}

#[derive(Clone, Debug)]
struct InstalledService {
    wanted: WantedService,
    id: u32,
    /// Dest ids, IPVS order (newest first).
    dests: Vec<u32>,
    /// The effective weights (same order) the table was built from.
    table_weights: Vec<u32>,
    /// The table as written (dest ids, `NO_DEST` for an empty slot).
    table_ids: Vec<u32>,
    table: Region,
    list: Region,
    resume: WalkResume,
    /// The value in the `SERVICES` map.
    value: Service,
}

#[derive(Clone, Debug)]
struct InstalledDest {
    value: Dest,
    service: ServiceKey,
    /// IPVS's `last_weight`: the latest non-zero weight (mh keeps a
    /// quiesced server's slots with it).
    last_weight: u32,
}

/// The datapath's configuration maps as the controller wrote them.
#[derive(Clone, Debug)]
pub struct Tables {
    services: BTreeMap<ServiceKey, InstalledService>,
    dests: BTreeMap<u32, InstalledDest>,
    /// Dests removed from their service but kept while connections may
    /// still point at them (IPVS's trash), keyed by id.
    retired_dests: BTreeSet<u32>,
    /// Ids of removed services, kept while connections may point at them.
    retired_services: BTreeSet<u32>,
    free_service_ids: BTreeSet<u32>,
    free_dest_ids: BTreeSet<u32>,
    table_space: RegionPool,
    list_space: RegionPool,
    /// Regions replaced by the last apply, released at the next one (by then
    /// no packet can still be reading them).
    pending_table_frees: Vec<Region>,
    pending_list_frees: Vec<Region>,
    /// The VIP pre-filter as written (empty: not written yet).
    vip_filter: Vec<u64>,
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
    #[error("too many real servers in all (the datapath holds {MAX_DESTS})")]
    TooManyDests,
    #[error("the scheduling tables are full")]
    TableSpaceFull,
}

impl Tables {
    pub fn new() -> Self {
        Self {
            services: BTreeMap::new(),
            dests: BTreeMap::new(),
            retired_dests: BTreeSet::new(),
            retired_services: BTreeSet::new(),
            free_service_ids: (0..MAX_SERVICES).collect(),
            free_dest_ids: (0..MAX_DESTS).collect(),
            table_space: RegionPool::new(SCHED_TABLE_SLOTS),
            list_space: RegionPool::new(DEST_LIST_SLOTS),
            pending_table_frees: Vec::new(),
            pending_list_frees: Vec::new(),
            vip_filter: Vec::new(),
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

    /// Dest ids of a service in IPVS order.
    pub fn service_dests(&self, key: &ServiceKey) -> &[u32] {
        self.services.get(key).map_or(&[], |s| &s.dests)
    }

    pub fn dest(&self, id: u32) -> Option<&Dest> {
        self.dests.get(&id).map(|d| &d.value)
    }

    /// Every dest slot in use (live or retired).
    pub fn dest_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.dests.keys().copied()
    }

    /// Plans the writes that make the maps hold `wanted` (every service;
    /// services not listed are removed). `position` reads a service's current
    /// scheduler position from the datapath.
    pub fn plan(&mut self, wanted: &[WantedService], position: &dyn Fn(u32) -> u64) -> Result<Vec<MapOp>, PlanError> {
        // Work on a copy so a failed plan leaves the model untouched.
        let mut next = self.clone();
        let ops = next.plan_in_place(wanted, position)?;
        *self = next;
        Ok(ops)
    }

    fn plan_in_place(&mut self, wanted: &[WantedService], position: &dyn Fn(u32) -> u64) -> Result<Vec<MapOp>, PlanError> {
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
        for w in wanted {
            let bit = lb_common::vip_filter_bit(ipv4_words(w.vip.octets())[0]);
            filter[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        if filter != self.vip_filter {
            ops.push(MapOp::SetVipFilter(filter.clone()));
            self.vip_filter = filter;
        }

        let wanted_keys: BTreeSet<ServiceKey> = wanted.iter().map(|w| w.key()).collect();
        let removed: Vec<ServiceKey> = self.services.keys().filter(|k| !wanted_keys.contains(k)).copied().collect();
        for key in removed {
            let svc = self.services.remove(&key).expect("listed");
            ops.push(MapOp::DeleteService(key));
            for id in &svc.dests {
                self.retire_dest(*id, false, &mut ops);
            }
            self.retired_services.insert(svc.id);
            self.pending_table_frees.push(svc.table);
            self.pending_list_frees.push(svc.list);
        }

        for w in wanted {
            self.plan_service(w, position, &mut ops)?;
        }
        Ok(ops)
    }

    fn retire_dest(&mut self, id: u32, expire_conns: bool, ops: &mut Vec<MapOp>) {
        if let Some(d) = self.dests.get_mut(&id) {
            d.value.flags &= !dest_flag::AVAILABLE;
            if expire_conns {
                d.value.flags |= dest_flag::EXPIRE_CONNS;
            }
            ops.push(MapOp::SetDest(id, d.value));
            self.retired_dests.insert(id);
        }
    }

    fn plan_service(&mut self, w: &WantedService, position: &dyn Fn(u32) -> u64, ops: &mut Vec<MapOp>) -> Result<(), PlanError> {
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

        // IPVS order: dests kept from before keep their relative order, new
        // ones go in front, later config entries in front of earlier ones.
        let old_dests: Vec<u32> = existing.as_ref().map_or(Vec::new(), |s| s.dests.clone());
        let mut kept = Vec::new();
        let mut added = Vec::new();
        let mut real_of: BTreeMap<u32, &WantedReal> = BTreeMap::new();
        let expiring: BTreeSet<[u32; 4]> = w
            .reals
            .iter()
            .filter(|r| !r.in_service && r.expire_conns)
            .map(|r| ipv4_words(r.address.octets()))
            .collect();
        for real in w.reals.iter().filter(|r| r.in_service) {
            let found = old_dests.iter().copied().find(|id| self.dests[id].value.addr == ipv4_words(real.address.octets()));
            let id = match found {
                Some(id) => {
                    kept.push(id);
                    id
                }
                None => {
                    let id = self.find_or_alloc_dest(&key, real, ops)?;
                    added.push(id);
                    id
                }
            };
            real_of.insert(id, real);
        }
        for id in &old_dests {
            if !kept.contains(id) {
                let expire = expiring.contains(&self.dests[id].value.addr);
                self.retire_dest(*id, expire, ops);
            }
        }
        let kept_in_old_order: Vec<u32> = old_dests.iter().copied().filter(|id| kept.contains(id)).collect();
        let mut dests: Vec<u32> = added.iter().rev().copied().collect();
        dests.extend(kept_in_old_order);

        // Dest values.
        for &dest_id in &dests {
            let real = real_of[&dest_id];
            let value = dest_value(real, id, w.port);
            let newly_added = added.contains(&dest_id);
            let d = self.dests.get_mut(&dest_id).expect("allocated");
            d.service = key;
            d.last_weight = sched::mh_last_weight(newly_added, d.last_weight, real.weight);
            if d.value != value {
                d.value = value;
                ops.push(MapOp::SetDest(dest_id, value));
            }
        }

        // Scheduling table: a walk (rr, wrr) or a hash table (sh, dh, mh);
        // the others scan the list.
        let weights: Vec<u32> = dests.iter().map(|id| effective_weight(&self.dests[id].value)).collect();
        let slot = |i: Option<u32>| i.map_or(NO_DEST, |i| dests[i as usize]);
        let table_ids: Vec<u32> = match w.scheduler {
            Scheduler::Wrr => sched::wrr_table(&weights).into_iter().map(|i| slot(Some(i))).collect(),
            Scheduler::Rr => sched::rr_table(&weights).into_iter().map(|i| slot(Some(i))).collect(),
            Scheduler::Sh => {
                let weights: Vec<u32> = dests.iter().map(|id| self.dests[id].value.weight).collect();
                sched::sh_table(&weights).into_iter().map(slot).collect()
            }
            Scheduler::Dh => sched::dh_table(dests.len()).into_iter().map(slot).collect(),
            Scheduler::Mh => {
                let mh: Vec<sched::MhDest> = dests
                    .iter()
                    .map(|id| {
                        let d = &self.dests[id];
                        sched::MhDest { addr: d.value.addr, port_be: d.value.port, weight: d.last_weight }
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
                if old.dests == dests
                    && old.table_ids == table_ids
                    && (!is_walk || old.table_weights == weights)
                    && old.wanted.scheduler == w.scheduler =>
            {
                (old.table, old.list, old.resume, None)
            }
            old => {
                let table = self.table_space.alloc(table_ids.len() as u32).ok_or(PlanError::TableSpaceFull)?;
                let list = self.list_space.alloc(dests.len() as u32).ok_or(PlanError::TableSpaceFull)?;
                ops.push(MapOp::SetSchedTable { start: table.start, dest_ids: table_ids.clone() });
                ops.push(MapOp::SetDestList { start: list.start, dest_ids: dests.clone() });
                let resume = match &old {
                    Some(old) if old.wanted.scheduler == w.scheduler => {
                        resume_walk(w.scheduler, old, position(old.id), &dests, &weights)
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
            flags: w.options.flags | if w.port == 0 { service_flag::ALL_PORTS } else { 0 },
            table_start: table.start,
            table_len: table.len,
            dests_start: list.start,
            dests_len: list.len,
            persistence_timeout: w.options.persistence_timeout.unwrap_or(0),
            pad1: 0,
            persistence_mask: ipv4_words(w.options.persistence_netmask.octets()),
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
            InstalledService { wanted: w.clone(), id, dests, table_weights: weights, table_ids, table, list, resume, value },
        );
        Ok(())
    }

    fn find_or_alloc_dest(&mut self, key: &ServiceKey, real: &WantedReal, ops: &mut Vec<MapOp>) -> Result<u32, PlanError> {
        // A server removed a moment ago comes back with its connections and
        // counters, as IPVS takes a dest back from its trash.
        let addr = ipv4_words(real.address.octets());
        let revived = self
            .retired_dests
            .iter()
            .copied()
            .find(|id| self.dests[id].service == *key && self.dests[id].value.addr == addr);
        if let Some(id) = revived {
            self.retired_dests.remove(&id);
            return Ok(id);
        }
        let id = self.free_dest_ids.pop_first().ok_or(PlanError::TooManyDests)?;
        self.dests.insert(id, InstalledDest { value: Dest::default(), service: *key, last_weight: real.weight });
        ops.push(MapOp::ZeroDestStats(id));
        Ok(id)
    }

    /// Rebuilds the model from maps a previous lbd filled, so the next plan
    /// changes only what differs and every connection keeps its server.
    pub fn adopt(adopted: &Adopted) -> Self {
        let mut t = Self::new();
        for (key, value) in &adopted.services {
            let ids = adopted.service_dests.get(key).cloned().unwrap_or_default();
            let (Some(protocol), Some(scheduler)) =
                (Protocol::from_number(key.protocol), Scheduler::from_code(value.scheduler))
            else {
                continue;
            };
            let vip = Ipv4Addr::from(lb_common::ipv4_octets(key.addr));
            let port = u16::from_be(key.port);
            let mut reals = Vec::new();
            for id in ids.iter().rev() {
                let Some(d) = adopted.dests.get(id) else { continue };
                reals.push(WantedReal {
                    address: Ipv4Addr::from(lb_common::ipv4_octets(d.addr)),
                    port: if port == 0 { 0 } else { u16::from_be(d.port) },
                    weight: d.weight,
                    forwarding: Forwarding::from_code(d.forwarding).unwrap_or(Forwarding::Dr),
                    mac: (d.flags & dest_flag::AVAILABLE != 0).then_some(d.mac),
                    mtu: d.mtu as u32,
                    upper_threshold: d.upper_threshold,
                    lower_threshold: d.lower_threshold,
                    in_service: true,
                    expire_conns: false,
                });
                t.dests.insert(*id, InstalledDest { value: *d, service: *key, last_weight: d.weight });
                t.free_dest_ids.remove(id);
            }
            let weights: Vec<u32> = ids.iter().map(|id| adopted.dests.get(id).map_or(0, effective_weight)).collect();
            let table = Region { start: value.table_start, len: value.table_len };
            let list = Region { start: value.dests_start, len: value.dests_len };
            t.table_space.take(table);
            t.list_space.take(list);
            t.free_service_ids.remove(&value.id);
            // Where the walk stands, as well as the position tells.
            let position = adopted.positions.get(&value.id).copied().unwrap_or(0);
            let rr_table = sched::rr_table(&weights);
            let rr_last = (position > 0 && !rr_table.is_empty())
                .then(|| ids[rr_table[((position - 1) % rr_table.len() as u64) as usize] as usize]);
            let resume = WalkResume { position, rr_last, wrr_cw: sched::wrr_current_weight_at(&weights, position) };
            let options = ServiceOptions {
                flags: value.flags & !service_flag::ALL_PORTS,
                persistence_timeout: (value.persistence_timeout > 0).then_some(value.persistence_timeout),
                persistence_netmask: Ipv4Addr::from(lb_common::ipv4_octets(value.persistence_mask)),
            };
            let table_ids = adopted.tables.get(key).cloned().unwrap_or_default();
            let wanted = WantedService { protocol, vip, port, scheduler, options, reals };
            t.services.insert(
                *key,
                InstalledService {
                    wanted,
                    id: value.id,
                    dests: ids,
                    table_weights: weights,
                    table_ids,
                    table,
                    list,
                    resume,
                    value: *value,
                },
            );
        }
        // Dests in no service's list were retired; connections may use them.
        for (id, d) in &adopted.dests {
            if !t.dests.contains_key(id) {
                t.dests.insert(*id, InstalledDest { value: *d, service: ServiceKey::default(), last_weight: d.weight });
                t.free_dest_ids.remove(id);
                t.retired_dests.insert(*id);
            }
        }
        t
    }

    /// Frees retired dests and services that no connection refers to any
    /// more (`referenced` holds the dest and service ids found in the
    /// connection table). Returns the ops that clear their slots.
    pub fn release_unreferenced(&mut self, referenced_dests: &BTreeSet<u32>, referenced_services: &BTreeSet<u32>) -> Vec<MapOp> {
        let mut ops = Vec::new();
        let done: Vec<u32> = self.retired_dests.iter().copied().filter(|id| !referenced_dests.contains(id)).collect();
        for id in done {
            self.retired_dests.remove(&id);
            self.dests.remove(&id);
            self.free_dest_ids.insert(id);
            ops.push(MapOp::SetDest(id, Dest::default()));
        }
        let done: Vec<u32> = self.retired_services.iter().copied().filter(|id| !referenced_services.contains(id)).collect();
        for id in done {
            self.retired_services.remove(&id);
            self.free_service_ids.insert(id);
        }
        ops
    }
}

/// The value the datapath holds for a real server.
fn dest_value(real: &WantedReal, service_id: u32, vport: u16) -> Dest {
    // Without its next hop's MAC a server cannot be sent to.
    let flags = if real.mac.is_some() { dest_flag::AVAILABLE } else { 0 };
    Dest {
        addr: ipv4_words(real.address.octets()),
        port: if real.port == 0 { vport.to_be() } else { real.port.to_be() },
        family: AF_INET,
        forwarding: real.forwarding.code(),
        mac: real.mac.unwrap_or([0; 6]),
        mtu: real.mtu.min(u16::MAX as u32) as u16,
        weight: real.weight,
        flags,
        service_id,
        upper_threshold: real.upper_threshold,
        lower_threshold: real.lower_threshold,
    }
}

/// The weight the scheduler uses: 0 for a server that cannot take new
/// connections now.
fn effective_weight(d: &Dest) -> u32 {
    if d.flags & dest_flag::AVAILABLE == 0 { 0 } else { d.weight }
}

/// Where a new service's walk starts: rr at the list head; wrr at IPVS's
/// current weight after its servers were added one by one, or (a scheduler
/// change) all at once.
fn fresh_walk(scheduler: Scheduler, weights: &[u32], one_by_one: bool) -> WalkResume {
    match scheduler {
        Scheduler::Wrr => {
            let cw = if one_by_one {
                sched::wrr_cw_after_adding(weights)
            } else {
                sched::wrr_changed_cw(0, weights)
            };
            WalkResume { position: sched::wrr_resume_position(weights, cw), rr_last: None, wrr_cw: cw }
        }
        _ => WalkResume { position: 0, rr_last: None, wrr_cw: 0 },
    }
}

/// Where the walk continues in the rebuilt table so the choices go on as
/// IPVS's would after the same change. `position` is the datapath's current
/// position in the old table.
fn resume_walk(scheduler: Scheduler, old: &InstalledService, position: u64, dests: &[u32], weights: &[u32]) -> WalkResume {
    let untouched = position == old.resume.position;
    match scheduler {
        Scheduler::Wrr => {
            let cw = if untouched { old.resume.wrr_cw } else { sched::wrr_current_weight_at(&old.table_weights, position) };
            let cw = sched::wrr_changed_cw(cw, weights);
            WalkResume { position: sched::wrr_resume_position(weights, cw), rr_last: None, wrr_cw: cw }
        }
        _ => {
            let old_table = sched::rr_table(&old.table_weights);
            let last = if untouched || old_table.is_empty() {
                old.resume.rr_last
            } else {
                let i = old_table[((position - 1) % old_table.len() as u64) as usize];
                Some(old.dests[i as usize])
            };
            // A removed server hands the pointer to its predecessor (IPVS's
            // rr del_dest), repeatedly if that one went too.
            let mut pointer = last;
            while let Some(p) = pointer {
                if dests.contains(&p) {
                    break;
                }
                let i = old.dests.iter().position(|&d| d == p).unwrap_or(0);
                pointer = if i == 0 { None } else { Some(old.dests[i - 1]) };
            }
            let start = pointer.map_or(0, |p| dests.iter().position(|&d| d == p).map_or(0, |i| i + 1));
            let n = dests.len();
            let next = (0..n).map(|k| (start + k) % n).find(|&i| weights[i] > 0);
            // The table lists eligible servers in list order: the next one's
            // index there is how many eligible servers precede it.
            let position = next.map_or(0, |i| weights[..i].iter().filter(|&&w| w > 0).count() as u64);
            WalkResume { position, rr_last: pointer, wrr_cw: 0 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::sched::models::{RrModel, SchedDest, WrrModel};

    fn real(last_octet: u8, weight: u32) -> WantedReal {
        WantedReal {
            address: Ipv4Addr::new(10, 0, 0, last_octet),
            port: 0,
            weight,
            forwarding: Forwarding::Dr,
            mac: Some([2, 0, 0, 0, 0, last_octet]),
            mtu: 1500,
            upper_threshold: 0,
            lower_threshold: 0,
            in_service: true,
            expire_conns: false,
        }
    }

    fn service(scheduler: Scheduler, reals: Vec<WantedReal>) -> WantedService {
        WantedService {
            protocol: Protocol::Tcp,
            vip: Ipv4Addr::new(10, 0, 0, 100),
            port: 80,
            scheduler,
            options: ServiceOptions::default(),
            reals,
        }
    }

    /// A fake datapath: applies ops to plain maps and walks the tables as
    /// the XDP program does.
    #[derive(Default)]
    struct FakeMaps {
        dests: BTreeMap<u32, Dest>,
        table: BTreeMap<u32, u32>,
        services: BTreeMap<ServiceKey, Service>,
        positions: BTreeMap<u32, u64>,
    }

    impl FakeMaps {
        fn apply(&mut self, ops: &[MapOp]) {
            for op in ops {
                match op {
                    MapOp::SetDest(id, d) => {
                        self.dests.insert(*id, *d);
                    }
                    MapOp::SetSchedTable { start, dest_ids } => {
                        for (i, id) in dest_ids.iter().enumerate() {
                            self.table.insert(start + i as u32, *id);
                        }
                    }
                    MapOp::SetService(k, v) => {
                        self.services.insert(*k, *v);
                    }
                    MapOp::DeleteService(k) => {
                        self.services.remove(k);
                    }
                    MapOp::SetSchedPosition(id, p) => {
                        self.positions.insert(*id, *p);
                    }
                    MapOp::ZeroDestStats(_)
                    | MapOp::ZeroServiceStats(_)
                    | MapOp::SetDestList { .. }
                    | MapOp::SetVipFilter(_)
                    | MapOp::SetServiceFlags(..) => {}
                }
            }
        }

        /// The last octet of the address the datapath would pick.
        fn pick(&mut self, key: &ServiceKey) -> Option<u8> {
            let svc = self.services[key];
            if svc.table_len == 0 {
                return None;
            }
            let pos = self.positions.entry(svc.id).or_default();
            let slot = svc.table_start + (*pos % svc.table_len as u64) as u32;
            *pos += 1;
            let d = self.dests[&self.table[&slot]];
            Some(lb_common::ipv4_octets(d.addr)[3])
        }
    }

    fn plan(tables: &mut Tables, maps: &mut FakeMaps, wanted: &[WantedService]) {
        let positions = maps.positions.clone();
        let ops = tables.plan(wanted, &|id| positions.get(&id).copied().unwrap_or(0)).unwrap();
        maps.apply(&ops);
    }

    fn model_dests(reals_ipvs_order: &[(u8, u32)]) -> Vec<SchedDest> {
        reals_ipvs_order.iter().map(|&(_, w)| SchedDest::new(w)).collect()
    }

    #[test]
    fn rr_and_wrr_follow_ipvs_across_changes() {
        // Each step is the config's reals (oldest first); between steps the
        // datapath makes some picks. The model gets the same changes as
        // IPVS would see them (ipvsadm -a adds in front, -d removes, -e edits).
        let steps: Vec<Vec<(u8, u32)>> = vec![
            vec![(1, 3), (2, 1)],
            vec![(1, 3), (2, 1), (3, 2)],
            vec![(1, 3), (3, 2)],
            vec![(1, 1), (3, 2)],
            vec![(1, 1), (3, 2), (4, 4), (5, 0)],
            vec![(3, 2), (4, 4), (5, 5)],
        ];
        for scheduler in [Scheduler::Rr, Scheduler::Wrr] {
            let mut tables = Tables::new();
            let mut maps = FakeMaps::default();
            let mut rr = RrModel::default();
            let mut wrr = WrrModel::empty();
            // IPVS order of the model's list: newest first.
            let mut list: Vec<(u8, u32)> = Vec::new();
            for (step, reals) in steps.iter().enumerate() {
                // Replay the change on the model one ipvsadm command at a time.
                for (i, entry) in list.clone().iter().enumerate().rev() {
                    if !reals.iter().any(|r| r.0 == entry.0) {
                        list.remove(i);
                        rr.remove(i);
                        wrr.changed(&model_dests(&list));
                    }
                }
                for &(octet, weight) in reals {
                    match list.iter().position(|e| e.0 == octet) {
                        Some(i) if list[i].1 != weight => {
                            list[i].1 = weight;
                            wrr.changed(&model_dests(&list));
                        }
                        Some(_) => {}
                        None => {
                            list.insert(0, (octet, weight));
                            rr.add_front();
                            wrr.changed(&model_dests(&list));
                        }
                    }
                }
                let wanted = service(scheduler, reals.iter().map(|&(o, w)| real(o, w)).collect());
                plan(&mut tables, &mut maps, std::slice::from_ref(&wanted));
                for pick in 0..(7 + step * 3) {
                    let d = model_dests(&list);
                    let want = match scheduler {
                        Scheduler::Wrr => wrr.schedule(&d),
                        _ => rr.schedule(&d),
                    }
                    .map(|i| list[i].0);
                    assert_eq!(maps.pick(&wanted.key()), want, "{scheduler} step {step} pick {pick}");
                }
            }
        }
    }

    #[test]
    fn unchanged_config_writes_nothing() {
        let mut tables = Tables::new();
        let mut maps = FakeMaps::default();
        let w = vec![service(Scheduler::Wrr, vec![real(1, 3), real(2, 1)])];
        plan(&mut tables, &mut maps, &w);
        let ops = tables.plan(&w, &|_| 0).unwrap();
        assert!(ops.is_empty(), "{ops:?}");
    }

    #[test]
    fn a_removed_server_keeps_its_slot_until_released() {
        let mut tables = Tables::new();
        let mut maps = FakeMaps::default();
        plan(&mut tables, &mut maps, &[service(Scheduler::Rr, vec![real(1, 1), real(2, 1)])]);
        let ids: Vec<u32> = tables.dest_ids().collect();
        plan(&mut tables, &mut maps, &[service(Scheduler::Rr, vec![real(1, 1)])]);
        let gone = ids.iter().copied().find(|id| lb_common::ipv4_octets(maps.dests[id].addr)[3] == 2).unwrap();
        assert_eq!(maps.dests[&gone].flags & dest_flag::AVAILABLE, 0, "retired, not available");
        assert_eq!(maps.dests[&gone].mac, [2, 0, 0, 0, 0, 2], "still forwards its connections");
        // Still referenced: kept.
        assert!(tables.release_unreferenced(&BTreeSet::from([gone]), &BTreeSet::new()).is_empty());
        let ops = tables.release_unreferenced(&BTreeSet::new(), &BTreeSet::new());
        assert_eq!(ops, vec![MapOp::SetDest(gone, Dest::default())]);
        // Back again: a fresh slot.
        plan(&mut tables, &mut maps, &[service(Scheduler::Rr, vec![real(1, 1), real(2, 1)])]);
        assert_eq!(tables.dest_ids().count(), 2);
    }

    #[test]
    fn a_server_back_before_release_gets_its_old_slot() {
        let mut tables = Tables::new();
        let mut maps = FakeMaps::default();
        let both = [service(Scheduler::Rr, vec![real(1, 1), real(2, 1)])];
        plan(&mut tables, &mut maps, &both);
        let before: BTreeSet<u32> = tables.dest_ids().collect();
        plan(&mut tables, &mut maps, &[service(Scheduler::Rr, vec![real(1, 1)])]);
        plan(&mut tables, &mut maps, &both);
        assert_eq!(tables.dest_ids().collect::<BTreeSet<_>>(), before);
    }

    #[test]
    fn removing_a_service_deletes_it() {
        let mut tables = Tables::new();
        let mut maps = FakeMaps::default();
        let s = service(Scheduler::Rr, vec![real(1, 1)]);
        plan(&mut tables, &mut maps, std::slice::from_ref(&s));
        assert!(maps.services.contains_key(&s.key()));
        plan(&mut tables, &mut maps, &[]);
        assert!(!maps.services.contains_key(&s.key()));
    }

    #[test]
    fn regions_are_reused_after_release() {
        let mut pool = RegionPool::new(100);
        let a = pool.alloc(30).unwrap();
        let b = pool.alloc(30).unwrap();
        pool.release(a);
        pool.release(b);
        assert_eq!(pool.alloc(100), Some(Region { start: 0, len: 100 }));
        let mut pool = RegionPool::new(100);
        assert!(pool.take(Region { start: 10, len: 20 }));
        assert!(!pool.take(Region { start: 15, len: 2 }));
        assert_eq!(pool.alloc(10), Some(Region { start: 0, len: 10 }));
        assert_eq!(pool.alloc(10), Some(Region { start: 30, len: 10 }));
    }
}
