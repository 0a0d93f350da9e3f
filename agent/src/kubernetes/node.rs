//! The agent's own node in Kubernetes mode: snapshots of the watches in, the node programmed,
//! its report out.
//!
//! [`Follower::reconcile`] reads every store, makes a [`ClusterView`], asks the pure side for
//! this node's desired state ([`node_desired`]) and programs it ([`Node::program`], which
//! changes only what differs). Once the node runs a state, the node's report (the policies
//! it programmed, with their generations) goes to the report Lease, latest value only, on a
//! task of its own: the data path never waits on the API.
//!
//! The ip-masq-agent ConfigMap is parsed here; a config that does not parse keeps the last
//! good one (upstream's rule) and is logged once per change.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::lease;
use super::watch::{WatchHealth, Watches};
use crate::api::{SharedRecorded, Trigger};
use crate::cluster::cni::{AddOutcome, CniPod, CniPods, add_outcome, check_entries};
use crate::cluster::{ClusterView, MasqConfig, NodeDesired, NodeReport, Outcome, node_desired};
use crate::node::{Desired, Node, NodeError};

/// What `egret-agent status` shows of the cluster side, written beside the node's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Each policy's verdict here: `accepted`, or the rejection's reason and message.
    pub policies: Vec<ClusterPolicy>,
    /// The node's pods each accepted policy selects (`namespace/name`).
    pub selected: Vec<(String, Vec<String>)>,
    /// The node's pods set aside: host network, terminal, without an IPv4 address.
    pub host_network_pods: u32,
    /// Pods in a terminal phase (their addresses get reused).
    pub terminal_pods: u32,
    /// Pods without an IPv4 address yet.
    pub pods_without_ipv4: u32,
    /// Each watch's health.
    pub watches: Vec<WatchHealth>,
    /// The ip-masq-agent ConfigMap's last error (the previous config stays).
    pub masquerade_config_error: Option<String>,
    /// Seconds since the epoch of the last cluster state programmed.
    pub programmed_at: Option<u64>,
    /// How long the last reconcile took, from the snapshot to the last map write.
    pub last_reconcile_ms: Option<f64>,
    /// This agent writes the policies' status (holds the writer Lease).
    pub status_writer: bool,
}

/// One policy's verdict, as the node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPolicy {
    /// Its name.
    pub name: String,
    /// Its generation.
    pub generation: i64,
    /// `Accepted`, or the rejection's reason.
    pub verdict: String,
    /// Why it was rejected.
    pub message: Option<String>,
}

/// Shared with the status writer and `status`.
pub type SharedClusterState = Arc<Mutex<ClusterState>>;

/// The node following the cluster.
pub struct Follower {
    node: Node,
    watches: Watches,
    /// The ConfigMap text last parsed (`Some(None)`: no ConfigMap), and the config in use:
    /// the last that parsed, or the defaults.
    masquerade: (Option<Option<String>>, MasqConfig),
    reports: watch::Sender<Option<String>>,
    state: SharedClusterState,
    /// When the node was last reconciled, and how often it must be at least (the
    /// ip-masq-agent config's `resyncInterval`: the masquerade table is written again, as
    /// upstream rewrites its rules, so a table someone changed is repaired).
    reconciled: Option<(Instant, std::time::Duration)>,
    /// Pods CNI ADD announced before the API shows their addresses.
    cni: CniPods,
    /// The desired state last programmed: what ADD and CHECK are answered from.
    programmed: Option<NodeDesired>,
    /// The programming latency of API events goes here (`/metrics`).
    recorded: SharedRecorded,
}

impl Follower {
    /// Follows the cluster through `watches` on `node`; reports go out with `client`.
    pub fn new(
        node: Node,
        watches: Watches,
        client: &Client,
        state: SharedClusterState,
        recorded: SharedRecorded,
    ) -> Self {
        let config = node.config().clone();
        let (reports, receiver) = watch::channel(None);
        tokio::spawn(publish_reports(
            client.clone(),
            config.kubernetes.namespace.clone(),
            config.agent.node_name.clone(),
            receiver,
        ));
        Follower {
            masquerade: (None, MasqConfig::defaults(&config.masquerade)),
            node,
            watches,
            reports,
            state,
            reconciled: None,
            cni: CniPods::default(),
            programmed: None,
            recorded,
        }
    }

