//! The ip-masq-agent ConfigMap (`kube-system/ip-masq-agent`, key `config`, YAML or JSON),
//! read with upstream's semantics (kubernetes-sigs/ip-masq-agent, `syncConfig`), and the node's
//! masquerade exceptions merged from it and the NoSNAT policies.
//!
//! Upstream's rules, kept so a user of the upstream agent switches without rewriting:
//! - Keys: `nonMasqueradeCIDRs`, `cidrLimit` (default 64), `masqLinkLocal`,
//!   `masqLinkLocalIPv6`, `resyncInterval` (a Go duration string, default `60s`). Only the
//!   keys present override the defaults; here the defaults of `nonMasqueradeCIDRs` and
//!   `masqLinkLocal` are the agent's `[masquerade]` section.
//! - Go's `encoding/json` decodes the document: keys match case-insensitively, unknown keys
//!   are ignored (they are returned in [`ParsedMasqConfig::ignored_keys`] so the shell can
//!   warn), `null` empties a list and leaves a boolean or a number at its default, and an
//!   empty document means all defaults.
//! - Refused (the shell keeps the previous config): text that is not YAML/JSON, a document
//!   that is not a mapping, a value of the wrong type (`"true"` for a boolean, `null` for
//!   `resyncInterval`), a CIDR that does not parse or has host bits set, and more
//!   `nonMasqueradeCIDRs` than `cidrLimit`.
//! - A ConfigMap without the `config` key, like a missing ConfigMap, means the defaults.
//!
//! Differences, each because the agent is IPv4-only for now: IPv6 CIDRs are validated and
//! kept apart ([`MasqConfig::ipv6_non_masquerade_cidrs`], never programmed) instead of being
//! refused as upstream does without `--enable-ipv6`; `masqLinkLocalIPv6` is read and unused.
//! `resyncInterval` is clamped to at least 1 s (upstream would spin on 0 or a negative one).

use std::net::Ipv6Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use serde_yaml_ng::Value;

use super::admission::Admission;
use crate::config::Masquerade;
use crate::prefix::{Prefix, PrefixError};

/// The ConfigMap's namespace.
pub const CONFIG_MAP_NAMESPACE: &str = "kube-system";
/// The ConfigMap's name.
pub const CONFIG_MAP_NAME: &str = "ip-masq-agent";
/// The key holding the config.
pub const CONFIG_MAP_KEY: &str = "config";

/// Upstream's default `cidrLimit`.
pub const DEFAULT_CIDR_LIMIT: i64 = 64;
/// Upstream's default `resyncInterval`.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest `resyncInterval` honoured.
pub const MIN_RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// An effective ip-masq-agent config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasqConfig {
    /// IPv4 destinations pods reach with their own address, in the config's order.
    pub non_masquerade_cidrs: Vec<Prefix>,
    /// IPv6 entries of `nonMasqueradeCIDRs`, valid but not programmed.
    pub ipv6_non_masquerade_cidrs: Vec<String>,
    /// `masqLinkLocal`: masquerade toward 169.254.0.0/16 too.
    pub masq_link_local: bool,
    /// `masqLinkLocalIPv6`: read, unused (no IPv6 masquerade yet).
    pub masq_link_local_ipv6: bool,
    /// `cidrLimit`: the most `nonMasqueradeCIDRs` entries accepted.
    pub cidr_limit: i64,
    /// `resyncInterval`, at least [`MIN_RESYNC_INTERVAL`]: how often the shell re-applies
    /// the masquerade table to heal drift.
    pub resync_interval: Duration,
}

impl Default for MasqConfig {
    fn default() -> Self {
        MasqConfig::defaults(&Masquerade::default())
    }
}

/// A parsed config and the keys it ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMasqConfig {
    /// The effective config.
    pub config: MasqConfig,
    /// Keys upstream ignores too; worth a warning, since they are likely typos.
    pub ignored_keys: Vec<String>,
}

