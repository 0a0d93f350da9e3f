//! The operations API shell shared by `egret-gateway` and `egret-agent`: one hardened HTTP/1.1
//! server for `GET /metrics` and `GET /status`, generic over a pure responder.
//!
//! Each daemon keeps its own answers (a pure function from a method, a path and its own
//! state to a [`Response`]); this crate holds what is the same for both and must stay the
//! same: who may connect and for how long.
//!
//! - [`admission`]: the server's limits, and the pure bookkeeping of connections per client.
//! - [`response`]: what a responder returns, and how it goes on the wire.
//! - [`server`]: hyper's server around them, on the caller's tokio runtime.

pub mod admission;
pub mod response;
pub mod server;

pub use admission::{ApiStatus, Limits};
pub use response::{Response, route};
pub use server::{Server, lock};
