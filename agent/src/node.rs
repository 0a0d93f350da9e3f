//! The agent on a node: from a checked config and a [`Desired`] state to a programmed node,
//! and again on every reload or cluster change.
//!
//! In static mode the desired state is the config's policies ([`Desired::of_config`]); in
//! Kubernetes mode the cluster side computes it and hands it over with [`Node::program`].
//! Until it does, the maps keep what they hold: an agent restarted while the API is
//! unreachable changes nothing.
//!
//! [`Node::start`] brings the node to the config's state: the tunnel device and policy
//! routing, the eBPF programs against their pinned maps, the map entries (only what differs
//! from what the maps already hold, so a restart touches nothing that is still right), the
//! masquerade table, and the programs on every pod interface. [`Node::reload`] does the same
//! with a new config and never stops what did not change; a config that does not load leaves
//! everything as it was and is reported. [`Node::tick`] attaches the classifier to pod
//! interfaces that appeared since, and forgets those that are gone.
//!
//! The status file (`[agent].state_dir/status.json`) says what the agent decided: each
//! policy programmed or rejected (with the reason), the last reload's error, the interfaces.
//! `egret-agent status` adds the live counters from the pinned maps.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use egret_ebpf_common::node::{FLAG_CHECK_GATEWAYS, NodeConfig};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Mode, glob_match};
use crate::datapath::{DatapathError, Hook, PinnedMaps, Pins, Programs, node_object};
use crate::host::HostError;
use crate::host::masquerade::{self, Masquerade};
use crate::host::routes::Routes;
use crate::host::tunnel::{self, Tunnel};
use crate::policy::{self, PolicySpec, PolicyState, Program};
use crate::prefix::Prefix;

/// Why the agent could not bring the node to its config.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Host networking (`ip`, `nft`, sysctls).
    #[error(transparent)]
    Host(#[from] HostError),
    /// The eBPF side.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// The policies could not be compiled.
    #[error("compiling the policies: {0}")]
    Compile(String),
    /// Something the config asks for that this build cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// The status file.
    #[error("writing {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What the status file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// `[agent].node_name`.
    pub node_name: String,
    /// The agent's process id.
    pub pid: u32,
    /// The config file in use.
    pub config: String,
    /// Seconds since the epoch of the last successful apply.
    pub applied_at: u64,
    /// The last reload's error, if the last reload failed (the config before it stays).
    pub last_error: Option<String>,
    /// Each policy, in config order.
    pub policies: Vec<PolicyEntry>,
    /// The tunnel device and its MTU.
    pub tunnel_device: String,
    /// The tunnel device's MTU.
    pub tunnel_mtu: u16,
    /// Pod interfaces the classifier is attached to.
    pub interfaces: Vec<String>,
    /// Map steps the kernel refused at the last apply.
    pub failed_steps: Vec<String>,
    /// Kubernetes mode before the first cluster view: the maps keep what they held.
    #[serde(default)]
    pub waiting_for_cluster: bool,
    /// Selected sources routed through an interface the classifier is not attached to, as
    /// `source via interface`: their traffic is not tunnelled.
    #[serde(default)]
    pub unwatched_sources: Vec<String>,
    /// Kubernetes mode: the cluster as this agent sees it.
    #[serde(default)]
    pub cluster: Option<crate::kubernetes::node::ClusterState>,
}

/// One policy's outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyEntry {
    /// Its name.
    pub name: String,
    /// Its id in the maps (hex).
    pub id: String,
    /// Its egress IP.
    pub egress: String,
    /// `programmed` or `rejected`.
    pub state: String,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// Source entries it contributed.
    pub sources: usize,
    /// Destination entries it won.
    pub destinations: usize,
}

/// The agent's hold on the node.
pub struct Node {
    config: Config,
    config_path: PathBuf,
    pins: Pins,
    programs: Programs,
    maps: PinnedMaps,
    tunnel: Tunnel,
    state: State,
    /// What the maps and the masquerade table should hold; `None` in Kubernetes mode until
    /// the first cluster view.
    desired: Option<Desired>,
    /// The masquerade table as last written: an unchanged one is not loaded again (each load
    /// runs `nft`, which costs more than the rest of a reconcile), except by
    /// [`Node::rewrite_masquerade`].
    masquerade: Option<Masquerade>,
}

