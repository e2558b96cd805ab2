//! Between the connection table's entries ([`FlowKey`], [`Conn`]) and sync
//! records, and what a master has to send after each scan of its table.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use lb_common::{AF_INET, AF_INET6, Conn, FlowKey, ServiceKey, flow_kind};

use super::wire::{RecordKind, SyncRecord};

/// An address as the maps store it (four words in network byte order, IPv4
/// in the first) with its family tag.
pub fn words_of(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(a) => (lb_common::ipv4_words(a.octets()), AF_INET),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], AF_INET6)
        }
    }
}

/// The address stored as `words` with family `family`.
pub fn ip_of(words: [u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::from(lb_common::ipv4_octets(words)))),
        AF_INET6 => {
            let mut o = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

impl SyncRecord {
    /// The record for a table entry. The caller looks up what the entry's
    /// ids stand for: `service_port` (the service's port, 0 for an
    /// every-port service), `fwmark` (a firewall-mark service's mark, else
    /// 0) and `real` (the real server's address and port). A mark's
    /// template keeps its key's fields as they are: protocol 0, the mark
    /// where the VIP goes (`lb_common::Service::template_key`).
    /// `now_ns` is on the datapath's clock, as the entry's `last_seen_ns`. `None`
    /// for an unknown family.
    pub fn from_entry(
        key: &FlowKey,
        conn: &Conn,
        service_port: u16,
        fwmark: u32,
        real: SocketAddr,
        now_ns: u64,
    ) -> Option<Self> {
        let idle_ms = now_ns.saturating_sub(conn.last_seen_ns) / 1_000_000;
        Some(Self {
            kind: if key.kind == flow_kind::TEMPLATE { RecordKind::Template } else { RecordKind::Connection },
            protocol: key.protocol,
            state: conn.state,
            client: SocketAddr::new(ip_of(key.src, key.family)?, u16::from_be(key.sport)),
            vip: SocketAddr::new(ip_of(key.dst, key.family)?, u16::from_be(key.dport)),
            service_port,
            fwmark,
            real,
            timeout: conn.timeout,
            idle_ms: u32::try_from(idle_ms).unwrap_or(u32::MAX),
        })
    }

    /// The connection-table key of this entry.
    pub fn flow_key(&self) -> FlowKey {
        let (src, family) = words_of(self.client.ip());
        let (dst, _) = words_of(self.vip.ip());
        FlowKey {
            src,
            dst,
            sport: self.client.port().to_be(),
            dport: self.vip.port().to_be(),
            protocol: self.protocol,
            family,
            kind: match self.kind {
                RecordKind::Connection => flow_kind::CONNECTION,
                RecordKind::Template => flow_kind::TEMPLATE,
            },
            pad0: 0,
        }
    }

    /// The key of the virtual service the entry belongs to, to find the
    /// backup's own service id.
    pub fn service_key(&self) -> ServiceKey {
        let (addr, family) = words_of(self.vip.ip());
        if self.fwmark != 0 {
            return lb_common::fwmark_service_key(self.fwmark.to_be(), family);
        }
        ServiceKey { addr, port: self.service_port.to_be(), protocol: self.protocol, family }
    }

    /// The entry to install on the backup, with the backup's own ids. Its
    /// last packet was `idle_ms` before `now_ns` (the datapath's clock), so it
    /// expires when it would have on the master.
    pub fn conn(&self, real_id: u32, service_id: u32, now_ns: u64) -> Conn {
        Conn {
            real_id,
            service_id,
            state: self.state,
            pad0: [0; 3],
            timeout: self.timeout,
            last_seen_ns: now_ns.saturating_sub(u64::from(self.idle_ms) * 1_000_000),
        }
    }
}

/// Why an entry is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Change {
    /// Not sent before (or its send failed, or was never confirmed).
    New,
    /// Its state, real server, service or timeout changed.
    Changed,
    /// `refresh_period` passed since it was last sent (or half its timeout,
    /// if shorter and it had traffic since).
    Refresh,
}

/// Records queued for the sending task, under an id its outcome names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub id: u64,
    pub records: Vec<SyncRecord>,
}

/// What became of queued batches: every record went out, but those of
/// `failed` (their datagram's send failed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendOutcome {
    pub batches: Vec<u64>,
    pub failed: Vec<FlowKey>,
}

