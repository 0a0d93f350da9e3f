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
//! (a random boot id, never 0) is chosen by the shell.
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
//! - **Restarts.** A new epoch in a peer's batches or heartbeats means the peer restarted:
//!   its new stream is followed from seq 1 (a gap up to its first seq is nacked; if the
//!   peer cannot replay it, it resyncs), and late datagrams of the old stream are ignored.
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
//! What the shell must add:
//! - Changes applied from a peer are not queued again: every gateway streams only what it
//!   changed itself.
//! - A full resync carries the sender's whole table, flows it learned from other gateways
//!   included, and those may be behind. Apply a peer's change only when that peer is
//!   master of the flow's egress IP (a restarted gateway is backup, so it takes its
//!   flows back from whoever held its addresses meanwhile).
//! - To drop the flows a peer deleted while its stream could not be replayed, sweep at
//!   the end of its resync ([`Sync::resync_marks`]).

pub mod wire;

mod receiver;
mod sender;
#[cfg(test)]
mod sim;

use std::net::SocketAddr;

use smoltcp::time::{Duration, Instant};

pub use wire::{MAX_DATAGRAM, SyncWireError};

use crate::nat::Flow;
use receiver::Rx;
use sender::Tx;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// This gateway's boot id: random, chosen at start, never 0.
    pub epoch: u64,
    /// The peers' sync addresses.
    pub peers: Vec<SocketAddr>,
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
    /// The defaults: 10 ms batching, 1 s heartbeats, 4096 live batches kept (176,128
    /// changes of history), resyncs at 20,000 batches (860,000 flows) per second.
    pub fn new(epoch: u64, peers: Vec<SocketAddr>) -> Params {
        Params {
            epoch,
            peers,
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
    pub last_heard: Option<Instant>,
    /// Heard from within three heartbeat intervals.
    pub alive: bool,
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
}

/// The flow sync of one gateway with all its peers.
pub struct Sync {
    epoch: u64,
    flush_after: Duration,
    heartbeat: Duration,
    resync_rate: u32,
    peers: Vec<Peer>,
    counters: Counters,
    /// The latest time handed in.
    now: Instant,
    /// Datagram buffers to reuse.
    spare: Vec<Vec<u8>>,
    marks: Vec<ResyncMark>,
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
                });
            }
        }
        Sync {
            epoch: params.epoch,
            flush_after: params.flush_after,
            heartbeat: params.heartbeat.max(MIN_HEARTBEAT),
            resync_rate: params.resync_rate.max(1),
            peers,
            counters: Counters::default(),
            now,
            spare: Vec::new(),
            marks: Vec::new(),
        }
    }

    /// This gateway's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
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
        let (epoch, message) = match wire::Message::parse(bytes) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.counters.rejected[e.index()] += 1;
                return;
            }
        };
        let c = &mut self.counters;
        match message {
            wire::Message::Batch(batch) => {
                if peer.rx.follow(epoch, c) {
                    peer.rx.heard_at = Some(now);
                    peer.rx
                        .handle_batch(&batch, bytes, applied, &mut self.marks, c);
                }
            }
            wire::Message::Heartbeat { last_seq } => {
                if peer.rx.follow(epoch, c) {
                    peer.rx.heard_at = Some(now);
                    peer.rx.handle_heartbeat(last_seq);
                }
            }
            wire::Message::Nack {
                stream_epoch,
                from,
                to,
            } => {
                peer.rx.heard_at = Some(now);
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
                peer.rx.heard_at = Some(now);
                c.resync_requests_received += 1;
                peer.tx.handle_resync_request();
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
    /// heartbeats, Nacks, resync requests.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<(SocketAddr, Vec<u8>)>) {
        self.now = now;
        let params = TxParams {
            flush_after: self.flush_after,
            heartbeat: self.heartbeat,
            resync_rate: self.resync_rate,
        };
        for p in &mut self.peers {
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
            alive: p
                .rx
                .heard_at
                .is_some_and(|at| since(self.now, at) <= self.heartbeat * 3),
        })
    }
}

/// What the sender needs of [`Params`] on each poll.
struct TxParams {
    flush_after: Duration,
    heartbeat: Duration,
    resync_rate: u32,
}

/// `now - then`, or zero when `then` is later.
fn since(now: Instant, then: Instant) -> Duration {
    if now > then {
        now - then
    } else {
        Duration::ZERO
    }
}

fn send(
    out: &mut Vec<(SocketAddr, Vec<u8>)>,
    peer: SocketAddr,
    bytes: Vec<u8>,
    counters: &mut Counters,
) {
    counters.datagrams_sent += 1;
    counters.bytes_sent += bytes.len() as u64;
    out.push((peer, bytes));
}

#[cfg(test)]
mod tests {
    use core::net::Ipv4Addr;

    use super::wire::{BatchFlags, Message};
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

