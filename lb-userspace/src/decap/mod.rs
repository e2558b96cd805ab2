//! `lbd decap`: the real server's side of TUN for hosts without the `ipip`
//! (or `ip6_tunnel`) module. Attaches the decapsulation program to an
//! interface and keeps its three lists current: this host's addresses on
//! that interface (where tunnels end; IPv6's link-local ones are not), the
//! directors (where they may come from: `--from`), and this host's VIPs
//! (what they may carry: the addresses on `lo` and `tunl0`, as the LVS-TUN
//! recipe sets them, or `--vip`). Each list holds both families, and each
//! family goes to its own map. Detaches on exit.
//!
//! - [`from`]: `--from` and `--vip`, as given and as read.

pub mod from;

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, Pod,
    maps::{Array, HashMap, PerCpuArray},
    programs::{Xdp, XdpMode},
};
use lb_common::decap;

pub use self::from::{Directors, FromArg, VIP_INTERFACES};
use crate::netinfo::Net;

/// How often the interfaces' addresses are looked at.
const REFRESH: Duration = Duration::from_secs(2);

/// The decapsulation program and its maps. Dropping it detaches it.
pub struct Decap {
    ebpf: Ebpf,
    addrs: BTreeSet<IpAddr>,
    directors: Directors,
    vips: BTreeSet<IpAddr>,
}

