//! VRRP advertisements on the wire: VRRPv2 (RFC 3768) and VRRPv3 for IPv4
//! and IPv6 (RFC 5798), as keepalived sends them; and the announcements of
//! a new master: gratuitous ARPs (IPv4), unsolicited neighbour
//! advertisements (IPv6, RFC 4861).
//!
//! ```text
//! VRRPv2                                  VRRPv3 (IPv4)
//!  0       1       2       3               0       1       2       3
//! +-------+-------+-------+-------+       +-------+-------+-------+-------+
//! |2 |  1 | VRID  | Prio  | Count |       |3 |  1 | VRID  | Prio  | Count |
//! +-------+-------+-------+-------+       +-------+-------+-------+-------+
//! | AuthT | Adv s | Checksum      |       |rsv| Max Adv (cs)| Checksum    |
//! +-------+-------+-------+-------+       +-------+-------+-------+-------+
//! | IPv4 address 1 ... Count      |       | address 1 ... Count           |
//! +-------------------------------+       | (IPv4: 4 bytes, IPv6: 16)     |
//! | Auth data (8 bytes)           |       +-------------------------------+
//! +-------------------------------+
//! ```
//!
//! The v2 checksum covers the VRRP packet; the v3 one also a pseudo-header,
//! RFC 5798 §5.2.8: IPv4's (source, destination, zero, protocol 112, VRRP
//! length) or IPv6's (RFC 8200 §8.1: source, destination, 32-bit length,
//! three zeros, next header 112). Over IPv6 only v3 exists; the source is
//! the sender's link-local address, the destination ff02::12, the hop
//! limit 255. Encoding and decoding work on the VRRP payload; the IP header
//! is the kernel's (a raw IPv4 socket hands it over on receive, so the TTL
//! can be checked; a raw IPv6 socket gives the source and hop limit apart).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;
/// The VRRP multicast group.
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The VRRP multicast group of IPv6 (RFC 5798 §5.1.2.2).
pub const VRRP_GROUP6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// All nodes on the link: where unsolicited neighbour advertisements go.
pub const ALL_NODES6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Adverts are sent, and must arrive, with this TTL.
pub const VRRP_TTL: u8 = 255;
/// Type "advertisement", the only one.
pub const TYPE_ADVERT: u8 = 1;
/// Priority of the address owner.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority of a master that stops (the backup takes over after its skew time).
pub const PRIORITY_STOP: u8 = 0;
/// VRRPv2 authentication types.
pub const AUTH_NONE: u8 = 0;
pub const AUTH_SIMPLE: u8 = 1;
/// The longest VRRPv3 advert interval: 12 bits of centiseconds.
pub const MAX_V3_INTERVAL_CS: u16 = 0x0fff;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Version {
    /// RFC 3768: advert interval in seconds, optional simple-text password.
    V2,
    /// RFC 5798: advert interval in centiseconds, no authentication.
    V3,
}

impl Version {
    pub fn number(self) -> u8 {
        match self {
            Self::V2 => 2,
            Self::V3 => 3,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VRRPv{}", self.number())
    }
}

/// One advertisement, either version. The interval is kept in centiseconds
/// for both; a v2 advert carries whole seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Advert interval in centiseconds (v2: seconds × 100).
    pub interval_cs: u16,
    /// Of the IP header's family (v2: IPv4 only).
    pub addresses: Vec<IpAddr>,
    /// v2 only: authentication type (0 none, 1 simple text) and its 8 bytes.
    pub auth_type: u8,
    pub auth_data: [u8; 8],
}

/// Why a received packet is not an acceptable advert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than its headers or than its own counts say.
    Truncated,
    BadIpHeader,
    /// Not protocol 112.
    NotVrrp(u8),
    /// RFC: the TTL (IPv6: hop limit) must be 255 (the sender is on this
    /// link).
    BadTtl(u8),
    /// IPv6: the source must be a link-local address (RFC 5798 §5.1.2.1).
    NotLinkLocal(Ipv6Addr),
    /// Not the version this instance runs.
    BadVersion(u8),
    BadType(u8),
    BadChecksum,
    /// v2's advert interval must be whole seconds, v3's non-zero.
    BadInterval,
    /// Another virtual router on the same link: not an error, not ours.
    OtherVrid(u8),
    /// v2: the authentication type differs from ours.
    AuthTypeMismatch {
        ours: u8,
        theirs: u8,
    },
    /// v2: simple-text password differs.
    AuthFailed,
    /// The advert's virtual addresses differ from ours.
    AddressMismatch,
    /// v2: the advert interval differs from ours (RFC 3768 §7.1).
    IntervalMismatch {
        ours_cs: u16,
        theirs_cs: u16,
    },
    /// Unicast mode: the sender is not a configured peer.
    UnknownPeer(IpAddr),
}

impl PacketError {
    /// Whether this counts as a bad advert (every error but another router's
    /// VRID, which is normal on a shared link).
    pub fn is_bad(&self) -> bool {
        !matches!(self, Self::OtherVrid(_) | Self::NotVrrp(_))
    }

