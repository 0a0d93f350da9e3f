//! NAT core benchmarks: translating a packet of an established flow (both directions, one
//! at a time and in batches of 32) and setting up a new flow, with 10k and 1M live flows in
//! the table.
//!
//! Flows are visited in a random order, so at 1M flows the table does not sit in the CPU
//! caches; the packets themselves are laid out in visiting order, as a receive ring would
//! hand them over. Run: `cargo bench -p egret-gateway --bench nat`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant as WallClock};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use egret_gateway::nat::checksum;
use egret_gateway::nat::{Nat, NatParams, OutboundPacket};
use smoltcp::time::Instant;

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 21);
const EGRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
const PACKET_LEN: usize = 28 + 36;

/// A 64-byte UDP packet from `pod:port` to `remote:53`, checksums computed in full.
fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(PACKET_LEN as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let sum = checksum::full(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&((PACKET_LEN - 20) as u16).to_be_bytes());
    let mut pseudo = Vec::with_capacity(12 + PACKET_LEN - 20);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17, 0, (PACKET_LEN - 20) as u8]);
    pseudo.extend_from_slice(&p[20..]);
    let sum = checksum::full(&pseudo);
    p[26..28].copy_from_slice(&sum.to_be_bytes());
    p
}

/// The `i`-th distinct pod flow: pods 10.0.0.0/8, ephemeral ports, remotes in a /16.
fn pod_flow(i: u32) -> (Ipv4Addr, u16, Ipv4Addr) {
    let pod = Ipv4Addr::from_bits(0x0a00_0000 + i / 28_000);
    let port = 32768 + (i % 28_000) as u16;
    let remote = Ipv4Addr::from_bits(0xc633_0000 + (i.wrapping_mul(2_654_435_761) >> 16));
    (pod, port, remote)
}

/// A xorshift permutation so that flows are visited in a cache-hostile order.
fn shuffled(n: u32, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut s = seed;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

fn params(max_flows: u32) -> NatParams {
    NatParams {
        max_flows,
        ..NatParams::default()
    }
}

/// A NAT holding `n` live UDP flows, with each flow's outbound packet and the reply to
/// its translated form, both in a random visiting order.
fn populated(n: u32, spare: u32) -> (Nat, Vec<[u8; PACKET_LEN]>, Vec<[u8; PACKET_LEN]>) {
    let mut nat = Nat::new(&params(n + spare), 1).expect("table");
    let now = Instant::from_secs(0);
    let mut out = Vec::with_capacity(n as usize);
    let mut back = Vec::with_capacity(n as usize);
    for i in shuffled(n, 0x9e37_79b9) {
        let (pod, port, remote) = pod_flow(i);
        let p = udp(pod, port, remote, 53);
        let mut q = p;
        let t = nat.outbound(now, NODE, EGRESS, &mut q).expect("populate");
        let nat_port = nat.table().flow(t.flow).nat_port;
        out.push(p);
        back.push(udp(remote, 53, EGRESS, nat_port));
    }
    (nat, out, back)
}

fn translate(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate_established");
    g.throughput(Throughput::Elements(1));
    for n in [10_000u32, 1_000_000] {
        let (mut nat, out, back) = populated(n, 0);
        let now = Instant::from_secs(1);
        let mut buf = [0u8; PACKET_LEN];
        let mut i = 0;
        g.bench_function(BenchmarkId::new("outbound", n), |b| {
            b.iter(|| {
                buf.copy_from_slice(&out[i]);
                i = if i + 1 == out.len() { 0 } else { i + 1 };
                black_box(nat.outbound(now, NODE, EGRESS, black_box(&mut buf)))
                    .expect("translated");
            })
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new("inbound", n), |b| {
            b.iter(|| {
                buf.copy_from_slice(&back[i]);
                i = if i + 1 == back.len() { 0 } else { i + 1 };
                black_box(nat.inbound(now, black_box(&mut buf))).expect("translated");
            })
        });
    }
    g.finish();
}

/// Packets per batch, as a receive ring hands them over.
const BATCH: usize = 32;

fn translate_batched(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate_established_batch32");
    g.throughput(Throughput::Elements(BATCH as u64));
    for n in [10_000u32, 1_000_000] {
        let (mut nat, out, back) = populated(n, 0);
        let now = Instant::from_secs(1);
        let mut bufs = [[0u8; PACKET_LEN]; BATCH];
        let mut i = 0;
        g.bench_function(BenchmarkId::new("outbound", n), |b| {
            b.iter(|| {
                for buf in bufs.iter_mut() {
                    buf.copy_from_slice(&out[i]);
                    i = if i + 1 == out.len() { 0 } else { i + 1 };
                }
                let mut batch = bufs.each_mut().map(|packet| OutboundPacket {
                    node: NODE,
                    egress: EGRESS,
                    packet,
                });
                nat.outbound_batch(now, &mut batch, |_, r| {
                    black_box(r).expect("translated");
                });
            })
        });
        let mut i = 0;
        g.bench_function(BenchmarkId::new("inbound", n), |b| {
            b.iter(|| {
                for buf in bufs.iter_mut() {
                    buf.copy_from_slice(&back[i]);
                    i = if i + 1 == back.len() { 0 } else { i + 1 };
                }
                let mut batch = bufs.each_mut().map(|p| &mut p[..]);
                nat.inbound_batch(now, &mut batch, |_, r| {
                    black_box(r).expect("translated");
                });
            })
        });
    }
    g.finish();
}

fn new_flow(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_flow");
    g.throughput(Throughput::Elements(1));
    // Room for the flows criterion creates in one sample on top of the live ones.
    const SPARE: u32 = 2_000_000;
    for n in [10_000u32, 1_000_000] {
        let (mut nat, _, _) = populated(n, SPARE);
        let mut next = 10_000_000u32;
        g.bench_function(BenchmarkId::new("outbound_first_packet", n), |b| {
            b.iter_custom(|iters| {
                let iters = iters.min(u64::from(SPARE)) as u32;
                // Packets of flows the table has never seen, built outside the timing.
                let mut packets: Vec<[u8; PACKET_LEN]> = (0..iters)
                    .map(|k| {
                        let (pod, port, remote) = pod_flow(next + k);
                        udp(pod, port, remote, 443)
                    })
                    .collect();
                next += iters;
                let now = Instant::from_secs(2);
                let start = WallClock::now();
                for p in &mut packets {
                    let t = nat.outbound(now, NODE, EGRESS, p).expect("new flow");
                    debug_assert!(t.created);
                }
                let elapsed = start.elapsed();
                // Back to `n` live flows for the next sample, outside the timing.
                for p in &packets {
                    let (remote, nat_port) = (
                        Ipv4Addr::new(p[16], p[17], p[18], p[19]),
                        u16::from_be_bytes([p[20], p[21]]),
                    );
                    let key = egret_gateway::nat::OutsideKey {
                        egress: EGRESS,
                        remote,
                        nat_port,
                        remote_port: 443,
                        proto: egret_gateway::nat::Proto::Udp,
                    };
                    let id = nat.table().lookup_outside(&key).expect("created flow");
                    nat.table_mut().remove(id);
                }
                elapsed
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(2));
    targets = translate, translate_batched, new_flow
}
criterion_main!(benches);
