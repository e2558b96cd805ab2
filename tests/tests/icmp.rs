//! ICMP through the real XDP program (BPF_PROG_TEST_RUN), issue 11: the
//! errors the director sends itself are rate-limited and never go to a
//! source that is no single host. Needs root.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use lb_common::conn_state;
use lb_tests::{
    harness::{Harness, XDP_DROP, XDP_TX, delta, service},
    is_root,
    packets::{self, CLIENT_MAC, DIRECTOR_MAC, PacketSpec, tcp},
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
        service(Protocol::Tcp, DEAD_VIP, 80, Scheduler::Rr, &[]),
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
/// broadcast), nor for one sent as a link-layer broadcast or multicast. Nor
/// to the VIP itself (a spoofed packet from the VIP to the VIP).
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
    assert_eq!(&out[0..6], &CLIENT_MAC);
}
