//! `[tunnel]`: the VXLAN tunnel to the gateways' floating IPs.

use std::net::Ipv4Addr;

use egret_config::check::{Check, Seen, values};
use egret_config::raw::{List, Section};

use super::Checker;
use crate::config::raw::RawTunnel;
use crate::config::{Tunnel, defaults};

impl Checker<'_, '_, '_> {
    pub(super) fn tunnel(&mut self, section: &Section<RawTunnel>) -> Option<Tunnel> {
        let absent = RawTunnel::default();
        let (t, table) = section.contents(&absent)?;
        let port = self.value(
            table,
            "port",
            &t.port,
            || defaults::TUNNEL_PORT,
            |c, raw| c.tunnel_port("tunnel.port", raw),
        );
        let vni = self.value(
            table,
            "vni",
            &t.vni,
            || defaults::TUNNEL_VNI,
            |c, raw| c.vni("tunnel.vni", raw),
        );
        let device = self.value(
            table,
            "device",
            &t.device,
            || defaults::TUNNEL_DEVICE.to_owned(),
            |c, raw| c.interface_name("tunnel.device", raw),
        );
        let floating_ips = self.value(
            table,
            "floating_ips",
            &t.floating_ips,
            Vec::new,
            |c, raw| c.floating_ips(raw),
        );
        Some(Tunnel {
            port: port?,
            vni: vni?,
            device: device?,
            floating_ips: floating_ips?,
        })
    }

    fn floating_ips(&mut self, raw: &List) -> Option<Vec<Ipv4Addr>> {
        let key = "tunnel.floating_ips";
        let items = self.each(key, raw.get_ref(), |c, key, raw| c.unicast(key, raw))?;
        let mut seen = Seen::default();
        let mut valid = true;
        for item in &items {
            let label = format!("{key}[{}]", item.index);
            if let Some((first, line)) = self.repeat(
                &mut seen,
                item.value,
                label.clone(),
                Some(item.span.clone()),
            ) {
                self.report.error(
                    label,
                    Some(item.span.clone()),
                    format!("{} is already listed as {first} (line {line})", item.value),
                    "each floating IP once",
                );
                valid = false;
            }
        }
        valid.then(|| values(items))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::fixtures::*;

    #[test]
    fn tunnel_port_and_vni_are_range_checked() {
        for bad in ["0", "65536"] {
            let e = assert_error(&tunnel(&format!("port = {bad}")), "tunnel.port", "port");
            assert_eq!(e.allowed, "a UDP port 1..=65535 (default 4800)");
        }
        for bad in ["-1", "16777216"] {
            let e = assert_error(&tunnel(&format!("vni = {bad}")), "tunnel.vni", "vni");
            assert_eq!(e.allowed, "an integer 0..=16777215 (24 bits; default 1)");
        }
        let config = accept(&tunnel("port = 65535\nvni = 16777215")).config;
        assert_eq!((config.tunnel.port, config.tunnel.vni), (65535, 16_777_215));
        assert_eq!(accept(&tunnel("vni = 0")).config.tunnel.vni, 0);
    }

    #[test]
    fn a_cni_tunnel_port_is_a_warning() {
        let w = assert_warning(&tunnel("port = 8472"), "tunnel.port", "8472");
        assert!(w.problem.contains("flannel"), "{}", w.problem);
    }

    #[test]
    fn floating_ips_are_unicast_and_listed_once() {
        let text = tunnel(
            "floating_ips = [\n  \"192.168.1.100\",\n  \"224.0.0.18\",\n  \"gw1\",\n  \
             \"192.168.1.100\",\n]",
        );
        let lines = rendered(&refuse(&text));
        assert_eq!(
            lines,
            [
                "4:3: error: tunnel.floating_ips[1]: 224.0.0.18 is a multicast address, not a \
                 unicast address; allowed: a unicast IPv4 address, listed once",
                "5:3: error: tunnel.floating_ips[2]: \"gw1\" is not an IPv4 address; allowed: \
                 a unicast IPv4 address, listed once",
            ]
        );
        let text = tunnel("floating_ips = [\"192.168.1.100\",\n  \"192.168.1.100\"]");
        let e = assert_error(&text, "tunnel.floating_ips[1]", "  \"192.168.1.100\"");
        assert_eq!(
            e.problem,
            "192.168.1.100 is already listed as tunnel.floating_ips[0] (line 2)"
        );
    }
}
