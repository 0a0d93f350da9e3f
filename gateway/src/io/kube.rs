//! The Kubernetes reporting shell: a task on the gateway's tokio runtime that carries the
//! [`Reporter`]'s fragments into the `EgressGateway` status with server-side apply.
//!
//! Every [`OBSERVE_EVERY`] it copies what it needs of the published snapshot (the lock is
//! taken with `try_lock` and held only for that copy, so the data path never waits on it),
//! hands it to the core, and applies what the core says is due:
//! `PATCH /apis/egret.dev/v1alpha1/egressgateways/<object>/status?&force=true&fieldManager=egret-gateway%2F<name>`
//! with an `application/apply-patch+yaml` body holding the fragment. One apply is in flight
//! at a time, bounded by [`APPLY_TIMEOUT`]; a failure is counted by reason and retried with
//! the core's backoff, always with the latest fragment. Nothing on the data path waits for
//! any of it: an API outage only makes the status late.
//!
//! On a clean stop ([`Reporting::stop`]) the task applies the core's last fragment
//! (`nodes.<name>: Down`) within a deadline, even if an apply was in flight (it is dropped),
//! and ends.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::time::{Duration, SystemTime};

use egret_crd::{EgressGateway, EgressGatewayStatus, GatewayState};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::report::{Observation, Reporter, field_manager};
use crate::status::{KubernetesStatus, SharedKubernetes, SharedSnapshot};

/// How often the published snapshot is read.
pub const OBSERVE_EVERY: Duration = Duration::from_millis(250);
/// The longest one apply may take before it counts as failed (`timeout`).
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why reporting failed; each apply error is counted under its label.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or does not lead to a cluster.
    #[error("cannot use the kubeconfig: {0}")]
    Client(String),
    #[error("the Kubernetes API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the Kubernetes API: {0}")]
    Transport(String),
    #[error("the EgressGateway {0:?} does not exist (create it, or set [kubernetes].gateway)")]
    NotFound(String),
    #[error("not allowed to patch egressgateways/status ({code}): {message}")]
    Forbidden { code: u16, message: String },
    #[error("the Kubernetes API refused the status ({code} {reason}): {message}")]
    Refused {
        code: u16,
        reason: String,
        message: String,
    },
    #[error("the Kubernetes API failed ({code}): {message}")]
    Server { code: u16, message: String },
}

impl KubeError {
    /// Every label, in a fixed order (the status lists them all from the start).
    pub const LABELS: [&'static str; 7] = [
        "client",
        "timeout",
        "transport",
        "not_found",
        "forbidden",
        "refused",
        "server",
    ];

    /// The label of `egret_gateway_kubernetes_apply_errors_total`.
    pub fn label(&self) -> &'static str {
        match self {
            KubeError::Client(_) => "client",
            KubeError::Timeout(_) => "timeout",
            KubeError::Transport(_) => "transport",
            KubeError::NotFound(_) => "not_found",
            KubeError::Forbidden { .. } => "forbidden",
            KubeError::Refused { .. } => "refused",
            KubeError::Server { .. } => "server",
        }
    }

    /// Classifies a client error about `object`.
    pub fn from_kube(error: kube::Error, object: &str) -> KubeError {
        match error {
            kube::Error::Api(status) => match status.code {
                404 => KubeError::NotFound(object.to_owned()),
                401 | 403 => KubeError::Forbidden {
                    code: status.code,
                    message: status.message,
                },
                code if code >= 500 => KubeError::Server {
                    code,
                    message: status.message,
                },
                code => KubeError::Refused {
                    code,
                    reason: status.reason,
                    message: status.message,
                },
            },
            other => KubeError::Transport(other.to_string()),
        }
    }
}

