//! The IPv6 rows: the IPv4 scenarios that matter most (pass, established
//! DR, new connection DR, established TUN) again with IPv6 frames, which
//! lb_xdp hands to lb_xdp6 by a tail call as on the wire. Same services
//! (rr over 2 real servers), same targets as their IPv4 counterparts.
//! Frames from `packets6`, maps as `tests/datapath6.rs` fills them.

use std::net::{Ipv6Addr, SocketAddrV6};

use anyhow::{Context as _, Result};
use lb_common::conn_state;
use lb_userspace::model::{Forwarding, Protocol, Scheduler};
use lb_userspace::tables::WantedService;

use super::scenarios::{Add, Frames, Program, lb_harness, run_once};
use crate::harness::{Harness, XDP_PASS, XDP_TX, service};
use crate::packets::{DIRECTOR_MAC, tcp};
use crate::packets6::Packet6Spec;

const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
const DIRECTOR_ADDR: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const RS1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x21);
const RS2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x22);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10);
/// New connections' clients: this address plus the run's number.
const NEW_CLIENTS: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0);

fn client(port: u16) -> SocketAddrV6 {
    SocketAddrV6::new(CLIENT, port, 0, 0)
}

fn vip80() -> SocketAddrV6 {
    SocketAddrV6::new(VIP, 80, 0, 0)
}

fn ack(src: SocketAddrV6) -> Vec<u8> {
    Packet6Spec::tcp(src, vip80(), tcp::ACK).build()
}

fn syn(src: SocketAddrV6) -> Vec<u8> {
    Packet6Spec::tcp(src, vip80(), tcp::SYN).build()
}

fn lab_service() -> WantedService {
    service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1), (RS2, 1)])
}

/// The datapath with [`lab_service`].
fn harness() -> Result<Harness> {
    let mut h = lb_harness()?;
    h.apply(&[lab_service()])?;
    Ok(h)
}

/// Establishes the flow from `src` (SYN, then ACK).
fn establish(h: &Harness, src: SocketAddrV6) -> Result<()> {
    let mut out = vec![0u8; 2048];
    run_once(h.datapath.program(), &syn(src), &mut out, XDP_TX).context("IPv6 SYN")?;
    run_once(h.datapath.program(), &ack(src), &mut out, XDP_TX).context("IPv6 ACK")?;
    Ok(())
}

/// Adds the IPv6 scenarios `want` asks for (ids start with `ipv6_`).
pub(super) fn add_ipv6(want: &dyn Fn(&str) -> bool, add: &mut Add<'_>) -> Result<()> {
    if want("ipv6_pass_not_service") {
        let director = SocketAddrV6::new(DIRECTOR_ADDR, 22, 0, 0);
        add(
            "ipv6_pass_not_service",
            "not for any service: pass, IPv6",
            "datapath",
            "TCP SYN to the director's own address ([2001:db8::1]:22); one service [VIP]:80 configured"
                .into(),
            Program::Lb(Box::new(harness()?)),
            Frames::Fixed(Packet6Spec::tcp(client(40001), director, tcp::SYN).build()),
            XDP_PASS,
            &["pass_no_service"],
            true,
            Some(1.5),
        );
    }

    if want("ipv6_dr_established") {
        let h = harness()?;
        establish(&h, client(40002))?;
        add(
            "ipv6_dr_established",
            "established TCP flow, DR, IPv6",
            "datapath",
            "ACK of an ESTABLISHED IPv6 connection; rr over 2 real servers, DR".into(),
            Program::Lb(Box::new(h)),
            Frames::Fixed(ack(client(40002))),
            XDP_TX,
            &["tx_dr"],
            true,
            Some(2.0),
        );
    }

    if want("ipv6_dr_new_connection") {
        add(
            "ipv6_dr_new_connection",
            "new TCP connection (SYN, table insert), DR, IPv6",
            "datapath",
            "SYN of a new IPv6 5-tuple every run (empty table at the start); rr over 2 real servers, DR"
                .into(),
            Program::Lb(Box::new(harness()?)),
            Frames::new_flows(syn(client(1)), NEW_CLIENTS),
            XDP_TX,
            &["conn_new", "tx_dr"],
            false,
            Some(6.0),
        );
    }

    if want("ipv6_tun_established") {
        let mut h = lb_harness()?;
        let mut tun = lab_service();
        for real in &mut tun.reals {
            real.forwarding = Forwarding::Tun;
            real.mac = Some([0x02, 0x77, 0, 0, 0, 1]);
        }
        h.apply(&[tun])?;
        h.datapath.set_director(&lb_common::Director {
            ifindex: 1,
            mac: DIRECTOR_MAC,
            tun_source6: lb_common::ipv6_words(DIRECTOR_ADDR.octets()),
            state_timeouts: conn_state::default_timeouts(),
            ..Default::default()
        })?;
        establish(&h, client(40003))?;
        add(
            "ipv6_tun_established",
            "established TCP flow, TUN, IPv6",
            "datapath",
            "ACK of an ESTABLISHED IPv6 connection; rr over 2 real servers, IPv6 in IPv6 (adjust_head + outer \
             header)"
                .into(),
            Program::Lb(Box::new(h)),
            Frames::Fixed(ack(client(40003))),
            XDP_TX,
            &["tx_tun"],
            false,
            None,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ipv6_flows_change_the_source_address_and_port_only() {
        let template = syn(client(1));
        let mut frames = Frames::new_flows(template.clone(), NEW_CLIENTS);
        frames.next();
        let second = frames.next().to_vec();
        let packet = etherparse::SlicedPacket::from_ethernet(&second).expect("a frame");
        let Some(etherparse::NetSlice::Ipv6(ip)) = packet.net else {
            panic!("not IPv6")
        };
        let Some(etherparse::TransportSlice::Tcp(tcp)) = packet.transport else {
            panic!("not TCP")
        };
        let next_client = Ipv6Addr::from(u128::from(NEW_CLIENTS) + 1);
        assert_eq!(ip.header().source_addr(), next_client);
        assert_eq!(ip.header().destination_addr(), VIP);
        assert_eq!((tcp.source_port(), tcp.destination_port()), (1025, 80));
        let changed: Vec<usize> = (0..template.len())
            .filter(|&i| template[i] != second[i])
            .collect();
        assert!(
            changed
                .iter()
                .all(|&i| (22..38).contains(&i) || (54..56).contains(&i)),
            "{changed:?}"
        );
    }
}
