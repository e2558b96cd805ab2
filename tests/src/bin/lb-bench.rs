//! lb-bench: the benchmark behind `cargo xtask bench` (see
//! `lb_tests::bench`). Needs root, lbd, lbctl and lab-server built
//! (release builds for figures worth keeping: `cargo xtask bench` does that),
//! wrk and haproxy.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use lb_tests::bench::datapath::{self, DatapathOptions};
use lb_tests::bench::e2e::{self, E2eOptions};
use lb_tests::bench::ecmp;
use lb_tests::bench::report::{self, Machine, Results};
use lb_tests::bench::sweep::{self, SweepOptions};
use lb_tests::bins::workspace_root;

#[derive(Parser, Debug)]
#[command(
    name = "lb-bench",
    about = "Datapath cost per packet, end-to-end throughput, connection-table walks (run by `cargo xtask bench`)"
)]
struct Cli {
    /// Timed runs per datapath scenario (at least 100000 for the published figures).
    #[arg(long, default_value_t = 100_000)]
    runs: u32,
    /// The datapath runs are taken in this many rounds over all scenarios.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Pin the datapath measurement to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Only the datapath scenarios whose id starts with this (repeatable;
    /// the trivial program always runs), e.g. `--only dr_ --only sched_lc`.
    #[arg(long)]
    only: Vec<String>,
    /// Seconds per end-to-end wrk run.
    #[arg(long, default_value_t = 8)]
    duration: u32,
    /// wrk's connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Only the datapath part.
    #[arg(long, conflicts_with_all = ["e2e_only", "sweep_only", "ecmp_only"])]
    datapath_only: bool,
    /// Only the end-to-end part.
    #[arg(long, conflicts_with_all = ["sweep_only", "ecmp_only"])]
    e2e_only: bool,
    /// Only the connection-table walks (the other figures in results.md,
    /// results.json and the README stay as they are).
    #[arg(long, conflicts_with = "ecmp_only")]
    sweep_only: bool,
    /// Only the active-active directors (the other figures stay as they are).
    #[arg(long)]
    ecmp_only: bool,
    /// Connection-table sizes for the walks.
    #[arg(long, value_delimiter = ',', default_values_t = SweepOptions::default().sizes)]
    sweep_sizes: Vec<u32>,
    /// Timed walks of each kind per size.
    #[arg(long, default_value_t = SweepOptions::default().repeats)]
    sweep_repeats: u32,
    /// Where results.json, results.md and datapath.svg go (default: <workspace>/bench).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write every per-run duration, one file per scenario, into this directory.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Leave README.md alone (by default its section between the bench markers is rewritten).
    #[arg(long)]
    no_readme: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match bench(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nlb-bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(line: &str) {
    println!("  - {line}");
}

fn bench(cli: &Cli) -> Result<()> {
    if !lb_tests::is_root() {
        bail!("lb-bench needs root (BPF_PROG_TEST_RUN, network namespaces)");
    }
    let mut machine = Machine::describe();
    println!(
        "lb-bench on {} (load average {})",
        machine.summary(),
        machine.load_before
    );
    let mut results = Results {
        machine: machine.clone(),
        datapath: None,
        e2e: None,
        sweep: None,
        ecmp: None,
    };
    let only_one_part = cli.sweep_only || cli.ecmp_only;

    if !cli.e2e_only && !only_one_part {
        println!("\n==> Datapath: ns per packet through BPF_PROG_TEST_RUN");
        let options = DatapathOptions {
            runs: cli.runs,
            rounds: cli.rounds,
            cpu: cli.cpu,
            only: cli.only.clone(),
            ..Default::default()
        };
        let d = datapath::run(&options, &mut |l| progress(l)).context("datapath benchmark")?;
        if let Some(dir) = &cli.samples {
            std::fs::create_dir_all(dir)?;
            for s in &d.scenarios {
                let text: String = s.samples.iter().map(|v| format!("{v}\n")).collect();
                std::fs::write(dir.join(format!("{}.txt", s.id)), text)?;
            }
        }
        results.datapath = Some(d);
    }
    if !cli.datapath_only && !only_one_part {
        println!(
            "\n==> End to end: wrk through lbd (DR), HAProxy (mode tcp), and straight to a real server"
        );
        let options = E2eOptions {
            duration_s: cli.duration,
            connections: cli.connections,
            ..Default::default()
        };
        let e = e2e::run(&options, &mut |l| progress(l)).context("end-to-end benchmark")?;
        results.e2e = Some(e);
    }
    if !cli.datapath_only && !cli.e2e_only && !cli.ecmp_only {
        println!(
            "\n==> Connection table: a full walk, key by key and batched, and a sweep pass in ticks"
        );
        let options = SweepOptions {
            sizes: cli.sweep_sizes.clone(),
            repeats: cli.sweep_repeats,
        };
        let s = sweep::run(&options, &mut |l| progress(l)).context("connection-table walks")?;
        results.sweep = Some(s);
    }
    if !cli.datapath_only && !cli.e2e_only && !cli.sweep_only {
        println!("\n==> Active-active: one, two and three directors behind an ECMP router");
        let options = E2eOptions { duration_s: cli.duration, connections: cli.connections, ..Default::default() };
        let e = ecmp::run(&options, &mut |l| progress(l)).context("active-active benchmark")?;
        println!("\n{}", ecmp::table_markdown(&e));
        results.ecmp = Some(e);
    }
    machine.load_after = report::loadavg();
    results.machine = machine;

    if results.datapath.is_some() || results.e2e.is_some() {
        println!("\n{}", results.summary_markdown());
    }
    if let Some(s) = &results.sweep {
        println!("\n{}", sweep::table_markdown(s));
    }
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("bench"));
    let readme = workspace_root().join("README.md");
    let written = report::write_all(&results, &out, (!cli.no_readme).then_some(readme.as_path()))?;
    println!("Written: {}", written.join(", "));
    let missed: Vec<_> = results.targets().into_iter().filter(|t| !t.met).collect();
    if !missed.is_empty() {
        println!("\nTargets missed:");
        for t in missed {
            println!("  {}: wanted {}, measured {}", t.what, t.wanted, t.measured);
        }
    }
    Ok(())
}
