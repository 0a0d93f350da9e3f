//! The node's own networking that the agent manages, beside its eBPF programs:
//!
//! - [`tunnel`]: the collect-metadata VXLAN device that carries selected flows to the
//!   gateways and brings their replies back, the policy routing that sends marked packets to
//!   it, and the sysctls the return path needs;
//! - [`masquerade`]: the node masquerade (ip-masq-agent semantics) in one nftables table;
//! - [`routes`]: which interface the node routes an address through (where pod traffic enters).
//!
//! Each part is a pure description of the wanted state (rendered text, command lists) plus a
//! thin shell that runs `ip` and `nft`. Everything is idempotent: applying the same state twice
//! changes nothing, and a restarted agent finds its own objects and keeps them.

pub mod masquerade;
pub mod routes;
pub mod tunnel;

use std::ffi::OsStr;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// A host command that failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The program could not be started (not installed?).
    #[error("running {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why it did not start.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("`{command}` failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it wrote on stderr, trimmed.
        stderr: String,
    },
    /// Its output was not what we expected.
    #[error("`{command}`: unexpected output: {problem}")]
    Output {
        /// The command line.
        command: String,
        /// What was wrong.
        problem: String,
    },
    /// A sysctl or sysfs file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs `program args`, feeding `input` on stdin if given; returns stdout.
pub(crate) fn run<I, S>(program: &str, args: I, input: Option<&str>) -> Result<String, HostError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let command = std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let spawn_error = |source| HostError::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut child = Command::new(program)
        .args(&args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).map_err(spawn_error)?;
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if !output.status.success() {
        return Err(HostError::Failed {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The file of a sysctl, from its path segments (an interface name may hold dots, so
/// `net.ipv4.conf.eth0.100.rp_filter` cannot be split on them).
fn sysctl_path(segments: &[&str]) -> String {
    format!("/proc/sys/{}", segments.join("/"))
}

/// Writes a sysctl of the calling thread's network namespace.
pub(crate) fn sysctl(segments: &[&str], value: &str) -> Result<(), HostError> {
    let path = sysctl_path(segments);
    std::fs::write(&path, value).map_err(|source| HostError::File { path, source })
}

/// Reads a sysctl, trimmed.
pub(crate) fn read_sysctl(segments: &[&str]) -> Result<String, HostError> {
    let path = sysctl_path(segments);
    std::fs::read_to_string(&path)
        .map(|v| v.trim().to_owned())
        .map_err(|source| HostError::File { path, source })
}
