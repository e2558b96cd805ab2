//! IPv6 through the real XDP program (BPF_PROG_TEST_RUN): lb_xdp hands
//! IPv6 frames to lb_xdp6 by a tail call, as on the wire. Direct routing,
//! tunnelling (IPv6 in IPv6), connection tracking, extension headers,
//! fragments, truncated headers, ICMPv6 port unreachable and packet too
//! big. Needs root.

use std::net::{Ipv6Addr, SocketAddrV6};

use lb_tests::{
    harness::{Harness, Outcome, XDP_DROP, XDP_PASS, XDP_TX, delta, real_mac, service},
    is_root,
    packets::{CLIENT_MAC, DIRECTOR_MAC, dr_rewrite, tcp},
    packets6::{NEXTHDR_DEST, NEXTHDR_HOP, NEXTHDR_ROUTING, Packet6Spec, icmp6_error},
};
use lb_userspace::model::{Protocol, Scheduler};

const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// Shares its first word with VIP, and is no VIP.
const OTHER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101);
const RS1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21);
const RS2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x22);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10);
/// A router between the real servers' answers and the client.
const ROUTER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, 1);

/// "Packet too big" (MTU 1400) from the router about the real server's
/// answer VIP:80 → client:`port` (its header and 8 bytes quoted).
fn too_big_about(port: u16) -> Vec<u8> {
    let answer = Packet6Spec::tcp(vip(80), client(port), tcp::SYN | tcp::ACK).ip_bytes();
    icmp6_error(ROUTER, VIP, etherparse::Icmpv6Type::PacketTooBig { mtu: 1400 }, &answer[..48])
}

fn client(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(CLIENT, port, 0, 0)
}

fn vip(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(VIP, port, 0, 0)
}

/// TCP VIP:80 and UDP VIP:53 over RS1 and RS2 (rr), TCP VIP:81 with no
/// server that takes connections.
fn harness() -> Option<Harness> {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return None;
    }
    let mut h = Harness::new().expect("load the XDP programs");
    h.apply(&[
        service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]),
        service(Protocol::Udp, VIP, 53, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]),
        service(Protocol::Tcp, VIP, 81, Scheduler::Rr, &[(RS1, 0)]),
    ])
    .expect("fill the maps");
    Some(h)
}

/// The real server a frame was direct-routed to, checking that nothing but
/// the MACs changed.
fn routed_to(input: &[u8], out: &Outcome) -> Option<Ipv6Addr> {
    if out.verdict != XDP_TX {
        return None;
    }
    [RS1, RS2].into_iter().find(|rs| out.output == dr_rewrite(input, real_mac(*rs), DIRECTOR_MAC))
}

/// Runs `frame` and checks its verdict and the counters that changed.
fn expect(h: &Harness, what: &str, frame: &[u8], verdict: u32, counters: &[(&str, u64)]) -> Outcome {
    let before = h.reasons();
    let out = h.run(frame).unwrap_or_else(|e| panic!("{what}: test run failed: {e:#}"));
    let changed = delta(&before, &h.reasons());
    let want: std::collections::BTreeMap<&str, u64> = counters.iter().copied().collect();
    assert_eq!(out.verdict, verdict, "{what}: verdict");
    assert_eq!(changed, want, "{what}: counters");
    out
}

#[test]
fn tcp_connection_by_direct_routing_and_its_later_packets() {
    let Some(h) = harness() else { return };
    let syn = Packet6Spec::tcp(client(40000), vip(80), tcp::SYN).build();
    let out = expect(&h, "SYN", &syn, XDP_TX, &[("tx_dr", 1), ("conn_new", 1)]);
    let first = routed_to(&syn, &out).expect("the SYN went to a real server, only its MACs rewritten");
    for flags in [tcp::ACK, tcp::ACK | tcp::FIN, tcp::ACK] {
        let later = Packet6Spec::tcp(client(40000), vip(80), flags).payload(b"data").build();
        let out = expect(&h, "later packet", &later, XDP_TX, &[("tx_dr", 1)]);
        assert_eq!(routed_to(&later, &out), Some(first), "a later packet stays on its real server");
    }
    // rr: the next connection goes to the other server.
    let syn2 = Packet6Spec::tcp(client(40001), vip(80), tcp::SYN).build();
    let out = expect(&h, "second SYN", &syn2, XDP_TX, &[("tx_dr", 1), ("conn_new", 1)]);
    let second = routed_to(&syn2, &out).expect("forwarded");
    assert_ne!(first, second, "rr alternates");
    // A packet of no connection that is no SYN passes, as IPVS lets it.
    let stray = Packet6Spec::tcp(client(40002), vip(80), tcp::ACK).build();
    expect(&h, "stray ACK", &stray, XDP_PASS, &[("pass_tcp_not_syn", 1)]);
}

