//! What this gateway tells the cluster: the part of the `EgressGateway` status it owns, as
//! a pure core. No clock, no client: the shell (`io::kube`) hands in what the data path
//! published and the time, applies the fragments that come out with server-side apply, and
//! reports back how each apply went.
//!
//! # The fragment
//!
//! Each gateway applies, under its own field manager (`egret-gateway/<name>`, with
//! `force`), exactly these keys of `status`:
//! - `nodes.<its name>: Up` (and `Down` in its last apply after a clean stop);
//! - `nodes.<peer>` for every peer gateway it has heard since it started: `Up` while the
//!   peer is heard, `Down` once the peer has been silent for [`PEER_SILENCE`];
//! - `floatingIPs.<ip>: <its name>` for every floating IP it holds (its data path answers
//!   ARP for it), and `floatingIPs.<ip>: <master>` for every floating IP whose master it
//!   hears and can name (the master is `Up`).
//!
//! # Ownership under server-side apply
//!
//! Map keys are granular: each key has its own owners. A key applied by several gateways
//! with the same value is co-owned; a gateway that applies another value with `force` takes
//! the key from the others; a key a manager stops applying is removed only when no other
//! manager still owns it. So:
//! - a live gateway and its peers co-own `nodes.<it>: Up` and the names of its addresses;
//! - when it dies, the peer that notices applies `Down` (and, once the election moved the
//!   address, its own name for it), taking those keys over: the dead gateway's stale `Up`
//!   and addresses never outlive a live peer's apply;
//! - a restarted gateway applies `Up` for itself (taking its key back) and only what it
//!   knows; keys it owned before its restart and no longer applies go away only when nobody
//!   else owns them, and keys a peer took over are not its own any more, so its first
//!   apply never deletes what a peer reported;
//! - a clean stop applies `Down` for itself, the peers as last known, and no address of its
//!   own: what it held is then named by the peer that took it over, or by nobody.
//!
//! Two gateways that cannot hear each other but both reach the API (a split of the
//! gateways' segment) each report the other `Down`; the last apply wins, and each re-asserts
//! its view every [`REASSERT_EVERY`]. The status then shows the split as it is.
//!
//! # Names and silence
//!
//! A peer's name comes from its sealed sync heartbeats (`sync::wire`), which carry its
//! `[gateway].name` and its election address: that is the only source this gateway trusts
//! for a name (the status object itself is an output, and may be stale or edited). The
//! election address maps the adverts a backup hears to the master's name.
//!
//! A peer was last *heard* at the later of its last fresh sync datagram (the sync reports
//! how long ago that was) and the observation at which the count of adverts accepted from
//! its election address last grew. It is *silent for 3 s* once that is [`PEER_SILENCE`]
//! or more before this core's clock. The data path publishes every 250 ms and the shell
//! observes every 250 ms, so a silence is never reported early and at most about half a
//! second late. A peer is only ever named once heard: without
//! `[sync]` (or before a peer's first heartbeat) the fragment holds this gateway's own key
//! and its own addresses only.
//!
//! # Writes
//!
//! A steady gateway writes nothing: a fragment is applied when it differs from the last
//! one applied successfully, and every [`REASSERT_EVERY`] (someone may have edited the
//! object). One apply is in flight at a time; a failed one is retried after a backoff that
//! doubles from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], always with the latest fragment, so the
//! status catches up with whatever happened during an outage in one apply.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use egret_crd::{EgressGatewayStatus, GatewayState};

use crate::status::Snapshot;

/// A peer not heard for this long is `Down`.
pub const PEER_SILENCE: Duration = Duration::from_secs(3);
/// An unchanged fragment is applied again this often.
pub const REASSERT_EVERY: Duration = Duration::from_secs(60);
/// The first retry after a failed apply.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest wait between retries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Most peer names remembered; beyond it the longest silent ones are forgotten.
pub const MAX_PEERS: usize = 64;

