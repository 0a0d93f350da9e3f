//! What the data path counts: traffic each way, drops by reason, frames it generated, and
//! NAT port use per egress address.

use crate::nat::NatError;
pub use crate::status::Traffic;

/// Why the data path refused a packet addressed to one of its floating IPs. The `reason`
/// label of `egret_gateway_drops_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// VXLAN with a VNI other than `[tunnel].vni`.
    WrongVni,
    /// VXLAN from an outer source outside `[tunnel].allowed_sources`.
    DisallowedSource,
    /// The TTL would reach zero here.
    TtlExpired,
    /// The next hop's MAC address is not resolved (yet).
    NoNeighbor,
    /// A reply for a flow whose node the gateway no longer knows how to reach.
    UnknownNode,
    /// A frame cut short on receipt, or a super-packet the gateway cannot segment.
    Truncated,
    /// Too big for the interface once encapsulated, and not allowed to fragment.
    TooBig,
    /// Addressed to a floating IP this gateway does not own now (it is a backup for it).
    NotMaster,
    /// Tunnelled from a node's address but not from the node's bound MAC: spoofed, or the
    /// node moved and the ARP probe that confirms it is under way.
    NodeMismatch,
    /// From a node toward a martian (loopback, multicast, broadcast, …), a gateway's own
    /// address or a floating IP.
    Martian,
    /// Lost before the data path saw it: the kernel found the receiving socket's buffer
    /// full. These are every kind of frame on the interface, not only those to a floating IP.
    RxBufferFull,
    /// Refused by parsing or by the NAT (malformed, bad checksum, no flow, no ports…).
    Nat(NatError),
}

/// The data path's own reasons, before the NAT's.
const OWN: [DropReason; 11] = [
    DropReason::WrongVni,
    DropReason::DisallowedSource,
    DropReason::TtlExpired,
    DropReason::NoNeighbor,
    DropReason::UnknownNode,
    DropReason::Truncated,
    DropReason::TooBig,
    DropReason::NotMaster,
    DropReason::NodeMismatch,
    DropReason::Martian,
    DropReason::RxBufferFull,
];

/// Number of distinct drop reasons.
pub const DROP_REASONS: usize = OWN.len() + NatError::ALL.len();

impl DropReason {
    /// Every reason, so metrics list them all from the start.
    pub fn all() -> impl Iterator<Item = DropReason> {
        OWN.into_iter()
            .chain(NatError::ALL.into_iter().map(DropReason::Nat))
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::WrongVni => "wrong_vni",
            DropReason::DisallowedSource => "disallowed_source",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::NoNeighbor => "no_neighbor",
            DropReason::UnknownNode => "unknown_node",
            DropReason::Truncated => "truncated",
            DropReason::TooBig => "too_big",
            DropReason::NotMaster => "not_master",
            DropReason::NodeMismatch => "node_mismatch",
            DropReason::Martian => "martian",
            DropReason::RxBufferFull => "rx_buffer_full",
            DropReason::Nat(e) => e.label(),
        }
    }

    /// Dense index into a counter array.
    fn index(self) -> usize {
        match self {
            DropReason::Nat(e) => {
                OWN.len()
                    + NatError::ALL
                        .iter()
                        .position(|x| *x == e)
                        .unwrap_or_default()
            }
            own => OWN.iter().position(|x| *x == own).unwrap_or_default(),
        }
    }
}

impl From<NatError> for DropReason {
    fn from(e: NatError) -> DropReason {
        DropReason::Nat(e)
    }
}

/// Plain counters, owned by the one thread that runs the data path.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub outbound: Traffic,
    pub inbound: Traffic,
    drops: [u64; DROP_REASONS],
    pub flows_created: u64,
    pub flows_expired: u64,
    pub arp_requests_answered: u64,
    pub arp_requests_sent: u64,
    pub gratuitous_arps_sent: u64,
    pub icmp_echo_replies_sent: u64,
    pub icmp_errors_sent: u64,
    pub icmp_errors_rate_limited: u64,
    pub tx_errors: u64,
    pub frames_read: u64,
    /// ARP probes of nodes sent, and their verdicts by [`NodeVerdict`](super::NodeVerdict).
    pub node_probes: u64,
    pub node_verdicts: [u64; 4],
}

impl Counters {
    #[inline]
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    pub fn drop_many(&mut self, reason: DropReason, count: u64) {
        self.drops[reason.index()] += count;
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
}

/// Distinct NAT ports in use on one egress address. A port serving flows to several
/// destinations (endpoint-dependent mapping) counts once.
#[derive(Debug, Clone)]
pub struct PortUse {
    flows_per_port: Vec<u32>,
    in_use: u32,
    flows: u64,
}

impl Default for PortUse {
    fn default() -> PortUse {
        PortUse {
            flows_per_port: vec![0; 1 << 16],
            in_use: 0,
            flows: 0,
        }
    }
}

impl PortUse {
    pub fn add(&mut self, port: u16) {
        let n = &mut self.flows_per_port[usize::from(port)];
        if *n == 0 {
            self.in_use += 1;
        }
        *n += 1;
        self.flows += 1;
    }

    pub fn remove(&mut self, port: u16) {
        let n = &mut self.flows_per_port[usize::from(port)];
        if *n == 0 {
            return;
        }
        *n -= 1;
        if *n == 0 {
            self.in_use -= 1;
        }
        self.flows -= 1;
    }

    pub fn ports_in_use(&self) -> u32 {
        self.in_use
    }

    pub fn flows(&self) -> u64 {
        self.flows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_label() {
        let mut c = Counters::default();
        let mut labels = std::collections::HashSet::new();
        for (i, r) in DropReason::all().enumerate() {
            assert!(labels.insert(r.label()), "duplicate label {}", r.label());
            for _ in 0..=i {
                c.drop(r);
            }
        }
        for (i, r) in DropReason::all().enumerate() {
            assert_eq!(c.drops(r), i as u64 + 1, "{}", r.label());
        }
        assert_eq!(labels.len(), DROP_REASONS);
    }

    #[test]
    fn a_port_shared_by_two_destinations_counts_once() {
        let mut p = PortUse::default();
        p.add(20000);
        p.add(20000);
        p.add(20001);
        assert_eq!((p.ports_in_use(), p.flows()), (2, 3));
        p.remove(20000);
        assert_eq!((p.ports_in_use(), p.flows()), (2, 2));
        p.remove(20000);
        p.remove(20000); // one too many: ignored, never negative
        assert_eq!((p.ports_in_use(), p.flows()), (1, 1));
    }
}
