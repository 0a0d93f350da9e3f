//! The agent's operations API behind `[api].listen`: `GET /metrics` (Prometheus text) and
//! `GET /status` (the report of `egret-agent status --json`).
//!
//! - [`metrics`]: the pure rendering of a [`Snapshot`], and [`Recorded`], what the loop
//!   records for it (CNI requests, programming latency).
//! - [`http`]: the pure request → response function.
//! - this module: the shell. The server is `egret-api`'s, shared with the gateway (the
//!   same connection limits, header timeout and lifetime), on a thread and a runtime of its
//!   own: the agent's loop runs on a current-thread runtime, and a scrape (which reads the
//!   pinned maps and the status file) must never take that thread's time. The loop only
//!   ever holds the [`SharedRecorded`] lock for one update; a scrape holds it to copy.
//!
//! Read-only and without authentication, like the gateway's: keep it on loopback or a
//! management address.

pub mod http;
pub mod metrics;

use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use egret_api::{ApiStatus, Limits, lock};
use hyper::Method;

pub use metrics::{Recorded, Snapshot, Trigger};

use crate::status::{self, Location};

/// What the loop records, shared with the API thread.
pub type SharedRecorded = Arc<Mutex<Recorded>>;

/// Records into `shared`, holding its lock for that update only.
pub fn record(shared: &SharedRecorded, update: impl FnOnce(&mut Recorded)) {
    update(&mut lock(shared));
}

/// Binds `[api].listen`.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the API on `listener` on a thread of its own, answering from the agent's state at
/// `location` and from `recorded`, until the process exits.
pub fn spawn(
    listener: TcpListener,
    location: Location,
    recorded: SharedRecorded,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("egret-api".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => {
                        tracing::error!(%error, "the API cannot use its socket; no /metrics");
                        return;
                    }
                };
                let answer = move |method: &Method, path: &str, api: ApiStatus| {
                    let snapshot = Snapshot {
                        report: status::gather(&location),
                        recorded: lock(&recorded).clone(),
                        api,
                    };
                    http::respond(method, path, &snapshot)
                };
                egret_api::Server::new(Limits::default())
                    .serve(listener, answer, std::future::pending())
                    .await;
            });
        })
}

/// The shell against a real socket: the server on 127.0.0.1:0, scraped with a plain
/// `TcpStream` as Prometheus or curl would.
#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, TcpStream};
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let request = format!("GET {path} HTTP/1.1\r\nHost: egret\r\n\r\n");
        stream.write_all(request.as_bytes()).expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    }

    #[test]
    fn a_scrape_over_loopback_gets_the_recorded_metrics() {
        let listener = bind((Ipv4Addr::LOCALHOST, 0).into()).expect("bind");
        let addr = listener.local_addr().expect("address");
        // No agent ever ran here: the data path families are missing, the loop's are not.
        let nowhere = PathBuf::from("/nonexistent/egret-api-test");
        let location = Location {
            node_name: "node1".into(),
            pin_path: nowhere.join("pins"),
            state_dir: nowhere.join("state"),
        };
        let recorded = SharedRecorded::default();
        record(&recorded, |r| {
            r.cni("add", "not_selected");
            r.programmed(Trigger::Cni, Duration::from_millis(2));
        });
        spawn(listener, location, recorded.clone()).expect("the API thread");

        let response = get(addr, "/metrics");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{head}"
        );
        for line in [
            "egret_agent_datapath_readable 0",
            "egret_agent_cni_requests_total{command=\"add\",outcome=\"not_selected\"} 1",
            "egret_agent_programming_latency_seconds_bucket{trigger=\"cni\",le=\"0.0025\"} 1",
            "egret_agent_programming_latency_seconds_count{trigger=\"cni\"} 1",
            "egret_agent_programming_latency_seconds_count{trigger=\"api\"} 0",
            "egret_agent_api_connections_open 1",
            "egret_agent_api_connections_refused_total{reason=\"client_limit\"} 0",
        ] {
            assert!(
                body.contains(&format!("\n{line}\n")),
                "{line} missing:\n{body}"
            );
        }

        // The loop records on; the next scrape shows it.
        record(&recorded, |r| r.cni("add", "not_selected"));
        let response = get(addr, "/metrics");
        assert!(response.contains(
            "\negret_agent_cni_requests_total{command=\"add\",outcome=\"not_selected\"} 2\n"
        ));

        let response = get(addr, "/status");
        assert!(
            response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{response}"
        );
        assert!(
            response.contains("no agent has run with this config"),
            "{response}"
        );
        let response = get(addr, "/nope");
        assert!(
            response.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{response}"
        );
    }
}
