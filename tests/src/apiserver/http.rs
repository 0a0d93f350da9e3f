//! HTTP: the accept loop (TLS, HTTP/1.1, timeouts for slow clients), bearer-token checks,
//! routing of discovery, resource and test-control paths, content negotiation (JSON,
//! `PartialObjectMetadata`, `Table`), request bodies (JSON or YAML, capped), and the stats.
//!
//! Test control, under `/_test/` (token required): `POST expire` (drop the history: every
//! resourceVersion handed out so far gets 410; open watches get 410 and end), `POST
//! close-watches` (end open watches cleanly), `POST pause` / `POST resume` (503 to every API
//! request in between; open watches end), `GET stats` (request counts).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{
    ApiError, Shared,
    cluster::{PatchKind, Selectors, Target, WriteOptions},
    table::{self, Include},
    time,
    watch::{self, Render, WatchSpec},
};

/// A response body: whole, or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;

/// Serves connections from `listener` until the process ends.
pub async fn serve(shared: Arc<Shared>, listener: TcpListener, tls: TlsAcceptor) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            continue;
        };
        let (shared, tls) = (shared.clone(), tls.clone());
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), tls.accept(stream)).await
            else {
                return;
            };
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() =
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(shared: &Shared, err: &ApiError) -> Response<Body> {
    *shared
        .stats()
        .errors
        .entry(err.label().to_owned())
        .or_default() += 1;
    let mut response = json_response(err.code, &err.status());
    if err.code == 503 {
        // As the real server does: clients (kube's retry policy among them) wait this long
        // before trying again, instead of backing off on their own for minutes.
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query parameters.
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Self(
            query
                .unwrap_or_default()
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }
}

/// What the client accepts, as far as this server can render it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wants {
    Json,
    Metadata,
    Table,
}

fn negotiate(accept: Option<&str>) -> Option<Wants> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return Some(Wants::Json);
    };
    for media in accept.split(',') {
        let mut parts = media.split(';').map(str::trim);
        let base = parts.next().unwrap_or_default();
        if !matches!(
            base,
            "application/json" | "*/*" | "application/*" | "application/yaml"
        ) {
            continue;
        }
        let params: Vec<(&str, &str)> = parts.filter_map(|p| p.split_once('=')).collect();
        let param = |k: &str| params.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
        match param("as") {
            None => return Some(Wants::Json),
            Some("Table")
                if param("g") == Some("meta.k8s.io")
                    && matches!(param("v"), Some("v1" | "v1beta1")) =>
            {
                return Some(Wants::Table);
            }
            Some("PartialObjectMetadata" | "PartialObjectMetadataList")
                if param("g") == Some("meta.k8s.io")
                    && matches!(param("v"), Some("v1" | "v1beta1")) =>
            {
                return Some(Wants::Metadata);
            }
            Some(_) => {}
        }
    }
    None
}

