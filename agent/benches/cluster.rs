//! Kubernetes-mode decision benchmarks on a cluster of 10,000 pods in 100 namespaces on 91
//! nodes, with 1,000 gateway policies of four selector shapes (`cluster::fixtures::cluster`):
//! the status writer's cluster-wide selection, one node's desired state (its 110 pods, as
//! its agent watches them), and one node's whole reconcile (desired state, then compile).
//! Run: `cargo bench -p egret-agent --bench cluster`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use egret_agent::cluster::fixtures::cluster;
use egret_agent::cluster::{cluster_selection, node_desired};
use egret_agent::policy::compile;

const PODS: u32 = 10_000;
const NAMESPACES: u32 = 100;
const NODES: u32 = 91;
const POLICIES: u32 = 1_000;

fn bench(c: &mut Criterion) {
    let all = cluster(PODS, NAMESPACES, NODES, POLICIES);
    let mut node = all.clone();
    node.pods
        .retain(|p| p.node_name.as_deref() == Some("node-0"));
    assert_eq!(node.pods.len(), 110);
    let selected: u32 = cluster_selection(&all)
        .selections
        .iter()
        .map(|s| s.selected_pods)
        .sum();
    eprintln!("{selected} (policy, pod) pairs selected cluster-wide");

    let mut g = c.benchmark_group("cluster");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    g.bench_function("cluster_selection_10000_pods_1000_policies", |b| {
        b.iter(|| cluster_selection(black_box(&all)))
    });
    g.bench_function("node_desired_110_pods_1000_policies", |b| {
        b.iter(|| node_desired(black_box(&node), "node-0"))
    });
    g.bench_function("node_reconcile_110_pods_1000_policies", |b| {
        b.iter(|| {
            let desired = node_desired(black_box(&node), "node-0");
            compile(&desired.policies, &desired.known_gateways).expect("compiles")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
