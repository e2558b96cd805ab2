//! What a walk of the connection table costs as the table grows: the walk
//! behind lbd's sweep, connection sync's scans and `lbctl -c`.
//!
//! For each size, the real program is loaded with a connection table of
//! that capacity ([`Harness::with_conn_table_size`]), the table is filled
//! through the map with that many entries (as the datapath would write
//! them, none expired), and full walks are timed, alternately, in the same
//! run:
//! * key by key, as lbd walked before: aya's map iterator,
//!   `BPF_MAP_GET_NEXT_KEY` and a lookup per entry;
//! * batched, as lbd walks now: [`ConnTable::walk`], `BPF_MAP_LOOKUP_BATCH`
//!   of up to 1024 entries a call;
//! * the sweep's ticks: the batched walk in stretches of
//!   [`SWEEP_ENTRIES_PER_TICK`], what one tick of lbd's sweep reads.
//!
//! The figures are the walk (the system calls and the copies), without
//! what the sweep does with each entry.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use aya::maps::{HashMap, Map, MapData};
use lb_common::{Conn, FlowKey, map_name};
use lb_userspace::controller::SWEEP_ENTRIES_PER_TICK;
use lb_userspace::datapath::Cursor;
use serde_json::{Value, json};

use super::report::{Machine, Part, measured_on};
use crate::harness::Harness;

/// How much to measure.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Table sizes (entries, and the table's capacity).
    pub sizes: Vec<u32>,
    /// Timed walks of each kind per size (the median is reported).
    pub repeats: u32,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            sizes: vec![10_000, 100_000, 1_000_000],
            repeats: 9,
        }
    }
}

/// The figures of one table size.
#[derive(Clone, Debug)]
pub struct SizeResult {
    /// Entries written (and the table's capacity).
    pub entries: u32,
    /// Entries a walk found (the LRU may have evicted a few while filling).
    pub walked: u64,
    /// Median of the full walks, ms.
    pub key_by_key_ms: f64,
    pub batched_ms: f64,
    /// Ticks one sweep pass takes, and the median and longest tick's walk, ms.
    pub ticks: u32,
    pub tick_median_ms: f64,
    pub tick_max_ms: f64,
}

impl SizeResult {
    /// How many times faster the batched walk is.
    pub fn speedup(&self) -> f64 {
        self.key_by_key_ms / self.batched_ms.max(1e-9)
    }

    /// ns per entry, batched.
    pub fn batched_ns_per_entry(&self) -> f64 {
        self.batched_ms * 1e6 / self.walked.max(1) as f64
    }
}

#[derive(Clone, Debug)]
pub struct SweepResults {
    pub options: SweepOptions,
    pub sizes: Vec<SizeResult>,
    pub elapsed_s: f64,
}

