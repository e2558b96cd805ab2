//! Datapath cost per packet: the real XDP program, loaded as lbd loads it
//! ([`Datapath::load`] with lbd's default connection-table size, maps
//! filled by the same planning code), run on crafted frames with
//! `BPF_PROG_TEST_RUN`, next to a trivial program that only returns
//! `XDP_TX` (lb-ebpf's `lb-bench-tx`), the stand-in for the physical limit.
//!
//! # How a figure is taken
//!
//! Every run is one `BPF_PROG_TEST_RUN` call with `repeat = 1` and a fresh
//! copy of the input frame, so a program that rewrites the frame (DR, TUN)
//! or inserts a connection never sees its own output. The kernel times the
//! run itself (`ktime_get_ns()` around the program inside the syscall, in
//! ns; the copy of the frame in and out is outside), and that per-run
//! duration is the sample: median and p99 are over every sample. The
//! resolution of that clock is checked and reported (the smallest step
//! between distinct samples).
//!
//! Runs are taken in rounds: each round runs every scenario in turn (after
//! a short warm-up), so a change of load on the machine during the
//! benchmark hits all scenarios alike, and the ratios to the trivial
//! program stay fair.
//!
//! Two more figures per scenario, as cross-checks:
//! * `prog_ns`: the kernel's own per-program accounting (`run_time_ns /
//!   run_cnt`, what `bpftool prog` shows with `kernel.bpf_stats_enabled`),
//!   taken in a separate pass because enabling it adds two clock reads to
//!   every run. It is the program alone, without the test-run loop.
//! * `repeat_mean_ns`: one call with `repeat = N` (the kernel's mean), only
//!   where repeating is valid: the program does not change the frame (pass),
//!   or changes it idempotently (DR of an established flow: the MAC rewrite
//!   gives the same bytes again, the flow and its entry stay the same, and
//!   the verdict counters prove every repeat took the DR path). Never for
//!   new connections (each run needs a new 5-tuple) or TUN (the frame grows).
//!
//! Every scenario checks that each run returned the expected verdict and
//! that the datapath's reason counters moved by exactly one per run on the
//! expected path (e.g. `conn_new` and `tx_dr` for every new connection), so
//! a figure cannot silently measure another path.
//!
//! The scenarios, their programs and frames are in `scenarios.rs` (the
//! IPv6 rows in `scenarios6.rs`); this file runs them and takes the figures.

mod scenarios;
mod scenarios6;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb_common::DEFAULT_CONN_TABLE_SIZE;

use scenarios::{Frames, Program, run_once, scenarios};

/// The trivial program's name in lb-ebpf's `lb-bench-tx` object.
pub const BENCH_TX_PROGRAM: &str = "bench_tx";
/// Live flows in the table for the "full table" scenario.
pub const LIVE_FLOWS: u32 = 100_000;
const FULL_TABLE_SCENARIO: &str = "dr_new_connection_100k";

/// How much to run.
#[derive(Clone, Debug)]
pub struct DatapathOptions {
    /// Timed runs per scenario (repeat = 1 each).
    pub runs: u32,
    /// The runs are split into this many rounds over all scenarios.
    pub rounds: u32,
    /// Untimed runs before each scenario's share of a round.
    pub warmup: u32,
    /// Runs of the separate pass with the kernel's BPF run-time stats on.
    pub stats_runs: u32,
    /// `repeat` of the one-call cross-check where repeating is valid.
    pub repeat: u32,
    /// Pin the benchmark thread to this CPU (fewer migrations, steadier
    /// figures); `None` leaves it where the scheduler puts it.
    pub cpu: Option<usize>,
    /// Only the scenarios whose id starts with one of these (and the
    /// trivial program); empty: all.
    pub only: Vec<String>,
}

impl Default for DatapathOptions {
    fn default() -> Self {
        DatapathOptions {
            runs: 100_000,
            rounds: 10,
            warmup: 1_000,
            stats_runs: 20_000,
            repeat: 100_000,
            cpu: None,
            only: Vec::new(),
        }
    }
}

/// One scenario's figures.
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    pub id: String,
    pub title: String,
    /// "baseline", "datapath" or "scheduler".
    pub group: &'static str,
    /// The setup, in words.
    pub setup: String,
    pub runs: u64,
    pub median_ns: f64,
    pub p99_ns: f64,
    pub mean_ns: f64,
    pub min_ns: f64,
    /// Kernel BPF stats: run_time_ns / run_cnt over the stats pass.
    pub prog_ns: Option<f64>,
    /// The kernel's mean over one `repeat = N` call, where valid.
    pub repeat_mean_ns: Option<f64>,
    /// At most this many times the trivial program's median (the targets).
    pub target_ratio: Option<f64>,
    /// Every timed run's duration (ns), sorted.
    pub samples: Vec<u32>,
}

