//! This gateway's outgoing stream to one peer: batching, sequence numbers, the
//! retransmission ring, the paced full resync, heartbeats.
//!
//! Invariants:
//! - Seqs are handed out in the order batches are built, from 1, without gaps; the ring
//!   has a slot for each seq from the oldest still replayable to the latest.
//! - The ring keeps the bytes of the last `ring` live batches. A resync batch keeps only
//!   its range of the snapshot and is rebuilt from it when nacked, so a whole resync stays
//!   replayable, however large, while it runs and for [`RESYNC_GRACE`] heartbeats after.
//! - Nothing before the latest resync's first batch is ever replayed: a Nack below it is
//!   answered with that first batch, which supersedes everything before it.
//! - Changes queued after a resync's snapshot was taken get seqs after the resync's first
//!   batch (it is built, with its seq, when the resync is queued), and a snapshot entry is
//!   left out of a batch built after a live change of the same flow was queued: a receiver
//!   applying the stream in seq order never sees a snapshot entry overtake a newer change.
//!   (A rebuilt batch leaves out at least what the original did; what it leaves out in
//!   addition was changed by a live batch with a later seq, so it arrives anyway.)
//! - Live changes still waiting when a resync is queued are dropped: the snapshot, taken
//!   from the table that already holds them, supersedes them.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;

use foldhash::fast::FixedState;
use smoltcp::time::{Duration, Instant};

use super::wire::{self, BATCH_HEADER_LEN, BatchFlags, CHANGE_LEN, MAX_CHANGES, Message};
use super::{Change, Counters, Op, QUEUE_LIMIT, RETRANSMIT_HOLDOFF, TxParams, since};
use crate::nat::{Flow, InsideKey};

/// Most batches a paced resync sends at once after a late poll.
const RESYNC_BURST: u32 = 64;
/// Heartbeat intervals a finished resync stays replayable: time for the peer to notice
/// (at the next heartbeat) and nack a lost tail.
pub(super) const RESYNC_GRACE: u32 = 3;
/// Most spare datagram buffers kept for reuse.
const SPARE_LIMIT: usize = 256;

/// What the ring keeps of a batch.
enum Content {
    /// A live batch, as sent.
    Live(Vec<u8>),
    /// A batch of the resync that began at seq `begin`: its entries `from..to` of the
    /// snapshot.
    Resync {
        begin: u64,
        from: usize,
        to: usize,
        flags: BatchFlags,
    },
    /// No longer replayable.
    Gone,
}

/// A batch in the retransmission ring.
struct Slot {
    content: Content,
    /// Transmitted at least once.
    sent: bool,
    /// When it was last retransmitted.
    retransmitted_at: Option<Instant>,
    /// Waiting in the outbox.
    queued: bool,
}

/// Live changes not yet sent, as the records of one batch behind room for its header.
struct Pending {
    /// When its first change was queued.
    first: Instant,
    bytes: Vec<u8>,
}

impl Pending {
    fn count(&self) -> usize {
        (self.bytes.len() - BATCH_HEADER_LEN) / CHANGE_LEN
    }
}

/// A full resync: its snapshot and how far it got.
struct Resync {
    /// The seq of its first batch.
    begin: u64,
    /// The snapshot: each flow and its remaining seconds when it was taken.
    flows: Vec<(Flow, u32)>,
    /// The first entry not yet sent.
    next: usize,
    taken_at: Instant,
    /// When the next paced batch may go.
    next_at: Instant,
    /// Flows changed by live changes queued after the snapshot, until the last batch
    /// left: their entries are stale.
    superseded: HashSet<InsideKey, FixedState>,
    /// When the last batch left; the snapshot is kept a while after for retransmits.
    done_at: Option<Instant>,
}

impl Resync {
    fn is_stale(&self, flow: &Flow) -> bool {
        !self.superseded.is_empty() && self.superseded.contains(&flow.inside_key())
    }

