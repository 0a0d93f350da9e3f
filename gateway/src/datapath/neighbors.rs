//! Layer-2 addresses the data path needs and learns itself, without the host's kernel:
//! the next hop's MAC (resolved by our own ARP) and, per node, the MACs that reach it.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::EthernetAddress;

/// How often an unresolved next hop is asked for.
pub const ARP_RETRY: Duration = Duration::from_secs(1);
/// How often a resolved next hop is asked again, to notice a replaced router.
pub const ARP_REFRESH: Duration = Duration::from_secs(30);

/// The next hop towards the outside world.
#[derive(Debug, Clone)]
pub struct NextHop {
    pub address: Ipv4Addr,
    pub mac: Option<EthernetAddress>,
    /// When to send the next ARP request.
    pub ask_at: Instant,
}

impl NextHop {
    pub fn new(address: Ipv4Addr, now: Instant) -> NextHop {
        NextHop {
            address,
            mac: None,
            ask_at: now,
        }
    }

    /// Takes the MAC from any ARP packet the next hop sent.
    pub fn learn(&mut self, now: Instant, mac: EthernetAddress) {
        if self.mac.is_none() {
            tracing::info!(next_hop = %self.address, %mac, "next hop resolved");
        } else if self.mac != Some(mac) {
            tracing::info!(next_hop = %self.address, %mac, "next hop moved to a new MAC");
        }
        self.mac = Some(mac);
        self.ask_at = now + ARP_REFRESH;
    }

    /// Whether an ARP request is due; if so, schedules the next one.
    pub fn due(&mut self, now: Instant) -> bool {
        if now < self.ask_at {
            return false;
        }
        self.ask_at = now
            + if self.mac.is_some() {
                ARP_REFRESH
            } else {
                ARP_RETRY
            };
        true
    }
}

/// How a node is reached: the outer MAC its tunnelled frames came from (its own, or its
/// router's when it is not on our link), and the MAC of its tunnel device, which the inner
/// frames of replies must carry for the node's kernel to accept them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub mac: EthernetAddress,
    pub tunnel_mac: EthernetAddress,
}

/// Nodes that sent tunnelled traffic, learned from that traffic.
#[derive(Debug, Default)]
pub struct Nodes {
    map: HashMap<Ipv4Addr, Node, foldhash::fast::RandomState>,
    /// The node of the previous packet: bursts come from one node, so most lookups stop here.
    last: Option<(Ipv4Addr, Node)>,
}

/// Nodes remembered at most; `allowed_sources` bounds who can be one.
pub const MAX_NODES: usize = 1 << 16;

/// What [`Nodes::learn`] made of a node's MACs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Known already (or no room for another node).
    Same,
    /// A node not known before.
    New,
    /// Different MACs replace the known ones (its interface or tunnel device changed).
    Changed,
}

impl Nodes {
    /// Records the MACs a node's frame carried.
    #[inline]
    pub fn learn(&mut self, address: Ipv4Addr, node: Node) -> Learned {
        if self.last == Some((address, node)) {
            return Learned::Same;
        }
        self.last = Some((address, node));
        if self.map.len() >= MAX_NODES && !self.map.contains_key(&address) {
            return Learned::Same;
        }
        match self.map.insert(address, node) {
            Some(old) if old == node => Learned::Same,
            old => {
                tracing::debug!(%address, mac = %node.mac, tunnel_mac = %node.tunnel_mac, "node learned");
                if old.is_some() {
                    Learned::Changed
                } else {
                    Learned::New
                }
            }
        }
    }

    #[inline]
    pub fn get(&self, address: Ipv4Addr) -> Option<Node> {
        match self.last {
            Some((a, n)) if a == address => Some(n),
            _ => self.map.get(&address).copied(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, Node)> + '_ {
        self.map.iter().map(|(a, n)| (*a, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hop_is_asked_every_second_until_resolved_then_rarely() {
        let t0 = Instant::from_secs(100);
        let mut hop = NextHop::new(Ipv4Addr::new(192, 168, 1, 1), t0);
        assert!(hop.due(t0));
        assert!(!hop.due(t0 + Duration::from_millis(999)));
        assert!(hop.due(t0 + ARP_RETRY));
        hop.learn(t0 + ARP_RETRY, EthernetAddress([2, 0, 0, 0, 0, 1]));
        assert!(!hop.due(t0 + ARP_RETRY + Duration::from_secs(29)));
        assert!(hop.due(t0 + ARP_RETRY + ARP_REFRESH));
        assert_eq!(hop.mac, Some(EthernetAddress([2, 0, 0, 0, 0, 1])));
    }

    #[test]
    fn nodes_follow_their_latest_macs() {
        let mut nodes = Nodes::default();
        let a = Ipv4Addr::new(192, 168, 1, 21);
        let b = Ipv4Addr::new(192, 168, 1, 22);
        let n1 = Node {
            mac: EthernetAddress([2, 0, 0, 0, 0, 21]),
            tunnel_mac: EthernetAddress([2, 0, 0, 0, 1, 21]),
        };
        let n2 = Node {
            mac: EthernetAddress([2, 0, 0, 0, 0, 22]),
            tunnel_mac: EthernetAddress([2, 0, 0, 0, 1, 22]),
        };
        nodes.learn(a, n1);
        nodes.learn(b, n2);
        assert_eq!(nodes.get(a), Some(n1));
        assert_eq!(nodes.get(b), Some(n2));
        let moved = Node {
            tunnel_mac: EthernetAddress([2, 0, 0, 0, 2, 21]),
            ..n1
        };
        nodes.learn(a, moved);
        assert_eq!(nodes.get(a), Some(moved));
        assert_eq!(nodes.get(Ipv4Addr::new(192, 168, 1, 23)), None);
        assert_eq!(nodes.iter().count(), 2);
    }
}
