//! egret's node agent.
//!
//! - [`config`]: `agent.toml`, checked with precise errors.
//! - [`policy`]: the pure core: policies in, the node programs' map contents out, and the
//!   ordered changes that take the maps from what they hold to what they should hold.
//! - [`host`]: the node's own networking the agent manages: the tunnel device, policy routing,
//!   sysctls, and the masquerade table.
//! - [`ebpf`]: loads the eBPF objects, attaches the programs and reads their counters.
//! - [`prefix`]: IPv4 prefixes.

pub mod config;
pub mod ebpf;
pub mod host;
pub mod policy;
pub mod prefix;
