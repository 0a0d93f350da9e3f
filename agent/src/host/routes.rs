//! Which interface the node routes an address through: where a pod's traffic enters the node.
//!
//! The node's CNI routes each pod's address to the interface the pod sits behind: a bridge
//! (flannel's `cni0`, the bridge plugin) routes the pod subnet to itself, per-pod-veth CNIs
//! (Calico, Cilium) route a /32 to the pod's veth. The classifier is attached where those
//! routes point, so Kubernetes mode never depends on interface names. The main table is read
//! from `/proc/net/route` (the table CNIs write pod routes into) and looked up longest prefix
//! first, then lowest metric, as the kernel does.

use std::net::Ipv4Addr;

use crate::prefix::Prefix;

/// One route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The interface it leaves through.
    pub interface: String,
    /// Its destination.
    pub destination: Prefix,
    /// Its metric (lower wins among equal prefixes).
    pub metric: u32,
}

/// The main table's IPv4 routes, as `/proc/net/route` lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(Vec<Route>);

/// `RTF_UP`: the route is usable.
const RTF_UP: u32 = 0x1;

impl Routes {
    /// Reads the calling thread's network namespace's main table; empty when it cannot be
    /// read.
    pub fn read() -> Routes {
        std::fs::read_to_string("/proc/net/route")
            .map(|text| Routes::parse(&text))
            .unwrap_or_default()
    }

    /// Parses `/proc/net/route`: a header line, then `Iface Destination Gateway Flags RefCnt
    /// Use Metric Mask …` with addresses as host-order hex of network-order bytes. Lines
    /// that do not parse, and routes that are not up, are skipped.
    pub fn parse(text: &str) -> Routes {
        let routes = text
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let hex = |i: usize| u32::from_str_radix(fields.get(i)?, 16).ok();
                let address = |i: usize| hex(i).map(|v| Ipv4Addr::from(v.to_le_bytes()));
                let flags = hex(3)?;
                let metric = fields.get(6)?.parse().ok()?;
                let mask = u32::from(address(7)?);
                // A contiguous mask only: a prefix length.
                let len = mask.leading_ones();
                if mask.checked_shl(len).unwrap_or(0) != 0 || flags & RTF_UP == 0 {
                    return None;
                }
                Some(Route {
                    interface: (*fields.first()?).to_owned(),
                    destination: Prefix::new(address(1)?, len as u8),
                    metric,
                })
            })
            .collect();
        Routes(routes)
    }

    /// The interface `address` is routed through: the longest matching prefix, then the
    /// lowest metric.
    pub fn interface_of(&self, address: Ipv4Addr) -> Option<&str> {
        self.0
            .iter()
            .filter(|r| r.destination.contains(address))
            .min_by_key(|r| (std::cmp::Reverse(r.destination.len()), r.metric))
            .map(|r| r.interface.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flannel node: default via eth0, the pod subnet on cni0, another node's subnet via
    /// flannel.1, and a Calico-style /32 to a pod's veth; one route down.
    const TABLE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
cni0\t0001F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
flannel.1\t0002F40A\t0002F40A\t0043\t0\t0\t0\t00FFFFFF\t0\t0\t0
cali1234\t0701F40A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
down0\t0003F40A\t00000000\t0000\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t0001A8C0\t00000000\t0001\t0\t0\t50\t00FFFFFF\t0\t0\t0
bad line
";

    #[test]
    fn finds_the_interface_a_pod_address_is_routed_through() {
        let routes = Routes::parse(TABLE);
        let at = |a: [u8; 4]| routes.interface_of(Ipv4Addr::from(a));
        assert_eq!(at([10, 244, 1, 5]), Some("cni0"), "the bridge's subnet");
        assert_eq!(
            at([10, 244, 1, 7]),
            Some("cali1234"),
            "a /32 beats the subnet"
        );
        assert_eq!(at([10, 244, 2, 9]), Some("flannel.1"));
        assert_eq!(
            at([10, 244, 3, 1]),
            Some("eth0"),
            "a route that is down is ignored"
        );
        assert_eq!(
            at([192, 168, 1, 9]),
            Some("eth1"),
            "the lower metric wins a tie"
        );
        assert_eq!(at([8, 8, 8, 8]), Some("eth0"), "the default route");
        assert_eq!(
            Routes::parse("Iface\n").interface_of([8, 8, 8, 8].into()),
            None
        );
    }
}
