//! `bench/results.json`: every figure.

use serde_json::{Value, json};

use super::{Results, ratio};
use crate::bench::e2e::LoadResult;

impl Results {
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
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
