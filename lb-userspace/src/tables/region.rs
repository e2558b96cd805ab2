//! Slot ranges of the shared arrays (`SCHED_TABLE`, `REAL_LISTS`) each
//! service's scheduling table and server list are written to.

use std::collections::BTreeMap;

/// A range of slots in one of the shared arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Region {
    pub(super) start: u32,
    pub(super) len: u32,
}

/// First-fit allocator of slot ranges.
#[derive(Clone, Debug)]
pub(super) struct RegionPool {
    /// Free ranges by start.
    free: BTreeMap<u32, u32>,
}

impl RegionPool {
    pub(super) fn new(size: u32) -> Self {
        Self { free: BTreeMap::from([(0, size)]) }
    }

    pub(super) fn alloc(&mut self, len: u32) -> Option<Region> {
        if len == 0 {
            return Some(Region { start: 0, len: 0 });
        }
        let (&start, &free_len) = self.free.iter().find(|&(_, &l)| l >= len)?;
        self.free.remove(&start);
        if free_len > len {
            self.free.insert(start + len, free_len - len);
        }
        Some(Region { start, len })
    }

    pub(super) fn release(&mut self, r: Region) {
        if r.len == 0 {
            return;
        }
        let mut start = r.start;
        let mut len = r.len;
        // Merge with the neighbours on both sides.
        if let Some((&s, &l)) = self.free.range(..start).next_back()
            && s + l == start
        {
            self.free.remove(&s);
            start = s;
            len += l;
        }
        if let Some(&l) = self.free.get(&(r.start + r.len)) {
            self.free.remove(&(r.start + r.len));
            len += l;
        }
        self.free.insert(start, len);
    }

    /// Marks a region as used (when adopting maps a previous lbd filled).
    pub(super) fn take(&mut self, r: Region) -> bool {
        if r.len == 0 {
            return true;
        }
        let Some((&s, &l)) = self.free.range(..=r.start).next_back() else { return false };
        if s + l < r.start + r.len {
            return false;
        }
        self.free.remove(&s);
        if r.start > s {
            self.free.insert(s, r.start - s);
        }
        if s + l > r.start + r.len {
            self.free.insert(r.start + r.len, s + l - r.start - r.len);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_reused_after_release() {
        let mut pool = RegionPool::new(100);
        let a = pool.alloc(30).unwrap();
        let b = pool.alloc(30).unwrap();
        pool.release(a);
        pool.release(b);
        assert_eq!(pool.alloc(100), Some(Region { start: 0, len: 100 }));
        let mut pool = RegionPool::new(100);
        assert!(pool.take(Region { start: 10, len: 20 }));
        assert!(!pool.take(Region { start: 15, len: 2 }));
        assert_eq!(pool.alloc(10), Some(Region { start: 0, len: 10 }));
        assert_eq!(pool.alloc(10), Some(Region { start: 30, len: 10 }));
    }
}
