//! The agents' `coordination.k8s.io/v1` Leases, in `[kubernetes].namespace`:
//!
//! - **`egret-status-writer`**: who writes the policies' status and events. One agent at a
//!   time holds it, so a cluster change costs one status write, not one per node. The
//!   decision ([`decide`]) is pure and follows client-go's leader election: a lease is
//!   taken over only once its record has not changed for its whole duration *as observed
//!   here*, so clocks of different nodes are never compared; writes carry the
//!   resourceVersion read, so of two agents racing for it one gets `409 Conflict` and
//!   follows.
//! - **`egret-node-<node>`**, one per node, labelled `egret.dev/role=node-report`: what
//!   the node has programmed, in the annotation [`REPORT_ANNOTATION`], renewed every
//!   [`REPORT_RENEW`] so the writer can tell a live agent's report from a dead one's. Each
//!   agent server-side applies only its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// The status writer's Lease.
pub const WRITER_LEASE: &str = "egret-status-writer";
/// How long a writer's Lease lasts without renewal.
pub const WRITER_LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the writer renews it, and others check it.
pub const WRITER_RETRY: Duration = Duration::from_secs(3);
/// The label of the per-node report Leases.
pub const ROLE_LABEL: &str = "egret.dev/role";
/// Its value on per-node report Leases.
pub const NODE_REPORT: &str = "node-report";
/// The annotation holding a node's report.
pub use crate::cluster::status::REPORT_ANNOTATION;
/// How often a node's report Lease is renewed even when nothing changed.
pub const REPORT_RENEW: Duration = Duration::from_secs(10);
/// How long a node's report counts as live after its last renewal.
pub const REPORT_DURATION: Duration = Duration::from_secs(40);
/// The field manager of everything the agents apply.
pub const FIELD_MANAGER: &str = "egret-agent";

/// The name of `node`'s report Lease: `egret-node-<node>`, shortened with a hash of the
/// node name when that would exceed an object name's 253 characters.
pub fn report_lease_name(node: &str) -> String {
    let name = format!("egret-node-{node}");
    if name.len() <= 253 {
        return name;
    }
    let hash = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut cut = 253 - 11 - 17;
    while !node.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("egret-node-{}-{hash:016x}", &node[..cut])
}

/// What the Lease looked like when it last changed, as observed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Its resourceVersion.
    pub version: String,
    /// When this agent first saw that version.
    pub since: Instant,
}

/// What to do about the writer's Lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, holding it.
    Create,
    /// This agent holds it: renew it.
    Renew,
    /// Its holder let it lapse: take it over.
    TakeOver,
    /// Someone else holds it.
    Follow {
        /// Who.
        holder: String,
    },
}

impl Decision {
    /// Whether this agent writes after this decision (if its write succeeds).
    pub fn leads(&self) -> bool {
        !matches!(self, Decision::Follow { .. })
    }
}

/// The decision about the writer's Lease `lease` (as just read) for agent `me`, given
/// what was observed of it before; returns the new observation too.
pub fn decide(
    lease: Option<&Lease>,
    me: &str,
    observed: Option<&Observed>,
    now: Instant,
) -> (Decision, Option<Observed>) {
    let Some(lease) = lease else {
        return (Decision::Create, None);
    };
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    let observation = match observed {
        Some(o) if o.version == version => o.clone(),
        _ => Observed {
            version,
            since: now,
        },
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map_or(WRITER_LEASE_DURATION, Duration::from_secs);
    let decision = if holder == me {
        Decision::Renew
    } else if holder.is_empty() || now.duration_since(observation.since) >= duration {
        Decision::TakeOver
    } else {
        Decision::Follow { holder }
    };
    (decision, Some(observation))
}

fn micro_now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// The writer's Lease as `me` holds it, based on `current` (whose resourceVersion makes
/// the replace conditional).
pub fn held(current: Option<&Lease>, me: &str, namespace: &str, taking_over: bool) -> Lease {
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(WRITER_LEASE.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: None,
    });
    let mut spec = lease.spec.take().unwrap_or_default();
    let now = micro_now();
    if taking_over || spec.holder_identity.as_deref() != Some(me) {
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(me.to_owned());
    spec.lease_duration_seconds = Some(WRITER_LEASE_DURATION.as_secs() as i32);
    spec.renew_time = Some(now);
    lease.spec = Some(spec);
    lease
}

/// Reads the writer's Lease and acts on it once; returns whether this agent leads now.
/// An API error counts as not leading: a writer that cannot reach the API must not
/// believe it still writes.
pub async fn elect(
    client: &Client,
    namespace: &str,
    me: &str,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let current = api.get_opt(WRITER_LEASE).await?;
    let (decision, observation) = decide(current.as_ref(), me, observed.as_ref(), Instant::now());
    *observed = observation;
    let lease = match &decision {
        Decision::Follow { .. } => return Ok(false),
        Decision::Create => {
            api.create(&PostParams::default(), &held(None, me, namespace, true))
                .await
        }
        Decision::Renew | Decision::TakeOver => {
            api.replace(
                WRITER_LEASE,
                &PostParams::default(),
                &held(
                    current.as_ref(),
                    me,
                    namespace,
                    decision == Decision::TakeOver,
                ),
            )
            .await
        }
    };
    match lease {
        Ok(lease) => {
            *observed = Some(Observed {
                version: lease.metadata.resource_version.unwrap_or_default(),
                since: Instant::now(),
            });
            Ok(true)
        }
        // Another agent wrote first: it leads.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// `node`'s report Lease with `report` in its annotation, renewed now.
pub fn report_lease(node: &str, namespace: &str, report: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(report_lease_name(node)),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                ROLE_LABEL.to_owned(),
                NODE_REPORT.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                REPORT_ANNOTATION.to_owned(),
                report.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_owned()),
            lease_duration_seconds: Some(REPORT_DURATION.as_secs() as i32),
            renew_time: Some(micro_now()),
            ..LeaseSpec::default()
        }),
    }
}

