//! The VXLAN header (RFC 7348 section 5).
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//! The I flag must be set for the VNI to be valid; the reserved bits are ignored on receipt
//! and sent as zero.

use smoltcp::wire::{Error, Result};

mod field {
    use core::ops::Range;
    pub const FLAGS: usize = 0;
    pub const VNI: Range<usize> = 4..7;
    pub const PAYLOAD: usize = 8;
}

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// The I flag: the VNI field is valid.
const FLAG_VNI_VALID: u8 = 0x08;

/// A read/write view of a VXLAN header and the Ethernet frame it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> VxlanPacket<T> {
        VxlanPacket { buffer }
    }

    /// Wraps a buffer after checking that it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<VxlanPacket<T>> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole header.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error)
        } else {
            Ok(())
        }
    }

    /// Whether the I flag marks the VNI as valid.
    pub fn vni_valid(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_VNI_VALID != 0
    }

    /// The 24-bit VXLAN Network Identifier.
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The encapsulated Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Writes the flags (I set, everything reserved zero) and the VNI.
    pub fn set_header(&mut self, vni: u32) {
        let b = self.buffer.as_mut();
        b[..HEADER_LEN].fill(0);
        b[field::FLAGS] = FLAG_VNI_VALID;
        b[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
    }
}

/// A parsed VXLAN header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanRepr {
    pub vni: u32,
}

impl VxlanRepr {
    /// Parses a header; a header without the I flag has no VNI and is refused.
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> Result<VxlanRepr> {
        packet.check_len()?;
        if !packet.vni_valid() {
            return Err(Error);
        }
        Ok(VxlanRepr { vni: packet.vni() })
    }

    /// Length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the front of `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut VxlanPacket<T>) {
        packet.set_header(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VNI 5000 as Linux's vxlan device sends it, followed by two bytes of payload.
    const VNI_5000: [u8; 10] = [0x08, 0, 0, 0, 0x00, 0x13, 0x88, 0x00, 0xaa, 0xbb];

    #[test]
    fn parses_linux_header() {
        let p = VxlanPacket::new_checked(&VNI_5000[..]).unwrap();
        assert_eq!(VxlanRepr::parse(&p).unwrap(), VxlanRepr { vni: 5000 });
        assert_eq!(p.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn emit_then_parse_round_trips_and_matches_linux() {
        let mut buf = [0xffu8; 10];
        let repr = VxlanRepr { vni: 5000 };
        repr.emit(&mut VxlanPacket::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..8], &VNI_5000[..8]);
        let p = VxlanPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(VxlanRepr::parse(&p).unwrap(), repr);
        assert_eq!(repr.buffer_len(), 8);
    }

    #[test]
    fn refuses_short_headers_and_missing_i_flag() {
        for len in 0..HEADER_LEN {
            assert!(VxlanPacket::new_checked(&VNI_5000[..len]).is_err());
        }
        let mut no_flag = VNI_5000;
        no_flag[0] = 0;
        let p = VxlanPacket::new_checked(&no_flag[..]).unwrap();
        assert!(VxlanRepr::parse(&p).is_err());
    }

    #[test]
    fn largest_vni_survives() {
        let mut buf = [0u8; 8];
        VxlanRepr { vni: 0x00ff_ffff }.emit(&mut VxlanPacket::new_unchecked(&mut buf[..]));
        assert_eq!(VxlanPacket::new_unchecked(&buf[..]).vni(), 0x00ff_ffff);
    }
}
