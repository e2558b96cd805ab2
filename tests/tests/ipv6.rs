//! IPv6 end to end: lbd in a namespace lab with IPv6 on every host, an IPv6
//! VIP forwarded by direct routing or tunnel to IPv6 real servers (the VIP
//! on their lo), curl -6 as the client. Needs root; build lbd first
//! (`cargo build -p lb-userspace -p lbctl`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use lb_tests::director::Director;
use lb_tests::scenario::{counts, finish, root_or_skip, tally, teardown, wait_until};
use lb_tests::{Lab, LabSpec, ProcHandle};

const LAB_SERVER: &str = env!("CARGO_BIN_EXE_lab-server");

/// The lab and its real servers' HTTP servers (on IPv6 and IPv4).
fn ipv6_lab(name: &str, k: u8) -> (Lab, Vec<ProcHandle>) {
    let lab = Lab::build(LabSpec::new(name).reals(2).subnet_index(k).ipv6()).unwrap();
    let servers = lab.start_http_servers_with(LAB_SERVER.as_ref()).unwrap();
    (lab, servers)
}

fn url(lab: &Lab, path: &str) -> String {
    format!("http://[{}]:80{path}", lab.vip6())
}

/// An IPv6 `[[service]]` on the lab's VIP over its real servers' IPv6
/// addresses with these weights, and `extra` lines (service keys, then
/// sub-tables).
fn service6(lab: &Lab, protocol: &str, port: u16, scheduler: &str, weights: &[u32], extra: &str) -> String {
    let mut text = format!(
        "\n[[service]]\nvip = \"[{}]:{port}\"\nprotocol = \"{protocol}\"\nscheduler = \"{scheduler}\"\nforwarding = \"dr\"\n{extra}\n",
        lab.vip6()
    );
    for (real, weight) in lab.reals().iter().zip(weights) {
        text.push_str(&format!("\n[[service.real]]\naddress = \"{}\"\nweight = {weight}\n", real.ip6()));
    }
    text
}

fn start<'a>(lab: &'a Lab, services: &str) -> Director<'a> {
    let mut director = Director::new(lab).unwrap();
    let config = format!("{}{services}", director.director_toml());
    director.write_config_text(&config).unwrap();
    director.start().unwrap_or_else(|e| panic!("{e:#}\nconfig:\n{config}"));
    director
}

/// One request through the VIP on a new connection (from `from`, else
/// the client's own address): who answered.
fn try_curl6(lab: &Lab, from: Option<IpAddr>) -> anyhow::Result<String> {
    let mut args = vec!["curl".to_owned(), "-6sS".to_owned(), "--max-time".to_owned(), "5".to_owned()];
    if let Some(source) = from {
        args.extend(["--interface".to_owned(), source.to_string()]);
    }
    args.push(url(lab, "/"));
    Ok(lab.run(&lab.client().ns, &args)?.trim_end().to_owned())
}

/// `n` requests through the VIP, each on a new connection: who answered.
fn curl6(lab: &Lab, n: usize, from: Option<IpAddr>) -> Vec<String> {
    (0..n).map(|i| try_curl6(lab, from).unwrap_or_else(|e| panic!("curl {} of {n}: {e:#}", i + 1))).collect()
}

