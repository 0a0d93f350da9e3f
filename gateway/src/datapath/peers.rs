//! What the data path shares with its peer gateways, so that a backup taking over an
//! address translates established connections with the same ports.
//!
//! The data path records an [`Export`] when a flow of an address it owns is created, moves
//! to another state, is found still alive by the expiry wheel (about once per timeout, so a
//! peer's copy never runs out first), or expires; and when it learns how to reach a node.
//! The sync shell streams them to the peers ([`crate::sync`]), and hands what the peers
//! sent to [`Datapath::apply_peer`]. A backup holds the peers' flows in its own table, ready:
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
use crate::status;

/// Changes recorded at most between two collections by the sync shell; beyond, changes are
/// lost and a full resync is due.
pub const MAX_PENDING: usize = 1 << 20;

/// A peer's copy of a flow outlives the time left the peer announced by this much, so that
/// the peer's renewal arrives before the copy expires.
pub const HOLD_GRACE: Duration = Duration::from_secs(30);

/// One change shared with the peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// A flow created, changed, or still alive: install it as it is, for `remaining`.
    Flow { flow: Flow, remaining: Duration },
    /// A flow gone here.
    Deleted(Flow),
    /// How to reach a node.
    Node { address: Ipv4Addr, node: Node },
}

impl From<Export> for crate::sync::Change {
    /// The record the sync streams for a change.
    fn from(export: Export) -> crate::sync::Change {
        use crate::sync::{Change, Op};
        match export {
            Export::Flow { flow, remaining } => Change {
                op: Op::Upsert,
                flow,
                remaining,
            },
            Export::Deleted(flow) => Change {
                op: Op::Delete,
                flow,
                remaining: Duration::ZERO,
            },
            Export::Node { address, node } => Change::node(address, node.mac.0, node.tunnel_mac.0),
        }
    }
}

impl From<crate::sync::Change> for Export {
    /// A peer's record, as the data path applies it.
    fn from(change: crate::sync::Change) -> Export {
        use crate::sync::Op;
        match change.op {
            Op::Upsert => Export::Flow {
                flow: change.flow,
                remaining: change.remaining,
            },
            Op::Delete => Export::Deleted(change.flow),
            Op::Node { mac, tunnel_mac } => Export::Node {
                address: change.flow.node,
                node: Node {
                    mac: smoltcp::wire::EthernetAddress(mac),
                    tunnel_mac: smoltcp::wire::EthernetAddress(tunnel_mac),
                },
            },
        }
    }
}

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
    /// Local changes lost because the sync shell fell behind (a full resync follows).
    pub lost: u64,
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
    pending: Vec<Export>,
    /// Changes were lost since the last collection.
    lost: bool,
    pub(super) counters: PeerCounters,
    /// Per peer (election address) whose full resync is under way, the flows it
    /// mentioned so far; `None` once it mentioned too many to sweep.
    resyncs: Vec<(
        Ipv4Addr,
        Option<std::collections::HashSet<InsideKey, foldhash::fast::RandomState>>,
    )>,
}

impl Peers {
    pub(super) fn record(&mut self, export: Export) {
        if self.pending.len() >= MAX_PENDING {
            self.lost = true;
            self.counters.lost += 1;
            return;
        }
        self.pending.push(export);
    }
}

impl Datapath {
    /// Records changes for the peers from now on.
    pub fn enable_sync(&mut self) {
        self.peers.get_or_insert_with(Default::default);
    }

    /// Moves the changes recorded since the last call into `out` (empty). Returns false
    /// when some were lost in between: the peers then need the whole table
    /// ([`export_all`](Self::export_all)).
    pub fn take_exports(&mut self, out: &mut Vec<Export>) -> bool {
        debug_assert!(out.is_empty());
        let Some(peers) = &mut self.peers else {
            return true;
        };
        std::mem::swap(&mut peers.pending, out);
        !std::mem::take(&mut peers.lost)
    }

