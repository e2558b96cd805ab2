//! Firewall-mark services through the real XDP program
//! (BPF_PROG_TEST_RUN): packets taken by a mark's networks and port
//! ranges, the VIP's own services winning over a mark, and one persistence
//! template for every port of a mark (IPVS's ip_vs_sched_persist with
//! svc->fwmark). Needs root.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};

use lb_common::{AF_INET, FlowKey, conn_state, flow_kind, ipv4_words};
use lb_tests::{
    datapath_setup::{CLIENT, RS1, RS2, VIP, VIP_ALL_PORTS, client, forwarded_to},
    harness::{Harness, XDP_PASS, XDP_TX, delta, mark_match, mark_service, real_mac, service},
    is_root,
    packets::{DIRECTOR_MAC, PacketSpec, dr_rewrite, tcp},
    packets6::Packet6Spec,
};
use lb_userspace::{
    model::{Protocol, Scheduler},
    tables::{MapOp, Tables},
};

/// The mark services' own real server.
const RS3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 23);

fn harness() -> Option<Harness> {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return None;
    }
    Some(Harness::new().expect("load the XDP program"))
}

/// Runs `frame`: the real server it was direct-routed to (nothing but its
/// MACs changed), or `None` if it passed; the counters must have moved by
/// `counters`.
fn run(h: &Harness, what: &str, frame: &[u8], counters: &[(&str, u64)]) -> Option<Ipv4Addr> {
    let before = h.reasons();
    let out = h.run(frame).unwrap_or_else(|e| panic!("{what}: test run failed: {e:#}"));
    let want: std::collections::BTreeMap<&str, u64> = counters.iter().copied().collect();
    assert_eq!(delta(&before, &h.reasons()), want, "{what}: counters");
    if out.verdict == XDP_PASS {
        assert_eq!(out.output, frame, "{what}: passed untouched");
        return None;
    }
    assert_eq!(out.verdict, XDP_TX, "{what}: verdict");
    let real = forwarded_to(&out).unwrap_or_else(|| panic!("{what}: not direct-routed"));
    assert_eq!(out.output, dr_rewrite(frame, real_mac(real), DIRECTOR_MAC), "{what}: only the MACs change");
    Some(real)
}

const NEW: &[(&str, u64)] = &[("conn_new", 1), ("tx_dr", 1)];
const ROUTED: &[(&str, u64)] = &[("tx_dr", 1)];
const NO_SERVICE: &[(&str, u64)] = &[("pass_no_service", 1)];

fn to(addr: [u8; 4], port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(addr), port)
}

#[test]
fn a_mark_takes_the_packets_of_its_networks_and_ports() {
    let Some(mut h) = harness() else { return };
    let matches = vec![
        mark_match(Protocol::Tcp, "10.1.0.0/24", &[(80, 80), (443, 443), (8000, 8010)]),
        mark_match(Protocol::Udp, "10.1.0.5", &[(53, 53)]),
    ];
    h.apply(&[mark_service(1, matches, Scheduler::Rr, &[(RS1, 1), (RS2, 1)])]).unwrap();
    let syn = |dst, port| PacketSpec::tcp(client(port), dst, tcp::SYN).build();
    let first = run(&h, "a host of the /24, port 80", &syn(to([10, 1, 0, 7], 80), 40000), NEW).unwrap();
    let ack = PacketSpec::tcp(client(40000), to([10, 1, 0, 7], 80), tcp::ACK).payload(b"GET /").build();
    assert_eq!(run(&h, "its later packet", &ack, ROUTED), Some(first));
    let second = run(&h, "another host, 443", &syn(to([10, 1, 0, 250], 443), 40001), NEW).unwrap();
    assert_ne!(second, first, "one scheduler for the whole mark: rr moves on");
    run(&h, "the network's first address, a port of the range", &syn(to([10, 1, 0, 0], 8000), 40002), NEW);
    run(&h, "the range's last port", &syn(to([10, 1, 0, 9], 8010), 40003), NEW);
    run(&h, "past the range", &syn(to([10, 1, 0, 9], 8011), 40004), NO_SERVICE);
    run(&h, "another port", &syn(to([10, 1, 0, 9], 22), 40005), NO_SERVICE);
    run(&h, "outside the network", &syn(to([10, 1, 1, 7], 80), 40006), NO_SERVICE);
    let udp = |dst| PacketSpec::udp(client(40007), dst).payload(b"query").build();
    run(&h, "UDP to the UDP match", &udp(to([10, 1, 0, 5], 53)), NEW);
    run(&h, "UDP to another host", &udp(to([10, 1, 0, 6], 53)), NO_SERVICE);
    run(&h, "TCP where only UDP is matched", &syn(to([10, 1, 0, 5], 53), 40008), NO_SERVICE);

    // A network too wide for the VIP filter turns it off: the same answers.
    let wide = vec![mark_match(Protocol::Tcp, "10.2.0.0/16", &[(80, 80)])];
    h.apply(&[mark_service(2, wide, Scheduler::Rr, &[(RS1, 1)])]).unwrap();
    assert_eq!(run(&h, "a host of the /16", &syn(to([10, 2, 200, 1], 80), 40009), NEW), Some(RS1));
    run(&h, "the removed mark's network", &syn(to([10, 1, 0, 7], 80), 40010), NO_SERVICE);
    run(&h, "no service anywhere", &syn(to([192, 0, 2, 99], 80), 40011), NO_SERVICE);
}

