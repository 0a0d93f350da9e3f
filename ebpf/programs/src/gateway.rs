//! The gateway's fast path: which received frames it may forward itself.
//!
//! [`candidate`] reads a frame and, when it has the shape of an ordinary packet of an
//! established flow, returns the key to look up; the TC program forwards the frame when
//! the key is in its map. Everything else passes on to user space, which decides it and
//! counts it: first packets, TCP SYN, FIN and RST (state changes),
//! a TTL about to run out, packets that do not fit the tunnel, IPv4 options, fragments,
//! bad header checksums, ICMP.
//!
//! Frame layout from a node (offsets from the frame start):
//! outer Ethernet 0, outer IPv4 14, UDP 34, VXLAN 42, inner Ethernet 50, inner IPv4 64,
//! transport 84. From the outside: Ethernet 0, IPv4 14, transport 34.

use egret_ebpf_common::gateway::{Config, InKey, OutKey};

use crate::classify::{ETH_HLEN, ETHERTYPE_IPV4};
use crate::frame::Frame;

/// Outer IPv4 header of a tunnelled frame.
pub const OUTER_IP: usize = ETH_HLEN;
/// VXLAN header.
pub const VXLAN: usize = OUTER_IP + 20 + 8;
/// The inner IPv4 header of a tunnelled frame.
pub const INNER_IP: usize = VXLAN + 8 + ETH_HLEN;
/// Its transport header.
pub const INNER_L4: usize = INNER_IP + 20;
/// The IPv4 header of a frame from the outside.
pub const IP: usize = ETH_HLEN;
/// Its transport header.
pub const L4: usize = IP + 20;
/// Bytes between the outer Ethernet header and the inner IPv4 header: outer IPv4, UDP,
/// VXLAN and inner Ethernet.
pub const ENCAP_LEN: usize = INNER_IP - ETH_HLEN;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
const TCP_SYN_FIN_RST: u8 = 0x07;
const VXLAN_FLAGS: [u8; 4] = [0x08, 0, 0, 0];

/// A frame the fast path may take, with the key of its flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Candidate {
    /// From a node: decapsulate, SNAT, send to the next hop.
    Out {
        key: OutKey,
        /// The inner IPv4 packet's total length.
        inner_len: u16,
    },
    /// From the outside: DNAT, encapsulate, send to the node.
    In {
        key: InKey,
        /// The IPv4 packet's total length.
        len: u16,
    },
}

