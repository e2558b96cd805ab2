//! What the controller reports: ipvsadm's table and connection listings,
//! the rate estimators behind them, the datapath's reason counters, and
//! `ipvsadm -Z`.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use lb_common::{Conn, FlowKey, RealServer, conn_state, flow_kind, ip_from_words};
use lb_ipvsadm::{
    command::{Family, FwmarkService, ServiceAddress, VirtualService},
    snapshot::{self, Connection, Stats},
};

use super::{
    Controller,
    conns::{expires_in, is_expired},
};
use crate::{
    datapath::{ConnTable, Cursor},
    model::ServiceId,
    rate::Estimator,
    tables::MapOp,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Counted {
    Service(u32),
    Real(u32),
}

impl Controller {
    /// `ipvsadm -Z`: zeroes the counters of one service (and its servers) or
    /// of all.
    pub fn zero(&mut self, service: Option<ServiceId>) -> Result<()> {
        let mut ops = Vec::new();
        for w in self.tables.wanted() {
            if service.is_some_and(|id| id != w.id()) {
                continue;
            }
            let key = w.key();
            if let Some(id) = self.tables.service_id(&key) {
                ops.push(MapOp::ZeroServiceStats(id));
            }
            for &d in self.tables.service_reals(&key) {
                ops.push(MapOp::ZeroRealStats(d));
            }
        }
        self.estimators.clear();
        Ok(self.datapath.execute(&ops)?)
    }

    /// One estimator step for every service and real server.
    pub fn sample_rates(&mut self) {
        let mut seen = BTreeSet::new();
        for svc in self.tables.wanted().map(|w| w.key()).collect::<Vec<_>>() {
            let Some(id) = self.tables.service_id(&svc) else { continue };
            let stats = to_stats(self.datapath.service_counters(id));
            seen.insert(Counted::Service(id));
            self.estimators.entry(Counted::Service(id)).or_insert_with(|| Estimator::new(stats)).sample(stats);
            for &d in self.tables.service_reals(&svc) {
                let stats = to_stats(self.datapath.real_counters(d));
                seen.insert(Counted::Real(d));
                self.estimators.entry(Counted::Real(d)).or_insert_with(|| Estimator::new(stats)).sample(stats);
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
                    .service_reals(&key)
                    .iter()
                    .filter_map(|&d| {
                        let real = self.tables.real(d)?;
                        let c = self.datapath.real_conns(d);
                        let (active, inactive, persistent) =
                            (c.active.max(0) as u64, c.inactive.max(0) as u64, c.persistent.max(0) as u64);
                        Some(snapshot::Real {
                            address: ip_from_words(real.addr, real.family),
                            port: u16::from_be(real.port),
                            forwarding: crate::model::Forwarding::from_code(real.forwarding)
                                .unwrap_or(crate::model::Forwarding::Dr),
                            weight: real.weight,
                            active_conns: active,
                            inactive_conns: inactive,
                            persistent_conns: persistent,
                            upper_threshold: real.upper_threshold,
                            lower_threshold: real.lower_threshold,
                            stats: to_stats(self.datapath.real_counters(d)),
                            rates: self.rates(Counted::Real(d)),
                        })
                    })
                    .collect();
                snapshot::Service {
                    id: if w.fwmark != 0 {
                        VirtualService::Fwmark(FwmarkService { mark: w.fwmark, family: Family::of(w.vip) })
                    } else {
                        VirtualService::Address(ServiceAddress { protocol: w.protocol, addr: w.vip, port: w.port })
                    },
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

    /// What `ipvsadm -L -c` needs: see [`ConnListing`].
    pub fn conn_listing(&self) -> ConnListing {
        ConnListing {
            conns: self.datapath.conn_table(),
            now: self.datapath.now_ns(),
            reals: self.tables.real_ids().filter_map(|id| Some((id, *self.tables.real(id)?))).collect(),
        }
    }

    /// The datapath's verdict-reason counters, and lbd's own:
    /// `tun_no_route`, route lookups that found no usable route toward a
    /// TUN server (which kept its last path).
    pub fn reason_counters(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> =
            self.datapath.reason_counters().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        out.insert("tun_no_route".into(), self.route_loss.count());
        out
    }
}

/// What `ipvsadm -L -c` needs from the controller, taken under its lock;
/// the listing is made without it ([`ConnListing::connections`]).
pub struct ConnListing {
    pub(super) conns: ConnTable,
    pub(super) now: u64,
    pub(super) reals: BTreeMap<u32, RealServer>,
}

impl ConnListing {
    /// What `ipvsadm -L -c` shows: every live entry of the table, once.
    pub fn connections(&self) -> Result<Vec<Connection>> {
        let mut out = Vec::new();
        self.conns.walk(&mut Cursor::new(), usize::MAX, |key, conn| {
            if !is_expired(conn, self.now)
                && let Some(c) = self.reals.get(&conn.real_id).and_then(|d| connection_snapshot(key, conn, d, self.now))
            {
                out.push(c);
            }
        })?;
        // The kernel's hash walk has no order; sorted for stable output.
        out.sort_by_key(|c| (c.vip, c.vport, c.client, c.client_port));
        Ok(out)
    }
}

pub(super) fn connection_snapshot(key: &FlowKey, conn: &Conn, real: &RealServer, now: u64) -> Option<Connection> {
    let ip = |w: [u32; 4], family: u8| ip_from_words(w, family);
    let vport = u16::from_be(key.dport);
    let real_port = u16::from_be(real.port);
    // A firewall-mark service's template: protocol 0 (IPVS's IPPROTO_IP),
    // the mark where the VIP goes (lb_common::Service::template_key).
    let fwmark = (key.kind == flow_kind::TEMPLATE && key.protocol == 0).then(|| u32::from_be(key.dst[0]));
    let protocol = match fwmark {
        Some(_) => crate::model::Protocol::Tcp,
        None => crate::model::Protocol::from_number(key.protocol)?,
    };
    Some(Connection {
        protocol,
        expires_in: expires_in(conn, now),
        state: conn_state::name(conn.state).to_string(),
        client: ip(key.src, key.family),
        client_port: u16::from_be(key.sport),
        vip: ip(key.dst, key.family),
        vport,
        real: ip(real.addr, real.family),
        real_port: if real_port == 0 { vport } else { real_port },
        template: key.kind == flow_kind::TEMPLATE,
        fwmark,
    })
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
