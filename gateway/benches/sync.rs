//! Flow sync benchmarks: what streaming a flow change to a peer costs the sender (queue it,
//! pack it into a batch, emit the datagram) and the receiver (parse the batch, apply it in
//! order), per change, against the NAT's own cost of setting a new flow up (`nat` bench,
//! `new_flow`). A new flow is one to a few changes (created, new TCP states, expired).
//! Run: `cargo bench -p egret-gateway --bench sync`.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use egret_gateway::nat::{Flow, FlowState, Proto};
use egret_gateway::sync::{Change, Op, Params, Sync};
use smoltcp::time::{Duration, Instant};

const CHANGES: u32 = 43 * 100;

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

fn bench(c: &mut Criterion) {
    let changes: Vec<Change> = (0..CHANGES).map(change).collect();
    let mut g = c.benchmark_group("sync");
    g.throughput(Throughput::Elements(u64::from(CHANGES)));
    let mut t = Instant::ZERO;
    let mut sender = Sync::new(Params::new(1, vec![peer(4801)]), t);
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
    // in order.
    let mut a = Sync::new(Params::new(1, vec![peer(4801)]), Instant::ZERO);
    for c in &changes {
        a.queue(Instant::ZERO, *c);
    }
    let mut datagrams = Vec::new();
    a.poll(Instant::from_millis(20), &mut datagrams);
    let from = peer(4801);
    let mut applied = Vec::with_capacity(CHANGES as usize);
    // What is measured is a whole round applied.
    let mut check = Sync::new(Params::new(2, vec![from]), Instant::ZERO);
    for (_, d) in &datagrams {
        check.handle_datagram(Instant::from_millis(21), from, d, &mut applied);
    }
    assert_eq!(applied.len(), CHANGES as usize);
    applied.clear();
    g.bench_function("receive_per_change", |b| {
        b.iter_batched_ref(
            || Sync::new(Params::new(2, vec![from]), Instant::ZERO),
            |receiver| {
                for (_, d) in &datagrams {
                    receiver.handle_datagram(Instant::from_millis(21), from, d, &mut applied);
                }
                black_box(applied.len());
                applied.clear();
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
