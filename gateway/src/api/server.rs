//! The gateway's API server: the shared, hardened shell of [`egret_api::Server`] answering
//! with [`respond`] from the latest snapshot.
//!
//! The limits and their invariants (per-client and total connection caps, header timeout,
//! connection lifetime, one request per connection) live in `egret-api`, shared with the
//! agent; refusals are `egret_gateway_api_connections_refused_total{reason}` here. The
//! snapshot lock (and the Kubernetes reporter's) is held only to copy what it guards, never
//! while rendering or writing, so a client cannot stall the data path that publishes it.

use std::future::Future;

use egret_api::{Limits, lock};
use hyper::Method;
use tokio::net::TcpListener;

use super::http::respond;
use crate::status::{ApiStatus, SharedKubernetes, SharedSnapshot};

/// Serves the API on `listener` with the gateway's [`Limits`] until `shutdown` completes,
/// showing the Kubernetes reporter's state when there is one. Connections still open then
/// are dropped with the runtime.
pub async fn serve(
    listener: TcpListener,
    snapshot: SharedSnapshot,
    kubernetes: Option<SharedKubernetes>,
    shutdown: impl Future<Output = ()>,
) {
    let mut server = Server::new(snapshot, Limits::default());
    server.kubernetes = kubernetes;
    server.serve(listener, shutdown).await;
}

/// The API server: the snapshot it answers from, and the shared server with its limits and
/// connection counts. Clones share the counts.
#[derive(Clone)]
pub struct Server {
    snapshot: SharedSnapshot,
    api: egret_api::Server,
    /// The Kubernetes reporter's state, with `[kubernetes]`.
    kubernetes: Option<SharedKubernetes>,
}

impl Server {
    pub fn new(snapshot: SharedSnapshot, limits: Limits) -> Self {
        Server {
            snapshot,
            api: egret_api::Server::new(limits),
            kubernetes: None,
        }
    }

    /// The server's connection counters, as `/metrics` and `/status` show them.
    pub fn status(&self) -> ApiStatus {
        self.api.status()
    }

    /// Accepts and serves connections on `listener` until `shutdown` completes.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let Server {
            snapshot,
            api,
            kubernetes,
        } = self;
        let answer = move |method: &Method, path: &str, status: ApiStatus| {
            // Copy under each lock, render after both are released.
            let mut current = lock(&snapshot).clone();
            current.api = status;
            if let Some(kubernetes) = &kubernetes {
                current.kubernetes = lock(kubernetes).clone();
            }
            respond(method, path, &current)
        };
        api.serve(listener, answer, shutdown).await;
    }
}

/// The server on loopback, against real sockets: the clients bind to their own loopback
/// addresses (all of 127/8 is local on Linux) so that the per-client limit tells them apart.
/// Times are short where a test is about them and a minute where it is not, so that nothing
/// but the mechanism under test can close a connection. Tests wait for the server's own
/// counters to reach a state, never for a guessed time.
#[cfg(test)]
mod tests {
    use std::io;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use egret_api::admission::{Admission, MAX_HEAD};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::api::{fetch_status, fixtures, metrics};
    use crate::status::Snapshot;

    /// Where the slow clients come from.
    const SLOW: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
    /// Where the scrapes come from.
    const SCRAPER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
    /// A third client.
    const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
    /// A timeout no test reaches unless it is about that timeout.
    const NEVER: Duration = Duration::from_secs(60);
    /// How long a test waits for what must happen, before failing.
    const PATIENCE: Duration = Duration::from_secs(10);
    /// A request head without its final empty line, as a slowloris client keeps sending.
    const PARTIAL_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: egret\r\nX-Slow: a\r\n";

    struct Running {
        addr: SocketAddr,
        server: Server,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    /// A server on 127.0.0.1 with `limits`, answering from the fixture snapshot.
    async fn start(limits: Limits) -> Running {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = Server::new(Arc::new(Mutex::new(fixtures::snapshot())), limits);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.clone().serve(listener, async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            server,
            stop,
            task,
        }
    }

