//! Datapath fixtures: crafted packets through the real XDP program
//! (BPF_PROG_TEST_RUN), each with the expected verdict, output bytes and
//! counter changes, Katran style. Needs root.
//!
//! The schedulers' equivalence runs against IPVS's reference models are in
//! `datapath_schedulers.rs`.

use std::net::{Ipv4Addr, SocketAddrV4};

use lb_common::conn_state;
use lb_tests::datapath_setup::{
    CLIENT, RS1, RS2, VIP, VIP_ALL_PORTS, client, forwarded_to, harness, schedule_one, vip,
};
use lb_tests::{
    harness::{Harness, XDP_PASS, XDP_TX, delta, real_mac, service},
    packets::{self, DIRECTOR_MAC, PacketSpec, dr_rewrite, tcp},
};
use lb_userspace::model::{Protocol, Scheduler};

/// What the output frame must be.
enum Output {
    /// Passed or dropped: the frame as it came.
    Unchanged,
    /// Sent by direct routing to this real server.
    DirectRoutedTo(Ipv4Addr),
}

struct Fixture {
    name: &'static str,
    input: Vec<u8>,
    verdict: u32,
    output: Output,
    /// Verdict-reason counters that must change, by how much (all others stay).
    counters: &'static [(&'static str, u64)],
}

fn check(h: &Harness, fixtures: Vec<Fixture>) {
    for f in fixtures {
        let before = h.reasons();
        let got = h.run(&f.input).unwrap_or_else(|e| panic!("{}: test run failed: {e:#}", f.name));
        let after = h.reasons();
        assert_eq!(got.verdict, f.verdict, "{}: verdict", f.name);
        let want = match f.output {
            Output::Unchanged => f.input.clone(),
            Output::DirectRoutedTo(real) => dr_rewrite(&f.input, real_mac(real), DIRECTOR_MAC),
        };
        assert_eq!(got.output, want, "{}: output bytes", f.name);
        let changed = delta(&before, &after);
        let expected: std::collections::BTreeMap<&str, u64> = f.counters.iter().copied().collect();
        assert_eq!(changed, expected, "{}: counters", f.name);
    }
}

#[test]
fn fixtures_tcp_flow_and_what_passes() {
    let Some(h) = harness() else { return };
    // IPVS lists real servers newest first: rr starts with RS2.
    let syn = PacketSpec::tcp(client(40000), vip(80), tcp::SYN).build();
    let ack = PacketSpec::tcp(client(40000), vip(80), tcp::ACK).build();
    let data = PacketSpec::tcp(client(40000), vip(80), tcp::ACK | tcp::PSH).payload(b"GET / HTTP/1.1\r\n\r\n").build();
    let fin = PacketSpec::tcp(client(40000), vip(80), tcp::FIN | tcp::ACK).build();
    let syn2 = PacketSpec::tcp(client(40001), vip(80), tcp::SYN).build();
    let ack2 = PacketSpec::tcp(client(40001), vip(80), tcp::ACK).build();
    // IPVS counts IP bytes (no Ethernet header).
    let ip_len = |f: &Vec<u8>| (f.len() - 14) as u64;
    let rs2_bytes = ip_len(&syn) + ip_len(&ack) + ip_len(&data) + ip_len(&fin);
    let rs1_bytes = ip_len(&syn2) + ip_len(&ack2);
    check(
        &h,
        vec![
            Fixture {
                name: "SYN to the VIP starts a connection on the first server",
                input: syn,
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS2),
                counters: &[("conn_new", 1), ("tx_dr", 1)],
            },
            Fixture {
                name: "its ACK follows it",
                input: ack,
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS2),
                counters: &[("tx_dr", 1)],
            },
            Fixture {
                name: "its data follows it",
                input: data,
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS2),
                counters: &[("tx_dr", 1)],
            },
            Fixture {
                name: "a second connection goes to the next server",
                input: syn2,
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS1),
                counters: &[("conn_new", 1), ("tx_dr", 1)],
            },
            Fixture {
                name: "and stays there",
                input: ack2,
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS1),
                counters: &[("tx_dr", 1)],
            },
            Fixture {
                name: "the first one's FIN still goes to its server",
                input: fin,
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS2),
                counters: &[("tx_dr", 1)],
            },
            Fixture {
                name: "a non-SYN of an unknown connection passes to the kernel",
                input: PacketSpec::tcp(client(40099), vip(80), tcp::ACK).build(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_tcp_not_syn", 1)],
            },
            Fixture {
                name: "a SYN-ACK is not a new connection",
                input: PacketSpec::tcp(client(40098), vip(80), tcp::SYN | tcp::ACK).build(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_tcp_not_syn", 1)],
            },
            Fixture {
                name: "another port of the VIP is not a service",
                input: PacketSpec::tcp(client(40002), vip(8080), tcp::SYN).build(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_no_service", 1)],
            },
            Fixture {
                name: "traffic to the director's own address passes",
                input: PacketSpec::tcp(client(40003), SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 22), tcp::SYN)
                    .build(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_no_service", 1)],
            },
            Fixture {
                name: "UDP to a TCP-only port passes",
                input: PacketSpec::udp(client(40004), vip(80)).build(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_no_service", 1)],
            },
            Fixture {
                name: "an every-port service takes any port",
                input: PacketSpec::tcp(client(40005), SocketAddrV4::new(VIP_ALL_PORTS, 4433), tcp::SYN).build(),
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS1),
                counters: &[("conn_new", 1), ("tx_dr", 1)],
            },
        ],
    );
    // Per service and per real server: connections, packets, bytes.
    let key = lb_userspace::tables::service_key(Protocol::Tcp, VIP, 80);
    let id = h.tables.service_id(&key).unwrap();
    let svc = h.datapath.service_counters(id);
    assert_eq!((svc.conns, svc.in_packets, svc.in_bytes), (2, 6, rs1_bytes + rs2_bytes));
    let real_ids = h.tables.service_reals(&key);
    let per_real: Vec<(u64, u64, u64)> = real_ids
        .iter()
        .map(|&d| {
            let c = h.datapath.real_counters(d);
            (c.conns, c.in_packets, c.in_bytes)
        })
        .collect();
    // IPVS order: RS2 (added last) first.
    assert_eq!(per_real, vec![(1, 4, rs2_bytes), (1, 2, rs1_bytes)]);
    assert_eq!((svc.out_packets, svc.out_bytes), (0, 0), "DR never sees replies");
}

