//! The grammar's cases: ipvsadm's own output read back, each command and
//! option, addresses, listings; refusals in [`refusals`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb_common::{Forwarding, Protocol, Scheduler};

use super::*;
use crate::command::*;
use crate::error::*;
use crate::format::ListOptions;
use crate::snapshot::Timeouts;

mod refusals;

const S_N: &str = include_str!("../../../tests/fixtures/ipvsadm/S-n.txt");
const S: &str = include_str!("../../../tests/fixtures/ipvsadm/S.txt");

/// The reference machine's /etc/services entries for the named ports
/// (Debian netbase), so the tests do not depend on this host's.
const REFERENCE_SERVICES: &str = "\
domain          53/tcp                          # Domain Name Server
domain          53/udp
http            80/tcp          www             # WorldWideWeb HTTP
https           443/tcp                         # http protocol over TLS/SSL
https           443/udp                         # HTTP/3
tproxy          8081/tcp                        # Transparent Proxy
";

const VIP: &str = "10.200.1.100";

fn names() -> Names {
    Names::default().with_services(REFERENCE_SERVICES).with_hosts("10.200.1.100 vip.example vip\n")
}

fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn ok(line: &str) -> Command {
    parse(&words(line), &names()).unwrap_or_else(|e| panic!("{line:?}: {e:?}"))
}

fn err(line: &str) -> ParseError {
    match parse(&words(line), &names()) {
        Ok(c) => panic!("{line:?} parsed as {c:?}"),
        Err(e) => e,
    }
}

/// The error's message and status.
fn fails(line: &str) -> (String, i32) {
    let e = err(line);
    (e.message, e.exit_code)
}

fn usage_error(message: &str) -> (String, i32) {
    (message.to_owned(), EXIT_USAGE)
}

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn address(protocol: Protocol, addr: IpAddr, port: u16) -> VirtualService {
    VirtualService::Address(ServiceAddress { protocol, addr, port })
}

fn tcp(addr: &str, port: u16) -> VirtualService {
    address(Protocol::Tcp, v4(addr), port)
}

fn udp(addr: &str, port: u16) -> VirtualService {
    address(Protocol::Udp, v4(addr), port)
}

fn fwmark(mark: u32, family: Family) -> VirtualService {
    VirtualService::Fwmark(FwmarkService { mark, family })
}

fn sock(addr: &str, port: u16) -> SocketAddr {
    SocketAddr::new(v4(addr), port)
}

fn service(svc: VirtualService, scheduler: Option<Scheduler>) -> ServiceArgs {
    ServiceArgs {
        service: svc,
        scheduler,
        persistence_timeout: None,
        netmask: Netmask::V4(Ipv4Addr::BROADCAST),
        sched_flags: SchedFlags::default(),
    }
}

fn server(svc: VirtualService, addr: &str, port: u16, forwarding: Forwarding, weight: u32) -> ServerArgs {
    ServerArgs {
        service: svc,
        server: sock(addr, port),
        forwarding,
        weight,
        upper_threshold: 0,
        lower_threshold: 0,
    }
}

fn assert_round_trip(c: &Command) {
    let args = c.to_args();
    assert_eq!(parse(&args, &names()).as_ref(), Ok(c), "{args:?}");
}

fn is_fwmark_rule(line: &str) -> bool {
    line.starts_with("-A -f ") || line.starts_with("-a -f ")
}

const S_N_V6: &str = include_str!("../../../tests/reference-ipv6/S-n.txt");
const S_V6: &str = include_str!("../../../tests/reference-ipv6/S.txt");
const COMMANDS_V6: &str = include_str!("../../../tests/reference-ipv6/commands.sh");

/// The capture VM's /etc/services entries the IPv6 reference names.
const CAPTURE_SERVICES: &str = "domain 53/tcp\ndomain 53/udp\nhttp 80/tcp www\nhttps 443/tcp\nhttps 443/udp\n\
    mdns 5353/udp\nhttp-alt 8080/tcp webcache\n";

// --- ipvsadm -S output -------------------------------------------------

/// Every rule `ipvsadm -S -n` wrote parses, and is written back the same
/// (IPv4, and IPv6 with firewall-mark services); lbd takes the
/// firewall-mark ones (all by -g, or -i for IPv4).
#[test]
fn every_numeric_save_line_parses_and_is_written_back() {
    for (reference, count) in [(S_N, 69), (S_N_V6, 29)] {
        let mut rules = 0;
        for line in reference.lines() {
            let c = ok(line);
            assert_eq!(c.to_args().join(" "), line);
            assert_eq!(c.to_string(), line);
            assert_round_trip(&c);
            if is_fwmark_rule(line) {
                // IPv6 included: by direct routing or tunnelling.
                assert_eq!(c.unsupported_reason(), None, "{line}");
            }
            rules += 1;
        }
        assert_eq!(rules, count);
    }
}

/// `ipvsadm -S` (port names) gives the same commands as `-S -n`.
#[test]
fn every_named_save_line_parses_like_its_numeric_twin() {
    let v6_names = Names::default().with_services(CAPTURE_SERVICES);
    for (named, numeric, names) in [(S, S_N, names()), (S_V6, S_N_V6, v6_names)] {
        assert_eq!(named.lines().count(), numeric.lines().count());
        for (named, numeric) in named.lines().zip(numeric.lines()) {
            let c = parse(&words(named), &names).unwrap_or_else(|e| panic!("{named}: {e:?}"));
            assert_eq!(c, ok(numeric), "{named}");
            assert_eq!(c.to_string(), numeric);
        }
    }
}

