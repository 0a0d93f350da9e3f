//! The agent lab: two nodes with pods, `egret-agent` on each, two gateways sharing two floating
//! IPs, a router, an outside host and an internal host, in namespaces.
//!
//! ```text
//!  pod-a1 10.10.1.5 ─┐                                    ┌─ gw1 192.168.50.11 ─┐ egret-gateway ×2, sync,
//!  pod-a2 10.10.1.6 ─┤ node1 192.168.50.21 ─┐             │                      │ .100 (VRID 10, gw1 preferred)
//!                    (veth-a1, veth-a2)     ├── lan br0 ──┼─ gw2 192.168.50.12 ─┘ .101 (VRID 11, gw2 preferred)
//!  pod-b1 10.10.2.5 ─┤ node2 192.168.50.22 ─┘             └─ router 192.168.50.1 ── 198.51.100.1 / outside 198.51.100.10 (+ .200)
//!                    (veth-b1)                                                 └── 172.16.0.1 / internal 172.16.0.10
//! ```
//!
//! [`AgentLab`] owns every namespace (`<run prefix>-<tag>-<name>`; `lan` holds the bridge), a
//! work directory with the configs and logs, the gateway and agent processes, and a bpffs
//! mount for the agents' pins. Dropping it kills the agents, runs `egret-agent uninstall` on
//! every node that ran one, stops the gateways, removes the pins and the bpffs mount, then the
//! namespaces and the work directory — also during a panic.
//!
//! The wiring is a plain CNI's: each pod's `eth0` is the peer of a `veth-*` on its node, the
//! pod has its address as a /32 and a default route to the node side's address (10.10.1.1 or
//! 10.10.2.1, a /32 on every pod veth of that node) on-link; the node routes the pod's /32 to
//! its veth and forwards. The nodes have a default route to the router and nothing else: the
//! agent makes its tunnel device, policy routing and masquerade itself. The router forwards
//! without NAT and routes each node's pod /24 to it, so the internal host can answer pods
//! directly (non-masquerade destinations). IPv6 is off everywhere, as in
//! [`crate::topology`]. `rp_filter` is pinned per namespace rather than inherited from the
//! host: loose (2, systemd's default) on the nodes, off on the router.
//!
//! # The agents' pins
//!
//! `ip netns exec` runs its program in a new mount namespace with a fresh sysfs on `/sys`,
//! which hides any bpffs mounted at `/sys/fs/bpf` (and this machine mounts none there): an
//! agent started that way could not pin under `/sys/fs/bpf`, and a bpffs it mounted itself
//! would die with its mount namespace, taking the pins a restart needs. So the lab mounts a
//! bpffs of its own at `<work dir>/bpf` in the caller's mount namespace — every
//! `ip netns exec` copies it, the same instance — and each node pins under
//! `<work dir>/bpf/<node>` ([`AgentLab::pin_path`]). The lab unmounts it when it drops;
//! mounts of runs that were killed are unmounted by the next lab ([`reap_stale_bpffs`]).
//!
//! # The agent's command line
//!
//! Everything that knows `egret-agent`'s command line and output is in [`AgentCli`],
//! [`AgentStatus`] and [`AgentConfig::render`], and for `run --config <file>`, which the
//! gateway shares, in [`crate::topology::Daemon`] (an [`Agent`] is one); adapt those when the
//! agent's interface moves.

use std::{
    collections::BTreeMap,
    fs,
    io::Read as _,
    net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, ExitCode, ExitStatus, Stdio},
    sync::{
        Once,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

pub use crate::ha::{FloatingIpRole, GW2_ADDRESS, Member, parse_roles};
use crate::{
    NetNs, check_output,
    ha::{
        EchoServer, GatewayPair, Messenger, MessengerReport, NAT_PORT_RANGE, SYNC_PORT, Snapshot,
        idle, millis,
    },
    run_prefix,
    topology::{
        self, API_LISTEN, Daemon, Direction, End, GW_ADDRESS, Metrics, PeerSources,
        ROUTER_LAN_ADDRESS, Transfer, WorkDir, address, api_request, cable, default_route,
        disable_ipv6, join_lan, lab_binary, lan_switch, peer_sources, socat_transfer, sysctl, tail,
    },
};

/// gw1's address on the LAN.
pub const GW1_ADDRESS: Ipv4Addr = GW_ADDRESS;
/// node1's address on the LAN: its masquerade address and its tunnel's outer source.
pub const NODE1_ADDRESS: Ipv4Addr = topology::NODE_ADDRESS;
/// node2's address on the LAN.
pub const NODE2_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 22);
/// The router's LAN address: everyone's default route.
pub const ROUTER_ADDRESS: Ipv4Addr = ROUTER_LAN_ADDRESS;
/// The first floating IP (VRID 10, gw1 preferred): alice's egress IP.
pub const EGRESS_IP: Ipv4Addr = topology::FLOATING_IP;
/// The second floating IP (VRID 11, gw2 preferred).
pub const SECOND_EGRESS_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 101);
/// An address on the LAN that is no floating IP: a policy egressing there is rejected.
pub const UNKNOWN_EGRESS_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 199);
/// The router's side of the outside network.
pub const ROUTER_OUTSIDE_ADDRESS: Ipv4Addr = topology::ROUTER_OUTSIDE_ADDRESS;
/// The outside host, inside alice's destination and outside her exclusion.
pub const OUTSIDE_ADDRESS: Ipv4Addr = topology::OUTSIDE_ADDRESS;
/// The outside host's second address, inside alice's excluded 198.51.100.128/25.
pub const EXCLUDED_OUTSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
/// The router's side of the internal network.
pub const ROUTER_INTERNAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
/// The internal host, in a non-masquerade CIDR: pods reach it with their own address.
pub const INTERNAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 10);
/// VXLAN port and VNI of the agents and the gateways.
pub const TUNNEL_PORT: u16 = topology::TUNNEL_PORT;
pub const VNI: u32 = topology::VNI;
/// The gateways' advert interval.
pub const ADVERT_INTERVAL: Duration = Duration::from_millis(100);
/// The non-masquerade CIDRs of the agents' `[masquerade]`.
pub const NON_MASQUERADE_CIDRS: [&str; 2] = ["10.0.0.0/8", "172.16.0.0/12"];

/// The priority a gateway has for the floating IP it is preferred for, and for the other.
const PREFERRED_PRIORITY: u8 = 200;
const OTHER_PRIORITY: u8 = 100;
/// How long the gateways may take to agree after they start.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an agreement must hold to count: above Master_Down_Interval (about 360 ms at
/// priority 100) plus an advert, so that a preempting gateway would have shown.
const CONVERGE_SETTLE: Duration = Duration::from_millis(600);
/// Where each agent's API answers in its node's namespace: `[api].listen`'s default.
pub const AGENT_API: &str = "127.0.0.1:9478";
/// How long an agent may take to program its policies after it starts.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// One floating IP of the gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatingIp {
    pub address: Ipv4Addr,
    pub vrid: u8,
    /// The gateway with the higher priority for it: its master while it runs.
    pub preferred: Member,
}

/// Both floating IPs, in config order.
pub const FLOATING_IPS: [FloatingIp; 2] = [
    FloatingIp {
        address: EGRESS_IP,
        vrid: 10,
        preferred: Member::Gw1,
    },
    FloatingIp {
        address: SECOND_EGRESS_IP,
        vrid: 11,
        preferred: Member::Gw2,
    },
];

/// One of the two nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    Node1,
    Node2,
}

impl Node {
    /// Both, node1 first.
    pub const BOTH: [Node; 2] = [Node::Node1, Node::Node2];

    /// `node1` or `node2`: its namespace, its `[agent].node_name`, its LAN port.
    pub fn name(self) -> &'static str {
        match self {
            Node::Node1 => "node1",
            Node::Node2 => "node2",
        }
    }

    /// Its address on the LAN.
    pub fn address(self) -> Ipv4Addr {
        match self {
            Node::Node1 => NODE1_ADDRESS,
            Node::Node2 => NODE2_ADDRESS,
        }
    }

    /// Its pods.
    pub fn pods(self) -> &'static [Pod] {
        match self {
            Node::Node1 => &[Pod::A1, Pod::A2],
            Node::Node2 => &[Pod::B1],
        }
    }

    /// 0 for node1, 1 for node2.
    pub fn index(self) -> usize {
        match self {
            Node::Node1 => 0,
            Node::Node2 => 1,
        }
    }
}

/// One of the three pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pod {
    /// 10.10.1.5 on node1, selected by alice.
    A1,
    /// 10.10.1.6 on node1, selected by no policy at first.
    A2,
    /// 10.10.2.5 on node2, selected by alice.
    B1,
}

impl Pod {
    /// All three.
    pub const ALL: [Pod; 3] = [Pod::A1, Pod::A2, Pod::B1];

    /// `pod-a1`, `pod-a2` or `pod-b1`: its namespace.
    pub fn name(self) -> &'static str {
        match self {
            Pod::A1 => "pod-a1",
            Pod::A2 => "pod-a2",
            Pod::B1 => "pod-b1",
        }
    }

    /// Its address (on its `eth0`, a /32).
    pub fn address(self) -> Ipv4Addr {
        match self {
            Pod::A1 => Ipv4Addr::new(10, 10, 1, 5),
            Pod::A2 => Ipv4Addr::new(10, 10, 1, 6),
            Pod::B1 => Ipv4Addr::new(10, 10, 2, 5),
        }
    }

    /// Its address as a /32 source CIDR.
    pub fn cidr(self) -> String {
        format!("{}/32", self.address())
    }

    /// The node it runs on.
    pub fn node(self) -> Node {
        match self {
            Pod::A1 | Pod::A2 => Node::Node1,
            Pod::B1 => Node::Node2,
        }
    }

    /// The node's end of its veth pair.
    pub fn veth(self) -> &'static str {
        match self {
            Pod::A1 => "veth-a1",
            Pod::A2 => "veth-a2",
            Pod::B1 => "veth-b1",
        }
    }

    /// The node side's address, the pod's default route.
    pub fn gateway(self) -> Ipv4Addr {
        match self.node() {
            Node::Node1 => Ipv4Addr::new(10, 10, 1, 1),
            Node::Node2 => Ipv4Addr::new(10, 10, 2, 1),
        }
    }

    fn index(self) -> usize {
        match self {
            Pod::A1 => 0,
            Pod::A2 => 1,
            Pod::B1 => 2,
        }
    }
}

