//! From the document as written ([`super::raw`]) to a [`Config`]: value rules, defaults, and
//! the rules between values.
//!
//! Every check runs even after an earlier one failed, so one `check` lists every problem; a
//! [`Config`] is built only when none is an error. Checks that compare two values run only
//! when both are valid, so one mistake is not reported twice. What the running agent would
//! merely skip (a policy it will not program) is a warning, not an error: the rest of the
//! config keeps working.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::raw::{
    self, Policies, RawAgent, RawApi, RawConfig, RawKubernetes, RawList, RawMasquerade, RawPolicy,
    RawTunnel, Section, Table, allowed,
};
use super::{
    Agent, Api, Checked, Config, ConfigError, HostFacts, Kubernetes, Masquerade, Mode, Policy,
    Tunnel, defaults, glob_match,
};
use crate::prefix::{Prefix, PrefixError};
use egret_config::Report;

/// egret-gateway's default `[api].listen` port: an agent beside a gateway must not take it.
const GATEWAY_API_PORT: u16 = 9477;

/// Linux interface names are at most IFNAMSIZ - 1 bytes.
const IFNAME_MAX: usize = 15;

/// Longest Kubernetes object name (a DNS subdomain).
const NAME_MAX: usize = 253;

/// Routing tables the kernel itself uses.
const RESERVED_TABLES: [(i64, &str); 3] = [
    (253, "the kernel's default table"),
    (254, "the main table"),
    (255, "the local table"),
];

/// The agent's two rules (`rule_priority` and the next) must come before the main table's
/// rule at 32766.
const RULE_PRIORITY_MAX: i64 = 32764;

/// kube-proxy's masquerade (0x4000) and drop (0x8000) mark bits.
const KUBE_PROXY_MARKS: u32 = 0xc000;

/// UDP ports of common CNI overlays, which share the node with the agent's tunnel.
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
        }
        .config(&raw)
    });
    report
        .conclude(config, "see the agent configuration in the README")
        .map(|(config, warnings)| Checked { config, warnings })
        .map_err(|diagnostics| ConfigError::Invalid { diagnostics })
}

/// A valid list element with its index and place in the file.
struct Item<T> {
    index: usize,
    value: T,
    span: Range<usize>,
}

struct Checker<'r, 't, 'h> {
    report: &'r mut Report<'t>,
    host: &'h HostFacts,
}

