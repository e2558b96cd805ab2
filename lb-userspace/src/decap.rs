//! `lbd decap`: the real server's side of TUN for hosts without the `ipip`
//! module. Attaches the decapsulation program to an interface, keeps its
//! list of this host's addresses current, detaches on exit.

use std::{collections::BTreeSet, net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap, PerCpuArray},
    programs::{Xdp, XdpMode},
};
use lb_common::decap;

use crate::netinfo::Net;

pub struct Decap {
    ebpf: Ebpf,
    addrs: BTreeSet<Ipv4Addr>,
}

impl Decap {
    /// Loads the program and attaches it to `interface`.
    pub fn attach(interface: &str) -> Result<Self> {
        let mut ebpf = Ebpf::load(crate::DECAP_OBJECT).context("load the decap object")?;
        let program: &mut Xdp = ebpf
            .program_mut(decap::PROGRAM)
            .ok_or_else(|| anyhow!("program {} missing", decap::PROGRAM))?
            .try_into()?;
        program.load().context("the kernel refused the decap program")?;
        program.attach(interface, XdpMode::default()).with_context(|| format!("attach to {interface}"))?;
        Ok(Self { ebpf, addrs: BTreeSet::new() })
    }

    /// Makes the program open tunnels to exactly these addresses.
    pub fn set_addresses(&mut self, addrs: &BTreeSet<Ipv4Addr>) -> Result<()> {
        let map = self.ebpf.map_mut(decap::ADDRS_MAP).ok_or_else(|| anyhow!("map {} missing", decap::ADDRS_MAP))?;
        let mut map: HashMap<_, u32, u8> = HashMap::try_from(map)?;
        for gone in self.addrs.difference(addrs) {
            let _ = map.remove(&u32::from_ne_bytes(gone.octets()));
        }
        for new in addrs.difference(&self.addrs) {
            map.insert(u32::from_ne_bytes(new.octets()), 1, 0)?;
        }
        self.addrs = addrs.clone();
        Ok(())
    }

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

/// Runs until SIGTERM or SIGINT: attaches, follows the interface's
/// addresses (plus `extra`), detaches on the way out (dropping the program
/// detaches it).
pub async fn run(interface: &str, extra: &[Ipv4Addr]) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let net = Net::open()?;
    let mut decap = Decap::attach(interface)?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut refresh = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = refresh.tick() => {
                let mut addrs: BTreeSet<Ipv4Addr> = extra.iter().copied().collect();
                match net.interface(interface).await {
                    Ok(i) => addrs.extend(i.ipv4),
                    Err(e) => tracing::warn!("{e:#}"),
                }
                if addrs != decap.addrs {
                    let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
                    tracing::info!("decapsulating IP-in-IP to {} on {interface}", list.join(", "));
                    decap.set_addresses(&addrs)?;
                }
            }
        }
    }
    let counts: Vec<String> = decap.counters().iter().map(|(n, v)| format!("{n} {v}")).collect();
    tracing::info!("detaching from {interface} ({})", counts.join(", "));
    drop(decap);
    Ok(())
}