/// Why an ip-masq-agent config was refused; the previous one stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasqConfigError {
    /// Not YAML or JSON.
    #[error("not YAML or JSON: {0}")]
    Syntax(String),
    /// The document is not a mapping.
    #[error("the config must be a mapping of keys to values")]
    NotAMapping,
    /// A value of the wrong type.
    #[error("{key}: expected {expected}")]
    WrongType {
        /// The key, as upstream names it.
        key: &'static str,
        /// What would be valid.
        expected: &'static str,
    },
    /// A `nonMasqueradeCIDRs` entry that is not a canonical prefix.
    #[error("nonMasqueradeCIDRs[{index}]: {value:?} is not a valid CIDR: {why}")]
    Cidr {
        /// The entry's index.
        index: usize,
        /// The entry.
        value: String,
        /// Why.
        why: String,
    },
    /// More CIDRs than `cidrLimit`.
    #[error("nonMasqueradeCIDRs has {count} entries, more than cidrLimit ({limit})")]
    TooManyCidrs {
        /// Entries.
        count: usize,
        /// The limit.
        limit: i64,
    },
    /// A `resyncInterval` that is not a Go duration.
    #[error("resyncInterval: {0:?} is not a duration (e.g. 60s, 1m30s, 500ms)")]
    Duration(String),
}

impl MasqConfigError {
    /// Stable `snake_case` name, for metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            MasqConfigError::Syntax(_) => "syntax",
            MasqConfigError::NotAMapping => "not_a_mapping",
            MasqConfigError::WrongType { .. } => "wrong_type",
            MasqConfigError::Cidr { .. } => "cidr",
            MasqConfigError::TooManyCidrs { .. } => "too_many_cidrs",
            MasqConfigError::Duration(_) => "duration",
        }
    }
}

const KEYS: [&str; 5] = [
    "nonMasqueradeCIDRs",
    "cidrLimit",
    "masqLinkLocal",
    "masqLinkLocalIPv6",
    "resyncInterval",
];

impl MasqConfig {
    /// The config without a ConfigMap: `[masquerade]` and upstream's other defaults.
    pub fn defaults(masquerade: &Masquerade) -> MasqConfig {
        MasqConfig {
            non_masquerade_cidrs: masquerade.non_masquerade_cidrs.clone(),
            ipv6_non_masquerade_cidrs: Vec::new(),
            masq_link_local: masquerade.masquerade_link_local,
            masq_link_local_ipv6: false,
            cidr_limit: DEFAULT_CIDR_LIMIT,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
        }
    }

    /// The config from the ConfigMap (`None`: there is none), over `masquerade`.
    pub fn from_config_map(
        config_map: Option<&ConfigMap>,
        masquerade: &Masquerade,
    ) -> Result<ParsedMasqConfig, MasqConfigError> {
        let text = config_map
            .and_then(|cm| cm.data.as_ref())
            .and_then(|data| data.get(CONFIG_MAP_KEY));
        match text {
            Some(text) => MasqConfig::parse(text, masquerade),
            None => Ok(ParsedMasqConfig {
                config: MasqConfig::defaults(masquerade),
                ignored_keys: Vec::new(),
            }),
        }
    }

