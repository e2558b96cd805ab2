//! The formats byte for byte against ipvsadm 1.31's literal output.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::*;
use crate::command::ServiceAddress;
use crate::snapshot::{Rates, Stats};

mod ipv6;

const L_N: &str = include_str!("../../tests/fixtures/ipvsadm/L-n.txt");
const L_N_STATS: &str = include_str!("../../tests/fixtures/ipvsadm/L-n-stats.txt");
const L_N_STATS_EXACT: &str = include_str!("../../tests/fixtures/ipvsadm/L-n-stats-exact.txt");
const L_N_RATE: &str = include_str!("../../tests/fixtures/ipvsadm/L-n-rate.txt");
const L_N_THRESHOLDS: &str = include_str!("../../tests/fixtures/ipvsadm/L-n-thresholds.txt");
const L_N_PERSISTENT_CONN: &str = include_str!("../../tests/fixtures/ipvsadm/L-n-persistent-conn.txt");
const L_N_TUN_INFO: &str = include_str!("../../tests/fixtures/ipvsadm/L-n-tun-info.txt");
const L_N_C: &str = include_str!("../../tests/fixtures/ipvsadm/L-n-c.txt");
const S_N: &str = include_str!("../../tests/fixtures/ipvsadm/S-n.txt");
const S: &str = include_str!("../../tests/fixtures/ipvsadm/S.txt");
const L_TIMEOUT: &str = include_str!("../../tests/fixtures/ipvsadm/L-timeout.txt");

use Forwarding::{Dr, Nat, Tun};
use Protocol::{Tcp, Udp};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 100);

fn host(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 200, 1, last))
}

/// The `-t|-u` service `addr:port`.
fn address(protocol: Protocol, addr: IpAddr, port: u16) -> VirtualService {
    VirtualService::Address(ServiceAddress { protocol, addr, port })
}

/// `service` moved to `addr:port` (same protocol).
fn moved(service: &Service, addr: IpAddr, port: u16) -> Service {
    let protocol = service.id.address().unwrap().protocol;
    Service { id: address(protocol, addr, port), ..service.clone() }
}

/// The firewall-mark service `mark` of `family`.
fn fwmark(mark: u32, family: Family) -> VirtualService {
    VirtualService::Fwmark(FwmarkService { mark, family })
}

fn stats([conns, in_packets, out_packets, in_bytes, out_bytes]: [u64; 5]) -> Stats {
    Stats { conns, in_packets, out_packets, in_bytes, out_bytes }
}

fn rates([cps, in_pps, out_pps, in_bps, out_bps]: [u64; 5]) -> Rates {
    Rates { cps, in_pps, out_pps, in_bps, out_bps }
}

#[allow(clippy::too_many_arguments)]
fn svc(
    protocol: Protocol,
    port: u16,
    scheduler: &str,
    flags: &[&str],
    persistence_timeout: Option<u32>,
    svc_stats: [u64; 5],
    svc_rates: [u64; 5],
    reals: Vec<Real>,
) -> Service {
    Service {
        id: address(protocol, IpAddr::V4(VIP), port),
        scheduler: scheduler.to_owned(),
        sched_flags: flags.iter().map(|f| f.to_string()).collect(),
        persistence_timeout,
        persistence_netmask: None,
        stats: stats(svc_stats),
        rates: rates(svc_rates),
        reals,
    }
}

/// A real server 10.200.1.`last`: `conns` is [active, inactive,
/// persistent], `thresholds` [upper, lower].
#[allow(clippy::too_many_arguments)]
fn real(
    last: u8,
    port: u16,
    forwarding: Forwarding,
    weight: u32,
    [active_conns, inactive_conns, persistent_conns]: [u64; 3],
    [upper_threshold, lower_threshold]: [u32; 2],
    real_stats: [u64; 5],
    real_rates: [u64; 5],
) -> Real {
    Real {
        address: host(last),
        port,
        forwarding,
        weight,
        active_conns,
        inactive_conns,
        persistent_conns,
        upper_threshold,
        lower_threshold,
        stats: stats(real_stats),
        rates: rates(real_rates),
    }
}

