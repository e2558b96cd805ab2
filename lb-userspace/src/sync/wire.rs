//! The sync datagram, version 2. All integers big-endian.
//!
//! ```text
//! Datagram: header (28 bytes) | records | HMAC-SHA256 (32 bytes, if flagged)
//!
//! Header
//!  off len field
//!   0   2  magic "LS" (0x4c 0x53)
//!   2   1  version: 2 (a receiver drops other versions whole)
//!   3   1  flags: bit 0 = an HMAC-SHA256 trailer follows the records; others 0
//!   4   1  sync ID (0..=255; a receiver with sync ID 0 takes any)
//!   5   1  reserved, 0
//!   6   2  count: records in this datagram
//!   8   2  size: bytes of the whole datagram, header and trailer included
//!  10   2  reserved, 0
//!  12   4  origin: the sender's IPv4 address, the datagram's source address
//!          (a receiver drops a datagram whose source differs)
//!  16   8  boot ID: milliseconds since the Unix epoch when the sender
//!          started, times 65536, plus 16 random bits; a later start of the
//!          same sender has a larger boot ID
//!  24   4  sequence: per datagram, from 1; never wraps (the sender takes a
//!          new, larger boot ID first)
//!
//! Record (4-byte aligned; 36 bytes for IPv4, 72 for IPv6, 4 more with a mark)
//!  off len field
//!   0   1  type: 1 connection, 2 persistence template (others: skipped)
//!   1   1  length: bytes of this record (a receiver skips bytes past the
//!          fields it knows, and unknown types, by this length)
//!   2   1  protocol: 6 TCP, 17 UDP (a firewall-mark template: 0, IPVS's
//!          IPPROTO_IP)
//!   3   1  state: lb_common::conn_state number (templates: 12 NONE, 13 ASSURED)
//!   4   1  family of the client and VIP addresses: 2 IPv4, 10 IPv6
//!   5   1  family of the real server's address: 2 IPv4, 10 IPv6
//!   6   2  service port: the virtual service's port (0: an every-port
//!          service, or a firewall-mark service)
//!   8   2  client port (templates: 0)
//!  10   2  VIP port: the connection's destination port (templates: the
//!          service port)
//!  12   2  real server port (0: the packet's own destination port)
//!  14   2  flags: bit 0 = the firewall mark follows the addresses; others
//!          reserved, 0 (a receiver ignores them)
//!  16   4  timeout: seconds the entry lives after its last packet
//!  20   4  idle: milliseconds since its last packet, when sent
//!  24   a  client address (templates: under the persistence netmask); a = 4 | 16
//!   .   a  VIP (a firewall-mark template: the mark in the first 4 bytes,
//!          the rest 0, as IPVS's `ip_vs_sched_persist` keys it)
//!   .   r  real server address; r = 4 | 16
//!   .   4  firewall mark, if flagged: the record is of that mark's service
//!          (IPVS's sync v1 carries `fwmark` in every record)
//!
//! HMAC-SHA256 (keyed with `sync.key`) over every byte before it.
//! ```
//!
//! This file builds and parses datagrams; [`super::accept`] decides which
//! to take (peers, origin, replays) and [`super::check`] which records to
//! install. The backup finds the real server in its own tables by the
//! service key (protocol, VIP, service port) and the real server's address
//! and port, so the two directors' internal ids never need to agree.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::Range,
};

use ring::hmac;

