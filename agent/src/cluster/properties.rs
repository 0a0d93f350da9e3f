//! Property tests of the cluster decisions against brute force, over random clusters drawn
//! from small universes (four namespaces, one of which is often missing from the view; two
//! nodes; three label keys and values; three floating IPs and a bad one), so that selectors
//! overlap, egress IPs collide and specs are sometimes invalid:
//!
//! - cluster-wide, each accepted gateway policy selects exactly the pods a naive reading of
//!   the rules selects (every policy asked about every pod), on the nodes they run on;
//! - for each node, the policy specs hold exactly the /32s of that node's selected pods, in
//!   age order, and `policy::compile` admits every one of them;
//! - admission: the accepted gateway policies have distinct, known egress IPs; an unknown
//!   egress IP is really unknown; a conflict names an older accepted policy with the same IP;
//! - the input order of the objects changes nothing.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use egret_crd::{EgressNATPolicySpec, EgressRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use proptest::prelude::*;

use super::admission::{Outcome, Reason, admit};
use super::desired::{cluster_selection, node_desired};
use super::fixtures::{gateway_spec_rules, no_snat_spec, policy};
use super::masq::MasqConfig;
use super::selector::Labels;
use super::view::{ClusterView, GatewayObject, NamespaceInfo, PodInfo, PolicyObject};
use crate::policy::{PolicyState, compile};
use crate::prefix::Prefix;

const NAMESPACES: [&str; 4] = ["a", "b", "c", "d"];
const NODES: [&str; 2] = ["n1", "n2"];
const KEYS: [&str; 3] = ["k1", "k2", "k3"];
const VALUES: [&str; 3] = ["x", "y", "z"];
const FLOATING: [&str; 3] = ["192.0.2.1", "192.0.2.2", "192.0.2.3"];
const EGRESS: [&str; 4] = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.300"];
const CIDRS: [&str; 4] = ["8.8.8.0/24", "1.1.0.0/16", "0.0.0.0/0", "10.0.0.1/8"];
const PHASES: [Option<&str>; 5] = [
    Some("Running"),
    Some("Pending"),
    Some("Succeeded"),
    Some("Failed"),
    None,
];

fn labels() -> impl Strategy<Value = Labels> {
    prop::collection::btree_map(
        prop::sample::select(&KEYS[..]).prop_map(str::to_owned),
        prop::sample::select(&VALUES[..]).prop_map(str::to_owned),
        0..=3,
    )
}

fn pod_ip() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (1u8..8).prop_map(|k| format!("10.0.0.{k}")),
        1 => Just("fd00::1".to_owned()),
        1 => Just("bogus".to_owned()),
    ]
}

fn pod() -> impl Strategy<Value = PodInfo> {
    (
        (
            prop::sample::select(&NAMESPACES[..]),
            0u32..1000,
            prop::option::weighted(0.9, prop::sample::select(&NODES[..])),
            labels(),
        ),
        (
            prop::bool::weighted(0.1),
            prop::sample::select(&PHASES[..]),
            prop::collection::vec(pod_ip(), 0..3),
            prop::option::of(pod_ip()),
        ),
    )
        .prop_map(
            |((namespace, n, node, labels), (host_network, phase, pod_ips, pod_ip))| PodInfo {
                namespace: namespace.to_owned(),
                name: format!("pod-{n}"),
                uid: format!("uid-{n}"),
                labels,
                node_name: node.map(str::to_owned),
                host_network,
                phase: phase.map(str::to_owned),
                pod_ips,
                pod_ip,
            },
        )
}

fn requirement() -> impl Strategy<Value = LabelSelectorRequirement> {
    (
        prop::sample::select(&KEYS[..]),
        prop::sample::select(&["In", "NotIn", "Exists", "DoesNotExist"][..]),
        prop::collection::vec(prop::sample::select(&VALUES[..]), 1..3),
    )
        .prop_map(|(key, operator, values)| LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: matches!(operator, "In" | "NotIn")
                .then(|| values.into_iter().map(str::to_owned).collect()),
        })
}

fn selector() -> impl Strategy<Value = Option<LabelSelector>> {
    prop::option::of(
        (
            prop::option::of(labels()),
            prop::option::of(prop::collection::vec(requirement(), 0..3)),
        )
            .prop_map(|(match_labels, match_expressions)| LabelSelector {
                match_labels,
                match_expressions,
            }),
    )
}