    /// Everything a peer needs to take over: the nodes, and the flows of every address
    /// this gateway owns.
    pub fn export_all(&self, now: Instant, out: &mut Vec<Export>) {
        out.extend(self.nodes.iter().map(|(address, b)| Export::Node {
            address,
            node: b.node,
        }));
        out.extend(
            self.nat
                .table()
                .export(now)
                .filter(|(flow, _)| self.owns(flow.egress))
                .map(|(flow, remaining)| Export::Flow { flow, remaining }),
        );
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
            peers.record(Export::Flow { flow, remaining });
        }
    }

    /// Records a change the peers should hear of, if any peers listen.
    pub(super) fn export(&mut self, export: Export) {
        if let Some(peers) = &mut self.peers {
            peers.record(export);
        }
    }

    /// This gateway's election priority per floating IP, `[vrid, priority]`, as last
    /// followed: what the sync announces to the peers. Replaces `out`'s contents.
    pub fn election_claims(&self, out: &mut Vec<[u8; 2]>) {
        out.clear();
        out.extend(self.owned.iter().map(|o| [o.ip.vrid, o.election.priority]));
    }

    /// The primary address of the master of floating IP `address`, as the election last
    /// told the data path (this gateway's own when it is master).
    pub fn master_of(&self, address: Ipv4Addr) -> Option<Ipv4Addr> {
        self.floating(address)
            .and_then(|i| self.owned[i].election.master)
    }

    /// Why a flow change from the peer whose election address is `from` must not be
    /// applied, if it must not.
    fn refuse_flow(
        &self,
        from: Ipv4Addr,
        flow: &Flow,
        remaining: Option<Duration>,
    ) -> Option<Refusal> {
        let Some(i) = self.floating(flow.egress) else {
            return Some(Refusal::UnknownAddress);
        };
        let o = &self.owned[i];
        if o.owning {
            return Some(Refusal::OwnAddress);
        }
        if o.election.master.is_some_and(|m| m != from) {
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
    /// see [`Refusal`] for what is refused.
    pub fn apply_peer(&mut self, now: Instant, from: Ipv4Addr, change: Export) {
        if let Export::Flow { flow, .. } | Export::Deleted(flow) = change {
            self.mention(from, &flow);
        }
        match change {
            Export::Flow { flow, remaining } => {
                if let Some(why) = self.refuse_flow(from, &flow, Some(remaining)) {
                    self.refused(why);
                    return;
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
            Export::Deleted(flow) => {
                if let Some(why) = self.refuse_flow(from, &flow, None) {
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
            Export::Node { address, node } => {
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

    /// Removes a flow the peers no longer have, with its port and fast path entry.
    fn remove_flow(&mut self, id: FlowId) {
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
    /// the addresses it is master of (as the election knows) that it did not mention are
    /// gone on the peer and go here too. Addresses this gateway owns are never touched.
    pub fn peer_resync_end(&mut self, from: Ipv4Addr) {
        let Some(peers) = &mut self.peers else {
            return;
        };
        let Some(k) = peers.resyncs.iter().position(|(p, _)| *p == from) else {
            return;
        };
        let Some(seen) = peers.resyncs.swap_remove(k).1 else {
            return;
        };
        let theirs: Vec<Ipv4Addr> = self
            .owned
            .iter()
            .filter(|o| !o.owning && o.election.master == Some(from))
            .map(|o| o.ip.address)
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

    /// Records how the sync stands, for the status. `authenticated`: a key seals the
    /// datagrams.
    pub fn note_sync(&mut self, sync: &crate::sync::Sync, authenticated: bool, socket_errors: u64) {
        let c = sync.counters();
        let p = self.peer_counters_now();
        let mut drops: std::collections::BTreeMap<String, u64> = c
            .rejected()
            .map(|(e, n)| (e.label().to_string(), n))
            .collect();
        drops.insert("unknown_peer".into(), c.unknown_peer);
        drops.insert("stale_epoch".into(), c.stale_epoch);
        drops.insert("duplicate".into(), c.duplicates);
        drops.insert("beyond_window".into(), c.beyond_window);
        drops.insert("auth".into(), c.auth);
        drops.insert("unconfirmed".into(), c.unconfirmed);
        drops.insert("replay".into(), c.replay);
        drops.insert("resync_rate_limited".into(), c.resync_requests_limited);
        self.sync_status = status::SyncStatus {
            enabled: true,
            peers: sync
                .peers()
                .map(|peer| status::SyncPeerStatus {
                    address: peer.address.to_string(),
                    alive: peer.alive,
                    lag_seconds: peer.lag.total_micros() as f64 / 1e6,
                    queue_depth: (peer.queued_changes + peer.resync_pending + peer.queued_datagrams)
                        as u64,
                    last_sent_seq: peer.last_sent_seq,
                    last_applied_seq: peer.last_applied_seq,
                    resyncs_sent: peer.resyncs_sent,
                    resyncs_received: peer.resyncs_received,
                    restarts: peer.restarts,
                    confirmed: peer.confirmed,
                    primary: peer.primary,
                    name: sync.peer_name(peer.address).map(str::to_owned),
                    silent_ms: peer.silent.map(|d| d.total_millis()),
                })
                .collect(),
            sent: status::SyncTraffic {
                datagrams: c.datagrams_sent,
                bytes: c.bytes_sent,
                changes: c.changes_sent,
            },
            received: status::SyncTraffic {
                datagrams: c.datagrams_received,
                bytes: c.bytes_received,
                changes: c.changes_received,
            },
            nacks_sent: c.nacks_sent,
            nacks_received: c.nacks_received,
            retransmits: c.retransmits,
            resyncs_sent: c.resyncs_sent,
            resyncs_requested: c.resyncs_requested,
            flows_installed: p.installed,
            flows_removed: p.removed,
            flows_refused: p.refused,
            flows_swept: p.swept,
            refused: p
                .refusals()
                .map(|(r, n)| (r.label().to_string(), n))
                .collect(),
            authenticated,
            previous_key: c.previous_key,
            drops,
            queue_overflow: c.queue_overflow + p.lost,
            socket_errors,
        };
    }

    /// What the peers' changes did here.
    pub fn peer_counters_now(&self) -> PeerCounters {
        self.peers.as_ref().map(|p| p.counters).unwrap_or_default()
    }
}
