//! Reading the config and checking it, table by table, with every mistake
//! reported at once.

use std::{collections::HashMap, path::Path};

use lb_common::{MAX_FWMARK_MATCHES, MAX_SERVICES};
use toml::Spanned;

use super::{
    Config, ConfigError, ConfigErrors, ServiceConfig,
    check::{Checker, Source},
    director::check_director,
    raw::{RawConfig, RawService},
    service::check_service,
};
use crate::{bgp::BgpConfig, metrics::MetricsConfig, model::ServiceId, sync::config::SyncConfig};

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.display().to_string(),
                line: None,
                key: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(&text, path)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
        let source = Source::new(path.display().to_string(), text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: source.file().to_string(),
                line: e.span().map(|s| source.line(s.start)),
                key: String::new(),
                message: e.message().trim_end().to_string(),
            }])
        })?;
        let mut c = Checker::new(&source);
        let director = check_director(&mut c, &raw.director);
        let mut services = Vec::new();
        let mut seen: HashMap<ServiceId, usize> = HashMap::new();
        if raw.service.len() > MAX_SERVICES as usize {
            c.error(raw.service[MAX_SERVICES as usize].span(), "service", format!("more than {MAX_SERVICES} services"));
        }
        for (i, svc) in raw.service.iter().enumerate() {
            if let Some(s) = check_service(&mut c, svc, i) {
                if let Some(first) = seen.insert(s.id(), s.line) {
                    let (key, span) = match (&svc.get_ref().vip, &svc.get_ref().fwmark) {
                        (Some(vip), _) => ("vip", vip.span()),
                        (None, Some(mark)) => ("fwmark", mark.span()),
                        (None, None) => ("vip", svc.span()),
                    };
                    c.error(span, format!("service[{i}].{key}"), format!("{} is already defined at line {first}", s.id()));
                }
                services.push(s);
            }
        }
        check_marks_apart(&mut c, &raw.service, &services);
        let vrrp = crate::vrrp::resolve_all(&raw.vrrp, "vrrp", &mut c).unwrap_or_default();
        // Tracked services must be services of this file.
        for (i, (instance, raw_instance)) in vrrp.iter().zip(&raw.vrrp).enumerate() {
            for (j, t) in instance.track_service.iter().enumerate() {
                if !services.iter().any(|s| s.id() == t.service) {
                    let span = raw_instance
                        .get_ref()
                        .track_service
                        .as_ref()
                        .and_then(|l| l.get_ref().get(j).map(|e| e.span()))
                        .unwrap_or(raw_instance.span());
                    c.error(
                        span,
                        format!("vrrp[{i}].track_service[{j}]"),
                        format!("{t} is not a service of this file"),
                    );
                }
            }
        }
        let sync = raw.sync.as_ref().and_then(|s| SyncConfig::resolve(s, "sync", &mut c)).filter(|s| s.enabled);
        // gobgp is driven for IPv4 routes only, for now: an IPv6 VIP or
        // network is none it may announce.
        let service_prefixes: Vec<_> = services.iter().flat_map(crate::bgp::plan::service_prefixes).collect();
        let bgp = raw.bgp.as_ref().and_then(|b| BgpConfig::resolve(b, &service_prefixes, &mut c));
        if let (Some(b), Some(d)) = (&raw.bgp, &director)
            && d.pin_path.is_none()
        {
            // Announced routes outlive a killed lbd in the daemon; so must
            // the datapath they draw traffic to.
            c.error(b.span(), "bgp", "needs director.pin_path: the datapath must outlive lbd while its routes are out");
        }
        let metrics = raw.metrics.as_ref().and_then(|m| MetricsConfig::resolve(m, "metrics", &mut c));
        match director {
            Some(director) if c.is_clean() => {
                Ok(Config { path: path.to_path_buf(), director, services, vrrp, sync, bgp, metrics })
            }
            _ => Err(ConfigErrors(c.into_errors())),
        }
    }
}

