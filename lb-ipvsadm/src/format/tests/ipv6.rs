//! The formats byte for byte against ipvsadm 1.31's IPv6 and
//! firewall-mark reference (`tests/reference-ipv6/`): the table its
//! `commands.sh` built, with the counters, rates and connections read off
//! the listings.

use std::net::SocketAddr;

use super::*;

const L_N: &str = include_str!("../../../tests/reference-ipv6/L-n.txt");
const L_N_NOSORT: &str = include_str!("../../../tests/reference-ipv6/L-n-nosort.txt");
const L: &str = include_str!("../../../tests/reference-ipv6/L.txt");
const L_N_STATS: &str = include_str!("../../../tests/reference-ipv6/L-n-stats.txt");
const L_N_STATS_EXACT: &str = include_str!("../../../tests/reference-ipv6/L-n-stats-exact.txt");
const L_N_RATE: &str = include_str!("../../../tests/reference-ipv6/L-n-rate.txt");
const L_N_THRESHOLDS: &str = include_str!("../../../tests/reference-ipv6/L-n-thresholds.txt");
const L_N_PERSISTENT_CONN: &str = include_str!("../../../tests/reference-ipv6/L-n-persistent-conn.txt");
const L_N_TUN_INFO: &str = include_str!("../../../tests/reference-ipv6/L-n-tun-info.txt");
const L_N_C: &str = include_str!("../../../tests/reference-ipv6/L-n-c.txt");
const L_N_C_PERSISTENT_CONN: &str = include_str!("../../../tests/reference-ipv6/L-n-c-persistent-conn.txt");
const L_C: &str = include_str!("../../../tests/reference-ipv6/L-c.txt");
const S_N: &str = include_str!("../../../tests/reference-ipv6/S-n.txt");
const S: &str = include_str!("../../../tests/reference-ipv6/S.txt");
const L_N_T: &str = include_str!("../../../tests/reference-ipv6/l-n-t-ipv6.txt");
const L_N_U: &str = include_str!("../../../tests/reference-ipv6/l-n-u-ipv6.txt");
const L_N_F_1: &str = include_str!("../../../tests/reference-ipv6/l-n-f-1.txt");
const L_N_F_2: &str = include_str!("../../../tests/reference-ipv6/l-n-f-2.txt");

/// The capture VM's /etc/services entries for the ports in the table
/// (Debian netbase).
const CAPTURE_SERVICES: &str = "\
domain          53/tcp                          # Domain Name Server
domain          53/udp
http            80/tcp          www             # WorldWideWeb HTTP
https           443/tcp                         # http protocol over TLS/SSL
https           443/udp                         # HTTP/3
mdns            5353/udp                        # Multicast DNS
http-alt        8080/tcp        webcache        # WWW caching service
";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A service on `addr` (IPv4 or IPv6); `persistence` is the timeout and
/// the mask as lbd reports them.
#[allow(clippy::too_many_arguments)]
fn service(
    protocol: Protocol,
    addr: &str,
    port: u16,
    scheduler: &str,
    flags: &[&str],
    persistence: Option<(u32, Netmask)>,
    [svc_stats, svc_rates]: [[u64; 5]; 2],
    reals: Vec<Real>,
) -> Service {
    Service {
        id: address(protocol, ip(addr), port),
        persistence_netmask: persistence.map(|p| p.1),
        ..svc(protocol, port, scheduler, flags, persistence.map(|p| p.0), svc_stats, svc_rates, reals)
    }
}

/// The firewall-mark service `mark` of `family`.
fn fwmark_service(
    mark: u32,
    family: Family,
    scheduler: &str,
    persistence: Option<(u32, Netmask)>,
    [svc_stats, svc_rates]: [[u64; 5]; 2],
    reals: Vec<Real>,
) -> Service {
    Service {
        id: fwmark(mark, family),
        persistence_netmask: persistence.map(|p| p.1),
        ..svc(Tcp, 0, scheduler, &[], persistence.map(|p| p.0), svc_stats, svc_rates, reals)
    }
}