    /// The kind of error, without what the packet said: the key its log
    /// lines are rate-limited by.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadIpHeader => "bad IP header",
            Self::NotVrrp(_) => "not VRRP",
            Self::BadTtl(_) => "TTL",
            Self::NotLinkLocal(_) => "not link-local",
            Self::BadVersion(_) => "version",
            Self::BadType(_) => "type",
            Self::BadChecksum => "checksum",
            Self::BadInterval => "interval",
            Self::OtherVrid(_) => "VRID",
            Self::AuthTypeMismatch { .. } => "auth type",
            Self::AuthFailed => "password",
            Self::AddressMismatch => "addresses",
            Self::IntervalMismatch { .. } => "interval mismatch",
            Self::UnknownPeer(_) => "unknown peer",
        }
    }
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated packet"),
            Self::BadIpHeader => f.write_str("bad IP header"),
            Self::NotVrrp(p) => write!(f, "IP protocol {p}, not VRRP"),
            Self::BadTtl(t) => write!(f, "TTL {t}, not 255"),
            Self::NotLinkLocal(a) => write!(f, "source {a} is not link-local"),
            Self::BadVersion(v) => write!(f, "VRRP version {v}"),
            Self::BadType(t) => write!(f, "VRRP type {t}, not advertisement"),
            Self::BadChecksum => f.write_str("bad checksum"),
            Self::BadInterval => f.write_str("bad advert interval"),
            Self::OtherVrid(v) => write!(f, "VRID {v} is another virtual router"),
            Self::AuthTypeMismatch { ours, theirs } => write!(f, "auth type {theirs}, ours is {ours}"),
            Self::AuthFailed => f.write_str("wrong password"),
            Self::AddressMismatch => f.write_str("virtual addresses differ from ours"),
            Self::IntervalMismatch { ours_cs, theirs_cs } => {
                write!(f, "advert interval {}0 ms, ours is {}0 ms", theirs_cs, ours_cs)
            }
            Self::UnknownPeer(a) => write!(f, "{a} is not a unicast peer"),
        }
    }
}

impl std::error::Error for PacketError {}

/// RFC 1071 Internet checksum over `parts`, as if concatenated (each part
/// but the last has an even length).
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The pseudo-header of a payload of `len` bytes from `src` to `dst` for
/// protocol `next` (IPv4: 12 bytes; IPv6: 40). `None` if the two addresses
/// are not of one family.
fn pseudo_header(src: IpAddr, dst: IpAddr, next: u8, len: usize) -> Option<Vec<u8>> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, next]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, next]);
        }
        _ => return None,
    }
    Some(p)
}

/// Whether `a` is a link-local unicast address (fe80::/10).
pub fn is_link_local6(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

fn address_len(a: IpAddr) -> usize {
    if a.is_ipv4() { 4 } else { 16 }
}

fn octets(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The 8 bytes of a v2 simple-text password: its bytes, zero padded
/// (keepalived's layout). Longer passwords are cut at 8, as keepalived does.
pub fn simple_auth_data(password: &str) -> [u8; 8] {
    let mut data = [0u8; 8];
    for (d, b) in data.iter_mut().zip(password.bytes()) {
        *d = b;
    }
    data
}

impl Advert {
    /// The VRRP payload, checksummed. `src` and `dst` are the IP header's
    /// (VRRPv3's checksum covers them).
    ///
    /// Panics if the advert cannot be encoded (more than 255 addresses, a v2
    /// interval that is not whole seconds up to 255, a v3 one above 4095 cs,
    /// addresses or a destination of another family than `src`, v2 over
    /// IPv6); the config rules those out.
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let count = u8::try_from(self.addresses.len()).expect("at most 255 addresses");
        assert!(
            self.addresses.iter().chain([&dst]).all(|a| a.is_ipv4() == src.is_ipv4()),
            "addresses of one family"
        );
        assert!(src.is_ipv4() || self.version == Version::V3, "VRRPv2 is IPv4 only");
        let mut p = Vec::with_capacity(8 + address_len(src) * self.addresses.len() + 8);
        p.push((self.version.number() << 4) | TYPE_ADVERT);
        p.push(self.vrid);
        p.push(self.priority);
        p.push(count);
        match self.version {
            Version::V2 => {
                assert!(self.interval_cs.is_multiple_of(100) && (100..=25_500).contains(&self.interval_cs));
                p.push(self.auth_type);
                p.push((self.interval_cs / 100) as u8);
            }
            Version::V3 => {
                assert!(self.interval_cs <= MAX_V3_INTERVAL_CS);
                p.extend_from_slice(&self.interval_cs.to_be_bytes());
            }
        }
        p.extend_from_slice(&[0, 0]);
        for a in &self.addresses {
            p.extend_from_slice(&octets(a));
        }
        let sum = match self.version {
            Version::V2 => {
                p.extend_from_slice(&self.auth_data);
                internet_checksum(&[&p])
            }
            Version::V3 => {
                let pseudo = pseudo_header(src, dst, IPPROTO_VRRP, p.len()).expect("one family");
                internet_checksum(&[&pseudo, &p])
            }
        };
        p[6..8].copy_from_slice(&sum.to_be_bytes());
        p
    }

    /// Parses and checksums a VRRP payload (either version) received from
    /// `src` to `dst`: over IPv4, v2 or v3 with IPv4 addresses; over IPv6,
    /// v3 with IPv6 addresses. Trailing bytes past the advert are ignored
    /// (Ethernet padding never reaches here, but the RFC lets a receiver be
    /// lenient).
    pub fn decode(payload: &[u8], src: IpAddr, dst: IpAddr) -> Result<Advert, PacketError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(PacketError::BadIpHeader);
        }
        if payload.len() < 8 {
            return Err(PacketError::Truncated);
        }
        let version = match payload[0] >> 4 {
            2 if src.is_ipv4() => Version::V2,
            3 => Version::V3,
            v => return Err(PacketError::BadVersion(v)),
        };
        if payload[0] & 0x0f != TYPE_ADVERT {
            return Err(PacketError::BadType(payload[0] & 0x0f));
        }
        let count = payload[3] as usize;
        let width = address_len(src);
        let len = 8 + width * count + if version == Version::V2 { 8 } else { 0 };
        if payload.len() < len {
            return Err(PacketError::Truncated);
        }
        let packet = &payload[..len];
        let sum = match version {
            Version::V2 => internet_checksum(&[packet]),
            Version::V3 => {
                let pseudo = pseudo_header(src, dst, IPPROTO_VRRP, len).ok_or(PacketError::BadIpHeader)?;
                internet_checksum(&[&pseudo, packet])
            }
        };
        if sum != 0 {
            return Err(PacketError::BadChecksum);
        }
        let addresses = packet[8..8 + width * count]
            .chunks_exact(width)
            .map(|c| match <[u8; 16]>::try_from(c) {
                Ok(b) => IpAddr::from(b),
                Err(_) => IpAddr::from([c[0], c[1], c[2], c[3]]),
            })
            .collect();
        let (interval_cs, auth_type, auth_data) = match version {
            Version::V2 => {
                let auth_data: [u8; 8] = packet[len - 8..].try_into().expect("8 bytes");
                (u16::from(packet[5]) * 100, packet[4], auth_data)
            }
            Version::V3 => (u16::from_be_bytes([packet[4], packet[5]]) & MAX_V3_INTERVAL_CS, AUTH_NONE, [0; 8]),
        };
        if interval_cs == 0 {
            return Err(PacketError::BadInterval);
        }
        Ok(Advert { version, vrid: packet[1], priority: packet[2], interval_cs, addresses, auth_type, auth_data })
    }
}

