//! `cargo xtask`: setting up a machine, building, testing, and a demo.
//! Every command it runs is printed first (`$ ...`).

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use xtask::fuzz::{self, FuzzArgs};
use xtask::{DemoArgs, matrix};
use xtask::setup::{ensure_cargo_bin_in_path, setup};
use xtask::util::{cargo, require_root, run, run_tests, step, target_dir};
use xtask::vm::{VmArgs, VmError};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build orchestration for the XDP load balancer: setup, build, test, fuzz, demo, bench, vm"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need, only what is missing
    /// (apt packages, nightly rust-src, bpf-linker, bpffs). Run as root.
    Setup,
    /// Release build of lbd and lbctl (with the eBPF object inside lbd) and
    /// the test binaries.
    Build,
    /// Setup, build the binaries the tests run, then `cargo test --workspace`
    /// (unit, fixture and namespace-lab tests), then each fuzz target for 10 s
    /// from its seeds (skipped, and said so, without cargo-fuzz), then the
    /// kernel matrix: the verifier budget, datapath and DR lab tests again
    /// inside Debian's 6.1 and 6.12 under QEMU (skipped, and said so, where
    /// QEMU or the kernel packages cannot be had). Run as root.
    /// Arguments after `--` go to cargo test, e.g. `cargo xtask test -- --test lab`
    /// (and then only those run: no fuzzing, no kernel matrix).
    Test {
        /// Only the kernel matrix, in this kernel (`6.1`, `6.12`, or a
        /// Debian release such as `6.1.0-57-amd64`); repeatable.
        #[arg(long, value_name = "KERNEL")]
        kernel: Vec<String>,
        /// Only the tests on this machine's kernel (and fuzzing): no kernel matrix.
        #[arg(long, conflicts_with = "kernel")]
        host_only: bool,
        /// Passed on to cargo test (e.g. `--test lab`, `-p lb-tests`, `-- --nocapture`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CARGO_TEST_ARGS"
        )]
        cargo_test_args: Vec<String>,
    },
    /// Run the fuzz targets (fuzz/: the VRRP advert, sync datagram, HTTP
    /// response, ipvsadm grammar and config parsers), each for `--seconds`
    /// from its seeds (fuzz/corpus/TARGET); prints how many inputs each ran
    /// and any crash with the input that caused it. Installs cargo-fuzz if
    /// missing; builds with the nightly toolchain.
    Fuzz(FuzzArgs),
    /// Setup, build, then show lbd balancing HTTP requests across real
    /// servers in a namespace lab, and tear it all down. Run as root.
    Demo(DemoArgs),
    /// Setup, release build, then benchmark: the datapath's ns per packet
    /// (BPF_PROG_TEST_RUN) next to a trivial XDP_TX program, and requests
    /// and connections per second in the namespace lab through lbd (DR),
    /// HAProxy and straight to a real server. Writes bench/results.json,
    /// bench/results.md, bench/datapath.svg and README.md's table. Run as
    /// root; takes a few minutes.
    /// Arguments after `--` go to lb-bench, e.g. `cargo xtask bench -- --datapath-only`.
    Bench {
        /// Passed on to lb-bench (see `cargo xtask bench -- --help`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "LB_BENCH_ARGS"
        )]
        args: Vec<String>,
    },
    /// Run a command as root inside one of Debian's kernels (6.1, 6.12, ...)
    /// under QEMU, with this host's root filesystem (read-only, a tmpfs on
    /// top) and the current directory; exits with the command's status.
    /// The kernel is downloaded and cached on first use.
    /// Example: `cargo xtask vm --kernel 6.1 -- target/debug/deps/datapath-HASH --test-threads=1`.
    Vm(VmArgs),
    /// The Debian package (target/debian/lb_VERSION_ARCH.deb): lbd, lbctl,
    /// the systemd units, an example /etc/lb/lb.toml, man pages and shell
    /// completions. Release binaries unless --debug.
    Deb(xtask::deb::DebArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    ensure_cargo_bin_in_path();
    let result = match cli.command {
        Cmd::Setup => setup(),
        Cmd::Build => build(),
        Cmd::Test { kernel, host_only, cargo_test_args } => test(&kernel, host_only, &cargo_test_args),
        Cmd::Fuzz(args) => fuzz::fuzz(&args),
        Cmd::Demo(args) => demo(&args),
        Cmd::Bench { args } => bench(&args),
        Cmd::Vm(args) => return vm(&args),
        Cmd::Deb(args) => xtask::deb::deb(&args).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nerror: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Exits with the guest command's status; with 124 on a timeout (as
/// timeout(1)) and 128+N on signal N, like a shell.
fn vm(args: &VmArgs) -> ExitCode {
    match xtask::vm::vm(args) {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(255)),
        Err(e) => {
            eprintln!("\nerror: {e:#}");
            match e.downcast_ref::<VmError>() {
                Some(VmError::TimedOut(_)) => ExitCode::from(124),
                Some(VmError::Interrupted(signal)) => {
                    ExitCode::from(u8::try_from(128 + signal).unwrap_or(255))
                }
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn build() -> Result<()> {
    step(
        "Release build: lbd (lb-userspace; its build script builds the eBPF object), lbctl and the test binaries",
    );
    run(cargo().args(["build", "--release", "-p", "lb-userspace", "-p", "lbctl", "-p", "lb-tests"]))
        .context("release build")?;
    let release = target_dir().join("release");
    println!("\nBuilt:");
    for (name, what) in [
        ("lbd", "the director daemon (XDP datapath embedded)"),
        ("lbctl", "ipvsadm-style view of lbd's tables"),
        ("lab-server", "test HTTP/UDP server for the namespace lab"),
    ] {
        let path = release.join(name);
        let mark = if path.is_file() { "" } else { "  (missing!)" };
        println!("  {:<60} {what}{mark}", path.display());
    }
    Ok(())
}

/// The binaries the integration tests start (lbd, lbctl, lab-server):
/// `cargo test` builds only the binaries of the package under test. This
/// also compiles lb-bench (the benchmark), which the tests never run.
fn build_test_binaries() -> Result<()> {
    step(
        "Building the binaries the integration tests run: lbd, lbctl, lab-server (and lb-bench, built only)",
    );
    run(cargo().args(["build", "-p", "lb-userspace", "-p", "lbctl", "-p", "lb-tests", "--bins"]))
        .context("building the test binaries")
}

fn test(kernels: &[String], host_only: bool, cargo_test_args: &[String]) -> Result<()> {
    require_root("cargo xtask test")?;
    setup()?;
    build_test_binaries()?;
    if !kernels.is_empty() {
        return matrix::report(&matrix::run(kernels)?);
    }
    step("Running the tests");
    // lb-ebpf only builds for the BPF target (nightly, no_std); its logic is
    // tested through lb-common and the datapath fixtures in lb-tests.
    // --no-fail-fast: one run reports every failing test binary, not the first.
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--no-fail-fast",
    ])
    .args(cargo_test_args);
    let (result, totals) = run_tests(&mut cmd);
    // One closing line over all test binaries (cargo's own last line is
    // usually the doc-tests' "0 passed").
    println!("\n{totals}");
    // Fuzzing and the matrix belong to the whole suite, not to a chosen subset.
    let fuzzing = if !cargo_test_args.is_empty() {
        println!("Fuzzing: not run (a chosen subset of tests)");
        Ok(())
    } else {
        fuzz_briefly()
    };
    let matrix = if host_only || !cargo_test_args.is_empty() {
        println!("Kernel matrix: not run (--host-only or a chosen subset of tests)");
        Ok(())
    } else {
        let kernels: Vec<String> = matrix::KERNELS.iter().map(|k| k.to_string()).collect();
        matrix::run(&kernels).and_then(|outcomes| matrix::report(&outcomes))
    };
    result.context("tests failed")?;
    fuzzing?;
    matrix
}

/// Every fuzz target for a few seconds, so that the suite exercises them;
/// skipped, and said so, where cargo-fuzz cannot be had.
fn fuzz_briefly() -> Result<()> {
    if let Some(why) = fuzz::unavailable() {
        println!("\nfuzzing skipped: {why}");
        return Ok(());
    }
    let targets: Vec<&fuzz::Target> = fuzz::TARGETS.iter().collect();
    fuzz::report(&fuzz::run(&targets, fuzz::TEST_SECONDS)?)
}

fn demo(args: &DemoArgs) -> Result<()> {
    require_root("cargo xtask demo")?;
    setup()?;
    build_test_binaries()?;
    step("Building the demo driver (xtask's lb-demo, which reuses lb-tests' namespace lab)");
    run(cargo().args([
        "build",
        "-p",
        "xtask",
        "--features",
        "demo",
        "--bin",
        "lb-demo",
    ]))
    .context("building lb-demo")?;
    let lb_demo = target_dir().join("debug").join("lb-demo");
    run(Command::new(&lb_demo).args(args.to_args())).context("the demo failed")
}

/// The benchmark is lb-tests' `lb-bench` binary (it reuses the datapath
/// harness and the namespace lab), built in release mode with everything it
/// starts (lbd, lbctl, lab-server): figures of debug builds are worthless.
/// `cargo xtask test` builds it too (so CI keeps it compiling) but never
/// runs it.
fn bench(args: &[String]) -> Result<()> {
    require_root("cargo xtask bench")?;
    setup()?;
    step("Release build: lbd, lbctl, lab-server and the benchmark (lb-bench)");
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "lb-userspace",
        "-p",
        "lbctl",
        "-p",
        "lb-tests",
        "--bins",
    ]))
    .context("release build for the benchmark")?;
    step("Benchmarking (a few minutes; keep the machine otherwise idle for steady figures)");
    let lb_bench = target_dir().join("release").join("lb-bench");
    run(Command::new(&lb_bench).args(args)).context("the benchmark failed")
}
