//! Frames the data path writes itself: VXLAN outer headers, ARP, and the segments of a
//! super-packet that must be encapsulated one by one.

use std::net::Ipv4Addr;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpProtocol, Ipv4Packet,
};

use super::frame::{Gso, GsoKind};
use crate::nat::checksum::{fast_sum, full, pseudo_header_sum};
use crate::wire::vxlan::{self, VxlanPacket};

pub const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// Bytes VXLAN adds in front of the inner Ethernet frame: Ethernet, IPv4, UDP and VXLAN.
pub const ENCAP_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN + vxlan::HEADER_LEN;
/// An ARP frame for IPv4 over Ethernet, without padding.
pub const ARP_FRAME_LEN: usize = ETH_LEN + 28;
/// Source ports of our VXLAN packets: RFC 7348 recommends the dynamic range, chosen from a
/// hash of the inner flow so that the network spreads flows over its paths.
const ENTROPY_PORT_BASE: u16 = 49152;

/// The outer headers of one VXLAN packet.
#[derive(Debug, Clone, Copy)]
pub struct Outer {
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub vni: u32,
    pub ip_id: u16,
}

/// Writes the outer headers into `buf[..ENCAP_LEN]`, in front of the `inner_len`-byte
/// Ethernet frame at `buf[ENCAP_LEN..]`. The outer UDP checksum is zero, as RFC 7348 allows
/// and Linux sends by default: the inner packet carries its own.
pub fn write_encap(buf: &mut [u8], o: &Outer, inner_len: usize) {
    write_outer(buf, o, vxlan::HEADER_LEN + inner_len);
    VxlanPacket::new_unchecked(&mut buf[UDP_PAYLOAD..ENCAP_LEN]).set_header(o.vni);
}

/// Where the outer UDP payload (the VXLAN header) starts.
pub const UDP_PAYLOAD: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
/// Where the outer UDP header starts.
pub const OUTER_UDP: usize = ETH_LEN + IPV4_LEN;

/// Writes the outer Ethernet, IPv4 and UDP headers for `udp_payload` bytes of UDP payload,
/// with a zero UDP checksum.
pub fn write_outer(buf: &mut [u8], o: &Outer, udp_payload: usize) {
    let udp_len = UDP_LEN + udp_payload;
    let ip_len = IPV4_LEN + udp_len;
    write_ethernet(buf, o.dst_mac, o.src_mac, EthernetProtocol::Ipv4);
    let ip = &mut buf[ETH_LEN..OUTER_UDP];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&o.ip_id.to_be_bytes());
    ip[6..8].fill(0);
    ip[8] = 64;
    ip[9] = IpProtocol::Udp.into();
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&o.src.octets());
    ip[16..20].copy_from_slice(&o.dst.octets());
    let sum = full(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut buf[OUTER_UDP..UDP_PAYLOAD];
    udp[0..2].copy_from_slice(&o.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&o.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
    udp[6..8].fill(0);
}

/// Writes an Ethernet header.
pub fn write_ethernet(
    buf: &mut [u8],
    dst: EthernetAddress,
    src: EthernetAddress,
    ethertype: EthernetProtocol,
) {
    EthernetRepr {
        src_addr: src,
        dst_addr: dst,
        ethertype,
    }
    .emit(&mut EthernetFrame::new_unchecked(&mut buf[..ETH_LEN]));
}

/// The source port for the VXLAN packet carrying an inner IPv4 packet: a hash of its
/// addresses and first transport word (the ports), in the dynamic range.
pub fn entropy_port(inner_ip: &[u8]) -> u16 {
    let ihl = usize::from(inner_ip[0] & 0x0f) * 4;
    hash_port(
        inner_ip[12..20]
            .iter()
            .chain(inner_ip.get(ihl..ihl + 4).unwrap_or(&[])),
    )
}

/// [`entropy_port`] of a TCP or UDP packet from `src:sport` to `dst:dport`, without the
/// packet.
pub fn flow_entropy_port(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> u16 {
    let (s, d, sp, dp) = (
        src.octets(),
        dst.octets(),
        sport.to_be_bytes(),
        dport.to_be_bytes(),
    );
    hash_port(s.iter().chain(&d).chain(&sp).chain(&dp))
}

fn hash_port<'a>(bytes: impl Iterator<Item = &'a u8>) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
    }
    ENTROPY_PORT_BASE | ((h ^ (h >> 16)) as u16 & 0x3fff)
}

/// An ARP packet in an Ethernet frame.
pub fn arp_frame(
    eth_dst: EthernetAddress,
    operation: ArpOperation,
    source: (EthernetAddress, Ipv4Addr),
    target: (EthernetAddress, Ipv4Addr),
) -> [u8; ARP_FRAME_LEN] {
    let mut buf = [0; ARP_FRAME_LEN];
    write_arp(&mut buf, eth_dst, operation, source, target);
    buf
}