    /// Parses the `config` text over `masquerade`, as the module documentation states.
    pub fn parse(text: &str, masquerade: &Masquerade) -> Result<ParsedMasqConfig, MasqConfigError> {
        let mut config = MasqConfig::defaults(masquerade);
        let mut ignored_keys = Vec::new();
        let document: Value =
            serde_yaml_ng::from_str(text).map_err(|e| MasqConfigError::Syntax(e.to_string()))?;
        let mapping = match document {
            Value::Null => {
                return Ok(ParsedMasqConfig {
                    config,
                    ignored_keys,
                });
            }
            Value::Mapping(mapping) => mapping,
            _ => return Err(MasqConfigError::NotAMapping),
        };
        let mut cidrs: Option<Vec<String>> = None;
        for (key, value) in mapping {
            let Value::String(key) = key else {
                return Err(MasqConfigError::NotAMapping);
            };
            // encoding/json: an exact match first, else a case-insensitive one.
            let known = KEYS
                .iter()
                .find(|k| **k == key)
                .or_else(|| KEYS.iter().find(|k| k.eq_ignore_ascii_case(&key)));
            let Some(&known) = known else {
                ignored_keys.push(key);
                continue;
            };
            match known {
                "nonMasqueradeCIDRs" => {
                    cidrs = Some(match value {
                        Value::Null => Vec::new(),
                        Value::Sequence(items) => items
                            .into_iter()
                            .map(|item| match item {
                                Value::String(s) => Ok(s),
                                _ => Err(wrong("nonMasqueradeCIDRs", "a list of CIDR strings")),
                            })
                            .collect::<Result<_, _>>()?,
                        _ => return Err(wrong("nonMasqueradeCIDRs", "a list of CIDR strings")),
                    });
                }
                "cidrLimit" => match value {
                    Value::Null => {}
                    Value::Number(n) => {
                        config.cidr_limit = n.as_i64().ok_or(wrong("cidrLimit", "an integer"))?;
                    }
                    _ => return Err(wrong("cidrLimit", "an integer")),
                },
                "masqLinkLocal" | "masqLinkLocalIPv6" => {
                    let flag = match value {
                        Value::Null => continue,
                        Value::Bool(b) => b,
                        _ if known == "masqLinkLocal" => {
                            return Err(wrong("masqLinkLocal", "true or false"));
                        }
                        _ => return Err(wrong("masqLinkLocalIPv6", "true or false")),
                    };
                    if known == "masqLinkLocal" {
                        config.masq_link_local = flag;
                    } else {
                        config.masq_link_local_ipv6 = flag;
                    }
                }
                _ => {
                    let Value::String(text) = value else {
                        return Err(wrong("resyncInterval", "a duration string such as \"60s\""));
                    };
                    let interval =
                        parse_go_duration(&text).ok_or(MasqConfigError::Duration(text))?;
                    config.resync_interval = interval.max(MIN_RESYNC_INTERVAL);
                }
            }
        }
        if let Some(cidrs) = cidrs {
            config.non_masquerade_cidrs.clear();
            for (index, text) in cidrs.into_iter().enumerate() {
                match parse_cidr(&text) {
                    Ok(Cidr::V4(prefix)) => config.non_masquerade_cidrs.push(prefix),
                    Ok(Cidr::V6) => config.ipv6_non_masquerade_cidrs.push(text),
                    Err(why) => {
                        return Err(MasqConfigError::Cidr {
                            index,
                            value: text,
                            why,
                        });
                    }
                }
            }
        }
        let count = config.non_masquerade_cidrs.len() + config.ipv6_non_masquerade_cidrs.len();
        if i64::try_from(count).unwrap_or(i64::MAX) > config.cidr_limit {
            return Err(MasqConfigError::TooManyCidrs {
                count,
                limit: config.cidr_limit,
            });
        }
        Ok(ParsedMasqConfig {
            config,
            ignored_keys,
        })
    }
}

fn wrong(key: &'static str, expected: &'static str) -> MasqConfigError {
    MasqConfigError::WrongType { key, expected }
}

enum Cidr {
    V4(Prefix),
    V6,
}

fn parse_cidr(text: &str) -> Result<Cidr, String> {
    if !text.contains(':') {
        return text
            .parse::<Prefix>()
            .map(Cidr::V4)
            .map_err(|e: PrefixError| e.to_string());
    }
    let (addr, len) = text
        .split_once('/')
        .ok_or_else(|| "not an IPv6 prefix (expected ADDRESS/LENGTH)".to_owned())?;
    let addr: Ipv6Addr = addr.parse().map_err(|_| "not an IPv6 address".to_owned())?;
    let len: u32 = match len.parse() {
        Ok(n) if n <= 128 && len.bytes().all(|b| b.is_ascii_digit()) => n,
        _ => return Err(format!("prefix length {len} is not 0 to 128")),
    };
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    if addr.to_bits() & !mask != 0 {
        return Err(format!(
            "host bits are set; the prefix is {}/{len}",
            Ipv6Addr::from_bits(addr.to_bits() & mask)
        ));
    }
    Ok(Cidr::V6)
}

