//! From the document as written ([`super::raw`]) to a [`Config`]: value rules, defaults, and
//! the rules between values.
//!
//! Every check runs even after an earlier one failed, so one `check` run lists every
//! problem; a [`Config`] is built only when none is an error. Checks that compare two values
//! run only when both are valid, so one mistake is not reported twice.
//!
//! The checks of values both daemons share come from [`egret_config::check`]; each section's
//! own rules live in the file named after it, the rules between sections here.

mod api;
mod election;
mod floating_ip;
mod gateway;
mod kubernetes;
mod nat;
mod sync;
mod tunnel;

use std::fmt::Display;
use std::hash::Hash;
use std::ops::{Range, RangeInclusive};

use smoltcp::wire::Ipv4Cidr;
use toml::Spanned;

use egret_config::Report;
use egret_config::check::{Check, Seen};
use egret_config::raw::Schema;

use super::raw::{self, RawConfig, SCHEMA};
use super::{Checked, Config, ConfigError, Election, FloatingIp, HostFacts, Priority, StateSync};

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
    report.conclude(config, SCHEMA.see)
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

impl<'t> Check<'t> for Checker<'_, 't, '_> {
    fn report(&mut self) -> &mut Report<'t> {
        self.report
    }

    fn schema(&self) -> &'static Schema {
        &SCHEMA
    }
}

/// The longest field manager the API server accepts.
const MAX_FIELD_MANAGER: usize = 128;

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

    /// Records `value` at `key`; reports a repeat (pointing at the first) and returns false
    /// when it was seen before.
    fn unique<T: Eq + Hash + Display>(
        &mut self,
        seen: &mut Seen<T>,
        value: T,
        key: &str,
        span: Range<usize>,
        allowed: &str,
    ) -> bool {
        let shown = value.to_string();
        match self.repeat(seen, value, key, Some(span.clone())) {
            None => true,
            Some((first, line)) => {
                self.report.error(
                    key,
                    Some(span),
                    format!("{shown} is already used by {first} (line {line})"),
                    allowed,
                );
                false
            }
        }
    }

    // ---- rules between sections ----------------------------------------------------

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
        let span = raw
            .gateway
            .present()
            .and_then(|g| g.name.as_ref())
            .map(Spanned::span);
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
        let span = raw
            .election
            .present()
            .and_then(|e| e.priority.as_ref())
            .map(Spanned::span);
        self.report.error(
            "election.priority",
            span,
            "\"auto\" ranks the gateways by address, but none of the other gateways is known",
            "list the other gateways in [election].peers or [sync].peers, or a number 1..=254",
        );
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
        let port_span = raw
            .tunnel
            .present()
            .and_then(|t| t.port.as_ref())
            .map(Spanned::span);
        let range_span = raw
            .nat
            .present()
            .and_then(|n| n.port_range.as_ref())
            .map(Spanned::span);
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
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::*;
    use std::net::Ipv4Addr;

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
        // An unknown key stops nothing: neither its own section nor the others.
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
    fn one_bad_key_leaves_the_rest_of_its_section_loaded_and_checked() {
        let text = with("[nat]\nbogus = 1\nmax_flows = 0\nport_range = \"1024-65535\"\n");
        let diagnostics = refuse(&text);
        let found = found(&diagnostics);
        assert_eq!(
            found,
            [
                ("nat.bogus", line_of(&text, "bogus"), "unknown key"),
                (
                    "nat.max_flows",
                    line_of(&text, "max_flows"),
                    "0 is out of range"
                ),
                // The range still loads, so the rule between sections still runs.
                (
                    "nat.port_range",
                    line_of(&text, "port_range"),
                    "1024-65535 contains [tunnel].port 4800 (the default)"
                ),
            ],
            "{diagnostics:#?}"
        );
    }

    #[test]
    fn a_key_of_the_wrong_type_is_set_aside_and_not_reported_missing() {
        let text = edit("interface = \"eth1\"", "interface = 1");
        let diagnostics = refuse(&text);
        let keys: Vec<(&str, &str)> = diagnostics
            .iter()
            .map(|d| (d.key.as_str(), d.problem.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("gateway.interface", "invalid type: integer `1`")],
            "{diagnostics:#?}"
        );
        // A required key set aside in a [[floating_ip]] likewise.
        let text = edit("vrid = 11", "vrid = \"11\"");
        let diagnostics = refuse(&text);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].key, "floating_ip[1].vrid");
    }

    #[test]
    fn every_bad_key_of_a_section_is_reported_with_its_other_keys_checks() {
        let text = edit(
            "[tunnel]\nallowed_sources = [\"192.168.1.0/24\"]",
            "[tunnel]\nport = \"4800\"\nvni = 16777216\nallowed_sources = [\"192.168.1.7/24\"]\nmtu = 1500",
        );
        let diagnostics = refuse(&text);
        let keys: Vec<&str> = diagnostics.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "tunnel.port",
                "tunnel.vni",
                "tunnel.allowed_sources[0]",
                "tunnel.mtu"
            ],
            "{diagnostics:#?}"
        );
    }
}
