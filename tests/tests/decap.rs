//! The TUN real servers' decapsulation program (`lbd decap`) through
//! BPF_PROG_TEST_RUN, loaded and filled by the code `lbd decap` runs:
//! crafted IP-in-IP frames in; verdict, output bytes and counters out.
//!
//! Issue 11: only tunnels from the configured directors, carrying a packet
//! for one of this host's VIPs, are opened; anyone else's IP-in-IP passes
//! to the kernel as it came (without the `ipip` module the kernel drops
//! it), counted by reason. Needs root.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use aya::programs::{TestRun, TestRunOptions};
use lb_tests::{
    harness::XDP_PASS,
    is_root,
    packets::{ETH_P_IP, PacketSpec, ethernet, fix_ipv4_checksum, tcp},
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

fn set(addresses: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
    addresses.iter().copied().collect()
}

/// The program as `lbd decap --from 10.0.0.1 --vip 10.0.0.100` on a host
/// with 10.0.1.21 fills it; `None` without root.
fn decap() -> Option<Decap> {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return None;
    }
    let mut d = Decap::load().expect("load the decap program");
    d.set_addresses(&set(&[REAL])).unwrap();
    d.set_directors(&Directors::Listed(set(&[DIRECTOR]))).unwrap();
    d.set_vips(&set(&[VIP])).unwrap();
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
    d.set_addresses(&set(&[REAL])).unwrap();
    for src in [DIRECTOR, SPOOFER] {
        let frame = tunnel(src, REAL, &inner(VIP), None);
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