    /// Picks the entries of the next batch: up to [`MAX_CHANGES`] that are not stale.
    fn take_range(&mut self) -> (usize, usize) {
        let from = self.next;
        let mut count = 0;
        while count < MAX_CHANGES && self.next < self.flows.len() {
            if !self.is_stale(&self.flows[self.next].0) {
                count += 1;
            }
            self.next += 1;
        }
        (from, self.next)
    }

    /// Builds the batch of entries `from..to` with seq `seq`, remaining times as of `now`.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        from: usize,
        to: usize,
        seq: u64,
        flags: BatchFlags,
        now: Instant,
        epoch: u64,
        spare: &mut Vec<Vec<u8>>,
    ) -> Vec<u8> {
        let elapsed = u32::try_from(since(now, self.taken_at).secs()).unwrap_or(u32::MAX);
        let mut bytes = batch_buffer(spare);
        for (flow, secs) in self.flows.get(from..to).unwrap_or_default() {
            if self.is_stale(flow) {
                continue;
            }
            let change = Change {
                op: Op::Upsert,
                flow: *flow,
                remaining: Duration::from_secs(u64::from(secs.saturating_sub(elapsed))),
            };
            bytes.extend_from_slice(&wire::emit_change(&change));
        }
        let count = count_of(&bytes);
        wire::emit_batch_header(&mut bytes, epoch, wire::low32(seq), flags, count);
        bytes
    }
}

pub(super) struct Tx {
    /// The last seq handed out; 0 before the first.
    seq: u64,
    /// A slot per seq, `seq - ring.len() + 1 ..= seq`.
    ring: VecDeque<Slot>,
    /// The seqs of the live batches whose bytes the ring keeps, oldest first.
    live: VecDeque<u64>,
    ring_cap: usize,
    /// Ring seqs to (re)send at the next poll, in order.
    outbox: VecDeque<u64>,
    pending: VecDeque<Pending>,
    pending_changes: usize,
    resync: Option<Resync>,
    /// The peer needs the full table: `wants_full_table` reports it.
    wants_full_table: bool,
    next_heartbeat: Instant,
    /// When the peer's last ResyncRequest was honoured.
    request_honoured_at: Option<Instant>,
    pub(super) resyncs_sent: u64,
}

impl Tx {
    pub(super) fn new(now: Instant, ring_cap: usize) -> Tx {
        Tx {
            seq: 0,
            ring: VecDeque::new(),
            live: VecDeque::new(),
            ring_cap: ring_cap.max(1),
            outbox: VecDeque::new(),
            pending: VecDeque::new(),
            pending_changes: 0,
            resync: None,
            wants_full_table: false,
            // The first heartbeat announces the epoch at once.
            next_heartbeat: now,
            request_honoured_at: None,
            resyncs_sent: 0,
        }
    }

    pub(super) fn last_seq(&self) -> u64 {
        self.seq
    }

    pub(super) fn queued_changes(&self) -> usize {
        self.pending_changes
    }

    pub(super) fn resync_pending(&self) -> usize {
        self.running().map_or(0, |r| r.flows.len() - r.next)
    }

    pub(super) fn queued_datagrams(&self) -> usize {
        self.outbox.len()
    }

    pub(super) fn resync_in_progress(&self) -> bool {
        self.running().is_some()
    }

    /// The resync still sending, if any.
    fn running(&self) -> Option<&Resync> {
        self.resync.as_ref().filter(|r| r.done_at.is_none())
    }

    /// When the oldest live change still waiting was queued.
    pub(super) fn oldest_queued(&self) -> Option<Instant> {
        self.pending.front().map(|p| p.first)
    }

    /// Takes the resync flag, if set.
    pub(super) fn take_want(&mut self) -> bool {
        core::mem::take(&mut self.wants_full_table)
    }

