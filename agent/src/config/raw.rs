//! The `agent.toml` document as written: TOML syntax, section and key names, TOML types.
//!
//! Values with rules beyond their TOML type (prefixes, addresses, ranges, names) stay strings
//! or `i64` here, each with its span, so [`super::validate`] can report every bad value with
//! its line. Every key is optional at this stage: missing required keys are reported by
//! validation, all of them at once, at their table's header.
//!
//! Each table is deserialized on its own. A key serde refuses (unknown, or of the wrong
//! TOML type) is reported, set aside, and the table deserialized again without it, so one
//! typo hides neither a second typo nor the checks of the table's other keys.

use std::ops::Range;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

use egret_config::Report;
use egret_config::document::{self, key_before};

/// A list of strings, as most list keys are; each element keeps its own span.
pub(super) type RawList = Spanned<Vec<Spanned<String>>>;

/// `[agent]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAgent {
    pub node_name: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
    pub pod_interfaces: Option<RawList>,
    pub pin_path: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub fwmark: Option<Spanned<i64>>,
    pub route_table: Option<Spanned<i64>>,
    pub rule_priority: Option<Spanned<i64>>,
}

/// `[tunnel]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTunnel {
    pub port: Option<Spanned<i64>>,
    pub vni: Option<Spanned<i64>>,
    pub device: Option<Spanned<String>>,
    pub floating_ips: Option<RawList>,
}

/// `[masquerade]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawMasquerade {
    pub non_masquerade_cidrs: Option<RawList>,
    pub masquerade_link_local: Option<bool>,
}

/// `[kubernetes]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawKubernetes {
    pub kubeconfig: Option<Spanned<String>>,
    pub namespace: Option<Spanned<String>>,
}

/// `[api]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawApi {
    pub listen: Option<Spanned<String>>,
}

/// One `[[policy]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawPolicy {
    pub name: Option<Spanned<String>>,
    pub sources: Option<RawList>,
    pub destination_cidrs: Option<RawList>,
    pub excluded_cidrs: Option<RawList>,
    pub egress_source_ip: Option<Spanned<String>>,
}

/// A table as found in the document.
#[derive(Debug)]
pub(super) enum Section<T> {
    /// Not in the document: defaults apply.
    Absent,
    /// Present but unusable as a whole (not a table at all); already reported.
    Invalid,
    /// Deserialized, perhaps without some keys that were reported and set aside.
    Present(Table<T>),
}

/// A deserialized table.
#[derive(Debug)]
pub(super) struct Table<T> {
    /// Where to point for the table as a whole: its `[header]`, or the key of an inline
    /// table.
    pub span: Range<usize>,
    pub value: T,
    /// Keys already reported (unknown or of the wrong type) and left out of `value`.
    pub set_aside: Vec<String>,
}

impl<T> Table<T> {
    /// Whether `key` was written but already reported as unusable.
    pub(super) fn set_aside(&self, key: &str) -> bool {
        self.set_aside.iter().any(|k| k == key)
    }
}

/// The `[[policy]]` tables.
#[derive(Debug)]
pub(super) enum Policies {
    /// No `policy` key.
    Absent,
    /// `policy` is not an array of tables; already reported.
    Invalid,
    /// Each table in file order; an element is `None` when it is not a table (reported).
    Present(Vec<Option<Table<RawPolicy>>>),
}

/// The whole document, section by section.
#[derive(Debug)]
pub(super) struct RawConfig {
    pub agent: Section<RawAgent>,
    pub tunnel: Section<RawTunnel>,
    pub masquerade: Section<RawMasquerade>,
    pub kubernetes: Section<RawKubernetes>,
    pub api: Section<RawApi>,
    pub policies: Policies,
}

/// The sections `agent.toml` knows, as an operator writes them.
const SECTIONS: &str =
    "the sections [agent], [tunnel], [masquerade], [kubernetes], [api] and [[policy]]";

/// Parses `text` into sections, reporting syntax errors, unknown keys and wrong TOML
/// types. Returns `None` when the text is not TOML at all.
pub(super) fn parse(text: &str, report: &mut Report<'_>) -> Option<RawConfig> {
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    if let Some(first) = syntax_errors.into_iter().next() {
        // Only the first: after a syntax error the parser's recovery guesses, and later
        // errors are often echoes of the first.
        syntax_error(&first, document.get_ref(), report);
        return None;
    }
    let document = document.into_inner();
    let mut raw = RawConfig {
        agent: Section::Absent,
        tunnel: Section::Absent,
        masquerade: Section::Absent,
        kubernetes: Section::Absent,
        api: Section::Absent,
        policies: Policies::Absent,
    };
    for (key, value) in document.iter() {
        let span = header_span(key, value);
        match key.get_ref().as_ref() {
            "agent" => raw.agent = table("agent", value, span, report).into(),
            "tunnel" => raw.tunnel = table("tunnel", value, span, report).into(),
            "masquerade" => raw.masquerade = table("masquerade", value, span, report).into(),
            "kubernetes" => raw.kubernetes = table("kubernetes", value, span, report).into(),
            "api" => raw.api = table("api", value, span, report).into(),
            "policy" => raw.policies = policies(key, value, report),
            other => {
                let problem = if matches!(value.get_ref(), DeValue::Table(_)) {
                    "unknown section"
                } else {
                    "unknown key outside any section"
                };
                report.error(other, Some(key.span()), problem, SECTIONS);
            }
        }
    }
    Some(raw)
}

