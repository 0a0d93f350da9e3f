//! The election of each floating IP's owner: VRRPv3 (RFC 5798, IPv4), one virtual router
//! per `[[floating_ip]]` (its `vrid`), as a pure core.
//!
//! [`Election`] holds the instances of one gateway. The shell hands it every VRRP packet
//! received (whole IPv4 packets) and the time; it checks them ([`crate::wire::vrrp`]),
//! counts the refused ones by reason, dispatches the rest by VRID, runs the timers, and
//! returns what to do as [`Action`]s tagged with the floating IP they concern: send an
//! advert, own the address, release it, announce it again. It never touches a socket or a
//! clock, so a simulation of several gateways on a virtual clock drives the very same code.
//!
//! Before an advert reaches its instance (whose own rules are in [`instance`]), the
//! election refuses, each counted by reason:
//! - with `[election].peers` set, any advert whose source is not one of them
//!   ([`AdvertError::NotPeer`]); without peers (multicast) any host may advertise;
//! - while an authenticated claim from a peer is fresh ([`Election::note_claims`]), an
//!   advert from that peer's address for a VRID it claimed, with a priority other than 0
//!   and other than the claimed one ([`AdvertError::Unverified`]): whoever sent it, it was
//!   not that peer. Without a fresh claim, RFC 5798 as it stands.
//!
//! The gateway's core ([`crate::gateway`]) carries the actions out at once, and follows
//! each address's master ([`Election::master_of`]).

pub mod auto;
pub mod instance;

#[cfg(test)]
mod sim;

use core::net::Ipv4Addr;

use smoltcp::time::Instant;

pub use instance::{Action, Counters, Instance, Params, State};

use crate::wire::vrrp::{Advert, AdvertError};

/// The instances of one gateway, and what it refused.
#[derive(Debug, Clone)]
pub struct Election {
    instances: Vec<Instance>,
    /// `[election].peers`: the only sources accepted; empty accepts any (multicast).
    peers: Vec<Ipv4Addr>,
    /// The latest authenticated claim of each peer.
    claims: Vec<Claim>,
    rejected: [u64; AdvertError::ALL.len()],
    /// Well-formed adverts for a VRID this gateway does not run.
    unknown_vrid: u64,
    scratch: Vec<Action>,
}

/// What a peer announced, authenticated, about itself: its priority per VRID.
#[derive(Debug, Clone)]
struct Claim {
    peer: Ipv4Addr,
    fresh_until: Instant,
    priorities: Vec<(u8, u8)>,
}

impl Election {
    /// One instance per floating IP; VRIDs are unique (the configuration checks it).
    /// `peers` is `[election].peers`: when not empty, adverts from any other source are
    /// refused.
    pub fn new(params: Vec<Params>, peers: Vec<Ipv4Addr>) -> Election {
        Election {
            instances: params.into_iter().map(Instance::new).collect(),
            peers,
            claims: Vec::new(),
            rejected: [0; AdvertError::ALL.len()],
            unknown_vrid: 0,
            scratch: Vec::new(),
        }
    }

    /// `[election].peers`, as given.
    pub fn peers(&self) -> &[Ipv4Addr] {
        &self.peers
    }

    /// An authenticated claim (the flow sync's) that the gateway advertising from `peer`
    /// runs each `(vrid, priority)` of `priorities`, believed until `fresh_until`. It
    /// replaces that peer's previous claim. While it is fresh, an advert from `peer` for
    /// one of those VRIDs with another priority (other than 0, leaving) is refused as
    /// [`AdvertError::Unverified`]; VRIDs it does not list, and any advert once it is
    /// stale, are judged as RFC 5798 says.
    pub fn note_claims(&mut self, peer: Ipv4Addr, fresh_until: Instant, priorities: &[(u8, u8)]) {
        let claim = Claim {
            peer,
            fresh_until,
            priorities: priorities.to_vec(),
        };
        match self.claims.iter_mut().find(|c| c.peer == peer) {
            Some(c) => *c = claim,
            None => self.claims.push(claim),
        }
    }

    /// The priority `peer` claims for `vrid`, while its claim is fresh.
    fn claimed(&self, now: Instant, peer: Ipv4Addr, vrid: u8) -> Option<u8> {
        let claim = self.claims.iter().find(|c| c.peer == peer)?;
        if now >= claim.fresh_until {
            return None;
        }
        claim
            .priorities
            .iter()
            .find(|(v, _)| *v == vrid)
            .map(|(_, p)| *p)
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Adverts refused, by reason.
    pub fn rejected(&self) -> impl Iterator<Item = (AdvertError, u64)> + '_ {
        AdvertError::ALL
            .iter()
            .enumerate()
            .map(|(i, e)| (*e, self.rejected[i]))
    }

