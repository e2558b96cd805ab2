//! Debian's keepalived, VRRP only, in a network namespace: the other end of
//! the interoperability tests (`tests/failover_keepalived.rs` in the lab,
//! `tests/vrrp.rs` on a [`crate::netns::VethPair`]). It forwards nothing;
//! it only moves the VIP.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns;

/// True when keepalived is installed; otherwise says that `test` is skipped.
pub fn installed_or_skip(test: &str) -> bool {
    let found = Command::new("keepalived").arg("-v").output().is_ok();
    if !found {
        eprintln!("skipping {test}: keepalived is not installed");
    }
    found
}

/// keepalived in a namespace, with its config, pid files and log in a
/// directory of the test's. Killed when dropped.
pub struct Keepalived {
    ns: String,
    conf: PathBuf,
    pid_file: PathBuf,
    vrrp_pid_file: PathBuf,
    checker_pid_file: PathBuf,
    /// Every run's output, one after the other.
    log_file: PathBuf,
    process: Option<Child>,
}

impl Keepalived {
    /// keepalived in namespace `ns`, its files in `dir` named after `name`
    /// (`keepalived-NAME.conf`, `.log`, ...). Not started.
    pub fn new(ns: &str, dir: &Path, name: &str) -> Self {
        let file = |what: &str| dir.join(format!("keepalived-{name}.{what}"));
        let keepalived = Keepalived {
            ns: ns.to_owned(),
            conf: file("conf"),
            pid_file: file("pid"),
            vrrp_pid_file: file("vrrp.pid"),
            checker_pid_file: file("checkers.pid"),
            log_file: file("log"),
            process: None,
        };
        let _ = std::fs::remove_file(&keepalived.log_file);
        keepalived
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Writes `conf` as its config and starts it; returns once its VRRP
    /// process runs.
    pub fn start(&mut self, conf: &str) {
        assert!(self.process.is_none(), "keepalived runs already");
        std::fs::write(&self.conf, conf).unwrap();
        for f in [&self.pid_file, &self.vrrp_pid_file, &self.checker_pid_file] {
            let _ = std::fs::remove_file(f);
        }
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let args = [
            "keepalived".to_owned(),
            "-n".into(), // foreground
            "-l".into(), // log to the console (our log file)
            "-D".into(),
            "-G".into(), // not to syslog
            "-P".into(), // VRRP only
            "-R".into(), // no respawn: a killed VRRP process stays dead
            "-f".into(),
            path(&self.conf),
            "-p".into(),
            path(&self.pid_file),
            "-r".into(),
            path(&self.vrrp_pid_file),
            "-c".into(),
            path(&self.checker_pid_file),
        ];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .unwrap();
        let mut cmd = netns::command_in(&self.ns, &args);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        self.process = Some(cmd.spawn().expect("spawning keepalived"));
        if !poll(Duration::from_secs(10), || self.vrrp_pid().is_some()) {
            panic!(
                "keepalived's VRRP process: not within 10 s; keepalived's log:\n{}",
                self.log()
            );
        }
    }

    /// The VRRP child's pid, if it runs.
    pub fn vrrp_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(&self.vrrp_pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "keepalived").then_some(pid)
    }

    /// What it logged, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// How many times `needle` is in its log.
    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// A crash: SIGKILL to the VRRP process (no priority-0 advert, the VIP
    /// stays), then to the parent.
    pub fn kill(&mut self) {
        if let Some(pid) = self.vrrp_pid() {
            // SAFETY: kill(2) on keepalived's VRRP process (checked by name above).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (a clean stop: a master sends priority 0 and removes
    /// the VIP) without waiting; [`Keepalived::stop`] reaps it.
    pub fn terminate(&self) {
        if let Some(child) = &self.process {
            // SAFETY: kill(2) on our own child, not reaped yet (stop() reaps it).
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        }
    }

    /// A clean stop (SIGTERM; SIGKILL after 5 s), waiting for keepalived to
    /// exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            // SAFETY: kill(2) on our own child, not reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if !poll(Duration::from_secs(5), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                eprintln!("keepalived did not stop within 5 s after SIGTERM: killed");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        // The VRRP process follows its parent; make sure.
        poll(Duration::from_secs(5), || self.vrrp_pid().is_none());
        if let Some(pid) = self.vrrp_pid() {
            // SAFETY: kill(2) on keepalived's VRRP process (checked by name).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if self.process.is_some() || self.vrrp_pid().is_some() {
            self.kill();
        }
    }
}

/// Polls `done` every 10 ms until it holds (true) or `timeout` passes.
fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
