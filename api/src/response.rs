//! What a responder answers, and how it goes on the wire.

use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};

/// Plain text, for people.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// JSON, for `/status`.
pub const JSON: &str = "application/json";
/// The Prometheus text exposition format, version 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What to send back: everything that varies between responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
    /// The `Allow` header, sent with 405.
    pub allow: Option<&'static str>,
}

impl Response {
    /// `body` as plain text with `status`.
    pub fn text(status: StatusCode, body: String) -> Self {
        Response {
            status,
            content_type: TEXT,
            body,
            allow: None,
        }
    }

    /// 405 for any method but GET, which is all these APIs answer.
    pub fn get_only(method: &hyper::Method) -> Self {
        Response {
            allow: Some("GET"),
            ..Response::text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here; use GET\n"),
            )
        }
    }

    /// `value` as pretty JSON and a final newline, or 500 if it cannot be encoded.
    pub fn json(value: &impl serde::Serialize) -> Self {
        match serde_json::to_string_pretty(value) {
            Ok(mut json) => {
                json.push('\n');
                Response {
                    content_type: JSON,
                    ..Response::text(StatusCode::OK, json)
                }
            }
            Err(error) => Response::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the status: {error}\n"),
            ),
        }
    }

    /// The response as hyper sends it: these fields, and `Cache-Control: no-store`. hyper
    /// adds `Content-Length` (the body is sent whole) and `Date`, and `Connection: close`
    /// as the server serves one request per connection.
    pub fn into_http(self) -> hyper::Response<http_body_util::Full<Bytes>> {
        let mut response = hyper::Response::new(http_body_util::Full::new(Bytes::from(self.body)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if let Some(allow) = self.allow {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        // Counters change a few times a second: a cached copy is a wrong copy.
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// The paths both daemons answer, GET only: `/` (the `index` text), `/metrics` (the
/// `metrics` text, Prometheus format) and `/status` (the `status` response); 404 for any
/// other path and 405 for any other method. Only the chosen answer is made.
pub fn route(
    method: &hyper::Method,
    path: &str,
    index: impl FnOnce() -> String,
    metrics: impl FnOnce() -> String,
    status: impl FnOnce() -> Response,
) -> Response {
    if method != hyper::Method::GET {
        return Response::get_only(method);
    }
    match path {
        "/" => Response::text(StatusCode::OK, index()),
        "/metrics" => Response {
            content_type: PROMETHEUS,
            ..Response::text(StatusCode::OK, metrics())
        },
        "/status" => status(),
        path => Response::text(
            StatusCode::NOT_FOUND,
            format!("no such path: {path}; try /metrics or /status\n"),
        ),
    }
}