#[test]
fn udp_by_direct_routing() {
    let Some(h) = harness() else { return };
    let query = Packet6Spec::udp(client(5353), vip(53)).payload(b"query").build();
    let out = expect(&h, "UDP", &query, XDP_TX, &[("tx_dr", 1), ("conn_new", 1)]);
    let real = routed_to(&query, &out).expect("forwarded");
    let again = expect(&h, "UDP again", &query, XDP_TX, &[("tx_dr", 1)]);
    assert_eq!(routed_to(&query, &again), Some(real));
}

#[test]
fn extension_headers_are_walked_within_bounds() {
    let Some(h) = harness() else { return };
    let syn = |port| Packet6Spec::tcp(client(port), vip(80), tcp::SYN);
    // The four a chain may hold in RFC 8200's order, one of them long.
    let four = syn(41000)
        .ext_header(NEXTHDR_HOP, 0)
        .ext_header(NEXTHDR_DEST, 2)
        .ext_header(NEXTHDR_ROUTING, 0)
        .ext_header(NEXTHDR_DEST, 0)
        .build();
    let out = expect(&h, "four extension headers", &four, XDP_TX, &[("tx_dr", 1), ("conn_new", 1)]);
    assert!(routed_to(&four, &out).is_some());
    let five = syn(41001).ext_header(NEXTHDR_HOP, 0).ext_header(NEXTHDR_DEST, 0).ext_header(NEXTHDR_DEST, 0);
    let five = five.ext_header(NEXTHDR_DEST, 0).ext_header(NEXTHDR_DEST, 0).build();
    expect(&h, "five extension headers", &five, XDP_PASS, &[("pass_ipv6_ext_headers", 1)]);
    let first_fragment = syn(41002).ext_header(NEXTHDR_HOP, 0).fragment(true, 0).build();
    expect(&h, "first fragment", &first_fragment, XDP_PASS, &[("pass_fragment", 1)]);
    let later_fragment = syn(41003).fragment(false, 4).build();
    expect(&h, "later fragment", &later_fragment, XDP_PASS, &[("pass_fragment", 1)]);
}

#[test]
fn truncated_and_foreign_packets_pass() {
    let Some(h) = harness() else { return };
    let syn = Packet6Spec::tcp(client(42000), vip(80), tcp::SYN).build();
    // 14 Ethernet + 40 IPv6 + 20 TCP: cut inside TCP, inside the fixed header.
    for cut in [14 + 40 + 10, 14 + 30] {
        let mut short = syn[..cut].to_vec();
        if cut > 14 + 40 {
            // The payload length still claims the whole TCP header.
            expect(&h, "payload length past the frame", &short, XDP_PASS, &[("pass_malformed", 1)]);
            // A payload length that fits the frame, too short for TCP.
            short[14 + 4..14 + 6].copy_from_slice(&10u16.to_be_bytes());
            expect(&h, "TCP cut short", &short, XDP_PASS, &[("pass_malformed", 1)]);
        } else {
            expect(&h, "fixed header cut short", &short, XDP_PASS, &[("pass_malformed", 1)]);
        }
    }
    // An extension header running past the payload.
    let mut cut_ext = Packet6Spec::tcp(client(42001), vip(80), tcp::SYN).ext_header(NEXTHDR_DEST, 0).build();
    cut_ext[14 + 40 + 1] = 200;
    expect(&h, "extension header past the payload", &cut_ext, XDP_PASS, &[("pass_malformed", 1)]);
    // Not a VIP (sharing all but the last word with one), another port.
    let other = Packet6Spec::tcp(client(42002), SocketAddrV6::new(OTHER, 80, 0, 0), tcp::SYN).build();
    expect(&h, "no VIP", &other, XDP_PASS, &[("pass_no_service", 1)]);
    let port = Packet6Spec::tcp(client(42003), vip(8080), tcp::SYN).build();
    expect(&h, "no service on the port", &port, XDP_PASS, &[("pass_no_service", 1)]);
    // ICMPv6 (here a neighbour solicitation) is the kernel's.
    let mut ns = Packet6Spec::udp(client(1), vip(2)).build();
    ns[14 + 6] = 58;
    expect(&h, "ICMPv6", &ns, XDP_PASS, &[("pass_icmpv6", 1)]);
}