/// The field manager of the gateway called `name`.
pub fn field_manager(name: &str) -> String {
    format!("egret-gateway/{name}")
}

/// What the reporter reads of a [`Snapshot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub floating_ips: Vec<IpObservation>,
    pub peers: Vec<PeerObservation>,
}

/// One floating IP as the election and the data path see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpObservation {
    pub address: Ipv4Addr,
    /// This gateway holds it: it answers ARP for it and forwards its traffic.
    pub owned: bool,
    /// The election address of its master, as its adverts said.
    pub master_address: Option<Ipv4Addr>,
    /// Adverts accepted for it so far.
    pub adverts_received: u64,
}

/// One sync peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerObservation {
    /// Its name, once a heartbeat announced it.
    pub name: Option<String>,
    /// Its election address, once a datagram announced it.
    pub primary: Option<Ipv4Addr>,
    /// How long since its last fresh datagram, as of the sync's latest report (`None`:
    /// never heard).
    pub silent: Option<Duration>,
}

impl Observation {
    /// Copies what the reporter needs; cheap enough to call under the snapshot's lock.
    pub fn from_snapshot(s: &Snapshot) -> Observation {
        Observation {
            floating_ips: s
                .floating_ips
                .iter()
                .map(|ip| IpObservation {
                    address: ip.address,
                    owned: ip.owned,
                    master_address: ip.master_address,
                    adverts_received: ip.adverts_received,
                })
                .collect(),
            peers: s
                .sync
                .peers
                .iter()
                .map(|p| PeerObservation {
                    name: p.name.clone(),
                    primary: p.primary,
                    silent: p.silent_ms.map(Duration::from_millis),
                })
                .collect(),
        }
    }
}

/// A peer as the reporter remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    primary: Option<Ipv4Addr>,
    /// When it was last heard; `None`: known, but not heard by this reporter.
    heard: Option<Instant>,
}

/// The latest apply, from [`Reporter::due`] until its outcome is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    fragment: EgressGatewayStatus,
}

/// The reporting of one gateway: what it wants the status to say, what it last applied,
/// and when to apply next.
#[derive(Debug, Clone)]
pub struct Reporter {
    name: String,
    peers: BTreeMap<String, Peer>,
    /// Adverts accepted per floating IP at the previous observation.
    adverts: BTreeMap<Ipv4Addr, u64>,
    latest: Observation,
    /// The latest time handed in.
    now: Instant,
    /// The fragment as of the latest observation (or the final one once stopping).
    wanted: EgressGatewayStatus,
    applied: Option<EgressGatewayStatus>,
    applied_at: Option<Instant>,
    in_flight: Option<InFlight>,
    retry_at: Option<Instant>,
    backoff: Duration,
    stopping: bool,
}

impl Reporter {
    /// The reporter of the gateway called `name`, started at `now`; it wants
    /// `nodes.<name>: Up` at once.
    pub fn new(name: &str, now: Instant) -> Reporter {
        let mut r = Reporter {
            name: name.to_owned(),
            peers: BTreeMap::new(),
            adverts: BTreeMap::new(),
            latest: Observation::default(),
            now,
            wanted: EgressGatewayStatus::default(),
            applied: None,
            applied_at: None,
            in_flight: None,
            retry_at: None,
            backoff: BACKOFF_MIN,
            stopping: false,
        };
        r.wanted = r.fragment(None);
        r
    }

