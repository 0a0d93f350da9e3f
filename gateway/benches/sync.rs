//! Flow sync benchmarks: what streaming a flow change to a peer costs the sender (queue it,
//! pack it into a batch, emit the datagram) and the receiver (parse the batch, apply it in
//! order), per change, against the NAT's own cost of setting a new flow up (`nat` bench,
//! `new_flow`). A new flow is one to a few changes (created, new TCP states, expired).
//! `sync` speaks in clear (no `[sync].key_file`), `sync_sealed` seals every datagram with
//! AES-256-GCM. Run: `cargo bench -p egret-gateway --bench sync`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use egret_gateway::nat::{Flow, FlowState, Proto};
use egret_gateway::sync::{Change, Keys, Op, Params, Sync};
use smoltcp::time::{Duration, Instant};

const CHANGES: u32 = 41 * 100;

fn change(i: u32) -> Change {
    Change {
        op: Op::Upsert,
        flow: Flow {
            node: Ipv4Addr::new(192, 168, 1, 21),
            egress: Ipv4Addr::new(192, 168, 1, 100),
            pod: Ipv4Addr::from_bits(0x0a00_0000 + i / 28_000),
            remote: Ipv4Addr::from_bits(0xc633_0000 + (i.wrapping_mul(2_654_435_761) >> 16)),
            pod_port: 32768 + (i % 28_000) as u16,
            remote_port: 443,
            nat_port: 16384 + (i % 49_000) as u16,
            proto: Proto::Tcp,
            state: FlowState::TcpEstablished,
        },
        remaining: Duration::from_secs(7440),
    }
}

fn peer(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 168, 1, 12], port))
}

fn params(epoch: u64, peer: SocketAddr, keys: Option<&Keys>) -> Params {
    Params {
        keys: keys.cloned(),
        primary: Ipv4Addr::new(192, 168, 1, 11),
        ..Params::new(epoch, vec![peer])
    }
}

/// Runs the token handshake between `a` and `b` (each the other's only peer) at time 0.
fn connect(a: &mut Sync, a_addr: SocketAddr, b: &mut Sync, b_addr: SocketAddr) {
    let mut out = Vec::new();
    let mut applied = Vec::new();
    for _ in 0..4 {
        a.poll(Instant::ZERO, &mut out);
        for (_, d) in out.drain(..) {
            b.handle_datagram(Instant::ZERO, a_addr, &d, &mut applied);
        }
        b.poll(Instant::ZERO, &mut out);
        for (_, d) in out.drain(..) {
            a.handle_datagram(Instant::ZERO, b_addr, &d, &mut applied);
        }
    }
    assert!(a.peers().all(|p| p.confirmed) && b.peers().all(|p| p.confirmed));
    while a.wants_full_table().is_some() || b.wants_full_table().is_some() {}
}

/// Sending and receiving, sealed under `keys` or in clear (`None`).
fn bench_suite(c: &mut Criterion, name: &str, keys: Option<&Keys>) {
    let changes: Vec<Change> = (0..CHANGES).map(change).collect();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(u64::from(CHANGES)));
    let mut t = Instant::ZERO;
    let mut sender = Sync::new(params(1, peer(4801), keys), t);
    let mut out = Vec::new();
    g.bench_function("send_per_change", |b| {
        b.iter(|| {
            for c in &changes {
                sender.queue(t, *c);
            }
            t += Duration::from_millis(20);
            sender.poll(t, &mut out);
            black_box(out.len());
            out.clear();
        })
    });
    // The datagrams of one round, replayed to fresh receivers with their sequence numbers
    // in order. A receiver of the same epoch has the same token for its peer, so the
    // datagrams of a sender that shook hands with one are fresh for every such receiver.
    let (here, there) = (peer(4801), peer(4802));
    let mut a = Sync::new(params(1, here, keys), Instant::ZERO);
    let mut template = Sync::new(params(2, there, keys), Instant::ZERO);
    connect(&mut a, there, &mut template, here);
    for c in &changes {
        a.queue(Instant::ZERO, *c);
    }
    let mut datagrams = Vec::new();
    a.poll(Instant::from_millis(20), &mut datagrams);
    datagrams.retain(|(_, d)| d[5] == 1);
    let mut applied = Vec::with_capacity(CHANGES as usize);
    // What is measured is a whole round applied.
    let mut check = Sync::new(params(2, there, keys), Instant::ZERO);
    for (_, d) in &datagrams {
        check.handle_datagram(Instant::from_millis(21), there, d, &mut applied);
    }
    assert_eq!(applied.len(), CHANGES as usize);
    applied.clear();
    g.bench_function("receive_per_change", |b| {
        b.iter_batched_ref(
            || Sync::new(params(2, there, keys), Instant::ZERO),
            |receiver| {
                for (_, d) in &datagrams {
                    receiver.handle_datagram(Instant::from_millis(21), there, d, &mut applied);
                }
                black_box(applied.len());
                applied.clear();
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    bench_suite(c, "sync", None);
    bench_suite(c, "sync_sealed", Some(&Keys::derive(&[0x5a; 32], None)));
}

criterion_group!(benches, bench);
criterion_main!(benches);
