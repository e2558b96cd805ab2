//! Checks a valid config against the host before anything is attached: the
//! interfaces exist, every DR real server is on the segment of one of them,
//! every TUN and NAT real server is reached through one. And finds where
//! frames for each real server go: the interface, the next hop's address,
//! MAC and path MTU; and tells when a TUN server's route vanishes
//! ([`RouteLoss`]).

use std::{
    collections::{BTreeMap, BTreeSet, btree_map},
    net::IpAddr,
    time::Duration,
};

use crate::{
    config::{Config, ConfigError, ConfigErrors, ServiceConfig},
    log_limit::LogLimiter,
    model::Forwarding,
    netinfo::{Interfaces, Net},
};

/// The director's interfaces, if the config fits this host.
pub async fn check(config: &Config, net: &Net) -> Result<Interfaces, ConfigErrors> {
    let file = config.path.display().to_string();
    let error =
        |line: usize, key: String, message: String| ConfigError { file: file.clone(), line: Some(line), key, message };
    let d = &config.director;
    let interface = net
        .interface(&d.interface)
        .await
        .map_err(|e| ConfigErrors(vec![error(d.interface_line, "director.interface".into(), format!("{e:#}"))]))?;
    let mut errors = Vec::new();
    let mut others = Vec::new();
    for (name, line) in &d.interfaces {
        match net.interface(name).await {
            Ok(i) => others.push(i),
            Err(e) => errors.push(error(*line, "director.interfaces".into(), format!("{e:#}"))),
        }
    }
    let interfaces = Interfaces::new(interface, others);
    for (i, svc) in config.services.iter().enumerate() {
        for (j, real) in svc.reals.iter().enumerate() {
            if let Err(message) = check_real(net, &interfaces, real.address, real.forwarding).await {
                errors.push(error(real.address_line, format!("service[{i}].real[{j}].address"), message));
            }
            if real.forwarding == Forwarding::FullNat && d.fullnat_source.is_empty() {
                errors.push(error(
                    real.line,
                    format!("service[{i}].real[{j}].forwarding"),
                    "full NAT needs local addresses for the clients' side: [director] fullnat_source".into(),
                ));
            }
        }
    }
    // Full NAT's local addresses: the real servers answer to them, so
    // they are the director's own (and reached from the real servers).
    for &a in &d.fullnat_source {
        if !net.route_to(a).await.is_ok_and(|r| r.local) {
            errors.push(error(
                d.fullnat_source_line,
                "director.fullnat_source".into(),
                format!("{a} is not an address of this director (add it to the interface the real servers reach)"),
            ));
        }
    }
    if errors.is_empty() { Ok(interfaces) } else { Err(ConfigErrors(errors)) }
}

/// Whether the kernel forwards IPv4 packets that arrive on `interface`.
fn forwarding_enabled(interface: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{interface}/forwarding")).is_ok_and(|v| v.trim() == "1")
}

/// Whether a real server can be reached the way its forwarding needs: DR
/// on the segment of one of the interfaces, TUN and NAT through one of
/// them; never one of the director's own addresses.
pub async fn check_real(
    net: &Net,
    interfaces: &Interfaces,
    addr: IpAddr,
    forwarding: Forwarding,
) -> Result<(), String> {
    let route = net.route_to(addr).await.map_err(|e| format!("{e:#}"))?;
    let names = interfaces.names();
    let segment = match interfaces.all() {
        [one] => format!("{}'s segment", one.name),
        _ => format!("the segment of one of {names}"),
    };
    if route.local {
        return Err(format!("{addr} is an address of this director"));
    }
    let through = route.oif.and_then(|i| interfaces.by_index(i));
    match forwarding {
        Forwarding::Tun | Forwarding::Nat | Forwarding::FullNat if through.is_none() => Err(format!(
            "{addr} is not reached through {names}: {} packets leave by {}",
            if forwarding == Forwarding::Tun { "tunnelled" } else { "NAT" },
            if interfaces.all().len() == 1 { "that interface" } else { "one of those interfaces" },
        )),
        Forwarding::Nat | Forwarding::FullNat if through.is_some_and(|i| !forwarding_enabled(&i.name)) => Err(format!(
            "{addr}: NAT replies come back by {0} and are routed to the clients by the kernel's FIB, which needs \
             forwarding there: set net.ipv4.conf.{0}.forwarding = 1 (as IPVS's NAT needs net.ipv4.ip_forward)",
            through.map_or("", |i| i.name.as_str())
        )),
        Forwarding::Tun | Forwarding::Nat | Forwarding::FullNat => Ok(()),
        Forwarding::Dr => match route.gateway {
            Some(gateway) => Err(format!(
                "{addr} is reached through the gateway {gateway}: direct routing needs the real server on \
                 {segment} (use tun or nat for real servers elsewhere)"
            )),
            None if through.is_none() => Err(format!("{addr} is not on {segment}: direct routing needs it there")),
            None => Ok(()),
        },
    }
}