/// The entries of one scan, to send as batch `batch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scan {
    pub batch: u64,
    pub changes: Vec<(FlowKey, Conn, Change)>,
}

/// How long an entry waits for its batch's outcome before it is taken as
/// lost (the sending task died or lost it) and sent again.
pub const PENDING_LIMIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
struct Sent {
    state: u8,
    real_id: u32,
    service_id: u32,
    timeout: u32,
    last_seen_ns: u64,
    sent_ns: u64,
    generation: u64,
    /// The batch it was queued in, until the sender says it went out.
    pending: Option<u64>,
}

/// What the master has sent, to find what to send after each scan of its
/// connection table (IPVS's sync on state change, plus its periodic
/// refresh of long-lived connections, idle ones included: a datagram lost
/// on the way is made good within a refresh period).
///
/// An entry counts as sent once the sending task says its datagram went
/// out ([`ChangeTracker::settle`]); until then it is pending, and not sent
/// again. A batch the queue refused ([`ChangeTracker::fail`]), records
/// whose send failed, and batches without an outcome after
/// [`PENDING_LIMIT`] are sent again at the next scan. (IPVS's master keeps
/// a sync buffer it could not send and tries again: `sync_thread_master`.)
#[derive(Debug)]
pub struct ChangeTracker {
    sent: HashMap<FlowKey, Sent>,
    refresh_period: Duration,
    generation: u64,
    next_batch: u64,
    /// Batches awaiting their outcome: when queued, and their entries.
    pending: BTreeMap<u64, (u64, Vec<FlowKey>)>,
}

impl ChangeTracker {
    pub fn new(refresh_period: Duration) -> Self {
        Self { sent: HashMap::new(), refresh_period, generation: 0, next_batch: 1, pending: BTreeMap::new() }
    }

    /// Entries remembered as sent or pending.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    /// Batches awaiting their outcome.
    pub fn pending_batches(&self) -> usize {
        self.pending.len()
    }

    /// Forgets everything (the backup restarted, or we just became master):
    /// the next scan sends every entry.
    pub fn reset(&mut self) {
        self.sent.clear();
        self.pending.clear();
    }

    /// The sending task's report: the entries of `outcome.batches` count as
    /// sent, but the failed ones, which the next scan sends again.
    pub fn settle(&mut self, outcome: &SendOutcome) {
        let failed: HashSet<&FlowKey> = outcome.failed.iter().collect();
        for batch in &outcome.batches {
            let Some((_, keys)) = self.pending.remove(batch) else { continue };
            for key in keys {
                let Some(s) = self.sent.get_mut(&key) else { continue };
                if s.pending != Some(*batch) {
                    continue; // queued again since, in a later batch
                }
                if failed.contains(&key) {
                    self.sent.remove(&key);
                } else {
                    s.pending = None;
                }
            }
        }
    }

    /// The batch was never queued (the queue was full): its entries are
    /// sent again at the next scan.
    pub fn fail(&mut self, batch: u64) {
        let Some((_, keys)) = self.pending.remove(&batch) else { return };
        for key in keys {
            if self.sent.get(&key).is_some_and(|s| s.pending == Some(batch)) {
                self.sent.remove(&key);
            }
        }
    }

