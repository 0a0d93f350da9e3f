//! The node programs' decisions: which policy selects a packet, the tunnel key that sends
//! it to its egress address, and where the MSS of a TCP SYN sits and what it becomes.
//!
//! The entry points in `node_main.rs` own the maps and the helper calls; everything here
//! only reads a frame through [`Frame`] and returns values, so the host tests run it on
//! byte fixtures. Map lookups come in as closures, so [`select`] is the same code with the
//! real maps in the kernel and with a table in a test.
//!
//! Frames start with their Ethernet header, as tc shows them on a pod interface and on
//! the tunnel device (an L2 device) alike; the TCP header is found from the IHL, never
//! assumed 20 bytes after the IPv4 header. Nothing malformed is an error here: a TCP
//! header whose options do not parse simply has no MSS to clamp.

use aya_ebpf::bindings::{
    BPF_F_ZERO_CSUM_TX, bpf_tunnel_key, bpf_tunnel_key__bindgen_ty_1, bpf_tunnel_key__bindgen_ty_2,
    bpf_tunnel_key__bindgen_ty_3,
};
use aya_ebpf::maps::lpm_trie::Key;
use egret_ebpf_common::node::{
    ACTION_TUNNEL, CLASS_BITS, DestKey, DestValue, NodeConfig, SourceValue,
};

use crate::classify::{ETH_HLEN, Ipv4Header};
use crate::frame::Frame;

/// IPv4 protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Offset of the checksum in the TCP header.
pub const TCP_CHECKSUM: usize = 16;
/// TTL of the outer IPv4 header when the configuration leaves it 0 (Linux's default).
pub const DEFAULT_TUNNEL_TTL: u8 = 64;
/// Flags for `bpf_skb_set_tunnel_key`: an outer UDP checksum of zero, as Linux's VXLAN
/// sends by default (`udpcsum` off).
pub const TUNNEL_KEY_FLAGS: u64 = BPF_F_ZERO_CSUM_TX as u64;

const TCP_MIN_HLEN: usize = 20;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
const TCPOLEN_MSS: usize = 4;
/// The most option bytes a TCP header holds (data offset 15). Every step of the option walk
/// moves on by at least one byte, so this many steps always reach the end: the bound the
/// verifier needs to accept the loop.
const TCP_MAX_OPTIONS: usize = 40;

/// What the policies make of an IPv4 packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selection {
    /// No policy selects the source.
    Unselected,
    /// The source is selected, but not toward this destination (no entry, an excluded CIDR,
    /// or an entry with an action this program does not know).
    Skip,
    /// Tunnel it to `egress` for `policy`.
    Tunnel {
        /// The policy's id.
        policy: u64,
        /// The policy's egress address, network byte order.
        egress: [u8; 4],
    },
}

/// The [`SOURCES_MAP`](egret_ebpf_common::node::SOURCES_MAP) key of a source address: a
/// full-length (/32) lookup.
#[inline(always)]
pub fn source_key(src: [u8; 4]) -> Key<[u8; 4]> {
    Key::new(32, src)
}

/// The [`DESTINATIONS_MAP`](egret_ebpf_common::node::DESTINATIONS_MAP) key of a class and a
/// destination address: the class matched in full, then all 32 address bits.
#[inline(always)]
pub fn dest_key(class: u64, dst: [u8; 4]) -> Key<DestKey> {
    Key::new(CLASS_BITS + 32, DestKey::new(class, dst))
}

/// Looks the packet up: its source in `sources`, then its class and destination in `dests`.
#[inline(always)]
pub fn select(
    ip: &Ipv4Header,
    sources: impl FnOnce(&Key<[u8; 4]>) -> Option<SourceValue>,
    dests: impl FnOnce(&Key<DestKey>) -> Option<DestValue>,
) -> Selection {
    let Some(source) = sources(&source_key(ip.src.octets())) else {
        return Selection::Unselected;
    };
    match dests(&dest_key(source.class, ip.dst.octets())) {
        Some(DestValue {
            policy,
            egress,
            action: ACTION_TUNNEL,
        }) => Selection::Tunnel { policy, egress },
        _ => Selection::Skip,
    }
}

