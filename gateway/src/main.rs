//! `egret-gateway`: the command line of the egress NAT gateway.
//!
//! Exit codes: 0 success, 1 an I/O or other operational failure (for example an unreadable
//! config file), 2 an invalid config.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use egret_gateway::config::{self, Config, ConfigError, HostFacts};

#[derive(Debug, Parser)]
#[command(name = "egret-gateway", version, about = "egret egress NAT gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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
    },
}

/// An invalid config: already reported line by line, exits with 2.
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config } => check(&config),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("egret-gateway: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &Path) -> anyhow::Result<ExitCode> {
    let host = HostFacts::from_system().context("cannot read this host's interfaces")?;
    let file = path.display();
    match Config::load(path, &host) {
        Ok(checked) => {
            for warning in &checked.warnings {
                eprintln!("{file}:{warning}");
            }
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(checked.config.to_toml().as_bytes())
                .and_then(|()| stdout.flush())
                .context("cannot write the effective config")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(ConfigError::Invalid(diagnostics)) => {
            for diagnostic in &diagnostics {
                eprintln!("{file}:{diagnostic}");
            }
            Ok(ExitCode::from(EXIT_INVALID_CONFIG))
        }
        Err(error @ ConfigError::Read { .. }) => Err(error.into()),
    }
}
