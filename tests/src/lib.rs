//! egret's lab: network namespaces, links and traffic for end-to-end tests on one Linux host.
//!
//! Every namespace and link a test makes is a guard whose `Drop` removes it, also when the test
//! panics: [`NetNs`] for namespaces (named with a per-run prefix so parallel and leftover runs
//! never collide), [`Link`] for interfaces inside them, [`veth_pair`] to join two namespaces.
//! Links live only inside lab namespaces, never in the caller's namespace, and traffic is only
//! ever sent from inside a lab namespace, bound to one of its interfaces ([`NetNs::ping`],
//! [`NetNs::send_frames`], commands through [`NetNs::command`]): nothing a test sends can leave
//! the machine. Code that must run inside a namespace (loading eBPF, netlink) uses
//! [`NetNs::run`], which runs a closure on a thread that has entered it.
//!
//! [`topology`] builds egret's own topology on top of these: a pod, its node, the gateway, a
//! router and an outside server ([`GatewayLab`]), with the gateway process and the kernel
//! NAT baseline to compare it with. [`ha`] adds a second gateway (or keepalived) on the same
//! LAN, and the traffic and captures that measure a failover between them ([`HaLab`]).
//! [`egress`] is the whole product: two nodes with pods and `egret-agent`, two gateways
//! sharing two floating IPs, an outside and an internal host ([`AgentLab`]).
//!
//! [`apiserver`] is the lab's Kubernetes API server (the `egret-test-apiserver` binary): the
//! real protocol over HTTPS, checked with kubectl and kube-rs, so agents and gateways can run
//! in Kubernetes mode inside the lab; it needs no root and its own tests use loopback only.
//!
//! [`nspawn`] boots minimal Debian systems with real systemd in containers (an overlay on a
//! cached rootfs), to install egret's packages into and run its units, privately or inside lab
//! namespaces.
//!
//! The lab needs root. Lab tests call [`require_root`] first, which fails them with a clear
//! message otherwise: a lab test that silently passes without root would prove nothing.

pub mod apiserver;
pub mod cluster;
pub mod cni;
mod command;
pub mod egress;
pub mod ha;
mod link;
mod netns;
pub mod nspawn;
pub mod packages;
mod packet;
pub mod topology;

pub use command::check_output;
pub use egress::AgentLab;
pub use ha::HaLab;
pub use link::{Link, veth_pair};
pub use netns::{NetNs, reap_stale_namespaces, run_prefix};
pub use topology::{GatewayLab, Mode, WorkDir};

use std::{fmt::Display, ops::RangeInclusive, str::FromStr, time::Instant};

use anyhow::{Context as _, Result};

/// The name of the lab's flow sync key file in a work directory.
pub const SYNC_KEY: &str = "sync.key";

/// Writes a fresh sync key into `dir` as every gateway's `[sync].key_file` wants it: 32
/// random bytes, readable by its owner alone. Returns its path.
///
/// # Errors
///
/// When the file cannot be written.
pub fn write_sync_key(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(SYNC_KEY);
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut r| std::io::Read::read_exact(&mut r, &mut key))
        .context("reading /dev/urandom")?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(&key))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Fails the calling test unless it runs as root (effective uid 0).
///
/// # Panics
///
/// When not root, with a message that says how to run the lab.
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root: it creates network namespaces and loads eBPF programs (effective \
         uid is {euid}); run the tests as root, e.g. `sudo -E cargo test`"
    );
}

/// Runs one named step of a lab test: prints `== <name>`, runs `check`, and prints
/// `   ok (<time>)` when it succeeds. When it fails, the step fails with what `explain` makes
/// of the check's error (the lab's evidence added, say).
///
/// # Errors
///
/// When `check` fails.
pub fn step<L, T>(
    lab: &mut L,
    name: &str,
    check: impl FnOnce(&mut L) -> Result<T>,
    explain: impl FnOnce(&mut L, anyhow::Error) -> anyhow::Error,
) -> Result<T> {
    eprintln!("== {name}");
    let started = Instant::now();
    match check(lab) {
        Ok(value) => {
            eprintln!("   ok ({:.1?})", started.elapsed());
            Ok(value)
        }
        Err(err) => Err(explain(lab, err)),
    }
}

/// A number setting of a lab program: its command-line argument `position`, else the
/// environment variable `env` (if any), else `default`.
///
/// # Errors
///
/// When the value given is not a whole number in `range`.
pub fn setting<T>(
    position: usize,
    env: Option<&str>,
    default: T,
    range: RangeInclusive<T>,
) -> Result<T>
where
    T: FromStr + PartialOrd + Display,
{
    let value = std::env::args()
        .nth(position)
        .or_else(|| env.and_then(|env| std::env::var(env).ok()));
    match value {
        None => Ok(default),
        Some(text) => text
            .parse()
            .ok()
            .filter(|n| range.contains(n))
            .with_context(|| {
                let name = env.map_or_else(|| format!("argument {position}"), str::to_owned);
                format!(
                    "{name}: {text:?} is not a whole number in {}..={}",
                    range.start(),
                    range.end()
                )
            }),
    }
}