/// A static-mode `[[policy]]` of the agents' config, built with [`Policy::new`] and the
/// chained setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub sources: Vec<String>,
    pub destination_cidrs: Vec<String>,
    pub excluded_cidrs: Vec<String>,
    pub egress_source_ip: Ipv4Addr,
}

impl Policy {
    /// A policy named `name` leaving with `egress`, selecting nothing yet.
    pub fn new(name: &str, egress: Ipv4Addr) -> Self {
        Self {
            name: name.to_owned(),
            sources: Vec::new(),
            destination_cidrs: Vec::new(),
            excluded_cidrs: Vec::new(),
            egress_source_ip: egress,
        }
    }

    /// Selects `pod` (its /32).
    #[must_use]
    pub fn select(mut self, pod: Pod) -> Self {
        self.sources.push(pod.cidr());
        self
    }

    /// Selects the sources in `cidr`.
    #[must_use]
    pub fn source(mut self, cidr: &str) -> Self {
        self.sources.push(cidr.to_owned());
        self
    }

    /// Applies toward `cidr`.
    #[must_use]
    pub fn to(mut self, cidr: &str) -> Self {
        self.destination_cidrs.push(cidr.to_owned());
        self
    }

    /// Does not apply toward `cidr`.
    #[must_use]
    pub fn except(mut self, cidr: &str) -> Self {
        self.excluded_cidrs.push(cidr.to_owned());
        self
    }

    /// The lab's first policy: pod-a1 and pod-b1 toward 198.51.100.0/24 but its upper half,
    /// leaving with 192.168.50.100.
    pub fn alice() -> Self {
        Self::new("alice", EGRESS_IP)
            .select(Pod::A1)
            .select(Pod::B1)
            .to("198.51.100.0/24")
            .except("198.51.100.128/25")
    }
}

/// An agent's config file, rendered by [`AgentConfig::render`]. The lab writes one per node
/// (`<work dir>/<node>/agent.toml`); tests change the policies with
/// [`AgentLab::set_policies`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub node: Node,
    pub pin_path: PathBuf,
    pub state_dir: PathBuf,
    pub floating_ips: Vec<Ipv4Addr>,
    pub non_masquerade_cidrs: Vec<String>,
    pub masquerade_link_local: bool,
    pub policies: Vec<Policy>,
    /// `[agent].pod_interfaces`: `["veth-*"]`, the lab's pod veths, unless changed (a
    /// pattern that matches nothing leaves the classifier off every interface).
    pub pod_interfaces: Vec<String>,
    /// Kubernetes mode with this kubeconfig (policies, floating IPs from the cluster); `None`:
    /// static mode.
    pub kubeconfig: Option<PathBuf>,
}

impl AgentConfig {
    /// The lab's config for `node`: static mode, the pod veths, both floating IPs, alice.
    pub fn new(node: Node, pin_path: PathBuf, state_dir: PathBuf) -> Self {
        Self {
            node,
            pin_path,
            state_dir,
            floating_ips: FLOATING_IPS.iter().map(|ip| ip.address).collect(),
            non_masquerade_cidrs: NON_MASQUERADE_CIDRS.map(str::to_owned).to_vec(),
            masquerade_link_local: false,
            policies: vec![Policy::alice()],
            pod_interfaces: vec!["veth-*".to_owned()],
            kubeconfig: None,
        }
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|item| toml_string(item))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let floating: Vec<String> = self.floating_ips.iter().map(ToString::to_string).collect();
        let mode = if self.kubeconfig.is_some() {
            "kubernetes"
        } else {
            "static"
        };
        let mut text = format!(
            "[agent]\nnode_name = {node}\nmode = \"{mode}\"\ninterface = \"eth0\"\n\
             pod_interfaces = [{pods}]\npin_path = {pin}\nstate_dir = {state}\n\n\
             [tunnel]\nport = {TUNNEL_PORT}\nvni = {VNI}\nfloating_ips = [{floating}]\n\n\
             [masquerade]\nnon_masquerade_cidrs = [{non_masquerade}]\n\
             masquerade_link_local = {link_local}\n",
            node = toml_string(self.node.name()),
            pods = list(&self.pod_interfaces),
            pin = toml_string(&self.pin_path.to_string_lossy()),
            state = toml_string(&self.state_dir.to_string_lossy()),
            floating = list(&floating),
            non_masquerade = list(&self.non_masquerade_cidrs),
            link_local = self.masquerade_link_local,
        );
        if let Some(kubeconfig) = &self.kubeconfig {
            text.push_str(&format!(
                "\n[kubernetes]\nkubeconfig = {}\nnamespace = \"egret-system\"\n",
                toml_string(&kubeconfig.to_string_lossy())
            ));
            return text;
        }
        for policy in &self.policies {
            text.push_str(&format!(
                "\n[[policy]]\nname = {name}\nsources = [{sources}]\n\
                 destination_cidrs = [{destinations}]\nexcluded_cidrs = [{excluded}]\n\
                 egress_source_ip = \"{egress}\"\n",
                name = toml_string(&policy.name),
                sources = list(&policy.sources),
                destinations = list(&policy.destination_cidrs),
                excluded = list(&policy.excluded_cidrs),
                egress = policy.egress_source_ip,
            ));
        }
        text
    }

    /// What the agent must make of `policy`: `programmed` when its egress IP is a floating
    /// IP, else `rejected`.
    pub fn expected_state(&self, policy: &Policy) -> &'static str {
        if self.floating_ips.contains(&policy.egress_source_ip) {
            "programmed"
        } else {
            "rejected"
        }
    }
}

/// A large static config for scale measurements, from `base` (its node, pin path, state
/// directory, masquerade settings): `policies` policies selecting `sources` /32 sources
/// between them, an equal share each, with `pod`'s address the first source of the first
/// policy. Policy `i` (`scale-0000`, ...) leaves with its own floating IP (the lab's two,
/// then 192.168.52.10 onwards, all in `floating_ips`, so every policy is programmed), toward
/// its own /24 in 100.64.0.0/10 and toward 203.0.113.0/24 but its upper half. Its other
/// sources are 10.64.0.1 onwards. No destination holds a lab host: `pod`'s traffic is
/// classified (its source found, its destination not) and never tunnelled.
///
/// # Panics
///
/// When `policies` is 0, above 16,384, or more than `sources`.
pub fn scale_config(base: &AgentConfig, policies: usize, sources: usize, pod: Pod) -> AgentConfig {
    assert!(
        (1..=16_384).contains(&policies) && policies <= sources,
        "scale_config: {policies} policies, {sources} sources"
    );
    let floating_ips: Vec<Ipv4Addr> = (0..policies)
        .map(|i| match FLOATING_IPS.get(i) {
            Some(ip) => ip.address,
            None => {
                let n = u8::try_from((i - FLOATING_IPS.len()) / 200).unwrap_or(u8::MAX);
                let host = u8::try_from((i - FLOATING_IPS.len()) % 200).unwrap_or(0);
                Ipv4Addr::new(192, 168, 52_u8.saturating_add(n), 10 + host)
            }
        })
        .collect();
    // Source k: the pod for k = 0, else 10.64.0.0 + k.
    let source = |k: usize| -> String {
        if k == 0 {
            pod.cidr()
        } else {
            let offset = u32::try_from(k).unwrap_or(u32::MAX);
            format!(
                "{}/32",
                Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 64, 0, 0)) + offset)
            )
        }
    };
    let per_policy = sources / policies;
    let mut list = Vec::with_capacity(policies);
    for (i, egress) in floating_ips.iter().enumerate() {
        let end = if i + 1 == policies {
            sources
        } else {
            (i + 1) * per_policy
        };
        let offset = u32::try_from(i << 8).unwrap_or(u32::MAX);
        let own = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + offset);
        let mut policy = Policy::new(&format!("scale-{i:04}"), *egress)
            .to(&format!("{own}/24"))
            .to("203.0.113.0/24")
            .except("203.0.113.128/25");
        policy.sources = (i * per_policy..end).map(source).collect();
        list.push(policy);
    }
    AgentConfig {
        floating_ips,
        policies: list,
        ..base.clone()
    }
}

/// A TOML basic string (the lab's values are plain ASCII; quotes and backslashes escaped).
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The gateway config of `member`: both floating IPs with `member` preferred for its own,
/// 100 ms adverts with preemption (multicast), the nodes' /28 allowed, flow sync with the
/// other gateway sealed with `<workdir>/sync.key`, the API on its loopback.
pub fn gateway_config(member: Member, workdir: &Path) -> String {
    GatewayGroup::lab(workdir).render(member)
}

/// A `[[floating_ip]]` of the gateways' configs and each member's priority for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIpEntry {
    pub address: Ipv4Addr,
    pub vrid: u8,
    /// gw1's and gw2's `priority`.
    pub priorities: [u8; 2],
}

/// What of the two gateways' configs a test may rewrite and reload live: the floating IPs
/// with their priorities and the sync keys. Everything else is [`gateway_config`]'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayGroup {
    pub floating_ips: Vec<FloatingIpEntry>,
    /// `[sync].key_file`.
    pub key_file: PathBuf,
    /// `[sync].previous_key_file`, during a key rotation.
    pub previous_key_file: Option<PathBuf>,
}

impl GatewayGroup {
    /// The lab's: [`FLOATING_IPS`], each preferred by its gateway, and `<workdir>/sync.key`.
    pub fn lab(workdir: &Path) -> Self {
        let priority = |ip: &FloatingIp, member: Member| {
            if ip.preferred == member {
                PREFERRED_PRIORITY
            } else {
                OTHER_PRIORITY
            }
        };
        Self {
            floating_ips: FLOATING_IPS
                .iter()
                .map(|ip| FloatingIpEntry {
                    address: ip.address,
                    vrid: ip.vrid,
                    priorities: Member::BOTH.map(|member| priority(ip, member)),
                })
                .collect(),
            key_file: workdir.join(crate::SYNC_KEY),
            previous_key_file: None,
        }
    }

