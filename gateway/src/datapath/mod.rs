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
//! Where a router would answer with an ICMP error (a TTL running out here, a packet with DF
//! too big for the tunnel), the gateway does, from the floating IP (see [`icmp`]).
//!
//! The gateway owns its floating IPs in user space, each only while the election makes it
//! master ([`Datapath::follow`]): it then answers ARP for the address (on the LAN, and inside
//! the tunnel as the nodes' router), announces it by gratuitous ARP, forwards its traffic and
//! answers ICMP echo to it. As a backup it is silent for the address: no ARP answer, and
//! frames to it are dropped and counted (`not_master`), its fast path flows taken back.
//! Frames that are not addressed to a floating IP are [`Verdict::Ignore`]d: they belong to
//! the host (its own address, VRRP, the API).
//!
//! Frames the gateway makes itself (ARP requests and gratuitous ARP, segments of a
//! super-packet that must be tunnelled one by one) are queued in [`Datapath::generated`]
//! for the I/O shell to send with the batch. [`Datapath::poll`] runs the timers: ARP for the
//! next hop, repeated gratuitous ARP, flow expiry; [`Datapath::poll_at`] says when next.

mod counters;
pub mod encap;
pub mod fast;
mod frame;
pub mod icmp;
mod neighbors;
pub mod peers;

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
/// and the inner Ethernet header (the outer Ethernet header does not count): as many bytes
/// as [`ENCAP_LEN`], 50.
const TUNNEL_OVERHEAD: usize = ENCAP_LEN;

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
    /// ([`follow`](Self::follow)), or [`own`](Self::own) directly.
    pub fn new(setup: Setup, now: Instant) -> Result<Datapath, BuildError> {
        let nat = Nat::new(&setup.nat, setup.seed)?;
        let owned = setup
            .floating_ips
            .iter()
            .map(|ip| Owned {
                ip: *ip,
                owning: false,
                ports: PortUse::default(),
                garps_left: 0,
                garp_at: now,
                refresh_at: None,
            })
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

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn nat(&self) -> &Nat {
        &self.nat
    }

    pub fn next_hop(&self) -> &NextHop {
        &self.next_hop
    }

    /// Hands established flows to the kernel fast path from now on (see [`fast`]).
    pub fn enable_fast_path(&mut self) {
        self.fast = true;
    }

    /// How many flows the fast path holds.
    pub fn offloaded(&self) -> usize {
        self.offloaded.len()
    }

    /// The fast path's settings as they stand (they change when the next hop's MAC does).
    pub fn fast_config(&self) -> egret_ebpf_common::gateway::Config {
        let room = usize::from(self.setup.mtu).saturating_sub(TUNNEL_OVERHEAD);
        fast::config(
            self.setup.mac,
            self.next_hop.mac,
            self.setup.tunnel_port,
            self.setup.vni,
            room,
        )
    }

    /// Moves the fast path changes decided so far into `out` (empty), in order.
    pub fn take_fast_changes(&mut self, out: &mut Vec<FastChange>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut self.fast_changes, out);
    }

    /// Hands a flow to the fast path, or takes it back, as its state now requires.
    fn sync_fast(&mut self, id: FlowId) {
        if !self.fast {
            return;
        }
        let flow = *self.nat.table().flow(id);
        let key = flow.inside_key();
        if fast::offloadable(&flow) {
            if self.offloaded.contains(&key) {
                return;
            }
            let Some(node) = self.nodes.get(flow.node) else {
                return;
            };
            let src_port =
                encap::flow_entropy_port(flow.remote, flow.pod, flow.remote_port, flow.pod_port);
            self.fast_changes.push(fast::install(&flow, node, src_port));
            self.offloaded.insert(key);
        } else if self.offloaded.remove(&key) {
            self.fast_changes.push(fast::remove(&flow));
        }
    }

    /// Takes back from the fast path every flow of a node whose MACs changed, so that
    /// replies are tunnelled with the new ones.
    fn forget_node(&mut self, node: Ipv4Addr) {
        let table = self.nat.table();
        let changes = &mut self.fast_changes;
        self.offloaded.retain(|key| {
            if key.node != node {
                return true;
            }
            if let Some(id) = table.lookup_inside(key) {
                changes.push(fast::remove(table.flow(id)));
            }
            false
        });
    }

    /// Counts frames the I/O shell read from the interface (the fast path's frames never
    /// reach it).
    pub fn count_frames_read(&mut self, count: u64) {
        self.counters.frames_read += count;
    }

    /// Counts a frame the I/O shell could not send.
    pub fn count_tx_error(&mut self) {
        self.counters.tx_errors += 1;
    }

    /// Counts frames the kernel dropped because a receiving socket's buffer was full.
    pub fn count_rx_buffer_drops(&mut self, count: u64) {
        self.counters.drop_many(DropReason::RxBufferFull, count);
    }

    /// Counts a frame cut short on receipt.
    pub fn count_truncated(&mut self) {
        self.counters.drop(DropReason::Truncated);
    }

    /// The floating IP `address`, whether owned or not.
    fn floating(&self, address: Ipv4Addr) -> Option<usize> {
        self.owned.iter().position(|o| o.ip.address == address)
    }

    /// The floating IP `address`, if this gateway owns it now.
    fn owner(&self, address: Ipv4Addr) -> Option<usize> {
        self.floating(address).filter(|&i| self.owned[i].owning)
    }

    /// Whether this gateway owns `address` now.
    pub fn owns(&self, address: Ipv4Addr) -> bool {
        self.owner(address).is_some()
    }

    /// Takes a reloaded setup at `now`. What may change without a restart: the other
    /// gateways, gratuitous ARP, allowed sources, next hop, NAT timeouts, and the floating
    /// IPs: a new one starts unowned; a removed one goes with its flows and their ports
    /// (release it first); a kept one keeps its flows and whether it is owned. The caller
    /// checked that nothing else changed.
    pub fn reconfigure(&mut self, now: Instant, setup: &Setup) {
        let removed: Vec<Ipv4Addr> = self
            .owned
            .iter()
            .map(|o| o.ip.address)
            .filter(|a| setup.floating_ips.iter().all(|f| f.address != *a))
            .collect();
        for address in removed {
            self.release(address);
            let gone: Vec<FlowId> = self
                .nat
                .table()
                .export(now)
                .filter(|(f, _)| f.egress == address)
                .filter_map(|(f, _)| self.nat.table().lookup_inside(&f.inside_key()))
                .collect();
            for id in gone {
                self.remove_flow(id);
            }
            self.owned.retain(|o| o.ip.address != address);
        }
        for ip in &setup.floating_ips {
            match self.owned.iter_mut().find(|o| o.ip.address == ip.address) {
                Some(o) => o.ip = *ip,
                None => self.owned.push(Owned {
                    ip: *ip,
                    owning: false,
                    ports: PortUse::default(),
                    garps_left: 0,
                    garp_at: now,
                    refresh_at: None,
                }),
            }
        }
        if setup.next_hop != self.setup.next_hop {
            self.next_hop = NextHop::new(setup.next_hop, now);
        }
        self.nat.table_mut().set_timeouts(&setup.nat.timeouts);
        self.setup = setup.clone();
    }

    /// Starts owning the floating IP `address` at `now`: answer ARP for it, forward its
    /// traffic, announce it by gratuitous ARP at once. Returns false when `address` is not a
    /// floating IP of this gateway.
    pub fn own(&mut self, now: Instant, address: Ipv4Addr) -> bool {
        let Some(i) = self.floating(address) else {
            return false;
        };
        let o = &mut self.owned[i];
        if !o.owning {
            o.owning = true;
            o.garps_left = self.setup.announce.count;
            o.garp_at = now;
            o.refresh_at = self.setup.announce.refresh.map(|r| now + r);
        }
        true
    }

    /// Announces `address` again, if owned: a new burst of gratuitous ARPs, the first at
    /// once. For a master that heard another gateway believe it was master (which may have
    /// moved the LAN's ARP entries). Returns whether it is owned.
    pub fn reannounce(&mut self, now: Instant, address: Ipv4Addr) -> bool {
        let Some(i) = self.floating(address) else {
            return false;
        };
        let o = &mut self.owned[i];
        if o.owning {
            o.garps_left = self.setup.announce.count;
            o.garp_at = now;
        }
        o.owning
    }

    /// Stops owning `address` at once: no more ARP answers, gratuitous ARP or forwarding;
    /// the fast path gives its flows back. The flows themselves stay, ready for when the
    /// address comes back.
    pub fn release(&mut self, address: Ipv4Addr) {
        let Some(i) = self.floating(address) else {
            return;
        };
        let o = &mut self.owned[i];
        o.owning = false;
        o.garps_left = 0;
        o.refresh_at = None;
        let table = self.nat.table();
        let changes = &mut self.fast_changes;
        self.offloaded.retain(|key| {
            if key.egress != address {
                return true;
            }
            if let Some(id) = table.lookup_inside(key) {
                changes.push(fast::remove(table.flow(id)));
            }
            false
        });
    }

    /// A frame from node `address` carried `seen`: refused when its outer MAC is not the
    /// node's bound one (see [`neighbors`]); new and changed bindings are shared with the
    /// peers once confirmed.
    fn node_seen(&mut self, now: Instant, address: Ipv4Addr, seen: Node) -> Result<(), DropReason> {
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
    fn send_probes(&mut self) {
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
    fn decide_probes(&mut self, now: Instant) {
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

    /// Whether pods must not reach `dst` through the NAT: martians (RFC 1812: this
    /// network, loopback, link-local, multicast, reserved, broadcast), this gateway's and
    /// the other gateways' addresses, and the floating IPs.
    fn martian(&self, dst: Ipv4Addr) -> bool {
        let [a, b, ..] = dst.octets();
        a == 0
            || a == 127
            || (a == 169 && b == 254)
            || a >= 224
            || dst == self.setup.address
            || self.setup.gateways.contains(&dst)
            || self.floating(dst).is_some()
    }

    fn allowed(&self, source: Ipv4Addr) -> bool {
        self.setup
            .allowed_sources
            .iter()
            .any(|c| c.contains_addr(&source))
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

    /// ARP on the LAN: answer requests for our floating IPs, learn the next hop.
    fn arp(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
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
        if ip.proto == IpProtocol::Udp
            && end >= l4 + 8
            && be16(b, l4 + 2) == self.setup.tunnel_port
        {
            return self.node_packet(now, frame, &ip);
        }
        if ip.proto == IpProtocol::Icmp
            && end > l4
            && b[l4] == u8::from(Icmpv4Message::EchoRequest)
        {
            return self.echo_reply(frame, &ip);
        }
        self.outside_packet(now, frame, &ip, owner)
    }

    /// Answers an ICMP echo request to a floating IP, in place.
    fn echo_reply(&mut self, frame: &mut Frame<'_>, ip: &Ipv4) -> Result<Verdict, DropReason> {
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

    /// VXLAN from a node: check, decapsulate, translate, send to the next hop.
    fn node_packet(
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

    /// ARP inside the tunnel: the gateway is the node's router on the tunnel and answers
    /// for any address, sending the reply back through the tunnel.
    fn tunnel_arp(
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

    fn outer(
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

    /// A packet from the outside world to a floating IP: translate back to the pod and
    /// tunnel it to the pod's node.
    fn outside_packet(
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

    /// Finishes `out`, an inner IPv4 packet behind `ENCAP_LEN + ETH_LEN` bytes of room, as
    /// a VXLAN frame from `egress` to a node, and queues it.
    fn seal_tunnel(
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

    /// Queues an ICMP error from `src` (a floating IP) about the IPv4 packet `original`,
    /// when RFC 1812 and the rate limit allow one.
    fn icmp_error(
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

    /// Cuts a translated super-packet into segments and tunnels them to the node.
    ///
    /// A packet socket cannot hand the kernel a super-packet of tunnelled TCP, but it can
    /// hand it a UDP one (UDP GSO), which the kernel cuts at a fixed size. So each segment
    /// is made a whole VXLAN payload of exactly that size (VXLAN header, inner Ethernet,
    /// IPv4, TCP, data), with its inner checksum complete, and the train of them rides in
    /// one outer UDP super-packet: one send, cut by the kernel (or the NIC) into ordinary
    /// VXLAN packets, which the node's VXLAN device merges again with GRO.
    fn tunnel_segments(
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

    fn generate_arp(
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

    /// Queues the gratuitous ARPs due at `now` (part of [`poll`](Self::poll)); the
    /// election's shell calls it right after a takeover, so the first one leaves at once.
    pub fn announce(&mut self, now: Instant) {
        let announce = self.setup.announce;
        for i in 0..self.owned.len() {
            let o = &mut self.owned[i];
            if let Some(at) = o.refresh_at.filter(|at| now >= *at) {
                o.garps_left = announce.count;
                o.garp_at = at;
                o.refresh_at = announce.refresh.map(|r| at + r);
            }
            if o.garps_left == 0 || now < o.garp_at {
                continue;
            }
            o.garps_left -= 1;
            o.garp_at = now + announce.interval;
            let address = o.ip.address;
            let mac = self.setup.mac;
            // A gratuitous ARP request (RFC 5227 announcement): sender and target are the
            // floating IP, so every host and switch on the LAN updates its tables.
            self.generate_arp(
                EthernetAddress::BROADCAST,
                ArpOperation::Request,
                (mac, address),
                (EthernetAddress([0; 6]), address),
            );
            self.counters.gratuitous_arps_sent += 1;
        }
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

    /// What `/status` and `/metrics` show of the packet path. `wall_ms` maps `now` to
    /// wall-clock time. The floating IPs carry what the data path knows (owned, ports,
    /// flows); the gateway core adds the election's view of each, and the election's and
    /// the sync's own sections.
    pub fn snapshot(&self, now: Instant, wall_ms: u64) -> status::Snapshot {
        let range = &self.setup.nat.port_range;
        let range_size = u32::from(*range.end()) - u32::from(*range.start()) + 1;
        let table = self.nat.table();
        status::Snapshot {
            name: self.setup.name.clone(),
            interface: self.setup.interface.clone(),
            interface_address: Some(self.setup.address),
            interface_mac: self.setup.mac.to_string(),
            taken_unix_ms: wall_ms,
            uptime_seconds: (now - self.started).total_millis() as f64 / 1000.0,
            floating_ips: self
                .owned
                .iter()
                .map(|o| status::FloatingIpStatus {
                    address: o.ip.address,
                    vrid: o.ip.vrid,
                    master: if o.owning {
                        self.setup.name.clone()
                    } else {
                        String::new()
                    },
                    owned: o.owning,
                    priority: o.ip.priority,
                    ports_in_use: o.ports.ports_in_use(),
                    port_range_size: range_size,
                    flows: o.ports.flows(),
                    state: String::new(),
                    master_address: None,
                    last_transition_unix_ms: 0,
                    transitions: 0,
                    adverts_sent: 0,
                    adverts_received: 0,
                })
                .collect(),
            next_hop: status::NextHopStatus {
                address: Some(self.next_hop.address),
                mac: self.next_hop.mac.map(|m| m.to_string()),
            },
            outbound: self.counters.outbound,
            inbound: self.counters.inbound,
            flows: status::FlowStatus {
                live: table.len() as u64,
                max: u64::from(table.max_flows()),
                created: self.counters.flows_created,
                expired: self.counters.flows_expired,
            },
            drops: DropReason::all()
                .map(|r| (r.label().to_string(), self.counters.drops(r)))
                .collect(),
            control: status::ControlCounters {
                arp_requests_answered: self.counters.arp_requests_answered,
                arp_requests_sent: self.counters.arp_requests_sent,
                gratuitous_arps_sent: self.counters.gratuitous_arps_sent,
                icmp_echo_replies_sent: self.counters.icmp_echo_replies_sent,
                icmp_errors_sent: self.counters.icmp_errors_sent,
                icmp_errors_rate_limited: self.counters.icmp_errors_rate_limited,
                tx_errors: self.counters.tx_errors,
                frames_read: self.counters.frames_read,
                node_probes: status::NodeProbes {
                    sent: self.counters.node_probes,
                    confirmed: self.counters.node_verdicts[NodeVerdict::Confirmed as usize],
                    moved: self.counters.node_verdicts[NodeVerdict::Moved as usize],
                    conflict: self.counters.node_verdicts[NodeVerdict::Conflict as usize],
                    unanswered: self.counters.node_verdicts[NodeVerdict::Unanswered as usize],
                },
            },
            nodes: self
                .nodes
                .iter()
                .map(|(address, b)| status::NodeStatus {
                    address,
                    mac: b.node.mac.to_string(),
                    tunnel_mac: b.node.tunnel_mac.to_string(),
                    verified: b.verified,
                })
                .collect(),
            fast_path: status::FastPathStatus {
                flows: self.offloaded.len() as u64,
                ..Default::default()
            },
            election: status::ElectionStatus::default(),
            sync: status::SyncStatus::default(),
            // Filled in by the API server, which owns those connections.
            api: status::ApiStatus::default(),
            kubernetes: status::KubernetesStatus::default(),
        }
    }
}

#[cfg(test)]
mod tests;
