//! `[nat]`: the port range, the flow table's size and each pod's share, and the idle
//! timeouts (with the RFC minimums a lower value warns about).

use std::ops::RangeInclusive;
use std::time::Duration;

use egret_config::check::Check;
use egret_config::duration;
use egret_config::raw::Section;
use toml::Spanned;

use super::Checker;
use crate::config::Nat;
use crate::config::raw::RawNat;

/// NAT timeouts below this would churn mappings of flows that merely paused.
const TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Far above any useful idle timeout, and far from overflowing the NAT core's clock.
const TIMEOUT_MAX: Duration = Duration::from_secs(30 * 86_400);

impl Checker<'_, '_, '_> {
    pub(super) fn nat(&mut self, section: &Section<RawNat>) -> Option<Nat> {
        let absent = RawNat::default();
        let (n, table) = section.contents(&absent)?;
        let default = Nat::default();
        let port_range = self.value(
            table,
            "port_range",
            &n.port_range,
            || default.port_range.clone(),
            |c, raw| c.port_range(raw),
        );
        self.port_range.clone_from(&port_range);
        let max_flows = self.value(
            table,
            "max_flows",
            &n.max_flows,
            || default.max_flows,
            |c, raw| c.int("nat.max_flows", raw, 1..=i64::from(u32::MAX)),
        );
        let max_flows_per_pod = self.value(
            table,
            "max_flows_per_pod",
            &n.max_flows_per_pod,
            || default.max_flows_per_pod,
            |c, raw| c.int("nat.max_flows_per_pod", raw, 1..=i64::from(u32::MAX)),
        );
        if let (Some(total), Some(share)) = (max_flows, max_flows_per_pod) {
            self.share_below_table(n, total, share);
        }
        const RFC5382: &str = "RFC 5382 REQ-5";
        // RFC 5382 counts a closing connection, TIME_WAIT included, as transitory.
        let timeouts = [
            (
                "tcp_established_timeout",
                &n.tcp_established_timeout,
                default.tcp_established_timeout,
                Some((Duration::from_secs(2 * 3600 + 4 * 60), RFC5382)),
            ),
            (
                "tcp_transitory_timeout",
                &n.tcp_transitory_timeout,
                default.tcp_transitory_timeout,
                Some((Duration::from_secs(4 * 60), RFC5382)),
            ),
            (
                "tcp_time_wait_timeout",
                &n.tcp_time_wait_timeout,
                default.tcp_time_wait_timeout,
                Some((Duration::from_secs(4 * 60), RFC5382)),
            ),
            (
                "tcp_closed_timeout",
                &n.tcp_closed_timeout,
                default.tcp_closed_timeout,
                None,
            ),
            (
                "udp_timeout",
                &n.udp_timeout,
                default.udp_timeout,
                Some((Duration::from_secs(2 * 60), "RFC 4787 REQ-5")),
            ),
            (
                "icmp_timeout",
                &n.icmp_timeout,
                default.icmp_timeout,
                Some((Duration::from_secs(60), "RFC 5508 REQ-1")),
            ),
        ]
        .map(|(name, raw, default, rfc_minimum)| {
            self.value(
                table,
                name,
                raw,
                || default,
                |c, raw| c.timeout(&format!("nat.{name}"), raw, default, rfc_minimum),
            )
        });
        let [
            tcp_established_timeout,
            tcp_transitory_timeout,
            tcp_time_wait_timeout,
            tcp_closed_timeout,
            udp_timeout,
            icmp_timeout,
        ] = timeouts;
        Some(Nat {
            port_range: port_range?,
            max_flows: max_flows?,
            max_flows_per_pod: max_flows_per_pod?,
            tcp_established_timeout: tcp_established_timeout?,
            tcp_transitory_timeout: tcp_transitory_timeout?,
            tcp_time_wait_timeout: tcp_time_wait_timeout?,
            tcp_closed_timeout: tcp_closed_timeout?,
            udp_timeout: udp_timeout?,
            icmp_timeout: icmp_timeout?,
        })
    }

    /// A pod's share as large as the table protects nothing: one pod can still fill it. The
    /// warning points at the share when it is written, else at the `max_flows` that made the
    /// default share too large.
    fn share_below_table(&mut self, n: &RawNat, total: u32, share: u32) {
        if share < total {
            return;
        }
        let suggested = (total / 4).max(1);
        let recommended = format!(
            "max_flows_per_pod below max_flows, such as {suggested} (a quarter of the table)"
        );
        match (&n.max_flows_per_pod, &n.max_flows) {
            (Some(written), _) => self.report.warning(
                "nat.max_flows_per_pod",
                Some(written.span()),
                format!(
                    "{share} is not below max_flows ({total}): one pod can still fill the \
                     flow table and keep every other pod from opening flows"
                ),
                recommended,
            ),
            (None, written) => self.report.warning(
                "nat.max_flows",
                written.as_ref().map(Spanned::span),
                format!(
                    "{total} is not above the default max_flows_per_pod ({share}): one pod \
                     can fill the flow table and keep every other pod from opening flows"
                ),
                format!("also set {recommended}"),
            ),
        }
    }

    fn port_range(&mut self, raw: &Spanned<String>) -> Option<RangeInclusive<u16>> {
        let text = raw.get_ref();
        let problem = match text.split_once('-') {
            None => format!("{text:?} is not of the form \"lo-hi\""),
            Some((lo, hi)) => match (parse_port(lo), parse_port(hi)) {
                (Some(lo), Some(hi)) if lo <= hi => return Some(lo..=hi),
                (Some(lo), Some(hi)) => format!("{text:?} starts above its end ({lo} > {hi})"),
                _ => format!("{text:?} has a bound that is not a port 1..=65535"),
            },
        };
        self.refuse("nat.port_range", Some(raw.span()), problem)
    }

    /// An idle timeout within 1s..=30d; below `rfc_minimum`, a warning.
    fn timeout(
        &mut self,
        key: &str,
        raw: &Spanned<String>,
        default: Duration,
        rfc_minimum: Option<(Duration, &str)>,
    ) -> Option<Duration> {
        let timeout = self.duration(key, raw)?;
        if !(TIMEOUT_MIN..=TIMEOUT_MAX).contains(&timeout) {
            return self.refuse(
                key,
                Some(raw.span()),
                format!("{:?} is outside 1s..=30d", raw.get_ref()),
            );
        }
        if let Some((minimum, rfc)) = rfc_minimum
            && timeout < minimum
        {
            let minimum = duration::format(minimum);
            self.report.warning(
                key,
                Some(raw.span()),
                format!(
                    "{:?} is below the {minimum} minimum of {rfc}; idle but live flows may lose their mapping",
                    raw.get_ref()
                ),
                format!("at least {minimum} (default {})", duration::format(default)),
            );
        }
        Some(timeout)
    }
}