/// A real server at `addr`: `conns` [active, inactive, persistent].
fn server(
    addr: &str,
    port: u16,
    forwarding: Forwarding,
    weight: u32,
    conns: [u64; 3],
    [real_stats, real_rates]: [[u64; 5]; 2],
) -> Real {
    let mut r = real(0, port, forwarding, weight, conns, [0, 0], real_stats, real_rates);
    r.address = ip(addr);
    r
}

const LONG1: &str = "2001:db8:ffff:ffff:ffff:ffff:ffff:fff1";
const LONG2: &str = "2001:db8:ffff:ffff:ffff:ffff:ffff:fff2";
const IDLE: [[u64; 5]; 2] = [[0; 5]; 2];

/// Counters and rates of one connection of 3/2 packets (the most common
/// in the table).
const ONE_V6: [[u64; 5]; 2] = [[1, 3, 2, 225, 152], [0, 0, 0, 21, 14]];

/// The address services of commands.sh, in IPVS's order (as
/// `L-n-nosort.txt` shows it: real servers last added first).
#[rustfmt::skip]
fn address_services() -> Vec<Service> {
    let host = |addr: &str| (300, Netmask::host(ip(addr)));
    vec![
        service(Tcp, "2001:db8::2", 443, "rr", &[], Some((300, Netmask::V6(64))),
            [[2, 6, 4, 450, 304], [0, 1, 0, 42, 28]], vec![
            server("2001:db8::11", 443, Dr, 1, [2, 0, 1], [[2, 6, 4, 450, 304], [0, 1, 0, 42, 28]]),
            server("2001:db8::10", 443, Dr, 1, [0, 0, 0], IDLE),
        ]),
        service(Tcp, "10.0.0.100", 80, "rr", &[], None, [[2, 7, 5, 382, 276], [0, 1, 0, 36, 26]], vec![
            server("10.0.0.11", 80, Dr, 1, [1, 0, 0], [[1, 3, 2, 165, 112], [0, 0, 0, 15, 10]]),
            server("10.0.0.10", 80, Dr, 1, [0, 1, 0], [[1, 4, 3, 217, 164], [0, 0, 0, 20, 15]]),
        ]),
        service(Udp, LONG1, 65535, "mh", &["mh-port"], None, [[1, 1, 0, 49, 0], [0, 0, 0, 5, 0]], vec![
            server(LONG2, 65535, Dr, 1, [0, 1, 0], [[1, 1, 0, 49, 0], [0, 0, 0, 5, 0]]),
        ]),
        service(Udp, "2001:db8::1", 53, "rr", &[], None, [[2, 2, 0, 98, 0], [0, 0, 0, 9, 0]], vec![
            server("2001:db8::11", 5353, Nat, 1, [0, 1, 0], [[1, 1, 0, 49, 0], [0, 0, 0, 5, 0]]),
            server("2001:db8::10", 53, Dr, 1, [0, 1, 0], [[1, 1, 0, 49, 0], [0, 0, 0, 5, 0]]),
        ]),
        service(Tcp, "2001:db8::3", 0, "sh", &[], Some((600, host("2001:db8::3").1)), ONE_V6, vec![
            server("2001:db8::11", 0, Dr, 1, [1, 0, 1], ONE_V6),
            server("2001:db8::10", 0, Dr, 1, [0, 0, 0], IDLE),
        ]),
        service(Tcp, "2001:db8::1", 80, "wrr", &[], None, [[5, 17, 12, 1269, 904], [0, 2, 1, 119, 85]], vec![
            server("2001:db8::12", 80, Tun, 1, [1, 0, 0], ONE_V6),
            server(LONG1, 65535, Nat, 1, [0, 1, 0], [[1, 4, 3, 297, 224], [0, 0, 0, 28, 21]]),
            {
                let mut r = server("2001:db8::11", 80, Dr, 1, [1, 0, 0], ONE_V6);
                (r.upper_threshold, r.lower_threshold) = (100, 50);
                r
            },
            server("2001:db8::10", 80, Dr, 2, [1, 1, 0], [[2, 7, 5, 522, 376], [0, 1, 0, 49, 35]]),
        ]),
    ]
}

