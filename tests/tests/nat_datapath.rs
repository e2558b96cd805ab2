//! NAT datapath fixtures: crafted packets through the real XDP program
//! (BPF_PROG_TEST_RUN), both directions of a NAT connection, each output
//! compared with the packet built from scratch for the rewritten tuple (so
//! the incrementally updated IP and TCP/UDP checksums are checked against
//! full computations). Needs root.

use std::net::{Ipv4Addr, SocketAddrV4};

use lb_common::{conn_state, director_flag};
use lb_tests::datapath_setup::{CLIENT, RS1, RS2, VIP, client, vip};
use lb_tests::harness::{Harness, XDP_PASS, XDP_TX, delta, real_mac, service};
use lb_tests::is_root;
use lb_tests::packets::{DIRECTOR_MAC, PacketSpec, dr_rewrite, fix_ipv4_checksum, frag_needed, icmp_frame, tcp};
use lb_userspace::model::{Forwarding, Protocol, Scheduler};

const REAL_PORT: u16 = 8080;

/// TCP VIP:80 and UDP VIP:53 over RS1:8080 by NAT.
fn nat_harness() -> Option<Harness> {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return None;
    }
    let mut h = Harness::new().expect("load the XDP program");
    let mut services = [
        service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1)]),
        service(Protocol::Udp, VIP, 53, Scheduler::Rr, &[(RS1, 1)]),
    ];
    for s in &mut services {
        s.reals[0].forwarding = Forwarding::Nat;
        s.reals[0].port = REAL_PORT;
    }
    h.apply(&services).expect("fill the maps");
    let mut director = h.datapath.director().unwrap();
    director.flags = director_flag::NAT;
    director.state_timeouts = conn_state::default_timeouts();
    h.datapath.set_director(&director).unwrap();
    Some(h)
}

fn real(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(RS1, port)
}

/// Sets the TTL of the IPv4 header at `offset` (checksum fixed).
fn with_ttl(packet: &mut [u8], offset: usize, ttl: u8) {
    packet[offset + 8] = ttl;
    fix_ipv4_checksum(packet, offset);
}

/// Runs `input` and checks the verdict, the output bytes and which counters
/// moved.
fn expect(h: &Harness, what: &str, input: &[u8], verdict: u32, output: &[u8], counters: &[(&str, u64)]) {
    let before = h.reasons();
    let got = h.run(input).unwrap_or_else(|e| panic!("{what}: {e:#}"));
    assert_eq!(got.verdict, verdict, "{what}: verdict");
    assert_eq!(got.output, output, "{what}: output bytes");
    let expected: std::collections::BTreeMap<&str, u64> = counters.iter().copied().collect();
    assert_eq!(delta(&before, &h.reasons()), expected, "{what}: counters");
}