/// Go's `time.ParseDuration`: an optional sign, then one or more decimal numbers, each with
/// an optional fraction and a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is
/// allowed. A negative duration becomes zero (it is clamped by the caller anyway).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let whole: u128 = if digits == 0 {
            0
        } else {
            rest[..digits].parse().ok()?
        };
        rest = &rest[digits..];
        let mut fraction_digits = 0;
        let mut fraction = "";
        if let Some(after) = rest.strip_prefix('.') {
            fraction_digits = after.bytes().take_while(u8::is_ascii_digit).count();
            fraction = &after[..fraction_digits];
            rest = &after[fraction_digits..];
        }
        if digits == 0 && fraction_digits == 0 {
            return None;
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map_or(rest.len(), |(i, _)| i);
        let unit: u128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let mut nanos = whole.checked_mul(unit)?;
        // The fraction, digit by digit, truncated as Go does.
        let mut scale = unit;
        for d in fraction.bytes() {
            scale /= 10;
            nanos += u128::from(d - b'0') * scale;
        }
        total = total.checked_add(nanos)?;
    }
    // Go's durations are int64 nanoseconds.
    if total > i64::MAX as u128 {
        return None;
    }
    if negative {
        return Some(Duration::ZERO);
    }
    u64::try_from(total).ok().map(Duration::from_nanos)
}

/// The node's masquerade exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MasqueradeExceptions {
    /// The config's `nonMasqueradeCIDRs` and every accepted NoSNAT policy's destinations:
    /// sorted, each once, so a reordering anywhere changes nothing.
    pub non_masquerade: Vec<Prefix>,
    /// `masqLinkLocal`.
    pub masquerade_link_local: bool,
    /// How often to re-apply the table.
    pub resync_interval: Duration,
}

