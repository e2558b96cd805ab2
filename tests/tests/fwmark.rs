//! A firewall-mark service in the namespace lab: the VIP's ports 80 and
//! 8443 (two HTTP ports standing for HTTP and HTTPS) are one service, mark
//! 1, persistent, so each client keeps its real server across both ports;
//! lbctl lists, saves, restores and refuses it as ipvsadm would.
//!
//! Build lbd and lbctl first (`cargo build -p lb-userspace -p lbctl`);
//! needs root (otherwise the test prints a message and passes).

use std::time::Duration;

use lb_tests::director::{Director, parse_connection_entries, userspace_binary};
use lb_tests::lab::HTTP_PORT;
use lb_tests::scenario::{finish, lab_with_servers, root_or_skip, teardown, wait_until, whoami};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");
/// The second HTTP port of the mark ("HTTPS").
const SECOND_PORT: u16 = 8443;
/// A second client address, on the client's own segment.
const CLIENT_B_LAST_OCTET: u8 = 199;

#[test]
fn a_mark_keeps_a_client_on_its_server_across_ports_and_lbctl_shows_it() {
    if !root_or_skip("fwmark") {
        return;
    }
    let lab = lab_with_servers(LAB_SERVER, "dir-fwmark", 77, 2);
    lab.start_http_servers_on(LAB_SERVER.as_ref(), SECOND_PORT).unwrap();
    let vip = lab.vip();
    let (rs1, rs2) = (lab.real(0).ip, lab.real(1).ip);
    let mut director = Director::new(&lab).unwrap();
    let mark = format!(
        "[[service]]\n\
         fwmark = 1\n\
         match = [{{ vip = \"{vip}\", ports = [{HTTP_PORT}, {SECOND_PORT}] }}]\n\
         scheduler = \"rr\"\n\
         persistence_timeout = 300\n\n\
         [[service.real]]\naddress = \"{rs1}\"\nweight = 2\n\n\
         [[service.real]]\naddress = \"{rs2}\"\nweight = 1\n"
    );
    director.write_config_text(&format!("{}\n{mark}", director.director_toml())).unwrap();
    director.start().unwrap();
    let size = director.conn_table_size;

    // ipvsadm's listing and save of a mark service (its real servers show
    // port 0: each listens on the packet's own).
    let row = |addr, weight: u32| {
        format!("  -> {:<28} {:<7} {:<6} {:<10} {:<10}\n", format!("{addr}:0"), "Route", weight, 0, 0)
    };
    let listing = format!(
        "IP Virtual Server version 1.2.1 (size={size})\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         FWM  1 rr persistent 300\n{}{}",
        row(rs1, 2),
        row(rs2, 1)
    );
    assert_eq!(director.lbctl(&["-L", "-n"]).unwrap(), listing);
    let saved = format!("-A -f 1 -s rr -p 300\n-a -f 1 -r {rs1}:0 -g -w 2\n-a -f 1 -r {rs2}:0 -g -w 1\n");
    assert_eq!(director.lbctl(&["-S", "-n"]).unwrap(), saved);
    // One service: without the version line, as ipvsadm's.
    let one = listing.split_once('\n').unwrap().1;
    assert_eq!(director.lbctl(&["-l", "-n", "-f", "1"]).unwrap(), one);

    // Client A's first request picks its server; every later one, on
    // either port, goes there. Client B gets the other (rr moved on once)
    // and keeps it too.
    let (net, _) = lab.subnet();
    let b = std::net::Ipv4Addr::new(net.octets()[0], net.octets()[1], net.octets()[2], CLIENT_B_LAST_OCTET);
    lab.run(&lab.client().ns, &["ip", "addr", "add", &format!("{b}/24"), "dev", "eth0"]).unwrap();
    let get = |from: Option<std::net::Ipv4Addr>, port: u16| {
        let url = format!("http://{vip}:{port}/whoami");
        let mut args = vec!["curl", "-sS", "--max-time", "5"];
        let from = from.map(|a| a.to_string());
        if let Some(a) = &from {
            args.extend(["--interface", a.as_str()]);
        }
        args.push(&url);
        whoami(&lab.run(&lab.client().ns, &args).unwrap_or_else(|e| panic!("curl {url}: {e:#}"))).0
    };
    let first_a = get(None, HTTP_PORT);
    let first_b = get(Some(b), SECOND_PORT);
    assert_ne!(first_a, first_b, "a new client is scheduled: rr moves on");
    for port in [SECOND_PORT, HTTP_PORT, SECOND_PORT, HTTP_PORT, SECOND_PORT] {
        assert_eq!(get(None, port), first_a, "client A on port {port}");
        assert_eq!(get(Some(b), port), first_b, "client B on port {port}");
    }

    // -c: one template per client, IPVS's for a mark (protocol IP, the mark
    // where the VIP goes, ports 0), and the connections with their own
    // protocol, VIP and port.
    let real_of = |name: &str| if name == "rs1" { rs1 } else { rs2 };
    let entries = wait_until("both templates ASSURED", Duration::from_secs(5), || {
        let entries = parse_connection_entries(&director.lbctl(&["-L", "-n", "-c"]).unwrap()).unwrap();
        let assured = entries.iter().filter(|e| e.protocol == "IP" && e.state == "ASSURED").count();
        (assured == 2, entries)
    });
    for (client, name) in [(lab.client().ip, &first_a), (b, &first_b)] {
        let template = entries.iter().find(|e| e.protocol == "IP" && *e.source.ip() == client).unwrap();
        assert_eq!(template.virtual_.to_string(), "0.0.0.1:0", "{template:?}");
        assert_eq!(template.source.port(), 0);
        assert_eq!(template.destination.to_string(), format!("{}:0", real_of(name)));
        let conns: Vec<_> = entries.iter().filter(|e| e.protocol == "TCP" && *e.source.ip() == client).collect();
        assert_eq!(conns.len(), 6, "{entries:?}");
        for c in conns {
            assert_eq!(*c.virtual_.ip(), vip);
            assert_eq!(c.destination.to_string(), format!("{}:{}", real_of(name), c.virtual_.port()));
        }
    }

    // A mark the file has no matches for cannot be made at run time.
    let refused = director.lbctl_output(&["-A", "-f", "2", "-s", "rr"]).unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("fwmark 2 has no `match` in the config file"), "{message}");

    // -S | (-C; -R): the same table again, and it serves both ports.
    let lbctl = format!("{} --socket {}", userspace_binary("lbctl").unwrap().display(), director.socket.display());
    lab.sh(
        &lab.director().ns,
        &format!("{lbctl} -S -n | (rules=$(cat); {lbctl} -C; echo \"$rules\" | {lbctl} -R)"),
    )
    .unwrap();
    assert_eq!(director.lbctl(&["-S", "-n"]).unwrap(), saved);
    let again = get(None, SECOND_PORT);
    assert_eq!(get(None, HTTP_PORT), again, "persistent after the restore too");

    finish(director);
    teardown(lab);
}
