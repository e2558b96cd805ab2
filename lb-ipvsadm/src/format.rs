//! ipvsadm 1.31's text formats, produced from the plain data in
//! [`crate::snapshot`], so that scripts written against `ipvsadm -L -n`,
//! `-L -c`, `-S` and `--timeout` read `lbctl`'s output unchanged.
//!
//! The layouts (field widths, trailing blanks, K/M/G/T suffixes, sort order)
//! follow ipvsadm.c and libipvs.c of ipvsadm 1.31 and are tested byte for
//! byte against its literal output in `tests/fixtures/ipvsadm/`.
//!
//! Deviations, all deliberate:
//! - Without `numeric`, addresses stay numeric (ipvsadm does reverse DNS);
//!   ports are named from `/etc/services` as ipvsadm's `getservbyport` does.
//! - Sorting compares addresses as unsigned numbers. ipvsadm subtracts them
//!   into an `int`, which misorders addresses 2^31 or more apart.
//! - `save` also writes `-x`/`-y` when a threshold is set (ipvsadm drops
//!   them), because `lbctl -R` reads them back.
//! - There are no firewall-mark services, persistence engines or one-packet
//!   scheduling in the snapshot, so `FWM`, `pe` and `ops` never appear.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use lb_common::{Forwarding, Protocol};

use crate::names::Services;
use crate::snapshot::{Connection, Real, Service, Table, Timeouts};

/// IPVS version in the header line; what the reference kernel reports.
const IPVS_VERSION: &str = "1.2.1";

/// ipvsadm's default scheduler, shown when a service names none.
const DEFAULT_SCHEDULER: &str = "wlc";

/// ipvsadm cuts IPv4 "Prot Address:Port" to this many bytes in listings.
const SERVICE_NAME_WIDTH: usize = 33;
/// ...and IPv4 real-server "Address:Port" to this many.
const REAL_NAME_WIDTH: usize = 28;

/// The `-L` options that change the listing. Only one column set is shown;
/// when several are set the first of stats, rate, thresholds,
/// persistent_conn, tun_info wins, as in ipvsadm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListOptions {
    /// `-n`: numeric ports (addresses are always numeric here).
    pub numeric: bool,
    /// `--stats`: cumulative counters.
    pub stats: bool,
    /// `--rate`: per-second rates.
    pub rate: bool,
    /// `--exact`: counters and rates without K/M/G/T rounding.
    pub exact: bool,
    /// `--thresholds`: upper/lower connection thresholds.
    pub thresholds: bool,
    /// `--persistent-conn`: persistent connection counts.
    pub persistent_conn: bool,
    /// `--tun-info`: tunnel type column.
    pub tun_info: bool,
    /// Sort services and real servers as ipvsadm does by default;
    /// `false` (`--nosort`) keeps the snapshot's (IPVS's) order.
    pub sort: bool,
}

impl Default for ListOptions {
    /// Plain `ipvsadm -L`: everything off except sorting; callers set
    /// `numeric` for `-n`.
    fn default() -> Self {
        Self {
            numeric: false,
            stats: false,
            rate: false,
            exact: false,
            thresholds: false,
            persistent_conn: false,
            tun_info: false,
            sort: true,
        }
    }
}

/// `ipvsadm -L`: header line, column titles, then every service with its
/// real servers. Without `opts.numeric` ports are named from `/etc/services`.
pub fn list(table: &Table, opts: &ListOptions) -> String {
    list_with(table, opts, &port_names_for(opts.numeric))
}

/// [`list`] with the port names given rather than read from `/etc/services`
/// (they are only used without `opts.numeric`).
pub fn list_with(table: &Table, opts: &ListOptions, ports: &Services) -> String {
    let mut out = format!("IP Virtual Server version {IPVS_VERSION} (size={})\n", table.conn_table_size);
    out.push_str(title(opts));
    let namer = Namer::new(opts.numeric, ports);
    for service in ordered_services(&table.services, opts.sort) {
        write_service(&mut out, service, opts, &namer);
    }
    out
}

/// `ipvsadm -L -t|-u VIP:PORT`: one service, with the column titles but no
/// header line (ipvsadm prints that only for the whole table).
pub fn list_service(service: &Service, opts: &ListOptions) -> String {
    let ports = port_names_for(opts.numeric);
    let mut out = title(opts).to_owned();
    write_service(&mut out, service, opts, &Namer::new(opts.numeric, &ports));
    out
}

