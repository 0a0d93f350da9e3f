//! egret-gateway: the egress NAT gateway.
//!
//! The crate is a pure core plus a thin I/O shell. Decisions (NAT, connection tracking,
//! election) are plain structs driven with the current time passed in, so they run in unit
//! tests, fuzzers and simulations without sockets or root.
//!
//! - [`api`]: the operations API (`GET /metrics`, `GET /status`) and its status client.
//! - [`cli`]: the command line, for the binary and the man pages.
//! - [`config`]: the `gateway.toml` schema, parsing and validation.
//! - [`datapath`]: the packet path: ARP, VXLAN, NAT, encapsulation, as a pure core.
//! - [`election`]: VRRPv3 per floating IP, as a pure core.
//! - [`gateway`]: the whole gateway (election, packet path, sync) as one pure state
//!   machine: bytes and time in, bytes to send out.
//! - [`io`]: the sockets, the kernel guard, and the threads that carry bytes and time to
//!   the [`gateway`] core and its output back.
//! - [`wire`]: our own wire formats (VXLAN, the VRRPv3 advert).
//! - [`nat`]: SNAT/DNAT and connection tracking over raw IPv4 packet bytes.
//! - [`report`]: what the gateway reports into the `EgressGateway` status, as a pure core.
//! - [`status`]: the counters and state the gateway reports.
//! - [`sync`]: flow state streamed to peer gateways, as a pure core.

pub mod api;
pub mod cli;
pub mod config;
pub mod datapath;
pub mod election;
pub mod gateway;
pub mod io;
pub mod nat;
pub mod report;
pub mod status;
pub mod sync;
#[cfg(test)]
mod testing;
pub mod wire;
