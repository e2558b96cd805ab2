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
//! lbd and lbctl belong to the `lb-userspace` and `lbctl` packages and are not
//! built by `cargo test -p lb-tests`: build them first with
//! `cargo build -p lb-userspace -p lbctl`.
//!
//! Its parts: `config` (the TOML the tests give lbd) and `lbctl` (running
//! lbctl and parsing its listings).

mod config;
mod lbctl;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};

pub use config::ServiceSpec;
pub use lbctl::{ConnEntry, RealRow, parse_connection_entries, parse_real_rows};

use crate::bins::find_binary;
use crate::lab::{Host, LAB_PREFIX, Lab, ProcHandle};

/// Where the bpffs is mounted; each director pins under `<BPFFS>/<lab id>`.
pub const BPFFS: &str = "/sys/fs/bpf";
/// How long [`Director::start`] waits for lbctl to get an answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The path of a built lbd or lbctl, or an error saying how to build it.
pub fn userspace_binary(name: &str) -> Result<PathBuf> {
    find_binary(name).map_err(|e| {
        anyhow!(
            "{name} is not built: run `cargo build -p lb-userspace -p lbctl` before these tests \
             (cargo test -p lb-tests does not build other packages' binaries)\n({e:#})"
        )
    })
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
    /// More `key = value` lines for the `[director]` table (e.g. `timeout_udp = 10`).
    pub director_extra: Vec<String>,
    /// Top-level tables written after the services (`[[vrrp]]`, `[sync]`),
    /// each as a whole TOML text.
    pub extra_sections: Vec<String>,
    /// The namespace lbd runs in: the lab's director, or another one of
    /// [`Lab::directors`].
    host: Host,
    process: Option<ProcHandle>,
    /// lbd's log once it has been stopped.
    last_log: Option<String>,
}

impl<'a> Director<'a> {
    /// Finds lbd and lbctl and picks the paths; starts nothing. Removes
    /// pin directories that crashed earlier runs left behind.
    pub fn new(lab: &'a Lab) -> Result<Self> {
        Self::on_host(lab, lab.director())
    }

    /// Like [`Director::new`] for `host`, one of [`Lab::directors`]. The
    /// lab's first director gets the same paths as with [`Director::new`];
    /// any other one its own config, socket and pin dir, suffixed with its
    /// name (`/sys/fs/bpf/<lab id>-director2`).
    pub fn on_host(lab: &'a Lab, host: &Host) -> Result<Self> {
        let lbd = userspace_binary("lbd")?;
        let lbctl = userspace_binary("lbctl")?;
        if let Err(e) = cleanup_stale_pins() {
            eprintln!("director: cleaning up stale pin dirs failed: {e:#}");
        }
        let suffix = if host.name == lab.director().name {
            String::new()
        } else {
            format!("-{}", host.name)
        };
        Ok(Director {
            lab,
            lbd,
            lbctl,
            config_path: lab.log_dir().join(format!("lbd{suffix}.toml")),
            socket: lab.log_dir().join(format!("lbd{suffix}.sock")),
            pin_path: Path::new(BPFFS).join(format!("{}{suffix}", lab.id())),
            conn_table_size: 65536,
            director_extra: Vec::new(),
            extra_sections: Vec::new(),
            host: host.clone(),
            process: None,
            last_log: None,
        })
    }

