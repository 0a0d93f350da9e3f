//! The `gateway.toml` schema, its parsing and its validation.
//!
//! Loading is two steps, both pure given the text and a [`HostFacts`] snapshot
//! ([`Config::from_str`]), on the machinery the agent shares ([`egret_config`]):
//! - `raw`: TOML syntax, section and key names (unknown keys are refused) and TOML types;
//!   each section on its own, and a refused key is set aside so the rest of its section is
//!   still checked;
//! - `validate`: every value's rules (ranges, addresses, durations) and the rules between
//!   values (VRIDs unique, floating IPs inside the interface's subnet, the tunnel port
//!   outside the NAT port range), reporting all errors found with their key and line; one
//!   file per section.
//!
//! A [`Config`] only exists once the whole file is valid: every field holds its effective
//! value, defaults filled in. [`Config::to_toml`] prints it back as TOML that parses to the
//! same `Config`.

mod effective;
mod interfaces;
mod raw;
mod validate;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use smoltcp::wire::Ipv4Cidr;

pub use egret_config::{ConfigError, Diagnostic, Exit, Severity};
pub use interfaces::{HostFacts, KeyFile};

use crate::nat::{NatParams, Timeouts};

/// Where the packages install the config.
pub const DEFAULT_PATH: &str = "/etc/egret/gateway.toml";

/// A valid config and the warnings it deserves (for example a timeout below an RFC
/// minimum).
pub type Checked = egret_config::Checked<Config>;

/// A validated `gateway.toml` with every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub gateway: Gateway,
    pub tunnel: Tunnel,
    pub election: Election,
    /// The `[[floating_ip]]` tables, in file order; at least one.
    pub floating_ips: Vec<FloatingIp>,
    pub nat: Nat,
    /// `None`: no `[sync]` table, so no state sync.
    pub sync: Option<StateSync>,
    pub api: Api,
    /// `None`: no `[kubernetes]` table, so nothing is reported into a cluster.
    pub kubernetes: Option<Kubernetes>,
}

/// `[gateway]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    /// Defaults to the host name.
    pub name: String,
    /// The L2 interface shared with the nodes, holding the floating IPs' subnet.
    pub interface: String,
    /// `None`: the kernel's default route via `interface`, resolved at run time.
    pub next_hop: Option<Ipv4Addr>,
    /// Whether established flows are forwarded by the kernel fast path (a TC program the
    /// gateway loads and fills); `false` keeps every packet in user space.
    pub fast_path: bool,
}

/// `[tunnel]`: the VXLAN tunnel from the node agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// VXLAN UDP port on the floating IPs.
    pub port: u16,
    /// 24-bit VXLAN network identifier.
    pub vni: u32,
    /// Outer source networks allowed to use the gateway; never empty.
    pub allowed_sources: Vec<Ipv4Cidr>,
}

/// `[election]`: VRRPv3 (RFC 5798) defaults for every floating IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    pub priority: Priority,
    /// A multiple of 10 ms in 10 ms..=40.95 s, as VRRPv3 carries it in centiseconds.
    pub advert_interval: Duration,
    pub preempt: bool,
    /// Unicast advert destinations; empty means multicast to 224.0.0.18.
    pub peers: Vec<Ipv4Addr>,
    /// Gratuitous ARPs a new master sends, `garp_interval` apart, at once and then again
    /// every `garp_refresh` (`None`: only at takeover).
    pub garp_count: u32,
    pub garp_interval: Duration,
    pub garp_refresh: Option<Duration>,
}

impl Election {
    /// `advert_interval` in centiseconds, as the VRRPv3 header's 12-bit field carries it.
    pub fn advert_interval_centis(&self) -> u16 {
        // Validation keeps it within 1..=4095.
        u16::try_from(self.advert_interval.as_millis() / 10).unwrap_or(u16::MAX)
    }
}

/// A VRRP priority for this gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// 1..=254 (255 is the address owner's, which a gateway never is; 0 means "leaving").
    Fixed(u8),
    /// Spread the floating IPs evenly across the gateways.
    Auto,
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Priority::Fixed(p) => write!(f, "{p}"),
            Priority::Auto => f.write_str("auto"),
        }
    }
}