#[test]
fn fixtures_udp_vlan_and_ip_options() {
    let Some(h) = harness() else { return };
    let dns = PacketSpec::udp(client(5353), vip(53)).payload(b"\x12\x34query");
    check(
        &h,
        vec![
            Fixture {
                name: "a UDP datagram starts a connection",
                input: dns.build(),
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS2),
                counters: &[("conn_new", 1), ("tx_dr", 1)],
            },
            Fixture {
                name: "the next datagram of the same flow follows it",
                input: dns.clone().payload(b"\x12\x35again").build(),
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS2),
                counters: &[("tx_dr", 1)],
            },
            Fixture {
                name: "a VLAN-tagged SYN is balanced and keeps its tag",
                input: PacketSpec::tcp(client(41000), vip(80), tcp::SYN).vlan(100).build(),
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS2),
                counters: &[("conn_new", 1), ("tx_dr", 1)],
            },
            Fixture {
                name: "a SYN with IP options (IHL 7) is balanced, options untouched",
                // Record-route-like NOPs then end-of-list: 8 bytes.
                input: PacketSpec::tcp(client(41001), vip(80), tcp::SYN)
                    .ip_options(&[1, 1, 1, 1, 1, 1, 1, 0])
                    .build(),
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS1),
                counters: &[("conn_new", 1), ("tx_dr", 1)],
            },
            Fixture {
                name: "IP options at the maximum (IHL 15)",
                input: PacketSpec::tcp(client(41002), vip(80), tcp::SYN).ip_options(&[1; 40]).build(),
                verdict: XDP_TX,
                output: Output::DirectRoutedTo(RS2),
                counters: &[("conn_new", 1), ("tx_dr", 1)],
            },
        ],
    );
}

