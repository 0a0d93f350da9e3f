//! Pods the CNI plugin announced before the API shows their addresses.
//!
//! A pod's IPs reach the API only after its sandbox is up, that is after the CNI ADD that must
//! have programmed them: without help the node learns them a moment too late, and the pod's
//! first packets leave with the node's address. [`CniPods`] holds what each ADD said (the
//! pod, its sandbox and its addresses) until the API agrees, and [`CniPods::overlay`] puts it
//! into the view the node decides from:
//! - a pod the store has without addresses yet takes the ADD's;
//! - a pod the store does not have yet (its watch event is still on its way) comes from a
//!   direct read of the pod from the API (`fetched`), with the ADD's addresses;
//! - once the store shows the pod with addresses, or shows another pod under the name (a
//!   different uid), the store wins and [`CniPods::prune`] drops the entry.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::desired::NodeDesired;
use super::view::{ClusterView, PodInfo};
use crate::prefix::Prefix;

/// What an ADD said about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniPod {
    /// The sandbox (`CNI_CONTAINERID`): a DEL of an older sandbox leaves a newer one's entry.
    pub container_id: String,
    pub namespace: String,
    pub name: String,
    /// `K8S_POD_UID`, when the runtime passed it.
    pub uid: Option<String>,
    /// The addresses the cluster's CNI gave the sandbox.
    pub ips: Vec<IpAddr>,
    /// The pod as read from the API, when the store did not have it at ADD time.
    pub fetched: Option<PodInfo>,
}

/// The pods of this node that ADD announced and the store does not cover yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniPods {
    pods: BTreeMap<(String, String), CniPod>,
}

/// What an ADD is answered, from the node's desired state once programmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddOutcome {
    /// Selected by these policies: their entries for the pod are programmed.
    Programmed(Vec<String>),
    /// No policy selects the pod.
    NotSelected,
}

impl CniPods {
    /// Records an ADD (a newer sandbox of the same pod replaces the older one's entry).
    pub fn add(&mut self, pod: CniPod) {
        self.pods
            .insert((pod.namespace.clone(), pod.name.clone()), pod);
    }

    /// Forgets the pod of a DEL, if the entry is that sandbox's; returns whether it was.
    pub fn del(&mut self, container_id: &str, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        match self.pods.get(&key) {
            Some(pod) if pod.container_id == container_id => {
                self.pods.remove(&key);
                true
            }
            _ => false,
        }
    }

    /// How many pods wait for the API.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Whether the view's store lacks the pod: the agent must read it from the API to know
    /// its labels.
    pub fn missing_from(view: &ClusterView, namespace: &str, name: &str) -> bool {
        !view
            .pods
            .iter()
            .any(|p| p.namespace == namespace && p.name == name)
    }

    /// Adds what the ADDs said to `view`: addresses for the store's pods that have none yet,
    /// and the fetched pods the store does not have.
    pub fn overlay(&self, view: &mut ClusterView) {
        for pod in self.pods.values() {
            let addresses: Vec<String> = pod.ips.iter().map(ToString::to_string).collect();
            match view
                .pods
                .iter_mut()
                .find(|p| p.namespace == pod.namespace && p.name == pod.name)
            {
                Some(known) => {
                    let same = pod.uid.as_ref().is_none_or(|uid| *uid == known.uid);
                    if same && known.pod_ips.is_empty() && known.pod_ip.is_none() {
                        known.pod_ips = addresses;
                    }
                }
                None => {
                    if let Some(fetched) = &pod.fetched {
                        let mut fetched = fetched.clone();
                        if fetched.pod_ips.is_empty() && fetched.pod_ip.is_none() {
                            fetched.pod_ips = addresses;
                        }
                        view.pods.push(fetched);
                    }
                }
            }
        }
    }

    /// Drops the entries the store now covers: its pod shows addresses, or is another pod
    /// (another uid) under the same name.
    pub fn prune(&mut self, view: &ClusterView) {
        self.pods.retain(|(namespace, name), pod| {
            match view
                .pods
                .iter()
                .find(|p| p.namespace == *namespace && p.name == *name)
            {
                None => true,
                Some(known) => {
                    let other = pod.uid.as_ref().is_some_and(|uid| *uid != known.uid);
                    let addressed = !known.pod_ips.is_empty() || known.pod_ip.is_some();
                    !(other || addressed)
                }
            }
        });
    }
}