/// Routes one request.
async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let user_agent = header(header::USER_AGENT).unwrap_or_default();
    {
        let agent = user_agent.split(' ').next().unwrap_or_default().to_owned();
        *shared.stats().by_user_agent.entry(agent).or_default() += 1;
    }
    let authorized = header(header::AUTHORIZATION).is_some_and(|a| {
        a.strip_prefix("Bearer ")
            .is_some_and(|t| t.trim() == shared.token)
    });
    if !authorized {
        count(shared, "unauthorized", "");
        return error_response(shared, &ApiError::unauthorized());
    }
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let query = Query::parse(req.uri().query());
    if let Some(action) = path.strip_prefix("/_test/") {
        return control(shared, req.method(), action);
    }
    if shared.paused.load(Ordering::SeqCst) {
        return error_response(shared, &ApiError::unavailable());
    }
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let discovery = |value: Option<Value>| {
        count(shared, "discovery", &path);
        match value {
            Some(v) => json_response(200, &v),
            None => error_response(shared, &ApiError::no_route(&path)),
        }
    };
    if req.method() == Method::GET {
        let cluster = shared.cluster();
        let r = &cluster.registry;
        match seg.as_slice() {
            ["version"] => {
                drop(cluster);
                return discovery(Some(
                    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-egret-test", "gitCommit": "", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "none", "compiler": "rustc", "platform": "linux/amd64"}),
                ));
            }
            ["healthz" | "readyz" | "livez"] => return Response::new(full("ok")),
            ["openapi", "v3"] => {
                let doc = r.openapi_root();
                drop(cluster);
                return discovery(Some(doc));
            }
            ["openapi", "v3", "api", "v1"] => {
                let doc = r.openapi_group_version("", "v1");
                drop(cluster);
                return discovery(doc);
            }
            ["openapi", "v3", "apis", group, version] => {
                let doc = r.openapi_group_version(group, version);
                drop(cluster);
                return discovery(doc);
            }
            ["api"] => {
                let doc = r.core_versions(shared.url.trim_start_matches("https://"));
                drop(cluster);
                return discovery(Some(doc));
            }
            ["api", "v1"] => {
                let doc = r.resource_list("", "v1");
                drop(cluster);
                return discovery(doc);
            }
            ["apis"] => {
                let doc = r.group_list();
                drop(cluster);
                return discovery(Some(doc));
            }
            ["apis", group] => {
                let doc = r.group(group);
                drop(cluster);
                return discovery(doc);
            }
            ["apis", group, version] => {
                let doc = r.resource_list(group, version);
                drop(cluster);
                return discovery(doc);
            }
            _ => {}
        }
    }
    // Resource paths.
    let (group, version, rest) = match seg.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => {
            count(shared, "unknown", &path);
            return error_response(shared, &ApiError::no_route(&path));
        }
    };
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, "status" | "finalize"] if group.is_empty() => {
            (None, "namespaces", Some(*ns), rest.get(2).copied())
        }
        ["namespaces", ns, res, tail @ ..] if tail.len() <= 2 => {
            (Some(*ns), *res, tail.first().copied(), tail.get(1).copied())
        }
        [res, tail @ ..] if tail.len() <= 2 => {
            (None, *res, tail.first().copied(), tail.get(1).copied())
        }
        _ => return error_response(shared, &ApiError::no_route(&path)),
    };
    let Some(resource) = shared
        .cluster()
        .registry
        .find(group, version, plural)
        .cloned()
    else {
        count(shared, "unknown", &path);
        return error_response(shared, &ApiError::no_route(&path));
    };
    // `namespaces/<ns>/namespaces` is no path; a cluster-scoped resource under a namespace neither.
    if namespace.is_some() && !resource.namespaced {
        return error_response(shared, &ApiError::no_route(&path));
    }
    if let Some(sub) = sub
        && !(sub == "status" && resource.status_subresource)
    {
        return error_response(shared, &ApiError::no_route(&path));
    }
    let target = Target {
        resource: &resource,
        version,
        namespace,
        name,
        subresource: sub,
    };
    let accept = header(header::ACCEPT);
    let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
    let method = req.method().clone();
    let verb = match (&method, name.is_some()) {
        (&Method::GET, false) if query.flag("watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::GET, true) => "get",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) if content_type.starts_with("application/apply-patch") => "apply",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => {
            count(shared, method.as_str(), &resource.qualified());
            return error_response(shared, &ApiError::method_not_allowed(method.as_str()));
        }
    };
    let what = match sub {
        Some(s) => format!("{}/{s}", resource.qualified()),
        None => resource.qualified(),
    };
    count(shared, verb, &what);
    let Some(wants) = negotiate(accept.as_deref()) else {
        return error_response(
            shared,
            &ApiError::not_acceptable(accept.as_deref().unwrap_or_default()),
        );
    };
    let body = if matches!(verb, "create" | "update" | "patch" | "apply" | "delete") {
        match read_body(shared, req, &content_type).await {
            Ok(b) => b,
            Err(e) => return error_response(shared, &e),
        }
    } else {
        None
    };
    let manager = query.get("fieldManager").map(str::to_owned);
    let opts = WriteOptions {
        explicit_manager: manager.is_some(),
        field_manager: manager.unwrap_or_else(|| {
            user_agent
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_owned()
        }),
        dry_run: query.get("dryRun") == Some("All"),
        force: query.flag("force"),
        strict: query.get("fieldValidation") == Some("Strict"),
    };
    if matches!(verb, "create" | "update" | "patch" | "apply") {
        *shared
            .stats()
            .by_field_manager
            .entry(opts.field_manager.clone())
            .or_default() += 1;
    }
    let include = match query.get("includeObject") {
        Some("None") => Include::None,
        Some("Object") => Include::Object,
        _ => Include::Metadata,
    };
    let now = time::now_unix();
    let result = match verb {
        "watch" => return start_watch(shared, &target, &query, wants, include),
        "list" => list(shared, &target, &query, wants, include, now),
        "get" => shared
            .cluster()
            .get(&target)
            .map(|o| render_one(&target, (*o).clone(), wants, include, now)),
        "create" => written(shared, body, |c, b| c.create(&target, b, &opts, now))
            .map(|o| (201, render_one(&target, o, wants, include, now).1)),
        "update" => written(shared, body, |c, b| c.replace(&target, b, &opts, now))
            .map(|o| render_one(&target, o, wants, include, now)),
        "patch" | "apply" => {
            let kind = match content_type.split(';').next().unwrap_or_default().trim() {
                "application/merge-patch+json" => Some(PatchKind::Merge),
                "application/strategic-merge-patch+json" => Some(PatchKind::Strategic),
                "application/json-patch+json" => Some(PatchKind::Json),
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                    Some(PatchKind::Apply)
                }
                _ => None,
            };
            match kind {
                None => Err(ApiError::unsupported_media_type(&content_type)),
                Some(kind) => {
                    let existed = shared.cluster().get(&target).is_ok();
                    written(shared, body, |c, b| c.patch(&target, kind, &b, &opts, now)).map(|o| {
                        (
                            if existed { 200 } else { 201 },
                            render_one(&target, o, wants, include, now).1,
                        )
                    })
                }
            }
        }
        "delete" => {
            let result = shared
                .cluster()
                .delete(&target, body.as_ref(), opts.dry_run);
            if result.is_ok() {
                shared.changed.notify_waiters();
            }
            result.map(|o| render_one(&target, o, wants, include, now))
        }
        "deletecollection" => collection_delete(shared, &target, &query, opts.dry_run),
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    };
    match result {
        Ok((code, value)) => json_response(code, &value),
        Err(e) => error_response(shared, &e),
    }
}

