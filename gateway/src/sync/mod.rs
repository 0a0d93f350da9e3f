//! Flow sync: the NAT flow changes a gateway streams to its peers over UDP, so that a
//! backup already holds the master's flows and translates established connections with
//! the same ports after a takeover. A pure core: no socket, no clock, no randomness.
//!
//! The shell owns one UDP socket. It hands [`Sync::handle_datagram`] every datagram
//! received with the time, applies the [`Change`]s that come out to its flow table,
//! [`queue`](Sync::queue)s every local flow change, answers
//! [`wants_full_table`](Sync::wants_full_table) with
//! [`queue_resync`](Sync::queue_resync) and a table export, sends what
//! [`poll`](Sync::poll) returns and sleeps until [`poll_at`](Sync::poll_at). The epoch
//! (a random boot id, never 0) and the keys are chosen by the shell.
//!
//! # Who is heard
//!
//! Flow state decides which outside packets reach which pod, so only the gateways of the
//! group may write it, and nothing they said before may be said again:
//! - with [`Keys`], every datagram is sealed ([`seal`]: AES-256-GCM, header
//!   authenticated, body encrypted); one that does not open is refused (`auth`);
//! - a datagram is acted on only when it is *fresh* (`session.rs`): it echoes the token this
//!   gateway holds for its sender, which changes whenever either side restarts, and its
//!   counter was not seen before. So an epoch change (a peer's restart) is only ever taken
//!   from a fresh, authenticated datagram, and no state is kept on disk. Not-fresh
//!   datagrams are answered with a heartbeat that echoes their token (rate-limited), which
//!   is how two gateways that know nothing of each other confirm each other in one round
//!   trip each way;
//! - a peer's ResyncRequests are honoured at most once a heartbeat (at once after it
//!   restarted), so nothing a peer sends can make this gateway stream its table in a loop.
//!
//! # Protocol
//!
//! Each gateway runs one stream to each peer ([`wire`] has the datagram layout):
//! - **Batches.** Changes are packed, in the order they were queued, into batches of up to
//!   [`wire::MAX_CHANGES`]; a batch leaves when full or `flush_after` after its first
//!   change. Each batch takes the next sequence number of the stream (1, 2, … per epoch)
//!   and is kept for retransmission: the last `ring` live batches as sent, the batches of
//!   a full resync as their range of its snapshot, rebuilt when nacked.
//! - **Ordered, reliable delivery.** The receiver applies batches strictly in seq order.
//!   One that arrives early is held (up to [`HOLD_LIMIT`]) while the gap before it is
//!   nacked: a Nack names the missing range, is sent as soon as the gap is seen and again
//!   every [`NACK_RETRY`] until filled, and the sender answers from its ring. A delete is
//!   therefore never applied before the create it follows. Duplicates are counted and
//!   dropped.
//! - **Tail loss.** Every `heartbeat` each gateway tells each peer the last seq it sent:
//!   a lost last batch shows up as a gap at the next heartbeat. Heartbeats are also the
//!   liveness signal ([`PeerStatus::alive`]: heard within three of them).
//! - **Full resync.** When a Nack asks for seqs the ring no longer holds, or a queue
//!   overflows, or a peer asks ([`wire::Message::ResyncRequest`]), the sender can no longer
//!   replay exactly and streams its whole table instead, on the same stream: the same seqs
//!   and Nacks make it reliable (its batches stay replayable until three heartbeats after
//!   the last, however many there are, so a resync larger than the ring does not restart
//!   at each loss), paced at `resync_rate` batches per second, with live changes still
//!   interleaved so the peer never goes stale. Its first batch is flagged
//!   and supersedes everything before it: a receiver skips straight to it, whatever it
//!   was missing. The receiver reports where a resync begins and ends
//!   ([`Sync::resync_marks`]) so the shell can drop the flows the peer no longer has.
//! - **Restarts.** A new epoch in a peer's fresh datagram means the peer restarted: its
//!   new stream is followed from seq 1 (a gap up to its first seq is nacked; if the peer
//!   cannot replay it, it resyncs), and datagrams of the old stream are never fresh again.
//!   A gateway that has not yet received a peer's table (always the case right after
//!   [`Sync::new`]) asks for it every `heartbeat` until a resync starts arriving.
//!
//! # Invariants
//!
//! - Changes come out of [`Sync::handle_datagram`] in the order the peer queued them, each
//!   once, except that a full resync replaces whatever came before it.
//! - A live change queued after a resync's snapshot always reaches the peer after the
//!   snapshot's entry for the same flow (or the entry is skipped): a resync never rolls a
//!   flow back to an older state or brings back a deleted one.
//! - Memory is bounded per peer: [`QUEUE_LIMIT`] queued changes, `ring` sent live
//!   batches, [`HOLD_LIMIT`] held batches, one resync snapshot of at most [`RESYNC_LIMIT`]
//!   flows (28 bytes each, kept until three heartbeats after its last batch). Overflowing
//!   the queue drops the change, counts it and schedules a full resync. Nothing is
//!   allocated per change: changes are written straight into batch buffers, which are
//!   reused.
//!
//! What the shell must add (`io::sync` with the data path's `apply_peer` and
//! `peer_resync_begin`/`_end`):
//! - Changes applied from a peer are not queued again: every gateway streams only what it
//!   changed itself.
//! - Apply a peer's change only when it is sane: its egress IP is not one this gateway
//!   owns, and that peer (known by the election address every datagram names,
//!   [`Sync::peer_primary`]) is its master as far as the election knows; its fields within
//!   this gateway's config (allowed sources, port range, timeouts).
//! - To drop the flows a peer deleted while its stream could not be replayed, sweep at
//!   the end of its resync ([`Sync::resync_marks`]).
//! - Hand the peers' election claims ([`Sync::peer_claims`]) to the election only when the
//!   sync is sealed: unauthenticated, they could be forged.

pub mod seal;
pub mod wire;

mod receiver;
mod sender;
mod session;
#[cfg(test)]
mod sim;

use core::net::Ipv4Addr;
use std::net::SocketAddr;

use smoltcp::time::{Duration, Instant};

pub use seal::{KeyUsed, Keys};
pub use wire::{MAX_DATAGRAM, SyncWireError};

use crate::nat::Flow;
use receiver::Rx;
use sender::Tx;
use session::{Freshness, Verdict};

/// Most live changes waiting to be sent to one peer.
pub const QUEUE_LIMIT: usize = 1 << 20;
/// Most early batches held per peer while a gap before them is filled.
pub const HOLD_LIMIT: usize = 4096;
/// Most flows one full resync carries; a larger table is cut and counted.
pub const RESYNC_LIMIT: usize = 1 << 24;
/// How often a gap still open is nacked again.
pub const NACK_RETRY: Duration = Duration::from_millis(50);
/// A batch retransmitted this recently is not retransmitted again for another Nack.
pub const RETRANSMIT_HOLDOFF: Duration = Duration::from_millis(20);

/// The shortest heartbeat interval accepted.
const MIN_HEARTBEAT: Duration = Duration::from_millis(1);

/// What happened to a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Created, changed state, or refreshed: install or update it as it is.
    Upsert,
    /// Removed.
    Delete,
    /// How to reach the node `flow.node` (the change's other flow fields are empty): the
    /// outer MAC its tunnelled frames come from and the MAC of its tunnel device, so that a
    /// gateway taking over tunnels replies to a node that never sent it anything.
    Node { mac: [u8; 6], tunnel_mac: [u8; 6] },
}

/// One flow change, local (to stream) or from a peer (to apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub op: Op,
    pub flow: Flow,
    /// How long the flow has left to live; whole seconds on the wire (rounded up).
    pub remaining: Duration,
}

impl Change {
    /// A flow created, changed or still alive, with `remaining` to live.
    pub fn upsert(flow: Flow, remaining: Duration) -> Change {
        Change {
            op: Op::Upsert,
            flow,
            remaining,
        }
    }

    /// A flow removed.
    pub fn delete(flow: Flow) -> Change {
        Change {
            op: Op::Delete,
            flow,
            remaining: Duration::ZERO,
        }
    }