#[test]
fn fixtures_malformed_truncated_fragments_and_other_protocols() {
    let Some(h) = harness() else { return };
    let syn = PacketSpec::tcp(client(42000), vip(80), tcp::SYN).build();
    let mut bad_version = syn.clone();
    bad_version[14] = 0x65; // version 6 in an IPv4 frame
    packets::fix_ipv4_checksum(&mut bad_version, 14);
    let mut short_ihl = syn.clone();
    short_ihl[14] = 0x44; // IHL 4 (16 bytes) is below the minimum
    let mut long_total = syn.clone();
    long_total[16..18].copy_from_slice(&1500u16.to_be_bytes()); // claims more than the frame holds
    packets::fix_ipv4_checksum(&mut long_total, 14);
    let mut short_doff = syn.clone();
    short_doff[14 + 20 + 12] = 0x40; // TCP data offset 4
    let mut icmp = PacketSpec::tcp(client(42001), vip(80), tcp::SYN).build();
    icmp[14 + 9] = 1; // protocol ICMP
    packets::fix_ipv4_checksum(&mut icmp, 14);
    let mut ipv6 = packets::ethernet(DIRECTOR_MAC, packets::CLIENT_MAC, None, packets::ETH_P_IPV6);
    ipv6.extend([0x60, 0, 0, 0, 0, 0, 6, 64]);
    ipv6.extend([0u8; 32]);
    let mut arp = packets::ethernet([0xff; 6], packets::CLIENT_MAC, None, packets::ETH_P_ARP);
    arp.extend([0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend([0u8; 20]);
    check(
        &h,
        vec![
            Fixture {
                name: "truncated in the TCP header",
                input: syn[..14 + 20 + 10].to_vec(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_malformed", 1)],
            },
            Fixture {
                name: "truncated in the IP header",
                input: syn[..14 + 12].to_vec(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_malformed", 1)],
            },
            Fixture {
                name: "a VLAN tag and nothing after it",
                input: PacketSpec::tcp(client(42002), vip(80), tcp::SYN).vlan(7).build()[..16].to_vec(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_not_ip", 1)],
            },
            Fixture {
                name: "IP version not 4",
                input: bad_version,
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_malformed", 1)],
            },
            Fixture {
                name: "IHL below 5",
                input: short_ihl,
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_malformed", 1)],
            },
            Fixture {
                name: "total length beyond the frame",
                input: long_total,
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_malformed", 1)],
            },
            Fixture {
                name: "TCP data offset below 5",
                input: short_doff,
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_malformed", 1)],
            },
            Fixture {
                name: "a first fragment",
                input: PacketSpec::tcp(client(42003), vip(80), tcp::SYN).fragment(true, 0).build(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_fragment", 1)],
            },
            Fixture {
                name: "a later fragment",
                input: PacketSpec::udp(client(42004), vip(53)).fragment(false, 185).build(),
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_fragment", 1)],
            },
            Fixture {
                name: "ICMP to the VIP",
                input: icmp,
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_other_protocol", 1)],
            },
            Fixture {
                name: "IPv6 with a payload length of 0 (a jumbogram's, never on Ethernet)",
                input: ipv6,
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_malformed", 1)],
            },
            Fixture {
                name: "ARP",
                input: arp,
                verdict: XDP_PASS,
                output: Output::Unchanged,
                counters: &[("pass_not_ip", 1)],
            },
        ],
    );
}

#[test]
fn existing_connections_keep_their_server_when_the_set_changes() {
    let Some(mut h) = harness() else { return };
    let first = schedule_one(&h, 43000).unwrap();
    let other = if first == RS1 { RS2 } else { RS1 };
    // The first server leaves the service; its connection stays on it.
    h.apply(&[service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(other, 1)])]).unwrap();
    let ack = PacketSpec::tcp(client(43000), vip(80), tcp::ACK).build();
    let out = h.run(&ack).unwrap();
    assert_eq!((out.verdict, &out.output[0..6]), (XDP_TX, &real_mac(first)[..]));
    // New connections all go to the one left.
    for port in 43001..43010 {
        assert_eq!(schedule_one(&h, port), Some(other));
    }
    // Weight 0: no new connections, the open one continues.
    h.apply(&[service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(other, 0)])]).unwrap();
    let before = h.reasons();
    assert_eq!(schedule_one(&h, 43100), None);
    assert_eq!(delta(&before, &h.reasons()).get("tx_icmp_unreachable"), Some(&1));
    let out = h.run(&PacketSpec::tcp(client(43001), vip(80), tcp::ACK).build()).unwrap();
    assert_eq!((out.verdict, &out.output[0..6]), (XDP_TX, &real_mac(other)[..]));
}

/// With no real server available, the client gets ICMP port unreachable
/// from the VIP (as from IPVS: its connect fails at once), quoting its
/// packet, with valid checksums; a VLAN tag is kept.
#[test]
fn no_server_answers_icmp_port_unreachable() {
    let Some(mut h) = harness() else { return };
    h.apply(&[
        service::<Ipv4Addr>(Protocol::Tcp, VIP, 80, Scheduler::Wrr, &[]),
        service(Protocol::Udp, VIP, 53, Scheduler::Rr, &[(RS1, 0)]),
    ])
    .unwrap();
    let cases = [
        PacketSpec::tcp(client(44000), vip(80), tcp::SYN).payload(b"hello"),
        PacketSpec::tcp(client(44001), vip(80), tcp::SYN).vlan(42).ip_options(&[1, 1, 1, 0]),
        PacketSpec::udp(client(44002), vip(53)).payload(b"\x00\x01query"),
    ];
    for spec in cases {
        let input = spec.build();
        let before = h.reasons();
        let out = h.run(&input).unwrap();
        assert_eq!(out.verdict, XDP_TX);
        assert_eq!(delta(&before, &h.reasons()), [("tx_icmp_unreachable", 1)].into_iter().collect());
        let l3 = if spec.vlan.is_some() { 18 } else { 14 };
        let o = &out.output;
        // Ethernet: back to the client, tag and EtherType kept.
        assert_eq!(&o[0..6], &packets::CLIENT_MAC);
        assert_eq!(&o[6..12], &DIRECTOR_MAC);
        assert_eq!(&o[12..l3], &input[12..l3]);
        // IP: from the VIP to the client, ICMP, checksum valid.
        let ip = &o[l3..l3 + 20];
        assert_eq!(ip[0], 0x45);
        assert_eq!(ip[9], 1);
        assert_eq!(&ip[12..16], &VIP.octets());
        assert_eq!(&ip[16..20], &CLIENT.octets());
        assert_eq!(ones_complement(ip), 0, "IP header checksum");
        // ICMP: destination unreachable, port; the quote is the original IP
        // header and 8 bytes after it.
        let ihl = ((input[l3] & 0x0f) as usize) * 4;
        let icmp = &o[l3 + 20..];
        assert_eq!((icmp[0], icmp[1]), (3, 3));
        assert_eq!(&icmp[8..], &input[l3..l3 + ihl + 8]);
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, 20 + icmp.len());
        assert_eq!(ones_complement(icmp), 0, "ICMP checksum");
    }
}

/// The one's complement sum of `bytes` (0 when a checksum inside is right).
fn ones_complement(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn an_expired_entry_is_a_new_connection() {
    let Some(mut h) = harness() else { return };
    let mut timeouts = conn_state::default_timeouts();
    timeouts[conn_state::SYN_RECV as usize] = 1;
    h.set_timeouts(timeouts).unwrap();
    let first = schedule_one(&h, 45000).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    // Its ACK now belongs to no connection: it passes.
    let out = h.run(&PacketSpec::tcp(client(45000), vip(80), tcp::ACK).build()).unwrap();
    assert_eq!(out.verdict, XDP_PASS);
    // A new SYN from the same port is scheduled afresh (rr moves on).
    let again = schedule_one(&h, 45000).unwrap();
    assert_ne!(again, first);
}

#[test]
fn a_new_syn_on_a_closing_entry_is_rescheduled() {
    let Some(h) = harness() else { return };
    let first = schedule_one(&h, 46000).unwrap();
    for flags in [tcp::ACK, tcp::FIN | tcp::ACK] {
        h.run(&PacketSpec::tcp(client(46000), vip(80), flags).build()).unwrap();
    }
    // The client reuses the port: IPVS schedules the new connection anew.
    let second = schedule_one(&h, 46000).unwrap();
    assert_ne!(second, first);
}

/// ActiveConn/InActConn as IPVS defines them, kept by the datapath: a SYN
/// makes an inactive (SYN_RECV) connection, its ACK an active one, a FIN an
/// inactive one again; a UDP flow is always inactive.
#[test]
fn connection_counts_follow_the_states() {
    let Some(mut h) = harness() else { return };
    h.apply(&[
        service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1)]),
        service(Protocol::Udp, VIP, 53, Scheduler::Rr, &[(RS1, 1)]),
    ])
    .unwrap();
    let key = lb_userspace::tables::service_key(Protocol::Tcp, VIP, 80);
    let real_id = h.tables.service_reals(&key)[0];
    let counts = |h: &Harness| {
        let c = h.datapath.real_conns(real_id);
        (c.active, c.inactive)
    };
    let send = |h: &Harness, port: u16, flags: u8| {
        assert_eq!(h.run(&PacketSpec::tcp(client(port), vip(80), flags).build()).unwrap().verdict, XDP_TX);
    };
    send(&h, 47000, tcp::SYN);
    assert_eq!(counts(&h), (0, 1));
    send(&h, 47000, tcp::ACK);
    assert_eq!(counts(&h), (1, 0));
    send(&h, 47001, tcp::SYN);
    send(&h, 47001, tcp::ACK);
    send(&h, 47001, tcp::ACK | tcp::PSH);
    assert_eq!(counts(&h), (2, 0));
    send(&h, 47000, tcp::FIN | tcp::ACK);
    assert_eq!(counts(&h), (1, 1));
    send(&h, 47001, tcp::RST);
    assert_eq!(counts(&h), (0, 2));
    // The client port comes back with a new connection: the closed entry
    // is replaced and its count taken back.
    send(&h, 47000, tcp::SYN);
    assert_eq!(counts(&h), (0, 2));
    let udp_key = lb_userspace::tables::service_key(Protocol::Udp, VIP, 53);
    let udp_real_id = h.tables.service_reals(&udp_key)[0];
    h.run(&PacketSpec::udp(client(5000), vip(53)).build()).unwrap();
    h.run(&PacketSpec::udp(client(5000), vip(53)).build()).unwrap();
    let c = h.datapath.real_conns(udp_real_id);
    assert_eq!((c.active, c.inactive), (0, 1));
}

