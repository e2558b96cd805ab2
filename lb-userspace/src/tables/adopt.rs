//! Taking over the maps a previous lbd filled.

use std::collections::BTreeMap;

use lb_common::{RealServer, Service, ServiceKey, ip_from_words, real_flag, sched, service_flag};

use super::{
    InstalledReal, MatchKey, InstalledService, Tables, TxPort, WantedReal, WantedService, effective_weight, region::Region,
    walk::WalkResume,
};
use crate::model::{Forwarding, Protocol, Scheduler, ServiceId, ServiceOptions, persistence_mask_from_words};

/// The maps' content as a previous lbd left it (`Datapath::read_back`), for
/// [`Tables::adopt`].
pub struct Adopted {
    pub services: Vec<(ServiceKey, Service)>,
    pub reals: BTreeMap<u32, RealServer>,
    /// Each service's real server ids in IPVS order.
    pub service_reals: BTreeMap<ServiceKey, Vec<u32>>,
    /// Each service's scheduling table.
    pub tables: BTreeMap<ServiceKey, Vec<u32>>,
    pub positions: BTreeMap<u32, u64>,
    /// `FWMARK_MATCHES`' entries.
    pub fwmark_matches: Vec<(MatchKey, u32)>,
}

impl Tables {
    /// Rebuilds the model from maps a previous lbd filled, so the next plan
    /// changes only what differs and every connection keeps its server.
    pub fn adopt(adopted: &Adopted) -> Self {
        let mut t = Self::new();
        for (key, value) in &adopted.services {
            let ids = adopted.service_reals.get(key).cloned().unwrap_or_default();
            // A firewall-mark service's key has protocol 0 and its mark for
            // the VIP (lb_common::fwmark_service_key).
            let fwmark = if value.flags & service_flag::FWMARK != 0 { u32::from_be(value.fwmark) } else { 0 };
            let protocol = if fwmark != 0 { Some(Protocol::Tcp) } else { Protocol::from_number(key.protocol) };
            let (Some(protocol), Some(scheduler)) = (protocol, Scheduler::from_code(value.scheduler)) else {
                continue;
            };
            let vip = if fwmark != 0 {
                ServiceId::fwmark(fwmark, key.family == lb_common::AF_INET6).vip
            } else {
                ip_from_words(key.addr, key.family)
            };
            let port = u16::from_be(key.port);
            let mut reals = Vec::new();
            for id in ids.iter().rev() {
                let Some(d) = adopted.reals.get(id) else {
                    continue;
                };
                reals.push(WantedReal {
                    address: ip_from_words(d.addr, d.family),
                    port: if port == 0 { 0 } else { u16::from_be(d.port) },
                    weight: d.weight,
                    forwarding: Forwarding::from_code(d.forwarding).unwrap_or(Forwarding::Dr),
                    mac: (d.flags & real_flag::AVAILABLE != 0).then_some(d.mac),
                    mtu: d.mtu as u32,
                    port_out: TxPort { ifindex: d.ifindex, mac: d.src_mac },
                    upper_threshold: d.upper_threshold,
                    lower_threshold: d.lower_threshold,
                    in_service: true,
                    expire_conns: false,
                });
                t.reals.insert(*id, InstalledReal { value: *d, service: *key, last_weight: d.weight });
                t.free_real_ids.remove(id);
            }
            let weights: Vec<u32> = ids.iter().map(|id| adopted.reals.get(id).map_or(0, effective_weight)).collect();
            let table = Region { start: value.table_start, len: value.table_len };
            let list = Region { start: value.reals_start, len: value.reals_len };
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
                flags: value.flags & !(service_flag::ALL_PORTS | service_flag::FWMARK),
                persistence_timeout: (value.persistence_timeout > 0).then_some(value.persistence_timeout),
                persistence_netmask: persistence_mask_from_words(value.persistence_mask, key.family),
            };
            let table_ids = adopted.tables.get(key).cloned().unwrap_or_default();
            // The matches are the trie's, taken whole below: the next plan
            // sets those the config has and removes the rest.
            let wanted = WantedService { protocol, vip, port, fwmark, matches: Vec::new(), scheduler, options, reals };
            t.services.insert(
                *key,
                InstalledService {
                    wanted,
                    id: value.id,
                    real_ids: ids,
                    table_weights: weights,
                    table_ids,
                    table,
                    list,
                    resume,
                    value: *value,
                },
            );
        }
        t.fwmark_matches = adopted.fwmark_matches.iter().copied().collect();
        // Real servers in no service's list were retired; connections may use them.
        for (id, d) in &adopted.reals {
            if !t.reals.contains_key(id) {
                t.reals.insert(*id, InstalledReal { value: *d, service: ServiceKey::default(), last_weight: d.weight });
                t.free_real_ids.remove(id);
                t.retired_reals.insert(*id);
            }
        }
        t
    }
}
