//! `egret-agent status`: what the agent decided (its status file) and what the data path
//! counted (the pinned maps, read directly, so it answers even while the agent is down).

use std::collections::BTreeMap;

use egret_ebpf_common::node::{NodeCounter, policy_id};
use serde::Serialize;

use std::path::PathBuf;

use crate::config::{Config, defaults};
use crate::datapath::{PinnedMaps, Pins};
use crate::node::State;

/// Where an agent keeps its state: all `status` needs from a config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `[agent].node_name`.
    pub node_name: String,
    /// `[agent].pin_path`.
    pub pin_path: PathBuf,
    /// `[agent].state_dir`.
    pub state_dir: PathBuf,
}

impl Location {
    /// The location a checked config names.
    pub fn of(config: &Config) -> Location {
        Location {
            node_name: config.agent.node_name.clone(),
            pin_path: config.agent.pin_path.clone(),
            state_dir: config.agent.state_dir.clone(),
        }
    }

    /// The location a config names even when it does not pass its checks (the agent keeps
    /// running with its previous config then, and its status matters most): the three keys
    /// are read as plain TOML strings, with their defaults where missing or unreadable.
    pub fn salvage(text: &str) -> Location {
        let value: toml::Table = text.parse().unwrap_or_default();
        let agent = value.get("agent").and_then(toml::Value::as_table);
        let key = |name: &str| {
            agent
                .and_then(|a| a.get(name))
                .and_then(toml::Value::as_str)
        };
        Location {
            node_name: key("node_name").unwrap_or("").to_owned(),
            pin_path: PathBuf::from(key("pin_path").unwrap_or(defaults::PIN_PATH)),
            state_dir: PathBuf::from(key("state_dir").unwrap_or(defaults::STATE_DIR)),
        }
    }

    /// The status file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("status.json")
    }
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `[agent].node_name`.
    pub node_name: String,
    /// Whether the process that wrote the status file is alive.
    pub running: bool,
    /// Its pid.
    pub pid: Option<u32>,
    /// The last reload's error, if any.
    pub last_error: Option<String>,
    /// Each policy with its counters.
    pub policies: Vec<PolicyReport>,
    /// Entries programmed in the maps.
    pub entries: Entries,
    /// Node counters by label.
    pub counters: BTreeMap<String, u64>,
    /// Pod interfaces with the classifier.
    pub interfaces: Vec<String>,
    /// The tunnel device.
    pub tunnel_device: String,
    /// Its MTU.
    pub tunnel_mtu: u16,
    /// Map changes the kernel refused at the last apply.
    pub failed_steps: Vec<String>,
    /// Selected sources routed through an interface without the classifier.
    pub unwatched_sources: Vec<String>,
    /// Kubernetes mode: nothing programmed yet, waiting for the cluster's first listing.
    pub waiting_for_cluster: bool,
    /// Kubernetes mode: the cluster as the agent sees it.
    pub cluster: Option<crate::kubernetes::node::ClusterState>,
}

/// One policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    /// Name.
    pub name: String,
    /// `programmed`, `rejected`, or `unknown` (not in the status file).
    pub state: String,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// Its egress IP.
    pub egress: String,
    /// Source entries.
    pub sources: usize,
    /// Destination entries.
    pub destinations: usize,
    /// Packets tunnelled.
    pub packets: u64,
    /// Bytes tunnelled.
    pub bytes: u64,
}

/// Entry counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Entries {
    /// Source prefixes.
    pub sources: usize,
    /// (class, destination) entries.
    pub destinations: usize,
    /// Gateway addresses.
    pub gateways: usize,
}

fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 checks for existence only.
    i32::try_from(pid).is_ok_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
}

/// Gathers the report of the agent at `location`.
pub fn gather(location: &Location) -> Result<Report, String> {
    let path = location.state_file();
    let state: Option<State> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok());
    let pins = Pins::new(&location.pin_path);
    if state.is_none() && !pins.exist() {
        return Err(format!(
            "no agent has run with this config: neither {} nor pinned maps under {} exist",
            path.display(),
            location.pin_path.display()
        ));
    }
    let state = state.unwrap_or_default();
    let maps = PinnedMaps::open(&pins).map_err(|e| crate::error_chain(&e))?;
    let stats = maps.stats().map_err(|e| crate::error_chain(&e))?;
    let policy_stats = maps.policy_stats().map_err(|e| crate::error_chain(&e))?;
    let contents = maps.contents().map_err(|e| crate::error_chain(&e))?;
    let policies = state
        .policies
        .iter()
        .map(|p| {
            let counted = policy_stats
                .get(&policy_id(&p.name))
                .copied()
                .unwrap_or_default();
            PolicyReport {
                name: p.name.clone(),
                state: p.state.clone(),
                reason: p.reason.clone(),
                egress: p.egress.clone(),
                sources: p.sources,
                destinations: p.destinations,
                packets: counted.packets,
                bytes: counted.bytes,
            }
        })
        .collect();
    Ok(Report {
        node_name: if state.node_name.is_empty() {
            location.node_name.clone()
        } else {
            state.node_name.clone()
        },
        running: state.pid != 0 && alive(state.pid),
        pid: (state.pid != 0).then_some(state.pid),
        last_error: state.last_error,
        policies,
        entries: Entries {
            sources: contents.sources.len(),
            destinations: contents.destinations.len(),
            gateways: contents.gateways.len(),
        },
        counters: NodeCounter::ALL
            .iter()
            .map(|&c| (c.label().to_owned(), stats.get(c)))
            .collect(),
        interfaces: state.interfaces,
        tunnel_device: state.tunnel_device,
        tunnel_mtu: state.tunnel_mtu,
        failed_steps: state.failed_steps,
        unwatched_sources: state.unwatched_sources,
        waiting_for_cluster: state.waiting_for_cluster,
        cluster: state.cluster,
    })
}