/// A port 1..=65535, digits only.
fn parse_port(text: &str) -> Option<u16> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|port| *port != 0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Severity;
    use crate::config::fixtures::*;

    #[test]
    fn bad_port_range_is_refused() {
        for bad in ["100-50", "16384", "0-100", "1-65536", "a-b", "-5"] {
            let text = with(&format!("[nat]\nmax_flows = 10\nport_range = \"{bad}\"\n"));
            let e = assert_error(&text, "nat.port_range", "port_range");
            assert!(e.allowed.contains("lo-hi"), "{bad}: {}", e.allowed);
        }
    }

    #[test]
    fn max_flows_out_of_range_is_refused() {
        for bad in ["0", "4294967296"] {
            let text = with(&format!("[nat]\nmax_flows = {bad}\n"));
            assert_error(&text, "nat.max_flows", "max_flows");
        }
    }

    #[test]
    fn max_flows_per_pod_out_of_range_is_refused() {
        for bad in ["0", "-1", "4294967296"] {
            let text = with(&format!(
                "[nat]\nmax_flows = 10\nmax_flows_per_pod = {bad}\n"
            ));
            let e = assert_error(&text, "nat.max_flows_per_pod", "max_flows_per_pod");
            assert!(e.problem.contains("out of range"), "{bad}: {}", e.problem);
            assert!(e.allowed.contains("1..=4294967295"), "{}", e.allowed);
        }
        let text = with("[nat]\nmax_flows_per_pod = \"1000\"\n");
        assert_error(&text, "nat.max_flows_per_pod", "max_flows_per_pod");
    }

    #[test]
    fn max_flows_per_pod_below_max_flows_is_taken_without_warning() {
        let text = with("[nat]\nmax_flows = 5000\nmax_flows_per_pod = 1000\n");
        let checked = accept(&text);
        assert!(checked.warnings.is_empty(), "{:?}", checked.warnings);
        assert_eq!(checked.config.nat.max_flows_per_pod, 1000);
        assert_eq!(checked.config.nat_params().max_flows_per_pod, 1000);
    }

    #[test]
    fn a_share_not_below_max_flows_is_accepted_with_a_warning_on_it() {
        for share in ["5000", "9000"] {
            let text = with(&format!(
                "[nat]\nmax_flows = 5000\nmax_flows_per_pod = {share}\n"
            ));
            let checked = accept(&text);
            assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
            let w = &checked.warnings[0];
            assert_eq!(w.severity, Severity::Warning);
            assert_eq!(
                (w.key.as_str(), w.line),
                ("nat.max_flows_per_pod", line_of(&text, "max_flows_per_pod"))
            );
            assert!(w.problem.contains("not below max_flows (5000)"), "{w}");
            assert!(w.allowed.contains("1250"), "{w}");
        }
    }

    #[test]
    fn a_small_max_flows_under_the_default_share_is_accepted_with_a_warning() {
        let text = with("[nat]\nport_range = \"20000-29999\"\nmax_flows = 5000\n");
        let checked = accept(&text);
        assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
        let w = &checked.warnings[0];
        assert_eq!(
            (w.key.as_str(), w.line),
            ("nat.max_flows", line_of(&text, "max_flows"))
        );
        assert!(
            w.problem.contains("default max_flows_per_pod (65536)"),
            "{w}"
        );
        assert!(w.allowed.contains("max_flows_per_pod"), "{w}");
        assert_eq!(checked.config.nat.max_flows_per_pod, 65536);
    }

    #[test]
    fn bad_durations_are_refused() {
        for (key, bad) in [
            ("udp_timeout", "5 minutes"),
            ("icmp_timeout", "60"),
            ("tcp_closed_timeout", "500ms"),
            ("tcp_established_timeout", "31d"),
        ] {
            let text = with(&format!("[nat]\nmax_flows = 10\n{key} = \"{bad}\"\n"));
            let e = assert_error(&text, &format!("nat.{key}"), bad);
            assert!(e.allowed.contains("at least 1s"), "{}", e.allowed);
        }
    }

    #[test]
    fn timeouts_below_the_rfc_minimums_are_accepted_with_warnings() {
        let text = with(
            "[nat]\ntcp_established_timeout = \"1h\"\ntcp_transitory_timeout = \"1m\"\n\
             tcp_time_wait_timeout = \"30s\"\nudp_timeout = \"30s\"\nicmp_timeout = \"10s\"\n\
             tcp_closed_timeout = \"1s\"\n",
        );
        let checked = accept(&text);
        let warned: Vec<(&str, usize)> = checked
            .warnings
            .iter()
            .inspect(|w| assert_eq!(w.severity, Severity::Warning))
            .map(|w| (w.key.as_str(), w.line))
            .collect();
        assert_eq!(
            warned,
            [
                ("nat.tcp_established_timeout", line_of(&text, "\"1h\"")),
                ("nat.tcp_transitory_timeout", line_of(&text, "\"1m\"")),
                ("nat.tcp_time_wait_timeout", line_of(&text, "tcp_time_wait")),
                ("nat.udp_timeout", line_of(&text, "udp_timeout")),
                ("nat.icmp_timeout", line_of(&text, "icmp_timeout")),
            ]
        );
        let rfcs: Vec<&str> = ["RFC 5382", "RFC 5382", "RFC 5382", "RFC 4787", "RFC 5508"].into();
        for (warning, rfc) in checked.warnings.iter().zip(rfcs) {
            assert!(warning.problem.contains(rfc), "{warning}");
        }
        assert_eq!(
            checked.config.nat.tcp_established_timeout,
            Duration::from_secs(3600)
        );
    }
}
