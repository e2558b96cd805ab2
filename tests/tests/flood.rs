//! A flood of new connections cannot starve established flows: the
//! connection table is an LRU whose active list keeps entries that see
//! traffic, so a SYN flood (entries never seen again) evicts its own
//! entries first. Needs root (BPF_PROG_TEST_RUN).

use std::net::{Ipv4Addr, SocketAddrV4};

use lb_tests::{
    harness::{Harness, XDP_TX, service},
    is_root,
    packets::{PacketSpec, tcp},
};
use lb_userspace::model::{Protocol, Scheduler};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

#[test]
fn a_syn_flood_does_not_evict_flows_that_keep_talking() {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return;
    }
    let table = 4096;
    let mut h = Harness::with_conn_table_size(table).unwrap();
    let reals: Vec<(Ipv4Addr, u32)> = (1..=4).map(|i| (Ipv4Addr::new(10, 0, 0, 20 + i), 1)).collect();
    h.apply(&[service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &reals)]).unwrap();
    let vip = SocketAddrV4::new(VIP, 80);

    // Established flows from the legitimate clients.
    let clients: Vec<SocketAddrV4> = (0..64).map(|i| SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 20000 + i)).collect();
    let mut servers = Vec::new();
    for c in &clients {
        let out = h.run(&PacketSpec::tcp(*c, vip, tcp::SYN).build()).unwrap();
        h.run(&PacketSpec::tcp(*c, vip, tcp::ACK).build()).unwrap();
        servers.push(out.output[0..6].to_vec());
    }

    // Ten times the table in spoofed SYNs, the established flows sending
    // a packet every few hundred of them.
    let flood = table as usize * 10;
    for n in 0..flood {
        let spoofed = SocketAddrV4::new(Ipv4Addr::from(0xC633_0000u32 + n as u32), 1024 + (n % 50000) as u16);
        h.run(&PacketSpec::tcp(spoofed, vip, tcp::SYN).build()).unwrap();
        if n % 256 == 0 {
            let i = (n / 256) % clients.len();
            let out = h.run(&PacketSpec::tcp(clients[i], vip, tcp::ACK | tcp::PSH).payload(b"still here").build()).unwrap();
            assert_eq!(out.verdict, XDP_TX, "established flow {i} lost its entry after {n} flood SYNs");
            assert_eq!(out.output[0..6], servers[i][..], "established flow {i} moved to another server");
        }
    }
    // Every established flow is still known, on its server.
    for (i, c) in clients.iter().enumerate() {
        let out = h.run(&PacketSpec::tcp(*c, vip, tcp::ACK).build()).unwrap();
        assert_eq!(out.verdict, XDP_TX, "flow {i} lost");
        assert_eq!(out.output[0..6], servers[i][..]);
    }
}