#[test]
fn no_real_server_is_answered_with_port_unreachable() {
    let Some(mut h) = harness() else { return };
    let mut director = lb_common::Director { ifindex: 1, mac: DIRECTOR_MAC, ..Default::default() };
    director.state_timeouts = lb_common::conn_state::default_timeouts();
    director.icmp_rate_limit = 1000;
    director.icmp_burst = 50;
    h.datapath.set_director(&director).expect("director");
    let syn = Packet6Spec::tcp(client(43000), vip(81), tcp::SYN).payload(&[7; 100]).build();
    let out = expect(&h, "SYN to a service without servers", &syn, XDP_TX, &[("tx_icmp_unreachable", 1)]);
    let reply = &out.output;
    assert_eq!(reply[0..6], CLIENT_MAC, "back to the client's MAC");
    assert_eq!(reply[6..12], DIRECTOR_MAC, "from the director's");
    let ip = etherparse::SlicedPacket::from_ethernet(reply).expect("an IPv6 packet");
    let Some(etherparse::NetSlice::Ipv6(v6)) = ip.net else { panic!("not IPv6: {reply:02x?}") };
    assert_eq!(v6.header().source_addr(), VIP);
    assert_eq!(v6.header().destination_addr(), CLIENT);
    let Some(etherparse::TransportSlice::Icmpv6(icmp)) = ip.transport else { panic!("not ICMPv6") };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (1, 4), "destination unreachable, port unreachable");
    assert!(icmp.is_checksum_valid(v6.header().source(), v6.header().destination()), "checksum");
    // The quote: the offending IPv6 header and 8 bytes of TCP.
    assert_eq!(icmp.payload(), &syn[14..14 + 48]);
    // With the rate limit off, dropped.
    director.icmp_rate_limit = 0;
    h.datapath.set_director(&director).expect("director");
    expect(&h, "over the rate limit", &syn, XDP_DROP, &[("drop_icmp_rate_limited", 1)]);
}

/// wrr's split is exact for IPv6 as for IPv4: 3:1 over 400 connections.
#[test]
fn wrr_split_is_exact() {
    let Some(mut h) = harness() else { return };
    h.apply(&[service(Protocol::Tcp, VIP, 80, Scheduler::Wrr, &[(RS1, 3), (RS2, 1)])]).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for port in 0..400u16 {
        let syn = Packet6Spec::tcp(client(20000 + port), vip(80), tcp::SYN).build();
        let real = routed_to(&syn, &h.run(&syn).unwrap()).expect("forwarded");
        *counts.entry(real).or_insert(0) += 1;
    }
    assert_eq!(counts, [(RS1, 300), (RS2, 100)].into_iter().collect());
}

/// sh, dh and mh hash IPv6 addresses as IPVS does (all four words folded,
/// ip_vs_sh_hashkey's and ip_vs_dh_hashkey's IPv6 case; mh's siphash over
/// the folded address): the program picks what the reference models pick
/// for 300 IPv6 clients each.
#[test]
fn hashing_schedulers_hash_ipv6_as_ipvs() {
    use lb_common::{sched, sched::models, service_flag as f};
    let Some(mut h) = harness() else { return };
    let words = |a: Ipv6Addr| lb_common::ipv6_words(a.octets());
    let reals = [(RS1, 3u32), (RS2, 1), (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x23), 2)];
    // IPVS order: newest first.
    let list: Vec<(Ipv6Addr, u32)> = reals.iter().rev().copied().collect();
    let cases = [(Scheduler::Sh, 0), (Scheduler::Sh, f::SH_PORT), (Scheduler::Dh, 0), (Scheduler::Mh, f::MH_PORT)];
    for (case, (scheduler, flags)) in cases.into_iter().enumerate() {
        let mut svc = service(Protocol::Tcp, VIP, 80, scheduler, &reals);
        svc.options.flags = flags;
        h.apply(&[]).unwrap();
        h.apply(&[svc]).unwrap();
        let table = match scheduler {
            Scheduler::Sh => sched::sh_table(&list.iter().map(|e| e.1).collect::<Vec<_>>()),
            Scheduler::Dh => sched::dh_table(list.len()),
            _ => sched::mh_table(
                &list
                    .iter()
                    .map(|&(a, w)| sched::MhReal { addr: words(a), port_be: 80u16.to_be(), weight: w })
                    .collect::<Vec<_>>(),
                lb_common::hash::MH_DEFAULT_TAB_SIZE,
            ),
        };
        let views: Vec<models::ConnView> = list.iter().map(|e| models::ConnView::new(e.1, 0, 0)).collect();
        for c in 0..300u32 {
            let source = Ipv6Addr::from(0x2001_0db8_00c0_0000_0000_0000_0000_0000u128 + (c as u128 * 0x9E37_79B9_7F4A_7C15));
            // A port of its own per case: RST leaves an entry in SYN_RECV
            // (IPVS's input-only table), which a SYN of the same tuple
            // would follow to its old server.
            let port = 30000 + (case * 300) as u16 + c as u16;
            let want = match scheduler {
                Scheduler::Sh => models::sh_pick(&table, &views, words(source), port.to_be(), false, flags & f::SH_PORT != 0),
                Scheduler::Dh => models::dh_pick(&table, &views, words(VIP)),
                _ => models::mh_pick(&table, &views, words(source), port.to_be(), false, true),
            }
            .map(|i| list[i].0);
            let syn = Packet6Spec::tcp(SocketAddrV6::new(source, port, 0, 0), vip(80), tcp::SYN).build();
            let got = routed_to_any(&syn, &h.run(&syn).unwrap(), &list);
            assert_eq!(got, want, "{scheduler} flags {flags:#x} client [{source}]:{port}");
            let rst = Packet6Spec::tcp(SocketAddrV6::new(source, port, 0, 0), vip(80), tcp::RST).build();
            h.run(&rst).unwrap();
        }
    }
}