pub fn run(options: &SweepOptions, progress: &mut dyn FnMut(&str)) -> Result<SweepResults> {
    let started = Instant::now();
    let mut sizes = Vec::new();
    for &entries in &options.sizes {
        sizes.push(measure(entries, options.repeats, progress)?);
    }
    Ok(SweepResults {
        options: options.clone(),
        sizes,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

fn key(n: u32) -> FlowKey {
    FlowKey {
        src: [(0x6440_0000 + n).to_be(), 0, 0, 0],
        dst: [u32::from_be_bytes([10, 0, 0, 100]).to_be(), 0, 0, 0],
        sport: (1024 + (n >> 22) as u16).to_be(),
        dport: 80u16.to_be(),
        protocol: 6,
        family: 2,
        ..FlowKey::default()
    }
}

fn measure(entries: u32, repeats: u32, progress: &mut dyn FnMut(&str)) -> Result<SizeResult> {
    let mut h = Harness::with_conn_table_size(entries)?;
    let filling = Instant::now();
    let now = h.datapath.now_ns();
    for n in 0..entries {
        let conn = Conn {
            real_id: n % 16,
            service_id: 0,
            state: 3,
            timeout: 900,
            last_seen_ns: now,
            ..Conn::default()
        };
        h.datapath.set_connection(&key(n), &conn)?;
    }
    progress(&format!(
        "{entries} entries written in {:.1} s",
        filling.elapsed().as_secs_f64()
    ));
    let table = h.datapath.conn_table();
    let iterator = aya_iterator(&h)?;
    let (mut key_by_key, mut batched, mut ticks) = (Vec::new(), Vec::new(), Vec::new());
    let mut walked = 0;
    for _ in 0..repeats {
        let t = Instant::now();
        let found = iterator.iter().filter(Result::is_ok).count() as u64;
        key_by_key.push(t.elapsed());
        let t = Instant::now();
        let mut cursor = Cursor::new();
        table.walk(&mut cursor, usize::MAX, |_, _| {})?;
        batched.push(t.elapsed());
        ensure!(
            cursor.is_complete() && cursor.visited() == found,
            "the walks found {found} and {}",
            cursor.visited()
        );
        walked = found;
        // A pass in ticks.
        let mut cursor = Cursor::new();
        let mut pass = Vec::new();
        while !cursor.is_done() {
            let t = Instant::now();
            table.walk(&mut cursor, SWEEP_ENTRIES_PER_TICK, |_, _| {})?;
            pass.push(t.elapsed());
        }
        ticks.push(pass);
    }
    let all_ticks: Vec<Duration> = ticks.iter().flatten().copied().collect();
    let result = SizeResult {
        entries,
        walked,
        key_by_key_ms: median_ms(&key_by_key),
        batched_ms: median_ms(&batched),
        ticks: ticks[0].len() as u32,
        tick_median_ms: median_ms(&all_ticks),
        tick_max_ms: all_ticks
            .iter()
            .max()
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
    };
    progress(&format!(
        "{walked} entries: key by key {:.1} ms, batched {:.1} ms ({:.1}x); a sweep pass in {} ticks of {:.1} ms",
        result.key_by_key_ms,
        result.batched_ms,
        result.speedup(),
        result.ticks,
        result.tick_median_ms
    ));
    Ok(result)
}

/// aya's iterator over this harness's connection table: what lbd walked
/// with before.
fn aya_iterator(h: &Harness) -> Result<HashMap<MapData, FlowKey, Conn>> {
    let ids = h
        .datapath
        .program()
        .info()?
        .map_ids()?
        .context("the kernel lists no map ids")?;
    for id in ids {
        let data = MapData::from_id(id)?;
        if data.info()?.name_as_str() == Some(map_name::CONN_TABLE) {
            return Ok(HashMap::try_from(Map::LruHashMap(data))?);
        }
    }
    anyhow::bail!("the program has no {}", map_name::CONN_TABLE)
}

fn median_ms(samples: &[Duration]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted
        .get(sorted.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

pub fn to_json(s: &SweepResults) -> Value {
    json!({
        "method": "the table filled through the map; full walks timed alternately in one run: key by key \
                   (aya's iterator: BPF_MAP_GET_NEXT_KEY and a lookup per entry, lbd before) and batched \
                   (BPF_MAP_LOOKUP_BATCH, lbd now), and a sweep pass in ticks; medians",
        "options": {"repeats": s.options.repeats, "entries_per_tick": SWEEP_ENTRIES_PER_TICK},
        "sizes": s.sizes.iter().map(|r| json!({
            "entries": r.entries, "walked": r.walked,
            "key_by_key_ms": round(r.key_by_key_ms), "batched_ms": round(r.batched_ms),
            "speedup": round(r.speedup()), "batched_ns_per_entry": round(r.batched_ns_per_entry()),
            "ticks_per_pass": r.ticks, "tick_median_ms": round(r.tick_median_ms), "tick_max_ms": round(r.tick_max_ms),
        })).collect::<Vec<_>>(),
        "elapsed_s": round(s.elapsed_s),
    })
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The table the README and results.md show.
pub fn table_markdown(s: &SweepResults) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Walking the connection table (the sweep, connection sync's scan, `lbctl -c`), a full table of each \
         size, medians of {} walks each:\n",
        s.options.repeats
    );
    let _ = writeln!(
        md,
        "| table size | entries | key by key (lbd before) | batched (lbd now) | batched vs key by key | batched, per entry | sweep: ticks per pass | sweep: walk per tick (median, max) |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &s.sizes {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1}x faster | {:.0} ns | {} | {:.1} ms, {:.1} ms |",
            r.entries,
            r.walked,
            r.key_by_key_ms,
            r.batched_ms,
            r.speedup(),
            r.batched_ns_per_entry(),
            r.ticks,
            r.tick_median_ms,
            r.tick_max_ms
        );
    }
    md
}

/// The section of results.md: the table and the method.
fn section(s: &SweepResults, machine: &Machine) -> String {
    let mut md = format!("## Connection table walks\n\n{}.\n\n", measured_on(machine));
    md.push_str(&table_markdown(s));
    let _ = writeln!(
        md,
        "\nMethod: for each size the real program is loaded with a connection table of that capacity and the \
         table filled through the map with that many entries (the LRU may evict a few while filling: \"entries\" \
         is what the walks found). Full walks are timed alternately in the same run: key by key as lbd walked \
         before (aya's map iterator: `BPF_MAP_GET_NEXT_KEY` and a lookup, two system calls per entry, and a \
         walk that starts over whenever the key in hand is evicted), batched as lbd walks now \
         (`BPF_MAP_LOOKUP_BATCH`, up to 1024 entries a call, continuing from a bucket), and a sweep pass in \
         ticks of {} entries (lbd's sweep reads one tick a second). The figures are the walk alone, not \
         what the sweep does with each entry. lbd never holds its controller's lock across a walk.",
        SWEEP_ENTRIES_PER_TICK
    );
    md
}

/// Where the walk figures go: their own markers in results.md and the
/// README, `sweep` in results.json.
pub const PART: Part = Part {
    key: "sweep",
    start: "<!-- bench-walk:start (written by cargo xtask bench) -->",
    end: "<!-- bench-walk:end -->",
};

/// This run's walk figures for results.json and results.md.
pub fn figures(s: &SweepResults, machine: &Machine) -> (Value, String) {
    (to_json(s), section(s, machine))
}

/// The README's summary of the walks.
pub fn readme_summary(s: &SweepResults, machine: &Machine) -> String {
    format!(
        "{}; the method is in [bench/results.md](bench/results.md).\n\n{}",
        measured_on(machine),
        table_markdown(s)
    )
}
