//! The kernel matrix: the tests that depend most on the kernel (its
//! verifier above all) run again inside other kernels under QEMU
//! (`cargo xtask vm`): Debian 12's 6.1 and Debian's 6.12, beside the host's
//! own. The same object verifies with very different effort on each, and
//! older verifiers have their own bugs; a budget and a fix proven on one
//! kernel prove nothing on the next.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::util::{cargo, show, step};
use crate::vm::{self, GuestCommand, VmConfig};

/// The kernels `cargo xtask test` runs the matrix in (`--kernel` picks one).
pub const KERNELS: [&str; 2] = ["6.1", "6.12"];

/// The test files of lb-tests run in each kernel: the verifier budget; the
/// kernel probes and how a refusal is reported; the datapath fixtures
/// (`datapath`, `datapath_fwmark`, `icmp`, `hostile_frames`), the schedulers' equivalence runs
/// (`datapath_schedulers`) and the datapath fuzzer; the DR lab (`director`:
/// rr split, keep-alive, SIGHUP changes, SIGTERM cleanup; `director_lbctl`:
/// lbctl's listings; `director_config`: config mistakes refused); NAT's
/// fixtures (`nat_datapath`) and its lab with two director interfaces
/// (`nat`: a redirect between them, the kernel's FIB for replies).
pub const TESTS: [&str; 16] = [
    "verifier_budget",
    "kernel_support",
    "datapath",
    "datapath_fwmark",
    "datapath_schedulers",
    "icmp",
    "hostile_frames",
    "fuzz_datapath",
    "director",
    "director_lbctl",
    "director_config",
    "nat_datapath",
    "nat",
    "datapath6",
    "ipv6",
    "decap",
];

/// Under emulation the datapath tests run several times slower than here.
const TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// How many times slower the tests run under QEMU's software emulation
/// (measured: lbd's start, the verifier, the lab's curls, 5-10 times).
const EMULATION_TIME_SCALE: &str = "10";

/// How one kernel's run ended.
pub enum Outcome {
    Passed(Duration),
    Failed(String),
    /// The kernel could not be had or booted here (no QEMU, no network for
    /// the package): said, but not a test failure.
    Skipped(String),
}

/// Runs the matrix tests in each of `kernels`; one outcome per kernel. The
/// test binaries must be buildable (the caller has built what they start).
pub fn run(kernels: &[String]) -> Result<Vec<(String, Outcome)>> {
    step(&format!("Kernel matrix: {} in Linux {}", TESTS.join(", "), kernels.join(", ")));
    let binaries = test_binaries()?;
    let mut outcomes = Vec::new();
    for kernel in kernels {
        outcomes.push((kernel.clone(), run_one(kernel, &binaries)));
    }
    Ok(outcomes)
}

fn run_one(kernel: &str, binaries: &[PathBuf]) -> Outcome {
    if let Err(e) = vm::check_tools() {
        return Outcome::Skipped(format!("{e:#}"));
    }
    if let Err(e) = vm::kernel::prepare(kernel) {
        return Outcome::Skipped(format!("cannot get the kernel: {e:#}"));
    }
    step(&format!("Kernel matrix: Linux {kernel} (QEMU, software emulation)"));
    // One boot runs every binary; each binary's tests one at a time (the
    // lab's timings are generous, not emulation-proof when run together).
    let mut script = String::from("rc=0\n");
    for binary in binaries {
        script.push_str(&format!("'{}' --test-threads=1 || rc=1\n", binary.display()));
    }
    script.push_str("exit $rc\n");
    let mut command = match GuestCommand::new(&["sh".into(), "-c".into(), script]) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    // Software emulation runs everything about ten times slower: the tests'
    // timeouts and timed bounds scale (lb_tests::scaled), their counts not.
    command.set_env("LB_TEST_TIME_SCALE", EMULATION_TIME_SCALE);
    let config = VmConfig { timeout: TIMEOUT, ..VmConfig::default() };
    let started = Instant::now();
    match vm::run_command_in_kernel(kernel, &command, &config) {
        Ok(0) => Outcome::Passed(started.elapsed()),
        Ok(code) => Outcome::Failed(format!("tests failed (exit status {code})")),
        Err(e) => Outcome::Failed(format!("{e:#}")),
    }
}

/// Builds the matrix's test binaries and returns their paths (from cargo's
/// JSON messages: the file names carry hashes).
fn test_binaries() -> Result<Vec<PathBuf>> {
    let mut cmd = cargo();
    cmd.args(["test", "-p", "lb-tests", "--no-run", "--message-format=json-render-diagnostics"]);
    for test in TESTS {
        cmd.args(["--test", test]);
    }
    println!("$ {}", show(&cmd));
    let output = cmd.stderr(Stdio::inherit()).output().context("building the matrix's test binaries")?;
    if !output.status.success() {
        bail!("building the matrix's test binaries failed");
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_test = message["profile"]["test"].as_bool() == Some(true);
        let name = message["target"]["name"].as_str().unwrap_or_default();
        if let (true, Some(executable)) = (is_test && TESTS.contains(&name), message["executable"].as_str()) {
            binaries.push(PathBuf::from(executable));
        }
    }
    if binaries.len() != TESTS.len() {
        bail!("expected {} test binaries from cargo, found {binaries:?}", TESTS.len());
    }
    Ok(binaries)
}

/// Prints one line per kernel; `Err` if any failed.
pub fn report(outcomes: &[(String, Outcome)]) -> Result<()> {
    println!("\nKernel matrix:");
    let mut failed = Vec::new();
    for (kernel, outcome) in outcomes {
        match outcome {
            Outcome::Passed(took) => println!("  Linux {kernel}: passed ({} s)", took.as_secs()),
            Outcome::Failed(why) => {
                println!("  Linux {kernel}: FAILED: {why}");
                failed.push(kernel.as_str());
            }
            Outcome::Skipped(why) => println!("  Linux {kernel}: SKIPPED, not tested: {why}"),
        }
    }
    if failed.is_empty() { Ok(()) } else { bail!("the kernel matrix failed in Linux {}", failed.join(", ")) }
}
