//! `lbd decap`: the real server's side of TUN for hosts without the `ipip`
//! module. Attaches the decapsulation program to an interface and keeps its
//! three lists current: this host's addresses on that interface (where
//! tunnels end), the directors (where they may come from: `--from`), and
//! this host's VIPs (what they may carry: the addresses on `lo` and
//! `tunl0`, as the LVS-TUN recipe sets them, or `--vip`). Detaches on exit.
//!
//! - [`from`]: `--from` and `--vip`, as given and as read.

pub mod from;

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
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
    addrs: BTreeSet<Ipv4Addr>,
    directors: Directors,
    vips: BTreeSet<Ipv4Addr>,
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
    /// destination).
    pub fn set_addresses(&mut self, addrs: &BTreeSet<Ipv4Addr>) -> Result<()> {
        sync_set(&mut self.ebpf, decap::ADDRS_MAP, decap::MAX_ADDRS, &self.addrs, addrs)?;
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
        sync_set(&mut self.ebpf, decap::SOURCES_MAP, decap::MAX_SOURCES, &old, &new)?;
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
    /// destination).
    pub fn set_vips(&mut self, vips: &BTreeSet<Ipv4Addr>) -> Result<()> {
        sync_set(&mut self.ebpf, decap::VIPS_MAP, decap::MAX_VIPS, &self.vips, vips)?;
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

/// Makes the set map `name` (address → 1) go from `old` to `new`.
fn sync_set(ebpf: &mut Ebpf, name: &str, max: u32, old: &BTreeSet<Ipv4Addr>, new: &BTreeSet<Ipv4Addr>) -> Result<()> {
    if new.len() > max as usize {
        bail!("{} addresses for {name}, it holds {max}", new.len());
    }
    let map = ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing"))?;
    let mut map: HashMap<_, u32, u8> = HashMap::try_from(map)?;
    for gone in old.difference(new) {
        let _ = map.remove(&u32::from_ne_bytes(gone.octets()));
    }
    for added in new.difference(old) {
        map.insert(u32::from_ne_bytes(added.octets()), 1, 0)?;
    }
    Ok(())
}

/// What `lbd decap` was told.
#[derive(Clone, Debug)]
pub struct Options {
    pub interface: String,
    pub from: FromArg,
    /// Fixed VIPs; empty: the addresses on [`VIP_INTERFACES`], followed.
    pub vips: Vec<Ipv4Addr>,
    /// More tunnel ends besides the interface's own addresses.
    pub extra_addresses: Vec<Ipv4Addr>,
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
    let mut addrs: BTreeSet<Ipv4Addr> = options.extra_addresses.iter().copied().collect();
    match net.interface(interface).await {
        Ok(i) => addrs.extend(i.ipv4),
        Err(e) => tracing::warn!("{e:#}"),
    }
    let vips: BTreeSet<Ipv4Addr> = if options.vips.is_empty() {
        let mut found = BTreeSet::new();
        for name in VIP_INTERFACES {
            match net.ipv4_addresses(name).await {
                Ok(list) => found.extend(list.into_iter().flatten().filter(|a| !a.is_loopback())),
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
    let list = |set: &BTreeSet<Ipv4Addr>| set.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
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
