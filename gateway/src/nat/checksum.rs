//! Incremental Internet checksum updates (RFC 1624).
//!
//! NAT changes a few 16-bit words of a packet; recomputing a checksum over the whole payload
//! would cost time in proportion to the packet size. RFC 1624 eqn. 3 instead adjusts the
//! stored checksum: `HC' = ~(~HC + ~m + m')` for every changed word `m -> m'`.

/// Sum of the changes to apply to one checksum. Collect every changed word, then
/// [`apply`](ChecksumDelta::apply) once.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumDelta(u32);

impl ChecksumDelta {
    /// Records that a 16-bit word changed from `old` to `new`.
    #[inline]
    pub fn word(&mut self, old: u16, new: u16) {
        // At most a handful of words per packet: the u32 cannot overflow before `apply`
        // folds it, but fold anyway so a long chain of updates stays correct.
        self.0 = fold32(self.0 + u32::from(!old) + u32::from(new));
    }

    /// Records that a 32-bit value (an IPv4 address) changed.
    #[inline]
    pub fn addr(&mut self, old: [u8; 4], new: [u8; 4]) {
        self.word(
            u16::from_be_bytes([old[0], old[1]]),
            u16::from_be_bytes([new[0], new[1]]),
        );
        self.word(
            u16::from_be_bytes([old[2], old[3]]),
            u16::from_be_bytes([new[2], new[3]]),
        );
    }

    /// Adds another delta (a field covered by two checksums moves both).
    #[inline]
    pub fn merge(&mut self, other: ChecksumDelta) {
        self.0 = fold32(self.0 + other.0);
    }

    /// Returns `checksum` adjusted for every recorded change.
    #[inline]
    pub fn apply(self, checksum: u16) -> u16 {
        !(fold32(u32::from(!checksum) + self.0) as u16)
    }

    /// Returns a partial checksum (the plain sum of a pseudo-header that a checksum offload
    /// finishes later) adjusted for every recorded change.
    #[inline]
    pub fn apply_partial(self, partial: u16) -> u16 {
        fold32(u32::from(partial) + self.0) as u16
    }

    /// As [`apply`](Self::apply) for a UDP checksum: zero means "no checksum" (RFC 768) and
    /// stays zero; a computed zero is sent as `0xffff`.
    #[inline]
    pub fn apply_udp(self, checksum: u16) -> u16 {
        if checksum == 0 {
            return 0;
        }
        match self.apply(checksum) {
            0 => 0xffff,
            c => c,
        }
    }
}

#[inline]
fn fold32(mut sum: u32) -> u32 {
    sum = (sum & 0xffff) + (sum >> 16);
    (sum & 0xffff) + (sum >> 16)
}

/// Reads the big-endian 16-bit word at `at`.
#[inline]
pub(crate) fn get16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Writes `value` big-endian at `at`.
#[inline]
pub(crate) fn set16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

/// The plain (not complemented) folded sum of an IPv4 pseudo-header: what a partial TCP or
/// UDP checksum field holds until the offload finishes it.
pub fn pseudo_header_sum(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u16 {
    let mut sum = u32::from(u16::from_be_bytes([src[0], src[1]]))
        + u32::from(u16::from_be_bytes([src[2], src[3]]))
        + u32::from(u16::from_be_bytes([dst[0], dst[1]]))
        + u32::from(u16::from_be_bytes([dst[2], dst[3]]))
        + u32::from(protocol)
        + u32::from(l4_len);
    sum = fold32(sum);
    sum as u16
}

/// The one's-complement sum of `data` (starting at an even offset of the packet), folded to
/// 16 bits and not complemented; `fast_sum(a) + fast_sum(b)` folds to the sum of `a ++ b`
/// when `a` has even length. Adds eight bytes at a time: segmenting a 64 KiB super-packet
/// sums every byte once.
pub fn fast_sum(data: &[u8]) -> u16 {
    // One's-complement addition commutes with byte swapping (RFC 1071 section 2(B)): sum
    // native-endian 32-bit words with the carries kept in a u64, fold, then swap once.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        acc += (w & 0xffff_ffff) + (w >> 32);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    let w = u64::from_ne_bytes(tail);
    acc += (w & 0xffff_ffff) + (w >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    let mut s = (acc & 0xffff) + (acc >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    let s = s as u16;
    if cfg!(target_endian = "little") {
        s.swap_bytes()
    } else {
        s
    }
}

/// Adds two folded sums.
pub fn add_sums(a: u16, b: u16) -> u16 {
    fold32(u32::from(a) + u32::from(b)) as u16
}

/// Full one's-complement checksum over `data` (for tests and for the packets we build).
pub fn full(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        sum = fold32(sum);
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(u16::from_be_bytes([*last, 0]));
    }
    !(fold32(sum) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_sum_matches_the_plain_sum_for_every_length_and_alignment() {
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in [0, 2, 4, 6] {
            for len in 0..data.len() - start {
                let d = &data[start..start + len];
                assert_eq!(!fast_sum(d), full(d), "start {start} len {len}");
            }
        }
        let all_ones = [0xffu8; 64];
        assert_eq!(!fast_sum(&all_ones), full(&all_ones));
        assert_eq!(
            add_sums(fast_sum(&data[..100]), fast_sum(&data[100..])),
            fast_sum(&data)
        );
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 section 4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285, HC' = 0x0000.
        let mut d = ChecksumDelta::default();
        d.word(0x5555, 0x3285);
        assert_eq!(d.apply(0xdd2f), 0x0000);
    }

    #[test]
    fn incremental_matches_full_recompute() {
        let mut data: Vec<u8> = (0u8..64).map(|b| b.wrapping_mul(37)).collect();
        data[10] = 0;
        data[11] = 0;
        let c = full(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            full(&data),
            0,
            "a packet with its checksum in place sums to zero"
        );

        let old_addr = [data[20], data[21], data[22], data[23]];
        let new_addr = [192, 168, 1, 100];
        let old_port = get16(&data, 30);
        let mut d = ChecksumDelta::default();
        d.addr(old_addr, new_addr);
        d.word(old_port, 40000);
        data[20..24].copy_from_slice(&new_addr);
        set16(&mut data, 30, 40000);
        let updated = d.apply(get16(&data, 10));
        set16(&mut data, 10, updated);
        assert_eq!(full(&data), 0);
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut d = ChecksumDelta::default();
        d.word(0x1234, 0x4321);
        assert_eq!(d.apply_udp(0), 0);
    }

    #[test]
    fn udp_computed_zero_becomes_ffff() {
        let mut d = ChecksumDelta::default();
        d.word(0x5555, 0x3285);
        assert_eq!(d.apply_udp(0xdd2f), 0xffff);
    }
}