/// IPVS finds a marked packet's fwmark service first; with no mark to read
/// the VIP's own services (its port's, then its every-port one) are the
/// more specific rule and win, and the mark takes the rest.
#[test]
fn the_vips_own_services_win_over_a_mark() {
    let Some(mut h) = harness() else { return };
    let everything = vec![mark_match(Protocol::Tcp, "10.0.0.0/24", &[(22, 22), (80, 80), (443, 443)])];
    h.apply(&[
        service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1)]),
        service(Protocol::Tcp, VIP_ALL_PORTS, 0, Scheduler::Rr, &[(RS2, 1)]),
        mark_service(1, everything, Scheduler::Rr, &[(RS3, 1)]),
    ])
    .unwrap();
    let syn = |dst, port| PacketSpec::tcp(client(port), dst, tcp::SYN).build();
    assert_eq!(run(&h, "VIP:80 is its own service's", &syn(SocketAddrV4::new(VIP, 80), 41000), NEW), Some(RS1));
    assert_eq!(run(&h, "VIP:443 is the mark's", &syn(SocketAddrV4::new(VIP, 443), 41001), NEW), Some(RS3));
    let every_port = SocketAddrV4::new(VIP_ALL_PORTS, 443);
    assert_eq!(run(&h, "an every-port VIP keeps its ports", &syn(every_port, 41002), NEW), Some(RS2));
    assert_eq!(run(&h, "another host of the network", &syn(to([10, 0, 0, 50], 22), 41003), NEW), Some(RS3));
}

/// One template per client for the whole mark: HTTP and HTTPS (and UDP) of
/// one client go to one real server.
#[test]
fn a_marks_persistence_spans_its_ports_and_addresses() {
    let Some(mut h) = harness() else { return };
    let matches = vec![
        mark_match(Protocol::Tcp, "10.1.0.10", &[(80, 80), (443, 443)]),
        mark_match(Protocol::Tcp, "10.1.0.11", &[(80, 80), (443, 443)]),
        mark_match(Protocol::Udp, "10.1.0.10", &[(443, 443)]),
    ];
    let mut svc = mark_service(1, matches, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]);
    svc.options.persistence_timeout = Some(300);
    h.apply(&[svc]).unwrap();
    let syn = |src: Ipv4Addr, port, dst| PacketSpec::tcp(SocketAddrV4::new(src, port), dst, tcp::SYN).build();
    let a = CLIENT;
    let b = Ipv4Addr::new(198, 51, 100, 7);
    let http = to([10, 1, 0, 10], 80);
    let https = to([10, 1, 0, 10], 443);
    let first = run(&h, "a's first connection", &syn(a, 42000, http), NEW).unwrap();
    assert_eq!(run(&h, "a's HTTPS", &syn(a, 42001, https), NEW), Some(first));
    assert_eq!(run(&h, "a to the other VIP", &syn(a, 42002, to([10, 1, 0, 11], 443)), NEW), Some(first));
    let quic = PacketSpec::udp(SocketAddrV4::new(a, 42003), https).payload(b"hello").build();
    assert_eq!(run(&h, "a's UDP", &quic, NEW), Some(first));
    let other = run(&h, "b is scheduled", &syn(b, 42000, https), NEW).unwrap();
    assert_ne!(other, first, "rr moves on for a new client");
    assert_eq!(run(&h, "b's HTTP", &syn(b, 42001, http), NEW), Some(other));

    // a's template, as IPVS keys it: protocol IP, the mark for the VIP.
    let key = FlowKey {
        src: ipv4_words(a.octets()),
        dst: [1u32.to_be(), 0, 0, 0],
        sport: 0,
        dport: 0,
        protocol: 0,
        family: AF_INET,
        kind: flow_kind::TEMPLATE,
        pad0: 0,
    };
    let template = h.datapath.connection(&key).expect("a's template");
    assert_eq!((template.timeout, template.state), (300, conn_state::TEMPLATE_NONE));
    assert_eq!(h.tables.real(template.real_id).map(|r| r.addr), Some(ipv4_words(first.octets())));
    // A connection it placed established: the template is ASSURED.
    run(&h, "a's ACK", &PacketSpec::tcp(SocketAddrV4::new(a, 42001), https, tcp::ACK).build(), ROUTED);
    assert_eq!(h.datapath.connection(&key).unwrap().state, conn_state::TEMPLATE_ASSURED);
    let persistent: i64 = h.tables.real_ids().map(|d| h.datapath.real_conns(d).persistent).sum();
    assert_eq!(persistent, 2, "one template per client");
}

