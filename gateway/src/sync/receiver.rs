//! One peer's stream as this gateway receives it: in-order application, the hold buffer
//! for datagrams that arrive early, Nacks for the gaps, resync requests.
//!
//! Invariants:
//! - Changes come out in seq order, each batch once: `expected` only moves forward, by one
//!   applied batch at a time, or by a jump to the first batch of a full resync, which
//!   supersedes everything before it.
//! - At most [`HOLD_LIMIT`] datagrams are held: only seqs below `expected + HOLD_LIMIT`.
//! - A missing seq of the window is nacked as soon as it is known missing, and again every
//!   [`NACK_RETRY`] while it stays missing (at most 64 ranges a pass, the oldest first:
//!   they block the rest).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::net::SocketAddr;

use smoltcp::time::{Duration, Instant};

use super::wire::{self, Batch, Message};
use super::{Change, Counters, HOLD_LIMIT, NACK_RETRY, ResyncEdge, ResyncMark};

/// Most Nack datagrams one pass sends to one peer.
const NACKS_PER_PASS: usize = 64;

pub(super) struct Rx {
    /// The epoch of the peer's stream being followed.
    pub(super) epoch: Option<u64>,
    /// The next seq to apply.
    expected: u64,
    /// The highest seq known to exist (seen in a batch or a heartbeat).
    highest: u64,
    held: BTreeMap<u64, Vec<u8>>,
    /// Every missing seq up to here has been nacked at least once.
    nacked_to: u64,
    nack_retry_at: Option<Instant>,
    /// When to (re)send a ResyncRequest; `None` once a resync has begun arriving.
    request_at: Option<Instant>,
    pub(super) heard_at: Option<Instant>,
    pub(super) resyncs_received: u64,
    pub(super) restarts: u64,
}

impl Rx {
    /// A stream never heard: the whole table is requested at once.
    pub(super) fn new(now: Instant) -> Rx {
        Rx {
            epoch: None,
            expected: 1,
            highest: 0,
            held: BTreeMap::new(),
            nacked_to: 0,
            nack_retry_at: None,
            request_at: Some(now),
            heard_at: None,
            resyncs_received: 0,
            restarts: 0,
        }
    }

    /// The last seq applied.
    pub(super) fn applied_seq(&self) -> u64 {
        self.expected - 1
    }

    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// Follows the stream `epoch` of a fresh datagram (see [`super::session`]: only a
    /// fresh datagram can change it). Returns whether the peer restarted: another stream
    /// was followed before.
    pub(super) fn follow(&mut self, epoch: u64) -> bool {
        if self.epoch == Some(epoch) {
            return false;
        }
        let restarted = self.epoch.is_some();
        if restarted {
            // A new stream from seq 1. A first seq above 1 is a gap like any other; if
            // the peer can no longer replay it, it resyncs us.
            self.restarts += 1;
        }
        self.epoch = Some(epoch);
        self.expected = 1;
        self.highest = 0;
        self.held.clear();
        self.nacked_to = 0;
        self.nack_retry_at = None;
        restarted
    }

    /// A batch of the followed stream, `bytes` the whole datagram.
    pub(super) fn handle_batch(
        &mut self,
        batch: &Batch<'_>,
        bytes: &[u8],
        applied: &mut Vec<Change>,
        marks: &mut Vec<ResyncMark>,
        counters: &mut Counters,
    ) {
        let seq = wire::expand(batch.seq, self.expected);
        if seq < self.expected {
            counters.duplicates += 1;
            return;
        }
        if batch.flags.resync_begin && seq > self.expected {
            // A full resync supersedes whatever is missing or held before it.
            self.held = self.held.split_off(&seq);
            self.expected = seq;
            self.nacked_to = self.nacked_to.max(seq - 1);
        }
        self.highest = self.highest.max(seq);
        if seq == self.expected {
            self.apply(batch, applied, marks, counters);
            self.drain(applied, marks, counters);
        } else if seq - self.expected >= HOLD_LIMIT as u64 {
            counters.beyond_window += 1;
        } else {
            match self.held.entry(seq) {
                Entry::Occupied(_) => counters.duplicates += 1,
                Entry::Vacant(slot) => {
                    counters.out_of_order += 1;
                    slot.insert(bytes.to_vec());
                }
            }
        }
    }

    /// Requests the whole table at the next poll, and again every heartbeat until a
    /// resync begins arriving.
    pub(super) fn request_table(&mut self, now: Instant) {
        self.request_at = Some(now);
    }

    /// A resync request still due goes at the next poll: the peer has just learnt our
    /// token, and the earlier ones were not fresh for it.
    pub(super) fn request_now(&mut self, now: Instant) {
        if let Some(at) = self.request_at.as_mut() {
            *at = (*at).min(now);
        }
    }

    /// A heartbeat: the peer has sent up to `last_seq`.
    pub(super) fn handle_heartbeat(&mut self, last_seq: u32) {
        let last = wire::expand(last_seq, self.expected);
        if last >= self.expected {
            // Tail loss: the last batches never came.
            self.highest = self.highest.max(last);
        }
    }

