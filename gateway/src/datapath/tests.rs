//! The data path end to end on byte frames: what leaves for each kind of frame that comes in.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Packet, Ipv4Repr, TcpPacket, UdpPacket,
    UdpRepr,
};

use super::*;
use crate::nat::{FlowState, Timeouts};
use crate::sync::{Change, Op};

const GW_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x11]);
const ROUTER_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
const NODE_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x21]);
const NODE_VX_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 1, 0x21]);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const FIP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 21);
const STRANGER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 40);
const POD: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 5);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const PORT: u16 = 4800;
const VNI: u32 = 1;
/// Headroom the I/O shell leaves in front of every received frame.
const HEADROOM: usize = 64;

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms as i64)
}

fn setup() -> Setup {
    Setup {
        name: "gw1".into(),
        interface: "eth0".into(),
        mac: GW_MAC,
        address: GW,
        prefix_len: 24,
        gateways: vec![Ipv4Addr::new(192, 168, 1, 12)],
        mtu: 1500,
        next_hop: ROUTER,
        floating_ips: vec![FloatingIp {
            address: FIP,
            vrid: 10,
            priority: 100,
        }],
        announce: Announce::default(),
        tunnel_port: PORT,
        vni: VNI,
        allowed_sources: vec![Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 16), 28)],
        nat: NatParams {
            port_range: 20000..=20001,
            max_flows: 1024,
            ..NatParams::default()
        },
        seed: 1,
    }
}

/// A data path that owns its floating IP from time 0.
fn owning(setup: Setup) -> Datapath {
    let mut dp = Datapath::new(setup, t(0)).unwrap();
    assert!(dp.own(t(0), FIP));
    dp
}

/// A data path whose next hop is already resolved, and that confirmed the node's MAC
/// (an ARP probe the node answered).
fn datapath() -> Datapath {
    let mut dp = learning();
    dp.nodes.observe(t(0), NODE, NODE_NODE, None);
    dp.nodes.take_probes(&mut Vec::new());
    dp.nodes.arp_from(NODE, NODE_MAC);
    dp.nodes
        .decide(t(0) + neighbors::PROBE_WAIT, &mut Vec::new());
    assert_eq!(dp.nodes.binding(NODE).map(|b| b.verified), Some(true));
    dp
}

const NODE_NODE: Node = Node {
    mac: NODE_MAC,
    tunnel_mac: NODE_VX_MAC,
};

/// A data path whose next hop is already resolved, that knows no node yet.
fn learning() -> Datapath {
    let mut dp = owning(setup());
    resolve_next_hop(&mut dp);
    dp
}

/// The router answers the data path's ARP request: its next hop is resolved.
fn resolve_next_hop(dp: &mut Datapath) {
    let (mac, address) = (dp.setup.mac, dp.setup.address);
    let mut arp = with_headroom(&encap::arp_frame(
        mac,
        ArpOperation::Reply,
        (ROUTER_MAC, ROUTER),
        (mac, address),
    ));
    assert_eq!(dp.handle(t(0), &mut arp.frame()), Verdict::Ignore);
    assert_eq!(dp.next_hop().mac, Some(ROUTER_MAC));
}

struct Buf {
    bytes: Vec<u8>,
}

impl Buf {
    fn frame(&mut self) -> Frame<'_> {
        Frame::new(&mut self.bytes, HEADROOM)
    }
}

fn with_headroom(frame: &[u8]) -> Buf {
    let mut bytes = vec![0xee; HEADROOM];
    bytes.extend_from_slice(frame);
    Buf { bytes }
}

fn ethernet(dst: EthernetAddress, src: EthernetAddress, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(dst.as_bytes());
    f.extend_from_slice(src.as_bytes());
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), ttl: u8, payload: &[u8]) -> Vec<u8> {
    let udp = UdpRepr {
        src_port: src.1,
        dst_port: dst.1,
    };
    let ip = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: ttl,
    };
    let mut b = vec![0; ip.buffer_len() + 8 + payload.len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]), &caps);
    udp.emit(
        &mut UdpPacket::new_unchecked(&mut b[20..]),
        &IpAddress::Ipv4(src.0),
        &IpAddress::Ipv4(dst.0),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
    b
}

fn echo_request(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 0x4242,
        seq_no: 1,
        data: b"abcdefgh",
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Icmp,
        payload_len: icmp.buffer_len(),
        hop_limit: 64,
    };
    let mut b = vec![0; 20 + icmp.buffer_len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]), &caps);
    icmp.emit(&mut Icmpv4Packet::new_unchecked(&mut b[20..]), &caps);
    b
}

/// A node's VXLAN frame to the floating IP carrying `inner` (an Ethernet frame).
fn vxlan_from(node: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0, 0, 0, 0, 0];
    payload[4..7].copy_from_slice(&vni.to_be_bytes()[1..]);
    payload.extend_from_slice(inner);
    let outer = udp_packet((node, 51000), (FIP, PORT), 64, &payload);
    ethernet(GW_MAC, NODE_MAC, ETHERTYPE_IPV4, &outer)
}

fn pod_packet(ttl: u8) -> Vec<u8> {
    let ip = udp_packet((POD, 40000), (REMOTE, 53), ttl, b"query");
    ethernet(GW_MAC, NODE_VX_MAC, ETHERTYPE_IPV4, &ip)
}

fn assert_udp_valid(ip: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16) {
    let p = Ipv4Packet::new_checked(ip).unwrap();
    assert!(p.verify_checksum(), "IPv4 header checksum");
    let u = UdpPacket::new_checked(p.payload()).unwrap();
    assert!(
        u.checksum() == 0 || u.verify_checksum(&p.src_addr().into(), &p.dst_addr().into()),
        "UDP checksum"
    );
    (p.src_addr(), p.dst_addr(), u.src_port(), u.dst_port())
}

/// Sends the pod's UDP packet out and returns the frame that left.
fn go_out(dp: &mut Datapath, now: Instant) -> Vec<u8> {
    let mut buf = with_headroom(&vxlan_from(NODE, VNI, &pod_packet(64)));
    let mut f = buf.frame();
    assert_eq!(dp.handle(now, &mut f), Verdict::Transmit);
    f.bytes().to_vec()
}

#[test]
fn arp_for_a_floating_ip_is_answered_and_others_are_left_to_the_host() {
    let mut dp = datapath();
    let request = encap::arp_frame(
        EthernetAddress::BROADCAST,
        ArpOperation::Request,
        (ROUTER_MAC, ROUTER),
        (EthernetAddress([0; 6]), FIP),
    );
    let mut buf = with_headroom(&request);
    let mut f = buf.frame();
    assert_eq!(dp.handle(t(1), &mut f), Verdict::Transmit);
    assert_eq!(
        f.bytes(),
        encap::arp_frame(
            ROUTER_MAC,
            ArpOperation::Reply,
            (GW_MAC, FIP),
            (ROUTER_MAC, ROUTER)
        )
    );
    let for_host = encap::arp_frame(
        EthernetAddress::BROADCAST,
        ArpOperation::Request,
        (ROUTER_MAC, ROUTER),
        (EthernetAddress([0; 6]), GW),
    );
    assert_eq!(
        dp.handle(t(1), &mut with_headroom(&for_host).frame()),
        Verdict::Ignore
    );
    assert_eq!(dp.counters().arp_requests_answered, 1);
}

#[test]
fn echo_to_a_floating_ip_is_answered() {
    let mut dp = datapath();
    let req = ethernet(GW_MAC, NODE_MAC, ETHERTYPE_IPV4, &echo_request(NODE, FIP));
    let mut buf = with_headroom(&req);
    let mut f = buf.frame();
    assert_eq!(dp.handle(t(1), &mut f), Verdict::Transmit);
    let eth = EthernetFrame::new_checked(f.bytes()).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (NODE_MAC, GW_MAC));
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (FIP, NODE));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!(icmp.msg_type(), Icmpv4Message::EchoReply);
    assert_eq!((icmp.echo_ident(), icmp.echo_seq_no()), (0x4242, 1));
    assert_eq!(dp.counters().icmp_echo_replies_sent, 1);
    // An offload claim that came with the request does not survive into the reply, whose
    // checksum is complete (found by fuzzing).
    let mut buf = with_headroom(&req);
    let mut f = buf.frame();
    f.offload.checksum = Some(PartialChecksum {
        start: 31,
        offset: 16,
    });
    assert_eq!(dp.handle(t(1), &mut f), Verdict::Transmit);
    assert_eq!(f.offload, Offload::default());
    // Echo to an address that is not ours is the host's business.
    let other = ethernet(GW_MAC, NODE_MAC, ETHERTYPE_IPV4, &echo_request(NODE, GW));
    assert_eq!(
        dp.handle(t(1), &mut with_headroom(&other).frame()),
        Verdict::Ignore
    );
}