impl<T> From<Option<Table<T>>> for Section<T> {
    fn from(table: Option<Table<T>>) -> Section<T> {
        table.map_or(Section::Invalid, Section::Present)
    }
}

fn policies(
    key: &Spanned<DeString<'_>>,
    value: &Spanned<DeValue<'_>>,
    report: &mut Report<'_>,
) -> Policies {
    let DeValue::Array(tables) = value.get_ref() else {
        report.error(
            "policy",
            Some(header_span(key, value)),
            "a single [policy] table",
            "[[policy]] tables (double brackets), one per policy",
        );
        return Policies::Invalid;
    };
    let parsed = tables
        .iter()
        .enumerate()
        .map(|(i, element)| table(&format!("policy[{i}]"), element, element.span(), report))
        .collect();
    Policies::Present(parsed)
}

/// Deserializes the table `value` at `path`, reporting and setting aside each key serde
/// refuses until the rest deserializes. `None`: `value` is not a table, or serde refused
/// something it did not tie to a key (reported either way).
fn table<T: DeserializeOwned>(
    path: &str,
    value: &Spanned<DeValue<'_>>,
    span: Range<usize>,
    report: &mut Report<'_>,
) -> Option<Table<T>> {
    let mut value = value.clone();
    let mut set_aside = Vec::new();
    loop {
        let error = match T::deserialize(ValueDeserializer::from(value.clone())) {
            Ok(parsed) => {
                return Some(Table {
                    span,
                    value: parsed,
                    set_aside,
                });
            }
            Err(error) => error,
        };
        let at = error.span().map(|s| s.start);
        let DeValue::Table(keys) = value.get_mut() else {
            report_serde_error(&error, path.to_owned(), report);
            return None;
        };
        let offending = at.and_then(|at| {
            keys.iter()
                .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
                .map(|(k, v)| (k.get_ref().clone(), path_in(v, at)))
        });
        let Some((name, inner)) = offending else {
            report_serde_error(&error, path.to_owned(), report);
            return None;
        };
        report_serde_error(&error, format!("{path}.{name}{inner}"), report);
        // Each round removes a key, so the loop ends; stop rather than spin should a key
        // ever not be found again.
        keys.remove(&*name)?;
        set_aside.push(name.into_owned());
    }
}