    /// A local change, already encoded as `record`.
    pub(super) fn queue(
        &mut self,
        now: Instant,
        record: &[u8; CHANGE_LEN],
        key: &InsideKey,
        spare: &mut Vec<Vec<u8>>,
        counters: &mut Counters,
    ) {
        if let Some(r) = self.resync.as_mut().filter(|r| r.done_at.is_none()) {
            if r.superseded.len() >= QUEUE_LIMIT {
                // Too many changes to track: this resync stops here (no batch built from
                // now on could tell its stale entries) and a new snapshot is asked for.
                r.done_at = Some(now);
                self.wants_full_table = true;
            } else {
                r.superseded.insert(*key);
            }
        }
        if self.pending_changes >= QUEUE_LIMIT {
            counters.queue_overflow += 1;
            self.wants_full_table = true;
            return;
        }
        let room = self.pending.back().is_some_and(|p| p.count() < MAX_CHANGES);
        if !room {
            self.pending.push_back(Pending {
                first: now,
                bytes: batch_buffer(spare),
            });
        }
        if let Some(p) = self.pending.back_mut() {
            p.bytes.extend_from_slice(record);
            self.pending_changes += 1;
        }
    }

    /// Starts a full resync from `flows`, the table as of `now`; its first batch is built
    /// (and takes its seq) at once.
    pub(super) fn start_resync(
        &mut self,
        now: Instant,
        rate: u32,
        flows: Vec<(Flow, u32)>,
        spare: &mut Vec<Vec<u8>>,
    ) {
        for p in self.pending.drain(..) {
            recycle(spare, p.bytes);
        }
        self.pending_changes = 0;
        // Everything sent so far is superseded by the resync's first batch.
        for slot in self.ring.drain(..) {
            if let Content::Live(bytes) = slot.content {
                recycle(spare, bytes);
            }
        }
        self.live.clear();
        self.outbox.clear();
        self.wants_full_table = false;
        self.resyncs_sent += 1;
        let mut r = Resync {
            begin: self.seq + 1,
            flows,
            next: 0,
            taken_at: now,
            next_at: now + pace(rate),
            superseded: HashSet::default(),
            done_at: None,
        };
        let (from, to) = r.take_range();
        let flags = BatchFlags {
            resync: true,
            resync_begin: true,
            resync_end: to >= r.flows.len(),
        };
        if flags.resync_end {
            r.done_at = Some(now);
        }
        let begin = r.begin;
        self.resync = Some(r);
        self.push(
            Content::Resync {
                begin,
                from,
                to,
                flags,
            },
            false,
            spare,
        );
        if let Some(slot) = self.ring.back_mut() {
            slot.queued = true;
        }
        self.outbox.push_back(begin);
    }

    /// A peer's Nack of seqs `from..=to` (low 32 bits) of this stream.
    pub(super) fn handle_nack(&mut self, now: Instant, from: u32, to: u32) {
        if self.seq == 0 {
            return;
        }
        let from = wire::expand(from, self.seq);
        let to = wire::expand(to, self.seq).min(self.seq);
        if from == 0 || from > to {
            return;
        }
        // Seqs before the latest resync's first batch are superseded by it: send that
        // batch, and the receiver skips to it.
        let (from, to) = match &self.resync {
            Some(r) if from < r.begin => (r.begin, to.max(r.begin)),
            _ => (from, to),
        };
        let ring_start = self.seq + 1 - self.ring.len() as u64;
        for seq in from..=to {
            let replayable = seq >= ring_start
                && self
                    .ring
                    .get((seq - ring_start) as usize)
                    .is_some_and(|s| !matches!(s.content, Content::Gone));
            if !replayable {
                // Only the whole table makes the peer exact again.
                self.wants_full_table = true;
                return;
            }
            let Some(slot) = self.ring.get_mut((seq - ring_start) as usize) else {
                return;
            };
            // Two Nacks of the same loss close together (a new gap nacked at once, then
            // all open gaps again) get one retransmit.
            let recent = slot
                .retransmitted_at
                .is_some_and(|at| since(now, at) < RETRANSMIT_HOLDOFF);
            if !slot.queued && !recent {
                slot.queued = true;
                self.outbox.push_back(seq);
            }
        }
    }