#[test]
fn a_pod_packet_leaves_decapsulated_translated_and_one_hop_older() {
    let mut dp = datapath();
    let out = go_out(&mut dp, t(1));
    let eth = EthernetFrame::new_checked(&out[..]).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (ROUTER_MAC, GW_MAC));
    let (src, dst, sport, dport) = assert_udp_valid(eth.payload());
    assert_eq!((src, dst, dport), (FIP, REMOTE, 53));
    assert!((20000..=20001).contains(&sport));
    assert_eq!(
        Ipv4Packet::new_checked(eth.payload()).unwrap().hop_limit(),
        63
    );
    assert_eq!(dp.counters().outbound.packets, 1);
    assert_eq!(dp.counters().outbound.bytes, 20 + 8 + 5);
    assert_eq!(dp.counters().flows_created, 1);
    let s = dp.snapshot(t(1), 0);
    assert_eq!(s.floating_ips[0].ports_in_use, 1);
    assert_eq!(s.nodes.len(), 1);
    assert_eq!(s.nodes[0].tunnel_mac, NODE_VX_MAC.to_string());
}

#[test]
fn the_reply_is_translated_back_and_tunnelled_to_its_node() {
    let mut dp = datapath();
    let out = go_out(&mut dp, t(1));
    let nat_port = UdpPacket::new_checked(&out[34..]).unwrap().src_port();
    let reply = ethernet(
        GW_MAC,
        ROUTER_MAC,
        ETHERTYPE_IPV4,
        &udp_packet((REMOTE, 53), (FIP, nat_port), 60, b"answer"),
    );
    let mut buf = with_headroom(&reply);
    let mut f = buf.frame();
    assert_eq!(dp.handle(t(2), &mut f), Verdict::Transmit);
    let b = f.bytes();
    let eth = EthernetFrame::new_checked(b).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (NODE_MAC, GW_MAC));
    let (src, dst, _, dport) = assert_udp_valid(eth.payload());
    assert_eq!((src, dst, dport), (FIP, NODE, PORT));
    let inner = &b[ENCAP_LEN..];
    assert_eq!(&b[ENCAP_LEN - 8..ENCAP_LEN - 4], &[8, 0, 0, 0]);
    let ieth = EthernetFrame::new_checked(inner).unwrap();
    assert_eq!(
        (ieth.dst_addr(), ieth.src_addr()),
        (NODE_VX_MAC, GW_MAC),
        "the node's tunnel device only accepts frames to its own MAC"
    );
    let (src, dst, sport, dport) = assert_udp_valid(ieth.payload());
    assert_eq!((src, dst, sport, dport), (REMOTE, POD, 53, 40000));
    assert_eq!(
        Ipv4Packet::new_checked(ieth.payload()).unwrap().hop_limit(),
        59
    );
    assert_eq!(dp.counters().inbound.packets, 1);
}

#[test]
fn refused_tunnel_traffic_is_counted_by_reason() {
    let mut dp = datapath();
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        (
            "stranger",
            vxlan_from(STRANGER, VNI, &pod_packet(64)),
            DropReason::DisallowedSource,
        ),
        (
            "wrong vni",
            vxlan_from(NODE, 2, &pod_packet(64)),
            DropReason::WrongVni,
        ),
        (
            "no payload",
            vxlan_from(NODE, VNI, &[]),
            NatError::Malformed.into(),
        ),
        (
            "inner IPv6",
            vxlan_from(
                NODE,
                VNI,
                &ethernet(GW_MAC, NODE_VX_MAC, 0x86dd, &[0x60; 40]),
            ),
            NatError::NotIpv4.into(),
        ),
        (
            "inner TTL 1",
            vxlan_from(NODE, VNI, &pod_packet(1)),
            DropReason::TtlExpired,
        ),
        (
            "inner truncated",
            vxlan_from(NODE, VNI, &pod_packet(64)[..30]),
            NatError::Malformed.into(),
        ),
    ];
    for (name, frame, reason) in &cases {
        let v = dp.handle(t(1), &mut with_headroom(frame).frame());
        assert_eq!(v, Verdict::Drop(*reason), "{name}");
    }
    for (name, _, reason) in &cases {
        let expected = cases.iter().filter(|c| c.2 == *reason).count() as u64;
        assert_eq!(dp.counters().drops(*reason), expected, "{name}");
    }
    assert_eq!(dp.counters().outbound.packets, 0);
}

#[test]
fn broken_outer_headers_are_counted_and_never_panic() {
    let mut dp = datapath();
    let good = vxlan_from(NODE, VNI, &pod_packet(64));
    let mut bad_sum = good.clone();
    bad_sum[14 + 10] ^= 0xff;
    let v = dp.handle(t(1), &mut with_headroom(&bad_sum).frame());
    assert_eq!(v, Verdict::Drop(NatError::BadChecksum.into()));
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    let v = dp.handle(t(1), &mut with_headroom(&bad_ihl).frame());
    assert_eq!(v, Verdict::Drop(NatError::Malformed.into()));
    // Every truncation of a valid frame: a drop or left to the host, never a panic.
    for len in 0..good.len() {
        let v = dp.handle(t(1), &mut with_headroom(&good[..len]).frame());
        assert!(
            matches!(v, Verdict::Drop(_) | Verdict::Ignore),
            "{len}: {v:?}"
        );
    }
    assert_eq!(dp.counters().outbound.packets, 0);
}

#[test]
fn without_a_resolved_next_hop_packets_are_dropped_and_the_router_is_asked() {
    let mut dp = owning(setup());
    let mut buf = with_headroom(&vxlan_from(NODE, VNI, &pod_packet(64)));
    let v = dp.handle(t(0), &mut buf.frame());
    assert_eq!(v, Verdict::Drop(DropReason::NoNeighbor));
    dp.poll(t(0));
    let arp: Vec<_> = dp
        .generated()
        .iter()
        .filter_map(|g| {
            let eth = EthernetFrame::new_checked(&g.frame[..]).ok()?;
            let repr = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).ok()?).ok()?;
            Some((eth.dst_addr(), repr))
        })
        .collect();
    assert!(arp.contains(&(
        EthernetAddress::BROADCAST,
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: GW_MAC,
            source_protocol_addr: GW,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: ROUTER,
        }
    )));
    assert!(
        arp.contains(&(
            EthernetAddress::BROADCAST,
            ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr: GW_MAC,
                source_protocol_addr: FIP,
                target_hardware_addr: EthernetAddress([0; 6]),
                target_protocol_addr: FIP,
            }
        )),
        "a gratuitous ARP announces the floating IP"
    );
    dp.clear_generated();
    assert!(dp.generated().is_empty());
    assert!(dp.poll_at() <= t(1000));
}

#[test]
fn gratuitous_arp_repeats_three_times_a_second_apart() {
    let mut dp = datapath();
    let mut sent = Vec::new();
    for ms in (0..5000).step_by(100) {
        dp.poll(t(ms));
        let garps = dp
            .generated()
            .iter()
            .filter(|g| g.frame.len() == ARP_FRAME_LEN && g.frame[28..32] == FIP.octets())
            .count();
        sent.extend(std::iter::repeat_n(ms, garps));
        dp.clear_generated();
    }
    assert_eq!(sent, vec![0, 1000, 2000]);
}

#[test]
fn the_node_resolves_its_router_through_the_tunnel() {
    let mut dp = datapath();
    let via = Ipv4Addr::new(169, 254, 100, 1);
    let request = encap::arp_frame(
        EthernetAddress::BROADCAST,
        ArpOperation::Request,
        (NODE_VX_MAC, Ipv4Addr::new(169, 254, 100, 2)),
        (EthernetAddress([0; 6]), via),
    );
    let mut buf = with_headroom(&vxlan_from(NODE, VNI, &request));
    let mut f = buf.frame();
    assert_eq!(dp.handle(t(1), &mut f), Verdict::Transmit);
    let b = f.bytes();
    let (src, dst, _, dport) = assert_udp_valid(&b[ETH_LEN..]);
    assert_eq!((src, dst, dport), (FIP, NODE, PORT));
    assert_eq!(
        &b[ENCAP_LEN..],
        encap::arp_frame(
            NODE_VX_MAC,
            ArpOperation::Reply,
            (GW_MAC, via),
            (NODE_VX_MAC, Ipv4Addr::new(169, 254, 100, 2)),
        )
    );
}

#[test]
fn replies_without_a_flow_and_ports_running_out_are_counted() {
    let mut dp = datapath();
    let stray = ethernet(
        GW_MAC,
        ROUTER_MAC,
        ETHERTYPE_IPV4,
        &udp_packet((REMOTE, 53), (FIP, 20000), 60, b"x"),
    );
    let v = dp.handle(t(1), &mut with_headroom(&stray).frame());
    assert_eq!(v, Verdict::Drop(NatError::NoFlow.into()));
    // Two ports in the range, the pod's own port outside it: the third flow to the same
    // destination finds none.
    for sport in [1000, 1001, 1002] {
        let ip = udp_packet((POD, sport), (REMOTE, 53), 64, b"q");
        let frame = vxlan_from(
            NODE,
            VNI,
            &ethernet(GW_MAC, NODE_VX_MAC, ETHERTYPE_IPV4, &ip),
        );
        dp.handle(t(1), &mut with_headroom(&frame).frame());
    }
    assert_eq!(dp.counters().drops(NatError::PortsExhausted.into()), 1);
    assert_eq!(dp.snapshot(t(1), 0).floating_ips[0].ports_in_use, 2);
}

