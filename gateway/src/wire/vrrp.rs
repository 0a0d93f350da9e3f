//! The VRRPv3 advertisement for IPv4 (RFC 5798 section 5).
//!
//! ```text
//!  0                   1                   2                   3
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! |                       IPvX Address(es)                        |
//! ```
//!
//! The checksum: RFC 5798 section 5.2.8 adds a pseudo-header, which implementations read
//! differently for IPv4. keepalived (by default) and the RFC's own text include the IPv4
//! pseudo-header (source, destination, zero, protocol 112, VRRP length); Cisco, FRR (by
//! default) and the RFC 5798bis draft leave it out. Adverts are sent with it, as keepalived
//! does, and received either way: a checksum right under one reading is accepted.
//!
//! [`Advert::parse_ipv4`] reads a whole IPv4 packet and applies every check RFC 5798
//! section 7.1 asks of a receiver that does not depend on configuration: TTL 255, version
//! 3, type advertisement, a length that matches the address count, the checksum. The checks
//! that depend on configuration and on the election's state (who may advertise, the
//! floating IP in the list, a peer's verified priority) are the election's
//! ([`crate::election`]); their refusals are counted under reasons of the same
//! [`AdvertError`], so that one list names them all.

use core::net::Ipv4Addr;

use smoltcp::wire::{IpProtocol, Ipv4Packet};

use crate::nat::checksum::{add_sums, fast_sum, full, pseudo_header_sum};

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The VRRP multicast group.
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Its Ethernet address (RFC 1112: 01:00:5e + the group's low 23 bits).
pub const MULTICAST_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];
/// The TTL every advert is sent with and must arrive with.
pub const TTL: u8 = 255;
/// Length of the fixed header, before the addresses.
pub const HEADER_LEN: usize = 8;
/// Most IPv4 addresses one advert carries here.
pub const MAX_ADDRESSES: usize = 32;

const VERSION: u8 = 3;
const TYPE_ADVERTISEMENT: u8 = 1;

mod field {
    use core::ops::Range;
    pub const VERSION_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const MAX_ADVER_INT: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Why a received advert was refused; each is counted under its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AdvertError {
    #[error("not an IPv4 packet carrying VRRP")]
    NotVrrp,
    #[error("TTL is not 255: the advert crossed a router")]
    Ttl,
    #[error("version is not 3")]
    Version,
    #[error("type is not advertisement")]
    Type,
    #[error("length does not match the header and its address count")]
    Length,
    #[error("checksum is wrong")]
    Checksum,
    // The election's refusals of well-formed adverts.
    #[error("the source is not one of [election].peers")]
    NotPeer,
    #[error("the address list does not hold the VRID's floating IP")]
    AddressMismatch,
    #[error("the priority differs from the one the peer announced over the authenticated sync")]
    Unverified,
    #[error("priority 0 (the master leaving) from a source that is not the current master")]
    ZeroNotFromMaster,
}

impl AdvertError {
    /// Every reason, in a fixed order (metrics list them all from the start): first those
    /// of [`Advert::parse_ipv4`], then the election's.
    pub const ALL: [AdvertError; 10] = [
        AdvertError::NotVrrp,
        AdvertError::Ttl,
        AdvertError::Version,
        AdvertError::Type,
        AdvertError::Length,
        AdvertError::Checksum,
        AdvertError::NotPeer,
        AdvertError::AddressMismatch,
        AdvertError::Unverified,
        AdvertError::ZeroNotFromMaster,
    ];

    /// The `reason` label of the rejected-adverts counter.
    pub fn label(self) -> &'static str {
        match self {
            AdvertError::NotVrrp => "not_vrrp",
            AdvertError::Ttl => "ttl",
            AdvertError::Version => "version",
            AdvertError::Type => "type",
            AdvertError::Length => "length",
            AdvertError::Checksum => "checksum",
            AdvertError::NotPeer => "not_peer",
            AdvertError::AddressMismatch => "address_mismatch",
            AdvertError::Unverified => "unverified",
            AdvertError::ZeroNotFromMaster => "zero_not_from_master",
        }
    }
}

/// A VRRPv3 advertisement, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub vrid: u8,
    /// 0 means the sender is leaving; 255 is the address owner's.
    pub priority: u8,
    /// Advertisement interval in centiseconds (12 bits).
    pub interval_centis: u16,
    pub addresses: Vec<Ipv4Addr>,
}

