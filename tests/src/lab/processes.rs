//! What runs in the lab: commands, long-running processes with their logs
//! (killed with the lab), and the real servers' HTTP and UDP servers.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use super::stale::sanitize_name;
use super::{HTTP_PORT, Lab};
use crate::bins::find_binary;
use crate::netns::{self, DEFAULT_COMMAND_TIMEOUT};

/// A process started with [`Lab::spawn`]; its stdout and stderr go to `log`.
#[derive(Clone, Debug)]
pub struct ProcHandle {
    pub pid: u32,
    pub label: String,
    pub ns: String,
    pub log: PathBuf,
}

pub(super) struct Tracked {
    handle: ProcHandle,
    child: Child,
}

impl Lab {
    /// Runs a command in `ns` (see [`netns::command_in`]) with a 30 s limit;
    /// the exit status is not checked.
    pub fn exec<S: AsRef<OsStr>>(&self, ns: &str, args: &[S]) -> Result<Output> {
        netns::output_with_timeout(netns::command_in(ns, args), DEFAULT_COMMAND_TIMEOUT)
    }

    /// Runs a command in `ns`, fails unless it succeeds, returns its stdout.
    pub fn run<S: AsRef<OsStr>>(&self, ns: &str, args: &[S]) -> Result<String> {
        netns::run_checked(netns::command_in(ns, args), DEFAULT_COMMAND_TIMEOUT)
    }

    /// Runs a shell script in `ns`; fails unless it succeeds.
    pub fn sh(&self, ns: &str, script: &str) -> Result<String> {
        self.run(ns, &["sh", "-c", script])
    }

    /// Starts a long-running process in `ns`, stdout and stderr to a log file
    /// named after `label`. It is killed when the lab is dropped.
    pub fn spawn<S: AsRef<OsStr>>(&self, ns: &str, label: &str, args: &[S]) -> Result<ProcHandle> {
        let seq = self.spawn_seq.fetch_add(1, Ordering::Relaxed);
        let log = self.log_dir.join(format!("{seq:02}-{}.log", sanitize_name(label)));
        let stdout = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let stderr = stdout.try_clone()?;
        let mut cmd: Command = netns::command_in(ns, args);
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        let handle = ProcHandle { pid: child.id(), label: label.to_owned(), ns: ns.to_owned(), log };
        self.children.lock().unwrap_or_else(|e| e.into_inner()).push(Tracked { handle: handle.clone(), child });
        Ok(handle)
    }

    /// Whether a spawned process is still running.
    pub fn is_running(&self, handle: &ProcHandle) -> bool {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.iter_mut().find(|t| t.handle.pid == handle.pid).is_some_and(|t| matches!(t.child.try_wait(), Ok(None)))
    }