/// `ipvsadm -L -c`: the connection table, in the order given (ipvsadm keeps
/// the kernel's order). Without `numeric` ports are named.
pub fn list_connections(conns: &[Connection], numeric: bool) -> String {
    list_connections_with(conns, numeric, &port_names_for(numeric))
}

/// [`list_connections`] with the port names given.
pub fn list_connections_with(conns: &[Connection], numeric: bool, ports: &Services) -> String {
    let namer = Namer::new(numeric, ports);
    // ipvsadm's "pro expire %-11s %-18s %-18s %s" title, written out.
    let mut out = String::from(
        "IPVS connection entries\npro expire state       source             virtual            destination\n",
    );
    for conn in conns {
        let expire = format!("{:02}:{:02}", conn.expires_in / 60, conn.expires_in % 60);
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            protocol_name(conn.protocol),
            expire,
            conn.state,
            namer.addr_port(conn.client, conn.client_port, conn.protocol),
            namer.addr_port(conn.vip, conn.vport, conn.protocol),
            namer.addr_port(conn.real, conn.real_port, conn.protocol),
        );
    }
    out
}

/// `ipvsadm -S`: the table as `-A`/`-a` rules that `-R` restores, sorted as
/// ipvsadm sorts. Without `numeric` ports are named. Unlike ipvsadm, real
/// servers with thresholds get `-x N`/`-y N` after `-w N`.
pub fn save(table: &Table, numeric: bool) -> String {
    save_with(table, numeric, &port_names_for(numeric))
}

/// [`save`] with the port names given.
pub fn save_with(table: &Table, numeric: bool, ports: &Services) -> String {
    let namer = Namer::new(numeric, ports);
    let mut out = String::new();
    for service in ordered_services(&table.services, true) {
        let svc_name = format!(
            "{} {}",
            protocol_option(service.protocol),
            namer.addr_port(service.vip, service.port, service.protocol)
        );
        let _ = write!(out, "-A {svc_name} -s {}", scheduler_name(service));
        if let Some(timeout) = service.persistence_timeout {
            let _ = write!(out, " -p {timeout}");
            if let Some(mask) = shown_netmask(service) {
                let _ = write!(out, " -M {mask}");
            }
        }
        if let Some(flags) = sched_flags_text(service) {
            let _ = write!(out, " -b {flags}");
        }
        out.push('\n');

        for real in ordered_reals(&service.reals, true) {
            let dname = namer.addr_port(real.address, real.port, service.protocol);
            let _ = write!(out, "-a {svc_name} -r {dname} {} -w {}", forwarding_option(real.forwarding), real.weight);
            if real.upper_threshold != 0 {
                let _ = write!(out, " -x {}", real.upper_threshold);
            }
            if real.lower_threshold != 0 {
                let _ = write!(out, " -y {}", real.lower_threshold);
            }
            if real.forwarding == Forwarding::Tun {
                // Our tunnels are always IP-in-IP.
                out.push_str(" --tun-type ipip");
            }
            out.push('\n');
        }
    }
    out
}

/// `ipvsadm -L --timeout`.
pub fn timeouts(t: &Timeouts) -> String {
    format!("Timeout (tcp tcpfin udp): {} {} {}\n", t.tcp, t.tcpfin, t.udp)
}

/// A counter as ipvsadm's `print_largenum` prints it: right-aligned in 9
/// columns with a leading blank; from 10^8 on, rounded down to K/M/G/T in 8
/// columns plus the suffix. With `exact`, the full number, still with at
/// least one leading blank.
pub fn format_largenum(n: u64, exact: bool) -> String {
    if exact {
        let digits = n.to_string();
        return format!("{digits:>width$}", width = (digits.len() + 1).max(9));
    }
    match n {
        0..100_000_000 => format!("{n:>9}"),
        100_000_000..1_000_000_000 => format!("{:>8}K", n / 1_000),
        1_000_000_000..100_000_000_000 => format!("{:>8}M", n / 1_000_000),
        100_000_000_000..100_000_000_000_000 => format!("{:>8}G", n / 1_000_000_000),
        _ => format!("{:>8}T", n / 1_000_000_000_000),
    }
}

/// The column-title lines for the chosen options.
fn title(opts: &ListOptions) -> &'static str {
    // Literal text of ipvsadm's print_title; the padded variants are
    // "%-33s %8s ..." and "%-33s %-10s ..." written out.
    if opts.stats {
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n  -> RemoteAddress:Port\n"
    } else if opts.rate {
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS\n  -> RemoteAddress:Port\n"
    } else if opts.thresholds {
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if opts.persistent_conn {
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn \n  -> RemoteAddress:Port\n"
    } else if opts.tun_info {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
    } else {
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    }
}

