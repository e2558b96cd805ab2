//! Active-active directors in the lab: requests per second through one,
//! two and three lbd directors behind the ECMP router (BIRD, BGP
//! multipath, L4 hash; gobgpd on each director, as `tests/active_active.rs`
//! builds it), keep-alive and a connection per request, with the
//! directors' CPU per request: their XDP programs' run time and their lbd
//! processes' time, each summed over the directors (see [`super::e2e`] for
//! what that leaves out). The lbd processes' share is mostly their timers
//! (the sweep, rates, neighbours, BGP checks), which each director adds.
//!
//! On a small machine the client, the real servers, the router and every
//! director share the same CPUs: more directors do not add CPU, so the
//! aggregate cannot grow with them here. What the lab shows is that
//! spreading over directors costs nothing per request and that every
//! director takes its share.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

use super::e2e::{E2eOptions, LoadResult, Probes, Runner, in_path, wait_until_answers, xdp_prog_id};
use super::report::{Machine, Part, measured_on};
use crate::director::{Director, ServiceSpec};
use crate::lab::{HTTP_PORT, Lab, LabSpec, set_sysctls};

/// The most directors measured.
pub const DIRECTORS: usize = 3;

pub struct EcmpRow {
    pub directors: usize,
    pub keepalive: LoadResult,
    pub close: LoadResult,
    /// Each director's share of the packets its XDP program ran on, in
    /// the keep-alive run.
    pub shares: Vec<f64>,
}

pub struct EcmpResults {
    pub options: E2eOptions,
    pub rows: Vec<EcmpRow>,
    pub elapsed_s: f64,
}