impl Checker<'_, '_, '_> {
    fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        let mode = self.mode(&raw.agent);
        let agent = self.agent(&raw.agent, mode);
        let tunnel = self.tunnel(&raw.tunnel);
        let masquerade = self.masquerade(&raw.masquerade);
        let kubernetes = self.kubernetes(&raw.kubernetes, mode);
        let api = self.api(&raw.api);
        if let (Some(agent), Some(tunnel)) = (&agent, &tunnel) {
            self.pod_patterns_spare_own_interfaces(raw, agent, tunnel);
        }
        let floating_ips = tunnel.as_ref().map(|t| t.floating_ips.as_slice());
        let policies = self.policies(raw, mode, floating_ips);
        Some(Config {
            agent: agent?,
            tunnel: tunnel?,
            masquerade: masquerade?,
            kubernetes: kubernetes?,
            api: api?,
            policies: policies?,
        })
    }

    // ---- sections ------------------------------------------------------------------

    /// `[agent].mode`, checked first: the node name and the policies depend on it.
    fn mode(&mut self, section: &Section<RawAgent>) -> Option<Mode> {
        let absent = RawAgent::default();
        let (a, table) = contents(section, &absent)?;
        self.value(
            table,
            "mode",
            &a.mode,
            || defaults::MODE,
            |c, raw| match raw.get_ref().as_str() {
                "kubernetes" => Some(Mode::Kubernetes),
                "static" => Some(Mode::Static),
                other => {
                    c.report.error(
                        "agent.mode",
                        Some(raw.span()),
                        format!("{other:?} is not a mode"),
                        allowed("agent.mode"),
                    );
                    None
                }
            },
        )
    }

    fn agent(&mut self, section: &Section<RawAgent>, mode: Option<Mode>) -> Option<Agent> {
        let absent = RawAgent::default();
        let (a, table) = contents(section, &absent)?;
        let node_name = self.node_name(a, table, mode);
        let interface = self.value(
            table,
            "interface",
            &a.interface,
            || None,
            |c, raw| c.interface_name("agent.interface", raw).map(Some),
        );
        let pod_interfaces = self.value(
            table,
            "pod_interfaces",
            &a.pod_interfaces,
            || defaults::POD_INTERFACES.map(str::to_owned).to_vec(),
            |c, raw| c.pod_patterns(raw),
        );
        let pin_path = self.value(
            table,
            "pin_path",
            &a.pin_path,
            || PathBuf::from(defaults::PIN_PATH),
            |c, raw| c.absolute_path("agent.pin_path", raw),
        );
        let state_dir = self.value(
            table,
            "state_dir",
            &a.state_dir,
            || PathBuf::from(defaults::STATE_DIR),
            |c, raw| c.absolute_path("agent.state_dir", raw),
        );
        let fwmark = self.value(
            table,
            "fwmark",
            &a.fwmark,
            || defaults::FWMARK,
            |c, raw| c.fwmark(raw),
        );
        let route_table = self.value(
            table,
            "route_table",
            &a.route_table,
            || defaults::ROUTE_TABLE,
            |c, raw| c.route_table(raw),
        );
        let rule_priority = self.value(
            table,
            "rule_priority",
            &a.rule_priority,
            || defaults::RULE_PRIORITY,
            |c, raw| c.int("agent.rule_priority", raw, 1..=RULE_PRIORITY_MAX),
        );
        Some(Agent {
            node_name: node_name?,
            mode: mode?,
            interface: interface?,
            pod_interfaces: pod_interfaces?,
            pin_path: pin_path?,
            state_dir: state_dir?,
            fwmark: fwmark?,
            route_table: route_table?,
            rule_priority: rule_priority?,
        })
    }

    fn tunnel(&mut self, section: &Section<RawTunnel>) -> Option<Tunnel> {
        let absent = RawTunnel::default();
        let (t, table) = contents(section, &absent)?;
        let port = self.value(
            table,
            "port",
            &t.port,
            || defaults::TUNNEL_PORT,
            |c, raw| c.tunnel_port(raw),
        );
        let vni = self.value(
            table,
            "vni",
            &t.vni,
            || defaults::TUNNEL_VNI,
            |c, raw| c.int("tunnel.vni", raw, 0..=0xff_ffff),
        );
        let device = self.value(
            table,
            "device",
            &t.device,
            || defaults::TUNNEL_DEVICE.to_owned(),
            |c, raw| c.interface_name("tunnel.device", raw),
        );
        let floating_ips = self.value(
            table,
            "floating_ips",
            &t.floating_ips,
            Vec::new,
            |c, raw| c.floating_ips(raw),
        );
        Some(Tunnel {
            port: port?,
            vni: vni?,
            device: device?,
            floating_ips: floating_ips?,
        })
    }

    fn masquerade(&mut self, section: &Section<RawMasquerade>) -> Option<Masquerade> {
        let absent = RawMasquerade::default();
        let (m, table) = contents(section, &absent)?;
        let non_masquerade_cidrs = self.value(
            table,
            "non_masquerade_cidrs",
            &m.non_masquerade_cidrs,
            defaults::non_masquerade_cidrs,
            |c, raw| {
                c.prefix_list("masquerade.non_masquerade_cidrs", raw, None)
                    .map(values)
            },
        );
        let masquerade_link_local = self.value(
            table,
            "masquerade_link_local",
            &m.masquerade_link_local,
            || defaults::MASQUERADE_LINK_LOCAL,
            |_, raw| Some(*raw),
        );
        Some(Masquerade {
            non_masquerade_cidrs: non_masquerade_cidrs?,
            masquerade_link_local: masquerade_link_local?,
        })
    }

    fn kubernetes(
        &mut self,
        section: &Section<RawKubernetes>,
        mode: Option<Mode>,
    ) -> Option<Kubernetes> {
        let absent = RawKubernetes::default();
        let (k, table) = contents(section, &absent)?;
        if let (Some(table), Some(Mode::Static)) = (table, mode) {
            self.report.warning(
                "kubernetes",
                Some(table.span.clone()),
                "ignored in mode \"static\": the agent does not talk to a cluster",
                "no [kubernetes] table, or mode = \"kubernetes\"",
            );
        }
        let kubeconfig = self.value(
            table,
            "kubeconfig",
            &k.kubeconfig,
            || None,
            |c, raw| c.absolute_path("kubernetes.kubeconfig", raw).map(Some),
        );
        let from_env = self
            .host
            .namespace_env
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let namespace = self.value(
            table,
            "namespace",
            &k.namespace,
            || from_env.unwrap_or_else(|| defaults::NAMESPACE.to_owned()),
            |c, raw| {
                let key = "kubernetes.namespace";
                match label_problem(raw.get_ref()) {
                    None => Some(raw.get_ref().clone()),
                    Some(problem) => {
                        c.report.error(key, Some(raw.span()), problem, allowed(key));
                        None
                    }
                }
            },
        );
        let kubeconfig = kubeconfig?;
        if mode == Some(Mode::Kubernetes) && kubeconfig.is_none() && !self.host.cluster_credentials
        {
            let key = "kubernetes.kubeconfig";
            self.report.error(
                key,
                table.map(|t| t.span.clone()),
                "Kubernetes mode (the default [agent].mode) needs a cluster: this is not a pod \
                 with a service account and $KUBECONFIG is unset",
                "a kubeconfig file in [kubernetes].kubeconfig, or mode = \"static\"",
            );
            return None;
        }
        Some(Kubernetes {
            kubeconfig,
            namespace: namespace?,
        })
    }

    /// `[api]`: `listen` an address with a port, or `""` for no API.
    fn api(&mut self, section: &Section<RawApi>) -> Option<Api> {
        let absent = RawApi::default();
        let (a, table) = contents(section, &absent)?;
        let listen = self.value(
            table,
            "listen",
            &a.listen,
            || Some(defaults::API_LISTEN),
            |c, raw| {
                let key = "api.listen";
                let text = raw.get_ref().trim();
                if text.is_empty() {
                    return Some(None);
                }
                let problem = match text.parse::<SocketAddr>() {
                    Ok(addr) if addr.port() == GATEWAY_API_PORT => {
                        c.report.warning(
                            key,
                            Some(raw.span()),
                            format!(
                                "port {GATEWAY_API_PORT} is egret-gateway's API port; an agent \
                                 and a gateway on one host cannot both listen there"
                            ),
                            allowed(key),
                        );
                        return Some(Some(addr));
                    }
                    Ok(addr) if addr.port() != 0 => return Some(Some(addr)),
                    Ok(_) => format!("{text:?} has port 0"),
                    Err(_) => format!("{text:?} is not an address:port"),
                };
                c.report.error(key, Some(raw.span()), problem, allowed(key));
                None
            },
        );
        Some(Api { listen: listen? })
    }

    /// The `[[policy]]` tables and the rules between them, the mode and the floating IPs.
    fn policies(
        &mut self,
        raw: &RawConfig,
        mode: Option<Mode>,
        floating_ips: Option<&[Ipv4Addr]>,
    ) -> Option<Vec<Policy>> {
        let tables: &[Option<Table<RawPolicy>>] = match &raw.policies {
            Policies::Absent => &[],
            Policies::Invalid => return None,
            Policies::Present(tables) => tables,
        };
        let raw_agent = present(&raw.agent);
        let mode_span = raw_agent.and_then(|a| a.mode.as_ref()).map(Spanned::span);
        match mode {
            Some(Mode::Kubernetes) if !tables.is_empty() => {
                let place = match &mode_span {
                    Some(span) => format!("line {}", self.report.line_of(Some(span.clone()))),
                    None => "the default".to_owned(),
                };
                let first = tables.iter().flatten().next().map(|t| t.span.clone());
                self.report.error(
                    "policy",
                    first,
                    format!(
                        "[[policy]] tables are only read in mode \"static\"; in mode \
                         \"kubernetes\" ({place}) policies come from the cluster's \
                         EgressNATPolicy resources"
                    ),
                    "mode = \"static\", or no [[policy]] table",
                );
            }
            Some(Mode::Static) if tables.is_empty() => self.report.warning(
                "policy",
                mode_span,
                "mode is \"static\" but there is no [[policy]] table: nothing will be tunnelled",
                "[[policy]] tables for the traffic that should leave through the gateways",
            ),
            _ => {}
        }

        let mut names = Seen::default();
        let mut parsed = Vec::with_capacity(tables.len());
        for (i, table) in tables.iter().enumerate() {
            let Some(table) = table else {
                parsed.push(None);
                continue;
            };
            let mut policy = self.policy(i, table);
            // Names are compared even when other keys of the policy are bad, so fixing
            // those does not reveal a new error.
            if let Some(name) = &table.value.name
                && object_name_problem(name.get_ref()).is_none()
                && let Some((j, first)) = names.first(name.get_ref().clone(), i, Some(name.span()))
            {
                let line = self.report.line_of(Some(first));
                self.report.error(
                    format!("policy[{i}].name"),
                    Some(name.span()),
                    format!(
                        "{:?} is already the name of policy[{j}] (line {line})",
                        name.get_ref()
                    ),
                    "a name no other [[policy]] has",
                );
                policy = None;
            }
            parsed.push(policy.map(|p| (p, table)));
        }

        if mode == Some(Mode::Static) {
            let valid: Vec<(usize, &Policy, &Table<RawPolicy>)> = parsed
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.as_ref().map(|(p, t)| (i, p, *t)))
                .collect();
            if let Some(floating_ips) = floating_ips {
                self.egress_ips_are_floating(raw, &valid, floating_ips);
            }
            self.egress_ips_are_unique(&valid);
        }
        parsed
            .into_iter()
            .map(|p| p.map(|(policy, _)| policy))
            .collect()
    }

    fn policy(&mut self, i: usize, table: &Table<RawPolicy>) -> Option<Policy> {
        let p = &table.value;
        let path = format!("policy[{i}]");
        let name = self
            .required(table, &path, "name", &p.name)
            .and_then(|raw| self.object_name(&format!("{path}.name"), raw));
        let sources = self
            .required(table, &path, "sources", &p.sources)
            .and_then(|raw| {
                self.prefix_list(
                    &format!("{path}.sources"),
                    raw,
                    Some("empty: the policy would select no pod"),
                )
            });
        let destination_cidrs = self
            .required(table, &path, "destination_cidrs", &p.destination_cidrs)
            .and_then(|raw| {
                self.prefix_list(
                    &format!("{path}.destination_cidrs"),
                    raw,
                    Some("empty: the policy would select no traffic"),
                )
            });
        let excluded_cidrs = self.value(
            Some(table),
            "excluded_cidrs",
            &p.excluded_cidrs,
            Vec::new,
            |c, raw| c.prefix_list(&format!("{path}.excluded_cidrs"), raw, None),
        );
        if let (Some(destinations), Some(excluded)) = (&destination_cidrs, &excluded_cidrs) {
            self.exclusions_inside_destinations(&path, destinations, excluded);
        }
        let egress_source_ip = self
            .required(table, &path, "egress_source_ip", &p.egress_source_ip)
            .and_then(|raw| self.unicast(&format!("{path}.egress_source_ip"), raw));
        Some(Policy {
            name: name?,
            sources: values(sources?),
            destination_cidrs: values(destination_cidrs?),
            excluded_cidrs: values(excluded_cidrs?),
            egress_source_ip: egress_source_ip?,
        })
    }

    // ---- rules between values ------------------------------------------------------

    /// A pod pattern that matches the agent's own devices would treat the uplink or the
    /// tunnel as pod traffic and loop it.
    fn pod_patterns_spare_own_interfaces(
        &mut self,
        raw: &RawConfig,
        agent: &Agent,
        tunnel: &Tunnel,
    ) {
        let raw_agent = present(&raw.agent);
        let raw_tunnel = present(&raw.tunnel);
        let written = raw_agent.and_then(|a| a.pod_interfaces.as_ref());
        let own = [
            (
                "tunnel.device",
                "the tunnel device",
                Some(&tunnel.device),
                raw_tunnel.and_then(|t| t.device.as_ref()),
            ),
            (
                "agent.interface",
                "the uplink",
                agent.interface.as_ref(),
                raw_agent.and_then(|a| a.interface.as_ref()),
            ),
        ];
        for (own_key, what, name, raw_name) in own {
            let Some(name) = name else { continue };
            for pattern in agent.pod_interfaces.iter().filter(|p| glob_match(p, name)) {
                let written_at = written.and_then(|list| {
                    list.get_ref()
                        .iter()
                        .enumerate()
                        .find(|(_, p)| p.get_ref() == pattern)
                });
                match written_at {
                    Some((i, raw_pattern)) => self.report.error(
                        format!("agent.pod_interfaces[{i}]"),
                        Some(raw_pattern.span()),
                        format!("{pattern:?} matches {name:?}, {what} ({own_key})"),
                        "patterns that match only the interfaces of pods",
                    ),
                    None => self.report.error(
                        own_key,
                        raw_name.map(Spanned::span),
                        format!("{name:?} matches the default pod_interfaces pattern {pattern:?}"),
                        "a name no [agent].pod_interfaces pattern matches",
                    ),
                }
            }
        }
        if agent.interface.as_ref() == Some(&tunnel.device) {
            self.report.error(
                "tunnel.device",
                raw_tunnel
                    .and_then(|t| t.device.as_ref())
                    .map(Spanned::span),
                format!("{:?} is also [agent].interface, the uplink", tunnel.device),
                "a name of its own for the agent's VXLAN device",
            );
        }
    }

    /// An excluded prefix outside every destination excludes nothing: probably a typo.
    fn exclusions_inside_destinations(
        &mut self,
        path: &str,
        destinations: &[Item<Prefix>],
        excluded: &[Item<Prefix>],
    ) {
        for item in excluded {
            if destinations.iter().any(|d| d.value.overlaps(item.value)) {
                continue;
            }
            self.report.warning(
                format!("{path}.excluded_cidrs[{}]", item.index),
                Some(item.span.clone()),
                format!(
                    "{} lies outside every destination_cidrs entry, so it excludes nothing",
                    item.value
                ),
                format!(
                    "prefixes inside destination_cidrs ({})",
                    list(destinations.iter().map(|d| d.value))
                ),
            );
        }
    }

    /// The running agent does not program a policy whose egress IP no gateway holds.
    fn egress_ips_are_floating(
        &mut self,
        raw: &RawConfig,
        policies: &[(usize, &Policy, &Table<RawPolicy>)],
        floating_ips: &[Ipv4Addr],
    ) {
        if policies.is_empty() {
            return;
        }
        if floating_ips.is_empty() {
            let raw_tunnel = present(&raw.tunnel);
            let written = raw_tunnel
                .and_then(|t| t.floating_ips.as_ref())
                .map(Spanned::span);
            let (state, span) = match written {
                Some(span) => ("empty", Some(span)),
                None => (
                    "not set",
                    match &raw.tunnel {
                        Section::Present(t) => Some(t.span.clone()),
                        _ => None,
                    },
                ),
            };
            self.report.warning(
                "tunnel.floating_ips",
                span,
                format!(
                    "{state}, so the policies' egress_source_ip are not checked against the \
                     gateways' floating IPs"
                ),
                "list the gateways' floating IPs, such as floating_ips = [\"192.168.1.100\"]",
            );
            return;
        }
        for (i, policy, table) in policies {
            if floating_ips.contains(&policy.egress_source_ip) {
                continue;
            }
            self.report.warning(
                format!("policy[{i}].egress_source_ip"),
                table.value.egress_source_ip.as_ref().map(Spanned::span),
                format!(
                    "{} is not among [tunnel].floating_ips: policy {:?} will not be programmed",
                    policy.egress_source_ip, policy.name
                ),
                format!("one of the floating IPs: {}", list(floating_ips.iter())),
            );
        }
    }

    /// Two policies with one egress IP conflict; the older wins, and in a file the older is
    /// the one listed first.
    fn egress_ips_are_unique(&mut self, policies: &[(usize, &Policy, &Table<RawPolicy>)]) {
        let mut seen: HashMap<Ipv4Addr, (usize, &str, Option<Range<usize>>)> = HashMap::new();
        for (i, policy, table) in policies {
            let span = table.value.egress_source_ip.as_ref().map(Spanned::span);
            let Some((j, older, older_span)) = seen.get(&policy.egress_source_ip) else {
                seen.insert(policy.egress_source_ip, (*i, &policy.name, span));
                continue;
            };
            let line = match older_span {
                Some(s) => format!(", line {}", self.report.line_of(Some(s.clone()))),
                None => String::new(),
            };
            self.report.warning(
                format!("policy[{i}].egress_source_ip"),
                span,
                format!(
                    "{} is also the egress_source_ip of the older policy {older:?} \
                     (policy[{j}]{line}): policy {:?} will not be programmed",
                    policy.egress_source_ip, policy.name
                ),
                "one policy per egress IP (the one listed first is the older and wins): \
                 merge the two, or give this one another floating IP",
            );
        }
    }

    // ---- values --------------------------------------------------------------------

    /// `[agent].node_name`, else `$NODE_NAME`, else the host name. In Kubernetes mode it
    /// must be a valid Node name, since the agent looks its Node up by it.
    fn node_name(
        &mut self,
        a: &RawAgent,
        table: Option<&Table<RawAgent>>,
        mode: Option<Mode>,
    ) -> Option<String> {
        let key = "agent.node_name";
        let check = |name: &str| match mode {
            Some(Mode::Kubernetes) => object_name_problem(name),
            _ => plain_name_problem(name),
        };
        let written = key_of(table, "node_name", &a.node_name)?;
        if let Some(raw) = written {
            return match check(raw.get_ref()) {
                None => Some(raw.get_ref().clone()),
                Some(problem) => {
                    self.report
                        .error(key, Some(raw.span()), problem, allowed(key));
                    None
                }
            };
        }
        let non_blank = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        // The kubelet lowercases the host name it registers the Node with; do the same so
        // the default finds the Node.
        let (source, name) = match (
            non_blank(&self.host.node_name_env),
            non_blank(&self.host.hostname),
        ) {
            (Some(env), _) => ("$NODE_NAME", env),
            (None, Some(host)) => ("the host name", host.to_lowercase()),
            (None, None) => {
                self.report.error(
                    key,
                    table.map(|t| t.span.clone()),
                    "not set, and neither $NODE_NAME nor the host name gives one",
                    allowed(key),
                );
                return None;
            }
        };
        match check(&name) {
            None => Some(name),
            Some(problem) => {
                self.report.error(
                    key,
                    table.map(|t| t.span.clone()),
                    format!("not set, and {source} does not fit: {problem}"),
                    allowed(key),
                );
                None
            }
        }
    }

    fn interface_name(&mut self, key: &str, raw: &Spanned<String>) -> Option<String> {
        let name = raw.get_ref();
        let problem = ifname_problem(name).or_else(|| {
            name.chars().find(|c| matches!(c, '*' | '?')).map(|c| {
                format!("{name:?} contains {c:?}: this key takes one interface name, not a pattern")
            })
        });
        match problem {
            None => Some(name.clone()),
            Some(problem) => {
                self.report
                    .error(key, Some(raw.span()), problem, allowed(key));
                None
            }
        }
    }

    fn pod_patterns(&mut self, raw: &RawList) -> Option<Vec<String>> {
        let key = "agent.pod_interfaces";
        if raw.get_ref().is_empty() {
            self.report.error(
                key,
                Some(raw.span()),
                "empty: the agent would see no pod traffic",
                allowed(key),
            );
            return None;
        }
        let items = self.list(key, raw, |_, pattern| {
            let problem = ifname_problem(pattern).or_else(|| {
                pattern
                    .chars()
                    .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
                    .map(|c| format!("{pattern:?} contains {c:?}; patterns know only '*' and '?'"))
            });
            match problem {
                None => Ok(pattern.to_owned()),
                Some(problem) => Err((problem, allowed(&format!("{key}[]")).to_owned())),
            }
        })?;
        Some(values(items))
    }

    fn absolute_path(&mut self, key: &str, raw: &Spanned<String>) -> Option<PathBuf> {
        let path = Path::new(raw.get_ref());
        if path.is_absolute() {
            return Some(path.to_owned());
        }
        self.report.error(
            key,
            Some(raw.span()),
            format!("{:?} is not an absolute path", raw.get_ref()),
            allowed(key),
        );
        None
    }

    fn fwmark(&mut self, raw: &Spanned<i64>) -> Option<u32> {
        let key = "agent.fwmark";
        let mark: u32 = self.int(key, raw, 1..=i64::from(u32::MAX))?;
        if mark & KUBE_PROXY_MARKS != 0 {
            self.report.warning(
                key,
                Some(raw.span()),
                format!(
                    "{mark:#x} shares bits with kube-proxy's masquerade (0x4000) and drop \
                     (0x8000) marks"
                ),
                format!(
                    "a mark clear of 0xc000, such as the default {:#010x}",
                    defaults::FWMARK
                ),
            );
        }
        Some(mark)
    }

    fn route_table(&mut self, raw: &Spanned<i64>) -> Option<u32> {
        let key = "agent.route_table";
        let table: u32 = self.int(key, raw, 1..=i64::from(u32::MAX))?;
        match RESERVED_TABLES.iter().find(|(t, _)| *t == *raw.get_ref()) {
            None => Some(table),
            Some((_, what)) => {
                self.report.error(
                    key,
                    Some(raw.span()),
                    format!("{table} is {what}"),
                    allowed(key),
                );
                None
            }
        }
    }

    fn tunnel_port(&mut self, raw: &Spanned<i64>) -> Option<u16> {
        let port = self.int("tunnel.port", raw, 1..=65535)?;
        if let Some((_, used_by)) = CNI_PORTS.iter().find(|(p, _)| *p == port) {
            self.report.warning(
                "tunnel.port",
                Some(raw.span()),
                format!("{port} is {used_by}; nodes running that CNI cannot also use it for egret"),
                format!("a port no CNI uses, such as {}", defaults::TUNNEL_PORT),
            );
        }
        Some(port)
    }

    fn floating_ips(&mut self, raw: &RawList) -> Option<Vec<Ipv4Addr>> {
        let key = "tunnel.floating_ips";
        let items = self.list(key, raw, |_, text| {
            unicast_problem(text)
                .map_err(|problem| (problem, allowed(&format!("{key}[]")).to_owned()))
        })?;
        let mut seen = Seen::default();
        let mut valid = true;
        for item in &items {
            if let Some((j, first)) = seen.first(item.value, item.index, Some(item.span.clone())) {
                let line = self.report.line_of(Some(first));
                self.report.error(
                    format!("{key}[{}]", item.index),
                    Some(item.span.clone()),
                    format!(
                        "{} is already listed as {key}[{j}] (line {line})",
                        item.value
                    ),
                    "each floating IP once",
                );
                valid = false;
            }
        }
        valid.then(|| values(items))
    }

    /// A list of prefixes, each canonical; a repeat is reported as a warning and dropped.
    /// `empty`: the problem of an empty list, when one is an error.
    fn prefix_list(
        &mut self,
        key: &str,
        raw: &RawList,
        empty: Option<&str>,
    ) -> Option<Vec<Item<Prefix>>> {
        if let Some(problem) = empty
            && raw.get_ref().is_empty()
        {
            self.report
                .error(key, Some(raw.span()), problem, allowed(key));
            return None;
        }
        let items = self.list(key, raw, |key, text| {
            text.parse::<Prefix>().map_err(|error| {
                let allowed = match &error {
                    PrefixError::HostBits(prefix) => format!(
                        "the prefix \"{prefix}\", or the address alone as \"{text_addr}/32\"",
                        text_addr = text.split_once('/').map_or(text, |(a, _)| a)
                    ),
                    _ => allowed(key).to_owned(),
                };
                (format!("{text:?}: {error}"), allowed)
            })
        })?;
        let mut seen = Seen::default();
        let mut unique = Vec::with_capacity(items.len());
        for item in items {
            match seen.first(item.value, item.index, Some(item.span.clone())) {
                None => unique.push(item),
                Some((j, first)) => {
                    let line = self.report.line_of(Some(first));
                    self.report.warning(
                        format!("{key}[{}]", item.index),
                        Some(item.span),
                        format!(
                            "{} is already listed as {key}[{j}] (line {line}); the repeat is \
                             ignored",
                            item.value
                        ),
                        "each prefix once",
                    );
                }
            }
        }
        Some(unique)
    }

    /// `[[policy]]` names follow Kubernetes object names, so a static policy can become an
    /// `EgressNATPolicy` unchanged.
    fn object_name(&mut self, key: &str, raw: &Spanned<String>) -> Option<String> {
        match object_name_problem(raw.get_ref()) {
            None => Some(raw.get_ref().clone()),
            Some(problem) => {
                self.report
                    .error(key, Some(raw.span()), problem, allowed(key));
                None
            }
        }
    }

    fn unicast(&mut self, key: &str, raw: &Spanned<String>) -> Option<Ipv4Addr> {
        match unicast_problem(raw.get_ref()) {
            Ok(address) => Some(address),
            Err(problem) => {
                self.report
                    .error(key, Some(raw.span()), problem, allowed(key));
                None
            }
        }
    }

    // ---- helpers -------------------------------------------------------------------

    /// The effective value of an optional key of `table`: its default when absent, `check`
    /// of it when written, `None` when invalid (reported by `check`, or set aside and
    /// reported while parsing).
    fn value<R, T, U>(
        &mut self,
        table: Option<&Table<U>>,
        name: &str,
        raw: &Option<R>,
        default: impl FnOnce() -> T,
        check: impl FnOnce(&mut Self, &R) -> Option<T>,
    ) -> Option<T> {
        match key_of(table, name, raw)? {
            None => Some(default()),
            Some(raw) => check(self, raw),
        }
    }

    /// A required key of `table`; reports it at the table's header when missing.
    fn required<'a, R, U>(
        &mut self,
        table: &Table<U>,
        path: &str,
        name: &str,
        raw: &'a Option<R>,
    ) -> Option<&'a R> {
        if raw.is_none() && !table.set_aside(name) {
            let key = format!("{path}.{name}");
            self.report.error(
                &key,
                Some(table.span.clone()),
                "missing required key",
                allowed(&key),
            );
        }
        raw.as_ref()
    }

    fn int<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        raw: &Spanned<i64>,
        range: RangeInclusive<i64>,
    ) -> Option<T> {
        let value = *raw.get_ref();
        if range.contains(&value) {
            return T::try_from(value).ok();
        }
        self.report.error(
            key,
            Some(raw.span()),
            format!("{value} is out of range"),
            allowed(key),
        );
        None
    }

    /// Each element of a list through `parse`, which returns the problem and what is
    /// allowed; every bad element is reported. `None` if any was bad.
    fn list<T>(
        &mut self,
        key: &str,
        raw: &RawList,
        parse: impl Fn(&str, &str) -> Result<T, (String, String)>,
    ) -> Option<Vec<Item<T>>> {
        let mut items = Vec::with_capacity(raw.get_ref().len());
        let mut valid = true;
        for (index, element) in raw.get_ref().iter().enumerate() {
            let element_key = format!("{key}[{index}]");
            match parse(&format!("{key}[]"), element.get_ref()) {
                Ok(value) => items.push(Item {
                    index,
                    value,
                    span: element.span(),
                }),
                Err((problem, allowed)) => {
                    self.report
                        .error(element_key, Some(element.span()), problem, allowed);
                    valid = false;
                }
            }
        }
        valid.then_some(items)
    }
}

