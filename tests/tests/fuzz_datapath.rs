//! The datapath fuzzer: mutated frames through the real XDP program with
//! BPF_PROG_TEST_RUN, each run checked against invariants that hold for
//! any input, however hostile:
//!
//! * the program never aborts, and exactly one verdict counter moves, of
//!   the verdict's kind (`pass_*` for XDP_PASS, `drop_*` for XDP_DROP,
//!   `tx_*` for XDP_TX);
//! * a passed frame leaves unchanged; a frame not addressed to a service,
//!   or malformed (by the reference parser below, which reads a frame as the
//!   kernel's IPv4 stack would), is passed, and moves no counter but the
//!   reason counters (service and real-server counters, connection counts,
//!   `conn_new`);
//! * a frame sent out goes from the director's MAC to a real server's (DR:
//!   the IP packet untouched), to the next hop toward a TUN real server (a
//!   valid outer header around the untouched packet), or back to the
//!   sender's own unicast MAC as an ICMP destination-unreachable from the
//!   VIP, only for a TCP or UDP packet from a single-host source.
//!
//! The corpus is the fixture frames built here with `lb_tests::packets`
//! (the kinds the datapath fixtures use) and the files in
//! `tests/fuzz-corpus/datapath/` (hex, `#` comments). The run is
//! deterministic for a seed, printed at the start.
//!
//! By default it runs 20,000 mutations (divided by `LB_TEST_TIME_SCALE`
//! under emulation), a few seconds. Longer runs, e.g. from a `cargo xtask
//! fuzz`:
//!
//! * `LB_FUZZ_DATAPATH_ITERATIONS=N`: run N mutations;
//! * `LB_FUZZ_DATAPATH_SECONDS=S`: run for S seconds instead (the number of
//!   mutations then depends on the machine; the seed and the count printed
//!   at the end reproduce the run);
//! * `LB_FUZZ_DATAPATH_SEED=N`: another seed (decimal or 0x hex).
//!
//! A failing input is printed as hex and written to
//! `target/tmp/fuzz-datapath-failure.hex`, ready to be added to the corpus.
//! Needs root.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use lb_common::{Counters, RealConns, conn_state};
use lb_tests::{
    harness::{Harness, XDP_DROP, XDP_PASS, XDP_TX, real_mac, service},
    is_root,
    packets::{self, CLIENT_MAC, DIRECTOR_MAC, PacketSpec, frag_needed, icmp, icmp_frame, tcp},
};
use lb_userspace::model::{Forwarding, Protocol, Scheduler};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const VIP_ALL_PORTS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
const DEAD_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 102);
const TUN_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 103);
const RS1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 21);
const RS2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 22);
const TUN_RS: Ipv4Addr = Ipv4Addr::new(172, 16, 5, 7);
const TUN_SOURCE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

const DEFAULT_ITERATIONS: u64 = 20_000;
const DEFAULT_SEED: u64 = 0x1b_0011_f022;

/// The services: (protocol number, VIP, port; 0 = every port).
const SERVICES: [(u8, Ipv4Addr, u16); 5] =
    [(6, VIP, 80), (17, VIP, 53), (6, VIP_ALL_PORTS, 0), (6, DEAD_VIP, 80), (6, TUN_VIP, 80)];

fn harness() -> Harness {
    let mut h = Harness::new().expect("load the XDP program");
    let mut tun = service(Protocol::Tcp, TUN_VIP, 80, Scheduler::Wlc, &[(TUN_RS, 1)]);
    tun.reals[0].forwarding = Forwarding::Tun;
    tun.reals[0].mac = Some(NEXT_HOP_MAC);
    tun.reals[0].mtu = 1400;
    let mut all_ports = service(Protocol::Tcp, VIP_ALL_PORTS, 0, Scheduler::Sh, &[(RS1, 1), (RS2, 2)]);
    all_ports.options.persistence_timeout = Some(60);
    h.apply(&[
        service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]),
        service(Protocol::Udp, VIP, 53, Scheduler::Wrr, &[(RS1, 1), (RS2, 3)]),
        all_ports,
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
    h
}

