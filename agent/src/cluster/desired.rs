//! What a snapshot of the cluster asks of one node ([`node_desired`]), and what it says about
//! every policy cluster-wide ([`cluster_selection`], for the status writer).
//!
//! Both start from the same [`admit`], so every node and the status writer agree on which
//! policies are accepted; they differ only in the pods they look at (a node: its own, the
//! status writer: all).
//!
//! Invariants of a [`NodeDesired`]: `policies` holds exactly the accepted gateway policies,
//! oldest first, each with the /32 of every IPv4 address of the node's pods it selects
//! (sorted, each once; possibly none); `policy::compile(&policies, &known_gateways)` then
//! admits every one of them (distinct egress IPs, all known), so its statuses agree with
//! `outcomes`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::admission::{Admission, GatewayPolicy, Outcome, admit};
use super::masq::{MasqueradeExceptions, exceptions};
use super::selection::{Counters, Selected, select};
use super::view::{ClusterView, PodInfo};
use crate::policy::PolicySpec;
use crate::prefix::Prefix;

/// The node's desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDesired {
    /// The node's name.
    pub node: String,
    /// For `policy::compile`: the accepted gateway policies, oldest first.
    pub policies: Vec<PolicySpec>,
    /// For `policy::compile`: every floating IP of every gateway.
    pub known_gateways: Vec<Ipv4Addr>,
    /// The local pods each of `policies` selects, by the same index.
    pub selections: Vec<LocalSelection>,
    /// Every policy's verdict, oldest first.
    pub outcomes: Vec<PolicyOutcome>,
    /// The node's pods set aside, and addresses ignored.
    pub counters: Counters,
    /// The masquerade table's exceptions.
    pub masquerade: MasqueradeExceptions,
}

/// The node's pods one accepted gateway policy selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSelection {
    /// The policy.
    pub policy: String,
    /// Its generation, as the node reports it once programmed.
    pub generation: i64,
    /// The pods, by namespace then name.
    pub pods: Vec<LocalPod>,
}

/// A selected pod of the node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LocalPod {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its IPv4 addresses.
    pub ips: Vec<Ipv4Addr>,
}

/// A policy's verdict, for status output and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// Whether it is (as far as its spec parses) a NoSNAT policy.
    pub no_snat: bool,
    /// Accepted or why not.
    pub outcome: Outcome,
}

/// The node's desired state from a snapshot; only pods with `spec.nodeName == node` count.
pub fn node_desired(view: &ClusterView, node: &str) -> NodeDesired {
    let admission = admit(&view.policies, &view.gateways);
    let local: Vec<&PodInfo> = view
        .pods
        .iter()
        .filter(|p| p.node_name.as_deref() == Some(node))
        .collect();
    let accepted = accepted_gateways(&admission);
    let gateways: Vec<&GatewayPolicy> = accepted.iter().map(|&(_, g)| g).collect();
    let Selected {
        per_policy,
        addresses,
        counters,
    } = select(&local, &view.namespaces, &gateways);

    let mut policies = Vec::with_capacity(accepted.len());
    let mut selections = Vec::with_capacity(accepted.len());
    for (&(index, gateway), chosen) in accepted.iter().zip(&per_policy) {
        let admitted = &admission.policies[index];
        let mut sources: Vec<Prefix> = chosen
            .iter()
            .flat_map(|&i| {
                addresses[i as usize]
                    .ipv4
                    .iter()
                    .map(|&ip| Prefix::host(ip))
            })
            .collect();
        sources.sort_unstable();
        sources.dedup();
        policies.push(PolicySpec {
            name: admitted.name.clone(),
            sources,
            destinations: gateway.destinations.clone(),
            excluded: gateway.excluded.clone(),
            egress: gateway.egress,
        });
        let mut pods: Vec<LocalPod> = chosen
            .iter()
            .map(|&i| LocalPod {
                namespace: local[i as usize].namespace.clone(),
                name: local[i as usize].name.clone(),
                ips: addresses[i as usize].ipv4.clone(),
            })
            .collect();
        // By namespace and name; whole values, so the order never depends on the input's.
        pods.sort_unstable();
        selections.push(LocalSelection {
            policy: admitted.name.clone(),
            generation: admitted.generation,
            pods,
        });
    }
    NodeDesired {
        node: node.to_owned(),
        policies,
        known_gateways: admission.known_gateways.clone(),
        selections,
        outcomes: outcomes(&admission),
        counters,
        masquerade: exceptions(&view.masquerade, &admission),
    }
}

/// Every policy's verdict, oldest first.
pub fn outcomes(admission: &Admission) -> Vec<PolicyOutcome> {
    admission
        .policies
        .iter()
        .map(|p| PolicyOutcome {
            name: p.name.clone(),
            uid: p.uid.clone(),
            generation: p.generation,
            no_snat: p.is_no_snat(),
            outcome: p.outcome.clone(),
        })
        .collect()
}