/// The whole datapath part of the benchmark.
#[derive(Clone, Debug)]
pub struct DatapathResults {
    pub options: DatapathOptions,
    /// Trivial program first.
    pub scenarios: Vec<ScenarioResult>,
    /// The step the per-run durations come in (ns; see [`timer_step`]).
    pub timer_step_ns: u64,
    /// Distinct per-run durations of the trivial program.
    pub trivial_distinct_values: usize,
    /// `kernel.bpf_stats_enabled` while timing (should be 0).
    pub bpf_stats_enabled_while_timing: bool,
    /// What the verifier and JIT say of the two programs.
    pub programs: Vec<ProgramFacts>,
    /// Seconds the datapath part took.
    pub elapsed_s: f64,
}

impl DatapathResults {
    pub fn trivial(&self) -> &ScenarioResult {
        &self.scenarios[0]
    }
}

/// `bpftool prog show`'s numbers for a loaded program.
#[derive(Clone, Debug)]
pub struct ProgramFacts {
    pub name: String,
    /// Instructions after the verifier's rewrites (`xlated`).
    pub xlated_insns: Option<u32>,
    /// Instructions the verifier processed over all paths.
    pub verified_insns: Option<u32>,
    pub jited_bytes: u32,
}

struct Scenario {
    id: String,
    title: String,
    group: &'static str,
    setup: String,
    program: Program,
    frames: Frames,
    verdict: u32,
    /// Reason counters that move by one per run.
    reasons_per_run: &'static [&'static str],
    /// Runs whose verdict-counter moves are expected (all runs so far).
    runs_done: u64,
    reasons_before: BTreeMap<&'static str, u64>,
    samples: Vec<u32>,
    prog_ns: Option<f64>,
    repeat_mean_ns: Option<f64>,
    repeat_ok: bool,
    /// The same frame may be run again and again (`repeat = N`): the
    /// program leaves it alone or rewrites it to the same bytes.
    repeatable: bool,
    target_ratio: Option<f64>,
}