impl Decap {
    /// Loads the program, attached nowhere, opening no tunnel yet (no
    /// director, no VIP).
    pub fn load() -> Result<Self> {
        let mut ebpf = Ebpf::load(crate::DECAP_OBJECT).context("load the decap object")?;
        let program: &mut Xdp = ebpf
            .program_mut(decap::PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing", decap::PROGRAM))?
            .try_into()?;
        program.load().context("the kernel refused the decap program")?;
        Ok(Self { ebpf, addrs: BTreeSet::new(), directors: Directors::Listed(BTreeSet::new()), vips: BTreeSet::new() })
    }

    /// Attaches the program to `interface`.
    pub fn attach(&mut self, interface: &str) -> Result<()> {
        let program: &mut Xdp = self
            .ebpf
            .program_mut(decap::PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing", decap::PROGRAM))?
            .try_into()?;
        program.attach(interface, XdpMode::default()).with_context(|| format!("attach to {interface}"))?;
        Ok(())
    }

    /// The loaded program (for test runs).
    pub fn program(&self) -> &Xdp {
        self.ebpf.program(decap::PROGRAM).expect("loaded").try_into().expect("an XDP program")
    }

    /// Makes the program open tunnels to exactly these addresses (outer
    /// destination), of either family.
    pub fn set_addresses(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<()> {
        let maps = [decap::ADDRS_MAP, decap::ADDRS6_MAP];
        sync_sets(&mut self.ebpf, maps, decap::MAX_ADDRS, &self.addrs, addrs)?;
        self.addrs = addrs.clone();
        Ok(())
    }

    /// Makes the program open tunnels from exactly these directors (outer
    /// source), or from anyone.
    pub fn set_directors(&mut self, directors: &Directors) -> Result<()> {
        let listed = |d: &Directors| match d {
            Directors::Any => BTreeSet::new(),
            Directors::Listed(list) => list.clone(),
        };
        let (old, new) = (listed(&self.directors), listed(directors));
        // Anyone is let in before the list empties, and only after it
        // filled (no director refused in between).
        if *directors == Directors::Any {
            self.set_flags(decap::ANY_SOURCE)?;
        }
        sync_sets(&mut self.ebpf, [decap::SOURCES_MAP, decap::SOURCES6_MAP], decap::MAX_SOURCES, &old, &new)?;
        if *directors != Directors::Any {
            self.set_flags(0)?;
        }
        self.directors = directors.clone();
        Ok(())
    }

    fn set_flags(&mut self, flags: u32) -> Result<()> {
        let map = self.ebpf.map_mut(decap::CONFIG_MAP).ok_or_else(|| anyhow!("map {} missing", decap::CONFIG_MAP))?;
        let mut config: Array<_, u32> = Array::try_from(map)?;
        config.set(0, flags, 0)?;
        Ok(())
    }

    /// Makes the program unwrap only packets for these VIPs (inner
    /// destination), of either family.
    pub fn set_vips(&mut self, vips: &BTreeSet<IpAddr>) -> Result<()> {
        sync_sets(&mut self.ebpf, [decap::VIPS_MAP, decap::VIPS6_MAP], decap::MAX_VIPS, &self.vips, vips)?;
        self.vips = vips.clone();
        Ok(())
    }

    /// The counters, by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let Some(map) = self.ebpf.map(decap::STATS_MAP) else { return Vec::new() };
        let Ok(array) = PerCpuArray::<_, u64>::try_from(map) else { return Vec::new() };
        decap::NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| (*name, array.get(&(i as u32), 0).map(|v| v.iter().sum()).unwrap_or(0)))
            .collect()
    }
}

/// Makes the set maps `names` (IPv4's, IPv6's: address → 1) go from `old`
/// to `new`, each of them holding `max`; neither is touched when one would
/// overflow.
fn sync_sets(
    ebpf: &mut Ebpf,
    names: [&str; 2],
    max: u32,
    old: &BTreeSet<IpAddr>,
    new: &BTreeSet<IpAddr>,
) -> Result<()> {
    let ((old4, old6), (new4, new6)) = (by_family(old), by_family(new));
    for (name, count) in [(names[0], new4.len()), (names[1], new6.len())] {
        if count > max as usize {
            bail!("{count} addresses for {name}, it holds {max}");
        }
    }
    sync_set(ebpf, names[0], &old4, &new4)?;
    sync_set(ebpf, names[1], &old6, &new6)
}

/// The IPv4 addresses as the IPv4 maps' keys (network order), the IPv6
/// ones as the IPv6 maps' (as [`lb_common::ipv6_words`] stores them).
fn by_family(set: &BTreeSet<IpAddr>) -> (BTreeSet<u32>, BTreeSet<[u32; 4]>) {
    let mut v4 = BTreeSet::new();
    let mut v6 = BTreeSet::new();
    for a in set {
        match a {
            IpAddr::V4(a) => v4.insert(u32::from_ne_bytes(a.octets())),
            IpAddr::V6(a) => v6.insert(lb_common::ipv6_words(a.octets())),
        };
    }
    (v4, v6)
}

/// Makes the set map `name` (key → 1) go from `old` to `new`.
fn sync_set<K: Pod + Ord>(ebpf: &mut Ebpf, name: &str, old: &BTreeSet<K>, new: &BTreeSet<K>) -> Result<()> {
    let map = ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing"))?;
    let mut map: HashMap<_, K, u8> = HashMap::try_from(map)?;
    for gone in old.difference(new) {
        let _ = map.remove(gone);
    }
    for added in new.difference(old) {
        map.insert(*added, 1, 0)?;
    }
    Ok(())
}

/// Whether `a`, found on the interface tunnels arrive on, is where a
/// tunnel may end: IPv6's link-local addresses are not (the global ones
/// are, as are all of IPv4's).
fn tunnel_end(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(_) => true,
        IpAddr::V6(a) => !a.is_unicast_link_local(),
    }
}

/// Whether `a`, found on one of [`VIP_INTERFACES`], is a VIP: not
/// 127.0.0.0/8, `::1` or a link-local address.
fn is_vip(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => !a.is_loopback(),
        IpAddr::V6(a) => !a.is_loopback() && !a.is_unicast_link_local(),
    }
}

/// What `lbd decap` was told.
#[derive(Clone, Debug)]
pub struct Options {
    pub interface: String,
    pub from: FromArg,
    /// Fixed VIPs, of either family; empty: the addresses on
    /// [`VIP_INTERFACES`], followed.
    pub vips: Vec<IpAddr>,
    /// More tunnel ends besides the interface's own addresses.
    pub extra_addresses: Vec<IpAddr>,
}

