//! The schedulers' equivalence runs: the XDP program (through
//! BPF_PROG_TEST_RUN) chooses what IPVS's code chooses, by lb-common's
//! reference models (`lb_common::sched::models`), over thousands of new
//! connections, with servers and weights changing in between. Needs root.

use std::net::{Ipv4Addr, SocketAddrV4};

use lb_common::sched::{self, models};
use lb_tests::datapath_setup::{VIP, client, forwarded_to, harness, schedule_one, vip};
use lb_tests::harness::service;
use lb_tests::packets::{PacketSpec, tcp};
use lb_userspace::model::{Protocol, Scheduler};

/// The XDP program's choices equal IPVS's (the reference models) over a
/// long run of new connections, with weights changing and servers coming
/// and going in between.
#[test]
fn rr_and_wrr_choose_exactly_as_ipvs_over_thousands_of_connections() {
    let Some(mut h) = harness() else { return };
    let addr = |i: u8| Ipv4Addr::new(10, 0, 1, i);
    // Each step: the config's servers (oldest first) as (server, weight).
    let steps: Vec<Vec<(u8, u32)>> = vec![
        vec![(1, 5), (2, 3), (3, 1)],
        vec![(1, 5), (2, 3), (3, 1), (4, 7)],
        vec![(1, 5), (3, 1), (4, 7)],
        vec![(1, 2), (3, 1), (4, 7), (5, 4), (6, 0)],
        vec![(3, 6), (4, 7), (5, 4), (6, 3), (7, 9), (8, 1)],
        vec![(7, 9)],
        vec![(7, 9), (9, 2), (10, 2), (11, 4)],
    ];
    let mut port = 10000u16;
    for scheduler in [Scheduler::Rr, Scheduler::Wrr] {
        h.apply(&[]).unwrap();
        let mut rr = models::RrModel::default();
        let mut wrr = models::WrrModel::empty();
        // The model's list in IPVS order (newest first).
        let mut list: Vec<(u8, u32)> = Vec::new();
        let sched_reals = |list: &[(u8, u32)]| list.iter().map(|&(_, w)| models::SchedReal::new(w)).collect::<Vec<_>>();
        for (step, reals) in steps.iter().enumerate() {
            // The same change as ipvsadm commands, one at a time.
            for i in (0..list.len()).rev() {
                if !reals.iter().any(|r| r.0 == list[i].0) {
                    list.remove(i);
                    rr.remove(i);
                    wrr.changed(&sched_reals(&list));
                }
            }
            for &(s, w) in reals {
                match list.iter().position(|e| e.0 == s) {
                    Some(i) if list[i].1 != w => {
                        list[i].1 = w;
                        wrr.changed(&sched_reals(&list));
                    }
                    Some(_) => {}
                    None => {
                        list.insert(0, (s, w));
                        rr.add_front();
                        wrr.changed(&sched_reals(&list));
                    }
                }
            }
            let servers: Vec<(Ipv4Addr, u32)> = reals.iter().map(|&(s, w)| (addr(s), w)).collect();
            h.apply(&[service(Protocol::Tcp, VIP, 80, scheduler, &servers)]).unwrap();
            for pick in 0..700 {
                let want = match scheduler {
                    Scheduler::Wrr => wrr.schedule(&sched_reals(&list)),
                    _ => rr.schedule(&sched_reals(&list)),
                }
                .map(|i| addr(list[i].0));
                port = port.wrapping_add(1).max(10000);
                assert_eq!(schedule_one(&h, port), want, "{scheduler} step {step} pick {pick}");
            }
        }
    }
}

/// Our record of the connections we opened, to give the models the counts
/// IPVS would have.
#[derive(Default)]
struct Shadow {
    /// client port -> (server, established)
    conns: std::collections::BTreeMap<u16, (Ipv4Addr, bool)>,
}

impl Shadow {
    fn view(&self, server: Ipv4Addr, weight: u32) -> models::ConnView {
        let active = self.conns.values().filter(|c| c.0 == server && c.1).count() as u64;
        let inactive = self.conns.values().filter(|c| c.0 == server && !c.1).count() as u64;
        models::ConnView::new(weight, active, inactive)
    }
}