    /// Whether the resync interval has passed since the last reconcile.
    pub fn resync_due(&self) -> bool {
        self.reconciled
            .is_some_and(|(at, every)| at.elapsed() >= every)
    }

    /// The node.
    pub fn node(&mut self) -> &mut Node {
        &mut self.node
    }

    /// The snapshot of every store, as the pure side takes it.
    pub fn view(&mut self) -> ClusterView {
        let masquerade = self.masquerade_config();
        self.watches.view(&self.watches.pods, masquerade)
    }

    /// The ip-masq-agent config: the ConfigMap's when it parses, else the last good one.
    fn masquerade_config(&mut self) -> MasqConfig {
        let maps = self.watches.masquerade.state();
        let map: Option<&ConfigMap> = maps.first().map(AsRef::as_ref);
        let text = map
            .and_then(|m| m.data.as_ref())
            .and_then(|d| d.get("config"))
            .cloned();
        if self.masquerade.0.as_ref() == Some(&text) {
            return self.masquerade.1.clone();
        }
        match MasqConfig::from_config_map(map, &self.node.config().masquerade) {
            Ok(parsed) => {
                for key in &parsed.ignored_keys {
                    tracing::warn!(key = %key, "ip-masq-agent ConfigMap: key ignored");
                }
                tracing::info!(
                    configmap = text.is_some(),
                    non_masquerade = ?parsed.config.non_masquerade_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    masq_link_local = parsed.config.masq_link_local,
                    "masquerade config"
                );
                self.masquerade = (Some(text), parsed.config);
                self.set_state(|s| s.masquerade_config_error = None);
            }
            Err(err) => {
                tracing::error!(error = %err, "the ip-masq-agent ConfigMap does not parse; the previous masquerade config stays");
                self.masquerade.0 = Some(text);
                let message = err.to_string();
                self.set_state(|s| s.masquerade_config_error = Some(message));
            }
        }
        self.masquerade.1.clone()
    }

    fn set_state(&self, change: impl FnOnce(&mut ClusterState)) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut state);
    }

    /// Brings the node to the cluster's current state, and publishes what it programmed.
    pub fn reconcile(&mut self) -> Result<(), NodeError> {
        let started = Instant::now();
        // The ip-masq-agent config's resyncInterval: write the masquerade table again too.
        if self.resync_due() {
            self.node.rewrite_masquerade();
        }
        // Taken before the stores are read: an event after this is programmed next time.
        let event = self.watches.take_pending();
        let mut view = self.view();
        self.cni.prune(&view);
        self.cni.overlay(&mut view);
        let node_name = self.node.config().agent.node_name.clone();
        let desired = node_desired(&view, &node_name);
        let pod_addresses = desired
            .selections
            .iter()
            .flat_map(|s| s.pods.iter().flat_map(|p| p.ips.iter().copied()))
            .collect();
        let data_path = Desired {
            policies: desired.policies.clone(),
            known_gateways: desired.known_gateways.clone(),
            non_masquerade: desired.masquerade.non_masquerade.clone(),
            masquerade_link_local: desired.masquerade.masquerade_link_local,
            pod_addresses: Some(pod_addresses),
        };
        // Most events change nothing the node programs (a pod no policy selects starts, a
        // label no selector reads changes): then the maps and the table stay untouched, and
        // an ADD of such a pod is answered at once. The interfaces are looked at all the
        // same: a selected pod back with its address on a new veth needs the classifier there.
        if self.node.holds(&data_path) {
            self.node.tick()?;
        } else {
            self.node.program(data_path)?;
        }
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        if let Some(event) = event {
            crate::api::record(&self.recorded, |r| {
                r.programmed(Trigger::Api, event.elapsed());
            });
        }
        self.reconciled = Some((Instant::now(), desired.masquerade.resync_interval));
        let report = NodeReport::from_desired(&desired).to_json();
        self.reports.send_if_modified(|current| {
            let changed = current.as_deref() != Some(report.as_str());
            *current = Some(report);
            changed
        });
        let health = self.watches.health();
        self.set_state(|s| record(s, &desired, health, elapsed_ms));
        self.programmed = Some(desired);
        self.refresh_status()
    }

    /// Forgets the events so far: the first listing is not a change to measure.
    pub fn listed(&self) {
        self.watches.take_pending();
    }

    /// Whether this node's pod store has the pod (else an ADD reads it from the API).
    pub fn knows_pod(&self, namespace: &str, name: &str) -> bool {
        self.watches
            .pods
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
            .is_some()
    }

    /// A CNI ADD: the pod is recorded with its sandbox's addresses (and `pod.fetched`, its
    /// read from the API when the store lacks it), the node is programmed, and the answer
    /// says what became of the pod.
    pub fn cni_add(&mut self, pod: CniPod) -> Result<AddOutcome, NodeError> {
        let (namespace, name) = (pod.namespace.clone(), pod.name.clone());
        self.cni.add(pod);
        self.reconcile()?;
        Ok(self
            .programmed
            .as_ref()
            .map_or(AddOutcome::NotSelected, |d| {
                add_outcome(d, &namespace, &name)
            }))
    }

    /// A CNI DEL: the sandbox's announcement goes (the store's pod, while the API still
    /// has it, stays programmed).
    pub fn cni_del(
        &mut self,
        container_id: &str,
        namespace: &str,
        name: &str,
    ) -> Result<(), NodeError> {
        if self.cni.del(container_id, namespace, name) {
            self.reconcile()?;
        }
        Ok(())
    }

    /// A CNI CHECK: the pod's answer to an ADD now, from the state last programmed, held
    /// against the data path's entries for its addresses `ips`; `Ok(None)` before the first
    /// programming.
    ///
    /// # Errors
    ///
    /// When the data path disagrees, or cannot be read.
    pub fn cni_check(
        &self,
        namespace: &str,
        name: &str,
        ips: &[IpAddr],
    ) -> Result<Option<AddOutcome>, String> {
        let Some(desired) = &self.programmed else {
            return Ok(None);
        };
        let outcome = add_outcome(desired, namespace, name);
        let sources = self
            .node
            .source_entries()
            .map_err(|err| crate::error_chain(&err))?;
        check_entries(&outcome, ips, &sources)?;
        Ok(Some(outcome))
    }

    /// Writes the cluster side's state into the node's status file when it changed (the
    /// watches' health moves during an outage, when nothing is reconciled).
    pub fn refresh_status(&mut self) -> Result<(), NodeError> {
        let health = self.watches.health();
        let state = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.watches = health;
            state.clone()
        };
        self.node.set_cluster(state)
    }
}

