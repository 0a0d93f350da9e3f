//! From the document as written ([`super::raw`]) to a [`Config`]: value rules, defaults, and
//! the rules between values.
//!
//! Every check runs even after an earlier one failed, so one `check` run lists every
//! problem; a [`Config`] is built only when none is an error. Checks that compare two values
//! run only when both are valid, so one mistake is not reported twice.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use smoltcp::wire::Ipv4Cidr;
use toml::Spanned;

use super::raw::{
    self, RawApi, RawConfig, RawElection, RawFloatingIp, RawGateway, RawKubernetes, RawNat,
    RawPriority, RawSync, RawTunnel, Section, allowed,
};
use super::{
    Api, Checked, Config, ConfigError, Election, FloatingIp, Gateway, HostFacts, Kubernetes, Nat,
    Priority, Secret, StateSync, Tunnel, defaults, duration,
};
use crate::sync::seal::MIN_SECRET;
use egret_config::Report;

/// Shortest and longest VRRPv3 advert interval: 1 and 4095 centiseconds (a 12-bit field).
const ADVERT_MIN: Duration = Duration::from_millis(10);
const ADVERT_MAX: Duration = Duration::from_millis(40_950);
const CENTISECOND_NANOS: u128 = 10_000_000;

/// NAT timeouts below this would churn mappings of flows that merely paused.
const TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Far above any useful idle timeout, and far from overflowing the NAT core's clock.
const TIMEOUT_MAX: Duration = Duration::from_secs(30 * 86_400);

/// UDP ports of common CNI overlays. The agent's tunnel shares the node with the CNI, so
/// reusing one of these would hand our replies to the CNI's socket.
const CNI_PORTS: [(u16, &str); 3] = [
    (4789, "the IANA VXLAN port, used by Calico's VXLAN mode"),
    (8472, "the Linux VXLAN port, used by flannel and Cilium"),
    (6081, "the Geneve port, used by Antrea and OVN-Kubernetes"),
];

pub(super) fn check(text: &str, host: &HostFacts) -> Result<Checked, ConfigError> {
    let mut report = Report::new(text);
    let config = raw::parse(text, &mut report).and_then(|raw| {
        Checker {
            report: &mut report,
            host,
            interface: None,
            tunnel_port: None,
            port_range: None,
        }
        .config(&raw)
    });
    report.conclude(
        config,
        "see the commented example in packaging/gateway.toml",
    )
}

struct Checker<'r, 't, 'h> {
    report: &'r mut Report<'t>,
    host: &'h HostFacts,
    /// `[gateway].interface` and its IPv4 networks, once it names an interface that has
    /// some; the floating IPs and the next hop must lie inside.
    interface: Option<(String, Vec<Ipv4Cidr>)>,
    /// `[tunnel].port` and `[nat].port_range` once valid, even if their sections have
    /// other errors, to check that they do not overlap.
    tunnel_port: Option<u16>,
    port_range: Option<RangeInclusive<u16>>,
}

