//! The cluster as the pure decisions see it: a snapshot of the watched objects, reduced to the
//! fields they read. The shell fills a [`ClusterView`] from its reflector stores with the
//! `From` conversions here (cheap: no parsing, one clone of the fields kept), then calls
//! [`super::node_desired`] or [`super::cluster_selection`].
//!
//! Raw strings stay raw (pod IPs, CIDRs, the egress IP): parsing them is a decision, made in
//! `admission` and `selection`, where a bad value becomes an outcome instead of a lost object.

use std::net::Ipv4Addr;

use egret_crd::{EgressGateway, EgressNATPolicy, EgressNATPolicySpec};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;

use super::masq::MasqConfig;
use super::selector::Labels;

/// Everything the decisions read, as one snapshot.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Pods: on a node agent those of its node, on the status writer all of them.
    pub pods: Vec<PodInfo>,
    /// All namespaces.
    pub namespaces: Vec<NamespaceInfo>,
    /// All `EgressNATPolicy` objects, in any order.
    pub policies: Vec<PolicyObject>,
    /// All `EgressGateway` objects.
    pub gateways: Vec<GatewayObject>,
    /// The effective ip-masq-agent config: the ConfigMap's over the `[masquerade]` defaults,
    /// or the defaults alone when there is no ConfigMap.
    pub masquerade: MasqConfig,
}

/// The fields of a pod the decisions read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `spec.nodeName`; `None` while unscheduled.
    pub node_name: Option<String>,
    /// `spec.hostNetwork`: such a pod has the node's address and is never selected.
    pub host_network: bool,
    /// `status.phase`, as written (`Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`).
    pub phase: Option<String>,
    /// `status.podIPs[*].ip`, as written.
    pub pod_ips: Vec<String>,
    /// `status.podIP`, as written; read only when `pod_ips` is empty.
    pub pod_ip: Option<String>,
}

/// A pod's addresses, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodAddresses {
    /// The IPv4 addresses, in the pod's order, each once.
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses (ignored: IPv4 only for now).
    pub ipv6: u32,
    /// Entries that are no IP address at all.
    pub invalid: u32,
}

impl PodInfo {
    /// Whether the pod has finished (`Succeeded` or `Failed`): its IPs may already belong to
    /// another pod, so it is never selected.
    pub fn is_terminal(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    /// `status.podIPs`, or `status.podIP` when that list is empty, parsed.
    pub fn addresses(&self) -> PodAddresses {
        let mut out = PodAddresses::default();
        let raw: &mut dyn Iterator<Item = &String> = if self.pod_ips.is_empty() {
            &mut self.pod_ip.iter()
        } else {
            &mut self.pod_ips.iter()
        };
        for text in raw {
            match text.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => {
                    if !out.ipv4.contains(&ip) {
                        out.ipv4.push(ip);
                    }
                }
                Ok(std::net::IpAddr::V6(_)) => out.ipv6 += 1,
                Err(_) => out.invalid += 1,
            }
        }
        out
    }
}

impl From<&Pod> for PodInfo {
    fn from(pod: &Pod) -> PodInfo {
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        PodInfo {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            node_name: spec.and_then(|s| s.node_name.clone()),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            phase: status.and_then(|s| s.phase.clone()),
            pod_ips: status
                .and_then(|s| s.pod_ips.as_ref())
                .map(|ips| ips.iter().map(|ip| ip.ip.clone()).collect())
                .unwrap_or_default(),
            pod_ip: status.and_then(|s| s.pod_ip.clone()),
        }
    }
}

/// The fields of a namespace the decisions read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels` (the apiserver adds `kubernetes.io/metadata.name`).
    pub labels: Labels,
}

impl From<&Namespace> for NamespaceInfo {
    fn from(ns: &Namespace) -> NamespaceInfo {
        NamespaceInfo {
            name: ns.metadata.name.clone().unwrap_or_default(),
            labels: ns.metadata.labels.clone().unwrap_or_default(),
        }
    }
}

/// An `EgressNATPolicy`: its identity, age and spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyObject {
    /// `metadata.name` (cluster-scoped, so unique).
    pub name: String,
    /// `metadata.uid`: tells a re-created policy from the old one.
    pub uid: String,
    /// `metadata.generation`: bumped by the apiserver on every spec change.
    pub generation: i64,
    /// `metadata.creationTimestamp`; `None` only in objects that never met an apiserver,
    /// which count as the newest.
    pub created: Option<Timestamp>,
    /// The spec, as written.
    pub spec: EgressNATPolicySpec,
}

impl PolicyObject {
    /// The age order (creationTimestamp, then name; a missing timestamp is the newest): the
    /// older policy sorts first.
    pub fn age_key(&self) -> (bool, Option<Timestamp>, &str) {
        (self.created.is_none(), self.created, &self.name)
    }
}