    /// The config file of `member`.
    pub fn render(&self, member: Member) -> String {
        let (me, other) = (member.address(), member.other().address());
        let mut text = format!(
            r#"[gateway]
name = "{name}"
interface = "eth0"

[tunnel]
port = {TUNNEL_PORT}
vni = {VNI}
allowed_sources = ["192.168.50.16/28"]

[election]
priority = {OTHER_PRIORITY}
advert_interval = "{interval}ms"
preempt = true
peers = []
garp_count = 3
garp_interval = "100ms"
garp_refresh = "60s"
"#,
            name = member.name(),
            interval = ADVERT_INTERVAL.as_millis(),
        );
        for ip in &self.floating_ips {
            text.push_str(&format!(
                "\n[[floating_ip]]\naddress = \"{}\"\nvrid = {}\npriority = {}\n",
                ip.address,
                ip.vrid,
                ip.priorities[member.index()]
            ));
        }
        let path = |path: &Path| toml_string(&path.display().to_string());
        let previous = self
            .previous_key_file
            .as_deref()
            .map(|file| format!("previous_key_file = {}\n", path(file)))
            .unwrap_or_default();
        text.push_str(&format!(
            "\n[nat]\nport_range = \"{NAT_PORT_RANGE}\"\n\n[sync]\nlisten = \"{me}:{SYNC_PORT}\"\n\
             peers = [\"{other}:{SYNC_PORT}\"]\nkey_file = {key}\n{previous}\n\
             [api]\nlisten = \"{API_LISTEN}\"\n",
            key = path(&self.key_file),
        ));
        text
    }
}

// ---------------------------------------------------------------------------------------
// The agent's command line: the only place that knows it.
// ---------------------------------------------------------------------------------------

/// The path of the `egret-agent` binary the lab runs: `$EGRET_AGENT_BIN`, else
/// `target/release/egret-agent` of this workspace (`$CARGO_TARGET_DIR` if set).
///
/// # Errors
///
/// When the file does not exist, with the command that builds it.
pub fn agent_binary() -> Result<PathBuf> {
    static WARNED: Once = Once::new();
    lab_binary(
        "egret-agent",
        "EGRET_AGENT_BIN",
        &["agent/src", "ebpf"],
        &WARNED,
    )
}

/// `egret-agent`'s subcommands, run inside a node's namespace.
#[derive(Debug, Clone)]
pub struct AgentCli {
    binary: PathBuf,
}

impl AgentCli {
    /// The agent of [`agent_binary`].
    ///
    /// # Errors
    ///
    /// When there is none.
    pub fn find() -> Result<Self> {
        Ok(Self {
            binary: agent_binary()?,
        })
    }

    /// The binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// `ip netns exec <node> egret-agent <subcommand> --config <config>`.
    pub fn command(&self, ns: &NetNs, subcommand: &str, config: &Path) -> Command {
        let mut command = ns.command(&self.binary);
        command
            .arg(subcommand)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info");
        command
    }

    /// Starts `egret-agent run --config <config>` in `ns` (foreground), its stdout and stderr
    /// into `log`. `ip netns exec` execs the agent without forking: signals to the child
    /// reach the agent itself.
    ///
    /// # Errors
    ///
    /// When it cannot start.
    pub fn spawn(&self, ns: &NetNs, config: &Path, log: &Path) -> Result<Agent> {
        Daemon::start(ns, &self.binary, config, log, "agent")
    }

    /// `egret-agent status --json --config <config>`, parsed.
    ///
    /// # Errors
    ///
    /// When the command fails or its output is not the status JSON.
    pub fn status(&self, ns: &NetNs, config: &Path) -> Result<AgentStatus> {
        let text = check_output(self.command(ns, "status", config).arg("--json"))?;
        AgentStatus::parse(&text)
    }

    /// `egret-agent status --json --config <config>`, as JSON (Kubernetes mode's `cluster`
    /// included).
    ///
    /// # Errors
    ///
    /// When the command fails or prints no JSON.
    pub fn status_json(&self, ns: &NetNs, config: &Path) -> Result<Value> {
        let text = check_output(self.command(ns, "status", config).arg("--json"))?;
        serde_json::from_str(&text).with_context(|| format!("status --json printed {text}"))
    }

    /// `egret-agent status --config <config>`: the text for people.
    ///
    /// # Errors
    ///
    /// When the command fails.
    pub fn status_text(&self, ns: &NetNs, config: &Path) -> Result<String> {
        check_output(&mut self.command(ns, "status", config))
    }

