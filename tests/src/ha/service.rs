//! A member's gateway as the package installs it: the `egret-gateway` service of a Debian
//! system booted (systemd-nspawn) in the member's namespace ([`super::HaLab::install_package`]).

use std::{path::Path, time::SystemTime};

use anyhow::{Context as _, Result, ensure};

use crate::{
    NetNs,
    nspawn::{Container, NETWORK_CAPABILITIES, Rootfs},
};

/// Where the installed gateway reads its config and sync key.
pub(super) const SERVICE_CONFIG_DIR: &str = "/etc/egret";
/// The installed gateway's unit.
const SERVICE_UNIT: &str = "egret-gateway.service";

/// A member's gateway as the package installs it: the `egret-gateway` service of a Debian
/// system booted in the member's namespace.
pub(super) struct Service {
    pub(super) container: Container,
    /// Started and not killed since (systemd may have restarted it since a kill).
    pub(super) running: bool,
    /// `NRestarts` when the lab last saw it.
    pub(super) restarts_seen: u32,
}

impl Service {
    /// Boots a system in `ns`, installs `deb` with dpkg, and writes the config and the sync
    /// key (owned by the service's user, mode 0600, as the gateway wants it).
    pub(super) fn install(
        name: &str,
        ns: &NetNs,
        deb: &Path,
        (config, key): (String, Option<Vec<u8>>),
    ) -> Result<Self> {
        let dir = deb.parent().context("the package's folder")?;
        let file = deb
            .file_name()
            .and_then(|n| n.to_str())
            .context("the package's name")?;
        let container = Container::builder(name)
            .netns(ns)
            .capabilities(NETWORK_CAPABILITIES.iter().copied())
            .bind_ro(dir, "/packages")
            .boot(&Rootfs::cached()?)?;
        container.run(&["dpkg", "-i", &format!("/packages/{file}")])?;
        container.write_file(format!("{SERVICE_CONFIG_DIR}/gateway.toml"), config)?;
        if let Some(key) = key {
            let path = format!("{SERVICE_CONFIG_DIR}/{}", crate::SYNC_KEY);
            container.write_file(&path, key)?;
            container.run(&["chown", "egret-gateway:egret-gateway", &path])?;
            container.run(&["chmod", "0600", &path])?;
        }
        Ok(Self {
            container,
            running: false,
            restarts_seen: 0,
        })
    }

    /// The unit's `NRestarts` and `ActiveState`.
    pub(super) fn restarts(&self) -> Result<(u32, String)> {
        let shown = self.container.run(&[
            "systemctl",
            "show",
            "-p",
            "NRestarts",
            "-p",
            "ActiveState",
            SERVICE_UNIT,
        ])?;
        let mut restarts = None;
        let mut state = String::new();
        for line in shown.lines() {
            match line.split_once('=') {
                Some(("NRestarts", n)) => restarts = n.trim().parse().ok(),
                Some(("ActiveState", s)) => state = s.trim().to_owned(),
                _ => {}
            }
        }
        Ok((restarts.context("no NRestarts")?, state))
    }

    /// `systemctl start`: returns once the gateway told systemd it is ready.
    pub(super) fn start(&mut self) -> Result<()> {
        ensure!(!self.running, "the service already runs");
        self.container.run(&["systemctl", "start", SERVICE_UNIT])?;
        self.running = true;
        Ok(())
    }

    /// `systemctl kill -s KILL`: returns the instant just before.
    pub(super) fn kill(&mut self) -> Result<SystemTime> {
        ensure!(self.running, "the service does not run");
        let at = SystemTime::now();
        self.container
            .run(&["systemctl", "kill", "-s", "KILL", SERVICE_UNIT])?;
        self.running = false;
        Ok(at)
    }

    pub(super) fn log_tail(&self, lines: usize) -> String {
        self.container
            .journal(SERVICE_UNIT)
            .map(|journal| {
                let all: Vec<&str> = journal.lines().collect();
                all[all.len().saturating_sub(lines)..].join("\n")
            })
            .unwrap_or_else(|err| format!("(no journal: {err:#})"))
    }
}