/// Merges the config with the accepted NoSNAT policies.
pub fn exceptions(config: &MasqConfig, admission: &Admission) -> MasqueradeExceptions {
    let mut non_masquerade = config.non_masquerade_cidrs.clone();
    for policy in &admission.policies {
        non_masquerade.extend(policy.accepted_no_snat().into_iter().flatten());
    }
    non_masquerade.sort_unstable();
    non_masquerade.dedup();
    MasqueradeExceptions {
        non_masquerade,
        masquerade_link_local: config.masq_link_local,
        resync_interval: config.resync_interval,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::cluster::admission::admit;
    use crate::cluster::fixtures::{gateway, gateway_spec, no_snat_spec, policy};

    fn p(text: &str) -> Prefix {
        text.parse().expect("valid prefix")
    }

    fn parse(text: &str) -> ParsedMasqConfig {
        MasqConfig::parse(text, &Masquerade::default()).expect("valid config")
    }

    fn refuse(text: &str) -> MasqConfigError {
        MasqConfig::parse(text, &Masquerade::default()).expect_err("refused")
    }

    #[test]
    fn only_present_keys_override_the_defaults() {
        let defaults = MasqConfig::default();
        assert_eq!(
            defaults.non_masquerade_cidrs.len(),
            11,
            "[masquerade]'s default list"
        );
        assert_eq!(parse("").config, defaults);
        assert_eq!(parse("{}").config, defaults);
        let only_link_local = parse("masqLinkLocal: true\n").config;
        assert!(only_link_local.masq_link_local);
        assert_eq!(
            only_link_local.non_masquerade_cidrs,
            defaults.non_masquerade_cidrs
        );

        let yaml = "nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  - 100.64.0.0/10\nmasqLinkLocal: true\nresyncInterval: 1m30s\ncidrLimit: 2\n";
        let json = r#"{"nonMasqueradeCIDRs": ["10.0.0.0/8", "100.64.0.0/10"], "masqLinkLocal": true, "resyncInterval": "1m30s", "cidrLimit": 2}"#;
        for text in [yaml, json] {
            let c = parse(text).config;
            assert_eq!(
                c.non_masquerade_cidrs,
                [p("10.0.0.0/8"), p("100.64.0.0/10")]
            );
            assert!(c.masq_link_local);
            assert_eq!(c.resync_interval, Duration::from_secs(90));
            assert_eq!(c.cidr_limit, 2);
        }
        // The agent's own [masquerade] is the default.
        let mine = Masquerade {
            non_masquerade_cidrs: vec![p("10.0.0.0/8")],
            masquerade_link_local: true,
        };
        let c = MasqConfig::parse("resyncInterval: 5s", &mine)
            .expect("valid")
            .config;
        assert_eq!(
            (c.non_masquerade_cidrs.as_slice(), c.masq_link_local),
            (&[p("10.0.0.0/8")][..], true)
        );
    }

    #[test]
    fn go_json_details_case_nulls_and_unknown_keys() {
        let parsed = parse("NonMasqueradeCIDRs: [1.0.0.0/8]\nmasqlinklocal: true\nbogus: 1\n");
        assert_eq!(parsed.config.non_masquerade_cidrs, [p("1.0.0.0/8")]);
        assert!(parsed.config.masq_link_local);
        assert_eq!(parsed.ignored_keys, ["bogus"]);
        // null empties the list: masquerade everything.
        assert!(
            parse("nonMasqueradeCIDRs:\n")
                .config
                .non_masquerade_cidrs
                .is_empty()
        );
        assert!(
            parse("nonMasqueradeCIDRs: []")
                .config
                .non_masquerade_cidrs
                .is_empty()
        );
        let c = parse("masqLinkLocal: null\ncidrLimit: null\n").config;
        assert_eq!(c, MasqConfig::default());
        assert_eq!(refuse("resyncInterval: null").label(), "wrong_type");
    }

    #[test]
    fn bad_configs_are_refused_with_a_reason() {
        let cases: [(&str, &str, &str); 10] = [
            ("nonMasqueradeCIDRs: [", "syntax", ""),
            (
                "- 10.0.0.0/8",
                "not_a_mapping",
                "the config must be a mapping of keys to values",
            ),
            (
                "masqLinkLocal: \"true\"",
                "wrong_type",
                "masqLinkLocal: expected true or false",
            ),
            (
                "cidrLimit: 2.5",
                "wrong_type",
                "cidrLimit: expected an integer",
            ),
            (
                "nonMasqueradeCIDRs: 10.0.0.0/8",
                "wrong_type",
                "nonMasqueradeCIDRs: expected a list of CIDR strings",
            ),
            (
                "nonMasqueradeCIDRs: [10.0.0.0/8, 300.0.0.0/8]",
                "cidr",
                "nonMasqueradeCIDRs[1]: \"300.0.0.0/8\" is not a valid CIDR: not an IPv4 prefix (expected ADDRESS/LENGTH, e.g. 10.0.0.0/8)",
            ),
            (
                "nonMasqueradeCIDRs: [10.1.0.0/8]",
                "cidr",
                "nonMasqueradeCIDRs[0]: \"10.1.0.0/8\" is not a valid CIDR: host bits are set; the prefix is 10.0.0.0/8",
            ),
            (
                "nonMasqueradeCIDRs: [\"fd00::1/64\"]",
                "cidr",
                "nonMasqueradeCIDRs[0]: \"fd00::1/64\" is not a valid CIDR: host bits are set; the prefix is fd00::/64",
            ),
            (
                "cidrLimit: 3",
                "too_many_cidrs",
                "nonMasqueradeCIDRs has 11 entries, more than cidrLimit (3)",
            ),
            (
                "resyncInterval: 60",
                "wrong_type",
                "resyncInterval: expected a duration string such as \"60s\"",
            ),
        ];
        for (text, label, message) in cases {
            let e = refuse(text);
            assert_eq!(e.label(), label, "{text}");
            if !message.is_empty() {
                assert_eq!(e.to_string(), message, "{text}");
            }
        }
        assert_eq!(
            refuse("resyncInterval: 5 minutes").to_string(),
            "resyncInterval: \"5 minutes\" is not a duration (e.g. 60s, 1m30s, 500ms)"
        );
    }

    #[test]
    fn ipv6_cidrs_are_kept_apart_and_count_toward_the_limit() {
        let c =
            parse("nonMasqueradeCIDRs: [\"10.0.0.0/8\", \"fd00::/8\"]\nmasqLinkLocalIPv6: true\n")
                .config;
        assert_eq!(c.non_masquerade_cidrs, [p("10.0.0.0/8")]);
        assert_eq!(c.ipv6_non_masquerade_cidrs, ["fd00::/8"]);
        assert!(c.masq_link_local_ipv6);
        assert_eq!(
            refuse("cidrLimit: 1\nnonMasqueradeCIDRs: [\"10.0.0.0/8\", \"fd00::/8\"]").label(),
            "too_many_cidrs"
        );
    }

    #[test]
    fn resync_interval_is_a_go_duration_clamped_to_a_second() {
        let d = |text: &str| parse_go_duration(text);
        assert_eq!(d("60s"), Some(Duration::from_secs(60)));
        assert_eq!(d("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
        assert_eq!(d("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(d(".5s"), Some(Duration::from_millis(500)));
        assert_eq!(d("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(d("10µs"), Some(Duration::from_micros(10)));
        assert_eq!(d("0"), Some(Duration::ZERO));
        assert_eq!(d("-5s"), Some(Duration::ZERO));
        for bad in [
            "",
            "s",
            "5",
            "5x",
            "1.s.",
            "-",
            ".s",
            "9999999999999999999h",
        ] {
            assert_eq!(d(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse("resyncInterval: 100ms").config.resync_interval,
            MIN_RESYNC_INTERVAL
        );
        assert_eq!(
            parse("resyncInterval: \"0\"").config.resync_interval,
            MIN_RESYNC_INTERVAL
        );
    }

    #[test]
    fn a_config_map_without_the_key_means_defaults() {
        let defaults = Masquerade::default();
        let none = MasqConfig::from_config_map(None, &defaults).expect("defaults");
        assert_eq!(none.config, MasqConfig::default());
        let mut cm = ConfigMap::default();
        assert_eq!(
            MasqConfig::from_config_map(Some(&cm), &defaults).expect("defaults"),
            none
        );
        cm.data = Some(BTreeMap::from([(
            CONFIG_MAP_KEY.to_owned(),
            "masqLinkLocal: true".to_owned(),
        )]));
        let parsed = MasqConfig::from_config_map(Some(&cm), &defaults).expect("valid");
        assert!(parsed.config.masq_link_local);
    }

    #[test]
    fn exceptions_merge_accepted_no_snat_destinations() {
        let config = parse("nonMasqueradeCIDRs: [192.168.0.0/16, 10.0.0.0/8]").config;
        let admission = admit(
            &[
                policy("n1", 1, no_snat_spec(&["100.64.0.0/10", "10.0.0.0/8"])),
                policy("bad", 2, no_snat_spec(&["1.2.3.4/8"])),
                policy("gw", 3, gateway_spec("192.0.2.1", &["8.8.8.0/24"])),
            ],
            &[gateway(&["192.0.2.1"])],
        );
        let e = exceptions(&config, &admission);
        assert_eq!(
            e.non_masquerade,
            [p("10.0.0.0/8"), p("100.64.0.0/10"), p("192.168.0.0/16")]
        );
        assert!(!e.masquerade_link_local);
        assert_eq!(e.resync_interval, DEFAULT_RESYNC_INTERVAL);
    }
}
