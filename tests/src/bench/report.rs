//! The benchmark's outputs: `bench/results.json`, `bench/results.md`,
//! `bench/datapath.svg` (drawn by [`chart`]), and the README's table
//! between its markers.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use super::chart;
use super::datapath::{DatapathResults, ScenarioResult};
use super::e2e::{E2eResults, LoadResult};
use super::sweep::{self, SweepResults};

/// Where and when the figures were taken.
#[derive(Clone, Debug)]
pub struct Machine {
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub date: String,
    pub kernel: String,
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub virtualized: bool,
    pub load_before: String,
    pub load_after: String,
    pub commit: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let cpus = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        let virtualized = cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<f64>().ok()
            })
            .map(|kib| kib / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        Machine {
            date: utc_now(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpu_model,
            cpus,
            memory_gib,
            virtualized,
            load_before: loadavg(),
            load_after: String::new(),
            commit: git_commit(),
        }
    }

    /// One line: "kernel 6.18, AMD EPYC (2 CPUs, VM), 23 GiB".
    pub fn summary(&self) -> String {
        format!(
            "Linux {}, {} ({} CPU{}{}), {:.0} GiB RAM",
            self.kernel,
            self.cpu_model,
            self.cpus,
            if self.cpus == 1 { "" } else { "s" },
            if self.virtualized {
                ", virtual machine"
            } else {
                ""
            },
            self.memory_gib
        )
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn git_commit() -> String {
    let root = crate::bins::workspace_root();
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(&root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{commit} with local changes")
            } else {
                commit
            }
        }
        None => "unknown".to_owned(),
    }
}

