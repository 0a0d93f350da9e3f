//! `[agent]`: the node's name, the mode, the interfaces and the kernel resources the agent
//! takes (pin path, mark, routing table, rule priorities).

use egret_config::check::{Check, OBJECT_NAME_MAX, object_name_problem, values, written};
use egret_config::raw::{List, Section, Table};
use toml::Spanned;

use super::Checker;
use crate::config::raw::{RawAgent, RawConfig};
use crate::config::{Agent, Mode, Tunnel, defaults, glob_match};

/// Linux interface names are at most IFNAMSIZ - 1 bytes.
const IFNAME_MAX: usize = 15;

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

impl Checker<'_, '_, '_> {
    /// `[agent].mode`, checked first: the node name and the policies depend on it.
    pub(super) fn mode(&mut self, section: &Section<RawAgent>) -> Option<Mode> {
        let absent = RawAgent::default();
        let (a, table) = section.contents(&absent)?;
        self.value(
            table,
            "mode",
            &a.mode,
            || defaults::MODE,
            |c, raw| match raw.get_ref().as_str() {
                "kubernetes" => Some(Mode::Kubernetes),
                "static" => Some(Mode::Static),
                other => c.refuse(
                    "agent.mode",
                    Some(raw.span()),
                    format!("{other:?} is not a mode"),
                ),
            },
        )
    }

    pub(super) fn agent(
        &mut self,
        section: &Section<RawAgent>,
        mode: Option<Mode>,
    ) -> Option<Agent> {
        let absent = RawAgent::default();
        let (a, table) = section.contents(&absent)?;
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
            || defaults::PIN_PATH.into(),
            |c, raw| c.absolute_path("agent.pin_path", raw),
        );
        let state_dir = self.value(
            table,
            "state_dir",
            &a.state_dir,
            || defaults::STATE_DIR.into(),
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
        let written = written(table, "node_name", &a.node_name)?;
        if let Some(raw) = written {
            return match check(raw.get_ref()) {
                None => Some(raw.get_ref().clone()),
                Some(problem) => self.refuse(key, Some(raw.span()), problem),
            };
        }
        let non_blank = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let table_span = table.map(|t| t.span.clone());
        // The kubelet lowercases the host name it registers the Node with; do the same so
        // the default finds the Node.
        let (source, name) = match (
            non_blank(&self.host.node_name_env),
            non_blank(&self.host.hostname),
        ) {
            (Some(env), _) => ("$NODE_NAME", env),
            (None, Some(host)) => ("the host name", host.to_lowercase()),
            (None, None) => {
                return self.refuse(
                    key,
                    table_span,
                    "not set, and neither $NODE_NAME nor the host name gives one",
                );
            }
        };
        match check(&name) {
            None => Some(name),
            Some(problem) => self.refuse(
                key,
                table_span,
                format!("not set, and {source} does not fit: {problem}"),
            ),
        }
    }

    /// One interface name (not a pattern).
    pub(super) fn interface_name(&mut self, key: &str, raw: &Spanned<String>) -> Option<String> {
        let name = raw.get_ref();
        let problem = ifname_problem(name).or_else(|| {
            name.chars().find(|c| matches!(c, '*' | '?')).map(|c| {
                format!("{name:?} contains {c:?}: this key takes one interface name, not a pattern")
            })
        });
        match problem {
            None => Some(name.clone()),
            Some(problem) => self.refuse(key, Some(raw.span()), problem),
        }
    }

    fn pod_patterns(&mut self, raw: &List) -> Option<Vec<String>> {
        let key = "agent.pod_interfaces";
        if raw.get_ref().is_empty() {
            return self.refuse(
                key,
                Some(raw.span()),
                "empty: the agent would see no pod traffic",
            );
        }
        let items = self.each(key, raw.get_ref(), |c, key, raw| {
            let pattern = raw.get_ref();
            let problem = ifname_problem(pattern).or_else(|| {
                pattern
                    .chars()
                    .find(|c| matches!(c, '[' | ']' | '{' | '}' | '\\'))
                    .map(|c| format!("{pattern:?} contains {c:?}; patterns know only '*' and '?'"))
            });
            match problem {
                None => Some(pattern.clone()),
                Some(problem) => c.refuse(key, Some(raw.span()), problem),
            }
        })?;
        Some(values(items))
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
            Some((_, what)) => self.refuse(key, Some(raw.span()), format!("{table} is {what}")),
        }
    }

    /// A pod pattern that matches the agent's own devices would treat the uplink or the
    /// tunnel as pod traffic and loop it.
    pub(super) fn pod_patterns_spare_own_interfaces(
        &mut self,
        raw: &RawConfig,
        agent: &Agent,
        tunnel: &Tunnel,
    ) {
        let raw_agent = raw.agent.present();
        let raw_tunnel = raw.tunnel.present();
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

/// Why `name` cannot name a node outside Kubernetes, if it cannot.
fn plain_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        return Some("empty".to_owned());
    }
    if name.len() > OBJECT_NAME_MAX {
        return Some(format!("{} characters long", name.chars().count()));
    }
    name.chars()
        .find(|c| c.is_whitespace() || c.is_control())
        .map(|c| format!("{name:?} contains {c:?}"))
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::*;
    use crate::config::{Config, HostFacts};

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
        let error = Config::from_str("[agent]\nfwmark = 1\n", &host).expect_err("bad default");
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
}