/// One `[[floating_ip]]`: an egress IP and its VRRP instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIp {
    pub address: Ipv4Addr,
    /// VRRP virtual router id, unique per floating IP.
    pub vrid: u8,
    /// Per-address override of `[election].priority`.
    pub priority: Option<Priority>,
}

impl FloatingIp {
    /// This address's priority: its override, else `[election].priority`.
    pub fn effective_priority(&self, election: &Election) -> Priority {
        self.priority.unwrap_or(election.priority)
    }
}

/// `[nat]`. Field names follow the keys; see [`Config::nat_params`] for the NAT core's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nat {
    pub port_range: RangeInclusive<u16>,
    pub max_flows: u32,
    pub max_flows_per_pod: u32,
    pub tcp_established_timeout: Duration,
    pub tcp_transitory_timeout: Duration,
    pub tcp_time_wait_timeout: Duration,
    pub tcp_closed_timeout: Duration,
    pub udp_timeout: Duration,
    pub icmp_timeout: Duration,
}

impl Default for Nat {
    /// The NAT core's own defaults, so the two can never disagree.
    fn default() -> Self {
        let NatParams {
            port_range,
            max_flows,
            max_flows_per_pod,
            timeouts: t,
        } = NatParams::default();
        let std = |d: smoltcp::time::Duration| Duration::from_micros(d.total_micros());
        Nat {
            port_range,
            max_flows,
            max_flows_per_pod,
            tcp_established_timeout: std(t.tcp_established),
            tcp_transitory_timeout: std(t.tcp_transitory),
            tcp_time_wait_timeout: std(t.tcp_time_wait),
            tcp_closed_timeout: std(t.tcp_closed),
            udp_timeout: std(t.udp),
            icmp_timeout: std(t.icmp),
        }
    }
}

/// `[sync]`: flow state streamed to the peer gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSync {
    pub listen: SocketAddr,
    /// Never empty.
    pub peers: Vec<SocketAddr>,
    /// `key_file` and its contents (checked: long enough, not readable by others).
    pub key: Option<(PathBuf, Secret)>,
    /// `previous_key_file` and its contents; only with a `key_file`.
    pub previous_key: Option<(PathBuf, Secret)>,
}

/// The contents of a key file. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// `[api]`: metrics and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    pub listen: SocketAddr,
}

/// `[kubernetes]`: report gateway status into a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    /// `None`: `$KUBECONFIG` (a list of files, merged as kubectl does), read at start.
    pub kubeconfig: Option<PathBuf>,
    /// The `EgressGateway` object whose status this gateway reports into.
    pub gateway: String,
}

/// Defaults of the keys that have one.
pub mod defaults {
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::time::Duration;

    use super::Priority;

    /// The tunnel contract's, which collides with no common CNI overlay.
    pub const TUNNEL_PORT: u16 = egret_config::tunnel::DEFAULT_PORT;
    /// The tunnel contract's.
    pub const TUNNEL_VNI: u32 = egret_config::tunnel::DEFAULT_VNI;
    pub const PRIORITY: Priority = Priority::Fixed(100);
    /// VRRP's customary one second.
    pub const ADVERT_INTERVAL: Duration = Duration::from_secs(1);
    pub const PREEMPT: bool = true;
    pub const GARP_COUNT: u32 = 3;
    pub const GARP_INTERVAL: Duration = Duration::from_secs(1);
    /// Well inside the usual ARP cache and switch table ageing (minutes).
    pub const GARP_REFRESH: Duration = Duration::from_secs(60);
    /// The EgressGateway object a cluster usually has.
    pub const KUBERNETES_GATEWAY: &str = "default";
    pub const API_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::LOCALHOST,
        egret_config::api::GATEWAY_PORT,
    ));
}

