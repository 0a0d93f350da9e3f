//! An open-addressing hash index from flow keys to slab indexes.
//!
//! Each bucket is one `u64`: the upper 32 bits of the key's hash and the slab index of the
//! flow. A probe compares the stored hash bits first and only then reads the flow from the
//! slab, so a lookup costs one cache line of the index (linear probing at a load factor of
//! at most one half stays within it nearly always) and one slab entry. Removal shifts the
//! following buckets back (no tombstones), so heavy churn never degrades probing.
//!
//! The zero bucket means empty: slab index 0 is a timer-wheel sentinel, never a flow.

use super::BuildError;
use super::memory::HugeVec;

pub(crate) struct Index {
    buckets: HugeVec<u64>,
    mask: usize,
    len: usize,
}

#[inline]
fn bucket(hash: u64, slot: u32) -> u64 {
    (hash & 0xffff_ffff_0000_0000) | u64::from(slot)
}

impl Index {
    /// An index for up to `max` entries, at most half full.
    pub(crate) fn new(max: usize) -> Result<Index, BuildError> {
        let buckets = max
            .max(4)
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
            .ok_or(BuildError::OutOfMemory)?;
        Ok(Index {
            buckets: HugeVec::zeroed(buckets)?,
            mask: buckets - 1,
            len: 0,
        })
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash >> 32) as usize & self.mask
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * size_of::<u64>()
    }

    /// The slab index of the entry with this hash for which `eq` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let tag = hash >> 32;
        let mut pos = self.home(hash);
        loop {
            let b = self.buckets[pos];
            if b == 0 {
                return None;
            }
            if b >> 32 == tag && eq(b as u32) {
                return Some(b as u32);
            }
            pos = (pos + 1) & self.mask;
        }
    }

    /// Adds `slot` under `hash`. The caller keeps keys unique and stays within capacity.
    #[inline]
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) {
        debug_assert!(slot != 0 && self.len < self.buckets.len() / 2);
        let mut pos = self.home(hash);
        while self.buckets[pos] != 0 {
            pos = (pos + 1) & self.mask;
        }
        self.buckets[pos] = bucket(hash, slot);
        self.len += 1;
    }

    /// Removes `slot`, filed under `hash`. Returns whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let target = bucket(hash, slot);
        let mut hole = self.home(hash);
        loop {
            match self.buckets[hole] {
                0 => return false,
                b if b == target => break,
                _ => hole = (hole + 1) & self.mask,
            }
        }
        // Backward shift: pull later buckets of the run into the hole when the hole lies
        // between their home and where they sit.
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let b = self.buckets[j];
            if b == 0 {
                break;
            }
            let home = self.home(b);
            if (hole.wrapping_sub(home) & self.mask) < (j.wrapping_sub(home) & self.mask) {
                self.buckets[hole] = b;
                hole = j;
            }
        }
        self.buckets[hole] = 0;
        self.len -= 1;
        true
    }

    /// Hints the CPU to fetch the bucket a lookup of `hash` starts at.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        prefetch(&self.buckets[self.home(hash)]);
    }

    /// The first entry whose stored hash bits match, without confirming the key: what a
    /// lookup will most likely land on, so its flow can be fetched ahead.
    #[inline]
    pub(crate) fn likely(&self, hash: u64) -> Option<u32> {
        let tag = hash >> 32;
        let mut pos = self.home(hash);
        loop {
            match self.buckets[pos] {
                0 => return None,
                b if b >> 32 == tag => return Some(b as u32),
                _ => pos = (pos + 1) & self.mask,
            }
        }
    }
}

/// Hints the CPU to bring `value`'s cache line in; no effect on program state.
#[inline]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching a valid address has no architectural effect.
    unsafe {
        core::arch::x86_64::_mm_prefetch(
            (value as *const T).cast(),
            core::arch::x86_64::_MM_HINT_T0,
        )
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colliding_entries_survive_removals_in_any_order() {
        // Every hash lands in the same home bucket and wraps around the end of the array.
        let mut idx = Index::new(8).unwrap();
        let last = idx.mask as u64;
        let h = |n: u64| (last << 32) | n;
        for s in 1..=8 {
            idx.insert(h(s.into()), s);
        }
        for s in [3u32, 1, 8, 5] {
            assert!(idx.remove(h(s.into()), s));
            assert!(!idx.remove(h(s.into()), s));
        }
        for s in 1..=8u32 {
            let found = idx.find(h(s.into()), |x| x == s);
            assert_eq!(found.is_some(), [2, 4, 6, 7].contains(&s), "slot {s}");
        }
        assert_eq!(idx.len(), 4);
    }

    #[test]
    fn same_tag_different_keys_are_told_apart_by_eq() {
        let mut idx = Index::new(4).unwrap();
        idx.insert(0xabcd_0000_0000_0000, 7);
        idx.insert(0xabcd_0000_0000_0000, 9);
        assert_eq!(idx.find(0xabcd_0000_0000_0000, |s| s == 9), Some(9));
        assert_eq!(idx.find(0xabcd_0000_0000_0000, |s| s == 11), None);
    }
}