/// The tunnel key that sends a packet to `egress` (network byte order) with the configured
/// VNI and TTL. The kernel wants the remote address in host byte order; the local address
/// stays 0, so the route to the remote picks it.
#[inline(always)]
pub fn tunnel_key(cfg: &NodeConfig, egress: [u8; 4]) -> bpf_tunnel_key {
    let ttl = if cfg.ttl == 0 {
        DEFAULT_TUNNEL_TTL
    } else {
        cfg.ttl
    };
    bpf_tunnel_key {
        tunnel_id: cfg.vni,
        // Every byte is written (the kernel reads all of them), the IPv6 tail as zeros.
        __bindgen_anon_1: bpf_tunnel_key__bindgen_ty_1 {
            remote_ipv6: [u32::from_be_bytes(egress), 0, 0, 0],
        },
        tunnel_tos: 0,
        tunnel_ttl: ttl,
        __bindgen_anon_2: bpf_tunnel_key__bindgen_ty_2 { tunnel_ext: 0 },
        tunnel_label: 0,
        __bindgen_anon_3: bpf_tunnel_key__bindgen_ty_3 { local_ipv6: [0; 4] },
    }
}

/// An all-zero tunnel key, for `bpf_skb_get_tunnel_key` to fill in.
#[inline(always)]
pub fn empty_tunnel_key() -> bpf_tunnel_key {
    tunnel_key(&NodeConfig::default(), [0; 4])
}

/// The outer source of a received tunnel key as the gateway map keeps it (network byte
/// order); the kernel gives it in host byte order.
#[inline(always)]
pub fn tunnel_remote(key: &bpf_tunnel_key) -> [u8; 4] {
    // SAFETY: every bit pattern is a valid u32; `tunnel_key` and the kernel write all of it.
    unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be_bytes()
}

/// Bytes of the packet behind the Ethernet header of a frame `skb_len` long (for a
/// super-packet: its segments' payloads and one set of headers).
#[inline(always)]
pub fn inner_bytes(skb_len: u32) -> u64 {
    u64::from(skb_len.saturating_sub(ETH_HLEN as u32))
}

/// The flags byte (CWR … FIN) of the TCP header at `l4`.
#[inline(always)]
pub fn tcp_flags<F: Frame + ?Sized>(frame: &F, l4: usize) -> Option<u8> {
    frame.read::<1>(l4 + 13).map(|[flags]| flags)
}

/// An MSS option found in a TCP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MssOption {
    /// Offset of the option's two-byte value from the start of the frame.
    pub offset: usize,
    /// The value.
    pub value: u16,
}

/// Finds the MSS option of the TCP header at `l4`. `None` when the header is cut short,
/// its data offset is below 5, the options end (EOL) before an MSS, or an option's length
/// is below 2, runs past the header, or is not 4 for the MSS: a header whose options do not
/// parse is left alone.
#[inline(always)]
pub fn find_mss<F: Frame + ?Sized>(frame: &F, l4: usize) -> Option<MssOption> {
    let [data_offset] = frame.read::<1>(l4 + 12)?;
    let header_len = usize::from(data_offset >> 4) * 4;
    if header_len < TCP_MIN_HLEN {
        return None;
    }
    let end = l4 + header_len;
    if frame.len() < end {
        return None;
    }
    let mut at = l4 + TCP_MIN_HLEN;
    for _ in 0..TCP_MAX_OPTIONS {
        if at >= end {
            return None;
        }
        let [kind] = frame.read::<1>(at)?;
        if kind == TCPOPT_EOL {
            return None;
        }
        if kind == TCPOPT_NOP {
            at += 1;
            continue;
        }
        if at + 1 >= end {
            return None;
        }
        let [len] = frame.read::<1>(at + 1)?;
        let len = usize::from(len);
        if len < 2 || at + len > end {
            return None;
        }
        if kind == TCPOPT_MSS {
            if len != TCPOLEN_MSS {
                return None;
            }
            let value = frame.read::<2>(at + 2)?;
            return Some(MssOption {
                offset: at + 2,
                value: u16::from_be_bytes(value),
            });
        }
        at += len;
    }
    None
}

