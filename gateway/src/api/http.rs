//! The HTTP/1.1 server behind `[api].listen`: `GET /metrics`, `GET /status`, `GET /`.
//!
//! Split as the rest of the gateway is: [`respond`] is pure (request head and snapshot in,
//! [`Response`] out) and holds every decision; [`serve`] is the socket shell around it.
//!
//! Invariants of the shell, so that a bad client can never hurt the gateway:
//! - the request head is capped at [`MAX_HEAD`] bytes, and a request body is never read;
//! - a connection lives at most [`CONNECTION_TIMEOUT`], reading and writing included;
//! - at most [`MAX_CONNECTIONS`] are served at once, each in its own task; more are closed
//!   at once;
//! - one response per connection, sent with `Connection: close`;
//! - the snapshot lock is held only to clone the snapshot, never while rendering or writing,
//!   so a client cannot stall the data path that publishes it;
//! - connection errors are logged at debug level; nothing is logged per request above trace.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tracing::{debug, trace};

use super::metrics;
use crate::status::{SharedSnapshot, Snapshot};

/// Largest request head accepted, request line and headers included.
pub const MAX_HEAD: usize = 8 * 1024;

/// Longest a connection may live, from accept to close.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;

/// Bytes read and thrown away after the response before closing. Closing a socket with
/// unread data makes the kernel send a reset, which can destroy the response before the
/// client has read it (a 400 sent to a client still sending an oversized head, say).
const DRAIN_LIMIT: usize = 64 * 1024;

/// Pause after a failed accept, typically the process being out of file descriptors, so
/// the accept loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// What to send back: everything that varies between responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// The `Allow` header, sent with 405.
    pub allow: Option<&'static str>,
}

impl Response {
    fn text(status: u16, body: String) -> Self {
        Response {
            status,
            content_type: TEXT,
            body,
            allow: None,
        }
    }

    /// The reason phrase of [`Response::status`].
    pub fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            500 => "Internal Server Error",
            _ => "",
        }
    }

    /// The response as sent on the wire: status line, headers, body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        if let Some(allow) = self.allow {
            head.push_str("Allow: ");
            head.push_str(allow);
            head.push_str("\r\n");
        }
        // Counters change a few times a second: a cached copy is a wrong copy.
        head.push_str("Cache-Control: no-store\r\nConnection: close\r\n\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

/// Answers one request.
///
/// `request_head` is what the client sent: the request line and headers up to and
/// including the empty line that ends them; anything after it is ignored. A head that is
/// incomplete, longer than [`MAX_HEAD`] or not HTTP/1.x gets 400; a method other than GET
/// 405; a path other than `/`, `/metrics` and `/status` 404. The query string is ignored.
pub fn respond(request_head: &[u8], snapshot: &Snapshot) -> Response {
    let request = match parse_request(request_head) {
        Ok(request) => request,
        Err(why) => return Response::text(400, format!("bad request: {why}\n")),
    };
    if request.method != "GET" {
        return Response {
            allow: Some("GET"),
            ..Response::text(
                405,
                format!("{} is not allowed here; use GET\n", request.method),
            )
        };
    }
    match request.path {
        "/" => Response::text(
            200,
            format!(
                "egret-gateway {} ({})\n\n\
                 /metrics  counters and state, Prometheus text format\n\
                 /status   the same as JSON, as `egret-gateway status` reads it\n",
                env!("CARGO_PKG_VERSION"),
                snapshot.name
            ),
        ),
        "/metrics" => Response {
            content_type: metrics::CONTENT_TYPE,
            ..Response::text(200, metrics::render_prometheus(snapshot))
        },
        "/status" => match serde_json::to_string_pretty(snapshot) {
            Ok(mut json) => {
                json.push('\n');
                Response {
                    content_type: JSON,
                    ..Response::text(200, json)
                }
            }
            Err(error) => Response::text(500, format!("cannot encode the status: {error}\n")),
        },
        path => Response::text(
            404,
            format!("no such path: {path}; try /metrics or /status\n"),
        ),
    }
}

/// The parts of a request line [`respond`] looks at.
struct Request<'a> {
    method: &'a str,
    path: &'a str,
}

fn parse_request(bytes: &[u8]) -> Result<Request<'_>, &'static str> {
    let Some(end) = find_head_end(bytes, 0) else {
        return Err(if bytes.len() >= MAX_HEAD {
            "request head larger than 8 KiB"
        } else {
            "incomplete request head"
        });
    };
    if end > MAX_HEAD {
        return Err("request head larger than 8 KiB");
    }
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "request head is not UTF-8")?;
    let mut lines = head
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the request line is not `METHOD /path HTTP/1.1`");
    };
    if method.is_empty() || !method.bytes().all(is_token_byte) {
        return Err("the method is not a token");
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control() || b > 0x7e) {
        return Err("the request target is not an absolute path");
    }
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err("only HTTP/1.0 and HTTP/1.1 are spoken here");
    }
    // Headers are not needed, but a head whose lines are not `name: value` is not HTTP.
    for line in lines.take_while(|line| !line.is_empty()) {
        let Some((name, _)) = line.split_once(':') else {
            return Err("a header line has no colon");
        };
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err("a header name is not a token");
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Ok(Request { method, path })
}

