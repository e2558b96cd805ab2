//! Command lines ipvsadm refuses, or that this load balancer refuses after
//! ipvsadm's checks, with their words and statuses.

use super::*;

#[test]
fn unknown_options_and_misplaced_commands() {
    let try_help = ("Try `lbctl -h' or 'lbctl --help' for more information.".to_owned(), EXIT_OPTION);
    // The first option must be a command.
    assert_eq!(fails("--bogus"), try_help);
    assert_eq!(fails("-Q"), try_help);
    assert_eq!(fails("-t 10.0.0.1:80 -A"), try_help);
    assert_eq!(fails("-nL"), try_help);
    assert_eq!(fails("10.0.0.1"), try_help);
    // After it, popt names the bad word.
    assert_eq!(fails("-A -t 10.0.0.1:80 --bogus"), ("--bogus: unknown option".into(), 255));
    assert_eq!(fails("-L -q"), ("-q: unknown option".into(), 255));
    assert_eq!(fails("-Lnq"), ("-Lnq: unknown option".into(), 255));
    assert_eq!(fails("-L --numer"), ("--numer: unknown option".into(), 255));
    assert_eq!(fails("-L --numeric=yes"), ("--numeric=yes: option does not take an argument".into(), 255));
    assert_eq!(fails("-A -t"), ("-t: missing argument".into(), 255));
    assert_eq!(fails("-a -t 10.0.0.1:80 -r"), ("-r: missing argument".into(), 255));
    // A second command.
    assert_eq!(fails("-A -t 10.0.0.1:80 -D"), usage_error("invalid option `-D'"));
    assert_eq!(fails("-LA"), usage_error("invalid option `-LA'"));
    assert_eq!(fails("-L --set 1 2 3"), usage_error("invalid option `--set'"));
    // Leftovers.
    assert_eq!(fails("-A -t 10.0.0.1:80 foo"), usage_error("unexpected argument foo"));
    assert_eq!(fails("-L -- -n"), usage_error("unexpected argument -n"));
    assert_eq!(fails("-L -"), usage_error("unexpected argument -"));
    // Errors come in the order ipvsadm meets them.
    assert_eq!(
        fails("-A -t 10.0.0.300:80 -w 70000"),
        usage_error("illegal virtual server address[:port] specified")
    );
    assert_eq!(fails("-A -w 70000 -t 10.0.0.300:80"), usage_error("illegal weight specified"));
    assert_eq!(fails("-A -t 10.0.0.1:80 -w 3 --bogus"), ("--bogus: unknown option".into(), 255));
}

#[test]
fn missing_and_illegal_options() {
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -w 3"),
        usage_error("You need to supply the 'real-server' option for the 'add-server' command")
    );
    assert_eq!(
        fails("-d -t 10.0.0.1:80"),
        usage_error("You need to supply the 'real-server' option for the 'delete-server' command")
    );
    assert_eq!(
        fails("-a -r 10.0.0.2"),
        usage_error("You need to supply the 'service-address' option for the 'add-server' command")
    );
    assert_eq!(
        fails("-A -s rr"),
        usage_error("You need to supply the 'service-address' option for the 'add-service' command")
    );
    // Checked in the table's column order, not the command line's.
    assert_eq!(
        fails("-A -t 10.0.0.1:80 -w 3 -n"),
        usage_error("Illegal 'numeric' option with the 'add-service' command")
    );
    assert_eq!(
        fails("-A -t 10.0.0.1:80 -w 3"),
        usage_error("Illegal 'weight' option with the 'add-service' command")
    );
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -s rr"),
        usage_error("Illegal 'scheduler' option with the 'add-server' command")
    );
    assert_eq!(
        fails("-d -t 10.0.0.1:80 -r 10.0.0.2 -g"),
        usage_error("Illegal 'forwarding-method' option with the 'delete-server' command")
    );
    assert_eq!(
        fails("-A -t 10.0.0.1:80 -t 10.0.0.1:81"),
        usage_error("multiple 'service-address' options specified")
    );
    assert_eq!(
        fails("-A -t 10.0.0.1:80 -u 10.0.0.1:81"),
        usage_error("multiple 'service-address' options specified")
    );
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -g -m"),
        usage_error("multiple 'forwarding-method' options specified")
    );
    assert_eq!(fails("-A -t 10.0.0.1:80 -s rr -s wrr"), usage_error("multiple 'scheduler' options specified"));
}