/// An advert with where it came from, as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub advert: Advert,
}

impl Advert {
    /// The VRRP message's length.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 4 * self.addresses.len().min(MAX_ADDRESSES)
    }

    /// Writes the VRRP message into `buf` (at least [`buffer_len`](Self::buffer_len)
    /// bytes), with the checksum over the IPv4 pseudo-header of `source` → `destination`.
    pub fn emit(&self, buf: &mut [u8], source: Ipv4Addr, destination: Ipv4Addr) {
        let len = self.buffer_len();
        let buf = &mut buf[..len];
        buf[field::VERSION_TYPE] = (VERSION << 4) | TYPE_ADVERTISEMENT;
        buf[field::VRID] = self.vrid;
        buf[field::PRIORITY] = self.priority;
        buf[field::COUNT] = self.addresses.len().min(MAX_ADDRESSES) as u8;
        buf[field::MAX_ADVER_INT].copy_from_slice(&(self.interval_centis & 0x0fff).to_be_bytes());
        buf[field::CHECKSUM].copy_from_slice(&[0, 0]);
        for (i, a) in self.addresses.iter().take(MAX_ADDRESSES).enumerate() {
            buf[HEADER_LEN + 4 * i..HEADER_LEN + 4 * i + 4].copy_from_slice(&a.octets());
        }
        let sum = !add_sums(pseudo_sum(source, destination, len), fast_sum(buf));
        buf[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    }

    /// The whole IPv4 packet: header (TTL 255, protocol 112, DSCP CS6 as routing protocols
    /// use) and the advert.
    pub fn emit_ipv4(&self, source: Ipv4Addr, destination: Ipv4Addr) -> Vec<u8> {
        let vrrp_len = self.buffer_len();
        let mut p = vec![0u8; 20 + vrrp_len];
        p[0] = 0x45;
        p[1] = 0xc0;
        p[2..4].copy_from_slice(&((20 + vrrp_len) as u16).to_be_bytes());
        p[8] = TTL;
        p[9] = PROTOCOL;
        p[12..16].copy_from_slice(&source.octets());
        p[16..20].copy_from_slice(&destination.octets());
        let sum = full(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        self.emit(&mut p[20..], source, destination);
        p
    }

    /// Reads and checks an IPv4 packet carrying an advert.
    pub fn parse_ipv4(packet: &[u8]) -> Result<Received, AdvertError> {
        let ip = Ipv4Packet::new_checked(packet).map_err(|_| AdvertError::NotVrrp)?;
        if ip.version() != 4
            || ip.next_header() != IpProtocol::Unknown(PROTOCOL)
            || ip.more_frags()
            || ip.frag_offset() != 0
        {
            return Err(AdvertError::NotVrrp);
        }
        if ip.hop_limit() != TTL {
            return Err(AdvertError::Ttl);
        }
        let (source, destination) = (ip.src_addr(), ip.dst_addr());
        let advert = Self::parse(ip.payload(), source, destination)?;
        Ok(Received {
            source,
            destination,
            advert,
        })
    }

    /// Reads and checks a VRRP message that came from `source` to `destination`.
    pub fn parse(
        buf: &[u8],
        source: Ipv4Addr,
        destination: Ipv4Addr,
    ) -> Result<Advert, AdvertError> {
        if buf.len() < HEADER_LEN {
            return Err(AdvertError::Length);
        }
        if buf[field::VERSION_TYPE] >> 4 != VERSION {
            return Err(AdvertError::Version);
        }
        if buf[field::VERSION_TYPE] & 0x0f != TYPE_ADVERTISEMENT {
            return Err(AdvertError::Type);
        }
        let count = usize::from(buf[field::COUNT]);
        if count == 0 || count > MAX_ADDRESSES || buf.len() != HEADER_LEN + 4 * count {
            return Err(AdvertError::Length);
        }
        let plain = fast_sum(buf);
        let right = plain == 0xffff
            || add_sums(plain, pseudo_sum(source, destination, buf.len())) == 0xffff;
        if !right {
            return Err(AdvertError::Checksum);
        }
        let interval = u16::from_be_bytes([buf[4], buf[5]]) & 0x0fff;
        Ok(Advert {
            vrid: buf[field::VRID],
            priority: buf[field::PRIORITY],
            interval_centis: interval,
            addresses: buf[HEADER_LEN..]
                .chunks_exact(4)
                .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
                .collect(),
        })
    }
}

fn pseudo_sum(source: Ipv4Addr, destination: Ipv4Addr, len: usize) -> u16 {
    pseudo_header_sum(source.octets(), destination.octets(), PROTOCOL, len as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keepalived 2.0 advert (VRRPv3, unicast), as its checksum debugging logs it:
    /// 10.1.0.3 → 10.1.0.1, VRID 88, priority 198, 1 address 10.195.76.227, interval
    /// 100 cs, checksum 0x9c19 with the IPv4 pseudo-header (the IPv4 header checksum is
    /// still zero: the kernel fills it in).
    const KEEPALIVED: [u8; 32] = [
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0xff, 0x70, 0x00, 0x00, 0x0a, 0x01, 0x00,
        0x03, 0x0a, 0x01, 0x00, 0x01, 0x31, 0x58, 0xc6, 0x01, 0x00, 0x64, 0x9c, 0x19, 0x0a, 0xc3,
        0x4c, 0xe3,
    ];

    fn advert() -> Advert {
        Advert {
            vrid: 10,
            priority: 150,
            interval_centis: 10,
            addresses: vec![Ipv4Addr::new(192, 168, 1, 100)],
        }
    }

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);

    #[test]
    fn a_keepalived_advert_parses_with_its_pseudo_header_checksum() {
        // keepalived leaves the IPv4 header checksum to the kernel; ours does not read it.
        let r = Advert::parse_ipv4(&KEEPALIVED).expect("valid advert");
        assert_eq!(r.source, Ipv4Addr::new(10, 1, 0, 3));
        assert_eq!(r.destination, Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(
            r.advert,
            Advert {
                vrid: 88,
                priority: 198,
                interval_centis: 100,
                addresses: vec![Ipv4Addr::new(10, 195, 76, 227)],
            }
        );
        // Our emit writes the same bytes.
        let again = r.advert.emit_ipv4(r.source, r.destination);
        assert_eq!(again[20..], KEEPALIVED[20..]);
    }

    #[test]
    fn emit_then_parse_round_trips_and_the_header_checksum_is_right() {
        let p = advert().emit_ipv4(SRC, MULTICAST_GROUP);
        assert_eq!(full(&p[..20]), 0);
        let r = Advert::parse_ipv4(&p).expect("valid");
        assert_eq!(r.advert, advert());
        assert_eq!((r.source, r.destination), (SRC, MULTICAST_GROUP));
    }

    #[test]
    fn a_checksum_without_the_pseudo_header_is_accepted_too() {
        let mut p = advert().emit_ipv4(SRC, MULTICAST_GROUP);
        p[26..28].copy_from_slice(&[0, 0]);
        let sum = full(&p[20..]);
        p[26..28].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(Advert::parse_ipv4(&p).map(|r| r.advert), Ok(advert()));
    }

    #[test]
    fn each_malformation_is_refused_with_its_reason() {
        let good = advert().emit_ipv4(SRC, MULTICAST_GROUP);
        let refuse = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            f(&mut p);
            Advert::parse_ipv4(&p).map(|r| r.advert)
        };
        assert_eq!(refuse(&|p| p[8] = 254), Err(AdvertError::Ttl));
        assert_eq!(refuse(&|p| p[20] = 0x21), Err(AdvertError::Version));
        assert_eq!(refuse(&|p| p[20] = 0x32), Err(AdvertError::Type));
        assert_eq!(refuse(&|p| p[23] = 2), Err(AdvertError::Length));
        assert_eq!(refuse(&|p| p[23] = 0), Err(AdvertError::Length));
        assert_eq!(refuse(&|p| p[22] ^= 1), Err(AdvertError::Checksum));
        assert_eq!(refuse(&|p| p[9] = 17), Err(AdvertError::NotVrrp));
        assert_eq!(
            refuse(&|p| {
                p.truncate(24);
                p[2..4].copy_from_slice(&24u16.to_be_bytes());
            }),
            Err(AdvertError::Length)
        );
        assert_eq!(refuse(&|p| p.truncate(10)), Err(AdvertError::NotVrrp));
    }

    #[test]
    fn parsing_never_panics_on_any_prefix_or_byte_flip() {
        let good = advert().emit_ipv4(SRC, MULTICAST_GROUP);
        for n in 0..good.len() {
            let _ = Advert::parse_ipv4(&good[..n]);
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut p = good.clone();
                p[i] ^= 1 << bit;
                let _ = Advert::parse_ipv4(&p);
            }
        }
    }
}
