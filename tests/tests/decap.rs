//! The TUN real servers' decapsulation program (`lbd decap`) through
//! BPF_PROG_TEST_RUN, loaded and filled by the code `lbd decap` runs:
//! crafted IP-in-IP frames in; verdict, output bytes and counters out.
//!
//! Issue 11: only tunnels from the configured directors, carrying a packet
//! for one of this host's VIPs, are opened; anyone else's IP-in-IP passes
//! to the kernel as it came (without the `ipip` module the kernel drops
//! it), counted by reason. Issue 15: the same for IPv6-in-IPv6, with the
//! same counters; an outer IPv6 header with extension headers, and tunnels
//! mixing the families, pass untouched. Needs root.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6},
};

use aya::programs::{TestRun, TestRunOptions};
use lb_tests::{
    harness::XDP_PASS,
    is_root,
    packets::{ETH_P_IP, ETH_P_IPV6, PacketSpec, ethernet, fix_ipv4_checksum, tcp},
    packets6::{NEXTHDR_DEST, NEXTHDR_FRAGMENT, Packet6Spec},
};
use lb_userspace::decap::{Decap, Directors};

/// This real server's own address: where tunnels end.
const REAL: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 21);
const DIRECTOR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DIRECTOR2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Anyone else on the Internet.
const SPOOFER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 66);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const ROUTER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const REAL_MAC: [u8; 6] = [0x02, 0xee, 10, 0, 1, 21];
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

/// The same hosts' IPv6 addresses.
const REAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x21);
const DIRECTOR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const DIRECTOR6_2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const SPOOFER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0x66);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10);

fn set<A: Copy + Into<IpAddr>>(addresses: &[A]) -> BTreeSet<IpAddr> {
    addresses.iter().map(|&a| a.into()).collect()
}

/// The program as `lbd decap --from 10.0.0.1,2001:db8::1 --vip
/// 10.0.0.100,2001:db8::100` on a host with 10.0.1.21 and 2001:db8:1::21
/// fills it; `None` without root.
fn decap() -> Option<Decap> {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return None;
    }
    let mut d = Decap::load().expect("load the decap program");
    d.set_addresses(&set(&[IpAddr::V4(REAL), IpAddr::V6(REAL6)])).unwrap();
    d.set_directors(&Directors::Listed(set(&[IpAddr::V4(DIRECTOR), IpAddr::V6(DIRECTOR6)]))).unwrap();
    d.set_vips(&set(&[IpAddr::V4(VIP), IpAddr::V6(VIP6)])).unwrap();
    Some(d)
}

/// A client's SYN to `dst`, the IP packet alone.
fn inner(dst: Ipv4Addr) -> Vec<u8> {
    PacketSpec::tcp(SocketAddrV4::new(CLIENT, 40000), SocketAddrV4::new(dst, 80), tcp::SYN).payload(b"hello").ip_bytes()
}

/// `inner` wrapped as the director's TUN forwarding wraps it (outer header
/// `src` → `dst`, protocol 4), in an Ethernet frame from the router.
fn tunnel(src: Ipv4Addr, dst: Ipv4Addr, inner: &[u8], vlan: Option<u16>) -> Vec<u8> {
    let mut frame = ethernet(REAL_MAC, ROUTER_MAC, vlan, ETH_P_IP);
    let l3 = frame.len();
    frame.extend([0x45, 0]);
    frame.extend(((20 + inner.len()) as u16).to_be_bytes());
    frame.extend([0, 0, 0x40, 0, 64, IPPROTO_IPIP, 0, 0]);
    frame.extend(src.octets());
    frame.extend(dst.octets());
    fix_ipv4_checksum(&mut frame, l3);
    frame.extend(inner);
    frame
}

/// A client's SYN to `dst` over IPv6, the IP packet alone.
fn inner6(dst: Ipv6Addr) -> Vec<u8> {
    let (src, dst) = (SocketAddrV6::new(CLIENT6, 40000, 0, 0), SocketAddrV6::new(dst, 80, 0, 0));
    Packet6Spec::tcp(src, dst, tcp::SYN).payload(b"hello").ip_bytes()
}

/// `inner` after an outer IPv6 header `src` → `dst` with next header
/// `next` (41 for IPv6-in-IPv6, as IPVS and ip6tnl send it), in an
/// Ethernet frame from the router.
fn tunnel6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, inner: &[u8], vlan: Option<u16>) -> Vec<u8> {
    let mut frame = ethernet(REAL_MAC, ROUTER_MAC, vlan, ETH_P_IPV6);
    frame.extend([0x60, 0, 0, 0]);
    frame.extend((inner.len() as u16).to_be_bytes());
    frame.extend([next, 64]);
    frame.extend(src.octets());
    frame.extend(dst.octets());
    frame.extend(inner);
    frame
}

