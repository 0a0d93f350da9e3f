//! Freshness: which authentic datagrams a gateway still acts on.
//!
//! Authentication ([`super::seal`]) proves a datagram came from a gateway of the group, not
//! that it is new: a host on the segment can record datagrams and send them again, now or
//! after either gateway restarted. Two things refuse such replays, in the pure core and
//! without any state on disk:
//!
//! - **Tokens.** Each gateway holds a token per peer and sends it in every datagram to that
//!   peer; the peer echoes the latest token it heard. A datagram is *fresh* only when it
//!   echoes the receiver's current token. The token is derived from the receiver's epoch
//!   (random at each start), so nothing recorded before the receiver restarted is ever
//!   fresh again; and it changes whenever the receiver follows a new epoch of the peer (the
//!   peer restarted), so nothing recorded from the peer's earlier life is fresh either. An
//!   epoch change is therefore only ever taken from a fresh, authenticated datagram.
//! - **A replay window** over the sender's datagram counter, per followed epoch: the
//!   highest counter accepted and a bitmap of the [`WINDOW`] below it, as IPsec and
//!   WireGuard keep. A datagram seen already, or older than the window, is refused.
//!
//! A datagram that authenticates but is not fresh (the peer has not heard our token since
//! one of us restarted, or it is a replay) changes nothing. The receiver answers it, at
//! most every [`REFLECT_EVERY`] and for at most [`REFLECT_LIMIT`] distinct tokens at a
//! time, with a heartbeat that echoes the token it carried: the peer finds that reply
//! fresh and learns our token from it. Starting from nothing, two gateways are talking
//! after one round trip each way.

use smoltcp::time::{Duration, Instant};

/// Counters below the highest accepted one that are remembered.
pub const WINDOW: u64 = 1024;
/// How often not-fresh datagrams are answered.
pub const REFLECT_EVERY: Duration = Duration::from_millis(50);
/// Most distinct tokens answered at a time: a flood of replays recorded in many earlier
/// sessions cannot crowd out the peer's real one for long, nor make this gateway a
/// reflector.
pub const REFLECT_LIMIT: usize = 4;

/// The receiver's side of one peer's session.
#[derive(Debug, Clone)]
pub(super) struct Freshness {
    /// Our epoch mixed with the peer's place: the root of our tokens for it.
    base: u64,
    /// Times the peer restarted while we ran: each gives a new token.
    generation: u64,
    /// What the peer must echo for its datagrams to be fresh.
    token: u64,
    /// The peer's token, from its latest fresh datagram: what we echo (0 before any).
    echo: u64,
    window: Window,
    /// Tokens of not-fresh datagrams to answer, and when answering is allowed again.
    reflect: Vec<u64>,
    reflect_at: Instant,
}

/// What a datagram is, once authentic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Fresh and new: act on it.
    Fresh,
    /// Does not echo our current token: recorded before one of us restarted, or the peer
    /// has not heard our token yet. Ignored (a reply is scheduled).
    Unconfirmed,
    /// Fresh, but its counter was seen already or is older than the window.
    Replay,
}

impl Freshness {
    pub(super) fn new(epoch: u64, peer: usize, now: Instant) -> Freshness {
        let base = mix(epoch ^ mix(peer as u64 + 1));
        Freshness {
            base,
            generation: 0,
            token: token(base, 0),
            echo: 0,
            window: Window::default(),
            reflect: Vec::new(),
            reflect_at: now,
        }
    }

    /// Our token for the peer.
    pub(super) fn token(&self) -> u64 {
        self.token
    }

    /// The peer's token, as we echo it.
    pub(super) fn echo(&self) -> u64 {
        self.echo
    }

    /// Whether the peer has confirmed our current token since it last changed.
    pub(super) fn confirmed(&self) -> bool {
        self.echo != 0
    }

    /// Checks a datagram's echo and counter. `new_epoch` tells that the datagram belongs
    /// to another epoch than the one followed (the caller follows it only on `Fresh`, and
    /// then calls [`restarted`](Self::restarted) when one was followed before).
    pub(super) fn check(
        &mut self,
        echo: u64,
        counter: u64,
        their_token: u64,
        new_epoch: bool,
    ) -> Verdict {
        if echo != self.token {
            if !self.reflect.contains(&their_token) && self.reflect.len() < REFLECT_LIMIT {
                self.reflect.push(their_token);
            }
            return Verdict::Unconfirmed;
        }
        if new_epoch {
            // Another epoch starts its own count; the followed one's window stays until
            // the caller follows the new epoch.
            let mut window = Window::default();
            if !window.accept(counter) {
                return Verdict::Replay;
            }
            self.window = window;
            return Verdict::Fresh;
        }
        if !self.window.accept(counter) {
            return Verdict::Replay;
        }
        Verdict::Fresh
    }

    /// A fresh datagram carried `their_token`. Returns whether it is a token we did not
    /// echo yet (the peer then needs to hear from us soon).
    pub(super) fn heard(&mut self, their_token: u64) -> bool {
        let changed = self.echo != their_token;
        self.echo = their_token;
        changed
    }

    /// The peer restarted (we now follow its new epoch): nothing it sent in its earlier
    /// life can be fresh again, and it must learn our new token.
    pub(super) fn restarted(&mut self) {
        self.generation += 1;
        self.token = token(self.base, self.generation);
    }

    /// The tokens to answer now, if answering is due; empties the list.
    pub(super) fn take_reflects(&mut self, now: Instant, out: &mut Vec<u64>) {
        if self.reflect.is_empty() || now < self.reflect_at {
            return;
        }
        out.append(&mut self.reflect);
        self.reflect_at = now + REFLECT_EVERY;
    }