pub const MAGIC: [u8; 2] = *b"LS";
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 28;
pub const MAC_LEN: usize = 32;
pub const FLAG_MAC: u8 = 1;
pub const RECORD_CONNECTION: u8 = 1;
pub const RECORD_TEMPLATE: u8 = 2;
/// A record's flags: its firewall mark follows the addresses.
pub const RECORD_FLAG_FWMARK: u16 = 1;
/// The fixed part of a record, before the addresses.
pub const RECORD_FIXED_LEN: usize = 24;
/// The largest record: IPv6 everywhere, and a mark.
pub const MAX_RECORD_LEN: usize = RECORD_FIXED_LEN + 3 * 16 + 4;
/// IPVS's default sync_maxlen: a 1500-byte MTU less IP and UDP headers.
pub const DEFAULT_MAX_LEN: usize = 1472;
/// The largest UDP payload.
pub const MAX_MAX_LEN: usize = 65_507;
/// The smallest datagram size that holds any one record with a MAC.
pub const MIN_MAX_LEN: usize = HEADER_LEN + MAX_RECORD_LEN + MAC_LEN;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    Connection,
    /// A persistence template (`flow_kind::TEMPLATE`).
    Template,
}

/// One connection-table entry as the directors exchange it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SyncRecord {
    pub kind: RecordKind,
    pub protocol: u8,
    pub state: u8,
    /// The client (templates: the masked client address, port 0).
    pub client: SocketAddr,
    /// The VIP and the connection's destination port.
    pub vip: SocketAddr,
    /// The virtual service's port (0 for an every-port service and a
    /// firewall-mark service).
    pub service_port: u16,
    /// The firewall-mark service's mark; 0: a service named by its VIP
    /// and port.
    pub fwmark: u32,
    /// The real server (port 0: the packet's own destination port).
    pub real: SocketAddr,
    /// Seconds the entry lives after its last packet.
    pub timeout: u32,
    /// Milliseconds since its last packet when it was sent.
    pub idle_ms: u32,
}

fn family(ip: IpAddr) -> u8 {
    if ip.is_ipv4() { AF_INET } else { AF_INET6 }
}

fn put_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

impl SyncRecord {
    /// Bytes on the wire; `None` if the client and VIP families differ.
    pub fn encoded_len(&self) -> Option<usize> {
        if self.client.is_ipv4() != self.vip.is_ipv4() {
            return None;
        }
        let a = if self.client.is_ipv4() { 4 } else { 16 };
        let r = if self.real.is_ipv4() { 4 } else { 16 };
        let mark = if self.fwmark != 0 { 4 } else { 0 };
        Some(RECORD_FIXED_LEN + 2 * a + r + mark)
    }

    /// Appends the record; `false` (nothing written) if it cannot be encoded.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> bool {
        let Some(len) = self.encoded_len() else { return false };
        out.push(match self.kind {
            RecordKind::Connection => RECORD_CONNECTION,
            RecordKind::Template => RECORD_TEMPLATE,
        });
        out.push(len as u8);
        out.push(self.protocol);
        out.push(self.state);
        out.push(family(self.client.ip()));
        out.push(family(self.real.ip()));
        out.extend_from_slice(&self.service_port.to_be_bytes());
        out.extend_from_slice(&self.client.port().to_be_bytes());
        out.extend_from_slice(&self.vip.port().to_be_bytes());
        out.extend_from_slice(&self.real.port().to_be_bytes());
        let flags = if self.fwmark != 0 { RECORD_FLAG_FWMARK } else { 0 };
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&self.timeout.to_be_bytes());
        out.extend_from_slice(&self.idle_ms.to_be_bytes());
        put_ip(out, self.client.ip());
        put_ip(out, self.vip.ip());
        put_ip(out, self.real.ip());
        if self.fwmark != 0 {
            out.extend_from_slice(&self.fwmark.to_be_bytes());
        }
        true
    }

    /// Parses one record of a known type from `bytes` (exactly its length).
    fn decode(kind: RecordKind, bytes: &[u8]) -> Result<Self, SyncError> {
        if bytes.len() < RECORD_FIXED_LEN {
            return Err(SyncError::BadRecord);
        }
        let alen = |f: u8| match f {
            AF_INET => Ok(4),
            AF_INET6 => Ok(16),
            _ => Err(SyncError::BadRecord),
        };
        let (a, r) = (alen(bytes[4])?, alen(bytes[5])?);
        let u16_at = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let marked = u16_at(14) & RECORD_FLAG_FWMARK != 0;
        let addresses_end = RECORD_FIXED_LEN + 2 * a + r;
        if bytes.len() < addresses_end + if marked { 4 } else { 0 } {
            return Err(SyncError::BadRecord);
        }
        let u32_at = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        let ip_at = |i: usize, len: usize| -> IpAddr {
            if len == 4 {
                IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&bytes[i..i + 4]).expect("4 bytes")))
            } else {
                IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[i..i + 16]).expect("16 bytes")))
            }
        };
        let base = RECORD_FIXED_LEN;
        Ok(Self {
            kind,
            protocol: bytes[2],
            state: bytes[3],
            service_port: u16_at(6),
            fwmark: if marked { u32_at(addresses_end) } else { 0 },
            client: SocketAddr::new(ip_at(base, a), u16_at(8)),
            vip: SocketAddr::new(ip_at(base + a, a), u16_at(10)),
            real: SocketAddr::new(ip_at(base + 2 * a, r), u16_at(12)),
            timeout: u32_at(16),
            idle_ms: u32_at(20),
        })
    }
}