    /// A node record: `address` reached at `mac`, its tunnel device at `tunnel_mac`.
    pub fn node(address: core::net::Ipv4Addr, mac: [u8; 6], tunnel_mac: [u8; 6]) -> Change {
        use core::net::Ipv4Addr;
        Change {
            op: Op::Node { mac, tunnel_mac },
            flow: Flow {
                node: address,
                egress: Ipv4Addr::UNSPECIFIED,
                pod: Ipv4Addr::UNSPECIFIED,
                remote: Ipv4Addr::UNSPECIFIED,
                pod_port: 0,
                remote_port: 0,
                nat_port: 0,
                proto: crate::nat::Proto::Udp,
                state: crate::nat::FlowState::Open,
            },
            remaining: Duration::ZERO,
        }
    }
}

/// How a gateway syncs.
#[derive(Debug, Clone)]
pub struct Params {
    /// This gateway's boot id: random, chosen at start, never 0.
    pub epoch: u64,
    /// The peers' sync addresses.
    pub peers: Vec<SocketAddr>,
    /// This gateway's election address (the source of its adverts), announced to the
    /// peers in every datagram.
    pub primary: Ipv4Addr,
    /// This gateway's `[gateway].name`, announced in every heartbeat (left out when
    /// [`wire::valid_name`] refuses it): how the peers name it in the Kubernetes status.
    pub name: String,
    /// The group's keys; `None` speaks unauthenticated datagrams (any host on the segment
    /// can then inject flows: the config check warns).
    pub keys: Option<Keys>,
    /// How long a batch waits for more changes before it leaves.
    pub flush_after: Duration,
    /// The heartbeat interval (at least 1 ms).
    pub heartbeat: Duration,
    /// Live batches kept per peer for retransmission (resync batches are rebuilt).
    pub ring: usize,
    /// Batches per second while replaying a full table.
    pub resync_rate: u32,
}

impl Params {
    /// The defaults: no key, 10 ms batching, 1 s heartbeats, 4096 live batches kept
    /// (167,936 changes of history), resyncs at 20,000 batches (820,000 flows) per second.
    pub fn new(epoch: u64, peers: Vec<SocketAddr>) -> Params {
        Params {
            epoch,
            peers,
            primary: Ipv4Addr::UNSPECIFIED,
            name: String::new(),
            keys: None,
            flush_after: Duration::from_millis(10),
            heartbeat: Duration::from_secs(1),
            ring: 4096,
            resync_rate: 20_000,
        }
    }
}

/// What a gateway's sync did, for Prometheus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams_sent: u64,
    /// Every datagram handed in, refused ones included.
    pub datagrams_received: u64,
    /// Changes sent in new batches (retransmits not counted again).
    pub changes_sent: u64,
    /// Changes applied from peers.
    pub changes_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub nacks_sent: u64,
    pub nacks_received: u64,
    pub retransmits: u64,
    /// Full resyncs started towards a peer.
    pub resyncs_sent: u64,
    /// ResyncRequests sent (retries included).
    pub resyncs_requested: u64,
    /// ResyncRequests received.
    pub resync_requests_received: u64,
    /// Batches already applied or already held.
    pub duplicates: u64,
    /// Batches held because an earlier one was missing.
    pub out_of_order: u64,
    /// Batches too far ahead to hold; nacked again once the window reaches them.
    pub beyond_window: u64,
    /// Local changes dropped because a peer's queue was full.
    pub queue_overflow: u64,
    /// Resyncs cut at [`RESYNC_LIMIT`] flows.
    pub resync_truncated: u64,
    /// Datagrams of a peer's previous stream, or Nacks about ours.
    pub stale_epoch: u64,
    /// Datagrams refused by the parser, by [`SyncWireError::index`].
    pub rejected: [u64; SyncWireError::ALL.len()],
    /// Datagrams from an address that is not a peer.
    pub unknown_peer: u64,
    /// Datagrams that do not authenticate under the keys held here (forged, corrupted,
    /// another key), or that are sealed when no key is configured, or not sealed when one
    /// is.
    pub auth: u64,
    /// Authentic datagrams that do not echo this gateway's current token for their sender:
    /// sent before one of the two restarted (a replay), or before the sender heard the
    /// token. Usual for one round trip after a restart.
    pub unconfirmed: u64,
    /// Authentic, fresh datagrams whose counter was seen already (a replay).
    pub replay: u64,
    /// Datagrams opened with the previous key (`[sync].previous_key_file`).
    pub previous_key: u64,
    /// ResyncRequests ignored because the same peer's previous one was honoured less
    /// than a heartbeat before.
    pub resync_requests_limited: u64,
}

impl Counters {
    /// Refused datagrams by reason.
    pub fn rejected(&self) -> impl Iterator<Item = (SyncWireError, u64)> + '_ {
        SyncWireError::ALL
            .iter()
            .map(|e| (*e, self.rejected[e.index()]))
    }
}

/// How the sync with one peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: SocketAddr,
    /// Live changes queued for the peer, not yet sent.
    pub queued_changes: usize,
    /// Flows of a full resync still to be sent.
    pub resync_pending: usize,
    /// Batches waiting to be (re)sent.
    pub queued_datagrams: usize,
    /// The age of the oldest change queued and not yet sent (zero when none), as of the
    /// latest time handed to the core.
    pub lag: Duration,
    /// The last seq this gateway sent on its stream to the peer.
    pub last_sent_seq: u64,
    /// The last seq of the peer's stream applied here.
    pub last_applied_seq: u64,
    /// Batches of the peer's stream held, waiting for a gap to fill.
    pub held: usize,
    /// The epoch of the peer's stream followed.
    pub their_epoch: Option<u64>,
    /// Full resyncs sent to the peer.
    pub resyncs_sent: u64,
    /// Full resyncs received from the peer.
    pub resyncs_received: u64,
    pub resync_in_progress: bool,
    /// Times the peer was seen restarting (a new epoch).
    pub restarts: u64,
    /// When a fresh datagram of the peer last arrived.
    pub last_heard: Option<Instant>,
    /// How long since a fresh datagram of the peer last arrived, as of the latest time
    /// handed to the core.
    pub silent: Option<Duration>,
    /// Heard from within three heartbeat intervals.
    pub alive: bool,
    /// The peer has echoed our current token: its datagrams are acted on.
    pub confirmed: bool,
    /// The peer's election address, as its latest fresh datagram announced it.
    pub primary: Option<Ipv4Addr>,
}

/// What a peer announced of its election in its latest fresh heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerClaims<'a> {
    /// The peer's election address.
    pub primary: Ipv4Addr,
    /// When the heartbeat arrived.
    pub heard_at: Instant,
    /// Its priority per VRID, `[vrid, priority]`.
    pub priorities: &'a [[u8; 2]],
}

/// A boundary of a peer's full resync within the changes a
/// [`handle_datagram`](Sync::handle_datagram) call applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResyncMark {
    /// Index into `applied` (as the caller passed it, so counting what it already held):
    /// the changes before it come before the boundary, those from it on after.
    pub at: usize,
    pub edge: ResyncEdge,
}

/// Which boundary of a full resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncEdge {
    /// The peer's whole table follows, up to the matching [`End`](ResyncEdge::End). A
    /// flow last learned from the peer before this mark, and not mentioned again by the
    /// `End`, is gone on the peer.
    Begin,
    /// The peer's whole table has been sent.
    End,
}

struct Peer {
    address: SocketAddr,
    tx: Tx,
    rx: Rx,
    fresh: Freshness,
    /// Its election address, from its latest fresh datagram.
    primary: Option<Ipv4Addr>,
    /// Its claims, from its latest fresh heartbeat, and when it arrived.
    claims: Vec<[u8; 2]>,
    claims_at: Option<Instant>,
    /// Its name, from its latest fresh heartbeat that carried one.
    name: Option<String>,
}

