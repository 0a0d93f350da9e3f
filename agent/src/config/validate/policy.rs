//! `[[policy]]`: static mode's policies, and the rules between them, the mode and the
//! floating IPs.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::ops::Range;

use egret_config::check::{Check, Item, Seen, list, object_name_problem, values};
use egret_config::raw::{Table, Tables};
use toml::Spanned;

use super::Checker;
use crate::config::raw::{RawConfig, RawPolicy};
use crate::config::{Mode, Policy};
use crate::prefix::Prefix;

impl Checker<'_, '_, '_> {
    /// The `[[policy]]` tables and the rules between them, the mode and the floating IPs.
    pub(super) fn policies(
        &mut self,
        raw: &RawConfig,
        mode: Option<Mode>,
        floating_ips: Option<&[Ipv4Addr]>,
    ) -> Option<Vec<Policy>> {
        let tables: &[Option<Table<RawPolicy>>] = match &raw.policies {
            Tables::Absent => &[],
            Tables::Invalid => return None,
            Tables::Present { tables, .. } => tables,
        };
        let mode_span = raw
            .agent
            .present()
            .and_then(|a| a.mode.as_ref())
            .map(Spanned::span);
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
                && let Some((first, line)) = self.repeat(
                    &mut names,
                    name.get_ref().clone(),
                    format!("policy[{i}]"),
                    Some(name.span()),
                )
            {
                self.report.error(
                    format!("policy[{i}].name"),
                    Some(name.span()),
                    format!(
                        "{:?} is already the name of {first} (line {line})",
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
            let written = raw
                .tunnel
                .present()
                .and_then(|t| t.floating_ips.as_ref())
                .map(Spanned::span);
            let (state, span) = match written {
                Some(span) => ("empty", Some(span)),
                None => ("not set", raw.tunnel.table().map(|t| t.span.clone())),
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
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::*;

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
            let found = found(&diagnostics);
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
}