#[test]
fn an_ipv6_mark_takes_its_prefix() {
    let Some(mut h) = harness() else { return };
    let rs = |last| Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last);
    let matches = vec![mark_match(Protocol::Tcp, "2001:db8:1::/64", &[(80, 80), (443, 443)])];
    let mut svc = mark_service(4, matches, Scheduler::Rr, &[(rs(0x21), 1), (rs(0x22), 1)]);
    svc.options.persistence_timeout = Some(120);
    svc.options.persistence_netmask = lb_userspace::model::Netmask::V6(128);
    h.apply(&[svc]).unwrap();
    let client = SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10), 43000, 0, 0);
    let vip = |last, port| SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, last), port, 0, 0);
    let routed = |frame: &[u8], what: &str| {
        let before = h.reasons();
        let out = h.run(frame).unwrap();
        let counters = delta(&before, &h.reasons());
        assert_eq!(out.verdict, XDP_TX, "{what}: {counters:?}");
        [rs(0x21), rs(0x22)]
            .into_iter()
            .find(|r| out.output == dr_rewrite(frame, real_mac(*r), DIRECTOR_MAC))
            .unwrap_or_else(|| panic!("{what}: not direct-routed"))
    };
    let first = routed(&Packet6Spec::tcp(client, vip(1, 80), tcp::SYN).build(), "a host of the /64");
    let https = Packet6Spec::tcp(SocketAddrV6::new(*client.ip(), 43001, 0, 0), vip(0xabc, 443), tcp::SYN).build();
    assert_eq!(routed(&https, "HTTPS of another host"), first, "persistent across the mark's addresses and ports");
    let elsewhere = SocketAddrV6::new(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 1), 80, 0, 0);
    let out = h.run(&Packet6Spec::tcp(client, elsewhere, tcp::SYN).build()).unwrap();
    assert_eq!(out.verdict, XDP_PASS, "outside the prefix");
}

/// A restarted lbd reads a mark's matches back from the trie with the
/// other maps: planning the same table again writes nothing.
#[test]
fn a_restarted_lbd_adopts_a_marks_matches() {
    let Some(mut h) = harness() else { return };
    let matches = vec![
        mark_match(Protocol::Tcp, "10.1.0.0/24", &[(80, 80), (8000, 8003)]),
        mark_match(Protocol::Udp, "10.1.0.5", &[(53, 53)]),
    ];
    let mut svc = mark_service(3, matches, Scheduler::Wrr, &[(RS1, 2), (RS2, 1)]);
    svc.options.persistence_timeout = Some(60);
    let table = [service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1)]), svc];
    h.apply(&table).unwrap();
    let adopted = h.datapath.read_back().unwrap();
    assert_eq!(adopted.fwmark_matches.len(), 6, "every (port, network) entry of the trie");
    let again = Tables::adopt(&adopted);
    let back = again.wanted().find(|w| w.fwmark == 3).expect("the mark service, adopted");
    assert_eq!((back.key(), back.options.persistence_timeout), (table[1].key(), Some(60)));
    let ops = again.plan(&table, &|id| h.datapath.sched_position(id)).unwrap().ops;
    let rewrites: Vec<_> = ops
        .iter()
        .filter(|op| !matches!(op, MapOp::SetVipFilter(_)))
        .map(|op| op.describe())
        .collect();
    assert!(rewrites.is_empty(), "nothing to rewrite: {rewrites:?}");
}
