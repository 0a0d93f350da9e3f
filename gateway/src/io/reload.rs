//! `systemctl reload` (SIGHUP): the running configuration, and how a changed file is
//! checked and handed to the core ([`crate::gateway::Gateway::reconfigure`]).

use std::path::Path;

use anyhow::{Context, bail};

use super::guard::KernelGuard;
use super::host::Interface;
use super::packet::Tx;
use super::{Shell, lock};
use crate::config::{Config, ConfigError, HostFacts};
use crate::gateway::{self, Host};

/// What the gateway runs with, for a reload to compare against.
pub struct Running<'a> {
    pub path: &'a Path,
    pub config: Config,
    /// The floating IPs the kernel is kept out of.
    pub addresses: Vec<std::net::Ipv4Addr>,
    pub interface: Interface,
}

impl Running<'_> {
    /// SIGHUP (`systemctl reload`): reads the config file again and applies it live. A
    /// file that does not check, or that changes what only a restart can, is refused and
    /// the running config stays; either way the log says which.
    pub fn reload(&mut self, shell: &Shell, guard: &KernelGuard, tx: &mut Tx) {
        notify(&[sd_notify::NotifyState::Reloading]);
        match self.try_reload(shell, guard, tx) {
            Ok(()) => tracing::info!(
                floating_ips = ?self.addresses,
                "config reloaded"
            ),
            Err(error) => tracing::error!(
                error = %format!("{error:#}"),
                "reload failed, the previous config stays applied"
            ),
        }
        notify(&[sd_notify::NotifyState::Ready]);
    }

    fn try_reload(
        &mut self,
        shell: &Shell,
        guard: &KernelGuard,
        tx: &mut Tx,
    ) -> anyhow::Result<()> {
        let facts = HostFacts::from_system().context("cannot read this host's interfaces")?;
        let config = match Config::load(self.path, &facts) {
            Ok(checked) => {
                for warning in &checked.warnings {
                    tracing::warn!("{}", warning.in_file(self.path));
                }
                checked.config
            }
            Err(error @ ConfigError::Invalid(_)) => {
                for diagnostic in error.diagnostics() {
                    tracing::error!("{}", diagnostic.in_file(self.path));
                }
                bail!("{} does not check: {error}", self.path.display());
            }
            Err(error) => return Err(error.into()),
        };
        let old = &self.config;
        let mut restart = Vec::new();
        if config.api.listen != old.api.listen {
            restart.push("[api].listen".to_string());
        }
        if config.sync.as_ref().map(|s| s.listen) != old.sync.as_ref().map(|s| s.listen) {
            restart.push("[sync].listen".to_string());
        }
        if config.kubernetes != old.kubernetes {
            restart.push("[kubernetes]".to_string());
        }
        if config.election.peers.is_empty() != old.election.peers.is_empty() {
            restart.push("[election].peers (between multicast and unicast)".to_string());
        }
        if !restart.is_empty() {
            bail!("only a restart changes {}", restart.join(", "));
        }
        let host = host(&config, &facts, &self.interface)?;
        let params = params(&config, &host, shell.fast.is_ok());
        let addresses = params.addresses();
        // The kernel stays out of the new addresses before the core answers for them, and
        // of the old ones until it no longer does.
        let mut both = self.addresses.clone();
        both.extend(addresses.iter().filter(|a| !self.addresses.contains(a)));
        let ifname = &config.gateway.interface;
        guard
            .update(ifname, &both)
            .context("cannot update the nftables table egret_gateway")?;
        let applied = lock(&shell.core).reconfigure(shell.clock.now(), params);
        let kept = match &applied {
            Ok(()) => &addresses,
            Err(_) => &self.addresses,
        };
        guard
            .update(ifname, kept)
            .context("cannot update the nftables table egret_gateway")?;
        if let Err(keys) = applied {
            bail!("only a restart changes {}", keys.join(", "));
        }
        // What the reload decided (a removed address handed over) goes at once.
        super::carry(shell, tx);
        self.config = config;
        self.addresses = addresses;
        Ok(())
    }
}

/// The core's parameters from `config` on `host`, with a fresh seed and boot id; `fast`:
/// the kernel fast path is loaded.
pub fn params(config: &Config, host: &Host, fast: bool) -> gateway::Params {
    let mut params =
        gateway::Params::from_config(config, host, super::host::seed(), super::host::epoch());
    params.fast_path = fast;
    params
}

/// The facts of this host the gateway runs with: its interface's, and the next hop.
pub fn host(config: &Config, facts: &HostFacts, interface: &Interface) -> anyhow::Result<Host> {
    let ifname = &config.gateway.interface;
    let Some(address) = facts.interface(ifname).and_then(|a| a.first()) else {
        bail!("interface {ifname} has no IPv4 address; the gateway's ARP and VRRP need one");
    };
    let next_hop = match config.gateway.next_hop {
        Some(hop) => hop,
        None => super::host::default_gateway(ifname)
            .context("cannot read /proc/net/route")?
            .with_context(|| {
                format!(
                    "no default route via {ifname}; set [gateway].next_hop or add a default route"
                )
            })?,
    };
    Ok(Host {
        mac: interface.mac,
        address: address.address(),
        prefix_len: address.prefix_len(),
        mtu: interface.mtu,
        next_hop,
    })
}

/// Tells systemd (when it started us with `Type=notify`) how the gateway is doing.
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}
