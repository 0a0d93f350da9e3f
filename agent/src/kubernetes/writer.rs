//! The policies' status and Warning events, written by one agent at a time.
//!
//! Every agent runs [`run`]; only the holder of the writer Lease ([`lease::elect`]) writes.
//! While it holds it, it watches every pod of the cluster (the other agents watch only their
//! node's) and the nodes' report Leases, and after each change (coalesced over
//! [`COALESCE`]) it computes every policy's desired status with the pure side
//! ([`cluster_selection`], [`desired_statuses`], [`next_status`]) and patches only the
//! statuses that differ: a steady cluster costs no writes. Events come from
//! [`warning_events`], once per policy, generation and reason, through kube-runtime's
//! recorder. Losing the Lease (or the API) stops the cluster-wide watches at once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use egret_crd::EgressNATPolicy;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use tokio::sync::Notify;

use super::lease::{self, FIELD_MANAGER, NODE_REPORT, ROLE_LABEL};
use super::node::SharedClusterState;
use super::watch::Watches;
use crate::cluster::status::{NodeObservation, desired_statuses, next_status, warning_events};
use crate::cluster::{ClusterView, PodInfo, PolicyOutcome, cluster_selection};

/// Changes closer together than this make one round of status writes.
pub const COALESCE: Duration = Duration::from_millis(200);
/// A round even without changes: node reports go stale without an event.
pub const RESYNC: Duration = Duration::from_secs(10);

/// The cluster-wide watches the writer runs while it leads.
struct Leading {
    pods: Store<Pod>,
    reports: Store<Lease>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The verdicts events were last emitted for.
    outcomes: Vec<PolicyOutcome>,
}

impl Drop for Leading {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs for the life of the agent `me` (its node's name): elects in `namespace`, and
/// writes while elected.
pub async fn run(
    client: Client,
    watches: Watches,
    namespace: String,
    me: String,
    state: SharedClusterState,
) {
    let mut changed = watches.subscribe();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "egret-agent".into(),
            instance: Some(me.clone()),
        },
    );
    let woken = Arc::new(Notify::new());
    let mut observed = None;
    let mut leading: Option<Leading> = None;
    let mut elect = tokio::time::interval(lease::WRITER_RETRY);
    elect.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = elect.tick() => {
                let leads = match lease::elect(&client, &namespace, &me, &mut observed).await {
                    Ok(leads) => leads,
                    Err(err) => {
                        tracing::warn!(error = %err, "status writer Lease");
                        false
                    }
                };
                match (leads, leading.is_some()) {
                    (true, false) => {
                        tracing::info!("this agent writes the policies' status now");
                        leading = Some(lead(&client, &namespace, woken.clone()));
                    }
                    (false, true) => {
                        tracing::info!("another agent writes the policies' status now");
                        leading = None;
                    }
                    _ => {}
                }
                state.lock().unwrap_or_else(|e| e.into_inner()).status_writer = leads;
                continue;
            }
            _ = woken.notified() => tokio::time::sleep(COALESCE).await,
            _ = changed.changed() => tokio::time::sleep(COALESCE).await,
            _ = resync.tick() => {}
        }
        let Some(leading) = leading.as_mut() else {
            continue;
        };
        if leading.pods.wait_until_ready().await.is_err()
            || leading.reports.wait_until_ready().await.is_err()
        {
            continue;
        }
        write_round(&client, &recorder, &watches, leading).await;
    }
}

/// Starts the cluster-wide pod watch and the report Lease watch.
fn lead(client: &Client, namespace: &str, woken: Arc<Notify>) -> Leading {
    let (pods, pods_writer) = reflector::store();
    let (reports, reports_writer) = reflector::store();
    let config = watcher::Config::default().any_semantic();
    let pod_stream = reflector::reflector(
        pods_writer,
        watcher(Api::<Pod>::all(client.clone()), config.clone()).default_backoff(),
    );
    let lease_stream = reflector::reflector(
        reports_writer,
        watcher(
            Api::<Lease>::namespaced(client.clone(), namespace),
            config.labels(&format!("{ROLE_LABEL}={NODE_REPORT}")),
        )
        .default_backoff(),
    );
    let pods_task = {
        let woken = woken.clone();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(pod_stream);
            while stream.next().await.is_some() {
                woken.notify_one();
            }
        })
    };
    let reports_task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(lease_stream);
        while stream.next().await.is_some() {
            woken.notify_one();
        }
    });
    Leading {
        pods,
        reports,
        tasks: vec![pods_task, reports_task],
        outcomes: Vec::new(),
    }
}

/// One round: every policy's status computed, the differing ones patched, events emitted.
async fn write_round(
    client: &Client,
    recorder: &Recorder,
    watches: &Watches,
    leading: &mut Leading,
) {
    let policies = watches.policies.state();
    let view = ClusterView {
        pods: leading
            .pods
            .state()
            .iter()
            .map(|p| PodInfo::from(p.as_ref()))
            .collect(),
        namespaces: watches.namespace_infos(),
        policies: policies
            .iter()
            .map(|p| crate::cluster::PolicyObject::from(p.as_ref()))
            .collect(),
        gateways: watches
            .gateways
            .state()
            .iter()
            .map(|g| crate::cluster::GatewayObject::from(g.as_ref()))
            .collect(),
        // The status does not depend on the masquerade config.
        masquerade: crate::cluster::MasqConfig::defaults(&crate::config::Masquerade::default()),
    };
    let selection = cluster_selection(&view);
    let now = Timestamp::now();
    let nodes: BTreeMap<String, NodeObservation> = leading
        .reports
        .state()
        .iter()
        .filter_map(|lease| {
            let node = lease.spec.as_ref()?.holder_identity.clone()?;
            let (observation, error) = NodeObservation::from_lease(lease, now);
            if let Some(error) = error {
                tracing::warn!(node = %node, error = %error, "a node's report does not parse; it counts as not reporting");
            }
            Some((node, observation))
        })
        .collect();
    let api: Api<EgressNATPolicy> = Api::all(client.clone());
    for (name, desired) in desired_statuses(&selection, &nodes) {
        let Some(policy) = policies
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        else {
            continue;
        };
        let Some(status) = next_status(policy.status.as_ref(), &desired, now) else {
            continue;
        };
        let patch = serde_json::json!({
            "apiVersion": "egret.dev/v1alpha1",
            "kind": "EgressNATPolicy",
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(err) = api
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await
        {
            tracing::warn!(policy = %name, error = %err, "could not write the policy's status; the next round retries");
        }
    }
    for event in warning_events(&leading.outcomes, &selection.outcomes) {
        let Some(policy) = policies
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(event.uid.as_str()))
        else {
            continue;
        };
        let published = recorder
            .publish(
                &Event {
                    type_: EventType::Warning,
                    reason: event.reason.as_str().to_owned(),
                    note: Some(event.message.clone()),
                    action: "Admit".into(),
                    secondary: None,
                },
                &policy.object_ref(&()),
            )
            .await;
        if let Err(err) = published {
            tracing::warn!(policy = %event.policy, error = %err, "could not publish an event");
        }
    }
    leading.outcomes = selection.outcomes;
}