#[test]
fn ipv6_vip_by_direct_routing_wrr_keepalive_and_health() {
    if !root_or_skip("ipv6 dr") {
        return;
    }
    let (lab, servers) = ipv6_lab("ipv6-dr", 90);
    let check = "\n[service.health_check]\nkind = \"tcp\"\ninterval = \"200ms\"\nconnect_timeout = \"300ms\"\nretry = 1\ndelay_before_retry = \"200ms\"\n";
    let director = start(&lab, &service6(&lab, "tcp", 80, "wrr", &[3, 1], check));

    // wrr's split is exact, as for IPv4.
    let names = curl6(&lab, 32, None);
    assert_eq!(tally(&names), counts(&[("rs1", 24), ("rs2", 8)]), "{names:?}\n{}", director.log());

    // Keep-alive: every request of one connection reaches one server.
    let target = url(&lab, "/whoami");
    let args: Vec<String> = ["curl", "-6sS", "--max-time", "5"].iter().map(|s| s.to_string()).chain(vec![target; 6]).collect();
    let bodies = lab.run(&lab.client().ns, &args).unwrap();
    let answered: std::collections::BTreeSet<&str> =
        bodies.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(answered.len(), 1, "one connection, one real server: {bodies}");

    // The listing shows IPv6 as ipvsadm does.
    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    assert!(listing.contains(&format!("TCP  [{}]:80 wrr", lab.vip6())), "{listing}");
    assert!(listing.contains(&format!("-> [{}]:80", lab.real(0).ip6())), "{listing}");

    // A failed health check over IPv6 takes rs1 out.
    lab.kill(&servers[0]).unwrap();
    wait_until("rs1 taken out", Duration::from_secs(10), || {
        let names: Vec<String> = (0..4).map(|_| try_curl6(&lab, None).unwrap_or_else(|e| format!("{e:#}"))).collect();
        (names.iter().all(|n| n == "rs2"), names)
    });
    assert!(director.log().contains(&format!("[{}]:80 is gone", lab.real(0).ip6())), "{}", director.log());
    finish(director);
    teardown(lab);
}

#[test]
fn ipv6_persistence_with_a_64_prefix_and_udp() {
    if !root_or_skip("ipv6 persistence") {
        return;
    }
    let (lab, _servers) = ipv6_lab("ipv6-persist", 91);
    // A second client address in the client's /64.
    let client = lab.client().clone();
    let second: IpAddr = {
        let mut o = client.ip6().octets();
        o[15] += 1;
        IpAddr::from(o)
    };
    lab.run(&client.ns, &["ip", "addr", "add", &format!("{second}/64"), "dev", "eth0", "nodad"]).unwrap();
    for real in lab.reals() {
        let vip53 = SocketAddr::new(IpAddr::V6(lab.vip6()), 53).to_string();
        lab.spawn(&real.ns, &format!("udp6-{}", real.name), &[LAB_SERVER, "--name", &real.name, "--udp", &vip53])
            .unwrap();
    }
    let services = service6(&lab, "tcp", 80, "rr", &[1, 1], "persistence_timeout = 300\npersistence_netmask = 64")
        + &service6(&lab, "udp", 53, "rr", &[1, 1], "");
    let director = start(&lab, &services);

    // rr would alternate; the /64 keeps both client addresses on one server.
    let mut names = curl6(&lab, 6, Some(IpAddr::V6(client.ip6())));
    names.extend(curl6(&lab, 6, Some(second)));
    assert_eq!(tally(&names).len(), 1, "one /64, one real server: {names:?}");
    let listing = director.lbctl(&["-L", "-n"]).unwrap();
    assert!(listing.contains("persistent 300 mask 64"), "{listing}");

    // UDP to the IPv6 VIP, answered by a real server from the VIP.
    let target = SocketAddr::new(IpAddr::V6(lab.vip6()), 53);
    let mut answers = Vec::new();
    for _ in 0..4 {
        let reply = lab.udp_request(&client.ns, target, b"ping", Duration::from_secs(3)).unwrap();
        answers.push(String::from_utf8_lossy(&reply).into_owned());
    }
    assert!(answers.iter().all(|a| a.ends_with(" ping")), "{answers:?}");
    finish(director);
    teardown(lab);
}