impl From<&EgressNATPolicy> for PolicyObject {
    fn from(policy: &EgressNATPolicy) -> PolicyObject {
        PolicyObject {
            name: policy.metadata.name.clone().unwrap_or_default(),
            uid: policy.metadata.uid.clone().unwrap_or_default(),
            generation: policy.metadata.generation.unwrap_or(0),
            created: policy.metadata.creation_timestamp.as_ref().map(|t| t.0),
            spec: policy.spec.clone(),
        }
    }
}

/// An `EgressGateway`: the floating IPs policies may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayObject {
    /// `metadata.name`.
    pub name: String,
    /// `spec.floatingIPs`, as written.
    pub floating_ips: Vec<String>,
}

impl From<&EgressGateway> for GatewayObject {
    fn from(gateway: &EgressGateway) -> GatewayObject {
        GatewayObject {
            name: gateway.metadata.name.clone().unwrap_or_default(),
            floating_ips: gateway.spec.floating_ips.clone(),
        }
    }
}

/// Every floating IP of every gateway, sorted and each once; entries that do not parse as
/// IPv4 addresses are skipped (the CRD's schema refuses them; no policy can name them).
pub fn known_gateways(gateways: &[GatewayObject]) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = gateways
        .iter()
        .flat_map(|g| g.floating_ips.iter())
        .filter_map(|text| text.parse().ok())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    #[test]
    fn a_pod_converts_with_its_raw_fields() {
        let pod = Pod {
            metadata: ObjectMeta {
                namespace: Some("alice".into()),
                name: Some("web-1".into()),
                uid: Some("u1".into()),
                labels: Some(Labels::from([("role".into(), "frontend".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node1".into()),
                host_network: Some(true),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.10.1.5".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "10.10.1.5".into(),
                    },
                    PodIP {
                        ip: "fd00::5".into(),
                    },
                ]),
                ..PodStatus::default()
            }),
        };
        let info = PodInfo::from(&pod);
        assert_eq!(info.namespace, "alice");
        assert_eq!(info.name, "web-1");
        assert_eq!(info.uid, "u1");
        assert_eq!(info.labels["role"], "frontend");
        assert_eq!(info.node_name.as_deref(), Some("node1"));
        assert!(info.host_network);
        assert_eq!(info.pod_ips, ["10.10.1.5", "fd00::5"]);
        // A pod with neither spec nor status: all defaults.
        let bare = PodInfo::from(&Pod::default());
        assert_eq!(bare, PodInfo::default());
    }

    #[test]
    fn addresses_prefer_pod_ips_and_count_what_is_ignored() {
        let mut pod = PodInfo {
            pod_ips: vec![
                "10.0.0.1".into(),
                "fd00::1".into(),
                "10.0.0.1".into(),
                "bogus".into(),
                "10.0.0.2".into(),
            ],
            pod_ip: Some("10.9.9.9".into()),
            ..PodInfo::default()
        };
        assert_eq!(
            pod.addresses(),
            PodAddresses {
                ipv4: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
                ipv6: 1,
                invalid: 1,
            }
        );
        pod.pod_ips.clear();
        assert_eq!(pod.addresses().ipv4, [Ipv4Addr::new(10, 9, 9, 9)]);
        pod.pod_ip = None;
        assert_eq!(pod.addresses(), PodAddresses::default());
    }

    #[test]
    fn terminal_phases() {
        let phase = |p: &str| PodInfo {
            phase: Some(p.into()),
            ..PodInfo::default()
        };
        assert!(phase("Succeeded").is_terminal());
        assert!(phase("Failed").is_terminal());
        assert!(!phase("Running").is_terminal());
        assert!(!phase("Pending").is_terminal());
        assert!(!PodInfo::default().is_terminal());
    }

    #[test]
    fn policies_and_gateways_convert_and_age_sorts_missing_timestamps_last() {
        let created: Timestamp = "2024-01-01T00:00:00Z".parse().expect("timestamp");
        let mut policy = EgressNATPolicy::new("p", EgressNATPolicySpec::default());
        policy.metadata.uid = Some("u".into());
        policy.metadata.generation = Some(4);
        policy.metadata.creation_timestamp = Some(Time(created));
        let object = PolicyObject::from(&policy);
        assert_eq!(
            (object.name.as_str(), object.uid.as_str(), object.generation),
            ("p", "u", 4)
        );
        assert_eq!(object.created, Some(created));
        let young = PolicyObject {
            name: "a".into(),
            ..PolicyObject::default()
        };
        assert!(object.age_key() < young.age_key());

        let gw = EgressGateway::new(
            "default",
            egret_crd::EgressGatewaySpec {
                floating_ips: vec!["192.0.2.2".into(), "192.0.2.1".into(), "nope".into()],
            },
        );
        let other = GatewayObject {
            name: "b".into(),
            floating_ips: vec!["192.0.2.1".into()],
        };
        assert_eq!(
            known_gateways(&[GatewayObject::from(&gw), other]),
            [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)]
        );
    }
}
