//! The gateway's packet path, as a pure core: frames in, frames out, no sockets, no clock.
//!
//! [`Datapath::handle`] takes one received Ethernet frame and rewrites it in place into
//! the frame to send, or refuses it with a counted [`DropReason`]. A packet moves like this:
//!
//! ```text
//! node ──VXLAN──▶ parse outer ─▶ check source, VNI ─▶ decapsulate ─▶ TTL ─▶ NAT outbound ─▶ next hop
//! outside ──────▶ parse ─▶ NAT inbound (conntrack hit) ─▶ TTL ─▶ fits? ─▶ encapsulate ─▶ VXLAN to the node
//! ```
//!
//! Each IPv4 header is parsed and checked once ([`crate::nat::Ipv4Header`]); the NAT takes
//! it as parsed. The path is split by concern, one file each:
//! - `arp.rs`: ARP for the floating IPs on the LAN and inside the tunnel, the next hop, the
//!   probes that confirm a node's MAC;
//! - `outbound.rs`: VXLAN from a node to the outside world;
//! - `inbound.rs`: the outside world's replies back through the tunnel (segments, fragments);
//! - `errors.rs`: echo replies and the ICMP errors a router sends ([`icmp`] builds them);
//! - `ownership.rs`: which floating IPs this gateway answers for, gratuitous ARP, reloads;
//! - `fast.rs`: which flows the kernel fast path forwards;
//! - `peers.rs`: the flow changes shared with the other gateways, and theirs applied here;
//! - `report.rs`: counters and the status.
//!
//! The gateway owns its floating IPs in user space, each only while the election makes it
//! master (the gateway's core, [`crate::gateway`], carries the election's decisions out):
//! it then answers ARP for the address (on the LAN, and inside the tunnel as the nodes'
//! router), announces it by gratuitous ARP, forwards its traffic and answers ICMP echo to it.
//! As a backup it is silent for the address: no ARP answer, and frames to it are dropped and
//! counted (`not_master`), its fast path flows taken back. Frames that are not addressed to
//! a floating IP are [`Verdict::Ignore`]d: they belong to the host (its own address, VRRP,
//! the API).
//!
//! Frames the gateway makes itself (ARP requests and gratuitous ARP, segments of a
//! super-packet that must be tunnelled one by one) are queued in [`Datapath::generated`]
//! for the I/O shell to send with the batch. [`Datapath::poll`] runs the timers: ARP for the
//! next hop, repeated gratuitous ARP, flow expiry; [`Datapath::poll_at`] says when next.

mod arp;
mod counters;
pub mod encap;
mod errors;
pub mod fast;
mod frame;
pub mod icmp;
mod inbound;
mod neighbors;
mod outbound;
mod ownership;
pub mod peers;
mod report;

use std::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetProtocol, Icmpv4Message, IpProtocol,
    Ipv4Cidr,
};

pub use counters::{Counters, DROP_REASONS, DropReason, PortUse, Traffic};
pub use fast::FastChange;
pub use frame::{Frame, Gso, GsoKind, Offload, PartialChecksum};
pub use neighbors::{Binding, NextHop, Node, Nodes, Verdict as NodeVerdict};
pub use peers::{PeerCounters, Refusal};

use crate::nat::checksum::{ChecksumDelta, full};
use crate::nat::{
    BuildError, Flow, FlowId, InsideKey, Ipv4Header as Ipv4, L4Checksum, Nat, NatError, NatParams,
};
use crate::status;
use encap::{ARP_FRAME_LEN, ENCAP_LEN, ETH_LEN, Outer, Segments};
use icmp::{IcmpError, OWN_TTL};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
/// Most segments Linux accepts in one UDP GSO super-packet (`UDP_MAX_SEGMENTS` is 64 on
/// older kernels, 128 on newer).
const UDP_GSO_MAX_SEGMENTS: usize = 64;
/// Bytes the tunnel adds to an inner IPv4 packet against the MTU: outer IPv4, UDP, VXLAN
/// and the inner Ethernet header (the outer Ethernet header does not count), 50, as the
/// agents count them for their tunnel device's MTU: the tunnel contract's.
const TUNNEL_OVERHEAD: usize = egret_config::tunnel::OVERHEAD as usize;

/// A floating IP this gateway may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatingIp {
    pub address: Ipv4Addr,
    pub vrid: u8,
    pub priority: u8,
}

