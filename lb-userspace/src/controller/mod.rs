//! lbd's state and what it does with it: turn the config into the wanted
//! table, apply it to the datapath, answer the control socket, sweep the
//! connection table, estimate rates.
//!
//! This file holds the [`Controller`] and what changes the table in force
//! (a new table from lbctl, a reload, new routes and MACs, timeouts);
//! `wanted` makes the table to install from it, the health checks' view
//! and VRRP's standby VIPs; `sweep` tends the connection table (expiry,
//! persistence templates, count drift), a stretch a tick; `conns` its
//! entries' expiry and connection sync's records; `report` answers with
//! snapshots, rates and counters; `listing` pages of `lbctl -c`, filtered. Walks of the connection table never
//! hold the controller's lock: what they need is taken under it
//! ([`SyncView`], [`ConnListing`], the sweep's view) and the walk done
//! without it.

mod conns;
mod evictions;
mod listing;
mod report;
mod sweep;
mod wanted;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::Result;
use lb_common::{Director, conn_state, director_flag};

pub use self::{
    conns::{InstallReport, SyncView},
    report::ConnListing,
    sweep::{ENTRIES_PER_TICK as SWEEP_ENTRIES_PER_TICK, Sweeper},
    wanted::describe_changes,
};
use self::{report::Counted, wanted::HealthView};
use crate::{
    config::{Config, ServiceConfig},
    datapath::Datapath,
    environment::{Neighbour, Paths, RouteLoss, next_hop_addresses, servers},
    health::QuorumState,
    model::{Forwarding, ServiceId},
    netinfo::Interfaces,
    rate::Estimator,
    tables::{Planned, Tables, WantedService},
};

pub struct Controller {
    pub config: Config,
    /// The virtual-server table in force: the config's, as changed since by
    /// lbctl's ipvsadm commands (a reload puts the config's back).
    table: Vec<ServiceConfig>,
    /// Health of the checked real servers (unchecked ones are always up).
    health: HealthView,
    quorums: BTreeMap<ServiceId, QuorumState>,
    /// VIPs this director is VRRP backup for: their services pass packets
    /// to the kernel until it becomes master.
    standby_vips: BTreeSet<IpAddr>,
    /// `lbctl --set` changed the timeouts since the file was loaded.
    timeouts_changed: bool,
    pub interfaces: Interfaces,
    pub datapath: Datapath,
    tables: Tables,
    /// Where each real server's frames go (next hop, path MTU).
    paths: Paths,
    /// TUN servers whose route vanished (they keep their last path).
    route_loss: RouteLoss,
    /// Next hops' MACs on the director's segment.
    macs: BTreeMap<IpAddr, [u8; 6]>,
    estimators: BTreeMap<Counted, Estimator>,
    /// Live entries of the connection table (connections and templates)
    /// as the last complete sweep pass counted them.
    conn_entries: Option<u64>,
}

