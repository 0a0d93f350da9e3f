//! `/etc/egret/agent.toml`: its schema, parsing and validation.
//!
//! This module owns the agent's config file and nothing else: it turns text into a
//! [`Config`] or into diagnostics that name the key, its line and what would be valid. It
//! touches no network state; the interface of the default route, for one, is resolved by the
//! running agent, not here.
//!
//! Loading is two steps, both pure given the text and a [`HostFacts`] snapshot
//! ([`Config::from_str`]), on the machinery the gateway shares ([`egret_config`]):
//! - `raw`: TOML syntax, section and key names (unknown keys are refused) and TOML types;
//!   each table on its own, and a refused key is set aside so the rest of its table is
//!   still checked;
//! - `validate`: every value's rules (ranges, prefixes, names) and the rules between values
//!   (policy names unique, policies only in static mode, egress IPs among the floating IPs),
//!   reporting every problem found, each with its key and line; one file per section.
//!
//! Invariants: a [`Config`] exists only once the whole file has no error; every field holds
//! its effective value, defaults filled in; every [`Prefix`] is canonical and no list holds
//! the same prefix twice. [`Config::to_toml`] prints it back as TOML that parses to the same
//! `Config`.

#![warn(missing_docs)]

mod effective;
mod glob;
mod raw;
mod validate;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub use egret_config::{ConfigError, Diagnostic, Exit, Severity};
pub use glob::glob_match;

use crate::prefix::Prefix;

/// Where the packages install the config.
pub const DEFAULT_PATH: &str = "/etc/egret/agent.toml";

/// A valid `agent.toml` with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[agent]`: this node and how the agent hooks into it.
    pub agent: Agent,
    /// `[tunnel]`: the VXLAN tunnel to the gateways.
    pub tunnel: Tunnel,
    /// `[masquerade]`: what unselected traffic does.
    pub masquerade: Masquerade,
    /// `[kubernetes]`: how the agent reaches the cluster (Kubernetes mode).
    pub kubernetes: Kubernetes,
    /// `[api]`: the agent's metrics and status over HTTP.
    pub api: Api,
    /// The `[[policy]]` tables in file order, which is also their age (the first is the
    /// oldest). Always empty in [`Mode::Kubernetes`].
    pub policies: Vec<Policy>,
}

/// `[agent]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// This node's name: from the file, else `$NODE_NAME`, else the host name (lowercased,
    /// as the kubelet does).
    pub node_name: String,
    /// Where policies come from.
    pub mode: Mode,
    /// The node's uplink; `None`: the interface of the default route, resolved at run time.
    pub interface: Option<String>,
    /// Glob patterns ([`glob_match`]) of the interfaces that carry pod traffic; never empty.
    pub pod_interfaces: Vec<String>,
    /// Where the eBPF maps and links are pinned, so a restart keeps traffic flowing.
    pub pin_path: PathBuf,
    /// Where the running agent writes its status.
    pub state_dir: PathBuf,
    /// The packet mark of selected flows; non-zero.
    pub fwmark: u32,
    /// The routing table that sends marked packets into the tunnel; never 0, 253, 254, 255.
    pub route_table: u32,
    /// The priority of the agent's first policy-routing rule; it also uses the next one.
    /// Both come before the main table's rule (32766).
    pub rule_priority: u32,
}

/// Where the agent takes its policies from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `EgressNATPolicy` and `EgressGateway` resources of the cluster.
    #[default]
    Kubernetes,
    /// The `[[policy]]` tables of the file; no cluster needed.
    Static,
}