/// Where frames for a real server go: out of a director interface, to the
/// next hop on its segment (the server itself for DR, the kernel's next
/// hop for TUN and NAT), and the path MTU toward it. `address` is of the
/// server's family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    pub ifindex: u32,
    /// The interface's MAC, the frames' source.
    pub src_mac: [u8; 6],
    pub address: IpAddr,
    pub mtu: u32,
}

/// Next hops by (real server, forwarding).
pub type Paths = BTreeMap<(IpAddr, Forwarding), NextHop>;

/// Every real server (and sorry server) of `services`, with its forwarding.
pub fn servers(services: &[ServiceConfig]) -> BTreeSet<(IpAddr, Forwarding)> {
    services
        .iter()
        .flat_map(|s| {
            s.reals.iter().map(|r| (r.address, r.forwarding)).chain(s.sorry_server.map(|a| (a, s.forwarding)))
        })
        .collect()
}

/// The next hop of every real server (and sorry server) of `services`,
/// from the kernel's routing table. A server without a usable route (yet,
/// or any more: none, or one that leaves by another interface or is local)
/// is left out.
pub async fn paths(services: &[ServiceConfig], net: &Net, interfaces: &Interfaces) -> Paths {
    let mut out = Paths::new();
    for key @ (address, forwarding) in servers(services) {
        let Ok(route) = net.route_to(address).await else {
            continue;
        };
        let Some(interface) = route.oif.and_then(|i| interfaces.by_index(i)) else {
            continue;
        };
        if route.local {
            continue;
        }
        let hop = match forwarding {
            Forwarding::Tun | Forwarding::Nat | Forwarding::FullNat => NextHop {
                ifindex: interface.index,
                src_mac: interface.mac,
                address: route.gateway.unwrap_or(address),
                mtu: route.mtu.unwrap_or(interface.mtu).min(interface.mtu),
            },
            Forwarding::Dr if route.gateway.is_none() => {
                NextHop { ifindex: interface.index, src_mac: interface.mac, address, mtu: interface.mtu }
            }
            Forwarding::Dr => continue,
        };
        out.insert(key, hop);
    }
    out
}

/// TUN real servers the kernel has no usable route to any more, told and
/// counted. They keep the path they had: the datapath's next hop MAC and
/// path MTU stay (the wanted table's `last` paths), rather than no MAC and
/// an MTU of 0, which answered every packet of their connections with
/// "fragmentation needed, MTU 0".
///
/// IPVS's `ip_vs_tunnel_xmit` looks the route up for each packet and drops
/// the packet when there is none (`__ip_vs_get_out_rt`, logged at a bounded
/// rate); the server stays in its service and the schedulers, which know
/// nothing of routes, keep sending it new connections until keepalived's
/// health check takes it out. Here the server also stays in its service,
/// and its packets, old connections and new, go on to the next hop they
/// went to: a route withdrawn from the director (a routing daemon
/// restarting, a route replaced in two steps) says nothing of the next
/// hop's, and where the server is really cut off its health check (through
/// the kernel, which has no route: "network unreachable") takes it out as
/// keepalived's would.
pub struct RouteLoss {
    lost: BTreeSet<(IpAddr, Forwarding)>,
    /// Lookups that found no usable route for a server that needed one.
    count: u64,
    log: LogLimiter<IpAddr>,
}

/// A server still without a route is told again at most this often.
const ROUTE_LOSS_LOG_PERIOD: Duration = Duration::from_secs(60);

impl Default for RouteLoss {
    fn default() -> Self {
        Self { lost: BTreeSet::new(), count: 0, log: LogLimiter::new(ROUTE_LOSS_LOG_PERIOD) }
    }
}

