//! Which pods each accepted gateway policy selects.
//!
//! A pod is *eligible* when it is not `hostNetwork` (it has the node's address), not in a
//! terminal phase (`Succeeded`/`Failed`: its IPs may already be another pod's) and has at
//! least one IPv4 address. An eligible pod is selected by a policy when any rule matches it
//! (namespace selector on its namespace's labels AND pod selector on its labels; see
//! [`Rule::matches`] for a namespace not in the view).
//!
//! [`select`] gives the same answer as asking every policy about every pod ([`select_naive`],
//! the reference the property tests hold it to) without doing that: pods are grouped by
//! namespace, each rule's namespace selector is evaluated once per namespace, and a selector
//! with an `In` requirement (every `matchLabels` pair is one) starts from the pods (or
//! namespaces) carrying one of its values, found in a label index, instead of scanning.
//!
//! Counters, over the pods given: `hostNetwork` pods, then terminal pods, are set aside
//! first; of the rest, those without an IPv4 address, and the IPv6 and unparsable entries
//! of all of them, are counted.

use std::collections::HashMap;

use super::admission::{GatewayPolicy, Rule};
use super::selector::{Labels, Operator, Selector};
use super::view::{NamespaceInfo, PodAddresses, PodInfo};

/// Pods not eligible for selection, and addresses ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// `hostNetwork` pods.
    pub host_network: u32,
    /// Pods in phase `Succeeded` or `Failed`.
    pub terminal: u32,
    /// Other pods without an IPv4 address (not assigned yet, or IPv6 only).
    pub no_ipv4: u32,
    /// IPv6 addresses of the other pods, ignored (IPv4 only for now).
    pub ipv6_ignored: u32,
    /// Entries of the other pods' `podIPs` that are no address at all.
    pub invalid_ips: u32,
}

/// What [`select`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selected {
    /// For each policy given, the indices of the pods it selects (into the pods given),
    /// ascending.
    pub per_policy: Vec<Vec<u32>>,
    /// Each pod's parsed addresses, by index (empty for a pod set aside before parsing).
    pub addresses: Vec<PodAddresses>,
    /// The pods set aside and the addresses ignored.
    pub counters: Counters,
}

/// The pods each policy selects, as the module documentation states.
pub fn select(
    pods: &[&PodInfo],
    namespaces: &[NamespaceInfo],
    policies: &[&GatewayPolicy],
) -> Selected {
    let (addresses, eligible, counters) = eligibility(pods);
    let ns_labels: HashMap<&str, &Labels> = namespaces
        .iter()
        .map(|n| (n.name.as_str(), &n.labels))
        .collect();

    // Eligible pods grouped by namespace.
    let mut group_of: HashMap<&str, u32> = HashMap::new();
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut pod_group = vec![u32::MAX; pods.len()];
    let mut pod_index: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
    for &i in &eligible {
        let pod = pods[i as usize];
        let g = *group_of.entry(pod.namespace.as_str()).or_insert_with(|| {
            groups.push(Group {
                labels: ns_labels.get(pod.namespace.as_str()).copied(),
                pods: Vec::new(),
            });
            (groups.len() - 1) as u32
        });
        groups[g as usize].pods.push(i);
        pod_group[i as usize] = g;
        for (k, v) in &pod.labels {
            pod_index
                .entry((k.as_str(), v.as_str()))
                .or_default()
                .push(i);
        }
    }
    let mut ns_index: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
    for (g, group) in groups.iter().enumerate() {
        for (k, v) in group.labels.into_iter().flatten() {
            ns_index
                .entry((k.as_str(), v.as_str()))
                .or_default()
                .push(g as u32);
        }
    }

    // `stamp[g] == rule_stamp`: group g matched the current rule's namespace selector.
    let mut stamp = vec![0u32; groups.len()];
    let mut rule_stamp = 0u32;
    let mut matched_groups: Vec<u32> = Vec::new();
    let mut per_policy = Vec::with_capacity(policies.len());
    for policy in policies {
        let mut chosen: Vec<u32> = Vec::new();
        for rule in &policy.rules {
            rule_stamp += 1;
            matched_groups.clear();
            namespaces_matching(rule, &groups, &ns_index, &mut matched_groups);
            let mut in_matched = 0usize;
            for &g in &matched_groups {
                stamp[g as usize] = rule_stamp;
                in_matched += groups[g as usize].pods.len();
            }
            if in_matched == 0 {
                continue;
            }
            match candidates(&rule.pod, &pod_index) {
                // The index narrows the search more than the namespaces do.
                Some(lists) if lists.iter().map(|l| l.len()).sum::<usize>() < in_matched => {
                    for &i in lists.iter().flat_map(|l| l.iter()) {
                        if stamp[pod_group[i as usize] as usize] == rule_stamp
                            && rule.pod.matches(&pods[i as usize].labels)
                        {
                            chosen.push(i);
                        }
                    }
                }
                _ => {
                    for &g in &matched_groups {
                        for &i in &groups[g as usize].pods {
                            if rule.pod.matches(&pods[i as usize].labels) {
                                chosen.push(i);
                            }
                        }
                    }
                }
            }
        }
        chosen.sort_unstable();
        chosen.dedup();
        per_policy.push(chosen);
    }
    Selected {
        per_policy,
        addresses,
        counters,
    }
}