    /// Takes in what the data path published at `now`: who is heard, who holds what.
    /// Ignored once [`stop`](Self::stop) was called.
    pub fn observe(&mut self, now: Instant, observation: &Observation) {
        self.now = self.now.max(now);
        if self.stopping {
            return;
        }
        for p in &observation.peers {
            let Some(name) = &p.name else { continue };
            // Two gateways with one name would overwrite each other's key anyway; never
            // report the other one as this one.
            if *name == self.name {
                continue;
            }
            let peer = self.peers.entry(name.clone()).or_insert(Peer {
                primary: None,
                heard: None,
            });
            if p.primary.is_some() {
                peer.primary = p.primary;
            }
            if let Some(at) = p.silent.and_then(|silent| now.checked_sub(silent)) {
                peer.heard = peer.heard.max(Some(at));
            }
        }
        for ip in &observation.floating_ips {
            let before = self.adverts.insert(ip.address, ip.adverts_received);
            let advert = before.is_some_and(|n| ip.adverts_received > n);
            if let (true, Some(master)) = (advert, ip.master_address) {
                for peer in self.peers.values_mut() {
                    if peer.primary == Some(master) {
                        peer.heard = Some(now);
                    }
                }
            }
        }
        self.forget_beyond_limit();
        self.latest = observation.clone();
        self.wanted = self.fragment(Some(now));
    }

    /// The fragment to apply at `now`, if any: the wanted one when it differs from the
    /// last applied, or a re-assertion is due, and no apply is in flight or backing off.
    /// The caller applies it and reports with [`applied`](Self::applied) or
    /// [`failed`](Self::failed).
    pub fn due(&mut self, now: Instant) -> Option<EgressGatewayStatus> {
        self.now = self.now.max(now);
        if self.in_flight.is_some() || self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let changed = self.applied.as_ref() != Some(&self.wanted);
        let reassert = self
            .applied_at
            .is_some_and(|at| now.saturating_duration_since(at) >= REASSERT_EVERY);
        if !changed && !reassert {
            return None;
        }
        self.in_flight = Some(InFlight {
            fragment: self.wanted.clone(),
        });
        Some(self.wanted.clone())
    }

    /// The apply handed out by [`due`](Self::due) succeeded at `now`.
    pub fn applied(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if let Some(flight) = self.in_flight.take() {
            self.applied = Some(flight.fragment);
            self.applied_at = Some(now);
            self.retry_at = None;
            self.backoff = BACKOFF_MIN;
        }
    }

    /// The apply handed out by [`due`](Self::due) failed at `now`: retry after the
    /// backoff, with whatever is wanted by then.
    pub fn failed(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.in_flight.take().is_some() {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// A clean stop: from now on the wanted fragment is the last one, `nodes.<name>:
    /// Down`, the peers as last known, no address of this gateway's. Any backoff is
    /// forgotten: the shell gives the last apply a deadline of its own.
    pub fn stop(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.stopping = true;
        self.wanted = self.fragment(Some(now));
        self.retry_at = None;
    }

    /// When [`due`](Self::due) may next have something: at once (the latest time handed
    /// in) for a change, else a retry or a re-assertion; `None` while an apply is in
    /// flight. New observations may make something due earlier.
    pub fn poll_at(&self) -> Option<Instant> {
        if self.in_flight.is_some() {
            return None;
        }
        if self.applied.as_ref() != Some(&self.wanted) {
            return Some(self.retry_at.unwrap_or(self.now));
        }
        let reassert = self.applied_at.map(|at| at + REASSERT_EVERY);
        match (self.retry_at, reassert) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// What this gateway wants the status to say now.
    pub fn wanted(&self) -> &EgressGatewayStatus {
        &self.wanted
    }

    /// The fragment last applied successfully.
    pub fn last_applied(&self) -> Option<&EgressGatewayStatus> {
        self.applied.as_ref()
    }

    /// The wanted fragment is not applied yet (waiting, in flight or backing off).
    pub fn pending(&self) -> bool {
        self.applied.as_ref() != Some(&self.wanted)
    }

    /// The fragment from the latest observation, as of `now` (`None`: before any).
    fn fragment(&self, now: Option<Instant>) -> EgressGatewayStatus {
        let own = if self.stopping {
            GatewayState::Down
        } else {
            GatewayState::Up
        };
        let mut nodes = BTreeMap::from([(self.name.clone(), own)]);
        for (name, peer) in &self.peers {
            nodes.insert(name.clone(), state(peer, now));
        }
        let mut floating_ips = BTreeMap::new();
        for ip in &self.latest.floating_ips {
            let holder = if ip.owned {
                (!self.stopping).then(|| self.name.clone())
            } else {
                ip.master_address.and_then(|m| {
                    self.peers
                        .iter()
                        .find(|(_, p)| p.primary == Some(m) && state(p, now) == GatewayState::Up)
                        .map(|(name, _)| name.clone())
                })
            };
            if let Some(holder) = holder {
                floating_ips.insert(ip.address.to_string(), holder);
            }
        }
        EgressGatewayStatus {
            nodes,
            floating_ips,
        }
    }

    /// Forgets the peers silent longest, beyond [`MAX_PEERS`] (renamed peers leave their
    /// old names behind).
    fn forget_beyond_limit(&mut self) {
        while self.peers.len() > MAX_PEERS {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, p)| p.heard)
                .map(|(name, _)| name.clone());
            match oldest {
                Some(name) => self.peers.remove(&name),
                None => break,
            };
        }
    }
}

/// `Up` when heard within [`PEER_SILENCE`] of `now`.
fn state(peer: &Peer, now: Option<Instant>) -> GatewayState {
    match (peer.heard, now) {
        (Some(heard), Some(now)) if now.saturating_duration_since(heard) < PEER_SILENCE => {
            GatewayState::Up
        }
        _ => GatewayState::Down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GatewayState::{Down, Up};

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
    const B: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 101);
    const GW2: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 12);

