//! Inbound: a reply from the outside world to a floating IP, translated back to its pod
//! (conntrack hit only), one hop older, and tunnelled to the pod's node: in place, as a
//! train of segments for a super-packet, or as fragments when it may be fragmented.

use super::*;

impl Datapath {
    /// A packet from the outside world to a floating IP: translate back to the pod and
    /// tunnel it to the pod's node.
    pub(super) fn outside_packet(
        &mut self,
        now: Instant,
        frame: &mut Frame<'_>,
        ip: &Ipv4,
        owner: usize,
    ) -> Result<Verdict, DropReason> {
        let gso = frame.offload.gso;
        let arrived = &frame.bytes()[ETH_LEN..ETH_LEN + ip.total];
        let plan = match gso {
            Some(g) => Some(Segments::plan(arrived, g).ok_or(DropReason::Truncated)?),
            None => None,
        };
        // The largest inner packet that will ride the tunnel, and the most that fits.
        let largest = plan.map_or(ip.total, |p| p.len(0));
        let room = usize::from(self.setup.mtu).saturating_sub(TUNNEL_OVERHEAD);
        let too_big = largest > room;
        let expiring = ip.ttl <= 1;
        let may_fragment = be16(arrived, 6) & icmp::DF == 0
            && gso.is_none()
            && ip.ihl == 20
            && room >= icmp::FRAGMENT_MIN;
        // An ICMP error quotes the packet as it arrived, so keep that before translating.
        // Only packets that conntrack knows get one, as from a router behind the NAT.
        let quote = (expiring || (too_big && !may_fragment))
            .then(|| arrived[..ip.total.min(icmp::QUOTE_MAX)].to_vec());
        let lan = Via::Lan(self.next_hop.mac.unwrap_or(mac_at(frame.bytes(), 6)));
        let l4sum = l4_checksum(frame, ETH_LEN + ip.ihl)?;
        let packet = &mut frame.bytes_mut()[ETH_LEN..ETH_LEN + ip.total];
        let t = self.nat.inbound_parsed(now, ip, packet, l4sum)?;
        self.sync_fast(t.flow);
        if t.state_changed {
            self.export_flow(now, t.flow);
        }
        let egress = self.owned[owner].ip.address;
        if let Some(quote) = quote {
            let (kind, reason) = if expiring {
                (IcmpError::TimeExceeded, DropReason::TtlExpired)
            } else {
                let mtu = room as u16;
                (IcmpError::FragmentationNeeded { mtu }, DropReason::TooBig)
            };
            self.icmp_error(now, kind, egress, &quote, lan);
            return Err(reason);
        }
        decrement_ttl(packet);
        let Some(node) = self.nodes.get(t.node) else {
            return Err(DropReason::UnknownNode);
        };
        let src_port = encap::entropy_port(packet);
        if let Some(plan) = plan {
            // A super-packet (GRO on the way in) must leave as a train of tunnelled
            // segments: the kernel cannot segment a tunnel packet handed to a packet socket.
            let packet = &frame.bytes()[ETH_LEN..ETH_LEN + ip.total];
            self.tunnel_segments(packet, &plan, egress, t.node, node, src_port);
            self.counters.inbound.packets += wire_packets(ip.total, ip.headers(), gso);
            self.counters.inbound.bytes += ip.total as u64;
            return Ok(Verdict::Consumed);
        }
        if too_big {
            // Allowed to fragment: fragments of the translated packet, each tunnelled.
            if let Some(c) = frame.offload.checksum
                && !finish_checksum(&mut frame.bytes_mut()[..ETH_LEN + ip.total], c)
            {
                return Err(NatError::Malformed.into());
            }
            let packet = &frame.bytes()[ETH_LEN..ETH_LEN + ip.total];
            let mut scratch = Vec::new();
            self.counters.inbound.packets += icmp::fragment(packet, room, &mut scratch, |f| {
                let mut out = self.spare.pop().unwrap_or_default();
                out.clear();
                out.resize(ENCAP_LEN + ETH_LEN, 0);
                out.extend_from_slice(f);
                self.seal_tunnel(out, egress, t.node, node, src_port);
            });
            self.counters.inbound.bytes += ip.total as u64;
            return Ok(Verdict::Consumed);
        }
        self.counters.inbound.packets += 1;
        self.counters.inbound.bytes += ip.total as u64;
        // The inner frame keeps its place; its Ethernet header is rewritten for the node's
        // tunnel device and the outer headers go into the headroom in front.
        let mac = self.setup.mac;
        encap::write_ethernet(
            frame.bytes_mut(),
            node.tunnel_mac,
            mac,
            EthernetProtocol::Ipv4,
        );
        let inner_len = ETH_LEN + ip.total;
        let outer = self.outer(egress, t.node, node.mac, src_port);
        if frame.start >= ENCAP_LEN {
            let start = frame.start - ENCAP_LEN;
            encap::write_encap(&mut frame.buf[start..], &outer, inner_len);
            frame.start = start;
            frame.end = start + ENCAP_LEN + inner_len;
            frame.offload = frame.offload.shifted(ENCAP_LEN as isize);
            return Ok(Verdict::Transmit);
        }
        let mut out = self.spare.pop().unwrap_or_default();
        out.clear();
        out.resize(ENCAP_LEN + inner_len, 0);
        out[ENCAP_LEN..].copy_from_slice(&frame.bytes()[..inner_len]);
        encap::write_encap(&mut out, &outer, inner_len);
        self.generated.push(Generated {
            frame: out,
            offload: frame.offload.shifted(ENCAP_LEN as isize),
        });
        Ok(Verdict::Consumed)
    }