/// The flow sync of one gateway with all its peers.
pub struct Sync {
    epoch: u64,
    primary: Ipv4Addr,
    /// This gateway's name, as heartbeats carry it (empty: none).
    name: String,
    keys: Option<Keys>,
    flush_after: Duration,
    heartbeat: Duration,
    resync_rate: u32,
    /// Live batches kept per peer.
    ring: usize,
    /// Peers added so far: each new one takes the next index for its session tokens.
    peer_seq: usize,
    peers: Vec<Peer>,
    counters: Counters,
    /// The latest time handed in.
    now: Instant,
    /// The counter of the last datagram sent: the AEAD nonce (under the epoch's key).
    sent: u64,
    /// This gateway's election priorities, announced in heartbeats.
    claims: Vec<[u8; 2]>,
    /// Datagram buffers to reuse.
    spare: Vec<Vec<u8>>,
    /// Where a received datagram is opened.
    scratch: Vec<u8>,
    marks: Vec<ResyncMark>,
    reflects: Vec<u64>,
}

impl Sync {
    /// Starts syncing at `now`: every peer is asked for its table at the next poll.
    pub fn new(params: Params, now: Instant) -> Sync {
        let mut peers: Vec<Peer> = Vec::with_capacity(params.peers.len());
        for address in params.peers {
            if peers.iter().all(|p| p.address != address) {
                peers.push(Peer {
                    address,
                    tx: Tx::new(now, params.ring),
                    rx: Rx::new(now),
                    fresh: Freshness::new(params.epoch, peers.len(), now),
                    primary: None,
                    claims: Vec::new(),
                    claims_at: None,
                    name: None,
                });
            }
        }
        Sync {
            epoch: params.epoch,
            primary: params.primary,
            name: if wire::valid_name(&params.name) {
                params.name
            } else {
                String::new()
            },
            keys: params.keys,
            flush_after: params.flush_after,
            heartbeat: params.heartbeat.max(MIN_HEARTBEAT),
            resync_rate: params.resync_rate.max(1),
            ring: params.ring,
            peer_seq: peers.len(),
            peers,
            counters: Counters::default(),
            now,
            sent: 0,
            claims: Vec::new(),
            spare: Vec::new(),
            scratch: Vec::with_capacity(MAX_DATAGRAM),
            marks: Vec::new(),
            reflects: Vec::new(),
        }
    }

    /// The name `address`'s latest fresh heartbeat announced (`None` before one did).
    pub fn peer_name(&self, address: SocketAddr) -> Option<&str> {
        self.peers
            .iter()
            .find(|p| p.address == address)
            .and_then(|p| p.name.as_deref())
    }

    /// This gateway's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The heartbeat interval: a peer silent for three of them is down.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// This gateway's election priority per VRID, `[vrid, priority]`, announced to the
    /// peers in every heartbeat from now on (at most 255). A change (a reload) is announced
    /// at once rather than at the next heartbeat: a peer refuses adverts at any other
    /// priority than the one last claimed (`unverified`), so until it hears the new claim
    /// it would not yield to this gateway's adverts, nor this gateway to its (two masters).
    pub fn set_claims(&mut self, claims: &[[u8; 2]]) {
        let claims = &claims[..claims.len().min(255)];
        if self.claims == claims {
            return;
        }
        self.claims.clear();
        self.claims.extend_from_slice(claims);
        for p in &mut self.peers {
            p.tx.heartbeat_now(self.now);
        }
    }

    /// What each peer last announced of its election, for those that did.
    pub fn peer_claims(&self) -> impl Iterator<Item = PeerClaims<'_>> + '_ {
        self.peers.iter().filter_map(|p| {
            Some(PeerClaims {
                primary: p.primary?,
                heard_at: p.claims_at?,
                priorities: &p.claims,
            })
        })
    }

    /// The election address the peer at `address` announced, once it is confirmed.
    pub fn peer_primary(&self, address: SocketAddr) -> Option<Ipv4Addr> {
        self.peers
            .iter()
            .find(|p| p.address == address)
            .and_then(|p| p.primary)
    }

    /// Seals with `keys` from now on (`None`: in clear). A rotation names the old key as
    /// the previous one, so the peers' datagrams sealed with it still open until they
    /// rotate too.
    pub fn set_keys(&mut self, keys: Option<Keys>) {
        self.keys = keys;
    }

    /// Syncs with `peers` from `now` on: peers that stay keep their streams; new ones are
    /// asked for their table at the next poll; the others are forgotten.
    pub fn set_peers(&mut self, now: Instant, peers: &[SocketAddr]) {
        self.now = now;
        self.peers.retain(|p| peers.contains(&p.address));
        for &address in peers {
            if self.peers.iter().any(|p| p.address == address) {
                continue;
            }
            self.peer_seq += 1;
            self.peers.push(Peer {
                address,
                tx: Tx::new(now, self.ring),
                rx: Rx::new(now),
                fresh: Freshness::new(self.epoch, self.peer_seq, now),
                primary: None,
                claims: Vec::new(),
                claims_at: None,
                name: None,
            });
        }
    }

    /// Asks the peer whose election address is `primary` for its whole table at the next
    /// [`poll`](Self::poll), and every heartbeat until its resync begins to arrive: for a
    /// gateway that has just lost an address to that peer (after a split brain, its table
    /// of the address must become the new master's).
    pub fn request_table(&mut self, now: Instant, primary: Ipv4Addr) {
        self.now = now;
        if let Some(p) = self.peers.iter_mut().find(|p| p.primary == Some(primary)) {
            p.rx.request_table(now);
        }
    }

    /// A local flow change at `now`, streamed to every peer.
    pub fn queue(&mut self, now: Instant, change: Change) {
        self.now = now;
        let record = wire::emit_change(&change);
        let key = change.flow.inside_key();
        for p in &mut self.peers {
            p.tx.queue(now, &record, &key, &mut self.spare, &mut self.counters);
        }
    }