fn count(shared: &Shared, verb: &str, what: &str) {
    *shared
        .stats()
        .by_verb
        .entry(format!("{verb} {what}"))
        .or_default() += 1;
}

fn present(target: &Target<'_>, mut object: Value) -> Value {
    object["apiVersion"] = json!(target.resource.api_version(target.version));
    object
}

fn render_one(
    target: &Target<'_>,
    object: Value,
    wants: Wants,
    include: Include,
    now: i64,
) -> (u16, Value) {
    let object = present(target, object);
    let rendered = match wants {
        Wants::Json => object,
        Wants::Metadata => table::partial_metadata(&object),
        Wants::Table => table::table(
            target.resource,
            &[&object],
            json!({"resourceVersion": object.pointer("/metadata/resourceVersion")}),
            include,
            now,
        ),
    };
    (200, rendered)
}

/// A write: runs it under the lock, wakes the watches, renders the stored object.
fn written(
    shared: &Shared,
    body: Option<Value>,
    write: impl FnOnce(&mut super::Cluster, Value) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let body = body.ok_or_else(|| ApiError::bad_request("the request needs a body"))?;
    let object = write(&mut shared.cluster(), body)?;
    shared.changed.notify_waiters();
    Ok(object)
}

async fn read_body(
    shared: &Shared,
    req: Request<Incoming>,
    content_type: &str,
) -> Result<Option<Value>, ApiError> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let limit = shared.config.max_body;
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                bytes.extend_from_slice(&data);
            } else if seen > limit.saturating_mul(8) {
                // Past draining: answer now; the connection closes with the rest unread.
                break;
            }
        }
    }
    if seen > limit {
        // The body was drained (up to a bound) so the client reads the answer instead of
        // stalling on a write the server no longer reads.
        return Err(ApiError::too_large(limit));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let parsed: Result<Value, String> = serde_json::from_slice(&bytes).or_else(|json_err| {
        if content_type.contains("yaml") {
            serde_yaml_ng::from_slice(&bytes).map_err(|e| e.to_string())
        } else {
            Err(json_err.to_string())
        }
    });
    match parsed {
        Ok(v) => Ok(Some(v)),
        Err(e) => Err(ApiError::bad_request(format!(
            "the body of the request could not be decoded: {e}"
        ))),
    }
}

fn list(
    shared: &Shared,
    target: &Target<'_>,
    query: &Query,
    wants: Wants,
    include: Include,
    now: i64,
) -> Result<(u16, Value), ApiError> {
    let selectors = Selectors::parse(
        target.resource,
        query.get("labelSelector"),
        query.get("fieldSelector"),
    )?;
    let limit = query.get("limit").and_then(|l| l.parse().ok());
    let page = shared
        .cluster()
        .list(target, &selectors, limit, query.get("continue"))?;
    let mut meta = json!({"resourceVersion": page.rv.to_string()});
    if let Some(next) = &page.next {
        meta["continue"] = json!(next);
        meta["remainingItemCount"] = json!(page.remaining);
    }
    let items: Vec<Value> = page
        .items
        .iter()
        .map(|o| present(target, (**o).clone()))
        .collect();
    let value = match wants {
        Wants::Json => {
            json!({"kind": target.resource.list_kind, "apiVersion": target.resource.api_version(target.version), "metadata": meta, "items": items})
        }
        Wants::Metadata => {
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items.iter().map(table::partial_metadata).collect::<Vec<_>>()})
        }
        Wants::Table => table::table(
            target.resource,
            &items.iter().collect::<Vec<_>>(),
            meta,
            include,
            now,
        ),
    };
    Ok((200, value))
}

