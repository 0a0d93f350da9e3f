//! egret's node agent.
//!
//! - [`api`]: `GET /metrics` and `GET /status` behind `[api].listen`.
//! - [`cli`]: the command line, for the binary and the man pages.
//! - [`cluster`]: Kubernetes mode's pure decisions: selection, admission, status.
//! - [`config`]: `agent.toml`, checked with precise errors.
//! - [`policy`]: the pure core: policies in, the node programs' map contents out, and the
//!   ordered changes that take the maps from what they hold to what they should hold.
//! - [`host`]: the node's own networking the agent manages: the tunnel device, policy routing,
//!   sysctls, and the masquerade table.
//! - [`datapath`]: the node's eBPF object: loads and attaches its programs, pins their maps
//!   and links, and reads their counters.
//! - [`kubernetes`]: Kubernetes mode's shell: watches, Leases, status writes.
//! - [`prefix`]: IPv4 prefixes.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod datapath;
pub mod host;
pub mod kubernetes;
pub mod node;
pub mod policy;
pub mod prefix;
pub mod status;

/// An error with its sources, `: `-separated.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
