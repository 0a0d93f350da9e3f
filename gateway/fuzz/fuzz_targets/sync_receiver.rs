//! Fuzzes the authenticated sync receiver: nothing a host without the key sends, and
//! nothing it replays, may ever be applied.
//!
//! Each run sets up two receivers of gateway A's stream, both holding the group's key:
//! `r1`, which shook hands with A and already applied A's recorded datagrams once, and
//! `r2`, a restart of the same gateway. The input is a program of records, each one of:
//! - `0, i, offset (2 bytes), xor`: A's recorded datagram `i`, one byte changed (or none
//!   when `xor` is 0): a replay or a forgery built on a real datagram;
//! - `1, len, bytes…`: arbitrary bytes from A's address;
//! - `2, ms`: time passes.
//!
//! Every datagram goes to both receivers. Neither may panic, `r1` may apply nothing beyond
//! what it applied before the program ran, and `r2` nothing at all.

#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use egret_gateway::nat::{Flow, FlowState, Proto};
use egret_gateway::sync::{Change, Keys, Op, Params, Sync};
use libfuzzer_sys::fuzz_target;
use smoltcp::time::{Duration, Instant};

const A: u64 = 0xa11ce;
const R: u64 = 0xb0b;

fn addr(last: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(192, 168, 1, last), 4801))
}

fn params(epoch: u64, peer: u8, keys: &Keys) -> Params {
    Params {
        keys: Some(keys.clone()),
        primary: Ipv4Addr::new(192, 168, 1, 11),
        // Named, so A's heartbeats carry a name for the flips to reach.
        name: "gw-a".into(),
        ..Params::new(epoch, vec![addr(peer)])
    }
}

fn change(i: u16) -> Change {
    Change {
        op: if i % 5 == 4 { Op::Delete } else { Op::Upsert },
        flow: Flow {
            node: Ipv4Addr::new(192, 168, 1, 21),
            egress: Ipv4Addr::new(192, 168, 1, 100),
            pod: Ipv4Addr::new(10, 10, 1, 5),
            remote: Ipv4Addr::new(198, 51, 100, 10),
            pod_port: 40000 + i,
            remote_port: 443,
            nat_port: 20000 + i,
            proto: Proto::Tcp,
            state: FlowState::TcpEstablished,
        },
        remaining: Duration::from_secs(60),
    }
}

/// A's receiver `r1` after the handshake and A's recorded datagrams, with how many
/// changes it applied; and those datagrams.
fn session(keys: &Keys) -> (Sync, u64, Vec<Vec<u8>>) {
    let mut a = Sync::new(params(A, 12, keys), Instant::ZERO);
    let mut r1 = Sync::new(params(R, 11, keys), Instant::ZERO);
    let (mut out, mut applied) = (Vec::new(), Vec::new());
    let mut recorded = Vec::new();
    for round in 0..6 {
        let now = Instant::from_millis(round * 20);
        if round == 4 {
            for i in 0..100 {
                a.queue(now, change(i));
            }
        }
        a.poll(now, &mut out);
        for (_, d) in out.drain(..) {
            r1.handle_datagram(now, addr(11), &d, &mut applied);
            recorded.push(d);
        }
        r1.poll(now, &mut out);
        for (_, d) in out.drain(..) {
            a.handle_datagram(now, addr(12), &d, &mut applied);
        }
    }
    let before = r1.counters().changes_received;
    assert!(before > 0, "the session applied A's changes");
    (r1, before, recorded)
}

fuzz_target!(|input: &[u8]| {
    let keys = Keys::derive(&[0x42; 32], None);
    let (mut r1, before, recorded) = session(&keys);
    let mut r2 = Sync::new(params(R + 1, 11, &keys), Instant::ZERO);
    let mut now = Instant::from_millis(200);
    let mut applied = Vec::new();
    let mut out = Vec::new();
    let mut rest = input;
    while let Some((&op, tail)) = rest.split_first() {
        let datagram = match op % 3 {
            0 => {
                let [i, hi, lo, xor, ..] = *tail else { break };
                rest = &tail[4..];
                let mut d = recorded[usize::from(i) % recorded.len()].clone();
                let at = usize::from(u16::from_be_bytes([hi, lo])) % d.len();
                d[at] ^= xor;
                d
            }
            1 => {
                let Some((&len, tail)) = tail.split_first() else { break };
                let len = usize::from(len).min(tail.len());
                rest = &tail[len..];
                tail[..len].to_vec()
            }
            _ => {
                let Some((&ms, tail)) = tail.split_first() else { break };
                rest = tail;
                now += Duration::from_millis(u64::from(ms) * 10);
                for r in [&mut r1, &mut r2] {
                    r.poll(now, &mut out);
                    out.clear();
                }
                continue;
            }
        };
        r1.handle_datagram(now, addr(11), &datagram, &mut applied);
        r2.handle_datagram(now, addr(11), &datagram, &mut applied);
        assert!(applied.is_empty(), "applied {applied:?}");
    }
    assert_eq!(r1.counters().changes_received, before);
    assert_eq!(r2.counters().changes_received, 0);
    assert!(r2.peers().all(|p| p.their_epoch.is_none()));
});