fn record(state: &mut ClusterState, desired: &NodeDesired, watches: Vec<WatchHealth>, ms: f64) {
    state.policies = desired
        .outcomes
        .iter()
        .map(|o| match &o.outcome {
            Outcome::Accepted => ClusterPolicy {
                name: o.name.clone(),
                generation: o.generation,
                verdict: "Accepted".into(),
                message: None,
            },
            Outcome::Rejected(rejection) => ClusterPolicy {
                name: o.name.clone(),
                generation: o.generation,
                verdict: rejection.reason.as_str().into(),
                message: Some(rejection.message.clone()),
            },
        })
        .collect();
    state.selected = desired
        .selections
        .iter()
        .map(|s| {
            (
                s.policy.clone(),
                s.pods
                    .iter()
                    .map(|p| format!("{}/{}", p.namespace, p.name))
                    .collect(),
            )
        })
        .collect();
    state.host_network_pods = desired.counters.host_network;
    state.terminal_pods = desired.counters.terminal;
    state.pods_without_ipv4 = desired.counters.no_ipv4;
    state.watches = watches;
    state.programmed_at = Some(crate::node::now_secs());
    state.last_reconcile_ms = Some(ms);
}

/// Publishes the latest report to the node's Lease when it changes, and renews it every
/// [`lease::REPORT_RENEW`]; failures are retried at the next renewal (the API being away
/// changes nothing on the node).
async fn publish_reports(
    client: Client,
    namespace: String,
    node: String,
    mut reports: watch::Receiver<Option<String>>,
) {
    let mut renew = tokio::time::interval(lease::REPORT_RENEW);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = reports.changed() => if changed.is_err() { return },
            _ = renew.tick() => {}
        }
        let Some(report) = reports.borrow_and_update().clone() else {
            continue;
        };
        if let Err(err) = lease::publish_report(&client, &namespace, &node, &report).await {
            tracing::warn!(error = %err, "could not publish the node's report Lease; retrying");
        }
    }
}