/// Persistence (ipvsadm -p, -M): a client, or its whole network under the
/// netmask, keeps its real server across connections; a port-0 service
/// keeps it across every port; the template shows in the table as IPVS's.
#[test]
fn persistence_keeps_a_client_on_its_server() {
    let Some(mut h) = harness() else { return };
    let mut https = service(Protocol::Tcp, VIP, 443, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]);
    https.options.persistence_timeout = Some(2);
    https.options.persistence_netmask = lb_userspace::model::Netmask::V4(Ipv4Addr::new(255, 255, 255, 0));
    let mut any_port = service(Protocol::Tcp, VIP_ALL_PORTS, 0, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]);
    any_port.options.persistence_timeout = Some(300);
    h.apply(&[https, any_port]).unwrap();
    let syn_from = |h: &Harness, src: Ipv4Addr, port: u16, to: SocketAddrV4| {
        let out = h.run(&PacketSpec::tcp(SocketAddrV4::new(src, port), to, tcp::SYN).build()).unwrap();
        assert_eq!(out.verdict, XDP_TX);
        Ipv4Addr::new(out.output[2], out.output[3], out.output[4], out.output[5])
    };
    let a = Ipv4Addr::new(192, 0, 2, 10);
    let a_neighbour = Ipv4Addr::new(192, 0, 2, 99);
    let b = Ipv4Addr::new(198, 51, 100, 7);
    let https_vip = SocketAddrV4::new(VIP, 443);
    let first = syn_from(&h, a, 50000, https_vip);
    for port in 50001..50010 {
        assert_eq!(syn_from(&h, a, port, https_vip), first, "same client, new connection");
    }
    assert_eq!(syn_from(&h, a_neighbour, 50000, https_vip), first, "same /24");
    let other = syn_from(&h, b, 50000, https_vip);
    assert_ne!(other, first, "another network is scheduled (rr moves on)");
    // The template: the client's network, port 0, the VIP port.
    let key = lb_common::FlowKey {
        src: lb_common::ipv4_words([192, 0, 2, 0]),
        dst: lb_common::ipv4_words(VIP.octets()),
        sport: 0,
        dport: 443u16.to_be(),
        protocol: 6,
        family: lb_common::AF_INET,
        kind: lb_common::flow_kind::TEMPLATE,
        pad0: 0,
    };
    let template = h.datapath.connection(&key).expect("template");
    assert_eq!(template.timeout, 2);
    assert_eq!(template.state, conn_state::TEMPLATE_NONE);
    // Once a connection it placed is established, the template is ASSURED.
    h.run(&PacketSpec::tcp(SocketAddrV4::new(a, 50000), https_vip, tcp::ACK).build()).unwrap();
    assert_eq!(h.datapath.connection(&key).unwrap().state, conn_state::TEMPLATE_ASSURED);
    // Persistent connection counts per server.
    let persistent: i64 = h.tables.real_ids().map(|d| h.datapath.real_conns(d).persistent).sum();
    assert_eq!(persistent, 2);
    // After the timeout with no connection, the client is scheduled anew.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let before = syn_from(&h, b, 51000, https_vip); // b's template expired too: rr goes on
    let again = syn_from(&h, a, 51001, https_vip);
    assert_ne!(again, before, "a fresh choice for a");
    // Every port of an every-port service follows the client.
    let first = syn_from(&h, b, 52000, SocketAddrV4::new(VIP_ALL_PORTS, 22));
    for (i, port) in [80u16, 443, 8080, 53].into_iter().enumerate() {
        assert_eq!(syn_from(&h, b, 52001 + i as u16, SocketAddrV4::new(VIP_ALL_PORTS, port)), first);
    }
}

