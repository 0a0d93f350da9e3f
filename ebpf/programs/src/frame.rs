//! Bounds-checked reads from a frame: the only way the programs look at packet bytes.
//!
//! Parsers are generic over [`Frame`], so the same code reads a socket buffer in the kernel and
//! a byte slice in host unit tests. Every read names its offset and length and yields `None`
//! past the end of the frame; there is no unchecked access to get wrong.

use aya_ebpf::programs::TcContext;

/// A frame starting at its Ethernet header.
pub trait Frame {
    /// Length of the whole frame in bytes.
    fn len(&self) -> usize;

    /// Whether the frame has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `N` bytes at `offset`, or `None` when they run past the end of the frame.
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

impl Frame for TcContext {
    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }

    #[inline(always)]
    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // bpf_skb_load_bytes: the kernel checks `offset + N` against the socket buffer and fails
        // past its end. Unlike direct packet access it also reads paged (non-linear) data, which
        // GSO packets on veth carry.
        TcContext::load::<[u8; N]>(self, offset).ok()
    }
}

impl Frame for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn read<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        self.get(offset..end)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::Frame;

    #[test]
    fn slice_reads_stop_at_the_end() {
        let bytes: &[u8] = &[1, 2, 3, 4];
        assert_eq!(bytes.read::<2>(0), Some([1, 2]));
        assert_eq!(bytes.read::<2>(2), Some([3, 4]));
        assert_eq!(bytes.read::<2>(3), None);
        assert_eq!(bytes.read::<1>(usize::MAX), None);
        assert_eq!(bytes.read::<0>(4), Some([]));
        assert!(!bytes.is_empty());
    }
}
