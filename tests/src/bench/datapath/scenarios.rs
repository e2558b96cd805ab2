//! The benchmark's scenarios: which program each runs (the trivial one, or
//! the datapath loaded as lbd loads it with its services), on which frames,
//! with which verdict and reason counters expected per run.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};

use anyhow::{Context as _, Result, ensure};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use lb_common::{DEFAULT_CONN_TABLE_SIZE, conn_state};
use lb_userspace::datapath::{Datapath, LoadOptions};
use lb_userspace::model::{Forwarding, Protocol, Scheduler};
use lb_userspace::tables::{Tables, WantedService};

use super::{BENCH_TX_PROGRAM, LIVE_FLOWS, Scenario};
use crate::harness::{Harness, XDP_PASS, XDP_TX, service};
use crate::packets::{DIRECTOR_MAC, PacketSpec, fix_ipv4_checksum, tcp};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const DIRECTOR_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const RS1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 21);
const RS2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 22);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// Real servers of the per-scheduler scenarios: 8, weights 1..=8.
const SCHED_REALS: u8 = 8;

/// The program a scenario runs.
pub(super) enum Program {
    Trivial(Ebpf),
    Lb(Box<Harness>),
}

impl Program {
    pub(super) fn xdp(&self) -> &Xdp {
        match self {
            Program::Trivial(ebpf) => ebpf
                .program(BENCH_TX_PROGRAM)
                .expect("loaded")
                .try_into()
                .expect("an XDP program"),
            Program::Lb(h) => h.datapath.program(),
        }
    }

    pub(super) fn reasons(&self) -> BTreeMap<&'static str, u64> {
        match self {
            Program::Trivial(_) => BTreeMap::new(),
            Program::Lb(h) => h.reasons(),
        }
    }
}

/// Where a scenario's frames come from.
pub(super) enum Frames {
    /// The same frame every run.
    Fixed(Vec<u8>),
    /// A template whose source address changes every run: a new 5-tuple
    /// (client address `base + n`, port from `n`) each time. The template
    /// is IPv4 or IPv6 as `base` is.
    NewFlows {
        frame: Vec<u8>,
        base: IpAddr,
        next: u32,
    },
}

impl Frames {
    pub(super) fn new_flows(template: Vec<u8>, base: impl Into<IpAddr>) -> Self {
        Frames::NewFlows {
            frame: template,
            base: base.into(),
            next: 0,
        }
    }

    pub(super) fn next(&mut self) -> &[u8] {
        match self {
            Frames::Fixed(frame) => frame,
            Frames::NewFlows { frame, base, next } => {
                let n = *next;
                *next += 1;
                let port = 1024 + (n % 60_000) as u16;
                match base {
                    IpAddr::V4(base) => {
                        let src = Ipv4Addr::from(u32::from(*base).wrapping_add(n));
                        set_flow(frame, src, port)
                    }
                    IpAddr::V6(base) => {
                        let src = Ipv6Addr::from(u128::from(*base).wrapping_add(n as u128));
                        set_flow6(frame, src, port)
                    }
                }
                frame
            }
        }
    }
}

/// Sets the source address and port of an untagged IPv4/TCP frame (the IP
/// checksum is fixed; the TCP checksum is not: the datapath never reads it).
fn set_flow(frame: &mut [u8], src: Ipv4Addr, port: u16) {
    frame[26..30].copy_from_slice(&src.octets());
    frame[34..36].copy_from_slice(&port.to_be_bytes());
    fix_ipv4_checksum(frame, 14);
}

/// Sets the source address and port of an untagged IPv6/TCP frame without
/// extension headers (IPv6 has no header checksum; the TCP checksum is
/// left, as in [`set_flow`]).
fn set_flow6(frame: &mut [u8], src: Ipv6Addr, port: u16) {
    frame[22..38].copy_from_slice(&src.octets());
    frame[54..56].copy_from_slice(&port.to_be_bytes());
}

