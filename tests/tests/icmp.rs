//! ICMP through the real XDP program (BPF_PROG_TEST_RUN), issue 11:
//! errors a router sends to a VIP about a real server's reply reach that
//! real server (IPVS's ip_vs_in_icmp); the errors the director sends itself
//! are rate-limited and never go to a source that is no single host. Needs
//! root.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use lb_common::conn_state;
use lb_tests::{
    harness::{Harness, XDP_DROP, XDP_PASS, XDP_TX, delta, real_mac, service},
    is_root,
    packets::{self, CLIENT_MAC, DIRECTOR_MAC, PacketSpec, dr_rewrite, frag_needed, icmp, icmp_frame, tcp},
};
use lb_userspace::model::{Forwarding, Protocol, Scheduler};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
/// A VIP whose service has no real server: every SYN is answered with
/// "port unreachable".
const DEAD_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 102);
const TUN_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 103);
const RS1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 21);
const RS2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 22);
const TUN_RS: Ipv4Addr = Ipv4Addr::new(172, 16, 5, 7);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// A router on the path back to the client.
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const TUN_SOURCE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn harness() -> Option<Harness> {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return None;
    }
    let mut h = Harness::new().expect("load the XDP program");
    let mut tun = service(Protocol::Tcp, TUN_VIP, 80, Scheduler::Rr, &[(TUN_RS, 1)]);
    tun.reals[0].forwarding = Forwarding::Tun;
    tun.reals[0].mac = Some(NEXT_HOP_MAC);
    tun.reals[0].mtu = 1400;
    h.apply(&[
        service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]),
        service(Protocol::Udp, VIP, 53, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]),
        service::<std::net::Ipv4Addr>(Protocol::Tcp, DEAD_VIP, 80, Scheduler::Rr, &[]),
        tun,
    ])
    .expect("fill the maps");
    h.datapath
        .set_director(&lb_common::Director {
            ifindex: 1,
            mac: DIRECTOR_MAC,
            tun_source: lb_common::ipv4_words(TUN_SOURCE.octets()),
            tun_source_family: lb_common::AF_INET,
            state_timeouts: conn_state::default_timeouts(),
            ..Default::default()
        })
        .unwrap();
    Some(h)
}

fn counts(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    pairs.iter().copied().collect()
}

