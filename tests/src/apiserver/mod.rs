//! A test Kubernetes API server that speaks the real protocol, for the lab (no kube-apiserver
//! can run on these machines). kubectl and kube-rs clients (watchers, reflectors, metadata
//! watchers, the events recorder, leases, server-side apply) talk to it over HTTPS with a
//! bearer token, as to a cluster.
//!
//! The rooms: [`store`] (objects, the resourceVersion counter, the history window, the state
//! file), [`cluster`] (the verbs and what a write does), [`registry`] (built-in and CRD
//! resources, discovery), [`selectors`], [`patch`] and [`fields`] (patch formats, managed
//! fields and server-side apply), [`schema`] (CRD schema checks), [`table`] (kubectl's
//! server-side printing), [`watch`] (watch streams), [`http`] (routing, content negotiation,
//! test control), [`tls`] (certificates and kubeconfig).
//!
//! Known gaps, on purpose: one version per stored object (no conversion beyond rewriting
//! `apiVersion`), no finalizers or graceful deletion, no admission, no RBAC (one token),
//! strategic merge patch only honours `name` merge keys, lists are atomic for server-side
//! apply, CEL validation rules are skipped, no protobuf, no HTTP/2, no aggregated discovery
//! (clients fall back to the legacy documents), no OpenAPI documents (404, which kubectl
//! accepts), core and `events.k8s.io` events are stored apart.

pub mod cluster;
pub mod error;
pub mod fields;
pub mod http;
pub mod patch;
pub mod registry;
pub mod schema;
pub mod selectors;
pub mod store;
pub mod table;
pub mod time;
pub mod tls;
pub mod watch;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::Notify;

pub use cluster::Cluster;
pub use error::ApiError;
pub use store::Store;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it listens (port 0: any free port).
    pub listen: SocketAddr,
    /// Where `ca.crt`, `ca.key`, `token` and `kubeconfig` go.
    pub dir: PathBuf,
    /// The bearer token (default: the one in `dir/token`, else a random one).
    pub token: Option<String>,
    /// The state file: loaded at start, written on SIGTERM.
    pub state: Option<PathBuf>,
    /// CRD manifests to serve from the start.
    pub crds: Vec<PathBuf>,
    /// How often watches with `allowWatchBookmarks` get a bookmark.
    pub bookmark_interval: Duration,
    /// How many changes the history keeps for watches to resume from.
    pub history: usize,
    /// The largest request body accepted (413 beyond).
    pub max_body: usize,
}

/// Request counts for `/_test/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// `verb resource` → count (`list pods`, `patch egressgateways.egret.dev/status`).
    pub by_verb: BTreeMap<String, u64>,
    /// User agent → count.
    pub by_user_agent: BTreeMap<String, u64>,
    /// Field manager of writes → count.
    pub by_field_manager: BTreeMap<String, u64>,
    /// Failures by reason.
    pub errors: BTreeMap<String, u64>,
    /// Watch events sent (bookmarks included).
    pub watch_events: u64,
}

/// What the connections share.
#[derive(Debug)]
pub struct Shared {
    /// The cluster state.
    pub cluster: Mutex<Cluster>,
    /// Woken on every change and every control action, for watches.
    pub changed: Notify,
    /// The bearer token.
    pub token: String,
    /// Paused by `/_test/pause`: every API request gets 503.
    pub paused: AtomicBool,
    /// Bumped to end every open watch (`/_test/close-watches`, pause).
    pub close_epoch: AtomicU64,
    /// Open watch streams.
    pub open_watches: AtomicU64,
    /// Request counts.
    pub stats: Mutex<Stats>,
    /// The configuration.
    pub config: Config,
    /// `https://ADDR:PORT`.
    pub url: String,
    /// When it started (Unix seconds).
    pub started: i64,
}