#[test]
fn a_pod_past_its_share_is_dropped_as_pod_quota_and_others_go_on() {
    let mut s = setup();
    s.nat.port_range = 20000..=29999;
    s.nat.max_flows_per_pod = 2;
    let mut dp = owning(s);
    resolve_next_hop(&mut dp);
    let send = |dp: &mut Datapath, pod: Ipv4Addr, sport: u16| {
        let ip = udp_packet((pod, sport), (REMOTE, 53), 64, b"q");
        let frame = vxlan_from(
            NODE,
            VNI,
            &ethernet(GW_MAC, NODE_VX_MAC, ETHERTYPE_IPV4, &ip),
        );
        dp.handle(t(1), &mut with_headroom(&frame).frame())
    };
    for sport in [21000, 21001] {
        assert!(send(&mut dp, POD, sport) == Verdict::Transmit);
    }
    for sport in 21002..21010 {
        assert_eq!(
            send(&mut dp, POD, sport),
            Verdict::Drop(NatError::PodQuota.into())
        );
    }
    // A packet of a flow the pod holds still goes through.
    assert!(send(&mut dp, POD, 21000) == Verdict::Transmit);
    let other = Ipv4Addr::new(10, 10, 1, 6);
    assert!(send(&mut dp, other, 21000) == Verdict::Transmit);
    assert_eq!(dp.counters().drops(NatError::PodQuota.into()), 8);
    let snapshot = dp.snapshot(t(1), 0);
    assert_eq!(snapshot.flows.live, 3);
    assert_eq!(snapshot.drops.get("pod_quota"), Some(&8));
}

#[test]
fn expiry_frees_the_ports_in_the_status() {
    let mut dp = datapath();
    go_out(&mut dp, t(1));
    assert_eq!(dp.snapshot(t(1), 0).flows.live, 1);
    let later = t(1) + Timeouts::default().udp + Duration::from_secs(2);
    dp.poll(later);
    let s = dp.snapshot(later, 0);
    assert_eq!((s.flows.live, s.flows.expired), (0, 1));
    assert_eq!(s.floating_ips[0].ports_in_use, 0);
}

#[test]
fn a_partial_checksum_follows_the_packet_through_decapsulation() {
    let mut dp = datapath();
    let frame = vxlan_from(NODE, VNI, &pod_packet(64));
    let inner_l4 = ENCAP_LEN + ETH_LEN + 20;
    // Make the inner UDP checksum partial, as the node's kernel hands it over.
    let mut buf = with_headroom(&frame);
    let at = HEADROOM + inner_l4 + 6;
    let partial = crate::nat::checksum::pseudo_header_sum(POD.octets(), REMOTE.octets(), 17, 13);
    buf.bytes[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    let mut f = buf.frame();
    f.offload.checksum = Some(PartialChecksum {
        start: inner_l4 as u16,
        offset: 6,
    });
    assert_eq!(dp.handle(t(1), &mut f), Verdict::Transmit);
    let c = f.offload.checksum.unwrap();
    assert_eq!(
        usize::from(c.start),
        ETH_LEN + 20,
        "offsets follow the new frame start"
    );
    let mut out = f.bytes().to_vec();
    assert!(finish_checksum(&mut out, c));
    assert_udp_valid(&out[ETH_LEN..]);
}

#[test]
fn a_tcp_super_packet_from_outside_leaves_as_tunnelled_segments() {
    let mut dp = datapath();
    // Open a TCP flow from the pod.
    let mut syn = vec![0u8; 40];
    syn[0] = 0x45;
    syn[2..4].copy_from_slice(&40u16.to_be_bytes());
    syn[8] = 64;
    syn[9] = 6;
    syn[12..16].copy_from_slice(&POD.octets());
    syn[16..20].copy_from_slice(&REMOTE.octets());
    let sum = full(&syn[..20]);
    syn[10..12].copy_from_slice(&sum.to_be_bytes());
    syn[20..22].copy_from_slice(&40000u16.to_be_bytes());
    syn[22..24].copy_from_slice(&5201u16.to_be_bytes());
    syn[32] = 5 << 4;
    syn[33] = 0x02;
    let frame = vxlan_from(
        NODE,
        VNI,
        &ethernet(GW_MAC, NODE_VX_MAC, ETHERTYPE_IPV4, &syn),
    );
    let mut buf = with_headroom(&frame);
    let mut f = buf.frame();
    assert_eq!(dp.handle(t(1), &mut f), Verdict::Transmit);
    let nat_port = TcpPacket::new_checked(&f.bytes()[34..]).unwrap().src_port();
    // 4000 bytes of data back, as one GRO super-packet with a partial checksum.
    let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
    let mut sp = vec![0u8; 40];
    sp[0] = 0x45;
    sp[2..4].copy_from_slice(&(40u16 + 4000).to_be_bytes());
    sp[8] = 60;
    sp[9] = 6;
    sp[12..16].copy_from_slice(&REMOTE.octets());
    sp[16..20].copy_from_slice(&FIP.octets());
    let sum = full(&sp[..20]);
    sp[10..12].copy_from_slice(&sum.to_be_bytes());
    sp[20..22].copy_from_slice(&5201u16.to_be_bytes());
    sp[22..24].copy_from_slice(&nat_port.to_be_bytes());
    sp[32] = 5 << 4;
    sp[33] = 0x12 | 0x08;
    let partial = crate::nat::checksum::pseudo_header_sum(REMOTE.octets(), FIP.octets(), 6, 4020);
    sp[36..38].copy_from_slice(&partial.to_be_bytes());
    sp.extend_from_slice(&payload);
    let mut buf = with_headroom(&ethernet(GW_MAC, ROUTER_MAC, ETHERTYPE_IPV4, &sp));
    let mut f = buf.frame();
    f.offload = Offload {
        checksum: Some(PartialChecksum {
            start: 34,
            offset: 16,
        }),
        gso: Some(Gso {
            kind: GsoKind::Tcpv4,
            size: 1400,
        }),
    };
    assert_eq!(dp.handle(t(2), &mut f), Verdict::Consumed);
    assert_eq!(
        dp.nat()
            .table()
            .flow(
                dp.nat()
                    .table()
                    .lookup_outside(&crate::nat::OutsideKey {
                        egress: FIP,
                        remote: REMOTE,
                        nat_port,
                        remote_port: 5201,
                        proto: crate::nat::Proto::Tcp,
                    })
                    .unwrap()
            )
            .state,
        FlowState::TcpSynReceived
    );
    let mut stream = Vec::new();
    assert_eq!(
        dp.generated().len(),
        1,
        "one UDP super-packet carries the train"
    );
    let g = &dp.generated()[0];
    let gso = g.offload.gso.unwrap();
    assert_eq!(gso.kind, GsoKind::Udpv4);
    let c = g.offload.checksum.unwrap();
    assert_eq!((c.start, c.offset), (34, 6));
    let mut whole = g.frame.clone();
    let (src, dst, _, dport) = {
        // Finished as one datagram, the outer UDP checksum must hold: the kernel's
        // segmentation starts from that.
        assert!(finish_checksum(&mut whole, c));
        assert_udp_valid(&whole[ETH_LEN..])
    };
    assert_eq!((src, dst, dport), (FIP, NODE, PORT));
    // Cut it as the kernel will: every `gso.size` bytes of UDP payload is one VXLAN packet.
    let payload_start = encap::UDP_PAYLOAD;
    let segments: Vec<&[u8]> = g.frame[payload_start..]
        .chunks(usize::from(gso.size))
        .collect();
    assert_eq!(segments.len(), 3);
    for s in segments {
        assert!(20 + 8 + s.len() <= 1500, "each cut fits the interface");
        assert_eq!(&s[..8], &[8, 0, 0, 0, 0, 0, 1, 0]);
        let ieth = EthernetFrame::new_checked(&s[8..]).unwrap();
        assert_eq!(ieth.dst_addr(), NODE_VX_MAC);
        let ip = Ipv4Packet::new_checked(ieth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (REMOTE, POD));
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(
            tcp.verify_checksum(&REMOTE.into(), &POD.into()),
            "inner checksum complete"
        );
        assert_eq!(tcp.dst_port(), 40000);
        stream.extend_from_slice(tcp.payload());
    }
    assert_eq!(stream, payload);
    assert_eq!(dp.counters().inbound.packets, 3);
}

/// The generated VXLAN frames to the node, as their inner IPv4 packets.
fn tunnelled_to_node(dp: &Datapath) -> Vec<Vec<u8>> {
    dp.generated()
        .iter()
        .map(|g| {
            let (src, dst, _, dport) = assert_udp_valid(&g.frame[ETH_LEN..]);
            assert_eq!((src, dst, dport), (FIP, NODE, PORT));
            let eth = EthernetFrame::new_checked(&g.frame[..]).unwrap();
            assert_eq!(eth.dst_addr(), NODE_MAC);
            let ieth = EthernetFrame::new_checked(&g.frame[ENCAP_LEN..]).unwrap();
            assert_eq!((ieth.dst_addr(), ieth.src_addr()), (NODE_VX_MAC, GW_MAC));
            ieth.payload().to_vec()
        })
        .collect()
}

/// Checks an ICMP error packet and returns (source, destination, type, code, rest of
/// header word, quoted bytes).
fn icmp_error_of(ip: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8, u8, u32, Vec<u8>) {
    let p = Ipv4Packet::new_checked(ip).unwrap();
    assert!(p.verify_checksum());
    assert_eq!(p.next_header(), IpProtocol::Icmp);
    let icmp = Icmpv4Packet::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let b = p.payload();
    let rest = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    (
        p.src_addr(),
        p.dst_addr(),
        b[0],
        b[1],
        rest,
        b[8..].to_vec(),
    )
}

#[test]
fn a_pod_packet_whose_ttl_runs_out_gets_time_exceeded_through_the_tunnel() {
    let mut dp = datapath();
    let expiring = vxlan_from(NODE, VNI, &pod_packet(1));
    let v = dp.handle(t(1), &mut with_headroom(&expiring).frame());
    assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
    let sent = tunnelled_to_node(&dp);
    assert_eq!(sent.len(), 1);
    let (src, dst, kind, code, _, quote) = icmp_error_of(&sent[0]);
    assert_eq!((src, dst, kind, code), (FIP, POD, 11, 0));
    assert_eq!(
        quote,
        pod_packet(1)[ETH_LEN..],
        "quotes the pod's packet as sent"
    );
    assert_eq!(dp.counters().icmp_errors_sent, 1);
    assert_eq!(dp.counters().flows_created, 0, "nothing was translated");
}

#[test]
fn an_outside_packet_whose_ttl_runs_out_gets_time_exceeded_only_for_a_known_flow() {
    let mut dp = datapath();
    let out = go_out(&mut dp, t(1));
    dp.clear_generated();
    let nat_port = UdpPacket::new_checked(&out[34..]).unwrap().src_port();
    let reply = udp_packet((REMOTE, 53), (FIP, nat_port), 1, b"answer");
    let frame = ethernet(GW_MAC, ROUTER_MAC, ETHERTYPE_IPV4, &reply);
    let v = dp.handle(t(2), &mut with_headroom(&frame).frame());
    assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
    assert_eq!(dp.generated().len(), 1);
    let g = &dp.generated()[0].frame;
    let eth = EthernetFrame::new_checked(&g[..]).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (ROUTER_MAC, GW_MAC));
    let (src, dst, kind, code, _, quote) = icmp_error_of(eth.payload());
    assert_eq!((src, dst, kind, code), (FIP, REMOTE, 11, 0));
    assert_eq!(
        quote, reply,
        "quotes the packet as it arrived, untranslated"
    );
    dp.clear_generated();
    // No flow: no answer, counted as such.
    let stray = udp_packet((REMOTE, 53), (FIP, nat_port ^ 1), 1, b"x");
    let frame = ethernet(GW_MAC, ROUTER_MAC, ETHERTYPE_IPV4, &stray);
    let v = dp.handle(t(2), &mut with_headroom(&frame).frame());
    assert_eq!(v, Verdict::Drop(NatError::NoFlow.into()));
    assert!(dp.generated().is_empty());
}

