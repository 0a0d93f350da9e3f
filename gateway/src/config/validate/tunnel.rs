//! `[tunnel]`: the VXLAN tunnel from the node agents, and who may use it.

use std::net::Ipv4Addr;

use egret_config::check::{Check, values};
use egret_config::raw::{List, Section};
use smoltcp::wire::Ipv4Cidr;
use toml::Spanned;

use super::Checker;
use crate::config::raw::RawTunnel;
use crate::config::{Tunnel, defaults};

impl Checker<'_, '_, '_> {
    pub(super) fn tunnel(&mut self, section: &Section<RawTunnel>) -> Option<Tunnel> {
        let table = self.required_section(section, "tunnel")?;
        let t = &table.value;
        let port = self.value(
            Some(table),
            "port",
            &t.port,
            || defaults::TUNNEL_PORT,
            |c, raw| c.tunnel_port("tunnel.port", raw),
        );
        self.tunnel_port = port;
        let vni = self.value(
            Some(table),
            "vni",
            &t.vni,
            || defaults::TUNNEL_VNI,
            |c, raw| c.vni("tunnel.vni", raw),
        );
        let allowed_sources = self
            .required(table, "tunnel", "allowed_sources", &t.allowed_sources)
            .and_then(|raw| self.allowed_sources(raw));
        Some(Tunnel {
            port: port?,
            vni: vni?,
            allowed_sources: allowed_sources?,
        })
    }

    fn allowed_sources(&mut self, raw: &List) -> Option<Vec<Ipv4Cidr>> {
        let key = "tunnel.allowed_sources";
        if raw.get_ref().is_empty() {
            return self.refuse(
                key,
                Some(raw.span()),
                "empty: no node could use the gateway",
            );
        }
        let items = self.each(key, raw.get_ref(), |c, key, raw| c.source_network(key, raw))?;
        Some(values(items))
    }

    fn source_network(&mut self, key: &str, raw: &Spanned<String>) -> Option<Ipv4Cidr> {
        let cidr = match parse_cidr(raw.get_ref()) {
            Ok(cidr) => cidr,
            Err(problem) => return self.refuse(key, Some(raw.span()), problem),
        };
        if cidr.network() != cidr {
            self.report.error(
                key,
                Some(raw.span()),
                format!("{cidr} has host bits set"),
                format!("the network address: \"{}\"", cidr.network()),
            );
            return None;
        }
        Some(cidr)
    }
}

/// `"a.b.c.d/len"` or a bare address (a /32).
fn parse_cidr(text: &str) -> Result<Ipv4Cidr, String> {
    let (address, prefix_len) = match text.split_once('/') {
        Some((address, prefix_len)) => (address, Some(prefix_len)),
        None => (text, None),
    };
    let address: Ipv4Addr = address
        .parse()
        .map_err(|_| format!("{text:?} is not an IPv4 CIDR"))?;
    let prefix_len = match prefix_len {
        None => 32,
        Some(len) => len
            .parse::<u8>()
            .ok()
            .filter(|len| *len <= 32)
            .ok_or_else(|| format!("{text:?} has a prefix length outside 0..=32"))?,
    };
    Ok(Ipv4Cidr::new(address, prefix_len))
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::*;

    #[test]
    fn vni_out_of_range_is_refused() {
        let text = edit("[tunnel]\n", "[tunnel]\nvni = 16777216\n");
        let e = assert_error(&text, "tunnel.vni", "16777216");
        assert!(e.allowed.contains("0..=16777215"), "{}", e.allowed);
        let text = edit("[tunnel]\n", "[tunnel]\nvni = 16777215\n");
        assert_eq!(accept(&text).config.tunnel.vni, 16_777_215);
    }

    #[test]
    fn empty_allowed_sources_is_refused() {
        let text = edit("[\"192.168.1.0/24\"]", "[]");
        let e = assert_error(&text, "tunnel.allowed_sources", "allowed_sources = []");
        assert!(e.problem.contains("no node"), "{}", e.problem);
    }

    #[test]
    fn allowed_source_with_host_bits_is_refused() {
        let text = edit(
            "[\"192.168.1.0/24\"]",
            "[\"10.0.0.0/8\", \"192.168.1.7/24\"]",
        );
        let e = assert_error(&text, "tunnel.allowed_sources[1]", "192.168.1.7/24");
        assert!(e.allowed.contains("192.168.1.0/24"), "{}", e.allowed);
    }

    #[test]
    fn allowed_source_single_address_is_a_slash_32() {
        let text = edit("[\"192.168.1.0/24\"]", "[\"192.168.1.7\"]");
        assert_eq!(
            accept(&text).config.tunnel.allowed_sources,
            vec![cidr("192.168.1.7/32")]
        );
        let text = edit("[\"192.168.1.0/24\"]", "[\"192.168.1.0/33\"]");
        assert_error(&text, "tunnel.allowed_sources[0]", "/33");
    }

    #[test]
    fn a_cni_tunnel_port_is_accepted_with_a_warning() {
        let text = edit("[tunnel]\n", "[tunnel]\nport = 8472\n");
        let checked = accept(&text);
        assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
        assert_eq!(checked.warnings[0].key, "tunnel.port");
        assert!(checked.warnings[0].problem.contains("flannel"));
    }
}