/// [`routed_to`] over any of `reals`.
fn routed_to_any(input: &[u8], out: &Outcome, reals: &[(Ipv6Addr, u32)]) -> Option<Ipv6Addr> {
    if out.verdict != XDP_TX {
        return None;
    }
    reals.iter().map(|r| r.0).find(|rs| out.output == dr_rewrite(input, real_mac(*rs), DIRECTOR_MAC))
}


/// TUN: the packet wrapped in an outer IPv6 header (director to real
/// server, next header 41, the inner traffic class, hop limit 64) for the
/// next hop's MAC, as IPVS's ip_vs_tunnel_xmit_v6; too big for the path:
/// ICMPv6 packet too big naming the inner MTU, never below 1280.
#[test]
fn tun_wraps_the_packet_in_ipv6() {
    let Some(mut h) = harness() else { return };
    let next_hop_mac = [0x02, 0x77, 0, 0, 0, 1];
    let tun_source = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let mut svc = service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1)]);
    svc.reals[0].forwarding = lb_userspace::model::Forwarding::Tun;
    svc.reals[0].mac = Some(next_hop_mac);
    svc.reals[0].mtu = 1400;
    h.apply(&[svc.clone()]).unwrap();
    let director = lb_common::Director {
        ifindex: 1,
        mac: DIRECTOR_MAC,
        tun_source6: lb_common::ipv6_words(tun_source.octets()),
        state_timeouts: lb_common::conn_state::default_timeouts(),
        ..Default::default()
    };
    h.datapath.set_director(&director).unwrap();

    let input = Packet6Spec::tcp(client(48000), vip(80), tcp::SYN).payload(b"tunnel me").build();
    let out = expect(&h, "SYN", &input, XDP_TX, &[("conn_new", 1), ("tx_tun", 1)]);
    let o = &out.output;
    assert_eq!(o.len(), input.len() + 40);
    assert_eq!(&o[0..6], &next_hop_mac);
    assert_eq!(&o[6..12], &DIRECTOR_MAC);
    assert_eq!(&o[12..14], &[0x86, 0xdd], "EtherType IPv6");
    let outer = &o[14..54];
    assert_eq!(outer[0] >> 4, 6);
    assert_eq!(u16::from_be_bytes([outer[4], outer[5]]) as usize, input.len() - 14, "payload: the inner packet");
    assert_eq!((outer[6], outer[7]), (41, 64), "IPv6 in IPv6, hop limit 64");
    assert_eq!(&outer[8..24], &tun_source.octets());
    assert_eq!(&outer[24..40], &RS1.octets());
    assert_eq!(&o[54..], &input[14..], "the inner packet untouched");
    let later = Packet6Spec::tcp(client(48000), vip(80), tcp::ACK).payload(b"more").build();
    expect(&h, "later packet", &later, XDP_TX, &[("tx_tun", 1)]);
    // An ICMPv6 error about the connection follows it through the tunnel.
    let error = too_big_about(48000);
    let out = expect(&h, "error about it", &error, XDP_TX, &[("tx_tun_icmp_error", 1)]);
    assert_eq!(&out.output[54..], &error[14..], "the error untouched inside");

    // 1400 - 40 = 1360 bytes of inner packet fit; one more does not.
    let sized = |port: u16, ip_len: usize| Packet6Spec::tcp(client(port), vip(80), tcp::SYN).payload(&vec![0; ip_len - 60]).build();
    expect(&h, "fits", &sized(48100, 1360), XDP_TX, &[("conn_new", 1), ("tx_tun", 1)]);
    let too_big = sized(48101, 1361);
    let out = expect(&h, "too big", &too_big, XDP_TX, &[("conn_new", 1), ("tx_icmp_frag_needed", 1)]);
    let reply = &out.output;
    assert_eq!(reply[0..6], CLIENT_MAC, "back to the client");
    let ip = etherparse::SlicedPacket::from_ethernet(reply).expect("an IPv6 packet");
    let Some(etherparse::NetSlice::Ipv6(v6)) = ip.net else { panic!("not IPv6: {reply:02x?}") };
    assert_eq!((v6.header().source_addr(), v6.header().destination_addr()), (VIP, CLIENT));
    let Some(etherparse::TransportSlice::Icmpv6(icmp)) = ip.transport else { panic!("not ICMPv6") };
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (2, 0), "packet too big");
    assert_eq!(icmp.bytes5to8(), 1360u32.to_be_bytes(), "the MTU left for the inner packet");
    assert!(icmp.is_checksum_valid(v6.header().source(), v6.header().destination()), "checksum");
    assert_eq!(icmp.payload(), &too_big[14..14 + 48], "quotes the header and 8 bytes of TCP");

    // A path narrower than IPv6's minimum (1280 + 40): 1280 is named, and
    // a packet within it has nobody to be told.
    svc.reals[0].mtu = 1300;
    h.apply(&[svc]).unwrap();
    let out = expect(&h, "over 1280", &sized(48200, 1281), XDP_TX, &[("conn_new", 1), ("tx_icmp_frag_needed", 1)]);
    assert_eq!(out.output[14 + 40 + 4..14 + 40 + 8], 1280u32.to_be_bytes());
    expect(&h, "within 1280", &sized(48201, 1280), XDP_DROP, &[("conn_new", 1), ("drop_too_big", 1)]);
}

