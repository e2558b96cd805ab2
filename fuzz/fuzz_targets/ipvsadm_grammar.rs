//! ipvsadm's grammar as lbctl parses it: the input split at NUL bytes is
//! an argument vector (what an operator's script hands `lbctl`), and the
//! same words on one line, or several lines, are `-R` input.
//!
//! Beyond "no panic": a command parsed gives its canonical arguments
//! (`to_args`, what `-S` writes), which parse back to the same command; a
//! refusal says something, with ipvsadm's exit status (2 or 255), and a
//! refused `-R` line is a line of the input.

#![no_main]

use lb_ipvsadm::{
    command::Command,
    error::{EXIT_OPTION, EXIT_USAGE},
    grammar::{parse, parse_restore},
    names::Names,
};
use libfuzzer_sys::fuzz_target;

/// Host and port names as the grammar tests' reference machine has them.
fn names() -> Names {
    Names::default()
        .with_services("http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\ntproxy 8081/tcp\n")
        .with_hosts("10.200.1.100 vip.example vip\n10.200.1.10 rs1\n")
}

/// No allocation above 1 MiB (see `lb_fuzz::Bounded`).
#[global_allocator]
static ALLOC: lb_fuzz::Bounded = lb_fuzz::Bounded::mib(1);

fn round_trip(command: &Command, names: &Names) {
    let args = command.to_args();
    assert_eq!(parse(&args, names).as_ref(), Ok(command), "{args:?}");
    assert_eq!(command.to_string(), args.join(" "));
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let names = names();
    let args: Vec<&str> = text.split('\0').collect();
    match parse(&args, &names) {
        Ok(command) => round_trip(&command, &names),
        Err(e) => {
            assert!(!e.message.is_empty(), "{args:?}");
            assert!([EXIT_USAGE, EXIT_OPTION].contains(&e.exit_code), "{args:?}: {e:?}");
        }
    }
    let restore = text.replace('\0', " ");
    match parse_restore(&restore, &names) {
        Ok(commands) => commands.iter().for_each(|c| round_trip(c, &names)),
        Err(e) => {
            assert!(!e.message.is_empty());
            assert!((1..=restore.lines().count()).contains(&e.line), "line {} of {restore:?}", e.line);
        }
    }
});