/// `tchar` of RFC 9110, section 5.6.2.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The length of the head at the start of `bytes`, its final empty line included, if the
/// head is complete. Lines may end in CRLF or a bare LF (RFC 9112 lets a recipient accept
/// both). `from` is where to start looking, so that a caller reading the head piece by
/// piece does not scan it again each time; an end that began before `from` is still found
/// when `from` is no more than 2 bytes past its first line feed.
pub(super) fn find_head_end(bytes: &[u8], from: usize) -> Option<usize> {
    let start = from.min(bytes.len());
    bytes[start..]
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .find_map(|(i, _)| {
            let rest = &bytes[start + i + 1..];
            if rest.starts_with(b"\n") {
                Some(start + i + 2)
            } else if rest.starts_with(b"\r\n") {
                Some(start + i + 3)
            } else {
                None
            }
        })
}

/// Serves the API on `listener` until `shutdown` completes.
///
/// Each connection is answered from the latest `snapshot` in its own task. Errors of one
/// connection are logged at debug level and end only that connection; connections still
/// open at shutdown finish on their own within [`CONNECTION_TIMEOUT`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    snapshot: SharedSnapshot,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(%error, "cannot accept an API connection");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Some(slot) = Slot::take(&open) else {
            debug!(%peer, "{MAX_CONNECTIONS} API connections already open; closing this one");
            continue;
        };
        let snapshot = Arc::clone(&snapshot);
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, &snapshot)).await {
                Ok(Ok(())) => trace!(%peer, "API request served"),
                Ok(Err(error)) => debug!(%peer, %error, "API connection failed"),
                Err(_) => debug!(%peer, "API connection timed out; closed"),
            }
        });
    }
}

/// One connection: read the head, answer, close.
async fn connection(mut stream: TcpStream, snapshot: &SharedSnapshot) -> io::Result<()> {
    let mut head = vec![0; MAX_HEAD];
    let mut len = 0;
    loop {
        let n = read(&stream, &mut head[len..]).await?;
        if n == 0 {
            break;
        }
        let from = len.saturating_sub(2);
        len += n;
        if len == head.len() || find_head_end(&head[..len], from).is_some() {
            break;
        }
    }
    if len == 0 {
        // Connected and left without a word: a port check, not an error.
        return Ok(());
    }
    let snapshot = snapshot
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let response = respond(&head[..len], &snapshot);
    write_all(&stream, &response.to_bytes()).await?;

    // Send FIN, then read what the client may still be sending until it closes, so that
    // closing does not reset the connection under a response it has not read yet.
    std::future::poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await?;
    let mut drained = 0;
    while drained < DRAIN_LIMIT {
        match read(&stream, &mut head).await? {
            0 => break,
            n => drained += n,
        }
    }
    Ok(())
}

