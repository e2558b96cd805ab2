//! Crafted IPv6 packets for the datapath tests: TCP or UDP built with
//! etherparse, extension headers (and a fragment header) spliced in after
//! the fixed header by hand, so a chain of any length or a truncated one is
//! one call away.

use std::net::SocketAddrV6;

use etherparse::PacketBuilder;

use crate::packets::{CLIENT_MAC, DIRECTOR_MAC, ETH_P_IPV6, L4, ethernet, tcp};

pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_DEST: u8 = 60;
const IPV6_HLEN: usize = 40;

/// An IPv6 packet to build, client to VIP unless told otherwise.
#[derive(Clone, Debug)]
pub struct Packet6Spec {
    pub src: SocketAddrV6,
    pub dst: SocketAddrV6,
    pub l4: L4,
    /// Extension headers in order: (kind, length in 8-byte units after
    /// the first 8), each filled with padding options.
    pub ext_headers: Vec<(u8, u8)>,
    /// A fragment header after the extension headers: (more fragments,
    /// offset in 8-byte units).
    pub fragment: Option<(bool, u16)>,
    pub payload: Vec<u8>,
}

impl Packet6Spec {
    pub fn tcp(src: SocketAddrV6, dst: SocketAddrV6, flags: u8) -> Self {
        Self { src, dst, l4: L4::Tcp { flags }, ext_headers: Vec::new(), fragment: None, payload: Vec::new() }
    }

    pub fn udp(src: SocketAddrV6, dst: SocketAddrV6) -> Self {
        Self { l4: L4::Udp, ..Self::tcp(src, dst, 0) }
    }

    pub fn ext_header(mut self, kind: u8, units: u8) -> Self {
        self.ext_headers.push((kind, units));
        self
    }

    pub fn fragment(mut self, more: bool, offset: u16) -> Self {
        self.fragment = Some((more, offset));
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// The IPv6 packet alone.
    pub fn ip_bytes(&self) -> Vec<u8> {
        let builder = PacketBuilder::ipv6(self.src.ip().octets(), self.dst.ip().octets(), 64);
        let mut out = Vec::new();
        match self.l4 {
            L4::Udp => builder.udp(self.src.port(), self.dst.port()).write(&mut out, &self.payload),
            L4::Tcp { flags } => {
                let mut t = builder.tcp(self.src.port(), self.dst.port(), 1000, 64240);
                if flags & tcp::SYN != 0 {
                    t = t.syn();
                }
                if flags & tcp::ACK != 0 {
                    t = t.ack(2000);
                }
                if flags & tcp::FIN != 0 {
                    t = t.fin();
                }
                if flags & tcp::RST != 0 {
                    t = t.rst();
                }
                t.write(&mut out, &self.payload)
            }
        }
        .expect("build packet");
        self.splice_extensions(out)
    }

    /// Puts the extension headers (and the fragment header) between the
    /// fixed header and the transport header, chaining the next-header
    /// fields and growing the payload length.
    fn splice_extensions(&self, packet: Vec<u8>) -> Vec<u8> {
        let transport = packet[6];
        let mut chain: Vec<(u8, Vec<u8>)> = self
            .ext_headers
            .iter()
            .map(|&(kind, units)| {
                // Next header, length, then PadN options filling the rest.
                let len = 8 * (units as usize + 1);
                let mut h = vec![0, units, 1, (len - 4) as u8];
                h.resize(len, 0);
                (kind, h)
            })
            .collect();
        if let Some((more, offset)) = self.fragment {
            let field = (offset << 3) | more as u16;
            let mut h = vec![0, 0];
            h.extend(field.to_be_bytes());
            h.extend(0x1234_5678u32.to_be_bytes());
            chain.push((NEXTHDR_FRAGMENT, h));
        }
        if chain.is_empty() {
            return packet;
        }
        let mut out = packet[..IPV6_HLEN].to_vec();
        out[6] = chain[0].0;
        for i in 0..chain.len() {
            let next = chain.get(i + 1).map_or(transport, |(kind, _)| *kind);
            chain[i].1[0] = next;
            out.extend(&chain[i].1);
        }
        out.extend(&packet[IPV6_HLEN..]);
        let payload_len = (out.len() - IPV6_HLEN) as u16;
        out[4..6].copy_from_slice(&payload_len.to_be_bytes());
        out
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = ethernet(DIRECTOR_MAC, CLIENT_MAC, None, ETH_P_IPV6);
        frame.extend(self.ip_bytes());
        frame
    }
}

/// An ICMPv6 error from `from` to `to` quoting `quote` (a packet's first
/// bytes), as a router sends it, in a frame to the director.
pub fn icmp6_error(from: std::net::Ipv6Addr, to: std::net::Ipv6Addr, kind: etherparse::Icmpv6Type, quote: &[u8]) -> Vec<u8> {
    let mut frame = ethernet(DIRECTOR_MAC, CLIENT_MAC, None, ETH_P_IPV6);
    PacketBuilder::ipv6(from.octets(), to.octets(), 64).icmpv6(kind).write(&mut frame, quote).expect("build ICMPv6");
    frame
}
