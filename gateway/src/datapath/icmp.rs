//! ICMP errors the gateway sends as a router (RFC 1812): time exceeded when a TTL runs
//! out here, fragmentation needed when a packet that may not be fragmented does not fit
//! the tunnel, and the fragments of one that may.

use std::net::Ipv4Addr;

use smoltcp::time::Instant;
use smoltcp::wire::{Icmpv4Message, IpProtocol};

use crate::nat::checksum::full;

const IPV4_LEN: usize = 20;
const ICMP_HEADER_LEN: usize = 8;
/// An ICMP error quotes as much of the offending packet as fits in 576 bytes
/// (RFC 1812, 4.3.2.3).
pub const QUOTE_MAX: usize = 576 - IPV4_LEN - ICMP_HEADER_LEN;
/// ICMP errors allowed per second, and in one burst: Linux's `icmp_msgs_per_sec` and
/// `icmp_msgs_burst` defaults.
const RATE_PER_SEC: u64 = 1000;
const BURST: u64 = 50;
/// The IPv4 "don't fragment" and "more fragments" flags, in the flags/offset word.
pub const DF: u16 = 0x4000;
const MF: u16 = 0x2000;
/// The smallest room [`fragment`] can work with: a header and eight bytes.
pub const FRAGMENT_MIN: usize = IPV4_LEN + 8;
/// The TTL of packets the gateway originates.
pub const OWN_TTL: u8 = 64;

/// Which error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    /// Type 11 code 0: time to live exceeded in transit.
    TimeExceeded,
    /// Type 3 code 4: fragmentation needed and DF set, with the largest packet that fits.
    FragmentationNeeded { mtu: u16 },
}

/// A token bucket over every ICMP error the gateway sends, so that a flood of expiring or
/// oversized packets cannot turn the gateway into a flood of ICMP.
#[derive(Debug)]
pub struct Limiter {
    /// Tokens in thousandths.
    milli_tokens: u64,
    at: Instant,
}

impl Limiter {
    pub fn new(now: Instant) -> Limiter {
        Limiter {
            milli_tokens: BURST * 1000,
            at: now,
        }
    }

    /// Whether one more error may be sent at `now`; takes its token if so.
    pub fn allow(&mut self, now: Instant) -> bool {
        if now > self.at {
            let earned = (now - self.at).total_micros() * RATE_PER_SEC / 1000;
            self.milli_tokens = (self.milli_tokens + earned).min(BURST * 1000);
            self.at = now;
        }
        if self.milli_tokens < 1000 {
            return false;
        }
        self.milli_tokens -= 1000;
        true
    }
}

/// Whether RFC 1812 (4.3.2.7) allows an ICMP error about the IPv4 packet `original`: never
/// about an ICMP error, nor to a source that is not a single host.
pub fn may_answer(original: &[u8]) -> bool {
    let src = Ipv4Addr::new(original[12], original[13], original[14], original[15]);
    if src.is_unspecified()
        || src.is_loopback()
        || src.is_multicast()
        || src.is_broadcast()
        || src.octets()[0] >= 240
    {
        return false;
    }
    let ihl = usize::from(original[0] & 0x0f) * 4;
    if original[9] == u8::from(IpProtocol::Icmp) {
        let Some(&kind) = original.get(ihl) else {
            return false;
        };
        // Only queries (echo, timestamp, …) may be answered with an error.
        return !matches!(
            Icmpv4Message::from(kind),
            Icmpv4Message::DstUnreachable
                | Icmpv4Message::Redirect
                | Icmpv4Message::TimeExceeded
                | Icmpv4Message::ParamProblem
                | Icmpv4Message::Unknown(4)
        );
    }
    true
}