/// What the program makes of a frame: verdict and output.
fn run(d: &Decap, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let result = d.program().test_run(opts).expect("test run");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

fn counters(d: &Decap) -> BTreeMap<&'static str, u64> {
    d.counters().into_iter().collect()
}

/// Runs `frame`: it must pass, as `want` (the frame itself when nothing
/// is stripped), counted as `reason` alone.
fn check(d: &Decap, what: &str, frame: &[u8], want: &[u8], reason: &str) {
    let before = counters(d);
    let (verdict, out) = run(d, frame);
    assert_eq!(verdict, XDP_PASS, "{what}: verdict");
    assert_eq!(out, want, "{what}: output");
    let after = counters(d);
    let changed: BTreeMap<_, _> =
        after.iter().filter(|(k, v)| before[*k] != **v).map(|(k, v)| (*k, v - before[k])).collect();
    assert_eq!(changed, [(reason, 1)].into_iter().collect(), "{what}: counters");
}

/// The frame with the outer header taken out: what reaches the host's
/// stack when a tunnel is opened.
fn stripped(vlan: Option<u16>, inner: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(REAL_MAC, ROUTER_MAC, vlan, ETH_P_IP);
    frame.extend(inner);
    frame
}

/// The same for IPv6: Ethernet (and tag) and the inner packet, exactly.
fn stripped6(vlan: Option<u16>, inner: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(REAL_MAC, ROUTER_MAC, vlan, ETH_P_IPV6);
    frame.extend(inner);
    frame
}

#[test]
fn only_tunnels_from_the_directors_to_our_vips_are_opened() {
    let Some(d) = decap() else { return };
    for vlan in [None, Some(7)] {
        let to_vip = inner(VIP);
        let frame = tunnel(DIRECTOR, REAL, &to_vip, vlan);
        check(&d, "from the director, for the VIP", &frame, &stripped(vlan, &to_vip), "decapsulated");

        let frame = tunnel(SPOOFER, REAL, &to_vip, vlan);
        check(&d, "from anyone else", &frame, &frame, "foreign_source");

        // What a spoofer would wrap to reach the host's own services as if
        // from inside, or to have it forwarded on.
        for target in [REAL, Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(8, 8, 8, 8)] {
            let frame = tunnel(DIRECTOR, REAL, &inner(target), vlan);
            check(&d, &format!("from the director, for {target}"), &frame, &frame, "not_a_vip");
        }

        let frame = tunnel(DIRECTOR, Ipv4Addr::new(10, 0, 1, 22), &to_vip, vlan);
        check(&d, "to another host", &frame, &frame, "not_for_us");

        let frame = tunnel(DIRECTOR, REAL, &to_vip[..19], vlan);
        check(&d, "an inner header cut short", &frame, &frame, "truncated");

        let plain = stripped(vlan, &to_vip);
        check(&d, "no tunnel", &plain, &plain, "not_tunnel");
    }
}

/// The program as loaded, before `--from` is applied, opens nothing: before
/// issue 11 it opened any tunnel to the host's addresses.
#[test]
fn without_directors_nothing_is_opened() {
    if !is_root() {
        return;
    }
    let mut d = Decap::load().unwrap();
    d.set_addresses(&set(&[IpAddr::V4(REAL), IpAddr::V6(REAL6)])).unwrap();
    d.set_vips(&set(&[IpAddr::V4(VIP), IpAddr::V6(VIP6)])).unwrap();
    for src in [DIRECTOR, SPOOFER] {
        let frame = tunnel(src, REAL, &inner(VIP), None);
        let (verdict, out) = run(&d, &frame);
        assert_eq!((verdict, out), (XDP_PASS, frame), "from {src}");
    }
    for src in [DIRECTOR6, SPOOFER6] {
        let frame = tunnel6(src, REAL6, IPPROTO_IPV6, &inner6(VIP6), None);
        let (verdict, out) = run(&d, &frame);
        assert_eq!((verdict, out), (XDP_PASS, frame), "from {src}");
    }
}

#[test]
fn from_any_opens_tunnels_from_anyone_for_our_vips_only() {
    let Some(mut d) = decap() else { return };
    d.set_directors(&Directors::Any).unwrap();
    let to_vip = inner(VIP);
    let frame = tunnel(SPOOFER, REAL, &to_vip, None);
    check(&d, "from anyone, for the VIP", &frame, &stripped(None, &to_vip), "decapsulated");
    let frame = tunnel(SPOOFER, REAL, &inner(REAL), None);
    check(&d, "from anyone, for the host", &frame, &frame, "not_a_vip");
    // And back to a list.
    d.set_directors(&Directors::Listed(set(&[DIRECTOR2]))).unwrap();
    let frame = tunnel(SPOOFER, REAL, &to_vip, None);
    check(&d, "a list again", &frame, &frame, "foreign_source");
}

