//! End to end in the namespace lab: HTTP requests per second (keep-alive)
//! and new connections per second (`Connection: close`, one request per
//! connection) with wrk from the client namespace, through
//! (a) lbd in DR mode (rr over the lab's real servers),
//! (b) HAProxy in TCP mode on the director namespace, in front of the same
//!     real servers, and
//! (c) straight to one real server,
//! with the CPU time the director spends per request.
//!
//! # Director CPU
//!
//! Everything runs on one machine, and in DR the director's work happens in
//! softirq context on whichever CPU carries the packet, so no process owns
//! it. What can be pinned on the director for sure is counted: for lbd, the
//! XDP program's own run time (the kernel's BPF stats, on during the
//! end-to-end runs) plus lbd's process time (utime + stime: the controller);
//! for HAProxy, its process time. Both leave out kernel work done in
//! softirq on the director's behalf: for lbd the veth driver's receive and
//! XDP_TX, for HAProxy the whole TCP receive path of its sockets, far more.
//! So the comparison is biased in HAProxy's favour.
//!
//! Whole-machine CPU (`/proc/stat`) is recorded too, but it cannot isolate
//! the director: on a small machine the client and the servers keep every
//! CPU busy in every mode, so busy CPU per request only mirrors throughput.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};

use crate::director::{Director, ServiceSpec};
use crate::lab::{HTTP_PORT, Lab, LabSpec, ProcHandle, set_sysctls};
use crate::netns;

#[derive(Clone, Debug)]
pub struct E2eOptions {
    /// Seconds per measured wrk run.
    pub duration_s: u32,
    /// Seconds of wrk before each measured run (not counted).
    pub warmup_s: u32,
    /// wrk's open connections (`-c`).
    pub connections: u32,
    /// wrk's threads (`-t`).
    pub threads: u32,
    /// Seconds of the idle baseline of the machine's CPU use.
    pub baseline_s: u32,
}

impl Default for E2eOptions {
    fn default() -> Self {
        E2eOptions {
            duration_s: 8,
            warmup_s: 2,
            connections: 32,
            threads: 2,
            baseline_s: 3,
        }
    }
}

/// One wrk run.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx answers.
    pub errors: u64,
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
    /// Busy CPU seconds of the whole machine during the run.
    pub machine_busy_s: f64,
    /// Softirq CPU seconds of the whole machine during the run.
    pub machine_softirq_s: f64,
    /// The director's process (lbd or HAProxy): utime + stime, seconds.
    pub director_process_s: Option<f64>,
    /// lbd's XDP program: BPF run time, seconds, and packets it ran on.
    pub xdp_s: Option<f64>,
    pub xdp_packets: Option<u64>,
    /// The real servers' lab-server processes, utime + stime, seconds.
    pub servers_process_s: f64,
    /// Director CPU per request, µs (see the module docs).
    pub director_us_per_request: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct ModeResult {
    /// "lbd_dr", "haproxy_tcp", "direct".
    pub id: &'static str,
    pub title: String,
    pub keepalive: LoadResult,
    pub close: LoadResult,
}

#[derive(Clone, Debug)]
pub struct E2eResults {
    pub options: E2eOptions,
    pub modes: Vec<ModeResult>,
    /// Busy CPUs of the whole machine with the lab idle, just before the
    /// runs: other load on the machine.
    pub baseline_busy: f64,
    pub wrk_version: String,
    pub haproxy_version: String,
    pub haproxy_config: String,
    pub lbd_config: String,
    pub elapsed_s: f64,
}

impl E2eResults {
    pub fn mode(&self, id: &str) -> Option<&ModeResult> {
        self.modes.iter().find(|m| m.id == id)
    }
}

/// Busy and total ticks of the whole machine (`/proc/stat`'s `cpu` line).
#[derive(Clone, Copy, Debug)]
struct MachineCpu {
    busy_ticks: u64,
    softirq_ticks: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn machine_cpu() -> Result<MachineCpu> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .ok_or_else(|| anyhow!("empty /proc/stat"))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    ensure!(f.len() >= 8, "short cpu line in /proc/stat: {line}");
    // user nice system idle iowait irq softirq steal
    let busy_ticks = f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    Ok(MachineCpu {
        busy_ticks,
        softirq_ticks: f[6],
    })
}

/// utime + stime of a process (all its threads), in ticks.
fn process_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state(3) ... utime is field 14, stime 15 (1-based overall).
    ensure!(f.len() > 13, "short /proc/{pid}/stat");
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// The XDP program attached to `iface` in `ns`, by id (`ip -j link`).
pub(super) fn xdp_prog_id(ns: &str, iface: &str) -> Result<u32> {
    let out = netns::ip(&["-n", ns, "-j", "-d", "link", "show", "dev", iface])?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    let xdp = &json[0]["xdp"];
    xdp["prog"]["id"]
        .as_u64()
        .or_else(|| xdp["attached"][0]["prog"]["id"].as_u64())
        .map(|id| id as u32)
        .ok_or_else(|| anyhow!("no XDP program on {iface} in {ns}: {out}"))
}