    /// Compares a whole snapshot of the table (at `now_ns`, the datapath's
    /// clock) with what was sent; returns the entries to send now, pending
    /// as batch [`Scan::batch`]. Expired entries are skipped; entries gone
    /// from the table are forgotten (the backup's copies age out by
    /// themselves).
    pub fn scan<I>(&mut self, snapshot: I, now_ns: u64) -> Scan
    where
        I: IntoIterator<Item = (FlowKey, Conn)>,
    {
        self.expire_pending(now_ns);
        self.generation += 1;
        let generation = self.generation;
        let batch = self.next_batch;
        self.next_batch += 1;
        let refresh_ns = self.refresh_period.as_nanos() as u64;
        let mut out = Vec::new();
        for (key, conn) in snapshot {
            let expires_ns = conn.last_seen_ns.saturating_add(u64::from(conn.timeout) * 1_000_000_000);
            if expires_ns <= now_ns {
                continue;
            }
            let change = match self.sent.get_mut(&key) {
                None => Some(Change::New),
                Some(s) => {
                    s.generation = generation;
                    if (s.state, s.real_id, s.service_id, s.timeout)
                        != (conn.state, conn.real_id, conn.service_id, conn.timeout)
                    {
                        Some(Change::Changed)
                    } else if s.pending.is_some() {
                        None
                    } else {
                        // Every refresh period, idle or not: a copy the
                        // backup missed is made good. With traffic since,
                        // every half timeout if shorter: the backup's copy
                        // never expires while the master's lives.
                        let active = conn.last_seen_ns > s.last_seen_ns;
                        let half_timeout = u64::from(s.timeout) * 1_000_000_000 / 2;
                        let period = if active { refresh_ns.min(half_timeout) } else { refresh_ns };
                        (now_ns.saturating_sub(s.sent_ns) >= period).then_some(Change::Refresh)
                    }
                }
            };
            if let Some(change) = change {
                self.sent.insert(
                    key,
                    Sent {
                        state: conn.state,
                        real_id: conn.real_id,
                        service_id: conn.service_id,
                        timeout: conn.timeout,
                        last_seen_ns: conn.last_seen_ns,
                        sent_ns: now_ns,
                        generation,
                        pending: Some(batch),
                    },
                );
                out.push((key, conn, change));
            }
        }
        self.sent.retain(|_, s| s.generation == generation);
        if !out.is_empty() {
            self.pending.insert(batch, (now_ns, out.iter().map(|(k, _, _)| *k).collect()));
        }
        Scan { batch, changes: out }
    }

    /// Batches without an outcome for [`PENDING_LIMIT`] are taken as lost.
    fn expire_pending(&mut self, now_ns: u64) {
        let limit = PENDING_LIMIT.as_nanos() as u64;
        let lost: Vec<u64> =
            self.pending.iter().filter(|(_, (at, _))| now_ns.saturating_sub(*at) > limit).map(|(b, _)| *b).collect();
        for batch in lost {
            self.fail(batch);
        }
    }
}

#[cfg(test)]
mod tests {
    use lb_common::conn_state;

    use super::*;

