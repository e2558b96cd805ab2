//! ipvsadm 1.31's command line, parsed into typed [`Command`]s, so that
//! operators' scripts run unchanged with `lbctl` in place of `ipvsadm`.
//!
//! The grammar, the checks and the error messages follow ipvsadm.c (1.31,
//! built with popt) step by step, in its order, so that a command ipvsadm
//! rejects is rejected here with the same words, and the first error found is
//! the one ipvsadm would print:
//!
//! 1. popt reads the options left to right. Short options may be clustered
//!    (`-Ln`, `-At VIP:80`, `-w3`, `-w=3`); long ones take `--opt=value` or
//!    `--opt value`; a required value is the next word even when it starts
//!    with `-`; the optional value of `-p` is the next word unless that starts
//!    with `-`; words that are not options are kept aside ("leftovers"); `--`
//!    ends the options. Long names must be spelled out (no abbreviations);
//!    a flag given a value (`--stats=1`, `-n=1`) is refused (popt 1.18).
//! 2. The *first* option must be the command (`-A`, `-a`, `-L`, `--set`,
//!    ...). Otherwise ipvsadm only prints "Try `ipvsadm -h' or 'ipvsadm
//!    --help' for more information." and exits 255. `-h` and `-v` there end
//!    the parsing at once, whatever follows.
//! 3. Every further option is checked as it is read (address syntax, number
//!    ranges, a second use of an option, a second command); the first failure
//!    ends the parsing.
//! 4. `--set` takes three leftovers; any other leftover is an "unexpected
//!    argument".
//! 5. `-b` flags are checked against the scheduler named by `-s` (wlc when
//!    none), whatever their order.
//! 6. ipvsadm's table of which options each command needs, allows or
//!    forbids is checked, in the table's column order.
//! 7. The per-command checks: zero port without persistence, address
//!    families, tunnel options, list option conflicts.
//!
//! Steps 1 to 5 are `read`'s, 6 is `table`'s, 7 `checks`'; `build`
//! then makes the typed command.
//!
//! Exit statuses, as ipvsadm's: [`EXIT_USAGE`](crate::error::EXIT_USAGE) (2) for what ipvsadm reports
//! through its `fail(2, ...)`; [`EXIT_OPTION`](crate::error::EXIT_OPTION) (255) for popt's own errors
//! ("--foo: unknown option", "-t: missing argument") and for the try-help
//! line. See [`KernelError`](crate::error::KernelError) for the errors ipvsadm only learns from the
//! kernel, which the controller produces.
//!
//! What ipvsadm accepts but this load balancer does not have is rejected
//! after all of ipvsadm's own checks passed, with [`ErrorKind::Unsupported`](crate::error::ErrorKind::Unsupported)
//! and status 2: SCTP services, persistence engines (`--pe`), one-packet
//! scheduling (`-o`), and the gue and gre tunnel types. An unknown
//! scheduler, which ipvsadm leaves to the kernel, is rejected here with the
//! kernel's wording and ipvsadm's status for kernel errors (255). Parsed but
//! left for the caller to refuse: firewall-mark services (`-f`, `-6`), IPv6
//! real servers by NAT or tunnel, servers of the other family, and the sync
//! daemons (see [`Command::unsupported_reason`]).
//!
//! Other deliberate differences from ipvsadm:
//! - Host names are looked up in a [`Names`] table (`/etc/hosts` syntax), not
//!   in DNS; port names in `/etc/services` syntax, as `getservbyname` does.
//! - `-E` without `-s` gives `scheduler: None`. ipvsadm 1.31 sends wlc then
//!   (it fills in the default for `-E` as for `-A`); the controller decides
//!   (see [`ServiceArgs::scheduler`](crate::command::ServiceArgs::scheduler)).
//! - `-R` input: a word starting with `#` starts a comment to the end of the
//!   line (ipvsadm 1.31 would pass it on as an argument and stop with the
//!   try-help line). Words are otherwise split at blanks, tabs and carriage
//!   returns, without quoting, and the word `ipvsadm` is dropped, as ipvsadm
//!   does. [`parse_restore`] stops at the first bad line; ipvsadm goes on
//!   after a popt error there (see [`RestoreError`]).
//! - A `-b` value made only of commas is rejected (ipvsadm crashes on it).
//!
//! Use: `lbctl` parses its arguments with [`parse`] (with [`Names::system`]),
//! prints [`ParseError::message`] and exits with [`ParseError::exit_code`];
//! prints [`usage`](crate::usage::usage) for [`Command::Help`]; for [`Command::Restore`] reads
//! stdin and parses it with [`parse_restore`].
//!
//! Friendly names: when the first argument is one of [`FRIENDLY_COMMANDS`]
//! it stands for the ipvsadm options shown there, and the other arguments
//! follow (`lbctl stats --exact`, `lbctl list -t VIP:80`). No ipvsadm command
//! line starts with a word that is not an option, so these never change the
//! meaning of an ipvsadm command line.

