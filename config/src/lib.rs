//! Config file plumbing shared by `egret-gateway` (`gateway.toml`) and `egret-agent`
//! (`agent.toml`), so that both daemons report problems and print their effective config the
//! same way:
//!
//! - [`diagnostic`]: a key, a place in the file, what is wrong and what would be valid, in
//!   the compiler-style `LINE:COL: error: KEY: PROBLEM; allowed: ALLOWED` form;
//! - [`document`]: which key sits at (or before) a place in a parsed TOML document, and how
//!   a TOML syntax error is reported;
//! - [`effective`]: the line writer behind `check`'s effective config.
//!
//! Each daemon keeps its own schema, checks and defaults.

pub mod diagnostic;
pub mod document;
pub mod effective;

pub use diagnostic::{Diagnostic, Report, Severity};