// ---- the corpus ---------------------------------------------------------------

/// The fixture frames: what the datapath tests feed the program.
fn fixture_frames() -> Vec<Vec<u8>> {
    let client = |port| SocketAddrV4::new(CLIENT, port);
    let vip = |port| SocketAddrV4::new(VIP, port);
    let mut frames = vec![
        PacketSpec::tcp(client(40000), vip(80), tcp::SYN).build(),
        PacketSpec::tcp(client(40000), vip(80), tcp::ACK).build(),
        PacketSpec::tcp(client(40000), vip(80), tcp::ACK | tcp::PSH).payload(b"GET / HTTP/1.1\r\n\r\n").build(),
        PacketSpec::tcp(client(40000), vip(80), tcp::FIN | tcp::ACK).build(),
        PacketSpec::tcp(client(40001), vip(80), tcp::RST).build(),
        PacketSpec::udp(client(5353), vip(53)).payload(b"\x12\x34query").build(),
        PacketSpec::tcp(client(41000), vip(80), tcp::SYN).vlan(100).build(),
        PacketSpec::tcp(client(41001), vip(80), tcp::SYN).ip_options(&[1, 1, 1, 1, 1, 1, 1, 0]).build(),
        PacketSpec::tcp(client(41002), vip(80), tcp::SYN).ip_options(&[1; 40]).build(),
        PacketSpec::tcp(client(42003), vip(80), tcp::SYN).fragment(true, 0).build(),
        PacketSpec::udp(client(42004), vip(53)).fragment(false, 185).build(),
        PacketSpec::tcp(client(42005), SocketAddrV4::new(VIP_ALL_PORTS, 4433), tcp::SYN).build(),
        PacketSpec::tcp(client(42006), SocketAddrV4::new(DEAD_VIP, 80), tcp::SYN).build(),
        PacketSpec::tcp(client(42007), SocketAddrV4::new(TUN_VIP, 80), tcp::SYN).payload(b"tunnel me").build(),
        PacketSpec::tcp(client(42008), SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 22), tcp::SYN).build(),
        PacketSpec::udp(client(42009), vip(80)).build(),
    ];
    // Too big for the tunnel, DF set: "fragmentation needed".
    let mut too_big =
        PacketSpec::tcp(client(42010), SocketAddrV4::new(TUN_VIP, 80), tcp::SYN).payload(&[0; 1400]).build();
    too_big[14 + 6] |= 0x40;
    packets::fix_ipv4_checksum(&mut too_big, 14);
    frames.push(too_big);
    // ICMP: errors about the flows above (as their real servers answer),
    // and an echo request.
    let reply = PacketSpec::tcp(vip(80), client(40000), tcp::ACK).payload(&[b'x'; 1400]).ip_bytes();
    frames.push(frag_needed(ROUTER, VIP, 1280, &reply));
    let tun_reply = PacketSpec::tcp(SocketAddrV4::new(TUN_VIP, 80), client(42007), tcp::ACK).ip_bytes();
    frames.push(icmp_frame(ROUTER, TUN_VIP, icmp::TIME_EXCEEDED, 0, [0; 4], &tun_reply[..28]));
    let dns_reply = PacketSpec::udp(vip(53), client(5353)).payload(b"answer").ip_bytes();
    frames.push(icmp_frame(ROUTER, VIP, icmp::DEST_UNREACH, icmp::PORT_UNREACH, [0; 4], &dns_reply));
    frames.push(icmp_frame(CLIENT, VIP, icmp::ECHO_REQUEST, 0, [0, 1, 0, 1], b"ping"));
    // Not IPv4.
    let mut ipv6 = packets::ethernet(DIRECTOR_MAC, CLIENT_MAC, None, packets::ETH_P_IPV6);
    ipv6.extend([0x60, 0, 0, 0, 0, 0, 6, 64]);
    ipv6.extend([0u8; 32]);
    frames.push(ipv6);
    let mut arp = packets::ethernet([0xff; 6], CLIENT_MAC, None, packets::ETH_P_ARP);
    arp.extend([0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend([0u8; 20]);
    frames.push(arp);
    frames
}

/// The checked-in corpus files: hex bytes, whitespace anywhere, `#` to the
/// end of a line is a comment.
fn corpus_files() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus/datapath");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "hex"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let digits: String =
                text.lines().map(|l| l.split('#').next().unwrap()).flat_map(|l| l.split_whitespace()).collect();
            assert!(digits.len().is_multiple_of(2), "{}: odd number of hex digits", path.display());
            let bytes = (0..digits.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&digits[i..i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

// ---- mutations ----------------------------------------------------------------

/// xorshift64*: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}

/// Values that sit on the edges of what the parser checks.
const INTERESTING_BYTES: [u8; 16] = [0, 1, 4, 5, 6, 0x0f, 0x11, 0x40, 0x45, 0x46, 0x4f, 0x7f, 0x80, 0xc0, 0xfe, 0xff];
const INTERESTING_WORDS: [u16; 18] =
    [0, 1, 7, 8, 19, 20, 21, 24, 27, 28, 40, 60, 0x0800, 0x8100, 0x88a8, 0x3fff, 0x8000, 0xffff];
/// Addresses the program must treat with care: its VIPs, sources that are
/// no single host, the director itself.
const INTERESTING_ADDRS: [Ipv4Addr; 10] = [
    VIP,
    VIP_ALL_PORTS,
    DEAD_VIP,
    TUN_VIP,
    Ipv4Addr::new(0, 0, 0, 0),
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(224, 0, 0, 1),
    Ipv4Addr::new(255, 255, 255, 255),
    TUN_SOURCE,
    CLIENT,
];

/// An offset into a frame of `len` bytes, mostly within the headers.
fn offset(rng: &mut Rng, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if rng.chance(4) { rng.below(len) } else { rng.below(len.min(96)) }
}

/// Where the IPv4 header is, if the frame has room for one.
fn l3_of(frame: &[u8]) -> Option<usize> {
    if frame.len() < 14 {
        return None;
    }
    let l3 = if matches!([frame[12], frame[13]], [0x81, 0x00] | [0x88, 0xa8]) { 18 } else { 14 };
    (frame.len() >= l3 + 20).then_some(l3)
}

fn mutate_once(rng: &mut Rng, frame: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let len = frame.len();
    match rng.below(14) {
        0 if len > 0 => {
            let at = offset(rng, len);
            frame[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = offset(rng, len);
            frame[at] = if rng.chance(2) { INTERESTING_BYTES[rng.below(16)] } else { rng.byte() };
        }
        2 if len > 1 => {
            let at = offset(rng, len - 1);
            let word = if rng.chance(3) { rng.next() as u16 } else { INTERESTING_WORDS[rng.below(18)] };
            frame[at..at + 2].copy_from_slice(&word.to_be_bytes());
        }
        3 => frame.truncate(rng.below(len + 1)),
        4 => {
            let n = 1 + rng.below(64);
            let zeros = rng.chance(2);
            frame.extend((0..n).map(|_| if zeros { 0 } else { rng.byte() }));
        }
        5 => {
            // Splice: this frame's head, another's tail.
            let other = &corpus[rng.below(corpus.len())];
            let cut = rng.below(len + 1).min(other.len());
            frame.truncate(cut);
            frame.extend(&other[cut..]);
        }
        6 if len >= 14 => {
            // A VLAN tag more, or one less.
            if rng.chance(2) || len < 18 {
                let tpid: u16 = if rng.chance(2) { 0x8100 } else { 0x88a8 };
                let tag = [(tpid >> 8) as u8, tpid as u8, rng.byte() & 0x0f, rng.byte()];
                frame.splice(12..12, tag);
            } else {
                frame.drain(12..16);
            }
        }
        7 => ip_field(rng, frame),
        8 => l4_field(rng, frame),
        9 if len > 0 => {
            // A run of bytes set alike.
            let at = offset(rng, len);
            let n = (1 + rng.below(8)).min(len - at);
            let value = rng.byte();
            frame[at..at + n].fill(value);
        }
        10 => {
            // An ICMP error quoting this frame's IP packet, from a router to
            // the packet's destination or source.
            if let Some(l3) = l3_of(frame) {
                let quoted = frame[l3..].to_vec();
                let src = Ipv4Addr::new(quoted[12], quoted[13], quoted[14], quoted[15]);
                let dst = Ipv4Addr::new(quoted[16], quoted[17], quoted[18], quoted[19]);
                let to = if rng.chance(2) { src } else { dst };
                let kind = [3, 3, 3, 11, 12, 5, 0, 8, rng.byte()][rng.below(9)];
                let code = if rng.chance(3) { rng.byte() & 0x1f } else { [0, 1, 3, 4][rng.below(4)] };
                let keep = (20 + rng.below(quoted.len().saturating_sub(19).max(1))).min(quoted.len());
                *frame = icmp_frame(ROUTER, to, kind, code, [0, 0, 5, 0], &quoted[..keep]);
            }
        }
        11 => {
            // Ethernet addresses: group, broadcast, a real server's.
            if len >= 12 {
                let macs: [[u8; 6]; 5] = [[0xff; 6], [0x01, 0, 0x5e, 0, 0, 1], real_mac(RS1), CLIENT_MAC, DIRECTOR_MAC];
                let at = if rng.chance(2) { 0 } else { 6 };
                frame[at..at + 6].copy_from_slice(&macs[rng.below(5)]);
            }
        }
        12 => {
            if let Some(l3) = l3_of(frame) {
                let ihl = ((frame[l3] & 0x0f) as usize) * 4;
                if ihl >= 20 && l3 + ihl <= frame.len() {
                    packets::fix_ipv4_checksum(frame, l3);
                }
            }
        }
        _ => {
            // Addresses: a VIP as destination, an odd source.
            if let Some(l3) = l3_of(frame) {
                let at = l3 + if rng.chance(2) { 16 } else { 12 };
                frame[at..at + 4].copy_from_slice(&INTERESTING_ADDRS[rng.below(10)].octets());
            }
        }
    }
}

/// A field of the IPv4 header set to an edge value.
fn ip_field(rng: &mut Rng, frame: &mut [u8]) {
    let Some(l3) = l3_of(frame) else { return };
    let ip_len = (frame.len() - l3) as i64;
    match rng.below(6) {
        0 => frame[l3] = 0x40 | (rng.byte() & 0x0f),
        1 => {
            let len = (ip_len + rng.below(41) as i64 - 20).clamp(0, 0xffff) as u16;
            frame[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
        }
        2 => frame[l3 + 9] = [1, 6, 17, 4, 41, 0, 255, rng.byte()][rng.below(8)],
        3 => {
            let frag: u16 = [0x2000, 0x0001, 0x4000, 0x3fff, 0x2000 | 185, rng.next() as u16][rng.below(6)];
            frame[l3 + 6..l3 + 8].copy_from_slice(&frag.to_be_bytes());
        }
        4 => frame[l3] = 0x45 + rng.below(11) as u8,
        _ => frame[l3] = rng.byte(),
    }
}

/// A field of the TCP, UDP or ICMP header (or of a quoted header) set to an
/// edge value.
fn l4_field(rng: &mut Rng, frame: &mut [u8]) {
    let Some(l3) = l3_of(frame) else { return };
    let l4 = l3 + ((frame[l3] & 0x0f) as usize) * 4;
    let fields: [(usize, u16); 6] = [
        (12, 0xf000 & ((rng.byte() as u16) << 8)), // TCP data offset
        (12, 0x5002),                              // TCP data offset 5, SYN
        (4, [0, 7, 8, 9, 0xffff][rng.below(5)]),   // UDP length
        (0, rng.next() as u16),                    // ICMP type and code, ports
        (8, 0x4500 | rng.byte() as u16),           // a quoted header's version and IHL
        (17, rng.next() as u16),                   // a quoted header's protocol
    ];
    let (at, value) = fields[rng.below(fields.len())];
    if l4 + at + 2 <= frame.len() {
        frame[l4 + at..l4 + at + 2].copy_from_slice(&value.to_be_bytes());
    }
}

// ---- the reference parser -----------------------------------------------------

fn be16(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn is_service(protocol: u8, dst: Ipv4Addr, port: usize) -> bool {
    SERVICES.iter().any(|&(p, vip, sport)| p == protocol && vip == dst && (sport == 0 || sport as usize == port))
}

fn is_vip(dst: Ipv4Addr) -> bool {
    SERVICES.iter().any(|&(_, vip, _)| vip == dst)
}

/// Why the frame must be passed untouched, read as the kernel's IPv4 stack
/// reads a frame (the IP total length bounds everything after the IP
/// header); `None` if it may be for a service.
fn must_pass(frame: &[u8]) -> Option<&'static str> {
    if frame.len() < 14 {
        return Some("no Ethernet header");
    }
    let (l3, ethertype) = match be16(frame, 12) {
        0x8100 | 0x88a8 if frame.len() >= 18 => (18, be16(frame, 16)),
        0x8100 | 0x88a8 => return Some("a VLAN tag and nothing after it"),
        t => (14, t),
    };
    if ethertype != 0x0800 {
        return Some("not IPv4");
    }
    if frame.len() < l3 + 20 {
        return Some("truncated IP header");
    }
    let ip = &frame[l3..];
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let total = be16(ip, 2);
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || total > ip.len() {
        return Some("malformed IP header");
    }
    if be16(ip, 6) & 0x3fff != 0 {
        return Some("a fragment");
    }
    let dst = addr(ip, 16);
    let l4 = &ip[ihl..total];
    match ip[9] {
        6 => {
            if l4.len() < 20 || l4[12] >> 4 < 5 || ((l4[12] >> 4) as usize) * 4 > l4.len() {
                return Some("malformed TCP header");
            }
            if !is_service(6, dst, be16(l4, 2)) {
                return Some("no service");
            }
        }
        17 => {
            if l4.len() < 8 || be16(l4, 4) < 8 || be16(l4, 4) > l4.len() {
                return Some("malformed UDP header");
            }
            if !is_service(17, dst, be16(l4, 2)) {
                return Some("no service");
            }
        }
        1 => {
            if l4.len() < 8 || !matches!(l4[0], 3 | 11 | 12) {
                return Some("ICMP, not an error");
            }
            if !is_vip(dst) {
                return Some("an ICMP error not for a VIP");
            }
            let q = &l4[8..];
            if q.len() < 20 {
                return Some("nothing quoted");
            }
            let qihl = ((q[0] & 0x0f) as usize) * 4;
            if q[0] >> 4 != 4 || qihl < 20 || q.len() < qihl + 8 || !matches!(q[9], 6 | 17) || addr(q, 12) != dst {
                return Some("no VIP flow quoted");
            }
            if be16(q, 6) & 0x1fff != 0 {
                return Some("a quoted later fragment");
            }
        }
        _ => return Some("another protocol"),
    }
    None
}

/// Whether an ICMP error may go to this source (RFC 1812 4.3.2.7).
fn single_host(source: Ipv4Addr) -> bool {
    let first = source.octets()[0];
    !(first == 0 || first == 127 || first >= 224)
}

// ---- the invariants -----------------------------------------------------------

/// Everything but the reason counters: per service and real server, and
/// the connection counts.
#[derive(PartialEq, Debug)]
struct Snapshot {
    services: Vec<Counters>,
    reals: Vec<Counters>,
    conns: Vec<RealConns>,
}

fn snapshot(h: &Harness, service_ids: &[u32], real_ids: &[u32]) -> Snapshot {
    Snapshot {
        services: service_ids.iter().map(|&i| h.datapath.service_counters(i)).collect(),
        reals: real_ids.iter().map(|&i| h.datapath.real_counters(i)).collect(),
        conns: real_ids.iter().map(|&i| h.datapath.real_conns(i)).collect(),
    }
}

/// What is wrong with this run, if anything.
fn check_run(
    input: &[u8],
    verdict: u32,
    output: &[u8],
    moved: &BTreeMap<&'static str, u64>,
    others_moved: bool,
) -> Result<(), String> {
    let verdicts: Vec<(&str, u64)> =
        moved.iter().filter(|(k, _)| !k.starts_with("conn_")).map(|(k, v)| (*k, *v)).collect();
    let kind = match verdict {
        XDP_PASS => "pass_",
        XDP_DROP => "drop_",
        XDP_TX => "tx_",
        other => return Err(format!("verdict {other}")),
    };
    if verdicts.len() != 1 || verdicts[0].1 != 1 || !verdicts[0].0.starts_with(kind) {
        return Err(format!("verdict {verdict} with verdict counters {verdicts:?}"));
    }
    if moved.iter().any(|(k, v)| k.starts_with("conn_") && *v > 1) {
        return Err(format!("counters {moved:?}"));
    }
    if verdict == XDP_PASS && output != input {
        return Err("passed, but changed".into());
    }
    if let Some(why) = must_pass(input) {
        if verdict != XDP_PASS {
            return Err(format!("{why}: must pass, got verdict {verdict} ({verdicts:?})"));
        }
        if others_moved || moved.contains_key("conn_new") {
            return Err(format!("{why}: counters other than the reasons moved ({moved:?})"));
        }
    }
    if verdict == XDP_TX {
        check_sent(input, output)?;
    }
    Ok(())
}

/// A frame the program sent out.
fn check_sent(input: &[u8], output: &[u8]) -> Result<(), String> {
    if output.len() < 14 + 20 || output[6..12] != DIRECTOR_MAC {
        return Err("sent, but not from the director's MAC".into());
    }
    let to: [u8; 6] = output[0..6].try_into().unwrap();
    if to == input[6..12] && output[12..] != input[12..] {
        // An ICMP error back to the sender.
        let l3 = if matches!(be16(input, 12), 0x8100 | 0x88a8) { 18 } else { 14 };
        let (src, dst) = (addr(input, l3 + 12), addr(input, l3 + 16));
        if to[0] & 1 != 0 || input[0] & 1 != 0 {
            return Err("an ICMP error for a link-layer group frame".into());
        }
        if !single_host(src) || src == dst {
            return Err(format!("an ICMP error to {src}"));
        }
        if !matches!(input[l3 + 9], 6 | 17) {
            return Err("an ICMP error about a packet that is not TCP or UDP".into());
        }
        let ip = &output[l3..];
        if ip[9] != 1 || ip[20] != 3 || addr(ip, 12) != dst || addr(ip, 16) != src {
            return Err("sent back, but not as destination unreachable from the VIP".into());
        }
        return Ok(());
    }
    if to == real_mac(RS1) || to == real_mac(RS2) {
        return if output[12..] == input[12..] { Ok(()) } else { Err("direct-routed, but the packet changed".into()) };
    }
    if to == NEXT_HOP_MAC {
        let l3 = if matches!(be16(output, 12), 0x8100 | 0x88a8) { 18 } else { 14 };
        let outer = &output[l3..l3 + 20];
        let ok = outer[0] == 0x45
            && outer[9] == 4
            && addr(outer, 12) == TUN_SOURCE
            && addr(outer, 16) == TUN_RS
            && packets::inet_checksum(outer) == 0
            && be16(outer, 2) == be16(input, l3 + 2) + 20
            && output[l3 + 20..] == input[l3..];
        return if ok { Ok(()) } else { Err("tunnelled, but not as IP-in-IP of the untouched packet".into()) };
    }
    Err(format!("sent to {to:02x?}, which is neither a real server's MAC nor the sender's"))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, b) in bytes.iter().enumerate() {
        let _ = write!(s, "{b:02x}{}", if i % 16 == 15 { "\n" } else { " " });
    }
    s
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let parsed = match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={v}: {e}")))
}

#[test]
fn mutated_frames_keep_the_invariants() {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let seed = env_number("LB_FUZZ_DATAPATH_SEED").unwrap_or(DEFAULT_SEED);
    let seconds = env_number("LB_FUZZ_DATAPATH_SECONDS");
    let iterations = env_number("LB_FUZZ_DATAPATH_ITERATIONS").unwrap_or(if seconds.is_some() {
        u64::MAX
    } else {
        DEFAULT_ITERATIONS / lb_tests::time_scale() as u64
    });
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let say = |line: String| {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    };
    say(match seconds {
        Some(s) => format!("fuzz_datapath: seed {seed:#x}, for {s} s"),
        None => format!("fuzz_datapath: seed {seed:#x}, {iterations} mutations"),
    });

    let h = harness();
    let service_ids: Vec<u32> = SERVICES
        .iter()
        .filter_map(|&(p, vip, port)| {
            let protocol = if p == 6 { Protocol::Tcp } else { Protocol::Udp };
            h.tables.service_id(&lb_userspace::tables::service_key(protocol, vip, port))
        })
        .collect();
    assert_eq!(service_ids.len(), SERVICES.len());
    let real_ids: Vec<u32> = h.tables.real_ids().collect();

    let mut corpus = fixture_frames();
    let files = corpus_files();
    assert!(!files.is_empty(), "no corpus files");
    corpus.extend(files.iter().map(|(_, bytes)| bytes.clone()));

    let mut verdicts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut run_one = |input: &[u8], what: &str| {
        let before = h.reasons();
        let others_before = snapshot(&h, &service_ids, &real_ids);
        let out = h.run(input).unwrap_or_else(|e| panic!("{what}: test run failed: {e:#}"));
        let after = h.reasons();
        let others_moved = snapshot(&h, &service_ids, &real_ids) != others_before;
        let moved = lb_tests::harness::delta(&before, &after);
        if let Err(broken) = check_run(input, out.verdict, &out.output, &moved, others_moved) {
            let dump = hex(input);
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-datapath-failure.hex");
            let _ = std::fs::write(&path, format!("# {what}: {broken}\n{dump}\n"));
            panic!(
                "{what}: {broken}\nseed {seed:#x}; input ({} bytes, also in {}):\n{dump}\noutput ({} bytes):\n{}\ncounters moved: {moved:?}",
                input.len(),
                path.display(),
                out.output.len(),
                hex(&out.output)
            );
        }
        for (k, _) in moved.iter().filter(|(k, _)| !k.starts_with("conn_")) {
            *verdicts.entry(k).or_default() += 1;
        }
    };

    // The corpus as it is (this also opens the connections the ICMP errors
    // in it quote), then mutants of it.
    for (i, frame) in corpus.iter().enumerate() {
        run_one(frame, &format!("corpus frame {i}"));
    }
    let mut rng = Rng::new(seed);
    let mut done = 0u64;
    let started = Instant::now();
    while done < iterations && deadline.is_none_or(|d| Instant::now() < d) {
        let mut frame = corpus[rng.below(corpus.len())].clone();
        for _ in 0..1 + rng.below(4) {
            mutate_once(&mut rng, &mut frame, &corpus);
        }
        // What BPF_PROG_TEST_RUN takes: an Ethernet header at least, at
        // most a page less the XDP head- and tailroom.
        frame.truncate(3000);
        if frame.len() < 14 {
            frame.resize(14, 0);
        }
        run_one(&frame, &format!("mutation {done}"));
        done += 1;
    }
    say(format!(
        "fuzz_datapath: seed {seed:#x}: {} corpus frames and {done} mutations in {:.1?}, every invariant held; verdicts: {verdicts:?}",
        corpus.len(),
        started.elapsed()
    ));
}