impl Checker<'_, '_, '_> {
    fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        let gateway = self.gateway(&raw.gateway);
        let tunnel = self.tunnel(&raw.tunnel);
        let election = self.election(&raw.election);
        let floating_ips = self.floating_ips(&raw.floating_ips);
        let nat = self.nat(&raw.nat);
        let sync = self.sync(&raw.sync);
        let api = self.api(&raw.api);
        let kubernetes = self.kubernetes(&raw.kubernetes);
        if let (Some(port), Some(range)) = (self.tunnel_port, self.port_range.clone()) {
            self.tunnel_port_outside_nat_range(raw, port, &range);
        }
        if let (Some(e), Some(f), Some(s)) = (&election, &floating_ips, &sync) {
            self.auto_knows_the_gateways(raw, e, f, s.as_ref());
        }
        if let (Some(g), Some(Some(_))) = (&gateway, &kubernetes) {
            self.name_fits_a_field_manager(raw, &g.name);
        }
        Some(Config {
            gateway: gateway?,
            tunnel: tunnel?,
            election: election?,
            floating_ips: floating_ips?,
            nat: nat?,
            sync: sync?,
            api: api?,
            kubernetes: kubernetes?,
        })
    }

    /// The status is applied under the field manager `egret-gateway/<name>`, which the API
    /// server limits to 128 printable characters.
    fn name_fits_a_field_manager(&mut self, raw: &RawConfig, name: &str) {
        let manager = crate::report::field_manager(name);
        let why = if manager.len() > MAX_FIELD_MANAGER {
            format!(
                "{} bytes long: too long for the field manager {manager:?} of [kubernetes]",
                name.len()
            )
        } else if name.chars().any(char::is_control) {
            "holds a control character, which [kubernetes] cannot report".to_owned()
        } else {
            return;
        };
        let span = match &raw.gateway {
            Section::Present(g) => g.get_ref().name.as_ref().map(|n| n.span()),
            _ => None,
        };
        self.report.error(
            "gateway.name",
            span,
            why,
            format!(
                "with [kubernetes], at most {} bytes without control characters",
                MAX_FIELD_MANAGER - crate::report::field_manager("").len()
            ),
        );
    }

    /// `priority = "auto"` ranks the gateways by identity, so it needs the others':
    /// `[election].peers`, else `[sync].peers`.
    fn auto_knows_the_gateways(
        &mut self,
        raw: &RawConfig,
        election: &Election,
        floating_ips: &[FloatingIp],
        sync: Option<&StateSync>,
    ) {
        let auto = floating_ips
            .iter()
            .any(|f| f.effective_priority(election) == Priority::Auto);
        if !auto || !election.peers.is_empty() || sync.is_some() {
            return;
        }
        let span = match &raw.election {
            Section::Present(e) => e.get_ref().priority.as_ref().map(|p| p.span()),
            _ => None,
        };
        self.report.error(
            "election.priority",
            span,
            "\"auto\" ranks the gateways by address, but none of the other gateways is known",
            "list the other gateways in [election].peers or [sync].peers, or a number 1..=254",
        );
    }

    // ---- sections ------------------------------------------------------------------

    fn gateway(&mut self, section: &Section<RawGateway>) -> Option<Gateway> {
        let raw = self.required(section, "gateway")?;
        let g = raw.get_ref();
        let name = match &g.name {
            Some(name) => self.non_empty("gateway.name", name),
            None if self.host.hostname.is_empty() => {
                self.report.error(
                    "gateway.name",
                    Some(raw.span()),
                    "not set, and the host has no name to default to",
                    allowed("gateway.name"),
                );
                None
            }
            None => Some(self.host.hostname.clone()),
        };
        let interface = self.interface(&g.interface);
        let next_hop = match &g.next_hop {
            None => Some(None),
            Some(next_hop) => self.next_hop(next_hop).map(Some),
        };
        Some(Gateway {
            name: name?,
            interface: interface?,
            next_hop: next_hop?,
            fast_path: g.fast_path.unwrap_or(true),
        })
    }

    fn tunnel(&mut self, section: &Section<RawTunnel>) -> Option<Tunnel> {
        let t = self.required(section, "tunnel")?.get_ref();
        let port = match &t.port {
            None => Some(defaults::TUNNEL_PORT),
            Some(port) => {
                let value = self.int::<u16>("tunnel.port", port, 1..=65535);
                if let Some((_, used_by)) = CNI_PORTS.iter().find(|(p, _)| Some(*p) == value) {
                    self.report.warning(
                        "tunnel.port",
                        Some(port.span()),
                        format!(
                            "{} is {used_by}; nodes running that CNI cannot also use it for egret",
                            port.get_ref()
                        ),
                        format!("a port no CNI uses, such as {}", defaults::TUNNEL_PORT),
                    );
                }
                value
            }
        };
        self.tunnel_port = port;
        let vni = match &t.vni {
            None => Some(defaults::TUNNEL_VNI),
            Some(vni) => self.int::<u32>("tunnel.vni", vni, 0..=0xff_ffff),
        };
        let allowed_sources = self.allowed_sources(&t.allowed_sources);
        Some(Tunnel {
            port: port?,
            vni: vni?,
            allowed_sources: allowed_sources?,
        })
    }

    fn election(&mut self, section: &Section<RawElection>) -> Option<Election> {
        let absent = RawElection::default();
        let e = self.optional(section)?.unwrap_or(&absent);
        let priority = match &e.priority {
            None => Some(defaults::PRIORITY),
            Some(priority) => self.priority("election.priority", priority),
        };
        let advert_interval = match &e.advert_interval {
            None => Some(defaults::ADVERT_INTERVAL),
            Some(text) => self.advert_interval(text),
        };
        let peers = match &e.peers {
            None => Some(Vec::new()),
            Some(peers) => self.election_peers(peers),
        };
        let garp_count = match &e.garp_count {
            None => Some(defaults::GARP_COUNT),
            Some(n) => self.int::<u32>("election.garp_count", n, 1..=100),
        };
        let garp_interval = match &e.garp_interval {
            None => Some(defaults::GARP_INTERVAL),
            Some(text) => self.bounded_duration(
                "election.garp_interval",
                text,
                Duration::from_millis(10)..=Duration::from_secs(60),
            ),
        };
        let garp_refresh = match &e.garp_refresh {
            None => Some(Some(defaults::GARP_REFRESH)),
            Some(text) => match self.duration("election.garp_refresh", text) {
                Some(Duration::ZERO) => Some(None),
                Some(_) => self
                    .bounded_duration(
                        "election.garp_refresh",
                        text,
                        Duration::from_secs(1)..=Duration::from_secs(24 * 3600),
                    )
                    .map(Some),
                None => None,
            },
        };
        Some(Election {
            priority: priority?,
            advert_interval: advert_interval?,
            preempt: e.preempt.unwrap_or(defaults::PREEMPT),
            peers: peers?,
            garp_count: garp_count?,
            garp_interval: garp_interval?,
            garp_refresh: garp_refresh?,
        })
    }

    fn floating_ips(
        &mut self,
        section: &Section<Vec<Option<Spanned<RawFloatingIp>>>>,
    ) -> Option<Vec<FloatingIp>> {
        let tables = self.required(section, "floating_ip")?;
        if tables.get_ref().is_empty() {
            self.report.error(
                "floating_ip",
                Some(tables.span()),
                "no floating IP: the gateway would have nothing to serve",
                allowed("floating_ip"),
            );
            return None;
        }
        let mut addresses = Seen::default();
        let mut vrids = Seen::default();
        let parsed: Vec<Option<FloatingIp>> = tables
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, table)| {
                let table = table.as_ref()?.get_ref();
                let address_key = format!("floating_ip[{i}].address");
                let vrid_key = format!("floating_ip[{i}].vrid");
                let address = self.floating_address(&address_key, &table.address);
                let address = address.filter(|a| {
                    self.unique(
                        &mut addresses,
                        *a,
                        &address_key,
                        &table.address,
                        "an address no other [[floating_ip]] has",
                    )
                });
                let vrid = self.int::<u8>(&vrid_key, &table.vrid, 1..=255).filter(|v| {
                    self.unique(
                        &mut vrids,
                        *v,
                        &vrid_key,
                        &table.vrid,
                        "a VRID 1..=255 no other [[floating_ip]] has",
                    )
                });
                let priority = match &table.priority {
                    None => Some(None),
                    Some(p) => self
                        .priority(&format!("floating_ip[{i}].priority"), p)
                        .map(Some),
                };
                Some(FloatingIp {
                    address: address?,
                    vrid: vrid?,
                    priority: priority?,
                })
            })
            .collect();
        parsed.into_iter().collect()
    }

    fn nat(&mut self, section: &Section<RawNat>) -> Option<Nat> {
        let absent = RawNat::default();
        let n = self.optional(section)?.unwrap_or(&absent);
        let default = Nat::default();
        let port_range = match &n.port_range {
            None => Some(default.port_range.clone()),
            Some(range) => self.port_range(range),
        };
        self.port_range.clone_from(&port_range);
        let max_flows = match &n.max_flows {
            None => Some(default.max_flows),
            Some(max) => self.int::<u32>("nat.max_flows", max, 1..=i64::from(u32::MAX)),
        };
        let max_flows_per_pod = match &n.max_flows_per_pod {
            None => Some(default.max_flows_per_pod),
            Some(max) => self.int::<u32>("nat.max_flows_per_pod", max, 1..=i64::from(u32::MAX)),
        };
        if let (Some(total), Some(share)) = (max_flows, max_flows_per_pod) {
            self.share_below_table(n, total, share);
        }
        const RFC5382: &str = "RFC 5382 REQ-5";
        let tcp_established_timeout = self.timeout(
            "nat.tcp_established_timeout",
            n.tcp_established_timeout.as_ref(),
            default.tcp_established_timeout,
            Some((Duration::from_secs(2 * 3600 + 4 * 60), RFC5382)),
        );
        let tcp_transitory_timeout = self.timeout(
            "nat.tcp_transitory_timeout",
            n.tcp_transitory_timeout.as_ref(),
            default.tcp_transitory_timeout,
            Some((Duration::from_secs(4 * 60), RFC5382)),
        );
        // RFC 5382 counts a closing connection, TIME_WAIT included, as transitory.
        let tcp_time_wait_timeout = self.timeout(
            "nat.tcp_time_wait_timeout",
            n.tcp_time_wait_timeout.as_ref(),
            default.tcp_time_wait_timeout,
            Some((Duration::from_secs(4 * 60), RFC5382)),
        );
        let tcp_closed_timeout = self.timeout(
            "nat.tcp_closed_timeout",
            n.tcp_closed_timeout.as_ref(),
            default.tcp_closed_timeout,
            None,
        );
        let udp_timeout = self.timeout(
            "nat.udp_timeout",
            n.udp_timeout.as_ref(),
            default.udp_timeout,
            Some((Duration::from_secs(2 * 60), "RFC 4787 REQ-5")),
        );
        let icmp_timeout = self.timeout(
            "nat.icmp_timeout",
            n.icmp_timeout.as_ref(),
            default.icmp_timeout,
            Some((Duration::from_secs(60), "RFC 5508 REQ-1")),
        );
        Some(Nat {
            port_range: port_range?,
            max_flows: max_flows?,
            max_flows_per_pod: max_flows_per_pod?,
            tcp_established_timeout: tcp_established_timeout?,
            tcp_transitory_timeout: tcp_transitory_timeout?,
            tcp_time_wait_timeout: tcp_time_wait_timeout?,
            tcp_closed_timeout: tcp_closed_timeout?,
            udp_timeout: udp_timeout?,
            icmp_timeout: icmp_timeout?,
        })
    }

    /// A pod's share as large as the table protects nothing: one pod can still fill it. The
    /// warning points at the share when it is written, else at the `max_flows` that made the
    /// default share too large.
    fn share_below_table(&mut self, n: &RawNat, total: u32, share: u32) {
        if share < total {
            return;
        }
        let suggested = (total / 4).max(1);
        let recommended = format!(
            "max_flows_per_pod below max_flows, such as {suggested} (a quarter of the table)"
        );
        match (&n.max_flows_per_pod, &n.max_flows) {
            (Some(written), _) => self.report.warning(
                "nat.max_flows_per_pod",
                Some(written.span()),
                format!(
                    "{share} is not below max_flows ({total}): one pod can still fill the \
                     flow table and keep every other pod from opening flows"
                ),
                recommended,
            ),
            (None, written) => self.report.warning(
                "nat.max_flows",
                written.as_ref().map(Spanned::span),
                format!(
                    "{total} is not above the default max_flows_per_pod ({share}): one pod \
                     can fill the flow table and keep every other pod from opening flows"
                ),
                format!("also set {recommended}"),
            ),
        }
    }

    /// `Some(None)`: no `[sync]`, so no state sync; `None`: invalid.
    fn sync(&mut self, section: &Section<RawSync>) -> Option<Option<StateSync>> {
        let Some(s) = self.optional(section)? else {
            return Some(None);
        };
        let listen = self.socket_addr("sync.listen", &s.listen);
        let peers = if s.peers.get_ref().is_empty() {
            self.report.error(
                "sync.peers",
                Some(s.peers.span()),
                "empty: state would be sent nowhere",
                "at least one peer gateway; remove [sync] to run without state sync",
            );
            None
        } else {
            let mut seen = Seen::default();
            let parsed: Vec<Option<SocketAddr>> = s
                .peers
                .get_ref()
                .iter()
                .enumerate()
                .map(|(i, peer)| {
                    let key = format!("sync.peers[{i}]");
                    let addr = self.socket_addr(&key, peer)?;
                    if Some(addr) == listen {
                        self.report.error(
                            &key,
                            Some(peer.span()),
                            format!("{addr} is this gateway's own sync.listen"),
                            "the address of another gateway",
                        );
                        return None;
                    }
                    self.unique(&mut seen, addr, &key, peer, "each peer once")
                        .then_some(addr)
                })
                .collect();
            parsed.into_iter().collect()
        };
        let key = match &s.key_file {
            Some(path) => self.key_file("sync.key_file", path).map(Some),
            None => {
                self.report.warning(
                    "sync",
                    Some(section_span(section)),
                    "no key_file: the flow sync is not authenticated, and any host on the segment can install, change or remove flows",
                    "key_file = \"/etc/egret/sync.key\" with the same key on every gateway",
                );
                Some(None)
            }
        };
        let previous_key = match (&s.previous_key_file, &s.key_file) {
            (Some(path), Some(_)) => self.key_file("sync.previous_key_file", path).map(Some),
            (Some(path), None) => {
                self.report.error(
                    "sync.previous_key_file",
                    Some(path.span()),
                    "a previous key without a current one",
                    "key_file as well, or no previous_key_file",
                );
                None
            }
            (None, _) => Some(None),
        };
        Some(Some(StateSync {
            listen: listen?,
            peers: peers?,
            key: key?,
            previous_key: previous_key?,
        }))
    }

    /// A key file: readable, a regular file, at least [`MIN_SECRET`] bytes, no access for
    /// others (an error) or the group (a warning).
    fn key_file(&mut self, key: &str, raw: &Spanned<String>) -> Option<(PathBuf, Secret)> {
        let path = PathBuf::from(self.non_empty(key, raw)?);
        if !path.is_absolute() {
            self.report
                .error(key, Some(raw.span()), "not an absolute path", allowed(key));
            return None;
        }
        let file = match self.host.key_file(&path) {
            Ok(file) => file,
            Err(why) => {
                self.report.error(key, Some(raw.span()), why, allowed(key));
                return None;
            }
        };
        if file.mode & 0o007 != 0 {
            self.report.error(
                key,
                Some(raw.span()),
                format!("others may access it (mode {:04o})", file.mode),
                format!("chmod 600 {}", path.display()),
            );
            return None;
        }
        if file.mode & 0o070 != 0 {
            self.report.warning(
                key,
                Some(raw.span()),
                format!(
                    "its group may access it (mode {:04o}): every member can forge flows",
                    file.mode
                ),
                format!(
                    "chmod 600 {}, or a group holding only the gateway's user",
                    path.display()
                ),
            );
        }
        if file.bytes.len() < MIN_SECRET {
            self.report.error(
                key,
                Some(raw.span()),
                format!("holds {} bytes", file.bytes.len()),
                format!("at least {MIN_SECRET} random bytes"),
            );
            return None;
        }
        Some((path, Secret(file.bytes)))
    }

    fn api(&mut self, section: &Section<RawApi>) -> Option<Api> {
        let absent = RawApi::default();
        let a = self.optional(section)?.unwrap_or(&absent);
        let listen = match &a.listen {
            None => Some(defaults::API_LISTEN),
            Some(listen) => self.socket_addr("api.listen", listen),
        };
        Some(Api { listen: listen? })
    }

    /// `Some(None)`: no `[kubernetes]`; `None`: invalid.
    fn kubernetes(&mut self, section: &Section<RawKubernetes>) -> Option<Option<Kubernetes>> {
        let Section::Present(table) = section else {
            return self.optional(section).map(|_| None);
        };
        let k = table.get_ref();
        let kubeconfig = match &k.kubeconfig {
            None => self.kubeconfig_env(table.span()).map(|()| None),
            Some(path) => self.kubeconfig(path).map(Some),
        };
        let gateway = match &k.gateway {
            None => Some(defaults::KUBERNETES_GATEWAY.to_owned()),
            Some(name) => self.object_name("kubernetes.gateway", name),
        };
        Some(Some(Kubernetes {
            kubeconfig: kubeconfig?,
            gateway: gateway?,
        }))
    }

    /// `[kubernetes].kubeconfig`: an absolute path to a kubeconfig that leads to a cluster.
    fn kubeconfig(&mut self, raw: &Spanned<String>) -> Option<PathBuf> {
        const KEY: &str = "kubernetes.kubeconfig";
        let path = PathBuf::from(self.non_empty(KEY, raw)?);
        if !path.is_absolute() {
            self.report
                .error(KEY, Some(raw.span()), "not an absolute path", allowed(KEY));
            return None;
        }
        match kubeconfig_problem(self.host, &[path.as_path()]) {
            None => Some(path),
            Some(why) => {
                self.report.error(KEY, Some(raw.span()), why, allowed(KEY));
                None
            }
        }
    }

    /// No `kubeconfig` key: `$KUBECONFIG` must name kubeconfig files that lead to a cluster.
    fn kubeconfig_env(&mut self, table: std::ops::Range<usize>) -> Option<()> {
        const KEY: &str = "kubernetes.kubeconfig";
        let paths: Vec<&Path> = self
            .host
            .kubeconfig_env
            .as_deref()
            .unwrap_or("")
            .split(':')
            .filter(|p| !p.is_empty())
            .map(Path::new)
            .collect();
        let why = if paths.is_empty() {
            Some("not set, and $KUBECONFIG is not set either".to_owned())
        } else {
            kubeconfig_problem(self.host, &paths).map(|why| format!("from $KUBECONFIG: {why}"))
        };
        match why {
            None => Some(()),
            Some(why) => {
                self.report.error(KEY, Some(table), why, allowed(KEY));
                None
            }
        }
    }

    /// A Kubernetes object name (RFC 1123 subdomain).
    fn object_name(&mut self, key: &str, raw: &Spanned<String>) -> Option<String> {
        let name = raw.get_ref();
        if is_object_name(name) {
            return Some(name.clone());
        }
        let why = if name.is_empty() {
            "empty".to_owned()
        } else {
            format!("{name:?} is not a valid object name")
        };
        self.report.error(key, Some(raw.span()), why, allowed(key));
        None
    }

    /// The floating IPs' VXLAN port and their NAT ports share the same addresses.
    fn tunnel_port_outside_nat_range(
        &mut self,
        raw: &RawConfig,
        port: u16,
        range: &RangeInclusive<u16>,
    ) {
        if !range.contains(&port) {
            return;
        }
        let (lo, hi) = (range.start(), range.end());
        let port_span = match &raw.tunnel {
            Section::Present(t) => t.get_ref().port.as_ref().map(Spanned::span),
            _ => None,
        };
        let range_span = match &raw.nat {
            Section::Present(n) => n.get_ref().port_range.as_ref().map(Spanned::span),
            _ => None,
        };
        match (port_span, range_span) {
            // Only the range was written: it is the range that moved onto the port.
            (None, Some(range_span)) => self.report.error(
                "nat.port_range",
                Some(range_span),
                format!("{lo}-{hi} contains [tunnel].port {port} (the default)"),
                format!("a range without {port}, such as \"16384-65535\""),
            ),
            (port_span, range_span) => {
                let range_place = match range_span {
                    Some(span) => format!("line {}", self.report.line_of(Some(span))),
                    None => "the default".to_owned(),
                };
                self.report.error(
                    "tunnel.port",
                    port_span,
                    format!("{port} is inside [nat].port_range {lo}-{hi} ({range_place})"),
                    format!("a port outside {lo}-{hi}"),
                )
            }
        }
    }

    // ---- values --------------------------------------------------------------------

    fn interface(&mut self, raw: &Spanned<String>) -> Option<String> {
        let name = raw.get_ref();
        let span = Some(raw.span());
        match self.host.interface(name) {
            None => {
                let known: Vec<&str> = self.host.interfaces.keys().map(String::as_str).collect();
                self.report.error(
                    "gateway.interface",
                    span,
                    format!("no interface {name:?} on this host"),
                    if known.is_empty() {
                        "an existing interface".to_owned()
                    } else {
                        format!("an existing interface: {}", known.join(", "))
                    },
                );
                None
            }
            Some([]) => {
                self.report.error(
                    "gateway.interface",
                    span,
                    format!("interface {name:?} has no IPv4 address"),
                    "an interface with an IPv4 address on the floating IPs' subnet",
                );
                None
            }
            Some(networks) => {
                self.interface = Some((name.clone(), networks.to_vec()));
                Some(name.clone())
            }
        }
    }

    fn next_hop(&mut self, raw: &Spanned<String>) -> Option<Ipv4Addr> {
        let key = "gateway.next_hop";
        let address = self.ipv4(key, raw)?;
        if let Some(holder) = self.host.holder_of(address) {
            self.report.error(
                key,
                Some(raw.span()),
                format!("{address} is this host's own address (on {holder})"),
                "the address of the router to send NAT traffic to",
            );
            return None;
        }
        if let Some((interface, networks)) = &self.interface
            && !networks.iter().any(|n| n.contains_addr(&address))
        {
            self.report.error(
                key,
                Some(raw.span()),
                format!(
                    "{address} is not on {interface} ({}), so it cannot be a next hop",
                    list(networks.iter().map(|n| n.network()))
                ),
                format!(
                    "an address inside {}; leave next_hop out to use the default route",
                    list(networks.iter().map(|n| n.network()))
                ),
            );
            return None;
        }
        Some(address)
    }

    fn allowed_sources(&mut self, raw: &Spanned<Vec<Spanned<String>>>) -> Option<Vec<Ipv4Cidr>> {
        if raw.get_ref().is_empty() {
            self.report.error(
                "tunnel.allowed_sources",
                Some(raw.span()),
                "empty: no node could use the gateway",
                allowed("tunnel.allowed_sources"),
            );
            return None;
        }
        let parsed: Vec<Option<Ipv4Cidr>> = raw
            .get_ref()
            .iter()
            .enumerate()
            .map(|(i, source)| self.source_network(&format!("tunnel.allowed_sources[{i}]"), source))
            .collect();
        parsed.into_iter().collect()
    }

    fn source_network(&mut self, key: &str, raw: &Spanned<String>) -> Option<Ipv4Cidr> {
        let cidr = match parse_cidr(raw.get_ref()) {
            Ok(cidr) => cidr,
            Err(problem) => {
                self.report
                    .error(key, Some(raw.span()), problem, allowed(key));
                return None;
            }
        };
        if cidr.network() != cidr {
            self.report.error(
                key,
                Some(raw.span()),
                format!("{cidr} has host bits set"),
                format!("the network address: \"{}\"", cidr.network()),
            );
            return None;
        }
        Some(cidr)
    }

    fn advert_interval(&mut self, raw: &Spanned<String>) -> Option<Duration> {
        let key = "election.advert_interval";
        let interval = self.duration(key, raw)?;
        let problem = if interval.as_nanos() % CENTISECOND_NANOS != 0 {
            "is not a whole number of centiseconds, which VRRPv3 carries"
        } else if interval < ADVERT_MIN || interval > ADVERT_MAX {
            "is outside the 12-bit centisecond field of VRRPv3"
        } else {
            return Some(interval);
        };
        self.report.error(
            key,
            Some(raw.span()),
            format!("{:?} {problem}", raw.get_ref()),
            allowed(key),
        );
        None
    }

    fn election_peers(&mut self, raw: &[Spanned<String>]) -> Option<Vec<Ipv4Addr>> {
        let mut seen = Seen::default();
        let parsed: Vec<Option<Ipv4Addr>> = raw
            .iter()
            .enumerate()
            .map(|(i, peer)| {
                let key = format!("election.peers[{i}]");
                let address = self.ipv4(&key, peer)?;
                let problem =
                    if address.is_multicast() || address.is_broadcast() || address.is_unspecified()
                    {
                        format!("{address} is not a unicast address")
                    } else if let Some(holder) = self.host.holder_of(address) {
                        format!("{address} is this host's own address (on {holder})")
                    } else {
                        return self
                            .unique(&mut seen, address, &key, peer, "each peer once")
                            .then_some(address);
                    };
                self.report
                    .error(&key, Some(peer.span()), problem, allowed(&key));
                None
            })
            .collect();
        parsed.into_iter().collect()
    }

    fn floating_address(&mut self, key: &str, raw: &Spanned<String>) -> Option<Ipv4Addr> {
        let address = self.ipv4(key, raw)?;
        let span = Some(raw.span());
        if let Some(holder) = self.host.holder_of(address) {
            self.report.error(
                key,
                span,
                format!(
                    "{address} is already an address of this host (on {holder}); \
                     its kernel would answer in the gateway's place"
                ),
                "an address no host holds: the gateway owns floating IPs in user space",
            );
            return None;
        }
        let Some((interface, networks)) = &self.interface else {
            // No usable interface: already reported under gateway.interface.
            return Some(address);
        };
        let Some(network) = networks.iter().find(|n| n.contains_addr(&address)) else {
            let subnets = list(networks.iter().map(|n| n.network()));
            self.report.error(
                key,
                span,
                format!("{address} is outside {interface}'s subnet ({subnets})"),
                format!("an address inside {subnets}"),
            );
            return None;
        };
        let network = network.network();
        let reserved = if address == network.address() && network.prefix_len() < 31 {
            Some("network")
        } else if Some(address) == network.broadcast() {
            Some("broadcast")
        } else {
            None
        };
        if let Some(which) = reserved {
            self.report.error(
                key,
                span,
                format!("{address} is the {which} address of {network}"),
                format!("a host address inside {network}"),
            );
            return None;
        }
        Some(address)
    }

    fn port_range(&mut self, raw: &Spanned<String>) -> Option<RangeInclusive<u16>> {
        let key = "nat.port_range";
        let text = raw.get_ref();
        let problem = match text.split_once('-') {
            None => format!("{text:?} is not of the form \"lo-hi\""),
            Some((lo, hi)) => match (parse_port(lo), parse_port(hi)) {
                (Some(lo), Some(hi)) if lo <= hi => return Some(lo..=hi),
                (Some(lo), Some(hi)) => format!("{text:?} starts above its end ({lo} > {hi})"),
                _ => format!("{text:?} has a bound that is not a port 1..=65535"),
            },
        };
        self.report
            .error(key, Some(raw.span()), problem, allowed(key));
        None
    }

    fn timeout(
        &mut self,
        key: &str,
        raw: Option<&Spanned<String>>,
        default: Duration,
        rfc_minimum: Option<(Duration, &str)>,
    ) -> Option<Duration> {
        let Some(raw) = raw else {
            return Some(default);
        };
        let timeout = self.duration(key, raw)?;
        if !(TIMEOUT_MIN..=TIMEOUT_MAX).contains(&timeout) {
            self.report.error(
                key,
                Some(raw.span()),
                format!("{:?} is outside 1s..=30d", raw.get_ref()),
                allowed(key),
            );
            return None;
        }
        if let Some((minimum, rfc)) = rfc_minimum
            && timeout < minimum
        {
            let minimum = duration::format(minimum);
            self.report.warning(
                key,
                Some(raw.span()),
                format!(
                    "{:?} is below the {minimum} minimum of {rfc}; idle but live flows may lose their mapping",
                    raw.get_ref()
                ),
                format!("at least {minimum} (default {})", duration::format(default)),
            );
        }
        Some(timeout)
    }

    // ---- helpers -------------------------------------------------------------------

    /// A required section's content; reports it when missing.
    fn required<'s, T>(&mut self, section: &'s Section<T>, key: &str) -> Option<&'s Spanned<T>> {
        match section {
            Section::Present(value) => Some(value),
            Section::Invalid => None,
            Section::Absent => {
                self.report
                    .error(key, None, "missing required section", allowed(key));
                None
            }
        }
    }

    /// An optional section's content: `Some(None)` when absent, `None` when invalid.
    fn optional<'s, T>(&self, section: &'s Section<T>) -> Option<Option<&'s T>> {
        match section {
            Section::Present(value) => Some(Some(value.get_ref())),
            Section::Absent => Some(None),
            Section::Invalid => None,
        }
    }

    fn non_empty(&mut self, key: &str, raw: &Spanned<String>) -> Option<String> {
        if raw.get_ref().trim().is_empty() {
            self.report
                .error(key, Some(raw.span()), "empty", allowed(key));
            return None;
        }
        Some(raw.get_ref().clone())
    }

    fn int<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        raw: &Spanned<i64>,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let value = *raw.get_ref();
        if !range.contains(&value) {
            self.report.error(
                key,
                Some(raw.span()),
                format!("{value} is out of range"),
                allowed(key),
            );
            return None;
        }
        T::try_from(value).ok()
    }

    fn ipv4(&mut self, key: &str, raw: &Spanned<String>) -> Option<Ipv4Addr> {
        match raw.get_ref().parse() {
            Ok(address) => Some(address),
            Err(_) => {
                self.report.error(
                    key,
                    Some(raw.span()),
                    format!("{:?} is not an IPv4 address", raw.get_ref()),
                    allowed(key),
                );
                None
            }
        }
    }

    fn socket_addr(&mut self, key: &str, raw: &Spanned<String>) -> Option<SocketAddr> {
        let problem = match raw.get_ref().parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => return Some(addr),
            Ok(_) => format!("{:?} has port 0", raw.get_ref()),
            Err(_) => format!("{:?} is not an address:port", raw.get_ref()),
        };
        self.report
            .error(key, Some(raw.span()), problem, allowed(key));
        None
    }

    fn duration(&mut self, key: &str, raw: &Spanned<String>) -> Option<Duration> {
        match duration::parse(raw.get_ref()) {
            Ok(d) => Some(d),
            Err(problem) => {
                self.report.error(
                    key,
                    Some(raw.span()),
                    format!("{:?} is not a duration: {problem}", raw.get_ref()),
                    allowed(key),
                );
                None
            }
        }
    }

    /// A duration within `range`.
    fn bounded_duration(
        &mut self,
        key: &str,
        raw: &Spanned<String>,
        range: RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let d = self.duration(key, raw)?;
        if range.contains(&d) {
            return Some(d);
        }
        self.report.error(
            key,
            Some(raw.span()),
            format!("{:?} is out of range", raw.get_ref()),
            allowed(key),
        );
        None
    }

    fn priority(&mut self, key: &str, raw: &Spanned<RawPriority>) -> Option<Priority> {
        let problem = match raw.get_ref() {
            RawPriority::Number(n) if (1..=254).contains(n) => {
                return u8::try_from(*n).ok().map(Priority::Fixed);
            }
            RawPriority::Number(0) => {
                "0 is out of range: VRRP uses it to say the master is leaving".to_owned()
            }
            RawPriority::Number(255) => {
                "255 is out of range: VRRP reserves it for the owner of the address, \
                 and the kernel of a gateway never owns a floating IP"
                    .to_owned()
            }
            RawPriority::Number(n) => format!("{n} is out of range"),
            RawPriority::Word(word) if word == "auto" => return Some(Priority::Auto),
            RawPriority::Word(word) => format!("{word:?} is neither a number nor \"auto\""),
        };
        self.report
            .error(key, Some(raw.span()), problem, allowed(key));
        None
    }

    /// Records `value` at `key`; reports a duplicate (pointing at the first) and returns
    /// false when it was seen before.
    fn unique<T: Eq + Hash + std::fmt::Display>(
        &mut self,
        seen: &mut Seen<T>,
        value: T,
        key: &str,
        raw: &Spanned<impl Sized>,
        allowed: &str,
    ) -> bool {
        if let Some((first_key, first_span)) = seen.0.get(&value) {
            let line = self.report.line_of(Some(first_span.clone()));
            self.report.error(
                key,
                Some(raw.span()),
                format!("{value} is already used by {first_key} (line {line})"),
                allowed,
            );
            return false;
        }
        seen.0.insert(value, (key.to_owned(), raw.span()));
        true
    }
}