/// The folded RFC 1071 sum of the 20-byte IPv4 header at `h[at..]`.
#[inline(always)]
fn header_sum(h: &[u8], at: usize) -> u16 {
    let mut sum: u32 = 0;
    let mut i = at;
    while i < at + 20 {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// A header's sum is 0xffff when its checksum is right.
#[inline(always)]
fn header_ok(h: &[u8; 20]) -> bool {
    header_sum(h, 0) == 0xffff
}

/// Checks an IPv4 header the fast path can rewrite: version 4 without options, not a
/// fragment, checksum right. Returns its total length.
#[inline(always)]
fn plain_ipv4(h: &[u8; 20]) -> Option<u16> {
    if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 || !header_ok(h) {
        return None;
    }
    Some(u16::from_be_bytes([h[2], h[3]]))
}

/// Whether the transport header at `l4` is one the fast path forwards: TCP without SYN,
/// FIN or RST, or UDP. Returns the TCP header length (8 for UDP).
#[inline(always)]
fn ordinary_l4<F: Frame + ?Sized>(frame: &F, proto: u8, l4: usize) -> Option<usize> {
    match proto {
        PROTO_TCP => {
            let th: [u8; 20] = frame.read(l4)?;
            if th[13] & TCP_SYN_FIN_RST != 0 {
                return None;
            }
            Some(usize::from(th[12] >> 4) * 4)
        }
        PROTO_UDP => {
            frame.read::<8>(l4)?;
            Some(8)
        }
        _ => None,
    }
}

/// Small UDP packets stay in user space (see `Config::min_len`); `len` is the outer IPv4
/// packet's, and super-packets are never small.
#[inline(always)]
fn small_udp(proto: u8, len: u16, gso_size: u32, cfg: &Config) -> bool {
    proto == PROTO_UDP && gso_size == 0 && len < cfg.min_len
}

fn ip4(h: &[u8; 20], at: usize) -> [u8; 4] {
    [h[at], h[at + 1], h[at + 2], h[at + 3]]
}

/// What the fast path makes of a received frame; `gso_size` is the socket buffer's (0 when
/// it is not a super-packet).
#[inline(always)]
pub fn candidate<F: Frame + ?Sized>(frame: &F, gso_size: u32, cfg: &Config) -> Option<Candidate> {
    if cfg.enabled == 0 {
        return None;
    }
    let eth: [u8; ETH_HLEN] = frame.read(0)?;
    if u16::from_be_bytes([eth[12], eth[13]]) != ETHERTYPE_IPV4 {
        return None;
    }
    let ip: [u8; 20] = frame.read(IP)?;
    let len = plain_ipv4(&ip)?;
    if usize::from(len) + ETH_HLEN > frame.len() {
        return None;
    }
    let proto = ip[9];
    if proto == PROTO_UDP {
        let udp: [u8; 4] = frame.read(L4)?;
        if [udp[2], udp[3]] == cfg.tunnel_port {
            return from_node(frame, &ip, len, gso_size, cfg);
        }
    }
    if small_udp(proto, len, gso_size, cfg) {
        return None;
    }
    // From the outside: the TTL must survive the decrement, and the packet (or each
    // segment of a TCP super-packet) must fit the tunnel.
    if ip[8] <= 1 {
        return None;
    }
    let l4_len = ordinary_l4(frame, proto, L4)?;
    let fits = if gso_size == 0 {
        len <= cfg.room
    } else {
        proto == PROTO_TCP && 20 + l4_len as u32 + gso_size <= u32::from(cfg.room)
    };
    if !fits {
        return None;
    }
    let ports: [u8; 4] = frame.read(L4)?;
    Some(Candidate::In {
        key: InKey {
            remote: ip4(&ip, 12),
            egress: ip4(&ip, 16),
            remote_port: [ports[0], ports[1]],
            nat_port: [ports[2], ports[3]],
            proto,
            pad: [0; 3],
        },
        len,
    })
}

#[inline(always)]
fn from_node<F: Frame + ?Sized>(
    frame: &F,
    outer: &[u8; 20],
    outer_len: u16,
    gso_size: u32,
    cfg: &Config,
) -> Option<Candidate> {
    let vx: [u8; 8] = frame.read(VXLAN)?;
    if [vx[0], vx[1], vx[2], vx[3]] != VXLAN_FLAGS || [vx[4], vx[5], vx[6], vx[7]] != cfg.vni_word {
        return None;
    }
    let inner_eth: [u8; 2] = frame.read(INNER_IP - 2)?;
    if u16::from_be_bytes(inner_eth) != ETHERTYPE_IPV4 {
        return None;
    }
    let ip: [u8; 20] = frame.read(INNER_IP)?;
    let inner_len = plain_ipv4(&ip)?;
    if usize::from(inner_len) + ENCAP_LEN > usize::from(outer_len) || ip[8] <= 1 {
        return None;
    }
    let proto = ip[9];
    if small_udp(proto, outer_len, gso_size, cfg) {
        return None;
    }
    ordinary_l4(frame, proto, INNER_L4)?;
    let ports: [u8; 4] = frame.read(INNER_L4)?;
    Some(Candidate::Out {
        key: OutKey {
            node: ip4(outer, 12),
            egress: ip4(outer, 16),
            pod: ip4(&ip, 12),
            remote: ip4(&ip, 16),
            pod_port: [ports[0], ports[1]],
            remote_port: [ports[2], ports[3]],
            proto,
            pad: [0; 3],
        },
        inner_len,
    })
}

/// The outer headers in front of an inner IPv4 packet of `inner_len` bytes tunnelled to a
/// node: Ethernet, IPv4 (checksum filled in), UDP (no checksum), VXLAN, inner Ethernet.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn encap_headers(
    cfg: &Config,
    node_mac: [u8; 6],
    tunnel_mac: [u8; 6],
    egress: [u8; 4],
    node: [u8; 4],
    src_port: [u8; 2],
    inner_len: u16,
    ip_id: u16,
) -> [u8; ETH_HLEN + ENCAP_LEN] {
    let mut h = [0u8; ETH_HLEN + ENCAP_LEN];
    h[0..6].copy_from_slice(&node_mac);
    h[6..12].copy_from_slice(&cfg.mac);
    h[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    // A super-packet's length may not fit 16 bits with the tunnel's; segmentation writes
    // each segment's own lengths.
    let ip_len = inner_len.wrapping_add(ENCAP_LEN as u16);
    h[14] = 0x45;
    h[16..18].copy_from_slice(&ip_len.to_be_bytes());
    h[18..20].copy_from_slice(&ip_id.to_be_bytes());
    h[22] = 64;
    h[23] = PROTO_UDP;
    h[26..30].copy_from_slice(&egress);
    h[30..34].copy_from_slice(&node);
    let sum = header_sum(&h, 14);
    h[24..26].copy_from_slice(&(!sum).to_be_bytes());
    h[34..36].copy_from_slice(&src_port);
    h[36..38].copy_from_slice(&cfg.tunnel_port);
    h[38..40].copy_from_slice(&ip_len.wrapping_sub(20).to_be_bytes());
    h[42..46].copy_from_slice(&VXLAN_FLAGS);
    h[46..50].copy_from_slice(&cfg.vni_word);
    h[50..56].copy_from_slice(&tunnel_mac);
    h[56..62].copy_from_slice(&cfg.mac);
    h[62..64].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            mac: [2, 0, 0, 0, 0, 0x11],
            next_hop_mac: [2, 0, 0, 0, 0, 1],
            tunnel_port: 4800u16.to_be_bytes(),
            room: 1450,
            vni_word: [0, 0, 1, 0],
            ifindex: 3,
            enabled: 1,
            min_len: 0,
        }
    }

    fn checksum(h: &mut [u8]) {
        h[10] = 0;
        h[11] = 0;
        let mut sum: u32 = h
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 1, 0, 0, ttl, proto, 0, 0];
        let len = (20 + payload.len()) as u16;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        checksum(&mut h);
        h.extend_from_slice(payload);
        h
    }

    fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[12] = 0x50;
        t[13] = flags;
        t.extend_from_slice(b"data");
        t
    }

    fn eth(ip: Vec<u8>) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 0x11, 2, 0, 0, 0, 0, 1, 8, 0];
        f.extend(ip);
        f
    }

    fn from_outside(flags: u8, ttl: u8) -> Vec<u8> {
        eth(ipv4(
            [198, 51, 100, 10],
            [192, 168, 50, 100],
            PROTO_TCP,
            ttl,
            &tcp(80, 20000, flags),
        ))
    }

    fn tunnelled(inner: Vec<u8>, vni_word: [u8; 4]) -> Vec<u8> {
        let c = cfg();
        let mut f = encap_headers(
            &c,
            [2, 0, 0, 0, 0, 0x11],
            [2, 0, 0, 0, 0, 0x22],
            [192, 168, 50, 100],
            [192, 168, 50, 21],
            [0xc0, 0x01],
            inner.len() as u16,
            7,
        )
        .to_vec();
        // A node's packet: outer source the node, destination the floating IP.
        f[26..30].copy_from_slice(&[192, 168, 50, 21]);
        f[30..34].copy_from_slice(&[192, 168, 50, 100]);
        checksum(&mut f[14..34]);
        f[46..50].copy_from_slice(&vni_word);
        f.extend(inner);
        f
    }

    fn pod_packet(flags: u8, ttl: u8) -> Vec<u8> {
        ipv4(
            [10, 10, 1, 5],
            [198, 51, 100, 10],
            PROTO_TCP,
            ttl,
            &tcp(40000, 80, flags),
        )
    }

    #[test]
    fn an_established_reply_is_a_candidate_with_its_outside_key() {
        let f = from_outside(0x10, 64);
        let Some(Candidate::In { key, len }) = candidate(&f[..], 0, &cfg()) else {
            panic!("not a candidate");
        };
        assert_eq!(len, 44);
        assert_eq!(key.remote, [198, 51, 100, 10]);
        assert_eq!(key.egress, [192, 168, 50, 100]);
        assert_eq!(key.remote_port, 80u16.to_be_bytes());
        assert_eq!(key.nat_port, 20000u16.to_be_bytes());
        assert_eq!(key.proto, PROTO_TCP);
    }

    #[test]
    fn state_changes_expiring_ttls_and_oversize_packets_stay_in_user_space() {
        for flags in [0x02, 0x12, 0x01, 0x11, 0x04] {
            assert_eq!(candidate(&from_outside(flags, 64)[..], 0, &cfg()), None);
        }
        assert_eq!(candidate(&from_outside(0x10, 1)[..], 0, &cfg()), None);
        let mut small = cfg();
        small.room = 43;
        assert_eq!(candidate(&from_outside(0x10, 64)[..], 0, &small), None);
        // A super-packet fits when each segment does: 20 + 20 + gso_size.
        assert!(candidate(&from_outside(0x10, 64)[..], 1410, &cfg()).is_some());
        assert_eq!(candidate(&from_outside(0x10, 64)[..], 1411, &cfg()), None);
        let mut off = cfg();
        off.enabled = 0;
        assert_eq!(candidate(&from_outside(0x10, 64)[..], 0, &off), None);
    }

    fn udp(sport: u16, dport: u16) -> Vec<u8> {
        let mut u = vec![0u8; 8];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&12u16.to_be_bytes());
        u.extend_from_slice(b"data");
        u
    }

    #[test]
    fn small_udp_packets_stay_in_user_space_and_small_tcp_ones_do_not() {
        // 32-byte packets: IPv4 20 + UDP 8 + 4, or IPv4 20 + TCP 20 + 4 (44).
        let reply = eth(ipv4(
            [198, 51, 100, 10],
            [192, 168, 50, 100],
            PROTO_UDP,
            64,
            &udp(53, 20000),
        ));
        let sent = tunnelled(
            ipv4(
                [10, 10, 1, 5],
                [198, 51, 100, 10],
                PROTO_UDP,
                64,
                &udp(40000, 53),
            ),
            [0, 0, 1, 0],
        );
        let mut c = cfg();
        c.min_len = 33;
        assert_eq!(candidate(&reply[..], 0, &c), None);
        // From a node the tunnel's 50 bytes count: 82 bytes outside.
        c.min_len = 83;
        assert_eq!(candidate(&sent[..], 0, &c), None);
        c.min_len = 82;
        assert!(matches!(
            candidate(&sent[..], 0, &c),
            Some(Candidate::Out { .. })
        ));
        c.min_len = 32;
        assert!(matches!(
            candidate(&reply[..], 0, &c),
            Some(Candidate::In { .. })
        ));
        // TCP of any size is taken whatever the smallest UDP length.
        c.min_len = 1000;
        assert!(candidate(&from_outside(0x10, 64)[..], 0, &c).is_some());
        let ack = tunnelled(pod_packet(0x10, 64), [0, 0, 1, 0]);
        assert!(matches!(
            candidate(&ack[..], 0, &c),
            Some(Candidate::Out { .. })
        ));
    }

    #[test]
    fn bad_checksums_options_and_fragments_stay_in_user_space() {
        let mut f = from_outside(0x10, 64);
        f[IP + 10] ^= 1;
        assert_eq!(candidate(&f[..], 0, &cfg()), None);
        let mut f = from_outside(0x10, 64);
        f[IP + 6] = 0x20; // more fragments
        checksum(&mut f[IP..IP + 20]);
        assert_eq!(candidate(&f[..], 0, &cfg()), None);
        let mut f = from_outside(0x10, 64);
        f[IP] = 0x46;
        checksum(&mut f[IP..IP + 20]);
        assert_eq!(candidate(&f[..], 0, &cfg()), None);
        let f = from_outside(0x10, 64);
        assert_eq!(candidate(&f[..40], 0, &cfg()), None);
    }

    #[test]
    fn a_tunnelled_packet_is_a_candidate_with_its_inside_key() {
        let f = tunnelled(pod_packet(0x10, 64), [0, 0, 1, 0]);
        let Some(Candidate::Out { key, inner_len }) = candidate(&f[..], 0, &cfg()) else {
            panic!("not a candidate");
        };
        assert_eq!(inner_len, 44);
        assert_eq!(key.node, [192, 168, 50, 21]);
        assert_eq!(key.egress, [192, 168, 50, 100]);
        assert_eq!(key.pod, [10, 10, 1, 5]);
        assert_eq!(key.remote, [198, 51, 100, 10]);
        assert_eq!(key.pod_port, 40000u16.to_be_bytes());
        assert_eq!(key.remote_port, 80u16.to_be_bytes());
    }

    #[test]
    fn wrong_vni_syn_and_expiring_tunnelled_packets_stay_in_user_space() {
        assert_eq!(
            candidate(
                &tunnelled(pod_packet(0x10, 64), [0, 0, 2, 0])[..],
                0,
                &cfg()
            ),
            None
        );
        assert_eq!(
            candidate(
                &tunnelled(pod_packet(0x02, 64), [0, 0, 1, 0])[..],
                0,
                &cfg()
            ),
            None
        );
        assert_eq!(
            candidate(&tunnelled(pod_packet(0x10, 1), [0, 0, 1, 0])[..], 0, &cfg()),
            None
        );
    }

    #[test]
    fn encap_headers_carry_a_valid_outer_checksum_and_lengths() {
        let h = encap_headers(
            &cfg(),
            [2, 0, 0, 0, 0, 0x21],
            [2, 0, 0, 0, 0, 0x22],
            [192, 168, 50, 100],
            [192, 168, 50, 21],
            [0xc0, 0x01],
            100,
            9,
        );
        let outer: [u8; 20] = h[14..34].try_into().unwrap();
        assert!(header_ok(&outer));
        assert_eq!(u16::from_be_bytes([h[16], h[17]]), 150);
        assert_eq!(u16::from_be_bytes([h[38], h[39]]), 130);
        assert_eq!(&h[36..38], &4800u16.to_be_bytes());
        assert_eq!(&h[50..56], &[2, 0, 0, 0, 0, 0x22]);
    }
}