/// No packet may match two firewall-mark services (which would take it?),
/// and all their matches together fit the datapath's map.
fn check_marks_apart(c: &mut Checker, raw: &[Spanned<RawService>], services: &[ServiceConfig]) {
    let mut entries = 0;
    for (i, s) in services.iter().enumerate() {
        for (j, m) in s.matches.iter().enumerate() {
            entries += m.entries();
            let clash = services[..i]
                .iter()
                .flat_map(|earlier| earlier.matches.iter().map(move |e| (earlier, e)))
                .find(|(_, e)| e.overlaps(m));
            let Some((earlier, e)) = clash else { continue };
            let raw_index = raw.iter().position(|r| c.line(&r.span()) == s.line);
            let span = raw_index
                .and_then(|r| raw[r].get_ref().matches.as_ref())
                .and_then(|l| l.get_ref().get(j).map(|m| m.span()))
                .unwrap_or(0..0);
            c.error(
                span,
                format!("service[{}].match[{j}]", raw_index.unwrap_or(i)),
                format!(
                    "{} overlaps {} of {} (line {}): a packet would match both",
                    m.describe(),
                    e.describe(),
                    earlier.id(),
                    earlier.line
                ),
            );
        }
    }
    if entries > MAX_FWMARK_MATCHES as usize {
        let first = raw.iter().find(|r| r.get_ref().matches.is_some()).map_or(0..0, |r| r.span());
        c.error(
            first,
            "service",
            format!(
                "the firewall-mark services' matches come to {entries} (port, network) entries; \
                 the datapath holds {MAX_FWMARK_MATCHES}: use fewer ports or fewer networks"
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::model::{Forwarding, Netmask, Protocol, Scheduler, Timeouts};

    const GOOD: &str = r#"
[director]
interface = "eth0"
xdp_mode = "auto"

[[service]]
vip = "172.16.100.1:80"
protocol = "tcp"
scheduler = "wrr"
forwarding = "dr"

[[service.real]]
address = "172.16.100.7"
weight = 2

[[service.real]]
address = "172.16.100.8"
weight = 1
"#;

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text, Path::new("lb.toml")) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn the_readme_example_parses() {
        let c = Config::parse(GOOD, Path::new("lb.toml")).unwrap();
        assert_eq!(c.director.interface, "eth0");
        assert_eq!(c.services.len(), 1);
        let s = &c.services[0];
        assert_eq!((s.vip, s.port, s.scheduler), ("172.16.100.1".parse().unwrap(), 80, Scheduler::Wrr));
        assert_eq!(s.reals.len(), 2);
        assert_eq!(s.reals[0].weight, 2);
        assert_eq!(s.reals[1].line, 16);
        assert_eq!(c.director.timeouts, Timeouts::default());
    }

    #[test]
    fn each_mistake_names_line_and_key() {
        let bad = GOOD.replace("172.16.100.8\"", "172.16.100.x\"");
        assert_eq!(errors(&bad), ["lb.toml:17: service[0].real[1].address: \"172.16.100.x\" is not an IP address"]);

        let bad = GOOD.replace("weight = 2", "weight = 70000");
        assert_eq!(errors(&bad), ["lb.toml:14: service[0].real[0].weight: 70000 is out of range 0..=65535"]);

        let bad = GOOD.replace("\"wrr\"", "\"fastest\"");
        assert!(errors(&bad)[0].starts_with("lb.toml:9: service[0].scheduler: unknown scheduler \"fastest\""));

        let bad = GOOD.replace("172.16.100.1:80", "172.16.100.1");
        assert_eq!(
            errors(&bad),
            ["lb.toml:7: service[0].vip: \"172.16.100.1\" is not ADDRESS:PORT (add :PORT, or :0 for every port)"]
        );

        let bad = GOOD.replace("weight = 1", "weigth = 1");
        let e = errors(&bad);
        assert!(e[0].starts_with("lb.toml:18: unknown field `weigth`"), "{e:?}");

        let bad = GOOD.replace("\"tcp\"", "\"sctp\"");
        assert_eq!(errors(&bad), ["lb.toml:8: service[0].protocol: unknown protocol \"sctp\" (tcp or udp)"]);

        let bad = GOOD.replace("xdp_mode = \"auto\"", "xdp_mode = \"turbo\"");
        assert_eq!(errors(&bad), ["lb.toml:4: director.xdp_mode: \"turbo\" is not one of auto, native, generic"]);

        let bad = GOOD.replace("[director]\ninterface = \"eth0\"\n", "[director]\n");
        assert!(errors(&bad)[0].contains("missing field `interface`"));
    }

    #[test]
    fn duplicates_are_refused() {
        let twice = format!("{GOOD}\n[[service]]\nvip = \"172.16.100.1:80\"\nscheduler = \"rr\"\n");
        assert_eq!(errors(&twice), ["lb.toml:21: service[1].vip: tcp 172.16.100.1:80 is already defined at line 6"]);
        let same_real = GOOD.replace("172.16.100.8", "172.16.100.7");
        assert_eq!(
            errors(&same_real),
            ["lb.toml:17: service[0].real[1].address: 172.16.100.7 is already a real server of this service (line 12)"]
        );
    }

    #[test]
    fn all_errors_are_reported_at_once() {
        let bad = GOOD.replace("172.16.100.8\"", "nope\"").replace("weight = 2", "weight = -1");
        assert_eq!(errors(&bad).len(), 2);
    }

    #[test]
    fn addresses_and_interfaces_are_checked_alike_in_every_table() {
        let bad = GOOD.replace("interface = \"eth0\"", "interface = \"eth0:1\"");
        assert_eq!(errors(&bad), ["lb.toml:3: director.interface: \"eth0:1\" is not an interface name"]);
        let bad = GOOD.replace("xdp_mode = \"auto\"", "tun_source = \"127.0.0.1\"");
        assert_eq!(errors(&bad), ["lb.toml:4: director.tun_source: \"127.0.0.1\" is not a unicast IPv4 address"]);
        let bad = GOOD.replace("forwarding = \"dr\"", "sorry_server = \"255.255.255.255\"");
        assert_eq!(errors(&bad), ["lb.toml:10: service[0].sorry_server: \"255.255.255.255\" is not a unicast IP address"]);
    }

    #[test]
    fn nat_maps_ports_and_the_program_goes_on_more_interfaces() {
        let nat = GOOD
            .replace("forwarding = \"dr\"", "forwarding = \"nat\"")
            .replace("weight = 2", "weight = 2\nport = 8080")
            .replace("xdp_mode = \"auto\"", "interfaces = [\"eth1\", \"eth0\"]");
        let c = Config::parse(&nat, Path::new("lb.toml")).unwrap();
        assert_eq!(c.director.interfaces, [("eth1".to_string(), 4)], "eth0 is the interface already");
        let ports: Vec<_> = c.services[0].reals.iter().map(|r| (r.port, r.forwarding)).collect();
        assert_eq!(ports, [(8080, Forwarding::Nat), (80, Forwarding::Nat)]);
        let dr = GOOD.replace("weight = 2", "weight = 2\nport = 8080");
        assert_eq!(
            errors(&dr),
            ["lb.toml:15: service[0].real[0].port: 8080 is not the VIP's port 80: only NAT maps ports (in DR and TUN \
              the real server answers on the VIP's port)"]
        );
    }

    #[test]
    fn the_control_group_must_exist_on_this_host() {
        let with = |group: &str| GOOD.replace("xdp_mode = \"auto\"", &format!("control_group = \"{group}\""));
        let c = Config::parse(&with("root"), Path::new("lb.toml")).unwrap();
        assert_eq!(c.director.control_group, Some(crate::config::ControlGroup { name: "root".into(), gid: 0 }));
        assert_eq!(Config::parse(GOOD, Path::new("lb.toml")).unwrap().director.control_group, None);
        assert_eq!(
            errors(&with("no-such-group-here")),
            [
                "lb.toml:4: director.control_group: there is no group \"no-such-group-here\" on this host (groupadd no-such-group-here)"
            ]
        );
        assert_eq!(errors(&with("a:b")), ["lb.toml:4: director.control_group: \"a:b\" is not a group name"]);
        assert_eq!(errors(&with("")), ["lb.toml:4: director.control_group: \"\" is not a group name"]);
    }

    #[test]
    fn the_icmp_rate_limit_is_checked() {
        let c = Config::parse(GOOD, Path::new("lb.toml")).unwrap();
        assert_eq!(c.director.icmp_rate_limit, 1000, "the kernel's icmp_msgs_per_sec");
        let none = GOOD.replace("xdp_mode = \"auto\"", "icmp_rate_limit = 0");
        assert_eq!(Config::parse(&none, Path::new("lb.toml")).unwrap().director.icmp_rate_limit, 0);
        let bad = GOOD.replace("xdp_mode = \"auto\"", "icmp_rate_limit = -5");
        assert_eq!(errors(&bad), ["lb.toml:4: director.icmp_rate_limit: -5 is out of range 0..=10000000"]);
    }

    /// [`GOOD`] with an IPv6 VIP and real servers.
    fn ipv6() -> String {
        GOOD.replace("172.16.100.1:80", "[2001:db8::1]:80")
            .replace("172.16.100.7", "2001:db8::7")
            .replace("172.16.100.8", "2001:db8::8")
    }

    #[test]
    fn ipv6_services_route_to_ipv6_servers() {
        let c = Config::parse(&ipv6(), Path::new("lb.toml")).unwrap();
        let s = &c.services[0];
        assert_eq!((s.vip, s.port, s.forwarding), ("2001:db8::1".parse().unwrap(), 80, Forwarding::Dr));
        assert_eq!(s.id().to_string(), "tcp [2001:db8::1]:80");
        let reals: Vec<IpAddr> = s.reals.iter().map(|r| r.address).collect();
        assert_eq!(reals, ["2001:db8::7".parse::<IpAddr>().unwrap(), "2001:db8::8".parse().unwrap()]);
        assert_eq!(s.options.persistence_netmask, Netmask::V6(128), "one client per template by default");
        for mask in ["64", "\"64\""] {
            let persistent = ipv6().replace(
                "forwarding = \"dr\"",
                &format!("persistence_timeout = 300\npersistence_netmask = {mask}\nsorry_server = \"2001:db8::9\""),
            );
            let c = Config::parse(&persistent, Path::new("lb.toml")).unwrap();
            assert_eq!(c.services[0].options.persistence_netmask, Netmask::V6(64), "{mask}");
            assert_eq!(c.services[0].sorry_server, Some("2001:db8::9".parse().unwrap()));
        }
    }

    #[test]
    fn ipv6_is_refused_where_it_cannot_go_yet() {
        let message = |line: usize, key: &str, what: &str| vec![format!("lb.toml:{line}: service[0].{key}: {what}")];
        let tun = ipv6().replace("forwarding = \"dr\"", "forwarding = \"tun\"");
        assert_eq!(errors(&tun), Vec::<String>::new());
        let bad = ipv6().replace("forwarding = \"dr\"", "forwarding = \"nat\"");
        let routes = "IPv6 services support forwarding \"dr\" and \"tun\" only for now";
        assert_eq!(errors(&bad), message(10, "forwarding", &format!("{routes}, not \"nat\"")));
        let bad = ipv6().replace("weight = 1", "weight = 1\nforwarding = \"nat\"");
        assert_eq!(errors(&bad), message(19, "real[1].forwarding", &format!("{routes}, not \"nat\"")));
        let bad = GOOD.replace("xdp_mode = \"auto\"", "tun_source6 = \"fe80::1\"");
        let what = "\"fe80::1\" is not a global unicast IPv6 address";
        assert_eq!(errors(&bad), vec![format!("lb.toml:4: director.tun_source6: {what}")]);

        let bad = ipv6().replace("2001:db8::8", "172.16.100.8");
        let what = "172.16.100.8 is IPv4 and the VIP IPv6: a real server is of its VIP's family";
        assert_eq!(errors(&bad), message(17, "real[1].address", what));
        let bad = GOOD.replace("172.16.100.8", "2001:db8::8");
        let what = "2001:db8::8 is IPv6 and the VIP IPv4: a real server is of its VIP's family";
        assert_eq!(errors(&bad), message(17, "real[1].address", what));
        let bad = ipv6().replace("2001:db8::8", "fe80::8");
        assert_eq!(errors(&bad), message(17, "real[1].address", "fe80::8 cannot be a real server"));
        let bad = ipv6().replace("forwarding = \"dr\"", "sorry_server = \"172.16.100.9\"");
        assert_eq!(errors(&bad), message(10, "sorry_server", "172.16.100.9 is not of the VIP's family"));

        let bad = GOOD.replace("172.16.100.1:80", "2001:db8::1:80");
        let what = "\"2001:db8::1:80\" is not ADDRESS:PORT (write [ADDRESS]:PORT, or [ADDRESS]:0 for every port)";
        assert_eq!(errors(&bad), message(7, "vip", what));

        let with_mask = |text: &str, mask: &str| {
            text.replace("forwarding = \"dr\"", &format!("persistence_timeout = 300\npersistence_netmask = {mask}"))
        };
        let prefix = "an IPv6 service takes a prefix length 1..=128 (such as 64)";
        assert_eq!(
            errors(&with_mask(&ipv6(), "\"255.255.255.0\"")),
            message(11, "persistence_netmask", &format!("\"255.255.255.0\": {prefix}"))
        );
        assert_eq!(errors(&with_mask(&ipv6(), "129")), message(11, "persistence_netmask", &format!("129: {prefix}")));
        assert_eq!(errors(&with_mask(&ipv6(), "0")), message(11, "persistence_netmask", &format!("0: {prefix}")));
        assert_eq!(
            errors(&with_mask(GOOD, "24")),
            message(11, "persistence_netmask", "24: an IPv4 service takes a dotted netmask (such as \"255.255.255.0\")")
        );
        let c = Config::parse(&with_mask(GOOD, "\"255.255.255.0\""), Path::new("lb.toml")).unwrap();
        assert_eq!(c.services[0].options.persistence_netmask, Netmask::V4(std::net::Ipv4Addr::new(255, 255, 255, 0)));
    }

    #[test]
    fn port_zero_is_every_port_and_udp_works() {
        let text = GOOD.replace(":80", ":0").replace("\"tcp\"", "\"udp\"");
        let c = Config::parse(&text, Path::new("x")).unwrap();
        assert_eq!(c.services[0].port, 0);
        assert_eq!(c.services[0].protocol, Protocol::Udp);
    }

    /// [`GOOD`] and a firewall-mark service after it (from line 20).
    fn with_mark(mark: &str) -> String {
        format!("{GOOD}[[service]]\n{mark}")
    }

    const MARK: &str = r#"fwmark = 1
match = [
  { vip = "172.16.100.1", ports = [80, 443] },
  { vip = "172.16.200.0/24", ports = ["8000-8080", "9000"], protocol = "udp" },
]
persistence_timeout = 300
scheduler = "wlc"

[[service.real]]
address = "172.16.100.7"
weight = 2
"#;

    #[test]
    fn firewall_mark_services_list_their_packets() {
        let c = Config::parse(&with_mark(MARK), Path::new("lb.toml")).unwrap();
        let s = &c.services[1];
        assert_eq!(s.id(), ServiceId::fwmark(1, false));
        assert_eq!((s.fwmark, s.port, s.scheduler, s.options.persistence_timeout), (1, 0, Scheduler::Wlc, Some(300)));
        let described: Vec<String> = s.matches.iter().map(|m| m.describe()).collect();
        assert_eq!(described, ["tcp 172.16.100.1/32 ports 80,443", "udp 172.16.200.0/24 ports 8000-8080,9000"]);
        assert_eq!((s.reals[0].port, s.reals[0].weight), (0, 2), "a real server listens on each packet's port");
        // A service of the mark's VIP and port may be there too: it wins.
        assert!(c.services[0].id() != s.id());

        let v6 = MARK
            .replace("172.16.100.1\"", "2001:db8::1\"")
            .replace("172.16.200.0/24", "2001:db8:1::/64")
            .replace("172.16.100.7", "2001:db8::7")
            + "\n[service.health_check]\nkind = \"tcp\"\nport = 80\n";
        let c = Config::parse(&with_mark(&v6.replace("persistence_timeout = 300", "persistence_timeout = 300\npersistence_netmask = 64")), Path::new("lb.toml"))
            .unwrap();
        assert_eq!(c.services[1].id(), ServiceId::fwmark(1, true));
        assert_eq!(c.services[1].options.persistence_netmask, Netmask::V6(64));
        assert_eq!(c.services[1].matches[1].prefix_len, 64);
    }

    #[test]
    fn firewall_mark_mistakes_name_line_and_key() {
        let e = |mark: &str| errors(&with_mark(mark));
        let at = |line: usize, key: &str, what: &str| vec![format!("lb.toml:{line}: service[1].{key}: {what}")];
        assert_eq!(
            e(&MARK.replace("fwmark = 1", "fwmark = 1\nvip = \"172.16.100.1:80\"")),
            at(21, "vip", "a firewall-mark service has no vip: it takes the packets its `match` lists")
        );
        assert_eq!(e("fwmark = 0\nmatch = [{ vip = \"10.0.0.1\", ports = [80] }]"), at(20, "fwmark", "0 is out of range 1..=4294967295"));
        assert_eq!(e("fwmark = 2"), at(20, "match", "a firewall-mark service needs `match`: the packets it takes"));
        assert_eq!(e("scheduler = \"rr\""), at(19, "vip", "missing: a service has a `vip`, or a `fwmark` and its `match`"));
        assert_eq!(
            e(&MARK.replace("\"9000\"", "\"9000-8000\"")),
            at(23, "match[1].ports", "\"9000-8000\" is not a port 1..=65535 or a range \"FIRST-LAST\"")
        );
        assert_eq!(e(&MARK.replace("[80, 443]", "[0]")), at(22, "match[0].ports", "0 is not a port 1..=65535 or a range \"FIRST-LAST\""));
        assert_eq!(
            e(&MARK.replace("172.16.200.0/24", "172.16.200.1/24")),
            at(23, "match[1].vip", "\"172.16.200.1/24\" has host bits set (the network is written with them zero)")
        );
        assert_eq!(e(&MARK.replace("172.16.200.0/24", "172.16.200.0/0")), at(23, "match[1].vip", "\"172.16.200.0/0\": the prefix length is 1..=32"));
        assert_eq!(
            e(&MARK.replace("172.16.200.0/24", "2001:db8::/64")),
            at(
                23,
                "match[1].vip",
                "2001:db8::/64 is IPv6 and the match at line 22 IPv4: a firewall-mark service is of one family \
                 (write another service for the other, as ipvsadm's -f with and without -6)"
            )
        );
        assert_eq!(
            e(&MARK.replace("fwmark = 1", "fwmark = 1\nprotocol = \"udp\"")),
            at(21, "protocol", "a firewall-mark service has its protocols in each `match`")
        );
        assert_eq!(
            e(&MARK.replace("scheduler = \"wlc\"", "forwarding = \"nat\"")),
            at(26, "forwarding", "a firewall-mark service forwards by \"dr\" or \"tun\", not \"nat\"")
        );
        assert_eq!(
            e(&MARK.replace("weight = 2", "forwarding = \"nat\"")),
            at(30, "real[0].forwarding", "a firewall-mark service forwards by \"dr\" or \"tun\", not \"nat\"")
        );
        assert_eq!(
            e(&MARK.replace("weight = 2", "port = 80")),
            at(30, "real[0].port", "80: an every-port or firewall-mark service keeps each packet's port")
        );
        assert_eq!(
            e(&format!("{MARK}\n[service.health_check]\nkind = \"tcp\"\n")),
            at(33, "health_check.port", "the service has port 0 (every port): a tcp check needs a port")
        );
        let twice = format!("{}\n[[service]]\n{}", with_mark(MARK), MARK.replace("172.16.100.7", "172.16.100.8"));
        let e = errors(&twice);
        assert_eq!(e[0], "lb.toml:33: service[2].fwmark: fwmark 1 is already defined at line 19");
    }

    #[test]
    fn vrrp_tracks_a_firewall_mark_service_by_its_mark() {
        let vrrp = "\n[[vrrp]]\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"172.16.100.1/24\"]\n";
        let text = |service: &str| format!("{}{vrrp}track_service = [{{ service = \"{service}\" }}]\n", with_mark(MARK));
        let c = Config::parse(&text("fwmark 1"), Path::new("lb.toml")).unwrap();
        assert_eq!(c.vrrp[0].track_service[0].service, ServiceId::fwmark(1, false));
        assert!(errors(&text("fwmark 1 IPv6"))[0].ends_with("fwmark 1 IPv6 is not a service of this file"));
    }

    #[test]
    fn a_packet_matches_one_firewall_mark_service_at_most() {
        let other = MARK.replace("fwmark = 1", "fwmark = 2").replace("[80, 443]", "[8080]").replace("\"9000\"", "\"7000\"");
        let text = format!("{}\n[[service]]\n{other}", with_mark(MARK));
        assert_eq!(
            errors(&text),
            ["lb.toml:36: service[2].match[1]: udp 172.16.200.0/24 ports 8000-8080,7000 overlaps udp 172.16.200.0/24 \
              ports 8000-8080,9000 of fwmark 1 (line 19): a packet would match both"]
        );
        let apart = other.replace("8000-8080", "8081-8090");
        assert!(Config::parse(&format!("{}\n[[service]]\n{apart}", with_mark(MARK)), Path::new("lb.toml")).is_ok());
        let huge = MARK.replace("\"9000\"", "\"1-65535\"").replace("172.16.200.0/24", "172.16.200.0/24\", ports = [\"1-65535\"] },\n  { vip = \"172.16.201.0/24");
        assert!(errors(&format!("{GOOD}\n[[service]]\n{huge}"))[0].contains("the datapath holds 65536"));
    }
}