/// Writes an ARP frame into `buf[..ARP_FRAME_LEN]`.
pub fn write_arp(
    buf: &mut [u8],
    eth_dst: EthernetAddress,
    operation: ArpOperation,
    source: (EthernetAddress, Ipv4Addr),
    target: (EthernetAddress, Ipv4Addr),
) {
    write_ethernet(buf, eth_dst, source.0, EthernetProtocol::Arp);
    ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr: source.0,
        source_protocol_addr: source.1,
        target_hardware_addr: target.0,
        target_protocol_addr: target.1,
    }
    .emit(&mut ArpPacket::new_unchecked(
        &mut buf[ETH_LEN..ARP_FRAME_LEN],
    ));
}

/// How a super-packet splits into segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    kind: GsoKind,
    /// IPv4 plus transport header length: copied in front of every segment.
    headers: usize,
    ihl: usize,
    payload: usize,
    size: usize,
    pub count: usize,
}

impl Segments {
    /// Plans the segmentation of the IPv4 packet `ip` (a TCP or UDP super-packet whose
    /// headers were already checked by the NAT). `None` when it does not fit the plan.
    pub fn plan(ip: &[u8], gso: Gso) -> Option<Segments> {
        let packet = Ipv4Packet::new_checked(ip).ok()?;
        let ihl = usize::from(packet.header_len());
        let total = usize::from(packet.total_len());
        let l4 = match (gso.kind, packet.next_header()) {
            (GsoKind::Tcpv4, IpProtocol::Tcp) => usize::from(ip.get(ihl + 12)? >> 4) * 4,
            (GsoKind::Udpv4, IpProtocol::Udp) => UDP_LEN,
            _ => return None,
        };
        let headers = ihl + l4;
        let size = usize::from(gso.size);
        if size == 0 || total < headers || ip.len() < total {
            return None;
        }
        let payload = total - headers;
        Some(Segments {
            kind: gso.kind,
            headers,
            ihl,
            payload,
            size,
            count: payload.div_ceil(size).max(1),
        })
    }

    /// Length of segment `i`'s IPv4 packet.
    pub fn len(&self, i: usize) -> usize {
        self.headers + self.payload_len(i)
    }

    fn payload_len(&self, i: usize) -> usize {
        (self.payload - i * self.size).min(self.size)
    }

    /// Offset of the transport checksum inside the transport header.
    pub fn checksum_offset(&self) -> u16 {
        match self.kind {
            GsoKind::Tcpv4 => 16,
            GsoKind::Udpv4 => 6,
        }
    }

    /// IPv4 header length: where the transport header starts.
    pub fn ihl(&self) -> usize {
        self.ihl
    }