/// The MSS option of a TCP SYN (or SYN-ACK) without RST, in an unfragmented packet or
/// its first fragment; `None` for every other packet.
#[inline(always)]
pub fn syn_mss<F: Frame + ?Sized>(frame: &F, ip: &Ipv4Header) -> Option<MssOption> {
    if ip.protocol != PROTO_TCP {
        return None;
    }
    let fragment: [u8; 2] = frame.read(ETH_HLEN + 6)?;
    if u16::from_be_bytes(fragment) & 0x1fff != 0 {
        return None;
    }
    let flags = tcp_flags(frame, ip.l4_offset)?;
    if flags & TCP_SYN == 0 || flags & TCP_RST != 0 {
        return None;
    }
    find_mss(frame, ip.l4_offset)
}

/// A two-byte rewrite of an MSS value, both values in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MssRewrite {
    /// Offset of the value from the start of the frame.
    pub offset: usize,
    /// The bytes there now.
    pub old: [u8; 2],
    /// The bytes to write.
    pub new: [u8; 2],
}

/// The rewrite that lowers `found` to `max`, if it is above. A `max` of 0 turns clamping
/// off rather than announcing an MSS of 0.
#[inline(always)]
pub fn clamp(found: MssOption, max: u16) -> Option<MssRewrite> {
    if max == 0 || found.value <= max {
        return None;
    }
    Some(MssRewrite {
        offset: found.offset,
        old: found.value.to_be_bytes(),
        new: max.to_be_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::{Classified, try_classify};
    use core::net::Ipv4Addr;
    use egret_ebpf_common::node::{ACTION_SKIP, class_id, policy_id};

    // Captured on a veth between two network namespaces (Linux 6.18, MTU 1500): a connect()
    // to 10.213.0.2:8080 from 10.213.0.1. The TCP checksums are filled in (the capture
    // holds the partial sums of checksum offload); every other byte is as Linux sent it.

    /// SYN: MSS 1460, SACK_PERM, TS, NOP, WSCALE 10.
    const LINUX_SYN: [u8; 74] = [
        0x3e, 0x87, 0x51, 0xe7, 0x9d, 0xd4, 0xbe, 0x24, 0xf7, 0xf6, 0x01, 0xbf, //
        0x08, 0x00, 0x45, 0x00, 0x00, 0x3c, 0xbd, 0x73, 0x40, 0x00, 0x40, 0x06, //
        0x67, 0x9c, 0x0a, 0xd5, 0x00, 0x01, 0x0a, 0xd5, 0x00, 0x02, 0xe3, 0xaf, //
        0x1f, 0x90, 0x2f, 0x60, 0x7a, 0x80, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, //
        0xfa, 0xf0, 0xc3, 0x79, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, //
        0x08, 0x0a, 0xbe, 0x09, 0x08, 0xbc, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, //
        0x03, 0x0a,
    ];

    /// The SYN-ACK answering it: the same options in the same order.
    const LINUX_SYN_ACK: [u8; 74] = [
        0xbe, 0x24, 0xf7, 0xf6, 0x01, 0xbf, 0x3e, 0x87, 0x51, 0xe7, 0x9d, 0xd4, //
        0x08, 0x00, 0x45, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x06, //
        0x25, 0x10, 0x0a, 0xd5, 0x00, 0x02, 0x0a, 0xd5, 0x00, 0x01, 0x1f, 0x90, //
        0xe3, 0xaf, 0x77, 0xf8, 0x5a, 0xfa, 0x2f, 0x60, 0x7a, 0x81, 0xa0, 0x12, //
        0xfe, 0x88, 0x34, 0x41, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, //
        0x08, 0x0a, 0xb0, 0x8a, 0x08, 0x12, 0xbe, 0x09, 0x08, 0xbc, 0x01, 0x03, //
        0x03, 0x0a,
    ];

    /// The ACK that completes the handshake: NOP, NOP, TS.
    const LINUX_ACK: [u8; 66] = [
        0x3e, 0x87, 0x51, 0xe7, 0x9d, 0xd4, 0xbe, 0x24, 0xf7, 0xf6, 0x01, 0xbf, //
        0x08, 0x00, 0x45, 0x00, 0x00, 0x34, 0xbd, 0x74, 0x40, 0x00, 0x40, 0x06, //
        0x67, 0xa3, 0x0a, 0xd5, 0x00, 0x01, 0x0a, 0xd5, 0x00, 0x02, 0xe3, 0xaf, //
        0x1f, 0x90, 0x2f, 0x60, 0x7a, 0x81, 0x77, 0xf8, 0x5a, 0xfb, 0x80, 0x10, //
        0x00, 0x3f, 0x61, 0x5a, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0xbe, 0x09, //
        0x08, 0xbc, 0xb0, 0x8a, 0x08, 0x12,
    ];

    // Built from LINUX_SYN, lengths and checksums made right.

    /// The MSS last: NOP, NOP, TS, NOP, WSCALE, SACK_PERM, MSS 1460, EOL, EOL (data
    /// offset 11).
    const SYN_OPTIONS_REORDERED: [u8; 78] = [
        0x3e, 0x87, 0x51, 0xe7, 0x9d, 0xd4, 0xbe, 0x24, 0xf7, 0xf6, 0x01, 0xbf, //
        0x08, 0x00, 0x45, 0x00, 0x00, 0x40, 0xbd, 0x73, 0x40, 0x00, 0x40, 0x06, //
        0x67, 0x98, 0x0a, 0xd5, 0x00, 0x01, 0x0a, 0xd5, 0x00, 0x02, 0xe3, 0xaf, //
        0x1f, 0x90, 0x2f, 0x60, 0x7a, 0x80, 0x00, 0x00, 0x00, 0x00, 0xb0, 0x02, //
        0xfa, 0xf0, 0xb2, 0x74, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0xbe, 0x09, //
        0x08, 0xbc, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a, 0x04, 0x02, //
        0x02, 0x04, 0x05, 0xb4, 0x00, 0x00,
    ];

    /// No MSS: SACK_PERM, TS, NOP, WSCALE.
    const SYN_WITHOUT_MSS: [u8; 70] = [
        0x3e, 0x87, 0x51, 0xe7, 0x9d, 0xd4, 0xbe, 0x24, 0xf7, 0xf6, 0x01, 0xbf, //
        0x08, 0x00, 0x45, 0x00, 0x00, 0x38, 0xbd, 0x73, 0x40, 0x00, 0x40, 0x06, //
        0x67, 0xa0, 0x0a, 0xd5, 0x00, 0x01, 0x0a, 0xd5, 0x00, 0x02, 0xe3, 0xaf, //
        0x1f, 0x90, 0x2f, 0x60, 0x7a, 0x80, 0x00, 0x00, 0x00, 0x00, 0x90, 0x02, //
        0xfa, 0xf0, 0xdb, 0x35, 0x00, 0x00, 0x04, 0x02, 0x08, 0x0a, 0xbe, 0x09, //
        0x08, 0xbc, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];

    /// IHL 6 (Router Alert), so the TCP header starts 24 bytes into the IPv4 header.
    const SYN_WITH_IPV4_OPTIONS: [u8; 78] = [
        0x3e, 0x87, 0x51, 0xe7, 0x9d, 0xd4, 0xbe, 0x24, 0xf7, 0xf6, 0x01, 0xbf, //
        0x08, 0x00, 0x46, 0x00, 0x00, 0x40, 0xbd, 0x73, 0x40, 0x00, 0x40, 0x06, //
        0xd2, 0x93, 0x0a, 0xd5, 0x00, 0x01, 0x0a, 0xd5, 0x00, 0x02, 0x94, 0x04, //
        0x00, 0x00, 0xe3, 0xaf, 0x1f, 0x90, 0x2f, 0x60, 0x7a, 0x80, 0x00, 0x00, //
        0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0xc3, 0x79, 0x00, 0x00, 0x02, 0x04, //
        0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0xbe, 0x09, 0x08, 0xbc, 0x00, 0x00, //
        0x00, 0x00, 0x01, 0x03, 0x03, 0x0a,
    ];

    /// Where the TCP header of the fixtures without IPv4 options starts.
    const L4: usize = 34;

    fn ipv4(frame: &[u8]) -> Ipv4Header {
        match try_classify(frame) {
            Ok(Classified::Ipv4(ip)) => ip,
            other => panic!("not an IPv4 packet: {other:?}"),
        }
    }

    fn mss_at(offset: usize, value: u16) -> Option<MssOption> {
        Some(MssOption { offset, value })
    }

    /// LINUX_SYN with its options (20 bytes at 54) replaced by `options`, padded with EOL
    /// to a multiple of 4, and the data offset set to match. Checksums are not fixed.
    fn syn_with_options(options: &[u8]) -> Vec<u8> {
        let mut frame = LINUX_SYN[..L4 + TCP_MIN_HLEN].to_vec();
        frame.extend_from_slice(options);
        while !(frame.len() - L4 - TCP_MIN_HLEN).is_multiple_of(4) {
            frame.push(TCPOPT_EOL);
        }
        let words = (frame.len() - L4) / 4;
        assert!(words <= 15, "{} option bytes do not fit", options.len());
        frame[L4 + 12] = (words as u8) << 4;
        frame
    }

    // RFC 1071 one's-complement sums, for the checksum tests.

    fn sum16(bytes: &[u8], mut sum: u32) -> u32 {
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
        sum
    }

    fn fold(mut sum: u32) -> u16 {
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// The one's-complement sum over the TCP pseudo header and segment of a frame without
    /// IPv4 options: 0xffff when its checksum is right.
    fn tcp_sum(frame: &[u8]) -> u16 {
        let segment = &frame[L4..];
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&frame[26..34]);
        pseudo[9] = PROTO_TCP;
        pseudo[10..].copy_from_slice(&(segment.len() as u16).to_be_bytes());
        fold(sum16(segment, sum16(&pseudo, 0)))
    }

    /// RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m').
    fn incremental(checksum: u16, old: u16, new: u16) -> u16 {
        !fold(u32::from(!checksum) + u32::from(!old) + u32::from(new))
    }

    #[test]
    fn fixture_checksums_are_right() {
        for frame in [
            &LINUX_SYN[..],
            &LINUX_SYN_ACK[..],
            &LINUX_ACK[..],
            &SYN_OPTIONS_REORDERED[..],
            &SYN_WITHOUT_MSS[..],
        ] {
            assert_eq!(tcp_sum(frame), 0xffff, "{frame:02x?}");
        }
    }

    #[test]
    fn linux_syn_and_syn_ack_have_their_mss_first() {
        // Options start at 54; the MSS value follows its kind and length.
        assert_eq!(find_mss(&LINUX_SYN[..], L4), mss_at(56, 1460));
        assert_eq!(syn_mss(&LINUX_SYN[..], &ipv4(&LINUX_SYN)), mss_at(56, 1460));
        assert_eq!(
            syn_mss(&LINUX_SYN_ACK[..], &ipv4(&LINUX_SYN_ACK)),
            mss_at(56, 1460)
        );
    }

    #[test]
    fn mss_is_found_behind_other_options() {
        // NOP NOP (54, 55), TS (56..66), NOP (66), WSCALE (67..70), SACK_PERM (70, 71),
        // MSS (72..76).
        assert_eq!(
            syn_mss(&SYN_OPTIONS_REORDERED[..], &ipv4(&SYN_OPTIONS_REORDERED)),
            mss_at(74, 1460)
        );
    }

    #[test]
    fn ipv4_options_move_the_tcp_header() {
        let ip = ipv4(&SYN_WITH_IPV4_OPTIONS);
        assert_eq!(ip.l4_offset, 38);
        assert_eq!(syn_mss(&SYN_WITH_IPV4_OPTIONS[..], &ip), mss_at(60, 1460));
    }

    #[test]
    fn a_syn_without_mss_has_none() {
        assert_eq!(syn_mss(&SYN_WITHOUT_MSS[..], &ipv4(&SYN_WITHOUT_MSS)), None);
    }

    #[test]
    fn only_syns_without_rst_are_clamped() {
        assert_eq!(tcp_flags(&LINUX_ACK[..], L4), Some(0x10));
        assert_eq!(syn_mss(&LINUX_ACK[..], &ipv4(&LINUX_ACK)), None);
        // An ACK whose options held an MSS still is no SYN.
        let mut ack = LINUX_SYN;
        ack[L4 + 13] = 0x10;
        assert_eq!(syn_mss(&ack[..], &ipv4(&ack)), None);
        let mut syn_rst = LINUX_SYN;
        syn_rst[L4 + 13] = TCP_SYN | TCP_RST;
        assert_eq!(syn_mss(&syn_rst[..], &ipv4(&syn_rst)), None);
        // Other flags beside SYN (ECN setup: ECE, CWR) do not matter.
        let mut ecn_syn = LINUX_SYN;
        ecn_syn[L4 + 13] = 0xc2;
        assert_eq!(syn_mss(&ecn_syn[..], &ipv4(&ecn_syn)), mss_at(56, 1460));
    }

    #[test]
    fn other_protocols_and_later_fragments_are_not_clamped() {
        let mut udp = LINUX_SYN;
        udp[ETH_HLEN + 9] = 17;
        assert_eq!(syn_mss(&udp[..], &ipv4(&udp)), None);
        // Fragment offset 1 (8 bytes): the bytes at the L4 offset are no TCP header.
        let mut later = LINUX_SYN;
        later[ETH_HLEN + 6] = 0x20;
        later[ETH_HLEN + 7] = 0x01;
        assert_eq!(syn_mss(&later[..], &ipv4(&later)), None);
        // A first fragment (MF set, offset 0) still holds the whole TCP header.
        let mut first = LINUX_SYN;
        first[ETH_HLEN + 6] = 0x20;
        assert_eq!(syn_mss(&first[..], &ipv4(&first)), mss_at(56, 1460));
    }

    #[test]
    fn malformed_options_hide_the_mss() {
        let mss = [TCPOPT_MSS, 4, 0x05, 0xb4];
        // A well-formed control first: the helper builds a parseable header.
        assert_eq!(
            find_mss(&syn_with_options(&[1, 1, 3, 3, 7, 2, 4, 5, 0xb4])[..], L4),
            mss_at(L4 + 20 + 7, 1460)
        );
        let cases: [(&str, Vec<u8>); 7] = [
            ("length 0", [&[8, 0, 0, 0][..], &mss].concat()),
            ("length 1", [&[8, 1, 0, 0][..], &mss].concat()),
            ("TS running past the header", vec![1, 1, 8, 10]),
            ("MSS of length 3", vec![TCPOPT_MSS, 3, 0x05, 0xb4]),
            ("MSS of length 6", vec![TCPOPT_MSS, 6, 0x05, 0xb4, 0, 0]),
            (
                "EOL before the MSS",
                [&[1, TCPOPT_EOL, 0, 0][..], &mss].concat(),
            ),
            ("a kind without its length at the end", vec![1, 1, 1, 8]),
        ];
        for (what, options) in cases {
            assert_eq!(
                find_mss(&syn_with_options(&options)[..], L4),
                None,
                "{what}"
            );
        }
        // Data offsets below 5 are no TCP header at all.
        for words in 0..5u8 {
            let mut frame = LINUX_SYN;
            frame[L4 + 12] = words << 4;
            assert_eq!(find_mss(&frame[..], L4), None, "data offset {words}");
        }
    }

    #[test]
    fn the_walk_reaches_the_last_option_byte() {
        // 36 NOPs and an MSS fill the 40 option bytes: 37 steps.
        let mut options = vec![TCPOPT_NOP; 36];
        options.extend_from_slice(&[TCPOPT_MSS, 4, 0x23, 0x28]);
        let frame = syn_with_options(&options);
        assert_eq!(find_mss(&frame[..], L4), mss_at(L4 + 20 + 38, 9000));
        assert_eq!(find_mss(&syn_with_options(&[TCPOPT_NOP; 40])[..], L4), None);
    }

    #[test]
    fn truncated_headers_have_no_mss() {
        // Also at 58 bytes, where the MSS is complete but not the 40 bytes the header announces.
        for len in 0..LINUX_SYN.len() {
            assert_eq!(find_mss(&LINUX_SYN[..len], L4), None, "{len} bytes");
        }
    }

    #[test]
    fn clamp_only_lowers() {
        let found = MssOption {
            offset: 56,
            value: 1460,
        };
        assert_eq!(
            clamp(found, 1410),
            Some(MssRewrite {
                offset: 56,
                old: [0x05, 0xb4],
                new: [0x05, 0x82],
            })
        );
        assert_eq!(clamp(found, 1460), None);
        assert_eq!(clamp(found, 9000), None);
        assert_eq!(clamp(found, 0), None, "0 is no clamping");
    }

    #[test]
    fn incremental_checksum_update_matches_a_full_recompute() {
        for (fixture, mss) in [
            (&LINUX_SYN[..], 1410),
            (&LINUX_SYN_ACK[..], 1410),
            (&SYN_OPTIONS_REORDERED[..], 1),
            (&LINUX_SYN[..], 1459),
        ] {
            let mut frame = fixture.to_vec();
            let found = syn_mss(&frame[..], &ipv4(&frame)).expect("an MSS");
            let rewrite = clamp(found, mss).expect("a rewrite");
            // What the program does: store the value, then l4_csum_replace the checksum.
            frame[rewrite.offset..rewrite.offset + 2].copy_from_slice(&rewrite.new);
            let at = L4 + TCP_CHECKSUM;
            let checksum = u16::from_be_bytes([frame[at], frame[at + 1]]);
            let updated = incremental(
                checksum,
                u16::from_be_bytes(rewrite.old),
                u16::from_be_bytes(rewrite.new),
            );
            frame[at..at + 2].copy_from_slice(&updated.to_be_bytes());
            assert_eq!(tcp_sum(&frame), 0xffff);
            // And it equals the checksum computed from scratch.
            frame[at..at + 2].copy_from_slice(&[0, 0]);
            assert_eq!(updated, !tcp_sum(&frame));
            assert_eq!(find_mss(&frame[..], L4).map(|m| m.value), Some(mss));
        }
    }

    #[test]
    fn selection_looks_up_the_source_then_class_and_destination() {
        let ip = ipv4(&LINUX_SYN);
        let class = class_id(&[policy_id("alice")]);
        let sources = |key: &Key<[u8; 4]>| {
            let (len, data) = (key.prefix_len, key.data);
            assert_eq!((len, data), (32, [10, 213, 0, 1]));
            Some(SourceValue { class })
        };
        let tunnel = DestValue {
            policy: policy_id("alice"),
            egress: [192, 0, 2, 7],
            action: ACTION_TUNNEL,
        };
        let dests = |key: &Key<DestKey>| {
            let (len, data) = (key.prefix_len, key.data);
            assert_eq!(len, 96);
            assert_eq!(data, DestKey::new(class, [10, 213, 0, 2]));
            Some(tunnel)
        };
        assert_eq!(
            select(&ip, sources, dests),
            Selection::Tunnel {
                policy: policy_id("alice"),
                egress: [192, 0, 2, 7],
            }
        );
    }

    #[test]
    fn selection_skips_excluded_unknown_and_missing_destinations() {
        let ip = ipv4(&LINUX_SYN);
        let source = |_: &Key<[u8; 4]>| Some(SourceValue { class: 7 });
        let skip = DestValue {
            action: ACTION_SKIP,
            ..DestValue::default()
        };
        let unknown = DestValue {
            policy: 1,
            egress: [192, 0, 2, 7],
            action: 99,
        };
        for dest in [Some(skip), Some(unknown), None] {
            assert_eq!(select(&ip, source, |_| dest), Selection::Skip, "{dest:?}");
        }
        let never = |_: &Key<DestKey>| -> Option<DestValue> {
            panic!("no destination lookup for an unselected source")
        };
        assert_eq!(select(&ip, |_| None, never), Selection::Unselected);
    }

    #[test]
    fn tunnel_key_holds_the_remote_in_host_order() {
        let cfg = NodeConfig {
            mark: 0x100,
            vni: 4242,
            mss: 1410,
            ttl: 0,
            flags: 0,
        };
        let key = tunnel_key(&cfg, [192, 0, 2, 7]);
        // SAFETY (test): the union was written as `remote_ipv6`, which `remote_ipv4` overlays.
        let remote = unsafe { key.__bindgen_anon_1.remote_ipv4 };
        assert_eq!(remote, 0xc000_0207);
        assert_eq!(Ipv4Addr::from(remote), Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(tunnel_remote(&key), [192, 0, 2, 7]);
        assert_eq!(key.tunnel_id, 4242);
        assert_eq!(key.tunnel_ttl, DEFAULT_TUNNEL_TTL);
        let key = tunnel_key(&NodeConfig { ttl: 5, ..cfg }, [192, 0, 2, 7]);
        assert_eq!(key.tunnel_ttl, 5);
        assert_eq!(TUNNEL_KEY_FLAGS, 2, "BPF_F_ZERO_CSUM_TX");
        // The size the helpers are given: the kernel's current layout.
        assert_eq!(core::mem::size_of::<bpf_tunnel_key>(), 44);
    }

    #[test]
    fn inner_bytes_leave_out_the_ethernet_header() {
        assert_eq!(inner_bytes(74), 60);
        assert_eq!(inner_bytes(3), 0);
    }
}
