//! The datapath's NAT maps: the interfaces frames leave by, the next hops
//! the datapath wants resolved, NAT reply entries and full NAT's pool.

use anyhow::{Context as _, Result, anyhow};
use aya::maps::{DevMapHash, HashMap, Queue};
use lb_common::{FlowKey, NatLocal, map_name};

use super::Datapath;

impl Datapath {
    /// The interfaces frames may leave by (`TX_PORTS`): exactly these.
    pub fn set_tx_ports(&mut self, ifindexes: &[u32]) -> Result<()> {
        let map = self.ebpf.map_mut(map_name::TX_PORTS).ok_or_else(|| anyhow!("map TX_PORTS missing"))?;
        let mut ports = DevMapHash::try_from(map)?;
        let stale: Vec<u32> = ports.keys().filter_map(Result::ok).filter(|k| !ifindexes.contains(k)).collect();
        for k in stale {
            ports.remove(k)?;
        }
        for &i in ifindexes {
            ports.insert(i, i, None, 0).with_context(|| format!("add interface {i} to TX_PORTS"))?;
        }
        Ok(())
    }

    /// Takes the next hops toward NAT clients the datapath found without
    /// a neighbour entry: (ifindex, address) pairs, removed from the map.
    pub fn take_wanted_neighbours(&mut self) -> Vec<(u32, std::net::Ipv4Addr)> {
        let Some(map) = self.ebpf.map_mut(map_name::NEIGH_WANTED) else {
            return Vec::new();
        };
        let Ok(mut wanted) = HashMap::<_, u32, u32>::try_from(map) else {
            return Vec::new();
        };
        let found: Vec<(u32, u32)> = wanted.iter().filter_map(Result::ok).collect();
        for (addr, _) in &found {
            let _ = wanted.remove(addr);
        }
        found.into_iter().map(|(addr, ifindex)| (ifindex, std::net::Ipv4Addr::from(addr.to_ne_bytes()))).collect()
    }

    /// Fills full NAT's pool with every port 1024..=65535 of `sources`
    /// (a fresh datapath's; an adopted one keeps its pool and who holds
    /// what).
    pub fn fill_fullnat_ports(&mut self, sources: &[std::net::Ipv4Addr]) -> Result<usize> {
        let map = self.ebpf.map_mut(map_name::FULLNAT_PORTS).ok_or_else(|| anyhow!("map FULLNAT_PORTS missing"))?;
        let mut pool = Queue::<_, NatLocal>::try_from(map)?;
        let mut pushed = 0;
        for source in sources {
            let addr = u32::from_ne_bytes(source.octets());
            for port in lb_common::FULLNAT_PORT_FIRST..=u16::MAX {
                pool.push(NatLocal { addr, port: port.to_be(), pad0: 0 }, 0)?;
                pushed += 1;
            }
        }
        Ok(pushed)
    }

    /// A full-NAT connection's local end.
    pub fn fullnat_local(&self, key: &FlowKey) -> Option<NatLocal> {
        let map = self.ebpf.map(map_name::FULLNAT_LOCAL)?;
        HashMap::<_, FlowKey, NatLocal>::try_from(map).ok()?.get(key, 0).ok()
    }

    /// The keys of every full-NAT connection's local end.
    pub fn fullnat_keys(&self) -> Vec<FlowKey> {
        let Some(map) = self.ebpf.map(map_name::FULLNAT_LOCAL) else { return Vec::new() };
        let Ok(locals) = HashMap::<_, FlowKey, NatLocal>::try_from(map) else { return Vec::new() };
        locals.keys().filter_map(Result::ok).collect()
    }

    /// Gives a gone full-NAT connection's local end back to the pool: its
    /// entry and its replies' entry go (`real`: the server's address and
    /// port as stored).
    pub fn release_fullnat(&mut self, key: &FlowKey, real: ([u32; 4], u16)) -> Result<()> {
        let Some(local) = self.fullnat_local(key) else { return Ok(()) };
        let port = if real.1 == 0 { key.dport } else { real.1 };
        let reply = key.fullnat_reply(real.0, port, &local);
        if let Some(map) = self.ebpf.map_mut(map_name::NAT_REPLIES) {
            let _ = HashMap::<_, FlowKey, FlowKey>::try_from(map)?.remove(&reply);
        }
        let map = self.ebpf.map_mut(map_name::FULLNAT_LOCAL).ok_or_else(|| anyhow!("map FULLNAT_LOCAL missing"))?;
        HashMap::<_, FlowKey, NatLocal>::try_from(map)?.remove(key)?;
        let map = self.ebpf.map_mut(map_name::FULLNAT_PORTS).ok_or_else(|| anyhow!("map FULLNAT_PORTS missing"))?;
        Queue::<_, NatLocal>::try_from(map)?.push(local, 0)?;
        Ok(())
    }

    /// Registers the reply key of a NAT connection (`NAT_REPLIES`).
    pub fn set_nat_reply(&mut self, reply: &FlowKey, conn: &FlowKey) -> Result<()> {
        let map = self.ebpf.map_mut(map_name::NAT_REPLIES).ok_or_else(|| anyhow!("map NAT_REPLIES missing"))?;
        let mut replies = HashMap::<_, FlowKey, FlowKey>::try_from(map)?;
        replies.insert(reply, conn, 0)?;
        Ok(())
    }
}