/// The firewall-mark services of commands.sh, in IPVS's order.
#[rustfmt::skip]
fn fwmark_services() -> Vec<Service> {
    use Family::{Ipv4, Ipv6};
    let host = Netmask::V4(Ipv4Addr::BROADCAST);
    let v4_one = [[1, 3, 2, 165, 112], [0, 0, 0, 15, 10]];
    vec![
        fwmark_service(1, Ipv4, "wlc", Some((300, host)), v4_one, vec![
            server("10.0.0.11", 0, Dr, 1, [1, 0, 1], v4_one),
            server("10.0.0.10", 0, Dr, 2, [0, 0, 0], IDLE),
        ]),
        fwmark_service(2, Ipv6, "rr", None, ONE_V6, vec![
            server("2001:db8::11", 0, Tun, 1, [1, 0, 0], ONE_V6),
            server("2001:db8::10", 0, Dr, 1, [0, 0, 0], IDLE),
        ]),
        fwmark_service(3, Ipv4, "rr", Some((60, Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)))), IDLE, vec![
            server("10.0.0.12", 0, Dr, 1, [0, 0, 0], IDLE),
        ]),
        fwmark_service(4, Ipv6, "wrr", Some((120, Netmask::V6(64))), ONE_V6, vec![
            server("2001:db8::10", 0, Dr, 3, [1, 0, 1], ONE_V6),
        ]),
    ]
}

/// The whole table of commands.sh, in IPVS's order.
fn reference_table() -> Table {
    Table { conn_table_size: 4096, services: [address_services(), fwmark_services()].concat() }
}

/// One line of `L-n-c.txt` (and `L-c.txt`): protocol, expiry (with `-n`,
/// and 2 s later without), state, source, virtual, destination, template,
/// and the firewall mark of a firewall-mark service's template (whose
/// protocol and virtual address lbd need not set: not shown).
type ConnRow = (Protocol, u32, u32, &'static str, &'static str, &'static str, &'static str, bool, Option<u32>);

/// The connection table, in the kernel's order.
#[rustfmt::skip]
const CONNS: [ConnRow; 20] = [
    (Tcp, 115, 110, "ASSURED", "[2001:db8::]:0", "[::]:0", "[2001:db8::10]:0", true, Some(4)),
    (Tcp, 895, 890, "ESTABLISHED", "[2001:db8::20]:44123", "[2001:db8::1]:80", "[2001:db8::12]:80", false, None),
    (Tcp, 895, 890, "ESTABLISHED", "[2001:db8::20]:46891", "[2001:db8::4]:9000", "[2001:db8::11]:9000", false, None),
    (Tcp, 55, 50, "CLOSE_WAIT", "[2001:db8::20]:52609", "[2001:db8::1]:80", "[2001:db8::10]:80", false, None),
    (Tcp, 295, 290, "ASSURED", "[2001:db8::]:0", "[2001:db8::2]:443", "[2001:db8::11]:443", true, None),
    (Tcp, 895, 890, "ESTABLISHED", "[2001:db8::20]:34619", "[2001:db8::1]:80", "[2001:db8::10]:80", false, None),
    (Tcp, 895, 889, "ESTABLISHED", "[2001:db8::20]:57669", "[2001:db8::2]:443", "[2001:db8::11]:443", false, None),
    (Tcp, 895, 889, "ESTABLISHED", "[2001:db8::20]:49005", "[2001:db8::3]:8080", "[2001:db8::11]:8080", false, None),
    (Tcp, 595, 589, "ASSURED", "[2001:db8::20]:0", "[2001:db8::3]:0", "[2001:db8::11]:0", true, None),
    (Tcp, 295, 289, "ASSURED", "10.0.0.20:0", "0.0.0.0:0", "10.0.0.11:0", true, Some(1)),
    (Tcp, 895, 889, "ESTABLISHED", "10.0.0.20:50877", "10.0.0.100:80", "10.0.0.11:80", false, None),
    (Udp, 295, 289, "UDP", "[2001:db8::20]:48195", "[2001:db8::1]:53", "[2001:db8::10]:53", false, None),
    (Udp, 295, 289, "UDP", "[2001:db8::20]:35863", "[2001:db8:ffff:ffff:ffff:ffff:ffff:fff1]:65535",
        "[2001:db8:ffff:ffff:ffff:ffff:ffff:fff2]:65535", false, None),
    (Tcp, 895, 889, "ESTABLISHED", "[2001:db8::20]:46913", "[2001:db8::1]:80", "[2001:db8::11]:80", false, None),
    (Tcp, 895, 888, "ESTABLISHED", "[2001:db8::20]:51357", "[2001:db8::2]:443", "[2001:db8::11]:443", false, None),
    (Tcp, 55, 48, "CLOSE_WAIT", "10.0.0.20:36017", "10.0.0.100:80", "10.0.0.10:80", false, None),
    (Tcp, 55, 48, "CLOSE_WAIT", "[2001:db8::20]:38129", "[2001:db8::1]:80",
        "[2001:db8:ffff:ffff:ffff:ffff:ffff:fff1]:65535", false, None),
    (Tcp, 895, 888, "ESTABLISHED", "[2001:db8::20]:44981", "[2001:db8::4]:9001", "[2001:db8::10]:9001", false, None),
    (Udp, 295, 288, "UDP", "[2001:db8::20]:32995", "[2001:db8::1]:53", "[2001:db8::11]:5353", false, None),
    (Tcp, 895, 888, "ESTABLISHED", "10.0.0.20:34695", "10.0.0.200:9000", "10.0.0.11:9000", false, None),
];

