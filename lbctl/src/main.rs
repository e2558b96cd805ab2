//! lbctl: the load balancer's tables with ipvsadm's commands, letters and
//! output, so an LVS operator's habits and scripts carry over. It talks to
//! lbd's control socket; the config file is never read.
//!
//! Besides ipvsadm's options: `--json` (listings for scripts), `--counters`
//! (the datapath's per-reason packet counters, and connection sync's
//! `sync_*`), `--vrrp` (the VRRP instances), `--socket PATH` (or
//! `LBCTL_SOCKET`; default /run/lb/lbd.sock), `-c`'s filters `--vip`,
//! `--real`, `--client` (`ADDR[:PORT]`, lb-ipvsadm's `conn_filter`), and
//! `explain -t|-u CLIENT:PORT VIP:PORT` (where that flow went or would go,
//! and why).

mod docs;

use std::{io::Read as _, path::PathBuf, process::ExitCode};

use anyhow::{Result, bail};
use lb_ipvsadm::{
    command::{Command, List, ListTarget},
    conn_filter::{self, ConnFilter},
    control::{self, DEFAULT_SOCKET, Request, Response},
    error::{EXIT_LIST, EXIT_USAGE, KernelError},
    format as ipvsadm,
    grammar,
    names::Names,
    snapshot::Table,
    usage::usage,
    vrrp::render_table,
};

/// Options of ours, taken out before ipvsadm's grammar sees the rest.
struct Own {
    json: bool,
    counters: bool,
    vrrp: bool,
    socket: PathBuf,
    /// `-c`'s filters.
    filter: ConnFilter,
}

fn split_own(args: Vec<String>) -> Result<(Own, Vec<String>), String> {
    let (filter, args) = ConnFilter::take_from(args)?;
    let mut own = Own {
        filter,
        json: false,
        counters: false,
        vrrp: false,
        socket: std::env::var_os("LBCTL_SOCKET").map_or(PathBuf::from(DEFAULT_SOCKET), PathBuf::from),
    };
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => own.json = true,
            "--counters" => own.counters = true,
            "--vrrp" | "vrrp" if rest.is_empty() => own.vrrp = true,
            "--socket" => own.socket = it.next().ok_or("--socket needs a path")?.into(),
            _ if a.starts_with("--socket=") => own.socket = a["--socket=".len()..].into(),
            _ => rest.push(a),
        }
    }
    Ok((own, rest))
}

/// lbctl's version and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("LB_COMMIT"), ")");