/// A removed server's template no longer holds its clients.
#[test]
fn persistence_lets_go_of_a_removed_server() {
    let Some(mut h) = harness() else { return };
    let mut svc = service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]);
    svc.options.persistence_timeout = Some(300);
    h.apply(&[svc.clone()]).unwrap();
    let first = schedule_one(&h, 53000).unwrap();
    let other = if first == RS1 { RS2 } else { RS1 };
    svc.reals.retain(|r| r.address == other);
    h.apply(&[svc]).unwrap();
    assert_eq!(schedule_one(&h, 53001), Some(other));
}

/// Connection thresholds (ipvsadm -x/-y): a server with `upper` connections
/// takes no more until it is down below `lower`.
#[test]
fn thresholds_take_a_full_server_out_and_back() {
    let Some(mut h) = harness() else { return };
    let mut svc = service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]);
    for r in &mut svc.reals {
        if r.address == RS1 {
            r.upper_threshold = 2;
            r.lower_threshold = 1;
        }
    }
    h.apply(&[svc]).unwrap();
    let picks: Vec<Ipv4Addr> = (0..6).map(|i| schedule_one(&h, 61000 + i).unwrap()).collect();
    // rr starts with RS2 (newest first); RS1 takes two, then is full.
    assert_eq!(picks, [RS2, RS1, RS2, RS1, RS2, RS2]);
    // Its connections expire one by one (the controller's sweeper counts
    // them down): at 1 it is not below lower (1), still out; at 0 it is back.
    let key = lb_userspace::tables::service_key(Protocol::Tcp, VIP, 80);
    let rs1 = *h
        .tables
        .service_reals(&key)
        .iter()
        .find(|&&d| h.tables.real(d).unwrap().addr == lb_common::ipv4_words(RS1.octets()))
        .unwrap();
    h.datapath.add_real_conns(rs1, conn_state::SYN_RECV, -1);
    let picks: Vec<Ipv4Addr> = (0..3).map(|i| schedule_one(&h, 61100 + i).unwrap()).collect();
    assert_eq!(picks, [RS2, RS2, RS2]);
    h.datapath.add_real_conns(rs1, conn_state::SYN_RECV, -1);
    let picks: Vec<Ipv4Addr> = (0..2).map(|i| schedule_one(&h, 61200 + i).unwrap()).collect();
    assert!(picks.contains(&RS1), "back after falling below its lower threshold: {picks:?}");
}