/// lc, wlc, sed, nq, fo and ovf choose what IPVS's code chooses, connection
/// after connection, with connections established, left half-open and
/// closed in between, and weights and servers changing.
#[test]
fn least_connection_family_chooses_as_ipvs() {
    let Some(mut h) = harness() else { return };
    let steps: Vec<Vec<(u8, u32)>> = vec![
        vec![(1, 3), (2, 1), (3, 2)],
        vec![(1, 3), (2, 1), (3, 2), (4, 5)],
        vec![(1, 0), (2, 1), (3, 2), (4, 5)],
        vec![(2, 4), (4, 1), (5, 2)],
    ];
    let schedulers = [Scheduler::Lc, Scheduler::Wlc, Scheduler::Sed, Scheduler::Nq, Scheduler::Fo, Scheduler::Ovf];
    for (n, scheduler) in schedulers.into_iter().enumerate() {
        // Fresh servers per scheduler: a server removed and added back
        // keeps its connections (IPVS's trash), which would mix the runs.
        let addr = |i: u8| Ipv4Addr::new(10, 2, n as u8, i);
        h.apply(&[]).unwrap();
        let mut shadow = Shadow::default();
        // A distinct client port range per scheduler: no entry is reused.
        let mut port = 20000 + n as u16 * 1100;
        let mut list: Vec<(u8, u32)> = Vec::new();
        for (step, reals) in steps.iter().enumerate() {
            list.retain(|e| reals.iter().any(|r| r.0 == e.0));
            for &(s, w) in reals {
                match list.iter_mut().find(|e| e.0 == s) {
                    Some(e) => e.1 = w,
                    None => list.insert(0, (s, w)),
                }
            }
            let servers: Vec<(Ipv4Addr, u32)> = reals.iter().map(|&(s, w)| (addr(s), w)).collect();
            h.apply(&[service(Protocol::Tcp, VIP, 80, scheduler, &servers)]).unwrap();
            for pick in 0..250 {
                let views: Vec<models::ConnView> = list.iter().map(|&(s, w)| shadow.view(addr(s), w)).collect();
                let choose = models::least_connection(scheduler).expect("a connection-counting scheduler");
                let want = choose(&views).map(|i| addr(list[i].0));
                port += 1;
                let got = schedule_one(&h, port);
                assert_eq!(got, want, "{scheduler} step {step} pick {pick}");
                let Some(server) = got else { continue };
                // Most connections get established; every 3rd stays half
                // open; every 5th established one is closed later.
                let established = pick % 3 != 0;
                if established {
                    h.run(&PacketSpec::tcp(client(port), vip(80), tcp::ACK).build()).unwrap();
                }
                shadow.conns.insert(port, (server, established));
                if pick % 5 == 4 {
                    let (&old, _) = shadow.conns.iter().find(|(_, c)| c.1).unwrap();
                    h.run(&PacketSpec::tcp(client(old), vip(80), tcp::FIN | tcp::ACK).build()).unwrap();
                    shadow.conns.insert(old, (shadow.conns[&old].0, false));
                }
            }
        }
    }
}

