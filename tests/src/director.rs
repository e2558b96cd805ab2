//! Running the real director (lbd) inside a [`Lab`], and asking it with lbctl.
//!
//! [`Director`] writes lbd's TOML config into the lab's log dir, starts lbd in
//! the director namespace, waits until `lbctl` answers on the control
//! socket, and stops it with SIGTERM. Every director gets its own bpffs pin
//! directory, `/sys/fs/bpf/<lab id>`, so directors of labs running in
//! parallel never share pinned maps; dropping a [`Director`] stops lbd if it
//! still runs and removes that directory (pins are global, not per
//! namespace, so the lab's teardown alone would leave them behind).
//!
//! lbd and lbctl belong to the `lb-userspace` package and are not built by
//! `cargo test -p lb-tests`: build them first with `cargo build -p lb-userspace`.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

use crate::bins::find_binary;
use crate::lab::{HTTP_PORT, LAB_PREFIX, Lab, ProcHandle};

/// Where the bpffs is mounted; each director pins under `<BPFFS>/<lab id>`.
pub const BPFFS: &str = "/sys/fs/bpf";
/// How long [`Director::start`] waits for lbctl to get an answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of a built lb-userspace binary, or an error saying how to build it.
pub fn userspace_binary(name: &str) -> Result<PathBuf> {
    find_binary(name).map_err(|e| {
        anyhow!(
            "{name} is not built: run `cargo build -p lb-userspace` before these tests \
             (cargo test -p lb-tests does not build other packages' binaries)\n({e:#})"
        )
    })
}

/// One `[[service]]` of the config.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// "tcp" or "udp".
    pub protocol: String,
    pub vip: SocketAddrV4,
    /// "rr", "wrr", ...
    pub scheduler: String,
    /// Real servers with their weights.
    pub reals: Vec<(Ipv4Addr, u32)>,
    /// "dr" or "tun", for every real server.
    pub forwarding: String,
    /// More `key = value` lines for the `[[service]]` table.
    pub extra: Vec<String>,
}

impl ServiceSpec {
    /// A TCP service on `vip` with `scheduler` and no real servers yet.
    pub fn tcp(vip: SocketAddrV4, scheduler: &str) -> Self {
        ServiceSpec {
            protocol: "tcp".to_owned(),
            vip,
            scheduler: scheduler.to_owned(),
            reals: Vec::new(),
            forwarding: "dr".to_owned(),
            extra: Vec::new(),
        }
    }

    /// A UDP service.
    pub fn udp(vip: SocketAddrV4, scheduler: &str) -> Self {
        ServiceSpec { protocol: "udp".to_owned(), ..Self::tcp(vip, scheduler) }
    }

    /// Forwarding for every real server ("dr", "tun").
    pub fn forwarding(mut self, method: &str) -> Self {
        self.forwarding = method.to_owned();
        self
    }

    /// Another `key = value` line in the `[[service]]` table.
    pub fn with(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// The lab's HTTP service: TCP VIP:80 over every real server, weight 1.
    pub fn lab_http(lab: &Lab, scheduler: &str) -> Self {
        let mut s = Self::tcp(SocketAddrV4::new(lab.vip(), HTTP_PORT), scheduler);
        s.reals = lab.reals().iter().map(|r| (r.ip, 1)).collect();
        s
    }

    pub fn real(mut self, address: Ipv4Addr, weight: u32) -> Self {
        self.reals.push((address, weight));
        self
    }

    /// Sets the weight of real server `address` (which must be in the list).
    pub fn set_weight(&mut self, address: Ipv4Addr, weight: u32) {
        let real = self
            .reals
            .iter_mut()
            .find(|(a, _)| *a == address)
            .unwrap_or_else(|| panic!("{address} is not a real server of {}", self.vip));
        real.1 = weight;
    }

    /// The `[[service]]` table with its `[[service.real]]` tables.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "[[service]]");
        let _ = writeln!(out, "vip = \"{}\"", self.vip);
        let _ = writeln!(out, "protocol = \"{}\"", self.protocol);
        let _ = writeln!(out, "scheduler = \"{}\"", self.scheduler);
        let _ = writeln!(out, "forwarding = \"{}\"", self.forwarding);
        for line in &self.extra {
            let _ = writeln!(out, "{line}");
        }
        for (address, weight) in &self.reals {
            let _ = writeln!(out, "\n[[service.real]]");
            let _ = writeln!(out, "address = \"{address}\"");
            let _ = writeln!(out, "weight = {weight}");
        }
        out
    }
}