/// The current UTC time as `YYYY-MM-DD HH:MM` (no date crate needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_utc(secs)
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM` UTC (Howard Hinnant's
/// civil-from-days).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Everything one benchmark run measured.
pub struct Results {
    pub machine: Machine,
    pub datapath: Option<DatapathResults>,
    pub e2e: Option<E2eResults>,
    /// The connection table's walks ([`sweep`]).
    pub sweep: Option<SweepResults>,
}

/// A target of the issue and whether it was met.
#[derive(Clone, Debug)]
pub struct Target {
    pub what: String,
    pub wanted: String,
    pub measured: String,
    pub met: bool,
}

fn ratio(s: &ScenarioResult, base: &ScenarioResult) -> (f64, f64) {
    (s.median_ns / base.median_ns, s.p99_ns / base.p99_ns)
}

impl Results {
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        if let Some(d) = &self.datapath {
            let base = d.trivial();
            for s in &d.scenarios {
                if let Some(limit) = s.target_ratio {
                    let (r, _) = ratio(s, base);
                    out.push(Target {
                        what: format!("datapath: {}", s.title),
                        wanted: format!("≤ {limit}x the trivial XDP_TX program (median)"),
                        measured: format!(
                            "{r:.2}x ({:.0} ns vs {:.0} ns)",
                            s.median_ns, base.median_ns
                        ),
                        met: r <= limit,
                    });
                }
            }
        }
        if let Some(e) = &self.e2e
            && let (Some(lbd), Some(ha)) = (e.mode("lbd_dr"), e.mode("haproxy_tcp"))
        {
            for (kind, a, b) in [
                ("requests/s (keep-alive)", &lbd.keepalive, &ha.keepalive),
                ("new connections/s", &lbd.close, &ha.close),
            ] {
                out.push(Target {
                    what: format!("end to end: {kind}"),
                    wanted: "at least HAProxy's".into(),
                    measured: format!(
                        "{:.0} vs HAProxy {:.0} ({:.2}x)",
                        a.requests_per_s,
                        b.requests_per_s,
                        a.requests_per_s / b.requests_per_s
                    ),
                    met: a.requests_per_s >= b.requests_per_s,
                });
                if let (Some(x), Some(y)) = (a.director_us_per_request, b.director_us_per_request) {
                    out.push(Target {
                        what: format!("end to end: director CPU per request, {kind}"),
                        wanted: "a fraction of HAProxy's".into(),
                        measured: format!("{x:.2} µs vs HAProxy {y:.2} µs ({:.1}%)", x / y * 100.0),
                        met: x < y,
                    });
                }
            }
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let m = &self.machine;
        let mut root = json!({
            "date_utc": m.date,
            "machine": {
                "kernel": m.kernel,
                "cpu_model": m.cpu_model,
                "cpus": m.cpus,
                "memory_gib": (m.memory_gib * 10.0).round() / 10.0,
                "virtual_machine": m.virtualized,
                "load_average_before": m.load_before,
                "load_average_after": m.load_after,
                "commit": m.commit,
            },
            "reproduce": "cargo xtask bench",
        });
        if let Some(d) = &self.datapath {
            let base = d.trivial();
            let scenarios: Vec<Value> = d
                .scenarios
                .iter()
                .map(|s| {
                    let (rm, rp) = ratio(s, base);
                    json!({
                        "id": s.id,
                        "title": s.title,
                        "group": s.group,
                        "setup": s.setup,
                        "runs": s.runs,
                        "median_ns": s.median_ns,
                        "p99_ns": s.p99_ns,
                        "mean_ns": round2(s.mean_ns),
                        "min_ns": s.min_ns,
                        "ratio_median": round2(rm),
                        "ratio_p99": round2(rp),
                        "ratio_mean": round2(s.mean_ns / base.mean_ns),
                        "over_trivial_median_ns": s.median_ns - base.median_ns,
                        "prog_only_ns": s.prog_ns.map(round2),
                        "repeat_mean_ns": s.repeat_mean_ns,
                        "target_ratio": s.target_ratio,
                        "target_met": s.target_ratio.map(|t| rm <= t),
                    })
                })
                .collect();
            let o = &d.options;
            root["datapath"] = json!({
                "method": "BPF_PROG_TEST_RUN, repeat=1 per run, the kernel's per-run duration (ns) as the sample; \
                           runs in rounds over all scenarios; program loaded as lbd loads it",
                "options": {"runs": o.runs, "rounds": o.rounds, "warmup_per_round": o.warmup,
                            "stats_runs": o.stats_runs, "repeat_cross_check": o.repeat, "cpu": o.cpu},
                "timer_step_ns": d.timer_step_ns,
                "trivial_distinct_values": d.trivial_distinct_values,
                "bpf_stats_enabled_while_timing": d.bpf_stats_enabled_while_timing,
                "programs": d.programs.iter().map(|p| json!({
                    "name": p.name, "xlated_insns": p.xlated_insns,
                    "verified_insns": p.verified_insns, "jited_bytes": p.jited_bytes,
                })).collect::<Vec<_>>(),
                "scenarios": scenarios,
                "elapsed_s": round2(d.elapsed_s),
            });
        }
        if let Some(e) = &self.e2e {
            let load = |l: &LoadResult| {
                json!({
                    "requests": l.requests, "seconds": l.seconds, "per_second": l.requests_per_s,
                    "errors": l.errors, "latency_p50_us": l.latency_p50_us, "latency_p99_us": l.latency_p99_us,
                    "machine_busy_cpu_s": round3(l.machine_busy_s), "machine_softirq_cpu_s": round3(l.machine_softirq_s),
                    "director_process_cpu_s": l.director_process_s.map(round3),
                    "xdp_cpu_s": l.xdp_s.map(|v| (v * 1e6).round() / 1e6), "xdp_packets": l.xdp_packets,
                    "servers_process_cpu_s": round3(l.servers_process_s),
                    "director_cpu_us_per_request": l.director_us_per_request.map(round3),
                })
            };
            let o = &e.options;
            root["end_to_end"] = json!({
                "options": {"duration_s": o.duration_s, "warmup_s": o.warmup_s, "wrk_connections": o.connections,
                            "wrk_threads": o.threads, "baseline_s": o.baseline_s},
                "baseline_busy_cpus": round3(e.baseline_busy),
                "wrk": e.wrk_version,
                "haproxy": e.haproxy_version,
                "haproxy_config": e.haproxy_config,
                "lbd_config": e.lbd_config,
                "modes": e.modes.iter().map(|m| json!({
                    "id": m.id, "title": m.title,
                    "keepalive": load(&m.keepalive), "connection_per_request": load(&m.close),
                })).collect::<Vec<_>>(),
                "elapsed_s": round2(e.elapsed_s),
            });
        }
        root["targets"] = self
            .targets()
            .iter()
            .map(|t| json!({"what": t.what, "wanted": t.wanted, "measured": t.measured, "met": t.met}))
            .collect();
        root
    }

    /// The tables the README shows (between its markers).
    pub fn summary_markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(
            md,
            "Measured {} UTC on {} (commit {}), with `cargo xtask bench`; every figure and the method are in \
             [bench/results.md](bench/results.md), the chart in [bench/datapath.svg](bench/datapath.svg).",
            m.date,
            m.summary(),
            m.commit
        );
        let _ = writeln!(md);
        if let Some(d) = &self.datapath {
            md.push_str(&datapath_table(d, false));
            let _ = writeln!(md);
        }
        if let Some(e) = &self.e2e {
            md.push_str(&e2e_table(e));
            let _ = writeln!(md);
        }
        md.push_str(&self.targets_markdown());
        md
    }

    fn targets_markdown(&self) -> String {
        let mut md = String::new();
        let targets = self.targets();
        if !targets.is_empty() {
            let _ = writeln!(md, "| target | wanted | measured | met |");
            let _ = writeln!(md, "|---|---|---|---|");
            for t in &targets {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    t.what,
                    t.wanted,
                    t.measured,
                    if t.met { "yes" } else { "**no**" }
                );
            }
        }
        md
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let m = &self.machine;
        let _ = writeln!(md, "# Benchmark results\n");
        let _ = writeln!(
            md,
            "Written by `cargo xtask bench` (run as root); `results.json` holds every figure.\n"
        );
        let _ = writeln!(md, "* Date: {} UTC", m.date);
        let _ = writeln!(md, "* Machine: {}", m.summary());
        let _ = writeln!(
            md,
            "* Load average (1, 5, 15 min) before / after: {} / {}",
            m.load_before, m.load_after
        );
        let _ = writeln!(md, "* Commit: {}\n", m.commit);
        if let Some(d) = &self.datapath {
            md.push_str(&datapath_table(d, true));
            let _ = writeln!(md);
        }
        if let Some(e) = &self.e2e {
            md.push_str(&e2e_table(e));
            let _ = writeln!(md);
        }
        md.push_str(&self.targets_markdown());
        if let Some(d) = &self.datapath {
            let _ = writeln!(md, "\n## Datapath: method\n");
            let o = &d.options;
            let _ = writeln!(
                md,
                "The real XDP program, loaded as lbd loads it (same object, `Datapath::load` with lbd's default \
                 connection-table size, maps filled by the same planning code), runs crafted frames through \
                 `BPF_PROG_TEST_RUN`. Each run is one call with `repeat = 1` and a fresh copy of the frame, so \
                 rewritten frames and new connections never see their own output; the kernel's per-run duration \
                 (`ktime_get_ns()` around the program inside the call, frame copies excluded) is the sample. \
                 {} timed runs per scenario, in {} rounds over all scenarios (each after {} warm-up runs), so a \
                 change of load hits every scenario alike. Every run's verdict is checked, and the datapath's \
                 reason counters must have moved once per run on the measured path (e.g. `conn_new` and `tx_dr`).",
                o.runs, o.rounds, o.warmup
            );
            let _ = writeln!(md);
            if d.timer_step_ns > 1 {
                let _ = writeln!(
                    md,
                    "* Clock resolution: the per-run durations come in steps of {} ns on this machine (the \
                     clock behind `ktime_get_ns()` advances that much at a time; {} distinct values for the \
                     trivial program), so medians and p99s are multiples of it and a median near a step \
                     boundary may land on either side from one run of the benchmark to the next. The mean \
                     is not quantised (the clock's phase is random from run to run), so the mean ratio is \
                     given as the steadier cross-check. Where a clock this coarse matters, `repeat = N` \
                     below gives a finer mean where it is valid.",
                    d.timer_step_ns, d.trivial_distinct_values
                );
            } else {
                let _ = writeln!(
                    md,
                    "* Clock resolution: the per-run durations come in 1 ns steps ({} distinct values for the \
                     trivial program): not quantised.",
                    d.trivial_distinct_values
                );
            }
            let _ = writeln!(
                md,
                "* Each per-run figure includes the test-run loop's fixed cost around the program (two clock \
                 reads, bottom halves off and on), for the trivial program too; \"over trivial\" is the \
                 difference, the datapath's own extra cost. \"program only\" is the kernel's BPF run-time \
                 accounting (`run_time_ns / run_cnt`, what `bpftool prog` shows), from a separate pass of {} runs \
                 (it adds clock reads to every run, so it is off while timing{}).",
                o.stats_runs,
                if d.bpf_stats_enabled_while_timing {
                    "; here it was on globally while timing"
                } else {
                    ""
                }
            );
            let _ = writeln!(
                md,
                "* \"repeat = {}\": one call with the kernel repeating the frame, its mean per run; only where \
                 that is valid: the frame is left alone (pass, the trivial program) or rewritten idempotently \
                 (DR of an established flow rewrites the MACs to the same bytes every time, the flow and its \
                 entry stay the same, and the counters show every repeat took the DR path). Never for new \
                 connections (each run needs a new 5-tuple) or TUN (the frame grows).",
                o.repeat
            );
            let _ = writeln!(
                md,
                "\n| program | xlated insns | verifier-processed insns | JIT bytes |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|");
            for p in &d.programs {
                let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    p.name,
                    opt(p.xlated_insns),
                    opt(p.verified_insns),
                    p.jited_bytes
                );
            }
            let _ = writeln!(md, "\n| scenario | setup |");
            let _ = writeln!(md, "|---|---|");
            for s in &d.scenarios {
                let _ = writeln!(md, "| {} | {} |", s.title, s.setup);
            }
            let _ = writeln!(md, "\n![ns per packet](datapath.svg)");
        }
        if let Some(e) = &self.e2e {
            let o = &e.options;
            let _ = writeln!(md, "\n## End to end: method\n");
            let _ = writeln!(
                md,
                "The namespace lab (client, director, 2 real servers running lab-server, all veths into one \
                 bridge; native XDP on the director's veth). wrk ({}) from the client, {} threads, {} connections, \
                 {} s per run after a {} s warm-up: requests/s with keep-alive, and new connections/s with \
                 `Connection: close` (one request per connection). (a) lbd, DR, rr; (b) {} in TCP mode on the \
                 director, on the VIP, roundrobin over the same real servers, {} threads; (c) straight to rs1. \
                 The client and director namespaces have `tcp_tw_reuse = 1` and the port range 1024-65000. \
                 Everything shares the machine's {} CPUs, so the client and the servers compete with the director: \
                 every run keeps the CPUs close to saturated (see \"% of all CPUs\" below), throughput is bounded by \
                 the machine, and whatever the director spends shows up as lost throughput. lab-server is a small \
                 single-threaded tokio server; in (c) one instance takes all requests (it can use at most one \
                 CPU), in (a) and (b) two share them; their CPU time is listed.",
                e.wrk_version,
                o.threads,
                o.connections,
                o.duration_s,
                o.warmup_s,
                e.haproxy_version,
                o.threads,
                self.machine.cpus
            );
            let _ = writeln!(md);
            let _ = writeln!(
                md,
                "Director CPU per request: what can be pinned on the director for sure. For lbd, its XDP \
                 program's run time (the kernel's BPF stats, on for all end-to-end runs) plus lbd's own process \
                 time (utime + stime: the controller); for HAProxy, its process time (utime + stime, all \
                 threads). Both leave out kernel work done in softirq on the director's behalf, which no process \
                 is charged for: for lbd the veth driver's receive and XDP_TX, for HAProxy the whole TCP receive \
                 path of its sockets, far more. The comparison is therefore biased in HAProxy's favour. \
                 Whole-machine CPU (`/proc/stat`) is listed below but cannot isolate the director: the client \
                 and the servers keep every CPU busy in every mode, so it only mirrors throughput. Other load \
                 on the machine just before the runs: {:.2} CPUs busy with the lab idle.",
                e.baseline_busy
            );
            let _ = writeln!(
                md,
                "\n| mode | run | per s | errors | p50 latency | p99 latency | machine busy CPU s (% of all CPUs) | of which softirq | director process CPU s | XDP CPU s (packets) | real servers' CPU s |"
            );
            let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for m in &e.modes {
                for (run, l) in [("keep-alive", &m.keepalive), ("conn/request", &m.close)] {
                    let us = |v: Option<f64>| {
                        v.map(|v| format!("{:.0} µs", v))
                            .unwrap_or_else(|| "-".into())
                    };
                    let s =
                        |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
                    let xdp = match (l.xdp_s, l.xdp_packets) {
                        (Some(t), Some(n)) => format!("{t:.3} ({n})"),
                        _ => "-".into(),
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {run} | {:.0} | {} | {} | {} | {:.2} ({:.0}%) | {:.2} | {} | {} | {:.2} |",
                        m.title,
                        l.requests_per_s,
                        l.errors,
                        us(l.latency_p50_us),
                        us(l.latency_p99_us),
                        l.machine_busy_s,
                        l.machine_busy_s / (self.machine.cpus as f64 * l.seconds.max(0.001))
                            * 100.0,
                        l.machine_softirq_s,
                        s(l.director_process_s),
                        xdp,
                        l.servers_process_s
                    );
                }
            }
            let _ = writeln!(
                md,
                "\nHAProxy's configuration:\n\n```\n{}```",
                e.haproxy_config
            );
            let _ = writeln!(md, "\nlbd's configuration:\n\n```toml\n{}```", e.lbd_config);
        }
        md
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The datapath figures; `full` adds the mean, the difference to the
/// trivial program and the two cross-checks.
fn datapath_table(d: &DatapathResults, full: bool) -> String {
    let base = d.trivial();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Datapath, ns per packet through `BPF_PROG_TEST_RUN` ({} runs each, repeat = 1), and as a ratio to a \
         trivial XDP program that only returns `XDP_TX`:\n",
        d.options.runs
    );
    if full {
        let _ = writeln!(
            md,
            "| scenario | median ns | p99 ns | mean ns | median ratio | p99 ratio | mean ratio | over trivial ns (median) | program only ns | repeat = N mean ns | target (median ratio) |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    } else {
        let _ = writeln!(
            md,
            "| scenario | median ns | p99 ns | median ratio | p99 ratio | target (median ratio) |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|---|");
    }
    for s in &d.scenarios {
        let (rm, rp) = ratio(s, base);
        let target = match s.target_ratio {
            Some(t) if rm <= t => format!("≤ {t}x: met"),
            Some(t) => format!("≤ {t}x: **missed**"),
            None => String::new(),
        };
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        if full {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.1} | {:.2}x | {:.2}x | {:.2}x | {:.0} | {} | {} | {} |",
                s.title,
                s.median_ns,
                s.p99_ns,
                s.mean_ns,
                rm,
                rp,
                s.mean_ns / base.mean_ns,
                s.median_ns - base.median_ns,
                opt(s.prog_ns),
                opt(s.repeat_mean_ns),
                target
            );
        } else {
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.2}x | {:.2}x | {} |",
                s.title, s.median_ns, s.p99_ns, rm, rp, target
            );
        }
    }
    md
}

fn e2e_table(e: &E2eResults) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "End to end in the namespace lab, wrk from the client ({} connections, {} s per run), and the director's \
         CPU time per request (its XDP program and process, or HAProxy's process; see the method):\n",
        e.options.connections, e.options.duration_s
    );
    let _ = writeln!(
        md,
        "| path | requests/s (keep-alive) | new connections/s | director CPU per request, keep-alive | director CPU per request, new connections |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|");
    for m in &e.modes {
        let cpu = |l: &LoadResult| match l.director_us_per_request {
            Some(us) => format!("{us:.2} µs"),
            None => "-".into(),
        };
        let errors = |l: &LoadResult| {
            if l.errors > 0 {
                format!(" ({} errors)", l.errors)
            } else {
                String::new()
            }
        };
        let _ = writeln!(
            md,
            "| {} | {:.0}{} | {:.0}{} | {} | {} |",
            m.title,
            m.keepalive.requests_per_s,
            errors(&m.keepalive),
            m.close.requests_per_s,
            errors(&m.close),
            cpu(&m.keepalive),
            cpu(&m.close)
        );
    }
    md
}

/// The markers the README's generated section sits between.
pub const README_START: &str = "<!-- bench:start (written by cargo xtask bench) -->";
pub const README_END: &str = "<!-- bench:end -->";

/// Replaces what stands between the markers in `text`; `None` if either
/// marker is missing.
pub fn replace_between_markers(text: &str, body: &str) -> Option<String> {
    let start = text.find(README_START)? + README_START.len();
    let end = start + text[start..].find(README_END)?;
    Some(format!("{}\n{}{}", &text[..start], body, &text[end..]))
}

/// Writes results.json, results.md and datapath.svg into `dir`, and the
/// summary into `readme` between its markers (if it has them). The walk
/// figures have their own markers: a run that measured only them leaves
/// everything else as it was, and one that did not keeps the previous ones.
pub fn write_all(results: &Results, dir: &Path, readme: Option<&Path>) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    let json_path = dir.join("results.json");
    let md_path = dir.join("results.md");
    let old_json: Option<Value> = std::fs::read_to_string(&json_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let old_md = std::fs::read_to_string(&md_path).unwrap_or_default();
    let rest_measured = results.datapath.is_some() || results.e2e.is_some();
    let (mut json, mut md) = match rest_measured {
        true => (results.to_json(), results.to_markdown()),
        false => (
            old_json.clone().unwrap_or_else(|| json!({})),
            old_md.clone(),
        ),
    };
    let old = (old_json.as_ref(), old_md.as_str());
    sweep::merge(
        results.sweep.as_ref(),
        &results.machine,
        old,
        &mut json,
        &mut md,
    );
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")?;
    written.push(json_path.display().to_string());
    std::fs::write(&md_path, md)?;
    written.push(md_path.display().to_string());
    if let Some(d) = &results.datapath {
        let svg_path = dir.join("datapath.svg");
        std::fs::write(&svg_path, chart::datapath_svg(d, &results.machine))?;
        written.push(svg_path.display().to_string());
    }
    if let Some(readme) = readme
        && rest_measured
        && let Ok(text) = std::fs::read_to_string(readme)
        && let Some(new) = replace_between_markers(&text, &results.summary_markdown())
    {
        std::fs::write(readme, new)?;
        written.push(readme.display().to_string());
    }
    if let (Some(s), Some(readme)) = (&results.sweep, readme)
        && sweep::write_readme(s, &results.machine, readme)?
        && !written.contains(&readme.display().to_string())
    {
        written.push(readme.display().to_string());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(format_utc(1_763_771_400), "2025-11-22 00:30");
    }

    #[test]
    fn readme_section_is_replaced_between_markers() {
        let text = format!("a\n{README_START}\nold\n{README_END}\nb\n");
        let new = replace_between_markers(&text, "new\n").unwrap();
        assert_eq!(new, format!("a\n{README_START}\nnew\n{README_END}\nb\n"));
        assert!(replace_between_markers("no markers", "x").is_none());
    }
}
