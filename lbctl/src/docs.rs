//! lbctl's man page and shell completions (`lbctl --docs DIR`, for the
//! package): its command line as a clap definition, made from ipvsadm's
//! help text (`lb_ipvsadm::usage::options`) and lbctl's own options.

use clap::{Arg, ArgAction, Command};
use lb_ipvsadm::usage;

/// lbctl's own options, besides ipvsadm's: (long, value, help).
pub const OWN_OPTIONS: [(&str, Option<&str>, &str); 5] = [
    ("json", None, "listings as JSON, for scripts (-L, -L -c, --counters, --vrrp)"),
    ("counters", None, "the datapath's per-reason packet counters, and connection sync's sync_*"),
    ("vrrp", None, "the VRRP instances: state, priority, master, adverts"),
    ("socket", Some("PATH"), "lbd's control socket (or LBCTL_SOCKET; default /run/lb/lbd.sock)"),
    ("version", None, "lbctl's version and commit (also -v)"),
];

pub fn command() -> Command {
    let mut command = Command::new("lbctl")
        .about("lbd's tables with ipvsadm's commands, letters and output")
        .long_about(
            "lbctl shows and changes the tables of lbd, the XDP load balancer, with ipvsadm's commands, \
             options and output formats, so an LVS operator's habits and scripts carry over. It talks to \
             lbd's control socket; the config file is never read.",
        )
        .after_long_help(usage::usage("lbctl"))
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
    command
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        super::command().debug_assert();
    }
}