/// Sends the pod's UDP packet out, then a reply of `len` bytes of payload with the given
/// flags word, and returns the verdict.
fn big_reply(dp: &mut Datapath, len: usize, flags: u16) -> (Verdict, Vec<u8>) {
    let out = go_out(dp, t(1));
    dp.clear_generated();
    let nat_port = UdpPacket::new_checked(&out[34..]).unwrap().src_port();
    let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
    let mut reply = udp_packet((REMOTE, 53), (FIP, nat_port), 60, &payload);
    reply[6..8].copy_from_slice(&flags.to_be_bytes());
    reply[10..12].fill(0);
    let sum = full(&reply[..20]);
    reply[10..12].copy_from_slice(&sum.to_be_bytes());
    let frame = ethernet(GW_MAC, ROUTER_MAC, ETHERTYPE_IPV4, &reply);
    (dp.handle(t(2), &mut with_headroom(&frame).frame()), reply)
}

#[test]
fn a_dont_fragment_packet_too_big_for_the_tunnel_gets_fragmentation_needed() {
    let mut dp = datapath();
    // 1451 bytes of IPv4: one more than fits in 1500 with the tunnel's 50.
    let (v, reply) = big_reply(&mut dp, 1451 - 28, 0x4000);
    assert_eq!(v, Verdict::Drop(DropReason::TooBig));
    assert_eq!(dp.generated().len(), 1);
    let g = &dp.generated()[0].frame;
    let (src, dst, kind, code, rest, quote) = icmp_error_of(&g[ETH_LEN..]);
    assert_eq!((src, dst, kind, code), (FIP, REMOTE, 3, 4));
    assert_eq!(
        rest & 0xffff,
        1450,
        "the next-hop MTU is what fits the tunnel"
    );
    assert_eq!(quote, reply[..548]);
    // 1450 bytes fit.
    let mut dp = datapath();
    let (v, _) = big_reply(&mut dp, 1450 - 28, 0x4000);
    assert_eq!(v, Verdict::Transmit);
}

#[test]
fn a_packet_that_may_be_fragmented_is_fragmented_and_each_piece_tunnelled() {
    let mut dp = datapath();
    let (v, reply) = big_reply(&mut dp, 3000, 0);
    assert_eq!(v, Verdict::Consumed);
    let pieces = tunnelled_to_node(&dp);
    assert_eq!(pieces.len(), 3);
    let mut payload = Vec::new();
    for p in &pieces {
        assert!(p.len() <= 1450);
        let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.src_addr(), ip.dst_addr(), ip.hop_limit()),
            (REMOTE, POD, 59)
        );
        assert_eq!(usize::from(ip.frag_offset()), payload.len());
        payload.extend_from_slice(ip.payload());
    }
    // Reassembled, it is the reply translated back to the pod.
    let udp = UdpPacket::new_checked(&payload[..]).unwrap();
    assert_eq!(udp.dst_port(), 40000);
    assert!(udp.verify_checksum(&REMOTE.into(), &POD.into()));
    assert_eq!(udp.payload(), &reply[28..]);
    assert_eq!(dp.counters().inbound.packets, 3);
}

#[test]
fn icmp_errors_are_rate_limited_and_never_sent_about_icmp_errors() {
    let mut dp = datapath();
    let expiring = vxlan_from(NODE, VNI, &pod_packet(1));
    for _ in 0..60 {
        dp.handle(t(1), &mut with_headroom(&expiring).frame());
    }
    assert_eq!(dp.counters().icmp_errors_sent, 50);
    assert_eq!(dp.counters().icmp_errors_rate_limited, 10);
    assert_eq!(dp.generated().len(), 50);
    dp.clear_generated();
    // A second later the bucket is full again, but an error about an error is never sent.
    let mut unreachable = udp_packet((POD, 40000), (REMOTE, 53), 1, &[0; 28]);
    unreachable[9] = 1;
    unreachable[20..28].copy_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
    unreachable[10..12].fill(0);
    let sum = full(&unreachable[..20]);
    unreachable[10..12].copy_from_slice(&sum.to_be_bytes());
    let inner = ethernet(GW_MAC, NODE_VX_MAC, ETHERTYPE_IPV4, &unreachable);
    let v = dp.handle(
        t(1001),
        &mut with_headroom(&vxlan_from(NODE, VNI, &inner)).frame(),
    );
    assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
    assert!(dp.generated().is_empty());
    let v = dp.handle(t(1001), &mut with_headroom(&expiring).frame());
    assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
    assert_eq!(dp.generated().len(), 1);
}

// ---- the kernel fast path's flows --------------------------------------------------------

fn tcp_segment(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    b[0] = 0x45;
    b[2..4].copy_from_slice(&40u16.to_be_bytes());
    b[8] = 64;
    b[9] = 6;
    b[12..16].copy_from_slice(&src.0.octets());
    b[16..20].copy_from_slice(&dst.0.octets());
    let sum = full(&b[..20]);
    b[10..12].copy_from_slice(&sum.to_be_bytes());
    b[20..22].copy_from_slice(&src.1.to_be_bytes());
    b[22..24].copy_from_slice(&dst.1.to_be_bytes());
    b[32] = 5 << 4;
    b[33] = flags;
    let pseudo = crate::nat::checksum::pseudo_header_sum(src.0.octets(), dst.0.octets(), 6, 20);
    b[36..38].copy_from_slice(&pseudo.to_be_bytes());
    let sum = full(&b[20..]);
    b[36..38].copy_from_slice(&sum.to_be_bytes());
    b
}

fn fast_datapath() -> Datapath {
    let mut dp = datapath();
    dp.enable_fast_path();
    dp
}

fn changes(dp: &mut Datapath) -> Vec<FastChange> {
    let mut out = Vec::new();
    dp.take_fast_changes(&mut out);
    out
}