impl Mode {
    /// The value of `mode` in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kubernetes => "kubernetes",
            Mode::Static => "static",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[tunnel]`: the VXLAN tunnel from this node to the gateways' floating IPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// VXLAN UDP port on the floating IPs; the gateways must use the same.
    pub port: u16,
    /// 24-bit VXLAN network identifier.
    pub vni: u32,
    /// The name of the agent's VXLAN device.
    pub device: String,
    /// The gateways' floating IPs, each once. Empty: the policies' egress IPs are not
    /// checked.
    pub floating_ips: Vec<Ipv4Addr>,
}

impl Default for Tunnel {
    fn default() -> Self {
        Tunnel {
            port: defaults::TUNNEL_PORT,
            vni: defaults::TUNNEL_VNI,
            device: defaults::TUNNEL_DEVICE.to_owned(),
            floating_ips: Vec::new(),
        }
    }
}

/// `[masquerade]`: ip-masq-agent semantics for the traffic no policy selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    /// Destinations pod traffic reaches with the pod's own source IP; everything else is
    /// masqueraded to the node IP. Empty: masquerade everything.
    pub non_masquerade_cidrs: Vec<Prefix>,
    /// Whether traffic to 169.254.0.0/16 is masqueraded too.
    pub masquerade_link_local: bool,
}

impl Default for Masquerade {
    fn default() -> Self {
        Masquerade {
            non_masquerade_cidrs: defaults::non_masquerade_cidrs(),
            masquerade_link_local: defaults::MASQUERADE_LINK_LOCAL,
        }
    }
}

/// `[kubernetes]`: the API server and where the agents keep their Leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// A kubeconfig file; `None`: the pod's service account, then `$KUBECONFIG`.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the agents' Leases (the status writer's and one per node).
    pub namespace: String,
}

/// `[api]`: where the agent answers `GET /metrics` (Prometheus text) and `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// The address to listen on; `None` (`listen = ""`): no API at all.
    pub listen: Option<SocketAddr>,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            listen: Some(defaults::API_LISTEN),
        }
    }
}

/// One `[[policy]]`: which pod flows leave through which egress IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Unique among the policies; a Kubernetes object name.
    pub name: String,
    /// The pods' addresses; never empty.
    pub sources: Vec<Prefix>,
    /// Where selected traffic goes; never empty.
    pub destination_cidrs: Vec<Prefix>,
    /// Destinations inside `destination_cidrs` that are not selected.
    pub excluded_cidrs: Vec<Prefix>,
    /// The floating IP the traffic leaves with, and the tunnel's outer destination.
    pub egress_source_ip: Ipv4Addr,
}

/// Defaults of the keys that have one.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

    use super::Mode;
    use crate::prefix::Prefix;

    /// `[agent].mode`.
    pub const MODE: Mode = Mode::Kubernetes;
    /// `[agent].pod_interfaces`: the host ends of pod veth pairs under the common CNIs:
    /// generic veth (bridge, flannel, kindnet), Calico, Cilium, GKE.
    pub const POD_INTERFACES: [&str; 4] = ["veth*", "cali*", "lxc*", "gke*"];
    /// `[agent].pin_path`: under the usual bpffs mount.
    pub const PIN_PATH: &str = "/sys/fs/bpf/egret";
    /// `[agent].state_dir`: a tmpfs, so a reboot starts clean.
    pub const STATE_DIR: &str = "/run/egret";
    /// `[agent].fwmark`: clear of kube-proxy's masquerade (0x4000) and drop (0x8000) bits.
    pub const FWMARK: u32 = 0x0010_0000;
    /// `[agent].route_table`.
    pub const ROUTE_TABLE: u32 = 4800;
    /// `[agent].rule_priority`: well before the main table's rule (32766).
    pub const RULE_PRIORITY: u32 = 4800;
    /// `[tunnel].port`: the tunnel contract's, which collides with no common CNI overlay.
    pub const TUNNEL_PORT: u16 = egret_config::tunnel::DEFAULT_PORT;
    /// `[tunnel].vni`: the tunnel contract's.
    pub const TUNNEL_VNI: u32 = egret_config::tunnel::DEFAULT_VNI;
    /// `[tunnel].device`.
    pub const TUNNEL_DEVICE: &str = "egret0";
    /// `[kubernetes].namespace` when `$POD_NAMESPACE` is not set.
    pub const NAMESPACE: &str = "egret-system";
    /// `[api].listen`: loopback, one port above the gateway's 9477 so that an agent and a
    /// gateway on one host do not collide.
    pub const API_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::LOCALHOST,
        egret_config::api::AGENT_PORT,
    ));
    /// `[masquerade].masquerade_link_local`, as ip-masq-agent.
    pub const MASQUERADE_LINK_LOCAL: bool = false;

    /// ip-masq-agent's default non-masquerade destinations (seed 001), in its order: the
    /// RFC 1918 ranges, shared address space, and the IETF reserved and documentation
    /// ranges.
    pub fn non_masquerade_cidrs() -> Vec<Prefix> {
        [
            ([10, 0, 0, 0], 8),
            ([172, 16, 0, 0], 12),
            ([192, 168, 0, 0], 16),
            ([100, 64, 0, 0], 10),
            ([192, 0, 0, 0], 24),
            ([192, 0, 2, 0], 24),
            ([192, 88, 99, 0], 24),
            ([198, 18, 0, 0], 15),
            ([198, 51, 100, 0], 24),
            ([203, 0, 113, 0], 24),
            ([240, 0, 0, 0], 4),
        ]
        .into_iter()
        .map(|(addr, len)| Prefix::new(Ipv4Addr::from(addr), len))
        .collect()
    }
}