/// The reference: every policy asked about every pod, by the definition.
pub fn select_naive(
    pods: &[&PodInfo],
    namespaces: &[NamespaceInfo],
    policies: &[&GatewayPolicy],
) -> Selected {
    let (addresses, eligible, counters) = eligibility(pods);
    let labels_of = |name: &str| {
        namespaces
            .iter()
            .find(|n| n.name == name)
            .map(|n| &n.labels)
    };
    let per_policy = policies
        .iter()
        .map(|policy| {
            eligible
                .iter()
                .copied()
                .filter(|&i| {
                    let pod = pods[i as usize];
                    policy
                        .rules
                        .iter()
                        .any(|rule| rule.matches(labels_of(&pod.namespace), &pod.labels))
                })
                .collect()
        })
        .collect();
    Selected {
        per_policy,
        addresses,
        counters,
    }
}

/// Eligible pods of one namespace.
struct Group<'a> {
    /// The namespace's labels; `None` when it is not in the view.
    labels: Option<&'a Labels>,
    /// Indices of its eligible pods, ascending.
    pods: Vec<u32>,
}

/// Every pod's addresses, the eligible pods' indices, and the counters.
fn eligibility(pods: &[&PodInfo]) -> (Vec<PodAddresses>, Vec<u32>, Counters) {
    let mut counters = Counters::default();
    let mut addresses = Vec::with_capacity(pods.len());
    let mut eligible = Vec::with_capacity(pods.len());
    for (i, pod) in pods.iter().enumerate() {
        if pod.host_network {
            counters.host_network += 1;
            addresses.push(PodAddresses::default());
            continue;
        }
        if pod.is_terminal() {
            counters.terminal += 1;
            addresses.push(PodAddresses::default());
            continue;
        }
        let parsed = pod.addresses();
        counters.ipv6_ignored += parsed.ipv6;
        counters.invalid_ips += parsed.invalid;
        if parsed.ipv4.is_empty() {
            counters.no_ipv4 += 1;
        } else {
            eligible.push(i as u32);
        }
        addresses.push(parsed);
    }
    (addresses, eligible, counters)
}