/// TUN for IPv6: the director wraps each packet in IPv6 (next header 41)
/// toward its real server, which unwraps it with `lbd decap` or, where the
/// kernel has ip6_tunnel, its catch-all ip6tnl0 (as IPVS's real servers
/// do). A request too big for the tunnel is answered with packet too big
/// and the client's path MTU to the VIP drops to 1460.
#[test]
fn ipv6_vip_by_tun_with_decap_or_ip6tnl() {
    if !root_or_skip("ipv6 tun") {
        return;
    }
    for (unwrap, k) in [("decap", 93), ("ip6tnl", 94)] {
        let (lab, _servers) = ipv6_lab(&format!("ipv6-tun-{unwrap}"), k);
        let director_ip6 = lab.director().ip6().to_string();
        let mut ready = true;
        for real in lab.reals() {
            if unwrap == "decap" {
                let lbd = lb_tests::director::userspace_binary("lbd").unwrap();
                let args = [lbd.to_str().unwrap(), "decap", "--interface", "eth0", "--from", &director_ip6];
                lab.spawn(&real.ns, &format!("decap-{}", real.name), &args).unwrap();
            } else {
                let _ = std::process::Command::new("modprobe").arg("ip6_tunnel").stderr(std::process::Stdio::null()).status();
                ready &= lab.run(&real.ns, &["ip", "link", "set", "ip6tnl0", "up"]).is_ok();
            }
        }
        if !ready {
            eprintln!("ipv6 tun: skipped the ip6tnl real servers: this kernel has no ip6_tunnel");
            teardown(lab);
            continue;
        }
        // The decap programs are attached once they log their addresses.
        std::thread::sleep(Duration::from_millis(500));
        let services = service6(&lab, "tcp", 80, "rr", &[1, 1], "").replace("forwarding = \"dr\"", "forwarding = \"tun\"");
        let director = start(&lab, &services);

        let names = curl6(&lab, 8, None);
        assert_eq!(tally(&names), counts(&[("rs1", 4), ("rs2", 4)]), "{unwrap}: {names:?}\n{}", director.log());
        let counters = director.counters().unwrap();
        assert!(counters["tx_tun"] > 0 && counters["tx_dr"] == 0, "{unwrap}: {counters:?}");
        let listing = director.lbctl(&["-L", "-n"]).unwrap();
        let row = format!("  -> [{}]:80", lab.real(0).ip6());
        let row = listing.lines().find(|l| l.starts_with(&row)).unwrap_or_else(|| panic!("{listing}"));
        assert!(row.contains("Tunnel"), "{row}");

        // An upload in full-size segments: packet too big (1500 - 40), the
        // client lowers its path MTU and the upload goes through.
        let body_file = lab.log_dir().join("body");
        std::fs::write(&body_file, "x".repeat(200_000)).unwrap();
        let args = ["curl", "-6s", "-m", "10", "--data-binary", &format!("@{}", body_file.display()), &url(&lab, "/")];
        let out = lab.run(&lab.client().ns, &args).unwrap();
        assert!(out.trim() == "rs1" || out.trim() == "rs2", "{unwrap}: upload answer: {out:?}");
        assert!(director.counters().unwrap()["tx_icmp_frag_needed"] > 0, "{unwrap}");
        let route = lab.run(&lab.client().ns, &["ip", "-6", "route", "get", &lab.vip6().to_string()]).unwrap();
        assert!(route.contains("mtu 1460"), "{unwrap}: the client learned the tunnel's MTU: {route}");

        // ipvsadm's vocabulary for the same: a server taken out and put
        // back by lbctl, tunnelled (-i).
        let vip = format!("[{}]:80", lab.vip6());
        let rs1 = format!("[{}]:80", lab.real(0).ip6());
        director.lbctl(&["-d", "-t", &vip, "-r", &rs1]).unwrap();
        assert_eq!(tally(&curl6(&lab, 2, None)), counts(&[("rs2", 2)]), "{unwrap}");
        director.lbctl(&["-a", "-t", &vip, "-r", &rs1, "-i", "-w", "3"]).unwrap();
        let listing = director.lbctl(&["-L", "-n"]).unwrap();
        let row = format!("  -> {rs1}");
        let row = listing.lines().find(|l| l.starts_with(&row)).unwrap_or_else(|| panic!("{listing}"));
        assert!(row.contains("Tunnel  3"), "{row}");
        let names = curl6(&lab, 4, None);
        assert_eq!(tally(&names), counts(&[("rs1", 2), ("rs2", 2)]), "{unwrap}: {names:?}");
        finish(director);
        teardown(lab);
    }
}
