//! Fixed-capacity arrays for the flow table, mapped from the kernel and backed by
//! transparent huge pages where the kernel allows them.
//!
//! At a million flows the table spans tens of megabytes read in random order. With 4 KiB
//! pages nearly every packet also misses the TLB, and under a hypervisor a TLB miss costs a
//! two-level page walk; 2 MiB pages make that cost vanish (the benchmarks showed about
//! half of the per-packet time at 1M flows going to it). Memory is reserved up front for
//! the configured capacity but only becomes resident as flows use it, and it is zeroed by
//! the kernel, which the hash indexes use as their "empty" state.

use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::ptr::NonNull;

use super::BuildError;

const HUGE_PAGE: usize = 2 << 20;

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned memory like a Box; nothing else aliases it.
unsafe impl Send for Mapping {}
// SAFETY: shared access only reads through `&`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps at least `bytes` of zeroed memory, aligned to a huge page.
    fn new(bytes: usize) -> Result<(Mapping, NonNull<u8>), BuildError> {
        let want = bytes
            .max(1)
            .checked_add(HUGE_PAGE)
            .ok_or(BuildError::OutOfMemory)?;
        // SAFETY: an anonymous private mapping with no address hint has no preconditions.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                want,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(BuildError::OutOfMemory);
        }
        let base = NonNull::new(base.cast::<u8>()).ok_or(BuildError::OutOfMemory)?;
        let mapping = Mapping { base, len: want };
        let offset = base.as_ptr().align_offset(HUGE_PAGE);
        // SAFETY: `offset < HUGE_PAGE`, and the mapping is `bytes + HUGE_PAGE` long.
        let start = unsafe { base.add(offset) };
        // Only advice: where the kernel keeps huge pages off, this fails and nothing changes.
        // SAFETY: the range lies inside the mapping made above.
        unsafe {
            libc::madvise(start.as_ptr().cast(), want - offset, libc::MADV_HUGEPAGE);
        }
        Ok((mapping, start))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base` and `len` are exactly what mmap returned and was asked for.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// A vector with a capacity fixed at creation that never reallocates.
pub(crate) struct HugeVec<T> {
    _mapping: Mapping,
    ptr: NonNull<T>,
    len: usize,
    capacity: usize,
    _owns: PhantomData<T>,
}

// SAFETY: HugeVec owns its elements like Vec does.
unsafe impl<T: Send> Send for HugeVec<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for HugeVec<T> {}

impl<T: Copy> HugeVec<T> {
    /// An empty vector with room for `capacity` elements.
    pub(crate) fn with_capacity(capacity: usize) -> Result<HugeVec<T>, BuildError> {
        let bytes = capacity
            .checked_mul(size_of::<T>())
            .ok_or(BuildError::OutOfMemory)?;
        let (mapping, start) = Mapping::new(bytes)?;
        debug_assert!(start.as_ptr().align_offset(align_of::<T>()) == 0);
        Ok(HugeVec {
            _mapping: mapping,
            ptr: start.cast(),
            len: 0,
            capacity,
            _owns: PhantomData,
        })
    }

    /// Appends `value`; false when full.
    #[inline]
    pub(crate) fn push(&mut self, value: T) -> bool {
        if self.len == self.capacity {
            return false;
        }
        // SAFETY: `len < capacity`, so the slot lies inside the mapping.
        unsafe { self.ptr.add(self.len).write(value) };
        self.len += 1;
        true
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

impl HugeVec<u64> {
    /// `len` zeroed elements.
    pub(crate) fn zeroed(len: usize) -> Result<HugeVec<u64>, BuildError> {
        let mut v = HugeVec::with_capacity(len)?;
        // The kernel hands out zeroed pages, and zero is a valid u64.
        v.len = len;
        Ok(v)
    }
}

impl<T> Deref for HugeVec<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` elements are initialised.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for HugeVec<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is unique.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_until_full() {
        let mut v: HugeVec<(u32, u16)> = HugeVec::with_capacity(3).unwrap();
        assert!(v.push((1, 2)) && v.push((3, 4)) && v.push((5, 6)));
        assert!(!v.push((7, 8)));
        assert_eq!(&v[..], &[(1, 2), (3, 4), (5, 6)]);
        v[1].0 = 9;
        assert_eq!(v[1], (9, 4));
    }

    #[test]
    fn zeroed_is_zero_and_writable() {
        let mut v: HugeVec<u64> = HugeVec::zeroed(1 << 20).unwrap();
        assert!(v.iter().step_by(4096).all(|&x| x == 0));
        v[12345] = 7;
        assert_eq!(v[12345], 7);
        assert_eq!(v.len(), 1 << 20);
    }
}
