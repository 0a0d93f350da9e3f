//! The cluster as the agent sees it: one kube-runtime reflector per kind, each feeding a
//! store the pure side reads snapshots of.
//!
//! - the pods on this node (field selector `spec.nodeName=<node>`);
//! - namespaces, metadata only (their labels are all that matters);
//! - `EgressNATPolicy` and `EgressGateway`;
//! - the `kube-system/ip-masq-agent` ConfigMap (field selector on its name).
//!
//! A reflector's store is swapped whole when its watcher (re)lists, so a relist after an
//! outage or a `410 Gone` never shows a half-empty cluster; until every store has listed
//! once, nothing is computed and the node keeps what it has. Every event wakes the agent
//! ([`Watches::subscribe`]); each watch's health (last event, relists, errors) is kept for
//! `egret-agent status`.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use egret_crd::{EgressGateway, EgressNATPolicy};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Client, Resource};
use serde::{Deserialize, Serialize};
use tokio::sync::watch as signal;

use crate::cluster::{
    ClusterView, GatewayObject, MasqConfig, NamespaceInfo, PodInfo, PolicyObject,
};

/// The ip-masq-agent ConfigMap's namespace and name (upstream's).
pub const MASQ_NAMESPACE: &str = "kube-system";
/// See [`MASQ_NAMESPACE`].
pub const MASQ_NAME: &str = "ip-masq-agent";

/// The health of one watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchHealth {
    /// What it watches (`pods`, `namespaces`, …).
    pub name: String,
    /// It has listed at least once: its store holds the cluster's state.
    pub synced: bool,
    /// Seconds since the epoch of its last event (a list or a change).
    pub last_event: Option<u64>,
    /// Lists since the first: after a restart of the watch (an outage, an expired
    /// resourceVersion).
    pub relists: u64,
    /// Errors the watch hit (each is retried with backoff).
    pub errors: u64,
    /// The last error.
    pub last_error: Option<String>,
}

/// The watches' health, shared with whoever reports it.
pub type Health = Arc<Mutex<Vec<WatchHealth>>>;

/// The stores of every watch, and what wakes the agent.
#[derive(Clone)]
pub struct Watches {
    /// This node's pods.
    pub pods: Store<Pod>,
    /// Every namespace, metadata only.
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Every policy.
    pub policies: Store<EgressNATPolicy>,
    /// Every gateway object.
    pub gateways: Store<EgressGateway>,
    /// The ip-masq-agent ConfigMap, when it exists.
    pub masquerade: Store<ConfigMap>,
    /// Counts the events of every watch; each consumer [`Watches::subscribe`]s.
    changed: Arc<signal::Sender<u64>>,
    /// Each watch's health, in the order above.
    pub health: Health,
    /// When the oldest event not yet taken by [`Watches::take_pending`] arrived: where the
    /// programming latency of an API event starts.
    pending: Pending,
}

/// See [`Watches::take_pending`].
type Pending = Arc<Mutex<Option<Instant>>>;

impl Watches {
    /// Starts every watch on the current tokio runtime.
    pub fn start(client: &Client, node: &str) -> Watches {
        let changed = Arc::new(signal::channel(0).0);
        let health: Health = Arc::new(Mutex::new(Vec::new()));
        let config = watcher::Config::default().any_semantic();
        let on_node = config.clone().fields(&format!("spec.nodeName={node}"));
        let masq = config.clone().fields(&format!("metadata.name={MASQ_NAME}"));
        let pending = Pending::default();
        let mut spawn = Spawner {
            changed: changed.clone(),
            health: health.clone(),
            pending: pending.clone(),
        };
        Watches {
            pods: spawn.reflect("pods", watcher(Api::all(client.clone()), on_node)),
            namespaces: spawn.reflect(
                "namespaces",
                watcher(
                    Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                    config.clone(),
                ),
            ),
            policies: spawn.reflect(
                "egressnatpolicies",
                watcher(Api::all(client.clone()), config.clone()),
            ),
            gateways: spawn.reflect(
                "egressgateways",
                watcher(Api::all(client.clone()), config.clone()),
            ),
            masquerade: spawn.reflect(
                "ip-masq-agent",
                watcher(Api::namespaced(client.clone(), MASQ_NAMESPACE), masq),
            ),
            changed,
            health,
            pending,
        }
    }