/// The path (`[2]`, `.key`) of the element at byte `at` inside `value`, if any.
fn path_in(value: &Spanned<DeValue<'_>>, at: usize) -> String {
    match value.get_ref() {
        DeValue::Array(items) => items
            .iter()
            .enumerate()
            .find(|(_, item)| item.span().contains(&at))
            .map(|(i, item)| format!("[{i}]{}", path_in(item, at)))
            .unwrap_or_default(),
        DeValue::Table(table) => table
            .iter()
            .find(|(k, v)| k.span().contains(&at) || v.span().contains(&at))
            .map(|(k, v)| format!(".{}{}", k.get_ref(), path_in(v, at)))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

/// Turns a serde error about the key at `key` into a diagnostic.
fn report_serde_error(error: &toml::de::Error, key: String, report: &mut Report<'_>) {
    let (problem, allowed_text) = document::serde_problem(error.message(), allowed(&key));
    let allowed_text = if allowed_text.is_empty() {
        "see the agent configuration in the README".to_owned()
    } else {
        allowed_text
    };
    report.error(key, error.span(), problem, allowed_text);
}

/// A TOML syntax error, named after the key it follows.
fn syntax_error(error: &toml::de::Error, document: &DeTable<'_>, report: &mut Report<'_>) {
    let key = error.span().and_then(|s| key_before(document, s.start));
    document::syntax_error(report, key, error);
}

/// Where to point for a section as a whole: the `[name]` header, or `name` of an inline
/// table.
fn header_span(key: &Spanned<DeString<'_>>, value: &Spanned<DeValue<'_>>) -> Range<usize> {
    // A `[name]` table's own span is its header, which contains the key; an inline table
    // `name = {...}` spans the braces, after the key.
    if value.span().contains(&key.span().start) {
        value.span()
    } else {
        key.span()
    }
}

/// What is valid for a key, from the schema; empty when the schema has nothing to add.
/// Array indices are ignored: `policy[3].sources[1]` is looked up as `policy[].sources[]`.
pub(super) fn allowed(key: &str) -> &'static str {
    let generic = document::generic_key(key);
    const PREFIX: &str = "an IPv4 prefix without host bits, such as \"10.0.0.0/8\"";
    match generic.as_str() {
        "agent" => "an [agent] table",
        "agent.node_name" => {
            "this node's name as the cluster knows it: lowercase letters, digits, '-' and '.', \
             at most 253 characters (default: $NODE_NAME, then the host name)"
        }
        "agent.mode" => "\"kubernetes\" (policies from the cluster, the default) or \"static\"",
        "agent.interface" => {
            "an interface name of 1 to 15 characters without '/', ':' or whitespace, \
             such as \"eth0\"; leave it out to use the interface of the default route"
        }
        "agent.pod_interfaces" => {
            "a non-empty list of interface name patterns, such as [\"veth*\", \"cali*\"]"
        }
        "agent.pod_interfaces[]" => {
            "an interface name pattern of 1 to 15 characters without '/', ':' or whitespace, \
             where '*' matches any run of characters and '?' one character"
        }
        "agent.pin_path" => "an absolute path on a BPF file system (default \"/sys/fs/bpf/egret\")",
        "agent.state_dir" => "an absolute path (default \"/run/egret\")",
        "agent.fwmark" => "a non-zero 32-bit integer, such as 0x00100000 (the default)",
        "agent.route_table" => {
            "a routing table 1..=4294967295 other than 253 (default), 254 (main) and \
             255 (local); default 4800"
        }
        "agent.rule_priority" => {
            "an integer 1..=32764: the agent uses it and the next one, both before the main \
             table's rule at 32766; default 4800"
        }
        "tunnel" => "a [tunnel] table",
        "tunnel.port" => "a UDP port 1..=65535 (default 4800)",
        "tunnel.vni" => "an integer 0..=16777215 (24 bits; default 1)",
        "tunnel.device" => {
            "an interface name of 1 to 15 characters without '/', ':' or whitespace \
             (default \"egret0\")"
        }
        "tunnel.floating_ips" => {
            "a list of the gateways' floating IPv4 addresses, such as [\"192.168.1.100\"]"
        }
        "tunnel.floating_ips[]" => "a unicast IPv4 address, listed once",
        "masquerade" => "a [masquerade] table",
        "masquerade.non_masquerade_cidrs" => {
            "a list of IPv4 prefixes; [] to masquerade every destination"
        }
        "masquerade.non_masquerade_cidrs[]"
        | "policy[].sources[]"
        | "policy[].destination_cidrs[]"
        | "policy[].excluded_cidrs[]" => PREFIX,
        "masquerade.masquerade_link_local" => "true or false (default false)",
        "kubernetes" => "a [kubernetes] table",
        "kubernetes.kubeconfig" => {
            "an absolute path to a kubeconfig file; leave it out to use the pod's service \
             account, then $KUBECONFIG"
        }
        "kubernetes.namespace" => {
            "the namespace of the agents' Leases: a DNS label of 1 to 63 lowercase letters, \
             digits and '-' (default: $POD_NAMESPACE, then \"egret-system\")"
        }
        "api" => "an [api] table",
        "api.listen" => {
            "a socket address with a non-zero port, such as \"127.0.0.1:9478\" (the \
             default), or \"\" for no API"
        }
        "policy" | "policy[]" => {
            "[[policy]] tables with name, sources, destination_cidrs and egress_source_ip \
             (and optionally excluded_cidrs)"
        }
        "policy[].name" => {
            "a unique name of 1 to 253 lowercase letters, digits, '-' and '.', starting and \
             ending with a letter or digit"
        }
        "policy[].sources" => "a non-empty list of IPv4 prefixes of the pods to select",
        "policy[].destination_cidrs" => {
            "a non-empty list of IPv4 prefixes, such as [\"0.0.0.0/0\"]"
        }
        "policy[].excluded_cidrs" => "a list of IPv4 prefixes inside destination_cidrs",
        "policy[].egress_source_ip" => {
            "the IPv4 address the traffic leaves with: one of the gateways' floating IPs"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_ignores_array_indices() {
        assert_eq!(
            allowed("policy[7].sources[3]"),
            allowed("policy[].sources[]")
        );
        assert!(allowed("agent.fwmark").contains("0x00100000"));
        assert_eq!(allowed("no.such.key"), "");
    }

    #[test]
    fn finds_the_path_of_an_element() {
        let text = "a = [1, [2, 3]]\nb = { c = 4 }\n";
        let document = DeTable::parse(text).expect("valid TOML").into_inner();
        let find = |needle: &str, key: &str| {
            let at = text.find(needle).expect("needle");
            let (_, value) = document
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key)
                .expect("key");
            path_in(value, at)
        };
        assert_eq!(find("3]", "a"), "[1][1]");
        assert_eq!(find("1,", "a"), "[0]");
        assert_eq!(find("4", "b"), ".c");
        assert_eq!(
            key_before(&document, text.find('4').expect("4")),
            Some("b.c".into())
        );
    }
}