/// The token kube-rs reads in a pod (its in-cluster config).
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// What the defaults need to know about the host, as a plain snapshot so validation stays
/// pure: the agent reads the real host once with [`HostFacts::from_system`]; tests build it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    /// `$NODE_NAME` (the DaemonSet sets it from `spec.nodeName`); `None` when unset.
    pub node_name_env: Option<String>,
    /// The host name; `None` when unknown.
    pub hostname: Option<String>,
    /// `$POD_NAMESPACE` (the DaemonSet sets it from `metadata.namespace`); `None` when
    /// unset.
    pub namespace_env: Option<String>,
    /// Whether Kubernetes mode finds credentials without `[kubernetes].kubeconfig`: a pod's
    /// service account (`$KUBERNETES_SERVICE_HOST` and its token) or `$KUBECONFIG`.
    pub cluster_credentials: bool,
}

impl HostFacts {
    /// Reads `$NODE_NAME` and the kernel's host name (the one `gethostname` returns). Empty
    /// values count as unset.
    pub fn from_system() -> HostFacts {
        let non_empty = |s: String| {
            let s = s.trim().to_owned();
            (!s.is_empty()).then_some(s)
        };
        HostFacts {
            node_name_env: std::env::var("NODE_NAME").ok().and_then(non_empty),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .and_then(non_empty),
            namespace_env: std::env::var("POD_NAMESPACE").ok().and_then(non_empty),
            cluster_credentials: std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
                || (std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
                    && std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists()),
        }
    }
}

/// A valid config and the warnings it deserves (for example a policy that will not be
/// programmed).
pub type Checked = egret_config::Checked<Config>;

impl Config {
    /// Parses and validates `text` (the contents of an `agent.toml`); `host` supplies the
    /// default node name. Pure: the same text and facts give the same result.
    pub fn from_str(text: &str, host: &HostFacts) -> Result<Checked, ConfigError> {
        validate::check(text, host)
    }

    /// Reads `path` and validates it.
    pub fn load(path: &Path, host: &HostFacts) -> Result<Checked, ConfigError> {
        Config::from_str(&egret_config::error::read(path)?, host)
    }

    /// The effective config as TOML, defaults filled in, with comments where a value is
    /// decided at run time. Parsing it again gives the same `Config`.
    pub fn to_toml(&self) -> String {
        effective::render(self)
    }
}

/// Fixtures shared by the config tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn prefix(text: &str) -> Prefix {
        text.parse().expect("valid prefix")
    }

    pub(crate) fn prefixes(texts: &[&str]) -> Vec<Prefix> {
        texts.iter().map(|t| prefix(t)).collect()
    }

    /// `$NODE_NAME` unset, host name `Node-7`.
    pub(crate) fn host() -> HostFacts {
        HostFacts {
            node_name_env: None,
            hostname: Some("Node-7".to_owned()),
            namespace_env: None,
            cluster_credentials: true,
        }
    }

    /// A static config with two policies and the floating IPs they use.
    pub(crate) const STATIC: &str = r#"[agent]
mode = "static"

[tunnel]
floating_ips = ["192.168.1.100", "192.168.1.101"]

[[policy]]
name = "alice-frontend"
sources = ["10.10.1.0/28"]
destination_cidrs = ["8.8.8.0/24"]
egress_source_ip = "192.168.1.100"