    /// A datagram received from `from` at `now`. The peer's changes to apply locally are
    /// appended to `applied`, in order; where a full resync begins or ends among them is
    /// in [`resync_marks`](Self::resync_marks) until the next call.
    ///
    /// Only a datagram that authenticates (when keys are configured), echoes this
    /// gateway's current token for the peer and carries a counter not seen before is acted
    /// on; every other one is counted by reason and changes nothing.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        applied: &mut Vec<Change>,
    ) {
        self.now = now;
        self.marks.clear();
        self.counters.datagrams_received += 1;
        self.counters.bytes_received += bytes.len() as u64;
        let Some(peer) = self.peers.iter_mut().find(|p| p.address == from) else {
            self.counters.unknown_peer += 1;
            return;
        };
        let header = match wire::Header::parse(bytes) {
            Ok(h) => h,
            Err(e) => {
                self.counters.rejected[e.index()] += 1;
                return;
            }
        };
        let plain: &[u8] = match (&mut self.keys, header.suite) {
            (Some(keys), wire::Suite::Aes256Gcm) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(bytes);
                match keys.open(&mut self.scratch) {
                    Ok((len, used)) => {
                        if used == KeyUsed::Previous {
                            self.counters.previous_key += 1;
                        }
                        &self.scratch[..len]
                    }
                    Err(_) => {
                        self.counters.auth += 1;
                        return;
                    }
                }
            }
            (None, wire::Suite::None) => bytes,
            // A peer with a key talking to one without, or the other way round.
            _ => {
                self.counters.auth += 1;
                return;
            }
        };
        let (header, message) = match wire::Message::parse(plain) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.counters.rejected[e.index()] += 1;
                return;
            }
        };
        let c = &mut self.counters;
        let session = header.session;
        let new_epoch = peer.rx.epoch != Some(header.epoch);
        match peer
            .fresh
            .check(session.echo, session.counter, session.token, new_epoch)
        {
            Verdict::Fresh => {}
            Verdict::Unconfirmed => {
                c.unconfirmed += 1;
                return;
            }
            Verdict::Replay => {
                c.replay += 1;
                return;
            }
        }
        // Fresh: an epoch change is taken from here only.
        if peer.rx.follow(header.epoch) {
            peer.fresh.restarted();
            peer.tx.peer_restarted();
            peer.tx.heartbeat_now(now);
        }
        if peer.fresh.heard(session.token) {
            // From now on our datagrams are fresh for the peer: tell it our token, and
            // ask again for what it may have refused.
            peer.tx.heartbeat_now(now);
            peer.rx.request_now(now);
        }
        peer.primary = Some(session.primary);
        peer.rx.heard_at = Some(now);
        match message {
            wire::Message::Batch(batch) => {
                peer.rx
                    .handle_batch(&batch, plain, applied, &mut self.marks, c);
            }
            wire::Message::Heartbeat {
                last_seq,
                claims,
                name,
            } => {
                peer.rx.handle_heartbeat(last_seq);
                peer.claims.clear();
                peer.claims.extend_from_slice(claims);
                peer.claims_at = Some(now);
                // Allocates only when a peer names itself anew (first heard, renamed).
                if !name.is_empty() && peer.name.as_deref() != Some(name) {
                    peer.name = Some(name.to_owned());
                }
            }
            wire::Message::Nack {
                stream_epoch,
                from,
                to,
            } => {
                c.nacks_received += 1;
                if stream_epoch == self.epoch {
                    peer.tx.handle_nack(now, from, to);
                } else {
                    c.stale_epoch += 1;
                }
            }
            wire::Message::ResyncRequest { .. } => {
                // Answered whatever stream it names: the requester lacks our table either
                // way.
                c.resync_requests_received += 1;
                if !peer.tx.handle_resync_request(now, self.heartbeat) {
                    c.resync_requests_limited += 1;
                }
            }
        }
    }

    /// Where full resyncs began or ended among the changes the last
    /// [`handle_datagram`](Self::handle_datagram) call applied, in order.
    ///
    /// A shell that wants its table to equal the peer's drops, at an
    /// [`End`](ResyncEdge::End), every flow it last learned from that peer before the
    /// matching [`Begin`](ResyncEdge::Begin).
    pub fn resync_marks(&self) -> &[ResyncMark] {
        &self.marks
    }

    /// A peer that needs this gateway's whole table; each request is reported once. The
    /// shell answers with [`queue_resync`](Self::queue_resync).
    pub fn wants_full_table(&mut self) -> Option<SocketAddr> {
        self.peers
            .iter_mut()
            .find_map(|p| p.tx.take_want().then_some(p.address))
    }

    /// Streams the whole local table, as exported at `now` (each flow and its remaining
    /// time), to `peer`. Live changes still waiting for it are dropped: the export already
    /// holds them.
    pub fn queue_resync(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        flows: impl IntoIterator<Item = (Flow, Duration)>,
    ) {
        self.now = now;
        let Some(p) = self.peers.iter_mut().find(|p| p.address == peer) else {
            return;
        };
        let mut flows = flows.into_iter();
        let snapshot: Vec<(Flow, u32)> = flows
            .by_ref()
            .take(RESYNC_LIMIT)
            .map(|(flow, left)| (flow, wire::remaining_secs(left)))
            .collect();
        if flows.next().is_some() {
            self.counters.resync_truncated += 1;
        }
        self.counters.resyncs_sent += 1;
        p.tx.start_resync(now, self.resync_rate, snapshot, &mut self.spare);
    }

    /// Appends the datagrams to send at `now`: batches due, retransmits, the paced resync,
    /// heartbeats, Nacks, resync requests, answers to not-fresh datagrams; each stamped
    /// with its session fields and sealed when keys are configured.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        self.now = now;
        let params = TxParams {
            flush_after: self.flush_after,
            heartbeat: self.heartbeat,
            resync_rate: self.resync_rate,
            claims: &self.claims,
            name: &self.name,
        };
        let suite = if self.keys.is_some() {
            wire::Suite::Aes256Gcm
        } else {
            wire::Suite::None
        };
        for p in &mut self.peers {
            let first = out.len();
            p.tx.poll(
                now,
                self.epoch,
                p.address,
                &params,
                &mut self.spare,
                out,
                &mut self.counters,
            );
            p.rx.poll(
                now,
                self.epoch,
                self.heartbeat,
                p.address,
                out,
                &mut self.counters,
            );
            let stamped = out.len();
            // Not-fresh datagrams are answered with a heartbeat echoing their token.
            p.fresh.take_reflects(now, &mut self.reflects);
            for _ in &self.reflects {
                let hb = wire::Message::Heartbeat {
                    last_seq: wire::low32(p.tx.last_seq()),
                    claims: params.claims,
                    name: params.name,
                };
                out.push((p.address, hb.to_vec(self.epoch)));
            }
            let mut reflects = self.reflects.drain(..);
            for (i, (_, datagram)) in out[first..].iter_mut().enumerate() {
                let echo = if first + i < stamped {
                    p.fresh.echo()
                } else {
                    reflects.next().unwrap_or_default()
                };
                self.sent += 1;
                let session = wire::Session {
                    counter: self.sent,
                    token: p.fresh.token(),
                    echo,
                    primary: self.primary,
                };
                wire::set_session(datagram, suite, &session);
                if let Some(keys) = &mut self.keys {
                    keys.seal(datagram);
                }
                self.counters.datagrams_sent += 1;
                self.counters.bytes_sent += datagram.len() as u64;
            }
        }
    }

    /// The next time [`poll`](Self::poll) has something to do (possibly already past).
    pub fn poll_at(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flat_map(|p| {
                [
                    p.tx.poll_at(self.now, self.flush_after),
                    p.rx.poll_at(self.now),
                    p.fresh.poll_at(),
                ]
            })
            .flatten()
            .min()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// How the sync with each peer stands.
    pub fn peers(&self) -> impl Iterator<Item = PeerStatus> + '_ {
        self.peers.iter().map(|p| PeerStatus {
            address: p.address,
            queued_changes: p.tx.queued_changes(),
            resync_pending: p.tx.resync_pending(),
            queued_datagrams: p.tx.queued_datagrams(),
            lag: p
                .tx
                .oldest_queued()
                .map_or(Duration::ZERO, |at| since(self.now, at)),
            last_sent_seq: p.tx.last_seq(),
            last_applied_seq: p.rx.applied_seq(),
            held: p.rx.held(),
            their_epoch: p.rx.epoch,
            resyncs_sent: p.tx.resyncs_sent,
            resyncs_received: p.rx.resyncs_received,
            resync_in_progress: p.tx.resync_in_progress(),
            restarts: p.rx.restarts,
            last_heard: p.rx.heard_at,
            silent: p.rx.heard_at.map(|at| since(self.now, at)),
            alive: p
                .rx
                .heard_at
                .is_some_and(|at| since(self.now, at) <= self.heartbeat * 3),
            confirmed: p.fresh.confirmed(),
            primary: p.primary,
        })
    }
}

/// What the sender needs of [`Params`] on each poll.
struct TxParams<'a> {
    flush_after: Duration,
    heartbeat: Duration,
    resync_rate: u32,
    claims: &'a [[u8; 2]],
    name: &'a str,
}