#[test]
fn a_nat_connection_is_rewritten_both_ways() {
    let Some(h) = nat_harness() else { return };
    let to_real = |spec: PacketSpec| dr_rewrite(&spec.build(), real_mac(RS1), DIRECTOR_MAC);

    // The client's packets: destination VIP:80 becomes RS1:8080.
    let syn = PacketSpec::tcp(client(40000), vip(80), tcp::SYN);
    let syn_out = to_real(PacketSpec::tcp(client(40000), real(REAL_PORT), tcp::SYN));
    expect(&h, "SYN", &syn.build(), XDP_TX, &syn_out, &[("conn_new", 1), ("tx_nat", 1)]);
    let data = PacketSpec::tcp(client(40000), vip(80), tcp::ACK | tcp::PSH).payload(b"GET / HTTP/1.1\r\n\r\n");
    let data_out = to_real(
        PacketSpec::tcp(client(40000), real(REAL_PORT), tcp::ACK | tcp::PSH).payload(b"GET / HTTP/1.1\r\n\r\n"),
    );
    expect(&h, "data", &data.build(), XDP_TX, &data_out, &[("tx_nat", 1)]);

    // The server's reply: source RS1:8080 becomes VIP:80. Where it then
    // goes is the host's routing (this test runs in the host's namespace,
    // ingress lo): sent, or dropped for want of a route or a neighbour;
    // rewritten before either.
    let reply = PacketSpec::tcp(real(REAL_PORT), client(40000), tcp::SYN | tcp::ACK).payload(b"hello");
    let mut reply_ip = PacketSpec::tcp(vip(80), client(40000), tcp::SYN | tcp::ACK).payload(b"hello").ip_bytes();
    with_ttl(&mut reply_ip, 0, 63);
    let before = h.reasons();
    let got = h.run(&reply.build()).unwrap();
    assert_eq!(got.output[14..], reply_ip[..], "reply: IP packet rewritten to come from the VIP, a hop less");
    let moved = delta(&before, &h.reasons());
    assert_eq!(moved.len(), 1, "{moved:?}");
    let (reason, _) = moved.iter().next().unwrap();
    assert!(["tx_nat_reply", "drop_nat_no_route", "drop_nat_no_neigh"].contains(reason), "{moved:?}");

    // A reply with no hop left is the kernel's (it answers "time exceeded").
    let mut last_hop = reply.build();
    with_ttl(&mut last_hop, 14, 1);
    expect(&h, "TTL 1", &last_hop, XDP_PASS, &last_hop, &[("pass_nat_ttl_exceeded", 1)]);

    // The connection saw both halves: the server's SYN-ACK and the client's
    // ACK make it ESTABLISHED (IPVS's NAT state table).
    let ack = PacketSpec::tcp(client(40000), vip(80), tcp::ACK);
    h.run(&ack.build()).unwrap();
    let conns = h.datapath.connections().unwrap();
    let (_, conn) = conns.iter().find(|(k, _)| k.sport == 40000u16.to_be()).unwrap();
    assert_eq!(conn.state, conn_state::ESTABLISHED);

    // ICMP errors about the connection, translated as IPVS does. From the
    // client's side: a router cannot pass our reply on (VIP:80 → client)
    // and says so to the VIP; the real server gets it about its own
    // packet (RS1:8080 → client).
    let router = Ipv4Addr::new(198, 51, 100, 1);
    let answer = PacketSpec::tcp(vip(80), client(40000), tcp::ACK).payload(&[7; 1400]).ip_bytes();
    let answer_as_sent = PacketSpec::tcp(real(REAL_PORT), client(40000), tcp::ACK).payload(&[7; 1400]).ip_bytes();
    let too_big = frag_needed(router, VIP, 1280, &answer);
    let too_big_out = dr_rewrite(&frag_needed(router, RS1, 1280, &answer_as_sent), real_mac(RS1), DIRECTOR_MAC);
    expect(&h, "frag needed to the VIP", &too_big, XDP_TX, &too_big_out, &[("tx_nat_icmp_to_real", 1)]);
    // From the server's side: it refuses what we sent it (client → RS1:8080);
    // the client hears it from the VIP, about its own packet (client → VIP:80).
    let sent = PacketSpec::tcp(client(40000), real(REAL_PORT), tcp::ACK).ip_bytes();
    let as_the_client_sent = PacketSpec::tcp(client(40000), vip(80), tcp::ACK).ip_bytes();
    let refused = icmp_frame(RS1, CLIENT, 3, 3, [0; 4], &sent[..28]);
    let mut refused_ip = icmp_frame(VIP, CLIENT, 3, 3, [0; 4], &as_the_client_sent[..28]);
    with_ttl(&mut refused_ip, 14, 63);
    let before = h.reasons();
    let got = h.run(&refused).unwrap();
    assert_eq!(got.output[14..], refused_ip[14..], "port unreachable: from the VIP, quoting VIP:80");
    let moved = delta(&before, &h.reasons());
    let (reason, _) = moved.iter().next().unwrap();
    assert!(["tx_nat_icmp_to_client", "drop_nat_no_route", "drop_nat_no_neigh"].contains(reason), "{moved:?}");
    // An error quoting no connection of ours is the kernel's.
    let stray = icmp_frame(RS2, CLIENT, 3, 3, [0; 4], &PacketSpec::tcp(client(40000), SocketAddrV4::new(RS2, REAL_PORT), tcp::ACK).ip_bytes()[..28]);
    expect(&h, "stray error", &stray, XDP_PASS, &stray, &[("pass_other_protocol", 1)]);

    // UDP, with its checksum; and a datagram without one keeps none.
    let query = PacketSpec::udp(client(5353), vip(53)).payload(b"query");
    let query_out = to_real(PacketSpec::udp(client(5353), real(REAL_PORT)).payload(b"query"));
    expect(&h, "UDP", &query.build(), XDP_TX, &query_out, &[("conn_new", 1), ("tx_nat", 1)]);
    let mut bare = query.build();
    bare[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let mut bare_out = query_out.clone();
    bare_out[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    expect(&h, "UDP without a checksum", &bare, XDP_TX, &bare_out, &[("tx_nat", 1)]);

    // A packet from another server to the client is no reply of ours: the
    // kernel's, untouched; as is one from the real server's other port.
    for (what, from) in [("another server", SocketAddrV4::new(RS2, REAL_PORT)), ("another port", real(9090))] {
        let stray = PacketSpec::tcp(from, client(40000), tcp::ACK).build();
        expect(&h, what, &stray, XDP_PASS, &stray, &[("pass_no_service", 1)]);
    }
}

#[test]
fn a_full_nat_connection_is_rewritten_both_ways() {
    if !is_root() {
        return;
    }
    let mut h = Harness::new().expect("load the XDP program");
    let mut svc = service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1)]);
    svc.reals[0].forwarding = Forwarding::FullNat;
    svc.reals[0].port = REAL_PORT;
    h.apply(&[svc]).unwrap();
    let mut director = h.datapath.director().unwrap();
    director.flags = director_flag::NAT;
    director.state_timeouts = conn_state::default_timeouts();
    h.datapath.set_director(&director).unwrap();
    let local = Ipv4Addr::new(10, 0, 1, 9);
    assert_eq!(h.datapath.fill_fullnat_ports(&[local]).unwrap(), 64_512);
    let to_real = |spec: PacketSpec| dr_rewrite(&spec.build(), real_mac(RS1), DIRECTOR_MAC);

    // The client's SYN: from the pool's first local end (10.0.1.9:1024),
    // to RS1:8080; both addresses and ports in the checksums.
    let first = SocketAddrV4::new(local, 1024);
    let syn = PacketSpec::tcp(client(40000), vip(80), tcp::SYN);
    let syn_out = to_real(PacketSpec::tcp(first, real(REAL_PORT), tcp::SYN));
    expect(&h, "SYN", &syn.build(), XDP_TX, &syn_out, &[("conn_new", 1), ("tx_fullnat", 1)]);
    let data = PacketSpec::tcp(client(40000), vip(80), tcp::ACK).payload(b"GET /");
    let data_out = to_real(PacketSpec::tcp(first, real(REAL_PORT), tcp::ACK).payload(b"GET /"));
    expect(&h, "its data keeps the local end", &data.build(), XDP_TX, &data_out, &[("tx_fullnat", 1)]);
    // Another client port gets the next local end.
    let other = PacketSpec::tcp(client(40001), vip(80), tcp::SYN);
    let other_out = to_real(PacketSpec::tcp(SocketAddrV4::new(local, 1025), real(REAL_PORT), tcp::SYN));
    expect(&h, "another connection", &other.build(), XDP_TX, &other_out, &[("conn_new", 1), ("tx_fullnat", 1)]);

    // The reply to the local end goes to the client, from the VIP.
    let reply = PacketSpec::tcp(real(REAL_PORT), first, tcp::SYN | tcp::ACK).payload(b"hi");
    let mut reply_ip = PacketSpec::tcp(vip(80), client(40000), tcp::SYN | tcp::ACK).payload(b"hi").ip_bytes();
    with_ttl(&mut reply_ip, 0, 63);
    let before = h.reasons();
    let got = h.run(&reply.build()).unwrap();
    assert_eq!(got.output[14..], reply_ip[..], "reply: from VIP:80 to the client");
    let moved = delta(&before, &h.reasons());
    let (reason, _) = moved.iter().next().unwrap();
    assert!(["tx_fullnat_reply", "drop_nat_no_route", "drop_nat_no_neigh"].contains(reason), "{moved:?}");

    // Where the connection is gone, its local end goes back.
    let key = h.datapath.connections().unwrap().into_iter().find(|(k, _)| k.sport == 40000u16.to_be()).unwrap().0;
    assert!(h.datapath.fullnat_local(&key).is_some());
    h.datapath.remove_connection(&key).unwrap();
    h.datapath.release_fullnat(&key, (lb_common::ipv4_words(RS1.octets()), REAL_PORT.to_be())).unwrap();
    assert!(h.datapath.fullnat_local(&key).is_none());
    let stray = PacketSpec::tcp(real(REAL_PORT), first, tcp::ACK).build();
    expect(&h, "a reply to a released end", &stray, XDP_PASS, &stray, &[("pass_no_service", 1)]);
}