    /// When answering is due next, if anything waits.
    pub(super) fn poll_at(&self) -> Option<Instant> {
        (!self.reflect.is_empty()).then_some(self.reflect_at)
    }
}

/// Counters of one epoch already accepted: the highest, and a bitmap of the
/// [`WINDOW`] below it (bit `i` is `top - i`).
#[derive(Debug, Clone, Default)]
struct Window {
    top: u64,
    bits: [u64; (WINDOW / 64) as usize],
}

impl Window {
    /// Records `counter` if it is new; false when it was seen or is too old. Counters
    /// start at 1: 0 is never accepted.
    fn accept(&mut self, counter: u64) -> bool {
        if counter == 0 {
            return false;
        }
        if counter > self.top {
            let shift = counter - self.top;
            self.shift(shift);
            self.top = counter;
            self.bits[0] |= 1;
            return true;
        }
        let age = self.top - counter;
        if age >= WINDOW {
            return false;
        }
        let (word, bit) = ((age / 64) as usize, age % 64);
        if self.bits[word] & (1 << bit) != 0 {
            return false;
        }
        self.bits[word] |= 1 << bit;
        true
    }

    /// Moves the window up by `n`: bit `i` becomes bit `i + n`.
    fn shift(&mut self, n: u64) {
        if n >= WINDOW {
            self.bits = Default::default();
            return;
        }
        let (words, bits) = ((n / 64) as usize, (n % 64) as u32);
        let len = self.bits.len();
        for i in (0..len).rev() {
            let from = i.checked_sub(words);
            let high = from.map_or(0, |f| self.bits[f]);
            let low = from
                .and_then(|f| f.checked_sub(1))
                .map_or(0, |f| self.bits[f]);
            self.bits[i] = if bits == 0 {
                high
            } else {
                (high << bits) | (low >> (64 - bits))
            };
        }
    }
}

/// SplitMix64's finaliser: spreads any input over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A token, never 0 (0 means "none yet" on the wire).
fn token(base: u64, generation: u64) -> u64 {
    mix(base ^ generation.rotate_left(17)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn the_window_takes_each_counter_once_and_nothing_too_old() {
        let mut w = Window::default();
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(!w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(w.accept(1100));
        // 1100 - 1024 = 76 is the oldest still remembered.
        assert!(!w.accept(76));
        assert!(w.accept(77));
        assert!(!w.accept(77));
        assert!(w.accept(1099));
        assert!(w.accept(u64::MAX));
        assert!(!w.accept(1101));
    }

    #[test]
    fn the_window_matches_a_set_of_every_counter_seen() {
        // Against a brute-force reference: accepted iff unseen and within WINDOW of the
        // highest accepted.
        let mut w = Window::default();
        let mut seen = std::collections::BTreeSet::new();
        let mut s = 0x1234_5678_9abc_def0u64;
        let mut top = 0u64;
        for _ in 0..200_000 {
            s = mix(s);
            let jump = match s % 16 {
                0 => s % 3000,
                1..=3 => 64 + s % 64,
                _ => s % 40,
            };
            let counter = if s & 1 == 0 {
                top + jump
            } else {
                top.saturating_sub(jump)
            };
            let expect = counter != 0 && !seen.contains(&counter) && counter + WINDOW > top;
            assert_eq!(w.accept(counter), expect, "counter {counter}, top {top}");
            if expect {
                seen.insert(counter);
                top = top.max(counter);
            }
        }
    }

    #[test]
    fn only_an_echo_of_the_current_token_is_fresh() {
        let mut f = Freshness::new(0xabc, 0, at(0));
        let t = f.token();
        assert_ne!(t, 0);
        assert_eq!(f.check(0, 1, 77, true), Verdict::Unconfirmed);
        assert_eq!(f.check(t ^ 1, 2, 77, true), Verdict::Unconfirmed);
        assert_eq!(f.check(t, 3, 77, true), Verdict::Fresh);
        assert!(f.heard(77));
        assert!(!f.heard(77));
        assert_eq!(f.echo(), 77);
        assert_eq!(f.check(t, 3, 77, false), Verdict::Replay);
        // The peer restarts: the old token is worthless from now on.
        f.restarted();
        assert_ne!(f.token(), t);
        assert_eq!(f.check(t, 4, 77, false), Verdict::Unconfirmed);
        assert_eq!(f.check(f.token(), 1, 88, true), Verdict::Fresh);
    }

    #[test]
    fn tokens_differ_per_epoch_peer_and_generation() {
        let mut seen = std::collections::HashSet::new();
        for epoch in [1u64, 2, 0xdead_beef] {
            for peer in 0..4 {
                let mut f = Freshness::new(epoch, peer, at(0));
                for _ in 0..8 {
                    assert!(seen.insert(f.token()));
                    f.restarted();
                }
            }
        }
    }

    #[test]
    fn not_fresh_datagrams_are_answered_at_a_bounded_rate() {
        let mut f = Freshness::new(1, 0, at(0));
        for token in 1..=10 {
            f.check(0, token, token, false);
            f.check(0, token, token, false);
        }
        let mut out = Vec::new();
        f.take_reflects(at(0), &mut out);
        assert_eq!(out, vec![1, 2, 3, 4]);
        assert_eq!(f.poll_at(), None);
        f.check(0, 11, 11, false);
        assert_eq!(f.poll_at(), Some(at(0) + REFLECT_EVERY));
        out.clear();
        f.take_reflects(at(49), &mut out);
        assert!(out.is_empty());
        f.take_reflects(at(50), &mut out);
        assert_eq!(out, vec![11]);
    }
}
