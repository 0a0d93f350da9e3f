//! The `agent.toml` document as written: TOML syntax, section and key names, TOML types.
//!
//! Values with rules beyond their TOML type (prefixes, addresses, ranges, names) stay strings
//! or `i64` here, each with its span, so [`super::validate`] can report every bad value with
//! its line. Every key is optional at this stage: missing required keys are reported by
//! validation, all of them at once, at their table's header.
//!
//! Each table is read on its own by [`egret_config::raw`]: a key serde refuses (unknown,
//! or of the wrong TOML type) is reported and set aside, so one typo hides neither a second
//! typo nor the checks of the table's other keys.

use serde::Deserialize;
use toml::Spanned;

use egret_config::Report;
use egret_config::document;
use egret_config::raw::{self, List, Reader, Schema, Section, Tables};

/// `[agent]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAgent {
    pub node_name: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
    pub pod_interfaces: Option<List>,
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
    pub floating_ips: Option<List>,
}

/// `[masquerade]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawMasquerade {
    pub non_masquerade_cidrs: Option<List>,
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
    pub sources: Option<List>,
    pub destination_cidrs: Option<List>,
    pub excluded_cidrs: Option<List>,
    pub egress_source_ip: Option<Spanned<String>>,
}

/// The whole document, section by section.
#[derive(Debug)]
pub(super) struct RawConfig {
    pub agent: Section<RawAgent>,
    pub tunnel: Section<RawTunnel>,
    pub masquerade: Section<RawMasquerade>,
    pub kubernetes: Section<RawKubernetes>,
    pub api: Section<RawApi>,
    pub policies: Tables<RawPolicy>,
}

/// What `agent.toml` allows, for its diagnostics.
pub(super) static SCHEMA: Schema = Schema {
    sections: "the sections [agent], [tunnel], [masquerade], [kubernetes], [api] and [[policy]]",
    allowed,
    see: "see the agent configuration in the README",
};

/// Reads `text` into sections, reporting syntax errors, unknown keys and wrong TOML types.
/// Returns `None` when the text is not TOML at all.
pub(super) fn parse(text: &str, report: &mut Report<'_>) -> Option<RawConfig> {
    let document = raw::document(text, report)?;
    let mut raw = RawConfig {
        agent: Section::Absent,
        tunnel: Section::Absent,
        masquerade: Section::Absent,
        kubernetes: Section::Absent,
        api: Section::Absent,
        policies: Tables::Absent,
    };
    let mut reader = Reader::new(report, &SCHEMA);
    for (key, value) in document.iter() {
        match key.get_ref().as_ref() {
            "agent" => raw.agent = reader.table(key, value),
            "tunnel" => raw.tunnel = reader.table(key, value),
            "masquerade" => raw.masquerade = reader.table(key, value),
            "kubernetes" => raw.kubernetes = reader.table(key, value),
            "api" => raw.api = reader.table(key, value),
            "policy" => raw.policies = reader.tables(key, value),
            _ => reader.unknown(key, value),
        }
    }
    Some(raw)
}

/// What is valid for a key, from the schema; empty when the schema has nothing to add.
/// Array indices are ignored: `policy[3].sources[1]` is looked up as `policy[].sources[]`.
fn allowed(key: &str) -> &'static str {
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
}
