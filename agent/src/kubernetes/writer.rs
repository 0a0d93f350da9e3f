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
use crate::cluster::{MasqConfig, PolicyOutcome, cluster_selection};

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
    let pods_task = tokio::spawn(wake_on_events(pod_stream, woken.clone()));
    let reports_task = tokio::spawn(wake_on_events(lease_stream, woken));
    Leading {
        pods,
        reports,
        tasks: vec![pods_task, reports_task],
        outcomes: Vec::new(),
    }
}

/// Drives a reflector's stream, waking the writer after each of its events.
async fn wake_on_events<S: futures::Stream>(stream: S, woken: Arc<Notify>) {
    let mut stream = std::pin::pin!(stream);
    while stream.next().await.is_some() {
        woken.notify_one();
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
    // The status does not depend on the masquerade config.
    let masquerade = MasqConfig::defaults(&crate::config::Masquerade::default());
    let view = watches.view(&leading.pods, masquerade);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::fixtures::{gateway_spec_rules, namespace, pod, policy_object, rule};
    use crate::kubernetes::watch::filled;
    use egret_crd::{EgressGateway, EgressGatewaySpec};
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use kube::api::PartialObjectMeta;

    type Handle = tower_test::mock::Handle<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >;

    /// node1's report: it runs generation 1 of `egress`.
    fn report() -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some("egret-node-node1".into()),
                annotations: Some(BTreeMap::from([(
                    crate::cluster::status::REPORT_ANNOTATION.to_owned(),
                    r#"{"v":1,"p":{"egress":1}}"#.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("node1".into()),
                lease_duration_seconds: Some(40),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        }
    }

    /// `egress` (the older) and `late` (the same egress IP), as the store has them.
    fn policies(statuses: &BTreeMap<String, serde_json::Value>) -> Vec<EgressNATPolicy> {
        ["egress", "late"]
            .iter()
            .enumerate()
            .map(|(age, name)| {
                let rules = vec![rule(
                    Some(&[("user", "alice")]),
                    Some(&[("role", "frontend")]),
                )];
                let mut policy = policy_object(
                    name,
                    1_700_000_000 + age as i64,
                    gateway_spec_rules("192.168.1.100", &["8.8.8.0/24"], rules),
                );
                policy.status = statuses
                    .get(*name)
                    .map(|s| serde_json::from_value(s.clone()).expect("a status"));
                policy
            })
            .collect()
    }

    fn watches(statuses: &BTreeMap<String, serde_json::Value>) -> Watches {
        let alice = namespace("alice", &[("user", "alice")]);
        let meta = PartialObjectMeta::<k8s_openapi::api::core::v1::Namespace> {
            metadata: alice.metadata,
            ..PartialObjectMeta::default()
        };
        Watches::fixed(
            Vec::new(),
            vec![meta],
            policies(statuses),
            vec![EgressGateway::new(
                "default",
                EgressGatewaySpec {
                    floating_ips: vec!["192.168.1.100".into()],
                },
            )],
        )
    }

    fn leading() -> Leading {
        Leading {
            pods: filled(vec![pod(
                "alice",
                "a1",
                "node1",
                "10.10.1.5",
                &[("role", "frontend")],
            )]),
            reports: filled(vec![report()]),
            tasks: Vec::new(),
            outcomes: Vec::new(),
        }
    }

    /// Answers the next request with its own body (as a server echoes an applied object)
    /// and returns its method, path, query and body.
    async fn answer(handle: &mut Handle) -> (String, String, String, serde_json::Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.expect("a body");
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        send.send_response(
            http::Response::builder()
                .status(if method == "POST" { 201 } else { 200 })
                .body(kube::client::Body::from(bytes.to_vec()))
                .expect("a response"),
        );
        (method, path, query, body)
    }

    #[tokio::test]
    async fn a_round_writes_each_changed_status_once_with_an_event_per_rejection_then_nothing() {
        let (service, mut handle) = tower_test::mock::pair();
        let client = Client::new(service, "default");
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "egret-agent".into(),
                instance: Some("node1".into()),
            },
        );
        let server = tokio::spawn(async move {
            let mut statuses = BTreeMap::new();
            for name in ["egress", "late"] {
                let (method, path, query, body) = answer(&mut handle).await;
                assert_eq!(method, "PATCH");
                assert_eq!(
                    path,
                    format!("/apis/egret.dev/v1alpha1/egressnatpolicies/{name}/status")
                );
                assert!(
                    query.contains("fieldManager=egret-agent") && query.contains("force=true"),
                    "{query}"
                );
                assert_eq!(body["kind"], "EgressNATPolicy");
                statuses.insert(name.to_owned(), body["status"].clone());
            }
            let (method, path, _, event) = answer(&mut handle).await;
            assert_eq!(method, "POST");
            assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/default/events");
            assert_eq!(event["reason"], "Conflict");
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["regarding"]["name"], "late");
            (statuses, handle)
        });
        let mut leading = leading();
        write_round(&client, &recorder, &watches(&BTreeMap::new()), &mut leading).await;
        let (statuses, mut handle) = server.await.expect("the server side checked the requests");

        let egress = &statuses["egress"];
        let condition = |status: &serde_json::Value, type_: &str| {
            status["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["type"] == type_))
                .map(|c| {
                    (
                        c["status"].as_str().unwrap_or_default().to_owned(),
                        c["reason"].as_str().unwrap_or_default().to_owned(),
                    )
                })
        };
        assert_eq!(
            condition(egress, "Accepted"),
            Some(("True".into(), "Accepted".into()))
        );
        assert_eq!(
            condition(egress, "Programmed"),
            Some(("True".into(), "Programmed".into()))
        );
        assert_eq!(egress["selectedPods"], 1);
        assert_eq!(
            condition(&statuses["late"], "Accepted"),
            Some(("False".into(), "Conflict".into()))
        );

        // The store now holds what was written: the next round writes nothing and emits
        // no event again.
        write_round(&client, &recorder, &watches(&statuses), &mut leading).await;
        drop((client, recorder));
        assert!(
            handle.next_request().await.is_none(),
            "a steady cluster was written to"
        );
    }
}