/// The fields of a received IP header that matter here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHeader {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv6: the hop limit.
    pub ttl: u8,
    /// IPv6: the next header.
    pub protocol: u8,
}

/// Splits a packet as a raw IPv4 socket receives it into its header and
/// payload (up to the header's total length).
pub fn parse_ipv4(packet: &[u8]) -> Result<(IpHeader, &[u8]), PacketError> {
    if packet.len() < 20 {
        return Err(PacketError::Truncated);
    }
    if packet[0] >> 4 != 4 {
        return Err(PacketError::BadIpHeader);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    if ihl < 20 || total < ihl {
        return Err(PacketError::BadIpHeader);
    }
    if packet.len() < total {
        return Err(PacketError::Truncated);
    }
    let header = IpHeader {
        ttl: packet[8],
        protocol: packet[9],
        src: IpAddr::from([packet[12], packet[13], packet[14], packet[15]]),
        dst: IpAddr::from([packet[16], packet[17], packet[18], packet[19]]),
    };
    Ok((header, &packet[ihl..total]))
}

/// Splits an IPv6 packet (as tcpdump shows it; a raw IPv6 socket gives the
/// payload alone) into its header and payload (up to the payload length).
/// An extension header is taken as the protocol: VRRP has none.
pub fn parse_ipv6(packet: &[u8]) -> Result<(IpHeader, &[u8]), PacketError> {
    if packet.len() < 40 {
        return Err(PacketError::Truncated);
    }
    if packet[0] >> 4 != 6 {
        return Err(PacketError::BadIpHeader);
    }
    let len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    if packet.len() < 40 + len {
        return Err(PacketError::Truncated);
    }
    let address = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&packet[at..at + 16]).expect("16 bytes"));
    let header = IpHeader { protocol: packet[6], ttl: packet[7], src: address(8), dst: address(24) };
    Ok((header, &packet[40..40 + len]))
}

/// [`parse_ipv4`] or [`parse_ipv6`], by the version in the first byte.
pub fn parse_ip(packet: &[u8]) -> Result<(IpHeader, &[u8]), PacketError> {
    match packet.first().map(|b| b >> 4) {
        None => Err(PacketError::Truncated),
        Some(6) => parse_ipv6(packet),
        Some(4) => parse_ipv4(packet),
        Some(_) => Err(PacketError::BadIpHeader),
    }
}

/// What this virtual router expects of the adverts it accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub version: Version,
    pub vrid: u8,
    /// Our virtual addresses, in any order, all of one family (that of
    /// the adverts).
    pub addresses: Vec<IpAddr>,
    /// Our advert interval (v2 adverts must match it).
    pub interval_cs: u16,
    /// v2: our password's 8 bytes (auth type 1), or none (type 0).
    pub auth: Option<[u8; 8]>,
    /// Unicast mode: the only senders accepted.
    pub peers: Vec<IpAddr>,
}

impl Expect {
    /// Every receive check of RFC 3768 §7.1 / RFC 5798 §7.1 on a packet
    /// with its IP header (as a raw IPv4 socket hands it over, or an IPv6
    /// one as tcpdump shows it): see [`Self::check`].
    pub fn check_packet(&self, packet: &[u8]) -> Result<(IpHeader, Advert), PacketError> {
        let (ip, payload) = parse_ip(packet)?;
        Ok((ip, self.check(&ip, payload)?))
    }