    /// Cuts a translated super-packet into segments and tunnels them to the node.
    ///
    /// A packet socket cannot hand the kernel a super-packet of tunnelled TCP, but it can
    /// hand it a UDP one (UDP GSO), which the kernel cuts at a fixed size. So each segment
    /// is made a whole VXLAN payload of exactly that size (VXLAN header, inner Ethernet,
    /// IPv4, TCP, data), with its inner checksum complete, and the train of them rides in
    /// one outer UDP super-packet: one send, cut by the kernel (or the NIC) into ordinary
    /// VXLAN packets, which the node's VXLAN device merges again with GRO.
    pub(super) fn tunnel_segments(
        &mut self,
        packet: &[u8],
        plan: &Segments,
        egress: Ipv4Addr,
        node_ip: Ipv4Addr,
        node: Node,
        src_port: u16,
    ) {
        let vx = crate::wire::vxlan::HEADER_LEN;
        let seg = |i: usize| vx + ETH_LEN + plan.len(i);
        let per_send = ((usize::from(u16::MAX) - (encap::UDP_PAYLOAD - ETH_LEN)) / seg(0))
            .clamp(1, UDP_GSO_MAX_SEGMENTS);
        let mut first = 0;
        while first < plan.count {
            let last = (first + per_send).min(plan.count);
            let udp_payload: usize = (first..last).map(seg).sum();
            let mut out = self.spare.pop().unwrap_or_default();
            out.clear();
            out.resize(encap::UDP_PAYLOAD + udp_payload, 0);
            let mut at = encap::UDP_PAYLOAD;
            for i in first..last {
                crate::wire::VxlanPacket::new_unchecked(&mut out[at..at + vx])
                    .set_header(self.setup.vni);
                encap::write_ethernet(
                    &mut out[at + vx..],
                    node.tunnel_mac,
                    self.setup.mac,
                    EthernetProtocol::Ipv4,
                );
                plan.write(packet, i, &mut out[at + vx + ETH_LEN..at + seg(i)], true);
                at += seg(i);
            }
            let outer = self.outer(egress, node_ip, node.mac, src_port);
            encap::write_outer(&mut out, &outer, udp_payload);
            let offload = if last - first > 1 {
                // UDP GSO needs the outer checksum to the offload: its field holds the
                // pseudo-header sum over the whole super-packet's length.
                let sum = crate::nat::checksum::pseudo_header_sum(
                    egress.octets(),
                    node_ip.octets(),
                    IpProtocol::Udp.into(),
                    (8 + udp_payload) as u16,
                );
                out[encap::OUTER_UDP + 6..encap::OUTER_UDP + 8].copy_from_slice(&sum.to_be_bytes());
                Offload {
                    checksum: Some(PartialChecksum {
                        start: encap::OUTER_UDP as u16,
                        offset: 6,
                    }),
                    gso: Some(Gso {
                        kind: GsoKind::Udpv4,
                        size: seg(first) as u16,
                    }),
                }
            } else {
                Offload::default()
            };
            self.generated.push(Generated {
                frame: out,
                offload,
            });
            first = last;
        }
    }

    /// Finishes `out`, an inner IPv4 packet behind `ENCAP_LEN + ETH_LEN` bytes of room, as
    /// a VXLAN frame from `egress` to a node, and queues it.
    pub(super) fn seal_tunnel(
        &mut self,
        mut out: Vec<u8>,
        egress: Ipv4Addr,
        node_ip: Ipv4Addr,
        node: Node,
        src_port: u16,
    ) {
        let inner_len = out.len() - ENCAP_LEN;
        let mac = self.setup.mac;
        encap::write_ethernet(
            &mut out[ENCAP_LEN..],
            node.tunnel_mac,
            mac,
            EthernetProtocol::Ipv4,
        );
        let outer = self.outer(egress, node_ip, node.mac, src_port);
        encap::write_encap(&mut out, &outer, inner_len);
        self.generated.push(Generated {
            frame: out,
            offload: Offload::default(),
        });
    }

    pub(super) fn outer(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        dst_mac: EthernetAddress,
        src_port: u16,
    ) -> Outer {
        self.ip_id = self.ip_id.wrapping_add(1);
        Outer {
            src_mac: self.setup.mac,
            dst_mac,
            src,
            dst,
            src_port,
            dst_port: self.setup.tunnel_port,
            vni: self.setup.vni,
            ip_id: self.ip_id,
        }
    }
}