/// Reads what is available into `buf`; 0 means the peer closed its side.
async fn read(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// One of [`MAX_CONNECTIONS`] connection slots, given back on drop.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Slot> {
        if open.fetch_add(1, Ordering::Relaxed) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(Arc::clone(open)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::api::fixtures;

    fn get(path: &str) -> Response {
        let head = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:9477\r\nAccept: */*\r\n\r\n");
        respond(head.as_bytes(), &fixtures::snapshot())
    }

    #[test]
    fn metrics_are_prometheus_text() {
        let response = get("/metrics");
        assert_eq!(response.status, 200);
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
        assert_eq!(response.status, 200);
        assert_eq!(response.content_type, "application/json");
        assert!(response.body.starts_with("{\n  \"name\": \"gw1\","));
        let back: Snapshot = serde_json::from_str(&response.body).expect("JSON");
        assert_eq!(back, fixtures::snapshot());
    }

    #[test]
    fn index_names_the_paths() {
        let response = get("/");
        assert_eq!(response.status, 200);
        assert_eq!(response.content_type, "text/plain; charset=utf-8");
        assert!(response.body.contains("/metrics"));
        assert!(response.body.contains("/status"));
        assert!(response.body.contains("(gw1)"));
    }

    #[test]
    fn query_strings_are_ignored() {
        assert_eq!(get("/metrics?format=text").status, 200);
        assert_eq!(get("/status#x").status, 200);
    }

    #[test]
    fn other_paths_are_not_found() {
        for path in ["/metrics/", "/favicon.ico", "/status.json", "//metrics"] {
            let response = get(path);
            assert_eq!(response.status, 404, "{path}");
            assert!(response.body.contains(path), "{path}");
        }
    }

    #[test]
    fn other_methods_are_not_allowed() {
        for method in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"] {
            let head = format!("{method} /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
            let response = respond(head.as_bytes(), &Snapshot::default());
            assert_eq!(response.status, 405, "{method}");
            assert_eq!(response.allow, Some("GET"), "{method}");
            let wire = String::from_utf8(response.to_bytes()).expect("UTF-8");
            assert!(wire.contains("\r\nAllow: GET\r\n"), "{wire}");
        }
    }

    #[test]
    fn http_1_0_and_bare_line_feeds_are_served() {
        let snapshot = Snapshot::default();
        assert_eq!(
            respond(b"GET /status HTTP/1.0\r\n\r\n", &snapshot).status,
            200
        );
        assert_eq!(
            respond(b"GET /status HTTP/1.1\nHost: x\n\n", &snapshot).status,
            200
        );
    }

    #[test]
    fn bytes_after_the_head_are_ignored() {
        let head = b"GET /status HTTP/1.1\r\n\r\nGET /nothing HTTP/1.1\r\n\r\n";
        assert_eq!(respond(head, &Snapshot::default()).status, 200);
    }

    #[test]
    fn garbage_is_a_bad_request() {
        let snapshot = Snapshot::default();
        for head in [
            &b""[..],
            b"\r\n\r\n",
            b"GET /status HTTP/1.1\r\n",
            b"GET /status HTTP/1.1\r\nHost: x\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET /status HTTP/2\r\n\r\n",
            b"GET  /status HTTP/1.1\r\n\r\n",
            b"GET /status\r\n\r\n",
            b"GET status HTTP/1.1\r\n\r\n",
            b"GET http://gw1/status HTTP/1.1\r\n\r\n",
            b"GET /st\x01atus HTTP/1.1\r\n\r\n",
            b"G(T /status HTTP/1.1\r\n\r\n",
            b"GET /status HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /status HTTP/1.1\r\nbad name: x\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
        ] {
            let response = respond(head, &snapshot);
            assert_eq!(response.status, 400, "{:?}", String::from_utf8_lossy(head));
            assert!(response.body.starts_with("bad request: "));
        }
    }

    #[test]
    fn oversized_heads_are_bad_requests() {
        let snapshot = Snapshot::default();
        let padding = "a".repeat(MAX_HEAD);
        // Complete but too long.
        let head = format!("GET /status HTTP/1.1\r\nX-Pad: {padding}\r\n\r\n");
        let response = respond(head.as_bytes(), &snapshot);
        assert_eq!(response.status, 400);
        assert!(response.body.contains("8 KiB"), "{}", response.body);
        // Cut off at the cap, as the server hands it over.
        let response = respond(&head.as_bytes()[..MAX_HEAD], &snapshot);
        assert_eq!(response.status, 400);
        assert!(response.body.contains("8 KiB"), "{}", response.body);
        // Just below the cap is fine.
        let fits = format!(
            "GET /status HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            &padding[..MAX_HEAD - 33]
        );
        assert_eq!(fits.len(), MAX_HEAD);
        assert_eq!(respond(fits.as_bytes(), &snapshot).status, 200);
    }

    #[test]
    fn the_wire_form_closes_the_connection() {
        let response = Response::text(404, "no\n".to_owned());
        assert_eq!(
            String::from_utf8(response.to_bytes()).expect("UTF-8"),
            "HTTP/1.1 404 Not Found\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\n\
             Cache-Control: no-store\r\n\
             Connection: close\r\n\
             \r\n\
             no\n"
        );
    }

    #[test]
    fn the_head_end_is_found_piece_by_piece() {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nrest";
        assert_eq!(find_head_end(head, 0), Some(27));
        // Each way of splitting the head in two reads finds the same end, resuming where
        // the server resumes.
        for cut in 1..head.len() {
            let found = find_head_end(&head[..cut], 0)
                .or_else(|| find_head_end(head, cut.saturating_sub(2)));
            assert_eq!(found, Some(27), "cut at {cut}");
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n", 0), None);
        assert_eq!(find_head_end(b"", 5), None);
    }

    #[test]
    fn connection_slots_are_capped_and_given_back() {
        let open = Arc::new(AtomicUsize::new(0));
        let slots: Vec<Slot> = (0..MAX_CONNECTIONS)
            .map(|_| Slot::take(&open).expect("a free slot"))
            .collect();
        assert!(Slot::take(&open).is_none());
        assert_eq!(open.load(Ordering::Relaxed), MAX_CONNECTIONS);
        drop(slots);
        assert_eq!(open.load(Ordering::Relaxed), 0);
        assert!(Slot::take(&open).is_some());
    }

    proptest! {
        #[test]
        fn any_bytes_get_an_answer(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let response = respond(&bytes, &Snapshot::default());
            prop_assert!([200, 400, 404, 405].contains(&response.status));
        }

        #[test]
        fn any_request_line_gets_an_answer(line in "[ -~]{0,60}") {
            let head = format!("{line}\r\n\r\n");
            let response = respond(head.as_bytes(), &Snapshot::default());
            prop_assert!([200, 400, 404, 405].contains(&response.status));
        }
    }
}