    /// `egret-agent check --config <config>`, whatever its exit status.
    ///
    /// # Errors
    ///
    /// When it cannot run.
    pub fn check(&self, ns: &NetNs, config: &Path) -> Result<CheckOutcome> {
        let output = self
            .command(ns, "check", config)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} check", self.binary.display()))?;
        Ok(CheckOutcome {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// `egret-agent uninstall --config <config>`: removes the table `ip egret`, the tunnel
    /// device, the rules and the pins.
    ///
    /// # Errors
    ///
    /// When it fails.
    pub fn uninstall(&self, ns: &NetNs, config: &Path) -> Result<()> {
        check_output(&mut self.command(ns, "uninstall", config))?;
        Ok(())
    }
}

/// What `egret-agent check` said.
#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CheckOutcome {
    /// The exit code (`None` when a signal ended it).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// `egret-agent run` in a node's namespace. Dropping it kills it (SIGKILL): an agent that
/// exits leaves its data path in place anyway, and [`AgentLab`] uninstalls after.
pub type Agent = Daemon;

/// `egret-agent status --json`.
#[derive(Debug, Clone)]
pub struct AgentStatus {
    pub policies: Vec<PolicyStatus>,
    /// The node programs' counters by label (`NodeCounter::label`).
    pub counters: BTreeMap<String, u64>,
    /// The last reload's error (`last_reload_error` or `last_error`), when it failed.
    pub last_error: Option<String>,
    /// The agent's process id, when the status says.
    pub pid: Option<u64>,
    /// The whole document.
    pub json: Value,
}

/// One policy in an [`AgentStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    pub name: String,
    /// `programmed` or `rejected`.
    pub state: String,
    /// Why it was rejected (`unknown_egress_ip`, ...).
    pub reason: Option<String>,
    pub packets: u64,
    pub bytes: u64,
}

impl AgentStatus {
    /// Parses the JSON.
    ///
    /// # Errors
    ///
    /// When it is not JSON, or `policies` is not a list of objects with a name and a state.
    pub fn parse(text: &str) -> Result<Self> {
        let json: Value = serde_json::from_str(text)
            .with_context(|| format!("egret-agent status --json printed {text:?}"))?;
        let policies = json
            .get("policies")
            .and_then(Value::as_array)
            .context("the status has no `policies` list")?
            .iter()
            .map(|policy| {
                let text = |key: &str| policy.get(key).and_then(Value::as_str).map(str::to_owned);
                let number = |key: &str| policy.get(key).and_then(Value::as_u64).unwrap_or(0);
                Ok(PolicyStatus {
                    name: text("name")
                        .with_context(|| format!("a policy without name: {policy}"))?,
                    state: text("state")
                        .with_context(|| format!("a policy without state: {policy}"))?,
                    reason: text("reason").filter(|reason| !reason.is_empty()),
                    packets: number("packets"),
                    bytes: number("bytes"),
                })
            })
            .collect::<Result<_>>()?;
        let counters = json
            .get("counters")
            .and_then(Value::as_object)
            .map(|counters| {
                counters
                    .iter()
                    .filter_map(|(label, value)| Some((label.clone(), value.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let last_error = ["last_reload_error", "last_error"]
            .iter()
            .find_map(|key| json.get(*key).and_then(Value::as_str))
            .filter(|error| !error.is_empty())
            .map(str::to_owned);
        let pid = json.get("pid").and_then(Value::as_u64);
        Ok(Self {
            policies,
            counters,
            last_error,
            pid,
            json,
        })
    }

    /// The policy `name`.
    ///
    /// # Errors
    ///
    /// When the status does not list it.
    pub fn policy(&self, name: &str) -> Result<&PolicyStatus> {
        self.policies
            .iter()
            .find(|policy| policy.name == name)
            .with_context(|| format!("the agent's status lists no policy {name:?}: {self:?}"))
    }

    /// The counter `label`.
    ///
    /// # Errors
    ///
    /// When the status has no such counter.
    pub fn counter(&self, label: &str) -> Result<u64> {
        self.counters
            .get(label)
            .copied()
            .with_context(|| format!("the agent's status has no counter {label:?}"))
    }

    /// Whether every policy of `config` is listed in the state it should have
    /// ([`AgentConfig::expected_state`]), and nothing else is.
    pub fn matches(&self, config: &AgentConfig) -> bool {
        self.policies.len() == config.policies.len()
            && config.policies.iter().all(|policy| {
                self.policy(&policy.name)
                    .is_ok_and(|status| status.state == config.expected_state(policy))
            })
    }
}

// ---------------------------------------------------------------------------------------
// The lab.
// ---------------------------------------------------------------------------------------

/// Closes a connection whose two ends the test holds so that, on return, every segment the
/// client sent has reached the server: the server closes first, the client closes once it
/// has read that, and the server reads the client's FIN last. (Dropping both ends instead
/// leaves their FINs and ACKs on the way while the test reads counters.)
///
/// # Errors
///
/// When an end gets data, or no FIN within `timeout`.
fn close_in_order(client: TcpStream, server: TcpStream, timeout: Duration) -> Result<()> {
    let eof = |stream: &TcpStream, which: &str| -> Result<()> {
        stream.set_read_timeout(Some(timeout))?;
        let mut byte = [0_u8; 1];
        let read = (&*stream)
            .read(&mut byte)
            .with_context(|| format!("waiting for the {which}'s FIN"))?;
        ensure!(read == 0, "the {which} sent data");
        Ok(())
    };
    server.set_nonblocking(false)?;
    server.shutdown(Shutdown::Write)?;
    eof(&client, "server")?;
    client.shutdown(Shutdown::Write)?;
    eof(&server, "client")
}

/// What a probe from a pod found at its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The destination's socket saw it come from this address and port.
    From(SocketAddrV4),
    /// Nothing arrived (or the connection failed): why.
    Nothing(String),
}

impl Seen {
    /// The source address, when something arrived.
    pub fn source(&self) -> Option<Ipv4Addr> {
        match self {
            Seen::From(from) => Some(*from.ip()),
            Seen::Nothing(_) => None,
        }
    }
}

/// How long the data path took to obey a change ([`AgentLab::measure_switch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// From the given instant to the sending of the first probe that arrived with the new
    /// source, every later probe arriving with it too.
    pub after: Duration,
    /// Probes sent.
    pub probes: u64,
    /// The probe interval: the resolution of `after`.
    pub interval: Duration,
}

/// A TCP connection from a pod messaging the outside host every 10 ms, each message echoed
/// (see [`crate::ha::Messenger`]); it survives when nothing is lost, reordered or reset.
pub struct LiveConnection {
    messenger: Messenger,
    server: EchoServer,
}

impl LiveConnection {
    /// Messages sent and echoes received so far.
    pub fn progress(&self) -> (usize, usize) {
        self.messenger.progress()
    }

    /// Whether either end saw an error so far.
    pub fn failed(&self) -> bool {
        self.messenger.failed() || !self.server.errors().is_empty()
    }

    /// Waits until `more` further echoes have come back.
    ///
    /// # Errors
    ///
    /// When they do not within `timeout`, or the connection failed.
    pub fn wait_echoes(&self, more: usize, timeout: Duration) -> Result<()> {
        let start = self.progress().1;
        let deadline = Instant::now() + timeout;
        loop {
            let (sent, echoed) = self.progress();
            ensure!(
                !self.failed(),
                "the live connection failed after {sent} messages, {echoed} echoes; server \
                 errors {:?}",
                self.server.errors()
            );
            if echoed >= start + more {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the live connection got {} echoes in {timeout:?}, expected {more} ({sent} \
                 sent, {echoed} echoed)",
                echoed - start
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops sending, waits up to `drain` for the echoes still due, and reports.
    pub fn finish(self, drain: Duration) -> LiveReport {
        let messenger = self.messenger.finish(drain);
        LiveReport {
            messenger,
            server_errors: self.server.errors(),
        }
    }
}

/// What a [`LiveConnection`] saw.
#[derive(Debug, Clone)]
pub struct LiveReport {
    pub messenger: MessengerReport,
    pub server_errors: Vec<String>,
}

impl LiveReport {
    /// Every message echoed, in order, without a reset, on both ends.
    pub fn survived(&self) -> bool {
        self.messenger.survived() && self.server_errors.is_empty()
    }

    /// Messages sent.
    pub fn messages(&self) -> usize {
        self.messenger.sent.len()
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "{} messages sent, {} echoed, longest gap between echoes {}, errors {:?}",
            self.messenger.sent.len(),
            self.messenger.echoed.len(),
            millis(Some(self.messenger.longest_gap())),
            [self.messenger.errors.clone(), self.server_errors.clone()].concat()
        )
    }
}

/// The agent lab; see the module documentation. The processes and the bpffs mount go in
/// [`Drop`]; then the fields drop in order: the work directory, then the namespaces.
pub struct AgentLab {
    agents: [Option<Agent>; 2],
    /// Agents started per node so far: their log names, and whether to uninstall.
    agent_starts: [u32; 2],
    gateways: GatewayPair,
    configs: [AgentConfig; 2],
    cli: Option<AgentCli>,
    /// The lab's bpffs, while mounted.
    bpffs: Option<PathBuf>,
    workdir: WorkDir,
    lan: NetNs,
    gws: [NetNs; 2],
    nodes: [NetNs; 2],
    pods: [NetNs; 3],
    router: NetNs,
    outside: NetNs,
    internal: NetNs,
}

impl AgentLab {
    /// Builds the topology in namespaces `<run prefix>-<tag>-<name>`, mounts the lab's bpffs
    /// and writes every config (alice on both nodes); nothing is started. `tag` tells apart
    /// labs of one process.
    ///
    /// # Errors
    ///
    /// When a namespace, link, address, route, sysctl or the mount cannot be set up;
    /// whatever was made is removed again.
    pub fn new(tag: &str) -> Result<Self> {
        static REAP: Once = Once::new();
        REAP.call_once(|| {
            if let Err(err) = reap_stale_bpffs() {
                eprintln!("egret-lab: could not unmount stale lab bpffs: {err:#}");
            }
        });
        let workdir = WorkDir::new(tag)?;
        let bpffs = workdir.path().join("bpf");
        let configs = Node::BOTH.map(|node| {
            AgentConfig::new(
                node,
                bpffs.join(node.name()),
                workdir.path().join(node.name()).join("state"),
            )
        });
        let ns = |name: &str| NetNs::new(&format!("{tag}-{name}"));
        // Should one of these fail, the namespaces already made drop with this expression.
        let mut lab = Self {
            agents: [None, None],
            agent_starts: [0, 0],
            gateways: GatewayPair::new(),
            configs,
            cli: None,
            bpffs: None,
            workdir,
            lan: ns("lan")?,
            gws: [ns("gw1")?, ns("gw2")?],
            nodes: [ns("node1")?, ns("node2")?],
            pods: [ns("pod-a1")?, ns("pod-a2")?, ns("pod-b1")?],
            router: ns("router")?,
            outside: ns("outside")?,
            internal: ns("internal")?,
        };
        lab.wire().context("building the agent lab")?;
        lab.mount_bpffs()?;
        crate::write_sync_key(lab.workdir())?;
        lab.write_gateway_configs(&GatewayGroup::lab(lab.workdir()))?;
        for node in Node::BOTH {
            fs::create_dir_all(&lab.configs[node.index()].state_dir)?;
            lab.write_agent_config(node)?;
        }
        Ok(lab)
    }

    fn all(&self) -> Vec<&NetNs> {
        let mut all = vec![&self.lan, &self.router, &self.outside, &self.internal];
        all.extend(self.gws.iter());
        all.extend(self.nodes.iter());
        all.extend(self.pods.iter());
        all
    }

    fn wire(&self) -> Result<()> {
        for ns in self.all() {
            disable_ipv6(ns)?;
        }
        // Every namespace's settings are the lab's, not the host's (a new namespace copies
        // some of the host's): only the nodes and the router forward.
        for ns in self
            .gws
            .iter()
            .chain(&self.pods)
            .chain([&self.outside, &self.internal])
        {
            sysctl(ns, "net.ipv4.ip_forward", "0")?;
        }
        for node in &self.nodes {
            sysctl(node, "net.ipv4.conf.all.rp_filter", "2")?;
            sysctl(node, "net.ipv4.conf.default.rp_filter", "2")?;
            sysctl(node, "net.ipv4.ip_forward", "1")?;
        }
        sysctl(&self.router, "net.ipv4.conf.all.rp_filter", "0")?;
        sysctl(&self.router, "net.ipv4.conf.default.rp_filter", "0")?;
        sysctl(&self.router, "net.ipv4.ip_forward", "1")?;

        lan_switch(&self.lan)?;
        for member in Member::BOTH {
            join_lan(
                &self.lan,
                member.name(),
                self.gateway_ns(member),
                member.address(),
            )?;
            default_route(self.gateway_ns(member), ROUTER_ADDRESS)?;
        }
        for node in Node::BOTH {
            join_lan(&self.lan, node.name(), self.node(node), node.address())?;
            default_route(self.node(node), ROUTER_ADDRESS)?;
        }
        join_lan(&self.lan, "router", &self.router, ROUTER_ADDRESS)?;

        cable(&self.router, "eth1", &self.outside, "eth0")?;
        address(
            &self.router,
            "eth1",
            &format!("{ROUTER_OUTSIDE_ADDRESS}/24"),
        )?;
        address(&self.outside, "eth0", &format!("{OUTSIDE_ADDRESS}/24"))?;
        address(
            &self.outside,
            "eth0",
            &format!("{EXCLUDED_OUTSIDE_ADDRESS}/24"),
        )?;
        default_route(&self.outside, ROUTER_OUTSIDE_ADDRESS)?;

        cable(&self.router, "eth2", &self.internal, "eth0")?;
        address(
            &self.router,
            "eth2",
            &format!("{ROUTER_INTERNAL_ADDRESS}/24"),
        )?;
        address(&self.internal, "eth0", &format!("{INTERNAL_ADDRESS}/24"))?;
        default_route(&self.internal, ROUTER_INTERNAL_ADDRESS)?;

        // The way back to the pods, for the hosts that answer them directly.
        for (pods, node) in [
            ("10.10.1.0/24", NODE1_ADDRESS),
            ("10.10.2.0/24", NODE2_ADDRESS),
        ] {
            self.router.ip([
                "route",
                "add",
                pods,
                "via",
                &node.to_string(),
                "dev",
                "eth0",
            ])?;
        }

        for pod in Pod::ALL {
            let (node, pod_ns) = (self.node(pod.node()), self.pod(pod));
            cable(node, pod.veth(), pod_ns, "eth0")?;
            let gateway = pod.gateway().to_string();
            address(node, pod.veth(), &format!("{gateway}/32"))?;
            node.ip(["route", "add", &pod.cidr(), "dev", pod.veth()])?;
            address(pod_ns, "eth0", &pod.cidr())?;
            pod_ns.ip(["route", "add", &gateway, "dev", "eth0", "scope", "link"])?;
            pod_ns.ip([
                "route", "add", "default", "via", &gateway, "dev", "eth0", "onlink",
            ])?;
        }
        Ok(())
    }

    fn mount_bpffs(&mut self) -> Result<()> {
        let dir = self.workdir.path().join("bpf");
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        check_output(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&dir))
            .context("mounting the lab's bpffs")?;
        self.bpffs = Some(dir);
        Ok(())
    }

    // --- namespaces and files ----------------------------------------------------------

    /// The namespace holding the bridge `br0`.
    pub fn lan(&self) -> &NetNs {
        &self.lan
    }
    /// `member`'s gateway host.
    pub fn gateway_ns(&self, member: Member) -> &NetNs {
        &self.gws[member.index()]
    }
    /// A node.
    pub fn node(&self, node: Node) -> &NetNs {
        &self.nodes[node.index()]
    }
    /// A pod.
    pub fn pod(&self, pod: Pod) -> &NetNs {
        &self.pods[pod.index()]
    }
    /// The router.
    pub fn router(&self) -> &NetNs {
        &self.router
    }
    /// The outside host (198.51.100.10 and .200).
    pub fn outside(&self) -> &NetNs {
        &self.outside
    }
    /// The internal host (172.16.0.10).
    pub fn internal(&self) -> &NetNs {
        &self.internal
    }

    /// The host that holds `address`: the outside host for 198.51.100.0/24, the internal
    /// host for 172.16.0.0/24.
    ///
    /// # Errors
    ///
    /// For any other address.
    pub fn host_of(&self, address: Ipv4Addr) -> Result<&NetNs> {
        match address.octets() {
            [198, 51, 100, _] => Ok(&self.outside),
            [172, 16, 0, _] => Ok(&self.internal),
            _ => bail!("no lab host holds {address}"),
        }
    }

    /// The lab's scratch directory, removed with the lab.
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// Where `node`'s agent pins its maps and links (on the lab's bpffs).
    pub fn pin_path(&self, node: Node) -> &Path {
        &self.configs[node.index()].pin_path
    }

    /// The config file of `member`'s gateway.
    pub fn gateway_config_path(&self, member: Member) -> PathBuf {
        self.workdir.path().join(format!("{}.toml", member.name()))
    }

    /// The config file of `node`'s agent.
    pub fn agent_config_path(&self, node: Node) -> PathBuf {
        self.workdir.path().join(node.name()).join("agent.toml")
    }

    /// `node`'s agent config as last written by the lab.
    pub fn agent_config(&self, node: Node) -> &AgentConfig {
        &self.configs[node.index()]
    }

    /// Replaces `node`'s policies and rewrites its config file (without telling the agent:
    /// see [`Self::reload_agent`]).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn set_policies(&mut self, node: Node, policies: Vec<Policy>) -> Result<()> {
        self.configs[node.index()].policies = policies;
        self.write_agent_config(node)
    }

    /// Writes `text` as `node`'s config file, whatever it is (the lab's own config stays
    /// what [`Self::agent_config`] says, for the next [`Self::set_policies`]).
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_agent_config_text(&self, node: Node, text: &str) -> Result<()> {
        let path = self.agent_config_path(node);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Replaces the whole config of `config.node` (policies, floating IPs, pod interface
    /// patterns, ...) and rewrites its file, without telling the agent. Start from
    /// [`Self::agent_config`] to keep the lab's pin path and state directory.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn set_agent_config(&mut self, config: AgentConfig) -> Result<()> {
        let node = config.node;
        self.configs[node.index()] = config;
        self.write_agent_config(node)
    }

    fn write_agent_config(&self, node: Node) -> Result<()> {
        self.write_agent_config_text(node, &self.configs[node.index()].render())
    }

    // --- gateways ------------------------------------------------------------------------

    /// Starts `member`'s gateway (without waiting for anything).
    ///
    /// # Errors
    ///
    /// When it already runs or cannot start.
    pub fn start_gateway(&mut self, member: Member) -> Result<()> {
        let config = self.gateway_config_path(member);
        self.gateways.start(
            member,
            &self.gws[member.index()],
            &config,
            self.workdir.path(),
        )
    }

    /// Starts both gateways and waits until each floating IP is owned by its preferred
    /// gateway, the other one its backup ([`Self::wait_gateways_converged`]).
    ///
    /// # Errors
    ///
    /// When either cannot start or they do not agree in time.
    pub fn start_gateways(&mut self) -> Result<()> {
        for member in Member::BOTH {
            if !self.gateway_running(member) {
                self.start_gateway(member)?;
            }
        }
        self.wait_gateways_converged(CONVERGE_TIMEOUT)
    }

    /// Whether `member`'s gateway was started and not stopped or killed.
    pub fn gateway_running(&self, member: Member) -> bool {
        self.gateways.running(member)
    }

    /// Fails when a gateway that was started has exited.
    ///
    /// # Errors
    ///
    /// When one has, with the end of its log.
    pub fn ensure_gateways_running(&mut self) -> Result<()> {
        self.gateways.ensure_running()
    }

    /// `GET <path>` from `member`'s API, in-process (no curl per request).
    ///
    /// # Errors
    ///
    /// When nothing answers or the answer is not 200.
    pub fn api_get(&self, member: Member, path: &str) -> Result<String> {
        api_request(self.gateway_ns(member), path)
            .with_context(|| format!("asking {}'s API for {path}", member.name()))
    }

    /// `member`'s `/metrics`, parsed.
    ///
    /// # Errors
    ///
    /// When its API does not answer or the text does not parse.
    pub fn metrics(&self, member: Member) -> Result<Metrics> {
        Metrics::parse(&self.api_get(member, "/metrics")?)
    }

    /// The sum over the running gateways of the series `name` with exactly `labels`.
    ///
    /// # Errors
    ///
    /// When a running gateway's metrics cannot be read or lack the series.
    pub fn gateway_total(&self, name: &str, labels: &[(&str, &str)]) -> Result<u64> {
        let mut total = 0;
        for member in Member::BOTH {
            if self.gateway_running(member) {
                let value = self
                    .metrics(member)?
                    .value(name, labels)
                    .with_context(|| format!("{} has no {name} {labels:?}", member.name()))?;
                // Counters are whole numbers; the text format prints them as floats.
                total += value as u64;
            }
        }
        Ok(total)
    }

    /// Waits until every running gateway has published a snapshot taken after `action` ended
    /// ([`Snapshot::taken_after`]): from then on their `/metrics` count all it caused.
    ///
    /// # Errors
    ///
    /// When one publishes none within 5 s.
    pub fn wait_gateways_counted(&self, action: SystemTime) -> Result<()> {
        for member in Member::BOTH {
            if self.gateway_running(member) {
                Snapshot::taken_after(member.name(), action, || {
                    Snapshot::parse(&self.api_get(member, "/status")?)
                })?;
            }
        }
        Ok(())
    }

    /// `member`'s view of the floating IPs.
    ///
    /// # Errors
    ///
    /// When its API does not answer.
    pub fn roles(&self, member: Member) -> Result<Vec<FloatingIpRole>> {
        parse_roles(&self.api_get(member, "/status")?)
    }

    /// The running gateway that owns `address`, when exactly one does.
    pub fn owner(&self, address: Ipv4Addr) -> Option<Member> {
        let owners: Vec<Member> = Member::BOTH
            .into_iter()
            .filter(|member| self.gateway_running(*member))
            .filter(|member| {
                self.roles(*member).is_ok_and(|roles| {
                    roles
                        .iter()
                        .any(|role| role.address == address && role.is_master())
                })
            })
            .collect();
        match owners[..] {
            [owner] => Some(owner),
            _ => None,
        }
    }

    /// Whether every floating IP is owned by its preferred gateway if that runs (else by the
    /// other), and the other running gateway is its backup.
    fn converged(&self) -> bool {
        let roles: Vec<Option<Vec<FloatingIpRole>>> = Member::BOTH
            .into_iter()
            .map(|member| {
                self.gateway_running(member)
                    .then(|| self.roles(member).ok())
                    .flatten()
            })
            .collect();
        FLOATING_IPS.iter().all(|ip| {
            let owner = if self.gateway_running(ip.preferred) {
                ip.preferred
            } else {
                ip.preferred.other()
            };
            let role = |member: Member| {
                roles[member.index()]
                    .as_ref()
                    .and_then(|roles| roles.iter().find(|role| role.address == ip.address))
            };
            let owner_ok = role(owner).is_some_and(FloatingIpRole::is_master);
            let backup = owner.other();
            let backup_ok = !self.gateway_running(backup)
                || role(backup).is_some_and(|role| role.state == "backup" && !role.owned);
            owner_ok && backup_ok
        })
    }

    /// Waits until every floating IP has its expected owner (see [`Self::start_gateways`])
    /// and that holds for a while.
    ///
    /// # Errors
    ///
    /// When a gateway exits, or they do not agree within `timeout`.
    pub fn wait_gateways_converged(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut since: Option<Instant> = None;
        loop {
            self.ensure_gateways_running()?;
            if self.converged() {
                let start = *since.get_or_insert_with(Instant::now);
                if start.elapsed() >= CONVERGE_SETTLE {
                    return Ok(());
                }
            } else {
                since = None;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the gateways did not settle on gw1 owning {EGRESS_IP} and gw2 owning \
                     {SECOND_EGRESS_IP} within {timeout:?}\n{}",
                    self.evidence()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `member` owns `address`; returns the time from `since` (a failure, say)
    /// to its becoming master as it recorded that (its `/status` is a snapshot published a
    /// few times a second, the transition's time is exact to the millisecond).
    ///
    /// # Errors
    ///
    /// When it does not within `timeout`.
    pub fn wait_owner(
        &self,
        address: Ipv4Addr,
        member: Member,
        since: SystemTime,
        timeout: Duration,
    ) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let owned = self.roles(member).ok().and_then(|roles| {
                roles
                    .into_iter()
                    .find(|role| role.address == address && role.is_master())
            });
            if let Some(role) = owned {
                return Ok(role
                    .last_transition
                    .duration_since(since)
                    .unwrap_or_else(|_| since.elapsed().unwrap_or_default()));
            }
            ensure!(
                started.elapsed() < timeout,
                "{} did not take {address} within {timeout:?}\n{}",
                member.name(),
                self.evidence()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills `member`'s gateway with SIGKILL; returns the instant just before the signal.
    ///
    /// # Errors
    ///
    /// When it is not running.
    pub fn kill_gateway(&mut self, member: Member) -> Result<SystemTime> {
        self.gateways.kill(member)
    }

    /// The end of `member`'s latest gateway log.
    pub fn gateway_log_tail(&self, member: Member, lines: usize) -> String {
        self.gateways.log_tail(member, lines)
    }

    /// Writes both gateways' config files from `group` (without telling the gateways: see
    /// [`Self::reload_gateway`]).
    ///
    /// # Errors
    ///
    /// When a file cannot be written.
    pub fn write_gateway_configs(&self, group: &GatewayGroup) -> Result<()> {
        for member in Member::BOTH {
            self.write_gateway_config_text(member, &group.render(member))?;
        }
        Ok(())
    }

    /// Writes `text` as `member`'s config file, whatever it is.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_gateway_config_text(&self, member: Member, text: &str) -> Result<()> {
        let path = self.gateway_config_path(member);
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Sends SIGHUP to `member`'s gateway (`systemctl reload`: it reads its config file
    /// again); returns the instant just before the signal.
    ///
    /// # Errors
    ///
    /// When it does not run.
    pub fn reload_gateway(&mut self, member: Member) -> Result<SystemTime> {
        let gateway = self
            .gateways
            .process_mut(member)
            .with_context(|| format!("{}'s gateway is not running", member.name()))?;
        let at = SystemTime::now();
        gateway.signal(libc::SIGHUP)?;
        Ok(at)
    }

    /// The process id of `member`'s gateway, while it runs.
    pub fn gateway_pid(&self, member: Member) -> Option<u32> {
        self.gateways
            .process(member)
            .and_then(|gateway| gateway.pid())
    }

    /// The whole log of `member`'s running gateway ("" when it does not run).
    pub fn gateway_log(&self, member: Member) -> String {
        self.gateways
            .process(member)
            .and_then(|gateway| fs::read_to_string(gateway.log_path()).ok())
            .unwrap_or_default()
    }

    // --- agents --------------------------------------------------------------------------

    /// How the lab runs `egret-agent` (found on first use).
    ///
    /// # Errors
    ///
    /// When there is no agent binary.
    pub fn cli(&mut self) -> Result<&AgentCli> {
        if self.cli.is_none() {
            self.cli = Some(AgentCli::find()?);
        }
        self.cli.as_ref().context("no agent")
    }

    fn found_cli(&self) -> Result<&AgentCli> {
        self.cli
            .as_ref()
            .context("no agent was started in this lab (AgentLab::start_agent)")
    }

    /// Starts `node`'s agent and waits until it is ready ([`Self::wait_agent_ready`]).
    ///
    /// # Errors
    ///
    /// When it cannot start, exits, or is not ready within [`AGENT_READY_TIMEOUT`].
    pub fn start_agent(&mut self, node: Node) -> Result<()> {
        self.spawn_agent(node)?;
        self.wait_agent_ready(node, AGENT_READY_TIMEOUT)
    }

    /// Starts `node`'s agent without waiting.
    ///
    /// # Errors
    ///
    /// When it already runs or cannot start.
    pub fn spawn_agent(&mut self, node: Node) -> Result<()> {
        ensure!(
            self.agents[node.index()].is_none(),
            "{}'s agent is already running",
            node.name()
        );
        self.cli()?;
        self.agent_starts[node.index()] += 1;
        let log = self
            .workdir
            .path()
            .join(node.name())
            .join(format!("agent-{}.log", self.agent_starts[node.index()]));
        let agent =
            self.found_cli()?
                .spawn(self.node(node), &self.agent_config_path(node), &log)?;
        self.agents[node.index()] = Some(agent);
        Ok(())
    }

    /// Starts both gateways, then both agents, each waited for.
    ///
    /// # Errors
    ///
    /// When one does not start or get ready.
    pub fn start_all(&mut self) -> Result<()> {
        self.start_gateways()?;
        for node in Node::BOTH {
            self.start_agent(node)?;
        }
        Ok(())
    }

    /// Whether `node`'s agent was started and not stopped or killed.
    pub fn agent_running(&self, node: Node) -> bool {
        self.agents[node.index()].is_some()
    }

    /// The running agent of `node`.
    ///
    /// # Errors
    ///
    /// When it does not run.
    pub fn agent_mut(&mut self, node: Node) -> Result<&mut Agent> {
        self.agents[node.index()]
            .as_mut()
            .with_context(|| format!("{}'s agent is not running", node.name()))
    }

    /// Waits until `node`'s agent answers `status --json` with every policy of its config in
    /// the state it should have (programmed when its egress IP is a floating IP, else
    /// rejected), from this very process when the status names a pid.
    ///
    /// # Errors
    ///
    /// When the agent exits, or is not ready within `timeout`; with its last status and the
    /// end of its log.
    pub fn wait_agent_ready(&mut self, node: Node, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.agent_mut(node)?.ensure_running()?;
            let pid = self.agent_mut(node)?.pid().map(u64::from);
            let last = match self.agent_status(node) {
                Ok(status)
                    if status.matches(self.agent_config(node))
                        && (status.pid.is_none() || status.pid == pid) =>
                {
                    return Ok(());
                }
                Ok(status) => format!("{:?} (pid {:?})", status.policies, status.pid),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "{}'s agent was not ready within {timeout:?}; expected {:?}; last status: \
                     {last}\n--- agent log (end) ---\n{}",
                    node.name(),
                    self.agent_config(node)
                        .policies
                        .iter()
                        .map(|p| (&p.name, self.agent_config(node).expected_state(p)))
                        .collect::<Vec<_>>(),
                    self.agent_log_tail(node, 40)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `node`'s agent's `GET /metrics` (its default `[api].listen`, in the node's namespace):
    /// the text and its parse.
    ///
    /// # Errors
    ///
    /// When the agent does not answer or the text does not parse.
    pub fn agent_metrics(&self, node: Node) -> Result<(String, Metrics)> {
        let text = self.node(node).exec(
            "curl",
            [
                "-sS",
                "--fail",
                "--max-time",
                "5",
                &format!("http://{AGENT_API}/metrics"),
            ],
        )?;
        let metrics = Metrics::parse(&text)?;
        Ok((text, metrics))
    }

    /// `node`'s `status --json`, raw (Kubernetes mode's `cluster` included).
    ///
    /// # Errors
    ///
    /// When the command fails.
    pub fn agent_status_json(&mut self, node: Node) -> Result<Value> {
        let config = self.agent_config_path(node);
        let cli = self.cli()?.clone();
        cli.status_json(self.node(node), &config)
    }

    /// Kills `node`'s agent with SIGKILL (its data path stays); returns the instant just
    /// before the signal.
    ///
    /// # Errors
    ///
    /// When it does not run.
    pub fn kill_agent(&mut self, node: Node) -> Result<Instant> {
        let mut agent = self.agents[node.index()]
            .take()
            .with_context(|| format!("{}'s agent is not running", node.name()))?;
        let at = Instant::now();
        agent.kill()?;
        Ok(at)
    }

    /// Stops `node`'s agent with SIGTERM (its data path stays), SIGKILL after `grace`;
    /// returns its exit status, how long it took and whether it had to be killed.
    ///
    /// # Errors
    ///
    /// When it does not run.
    pub fn stop_agent(
        &mut self,
        node: Node,
        grace: Duration,
    ) -> Result<(ExitStatus, Duration, bool)> {
        let mut agent = self.agents[node.index()]
            .take()
            .with_context(|| format!("{}'s agent is not running", node.name()))?;
        agent.terminate(grace)
    }

    /// Sends SIGHUP to `node`'s agent (reload its config file); returns the instant just
    /// before the signal.
    ///
    /// # Errors
    ///
    /// When it does not run.
    pub fn reload_agent(&mut self, node: Node) -> Result<Instant> {
        let agent = self.agent_mut(node)?;
        let at = Instant::now();
        agent.signal(libc::SIGHUP)?;
        Ok(at)
    }

    /// `egret-agent status --json` on `node`.
    ///
    /// # Errors
    ///
    /// When it fails or prints something else.
    pub fn agent_status(&self, node: Node) -> Result<AgentStatus> {
        self.found_cli()?
            .status(self.node(node), &self.agent_config_path(node))
    }

    /// `egret-agent status` on `node`, the text for people.
    ///
    /// # Errors
    ///
    /// When it fails.
    pub fn agent_status_text(&self, node: Node) -> Result<String> {
        self.found_cli()?
            .status_text(self.node(node), &self.agent_config_path(node))
    }

    /// `egret-agent check --config <config>` in `node`'s namespace.
    ///
    /// # Errors
    ///
    /// When it cannot run (not when it refuses the file).
    pub fn agent_check(&mut self, node: Node, config: &Path) -> Result<CheckOutcome> {
        self.cli()?;
        self.found_cli()?.check(self.node(node), config)
    }

    /// `egret-agent uninstall` on `node`.
    ///
    /// # Errors
    ///
    /// When it fails.
    pub fn agent_uninstall(&mut self, node: Node) -> Result<()> {
        self.cli()?;
        self.found_cli()?
            .uninstall(self.node(node), &self.agent_config_path(node))
    }

    /// The end of `node`'s latest agent log.
    pub fn agent_log_tail(&self, node: Node, lines: usize) -> String {
        match &self.agents[node.index()] {
            Some(agent) => agent.log_tail(lines),
            None => {
                let latest = self.agent_starts[node.index()];
                tail(
                    &self
                        .workdir
                        .path()
                        .join(node.name())
                        .join(format!("agent-{latest}.log")),
                    lines,
                )
            }
        }
    }

    // --- traffic -------------------------------------------------------------------------

    /// Which source addresses the host holding `destination` sees for a TCP connection, a
    /// UDP datagram and an ICMP echo from `pod` (`tests/scripts/peer_sources.py` listens on
    /// `destination`, ports 7001 and 7002).
    ///
    /// # Errors
    ///
    /// When the listener sees nothing for one of them within 10 s.
    pub fn sources_seen(&self, pod: Pod, destination: Ipv4Addr) -> Result<PeerSources> {
        let host = End::new(self.host_of(destination)?, destination);
        peer_sources(self.pod_end(pod), host, 3, 2, Duration::from_secs(10))
    }

    fn pod_end(&self, pod: Pod) -> End<'_> {
        End::new(self.pod(pod), pod.address())
    }

    /// Opens a TCP connection from `pod` to `destination`, where a listener waits in the
    /// host holding it; returns the peer address the listener saw, or why there was none
    /// (no answer within `timeout`, refused). A connection is closed in order before it
    /// returns ([`close_in_order`]): every segment the pod sent has arrived.
    ///
    /// # Errors
    ///
    /// When the listener cannot be set up, or an accepted connection does not close.
    pub fn tcp_source(
        &self,
        pod: Pod,
        destination: SocketAddrV4,
        timeout: Duration,
    ) -> Result<Seen> {
        let host = self.host_of(*destination.ip())?;
        let listener = host
            .run(|| TcpListener::bind(destination))?
            .with_context(|| format!("listening on {destination} in {}", host.name()))?;
        listener.set_nonblocking(true)?;
        let connected = self
            .pod(pod)
            .run(|| TcpStream::connect_timeout(&SocketAddr::V4(destination), timeout))?;
        let stream = match connected {
            Ok(stream) => stream,
            Err(err) => return Ok(Seen::Nothing(format!("connecting: {err}"))),
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match listener.accept() {
                Ok((accepted, SocketAddr::V4(peer))) => {
                    close_in_order(stream, accepted, timeout)
                        .with_context(|| format!("closing {peer} → {destination}"))?;
                    return Ok(Seen::From(peer));
                }
                Ok((_, peer)) => bail!("accepted {peer} on {destination}"),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return Ok(Seen::Nothing(
                            "the pod connected but the listener accepted nothing".into(),
                        ));
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(err) => bail!("accepting on {destination}: {err}"),
            }
        }
    }

    /// Sends a UDP datagram from a fresh socket of `pod` (a new source port, so a new flow
    /// for every conntrack) to `destination`, again every 200 ms until the socket bound
    /// there in its host receives one or `timeout` passes; returns where it came from.
    ///
    /// # Errors
    ///
    /// When a socket cannot be set up.
    pub fn udp_source(
        &self,
        pod: Pod,
        destination: SocketAddrV4,
        timeout: Duration,
    ) -> Result<Seen> {
        let server = self.udp_server(destination)?;
        let socket = self
            .pod(pod)
            .run(|| UdpSocket::bind((pod.address(), 0)))??;
        let deadline = Instant::now() + timeout;
        let mut next_send = Instant::now();
        while Instant::now() < deadline {
            if Instant::now() >= next_send {
                // A refusal (no route for a moment) is part of what is being watched.
                let _ = socket.send_to(b"egret probe", destination);
                next_send += Duration::from_millis(200);
            }
            let mut buffer = [0_u8; 64];
            match server.recv_from(&mut buffer) {
                Ok((_, SocketAddr::V4(from))) => return Ok(Seen::From(from)),
                Ok(_) => {}
                Err(err) if idle(&err) => thread::sleep(Duration::from_millis(2)),
                Err(err) => bail!("receiving on {destination}: {err}"),
            }
        }
        Ok(Seen::Nothing(format!(
            "nothing arrived at {destination} within {timeout:?}"
        )))
    }

    fn udp_server(&self, destination: SocketAddrV4) -> Result<UdpSocket> {
        let host = self.host_of(*destination.ip())?;
        let server = host
            .run(|| UdpSocket::bind(destination))?
            .with_context(|| format!("binding {destination} in {}", host.name()))?;
        server.set_nonblocking(true)?;
        Ok(server)
    }

    /// Measures how long after `since` the data path sends `pod`'s new UDP flows to
    /// `destination` with source `expected`: a probe leaves every `interval`, each from a
    /// fresh socket (a new flow), numbered; the answer is the sending time of the first
    /// probe that arrived with `expected` as source such that no later one arrived with
    /// another, once 20 in a row have.
    ///
    /// # Errors
    ///
    /// When that does not happen within `timeout`, or a socket cannot be set up.
    pub fn measure_switch(
        &self,
        pod: Pod,
        destination: SocketAddrV4,
        expected: Ipv4Addr,
        since: Instant,
        timeout: Duration,
    ) -> Result<Switch> {
        const CONFIRM: usize = 20;
        let interval = Duration::from_millis(2);
        let server = self.udp_server(destination)?;
        let pod_ns = self.pod(pod);
        let mut sent_at: Vec<Instant> = Vec::new();
        let mut seen: BTreeMap<u64, Ipv4Addr> = BTreeMap::new();
        let deadline = Instant::now() + timeout;
        loop {
            let number = sent_at.len() as u64;
            let socket = pod_ns.run(|| UdpSocket::bind((pod.address(), 0)))??;
            sent_at.push(Instant::now());
            let _ = socket.send_to(&number.to_be_bytes(), destination);
            drop(socket);
            loop {
                let mut buffer = [0_u8; 16];
                match server.recv_from(&mut buffer) {
                    Ok((8, SocketAddr::V4(from))) => {
                        let mut bytes = [0_u8; 8];
                        bytes.copy_from_slice(&buffer[..8]);
                        seen.insert(u64::from_be_bytes(bytes), *from.ip());
                    }
                    Ok(_) => {}
                    Err(err) if idle(&err) => break,
                    Err(err) => bail!("receiving on {destination}: {err}"),
                }
            }
            if let Some(first) = switched_at(&seen, expected, CONFIRM) {
                let index = usize::try_from(first)?;
                return Ok(Switch {
                    after: sent_at[index].saturating_duration_since(since),
                    probes: sent_at.len() as u64,
                    interval,
                });
            }
            if Instant::now() >= deadline {
                let last: Vec<(u64, Ipv4Addr)> = seen
                    .iter()
                    .rev()
                    .take(5)
                    .map(|(number, source)| (*number, *source))
                    .collect();
                bail!(
                    "{}'s new flows to {destination} did not leave with {expected} within \
                     {timeout:?}: {} probes sent, {} arrived, the last ones (number, source) \
                     {last:?}",
                    pod.name(),
                    sent_at.len(),
                    seen.len()
                );
            }
            thread::sleep(interval);
        }
    }

    /// Sends `bytes` of pseudo-random data over one TCP connection between `pod` and the
    /// outside host (socat on both ends, `port` on the outside host) and returns both ends'
    /// SHA-256.
    ///
    /// # Errors
    ///
    /// When either end fails or the transfer takes longer than `timeout`.
    pub fn tcp_transfer(
        &self,
        pod: Pod,
        direction: Direction,
        bytes: u64,
        port: u16,
        timeout: Duration,
    ) -> Result<Transfer> {
        socat_transfer(
            self.pod_end(pod),
            End::new(&self.outside, OUTSIDE_ADDRESS),
            self.workdir.path(),
            direction,
            bytes,
            port,
            timeout,
        )
    }

    /// Connects `pod` (local port `port`) to an echo server on the outside host's `port` and
    /// starts messaging every 10 ms.
    ///
    /// # Errors
    ///
    /// When the server cannot listen or the connection cannot be made.
    pub fn live_connection(&self, pod: Pod, port: u16) -> Result<LiveConnection> {
        let server = EchoServer::start(&self.outside, SocketAddrV4::new(OUTSIDE_ADDRESS, port))?;
        let messenger = Messenger::start(
            self.pod(pod),
            SocketAddrV4::new(pod.address(), port),
            server.address(),
            Duration::from_millis(10),
        )
        .with_context(|| format!("connecting {} to {}", pod.name(), server.address()))?;
        Ok(LiveConnection { messenger, server })
    }

    // --- evidence ------------------------------------------------------------------------

    /// The gateways' roles and the agents' status, with the end of every log, for failure
    /// messages.
    pub fn evidence(&self) -> String {
        let mut text = String::new();
        for member in Member::BOTH {
            let roles = if self.gateway_running(member) {
                self.roles(member).map_or_else(
                    |err| format!("(no status: {err:#})"),
                    |roles| {
                        roles
                            .iter()
                            .map(|role| {
                                format!(
                                    "{} {}{}",
                                    role.address,
                                    role.state,
                                    if role.owned { " (owned)" } else { "" }
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                )
            } else {
                "not running".to_owned()
            };
            text.push_str(&format!(
                "--- {} ({}): {roles}\n{}\n",
                member.name(),
                member.address(),
                self.gateway_log_tail(member, 10)
            ));
        }
        for node in Node::BOTH {
            if self.agent_starts[node.index()] == 0 {
                continue;
            }
            let status = self
                .agent_status_text(node)
                .unwrap_or_else(|err| format!("{err:#}"));
            text.push_str(&format!(
                "--- {}'s agent ({}): status:\n{}\n--- its log (end):\n{}\n",
                node.name(),
                if self.agent_running(node) {
                    "running"
                } else {
                    "not running"
                },
                status.trim_end(),
                self.agent_log_tail(node, 15)
            ));
        }
        text
    }
}

impl Drop for AgentLab {
    fn drop(&mut self) {
        for agent in self.agents.iter_mut() {
            drop(agent.take());
        }
        if let Some(cli) = &self.cli {
            for node in Node::BOTH {
                if self.agent_starts[node.index()] > 0
                    && let Err(err) = cli.uninstall(self.node(node), &self.agent_config_path(node))
                {
                    eprintln!(
                        "egret-lab: egret-agent uninstall on {}: {err:#}",
                        node.name()
                    );
                }
            }
        }
        self.gateways.stop_all();
        // bpffs is no namespace's: what is pinned there outlives the namespaces unless
        // removed. Unmounting frees whatever the agents or the uninstall left.
        if let Some(bpffs) = self.bpffs.take() {
            for config in &self.configs {
                if let Err(err) = fs::remove_dir_all(&config.pin_path)
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    eprintln!("egret-lab: removing {}: {err}", config.pin_path.display());
                }
            }
            if let Err(err) = check_output(Command::new("umount").arg(&bpffs)) {
                eprintln!("egret-lab: unmounting the lab's bpffs: {err:#}");
                let _ = check_output(Command::new("umount").arg("-l").arg(&bpffs));
            }
        }
    }
}

/// The first probe number whose probe arrived from `expected`, such that every probe
/// arrived after it did too, once at least `confirm` have.
fn switched_at(seen: &BTreeMap<u64, Ipv4Addr>, expected: Ipv4Addr, confirm: usize) -> Option<u64> {
    let mut first = None;
    let mut run = 0;
    for (number, source) in seen {
        if *source == expected {
            first.get_or_insert(*number);
            run += 1;
        } else {
            first = None;
            run = 0;
        }
    }
    first.filter(|_| run >= confirm)
}

/// Unmounts the lab bpffs mounts (`<temp dir>/egt<pid>-<hex>-<tag>/bpf`) of runs whose
/// process is gone, and removes their work directories; returns the mount points.
///
/// # Errors
///
/// When the mount table cannot be read.
pub fn reap_stale_bpffs() -> Result<Vec<PathBuf>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let temp = std::env::temp_dir();
    let mut reaped = Vec::new();
    for line in mountinfo.lines() {
        // `<id> <parent> <dev> <root> <mount point> <options> [optional...] - <type> ...`
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        if after.split_whitespace().next() != Some("bpf") {
            continue;
        }
        let Some(point) = before.split_whitespace().nth(4) else {
            continue;
        };
        let point = PathBuf::from(point.replace("\\040", " "));
        let Some(pid) = point
            .strip_prefix(&temp)
            .ok()
            .filter(|rest| rest.file_name().is_some_and(|name| name == "bpf"))
            .and_then(|rest| rest.components().next())
            .and_then(|dir| lab_owner_pid(&dir.as_os_str().to_string_lossy()))
        else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        check_output(Command::new("umount").arg("-l").arg(&point))?;
        // The dead run's work directory, whose bpffs that was.
        if let Some(workdir) = point.parent() {
            let _ = fs::remove_dir_all(workdir);
        }
        reaped.push(point);
    }
    Ok(reaped)
}

/// The pid in a lab work directory's name (`egt<pid>-<4 hex>-<tag>`).
fn lab_owner_pid(name: &str) -> Option<u32> {
    let (pid, rest) = name.strip_prefix("egt")?.split_once('-')?;
    let (random, tag) = rest.split_once('-')?;
    (random.len() == 4
        && random.bytes().all(|b| b.is_ascii_hexdigit())
        && !tag.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit()))
    .then(|| pid.parse().ok())
    .flatten()
}

// ---------------------------------------------------------------------------------------
// Ctrl-C for the lab's programs.
// ---------------------------------------------------------------------------------------

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Makes SIGINT and SIGTERM stop the lab instead of the process, so that its guards still
/// remove everything: both signals are blocked in this thread and every thread it starts
/// later (call this first thing in `main`), and a thread of their own waits for them. On
/// the first one it sets [`interrupted`] and kills every process in this run's namespaces
/// (gateways, agents, servers): whatever the program waits for then fails at once, its
/// error returns from `main`, and the lab drops. Later signals only kill again whatever
/// runs in the lab (SIGKILL ends the program itself).
///
/// Children are unaffected: [`crate::NetNs::command`] starts each with an empty signal mask.
///
/// # Errors
///
/// When the signal mask cannot be set or the thread cannot start.
pub fn handle_interrupts() -> Result<()> {
    // SAFETY: sigset_t is plain data that sigemptyset initialises.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t for these calls, and pthread_sigmask only changes
    // this thread's mask.
    let blocked = unsafe {
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGINT);
        libc::sigaddset(&raw mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut())
    };
    ensure!(blocked == 0, "blocking SIGINT and SIGTERM: error {blocked}");
    thread::Builder::new()
        .name("interrupts".into())
        .spawn(move || {
            loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: `set` and `signal` are valid for the call.
                if unsafe { libc::sigwait(&raw const set, &raw mut signal) } != 0 {
                    continue;
                }
                if INTERRUPTED.swap(true, Ordering::SeqCst) {
                    // Often the same interrupt again (to the process, then its group).
                    eprintln!("egret-lab: still removing the lab ...");
                    kill_lab_processes();
                    continue;
                }
                eprintln!("\negret-lab: interrupted: stopping the lab and removing it ...");
                kill_lab_processes();
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// The `main` of a lab program: [`handle_interrupts`], then `run`. Exits 0 when `run`
/// succeeds, 130 when it failed because of an interrupt, else 1 after printing
/// `<name>: error: <the error>`.
pub fn program_main(name: &str, run: impl FnOnce() -> Result<()>) -> ExitCode {
    if let Err(err) = handle_interrupts() {
        eprintln!("{name}: error: {err:#}");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if interrupted() => ExitCode::from(130),
        Err(err) => {
            eprintln!("{name}: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether SIGINT or SIGTERM came (see [`handle_interrupts`]).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails when [`interrupted`]: call it between the steps of a program.
///
/// # Errors
///
/// When interrupted.
pub fn check_interrupted() -> Result<()> {
    ensure!(!interrupted(), "interrupted");
    Ok(())
}

/// Sleeps `duration`, returning early with an error when interrupted.
///
/// # Errors
///
/// When interrupted.
pub fn sleep_unless_interrupted(duration: Duration) -> Result<()> {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        check_interrupted()?;
        thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
    check_interrupted()
}

/// SIGKILL to every process in a namespace of this run ([`run_prefix`]); they are all the
/// lab's (gateways, agents, servers, probes).
pub fn kill_lab_processes() {
    let Ok(listing) = check_output(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    let prefix = format!("{}-", run_prefix());
    for name in listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
    {
        let Ok(pids) = check_output(Command::new("ip").args(["netns", "pids", name])) else {
            continue;
        };
        for pid in pids
            .split_whitespace()
            .filter_map(|pid| pid.parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill has no memory preconditions; the process is in one of this run's
            // namespaces, so it is one of the lab's.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AgentConfig {
        AgentConfig::new(
            Node::Node1,
            PathBuf::from("/tmp/egt1-abcd-x/bpf/node1"),
            PathBuf::from("/tmp/egt1-abcd-x/node1/state"),
        )
    }

    #[test]
    fn agent_config_has_every_key_of_the_contract() {
        let text = config().render();
        for line in [
            "[agent]",
            "node_name = \"node1\"",
            "mode = \"static\"",
            "interface = \"eth0\"",
            "pod_interfaces = [\"veth-*\"]",
            "pin_path = \"/tmp/egt1-abcd-x/bpf/node1\"",
            "state_dir = \"/tmp/egt1-abcd-x/node1/state\"",
            "[tunnel]",
            "port = 4800",
            "vni = 1",
            "floating_ips = [\"192.168.50.100\", \"192.168.50.101\"]",
            "[masquerade]",
            "non_masquerade_cidrs = [\"10.0.0.0/8\", \"172.16.0.0/12\"]",
            "masquerade_link_local = false",
            "[[policy]]",
            "name = \"alice\"",
            "sources = [\"10.10.1.5/32\", \"10.10.2.5/32\"]",
            "destination_cidrs = [\"198.51.100.0/24\"]",
            "excluded_cidrs = [\"198.51.100.128/25\"]",
            "egress_source_ip = \"192.168.50.100\"",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
    }

    #[test]
    fn policies_are_rendered_in_order_and_judged_by_egress_ip() {
        let mut config = config();
        config.policies.push(
            Policy::new("bob", SECOND_EGRESS_IP)
                .select(Pod::A2)
                .to("198.51.100.0/24"),
        );
        config
            .policies
            .push(Policy::new("mallory", UNKNOWN_EGRESS_IP).source("10.10.1.0/24"));
        let text = config.render();
        let alice = text.find("name = \"alice\"").expect("alice");
        let bob = text.find("name = \"bob\"").expect("bob");
        assert!(alice < bob);
        assert!(text.contains("excluded_cidrs = []"), "{text}");
        assert_eq!(text.matches("[[policy]]").count(), 3);
        let states: Vec<&str> = config
            .policies
            .iter()
            .map(|p| config.expected_state(p))
            .collect();
        assert_eq!(states, ["programmed", "programmed", "rejected"]);
    }

    #[test]
    fn scale_configs_share_the_sources_and_keep_the_pod_first() {
        let base = config();
        let config = scale_config(&base, 1000, 10_000, Pod::A1);
        assert_eq!(config.policies.len(), 1000);
        assert_eq!(config.floating_ips.len(), 1000);
        let sources: std::collections::BTreeSet<&String> =
            config.policies.iter().flat_map(|p| &p.sources).collect();
        assert_eq!(sources.len(), 10_000);
        assert_eq!(config.policies[0].sources[0], "10.10.1.5/32");
        assert!(config.policies.iter().all(|p| p.sources.len() == 10));
        let egress: std::collections::BTreeSet<Ipv4Addr> =
            config.policies.iter().map(|p| p.egress_source_ip).collect();
        assert_eq!(egress.len(), 1000);
        assert!(
            config
                .policies
                .iter()
                .all(|p| config.expected_state(p) == "programmed")
        );
        assert_eq!(config.policies[999].destination_cidrs[0], "100.67.231.0/24");
        assert_eq!(config.floating_ips[999], Ipv4Addr::new(192, 168, 56, 207));
        assert_eq!(config.pin_path, base.pin_path);
    }

    #[test]
    fn gateway_configs_prefer_each_gateway_for_one_address() {
        let gw1 = gateway_config(Member::Gw1, Path::new("/run/lab"));
        assert!(
            gw1.contains("address = \"192.168.50.100\"\nvrid = 10\npriority = 200"),
            "{gw1}"
        );
        assert!(
            gw1.contains("address = \"192.168.50.101\"\nvrid = 11\npriority = 100"),
            "{gw1}"
        );
        assert!(gw1.contains("listen = \"192.168.50.11:4801\""), "{gw1}");
        assert!(gw1.contains("peers = [\"192.168.50.12:4801\"]"), "{gw1}");
        let gw2 = gateway_config(Member::Gw2, Path::new("/run/lab"));
        assert!(
            gw2.contains("address = \"192.168.50.100\"\nvrid = 10\npriority = 100"),
            "{gw2}"
        );
        assert!(
            gw2.contains("address = \"192.168.50.101\"\nvrid = 11\npriority = 200"),
            "{gw2}"
        );
        assert!(gw2.contains("name = \"gw2\""), "{gw2}");
    }

    #[test]
    fn gateway_groups_render_changed_floating_ips_and_keys() {
        let mut group = GatewayGroup::lab(Path::new("/run/lab"));
        assert_eq!(
            group.render(Member::Gw1),
            gateway_config(Member::Gw1, Path::new("/run/lab"))
        );
        assert!(!group.render(Member::Gw1).contains("previous_key_file"));
        group.floating_ips.push(FloatingIpEntry {
            address: Ipv4Addr::new(192, 168, 50, 102),
            vrid: 12,
            priorities: [100, 200],
        });
        group.key_file = PathBuf::from("/run/lab/next/sync.key");
        group.previous_key_file = Some(PathBuf::from("/run/lab/sync.key"));
        let gw2 = group.render(Member::Gw2);
        assert!(
            gw2.contains("address = \"192.168.50.102\"\nvrid = 12\npriority = 200"),
            "{gw2}"
        );
        assert!(
            gw2.contains(
                "key_file = \"/run/lab/next/sync.key\"\n\
                 previous_key_file = \"/run/lab/sync.key\"\n\n[api]"
            ),
            "{gw2}"
        );
    }

    #[test]
    fn agent_status_json() {
        let text = r#"{"pid": 42, "last_error": null,
            "policies": [
              {"name": "alice", "state": "programmed", "packets": 10, "bytes": 840},
              {"name": "mallory", "state": "rejected", "reason": "unknown_egress_ip"}],
            "counters": {"classify_selected": 7, "tunnel_out_packets": 9}}"#;
        let status = AgentStatus::parse(text).expect("valid");
        assert_eq!(status.pid, Some(42));
        assert_eq!(status.last_error, None);
        let alice = status.policy("alice").expect("alice");
        assert_eq!((alice.packets, alice.bytes), (10, 840));
        assert_eq!(
            status.policy("mallory").expect("mallory").reason.as_deref(),
            Some("unknown_egress_ip")
        );
        assert_eq!(status.counter("tunnel_out_packets").expect("present"), 9);
        assert!(status.counter("drop_unknown_gateway").is_err());
        assert!(status.policy("bob").is_err());

        let mut config = config();
        assert!(!status.matches(&config), "mallory is not in the config");
        config
            .policies
            .push(Policy::new("mallory", UNKNOWN_EGRESS_IP));
        assert!(status.matches(&config));

        let failed = AgentStatus::parse(
            r#"{"policies": [], "counters": {}, "last_reload_error": "agent.toml:3:1: error"}"#,
        )
        .expect("valid");
        assert_eq!(failed.last_error.as_deref(), Some("agent.toml:3:1: error"));
        assert!(AgentStatus::parse(r#"{"counters": {}}"#).is_err());
        assert!(AgentStatus::parse("not json").is_err());
    }

    #[test]
    fn a_switch_counts_from_the_first_of_an_unbroken_run() {
        let old = NODE1_ADDRESS;
        let new = EGRESS_IP;
        let seen: BTreeMap<u64, Ipv4Addr> = [(0, old), (1, old), (2, new), (3, old), (4, new)]
            .into_iter()
            .chain((5..30).map(|n| (n, new)))
            .collect();
        assert_eq!(switched_at(&seen, new, 20), Some(4));
        assert_eq!(switched_at(&seen, new, 30), None);
        assert_eq!(switched_at(&seen, old, 1), None);
    }

    #[test]
    fn work_directories_name_their_owner() {
        assert_eq!(lab_owner_pid("egt4242-0a1f-demo"), Some(4242));
        assert_eq!(lab_owner_pid("egt4242-0a1f-"), None);
        assert_eq!(lab_owner_pid("egt42a2-0a1f-x"), None);
        assert_eq!(lab_owner_pid("other"), None);
    }
}
