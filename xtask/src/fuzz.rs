//! `cargo xtask fuzz`: the fuzz targets of `fuzz/` (cargo-fuzz, libFuzzer),
//! each for a bounded time from its checked-in seeds (`fuzz/corpus/NAME`).
//! `cargo xtask test` runs each for [`TEST_SECONDS`] after the host tests.
//!
//! libFuzzer adds the inputs it finds to a scratch corpus under
//! `target/fuzz/corpus/NAME` (kept between runs, never checked in); a
//! crashing input goes to `fuzz/artifacts/NAME/`. Each run's output is in
//! `target/fuzz/logs/NAME.log`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::setup::{NIGHTLY, cargo_fuzz_version};
use crate::util::{self, show, step, target_dir, workspace_root};

/// One fuzz target: its name in fuzz/Cargo.toml, what it feeds, whether it
/// has a libFuzzer dictionary (`fuzz/dict/NAME.dict`: words to splice in),
/// and libFuzzer options of its own.
pub struct Target {
    pub name: &'static str,
    pub what: &'static str,
    pub dict: bool,
    pub options: &'static [&'static str],
}

pub const TARGETS: [Target; 5] = [
    Target {
        name: "vrrp_advert",
        what: "VRRP adverts, v2 and v3, with and without auth (vrrp::packet)",
        dict: false,
        options: &[],
    },
    Target {
        name: "sync_datagram",
        what: "sync datagrams, plain, keyed, and signed with the key (sync::wire::decode)",
        dict: false,
        options: &[],
    },
    Target {
        name: "http_response",
        what: "HTTP/1 responses in pieces of any size (health::probe::http_response)",
        dict: true,
        // Long enough for chunk-size lines past their 4 KiB bound.
        options: &["-max_len=16384"],
    },
    Target {
        name: "ipvsadm_grammar",
        what: "ipvsadm argument vectors and -R input (lb_ipvsadm::grammar)",
        dict: true,
        options: &[],
    },
    Target { name: "config_toml", what: "config files (config::Config::parse)", dict: true, options: &[] },
];

/// Seconds per target in `cargo xtask test`.
pub const TEST_SECONDS: u64 = 10;
/// Seconds per target in `cargo xtask fuzz` without `--seconds`.
pub const DEFAULT_SECONDS: u64 = 60;
/// libFuzzer's bounds on one input: its time (a hang is a crash) and the
/// process's memory. (Single allocations are bounded in the targets
/// themselves: `lb_fuzz::Bounded`.)
const INPUT_TIMEOUT_SECS: u32 = 10;
const RSS_LIMIT_MB: u32 = 1024;

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args, Clone, Debug)]
pub struct FuzzArgs {
    /// Seconds each target runs.
    #[arg(long, default_value_t = DEFAULT_SECONDS, value_parser = clap::value_parser!(u64).range(1..))]
    pub seconds: u64,
    /// The targets to run (default: all).
    #[arg(value_name = "TARGET", value_parser = TARGETS.map(|t| t.name))]
    pub targets: Vec<String>,
}

/// How one target's run ended.
pub enum Outcome {
    /// Nothing found; how many inputs it ran (libFuzzer's
    /// `stat::number_of_executed_units`).
    Ran { runs: Option<u64>, took: Duration },
    /// A crash (a failed check, a panic, an allocation above the bound, a
    /// timeout, out of memory) or libFuzzer failing: why, and the input
    /// that did it.
    Crashed { runs: Option<u64>, reason: String, reproducer: Option<PathBuf>, log: PathBuf },
}

/// `cargo xtask fuzz`: makes sure cargo-fuzz is there, runs the targets
/// chosen (all by default), reports; fails if one crashed.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    if cargo_fuzz_version().is_err() {
        crate::setup::setup_cargo_fuzz()?;
    }
    let targets: Vec<&Target> = if args.targets.is_empty() {
        TARGETS.iter().collect()
    } else {
        TARGETS.iter().filter(|t| args.targets.iter().any(|name| name == t.name)).collect()
    };
    report(&run(&targets, args.seconds)?)
}

/// Why fuzzing cannot be done here, if it cannot: cargo-fuzz missing
/// (`cargo xtask setup` tried to install it).
pub fn unavailable() -> Option<String> {
    cargo_fuzz_version().err().map(|e| format!("cargo-fuzz does not run under the {NIGHTLY} toolchain ({e:#})"))
}

