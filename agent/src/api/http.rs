//! The answers of the agent's API: `GET /metrics`, `GET /status`, `GET /`. Pure: a method,
//! a path and a [`Snapshot`] in, a [`Response`] out.

use egret_api::Response;
use hyper::{Method, StatusCode};

use super::metrics::{self, Snapshot};

/// Answers one request from `snapshot`. A method other than GET gets 405, a path other than
/// `/`, `/metrics` and `/status` 404; `/status` is 503 when the report cannot be read.
pub fn respond(method: &Method, path: &str, snapshot: &Snapshot) -> Response {
    egret_api::route(
        method,
        path,
        || {
            format!(
                "egret-agent {}\n\n\
                 /metrics  counters and state, Prometheus text format\n\
                 /status   the report of `egret-agent status --json`\n",
                env!("CARGO_PKG_VERSION"),
            )
        },
        || metrics::render(snapshot),
        || match &snapshot.report {
            Ok(report) => Response::json(report),
            Err(error) => Response::text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the agent's state: {error}\n"),
            ),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::metrics::tests::snapshot;

    #[test]
    fn each_path_gets_its_answer() {
        let snapshot = snapshot();
        let metrics = respond(&Method::GET, "/metrics", &snapshot);
        assert_eq!(metrics.status, StatusCode::OK);
        assert_eq!(
            metrics.content_type,
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(metrics.body, metrics::render(&snapshot));

        let status = respond(&Method::GET, "/status", &snapshot);
        assert_eq!(status.content_type, "application/json");
        let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
        assert_eq!(json["node_name"], "node1");
        assert_eq!(json["policies"][0]["packets"], 12);

        let index = respond(&Method::GET, "/", &snapshot);
        assert!(index.body.contains("/metrics") && index.body.contains("/status"));
        assert_eq!(
            respond(&Method::GET, "/x", &snapshot).status,
            StatusCode::NOT_FOUND
        );
        let post = respond(&Method::POST, "/metrics", &snapshot);
        assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.allow, Some("GET"));
    }
}