/// Sends a TCP segment from the pod through the tunnel; returns the NAT port it left with.
fn tcp_out(dp: &mut Datapath, now: Instant, flags: u8) -> u16 {
    let inner = ethernet(
        GW_MAC,
        NODE_VX_MAC,
        ETHERTYPE_IPV4,
        &tcp_segment((POD, 40000), (REMOTE, 443), flags),
    );
    let mut buf = with_headroom(&vxlan_from(NODE, VNI, &inner));
    let mut f = buf.frame();
    assert_eq!(dp.handle(now, &mut f), Verdict::Transmit);
    TcpPacket::new_checked(&f.bytes()[34..]).unwrap().src_port()
}

fn tcp_in(dp: &mut Datapath, now: Instant, nat_port: u16, flags: u8) {
    let ip = tcp_segment((REMOTE, 443), (FIP, nat_port), flags);
    let mut buf = with_headroom(&ethernet(GW_MAC, ROUTER_MAC, ETHERTYPE_IPV4, &ip));
    assert_eq!(dp.handle(now, &mut buf.frame()), Verdict::Transmit);
}

#[test]
fn a_udp_flow_is_handed_to_the_fast_path_as_it_is_created_with_what_user_space_would_do() {
    let mut dp = fast_datapath();
    let out = go_out(&mut dp, t(1));
    let (_, _, nat_port, _) = assert_udp_valid(&out[ETH_LEN..]);
    let [FastChange::Install { out, inbound }] = changes(&mut dp)[..] else {
        panic!("one install expected");
    };
    assert_eq!(out.0.node, NODE.octets());
    assert_eq!(out.0.egress, FIP.octets());
    assert_eq!(out.0.pod, POD.octets());
    assert_eq!(out.0.remote, REMOTE.octets());
    assert_eq!(out.0.pod_port, 40000u16.to_be_bytes());
    assert_eq!(out.0.remote_port, 53u16.to_be_bytes());
    assert_eq!(out.0.proto, 17);
    assert_eq!(out.1.nat_port, nat_port.to_be_bytes());
    // Only frames from the node's bound MAC ride the flow out of the kernel.
    assert_eq!(out.1.node_mac, NODE_MAC.0);
    assert_eq!(inbound.0.nat_port, nat_port.to_be_bytes());
    assert_eq!(inbound.1.node_mac, NODE_MAC.0);
    assert_eq!(inbound.1.tunnel_mac, NODE_VX_MAC.0);
    assert_eq!(inbound.1.pod_port, 40000u16.to_be_bytes());
    // The kernel tunnels replies with the outer source port user space uses.
    let reply = udp_packet((REMOTE, 53), (FIP, nat_port), 64, b"answer");
    let mut buf = with_headroom(&ethernet(GW_MAC, ROUTER_MAC, ETHERTYPE_IPV4, &reply));
    let mut f = buf.frame();
    assert_eq!(dp.handle(t(2), &mut f), Verdict::Transmit);
    let (_, _, src_port, _) = assert_udp_valid(&f.bytes()[ETH_LEN..]);
    assert_eq!(inbound.1.src_port, src_port.to_be_bytes());
    assert_eq!(dp.offloaded(), 1);
    // Handed over once.
    go_out(&mut dp, t(3));
    assert!(changes(&mut dp).is_empty());
    // Without the fast path, nothing is decided for it.
    let mut plain = datapath();
    go_out(&mut plain, t(1));
    assert!(changes(&mut plain).is_empty());
    assert_eq!(plain.offloaded(), 0);
}

#[test]
fn a_flow_the_kernel_keeps_busy_outlives_its_user_space_timeout() {
    let mut dp = fast_datapath();
    go_out(&mut dp, t(1_000));
    changes(&mut dp);
    let udp = Timeouts::default().udp.total_millis();
    // Idle in user space, but the kernel forwarded a packet 100 s ago: kept.
    let now = t(udp + 10_000);
    dp.poll_with(now, |_| Some(now - Duration::from_secs(100)));
    assert_eq!(dp.nat().table().len(), 1);
    assert!(changes(&mut dp).is_empty());
    // Idle in both past that packet's timeout: expired, and taken back from the kernel.
    let later = now + Duration::from_secs(udp / 1000);
    dp.poll_with(later, |_| Some(now - Duration::from_secs(100)));
    assert_eq!(dp.nat().table().len(), 0);
    assert!(matches!(changes(&mut dp)[..], [FastChange::Remove { .. }]));
    assert_eq!(dp.offloaded(), 0);
}

#[test]
fn a_tcp_flow_is_handed_over_once_established_and_taken_back_at_fin() {
    let mut dp = fast_datapath();
    let nat_port = tcp_out(&mut dp, t(1), 0x02);
    assert!(changes(&mut dp).is_empty(), "SYN");
    tcp_in(&mut dp, t(2), nat_port, 0x12);
    assert!(changes(&mut dp).is_empty(), "SYN+ACK");
    tcp_out(&mut dp, t(3), 0x10);
    assert!(
        matches!(changes(&mut dp)[..], [FastChange::Install { .. }]),
        "ACK"
    );
    // FIN (which the kernel never forwards) comes to user space: the flow is taken back.
    tcp_in(&mut dp, t(4), nat_port, 0x11);
    let [FastChange::Remove { out, inbound }] = changes(&mut dp)[..] else {
        panic!("one remove expected");
    };
    assert_eq!(out.pod_port, 40000u16.to_be_bytes());
    assert_eq!(inbound.nat_port, nat_port.to_be_bytes());
    assert_eq!(dp.offloaded(), 0);
}

#[test]
fn flows_of_a_node_whose_macs_change_are_taken_back() {
    let mut dp = fast_datapath();
    go_out(&mut dp, t(1));
    changes(&mut dp);
    // The node's VXLAN device was recreated with another MAC.
    let inner = ethernet(
        GW_MAC,
        EthernetAddress([0x02, 0, 0, 0, 2, 0x21]),
        ETHERTYPE_IPV4,
        &udp_packet((POD, 40001), (REMOTE, 53), 64, b"query"),
    );
    let mut buf = with_headroom(&vxlan_from(NODE, VNI, &inner));
    assert_eq!(dp.handle(t(2), &mut buf.frame()), Verdict::Transmit);
    let got = changes(&mut dp);
    assert!(
        matches!(got[..], [FastChange::Remove { out, .. }, FastChange::Install { .. }] if out.pod_port == 40000u16.to_be_bytes()),
        "{got:?}"
    );
}

#[test]
fn the_fast_path_is_off_until_the_next_hop_is_known() {
    let dp = owning(setup());
    assert_eq!(dp.fast_config().enabled, 0);
    let dp = fast_datapath();
    let cfg = dp.fast_config();
    assert_eq!(cfg.enabled, 1);
    assert_eq!(cfg.next_hop_mac, ROUTER_MAC.0);
    assert_eq!(cfg.mac, GW_MAC.0);
    assert_eq!(cfg.room, 1450);
    assert_eq!(cfg.tunnel_port, PORT.to_be_bytes());
    assert_eq!(cfg.vni_word, [0, 0, 1, 0]);
}

fn arp_request_for(target: Ipv4Addr) -> Buf {
    with_headroom(&encap::arp_frame(
        EthernetAddress::BROADCAST,
        ArpOperation::Request,
        (ROUTER_MAC, ROUTER),
        (EthernetAddress([0; 6]), target),
    ))
}

/// Gratuitous ARPs for the floating IP among the generated frames, which are cleared.
fn garps(dp: &mut Datapath) -> usize {
    let n = dp
        .generated()
        .iter()
        .filter(|g| g.frame.len() == ARP_FRAME_LEN && g.frame[28..32] == FIP.octets())
        .count();
    dp.clear_generated();
    n
}

#[test]
fn a_backup_is_silent_for_the_address_and_a_new_master_announces_it_at_once() {
    let mut dp = Datapath::new(setup(), t(0)).unwrap();
    assert!(!dp.owns(FIP));
    // Not owned: no ARP answer, traffic to it dropped and counted, no gratuitous ARP.
    assert_eq!(
        dp.handle(t(1), &mut arp_request_for(FIP).frame()),
        Verdict::Ignore
    );
    let mut buf = with_headroom(&vxlan_from(NODE, VNI, &pod_packet(64)));
    assert_eq!(
        dp.handle(t(1), &mut buf.frame()),
        Verdict::Drop(DropReason::NotMaster)
    );
    let req = ethernet(GW_MAC, NODE_MAC, ETHERTYPE_IPV4, &echo_request(NODE, FIP));
    assert_eq!(
        dp.handle(t(1), &mut with_headroom(&req).frame()),
        Verdict::Drop(DropReason::NotMaster)
    );
    assert_eq!(dp.counters().drops(DropReason::NotMaster), 2);
    dp.poll(t(5000));
    assert_eq!(garps(&mut dp), 0);
    // Owning: the first gratuitous ARP is due at once, and ARP is answered.
    assert!(dp.own(t(6000), FIP));
    assert!(!dp.own(t(6000), Ipv4Addr::new(192, 168, 1, 222)));
    assert_eq!(dp.poll_at(), t(6000));
    dp.poll(t(6000));
    assert_eq!(garps(&mut dp), 1);
    assert_eq!(
        dp.handle(t(6001), &mut arp_request_for(FIP).frame()),
        Verdict::Transmit
    );
    // Released: silent again at once, the rest of the burst cancelled.
    dp.release(FIP);
    assert_eq!(
        dp.handle(t(6002), &mut arp_request_for(FIP).frame()),
        Verdict::Ignore
    );
    for ms in (6000..10_000).step_by(100) {
        dp.poll(t(ms));
    }
    assert_eq!(garps(&mut dp), 0);
}