#[test]
fn the_lists_change_in_place() {
    let Some(mut d) = decap() else { return };
    let to_vip = inner(VIP);
    // A director replaced (SIGHUP with a new --from file).
    d.set_directors(&Directors::Listed(set(&[DIRECTOR2]))).unwrap();
    let frame = tunnel(DIRECTOR, REAL, &to_vip, None);
    check(&d, "the old director", &frame, &frame, "foreign_source");
    let frame = tunnel(DIRECTOR2, REAL, &to_vip, None);
    check(&d, "the new one", &frame, &stripped(None, &to_vip), "decapsulated");
    // The VIP left lo.
    d.set_vips(&set(&[Ipv4Addr::new(10, 0, 0, 101)])).unwrap();
    check(&d, "a VIP gone", &frame, &frame, "not_a_vip");
}

/// `lbd decap` does not start without `--from`: opening tunnels from anyone
/// must be asked for (`--from any`).
#[test]
fn lbd_decap_refuses_to_start_without_from() {
    let lbd = lb_tests::director::userspace_binary("lbd").expect("build lbd first");
    let out = std::process::Command::new(&lbd).args(["decap", "--interface", "lo"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("lbd decap needs --from"), "{stderr}");
    let out = std::process::Command::new(&lbd)
        .args(["decap", "--interface", "lo", "--from", "10.0.0.0/24"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("give the directors' addresses, not a network"), "{stderr}");
}

#[test]
fn only_ipv6_tunnels_from_the_directors_to_our_vips_are_opened() {
    let Some(d) = decap() else { return };
    for vlan in [None, Some(7)] {
        let to_vip = inner6(VIP6);
        let frame = tunnel6(DIRECTOR6, REAL6, IPPROTO_IPV6, &to_vip, vlan);
        check(&d, "from the director, for the VIP", &frame, &stripped6(vlan, &to_vip), "decapsulated");

        let frame = tunnel6(SPOOFER6, REAL6, IPPROTO_IPV6, &to_vip, vlan);
        check(&d, "from anyone else", &frame, &frame, "foreign_source");
        // The IPv4 director's address says nothing of its IPv6 one.
        let mapped = DIRECTOR.to_ipv6_mapped();
        let frame = tunnel6(mapped, REAL6, IPPROTO_IPV6, &to_vip, vlan);
        check(&d, "from the IPv4 director's mapped address", &frame, &frame, "foreign_source");

        let link_local = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        for target in [REAL6, Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1), link_local, Ipv6Addr::LOCALHOST] {
            let frame = tunnel6(DIRECTOR6, REAL6, IPPROTO_IPV6, &inner6(target), vlan);
            check(&d, &format!("from the director, for {target}"), &frame, &frame, "not_a_vip");
        }

        for to in [Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x22), VIP6] {
            let frame = tunnel6(DIRECTOR6, to, IPPROTO_IPV6, &to_vip, vlan);
            check(&d, &format!("to {to}"), &frame, &frame, "not_for_us");
        }

        let plain = stripped6(vlan, &to_vip);
        check(&d, "no tunnel", &plain, &plain, "not_tunnel");
    }
}

/// Every read is bounded by the frame's end, and what the outer header
/// says it carries must be there.
#[test]
fn ipv6_tunnels_cut_short_are_left_alone() {
    let Some(d) = decap() else { return };
    let to_vip = inner6(VIP6);
    for vlan in [None, Some(7)] {
        let l3 = if vlan.is_some() { 18 } else { 14 };
        let whole = tunnel6(DIRECTOR6, REAL6, IPPROTO_IPV6, &to_vip, vlan);
        // The outer header itself cut short: no telling it is a tunnel.
        for len in [l3 + 10, l3 + 39] {
            let frame = &whole[..len];
            check(&d, &format!("outer header cut at {}", len - l3), frame, frame, "not_tunnel");
        }
        // The inner header cut short, the outer one saying so.
        let frame = tunnel6(DIRECTOR6, REAL6, IPPROTO_IPV6, &to_vip[..39], vlan);
        check(&d, "an inner header cut short", &frame, &frame, "truncated");
        let frame = tunnel6(DIRECTOR6, REAL6, IPPROTO_IPV6, &[], vlan);
        check(&d, "nothing inside", &frame, &frame, "truncated");
        // The frame shorter than the outer header's payload length.
        for cut in [1, 20, to_vip.len() - 40] {
            let frame = &whole[..whole.len() - cut];
            check(&d, &format!("{cut} bytes missing"), frame, frame, "truncated");
        }
        // A payload length too short for the inner header (0 would be a
        // jumbogram's, which needs a hop-by-hop header).
        for claimed in [0u16, 39] {
            let mut frame = whole.clone();
            frame[l3 + 4..l3 + 6].copy_from_slice(&claimed.to_be_bytes());
            check(&d, &format!("a payload length of {claimed}"), &frame, &frame, "truncated");
        }
    }
}

