//! Layer-2 addresses the data path needs and learns itself, without the host's kernel:
//! the next hop's MAC (resolved by our own ARP) and, per node, the MACs that reach it.
//!
//! A node's binding is what replies are sent to, so any host that can send a frame with a
//! node's address must not be able to move it. A node is bound to the MACs of its first
//! frame; from then on its outer MAC changes only once this gateway has confirmed the new
//! one: a frame from another MAC is refused and the node *probed* — a broadcast ARP
//! request for its address, at most every [`PROBE_EVERY`] per node and
//! [`PROBES_PER_SECOND`] in all — and after [`PROBE_WAIT`] the answers decide: only the
//! bound MAC confirms the binding, only another one moves it there, several keep it (a
//! conflict: someone else claims the address). A node outside our subnet must come from
//! our next hop's MAC, which our own ARP resolves. The tunnel device MAC is taken only from
//! frames of the bound outer MAC, and a peer's record never replaces a confirmed binding.

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

/// How a node is reached: the outer MAC its tunnelled frames come from (its own, or its
/// router's when it is not on our link), and the MAC of its tunnel device, which the inner
/// frames of replies must carry for the node's kernel to accept them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub mac: EthernetAddress,
    pub tunnel_mac: EthernetAddress,
}

/// How long a probe waits for answers before it decides.
pub const PROBE_WAIT: Duration = Duration::from_millis(100);
/// A node is probed at most this often.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Probes started per second at most, in all (a burst of as many): a host spoofing many
/// node addresses cannot make the gateway flood the segment with ARP.
pub const PROBES_PER_SECOND: u32 = 64;
/// Distinct answers a probe keeps; more are as conflicting as two.
const ANSWERS: usize = 4;

/// A node's binding: its MACs and whether this gateway has confirmed the outer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    pub node: Node,
    /// Confirmed: by an ARP probe answered by that MAC alone (a node on our link), or by
    /// being our next hop's MAC (a node behind a router).
    pub verified: bool,
}

/// An ARP probe of a node's address under way.
#[derive(Debug, Clone)]
struct Probe {
    address: Ipv4Addr,
    decide_at: Instant,
    /// The MACs that answered, distinct.
    answers: Vec<EthernetAddress>,
    /// The tunnel device MAC the frame that prompted the probe carried, by its outer MAC.
    candidate: Node,
}

/// What a probe concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Verdict {
    /// One MAC answered, the bound one: the binding is confirmed (frames from another MAC
    /// were spoofed).
    Confirmed,
    /// One MAC answered, another than the bound one: the node moved there.
    Moved,
    /// Several MACs answered: someone else claims the node's address. The binding stays.
    Conflict,
    /// Nobody answered: the binding stays as it was.
    Unanswered,
}

/// What the data path must do after a frame from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Its MACs are the bound ones.
    Same,
    /// A node not known before, bound from this frame until a probe confirms it.
    New,
    /// The bound outer MAC sent a new tunnel device MAC: taken (the node's own frames).
    TunnelMoved,
    /// Another outer MAC than the bound one: the frame is refused, and the node probed.
    Mismatch,
}