    pub fn unknown_vrid(&self) -> u64 {
        self.unknown_vrid
    }

    fn refuse(&mut self, e: AdvertError) {
        if let Some(k) = AdvertError::ALL.iter().position(|x| *x == e) {
            self.rejected[k] += 1;
        }
    }

    /// Whether this gateway owns `address` now.
    pub fn owns(&self, address: Ipv4Addr) -> bool {
        self.instances
            .iter()
            .any(|i| i.params().address == address && i.state() == State::Master)
    }

    /// The primary address of the master of floating IP `address`, when known (this
    /// gateway's own while it is master).
    pub fn master_of(&self, address: Ipv4Addr) -> Option<Ipv4Addr> {
        self.instances
            .iter()
            .find(|i| i.params().address == address)
            .and_then(Instance::master)
    }

    /// Replaces `[election].peers`.
    pub fn set_peers(&mut self, peers: Vec<Ipv4Addr>) {
        self.peers = peers;
    }

    /// Runs one more instance, started at `now` as a backup.
    pub fn add(&mut self, now: Instant, params: Params) {
        let mut instance = Instance::new(params);
        instance.start(now);
        self.instances.push(instance);
    }

    /// Stops running the instance of `address`: as master it hands over with a
    /// priority-0 advert and releases the address (in `out`).
    pub fn remove(&mut self, now: Instant, address: Ipv4Addr, out: &mut Vec<(Ipv4Addr, Action)>) {
        let Some(k) = self
            .instances
            .iter()
            .position(|i| i.params().address == address)
        else {
            return;
        };
        self.step(k, out, |i, actions| i.shutdown(now, actions));
        self.instances.remove(k);
    }

    /// Takes new settings for the instance of `params.address`, keeping its state.
    pub fn set_params(&mut self, params: Params) {
        if let Some(i) = self
            .instances
            .iter_mut()
            .find(|i| i.params().address == params.address)
        {
            i.set_params(params);
        }
    }

    /// Starts every instance (as backup).
    pub fn start(&mut self, now: Instant) {
        let mut out = Vec::new();
        for k in 0..self.instances.len() {
            self.step(k, &mut out, |i, _| i.start(now));
        }
    }

    /// Leaves every election: masters hand over with a priority-0 advert.
    pub fn shutdown(&mut self, now: Instant, out: &mut Vec<(Ipv4Addr, Action)>) {
        for k in 0..self.instances.len() {
            self.step(k, out, |i, actions| i.shutdown(now, actions));
        }
    }

    /// A received IPv4 packet of protocol 112.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut Vec<(Ipv4Addr, Action)>,
    ) {
        match Advert::parse_ipv4(packet) {
            Ok(r) => self.handle_advert(now, r.source, &r.advert, out),
            Err(e) => self.refuse(e),
        }
    }

    /// A checked advert from `source`.
    pub fn handle_advert(
        &mut self,
        now: Instant,
        source: Ipv4Addr,
        advert: &Advert,
        out: &mut Vec<(Ipv4Addr, Action)>,
    ) {
        if !self.peers.is_empty() && !self.peers.contains(&source) {
            self.refuse(AdvertError::NotPeer);
            return;
        }
        let Some(k) = self
            .instances
            .iter()
            .position(|i| i.params().vrid == advert.vrid)
        else {
            self.unknown_vrid += 1;
            return;
        };
        if advert.priority > 0
            && self
                .claimed(now, source, advert.vrid)
                .is_some_and(|p| p != advert.priority)
        {
            self.refuse(AdvertError::Unverified);
            return;
        }
        if let Err(e) = self.step(k, out, |i, actions| {
            i.handle_advert(now, source, advert, actions)
        }) {
            self.refuse(e);
        }
    }

    /// Runs the timers that are due.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<(Ipv4Addr, Action)>) {
        for k in 0..self.instances.len() {
            self.step(k, out, |i, actions| i.poll(now, actions));
        }
    }

    /// The next time [`poll`](Self::poll) has something to do.
    pub fn poll_at(&self) -> Option<Instant> {
        self.instances.iter().filter_map(Instance::poll_at).min()
    }

    /// Runs `f` on instance `k` and hands its actions out tagged with its address.
    fn step<R>(
        &mut self,
        k: usize,
        out: &mut Vec<(Ipv4Addr, Action)>,
        f: impl FnOnce(&mut Instance, &mut Vec<Action>) -> R,
    ) -> R {
        let instance = &mut self.instances[k];
        let r = f(instance, &mut self.scratch);
        let address = instance.params().address;
        out.extend(self.scratch.drain(..).map(|a| (address, a)));
        r
    }
}

