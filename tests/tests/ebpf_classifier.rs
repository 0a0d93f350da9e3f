//! The TC classifier in a real kernel: two lab namespaces joined by a veth pair, the classifier
//! attached to one end, pings both ways and hand-made malformed frames. Needs root.

use std::{
    net::{IpAddr, Ipv4Addr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use aya::programs::{SchedClassifier, TcAttachType};
use egret_agent::ebpf::{Classifier, ClassifierError, embedded_object};
use egret_ebpf_common::{CLASSIFIER_PROGRAM, ClassifierStats, ParseError};
use egret_lab::{NetNs, require_root, veth_pair};

/// RFC 2544 benchmarking space: routed nowhere, and here it only exists inside the lab.
const A_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const A_IF: &str = "veth0";
const B_IF: &str = "veth1";
const PINGS: u32 = 5;
/// An echo request or reply of `ping`'s default 56 data bytes: 14 + 20 + 8 + 56.
const PING_FRAME_BYTES: u64 = 98;

#[test]
fn classifier_counts_ipv4_both_ways_and_malformed_frames_by_reason() -> Result<()> {
    require_root();
    let a = NetNs::new("cls-a")?;
    let b = NetNs::new("cls-b")?;
    let (a_if, b_if) = veth_pair(&a, A_IF, &b, B_IF)?;
    a_if.add_address(&format!("{A_ADDR}/24"))?;
    b_if.add_address(&format!("{B_ADDR}/24"))?;

    // Attach, read and detach inside namespace a: interface names resolve there.
    a.run(|| -> Result<()> {
        let classifier = Classifier::attach(embedded_object(), A_IF)?;
        for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
            ensure!(
                attached_programs(A_IF, attach_type)? == [CLASSIFIER_PROGRAM],
                "{CLASSIFIER_PROGRAM} not attached to {A_IF} {attach_type:?}"
            );
        }

        let mut last = classifier.stats()?;
        for (from, from_if, to, direction) in
            [(&a, A_IF, B_ADDR, "a to b"), (&b, B_IF, A_ADDR, "b to a")]
        {
            let replies = from.ping(from_if, IpAddr::V4(to), PINGS)?;
            // The classifier passes every packet on: all pings are answered.
            ensure!(
                replies == PINGS,
                "{direction}: {replies} of {PINGS} pings answered"
            );
            let now = classifier.stats()?;
            // Requests and replies both cross veth0, one way at egress and the other at ingress.
            let packets = now.ipv4_packets - last.ipv4_packets;
            let bytes = now.ipv4_bytes - last.ipv4_bytes;
            ensure!(
                packets >= 2 * u64::from(PINGS),
                "{direction}: {packets} IPv4 packets counted for {PINGS} pings and their replies"
            );
            ensure!(
                bytes >= 2 * u64::from(PINGS) * PING_FRAME_BYTES,
                "{direction}: {bytes} IPv4 bytes counted for {PINGS} pings and their replies"
            );
            last = now;
        }
        // ARP resolved the first ping: a request and a reply crossed veth0.
        ensure!(last.non_ipv4_packets >= 2, "ARP not counted: {last:?}");
        ensure!(
            last.total_errors() == 0,
            "well-formed traffic counted as errors: {last:?}"
        );

        // Malformed IPv4 from b, received at veth0's ingress (and dropped by a's IP stack).
        b.send_frames(
            B_IF,
            &[
                &ipv4_frame(0x45, 10), // fixed header cut after 10 bytes
                &ipv4_frame(0x4f, 40), // IHL 15 announces 60 header bytes, 40 present
                &ipv4_frame(0x44, 40), // IHL 4
                &ipv4_frame(0x45, 3),  // cut after 3 bytes
                &ipv4_frame(0x65, 40), // version 6 behind the IPv4 EtherType
            ],
        )?;
        let expected = ClassifierStats {
            truncated_ipv4: 3,
            bad_ihl: 1,
            bad_ip_version: 1,
            ..ClassifierStats::default()
        };
        let counted = wait_for_errors(&classifier, &expected)?;
        for reason in ParseError::ALL {
            ensure!(
                counted.errors(reason) == expected.errors(reason),
                "{}: counted {}, sent {}",
                reason.label(),
                counted.errors(reason),
                expected.errors(reason)
            );
        }

        classifier.detach()?;
        for attach_type in [TcAttachType::Ingress, TcAttachType::Egress] {
            let left = attached_programs(A_IF, attach_type)?;
            ensure!(
                left.is_empty(),
                "still attached at {attach_type:?}: {left:?}"
            );
        }
        Ok(())
    })??;
    Ok(())
}

#[test]
fn loader_refuses_an_empty_object() -> Result<()> {
    require_root();
    let netns = NetNs::new("empty")?;
    let (veth, _peer) = veth_pair(&netns, A_IF, &netns, B_IF)?;
    // A real interface, so emptiness is the only thing wrong.
    let err = netns
        .run(|| Classifier::attach(&[], veth.name()))?
        .expect_err("an empty object was loaded");
    assert!(matches!(err, ClassifierError::EmptyObject), "{err:?}");
    assert!(err.to_string().contains("EGRET_SKIP_EBPF_BUILD"), "{err}");
    Ok(())
}

/// An Ethernet frame carrying `ip_len` bytes of IPv4 header that start with `version_ihl`, as
/// an echo request's header from b to a would (addresses and total length set, the rest zero).
fn ipv4_frame(version_ihl: u8, ip_len: usize) -> Vec<u8> {
    let mut frame = vec![0xff; 6]; // broadcast: not for anyone's IP stack to accept anyway
    frame.extend([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]);
    frame.extend(0x0800_u16.to_be_bytes());
    let mut ip = [0_u8; 60];
    ip[0] = version_ihl;
    ip[2..4].copy_from_slice(&84_u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 1;
    ip[12..16].copy_from_slice(&B_ADDR.octets());
    ip[16..20].copy_from_slice(&A_ADDR.octets());
    frame.extend(&ip[..ip_len]);
    frame
}

/// Names of the tcx programs attached at `attach_type` of `interface` (Linux 6.6 and later).
fn attached_programs(interface: &str, attach_type: TcAttachType) -> Result<Vec<String>> {
    let (_revision, programs) = SchedClassifier::query_tcx(interface, attach_type)
        .with_context(|| format!("querying tcx programs on {interface} (needs Linux 6.6+)"))?;
    Ok(programs
        .iter()
        .map(|program| program.name_as_str().unwrap_or("?").to_owned())
        .collect())
}

/// Reads the counters until the error counters reach `expected` (received frames are counted
/// in softirq context, shortly after the send returns), for at most two seconds.
fn wait_for_errors(classifier: &Classifier, expected: &ClassifierStats) -> Result<ClassifierStats> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let stats = classifier.stats()?;
        if stats.total_errors() >= expected.total_errors() || Instant::now() >= deadline {
            return Ok(stats);
        }
        thread::sleep(Duration::from_millis(20));
    }
}