/// Runs `frame`, checks the verdict and the counters that moved, returns
/// the output.
fn expect(h: &Harness, what: &str, frame: &[u8], verdict: u32, counters: &[(&'static str, u64)]) -> Vec<u8> {
    let before = h.reasons();
    let out = h.run(frame).unwrap_or_else(|e| panic!("{what}: test run failed: {e:#}"));
    assert_eq!(delta(&before, &h.reasons()), counts(counters), "{what}: counters");
    assert_eq!(out.verdict, verdict, "{what}: verdict");
    out.output
}

/// Passed to the kernel untouched, counted once as `reason`.
fn expect_passed(h: &Harness, what: &str, frame: &[u8], reason: &'static str) {
    let out = expect(h, what, frame, XDP_PASS, &[(reason, 1)]);
    assert_eq!(out, frame, "{what}: passed untouched");
}

/// The real server a new connection was sent to by DR.
fn dr_target(out: &[u8]) -> Ipv4Addr {
    assert_eq!(&out[0..2], &[0x02, 0xee], "a real server's MAC");
    Ipv4Addr::new(out[2], out[3], out[4], out[5])
}

/// The VIP → client segment a real server sends back on a connection
/// (as a router on the way quotes it).
fn reply_segment(vip: SocketAddrV4, client: SocketAddrV4) -> Vec<u8> {
    PacketSpec::tcp(vip, client, tcp::ACK | tcp::PSH).payload(&[b'x'; 1400]).ip_bytes()
}

#[test]
fn frag_needed_about_a_dr_flow_reaches_its_real_server() {
    let Some(h) = harness() else { return };
    let client = SocketAddrV4::new(CLIENT, 40000);
    let vip = SocketAddrV4::new(VIP, 80);
    let syn = PacketSpec::tcp(client, vip, tcp::SYN).build();
    let out = expect(&h, "SYN", &syn, XDP_TX, &[("conn_new", 1), ("tx_dr", 1)]);
    let real = dr_target(&out);

    // A router between the real server and the client cannot forward the
    // real server's 1454-byte reply (DF) over its 1280-byte link.
    let error = frag_needed(ROUTER, VIP, 1280, &reply_segment(vip, client));
    let out = expect(&h, "frag needed", &error, XDP_TX, &[("tx_dr_icmp_error", 1)]);
    assert_eq!(out, dr_rewrite(&error, real_mac(real), DIRECTOR_MAC), "the whole error, unchanged, to {real}");

    // Every error of those kinds, for TCP and UDP, and behind a VLAN tag.
    let dns_client = SocketAddrV4::new(CLIENT, 5353);
    let dns = SocketAddrV4::new(VIP, 53);
    let out =
        expect(&h, "UDP flow", &PacketSpec::udp(dns_client, dns).build(), XDP_TX, &[("conn_new", 1), ("tx_dr", 1)]);
    let dns_real = dr_target(&out);
    let answer = PacketSpec::udp(dns, dns_client).payload(b"answer").ip_bytes();
    for (kind, code, what) in [
        (icmp::DEST_UNREACH, 1, "host unreachable"),
        (icmp::DEST_UNREACH, icmp::PORT_UNREACH, "port unreachable"),
        (icmp::DEST_UNREACH, 13, "administratively prohibited"),
        (icmp::TIME_EXCEEDED, 0, "TTL exceeded in transit"),
        (icmp::PARAMETER_PROBLEM, 0, "parameter problem"),
    ] {
        let error = icmp_frame(ROUTER, VIP, kind, code, [0; 4], &answer[..28]);
        let out = expect(&h, what, &error, XDP_TX, &[("tx_dr_icmp_error", 1)]);
        assert_eq!(out, dr_rewrite(&error, real_mac(dns_real), DIRECTOR_MAC), "{what}");
    }
    let mut tagged = packets::ethernet(DIRECTOR_MAC, CLIENT_MAC, Some(7), packets::ETH_P_IP);
    tagged.extend(&error[14..]);
    let out = expect(&h, "frag needed with a VLAN tag", &tagged, XDP_TX, &[("tx_dr_icmp_error", 1)]);
    assert_eq!(out, dr_rewrite(&tagged, real_mac(real), DIRECTOR_MAC));

    // Counted for the service and the real server, as IPVS's ip_vs_in_stats.
    let key = lb_userspace::tables::service_key(Protocol::Tcp, VIP, 80);
    let svc = h.datapath.service_counters(h.tables.service_id(&key).unwrap());
    assert_eq!((svc.conns, svc.in_packets), (1, 3), "the SYN and two errors");
}

#[test]
fn frag_needed_about_a_tun_flow_reaches_its_real_server_through_the_tunnel() {
    let Some(h) = harness() else { return };
    let client = SocketAddrV4::new(CLIENT, 41000);
    let vip = SocketAddrV4::new(TUN_VIP, 80);
    expect(&h, "SYN", &PacketSpec::tcp(client, vip, tcp::SYN).build(), XDP_TX, &[("conn_new", 1), ("tx_tun", 1)]);

    let error = frag_needed(ROUTER, TUN_VIP, 1280, &reply_segment(vip, client));
    let out = expect(&h, "frag needed", &error, XDP_TX, &[("tx_tun_icmp_error", 1)]);
    // What the tunnel makes of it: the error whole, in an outer header from
    // the director to the real server, to the next hop's MAC.
    let inner = &error[14..];
    let mut outer = etherparse::Ipv4Header::new(
        inner.len() as u16,
        64,
        etherparse::IpNumber::IPV4,
        TUN_SOURCE.octets(),
        TUN_RS.octets(),
    )
    .unwrap();
    outer.dont_fragment = error[14 + 6] & 0x40 != 0;
    outer.header_checksum = outer.calc_header_checksum();
    let mut want = packets::ethernet(NEXT_HOP_MAC, DIRECTOR_MAC, None, packets::ETH_P_IP);
    outer.write(&mut want).unwrap();
    want.extend(inner);
    assert_eq!(out, want);

    // An error too big for the tunnel is dropped, never answered: no ICMP
    // error about an ICMP error (RFC 1122 3.2.2).
    let big_quote = &reply_segment(vip, client)[..1380];
    let mut big = icmp_frame(ROUTER, TUN_VIP, icmp::DEST_UNREACH, icmp::FRAG_NEEDED, [0, 0, 5, 0], big_quote);
    assert!(big.len() - 14 + 20 > 1400);
    big[14 + 6] |= 0x40;
    packets::fix_ipv4_checksum(&mut big, 14);
    expect(&h, "too big for the tunnel", &big, XDP_DROP, &[("drop_too_big", 1)]);
}

#[test]
fn icmp_that_is_not_about_a_live_flow_passes_to_the_kernel() {
    let Some(h) = harness() else { return };
    let client = SocketAddrV4::new(CLIENT, 42000);
    let vip = SocketAddrV4::new(VIP, 80);
    expect(&h, "SYN", &PacketSpec::tcp(client, vip, tcp::SYN).build(), XDP_TX, &[("conn_new", 1), ("tx_dr", 1)]);
    let segment = reply_segment(vip, client);
    let quote = &segment[..28];

    // Not an error, or not one we forward: the director's stack, as before.
    expect_passed(
        &h,
        "echo request to the VIP",
        &icmp_frame(CLIENT, VIP, icmp::ECHO_REQUEST, 0, [0, 1, 0, 1], b"ping"),
        "pass_other_protocol",
    );
    expect_passed(
        &h,
        "echo reply to the VIP",
        &icmp_frame(CLIENT, VIP, icmp::ECHO_REPLY, 0, [0, 1, 0, 1], b"pong"),
        "pass_other_protocol",
    );
    expect_passed(
        &h,
        "redirect",
        &icmp_frame(ROUTER, VIP, icmp::REDIRECT, 1, ROUTER.octets(), quote),
        "pass_other_protocol",
    );
    expect_passed(
        &h,
        "an error to the director's own address",
        &frag_needed(ROUTER, TUN_SOURCE, 1280, &segment),
        "pass_other_protocol",
    );

    // Errors that quote nothing of ours.
    let other_client = SocketAddrV4::new(CLIENT, 42999);
    expect_passed(
        &h,
        "an unknown flow",
        &frag_needed(ROUTER, VIP, 1280, &reply_segment(vip, other_client)),
        "pass_icmp_no_conn",
    );
    let unswapped = PacketSpec::tcp(SocketAddrV4::new(VIP, 42000), SocketAddrV4::new(CLIENT, 80), tcp::ACK).ip_bytes();
    expect_passed(
        &h,
        "the connection's ports, not reversed",
        &frag_needed(ROUTER, VIP, 1280, &unswapped),
        "pass_icmp_no_conn",
    );
    let forward = PacketSpec::tcp(client, vip, tcp::ACK).ip_bytes();
    expect_passed(
        &h,
        "the client's own packet quoted",
        &frag_needed(ROUTER, VIP, 1280, &forward),
        "pass_icmp_malformed",
    );
    let mut quoted_icmp = segment.clone();
    quoted_icmp[9] = 1;
    expect_passed(&h, "a quoted ICMP packet", &frag_needed(ROUTER, VIP, 1280, &quoted_icmp), "pass_icmp_no_conn");
    let mut later_fragment = segment.clone();
    later_fragment[6..8].copy_from_slice(&0x00b9u16.to_be_bytes());
    expect_passed(&h, "a quoted later fragment", &frag_needed(ROUTER, VIP, 1280, &later_fragment), "pass_icmp_no_conn");

    // Malformed: the quote is not a readable IPv4 header and 8 bytes, or
    // not the VIP's packet, or the code is unknown.
    let mut v6 = segment.clone();
    v6[0] = 0x65;
    expect_passed(&h, "quoted version 6", &frag_needed(ROUTER, VIP, 1280, &v6), "pass_icmp_malformed");
    let mut short_ihl = segment.clone();
    short_ihl[0] = 0x44;
    expect_passed(
        &h,
        "quoted IHL 4",
        &icmp_frame(ROUTER, VIP, 3, 4, [0, 0, 5, 0], &short_ihl[..28]),
        "pass_icmp_malformed",
    );
    let mut long_ihl = segment.clone();
    long_ihl[0] = 0x4f;
    expect_passed(
        &h,
        "quoted IHL 15, 28 bytes quoted",
        &icmp_frame(ROUTER, VIP, 3, 4, [0, 0, 5, 0], &long_ihl[..28]),
        "pass_icmp_malformed",
    );
    expect_passed(
        &h,
        "no quoted ports",
        &icmp_frame(ROUTER, VIP, 3, 4, [0, 0, 5, 0], &segment[..24]),
        "pass_icmp_malformed",
    );
    expect_passed(&h, "nothing quoted", &icmp_frame(ROUTER, VIP, 3, 4, [0, 0, 5, 0], &[]), "pass_icmp_malformed");
    let mut short_total = segment.clone();
    short_total[2..4].copy_from_slice(&24u16.to_be_bytes());
    expect_passed(
        &h,
        "quoted total length below its headers",
        &frag_needed(ROUTER, VIP, 1280, &short_total),
        "pass_icmp_malformed",
    );
    expect_passed(
        &h,
        "a quote from another address",
        &frag_needed(ROUTER, VIP, 1280, &reply_segment(SocketAddrV4::new(RS1, 80), client)),
        "pass_icmp_malformed",
    );
    expect_passed(&h, "unreachable code 16", &icmp_frame(ROUTER, VIP, 3, 16, [0; 4], quote), "pass_icmp_malformed");
    expect_passed(&h, "time exceeded code 2", &icmp_frame(ROUTER, VIP, 11, 2, [0; 4], quote), "pass_icmp_malformed");
    expect_passed(
        &h,
        "parameter problem code 3",
        &icmp_frame(ROUTER, VIP, 12, 3, [0; 4], quote),
        "pass_icmp_malformed",
    );

    // The quote must lie within the outer IP packet, not in the padding
    // after it.
    let mut padded = frag_needed(ROUTER, VIP, 1280, &segment);
    let shortened = (padded.len() - 14 - 8) as u16;
    padded[16..18].copy_from_slice(&shortened.to_be_bytes());
    packets::fix_ipv4_checksum(&mut padded, 14);
    expect_passed(&h, "quoted ports beyond the IP length", &padded, "pass_icmp_malformed");
    let mut header_only = icmp_frame(ROUTER, VIP, 3, 4, [0, 0, 5, 0], quote);
    header_only[16..18].copy_from_slice(&24u16.to_be_bytes());
    packets::fix_ipv4_checksum(&mut header_only, 14);
    expect_passed(&h, "the ICMP header beyond the IP length", &header_only, "pass_malformed");
}

/// A spoofed SYN flood at a service with no live real server: every SYN
/// calls for "port unreachable", the director sends at most its limit
/// (by default 1,000 a second, the kernel's icmp_msgs_per_sec, with its
/// burst of 50).
#[test]
fn unreachable_replies_are_capped_under_a_syn_flood() {
    let Some(h) = harness() else { return };
    let (sent, replies, limited, elapsed) = flood(&h, Duration::from_secs(1));
    let allowed = allowed(1000, 50, elapsed);
    eprintln!("{sent} SYNs in {elapsed:?}: {replies} answered, {limited} not (allowed at most {allowed})");
    assert!(sent > 2 * allowed, "the flood must outrun the limit: {sent} SYNs");
    assert!(replies <= allowed, "{replies} replies in {elapsed:?}, allowed {allowed}");
    assert!(replies >= 500, "{replies} replies in {elapsed:?}: the limit still lets replies out");
    assert_eq!(replies + limited, sent);
}

/// The limit is the director's (`icmp_rate_limit`): a lower one holds as
/// well, and 0 sends nothing at all.
#[test]
fn the_icmp_rate_limit_is_the_directors() {
    let Some(mut h) = harness() else { return };
    let mut director = h.datapath.director().unwrap();
    for limit in [100, 0] {
        director.icmp_rate_limit = limit;
        director.icmp_burst = lb_common::icmp_burst(limit);
        h.datapath.set_director(&director).unwrap();
        let (sent, replies, limited, elapsed) = flood(&h, Duration::from_millis(1500));
        let allowed = allowed(limit as u64, director.icmp_burst as u64, elapsed);
        eprintln!("limit {limit}: {sent} SYNs in {elapsed:?}: {replies} answered (allowed at most {allowed})");
        assert!(replies <= allowed, "limit {limit}: {replies} replies in {elapsed:?}");
        assert!(replies as f64 >= limit as f64 * 0.5, "limit {limit}: {replies} replies in {elapsed:?}");
        assert_eq!(replies + limited, sent);
    }
}

/// Sends spoofed SYNs (each from another unicast address) to the dead VIP
/// for `time`; returns (SYNs sent, answered, rate-limited, time taken).
fn flood(h: &Harness, time: Duration) -> (u64, u64, u64, Duration) {
    let frames: Vec<Vec<u8>> = (0..256u32)
        .map(|i| {
            let source = Ipv4Addr::from(0xC633_0000 + i * 97); // 198.51.0.0/16
            PacketSpec::tcp(SocketAddrV4::new(source, 1024 + i as u16), SocketAddrV4::new(DEAD_VIP, 80), tcp::SYN)
                .build()
        })
        .collect();
    let before = h.reasons();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < time {
        let out = h.run(&frames[sent as usize % frames.len()]).unwrap();
        assert!(out.verdict == XDP_TX || out.verdict == XDP_DROP, "verdict {}", out.verdict);
        sent += 1;
    }
    let elapsed = start.elapsed();
    let d = delta(&before, &h.reasons());
    let replies = d.get("tx_icmp_unreachable").copied().unwrap_or(0);
    let limited = d.get("drop_icmp_rate_limited").copied().unwrap_or(0);
    (sent, replies, limited, elapsed)
}

/// What a token bucket of `rate` a second and `burst` may let out in
/// `elapsed`: a full bucket, its refills, one more bucket's worth for the
/// refill that claims the time before the start, and 10 ms for the clock's
/// steps (a tick is 10 ms at HZ 100, the coarsest).
fn allowed(rate: u64, burst: u64, elapsed: Duration) -> u64 {
    (rate as f64 * (elapsed.as_secs_f64() + 0.010)).ceil() as u64 + 2 * burst
}

/// RFC 1812 4.3.2.7 and RFC 1122 3.2.2: no ICMP error for a datagram whose
/// source is no single host (zero, loopback, multicast, class E and
/// broadcast), nor for one sent as a link-layer broadcast or multicast (or
/// to another host's MAC). Nor to the VIP itself (a spoofed packet from the
/// VIP to the VIP).
#[test]
fn no_replies_to_sources_that_are_no_single_host() {
    let Some(h) = harness() else { return };
    let to_dead =
        |source: Ipv4Addr| PacketSpec::tcp(SocketAddrV4::new(source, 5000), SocketAddrV4::new(DEAD_VIP, 80), tcp::SYN);
    for (source, what) in [
        (Ipv4Addr::new(0, 0, 0, 0), "0.0.0.0"),
        (Ipv4Addr::new(0, 1, 2, 3), "this network"),
        (Ipv4Addr::new(127, 0, 0, 1), "loopback"),
        (Ipv4Addr::new(224, 0, 0, 1), "all hosts"),
        (Ipv4Addr::new(239, 255, 255, 250), "multicast"),
        (Ipv4Addr::new(240, 0, 0, 1), "class E"),
        (Ipv4Addr::new(255, 255, 255, 255), "broadcast"),
        (DEAD_VIP, "the VIP itself"),
    ] {
        expect(&h, what, &to_dead(source).build(), XDP_DROP, &[("drop_icmp_bad_source", 1)]);
    }
    let mut broadcast = to_dead(CLIENT);
    broadcast.dst_mac = [0xff; 6];
    expect(&h, "a link-layer broadcast", &broadcast.build(), XDP_DROP, &[("drop_icmp_bad_source", 1)]);
    let mut multicast = to_dead(CLIENT);
    multicast.dst_mac = [0x01, 0x00, 0x5e, 0, 0, 1];
    expect(&h, "a link-layer multicast", &multicast.build(), XDP_DROP, &[("drop_icmp_bad_source", 1)]);
    let mut other_host = to_dead(CLIENT);
    other_host.dst_mac = real_mac(RS1);
    expect(&h, "a frame to another host's MAC", &other_host.build(), XDP_DROP, &[("drop_icmp_bad_source", 1)]);
    let mut group_sender = to_dead(CLIENT);
    group_sender.src_mac = [0x03, 0, 0, 0, 0, 1];
    expect(&h, "from a group MAC", &group_sender.build(), XDP_DROP, &[("drop_icmp_bad_source", 1)]);

    // "Fragmentation needed" for the tunnel, too.
    let mut too_big =
        PacketSpec::tcp(SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 5), 5000), SocketAddrV4::new(TUN_VIP, 80), tcp::SYN)
            .payload(&[0; 1400])
            .build();
    too_big[14 + 6] |= 0x40;
    packets::fix_ipv4_checksum(&mut too_big, 14);
    expect(&h, "too big, from multicast", &too_big, XDP_DROP, &[("conn_new", 1), ("drop_icmp_bad_source", 1)]);

    // A real client is still answered.
    let out = expect(&h, "a unicast client", &to_dead(CLIENT).build(), XDP_TX, &[("tx_icmp_unreachable", 1)]);
    assert_eq!((&out[0..6], &out[6..12]), (&CLIENT_MAC[..], &DIRECTOR_MAC[..]), "back to the sender, from us");
}
