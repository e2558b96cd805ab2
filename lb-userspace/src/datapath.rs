//! The loaded XDP program and its maps: loading (or adopting what a previous
//! lbd pinned, when [`crate::pins`] finds it of the same layout), attaching,
//! and the only code that writes the maps.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use crate::{
    config, pins,
    tables::{Adopted, MapOp},
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
    Conn, Counters, Director, FlowKey, RealConns, RealServer, SchedState, Service, ServiceKey, conn_state, map_name,
    program_name, reason,
};

mod conn_table;
mod explain;
mod fwmark;
mod nat;

pub use self::conn_table::{ConnTable, Cursor, Entries};

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
/// Loads the IPv6 program and puts it in the slot `lb_xdp` tail-calls for
/// IPv6 frames (before `lb_xdp` is attached: until then no frame looks).
fn load_ipv6(ebpf: &mut aya::Ebpf) -> Result<()> {
    let name = program_name::LB6;
    let fd = load_budgeted(ebpf, name)?.fd()?.try_clone()?;
    let map = ebpf.map_mut(map_name::PROGS).ok_or_else(|| anyhow!("map {} missing", map_name::PROGS))?;
    let mut slots = aya::maps::ProgramArray::try_from(map)?;
    slots.set(lb_common::prog_slot::IPV6, &fd, 0).with_context(|| format!("put {name} in its slot of {}", map_name::PROGS))?;
    Ok(())
}

/// Loads one of the programs held to the verifier budget, and says what
/// the verifier's work was.
fn load_budgeted<'a>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let program: &mut Xdp =
        ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the object"))?.try_into()?;
    let started = std::time::Instant::now();
    program.load().map_err(|e| refused(name, e))?;
    let processed = program.info().ok().and_then(|i| i.verified_instruction_count());
    tracing::info!(
        "the kernel verified {name} in {:.0?}: {} instructions processed (budget {})",
        started.elapsed(),
        processed.map_or_else(|| "an unknown number of".into(), |n| n.to_string()),
        crate::verifier::VERIFIER_BUDGET_INSNS,
    );
    Ok(program)
}

fn refused(program: &str, error: ProgramError) -> anyhow::Error {
    match error {
        ProgramError::LoadError { io_error, verifier_log } => {
            anyhow!(crate::verifier::explain_refusal(program, &io_error, &verifier_log.to_string()))
        }
        other => anyhow::Error::new(other).context(format!("load the program {program}")),
    }
}

/// The kernel's tick in ns (1e9 / HZ), found once per process: HZ is a
/// build option of the kernel that no interface reports. The kernel's build
/// config says it where the distribution ships one (`/boot/config-<release>`,
/// as Debian, Ubuntu and RHEL do); otherwise it is measured.
fn tick_ns(clock: &Xdp) -> Result<u32> {
    static TICK_NS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if let Some(t) = TICK_NS.get() {
        return Ok(*t);
    }
    let hz = match configured_hz() {
        Some(hz) => hz,
        None => measured_hz(clock)?,
    };
    let tick = 1_000_000_000 / hz;
    tracing::debug!("kernel HZ {hz}: the datapath clock advances {tick} ns a tick");
    Ok(*TICK_NS.get_or_init(|| tick))
}

/// `CONFIG_HZ` of the running kernel's build config, if it is installed.
fn configured_hz() -> Option<u32> {
    let config = std::fs::read_to_string(format!("/boot/config-{}", crate::kernel::release())).ok()?;
    config.lines().find_map(|line| line.strip_prefix("CONFIG_HZ=")).and_then(|hz| hz.trim().parse().ok())
}

/// HZ from jiffies against CLOCK_MONOTONIC over 200 ms, rounded to the
/// nearest HZ a kernel can be built with; measured again (up to five times)
/// when a busy or virtual machine delayed ticks in between.
fn measured_hz(clock: &Xdp) -> Result<u32> {
    let mut rates = Vec::new();
    for _ in 0..5 {
        let first = read_clock(clock)?;
        std::thread::sleep(std::time::Duration::from_millis(200));
        let second = read_clock(clock)?;
        let elapsed_ns = second.monotonic_ns.saturating_sub(first.monotonic_ns).max(1);
        let rate = second.jiffies.saturating_sub(first.jiffies) as f64 * 1e9 / elapsed_ns as f64;
        if let Some(hz) = nearest_hz(rate) {
            return Ok(hz);
        }
        rates.push(rate.round());
    }
    bail!("cannot tell the kernel's HZ: measured {rates:?} ticks a second, none within 10% of 100, 250, 300 or 1000")
}

