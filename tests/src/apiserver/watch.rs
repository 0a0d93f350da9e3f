//! Watch streams: `{"type": …, "object": …}` lines over a chunked response, from a
//! resourceVersion on (or from the current state, as ADDED events), in the order of the
//! history, with selectors applied as the real server applies them (an object that starts
//! matching is ADDED, one that stops matching is DELETED), bookmarks every interval when asked,
//! the `k8s.io/initial-events-end` bookmark for streaming lists, and `ERROR` 410 Gone when the
//! history no longer reaches back far enough. A slow reader only holds its own stream: the
//! history is not kept for it, it gets 410 once it falls out of the window.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    task::{Context, Poll},
    time::Duration,
};

use http_body::{Body, Frame};
use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};

use super::{
    ApiError, Shared,
    cluster::Selectors,
    registry::ResourceType,
    store::{Change, ChangeKind},
    table::{self, Include},
    time,
};

/// How objects are rendered on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Render {
    /// The objects.
    Full,
    /// `PartialObjectMetadata`.
    Metadata,
    /// A one-row `Table` per event.
    Table(Include),
}

/// What a watch asks for.
#[derive(Debug, Clone)]
pub struct WatchSpec {
    /// The resource.
    pub resource: ResourceType,
    /// The version in the path.
    pub version: String,
    /// The namespace, or all.
    pub namespace: Option<String>,
    /// Selectors.
    pub selectors: Selectors,
    /// `resourceVersion` (`None` or `0`: from the current state).
    pub from: Option<u64>,
    /// `sendInitialEvents=true`.
    pub initial_events: bool,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Duration,
    /// Rendering.
    pub render: Render,
}

impl WatchSpec {
    fn in_scope(&self, object: &Value) -> bool {
        !self.resource.namespaced
            || self.namespace.as_deref().is_none_or(|ns| {
                object
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    == Some(ns)
            })
    }

    fn visible(&self, object: &Value) -> bool {
        self.in_scope(object) && self.selectors.matches(object)
    }

    /// What this watch sees of a change: its event type and object, or nothing.
    #[must_use]
    pub fn translate(&self, change: &Change) -> Option<(&'static str, Value)> {
        if change.resource != self.resource.id() {
            return None;
        }
        let now = self.visible(&change.object);
        match change.kind {
            ChangeKind::Added | ChangeKind::Deleted => {
                now.then(|| (change.kind.wire(), (*change.object).clone()))
            }
            ChangeKind::Modified => {
                let before = change.prev.as_deref().is_some_and(|p| self.visible(p));
                match (before, now) {
                    (true, true) => Some(("MODIFIED", (*change.object).clone())),
                    (false, true) => Some(("ADDED", (*change.object).clone())),
                    (true, false) => {
                        // The object as this watch last saw it, at the change's version.
                        let mut gone = change.prev.as_deref().cloned().unwrap_or_default();
                        gone["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                        Some(("DELETED", gone))
                    }
                    (false, false) => None,
                }
            }
        }
    }

    /// An object as this watch renders it.
    #[must_use]
    pub fn render(&self, mut object: Value, now: i64) -> Value {
        object["apiVersion"] = json!(self.resource.api_version(&self.version));
        match self.render {
            Render::Full => object,
            Render::Metadata => table::partial_metadata(&object),
            Render::Table(include) => table::table(
                &self.resource,
                &[&object],
                json!({"resourceVersion": object.pointer("/metadata/resourceVersion")}),
                include,
                now,
            ),
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        match self.render {
            Render::Metadata => {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
            }
            _ => {
                json!({"kind": self.resource.kind, "apiVersion": self.resource.api_version(&self.version), "metadata": meta})
            }
        }
    }
}

/// A response body fed from a channel: one chunk per watch event.
#[derive(Debug)]
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut text = json!({"type": kind, "object": object}).to_string();
    text.push('\n');
    Bytes::from(text)
}

/// Starts a watch: checks where it starts from (410 when too old), then streams on a task.
///
/// # Errors
///
/// 410 when `from` is older than the kept history.
pub fn start(shared: Arc<Shared>, spec: WatchSpec) -> Result<ChannelBody, ApiError> {
    let (tx, rx) = mpsc::channel(64);
    let epoch = shared.close_epoch.load(Ordering::SeqCst);
    let now = time::now_unix();
    let (cursor, initial) = {
        let cluster = shared.cluster();
        let store = &cluster.store;
        match spec.from.filter(|n| *n > 0 && !spec.initial_events) {
            Some(n) if store.changes_after(n).is_none() => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {n} ({})",
                    store.oldest_valid()
                )));
            }
            Some(n) => (n, Vec::new()),
            None => {
                let items: Vec<Bytes> = store
                    .list(&spec.resource.id(), None, None)
                    .filter(|o| spec.visible(o))
                    .map(|o| line("ADDED", &spec.render((**o).clone(), now)))
                    .collect();
                (store.rv(), items)
            }
        }
    };
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        let _ = run(&shared, &spec, cursor, initial, epoch, &tx).await;
        shared.open_watches.fetch_sub(1, Ordering::SeqCst);
    });
    Ok(ChannelBody(rx))
}