fn connection(row: ConnRow, named: bool) -> Connection {
    let (protocol, expires_n, expires_named, state, client, vip, real, template, fwmark) = row;
    let sock = |s: &str| s.parse::<SocketAddr>().unwrap();
    let (client, vip, real) = (sock(client), sock(vip), sock(real));
    Connection {
        protocol,
        expires_in: if named { expires_named } else { expires_n },
        state: state.to_owned(),
        client: client.ip(),
        client_port: client.port(),
        vip: vip.ip(),
        vport: vip.port(),
        real: real.ip(),
        real_port: real.port(),
        template,
        fwmark,
    }
}

fn conns(named: bool) -> Vec<Connection> {
    CONNS.iter().map(|row| connection(*row, named)).collect()
}

#[test]
fn ipv6_list_numeric_matches_ipvsadm() {
    assert_text_eq(&list(&reference_table(), &numeric()), L_N);
}

#[test]
fn ipv6_list_nosort_keeps_ipvs_order() {
    let opts = ListOptions { sort: false, ..numeric() };
    assert_text_eq(&list(&reference_table(), &opts), L_N_NOSORT);
}

#[test]
fn ipv6_list_with_port_names_matches_ipvsadm() {
    let ports = Services::parse(CAPTURE_SERVICES);
    assert_text_eq(&list_with(&reference_table(), &ListOptions::default(), &ports), L);
}

#[test]
fn ipv6_list_columns_match_ipvsadm() {
    for (opts, reference) in [
        (ListOptions { stats: true, ..numeric() }, L_N_STATS),
        (ListOptions { stats: true, exact: true, ..numeric() }, L_N_STATS_EXACT),
        (ListOptions { rate: true, ..numeric() }, L_N_RATE),
        (ListOptions { thresholds: true, ..numeric() }, L_N_THRESHOLDS),
        (ListOptions { persistent_conn: true, ..numeric() }, L_N_PERSISTENT_CONN),
        (ListOptions { tun_info: true, ..numeric() }, L_N_TUN_INFO),
    ] {
        assert_text_eq(&list(&reference_table(), &opts), reference);
    }
}

#[test]
fn ipv6_single_service_listings_match_ipvsadm() {
    let table = reference_table();
    let find = |id: VirtualService| table.services.iter().find(|s| s.id == id).unwrap();
    assert_text_eq(&list_service(find(address(Tcp, ip("2001:db8::1"), 80)), &numeric()), L_N_T);
    assert_text_eq(&list_service(find(address(Udp, ip("2001:db8::1"), 53)), &numeric()), L_N_U);
    assert_text_eq(&list_service(find(fwmark(1, Family::Ipv4)), &numeric()), L_N_F_1);
    assert_text_eq(&list_service(find(fwmark(2, Family::Ipv6)), &numeric()), L_N_F_2);
}

