//! Fuzzes the whole data path with arbitrary frames.
//!
//! The first input byte picks the offload the kernel claims for the frame (none, a partial
//! checksum somewhere, a TCP or UDP super-packet); the rest is the Ethernet frame. The data
//! path has a resolved next hop and a known node, so frames reach decapsulation, the NAT
//! and encapsulation. Nothing may panic, and whatever it sends must lie inside the buffer
//! with its offload pointing inside the frame.

#![no_main]

use std::net::Ipv4Addr;
use std::sync::Mutex;

use egret_gateway::datapath::{
    Datapath, FloatingIp, Frame, Gso, GsoKind, Offload, PartialChecksum, Setup, Verdict,
};
use egret_gateway::nat::NatParams;
use libfuzzer_sys::fuzz_target;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, Ipv4Cidr};

const HEADROOM: usize = 64;

fn datapath() -> Datapath {
    let setup = Setup {
        name: "gw1".into(),
        interface: "eth0".into(),
        mac: EthernetAddress([2, 0, 0, 0, 0, 0x11]),
        address: Ipv4Addr::new(192, 168, 1, 11),
        prefix_len: 24,
        gateways: vec![Ipv4Addr::new(192, 168, 1, 12)],
        mtu: 1500,
        next_hop: Ipv4Addr::new(192, 168, 1, 1),
        floating_ips: vec![FloatingIp {
            address: Ipv4Addr::new(192, 168, 1, 100),
            vrid: 10,
            priority: 100,
        }],
        announce: Default::default(),
        tunnel_port: 4800,
        vni: 1,
        allowed_sources: vec![Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 0), 24)],
        nat: NatParams {
            port_range: 20000..=20099,
            max_flows: 4096,
            ..NatParams::default()
        },
        seed: 7,
    };
    let mut dp = Datapath::new(setup, Instant::ZERO).expect("data path");
    dp.own(Instant::ZERO, Ipv4Addr::new(192, 168, 1, 100));
    dp.enable_fast_path();
    dp
}

static DATAPATH: Mutex<Option<Datapath>> = Mutex::new(None);

fuzz_target!(|input: &[u8]| {
    let Some((&mode, frame)) = input.split_first() else {
        return;
    };
    let mut guard = DATAPATH.lock().unwrap_or_else(|e| e.into_inner());
    let dp = guard.get_or_insert_with(datapath);
    let mut buf = vec![0u8; HEADROOM + frame.len()];
    buf[HEADROOM..].copy_from_slice(frame);
    let mut f = Frame::new(&mut buf, HEADROOM);
    let at = u16::from(mode >> 3);
    f.offload = match mode & 7 {
        0 | 1 => Offload::default(),
        2 => Offload {
            checksum: Some(PartialChecksum { start: at, offset: 6 }),
            gso: None,
        },
        3 => Offload {
            checksum: Some(PartialChecksum { start: at, offset: 16 }),
            gso: None,
        },
        4 | 5 => Offload {
            checksum: Some(PartialChecksum { start: 34, offset: 16 }),
            gso: Some(Gso {
                kind: GsoKind::Tcpv4,
                size: 1 + u16::from(mode),
            }),
        },
        _ => Offload {
            checksum: Some(PartialChecksum { start: 34, offset: 6 }),
            gso: Some(Gso {
                kind: GsoKind::Udpv4,
                size: u16::from(mode),
            }),
        },
    };
    let now = Instant::from_millis(i64::from(mode) * 10);
    if dp.handle(now, &mut f) == Verdict::Transmit {
        assert!(f.start <= f.end && f.end <= f.buf.len());
        assert!(f.len() >= 14);
        if let Some(c) = f.offload.checksum {
            assert!(usize::from(c.start) + usize::from(c.offset) + 2 <= f.len());
        }
    }
    for g in dp.generated() {
        assert!(g.frame.len() >= 14);
        if let Some(c) = g.offload.checksum {
            assert!(usize::from(c.start) + usize::from(c.offset) + 2 <= g.frame.len());
        }
    }
    dp.clear_generated();
    // The kernel fast path holds only flows the table has.
    let mut changes = Vec::new();
    dp.take_fast_changes(&mut changes);
    assert!(dp.offloaded() <= dp.nat().table().len());
    changes.clear();
    dp.poll_with(now, |_| (mode & 8 != 0).then_some(now));
    dp.take_fast_changes(&mut changes);
    assert!(dp.offloaded() <= dp.nat().table().len());
    dp.clear_generated();
});