    /// Stops a spawned process: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&self, handle: &ProcHandle) -> Result<ExitStatus> {
        self.stop_within(handle, Duration::from_secs(5))
    }

    /// Stops a spawned process: SIGTERM, then SIGKILL after `grace`.
    pub fn stop_within(&self, handle: &ProcHandle, grace: Duration) -> Result<ExitStatus> {
        let mut all = vec![self.take_child(handle)?];
        let statuses = terminate(&mut all, grace);
        statuses.into_iter().next().flatten().ok_or_else(|| anyhow!("could not reap {}", handle.label))
    }

    /// Kills a spawned process at once (SIGKILL), as a crash or a dead host
    /// would, and reaps it.
    pub fn kill(&self, handle: &ProcHandle) -> Result<ExitStatus> {
        let mut tracked = self.take_child(handle)?;
        let _ = tracked.child.kill();
        tracked.child.wait().with_context(|| format!("reaping {}", handle.label))
    }

    /// Takes a spawned process out of the lab's list (to stop or kill it).
    fn take_child(&self, handle: &ProcHandle) -> Result<Tracked> {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        let pos = children
            .iter()
            .position(|t| t.handle.pid == handle.pid)
            .ok_or_else(|| anyhow!("{} (pid {}) is not a process of this lab", handle.label, handle.pid))?;
        Ok(children.remove(pos))
    }

    /// The output a spawned process wrote so far.
    pub fn read_log(&self, handle: &ProcHandle) -> String {
        std::fs::read_to_string(&handle.log).unwrap_or_default()
    }

    // ---- servers ---------------------------------------------------------

    /// Starts lab-server (found with [`find_binary`]) on port 80 in every real server.
    pub fn start_http_servers(&self) -> Result<Vec<ProcHandle>> {
        self.start_http_servers_with(&find_binary("lab-server")?)
    }

    /// Starts `bin --name rsI --http 0.0.0.0:80` in every real server and
    /// waits until each answers the client on its own address.
    /// Binding 0.0.0.0 also covers the VIP on lo.
    pub fn start_http_servers_with(&self, bin: &Path) -> Result<Vec<ProcHandle>> {
        self.start_http_servers_on(bin, HTTP_PORT)
    }

    /// As [`Lab::start_http_servers_with`], on `port`; NAT real servers
    /// (private) are checked from the director.
    pub fn start_http_servers_on(&self, bin: &Path, port: u16) -> Result<Vec<ProcHandle>> {
        // With IPv6, one socket for both families (IPV6_V6ONLY is off).
        let listen = if self.spec.ipv6 { format!("[::]:{port}") } else { format!("0.0.0.0:{port}") };
        let mut handles = Vec::new();
        for real in &self.reals {
            let args = [bin.as_os_str(), "--name".as_ref(), real.name.as_ref(), "--http".as_ref(), listen.as_ref()];
            handles.push(self.spawn(&real.ns, &format!("http-{}", real.name), &args)?);
        }
        let from = if self.spec.nat_reals { &self.director.ns } else { &self.client.ns };
        for (real, handle) in self.reals.iter().zip(&handles) {
            let url = format!("http://{}:{port}/", real.ip);
            self.wait_for_http_from(from, &url, &format!("{}\n", real.name), Duration::from_secs(10))
                .with_context(|| format!("log of {}:\n{}", handle.label, self.read_log(handle)))?;
        }
        Ok(handles)
    }

    /// Starts lab-server UDP echo on `port` in every real server, bound to
    /// the VIP and to the real's own address (a 0.0.0.0 socket would answer
    /// VIP traffic from the wrong source address), and waits until each
    /// answers the client directly. NAT real servers (private, no VIP):
    /// their own address only, checked from the director.
    pub fn start_udp_servers_with(&self, bin: &Path, port: u16) -> Result<Vec<ProcHandle>> {
        let mut handles = Vec::new();
        for real in &self.reals {
            let on_vip = SocketAddrV4::new(self.vip, port).to_string();
            let on_own = SocketAddrV4::new(real.ip, port).to_string();
            let mut args: Vec<&std::ffi::OsStr> =
                vec![bin.as_os_str(), "--name".as_ref(), real.name.as_ref(), "--udp".as_ref(), on_own.as_ref()];
            // A NAT real server has no VIP: the director rewrites to its own address.
            if !self.spec.nat_reals {
                args.extend::<[&std::ffi::OsStr; 2]>(["--udp".as_ref(), on_vip.as_ref()]);
            }
            handles.push(self.spawn(&real.ns, &format!("udp-{}", real.name), &args)?);
        }
        for (real, handle) in self.reals.iter().zip(&handles) {
            let target = SocketAddr::V4(SocketAddrV4::new(real.ip, port));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let from = if self.spec.nat_reals { &self.director.ns } else { &self.client.ns };
                match self.udp_request(from, target, b"ping", Duration::from_millis(200)) {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= deadline => {
                        return Err(e).context(format!("log of {}:\n{}", handle.label, self.read_log(handle)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        Ok(handles)
    }

    /// Like [`Lab::start_udp_servers_with`] with lab-server found by [`find_binary`].
    pub fn start_udp_servers(&self, port: u16) -> Result<Vec<ProcHandle>> {
        self.start_udp_servers_with(&find_binary("lab-server")?, port)
    }
}

/// SIGTERM all, wait up to `grace` for them together, SIGKILL the rest; reaps
/// every child. Returns each exit status (None if it could not be reaped).
pub(super) fn terminate(children: &mut [Tracked], grace: Duration) -> Vec<Option<ExitStatus>> {
    for t in children.iter_mut() {
        if matches!(t.child.try_wait(), Ok(None)) {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe { libc::kill(t.handle.pid as i32, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + grace;
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    loop {
        for (t, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = t.child.try_wait().ok().flatten();
            }
        }
        if statuses.iter().all(Option::is_some) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for (t, status) in children.iter_mut().zip(statuses.iter_mut()) {
        if status.is_none() {
            let _ = t.child.kill();
            *status = t.child.wait().ok();
        }
    }
    statuses
}