/// The commands that made the IPv6 reference table parse into what
/// ipvsadm saved of it (ports as ipvsadm sets them; our -x/-y aside).
#[test]
fn the_ipv6_references_commands_give_its_saved_rules() {
    let saved: Vec<&str> = S_N_V6.lines().collect();
    let mut given = 0;
    for line in COMMANDS_V6.lines().filter_map(|l| l.strip_prefix("ipvsadm ")) {
        let c = ok(line);
        if c == Command::Clear {
            continue;
        }
        let rule = c.to_string().replace(" -x 100 -y 50", "");
        assert!(saved.contains(&rule.as_str()), "{line} gave {rule}");
        given += 1;
    }
    assert_eq!(given, saved.len());
}

#[test]
fn firewall_mark_services() {
    let v4 = fwmark(1, Family::Ipv4);
    let v6 = fwmark(2, Family::Ipv6);
    assert_eq!(
        ok("-A -f 1 -s wlc -p 300"),
        Command::AddService(ServiceArgs { persistence_timeout: Some(300), ..service(v4, Some(Scheduler::Wlc)) })
    );
    assert_eq!(
        ok("-A -f 2 -6 -s wrr -p 120 -M 64"),
        Command::AddService(ServiceArgs {
            persistence_timeout: Some(120),
            netmask: Netmask::V6(64),
            ..service(v6, Some(Scheduler::Wrr))
        })
    );
    // Without -M an IPv6 one has the /128 host mask.
    assert!(matches!(ok("-E -f 2 -6 -p"), Command::EditService(ServiceArgs { netmask: Netmask::V6(128), .. })));
    assert_eq!(ok("-D -f 4294967295"), Command::DeleteService(fwmark(u32::MAX, Family::Ipv4)));
    // A real server's port is as given (0 by default), whatever the forwarding.
    assert_eq!(ok("-a -f 1 -r 10.0.0.10 -g -w 2"), Command::AddServer(server(v4, "10.0.0.10", 0, Forwarding::Dr, 2)));
    assert_eq!(ok("-e -f 1 -r 10.0.0.10:80 -g"), Command::EditServer(server(v4, "10.0.0.10", 80, Forwarding::Dr, 1)));
    let v6_server = ok("-a -f 2 -6 -r [2001:db8::11]:0 -i -w 1");
    assert!(
        matches!(&v6_server, Command::AddServer(ServerArgs { service, server, .. })
            if *service == v6 && *server == "[2001:db8::11]:0".parse::<SocketAddr>().unwrap()),
        "{v6_server:?}"
    );
    assert_eq!(
        ok("-d -f 2 -6 -r 2001:db8::10"),
        Command::DeleteServer { service: v6, server: "[2001:db8::10]:0".parse().unwrap() }
    );
    assert_eq!(ok("-Z -f 1"), Command::Zero(Some(v4)));
    let one = List { target: ListTarget::Service(v6), ..List::all() };
    assert_eq!(ok("-l -n -f 2 -6"), Command::List(List { numeric: true, ..one }));
    assert_eq!(ok("-L -f 2 -6"), Command::List(one));
    for line in ["-A -f 2 -6 -s rr", "-a -f 2 -6 -r [2001:db8::10]:0 -g -w 1", "-D -f 1", "-Z -f 3", "-L -f 2 -6 -n"] {
        let c = ok(line);
        assert_eq!(c.to_string(), line);
        assert_round_trip(&c);
        assert_eq!(c.unsupported_reason(), None, "{line}");
    }
    // Masquerading would have to name the port each packet keeps.
    assert_eq!(ok("-a -f 1 -r 10.0.0.10 -m").unsupported_reason(), Some(FWMARK_DR_TUN_ONLY));
    // ipvsadm's own checks: -6 after -f, the server in the service's family.
    assert_eq!(
        fails("-a -f 2 -r 2001:db8::10 -g"),
        usage_error("Different address family is allowed only for tunneling servers")
    );
}

#[test]
fn restore_reads_save_output() {
    let commands = parse_restore(S, &names()).unwrap();
    assert_eq!(commands.len(), 69);
    let numeric: Vec<Command> = S_N.lines().map(ok).collect();
    assert_eq!(commands, numeric);
    let fwmark_rules =
        commands.iter().filter(|c| c.virtual_service().is_some_and(|s| s.fwmark().is_some())).count();
    assert_eq!(fwmark_rules, S_N.lines().filter(|l| is_fwmark_rule(l)).count());
}

#[test]
fn restore_skips_blank_and_comment_lines_and_the_word_ipvsadm() {
    let text = "\n\
        # saved by hand\n\
        \t  \r\n\
        ipvsadm -A -t 10.0.0.1:80 -s rr   # the web\n\
        -a\t-t 10.0.0.1:80 -r 10.0.0.2 -g -w 2\r\n\
        -C\n";
    let commands = parse_restore(text, &names()).unwrap();
    assert_eq!(
        commands,
        vec![
            Command::AddService(service(tcp("10.0.0.1", 80), Some(Scheduler::Rr))),
            Command::AddServer(server(tcp("10.0.0.1", 80), "10.0.0.2", 80, Forwarding::Dr, 2)),
            Command::Clear,
        ]
    );
    assert_eq!(split_restore_line("ipvsadm -L # -n"), vec!["-L"]);
    assert_eq!(parse_restore_line("ipvsadm", "   ", &names()), None);
}