#[test]
fn gratuitous_arp_bursts_follow_the_settings_and_repeat_while_owning() {
    let mut s = setup();
    s.announce = Announce {
        count: 2,
        interval: Duration::from_millis(300),
        refresh: Some(Duration::from_secs(10)),
    };
    let mut dp = Datapath::new(s, t(0)).unwrap();
    dp.own(t(1000), FIP);
    let mut sent = Vec::new();
    for ms in (0..25_000).step_by(50) {
        dp.poll(t(ms));
        sent.extend(std::iter::repeat_n(ms, garps(&mut dp)));
    }
    assert_eq!(sent, [1000, 1300, 11_000, 11_300, 21_000, 21_300]);
    // Without a refresh, one burst only.
    let mut s = setup();
    s.announce.refresh = None;
    let mut dp = Datapath::new(s, t(0)).unwrap();
    dp.own(t(0), FIP);
    let mut n = 0;
    for ms in (0..200_000).step_by(100) {
        dp.poll(t(ms));
        n += garps(&mut dp);
    }
    assert_eq!(n, 3);
}

#[test]
fn a_reasserting_master_announces_again_at_once_and_a_backup_does_not() {
    let mut dp = Datapath::new(setup(), t(0)).unwrap();
    // Not owned: nothing to announce.
    assert!(!dp.reannounce(t(0), FIP));
    dp.poll(t(0));
    assert_eq!(garps(&mut dp), 0);
    dp.own(t(1000), FIP);
    let mut sent = Vec::new();
    for ms in (1000..10_000).step_by(50) {
        if ms == 5000 {
            // Another gateway believed it was master: a new burst, its first at once.
            assert!(dp.reannounce(t(ms), FIP));
        }
        dp.poll(t(ms));
        sent.extend(std::iter::repeat_n(ms, garps(&mut dp)));
    }
    // The default burst: 3, 1 s apart; again from 5 s.
    assert_eq!(sent, [1000, 2000, 3000, 5000, 6000, 7000]);
    assert!(!dp.reannounce(t(10_000), Ipv4Addr::new(192, 168, 1, 222)));
}

#[test]
fn releasing_an_address_takes_its_flows_back_from_the_fast_path_and_keeps_them() {
    let mut dp = fast_datapath();
    let nat_port = tcp_out(&mut dp, t(1), 0x02);
    tcp_in(&mut dp, t(2), nat_port, 0x12);
    tcp_out(&mut dp, t(3), 0x10);
    assert!(matches!(changes(&mut dp)[..], [FastChange::Install { .. }]));
    dp.release(FIP);
    assert!(matches!(changes(&mut dp)[..], [FastChange::Remove { .. }]));
    assert_eq!(dp.offloaded(), 0);
    assert_eq!(
        dp.nat().table().len(),
        1,
        "the flow stays for a later takeover"
    );
    // Owning again, the next packet hands it back with the same port.
    dp.own(t(4), FIP);
    assert_eq!(tcp_out(&mut dp, t(5), 0x10), nat_port);
    assert!(matches!(changes(&mut dp)[..], [FastChange::Install { .. }]));
}

/// Hands every change `from` recorded for its peers to `to`; returns them.
fn sync_to(from: &mut Datapath, to: &mut Datapath, now: Instant) -> Vec<Change> {
    let mut out = Vec::new();
    from.take_changes(&mut out);
    for change in &out {
        to.apply_peer(now, from.setup.address, None, *change);
    }
    out
}

/// What `dp` streams to a peer that asks for its whole table.
fn export_all(dp: &Datapath, now: Instant) -> Vec<Change> {
    dp.export_nodes()
        .chain(dp.export_flows(now).map(|(f, r)| Change::upsert(f, r)))
        .collect()
}

/// A second gateway on the same LAN, backing up the floating IP, its next hop resolved.
fn backup() -> Datapath {
    let mut s = setup();
    s.mac = EthernetAddress([2, 0, 0, 0, 0, 0x12]);
    s.address = Ipv4Addr::new(192, 168, 1, 12);
    let mut dp = Datapath::new(s, t(0)).unwrap();
    resolve_next_hop(&mut dp);
    dp
}

#[test]
fn a_backup_holds_the_masters_flows_and_after_takeover_translates_them_with_the_same_ports() {
    let mut a = learning();
    let mut b = backup();
    a.enable_sync();
    b.enable_sync();
    // A UDP flow and a TCP connection through the master.
    let out = go_out(&mut a, t(1));
    let udp_port = UdpPacket::new_checked(&out[34..]).unwrap().src_port();
    let tcp_port = tcp_out(&mut a, t(2), 0x02);
    tcp_in(&mut a, t(3), tcp_port, 0x12);
    tcp_out(&mut a, t(4), 0x10);
    let sent = sync_to(&mut a, &mut b, t(5));
    // The node, the UDP flow, the SYN, SYN+ACK and ACK states; the ACK of an established
    // connection changes nothing.
    assert!(
        matches!(
            sent[0],
            Change {
                op: Op::Node { .. },
                flow: Flow { node: NODE, .. },
                ..
            }
        ),
        "{sent:?}"
    );
    let states: Vec<FlowState> = sent
        .iter()
        .filter_map(|e| match e {
            Change {
                op: Op::Upsert,
                flow,
                ..
            } => Some(flow.state),
            _ => None,
        })
        .collect();
    use FlowState::*;
    assert_eq!(
        states,
        [Open, TcpSynSent, TcpSynReceived, TcpEstablished],
        "{sent:?}"
    );
    tcp_out(&mut a, t(6), 0x10);
    assert!(sync_to(&mut a, &mut b, t(6)).is_empty());
    assert_eq!(b.nat().table().len(), 2);
    assert_eq!(b.peer_counters_now().installed, 4);
    // The backup holds them but forwards nothing.
    let reply = udp_packet((REMOTE, 53), (FIP, udp_port), 60, b"answer");
    let frame = ethernet(b.setup.mac, ROUTER_MAC, ETHERTYPE_IPV4, &reply);
    assert_eq!(
        b.handle(t(7), &mut with_headroom(&frame).frame()),
        Verdict::Drop(DropReason::NotMaster)
    );
    // Takeover: the first packet after it comes from outside, to a node that never sent
    // the new master anything, and reaches the pod through the tunnel.
    b.own(t(8), FIP);
    let mut buf = with_headroom(&frame);
    let mut f = buf.frame();
    assert_eq!(b.handle(t(8), &mut f), Verdict::Transmit);
    let bytes = f.bytes();
    let eth = EthernetFrame::new_checked(bytes).unwrap();
    assert_eq!(eth.dst_addr(), NODE_MAC);
    let inner = EthernetFrame::new_checked(&bytes[ENCAP_LEN..]).unwrap();
    assert_eq!(inner.dst_addr(), NODE_VX_MAC);
    let (_, dst, _, dport) = assert_udp_valid(inner.payload());
    assert_eq!((dst, dport), (POD, 40000));
    // The pod's TCP connection goes on with the port it had.
    assert_eq!(tcp_out(&mut b, t(9), 0x10), tcp_port);
    tcp_in(&mut b, t(10), tcp_port, 0x10);
    assert_eq!(b.counters().flows_created, 0);
}

