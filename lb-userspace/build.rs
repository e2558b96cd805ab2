//! Builds the eBPF object (lb-ebpf) for the BPF target with the nightly
//! toolchain; `lbd` embeds it with `include_bytes!`.
//!
//! This does what aya-build does, plus `-C target-cpu=v3`: the scheduler's
//! shared position counter needs BPF atomic fetch-and-add (ISA v3), and
//! aya-build 0.2 offers no way to pass a CPU (it replaces RUSTFLAGS whole).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const EBPF_PACKAGE: &str = "lb-ebpf";
/// The load balancer, the decapsulation program for TUN real servers, the
/// benchmark's trivial XDP_TX program (`cargo xtask bench`), lbd's kernel
/// feature probes, and a program the verifier refuses (for a test).
const EBPF_BINARIES: [&str; 5] = ["lb-ebpf", "lb-decap", "lb-bench-tx", "lb-probe", "lb-test-too-big"];
const TOOLCHAIN: &str = "nightly";

include!("../build-support/commit.rs");

fn main() {
    emit_commit();
    println!("cargo:rerun-if-env-changed=LB_SKIP_EBPF_BUILD");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    if env::var_os("LB_SKIP_EBPF_BUILD").is_some() {
        // For tooling that only type-checks the host code.
        for binary in EBPF_BINARIES {
            std::fs::write(out_dir.join(binary), b"").expect("write placeholder object");
        }
        return;
    }

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir.parent().expect("workspace root");
    for dir in ["lb-ebpf", "lb-common"] {
        println!("cargo:rerun-if-changed={}", workspace.join(dir).display());
    }
    if let Ok(linker) = which_bpf_linker() {
        println!("cargo:rerun-if-changed={}", linker.display());
    }

    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").expect("CARGO_CFG_TARGET_ENDIAN");
    let target = if endian == "big" { "bpfeb-unknown-none" } else { "bpfel-unknown-none" };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        "-Ctarget-cpu=v3".into(),
    ]
    .join("\x1f");
    let target_dir = out_dir.join("ebpf-target");

    let mut cmd = Command::new("rustup");
    cmd.args(["run", TOOLCHAIN, "cargo", "build", "--package", EBPF_PACKAGE, "--bins", "--release"])
        .args(["--target", target, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace.join("lb-ebpf"))
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // The outer build's compiler settings must not leak into the nightly one.
    for key in ["RUSTC", "RUSTC_WORKSPACE_WRAPPER", "RUSTC_WRAPPER", "RUSTFLAGS", "CARGO_TARGET_DIR"] {
        cmd.env_remove(key);
    }
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run rustup ({e}): run `cargo xtask setup`"));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("building {EBPF_PACKAGE} failed (see above); `cargo xtask setup` installs what it needs");
    }
    for line in String::from_utf8_lossy(&output.stderr).lines() {
        if line.starts_with("warning") {
            println!("cargo:warning=lb-ebpf: {line}");
        }
    }
    for binary in EBPF_BINARIES {
        let built = target_dir.join(target).join("release").join(binary);
        let dest = out_dir.join(binary);
        std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), dest.display()));
    }
}

fn which_bpf_linker() -> Result<PathBuf, ()> {
    let path = env::var_os("PATH").ok_or(())?;
    env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| Path::new(p).is_file())
        .ok_or(())
}