/// How a new owner announces a floating IP: `count` gratuitous ARPs `interval` apart as
/// soon as it owns the address, then another `count` every `refresh` while it keeps it, for
/// switches and hosts that age their tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub count: u32,
    pub interval: Duration,
    pub refresh: Option<Duration>,
}

impl Default for Announce {
    fn default() -> Announce {
        Announce {
            count: 3,
            interval: Duration::from_secs(1),
            refresh: Some(Duration::from_secs(60)),
        }
    }
}

/// What the data path needs to know: the config plus facts about the interface.
#[derive(Debug, Clone)]
pub struct Setup {
    pub name: String,
    pub interface: String,
    pub mac: EthernetAddress,
    /// The interface's own primary address: the source of our ARP requests.
    pub address: Ipv4Addr,
    /// The prefix length of the interface's subnet: nodes inside it are on our link, and
    /// their MACs are confirmed by ARP; others come through our next hop.
    pub prefix_len: u8,
    /// The other gateways' addresses (`[sync]` and `[election]` peers): pods may not reach
    /// them, nor this gateway's own, through the NAT.
    pub gateways: Vec<Ipv4Addr>,
    /// The interface's MTU: the largest IPv4 packet it carries.
    pub mtu: u16,
    pub next_hop: Ipv4Addr,
    pub floating_ips: Vec<FloatingIp>,
    pub announce: Announce,
    pub tunnel_port: u16,
    pub vni: u32,
    pub allowed_sources: Vec<Ipv4Cidr>,
    pub nat: NatParams,
    /// Seed of the NAT's port allocator.
    pub seed: u64,
}

/// What to do with a frame after [`Datapath::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame with its (adjusted) offload.
    Transmit,
    /// Refused and counted.
    Drop(DropReason),
    /// Handled; nothing to send in its place (what it produced, if anything, is in
    /// [`Datapath::generated`]).
    Consumed,
    /// Not addressed to the gateway's floating IPs: the host's business.
    Ignore,
}

/// A frame the gateway made itself, waiting to be sent.
#[derive(Debug)]
pub struct Generated {
    pub frame: Vec<u8>,
    pub offload: Offload,
}

/// One floating IP: whether this gateway owns it, and the election's view of it.
#[derive(Debug)]
struct Owned {
    ip: FloatingIp,
    /// Master: answer ARP for it and forward its traffic.
    owning: bool,
    ports: PortUse,
    /// Gratuitous ARPs left in the current burst, and when the next one is due.
    garps_left: u32,
    garp_at: Instant,
    /// When the next burst is due, while owning.
    refresh_at: Option<Instant>,
}

impl Owned {
    /// A floating IP not owned yet.
    fn new(ip: FloatingIp, now: Instant) -> Owned {
        Owned {
            ip,
            owning: false,
            ports: PortUse::default(),
            garps_left: 0,
            garp_at: now,
            refresh_at: None,
        }
    }
}

/// The data path of one gateway interface.
pub struct Datapath {
    setup: Setup,
    nat: Nat,
    owned: Vec<Owned>,
    next_hop: NextHop,
    nodes: Nodes,
    counters: Counters,
    generated: Vec<Generated>,
    spare: Vec<Vec<u8>>,
    ip_id: u16,
    icmp_limit: icmp::Limiter,
    started: Instant,
    /// Whether established flows are handed to the kernel fast path.
    fast: bool,
    /// The flows handed to it.
    offloaded: std::collections::HashSet<InsideKey, foldhash::fast::RandomState>,
    fast_changes: Vec<FastChange>,
    /// Changes for the peer gateways, once sync is enabled.
    peers: Option<peers::Peers>,
    probe_scratch: Vec<Ipv4Addr>,
}