    fn quick(header_read_timeout: Duration, lifetime: Duration) -> Limits {
        Limits {
            header_read_timeout,
            lifetime,
            ..Limits::default()
        }
    }

    async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind((from, 0).into()).expect("bind the client");
        socket.connect(to).await.expect("connect")
    }

    /// A client that has sent part of a request head and sends no more.
    async fn slow_client(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let mut stream = connect_from(from, to).await;
        // A refused connection may be reset before this write: that is the server's answer,
        // which the test reads from the counters.
        let _ = stream.write_all(PARTIAL_HEAD).await;
        stream
    }

    /// Sends `request` from `from` and reads everything until the server closes (an empty
    /// response when it closed without a word).
    async fn exchange(from: Ipv4Addr, to: SocketAddr, request: &[u8]) -> io::Result<String> {
        let mut stream = connect_from(from, to).await;
        let exchange = async {
            stream.write_all(request).await?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await?;
            Ok(String::from_utf8_lossy(&response).into_owned())
        };
        tokio::time::timeout(PATIENCE, exchange)
            .await
            .unwrap_or_else(|_| panic!("no answer within {PATIENCE:?}"))
    }

    /// `GET path` from `from`: the whole response.
    async fn get(from: Ipv4Addr, to: SocketAddr, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nHost: egret\r\nAccept: */*\r\n\r\n");
        exchange(from, to, request.as_bytes())
            .await
            .expect("an answer")
    }

    /// Splits a response into its head (status line and headers) and body.
    fn split(response: &str) -> (&str, &str) {
        response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of head in {response:?}"))
    }

    fn refused(status: &ApiStatus, reason: &str) -> u64 {
        status.connections_refused[reason]
    }

    /// Waits until the server's counters satisfy `done`.
    async fn wait_for(server: &Server, what: &str, done: impl Fn(&ApiStatus) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = server.status();
            if done(&status) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {PATIENCE:?}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Reads from `stream` until the server closes it, and returns when that was, from
    /// `since`. The server must send nothing.
    async fn closed(stream: &mut TcpStream, since: Instant) -> Duration {
        let mut buf = [0; 1024];
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("still open after {PATIENCE:?}"));
        match read {
            Ok(0) => {}
            Ok(n) => panic!(
                "the server answered: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}"),
        }
        since.elapsed()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn scrapes_are_answered_while_300_slow_clients_hold_partial_heads() {
        // The gateway's limits, except that no slow client is ever cut during the test: the
        // scrapes must get through while all of them still hold on.
        let api = start(quick(NEVER, NEVER)).await;
        let mut slow = Vec::new();
        for _ in 0..300 {
            slow.push(slow_client(SLOW, api.addr).await);
        }
        wait_for(
            &api.server,
            "every slow connection admitted or refused",
            |s| s.connections_open + refused(s, "client_limit") + refused(s, "total_limit") == 300,
        )
        .await;
        let status = api.server.status();
        assert_eq!(status.connections_open, 16, "{status:?}");
        assert_eq!(refused(&status, "client_limit"), 284, "{status:?}");

        for scrape in 0..40 {
            let response = get(SCRAPER, api.addr, "/metrics").await;
            let (head, body) = split(&response);
            assert!(
                head.starts_with("HTTP/1.1 200 OK\r\n"),
                "scrape {scrape}: {head}"
            );
            assert!(
                head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
                "{head}"
            );
            assert!(body.contains("\negret_gateway_info{name=\"gw1\""), "{body}");
            // The 16 slow clients still hold their slots, this scrape has one more.
            assert!(
                body.contains("\negret_gateway_api_connections_open 17\n"),
                "scrape {scrape}: {body}"
            );
            assert!(body.contains(
                "\negret_gateway_api_connections_refused_total{reason=\"client_limit\"} 284\n"
            ));
        }
        assert_eq!(api.server.status().connections_open, 16);
        drop(slow);
        wait_for(&api.server, "the slow connections closed", |s| {
            s.connections_open == 0
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_client_over_its_limit_is_closed_at_once_while_others_are_served() {
        let api = start(Limits {
            per_client: 4,
            ..quick(NEVER, NEVER)
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(slow_client(SLOW, api.addr).await);
        }
        wait_for(&api.server, "4 slow connections", |s| {
            s.connections_open == 4
        })
        .await;

        // The fifth is closed without a word, long before a timeout could have cut it.
        let since = Instant::now();
        let mut fifth = slow_client(SLOW, api.addr).await;
        closed(&mut fifth, since).await;
        let status = api.server.status();
        assert_eq!(refused(&status, "client_limit"), 1, "{status:?}");
        assert_eq!(status.connections_open, 4);

        // Another client is served meanwhile.
        let response = get(SCRAPER, api.addr, "/status").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");

        // A slot given back is the client's again.
        drop(held.pop());
        wait_for(&api.server, "a slot given back", |s| {
            s.connections_open == 3
        })
        .await;
        held.push(slow_client(SLOW, api.addr).await);
        wait_for(&api.server, "the slot taken again", |s| {
            s.connections_open == 4
        })
        .await;
        assert_eq!(refused(&api.server.status(), "client_limit"), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_total_cap_refuses_every_client_until_a_slot_is_free() {
        let api = start(Limits {
            per_client: 4,
            total: 6,
            ..quick(NEVER, NEVER)
        })
        .await;
        let mut held = Vec::new();
        for from in [SLOW, SLOW, SLOW, SLOW, OTHER, OTHER] {
            held.push(slow_client(from, api.addr).await);
        }
        wait_for(&api.server, "6 slow connections", |s| {
            s.connections_open == 6
        })
        .await;

        let request = b"GET /metrics HTTP/1.1\r\nHost: egret\r\n\r\n";
        match exchange(SCRAPER, api.addr, request).await {
            Ok(response) => assert_eq!(response, "", "a refused connection gets no answer"),
            Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}"),
        }
        let status = api.server.status();
        assert_eq!(refused(&status, "total_limit"), 1, "{status:?}");
        assert_eq!(refused(&status, "client_limit"), 0, "{status:?}");

        drop(held.remove(0));
        wait_for(&api.server, "a slot given back", |s| {
            s.connections_open == 5
        })
        .await;
        let response = get(SCRAPER, api.addr, "/metrics").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_client_is_cut_after_the_header_timeout() {
        let timeout = Duration::from_millis(300);
        let api = start(quick(timeout, NEVER)).await;

        let since = Instant::now();
        let mut partial = slow_client(SLOW, api.addr).await;
        let mut silent = connect_from(SLOW, api.addr).await;
        // One byte of header every 50 ms, the head never complete: the timeout bounds the
        // whole head, not the pause between reads.
        let mut trickling = connect_from(SLOW, api.addr).await;
        let trickle = tokio::spawn(async move {
            trickling.write_all(b"GET /metrics HTTP/1.1\r\n").await?;
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                trickling.write_all(b"x").await?;
            }
            Ok::<_, io::Error>(())
        });
        wait_for(&api.server, "3 slow connections", |s| {
            s.connections_open == 3
        })
        .await;

        for stream in [&mut partial, &mut silent] {
            let after = closed(stream, since).await;
            assert!(after >= timeout, "cut after {after:?}");
        }
        let trickled = tokio::time::timeout(PATIENCE, trickle)
            .await
            .expect("the trickle stops")
            .expect("the trickle task");
        assert!(trickled.is_err(), "10 s of trickling went through");
        assert!(since.elapsed() >= timeout);
        wait_for(&api.server, "all three cut", |s| s.connections_open == 0).await;
        // A prompt client is served as before.
        let response = get(SCRAPER, api.addr, "/").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_is_cut_at_the_end_of_its_lifetime() {
        let lifetime = Duration::from_millis(300);
        let api = start(quick(NEVER, lifetime)).await;
        let since = Instant::now();
        let mut partial = slow_client(SLOW, api.addr).await;
        let after = closed(&mut partial, since).await;
        assert!(after >= lifetime, "cut after {after:?}");
        wait_for(&api.server, "the connection released", |s| {
            s.connections_open == 0
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_wire_form_is_what_scrapers_expect() {
        let api = start(Limits::default()).await;

        // Exactly the pure renderer's text, the server's own counters in it.
        let response = get(SCRAPER, api.addr, "/metrics?format=text").await;
        let (head, body) = split(&response);
        let mut expected = fixtures::snapshot();
        expected.api = Admission::new(Limits::default()).status();
        expected.api.connections_open = 1;
        assert_eq!(body, metrics::render_prometheus(&expected));
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
        let mut headers: Vec<&str> = lines.filter(|l| !l.starts_with("Date: ")).collect();
        headers.sort_unstable();
        let length = format!("Content-Length: {}", body.len());
        assert_eq!(
            headers,
            [
                "Cache-Control: no-store",
                "Connection: close",
                length.as_str(),
                "Content-Type: text/plain; version=0.0.4; charset=utf-8",
            ]
        );

        let response = exchange(
            SCRAPER,
            api.addr,
            b"POST /metrics HTTP/1.1\r\nHost: egret\r\nContent-Length: 3\r\n\r\nabc",
        )
        .await
        .expect("an answer");
        let (head, body) = split(&response);
        assert!(
            head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nAllow: GET\r\n"), "{head}");
        assert!(head.contains("\r\nCache-Control: no-store\r\n"), "{head}");
        assert_eq!(body, "POST is not allowed here; use GET\n");

        let response = get(SCRAPER, api.addr, "/favicon.ico").await;
        let (head, body) = split(&response);
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        assert_eq!(
            body,
            "no such path: /favicon.ico; try /metrics or /status\n"
        );

        let response = exchange(SCRAPER, api.addr, b"GET /status HTTP/1.0\r\n\r\n")
            .await
            .expect("an answer");
        assert!(response.starts_with("HTTP/1.0 200 OK\r\n"), "{response}");
        let (_, body) = split(&response);
        let served: Snapshot = serde_json::from_str(body).expect("JSON");
        assert_eq!(served.name, "gw1");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn malformed_requests_are_refused_by_hyper() {
        let api = start(Limits::default()).await;
        for request in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"[..],
            b"GET /status HTTP/2\r\n\r\n",
            b"G(T /status HTTP/1.1\r\n\r\n",
            b"GET /status HTTP/1.1\r\nbad name: x\r\n\r\n",
        ] {
            let response = exchange(SCRAPER, api.addr, request)
                .await
                .expect("an answer");
            assert!(
                response.is_empty() || response.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{:?}: {response:?}",
                String::from_utf8_lossy(request)
            );
        }
        // A head over MAX_HEAD is not served: 431, or a reset if the server closed before
        // reading the rest of it.
        let padding = "a".repeat(MAX_HEAD);
        let request = format!("GET /status HTTP/1.1\r\nX-Pad: {padding}\r\n\r\n");
        match exchange(SCRAPER, api.addr, request.as_bytes()).await {
            Ok(response) => assert!(
                response.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
                "{response:?}"
            ),
            Err(error) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}"),
        }
        wait_for(&api.server, "every connection closed", |s| {
            s.connections_open == 0
        })
        .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn egret_gateway_status_reads_the_server() {
        let api = start(Limits::default()).await;
        let addr = api.addr;
        let fetched = tokio::task::spawn_blocking(move || fetch_status(addr, PATIENCE))
            .await
            .expect("the client thread")
            .expect("the status");
        let mut expected = fixtures::snapshot();
        expected.api = Admission::new(Limits::default()).status();
        expected.api.connections_open = 1;
        assert_eq!(fetched, expected);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shutdown_stops_accepting() {
        let api = start(Limits::default()).await;
        let Running {
            addr, stop, task, ..
        } = api;
        stop.send(()).expect("the server runs");
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("serve returns")
            .expect("the server task");
        // The listener went with it.
        let socket = TcpSocket::new_v4().expect("socket");
        socket.bind((SCRAPER, 0).into()).expect("bind");
        let refused = socket.connect(addr).await.expect_err("nobody listens");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }
}
