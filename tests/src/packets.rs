//! Crafted packets for the datapath tests and benchmarks: the IP part built
//! with etherparse, the Ethernet (and 802.1Q) header in front by hand so any
//! combination of tag, IP options, fragment bits and L4 is one call away.

use std::net::SocketAddrV4;

use etherparse::{IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv4Options, PacketBuilder};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;

/// TCP flag bits as on the wire.
pub mod tcp {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp { flags: u8 },
    Udp,
}

/// A packet to build, client to VIP unless told otherwise.
#[derive(Clone, Debug)]
pub struct PacketSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    pub l4: L4,
    /// Raw IPv4 options (a multiple of 4 bytes, at most 40).
    pub ip_options: Vec<u8>,
    /// (more fragments, fragment offset in 8-byte units)
    pub fragment: Option<(bool, u16)>,
    pub payload: Vec<u8>,
}

pub const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x01];
pub const DIRECTOR_MAC: [u8; 6] = [0x02, 0xd1, 0, 0, 0, 0x01];

impl PacketSpec {
    pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Self {
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: DIRECTOR_MAC,
            vlan: None,
            src,
            dst,
            l4: L4::Tcp { flags },
            ip_options: Vec::new(),
            fragment: None,
            payload: Vec::new(),
        }
    }

    pub fn udp(src: SocketAddrV4, dst: SocketAddrV4) -> Self {
        Self { l4: L4::Udp, ..Self::tcp(src, dst, 0) }
    }

    pub fn vlan(mut self, id: u16) -> Self {
        self.vlan = Some(id);
        self
    }

    pub fn ip_options(mut self, options: &[u8]) -> Self {
        self.ip_options = options.to_vec();
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

    /// The IP packet alone.
    pub fn ip_bytes(&self) -> Vec<u8> {
        let protocol = match self.l4 {
            L4::Tcp { .. } => IpNumber::TCP,
            L4::Udp => IpNumber::UDP,
        };
        let mut ip = Ipv4Header::new(0, 64, protocol, self.src.ip().octets(), self.dst.ip().octets())
            .expect("valid header");
        ip.options = Ipv4Options::try_from(&self.ip_options[..]).expect("valid options length");
        if let Some((more, offset)) = self.fragment {
            ip.more_fragments = more;
            ip.fragment_offset = IpFragOffset::try_new(offset).expect("offset fits");
        }
        let builder = PacketBuilder::ip(IpHeaders::Ipv4(ip, Default::default()));
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
                if flags & tcp::PSH != 0 {
                    t = t.psh();
                }
                t.write(&mut out, &self.payload)
            }
        }
        .expect("build packet");
        out
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        let mut frame = ethernet(self.dst_mac, self.src_mac, self.vlan, ETH_P_IP);
        frame.extend(self.ip_bytes());
        frame
    }
}

/// An Ethernet header (with an 802.1Q tag if `vlan`) for `ethertype`.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(18);
    f.extend(dst);
    f.extend(src);
    if let Some(id) = vlan {
        f.extend(ETH_P_8021Q.to_be_bytes());
        f.extend((id & 0x0fff).to_be_bytes());
    }
    f.extend(ethertype.to_be_bytes());
    f
}

/// What direct routing makes of a frame: the same bytes, addressed from the
/// director's MAC to the real server's.
pub fn dr_rewrite(frame: &[u8], real_mac: [u8; 6], director_mac: [u8; 6]) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[0..6].copy_from_slice(&real_mac);
    out[6..12].copy_from_slice(&director_mac);
    out
}

/// Recomputes the IPv4 header checksum of the header at `offset` (after
/// hand edits of a frame).
pub fn fix_ipv4_checksum(frame: &mut [u8], offset: usize) {
    let ihl = ((frame[offset] & 0x0f) as usize) * 4;
    frame[offset + 10] = 0;
    frame[offset + 11] = 0;
    let mut sum: u32 = 0;
    for chunk in frame[offset..offset + ihl].chunks(2) {
        sum += u16::from_be_bytes([chunk[0], chunk[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let check = !(sum as u16);
    frame[offset + 10..offset + 12].copy_from_slice(&check.to_be_bytes());
}

/// ICMP message types and codes the datapath tests use.
pub mod icmp {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACH: u8 = 3;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
    /// Codes of `DEST_UNREACH`.
    pub const PORT_UNREACH: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
}

/// Internet checksum (RFC 1071) of `bytes`.
pub fn inet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        sum += u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP message from `from` to `to` (type, code, the 4 bytes after the
/// checksum, e.g. the next-hop MTU of "fragmentation needed", then
/// `payload`, for an error the quoted packet), with a valid checksum, in a
/// frame from the client's MAC to the director's.
pub fn icmp_frame(from: std::net::Ipv4Addr, to: std::net::Ipv4Addr, kind: u8, code: u8, rest: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut message = vec![kind, code, 0, 0];
    message.extend(rest);
    message.extend(payload);
    let check = inet_checksum(&message);
    message[2..4].copy_from_slice(&check.to_be_bytes());
    let ip = Ipv4Header::new(message.len() as u16, 64, IpNumber::ICMP, from.octets(), to.octets()).expect("valid header");
    let mut frame = ethernet(DIRECTOR_MAC, CLIENT_MAC, None, ETH_P_IP);
    ip.write(&mut frame).expect("write header");
    frame.extend(message);
    frame
}

/// "Fragmentation needed" (next-hop `mtu`) from the router `from` to `to`,
/// quoting the IP header and the first 8 bytes after it of `quoted` (an IP
/// packet, e.g. [`PacketSpec::ip_bytes`] of a VIP → client segment).
pub fn frag_needed(from: std::net::Ipv4Addr, to: std::net::Ipv4Addr, mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let ihl = ((quoted[0] & 0x0f) as usize) * 4;
    let mtu = mtu.to_be_bytes();
    icmp_frame(from, to, icmp::DEST_UNREACH, icmp::FRAG_NEEDED, [0, 0, mtu[0], mtu[1]], &quoted[..(ihl + 8).min(quoted.len())])
}
