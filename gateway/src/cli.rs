//! The command line of `egret-gateway`, in the library so the packaging can generate the man
//! pages and shell completions from the same definition.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config;

#[derive(Debug, Parser)]
#[command(name = "egret-gateway", version, about = "egret egress NAT gateway")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config against this host and print the effective config.
    ///
    /// On success the effective config, every default filled in, goes to stdout as TOML
    /// (warnings to stderr) and the exit code is 0. Otherwise each problem goes to stderr
    /// as `FILE:LINE:COL: error: KEY: PROBLEM; allowed: WHAT IS VALID` and the exit code is
    /// 2 for an invalid config, 1 when the file cannot be read.
    Check {
        /// The gateway config file.
        #[arg(long, short, value_name = "FILE", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Print only warnings and errors, not the effective config (the service's
        /// `ExecStartPre=` uses it).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run the gateway: own the floating IPs on `[gateway].interface` and NAT the nodes'
    /// tunnelled traffic until SIGTERM or SIGINT.
    ///
    /// Logs go to stderr; `RUST_LOG` sets the level (default `info`).
    Run {
        /// The gateway config file.
        #[arg(long, short, value_name = "FILE", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Ask the running gateway (at `[api].listen`) what it owns, its traffic and its drops.
    Status {
        /// The gateway config file, for `[api].listen`.
        #[arg(long, short, value_name = "FILE", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// The API address, instead of reading it from the config.
        #[arg(long, value_name = "ADDR:PORT")]
        api: Option<SocketAddr>,
        /// Print the raw JSON of `GET /status`.
        #[arg(long)]
        json: bool,
    },
}