impl RouteLoss {
    /// After a lookup: `found` the paths of `servers` the kernel gave,
    /// `last` the ones before it. Logs (a loss at once, a lasting one at a
    /// bounded rate, the route's return) and counts.
    pub fn update(
        &mut self,
        servers: &BTreeSet<(IpAddr, Forwarding)>,
        found: &Paths,
        last: &Paths,
        now: std::time::Instant,
    ) {
        for key @ (address, _) in servers.iter().filter(|k| !found.contains_key(k)) {
            self.count += 1;
            let kept = last.get(key).map_or_else(
                || "the path the datapath has".to_string(),
                |h| format!("through {} (path MTU {})", h.address, h.mtu),
            );
            if self.lost.insert(*key) {
                tracing::warn!(
                    "{address}: no usable route any more; its connections keep the last path, {kept}, and new ones \
                     go there too until the route is back or its health check takes it out"
                );
            } else if let Some(line) =
                self.log.event(*address, now, || format!("{address}: still no usable route; on the last path, {kept}"))
            {
                tracing::warn!("{line}");
            }
        }
        let back: Vec<_> =
            self.lost.iter().filter(|k| !servers.contains(k) || found.contains_key(k)).copied().collect();
        for key in back {
            self.lost.remove(&key);
            if let Some(hop) = found.get(&key) {
                tracing::info!("{}: routed again, through {} (path MTU {})", key.0, hop.address, hop.mtu);
            }
        }
    }

    /// Lookups so far that found no usable route for a server.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// A next hop as a neighbour: the interface it is on and its address.
pub type Neighbour = (u32, IpAddr);

/// The next hops whose MACs are needed.
pub fn next_hop_addresses(paths: &Paths) -> Vec<Neighbour> {
    let mut out: Vec<Neighbour> = paths.values().map(|h| (h.ifindex, h.address)).collect();
    out.sort();
    out.dedup();
    out
}

/// The MACs of `hops`: what the neighbour table has, after asking the
/// kernel to resolve the rest and waiting up to `wait`.
pub async fn resolve_macs(net: &Net, hops: &[Neighbour], wait: Duration) -> BTreeMap<IpAddr, [u8; 6]> {
    let mut found = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + wait;
    let mut probed = false;
    loop {
        for &(index, a) in hops {
            if let btree_map::Entry::Vacant(slot) = found.entry(a)
                && let Ok(Some(mac)) = net.neighbour(index, a).await
            {
                slot.insert(mac);
            }
        }
        if found.len() == hops.len() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        if !probed {
            for &(index, a) in hops.iter().filter(|(_, a)| !found.contains_key(a)) {
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
pub async fn refresh_neighbours(net: &Net, hops: &[Neighbour]) {
    for &(index, a) in hops {
        if let Err(e) = net.probe_neighbour(index, a).await {
            tracing::debug!("{e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_lost_route_is_counted_on_every_lookup_until_it_is_back() {
        let [a, b] = [21, 22].map(|last| (IpAddr::from([10, 0, 1, last]), Forwarding::Tun));
        let router = IpAddr::from([10, 0, 0, 254]);
        let hop = NextHop { ifindex: 2, src_mac: [2, 0, 0, 0, 0, 1], address: router, mtu: 1480 };
        let servers = BTreeSet::from([a, b]);
        let both: Paths = [(a, hop), (b, hop)].into();
        let only_a: Paths = [(a, hop)].into();
        let mut loss = RouteLoss::default();
        let now = Instant::now();
        loss.update(&servers, &both, &Paths::new(), now);
        assert_eq!(loss.count(), 0);
        loss.update(&servers, &only_a, &both, now);
        loss.update(&servers, &only_a, &only_a, now);
        assert_eq!((loss.count(), loss.lost.clone()), (2, BTreeSet::from([b])));
        loss.update(&servers, &both, &only_a, now);
        assert_eq!((loss.count(), loss.lost.len()), (2, 0));
        // A server that left the table is no loss.
        loss.update(&servers, &only_a, &both, now);
        loss.update(&BTreeSet::from([a]), &only_a, &only_a, now);
        assert_eq!((loss.count(), loss.lost.len()), (3, 0));
    }
}