fn main() -> ExitCode {
    // For the package: the man page and completions, then nothing else.
    let argv: Vec<String> = std::env::args().collect();
    if let [_, flag, dir] = argv.as_slice()
        && flag == "--docs"
    {
        return match lb_docs::write_cli(docs::command(), "8", dir.as_ref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lbctl: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let (own, args) = match split_own(std::env::args().skip(1).collect()) {
        Ok(split) => split,
        Err(e) => {
            eprintln!("lbctl: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&own, &args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lbctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--vip`, `--real` or `--client` with anything but `-c`.
fn filters_misplaced() -> ExitCode {
    eprintln!("lbctl: --vip, --real and --client filter the connection listing: lbctl -L -n -c --vip ADDR[:PORT]");
    exit(EXIT_USAGE)
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn run(own: &Own, args: &[String]) -> Result<ExitCode> {
    if !own.filter.is_empty() && (own.counters || own.vrrp) {
        return Ok(filters_misplaced());
    }
    if own.counters {
        let Response::Counters { counters } = control::ask(&own.socket, &Request::Counters)? else { bail!("unexpected answer") };
        return print_out(own.json, &counters, || counters.iter().map(|(k, v)| format!("{k:<24} {v}\n")).collect());
    }
    if own.vrrp {
        let Response::Vrrp { instances } = control::ask(&own.socket, &Request::Vrrp)? else { bail!("unexpected answer") };
        return print_out(own.json, &instances, || {
            render_table(&instances, std::time::SystemTime::now())
        });
    }
    if args.first().is_some_and(|a| a == "explain") {
        return explain(own, &args[1..]);
    }
    let names = Names::system();
    let command = match grammar::parse(args, &names) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}", e.message.trim_end());
            return Ok(exit(e.exit_code));
        }
    };
    if !own.filter.is_empty() && !matches!(&command, Command::List(List { target: ListTarget::Connections, .. })) {
        return Ok(filters_misplaced());
    }
    if let Some(reason) = command.unsupported_reason() {
        eprintln!("{reason}");
        return Ok(exit(EXIT_USAGE));
    }
    match &command {
        Command::Help => {
            print!("{}{}{}", usage("lbctl"), docs::own_usage(), docs::OWN_USAGE);
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("lbctl {VERSION}; ipvsadm v1.31 compatible");
            Ok(ExitCode::SUCCESS)
        }
        Command::List(list) => list_command(own, list, &names),
        Command::Save { numeric } => {
            let table = table(own)?;
            print!("{}", ipvsadm::save_with(&table, *numeric, names.services()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text)?;
            let commands = match grammar::parse_restore(&text, &names) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("line {}: {}", e.line, e.message.trim_end());
                    return Ok(exit(e.exit_code));
                }
            };
            apply(own, commands.into_iter().filter(|c| !matches!(c, Command::List(_) | Command::Save { .. })).collect())
        }
        _ => apply(own, vec![command]),
    }
}

/// `lbctl explain -t|-u CLIENT:PORT VIP:PORT`: where the flow went or
/// would go, and why (lbd reads its maps; see lb-ipvsadm's `explain`).
fn explain(own: &Own, args: &[String]) -> Result<ExitCode> {
    let query = match lb_ipvsadm::explain::parse_args(args) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("{e}");
            return Ok(exit(EXIT_USAGE));
        }
    };
    let Response::Explain { explanation } = control::ask(&own.socket, &Request::Explain { query })? else {
        bail!("unexpected answer")
    };
    print_out(own.json, &explanation, || lb_ipvsadm::explain::render(&explanation))
}

/// Sends table changes to lbd, all or none.
fn apply(own: &Own, commands: Vec<Command>) -> Result<ExitCode> {
    let request = Request::Apply { commands };
    match control::ask(&own.socket, &request)? {
        Response::Done => Ok(ExitCode::SUCCESS),
        Response::Refused { message, exit_code } => {
            eprintln!("{message}");
            Ok(exit(exit_code))
        }
        other => bail!("unexpected answer {other:?}"),
    }
}

fn table(own: &Own) -> Result<Table> {
    match control::ask(&own.socket, &Request::Table)? {
        Response::Table { table } => Ok(table),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// Listings name ports from `names` unless numeric.
fn list_command(own: &Own, list: &List, names: &Names) -> Result<ExitCode> {
    let opts = list.list_options();
    let ports = names.services();
    match list.target {
        ListTarget::All => {
            let table = table(own)?;
            print_out(own.json, &table, || ipvsadm::list_with(&table, &opts, ports))
        }
        ListTarget::Service(vs) => {
            let table = table(own)?;
            let found = table.services.iter().find(|s| s.id == vs);
            match found {
                Some(svc) => print_out(own.json, svc, || ipvsadm::list_service(svc, &opts)),
                None => {
                    eprintln!("{}", KernelError::NoSuchService.message());
                    Ok(exit(EXIT_LIST))
                }
            }
        }
        ListTarget::Connections => {
            // In pages, filtered by lbd; sorted here.
            let connections = conn_filter::list(&own.socket, &own.filter)?;
            print_out(own.json, &connections, || ipvsadm::list_connections_with(&connections, &opts, ports))
        }
        ListTarget::Timeouts => {
            let Response::Timeouts { timeouts } = control::ask(&own.socket, &Request::Timeouts)? else {
                bail!("unexpected answer")
            };
            print_out(own.json, &timeouts, || ipvsadm::timeouts(&timeouts))
        }
        // No connection sync daemon in the ipvsadm sense: nothing to show.
        ListTarget::Daemon => Ok(ExitCode::SUCCESS),
    }
}

fn print_out<T: serde::Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> Result<ExitCode> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text());
    }
    Ok(ExitCode::SUCCESS)
}