/// (run time, run count) of the loaded program `id` (BPF stats).
fn prog_run_stats(id: u32) -> Result<(Duration, u64)> {
    for info in aya::programs::loaded_programs() {
        let info = info?;
        if info.id() == id {
            return Ok((info.run_time(), info.run_count()));
        }
    }
    bail!("no loaded program with id {id}")
}

/// How many times the loaded program `id` has run (BPF stats).
pub(super) fn prog_runs(id: u32) -> Result<u64> {
    prog_run_stats(id).map(|(_, runs)| runs)
}

/// What to sample around a run: the director processes (lbd or HAProxy;
/// with several directors, summed) and their XDP programs.
pub(super) struct Probes<'a> {
    pub(super) director_pids: Vec<u32>,
    pub(super) xdp_progs: Vec<u32>,
    pub(super) servers: &'a [ProcHandle],
}

struct Sample {
    machine: MachineCpu,
    director: Option<u64>,
    xdp: Option<(Duration, u64)>,
    servers: u64,
}

impl Probes<'_> {
    fn sample(&self) -> Result<Sample> {
        Ok(Sample {
            machine: machine_cpu()?,
            director: (!self.director_pids.is_empty())
                .then(|| self.director_pids.iter().map(|&pid| process_ticks(pid)).sum::<Result<u64>>())
                .transpose()?,
            xdp: (!self.xdp_progs.is_empty())
                .then(|| -> Result<(Duration, u64)> {
                    let mut total = (Duration::ZERO, 0);
                    for &id in &self.xdp_progs {
                        let (time, runs) = prog_run_stats(id)?;
                        total = (total.0 + time, total.1 + runs);
                    }
                    Ok(total)
                })
                .transpose()?,
            servers: self
                .servers
                .iter()
                .map(|h| process_ticks(h.pid).unwrap_or(0))
                .sum(),
        })
    }
}

/// Parsed wrk output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WrkOutput {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_s: f64,
    pub errors: u64,
    pub latency_p50_us: Option<f64>,
    pub latency_p99_us: Option<f64>,
}

/// "1.23ms", "456.00us", "1.20s", "2.00m" in µs.
fn wrk_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * factor)
}

/// Reads what wrk (4.x, with `--latency`) prints.
pub fn parse_wrk(out: &str) -> Result<WrkOutput> {
    let mut r = WrkOutput::default();
    let mut saw_summary = false;
    for line in out.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Requests/sec:") {
            r.requests_per_s = rest.trim().parse().with_context(|| format!("in {t:?}"))?;
        } else if t.contains(" requests in ") {
            // "123456 requests in 8.00s, 12.34MB read"
            let mut words = t.split_whitespace();
            r.requests = words
                .next()
                .unwrap_or("")
                .parse()
                .with_context(|| format!("in {t:?}"))?;
            let secs = t
                .split(" requests in ")
                .nth(1)
                .and_then(|s| s.split(',').next())
                .unwrap_or("");
            r.seconds = wrk_duration_us(secs).map(|us| us / 1e6).unwrap_or(0.0);
            saw_summary = true;
        } else if let Some(rest) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in rest.split(',') {
                if let Some(n) = part
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    r.errors += n;
                }
            }
        } else if let Some(rest) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += rest.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(rest) = t.strip_prefix("50%") {
            r.latency_p50_us = wrk_duration_us(rest);
        } else if let Some(rest) = t.strip_prefix("99%") {
            r.latency_p99_us = wrk_duration_us(rest);
        }
    }
    ensure!(
        saw_summary && r.requests_per_s > 0.0,
        "no result in wrk's output:\n{out}"
    );
    Ok(r)
}

pub(super) struct Runner<'a> {
    pub(super) lab: &'a Lab,
    pub(super) options: &'a E2eOptions,
}