/// One service line and its real-server lines in `-L` layout.
fn write_service(out: &mut String, service: &Service, opts: &ListOptions, namer: &Namer) {
    let mut svc_name = format!(
        "{:<4} {}",
        protocol_name(service.protocol),
        namer.addr_port(service.vip, service.port, service.protocol)
    );
    if service.vip.is_ipv4() {
        truncate_ascii(&mut svc_name, SERVICE_NAME_WIDTH);
    }

    if opts.stats {
        let _ = write!(out, "{svc_name:<33}");
        push_stats(out, &service.stats, opts.exact);
    } else if opts.rate {
        let _ = write!(out, "{svc_name:<33}");
        let r = &service.rates;
        for n in [r.cps, r.in_pps, r.out_pps, r.in_bps, r.out_bps] {
            out.push_str(&format_largenum(n, opts.exact));
        }
    } else {
        let _ = write!(out, "{svc_name} {}", scheduler_name(service));
        if let Some(flags) = sched_flags_text(service) {
            let _ = write!(out, " ({flags})");
        }
        if let Some(timeout) = service.persistence_timeout {
            let _ = write!(out, " persistent {timeout}");
            if let Some(mask) = shown_netmask(service) {
                let _ = write!(out, " mask {mask}");
            }
        }
    }
    out.push('\n');

    for real in ordered_reals(&service.reals, opts.sort) {
        write_real(out, real, service.protocol, opts, namer);
    }
}

/// One `  -> ` real-server line in `-L` layout.
fn write_real(out: &mut String, real: &Real, protocol: Protocol, opts: &ListOptions, namer: &Namer) {
    let mut dname = namer.addr_port(real.address, real.port, protocol);
    if real.address.is_ipv4() {
        truncate_ascii(&mut dname, REAL_NAME_WIDTH);
    }
    let fwd = forwarding_name(real.forwarding);

    if opts.stats {
        let _ = write!(out, "  -> {dname:<28}");
        push_stats(out, &real.stats, opts.exact);
        out.push('\n');
    } else if opts.rate {
        // ipvsadm prints a real server's CPS and packet rates plainly
        // ("%8llu", never K/M) and only its byte rates as large numbers.
        let r = &real.rates;
        let _ = write!(out, "  -> {dname:<28} {:>8} {:>8} {:>8}", r.cps, r.in_pps, r.out_pps);
        out.push_str(&format_largenum(r.in_bps, opts.exact));
        out.push_str(&format_largenum(r.out_bps, opts.exact));
        out.push('\n');
    } else if opts.thresholds {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
            real.upper_threshold, real.lower_threshold, real.active_conns, real.inactive_conns
        );
    } else if opts.persistent_conn {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
            real.weight, real.persistent_conns, real.active_conns, real.inactive_conns
        );
    } else if opts.tun_info {
        let tunnel = if real.forwarding == Forwarding::Tun { "ipip" } else { "n/a" };
        let _ = writeln!(
            out,
            "  -> {dname:<28} {fwd:<7} {tunnel:<13} {:<6} {:<10} {:<10}",
            real.weight, real.active_conns, real.inactive_conns
        );
    } else {
        let _ = writeln!(
            out,
            "  -> {dname:<28} {fwd:<7} {:<6} {:<10} {:<10}",
            real.weight, real.active_conns, real.inactive_conns
        );
    }
}

fn push_stats(out: &mut String, s: &crate::snapshot::Stats, exact: bool) {
    for n in [s.conns, s.in_packets, s.out_packets, s.in_bytes, s.out_bytes] {
        out.push_str(&format_largenum(n, exact));
    }
}

/// Services in listing order: libipvs's ipvs_cmp_services compares
/// (fwmark,) address family, protocol number, address, port.
fn ordered_services(services: &[Service], sort: bool) -> Vec<&Service> {
    let mut ordered: Vec<&Service> = services.iter().collect();
    if sort {
        ordered.sort_by_key(|s| (s.vip.is_ipv6(), protocol_number(s.protocol), s.vip, s.port));
    }
    ordered
}

/// Real servers in listing order: libipvs's ipvs_cmp_dests compares
/// address, then port.
fn ordered_reals(reals: &[Real], sort: bool) -> Vec<&Real> {
    let mut ordered: Vec<&Real> = reals.iter().collect();
    if sort {
        ordered.sort_by_key(|r| (r.address, r.port));
    }
    ordered
}

fn protocol_number(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

fn protocol_option(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    }
}