fn spec() -> impl Strategy<Value = EgressNATPolicySpec> {
    let rule = (selector(), selector()).prop_map(|(namespace_selector, pod_selector)| EgressRule {
        namespace_selector,
        pod_selector,
    });
    let gateway = (
        prop::collection::vec(rule, 1..3),
        prop::sample::select(&EGRESS[..]),
        prop::collection::vec(prop::sample::select(&CIDRS[..]), 1..3),
    )
        .prop_map(|(rules, egress, destinations)| gateway_spec_rules(egress, &destinations, rules));
    let no_snat = prop::collection::vec(prop::sample::select(&CIDRS[..]), 1..3)
        .prop_map(|destinations| no_snat_spec(&destinations));
    prop_oneof![6 => gateway, 1 => no_snat]
}

fn view() -> impl Strategy<Value = ClusterView> {
    (
        prop::collection::vec(pod(), 0..14),
        prop::sample::subsequence(NAMESPACES.to_vec(), 0..=NAMESPACES.len()),
        prop::collection::vec(labels(), NAMESPACES.len()),
        prop::collection::vec((0i64..3, spec()), 0..6),
        prop::collection::vec(
            prop::sample::subsequence(FLOATING.to_vec(), 0..=FLOATING.len()),
            0..3,
        ),
    )
        .prop_map(
            |(pods, namespaces, ns_labels, specs, gateways)| ClusterView {
                pods,
                namespaces: namespaces
                    .into_iter()
                    .zip(ns_labels)
                    .map(|(name, labels)| NamespaceInfo {
                        name: name.to_owned(),
                        labels,
                    })
                    .collect(),
                policies: specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, (created, spec))| policy(&format!("p{i}"), created, spec))
                    .collect(),
                gateways: gateways
                    .into_iter()
                    .enumerate()
                    .map(|(i, ips)| GatewayObject {
                        name: format!("gw{i}"),
                        floating_ips: ips.into_iter().map(str::to_owned).collect(),
                    })
                    .collect(),
                masquerade: MasqConfig::default(),
            },
        )
}

/// Whether the pod may be selected at all, read off its raw fields.
fn eligible(pod: &PodInfo) -> bool {
    let raw = if pod.pod_ips.is_empty() {
        pod.pod_ip.iter().collect::<Vec<_>>()
    } else {
        pod.pod_ips.iter().collect()
    };
    !pod.host_network
        && !matches!(pod.phase.as_deref(), Some("Succeeded" | "Failed"))
        && raw.iter().any(|ip| ip.parse::<Ipv4Addr>().is_ok())
}

/// The indices of the pods the named policy selects, by brute force; `None` unless it is an
/// accepted gateway policy.
fn naive(view: &ClusterView, policy: &str) -> Option<Vec<usize>> {
    let admission = admit(&view.policies, &view.gateways);
    let gateway = admission
        .policies
        .iter()
        .find(|p| p.name == policy)?
        .accepted_gateway()?;
    let ns = |name: &str| {
        view.namespaces
            .iter()
            .find(|n| n.name == name)
            .map(|n| &n.labels)
    };
    Some(
        view.pods
            .iter()
            .enumerate()
            .filter(|(_, pod)| {
                eligible(pod)
                    && gateway
                        .rules
                        .iter()
                        .any(|r| r.matches(ns(&pod.namespace), &pod.labels))
            })
            .map(|(i, _)| i)
            .collect(),
    )
}