/// A datagram's header fields that vary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub sync_id: u8,
    /// The sender's address, as it says (authenticated with a key).
    pub origin: Ipv4Addr,
    pub boot_id: u64,
    pub sequence: u32,
}

/// Why a datagram was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncError {
    Truncated,
    BadMagic,
    UnknownVersion(u8),
    /// The size field is not the datagram's length.
    BadSize,
    WrongSyncId {
        ours: u8,
        theirs: u8,
    },
    /// We have a key, the datagram has no MAC.
    MissingMac,
    /// The datagram has a MAC and we have no key (the two configs differ).
    UnexpectedMac,
    BadMac,
    /// A record too short for its fields or with an unknown family.
    BadRecord,
    /// Fewer records than the count says, or bytes past the last one.
    CountMismatch,
    /// Not from a configured peer (or not IPv4).
    UnknownPeer(IpAddr),
    /// The header's origin is not the datagram's source address: with a
    /// key, a datagram replayed from another address.
    WrongOrigin {
        origin: Ipv4Addr,
        source: IpAddr,
    },
    /// Seen already, or too far behind the newest of its boot.
    Replay,
    /// From a boot of its sender older than one already accepted: a replay
    /// (or the sender's clock went back across its restart).
    OldBoot,
}

impl SyncError {
    /// The counter this refusal is counted under (`sync_rejected_<name>`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Truncated | Self::BadMagic | Self::BadSize | Self::BadRecord | Self::CountMismatch => "malformed",
            Self::UnknownVersion(_) => "version",
            Self::WrongSyncId { .. } => "sync_id",
            Self::MissingMac => "missing_mac",
            Self::UnexpectedMac => "unexpected_mac",
            Self::BadMac => "bad_mac",
            Self::UnknownPeer(_) => "not_peer",
            Self::WrongOrigin { .. } => "wrong_origin",
            Self::Replay => "replay",
            Self::OldBoot => "old_boot",
        }
    }
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("truncated datagram"),
            Self::BadMagic => f.write_str("not a sync datagram"),
            Self::UnknownVersion(v) => write!(f, "unknown sync version {v} (ours is {VERSION})"),
            Self::BadSize => f.write_str("size field does not match the datagram"),
            Self::WrongSyncId { ours, theirs } => write!(f, "sync ID {theirs}, ours is {ours}"),
            Self::MissingMac => f.write_str("no MAC, and a key is configured"),
            Self::UnexpectedMac => f.write_str("a MAC, and no key is configured"),
            Self::BadMac => f.write_str("bad MAC (another key?)"),
            Self::BadRecord => f.write_str("malformed record"),
            Self::CountMismatch => f.write_str("record count does not match"),
            Self::UnknownPeer(a) => write!(f, "{a} is not a sync peer"),
            Self::WrongOrigin { origin, source } => write!(f, "says it is from {origin}, comes from {source}"),
            Self::Replay => f.write_str("replayed or duplicate datagram"),
            Self::OldBoot => f.write_str("from an older boot of its sender (a replay, or its clock went back)"),
        }
    }
}

