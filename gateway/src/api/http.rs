//! The answers of the API behind `[api].listen`: `GET /metrics`, `GET /status`, `GET /`.
//!
//! [`respond`] is pure and holds every decision: a request's method and path and a snapshot
//! in, a [`Response`] out. Reading and parsing requests is hyper's job, in the socket shell
//! ([`server`](super::server)); a request hyper cannot parse never gets here (hyper answers
//! 400 or 431 itself, or closes the connection).

use hyper::Method;

pub use egret_api::Response;

use super::metrics;
use crate::status::Snapshot;

/// Answers one request: `method` and `path` (the request target's path, without its query,
/// as hyper hands it over) from the latest `snapshot`. A method other than GET gets 405, a
/// path other than `/`, `/metrics` and `/status` 404.
pub fn respond(method: &Method, path: &str, snapshot: &Snapshot) -> Response {
    egret_api::route(
        method,
        path,
        || {
            format!(
                "egret-gateway {} ({})\n\n\
                 /metrics  counters and state, Prometheus text format\n\
                 /status   the same as JSON, as `egret-gateway status` reads it\n",
                env!("CARGO_PKG_VERSION"),
                snapshot.name
            )
        },
        || metrics::render_prometheus(snapshot),
        || Response::json(snapshot),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use hyper::StatusCode;
    use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};

    use super::*;
    use crate::api::fixtures;

    fn get(path: &str) -> Response {
        respond(&Method::GET, path, &fixtures::snapshot())
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let response = get("/metrics");
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(
            response.content_type,
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(
            response.body,
            metrics::render_prometheus(&fixtures::snapshot())
        );
        assert_eq!(response.allow, None);
    }

    #[test]
    fn status_is_pretty_json_of_the_snapshot() {
        let response = get("/status");
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.content_type, "application/json");
        assert!(response.body.starts_with("{\n  \"name\": \"gw1\","));
        assert!(response.body.ends_with("}\n"));
        let back: Snapshot = serde_json::from_str(&response.body).expect("JSON");
        assert_eq!(back, fixtures::snapshot());
    }

    #[test]
    fn index_names_the_paths() {
        let response = get("/");
        assert_eq!(response.status, StatusCode::OK);
        assert_eq!(response.content_type, "text/plain; charset=utf-8");
        assert!(response.body.contains("/metrics"));
        assert!(response.body.contains("/status"));
        assert!(response.body.contains("(gw1)"));
    }

    #[test]
    fn other_paths_are_not_found() {
        for path in [
            "/metrics/",
            "/favicon.ico",
            "/status.json",
            "//metrics",
            "*",
        ] {
            let response = get(path);
            assert_eq!(response.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(response.content_type, "text/plain; charset=utf-8");
            assert_eq!(
                response.body,
                format!("no such path: {path}; try /metrics or /status\n")
            );
        }
    }

    #[test]
    fn other_methods_are_not_allowed() {
        for method in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "BREW"] {
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let response = respond(&method, "/metrics", &Snapshot::default());
            assert_eq!(response.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
            assert_eq!(response.allow, Some("GET"), "{method}");
            assert_eq!(
                response.body,
                format!("{method} is not allowed here; use GET\n")
            );
        }
    }

    #[test]
    fn the_http_response_carries_every_field_and_no_store() {
        let response = respond(&Method::POST, "/status", &Snapshot::default()).into_http();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let headers = response.headers();
        assert_eq!(headers[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert_eq!(headers[ALLOW], "GET");
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        assert_eq!(headers.len(), 3);

        let response = get("/metrics").into_http();
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(
            headers[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        assert!(!headers.contains_key(ALLOW));
    }

    proptest! {
        #[test]
        fn any_request_gets_an_answer(
            method in "[A-Z]{1,10}",
            path in "[ -~]{0,60}",
        ) {
            let method = Method::from_bytes(method.as_bytes()).expect("a token");
            let response = respond(&method, &path, &Snapshot::default());
            prop_assert!([200, 404, 405].contains(&response.status.as_u16()));
            prop_assert_eq!(response.status == StatusCode::METHOD_NOT_ALLOWED, method != Method::GET);
            // Every answer is a valid hyper response.
            let _ = response.into_http();
        }
    }
}
