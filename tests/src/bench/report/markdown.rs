//! `bench/results.md` and the README's summary: the method, the tables,
//! the targets.

use std::fmt::Write as _;

use super::{Results, ratio};
use crate::bench::datapath::DatapathResults;
use crate::bench::e2e::{E2eResults, LoadResult};

impl Results {
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
