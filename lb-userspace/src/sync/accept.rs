//! The receiver's filter: which datagrams to take, and each only once.
//!
//! In order, each check before anything of the datagram is kept:
//!
//! 1. the source is a configured peer (when there are peers): a stranger's
//!    datagram costs one comparison and leaves nothing behind;
//! 2. [`decode`]: size, version, MAC (with a key), sync ID, records;
//! 3. the header's origin is the source address: with a key, a datagram
//!    captured from one sender and replayed from another address fails
//!    here, whatever the replay state of either;
//! 4. replays, per sender (its origin): a datagram of a boot older than the
//!    newest boot accepted from that sender is refused (two captured boots
//!    replayed alternately, or an old boot after a new one); within the
//!    newest boot, each sequence number is taken once, within a window of
//!    [`REPLAY_WINDOW`] below the highest seen.
//!
//! The state is one window per sender: per configured peer, or, with a key
//! and no peers, per authenticated sender, at most [`MAX_SENDERS`] (the
//! least recently heard is forgotten for a new one). Only a datagram that
//! passed 1 to 3 creates or moves a window, so neither spoofed sources nor
//! made-up boot IDs make it grow; a newer boot replaces its sender's window.
//!
//! IPVS's backup (`ip_vs_process_message`) has no authentication and no
//! replay check: this is lb's own.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use ring::hmac;

use super::wire::{Header, SyncError, SyncRecord, decode};

/// Sequence numbers within this distance below the highest seen are
/// accepted once.
pub const REPLAY_WINDOW: u32 = 64;
/// Senders remembered without configured peers (a key is then required).
pub const MAX_SENDERS: usize = 16;

/// One sender's newest boot and which of its datagrams were seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    boot_id: u64,
    highest: u32,
    /// Bit i: `highest - i` was seen.
    seen: u64,
    /// When it last accepted a datagram (a count of accepted datagrams).
    used: u64,
}

pub struct Acceptor {
    sync_id: u8,
    key: Option<hmac::Key>,
    /// Empty: any source (then a key is required by the config).
    peers: Vec<Ipv4Addr>,
    windows: HashMap<Ipv4Addr, Window>,
    accepted: u64,
}

impl Acceptor {
    pub fn new(sync_id: u8, key: Option<&[u8]>, peers: Vec<Ipv4Addr>) -> Self {
        Self {
            sync_id,
            key: key.map(|k| hmac::Key::new(hmac::HMAC_SHA256, k)),
            peers,
            windows: HashMap::new(),
            accepted: 0,
        }
    }

    /// Senders with a replay window.
    pub fn senders(&self) -> usize {
        self.windows.len()
    }