    /// Gateway A (.11) with peer B (.12), and B with peer A.
    fn pair() -> (Sync, Sync) {
        (
            Sync::new(Params::new(A, vec![addr(12)]), at(0)),
            Sync::new(Params::new(B, vec![addr(11)]), at(0)),
        )
    }

    fn poll(s: &mut Sync, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        s.poll(now, &mut out);
        out.into_iter().map(|(_, d)| d).collect()
    }

    /// B's Nack of `from..=to` in A's stream.
    fn nack(from: u32, to: u32) -> Vec<u8> {
        Message::Nack {
            stream_epoch: A,
            from,
            to,
        }
        .to_vec(B)
    }

    fn batches(datagrams: &[Vec<u8>]) -> Vec<Vec<u8>> {
        datagrams
            .iter()
            .filter(|d| matches!(Message::parse(d), Ok((_, Message::Batch(_)))))
            .cloned()
            .collect()
    }

    fn seqs(datagrams: &[Vec<u8>]) -> Vec<u32> {
        datagrams
            .iter()
            .filter_map(|d| match Message::parse(d) {
                Ok((_, Message::Batch(b))) => Some(b.seq),
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
        assert!(full.iter().all(|d| d.len() == MAX_DATAGRAM));
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
        assert_eq!(status.last_sent_seq, 24);
    }

    #[test]
    fn changes_every_peer_receives_in_order() {
        let (mut a, mut b) = pair();
        poll(&mut a, at(0));
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
        let (mut a, mut b) = pair();
        poll(&mut b, at(0));
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
            Message::parse(&nacks[0]),
            Ok((
                B,
                Message::Nack {
                    stream_epoch: A,
                    from: 1,
                    to: 1
                }
            ))
        );
        // Not again before NACK_RETRY.
        assert!(poll(&mut b, at(30)).is_empty());
        assert_eq!(b.poll_at(), Some(at(71)));
        // A retransmits (once for two Nacks); the create, then the held delete, come out in
        // order.
        let mut applied = Vec::new();
        a.handle_datagram(at(22), addr(12), &nacks[0], &mut applied);
        let again = poll(&mut a, at(22));
        assert_eq!(again, one);
        a.handle_datagram(at(23), addr(12), &nacks[0], &mut applied);
        assert!(poll(&mut a, at(23)).is_empty());
        assert_eq!(a.counters().retransmits, 1);
        assert_eq!(to_b(&mut b, at(23), &again), vec![upsert(1), delete(1)]);
        // And twice is once.
        assert!(to_b(&mut b, at(24), &again).is_empty());
        assert!(to_b(&mut b, at(24), &two).is_empty());
        assert_eq!(b.counters().duplicates, 2);
        assert!(batches(&poll(&mut b, at(80))).is_empty());
        assert_eq!(b.counters().nacks_sent, 1);
    }

    #[test]
    fn a_heartbeat_past_the_last_batch_reveals_tail_loss() {
        let (mut a, mut b) = pair();
        poll(&mut a, at(0));
        poll(&mut b, at(0));
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
                ..Params::new(A, vec![addr(12)])
            },
            at(0),
        );
        for i in 0..4 {
            a.queue(at(i), upsert(i as u16));
            poll(&mut a, at(i + 10));
        }
        let mut applied = Vec::new();
        a.handle_datagram(at(20), addr(12), &nack(3, 4), &mut applied);
        assert_eq!(a.wants_full_table(), None);
        assert_eq!(batches(&poll(&mut a, at(20))).len(), 2);
        a.handle_datagram(at(21), addr(12), &nack(2, 4), &mut applied);
        assert_eq!(a.wants_full_table(), Some(addr(12)));
        assert_eq!(a.wants_full_table(), None);
        // About another stream of ours: ignored.
        a.handle_datagram(
            at(22),
            addr(12),
            &Message::Nack {
                stream_epoch: 7,
                from: 1,
                to: 1,
            }
            .to_vec(B),
            &mut applied,
        );
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
        a.handle_datagram(at(30), addr(12), &nack(1, 2), &mut applied);
        assert_eq!(a.wants_full_table(), None);
        assert_eq!(poll(&mut a, at(30)), first);
        assert_eq!(a.counters().retransmits, retransmits + 1);
    }

    #[test]
    fn a_full_resync_is_paced_flagged_and_lets_the_receiver_skip_what_it_missed() {
        let (mut a, mut b) = pair();
        poll(&mut b, at(0));
        let mut applied = Vec::new();
        // B misses A's first batch entirely.
        a.queue(at(0), upsert(500));
        let missed = poll(&mut a, at(10));
        assert_eq!(batches(&missed).len(), 1);
        // B asks for the table.
        for d in poll(&mut b, at(1000)).iter().filter(|d| d[5] == 4) {
            a.handle_datagram(at(1000), addr(12), d, &mut applied);
        }
        assert_eq!(a.counters().resync_requests_received, 1);
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
            .filter_map(|d| match Message::parse(d) {
                Ok((_, Message::Batch(b))) => Some(b.flags),
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
        want.insert(86, delete(99));
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
        a.handle_datagram(at(20), addr(12), &nack(1, 3), &mut applied);
        assert_eq!(batches(&poll(&mut a, at(20))), sent);
        assert_eq!(a.counters().retransmits, 3);
        // Three heartbeats after the last batch left, the snapshot is gone.
        poll(&mut a, at(3009));
        a.handle_datagram(at(3009), addr(12), &nack(3, 3), &mut applied);
        assert_eq!(a.wants_full_table(), None);
        poll(&mut a, at(3010));
        a.handle_datagram(at(3010), addr(12), &nack(3, 3), &mut applied);
        assert_eq!(a.wants_full_table(), Some(addr(12)));
    }

    #[test]
    fn resync_requests_are_retried_every_heartbeat_until_a_resync_arrives() {
        let (mut a, mut b) = pair();
        assert_eq!(kinds(&poll(&mut b, at(0))), vec![3, 4]);
        assert_eq!(kinds(&poll(&mut b, at(999))), Vec::<u8>::new());
        assert_eq!(kinds(&poll(&mut b, at(1000))), vec![3, 4]);
        let mut applied = Vec::new();
        a.handle_datagram(
            at(1000),
            addr(12),
            &Message::ResyncRequest { stream_epoch: 0 }.to_vec(B),
            &mut applied,
        );
        let peer = a.wants_full_table().expect("asked");
        a.queue_resync(at(1000), peer, std::iter::empty());
        let empty = batches(&poll(&mut a, at(1000)));
        assert_eq!(empty.len(), 1);
        assert!(to_b(&mut b, at(1001), &empty).is_empty());
        let edges: Vec<_> = b.resync_marks().iter().map(|m| (m.at, m.edge)).collect();
        assert_eq!(edges, vec![(0, ResyncEdge::Begin), (0, ResyncEdge::End)]);
        assert_eq!(kinds(&poll(&mut b, at(2000))), vec![3]);
        assert_eq!(b.counters().resyncs_requested, 2);
    }

    #[test]
    fn a_restarted_peer_is_followed_from_its_new_stream_and_its_old_one_ignored() {
        let (mut a, mut b) = pair();
        a.queue(at(0), upsert(1));
        let old = poll(&mut a, at(10));
        assert_eq!(to_b(&mut b, at(11), &old), vec![upsert(1)]);
        let mut a2 = Sync::new(Params::new(A + 1, vec![addr(12)]), at(20));
        a2.queue(at(20), upsert(2));
        let new = poll(&mut a2, at(30));
        assert_eq!(to_b(&mut b, at(31), &new), vec![upsert(2)]);
        let status = b.peers().next().expect("peer");
        assert_eq!((status.their_epoch, status.restarts), (Some(A + 1), 1));
        // A late batch of the old stream is not followed.
        assert!(to_b(&mut b, at(32), &batches(&old)).is_empty());
        assert_eq!(b.counters().stale_epoch, 1);
        assert_eq!(b.peers().next().map(|p| p.their_epoch), Some(Some(A + 1)));
    }

    #[test]
    fn strangers_and_garbage_are_counted_and_ignored() {
        let (mut a, mut b) = pair();
        a.queue(at(0), upsert(1));
        let good = batches(&poll(&mut a, at(10)));
        let mut applied = Vec::new();
        b.handle_datagram(at(11), addr(99), &good[0], &mut applied);
        assert!(applied.is_empty());
        assert_eq!(b.counters().unknown_peer, 1);
        let mut bad = good[0].clone();
        bad[4] = 9;
        b.handle_datagram(at(11), addr(11), &bad, &mut applied);
        b.handle_datagram(at(11), addr(11), b"GET / HTTP/1.1\r\n", &mut applied);
        b.handle_datagram(at(11), addr(11), &[], &mut applied);
        assert!(applied.is_empty());
        let c = b.counters();
        let rejected: Vec<_> = c.rejected().map(|(e, n)| (e.metric_label(), n)).collect();
        assert_eq!(
            rejected,
            vec![
                ("bad_magic", 1),
                ("version", 1),
                ("kind", 0),
                ("length", 1),
                ("field", 0)
            ]
        );
        assert_eq!(c.datagrams_received, 4);
        assert_eq!(b.peers().next().map(|p| p.last_heard), Some(None));
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
        let (mut a, mut b) = pair();
        let beat = poll(&mut a, at(0));
        to_b(&mut b, at(0), &beat);
        assert!(b.peers().all(|p| p.alive));
        poll(&mut b, at(3000));
        assert!(b.peers().all(|p| p.alive));
        poll(&mut b, at(3001));
        assert!(b.peers().all(|p| !p.alive));
    }
}