/// Nodes that sent tunnelled traffic, bound to the MACs this gateway confirmed.
#[derive(Debug, Default)]
pub struct Nodes {
    map: HashMap<Ipv4Addr, Binding, foldhash::fast::RandomState>,
    /// The node of the previous packet: bursts come from one node, so most lookups stop here.
    last: Option<(Ipv4Addr, Node)>,
    probes: Vec<Probe>,
    /// Probes started and not yet asked on the wire.
    requests: Vec<Ipv4Addr>,
    /// When each node was last probed.
    probed_at: HashMap<Ipv4Addr, Instant, foldhash::fast::RandomState>,
    /// Probe budget: tokens left and when they were last topped up.
    tokens: u32,
    refilled: Option<Instant>,
    /// Nodes whose conflict was already logged.
    logged: std::collections::HashSet<Ipv4Addr, foldhash::fast::RandomState>,
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
    /// A frame from `address` carried `seen`. `expected` is the outer MAC it must come
    /// from when that is known without asking (a node behind our next hop); otherwise a
    /// node whose outer MAC is not the bound one is probed (an ARP request; see the module doc).
    pub fn observe(
        &mut self,
        now: Instant,
        address: Ipv4Addr,
        seen: Node,
        expected: Option<EthernetAddress>,
    ) -> Seen {
        if self.last == Some((address, seen)) {
            return Seen::Same;
        }
        let verdict = match self.map.get_mut(&address) {
            None => {
                if self.map.len() >= MAX_NODES {
                    return Seen::Mismatch;
                }
                let verified = expected == Some(seen.mac);
                if expected.is_some() && !verified {
                    return Seen::Mismatch;
                }
                self.map.insert(
                    address,
                    Binding {
                        node: seen,
                        verified,
                    },
                );
                tracing::debug!(%address, mac = %seen.mac, tunnel_mac = %seen.tunnel_mac, "node learned");
                if !verified {
                    self.probe(now, address, seen);
                }
                Seen::New
            }
            Some(b) if b.node.mac == seen.mac => {
                if b.node.tunnel_mac == seen.tunnel_mac {
                    Seen::Same
                } else {
                    b.node.tunnel_mac = seen.tunnel_mac;
                    Seen::TunnelMoved
                }
            }
            Some(b) => {
                if expected == Some(seen.mac) {
                    // Our next hop's MAC changed (a router replaced): it is ours to trust.
                    *b = Binding {
                        node: seen,
                        verified: true,
                    };
                    Seen::TunnelMoved
                } else {
                    if expected.is_none() {
                        self.probe(now, address, seen);
                    }
                    Seen::Mismatch
                }
            }
        };
        if verdict != Seen::Mismatch {
            self.last = Some((address, seen));
        }
        verdict
    }

    /// Starts a probe of `address` if it has none, was not probed within
    /// [`PROBE_EVERY`] and the budget allows; [`take_probes`](Self::take_probes) hands the
    /// request to send.
    fn probe(&mut self, now: Instant, address: Ipv4Addr, candidate: Node) {
        if self.probes.iter().any(|p| p.address == address)
            || self
                .probed_at
                .get(&address)
                .is_some_and(|at| now < *at + PROBE_EVERY)
        {
            return;
        }
        match self.refilled {
            Some(at) if now < at + Duration::from_secs(1) => {}
            _ => {
                self.tokens = PROBES_PER_SECOND;
                self.refilled = Some(now);
            }
        }
        if self.tokens == 0 {
            return;
        }
        self.tokens -= 1;
        if self.probed_at.len() >= MAX_NODES {
            self.probed_at.retain(|_, at| now < *at + PROBE_EVERY);
        }
        self.probed_at.insert(address, now);
        self.requests.push(address);
        self.probes.push(Probe {
            address,
            decide_at: now + PROBE_WAIT,
            answers: Vec::new(),
            candidate,
        });
    }

    /// The addresses whose probes started since the last call: the ARP requests to send
    /// (one each, broadcast).
    pub fn take_probes(&mut self, out: &mut Vec<Ipv4Addr>) {
        out.append(&mut self.requests);
    }

    /// An ARP packet from `mac` claims `address`: an answer if `address` is being probed.
    pub fn arp_from(&mut self, address: Ipv4Addr, mac: EthernetAddress) {
        if let Some(p) = self.probes.iter_mut().find(|p| p.address == address)
            && !p.answers.contains(&mac)
            && p.answers.len() < ANSWERS
        {
            p.answers.push(mac);
        }
    }

    /// Decides the probes whose wait is over; each verdict with the node's binding after
    /// it, in `out`.
    pub fn decide(&mut self, now: Instant, out: &mut Vec<(Ipv4Addr, Verdict, Binding)>) {
        let mut i = 0;
        while i < self.probes.len() {
            if now < self.probes[i].decide_at {
                i += 1;
                continue;
            }
            let p = self.probes.swap_remove(i);
            let Some(b) = self.map.get_mut(&p.address) else {
                continue;
            };
            let verdict = match p.answers[..] {
                [] => Verdict::Unanswered,
                [mac] if mac == b.node.mac => {
                    b.verified = true;
                    Verdict::Confirmed
                }
                [mac] => {
                    let tunnel_mac = if p.candidate.mac == mac {
                        p.candidate.tunnel_mac
                    } else {
                        b.node.tunnel_mac
                    };
                    b.node = Node { mac, tunnel_mac };
                    b.verified = true;
                    Verdict::Moved
                }
                _ => {
                    if self.logged.len() < MAX_NODES && self.logged.insert(p.address) {
                        tracing::warn!(
                            node = %p.address,
                            bound = %b.node.mac,
                            answers = ?p.answers.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
                            "several hosts answer ARP for a node's address; keeping its binding"
                        );
                    }
                    Verdict::Conflict
                }
            };
            if verdict == Verdict::Moved {
                tracing::info!(node = %p.address, mac = %b.node.mac, "node moved to a new MAC (confirmed by ARP)");
                self.last = None;
            }
            out.push((p.address, verdict, *b));
        }
    }

