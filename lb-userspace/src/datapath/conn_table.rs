//! The connection table, read in batches: the sweep, connection sync's
//! scans and `lbctl -c` walk it while the datapath churns it, from any
//! thread, without the controller's lock.
//!
//! A walk key by key (`BPF_MAP_GET_NEXT_KEY`, what aya's map iterators
//! do) asks the kernel for the key after the one in hand; when that key
//! has gone — and under a SYN flood on a full LRU table keys go all the
//! time — the kernel answers with the first key of the table. Such a walk
//! starts over again and again, returns entries twice, and may not end.
//! `BPF_MAP_LOOKUP_BATCH` (Linux 5.6 for LRU hashes) carries a bucket
//! number from one call to the next instead of a key: each bucket is read
//! once, whole, whatever happens around it, so a walk returns each entry
//! at most once and takes one call per [`BATCH`] entries. aya 0.14 has no
//! batch operations: the call is made here, with aya-obj's `bpf_attr`.
//! Where the kernel refuses it, walks go key by key, bounded (see
//! [`ConnTable::walk`]).
//!
//! Reads only: the entries the controller writes or removes go through
//! [`super::Datapath`].

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, IterableMap as _, Map, MapData};
use aya_obj::generated::bpf_cmd;
use lb_common::{Conn, FlowKey};

use crate::bpf_sys::{bpf, zeroed_attr};

/// Entries one call reads at most (whole buckets: the kernel's buckets
/// hold a handful each).
pub const BATCH: usize = 1024;

/// A handle on the connection table: cheap to clone, usable from any
/// thread.
#[derive(Clone)]
pub struct ConnTable {
    inner: Arc<Inner>,
}

struct Inner {
    map: HashMap<MapData, FlowKey, Conn>,
    /// The table's `max_entries`, the bound of every walk.
    capacity: u32,
    /// Walks use batched lookups (until the kernel refuses them).
    batched: AtomicBool,
}

/// Where a walk of the table stands. A new one starts at the first bucket;
/// a walk may be taken up again later, where it stopped.
#[derive(Clone, Debug, Default)]
pub struct Cursor {
    at: At,
    /// Entries this walk has handed out.
    visited: u64,
}

#[derive(Clone, Copy, Debug, Default)]
enum At {
    #[default]
    Start,
    /// The next bucket to read (batched).
    Bucket(u32),
    /// The last key handed out (key by key).
    Key(FlowKey),
    /// `complete`: the walk reached the end of the table; otherwise it was
    /// cut short (its bound, or a key walk the kernel would have started
    /// over), and some entries were not handed out.
    End { complete: bool },
}

impl Cursor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The walk is over (see [`Cursor::is_complete`]).
    pub fn is_done(&self) -> bool {
        matches!(self.at, At::End { .. })
    }

    /// The walk is over and went through the whole table: every bucket was
    /// read (entries added or removed meanwhile may or may not have been
    /// handed out, as in any walk of a live table).
    pub fn is_complete(&self) -> bool {
        matches!(self.at, At::End { complete: true })
    }

    /// Entries this walk has handed out so far.
    pub fn visited(&self) -> u64 {
        self.visited
    }

    /// The cursor as text, for a walk another request takes up (`lbctl -c`'s
    /// pages): `b<bucket>.<visited>`, `k<key in hex>.<visited>`, `s`, `e0`
    /// or `e1` (over; complete).
    pub fn to_token(&self) -> String {
        match self.at {
            At::Start => "s".into(),
            At::Bucket(b) => format!("b{b}.{}", self.visited),
            At::Key(k) => {
                // SAFETY: FlowKey is repr(C), 40 bytes of integers with
                // explicit padding.
                let bytes: [u8; 40] = unsafe { std::mem::transmute(k) };
                format!("k{}.{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>(), self.visited)
            }
            At::End { complete } => format!("e{}", u8::from(complete)),
        }
    }

    /// A cursor from [`Cursor::to_token`]'s text. Any bucket or key is
    /// safe to walk from: the kernel ends a walk at a bucket past the last,
    /// and a key not in the table starts it over (cut short, see
    /// [`ConnTable::walk`]); the visited count keeps the walk bounded.
    pub fn from_token(token: &str) -> Option<Self> {
        let (kind, rest) = token.split_at_checked(1)?;
        let (at, visited) = match kind {
            "s" if rest.is_empty() => (At::Start, "0"),
            "e" => (At::End { complete: rest == "1" }, "0"),
            "b" => {
                let (b, v) = rest.split_once('.')?;
                (At::Bucket(b.parse().ok()?), v)
            }
            "k" => {
                let (hex, v) = rest.split_once('.')?;
                if hex.len() != 80 || !hex.is_ascii() {
                    return None;
                }
                let mut bytes = [0u8; 40];
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
                }
                // SAFETY: every 40 bytes are a FlowKey (integers only).
                (At::Key(unsafe { std::mem::transmute::<[u8; 40], FlowKey>(bytes) }), v)
            }
            _ => return None,
        };
        Some(Self { at, visited: visited.parse().ok()? })
    }
}