/// Runs until SIGTERM or SIGINT: attaches, follows the interface's
/// addresses and the VIPs, reads `--from`'s files again on SIGHUP,
/// detaches on the way out (dropping the program detaches it).
pub async fn run(options: &Options) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interface = options.interface.as_str();
    // Everything the program needs is read before it is attached.
    let directors = options.from.read()?;
    let net = Net::open()?;
    let mut decap = Decap::load()?;
    decap.set_directors(&directors)?;
    if directors == Directors::Any {
        tracing::warn!("--from any: tunnels from any source are opened, as if their packets had arrived natively");
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut refresh = tokio::time::interval(REFRESH);
    let mut attached = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match options.from.read() {
                Ok(directors) if directors == decap.directors => tracing::info!("SIGHUP: the directors are unchanged"),
                Ok(directors) => {
                    decap.set_directors(&directors)?;
                    tracing::info!("SIGHUP: tunnels from {} now", directors);
                }
                Err(e) => tracing::error!("SIGHUP: {e:#}; the directors stay {}", decap.directors),
            },
            _ = refresh.tick() => {
                refresh_lists(&net, &mut decap, options).await?;
                if !attached {
                    decap.attach(interface)?;
                    attached = true;
                }
            }
        }
    }
    let counts: Vec<String> = decap.counters().iter().map(|(n, v)| format!("{n} {v}")).collect();
    tracing::info!("detaching from {interface} ({})", counts.join(", "));
    drop(decap);
    Ok(())
}

/// Reads the interface's addresses and the VIPs, and updates the program's
/// lists when they changed (with a log line).
async fn refresh_lists(net: &Net, decap: &mut Decap, options: &Options) -> Result<()> {
    let interface = options.interface.as_str();
    let mut addrs: BTreeSet<IpAddr> = options.extra_addresses.iter().copied().collect();
    match net.addresses(interface).await {
        Ok(Some(list)) => addrs.extend(list.into_iter().filter(tunnel_end)),
        Ok(None) => tracing::warn!("no interface named \"{interface}\""),
        Err(e) => tracing::warn!("{e:#}"),
    }
    let vips: BTreeSet<IpAddr> = if options.vips.is_empty() {
        let mut found = BTreeSet::new();
        for name in VIP_INTERFACES {
            match net.addresses(name).await {
                Ok(list) => found.extend(list.into_iter().flatten().filter(is_vip)),
                Err(e) => tracing::warn!("addresses of {name}: {e:#}"),
            }
        }
        found
    } else {
        options.vips.iter().copied().collect()
    };
    if addrs == decap.addrs && vips == decap.vips {
        return Ok(());
    }
    decap.set_addresses(&addrs)?;
    decap.set_vips(&vips)?;
    let list = |set: &BTreeSet<IpAddr>| set.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
    let vips_from =
        if options.vips.is_empty() { format!("on {}", VIP_INTERFACES.join(" and ")) } else { "--vip".into() };
    if vips.is_empty() {
        tracing::warn!("no VIPs ({vips_from}): nothing is decapsulated until there are");
    }
    tracing::info!(
        "decapsulating IP-in-IP on {interface}: to {}, from {}, for VIPs {} ({vips_from})",
        list(&addrs),
        decap.directors,
        list(&vips),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(a: &str) -> IpAddr {
        a.parse().unwrap()
    }

    #[test]
    fn which_addresses_are_tunnel_ends_and_vips() {
        assert!(tunnel_end(&ip("10.0.1.21")) && tunnel_end(&ip("2001:db8:1::21")) && tunnel_end(&ip("fd00::21")));
        assert!(!tunnel_end(&ip("fe80::ee:aff:fe00:115")));
        assert!(is_vip(&ip("10.0.0.100")) && is_vip(&ip("2001:db8::100")));
        for not_a_vip in ["127.0.0.1", "127.0.1.1", "::1", "fe80::1"] {
            assert!(!is_vip(&ip(not_a_vip)), "{not_a_vip}");
        }
    }

    #[test]
    fn each_family_has_its_own_keys() {
        let set: BTreeSet<IpAddr> = [ip("10.0.0.1"), ip("2001:db8::1")].into_iter().collect();
        let (v4, v6) = by_family(&set);
        assert_eq!(v4, [u32::from_ne_bytes([10, 0, 0, 1])].into_iter().collect());
        let octets = "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!(v6, [lb_common::ipv6_words(octets)].into_iter().collect());
    }
}
