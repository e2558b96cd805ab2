//! What the datapath test files (`tests/datapath.rs`,
//! `tests/datapath_schedulers.rs`) share: their addresses, the harness
//! loaded with their services, and where a frame was sent.

use std::net::{Ipv4Addr, SocketAddrV4};

use lb_userspace::model::{Protocol, Scheduler};

use crate::harness::{Harness, Outcome, XDP_TX, service};
use crate::is_root;
use crate::packets::{DIRECTOR_MAC, PacketSpec, tcp};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const VIP_ALL_PORTS: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
pub const RS1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 21);
pub const RS2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 22);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

pub fn client(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(CLIENT, port)
}

pub fn vip(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(VIP, port)
}

/// The harness with the files' services: TCP VIP:80 and UDP VIP:53 over
/// RS1 and RS2, every port of VIP_ALL_PORTS on RS1; `None` (the test is
/// skipped) without root.
pub fn harness() -> Option<Harness> {
    if !is_root() {
        eprintln!("skipped: BPF_PROG_TEST_RUN needs root");
        return None;
    }
    let mut h = Harness::new().expect("load the XDP program");
    h.apply(&[
        service(Protocol::Tcp, VIP, 80, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]),
        service(Protocol::Udp, VIP, 53, Scheduler::Rr, &[(RS1, 1), (RS2, 1)]),
        service(Protocol::Tcp, VIP_ALL_PORTS, 0, Scheduler::Rr, &[(RS1, 1)]),
    ])
    .expect("fill the maps");
    Some(h)
}

/// The real server a frame was direct-routed to (`None` if it was not
/// forwarded, e.g. answered with ICMP).
pub fn forwarded_to(out: &Outcome) -> Option<Ipv4Addr> {
    let forwarded = out.verdict == XDP_TX && out.output[6..12] == DIRECTOR_MAC && out.output[0..2] == [0x02, 0xee];
    forwarded.then(|| Ipv4Addr::new(out.output[2], out.output[3], out.output[4], out.output[5]))
}

/// The real server a SYN from this client port lands on.
pub fn schedule_one(h: &Harness, port: u16) -> Option<Ipv4Addr> {
    forwarded_to(&h.run(&PacketSpec::tcp(client(port), vip(80), tcp::SYN).build()).unwrap())
}