impl Runner<'_> {
    fn wrk(&self, url: &str, close: bool, seconds: u32) -> Result<WrkOutput> {
        let mut args: Vec<String> = vec![
            "wrk".into(),
            format!("-t{}", self.options.threads),
            format!("-c{}", self.options.connections),
            format!("-d{seconds}s"),
            "--latency".into(),
        ];
        if close {
            args.extend(["-H".into(), "Connection: close".into()]);
        }
        args.push(url.to_owned());
        let cmd = netns::command_in(&self.lab.client().ns, &args);
        let out = netns::run_checked(cmd, Duration::from_secs(seconds as u64 + 30))?;
        parse_wrk(&out)
    }

    /// A warm-up, then the measured run with samples around it.
    pub(super) fn load(&self, url: &str, close: bool, probes: &Probes) -> Result<LoadResult> {
        if self.options.warmup_s > 0 {
            self.wrk(url, close, self.options.warmup_s)
                .context("warm-up")?;
        }
        let before = probes.sample()?;
        let w = self.wrk(url, close, self.options.duration_s)?;
        let after = probes.sample()?;
        let ticks = clock_ticks();
        let machine_busy_s = (after.machine.busy_ticks - before.machine.busy_ticks) as f64 / ticks;
        let machine_softirq_s =
            (after.machine.softirq_ticks - before.machine.softirq_ticks) as f64 / ticks;
        let director_process_s = match (before.director, after.director) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / ticks),
            _ => None,
        };
        let (xdp_s, xdp_packets) = match (before.xdp, after.xdp) {
            (Some(b), Some(a)) => (
                Some(a.0.saturating_sub(b.0).as_secs_f64()),
                Some(a.1.saturating_sub(b.1)),
            ),
            _ => (None, None),
        };
        let requests = w.requests.max(1) as f64;
        let director_us_per_request =
            director_process_s.map(|p| (p + xdp_s.unwrap_or(0.0)) / requests * 1e6);
        Ok(LoadResult {
            requests: w.requests,
            seconds: w.seconds,
            requests_per_s: w.requests_per_s,
            errors: w.errors,
            latency_p50_us: w.latency_p50_us,
            latency_p99_us: w.latency_p99_us,
            machine_busy_s,
            machine_softirq_s,
            director_process_s,
            xdp_s,
            xdp_packets,
            servers_process_s: after.servers.saturating_sub(before.servers) as f64 / ticks,
            director_us_per_request,
        })
    }

    pub(super) fn both(&self, url: &str, probes: &Probes) -> Result<(LoadResult, LoadResult)> {
        let keepalive = self.load(url, false, probes).context("keep-alive run")?;
        let close = self
            .load(url, true, probes)
            .context("connection-per-request run")?;
        Ok((keepalive, close))
    }
}