    const S: u64 = 1_000_000_000;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            src: lb_common::ipv4_words([198, 51, 100, 7]),
            dst: lb_common::ipv4_words([192, 0, 2, 100]),
            sport: port.to_be(),
            dport: 80u16.to_be(),
            protocol: 6,
            family: AF_INET,
            kind: flow_kind::CONNECTION,
            pad0: 0,
        }
    }

    fn conn(state: u8, last_seen_ns: u64) -> Conn {
        Conn { real_id: 3, service_id: 1, state, pad0: [0; 3], timeout: 900, last_seen_ns }
    }

    #[test]
    fn entries_become_records_and_back() {
        let k = key(40_001);
        let c = conn(conn_state::ESTABLISHED, 100 * S);
        let real: SocketAddr = "192.0.2.10:8080".parse().unwrap();
        let r = SyncRecord::from_entry(&k, &c, 80, 0, real, 102 * S + 500_000_000).unwrap();
        assert_eq!(r.kind, RecordKind::Connection);
        assert_eq!(r.client, "198.51.100.7:40001".parse().unwrap());
        assert_eq!(r.vip, "192.0.2.100:80".parse().unwrap());
        assert_eq!((r.real, r.service_port, r.state, r.timeout, r.idle_ms), (real, 80, 1, 900, 2500));
        assert_eq!(r.flow_key(), k);
        let sk = r.service_key();
        assert_eq!((sk.addr, u16::from_be(sk.port), sk.protocol, sk.family), (k.dst, 80, 6, AF_INET));
        // On the backup, with its own ids and clock: the same age.
        let installed = r.conn(9, 4, 5000 * S);
        assert_eq!((installed.real_id, installed.service_id, installed.state, installed.timeout), (9, 4, 1, 900));
        assert_eq!(installed.last_seen_ns, 5000 * S - 2_500_000_000);

        // A template of an every-port service.
        let t = FlowKey { sport: 0, dport: 0, kind: flow_kind::TEMPLATE, ..k };
        let r = SyncRecord::from_entry(&t, &conn(conn_state::TEMPLATE_NONE, 0), 0, 0, real, 0).unwrap();
        assert_eq!(r.kind, RecordKind::Template);
        assert_eq!(r.flow_key(), t);

        // A template of firewall-mark service 7 (IPv4 and IPv6): keyed by
        // the mark, protocol 0, ports 0; found here as mark 7's service.
        for (client, family) in [(k.src, AF_INET), (words_of("2001:db8::".parse().unwrap()).0, AF_INET6)] {
            let t = FlowKey { src: client, dst: [7u32.to_be(), 0, 0, 0], protocol: 0, family, ..t };
            let r = SyncRecord::from_entry(&t, &conn(conn_state::TEMPLATE_ASSURED, 0), 0, 7, real, 0).unwrap();
            assert_eq!(
                (r.kind, r.protocol, r.fwmark, r.vip.port(), r.client.port()),
                (RecordKind::Template, 0, 7, 0, 0)
            );
            assert_eq!(r.flow_key(), t);
            assert_eq!(r.service_key(), lb_common::fwmark_service_key(7u32.to_be(), family));
        }
        // A connection of mark 7: its own flow, the mark's service.
        let r = SyncRecord::from_entry(&k, &c, 0, 7, real, 0).unwrap();
        assert_eq!(r.flow_key(), k);
        assert_eq!(r.service_key(), lb_common::fwmark_service_key(7u32.to_be(), AF_INET));

        // IPv6 words.
        let ip: IpAddr = "2001:db8::1:2".parse().unwrap();
        let (words, family) = words_of(ip);
        assert_eq!(family, AF_INET6);
        assert_eq!(ip_of(words, family), Some(ip));
        assert_eq!(ip_of(words, 99), None);
    }

    /// A scan whose batch went out whole.
    fn sent(t: &mut ChangeTracker, table: Vec<(FlowKey, Conn)>, now: u64) -> Vec<(FlowKey, Conn, Change)> {
        let scan = t.scan(table, now);
        t.settle(&SendOutcome { batches: vec![scan.batch], failed: vec![] });
        scan.changes
    }

    #[test]
    fn scans_send_new_and_changed_entries_once() {
        let mut t = ChangeTracker::new(Duration::from_secs(60));
        let now = 1000 * S;
        let table = vec![(key(1), conn(conn_state::SYN_RECV, now)), (key(2), conn(conn_state::ESTABLISHED, now))];
        let out = sent(&mut t, table.clone(), now);
        assert_eq!(out.iter().map(|s| s.2).collect::<Vec<_>>(), [Change::New, Change::New]);
        // Same table, a bit later, traffic on both: nothing (not due yet).
        let later: Vec<_> = table.iter().map(|(k, c)| (*k, Conn { last_seen_ns: now + S, ..*c })).collect();
        assert!(sent(&mut t, later.clone(), now + S).is_empty());
        // A state change goes out at once.
        let mut changed = later.clone();
        changed[0].1.state = conn_state::ESTABLISHED;
        let out = sent(&mut t, changed.clone(), now + 2 * S);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].0, out[0].2), (key(1), Change::Changed));
        // So does a new real server (the old one failed) or a new timeout.
        let mut moved = changed.clone();
        moved[1].1.real_id = 4;
        assert_eq!(sent(&mut t, moved.clone(), now + 3 * S).len(), 1);
        // Gone from the table: forgotten; back again: new.
        assert!(sent(&mut t, vec![moved[0]], now + 4 * S).is_empty());
        assert_eq!(t.len(), 1);
        assert_eq!(sent(&mut t, moved.clone(), now + 5 * S)[0].2, Change::New);
        // Expired entries are not sent.
        let expired = (key(3), conn(conn_state::ESTABLISHED, now - 901 * S));
        assert!(sent(&mut t, vec![moved[0], moved[1], expired], now + 6 * S).is_empty());
        t.reset();
        assert_eq!(sent(&mut t, moved, now + 7 * S).len(), 2);
        assert_eq!(t.pending_batches(), 0);
    }

    #[test]
    fn entries_count_as_sent_only_once_they_went_out() {
        let mut t = ChangeTracker::new(Duration::from_secs(60));
        let now = 1000 * S;
        let table: Vec<_> = (1..=3).map(|p| (key(p), conn(conn_state::ESTABLISHED, now))).collect();
        // The send queue was full: all of them again at the next scan.
        let first = t.scan(table.clone(), now);
        assert_eq!(first.changes.len(), 3);
        t.fail(first.batch);
        let second = t.scan(table.clone(), now + S / 5);
        assert_eq!(second.changes.iter().map(|c| c.2).collect::<Vec<_>>(), [Change::New; 3]);
        // Queued, no outcome yet: not sent twice.
        let third = t.scan(table.clone(), now + 2 * S / 5);
        assert!(third.changes.is_empty());
        // One datagram's send failed: its entry goes again, the others not.
        t.settle(&SendOutcome { batches: vec![second.batch], failed: vec![key(2)] });
        let fourth = t.scan(table.clone(), now + 3 * S / 5);
        assert_eq!(fourth.changes.iter().map(|c| (c.0, c.2)).collect::<Vec<_>>(), [(key(2), Change::New)]);
        t.settle(&SendOutcome { batches: vec![fourth.batch], failed: vec![] });
        assert!(sent(&mut t, table.clone(), now + S).is_empty());
        // A batch whose outcome never comes is taken as lost.
        let changed: Vec<_> = table.iter().map(|(k, c)| (*k, Conn { state: conn_state::FIN_WAIT, ..*c })).collect();
        let lost = t.scan(changed.clone(), now + 2 * S);
        assert_eq!(lost.changes.len(), 3);
        assert!(t.scan(changed.clone(), now + 2 * S + PENDING_LIMIT.as_nanos() as u64).changes.is_empty());
        let again = t.scan(changed.clone(), now + 3 * S + PENDING_LIMIT.as_nanos() as u64);
        assert_eq!(again.changes.len(), 3);
        // A late outcome of the lost batch changes nothing.
        t.settle(&SendOutcome { batches: vec![lost.batch], failed: vec![key(1)] });
        t.settle(&SendOutcome { batches: vec![again.batch], failed: vec![] });
        assert_eq!(t.pending_batches(), 0);
        assert!(sent(&mut t, changed, now + 4 * S + PENDING_LIMIT.as_nanos() as u64).is_empty());
        // An entry changed while its batch is queued goes in the next one;
        // the first batch's outcome does not settle it.
        let mut t = ChangeTracker::new(Duration::from_secs(60));
        let one = t.scan(vec![(key(1), conn(conn_state::SYN_RECV, now))], now);
        let two = t.scan(vec![(key(1), conn(conn_state::ESTABLISHED, now))], now + S / 5);
        assert_eq!(two.changes[0].2, Change::Changed);
        t.settle(&SendOutcome { batches: vec![one.batch], failed: vec![] });
        t.fail(two.batch);
        assert_eq!(t.scan(vec![(key(1), conn(conn_state::ESTABLISHED, now))], now + S).changes.len(), 1);
    }

    #[test]
    fn long_lived_entries_are_refreshed_idle_or_not() {
        let mut t = ChangeTracker::new(Duration::from_secs(60));
        let start = 1000 * S;
        let established = |seen| vec![(key(1), conn(conn_state::ESTABLISHED, seen))];
        sent(&mut t, established(start), start);
        assert!(sent(&mut t, established(start), start + 59 * S).is_empty());
        // Idle, and 60 s since it was sent: sent again (a copy the backup
        // missed is made good; it ages there as here).
        assert_eq!(sent(&mut t, established(start), start + 60 * S)[0].2, Change::Refresh);
        assert!(sent(&mut t, established(start), start + 100 * S).is_empty());
        // With traffic: the same period.
        assert_eq!(sent(&mut t, established(start + 119 * S), start + 120 * S)[0].2, Change::Refresh);
        assert!(sent(&mut t, established(start + 150 * S), start + 150 * S).is_empty());

        // A timeout shorter than two periods: with traffic, refreshed every
        // half timeout, before the backup's copy expires; idle, every period.
        let mut t = ChangeTracker::new(Duration::from_secs(60));
        let short = |seen| vec![(key(1), Conn { timeout: 30, ..conn(conn_state::ESTABLISHED, seen) })];
        sent(&mut t, short(start), start);
        assert!(sent(&mut t, short(start + 14 * S), start + 14 * S).is_empty());
        assert_eq!(sent(&mut t, short(start + 15 * S), start + 15 * S)[0].2, Change::Refresh);
        assert!(sent(&mut t, short(start + 15 * S), start + 40 * S).is_empty(), "idle: the refresh period");
    }
}
