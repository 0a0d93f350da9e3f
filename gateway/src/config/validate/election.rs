//! `[election]`: VRRPv3 (RFC 5798) defaults for every floating IP, the peers it advertises
//! to, and the gratuitous ARPs of a new master; also a floating IP's own priority.

use std::net::Ipv4Addr;
use std::time::Duration;

use egret_config::check::{Check, Seen, values};
use egret_config::raw::{List, Section};
use toml::Spanned;

use super::Checker;
use crate::config::raw::{RawElection, RawPriority};
use crate::config::{Election, Priority, defaults};

/// Shortest and longest VRRPv3 advert interval: 1 and 4095 centiseconds (a 12-bit field).
const ADVERT_MIN: Duration = Duration::from_millis(10);
const ADVERT_MAX: Duration = Duration::from_millis(40_950);
const CENTISECOND_NANOS: u128 = 10_000_000;

impl Checker<'_, '_, '_> {
    pub(super) fn election(&mut self, section: &Section<RawElection>) -> Option<Election> {
        let absent = RawElection::default();
        let (e, table) = section.contents(&absent)?;
        let priority = self.value(
            table,
            "priority",
            &e.priority,
            || defaults::PRIORITY,
            |c, raw| c.priority("election.priority", raw),
        );
        let advert_interval = self.value(
            table,
            "advert_interval",
            &e.advert_interval,
            || defaults::ADVERT_INTERVAL,
            |c, raw| c.advert_interval(raw),
        );
        let preempt = self.value(
            table,
            "preempt",
            &e.preempt,
            || defaults::PREEMPT,
            |_, raw| Some(*raw),
        );
        let peers = self.value(table, "peers", &e.peers, Vec::new, |c, raw| {
            c.election_peers(raw)
        });
        let garp_count = self.value(
            table,
            "garp_count",
            &e.garp_count,
            || defaults::GARP_COUNT,
            |c, raw| c.int("election.garp_count", raw, 1..=100),
        );
        let garp_interval = self.value(
            table,
            "garp_interval",
            &e.garp_interval,
            || defaults::GARP_INTERVAL,
            |c, raw| {
                c.bounded_duration(
                    "election.garp_interval",
                    raw,
                    Duration::from_millis(10)..=Duration::from_secs(60),
                )
            },
        );
        let garp_refresh = self.value(
            table,
            "garp_refresh",
            &e.garp_refresh,
            || Some(defaults::GARP_REFRESH),
            |c, raw| c.garp_refresh(raw),
        );
        Some(Election {
            priority: priority?,
            advert_interval: advert_interval?,
            preempt: preempt?,
            peers: peers?,
            garp_count: garp_count?,
            garp_interval: garp_interval?,
            garp_refresh: garp_refresh?,
        })
    }

    fn advert_interval(&mut self, raw: &Spanned<String>) -> Option<Duration> {
        let key = "election.advert_interval";
        let interval = self.duration(key, raw)?;
        let problem = if interval.as_nanos() % CENTISECOND_NANOS != 0 {
            "is not a whole number of centiseconds, which VRRPv3 carries"
        } else if interval < ADVERT_MIN || interval > ADVERT_MAX {
            "is outside the 12-bit centisecond field of VRRPv3"
        } else {
            return Some(interval);
        };
        self.refuse(
            key,
            Some(raw.span()),
            format!("{:?} {problem}", raw.get_ref()),
        )
    }

    /// `Some(None)`: `"0s"`, never again after the takeover.
    fn garp_refresh(&mut self, raw: &Spanned<String>) -> Option<Option<Duration>> {
        let key = "election.garp_refresh";
        if self.duration(key, raw)?.is_zero() {
            return Some(None);
        }
        self.bounded_duration(
            key,
            raw,
            Duration::from_secs(1)..=Duration::from_secs(24 * 3600),
        )
        .map(Some)
    }

    fn election_peers(&mut self, raw: &List) -> Option<Vec<Ipv4Addr>> {
        let mut seen = Seen::default();
        let items = self.each("election.peers", raw.get_ref(), |c, key, peer| {
            let address = c.ipv4(key, peer)?;
            let problem =
                if address.is_multicast() || address.is_broadcast() || address.is_unspecified() {
                    format!("{address} is not a unicast address")
                } else if let Some(holder) = c.host.holder_of(address) {
                    format!("{address} is this host's own address (on {holder})")
                } else {
                    return c
                        .unique(&mut seen, address, key, peer.span(), "each peer once")
                        .then_some(address);
                };
            c.refuse(key, Some(peer.span()), problem)
        })?;
        Some(values(items))
    }

    /// `[election].priority` or a floating IP's own.
    pub(super) fn priority(&mut self, key: &str, raw: &Spanned<RawPriority>) -> Option<Priority> {
        let problem = match raw.get_ref() {
            RawPriority::Number(n) if (1..=254).contains(n) => {
                return u8::try_from(*n).ok().map(Priority::Fixed);
            }
            RawPriority::Number(0) => {
                "0 is out of range: VRRP uses it to say the master is leaving".to_owned()
            }
            RawPriority::Number(255) => {
                "255 is out of range: VRRP reserves it for the owner of the address, \
                 and the kernel of a gateway never owns a floating IP"
                    .to_owned()
            }
            RawPriority::Number(n) => format!("{n} is out of range"),
            RawPriority::Word(word) if word == "auto" => return Some(Priority::Auto),
            RawPriority::Word(word) => format!("{word:?} is neither a number nor \"auto\""),
        };
        self.refuse(key, Some(raw.span()), problem)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Priority;
    use crate::config::fixtures::*;

    #[test]
    fn election_priority_out_of_range_is_refused() {
        for bad in ["255", "0", "-3", "\"high\""] {
            let text = with(&format!("[election]\npreempt = false\npriority = {bad}\n"));
            let e = assert_error(&text, "election.priority", "priority = ");
            assert!(e.allowed.contains("1..=254"), "{}", e.allowed);
            assert!(e.allowed.contains("\"auto\""), "{}", e.allowed);
        }
    }

    #[test]
    fn auto_and_overrides_are_accepted() {
        let text = with("[election]\npriority = \"auto\"\npeers = [\"192.168.1.12\"]\n").replacen(
            "vrid = 11\n",
            "vrid = 11\npriority = 254\n",
            1,
        );
        let config = accept(&text).config;
        assert_eq!(config.election.priority, Priority::Auto);
        assert_eq!(config.floating_ips[1].priority, Some(Priority::Fixed(254)));
        assert_eq!(
            config.floating_ips[0].effective_priority(&config.election),
            Priority::Auto
        );
    }

    #[test]
    fn garp_keys_are_checked() {
        let config = accept(&with(
            "[election]\ngarp_count = 5\ngarp_interval = \"200ms\"\ngarp_refresh = \"0s\"\n",
        ))
        .config;
        assert_eq!(config.election.garp_count, 5);
        assert_eq!(config.election.garp_interval, Duration::from_millis(200));
        assert_eq!(config.election.garp_refresh, None);
        for (bad, key) in [
            ("garp_count = 0", "election.garp_count"),
            ("garp_count = 101", "election.garp_count"),
            ("garp_interval = \"1ms\"", "election.garp_interval"),
            ("garp_interval = \"2m\"", "election.garp_interval"),
            ("garp_refresh = \"10ms\"", "election.garp_refresh"),
            ("garp_refresh = \"soon\"", "election.garp_refresh"),
        ] {
            assert_error(&with(&format!("[election]\n{bad}\n")), key, bad);
        }
    }

    #[test]
    fn advert_interval_not_in_centiseconds_is_refused() {
        for bad in ["15ms", "5ms", "41s", "0s", "soon"] {
            let text = with(&format!(
                "[election]\npreempt = true\nadvert_interval = \"{bad}\"\n"
            ));
            let e = assert_error(&text, "election.advert_interval", "advert_interval");
            assert!(e.allowed.contains("multiple of 10ms"), "{}", e.allowed);
        }
    }

    #[test]
    fn advert_interval_at_the_field_limits_is_accepted() {
        for (text, centis) in [("10ms", 1), ("40.95s", 4095), ("100ms", 10)] {
            let doc = with(&format!("[election]\nadvert_interval = \"{text}\"\n"));
            assert_eq!(
                accept(&doc).config.election.advert_interval_centis(),
                centis
            );
        }
    }

    #[test]
    fn election_peers_must_be_other_unicast_hosts() {
        for (bad, problem) in [
            ("192.168.1.10", "own address"),
            ("224.0.0.18", "not a unicast"),
            ("192.168.1.12\", \"192.168.1.12", "already used"),
            ("gw2", "not an IPv4"),
        ] {
            let text = with(&format!(
                "[election]\npreempt = true\npeers = [\"{bad}\"]\n"
            ));
            let diagnostics = refuse(&text);
            let line = line_of(&text, "peers");
            assert!(
                diagnostics
                    .iter()
                    .any(|d| d.key.starts_with("election.peers[")
                        && d.line == line
                        && d.problem.contains(problem)),
                "{bad}: {diagnostics:?}"
            );
        }
    }
}