impl Config {
    /// The gateways `priority = "auto"` spreads the floating IPs over, this one included,
    /// and this one's identity among them: with unicast adverts the `[election].peers` and
    /// `primary` (the interface's address), else the `[sync].peers`' addresses and this
    /// gateway's `[sync].listen` address (`primary` if that is unspecified). Every
    /// gateway must list the others the same way.
    pub fn auto_members(&self, primary: Ipv4Addr) -> (Ipv4Addr, Vec<Ipv4Addr>) {
        if !self.election.peers.is_empty() {
            let mut members = self.election.peers.clone();
            members.push(primary);
            return (primary, members);
        }
        let Some(sync) = &self.sync else {
            return (primary, vec![primary]);
        };
        let me = match sync.listen.ip() {
            std::net::IpAddr::V4(ip) if !ip.is_unspecified() => ip,
            _ => primary,
        };
        let mut members: Vec<Ipv4Addr> = sync
            .peers
            .iter()
            .filter_map(|p| match p.ip() {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        members.push(me);
        (me, members)
    }

    /// Parses and validates `text` (the contents of a `gateway.toml`) against `host`. Pure:
    /// the same text and facts give the same result, so a reload can check a new file
    /// before it replaces anything.
    pub fn from_str(text: &str, host: &HostFacts) -> Result<Checked, ConfigError> {
        validate::check(text, host)
    }

    /// Reads `path` and validates it against `host` ([`Config::from_str`]).
    pub fn load(path: &Path, host: &HostFacts) -> Result<Checked, ConfigError> {
        Config::from_str(&egret_config::error::read(path)?, host)
    }

    /// The effective config as TOML, defaults filled in, with comments where a value is
    /// decided at run time. Parsing it again gives the same `Config`.
    pub fn to_toml(&self) -> String {
        effective::render(self)
    }

    /// `[nat]` in the NAT core's terms.
    pub fn nat_params(&self) -> NatParams {
        let nat = &self.nat;
        NatParams {
            port_range: nat.port_range.clone(),
            max_flows: nat.max_flows,
            max_flows_per_pod: nat.max_flows_per_pod,
            timeouts: Timeouts {
                tcp_established: smoltcp_duration(nat.tcp_established_timeout),
                tcp_transitory: smoltcp_duration(nat.tcp_transitory_timeout),
                tcp_time_wait: smoltcp_duration(nat.tcp_time_wait_timeout),
                tcp_closed: smoltcp_duration(nat.tcp_closed_timeout),
                udp: smoltcp_duration(nat.udp_timeout),
                icmp: smoltcp_duration(nat.icmp_timeout),
            },
        }
    }
}

fn smoltcp_duration(duration: Duration) -> smoltcp::time::Duration {
    // Validation caps timeouts at 30 days, far inside u64 microseconds.
    smoltcp::time::Duration::from_micros(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX))
}

/// Fixtures shared by the config tests: a fake host and small documents.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn cidr(text: &str) -> Ipv4Cidr {
        let (address, len) = text.split_once('/').expect("a/len");
        Ipv4Cidr::new(
            address.parse().expect("IPv4 address"),
            len.parse().expect("prefix length"),
        )
    }

    /// `eth1` on 192.168.1.0/24, `eth2` without IPv4, and loopback.
    /// Key files: `sync.key` (0600, 32 bytes), `old.key` (0400, 40 bytes), `short.key`
    /// (0600, 31 bytes), `world.key` (0644), `group.key` (0640).
    pub(crate) fn host() -> HostFacts {
        HostFacts::new("gw-test")
            .with_interface("eth1", &[cidr("192.168.1.10/24")])
            .with_interface("eth2", &[])
            .with_interface("lo", &[cidr("127.0.0.1/8")])
            .with_key_file("/etc/egret/sync.key", 0o600, &[1; 32])
            .with_key_file("/etc/egret/old.key", 0o400, &[2; 40])
            .with_key_file("/etc/egret/short.key", 0o600, &[3; 31])
            .with_key_file("/etc/egret/world.key", 0o644, &[4; 32])
            .with_key_file("/etc/egret/group.key", 0o640, &[5; 32])
            .with_key_file("/etc/egret/kube config", 0o600, KUBECONFIG.as_bytes())
            .with_key_file("/etc/egret/kubeconfig", 0o600, KUBECONFIG.as_bytes())
            .with_key_file("/etc/egret/garbage.kubeconfig", 0o600, b"clusters: 7\n")
            .with_key_file(
                "/etc/egret/nowhere.kubeconfig",
                0o600,
                KUBECONFIG
                    .replace("current-context: gw", "current-context: other")
                    .as_bytes(),
            )
            .with_key_file(
                "/etc/egret/serverless.kubeconfig",
                0o600,
                KUBECONFIG
                    .replace("    server: https://192.168.1.5:6443\n", "")
                    .as_bytes(),
            )
            .with_kubeconfig_env("/etc/egret/kubeconfig")
    }

    /// A kubeconfig whose current context leads to a cluster.
    pub(crate) const KUBECONFIG: &str = "\
apiVersion: v1
kind: Config
clusters:
- name: lab
  cluster:
    server: https://192.168.1.5:6443
