//! The tunnel contract: what the node agents (`[tunnel]` of `agent.toml`) and the gateways
//! (`[tunnel]` of `gateway.toml`) must agree on, and the MTU arithmetic both ends do.
//!
//! Selected pod traffic crosses the tunnel as VXLAN (RFC 7348) to a floating IP: an inner
//! Ethernet frame behind outer IPv4, UDP and VXLAN headers. Against the MTU of the link
//! that carries it, a tunnelled IPv4 packet costs [`OVERHEAD`] bytes more than it would
//! alone, so the largest inner IPv4 packet is [`inner_mtu`] and the largest TCP segment
//! [`mss`].

/// The VXLAN UDP port on the floating IPs when `[tunnel].port` is not set: one no common
/// CNI overlay uses ([`OVERLAY_PORTS`]).
pub const DEFAULT_PORT: u16 = 4800;
/// The VXLAN network identifier when `[tunnel].vni` is not set.
pub const DEFAULT_VNI: u32 = 1;
/// The largest VNI: the field has 24 bits.
pub const VNI_MAX: u32 = 0xff_ffff;
const _: () = assert!(DEFAULT_VNI <= VNI_MAX);

/// The outer IPv4 header (without options: the tunnel sends none).
pub const OUTER_IPV4_LEN: u16 = 20;
/// The outer UDP header.
pub const UDP_LEN: u16 = 8;
/// The VXLAN header.
pub const VXLAN_LEN: u16 = 8;
/// The inner Ethernet header, which the link's MTU does not count for a plain packet.
pub const INNER_ETHERNET_LEN: u16 = 14;
/// Bytes the tunnel adds to an inner IPv4 packet against the link's MTU: 50.
pub const OVERHEAD: u16 = OUTER_IPV4_LEN + UDP_LEN + VXLAN_LEN + INNER_ETHERNET_LEN;

/// IPv4 and TCP headers without options: what a TCP segment carries besides its payload.
pub const TCP_IPV4_HEADERS: u16 = 40;

/// The largest inner IPv4 packet a link of MTU `link_mtu` carries through the tunnel (the
/// MTU of the agent's tunnel device; the gateway's room for a reply).
pub const fn inner_mtu(link_mtu: u16) -> u16 {
    link_mtu.saturating_sub(OVERHEAD)
}

/// The TCP MSS that keeps a segment, with its IPv4 and TCP headers, inside `inner_mtu`.
pub const fn mss(inner_mtu: u16) -> u16 {
    inner_mtu.saturating_sub(TCP_IPV4_HEADERS)
}

/// UDP ports of common CNI overlays, with who uses them. The agent's tunnel shares the
/// node with the CNI, so reusing one of these would hand the tunnel's packets to the CNI's
/// socket.
pub const OVERLAY_PORTS: [(u16, &str); 3] = [
    (4789, "the IANA VXLAN port, used by Calico's VXLAN mode"),
    (8472, "the Linux VXLAN port, used by flannel and Cilium"),
    (6081, "the Geneve port, used by Antrea and OVN-Kubernetes"),
];

/// Who uses `port` for a CNI overlay, if a common CNI does.
pub fn overlay_using(port: u16) -> Option<&'static str> {
    OVERLAY_PORTS
        .iter()
        .find(|(p, _)| *p == port)
        .map(|(_, used_by)| *used_by)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overhead_is_fifty_bytes_of_headers() {
        assert_eq!(OVERHEAD, 50);
        assert_eq!(inner_mtu(1500), 1450);
        assert_eq!(mss(inner_mtu(1500)), 1410);
        assert_eq!(inner_mtu(9000), 8950);
        assert_eq!(inner_mtu(40), 0, "never below zero");
        assert_eq!(mss(30), 0);
    }

    #[test]
    fn the_default_port_is_no_cni_overlays() {
        assert_eq!(overlay_using(DEFAULT_PORT), None);
        assert_eq!(
            overlay_using(8472),
            Some("the Linux VXLAN port, used by flannel and Cilium")
        );
        assert!(
            OVERLAY_PORTS
                .iter()
                .all(|(p, _)| overlay_using(*p).is_some())
        );
    }

    #[test]
    fn the_vni_has_24_bits() {
        assert_eq!(VNI_MAX, (1 << 24) - 1);
    }
}