fn forwarding_name(forwarding: Forwarding) -> &'static str {
    match forwarding {
        Forwarding::Dr => "Route",
        Forwarding::Tun => "Tunnel",
        Forwarding::Nat => "Masq",
    }
}

fn forwarding_option(forwarding: Forwarding) -> &'static str {
    match forwarding {
        Forwarding::Dr => "-g",
        Forwarding::Tun => "-i",
        Forwarding::Nat => "-m",
    }
}

fn scheduler_name(service: &Service) -> &str {
    if service.scheduler.is_empty() { DEFAULT_SCHEDULER } else { &service.scheduler }
}

/// The persistence netmask as ipvsadm shows it: only for IPv4 services and
/// only when it is not the default /32.
fn shown_netmask(service: &Service) -> Option<Ipv4Addr> {
    service.persistence_netmask.filter(|mask| service.vip.is_ipv4() && *mask != Ipv4Addr::BROADCAST)
}

/// Scheduler flags, comma-separated, or `None` if there are none.
///
/// IPVS stores three flag bits whose names depend on the scheduler
/// (`sh-fallback` and `mh-fallback` are both bit 1); ipvsadm prints the set
/// bits in bit order under the scheduler's names. Doing the same makes the
/// output independent of the order and naming the snapshot uses. Names that
/// are not flag names are kept, after the known ones.
fn sched_flags_text(service: &Service) -> Option<String> {
    let mut bits = [false; 3];
    let mut unknown = Vec::new();
    for flag in &service.sched_flags {
        match flag.as_str() {
            "sh-fallback" | "mh-fallback" | "flag-1" => bits[0] = true,
            "sh-port" | "mh-port" | "flag-2" => bits[1] = true,
            "flag-3" => bits[2] = true,
            other => unknown.push(other),
        }
    }
    let bit_names: [&str; 3] = match scheduler_name(service) {
        "sh" => ["sh-fallback", "sh-port", "flag-3"],
        "mh" => ["mh-fallback", "mh-port", "flag-3"],
        _ => ["flag-1", "flag-2", "flag-3"],
    };
    let names: Vec<&str> =
        bits.iter().zip(bit_names).filter_map(|(set, name)| set.then_some(name)).chain(unknown).collect();
    (!names.is_empty()).then(|| names.join(","))
}