#[cfg(test)]
mod tests {
    use smoltcp::time::Duration;

    use super::*;
    use crate::wire::vrrp::MULTICAST_GROUP;

    const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 12);
    const STRANGER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 40);
    const FLOATING: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);

    fn params() -> Params {
        Params {
            vrid: 10,
            address: FLOATING,
            priority: 100,
            interval_centis: 10,
            preempt: true,
            primary: ME,
        }
    }

    fn advert(priority: u8) -> Advert {
        Advert {
            vrid: 10,
            priority,
            interval_centis: 10,
            addresses: vec![FLOATING],
        }
    }

    fn at(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    fn refused(e: &Election, reason: AdvertError) -> u64 {
        e.rejected()
            .find(|(r, _)| *r == reason)
            .map_or(0, |(_, n)| n)
    }

    /// Every reason's count that is not 0.
    fn counted(e: &Election) -> Vec<(&'static str, u64)> {
        e.rejected()
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (r.label(), n))
            .collect()
    }

    /// A started election, master of the floating IP since 1 s.
    fn master(peers: Vec<Ipv4Addr>) -> (Election, Vec<(Ipv4Addr, Action)>) {
        let mut e = Election::new(vec![params()], peers);
        let mut out = Vec::new();
        e.start(at(0));
        e.poll(at(1000), &mut out);
        assert!(e.owns(FLOATING));
        out.clear();
        (e, out)
    }

    #[test]
    fn with_peers_adverts_from_any_other_source_are_refused_and_counted() {
        let (mut e, mut out) = master(vec![PEER]);
        // The stranger at the highest priority, a stretched interval, as real bytes.
        let stretched = Advert {
            interval_centis: 4095,
            ..advert(254)
        };
        let packet = stretched.emit_ipv4(STRANGER, MULTICAST_GROUP);
        e.handle_packet(at(1010), &packet, &mut out);
        // Unicast to us, or priority 0, or a VRID we do not run: the same.
        e.handle_packet(at(1020), &stretched.emit_ipv4(STRANGER, ME), &mut out);
        e.handle_advert(at(1030), STRANGER, &advert(0), &mut out);
        let other_vrid = Advert {
            vrid: 99,
            ..advert(254)
        };
        e.handle_advert(at(1040), STRANGER, &other_vrid, &mut out);
        assert!(e.owns(FLOATING));
        assert!(out.is_empty());
        assert_eq!(counted(&e), vec![("not_peer", 4)]);
        assert_eq!(e.unknown_vrid(), 0);
        assert_eq!(e.instances()[0].counters().adverts_received, 0);
        // The peer is heard: it takes over at a higher priority.
        e.handle_advert(at(1050), PEER, &advert(200), &mut out);
        assert!(!e.owns(FLOATING));
        assert_eq!(e.instances()[0].master(), Some(PEER));
        // Without peers (multicast) anyone is: the limit of that mode.
        let (mut open, mut out) = master(Vec::new());
        open.handle_packet(at(1010), &packet, &mut out);
        assert!(!open.owns(FLOATING));
        assert_eq!(open.instances()[0].master(), Some(STRANGER));
        assert_eq!(refused(&open, AdvertError::NotPeer), 0);
    }

    #[test]
    fn every_refusal_of_the_instances_is_counted_by_reason() {
        let (mut e, mut out) = master(vec![PEER]);
        let without = Advert {
            addresses: vec![Ipv4Addr::new(192, 168, 1, 101)],
            ..advert(254)
        };
        e.handle_advert(at(1010), PEER, &without, &mut out);
        assert!(e.owns(FLOATING));
        assert_eq!(counted(&e), vec![("address_mismatch", 1)]);
        // A backup, following PEER, told by another peer that the master leaves.
        let third = Ipv4Addr::new(192, 168, 1, 13);
        let mut b = Election::new(vec![params()], vec![PEER, third]);
        b.start(at(0));
        b.handle_advert(at(10), PEER, &advert(200), &mut out);
        b.handle_advert(at(20), third, &advert(0), &mut out);
        assert_eq!(counted(&b), vec![("zero_not_from_master", 1)]);
        assert_eq!(
            b.poll_at(),
            Some(at(10) + b.instances()[0].master_down_interval())
        );
        // Every reason is listed, the new ones too, from the start.
        let labels: Vec<&str> = b.rejected().map(|(r, _)| r.label()).collect();
        for label in [
            "not_peer",
            "address_mismatch",
            "unverified",
            "zero_not_from_master",
        ] {
            assert!(labels.contains(&label), "{labels:?}");
        }
    }

    #[test]
    fn a_fresh_claim_refuses_a_peers_adverts_at_another_priority() {
        let (mut e, mut out) = master(vec![PEER]);
        e.note_claims(PEER, at(5000), &[(10, 50), (11, 200)]);
        // Someone spoofs the peer at a priority that would make us yield.
        e.handle_advert(at(1010), PEER, &advert(254), &mut out);
        assert!(e.owns(FLOATING));
        assert_eq!(counted(&e), vec![("unverified", 1)]);
        assert!(out.is_empty());
        // At the claimed priority it is the peer (or as good as): accepted, and as it is
        // lower, we reassert.
        e.handle_advert(at(1020), PEER, &advert(50), &mut out);
        assert_eq!(counted(&e), vec![("unverified", 1)]);
        assert_eq!(out.last(), Some(&(FLOATING, Action::Reannounce)));
        out.clear();
        // Priority 0 cannot be claimed beforehand: never refused for it.
        e.handle_advert(at(1030), PEER, &advert(0), &mut out);
        assert_eq!(counted(&e), vec![("unverified", 1)]);
        // A new claim replaces the old one.
        e.note_claims(PEER, at(5000), &[(10, 254)]);
        e.handle_advert(at(1040), PEER, &advert(50), &mut out);
        assert_eq!(counted(&e), vec![("unverified", 2)]);
        // Once stale (at its fresh_until), RFC 5798 as it stands: the peer takes over.
        e.handle_advert(at(5000), PEER, &advert(200), &mut out);
        assert_eq!(counted(&e), vec![("unverified", 2)]);
        assert!(!e.owns(FLOATING));
        assert_eq!(e.instances()[0].master(), Some(PEER));
    }

    #[test]
    fn a_claim_covers_only_its_peer_and_its_vrids() {
        let (mut e, mut out) = master(Vec::new());
        // The claim lists another VRID only: this one is judged as the RFC says.
        e.note_claims(PEER, at(5000), &[(11, 50)]);
        e.handle_advert(at(1010), PEER, &advert(200), &mut out);
        assert!(!e.owns(FLOATING));
        // Another source is not bound by the peer's claim.
        let (mut e, mut out) = master(Vec::new());
        e.note_claims(PEER, at(5000), &[(10, 50)]);
        e.handle_advert(at(1010), STRANGER, &advert(200), &mut out);
        assert!(!e.owns(FLOATING));
        assert_eq!(counted(&e), vec![]);
    }

    #[test]
    fn the_master_of_an_address_follows_every_advert_that_names_a_new_one() {
        let mut e = Election::new(vec![params()], Vec::new());
        let mut out = Vec::new();
        e.start(at(0));
        assert_eq!(e.master_of(FLOATING), None);
        e.handle_advert(at(10), PEER, &advert(200), &mut out);
        assert_eq!(e.master_of(FLOATING), Some(PEER));
        // A lower gateway advertising: a preempting backup names it master without
        // re-arming its timer; the gateway's core asks that master for its table.
        let lower = Ipv4Addr::new(192, 168, 1, 13);
        let armed = e.poll_at();
        e.handle_advert(at(120), lower, &advert(50), &mut out);
        assert_eq!(e.poll_at(), armed);
        assert_eq!(e.master_of(FLOATING), Some(lower));
        // Refused adverts change nothing.
        let without = Advert {
            addresses: vec![],
            ..advert(254)
        };
        e.handle_advert(at(130), PEER, &without, &mut out);
        assert_eq!(e.master_of(FLOATING), Some(lower));
        // Its timer runs out: master, and its own master.
        let due = e.poll_at().expect("armed");
        e.poll(due, &mut out);
        assert!(e.owns(FLOATING));
        assert_eq!(e.master_of(FLOATING), Some(params().primary));
        assert!(due < at(120) + Duration::from_secs(1));
    }
}