/// The report as text for an operator.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let running = match (report.running, report.pid) {
        (true, Some(pid)) => format!("running (pid {pid})"),
        _ => "NOT running (the data path keeps its last state)".to_owned(),
    };
    let _ = writeln!(out, "node {}: agent {running}", report.node_name);
    if let Some(err) = &report.last_error {
        let _ = writeln!(
            out,
            "last reload FAILED, previous config still applied: {err}"
        );
    }
    let _ = writeln!(
        out,
        "tunnel {} mtu {}; classifier on: {}",
        report.tunnel_device,
        report.tunnel_mtu,
        if report.interfaces.is_empty() {
            "(no pod interface)".to_owned()
        } else {
            report.interfaces.join(" ")
        }
    );
    let _ = writeln!(
        out,
        "entries: {} sources, {} destinations, {} gateways",
        report.entries.sources, report.entries.destinations, report.entries.gateways
    );
    let _ = writeln!(out, "\npolicies:");
    for p in &report.policies {
        let state = match &p.reason {
            Some(reason) => format!("{} ({reason})", p.state),
            None => p.state.clone(),
        };
        let _ = writeln!(
            out,
            "  {:<24} {:<16} egress {:<15} {} src {} dst  {} packets {} bytes",
            p.name, state, p.egress, p.sources, p.destinations, p.packets, p.bytes
        );
    }
    let _ = writeln!(out, "\ncounters:");
    for (label, value) in &report.counters {
        let _ = writeln!(out, "  {label:<26} {value}");
    }
    for step in &report.failed_steps {
        let _ = writeln!(out, "refused map change: {step}");
    }
    for source in &report.unwatched_sources {
        let _ = writeln!(
            out,
            "NOT TUNNELLED: {source} (the classifier does not watch that interface)"
        );
    }
    if report.waiting_for_cluster {
        let _ = writeln!(
            out,
            "\nwaiting for the cluster's first listing: the node keeps what it had"
        );
    }
    if let Some(cluster) = &report.cluster {
        render_cluster(&mut out, cluster);
    }
    out
}

fn render_cluster(out: &mut String, cluster: &crate::kubernetes::node::ClusterState) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\ncluster: {} policies; this agent {} the policies' status",
        cluster.policies.len(),
        if cluster.status_writer {
            "writes"
        } else {
            "does not write"
        }
    );
    for p in &cluster.policies {
        let selected = cluster
            .selected
            .iter()
            .find(|(name, _)| *name == p.name)
            .map(|(_, pods)| pods.join(" "))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<24} gen {:<4} {:<16} {}",
            p.name,
            p.generation,
            p.verdict,
            p.message.as_deref().unwrap_or(&selected)
        );
    }
    let _ = writeln!(
        out,
        "  pods set aside: {} host network, {} terminal, {} without IPv4",
        cluster.host_network_pods, cluster.terminal_pods, cluster.pods_without_ipv4
    );
    if let Some(err) = &cluster.masquerade_config_error {
        let _ = writeln!(
            out,
            "  ip-masq-agent ConfigMap refused (previous kept): {err}"
        );
    }
    let _ = writeln!(out, "api watches:");
    for w in &cluster.watches {
        let _ = writeln!(
            out,
            "  {:<18} {} last event {} relists {} errors {}{}",
            w.name,
            if w.synced { "synced " } else { "LISTING" },
            w.last_event.map_or("never".to_owned(), |t| format!(
                "{}s ago",
                crate::node::now_secs().saturating_sub(t)
            )),
            w.relists,
            w.errors,
            w.last_error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_config_still_says_where_the_state_is() {
        let broken = "[agent]\nstate_dir = \"/run/x\"\npin_path = \"/sys/fs/bpf/x\"\nbogus = 1\n\
                      [[policy]]\nsources = [\"10.0.0.0/33\"]\n";
        let at = Location::salvage(broken);
        assert_eq!(at.state_dir, PathBuf::from("/run/x"));
        assert_eq!(at.pin_path, PathBuf::from("/sys/fs/bpf/x"));
        // Not even TOML: the defaults.
        let at = Location::salvage("[agent");
        assert_eq!(at.pin_path, PathBuf::from(defaults::PIN_PATH));
        assert_eq!(at.state_file(), PathBuf::from("/run/egret/status.json"));
    }
}
