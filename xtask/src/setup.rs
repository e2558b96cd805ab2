//! `cargo xtask setup`: makes a fresh Debian machine (as root) able to build
//! and test the project, doing only what is missing:
//!
//! 1. the apt packages the tests and the demo use, and those `cargo xtask
//!    vm` boots other kernels with;
//! 2. `rust-src` for the nightly toolchain (lb-ebpf is built with
//!    `-Z build-std=core` for the BPF target);
//! 3. bpf-linker, built against the nightly's own libLLVM (so the LLVM that
//!    writes the bitcode is the LLVM that reads it);
//! 4. the bpffs at /sys/fs/bpf, where lbd pins its maps;
//! 5. cargo-fuzz, which builds and runs the fuzz targets (`cargo xtask
//!    fuzz`); without it fuzzing is skipped, and said so, not a failure.
//!
//! It never updates toolchains (no `rustup update`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util::{
    cargo, cargo_bin_dir, home_dir, in_path, output, output_quiet, require_root, run, show, step,
};

/// Debian packages the lab tests and the demo need: `ip` and `nsenter`
/// (iproute2, util-linux is essential), ethtool for veth offloads, curl as
/// the client, xdp-tools for the XDP pass program on the bridge port,
/// bpftool and tcpdump for looking inside, keepalived, haproxy and wrk for
/// comparisons and load; bird2 (the ECMP router) and gobgpd (each
/// director's BGP speaker) for the active-active lab; g++ for libFuzzer,
/// which the fuzz targets build from source (libfuzzer-sys).
pub const APT_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "curl",
    "xdp-tools",
    "bpftool",
    "tcpdump",
    "keepalived",
    "haproxy",
    "wrk",
    "bird2",
    "gobgpd",
    "g++",
    // promtool, to check lbd's /metrics.
    "prometheus",
    // systemd-analyze, to verify contrib/systemd's units.
    "systemd",
];

/// Debian packages `cargo xtask vm` needs: QEMU, a static busybox for the
/// guest's initramfs, kmod (depmod for the unpacked kernels, modprobe in
/// the guest), and the decompressors of Debian's kernels (xz for 6.1, zstd
/// for 6.12) and modules (xz). Installed without their recommendations,
/// which for QEMU are a desktop's worth of GUI libraries.
pub const VM_APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "xz-utils",
    "zstd",
];

/// The toolchain that builds lb-ebpf (see lb-userspace/build.rs).
pub const NIGHTLY: &str = "nightly";
pub const BPFFS: &str = "/sys/fs/bpf";

enum Outcome {
    /// Already there; what was found.
    Present(String),
    /// Done now; what was done.
    Done(String),
    /// Not there and could not be had; why. Only for what can be done
    /// without (cargo-fuzz).
    Unavailable(String),
}

/// Runs every step; prints what it did and what was already there.
pub fn setup() -> Result<()> {
    step("Setup: checking this machine; only what is missing gets installed");
    let results: Vec<(&str, Outcome)> = vec![
        (
            "apt packages",
            apt_packages().context("setup: apt packages")?,
        ),
        (
            "rust-src",
            rust_src().context("setup: rust-src for the nightly toolchain")?,
        ),
        ("bpf-linker", bpf_linker().context("setup: bpf-linker")?),
        ("bpffs", bpffs().context("setup: mounting the bpffs")?),
        (
            "cargo-fuzz",
            match cargo_fuzz() {
                Ok(outcome) => outcome,
                Err(e) => Outcome::Unavailable(format!("{e:#}; fuzzing will be skipped")),
            },
        ),
    ];

    println!("\nSetup summary:");
    for (what, outcome) in &results {
        match outcome {
            Outcome::Present(detail) => println!("  [already there] {what}: {detail}"),
            Outcome::Done(detail) => println!("  [done now]      {what}: {detail}"),
            Outcome::Unavailable(why) => println!("  [unavailable]   {what}: {why}"),
        }
    }
    Ok(())
}

/// Puts `~/.cargo/bin` (where `cargo install` puts bpf-linker) on `$PATH`
/// for the commands xtask runs, if it is not there. Call this at the start
/// of `main`, before any thread exists.
pub fn ensure_cargo_bin_in_path() {
    let bin = cargo_bin_dir();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|p| p == bin) {
        return;
    }
    let joined =
        std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&path)));
    if let Ok(joined) = joined {
        // SAFETY: called at the start of main, while the process has one thread.
        unsafe { std::env::set_var("PATH", joined) };
        println!(
            "note: {} was not on PATH; added it for the commands xtask runs",
            bin.display()
        );
    }
}

// ---- apt ---------------------------------------------------------------