pub fn run(options: &E2eOptions, progress: &mut dyn FnMut(&str)) -> Result<EcmpResults> {
    let started = Instant::now();
    for tool in ["wrk", "bird", "gobgpd", "gobgp"] {
        ensure!(in_path(tool), "{tool} is not installed (cargo xtask setup installs it)");
    }
    progress("building the lab: client behind a BIRD router, three directors with gobgpd, two real servers");
    let lab = Lab::build(LabSpec::new("bench-ecmp").remote_client().directors(DIRECTORS).without_static_vip())
        .context("building the lab")?;
    let servers = lab.start_http_servers().context("starting lab-server")?;
    set_sysctls(
        &lab.client().ns,
        &[("net.ipv4.tcp_tw_reuse", "1"), ("net.ipv4.ip_local_port_range", "1024 65000")],
    )?;
    let hosts = lab.directors().to_vec();
    let _bird = lab.start_bird_router(&hosts)?;
    let _speakers = hosts.iter().map(|h| lab.start_gobgpd(h)).collect::<Result<Vec<_>>>()?;
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let runner = Runner { lab: &lab, options };
    let url = format!("http://{}:{HTTP_PORT}/", lab.vip());
    let service = ServiceSpec::lab_http(&lab, "mh").with("sched_flags = [\"mh-port\"]").with("stateless_fallback = true");
    let mut directors: Vec<Director<'_>> = Vec::new();
    let mut rows = Vec::new();
    for host in &hosts {
        let mut d = Director::on_host(&lab, host)?;
        d.conn_table_size = lb_common::DEFAULT_CONN_TABLE_SIZE;
        d.add_section("[bgp]\ncheck_interval = \"1s\"\n");
        d.write_config(std::slice::from_ref(&service))?;
        d.start().with_context(|| format!("starting lbd on {}", host.name))?;
        directors.push(d);
        let n = directors.len();
        let want: BTreeSet<_> = hosts[..n].iter().map(|h| h.ip).collect();
        lab.wait_for_next_hops(lab.vip(), &want, Duration::from_secs(30))
            .with_context(|| format!("lbd on {}:\n{}", host.name, directors[n - 1].log()))?;
        wait_until_answers(&lab, &url)?;
        let progs = hosts[..n]
            .iter()
            .map(|h| xdp_prog_id(&h.ns, lab.director_iface()))
            .collect::<Result<Vec<_>>>()?;
        progress(&format!("{n} director(s) announced: keep-alive, then a connection per request"));
        let per_director = |id: u32| super::e2e::prog_runs(id).unwrap_or(0);
        let before: Vec<u64> = progs.iter().map(|&id| per_director(id)).collect();
        let probes = Probes {
            director_pids: directors.iter().filter_map(Director::pid).collect(),
            xdp_progs: progs.clone(),
            servers: &servers,
        };
        let keepalive = runner.load(&url, false, &probes).context("keep-alive run")?;
        let runs: Vec<u64> = progs.iter().zip(&before).map(|(&id, b)| per_director(id).saturating_sub(*b)).collect();
        let total = runs.iter().sum::<u64>().max(1) as f64;
        let shares = runs.iter().map(|&r| r as f64 / total).collect();
        let close = runner.load(&url, true, &probes).context("connection-per-request run")?;
        rows.push(EcmpRow { directors: n, keepalive, close, shares });
    }
    for d in &mut directors {
        d.stop().ok();
    }
    drop(directors);
    drop(lab);
    Ok(EcmpResults { options: options.clone(), rows, elapsed_s: started.elapsed().as_secs_f64() })
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn load_json(l: &LoadResult) -> Value {
    json!({
        "requests": l.requests, "requests_per_s": round(l.requests_per_s), "errors": l.errors,
        "latency_p50_us": l.latency_p50_us, "latency_p99_us": l.latency_p99_us,
        "directors_process_s": l.director_process_s, "xdp_s": l.xdp_s, "xdp_packets": l.xdp_packets,
        "directors_us_per_request": l.director_us_per_request.map(round),
    })
}

pub fn to_json(e: &EcmpResults) -> Value {
    json!({
        "method": "wrk from the client through 1, 2, 3 lbd directors (DR, mh with mh-port and the stateless \
                   fallback) behind a BIRD router with BGP multipath and an L4 hash; directors' CPU = lbd's \
                   process time + its XDP program's run time, summed",
        "options": {"duration_s": e.options.duration_s, "warmup_s": e.options.warmup_s,
                    "connections": e.options.connections, "threads": e.options.threads},
        "rows": e.rows.iter().map(|r| json!({
            "directors": r.directors, "keepalive": load_json(&r.keepalive), "close": load_json(&r.close),
            "keepalive_packet_shares": r.shares.iter().map(|s| round(*s)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "elapsed_s": round(e.elapsed_s),
    })
}

/// The table the README and results.md show.
pub fn table_markdown(e: &EcmpResults) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Active-active directors behind the ECMP router (wrk, {} connections, {} s per run):\n",
        e.options.connections, e.options.duration_s
    );
    let _ = writeln!(
        md,
        "| directors | requests/s (keep-alive) | XDP per request | lbd processes per request | packets per director | new connections/s | XDP per connection | lbd processes per connection |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---|---:|---:|---:|");
    for r in &e.rows {
        let shares: Vec<String> = r.shares.iter().map(|s| format!("{:.0}%", s * 100.0)).collect();
        let (k, c) = (&r.keepalive, &r.close);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {} | {} | {} | {:.0} | {} | {} |",
            r.directors,
            k.requests_per_s,
            per_request(k.xdp_s, k),
            per_request(k.director_process_s, k),
            shares.join(" / "),
            c.requests_per_s,
            per_request(c.xdp_s, c),
            per_request(c.director_process_s, c),
        );
    }
    md
}

/// CPU seconds spread over a run's requests, in µs.
fn per_request(seconds: Option<f64>, l: &LoadResult) -> String {
    seconds.map_or("—".to_owned(), |s| format!("{:.2} µs", s / l.requests.max(1) as f64 * 1e6))
}

/// Where the figures go: their own markers, `ecmp` in results.json.
pub const PART: Part = Part {
    key: "ecmp",
    start: "<!-- bench-ecmp:start (written by cargo xtask bench) -->",
    end: "<!-- bench-ecmp:end -->",
};

/// This run's figures for results.json and results.md.
pub fn figures(e: &EcmpResults, machine: &Machine) -> (Value, String) {
    let mut md = format!("## Active-active directors\n\n{}.\n\n", measured_on(machine));
    md.push_str(&table_markdown(e));
    md.push_str(
        "\nMethod: the lab of `tests/active_active.rs` (client behind a BIRD router with BGP multipath and \
         `fib_multipath_hash_policy = 1`, directors with lbd and gobgpd, two real servers by DR); lbd is started \
         on one more director for each row and the router's route to the VIP is waited for. The directors' CPU \
         is their XDP programs' run time (the kernel's BPF stats) and their lbd processes' time, each summed \
         over the directors; it leaves out the veth driver's work in softirq. lbd's time is mostly its timers, \
         which every director adds whatever it carries. Everything shares the machine's CPUs, so \
         the aggregate cannot grow with the directors here.\n",
    );
    (to_json(e), md)
}

/// The README's summary.
pub fn readme_summary(e: &EcmpResults, machine: &Machine) -> String {
    format!("{}; the method is in [bench/results.md](bench/results.md).\n\n{}", measured_on(machine), table_markdown(e))
}
