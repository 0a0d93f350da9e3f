//! egret's Kubernetes resources, group `egret.dev`, version `v1alpha1`, both cluster-scoped:
//!
//! - [`EgressGateway`]: the floating IPs policies may use (`spec.floatingIPs`), and in its
//!   status which gateway is up (`status.nodes`) and which holds each address
//!   (`status.floatingIPs`), the shape of the seed's AnthosNetworkGateway.
//! - [`EgressNATPolicy`]: either a gateway policy (seed 004: `egress` rules selecting pods,
//!   `destinationCIDRs`, `excludedCIDRs`, `egressSourceIP`) or, with `action: NoSNAT`, a list of
//!   destinations pods reach with their own address (seed 001).
//!
//! The types are the source: [`manifests`] renders the CRD YAML committed under
//! `packaging/kubernetes/crds.yaml`, and a test fails when the two drift. The schema holds
//! what a schema can: required fields, IPv4 and CIDR shapes, the two policy forms exclusive
//! (CEL rules), printer columns and short names. What it cannot hold (a CIDR such as
//! `300.1.2.0/24`) the agent reports as `Invalid`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "egret.dev";
/// The API version of both kinds.
pub const VERSION: &str = "v1alpha1";

/// An IPv4 address in dotted-quad form; the agent parses it again.
const IPV4: &str = r"^(([0-9]{1,3})\.){3}[0-9]{1,3}$";
/// An IPv4 prefix `a.b.c.d/n`; the agent parses it again (an octet over 255 is `Invalid`).
const CIDR: &str = r"^(([0-9]{1,3})\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$";

/// The gateways' floating IPs, and in the status who is up and who holds which address.
// Each printcolumn(...) repeats `type_ = ...`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[kube(
    group = "egret.dev",
    version = "v1alpha1",
    kind = "EgressGateway",
    plural = "egressgateways",
    shortname = "egw",
    category = "egret",
    status = "EgressGatewayStatus",
    derive = "PartialEq",
    doc = "The egress gateways' floating IPs, and which gateway holds each",
    printcolumn(
        name = "FLOATING IPS",
        type_ = "string",
        json_path = ".spec.floatingIPs"
    ),
    printcolumn(name = "HOLDERS", type_ = "string", json_path = ".status.floatingIPs"),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct EgressGatewaySpec {
    /// The egress IPs policies may name in `egressSourceIP`: the gateways' `[[floating_ip]]`
    /// addresses.
    #[serde(rename = "floatingIPs")]
    #[schemars(length(min = 1, max = 256), inner(regex(pattern = IPV4)))]
    pub floating_ips: Vec<String>,
}

/// Written by the gateways, each under its own field manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct EgressGatewayStatus {
    /// Each gateway (`[gateway].name`): `Up` while it runs, `Down` after a clean stop or once
    /// a peer stopped hearing it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, GatewayState>,
    /// Each floating IP: the name of the gateway that holds it.
    #[serde(
        rename = "floatingIPs",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub floating_ips: BTreeMap<String, String>,
}

/// Whether a gateway runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GatewayState {
    /// Running, and heard by its peers.
    Up,
    /// Stopped cleanly, or silent to a peer for 3 s.
    Down,
}

/// Which pods leave through which egress IP toward which destinations; or, with
/// `action: NoSNAT`, which destinations pods reach with their own address.
// Each printcolumn(...) repeats `type_ = ...`, which clippy takes for a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "egret.dev",
    version = "v1alpha1",
    kind = "EgressNATPolicy",
    plural = "egressnatpolicies",
    shortname = "enp",
    category = "egret",
    status = "EgressNATPolicyStatus",
    derive = "PartialEq",
    doc = "Pods selected by namespace and pod labels leave through a gateway's egress IP; or, with action NoSNAT, keep their own address toward some destinations",
    printcolumn(
        name = "EGRESS IP",
        type_ = "string",
        json_path = ".spec.egressSourceIP"
    ),
    printcolumn(
        name = "SELECTED",
        type_ = "integer",
        json_path = ".status.selectedPods"
    ),
    printcolumn(
        name = "ACCEPTED",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "PROGRAMMED",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Programmed\")].status"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "ACTION",
        type_ = "string",
        json_path = ".spec.action",
        priority = "1"
    )
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.action) || (has(self.egress) && has(self.destinationCIDRs) && has(self.egressSourceIP) && !has(self.destinations))",
        "message": "a gateway policy needs egress, destinationCIDRs and egressSourceIP, and has no destinations"
    },
    {
        "rule": "!has(self.action) || (has(self.destinations) && !has(self.egress) && !has(self.destinationCIDRs) && !has(self.excludedCIDRs) && !has(self.egressSourceIP))",
        "message": "a NoSNAT policy has destinations only"
    }
]))]
pub struct EgressNATPolicySpec {
    /// `NoSNAT`: the pods keep their own source address toward `destinations`. Absent: a
    /// gateway policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<PolicyAction>,
    /// Which pods: a pod is selected when any rule matches it (a rule matches when both its
    /// selectors do; an absent selector matches everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub egress: Option<Vec<EgressRule>>,
    /// Where the selected pods' traffic goes through the gateway.
    #[serde(
        rename = "destinationCIDRs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1), inner(regex(pattern = CIDR)))]
    pub destination_cidrs: Option<Vec<String>>,
    /// Destinations taken out of `destinationCIDRs`.
    #[serde(
        rename = "excludedCIDRs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(inner(regex(pattern = CIDR)))]
    pub excluded_cidrs: Option<Vec<String>>,
    /// The floating IP the selected traffic leaves with: one of an EgressGateway's
    /// `spec.floatingIPs`.
    #[serde(
        rename = "egressSourceIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(regex(pattern = IPV4))]
    pub egress_source_ip: Option<String>,
    /// With `action: NoSNAT`: the destinations pods reach with their own address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub destinations: Option<Vec<Destination>>,
}

/// The other form of a policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PolicyAction {
    /// Pods keep their own source address toward the policy's destinations (merged into the
    /// node masquerade exceptions).
    NoSNAT,
}

/// One rule of a gateway policy: pods in the namespaces the first selector matches, with the
/// labels the second one matches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Namespaces by their labels; absent: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Pods by their labels; absent: every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
}

/// A destination of a NoSNAT policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Destination {
    /// An IPv4 prefix.
    #[schemars(regex(pattern = CIDR))]
    pub cidr: String,
}

/// What the cluster made of a policy; written by one agent at a time (the holder of the
/// status Lease).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressNATPolicyStatus {
    /// `Accepted` (False with reason `UnknownEgressIP`, `Conflict` or `Invalid`) and
    /// `Programmed` (True once every node with selected pods runs this generation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The pods the policy selects across the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_pods: Option<u32>,
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD manifests, as committed in `packaging/kubernetes/crds.yaml`: a YAML stream with
/// both definitions.
///
/// # Errors
///
/// When a definition does not serialize (not with these types).
pub fn manifests() -> Result<String, serde_yaml_ng::Error> {
    let mut out = String::from(
        "# Generated from crd/src/lib.rs by `EGRET_BLESS=1 cargo test -p egret-crd`; do not edit.\n",
    );
    for crd in [EgressGateway::crd(), EgressNATPolicy::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
