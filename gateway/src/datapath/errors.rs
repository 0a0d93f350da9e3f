//! ICMP the gateway answers as a router: echo to a floating IP, and the errors of
//! [`super::icmp`] (time exceeded, fragmentation needed), rate-limited.

use super::*;

impl Datapath {
    /// Answers an ICMP echo request to a floating IP, in place.
    pub(super) fn echo_reply(
        &mut self,
        frame: &mut Frame<'_>,
        ip: &Ipv4,
    ) -> Result<Verdict, DropReason> {
        let l4 = ETH_LEN + ip.ihl;
        let end = ETH_LEN + ip.total;
        if end < l4 + 8 || frame.offload.gso.is_some() {
            return Err(NatError::Malformed.into());
        }
        let src_mac = mac_at(frame.bytes(), 6);
        let b = frame.bytes_mut();
        if full(&b[l4..end]) != 0 {
            return Err(NatError::BadChecksum.into());
        }
        encap::write_ethernet(b, src_mac, self.setup.mac, EthernetProtocol::Ipv4);
        b[ETH_LEN + 12..ETH_LEN + 16].copy_from_slice(&ip.dst.octets());
        b[ETH_LEN + 16..ETH_LEN + 20].copy_from_slice(&ip.src.octets());
        b[ETH_LEN + 8] = OWN_TTL;
        b[ETH_LEN + 10..ETH_LEN + 12].fill(0);
        let sum = full(&b[ETH_LEN..l4]);
        b[ETH_LEN + 10..ETH_LEN + 12].copy_from_slice(&sum.to_be_bytes());
        let mut delta = ChecksumDelta::default();
        delta.word(
            be16(b, l4),
            u16::from(u8::from(Icmpv4Message::EchoReply)) << 8 | u16::from(b[l4 + 1]),
        );
        b[l4] = Icmpv4Message::EchoReply.into();
        let sum = delta.apply(be16(b, l4 + 2));
        b[l4 + 2..l4 + 4].copy_from_slice(&sum.to_be_bytes());
        frame.end = frame.start + end;
        // The checksum was verified whole above: nothing is left for an offload to finish.
        frame.offload = Offload::default();
        self.counters.icmp_echo_replies_sent += 1;
        Ok(Verdict::Transmit)
    }

    /// Queues an ICMP error from `src` (a floating IP) about the IPv4 packet `original`,
    /// when RFC 1812 and the rate limit allow one.
    pub(super) fn icmp_error(
        &mut self,
        now: Instant,
        kind: IcmpError,
        src: Ipv4Addr,
        original: &[u8],
        via: Via,
    ) {
        if !icmp::may_answer(original) {
            return;
        }
        if !self.icmp_limit.allow(now) {
            self.counters.icmp_errors_rate_limited += 1;
            return;
        }
        self.ip_id = self.ip_id.wrapping_add(1);
        let mut out = self.spare.pop().unwrap_or_default();
        out.clear();
        match via {
            Via::Lan(mac) => {
                out.resize(ETH_LEN, 0);
                icmp::write_error(&mut out, kind, src, original, self.ip_id);
                encap::write_ethernet(&mut out, mac, self.setup.mac, EthernetProtocol::Ipv4);
                self.generated.push(Generated {
                    frame: out,
                    offload: Offload::default(),
                });
            }
            Via::Tunnel(node_ip, node) => {
                out.resize(ENCAP_LEN + ETH_LEN, 0);
                icmp::write_error(&mut out, kind, src, original, self.ip_id);
                let src_port = encap::entropy_port(&out[ENCAP_LEN + ETH_LEN..]);
                self.seal_tunnel(out, src, node_ip, node, src_port);
            }
        }
        self.counters.icmp_errors_sent += 1;
    }
}