    /// When the next probe decides.
    pub fn poll_at(&self) -> Option<Instant> {
        self.probes.iter().map(|p| p.decide_at).min()
    }

    /// Takes a peer's record of a node, unless this gateway verified another binding.
    /// Returns `None` when refused.
    pub fn learn_from_peer(&mut self, address: Ipv4Addr, node: Node) -> Option<Learned> {
        match self.map.get(&address) {
            Some(b) if b.verified && b.node != node => None,
            Some(b) if b.node == node => Some(Learned::Same),
            Some(_) => {
                self.map.insert(
                    address,
                    Binding {
                        node,
                        verified: false,
                    },
                );
                self.last = None;
                Some(Learned::Changed)
            }
            None if self.map.len() >= MAX_NODES => Some(Learned::Same),
            None => {
                self.map.insert(
                    address,
                    Binding {
                        node,
                        verified: false,
                    },
                );
                Some(Learned::New)
            }
        }
    }

    #[inline]
    pub fn get(&self, address: Ipv4Addr) -> Option<Node> {
        match self.last {
            Some((a, n)) if a == address => Some(n),
            _ => self.map.get(&address).map(|b| b.node),
        }
    }

    pub fn binding(&self, address: Ipv4Addr) -> Option<Binding> {
        self.map.get(&address).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, Binding)> + '_ {
        self.map.iter().map(|(a, b)| (*a, *b))
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

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 21);
    const N1: Node = Node {
        mac: EthernetAddress([2, 0, 0, 0, 0, 21]),
        tunnel_mac: EthernetAddress([2, 0, 0, 0, 1, 21]),
    };
    const EVIL: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x66]);

    fn at(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    fn decided(nodes: &mut Nodes, now: Instant) -> Vec<(Verdict, Binding)> {
        let mut out = Vec::new();
        nodes.decide(now, &mut out);
        out.into_iter().map(|(_, v, b)| (v, b)).collect()
    }

    #[test]
    fn a_new_node_is_bound_at_once_and_confirmed_by_its_arp_answer() {
        let mut nodes = Nodes::default();
        assert_eq!(nodes.observe(at(0), A, N1, None), Seen::New);
        assert_eq!(nodes.get(A), Some(N1));
        let mut probes = Vec::new();
        nodes.take_probes(&mut probes);
        assert_eq!(probes, vec![A]);
        assert_eq!(nodes.poll_at(), Some(at(0) + PROBE_WAIT));
        nodes.arp_from(A, N1.mac);
        assert!(decided(&mut nodes, at(99)).is_empty());
        let verified = Binding {
            node: N1,
            verified: true,
        };
        assert_eq!(
            decided(&mut nodes, at(100)),
            vec![(Verdict::Confirmed, verified)]
        );
        // Its own frames, with a new tunnel device: taken.
        let vx = Node {
            tunnel_mac: EthernetAddress([2, 0, 0, 0, 2, 21]),
            ..N1
        };
        assert_eq!(nodes.observe(at(200), A, vx, None), Seen::TunnelMoved);
        assert_eq!(nodes.get(A), Some(vx));
    }

    #[test]
    fn a_spoofed_mac_is_refused_and_never_replaces_a_confirmed_binding() {
        let mut nodes = Nodes::default();
        nodes.observe(at(0), A, N1, None);
        nodes.take_probes(&mut Vec::new());
        nodes.arp_from(A, N1.mac);
        decided(&mut nodes, at(100));
        let evil = Node {
            mac: EVIL,
            tunnel_mac: EVIL,
        };
        // Frames from another MAC: refused, and the node probed once a second at most.
        assert_eq!(nodes.observe(at(500), A, evil, None), Seen::Mismatch);
        assert_eq!(nodes.poll_at(), None, "probed at 0, not again before 1 s");
        assert_eq!(nodes.observe(at(1000), A, evil, None), Seen::Mismatch);
        assert_eq!(nodes.observe(at(1001), A, evil, None), Seen::Mismatch);
        let mut probes = Vec::new();
        nodes.take_probes(&mut probes);
        assert_eq!(probes, vec![A]);
        // Only the real node answers: confirmed again, the spoofer gained nothing.
        nodes.arp_from(A, N1.mac);
        assert_eq!(
            decided(&mut nodes, at(1100)),
            vec![(
                Verdict::Confirmed,
                Binding {
                    node: N1,
                    verified: true
                }
            )]
        );
        assert_eq!(nodes.get(A), Some(N1));
        // The spoofer also answers ARP: a conflict, and the binding stays.
        nodes.observe(at(2100), A, evil, None);
        nodes.arp_from(A, N1.mac);
        nodes.arp_from(A, EVIL);
        nodes.arp_from(A, EVIL);
        assert_eq!(decided(&mut nodes, at(2200))[0].0, Verdict::Conflict);
        assert_eq!(nodes.get(A), Some(N1));
        // A peer's record cannot replace a verified binding either.
        assert_eq!(nodes.learn_from_peer(A, evil), None);
        assert_eq!(nodes.learn_from_peer(A, N1), Some(Learned::Same));
    }

    #[test]
    fn a_node_that_really_moved_is_rebound_once_arp_confirms_it() {
        let mut nodes = Nodes::default();
        nodes.observe(at(0), A, N1, None);
        nodes.arp_from(A, N1.mac);
        decided(&mut nodes, at(100));
        let new = Node {
            mac: EthernetAddress([2, 0, 0, 0, 9, 21]),
            tunnel_mac: EthernetAddress([2, 0, 0, 0, 9, 22]),
        };
        assert_eq!(nodes.observe(at(5000), A, new, None), Seen::Mismatch);
        nodes.arp_from(A, new.mac);
        let got = decided(&mut nodes, at(5100));
        assert_eq!(
            got,
            vec![(
                Verdict::Moved,
                Binding {
                    node: new,
                    verified: true
                }
            )]
        );
        assert_eq!(nodes.observe(at(5200), A, new, None), Seen::Same);
    }

    #[test]
    fn an_attacker_first_is_replaced_by_what_arp_says() {
        let mut nodes = Nodes::default();
        let evil = Node {
            mac: EVIL,
            tunnel_mac: EVIL,
        };
        assert_eq!(nodes.observe(at(0), A, evil, None), Seen::New);
        nodes.arp_from(A, N1.mac);
        let got = decided(&mut nodes, at(100));
        assert_eq!(got[0].0, Verdict::Moved);
        assert_eq!(nodes.get(A).map(|n| n.mac), Some(N1.mac));
        // Its tunnel MAC is learnt from the node's own next frame.
        assert_eq!(nodes.observe(at(200), A, N1, None), Seen::TunnelMoved);
        assert_eq!(nodes.get(A), Some(N1));
    }

    #[test]
    fn a_node_behind_the_router_must_come_from_the_next_hop() {
        let mut nodes = Nodes::default();
        let router = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let via = Node {
            mac: router,
            tunnel_mac: N1.tunnel_mac,
        };
        assert_eq!(nodes.observe(at(0), A, via, Some(router)), Seen::New);
        assert_eq!(nodes.binding(A).map(|b| b.verified), Some(true));
        assert_eq!(nodes.poll_at(), None, "nothing to ask");
        let evil = Node { mac: EVIL, ..via };
        assert_eq!(nodes.observe(at(1), A, evil, Some(router)), Seen::Mismatch);
        assert_eq!(
            nodes.observe(at(2), Ipv4Addr::new(10, 9, 9, 9), evil, Some(router)),
            Seen::Mismatch
        );
        // The router replaced: our next hop's new MAC is trusted.
        let router2 = EthernetAddress([2, 0, 0, 0, 0, 2]);
        let via2 = Node {
            mac: router2,
            ..via
        };
        assert_eq!(
            nodes.observe(at(3), A, via2, Some(router2)),
            Seen::TunnelMoved
        );
        assert_eq!(nodes.get(A), Some(via2));
    }

    #[test]
    fn probes_are_budgeted() {
        let mut nodes = Nodes::default();
        for i in 0..200u32 {
            let address = Ipv4Addr::from_bits(0x0a00_0000 + i);
            nodes.observe(at(0), address, N1, None);
        }
        let mut probes = Vec::new();
        nodes.take_probes(&mut probes);
        assert_eq!(probes.len(), PROBES_PER_SECOND as usize);
    }
}