/// Builds `targets`, then runs each for `seconds`; one outcome per target.
/// `Err` if they cannot be built.
pub fn run(targets: &[&Target], seconds: u64) -> Result<Vec<(&'static str, Outcome)>> {
    step(&format!(
        "Fuzzing: {} for {seconds} s each (libFuzzer, cargo-fuzz)",
        targets.iter().map(|t| t.name).collect::<Vec<_>>().join(", ")
    ));
    let mut build = cargo_fuzz("build");
    if targets.len() == 1 {
        build.arg(targets[0].name);
    }
    util::run(&mut build).context("building the fuzz targets")?;
    let mut outcomes = Vec::new();
    for target in targets {
        outcomes.push((target.name, run_one(target, seconds)?));
    }
    Ok(outcomes)
}

/// `cargo +nightly fuzz SUBCOMMAND` with the options every use shares:
/// no sanitizer (the code fuzzed is safe Rust; the targets bound
/// allocations themselves), the workspace's target dir, and no eBPF object
/// (the parsers need none; lb-userspace's build script would build it).
fn cargo_fuzz(subcommand: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", NIGHTLY, "cargo", "fuzz", subcommand, "--sanitizer", "none", "--target-dir"])
        .arg(target_dir().join("fuzz"))
        .current_dir(workspace_root())
        .env("LB_SKIP_EBPF_BUILD", "1")
        .env("CARGO_INCREMENTAL", "0");
    cmd
}

fn run_one(target: &Target, seconds: u64) -> Result<Outcome> {
    let root = workspace_root();
    let seeds = root.join("fuzz").join("corpus").join(target.name);
    let scratch = target_dir().join("fuzz").join("corpus").join(target.name);
    let logs = target_dir().join("fuzz").join("logs");
    for dir in [&scratch, &logs] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    println!("\n{}: {}", target.name, target.what);
    let log = logs.join(format!("{}.log", target.name));
    let mut cmd = cargo_fuzz("run");
    // New inputs go to the first directory: the scratch one, not the seeds.
    cmd.arg(target.name).arg(&scratch).arg(&seeds).arg("--");
    cmd.arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1")
        .args(target.options);
    if target.dict {
        let dict = root.join("fuzz").join("dict").join(format!("{}.dict", target.name));
        cmd.arg(format!("-dict={}", dict.display()));
    }
    println!("$ {} > {}", show(&cmd), log.display());
    let file = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let started = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .status()
        .with_context(|| format!("cannot start `{}`", show(&cmd)))?;
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let runs = executed_units(&text);
    let outcome = match reproducer(&text) {
        None if status.success() => Outcome::Ran { runs, took },
        reproducer => {
            let reason = crash_reason(&text).unwrap_or_else(|| format!("exited with {status}:\n{}", tail(&text, 15)));
            Outcome::Crashed { runs, reason, reproducer: reproducer.map(|p| root.join(p)), log }
        }
    };
    match &outcome {
        Outcome::Ran { runs, took } => {
            println!("{}: {} inputs in {} s, nothing found", target.name, count(*runs), took.as_secs())
        }
        Outcome::Crashed { .. } => println!("{}: CRASHED (see below)", target.name),
    }
    Ok(outcome)
}