    /// Every receive check of RFC 3768 §7.1 / RFC 5798 §7.1 on the VRRP
    /// payload `payload` of a packet with header `ip`: protocol, TTL (hop
    /// limit), an IPv6 source on the link, version, type, length, checksum,
    /// VRID, v2 authentication and interval, addresses.
    ///
    /// Address lists must match, in any order, as keepalived requires;
    /// RFC 3768 lets the address owner's (priority 255) adverts through
    /// regardless. A v3 advert's interval may differ: the backup learns it.
    pub fn check(&self, ip: &IpHeader, payload: &[u8]) -> Result<Advert, PacketError> {
        if ip.protocol != IPPROTO_VRRP {
            return Err(PacketError::NotVrrp(ip.protocol));
        }
        if ip.ttl != VRRP_TTL {
            return Err(PacketError::BadTtl(ip.ttl));
        }
        if let IpAddr::V6(src) = ip.src
            && !is_link_local6(src)
        {
            return Err(PacketError::NotLinkLocal(src));
        }
        // The version before the checksum: a v3 checksum is not a v2 one.
        if let Some(&b) = payload.first()
            && b >> 4 != self.version.number()
        {
            return Err(PacketError::BadVersion(b >> 4));
        }
        let advert = Advert::decode(payload, ip.src, ip.dst)?;
        self.check_advert(ip, &advert)?;
        Ok(advert)
    }

    /// The checks past decoding.
    pub fn check_advert(&self, ip: &IpHeader, advert: &Advert) -> Result<(), PacketError> {
        if advert.version != self.version {
            return Err(PacketError::BadVersion(advert.version.number()));
        }
        if advert.vrid != self.vrid {
            return Err(PacketError::OtherVrid(advert.vrid));
        }
        if !self.peers.is_empty() && !self.peers.contains(&ip.src) {
            return Err(PacketError::UnknownPeer(ip.src));
        }
        if self.version == Version::V2 {
            let ours = if self.auth.is_some() { AUTH_SIMPLE } else { AUTH_NONE };
            if advert.auth_type != ours {
                return Err(PacketError::AuthTypeMismatch { ours, theirs: advert.auth_type });
            }
            if let Some(password) = self.auth
                && advert.auth_data != password
            {
                return Err(PacketError::AuthFailed);
            }
        }
        let same_addresses = advert.addresses.len() == self.addresses.len()
            && advert.addresses.iter().all(|a| self.addresses.contains(a));
        let owner_v2 = self.version == Version::V2 && advert.priority == PRIORITY_OWNER;
        if !same_addresses && !owner_v2 {
            return Err(PacketError::AddressMismatch);
        }
        if self.version == Version::V2 && advert.interval_cs != self.interval_cs {
            return Err(PacketError::IntervalMismatch { ours_cs: self.interval_cs, theirs_cs: advert.interval_cs });
        }
        Ok(())
    }
}

/// A gratuitous ARP as keepalived sends it: an ARP request from the
/// interface's MAC, sender and target IP both the virtual address, target
/// MAC ff:ff:ff:ff:ff:ff, to the Ethernet broadcast address. The Ethernet
/// frame, 42 bytes (the NIC pads it).
pub fn gratuitous_arp(mac: [u8; 6], vip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&vip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&vip.octets());
    f
}

/// ICMPv6 type of a neighbour advertisement (RFC 4861 §4.4).
pub const ICMPV6_NEIGHBOUR_ADVERT: u8 = 136;
/// Its flags (in the first byte after the checksum).
pub const NA_ROUTER: u8 = 0x80;
pub const NA_SOLICITED: u8 = 0x40;
pub const NA_OVERRIDE: u8 = 0x20;