impl ConnTable {
    /// A handle of its own (a duplicate fd) on the table `map`.
    pub(super) fn new(map: &MapData) -> Result<Self> {
        Self::open(map, true)
    }

    fn open(map: &MapData, batched: bool) -> Result<Self> {
        let fd = map.fd().as_fd().try_clone_to_owned().context("duplicate the connection table's fd")?;
        let data = MapData::from_fd(fd)?;
        let capacity = data.info()?.max_entries();
        let map = HashMap::try_from(Map::LruHashMap(data))?;
        Ok(Self { inner: Arc::new(Inner { map, capacity, batched: AtomicBool::new(batched) }) })
    }

    /// The same table, walked key by key as on kernels without batched
    /// lookups (the benchmark compares the two).
    pub fn key_by_key(&self) -> Result<Self> {
        Self::open(self.inner.map.map(), false)
    }

    /// How many entries the table holds at most.
    pub fn capacity(&self) -> u32 {
        self.inner.capacity
    }

    pub fn get(&self, key: &FlowKey) -> Option<Conn> {
        self.inner.map.get(key, 0).ok()
    }

    /// Every entry, in one walk, [`BATCH`] entries at a time: the table is
    /// never copied whole. A walk that fails ends early (with a warning).
    pub fn iter(&self) -> Entries<'_> {
        Entries { table: self, cursor: Cursor::new(), buffered: Vec::with_capacity(BATCH), next: 0 }
    }

    /// Every entry, in one walk.
    pub fn entries(&self) -> Result<Vec<(FlowKey, Conn)>> {
        let mut out = Vec::new();
        self.walk(&mut Cursor::new(), usize::MAX, |k, c| out.push((*k, *c)))?;
        Ok(out)
    }

    /// Hands the entries from `cursor` on to `visit`, until about `limit`
    /// of them (whole buckets, so up to [`BATCH`] more) or the end of the
    /// table; returns how many. Bounded: a walk hands out at most the
    /// table's capacity in all, whatever the datapath does meanwhile, and
    /// key by key it ends where the kernel would start over.
    pub fn walk(&self, cursor: &mut Cursor, limit: usize, mut visit: impl FnMut(&FlowKey, &Conn)) -> Result<usize> {
        let mut buffers = None;
        let mut seen = 0;
        while seen < limit && !cursor.is_done() {
            let room = u64::from(self.inner.capacity).saturating_sub(cursor.visited) as usize;
            if room == 0 {
                cursor.at = At::End { complete: false };
                break;
            }
            let n = match cursor.at {
                At::Start if !self.inner.batched.load(Ordering::Relaxed) => self.key_step(cursor, room, &mut visit)?,
                At::Start | At::Bucket(_) => {
                    let buffers = buffers.get_or_insert_with(|| Buffers::new(BATCH));
                    match self.batch_step(cursor, room, buffers, &mut visit)? {
                        Some(n) => n,
                        None => self.key_step(cursor, room, &mut visit)?,
                    }
                }
                At::Key(_) => self.key_step(cursor, room, &mut visit)?,
                At::End { .. } => break,
            };
            cursor.visited += n as u64;
            seen += n;
        }
        Ok(seen)
    }

    /// One batched call from where `cursor` stands; `None` if this kernel
    /// has no batched lookups for the table (then walks go key by key).
    fn batch_step(
        &self,
        cursor: &mut Cursor,
        room: usize,
        buffers: &mut Buffers,
        visit: &mut impl FnMut(&FlowKey, &Conn),
    ) -> Result<Option<usize>> {
        let from = match cursor.at {
            At::Bucket(b) => Some(b),
            _ => None,
        };
        loop {
            match self.lookup_batch(from, buffers) {
                Ok((n, next)) => {
                    let n = n.min(room);
                    for (k, c) in buffers.keys[..n].iter().zip(&buffers.values[..n]) {
                        visit(k, c);
                    }
                    cursor.at = next.map_or(At::End { complete: true }, At::Bucket);
                    return Ok(Some(n));
                }
                // One bucket holds more than the buffers: larger ones.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && buffers.keys.len() < self.inner.capacity as usize => {
                    *buffers = Buffers::new(buffers.keys.len() * 2);
                }
                // Before Linux 5.6 the command (EINVAL) or the map type's
                // batch operations (ENOTSUPP, 524) are missing.
                Err(e) if from.is_none() && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | 524)) => {
                    if self.inner.batched.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            "this kernel has no batched lookups in LRU hash maps ({e}): \
                             the connection table is walked key by key"
                        );
                    }
                    return Ok(None);
                }
                Err(e) => return Err(e).context("BPF_MAP_LOOKUP_BATCH on the connection table"),
            }
        }
    }

    /// One `BPF_MAP_LOOKUP_BATCH`: whole buckets from bucket `from` on (the
    /// first for `None`), as many entries as the buffers hold. Returns how
    /// many it read and the bucket to go on from (`None`: it read the last
    /// one).
    fn lookup_batch(&self, from: Option<u32>, buffers: &mut Buffers) -> io::Result<(usize, Option<u32>)> {
        // For hash maps the kernel's batch position is a bucket index, a u32.
        let in_batch: u32 = from.unwrap_or(0);
        let mut out_batch: u32 = 0;
        let mut attr = zeroed_attr();
        // SAFETY: the `batch` member of a zeroed union. The keys and values
        // buffers have room for `count` entries of the map's key and value
        // sizes (checked when the map was opened: FlowKey and Conn), and
        // every pointer outlives the call.
        let result = unsafe {
            let b = &mut attr.batch;
            b.in_batch = if from.is_some() { (&raw const in_batch) as u64 } else { 0 };
            b.out_batch = (&raw mut out_batch) as u64;
            b.keys = buffers.keys.as_mut_ptr() as u64;
            b.values = buffers.values.as_mut_ptr() as u64;
            b.count = buffers.keys.len() as u32;
            b.map_fd = self.inner.map.map().fd().as_fd().as_raw_fd() as u32;
            bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr)
        };
        // SAFETY: as above; the kernel wrote back how many entries it copied.
        let count = (unsafe { attr.batch.count } as usize).min(buffers.keys.len());
        match result {
            Ok(_) => Ok((count, Some(out_batch))),
            // The end of the table: what the last buckets held.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((count, None)),
            Err(e) => Err(e),
        }
    }

    /// Up to [`BATCH`] entries key by key (`BPF_MAP_GET_NEXT_KEY` and a
    /// lookup each). The kernel answers a key that has gone with the first
    /// key of the table: when the key in hand is gone after the call, the
    /// walk may have been sent back to the start, and it ends there, cut
    /// short (what it has not reached waits for the next walk).
    fn key_step(&self, cursor: &mut Cursor, room: usize, visit: &mut impl FnMut(&FlowKey, &Conn)) -> Result<usize> {
        let mut n = 0;
        while n < BATCH.min(room) {
            let previous = match cursor.at {
                At::Key(k) => Some(k),
                _ => None,
            };
            let Some(key) = self.next_key(previous.as_ref()).context("BPF_MAP_GET_NEXT_KEY on the connection table")?
            else {
                cursor.at = At::End { complete: true };
                break;
            };
            if previous.is_some_and(|p| self.get(&p).is_none()) {
                cursor.at = At::End { complete: false };
                break;
            }
            cursor.at = At::Key(key);
            // Gone since: skipped.
            if let Some(conn) = self.get(&key) {
                visit(&key, &conn);
                n += 1;
            }
        }
        Ok(n)
    }

    /// The key after `key` (the first for `None`); `None` at the end.
    fn next_key(&self, key: Option<&FlowKey>) -> io::Result<Option<FlowKey>> {
        let mut next = FlowKey::default();
        let mut attr = zeroed_attr();
        // SAFETY: the element member of a zeroed union; `key` and `next`
        // are FlowKeys (the map's key size) and outlive the call.
        let result = unsafe {
            let u = &mut attr.__bindgen_anon_2;
            u.map_fd = self.inner.map.map().fd().as_fd().as_raw_fd() as u32;
            u.key = key.map_or(0, |k| k as *const FlowKey as u64);
            u.__bindgen_anon_1.next_key = (&raw mut next) as u64;
            bpf(bpf_cmd::BPF_MAP_GET_NEXT_KEY, &mut attr)
        };
        match result {
            Ok(_) => Ok(Some(next)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The entries of a walk, read [`BATCH`] at a time (see [`ConnTable::iter`]).
pub struct Entries<'a> {
    table: &'a ConnTable,
    cursor: Cursor,
    buffered: Vec<(FlowKey, Conn)>,
    next: usize,
}

impl Iterator for Entries<'_> {
    type Item = (FlowKey, Conn);

    fn next(&mut self) -> Option<Self::Item> {
        while self.next == self.buffered.len() {
            if self.cursor.is_done() {
                return None;
            }
            self.buffered.clear();
            self.next = 0;
            let buffered = &mut self.buffered;
            if let Err(e) = self.table.walk(&mut self.cursor, BATCH, |k, c| buffered.push((*k, *c))) {
                tracing::warn!("a walk of the connection table ended early: {e:#}");
                self.cursor.at = At::End { complete: false };
            }
        }
        self.next += 1;
        Some(self.buffered[self.next - 1])
    }
}

/// Where the kernel copies a batch.
struct Buffers {
    keys: Vec<FlowKey>,
    values: Vec<Conn>,
}

impl Buffers {
    fn new(entries: usize) -> Self {
        Self { keys: vec![FlowKey::default(); entries], values: vec![Conn::default(); entries] }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_survive_their_tokens() {
        let key = FlowKey { src: [1, 2, 3, 4], dst: [5, 0, 0, 0], sport: 7, dport: 80, protocol: 6, family: 2, kind: 1, pad0: 0 };
        for (at, visited) in [
            (At::Start, 0),
            (At::Bucket(77), 1234),
            (At::Key(key), 9),
            (At::End { complete: true }, 0),
            (At::End { complete: false }, 0),
        ] {
            let cursor = Cursor { at, visited };
            let back = Cursor::from_token(&cursor.to_token()).unwrap();
            assert_eq!(format!("{:?}", back), format!("{cursor:?}"), "{}", cursor.to_token());
        }
        for bad in ["", "x", "b", "b1", "b1.x", "bx.1", "k00.1", "s1", &format!("k{}.1", "zz".repeat(40))] {
            assert!(Cursor::from_token(bad).is_none(), "{bad:?}");
        }
    }
}