/// Values already seen, with the key and span of their first use.
struct Seen<T>(HashMap<T, (String, Range<usize>)>);

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen(HashMap::new())
    }
}

/// The longest field manager the API server accepts.
const MAX_FIELD_MANAGER: usize = 128;

/// Whether `name` is a Kubernetes object name (an RFC 1123 subdomain): at most 253
/// characters, lowercase alphanumeric labels of `-` joined by `.`, each starting and ending
/// with an alphanumeric.
fn is_object_name(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|&c| alnum(c) || c == b'-')
                && b.first().is_some_and(|&c| alnum(c))
                && b.last().is_some_and(|&c| alnum(c))
        })
}

/// What keeps the kubeconfig files at `paths` (merged in order, as kubectl merges
/// `$KUBECONFIG`) from leading to a cluster; `None` when they do.
fn kubeconfig_problem(host: &HostFacts, paths: &[&Path]) -> Option<String> {
    use kube::config::Kubeconfig;
    let mut merged = Kubeconfig::default();
    for path in paths {
        let file = match host.key_file(path) {
            Ok(file) => file,
            Err(why) => return Some(format!("{}: {why}", path.display())),
        };
        let parsed = std::str::from_utf8(&file.bytes)
            .map_err(|_| "not UTF-8 text".to_owned())
            .and_then(|text| Kubeconfig::from_yaml(text).map_err(|e| e.to_string()));
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(why) => return Some(format!("{} is not a kubeconfig: {why}", path.display())),
        };
        merged = match merged.merge(parsed) {
            Ok(merged) => merged,
            Err(e) => return Some(format!("{} cannot be merged: {e}", path.display())),
        };
    }
    let Some(current) = merged.current_context.as_deref().filter(|c| !c.is_empty()) else {
        return Some("no current-context".to_owned());
    };
    let Some(context) = merged
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
    else {
        return Some(format!(
            "the current-context {current:?} is not among its contexts"
        ));
    };
    let server = merged
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.as_deref());
    if server.is_none_or(str::is_empty) {
        return Some(format!(
            "the cluster {:?} of the current-context {current:?} has no server",
            context.cluster
        ));
    }
    None
}

