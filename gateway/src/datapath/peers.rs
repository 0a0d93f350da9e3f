//! What the data path shares with its peer gateways, so that a backup taking over an
//! address translates established connections with the same ports.
//!
//! The data path records a [`Change`] when a flow of an address it owns is created, moves
//! to another state, is found still alive by the expiry wheel (about once per timeout, so a
//! peer's copy never runs out first), or expires; and when it learns how to reach a node.
//! The gateway core ([`crate::gateway`]) streams them to the peers ([`crate::sync`]), and
//! hands what the peers sent to [`Datapath::apply_peer`]. A backup holds the peers' flows in its own table, ready:
//! on takeover, replies and later packets find them; their nodes' MACs come along, so
//! replies can be tunnelled to a node that never sent this gateway anything.
//!
//! Flows of an address this gateway does not own are never exported: a backup's copy
//! expiring must not delete the master's flow.

use core::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};

use super::neighbors::{Learned, Node};
use super::{Datapath, fast};
use crate::nat::{Flow, FlowId, InsideKey};
use crate::sync::{Change, Op};

/// A peer's copy of a flow outlives the time left the peer announced by this much, so that
/// the peer's renewal arrives before the copy expires.
pub const HOLD_GRACE: Duration = Duration::from_secs(30);

/// Why a peer's change was not applied. The `reason` label of
/// `egret_gateway_sync_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its egress IP is one this gateway owns: a master never takes flows of its own
    /// addresses from anyone.
    OwnAddress,
    /// Another gateway is master of its egress IP, as far as this gateway's election
    /// knows: the sender's change is stale.
    NotMaster,
    /// Its egress IP is none of this gateway's floating IPs.
    UnknownAddress,
    /// Its node is outside `[tunnel].allowed_sources`.
    DisallowedSource,
    /// Its NAT port is outside `[nat].port_range`.
    PortRange,
    /// The time left it announces is longer than this gateway's timeout for its state.
    Lifetime,
    /// Its NAT port is taken here by another flow, or the table is full.
    Conflict,
    /// A node record that would replace a node binding this gateway verified itself.
    NodeVerified,
}

impl Refusal {
    /// Every reason, in a fixed order (metrics list them all from the start).
    pub const ALL: [Refusal; 8] = [
        Refusal::OwnAddress,
        Refusal::NotMaster,
        Refusal::UnknownAddress,
        Refusal::DisallowedSource,
        Refusal::PortRange,
        Refusal::Lifetime,
        Refusal::Conflict,
        Refusal::NodeVerified,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::OwnAddress => "own_address",
            Refusal::NotMaster => "not_master",
            Refusal::UnknownAddress => "unknown_address",
            Refusal::DisallowedSource => "disallowed_source",
            Refusal::PortRange => "port_range",
            Refusal::Lifetime => "lifetime",
            Refusal::Conflict => "conflict",
            Refusal::NodeVerified => "node_verified",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What the peers' changes did here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    /// Flows installed or updated from a peer.
    pub installed: u64,
    /// Flows removed because a peer removed them.
    pub removed: u64,
    /// Peer changes refused, of every reason.
    pub refused: u64,
    /// Peer changes refused, by [`Refusal`].
    pub refusals: [u64; Refusal::ALL.len()],
    /// Flows dropped at the end of a peer's full resync because it no longer has them.
    pub swept: u64,
}

impl PeerCounters {
    /// Refused changes by reason.
    pub fn refusals(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL.iter().map(|r| (*r, self.refusals[r.index()]))
    }
}

/// The most flows a peer's full resync can mention (and at most `[nat].max_flows`); a
/// resync beyond it is not swept.
const SWEEP_LIMIT: usize = 1 << 24;

/// The data path's side of the sync.
#[derive(Debug, Default)]
pub(super) struct Peers {
    /// Changes recorded since the core last took them.
    pending: Vec<Change>,
    pub(super) counters: PeerCounters,
    /// Per peer (election address) whose full resync is under way, the flows it
    /// mentioned so far; `None` once it mentioned too many to sweep.
    resyncs: Vec<(
        Ipv4Addr,
        Option<std::collections::HashSet<InsideKey, foldhash::fast::RandomState>>,
    )>,
}

impl Peers {
    pub(super) fn record(&mut self, change: Change) {
        self.pending.push(change);
    }
}

impl Datapath {
    /// Records changes for the peers from now on.
    pub fn enable_sync(&mut self) {
        self.peers.get_or_insert_with(Default::default);
    }

    /// Whether changes were recorded since the core last took them.
    pub fn has_changes(&self) -> bool {
        self.peers.as_ref().is_some_and(|p| !p.pending.is_empty())
    }

    /// Moves the changes recorded since the last call into `out` (empty), in order.
    pub fn take_changes(&mut self, out: &mut Vec<Change>) {
        debug_assert!(out.is_empty());
        if let Some(peers) = &mut self.peers {
            std::mem::swap(&mut peers.pending, out);
        }
    }