/// What the node should program, whatever it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The policies, oldest first, as the policy core takes them.
    pub policies: Vec<PolicySpec>,
    /// The gateways' floating IPs (empty: egress IPs are not checked).
    pub known_gateways: Vec<Ipv4Addr>,
    /// Destinations unselected pod traffic reaches with the pod's own address.
    pub non_masquerade: Vec<Prefix>,
    /// Whether traffic to 169.254.0.0/16 is masqueraded too.
    pub masquerade_link_local: bool,
    /// Kubernetes mode: the addresses of the node's selected pods, whose routes say which
    /// interfaces the classifier watches. `None` (static mode): `[agent].pod_interfaces`.
    pub pod_addresses: Option<Vec<Ipv4Addr>>,
}

impl Desired {
    /// Static mode: the config's policies, floating IPs and masquerade table.
    pub fn of_config(config: &Config) -> Desired {
        Desired {
            policies: specs(config),
            known_gateways: config.tunnel.floating_ips.clone(),
            non_masquerade: config.masquerade.non_masquerade_cidrs.clone(),
            masquerade_link_local: config.masquerade.masquerade_link_local,
            pod_addresses: None,
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The tunnel device's settings for `config`.
fn tunnel_of(config: &Config) -> Result<Tunnel, HostError> {
    let uplink = match &config.agent.interface {
        Some(name) => name.clone(),
        None => tunnel::default_route_interface()?,
    };
    let mtu = egret_config::tunnel::inner_mtu(tunnel::mtu_of(&uplink)?);
    Ok(Tunnel {
        device: config.tunnel.device.clone(),
        port: config.tunnel.port,
        mtu,
        mark: config.agent.fwmark,
        table: config.agent.route_table,
        priority: config.agent.rule_priority,
    })
}

fn node_config(config: &Config, tunnel: &Tunnel, known_gateways: &[Ipv4Addr]) -> NodeConfig {
    NodeConfig {
        mark: config.agent.fwmark,
        vni: config.tunnel.vni,
        mss: egret_config::tunnel::mss(tunnel.mtu),
        ttl: 64,
        flags: if known_gateways.is_empty() {
            0
        } else {
            FLAG_CHECK_GATEWAYS
        },
    }
}

/// The policy core's view of the config's policies, in age order.
pub fn specs(config: &Config) -> Vec<PolicySpec> {
    config
        .policies
        .iter()
        .map(|p| PolicySpec {
            name: p.name.clone(),
            sources: p.sources.clone(),
            destinations: p.destination_cidrs.clone(),
            excluded: p.excluded_cidrs.clone(),
            egress: p.egress_source_ip,
        })
        .collect()
}

/// Compiles the desired policies.
pub fn compile(desired: &Desired) -> Result<Program, NodeError> {
    policy::compile(&desired.policies, &desired.known_gateways)
        .map_err(|err| NodeError::Compile(err.to_string()))
}

fn masquerade_of(config: &Config, desired: &Desired) -> Masquerade {
    Masquerade {
        non_masquerade: desired.non_masquerade.clone(),
        masquerade_link_local: desired.masquerade_link_local,
        mark: config.agent.fwmark,
        tunnel_device: config.tunnel.device.clone(),
    }
}

impl Node {
    /// Brings the node to `config`'s state. In Kubernetes mode the maps and the masquerade
    /// table stay as they are until [`Node::program`] brings the cluster's state.
    pub fn start(config: Config, config_path: &Path) -> Result<Node, NodeError> {
        if !tunnel::forwarding_enabled().unwrap_or(false) {
            tracing::warn!("net.ipv4.ip_forward is off: pod traffic does not cross this node");
        }
        let tunnel = tunnel_of(&config)?;
        let ensured = tunnel::ensure(&tunnel)?;
        tracing::info!(device = %tunnel.device, mtu = tunnel.mtu, created = ensured.created_device, rules_added = ensured.added_rules, "tunnel device ready");
        let pins = Pins::new(&config.agent.pin_path);
        let reused = pins.exist();
        let programs = Programs::load(node_object(), &pins)?;
        let maps = PinnedMaps::open(&pins)?;
        tracing::info!(pin_path = %config.agent.pin_path.display(), reused, "eBPF programs loaded");
        let mut node = Node {
            state: State {
                node_name: config.agent.node_name.clone(),
                pid: std::process::id(),
                config: config_path.display().to_string(),
                tunnel_device: tunnel.device.clone(),
                tunnel_mtu: tunnel.mtu,
                waiting_for_cluster: config.agent.mode == Mode::Kubernetes,
                ..State::default()
            },
            desired: (config.agent.mode == Mode::Static).then(|| Desired::of_config(&config)),
            masquerade: None,
            config,
            config_path: config_path.to_owned(),
            pins,
            programs,
            maps,
            tunnel,
        };
        node.apply()?;
        let device = node.tunnel.device.clone();
        let ifindex = ifindex_of(&device).ok_or_else(|| HostError::Output {
            command: format!("if_nametoindex({device})"),
            problem: "the tunnel device vanished".into(),
        })?;
        node.programs.attach(&device, ifindex, Hook::TunnelEgress)?;
        node.programs
            .attach(&device, ifindex, Hook::TunnelIngress)?;
        node.tick()?;
        Ok(node)
    }

    /// The config in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the node holds `desired` already: it was the last state programmed, every map
    /// change of it went in, and the masquerade table needs no rewrite. Programming it again
    /// would change nothing.
    pub fn holds(&self, desired: &Desired) -> bool {
        self.desired.as_ref() == Some(desired)
            && self.state.failed_steps.is_empty()
            && self.masquerade.is_some()
    }

    /// Programs `desired` (Kubernetes mode: the cluster's state for this node); changes only
    /// what differs from what the maps hold. Returns what the policy core made of it.
    pub fn program(&mut self, desired: Desired) -> Result<Program, NodeError> {
        self.desired = Some(desired);
        self.state.waiting_for_cluster = false;
        let program = self.apply()?;
        self.tick()?;
        Ok(program.unwrap_or_default())
    }

    /// Applies the desired state to maps, masquerade and status; `None` when there is none
    /// yet (the maps are left alone).
    fn apply(&mut self) -> Result<Option<Program>, NodeError> {
        let Some(desired) = &self.desired else {
            return self.write_state().map(|()| None);
        };
        let started = std::time::Instant::now();
        let program = compile(desired)?;
        self.maps.set_config(node_config(
            &self.config,
            &self.tunnel,
            &desired.known_gateways,
        ))?;
        let current = self.maps.contents()?;
        let steps = policy::plan(&current, &program.contents());
        let applied = self.maps.apply(&steps);
        if !applied.failed.is_empty() {
            tracing::error!(failed = applied.failed.len(), first = %applied.failed[0], "the kernel refused some map changes");
        }
        // From the compile to the last map write: what a reload costs before masquerade.
        let elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
        tracing::info!(
            changes = steps.len(),
            done = applied.done,
            elapsed_ms = %format_args!("{elapsed_ms:.1}"),
            "maps reconciled"
        );
        let keep: BTreeSet<u64> = program.policies.iter().map(|p| p.id).collect();
        self.maps.retain_policy_stats(&keep)?;
        let masquerade = masquerade_of(&self.config, desired);
        if self.masquerade.as_ref() != Some(&masquerade) {
            masquerade::apply(&masquerade)?;
            self.masquerade = Some(masquerade);
        }
        self.state.policies = program
            .policies
            .iter()
            .map(|p| {
                let (state, reason, sources, destinations) = match &p.state {
                    PolicyState::Programmed {
                        sources,
                        destinations,
                    } => ("programmed", None, *sources, *destinations),
                    PolicyState::Rejected(why) => {
                        tracing::warn!(policy = %p.name, reason = %why, "policy not programmed");
                        ("rejected", Some(why.label().to_owned()), 0, 0)
                    }
                };
                PolicyEntry {
                    name: p.name.clone(),
                    id: format!("{:016x}", p.id),
                    egress: p.egress.to_string(),
                    state: state.into(),
                    reason,
                    sources,
                    destinations,
                }
            })
            .collect();
        self.state.failed_steps = applied.failed;
        self.state.applied_at = now_secs();
        self.write_state()?;
        Ok(Some(program))
    }

    /// The source entries the pinned map holds now: prefix → class id.
    ///
    /// # Errors
    ///
    /// When the map cannot be read.
    pub fn source_entries(&self) -> Result<BTreeMap<Prefix, u64>, NodeError> {
        Ok(self.maps.contents()?.sources)
    }

    /// Makes the next apply load the masquerade table even when it did not change: a
    /// periodic resync restores a table someone else changed.
    pub fn rewrite_masquerade(&mut self) {
        self.masquerade = None;
    }

    /// Reloads `config` (already checked). Changes only what differs; on failure the error is
    /// recorded in the status and returned.
    pub fn reload(&mut self, config: Config) -> Result<(), NodeError> {
        let result = self.reload_inner(config);
        self.state.last_error = result.as_ref().err().map(ToString::to_string);
        self.write_state()?;
        result
    }

    fn reload_inner(&mut self, config: Config) -> Result<(), NodeError> {
        if config.agent.mode != self.config.agent.mode {
            return Err(NodeError::Unsupported(format!(
                "[agent].mode changed to {:?}: it takes effect at the next start; the running \
                 config stays",
                config.agent.mode.as_str()
            )));
        }
        if config.agent.pin_path != self.config.agent.pin_path {
            tracing::warn!("[agent].pin_path changed: it takes effect at the next start");
        }
        let tunnel = tunnel_of(&config)?;
        if tunnel != self.tunnel {
            tunnel::ensure(&tunnel)?;
            if tunnel.device != self.tunnel.device {
                let ifindex = ifindex_of(&tunnel.device).ok_or_else(|| HostError::Output {
                    command: format!("if_nametoindex({})", tunnel.device),
                    problem: "the tunnel device vanished".into(),
                })?;
                self.programs
                    .attach(&tunnel.device, ifindex, Hook::TunnelEgress)?;
                self.programs
                    .attach(&tunnel.device, ifindex, Hook::TunnelIngress)?;
            }
            let old = std::mem::replace(&mut self.tunnel, tunnel);
            // The new routing is in place; the old one goes (unless it is the same).
            if (old.mark, old.table, old.priority)
                != (self.tunnel.mark, self.tunnel.table, self.tunnel.priority)
            {
                tunnel::remove_routing(&old);
                // Removing the old rules may have taken a shared table's routes: ensure again.
                tunnel::ensure(&self.tunnel)?;
            }
            if old.device != self.tunnel.device {
                tunnel::remove_device(&old.device)?;
            }
            self.state.tunnel_device = self.tunnel.device.clone();
            self.state.tunnel_mtu = self.tunnel.mtu;
            tracing::info!(device = %self.tunnel.device, mtu = self.tunnel.mtu, "tunnel settings changed");
        }
        if config.agent.mode == Mode::Static {
            self.desired = Some(Desired::of_config(&config));
        }
        self.config = config;
        // A reload writes the whole state again, as a restart would.
        self.rewrite_masquerade();
        self.apply()?;
        self.tick()
    }

    /// Records a config that did not load.
    pub fn reload_failed(&mut self, error: String) -> Result<(), NodeError> {
        self.state.last_error = Some(error);
        self.write_state()
    }

    /// Attaches the classifier to new pod interfaces and forgets vanished ones: in static
    /// mode the interfaces `[agent].pod_interfaces` matches, in Kubernetes mode those the
    /// node routes its selected pods through. Selected sources routed elsewhere are
    /// reported (log and status): their traffic is not tunnelled.
    pub fn tick(&mut self) -> Result<(), NodeError> {
        let interfaces = interfaces();
        let live: HashSet<u32> = interfaces.iter().map(|(i, _)| *i).collect();
        self.programs.sweep(&live);
        let routes = Routes::read();
        let routed: Option<HashSet<String>> = self
            .desired
            .as_ref()
            .and_then(|d| d.pod_addresses.as_ref())
            .map(|pods| {
                pods.iter()
                    .filter_map(|pod| routes.interface_of(*pod))
                    .map(str::to_owned)
                    .collect()
            });
        let watched = |name: &str| match &routed {
            Some(routed) => routed.contains(name),
            None => self
                .config
                .agent
                .pod_interfaces
                .iter()
                .any(|p| glob_match(p, name)),
        };
        let mut attached = Vec::new();
        for (ifindex, name) in &interfaces {
            if name == &self.tunnel.device || !watched(name) {
                continue;
            }
            if !self.programs.is_attached(*ifindex, Hook::PodIngress) {
                match self.programs.attach(name, *ifindex, Hook::PodIngress) {
                    Ok(()) => tracing::info!(interface = %name, "classifier attached"),
                    // The interface may have gone meanwhile; the next tick tries again.
                    Err(err) => {
                        tracing::warn!(interface = %name, error = %crate::error_chain(&err), "could not attach the classifier");
                        continue;
                    }
                }
            }
            attached.push(name.clone());
        }
        attached.sort();
        // Interfaces carrying the classifier, also one no longer matched that kept it.
        let carrying: Vec<String> = interfaces
            .iter()
            .filter(|(ifindex, _)| self.programs.is_attached(*ifindex, Hook::PodIngress))
            .map(|(_, name)| name.clone())
            .collect();
        let unwatched = self.unwatched_sources(&routes, &carrying);
        if unwatched != self.state.unwatched_sources {
            for source in unwatched
                .iter()
                .filter(|s| !self.state.unwatched_sources.contains(s))
            {
                tracing::error!(source = %source, "a selected source is routed through an interface the classifier does not watch: its traffic is NOT tunnelled (static mode: add the interface to [agent].pod_interfaces)");
            }
            self.state.unwatched_sources = unwatched;
            self.write_state()?;
        }
        if attached != self.state.interfaces {
            self.state.interfaces = attached;
            self.write_state()?;
        }
        Ok(())
    }

    /// The selected sources whose route leaves through an interface not in `attached` (nor
    /// the loopback or tunnel device), as `source via interface`.
    fn unwatched_sources(&self, routes: &Routes, attached: &[String]) -> Vec<String> {
        let Some(desired) = &self.desired else {
            return Vec::new();
        };
        let sources: BTreeSet<Prefix> = desired
            .policies
            .iter()
            .flat_map(|p| p.sources.iter().copied())
            .collect();
        sources
            .into_iter()
            .filter_map(|source| {
                let interface = routes.interface_of(source.addr())?;
                let watched = attached.iter().any(|a| a == interface)
                    || interface == "lo"
                    || interface == self.tunnel.device;
                (!watched).then(|| format!("{source} via {interface}"))
            })
            .collect()
    }

    /// The status file's path.
    pub fn state_path(config: &Config) -> PathBuf {
        crate::status::Location::of(config).state_file()
    }

    fn write_state(&self) -> Result<(), NodeError> {
        let dir = &self.config.agent.state_dir;
        let path = Node::state_path(&self.config);
        let error = |source| NodeError::State {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(error)?;
        let text = serde_json::to_string_pretty(&self.state)
            .map_err(|e| error(std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(error)?;
        std::fs::rename(&tmp, &path).map_err(error)
    }

    /// Records what the cluster side knows, for `egret-agent status`; written only when it
    /// changed.
    pub fn set_cluster(
        &mut self,
        cluster: crate::kubernetes::node::ClusterState,
    ) -> Result<(), NodeError> {
        if self.state.cluster.as_ref() == Some(&cluster) {
            return Ok(());
        }
        self.state.cluster = Some(cluster);
        self.write_state()
    }

    /// The pins in use.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// The config file in use.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }
}

/// Removes everything the agent set up on the node: masquerade table, rules, routes, tunnel
/// device, pinned links (detaching the programs) and maps, and the status file.
pub fn uninstall(config: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    if let Err(err) = masquerade::remove() {
        errors.push(err.to_string());
    }
    let tunnel = Tunnel {
        device: config.tunnel.device.clone(),
        port: config.tunnel.port,
        mtu: 0,
        mark: config.agent.fwmark,
        table: config.agent.route_table,
        priority: config.agent.rule_priority,
    };
    if let Err(err) = tunnel::remove(&tunnel) {
        errors.push(err.to_string());
    }
    if let Err(err) = Pins::new(&config.agent.pin_path).remove_all() {
        errors.push(err.to_string());
    }
    let _ = std::fs::remove_file(Node::state_path(config));
    errors
}

/// Every interface of the calling thread's network namespace: (index, name).
pub fn interfaces() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns an array terminated by a zero entry, freed below.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return out;
    }
    let mut at = list;
    // SAFETY: walking the array up to its terminating entry.
    unsafe {
        while (*at).if_index != 0 && !(*at).if_name.is_null() {
            let name = CStr::from_ptr((*at).if_name).to_string_lossy().into_owned();
            out.push(((*at).if_index, name));
            at = at.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

/// The index of interface `name`.
pub fn ifindex_of(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: a NUL-terminated string that outlives the call.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => None,
        i => Some(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostFacts;

    fn config(text: &str) -> Config {
        let host = HostFacts {
            node_name_env: None,
            hostname: Some("node1".into()),
            namespace_env: None,
            cluster_credentials: true,
        };
        Config::from_str(text, &host).expect("valid config").config
    }

    const STATIC: &str = r#"
[agent]
mode = "static"
interface = "eth0"
[tunnel]
vni = 7
floating_ips = ["192.168.1.100"]
[[policy]]
name = "alice"
sources = ["10.10.1.0/28"]
destination_cidrs = ["8.8.8.0/24"]
excluded_cidrs = ["8.8.8.8/32"]
egress_source_ip = "192.168.1.100"
"#;

    fn tunnel(mtu: u16) -> Tunnel {
        Tunnel {
            device: "egret0".into(),
            port: 4800,
            mtu,
            mark: 0x0010_0000,
            table: 4800,
            priority: 4800,
        }
    }

    #[test]
    fn programs_get_the_tunnel_mss_vni_and_gateway_check() {
        let config = config(STATIC);
        let cfg = node_config(&config, &tunnel(1450), &config.tunnel.floating_ips);
        assert_eq!(
            (cfg.mark, cfg.vni, cfg.mss, cfg.ttl, cfg.flags),
            (0x0010_0000, 7, 1410, 64, FLAG_CHECK_GATEWAYS)
        );
        // Without known floating IPs, any gateway address is accepted.
        let open = self::config(&STATIC.replace("floating_ips = [\"192.168.1.100\"]", ""));
        assert_eq!(node_config(&open, &tunnel(1450), &[]).flags, 0);
    }

    #[test]
    fn policies_keep_their_order_and_fields() {
        let specs = specs(&config(STATIC));
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "alice");
        assert_eq!(specs[0].excluded[0].to_string(), "8.8.8.8/32");
        let program = compile(&Desired::of_config(&config(STATIC))).expect("compiles");
        let selected = program.decide(
            std::net::Ipv4Addr::new(10, 10, 1, 5),
            std::net::Ipv4Addr::new(8, 8, 8, 4),
        );
        assert_eq!(
            selected.map(|(_, egress)| egress),
            Some(std::net::Ipv4Addr::new(192, 168, 1, 100))
        );
        let excluded = program.decide(
            std::net::Ipv4Addr::new(10, 10, 1, 5),
            std::net::Ipv4Addr::new(8, 8, 8, 8),
        );
        assert_eq!(excluded, None);
    }

    #[test]
    fn the_masquerade_table_follows_the_config() {
        let config = config(STATIC);
        let m = masquerade_of(&config, &Desired::of_config(&config));
        assert_eq!(m.non_masquerade.len(), 11, "ip-masq-agent's default list");
        assert!(!m.masquerade_link_local);
        assert_eq!(m.tunnel_device, "egret0");
    }
}