/// libFuzzer's count of inputs run: `stat::number_of_executed_units: N`
/// (with -print_final_stats=1), else the last `#N ...` status line.
fn executed_units(log: &str) -> Option<u64> {
    let stat = log.lines().find_map(|l| l.strip_prefix("stat::number_of_executed_units:"));
    if let Some(n) = stat.and_then(|n| n.trim().parse().ok()) {
        return Some(n);
    }
    log.lines().rev().find_map(|l| {
        let digits: String = l.strip_prefix('#')?.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// Where libFuzzer wrote the input that crashed (`Test unit written to
/// PATH`), relative to the workspace as cargo-fuzz has it.
fn reproducer(log: &str) -> Option<PathBuf> {
    log.lines().find_map(|l| l.split_once("Test unit written to ").map(|(_, path)| PathBuf::from(path.trim())))
}

/// The lines that say what went wrong: a panic's place and message, an
/// allocation refused, libFuzzer's verdict.
fn crash_reason(log: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut reason = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            reason.push(line.trim().to_owned());
            // The message: the lines up to the backtrace note or a blank.
            reason.extend(
                lines[i + 1..]
                    .iter()
                    .take_while(|l| !l.is_empty() && !l.starts_with("note:") && !l.starts_with("=="))
                    .take(8)
                    .map(|l| l.to_string()),
            );
        } else if line.starts_with("memory allocation of")
            || line.contains("ERROR: libFuzzer:")
            || line.starts_with("SUMMARY: libFuzzer:")
        {
            reason.push(line.trim().to_owned());
        }
    }
    (!reason.is_empty()).then(|| reason.join("\n"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn count(runs: Option<u64>) -> String {
    runs.map_or_else(|| "? (no count in the log)".to_owned(), |n| n.to_string())
}

/// Prints one line per target (a crash with its reason and reproducer);
/// `Err` if any crashed.
pub fn report(outcomes: &[(&'static str, Outcome)]) -> Result<()> {
    println!("\nFuzzing:");
    let mut crashed = Vec::new();
    for (name, outcome) in outcomes {
        match outcome {
            Outcome::Ran { runs, took } => {
                println!("  {name}: {} inputs in {} s, nothing found", count(*runs), took.as_secs())
            }
            Outcome::Crashed { runs, reason, reproducer, log } => {
                println!("  {name}: CRASHED after {} inputs", count(*runs));
                for line in reason.lines() {
                    println!("      {line}");
                }
                match reproducer {
                    Some(input) => {
                        println!("      input: {}", input.display());
                        println!("      again: {}", show(&reproduce(name, input)));
                    }
                    None => println!("      (no input saved)"),
                }
                println!("      log: {}", log.display());
                crashed.push(*name);
            }
        }
    }
    if crashed.is_empty() { Ok(()) } else { bail!("fuzzing found crashes in {}", crashed.join(", ")) }
}

/// The command that runs `target` on `input` once.
fn reproduce(target: &str, input: &Path) -> Command {
    let mut cmd = cargo_fuzz("run");
    cmd.arg(target).arg(input);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: &str = "INFO: Running with entropic power schedule (0xFF, 100).\n\
        #2\tINITED cov: 10 ft: 10 corp: 1/1b exec/s: 0 rss: 30Mb\n\
        #65536\tpulse  cov: 120 ft: 300 corp: 40/2Kb lim: 652 exec/s: 21845 rss: 40Mb\n\
        #120001\tDONE   cov: 130 ft: 320 corp: 44/2Kb lim: 1000 exec/s: 12000 rss: 41Mb\n\
        Done 120001 runs in 11 second(s)\n\
        stat::number_of_executed_units: 120001\n\
        stat::average_exec_per_sec:     10909\n";

    const PANIC: &str = "#1024\tNEW    cov: 99 ft: 99 corp: 9/99b\n\
        \n\
        thread '<unnamed>' panicked at fuzz_targets/sync_datagram.rs:70:5:\n\
        assertion `left == right` failed: re-encoded [4c, 53]\n\
        \x20 left: Err(BadRecord)\n\
        \x20right: Ok(())\n\
        note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\
        ==4242== ERROR: libFuzzer: deadly signal\n\
        SUMMARY: libFuzzer: deadly signal\n\
        MS: 1 ChangeByte-; base unit: 0000\n\
        artifact_prefix='/work/wt/fuzz/artifacts/sync_datagram/'; Test unit written to /work/wt/fuzz/artifacts/sync_datagram/crash-1234abcd\n\
        Base64: TFM=\n";

    #[test]
    fn inputs_run_are_counted() {
        assert_eq!(executed_units(DONE), Some(120_001));
        assert_eq!(executed_units(PANIC), Some(1024), "no final stats: the last status line");
        assert_eq!(executed_units("nothing\n"), None);
        assert_eq!(reproducer(DONE), None);
    }

    #[test]
    fn a_crash_names_its_reason_and_input() {
        assert_eq!(reproducer(PANIC), Some(PathBuf::from("/work/wt/fuzz/artifacts/sync_datagram/crash-1234abcd")));
        let reason = crash_reason(PANIC).unwrap();
        assert_eq!(
            reason.lines().collect::<Vec<_>>(),
            [
                "thread '<unnamed>' panicked at fuzz_targets/sync_datagram.rs:70:5:",
                "assertion `left == right` failed: re-encoded [4c, 53]",
                "  left: Err(BadRecord)",
                " right: Ok(())",
                "==4242== ERROR: libFuzzer: deadly signal",
                "SUMMARY: libFuzzer: deadly signal",
            ]
        );
        let oom = "memory allocation of 7340032 bytes failed\n==7== ERROR: libFuzzer: deadly signal\n";
        assert_eq!(crash_reason(oom).unwrap().lines().count(), 2);
    }

    #[test]
    fn every_target_has_its_source_seeds_and_dictionary() {
        for target in TARGETS {
            let seeds = workspace_root().join("fuzz/corpus").join(target.name);
            let n = std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0);
            assert!(n > 0, "no seeds in {}", seeds.display());
            let source = workspace_root().join("fuzz/fuzz_targets").join(format!("{}.rs", target.name));
            assert!(source.is_file(), "{}", source.display());
            let dict = workspace_root().join("fuzz/dict").join(format!("{}.dict", target.name));
            assert_eq!(dict.is_file(), target.dict, "{}", dict.display());
        }
    }
}
