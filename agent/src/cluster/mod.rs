//! Kubernetes mode's decisions, pure: no I/O, no clock, no kube client. The shell (watchers,
//! reflectors, the status writer's Lease, the event recorder) converts what it watches into
//! a [`ClusterView`] and calls these functions; everything they decide runs in plain
//! `cargo test`.
//!
//! - [`selector`]: label selectors, compiled and validated once, with Kubernetes semantics.
//! - [`view`]: the snapshot types, converted from `k8s_openapi` and `egret_crd` objects.
//! - [`admission`]: which policies are accepted (`Invalid`, `UnknownEgressIP`, `Conflict`
//!   otherwise), from the policies and gateways alone, so every node agrees.
//! - [`selection`]: which pods each accepted gateway policy selects, fast enough for the
//!   whole cluster, held to a brute-force reference.
//! - [`desired`]: a node's desired state (the input of `policy::compile`, its selected pods,
//!   counters, masquerade exceptions) and the cluster-wide selection for the status writer.
//! - [`masq`]: the ip-masq-agent ConfigMap with upstream's semantics, and the merge with the
//!   NoSNAT policies.
//! - [`status`]: node reports, each policy's desired status and conditions, whether a write
//!   is due, and the Warning events.
//!
//! Only `egret_crd` and `k8s_openapi` types cross the module's edges; nothing here imports
//! `kube`.
//!
//! # How the shell uses it
//!
//! - **Every agent**, on any change of its stores (debounced): build a [`ClusterView`] (its
//!   node's pods, all namespaces, policies and gateways, and [`MasqConfig::from_config_map`]
//!   over `[masquerade]`, keeping the previous config on an error), call [`node_desired`],
//!   hand `policies` and `known_gateways` to `policy::compile`, apply the program and the
//!   masquerade exceptions, then store [`NodeReport::from_desired`] in its Lease's
//!   [`status::REPORT_ANNOTATION`]. Nothing here removes state on its own: an API outage
//!   leaves the stores, and so the desired state, as they were.
//! - **The status writer** (the Lease holder), with all pods: [`cluster_selection`], the
//!   nodes' [`NodeObservation::from_lease`], [`desired_statuses`], then per policy
//!   [`next_status`] against the object's current status (write only on `Some`), and
//!   [`warning_events`] between the previous and the new outcomes.
//!
//! # Decisions where PRODUCT.md is silent
//!
//! - A CIDR with host bits set (`10.0.0.1/8`) is `Invalid`, not masked.
//! - With no `EgressGateway`, every egress IP is unknown (`UnknownEgressIP`).
//! - A missing `creationTimestamp` counts as the newest policy.
//! - A pod whose namespace is not in the view matches only rules whose namespace selector is
//!   absent or empty (`{}`): its labels are unknown, so `NotIn`/`DoesNotExist` do not guess.
//! - A rejected policy selects no pods (`selectedPods: 0`): it steers no traffic.
//! - `Programmed` is True for a policy selecting no pods, and for an accepted NoSNAT policy.

pub mod admission;
pub mod cni;
pub mod desired;
pub mod masq;
pub mod selection;
pub mod selector;
pub mod status;
pub mod view;

#[doc(hidden)]
pub mod fixtures;
#[cfg(test)]
mod properties;

pub use admission::{Admission, Outcome, Reason, Rejection, admit};
pub use desired::{
    ClusterSelection, LocalPod, LocalSelection, NodeDesired, PolicyOutcome, PolicySelection,
    cluster_selection, node_desired,
};
pub use masq::{MasqConfig, MasqConfigError, MasqueradeExceptions};
pub use selection::Counters;
pub use selector::{Labels, Selector, SelectorError};
pub use status::{
    DesiredStatus, NodeObservation, NodeReport, WarningEvent, desired_statuses, next_status,
    warning_events,
};
pub use view::{ClusterView, GatewayObject, NamespaceInfo, PodInfo, PolicyObject};