/// Cuts an ASCII string to at most `len` bytes, as ipvsadm does by writing
/// a NUL into its buffer (on a char boundary, to stay valid UTF-8).
fn truncate_ascii(s: &mut String, len: usize) {
    if s.len() > len {
        let mut end = len;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

fn port_names_for(numeric: bool) -> Services {
    if numeric { Services::default() } else { Services::system() }
}

/// ipvsadm's addrport_to_anyname: `addr:port`, IPv6 in brackets, the port
/// named unless numeric.
struct Namer<'a> {
    ports: Option<&'a Services>,
}

impl<'a> Namer<'a> {
    fn new(numeric: bool, ports: &'a Services) -> Self {
        Self { ports: (!numeric).then_some(ports) }
    }

    fn addr_port(&self, addr: IpAddr, port: u16, protocol: Protocol) -> String {
        let host = match addr {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        match self.ports.and_then(|p| p.name(port, protocol)) {
            Some(name) => format!("{host}:{name}"),
            None => format!("{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::snapshot::{Rates, Stats};

    const L_N: &str = include_str!("../tests/fixtures/ipvsadm/L-n.txt");
    const L_N_STATS: &str = include_str!("../tests/fixtures/ipvsadm/L-n-stats.txt");
    const L_N_STATS_EXACT: &str = include_str!("../tests/fixtures/ipvsadm/L-n-stats-exact.txt");
    const L_N_RATE: &str = include_str!("../tests/fixtures/ipvsadm/L-n-rate.txt");
    const L_N_THRESHOLDS: &str = include_str!("../tests/fixtures/ipvsadm/L-n-thresholds.txt");
    const L_N_PERSISTENT_CONN: &str = include_str!("../tests/fixtures/ipvsadm/L-n-persistent-conn.txt");
    const L_N_TUN_INFO: &str = include_str!("../tests/fixtures/ipvsadm/L-n-tun-info.txt");
    const L_N_C: &str = include_str!("../tests/fixtures/ipvsadm/L-n-c.txt");
    const S_N: &str = include_str!("../tests/fixtures/ipvsadm/S-n.txt");
    const S: &str = include_str!("../tests/fixtures/ipvsadm/S.txt");
    const L_TIMEOUT: &str = include_str!("../tests/fixtures/ipvsadm/L-timeout.txt");

    use Forwarding::{Dr, Nat, Tun};
    use Protocol::{Tcp, Udp};

    const VIP: Ipv4Addr = Ipv4Addr::new(10, 200, 1, 100);

    fn host(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 200, 1, last))
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
            protocol,
            vip: IpAddr::V4(VIP),
            port,
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

    /// The table behind the reference files (without its fwmark service),
    /// values read off L-n, --persistent-conn, --thresholds, --stats and
    /// --rate. Reals are in IPVS order (reverse of insertion) and services
    /// in reverse of listing order, so the formatters must sort both.
    #[rustfmt::skip]
    fn reference_table() -> Table {
        let mut services = vec![
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

    /// The reference text without its firewall-mark service: the `FWM`
    /// block of a listing, the `-f` rules of a save.
    fn without_fwmark(reference: &str) -> String {
        let mut out = String::new();
        let mut in_fwm_block = false;
        for line in reference.split_inclusive('\n') {
            if line.starts_with("FWM ") {
                in_fwm_block = true;
                continue;
            }
            if in_fwm_block && line.starts_with("  -> ") {
                continue;
            }
            in_fwm_block = false;
            if line.starts_with("-A -f ") || line.starts_with("-a -f ") {
                continue;
            }
            out.push_str(line);
        }
        out
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
        assert_text_eq(&list(&reference_table(), &numeric()), &without_fwmark(L_N));
    }

    #[test]
    fn list_stats_matches_ipvsadm() {
        let opts = ListOptions { stats: true, ..numeric() };
        assert_text_eq(&list(&reference_table(), &opts), &without_fwmark(L_N_STATS));
    }

    #[test]
    fn list_stats_exact_matches_ipvsadm() {
        let opts = ListOptions { stats: true, exact: true, ..numeric() };
        assert_text_eq(&list(&reference_table(), &opts), &without_fwmark(L_N_STATS_EXACT));
    }

    #[test]
    fn list_rate_matches_ipvsadm() {
        let opts = ListOptions { rate: true, ..numeric() };
        assert_text_eq(&list(&reference_table(), &opts), &without_fwmark(L_N_RATE));
    }

    #[test]
    fn list_thresholds_matches_ipvsadm() {
        let opts = ListOptions { thresholds: true, ..numeric() };
        assert_text_eq(&list(&reference_table(), &opts), &without_fwmark(L_N_THRESHOLDS));
    }

    #[test]
    fn list_persistent_conn_matches_ipvsadm() {
        let opts = ListOptions { persistent_conn: true, ..numeric() };
        assert_text_eq(&list(&reference_table(), &opts), &without_fwmark(L_N_PERSISTENT_CONN));
    }

    #[test]
    fn list_tun_info_matches_ipvsadm() {
        let opts = ListOptions { tun_info: true, ..numeric() };
        assert_text_eq(&list(&reference_table(), &opts), &without_fwmark(L_N_TUN_INFO));
    }

    /// Our save adds the thresholds ipvsadm drops; otherwise it is S-n.txt.
    #[test]
    fn save_numeric_matches_ipvsadm_plus_thresholds() {
        let expected = without_fwmark(S_N)
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
        assert_text_eq(&save_with(&table, false, &ports), &without_fwmark(S));
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
        assert_text_eq(&list_connections(&conns, true), L_N_C);
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
        service.persistence_netmask = Some(Ipv4Addr::new(255, 255, 255, 0));
        let mut host_mask = service.clone();
        host_mask.port = 81;
        host_mask.persistence_netmask = Some(Ipv4Addr::BROADCAST);
        let table = Table { conn_table_size: 4096, services: vec![service, host_mask] };
        let out = list(&table, &numeric());
        assert!(out.contains("TCP  10.200.1.100:80 wrr persistent 60 mask 255.255.255.0\n"), "{out}");
        assert!(out.contains("TCP  10.200.1.100:81 wrr persistent 60\n"), "{out}");
        let saved = save(&table, true);
        assert_eq!(saved, "-A -t 10.200.1.100:80 -s wrr -p 60 -M 255.255.255.0\n-A -t 10.200.1.100:81 -s wrr -p 60\n");
    }

    #[test]
    fn ipv6_is_bracketed_untruncated_and_sorted_after_ipv4() {
        let v6 = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, last));
        let mut service = svc(Udp, 53, "mh", &["mh-port"], None, [0; 5], [0; 5], vec![]);
        service.vip = v6(1);
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
        let udp = table.services.iter().find(|s| s.protocol == Udp).unwrap();
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
}