/// Loads the datapath as lbd does, with lbd's default table size.
pub(super) fn lb_harness() -> Result<Harness> {
    let datapath = Datapath::load(&LoadOptions {
        conn_table_size: DEFAULT_CONN_TABLE_SIZE,
        ..Default::default()
    })
    .context("load the XDP program (root needed)")?;
    let mut h = Harness {
        datapath,
        tables: Tables::new(),
    };
    h.set_timeouts(conn_state::default_timeouts())?;
    Ok(h)
}

fn trivial_program() -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .load(lb_userspace::BENCH_TX_OBJECT)
        .context("load lb-bench-tx")?;
    let program: &mut Xdp = ebpf
        .program_mut(BENCH_TX_PROGRAM)
        .with_context(|| format!("program {BENCH_TX_PROGRAM} missing from lb-bench-tx"))?
        .try_into()?;
    program
        .load()
        .context("the kernel refused the trivial XDP program")?;
    Ok(ebpf)
}

pub(super) fn client(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(CLIENT, port)
}

fn vip80() -> SocketAddrV4 {
    SocketAddrV4::new(VIP, 80)
}

fn ack(src: SocketAddrV4) -> Vec<u8> {
    PacketSpec::tcp(src, vip80(), tcp::ACK).build()
}

pub(super) fn syn(src: SocketAddrV4) -> Vec<u8> {
    PacketSpec::tcp(src, vip80(), tcp::SYN).build()
}

fn lab_service(scheduler: Scheduler) -> WantedService {
    service(Protocol::Tcp, VIP, 80, scheduler, &[(RS1, 1), (RS2, 1)])
}

/// Runs `frame` once and fails unless the verdict is `verdict`.
pub(super) fn run_once(prog: &Xdp, frame: &[u8], out: &mut [u8], verdict: u32) -> Result<u32> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(out);
    let result = prog.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    ensure!(
        result.return_value == verdict,
        "verdict {} instead of {verdict}",
        result.return_value
    );
    Ok(u32::try_from(result.duration.as_nanos()).unwrap_or(u32::MAX))
}

/// Establishes the flow from `src` (SYN, then ACK) so later ACKs hit a
/// live ESTABLISHED entry.
fn establish(h: &Harness, src: SocketAddrV4) -> Result<()> {
    let mut out = vec![0u8; 2048];
    run_once(h.datapath.program(), &syn(src), &mut out, XDP_TX).context("SYN")?;
    run_once(h.datapath.program(), &ack(src), &mut out, XDP_TX).context("ACK")?;
    Ok(())
}

/// What adds a scenario: id, title, group, setup, program, frames, the
/// verdict and reason counters of every run, whether a frame may be
/// repeated, the target ratio.
pub(super) type Add<'a> = dyn FnMut(
        &str,
        &str,
        &'static str,
        String,
        Program,
        Frames,
        u32,
        &'static [&'static str],
        bool,
        Option<f64>,
    ) + 'a;