/// The stream's loop; returns when the client goes, the timeout passes, watches are closed,
/// or the history moved past it (after sending 410).
async fn run(
    shared: &Shared,
    spec: &WatchSpec,
    mut cursor: u64,
    initial: Vec<Bytes>,
    epoch: u64,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), mpsc::error::SendError<Bytes>> {
    let deadline = Instant::now() + spec.timeout;
    let interval = shared.config.bookmark_interval;
    let mut next_bookmark = Instant::now() + interval;
    let count = |n: u64| shared.stats().watch_events += n;
    count(initial.len() as u64);
    for chunk in initial {
        tx.send(chunk).await?;
    }
    if spec.initial_events && spec.bookmarks {
        tx.send(line("BOOKMARK", &spec.bookmark(cursor, true)))
            .await?;
        count(1);
    }
    loop {
        let notified = shared.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if shared.close_epoch.load(Ordering::SeqCst) != epoch {
            return Ok(());
        }
        let now = time::now_unix();
        let batch: Result<Vec<Bytes>, ApiError> = {
            let cluster = shared.cluster();
            match cluster.store.changes_after(cursor) {
                None => Err(ApiError::expired(format!(
                    "too old resource version: {cursor} ({})",
                    cluster.store.oldest_valid()
                ))),
                Some(changes) => {
                    let mut out = Vec::new();
                    let mut examined = 0;
                    for change in changes.take(256) {
                        examined += 1;
                        cursor = change.rv;
                        if let Some((kind, object)) = spec.translate(change) {
                            out.push(line(kind, &spec.render(object, now)));
                        }
                    }
                    if examined < 256 {
                        // Everything up to now was examined.
                        cursor = cursor.max(cluster.store.rv());
                    }
                    Ok(out)
                }
            }
        };
        match batch {
            Err(gone) => {
                tx.send(line("ERROR", &gone.status())).await?;
                count(1);
                return Ok(());
            }
            Ok(lines) if !lines.is_empty() => {
                count(lines.len() as u64);
                for chunk in lines {
                    tx.send(chunk).await?;
                }
                continue;
            }
            Ok(_) => {}
        }
        // Caught up: the cursor stands at the newest change examined; wait for more.
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep_until(next_bookmark) => {
                next_bookmark = Instant::now() + interval;
                if spec.bookmarks {
                    tx.send(line("BOOKMARK", &spec.bookmark(cursor, false))).await?;
                    count(1);
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(()),
            () = tx.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::registry;

    fn spec(selector: &str) -> WatchSpec {
        let pods = registry::builtins().remove(1);
        WatchSpec {
            selectors: Selectors::parse(&pods, Some(selector), None).expect("parses"),
            resource: pods,
            version: "v1".into(),
            namespace: Some("ns".into()),
            from: None,
            initial_events: false,
            bookmarks: false,
            timeout: Duration::from_secs(1),
            render: Render::Full,
        }
    }

    fn change(kind: ChangeKind, app: &str, prev: Option<&str>) -> Change {
        let pod = |app: &str| {
            Arc::new(
                json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"app": app}, "resourceVersion": "5"}}),
            )
        };
        Change {
            rv: 7,
            resource: "/pods".into(),
            kind,
            object: pod(app),
            prev: prev.map(pod),
        }
    }

    #[test]
    fn selectors_move_objects_in_and_out() {
        let w = spec("app=x");
        assert_eq!(
            w.translate(&change(ChangeKind::Added, "x", None))
                .map(|e| e.0),
            Some("ADDED")
        );
        assert_eq!(w.translate(&change(ChangeKind::Added, "y", None)), None);
        assert_eq!(
            w.translate(&change(ChangeKind::Modified, "x", Some("y")))
                .map(|e| e.0),
            Some("ADDED")
        );
        assert_eq!(
            w.translate(&change(ChangeKind::Modified, "x", Some("x")))
                .map(|e| e.0),
            Some("MODIFIED")
        );
        let (kind, gone) = w
            .translate(&change(ChangeKind::Modified, "y", Some("x")))
            .expect("leaves");
        assert_eq!(
            (
                kind,
                &gone["metadata"]["labels"]["app"],
                &gone["metadata"]["resourceVersion"]
            ),
            ("DELETED", &json!("x"), &json!("7"))
        );
        assert_eq!(
            w.translate(&change(ChangeKind::Modified, "y", Some("z"))),
            None
        );
        let other_ns = WatchSpec {
            namespace: Some("other".into()),
            ..spec("")
        };
        assert_eq!(
            other_ns.translate(&change(ChangeKind::Added, "x", None)),
            None
        );
    }
}