/// A section's contents and its table; `absent` (every key unset) and no table when the
/// section is not in the file; `None` when the section is invalid as a whole.
fn contents<'a, T>(
    section: &'a Section<T>,
    absent: &'a T,
) -> Option<(&'a T, Option<&'a Table<T>>)> {
    match section {
        Section::Present(table) => Some((&table.value, Some(table))),
        Section::Absent => Some((absent, None)),
        Section::Invalid => None,
    }
}

/// The contents of a present section.
fn present<T>(section: &Section<T>) -> Option<&T> {
    match section {
        Section::Present(table) => Some(&table.value),
        _ => None,
    }
}

/// `Some(value)` for a key written or absent; `None` for one already reported and set
/// aside while parsing.
fn key_of<'a, R, U>(
    table: Option<&Table<U>>,
    name: &str,
    raw: &'a Option<R>,
) -> Option<Option<&'a R>> {
    match raw {
        Some(raw) => Some(Some(raw)),
        None if table.is_some_and(|t| t.set_aside(name)) => None,
        None => Some(None),
    }
}

fn values<T>(items: Vec<Item<T>>) -> Vec<T> {
    items.into_iter().map(|item| item.value).collect()
}

/// Values already seen, with the index and span of their first occurrence.
struct Seen<T>(HashMap<T, (usize, Option<Range<usize>>)>);

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen(HashMap::new())
    }
}