/// The kernel HZ (CONFIG_HZ) closest to a measured tick rate, if one is
/// within 10%.
fn nearest_hz(measured: f64) -> Option<u32> {
    [100u32, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| (f64::from(*a) - measured).abs().total_cmp(&(f64::from(*b) - measured).abs()))
        .filter(|hz| (f64::from(*hz) - measured).abs() <= f64::from(*hz) / 10.0)
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
    /// `REAL_CONNS`, mapped into our memory so the controller can adjust
    /// counts atomically alongside the datapath.
    real_conns: MappedArray<RealConns>,
    /// `CONN_TABLE`, read in batches (see [`ConnTable`]).
    conns: ConnTable,
    /// The maps that are pinned, and the name of their directory.
    layout: pins::Layout,
    /// `<pin_path>/<layout id>`, unless nothing is pinned.
    pin_dir: Option<PathBuf>,
    /// The maps already existed (a previous lbd's state was adopted).
    adopted: bool,
    /// One per interface the program is attached to.
    links: Vec<AttachedLink>,
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
        let file;
        let object: &[u8] = match &opts.object {
            Some(path) => {
                file = std::fs::read(path).with_context(|| format!("read the eBPF object {}", path.display()))?;
                &file
            }
            None => crate::EBPF_OBJECT,
        };
        let layout = pins::Layout::of_object(object)?;
        let pins = opts.pin_path.as_deref().map(|p| pins::prepare(p, &layout)).transpose()?;
        let mut loader = EbpfLoader::new();
        // A refusal then costs one more verification, with only the
        // statistics and the error logged (not every instruction, which for
        // a large program takes minutes and retries).
        loader.verifier_log_level(VerifierLogLevel::STATS);
        // An adopted table keeps its size: say so when the config's differs.
        let adopted_size = pins.as_ref().and_then(|p| p.conn_table_entries);
        if let Some(size) = adopted_size
            && size != opts.conn_table_size
        {
            tracing::warn!(
                "conn_table_size is {} in the config, but the adopted connection table has {size} entries: \
                 it keeps them (and its connections); stop lbd with SIGTERM, which removes the pins, and start \
                 it again to resize",
                opts.conn_table_size
            );
        }
        loader.map_max_entries(map_name::CONN_TABLE, adopted_size.unwrap_or(opts.conn_table_size));
        // A NAT connection has one reply entry.
        loader.map_max_entries(map_name::NAT_REPLIES, adopted_size.unwrap_or(opts.conn_table_size));
        loader.map_max_entries(map_name::FULLNAT_LOCAL, adopted_size.unwrap_or(opts.conn_table_size));
        if let Some(pins) = &pins {
            for name in layout.names() {
                loader.map_pin_path(name, pins.dir.join(name));
            }
        }
        let mut ebpf = loader.load(object).context("load the eBPF object")?;
        load_budgeted(&mut ebpf, program_name::LB)?;
        load_ipv6(&mut ebpf)?;
        let clock: &mut Xdp = ebpf
            .program_mut(program_name::CLOCK)
            .ok_or_else(|| anyhow!("program {} missing from the object", program_name::CLOCK))?
            .try_into()?;
        clock.load().map_err(|e| refused(program_name::CLOCK, e))?;
        let tick_ns = tick_ns(clock)?;
        let real_conns = {
            let map = ebpf.map(map_name::REAL_CONNS).ok_or_else(|| anyhow!("map REAL_CONNS missing"))?;
            let aya::maps::Map::Array(data) = map else { bail!("REAL_CONNS is not an array") };
            MappedArray::new(data, lb_common::MAX_REALS as usize)?
        };
        let conns = match ebpf.map(map_name::CONN_TABLE) {
            Some(aya::maps::Map::LruHashMap(data)) => ConnTable::new(data)?,
            _ => bail!("map CONN_TABLE missing or not an LRU hash"),
        };
        let adopted = pins.as_ref().is_some_and(|p| p.adopted);
        let pin_dir = pins.map(|p| p.dir);
        Ok(Self { ebpf, real_conns, conns, layout, pin_dir, adopted, links: Vec::new(), tick_ns })
    }

    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The connection table's entries as loaded (an adopted table's may
    /// differ from the config's `conn_table_size`).
    pub fn conn_table_size(&self) -> u32 {
        self.conns.capacity()
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf.program(program_name::LB).expect("loaded").try_into().expect("an XDP program")
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf.program_mut(program_name::LB).expect("loaded").try_into().expect("an XDP program")
    }

    /// Attaches to each of `interfaces`. A link a previous lbd pinned is
    /// taken over with an atomic program replacement, so forwarding never
    /// stops; so is one pinned under another map layout, whose other pins
    /// go now. Links on other interfaces a previous lbd left are removed.
    pub fn attach(&mut self, interfaces: &[String], mode: config::XdpMode) -> Result<()> {
        if let Some(dir) = &self.pin_dir {
            pins::retire_other_layouts(dir);
            pins::remove_other_links(dir, interfaces);
        }
        for interface in interfaces {
            let link = self.attach_one(interface, mode)?;
            self.links.push(link);
        }
        Ok(())
    }

    fn attach_one(&mut self, interface: &str, mode: config::XdpMode) -> Result<AttachedLink> {
        let pinned_link = self.pin_dir.as_ref().map(|d| pins::link_pin(d, interface));
        if let Some(path) = &pinned_link
            && path.exists()
        {
            match self.take_over_link(path) {
                Ok(link) => return Ok(AttachedLink::Pinned(link)),
                Err(e) => {
                    tracing::warn!("cannot take over the pinned XDP link on {interface} ({e:#}); attaching anew");
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
            return Ok(AttachedLink::Owned(id));
        };
        let link = program.take_link(id)?;
        match FdLink::try_from(link) {
            Ok(fd_link) => {
                let pinned = fd_link.pin(&path).with_context(|| format!("pin the XDP link at {}", path.display()))?;
                Ok(AttachedLink::Pinned(pinned))
            }
            Err(_) => bail!("the kernel attached XDP without a bpf link (too old for pinning); set pin_path = \"\""),
        }
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
        for link in std::mem::take(&mut self.links) {
            match link {
                AttachedLink::Pinned(link) => drop(link.unpin()?),
                AttachedLink::Owned(id) => self.program_mut().detach(id)?,
            }
        }
        if let Some(dir) = &self.pin_dir {
            pins::clear(dir, &self.layout);
        }
        Ok(())
    }

    /// Exits leaving the program attached and the maps pinned, for the next
    /// lbd to adopt.
    pub fn leave_running(mut self) {
        // Dropping a pinned link only closes our fd; the pin keeps it.
        drop(std::mem::take(&mut self.links));
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

    /// Carries out planned writes, in order, all or none: when one fails,
    /// the writes before it are undone (what each overwrote was read just
    /// before), so the maps hold what they held before and the caller keeps
    /// its model as it was. Counters zeroed for new ids are not restored,
    /// nor are slots written in `SCHED_TABLE` and `REAL_LISTS`, which no
    /// service refers to until its `SetService` (see [`MapOp`]).
    pub fn execute(&mut self, ops: &[MapOp]) -> Result<(), ExecuteError> {
        let mut undo = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let written = self.overwritten(op).and_then(|before| {
                self.write(op)?;
                Ok(before)
            });
            match written {
                Ok(before) => undo.extend(before),
                Err(source) => {
                    let mut rolled_back = true;
                    for op in undo.iter().rev() {
                        if let Err(e) = self.write(op) {
                            tracing::warn!("undoing a map write ({}): {e:#}", op.describe());
                            rolled_back = false;
                        }
                    }
                    return Err(ExecuteError {
                        failed: i,
                        total: ops.len(),
                        op: op.describe(),
                        rolled_back,
                        source: source.into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The write that puts back what `op` is about to overwrite (`None`
    /// where nothing needs putting back).
    fn overwritten(&mut self, op: &MapOp) -> Result<Option<MapOp>> {
        let service = |s: &mut Self, key: &ServiceKey| match s.services_map()?.get(key, 0) {
            Ok(value) => Ok(Some(value)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(anyhow::Error::from(e)),
        };
        Ok(match op {
            MapOp::SetReal(id, _) => Some(MapOp::SetReal(*id, self.array::<RealServer>(map_name::REALS)?.get(id, 0)?)),
            MapOp::ZeroRealStats(_)
            | MapOp::ZeroServiceStats(_)
            | MapOp::SetSchedTable { .. }
            | MapOp::SetRealList { .. } => None,
            MapOp::SetService(key, _) => Some(match service(self, key)? {
                Some(value) => MapOp::SetService(*key, value),
                None => MapOp::DeleteService(*key),
            }),
            MapOp::DeleteService(key) => service(self, key)?.map(|value| MapOp::SetService(*key, value)),
            MapOp::SetVipFilter(words) => {
                let filter = self.array::<u64>(map_name::VIP_FILTER)?;
                Some(MapOp::SetVipFilter((0..words.len() as u32).map(|i| filter.get(&i, 0)).collect::<Result<_, _>>()?))
            }
            MapOp::SetServiceFlags(id, _) => {
                Some(MapOp::SetServiceFlags(*id, self.array::<u32>(map_name::SERVICE_FLAGS)?.get(id, 0)?))
            }
            MapOp::SetSchedPosition(id, _) => Some(MapOp::SetSchedPosition(*id, self.sched_position(*id))),
            // A trie's lookup is by longest prefix, not exact: the op says
            // what it replaces.
            MapOp::SetFwmarkMatch { key, mark, replaced: Some(old) } => {
                Some(MapOp::SetFwmarkMatch { key: *key, mark: *old, replaced: Some(*mark) })
            }
            MapOp::SetFwmarkMatch { key, mark, replaced: None } => Some(MapOp::DeleteFwmarkMatch { key: *key, mark: *mark }),
            MapOp::DeleteFwmarkMatch { key, mark } => Some(MapOp::SetFwmarkMatch { key: *key, mark: *mark, replaced: None }),
        })
    }

    fn write(&mut self, op: &MapOp) -> Result<()> {
        match op {
            MapOp::SetReal(id, real) => self.array::<RealServer>(map_name::REALS)?.set(*id, real, 0)?,
            MapOp::ZeroRealStats(id) => {
                let zero = PerCpuValues::try_from(vec![Counters::default(); nr_cpus()?])?;
                self.per_cpu_array::<Counters>(map_name::REAL_STATS)?.set(*id, zero, 0)?;
                self.real_conns.reset(*id as usize);
            }
            MapOp::ZeroServiceStats(id) => {
                let zero = PerCpuValues::try_from(vec![Counters::default(); nr_cpus()?])?;
                self.per_cpu_array::<Counters>(map_name::SERVICE_STATS)?.set(*id, zero, 0)?
            }
            MapOp::SetSchedTable { start, real_ids } => {
                let mut table = self.array::<u32>(map_name::SCHED_TABLE)?;
                for (i, id) in real_ids.iter().enumerate() {
                    table.set(start + i as u32, id, 0)?;
                }
            }
            MapOp::SetRealList { start, real_ids } => {
                let mut list = self.array::<u32>(map_name::REAL_LISTS)?;
                for (i, id) in real_ids.iter().enumerate() {
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
            MapOp::SetFwmarkMatch { key, mark, .. } => self.set_fwmark_match(key, *mark)?,
            MapOp::DeleteFwmarkMatch { key, .. } => self.delete_fwmark_match(key)?,
            MapOp::SetSchedPosition(id, position) => {
                self.array::<SchedState>(map_name::SCHED_STATE)?.set(*id, SchedState { position: *position }, 0)?
            }
        }
        Ok(())
    }

    pub fn sched_position(&self, service_id: u32) -> u64 {
        let Some(map) = self.ebpf.map(map_name::SCHED_STATE) else {
            return 0;
        };
        Array::<_, SchedState>::try_from(map).and_then(|a| a.get(&service_id, 0)).map_or(0, |s| s.position)
    }

    fn summed(&self, name: &str, index: u32) -> Counters {
        let Some(map) = self.ebpf.map(name) else {
            return Counters::default();
        };
        let Ok(array) = PerCpuArray::<_, Counters>::try_from(map) else {
            return Counters::default();
        };
        let Ok(values) = array.get(&index, 0) else {
            return Counters::default();
        };
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

    pub fn real_counters(&self, real_id: u32) -> Counters {
        self.summed(map_name::REAL_STATS, real_id)
    }

    /// Every verdict-reason counter, summed over CPUs, by name.
    pub fn reason_counters(&self) -> BTreeMap<&'static str, u64> {
        let mut out = BTreeMap::new();
        let Some(map) = self.ebpf.map(map_name::REASON_STATS) else {
            return out;
        };
        let Ok(array) = PerCpuArray::<_, u64>::try_from(map) else {
            return out;
        };
        for (i, name) in reason::all() {
            let total = array.get(&i, 0).map(|v| v.iter().sum()).unwrap_or(0);
            out.insert(name, total);
        }
        out
    }

    /// The real server's connection counts as the datapath keeps them.
    pub fn real_conns(&self, real_id: u32) -> RealConns {
        self.real_conns.load(real_id as usize)
    }

    /// Adjusts a real server's count for a connection in `state` (an entry
    /// the controller removed, or a correction).
    pub fn add_real_conns(&self, real_id: u32, state: u8, delta: i64) {
        let field = if state == conn_state::TEMPLATE_NONE || state == conn_state::TEMPLATE_ASSURED {
            CountField::Persistent
        } else if conn_state::is_active(state) {
            CountField::Active
        } else {
            CountField::Inactive
        };
        self.real_conns.add(real_id as usize, field, delta);
    }

    pub fn correct_real_conns(&self, real_id: u32, field: CountField, delta: i64) {
        self.real_conns.add(real_id as usize, field, delta);
    }

    /// The connection table, to walk without the controller (see
    /// [`ConnTable`]).
    pub fn conn_table(&self) -> ConnTable {
        self.conns.clone()
    }

    /// Every entry of the connection table, in one walk.
    pub fn connections(&self) -> Result<Vec<(FlowKey, Conn)>> {
        self.conns.entries()
    }

    pub fn connection(&self, key: &FlowKey) -> Option<Conn> {
        self.conns.get(key)
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
        let reals_map =
            Array::<_, RealServer>::try_from(self.ebpf.map(map_name::REALS).ok_or_else(|| anyhow!("REALS"))?)?;
        let lists =
            Array::<_, u32>::try_from(self.ebpf.map(map_name::REAL_LISTS).ok_or_else(|| anyhow!("REAL_LISTS"))?)?;
        let mut reals = BTreeMap::new();
        for id in 0..lb_common::MAX_REALS {
            let d = reals_map.get(&id, 0)?;
            if d.family != 0 {
                reals.insert(id, d);
            }
        }
        let table =
            Array::<_, u32>::try_from(self.ebpf.map(map_name::SCHED_TABLE).ok_or_else(|| anyhow!("SCHED_TABLE"))?)?;
        let mut service_reals = BTreeMap::new();
        let mut tables = BTreeMap::new();
        let mut positions = BTreeMap::new();
        for (key, svc) in &services {
            let ids: Vec<u32> = (svc.reals_start..svc.reals_start + svc.reals_len)
                .map(|i| lists.get(&i, 0))
                .collect::<Result<_, _>>()?;
            service_reals.insert(*key, ids);
            let slots: Vec<u32> = (svc.table_start..svc.table_start + svc.table_len)
                .map(|i| table.get(&i, 0))
                .collect::<Result<_, _>>()?;
            tables.insert(*key, slots);
            positions.insert(svc.id, self.sched_position(svc.id));
        }
        let fwmark_matches = self.read_fwmark_matches()?;
        Ok(Adopted { services, reals, service_reals, tables, positions, fwmark_matches })
    }
}

/// A plan the maps did not take: which write failed, and whether the ones
/// before it were undone (if not, the maps hold part of the plan).
#[derive(Debug, thiserror::Error)]
#[error("map write {} of {total} ({op}) failed; {}", failed + 1, if *rolled_back {
    "the writes before it were undone"
} else {
    "undoing the writes before it failed too"
})]
pub struct ExecuteError {
    /// Index of the write that failed.
    pub failed: usize,
    pub total: usize,
    pub op: String,
    pub rolled_back: bool,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn nr_cpus() -> Result<usize> {
    Ok(aya::util::nr_cpus().map_err(|(_, e)| e)?)
}

/// Which count of a [`RealConns`].
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

impl MappedArray<RealConns> {
    fn new(map: &MapData, len: usize) -> Result<Self> {
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let page = 4096;
        let bytes = (len * size_of::<RealConns>()).div_ceil(page) * page;
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: mapping a BPF array fd as the kernel documents for
        // BPF_F_MMAPABLE maps; the length covers the whole array.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), bytes, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap REAL_CONNS: {}", std::io::Error::last_os_error());
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

    fn load(&self, index: usize) -> RealConns {
        use std::sync::atomic::Ordering::Relaxed;
        if index >= self.len {
            return RealConns::default();
        }
        RealConns {
            active: self.field(index, CountField::Active).load(Relaxed),
            inactive: self.field(index, CountField::Inactive).load(Relaxed),
            persistent: self.field(index, CountField::Persistent).load(Relaxed),
            ..RealConns::default()
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