impl std::error::Error for SyncError {}

/// One datagram and the records it carries (indices into what was encoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub bytes: Vec<u8>,
    pub records: Range<usize>,
}

/// Builds datagrams: a sender's sync ID, key, address, boot ID and sequence.
pub struct Encoder {
    sync_id: u8,
    max_len: usize,
    key: Option<hmac::Key>,
    origin: Ipv4Addr,
    boot_id: u64,
    sequence: u32,
}

impl Encoder {
    /// `max_len` is clamped to [`MIN_MAX_LEN`]..=[`MAX_MAX_LEN`]; `origin`
    /// is the address the datagrams leave from.
    pub fn new(sync_id: u8, max_len: usize, key: Option<&[u8]>, origin: Ipv4Addr, boot_id: u64) -> Self {
        Self {
            sync_id,
            max_len: max_len.clamp(MIN_MAX_LEN, MAX_MAX_LEN),
            key: key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
            origin,
            boot_id,
            sequence: 0,
        }
    }

    /// A boot ID for a sender starting now: the time in milliseconds, times
    /// 65536, plus 16 random bits, so a later start has a larger one. Above
    /// `previous` in any case.
    pub fn new_boot_id(previous: Option<u64>) -> u64 {
        use ring::rand::SecureRandom as _;
        let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        let mut bytes = [0u8; 2];
        if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
            bytes = (std::process::id() as u16).to_be_bytes();
        }
        let id = ((millis as u64) << 16) | u64::from(u16::from_be_bytes(bytes));
        match previous {
            Some(p) if p >= id => p + 1,
            _ => id,
        }
    }

    pub fn header(&self) -> Header {
        Header { sync_id: self.sync_id, origin: self.origin, boot_id: self.boot_id, sequence: self.sequence }
    }

    /// Packs `records` into as few datagrams as fit `max_len`, in order.
    /// Records that cannot be encoded (client and VIP of different
    /// families) are left out.
    pub fn encode(&mut self, records: &[SyncRecord]) -> Vec<Vec<u8>> {
        self.encode_spans(records).into_iter().map(|d| d.bytes).collect()
    }

    /// As [`Encoder::encode`], with the records each datagram carries.
    pub fn encode_spans(&mut self, records: &[SyncRecord]) -> Vec<Datagram> {
        let trailer = if self.key.is_some() { MAC_LEN } else { 0 };
        let mut datagrams = Vec::new();
        let mut body = Vec::with_capacity(self.max_len);
        let mut count = 0u16;
        let mut first = 0;
        for (i, r) in records.iter().enumerate() {
            let Some(len) = r.encoded_len() else { continue };
            if HEADER_LEN + body.len() + len + trailer > self.max_len || count == u16::MAX {
                datagrams.push(Datagram { bytes: self.finish(&body, count), records: first..i });
                body.clear();
                count = 0;
                first = i;
            }
            r.encode_into(&mut body);
            count += 1;
        }
        if count > 0 {
            datagrams.push(Datagram { bytes: self.finish(&body, count), records: first..records.len() });
        }
        datagrams
    }

    fn finish(&mut self, body: &[u8], count: u16) -> Vec<u8> {
        if self.sequence == u32::MAX {
            // A sequence never wraps (a receiver would take the old numbers
            // as replays): a new boot starts from 1.
            self.boot_id = Self::new_boot_id(Some(self.boot_id));
            self.sequence = 0;
        }
        self.sequence += 1;
        let trailer = if self.key.is_some() { MAC_LEN } else { 0 };
        let size = HEADER_LEN + body.len() + trailer;
        let mut d = Vec::with_capacity(size);
        d.extend_from_slice(&MAGIC);
        d.push(VERSION);
        d.push(if self.key.is_some() { FLAG_MAC } else { 0 });
        d.push(self.sync_id);
        d.push(0);
        d.extend_from_slice(&count.to_be_bytes());
        d.extend_from_slice(&(size as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&self.origin.octets());
        d.extend_from_slice(&self.boot_id.to_be_bytes());
        d.extend_from_slice(&self.sequence.to_be_bytes());
        d.extend_from_slice(body);
        if let Some(key) = &self.key {
            let tag = hmac::sign(key, &d);
            d.extend_from_slice(tag.as_ref());
        }
        d
    }
}

