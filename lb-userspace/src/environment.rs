//! Checks a valid config against the host before anything is attached: the
//! interface exists, every DR real server is on the interface's segment,
//! every TUN real server is reached through it. And finds where frames for
//! each real server go: the next hop's address, MAC and path MTU.

use std::{
    collections::{BTreeMap, btree_map},
    net::Ipv4Addr,
    time::Duration,
};

use crate::{
    config::{Config, ConfigError, ConfigErrors, ServiceConfig},
    model::Forwarding,
    netinfo::{Interface, Net},
};

/// The director interface, if the config fits this host.
pub async fn check(config: &Config, net: &Net) -> Result<Interface, ConfigErrors> {
    let file = config.path.display().to_string();
    let error = |line: usize, key: String, message: String| ConfigError { file: file.clone(), line: Some(line), key, message };
    let d = &config.director;
    let interface = net.interface(&d.interface).await.map_err(|e| {
        ConfigErrors(vec![error(d.interface_line, "director.interface".into(), format!("{e:#}"))])
    })?;
    let mut errors = Vec::new();
    for (i, svc) in config.services.iter().enumerate() {
        for (j, real) in svc.reals.iter().enumerate() {
            if let Err(message) = check_real(net, &interface, real.address, real.forwarding).await {
                errors.push(error(real.address_line, format!("service[{i}].real[{j}].address"), message));
            }
        }
    }
    if errors.is_empty() { Ok(interface) } else { Err(ConfigErrors(errors)) }
}

/// Whether a real server can be reached the way its forwarding needs: DR
/// on the interface's own segment, TUN through that interface; never one
/// of the director's own addresses.
pub async fn check_real(net: &Net, interface: &Interface, addr: Ipv4Addr, forwarding: Forwarding) -> Result<(), String> {
    let route = net.route_to(addr).await.map_err(|e| format!("{e:#}"))?;
    let name = &interface.name;
    if route.local {
        return Err(format!("{addr} is an address of this director"));
    }
    match forwarding {
        Forwarding::Tun if route.oif != Some(interface.index) => {
            Err(format!("{addr} is not reached through {name}: tunnelled packets leave by that interface"))
        }
        Forwarding::Tun => Ok(()),
        _ => match route.gateway {
            Some(gateway) => Err(format!(
                "{addr} is reached through the gateway {gateway}: direct routing needs the real server on \
                 {name}'s segment (use tun for real servers elsewhere)"
            )),
            None if route.oif != Some(interface.index) => {
                Err(format!("{addr} is not on {name}'s segment: direct routing needs it there"))
            }
            None => Ok(()),
        },
    }
}

/// Where frames for a real server go: the next hop on the director's
/// segment (the server itself for DR, the kernel's next hop for TUN), and
/// the path MTU toward it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub address: Ipv4Addr,
    pub mtu: u32,
}

/// Next hops by (real server, forwarding).
pub type Paths = BTreeMap<(Ipv4Addr, Forwarding), NextHop>;

/// The next hop of every real server (and sorry server) of `services`,
/// from the kernel's routing table. A server without a route (yet) is left
/// out.
pub async fn paths(services: &[ServiceConfig], net: &Net, interface: &Interface) -> Paths {
    let mut out = Paths::new();
    let servers = services.iter().flat_map(|s| {
        s.reals.iter().map(|r| (r.address, r.forwarding)).chain(s.sorry_server.map(|a| (a, s.forwarding)))
    });
    for (address, forwarding) in servers {
        let key = (address, forwarding);
        if out.contains_key(&key) {
            continue;
        }
        match forwarding {
            Forwarding::Tun => {
                if let Ok(route) = net.route_to(address).await {
                    let mtu = route.mtu.unwrap_or(interface.mtu).min(interface.mtu);
                    out.insert(key, NextHop { address: route.gateway.unwrap_or(address), mtu });
                }
            }
            _ => {
                out.insert(key, NextHop { address, mtu: interface.mtu });
            }
        }
    }
    out
}

/// The next-hop addresses whose MACs are needed.
pub fn next_hop_addresses(paths: &Paths) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = paths.values().map(|h| h.address).collect();
    out.sort();
    out.dedup();
    out
}

/// The MACs of `addrs` on interface `index`: what the neighbour table has,
/// after asking the kernel to resolve the rest and waiting up to `wait`.
pub async fn resolve_macs(net: &Net, index: u32, addrs: &[Ipv4Addr], wait: Duration) -> BTreeMap<Ipv4Addr, [u8; 6]> {
    let mut found = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut probed = false;
    loop {
        for &a in addrs {
            if let btree_map::Entry::Vacant(slot) = found.entry(a)
                && let Ok(Some(mac)) = net.neighbour(index, a).await
            {
                slot.insert(mac);
            }
        }
        if found.len() == addrs.len() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        if !probed {
            for &a in addrs.iter().filter(|a| !found.contains_key(a)) {
                if let Err(e) = net.probe_neighbour(index, a).await {
                    tracing::debug!("{e:#}");
                }
            }
            probed = true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keeps the real servers' neighbour entries fresh (the director never talks
/// to them through its own stack, so the kernel would let them go stale and
/// never notice a changed MAC).
pub async fn refresh_neighbours(net: &Net, index: u32, addrs: &[Ipv4Addr]) {
    for &a in addrs {
        if let Err(e) = net.probe_neighbour(index, a).await {
            tracing::debug!("{e:#}");
        }
    }
}
