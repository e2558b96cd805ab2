//! lbctl's man page and shell completions (`lbctl --docs DIR`, for the
//! package): its command line as a clap definition, made from ipvsadm's
//! help text (`lb_ipvsadm::usage::options`) and lbctl's own options.

use clap::{Arg, ArgAction, Command};
use lb_ipvsadm::usage;

/// lbctl's own options, besides ipvsadm's: (long, value, help).
pub const OWN_OPTIONS: [(&str, Option<&str>, &str); 8] = [
    ("json", None, "listings as JSON, for scripts (-L, -L -c, --counters, --vrrp)"),
    ("counters", None, "the datapath's per-reason packet counters, and connection sync's sync_*"),
    ("vrrp", None, "the VRRP instances: state, priority, master, adverts"),
    ("vip", Some("ADDR[:PORT]"), "-c: only the entries of this virtual address (and port); IPv6 in brackets"),
    ("real", Some("ADDR[:PORT]"), "-c: only the entries on this real server (and port); IPv6 in brackets"),
    ("client", Some("ADDR[:PORT]"), "-c: only the entries from this client (and port); IPv6 in brackets"),
    ("socket", Some("PATH"), "lbd's control socket (or LBCTL_SOCKET; default /run/lb/lbd.sock)"),
    ("version", None, "lbctl's version and commit (also -v)"),
];

/// `lbctl -h`'s part after ipvsadm's help: lbctl's own options, in the
/// help's layout.
pub fn own_usage() -> String {
    let mut out = String::from("lbctl's own options:\n");
    for (long, value, help) in OWN_OPTIONS {
        let spec = format!("--{long} {}", value.unwrap_or(""));
        out.push_str(&format!("  {spec:<36}{help}\n"));
    }
    out
}

/// lbctl's own commands, after ipvsadm's usage in `lbctl -h` and the man page.
pub const OWN_USAGE: &str = "\nlbctl's own commands:\n  \
    lbctl explain -t|-u CLIENT:PORT VIP:PORT [--json]\n      \
    where that flow went or would go, and why: the service it matches, its connection entry and \
    persistence template, or the real server the scheduler would pick now (IPv6 as [ADDR]:PORT)\n";

pub fn command() -> Command {
    let mut command = Command::new("lbctl")
        .about("lbd's tables with ipvsadm's commands, letters and output")
        .long_about(
            "lbctl shows and changes the tables of lbd, the XDP load balancer, with ipvsadm's commands, \
             options and output formats, so an LVS operator's habits and scripts carry over. It talks to \
             lbd's control socket; the config file is never read.",
        )
        .after_long_help(format!("{}{OWN_USAGE}", usage::usage("lbctl")))
        .disable_help_flag(true)
        .disable_version_flag(true);
    for o in usage::options() {
        if o.long == "version" {
            continue;
        }
        let mut arg = Arg::new(o.long.clone()).long(o.long.clone()).help(o.help).help_heading(o.group);
        if let Some((&first, rest)) = o.short.split_first() {
            arg = arg.short(first).short_aliases(rest.iter().copied());
        }
        arg = match o.value {
            Some(value) => arg.value_name(value).action(ArgAction::Set),
            None => arg.action(ArgAction::SetTrue),
        };
        command = command.arg(arg);
    }
    for (long, value, help) in OWN_OPTIONS {
        let arg = Arg::new(long).long(long).help(help).help_heading("lbctl's own options");
        let arg = match value {
            Some(value) => arg.value_name(value).action(ArgAction::Set),
            None => arg.action(ArgAction::SetTrue),
        };
        command = command.arg(arg);
    }
    command.subcommand(
        Command::new("explain")
            .about("where a flow went or would go, and why (service, connection entry, template, scheduler)")
            .arg(Arg::new("tcp-service").short('t').value_names(["CLIENT:PORT", "VIP:PORT"]).num_args(2))
            .arg(Arg::new("udp-service").short('u').value_names(["CLIENT:PORT", "VIP:PORT"]).num_args(2)),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        super::command().debug_assert();
    }

    #[test]
    fn the_help_lists_the_connection_filters() {
        let help = super::own_usage();
        assert!(help.starts_with("lbctl's own options:\n"), "{help}");
        for line in [
            "  --vip ADDR[:PORT]                   -c: only the entries of this virtual address (and port); IPv6 in brackets",
            "  --json                              listings as JSON, for scripts (-L, -L -c, --counters, --vrrp)",
        ] {
            assert!(help.lines().any(|l| l == line), "no {line:?} in\n{help}");
        }
    }
}
