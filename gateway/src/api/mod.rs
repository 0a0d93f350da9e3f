//! The operations API behind `[api].listen`, and the `egret-gateway status` client of it.
//!
//! Read-only: the data path publishes a [`Snapshot`](crate::status::Snapshot) into a
//! [`SharedSnapshot`](crate::status::SharedSnapshot), and the API only ever clones the latest
//! one. Nothing here can change the gateway's state, so nothing here needs authentication;
//! keep `[api].listen` on a loopback or management address.
//!
//! - [`http`]: the pure request → response function.
//! - [`server`]: the shared server of `egret-api` (hyper's HTTP/1.1 server, with the limits
//!   and the bookkeeping of connections per client) answering with [`http`], on the
//!   gateway's tokio runtime.
//! - [`metrics`]: the snapshot as Prometheus text (`GET /metrics`).
//! - [`client`]: fetching `GET /status` with a blocking socket, and printing it readably.

pub mod client;
pub mod http;
pub mod metrics;
pub mod server;

#[cfg(test)]
mod fixtures;

pub use client::{ApiError, fetch_status, parse_status_response, render_text};
pub use egret_api::Limits;
pub use http::{Response, respond};
pub use metrics::render_prometheus;
pub use server::{Server, serve};