/// A client for the cluster of `kubeconfig`, or of `$KUBECONFIG` (a list of files, merged
/// as kubectl merges them) when `None`.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, KubeError> {
    let kc = match kubeconfig {
        Some(path) => Kubeconfig::read_from(path)
            .map_err(|e| KubeError::Client(format!("{}: {e}", path.display())))?,
        None => Kubeconfig::from_env()
            .map_err(|e| KubeError::Client(format!("$KUBECONFIG: {e}")))?
            .ok_or_else(|| KubeError::Client("$KUBECONFIG is not set".to_owned()))?,
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| KubeError::Client(e.to_string()))?;
    kube::Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))
}

/// The running reporter task.
pub struct Reporting {
    stop: oneshot::Sender<Instant>,
    /// Ends with whether the last fragment was applied.
    task: JoinHandle<bool>,
}

/// How long a gateway whose kubeconfig did not give a client waits before trying again.
pub const CLIENT_RETRY: Duration = Duration::from_secs(10);

/// Starts reporting as [`spawn`] does, with a client from `kubeconfig` (or `$KUBECONFIG`),
/// built in the task: a kubeconfig that does not work yet (an exec plugin, a file being
/// rolled out) is retried every [`CLIENT_RETRY`] and shows in the status meanwhile.
pub fn start(
    kubeconfig: Option<std::path::PathBuf>,
    object: &str,
    name: &str,
    snapshot: SharedSnapshot,
    status: SharedKubernetes,
) -> Reporting {
    let (stop, mut stopped) = oneshot::channel();
    let (object, name) = (object.to_owned(), name.to_owned());
    let task = tokio::spawn(async move {
        let client = loop {
            let attempt = tokio::time::timeout(APPLY_TIMEOUT, client(kubeconfig.as_deref()));
            let error = match attempt.await {
                Ok(Ok(client)) => break client,
                Ok(Err(error)) => error,
                Err(_) => KubeError::Client(format!(
                    "no client within {APPLY_TIMEOUT:?} (an exec plugin that hangs?)"
                )),
            };
            tracing::warn!(error = %error, "cannot report into Kubernetes; trying again");
            failed_client(&status, &object, &name, &error);
            tokio::select! {
                () = tokio::time::sleep(CLIENT_RETRY) => {}
                // Nothing was reported, so there is nothing to take back.
                _ = &mut stopped => return false,
            }
        };
        let shell = Shell::new(client, &object, &name, status);
        shell.run(snapshot, stopped).await
    });
    Reporting { stop, task }
}

/// Starts reporting gateway `name` into the EgressGateway `object` on the current tokio
/// runtime, reading `snapshot` and publishing its own state into `status`.
pub fn spawn(
    client: kube::Client,
    object: &str,
    name: &str,
    snapshot: SharedSnapshot,
    status: SharedKubernetes,
) -> Reporting {
    let (stop, stopped) = oneshot::channel();
    let shell = Shell::new(client, object, name, status);
    let task = tokio::spawn(shell.run(snapshot, stopped));
    Reporting { stop, task }
}

impl Reporting {
    /// Reports this gateway `Down` and ends the task, giving up after `deadline`. Returns
    /// whether the last apply succeeded in time.
    pub async fn stop(self, deadline: Duration) -> bool {
        let until = Instant::now() + deadline;
        if self.stop.send(until).is_err() {
            return false;
        }
        let mut task = self.task;
        match tokio::time::timeout_at(until + Duration::from_millis(50), &mut task).await {
            Ok(Ok(applied)) => applied,
            _ => {
                task.abort();
                false
            }
        }
    }
}

/// The shell's state: where to apply, as whom, and where to report how it goes.
struct Shell {
    api: Api<EgressGateway>,
    object: String,
    manager: String,
    name: String,
    status: SharedKubernetes,
}

impl Shell {
    /// The shell, its state published as "nothing applied yet".
    fn new(client: kube::Client, object: &str, name: &str, status: SharedKubernetes) -> Shell {
        let shell = Shell {
            api: Api::all(client),
            object: object.to_owned(),
            manager: field_manager(name),
            name: name.to_owned(),
            status,
        };
        shell.publish_start();
        shell
    }