#[test]
fn restore_reports_the_line_and_refuses_a_nested_restore() {
    let text = "-A -t 10.0.0.1:80\n\n-a -t 10.0.0.1:80 -r 10.0.0.2 -w 70000\n";
    assert_eq!(
        parse_restore(text, &names()),
        Err(RestoreError { line: 3, message: "illegal weight specified".into(), exit_code: 2 })
    );
    let e = parse_restore("-R\n", &names()).unwrap_err();
    assert_eq!((e.line, e.exit_code), (1, 255));
    assert_eq!(e.message, "Try `lbctl -h' or 'lbctl --help' for more information.");
    // A stray word is not a command.
    assert_eq!(parse_restore("10.0.0.1\n", &names()).unwrap_err().exit_code, 255);
}

// --- the classic director script ----------------------------------------

#[test]
fn classic_director_script() {
    let svc = tcp("192.168.1.100", 80);
    let script = [
        ("-C", Command::Clear),
        ("-A -t 192.168.1.100:80 -s wlc", Command::AddService(service(svc, Some(Scheduler::Wlc)))),
        (
            "-a -t 192.168.1.100:80 -r 192.168.1.11 -g -w 3",
            Command::AddServer(server(svc, "192.168.1.11", 80, Forwarding::Dr, 3)),
        ),
        (
            "-a -t 192.168.1.100:80 -r 192.168.1.12:80 -g -w 2",
            Command::AddServer(server(svc, "192.168.1.12", 80, Forwarding::Dr, 2)),
        ),
        ("-E -t 192.168.1.100:80 -s rr", Command::EditService(service(svc, Some(Scheduler::Rr)))),
        (
            "-e -t 192.168.1.100:80 -r 192.168.1.11 -g -w 5",
            Command::EditServer(server(svc, "192.168.1.11", 80, Forwarding::Dr, 5)),
        ),
        (
            "-d -t 192.168.1.100:80 -r 192.168.1.12",
            Command::DeleteServer { service: svc, server: sock("192.168.1.12", 80) },
        ),
        ("-D -t 192.168.1.100:80", Command::DeleteService(svc)),
    ];
    for (line, expected) in script {
        assert_eq!(ok(line), expected, "{line}");
        assert_round_trip(&expected);
    }
    // The same with long options, in another order.
    assert_eq!(
        ok("--add-server --real-server 192.168.1.11 --weight 3 --gatewaying --tcp-service 192.168.1.100:80"),
        Command::AddServer(server(svc, "192.168.1.11", 80, Forwarding::Dr, 3))
    );
    assert_eq!(
        ok("--add-service --tcp-service=192.168.1.100:http --scheduler=wlc"),
        Command::AddService(service(svc, Some(Scheduler::Wlc)))
    );
}

#[test]
fn defaults_of_add_and_edit() {
    let svc = tcp("10.0.0.1", 80);
    // -A: wlc. -E without -s: none given (ipvsadm would send wlc).
    assert_eq!(ok("-A -t 10.0.0.1:80"), Command::AddService(service(svc, Some(Scheduler::Wlc))));
    let edit = ok("-E -t 10.0.0.1:80 -p");
    let Command::EditService(config) = &edit else { panic!("{edit:?}") };
    assert_eq!(config.scheduler, None);
    assert_eq!(config.ipvsadm_scheduler(), Scheduler::Wlc);
    assert_eq!(config.persistence_timeout, Some(DEFAULT_PERSISTENCE_TIMEOUT));
    assert_round_trip(&edit);
    // -a: direct routing, weight 1, the service's port.
    assert_eq!(
        ok("-a -t 10.0.0.1:80 -r 10.0.0.2"),
        Command::AddServer(server(svc, "10.0.0.2", 80, Forwarding::Dr, 1))
    );
    // An empty scheduler name counts as none.
    assert_eq!(ok("-A -t 10.0.0.1:80 -s="), ok("-A -t 10.0.0.1:80"));
}

#[test]
fn real_server_ports() {
    let svc = tcp("10.0.0.1", 80);
    // Direct routing and tunnelling use the service's port whatever is given.
    assert_eq!(
        ok("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -g"),
        Command::AddServer(server(svc, "10.0.0.2", 80, Forwarding::Dr, 1))
    );
    assert_eq!(
        ok("-e -t 10.0.0.1:80 -r 10.0.0.2:8080 -i"),
        Command::EditServer(server(svc, "10.0.0.2", 80, Forwarding::Tun, 1))
    );
    // NAT keeps it, or takes the service's.
    assert_eq!(
        ok("-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m"),
        Command::AddServer(server(svc, "10.0.0.2", 8080, Forwarding::Nat, 1))
    );
    assert_eq!(
        ok("-a -t 10.0.0.1:80 -r 10.0.0.2 --masquerading"),
        Command::AddServer(server(svc, "10.0.0.2", 80, Forwarding::Nat, 1))
    );
    // ... the service's so far: -r before -t finds port 0.
    assert_eq!(
        ok("-a -r 10.0.0.2 -m -t 10.0.0.1:80"),
        Command::AddServer(server(svc, "10.0.0.2", 0, Forwarding::Nat, 1))
    );
    // ... and no port names before the protocol is known.
    assert_eq!(
        fails("-a -r 10.0.0.2:http -m -t 10.0.0.1:80"),
        usage_error("illegal real server address[:port] specified")
    );
    // -d keeps the port given.
    assert_eq!(
        ok("-d -t 10.0.0.1:80 -r 10.0.0.2:8080"),
        Command::DeleteServer { service: svc, server: sock("10.0.0.2", 8080) }
    );
}