/// Runs every scenario and returns the figures. `progress` gets one line
/// per step.
pub fn run(options: &DatapathOptions, progress: &mut dyn FnMut(&str)) -> Result<DatapathResults> {
    ensure!(
        options.rounds > 0 && options.runs >= options.rounds,
        "runs must be at least rounds"
    );
    let started = Instant::now();
    if let Some(cpu) = options.cpu {
        pin_to_cpu(cpu)?;
    }
    progress(
        "loading the trivial program and one instance of the datapath per scenario (as lbd loads it)",
    );
    let mut list = scenarios(&options.only)?;
    // Every new-connection run inserts an entry; the table must never fill
    // up (LRU eviction would be another path than the one measured).
    for s in &list {
        if let Frames::NewFlows { .. } = s.frames {
            let prefilled = if s.id == FULL_TABLE_SCENARIO {
                LIVE_FLOWS
            } else {
                0
            };
            let inserts = prefilled as u64
                + options.runs as u64
                + options.rounds as u64 * options.warmup as u64
                + options.stats_runs as u64;
            ensure!(
                inserts < DEFAULT_CONN_TABLE_SIZE as u64,
                "{}: {inserts} connections would be in a table of {DEFAULT_CONN_TABLE_SIZE}: fewer runs, please",
                s.id
            );
        }
    }
    let programs = vec![
        program_facts("bench_tx (trivial)", list[0].program.xdp())?,
        program_facts("lb_xdp", list[1].program.xdp())?,
    ];

    let ids: Vec<String> = list
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s.id,
                s.program.xdp().info().map(|i| i.id()).unwrap_or(0)
            )
        })
        .collect();
    progress(&format!(
        "program ids (for bpftool prog): {}",
        ids.join(", ")
    ));

    let stats_while_timing = bpf_stats_enabled();
    let mut out = vec![0u8; 4096];
    let per_round = options.runs / options.rounds;
    for round in 0..options.rounds {
        progress(&format!(
            "round {}/{}: {per_round} runs of each of {} scenarios",
            round + 1,
            options.rounds,
            list.len()
        ));
        for s in &mut list {
            let prog = s.program.xdp();
            for _ in 0..options.warmup {
                run_once(prog, s.frames.next(), &mut out, s.verdict)
                    .with_context(|| s.id.clone())?;
            }
            s.samples.reserve(per_round as usize);
            for _ in 0..per_round {
                let ns = run_once(prog, s.frames.next(), &mut out, s.verdict)
                    .with_context(|| s.id.clone())?;
                s.samples.push(ns);
            }
            s.runs_done += (options.warmup + per_round) as u64;
        }
    }

    // The program alone, by the kernel's own accounting (a separate pass:
    // the stats add clock reads to every run).
    progress(&format!(
        "kernel BPF run-time stats: {} more runs of each scenario",
        options.stats_runs
    ));
    {
        let _stats =
            aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
        for s in &mut list {
            let prog = s.program.xdp();
            let before = prog.info()?;
            for _ in 0..options.stats_runs {
                run_once(prog, s.frames.next(), &mut out, s.verdict)
                    .with_context(|| s.id.clone())?;
            }
            let after = prog.info()?;
            let runs = after.run_count().saturating_sub(before.run_count());
            let time = after.run_time().saturating_sub(before.run_time());
            if runs > 0 {
                s.prog_ns = Some(time.as_nanos() as f64 / runs as f64);
            }
            s.runs_done += options.stats_runs as u64;
        }
    }

    // One repeat = N call where repeating the same frame is valid.
    progress(&format!(
        "repeat = {} cross-check where the frame may be repeated",
        options.repeat
    ));
    for s in &mut list {
        if !s.repeatable || options.repeat == 0 {
            continue;
        }
        let frame = s.frames.next().to_vec();
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(&frame);
        opts.data_out = Some(&mut out);
        opts.repeat = options.repeat;
        let result = s
            .program
            .xdp()
            .test_run(opts)
            .context("BPF_PROG_TEST_RUN repeat")?;
        ensure!(
            result.return_value == s.verdict,
            "{}: repeat run gave verdict {}",
            s.id,
            result.return_value
        );
        s.repeat_mean_ns = Some(result.duration.as_nanos() as f64);
        s.runs_done += options.repeat as u64;
        s.repeat_ok = true;
    }

    // Every run took the path it was meant to.
    for s in &list {
        let after = s.program.reasons();
        for reason in s.reasons_per_run {
            let moved = after.get(reason).copied().unwrap_or(0)
                - s.reasons_before.get(reason).copied().unwrap_or(0);
            if moved != s.runs_done {
                bail!(
                    "{}: counter {reason} moved by {moved} over {} runs: the runs did not all take the measured path \
                     (counters now {after:?})",
                    s.id,
                    s.runs_done
                );
            }
        }
        let unexpected: Vec<(&str, u64)> = after
            .iter()
            .filter(|(k, v)| {
                !s.reasons_per_run.contains(k)
                    && **v != s.reasons_before.get(*k).copied().unwrap_or(0)
            })
            .map(|(k, v)| (*k, *v))
            .collect();
        ensure!(
            unexpected.is_empty(),
            "{}: unexpected counters moved: {unexpected:?}",
            s.id
        );
    }

    let timer_step_ns = timer_step(&list[0].samples);
    let mut trivial_sorted = list[0].samples.clone();
    trivial_sorted.sort_unstable();
    trivial_sorted.dedup();
    let scenarios = list
        .iter_mut()
        .map(|s| {
            s.samples.sort_unstable();
            let n = s.samples.len();
            let sum: u64 = s.samples.iter().map(|&v| v as u64).sum();
            ScenarioResult {
                id: s.id.clone(),
                title: s.title.clone(),
                group: s.group,
                setup: s.setup.clone(),
                runs: n as u64,
                median_ns: percentile(&s.samples, 50.0),
                p99_ns: percentile(&s.samples, 99.0),
                mean_ns: sum as f64 / n as f64,
                min_ns: s.samples[0] as f64,
                prog_ns: s.prog_ns,
                repeat_mean_ns: s.repeat_ok.then_some(s.repeat_mean_ns).flatten(),
                target_ratio: s.target_ratio,
                samples: std::mem::take(&mut s.samples),
            }
        })
        .collect();
    Ok(DatapathResults {
        options: options.clone(),
        scenarios,
        timer_step_ns,
        trivial_distinct_values: trivial_sorted.len(),
        bpf_stats_enabled_while_timing: stats_while_timing,
        programs,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

fn program_facts(name: &str, prog: &Xdp) -> Result<ProgramFacts> {
    let info = prog.info()?;
    Ok(ProgramFacts {
        name: name.to_owned(),
        xlated_insns: info.size_translated().map(|b| b / 8),
        verified_insns: info.verified_instruction_count(),
        jited_bytes: info.size_jitted(),
    })
}

fn pin_to_cpu(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET only writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
        }
    }
    Ok(())
}

fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() != "0")
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// The step the per-run durations actually come in: the smallest gap
/// between clusters of values (values within 2 ns of each other are one
/// cluster: a clock that advances ~10.0 ns at a time gives 60 and 61, 70 and
/// 71 ns...), counting only values seen in at least 0.1% of the runs.
/// 1 for a clock with nanosecond steps.
pub fn timer_step(samples: &[u32]) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let min_count = (sorted.len() / 1000).max(1);
    let mut common = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let j = sorted[i..].partition_point(|&v| v == sorted[i]) + i;
        if j - i >= min_count {
            common.push(sorted[i]);
        }
        i = j;
    }
    let mut starts: Vec<u32> = Vec::new();
    let mut last: Option<u32> = None;
    for v in common {
        if last.is_none_or(|l| v - l > 2) {
            starts.push(v);
        }
        last = Some(v);
    }
    starts
        .windows(2)
        .map(|w| (w[1] - w[0]) as u64)
        .min()
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7], 99.0), 7.0);
    }

    #[test]
    fn the_timer_step_is_the_gap_between_clusters() {
        let ten_ns_clock = [60, 70, 70, 71, 70, 80, 61, 70, 81, 90];
        assert_eq!(timer_step(&ten_ns_clock), 10);
        let ns_clock: Vec<u32> = (40..60).chain(45..50).collect();
        assert_eq!(timer_step(&ns_clock), 1);
        assert_eq!(timer_step(&[5, 5]), 1);
    }
}