/// lbd running (or about to run) in a lab's director namespace.
pub struct Director<'a> {
    lab: &'a Lab,
    lbd: PathBuf,
    lbctl: PathBuf,
    /// The config file lbd reads (in the lab's log dir).
    pub config_path: PathBuf,
    /// lbd's control socket (in the lab's log dir).
    pub socket: PathBuf,
    /// `director.pin_path`: `/sys/fs/bpf/<lab id>`.
    pub pin_path: PathBuf,
    /// `director.conn_table_size`.
    pub conn_table_size: u32,
    process: Option<ProcHandle>,
    /// lbd's log once it has been stopped.
    last_log: Option<String>,
}

impl<'a> Director<'a> {
    /// Finds lbd and lbctl and picks the paths; starts nothing. Removes
    /// pin directories that crashed earlier runs left behind.
    pub fn new(lab: &'a Lab) -> Result<Self> {
        let lbd = userspace_binary("lbd")?;
        let lbctl = userspace_binary("lbctl")?;
        if let Err(e) = cleanup_stale_pins() {
            eprintln!("director: cleaning up stale pin dirs failed: {e:#}");
        }
        Ok(Director {
            lab,
            lbd,
            lbctl,
            config_path: lab.log_dir().join("lbd.toml"),
            socket: lab.log_dir().join("lbd.sock"),
            pin_path: Path::new(BPFFS).join(lab.id()),
            conn_table_size: 65536,
            process: None,
            last_log: None,
        })
    }