impl Controller {
    /// Takes over a loaded datapath: adopts what a previous lbd left in its
    /// maps, then makes them hold `config`, the services of `standby_vips`
    /// standing by from the first write.
    pub fn new(
        config: Config,
        interfaces: Interfaces,
        datapath: Datapath,
        paths: Paths,
        macs: BTreeMap<IpAddr, [u8; 6]>,
        standby_vips: BTreeSet<IpAddr>,
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
            standby_vips,
            timeouts_changed: false,
            interfaces,
            datapath,
            tables,
            paths,
            route_loss: RouteLoss::default(),
            macs,
            estimators: BTreeMap::new(),
            conn_entries: None,
        };
        c.apply()?;
        Ok(c)
    }

    /// The director entry of the datapath for the current config.
    fn director_value(&self) -> Director {
        let t = self.config.director.timeouts;
        let tun_source = self.tun_source().map_or([0; 4], |a| lb_common::ipv4_words(a.octets()));
        let tun_source6 = self.tun_source6().map_or([0; 4], |a| lb_common::ipv6_words(a.octets()));
        let nat = self.table.iter().flat_map(|s| &s.reals).any(|r| matches!(r.forwarding, Forwarding::Nat | Forwarding::FullNat));
        Director {
            ifindex: self.interfaces.main().index,
            mac: self.interfaces.main().mac,
            flags: if nat { director_flag::NAT } else { 0 },
            tun_source,
            tun_source_family: lb_common::AF_INET,
            tun_source6,
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
            let is_vip = |a: Ipv4Addr| self.table.iter().any(|s| s.covers(IpAddr::V4(a)));
            self.interfaces.main().ipv4.iter().copied().find(|&a| !is_vip(a))
        })
    }

    /// The outer source of IPv6 TUN packets, as [`Self::tun_source`].
    pub fn tun_source6(&self) -> Option<Ipv6Addr> {
        self.config.director.tun_source6.or_else(|| {
            let vips: BTreeSet<IpAddr> = self.table.iter().map(|s| s.vip).collect();
            self.interfaces.main().ipv6.iter().copied().find(|&a| !vips.contains(&IpAddr::V6(a)))
        })
    }

    /// The virtual-server table in force.
    pub fn table(&self) -> &[ServiceConfig] {
        &self.table
    }

    /// Makes `table` the one in force (already checked: commands and the
    /// host), with the next hops toward its servers.
    pub fn set_table(
        &mut self,
        table: Vec<ServiceConfig>,
        paths: Paths,
        macs: BTreeMap<IpAddr, [u8; 6]>,
    ) -> Result<()> {
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
        let planned = self.tables.plan(&wanted, &|id| datapath.sched_position(id))?;
        self.execute(planned)?;
        for line in describe_changes(&before, &wanted) {
            tracing::info!("{line}");
        }
        Ok(())
    }

    /// Writes a plan and commits it to the model once the maps took it.
    /// When a write fails the datapath undoes the ones before it and the
    /// model stays as it was; if even that failed, the model is read back
    /// from the maps, so the next plan starts from what they hold.
    fn execute(&mut self, planned: Planned) -> Result<()> {
        match self.datapath.execute(&planned.ops) {
            Ok(()) => {
                self.tables.commit(planned);
                Ok(())
            }
            Err(e) => {
                if !e.rolled_back {
                    match self.datapath.read_back() {
                        Ok(held) => self.tables = Tables::adopt(&held),
                        Err(read) => tracing::warn!("cannot read the maps back after a failed write: {read:#}"),
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Takes a new config (already checked against the host). Its table
    /// replaces the one in force, runtime changes included: the file is
    /// the source of truth, as keepalived re-applies its config.
    pub fn reload(&mut self, config: Config, interfaces: Interfaces, paths: Paths) -> Result<()> {
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
        let old_interfaces = std::mem::replace(&mut self.interfaces, interfaces);
        let old_paths = std::mem::replace(&mut self.paths, paths);
        if let Err(e) = self.apply() {
            self.config = old;
            self.table = old_table;
            self.interfaces = old_interfaces;
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

    /// New routes toward the real servers; true if any next hop changed.
    /// A server the kernel has no usable route to any more keeps the path
    /// the datapath has (see [`RouteLoss`]).
    pub fn update_paths(&mut self, paths: Paths) -> bool {
        self.route_loss.update(&servers(&self.table), &paths, &self.paths, std::time::Instant::now());
        if paths == self.paths {
            return false;
        }
        for (key, hop) in &paths {
            // (A route back after a loss: RouteLoss said so.)
            if self.paths.get(key).is_some_and(|h| h.address != hop.address) {
                tracing::info!("{} is reached through {} now (path MTU {})", key.0, hop.address, hop.mtu);
            }
        }
        self.paths = paths;
        true
    }

    /// Records newly learned MACs; true if any changed.
    pub fn update_macs(&mut self, macs: BTreeMap<IpAddr, [u8; 6]>) -> bool {
        let mut changed = false;
        for (addr, mac) in macs {
            let old = self.macs.insert(addr, mac);
            if old != Some(mac) {
                changed = true;
                match old {
                    None => tracing::info!("{addr} resolved to {}", fmt_mac(&mac)),
                    Some(o) => {
                        tracing::warn!("{addr} moved from {} to {}", fmt_mac(&o), fmt_mac(&mac))
                    }
                }
            }
        }
        changed
    }

    /// Next hops whose MACs are not known yet.
    pub fn unresolved(&self) -> Vec<Neighbour> {
        next_hop_addresses(&self.paths).into_iter().filter(|(_, a)| !self.macs.contains_key(a)).collect()
    }

    /// Live entries of the connection table at the end of the last
    /// complete sweep pass (`None` before the first).
    pub fn conn_entries(&self) -> Option<u64> {
        self.conn_entries
    }

    pub fn next_hops(&self) -> Vec<Neighbour> {
        next_hop_addresses(&self.paths)
    }
}

pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