    /// Checks a datagram from `from` and returns its records.
    pub fn accept(&mut self, from: IpAddr, datagram: &[u8]) -> Result<(Header, Vec<SyncRecord>), SyncError> {
        let source = match from {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        let Some(source) = source else { return Err(SyncError::UnknownPeer(from)) };
        if !self.peers.is_empty() && !self.peers.contains(&source) {
            return Err(SyncError::UnknownPeer(IpAddr::V4(source)));
        }
        let (header, records) = decode(datagram, self.sync_id, self.key.as_ref())?;
        if header.origin != source {
            return Err(SyncError::WrongOrigin { origin: header.origin, source: IpAddr::V4(source) });
        }
        self.check_replay(header)?;
        Ok((header, records))
    }

    fn check_replay(&mut self, h: Header) -> Result<(), SyncError> {
        self.accepted += 1;
        let used = self.accepted;
        let fresh = Window { boot_id: h.boot_id, highest: h.sequence, seen: 1, used };
        let Some(w) = self.windows.get_mut(&h.origin) else {
            if self.windows.len() >= MAX_SENDERS
                && let Some(oldest) = self.windows.iter().min_by_key(|(_, w)| w.used).map(|(a, _)| *a)
            {
                self.windows.remove(&oldest);
            }
            self.windows.insert(h.origin, fresh);
            return Ok(());
        };
        if h.boot_id < w.boot_id {
            return Err(SyncError::OldBoot);
        }
        if h.boot_id > w.boot_id {
            // The sender restarted (or ran out of sequence numbers): its
            // older boots are refused from now on.
            *w = fresh;
            return Ok(());
        }
        if h.sequence > w.highest {
            let shift = h.sequence - w.highest;
            w.seen = if shift >= 64 { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.highest = h.sequence;
            w.used = used;
            return Ok(());
        }
        let behind = w.highest - h.sequence;
        if behind >= REPLAY_WINDOW {
            return Err(SyncError::Replay);
        }
        let bit = 1u64 << behind;
        if w.seen & bit != 0 {
            return Err(SyncError::Replay);
        }
        w.seen |= bit;
        w.used = used;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::sync::wire::{DEFAULT_MAX_LEN, Encoder, RecordKind};

    const KEY: &[u8] = b"sixteen byte key";
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

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
            idle_ms: 0,
        }
    }

    fn from(a: Ipv4Addr) -> IpAddr {
        IpAddr::V4(a)
    }

    #[test]
    fn only_peers_and_no_replays() {
        let mut acceptor = Acceptor::new(0, Some(KEY), vec![PEER]);
        let mut enc = Encoder::new(0, DEFAULT_MAX_LEN, Some(KEY), PEER, 77);
        let d1 = enc.encode(&[record(1)]).remove(0);
        let d2 = enc.encode(&[record(2)]).remove(0);
        let d3 = enc.encode(&[record(3)]).remove(0);
        let stranger = Ipv4Addr::new(192, 0, 2, 9);
        assert_eq!(acceptor.accept(from(stranger), &d1).unwrap_err(), SyncError::UnknownPeer(from(stranger)));
        assert_eq!(acceptor.senders(), 0, "a stranger leaves nothing behind");
        // A v4-mapped source is the same peer.
        assert!(acceptor.accept("::ffff:192.0.2.1".parse().unwrap(), &d1).is_ok());
        assert_eq!(acceptor.accept(from(PEER), &d1).unwrap_err(), SyncError::Replay);
        // Out of order within the window: accepted once.
        assert!(acceptor.accept(from(PEER), &d3).is_ok());
        assert!(acceptor.accept(from(PEER), &d2).is_ok());
        assert_eq!(acceptor.accept(from(PEER), &d2).unwrap_err(), SyncError::Replay);
        assert_eq!(acceptor.accept(from(PEER), &d3).unwrap_err(), SyncError::Replay);
        // Too old.
        let mut late = Encoder::new(0, DEFAULT_MAX_LEN, Some(KEY), PEER, 77);
        for _ in 0..70 {
            let d = enc.encode(&[record(0)]).remove(0);
            acceptor.accept(from(PEER), &d).unwrap();
        }
        for _ in 0..3 {
            late.encode(&[record(0)]);
        }
        let d4 = late.encode(&[record(4)]).remove(0); // sequence 4: 69 behind
        assert_eq!(acceptor.accept(from(PEER), &d4).unwrap_err(), SyncError::Replay);
        // IPv6 sources are never peers.
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(acceptor.accept(v6, &d4).unwrap_err(), SyncError::UnknownPeer(v6));
    }

    #[test]
    fn a_newer_boot_supersedes_and_old_boots_are_refused() {
        let mut acceptor = Acceptor::new(0, Some(KEY), vec![PEER]);
        let mut first = Encoder::new(0, DEFAULT_MAX_LEN, Some(KEY), PEER, 1000 << 16);
        let mut second = Encoder::new(0, DEFAULT_MAX_LEN, Some(KEY), PEER, 2000 << 16);
        let a: Vec<_> = (0..3).map(|i| first.encode(&[record(i)]).remove(0)).collect();
        let b: Vec<_> = (0..3).map(|i| second.encode(&[record(10 + i)]).remove(0)).collect();
        // Captured from two boots, replayed alternately: once the newer
        // boot was seen, nothing of the older one passes.
        assert!(acceptor.accept(from(PEER), &a[0]).is_ok());
        assert!(acceptor.accept(from(PEER), &b[0]).is_ok());
        assert_eq!(acceptor.accept(from(PEER), &a[1]).unwrap_err(), SyncError::OldBoot);
        assert_eq!(acceptor.accept(from(PEER), &b[0]).unwrap_err(), SyncError::Replay);
        assert_eq!(acceptor.accept(from(PEER), &a[0]).unwrap_err(), SyncError::OldBoot);
        assert!(acceptor.accept(from(PEER), &b[1]).is_ok());
        assert_eq!(acceptor.accept(from(PEER), &a[2]).unwrap_err(), SyncError::OldBoot);
        assert!(acceptor.accept(from(PEER), &b[2]).is_ok());
        assert_eq!(acceptor.senders(), 1);
        // The sender restarting for real: a newer boot still.
        let mut third = Encoder::new(0, DEFAULT_MAX_LEN, Some(KEY), PEER, Encoder::new_boot_id(Some(2000 << 16)));
        assert!(acceptor.accept(from(PEER), &third.encode(&[record(20)]).remove(0)).is_ok());
        assert_eq!(acceptor.accept(from(PEER), &b[2]).unwrap_err(), SyncError::OldBoot);
    }

    #[test]
    fn the_origin_is_the_source() {
        // Two peers: a datagram of one, sent again from the other's address.
        let other = Ipv4Addr::new(192, 0, 2, 2);
        let mut acceptor = Acceptor::new(0, Some(KEY), vec![PEER, other]);
        let d = Encoder::new(0, DEFAULT_MAX_LEN, Some(KEY), PEER, 5).encode(&[record(1)]).remove(0);
        assert_eq!(
            acceptor.accept(from(other), &d).unwrap_err(),
            SyncError::WrongOrigin { origin: PEER, source: from(other) }
        );
        assert_eq!(acceptor.senders(), 0);
        assert!(acceptor.accept(from(PEER), &d).is_ok());
    }

    #[test]
    fn state_is_bounded() {
        // A key and no peers: only authenticated senders get a window, at
        // most MAX_SENDERS of them.
        let mut acceptor = Acceptor::new(0, Some(KEY), vec![]);
        for i in 0..40u8 {
            let sender = Ipv4Addr::new(10, 0, 0, i);
            let mut enc = Encoder::new(0, DEFAULT_MAX_LEN, Some(KEY), sender, 1);
            assert!(acceptor.accept(from(sender), &enc.encode(&[record(1)]).remove(0)).is_ok());
            // Forgeries (wrong key, made-up boot IDs) create nothing.
            let mut forger = Encoder::new(0, DEFAULT_MAX_LEN, Some(b"not the right key"), sender, u64::from(i) + 99);
            let spoofed = Ipv4Addr::new(10, 1, 0, i);
            assert_eq!(acceptor.accept(from(spoofed), &forger.encode(&[record(2)]).remove(0)), Err(SyncError::BadMac));
            assert!(acceptor.senders() <= MAX_SENDERS);
        }
        assert_eq!(acceptor.senders(), MAX_SENDERS);
        // Peers without a key: a window per peer, however many boot IDs
        // and sources are made up.
        let mut acceptor = Acceptor::new(0, None, vec![PEER]);
        for boot in 0..100u64 {
            let mut enc = Encoder::new(0, DEFAULT_MAX_LEN, None, PEER, boot);
            let _ = acceptor.accept(from(PEER), &enc.encode(&[record(1)]).remove(0));
            let stranger = Ipv4Addr::new(10, 2, 0, boot as u8);
            let mut spoof = Encoder::new(0, DEFAULT_MAX_LEN, None, stranger, boot);
            assert!(acceptor.accept(from(stranger), &spoof.encode(&[record(1)]).remove(0)).is_err());
        }
        assert_eq!(acceptor.senders(), 1);
    }
}