fn apt_packages() -> Result<Outcome> {
    let missing = missing_apt_packages(APT_PACKAGES)?;
    let missing_vm = missing_apt_packages(VM_APT_PACKAGES)?;
    if missing.is_empty() && missing_vm.is_empty() {
        return Ok(Outcome::Present(format!(
            "all installed ({} {})",
            APT_PACKAGES.join(" "),
            VM_APT_PACKAGES.join(" ")
        )));
    }
    let all_missing: Vec<&str> = missing.iter().chain(&missing_vm).copied().collect();
    println!("missing apt packages: {}", all_missing.join(" "));
    require_root("installing apt packages")?;
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        cmd
    };
    run(&mut apt(&["update"]))?;
    if !missing.is_empty() {
        let mut install = apt(&["install", "-y"]);
        install.args(&missing);
        run(&mut install)?;
    }
    if !missing_vm.is_empty() {
        let mut install = apt(&["install", "-y", "--no-install-recommends"]);
        install.args(&missing_vm);
        run(&mut install)?;
    }
    let still: Vec<&str> = missing_apt_packages(APT_PACKAGES)?
        .into_iter()
        .chain(missing_apt_packages(VM_APT_PACKAGES)?)
        .collect();
    if !still.is_empty() {
        bail!(
            "still not installed after apt-get install: {}",
            still.join(" ")
        );
    }
    Ok(Outcome::Done(format!(
        "installed {}",
        all_missing.join(" ")
    )))
}

fn missing_apt_packages(packages: &[&'static str]) -> Result<Vec<&'static str>> {
    let mut cmd = Command::new("dpkg-query");
    cmd.args(["-W", "-f=${Package} ${Status}\n"]).args(packages);
    println!("$ {}", show(&cmd));
    // Exits 1 when some package is unknown; the others are still listed.
    let out = cmd.output().with_context(|| {
        format!(
            "cannot run dpkg-query: setup supports Debian-based machines; elsewhere install {} by hand",
            packages.join(" ")
        )
    })?;
    let installed: HashSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.ends_with(" installed") && line.contains(" ok "))
        .filter_map(|line| line.split_whitespace().next())
        .map(|name| name.split(':').next().unwrap_or(name).to_owned())
        .collect();
    Ok(packages
        .iter()
        .copied()
        .filter(|p| !installed.contains(*p))
        .collect())
}

// ---- rust-src ------------------------------------------------------------

pub fn rustup_nightly(args: &[&str]) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", NIGHTLY]).args(args);
    cmd
}

fn rust_src() -> Result<Outcome> {
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--toolchain", NIGHTLY, "--installed"]);
    let installed = output(&mut list).with_context(|| {
        format!(
            "the `{NIGHTLY}` toolchain is not usable; it should come with the machine \
             (install it with `rustup toolchain install {NIGHTLY} --profile minimal`; xtask never updates toolchains)"
        )
    })?;
    if installed
        .lines()
        .any(|l| l.split_whitespace().next() == Some("rust-src"))
    {
        return Ok(Outcome::Present(format!("installed for {NIGHTLY}")));
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", NIGHTLY]))?;
    Ok(Outcome::Done(format!("added to {NIGHTLY}")))
}

// ---- bpf-linker ----------------------------------------------------------

/// `bpf-linker --version`, or why it does not work.
fn bpf_linker_version() -> Result<String> {
    Ok(output(Command::new("bpf-linker").arg("--version"))?
        .trim()
        .to_owned())
}

fn bpf_linker() -> Result<Outcome> {
    match bpf_linker_version() {
        Ok(version) => {
            let path = in_path("bpf-linker")
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Ok(Outcome::Present(format!("{version} works ({path})")));
        }
        // Not installed, or its libLLVM (rpath) is gone: the nightly changed.
        Err(e) => {
            println!("bpf-linker does not work ({e:#}); building it against the {NIGHTLY} LLVM")
        }
    }

    let llvm = NightlyLlvm::find()?;
    println!(
        "{NIGHTLY}: LLVM {} ({}), libLLVM {}",
        llvm.version,
        llvm.major,
        llvm.library.display()
    );
    let prefix = llvm_prefix(llvm.major);
    link_llvm(&prefix, &llvm.library)?;

    let mut install = cargo();
    install
        .env("LLVM_PREFIX", &prefix)
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{}", llvm.major));
    run(&mut install)?;

    let version = bpf_linker_version().with_context(|| {
        format!(
            "bpf-linker was installed into {} but does not run; is that directory on PATH?",
            cargo_bin_dir().display()
        )
    })?;
    Ok(Outcome::Done(format!(
        "built {version} against LLVM {} (libLLVM links in {})",
        llvm.major,
        prefix.join("lib").display()
    )))
}

/// The folder bpf-linker is built against (`LLVM_PREFIX`): outside the
/// checkout, one per LLVM major, so its rpath stays valid across clones.
pub fn llvm_prefix(major: u32) -> PathBuf {
    home_dir().join(".local").join(format!("lb-llvm-{major}"))
}

/// The nightly toolchain's LLVM.
struct NightlyLlvm {
    version: String,
    major: u32,
    /// `<sysroot>/lib/libLLVM.so.<ver>-rust-<ver>-nightly`.
    library: PathBuf,
}

impl NightlyLlvm {
    fn find() -> Result<Self> {
        let verbose = output(&mut rustup_nightly(&["rustc", "-vV"]))?;
        let (version, major) = parse_llvm_version(&verbose).with_context(|| {
            format!("no `LLVM version:` line in `rustc +{NIGHTLY} -vV`:\n{verbose}")
        })?;
        let sysroot = output(&mut rustup_nightly(&["rustc", "--print", "sysroot"]))?;
        let lib = Path::new(sysroot.trim()).join("lib");
        let mut candidates: Vec<PathBuf> = std::fs::read_dir(&lib)
            .with_context(|| format!("reading {}", lib.display()))?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("libLLVM.so."))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        candidates.sort();
        let Some(library) = candidates.pop() else {
            bail!(
                "no libLLVM.so.* in {}: the {NIGHTLY} toolchain has no shared LLVM",
                lib.display()
            );
        };
        Ok(NightlyLlvm {
            version,
            major,
            library,
        })
    }
}

