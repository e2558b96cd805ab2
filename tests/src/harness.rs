//! The real XDP program, loaded as lbd loads it (same object, same map
//! writer), run on crafted packets with BPF_PROG_TEST_RUN.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions};
use lb_common::{Director, conn_state};
use lb_userspace::{
    datapath::{Datapath, LoadOptions},
    model::{Forwarding, MarkMatch, Protocol, Scheduler, ServiceId},
    tables::{Tables, TxPort, WantedReal, WantedService},
};

use crate::packets::DIRECTOR_MAC;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// The MAC the harness gives the real server with this address (its last
/// four octets).
pub fn real_mac(addr: impl Into<IpAddr>) -> [u8; 6] {
    let o = match addr.into() {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(a) => {
            let o = a.octets();
            [o[12], o[13], o[14], o[15]]
        }
    };
    [0x02, 0xee, o[0], o[1], o[2], o[3]]
}

/// A service with real servers (address, weight), MACs from [`real_mac`].
pub fn service<A: Into<IpAddr> + Copy>(
    protocol: Protocol,
    vip: impl Into<IpAddr>,
    port: u16,
    scheduler: Scheduler,
    reals: &[(A, u32)],
) -> WantedService {
    WantedService {
        protocol,
        vip: vip.into(),
        port,
        fwmark: 0,
        matches: Vec::new(),
        scheduler,
        options: Default::default(),
        reals: reals
            .iter()
            .map(|&(address, weight)| WantedReal {
                address: address.into(),
                port: 0,
                weight,
                forwarding: Forwarding::Dr,
                mac: Some(real_mac(address)),
                mtu: 1500,
                // Back out of the interface it came in on, from the director's MAC.
                port_out: TxPort { ifindex: 0, mac: DIRECTOR_MAC },
                upper_threshold: 0,
                lower_threshold: 0,
                in_service: true,
                expire_conns: false,
            })
            .collect(),
    }
}

/// Firewall-mark service `mark` taking `matches`' packets, over real
/// servers (address, weight) as [`service`]'s.
pub fn mark_service<A: Into<IpAddr> + Copy>(
    mark: u32,
    matches: Vec<MarkMatch>,
    scheduler: Scheduler,
    reals: &[(A, u32)],
) -> WantedService {
    let id = ServiceId::fwmark(mark, matches.first().is_some_and(|m| m.net.is_ipv6()));
    WantedService { fwmark: mark, matches, ..service(id.protocol, id.vip, 0, scheduler, reals) }
}

/// A match of `protocol` packets to the network `net` ("10.1.0.0/24", or
/// an address alone) on these ports (each an inclusive range).
pub fn mark_match(protocol: Protocol, net: &str, ports: &[(u16, u16)]) -> MarkMatch {
    let (addr, prefix) = net.split_once('/').unwrap_or((net, ""));
    let net: IpAddr = addr.parse().expect("an address");
    let full = if net.is_ipv6() { 128 } else { 32 };
    MarkMatch { protocol, net, prefix_len: prefix.parse().unwrap_or(full), ports: ports.to_vec() }
}

pub struct Harness {
    pub datapath: Datapath,
    pub tables: Tables,
}

/// What the program did with one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: u32,
    pub output: Vec<u8>,
}

impl Harness {
    /// Loads a fresh program with fresh maps (nothing pinned).
    pub fn new() -> Result<Self> {
        Self::with_conn_table_size(65536)
    }

    /// As [`Harness::new`], with a connection table of this many entries.
    pub fn with_conn_table_size(entries: u32) -> Result<Self> {
        let datapath = Datapath::load(&LoadOptions { conn_table_size: entries, ..Default::default() })
            .context("load the XDP program (root needed)")?;
        let mut h = Self { datapath, tables: Tables::new() };
        h.set_timeouts(conn_state::default_timeouts())?;
        Ok(h)
    }

    pub fn set_timeouts(&mut self, state_timeouts: [u32; conn_state::COUNT]) -> Result<()> {
        self.datapath.set_director(&Director { ifindex: 1, mac: DIRECTOR_MAC, state_timeouts, ..Director::default() })
    }

    /// Makes the maps hold exactly these services (the same planning and
    /// map writes lbd does).
    pub fn apply(&mut self, services: &[WantedService]) -> Result<()> {
        let datapath = &self.datapath;
        let planned = self.tables.plan(services, &|id| datapath.sched_position(id))?;
        self.datapath.execute(&planned.ops)?;
        self.tables.commit(planned);
        Ok(())
    }

    /// Runs the program once on `frame`.
    pub fn run(&self, frame: &[u8]) -> Result<Outcome> {
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let result = self.datapath.program().test_run(opts)?;
        out.truncate(result.data_size_out as usize);
        Ok(Outcome { verdict: result.return_value, output: out })
    }

    /// The datapath's verdict-reason counters.
    pub fn reasons(&self) -> BTreeMap<&'static str, u64> {
        self.datapath.reason_counters()
    }
}

/// Counter changes between two readings (only those that changed).
pub fn delta(before: &BTreeMap<&'static str, u64>, after: &BTreeMap<&'static str, u64>) -> BTreeMap<&'static str, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d != 0).then_some((*k, d))
        })
        .collect()
}