    fn apply(
        &mut self,
        batch: &Batch<'_>,
        applied: &mut Vec<Change>,
        marks: &mut Vec<ResyncMark>,
        counters: &mut Counters,
    ) {
        if batch.flags.resync_begin {
            marks.push(ResyncMark {
                at: applied.len(),
                edge: ResyncEdge::Begin,
            });
            self.request_at = None;
            self.resyncs_received += 1;
        }
        let before = applied.len();
        applied.extend(batch.changes());
        counters.changes_received += (applied.len() - before) as u64;
        if batch.flags.resync_end {
            marks.push(ResyncMark {
                at: applied.len(),
                edge: ResyncEdge::End,
            });
        }
        self.expected += 1;
    }

    /// Applies the held batches that are next in line.
    fn drain(
        &mut self,
        applied: &mut Vec<Change>,
        marks: &mut Vec<ResyncMark>,
        counters: &mut Counters,
    ) {
        while let Some(bytes) = self.held.remove(&self.expected) {
            match Message::parse(&bytes) {
                Ok((_, Message::Batch(batch))) => self.apply(&batch, applied, marks, counters),
                // Only checked batches are held; skip rather than stall if that changes.
                _ => self.expected += 1,
            }
        }
    }

    /// Sends the Nacks and the resync request that are due.
    pub(super) fn poll(
        &mut self,
        now: Instant,
        own_epoch: u64,
        heartbeat: Duration,
        peer: SocketAddr,
        out: &mut Vec<(SocketAddr, Vec<u8>)>,
        counters: &mut Counters,
    ) {
        if let Some(at) = self.request_at
            && now >= at
        {
            let request = Message::ResyncRequest {
                stream_epoch: self.epoch.unwrap_or(0),
            };
            out.push((peer, request.to_vec(own_epoch)));
            counters.resyncs_requested += 1;
            self.request_at = Some(now + heartbeat);
        }

        let Some(stream_epoch) = self.epoch else {
            return;
        };
        let limit = self.window_end();
        if limit < self.expected {
            self.nack_retry_at = None;
            return;
        }
        let mut nack = |from: u64, to: u64, out: &mut Vec<(SocketAddr, Vec<u8>)>| {
            let m = Message::Nack {
                stream_epoch,
                from: wire::low32(from),
                to: wire::low32(to),
            };
            out.push((peer, m.to_vec(own_epoch)));
            counters.nacks_sent += 1;
        };
        // Newly found gaps, at once.
        let fresh = self.nacked_to.saturating_add(1).max(self.expected);
        if fresh <= limit {
            for (from, to) in missing(&self.held, fresh, limit).take(NACKS_PER_PASS) {
                nack(from, to, out);
            }
            self.nacked_to = limit;
            self.nack_retry_at.get_or_insert(now + NACK_RETRY);
        }
        // Gaps still open, again.
        if self.nack_retry_at.is_some_and(|at| now >= at) {
            for (from, to) in missing(&self.held, self.expected, limit).take(NACKS_PER_PASS) {
                nack(from, to, out);
            }
            self.nack_retry_at = Some(now + NACK_RETRY);
        }
    }

    /// The next time [`poll`](Self::poll) has something to send.
    pub(super) fn poll_at(&self, now: Instant) -> Option<Instant> {
        let gap = self.epoch.is_some() && self.window_end() >= self.expected;
        let nack = if !gap {
            None
        } else if self.nacked_to < self.window_end() {
            Some(now)
        } else {
            self.nack_retry_at
        };
        [self.request_at, nack].into_iter().flatten().min()
    }

    /// The highest seq worth asking for: known to exist and within the hold window.
    fn window_end(&self) -> u64 {
        self.highest.min(self.expected + HOLD_LIMIT as u64 - 1)
    }
}

/// The ranges of seqs in `from..=to` not held, in order.
fn missing(
    held: &BTreeMap<u64, Vec<u8>>,
    from: u64,
    to: u64,
) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mut cursor = from;
    let mut keys = held.range(from..=to).map(|(k, _)| *k);
    core::iter::from_fn(move || {
        while cursor <= to {
            match keys.next() {
                Some(k) if k == cursor => cursor += 1,
                Some(k) => {
                    let range = (cursor, k - 1);
                    cursor = k + 1;
                    return Some(range);
                }
                None => {
                    let range = (cursor, to);
                    cursor = to + 1;
                    return Some(range);
                }
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ranges_skip_held_seqs() {
        let held: BTreeMap<u64, Vec<u8>> = [4, 5, 8, 12].into_iter().map(|k| (k, vec![])).collect();
        let got: Vec<_> = missing(&held, 3, 12).collect();
        assert_eq!(got, vec![(3, 3), (6, 7), (9, 11)]);
        assert_eq!(missing(&held, 4, 5).count(), 0);
        assert_eq!(missing(&held, 1, 2).collect::<Vec<_>>(), vec![(1, 2)]);
        assert_eq!(missing(&held, 13, 20).collect::<Vec<_>>(), vec![(13, 20)]);
    }
}