fn ipv4s(pod: &PodInfo) -> Vec<Ipv4Addr> {
    let raw = if pod.pod_ips.is_empty() {
        pod.pod_ip.iter().collect::<Vec<_>>()
    } else {
        pod.pod_ips.iter().collect()
    };
    raw.iter().filter_map(|ip| ip.parse().ok()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cluster_selection_equals_brute_force(view in view()) {
        let cluster = cluster_selection(&view);
        for (outcome, selection) in cluster.outcomes.iter().zip(&cluster.selections) {
            match naive(&view, &outcome.name) {
                None => prop_assert_eq!(selection, &Default::default()),
                Some(chosen) => {
                    prop_assert_eq!(selection.selected_pods as usize, chosen.len());
                    let nodes: BTreeSet<&str> = chosen
                        .iter()
                        .filter_map(|&i| view.pods[i].node_name.as_deref())
                        .collect();
                    prop_assert_eq!(selection.node_names(), nodes);
                    let counted: u32 = selection.nodes.values().sum();
                    let scheduled = chosen.iter().filter(|&&i| view.pods[i].node_name.is_some()).count();
                    prop_assert_eq!(counted as usize, scheduled);
                }
            }
        }
    }

    #[test]
    fn node_desired_equals_brute_force_and_compiles(view in view()) {
        let admission = admit(&view.policies, &view.gateways);
        let accepted: Vec<&str> = admission
            .policies
            .iter()
            .filter(|p| p.accepted_gateway().is_some())
            .map(|p| p.name.as_str())
            .collect();
        for node in ["n1", "n2", "n3"] {
            let desired = node_desired(&view, node);
            let names: Vec<&str> = desired.policies.iter().map(|p| p.name.as_str()).collect();
            prop_assert_eq!(&names, &accepted);
            for (spec, selection) in desired.policies.iter().zip(&desired.selections) {
                let chosen = naive(&view, &spec.name).unwrap_or_default();
                let local: Vec<&PodInfo> = chosen
                    .iter()
                    .map(|&i| &view.pods[i])
                    .filter(|p| p.node_name.as_deref() == Some(node))
                    .collect();
                let sources: BTreeSet<Prefix> = local
                    .iter()
                    .flat_map(|p| ipv4s(p))
                    .map(Prefix::host)
                    .collect();
                prop_assert_eq!(spec.sources.iter().copied().collect::<BTreeSet<_>>(), sources);
                prop_assert!(spec.sources.windows(2).all(|w| w[0] < w[1]), "sorted, each once");
                prop_assert_eq!(selection.pods.len(), local.len());
            }
            let program = compile(&desired.policies, &desired.known_gateways).expect("compiles");
            for status in &program.policies {
                prop_assert!(
                    matches!(status.state, PolicyState::Programmed { .. }),
                    "compile rejected {}: {:?}", status.name, status.state
                );
            }
        }
    }

    #[test]
    fn admission_invariants(view in view()) {
        let admission = admit(&view.policies, &view.gateways);
        let mut owners: Vec<(Ipv4Addr, &str)> = Vec::new();
        for (rank, policy) in admission.policies.iter().enumerate() {
            let object: &PolicyObject = view
                .policies
                .iter()
                .find(|o| o.name == policy.name)
                .expect("one verdict per object");
            if rank > 0 {
                let previous = view
                    .policies
                    .iter()
                    .find(|o| o.name == admission.policies[rank - 1].name)
                    .expect("present");
                prop_assert!(previous.age_key() < object.age_key(), "age order");
            }
            match (&policy.outcome, super::admission::parse(&object.spec)) {
                (Outcome::Accepted, Ok(_)) => {
                    if let Some(g) = policy.accepted_gateway() {
                        prop_assert!(admission.known_gateways.contains(&g.egress));
                        prop_assert!(owners.iter().all(|(ip, _)| *ip != g.egress));
                        owners.push((g.egress, &policy.name));
                    }
                }
                (Outcome::Rejected(r), Err(invalid)) => {
                    prop_assert_eq!(r.reason, Reason::Invalid);
                    prop_assert_eq!(&r.message, &invalid.to_string());
                }
                (Outcome::Rejected(r), Ok(super::admission::Form::Gateway(g))) => match r.reason {
                    Reason::UnknownEgressIp => {
                        prop_assert!(!admission.known_gateways.contains(&g.egress));
                    }
                    Reason::Conflict => {
                        let owner = owners.iter().find(|(ip, _)| *ip == g.egress);
                        prop_assert!(owner.is_some());
                        let needle = format!("older policy {},", owner.map_or("", |o| o.1));
                        prop_assert!(r.message.contains(&needle));
                    }
                    Reason::Invalid => prop_assert!(false, "parsed, yet Invalid"),
                },
                (outcome, form) => prop_assert!(false, "{outcome:?} for {form:?}"),
            }
        }
        prop_assert_eq!(admission.policies.len(), view.policies.len());
    }

    #[test]
    fn input_order_changes_nothing(view in view()) {
        let mut reversed = view.clone();
        reversed.pods.reverse();
        reversed.namespaces.reverse();
        reversed.policies.reverse();
        reversed.gateways.reverse();
        prop_assert_eq!(admit(&view.policies, &view.gateways), admit(&reversed.policies, &reversed.gateways));
        prop_assert_eq!(cluster_selection(&view), cluster_selection(&reversed));
        for node in NODES {
            prop_assert_eq!(node_desired(&view, node), node_desired(&reversed, node));
        }
    }
}

#[test]
fn the_benchmark_cluster_selects_as_brute_force_does() {
    // The fixture the benchmarks run, shrunk: the optimised paths (label index, namespace
    // index) are the ones a large cluster takes.
    let view = super::fixtures::cluster(600, 30, 7, 60);
    let cluster = cluster_selection(&view);
    let mut selected = 0;
    for (outcome, selection) in cluster.outcomes.iter().zip(&cluster.selections) {
        let chosen = naive(&view, &outcome.name).expect("all accepted");
        assert_eq!(
            selection.selected_pods as usize,
            chosen.len(),
            "{}",
            outcome.name
        );
        selected += chosen.len();
    }
    assert!(selected > 600, "the policies select plenty: {selected}");
}
