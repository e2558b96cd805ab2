//! Running commands the way xtask does: each one printed before it runs,
//! each failure naming the command and how it failed.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The workspace root (the parent of xtask's manifest dir).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target dir: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// `$HOME` (root's home if unset).
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin` or `~/.cargo/bin`.
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".cargo"))
        .join("bin")
}

/// The cargo that runs xtask (`$CARGO`), in the workspace root.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// Whether this process runs as root (effective uid 0, from /proc/self/status).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            // Uid: real effective saved fs
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Fails with a message naming `what` unless running as root.
pub fn require_root(what: &str) -> Result<()> {
    if !is_root() {
        bail!(
            "{what} must run as root: it creates network namespaces, attaches XDP programs \
             and uses the bpffs (try `sudo -E env PATH=\"$PATH\" cargo xtask ...`)"
        );
    }
    Ok(())
}

/// A heading for one step.
pub fn step(title: &str) {
    println!("\n==> {title}");
}

/// A command as one would type it: `VAR=value program arg 'arg with space'`.
pub fn show(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), quote(v?))))
        .collect();
    let program = Path::new(cmd.get_program());
    // $CARGO is a full toolchain path; "cargo" reads better.
    let program = if std::env::var_os("CARGO").is_some_and(|c| c == program.as_os_str()) {
        "cargo".to_owned()
    } else {
        quote(program.as_os_str())
    };
    parts.push(program);
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.into_owned()
    } else {
        // Shown on one line: a newline as \n (which is what printf-style
        // format options, the only place xtask passes one, understand anyway).
        format!("'{}'", s.replace('\'', "'\\''").replace('\n', "\\n"))
    }
}

/// Prints and runs `cmd` with inherited stdio; fails unless it succeeds.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = show(cmd);
    println!("$ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Like [`run`], for `cargo xtask vm`, whose standard output is the guest
/// command's alone: the command is shown on stderr and its stdout goes there.
pub fn run_on_stderr(cmd: &mut Command) -> Result<()> {
    use std::os::fd::AsFd;

    let shown = show(cmd);
    eprintln!("$ {shown}");
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr")?;
    let status = cmd
        .stdout(Stdio::from(stderr))
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Like [`output`], showing the command on stderr (see [`run_on_stderr`]).
pub fn output_on_stderr(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    eprintln!("$ {shown}");
    capture(cmd, &shown)
}

/// Prints and runs `cmd`, capturing its output; fails unless it succeeds
/// (with its stderr in the error). Returns stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    println!("$ {shown}");
    capture(cmd, &shown)
}

/// Like [`output`] but without printing the command (for quiet checks).
pub fn output_quiet(cmd: &mut Command) -> Result<String> {
    let shown = show(cmd);
    capture(cmd, &shown)
}

fn capture(cmd: &mut Command, shown: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Test counts summed over every `test result:` line of cargo test.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestTotals {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl TestTotals {
    /// Adds the counts of a libtest summary line such as
    /// `test result: ok. 44 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
    pub fn add_line(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("test result:") else {
            return false;
        };
        let Some((_, counts)) = rest.split_once(". ") else {
            return false;
        };
        for part in counts.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
        true
    }
}

impl std::fmt::Display for TestTotals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "tests: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.ignored
        )
    }
}

/// Prints and runs a `cargo test` command, passing its output through while
/// counting the results. Returns whether it succeeded, and the totals.
pub fn run_tests(cmd: &mut Command) -> (Result<()>, TestTotals) {
    use std::io::{BufRead, BufReader, Write};

    let shown = show(cmd);
    println!("$ {shown}");
    let mut totals = TestTotals::default();
    let mut child = match cmd.stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => return (Err(e).context(format!("cannot start `{shown}`")), totals),
    };
    let mut reader = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = Vec::new();
    let stdout = std::io::stdout();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let mut out = stdout.lock();
                let _ = out.write_all(&line);
                let _ = out.flush();
                totals.add_line(&String::from_utf8_lossy(&line));
            }
        }
    }
    let result = match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(anyhow::anyhow!("`{shown}` failed ({status})")),
        Err(e) => Err(e).context(format!("waiting for `{shown}`")),
    };
    (result, totals)
}

/// Whether `program` is found in `$PATH`.
pub fn in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_results_are_summed() {
        let mut t = TestTotals::default();
        assert!(t.add_line(
            "test result: ok. 44 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n"
        ));
        assert!(t.add_line(
            "test result: FAILED. 7 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 14.25s"
        ));
        assert!(!t.add_line("test foo ... ok"));
        assert_eq!(
            t,
            TestTotals {
                passed: 51,
                failed: 2,
                ignored: 1
            }
        );
        assert_eq!(t.to_string(), "tests: 51 passed, 2 failed, 1 skipped");
    }

    #[test]
    fn commands_are_shown_as_typed() {
        let mut cmd = Command::new("cargo");
        cmd.env("LLVM_PREFIX", "/root/.local/lb-llvm-22")
            .args(["install", "bpf-linker", "--features", "llvm-22"])
            .arg("it's");
        assert_eq!(
            show(&cmd),
            "LLVM_PREFIX=/root/.local/lb-llvm-22 cargo install bpf-linker --features llvm-22 'it'\\''s'"
        );
    }
}
