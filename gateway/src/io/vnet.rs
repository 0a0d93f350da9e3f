//! The virtio-net header a packet socket puts in front of each frame (`PACKET_VNET_HDR`):
//! how the kernel tells us, and we tell it, about partial checksums and super-packets.

use crate::datapath::{Gso, GsoKind, Offload, PartialChecksum};

/// `struct virtio_net_hdr`, without the `num_buffers` extension.
pub const LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// Why a header cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsupported;

/// Reads a received header (host byte order, as packet sockets use).
pub fn parse(h: &[u8; LEN]) -> Result<Offload, Unsupported> {
    let word = |at: usize| u16::from_le_bytes([h[at], h[at + 1]]);
    let checksum = (h[0] & F_NEEDS_CSUM != 0).then(|| PartialChecksum {
        start: word(6),
        offset: word(8),
    });
    let gso = match h[1] & !GSO_ECN {
        GSO_NONE => None,
        GSO_TCPV4 => Some(Gso {
            kind: GsoKind::Tcpv4,
            size: word(4),
        }),
        GSO_UDP_L4 => Some(Gso {
            kind: GsoKind::Udpv4,
            size: word(4),
        }),
        _ => return Err(Unsupported),
    };
    Ok(Offload { checksum, gso })
}

/// Writes the header for a frame to send.
pub fn emit(o: &Offload) -> [u8; LEN] {
    let mut h = [0u8; LEN];
    if let Some(c) = o.checksum {
        h[0] = F_NEEDS_CSUM;
        h[6..8].copy_from_slice(&c.start.to_le_bytes());
        h[8..10].copy_from_slice(&c.offset.to_le_bytes());
    }
    if let Some(g) = o.gso {
        h[1] = match g.kind {
            GsoKind::Tcpv4 => GSO_TCPV4,
            GsoKind::Udpv4 => GSO_UDP_L4,
        };
        h[4..6].copy_from_slice(&g.size.to_le_bytes());
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_kernel_wrote_for_a_tunnelled_tcp_super_packet() {
        // Recorded on Linux 6.18 from a veth behind a VXLAN device: NEEDS_CSUM at the inner
        // TCP header (84), TCPv4 GSO with 1398-byte segments.
        let h = [1, 1, 0, 0, 0x76, 0x05, 84, 0, 16, 0];
        let o = parse(&h).unwrap();
        assert_eq!(
            o,
            Offload {
                checksum: Some(PartialChecksum {
                    start: 84,
                    offset: 16
                }),
                gso: Some(Gso {
                    kind: GsoKind::Tcpv4,
                    size: 1398
                }),
            }
        );
        let mut back = emit(&o);
        back[2..4].copy_from_slice(&h[2..4]);
        assert_eq!(back, h);
    }

    #[test]
    fn plain_frames_have_no_offload_and_unknown_gso_is_refused() {
        assert_eq!(parse(&[0; LEN]).unwrap(), Offload::default());
        assert_eq!(emit(&Offload::default()), [0; LEN]);
        assert_eq!(
            parse(&[0, 4, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Unsupported),
            "TCPv6"
        );
        assert!(
            parse(&[0, 0x81, 0, 0, 0, 1, 0, 0, 0, 0])
                .unwrap()
                .gso
                .is_some(),
            "ECN"
        );
    }
}