#[test]
fn expiry_is_shared_by_the_owner_only_and_a_peer_copy_outlives_the_owners_deadline() {
    let mut a = datapath();
    let mut b = backup();
    a.enable_sync();
    b.enable_sync();
    go_out(&mut a, t(1));
    sync_to(&mut a, &mut b, t(1));
    assert_eq!(b.nat().table().len(), 1);
    let udp = Duration::from_secs(5 * 60);
    // Busy at the master: the wheel renews it, and the backup hears of it.
    let half = t(1) + udp - Duration::from_secs(10);
    go_out(&mut a, half);
    a.poll(t(1) + udp + Duration::from_secs(1));
    let sent = sync_to(&mut a, &mut b, t(1) + udp + Duration::from_secs(1));
    assert!(
        matches!(sent[..], [Change { op: Op::Upsert, remaining, .. }] if remaining > Duration::from_secs(280)),
        "{sent:?}"
    );
    // Idle at the master: it expires there and is deleted at the backup.
    let end = half + udp + Duration::from_secs(2);
    a.poll(end);
    assert_eq!(a.nat().table().len(), 0);
    let sent = sync_to(&mut a, &mut b, end);
    assert!(
        matches!(sent[..], [Change { op: Op::Delete, .. }]),
        "{sent:?}"
    );
    assert_eq!(b.nat().table().len(), 0);
    assert_eq!(b.peer_counters_now().removed, 1);
    // A backup's own expiry of a held copy is not shared back.
    go_out(&mut a, end);
    sync_to(&mut a, &mut b, end);
    b.poll(end + udp + peers::HOLD_GRACE + Duration::from_secs(2));
    assert_eq!(b.nat().table().len(), 0);
    let mut out = Vec::new();
    b.take_changes(&mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_full_export_carries_the_nodes_and_the_owned_flows() {
    let mut a = datapath();
    a.enable_sync();
    go_out(&mut a, t(1));
    let all = export_all(&a, t(2));
    assert!(
        matches!(
            all[..],
            [
                Change {
                    op: Op::Node { .. },
                    ..
                },
                Change { op: Op::Upsert, .. }
            ]
        ),
        "{all:?}"
    );
    a.release(FIP);
    let all = export_all(&a, t(2));
    assert!(
        matches!(
            all[..],
            [Change {
                op: Op::Node { .. },
                ..
            }]
        ),
        "{all:?}"
    );
    // A clash with a flow of its own is refused, counted, and changes nothing.
    let mut b = backup();
    a.own(t(3), FIP);
    let Change {
        mut flow,
        remaining,
        ..
    } = export_all(&a, t(3))[1];
    b.apply_peer(t(3), GW, None, Change::upsert(flow, remaining));
    flow.pod_port += 1;
    b.apply_peer(t(3), GW, None, Change::upsert(flow, remaining));
    assert_eq!(b.peer_counters_now().refused, 1);
    assert_eq!(
        b.peer_counters_now().refusals[super::peers::Refusal::Conflict as usize],
        1
    );
    assert_eq!(b.nat().table().len(), 1);
}

/// The sync's bandwidth for 1000 new flows a second, each through its whole life: TCP
/// connections opened, closed and expired, or UDP queries answered and expired, through a
/// real data path and sync sender on a virtual clock. Printed for the measurements
/// (`cargo test -p egret-gateway --lib sync_bandwidth -- --nocapture`); the bound is the
/// budget the design promises: under 2 Mbit/s of IPv4 per 1000 TCP flows/s.
#[test]
fn sync_bandwidth_per_thousand_new_flows_a_second() {
    use crate::sync::{Keys, Params, Sync};
    let peer = std::net::SocketAddr::from(([192, 168, 1, 12], 4801));
    for (tcp, sealed) in [(true, true), (false, true), (true, false), (false, false)] {
        let mut s = setup();
        s.nat.port_range = 20000..=60000;
        s.nat.max_flows = 1 << 20;
        let mut dp = Datapath::new(s, t(0)).unwrap();
        dp.own(t(0), FIP);
        resolve_next_hop(&mut dp);
        dp.enable_sync();
        let params = Params {
            keys: sealed.then(|| Keys::derive(&[0x5a; 32], None)),
            ..Params::new(7, vec![peer])
        };
        let mut sync = Sync::new(params, t(0));
        let (mut datagrams, mut payload) = (0u64, 0u64);
        let mut exports = Vec::new();
        let mut out = Vec::new();
        let seconds = 10;
        let pod = |i: u64| (POD, 10_000 + (i % 50_000) as u16);
        let remote = |i: u64| (Ipv4Addr::from_bits(0xc633_0000 + i as u32), 443);
        let send = |dp: &mut Datapath, now: Instant, i: u64, out_dir: bool, flags: u8| {
            let (src, dst) = (pod(i), remote(i));
            let frame = if out_dir {
                let inner = ethernet(
                    GW_MAC,
                    NODE_VX_MAC,
                    ETHERTYPE_IPV4,
                    &tcp_segment(src, dst, flags),
                );
                vxlan_from(NODE, VNI, &inner)
            } else {
                let port = dp
                    .nat()
                    .table()
                    .lookup_inside(&crate::nat::InsideKey {
                        node: NODE,
                        egress: FIP,
                        pod: src.0,
                        remote: dst.0,
                        pod_port: src.1,
                        remote_port: dst.1,
                        proto: crate::nat::Proto::Tcp,
                    })
                    .map(|id| dp.nat().table().flow(id).nat_port)
                    .unwrap();
                ethernet(
                    GW_MAC,
                    ROUTER_MAC,
                    ETHERTYPE_IPV4,
                    &tcp_segment(dst, (FIP, port), flags),
                )
            };
            dp.handle(now, &mut with_headroom(&frame).frame());
        };
        let end_ms = (seconds + 600) * 1000;
        let mut i = 0u64;
        for ms in 0..end_ms {
            let now = t(ms);
            if ms < seconds * 1000 {
                // One new flow a millisecond, through its life within that millisecond.
                if tcp {
                    send(&mut dp, now, i, true, 0x02);
                    send(&mut dp, now, i, false, 0x12);
                    send(&mut dp, now, i, true, 0x10);
                    send(&mut dp, now, i, true, 0x11);
                    send(&mut dp, now, i, false, 0x11);
                    send(&mut dp, now, i, true, 0x10);
                } else {
                    let q = udp_packet(pod(i), (REMOTE, 53), 64, b"query");
                    let inner = ethernet(GW_MAC, NODE_VX_MAC, ETHERTYPE_IPV4, &q);
                    dp.handle(
                        now,
                        &mut with_headroom(&vxlan_from(NODE, VNI, &inner)).frame(),
                    );
                }
                i += 1;
            } else if ms % 100 != 0 {
                continue;
            }
            if now >= dp.poll_at() {
                dp.poll(now);
                dp.clear_generated();
            }
            dp.take_changes(&mut exports);
            for change in exports.drain(..) {
                sync.queue(now, change);
            }
            sync.poll(now, &mut out);
            for (_, d) in out.drain(..) {
                datagrams += 1;
                payload += d.len() as u64;
            }
        }
        assert_eq!(dp.nat().table().len(), 0, "every flow lived its whole life");
        // IPv4 and UDP headers on top of each payload.
        let ip_bytes = payload + 28 * datagrams;
        let mbit = ip_bytes as f64 * 8.0 / seconds as f64 / 1e6;
        let changes = sync.counters().changes_sent;
        println!(
            "{} {}: {changes} changes for {} flows, {datagrams} datagrams, {payload} B payload: \
             {mbit:.3} Mbit/s of IPv4 per 1000 new flows/s",
            if tcp { "TCP" } else { "UDP" },
            if sealed { "sealed" } else { "in clear" },
            seconds * 1000
        );
        assert!(mbit < 2.0, "{mbit} Mbit/s");
    }
}

/// A flow of the master's floating IP, as the master would export it.
fn peer_flow(pod_port: u16, nat_port: u16) -> Flow {
    Flow {
        node: NODE,
        egress: FIP,
        pod: POD,
        remote: REMOTE,
        pod_port,
        remote_port: 53,
        nat_port,
        proto: crate::nat::Proto::Udp,
        state: FlowState::Open,
    }
}

fn upsert(flow: Flow, secs: u64) -> Change {
    Change::upsert(flow, Duration::from_secs(secs))
}

fn refusals(dp: &Datapath) -> Vec<(&'static str, u64)> {
    dp.peer_counters_now()
        .refusals()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.label(), n))
        .collect()
}

#[test]
fn a_peers_change_is_applied_only_when_it_is_sane() {
    let mut b = backup();
    b.enable_sync();
    let good = peer_flow(40000, 20000);
    // Each insane field, refused and counted by reason; nothing installed.
    let other_address = Flow {
        egress: Ipv4Addr::new(192, 168, 1, 99),
        ..good
    };
    b.apply_peer(t(1), GW, None, upsert(other_address, 60));
    b.apply_peer(
        t(1),
        GW,
        None,
        upsert(
            Flow {
                node: STRANGER,
                ..good
            },
            60,
        ),
    );
    b.apply_peer(
        t(1),
        GW,
        None,
        upsert(
            Flow {
                nat_port: 19999,
                ..good
            },
            60,
        ),
    );
    // UDP lives 300 s here; the wire rounds up, so 301 s is the most a peer may announce.
    b.apply_peer(t(1), GW, None, upsert(good, 302));
    b.apply_peer(t(1), GW, None, upsert(good, u64::from(u32::MAX)));
    let closed = Flow {
        proto: crate::nat::Proto::Tcp,
        state: FlowState::TcpClosed,
        ..good
    };
    b.apply_peer(t(1), GW, None, upsert(closed, 60));
    assert_eq!(b.nat().table().len(), 0);
    assert_eq!(
        refusals(&b),
        vec![
            ("unknown_address", 1),
            ("disallowed_source", 1),
            ("port_range", 1),
            ("lifetime", 3),
        ]
    );
    assert_eq!(b.peer_counters_now().refused, 6);
    // A node record for a node outside allowed_sources is refused too.
    let node = Node {
        mac: NODE_MAC,
        tunnel_mac: NODE_VX_MAC,
    };
    b.apply_peer(
        t(1),
        GW,
        None,
        Change::node(STRANGER, node.mac.0, node.tunnel_mac.0),
    );
    assert!(b.nodes.get(STRANGER).is_none());
    // The sane one is installed.
    b.apply_peer(t(1), GW, None, upsert(good, 301));
    assert_eq!(b.nat().table().len(), 1);
    // The election says another gateway is master now: GW's changes are stale.
    let other = Some(Ipv4Addr::new(192, 168, 1, 13));
    b.apply_peer(t(2), GW, other, Change::delete(good));
    b.apply_peer(t(2), GW, other, upsert(peer_flow(40001, 20001), 60));
    assert_eq!(b.nat().table().len(), 1);
    // A master never takes flows of its own address from anyone.
    b.own(t(3), FIP);
    b.apply_peer(t(3), GW, Some(GW), Change::delete(good));
    b.apply_peer(t(3), GW, Some(GW), upsert(peer_flow(40001, 20001), 60));
    assert_eq!(b.nat().table().len(), 1);
    let r = refusals(&b);
    assert!(
        r.contains(&("not_master", 2)) && r.contains(&("own_address", 2)),
        "{r:?}"
    );
    assert!(r.contains(&("disallowed_source", 2)), "{r:?}");
}