/// TUN: the packet wrapped in an outer IPv4 header (director → real
/// server, protocol 4, the inner TOS and DF, TTL 64, valid checksum) and
/// addressed to the next hop's MAC; too big for the path: ICMP
/// fragmentation needed with the inner MTU if DF is set, else dropped.
#[test]
fn tun_wraps_the_packet_for_the_next_hop() {
    let Some(mut h) = harness() else { return };
    let next_hop_mac = [0x02, 0x77, 0, 0, 0, 1];
    let tun_source = Ipv4Addr::new(10, 0, 0, 1);
    let mut svc = service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1)]);
    svc.reals[0].forwarding = lb_userspace::model::Forwarding::Tun;
    svc.reals[0].mac = Some(next_hop_mac);
    svc.reals[0].mtu = 1400;
    h.apply(&[svc]).unwrap();
    h.datapath
        .set_director(&lb_common::Director {
            ifindex: 1,
            mac: DIRECTOR_MAC,
            tun_source: lb_common::ipv4_words(tun_source.octets()),
            tun_source_family: lb_common::AF_INET,
            state_timeouts: conn_state::default_timeouts(),
            ..Default::default()
        })
        .unwrap();
    for vlan in [None, Some(7)] {
        let mut spec = PacketSpec::tcp(client(48000 + vlan.unwrap_or(0)), vip(80), tcp::SYN).payload(b"tunnel me");
        spec.vlan = vlan;
        let input = spec.build();
        let l3 = if vlan.is_some() { 18 } else { 14 };
        let before = h.reasons();
        let out = h.run(&input).unwrap();
        assert_eq!(out.verdict, XDP_TX);
        assert_eq!(delta(&before, &h.reasons()), [("conn_new", 1), ("tx_tun", 1)].into_iter().collect());
        let o = &out.output;
        assert_eq!(o.len(), input.len() + 20);
        assert_eq!(&o[0..6], &next_hop_mac);
        assert_eq!(&o[6..12], &DIRECTOR_MAC);
        assert_eq!(&o[12..l3], &input[12..l3], "EtherType and tag kept");
        let outer = &o[l3..l3 + 20];
        assert_eq!(outer[0], 0x45);
        assert_eq!(u16::from_be_bytes([outer[2], outer[3]]) as usize, input.len() - l3 + 20);
        assert_eq!(outer[6] & 0x40, input[l3 + 6] & 0x40, "DF copied");
        assert_eq!((outer[8], outer[9]), (64, 4), "TTL 64, IP-in-IP");
        assert_eq!(&outer[12..16], &tun_source.octets());
        assert_eq!(&outer[16..20], &RS1.octets());
        assert_eq!(ones_complement(outer), 0, "outer checksum");
        assert_eq!(&o[l3 + 20..], &input[l3..], "the inner packet untouched");
    }
    // 1400 - 20 = 1380 bytes of inner packet fit; one more does not.
    let fits = PacketSpec::tcp(client(48100), vip(80), tcp::SYN).payload(&vec![0u8; 1380 - 40]).build();
    assert_eq!(h.run(&fits).unwrap().verdict, XDP_TX);
    let mut too_big = PacketSpec::tcp(client(48101), vip(80), tcp::SYN).payload(&vec![0u8; 1381 - 40]).build();
    too_big[14 + 6] |= 0x40; // DF
    packets::fix_ipv4_checksum(&mut too_big, 14);
    let before = h.reasons();
    let out = h.run(&too_big).unwrap();
    assert_eq!(out.verdict, XDP_TX);
    assert_eq!(delta(&before, &h.reasons()).get("tx_icmp_frag_needed"), Some(&1));
    let icmp = &out.output[34..];
    assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1380, "the MTU left for the inner packet");
    assert_eq!(ones_complement(icmp), 0);
    let mut no_df = too_big.clone();
    no_df[14 + 6] &= !0x40;
    no_df[14 + 4] = 1; // another IP id, same flow
    packets::fix_ipv4_checksum(&mut no_df, 14);
    let before = h.reasons();
    assert_eq!(h.run(&no_df).unwrap().verdict, lb_tests::harness::XDP_DROP);
    assert_eq!(delta(&before, &h.reasons()).get("drop_too_big"), Some(&1));
}