/// Appends to `out` an IPv4 packet carrying the ICMP error `kind` from `src` about the
/// IPv4 packet `original`, addressed to its source.
pub fn write_error(out: &mut Vec<u8>, kind: IcmpError, src: Ipv4Addr, original: &[u8], id: u16) {
    let quote = &original[..original.len().min(QUOTE_MAX)];
    let total = IPV4_LEN + ICMP_HEADER_LEN + quote.len();
    let at = out.len();
    out.resize(at + total, 0);
    let p = &mut out[at..];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[8] = OWN_TTL;
    p[9] = IpProtocol::Icmp.into();
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&original[12..16]);
    let sum = full(&p[..IPV4_LEN]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    let icmp = &mut p[IPV4_LEN..];
    match kind {
        IcmpError::TimeExceeded => {
            icmp[0] = Icmpv4Message::TimeExceeded.into();
        }
        IcmpError::FragmentationNeeded { mtu } => {
            icmp[0] = Icmpv4Message::DstUnreachable.into();
            icmp[1] = 4;
            icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
        }
    }
    icmp[ICMP_HEADER_LEN..].copy_from_slice(quote);
    let sum = full(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
}

/// Cuts the IPv4 packet `ip` (header checksum and transport checksum complete, no
/// options, not itself a fragment) into fragments of at most `max` bytes, as RFC 791
/// does, calling `emit` with each whole fragment. Returns how many (none when `max` is
/// below [`FRAGMENT_MIN`]).
pub fn fragment(ip: &[u8], max: usize, scratch: &mut Vec<u8>, mut emit: impl FnMut(&[u8])) -> u64 {
    let payload = &ip[IPV4_LEN..];
    // Every fragment but the last carries a multiple of eight bytes.
    let chunk = max.saturating_sub(IPV4_LEN) & !7;
    if chunk == 0 {
        return 0;
    }
    let flags = u16::from_be_bytes([ip[6], ip[7]]) & !0x1fff & !MF;
    let mut count = 0;
    for (i, part) in payload.chunks(chunk).enumerate() {
        let offset = i * chunk;
        let more = offset + part.len() < payload.len();
        scratch.clear();
        scratch.extend_from_slice(&ip[..IPV4_LEN]);
        scratch.extend_from_slice(part);
        let field = flags | if more { MF } else { 0 } | (offset / 8) as u16;
        scratch[2..4].copy_from_slice(&((IPV4_LEN + part.len()) as u16).to_be_bytes());
        scratch[6..8].copy_from_slice(&field.to_be_bytes());
        scratch[10..12].fill(0);
        let sum = full(&scratch[..IPV4_LEN]);
        scratch[10..12].copy_from_slice(&sum.to_be_bytes());
        emit(scratch);
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use smoltcp::time::Duration;

    use super::*;

    #[test]
    fn the_limiter_allows_a_burst_then_the_rate() {
        let t0 = Instant::from_secs(10);
        let mut l = Limiter::new(t0);
        let burst = (0..200).filter(|_| l.allow(t0)).count();
        assert_eq!(burst, BURST as usize);
        // One token per millisecond after that.
        assert!(!l.allow(t0 + Duration::from_micros(500)));
        assert!(l.allow(t0 + Duration::from_millis(1)));
        let later = t0 + Duration::from_secs(5);
        let refilled = (0..200).filter(|_| l.allow(later)).count();
        assert_eq!(
            refilled, BURST as usize,
            "the bucket never holds more than a burst"
        );
    }

    fn packet(src: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 1, proto, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&[198, 51, 100, 10]);
        p.extend_from_slice(l4);
        let len = p.len() as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        let sum = full(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    #[test]
    fn errors_about_errors_or_to_non_hosts_are_never_sent() {
        let udp = [0u8; 8];
        assert!(may_answer(&packet([10, 0, 0, 1], 17, &udp)));
        assert!(may_answer(&packet([10, 0, 0, 1], 1, &[8, 0, 0, 0])), "echo");
        assert!(!may_answer(&packet([10, 0, 0, 1], 1, &[3, 3, 0, 0])));
        assert!(!may_answer(&packet([10, 0, 0, 1], 1, &[11, 0, 0, 0])));
        assert!(
            !may_answer(&packet([10, 0, 0, 1], 1, &[])),
            "ICMP cut short"
        );
        for src in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [224, 0, 0, 18],
            [255; 4],
            [240, 0, 0, 1],
        ] {
            assert!(!may_answer(&packet(src, 17, &udp)), "{src:?}");
        }
    }

    #[test]
    fn an_error_quotes_the_packet_up_to_576_bytes_with_valid_checksums() {
        let big = packet([10, 0, 0, 1], 17, &[7; 1400]);
        let mut out = vec![0xaa; 3];
        let fip = Ipv4Addr::new(192, 168, 1, 100);
        write_error(
            &mut out,
            IcmpError::FragmentationNeeded { mtu: 1450 },
            fip,
            &big,
            9,
        );
        assert_eq!(&out[..3], &[0xaa; 3], "appended, not overwritten");
        let p = &out[3..];
        assert_eq!(p.len(), 576);
        assert_eq!(full(&p[..20]), 0);
        assert_eq!((&p[12..16], &p[16..20]), (&fip.octets()[..], &big[12..16]));
        assert_eq!(full(&p[20..]), 0);
        assert_eq!(&p[20..22], &[3, 4]);
        assert_eq!(u16::from_be_bytes([p[26], p[27]]), 1450);
        assert_eq!(&p[28..], &big[..548]);
        let mut out = Vec::new();
        let small = packet([10, 0, 0, 1], 17, &[1; 8]);
        write_error(&mut out, IcmpError::TimeExceeded, fip, &small, 9);
        assert_eq!(out.len(), 28 + small.len());
        assert_eq!(&out[20..22], &[11, 0]);
        assert_eq!(full(&out[20..]), 0);
    }

    #[test]
    fn fragments_reassemble_to_the_packet() {
        let mut original = packet(
            [10, 0, 0, 1],
            17,
            &(0..3000u32).map(|i| i as u8).collect::<Vec<_>>(),
        );
        original[6] = 0; // DF clear: may be fragmented.
        original[10..12].fill(0);
        let sum = full(&original[..20]);
        original[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut pieces = Vec::new();
        let n = fragment(&original, 1450, &mut Vec::new(), |f| {
            pieces.push(f.to_vec())
        });
        assert_eq!(n, 3);
        let mut payload = Vec::new();
        for (i, f) in pieces.iter().enumerate() {
            assert!(f.len() <= 1450);
            assert_eq!(full(&f[..20]), 0, "header checksum");
            assert_eq!(usize::from(u16::from_be_bytes([f[2], f[3]])), f.len());
            let field = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!(usize::from(field & 0x1fff) * 8, payload.len());
            assert_eq!(field & MF != 0, i < 2, "more fragments on all but the last");
            if i < 2 {
                assert_eq!((f.len() - 20) % 8, 0);
            }
            payload.extend_from_slice(&f[20..]);
        }
        assert_eq!(payload, original[20..]);
        assert_eq!(
            fragment(&original, 27, &mut Vec::new(), |_| unreachable!()),
            0
        );
    }
}