    /// Reports until stopped; returns whether the last fragment was applied.
    async fn run(self, snapshot: SharedSnapshot, mut stopped: oneshot::Receiver<Instant>) -> bool {
        let mut reporter = Reporter::new(&self.name, Instant::now().into_std());
        let deadline = loop {
            let now = Instant::now();
            // Skipped while the data path writes it: the next round reads it.
            let observation = match snapshot.try_lock() {
                Ok(s) => Some(Observation::from_snapshot(&s)),
                Err(TryLockError::Poisoned(s)) => Some(Observation::from_snapshot(&s.into_inner())),
                Err(TryLockError::WouldBlock) => None,
            };
            if let Some(observation) = observation {
                reporter.observe(now.into_std(), &observation);
            }
            if let Some(fragment) = reporter.due(now.into_std()) {
                self.publish_pending(&reporter);
                let apply = tokio::time::timeout(APPLY_TIMEOUT, self.apply(&fragment));
                tokio::select! {
                    result = apply => {
                        let result = result.unwrap_or(Err(KubeError::Timeout(APPLY_TIMEOUT)));
                        self.outcome(&mut reporter, result);
                    }
                    deadline = &mut stopped => {
                        reporter.failed(Instant::now().into_std());
                        break deadline.ok();
                    }
                }
            }
            self.publish_pending(&reporter);
            let wake = reporter
                .poll_at()
                .map(Instant::from_std)
                .map_or(now + OBSERVE_EVERY, |at| at.min(now + OBSERVE_EVERY))
                .max(Instant::now());
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                deadline = &mut stopped => break deadline.ok(),
            }
        };
        let deadline = deadline.unwrap_or_else(Instant::now);
        reporter.stop(Instant::now().into_std());
        if let Some(fragment) = reporter.due(Instant::now().into_std()) {
            let result = tokio::time::timeout_at(deadline, self.apply(&fragment)).await;
            let result = result.unwrap_or(Err(KubeError::Timeout(
                deadline.saturating_duration_since(Instant::now()),
            )));
            self.outcome(&mut reporter, result);
        }
        self.publish_pending(&reporter);
        !reporter.pending()
    }

    /// Server-side apply of `fragment` as this gateway's field manager.
    async fn apply(&self, fragment: &EgressGatewayStatus) -> Result<(), KubeError> {
        let patch = serde_json::json!({
            "apiVersion": format!("{}/{}", egret_crd::GROUP, egret_crd::VERSION),
            "kind": "EgressGateway",
            "status": fragment,
        });
        let params = PatchParams::apply(&self.manager).force();
        self.api
            .patch_status(&self.object, &params, &Patch::Apply(&patch))
            .await
            .map(|_| ())
            .map_err(|e| KubeError::from_kube(e, &self.object))
    }

    /// Tells the core how the apply went and records it for the status.
    fn outcome(&self, reporter: &mut Reporter, result: Result<(), KubeError>) {
        let now = Instant::now().into_std();
        let mut status = lock(&self.status);
        match result {
            Ok(()) => {
                reporter.applied(now);
                status.applies += 1;
                status.last_apply_unix_ms = Some(wall_ms());
                status.last_error = None;
                if let Some(applied) = reporter.last_applied() {
                    status.nodes = applied
                        .nodes
                        .iter()
                        .map(|(name, state)| (name.clone(), label(*state).to_owned()))
                        .collect();
                    status.floating_ips = applied.floating_ips.clone();
                }
            }
            Err(error) => {
                reporter.failed(now);
                *status.errors.entry(error.label().to_owned()).or_default() += 1;
                tracing::warn!(object = %self.object, error = %error, "EgressGateway status not applied; retrying");
                status.last_error = Some(error.to_string());
            }
        }
        status.pending = reporter.pending();
    }

    fn publish_start(&self) {
        let mut status = lock(&self.status);
        *status = KubernetesStatus {
            enabled: true,
            object: self.object.clone(),
            field_manager: self.manager.clone(),
            pending: true,
            errors: KubeError::LABELS
                .iter()
                .map(|l| ((*l).to_owned(), 0))
                .collect(),
            ..KubernetesStatus::default()
        };
    }

    fn publish_pending(&self, reporter: &Reporter) {
        lock(&self.status).pending = reporter.pending();
    }
}