#[test]
fn replies_are_found_under_a_full_table() {
    if !is_root() {
        return;
    }
    // A table of 1024 entries, three times over: the oldest connections
    // are evicted, the newest still found by their replies.
    let mut h = Harness::with_conn_table_size(1024).expect("load the XDP program");
    let mut svc = service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1)]);
    svc.reals[0].forwarding = Forwarding::Nat;
    svc.reals[0].port = REAL_PORT;
    h.apply(&[svc]).unwrap();
    let mut director = h.datapath.director().unwrap();
    director.flags = director_flag::NAT;
    director.state_timeouts = conn_state::default_timeouts();
    h.datapath.set_director(&director).unwrap();
    let clients = 3 * 1024u16;
    for port in 0..clients {
        let syn = PacketSpec::tcp(client(20000 + port), vip(80), tcp::SYN).build();
        assert_eq!(h.run(&syn).unwrap().verdict, XDP_TX);
    }
    let reply_to = |port: u16| {
        let reply = PacketSpec::tcp(real(REAL_PORT), client(20000 + port), tcp::SYN | tcp::ACK).build();
        let before = h.reasons();
        h.run(&reply).unwrap();
        let moved = delta(&before, &h.reasons());
        moved.into_keys().next().unwrap()
    };
    let newest = reply_to(clients - 1);
    assert!(["tx_nat_reply", "drop_nat_no_route", "drop_nat_no_neigh"].contains(&newest), "{newest}");
    assert_eq!(reply_to(0), "pass_no_service", "the oldest connection was evicted with its reply entry's use");
}