    /// Everything a peer needs to take over: the nodes, as node records.
    pub fn export_nodes(&self) -> impl Iterator<Item = Change> + '_ {
        self.nodes
            .iter()
            .map(|(address, b)| node_change(address, b.node))
    }

    /// ... and the flows of every address this gateway owns, with the time each has left.
    pub fn export_flows(&self, now: Instant) -> impl Iterator<Item = (Flow, Duration)> + '_ {
        self.nat
            .table()
            .export(now)
            .filter(|(flow, _)| self.owns(flow.egress))
            .map(|(flow, left)| (flow, self.lifetime(&flow, left)))
    }

    /// The time a flow has left as the peers hear it: at most its state's timeout. A copy
    /// held from a previous master lives on here by [`HOLD_GRACE`]; a peer would refuse
    /// that as a lifetime no gateway of the group gives.
    pub(super) fn lifetime(&self, flow: &Flow, left: Duration) -> Duration {
        left.min(self.setup.nat.timeouts.of(flow.proto, flow.state))
    }

    /// Records a flow's current state for the peers, if this gateway owns its address.
    pub(super) fn export_flow(&mut self, now: Instant, id: FlowId) {
        let Some(peers) = &mut self.peers else {
            return;
        };
        let table = self.nat.table();
        let flow = *table.flow(id);
        if self
            .owned
            .iter()
            .any(|o| o.owning && o.ip.address == flow.egress)
        {
            let remaining = table.remaining(id, now);
            let remaining = remaining.min(self.setup.nat.timeouts.of(flow.proto, flow.state));
            peers.record(Change::upsert(flow, remaining));
        }
    }

    /// Records that node `address` is reached with `node`, if any peers listen.
    pub(super) fn export_node(&mut self, address: Ipv4Addr, node: Node) {
        if let Some(peers) = &mut self.peers {
            peers.record(node_change(address, node));
        }
    }

    /// Why a flow change from the peer whose election address is `from` must not be
    /// applied, if it must not. `master`: the master of the flow's address, as the
    /// election knows it.
    fn refuse_flow(
        &self,
        from: Ipv4Addr,
        master: Option<Ipv4Addr>,
        flow: &Flow,
        remaining: Option<Duration>,
    ) -> Option<Refusal> {
        let Some(i) = self.floating(flow.egress) else {
            return Some(Refusal::UnknownAddress);
        };
        if self.owned[i].owning {
            return Some(Refusal::OwnAddress);
        }
        if master.is_some_and(|m| m != from) {
            return Some(Refusal::NotMaster);
        }
        if !self.allowed(flow.node) {
            return Some(Refusal::DisallowedSource);
        }
        if !self.setup.nat.port_range.contains(&flow.nat_port) {
            return Some(Refusal::PortRange);
        }
        // The wire rounds the time left up to whole seconds.
        let limit = self.setup.nat.timeouts.of(flow.proto, flow.state) + Duration::from_secs(1);
        if remaining.is_some_and(|r| r > limit) {
            return Some(Refusal::Lifetime);
        }
        None
    }

    fn refused(&mut self, why: Refusal) {
        let c = self.peer_counters();
        c.refused += 1;
        c.refusals[why.index()] += 1;
    }

    /// Applies a change the peer whose election address is `from` sent, when it is sane:
    /// see [`Refusal`] for what is refused. `master` is the master of the change's egress
    /// IP as the election knows it: a change from any other gateway is stale.
    pub fn apply_peer(
        &mut self,
        now: Instant,
        from: Ipv4Addr,
        master: Option<Ipv4Addr>,
        change: Change,
    ) {
        let Change {
            op,
            flow,
            remaining,
        } = change;
        if !matches!(op, Op::Node { .. }) {
            self.mention(from, &flow);
        }
        match op {
            Op::Upsert => {
                if let Some(why) = self.refuse_flow(from, master, &flow, Some(remaining)) {
                    self.refused(why);
                    return;
                }
                if master == Some(from) {
                    // The master is the authority on its addresses' flows: what clashes
                    // with one of them here (a flow this gateway made while it believed
                    // it was master, in a split brain) gives way.
                    self.give_way(&flow);
                }
                let known = self.nat.table().lookup_inside(&flow.inside_key()).is_some();
                match self
                    .nat
                    .table_mut()
                    .install(now, flow, remaining + HOLD_GRACE)
                {
                    Ok(id) => {
                        if !known && let Some(o) = self.floating(flow.egress) {
                            self.owned[o].ports.add(flow.nat_port);
                        }
                        self.peer_counters().installed += 1;
                        if self.owns(flow.egress) {
                            self.sync_fast(id);
                        }
                    }
                    Err(_) => self.refused(Refusal::Conflict),
                }
            }
            Op::Delete => {
                if let Some(why) = self.refuse_flow(from, master, &flow, None) {
                    self.refused(why);
                    return;
                }
                let table = self.nat.table();
                let Some(id) = table.lookup_inside(&flow.inside_key()) else {
                    return;
                };
                if table.flow(id).nat_port != flow.nat_port {
                    return;
                }
                self.remove_flow(id);
                self.peer_counters().removed += 1;
            }
            Op::Node { mac, tunnel_mac } => {
                let address = flow.node;
                let node = Node {
                    mac: smoltcp::wire::EthernetAddress(mac),
                    tunnel_mac: smoltcp::wire::EthernetAddress(tunnel_mac),
                };
                if !self.allowed(address) {
                    self.refused(Refusal::DisallowedSource);
                    return;
                }
                match self.nodes.learn_from_peer(address, node) {
                    None => self.refused(Refusal::NodeVerified),
                    Some(Learned::Changed) if self.fast => self.forget_node(address),
                    Some(_) => {}
                }
            }
        }
    }

    /// Removes the flows that clash with `flow`: the same inside key with another NAT
    /// port, or the same outside key.
    fn give_way(&mut self, flow: &Flow) {
        let table = self.nat.table();
        let inside = table
            .lookup_inside(&flow.inside_key())
            .filter(|id| table.flow(*id).nat_port != flow.nat_port);
        let outside = table
            .lookup_outside(&flow.outside_key())
            .filter(|id| table.flow(*id).inside_key() != flow.inside_key());
        for id in [inside, outside].into_iter().flatten() {
            self.remove_flow(id);
        }
    }

    /// Removes a flow the peers no longer have, with its port and fast path entry.
    pub(super) fn remove_flow(&mut self, id: FlowId) {
        let gone = self.nat.table_mut().remove(id);
        if let Some(o) = self.floating(gone.egress) {
            self.owned[o].ports.remove(gone.nat_port);
        }
        if self.offloaded.remove(&gone.inside_key()) {
            self.fast_changes.push(fast::remove(&gone));
        }
    }

    /// Notes that the resync under way from `from`, if any, mentions `flow`.
    fn mention(&mut self, from: Ipv4Addr, flow: &Flow) {
        // No table holds more: a resync mentioning more flows is not one to sweep by.
        let limit = SWEEP_LIMIT.min(self.nat.table().max_flows() as usize);
        let Some(peers) = &mut self.peers else {
            return;
        };
        if let Some((_, seen)) = peers.resyncs.iter_mut().find(|(p, _)| *p == from) {
            match seen {
                Some(set) if set.len() < limit => {
                    set.insert(flow.inside_key());
                }
                _ => *seen = None,
            }
        }
    }

    /// The peer whose election address is `from` starts sending its whole table: the
    /// flows it mentions from here to [`peer_resync_end`](Self::peer_resync_end) are the
    /// ones it has.
    pub fn peer_resync_begin(&mut self, from: Ipv4Addr) {
        let peers = self.peers.get_or_insert_with(Default::default);
        peers.resyncs.retain(|(p, _)| *p != from);
        peers.resyncs.push((from, Some(Default::default())));
    }

    /// The peer whose election address is `from` has sent its whole table: the flows of
    /// `theirs`, the addresses it is master of as the election knows, that it did not
    /// mention are gone on the peer and go here too. Addresses this gateway owns are never
    /// touched.
    pub fn peer_resync_end(&mut self, from: Ipv4Addr, theirs: &[Ipv4Addr]) {
        let Some(peers) = &mut self.peers else {
            return;
        };
        let Some(k) = peers.resyncs.iter().position(|(p, _)| *p == from) else {
            return;
        };
        let Some(seen) = peers.resyncs.swap_remove(k).1 else {
            return;
        };
        let theirs: Vec<Ipv4Addr> = theirs
            .iter()
            .copied()
            .filter(|a| self.floating(*a).is_some() && !self.owns(*a))
            .collect();
        if theirs.is_empty() {
            return;
        }
        let table = self.nat.table();
        let stale: Vec<FlowId> = table
            .export(Instant::ZERO)
            .map(|(flow, _)| flow)
            .filter(|f| theirs.contains(&f.egress) && !seen.contains(&f.inside_key()))
            .filter_map(|f| table.lookup_inside(&f.inside_key()))
            .collect();
        for id in &stale {
            self.remove_flow(*id);
        }
        self.peer_counters().swept += stale.len() as u64;
    }

    fn peer_counters(&mut self) -> &mut PeerCounters {
        &mut self.peers.get_or_insert_with(Default::default).counters
    }

    /// What the peers' changes did here.
    pub fn peer_counters_now(&self) -> PeerCounters {
        self.peers.as_ref().map(|p| p.counters).unwrap_or_default()
    }
}

/// The node record for node `address` reached with `node`.
fn node_change(address: Ipv4Addr, node: Node) -> Change {
    Change::node(address, node.mac.0, node.tunnel_mac.0)
}