impl Shared {
    /// The cluster, also after a panic elsewhere poisoned the lock (the state stays usable:
    /// every write is one store call).
    pub fn cluster(&self) -> MutexGuard<'_, Cluster> {
        self.cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The stats.
    pub fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends every open watch stream.
    pub fn close_watches(&self) {
        self.close_epoch.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// `/_test/stats`.
    #[must_use]
    pub fn stats_json(&self) -> Value {
        let s = self.stats();
        let total: u64 = s.by_verb.values().sum();
        json!({
            "uptimeSeconds": time::now_unix() - self.started,
            "requests": total,
            "byVerbResource": s.by_verb, "byUserAgent": s.by_user_agent,
            "byFieldManager": s.by_field_manager, "errors": s.errors,
            "watchEvents": s.watch_events,
            "openWatches": self.open_watches.load(Ordering::SeqCst),
            "resourceVersion": self.cluster().store.rv().to_string(),
        })
    }
}

/// Reads CRD manifests (YAML, several documents per file allowed) into objects.
///
/// # Errors
///
/// When a file cannot be read or parsed.
pub fn read_manifests(path: &std::path::Path) -> std::io::Result<Vec<Value>> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path)?;
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// A bound, ready server: the shared state and what `serve` needs.
pub struct Bound {
    /// The state the connections share.
    pub shared: std::sync::Arc<Shared>,
    /// The listening socket.
    pub listener: tokio::net::TcpListener,
    /// The TLS acceptor.
    pub tls: tokio_rustls::TlsAcceptor,
}

fn random_token() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    let state = std::collections::hash_map::RandomState::new();
    (0..2u64)
        .map(|i| {
            let mut h = state.build_hasher();
            h.write_u64(i);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// Binds the socket, loads or starts the state, preloads CRDs, and writes `ca.crt`, `token`
/// and `kubeconfig` into the directory.
///
/// # Errors
///
/// When the address cannot be bound, a file cannot be read or written, or a CRD is invalid.
pub async fn bind(config: Config) -> std::io::Result<Bound> {
    use std::io::{Error, ErrorKind};
    std::fs::create_dir_all(&config.dir)?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let url = http::url_of(addr);
    let (tls_config, ca_pem) = tls::server_config(&config.dir, addr)?;
    let token_file = config.dir.join("token");
    let token = match (&config.token, std::fs::read_to_string(&token_file)) {
        (Some(t), _) => t.clone(),
        (None, Ok(t)) if !t.trim().is_empty() => t.trim().to_owned(),
        _ => random_token(),
    };
    std::fs::write(&token_file, &token)?;
    std::fs::write(
        config.dir.join("kubeconfig"),
        tls::kubeconfig(&url, &ca_pem, &token),
    )?;
    let now = time::now_unix();
    let store = match &config.state {
        Some(path) if path.exists() => Store::load(path, config.history)?,
        _ => Store::new(config.history),
    };
    let mut cluster = Cluster::new(store, now);
    let crds = cluster
        .registry
        .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .cloned()
        .ok_or_else(|| Error::other("no CRD resource"))?;
    for path in &config.crds {
        for crd in read_manifests(path)? {
            let name = crd
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let target = cluster::Target {
                resource: &crds,
                version: "v1",
                namespace: None,
                name: Some(&name),
                subresource: None,
            };
            let opts = cluster::WriteOptions {
                field_manager: "egret-test-apiserver".into(),
                explicit_manager: true,
                force: true,
                ..cluster::WriteOptions::default()
            };
            cluster
                .patch(&target, cluster::PatchKind::Apply, &crd, &opts, now)
                .map_err(|e| {
                    Error::new(ErrorKind::InvalidData, format!("{}: {e}", path.display()))
                })?;
        }
    }
    let shared = std::sync::Arc::new(Shared {
        cluster: Mutex::new(cluster),
        changed: Notify::new(),
        token,
        paused: AtomicBool::new(false),
        close_epoch: AtomicU64::new(0),
        open_watches: AtomicU64::new(0),
        stats: Mutex::new(Stats::default()),
        config,
        url,
        started: now,
    });
    Ok(Bound {
        shared,
        listener,
        tls: tokio_rustls::TlsAcceptor::from(tls_config),
    })
}
