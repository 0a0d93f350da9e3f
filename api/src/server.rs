//! The socket shell of an operations API: hyper's HTTP/1.1 server on the caller's tokio
//! runtime, with a responder answering each request and [`Admission`] deciding who may
//! connect.
//!
//! Invariants, so that no client, slow, abusive or one of many, can stop the API answering
//! scrapes or hurt the daemon:
//! - the accept loop never waits for a client: each accepted connection is admitted or
//!   refused by [`Admission`] under a lock held for one map update, then served in a task of
//!   its own; a refused connection is closed at once and counted (the daemons' metric
//!   `egret_*_api_connections_refused_total{reason}`, from [`Server::status`]);
//! - at most [`MAX_CONNECTIONS_PER_CLIENT`] connections are open per client address and
//!   [`MAX_CONNECTIONS`] in all;
//! - the request head must be complete within [`HEADER_READ_TIMEOUT`] of the accept and
//!   within [`MAX_HEAD`] bytes, or hyper closes the connection (431 for a head too large,
//!   400 for one that is not HTTP/1.x); a request body is never read;
//! - a connection lives at most [`CONNECTION_LIFETIME`], then it is dropped wherever it is;
//! - one request per connection, answered with `Connection: close`;
//! - the responder is called with no lock of the server's held, and must itself hold its
//!   own locks only to copy what they guard, so a client cannot stall whoever publishes it;
//! - nothing is logged per connection or request above trace level (hyper is built without
//!   its `tracing` feature and logs nothing); failed accepts are logged at debug level.
//!
//! [`MAX_CONNECTIONS_PER_CLIENT`]: crate::admission::MAX_CONNECTIONS_PER_CLIENT
//! [`MAX_CONNECTIONS`]: crate::admission::MAX_CONNECTIONS
//! [`HEADER_READ_TIMEOUT`]: crate::admission::HEADER_READ_TIMEOUT
//! [`CONNECTION_LIFETIME`]: crate::admission::CONNECTION_LIFETIME

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hyper::Method;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, trace};

use crate::admission::{Admission, ApiStatus, Client, Limits, MAX_HEAD};
use crate::response::Response;

/// Pause after a failed accept, typically the process being out of file descriptors, so
/// the accept loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The server: its limits and its connection counts. Clones share the counts.
#[derive(Debug, Clone)]
pub struct Server {
    limits: Limits,
    admission: Arc<Mutex<Admission>>,
}

impl Server {
    pub fn new(limits: Limits) -> Self {
        Server {
            limits,
            admission: Arc::new(Mutex::new(Admission::new(limits))),
        }
    }

    /// The server's connection counters, as `/metrics` and `/status` show them.
    pub fn status(&self) -> ApiStatus {
        lock(&self.admission).status()
    }

    /// Accepts and serves connections on `listener` until `shutdown` completes; `respond`
    /// answers each request from its method, its path (without the query) and the server's
    /// counters at that moment. Connections still open at shutdown are dropped with the
    /// runtime.
    pub async fn serve<R>(
        self,
        listener: TcpListener,
        respond: R,
        shutdown: impl Future<Output = ()>,
    ) where
        R: Fn(&Method, &str, ApiStatus) -> Response + Send + Sync + 'static,
    {
        let respond = Arc::new(respond);
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout)
            .max_header_size(MAX_HEAD)
            .keep_alive(false)
            // `Content-Type`, not `content-type`, as the hand-written server wrote them, for
            // anything that matched them case-sensitively.
            .title_case_headers(true);
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
            let admitted = lock(&self.admission).admit(peer.ip());
            match admitted {
                Ok(client) => {
                    let ticket = Ticket {
                        admission: Arc::clone(&self.admission),
                        client,
                    };
                    let connection = self.clone().connection(
                        stream,
                        peer,
                        http.clone(),
                        ticket,
                        Arc::clone(&respond),
                    );
                    tokio::spawn(connection);
                }
                Err(refusal) => {
                    // Dropping the stream closes it; the count is the operator's signal.
                    trace!(%peer, reason = refusal.label(), "API connection refused");
                    drop(stream);
                }
            }
        }
    }

    /// One connection, from accept to close, within the lifetime.
    async fn connection<R>(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        http: http1::Builder,
        ticket: Ticket,
        respond: Arc<R>,
    ) where
        R: Fn(&Method, &str, ApiStatus) -> Response + Send + Sync + 'static,
    {
        let service = service_fn(|request: hyper::Request<Incoming>| {
            let response = respond(request.method(), request.uri().path(), self.status());
            std::future::ready(Ok::<_, Infallible>(response.into_http()))
        });
        let connection = http.serve_connection(TokioIo::new(stream), service);
        match tokio::time::timeout(self.limits.lifetime, connection).await {
            Ok(Ok(())) => trace!(%peer, "API request served"),
            Ok(Err(error)) => trace!(%peer, %error, "API connection failed"),
            Err(_) => trace!(%peer, "API connection outlived its lifetime; closed"),
        }
        drop(ticket);
    }
}

/// A connection's place in the [`Admission`] counts, given back when it drops (when the
/// connection's task ends, however it ends).
struct Ticket {
    admission: Arc<Mutex<Admission>>,
    client: Client,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.admission).release(self.client);
    }
}

/// Locks `mutex`, also when a panic poisoned it: what the APIs guard is counters and
/// snapshots, each valid after any partial update.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shell with a trivial responder; the gateway's tests drive the limits against real
/// sockets at length (`gateway/src/api/server.rs`), these check the plumbing.
#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hyper::StatusCode;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: egret\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        response
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_responder_sees_the_path_and_the_counters() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = Server::new(Limits::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.clone().serve(
            listener,
            |method: &Method, path: &str, status: ApiStatus| {
                if method != Method::GET {
                    return Response::get_only(method);
                }
                Response::text(
                    StatusCode::OK,
                    format!("{path} {}\n", status.connections_open),
                )
            },
            async {
                let _ = stopped.await;
            },
        ));
        let response = get(addr, "/x?y=1").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.contains("\r\nCache-Control: no-store\r\n"),
            "{response}"
        );
        assert!(response.ends_with("\r\n\r\n/x 1\n"), "{response}");
        assert_eq!(server.status().connections_refused["client_limit"], 0);
        stop.send(()).expect("the server runs");
        task.await.expect("the server stops");
    }
}