    /// A peer asked for the whole table. Honoured at most once per `interval` (a
    /// heartbeat: the peer retries that often until a resync arrives); returns false when
    /// the request came too soon after the last one honoured and was ignored.
    pub(super) fn handle_resync_request(&mut self, now: Instant, interval: Duration) -> bool {
        if self
            .request_honoured_at
            .is_some_and(|at| since(now, at) < interval)
        {
            return false;
        }
        // A resync under way already gives the peer everything: the peer skips to its
        // first batch, which its Nacks bring back.
        if !self.resync_in_progress() {
            self.wants_full_table = true;
            self.request_honoured_at = Some(now);
        }
        true
    }

    /// The peer restarted: its first request for our table is honoured at once.
    pub(super) fn peer_restarted(&mut self) {
        self.request_honoured_at = None;
    }

    /// Sends a heartbeat at the next poll: the peer must hear our (new) token soon.
    pub(super) fn heartbeat_now(&mut self, now: Instant) {
        self.next_heartbeat = self.next_heartbeat.min(now);
    }

    /// Sends what is due at `now` to `peer`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn poll(
        &mut self,
        now: Instant,
        epoch: u64,
        peer: SocketAddr,
        params: &TxParams<'_>,
        spare: &mut Vec<Vec<u8>>,
        out: &mut Vec<(SocketAddr, Vec<u8>)>,
        counters: &mut Counters,
    ) {
        // A finished resync's snapshot is kept only for a while.
        if self
            .resync
            .as_ref()
            .and_then(|r| r.done_at)
            .is_some_and(|at| now >= at + params.heartbeat * RESYNC_GRACE)
        {
            self.drop_resync();
        }

        // Resync first batches and retransmits: the lowest seqs.
        let ring_start = self.seq + 1 - self.ring.len() as u64;
        while let Some(seq) = self.outbox.pop_front() {
            let Some(slot) = seq
                .checked_sub(ring_start)
                .and_then(|i| self.ring.get_mut(i as usize))
            else {
                continue;
            };
            slot.queued = false;
            let bytes = match &slot.content {
                Content::Live(bytes) => bytes.clone(),
                Content::Resync {
                    begin,
                    from,
                    to,
                    flags,
                } => match &self.resync {
                    Some(r) if r.begin == *begin => {
                        r.build(*from, *to, seq, *flags, now, epoch, spare)
                    }
                    _ => continue,
                },
                Content::Gone => continue,
            };
            if slot.sent {
                counters.retransmits += 1;
                slot.retransmitted_at = Some(now);
            } else {
                counters.changes_sent += count_of(&bytes) as u64;
                slot.sent = true;
            }
            out.push((peer, bytes));
        }

        // Live batches: full ones at once, the last one once it is old enough.
        while let Some(p) = self.pending.front() {
            if p.count() < MAX_CHANGES && now < p.first + params.flush_after {
                break;
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            let count = p.count();
            self.pending_changes -= count;
            let mut bytes = p.bytes;
            wire::emit_batch_header(
                &mut bytes,
                epoch,
                wire::low32(self.seq + 1),
                BatchFlags::LIVE,
                count,
            );
            counters.changes_sent += count as u64;
            out.push((peer, bytes.clone()));
            self.push(Content::Live(bytes), true, spare);
        }

        // The paced resync.
        let step = pace(params.resync_rate);
        if let Some(r) = self.resync.as_mut().filter(|r| r.done_at.is_none()) {
            let floor = now - step * RESYNC_BURST;
            if r.next_at < floor {
                r.next_at = floor;
            }
        }
        while let Some(r) = self
            .resync
            .as_mut()
            .filter(|r| r.done_at.is_none() && r.next_at <= now)
        {
            let (from, to) = r.take_range();
            let flags = BatchFlags {
                resync: true,
                resync_begin: false,
                resync_end: to >= r.flows.len(),
            };
            r.next_at += step;
            if flags.resync_end {
                r.done_at = Some(now);
            }
            let (begin, seq) = (r.begin, self.seq + 1);
            let bytes = r.build(from, to, seq, flags, now, epoch, spare);
            counters.changes_sent += count_of(&bytes) as u64;
            out.push((peer, bytes));
            self.push(
                Content::Resync {
                    begin,
                    from,
                    to,
                    flags,
                },
                true,
                spare,
            );
        }

        if now >= self.next_heartbeat {
            let hb = Message::Heartbeat {
                last_seq: wire::low32(self.seq),
                claims: params.claims,
                name: params.name,
            };
            out.push((peer, hb.to_vec(epoch)));
            self.next_heartbeat = now + params.heartbeat;
        }
    }

    /// The next time [`poll`](Self::poll) has something to send.
    pub(super) fn poll_at(&self, now: Instant, flush_after: Duration) -> Option<Instant> {
        let outbox = (!self.outbox.is_empty()).then_some(now);
        let live = self.pending.front().map(|p| {
            if p.count() == MAX_CHANGES {
                now
            } else {
                p.first + flush_after
            }
        });
        let resync = self.running().map(|r| r.next_at);
        [outbox, live, resync, Some(self.next_heartbeat)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Forgets a finished resync's snapshot: its batches are no longer replayable.
    fn drop_resync(&mut self) {
        let Some(r) = self.resync.take() else {
            return;
        };
        for slot in &mut self.ring {
            if matches!(slot.content, Content::Resync { begin, .. } if begin == r.begin) {
                slot.content = Content::Gone;
            }
        }
        self.trim();
    }

    /// Gives the next seq to a batch; keeps its bytes (live) or its range (resync).
    fn push(&mut self, content: Content, sent: bool, spare: &mut Vec<Vec<u8>>) {
        self.seq += 1;
        let live = matches!(content, Content::Live(_));
        self.ring.push_back(Slot {
            content,
            sent,
            retransmitted_at: None,
            queued: false,
        });
        if live {
            self.live.push_back(self.seq);
        }
        while self.live.len() > self.ring_cap {
            let Some(old) = self.live.pop_front() else {
                break;
            };
            let ring_start = self.seq + 1 - self.ring.len() as u64;
            if let Some(slot) = old
                .checked_sub(ring_start)
                .and_then(|i| self.ring.get_mut(i as usize))
                && let Content::Live(bytes) = core::mem::replace(&mut slot.content, Content::Gone)
            {
                recycle(spare, bytes);
            }
        }
        self.trim();
    }

    /// Drops the slots at the front that are no longer replayable.
    fn trim(&mut self) {
        while self
            .ring
            .front()
            .is_some_and(|s| matches!(s.content, Content::Gone))
        {
            self.ring.pop_front();
        }
    }
}

/// The interval between two paced resync batches.
fn pace(rate: u32) -> Duration {
    Duration::from_micros(1_000_000 / u64::from(rate.max(1)))
}

fn count_of(batch: &[u8]) -> usize {
    batch.len().saturating_sub(BATCH_HEADER_LEN) / CHANGE_LEN
}

/// An empty batch: room for the header, no records yet.
fn batch_buffer(spare: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let mut bytes = spare
        .pop()
        .unwrap_or_else(|| Vec::with_capacity(wire::MAX_DATAGRAM));
    bytes.clear();
    bytes.resize(BATCH_HEADER_LEN, 0);
    bytes
}

fn recycle(spare: &mut Vec<Vec<u8>>, bytes: Vec<u8>) {
    if spare.len() < SPARE_LIMIT && bytes.capacity() >= wire::MAX_DATAGRAM {
        spare.push(bytes);
    }
}
