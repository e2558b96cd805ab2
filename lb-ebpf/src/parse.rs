//! Stage 1: read the headers. Ethernet with at most one 802.1Q/802.1ad tag,
//! IPv4 with any header length, then the TCP or UDP ports. Anything else is
//! a pass reason; nothing is written here.

use aya_ebpf::programs::XdpContext;
use lb_common::{AF_INET, FlowKey, IPPROTO_TCP, IPPROTO_UDP, reason};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Fragment offset and more-fragments bits of `frag_off`.
const IP_FRAGMENT_MASK: u16 = 0x3FFF;
const IP_DONT_FRAGMENT: u16 = 0x4000;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VlanHdr {
    tci: u16,
    proto: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    check: u16,
    saddr: u32,
    daddr: u32,
}

/// The part of the TCP header the datapath reads.
#[repr(C)]
#[derive(Clone, Copy)]
struct TcpHdr {
    sport: u16,
    dport: u16,
    seq: u32,
    ack_seq: u32,
    data_offset: u8,
    flags: u8,
    window: u16,
    check: u16,
    urg_ptr: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UdpHdr {
    sport: u16,
    dport: u16,
    len: u16,
    check: u16,
}

/// What the later stages need to know of a packet.
pub struct Packet {
    pub flow: FlowKey,
    /// Offset of the IP header (after Ethernet and an optional VLAN tag).
    pub l3_off: usize,
    /// IP header length in bytes (20..=60).
    pub ihl: usize,
    /// The whole frame's length.
    pub frame_len: usize,
    /// IP total length, what IPVS counts as bytes.
    pub ip_len: u32,
    pub tos: u8,
    /// The Don't Fragment bit is set.
    pub dont_fragment: bool,
    /// TCP flags byte, 0 for UDP.
    pub tcp_flags: u8,
}

/// A copy of the `T` at `offset`, if the packet holds all of it.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, u32> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(reason::PASS_MALFORMED);
    }
    // SAFETY: the whole `T` lies inside the packet, checked just above.
    Ok(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

#[inline(always)]
pub fn packet(ctx: &XdpContext) -> Result<Packet, u32> {
    let eth: EthHdr = read(ctx, 0).map_err(|_| reason::PASS_NOT_IP)?;
    let mut l3_off = ETH_HLEN;
    let mut proto = eth.proto;
    if proto == ETH_P_8021Q.to_be() || proto == ETH_P_8021AD.to_be() {
        let vlan: VlanHdr = read(ctx, ETH_HLEN).map_err(|_| reason::PASS_NOT_IP)?;
        proto = vlan.proto;
        l3_off += size_of::<VlanHdr>();
    }
    if proto == ETH_P_IPV6.to_be() {
        return Err(reason::PASS_IPV6);
    }
    if proto != ETH_P_IP.to_be() {
        return Err(reason::PASS_NOT_IP);
    }

    let ip: Ipv4Hdr = read(ctx, l3_off)?;
    // Masked so the verifier sees a bounded header length (20..=60).
    let ihl = ((ip.version_ihl & 0x0F) as usize) * 4;
    let ip_len = u16::from_be(ip.tot_len) as usize;
    if ip.version_ihl >> 4 != 4 || ihl < 20 || ip_len < ihl {
        return Err(reason::PASS_MALFORMED);
    }
    if ctx.data() + l3_off + ip_len > ctx.data_end() {
        return Err(reason::PASS_MALFORMED);
    }
    if u16::from_be(ip.frag_off) & IP_FRAGMENT_MASK != 0 {
        return Err(reason::PASS_FRAGMENT);
    }

    let l4_off = l3_off + ihl;
    let (sport, dport, tcp_flags) = match ip.protocol {
        IPPROTO_TCP => {
            let tcp: TcpHdr = read(ctx, l4_off)?;
            if (tcp.data_offset >> 4) < 5 {
                return Err(reason::PASS_MALFORMED);
            }
            (tcp.sport, tcp.dport, tcp.flags)
        }
        IPPROTO_UDP => {
            let udp: UdpHdr = read(ctx, l4_off)?;
            (udp.sport, udp.dport, 0)
        }
        _ => return Err(reason::PASS_OTHER_PROTOCOL),
    };

    Ok(Packet {
        flow: FlowKey {
            src: [ip.saddr, 0, 0, 0],
            dst: [ip.daddr, 0, 0, 0],
            sport,
            dport,
            protocol: ip.protocol,
            family: AF_INET,
            kind: lb_common::flow_kind::CONNECTION,
            pad0: 0,
        },
        l3_off,
        ihl,
        frame_len: ctx.data_end() - ctx.data(),
        ip_len: ip_len as u32,
        tos: ip.tos,
        dont_fragment: u16::from_be(ip.frag_off) & IP_DONT_FRAGMENT != 0,
        tcp_flags,
    })
}