impl<T: Eq + Hash> Seen<T> {
    /// Records `value` at `index`; returns where it was first seen if this is a repeat (a
    /// repeat without a span of its first occurrence points at line 1).
    fn first(
        &mut self,
        value: T,
        index: usize,
        span: Option<Range<usize>>,
    ) -> Option<(usize, Range<usize>)> {
        match self.0.get(&value) {
            Some((j, first)) => Some((*j, first.clone().unwrap_or(0..0))),
            None => {
                self.0.insert(value, (index, span));
                None
            }
        }
    }
}

/// Why `name` is not a Linux interface name, if it is not one.
fn ifname_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty".to_owned());
    }
    if name.len() > IFNAME_MAX {
        return Some(format!(
            "{name:?} is {} bytes long; Linux interface names have at most {IFNAME_MAX}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not a valid interface name"));
    }
    name.chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace())
        .map(|c| format!("{name:?} contains {c:?}, which Linux does not allow in interface names"))
}

/// Why `name` is not a Kubernetes object name (an RFC 1123 DNS subdomain), if it is not one.
fn object_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("empty".to_owned());
    }
    if name.len() > NAME_MAX {
        return Some(format!("{} characters long", name.chars().count()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.'))
    {
        return Some(format!("{name:?} contains {c:?}"));
    }
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name
        .split('.')
        .any(|part| !alphanumeric(part.chars().next()) || !alphanumeric(part.chars().last()))
    {
        return Some(format!(
            "{name:?} has a part that does not start and end with a letter or digit"
        ));
    }
    None
}

/// Why `name` is not a namespace name (an RFC 1123 DNS label), if it is not one.
fn label_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 63 {
        return Some(format!("{name:?} is not 1 to 63 characters long"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Some(format!("{name:?} contains {c:?}"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Some(format!("{name:?} starts or ends with '-'"));
    }
    None
}

/// Why `name` cannot name a node outside Kubernetes, if it cannot.
fn plain_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("empty".to_owned());
    }
    if name.len() > NAME_MAX {
        return Some(format!("{} characters long", name.chars().count()));
    }
    name.chars()
        .find(|c| c.is_whitespace() || c.is_control())
        .map(|c| format!("{name:?} contains {c:?}"))
}

/// `text` as a unicast IPv4 address, or why it is not one.
fn unicast_problem(text: &str) -> Result<Ipv4Addr, String> {
    let address: Ipv4Addr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 address"))?;
    let what = if address.is_unspecified() {
        "the unspecified address"
    } else if address.is_broadcast() {
        "the broadcast address"
    } else if address.is_multicast() {
        "a multicast address"
    } else if address.is_loopback() {
        "a loopback address"
    } else {
        return Ok(address);
    };
    Err(format!("{address} is {what}, not a unicast address"))
}

fn list<T: Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{Diagnostic, Severity};
    use super::*;

    /// STATIC with `from` replaced by `to` (which must occur).
    fn edit(from: &str, to: &str) -> String {
        assert!(STATIC.contains(from), "{from:?} not in STATIC");
        STATIC.replacen(from, to, 1)
    }

    /// `[agent]` with these lines, and nothing else.
    fn agent(lines: &str) -> String {
        format!("[agent]\n{lines}\n")
    }

    fn tunnel(lines: &str) -> String {
        format!("[tunnel]\n{lines}\n")
    }

    fn rendered(diagnostics: &[Diagnostic]) -> Vec<String> {
        diagnostics.iter().map(Diagnostic::to_string).collect()
    }

    #[test]
    fn the_static_fixture_is_valid_without_warnings() {
        let checked = accept(STATIC);
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        let policies = checked.config.policies;
        assert_eq!(policies.len(), 2);
        assert_eq!(policies[1].name, "bob");
        assert_eq!(
            policies[1].sources,
            prefixes(&["10.10.2.0/24", "10.10.3.7/32"])
        );
        assert_eq!(policies[1].excluded_cidrs, prefixes(&["10.0.0.0/8"]));
        assert_eq!(
            policies[1].egress_source_ip,
            Ipv4Addr::new(192, 168, 1, 101)
        );
    }

    // ---- keys and types ------------------------------------------------------------

    #[test]
    fn unknown_key_is_refused_with_its_line_and_the_valid_keys() {
        let text = agent("mode = \"static\"\nnodename = \"n1\"");
        let e = assert_error(&text, "agent.nodename", "nodename");
        assert_eq!(
            e.to_string(),
            "3:1: error: agent.nodename: unknown key; allowed: one of `node_name`, `mode`, \
             `interface`, `pod_interfaces`, `pin_path`, `state_dir`, `fwmark`, `route_table`, \
             `rule_priority`"
        );
    }

    #[test]
    fn every_unknown_key_of_a_table_is_reported_and_its_other_keys_still_checked() {
        let text = agent("colour = 1\nfwmark = 0\nsize = 2\nmode = \"kubernetes\"");
        let diagnostics = refuse(&text);
        let found: Vec<(&str, usize, &str)> = diagnostics
            .iter()
            .map(|d| (d.key.as_str(), d.line, d.problem.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("agent.colour", 2, "unknown key"),
                ("agent.fwmark", 3, "0 is out of range"),
                ("agent.size", 4, "unknown key"),
            ]
        );
    }

    #[test]
    fn unknown_key_in_a_policy_names_its_index() {
        let text = edit(
            "egress_source_ip = \"192.168.1.101\"",
            "egress_source_ip = \"192.168.1.101\"\ncolour = \"red\"",
        );
        let e = assert_error(&text, "policy[1].colour", "colour");
        assert_eq!(e.problem, "unknown key");
        assert!(e.allowed.contains("`excluded_cidrs`"), "{}", e.allowed);
    }

    #[test]
    fn the_api_listens_on_loopback_by_default_and_can_be_moved_or_turned_off() {
        assert_eq!(
            accept("").config.api.listen,
            Some("127.0.0.1:9478".parse().expect("address"))
        );
        assert_eq!(
            accept("[api]\nlisten = \"[::]:19478\"\n").config.api.listen,
            Some("[::]:19478".parse().expect("address"))
        );
        assert_eq!(accept("[api]\nlisten = \"\"\n").config.api.listen, None);
        let e = assert_error(
            "[agent]\nmode = \"static\"\n\n[api]\nlisten = \"127.0.0.1\"\n",
            "api.listen",
            "\"127.0.0.1\"",
        );
        assert_eq!(
            e.to_string(),
            "5:10: error: api.listen: \"127.0.0.1\" is not an address:port; allowed: a socket \
             address with a non-zero port, such as \"127.0.0.1:9478\" (the default), or \"\" \
             for no API"
        );
        let e = assert_error(
            "[api]\nlisten = \"0.0.0.0:0\"\n",
            "api.listen",
            "\"0.0.0.0:0\"",
        );
        assert_eq!(e.problem, "\"0.0.0.0:0\" has port 0");
        assert_error("[api]\nlisten = 9478\n", "api.listen", "9478");
        assert_error("[api]\nport = 9478\n", "api.port", "port");
        // The gateway's port works, with a word of warning.
        assert_warning(
            "[api]\nlisten = \"127.0.0.1:9477\"\n",
            "api.listen",
            "\"127.0.0.1:9477\"",
        );
    }

    #[test]
    fn the_kubernetes_table_names_a_kubeconfig_and_the_leases_namespace() {
        let config =
            accept("[kubernetes]\nkubeconfig = \"/etc/egret/kubeconfig\"\nnamespace = \"egret\"\n")
                .config;
        assert_eq!(
            config.kubernetes.kubeconfig.as_deref(),
            Some(Path::new("/etc/egret/kubeconfig"))
        );
        assert_eq!(config.kubernetes.namespace, "egret");
        assert_error(
            "[kubernetes]\nkubeconfig = \"kubeconfig\"\n",
            "kubernetes.kubeconfig",
            "\"kubeconfig\"",
        );
        for bad in ["Egret", "-egret", "egret.system", ""] {
            assert_error(
                &format!("[kubernetes]\nnamespace = {bad:?}\n"),
                "kubernetes.namespace",
                &format!("{bad:?}"),
            );
        }
        assert_warning(
            "[agent]\nmode = \"static\"\n[kubernetes]\n",
            "kubernetes",
            "[kubernetes]",
        );
        // The DaemonSet's $POD_NAMESPACE is the default.
        let host = HostFacts {
            namespace_env: Some("egret".to_owned()),
            ..super::super::fixtures::host()
        };
        let config = Config::parse("", &host).expect("valid").config;
        assert_eq!(config.kubernetes.namespace, "egret");
    }

    #[test]
    fn unknown_section_and_stray_top_level_key_are_refused() {
        let text = "mode = \"static\"\n\n[agnet]\nnode_name = \"x\"\n";
        let lines = rendered(&refuse(text));
        assert_eq!(
            lines,
            [
                "1:1: error: mode: unknown key outside any section; allowed: the sections \
                 [agent], [tunnel], [masquerade], [kubernetes], [api] and [[policy]]",
                "3:2: error: agnet: unknown section; allowed: the sections [agent], [tunnel], \
                 [masquerade], [kubernetes], [api] and [[policy]]",
            ]
        );
    }

    #[test]
    fn wrong_type_is_refused_with_the_schema() {
        let text = tunnel("vni = 2\nport = \"4800\"");
        let e = assert_error(&text, "tunnel.port", "\"4800\"");
        assert_eq!(
            e.to_string(),
            "3:8: error: tunnel.port: invalid type: string \"4800\"; allowed: a UDP port \
             1..=65535 (default 4800)"
        );
        let text = "[masquerade]\nmasquerade_link_local = \"yes\"\n";
        assert_error(text, "masquerade.masquerade_link_local", "\"yes\"");
        let text = "agent = \"static\"\n";
        let e = assert_error(text, "agent", "\"static\"");
        assert_eq!(e.allowed, "an [agent] table");
    }

    #[test]
    fn wrong_type_in_a_list_names_the_element() {
        let text = edit(
            "sources = [\"10.10.2.0/24\", \"10.10.3.7/32\"]",
            "sources = [\n  \"10.10.2.0/24\",\n  24,\n]",
        );
        let e = assert_error(&text, "policy[1].sources[1]", "24,");
        assert!(e.problem.contains("invalid type: integer"), "{}", e.problem);
        // Set aside, the key is not also reported as missing.
        assert_eq!(refuse(&text).len(), 1, "{:?}", refuse(&text));
    }

    #[test]
    fn syntax_error_is_one_error_with_its_line_and_column() {
        let text = edit("name = \"bob\"", "name = = \"bob\"");
        let diagnostics = refuse(&text);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        let d = &diagnostics[0];
        assert_eq!((d.line, d.column), (line_of(&text, "= = "), 8));
        assert!(d.problem.starts_with("TOML syntax: "), "{}", d.problem);
        let text = "[agent]\nmode = \"static\"\nmode = \"static\"\n";
        let d = &refuse(text)[0];
        assert_eq!(
            (d.line, d.problem.as_str()),
            (3, "TOML syntax: duplicate key")
        );
    }

    #[test]
    fn a_single_policy_table_is_refused() {
        let text = "[agent]\nmode = \"static\"\n\n[policy]\nname = \"a\"\n";
        let e = assert_error(text, "policy", "[policy]");
        assert_eq!(e.problem, "a single [policy] table");
        assert!(e.allowed.contains("[[policy]]"), "{}", e.allowed);
    }

    #[test]
    fn missing_required_keys_are_all_reported_at_the_table() {
        let text = edit(
            "[[policy]]\nname = \"bob\"\nsources = [\"10.10.2.0/24\", \"10.10.3.7/32\"]\n\
             destination_cidrs = [\"0.0.0.0/0\"]\n",
            "[[policy]] # second\nname = \"bob\"\n",
        );
        let line = line_of(&text, "[[policy]] # second");
        let diagnostics = refuse(&text);
        let found: Vec<(&str, usize, &str)> = diagnostics
            .iter()
            .map(|d| (d.key.as_str(), d.line, d.problem.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("policy[1].sources", line, "missing required key"),
                ("policy[1].destination_cidrs", line, "missing required key"),
            ]
        );
        let text = "[agent]\nmode = \"static\"\n\n[[policy]]\n";
        let keys: Vec<String> = refuse(text).into_iter().map(|d| d.key).collect();
        assert_eq!(
            keys,
            [
                "policy[0].name",
                "policy[0].sources",
                "policy[0].destination_cidrs",
                "policy[0].egress_source_ip"
            ]
        );
    }

    // ---- [agent] -------------------------------------------------------------------

    #[test]
    fn mode_must_be_kubernetes_or_static() {
        let e = assert_error(&agent("mode = \"Static\""), "agent.mode", "Static");
        assert_eq!(
            e.to_string(),
            "2:8: error: agent.mode: \"Static\" is not a mode; allowed: \"kubernetes\" \
             (policies from the cluster, the default) or \"static\""
        );
    }

    #[test]
    fn node_name_must_be_a_node_name_in_kubernetes_mode_only() {
        let e = assert_error(
            &agent("node_name = \"Node_1\""),
            "agent.node_name",
            "Node_1",
        );
        assert_eq!(e.problem, "\"Node_1\" contains 'N'");
        let config = accept(&agent("node_name = \"Node_1\"\nmode = \"static\"")).config;
        assert_eq!(config.agent.node_name, "Node_1");
        assert_error(
            &agent("node_name = \"a b\"\nmode = \"static\""),
            "agent.node_name",
            "a b",
        );
        // A default that does not fit is reported at the table, saying where it came from.
        let host = HostFacts {
            node_name_env: Some("node_1".to_owned()),
            hostname: None,
            namespace_env: None,
            cluster_credentials: true,
        };
        let error = Config::parse("[agent]\nfwmark = 1\n", &host).expect_err("bad default");
        assert_eq!(
            error.diagnostics()[0].to_string(),
            "1:1: error: agent.node_name: not set, and $NODE_NAME does not fit: \"node_1\" \
             contains '_'; allowed: this node's name as the cluster knows it: lowercase \
             letters, digits, '-' and '.', at most 253 characters (default: $NODE_NAME, then \
             the host name)"
        );
    }

    #[test]
    fn interface_names_follow_linux_rules() {
        for (bad, problem) in [
            ("", "empty"),
            (
                "eth0/1",
                "\"eth0/1\" contains '/', which Linux does not allow in interface names",
            ),
            (
                "eth 0",
                "\"eth 0\" contains ' ', which Linux does not allow in interface names",
            ),
            (
                "eth0:1",
                "\"eth0:1\" contains ':', which Linux does not allow in interface names",
            ),
            (
                "0123456789abcdef",
                "\"0123456789abcdef\" is 16 bytes long; Linux interface names have at most 15",
            ),
            ("..", "\"..\" is not a valid interface name"),
            (
                "eth*",
                "\"eth*\" contains '*': this key takes one interface name, not a pattern",
            ),
        ] {
            let text = agent(&format!("interface = \"{bad}\""));
            let e = assert_error(&text, "agent.interface", "interface");
            assert_eq!(e.problem, problem);
            let text = tunnel(&format!("device = \"{bad}\""));
            let e = assert_error(&text, "tunnel.device", "device");
            assert_eq!(e.problem, problem);
        }
        let config = accept(&agent("interface = \"0123456789abcde\"")).config;
        assert_eq!(config.agent.interface.as_deref(), Some("0123456789abcde"));
    }

    #[test]
    fn pod_interfaces_must_be_a_non_empty_list_of_patterns() {
        let e = assert_error(&agent("pod_interfaces = []"), "agent.pod_interfaces", "[]");
        assert_eq!(e.problem, "empty: the agent would see no pod traffic");
        let text = agent("pod_interfaces = [\"veth*\", \"eth[0-9]\", \"a/b\", \"tap?\"]");
        let lines = rendered(&refuse(&text));
        assert_eq!(
            lines,
            [
                "2:28: error: agent.pod_interfaces[1]: \"eth[0-9]\" contains '['; patterns know \
                 only '*' and '?'; allowed: an interface name pattern of 1 to 15 characters \
                 without '/', ':' or whitespace, where '*' matches any run of characters and \
                 '?' one character",
                "2:40: error: agent.pod_interfaces[2]: \"a/b\" contains '/', which Linux does \
                 not allow in interface names; allowed: an interface name pattern of 1 to 15 \
                 characters without '/', ':' or whitespace, where '*' matches any run of \
                 characters and '?' one character",
            ]
        );
        let config = accept(&agent("pod_interfaces = [\"tap?\", \"vnet*\"]")).config;
        assert_eq!(config.agent.pod_interfaces, ["tap?", "vnet*"]);
    }

    #[test]
    fn pod_patterns_must_not_match_the_agents_own_interfaces() {
        let text = agent("interface = \"eth0\"\npod_interfaces = [\"veth*\", \"e*\"]");
        let lines = rendered(&refuse(&text));
        assert_eq!(
            lines,
            [
                "3:28: error: agent.pod_interfaces[1]: \"e*\" matches \"egret0\", the tunnel \
                 device (tunnel.device); allowed: patterns that match only the interfaces of pods",
                "3:28: error: agent.pod_interfaces[1]: \"e*\" matches \"eth0\", the uplink \
                 (agent.interface); allowed: patterns that match only the interfaces of pods",
            ]
        );
        // A default pattern is reported at the name it catches.
        let e = assert_error(
            &tunnel("device = \"veth-egret\""),
            "tunnel.device",
            "veth-egret",
        );
        assert_eq!(
            e.problem,
            "\"veth-egret\" matches the default pod_interfaces pattern \"veth*\""
        );
        // The uplink cannot be the tunnel device either.
        let text = format!(
            "{}\n{}",
            agent("interface = \"eth0\""),
            tunnel("device = \"eth0\"")
        );
        let e = assert_error(&text, "tunnel.device", "device");
        assert_eq!(e.problem, "\"eth0\" is also [agent].interface, the uplink");
    }

    #[test]
    fn paths_must_be_absolute() {
        let text = agent("pin_path = \"sys/fs/bpf\"\nstate_dir = \"\"");
        let lines = rendered(&refuse(&text));
        assert_eq!(
            lines,
            [
                "2:12: error: agent.pin_path: \"sys/fs/bpf\" is not an absolute path; allowed: \
                 an absolute path on a BPF file system (default \"/sys/fs/bpf/egret\")",
                "3:13: error: agent.state_dir: \"\" is not an absolute path; allowed: an \
                 absolute path (default \"/run/egret\")",
            ]
        );
    }

    #[test]
    fn fwmark_is_a_non_zero_u32() {
        for bad in ["0", "0x100000000", "-1"] {
            let e = assert_error(&agent(&format!("fwmark = {bad}")), "agent.fwmark", "fwmark");
            assert!(e.problem.ends_with("is out of range"), "{}", e.problem);
            assert_eq!(
                e.allowed,
                "a non-zero 32-bit integer, such as 0x00100000 (the default)"
            );
        }
        assert_eq!(
            accept(&agent("fwmark = 0xffff0000")).config.agent.fwmark,
            0xffff_0000
        );
        assert_eq!(accept(&agent("fwmark = 7")).config.agent.fwmark, 7);
    }

    #[test]
    fn fwmark_on_kube_proxys_bits_is_a_warning() {
        let w = assert_warning(&agent("fwmark = 0x4000"), "agent.fwmark", "fwmark");
        assert_eq!(
            w.to_string(),
            "2:10: warning: agent.fwmark: 0x4000 shares bits with kube-proxy's masquerade \
             (0x4000) and drop (0x8000) marks; recommended: a mark clear of 0xc000, such as \
             the default 0x00100000"
        );
    }

    #[test]
    fn route_table_avoids_the_kernels_tables() {
        for (bad, problem) in [
            ("0", "0 is out of range"),
            ("4294967296", "4294967296 is out of range"),
            ("253", "253 is the kernel's default table"),
            ("254", "254 is the main table"),
            ("255", "255 is the local table"),
        ] {
            let text = agent(&format!("route_table = {bad}"));
            let e = assert_error(&text, "agent.route_table", "route_table");
            assert_eq!(e.problem, problem);
            assert!(e.allowed.contains("1..=4294967295"), "{}", e.allowed);
        }
        for good in [1, 252, 256, 4_294_967_295] {
            let text = agent(&format!("route_table = {good}"));
            assert_eq!(accept(&text).config.agent.route_table, good);
        }
    }

    #[test]
    fn rule_priority_leaves_room_for_two_rules_before_main() {
        for bad in ["0", "32765", "32766", "-5"] {
            let text = agent(&format!("rule_priority = {bad}"));
            let e = assert_error(&text, "agent.rule_priority", "rule_priority");
            assert_eq!(e.problem, format!("{bad} is out of range"));
            assert!(
                e.allowed.starts_with("an integer 1..=32764"),
                "{}",
                e.allowed
            );
        }
        for good in [1, 32764] {
            let text = agent(&format!("rule_priority = {good}"));
            assert_eq!(accept(&text).config.agent.rule_priority, good);
        }
    }

    // ---- [tunnel] and [masquerade] -------------------------------------------------

    #[test]
    fn tunnel_port_and_vni_are_range_checked() {
        for bad in ["0", "65536"] {
            let e = assert_error(&tunnel(&format!("port = {bad}")), "tunnel.port", "port");
            assert_eq!(e.allowed, "a UDP port 1..=65535 (default 4800)");
        }
        for bad in ["-1", "16777216"] {
            let e = assert_error(&tunnel(&format!("vni = {bad}")), "tunnel.vni", "vni");
            assert_eq!(e.allowed, "an integer 0..=16777215 (24 bits; default 1)");
        }
        let config = accept(&tunnel("port = 65535\nvni = 16777215")).config;
        assert_eq!((config.tunnel.port, config.tunnel.vni), (65535, 16_777_215));
        assert_eq!(accept(&tunnel("vni = 0")).config.tunnel.vni, 0);
    }

    #[test]
    fn a_cni_tunnel_port_is_a_warning() {
        let w = assert_warning(&tunnel("port = 8472"), "tunnel.port", "8472");
        assert!(w.problem.contains("flannel"), "{}", w.problem);
    }

    #[test]
    fn floating_ips_are_unicast_and_listed_once() {
        let text = tunnel(
            "floating_ips = [\n  \"192.168.1.100\",\n  \"224.0.0.18\",\n  \"gw1\",\n  \
             \"192.168.1.100\",\n]",
        );
        let lines = rendered(&refuse(&text));
        assert_eq!(
            lines,
            [
                "4:3: error: tunnel.floating_ips[1]: 224.0.0.18 is a multicast address, not a \
                 unicast address; allowed: a unicast IPv4 address, listed once",
                "5:3: error: tunnel.floating_ips[2]: \"gw1\" is not an IPv4 address; allowed: \
                 a unicast IPv4 address, listed once",
            ]
        );
        let text = tunnel("floating_ips = [\"192.168.1.100\",\n  \"192.168.1.100\"]");
        let e = assert_error(&text, "tunnel.floating_ips[1]", "  \"192.168.1.100\"");
        assert_eq!(
            e.problem,
            "192.168.1.100 is already listed as tunnel.floating_ips[0] (line 2)"
        );
    }

    #[test]
    fn non_masquerade_cidrs_may_be_empty_and_are_canonical() {
        let text = "[masquerade]\nnon_masquerade_cidrs = []\nmasquerade_link_local = true\n";
        let masquerade = accept(text).config.masquerade;
        assert!(masquerade.non_masquerade_cidrs.is_empty());
        assert!(masquerade.masquerade_link_local);
        let text =
            "[masquerade]\nnon_masquerade_cidrs = [\"10.1.2.3/8\", \"10.0.0.0/33\", \"10/8\"]\n";
        let lines = rendered(&refuse(text));
        assert_eq!(
            lines,
            [
                "2:25: error: masquerade.non_masquerade_cidrs[0]: \"10.1.2.3/8\": host bits are \
                 set; the prefix is 10.0.0.0/8; allowed: the prefix \"10.0.0.0/8\", or the \
                 address alone as \"10.1.2.3/32\"",
                "2:39: error: masquerade.non_masquerade_cidrs[1]: \"10.0.0.0/33\": prefix length \
                 33 is above 32; allowed: an IPv4 prefix without host bits, such as \"10.0.0.0/8\"",
                "2:54: error: masquerade.non_masquerade_cidrs[2]: \"10/8\": not an IPv4 prefix \
                 (expected ADDRESS/LENGTH, e.g. 10.0.0.0/8); allowed: an IPv4 prefix without host \
                 bits, such as \"10.0.0.0/8\"",
            ]
        );
    }

    #[test]
    fn a_repeated_prefix_is_a_warning_and_is_dropped() {
        let text = "[masquerade]\nnon_masquerade_cidrs = [\n  \"10.0.0.0/8\",\n  \
                    \"172.16.0.0/12\",\n  \"10.0.0.0/8\",\n]\n";
        let checked = accept(text);
        assert_eq!(
            rendered(&checked.warnings),
            [
                "5:3: warning: masquerade.non_masquerade_cidrs[2]: 10.0.0.0/8 is already listed \
              as masquerade.non_masquerade_cidrs[0] (line 3); the repeat is ignored; \
              recommended: each prefix once"
            ]
        );
        assert_eq!(
            checked.config.masquerade.non_masquerade_cidrs,
            prefixes(&["10.0.0.0/8", "172.16.0.0/12"])
        );
        let text = edit(
            "sources = [\"10.10.1.0/28\"]",
            "sources = [\"10.10.1.0/28\", \"10.10.1.0/28\"]",
        );
        let w = assert_warning(
            &text,
            "policy[0].sources[1]",
            "sources = [\"10.10.1.0/28\", ",
        );
        assert_eq!(w.column, 28);
        assert_eq!(
            accept(&text).config.policies[0].sources,
            prefixes(&["10.10.1.0/28"])
        );
    }

    // ---- [[policy]] ----------------------------------------------------------------

    #[test]
    fn policies_in_kubernetes_mode_are_refused_at_the_first_one() {
        let text = edit("mode = \"static\"\n", "");
        let lines = rendered(&refuse(&text));
        assert_eq!(
            lines,
            [format!(
                "{}:1: error: policy: [[policy]] tables are only read in mode \"static\"; in \
                 mode \"kubernetes\" (the default) policies come from the cluster's \
                 EgressNATPolicy resources; allowed: mode = \"static\", or no [[policy]] table",
                line_of(&text, "[[policy]]")
            )]
        );
        // Their contents are checked all the same.
        let text = edit("mode = \"static\"", "mode = \"kubernetes\"").replace("\"bob\"", "\"Bob\"");
        let keys: Vec<String> = refuse(&text).into_iter().map(|d| d.key).collect();
        assert_eq!(keys, ["policy", "policy[1].name"]);
    }

    #[test]
    fn static_mode_without_policies_is_a_warning() {
        let checked = accept("[agent]\nmode = \"static\"\n");
        assert_eq!(
            rendered(&checked.warnings),
            [
                "2:8: warning: policy: mode is \"static\" but there is no [[policy]] table: \
              nothing will be tunnelled; recommended: [[policy]] tables for the traffic that \
              should leave through the gateways"
            ]
        );
        assert!(checked.config.policies.is_empty());
    }

    #[test]
    fn policy_names_are_kubernetes_names() {
        for (bad, problem) in [
            ("", "empty".to_owned()),
            ("Alice", "\"Alice\" contains 'A'".to_owned()),
            ("alice_1", "\"alice_1\" contains '_'".to_owned()),
            (
                "-alice",
                "\"-alice\" has a part that does not start and end with a letter or digit"
                    .to_owned(),
            ),
            (
                "a..b",
                "\"a..b\" has a part that does not start and end with a letter or digit".to_owned(),
            ),
            (&"a".repeat(254), "254 characters long".to_owned()),
        ] {
            let text = edit("name = \"bob\"", &format!("name = \"{bad}\""));
            let diagnostics = refuse(&text);
            let found: Vec<(&str, usize, &str)> = diagnostics
                .iter()
                .map(|d| (d.key.as_str(), d.line, d.problem.as_str()))
                .collect();
            assert_eq!(found, [("policy[1].name", 14, problem.as_str())]);
        }
        let long = "a".repeat(253);
        let text = edit("name = \"bob\"", &format!("name = \"{long}\""));
        assert_eq!(accept(&text).config.policies[1].name, long);
    }

    #[test]
    fn duplicate_policy_names_are_refused_at_the_second() {
        let text = edit("name = \"bob\"", "name = \"alice-frontend\"");
        let lines = rendered(&refuse(&text));
        assert_eq!(
            lines,
            [
                "14:8: error: policy[1].name: \"alice-frontend\" is already the name of policy[0] \
              (line 8); allowed: a name no other [[policy]] has"
            ]
        );
        assert_eq!(line_of(&text, "name = \"alice-frontend\""), 8);
    }

    #[test]
    fn sources_and_destinations_must_not_be_empty() {
        let text = edit("sources = [\"10.10.1.0/28\"]", "sources = []");
        let e = assert_error(&text, "policy[0].sources", "sources = []");
        assert_eq!(e.problem, "empty: the policy would select no pod");
        let text = edit(
            "destination_cidrs = [\"8.8.8.0/24\"]",
            "destination_cidrs = []",
        );
        let e = assert_error(
            &text,
            "policy[0].destination_cidrs",
            "destination_cidrs = []",
        );
        assert_eq!(e.problem, "empty: the policy would select no traffic");
    }

    #[test]
    fn an_exclusion_outside_every_destination_is_a_warning() {
        let text = edit(
            "excluded_cidrs = [\"10.0.0.0/8\"]\negress_source_ip = \"192.168.1.101\"",
            "egress_source_ip = \"192.168.1.101\"",
        )
        .replacen(
            "destination_cidrs = [\"8.8.8.0/24\"]",
            "destination_cidrs = [\"8.8.8.0/24\", \"1.1.1.0/24\"]\n\
             excluded_cidrs = [\"8.8.8.8/32\", \"9.9.9.9/32\", \"1.0.0.0/8\"]",
            1,
        );
        let checked = accept(&text);
        assert_eq!(
            rendered(&checked.warnings),
            [format!(
                "{}:33: warning: policy[0].excluded_cidrs[1]: 9.9.9.9/32 lies outside every \
                 destination_cidrs entry, so it excludes nothing; recommended: prefixes inside \
                 destination_cidrs (8.8.8.0/24, 1.1.1.0/24)",
                line_of(&text, "9.9.9.9")
            )]
        );
        // Kept as written: excluding nothing is harmless.
        assert_eq!(
            checked.config.policies[0].excluded_cidrs,
            prefixes(&["8.8.8.8/32", "9.9.9.9/32", "1.0.0.0/8"])
        );
    }

    #[test]
    fn egress_source_ip_must_be_a_unicast_address() {
        for (bad, problem) in [
            ("192.168.1", "\"192.168.1\" is not an IPv4 address"),
            (
                "0.0.0.0",
                "0.0.0.0 is the unspecified address, not a unicast address",
            ),
            (
                "255.255.255.255",
                "255.255.255.255 is the broadcast address, not a unicast address",
            ),
            (
                "127.0.0.1",
                "127.0.0.1 is a loopback address, not a unicast address",
            ),
        ] {
            let text = edit("\"192.168.1.101\"\n", &format!("\"{bad}\"\n"));
            let needle = format!("egress_source_ip = \"{bad}\"");
            let e = assert_error(&text, "policy[1].egress_source_ip", &needle);
            assert_eq!(e.problem, problem);
        }
    }

    #[test]
    fn an_egress_ip_no_gateway_holds_is_a_warning_that_it_will_not_be_programmed() {
        let text = edit("\"192.168.1.101\"\n", "\"192.168.1.200\"\n");
        let checked = accept(&text);
        assert_eq!(
            rendered(&checked.warnings),
            [
                "18:20: warning: policy[1].egress_source_ip: 192.168.1.200 is not among \
              [tunnel].floating_ips: policy \"bob\" will not be programmed; recommended: one of \
              the floating IPs: 192.168.1.100, 192.168.1.101"
            ]
        );
        assert_eq!(line_of(&text, "192.168.1.200"), 18);
        // The policy stays in the config: the running agent reports it in its status.
        assert_eq!(checked.config.policies.len(), 2);
    }

    #[test]
    fn an_empty_floating_ip_list_is_a_warning_that_nothing_is_checked() {
        let text = edit("[\"192.168.1.100\", \"192.168.1.101\"]", "[]");
        let w = assert_warning(&text, "tunnel.floating_ips", "floating_ips = []");
        assert_eq!(
            w.problem,
            "empty, so the policies' egress_source_ip are not checked against the gateways' \
             floating IPs"
        );
        // No tunnel table at all: at line 1.
        let text = edit(
            "[tunnel]\nfloating_ips = [\"192.168.1.100\", \"192.168.1.101\"]\n",
            "",
        );
        let warnings = accept(&text).warnings;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            (warnings[0].key.as_str(), warnings[0].line),
            ("tunnel.floating_ips", 1)
        );
        assert!(
            warnings[0].problem.starts_with("not set, so"),
            "{}",
            warnings[0].problem
        );
    }

    #[test]
    fn a_shared_egress_ip_is_a_warning_on_the_younger_policy() {
        let text = edit("\"192.168.1.101\"\n", "\"192.168.1.100\"\n");
        let checked = accept(&text);
        assert_eq!(
            rendered(&checked.warnings),
            [
                "18:20: warning: policy[1].egress_source_ip: 192.168.1.100 is also the \
              egress_source_ip of the older policy \"alice-frontend\" (policy[0], line 11): \
              policy \"bob\" will not be programmed; recommended: one policy per egress IP (the \
              one listed first is the older and wins): merge the two, or give this one another \
              floating IP"
            ]
        );
        assert_eq!(line_of(&text, "egress_source_ip"), 11);
        assert_eq!(checked.config.policies.len(), 2);
    }

    // ---- all at once ---------------------------------------------------------------

    #[test]
    fn every_error_is_reported_at_once() {
        let text = r#"[agent]
mode = "static"
fwmark = 0
route_table = 254
pin_path = "bpf"
bogus = true

[tunnel]
port = 70000
floating_ips = ["192.168.1.100"]

[masquerade]
non_masquerade_cidrs = ["10.0.0.1/8"]

[[policy]]
name = "a"
sources = ["10.10.1.0/28"]
destination_cidrs = ["8.8.8.0/24"]
egress_source_ip = "192.168.1.100"

[[policy]]
name = "a"
destination_cidrs = []
egress_source_ip = "192.168.1.100"
"#;
        let diagnostics = refuse(text);
        let found: Vec<(Severity, &str, usize)> = diagnostics
            .iter()
            .map(|d| (d.severity, d.key.as_str(), d.line))
            .collect();
        use Severity::{Error, Warning};
        assert_eq!(
            found,
            [
                (Error, "agent.fwmark", 3),
                (Error, "agent.route_table", 4),
                (Error, "agent.pin_path", 5),
                (Error, "agent.bogus", 6),
                (Error, "tunnel.port", 9),
                (Error, "masquerade.non_masquerade_cidrs[0]", 13),
                (Error, "policy[1].sources", 21),
                (Error, "policy[1].name", 22),
                (Error, "policy[1].destination_cidrs", 23),
            ],
            "{diagnostics:#?}"
        );
        // Warnings of a refused file come with its errors.
        let text = format!("{text}\n[tunnel.x]\n")
            .replace("[tunnel]\nport = 70000\n", "[tunnel]\nport = 4789\n");
        let found: Vec<(Severity, String)> = refuse(&text)
            .into_iter()
            .map(|d| (d.severity, d.key))
            .filter(|(_, k)| k.starts_with("tunnel"))
            .collect();
        assert_eq!(
            found,
            [
                (Warning, "tunnel.port".to_owned()),
                (Error, "tunnel.x".to_owned())
            ]
        );
    }
}
