//! ARP: answers for the floating IPs on the LAN and, as the nodes' router, inside the
//! tunnel; the next hop learnt from its answers; and the probes that confirm a node's MAC
//! before its binding is trusted or moved (see [`super::neighbors`]).

use super::*;

impl Datapath {
    /// ARP on the LAN: answer requests for our floating IPs, learn the next hop.
    pub(super) fn arp(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        let Ok(packet) = ArpPacket::new_checked(&frame.bytes()[ETH_LEN..]) else {
            return Verdict::Ignore;
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&packet)
        else {
            return Verdict::Ignore;
        };
        if source_protocol_addr == self.next_hop.address {
            self.next_hop.learn(now, source_hardware_addr);
        }
        // An answer, if that address is being probed.
        self.nodes
            .arp_from(source_protocol_addr, source_hardware_addr);
        if operation != ArpOperation::Request || self.owner(target_protocol_addr).is_none() {
            return Verdict::Ignore;
        }
        let start = frame.start;
        encap::write_arp(
            &mut frame.buf[start..],
            source_hardware_addr,
            ArpOperation::Reply,
            (self.setup.mac, target_protocol_addr),
            (source_hardware_addr, source_protocol_addr),
        );
        frame.end = start + ARP_FRAME_LEN;
        frame.offload = Offload::default();
        self.counters.arp_requests_answered += 1;
        Verdict::Transmit
    }

    /// ARP inside the tunnel: the gateway is the node's router on the tunnel and answers
    /// for any address, sending the reply back through the tunnel.
    pub(super) fn tunnel_arp(
        &mut self,
        now: Instant,
        frame: &mut Frame<'_>,
        outer: &Ipv4,
        inner: usize,
        end: usize,
        node: Node,
    ) -> Result<Verdict, DropReason> {
        let b = frame.bytes();
        let packet = ArpPacket::new_checked(&b[inner + ETH_LEN..end])
            .map_err(|_| DropReason::Nat(NatError::Malformed))?;
        let Ok(ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&packet)
        else {
            return Ok(Verdict::Consumed);
        };
        if source_protocol_addr == target_protocol_addr {
            // The node announcing itself: nothing to answer.
            return Ok(Verdict::Consumed);
        }
        self.node_seen(now, outer.src, node)?;
        // The reply replaces the request; a fresh outer header goes in front of it.
        let at = frame.start + inner;
        encap::write_arp(
            &mut frame.buf[at..],
            source_hardware_addr,
            ArpOperation::Reply,
            (self.setup.mac, target_protocol_addr),
            (source_hardware_addr, source_protocol_addr),
        );
        // The node's own flow hash for this tunnel, echoed back.
        let src_port = be16(frame.bytes(), ETH_LEN + outer.ihl);
        let outer_hdr = self.outer(outer.dst, outer.src, node.mac, src_port);
        let start = at - ENCAP_LEN;
        encap::write_encap(&mut frame.buf[start..], &outer_hdr, ARP_FRAME_LEN);
        frame.start = start;
        frame.end = at + ARP_FRAME_LEN;
        frame.offload = Offload::default();
        self.counters.arp_requests_answered += 1;
        Ok(Verdict::Transmit)
    }

    pub(super) fn generate_arp(
        &mut self,
        eth_dst: EthernetAddress,
        op: ArpOperation,
        source: (EthernetAddress, Ipv4Addr),
        target: (EthernetAddress, Ipv4Addr),
    ) {
        let mut out = self.spare.pop().unwrap_or_default();
        out.clear();
        out.extend_from_slice(&encap::arp_frame(eth_dst, op, source, target));
        self.generated.push(Generated {
            frame: out,
            offload: Offload::default(),
        });
    }

    /// A frame from node `address` carried `seen`: refused when its outer MAC is not the
    /// node's bound one (see [`neighbors`]); new and changed bindings are shared with the
    /// peers once confirmed.
    pub(super) fn node_seen(
        &mut self,
        now: Instant,
        address: Ipv4Addr,
        seen: Node,
    ) -> Result<(), DropReason> {
        let subnet = Ipv4Cidr::new(self.setup.address, self.setup.prefix_len);
        let expected = if subnet.contains_addr(&address) {
            None
        } else {
            // Behind a router: its frames come from our next hop, or cannot be trusted.
            Some(self.next_hop.mac.ok_or(DropReason::NoNeighbor)?)
        };
        let result = match self.nodes.observe(now, address, seen, expected) {
            // The packet path's case: nothing to probe or share.
            neighbors::Seen::Same => return Ok(()),
            neighbors::Seen::New => {
                // Shared at once, so a peer taking over can reach the node; a peer never
                // lets it replace a binding it verified, and a probe settles it here.
                self.export_node(address, seen);
                Ok(())
            }
            neighbors::Seen::TunnelMoved => {
                if self.fast {
                    self.forget_node(address);
                }
                self.export_node(address, seen);
                Ok(())
            }
            neighbors::Seen::Mismatch => Err(DropReason::NodeMismatch),
        };
        self.send_probes();
        result
    }

    /// Sends the ARP requests of the probes just started: broadcast, from the interface's
    /// address, so that every host claiming the node's address answers.
    pub(super) fn send_probes(&mut self) {
        let mut asked = std::mem::take(&mut self.probe_scratch);
        self.nodes.take_probes(&mut asked);
        for address in asked.drain(..) {
            let source = (self.setup.mac, self.setup.address);
            let target = (EthernetAddress([0; 6]), address);
            self.generate_arp(
                EthernetAddress::BROADCAST,
                ArpOperation::Request,
                source,
                target,
            );
            self.counters.node_probes += 1;
        }
        self.probe_scratch = asked;
    }

    /// Applies the probes whose wait is over.
    pub(super) fn decide_probes(&mut self, now: Instant) {
        let mut verdicts = Vec::new();
        self.nodes.decide(now, &mut verdicts);
        for (address, verdict, binding) in verdicts {
            self.counters.node_verdicts[verdict as usize] += 1;
            // Only a move changes the binding.
            if verdict == NodeVerdict::Moved {
                if self.fast {
                    self.forget_node(address);
                }
                self.export_node(address, binding.node);
            }
        }
    }
}
