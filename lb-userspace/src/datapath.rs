//! The loaded XDP program and its maps: loading (or adopting what a previous
//! lbd pinned), attaching, and the only code that writes the maps.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf, EbpfLoader, VerifierLogLevel,
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues},
    programs::{
        ProgramError, TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
    },
};
use lb_common::{
    Conn, Counters, Dest, DestConns, Director, FlowKey, SchedState, Service, ServiceKey, conn_state, map_name,
    program_name, reason,
};
use nix::{
    mount::{MsFlags, mount},
    sys::statfs::{BPF_FS_MAGIC, statfs},
};

use crate::{
    config,
    tables::{Adopted, MapOp},
};

/// What the clock program returns (the kernel's `XDP_PASS`).
const XDP_PASS: u32 = 2;

/// One reading of the datapath's clock sources.
struct ClockSample {
    jiffies: u64,
    /// CLOCK_MONOTONIC, ns.
    monotonic_ns: u64,
}

fn read_clock(program: &Xdp) -> Result<ClockSample> {
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&frame);
    opts.data_out = Some(&mut out);
    let result = program.test_run(opts).context("run the clock program")?;
    if result.return_value != XDP_PASS {
        bail!("the clock program returned {}", result.return_value);
    }
    let word = |i: usize| u64::from_ne_bytes(out[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    Ok(ClockSample { jiffies: word(0), monotonic_ns: word(1) })
}

/// The error for a program the kernel refused: the verifier's figures and
/// last lines, and what to do.
fn refused(program: &str, error: ProgramError) -> anyhow::Error {
    match error {
        ProgramError::LoadError { io_error, verifier_log } => {
            anyhow!(crate::verifier::explain_refusal(program, &io_error, &verifier_log.to_string()))
        }
        other => anyhow::Error::new(other).context(format!("load the program {program}")),
    }
}

/// The kernel's tick in ns (1e9 / HZ), measured once per process: HZ is a
/// build option of the kernel that no interface reports. Two readings
/// 200 ms apart, rounded to the nearest HZ a kernel can be built with.
fn tick_ns(clock: &Xdp) -> Result<u32> {
    static TICK_NS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if let Some(t) = TICK_NS.get() {
        return Ok(*t);
    }
    let first = read_clock(clock)?;
    std::thread::sleep(std::time::Duration::from_millis(200));
    let second = read_clock(clock)?;
    let elapsed_ns = second.monotonic_ns.saturating_sub(first.monotonic_ns).max(1);
    let ticks = second.jiffies.saturating_sub(first.jiffies);
    let hz = nearest_hz(ticks as f64 * 1e9 / elapsed_ns as f64)
        .ok_or_else(|| anyhow!("cannot tell the kernel's HZ: {ticks} jiffies in {elapsed_ns} ns"))?;
    let tick = 1_000_000_000 / hz;
    tracing::debug!("kernel HZ {hz}: the datapath clock advances {tick} ns a tick");
    Ok(*TICK_NS.get_or_init(|| tick))
}

/// The kernel HZ (CONFIG_HZ) closest to a measured tick rate, if one is
/// within 10%.
fn nearest_hz(measured: f64) -> Option<u32> {
    [100u32, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| (f64::from(*a) - measured).abs().total_cmp(&(f64::from(*b) - measured).abs()))
        .filter(|hz| (f64::from(*hz) - measured).abs() <= f64::from(*hz) / 10.0)
}

/// Maps that outlive lbd when pinned: everything the datapath needs to keep
/// forwarding, and the counters.
const PINNED_MAPS: [&str; 13] = [
    map_name::DIRECTOR,
    map_name::SERVICES,
    map_name::VIP_FILTER,
    map_name::SERVICE_FLAGS,
    map_name::DESTS,
    map_name::DEST_LISTS,
    map_name::SCHED_TABLE,
    map_name::SCHED_STATE,
    map_name::CONN_TABLE,
    map_name::DEST_CONNS,
    map_name::SERVICE_STATS,
    map_name::DEST_STATS,
    map_name::REASON_STATS,
];

/// Bumped whenever a map's layout changes, so a new lbd never adopts maps
/// with an old layout (they live in a different directory).
const MAP_LAYOUT_VERSION: u32 = 4;
/// The XDP link's pin, per interface (a config that moves to another
/// interface detaches the old one).
fn link_pin_name(interface: &str) -> String {
    format!("xdp_link_{interface}")
}

#[derive(Default)]
pub struct LoadOptions {
    pub conn_table_size: u32,
    /// bpffs directory to pin in and adopt from; `None` pins nothing.
    pub pin_path: Option<PathBuf>,
    /// An eBPF object file to load instead of the one built into lbd (a
    /// test of how a refusal is reported; a datapath built otherwise).
    pub object: Option<PathBuf>,
}

pub struct Datapath {
    ebpf: Ebpf,
    /// `DEST_CONNS`, mapped into our memory so the controller can adjust
    /// counts atomically alongside the datapath.
    dest_conns: MappedArray<DestConns>,
    pin_dir: Option<PathBuf>,
    /// The maps already existed (a previous lbd's state was adopted).
    adopted: bool,
    link: Option<AttachedLink>,
    /// Nanoseconds per kernel tick, the unit of the datapath's clock.
    tick_ns: u32,
}

enum AttachedLink {
    Pinned(PinnedLink),
    Owned(aya::programs::xdp::XdpLinkId),
}

impl Datapath {
    /// Loads the program and creates its maps, or reuses the maps pinned
    /// under `pin_path` by a previous lbd (connections and counters survive).
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let pin_dir = opts.pin_path.as_ref().map(|p| p.join(format!("v{MAP_LAYOUT_VERSION}")));
        let mut loader = EbpfLoader::new();
        // A refusal then costs one more verification, with only the
        // statistics and the error logged (not every instruction, which for
        // a large program takes minutes and retries).
        loader.verifier_log_level(VerifierLogLevel::STATS);
        loader.map_max_entries(map_name::CONN_TABLE, opts.conn_table_size);
        let mut adopted = false;
        let pin_paths: Vec<(&str, PathBuf)> = match &pin_dir {
            Some(dir) => {
                ensure_bpffs(dir)?;
                adopted = dir.join(map_name::SERVICES).exists();
                PINNED_MAPS.iter().map(|name| (*name, dir.join(name))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = match &opts.object {
            Some(path) => loader.load_file(path).with_context(|| format!("load the eBPF object {}", path.display()))?,
            None => loader.load(crate::EBPF_OBJECT).context("load the eBPF object")?,
        };
        let program: &mut Xdp = ebpf
            .program_mut(program_name::LB)
            .ok_or_else(|| anyhow!("program {} missing from the object", program_name::LB))?
            .try_into()?;
        let started = std::time::Instant::now();
        program.load().map_err(|e| refused(program_name::LB, e))?;
        let processed = program.info().ok().and_then(|i| i.verified_instruction_count());
        tracing::info!(
            "the kernel verified {} in {:.0?}: {} instructions processed (budget {})",
            program_name::LB,
            started.elapsed(),
            processed.map_or_else(|| "an unknown number of".into(), |n| n.to_string()),
            crate::verifier::VERIFIER_BUDGET_INSNS,
        );
        let clock: &mut Xdp = ebpf
            .program_mut(program_name::CLOCK)
            .ok_or_else(|| anyhow!("program {} missing from the object", program_name::CLOCK))?
            .try_into()?;
        clock.load().map_err(|e| refused(program_name::CLOCK, e))?;
        let tick_ns = tick_ns(clock)?;
        let dest_conns = {
            let map = ebpf.map(map_name::DEST_CONNS).ok_or_else(|| anyhow!("map DEST_CONNS missing"))?;
            let aya::maps::Map::Array(data) = map else { bail!("DEST_CONNS is not an array") };
            MappedArray::new(data, lb_common::MAX_DESTS as usize)?
        };
        Ok(Self { ebpf, dest_conns, pin_dir, adopted, link: None, tick_ns })
    }

    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf.program(program_name::LB).expect("loaded").try_into().expect("an XDP program")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf.program_mut(program_name::LB).expect("loaded").try_into().expect("an XDP program")
    }

    /// Attaches to `interface`. A link a previous lbd pinned is taken over
    /// with an atomic program replacement, so forwarding never stops.
    pub fn attach(&mut self, interface: &str, mode: config::XdpMode) -> Result<()> {
        let pinned_link = self.pin_dir.as_ref().map(|d| d.join(link_pin_name(interface)));
        if let Some(dir) = &self.pin_dir {
            remove_other_link_pins(dir, interface);
        }
        if let Some(path) = &pinned_link
            && path.exists()
        {
            match self.take_over_link(path) {
                Ok(link) => {
                    self.link = Some(AttachedLink::Pinned(link));
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!("cannot take over the pinned XDP link ({e:#}); attaching anew");
                    let _ = std::fs::remove_file(path);
                }
            }
        }
        let mode = match mode {
            config::XdpMode::Auto => XdpMode::Default,
            config::XdpMode::Native => XdpMode::Driver,
            config::XdpMode::Generic => XdpMode::Skb,
        };
        let program = self.program_mut();
        let id = program.attach(interface, mode).with_context(|| format!("attach XDP to {interface}"))?;
        let Some(path) = pinned_link else {
            self.link = Some(AttachedLink::Owned(id));
            return Ok(());
        };
        let link = program.take_link(id)?;
        match FdLink::try_from(link) {
            Ok(fd_link) => {
                let pinned = fd_link.pin(&path).with_context(|| format!("pin the XDP link at {}", path.display()))?;
                self.link = Some(AttachedLink::Pinned(pinned));
            }
            Err(_) => bail!("the kernel attached XDP without a bpf link (too old for pinning); set pin_path = \"\""),
        }
        Ok(())
    }

    fn take_over_link(&mut self, path: &Path) -> Result<PinnedLink> {
        let fd_link: FdLink = PinnedLink::from_pin(path)?.into();
        let xdp_link = XdpLink::try_from(fd_link)?;
        let program = self.program_mut();
        let id = program.attach_to_link(xdp_link).context("replace the program on the pinned link")?;
        let link = program.take_link(id)?;
        let fd_link = FdLink::try_from(link).map_err(|_| anyhow!("not a bpf link"))?;
        // Re-pinning over the same path: remove the old pin first.
        std::fs::remove_file(path).ok();
        Ok(fd_link.pin(path)?)
    }

    /// Detaches and removes every pin: nothing of the datapath stays.
    pub fn shut_down(mut self) -> Result<()> {
        match self.link.take() {
            Some(AttachedLink::Pinned(link)) => drop(link.unpin()?),
            Some(AttachedLink::Owned(id)) => self.program_mut().detach(id)?,
            None => {}
        }
        if let Some(dir) = &self.pin_dir {
            remove_other_link_pins(dir, "");
            for name in PINNED_MAPS {
                let _ = std::fs::remove_file(dir.join(name));
            }
            let _ = std::fs::remove_dir(dir);
            // pin_path itself (created by load), if nothing else is in it.
            if let Some(pin_path) = dir.parent() {
                let _ = std::fs::remove_dir(pin_path);
            }
        }
        Ok(())
    }

    /// Exits leaving the program attached and the maps pinned, for the next
    /// lbd to adopt.
    pub fn leave_running(mut self) {
        if let Some(AttachedLink::Pinned(link)) = self.link.take() {
            // Dropping a pinned link only closes our fd; the pin keeps it.
            drop(link);
        }
        std::mem::forget(self.ebpf);
    }

    fn array<T: aya::Pod>(&mut self, name: &str) -> Result<Array<&mut MapData, T>> {
        let map = self.ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing"))?;
        Ok(Array::try_from(map)?)
    }

    fn per_cpu_array<T: aya::Pod>(&mut self, name: &str) -> Result<PerCpuArray<&mut MapData, T>> {
        let map = self.ebpf.map_mut(name).ok_or_else(|| anyhow!("map {name} missing"))?;
        Ok(PerCpuArray::try_from(map)?)
    }

    fn services_map(&mut self) -> Result<HashMap<&mut MapData, ServiceKey, Service>> {
        let map = self.ebpf.map_mut(map_name::SERVICES).ok_or_else(|| anyhow!("map SERVICES missing"))?;
        Ok(HashMap::try_from(map)?)
    }

    fn conn_map(&self) -> Result<HashMap<&MapData, FlowKey, Conn>> {
        let map = self.ebpf.map(map_name::CONN_TABLE).ok_or_else(|| anyhow!("map CONN_TABLE missing"))?;
        Ok(HashMap::try_from(map)?)
    }

    /// Writes the director's settings, with the datapath clock's tick
    /// (which only the loader knows) filled in.
    pub fn set_director(&mut self, director: &Director) -> Result<()> {
        let director = Director { tick_ns: self.tick_ns, ..*director };
        self.array::<Director>(map_name::DIRECTOR)?.set(0, director, 0)?;
        Ok(())
    }

    pub fn tick_ns(&self) -> u32 {
        self.tick_ns
    }

    /// Now on the datapath's clock (what connection entries are stamped
    /// with). 0 if the clock cannot be read, which makes every entry look
    /// fresh: the controller then expires nothing, and the datapath still
    /// replaces expired entries itself.
    pub fn now_ns(&self) -> u64 {
        match self.clock_program().and_then(read_clock) {
            Ok(sample) => sample.jiffies.wrapping_mul(u64::from(self.tick_ns)),
            Err(e) => {
                tracing::warn!("cannot read the datapath clock: {e:#}");
                0
            }
        }
    }

    fn clock_program(&self) -> Result<&Xdp> {
        let program = self.ebpf.program(program_name::CLOCK).ok_or_else(|| anyhow!("clock program missing"))?;
        Ok(program.try_into()?)
    }

    pub fn director(&self) -> Result<Director> {
        let map = self.ebpf.map(map_name::DIRECTOR).ok_or_else(|| anyhow!("map DIRECTOR missing"))?;
        Ok(Array::<_, Director>::try_from(map)?.get(&0, 0)?)
    }

    /// Carries out planned writes, in order.
    pub fn execute(&mut self, ops: &[MapOp]) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        for op in ops {
            match op {
                MapOp::SetDest(id, dest) => self.array::<Dest>(map_name::DESTS)?.set(*id, dest, 0)?,
                MapOp::ZeroDestStats(id) => {
                    let zero = PerCpuValues::try_from(vec![Counters::default(); cpus])?;
                    self.per_cpu_array::<Counters>(map_name::DEST_STATS)?.set(*id, zero, 0)?;
                    self.dest_conns.reset(*id as usize);
                }
                MapOp::ZeroServiceStats(id) => {
                    let zero = PerCpuValues::try_from(vec![Counters::default(); cpus])?;
                    self.per_cpu_array::<Counters>(map_name::SERVICE_STATS)?.set(*id, zero, 0)?
                }
                MapOp::SetSchedTable { start, dest_ids } => {
                    let mut table = self.array::<u32>(map_name::SCHED_TABLE)?;
                    for (i, id) in dest_ids.iter().enumerate() {
                        table.set(start + i as u32, id, 0)?;
                    }
                }
                MapOp::SetDestList { start, dest_ids } => {
                    let mut list = self.array::<u32>(map_name::DEST_LISTS)?;
                    for (i, id) in dest_ids.iter().enumerate() {
                        list.set(start + i as u32, id, 0)?;
                    }
                }
                MapOp::SetService(key, value) => self.services_map()?.insert(key, value, 0)?,
                MapOp::DeleteService(key) => self.services_map()?.remove(key)?,
                MapOp::SetVipFilter(words) => {
                    let mut filter = self.array::<u64>(map_name::VIP_FILTER)?;
                    for (i, w) in words.iter().enumerate() {
                        filter.set(i as u32, w, 0)?;
                    }
                }
                MapOp::SetServiceFlags(id, flags) => self.array::<u32>(map_name::SERVICE_FLAGS)?.set(*id, flags, 0)?,
                MapOp::SetSchedPosition(id, position) => {
                    self.array::<SchedState>(map_name::SCHED_STATE)?.set(*id, SchedState { position: *position }, 0)?
                }
            }
        }
        Ok(())
    }

    pub fn sched_position(&self, service_id: u32) -> u64 {
        let Some(map) = self.ebpf.map(map_name::SCHED_STATE) else { return 0 };
        Array::<_, SchedState>::try_from(map).and_then(|a| a.get(&service_id, 0)).map_or(0, |s| s.position)
    }

    fn summed(&self, name: &str, index: u32) -> Counters {
        let Some(map) = self.ebpf.map(name) else { return Counters::default() };
        let Ok(array) = PerCpuArray::<_, Counters>::try_from(map) else { return Counters::default() };
        let Ok(values) = array.get(&index, 0) else { return Counters::default() };
        values.iter().fold(Counters::default(), |mut sum, c| {
            sum.conns += c.conns;
            sum.in_packets += c.in_packets;
            sum.in_bytes += c.in_bytes;
            sum.out_packets += c.out_packets;
            sum.out_bytes += c.out_bytes;
            sum
        })
    }

    pub fn service_counters(&self, service_id: u32) -> Counters {
        self.summed(map_name::SERVICE_STATS, service_id)
    }

    pub fn dest_counters(&self, dest_id: u32) -> Counters {
        self.summed(map_name::DEST_STATS, dest_id)
    }

    /// Every verdict-reason counter, summed over CPUs, by name.
    pub fn reason_counters(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        let Some(map) = self.ebpf.map(map_name::REASON_STATS) else { return out };
        let Ok(array) = PerCpuArray::<_, u64>::try_from(map) else { return out };
        for (i, name) in reason::all() {
            let total = array.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
            out.insert(name, total);
        }
        out
    }

    /// The real server's connection counts as the datapath keeps them.
    pub fn dest_conns(&self, dest_id: u32) -> DestConns {
        self.dest_conns.load(dest_id as usize)
    }

    /// Adjusts a real server's count for a connection in `state` (an entry
    /// the controller removed, or a correction).
    pub fn add_dest_conns(&self, dest_id: u32, state: u8, delta: i64) {
        let field = if state == conn_state::TEMPLATE_NONE || state == conn_state::TEMPLATE_ASSURED {
            CountField::Persistent
        } else if conn_state::is_active(state) {
            CountField::Active
        } else {
            CountField::Inactive
        };
        self.dest_conns.add(dest_id as usize, field, delta);
    }

    pub fn correct_dest_conns(&self, dest_id: u32, field: CountField, delta: i64) {
        self.dest_conns.add(dest_id as usize, field, delta);
    }

    /// A snapshot of the connection table.
    pub fn connections(&self) -> Result<Vec<(FlowKey, Conn)>> {
        let map = self.conn_map()?;
        // Entries can vanish while we walk (LRU eviction, the datapath);
        // skip what cannot be read instead of failing.
        Ok(map.iter().filter_map(|e| e.ok()).collect())
    }

    pub fn connection(&self, key: &FlowKey) -> Option<Conn> {
        self.conn_map().ok()?.get(key, 0).ok()
    }

    /// Writes one entry (the controller keeps persistence templates alive).
    pub fn set_connection(&mut self, key: &FlowKey, conn: &Conn) -> Result<()> {
        let map = self.ebpf.map_mut(map_name::CONN_TABLE).ok_or_else(|| anyhow!("map CONN_TABLE missing"))?;
        let mut map: HashMap<_, FlowKey, Conn> = HashMap::try_from(map)?;
        Ok(map.insert(key, conn, 0)?)
    }

    pub fn remove_connection(&mut self, key: &FlowKey) -> Result<()> {
        let map = self.ebpf.map_mut(map_name::CONN_TABLE).ok_or_else(|| anyhow!("map CONN_TABLE missing"))?;
        let mut map: HashMap<_, FlowKey, Conn> = HashMap::try_from(map)?;
        match map.remove(key) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// What a previous lbd left in the maps, for [`crate::tables::Tables::adopt`].
    pub fn read_back(&self) -> Result<Adopted> {
        let services_map = self.ebpf.map(map_name::SERVICES).ok_or_else(|| anyhow!("map SERVICES missing"))?;
        let services: Vec<(ServiceKey, Service)> =
            HashMap::<_, ServiceKey, Service>::try_from(services_map)?.iter().filter_map(|e| e.ok()).collect();
        let dests_map = Array::<_, Dest>::try_from(self.ebpf.map(map_name::DESTS).ok_or_else(|| anyhow!("DESTS"))?)?;
        let lists = Array::<_, u32>::try_from(self.ebpf.map(map_name::DEST_LISTS).ok_or_else(|| anyhow!("DEST_LISTS"))?)?;
        let mut dests = BTreeMap::new();
        for id in 0..lb_common::MAX_DESTS {
            let d = dests_map.get(&id, 0)?;
            if d.family != 0 {
                dests.insert(id, d);
            }
        }
        let table = Array::<_, u32>::try_from(self.ebpf.map(map_name::SCHED_TABLE).ok_or_else(|| anyhow!("SCHED_TABLE"))?)?;
        let mut service_dests = BTreeMap::new();
        let mut tables = BTreeMap::new();
        let mut positions = BTreeMap::new();
        for (key, svc) in &services {
            let ids: Vec<u32> =
                (svc.dests_start..svc.dests_start + svc.dests_len).map(|i| lists.get(&i, 0)).collect::<Result<_, _>>()?;
            service_dests.insert(*key, ids);
            let slots: Vec<u32> =
                (svc.table_start..svc.table_start + svc.table_len).map(|i| table.get(&i, 0)).collect::<Result<_, _>>()?;
            tables.insert(*key, slots);
            positions.insert(svc.id, self.sched_position(svc.id));
        }
        Ok(Adopted { services, dests, service_dests, tables, positions })
    }
}

/// Which count of a [`DestConns`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CountField {
    Active,
    Inactive,
    Persistent,
}

/// A `BPF_F_MMAPABLE` array mapped into our memory; its `i64` fields are
/// only ever accessed atomically (the datapath uses atomic adds too).
struct MappedArray<T> {
    ptr: *mut T,
    len: usize,
    bytes: usize,
}

// SAFETY: the mapping is shared memory accessed only through atomics.
unsafe impl<T> Send for MappedArray<T> {}
unsafe impl<T> Sync for MappedArray<T> {}

impl MappedArray<DestConns> {
    fn new(map: &MapData, len: usize) -> Result<Self> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let page = 4096;
        let bytes = (len * size_of::<DestConns>()).div_ceil(page) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF array fd as the kernel documents for
        // BPF_F_MMAPABLE maps; the length covers the whole array.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap DEST_CONNS: {}", std::io::Error::last_os_error());
        }
        Ok(Self { ptr: ptr.cast(), len, bytes })
    }

    fn field(&self, index: usize, field: CountField) -> &std::sync::atomic::AtomicI64 {
        assert!(index < self.len);
        // SAFETY: in bounds of the mapping; i64 fields are 8-aligned (page
        // aligned base, 32-byte elements).
        unsafe {
            let elem = self.ptr.add(index);
            let p = match field {
                CountField::Active => &raw mut (*elem).active,
                CountField::Inactive => &raw mut (*elem).inactive,
                CountField::Persistent => &raw mut (*elem).persistent,
            };
            std::sync::atomic::AtomicI64::from_ptr(p)
        }
    }

    fn load(&self, index: usize) -> DestConns {
        use std::sync::atomic::Ordering::Relaxed;
        if index >= self.len {
            return DestConns::default();
        }
        DestConns {
            active: self.field(index, CountField::Active).load(Relaxed),
            inactive: self.field(index, CountField::Inactive).load(Relaxed),
            persistent: self.field(index, CountField::Persistent).load(Relaxed),
            ..DestConns::default()
        }
    }

    fn add(&self, index: usize, field: CountField, delta: i64) {
        if index < self.len {
            self.field(index, field).fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn reset(&self, index: usize) {
        if index < self.len {
            for f in [CountField::Active, CountField::Inactive, CountField::Persistent] {
                self.field(index, f).store(0, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

/// Removes link pins for interfaces other than `keep` (which detaches them).
fn remove_other_link_pins(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("xdp_link_") && name != link_pin_name(keep) {
            tracing::info!("detaching the XDP program a previous lbd left on {}", &name["xdp_link_".len()..]);
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Makes sure `dir` is on a bpffs, mounting one at /sys/fs/bpf if nothing
/// is mounted there (as in a fresh mount namespace).
fn ensure_bpffs(dir: &Path) -> Result<()> {
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !is_bpffs(root) {
        std::fs::create_dir_all(root).ok();
        mount(Some("bpffs"), root, Some("bpf"), MsFlags::empty(), None::<&str>)
            .map_err(|e| anyhow!("mount bpffs on /sys/fs/bpf: {}", std::io::Error::from(e)))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    if !is_bpffs(dir) {
        bail!("{} is not on a bpf filesystem (mount -t bpf bpffs /sys/fs/bpf)", dir.display());
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::nearest_hz;

    #[test]
    fn measured_tick_rates_round_to_a_kernel_hz() {
        assert_eq!(nearest_hz(1000.0 * 201.0 / 200.3), Some(1000));
        assert_eq!(nearest_hz(245.0), Some(250));
        assert_eq!(nearest_hz(305.0), Some(300));
        assert_eq!(nearest_hz(95.0), Some(100));
        assert_eq!(nearest_hz(0.0), None);
        assert_eq!(nearest_hz(600.0), None);
    }
}