/// The answer to an ADD of `namespace/name` once `desired` is programmed.
pub fn add_outcome(desired: &NodeDesired, namespace: &str, name: &str) -> AddOutcome {
    let policies: Vec<String> = desired
        .selections
        .iter()
        .filter(|s| {
            s.pods
                .iter()
                .any(|p| p.namespace == namespace && p.name == name)
        })
        .map(|s| s.policy.clone())
        .collect();
    if policies.is_empty() {
        AddOutcome::NotSelected
    } else {
        AddOutcome::Programmed(policies)
    }
}

/// What a CNI CHECK finds: the pod's answer to an ADD now (`outcome`, from the state last
/// programmed) held against the data path's source entries (`sources`, as the pinned map
/// holds them): a selected pod has an entry for each of its IPv4 addresses, an unselected
/// one none of its own (a /32).
///
/// # Errors
///
/// The first address that disagrees, and how.
pub fn check_entries(
    outcome: &AddOutcome,
    ips: &[IpAddr],
    sources: &BTreeMap<Prefix, u64>,
) -> Result<(), String> {
    for ip in ips {
        let IpAddr::V4(ip) = *ip else { continue };
        let own = sources.contains_key(&Prefix::new(ip, 32));
        let covered = own || sources.keys().any(|prefix| prefix.contains(ip));
        match outcome {
            AddOutcome::Programmed(policies) if !covered => {
                return Err(format!(
                    "{ip} is selected by {} but has no source entry in the data path",
                    policies.join(", ")
                ));
            }
            AddOutcome::NotSelected if own => {
                return Err(format!(
                    "{ip} is selected by no policy but has a source entry in the data path"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::desired::node_desired;
    use crate::cluster::fixtures::*;
    use crate::cluster::masq::MasqConfig;
    use crate::config::Masquerade;

    const POLICY: &str = "frontend";

    /// One policy selecting `app=frontend` pods to 203.0.113.0/24 through 192.168.1.100.
    fn view_with_policy() -> ClusterView {
        ClusterView {
            pods: Vec::new(),
            namespaces: vec![ns_info("alice", &[])],
            policies: vec![policy(
                POLICY,
                10,
                gateway_spec_rules(
                    "192.168.1.100",
                    &["203.0.113.0/24"],
                    vec![rule(None, Some(&[("app", "frontend")]))],
                ),
            )],
            gateways: vec![gateway(&["192.168.1.100"])],
            masquerade: MasqConfig::defaults(&Masquerade {
                non_masquerade_cidrs: Vec::new(),
                masquerade_link_local: false,
            }),
        }
    }

    /// A pod of node1, addressed.
    fn pod(namespace: &str, name: &str, node: &str, labels: &[(&str, &str)], ip: &str) -> PodInfo {
        pod_info(namespace, name, node, ip, labels)
    }

    fn announced(name: &str, ip: &str, fetched: Option<PodInfo>) -> CniPod {
        CniPod {
            container_id: format!("sandbox-{name}"),
            namespace: "alice".into(),
            name: name.into(),
            uid: None,
            ips: vec![ip.parse().expect("ip")],
            fetched,
        }
    }

    /// A pod of node1 as the store has it right after scheduling: labels, no addresses.
    fn unaddressed(name: &str, labels: &[(&str, &str)]) -> PodInfo {
        PodInfo {
            pod_ips: Vec::new(),
            pod_ip: None,
            phase: Some("Pending".into()),
            ..pod("alice", name, "node1", labels, "10.0.0.1")
        }
    }

    #[test]
    fn an_added_pod_is_selected_before_the_api_shows_its_address() {
        let mut view = view_with_policy();
        view.pods = vec![unaddressed("frontend-1", &[("app", "frontend")])];
        let before = node_desired(&view, "node1");
        assert_eq!(
            add_outcome(&before, "alice", "frontend-1"),
            AddOutcome::NotSelected
        );

        let mut cni = CniPods::default();
        cni.add(announced("frontend-1", "10.244.1.7", None));
        cni.overlay(&mut view);
        let after = node_desired(&view, "node1");
        assert_eq!(
            add_outcome(&after, "alice", "frontend-1"),
            AddOutcome::Programmed(vec![POLICY.to_owned()])
        );
        let ips: Vec<_> = after.selections[0].pods[0].ips.clone();
        assert_eq!(
            ips,
            vec!["10.244.1.7".parse::<std::net::Ipv4Addr>().expect("ip")]
        );
    }

    #[test]
    fn a_pod_the_store_has_not_seen_comes_from_the_api_read() {
        let mut view = view_with_policy();
        view.pods.clear();
        assert!(CniPods::missing_from(&view, "alice", "frontend-2"));
        let mut cni = CniPods::default();
        // Without the read, nothing is known of its labels: not selected.
        cni.add(announced("frontend-2", "10.244.1.8", None));
        let mut plain = view.clone();
        cni.overlay(&mut plain);
        assert_eq!(
            add_outcome(&node_desired(&plain, "node1"), "alice", "frontend-2"),
            AddOutcome::NotSelected
        );
        let fetched = unaddressed("frontend-2", &[("app", "frontend")]);
        cni.add(announced("frontend-2", "10.244.1.8", Some(fetched)));
        cni.overlay(&mut view);
        assert_eq!(
            add_outcome(&node_desired(&view, "node1"), "alice", "frontend-2"),
            AddOutcome::Programmed(vec![POLICY.to_owned()])
        );
    }

    #[test]
    fn an_unselected_pod_is_answered_not_selected() {
        let mut view = view_with_policy();
        view.pods = vec![unaddressed("backend-1", &[("app", "backend")])];
        let mut cni = CniPods::default();
        cni.add(announced("backend-1", "10.244.1.9", None));
        cni.overlay(&mut view);
        assert_eq!(
            add_outcome(&node_desired(&view, "node1"), "alice", "backend-1"),
            AddOutcome::NotSelected
        );
    }

    #[test]
    fn the_store_wins_once_it_shows_addresses_or_another_pod() {
        let mut cni = CniPods::default();
        cni.add(announced("a", "10.244.1.7", None));
        cni.add(CniPod {
            uid: Some("old-uid".into()),
            ..announced("b", "10.244.1.8", None)
        });
        cni.add(announced("c", "10.244.1.9", None));
        let mut view = view_with_policy();
        view.pods = vec![
            pod("alice", "a", "node1", &[("app", "frontend")], "10.244.1.70"),
            PodInfo {
                uid: "new-uid".into(),
                ..unaddressed("b", &[("app", "frontend")])
            },
            unaddressed("c", &[("app", "frontend")]),
        ];
        // The store's own address stands; the other pod b is not given the old one's.
        let mut overlaid = view.clone();
        cni.overlay(&mut overlaid);
        assert_eq!(overlaid.pods[0].pod_ips, vec!["10.244.1.70".to_owned()]);
        assert!(overlaid.pods[1].pod_ips.is_empty());
        assert_eq!(overlaid.pods[2].pod_ips, vec!["10.244.1.9".to_owned()]);
        cni.prune(&view);
        assert_eq!(cni.len(), 1, "{cni:?}");
        assert!(!cni.del("sandbox-a", "alice", "c"), "another sandbox's DEL");
        assert!(cni.del("sandbox-c", "alice", "c"));
        assert!(cni.is_empty());
    }

    #[test]
    fn check_holds_the_answer_against_the_source_entries() {
        let ip = |text: &str| -> IpAddr { text.parse().expect("address") };
        let prefix = |text: &str| -> Prefix { text.parse().expect("prefix") };
        let selected = AddOutcome::Programmed(vec!["egress".into()]);
        let sources: BTreeMap<Prefix, u64> =
            [(prefix("10.244.1.7/32"), 1), (prefix("10.10.0.0/16"), 2)].into();
        // Its own entry, or a static prefix covering it.
        assert_eq!(
            check_entries(&selected, &[ip("10.244.1.7")], &sources),
            Ok(())
        );
        assert_eq!(
            check_entries(&selected, &[ip("10.10.3.4")], &sources),
            Ok(())
        );
        // IPv6 addresses are not the data path's business.
        assert_eq!(check_entries(&selected, &[ip("fd00::7")], &sources), Ok(()));
        let missing = check_entries(&selected, &[ip("10.244.1.7"), ip("10.244.1.8")], &sources);
        assert_eq!(
            missing,
            Err("10.244.1.8 is selected by egress but has no source entry in the data path".into())
        );
        let left_over = check_entries(&AddOutcome::NotSelected, &[ip("10.244.1.7")], &sources);
        assert!(left_over.is_err_and(|e| e.contains("selected by no policy")));
        assert_eq!(
            check_entries(&AddOutcome::NotSelected, &[ip("10.244.1.9")], &sources),
            Ok(())
        );
    }
}