/// `"a.b.c.d/len"` or a bare address (a /32).
fn parse_cidr(text: &str) -> Result<Ipv4Cidr, String> {
    let (address, prefix_len) = match text.split_once('/') {
        Some((address, prefix_len)) => (address, Some(prefix_len)),
        None => (text, None),
    };
    let address: Ipv4Addr = address
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 CIDR"))?;
    let prefix_len = match prefix_len {
        None => 32,
        Some(len) => len
            .parse::<u8>()
            .ok()
            .filter(|len| *len <= 32)
            .ok_or_else(|| format!("{text:?} has a prefix length outside 0..=32"))?,
    };
    Ok(Ipv4Cidr::new(address, prefix_len))
}

/// Where a present section's header is (its start when absent or invalid).
fn section_span<T>(section: &Section<T>) -> Range<usize> {
    match section {
        Section::Present(value) => value.span(),
        _ => 0..0,
    }
}

/// A port 1..=65535, digits only.
fn parse_port(text: &str) -> Option<u16> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|port| *port != 0)
}

fn list<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{Config, Severity};
    use super::*;

    /// MINIMAL with `from` replaced by `to` (which must occur).
    fn edit(from: &str, to: &str) -> String {
        assert!(MINIMAL.contains(from), "{from:?} not in MINIMAL");
        MINIMAL.replacen(from, to, 1)
    }

    fn with(extra: &str) -> String {
        format!("{MINIMAL}\n{extra}")
    }

    #[test]
    fn unknown_key_is_refused_with_the_valid_keys() {
        let text = with("[nat]\nmax_flows = 10\nudp_timout = \"5m\"\n");
        let e = assert_error(&text, "nat.udp_timout", "udp_timout");
        assert_eq!(e.problem, "unknown key");
        assert!(e.allowed.contains("`udp_timeout`"), "{}", e.allowed);
        assert_eq!(e.column, 1);
    }

    #[test]
    fn unknown_key_in_a_floating_ip_names_its_index() {
        let text = edit("vrid = 11\n", "vrid = 11\nvird = 12\n");
        assert_error(&text, "floating_ip[1].vird", "vird");
    }

    #[test]
    fn unknown_section_is_refused() {
        let text = with("[gatway]\nname = \"x\"\n");
        let e = assert_error(&text, "gatway", "[gatway]");
        assert!(e.allowed.contains("gateway"), "{}", e.allowed);
    }

    #[test]
    fn wrong_type_is_refused_with_the_schema() {
        let text = edit("[tunnel]\n", "[tunnel]\nport = \"4800\"\n");
        let e = assert_error(&text, "tunnel.port", "\"4800\"");
        assert!(e.problem.contains("invalid type"), "{}", e.problem);
        assert!(e.allowed.contains("1..=65535"), "{}", e.allowed);
        let text = with("[election]\npreempt = \"yes\"\n");
        assert_error(&text, "election.preempt", "\"yes\"");
    }

    #[test]
    fn wrong_type_in_a_list_names_the_element() {
        let text = edit(
            "allowed_sources = [\"192.168.1.0/24\"]",
            "allowed_sources = [\n  \"192.168.1.0/24\",\n  24,\n]",
        );
        assert_error(&text, "tunnel.allowed_sources[1]", "24,");
    }

    #[test]
    fn syntax_error_is_refused_with_its_line() {
        let text = edit("vrid = 11", "vrid = = 11");
        let diagnostics = refuse(&text);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert_eq!(diagnostics[0].line, line_of(&text, "= = 11"));
    }

    #[test]
    fn floating_ip_outside_the_interface_subnet_is_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.2.101\"");
        let e = assert_error(&text, "floating_ip[1].address", "192.168.2.101");
        assert!(e.problem.contains("outside eth1's subnet"), "{}", e.problem);
        assert!(e.allowed.contains("192.168.1.0/24"), "{}", e.allowed);
    }

    #[test]
    fn floating_ip_the_host_holds_is_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.1.10\"");
        let e = assert_error(&text, "floating_ip[1].address", "\"192.168.1.10\"");
        assert!(e.problem.contains("address of this host"), "{}", e.problem);
    }

    #[test]
    fn floating_ip_on_the_broadcast_address_is_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.1.255\"");
        let e = assert_error(&text, "floating_ip[1].address", "192.168.1.255");
        assert!(e.problem.contains("broadcast"), "{}", e.problem);
    }

    #[test]
    fn floating_ip_that_is_not_an_address_is_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.1\"");
        assert_error(&text, "floating_ip[1].address", "\"192.168.1\"");
    }

    #[test]
    fn duplicate_vrids_are_refused() {
        let text = edit("vrid = 11", "vrid = 10 # again");
        let e = assert_error(&text, "floating_ip[1].vrid", "# again");
        let first = line_of(&text, "vrid = 10");
        assert!(
            e.problem
                .contains(&format!("floating_ip[0].vrid (line {first})")),
            "{}",
            e.problem
        );
    }

    #[test]
    fn duplicate_addresses_are_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.1.100\" # again");
        let e = assert_error(&text, "floating_ip[1].address", "# again");
        assert!(
            e.problem.contains("floating_ip[0].address"),
            "{}",
            e.problem
        );
    }

    #[test]
    fn vrid_out_of_range_is_refused() {
        let text = edit("vrid = 11", "vrid = 256");
        let e = assert_error(&text, "floating_ip[1].vrid", "256");
        assert!(e.allowed.contains("1..=255"), "{}", e.allowed);
        let text = edit("vrid = 10", "vrid = 0");
        assert_error(&text, "floating_ip[0].vrid", "vrid = 0");
    }

    #[test]
    fn no_floating_ip_is_refused() {
        let text =
            "[gateway]\ninterface = \"eth1\"\n\n[tunnel]\nallowed_sources = [\"10.0.0.0/8\"]\n";
        let diagnostics = refuse(text);
        assert!(
            diagnostics
                .iter()
                .any(|d| d.key == "floating_ip" && d.line == 1),
            "{diagnostics:?}"
        );
        let text = format!("floating_ip = []\n{text}");
        assert_error(&text, "floating_ip", "floating_ip = []");
    }

    #[test]
    fn tunnel_port_inside_the_nat_port_range_is_refused() {
        let text = with("[nat]\nport_range = \"1024-65535\"\n").replacen(
            "[tunnel]\n",
            "[tunnel]\nport = 5000\n",
            1,
        );
        let e = assert_error(&text, "tunnel.port", "port = 5000");
        let range_line = line_of(&text, "1024-65535");
        assert!(
            e.problem
                .contains(&format!("1024-65535 (line {range_line})")),
            "{}",
            e.problem
        );
        assert_eq!(e.allowed, "a port outside 1024-65535");
    }

    #[test]
    fn tunnel_port_inside_the_default_nat_range_is_refused() {
        let text = edit("[tunnel]\n", "[tunnel]\nport = 20000\n");
        let e = assert_error(&text, "tunnel.port", "port = 20000");
        assert!(e.problem.contains("the default"), "{}", e.problem);
    }

    #[test]
    fn nat_range_over_the_default_tunnel_port_is_refused() {
        let text = with("[nat]\nport_range = \"1024-65535\"\n");
        let e = assert_error(&text, "nat.port_range", "1024-65535");
        assert!(e.problem.contains("[tunnel].port 4800"), "{}", e.problem);
    }

    #[test]
    fn election_priority_out_of_range_is_refused() {
        for bad in ["255", "0", "-3", "\"high\""] {
            let text = with(&format!("[election]\npreempt = false\npriority = {bad}\n"));
            let e = assert_error(&text, "election.priority", "priority = ");
            assert!(e.allowed.contains("1..=254"), "{}", e.allowed);
            assert!(e.allowed.contains("\"auto\""), "{}", e.allowed);
        }
    }

    #[test]
    fn floating_ip_priority_out_of_range_is_refused() {
        let text = edit("vrid = 11\n", "vrid = 11\npriority = 300\n");
        assert_error(&text, "floating_ip[1].priority", "priority = 300");
    }

    #[test]
    fn auto_and_overrides_are_accepted() {
        let text = with("[election]\npriority = \"auto\"\npeers = [\"192.168.1.12\"]\n").replacen(
            "vrid = 11\n",
            "vrid = 11\npriority = 254\n",
            1,
        );
        let config = accept(&text).config;
        assert_eq!(config.election.priority, Priority::Auto);
        assert_eq!(config.floating_ips[1].priority, Some(Priority::Fixed(254)));
        assert_eq!(
            config.floating_ips[0].effective_priority(&config.election),
            Priority::Auto
        );
    }

    #[test]
    fn auto_needs_the_other_gateways() {
        let text = with("[election]\npriority = \"auto\"\n");
        let e = assert_error(&text, "election.priority", "\"auto\"");
        assert!(
            e.problem.contains("none of the other gateways"),
            "{}",
            e.problem
        );
        let sync = "[sync]\nlisten = \"192.168.1.10:4801\"\npeers = [\"192.168.1.12:4801\"]\n";
        let config = accept(&with(&format!("[election]\npriority = \"auto\"\n\n{sync}"))).config;
        let (me, members) = config.auto_members(Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(me, Ipv4Addr::new(192, 168, 1, 10));
        assert_eq!(members, [Ipv4Addr::new(192, 168, 1, 12), me]);
        // A per-address "auto" needs them as much.
        let text = with("").replacen("vrid = 11\n", "vrid = 11\npriority = \"auto\"\n", 1);
        assert_error(&text, "election.priority", "");
    }

    #[test]
    fn garp_keys_are_checked() {
        let config = accept(&with(
            "[election]\ngarp_count = 5\ngarp_interval = \"200ms\"\ngarp_refresh = \"0s\"\n",
        ))
        .config;
        assert_eq!(config.election.garp_count, 5);
        assert_eq!(config.election.garp_interval, Duration::from_millis(200));
        assert_eq!(config.election.garp_refresh, None);
        for (bad, key) in [
            ("garp_count = 0", "election.garp_count"),
            ("garp_count = 101", "election.garp_count"),
            ("garp_interval = \"1ms\"", "election.garp_interval"),
            ("garp_interval = \"2m\"", "election.garp_interval"),
            ("garp_refresh = \"10ms\"", "election.garp_refresh"),
            ("garp_refresh = \"soon\"", "election.garp_refresh"),
        ] {
            assert_error(&with(&format!("[election]\n{bad}\n")), key, bad);
        }
    }

    #[test]
    fn interface_that_does_not_exist_is_refused() {
        let text = edit("\"eth1\"", "\"eth9\"");
        let e = assert_error(&text, "gateway.interface", "eth9");
        assert!(e.problem.contains("no interface \"eth9\""), "{}", e.problem);
        assert!(e.allowed.contains("eth1, eth2, lo"), "{}", e.allowed);
    }

    #[test]
    fn interface_without_ipv4_is_refused() {
        let text = edit("\"eth1\"", "\"eth2\"");
        let e = assert_error(&text, "gateway.interface", "eth2");
        assert!(e.problem.contains("no IPv4 address"), "{}", e.problem);
    }

    #[test]
    fn missing_required_key_is_refused() {
        let text = edit("interface = \"eth1\"\n", "name = \"gw1\"\n");
        let e = assert_error(&text, "gateway.interface", "[gateway]");
        assert_eq!(e.problem, "missing required key");
    }

    #[test]
    fn missing_required_key_in_a_floating_ip_names_its_index() {
        let text = edit(
            "[[floating_ip]]\naddress = \"192.168.1.101\"\nvrid = 11\n",
            "[[floating_ip]] # second\naddress = \"192.168.1.101\"\n",
        );
        assert_error(&text, "floating_ip[1].vrid", "[[floating_ip]] # second");
    }

    #[test]
    fn bad_port_range_is_refused() {
        for bad in ["100-50", "16384", "0-100", "1-65536", "a-b", "-5"] {
            let text = with(&format!("[nat]\nmax_flows = 10\nport_range = \"{bad}\"\n"));
            let e = assert_error(&text, "nat.port_range", "port_range");
            assert!(e.allowed.contains("lo-hi"), "{bad}: {}", e.allowed);
        }
    }

    #[test]
    fn max_flows_out_of_range_is_refused() {
        for bad in ["0", "4294967296"] {
            let text = with(&format!("[nat]\nmax_flows = {bad}\n"));
            assert_error(&text, "nat.max_flows", "max_flows");
        }
    }

    #[test]
    fn max_flows_per_pod_out_of_range_is_refused() {
        for bad in ["0", "-1", "4294967296"] {
            let text = with(&format!(
                "[nat]\nmax_flows = 10\nmax_flows_per_pod = {bad}\n"
            ));
            let e = assert_error(&text, "nat.max_flows_per_pod", "max_flows_per_pod");
            assert!(e.problem.contains("out of range"), "{bad}: {}", e.problem);
            assert!(e.allowed.contains("1..=4294967295"), "{}", e.allowed);
        }
        let text = with("[nat]\nmax_flows_per_pod = \"1000\"\n");
        assert_error(&text, "nat.max_flows_per_pod", "max_flows_per_pod");
    }

    #[test]
    fn max_flows_per_pod_below_max_flows_is_taken_without_warning() {
        let text = with("[nat]\nmax_flows = 5000\nmax_flows_per_pod = 1000\n");
        let checked = accept(&text);
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        assert_eq!(checked.config.nat.max_flows_per_pod, 1000);
        assert_eq!(checked.config.nat_params().max_flows_per_pod, 1000);
    }

    #[test]
    fn a_share_not_below_max_flows_is_accepted_with_a_warning_on_it() {
        for share in ["5000", "9000"] {
            let text = with(&format!(
                "[nat]\nmax_flows = 5000\nmax_flows_per_pod = {share}\n"
            ));
            let checked = accept(&text);
            assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
            let w = &checked.warnings[0];
            assert_eq!(w.severity, Severity::Warning);
            assert_eq!(
                (w.key.as_str(), w.line),
                ("nat.max_flows_per_pod", line_of(&text, "max_flows_per_pod"))
            );
            assert!(w.problem.contains("not below max_flows (5000)"), "{w}");
            assert!(w.allowed.contains("1250"), "{w}");
        }
    }

    #[test]
    fn a_small_max_flows_under_the_default_share_is_accepted_with_a_warning() {
        let text = with("[nat]\nport_range = \"20000-29999\"\nmax_flows = 5000\n");
        let checked = accept(&text);
        assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
        let w = &checked.warnings[0];
        assert_eq!(
            (w.key.as_str(), w.line),
            ("nat.max_flows", line_of(&text, "max_flows"))
        );
        assert!(
            w.problem.contains("default max_flows_per_pod (65536)"),
            "{w}"
        );
        assert!(w.allowed.contains("max_flows_per_pod"), "{w}");
        assert_eq!(checked.config.nat.max_flows_per_pod, 65536);
    }

    #[test]
    fn bad_durations_are_refused() {
        for (key, bad) in [
            ("udp_timeout", "5 minutes"),
            ("icmp_timeout", "60"),
            ("tcp_closed_timeout", "500ms"),
            ("tcp_established_timeout", "31d"),
        ] {
            let text = with(&format!("[nat]\nmax_flows = 10\n{key} = \"{bad}\"\n"));
            let e = assert_error(&text, &format!("nat.{key}"), bad);
            assert!(e.allowed.contains("at least 1s"), "{}", e.allowed);
        }
    }

    #[test]
    fn advert_interval_not_in_centiseconds_is_refused() {
        for bad in ["15ms", "5ms", "41s", "0s", "soon"] {
            let text = with(&format!(
                "[election]\npreempt = true\nadvert_interval = \"{bad}\"\n"
            ));
            let e = assert_error(&text, "election.advert_interval", "advert_interval");
            assert!(e.allowed.contains("multiple of 10ms"), "{}", e.allowed);
        }
    }

    #[test]
    fn advert_interval_at_the_field_limits_is_accepted() {
        for (text, centis) in [("10ms", 1), ("40.95s", 4095), ("100ms", 10)] {
            let doc = with(&format!("[election]\nadvert_interval = \"{text}\"\n"));
            assert_eq!(
                accept(&doc).config.election.advert_interval_centis(),
                centis
            );
        }
    }

    #[test]
    fn vni_out_of_range_is_refused() {
        let text = edit("[tunnel]\n", "[tunnel]\nvni = 16777216\n");
        let e = assert_error(&text, "tunnel.vni", "16777216");
        assert!(e.allowed.contains("0..=16777215"), "{}", e.allowed);
        let text = edit("[tunnel]\n", "[tunnel]\nvni = 16777215\n");
        assert_eq!(accept(&text).config.tunnel.vni, 16_777_215);
    }

    #[test]
    fn empty_allowed_sources_is_refused() {
        let text = edit("[\"192.168.1.0/24\"]", "[]");
        let e = assert_error(&text, "tunnel.allowed_sources", "allowed_sources = []");
        assert!(e.problem.contains("no node"), "{}", e.problem);
    }

    #[test]
    fn allowed_source_with_host_bits_is_refused() {
        let text = edit(
            "[\"192.168.1.0/24\"]",
            "[\"10.0.0.0/8\", \"192.168.1.7/24\"]",
        );
        let e = assert_error(&text, "tunnel.allowed_sources[1]", "192.168.1.7/24");
        assert!(e.allowed.contains("192.168.1.0/24"), "{}", e.allowed);
    }

    #[test]
    fn allowed_source_single_address_is_a_slash_32() {
        let text = edit("[\"192.168.1.0/24\"]", "[\"192.168.1.7\"]");
        assert_eq!(
            accept(&text).config.tunnel.allowed_sources,
            vec![cidr("192.168.1.7/32")]
        );
        let text = edit("[\"192.168.1.0/24\"]", "[\"192.168.1.0/33\"]");
        assert_error(&text, "tunnel.allowed_sources[0]", "/33");
    }

    #[test]
    fn next_hop_off_the_interface_subnet_is_refused() {
        let text = edit(
            "interface = \"eth1\"\n",
            "interface = \"eth1\"\nnext_hop = \"10.1.1.1\"\n",
        );
        let e = assert_error(&text, "gateway.next_hop", "10.1.1.1");
        assert!(e.allowed.contains("192.168.1.0/24"), "{}", e.allowed);
        let text = edit(
            "interface = \"eth1\"\n",
            "interface = \"eth1\"\nnext_hop = \"192.168.1.1\"\n",
        );
        assert_eq!(
            accept(&text).config.gateway.next_hop,
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
    }

    #[test]
    fn election_peers_must_be_other_unicast_hosts() {
        for (bad, problem) in [
            ("192.168.1.10", "own address"),
            ("224.0.0.18", "not a unicast"),
            ("192.168.1.12\", \"192.168.1.12", "already used"),
            ("gw2", "not an IPv4"),
        ] {
            let text = with(&format!(
                "[election]\npreempt = true\npeers = [\"{bad}\"]\n"
            ));
            let diagnostics = refuse(&text);
            let line = line_of(&text, "peers");
            assert!(
                diagnostics
                    .iter()
                    .any(|d| d.key.starts_with("election.peers[")
                        && d.line == line
                        && d.problem.contains(problem)),
                "{bad}: {diagnostics:?}"
            );
        }
    }

    const SYNC: &str = "[sync]\nlisten = \"192.168.1.10:4801\"\npeers = [\"192.168.1.12:4801\"]\n";

    #[test]
    fn sync_keys_are_read_and_kept() {
        let text = with(&format!(
            "{SYNC}key_file = \"/etc/egret/sync.key\"\nprevious_key_file = \"/etc/egret/old.key\"\n"
        ));
        let checked = accept(&text);
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let sync = checked.config.sync.expect("[sync]");
        assert_eq!(
            sync.key,
            Some((PathBuf::from("/etc/egret/sync.key"), Secret(vec![1; 32])))
        );
        assert_eq!(sync.previous_key.map(|k| k.1.0.len()), Some(40));
    }

    #[test]
    fn a_sync_without_a_key_is_accepted_with_a_warning() {
        let checked = accept(&with(SYNC));
        assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
        assert_eq!(checked.warnings[0].key, "sync");
        assert!(checked.warnings[0].problem.contains("not authenticated"));
        assert_eq!(checked.warnings[0].line, line_of(&with(SYNC), "[sync]"));
    }

    #[test]
    fn a_key_file_that_is_short_exposed_missing_or_relative_is_refused() {
        let key = |path: &str| with(&format!("{SYNC}key_file = \"{path}\"\n"));
        let e = assert_error(&key("/etc/egret/short.key"), "sync.key_file", "key_file");
        assert_eq!(e.problem, "holds 31 bytes");
        let e = assert_error(&key("/etc/egret/world.key"), "sync.key_file", "key_file");
        assert!(e.problem.contains("0644"), "{}", e.problem);
        assert!(e.allowed.contains("chmod 600"), "{}", e.allowed);
        let e = assert_error(&key("/etc/egret/none.key"), "sync.key_file", "key_file");
        assert!(e.problem.contains("cannot read"), "{}", e.problem);
        assert_error(&key("sync.key"), "sync.key_file", "key_file");
        // Readable by its group: accepted, with a warning.
        let checked = accept(&key("/etc/egret/group.key"));
        assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
        assert!(checked.warnings[0].problem.contains("0640"));
        // A previous key alone means nothing.
        let text = with(&format!(
            "{SYNC}previous_key_file = \"/etc/egret/old.key\"\n"
        ));
        assert_error(&text, "sync.previous_key_file", "previous_key_file");
        let text = with(&format!(
            "{SYNC}key_file = \"/etc/egret/sync.key\"\nprevious_key_file = \"/etc/egret/world.key\"\n"
        ));
        assert_error(&text, "sync.previous_key_file", "previous_key_file");
    }

    #[test]
    fn the_kubernetes_table_needs_a_kubeconfig_that_leads_to_a_cluster() {
        let k = |body: &str| with(&format!("[kubernetes]\n{body}"));
        let config = accept(&k(
            "kubeconfig = \"/etc/egret/kubeconfig\"\ngateway = \"egress.lab\"\n",
        ))
        .config;
        let kubernetes = config.kubernetes.expect("[kubernetes]");
        assert_eq!(
            kubernetes.kubeconfig,
            Some(PathBuf::from("/etc/egret/kubeconfig"))
        );
        assert_eq!(kubernetes.gateway, "egress.lab");

        let e = assert_error(
            &k("kubeconfig = \"/etc/egret/none\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert_eq!(
            e.problem,
            "/etc/egret/none: cannot read it: No such file or directory"
        );
        let e = assert_error(
            &k("kubeconfig = \"kubeconfig\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert_eq!(e.problem, "not an absolute path");
        let e = assert_error(
            &k("kubeconfig = \"/etc/egret/garbage.kubeconfig\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert!(
            e.problem
                .starts_with("/etc/egret/garbage.kubeconfig is not a kubeconfig: "),
            "{}",
            e.problem
        );
        let e = assert_error(
            &k("kubeconfig = \"/etc/egret/nowhere.kubeconfig\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert_eq!(
            e.problem,
            "the current-context \"other\" is not among its contexts"
        );
        let e = assert_error(
            &k("kubeconfig = \"/etc/egret/serverless.kubeconfig\"\n"),
            "kubernetes.kubeconfig",
            "kubeconfig",
        );
        assert_eq!(
            e.problem,
            "the cluster \"lab\" of the current-context \"gw\" has no server"
        );
        assert!(e.allowed.contains("$KUBECONFIG"), "{}", e.allowed);

        for bad in [
            "",
            "Default",
            "-gw",
            "gw-",
            "a..b",
            "gw_1",
            &"a".repeat(254),
        ] {
            let text = k(&format!("gateway = \"{bad}\"\n"));
            let e = assert_error(&text, "kubernetes.gateway", "gateway =");
            assert!(e.allowed.contains("object"), "{}", e.allowed);
        }
        accept(&k(&format!("gateway = \"{}\"\n", "a".repeat(253))));
    }

    #[test]
    fn without_a_kubeconfig_key_kubeconfig_env_must_lead_to_a_cluster() {
        let text = with("[kubernetes]\n");
        let parse = |host: HostFacts| match Config::parse(&text, &host) {
            Ok(_) => panic!("accepted"),
            Err(ConfigError::Invalid(d)) => d,
            Err(e) => panic!("{e}"),
        };
        let mut unset = host();
        unset.kubeconfig_env = None;
        let d = parse(unset);
        assert_eq!(d[0].key, "kubernetes.kubeconfig");
        assert_eq!(d[0].problem, "not set, and $KUBECONFIG is not set either");
        assert_eq!(d[0].line, line_of(&text, "[kubernetes]"));
        let d = parse(host().with_kubeconfig_env("/etc/egret/garbage.kubeconfig"));
        assert!(
            d[0].problem
                .starts_with("from $KUBECONFIG: /etc/egret/garbage.kubeconfig is not"),
            "{}",
            d[0].problem
        );
        // A list, merged: the first file's current context wins.
        let merged =
            host().with_kubeconfig_env("/etc/egret/kubeconfig:/etc/egret/nowhere.kubeconfig");
        assert!(Config::parse(&text, &merged).is_ok());
    }

    #[test]
    fn with_kubernetes_the_name_must_fit_a_field_manager() {
        let long = "g".repeat(115);
        let text = format!("{MINIMAL}\n[kubernetes]\n")
            .replace("[gateway]\n", &format!("[gateway]\nname = \"{long}\"\n"));
        let e = assert_error(&text, "gateway.name", "name =");
        assert!(e.problem.starts_with("115 bytes long"), "{}", e.problem);
        assert!(e.allowed.contains("at most 114 bytes"), "{}", e.allowed);
        accept(&text.replace(&long, &"g".repeat(114)));
        // Without [kubernetes], any name goes.
        accept(&text.replace("[kubernetes]\n", ""));
    }

    #[test]
    fn real_key_files_are_checked_on_disk() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("egret-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("sync.key");
        std::fs::write(&path, [9u8; 32]).expect("written");
        let real = HostFacts::new("h").reading_real_files();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            real.key_file(&path).map(|f| (f.mode, f.bytes.len())),
            Ok((0o600, 32))
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        assert_eq!(real.key_file(&path).map(|f| f.mode), Ok(0o604));
        assert_eq!(
            real.key_file(&dir).map(|f| f.mode),
            Err("not a regular file".into())
        );
        std::fs::remove_dir_all(&dir).expect("removed");
        assert!(real.key_file(&path).is_err());
    }

    #[test]
    fn sync_needs_a_listen_address_and_peers() {
        let text = with("[sync]\nlisten = \"192.168.1.10:4801\"\npeers = []\n");
        assert_error(&text, "sync.peers", "peers = []");
        let text = with("[sync]\nlisten = \"192.168.1.10\"\npeers = [\"192.168.1.11:4801\"]\n");
        assert_error(&text, "sync.listen", "listen");
        let text =
            with("[sync]\nlisten = \"192.168.1.10:4801\"\npeers = [\"192.168.1.10:4801\"]\n");
        assert_error(&text, "sync.peers[0]", "peers");
        let text = with("[sync]\npeers = [\"192.168.1.11:4801\"]\n");
        assert_error(&text, "sync.listen", "[sync]");
    }

    #[test]
    fn api_listen_must_be_a_socket_address() {
        let text = with("[api]\nlisten = \"localhost:9477\"\n");
        assert_error(&text, "api.listen", "localhost");
        let text = with("[api]\nlisten = \"127.0.0.1:0\"\n");
        assert_error(&text, "api.listen", "127.0.0.1:0");
    }

    #[test]
    fn every_semantic_error_is_reported_at_once() {
        let text = r#"
[gateway]
interface = "eth9"

[tunnel]
vni = 16777216
allowed_sources = ["192.168.1.0/24"]

[election]
priority = 255
advert_interval = "15ms"

[[floating_ip]]
address = "192.168.1.100"
vrid = 10

[[floating_ip]]
address = "192.168.1.100"
vrid = 10

[nat]
port_range = "9-1"
udp_timeout = "forever"
"#;
        let diagnostics = refuse(text);
        let keys: Vec<&str> = diagnostics.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "gateway.interface",
                "tunnel.vni",
                "election.priority",
                "election.advert_interval",
                "floating_ip[1].address",
                "floating_ip[1].vrid",
                "nat.port_range",
                "nat.udp_timeout",
            ],
            "{diagnostics:#?}"
        );
    }

    #[test]
    fn errors_in_several_sections_are_all_reported() {
        // An unknown key stops only its own section.
        let text =
            with("[nat]\nbogus = 1\n\n[api]\nlisten = \"nowhere\"\n\n[election]\nwhat = 2\n");
        let diagnostics = refuse(&text);
        for key in ["nat.bogus", "api.listen", "election.what"] {
            assert!(
                diagnostics.iter().any(|d| d.key == key),
                "{key}: {diagnostics:?}"
            );
        }
    }

    #[test]
    fn timeouts_below_the_rfc_minimums_are_accepted_with_warnings() {
        let text = with(
            "[nat]\ntcp_established_timeout = \"1h\"\ntcp_transitory_timeout = \"1m\"\n\
             tcp_time_wait_timeout = \"30s\"\nudp_timeout = \"30s\"\nicmp_timeout = \"10s\"\n\
             tcp_closed_timeout = \"1s\"\n",
        );
        let checked = accept(&text);
        let warned: Vec<(&str, usize)> = checked
            .warnings
            .iter()
            .inspect(|w| assert_eq!(w.severity, Severity::Warning))
            .map(|w| (w.key.as_str(), w.line))
            .collect();
        assert_eq!(
            warned,
            [
                ("nat.tcp_established_timeout", line_of(&text, "\"1h\"")),
                ("nat.tcp_transitory_timeout", line_of(&text, "\"1m\"")),
                ("nat.tcp_time_wait_timeout", line_of(&text, "tcp_time_wait")),
                ("nat.udp_timeout", line_of(&text, "udp_timeout")),
                ("nat.icmp_timeout", line_of(&text, "icmp_timeout")),
            ]
        );
        let rfcs: Vec<&str> = ["RFC 5382", "RFC 5382", "RFC 5382", "RFC 4787", "RFC 5508"].into();
        for (warning, rfc) in checked.warnings.iter().zip(rfcs) {
            assert!(warning.problem.contains(rfc), "{warning}");
        }
        assert_eq!(
            checked.config.nat.tcp_established_timeout,
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn a_cni_tunnel_port_is_accepted_with_a_warning() {
        let text = edit("[tunnel]\n", "[tunnel]\nport = 8472\n");
        let checked = accept(&text);
        assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
        assert_eq!(checked.warnings[0].key, "tunnel.port");
        assert!(checked.warnings[0].problem.contains("flannel"));
    }

    #[test]
    fn loopback_floating_ips_are_fine_for_a_dry_run() {
        let text = MINIMAL
            .replace("\"eth1\"", "\"lo\"")
            .replace("192.168.1.0/24", "127.0.0.0/8")
            .replace("192.168.1.1", "127.0.0.1");
        let config = accept(&text).config;
        assert_eq!(
            config.floating_ips[0].address,
            Ipv4Addr::new(127, 0, 0, 100)
        );
        assert!(Config::parse(&text, &HostFacts::new("h")).is_err());
    }
}