    pub fn lab(&self) -> &'a Lab {
        self.lab
    }

    /// The `[director]` table: eth0 of the director namespace, this
    /// director's pin dir and socket.
    pub fn director_toml(&self) -> String {
        format!(
            "[director]\n\
             interface = \"{iface}\"\n\
             xdp_mode = \"auto\"\n\
             conn_table_size = {size}\n\
             pin_path = \"{pin}\"\n\
             control_socket = \"{socket}\"\n",
            iface = self.lab.director_iface(),
            size = self.conn_table_size,
            pin = self.pin_path.display(),
            socket = self.socket.display(),
        )
    }

    /// A whole config: the `[director]` table and `services`.
    pub fn config_text(&self, services: &[ServiceSpec]) -> String {
        let mut text = self.director_toml();
        for s in services {
            text.push('\n');
            text.push_str(&s.to_toml());
        }
        text
    }

    /// Writes the config for `services` to [`Director::config_path`].
    pub fn write_config(&self, services: &[ServiceSpec]) -> Result<()> {
        self.write_config_text(&self.config_text(services))
    }

    /// Writes `text` as is to [`Director::config_path`].
    pub fn write_config_text(&self, text: &str) -> Result<()> {
        write_file(&self.config_path, text)
    }

    /// Starts `lbd --config` in the director namespace and waits until lbctl
    /// gets an answer on the control socket.
    pub fn start(&mut self) -> Result<()> {
        ensure!(self.process.is_none(), "lbd is already running");
        self.last_log = None;
        let config = self.config_path.to_string_lossy().into_owned();
        let args = [
            self.lbd.to_string_lossy().into_owned(),
            "--config".to_owned(),
            config,
        ];
        let handle = self.lab.spawn(&self.lab.director().ns, "lbd", &args)?;
        self.process = Some(handle.clone());
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.lab.is_running(&handle) {
                bail!("lbd exited during start; its log:\n{}", self.log());
            }
            match self.lbctl_output(&["-L", "-n"]) {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) if Instant::now() >= deadline => bail!(
                    "lbctl got no answer from lbd within {START_TIMEOUT:?}: {}\nlbd's log:\n{}",
                    String::from_utf8_lossy(&out.stderr).trim(),
                    self.log()
                ),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e.context(format!("lbd's log:\n{}", self.log())));
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Whether lbd was started and still runs.
    pub fn is_running(&self) -> bool {
        self.process
            .as_ref()
            .is_some_and(|h| self.lab.is_running(h))
    }

    /// lbd's pid, if started.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|h| h.pid)
    }

    /// lbd's log (stdout and stderr) so far, without terminal colours;
    /// after [`Director::stop`], the whole log of the last run.
    pub fn log(&self) -> String {
        match &self.process {
            Some(h) => strip_ansi(&self.lab.read_log(h)),
            None => self.last_log.clone().unwrap_or_default(),
        }
    }

    /// Waits until lbd's log contains `needle` at least `count` times.
    pub fn wait_for_log(&self, needle: &str, count: usize, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if log.matches(needle).count() >= count {
                return Ok(log);
            }
            if Instant::now() >= deadline {
                bail!(
                    "lbd's log did not show {needle:?} {count} time(s) within {timeout:?}:\n{log}"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to lbd.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let pid = self.pid().ok_or_else(|| anyhow!("lbd is not running"))?;
        ensure!(
            self.is_running(),
            "lbd (pid {pid}) is not running any more:\n{}",
            self.log()
        );
        // SAFETY: kill(2) on our own child, which has not been reaped (is_running above).
        let rc = unsafe { libc::kill(pid as i32, signal) };
        ensure!(
            rc == 0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// SIGHUP, then waits until lbd logged the outcome of that reload
    /// ("reload done" or "reload refused"); returns the log.
    pub fn reload(&self) -> Result<String> {
        let done_before = self.log().matches("reload done").count();
        let refused_before = self.log().matches("reload refused").count();
        self.signal(libc::SIGHUP)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if log.matches("reload done").count() > done_before
                || log.matches("reload refused").count() > refused_before
            {
                return Ok(log);
            }
            if Instant::now() >= deadline {
                bail!("lbd logged no outcome of the reload within 10 s:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops lbd with SIGTERM (SIGKILL after 5 s) and returns its exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let handle = self
            .process
            .take()
            .ok_or_else(|| anyhow!("lbd was not started"))?;
        let status = self.lab.stop(&handle)?;
        // The handle is gone from the lab; keep the log reachable.
        self.last_log = Some(strip_ansi(&self.lab.read_log(&handle)));
        Ok(status)
    }

    /// Stops lbd and checks that it left nothing behind: exit status 0, no
    /// XDP program on the director's interface, no pin directory, no socket.
    /// Returns lbd's log.
    pub fn stop_and_check_clean(&mut self) -> Result<String> {
        let status = self.stop()?;
        let log = self.last_log.clone().unwrap_or_default();
        ensure!(
            status.success(),
            "lbd exited with {status} on SIGTERM; its log:\n{log}"
        );
        let link = self.director_link()?;
        ensure!(
            !has_xdp(&link),
            "an XDP program is still attached to the director's {} after lbd stopped:\n{link}",
            self.lab.director_iface()
        );
        ensure!(
            !self.pin_path.exists(),
            "lbd left its pin directory {} behind: {:?}",
            self.pin_path.display(),
            list_dir(&self.pin_path)
        );
        ensure!(
            !self.socket.exists(),
            "lbd left its control socket {} behind",
            self.socket.display()
        );
        Ok(log)
    }

    /// Runs lbctl with `--socket` and `args` (in the director namespace).
    pub fn lbctl_output(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec![
            self.lbctl.to_string_lossy().into_owned(),
            "--socket".to_owned(),
            self.socket.to_string_lossy().into_owned(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        self.lab.exec(&self.lab.director().ns, &full)
    }

    /// Runs lbctl and returns its stdout; fails unless it succeeds.
    pub fn lbctl(&self, args: &[&str]) -> Result<String> {
        let out = self.lbctl_output(args)?;
        ensure!(
            out.status.success(),
            "lbctl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `lbctl --counters --json`: the datapath's verdict counters by name.
    pub fn counters(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let out = self.lbctl(&["--counters", "--json"])?;
        let json: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("lbctl --counters --json is not JSON: {out}"))?;
        let map = json
            .as_object()
            .ok_or_else(|| anyhow!("lbctl --counters --json is not an object: {out}"))?;
        map.iter()
            .map(|(k, v)| {
                let n = v
                    .as_u64()
                    .ok_or_else(|| anyhow!("counter {k} is not a number: {out}"))?;
                Ok((k.clone(), n))
            })
            .collect()
    }

    /// `lbd ARGS...` run to completion in the director namespace (for
    /// `--check`, or a start that must fail); output without colours.
    pub fn run_lbd(&self, args: &[&str]) -> Result<LbdRun> {
        let mut full = vec![self.lbd.to_string_lossy().into_owned()];
        full.extend(args.iter().map(|a| a.to_string()));
        let out = self.lab.exec(&self.lab.director().ns, &full)?;
        Ok(LbdRun {
            status: out.status,
            stdout: strip_ansi(&String::from_utf8_lossy(&out.stdout)),
            stderr: strip_ansi(&String::from_utf8_lossy(&out.stderr)),
        })
    }

    /// `lbd --check --config PATH` in the director namespace.
    pub fn check(&self, path: &Path) -> Result<LbdRun> {
        self.run_lbd(&["--check", "--config", &path.to_string_lossy()])
    }

    /// `ip link show` of the director's interface (in its namespace).
    pub fn director_link(&self) -> Result<String> {
        self.lab.run(
            &self.lab.director().ns,
            &["ip", "link", "show", "dev", self.lab.director_iface()],
        )
    }

    /// Whether an XDP program is attached to the director's interface.
    pub fn xdp_attached(&self) -> Result<bool> {
        Ok(has_xdp(&self.director_link()?))
    }
}

/// A finished lbd run.
#[derive(Clone, Debug)]
pub struct LbdRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Drop for Director<'_> {
    fn drop(&mut self) {
        if let Some(handle) = self.process.take()
            && let Err(e) = self.lab.stop(&handle)
        {
            eprintln!("director: stopping lbd: {e:#}");
        }
        // Whatever lbd left pinned (it crashed, or a test failed before it
        // stopped); removing a link pin detaches that XDP program.
        if self.pin_path.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.pin_path)
        {
            eprintln!("director: removing {}: {e}", self.pin_path.display());
        }
    }
}

/// `ip link` output shows an attached XDP program as `xdp`, `xdpgeneric`,
/// `xdpdrv` or `xdpoffload` followed by `prog/xdp id N`.
pub fn has_xdp(ip_link_output: &str) -> bool {
    ip_link_output.contains("prog/xdp")
        || ip_link_output
            .split_whitespace()
            .any(|w| w.starts_with("xdp"))
}

/// Removes `ESC [ ... letter` sequences (tracing colours its output).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' params... final byte in '@'..='~'.
            if let Some('[') = chars.next() {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    // Write and rename, so lbd never reads a half-written file on SIGHUP.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                names.push(e.path().display().to_string());
                if e.path().is_dir() {
                    stack.push(e.path());
                }
            }
        }
    }
    names
}

/// Removes `/sys/fs/bpf/lbt-<name>-<pid>-...` directories whose creating
/// process is gone (pins of crashed runs). Returns the removed paths.
pub fn cleanup_stale_pins() -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(BPFFS) {
        Ok(entries) => entries,
        Err(_) => return Ok(removed),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(LAB_PREFIX) else {
            continue;
        };
        let mut parts = rest.split('-');
        let _name = parts.next();
        let Some(pid) = parts.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2024\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m x"),
            "2024 ERROR x"
        );
    }

    #[test]
    fn xdp_is_seen_in_ip_link_output() {
        assert!(has_xdp(
            "2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdp qdisc noqueue\n    \
             link/ether 02:00:0a:0a:00:01 brd ff:ff:ff:ff:ff:ff link-netns x\n    prog/xdp id 42"
        ));
        assert!(!has_xdp(
            "2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP\n    \
             link/ether 02:00:0a:0a:00:01 brd ff:ff:ff:ff:ff:ff link-netns x"
        ));
    }

    #[test]
    fn services_become_toml() {
        let s = ServiceSpec::tcp("10.1.0.100:80".parse().unwrap(), "wrr")
            .real("10.1.0.21".parse().unwrap(), 3)
            .real("10.1.0.22".parse().unwrap(), 1);
        let text = s.to_toml();
        assert!(
            text.starts_with("[[service]]\nvip = \"10.1.0.100:80\"\n"),
            "{text}"
        );
        assert!(
            text.contains("address = \"10.1.0.22\"\nweight = 1\n"),
            "{text}"
        );
    }
}