/// A client that could not be built: the status says so, and the gateway runs on.
pub fn failed_client(status: &SharedKubernetes, object: &str, name: &str, error: &KubeError) {
    let mut s = lock(status);
    *s = KubernetesStatus {
        enabled: true,
        object: object.to_owned(),
        field_manager: field_manager(name),
        pending: true,
        errors: KubeError::LABELS
            .iter()
            .map(|l| ((*l).to_owned(), u64::from(*l == error.label())))
            .collect(),
        last_error: Some(error.to_string()),
        ..KubernetesStatus::default()
    };
}

fn label(state: GatewayState) -> &'static str {
    match state {
        GatewayState::Up => "Up",
        GatewayState::Down => "Down",
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Locks `mutex`, also when a panic poisoned it: it guards counters only.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new, empty reporter state.
pub fn shared() -> SharedKubernetes {
    Arc::new(Mutex::new(KubernetesStatus::default()))
}

/// The shell against a mocked API service (the `tower-test` pattern of kube-rs
/// controller-rs's fixtures): each test plays the API server, asserting every request
/// exactly and answering as the API server would, on a paused clock.
#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use egret_crd::EgressGatewaySpec;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::json;
    use tower_test::mock;

    use super::*;
    use crate::status::{FloatingIpStatus, Snapshot, SyncPeerStatus};

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
    const B: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 101);
    const GW2: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 12);
    const PATH: &str = "/apis/egret.dev/v1alpha1/egressgateways/default/status?&force=true&fieldManager=egret-gateway%2Fgw1";

    fn ip(address: Ipv4Addr, owned: bool, master: Option<Ipv4Addr>) -> FloatingIpStatus {
        FloatingIpStatus {
            address,
            vrid: address.octets()[3],
            state: if owned { "master" } else { "backup" }.into(),
            master: String::new(),
            master_address: master,
            owned,
            priority: 100,
            last_transition_unix_ms: 0,
            transitions: 0,
            adverts_sent: 0,
            adverts_received: 0,
            ports_in_use: 0,
            port_range_size: 0,
            flows: 0,
        }
    }

    fn gw2(silent_ms: u64) -> SyncPeerStatus {
        SyncPeerStatus {
            address: "192.168.1.12:4801".into(),
            alive: silent_ms <= 3000,
            primary: Some(GW2),
            name: Some("gw2".into()),
            silent_ms: Some(silent_ms),
            ..SyncPeerStatus::default()
        }
    }

    /// gw1 as its data path publishes it: master of A, backup of B under gw2.
    fn snapshot() -> SharedSnapshot {
        let mut s = Snapshot {
            name: "gw1".into(),
            floating_ips: vec![ip(A, true, None), ip(B, false, Some(GW2))],
            ..Snapshot::default()
        };
        s.sync.enabled = true;
        s.sync.peers = vec![gw2(100)];
        Arc::new(Mutex::new(s))
    }

    fn edit(snapshot: &SharedSnapshot, f: impl FnOnce(&mut Snapshot)) {
        f(&mut snapshot.lock().expect("snapshot"));
    }

    fn setup() -> (Reporting, Handle, SharedSnapshot, SharedKubernetes) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let snapshot = snapshot();
        let status = shared();
        let reporting = spawn(client, "default", "gw1", snapshot.clone(), status.clone());
        (reporting, handle, snapshot, status)
    }

    /// The next request must be gw1's apply of exactly `status`; returns its responder.
    async fn expect_apply(
        handle: &mut Handle,
        status: serde_json::Value,
    ) -> mock::SendResponse<Response<Body>> {
        let (request, send) = handle.next_request().await.expect("an apply");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(request.uri().to_string(), PATH);
        assert_eq!(
            request.headers().get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/apply-patch+yaml"[..])
        );
        let body = request.into_body().collect_bytes().await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(
            body,
            json!({
                "apiVersion": "egret.dev/v1alpha1",
                "kind": "EgressGateway",
                "status": status,
            })
        );
        send
    }

    /// What the API server answers to a successful apply: the object.
    fn ok(send: mock::SendResponse<Response<Body>>, status: serde_json::Value) {
        let mut object = EgressGateway::new(
            "default",
            EgressGatewaySpec {
                floating_ips: vec![A.to_string(), B.to_string()],
            },
        );
        object.status = Some(serde_json::from_value(status).expect("a status"));
        let body = serde_json::to_vec(&object).expect("JSON");
        send.send_response(
            Response::builder()
                .body(Body::from(body))
                .expect("response"),
        );
    }

    /// What the API server answers with a failure `code`.
    fn fail(send: mock::SendResponse<Response<Body>>, code: u16, reason: &str) {
        let body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{reason} (test)"), "reason": reason, "code": code,
        });
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
                .expect("response"),
        );
    }

    /// Lets the reporter run until it is waiting again (a virtual millisecond).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn start_takeover_peer_silence_and_clean_stop() {
        let (reporting, mut handle, snapshot, status) = setup();
        // Start: itself Up, the address it holds, its peer and the master it hears.
        let start = json!({
            "nodes": {"gw1": "Up", "gw2": "Up"},
            "floatingIPs": {"192.168.1.100": "gw1", "192.168.1.101": "gw2"},
        });
        let send = expect_apply(&mut handle, start.clone()).await;
        ok(send, start);
        settle().await;
        {
            let s = status.lock().expect("status");
            assert_eq!((s.applies, s.pending), (1, false));
            assert_eq!(s.field_manager, "egret-gateway/gw1");
            assert_eq!(
                s.floating_ips.get("192.168.1.101").map(String::as_str),
                Some("gw2")
            );
        }
        // Steady: nothing is written for a while.
        tokio::time::sleep(Duration::from_secs(10)).await;
        // Takeover of B: named within 2 s.
        edit(&snapshot, |s| s.floating_ips[1] = ip(B, true, None));
        let took = Instant::now();
        let both = json!({
            "nodes": {"gw1": "Up", "gw2": "Up"},
            "floatingIPs": {"192.168.1.100": "gw1", "192.168.1.101": "gw1"},
        });
        let send = expect_apply(&mut handle, both.clone()).await;
        assert!(
            took.elapsed() <= Duration::from_secs(2),
            "{:?}",
            took.elapsed()
        );
        ok(send, both);
        // gw2 silent: Down once its last datagram is 3 s old.
        edit(&snapshot, |s| s.sync.peers = vec![gw2(2_900)]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        edit(&snapshot, |s| s.sync.peers = vec![gw2(3_100)]);
        let down = json!({
            "nodes": {"gw1": "Up", "gw2": "Down"},
            "floatingIPs": {"192.168.1.100": "gw1", "192.168.1.101": "gw1"},
        });
        let send = expect_apply(&mut handle, down.clone()).await;
        ok(send, down);
        settle().await;
        // Clean stop: Down, the peer as last known, no address of its own.
        let stopping = tokio::spawn(reporting.stop(Duration::from_secs(2)));
        let last = json!({"nodes": {"gw1": "Down", "gw2": "Down"}});
        let send = expect_apply(&mut handle, last.clone()).await;
        ok(send, last);
        assert!(stopping.await.expect("stopped"));
        let s = status.lock().expect("status");
        assert_eq!(s.applies, 4);
        assert_eq!(s.nodes.get("gw1").map(String::as_str), Some("Down"));
        assert!(!s.pending);
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_outage_is_counted_and_the_status_catches_up() {
        let (reporting, mut handle, snapshot, status) = setup();
        let start = json!({
            "nodes": {"gw1": "Up", "gw2": "Up"},
            "floatingIPs": {"192.168.1.100": "gw1", "192.168.1.101": "gw2"},
        });
        // The API server is down.
        let send = expect_apply(&mut handle, start.clone()).await;
        fail(send, 503, "ServiceUnavailable");
        // Retried after the backoff, with the same fragment; now it hangs.
        let hanging = expect_apply(&mut handle, start.clone()).await;
        // Meanwhile nothing waits on the reporter: the snapshot is free to publish, and
        // the state says the status is behind.
        for _ in 0..100 {
            assert!(snapshot.try_lock().is_ok());
        }
        edit(&snapshot, |s| {
            s.floating_ips[1] = ip(B, true, None);
            s.sync.peers = vec![gw2(5_000)];
        });
        {
            let s = status.lock().expect("status");
            assert!(s.pending);
            assert_eq!(s.errors.get("server"), Some(&1));
            assert!(
                s.last_error.as_deref().is_some_and(|e| e.contains("503")),
                "{:?}",
                s.last_error
            );
        }
        // The hanging apply times out; the next one carries what happened meanwhile.
        let caught_up = json!({
            "nodes": {"gw1": "Up", "gw2": "Down"},
            "floatingIPs": {"192.168.1.100": "gw1", "192.168.1.101": "gw1"},
        });
        let send = expect_apply(&mut handle, caught_up.clone()).await;
        drop(hanging);
        ok(send, caught_up);
        settle().await;
        {
            let s = status.lock().expect("status");
            assert_eq!(s.errors.get("timeout"), Some(&1));
            assert_eq!(
                (s.applies, s.pending, s.last_error.clone()),
                (1, false, None)
            );
            assert_eq!(s.nodes.get("gw2").map(String::as_str), Some("Down"));
        }
        // A forbidden apply (RBAC) is its own reason.
        edit(&snapshot, |s| s.sync.peers = vec![gw2(0)]);
        let back = json!({
            "nodes": {"gw1": "Up", "gw2": "Up"},
            "floatingIPs": {"192.168.1.100": "gw1", "192.168.1.101": "gw1"},
        });
        let send = expect_apply(&mut handle, back.clone()).await;
        fail(send, 403, "Forbidden");
        let send = expect_apply(&mut handle, back.clone()).await;
        ok(send, back);
        settle().await;
        assert_eq!(
            status.lock().expect("status").errors.get("forbidden"),
            Some(&1)
        );
        drop(reporting);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_an_outage_gives_up_at_its_deadline() {
        let (reporting, mut handle, _snapshot, status) = setup();
        let _hanging = handle.next_request().await.expect("the first apply");
        let stopped = Instant::now();
        let stopping = tokio::spawn(reporting.stop(Duration::from_millis(1500)));
        // The in-flight apply is dropped; the last one is tried, and hangs too.
        let last =
            json!({"nodes": {"gw1": "Down", "gw2": "Up"}, "floatingIPs": {"192.168.1.101": "gw2"}});
        let _hanging_too = expect_apply(&mut handle, last).await;
        assert!(!stopping.await.expect("stopped"));
        assert!(
            stopped.elapsed() <= Duration::from_millis(1600),
            "{:?}",
            stopped.elapsed()
        );
        assert!(status.lock().expect("status").pending);
    }

    #[test]
    fn api_errors_have_stable_labels() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "m".into(),
                reason: "R".into(),
                ..kube::core::Status::default()
            }))
        };
        let label = |e| KubeError::from_kube(e, "default").label();
        assert_eq!(label(api(404)), "not_found");
        assert_eq!(label(api(403)), "forbidden");
        assert_eq!(label(api(401)), "forbidden");
        assert_eq!(label(api(422)), "refused");
        assert_eq!(label(api(409)), "refused");
        assert_eq!(label(api(500)), "server");
        assert_eq!(
            label(kube::Error::LinesCodecMaxLineLengthExceeded),
            "transport"
        );
        assert_eq!(KubeError::Timeout(APPLY_TIMEOUT).label(), "timeout");
        for e in [
            KubeError::Client("x".into()),
            KubeError::NotFound("d".into()),
        ] {
            assert!(KubeError::LABELS.contains(&e.label()));
        }
    }
}