/// No extension header of the outer header is skipped: ip6tnl's tunnel
/// encapsulation limit (a destination options header before 41), a
/// fragment header, pass as they came.
#[test]
fn outer_ipv6_extension_headers_are_not_skipped() {
    let Some(d) = decap() else { return };
    let to_vip = inner6(VIP6);
    // Next header 41, length 0, the encapsulation limit option (4), PadN.
    let mut encap_limit = vec![IPPROTO_IPV6, 0, 4, 1, 4, 1, 0, 0];
    encap_limit.extend(&to_vip);
    let frame = tunnel6(DIRECTOR6, REAL6, NEXTHDR_DEST, &encap_limit, None);
    check(&d, "a destination options header", &frame, &frame, "not_tunnel");
    let mut fragment = vec![IPPROTO_IPV6, 0, 0, 0, 0x12, 0x34, 0x56, 0x78];
    fragment.extend(&to_vip);
    let frame = tunnel6(DIRECTOR6, REAL6, NEXTHDR_FRAGMENT, &fragment, None);
    check(&d, "a fragment header", &frame, &frame, "not_tunnel");
}

/// IPv4 in IPv6 (next header 4) and IPv6 in IPv4 (protocol 41), which
/// IPVS sends for a real server of the other family and lbd never does,
/// are not opened; nor is a tunnel whose inner packet is of the other
/// family than its next header says.
#[test]
fn tunnels_mixing_the_families_are_left_alone() {
    let Some(d) = decap() else { return };
    let frame = tunnel6(DIRECTOR6, REAL6, IPPROTO_IPIP, &inner(VIP), None);
    check(&d, "IPv4 in IPv6", &frame, &frame, "not_tunnel");
    let frame = tunnel6(DIRECTOR6, REAL6, IPPROTO_IPV6, &inner(VIP), None);
    check(&d, "IPv4 in IPv6 said to be IPv6", &frame, &frame, "not_tunnel");
    let mut frame = tunnel(DIRECTOR, REAL, &inner6(VIP6), None);
    frame[14 + 9] = IPPROTO_IPV6;
    fix_ipv4_checksum(&mut frame, 14);
    check(&d, "IPv6 in IPv4", &frame, &frame, "not_tunnel");
    let frame = tunnel(DIRECTOR, REAL, &inner6(VIP6), None);
    check(&d, "IPv6 in IPv4 said to be IPv4", &frame, &frame, "not_tunnel");
}

#[test]
fn ipv6_from_any_and_lists_changing_in_place() {
    let Some(mut d) = decap() else { return };
    let to_vip = inner6(VIP6);
    d.set_directors(&Directors::Any).unwrap();
    let frame = tunnel6(SPOOFER6, REAL6, IPPROTO_IPV6, &to_vip, None);
    check(&d, "from anyone, for the VIP", &frame, &stripped6(None, &to_vip), "decapsulated");
    let frame = tunnel6(SPOOFER6, REAL6, IPPROTO_IPV6, &inner6(REAL6), None);
    check(&d, "from anyone, for the host", &frame, &frame, "not_a_vip");
    // A list again, the IPv6 director replaced; the IPv4 one stays.
    d.set_directors(&Directors::Listed(set(&[IpAddr::V4(DIRECTOR), IpAddr::V6(DIRECTOR6_2)]))).unwrap();
    let frame = tunnel6(DIRECTOR6, REAL6, IPPROTO_IPV6, &to_vip, None);
    check(&d, "the old director", &frame, &frame, "foreign_source");
    let frame = tunnel6(DIRECTOR6_2, REAL6, IPPROTO_IPV6, &to_vip, None);
    check(&d, "the new one", &frame, &stripped6(None, &to_vip), "decapsulated");
    let to_vip4 = inner(VIP);
    let frame4 = tunnel(DIRECTOR, REAL, &to_vip4, None);
    check(&d, "the IPv4 director", &frame4, &stripped(None, &to_vip4), "decapsulated");
    // The IPv6 VIP left lo, the IPv4 one stays; then the host's IPv6
    // address goes.
    d.set_vips(&set(&[VIP])).unwrap();
    check(&d, "an IPv6 VIP gone", &frame, &frame, "not_a_vip");
    check(&d, "the IPv4 VIP still there", &frame4, &stripped(None, &to_vip4), "decapsulated");
    d.set_vips(&set(&[IpAddr::V4(VIP), IpAddr::V6(VIP6)])).unwrap();
    d.set_addresses(&set(&[REAL])).unwrap();
    check(&d, "the host's IPv6 address gone", &frame, &frame, "not_for_us");
}