[[policy]]
name = "bob"
sources = ["10.10.2.0/24", "10.10.3.7/32"]
destination_cidrs = ["0.0.0.0/0"]
excluded_cidrs = ["10.0.0.0/8"]
egress_source_ip = "192.168.1.101"
"#;

    pub(crate) fn accept(text: &str) -> Checked {
        match Config::from_str(text, &host()) {
            Ok(checked) => checked,
            Err(error) => panic!(
                "refused:\n{}\n---\n{text}",
                error.located(Path::new("agent.toml"))
            ),
        }
    }

    /// The diagnostics of a refused document.
    pub(crate) fn refuse(text: &str) -> Vec<Diagnostic> {
        match Config::from_str(text, &host()) {
            Err(ConfigError::Invalid(diagnostics)) => diagnostics,
            Err(error) => panic!("unexpected {error}"),
            Ok(checked) => panic!("accepted: {:?}\n{text}", checked.config),
        }
    }

    /// 1-based line of the first occurrence of `needle`.
    pub(crate) fn line_of(text: &str, needle: &str) -> usize {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in the fixture"));
        text[..at].matches('\n').count() + 1
    }

    /// STATIC with `from` replaced by `to` (which must occur).
    pub(crate) fn edit(from: &str, to: &str) -> String {
        assert!(STATIC.contains(from), "{from:?} not in STATIC");
        STATIC.replacen(from, to, 1)
    }

    /// `[agent]` with these lines, and nothing else.
    pub(crate) fn agent(lines: &str) -> String {
        format!("[agent]\n{lines}\n")
    }

    /// `[tunnel]` with these lines, and nothing else.
    pub(crate) fn tunnel(lines: &str) -> String {
        format!("[tunnel]\n{lines}\n")
    }

    /// Each diagnostic as (key, line, problem), to compare with what a test expects.
    pub(crate) fn found(diagnostics: &[Diagnostic]) -> Vec<(&str, usize, &str)> {
        diagnostics
            .iter()
            .map(|d| (d.key.as_str(), d.line, d.problem.as_str()))
            .collect()
    }

    /// Each diagnostic as `LINE:COL: ...`.
    pub(crate) fn rendered(diagnostics: &[Diagnostic]) -> Vec<String> {
        diagnostics.iter().map(Diagnostic::to_string).collect()
    }

    fn find(diagnostics: &[Diagnostic], severity: Severity, key: &str, line: usize) -> Diagnostic {
        diagnostics
            .iter()
            .find(|d| d.severity == severity && d.key == key && d.line == line)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no {severity:?} on {key} at line {line}; got:\n{}",
                    rendered(diagnostics).join("\n")
                )
            })
    }

    /// Asserts that `text` is refused with an error on `key` at the line of `needle`, and
    /// returns that error.
    pub(crate) fn assert_error(text: &str, key: &str, needle: &str) -> Diagnostic {
        find(&refuse(text), Severity::Error, key, line_of(text, needle))
    }

    /// Asserts that `text` is accepted with a warning on `key` at the line of `needle`,
    /// and returns that warning.
    pub(crate) fn assert_warning(text: &str, key: &str, needle: &str) -> Diagnostic {
        find(
            &accept(text).warnings,
            Severity::Warning,
            key,
            line_of(text, needle),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    /// The example of PRODUCT.md, "Agent configuration", verbatim.
    const PRODUCT_EXAMPLE: &str = r#"[agent]
node_name = "node1"               # default: $NODE_NAME, then host name
mode = "kubernetes"               # or "static": policies below, no cluster needed

[tunnel]
port = 4800
vni = 1

[masquerade]                      # ip-masq-agent semantics (seed 001)
non_masquerade_cidrs = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]  # default: seed 001's list
masquerade_link_local = false

[[policy]]                        # static mode only
name = "alice-frontend"
sources = ["10.10.1.0/28"]
destination_cidrs = ["8.8.8.0/24"]
excluded_cidrs = []
egress_source_ip = "192.168.1.100"
"#;

    #[test]
    fn the_product_example_in_static_mode_has_the_right_values_and_defaults() {
        let text = PRODUCT_EXAMPLE.replace("mode = \"kubernetes\"", "mode = \"static\"");
        let checked = accept(&text);
        assert_eq!(
            checked.config,
            Config {
                agent: Agent {
                    node_name: "node1".to_owned(),
                    mode: Mode::Static,
                    interface: None,
                    pod_interfaces: vec![
                        "veth*".to_owned(),
                        "cali*".to_owned(),
                        "lxc*".to_owned(),
                        "gke*".to_owned()
                    ],
                    pin_path: PathBuf::from("/sys/fs/bpf/egret"),
                    state_dir: PathBuf::from("/run/egret"),
                    fwmark: 0x0010_0000,
                    route_table: 4800,
                    rule_priority: 4800,
                },
                tunnel: Tunnel {
                    port: 4800,
                    vni: 1,
                    device: "egret0".to_owned(),
                    floating_ips: Vec::new(),
                },
                masquerade: Masquerade {
                    non_masquerade_cidrs: prefixes(&[
                        "10.0.0.0/8",
                        "172.16.0.0/12",
                        "192.168.0.0/16"
                    ]),
                    masquerade_link_local: false,
                },
                kubernetes: Kubernetes {
                    kubeconfig: None,
                    namespace: "egret-system".to_owned(),
                },
                api: Api::default(),
                policies: vec![Policy {
                    name: "alice-frontend".to_owned(),
                    sources: prefixes(&["10.10.1.0/28"]),
                    destination_cidrs: prefixes(&["8.8.8.0/24"]),
                    excluded_cidrs: Vec::new(),
                    egress_source_ip: Ipv4Addr::new(192, 168, 1, 100),
                }],
            }
        );
        // No floating IPs listed: the egress IP cannot be checked, and the operator is told.
        let warnings: Vec<String> = checked.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            warnings,
            [format!(
                "{}:1: warning: tunnel.floating_ips: not set, so the policies' egress_source_ip \
                 are not checked against the gateways' floating IPs; recommended: list the \
                 gateways' floating IPs, such as floating_ips = [\"192.168.1.100\"]",
                line_of(&text, "[tunnel]")
            )]
        );
    }

    #[test]
    fn the_product_example_as_written_is_refused_for_its_policy_in_kubernetes_mode() {
        let diagnostics = refuse(PRODUCT_EXAMPLE);
        let lines: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [format!(
                "{}:1: error: policy: [[policy]] tables are only read in mode \"static\"; in \
                 mode \"kubernetes\" (line 3) policies come from the cluster's \
                 EgressNATPolicy resources; allowed: mode = \"static\", or no [[policy]] table",
                line_of(PRODUCT_EXAMPLE, "[[policy]]")
            )]
        );
    }

    #[test]
    fn an_empty_file_is_a_kubernetes_agent_with_every_default() {
        let checked = accept("");
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let config = checked.config;
        assert_eq!(
            config.agent.node_name, "node-7",
            "the host name, lowercased"
        );
        assert_eq!(config.agent.mode, defaults::MODE);
        assert_eq!(config.agent.interface, None);
        assert_eq!(config.agent.pod_interfaces, defaults::POD_INTERFACES);
        assert_eq!(config.agent.pin_path, Path::new(defaults::PIN_PATH));
        assert_eq!(config.agent.state_dir, Path::new(defaults::STATE_DIR));
        assert_eq!(config.agent.fwmark, defaults::FWMARK);
        assert_eq!(config.agent.route_table, defaults::ROUTE_TABLE);
        assert_eq!(config.agent.rule_priority, defaults::RULE_PRIORITY);
        assert_eq!(config.tunnel, Tunnel::default());
        assert_eq!(config.masquerade, Masquerade::default());
        assert!(config.policies.is_empty());
    }

    #[test]
    fn the_default_non_masquerade_cidrs_are_ip_masq_agents_in_its_order() {
        let printed: Vec<String> = defaults::non_masquerade_cidrs()
            .iter()
            .map(Prefix::to_string)
            .collect();
        assert_eq!(
            printed,
            [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "100.64.0.0/10",
                "192.0.0.0/24",
                "192.0.2.0/24",
                "192.88.99.0/24",
                "198.18.0.0/15",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "240.0.0.0/4",
            ]
        );
    }

    #[test]
    fn node_name_comes_from_the_file_then_the_environment_then_the_host_name() {
        let env = HostFacts {
            node_name_env: Some("node-env".to_owned()),
            hostname: Some("host".to_owned()),
            namespace_env: None,
            cluster_credentials: true,
        };
        let parse = |text: &str, host: &HostFacts| {
            Config::from_str(text, host).map(|c| c.config.agent.node_name)
        };
        assert_eq!(
            parse("[agent]\nnode_name = \"n1\"\n", &env).ok(),
            Some("n1".into())
        );
        assert_eq!(parse("", &env).ok(), Some("node-env".into()));
        let blank_env = HostFacts {
            node_name_env: Some(" ".to_owned()),
            ..env.clone()
        };
        assert_eq!(parse("", &blank_env).ok(), Some("host".into()));
        let nameless = HostFacts {
            cluster_credentials: true,
            ..HostFacts::default()
        };
        let error = parse("", &nameless).expect_err("no name at all");
        assert_eq!(
            rendered(error.diagnostics()),
            [
                "1:1: error: agent.node_name: not set, and neither $NODE_NAME nor the host name \
             gives one; allowed: this node's name as the cluster knows it: lowercase letters, \
             digits, '-' and '.', at most 253 characters (default: $NODE_NAME, then the host \
             name)"
            ]
        );
    }

    #[test]
    fn kubernetes_mode_needs_credentials_from_somewhere() {
        let plain_host = HostFacts {
            cluster_credentials: false,
            ..host()
        };
        let error = Config::from_str("", &plain_host).expect_err("no cluster to follow");
        let lines = rendered(error.diagnostics());
        assert!(
            lines
                .iter()
                .any(|l| l.contains("kubernetes.kubeconfig: Kubernetes mode")),
            "{lines:?}"
        );
        let with_file = "[kubernetes]\nkubeconfig = \"/etc/egret/kubeconfig\"\n";
        assert!(Config::from_str(with_file, &plain_host).is_ok());
        assert!(Config::from_str("[agent]\nmode = \"static\"\n", &plain_host).is_ok());
        assert!(
            Config::from_str("", &host()).is_ok(),
            "a pod, or $KUBECONFIG"
        );
    }

    #[test]
    fn the_tunnel_defaults_are_the_tunnel_contracts() {
        use egret_config::tunnel;
        assert_eq!(
            (defaults::TUNNEL_PORT, defaults::TUNNEL_VNI),
            (tunnel::DEFAULT_PORT, tunnel::DEFAULT_VNI)
        );
        let config = accept("").config;
        assert_eq!(
            (config.tunnel.port, config.tunnel.vni),
            (tunnel::DEFAULT_PORT, tunnel::DEFAULT_VNI)
        );
    }

    #[test]
    fn the_real_host_gives_a_host_name() {
        let host = HostFacts::from_system();
        assert!(host.hostname.is_some_and(|h| !h.is_empty()));
    }

    #[test]
    fn an_unreadable_file_is_a_read_error_and_an_operational_failure() {
        let error = Config::load(Path::new("/nonexistent/egret/agent.toml"), &host())
            .expect_err("no such file");
        assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "cannot read /nonexistent/egret/agent.toml"
        );
        assert!(error.diagnostics().is_empty());
        assert_eq!(error.exit(), Exit::Failure);
    }

    #[test]
    fn an_invalid_config_counts_its_errors_locates_each_and_exits_2() {
        let text = "[agent]\nfwmark = 0\n\n[tunnel]\nport = 0\n";
        let error = Config::from_str(text, &host()).expect_err("two errors");
        assert_eq!(error.to_string(), "2 errors in the config");
        assert_eq!(
            error.located(Path::new("/etc/egret/agent.toml")),
            "/etc/egret/agent.toml:2:10: error: agent.fwmark: 0 is out of range; allowed: a \
             non-zero 32-bit integer, such as 0x00100000 (the default)\n\
             /etc/egret/agent.toml:5:8: error: tunnel.port: 0 is out of range; allowed: a UDP \
             port 1..=65535 (default 4800)"
        );
        assert_eq!(error.exit(), Exit::InvalidConfig);
        assert_eq!(error.exit().code(), 2);
    }

    #[test]
    fn load_reads_a_file() {
        let path =
            std::env::temp_dir().join(format!("egret-agent-config-{}.toml", std::process::id()));
        std::fs::write(&path, STATIC).expect("write the fixture");
        let loaded = Config::load(&path, &host());
        std::fs::remove_file(&path).expect("remove the fixture");
        let checked = loaded.expect("valid");
        assert_eq!(checked.config, accept(STATIC).config);
    }
}