    /// A virtual clock: `t(ms)` is `ms` after a fixed origin.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Clock {
            Clock(Instant::now())
        }
        fn t(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn ip(address: Ipv4Addr, owned: bool, master: Option<Ipv4Addr>, adverts: u64) -> IpObservation {
        IpObservation {
            address,
            owned,
            master_address: master,
            adverts_received: adverts,
        }
    }

    /// gw2 as the sync reports it: its last fresh datagram `silent_ms` ago.
    fn gw2(silent_ms: u64) -> PeerObservation {
        PeerObservation {
            name: Some("gw2".into()),
            primary: Some(GW2),
            silent: Some(Duration::from_millis(silent_ms)),
        }
    }

    fn status(nodes: &[(&str, GatewayState)], ips: &[(Ipv4Addr, &str)]) -> EgressGatewayStatus {
        EgressGatewayStatus {
            nodes: nodes.iter().map(|(n, s)| ((*n).to_owned(), *s)).collect(),
            floating_ips: ips
                .iter()
                .map(|(a, n)| (a.to_string(), (*n).to_owned()))
                .collect(),
        }
    }

    /// Applies whatever is due at `now`, successfully.
    fn apply(r: &mut Reporter, now: Instant) -> Option<EgressGatewayStatus> {
        let f = r.due(now);
        if f.is_some() {
            r.applied(now);
        }
        f
    }

    #[test]
    fn a_starting_gateway_reports_itself_up_at_once_and_then_its_addresses() {
        let c = Clock::new();
        let mut r = Reporter::new("gw1", c.t(0));
        assert_eq!(r.poll_at().map(|_| ()), Some(()));
        assert_eq!(apply(&mut r, c.t(0)), Some(status(&[("gw1", Up)], &[])));
        assert_eq!(apply(&mut r, c.t(10)), None);
        // The election makes it master of A; it hears gw2, master of B.
        let o = Observation {
            floating_ips: vec![
                ip(A, true, Some(Ipv4Addr::new(192, 168, 1, 11)), 0),
                ip(B, false, Some(GW2), 5),
            ],
            peers: vec![gw2(100)],
        };
        r.observe(c.t(250), &o);
        assert_eq!(
            apply(&mut r, c.t(250)),
            Some(status(
                &[("gw1", Up), ("gw2", Up)],
                &[(A, "gw1"), (B, "gw2")]
            ))
        );
        // Steady: no write.
        for ms in (500..30_000).step_by(250) {
            r.observe(
                c.t(ms),
                &Observation {
                    peers: vec![gw2(ms % 1000)],
                    ..o.clone()
                },
            );
            assert_eq!(apply(&mut r, c.t(ms)), None, "at {ms} ms");
        }
        assert!(!r.pending());
    }

    #[test]
    fn a_takeover_names_the_new_master_at_the_next_observation() {
        let c = Clock::new();
        let mut r = Reporter::new("gw1", c.t(0));
        let mut o = Observation {
            floating_ips: vec![ip(A, false, Some(GW2), 10)],
            peers: vec![gw2(0)],
        };
        r.observe(c.t(0), &o);
        assert_eq!(
            apply(&mut r, c.t(0)),
            Some(status(&[("gw1", Up), ("gw2", Up)], &[(A, "gw2")]))
        );
        // gw2 dies: its adverts stop, the election takes A over after ~3 adverts.
        o.floating_ips[0].owned = true;
        r.observe(c.t(400), &o);
        assert_eq!(
            apply(&mut r, c.t(400)),
            Some(status(&[("gw1", Up), ("gw2", Up)], &[(A, "gw1")]))
        );
    }

    #[test]
    fn a_peer_silent_for_three_seconds_is_down_and_back_when_heard() {
        let c = Clock::new();
        let mut r = Reporter::new("gw1", c.t(0));
        // gw1 is a backup of A: it hears gw2's adverts and its sync.
        let heard = |adverts| Observation {
            floating_ips: vec![ip(A, false, Some(GW2), adverts)],
            peers: vec![gw2(0)],
        };
        r.observe(c.t(0), &heard(1));
        apply(&mut r, c.t(0));
        // The sync goes silent at 0 ms, but the adverts go on: still up.
        let adverts_only = |ms: u64, adverts| Observation {
            floating_ips: vec![ip(A, false, Some(GW2), adverts)],
            peers: vec![gw2(ms)],
        };
        for (i, ms) in (250..10_000).step_by(250).enumerate() {
            r.observe(c.t(ms), &adverts_only(ms, 2 + i as u64));
            assert_eq!(apply(&mut r, c.t(ms)), None, "at {ms} ms");
        }
        // Both silent from 9750 ms on: Down once 3 s passed, not before.
        let last = 2 + (250..10_000).step_by(250).count() as u64 - 1;
        for ms in (10_000..12_750).step_by(250) {
            r.observe(c.t(ms), &adverts_only(ms, last));
            assert_eq!(apply(&mut r, c.t(ms)), None, "at {ms} ms");
        }
        r.observe(c.t(12_750), &adverts_only(12_750, last));
        // Down, and no longer named as A's holder.
        assert_eq!(
            apply(&mut r, c.t(12_750)),
            Some(status(&[("gw1", Up), ("gw2", Down)], &[]))
        );
        r.observe(c.t(13_000), &adverts_only(13_000, last));
        assert_eq!(apply(&mut r, c.t(13_000)), None);
        // Back: heard again, up again.
        r.observe(c.t(20_000), &heard(last));
        assert_eq!(
            apply(&mut r, c.t(20_000)),
            Some(status(&[("gw1", Up), ("gw2", Up)], &[(A, "gw2")]))
        );
    }

    #[test]
    fn a_master_hears_a_backup_through_the_sync_only() {
        let c = Clock::new();
        let mut r = Reporter::new("gw1", c.t(0));
        let o = |silent| Observation {
            floating_ips: vec![ip(A, true, None, 0)],
            peers: vec![gw2(silent)],
        };
        // gw2's last heartbeat arrived 200 ms before the first observation.
        r.observe(c.t(0), &o(200));
        assert_eq!(
            apply(&mut r, c.t(0)),
            Some(status(&[("gw1", Up), ("gw2", Up)], &[(A, "gw1")]))
        );
        // Counted from the datagram, not from the observation.
        r.observe(c.t(2_799), &o(2_999));
        assert_eq!(apply(&mut r, c.t(2_799)), None);
        r.observe(c.t(2_800), &o(3_000));
        assert_eq!(
            apply(&mut r, c.t(2_800)),
            Some(status(&[("gw1", Up), ("gw2", Down)], &[(A, "gw1")]))
        );
    }

    #[test]
    fn without_sync_only_this_gateway_and_its_addresses_are_reported() {
        let c = Clock::new();
        let mut r = Reporter::new("gw1", c.t(0));
        // Adverts from a master nobody named: no name, no key.
        let o = Observation {
            floating_ips: vec![ip(A, true, None, 0), ip(B, false, Some(GW2), 7)],
            peers: vec![],
        };
        r.observe(c.t(0), &o);
        assert_eq!(
            apply(&mut r, c.t(0)),
            Some(status(&[("gw1", Up)], &[(A, "gw1")]))
        );
        // A peer that has not named itself yet is not reported either.
        let unnamed = Observation {
            peers: vec![PeerObservation {
                name: None,
                primary: Some(GW2),
                silent: Some(Duration::ZERO),
            }],
            ..o
        };
        r.observe(c.t(250), &unnamed);
        assert_eq!(apply(&mut r, c.t(250)), None);
    }

    #[test]
    fn a_failed_apply_backs_off_and_the_retry_carries_the_latest_fragment() {
        let c = Clock::new();
        let mut r = Reporter::new("gw1", c.t(0));
        assert!(r.due(c.t(0)).is_some());
        // Nothing else while in flight.
        assert_eq!(r.due(c.t(1)), None);
        assert_eq!(r.poll_at(), None);
        r.failed(c.t(100));
        assert!(r.pending());
        assert_eq!(r.poll_at(), Some(c.t(100) + BACKOFF_MIN));
        assert_eq!(r.due(c.t(200)), None);
        // Meanwhile it took A over.
        r.observe(
            c.t(300),
            &Observation {
                floating_ips: vec![ip(A, true, None, 0)],
                peers: vec![],
            },
        );
        let f = r.due(c.t(350)).expect("retry");
        assert_eq!(f, status(&[("gw1", Up)], &[(A, "gw1")]));
        // The backoff doubles up to its ceiling while the API stays away.
        r.failed(c.t(350));
        let mut now = c.t(350);
        let mut waits = vec![];
        for _ in 0..8 {
            let at = r.poll_at().expect("a retry");
            waits.push(at - now);
            now = at;
            assert!(r.due(now).is_some());
            r.failed(now);
        }
        assert_eq!(waits[0], BACKOFF_MIN * 2);
        assert_eq!(waits[1], BACKOFF_MIN * 4);
        assert_eq!(*waits.last().expect("waits"), BACKOFF_MAX);
        // Back: one apply catches up, and the backoff starts over.
        let now = r.poll_at().expect("a retry");
        assert!(r.due(now).is_some());
        r.applied(now);
        assert!(!r.pending());
        assert_eq!(
            r.last_applied(),
            Some(&status(&[("gw1", Up)], &[(A, "gw1")]))
        );
        r.observe(
            now,
            &Observation {
                floating_ips: vec![ip(A, false, None, 0)],
                peers: vec![],
            },
        );
        assert!(r.due(now).is_some());
        r.failed(now);
        assert_eq!(r.poll_at(), Some(now + BACKOFF_MIN));
    }

    #[test]
    fn an_unchanged_fragment_is_asserted_again_every_minute() {
        let c = Clock::new();
        let mut r = Reporter::new("gw1", c.t(0));
        apply(&mut r, c.t(0));
        assert_eq!(r.poll_at(), Some(c.t(0) + REASSERT_EVERY));
        assert_eq!(apply(&mut r, c.t(59_999)), None);
        assert_eq!(
            apply(&mut r, c.t(60_000)),
            Some(status(&[("gw1", Up)], &[]))
        );
        assert_eq!(apply(&mut r, c.t(60_001)), None);
    }

    #[test]
    fn a_clean_stop_reports_itself_down_keeps_the_peers_and_drops_its_addresses() {
        let c = Clock::new();
        let mut r = Reporter::new("gw1", c.t(0));
        let o = Observation {
            floating_ips: vec![ip(A, true, None, 0), ip(B, false, Some(GW2), 3)],
            peers: vec![gw2(0)],
        };
        r.observe(c.t(0), &o);
        apply(&mut r, c.t(0));
        // A backoff in progress does not delay the last apply.
        r.observe(
            c.t(100),
            &Observation {
                peers: vec![gw2(100)],
                ..o.clone()
            },
        );
        assert!(r.due(c.t(100)).is_none());
        let released = vec![ip(A, false, None, 0), ip(B, false, Some(GW2), 3)];
        r.observe(
            c.t(150),
            &Observation {
                floating_ips: released,
                ..o.clone()
            },
        );
        assert!(r.due(c.t(150)).is_some());
        r.failed(c.t(160));
        r.stop(c.t(200));
        assert_eq!(
            apply(&mut r, c.t(200)),
            Some(status(&[("gw1", Down), ("gw2", Up)], &[(B, "gw2")]))
        );
        // Nothing observed after the stop changes it.
        r.observe(c.t(300), &o);
        assert_eq!(r.due(c.t(300)), None);
    }

    #[test]
    fn a_restarted_gateway_reports_only_what_it_knows_again() {
        let c = Clock::new();
        let mut before = Reporter::new("gw1", c.t(0));
        let o = Observation {
            floating_ips: vec![ip(A, true, None, 0)],
            peers: vec![gw2(0)],
        };
        before.observe(c.t(0), &o);
        apply(&mut before, c.t(0));
        // A new process: itself up, no address held yet, no peer named yet (so it applies
        // no key about gw2, which gw2 and its co-owners keep).
        let mut after = Reporter::new("gw1", c.t(5_000));
        assert_eq!(
            apply(&mut after, c.t(5_000)),
            Some(status(&[("gw1", Up)], &[]))
        );
        // gw2 holds A now, and its first heartbeat names it.
        after.observe(
            c.t(5_250),
            &Observation {
                floating_ips: vec![ip(A, false, Some(GW2), 1)],
                peers: vec![gw2(0)],
            },
        );
        assert_eq!(
            apply(&mut after, c.t(5_250)),
            Some(status(&[("gw1", Up), ("gw2", Up)], &[(A, "gw2")]))
        );
    }

    #[test]
    fn a_peer_named_like_this_gateway_is_ignored_and_renames_are_bounded() {
        let c = Clock::new();
        let mut r = Reporter::new("gw1", c.t(0));
        let peer = |name: String, silent_ms| PeerObservation {
            name: Some(name),
            primary: Some(GW2),
            silent: Some(Duration::from_millis(silent_ms)),
        };
        r.observe(
            c.t(0),
            &Observation {
                floating_ips: vec![],
                peers: vec![peer("gw1".into(), 0)],
            },
        );
        assert_eq!(r.wanted(), &status(&[("gw1", Up)], &[]));
        for i in 0..(MAX_PEERS as u64 + 10) {
            r.observe(
                c.t(i),
                &Observation {
                    floating_ips: vec![],
                    peers: vec![peer(format!("n{i}"), 0)],
                },
            );
        }
        assert_eq!(r.wanted().nodes.len(), MAX_PEERS + 1);
        assert!(!r.wanted().nodes.contains_key("n0"));
    }
}