/// Our save adds the thresholds ipvsadm drops; otherwise it is ipvsadm's.
#[test]
fn ipv6_save_matches_ipvsadm_plus_thresholds() {
    let thresholds = |text: String| {
        text.replace(
            "-a -t [2001:db8::1]:80 -r [2001:db8::11]:80 -g -w 1\n",
            "-a -t [2001:db8::1]:80 -r [2001:db8::11]:80 -g -w 1 -x 100 -y 50\n",
        )
    };
    assert_text_eq(&save(&reference_table(), true), &thresholds(S_N.to_owned()));

    let ports = Services::parse(CAPTURE_SERVICES);
    let mut table = reference_table();
    table.services.iter_mut().flat_map(|s| &mut s.reals).for_each(|r| (r.upper_threshold, r.lower_threshold) = (0, 0));
    assert_text_eq(&save_with(&table, false, &ports), S);
}

#[test]
fn ipv6_connections_match_ipvsadm() {
    assert_text_eq(&list_connections(&conns(false), &numeric()), L_N_C);
    let opts = ListOptions { persistent_conn: true, ..numeric() };
    assert_text_eq(&list_connections(&conns(false), &opts), L_N_C_PERSISTENT_CONN);
    let ports = Services::parse(CAPTURE_SERVICES);
    let named = list_connections_with(&conns(true), &ListOptions::default(), &ports);
    assert_text_eq(&named, L_C);
}

/// libipvs's order is not a total order: three addresses 2^30 and more
/// apart in the first word make a cycle, each "before" the next. The sort
/// does not fail, and gives glibc's merge order.
#[test]
fn cyclic_address_order_sorts_as_glibc_does() {
    let (a, b, c) = (ip("0.0.0.1"), ip("96.0.0.1"), ip("192.0.0.1"));
    assert!(cmp_addr(a, b) < 0 && cmp_addr(b, c) < 0 && cmp_addr(c, a) < 0);
    let template = address_services().swap_remove(1);
    let table = Table {
        conn_table_size: 4096,
        services: [b, a, c].into_iter().map(|vip| moved(&template, vip, 80)).collect(),
    };
    // [b] and [a, c] sorted to [c, a]; merged: b before c, then c, a.
    let order: Vec<IpAddr> =
        ordered_services(&table.services, true).iter().map(|s| s.id.address().unwrap().addr).collect();
    assert_eq!(order, [b, c, a]);
}

/// What lbd sends: the service's identity as an enum, the template's mark
/// only when there is one.
#[test]
fn snapshot_json_shape() {
    let table = reference_table();
    let json = serde_json::to_string(&table).unwrap();
    assert!(json.contains(r#""id":{"address":{"protocol":"tcp","addr":"2001:db8::2","port":443}}"#), "{json}");
    assert!(json.contains(r#""id":{"fwmark":{"mark":4,"family":"ipv6"}}"#), "{json}");
    assert_eq!(serde_json::from_str::<Table>(&json).unwrap(), table);

    let conns = conns(false);
    let json = serde_json::to_string(&conns).unwrap();
    assert_eq!(json.matches(r#""fwmark":"#).count(), 2, "{json}");
    assert!(json.contains(r#""template":true,"fwmark":4}"#), "{json}");
    assert_eq!(serde_json::from_str::<Vec<Connection>>(&json).unwrap(), conns);
}

/// ipvsadm prints a mark with `%d`: from 2^31 on it is negative in
/// listings, and libipvs's subtraction sorts it before mark 0 (the address
/// services). `-S` writes it unsigned, so that `-R` reads it back.
#[test]
fn large_marks() {
    let mut big = fwmark_services().swap_remove(2);
    big.id = fwmark(0x8000_0001, Family::Ipv4);
    let table = Table { conn_table_size: 4096, services: vec![address_services().swap_remove(1), big] };
    let out = list(&table, &numeric());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[3], "FWM  -2147483647 rr persistent 60 mask 255.255.255.0");
    assert_eq!(lines[5], "TCP  10.0.0.100:80 rr");
    let saved = save(&table, true);
    let rules = "-A -f 2147483649 -s rr -p 60 -M 255.255.255.0\n-a -f 2147483649 -r 10.0.0.12:0 -g -w 1\n";
    assert!(saved.starts_with(rules), "{saved}");
    let stats = list(&table, &ListOptions { stats: true, ..numeric() });
    assert!(stats.contains(&format!("\n{:<33}{:>9}{:>9}", "FWM  -2147483647", 0, 0)), "{stats}");
}