/// `LLVM version: 22.1.4` → ("22.1.4", 22).
fn parse_llvm_version(rustc_vv: &str) -> Option<(String, u32)> {
    let version = rustc_vv
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))?
        .trim();
    let major = version.split('.').next()?.parse().ok()?;
    Some((version.to_owned(), major))
}

/// `<prefix>/lib/{libLLVM.so, <soname file>}` → the nightly's libLLVM.
fn link_llvm(prefix: &Path, library: &Path) -> Result<()> {
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let soname = library
        .file_name()
        .context("libLLVM path has no file name")?;
    for name in [Path::new("libLLVM.so"), Path::new(soname)] {
        let link = lib.join(name);
        if std::fs::read_link(&link).is_ok_and(|target| target == library) {
            println!(
                "{} -> {} (already there)",
                link.display(),
                library.display()
            );
            continue;
        }
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link)
                .with_context(|| format!("removing old {}", link.display()))?;
        }
        std::os::unix::fs::symlink(library, &link)
            .with_context(|| format!("linking {} -> {}", link.display(), library.display()))?;
        println!("{} -> {}", link.display(), library.display());
    }
    Ok(())
}

// ---- cargo-fuzz -----------------------------------------------------------

/// The cargo-fuzz `cargo xtask setup` installs (`--locked`: as released).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `cargo fuzz --version` under the nightly toolchain (the fuzz targets
/// build with it), or why it does not work.
pub fn cargo_fuzz_version() -> Result<String> {
    Ok(
        output_quiet(&mut rustup_nightly(&["cargo", "fuzz", "--version"]))?
            .trim()
            .to_owned(),
    )
}

/// Installs cargo-fuzz if it is missing (`cargo xtask fuzz` without setup).
pub fn setup_cargo_fuzz() -> Result<()> {
    cargo_fuzz().map(|_| ())
}

/// cargo-fuzz, installed with cargo (into `~/.cargo/bin`) when missing.
fn cargo_fuzz() -> Result<Outcome> {
    if let Ok(version) = cargo_fuzz_version() {
        return Ok(Outcome::Present(format!("{version} works")));
    }
    println!("cargo-fuzz is missing; installing it");
    run(cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))?;
    let version = cargo_fuzz_version().with_context(|| {
        format!(
            "cargo-fuzz was installed into {} but does not run",
            cargo_bin_dir().display()
        )
    })?;
    Ok(Outcome::Done(format!("installed {version}")))
}

// ---- bpffs ---------------------------------------------------------------

fn bpffs_mounted() -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 2 && fields[1] == BPFFS && fields[2] == "bpf"
    }))
}

fn bpffs() -> Result<Outcome> {
    if bpffs_mounted()? {
        return Ok(Outcome::Present(format!("mounted at {BPFFS}")));
    }
    require_root("mounting the bpffs")?;
    std::fs::create_dir_all(BPFFS).with_context(|| format!("creating {BPFFS}"))?;
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    if !bpffs_mounted()? {
        bail!("mount succeeded but /proc/mounts shows no bpf at {BPFFS}");
    }
    Ok(Outcome::Done(format!("mounted at {BPFFS}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llvm_major_comes_from_rustc_vv() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nbinary: rustc\nhost: x86_64-unknown-linux-gnu\n\
                  release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(parse_llvm_version(vv), Some(("22.1.4".to_owned(), 22)));
        assert_eq!(parse_llvm_version("rustc 1.0\n"), None);
    }

    #[test]
    fn the_llvm_prefix_is_outside_the_checkout() {
        let prefix = llvm_prefix(22);
        assert!(
            prefix.ends_with(".local/lb-llvm-22"),
            "{}",
            prefix.display()
        );
        assert!(!prefix.starts_with(crate::util::workspace_root()));
    }
}