    /// Stores holding these objects and no watch behind them: the shell's logic driven by a
    /// test.
    #[doc(hidden)]
    pub fn fixed(
        pods: Vec<Pod>,
        namespaces: Vec<PartialObjectMeta<Namespace>>,
        policies: Vec<EgressNATPolicy>,
        gateways: Vec<EgressGateway>,
    ) -> Watches {
        Watches {
            pods: filled(pods),
            namespaces: filled(namespaces),
            policies: filled(policies),
            gateways: filled(gateways),
            masquerade: filled(Vec::new()),
            changed: Arc::new(signal::channel(0).0),
            health: Arc::default(),
            pending: Pending::default(),
        }
    }

    /// Waits until every store has listed once.
    pub async fn ready(&self) {
        // A store's writer lives as long as its task, which runs until the runtime stops.
        let _ = self.pods.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.policies.wait_until_ready().await;
        let _ = self.gateways.wait_until_ready().await;
        let _ = self.masquerade.wait_until_ready().await;
    }

    /// A receiver that sees a change after every event of every watch.
    pub fn subscribe(&self) -> signal::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The cluster as the pure side takes it: the pods of `pods` (this node's store, or the
    /// status writer's cluster-wide one), the other stores, and `masquerade`.
    pub fn view(&self, pods: &Store<Pod>, masquerade: MasqConfig) -> ClusterView {
        ClusterView {
            pods: pods
                .state()
                .iter()
                .map(|p| PodInfo::from(p.as_ref()))
                .collect(),
            namespaces: self
                .namespaces
                .state()
                .iter()
                .map(|ns| NamespaceInfo {
                    name: ns.metadata.name.clone().unwrap_or_default(),
                    labels: ns.metadata.labels.clone().unwrap_or_default(),
                })
                .collect(),
            policies: self
                .policies
                .state()
                .iter()
                .map(|p| PolicyObject::from(p.as_ref()))
                .collect(),
            gateways: self
                .gateways
                .state()
                .iter()
                .map(|g| GatewayObject::from(g.as_ref()))
                .collect(),
            masquerade,
        }
    }

    /// When the oldest event since the last call arrived, if any came: the caller is about
    /// to read the stores, and programs what they hold.
    pub fn take_pending(&self) -> Option<Instant> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// A copy of the watches' health.
    pub fn health(&self) -> Vec<WatchHealth> {
        self.health.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

/// A store holding `objects`, with no watch behind it (tests drive the shell with these).
#[doc(hidden)]
pub fn filled<K>(objects: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store();
    for object in objects {
        writer.apply_watcher_event(&Event::Apply(object));
    }
    // The writer goes; the store keeps what it was given.
    store
}

struct Spawner {
    changed: Arc<signal::Sender<u64>>,
    health: Health,
    pending: Pending,
}

impl Spawner {
    /// Runs `stream` into a new store on a task of its own (retrying errors with kube's
    /// default backoff), recording its health under `name`.
    fn reflect<K, S>(&mut self, name: &str, stream: S) -> Store<K>
    where
        K: Resource + Clone + Send + Sync + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
        S: Stream<Item = watcher::Result<Event<K>>> + Send + 'static,
    {
        let (store, writer) = reflector::store();
        let index = {
            let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
            health.push(WatchHealth {
                name: name.to_owned(),
                ..WatchHealth::default()
            });
            health.len() - 1
        };
        let (changed, health) = (self.changed.clone(), self.health.clone());
        let pending = self.pending.clone();
        let name = name.to_owned();
        let stream = reflector::reflector(writer, stream.default_backoff());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let arrived = Instant::now();
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut all = health.lock().unwrap_or_else(|e| e.into_inner());
                let h = &mut all[index];
                match item {
                    Ok(event) => {
                        h.last_event = Some(now);
                        match event {
                            Event::Init if h.synced => h.relists += 1,
                            Event::InitDone => h.synced = true,
                            _ => {}
                        }
                        drop(all);
                        pending
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(arrived);
                        changed.send_modify(|n| *n += 1);
                    }
                    Err(err) => {
                        h.errors += 1;
                        h.last_error = Some(err.to_string());
                        tracing::warn!(watch = %name, error = %err, "watch failed; retrying with backoff (the data path keeps its state)");
                    }
                }
            }
        });
        store
    }
}