mod build;
mod checks;
mod read;
mod table;
#[cfg(test)]
mod tests;

use crate::command::{Command, List};
use crate::error::{ParseError, RestoreError};
use crate::names::Names;

/// `-p` without a value: libipvs's IPVS_SVC_PERSISTENT_TIMEOUT, 6 minutes.
/// (300 is often quoted, as in ipvsadm's manual page; ipvsadm 1.31 sends 360.)
pub const DEFAULT_PERSISTENCE_TIMEOUT: u32 = 6 * 60;
/// Largest timeout for `-p` and `--set`: 31 days.
pub const MAX_TIMEOUT: u32 = 86400 * 31;
/// Weight of a real server added without `-w` (and of one edited without it).
pub const DEFAULT_WEIGHT: u32 = 1;
/// Multicast interface of `--start-daemon` without `--mcast-interface`.
pub const DEFAULT_MCAST_INTERFACE: &str = "eth0";

/// lbctl's own words for common listings and actions, and the ipvsadm
/// options each stands for. The other arguments follow; a `-n`/`--numeric`
/// among them is dropped where the word already implies it.
pub const FRIENDLY_COMMANDS: [(&str, &[&str]); 8] = [
    ("list", &["-L", "-n"]),
    ("stats", &["-L", "-n", "--stats"]),
    ("rate", &["-L", "-n", "--rate"]),
    ("connections", &["-L", "-n", "-c"]),
    ("save", &["-S", "-n"]),
    ("clear", &["-C"]),
    ("zero", &["-Z"]),
    ("timeouts", &["-L", "--timeout"]),
];

/// Parses `args` (without the program name) as `lbctl` would: friendly
/// names first, then ipvsadm's grammar. Error messages name the program
/// `lbctl`.
pub fn parse<S: AsRef<str>>(args: &[S], names: &Names) -> Result<Command, ParseError> {
    parse_as("lbctl", args, names)
}

/// [`parse`] with the program name for the try-help line.
pub fn parse_as<S: AsRef<str>>(program: &str, args: &[S], names: &Names) -> Result<Command, ParseError> {
    let args = expand_friendly(args);
    if args.is_empty() {
        // ipvsadm with no arguments lists the table.
        return Ok(Command::List(List::all()));
    }
    process(program, &args, names, false)
}

/// The arguments with a leading friendly name replaced by its ipvsadm
/// options (see [`FRIENDLY_COMMANDS`]); other arguments unchanged.
pub fn expand_friendly<S: AsRef<str>>(args: &[S]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    let Some(first) = out.first() else { return out };
    let Some((_, options)) = FRIENDLY_COMMANDS.iter().find(|(name, _)| name == first) else { return out };
    let numeric = options.contains(&"-n");
    let rest = out.split_off(1);
    let mut expanded: Vec<String> = options.iter().map(|s| s.to_string()).collect();
    expanded.extend(rest.into_iter().filter(|a| !(numeric && (a == "-n" || a == "--numeric"))));
    expanded
}

/// Parses the rules `-R` reads from stdin (what `-S` writes): one command
/// per line, split into words at blanks; blank and comment lines are
/// skipped. Any command but `-R` may appear, as in ipvsadm. Stops at the
/// first bad line.
pub fn parse_restore(text: &str, names: &Names) -> Result<Vec<Command>, RestoreError> {
    let mut commands = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_restore_line("lbctl", line, names) {
            None => {}
            Some(Ok(c)) => commands.push(c),
            Some(Err(e)) => return Err(RestoreError { line: i + 1, message: e.message, exit_code: e.exit_code }),
        }
    }
    Ok(commands)
}

/// One line of `-R` input: `None` for a line without words.
pub fn parse_restore_line(program: &str, line: &str, names: &Names) -> Option<Result<Command, ParseError>> {
    let words = split_restore_line(line);
    if words.is_empty() {
        return None;
    }
    Some(process(program, &words, names, true))
}

/// The words of a `-R` line as ipvsadm's reader splits it: at blanks, tabs
/// and carriage returns, no quoting, the word `ipvsadm` dropped; here also
/// everything from a word starting with `#` on.
pub fn split_restore_line(line: &str) -> Vec<String> {
    line.split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
        .take_while(|w| !w.starts_with('#'))
        .filter(|w| *w != "ipvsadm")
        .map(str::to_owned)
        .collect()
}

/// ipvsadm's process_options for one command line (`argv` without the
/// program name, not empty), in its four steps.
fn process(program: &str, argv: &[String], names: &Names, reading_stdin: bool) -> Result<Command, ParseError> {
    let mut entry = match read::read(program, argv, names)? {
        read::Read::Entry(entry) => entry,
        read::Read::Help => return Ok(Command::Help),
        read::Read::Version => return Ok(Command::Version),
    };
    table::generic_opt_check(&entry)?;
    checks::check(&mut entry, program, reading_stdin)?;
    build::build(&entry)
}
