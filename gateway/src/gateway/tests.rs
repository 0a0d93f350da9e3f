//! The core on its own: what one gateway's output and status say as the election moves.

use smoltcp::time::Duration;
use smoltcp::wire::{EthernetAddress, Ipv4Cidr};

use super::*;
use crate::datapath::{Announce, FloatingIp};
use crate::nat::NatParams;
use crate::wire::vrrp::Advert;

const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);
const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 12);
const FIP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);

fn params() -> Params {
    Params {
        setup: Setup {
            name: "gw1".into(),
            interface: "eth0".into(),
            mac: EthernetAddress([2, 0, 0, 0, 0, 0x11]),
            address: GW,
            prefix_len: 24,
            gateways: vec![PEER],
            mtu: 1500,
            next_hop: Ipv4Addr::new(192, 168, 1, 1),
            floating_ips: vec![FloatingIp {
                address: FIP,
                vrid: 10,
                priority: 100,
            }],
            announce: Announce::default(),
            tunnel_port: 4800,
            vni: 1,
            allowed_sources: vec![Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 16), 28)],
            nat: NatParams {
                max_flows: 1024,
                ..NatParams::default()
            },
            seed: 1,
        },
        interval_centis: 10,
        preempt: true,
        election_peers: Vec::new(),
        sync: None,
        fast_path: false,
    }
}

/// Gratuitous ARPs for the floating IP among `out`'s frames.
fn garps(out: &Outbox) -> usize {
    out.frames
        .iter()
        .filter(|g| {
            g.frame.len() >= 42
                && g.frame[12..14] == [0x08, 0x06]
                && g.frame[28..32] == FIP.octets()
                && g.frame[38..42] == FIP.octets()
        })
        .count()
}

#[test]
fn the_election_is_carried_out_at_once_and_the_status_shows_it() {
    let t0 = Instant::ZERO;
    let mut gw = Gateway::new(params(), t0).unwrap();
    let mut out = Outbox::default();
    let s = gw.snapshot(t0, 0);
    assert_eq!(s.floating_ips[0].state, "backup");
    assert!(!s.floating_ips[0].owned);
    // Every refusal reason is listed from the start.
    for reason in [
        "ttl",
        "not_peer",
        "address_mismatch",
        "unverified",
        "zero_not_from_master",
    ] {
        assert_eq!(
            s.election.adverts_rejected.get(reason),
            Some(&0),
            "{reason}"
        );
    }
    assert_eq!(s.election.mode, "multicast");
    // Nobody else advertises: master after Master_Down_Interval, its advert and its first
    // gratuitous ARP in the same output.
    let at = gw.election().poll_at().unwrap();
    assert!(at > t0 && gw.poll_at() <= at);
    gw.poll(at);
    gw.take_output(&mut out);
    assert!(gw.datapath().owns(FIP));
    assert_eq!(out.adverts.len(), 1);
    assert_eq!(out.adverts[0].0, MULTICAST_GROUP);
    assert_eq!(garps(&out), 1, "announced at once");
    gw.recycle(&mut out);
    let s = gw.snapshot(at, 1_000_000);
    let ip = &s.floating_ips[0];
    assert_eq!((ip.state.as_str(), ip.master.as_str()), ("master", "gw1"));
    assert!(ip.owned);
    assert_eq!((ip.transitions, ip.adverts_sent), (2, 1));
    assert_eq!(ip.last_transition_unix_ms, 1_000_000);
    // A higher priority takes it: released at once, the master known by address.
    let better = Advert {
        vrid: 10,
        priority: 200,
        interval_centis: 10,
        addresses: vec![FIP],
    };
    let later = at + Duration::from_millis(5);
    gw.handle_advert(later, &better.emit_ipv4(PEER, MULTICAST_GROUP));
    assert!(!gw.datapath().owns(FIP));
    // Yielding, it says so once with priority 0, so the winner announces the address.
    gw.take_output(&mut out);
    let yielded: Vec<u8> = out
        .adverts
        .iter()
        .map(|(_, p)| Advert::parse_ipv4(p).unwrap().advert.priority)
        .collect();
    assert_eq!(yielded, [0]);
    gw.recycle(&mut out);
    let s = gw.snapshot(later, 0);
    assert_eq!(s.floating_ips[0].master, "192.168.1.12");
    assert_eq!(s.floating_ips[0].master_address, Some(PEER));
    // Leaving hands nothing over: it is not master.
    gw.shutdown(later);
    gw.take_output(&mut out);
    assert!(out.adverts.is_empty());
}

#[test]
fn leaving_as_master_hands_the_address_over_with_priority_zero() {
    let mut gw = Gateway::new(params(), Instant::ZERO).unwrap();
    let at = gw.election().poll_at().unwrap();
    gw.poll(at);
    let mut out = Outbox::default();
    gw.take_output(&mut out);
    gw.recycle(&mut out);
    gw.shutdown(at + Duration::from_millis(1));
    gw.take_output(&mut out);
    let [(to, packet)] = &out.adverts[..] else {
        panic!("{:?}", out.adverts);
    };
    assert_eq!(*to, MULTICAST_GROUP);
    let advert = Advert::parse_ipv4(packet).unwrap().advert;
    assert_eq!(advert.priority, 0);
    assert!(!gw.datapath().owns(FIP));
}

#[test]
fn a_reload_that_changes_what_only_a_restart_can_is_refused_whole() {
    let mut gw = Gateway::new(params(), Instant::ZERO).unwrap();
    let mut next = params();
    next.setup.floating_ips[0].priority = 200;
    next.setup.nat.max_flows = 2048;
    next.setup.vni = 2;
    let refused = gw.reconfigure(Instant::ZERO, next).unwrap_err();
    assert_eq!(refused, ["[tunnel].vni", "[nat].max_flows"]);
    assert_eq!(
        gw.election().instances()[0].params().priority,
        100,
        "nothing applied"
    );
    let mut next = params();
    next.setup.floating_ips[0].priority = 200;
    gw.reconfigure(Instant::ZERO, next).unwrap();
    assert_eq!(gw.election().instances()[0].params().priority, 200);
    assert_eq!(gw.snapshot(Instant::ZERO, 0).floating_ips[0].priority, 200);
}