#[test]
fn persistence_and_netmask() {
    let persistent = |line: &str| match ok(line) {
        Command::AddService(c) => (c.persistence_timeout, c.netmask, c.scheduler),
        c => panic!("{c:?}"),
    };
    let host = Netmask::V4(Ipv4Addr::BROADCAST);
    assert_eq!(persistent("-A -t 10.0.0.1:80 -p"), (Some(360), host, Some(Scheduler::Wlc)));
    assert_eq!(persistent("-A -t 10.0.0.1:80 -p 60"), (Some(60), host, Some(Scheduler::Wlc)));
    assert_eq!(persistent("-A -t 10.0.0.1:80 -p60"), (Some(60), host, Some(Scheduler::Wlc)));
    assert_eq!(persistent("-A -t 10.0.0.1:80 --persistent=60"), (Some(60), host, Some(Scheduler::Wlc)));
    assert_eq!(persistent("-A -t 10.0.0.1:80 --persistent 60"), (Some(60), host, Some(Scheduler::Wlc)));
    // The optional value is not taken from a word starting with '-'.
    assert_eq!(persistent("-A -t 10.0.0.1:80 -p -s rr"), (Some(360), host, Some(Scheduler::Rr)));
    assert_eq!(persistent("-A -p -t 10.0.0.1:80"), (Some(360), host, Some(Scheduler::Wlc)));
    let mask = Netmask::V4(Ipv4Addr::new(255, 255, 255, 0));
    assert_eq!(persistent("-A -t 10.0.0.1:80 -p 60 -M 255.255.255.0"), (Some(60), mask, Some(Scheduler::Wlc)));
    // inet_aton reads a bare number as an address.
    assert_eq!(persistent("-A -t 10.0.0.1:80 -p -M 24").1, Netmask::V4(Ipv4Addr::new(0, 0, 0, 24)));
    // Port 0 (every port) needs persistence.
    assert_eq!(persistent("-A -t 10.0.0.1 -p"), (Some(360), host, Some(Scheduler::Wlc)));
    assert_eq!(persistent("-A -t 10.0.0.1:0 -p 10"), (Some(10), host, Some(Scheduler::Wlc)));
    for bad in ["-A -t 10.0.0.1:0", "-A -t 10.0.0.1", "-E -t 10.0.0.1:0 -s rr"] {
        assert_eq!(fails(bad), usage_error("Zero port specified for non-persistent service"), "{bad}");
    }
    assert_eq!(fails("-A -t 10.0.0.1:80 -p 0"), usage_error("invalid timeout value `0' specified"));
    assert_eq!(fails("-A -t 10.0.0.1:80 -p 2678401"), usage_error("invalid timeout value `2678401' specified"));
    assert_eq!(fails("-A -t 10.0.0.1:80 -p 1h"), usage_error("invalid timeout value `1h' specified"));
    assert_eq!(persistent("-A -t 10.0.0.1:80 -p 2678400").0, Some(2_678_400));
    assert_eq!(
        fails("-A -t 10.0.0.1:80 -p -M 255.255.255.256"),
        usage_error("illegal virtual server persistent mask specified")
    );
}

#[test]
fn scheduler_flags() {
    let flags = |line: &str| match ok(line) {
        Command::AddService(c) | Command::EditService(c) => c.sched_flags,
        c => panic!("{c:?}"),
    };
    assert_eq!(flags("-A -t 10.0.0.1:80 -s mh -b mh-port"), SchedFlags(SchedFlags::FLAG_2));
    // Checked against the scheduler, whatever the order.
    assert_eq!(flags("-A -t 10.0.0.1:80 -b mh-fallback -s mh"), SchedFlags(SchedFlags::FLAG_1));
    assert_eq!(flags("-A -t 10.0.0.1:80 -b flag-3,,flag-1"), SchedFlags(5));
    assert_eq!(fails("-A -t 10.0.0.1:80 -s rr -b sh-port"), usage_error("incompatible scheduler flag `sh-port'"));
    // Without -s the flags are checked against wlc, for -E too.
    assert_eq!(fails("-E -t 10.0.0.1:80 -b sh-port"), usage_error("incompatible scheduler flag `sh-port'"));
    assert_eq!(fails("-A -t 10.0.0.1:80 -s sh -b sh-port,bogus"), usage_error("invalid scheduler flag `bogus'"));
    assert_eq!(fails("-A -t 10.0.0.1:80 -s sh -b ,"), usage_error("invalid scheduler flag `,'"));
    // An empty -b is ignored.
    assert_eq!(flags("-A -t 10.0.0.1:80 -b="), SchedFlags(0));
    // Written back by the scheduler's names.
    let c = ok("-A -t 10.0.0.1:80 -s sh -b flag-2,flag-1,flag-3");
    assert_eq!(c.to_string(), "-A -t 10.0.0.1:80 -s sh -b sh-fallback,sh-port,flag-3");
    assert_round_trip(&c);
    assert_eq!(SchedFlags(7).names("rr"), ["flag-1", "flag-2", "flag-3"]);
}

