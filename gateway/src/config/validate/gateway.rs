//! `[gateway]`: this gateway's name, its interface and the next hop.

use std::net::Ipv4Addr;

use egret_config::check::{Check, list, written};
use egret_config::raw::Section;
use toml::Spanned;

use super::Checker;
use crate::config::Gateway;
use crate::config::raw::RawGateway;

impl Checker<'_, '_, '_> {
    pub(super) fn gateway(&mut self, section: &Section<RawGateway>) -> Option<Gateway> {
        let table = self.required_section(section, "gateway")?;
        let g = &table.value;
        let name = match written(Some(table), "name", &g.name) {
            None => None,
            Some(Some(name)) => self.non_empty("gateway.name", name),
            Some(None) if self.host.hostname.is_empty() => self.refuse(
                "gateway.name",
                Some(table.span.clone()),
                "not set, and the host has no name to default to",
            ),
            Some(None) => Some(self.host.hostname.clone()),
        };
        let interface = self
            .required(table, "gateway", "interface", &g.interface)
            .and_then(|raw| self.interface(raw));
        let next_hop = self.value(
            Some(table),
            "next_hop",
            &g.next_hop,
            || None,
            |c, raw| c.next_hop(raw).map(Some),
        );
        let fast_path = self.value(
            Some(table),
            "fast_path",
            &g.fast_path,
            || true,
            |_, raw| Some(*raw),
        );
        Some(Gateway {
            name: name?,
            interface: interface?,
            next_hop: next_hop?,
            fast_path: fast_path?,
        })
    }

    fn interface(&mut self, raw: &Spanned<String>) -> Option<String> {
        let name = raw.get_ref();
        let span = Some(raw.span());
        match self.host.interface(name) {
            None => {
                let known: Vec<&str> = self.host.interfaces.keys().map(String::as_str).collect();
                self.report.error(
                    "gateway.interface",
                    span,
                    format!("no interface {name:?} on this host"),
                    if known.is_empty() {
                        "an existing interface".to_owned()
                    } else {
                        format!("an existing interface: {}", known.join(", "))
                    },
                );
                None
            }
            Some([]) => {
                self.report.error(
                    "gateway.interface",
                    span,
                    format!("interface {name:?} has no IPv4 address"),
                    "an interface with an IPv4 address on the floating IPs' subnet",
                );
                None
            }
            Some(networks) => {
                self.interface = Some((name.clone(), networks.to_vec()));
                Some(name.clone())
            }
        }
    }

    fn next_hop(&mut self, raw: &Spanned<String>) -> Option<Ipv4Addr> {
        let key = "gateway.next_hop";
        let address = self.ipv4(key, raw)?;
        if let Some(holder) = self.host.holder_of(address) {
            self.report.error(
                key,
                Some(raw.span()),
                format!("{address} is this host's own address (on {holder})"),
                "the address of the router to send NAT traffic to",
            );
            return None;
        }
        if let Some((interface, networks)) = &self.interface
            && !networks.iter().any(|n| n.contains_addr(&address))
        {
            self.report.error(
                key,
                Some(raw.span()),
                format!(
                    "{address} is not on {interface} ({}), so it cannot be a next hop",
                    list(networks.iter().map(|n| n.network()))
                ),
                format!(
                    "an address inside {}; leave next_hop out to use the default route",
                    list(networks.iter().map(|n| n.network()))
                ),
            );
            return None;
        }
        Some(address)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::*;
    use std::net::Ipv4Addr;

    #[test]
    fn interface_that_does_not_exist_is_refused() {
        let text = edit("\"eth1\"", "\"eth9\"");
        let e = assert_error(&text, "gateway.interface", "eth9");
        assert!(e.problem.contains("no interface \"eth9\""), "{}", e.problem);
        assert!(e.allowed.contains("eth1, eth2, lo"), "{}", e.allowed);
    }

    #[test]
    fn interface_without_ipv4_is_refused() {
        let text = edit("\"eth1\"", "\"eth2\"");
        let e = assert_error(&text, "gateway.interface", "eth2");
        assert!(e.problem.contains("no IPv4 address"), "{}", e.problem);
    }

    #[test]
    fn next_hop_off_the_interface_subnet_is_refused() {
        let text = edit(
            "interface = \"eth1\"\n",
            "interface = \"eth1\"\nnext_hop = \"10.1.1.1\"\n",
        );
        let e = assert_error(&text, "gateway.next_hop", "10.1.1.1");
        assert!(e.allowed.contains("192.168.1.0/24"), "{}", e.allowed);
        let text = edit(
            "interface = \"eth1\"\n",
            "interface = \"eth1\"\nnext_hop = \"192.168.1.1\"\n",
        );
        assert_eq!(
            accept(&text).config.gateway.next_hop,
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
    }
}
