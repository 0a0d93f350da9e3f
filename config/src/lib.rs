//! The config machinery shared by `egret-gateway` (`gateway.toml`) and `egret-agent`
//! (`agent.toml`), so that both daemons read, check and report their config files the same
//! way, and exit the same way when one is refused:
//!
//! - [`raw`]: the document as written, each table read on its own; a key `serde` refuses
//!   is reported and set aside, and the rest of its table still loads;
//! - [`check`]: the checks both daemons make of values (required keys, ranges, addresses,
//!   durations, paths, names, lists), each reporting with the key, its place and what would
//!   be valid;
//! - [`diagnostic`]: a key, a place in the file, what is wrong and what would be valid, in
//!   the compiler-style `LINE:COL: error: KEY: PROBLEM; allowed: ALLOWED` form;
//! - [`document`]: which key sits at (or before) a place in a parsed TOML document, and how
//!   a TOML syntax error is reported;
//! - [`error`]: why a config was not loaded, and the exit codes of both daemons ([`Exit`]);
//! - [`duration`]: humane durations (`"2h4m"`);
//! - [`effective`]: the line writer behind `check`'s effective config;
//! - [`api`]: each daemon's default operations API port;
//! - [`tunnel`]: what agents and gateways must agree on about the VXLAN tunnel (default
//!   port and VNI, the 50 bytes of overhead and the MTU arithmetic).
//!
//! Each daemon keeps its own schema, its own cross-key rules and its defaults.

pub mod api;
pub mod check;
pub mod diagnostic;
pub mod document;
pub mod duration;
pub mod effective;
pub mod error;
pub mod raw;
pub mod tunnel;

pub use diagnostic::{Diagnostic, Report, Severity};
pub use error::{Checked, ConfigError, Exit};
