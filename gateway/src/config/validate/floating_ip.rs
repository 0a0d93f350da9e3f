//! `[[floating_ip]]`: the egress IPs and their VRRP instances.

use std::net::Ipv4Addr;

use egret_config::check::{Check, Seen, list};
use egret_config::raw::Tables;
use toml::Spanned;

use super::Checker;
use crate::config::FloatingIp;
use crate::config::raw::RawFloatingIp;

impl Checker<'_, '_, '_> {
    pub(super) fn floating_ips(
        &mut self,
        section: &Tables<RawFloatingIp>,
    ) -> Option<Vec<FloatingIp>> {
        let key = "floating_ip";
        let (span, tables) = match section {
            Tables::Present { span, tables } => (span, tables),
            Tables::Invalid => return None,
            Tables::Absent => return self.refuse(key, None, "missing required section"),
        };
        if tables.is_empty() {
            return self.refuse(
                key,
                Some(span.clone()),
                "no floating IP: the gateway would have nothing to serve",
            );
        }
        let mut addresses = Seen::default();
        let mut vrids = Seen::default();
        let parsed: Vec<Option<FloatingIp>> = tables
            .iter()
            .enumerate()
            .map(|(i, table)| {
                let table = table.as_ref()?;
                let f = &table.value;
                let path = format!("floating_ip[{i}]");
                let address_key = format!("{path}.address");
                let vrid_key = format!("{path}.vrid");
                let address = self
                    .required(table, &path, "address", &f.address)
                    .and_then(|raw| {
                        self.floating_address(&address_key, raw).filter(|a| {
                            self.unique(
                                &mut addresses,
                                *a,
                                &address_key,
                                raw.span(),
                                "an address no other [[floating_ip]] has",
                            )
                        })
                    });
                let vrid = self
                    .required(table, &path, "vrid", &f.vrid)
                    .and_then(|raw| {
                        self.int::<u8>(&vrid_key, raw, 1..=255).filter(|v| {
                            self.unique(
                                &mut vrids,
                                *v,
                                &vrid_key,
                                raw.span(),
                                "a VRID 1..=255 no other [[floating_ip]] has",
                            )
                        })
                    });
                let priority = self.value(
                    Some(table),
                    "priority",
                    &f.priority,
                    || None,
                    |c, raw| c.priority(&format!("{path}.priority"), raw).map(Some),
                );
                Some(FloatingIp {
                    address: address?,
                    vrid: vrid?,
                    priority: priority?,
                })
            })
            .collect();
        parsed.into_iter().collect()
    }

    fn floating_address(&mut self, key: &str, raw: &Spanned<String>) -> Option<Ipv4Addr> {
        let address = self.ipv4(key, raw)?;
        let span = Some(raw.span());
        if let Some(holder) = self.host.holder_of(address) {
            self.report.error(
                key,
                span,
                format!(
                    "{address} is already an address of this host (on {holder}); \
                     its kernel would answer in the gateway's place"
                ),
                "an address no host holds: the gateway owns floating IPs in user space",
            );
            return None;
        }
        let Some((interface, networks)) = &self.interface else {
            // No usable interface: already reported under gateway.interface.
            return Some(address);
        };
        let Some(network) = networks.iter().find(|n| n.contains_addr(&address)) else {
            let subnets = list(networks.iter().map(|n| n.network()));
            self.report.error(
                key,
                span,
                format!("{address} is outside {interface}'s subnet ({subnets})"),
                format!("an address inside {subnets}"),
            );
            return None;
        };
        let network = network.network();
        let reserved = if address == network.address() && network.prefix_len() < 31 {
            Some("network")
        } else if Some(address) == network.broadcast() {
            Some("broadcast")
        } else {
            None
        };
        if let Some(which) = reserved {
            self.report.error(
                key,
                span,
                format!("{address} is the {which} address of {network}"),
                format!("a host address inside {network}"),
            );
            return None;
        }
        Some(address)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use crate::config::fixtures::*;
    use crate::config::{Config, HostFacts};

    #[test]
    fn floating_ip_outside_the_interface_subnet_is_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.2.101\"");
        let e = assert_error(&text, "floating_ip[1].address", "192.168.2.101");
        assert!(e.problem.contains("outside eth1's subnet"), "{}", e.problem);
        assert!(e.allowed.contains("192.168.1.0/24"), "{}", e.allowed);
    }

    #[test]
    fn floating_ip_the_host_holds_is_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.1.10\"");
        let e = assert_error(&text, "floating_ip[1].address", "\"192.168.1.10\"");
        assert!(e.problem.contains("address of this host"), "{}", e.problem);
    }

    #[test]
    fn floating_ip_on_the_broadcast_address_is_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.1.255\"");
        let e = assert_error(&text, "floating_ip[1].address", "192.168.1.255");
        assert!(e.problem.contains("broadcast"), "{}", e.problem);
    }

    #[test]
    fn floating_ip_that_is_not_an_address_is_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.1\"");
        assert_error(&text, "floating_ip[1].address", "\"192.168.1\"");
    }

    #[test]
    fn duplicate_vrids_are_refused() {
        let text = edit("vrid = 11", "vrid = 10 # again");
        let e = assert_error(&text, "floating_ip[1].vrid", "# again");
        let first = line_of(&text, "vrid = 10");
        assert!(
            e.problem
                .contains(&format!("floating_ip[0].vrid (line {first})")),
            "{}",
            e.problem
        );
    }

    #[test]
    fn duplicate_addresses_are_refused() {
        let text = edit("\"192.168.1.101\"", "\"192.168.1.100\" # again");
        let e = assert_error(&text, "floating_ip[1].address", "# again");
        assert!(
            e.problem.contains("floating_ip[0].address"),
            "{}",
            e.problem
        );
    }

    #[test]
    fn vrid_out_of_range_is_refused() {
        let text = edit("vrid = 11", "vrid = 256");
        let e = assert_error(&text, "floating_ip[1].vrid", "256");
        assert!(e.allowed.contains("1..=255"), "{}", e.allowed);
        let text = edit("vrid = 10", "vrid = 0");
        assert_error(&text, "floating_ip[0].vrid", "vrid = 0");
    }

    #[test]
    fn no_floating_ip_is_refused() {
        let text =
            "[gateway]\ninterface = \"eth1\"\n\n[tunnel]\nallowed_sources = [\"10.0.0.0/8\"]\n";
        let diagnostics = refuse(text);
        assert!(
            diagnostics
                .iter()
                .any(|d| d.key == "floating_ip" && d.line == 1),
            "{diagnostics:?}"
        );
        let text = format!("floating_ip = []\n{text}");
        assert_error(&text, "floating_ip", "floating_ip = []");
    }

    #[test]
    fn floating_ip_priority_out_of_range_is_refused() {
        let text = edit("vrid = 11\n", "vrid = 11\npriority = 300\n");
        assert_error(&text, "floating_ip[1].priority", "priority = 300");
    }

    #[test]
    fn loopback_floating_ips_are_fine_for_a_dry_run() {
        let text = MINIMAL
            .replace("\"eth1\"", "\"lo\"")
            .replace("192.168.1.0/24", "127.0.0.0/8")
            .replace("192.168.1.1", "127.0.0.1");
        let config = accept(&text).config;
        assert_eq!(
            config.floating_ips[0].address,
            Ipv4Addr::new(127, 0, 0, 100)
        );
        assert!(Config::from_str(&text, &HostFacts::new("h")).is_err());
    }

    #[test]
    fn a_single_floating_ip_table_is_refused() {
        let text = MINIMAL
            .replace(
                "[[floating_ip]]\naddress = \"192.168.1.101\"\nvrid = 11\n",
                "",
            )
            .replace("[[floating_ip]]", "[floating_ip]");
        let e = assert_error(&text, "floating_ip", "[floating_ip]");
        assert_eq!(e.problem, "a single [floating_ip] table");
        assert!(e.allowed.contains("[[floating_ip]]"), "{}", e.allowed);
    }
}
