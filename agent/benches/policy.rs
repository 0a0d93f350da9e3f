//! Policy core benchmarks: compiling 1,000 policies over 10,000 pod addresses into the node
//! programs' map contents, and planning the map changes, from empty maps and for a change
//! of one policy's destinations (a reconcile: compile, then plan against the maps' contents).
//! Run: `cargo bench -p egret-agent --bench policy`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use egret_agent::policy::fixtures::fleet;
use egret_agent::policy::{Contents, compile, plan};
use egret_agent::prefix::Prefix;

const POLICIES: u32 = 1_000;
const PODS_PER_POLICY: u32 = 10;

fn bench(c: &mut Criterion) {
    let policies = fleet(POLICIES, PODS_PER_POLICY);
    let mut changed = policies.clone();
    changed[500].destinations = vec![Prefix::new(Ipv4Addr::new(203, 0, 113, 0), 24)];
    let current = compile(&policies, &[]).expect("compiles").contents();
    let next = compile(&changed, &[]).expect("compiles").contents();
    let empty = Contents::default();

    let mut g = c.benchmark_group("policy");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("compile", |b| b.iter(|| compile(black_box(&policies), &[])));
    g.bench_function("plan_from_empty", |b| {
        b.iter(|| plan(black_box(&empty), black_box(&current)))
    });
    g.bench_function("plan_one_policy_change", |b| {
        b.iter(|| plan(black_box(&current), black_box(&next)))
    });
    g.bench_function("reconcile_one_policy_change", |b| {
        b.iter(|| {
            let program = compile(black_box(&changed), &[]).expect("compiles");
            plan(black_box(&current), &program.contents())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
