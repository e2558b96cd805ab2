//! Frames built to mislead the parser, through the real XDP program
//! (BPF_PROG_TEST_RUN), issue 11: every L4 read is bounded by the IP total
//! length, so a header in the Ethernet padding after the IP packet is no
//! header. Needs root.

use std::net::{Ipv4Addr, SocketAddrV4};

use lb_tests::{
    harness::{Harness, XDP_PASS, XDP_TX, delta, real_mac, service},
    is_root,
    packets::{self, DIRECTOR_MAC, PacketSpec, dr_rewrite, tcp},
};
use lb_userspace::model::{Protocol, Scheduler};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const RS1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 21);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

fn harness() -> Option<Harness> {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return None;
    }
    let mut h = Harness::new().expect("load the XDP program");
    h.apply(&[
        service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1)]),
        service(Protocol::Udp, VIP, 53, Scheduler::Rr, &[(RS1, 1)]),
    ])
    .expect("fill the maps");
    Some(h)
}

fn syn(port: u16) -> Vec<u8> {
    PacketSpec::tcp(SocketAddrV4::new(CLIENT, port), SocketAddrV4::new(VIP, 80), tcp::SYN).build()
}

fn udp(port: u16, payload: &[u8]) -> Vec<u8> {
    PacketSpec::udp(SocketAddrV4::new(CLIENT, port), SocketAddrV4::new(VIP, 53)).payload(payload).build()
}

/// Sets the IP total length of a frame (IP at 14) and its checksum.
fn with_ip_len(mut frame: Vec<u8>, len: u16) -> Vec<u8> {
    frame[16..18].copy_from_slice(&len.to_be_bytes());
    packets::fix_ipv4_checksum(&mut frame, 14);
    frame
}

fn expect_malformed(h: &Harness, what: &str, frame: &[u8]) {
    let before = h.reasons();
    let out = h.run(frame).unwrap();
    assert_eq!(delta(&before, &h.reasons()), [("pass_malformed", 1)].into_iter().collect(), "{what}: counters");
    assert_eq!(out.verdict, XDP_PASS, "{what}: verdict");
    assert_eq!(out.output, frame, "{what}: untouched");
}

#[test]
fn a_tcp_header_in_the_ethernet_padding_is_no_header() {
    let Some(h) = harness() else { return };
    // An IP packet of 20 bytes (its header alone), then a SYN's TCP header
    // in what is only padding: nothing to schedule.
    expect_malformed(&h, "a SYN in the padding", &with_ip_len(syn(43000), 20));
    expect_malformed(&h, "half a TCP header in the IP packet", &with_ip_len(syn(43001), 30));
    expect_malformed(&h, "one byte short", &with_ip_len(syn(43002), 39));
    // The data offset claims options beyond the IP packet.
    let mut long_options = with_ip_len(syn(43003), 40);
    long_options.extend([0u8; 40]);
    long_options[14 + 20 + 12] = 0xf0;
    expect_malformed(&h, "TCP options past the IP length", &long_options);
    // Nothing was scheduled.
    assert_eq!(h.reasons()["conn_new"], 0);
}

#[test]
fn a_udp_header_in_the_ethernet_padding_is_no_header() {
    let Some(h) = harness() else { return };
    expect_malformed(&h, "a UDP header in the padding", &with_ip_len(udp(44000, b"query"), 20));
    expect_malformed(&h, "half a UDP header", &with_ip_len(udp(44001, b"query"), 24));
    let mut long = udp(44002, b"query");
    long[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&200u16.to_be_bytes());
    expect_malformed(&h, "UDP length past the IP length", &long);
    let mut short = udp(44003, b"query");
    short[14 + 20 + 4..14 + 20 + 6].copy_from_slice(&7u16.to_be_bytes());
    expect_malformed(&h, "UDP length below its header", &short);
    assert_eq!(h.reasons()["conn_new"], 0);
}

/// The padding a short frame gets on the wire (to Ethernet's 60 bytes)
/// changes nothing: the packet is balanced and forwarded whole.
#[test]
fn padded_minimum_frames_are_still_balanced() {
    let Some(h) = harness() else { return };
    for (what, mut frame) in [("a SYN", syn(45000)), ("a datagram", udp(45001, b""))] {
        assert!(frame.len() < 60);
        frame.resize(60, 0);
        let before = h.reasons();
        let out = h.run(&frame).unwrap();
        assert_eq!(out.verdict, XDP_TX, "{what}");
        assert_eq!(out.output, dr_rewrite(&frame, real_mac(RS1), DIRECTOR_MAC), "{what}");
        assert_eq!(delta(&before, &h.reasons()), [("conn_new", 1), ("tx_dr", 1)].into_iter().collect(), "{what}");
    }
}
