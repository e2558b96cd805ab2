//! What the maps hold for one flow, for `lbctl explain` (see
//! [`crate::explain`]): read only, as the datapath's lookups would find it.

use anyhow::{Result, anyhow};
use aya::maps::{Array, HashMap, MapError, lpm_trie::Key, lpm_trie::LpmTrie};
use lb_common::{
    FWMARK_MATCH_FULL_BITS, FlowKey, FwmarkMatch, LBLCR_MAX_SET, LblcEntry, LblcKey, MAX_REALS_PER_SERVICE, NO_REAL,
    RealServer, Service, ServiceKey, fwmark_service_key, map_name, scheduler,
};

use super::Datapath;
use crate::explain::{Found, MatchedBy, View};

/// A lookup's value, `None` for a missing key.
fn found<T>(r: Result<T, MapError>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl Datapath {
    fn map(&self, name: &str) -> Result<&aya::maps::Map> {
        self.ebpf.map(name).ok_or_else(|| anyhow!("map {name} missing"))
    }

    /// The flow's service as `lookup::service` finds it: the VIP's port,
    /// the VIP's every-port service, then the firewall-mark matches.
    fn explain_service(&self, flow: &FlowKey) -> Result<Option<(ServiceKey, Service, MatchedBy)>> {
        let services = HashMap::<_, ServiceKey, Service>::try_from(self.map(map_name::SERVICES)?)?;
        let mut key = ServiceKey { addr: flow.dst, port: flow.dport, protocol: flow.protocol, family: flow.family };
        if let Some(svc) = found(services.get(&key, 0))? {
            return Ok(Some((key, svc, MatchedBy::VipPort)));
        }
        key.port = 0;
        if let Some(svc) = found(services.get(&key, 0))? {
            return Ok(Some((key, svc, MatchedBy::AllPorts)));
        }
        let trie = LpmTrie::<_, FwmarkMatch, u32>::try_from(self.map(map_name::FWMARK_MATCHES)?)?;
        let data = FwmarkMatch { protocol: flow.protocol, family: flow.family, port: flow.dport, addr: flow.dst };
        let Some(mark) = found(trie.get(&Key::new(FWMARK_MATCH_FULL_BITS, data), 0))? else {
            return Ok(None);
        };
        let key = fwmark_service_key(mark, flow.family);
        Ok(found(services.get(&key, 0))?.map(|svc| (key, svc, MatchedBy::Fwmark)))
    }

    /// Everything [`crate::explain::explain`] needs about `flow`.
    pub fn explain_view(&self, flow: &FlowKey) -> Result<View> {
        let mut view = View { flow: *flow, now_ns: self.now_ns(), ..View::default() };
        view.conn = self.connection(flow);
        let mut ids: Vec<u32> = view.conn.iter().map(|c| c.real_id).collect();
        if let Some((key, service, by)) = self.explain_service(flow)? {
            let lists = Array::<_, u32>::try_from(self.map(map_name::REAL_LISTS)?)?;
            let table = Array::<_, u32>::try_from(self.map(map_name::SCHED_TABLE)?)?;
            let len = service.reals_len.min(MAX_REALS_PER_SERVICE);
            let list: Vec<u32> =
                (service.reals_start..service.reals_start + len).map(|i| lists.get(&i, 0)).collect::<Result<_, _>>()?;
            let table: Vec<u32> = (service.table_start..service.table_start + service.table_len)
                .map(|i| table.get(&i, 0))
                .collect::<Result<_, _>>()?;
            ids.extend(&list);
            if service.persistence_timeout > 0 {
                view.template = self.connection(&service.template_key(flow));
                ids.extend(view.template.iter().map(|t| t.real_id));
            }
            if matches!(service.scheduler, scheduler::LBLC | scheduler::LBLCR) {
                let cache = HashMap::<_, LblcKey, LblcEntry>::try_from(self.map(map_name::LBLC_CACHE)?)?;
                let key = LblcKey { service_id: service.id, pad0: 0, addr: flow.dst };
                view.lblc = found(cache.get(&key, 0))?;
                ids.extend(view.lblc.iter().flat_map(|e| e.reals[..(e.len as usize).min(LBLCR_MAX_SET)].to_vec()));
            }
            let position = self.sched_position(service.id);
            view.found = Some(Found { key, service, by, list, table, position });
        }
        let reals = Array::<_, RealServer>::try_from(self.map(map_name::REALS)?)?;
        for id in ids {
            if id == NO_REAL || view.reals.contains_key(&id) {
                continue;
            }
            if let Some(real) = found(reals.get(&id, 0))? {
                view.reals.insert(id, (real, self.real_conns(id)));
            }
        }
        Ok(view)
    }
}