    /// Writes segment `i` of `ip` into `out[..self.len(i)]`: headers copied and adjusted
    /// (total length, IPv4 ID and checksum, TCP sequence number and flags, UDP length),
    /// the transport checksum left partial for the offload to finish, or `complete`.
    pub fn write(&self, ip: &[u8], i: usize, out: &mut [u8], complete: bool) {
        let len = self.len(i);
        let from = self.headers + i * self.size;
        out[..self.headers].copy_from_slice(&ip[..self.headers]);
        out[self.headers..len].copy_from_slice(&ip[from..from + self.payload_len(i)]);
        let id = u16::from_be_bytes([ip[4], ip[5]]).wrapping_add(i as u16);
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        out[4..6].copy_from_slice(&id.to_be_bytes());
        out[10..12].fill(0);
        let sum = full(&out[..self.ihl]);
        out[10..12].copy_from_slice(&sum.to_be_bytes());
        let l4 = self.ihl;
        match self.kind {
            GsoKind::Tcpv4 => {
                let seq = u32::from_be_bytes([ip[l4 + 4], ip[l4 + 5], ip[l4 + 6], ip[l4 + 7]])
                    .wrapping_add((i * self.size) as u32);
                out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                const FIN: u8 = 0x01;
                const PSH: u8 = 0x08;
                const CWR: u8 = 0x80;
                if i + 1 < self.count {
                    out[l4 + 13] &= !(FIN | PSH);
                }
                if i > 0 {
                    out[l4 + 13] &= !CWR;
                }
            }
            GsoKind::Udpv4 => {
                out[l4 + 4..l4 + 6].copy_from_slice(&((len - l4) as u16).to_be_bytes());
            }
        }
        let mut src = [0; 4];
        let mut dst = [0; 4];
        src.copy_from_slice(&out[12..16]);
        dst.copy_from_slice(&out[16..20]);
        let proto = out[9];
        let partial = pseudo_header_sum(src, dst, proto, (len - l4) as u16);
        let at = l4 + usize::from(self.checksum_offset());
        out[at..at + 2].copy_from_slice(&partial.to_be_bytes());
        if complete {
            // The field holds the pseudo-header sum: summing the segment finishes it.
            let sum = match !fast_sum(&out[l4..len]) {
                0 if self.kind == GsoKind::Udpv4 => 0xffff,
                s => s,
            };
            out[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{TcpPacket, UdpPacket};

    /// A TCP super-packet: 20-byte IPv4, 32-byte TCP (timestamps), 3000 bytes of payload,
    /// PSH|ACK|CWR, with a partial checksum as the kernel hands it over.
    fn tcp_super_packet() -> Vec<u8> {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let mut p = vec![0u8; 52];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((52 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 63;
        p[9] = 6;
        p[12..16].copy_from_slice(&[198, 51, 100, 10]);
        p[16..20].copy_from_slice(&[10, 10, 1, 5]);
        let sum = full(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p[20..22].copy_from_slice(&5201u16.to_be_bytes());
        p[22..24].copy_from_slice(&40000u16.to_be_bytes());
        p[24..28].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        p[32] = 8 << 4;
        p[33] = 0x80 | 0x10 | 0x08;
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        p.extend_from_slice(&payload);
        p
    }

    fn finish(seg: &mut [u8], at: usize) {
        let sum = full(&seg[20..]);
        seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }

    #[test]
    fn tcp_segments_carry_the_whole_stream_with_valid_headers() {
        let sp = tcp_super_packet();
        let plan = Segments::plan(
            &sp,
            Gso {
                kind: GsoKind::Tcpv4,
                size: 1448,
            },
        )
        .unwrap();
        assert_eq!(plan.count, 3);
        let mut stream = Vec::new();
        for i in 0..plan.count {
            let mut seg = vec![0u8; plan.len(i)];
            plan.write(&sp, i, &mut seg, i == 1);
            if i != 1 {
                finish(&mut seg, 20 + 16);
            }
            let ip = Ipv4Packet::new_checked(&seg[..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.total_len()), seg.len());
            assert_eq!(ip.ident(), 0xfffeu16.wrapping_add(i as u16));
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert!(tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
            assert_eq!(
                tcp.seq_number().0 as u32,
                0xffff_fff0u32.wrapping_add(i as u32 * 1448)
            );
            assert_eq!(tcp.psh(), i == 2, "PSH only on the last segment");
            assert_eq!(tcp.cwr(), i == 0, "CWR only on the first");
            assert!(tcp.ack());
            stream.extend_from_slice(tcp.payload());
        }
        assert_eq!(stream, &sp[52..]);
    }

    #[test]
    fn udp_segments_get_their_own_lengths() {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(28u16 + 2500).to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[198, 51, 100, 10]);
        p[16..20].copy_from_slice(&[10, 10, 1, 5]);
        p[24..26].copy_from_slice(&(8u16 + 2500).to_be_bytes());
        p.extend((0..2500u32).map(|i| i as u8));
        let plan = Segments::plan(
            &p,
            Gso {
                kind: GsoKind::Udpv4,
                size: 1000,
            },
        )
        .unwrap();
        assert_eq!(plan.count, 3);
        for i in 0..3 {
            let mut seg = vec![0u8; plan.len(i)];
            plan.write(&p, i, &mut seg, i == 1);
            if i != 1 {
                finish(&mut seg, 20 + 6);
            }
            let ip = Ipv4Packet::new_checked(&seg[..]).unwrap();
            let udp = UdpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(udp.len() as usize, 8 + [1000, 1000, 500][i]);
            assert!(udp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()));
        }
    }

    #[test]
    fn plans_refuse_what_does_not_match() {
        let sp = tcp_super_packet();
        let udp = Gso {
            kind: GsoKind::Udpv4,
            size: 1000,
        };
        assert_eq!(
            Segments::plan(&sp, udp),
            None,
            "a TCP packet is not UDP GSO"
        );
        let zero = Gso {
            kind: GsoKind::Tcpv4,
            size: 0,
        };
        assert_eq!(Segments::plan(&sp, zero), None);
        let tcp = Gso {
            kind: GsoKind::Tcpv4,
            size: 1448,
        };
        assert_eq!(
            Segments::plan(&sp[..100], tcp),
            None,
            "shorter than its length"
        );
    }

    #[test]
    fn encap_writes_what_linux_vxlan_expects() {
        let mut buf = vec![0u8; ENCAP_LEN + 60];
        let o = Outer {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 11]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 21]),
            src: Ipv4Addr::new(192, 168, 1, 100),
            dst: Ipv4Addr::new(192, 168, 1, 21),
            src_port: 50000,
            dst_port: 4800,
            vni: 1,
            ip_id: 7,
        };
        write_encap(&mut buf, &o, 60);
        let ip = Ipv4Packet::new_checked(&buf[ETH_LEN..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.total_len()), 20 + 8 + 8 + 60);
        assert_eq!(ip.hop_limit(), 64);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (udp.src_port(), udp.dst_port(), udp.len()),
            (50000, 4800, 76)
        );
        assert_eq!(udp.checksum(), 0);
        assert_eq!(&buf[ETH_LEN + 28..ENCAP_LEN], &[8, 0, 0, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn entropy_ports_stay_in_the_dynamic_range_and_follow_the_flow() {
        let a = tcp_super_packet();
        let mut b = a.clone();
        b[20] ^= 1;
        let (pa, pb) = (entropy_port(&a), entropy_port(&b));
        assert!(pa >= ENTROPY_PORT_BASE && pb >= ENTROPY_PORT_BASE);
        assert_eq!(pa, entropy_port(&a));
        assert_ne!(pa, pb);
    }
}
