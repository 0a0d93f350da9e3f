//! Object builders for the tests and benchmarks (`agent/benches/cluster.rs`): small
//! functions that build `Pod`, `Namespace` and `EgressNATPolicy` values and their views, and
//! a cluster of any size. Not part of the agent's behaviour.

use std::net::Ipv4Addr;

use egret_crd::{Destination, EgressNATPolicy, EgressNATPolicySpec, EgressRule, PolicyAction};
use k8s_openapi::api::core::v1::{Namespace, Pod, PodIP, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, Time,
};
use k8s_openapi::jiff::Timestamp;

use super::masq::MasqConfig;
use super::selector::Labels;
use super::view::{ClusterView, GatewayObject, NamespaceInfo, PodInfo, PolicyObject};
use crate::config::Masquerade;

/// A label map from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A running pod on `node` with one address (none when `ip` is empty).
pub fn pod(namespace: &str, name: &str, node: &str, ip: &str, pairs: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.to_owned()),
            name: Some(name.to_owned()),
            uid: Some(format!("uid-{namespace}-{name}")),
            labels: Some(labels(pairs)),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.to_owned()),
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: (!ip.is_empty()).then(|| ip.to_owned()),
            pod_ips: (!ip.is_empty()).then(|| vec![PodIP { ip: ip.to_owned() }]),
            ..PodStatus::default()
        }),
    }
}

/// [`pod`], as the decisions see it.
pub fn pod_info(
    namespace: &str,
    name: &str,
    node: &str,
    ip: &str,
    pairs: &[(&str, &str)],
) -> PodInfo {
    PodInfo::from(&pod(namespace, name, node, ip, pairs))
}

/// A namespace with labels.
pub fn namespace(name: &str, pairs: &[(&str, &str)]) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels(pairs)),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// [`namespace`], as the decisions see it.
pub fn ns_info(name: &str, pairs: &[(&str, &str)]) -> NamespaceInfo {
    NamespaceInfo::from(&namespace(name, pairs))
}

/// A `matchLabels` selector; `None` for an absent one.
pub fn match_labels(pairs: Option<&[(&str, &str)]>) -> Option<LabelSelector> {
    pairs.map(|pairs| LabelSelector {
        match_labels: (!pairs.is_empty()).then(|| labels(pairs)),
        match_expressions: None,
    })
}

/// A `matchExpressions` requirement.
pub fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_owned(),
        operator: operator.to_owned(),
        values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
    }
}

/// An egress rule of two `matchLabels` selectors (`None`: absent, `Some(&[])`: `{}`).
pub fn rule(namespace: Option<&[(&str, &str)]>, pod: Option<&[(&str, &str)]>) -> EgressRule {
    EgressRule {
        namespace_selector: match_labels(namespace),
        pod_selector: match_labels(pod),
    }
}

/// A gateway policy spec with the given rules.
pub fn gateway_spec_rules(
    egress: &str,
    destinations: &[&str],
    rules: Vec<EgressRule>,
) -> EgressNATPolicySpec {
    EgressNATPolicySpec {
        egress: Some(rules),
        destination_cidrs: Some(destinations.iter().map(|d| (*d).to_owned()).collect()),
        egress_source_ip: Some(egress.to_owned()),
        ..EgressNATPolicySpec::default()
    }
}

/// A gateway policy spec selecting every pod.
pub fn gateway_spec(egress: &str, destinations: &[&str]) -> EgressNATPolicySpec {
    gateway_spec_rules(egress, destinations, vec![EgressRule::default()])
}

/// A NoSNAT policy spec.
pub fn no_snat_spec(destinations: &[&str]) -> EgressNATPolicySpec {
    EgressNATPolicySpec {
        action: Some(PolicyAction::NoSNAT),
        destinations: Some(
            destinations
                .iter()
                .map(|d| Destination {
                    cidr: (*d).to_owned(),
                })
                .collect(),
        ),
        ..EgressNATPolicySpec::default()
    }
}

/// An `EgressNATPolicy` created `created` seconds after the epoch, at generation 1.
pub fn policy_object(name: &str, created: i64, spec: EgressNATPolicySpec) -> EgressNATPolicy {
    let mut policy = EgressNATPolicy::new(name, spec);
    policy.metadata.uid = Some(format!("uid-{name}"));
    policy.metadata.generation = Some(1);
    policy.metadata.creation_timestamp = Timestamp::from_second(created).ok().map(Time);
    policy
}

