//! Fuzzes parse + translate + reverse over arbitrary bytes.
//!
//! Every input goes through `inbound` and `outbound`; neither may panic. When `outbound`
//! translates a TCP or UDP packet or an ICMP echo request, the target answers it the way the
//! outside would (addresses and ports swapped, an echo request turned into a reply) and
//! checks that `inbound` gives back exactly the pod's own packet answered the same way.

#![no_main]

use std::net::Ipv4Addr;

use egret_gateway::nat::{ChecksumDelta, Nat, NatParams};
use libfuzzer_sys::fuzz_target;
use smoltcp::time::Instant;

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 21);
const EGRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);

/// Turns a well-formed packet into the answer its destination would send, in place.
/// Swapping two fields leaves every one's-complement sum unchanged; only turning an echo
/// request into a reply needs a checksum patch. Returns false for packets nobody answers
/// this way (ICMP errors).
fn answer(p: &mut [u8]) -> bool {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let proto = p[9];
    for i in 0..4 {
        p.swap(12 + i, 16 + i);
    }
    let l4 = &mut p[ihl..total];
    match proto {
        6 | 17 => {
            l4.swap(0, 2);
            l4.swap(1, 3);
            true
        }
        1 if l4[0] == 8 => {
            let mut d = ChecksumDelta::default();
            d.word(
                u16::from_be_bytes([8, l4[1]]),
                u16::from_be_bytes([0, l4[1]]),
            );
            l4[0] = 0;
            let sum = d.apply(u16::from_be_bytes([l4[2], l4[3]]));
            l4[2..4].copy_from_slice(&sum.to_be_bytes());
            true
        }
        _ => false,
    }
}

/// One's-complement checksums have two zeros: a field of 0xffff and one of 0x0000 verify
/// alike, and an incremental update (RFC 1624) may turn one into the other. Folds the IPv4
/// header, TCP and ICMP checksum fields to one spelling before comparing (UDP keeps its
/// own rule: zero means no checksum, and the NAT keeps that exact).
fn fold_zero_checksums(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let l4_sum = match p[9] {
        6 => Some(ihl + 16),
        1 => Some(ihl + 2),
        _ => None,
    };
    for at in [Some(10), l4_sum].into_iter().flatten() {
        if p[at..at + 2] == [0xff, 0xff] {
            p[at..at + 2].copy_from_slice(&[0, 0]);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let params = NatParams {
        port_range: 20000..=20063,
        max_flows: 64,
        ..NatParams::default()
    };
    let Ok(mut nat) = Nat::new(&params, 1) else {
        return;
    };
    let now = Instant::from_secs(1);

    // Replies with no flow behind them are refused, whatever they hold.
    let mut stray = data.to_vec();
    let _ = nat.inbound(now, &mut stray);

    let mut packet = data.to_vec();
    let Ok(out) = nat.outbound(now, NODE, EGRESS, &mut packet) else {
        return;
    };
    if answer(&mut packet) {
        let mut expected = data.to_vec();
        answer(&mut expected);
        let back = nat
            .inbound(now, &mut packet)
            .expect("the answer to a translated packet translates back");
        assert_eq!(
            back.flow, out.flow,
            "reverse lookup finds the forward entry"
        );
        assert_eq!(back.node, NODE);
        fold_zero_checksums(&mut packet);
        fold_zero_checksums(&mut expected);
        assert_eq!(packet, expected, "translate-then-reverse is the identity");
    }

    // The same bytes again as a reply, now that a flow exists.
    let mut again = data.to_vec();
    let _ = nat.inbound(now, &mut again);
});
