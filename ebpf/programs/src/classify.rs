//! Ethernet + IPv4 header parsing for the node programs (the pod classifier and the tunnel
//! programs, in `node_main.rs`); the gateway's fast path takes its header lengths from here.
//!
//! Reads only through [`Frame`]'s bounds-checked reads and takes the L4 offset from the IHL
//! field: IPv4 options move it, so it is never assumed to be 20 bytes past the IPv4 header.
//! A frame that is not IPv4 is an outcome, not an error; malformed IPv4 is an error with a
//! reason, which the entry point counts. Nothing here changes a frame or decides its fate.
//!
//! Limitation for now: an 802.1Q tag still in the frame data hides the IPv4 EtherType, so such a
//! frame counts as not IPv4 (tags that the driver moved into skb metadata do not matter).

use core::net::Ipv4Addr;

use egret_ebpf_common::ParseError;

use crate::frame::Frame;

/// Length of an Ethernet header without 802.1Q tags.
pub const ETH_HLEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Length of an IPv4 header without options (IHL 5).
pub const IPV4_MIN_HLEN: usize = 20;

/// What the parser learnt about a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classified {
    /// An IPv4 packet whose header is complete and well-formed.
    Ipv4(Ipv4Header),
    /// Another EtherType (ARP, IPv6, ...): passed on, counted apart.
    NotIpv4 {
        /// The frame's EtherType.
        ethertype: u16,
    },
}

/// The IPv4 header fields the programs use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol number of the L4 header (1 ICMP, 6 TCP, 17 UDP, ...).
    pub protocol: u8,
    /// Offset of the L4 header from the start of the frame: `ETH_HLEN + IHL * 4`. The whole IPv4
    /// header up to this offset, options included, is within the frame.
    pub l4_offset: usize,
}

