//! Locating workspace binaries (lab-server, lbd, lbctl) in the cargo target dir.
//!
//! Integration tests of this crate can use `env!("CARGO_BIN_EXE_lab-server")`
//! directly; this module is for everything else (xtask, other tests, lbd and
//! lbctl which belong to another package and are not built automatically).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// Set to a directory to force where binaries are taken from.
pub const BIN_DIR_ENV: &str = "LB_BIN_DIR";

/// The workspace root (the parent of this crate's manifest dir).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Directories searched by [`find_binary`], in order:
/// 1. `$LB_BIN_DIR`;
/// 2. the running executable's directory and its parent, i.e. the same
///    profile dir that built it (integration tests live in `<profile>/deps`,
///    xtask in `<profile>`), whatever `CARGO_TARGET_DIR` was;
/// 3. `$CARGO_TARGET_DIR/{debug,release}`, then `<workspace>/target/{debug,release}`.
pub fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        dirs.push(dir.to_path_buf());
        if let Some(parent) = dir.parent() {
            dirs.push(parent.to_path_buf());
        }
    }
    let mut target_dirs = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        target_dirs.push(if dir.is_relative() {
            workspace_root().join(dir)
        } else {
            dir
        });
    }
    target_dirs.push(workspace_root().join("target"));
    for target in target_dirs {
        dirs.push(target.join("debug"));
        dirs.push(target.join("release"));
    }
    dirs.dedup();
    dirs
}

/// Path of the built binary `name`, searched in [`candidate_dirs`].
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let dirs = candidate_dirs();
    for dir in &dirs {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "binary {name:?} not found in {dirs:?}; build it first (e.g. `cargo build --bins`) \
         or set {BIN_DIR_ENV}"
    )
}