/// Parses and authenticates one datagram (stateless: no peer, origin or
/// replay check; see [`super::accept::Acceptor`]). `sync_id` 0 takes any
/// sync ID. The checks of IPVS's `ip_vs_process_message` (size, sync ID,
/// version) and of `ip_vs_proc_sync_conn` (record lengths, families), and
/// the MAC before any field is trusted.
pub fn decode(datagram: &[u8], sync_id: u8, key: Option<&hmac::Key>) -> Result<(Header, Vec<SyncRecord>), SyncError> {
    if datagram.len() < HEADER_LEN {
        return Err(SyncError::Truncated);
    }
    if datagram[0..2] != MAGIC {
        return Err(SyncError::BadMagic);
    }
    if datagram[2] != VERSION {
        return Err(SyncError::UnknownVersion(datagram[2]));
    }
    let flags = datagram[3];
    let size = usize::from(u16::from_be_bytes([datagram[8], datagram[9]]));
    if size != datagram.len() {
        return Err(if size > datagram.len() { SyncError::Truncated } else { SyncError::BadSize });
    }
    let has_mac = flags & FLAG_MAC != 0;
    let body_end = match (has_mac, key) {
        (true, Some(key)) => {
            if size < HEADER_LEN + MAC_LEN {
                return Err(SyncError::Truncated);
            }
            let end = size - MAC_LEN;
            hmac::verify(key, &datagram[..end], &datagram[end..]).map_err(|_| SyncError::BadMac)?;
            end
        }
        (false, Some(_)) => return Err(SyncError::MissingMac),
        (true, None) => return Err(SyncError::UnexpectedMac),
        (false, None) => size,
    };
    // Only authenticated fields from here on.
    let theirs = datagram[4];
    if sync_id != 0 && theirs != sync_id {
        return Err(SyncError::WrongSyncId { ours: sync_id, theirs });
    }
    let count = usize::from(u16::from_be_bytes([datagram[6], datagram[7]]));
    let header = Header {
        sync_id: theirs,
        origin: Ipv4Addr::from(<[u8; 4]>::try_from(&datagram[12..16]).expect("4 bytes")),
        boot_id: u64::from_be_bytes(datagram[16..24].try_into().expect("8 bytes")),
        sequence: u32::from_be_bytes(datagram[24..28].try_into().expect("4 bytes")),
    };
    // The count cannot make us allocate more than the datagram can hold.
    let mut records = Vec::with_capacity(count.min((body_end - HEADER_LEN) / RECORD_FIXED_LEN));
    let mut at = HEADER_LEN;
    let mut seen = 0;
    while at < body_end {
        if body_end - at < 2 {
            return Err(SyncError::BadRecord);
        }
        let len = usize::from(datagram[at + 1]);
        if len < 2 || at + len > body_end {
            return Err(SyncError::BadRecord);
        }
        let bytes = &datagram[at..at + len];
        match datagram[at] {
            RECORD_CONNECTION => records.push(SyncRecord::decode(RecordKind::Connection, bytes)?),
            RECORD_TEMPLATE => records.push(SyncRecord::decode(RecordKind::Template, bytes)?),
            _ => {} // a later version's record: skipped
        }
        seen += 1;
        at += len;
    }
    if seen != count {
        return Err(SyncError::CountMismatch);
    }
    Ok((header, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u16) -> SyncRecord {
        SyncRecord {
            kind: RecordKind::Connection,
            protocol: 6,
            state: 1,
            client: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 40_000 + i),
            vip: "192.0.2.100:80".parse().unwrap(),
            service_port: 80,
            fwmark: 0,
            real: "192.0.2.10:80".parse().unwrap(),
            timeout: 900,
            idle_ms: 1500,
        }
    }

    fn template() -> SyncRecord {
        SyncRecord {
            kind: RecordKind::Template,
            protocol: 6,
            state: 12,
            client: "198.51.100.0:0".parse().unwrap(),
            vip: "192.0.2.100:0".parse().unwrap(),
            service_port: 0,
            fwmark: 0,
            real: "192.0.2.11:0".parse().unwrap(),
            timeout: 300,
            idle_ms: 0,
        }
    }

    fn v6() -> SyncRecord {
        SyncRecord {
            client: "[2001:db8::7]:1234".parse().unwrap(),
            vip: "[2001:db8::100]:443".parse().unwrap(),
            real: "[2001:db8::10]:443".parse().unwrap(),
            service_port: 443,
            ..record(0)
        }
    }

    const KEY: &[u8] = b"sixteen byte key";
    const ORIGIN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn check(d: &[u8], sync_id: u8, key: Option<&[u8]>) -> Result<Vec<SyncRecord>, SyncError> {
        let key = key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k));
        decode(d, sync_id, key.as_ref()).map(|(_, r)| r)
    }

    #[test]
    fn byte_exact_layout() {
        let mut enc = Encoder::new(7, DEFAULT_MAX_LEN, None, ORIGIN, 0x0102_0304_0506_0708);
        let d = enc.encode(&[record(1)]);
        assert_eq!(d.len(), 1);
        let expected: Vec<u8> = [
            &b"LS"[..],
            &[2, 0, 7, 0],                            // version, flags, sync ID, reserved
            &[0, 1, 0, 64, 0, 0],                     // count 1, size 28 + 36, reserved
            &[192, 0, 2, 1],                          // origin
            &[1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 1],    // boot ID, sequence 1
            &[1, 36, 6, 1, 2, 2],                     // connection, 36 bytes, TCP, ESTABLISHED, IPv4, IPv4
            &[0, 80, 0x9c, 0x41, 0, 80, 0, 80, 0, 0], // service port, client port 40001, VIP port, real port, flags
            &[0, 0, 3, 0x84, 0, 0, 5, 0xdc],          // timeout 900, idle 1500
            &[198, 51, 100, 7, 192, 0, 2, 100, 192, 0, 2, 10],
        ]
        .concat();
        assert_eq!(d[0], expected);
        let (header, records) = decode(&d[0], 7, None).unwrap();
        assert_eq!(header, Header { sync_id: 7, origin: ORIGIN, boot_id: 0x0102_0304_0506_0708, sequence: 1 });
        assert_eq!(records, [record(1)]);
    }

    #[test]
    fn round_trips_with_and_without_a_key() {
        let records = vec![record(1), template(), v6(), record(2)];
        for key in [None, Some(KEY)] {
            let mut enc = Encoder::new(9, DEFAULT_MAX_LEN, key, ORIGIN, 42);
            let d = enc.encode(&records);
            assert_eq!(d.len(), 1);
            let expected_len = HEADER_LEN + 36 + 36 + 72 + 36 + if key.is_some() { MAC_LEN } else { 0 };
            assert_eq!(d[0].len(), expected_len);
            assert_eq!(check(&d[0], 9, key).unwrap(), records);
        }
    }

    #[test]
    fn batches_fill_datagrams_up_to_max_len() {
        let records: Vec<_> = (0..100).map(record).collect();
        let mut enc = Encoder::new(1, DEFAULT_MAX_LEN, Some(KEY), ORIGIN, 1);
        let d = enc.encode_spans(&records);
        // (1472 - 28 - 32) / 36 = 39 per datagram.
        assert_eq!(d.iter().map(|d| d.bytes.len()).collect::<Vec<_>>(), [1464, 1464, 28 + 22 * 36 + 32]);
        assert_eq!(d.iter().map(|d| d.records.clone()).collect::<Vec<_>>(), [0..39, 39..78, 78..100]);
        assert!(d.iter().all(|d| d.bytes.len() <= DEFAULT_MAX_LEN));
        let all: Vec<_> = d.iter().flat_map(|d| check(&d.bytes, 1, Some(KEY)).unwrap()).collect();
        assert_eq!(all, records);
        assert!(enc.encode(&[]).is_empty());
        // Mixed families cannot be encoded: left out.
        let bad = SyncRecord { vip: "[2001:db8::1]:80".parse().unwrap(), ..record(0) };
        assert_eq!(enc.encode(&[bad]).len(), 0);
        let spans = enc.encode_spans(&[bad, record(1), bad]);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].records, 0..3);
    }

    #[test]
    fn boot_ids_grow_and_sequences_never_wrap() {
        let a = Encoder::new_boot_id(None);
        let millis = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(a >> 16 <= millis && millis - (a >> 16) < 10_000, "{a:x}");
        // Never at or below the one before, even if the clock says so.
        assert_eq!(Encoder::new_boot_id(Some(u64::MAX - 1)), u64::MAX);
        let mut enc = Encoder::new(0, DEFAULT_MAX_LEN, Some(KEY), ORIGIN, a);
        enc.sequence = u32::MAX - 1;
        let last = enc.encode(&[record(1)]).remove(0);
        let next = enc.encode(&[record(2)]).remove(0);
        let key = hmac::Key::new(hmac::HMAC_SHA256, KEY);
        let (h1, _) = decode(&last, 0, Some(&key)).unwrap();
        let (h2, _) = decode(&next, 0, Some(&key)).unwrap();
        assert_eq!((h1.boot_id, h1.sequence), (a, u32::MAX));
        assert!(h2.boot_id > a);
        assert_eq!(h2.sequence, 1);
    }

    #[test]
    fn refusals() {
        let mut enc = Encoder::new(5, DEFAULT_MAX_LEN, Some(KEY), ORIGIN, 1);
        let good = enc.encode(&[record(1), template()]).remove(0);
        assert_eq!(check(&good, 5, Some(KEY)).unwrap().len(), 2);
        assert_eq!(check(&good, 0, Some(KEY)).unwrap().len(), 2, "sync ID 0 takes any");
        assert_eq!(check(&good, 6, Some(KEY)), Err(SyncError::WrongSyncId { ours: 6, theirs: 5 }));
        assert_eq!(check(&good, 5, Some(b"another key, 16b")), Err(SyncError::BadMac));
        assert_eq!(check(&good, 5, None), Err(SyncError::UnexpectedMac));
        // Truncated anywhere.
        for len in [0, 10, HEADER_LEN, good.len() - 1] {
            assert_eq!(check(&good[..len], 5, Some(KEY)), Err(SyncError::Truncated), "{len}");
        }
        // Any flipped bit fails the MAC (the origin and boot ID included).
        for i in [0, 2, 4, 7, 13, 18, 27, 30, 60, good.len() - 1] {
            let mut d = good.clone();
            d[i] ^= 0x10;
            assert!(check(&d, 5, Some(KEY)).is_err(), "byte {i}");
        }
        // Unknown version (the previous one too), bad magic (checked before the MAC).
        let mut d = good.clone();
        d[2] = 1;
        assert_eq!(check(&d, 5, Some(KEY)), Err(SyncError::UnknownVersion(1)));
        assert_eq!(SyncError::UnknownVersion(1).to_string(), "unknown sync version 1 (ours is 2)");
        d[0] = b'X';
        assert_eq!(check(&d, 5, Some(KEY)), Err(SyncError::BadMagic));

        // Without keys: the structure checks.
        let mut plain = Encoder::new(5, DEFAULT_MAX_LEN, None, ORIGIN, 1).encode(&[record(1), template()]).remove(0);
        assert_eq!(check(&plain, 5, Some(KEY)), Err(SyncError::MissingMac));
        plain[7] = 3; // count
        assert_eq!(check(&plain, 5, None), Err(SyncError::CountMismatch));
        plain[7] = 0xff; // a huge count allocates nothing for it
        assert_eq!(check(&plain, 5, None), Err(SyncError::CountMismatch));
        plain[7] = 2;
        plain[HEADER_LEN + 4] = 7; // family
        assert_eq!(check(&plain, 5, None), Err(SyncError::BadRecord));
        plain[HEADER_LEN + 4] = 2;
        plain[HEADER_LEN + 1] = 200; // record length past the end
        assert_eq!(check(&plain, 5, None), Err(SyncError::BadRecord));
        plain[HEADER_LEN + 1] = 36;
        let mut longer = plain.clone();
        longer.push(0);
        assert_eq!(check(&longer, 5, None), Err(SyncError::BadSize));
    }

    /// A firewall-mark service's template, as IPVS keys it: protocol 0,
    /// the mark for the VIP, ports 0.
    fn mark_template() -> SyncRecord {
        SyncRecord { protocol: 0, state: 13, vip: "0.0.0.1:0".parse().unwrap(), fwmark: 1, ..template() }
    }

    #[test]
    fn firewall_marks_follow_the_addresses() {
        let mut body = Vec::new();
        assert!(mark_template().encode_into(&mut body));
        let expected: Vec<u8> = [
            &[2, 40, 0, 13, 2, 2][..],       // template, 40 bytes, protocol 0, ASSURED, IPv4, IPv4
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 1], // ports 0, flags: a mark follows
            &[0, 0, 1, 0x2c, 0, 0, 0, 0],    // timeout 300, idle 0
            &[198, 51, 100, 0, 0, 0, 0, 1, 192, 0, 2, 11],
            &[0, 0, 0, 1], // the mark
        ]
        .concat();
        assert_eq!(body, expected);
        // An IPv6 connection of mark 7: 72 + 4 bytes.
        let marked6 = SyncRecord { service_port: 0, fwmark: 7, ..v6() };
        assert_eq!(marked6.encoded_len(), Some(76));
        let records = vec![mark_template(), record(1), marked6];
        let d = Encoder::new(1, DEFAULT_MAX_LEN, Some(KEY), ORIGIN, 1).encode(&records).remove(0);
        assert_eq!(d.len(), HEADER_LEN + 40 + 36 + 76 + MAC_LEN);
        assert_eq!(check(&d, 1, Some(KEY)).unwrap(), records);
        // Flagged, but too short for the mark.
        let mut plain = Encoder::new(1, DEFAULT_MAX_LEN, None, ORIGIN, 1).encode(&[record(1)]).remove(0);
        plain[HEADER_LEN + 15] = 1;
        assert_eq!(check(&plain, 1, None), Err(SyncError::BadRecord));
    }

    #[test]
    fn unknown_record_types_and_longer_records_are_skipped() {
        let mut body = Vec::new();
        record(1).encode_into(&mut body);
        // A later version's record: type 9, 8 bytes.
        body.extend_from_slice(&[9, 8, 0, 0, 0, 0, 0, 0]);
        // A longer connection record: 4 bytes more than known.
        let mut longer = Vec::new();
        record(2).encode_into(&mut longer);
        longer[1] = 40;
        longer.extend_from_slice(&[0xee; 4]);
        body.extend_from_slice(&longer);
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC);
        d.extend_from_slice(&[VERSION, 0, 0, 0, 0, 3]);
        d.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0, 192, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
        d.extend_from_slice(&body);
        assert_eq!(decode(&d, 0, None).unwrap().1, [record(1), record(2)]);
    }
}