/// An unsolicited neighbour advertisement (RFC 4861 §7.2.6), the IPv6
/// gratuitous ARP, as keepalived and the kernel send them: from the virtual
/// address to all nodes (ff02::1, Ethernet 33:33:00:00:00:01), hop limit
/// 255, target the virtual address, override set, solicited clear, router
/// as the interface forwards IPv6, a target link-layer address option with
/// the interface's MAC. The Ethernet frame, 86 bytes.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr, router: bool) -> [u8; 86] {
    let mut f = [0u8; 86];
    f[0..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    let ip = &mut f[14..54];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&32u16.to_be_bytes());
    ip[6] = 58; // ICMPv6
    ip[7] = 255;
    ip[8..24].copy_from_slice(&vip.octets());
    ip[24..40].copy_from_slice(&ALL_NODES6.octets());
    let icmp = &mut f[54..86];
    icmp[0] = ICMPV6_NEIGHBOUR_ADVERT;
    icmp[4] = NA_OVERRIDE | if router { NA_ROUTER } else { 0 };
    icmp[8..24].copy_from_slice(&vip.octets());
    icmp[24] = 2; // target link-layer address
    icmp[25] = 1; // 8 bytes
    icmp[26..32].copy_from_slice(&mac);
    let pseudo = pseudo_header(vip.into(), ALL_NODES6.into(), 58, 32).expect("IPv6");
    let sum = internet_checksum(&[&pseudo, &f[54..86]]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn unhex(text: &str) -> Vec<u8> {
        let digits: String = text.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..digits.len() / 2).map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).unwrap()).collect()
    }

    /// Non-comment lines of a fixture file: one hex packet each.
    fn fixture(name: &str) -> Vec<Vec<u8>> {
        let path = format!("{}/tests/fixtures/vrrp/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(unhex).collect()
    }

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 100, 4));
    const GROUP: IpAddr = IpAddr::V4(VRRP_GROUP);
    const VIP1: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 100, 1));
    const VIP2: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 16, 100, 2));

    fn v2_expect() -> Expect {
        Expect {
            version: Version::V2,
            vrid: 51,
            addresses: vec![VIP1],
            interval_cs: 100,
            auth: Some(simple_auth_data("secret")),
            peers: vec![],
        }
    }

    fn v3_expect() -> Expect {
        Expect {
            version: Version::V3,
            vrid: 52,
            addresses: vec![VIP2, VIP1],
            interval_cs: 50,
            auth: None,
            peers: vec![],
        }
    }

    #[test]
    fn checksum_of_rfc1071_example() {
        // RFC 1071 §3's example bytes sum to 0xddf2 (before the complement).
        assert_eq!(internet_checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]), !0xddf2);
        // An odd length pads with a zero byte.
        assert_eq!(internet_checksum(&[&[0x01]]), !0x0100);
    }

    /// A v2 advert laid out by hand from RFC 3768 §5.1: version 2 type 1,
    /// VRID 51, priority 100, one address, auth type 1, 1 s, checksum, the
    /// address, "secret" padded to 8 bytes; the checksum computed word by
    /// word below.
    #[test]
    fn v2_by_hand_from_the_rfc_layout() {
        let mut by_hand = vec![
            0x21, 51, 100, 1, // version 2, advertisement; VRID; priority; count
            1, 1, 0, 0, // auth type simple; 1 s; checksum (filled below)
            172, 16, 100, 1, // VIP
            b's', b'e', b'c', b'r', b'e', b't', 0, 0, // password, zero padded
        ];
        // One's complement sum of the 16-bit words, folded, complemented.
        let words: u32 = by_hand.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        let folded = (words & 0xffff) + (words >> 16);
        let sum = !(folded as u16);
        by_hand[6..8].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(sum, 0x2d6c, "the checksum keepalived put in the same advert");

        let advert = Advert {
            version: Version::V2,
            vrid: 51,
            priority: 100,
            interval_cs: 100,
            addresses: vec![VIP1],
            auth_type: AUTH_SIMPLE,
            auth_data: simple_auth_data("secret"),
        };
        assert_eq!(advert.encode(SRC, GROUP), by_hand);
        assert_eq!(Advert::decode(&by_hand, SRC, GROUP), Ok(advert));
    }

    /// A v3 advert laid out by hand from RFC 5798 §5.1, its checksum over the
    /// pseudo-header (§5.2.8) computed word by word.
    #[test]
    fn v3_by_hand_from_the_rfc_layout() {
        let mut by_hand = vec![
            0x31, 52, 150, 2, // version 3, advertisement; VRID; priority; count
            0x00, 50, 0, 0, // reserved + max advert interval 50 cs; checksum
            172, 16, 100, 1, 172, 16, 100, 2,
        ];
        let pseudo = [172, 16, 100, 4, 224, 0, 0, 18, 0, 112, 0, 16];
        let words: u32 =
            pseudo.chunks(2).chain(by_hand.chunks(2)).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        let mut folded = words;
        while folded >> 16 != 0 {
            folded = (folded & 0xffff) + (folded >> 16);
        }
        by_hand[6..8].copy_from_slice(&(!(folded as u16)).to_be_bytes());
        assert_eq!(&by_hand[6..8], &[0x27, 0xca], "the checksum keepalived put in the same advert");

        let advert = Advert {
            version: Version::V3,
            vrid: 52,
            priority: 150,
            interval_cs: 50,
            addresses: vec![VIP1, VIP2],
            auth_type: AUTH_NONE,
            auth_data: [0; 8],
        };
        assert_eq!(advert.encode(SRC, GROUP), by_hand);
        assert_eq!(Advert::decode(&by_hand, SRC, GROUP), Ok(advert));
        // The pseudo-header matters: another source fails the checksum.
        assert_eq!(Advert::decode(&by_hand, [172, 16, 100, 5].into(), GROUP), Err(PacketError::BadChecksum));
    }

    /// Adverts keepalived 2.2.7 sent (captured with tcpdump, IP header
    /// included): they pass every check, and encoding what was decoded gives
    /// the same bytes back.
    #[test]
    fn keepalived_v2_adverts() {
        let packets = fixture("keepalived-v2-auth.hex");
        assert_eq!(packets.len(), 2);
        let expect = v2_expect();
        for (packet, priority) in packets.iter().zip([100, 0]) {
            let (ip, advert) = expect.check_packet(packet).unwrap();
            assert_eq!((ip.src, ip.dst, ip.ttl), (SRC, GROUP, 255));
            assert_eq!(advert.priority, priority);
            assert_eq!((advert.vrid, advert.interval_cs, advert.auth_type), (51, 100, AUTH_SIMPLE));
            assert_eq!(advert.addresses, [VIP1]);
            assert_eq!(&advert.auth_data, b"secret\0\0");
            assert_eq!(advert.encode(ip.src, ip.dst), packet[20..]);
        }
        // The wrong password, no password, another interval, a v3 instance.
        let mut other = v2_expect();
        other.auth = Some(simple_auth_data("secreT"));
        assert_eq!(other.check_packet(&packets[0]).unwrap_err(), PacketError::AuthFailed);
        other.auth = None;
        assert_eq!(other.check_packet(&packets[0]).unwrap_err(), PacketError::AuthTypeMismatch { ours: 0, theirs: 1 });
        let mut other = v2_expect();
        other.interval_cs = 200;
        assert_eq!(
            other.check_packet(&packets[0]).unwrap_err(),
            PacketError::IntervalMismatch { ours_cs: 200, theirs_cs: 100 }
        );
        let mut other = v2_expect();
        other.version = Version::V3;
        assert_eq!(other.check_packet(&packets[0]).unwrap_err(), PacketError::BadVersion(2));
    }

    #[test]
    fn keepalived_v3_adverts() {
        let packets = fixture("keepalived-v3.hex");
        assert_eq!(packets.len(), 2);
        for (packet, priority) in packets.iter().zip([150, 0]) {
            let (ip, advert) = v3_expect().check_packet(packet).unwrap();
            assert_eq!(advert.priority, priority);
            assert_eq!((advert.vrid, advert.interval_cs), (52, 50));
            assert_eq!(advert.addresses, [VIP1, VIP2]);
            assert_eq!(advert.encode(ip.src, ip.dst), packet[20..]);
        }
        let mut other = v3_expect();
        other.addresses.pop();
        assert_eq!(other.check_packet(&packets[0]).unwrap_err(), PacketError::AddressMismatch);
        // v3 intervals may differ (the backup learns the master's).
        let mut other = v3_expect();
        other.interval_cs = 100;
        assert!(other.check_packet(&packets[0]).is_ok());
        let mut other = v3_expect();
        other.vrid = 9;
        let e = other.check_packet(&packets[0]).unwrap_err();
        assert_eq!(e, PacketError::OtherVrid(52));
        assert!(!e.is_bad());
        let mut other = v3_expect();
        other.peers = vec![[172, 16, 100, 9].into()];
        assert_eq!(other.check_packet(&packets[0]).unwrap_err(), PacketError::UnknownPeer(SRC));
        other.peers.push(SRC);
        assert!(other.check_packet(&packets[0]).is_ok());
    }

    #[test]
    fn keepalived_gratuitous_arp() {
        let frames = fixture("keepalived-garp.hex");
        // The fixture holds the ARP payload (28 bytes) tcpdump showed, after
        // an Ethernet header to ff:ff:ff:ff:ff:ff from the interface's MAC.
        let mac = [0x6e, 0x2e, 0x10, 0x56, 0x30, 0x21];
        assert_eq!(frames[0], gratuitous_arp(mac, Ipv4Addr::new(172, 16, 100, 1)));
        assert_eq!(frames[1], gratuitous_arp(mac, Ipv4Addr::new(172, 16, 100, 2)));
    }

    #[test]
    fn bad_packets_are_refused() {
        let good = &fixture("keepalived-v3.hex")[0];
        let expect = v3_expect();
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            f(&mut p);
            expect.check_packet(&p).unwrap_err()
        };
        assert_eq!(with(&|p| p[8] = 64), PacketError::BadTtl(64));
        assert_eq!(with(&|p| p[9] = 6), PacketError::NotVrrp(6));
        assert_eq!(with(&|p| p[20] = 0x21), PacketError::BadVersion(2));
        assert_eq!(with(&|p| p[20] = 0x41), PacketError::BadVersion(4));
        assert_eq!(with(&|p| p[22] = 151), PacketError::BadChecksum);
        assert_eq!(with(&|p| p[20] = 0x32), PacketError::BadType(2));
        // Count says 3 addresses, the packet holds 2.
        assert_eq!(with(&|p| p[23] = 3), PacketError::Truncated);
        // IP total length beyond what arrived.
        assert_eq!(with(&|p| p.truncate(30)), PacketError::Truncated);
        assert_eq!(with(&|p| p[0] = 0x55), PacketError::BadIpHeader);
        // Taken as IPv6: shorter than its header.
        assert_eq!(with(&|p| p[0] = 0x65), PacketError::Truncated);
        assert_eq!(expect.check_packet(&good[..12]).unwrap_err(), PacketError::Truncated);
        for e in [PacketError::BadTtl(1), PacketError::BadChecksum, PacketError::AuthFailed] {
            assert!(e.is_bad());
        }
    }

    #[test]
    fn v2_owner_adverts_pass_with_other_addresses() {
        let expect = v2_expect();
        let advert = |priority| Advert {
            version: Version::V2,
            vrid: 51,
            priority,
            interval_cs: 100,
            addresses: vec![VIP2],
            auth_type: AUTH_SIMPLE,
            auth_data: simple_auth_data("secret"),
        };
        let ip = IpHeader { src: SRC, dst: GROUP, ttl: 255, protocol: IPPROTO_VRRP };
        assert_eq!(expect.check_advert(&ip, &advert(100)), Err(PacketError::AddressMismatch));
        assert_eq!(expect.check_advert(&ip, &advert(255)), Ok(()));
    }

    const LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x6c2e, 0x10ff, 0xfe56, 0x3021);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

    fn v6_expect() -> Expect {
        Expect {
            version: Version::V3,
            vrid: 61,
            addresses: vec![VIP6.into()],
            interval_cs: 100,
            auth: None,
            peers: vec![],
        }
    }

    /// A VRRPv3 advert over IPv6 laid out by hand (RFC 5798 §5.1), its
    /// checksum over the IPv6 pseudo-header (RFC 8200 §8.1: source,
    /// destination, 32-bit length, three zeros, next header 112) computed
    /// word by word; then the same in an IPv6 packet as tcpdump shows it.
    fn v6_by_hand() -> Vec<u8> {
        let mut vrrp = vec![0x31, 61, 150, 1, 0x00, 100, 0, 0];
        vrrp.extend_from_slice(&VIP6.octets());
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&LL.octets());
        pseudo.extend_from_slice(&VRRP_GROUP6.octets());
        pseudo.extend_from_slice(&[0, 0, 0, 24, 0, 0, 0, 112]);
        let words: u32 =
            pseudo.chunks(2).chain(vrrp.chunks(2)).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
        let mut folded = words;
        while folded >> 16 != 0 {
            folded = (folded & 0xffff) + (folded >> 16);
        }
        vrrp[6..8].copy_from_slice(&(!(folded as u16)).to_be_bytes());
        vrrp
    }

    fn v6_packet(vrrp: &[u8], hop_limit: u8) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(vrrp.len() as u16).to_be_bytes());
        p.extend_from_slice(&[112, hop_limit]);
        p.extend_from_slice(&LL.octets());
        p.extend_from_slice(&VRRP_GROUP6.octets());
        p.extend_from_slice(vrrp);
        p
    }

    #[test]
    fn v3_over_ipv6_by_hand() {
        let by_hand = v6_by_hand();
        let advert = Advert {
            version: Version::V3,
            vrid: 61,
            priority: 150,
            interval_cs: 100,
            addresses: vec![VIP6.into()],
            auth_type: AUTH_NONE,
            auth_data: [0; 8],
        };
        assert_eq!(advert.encode(LL.into(), VRRP_GROUP6.into()), by_hand);
        assert_eq!(Advert::decode(&by_hand, LL.into(), VRRP_GROUP6.into()), Ok(advert.clone()));
        let (ip, checked) = v6_expect().check_packet(&v6_packet(&by_hand, 255)).unwrap();
        assert_eq!(checked, advert);
        assert_eq!((ip.src, ip.dst, ip.ttl), (LL.into(), VRRP_GROUP6.into(), 255));
        // The live path: the header from the ancillary data, the payload.
        assert_eq!(v6_expect().check(&ip, &by_hand), Ok(advert));
        // Another source or destination fails the checksum.
        let other = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);
        assert_eq!(Advert::decode(&by_hand, other.into(), VRRP_GROUP6.into()), Err(PacketError::BadChecksum));
        assert_eq!(Advert::decode(&by_hand, LL.into(), ALL_NODES6.into()), Err(PacketError::BadChecksum));
    }

    #[test]
    fn bad_ipv6_adverts_are_refused() {
        let good = v6_by_hand();
        let expect = v6_expect();
        let ip = IpHeader { src: LL.into(), dst: VRRP_GROUP6.into(), ttl: 255, protocol: IPPROTO_VRRP };
        let with = |ip: IpHeader, f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            f(&mut p);
            expect.check(&ip, &p).unwrap_err()
        };
        let none = |_: &mut Vec<u8>| {};
        // RFC 5798 §7.1: hop limit 255; §5.1.2.1: a link-local source.
        assert_eq!(with(IpHeader { ttl: 254, ..ip }, &none), PacketError::BadTtl(254));
        let global = VIP6;
        assert_eq!(with(IpHeader { src: global.into(), ..ip }, &none), PacketError::NotLinkLocal(global));
        assert_eq!(with(IpHeader { protocol: 0, ..ip }, &none), PacketError::NotVrrp(0));
        // A hop-by-hop header first is not VRRP either.
        assert_eq!(expect.check_packet(&v6_packet(&good, 255)).map(|_| ()), Ok(()));
        let mut hop_by_hop = v6_packet(&good, 255);
        hop_by_hop[6] = 0;
        assert_eq!(expect.check_packet(&hop_by_hop).unwrap_err(), PacketError::NotVrrp(0));
        assert_eq!(expect.check_packet(&v6_packet(&good, 1)).unwrap_err(), PacketError::BadTtl(1));
        // VRRPv2 has no IPv6 form.
        assert_eq!(with(ip, &|p| p[0] = 0x21), PacketError::BadVersion(2));
        let mut v2 = v6_expect();
        v2.version = Version::V2;
        assert_eq!(v2.check(&ip, &good).unwrap_err(), PacketError::BadVersion(3));
        assert_eq!(with(ip, &|p| p[0] = 0x32), PacketError::BadType(2));
        assert_eq!(with(ip, &|p| p[2] = 151), PacketError::BadChecksum);
        // Count 2, one address there; a v4-sized address list is short too.
        assert_eq!(with(ip, &|p| p[3] = 2), PacketError::Truncated);
        assert_eq!(with(ip, &|p| p.truncate(20)), PacketError::Truncated);
        assert_eq!(with(ip, &|p| p.truncate(7)), PacketError::Truncated);
        // Payload length beyond what arrived; a short header.
        let mut long = v6_packet(&good, 255);
        long[5] += 1;
        assert_eq!(expect.check_packet(&long).unwrap_err(), PacketError::Truncated);
        assert_eq!(expect.check_packet(&long[..39]).unwrap_err(), PacketError::Truncated);
        // Mixed families in a header: refused before any checksum.
        let mixed = IpHeader { dst: VRRP_GROUP.into(), ..ip };
        assert_eq!(with(mixed, &none), PacketError::BadIpHeader);
        // Other addresses, another VRID; an IPv4 instance's addresses.
        let mut other = v6_expect();
        other.addresses = vec![Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x101).into()];
        assert_eq!(other.check(&ip, &good).unwrap_err(), PacketError::AddressMismatch);
        other.addresses = vec![VIP1];
        assert_eq!(other.check(&ip, &good).unwrap_err(), PacketError::AddressMismatch);
        other = v6_expect();
        other.vrid = 62;
        assert_eq!(other.check(&ip, &good).unwrap_err(), PacketError::OtherVrid(61));
        // An IPv4 packet to an IPv6 instance: its addresses are IPv4 ones.
        let v4 = &fixture("keepalived-v3.hex")[0];
        let mut v6_vrid52 = v6_expect();
        v6_vrid52.vrid = 52;
        assert_eq!(v6_vrid52.check_packet(v4).unwrap_err(), PacketError::AddressMismatch);
    }

    /// An advert keepalived 2.2.7 sent for an IPv6 `virtual_ipaddress`
    /// (VRRPv3 over IPv6, captured with tcpdump): the same bytes as ours by
    /// hand, it passes every check, and encodes back.
    #[test]
    fn keepalived_v3_ipv6_advert() {
        let packets = fixture("keepalived-v3-ipv6.hex");
        let (ip, advert) = v6_expect().check_packet(&packets[0]).unwrap();
        assert_eq!((ip.src, ip.dst, ip.ttl), (LL.into(), VRRP_GROUP6.into(), 255));
        assert_eq!((advert.vrid, advert.priority, advert.interval_cs), (61, 150, 100));
        assert_eq!(advert.addresses, [IpAddr::V6(VIP6)]);
        assert_eq!(packets[0][40..], v6_by_hand());
        assert_eq!(advert.encode(ip.src, ip.dst), packets[0][40..]);
    }

    /// keepalived's unsolicited NA, byte for byte ours.
    #[test]
    fn keepalived_neighbour_advertisement() {
        let frames = fixture("keepalived-na.hex");
        assert_eq!(frames[0], unsolicited_na([0x6e, 0x2e, 0x10, 0x56, 0x30, 0x21], VIP6, false));
    }

    /// An unsolicited neighbour advertisement laid out by hand from RFC
    /// 4861 §4.4 and checked against the ICMPv6 checksum.
    #[test]
    fn unsolicited_neighbour_advertisement() {
        let mac = [0x6e, 0x2e, 0x10, 0x56, 0x30, 0x21];
        let f = unsolicited_na(mac, VIP6, false);
        assert_eq!(&f[0..14], &[0x33, 0x33, 0, 0, 0, 1, 0x6e, 0x2e, 0x10, 0x56, 0x30, 0x21, 0x86, 0xdd]);
        let (ip, icmp) = parse_ipv6(&f[14..]).unwrap();
        assert_eq!((ip.src, ip.dst, ip.ttl, ip.protocol), (VIP6.into(), ALL_NODES6.into(), 255, 58));
        assert_eq!(icmp.len(), 32);
        assert_eq!(&icmp[0..2], &[136, 0], "neighbour advertisement, code 0");
        assert_eq!(&icmp[4..8], &[0x20, 0, 0, 0], "override; not solicited, not a router");
        assert_eq!(&icmp[8..24], &VIP6.octets(), "target");
        assert_eq!(&icmp[24..32], &[2, 1, 0x6e, 0x2e, 0x10, 0x56, 0x30, 0x21], "target link-layer address");
        // The checksum verifies: the sum over pseudo-header and message is 0.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&VIP6.octets());
        pseudo.extend_from_slice(&ALL_NODES6.octets());
        pseudo.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, 58]);
        assert_eq!(internet_checksum(&[&pseudo, icmp]), 0);
        assert_ne!(&icmp[2..4], &[0, 0]);
        let r = unsolicited_na(mac, VIP6, true);
        assert_eq!(r[54 + 4], 0xa0, "router and override");
        assert_eq!(internet_checksum(&[&pseudo, &r[54..]]), 0);
    }

    #[test]
    fn round_trips() {
        for version in [Version::V2, Version::V3] {
            for count in [0usize, 1, 7, 255] {
                let advert = Advert {
                    version,
                    vrid: 200,
                    priority: 254,
                    interval_cs: if version == Version::V2 { 25_500 } else { MAX_V3_INTERVAL_CS },
                    addresses: (0..count).map(|i| Ipv4Addr::from(0x0a00_0000 + i as u32).into()).collect(),
                    auth_type: AUTH_NONE,
                    auth_data: [0; 8],
                };
                let dst = IpAddr::from([10, 0, 0, 1]);
                let bytes = advert.encode(SRC, dst);
                assert_eq!(Advert::decode(&bytes, SRC, dst), Ok(advert));
            }
        }
        for count in [0usize, 1, 7, 255] {
            let advert = Advert {
                version: Version::V3,
                vrid: 1,
                priority: 1,
                interval_cs: 1,
                addresses: (0..count).map(|i| Ipv6Addr::from(0x2001_0db8_u128 << 96 | i as u128).into()).collect(),
                auth_type: AUTH_NONE,
                auth_data: [0; 8],
            };
            let bytes = advert.encode(LL.into(), VRRP_GROUP6.into());
            assert_eq!(bytes.len(), 8 + 16 * count);
            assert_eq!(Advert::decode(&bytes, LL.into(), VRRP_GROUP6.into()), Ok(advert));
        }
    }
}
