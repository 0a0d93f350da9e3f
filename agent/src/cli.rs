//! The command line of `egret-agent`, in the library so the packaging can generate the man
//! pages and shell completions from the same definition.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// egret node agent.
#[derive(Debug, Parser)]
#[command(name = "egret-agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The default config file.
pub const DEFAULT_CONFIG: &str = "/etc/egret/agent.toml";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: set up the node's tunnel, policy routing and masquerade, program the
    /// eBPF data path, and keep it in line with the config. SIGHUP reloads the config;
    /// SIGTERM exits and leaves the data path working (pinned), so traffic goes on.
    Run {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Check a config file: print the effective config and warnings; on any error print
    /// `FILE:LINE:COL: error: KEY: ...` and exit 2 (1 when the file cannot be read).
    Check {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print only warnings and errors, not the effective config (the service's
        /// `ExecStartPre=` uses it).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show the policies, programmed entries and counters of this node's data path.
    Status {
        /// The config file (for the pin path and the state directory).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove everything the agent set up on this node: masquerade table, policy routing,
    /// tunnel device, eBPF programs and maps. Stop the agent first.
    Uninstall {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}
