//! A frame as the data path sees it: bytes with headroom in front, and what the kernel's
//! offloads still owe it.

/// A checksum the sender's offload has not computed yet (virtio-net `NEEDS_CSUM`, Linux
/// `CHECKSUM_PARTIAL`): the field at `start + offset` holds the pseudo-header sum, and the
/// sum of everything from `start` to the end of the frame is still to be folded in. Both
/// offsets count from the first byte of the Ethernet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialChecksum {
    pub start: u16,
    pub offset: u16,
}

/// The transport a super-packet is cut into segments of (virtio-net `gso_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    Tcpv4,
    Udpv4,
}

/// A super-packet the kernel will cut into `size`-byte segments of transport payload
/// (Linux GSO/GRO): one header rewrite carries up to 64 KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    pub kind: GsoKind,
    pub size: u16,
}

/// Offload state carried with a frame in both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    pub checksum: Option<PartialChecksum>,
    pub gso: Option<Gso>,
}

impl Offload {
    /// The same offload for a frame whose first byte moved by `by` (positive: headers were
    /// added in front; negative: stripped).
    pub fn shifted(self, by: isize) -> Offload {
        Offload {
            checksum: self.checksum.map(|c| PartialChecksum {
                start: (c.start as isize + by) as u16,
                offset: c.offset,
            }),
            gso: self.gso,
        }
    }
}

/// One received frame, rewritten in place. `buf[start..end]` is the Ethernet frame;
/// `buf[..start]` is headroom the data path may grow into when it encapsulates.
#[derive(Debug)]
pub struct Frame<'a> {
    pub buf: &'a mut [u8],
    pub start: usize,
    pub end: usize,
    pub offload: Offload,
}

impl<'a> Frame<'a> {
    /// A frame filling `buf` from `start`, without offloads.
    pub fn new(buf: &'a mut [u8], start: usize) -> Frame<'a> {
        let end = buf.len();
        Frame {
            buf,
            start,
            end,
            offload: Offload::default(),
        }
    }

    /// The Ethernet frame.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// The Ethernet frame, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}
