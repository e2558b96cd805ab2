//! lbctl: the load balancer's tables with ipvsadm's vocabulary and output,
//! read live from lbd's control socket.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Result, bail};
use clap::Parser;
use lb_userspace::{
    config,
    control::{self, Request, Response},
    ipvsadm::{self, ListOptions},
};

#[derive(Parser)]
#[command(name = "lbctl", version, about = "Show the load balancer's tables, ipvsadm style", disable_help_flag = true)]
struct Args {
    /// List the table (the default).
    #[arg(short = 'L', long = "list", visible_short_alias = 'l')]
    list: bool,
    /// Numeric addresses and ports.
    #[arg(short = 'n', long = "numeric")]
    numeric: bool,
    /// List the connection table.
    #[arg(short = 'c', long = "connection")]
    connection: bool,
    /// Cumulative counters.
    #[arg(long)]
    stats: bool,
    /// Rates.
    #[arg(long)]
    rate: bool,
    /// Exact numbers (no K/M/G).
    #[arg(long)]
    exact: bool,
    /// Upper and lower connection thresholds.
    #[arg(long)]
    thresholds: bool,
    /// Persistent connection counts.
    #[arg(long = "persistent-conn")]
    persistent_conn: bool,
    /// Keep the datapath's own order of services and servers.
    #[arg(long)]
    nosort: bool,
    /// Does nothing (ipvsadm compatibility).
    #[arg(long)]
    sort: bool,
    /// The connection timeouts (tcp tcpfin udp).
    #[arg(long)]
    timeout: bool,
    /// The datapath's per-reason packet counters.
    #[arg(long)]
    counters: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// lbd's control socket.
    #[arg(long, env = "LBCTL_SOCKET", default_value = config::DEFAULT_CONTROL_SOCKET)]
    socket: PathBuf,
    /// Print help.
    #[arg(short = 'h', long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let _ = (args.list, args.sort);
    if args.timeout {
        let Response::Timeouts { timeouts } = control::ask(&args.socket, &Request::Timeouts)? else { bail!("unexpected answer") };
        print_out(args.json, &timeouts, || ipvsadm::timeouts(&timeouts))
    } else if args.counters {
        let Response::Counters { counters } = control::ask(&args.socket, &Request::Counters)? else { bail!("unexpected answer") };
        print_out(args.json, &counters, || counters.iter().map(|(k, v)| format!("{k:<24} {v}\n")).collect())
    } else if args.connection {
        let Response::Connections { connections } = control::ask(&args.socket, &Request::Connections)? else {
            bail!("unexpected answer")
        };
        print_out(args.json, &connections, || ipvsadm::list_connections(&connections, args.numeric))
    } else {
        let Response::Table { table } = control::ask(&args.socket, &Request::Table)? else { bail!("unexpected answer") };
        let opts = ListOptions {
            numeric: args.numeric,
            stats: args.stats,
            rate: args.rate,
            exact: args.exact,
            thresholds: args.thresholds,
            persistent_conn: args.persistent_conn,
            sort: !args.nosort,
            ..ListOptions::default()
        };
        print_out(args.json, &table, || ipvsadm::list(&table, &opts))
    }
}

fn print_out<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}