pub(super) fn scenarios(only: &[String]) -> Result<Vec<Scenario>> {
    let want = |id: &str| {
        id == "trivial_xdp_tx" || only.is_empty() || only.iter().any(|o| id.starts_with(o.as_str()))
    };
    let mut list = Vec::new();
    let mut add = |id: &str,
                   title: &str,
                   group: &'static str,
                   setup: String,
                   program: Program,
                   frames: Frames,
                   verdict: u32,
                   reasons_per_run: &'static [&'static str],
                   repeatable: bool,
                   target_ratio: Option<f64>| {
        let reasons_before = program.reasons();
        list.push(Scenario {
            id: id.to_owned(),
            title: title.to_owned(),
            group,
            setup,
            program,
            frames,
            verdict,
            reasons_per_run,
            runs_done: 0,
            reasons_before,
            samples: Vec::new(),
            prog_ns: None,
            repeat_mean_ns: None,
            repeat_ok: false,
            repeatable,
            target_ratio,
        });
    };

    add(
        "trivial_xdp_tx",
        "trivial program: return XDP_TX",
        "baseline",
        "lb-ebpf's lb-bench-tx: no parsing, no maps; the frame is an established flow's ACK".into(),
        Program::Trivial(trivial_program()?),
        Frames::Fixed(ack(client(40000))),
        XDP_TX,
        &[],
        true,
        None,
    );

    if want("pass_not_service") {
        let mut h = lb_harness()?;
        h.apply(&[lab_service(Scheduler::Rr)])?;
        add(
            "pass_not_service",
            "not for any service: pass",
            "datapath",
            "TCP SYN to the director's own address (10.0.0.1:22); one service VIP:80 configured"
                .into(),
            Program::Lb(Box::new(h)),
            Frames::Fixed(
                PacketSpec::tcp(
                    client(40001),
                    SocketAddrV4::new(DIRECTOR_ADDR, 22),
                    tcp::SYN,
                )
                .build(),
            ),
            XDP_PASS,
            &["pass_no_service"],
            true,
            Some(1.5),
        );
    }

    if want("dr_established") {
        let mut h = lb_harness()?;
        h.apply(&[lab_service(Scheduler::Rr)])?;
        establish(&h, client(40002))?;
        add(
            "dr_established",
            "established TCP flow, DR",
            "datapath",
            "ACK of an ESTABLISHED connection; rr over 2 real servers, DR".into(),
            Program::Lb(Box::new(h)),
            Frames::Fixed(ack(client(40002))),
            XDP_TX,
            &["tx_dr"],
            true,
            Some(2.0),
        );
    }

    if want("dr_new_connection") {
        let mut h = lb_harness()?;
        h.apply(&[lab_service(Scheduler::Rr)])?;
        add(
            "dr_new_connection",
            "new TCP connection (SYN, table insert), DR",
            "datapath",
            "SYN of a new 5-tuple every run (empty table at the start); rr over 2 real servers, DR"
                .into(),
            Program::Lb(Box::new(h)),
            Frames::new_flows(syn(client(1)), Ipv4Addr::new(100, 64, 0, 0)),
            XDP_TX,
            &["conn_new", "tx_dr"],
            false,
            Some(6.0),
        );
    }

    if want("tun_established") {
        let mut h = lb_harness()?;
        let mut tun = lab_service(Scheduler::Rr);
        for real in &mut tun.reals {
            real.forwarding = Forwarding::Tun;
            real.mac = Some([0x02, 0x77, 0, 0, 0, 1]);
        }
        h.apply(&[tun])?;
        h.datapath.set_director(&lb_common::Director {
            ifindex: 1,
            mac: DIRECTOR_MAC,
            tun_source: lb_common::ipv4_words(DIRECTOR_ADDR.octets()),
            tun_source_family: lb_common::AF_INET,
            state_timeouts: conn_state::default_timeouts(),
            ..Default::default()
        })?;
        establish(&h, client(40003))?;
        add(
            "tun_established",
            "established TCP flow, TUN",
            "datapath",
            "ACK of an ESTABLISHED connection; rr over 2 real servers, IP-in-IP (adjust_head + outer header)".into(),
            Program::Lb(Box::new(h)),
            Frames::Fixed(ack(client(40003))),
            XDP_TX,
            &["tx_tun"],
            false,
            None,
        );
    }

    super::scenarios6::add_ipv6(&want, &mut add)?;

    if ["nat_established", "nat_reply", "nat_new_connection", "fullnat_established", "fullnat_new_connection"]
        .iter()
        .any(|id| want(id))
    {
        const NAT_PORT: u16 = 8080;
        let nat_harness = || -> Result<Harness> {
            let mut h = lb_harness()?;
            let mut nat = lab_service(Scheduler::Rr);
            for real in &mut nat.reals {
                real.forwarding = Forwarding::Nat;
                real.port = NAT_PORT;
            }
            h.apply(&[nat])?;
            let mut director = h.datapath.director()?;
            director.flags = lb_common::director_flag::NAT;
            h.datapath.set_director(&director)?;
            Ok(h)
        };
        if want("nat_established") {
            let h = nat_harness()?;
            establish(&h, client(40004))?;
            add(
                "nat_established",
                "established TCP flow, NAT, to the real server",
                "datapath",
                "ACK of an ESTABLISHED connection; rr over 2 real servers, NAT to port 8080 (destination and \
                 checksums rewritten)"
                    .into(),
                Program::Lb(Box::new(h)),
                Frames::Fixed(ack(client(40004))),
                XDP_TX,
                &["tx_nat"],
                // A repeat runs on the frame the last run rewrote.
                false,
                Some(2.5),
            );
        }
        if want("nat_reply") {
            let h = nat_harness()?;
            establish(&h, client(40005))?;
            // The server's answer to the client: which real server the
            // client went to decides its source.
            let mut out = vec![0u8; 2048];
            let mut reply = None;
            for rs in [RS1, RS2] {
                let frame = PacketSpec::tcp(SocketAddrV4::new(rs, NAT_PORT), client(40005), tcp::ACK).build();
                let before = h.reasons();
                let mut opts = TestRunOptions::new();
                opts.data_in = Some(&frame);
                opts.data_out = Some(&mut out);
                let result = h.datapath.program().test_run(opts)?;
                let moved: Vec<&'static str> = h.reasons().into_iter().filter(|(k, v)| before.get(k) != Some(v)).map(|(k, _)| k).collect();
                if !moved.contains(&"pass_no_service") {
                    reply = Some((frame, result.return_value, moved));
                }
            }
            let (frame, verdict, moved) = reply.context("no NAT reply took the reply path")?;
            // Where the reply then goes is this host's routing (the test
            // run's ingress is lo): sent, or dropped for want of a route or
            // neighbour. The work up to there is the same.
            let reason: &'static [&'static str] = match moved.as_slice() {
                ["tx_nat_reply"] => &["tx_nat_reply"],
                ["drop_nat_no_route"] => &["drop_nat_no_route"],
                ["drop_nat_no_neigh"] => &["drop_nat_no_neigh"],
                other => anyhow::bail!("the NAT reply moved {other:?}"),
            };
            add(
                "nat_reply",
                "established TCP flow, NAT, the real server's reply",
                "datapath",
                format!(
                    "the server's ACK to the client: found by its reply entry, source rewritten to VIP:80, \
                     routed by bpf_fib_lookup (ends here as {}: this host's routes)",
                    reason[0]
                ),
                Program::Lb(Box::new(h)),
                Frames::Fixed(frame),
                verdict,
                reason,
                false,
                None,
            );
        }
        let fullnat_harness = || -> Result<Harness> {
            let mut h = lb_harness()?;
            let mut full = lab_service(Scheduler::Rr);
            for real in &mut full.reals {
                real.forwarding = Forwarding::FullNat;
                real.port = NAT_PORT;
            }
            h.apply(&[full])?;
            let mut director = h.datapath.director()?;
            director.flags = lb_common::director_flag::NAT;
            h.datapath.set_director(&director)?;
            // Ports for every run of a new-connection scenario.
            let sources: Vec<Ipv4Addr> = (1..=4).map(|i| Ipv4Addr::new(10, 0, 2, i)).collect();
            h.datapath.fill_fullnat_ports(&sources)?;
            Ok(h)
        };
        if want("fullnat_established") {
            let h = fullnat_harness()?;
            establish(&h, client(40006))?;
            add(
                "fullnat_established",
                "established TCP flow, full NAT, to the real server",
                "datapath",
                "ACK of an ESTABLISHED connection; rr over 2 real servers, full NAT (both ends rewritten, the local \
                 end looked up)"
                    .into(),
                Program::Lb(Box::new(h)),
                Frames::Fixed(ack(client(40006))),
                XDP_TX,
                &["tx_fullnat"],
                false,
                None,
            );
        }
        if want("fullnat_new_connection") {
            let h = fullnat_harness()?;
            add(
                "fullnat_new_connection",
                "new TCP connection (SYN, a port from the pool), full NAT",
                "datapath",
                "SYN of a new 5-tuple every run; rr over 2 real servers, full NAT (a local end popped from the \
                 pool, three inserts)"
                    .into(),
                Program::Lb(Box::new(h)),
                Frames::new_flows(syn(client(1)), Ipv4Addr::new(100, 76, 0, 0)),
                XDP_TX,
                &["conn_new", "tx_fullnat"],
                false,
                None,
            );
        }
        if want("nat_new_connection") {
            let h = nat_harness()?;
            add(
                "nat_new_connection",
                "new TCP connection (SYN, table and reply inserts), NAT",
                "datapath",
                "SYN of a new 5-tuple every run (empty table at the start); rr over 2 real servers, NAT"
                    .into(),
                Program::Lb(Box::new(h)),
                Frames::new_flows(syn(client(1)), Ipv4Addr::new(100, 72, 0, 0)),
                XDP_TX,
                &["conn_new", "tx_nat"],
                false,
                None,
            );
        }
    }

    if want("dr_new_connection_100k") {
        let mut h = lb_harness()?;
        h.apply(&[lab_service(Scheduler::Rr)])?;
        fill_table(&h, LIVE_FLOWS)?;
        add(
            "dr_new_connection_100k",
            "new TCP connection with 100,000 live flows, DR",
            "datapath",
            format!(
                "as the new connection, with {LIVE_FLOWS} ESTABLISHED flows in the table first \
                 (table size {DEFAULT_CONN_TABLE_SIZE}, lbd's default)"
            ),
            Program::Lb(Box::new(h)),
            Frames::new_flows(syn(client(1)), Ipv4Addr::new(100, 80, 0, 0)),
            XDP_TX,
            &["conn_new", "tx_dr"],
            false,
            Some(6.0),
        );
    }

    for scheduler in Scheduler::ALL {
        if !want(&format!("sched_{}", scheduler.name())) {
            continue;
        }
        let mut h = lb_harness()?;
        let reals: Vec<(Ipv4Addr, u32)> = (1..=SCHED_REALS)
            .map(|i| (Ipv4Addr::new(10, 0, 1, i), i as u32))
            .collect();
        h.apply(&[service(Protocol::Tcp, VIP, 80, scheduler, &reals)])?;
        let name = scheduler.name();
        add(
            &format!("sched_{name}"),
            &format!("new connection, {name}"),
            "scheduler",
            format!(
                "SYN of a new 5-tuple every run; {name} over {SCHED_REALS} real servers, weights 1..={SCHED_REALS}, DR"
            ),
            Program::Lb(Box::new(h)),
            Frames::new_flows(syn(client(1)), Ipv4Addr::new(100, 96, 0, 0)),
            XDP_TX,
            &["conn_new", "tx_dr"],
            false,
            None,
        );
    }
    Ok(list)
}

