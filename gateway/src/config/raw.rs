//! The `gateway.toml` document as written: TOML syntax, table and key names, TOML types.
//!
//! Values with rules beyond their TOML type (addresses, ranges, durations) stay strings or
//! `i64` here, each with its span, so [`super::validate`] can report every bad value with its
//! line rather than stopping at the first. Each section is deserialized on its own, so an
//! unknown key in `[nat]` does not hide a typo in `[tunnel]`.

use std::ops::Range;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use egret_config::Report;
use egret_config::document::{self, join, key_at, key_before};

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawGateway {
    pub name: Option<Spanned<String>>,
    pub interface: Spanned<String>,
    pub next_hop: Option<Spanned<String>>,
    pub fast_path: Option<bool>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTunnel {
    pub port: Option<Spanned<i64>>,
    pub vni: Option<Spanned<i64>>,
    pub allowed_sources: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawElection {
    pub priority: Option<Spanned<RawPriority>>,
    pub advert_interval: Option<Spanned<String>>,
    pub preempt: Option<bool>,
    pub peers: Option<Vec<Spanned<String>>>,
    pub garp_count: Option<Spanned<i64>>,
    pub garp_interval: Option<Spanned<String>>,
    pub garp_refresh: Option<Spanned<String>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawFloatingIp {
    pub address: Spanned<String>,
    pub vrid: Spanned<i64>,
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

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawSync {
    pub listen: Spanned<String>,
    pub peers: Spanned<Vec<Spanned<String>>>,
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

/// A section as found in the document.
#[derive(Debug)]
pub(super) enum Section<T> {
    /// Not in the document: use the defaults (or report it missing, if required).
    Absent,
    /// Present but not deserializable; already reported. Skip its checks.
    Invalid,
    /// Deserialized; the span is its header (or the key of an inline table).
    Present(Spanned<T>),
}

/// The whole document, section by section.
#[derive(Debug)]
pub(super) struct RawConfig {
    pub gateway: Section<RawGateway>,
    pub tunnel: Section<RawTunnel>,
    pub election: Section<RawElection>,
    /// Each `[[floating_ip]]` table; `None` for one already reported as invalid.
    pub floating_ips: Section<Vec<Option<Spanned<RawFloatingIp>>>>,
    pub nat: Section<RawNat>,
    pub sync: Section<RawSync>,
    pub api: Section<RawApi>,
    pub kubernetes: Section<RawKubernetes>,
}

/// Top-level tables `gateway.toml` knows, in the order the documentation lists them.
const SECTIONS: [&str; 8] = [
    "gateway",
    "tunnel",
    "election",
    "floating_ip",
    "nat",
    "sync",
    "api",
    "kubernetes",
];

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
        gateway: Section::Absent,
        tunnel: Section::Absent,
        election: Section::Absent,
        floating_ips: Section::Absent,
        nat: Section::Absent,
        sync: Section::Absent,
        api: Section::Absent,
        kubernetes: Section::Absent,
    };
    for (key, value) in document.iter() {
        match key.get_ref().as_ref() {
            "gateway" => raw.gateway = section(key, value, &document, report),
            "tunnel" => raw.tunnel = section(key, value, &document, report),
            "election" => raw.election = section(key, value, &document, report),
            "floating_ip" => raw.floating_ips = floating_ips(key, value, &document, report),
            "nat" => raw.nat = section(key, value, &document, report),
            "sync" => raw.sync = section(key, value, &document, report),
            "api" => raw.api = section(key, value, &document, report),
            "kubernetes" => raw.kubernetes = section(key, value, &document, report),
            other => report.error(
                other,
                Some(key.span()),
                "unknown section",
                format!("one of {}", SECTIONS.join(", ")),
            ),
        }
    }
    Some(raw)
}

fn section<T: for<'de> Deserialize<'de>>(
    key: &Spanned<toml::de::DeString<'_>>,
    value: &Spanned<DeValue<'_>>,
    document: &DeTable<'_>,
    report: &mut Report<'_>,
) -> Section<T> {
    match T::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(parsed) => Section::Present(Spanned::new(header_span(key, value), parsed)),
        Err(error) => {
            toml_error(&error, document, report);
            Section::Invalid
        }
    }
}

fn floating_ips(
    key: &Spanned<toml::de::DeString<'_>>,
    value: &Spanned<DeValue<'_>>,
    document: &DeTable<'_>,
    report: &mut Report<'_>,
) -> Section<Vec<Option<Spanned<RawFloatingIp>>>> {
    let DeValue::Array(tables) = value.get_ref() else {
        report.error(
            "floating_ip",
            Some(key.span()),
            "not an array of tables",
            allowed("floating_ip"),
        );
        return Section::Invalid;
    };
    let parsed = tables
        .iter()
        .map(
            |table| match RawFloatingIp::deserialize(ValueDeserializer::from(table.clone())) {
                Ok(parsed) => Some(Spanned::new(table.span(), parsed)),
                Err(error) => {
                    toml_error(&error, document, report);
                    None
                }
            },
        )
        .collect();
    Section::Present(Spanned::new(header_span(key, value), parsed))
}

/// Where to point for a section as a whole: the `[name]` header, or `name` of an inline
/// table.
fn header_span(
    key: &Spanned<toml::de::DeString<'_>>,
    value: &Spanned<DeValue<'_>>,
) -> Range<usize> {
    // A `[name]` table's own span is its header, which contains the key; an inline table
    // `name = {...}` spans the braces, after the key.
    if value.span().contains(&key.span().start) {
        value.span()
    } else {
        key.span()
    }
}

/// Turns a toml/serde error into a diagnostic: the key comes from the span, the problem
/// and the allowed values from the message or the schema.
fn toml_error(error: &toml::de::Error, document: &DeTable<'_>, report: &mut Report<'_>) {
    let span = error.span();
    let mut key = span
        .as_ref()
        .and_then(|s| key_at(document, s.start))
        .unwrap_or_default();
    let message = error.message().trim();
    let (problem, allowed_text) = if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        key = join(&key, field);
        ("missing required key".to_owned(), allowed(&key).to_owned())
    } else {
        document::serde_problem(message, allowed(&key))
    };
    let key = if key.is_empty() {
        "document".to_owned()
    } else {
        key
    };
    let allowed_text = if allowed_text.is_empty() {
        "see the commented example in packaging/gateway.toml".to_owned()
    } else {
        allowed_text
    };
    report.error(key, span, problem, allowed_text);
}

/// A TOML syntax error, named after the key it is in or follows.
fn syntax_error(error: &toml::de::Error, document: &DeTable<'_>, report: &mut Report<'_>) {
    let key = error
        .span()
        .and_then(|s| key_at(document, s.start).or_else(|| key_before(document, s.start)));
    document::syntax_error(report, key, error);
}

/// What is valid for a key, from the schema; empty when the schema has nothing to add.
/// Array indices are ignored: `floating_ip[3].vrid` is looked up as `floating_ip[].vrid`.
pub(super) fn allowed(key: &str) -> &'static str {
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

    fn key_of(text: &str, needle: &str) -> Option<String> {
        let document = DeTable::parse(text).expect("valid TOML").into_inner();
        key_at(&document, text.find(needle).expect("needle in text"))
    }

    #[test]
    fn finds_the_key_path_at_an_offset() {
        let text = "[gateway]\ninterface = \"eth1\"\n\n[tunnel]\nallowed_sources = [\"a\", \"b\"]\n\n\
                    [[floating_ip]]\naddress = \"x\"\nvrid = 1\n\n[[floating_ip]]\naddress = \"y\"\nvrid = 2\n";
        assert_eq!(
            key_of(text, "\"eth1\"").as_deref(),
            Some("gateway.interface")
        );
        assert_eq!(
            key_of(text, "\"b\"").as_deref(),
            Some("tunnel.allowed_sources[1]")
        );
        assert_eq!(
            key_of(text, "vrid = 2").as_deref(),
            Some("floating_ip[1].vrid")
        );
        assert_eq!(
            key_of(text, "\"y\"").as_deref(),
            Some("floating_ip[1].address")
        );
        assert_eq!(key_of(text, "[tunnel]").as_deref(), Some("tunnel"));
    }

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