/// sh, dh and mh pick the server IPVS's tables and hashes give, for many
/// client addresses and ports, with and without the port and fallback
/// flags, while servers are quiesced and come back.
#[test]
fn hashing_schedulers_choose_as_ipvs() {
    use lb_common::service_flag as f;
    let Some(mut h) = harness() else { return };
    let addr = |i: u8| Ipv4Addr::new(10, 0, 3, i);
    let steps: Vec<Vec<(u8, u32)>> = vec![
        vec![(1, 3), (2, 1), (3, 2)],
        vec![(1, 3), (2, 0), (3, 2)],
        vec![(1, 3), (2, 0), (3, 2), (4, 7)],
        vec![(1, 1), (2, 2), (3, 0), (4, 7)],
    ];
    let cases = [
        (Scheduler::Sh, 0),
        (Scheduler::Sh, f::SH_PORT),
        (Scheduler::Sh, f::SH_FALLBACK),
        (Scheduler::Sh, f::SH_FALLBACK | f::SH_PORT),
        (Scheduler::Dh, 0),
        (Scheduler::Mh, 0),
        (Scheduler::Mh, f::MH_PORT),
        (Scheduler::Mh, f::MH_FALLBACK | f::MH_PORT),
    ];
    let mut port = 30000u16;
    for (scheduler, flags) in cases {
        h.apply(&[]).unwrap();
        let mut list: Vec<(u8, u32)> = Vec::new();
        let mut last_weight: std::collections::BTreeMap<u8, u32> = Default::default();
        for (step, reals) in steps.iter().enumerate() {
            list.retain(|e| reals.iter().any(|r| r.0 == e.0));
            for &(s, w) in reals {
                match list.iter_mut().find(|e| e.0 == s) {
                    Some(e) => {
                        e.1 = w;
                        last_weight.insert(s, sched::mh_last_weight(false, last_weight[&s], w));
                    }
                    None => {
                        list.insert(0, (s, w));
                        last_weight.insert(s, w);
                    }
                }
            }
            let servers: Vec<(Ipv4Addr, u32)> = reals.iter().map(|&(s, w)| (addr(s), w)).collect();
            let mut svc = service(Protocol::Tcp, VIP, 80, scheduler, &servers);
            svc.options.flags = flags;
            h.apply(&[svc]).unwrap();
            let words = |a: Ipv4Addr| lb_common::ipv4_words(a.octets());
            let table = match scheduler {
                Scheduler::Sh => sched::sh_table(&list.iter().map(|e| e.1).collect::<Vec<_>>()),
                Scheduler::Dh => sched::dh_table(list.len()),
                _ => sched::mh_table(
                    &list
                        .iter()
                        .map(|e| sched::MhReal { addr: words(addr(e.0)), port_be: 80u16.to_be(), weight: last_weight[&e.0] })
                        .collect::<Vec<_>>(),
                    lb_common::hash::MH_DEFAULT_TAB_SIZE,
                ),
            };
            // No connections are established here: all servers are idle.
            let views: Vec<models::ConnView> = list.iter().map(|e| models::ConnView::new(e.1, 0, 0)).collect();
            for c in 0..300u32 {
                let source = Ipv4Addr::from(0xC6_12_00_00 + c * 7919);
                port = port.wrapping_add(1).max(30000);
                let want = match scheduler {
                    Scheduler::Sh => models::sh_pick(
                        &table,
                        &views,
                        words(source),
                        port.to_be(),
                        flags & f::SH_FALLBACK != 0,
                        flags & f::SH_PORT != 0,
                    ),
                    Scheduler::Dh => models::dh_pick(&table, &views, words(VIP)),
                    _ => models::mh_pick(
                        &table,
                        &views,
                        words(source),
                        port.to_be(),
                        flags & f::MH_FALLBACK != 0,
                        flags & f::MH_PORT != 0,
                    ),
                }
                .map(|i| addr(list[i].0));
                let out = h.run(&PacketSpec::tcp(SocketAddrV4::new(source, port), vip(80), tcp::SYN).build()).unwrap();
                let got = forwarded_to(&out);
                assert_eq!(got, want, "{scheduler} flags {flags:#x} step {step} client {source}:{port}");
                // Close it at once so every choice sees idle servers.
                h.run(&PacketSpec::tcp(SocketAddrV4::new(source, port), vip(80), tcp::RST).build()).unwrap();
            }
        }
    }
}

/// lblc and lblcr choose as IPVS's code does, including their
/// destination-address caches, as connections pile up on the cached server.
#[test]
fn locality_schedulers_choose_as_ipvs() {
    let Some(mut h) = harness() else { return };
    for (n, scheduler) in [Scheduler::Lblc, Scheduler::Lblcr].into_iter().enumerate() {
        let addr = |i: u8| Ipv4Addr::new(10, 4, n as u8, i);
        let servers = [(addr(1), 2u32), (addr(2), 3), (addr(3), 1)];
        h.apply(&[]).unwrap();
        h.apply(&[service(Protocol::Tcp, VIP, 80, scheduler, &servers)]).unwrap();
        // IPVS order: newest first.
        let list: Vec<(Ipv4Addr, u32)> = servers.iter().rev().copied().collect();
        let id = |a: Ipv4Addr| u32::from(a);
        let mut lblc = models::LblcModel::new(u64::MAX / 4);
        let mut lblcr = models::LblcrModel::new(u64::MAX / 4);
        let mut shadow = Shadow::default();
        let daddr = lb_common::ipv4_words(VIP.octets());
        let mut port = 60000 + n as u16 * 2000;
        for pick in 0..80u64 {
            let views: Vec<models::LbReal> =
                list.iter().map(|&(a, w)| models::LbReal { id: id(a), view: shadow.view(a, w) }).collect();
            let want = match scheduler {
                Scheduler::Lblc => lblc.schedule(&views, daddr, pick),
                _ => lblcr.schedule(&views, &[], daddr, pick),
            }
            .map(|i| list[i].0);
            port += 1;
            let got = schedule_one(&h, port);
            assert_eq!(got, want, "{scheduler} pick {pick}");
            let server = got.unwrap();
            // Established, so the cached server fills up past its weight.
            h.run(&PacketSpec::tcp(client(port), vip(80), tcp::ACK).build()).unwrap();
            shadow.conns.insert(port, (server, true));
            if pick % 7 == 6 {
                let (&old, _) = shadow.conns.iter().find(|(_, c)| c.1).unwrap();
                h.run(&PacketSpec::tcp(client(old), vip(80), tcp::RST).build()).unwrap();
                shadow.conns.insert(old, (shadow.conns[&old].0, false));
            }
        }
    }
}