/// A server taken out by its health check hands its connections on at their
/// next packet (IPVS's expire_nodest_conn); with drain_on_failure they stay.
#[test]
fn a_failed_server_hands_its_connections_on_unless_draining() {
    let Some(mut h) = harness() else { return };
    for drain in [false, true] {
        let mut svc = service(Protocol::Udp, VIP, 53, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]);
        h.apply(&[]).unwrap();
        h.apply(&[svc.clone()]).unwrap();
        let flow = PacketSpec::udp(client(7000 + drain as u16), vip(53)).build();
        let first = forwarded_to(&h.run(&flow).unwrap()).unwrap();
        for r in &mut svc.reals {
            if r.address == first {
                r.in_service = false;
                r.expire_conns = !drain;
            }
        }
        h.apply(&[svc]).unwrap();
        let next = forwarded_to(&h.run(&flow).unwrap()).unwrap();
        if drain {
            assert_eq!(next, first, "drained: the flow stays");
        } else {
            assert_ne!(next, first, "expired: the flow moves on");
        }
    }
}

/// Katran's stateless fallback, for directors behind ECMP: a mid-flow
/// packet of no known connection is scheduled by mh and installed, and a
/// second director (its own program and maps, the same service) picks the
/// same real server for it; without the flag it passes, as in IPVS.
#[test]
fn stateless_fallback_picks_what_every_director_picks() {
    let Some(mut first) = harness() else { return };
    let mut second = Harness::new().expect("load a second program");
    let reals = [(RS1, 1), (RS2, 1), (Ipv4Addr::new(10, 0, 0, 23), 2)];
    let mut fallback = service(Protocol::Tcp, VIP, 80, Scheduler::Mh, &reals);
    // mh-port: one client's flows spread by port too.
    fallback.options.flags |=
        lb_common::service_flag::STATELESS_FALLBACK | lb_common::service_flag::MH_PORT;
    first.apply(std::slice::from_ref(&fallback)).unwrap();
    second.apply(std::slice::from_ref(&fallback)).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for port in 44000..44064 {
        let ack = PacketSpec::tcp(client(port), vip(80), tcp::ACK)
            .payload(b"later")
            .build();
        let before = first.reasons();
        let on_first = forwarded_to(&first.run(&ack).unwrap()).expect("forwarded");
        let changed = delta(&before, &first.reasons());
        assert_eq!(changed.get("conn_mid_flow"), Some(&1), "{changed:?}");
        assert_eq!(changed.get("conn_new"), Some(&1), "{changed:?}");
        // Installed: the next packet is the connection's.
        let before = first.reasons();
        assert_eq!(forwarded_to(&first.run(&ack).unwrap()), Some(on_first));
        assert_eq!(delta(&before, &first.reasons()).get("conn_new"), None);
        assert_eq!(
            forwarded_to(&second.run(&ack).unwrap()),
            Some(on_first),
            "client port {port}"
        );
        seen.insert(on_first);
    }
    assert_eq!(seen.len(), 3, "the flows spread over every server");
    // Without the flag: to the kernel, as IPVS does.
    let plain = service(Protocol::Tcp, VIP, 80, Scheduler::Mh, &reals);
    second.apply(&[plain]).unwrap();
    let ack = PacketSpec::tcp(client(44100), vip(80), tcp::ACK).build();
    let before = second.reasons();
    assert_eq!(second.run(&ack).unwrap().verdict, XDP_PASS);
    assert_eq!(
        delta(&before, &second.reasons()).get("pass_tcp_not_syn"),
        Some(&1)
    );
}