fn first_line(cmd: &[&str]) -> String {
    std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

pub fn haproxy_config(lab: &Lab, threads: u32) -> String {
    let mut text = format!(
        "# HAProxy in TCP mode on the director, in front of the lab's real servers\n\
         global\n    maxconn 8000\n    nbthread {threads}\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n\
         frontend vip\n    bind {vip}:{HTTP_PORT}\n    default_backend reals\n\n\
         backend reals\n    balance roundrobin\n",
        vip = lab.vip()
    );
    for real in lab.reals() {
        text.push_str(&format!(
            "    server {} {}:{HTTP_PORT}\n",
            real.name, real.ip
        ));
    }
    text
}

/// Waits until `url` answers from the client (any body).
pub(super) fn wait_until_answers(lab: &Lab, url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match lab.curl(url) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("{url} does not answer")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn run(options: &E2eOptions, progress: &mut dyn FnMut(&str)) -> Result<E2eResults> {
    let started = Instant::now();
    for tool in ["wrk", "haproxy"] {
        ensure!(
            in_path(tool),
            "{tool} is not installed (cargo xtask setup installs it)"
        );
    }
    progress(
        "building the namespace lab (client, director, 2 real servers) and starting lab-server on each",
    );
    let lab = Lab::build(LabSpec::new("bench").reals(2)).context("building the lab")?;
    let servers = lab.start_http_servers().context("starting lab-server")?;
    // Many short connections: the client may reuse a port in TIME_WAIT
    // (its own, when it closes first) and has the whole port range; the
    // same for HAProxy's connections to the real servers.
    let fast_reuse = [
        ("net.ipv4.tcp_tw_reuse", "1"),
        ("net.ipv4.ip_local_port_range", "1024 65000"),
    ];
    set_sysctls(&lab.client().ns, &fast_reuse)?;
    set_sysctls(&lab.director().ns, &fast_reuse)?;

    progress(&format!(
        "idle baseline of the machine's CPU use ({} s)",
        options.baseline_s
    ));
    let b0 = machine_cpu()?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(options.baseline_s as u64));
    let b1 = machine_cpu()?;
    let baseline_busy =
        (b1.busy_ticks - b0.busy_ticks) as f64 / clock_ticks() / t0.elapsed().as_secs_f64();

    // The kernel's BPF run-time stats for the whole end-to-end part (so
    // every mode pays the same small overhead).
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let runner = Runner { lab: &lab, options };
    let vip_url = format!("http://{}:{HTTP_PORT}/", lab.vip());
    let mut modes = Vec::new();

    // (c) straight to one real server.
    let rs1 = lab.real(0);
    let direct_url = format!("http://{}:{HTTP_PORT}/", rs1.ip);
    progress(&format!(
        "(c) direct to {} ({direct_url}): keep-alive, then a connection per request",
        rs1.name
    ));
    let probes = Probes { director_pids: vec![], xdp_progs: vec![], servers: &servers };
    let (keepalive, close) = runner.both(&direct_url, &probes).context("direct")?;
    modes.push(ModeResult {
        id: "direct",
        title: format!("straight to one real server ({})", rs1.name),
        keepalive,
        close,
    });

    // (b) HAProxy, mode tcp, on the director.
    let haproxy_config = haproxy_config(&lab, options.threads);
    let cfg_path = lab.log_dir().join("haproxy.cfg");
    std::fs::write(&cfg_path, &haproxy_config)?;
    let cfg = cfg_path.to_string_lossy().into_owned();
    let haproxy = lab.spawn(
        &lab.director().ns,
        "haproxy",
        &["haproxy", "-f", &cfg, "-db"],
    )?;
    let result = (|| -> Result<(LoadResult, LoadResult)> {
        wait_until_answers(&lab, &vip_url)
            .with_context(|| format!("HAProxy's log:\n{}", lab.read_log(&haproxy)))?;
        progress(&format!(
            "(b) HAProxy mode tcp on the director ({vip_url}): keep-alive, then a connection per request"
        ));
        let probes = Probes { director_pids: vec![haproxy.pid], xdp_progs: vec![], servers: &servers };
        runner.both(&vip_url, &probes)
    })();
    lab.stop(&haproxy).ok();
    let (keepalive, close) = result.context("HAProxy")?;
    modes.push(ModeResult {
        id: "haproxy_tcp",
        title: "HAProxy, mode tcp, on the director".into(),
        keepalive,
        close,
    });

    // (a) lbd, DR.
    let mut director = Director::new(&lab)?;
    director.conn_table_size = lb_common::DEFAULT_CONN_TABLE_SIZE;
    let service = ServiceSpec::lab_http(&lab, "rr");
    director.write_config(&[service])?;
    let lbd_config = std::fs::read_to_string(&director.config_path)?;
    director.start().context("starting lbd")?;
    let result = (|| -> Result<(LoadResult, LoadResult)> {
        wait_until_answers(&lab, &vip_url)?;
        let prog = xdp_prog_id(&lab.director().ns, lab.director_iface())?;
        progress(&format!(
            "(a) lbd, DR, rr ({vip_url}): keep-alive, then a connection per request"
        ));
        let probes =
            Probes { director_pids: director.pid().into_iter().collect(), xdp_progs: vec![prog], servers: &servers };
        runner.both(&vip_url, &probes)
    })();
    let log = director.log();
    director.stop().ok();
    let (keepalive, close) = result.with_context(|| format!("lbd; its log:\n{log}"))?;
    modes.push(ModeResult {
        id: "lbd_dr",
        title: "lbd, DR (XDP), rr".into(),
        keepalive,
        close,
    });
    drop(director);
    // As the issue lists them: (a) lbd, (b) HAProxy, (c) direct.
    let rank = |id: &str| {
        ["lbd_dr", "haproxy_tcp", "direct"]
            .iter()
            .position(|m| *m == id)
    };
    modes.sort_by_key(|m| rank(m.id));

    drop(lab);
    Ok(E2eResults {
        options: options.clone(),
        modes,
        baseline_busy,
        wrk_version: first_line(&["wrk", "-v"])
            .split(" Copyright")
            .next()
            .unwrap_or("")
            .to_owned(),
        haproxy_version: first_line(&["haproxy", "-v"]),
        haproxy_config,
        lbd_config,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

pub(super) fn in_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 8s test @ http://10.10.0.100/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52ms    1.01ms  30.13ms   91.10%
    Req/Sec    10.99k     1.20k   13.51k    70.62%
  Latency Distribution
     50%    1.31ms
     75%    1.71ms
     90%    2.27ms
     99%    5.50ms
  174953 requests in 8.00s, 17.35MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:  21867.40
Transfer/sec:      2.17MB
";

    #[test]
    fn wrk_output_is_read() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 174953);
        assert_eq!(r.seconds, 8.0);
        assert_eq!(r.requests_per_s, 21867.40);
        assert_eq!(r.errors, 6);
        assert_eq!(r.latency_p50_us, Some(1310.0));
        assert_eq!(r.latency_p99_us, Some(5500.0));
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn wrk_durations() {
        assert_eq!(wrk_duration_us("456.00us"), Some(456.0));
        assert_eq!(wrk_duration_us("1.20s"), Some(1.2e6));
        assert_eq!(wrk_duration_us("x"), None);
    }
}