/// Which way an ICMP error leaves.
#[derive(Debug, Clone, Copy)]
enum Via {
    /// On the LAN, to this MAC (the next hop).
    Lan(EthernetAddress),
    /// Through the tunnel to a node (outer address and MACs).
    Tunnel(Ipv4Addr, Node),
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn mac_at(b: &[u8], at: usize) -> EthernetAddress {
    EthernetAddress::from_bytes(&b[at..at + 6])
}

/// Checks the IPv4 header at the start of `b`, once: the translation takes it as parsed.
fn parse_ipv4(b: &[u8]) -> Result<Ipv4, DropReason> {
    Ipv4::parse(b).map_err(DropReason::Nat)
}

/// Decrements the TTL of the IPv4 header at the start of `b` and patches its checksum.
fn decrement_ttl(b: &mut [u8]) {
    let mut delta = ChecksumDelta::default();
    let old = be16(b, 8);
    b[8] -= 1;
    delta.word(old, be16(b, 8));
    let sum = delta.apply(be16(b, 10));
    b[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// Finishes a partial checksum in software: what the offload would have done.
fn finish_checksum(frame: &mut [u8], c: PartialChecksum) -> bool {
    let start = usize::from(c.start);
    let at = start + usize::from(c.offset);
    if at + 2 > frame.len() {
        return false;
    }
    let sum = full(&frame[start..]);
    frame[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    true
}

/// The checksum state of the transport header at `l4` (frame offset) of a packet: partial
/// when the offload points exactly there, complete otherwise (after finishing it here when
/// the offload points elsewhere).
fn l4_checksum(frame: &mut Frame<'_>, l4: usize) -> Result<L4Checksum, DropReason> {
    match frame.offload.checksum {
        None => Ok(L4Checksum::Complete),
        Some(c) if usize::from(c.start) == l4 => Ok(L4Checksum::Partial),
        Some(c) => {
            if frame.offload.gso.is_some() || !finish_checksum(frame.bytes_mut(), c) {
                return Err(DropReason::Nat(NatError::Malformed));
            }
            frame.offload.checksum = None;
            Ok(L4Checksum::Complete)
        }
    }
}

/// Segments on the wire of a packet: one, or as many as its super-packet is cut into.
fn wire_packets(ip_total: usize, headers: usize, gso: Option<Gso>) -> u64 {
    match gso {
        Some(g) if g.size > 0 => ip_total
            .saturating_sub(headers)
            .div_ceil(usize::from(g.size))
            .max(1) as u64,
        _ => 1,
    }
}

impl Datapath {
    /// A data path that owns none of the floating IPs of `setup` yet: the election decides
    /// (the gateway's core calls [`own`](Self::own) and [`release`](Self::release)).
    pub fn new(setup: Setup, now: Instant) -> Result<Datapath, BuildError> {
        let nat = Nat::new(&setup.nat, setup.seed)?;
        let owned = setup
            .floating_ips
            .iter()
            .map(|ip| Owned::new(*ip, now))
            .collect();
        Ok(Datapath {
            next_hop: NextHop::new(setup.next_hop, now),
            setup,
            nat,
            owned,
            nodes: Nodes::default(),
            counters: Counters::default(),
            generated: Vec::new(),
            spare: Vec::new(),
            ip_id: 0,
            icmp_limit: icmp::Limiter::new(now),
            started: now,
            fast: false,
            offloaded: Default::default(),
            fast_changes: Vec::new(),
            peers: None,
            probe_scratch: Vec::new(),
        })
    }

    pub fn nat(&self) -> &Nat {
        &self.nat
    }

    pub fn next_hop(&self) -> &NextHop {
        &self.next_hop
    }

    /// Handles one received frame.
    pub fn handle(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        let b = frame.bytes();
        if b.len() < ETH_LEN {
            return Verdict::Ignore;
        }
        match be16(b, 12) {
            ETHERTYPE_ARP => self.arp(now, frame),
            ETHERTYPE_IPV4 => match self.ipv4(now, frame) {
                Ok(v) => v,
                Err(reason) => {
                    self.counters.drop(reason);
                    Verdict::Drop(reason)
                }
            },
            _ => Verdict::Ignore,
        }
    }

    fn ipv4(&mut self, now: Instant, frame: &mut Frame<'_>) -> Result<Verdict, DropReason> {
        let b = frame.bytes();
        if b.len() < ETH_LEN + 20 {
            return Ok(Verdict::Ignore);
        }
        let dst = ip_at(b, ETH_LEN + 16);
        let Some(owner) = self.floating(dst) else {
            return Ok(Verdict::Ignore);
        };
        if !self.owned[owner].owning {
            return Err(DropReason::NotMaster);
        }
        let ip = parse_ipv4(&b[ETH_LEN..])?;
        let l4 = ETH_LEN + ip.ihl;
        let end = ETH_LEN + ip.total;
        if ip.proto == IpProtocol::Udp && end >= l4 + 8 && be16(b, l4 + 2) == self.setup.tunnel_port
        {
            return self.node_packet(now, frame, &ip);
        }
        if ip.proto == IpProtocol::Icmp && end > l4 && b[l4] == u8::from(Icmpv4Message::EchoRequest)
        {
            return self.echo_reply(frame, &ip);
        }
        self.outside_packet(now, frame, &ip, owner)
    }

    /// Frames the data path made itself, to send with the current batch.
    pub fn generated(&self) -> &[Generated] {
        &self.generated
    }

    /// Forgets the generated frames once sent, keeping their buffers for reuse.
    pub fn clear_generated(&mut self) {
        let mut sent = std::mem::take(&mut self.generated);
        self.recycle_generated(&mut sent);
        self.generated = sent;
    }

    /// Moves the generated frames into `out` (empty), for a sender that works unlocked.
    pub fn take_generated(&mut self, out: &mut Vec<Generated>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut self.generated, out);
    }

    /// Takes back sent frames from [`take_generated`](Self::take_generated), keeping
    /// their buffers for reuse; leaves `sent` empty.
    pub fn recycle_generated(&mut self, sent: &mut Vec<Generated>) {
        for g in sent.drain(..) {
            if self.spare.len() < 4096 {
                self.spare.push(g.frame);
            }
        }
    }

    /// Runs the timers due at `now`: ARP for the next hop, gratuitous ARP, flow expiry.
    pub fn poll(&mut self, now: Instant) {
        self.poll_with(now, |_| None);
    }

    /// [`poll`](Self::poll), where `fast_seen` tells when the fast path last forwarded a
    /// packet of a flow it holds: such a flow expires only once idle there too.
    pub fn poll_with(&mut self, now: Instant, mut fast_seen: impl FnMut(&Flow) -> Option<Instant>) {
        if self.next_hop.due(now) {
            let (mac, address, hop) = (self.setup.mac, self.setup.address, self.next_hop.address);
            let eth_dst = self.next_hop.mac.unwrap_or(EthernetAddress::BROADCAST);
            self.generate_arp(
                eth_dst,
                ArpOperation::Request,
                (mac, address),
                (EthernetAddress([0; 6]), hop),
            );
            self.counters.arp_requests_sent += 1;
        }
        self.announce(now);
        self.decide_probes(now);
        let owned = &mut self.owned;
        let offloaded = &self.offloaded;
        let mut gone = Vec::new();
        let syncing = self.peers.is_some();
        let mut peers = self.peers.as_mut();
        let mut renewed = Vec::new();
        let expired = self.nat.table_mut().expire_with(
            now,
            |flow| {
                if offloaded.contains(&flow.inside_key()) {
                    fast_seen(flow)
                } else {
                    None
                }
            },
            |flow| {
                if let Some(o) = owned.iter_mut().find(|o| o.ip.address == flow.egress) {
                    o.ports.remove(flow.nat_port);
                    if o.owning
                        && let Some(peers) = peers.as_mut()
                    {
                        peers.record(crate::sync::Change::delete(*flow));
                    }
                }
                if !offloaded.is_empty() {
                    gone.push(*flow);
                }
            },
            |flow, remaining| {
                if syncing {
                    renewed.push((*flow, remaining));
                }
            },
        );
        for (flow, remaining) in renewed {
            let remaining = self.lifetime(&flow, remaining);
            if self.owns(flow.egress)
                && let Some(peers) = self.peers.as_mut()
            {
                peers.record(crate::sync::Change::upsert(flow, remaining));
            }
        }
        for flow in gone {
            if self.offloaded.remove(&flow.inside_key()) {
                self.fast_changes.push(fast::remove(&flow));
            }
        }
        self.counters.flows_expired += expired as u64;
    }

    /// When [`poll`](Self::poll) has work next.
    pub fn poll_at(&self) -> Instant {
        let mut at = self.next_hop.ask_at;
        for o in &self.owned {
            if o.garps_left > 0 {
                at = at.min(o.garp_at);
            }
            if let Some(refresh) = o.refresh_at {
                at = at.min(refresh);
            }
        }
        if let Some(t) = self.nat.table().poll_at() {
            at = at.min(t);
        }
        if let Some(t) = self.nodes.poll_at() {
            at = at.min(t);
        }
        at
    }
}

#[cfg(test)]
mod tests;