/// `now - then`, or zero when `then` is later.
fn since(now: Instant, then: Instant) -> Duration {
    if now > then {
        now - then
    } else {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use core::net::Ipv4Addr;

    use super::wire::{BATCH_HEADER_LEN, BatchFlags, CHANGE_LEN, Message};
    use super::*;
    use crate::nat::{FlowState, Proto};

    const A: u64 = 0xaaaa;
    const B: u64 = 0xbbbb;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::new(192, 168, 1, last), 7946))
    }

    fn flow(i: u16) -> Flow {
        Flow {
            node: Ipv4Addr::new(10, 0, 1, 5),
            egress: Ipv4Addr::new(192, 168, 1, 100),
            pod: Ipv4Addr::new(10, 244, 1, 7),
            remote: Ipv4Addr::new(93, 184, 216, 34),
            pod_port: 30000u16.wrapping_add(i),
            remote_port: 443,
            nat_port: 20000u16.wrapping_add(i),
            proto: Proto::Tcp,
            state: FlowState::TcpSynSent,
        }
    }

    fn upsert(i: u16) -> Change {
        Change {
            op: Op::Upsert,
            flow: flow(i),
            remaining: Duration::from_secs(240),
        }
    }

    fn delete(i: u16) -> Change {
        Change {
            op: Op::Delete,
            flow: flow(i),
            remaining: Duration::ZERO,
        }
    }

    fn at(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    fn params(epoch: u64, me: u8, peer: u8, keys: Option<&Keys>) -> Params {
        Params {
            primary: Ipv4Addr::new(192, 168, 1, me),
            name: format!("gw{me}"),
            keys: keys.cloned(),
            ..Params::new(epoch, vec![addr(peer)])
        }
    }

    /// Gateway A (.11) with peer B (.12), and B with peer A, never in touch yet.
    fn pair() -> (Sync, Sync) {
        (
            Sync::new(params(A, 11, 12, None), at(0)),
            Sync::new(params(B, 12, 11, None), at(0)),
        )
    }

    /// [`pair`], after the token handshake at time 0: each has heard the other fresh,
    /// and what the handshake asked for (each one's table) was taken.
    fn connected() -> (Sync, Sync) {
        let (mut a, mut b) = pair();
        connect(&mut a, &mut b, at(0));
        (a, b)
    }

    /// Exchanges datagrams at `now` until both are confirmed; drops the resync requests
    /// this brought.
    fn connect(a: &mut Sync, b: &mut Sync, now: Instant) {
        for _ in 0..4 {
            let from_a = poll(a, now);
            to_b(b, now, &from_a);
            let from_b = poll(b, now);
            to_a(a, now, &from_b);
        }
        assert!(a.peers().all(|p| p.confirmed) && b.peers().all(|p| p.confirmed));
        while a.wants_full_table().is_some() || b.wants_full_table().is_some() {}
    }

    fn poll(s: &mut Sync, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        s.poll(now, &mut out);
        out.into_iter().map(|(_, d)| d).collect()
    }

    /// `message` as `sender` (epoch, primary .12) sends it to `to`: echoing `to`'s current
    /// token for its first peer, with datagram number `counter` (unsealed).
    fn forged(to: &Sync, sender: u64, counter: u64, message: Message<'_>) -> Vec<u8> {
        let mut d = message.to_vec(sender);
        let p = &to.peers[0];
        wire::set_session(
            &mut d,
            wire::Suite::None,
            &wire::Session {
                counter,
                token: p.fresh.echo().max(1),
                echo: p.fresh.token(),
                primary: Ipv4Addr::new(192, 168, 1, 12),
            },
        );
        d
    }

    /// B's Nack of `from..=to` in A's stream, as B would send it to A.
    fn nack(a: &Sync, counter: u64, from: u32, to: u32) -> Vec<u8> {
        let m = Message::Nack {
            stream_epoch: A,
            from,
            to,
        };
        forged(a, B, counter, m)
    }

    fn parse(d: &[u8]) -> Option<Message<'_>> {
        Message::parse(d).ok().map(|(_, m)| m)
    }

    fn batches(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
        datagrams
            .iter()
            .filter(|d| matches!(parse(d), Some(Message::Batch(_))))
            .cloned()
            .collect()
    }

    /// What a batch carries, whatever its session fields: flags, seq and records.
    fn body(datagram: &[u8]) -> &[u8] {
        &datagram[wire::HEADER_LEN..]
    }

    fn bodies(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
        datagrams.iter().map(|d| body(d).to_vec()).collect()
    }

    fn seqs(datagrams: &[Vec<u8>]) -> Vec<u32> {
        datagrams
            .iter()
            .filter_map(|d| match parse(d) {
                Some(Message::Batch(b)) => Some(b.seq),
                _ => None,
            })
            .collect()
    }

    fn kinds(datagrams: &[Vec<u8>]) -> Vec<u8> {
        datagrams.iter().map(|d| d[5]).collect()
    }

    /// Hands `datagrams` from A to B; what B applied.
    fn to_b(b: &mut Sync, now: Instant, datagrams: &[Vec<u8>]) -> Vec<Change> {
        let mut applied = Vec::new();
        for d in datagrams {
            b.handle_datagram(now, addr(11), d, &mut applied);
        }
        applied
    }

    /// Hands `datagrams` from B to A; what A applied.
    fn to_a(a: &mut Sync, now: Instant, datagrams: &[Vec<u8>]) -> Vec<Change> {
        let mut applied = Vec::new();
        for d in datagrams {
            a.handle_datagram(now, addr(12), d, &mut applied);
        }
        applied
    }

    #[test]
    fn a_thousand_changes_queued_at_once_leave_in_the_fewest_batches() {
        let (mut a, _) = pair();
        let first = poll(&mut a, at(0));
        // A heartbeat and a resync request, nothing else.
        assert_eq!(kinds(&first), vec![3, 4]);
        for i in 0..1000 {
            a.queue(at(1), upsert(i));
        }
        let full = batches(&poll(&mut a, at(1)));
        assert_eq!(full.len(), 1000 / wire::MAX_CHANGES);
        let len = BATCH_HEADER_LEN + wire::MAX_CHANGES * CHANGE_LEN;
        assert!(full.iter().all(|d| d.len() == len));
        let status = a.peers().next().expect("peer");
        assert_eq!(status.queued_changes, 1000 % wire::MAX_CHANGES);
        assert_eq!(a.poll_at(), Some(at(11)));
        // The rest leaves flush_after after it was queued, not before.
        assert!(batches(&poll(&mut a, at(10))).is_empty());
        assert_eq!(
            a.peers().next().map(|p| p.lag),
            Some(Duration::from_millis(9))
        );
        let last = batches(&poll(&mut a, at(11)));
        assert_eq!(last.len(), 1);
        assert_eq!(
            full.len() + last.len(),
            1000usize.div_ceil(wire::MAX_CHANGES)
        );
        assert_eq!(a.counters().changes_sent, 1000);
        let status = a.peers().next().expect("peer");
        assert_eq!((status.queued_changes, status.lag), (0, Duration::ZERO));
        assert_eq!(status.last_sent_seq, 25);
    }

    #[test]
    fn two_gateways_confirm_each_other_in_one_round_trip_each_way() {
        let (mut a, mut b) = pair();
        // A's first datagrams echo no token of B's: B acts on none of them, answers.
        let hello = poll(&mut a, at(0));
        assert!(to_b(&mut b, at(0), &hello).is_empty());
        assert_eq!(b.counters().unconfirmed, 2);
        assert_eq!(b.peers().next().map(|p| p.last_heard), Some(None));
        // B's own first datagrams and its answer (a heartbeat echoing A's token).
        let answer = poll(&mut b, at(0));
        assert_eq!(kinds(&answer), vec![3, 4, 3]);
        to_a(&mut a, at(0), &answer);
        let status = a.peers().next().expect("peer");
        assert!(status.confirmed && status.alive);
        assert_eq!(status.primary, Some(Ipv4Addr::new(192, 168, 1, 12)));
        assert_eq!(status.their_epoch, Some(B));
        // A answers at once (a heartbeat with B's token), and B is confirmed too.
        let reply = poll(&mut a, at(0));
        assert!(kinds(&reply).contains(&3), "{:?}", kinds(&reply));
        to_b(&mut b, at(0), &reply);
        assert!(b.peers().all(|p| p.confirmed && p.their_epoch == Some(A)));
    }

    #[test]
    fn changes_every_peer_receives_in_order() {
        let (mut a, mut b) = connected();
        a.queue(at(0), upsert(1));
        a.queue(at(0), delete(1));
        let out = poll(&mut a, at(10));
        assert_eq!(to_b(&mut b, at(11), &out), vec![upsert(1), delete(1)]);
        assert_eq!(b.counters().changes_received, 2);
        let status = b.peers().next().expect("peer");
        assert_eq!(status.their_epoch, Some(A));
        assert_eq!(status.last_applied_seq, 1);
        assert!(status.alive);
    }

    #[test]
    fn a_gap_is_nacked_and_later_batches_wait_for_it() {
        let (mut a, mut b) = connected();
        a.queue(at(0), upsert(1));
        let one = batches(&poll(&mut a, at(10)));
        a.queue(at(10), delete(1));
        let two = batches(&poll(&mut a, at(20)));
        // The delete arrives first: held, and seq 1 nacked at once.
        assert!(to_b(&mut b, at(21), &two).is_empty());
        assert_eq!(b.counters().out_of_order, 1);
        assert_eq!(b.poll_at(), Some(at(21)));
        let nacks = poll(&mut b, at(21));
        assert_eq!(kinds(&nacks), vec![2]);
        assert_eq!(
            parse(&nacks[0]),
            Some(Message::Nack {
                stream_epoch: A,
                from: 1,
                to: 1
            })
        );
        // Not again before NACK_RETRY.
        assert!(poll(&mut b, at(30)).is_empty());
        assert_eq!(b.poll_at(), Some(at(71)));
        // A retransmits (once for two Nacks); the create, then the held delete, come out in
        // order.
        let mut applied = Vec::new();
        a.handle_datagram(at(22), addr(12), &nacks[0], &mut applied);
        let again = poll(&mut a, at(22));
        assert_eq!(bodies(&again), bodies(&one));
        // The same Nack twice is a replay; another one, a second Nack of the same loss.
        a.handle_datagram(at(23), addr(12), &nacks[0], &mut applied);
        assert_eq!(a.counters().replay, 1);
        let second = poll(&mut b, at(71));
        assert_eq!(kinds(&second), vec![2]);
        a.handle_datagram(at(23), addr(12), &second[0], &mut applied);
        assert!(poll(&mut a, at(23)).is_empty());
        assert_eq!(a.counters().retransmits, 1);
        assert_eq!(to_b(&mut b, at(23), &again), vec![upsert(1), delete(1)]);
        // And twice is once: the retransmit again is a replay, the original a duplicate.
        assert!(to_b(&mut b, at(24), &again).is_empty());
        assert!(to_b(&mut b, at(24), &one).is_empty());
        assert_eq!((b.counters().replay, b.counters().duplicates), (1, 1));
        assert!(batches(&poll(&mut b, at(80))).is_empty());
        assert_eq!(b.counters().nacks_sent, 2);
    }

    #[test]
    fn a_heartbeat_past_the_last_batch_reveals_tail_loss() {
        let (mut a, mut b) = connected();
        a.queue(at(0), upsert(1));
        let lost = poll(&mut a, at(10));
        assert_eq!(batches(&lost).len(), 1);
        let beat: Vec<_> = poll(&mut a, at(1000))
            .into_iter()
            .filter(|d| d[5] == 3)
            .collect();
        assert_eq!(beat.len(), 1);
        to_b(&mut b, at(1000), &beat);
        let nack = poll(&mut b, at(1000));
        assert!(kinds(&nack).contains(&2), "{:?}", kinds(&nack));
    }

    #[test]
    fn a_nack_the_ring_cannot_answer_asks_for_the_full_table() {
        let mut a = Sync::new(
            Params {
                ring: 2,
                ..params(A, 11, 12, None)
            },
            at(0),
        );
        for i in 0..4 {
            a.queue(at(i), upsert(i as u16));
            poll(&mut a, at(i + 10));
        }
        let mut applied = Vec::new();
        a.handle_datagram(at(20), addr(12), &nack(&a, 1, 3, 4), &mut applied);
        assert_eq!(a.wants_full_table(), None);
        assert_eq!(batches(&poll(&mut a, at(20))).len(), 2);
        a.handle_datagram(at(21), addr(12), &nack(&a, 2, 2, 4), &mut applied);
        assert_eq!(a.wants_full_table(), Some(addr(12)));
        assert_eq!(a.wants_full_table(), None);
        // About another stream of ours: ignored.
        let other = Message::Nack {
            stream_epoch: 7,
            from: 1,
            to: 1,
        };
        a.handle_datagram(at(22), addr(12), &forged(&a, B, 3, other), &mut applied);
        assert_eq!(a.counters().stale_epoch, 1);
        assert_eq!(a.wants_full_table(), None);
        // The resync supersedes the old seqs: a Nack below it brings its first batch.
        a.queue_resync(
            at(30),
            addr(12),
            (0..100).map(|i| (flow(i), Duration::from_secs(60))),
        );
        let first = batches(&poll(&mut a, at(30)));
        assert_eq!(first.len(), 1);
        assert_eq!(seqs(&first), vec![5]);
        let retransmits = a.counters().retransmits;
        a.handle_datagram(at(30), addr(12), &nack(&a, 4, 1, 2), &mut applied);
        assert_eq!(a.wants_full_table(), None);
        assert_eq!(bodies(&poll(&mut a, at(30))), bodies(&first));
        assert_eq!(a.counters().retransmits, retransmits + 1);
    }

    #[test]
    fn a_full_resync_is_paced_flagged_and_lets_the_receiver_skip_what_it_missed() {
        let (mut a, mut b) = connected();
        let mut applied = Vec::new();
        // B misses A's first batch entirely.
        a.queue(at(0), upsert(500));
        let missed = poll(&mut a, at(10));
        assert_eq!(batches(&missed).len(), 1);
        // B asks for the table (again: the handshake's request was taken).
        for d in poll(&mut b, at(1000)).iter().filter(|d| d[5] == 4) {
            a.handle_datagram(at(1000), addr(12), d, &mut applied);
        }
        assert_eq!(a.counters().resync_requests_received, 2);
        assert_eq!(a.wants_full_table(), Some(addr(12)));
        let table: Vec<(Flow, Duration)> = (0..100)
            .map(|i| (flow(i), Duration::from_secs(60)))
            .collect();
        a.queue_resync(at(1000), addr(12), table.clone());
        // A live delete of a flow still waiting in the snapshot: the snapshot entry goes.
        a.queue(at(1000), delete(99));
        // 100 flows: 3 batches, the first at once, then one every 50 µs.
        let out = batches(&poll(&mut a, at(1000)));
        assert_eq!(out.len(), 1);
        assert_eq!(a.poll_at(), Some(Instant::from_micros(1_000_050)));
        let mut all = out;
        all.extend(batches(&poll(&mut a, Instant::from_micros(1_000_050))));
        all.extend(batches(&poll(&mut a, at(1010))));
        assert_eq!(all.len(), 4);
        let flags: Vec<BatchFlags> = all
            .iter()
            .filter_map(|d| match parse(d) {
                Some(Message::Batch(b)) => Some(b.flags),
                _ => None,
            })
            .collect();
        let resync = |begin, end| BatchFlags {
            resync: true,
            resync_begin: begin,
            resync_end: end,
        };
        assert_eq!(
            flags,
            vec![
                resync(true, false),
                resync(false, false),
                BatchFlags::LIVE,
                resync(false, true)
            ]
        );
        // B skips seq 1 for the resync, and says where it begins and ends.
        let mut applied = Vec::new();
        b.handle_datagram(at(1011), addr(11), &all[0], &mut applied);
        assert_eq!(
            b.resync_marks(),
            &[ResyncMark {
                at: 0,
                edge: ResyncEdge::Begin
            }]
        );
        for d in &all[1..] {
            b.handle_datagram(at(1011), addr(11), d, &mut applied);
        }
        assert_eq!(
            b.resync_marks(),
            &[ResyncMark {
                at: 100,
                edge: ResyncEdge::End
            }]
        );
        let mut want: Vec<Change> = table[..99]
            .iter()
            .map(|(f, d)| Change {
                op: Op::Upsert,
                flow: *f,
                remaining: *d,
            })
            .collect();
        want.insert(2 * wire::MAX_CHANGES, delete(99));
        assert_eq!(applied, want);
        // Nothing left to ask for: no Nack, no more requests.
        let after = poll(&mut b, at(1012));
        assert!(after.iter().all(|d| d[5] == 3), "{:?}", kinds(&after));
        assert!(poll(&mut b, at(2000)).iter().all(|d| d[5] == 3));
        let status = b.peers().next().expect("peer");
        assert_eq!((status.resyncs_received, status.held), (1, 0));
        assert_eq!(a.peers().next().map(|p| p.resync_in_progress), Some(false));
    }

    #[test]
    fn resync_batches_are_rebuilt_when_nacked_until_the_grace_runs_out() {
        let (mut a, _) = pair();
        poll(&mut a, at(0));
        let table = (0..100).map(|i| (flow(i), Duration::from_secs(60)));
        a.queue_resync(at(0), addr(12), table);
        let sent = batches(&poll(&mut a, at(10)));
        assert_eq!(seqs(&sent), vec![1, 2, 3]);
        assert_eq!(a.peers().next().map(|p| p.resync_in_progress), Some(false));
        let mut applied = Vec::new();
        a.handle_datagram(at(20), addr(12), &nack(&a, 1, 1, 3), &mut applied);
        assert_eq!(bodies(&batches(&poll(&mut a, at(20)))), bodies(&sent));
        assert_eq!(a.counters().retransmits, 3);
        // Three heartbeats after the last batch left, the snapshot is gone.
        poll(&mut a, at(3009));
        a.handle_datagram(at(3009), addr(12), &nack(&a, 2, 3, 3), &mut applied);
        assert_eq!(a.wants_full_table(), None);
        poll(&mut a, at(3010));
        a.handle_datagram(at(3010), addr(12), &nack(&a, 3, 3, 3), &mut applied);
        assert_eq!(a.wants_full_table(), Some(addr(12)));
    }

    #[test]
    fn resync_requests_are_retried_every_heartbeat_until_a_resync_arrives() {
        let (mut a, mut b) = pair();
        assert_eq!(kinds(&poll(&mut b, at(0))), vec![3, 4]);
        assert_eq!(kinds(&poll(&mut b, at(999))), Vec::<u8>::new());
        assert_eq!(kinds(&poll(&mut b, at(1000))), vec![3, 4]);
        let mut applied = Vec::new();
        let request = Message::ResyncRequest { stream_epoch: 0 };
        a.handle_datagram(at(1000), addr(12), &forged(&a, B, 1, request), &mut applied);
        let peer = a.wants_full_table().expect("asked");
        a.queue_resync(at(1000), peer, std::iter::empty());
        // B hears A's first datagrams (the empty resync among them) once confirmed.
        connect(&mut a, &mut b, at(1000));
        let edges: Vec<_> = b.resync_marks().iter().map(|m| (m.at, m.edge)).collect();
        assert_eq!(edges, vec![(0, ResyncEdge::Begin), (0, ResyncEdge::End)]);
        assert_eq!(kinds(&poll(&mut b, at(2000))), vec![3]);
        // At 0 and 1000 (neither fresh for A), and once B heard A.
        assert_eq!(b.counters().resyncs_requested, 3);
    }

    #[test]
    fn resync_requests_are_honoured_at_most_once_a_heartbeat() {
        let (mut a, _) = pair();
        let mut applied = Vec::new();
        let request = Message::ResyncRequest { stream_epoch: 0 };
        let mut counter = 0;
        let mut ask = |a: &mut Sync, ms: i64| {
            counter += 1;
            let d = forged(a, B, counter, request);
            a.handle_datagram(at(ms), addr(12), &d, &mut applied);
            a.wants_full_table().is_some()
        };
        assert!(ask(&mut a, 0));
        // An empty table is sent at once: no resync in progress, yet too soon.
        a.queue_resync(at(0), addr(12), std::iter::empty());
        poll(&mut a, at(0));
        for ms in [1, 10, 500, 999] {
            assert!(!ask(&mut a, ms));
        }
        assert!(ask(&mut a, 1000));
        assert_eq!(a.counters().resync_requests_received, 6);
        assert_eq!(a.counters().resync_requests_limited, 4);
        assert_eq!(a.counters().resyncs_sent, 1);
    }

    #[test]
    fn a_restarted_peer_is_followed_from_its_new_stream_and_its_old_one_ignored() {
        let (mut a, mut b) = connected();
        a.queue(at(0), upsert(1));
        let old = poll(&mut a, at(10));
        assert_eq!(to_b(&mut b, at(11), &old), vec![upsert(1)]);
        // (B answers not-fresh datagrams at most every 50 ms: the handshake at 0 was one.)
        let mut a2 = Sync::new(params(A + 1, 11, 12, None), at(100));
        connect(&mut a2, &mut b, at(100));
        a2.queue(at(100), upsert(2));
        let new = poll(&mut a2, at(110));
        assert_eq!(to_b(&mut b, at(111), &new), vec![upsert(2)]);
        let status = b.peers().next().expect("peer");
        assert_eq!((status.their_epoch, status.restarts), (Some(A + 1), 1));
        // Datagrams of the old stream, late or replayed, are never fresh again.
        let unconfirmed = b.counters().unconfirmed;
        assert!(to_b(&mut b, at(112), &old).is_empty());
        assert_eq!(b.counters().unconfirmed, unconfirmed + old.len() as u64);
        assert_eq!(b.peers().next().map(|p| p.their_epoch), Some(Some(A + 1)));
    }

    #[test]
    fn nothing_recorded_before_the_receiver_restarted_is_acted_on() {
        let (mut a, mut b) = connected();
        a.queue(at(0), upsert(1));
        let recorded = poll(&mut a, at(10));
        assert_eq!(to_b(&mut b, at(11), &recorded), vec![upsert(1)]);
        // B restarts: A's recorded stream, a whole valid epoch, is refused by the new B.
        let mut b2 = Sync::new(params(B + 1, 12, 11, None), at(100));
        assert!(to_b(&mut b2, at(100), &recorded).is_empty());
        assert_eq!(b2.peers().next().map(|p| p.their_epoch), Some(None));
        assert_eq!(b2.counters().unconfirmed, recorded.len() as u64);
        // After the new B is confirmed, A's stream reaches it (the lost batch is nacked
        // and sent again), but the recordings still change nothing.
        connect(&mut a, &mut b2, at(100));
        let (applied, unconfirmed) = (b2.counters().changes_received, b2.counters().unconfirmed);
        assert!(to_b(&mut b2, at(101), &recorded).is_empty());
        assert_eq!(b2.counters().changes_received, applied);
        assert_eq!(
            b2.counters().unconfirmed,
            unconfirmed + recorded.len() as u64
        );
    }

    #[test]
    fn sealed_datagrams_need_the_key_and_are_counted_by_reason() {
        let key = Keys::derive(&[9; 32], None);
        let mut a = Sync::new(params(A, 11, 12, Some(&key)), at(0));
        let mut b = Sync::new(params(B, 12, 11, Some(&key)), at(0));
        connect(&mut a, &mut b, at(0));
        a.queue(at(0), upsert(1));
        let sealed = poll(&mut a, at(10));
        assert!(sealed.iter().all(|d| d[6] == 1));
        // One bit flipped anywhere: refused.
        let mut forged = sealed[0].clone();
        forged[wire::HEADER_LEN + 3] ^= 1;
        assert!(to_b(&mut b, at(11), &[forged]).is_empty());
        assert_eq!(b.counters().auth, 1);
        // The same stream under another key, or in clear: refused.
        let mut stranger = Sync::new(
            params(A, 11, 12, Some(&Keys::derive(&[8; 32], None))),
            at(0),
        );
        stranger.queue(at(0), upsert(7));
        let stranger = poll(&mut stranger, at(10));
        assert!(to_b(&mut b, at(11), &stranger).is_empty());
        let mut clear = Sync::new(params(A, 11, 12, None), at(0));
        clear.queue(at(0), upsert(8));
        let clear = poll(&mut clear, at(10));
        assert!(to_b(&mut b, at(11), &clear).is_empty());
        let forgeries = 1 + stranger.len() + clear.len();
        assert_eq!(b.counters().auth, forgeries as u64);
        // The real one, once; its replay is refused.
        assert_eq!(to_b(&mut b, at(12), &sealed), vec![upsert(1)]);
        assert!(to_b(&mut b, at(13), &sealed).is_empty());
        assert_eq!(b.counters().replay, sealed.len() as u64);
        assert_eq!(b.counters().changes_received, 1);
    }

    #[test]
    fn the_previous_key_is_accepted_during_a_rotation_and_counted() {
        let old = [1u8; 32];
        let new = [2u8; 32];
        let mut a = Sync::new(params(A, 11, 12, Some(&Keys::derive(&old, None))), at(0));
        let mut b = Sync::new(
            params(B, 12, 11, Some(&Keys::derive(&new, Some(&old)))),
            at(0),
        );
        // A (old key) reaches B, B (new key) does not reach A: the handshake stalls on
        // A's side, but B counts every datagram A sealed with the previous key.
        let hello = poll(&mut a, at(0));
        to_b(&mut b, at(0), &hello);
        assert_eq!(b.counters().previous_key, hello.len() as u64);
        to_a(&mut a, at(0), &poll(&mut b, at(0)));
        assert_eq!(a.counters().auth, 3);
        // Once A moves to the new key too, both confirm.
        let mut a = Sync::new(
            params(A + 1, 11, 12, Some(&Keys::derive(&new, None))),
            at(100),
        );
        connect(&mut a, &mut b, at(100));
    }

    #[test]
    fn heartbeats_announce_the_election_to_the_peers() {
        let (mut a, mut b) = pair();
        a.set_claims(&[[10, 200], [11, 100]]);
        connect(&mut a, &mut b, at(0));
        let claims: Vec<_> = b.peer_claims().collect();
        assert_eq!(
            claims,
            vec![PeerClaims {
                primary: Ipv4Addr::new(192, 168, 1, 11),
                heard_at: at(0),
                priorities: &[[10, 200], [11, 100]],
            }]
        );
        assert_eq!(
            b.peer_primary(addr(11)),
            Some(Ipv4Addr::new(192, 168, 1, 11))
        );
        assert_eq!(a.peer_claims().next().map(|c| c.priorities.len()), Some(0));
    }

    #[test]
    fn a_changed_claim_is_announced_at_once() {
        let (mut a, mut b) = pair();
        a.set_claims(&[[11, 100]]);
        connect(&mut a, &mut b, at(0));
        // Nothing is due before the next heartbeat, a second later...
        assert!(poll(&mut a, at(100)).is_empty());
        // ...but a new priority goes at once: the peer must hear it before an advert at it.
        a.set_claims(&[[11, 200]]);
        to_b(&mut b, at(101), &poll(&mut a, at(101)));
        let claims: Vec<_> = b.peer_claims().collect();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].priorities, &[[11, 200]]);
        assert_eq!(claims[0].heard_at, at(101));
        // The same claims again send nothing.
        a.set_claims(&[[11, 200]]);
        assert!(poll(&mut a, at(102)).is_empty());
    }

    #[test]
    fn heartbeats_name_the_sender_and_a_rename_is_followed() {
        let (mut a, mut b) = pair();
        assert_eq!(b.peer_name(addr(11)), None);
        connect(&mut a, &mut b, at(0));
        assert_eq!(b.peer_name(addr(11)), Some("gw11"));
        assert_eq!(a.peer_name(addr(12)), Some("gw12"));
        assert_eq!(b.peer_name(addr(99)), None);
        // A restarts under another name: its first fresh heartbeat renames it.
        let mut a = Sync::new(
            Params {
                name: "edge-a".into(),
                ..params(A + 1, 11, 12, None)
            },
            at(100),
        );
        connect(&mut a, &mut b, at(100));
        assert_eq!(b.peer_name(addr(11)), Some("edge-a"));
        // A name that cannot be carried is left out: the last one stays.
        let mut a = Sync::new(
            Params {
                name: "bad\nname".into(),
                ..params(A + 2, 11, 12, None)
            },
            at(200),
        );
        connect(&mut a, &mut b, at(200));
        assert_eq!(b.peer_name(addr(11)), Some("edge-a"));
    }

    #[test]
    fn strangers_and_garbage_are_counted_and_ignored() {
        let (mut a, mut b) = connected();
        a.queue(at(0), upsert(1));
        let good = batches(&poll(&mut a, at(10)));
        let mut applied = Vec::new();
        b.handle_datagram(at(11), addr(99), &good[0], &mut applied);
        assert!(applied.is_empty());
        assert_eq!(b.counters().unknown_peer, 1);
        let heard = b.peers().next().map(|p| p.last_heard);
        let mut bad = good[0].clone();
        bad[4] = 9;
        b.handle_datagram(at(11), addr(11), &bad, &mut applied);
        b.handle_datagram(at(11), addr(11), b"GET / HTTP/1.1\r\n", &mut applied);
        b.handle_datagram(at(11), addr(11), &[], &mut applied);
        assert!(applied.is_empty());
        let c = b.counters();
        let rejected: Vec<_> = c.rejected().map(|(e, n)| (e.label(), n)).collect();
        assert_eq!(
            rejected,
            vec![
                ("bad_magic", 0),
                ("version", 1),
                ("kind", 0),
                ("length", 2),
                ("field", 0)
            ]
        );
        assert_eq!(b.peers().next().map(|p| p.last_heard), heard);
    }

    #[test]
    fn an_overflowing_queue_drops_counts_and_asks_for_a_resync() {
        let (mut a, _) = pair();
        for i in 0..QUEUE_LIMIT + 3 {
            a.queue(at(0), upsert(i as u16));
        }
        assert_eq!(a.counters().queue_overflow, 3);
        assert_eq!(a.wants_full_table(), Some(addr(12)));
        let status = a.peers().next().expect("peer");
        assert_eq!(status.queued_changes, QUEUE_LIMIT);
        // The resync replaces the backlog.
        a.queue_resync(at(5), addr(12), [(flow(1), Duration::from_secs(9))]);
        let status = a.peers().next().expect("peer");
        assert_eq!((status.queued_changes, status.lag), (0, Duration::ZERO));
        assert_eq!(status.queued_datagrams, 1);
    }

    #[test]
    fn liveness_follows_the_heartbeats() {
        let (mut a, mut b) = connected();
        let beat = poll(&mut a, at(1000));
        to_b(&mut b, at(1000), &beat);
        assert!(b.peers().all(|p| p.alive));
        poll(&mut b, at(4000));
        assert!(b.peers().all(|p| p.alive));
        poll(&mut b, at(4001));
        assert!(b.peers().all(|p| !p.alive));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A sealed session: B's receiver after the handshake, and the datagrams A sent it
        /// carrying `changes` (in batches of up to 41, `flush` ms apart), not yet
        /// delivered.
        fn session(changes: u16) -> (Sync, Vec<Vec<u8>>) {
            let key = Keys::derive(&[3; 32], None);
            let mut a = Sync::new(params(A, 11, 12, Some(&key)), at(0));
            let mut b = Sync::new(params(B, 12, 11, Some(&key)), at(0));
            connect(&mut a, &mut b, at(0));
            let mut recorded = Vec::new();
            for i in 0..changes {
                a.queue(at(i64::from(i)), upsert(i));
                // Sealed: kind 1 (a batch) is in the clear header.
                let out = poll(&mut a, at(i64::from(i) + 10));
                recorded.extend(out.into_iter().filter(|d| d[5] == 1));
            }
            (b, recorded)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Whatever order the datagrams of a session arrive in, however often each is
            /// replayed, and whatever forgeries come with them, every change is applied
            /// exactly once, in the order it was made.
            #[test]
            fn replays_and_forgeries_never_apply_a_change_twice_or_out_of_order(
                changes in 1u16..120,
                order in proptest::collection::vec((any::<u16>(), any::<u16>(), any::<u8>()), 0..300),
            ) {
                let (mut b, recorded) = session(changes);
                let mut applied = Vec::new();
                // Each (pick, at, xor): datagram `pick` replayed, one byte changed when
                // `xor` is not zero (a forgery that must not open).
                for (pick, offset, xor) in order {
                    let mut d = recorded[usize::from(pick) % recorded.len()].clone();
                    let at = usize::from(offset) % d.len();
                    d[at] ^= xor;
                    b.handle_datagram(at_ms(100), addr(11), &d, &mut applied);
                }
                // Then the whole session, in order, and all of it again.
                for d in recorded.iter().chain(&recorded) {
                    b.handle_datagram(at_ms(200), addr(11), d, &mut applied);
                }
                let want: Vec<Change> = (0..changes).map(upsert).collect();
                prop_assert_eq!(applied, want);
            }
        }

        fn at_ms(ms: i64) -> Instant {
            at(ms)
        }
    }
}