/// An ICMPv6 error about a connection goes to its real server unchanged
/// (only the MACs), as IPVS's ip_vs_in_icmp_v6; about no connection, or
/// quoting no answer from the VIP, it passes to the kernel, as does
/// neighbour discovery.
#[test]
fn icmpv6_errors_about_a_connection_go_to_its_real_server() {
    let Some(h) = harness() else { return };
    let syn = Packet6Spec::tcp(client(44000), vip(80), tcp::SYN).build();
    let real = routed_to(&syn, &h.run(&syn).unwrap()).expect("forwarded");
    let error = too_big_about(44000);
    let out = expect(&h, "packet too big", &error, XDP_TX, &[("tx_dr_icmp_error", 1)]);
    assert_eq!(routed_to(&error, &out), Some(real), "to the connection's real server, only its MACs rewritten");
    let unreachable = {
        let answer = Packet6Spec::tcp(vip(80), client(44000), tcp::ACK).ip_bytes();
        let kind = etherparse::Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::NoRoute);
        icmp6_error(ROUTER, VIP, kind, &answer[..48])
    };
    let out = expect(&h, "destination unreachable", &unreachable, XDP_TX, &[("tx_dr_icmp_error", 1)]);
    assert_eq!(routed_to(&unreachable, &out), Some(real));

    expect(&h, "no connection", &too_big_about(44001), XDP_PASS, &[("pass_icmp_no_conn", 1)]);
    let mut spoofed = too_big_about(44000);
    spoofed[14 + 40 + 8 + 8 + 15] ^= 1; // the quoted source: not the VIP
    expect(&h, "quote not from the VIP", &spoofed, XDP_PASS, &[("pass_icmp_malformed", 1)]);
    let cut = &too_big_about(44000)[..14 + 40 + 8 + 40];
    let mut cut = cut.to_vec();
    cut[14 + 4..14 + 6].copy_from_slice(&48u16.to_be_bytes());
    expect(&h, "quote without ports", &cut, XDP_PASS, &[("pass_icmp_malformed", 1)]);
    let solicitation = icmp6_error(CLIENT, VIP, etherparse::Icmpv6Type::Unknown { type_u8: 135, code_u8: 0, bytes5to8: [0; 4] }, &VIP.octets());
    expect(&h, "neighbour solicitation", &solicitation, XDP_PASS, &[("pass_icmpv6", 1)]);
}