#[test]
fn unknown_scheduler_is_refused_with_the_kernels_words() {
    let e = err("-A -t 10.0.0.1:80 -s bogus");
    assert_eq!(
        (e.message.as_str(), e.exit_code, e.kind),
        ("Scheduler or persistence engine not found", 255, ErrorKind::Kernel)
    );
    assert_eq!(err("-E -t 10.0.0.1:80 -s RR").kind, ErrorKind::Kernel);
    // ipvsadm's own checks come first.
    assert_eq!(fails("-A -t 10.0.0.1:0 -s bogus"), usage_error("Zero port specified for non-persistent service"));
}

#[test]
fn nat_is_parsed_for_the_caller_to_refuse() {
    let c = ok("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m -w 2");
    let Command::AddServer(config) = &c else { panic!("{c:?}") };
    assert_eq!(config.forwarding, Forwarding::Nat);
    assert_eq!(config.server, sock("10.0.0.2", 8080));
    assert_round_trip(&c);
}

#[test]
fn tunnels() {
    let tun = Command::AddServer(server(tcp("10.0.0.1", 80), "10.0.0.2", 80, Forwarding::Tun, 1));
    assert_eq!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 -i"), tun);
    assert_eq!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 --ipip --tun-type ipip"), tun);
    assert_eq!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 --tun-type=ipip -i"), tun);
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 --tun-type ipip"),
        usage_error("Tunnel options conflict with forward method")
    );
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -g --tun-type ipip"),
        usage_error("Tunnel options conflict with forward method")
    );
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type vxlan"),
        usage_error("illegal tunnel type specified")
    );
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type ipip --tun-port 6080"),
        usage_error("Illegal 'tun-port' option with the 'ipip' tunnel type")
    );
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue"),
        usage_error("You need to supply the 'tun-port' option for the 'gue' tunnel type")
    );
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 6080 --tun-csum --tun-nocsum"),
        usage_error("The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel type")
    );
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-remcsum"),
        usage_error("Illegal 'tun-remcsum' option with the 'gre' tunnel type")
    );
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 0"),
        usage_error("illegal tunnel port specified")
    );
    // Well-formed gue and gre: refused as unsupported.
    let e = err("-a -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gue --tun-port 6080");
    assert_eq!(
        (e.message.as_str(), e.kind),
        ("tunnel type 'gue' is not supported: tunnels are ipip", ErrorKind::Unsupported)
    );
    assert_eq!(
        err("-e -t 10.0.0.1:80 -r 10.0.0.2 -i --tun-type gre --tun-csum").message,
        "tunnel type 'gre' is not supported: tunnels are ipip"
    );
    assert_eq!(fails("-L --tun-type ipip"), usage_error("Illegal 'tun-type' option with the 'list' command"));
}

#[test]
fn unsupported_features() {
    let unsupported = |line: &str| {
        let e = err(line);
        assert_eq!((e.kind, e.exit_code), (ErrorKind::Unsupported, 2), "{line}");
        e.message
    };
    // Firewall-mark services are parsed: lbctl and lbd refuse them
    // (Command::unsupported_reason, see firewall_mark_services).
    assert_eq!(unsupported("-A --sctp-service 10.0.0.1:80"), "SCTP services are not supported");
    assert_eq!(unsupported("-A -t 10.0.0.1:80 -p --pe sip"), "persistence engines (--pe) are not supported");
    assert_eq!(unsupported("-A -u 10.0.0.1:53 -o"), "one-packet scheduling (-o, --ops) is not supported");
    // ipvsadm's checks still come first.
    assert_eq!(fails("-A -f 0"), usage_error("invalid fwmark value `0' specified"));
    assert_eq!(fails("-A -f 4294967296"), usage_error("invalid fwmark value `4294967296' specified"));
    assert_eq!(fails("-A -t 10.0.0.1:80 -6"), usage_error("-6 used before -f\n"));
    assert_eq!(
        fails("-A -t 10.0.0.1:80 --ops"),
        usage_error("One-Packet Scheduling is only for UDP virtual services")
    );
    assert_eq!(
        fails("-a -f 1 -6 -r 10.0.0.2 -g"),
        usage_error("Different address family is allowed only for tunneling servers")
    );
    assert_eq!(fails("-A -f 1 -f 2"), usage_error("multiple 'service-address' options specified"));
}