#[test]
fn thresholds_are_only_range_checked() {
    let svc = tcp("10.0.0.1", 80);
    // Lower above upper is the kernel's ERANGE, not a parse error.
    assert_eq!(
        ok("-a -t 10.0.0.1:80 -r 10.0.0.2 -x 10 -y 20"),
        Command::AddServer(ServerArgs {
            upper_threshold: 10,
            lower_threshold: 20,
            ..server(svc, "10.0.0.2", 80, Forwarding::Dr, 1)
        })
    );
    let c = ok("-a -t 10.0.0.1:80 -r 10.0.0.2 --u-threshold 100 --l-threshold=50 -w 0");
    assert_eq!(c.to_string(), "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 0 -x 100 -y 50");
    assert_round_trip(&c);
    assert_eq!(fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -x -1"), usage_error("illegal u_threshold specified"));
    assert_eq!(fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -y 2147483648"), usage_error("illegal l_threshold specified"));
    assert!(matches!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 -y 2147483647"), Command::AddServer(_)));
    assert_eq!(KernelError::OutOfRange.message(), "Numerical result out of range");
}

#[test]
fn weights() {
    let weight = |line: &str| match ok(line) {
        Command::AddServer(c) | Command::EditServer(c) => c.weight,
        c => panic!("{c:?}"),
    };
    assert_eq!(weight("-a -t 10.0.0.1:80 -r 10.0.0.2 -w 65535"), 65535);
    assert_eq!(weight("-a -t 10.0.0.1:80 -r 10.0.0.2 -w0"), 0);
    assert_eq!(weight("-a -t 10.0.0.1:80 -r 10.0.0.2 -w=7"), 7);
    assert_eq!(weight("-a -t 10.0.0.1:80 -r 10.0.0.2 --weight=+8"), 8);
    for bad in ["70000", "65536", "-1", "x", "3x", "0x10", "=", ""] {
        let line = format!("-a -t 10.0.0.1:80 -r 10.0.0.2 --weight={bad}");
        assert_eq!(fails(&line), usage_error("illegal weight specified"), "{line}");
    }
    assert_eq!(fails("-a -t 10.0.0.1:80 -r 10.0.0.2 -w 70000"), usage_error("illegal weight specified"));
}

// --- addresses ----------------------------------------------------------

#[test]
fn malformed_addresses() {
    let bad_vs = usage_error("illegal virtual server address[:port] specified");
    for addr in [
        "10.0.0.300:80",
        "10.0.0.1:99999",
        "10.0.0.1:65536",
        "10.0.0.1:",
        "10.0.0.1:-1",
        "10.0.0.1:nosuchport",
        "80",
        ":80",
        "10.0.0.1.5:80",
        "10..0.1:80",
        "08.0.0.1:80",
        "unknown.host:80",
        "[::1]",
        "[::1]80",
        "[::1:80",
    ] {
        assert_eq!(fails(&format!("-A -t {addr}")), bad_vs, "{addr}");
    }
    // UDP names are looked up for UDP: tproxy is TCP only.
    assert_eq!(fails("-A -u 10.0.0.1:tproxy"), bad_vs);
    assert_eq!(
        fails("-a -t 10.0.0.1:80 -r 10.0.0.256"),
        usage_error("illegal real server address[:port] specified")
    );
}

#[test]
fn address_forms_inet_aton_and_names_accept() {
    let vs = |line: &str| match ok(line) {
        Command::AddService(c) => c.service,
        c => panic!("{c:?}"),
    };
    assert_eq!(vs("-A -t 10.1:80"), tcp("10.0.0.1", 80));
    assert_eq!(vs("-A -t 10.1.2:80"), tcp("10.1.0.2", 80));
    assert_eq!(vs("-A -t 167772161:80"), tcp("10.0.0.1", 80));
    assert_eq!(vs("-A -t 0x0a.0.0.010:80"), tcp("10.0.0.8", 80));
    assert_eq!(vs("-A -t 10.0.0.1:+80"), tcp("10.0.0.1", 80));
    assert_eq!(vs("-A -t vip.example:www"), tcp(VIP, 80));
    assert_eq!(vs("-A -t VIP:http"), tcp(VIP, 80));
    // Port names are case-sensitive, host names not.
    assert_eq!(fails("-A -t vip:HTTP").0, "illegal virtual server address[:port] specified");
}

#[test]
fn ipv6_is_parsed_and_flagged() {
    let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let svc = address(Protocol::Tcp, IpAddr::V6(v6), 80);
    let c = ok("-A -t [2001:db8::1]:80 -s rr -p 60 -M 64");
    assert_eq!(
        c,
        Command::AddService(ServiceArgs {
            persistence_timeout: Some(60),
            netmask: Netmask::V6(64),
            ..service(svc, Some(Scheduler::Rr))
        })
    );
    assert!(svc.is_ipv6());
    assert_eq!(c.unsupported_reason(), None);
    assert_round_trip(&c);
    assert_eq!(fails("-A -t [2001:db8::1]:80 -M 129"), usage_error("illegal ipv6 netmask specified"));
    // A bare IPv6 address has no port.
    assert_eq!(fails("-A -t 2001:db8::1:80").0, "Zero port specified for non-persistent service");
    let real = ok("-a -t [2001:db8::1]:80 -r [2001:db8::2]:80 -m");
    assert_eq!(real.to_string(), "-a -t [2001:db8::1]:80 -r [2001:db8::2]:80 -m -w 1");
    assert_round_trip(&real);
    assert_eq!(real.unsupported_reason(), Some(crate::command::IPV6_DR_TUN_ONLY));
    assert_eq!(ok("-a -t [2001:db8::1]:80 -r [2001:db8::2]:80 -g").unsupported_reason(), None);
    assert_eq!(ok("-a -t [2001:db8::1]:80 -r [2001:db8::2]:80 -i").unsupported_reason(), None);
    assert_eq!(ok("-d -t [2001:db8::1]:80 -r [2001:db8::2]:80").unsupported_reason(), None);
    assert_eq!(
        fails("-a -t [2001:db8::1]:80 -r 10.0.0.2 -g"),
        usage_error("Different address family is allowed only for tunneling servers")
    );
    // Tunnelling may cross families.
    assert_eq!(
        ok("-a -t 10.0.0.1:80 -r [2001:db8::2]:80 -i").unsupported_reason(),
        Some(crate::command::MIXED_FAMILIES_UNSUPPORTED)
    );
    assert_eq!(ok("-a -t 10.0.0.1:80 -r 10.0.0.2 -i").unsupported_reason(), None);
    // A bracketed IPv4 address loses its port, as in ipvsadm.
    assert_eq!(fails("-A -t [10.0.0.1]:80").0, "Zero port specified for non-persistent service");
}

// --- listings -----------------------------------------------------------

#[test]
fn list_variants() {
    let list = |line: &str| match parse(&words(line), &names()) {
        Ok(Command::List(l)) => l,
        other => panic!("{line:?}: {other:?}"),
    };
    let plain = List::all();
    let numeric = List { numeric: true, ..plain };
    assert_eq!(list(""), plain);
    assert_eq!(list("-L"), plain);
    assert_eq!(list("-l"), plain);
    assert_eq!(list("--list"), plain);
    assert_eq!(list("-L --sort"), plain);
    assert_eq!(list("-L -n"), numeric);
    assert_eq!(list("-Ln"), numeric);
    assert_eq!(list("-ln"), numeric);
    assert_eq!(list("--list --numeric"), numeric);
    assert_eq!(list("-L -n --stats"), List { stats: true, ..numeric });
    assert_eq!(list("-L -n --stats --exact"), List { stats: true, exact: true, ..numeric });
    assert_eq!(list("-LnX --stats"), List { stats: true, exact: true, ..numeric });
    assert_eq!(list("-L -n --rate"), List { rate: true, ..numeric });
    assert_eq!(list("-L -n --thresholds"), List { thresholds: true, ..numeric });
    assert_eq!(list("-L -n --persistent-conn"), List { persistent_conn: true, ..numeric });
    assert_eq!(list("-L -n --tun-info"), List { tun_info: true, ..numeric });
    assert_eq!(list("-L -n --nosort"), List { nosort: true, ..numeric });
    assert_eq!(list("-L -n -c"), List { target: ListTarget::Connections, ..numeric });
    assert_eq!(list("-Lnc"), List { target: ListTarget::Connections, ..numeric });
    assert_eq!(list("-L --connection"), List { target: ListTarget::Connections, ..plain });
    assert_eq!(
        list("-L -c --persistent-conn"),
        List { target: ListTarget::Connections, persistent_conn: true, ..plain }
    );
    assert_eq!(list("-L --timeout"), List { target: ListTarget::Timeouts, ..plain });
    assert_eq!(list("-L --daemon"), List { target: ListTarget::Daemon, ..plain });
    assert_eq!(list("-L -n -t 10.0.0.1:80"), List { target: ListTarget::Service(tcp("10.0.0.1", 80)), ..numeric });
    assert_eq!(list("-L -t 10.0.0.1"), List { target: ListTarget::Service(tcp("10.0.0.1", 0)), ..plain });
    // Ignored but legal, as in ipvsadm.
    assert_eq!(list("-L --syncid 3"), plain);

    assert_eq!(
        list("-L -n --stats --exact --nosort").list_options(),
        ListOptions { numeric: true, stats: true, exact: true, sort: false, ..ListOptions::default() }
    );
    assert_eq!(plain.list_options(), ListOptions::default());

    for l in [
        list("-L"),
        list("-Ln --rate"),
        list("-L -c -n"),
        list("-L --daemon"),
        list("-L --timeout"),
        list("-L -t 10.0.0.1:80 --thresholds --nosort --exact"),
        list("-L -n --tun-info --persistent-conn --stats"),
    ] {
        assert_round_trip(&Command::List(l));
    }
}

#[test]
fn list_conflicts() {
    assert_eq!(fails("-L -c --stats"), usage_error("options conflicts in the list command"));
    assert_eq!(fails("-L --timeout --rate"), usage_error("options conflicts in the list command"));
    assert_eq!(fails("-L --daemon --persistent-conn"), usage_error("options conflicts in the list command"));
    assert_eq!(
        fails("-L -c --timeout"),
        usage_error("The option 'timeout' conflicts with the 'connection' option in the 'list' command")
    );
    assert_eq!(
        fails("-L -t 10.0.0.1:80 -c"),
        usage_error("The option 'service-address' conflicts with the 'connection' option in the 'list' command")
    );
    assert_eq!(fails("-L -s rr"), usage_error("Illegal 'scheduler' option with the 'list' command"));
    assert_eq!(fails("-L -n -n"), usage_error("multiple 'numeric' options specified"));
    let fwmark_1 = List { target: ListTarget::Service(fwmark(1, Family::Ipv4)), ..List::all() };
    assert_eq!(ok("-L -f 1"), Command::List(fwmark_1));
}

// --- other commands -------------------------------------------------------

#[test]
fn set_timeouts() {
    assert_eq!(ok("--set 600 60 120"), Command::SetTimeouts(Timeouts { tcp: 600, tcpfin: 60, udp: 120 }));
    assert_eq!(ok("--set 0 0 0"), Command::SetTimeouts(Timeouts { tcp: 0, tcpfin: 0, udp: 0 }));
    assert_round_trip(&ok("--set 900 120 300"));
    assert_eq!(fails("--set 600 60"), usage_error("--set option requires 3 timeout values"));
    assert_eq!(fails("--set"), usage_error("--set option requires 3 timeout values"));
    assert_eq!(fails("--set 600 x 120"), usage_error("invalid timeout value `x' specified"));
    assert_eq!(fails("--set 600 60 2678401"), usage_error("invalid timeout value `2678401' specified"));
    assert_eq!(fails("--set 600 60 120 7"), usage_error("unexpected argument 7"));
    assert_eq!(fails("--set 600 60 120 -n"), usage_error("Illegal 'numeric' option with the 'set' command"));
    // A negative number is an option to popt.
    assert_eq!(fails("--set 600 -1 120"), ("-1: unknown option".to_owned(), 255));
}

#[test]
fn save_zero_clear_restore() {
    assert_eq!(ok("-S"), Command::Save { numeric: false });
    assert_eq!(ok("-S -n"), Command::Save { numeric: true });
    assert_eq!(ok("--save --numeric"), Command::Save { numeric: true });
    assert_eq!(ok("-Sn"), Command::Save { numeric: true });
    assert_eq!(ok("-C"), Command::Clear);
    assert_eq!(ok("--clear"), Command::Clear);
    assert_eq!(ok("-R"), Command::Restore);
    assert_eq!(ok("--restore"), Command::Restore);
    assert_eq!(ok("-Z"), Command::Zero(None));
    assert_eq!(
        ok("--zero -u 10.0.0.1:53"),
        Command::Zero(Some(udp("10.0.0.1", 53)))
    );
    assert_eq!(fails("-C -n"), usage_error("Illegal 'numeric' option with the 'flush' command"));
    assert_eq!(fails("-R -n"), usage_error("Illegal 'numeric' option with the 'restore' command"));
    assert_eq!(fails("-S -c"), usage_error("Illegal 'connection' option with the 'save' command"));
    assert_eq!(fails("-Z -n"), usage_error("Illegal 'numeric' option with the 'zero' command"));
    assert_eq!(
        fails("-D"),
        usage_error("You need to supply the 'service-address' option for the 'delete-service' command")
    );
    assert_eq!(
        fails("-D -t 10.0.0.1:80 -s rr"),
        usage_error("Illegal 'scheduler' option with the 'delete-service' command")
    );
    for c in ["-S", "-S -n", "-C", "-R", "-Z", "-Z -u 10.0.0.1:53", "-D -t 10.0.0.1:80"] {
        assert_round_trip(&ok(c));
    }
}

#[test]
fn help_and_version() {
    for line in ["-h", "--help", "-h --bogus", "-h -A"] {
        assert_eq!(ok(line), Command::Help, "{line}");
    }
    for line in ["-v", "--version", "-v -L"] {
        assert_eq!(ok(line), Command::Version, "{line}");
    }
    // After the command they are just illegal.
    assert_eq!(fails("-L -h"), usage_error("invalid option `-h'"));
    assert_round_trip(&Command::Help);
    assert_round_trip(&Command::Version);
}

#[test]
fn daemons_are_parsed_and_marked_unsupported() {
    let c = ok("--start-daemon master");
    assert_eq!(
        c,
        Command::StartDaemon(DaemonArgs {
            state: DaemonState::Master,
            mcast_interface: "eth0".into(),
            syncid: None,
            sync_maxlen: None,
            mcast_group: None,
            mcast_port: None,
            mcast_ttl: None,
        })
    );
    assert_eq!(c.unsupported_reason(), Some("connection synchronisation daemons are not supported"));
    let full = ok("--start-daemon=backup --mcast-interface eth1 --syncid 7 --sync-maxlen 1472 \
         --mcast-group 224.0.0.81 --mcast-port 8848 --mcast-ttl 1");
    assert_round_trip(&full);
    assert_round_trip(&ok("--start-daemon master --mcast-group ff02::1"));
    assert_eq!(ok("--stop-daemon backup"), Command::StopDaemon { state: DaemonState::Backup, syncid: None });
    assert_round_trip(&ok("--stop-daemon master --syncid 3"));
    assert_eq!(fails("--start-daemon foo"), usage_error("illegal start-daemon parameter specified"));
    assert_eq!(fails("--stop-daemon foo"), usage_error("illegal start_daemon specified"));
    assert_eq!(fails("--start-daemon master --syncid 256"), usage_error("illegal syncid specified"));
    assert_eq!(
        fails("--start-daemon master --mcast-group 10.0.0.1"),
        usage_error("invalid IPv4 mcast-group `10.0.0.1'")
    );
    assert_eq!(fails("--start-daemon master --mcast-group ::1"), usage_error("invalid IPv6 mcast-group `::1'"));
    assert_eq!(fails("--start-daemon master --mcast-port 0"), usage_error("illegal mcast-port specified"));
    assert_eq!(fails("--start-daemon master --mcast-ttl 256"), usage_error("illegal mcast-ttl specified"));
    assert_eq!(fails("--start-daemon master --sync-maxlen 65508"), usage_error("illegal sync-maxlen specified"));
    assert_eq!(
        fails("--stop-daemon master --mcast-interface eth1"),
        usage_error("Illegal 'mcast-interface' option with the 'stop-daemon' command")
    );
    assert_eq!(fails("--start-daemon"), ("Try `lbctl -h' or 'lbctl --help' for more information.".into(), 255));
}

// --- friendly names -------------------------------------------------------

#[test]
fn friendly_names() {
    let numeric = List { numeric: true, ..List::all() };
    assert_eq!(ok("list"), Command::List(numeric));
    assert_eq!(ok("list -n"), Command::List(numeric));
    assert_eq!(ok("list --numeric --rate"), Command::List(List { rate: true, ..numeric }));
    assert_eq!(
        ok("list -t 10.0.0.1:80"),
        Command::List(List { target: ListTarget::Service(tcp("10.0.0.1", 80)), ..numeric })
    );
    assert_eq!(ok("stats"), Command::List(List { stats: true, ..numeric }));
    assert_eq!(ok("stats --exact"), Command::List(List { stats: true, exact: true, ..numeric }));
    assert_eq!(ok("rate"), Command::List(List { rate: true, ..numeric }));
    assert_eq!(ok("connections"), Command::List(List { target: ListTarget::Connections, ..numeric }));
    assert_eq!(ok("save"), Command::Save { numeric: true });
    assert_eq!(ok("clear"), Command::Clear);
    assert_eq!(ok("zero"), Command::Zero(None));
    assert_eq!(ok("zero -t 10.0.0.1:80"), Command::Zero(Some(tcp("10.0.0.1", 80))));
    assert_eq!(ok("timeouts"), Command::List(List { target: ListTarget::Timeouts, ..List::all() }));
    // Only first, and only these words.
    assert_eq!(fails("-L list"), usage_error("unexpected argument list"));
    assert_eq!(fails("lists").1, EXIT_OPTION);
    assert_eq!(expand_friendly(&["stats", "-n", "--exact"]), ["-L", "-n", "--stats", "--exact"]);
    assert_eq!(expand_friendly(&["clear", "-n"]), ["-C", "-n"]);
    assert_eq!(expand_friendly::<&str>(&[]), Vec::<String>::new());
}

#[test]
fn program_name_in_try_help() {
    let e = parse_as("ipvsadm", &["--bogus"], &Names::default()).unwrap_err();
    assert_eq!(e.message, "Try `ipvsadm -h' or 'ipvsadm --help' for more information.");
    assert_eq!(e.kind, ErrorKind::TryHelp);
}

// --- popt ---------------------------------------------------------------

#[test]
fn popt_clusters_and_values() {
    let svc = tcp("10.0.0.1", 80);
    assert_eq!(ok("-At 10.0.0.1:80 -srr"), Command::AddService(service(svc, Some(Scheduler::Rr))));
    assert_eq!(ok("-At10.0.0.1:80 -s=rr"), Command::AddService(service(svc, Some(Scheduler::Rr))));
    assert_eq!(
        ok("-at 10.0.0.1:80 -gr 10.0.0.2 -w2"),
        Command::AddServer(server(svc, "10.0.0.2", 80, Forwarding::Dr, 2))
    );
    // A required value is the next word, even an option.
    assert_eq!(fails("-A -t 10.0.0.1:80 -s -p"), ("Scheduler or persistence engine not found".into(), 255));
    // A flag takes no value.
    assert_eq!(fails("-L -n="), ("-n=: option does not take an argument".into(), 255));
    assert_eq!(fails("-L -cn=1"), ("-cn=1: option does not take an argument".into(), 255));
    // ... and a popt error before the command is the try-help line.
    assert_eq!(err("-L=").kind, ErrorKind::TryHelp);
    assert_eq!(fails("-L --stats=1"), ("--stats=1: option does not take an argument".into(), 255));
}

#[test]
fn names_in_command_lines() {
    let names = Names::default()
        .with_services("# c\nwww 80/tcp http web\nalt 80/tcp\nbad\nx 99999/tcp\nsip 5060/sctp\n")
        .with_hosts("127.0.0.1 localhost\n::1 ip6-localhost\n10.0.0.9 Web web2 # x\n10.0.0.8 web\n");
    assert_eq!(
        parse(&["-A", "-t", "web2:http"], &names),
        Ok(Command::AddService(service(tcp("10.0.0.9", 80), Some(Scheduler::Wlc))))
    );
    // Without names only numbers do.
    assert!(parse(&["-A", "-t", "10.0.0.1:http"], &Names::default()).is_err());
}

#[test]
fn round_trips() {
    for line in [
        "-A -t 10.0.0.1:80",
        "-A -u 10.0.0.1:53 -s sh -b sh-port -p 100 -M 255.255.0.0",
        "-A -t 10.0.0.1:0 -p",
        "-E -t 10.0.0.1:80",
        "-E -t 10.0.0.1:80 -s mh -b mh-fallback,mh-port",
        "-e -t 10.0.0.1:80 -r 10.0.0.2:9 -m -w 0 -x 5",
        "-a -u 10.0.0.1:53 -r 10.0.0.2 -i -y 3",
        "-d -u 10.0.0.1:53 -r 10.0.0.2:5353",
        "-L -u 10.0.0.1:53 --stats --exact",
        "-Z -t 10.0.0.1:80",
    ] {
        assert_round_trip(&ok(line));
    }
}
