//! The `gateway.toml` document as written: TOML syntax, table and key names, TOML types.
//!
//! Values with rules beyond their TOML type (addresses, ranges, durations) stay strings or
//! `i64` here, each with its span, so [`super::validate`] can report every bad value with its
//! line rather than stopping at the first. Every key is optional at this stage: missing
//! required keys are reported by validation, all of them at once, at their table's header.
//!
//! Each table is read on its own by [`egret_config::raw`], the reader the agent uses too: a
//! key serde refuses (unknown, or of the wrong TOML type) is reported and set aside, so one
//! typo hides neither a second typo nor the checks of the table's other keys.

use serde::de::{self, Deserialize, Deserializer, Visitor};
use toml::Spanned;

use egret_config::Report;
use egret_config::document;
use egret_config::raw::{self, List, Reader, Schema, Section, Tables};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawGateway {
    pub name: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
    pub next_hop: Option<Spanned<String>>,
    pub fast_path: Option<bool>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTunnel {
    pub port: Option<Spanned<i64>>,
    pub vni: Option<Spanned<i64>>,
    pub allowed_sources: Option<List>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawElection {
    pub priority: Option<Spanned<RawPriority>>,
    pub advert_interval: Option<Spanned<String>>,
    pub preempt: Option<bool>,
    pub peers: Option<List>,
    pub garp_count: Option<Spanned<i64>>,
    pub garp_interval: Option<Spanned<String>>,
    pub garp_refresh: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawFloatingIp {
    pub address: Option<Spanned<String>>,
    pub vrid: Option<Spanned<i64>>,
    pub priority: Option<Spanned<RawPriority>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawNat {
    pub port_range: Option<Spanned<String>>,
    pub max_flows: Option<Spanned<i64>>,
    pub max_flows_per_pod: Option<Spanned<i64>>,
    pub tcp_established_timeout: Option<Spanned<String>>,
    pub tcp_transitory_timeout: Option<Spanned<String>>,
    pub tcp_time_wait_timeout: Option<Spanned<String>>,
    pub tcp_closed_timeout: Option<Spanned<String>>,
    pub udp_timeout: Option<Spanned<String>>,
    pub icmp_timeout: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawSync {
    pub listen: Option<Spanned<String>>,
    pub peers: Option<List>,
    pub key_file: Option<Spanned<String>>,
    pub previous_key_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawApi {
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawKubernetes {
    pub kubeconfig: Option<Spanned<String>>,
    pub gateway: Option<Spanned<String>>,
}

/// A priority as written: a number (range checked later) or a word (must be "auto").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawPriority {
    Number(i64),
    Word(String),
}

impl<'de> Deserialize<'de> for RawPriority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PriorityVisitor;
        impl Visitor<'_> for PriorityVisitor {
            type Value = RawPriority;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer 1..=254 or \"auto\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawPriority, E> {
                Ok(RawPriority::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawPriority, E> {
                Ok(RawPriority::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPriority, E> {
                Ok(RawPriority::Word(v.to_owned()))
            }
        }
        deserializer.deserialize_any(PriorityVisitor)
    }
}

/// The whole document, section by section.
#[derive(Debug)]
pub(super) struct RawConfig {
    pub gateway: Section<RawGateway>,
    pub tunnel: Section<RawTunnel>,
    pub election: Section<RawElection>,
    pub floating_ips: Tables<RawFloatingIp>,
    pub nat: Section<RawNat>,
    pub sync: Section<RawSync>,
    pub api: Section<RawApi>,
    pub kubernetes: Section<RawKubernetes>,
}

/// What `gateway.toml` allows, for its diagnostics.
pub(super) static SCHEMA: Schema = Schema {
    // In the order the documentation lists them.
    sections: "one of gateway, tunnel, election, floating_ip, nat, sync, api, kubernetes",
    allowed,
    see: "see the commented example in packaging/gateway.toml",
};

/// Reads `text` into sections, reporting syntax errors, unknown keys and wrong TOML types.
/// Returns `None` when the text is not TOML at all.
pub(super) fn parse(text: &str, report: &mut Report<'_>) -> Option<RawConfig> {
    let document = raw::document(text, report)?;
    let mut raw = RawConfig {
        gateway: Section::Absent,
        tunnel: Section::Absent,
        election: Section::Absent,
        floating_ips: Tables::Absent,
        nat: Section::Absent,
        sync: Section::Absent,
        api: Section::Absent,
        kubernetes: Section::Absent,
    };
    let mut reader = Reader::new(report, &SCHEMA);
    for (key, value) in document.iter() {
        match key.get_ref().as_ref() {
            "gateway" => raw.gateway = reader.table(key, value),
            "tunnel" => raw.tunnel = reader.table(key, value),
            "election" => raw.election = reader.table(key, value),
            "floating_ip" => raw.floating_ips = reader.tables(key, value),
            "nat" => raw.nat = reader.table(key, value),
            "sync" => raw.sync = reader.table(key, value),
            "api" => raw.api = reader.table(key, value),
            "kubernetes" => raw.kubernetes = reader.table(key, value),
            _ => reader.unknown(key, value),
        }
    }
    Some(raw)
}

/// What is valid for a key, from the schema; empty when the schema has nothing to add.
/// Array indices are ignored: `floating_ip[3].vrid` is looked up as `floating_ip[].vrid`.
fn allowed(key: &str) -> &'static str {
    let generic = document::generic_key(key);
    const DURATION: &str =
        "a duration of at least 1s and at most 30d, such as \"30s\", \"4m\" or \"2h4m\"";
    const PRIORITY: &str = "an integer 1..=254 or \"auto\"";
    match generic.as_str() {
        "gateway" => "a [gateway] table with interface (and optionally name, next_hop, fast_path)",
        "gateway.name" => "a non-empty name (default: the host name)",
        "gateway.interface" => "the name of an existing network interface, such as \"eth1\"",
        "gateway.next_hop" => {
            "an IPv4 address on the interface's subnet; leave it out to use the default route"
        }
        "gateway.fast_path" => "true or false (default true)",
        "tunnel" => "a [tunnel] table with allowed_sources (and optionally port, vni)",
        "tunnel.port" => "a UDP port 1..=65535 outside [nat].port_range (default 4800)",
        "tunnel.vni" => "an integer 0..=16777215 (24 bits; default 1)",
        "tunnel.allowed_sources" => "a non-empty list of IPv4 CIDRs, such as [\"192.168.1.0/24\"]",
        "tunnel.allowed_sources[]" => {
            "an IPv4 CIDR without host bits, such as \"192.168.1.0/24\", or one address"
        }
        "election" => "an [election] table",
        "election.priority" | "floating_ip[].priority" => PRIORITY,
        "election.advert_interval" => {
            "a multiple of 10ms within 10ms..=40.95s (VRRPv3 centiseconds), such as \"1s\" or \"100ms\""
        }
        "election.preempt" => "true or false",
        "election.peers" => {
            "a list of the other gateways' IPv4 addresses; [] for multicast to 224.0.0.18"
        }
        "election.peers[]" => "the IPv4 unicast address of another gateway",
        "election.garp_count" => "gratuitous ARPs per announcement, 1..=100 (default 3)",
        "election.garp_interval" => {
            "a duration within 10ms..=60s between gratuitous ARPs (default \"1s\")"
        }
        "election.garp_refresh" => {
            "a duration within 1s..=24h after which a master announces again, or \"0s\" for never (default \"60s\")"
        }
        "floating_ip" | "floating_ip[]" => {
            "one or more [[floating_ip]] tables, each with address and vrid"
        }
        "floating_ip[].address" => {
            "an IPv4 address inside the interface's subnet that the host does not hold"
        }
        "floating_ip[].vrid" => "an integer 1..=255, unique among the [[floating_ip]] tables",
        "nat" => "a [nat] table",
        "nat.port_range" => "\"lo-hi\" with 1 <= lo <= hi <= 65535, such as \"16384-65535\"",
        "nat.max_flows" => "an integer 1..=4294967295",
        "nat.max_flows_per_pod" => {
            "an integer 1..=4294967295, below max_flows (default 65536): one pod's share of the table"
        }
        "nat.tcp_established_timeout"
        | "nat.tcp_transitory_timeout"
        | "nat.tcp_time_wait_timeout"
        | "nat.tcp_closed_timeout"
        | "nat.udp_timeout"
        | "nat.icmp_timeout" => DURATION,
        "sync" => {
            "a [sync] table with listen, peers and key_file, or no [sync] table for no state sync"
        }
        "sync.listen" => "a socket address with a non-zero port, such as \"192.168.1.11:4801\"",
        "sync.peers" => "a non-empty list of socket addresses, such as [\"192.168.1.12:4801\"]",
        "sync.peers[]" => "a socket address with a non-zero port, such as \"192.168.1.12:4801\"",
        "sync.key_file" | "sync.previous_key_file" => {
            "the path of a file of at least 32 random bytes that only the gateway's user can read (install -m 0600 -o egret-gateway -g egret-gateway /dev/null /etc/egret/sync.key; head -c 32 /dev/urandom > /etc/egret/sync.key)"
        }
        "api" => "an [api] table",
        "api.listen" => "a socket address with a non-zero port, such as \"127.0.0.1:9477\"",
        "kubernetes" => "a [kubernetes] table, or none to not report into a cluster",
        "kubernetes.kubeconfig" => {
            "the absolute path of a kubeconfig file whose current context names a cluster with a server, or none for $KUBECONFIG"
        }
        "kubernetes.gateway" => {
            "the name of an EgressGateway object: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"
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
            allowed("floating_ip[7].vrid"),
            allowed("floating_ip[].vrid")
        );
        assert!(allowed("floating_ip[12].vrid").contains("1..=255"));
        assert_eq!(allowed("no.such.key"), "");
    }

    #[test]
    fn priority_reads_numbers_and_words() {
        #[derive(serde::Deserialize)]
        struct P {
            p: RawPriority,
        }
        let n: P = toml::from_str("p = 7").expect("number");
        assert_eq!(n.p, RawPriority::Number(7));
        let w: P = toml::from_str("p = \"auto\"").expect("word");
        assert_eq!(w.p, RawPriority::Word("auto".to_owned()));
        let err = toml::from_str::<P>("p = true").err().expect("bool refused");
        assert!(err.message().contains("1..=254"), "{}", err.message());
    }
}