fn collection_delete(
    shared: &Shared,
    target: &Target<'_>,
    query: &Query,
    dry_run: bool,
) -> Result<(u16, Value), ApiError> {
    let selectors = Selectors::parse(
        target.resource,
        query.get("labelSelector"),
        query.get("fieldSelector"),
    )?;
    let deleted = shared
        .cluster()
        .delete_collection(target, &selectors, dry_run)?;
    shared.changed.notify_waiters();
    let items: Vec<Value> = deleted.into_iter().map(|o| present(target, o)).collect();
    Ok((
        200,
        json!({"kind": target.resource.list_kind, "apiVersion": target.resource.api_version(target.version), "metadata": {}, "items": items}),
    ))
}

fn start_watch(
    shared: &Arc<Shared>,
    target: &Target<'_>,
    query: &Query,
    wants: Wants,
    include: Include,
) -> Response<Body> {
    let selectors = match Selectors::parse(
        target.resource,
        query.get("labelSelector"),
        query.get("fieldSelector"),
    ) {
        Ok(s) => s,
        Err(e) => return error_response(shared, &e),
    };
    let from = match query.get("resourceVersion").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                return error_response(
                    shared,
                    &ApiError::bad_request(format!("invalid resourceVersion {v:?}")),
                );
            }
        },
    };
    let initial_events = query.flag("sendInitialEvents");
    if initial_events && query.get("resourceVersionMatch") != Some("NotOlderThan") {
        return error_response(shared, &ApiError::invalid("ListOptions.meta.k8s.io", "", &[("resourceVersionMatch".into(), "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(), "FieldValueForbidden")]));
    }
    // The real server's default is a random 30–60 minutes; an hour caps what clients ask.
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64)
        .min(3600);
    let spec = WatchSpec {
        resource: target.resource.clone(),
        version: target.version.to_owned(),
        namespace: target.namespace.map(str::to_owned),
        selectors,
        from,
        initial_events,
        bookmarks: query.flag("allowWatchBookmarks"),
        timeout: Duration::from_secs(timeout),
        render: match wants {
            Wants::Json => Render::Full,
            Wants::Metadata => Render::Metadata,
            Wants::Table => Render::Table(include),
        },
    };
    match watch::start(shared.clone(), spec) {
        Ok(body) => {
            let mut response = Response::new(body.boxed());
            let content_type = match wants {
                Wants::Table => "application/json;as=Table;v=v1;g=meta.k8s.io",
                Wants::Metadata => "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
                Wants::Json => "application/json",
            };
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            response
        }
        Err(e) => {
            // A watch that cannot start answers 200 with one ERROR event, as the real server does.
            let line = format!("{}\n", json!({"type": "ERROR", "object": e.status()}));
            let mut response = Response::new(full(line));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    }
}

fn control(shared: &Shared, method: &Method, action: &str) -> Response<Body> {
    count(shared, "control", action);
    let ok = |what: &str| {
        json_response(
            200,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "message": what}),
        )
    };
    match (method, action) {
        (&Method::POST, "expire") => {
            shared.cluster().store.expire();
            shared.changed.notify_waiters();
            ok("history dropped")
        }
        (&Method::POST, "close-watches") => {
            shared.close_watches();
            ok("watches closed")
        }
        (&Method::POST, "pause") => {
            shared.paused.store(true, Ordering::SeqCst);
            shared.close_watches();
            ok("paused")
        }
        (&Method::POST, "resume") => {
            shared.paused.store(false, Ordering::SeqCst);
            ok("resumed")
        }
        (&Method::GET, "stats") => json_response(200, &shared.stats_json()),
        _ => error_response(shared, &ApiError::no_route(action)),
    }
}

/// Where the server listens, once bound.
#[must_use]
pub fn url_of(addr: SocketAddr) -> String {
    format!("https://{addr}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_components() {
        assert_eq!(
            decode("app%3Dweb%2Ctier+in+%28a%2Cb%29"),
            "app=web,tier in (a,b)"
        );
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }

    #[test]
    fn negotiates_what_kubectl_and_kube_ask_for() {
        assert_eq!(negotiate(None), Some(Wants::Json));
        assert_eq!(
            negotiate(Some(
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
            )),
            Some(Wants::Table)
        );
        assert_eq!(
            negotiate(Some(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            )),
            Some(Wants::Metadata)
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf,application/json")),
            Some(Wants::Json)
        );
        assert_eq!(
            negotiate(Some(
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
            )),
            Some(Wants::Json)
        );
        assert_eq!(negotiate(Some("application/vnd.kubernetes.protobuf")), None);
    }
}
