//! From the document as written ([`super::raw`]) to a [`Config`]: value rules, defaults, and
//! the rules between values.
//!
//! Every check runs even after an earlier one failed, so one `check` lists every problem; a
//! [`Config`] is built only when none is an error. Checks that compare two values run only
//! when both are valid, so one mistake is not reported twice. What the running agent would
//! merely skip (a policy it will not program) is a warning, not an error: the rest of the
//! config keeps working.
//!
//! The checks of values both daemons share come from [`egret_config::check`]; each section's
//! own rules live in the file named after it.

mod agent;
mod api;
mod kubernetes;
mod masquerade;
mod policy;
mod tunnel;

use egret_config::Report;
use egret_config::check::{Check, Item, Seen};
use egret_config::raw::{List, Schema};

use super::raw::{self, RawConfig, SCHEMA};
use super::{Checked, Config, ConfigError, HostFacts};
use crate::prefix::{Prefix, PrefixError};

pub(super) fn check(text: &str, host: &HostFacts) -> Result<Checked, ConfigError> {
    let mut report = Report::new(text);
    let config = raw::parse(text, &mut report).and_then(|raw| {
        Checker {
            report: &mut report,
            host,
        }
        .config(&raw)
    });
    report.conclude(config, SCHEMA.see)
}

struct Checker<'r, 't, 'h> {
    report: &'r mut Report<'t>,
    host: &'h HostFacts,
}

impl<'t> Check<'t> for Checker<'_, 't, '_> {
    fn report(&mut self) -> &mut Report<'t> {
        self.report
    }

    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
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

    /// A list of prefixes, each canonical; a repeat is reported as a warning and dropped.
    /// `empty`: the problem of an empty list, when one is an error.
    fn prefix_list(
        &mut self,
        key: &str,
        raw: &List,
        empty: Option<&str>,
    ) -> Option<Vec<Item<Prefix>>> {
        if let Some(problem) = empty
            && raw.get_ref().is_empty()
        {
            return self.refuse(key, Some(raw.span()), problem);
        }
        let items = self.each(key, raw.get_ref(), |c, element_key, element| {
            let text = element.get_ref();
            let error = match text.parse::<Prefix>() {
                Ok(prefix) => return Some(prefix),
                Err(error) => error,
            };
            let allowed = match &error {
                PrefixError::HostBits(prefix) => format!(
                    "the prefix \"{prefix}\", or the address alone as \"{text_addr}/32\"",
                    text_addr = text.split_once('/').map_or(text.as_str(), |(a, _)| a)
                ),
                _ => c.allowed(element_key).to_owned(),
            };
            c.report.error(
                element_key,
                Some(element.span()),
                format!("{text:?}: {error}"),
                allowed,
            );
            None
        })?;
        let mut seen = Seen::default();
        let mut unique = Vec::with_capacity(items.len());
        for item in items {
            let label = format!("{key}[{}]", item.index);
            match self.repeat(
                &mut seen,
                item.value,
                label.clone(),
                Some(item.span.clone()),
            ) {
                None => unique.push(item),
                Some((first, line)) => self.report.warning(
                    label,
                    Some(item.span),
                    format!(
                        "{} is already listed as {first} (line {line}); the repeat is ignored",
                        item.value
                    ),
                    "each prefix once",
                ),
            }
        }
        Some(unique)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use crate::config::Severity;
    use crate::config::fixtures::*;

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
        let found = found(&diagnostics);
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
        let found = found(&diagnostics);
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