    pub fn lab(&self) -> &'a Lab {
        self.lab
    }

    /// The director host lbd runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Every slot of the datapath's per-server connection counts
    /// (`REAL_CONNS`), read from the pinned map; unlike `lbctl`, which shows
    /// a negative count as 0, this shows the raw values.
    pub fn raw_real_conns(&self) -> Result<Vec<lb_common::RealConns>> {
        let data = self.pinned_map(lb_common::map_name::REAL_CONNS)?;
        let array: aya::maps::Array<_, lb_common::RealConns> =
            aya::maps::Array::try_from(aya::maps::Map::Array(data))?;
        array.iter().map(|v| v.map_err(Into::into)).collect()
    }

    /// Each service's scheduling table as the datapath holds it, by
    /// "VIP:PORT": for each slot the address of the real server it names
    /// (for mh, where each bucket of the lookup table sends its flows).
    pub fn sched_tables(&self) -> Result<BTreeMap<String, Vec<Ipv4Addr>>> {
        use aya::maps::{Array, HashMap, Map};
        use lb_common::{RealServer, Service, ServiceKey, ipv4_octets, map_name};
        let services: HashMap<_, ServiceKey, Service> =
            HashMap::try_from(Map::HashMap(self.pinned_map(map_name::SERVICES)?))?;
        let table: Array<_, u32> = Array::try_from(Map::Array(self.pinned_map(map_name::SCHED_TABLE)?))?;
        let reals: Array<_, RealServer> = Array::try_from(Map::Array(self.pinned_map(map_name::REALS)?))?;
        let mut out = BTreeMap::new();
        for entry in services.iter() {
            let (key, svc) = entry?;
            let mut slots = Vec::with_capacity(svc.table_len as usize);
            for i in svc.table_start..svc.table_start + svc.table_len {
                let real = reals.get(&table.get(&i, 0)?, 0)?;
                slots.push(Ipv4Addr::from(ipv4_octets(real.addr)));
            }
            out.insert(format!("{}:{}", Ipv4Addr::from(ipv4_octets(key.addr)), u16::from_be(key.port)), slots);
        }
        Ok(out)
    }

    /// The map `name` lbd pinned.
    fn pinned_map(&self, name: &str) -> Result<aya::maps::MapData> {
        open_pinned(&self.pin_path, name)
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
        let handle = self.lab.spawn(&self.host.ns, "lbd", &args)?;
        self.process = Some(handle.clone());
        let start_timeout = crate::scaled(START_TIMEOUT);
        let deadline = Instant::now() + start_timeout;
        loop {
            if !self.lab.is_running(&handle) {
                bail!("lbd exited during start; its log:\n{}", self.log());
            }
            match self.lbctl_output(&["-L", "-n"]) {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) if Instant::now() >= deadline => bail!(
                    "lbctl got no answer from lbd within {start_timeout:?}: {}\nlbd's log:\n{}",
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

    /// Kills lbd with SIGKILL, as a crash would, and reaps it; its log stays
    /// readable with [`Director::log`]. What lbd had set up stays: the XDP
    /// program (its link is pinned), the pinned maps, the control socket
    /// file and any address VRRP had added. See [`Director::remove_pins`].
    pub fn kill(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)?;
        let handle = self
            .process
            .take()
            .ok_or_else(|| anyhow!("lbd was not started"))?;
        // Already dead: the lab's stop only reaps it.
        self.lab.stop(&handle)?;
        self.last_log = Some(strip_ansi(&self.lab.read_log(&handle)));
        Ok(())
    }

    /// Removes the pin directory a killed lbd left; removing the pinned
    /// link detaches its XDP program. Also removes a stale control socket.
    pub fn remove_pins(&self) -> Result<()> {
        ensure!(!self.is_running(), "lbd still runs");
        if self.pin_path.exists() {
            std::fs::remove_dir_all(&self.pin_path)
                .with_context(|| format!("removing {}", self.pin_path.display()))?;
        }
        let _ = std::fs::remove_file(&self.socket);
        Ok(())
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
        self.stop_within(Duration::from_secs(5))
    }

    /// [`Director::stop`], SIGKILL only after `grace`.
    pub fn stop_within(&mut self, grace: Duration) -> Result<ExitStatus> {
        let handle = self
            .process
            .take()
            .ok_or_else(|| anyhow!("lbd was not started"))?;
        let status = self.lab.stop_within(&handle, grace)?;
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

    /// `lbd ARGS...` run to completion in the director namespace (for
    /// `--check`, or a start that must fail); output without colours.
    pub fn run_lbd(&self, args: &[&str]) -> Result<LbdRun> {
        let mut full = vec![self.lbd.to_string_lossy().into_owned()];
        full.extend(args.iter().map(|a| a.to_string()));
        let out = self.lab.exec(&self.host.ns, &full)?;
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
            &self.host.ns,
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

/// The map `name` pinned anywhere under `dir` (an lbd's pin path: its
/// layout directory holds the maps).
pub fn open_pinned(dir: &Path, name: &str) -> Result<aya::maps::MapData> {
    let path = list_dir(dir)
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.file_name().is_some_and(|n| n == name))
        .ok_or_else(|| anyhow!("no pinned {name} under {}", dir.display()))?;
    aya::maps::MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))
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
}