/// `n` ESTABLISHED flows through the program itself (SYN then ACK each),
/// from client addresses that the measured runs never use.
fn fill_table(h: &Harness, n: u32) -> Result<()> {
    let prog = h.datapath.program();
    let mut out = vec![0u8; 2048];
    let mut syn_frame = syn(client(1));
    let mut ack_frame = ack(client(1));
    let base = u32::from(Ipv4Addr::new(100, 112, 0, 0));
    for i in 0..n {
        let src = Ipv4Addr::from(base + i);
        let port = 1024 + (i % 60_000) as u16;
        set_flow(&mut syn_frame, src, port);
        set_flow(&mut ack_frame, src, port);
        run_once(prog, &syn_frame, &mut out, XDP_TX).context("filling the table: SYN")?;
        run_once(prog, &ack_frame, &mut out, XDP_TX).context("filling the table: ACK")?;
    }
    let live = h.datapath.connections()?.len();
    ensure!(
        live >= n as usize,
        "the table holds {live} entries after filling {n}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_flows_get_new_tuples_and_valid_ip_checksums() {
        let mut frames = Frames::new_flows(syn(client(1)), Ipv4Addr::new(100, 64, 0, 0));
        let a = frames.next().to_vec();
        let b = frames.next().to_vec();
        assert_ne!(a[26..30], b[26..30]);
        assert_ne!(a[34..36], b[34..36]);
        let sum: u32 = b[14..34]
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]) as u32)
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        assert_eq!(folded as u16, 0xffff, "IP header checksum");
    }
}