/// Applies `node`'s report Lease (server-side apply, creating it if needed).
pub async fn publish_report(
    client: &Client,
    namespace: &str,
    node: &str,
    report: &str,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let mut lease = report_lease(node, namespace, report);
    // Server-side apply needs the kind in the body.
    let mut body = serde_json::to_value(&lease).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "coordination.k8s.io/v1".into();
    body["kind"] = "Lease".into();
    let name = lease.metadata.name.take().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, version: &str, duration: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(WRITER_LEASE.into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(duration),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_missing_lease_is_created_and_an_own_one_renewed() {
        let now = Instant::now();
        assert_eq!(decide(None, "node1", None, now).0, Decision::Create);
        let (decision, observed) = decide(Some(&lease("node1", "7", 15)), "node1", None, now);
        assert_eq!(decision, Decision::Renew);
        assert_eq!(observed.map(|o| o.version), Some("7".into()));
    }

    #[test]
    fn another_holders_lease_is_taken_over_only_after_it_stood_still_for_its_duration() {
        let start = Instant::now();
        let other = lease("node2", "7", 15);
        let (decision, observed) = decide(Some(&other), "node1", None, start);
        assert_eq!(
            decision,
            Decision::Follow {
                holder: "node2".into()
            }
        );
        // Unchanged for 14 s: still followed.
        let later = start + Duration::from_secs(14);
        let (decision, observed) = decide(Some(&other), "node1", observed.as_ref(), later);
        assert_eq!(
            decision,
            Decision::Follow {
                holder: "node2".into()
            }
        );
        // Renewed meanwhile (a new resourceVersion): the clock starts again.
        let renewed = lease("node2", "8", 15);
        let at = start + Duration::from_secs(20);
        let (decision, observed) = decide(Some(&renewed), "node1", observed.as_ref(), at);
        assert_eq!(
            decision,
            Decision::Follow {
                holder: "node2".into()
            }
        );
        assert_eq!(observed.as_ref().map(|o| o.since), Some(at));
        // Then unchanged for its whole 15 s: taken over.
        let at = at + Duration::from_secs(15);
        assert_eq!(
            decide(Some(&renewed), "node1", observed.as_ref(), at).0,
            Decision::TakeOver
        );
    }

    #[test]
    fn a_lease_without_holder_is_taken_at_once() {
        assert_eq!(
            decide(Some(&lease("", "3", 15)), "node1", None, Instant::now()).0,
            Decision::TakeOver
        );
    }

    #[test]
    fn holding_sets_the_holder_and_counts_transitions() {
        let taken = held(Some(&lease("node2", "9", 15)), "node1", "egret", true);
        let spec = taken.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("node1"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("9"));
        let renewed = held(Some(&lease("node1", "10", 15)), "node1", "egret", false);
        assert_eq!(renewed.spec.and_then(|s| s.lease_transitions), None);
    }

    #[test]
    fn report_lease_names_fit_an_object_name() {
        assert_eq!(report_lease_name("node1"), "egret-node-node1");
        let long = "n".repeat(253);
        let name = report_lease_name(&long);
        assert!(name.len() <= 253, "{}", name.len());
        assert_ne!(name, report_lease_name(&"n".repeat(252)));
        let lease = report_lease("node1", "egret", "{}");
        assert_eq!(
            lease
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(ROLE_LABEL))
                .map(String::as_str),
            Some(NODE_REPORT)
        );
    }

    /// The mocked API server's side: the next request and a way to answer it.
    mod mock {
        use http::{Request, Response};
        use kube::client::Body;

        pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

        pub fn client() -> (kube::Client, Handle) {
            let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
            (kube::Client::new(service, "default"), handle)
        }

        /// Expects a request `method path`, answers `status` with `body`; returns the
        /// request's body.
        pub async fn expect(
            handle: &mut Handle,
            method: &str,
            path: &str,
            status: u16,
            body: serde_json::Value,
        ) -> serde_json::Value {
            let (request, send) = handle.next_request().await.expect("a request");
            assert_eq!(request.method().as_str(), method);
            assert_eq!(request.uri().path(), path);
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .expect("a readable body");
            let sent = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(body.to_string().into_bytes()))
                    .expect("a response"),
            );
            sent
        }

        pub fn not_found() -> serde_json::Value {
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "not found"})
        }

        pub fn conflict() -> serde_json::Value {
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "Conflict", "code": 409, "message": "the object has been modified"})
        }
    }

    const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/egret/leases";

    fn json(lease: &Lease) -> serde_json::Value {
        let mut value = serde_json::to_value(lease).expect("serializes");
        value["apiVersion"] = "coordination.k8s.io/v1".into();
        value["kind"] = "Lease".into();
        value
    }

    #[tokio::test]
    async fn the_first_agent_creates_the_writer_lease_and_leads() {
        let (client, mut api) = mock::client();
        let server = tokio::spawn(async move {
            let one = format!("{PATH}/{WRITER_LEASE}");
            mock::expect(&mut api, "GET", &one, 404, mock::not_found()).await;
            let stored = json(&lease("node1", "1", 15));
            let created = mock::expect(&mut api, "POST", PATH, 201, stored).await;
            assert_eq!(created["spec"]["holderIdentity"], "node1");
            assert_eq!(created["spec"]["leaseDurationSeconds"], 15);
            assert_eq!(created["metadata"]["name"], WRITER_LEASE);
        });
        let mut observed = None;
        let leads = elect(&client, "egret", "node1", &mut observed)
            .await
            .expect("no error");
        server.await.expect("the server side checked the requests");
        assert!(leads);
        assert_eq!(observed.map(|o| o.version), Some("1".into()));
    }

    #[tokio::test]
    async fn a_held_lease_is_followed_without_writing() {
        let (client, mut api) = mock::client();
        let other = json(&lease("node2", "5", 15));
        let server = tokio::spawn(async move {
            mock::expect(
                &mut api,
                "GET",
                &format!("{PATH}/{WRITER_LEASE}"),
                200,
                other,
            )
            .await;
            // No second request: the handle is dropped with none pending.
            api
        });
        let mut observed = None;
        let leads = elect(&client, "egret", "node1", &mut observed)
            .await
            .expect("no error");
        assert!(!leads);
        assert_eq!(observed.map(|o| o.version), Some("5".into()));
        let mut api = server.await.expect("joined");
        drop(client);
        assert!(api.next_request().await.is_none(), "the follower wrote");
    }

    #[tokio::test]
    async fn renewing_writes_with_the_version_read_and_a_conflict_means_following() {
        let (client, mut api) = mock::client();
        let own = json(&lease("node1", "5", 15));
        let server = tokio::spawn(async move {
            let one = format!("{PATH}/{WRITER_LEASE}");
            mock::expect(&mut api, "GET", &one, 200, own).await;
            let sent = mock::expect(&mut api, "PUT", &one, 409, mock::conflict()).await;
            assert_eq!(
                sent["metadata"]["resourceVersion"], "5",
                "a conditional replace"
            );
            assert_eq!(sent["spec"]["holderIdentity"], "node1");
        });
        let mut observed = None;
        let leads = elect(&client, "egret", "node1", &mut observed)
            .await
            .expect("no error");
        server.await.expect("the server side checked the requests");
        assert!(!leads, "another agent wrote first");
    }

    #[tokio::test]
    async fn a_node_report_is_applied_server_side_under_the_agents_field_manager() {
        let (client, mut api) = mock::client();
        let server = tokio::spawn(async move {
            let (request, send) = api.next_request().await.expect("a request");
            assert_eq!(request.method().as_str(), "PATCH");
            assert_eq!(request.uri().path(), format!("{PATH}/egret-node-node1"));
            let query = request.uri().query().unwrap_or_default().to_owned();
            assert!(
                query.contains("fieldManager=egret-agent") && query.contains("force=true"),
                "{query}"
            );
            assert_eq!(
                request.headers()["content-type"],
                "application/apply-patch+yaml"
            );
            let body = request.into_body().collect_bytes().await.expect("body");
            let sent: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(sent["kind"], "Lease");
            assert_eq!(
                sent["metadata"]["annotations"][REPORT_ANNOTATION],
                "{\"p\":3}"
            );
            assert_eq!(sent["spec"]["holderIdentity"], "node1");
            send.send_response(
                http::Response::builder()
                    .status(200)
                    .body(kube::client::Body::from(sent.to_string().into_bytes()))
                    .expect("response"),
            );
        });
        publish_report(&client, "egret", "node1", "{\"p\":3}")
            .await
            .expect("applied");
        server.await.expect("the server side checked the request");
    }
}