users:
- name: gw
  user:
    token: secret
contexts:
- name: gw
  context:
    cluster: lab
    user: gw
current-context: gw
";

    /// The smallest valid document: only the required keys.
    pub(crate) const MINIMAL: &str = r#"
[gateway]
interface = "eth1"

[tunnel]
allowed_sources = ["192.168.1.0/24"]

[[floating_ip]]
address = "192.168.1.100"
vrid = 10

[[floating_ip]]
address = "192.168.1.101"
vrid = 11
"#;

    /// MINIMAL with `from` replaced by `to` (which must occur).
    pub(crate) fn edit(from: &str, to: &str) -> String {
        assert!(MINIMAL.contains(from), "{from:?} not in MINIMAL");
        MINIMAL.replacen(from, to, 1)
    }

    /// MINIMAL followed by `extra`.
    pub(crate) fn with(extra: &str) -> String {
        format!("{MINIMAL}\n{extra}")
    }

    pub(crate) fn accept(text: &str) -> Checked {
        match Config::from_str(text, &host()) {
            Ok(checked) => checked,
            Err(error) => panic!("refused: {}\n{text}", describe(&error)),
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

    /// Each diagnostic as (key, line, problem), to compare with what a test expects.
    pub(crate) fn found(diagnostics: &[Diagnostic]) -> Vec<(&str, usize, &str)> {
        diagnostics
            .iter()
            .map(|d| (d.key.as_str(), d.line, d.problem.as_str()))
            .collect()
    }

    /// 1-based line of the first occurrence of `needle`.
    pub(crate) fn line_of(text: &str, needle: &str) -> usize {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in the fixture"));
        text[..at].matches('\n').count() + 1
    }

    /// Asserts that `text` is refused with an error on `key` at the line of `needle`, and
    /// returns that error.
    pub(crate) fn assert_error(text: &str, key: &str, needle: &str) -> Diagnostic {
        let diagnostics = refuse(text);
        let line = line_of(text, needle);
        diagnostics
            .iter()
            .find(|d| d.severity == Severity::Error && d.key == key && d.line == line)
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "no error on {key} at line {line}; got:\n{}",
                    describe(&ConfigError::Invalid(diagnostics))
                )
            })
    }

    pub(crate) fn describe(error: &ConfigError) -> String {
        match error {
            ConfigError::Invalid(diagnostics) => diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    const EXAMPLE: &str = include_str!("../../../packaging/gateway.toml");

    fn example_host() -> HostFacts {
        HostFacts::new("gw1")
            .with_interface("eth1", &[cidr("192.168.1.10/24")])
            .with_key_file("/etc/egret/sync.key", 0o600, &[7; 32])
            .with_key_file("/etc/egret/sync.key.old", 0o400, &[8; 32])
            .with_key_file("/etc/egret/kubeconfig", 0o600, KUBECONFIG.as_bytes())
    }

    #[test]
    fn missing_keys_take_their_defaults() {
        let checked = accept(MINIMAL);
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let config = checked.config;
        assert_eq!(
            config.gateway,
            Gateway {
                name: "gw-test".to_owned(),
                interface: "eth1".to_owned(),
                next_hop: None,
                fast_path: true,
            }
        );
        assert_eq!(
            config.tunnel,
            Tunnel {
                port: 4800,
                vni: 1,
                allowed_sources: vec![cidr("192.168.1.0/24")],
            }
        );
        assert_eq!(
            config.election,
            Election {
                priority: Priority::Fixed(100),
                advert_interval: Duration::from_secs(1),
                preempt: true,
                peers: Vec::new(),
                garp_count: 3,
                garp_interval: Duration::from_secs(1),
                garp_refresh: Some(Duration::from_secs(60)),
            }
        );
        assert_eq!(config.election.advert_interval_centis(), 100);
        assert_eq!(
            config.floating_ips,
            vec![
                FloatingIp {
                    address: Ipv4Addr::new(192, 168, 1, 100),
                    vrid: 10,
                    priority: None,
                },
                FloatingIp {
                    address: Ipv4Addr::new(192, 168, 1, 101),
                    vrid: 11,
                    priority: None,
                },
            ]
        );
        assert_eq!(config.nat, Nat::default());
        assert_eq!(config.sync, None);
        assert_eq!(config.api.listen, "127.0.0.1:9477".parse().expect("addr"));
        assert_eq!(config.kubernetes, None);
    }

    #[test]
    fn default_nat_section_gives_the_nat_cores_defaults() {
        assert_eq!(accept(MINIMAL).config.nat_params(), NatParams::default());
    }

    #[test]
    fn nat_section_maps_into_nat_params() {
        let text = format!(
            "{MINIMAL}\n[nat]\nport_range = \"20000-29999\"\nmax_flows = 5000\n\
             max_flows_per_pod = 1000\n\
             tcp_established_timeout = \"3h\"\ntcp_transitory_timeout = \"5m\"\n\
             tcp_time_wait_timeout = \"4m30s\"\ntcp_closed_timeout = \"1.5s\"\n\
             udp_timeout = \"10m\"\nicmp_timeout = \"90s\"\n"
        );
        let checked = accept(&text);
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let params = checked.config.nat_params();
        let secs = smoltcp::time::Duration::from_secs;
        assert_eq!(
            params,
            NatParams {
                port_range: 20000..=29999,
                max_flows: 5000,
                max_flows_per_pod: 1000,
                timeouts: Timeouts {
                    tcp_established: secs(3 * 3600),
                    tcp_transitory: secs(5 * 60),
                    tcp_time_wait: secs(4 * 60 + 30),
                    tcp_closed: smoltcp::time::Duration::from_millis(1500),
                    udp: secs(10 * 60),
                    icmp: secs(90),
                },
            }
        );
    }

    #[test]
    fn the_packaged_example_is_valid_and_matches_the_defaults() {
        let checked = match Config::from_str(EXAMPLE, &example_host()) {
            Ok(checked) => checked,
            Err(error) => panic!("packaging/gateway.toml refused:\n{}", describe(&error)),
        };
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let config = checked.config;
        assert_eq!(config.gateway.name, "gw1", "name defaults to the host name");
        assert_eq!(config.gateway.next_hop, None);
        assert_eq!(config.tunnel.port, defaults::TUNNEL_PORT);
        assert_eq!(config.tunnel.vni, defaults::TUNNEL_VNI);
        assert_eq!(config.election.priority, defaults::PRIORITY);
        assert_eq!(config.election.advert_interval, defaults::ADVERT_INTERVAL);
        assert_eq!(config.election.preempt, defaults::PREEMPT);
        assert!(config.election.peers.is_empty());
        assert_eq!(config.nat, Nat::default());
        assert_eq!(config.api.listen, defaults::API_LISTEN);
        assert_eq!(config.sync, None);
        assert_eq!(config.kubernetes, None);
    }

    #[test]
    fn the_packaged_example_mentions_every_key() {
        for section in [
            "[gateway]",
            "[tunnel]",
            "[election]",
            "[[floating_ip]]",
            "[nat]",
            "[sync]",
            "[api]",
            "[kubernetes]",
        ] {
            assert!(EXAMPLE.contains(section), "{section} missing");
        }
        for key in [
            "name",
            "interface",
            "next_hop",
            "port",
            "vni",
            "allowed_sources",
            "priority",
            "advert_interval",
            "preempt",
            "peers",
            "address",
            "vrid",
            "port_range",
            "max_flows",
            "max_flows_per_pod",
            "tcp_established_timeout",
            "tcp_transitory_timeout",
            "tcp_time_wait_timeout",
            "tcp_closed_timeout",
            "udp_timeout",
            "icmp_timeout",
            "listen",
            "key_file",
            "previous_key_file",
            "kubeconfig",
            "gateway",
        ] {
            let written = EXAMPLE
                .lines()
                .map(|l| l.trim_start_matches(['#', ' ']))
                .any(|l| l.starts_with(&format!("{key} = ")));
            assert!(written, "{key} missing from packaging/gateway.toml");
        }
    }

    #[test]
    fn the_packaged_example_with_its_commented_sections_enabled_is_valid() {
        // The commented [sync], [kubernetes], next_hop and second floating IP are examples
        // an operator uncomments; they must be valid too.
        let enabled = EXAMPLE
            .lines()
            .map(|line| {
                for key in [
                    "# name = ",
                    "# next_hop = ",
                    "# peers = [\"",
                    "# priority = ",
                    "# [[floating_ip]]",
                    "# address = ",
                    "# vrid = ",
                    "# [sync]",
                    "# listen = ",
                    "# key_file = ",
                    "# previous_key_file = ",
                    "# [kubernetes]",
                    "# kubeconfig = ",
                    "# gateway = ",
                ] {
                    if line.starts_with(key) {
                        return &line[2..];
                    }
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n");
        let enabled = enabled.replace("peers = []\n", "");
        let checked = match Config::from_str(&enabled, &example_host()) {
            Ok(checked) => checked,
            Err(error) => panic!("{}\n{enabled}", describe(&error)),
        };
        let config = checked.config;
        assert_eq!(config.floating_ips.len(), 2);
        assert_eq!(config.gateway.next_hop, Some(Ipv4Addr::new(192, 168, 1, 1)));
        assert_eq!(config.election.peers.len(), 2);
        let sync = config.sync.expect("[sync]");
        assert_eq!(sync.key.map(|k| k.1), Some(Secret(vec![7; 32])));
        assert_eq!(sync.previous_key.map(|k| k.1), Some(Secret(vec![8; 32])));
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let kubernetes = config.kubernetes.expect("[kubernetes]");
        assert!(kubernetes.kubeconfig.is_some());
        assert_eq!(kubernetes.gateway, "default");
    }

    #[test]
    fn the_tunnel_contract_is_the_headers_the_gateway_writes() {
        use egret_config::tunnel;
        use smoltcp::wire::{ETHERNET_HEADER_LEN, IPV4_HEADER_LEN, UDP_HEADER_LEN};
        // Outer IPv4, UDP and VXLAN in front of the inner Ethernet frame, against the MTU.
        let headers =
            IPV4_HEADER_LEN + UDP_HEADER_LEN + crate::wire::vxlan::HEADER_LEN + ETHERNET_HEADER_LEN;
        assert_eq!(usize::from(tunnel::OVERHEAD), headers);
        assert_eq!(
            (defaults::TUNNEL_PORT, defaults::TUNNEL_VNI),
            (tunnel::DEFAULT_PORT, tunnel::DEFAULT_VNI)
        );
    }

    #[test]
    fn an_unreadable_file_is_a_read_error() {
        let error = Config::load(Path::new("/nonexistent/egret/gateway.toml"), &host())
            .expect_err("no such file");
        assert!(matches!(error, ConfigError::Read { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("/nonexistent/egret/gateway.toml")
        );
    }
}
