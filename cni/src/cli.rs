//! The operator's command line of `egret-cni`. The container runtime runs the plugin with
//! `CNI_COMMAND` set and no arguments; without `CNI_COMMAND` these subcommands install the
//! plugin on a node (the agent DaemonSet runs them) or remove it.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::spec::{DEFAULT_SOCKET, FailurePolicy};

/// egret's CNI plugin, chained after the cluster's CNI: it has the node agent program a new
/// pod before the pod runs.
#[derive(Debug, Parser)]
#[command(name = "egret-cni", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The host's CNI directories, as the kubelet and the runtime know them.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Copy this binary into the CNI bin dir, then add egret-cni as the last plugin of the
    /// conflist the runtime uses (the lexically first *.conf, *.conflist, *.json in the
    /// conf dir; a one-plugin .conf becomes NAME.conflist). Idempotent: an existing entry
    /// is replaced in place with these settings.
    Install {
        #[command(flatten)]
        dirs: Dirs,
        /// The agent's socket, as the plugin sees it on the host.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: String,
        /// How long ADD waits for the agent (above 0, at most 5m).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// When the agent does not answer in time: Fail (the runtime retries the pod) or
        /// Ignore (the pod starts, its first connections may leave with the node's IP).
        #[arg(long, value_name = "Fail|Ignore", default_value = "Fail", value_parser = failure_policy)]
        failure_policy: FailurePolicy,
        /// Stay running and put the entry back whenever the conf dir changes (the primary
        /// CNI rewriting its file drops it). SIGTERM exits and leaves the plugin installed.
        #[arg(long)]
        watch: bool,
    },
    /// Remove egret-cni's entry from every conflist in the conf dir (a .conf it converted is
    /// restored), then the binary from the bin dir. Nothing installed: nothing done.
    Uninstall {
        #[command(flatten)]
        dirs: Dirs,
    },
}

#[derive(Debug, clap::Args)]
pub struct Dirs {
    /// The host's CNI plugin directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_BIN_DIR)]
    pub bin_dir: PathBuf,
    /// The host's CNI configuration directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CONF_DIR)]
    pub conf_dir: PathBuf,
}

fn failure_policy(text: &str) -> Result<FailurePolicy, String> {
    match text {
        "Fail" => Ok(FailurePolicy::Fail),
        "Ignore" => Ok(FailurePolicy::Ignore),
        _ => Err("Fail or Ignore".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_takes_the_entrys_settings_and_defaults_to_the_plugins() {
        let cli = Cli::try_parse_from(["egret-cni", "install"]).expect("defaults");
        let Command::Install {
            dirs,
            socket,
            timeout,
            failure_policy,
            watch,
        } = cli.command
        else {
            panic!("install");
        };
        assert_eq!(dirs.bin_dir, PathBuf::from("/opt/cni/bin"));
        assert_eq!(dirs.conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(socket, DEFAULT_SOCKET);
        assert_eq!(timeout, crate::spec::DEFAULT_TIMEOUT);
        assert_eq!(failure_policy, FailurePolicy::Fail);
        assert!(!watch);
        let cli = Cli::try_parse_from([
            "egret-cni",
            "install",
            "--bin-dir",
            "/host/opt/cni/bin",
            "--failure-policy",
            "Ignore",
            "--timeout",
            "750ms",
            "--watch",
        ])
        .expect("valid");
        assert!(matches!(
            cli.command,
            Command::Install {
                failure_policy: FailurePolicy::Ignore,
                watch: true,
                ..
            }
        ));
        for bad in [
            &["egret-cni", "install", "--failure-policy", "fail-open"][..],
            &["egret-cni", "install", "--timeout", "5"][..],
            &["egret-cni"][..],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