/// The accepted gateway policies with their index in the admission, oldest first.
fn accepted_gateways(admission: &Admission) -> Vec<(usize, &GatewayPolicy)> {
    admission
        .policies
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.accepted_gateway().map(|g| (i, g)))
        .collect()
}

/// Every policy's verdict and, cluster-wide, the pods it selects: the status writer's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSelection {
    /// Every policy, oldest first.
    pub outcomes: Vec<PolicyOutcome>,
    /// By the same index: what the policy selects (nothing unless an accepted gateway
    /// policy: a rejected policy steers no traffic, so it selects no pod).
    pub selections: Vec<PolicySelection>,
    /// All pods set aside, and addresses ignored, cluster-wide.
    pub counters: Counters,
}

/// What one policy selects across the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySelection {
    /// `status.selectedPods`: pods, not addresses.
    pub selected_pods: u32,
    /// The nodes running selected pods, and how many each runs.
    pub nodes: BTreeMap<String, u32>,
}

impl PolicySelection {
    /// The nodes that must program the policy.
    pub fn node_names(&self) -> BTreeSet<&str> {
        self.nodes.keys().map(String::as_str).collect()
    }
}

/// Every policy's verdict and cluster-wide selection, from a snapshot holding all pods.
pub fn cluster_selection(view: &ClusterView) -> ClusterSelection {
    let admission = admit(&view.policies, &view.gateways);
    let pods: Vec<&PodInfo> = view.pods.iter().collect();
    let accepted = accepted_gateways(&admission);
    let gateways: Vec<&GatewayPolicy> = accepted.iter().map(|&(_, g)| g).collect();
    let selected = select(&pods, &view.namespaces, &gateways);
    let mut selections = vec![PolicySelection::default(); admission.policies.len()];
    for (&(index, _), chosen) in accepted.iter().zip(&selected.per_policy) {
        let selection = &mut selections[index];
        selection.selected_pods = u32::try_from(chosen.len()).unwrap_or(u32::MAX);
        for &i in chosen {
            // A pod with an address is scheduled; an unscheduled one counts, on no node.
            if let Some(node) = &pods[i as usize].node_name {
                match selection.nodes.get_mut(node) {
                    Some(count) => *count += 1,
                    None => {
                        selection.nodes.insert(node.clone(), 1);
                    }
                }
            }
        }
    }
    ClusterSelection {
        outcomes: outcomes(&admission),
        selections,
        counters: selected.counters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::admission::Reason;
    use crate::cluster::fixtures::{
        gateway, gateway_spec, gateway_spec_rules, no_snat_spec, ns_info, pod_info, policy, rule,
    };
    use crate::cluster::masq::MasqConfig;
    use crate::config::Masquerade;
    use crate::policy::{PolicyState, compile};

    fn p(text: &str) -> Prefix {
        text.parse().expect("valid prefix")
    }

    /// The seed's two-namespace example, a second node, and a few pods that must not count.
    fn view() -> ClusterView {
        let mut host = pod_info(
            "alice",
            "host",
            "node1",
            "192.168.1.1",
            &[("role", "frontend")],
        );
        host.host_network = true;
        let mut done = pod_info(
            "alice",
            "done",
            "node1",
            "10.10.1.9",
            &[("role", "frontend")],
        );
        done.phase = Some("Failed".into());
        let mut dual = pod_info(
            "paul",
            "dual",
            "node1",
            "10.10.1.7",
            &[("role", "frontend")],
        );
        dual.pod_ips.push("fd00::7".into());
        ClusterView {
            pods: vec![
                pod_info(
                    "alice",
                    "web-1",
                    "node1",
                    "10.10.1.5",
                    &[("role", "frontend")],
                ),
                pod_info(
                    "alice",
                    "web-2",
                    "node2",
                    "10.10.2.5",
                    &[("role", "frontend")],
                ),
                pod_info("alice", "db", "node1", "10.10.1.6", &[("role", "db")]),
                dual,
                host,
                done,
            ],
            namespaces: vec![
                ns_info("alice", &[("user", "alice")]),
                ns_info("paul", &[("user", "paul")]),
            ],
            policies: vec![
                policy(
                    "egress",
                    10,
                    gateway_spec_rules(
                        "192.168.1.100",
                        &["8.8.8.0/24"],
                        vec![
                            rule(Some(&[("user", "alice")]), Some(&[("role", "frontend")])),
                            rule(Some(&[("user", "paul")]), Some(&[("role", "frontend")])),
                        ],
                    ),
                ),
                policy(
                    "db",
                    20,
                    gateway_spec_rules(
                        "192.168.1.101",
                        &["1.1.1.0/24"],
                        vec![rule(None, Some(&[("role", "db")]))],
                    ),
                ),
                policy(
                    "idle",
                    30,
                    gateway_spec_rules(
                        "192.168.1.102",
                        &["1.1.1.0/24"],
                        vec![rule(None, Some(&[("role", "none")]))],
                    ),
                ),
                policy("copycat", 5, gateway_spec("192.168.1.101", &["9.9.9.0/24"])),
                policy("keep", 40, no_snat_spec(&["100.64.0.0/10"])),
            ],
            gateways: vec![gateway(&[
                "192.168.1.100",
                "192.168.1.101",
                "192.168.1.102",
            ])],
            masquerade: MasqConfig::defaults(&Masquerade {
                non_masquerade_cidrs: vec![p("10.0.0.0/8")],
                masquerade_link_local: false,
            }),
        }
    }

    #[test]
    fn a_node_gets_its_pods_as_sources_of_the_accepted_policies() {
        let desired = node_desired(&view(), "node1");
        let names: Vec<&str> = desired.policies.iter().map(|p| p.name.as_str()).collect();
        // "copycat" is older than "db" and takes 192.168.1.101: "db" is in Conflict.
        assert_eq!(names, ["copycat", "egress", "idle"]);
        let sources: Vec<Vec<String>> = desired
            .policies
            .iter()
            .map(|p| p.sources.iter().map(Prefix::to_string).collect())
            .collect();
        assert_eq!(
            sources,
            [
                vec!["10.10.1.5/32", "10.10.1.6/32", "10.10.1.7/32"],
                vec!["10.10.1.5/32", "10.10.1.7/32"],
                vec![],
            ]
        );
        assert_eq!(desired.policies[1].destinations, [p("8.8.8.0/24")]);
        assert_eq!(desired.policies[1].egress, Ipv4Addr::new(192, 168, 1, 100));
        let egress = &desired.selections[1];
        assert_eq!((egress.policy.as_str(), egress.generation), ("egress", 1));
        let pods: Vec<(&str, &str)> = egress
            .pods
            .iter()
            .map(|p| (p.namespace.as_str(), p.name.as_str()))
            .collect();
        assert_eq!(pods, [("alice", "web-1"), ("paul", "dual")]);
        assert_eq!(
            desired.counters,
            Counters {
                host_network: 1,
                terminal: 1,
                no_ipv4: 0,
                ipv6_ignored: 1,
                invalid_ips: 0
            }
        );
        let verdicts: Vec<(&str, Option<Reason>)> = desired
            .outcomes
            .iter()
            .map(|o| {
                let reason = match &o.outcome {
                    Outcome::Accepted => None,
                    Outcome::Rejected(r) => Some(r.reason),
                };
                (o.name.as_str(), reason)
            })
            .collect();
        assert_eq!(
            verdicts,
            [
                ("copycat", None),
                ("egress", None),
                ("db", Some(Reason::Conflict)),
                ("idle", None),
                ("keep", None)
            ]
        );
        assert!(desired.outcomes[4].no_snat);
        assert_eq!(
            desired.masquerade.non_masquerade,
            [p("10.0.0.0/8"), p("100.64.0.0/10")]
        );

        // compile takes it as is and rejects nothing more, empty sources included.
        let program = compile(&desired.policies, &desired.known_gateways).expect("compiles");
        assert!(
            program
                .policies
                .iter()
                .all(|s| matches!(s.state, PolicyState::Programmed { .. }))
        );
        assert_eq!(
            program.decide(Ipv4Addr::new(10, 10, 1, 5), Ipv4Addr::new(8, 8, 8, 8)),
            Some((
                egret_ebpf_common::node::policy_id("egress"),
                Ipv4Addr::new(192, 168, 1, 100)
            ))
        );
    }

    #[test]
    fn a_node_without_pods_still_gets_every_accepted_policy() {
        let desired = node_desired(&view(), "node9");
        assert_eq!(desired.policies.len(), 3);
        assert!(desired.policies.iter().all(|p| p.sources.is_empty()));
        assert_eq!(desired.counters, Counters::default());
    }

    #[test]
    fn the_cluster_view_counts_pods_and_nodes_per_policy() {
        let cluster = cluster_selection(&view());
        let by_name: BTreeMap<&str, &PolicySelection> = cluster
            .outcomes
            .iter()
            .map(|o| o.name.as_str())
            .zip(&cluster.selections)
            .collect();
        assert_eq!(by_name["egress"].selected_pods, 3);
        assert_eq!(
            by_name["egress"].nodes,
            BTreeMap::from([("node1".to_owned(), 2), ("node2".to_owned(), 1)])
        );
        assert_eq!(
            by_name["egress"].node_names(),
            BTreeSet::from(["node1", "node2"])
        );
        assert_eq!(by_name["copycat"].selected_pods, 4);
        assert_eq!(
            *by_name["db"],
            PolicySelection::default(),
            "rejected: selects nothing"
        );
        assert_eq!(*by_name["idle"], PolicySelection::default());
        assert_eq!(*by_name["keep"], PolicySelection::default());
    }
}