/// The groups whose namespace matches the rule's namespace selector, ascending.
fn namespaces_matching(
    rule: &Rule,
    groups: &[Group<'_>],
    ns_index: &HashMap<(&str, &str), Vec<u32>>,
    out: &mut Vec<u32>,
) {
    let selector = &rule.namespace;
    if selector.is_everything() {
        // Namespaces not in the view match too: see `Rule::matches`.
        out.extend(0..groups.len() as u32);
        return;
    }
    let known = |g: u32| {
        groups[g as usize]
            .labels
            .filter(|l| selector.matches(l))
            .is_some()
    };
    match candidates(selector, ns_index) {
        Some(lists) => {
            out.extend(
                lists
                    .iter()
                    .flat_map(|l| l.iter())
                    .copied()
                    .filter(|&g| known(g)),
            );
            out.sort_unstable();
        }
        None => out.extend((0..groups.len() as u32).filter(|&g| known(g))),
    }
}

/// The shortest way into `index` for `selector`: the posting lists of the values of its most
/// selective `In` requirement (a superset of what the selector matches; disjoint lists, since
/// an object has one value per key). `None` when it has no `In` requirement.
fn candidates<'i>(
    selector: &'i Selector,
    index: &'i HashMap<(&str, &str), Vec<u32>>,
) -> Option<Vec<&'i [u32]>> {
    let mut best: Option<(usize, Vec<&'i [u32]>)> = None;
    for requirement in selector.requirements() {
        let Operator::In(values) = &requirement.op else {
            continue;
        };
        let lists: Vec<&'i [u32]> = values
            .iter()
            .filter_map(|v| index.get(&(requirement.key.as_str(), v.as_str())))
            .map(Vec::as_slice)
            .collect();
        let size = lists.iter().map(|l| l.len()).sum();
        if best.as_ref().is_none_or(|(s, _)| size < *s) {
            best = Some((size, lists));
        }
    }
    best.map(|(_, lists)| lists)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::admission::{Form, parse};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    use crate::cluster::fixtures::{gateway_spec_rules, ns_info, pod_info, requirement, rule};

    fn gateway(rules: Vec<egret_crd::EgressRule>) -> GatewayPolicy {
        match parse(&gateway_spec_rules("192.0.2.1", &["8.8.8.0/24"], rules)) {
            Ok(Form::Gateway(g)) => g,
            other => panic!("not a gateway policy: {other:?}"),
        }
    }

    #[test]
    fn rules_or_selectors_and_eligibility() {
        let mut pods = vec![
            pod_info("alice", "web", "n1", "10.0.0.1", &[("role", "frontend")]),
            pod_info("alice", "db", "n1", "10.0.0.2", &[("role", "db")]),
            pod_info("paul", "web", "n2", "10.0.0.3", &[("role", "frontend")]),
            pod_info("carol", "web", "n2", "10.0.0.4", &[("role", "frontend")]),
            // Namespace not in the view.
            pod_info("ghost", "web", "n2", "10.0.0.5", &[("role", "frontend")]),
            pod_info(
                "alice",
                "host",
                "n1",
                "192.168.1.1",
                &[("role", "frontend")],
            ),
            pod_info("alice", "done", "n1", "10.0.0.6", &[("role", "frontend")]),
            pod_info("alice", "v6", "n1", "fd00::7", &[("role", "frontend")]),
            pod_info("alice", "new", "n1", "", &[("role", "frontend")]),
        ];
        pods[5].host_network = true;
        pods[6].phase = Some("Succeeded".into());
        pods[8].pod_ips.clear();
        let namespaces = vec![
            ns_info("alice", &[("user", "alice")]),
            ns_info("paul", &[("user", "paul")]),
            ns_info("carol", &[("user", "carol")]),
        ];
        let seed = gateway(vec![
            rule(Some(&[("user", "alice")]), Some(&[("role", "frontend")])),
            rule(Some(&[("user", "paul")]), Some(&[("role", "frontend")])),
        ]);
        let all_frontends = gateway(vec![rule(None, Some(&[("role", "frontend")]))]);
        let everything_in_known = gateway(vec![rule(Some(&[]), None)]);
        let refs: Vec<&PodInfo> = pods.iter().collect();
        let policies = [&seed, &all_frontends, &everything_in_known];
        let selected = select(&refs, &namespaces, &policies);
        assert_eq!(
            selected.per_policy,
            [vec![0, 2], vec![0, 2, 3, 4], vec![0, 1, 2, 3, 4]]
        );
        assert_eq!(
            selected.counters,
            Counters {
                host_network: 1,
                terminal: 1,
                no_ipv4: 2,
                ipv6_ignored: 1,
                invalid_ips: 0,
            }
        );
        assert_eq!(select_naive(&refs, &namespaces, &policies), selected);
        // A namespace selector that matches the empty label set (NotIn) still needs the
        // namespace's labels: the pod in "ghost" is not selected.
        let not_alice = gateway(vec![egret_crd::EgressRule {
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![requirement("user", "NotIn", &["alice"])]),
                ..LabelSelector::default()
            }),
            pod_selector: None,
        }]);
        let selected = select(&refs, &namespaces, &[&not_alice]);
        assert_eq!(selected.per_policy, [vec![2, 3]]);
        assert_eq!(select_naive(&refs, &namespaces, &[&not_alice]), selected);
    }
}