#[test]
fn the_end_of_a_peers_full_resync_drops_what_it_no_longer_has() {
    let mut b = backup();
    b.enable_sync();
    let (kept, gone) = (peer_flow(40000, 20000), peer_flow(40001, 20001));
    b.apply_peer(t(1), GW, Some(GW), upsert(kept, 60));
    b.apply_peer(t(1), GW, Some(GW), upsert(gone, 60));
    assert_eq!(b.nat().table().len(), 2);
    // Another peer's resync sweeps nothing of GW's addresses.
    let other = Ipv4Addr::new(192, 168, 1, 13);
    b.peer_resync_begin(other);
    b.peer_resync_end(other, &[]);
    assert_eq!(b.nat().table().len(), 2);
    // GW's resync mentions only `kept`: `gone` goes, with its port.
    b.peer_resync_begin(GW);
    b.apply_peer(t(2), GW, Some(GW), upsert(kept, 60));
    b.peer_resync_end(GW, &[FIP]);
    assert_eq!(b.nat().table().len(), 1);
    assert!(b.nat().table().lookup_inside(&kept.inside_key()).is_some());
    assert_eq!(b.peer_counters_now().swept, 1);
    assert_eq!(b.snapshot(t(2), 0).floating_ips[0].ports_in_use, 1);
    // An address whose master is unknown, or one this gateway owns, is never swept.
    b.peer_resync_begin(GW);
    b.peer_resync_end(GW, &[]);
    b.own(t(3), FIP);
    b.peer_resync_begin(GW);
    b.peer_resync_end(GW, &[FIP]);
    assert_eq!(b.nat().table().len(), 1);
    assert_eq!(b.peer_counters_now().swept, 1);
}

#[test]
fn pods_cannot_reach_martians_gateways_or_floating_ips_through_the_nat() {
    let mut dp = datapath();
    let peer_gateway = Ipv4Addr::new(192, 168, 1, 12);
    for dst in [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 18),
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(169, 254, 100, 1),
        Ipv4Addr::new(240, 0, 0, 1),
        GW,
        peer_gateway,
        FIP,
    ] {
        let ip = udp_packet((POD, 40000), (dst, 4801), 64, b"forged sync");
        let inner = ethernet(GW_MAC, NODE_VX_MAC, ETHERTYPE_IPV4, &ip);
        let mut buf = with_headroom(&vxlan_from(NODE, VNI, &inner));
        assert_eq!(
            dp.handle(t(1), &mut buf.frame()),
            Verdict::Drop(DropReason::Martian),
            "{dst}"
        );
    }
    assert_eq!(dp.counters().drops(DropReason::Martian), 9);
    assert_eq!(dp.nat().table().len(), 0);
    // The router's own address is an ordinary destination.
    let ip = udp_packet((POD, 40000), (ROUTER, 53), 64, b"q");
    let inner = ethernet(GW_MAC, NODE_VX_MAC, ETHERTYPE_IPV4, &ip);
    let mut buf = with_headroom(&vxlan_from(NODE, VNI, &inner));
    assert_eq!(dp.handle(t(1), &mut buf.frame()), Verdict::Transmit);
}

/// A node's VXLAN frame as a host at `mac` forges it.
fn vxlan_spoofed(mac: EthernetAddress, inner: &[u8]) -> Vec<u8> {
    let mut frame = vxlan_from(NODE, VNI, inner);
    frame[6..12].copy_from_slice(mac.as_bytes());
    frame
}

#[test]
fn a_host_spoofing_a_nodes_address_neither_egresses_nor_gets_its_replies() {
    let mut dp = datapath();
    let out = go_out(&mut dp, t(1));
    let nat_port = UdpPacket::new_checked(&out[34..]).unwrap().src_port();
    let evil = EthernetAddress([2, 0, 0, 0, 0, 0x66]);
    let evil_vx = EthernetAddress([2, 0, 0, 0, 1, 0x66]);
    // VXLAN and a tunnel ARP with the node's address, from the attacker's MAC: refused,
    // and the node probed once (its first probe, at 0, was a second ago).
    let ip = udp_packet((POD, 40001), (REMOTE, 53), 64, b"spoofed");
    let inner = ethernet(GW_MAC, evil_vx, ETHERTYPE_IPV4, &ip);
    let arp = encap::arp_frame(
        EthernetAddress::BROADCAST,
        ArpOperation::Request,
        (evil_vx, Ipv4Addr::new(169, 254, 100, 2)),
        (EthernetAddress([0; 6]), Ipv4Addr::new(169, 254, 100, 1)),
    );
    for (i, inner) in [inner, arp.to_vec()].iter().enumerate() {
        let mut buf = with_headroom(&vxlan_spoofed(evil, inner));
        assert_eq!(
            dp.handle(t(1002 + i as u64), &mut buf.frame()),
            Verdict::Drop(DropReason::NodeMismatch)
        );
    }
    let probes: Vec<_> = dp.generated().iter().map(|g| g.frame.clone()).collect();
    assert_eq!(
        probes,
        vec![encap::arp_frame(
            EthernetAddress::BROADCAST,
            ArpOperation::Request,
            (GW_MAC, GW),
            (EthernetAddress([0; 6]), NODE),
        )]
    );
    dp.clear_generated();
    // The node answers; so does the attacker: a conflict, and the binding stays.
    for mac in [NODE_MAC, evil] {
        let answer = encap::arp_frame(GW_MAC, ArpOperation::Reply, (mac, NODE), (GW_MAC, GW));
        dp.handle(t(1005), &mut with_headroom(&answer).frame());
    }
    dp.poll(t(1002) + neighbors::PROBE_WAIT);
    let s = dp.snapshot(t(1200), 0);
    assert_eq!(
        (s.control.node_probes.sent, s.control.node_probes.conflict),
        (1, 1)
    );
    assert_eq!(s.nodes[0].mac, NODE_MAC.to_string());
    assert!(s.nodes[0].verified);
    assert_eq!(s.drops["node_mismatch"], 2);
    // Replies still go to the node.
    let reply = udp_packet((REMOTE, 53), (FIP, nat_port), 60, b"answer");
    let mut buf = with_headroom(&ethernet(GW_MAC, ROUTER_MAC, ETHERTYPE_IPV4, &reply));
    let mut f = buf.frame();
    assert_eq!(dp.handle(t(1300), &mut f), Verdict::Transmit);
    assert_eq!(
        EthernetFrame::new_checked(f.bytes()).unwrap().dst_addr(),
        NODE_MAC
    );
    let inner = EthernetFrame::new_checked(&f.bytes()[ENCAP_LEN..]).unwrap();
    assert_eq!(inner.dst_addr(), NODE_VX_MAC);
}

#[test]
fn a_node_that_moved_is_followed_once_arp_confirms_it_and_peers_hear_of_it() {
    let mut dp = datapath();
    dp.enable_sync();
    go_out(&mut dp, t(1));
    let mut exports = Vec::new();
    dp.take_changes(&mut exports);
    exports.clear();
    let moved = EthernetAddress([2, 0, 0, 0, 9, 0x21]);
    let mut buf = with_headroom(&vxlan_spoofed(moved, &pod_packet(64)));
    assert_eq!(
        dp.handle(t(1002), &mut buf.frame()),
        Verdict::Drop(DropReason::NodeMismatch)
    );
    dp.clear_generated();
    let answer = encap::arp_frame(GW_MAC, ArpOperation::Reply, (moved, NODE), (GW_MAC, GW));
    dp.handle(t(1003), &mut with_headroom(&answer).frame());
    dp.poll(t(1002) + neighbors::PROBE_WAIT);
    assert_eq!(dp.snapshot(t(1200), 0).control.node_probes.moved, 1);
    let mut buf = with_headroom(&vxlan_spoofed(moved, &pod_packet(64)));
    assert_eq!(dp.handle(t(1200), &mut buf.frame()), Verdict::Transmit);
    dp.take_changes(&mut exports);
    assert!(
        exports.contains(&Change::node(NODE, moved.0, NODE_VX_MAC.0)),
        "{exports:?}"
    );
    // A peer's record cannot take the confirmed binding back to the old MAC.
    dp.apply_peer(
        t(1300),
        Ipv4Addr::new(192, 168, 1, 12),
        None,
        Change::node(NODE, NODE_NODE.mac.0, NODE_NODE.tunnel_mac.0),
    );
    assert_eq!(dp.nodes.get(NODE).map(|n| n.mac), Some(moved));
    assert_eq!(refusals(&dp), vec![("node_verified", 1)]);
}
