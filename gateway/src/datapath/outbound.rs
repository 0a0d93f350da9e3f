//! Outbound: VXLAN from a node, checked (allowed source, VNI, the node's bound MAC),
//! decapsulated, translated to the floating IP it was sent to, one hop older, and sent to the
//! next hop.

use super::*;

impl Datapath {
    /// VXLAN from a node: check, decapsulate, translate, send to the next hop.
    pub(super) fn node_packet(
        &mut self,
        now: Instant,
        frame: &mut Frame<'_>,
        outer: &Ipv4,
    ) -> Result<Verdict, DropReason> {
        if !self.allowed(outer.src) {
            return Err(DropReason::DisallowedSource);
        }
        let malformed = DropReason::Nat(NatError::Malformed);
        let vx = ETH_LEN + outer.ihl + 8;
        let inner = vx + crate::wire::vxlan::HEADER_LEN;
        let end = ETH_LEN + outer.total;
        let b = frame.bytes();
        if end < inner + ETH_LEN {
            return Err(malformed);
        }
        let vxlan = crate::wire::VxlanPacket::new_unchecked(&b[vx..end]);
        let repr = crate::wire::VxlanRepr::parse(&vxlan).map_err(|_| malformed)?;
        if repr.vni != self.setup.vni {
            return Err(DropReason::WrongVni);
        }
        let node = Node {
            mac: mac_at(b, 6),
            tunnel_mac: mac_at(b, inner + 6),
        };
        match be16(b, inner + 12) {
            ETHERTYPE_IPV4 => {}
            ETHERTYPE_ARP => return self.tunnel_arp(now, frame, outer, inner, end, node),
            _ => return Err(NatError::NotIpv4.into()),
        }
        self.node_seen(now, outer.src, node)?;
        let b = frame.bytes();
        let inner_ip = inner + ETH_LEN;
        let ip = parse_ipv4(&b[inner_ip..end])?;
        if self.martian(ip.dst) {
            return Err(DropReason::Martian);
        }
        if ip.ttl <= 1 {
            let original = &b[inner_ip..inner_ip + ip.total];
            let via = Via::Tunnel(outer.src, node);
            self.icmp_error(now, IcmpError::TimeExceeded, outer.dst, original, via);
            return Err(DropReason::TtlExpired);
        }
        let l4sum = l4_checksum(frame, inner_ip + ip.ihl)?;
        let packet = &mut frame.bytes_mut()[inner_ip..inner_ip + ip.total];
        let t = self
            .nat
            .outbound_parsed(now, outer.src, outer.dst, &ip, packet, l4sum)?;
        decrement_ttl(packet);
        self.sync_fast(t.flow);
        if t.created || t.state_changed {
            self.export_flow(now, t.flow);
        }
        let gso = frame.offload.gso;
        let headers = ip.headers();
        if t.created {
            let port = self.nat.table().flow(t.flow).nat_port;
            if let Some(o) = self.owner(outer.dst) {
                self.owned[o].ports.add(port);
            }
            self.counters.flows_created += 1;
        }
        let Some(hop) = self.next_hop.mac else {
            return Err(DropReason::NoNeighbor);
        };
        let mac = self.setup.mac;
        encap::write_ethernet(
            &mut frame.bytes_mut()[inner..],
            hop,
            mac,
            EthernetProtocol::Ipv4,
        );
        frame.start += inner;
        frame.end = frame.start + ETH_LEN + ip.total;
        frame.offload = frame.offload.shifted(-(inner as isize));
        self.counters.outbound.packets += wire_packets(ip.total, headers, gso);
        self.counters.outbound.bytes += ip.total as u64;
        Ok(Verdict::Transmit)
    }

    /// Whether pods must not reach `dst` through the NAT: martians (RFC 1812: this
    /// network, loopback, link-local, multicast, reserved, broadcast), this gateway's and
    /// the other gateways' addresses, and the floating IPs.
    pub(super) fn martian(&self, dst: Ipv4Addr) -> bool {
        let [a, b, ..] = dst.octets();
        a == 0
            || a == 127
            || (a == 169 && b == 254)
            || a >= 224
            || dst == self.setup.address
            || self.setup.gateways.contains(&dst)
            || self.floating(dst).is_some()
    }

    pub(super) fn allowed(&self, source: Ipv4Addr) -> bool {
        self.setup
            .allowed_sources
            .iter()
            .any(|c| c.contains_addr(&source))
    }
}