/// [`policy_object`], as the decisions see it.
pub fn policy(name: &str, created: i64, spec: EgressNATPolicySpec) -> PolicyObject {
    PolicyObject::from(&policy_object(name, created, spec))
}

/// An `EgressGateway` named `default`, as the decisions see it.
pub fn gateway(floating_ips: &[&str]) -> GatewayObject {
    GatewayObject {
        name: "default".to_owned(),
        floating_ips: floating_ips.iter().map(|ip| (*ip).to_owned()).collect(),
    }
}

/// A cluster for the benchmarks: `pods` pods spread round-robin over `namespaces`
/// namespaces (`ns-N`, labelled `team`, `env` and `kubernetes.io/metadata.name`) and `nodes`
/// nodes (`node-N`), labelled `app` (20 values), `role` (3) and `pod-template-hash`;
/// `policies` gateway policies with distinct egress IPs (all floating IPs of one gateway),
/// in four shapes: team and app labels; `env In`, a role and `app NotIn`; app and
/// `role Exists` in every namespace; two rules, one on the namespace name and one with
/// `DoesNotExist`.
pub fn cluster(pods: u32, namespaces: u32, nodes: u32, policies: u32) -> ClusterView {
    let ns_name = |i: u32| format!("ns-{i}");
    let namespaces_list = (0..namespaces)
        .map(|i| {
            let env = if i % 2 == 0 { "prod" } else { "dev" };
            NamespaceInfo {
                name: ns_name(i),
                labels: labels(&[
                    ("team", &format!("team-{}", i % 50)),
                    ("env", env),
                    ("kubernetes.io/metadata.name", &ns_name(i)),
                ]),
            }
        })
        .collect();
    let roles = ["frontend", "backend", "worker"];
    let pods_list = (0..pods)
        .map(|i| PodInfo {
            namespace: ns_name(i % namespaces),
            name: format!("pod-{i}"),
            uid: format!("uid-{i}"),
            labels: labels(&[
                ("app", &format!("app-{}", i % 20)),
                ("role", roles[(i % 3) as usize]),
                ("pod-template-hash", &format!("{:08x}", i / 3)),
            ]),
            node_name: Some(format!("node-{}", i % nodes)),
            host_network: false,
            phase: Some("Running".to_owned()),
            pod_ips: vec![Ipv4Addr::from_bits(0x0a40_0000 + i).to_string()],
            pod_ip: None,
        })
        .collect();
    let egress = |j: u32| Ipv4Addr::from_bits(0xc0a8_0000 + j).to_string();
    let policies_list = (0..policies)
        .map(|j| {
            let team = format!("team-{}", j % 50);
            let app = format!("app-{}", j % 20);
            let rules = match j % 4 {
                0 => vec![rule(Some(&[("team", &team)]), Some(&[("app", &app)]))],
                1 => vec![EgressRule {
                    namespace_selector: Some(LabelSelector {
                        match_expressions: Some(vec![requirement("env", "In", &["prod"])]),
                        ..LabelSelector::default()
                    }),
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(labels(&[("role", roles[(j % 3) as usize])])),
                        match_expressions: Some(vec![requirement("app", "NotIn", &[&app])]),
                    }),
                }],
                2 => vec![EgressRule {
                    namespace_selector: None,
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(labels(&[("app", &app)])),
                        match_expressions: Some(vec![requirement("role", "Exists", &[])]),
                    }),
                }],
                _ => vec![
                    rule(
                        Some(&[("kubernetes.io/metadata.name", &ns_name(j % namespaces))]),
                        Some(&[]),
                    ),
                    EgressRule {
                        namespace_selector: match_labels(Some(&[("team", &team)])),
                        pod_selector: Some(LabelSelector {
                            match_expressions: Some(vec![requirement(
                                "canary",
                                "DoesNotExist",
                                &[],
                            )]),
                            ..LabelSelector::default()
                        }),
                    },
                ],
            };
            let spec = gateway_spec_rules(&egress(j), &["198.18.0.0/15", "192.0.2.0/24"], rules);
            policy(&format!("team-{j:04}"), i64::from(j), spec)
        })
        .collect();
    ClusterView {
        pods: pods_list,
        namespaces: namespaces_list,
        policies: policies_list,
        gateways: vec![GatewayObject {
            name: "default".to_owned(),
            floating_ips: (0..policies).map(egress).collect(),
        }],
        masquerade: MasqConfig::defaults(&Masquerade::default()),
    }
}