/// The table behind the reference files, values read off L-n,
/// --persistent-conn, --thresholds, --stats and --rate. Reals are in IPVS
/// order (reverse of insertion) and services in reverse of listing order,
/// so the formatters must sort both.
#[rustfmt::skip]
fn reference_table() -> Table {
    let mut services = vec![
        Service {
            id: fwmark(1, Family::Ipv4),
            persistence_netmask: Some(Netmask::V4(Ipv4Addr::new(255, 255, 255, 0))),
            ..svc(Tcp, 0, "wrr", &[], Some(60), [0; 5], [0; 5], vec![
                real(22, 0, Dr, 1, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
                real(21, 0, Dr, 2, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            ])
        },
        svc(Tcp, 80, "wlc", &[], None, [658, 3282, 0, 175928, 0], [31, 157, 0, 8399, 0], vec![
            real(23, 80, Dr, 1, [1, 24, 0], [100, 50], [25, 123, 0, 6596, 0], [0, 0, 0, 9, 0]),
            real(22, 80, Dr, 2, [1, 303, 0], [0, 0], [304, 1518, 0, 81368, 0], [16, 78, 0, 4161, 0]),
            real(21, 80, Dr, 3, [2, 327, 0], [0, 0], [329, 1641, 0, 87964, 0], [16, 79, 0, 4230, 0]),
        ]),
        // Flags deliberately out of ipvsadm's order.
        svc(Tcp, 81, "sh", &["sh-port", "sh-fallback"], None, [0; 5], [0; 5], vec![
            real(23, 81, Dr, 0, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(22, 81, Tun, 1, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8081, Nat, 1, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
        ]),
        svc(Tcp, 443, "rr", &[], Some(300), [6, 30, 0, 1608, 0], [0, 1, 0, 64, 0], vec![
            real(22, 443, Dr, 1, [0, 6, 1], [0, 0], [6, 30, 0, 1608, 0], [0, 1, 0, 64, 0]),
            real(21, 443, Dr, 1, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
        ]),
        svc(Tcp, 8001, "rr", &[], None, [27, 135, 0, 7236, 0], [0, 2, 0, 82, 0], vec![
            real(23, 8001, Dr, 0, [0, 6, 0], [0, 0], [6, 30, 0, 1608, 0], [0, 0, 0, 4, 0]),
            real(22, 8001, Dr, 3, [0, 11, 0], [0, 0], [11, 55, 0, 2948, 0], [0, 1, 0, 43, 0]),
            real(21, 8001, Dr, 4, [0, 10, 0], [0, 0], [10, 50, 0, 2680, 0], [0, 1, 0, 35, 0]),
        ]),
        svc(Tcp, 8002, "wrr", &[], None, [24, 120, 0, 6432, 0], [0, 1, 0, 67, 0], vec![
            real(23, 8002, Dr, 2, [0, 6, 0], [0, 0], [6, 30, 0, 1608, 0], [0, 0, 0, 21, 0]),
            real(22, 8002, Dr, 3, [0, 9, 0], [0, 0], [9, 45, 0, 2412, 0], [0, 1, 0, 31, 0]),
            real(21, 8002, Dr, 4, [0, 9, 0], [2, 0], [9, 45, 0, 2412, 0], [0, 0, 0, 15, 0]),
        ]),
        svc(Tcp, 8003, "lc", &[], None, [18, 90, 0, 4824, 0], [0, 0, 0, 14, 0], vec![
            real(23, 8003, Dr, 2, [0, 6, 0], [0, 0], [6, 30, 0, 1608, 0], [0, 0, 0, 5, 0]),
            real(22, 8003, Dr, 3, [0, 6, 0], [0, 0], [6, 30, 0, 1608, 0], [0, 0, 0, 5, 0]),
            real(21, 8003, Dr, 4, [0, 6, 0], [0, 0], [6, 30, 0, 1608, 0], [0, 0, 0, 5, 0]),
        ]),
        svc(Tcp, 8004, "wlc", &[], None, [18, 90, 0, 4824, 0], [0, 0, 0, 19, 0], vec![
            real(23, 8004, Dr, 2, [0, 4, 0], [0, 0], [4, 20, 0, 1072, 0], [0, 0, 0, 4, 0]),
            real(22, 8004, Dr, 3, [0, 6, 0], [0, 0], [6, 30, 0, 1608, 0], [0, 0, 0, 6, 0]),
            real(21, 8004, Dr, 4, [0, 8, 0], [0, 0], [8, 40, 0, 2144, 0], [0, 0, 0, 8, 0]),
        ]),
        svc(Tcp, 8005, "sed", &[], None, [18, 90, 0, 4824, 0], [0, 0, 0, 24, 0], vec![
            real(23, 8005, Dr, 2, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(22, 8005, Dr, 3, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8005, Dr, 4, [0, 18, 0], [0, 0], [18, 90, 0, 4824, 0], [0, 0, 0, 24, 0]),
        ]),
        svc(Tcp, 8006, "nq", &[], None, [18, 90, 0, 4824, 0], [0, 0, 0, 26, 0], vec![
            real(23, 8006, Dr, 2, [0, 18, 0], [0, 0], [18, 90, 0, 4824, 0], [0, 0, 0, 26, 0]),
            real(22, 8006, Dr, 3, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8006, Dr, 4, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
        ]),
        svc(Tcp, 8007, "sh", &[], None, [18, 90, 0, 4824, 0], [0, 1, 0, 34, 0], vec![
            real(23, 8007, Dr, 2, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(22, 8007, Dr, 3, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8007, Dr, 4, [0, 18, 0], [0, 0], [18, 90, 0, 4824, 0], [0, 1, 0, 34, 0]),
        ]),
        svc(Tcp, 8008, "dh", &[], None, [18, 90, 0, 4824, 0], [0, 1, 0, 45, 0], vec![
            real(23, 8008, Dr, 2, [0, 18, 0], [0, 0], [18, 90, 0, 4824, 0], [0, 1, 0, 45, 0]),
            real(22, 8008, Dr, 3, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8008, Dr, 4, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
        ]),
        svc(Tcp, 8009, "mh", &[], None, [18, 90, 0, 4824, 0], [0, 1, 0, 50, 0], vec![
            real(23, 8009, Dr, 2, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(22, 8009, Dr, 3, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8009, Dr, 4, [0, 18, 0], [0, 0], [18, 90, 0, 4824, 0], [0, 1, 0, 50, 0]),
        ]),
        svc(Tcp, 8010, "lblc", &[], None, [18, 90, 0, 4824, 0], [0, 1, 0, 60, 0], vec![
            real(23, 8010, Dr, 2, [0, 18, 0], [0, 0], [18, 90, 0, 4824, 0], [0, 1, 0, 60, 0]),
            real(22, 8010, Dr, 3, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8010, Dr, 4, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
        ]),
        svc(Tcp, 8011, "lblcr", &[], None, [18, 90, 0, 4824, 0], [0, 1, 0, 80, 0], vec![
            real(23, 8011, Dr, 2, [0, 18, 0], [0, 0], [18, 90, 0, 4824, 0], [0, 1, 0, 80, 0]),
            real(22, 8011, Dr, 3, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8011, Dr, 4, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
        ]),
        svc(Tcp, 8012, "fo", &[], None, [18, 90, 0, 4824, 0], [0, 2, 0, 91, 0], vec![
            real(23, 8012, Dr, 0, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(22, 8012, Dr, 0, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8012, Dr, 0, [0, 18, 0], [0, 0], [18, 90, 0, 4824, 0], [0, 2, 0, 91, 0]),
        ]),
        svc(Tcp, 8013, "ovf", &[], None, [18, 90, 0, 4824, 0], [0, 2, 0, 107, 0], vec![
            real(23, 8013, Dr, 2, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(22, 8013, Dr, 3, [0, 0, 0], [0, 0], [0; 5], [0; 5]),
            real(21, 8013, Dr, 4, [0, 18, 0], [0, 0], [18, 90, 0, 4824, 0], [0, 2, 0, 107, 0]),
        ]),
        svc(Udp, 53, "rr", &[], None, [6, 6, 0, 174, 0], [0, 0, 0, 7, 0], vec![
            real(22, 53, Dr, 1, [0, 3, 0], [0, 0], [3, 3, 0, 87, 0], [0, 0, 0, 3, 0]),
            real(21, 53, Dr, 1, [0, 3, 0], [0, 0], [3, 3, 0, 87, 0], [0, 0, 0, 3, 0]),
        ]),
    ];
    services.reverse();
    Table { conn_table_size: 4096, services }
}

fn numeric() -> ListOptions {
    ListOptions { numeric: true, ..ListOptions::default() }
}

/// Compares line by line first so a failure names the line.
fn assert_text_eq(actual: &str, expected: &str) {
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "line {} differs", i + 1);
    }
    assert_eq!(actual, expected);
}

#[test]
fn list_numeric_matches_ipvsadm() {
    assert_text_eq(&list(&reference_table(), &numeric()), L_N);
}

#[test]
fn list_stats_matches_ipvsadm() {
    let opts = ListOptions { stats: true, ..numeric() };
    assert_text_eq(&list(&reference_table(), &opts), L_N_STATS);
}

#[test]
fn list_stats_exact_matches_ipvsadm() {
    let opts = ListOptions { stats: true, exact: true, ..numeric() };
    assert_text_eq(&list(&reference_table(), &opts), L_N_STATS_EXACT);
}

#[test]
fn list_rate_matches_ipvsadm() {
    let opts = ListOptions { rate: true, ..numeric() };
    assert_text_eq(&list(&reference_table(), &opts), L_N_RATE);
}

#[test]
fn list_thresholds_matches_ipvsadm() {
    let opts = ListOptions { thresholds: true, ..numeric() };
    assert_text_eq(&list(&reference_table(), &opts), L_N_THRESHOLDS);
}

#[test]
fn list_persistent_conn_matches_ipvsadm() {
    let opts = ListOptions { persistent_conn: true, ..numeric() };
    assert_text_eq(&list(&reference_table(), &opts), L_N_PERSISTENT_CONN);
}

#[test]
fn list_tun_info_matches_ipvsadm() {
    let opts = ListOptions { tun_info: true, ..numeric() };
    assert_text_eq(&list(&reference_table(), &opts), L_N_TUN_INFO);
}

/// Our save adds the thresholds ipvsadm drops; otherwise it is S-n.txt.
#[test]
fn save_numeric_matches_ipvsadm_plus_thresholds() {
    let expected = S_N
        .replace(
            "-a -t 10.200.1.100:80 -r 10.200.1.23:80 -g -w 1\n",
            "-a -t 10.200.1.100:80 -r 10.200.1.23:80 -g -w 1 -x 100 -y 50\n",
        )
        .replace(
            "-a -t 10.200.1.100:8002 -r 10.200.1.21:8002 -g -w 4\n",
            "-a -t 10.200.1.100:8002 -r 10.200.1.21:8002 -g -w 4 -x 2\n",
        );
    assert_text_eq(&save(&reference_table(), true), &expected);
}

/// The reference machine's /etc/services entries for the ports in the
/// table (Debian netbase), so the test does not depend on this host's.
const REFERENCE_SERVICES: &str = "\
domain          53/tcp                          # Domain Name Server
domain          53/udp
http            80/tcp          www             # WorldWideWeb HTTP
https           443/tcp                         # http protocol over TLS/SSL
https           443/udp                         # HTTP/3
tproxy          8081/tcp                        # Transparent Proxy
";

#[test]
fn save_with_port_names_matches_ipvsadm() {
    let ports = Services::parse(REFERENCE_SERVICES);
    let mut table = reference_table();
    for service in &mut table.services {
        for real in &mut service.reals {
            (real.upper_threshold, real.lower_threshold) = (0, 0);
        }
    }
    assert_text_eq(&save_with(&table, false, &ports), S);
}

#[test]
fn list_with_port_names() {
    let ports = Services::parse(REFERENCE_SERVICES);
    let out = list_with(&reference_table(), &ListOptions::default(), &ports);
    assert!(out.contains("TCP  10.200.1.100:http wlc\n"), "{out}");
    assert!(out.contains("  -> 10.200.1.21:tproxy           Masq    1      0          0         \n"), "{out}");
    assert!(out.contains("UDP  10.200.1.100:domain rr\n"), "{out}");
    // 8081 is named for TCP only.
    assert_eq!(ports.name(8081, Udp), None);
}

fn conn(
    protocol: Protocol,
    expires_in: u32,
    state: &str,
    client_port: u16,
    vport: u16,
    real_last: u8,
    template: bool,
) -> Connection {
    Connection {
        protocol,
        expires_in,
        state: state.to_owned(),
        client: host(10),
        client_port,
        vip: IpAddr::V4(VIP),
        vport,
        real: host(real_last),
        real_port: vport,
        template,
        fwmark: None,
    }
}

#[test]
fn list_connections_matches_ipvsadm() {
    let conns = [
        conn(Tcp, 105, "FIN_WAIT", 33374, 80, 22, false),
        conn(Tcp, 94, "FIN_WAIT", 49134, 8011, 23, false),
        conn(Tcp, 105, "FIN_WAIT", 33236, 80, 21, false),
        conn(Tcp, 92, "FIN_WAIT", 55608, 8010, 23, false),
        conn(Tcp, 108, "FIN_WAIT", 34266, 80, 21, false),
        conn(Tcp, 109, "FIN_WAIT", 34962, 80, 21, false),
        conn(Tcp, 84, "FIN_WAIT", 59768, 8005, 21, false),
        conn(Tcp, 107, "FIN_WAIT", 33864, 80, 22, false),
        conn(Tcp, 108, "FIN_WAIT", 34556, 80, 21, false),
        conn(Tcp, 87, "FIN_WAIT", 58394, 8007, 21, false),
        // The persistence template of the 443 service.
        conn(Tcp, 280, "ASSURED", 0, 443, 22, true),
        conn(Udp, 281, "UDP", 43332, 53, 22, false),
        conn(Udp, 281, "UDP", 44922, 53, 21, false),
        conn(Udp, 281, "UDP", 44213, 53, 21, false),
        conn(Udp, 281, "UDP", 36392, 53, 21, false),
    ];
    assert_text_eq(&list_connections(&conns, &numeric()), L_N_C);
}

#[test]
fn timeouts_match_ipvsadm() {
    let both = timeouts(&Timeouts { tcp: 900, tcpfin: 120, udp: 300 })
        + &timeouts(&Timeouts { tcp: 600, tcpfin: 60, udp: 120 });
    assert_eq!(both, L_TIMEOUT);
}

#[test]
fn largenum_rounds_like_print_largenum() {
    assert_eq!(format_largenum(0, false), "        0");
    assert_eq!(format_largenum(99_999_999, false), " 99999999");
    assert_eq!(format_largenum(100_000_000, false), "  100000K");
    assert_eq!(format_largenum(999_999_999, false), "  999999K");
    assert_eq!(format_largenum(1_000_000_000, false), "    1000M");
    assert_eq!(format_largenum(99_999_999_999, false), "   99999M");
    assert_eq!(format_largenum(100_000_000_000, false), "     100G");
    assert_eq!(format_largenum(99_999_999_999_999, false), "   99999G");
    assert_eq!(format_largenum(100_000_000_000_000, false), "     100T");
    assert_eq!(format_largenum(u64::MAX, false), "18446744T");
}

#[test]
fn largenum_exact_keeps_a_leading_blank() {
    assert_eq!(format_largenum(42, true), "       42");
    assert_eq!(format_largenum(12_345_678, true), " 12345678");
    assert_eq!(format_largenum(123_456_789, true), " 123456789");
    assert_eq!(format_largenum(u64::MAX, true), " 18446744073709551615");
}

fn big_service() -> Service {
    let big = [123_456_789_012, 5_000_000_000, 0, 987_654_321, 100_000_000];
    svc(Tcp, 80, "rr", &[], None, big, big, vec![real(21, 80, Dr, 1, [0; 3], [0; 2], big, big)])
}

/// A `--stats`/`--rate` line: the name padded to 33 columns, then the
/// number cells as given.
fn counter_line(name: &str, cells: [&str; 5]) -> String {
    format!("{name:<33}{}\n", cells.concat())
}

#[test]
fn large_counters_get_suffixes_unless_exact() {
    let table = Table { conn_table_size: 4096, services: vec![big_service()] };
    let rounded = ["     123G", "    5000M", "        0", "  987654K", "  100000K"];
    let stats = list(&table, &ListOptions { stats: true, ..numeric() });
    let expected = counter_line("TCP  10.200.1.100:80", rounded) + &counter_line("  -> 10.200.1.21:80", rounded);
    assert!(stats.ends_with(&expected), "{stats}");

    let exact_cells = [" 123456789012", " 5000000000", "        0", " 987654321", " 100000000"];
    let exact = list(&table, &ListOptions { stats: true, exact: true, ..numeric() });
    let expected =
        counter_line("TCP  10.200.1.100:80", exact_cells) + &counter_line("  -> 10.200.1.21:80", exact_cells);
    assert!(exact.ends_with(&expected), "{exact}");
}

#[test]
fn real_server_cps_and_pps_rates_are_never_rounded() {
    let table = Table { conn_table_size: 4096, services: vec![big_service()] };
    let rate = list(&table, &ListOptions { rate: true, ..numeric() });
    let service_cells = ["     123G", "    5000M", "        0", "  987654K", "  100000K"];
    let real_cells = [" 123456789012", " 5000000000", "        0", "  987654K", "  100000K"];
    let expected =
        counter_line("TCP  10.200.1.100:80", service_cells) + &counter_line("  -> 10.200.1.21:80", real_cells);
    assert!(rate.ends_with(&expected), "{rate}");
}

#[test]
fn nosort_keeps_ipvs_order() {
    let opts = ListOptions { sort: false, ..numeric() };
    let out = list(&reference_table(), &opts);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[3], "UDP  10.200.1.100:53 rr");
    assert!(lines[4].starts_with("  -> 10.200.1.22:53 "));
    assert!(lines[5].starts_with("  -> 10.200.1.21:53 "));
    assert_eq!(lines[6], "TCP  10.200.1.100:8013 ovf");
}

#[test]
fn persistence_mask_is_shown_unless_host_mask() {
    let mut service = svc(Tcp, 80, "wrr", &[], Some(60), [0; 5], [0; 5], vec![]);
    service.persistence_netmask = Some(Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)));
    let mut host_mask = moved(&service, IpAddr::V4(VIP), 81);
    host_mask.persistence_netmask = Some(Netmask::V4(Ipv4Addr::BROADCAST));
    let table = Table { conn_table_size: 4096, services: vec![service, host_mask] };
    let out = list(&table, &numeric());
    assert!(out.contains("TCP  10.200.1.100:80 wrr persistent 60 mask 255.255.255.0\n"), "{out}");
    assert!(out.contains("TCP  10.200.1.100:81 wrr persistent 60\n"), "{out}");
    let saved = save(&table, true);
    assert_eq!(saved, "-A -t 10.200.1.100:80 -s wrr -p 60 -M 255.255.255.0\n-A -t 10.200.1.100:81 -s wrr -p 60\n");
}

#[test]
fn ipv6_persistence_mask_is_a_prefix_length() {
    let vip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    let mut service = moved(&svc(Tcp, 80, "wrr", &[], Some(60), [0; 5], [0; 5], vec![]), vip, 80);
    service.persistence_netmask = Some(Netmask::V6(64));
    let mut host_mask = moved(&service, vip, 81);
    host_mask.persistence_netmask = Some(Netmask::V6(128));
    let table = Table { conn_table_size: 4096, services: vec![service, host_mask] };
    let out = list(&table, &numeric());
    assert!(out.contains("TCP  [2001:db8::1]:80 wrr persistent 60 mask 64\n"), "{out}");
    assert!(out.contains("TCP  [2001:db8::1]:81 wrr persistent 60\n"), "{out}");
    let saved = save(&table, true);
    assert_eq!(saved, "-A -t [2001:db8::1]:80 -s wrr -p 60 -M 64\n-A -t [2001:db8::1]:81 -s wrr -p 60\n");
}

#[test]
fn ipv6_is_bracketed_untruncated_and_sorted_after_ipv4() {
    let v6 = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, last));
    let mut service = moved(&svc(Udp, 53, "mh", &["mh-port"], None, [0; 5], [0; 5], vec![]), v6(1), 53);
    let mut r = real(0, 53, Nat, 2, [0; 3], [0; 2], [0; 5], [0; 5]);
    r.address = v6(0x10);
    service.reals.push(r);
    let v4 = svc(Udp, 53, "rr", &[], None, [0; 5], [0; 5], vec![]);
    let table = Table { conn_table_size: 4096, services: vec![service, v4] };
    let out = list(&table, &numeric());
    assert!(out.ends_with(
        "UDP  10.200.1.100:53 rr\n\
         UDP  [2001:db8:ffff:ffff:ffff:ffff:ffff:1]:53 mh (mh-port)\n  \
         -> [2001:db8:ffff:ffff:ffff:ffff:ffff:10]:53 Masq    2      0          0         \n"
    ));
    assert!(save(&table, true).contains(
        "-a -u [2001:db8:ffff:ffff:ffff:ffff:ffff:1]:53 -r [2001:db8:ffff:ffff:ffff:ffff:ffff:10]:53 -m -w 2\n"
    ));
}

#[test]
fn single_service_listing_has_no_header_line() {
    let table = reference_table();
    let udp = table.services.iter().find(|s| s.id.address().unwrap().protocol == Udp).unwrap();
    assert_eq!(
        list_service(udp, &numeric()),
        "Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         UDP  10.200.1.100:53 rr\n  \
         -> 10.200.1.21:53               Route   1      0          3         \n  \
         -> 10.200.1.22:53               Route   1      0          3         \n"
    );
}

#[test]
fn empty_table_prints_header_and_title_only() {
    let table = Table { conn_table_size: 4096, services: vec![] };
    assert_eq!(
        list(&table, &numeric()),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );
    assert_eq!(save(&table, true), "");
}