/// Parses the Ethernet header and, for IPv4, the IPv4 header with its options.
#[inline(always)]
pub fn try_classify<F: Frame + ?Sized>(frame: &F) -> Result<Classified, ParseError> {
    let eth: [u8; ETH_HLEN] = frame.read(0).ok_or(ParseError::TruncatedEthernet)?;
    let ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    if ethertype != ETHERTYPE_IPV4 {
        return Ok(Classified::NotIpv4 { ethertype });
    }

    let ip: [u8; IPV4_MIN_HLEN] = frame.read(ETH_HLEN).ok_or(ParseError::TruncatedIpv4)?;
    if ip[0] >> 4 != 4 {
        return Err(ParseError::BadIpVersion);
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HLEN {
        return Err(ParseError::BadIhl);
    }
    let l4_offset = ETH_HLEN + header_len;
    if frame.len() < l4_offset {
        // Options announced by the IHL run past the end of the frame.
        return Err(ParseError::TruncatedIpv4);
    }

    Ok(Classified::Ipv4(Ipv4Header {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        protocol: ip[9],
        l4_offset,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Frames in the shape Linux sends them, with valid checksums.

    /// `ping 10.0.0.2` from 10.0.0.1: ICMP echo request, 56 bytes of data, IHL 5.
    const ICMP_ECHO_REQUEST: [u8; 98] = [
        0x02, 0x45, 0x67, 0x00, 0x00, 0x02, 0x02, 0x45, 0x67, 0x00, 0x00, 0x01, //
        0x08, 0x00, 0x45, 0x00, 0x00, 0x54, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x01, //
        0x0a, 0x61, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x08, 0x00, //
        0x32, 0xf0, 0x0c, 0x3a, 0x00, 0x01, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, //
        0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21, //
        0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a, 0x2b, 0x2c, 0x2d, //
        0x2e, 0x2f, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, //
        0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x40, 0x41, 0x42, 0x43, 0x44, 0x45, //
        0x46, 0x47,
    ];

    /// IGMPv3 membership report for 239.1.2.3 to 224.0.0.22: IHL 6, carrying the Router Alert
    /// option (94 04 00 00), so the IGMP header starts 24 bytes into the IPv4 header.
    const IGMPV3_REPORT_WITH_ROUTER_ALERT: [u8; 54] = [
        0x01, 0x00, 0x5e, 0x00, 0x00, 0x16, 0x02, 0x45, 0x67, 0x00, 0x00, 0x01, //
        0x08, 0x00, 0x46, 0xc0, 0x00, 0x28, 0x00, 0x00, 0x40, 0x00, 0x01, 0x02, //
        0xf9, 0xf8, 0x0a, 0x00, 0x00, 0x01, 0xe0, 0x00, 0x00, 0x16, 0x94, 0x04, //
        0x00, 0x00, 0x22, 0x00, 0xe8, 0xf9, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, //
        0x00, 0x00, 0xef, 0x01, 0x02, 0x03,
    ];

    /// Who has 10.0.0.2? Tell 10.0.0.1.
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x45, 0x67, 0x00, 0x00, 0x01, //
        0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x45, //
        0x67, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x0a, 0x00, 0x00, 0x02,
    ];

    fn with_byte(frame: &[u8], offset: usize, value: u8) -> Vec<u8> {
        let mut frame = frame.to_vec();
        frame[offset] = value;
        frame
    }

    #[test]
    fn icmp_echo_is_ipv4_with_l4_after_twenty_bytes() {
        assert_eq!(
            try_classify(&ICMP_ECHO_REQUEST[..]),
            Ok(Classified::Ipv4(Ipv4Header {
                src: Ipv4Addr::new(10, 0, 0, 1),
                dst: Ipv4Addr::new(10, 0, 0, 2),
                protocol: 1,
                l4_offset: 34,
            }))
        );
    }

    #[test]
    fn options_move_the_l4_offset() {
        let Ok(Classified::Ipv4(header)) = try_classify(&IGMPV3_REPORT_WITH_ROUTER_ALERT[..])
        else {
            panic!("IGMPv3 report not parsed as IPv4");
        };
        assert_eq!(header.protocol, 2);
        assert_eq!(header.l4_offset, 38);
        // The IGMP type (0x22, v3 report) sits exactly at the L4 offset.
        assert_eq!(IGMPV3_REPORT_WITH_ROUTER_ALERT[header.l4_offset], 0x22);
    }

    #[test]
    fn largest_ihl_is_accepted_when_its_options_are_present() {
        let mut frame = with_byte(&ICMP_ECHO_REQUEST, ETH_HLEN, 0x4f);
        frame.truncate(ETH_HLEN + 60);
        let Ok(Classified::Ipv4(header)) = try_classify(&frame[..]) else {
            panic!("IHL 15 with 60 header bytes present not parsed as IPv4");
        };
        assert_eq!(header.l4_offset, ETH_HLEN + 60);
    }

    #[test]
    fn other_ethertypes_are_not_ipv4_and_not_errors() {
        assert_eq!(
            try_classify(&ARP_REQUEST[..]),
            Ok(Classified::NotIpv4 { ethertype: 0x0806 })
        );
        // A bare Ethernet header of another type is complete: nothing else is read.
        assert_eq!(
            try_classify(&ARP_REQUEST[..ETH_HLEN]),
            Ok(Classified::NotIpv4 { ethertype: 0x0806 })
        );
    }

    #[test]
    fn short_ethernet_header_is_truncated_ethernet() {
        for len in [0, 1, 12, ETH_HLEN - 1] {
            assert_eq!(
                try_classify(&ICMP_ECHO_REQUEST[..len]),
                Err(ParseError::TruncatedEthernet),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn short_fixed_ipv4_header_is_truncated_ipv4() {
        for len in [ETH_HLEN, ETH_HLEN + 1, ETH_HLEN + IPV4_MIN_HLEN - 1] {
            assert_eq!(
                try_classify(&ICMP_ECHO_REQUEST[..len]),
                Err(ParseError::TruncatedIpv4),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn options_cut_short_are_truncated_ipv4() {
        // 20 bytes of the 24-byte header present, then 2 of the 4 option bytes.
        for len in [ETH_HLEN + 20, ETH_HLEN + 22, ETH_HLEN + 23] {
            assert_eq!(
                try_classify(&IGMPV3_REPORT_WITH_ROUTER_ALERT[..len]),
                Err(ParseError::TruncatedIpv4),
                "{len} bytes"
            );
        }
        // IHL 15 announces 60 bytes; a plain echo request has 20 + 64 after the Ethernet header,
        // so cut it just short of 60.
        let frame = with_byte(&ICMP_ECHO_REQUEST, ETH_HLEN, 0x4f);
        assert_eq!(
            try_classify(&frame[..ETH_HLEN + 59]),
            Err(ParseError::TruncatedIpv4)
        );
    }

    #[test]
    fn ihl_below_five_is_bad_ihl() {
        for ihl in 0..5 {
            let frame = with_byte(&ICMP_ECHO_REQUEST, ETH_HLEN, 0x40 | ihl);
            assert_eq!(
                try_classify(&frame[..]),
                Err(ParseError::BadIhl),
                "IHL {ihl}"
            );
        }
    }

    #[test]
    fn other_ip_versions_behind_the_ipv4_ethertype_are_bad_version() {
        for version in [0, 6, 15] {
            let frame = with_byte(&ICMP_ECHO_REQUEST, ETH_HLEN, (version << 4) | 5);
            assert_eq!(
                try_classify(&frame[..]),
                Err(ParseError::BadIpVersion),
                "version {version}"
            );
        }
    }
}