/// A connection installed from a mid-flow packet lives a SYN_RECV's
/// timeout until a later packet of its flow shows it is real (then its
/// state's own): spoofed ACKs hold the table no longer than spoofed SYNs.
#[test]
fn a_mid_flow_entry_is_short_lived_until_its_flow_goes_on() {
    let Some(mut h) = harness() else { return };
    let mut timeouts = conn_state::default_timeouts();
    timeouts[conn_state::SYN_RECV as usize] = 1;
    h.set_timeouts(timeouts).unwrap();
    let mut fallback = service(Protocol::Tcp, VIP, 80, Scheduler::Mh, &[(RS1, 1), (RS2, 1)]);
    fallback.options.flags |= lb_common::service_flag::STATELESS_FALLBACK;
    h.apply(&[fallback]).unwrap();
    let ack = |port| PacketSpec::tcp(client(port), vip(80), tcp::ACK).build();
    let new_connections = |h: &Harness, port| {
        let before = h.reasons();
        assert!(forwarded_to(&h.run(&ack(port)).unwrap()).is_some());
        delta(&before, &h.reasons()).get("conn_new").copied().unwrap_or(0)
    };
    // One packet, then silence: gone after SYN_RECV's second.
    assert_eq!(new_connections(&h, 46000), 1);
    // A second packet a little later: the flow is real, ESTABLISHED's 900 s.
    assert_eq!(new_connections(&h, 46001), 1);
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(new_connections(&h, 46001), 0);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(new_connections(&h, 46000), 1, "the lone ACK's entry expired");
    assert_eq!(new_connections(&h, 46001), 0, "the flow that went on kept its entry");
}
