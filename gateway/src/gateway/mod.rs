//! The whole gateway as one pure state machine: the election of each floating IP, the
//! packet path, and the flow sync with the peers, driven by bytes and time alone.
//!
//! Three inputs, each with the current time:
//! - [`Gateway::handle_frame`]: a frame received on the interface (rewritten in place into
//!   the frame to send, as [`Datapath::handle`] does);
//! - [`Gateway::handle_advert`]: an IPv4 packet of protocol 112 (VRRP);
//! - [`Gateway::handle_sync_datagram`]: a UDP datagram on the sync port;
//!
//! and the timers: [`Gateway::poll`] runs what is due, [`Gateway::poll_at`] says when next.
//! What to do comes back as values in an [`Outbox`] ([`Gateway::take_output`]): frames for
//! the interface, adverts for the VRRP socket, datagrams for the sync socket, and changes
//! for the kernel fast path. The shell only carries them; it decides nothing.
//!
//! Inside, the parts talk directly:
//! - the election's decisions are carried out at once: `Own` makes the data path answer for
//!   the address and announce it, `Release` silences it, `Reannounce` sends a new burst of
//!   gratuitous ARP;
//! - the data path's flow changes go straight into the sync's queue, and the peers' changes
//!   come back into the data path's table, judged against what the election knows (a change
//!   from a gateway that is not the address's master is stale); at the end of a peer's
//!   full resync, the flows of the peer's addresses it did not mention are swept;
//! - with a sealed sync, each peer's authenticated claims of its priorities reach the
//!   election, which refuses adverts that contradict them.
//!
//! The status is assembled here from the three parts ([`Gateway::snapshot`]).

mod params;
#[cfg(test)]
mod sim;

use core::net::Ipv4Addr;
use std::net::SocketAddr;

use smoltcp::time::Instant;

use crate::datapath::{Datapath, FastChange, Frame, Generated, Setup, Verdict};
use crate::election::{self, Action, Election};
use crate::nat::{BuildError, Flow};
use crate::status;
use crate::sync::{Change, ResyncEdge, Sync};
use crate::wire::vrrp::MULTICAST_GROUP;
pub use params::Host;

/// What a gateway is made of.
#[derive(Debug, Clone)]
pub struct Params {
    /// The packet path's settings; its floating IPs are the election's too.
    pub setup: Setup,
    /// `[election].advert_interval`, in centiseconds.
    pub interval_centis: u16,
    pub preempt: bool,
    /// `[election].peers`: adverts go to each of them, and only theirs are accepted;
    /// empty for multicast (224.0.0.18).
    pub election_peers: Vec<Ipv4Addr>,
    /// The flow sync, when `[sync]` is set.
    pub sync: Option<crate::sync::Params>,
    /// Hand established flows to the kernel fast path.
    pub fast_path: bool,
}

impl Params {
    /// The election's instances, one per floating IP.
    fn instances(&self) -> Vec<election::Params> {
        self.setup
            .floating_ips
            .iter()
            .map(|f| election::Params {
                vrid: f.vrid,
                address: f.address,
                priority: f.priority,
                interval_centis: self.interval_centis,
                preempt: self.preempt,
                primary: self.setup.address,
            })
            .collect()
    }
}

/// What the gateway decided to send, for the shell to carry.
#[derive(Debug, Default)]
pub struct Outbox {
    /// Frames for the interface.
    pub frames: Vec<Generated>,
    /// Whole IPv4 packets (VRRP adverts) and the address each goes to.
    pub adverts: Vec<(Ipv4Addr, Vec<u8>)>,
    /// Sync datagrams and the peer each goes to.
    pub datagrams: Vec<(SocketAddr, Vec<u8>)>,
    /// Changes for the kernel fast path, in the order decided: apply them before the
    /// next output is taken.
    pub fast: Vec<FastChange>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
            && self.adverts.is_empty()
            && self.datagrams.is_empty()
            && self.fast.is_empty()
    }
}

/// The sync side: the protocol core and what the gateway adds around it.
struct Syncing {
    core: Sync,
    /// Datagrams are sealed with a key: the peers' claims can be believed.
    authenticated: bool,
    /// Errors the sync socket reported, as the shell counted them.
    socket_errors: u64,
    applied: Vec<Change>,
    changes: Vec<Change>,
}

/// One gateway: election, packet path and sync.
pub struct Gateway {
    election: Election,
    datapath: Datapath,
    sync: Option<Syncing>,
    out: Outbox,
    actions: Vec<(Ipv4Addr, Action)>,
    /// Adverts the kernel refused to send, as the shell counted them.
    advert_send_errors: u64,
    started: Instant,
    /// Scratch for the peers' claims.
    claims: Vec<(u8, u8)>,
    /// Each floating IP's master as last seen.
    masters: Vec<(Ipv4Addr, Option<Ipv4Addr>)>,
    /// What the gateway runs with, for a reload to compare against.
    params: Params,
    /// The simulation turns the sweep off to show that it catches the shell that never
    /// swept at the end of a peer's resync.
    #[cfg(test)]
    sweep: bool,
}

impl Gateway {
    /// A gateway at `now`, its instances started as backups (the election claims nothing
    /// for a whole Master_Down_Interval).
    pub fn new(params: Params, now: Instant) -> Result<Gateway, BuildError> {
        let kept = params.clone();
        let instances = params.instances();
        let mut datapath = Datapath::new(params.setup.clone(), now)?;
        if params.fast_path {
            datapath.enable_fast_path();
        }
        let sync = params.sync.map(|p| {
            datapath.enable_sync();
            let authenticated = p.keys.is_some();
            let mut core = Sync::new(p, now);
            let ours: Vec<[u8; 2]> = instances.iter().map(|i| [i.vrid, i.priority]).collect();
            core.set_claims(&ours);
            Syncing {
                core,
                authenticated,
                socket_errors: 0,
                applied: Vec::new(),
                changes: Vec::new(),
            }
        });
        let mut election = Election::new(instances, params.election_peers);
        election.start(now);
        Ok(Gateway {
            election,
            datapath,
            sync,
            out: Outbox::default(),
            actions: Vec::new(),
            advert_send_errors: 0,
            started: now,
            claims: Vec::new(),
            masters: Vec::new(),
            params: kept,
            #[cfg(test)]
            sweep: true,
        })
    }

    pub fn datapath(&self) -> &Datapath {
        &self.datapath
    }

    pub fn election(&self) -> &Election {
        &self.election
    }

    pub fn sync(&self) -> Option<&Sync> {
        self.sync.as_ref().map(|s| &s.core)
    }

    /// A frame received on the interface. As [`Datapath::handle`]: on
    /// [`Verdict::Transmit`] the frame was rewritten in place into the one to send.
    pub fn handle_frame(&mut self, now: Instant, frame: &mut Frame<'_>) -> Verdict {
        let verdict = self.datapath.handle(now, frame);
        self.stream_changes(now);
        verdict
    }

    /// A received IPv4 packet of protocol 112, header included.
    pub fn handle_advert(&mut self, now: Instant, packet: &[u8]) {
        self.election.handle_packet(now, packet, &mut self.actions);
        self.carry_out(now);
    }

    /// A datagram received on the sync port from `from`.
    pub fn handle_sync_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let Some(sync) = &mut self.sync else {
            return;
        };
        let heard = sync.core.counters().datagrams_received;
        sync.core
            .handle_datagram(now, from, bytes, &mut sync.applied);
        // A datagram that applied anything was fresh, so its sender's election address is
        // known; where a resync began or ended among its changes, the marks say.
        #[cfg(test)]
        let sweep = self.sweep;
        #[cfg(not(test))]
        let sweep = true;
        if let Some(peer) = sync.core.peer_primary(from) {
            let edge = |dp: &mut Datapath, election: &Election, edge| {
                resync_edge(dp, election, peer, edge, sweep);
            };
            let mut marks = sync.core.resync_marks().iter().peekable();
            for (i, change) in sync.applied.drain(..).enumerate() {
                while let Some(m) = marks.next_if(|m| m.at <= i) {
                    edge(&mut self.datapath, &self.election, m.edge);
                }
                let master = self.election.master_of(change.flow.egress);
                self.datapath.apply_peer(now, peer, master, change);
            }
            for m in marks {
                edge(&mut self.datapath, &self.election, m.edge);
            }
        }
        sync.applied.clear();
        if sync.authenticated && sync.core.counters().datagrams_received != heard {
            // The peers' priorities as they announced them, fresh for three heartbeats.
            let life = sync.core.heartbeat() * 3;
            for c in sync.core.peer_claims() {
                self.claims.clear();
                self.claims
                    .extend(c.priorities.iter().map(|[v, p]| (*v, *p)));
                self.election
                    .note_claims(c.primary, c.heard_at + life, &self.claims);
            }
        }
        self.answer_resync_requests(now);
    }

    /// Runs the timers due at `now`.
    pub fn poll(&mut self, now: Instant) {
        self.poll_with(now, |_| None);
    }

    /// [`poll`](Self::poll), where `fast_seen` tells when the kernel fast path last
    /// forwarded a packet of a flow it holds: such a flow expires only once idle there too.
    pub fn poll_with(&mut self, now: Instant, fast_seen: impl FnMut(&Flow) -> Option<Instant>) {
        self.election.poll(now, &mut self.actions);
        self.carry_out(now);
        self.follow_masters(now);
        if now >= self.datapath.poll_at() {
            self.datapath.poll_with(now, fast_seen);
        }
        self.stream_changes(now);
        self.answer_resync_requests(now);
        if let Some(sync) = &mut self.sync {
            sync.core.poll(now, &mut self.out.datagrams);
        }
    }

    /// When [`poll`](Self::poll) has work next.
    pub fn poll_at(&self) -> Instant {
        let mut at = self.datapath.poll_at();
        if let Some(t) = self.election.poll_at() {
            at = at.min(t);
        }
        if let Some(t) = self.sync.as_ref().and_then(|s| s.core.poll_at()) {
            at = at.min(t);
        }
        at
    }

    /// Leaves every election at `now`: each address this gateway is master of is handed
    /// over with a priority-0 advert, and released.
    pub fn shutdown(&mut self, now: Instant) {
        self.election.shutdown(now, &mut self.actions);
        self.carry_out(now);
        self.follow_masters(now);
    }

    /// Moves what the gateway decided since the last call into `out`, which must have
    /// been given back with [`recycle`](Self::recycle).
    pub fn take_output(&mut self, out: &mut Outbox) {
        debug_assert!(out.is_empty());
        self.datapath.take_generated(&mut out.frames);
        self.datapath.take_fast_changes(&mut out.fast);
        std::mem::swap(&mut self.out.adverts, &mut out.adverts);
        std::mem::swap(&mut self.out.datagrams, &mut out.datagrams);
    }

    /// Takes back an [`Outbox`] once carried, keeping its buffers for reuse; leaves it
    /// empty.
    pub fn recycle(&mut self, out: &mut Outbox) {
        self.datapath.recycle_generated(&mut out.frames);
        out.adverts.clear();
        out.datagrams.clear();
        out.fast.clear();
    }

    /// The shell's own counts: frames read, frames cut short, frames the kernel dropped
    /// for a full socket buffer, and frames, adverts and sync datagrams it could not send.
    pub fn count_io(&mut self, io: IoCounts) {
        let dp = &mut self.datapath;
        dp.count_frames_read(io.frames_read);
        for _ in 0..io.truncated {
            dp.count_truncated();
        }
        if io.rx_buffer_drops > 0 {
            dp.count_rx_buffer_drops(io.rx_buffer_drops);
        }
        for _ in 0..io.tx_errors {
            dp.count_tx_error();
        }
        self.advert_send_errors += io.advert_send_errors;
        if let Some(sync) = &mut self.sync {
            sync.socket_errors += io.sync_socket_errors;
        }
    }

    /// The kernel fast path's settings as they stand (they change with the next hop's MAC).
    pub fn fast_config(&self) -> egret_ebpf_common::gateway::Config {
        self.datapath.fast_config()
    }

    /// Carries out the election's decisions, and queues the gratuitous ARPs due (a new
    /// master's first leaves at once).
    fn carry_out(&mut self, now: Instant) {
        if self.actions.is_empty() {
            return;
        }
        let destinations: &[Ipv4Addr] = match self.election.peers() {
            [] => std::slice::from_ref(&MULTICAST_GROUP),
            peers => peers,
        };
        for (address, action) in self.actions.drain(..) {
            match action {
                Action::Advertise(advert) => {
                    for &to in destinations {
                        let packet = advert.emit_ipv4(self.params.setup.address, to);
                        self.out.adverts.push((to, packet));
                    }
                }
                Action::Own => {
                    tracing::info!(%address, "master: owning the address");
                    self.datapath.own(now, address);
                }
                Action::Release => {
                    tracing::info!(%address, "backup: releasing the address");
                    self.datapath.release(address);
                }
                Action::Reannounce => {
                    // At most once per advert interval, but during an attack that is
                    // often: not worth a line each time.
                    tracing::debug!(
                        %address,
                        "master: another gateway believed it was master; announcing the address again"
                    );
                    self.datapath.reannounce(now, address);
                }
            }
        }
        self.datapath.announce(now);
    }

    /// When an address's master becomes another gateway, asks it for its whole table: what
    /// this gateway holds of the address (copies from the previous master, or flows it
    /// translated itself while it believed it was master, in a split brain) must become
    /// exactly the new master's, which the sweep at the end of the resync makes it.
    fn follow_masters(&mut self, now: Instant) {
        let instances = self.election.instances();
        self.masters
            .retain(|(a, _)| instances.iter().any(|i| i.params().address == *a));
        for i in instances {
            let (address, master) = (i.params().address, i.master());
            match self.masters.iter_mut().find(|(a, _)| *a == address) {
                Some((_, seen)) if *seen == master => continue,
                Some((_, seen)) => *seen = master,
                None => self.masters.push((address, master)),
            }
            if let (Some(sync), Some(m)) = (&mut self.sync, master)
                && m != self.params.setup.address
            {
                sync.core.request_table(now, m);
            }
        }
    }

    /// Takes a reloaded configuration at `now`, without a restart and without touching
    /// the flows of addresses that stay: floating IPs added (as backups) or removed (a
    /// master first hands the address over with a priority-0 advert), priorities, advert
    /// interval and preemption, election and sync peers, allowed sources, the next hop,
    /// gratuitous ARP, NAT timeouts and sync keys. Refused, changing nothing, when it also
    /// changes what only a restart can: the keys named in the error.
    pub fn reconfigure(&mut self, now: Instant, params: Params) -> Result<(), Vec<String>> {
        let restart = needs_restart(&self.params, &params);
        if !restart.is_empty() {
            return Err(restart);
        }
        for f in &self.params.setup.floating_ips {
            if params
                .setup
                .floating_ips
                .iter()
                .all(|n| n.address != f.address)
            {
                self.election.remove(now, f.address, &mut self.actions);
            }
        }
        self.carry_out(now);
        self.datapath.reconfigure(now, &params.setup);
        self.election.set_peers(params.election_peers.clone());
        for instance in params.instances() {
            let known = self
                .election
                .instances()
                .iter()
                .any(|i| i.params().address == instance.address);
            if known {
                self.election.set_params(instance);
            } else {
                self.election.add(now, instance);
            }
        }
        if let (Some(sync), Some(p)) = (&mut self.sync, &params.sync) {
            sync.authenticated = p.keys.is_some();
            sync.core.set_keys(p.keys.clone());
            sync.core.set_peers(now, &p.peers);
            let ours: Vec<[u8; 2]> = params
                .setup
                .floating_ips
                .iter()
                .map(|f| [f.vrid, f.priority])
                .collect();
            sync.core.set_claims(&ours);
        }
        self.follow_masters(now);
        self.params = params;
        Ok(())
    }

    /// Streams the data path's new flow changes to the peers.
    fn stream_changes(&mut self, now: Instant) {
        let Some(sync) = &mut self.sync else {
            return;
        };
        if !self.datapath.has_changes() {
            return;
        }
        self.datapath.take_changes(&mut sync.changes);
        for change in sync.changes.drain(..) {
            sync.core.queue(now, change);
        }
    }

    /// Streams the whole table to each peer that asked for it (or lost changes): the
    /// flows of the addresses this gateway owns as a resync, the nodes as live records
    /// (a node record is idempotent).
    fn answer_resync_requests(&mut self, now: Instant) {
        let Some(sync) = &mut self.sync else {
            return;
        };
        let mut any = false;
        while let Some(peer) = sync.core.wants_full_table() {
            sync.core
                .queue_resync(now, peer, self.datapath.export_flows(now));
            any = true;
        }
        if any {
            for node in self.datapath.export_nodes() {
                sync.core.queue(now, node);
            }
        }
    }

    /// What `/status` and `/metrics` show. `wall_ms` maps `now` to wall-clock time.
    pub fn snapshot(&self, now: Instant, wall_ms: u64) -> status::Snapshot {
        let to_wall = |t: Instant| wall_ms.saturating_sub((now - t).total_millis());
        let mut s = self.datapath.snapshot(now, wall_ms);
        for f in &mut s.floating_ips {
            let Some(i) = self
                .election
                .instances()
                .iter()
                .find(|i| i.params().address == f.address)
            else {
                continue;
            };
            let counters = i.counters();
            f.state = i.state().label().into();
            if !f.owned {
                f.master = i.master().map(|a| a.to_string()).unwrap_or_default();
            }
            f.master_address = i.master();
            f.priority = i.params().priority;
            f.last_transition_unix_ms = to_wall(i.last_transition().unwrap_or(self.started));
            f.transitions = counters.transitions;
            f.adverts_sent = counters.adverts_sent;
            f.adverts_received = counters.adverts_received;
        }
        s.election = status::ElectionStatus {
            mode: if self.election.peers().is_empty() {
                "multicast"
            } else {
                "unicast"
            }
            .into(),
            adverts_rejected: self
                .election
                .rejected()
                .map(|(e, n)| (e.label().to_string(), n))
                .collect(),
            adverts_unknown_vrid: self.election.unknown_vrid(),
            send_errors: self.advert_send_errors,
        };
        if let Some(sync) = &self.sync {
            s.sync = sync_status(sync, self.datapath.peer_counters_now());
        }
        s
    }

    /// The name this gateway reports.
    pub fn name(&self) -> &str {
        &self.params.setup.name
    }
}

/// What differs between `old` and `new` that only a restart can change.
fn needs_restart(old: &Params, new: &Params) -> Vec<String> {
    let (a, b) = (&old.setup, &new.setup);
    let mut keys: Vec<String> = [
        ("[gateway].name", a.name != b.name),
        ("[gateway].interface", a.interface != b.interface),
        (
            "the interface's address, MAC or MTU",
            (a.mac, a.address, a.prefix_len, a.mtu) != (b.mac, b.address, b.prefix_len, b.mtu),
        ),
        ("[gateway].fast_path", old.fast_path != new.fast_path),
        ("[tunnel].port", a.tunnel_port != b.tunnel_port),
        ("[tunnel].vni", a.vni != b.vni),
        ("[nat].port_range", a.nat.port_range != b.nat.port_range),
        ("[nat].max_flows", a.nat.max_flows != b.nat.max_flows),
        (
            "[nat].max_flows_per_pod",
            a.nat.max_flows_per_pod != b.nat.max_flows_per_pod,
        ),
        (
            "[sync] (added or removed)",
            old.sync.is_some() != new.sync.is_some(),
        ),
        (
            "[sync] name or address",
            old.sync.as_ref().map(|s| (&s.name, s.primary))
                != new.sync.as_ref().map(|s| (&s.name, s.primary))
                && old.sync.is_some() == new.sync.is_some(),
        ),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(key, _)| key.to_string())
    .collect();
    for f in &b.floating_ips {
        if let Some(o) = a.floating_ips.iter().find(|o| o.address == f.address)
            && o.vrid != f.vrid
        {
            keys.push(format!("the vrid of floating IP {}", f.address));
        }
    }
    keys
}

/// What the shell counted since it last told the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    pub frames_read: u64,
    pub truncated: u64,
    pub rx_buffer_drops: u64,
    pub tx_errors: u64,
    pub advert_send_errors: u64,
    pub sync_socket_errors: u64,
}

/// Where a peer's full resync begins, the data path notes the flows it mentions; where it
/// ends, the flows of the peer's addresses (those the election knows it is master of) it
/// did not mention go.
fn resync_edge(
    datapath: &mut Datapath,
    election: &Election,
    peer: Ipv4Addr,
    edge: ResyncEdge,
    sweep: bool,
) {
    match edge {
        ResyncEdge::Begin => datapath.peer_resync_begin(peer),
        ResyncEdge::End if !sweep => {}
        ResyncEdge::End => {
            let theirs: Vec<Ipv4Addr> = election
                .instances()
                .iter()
                .filter(|i| i.master() == Some(peer))
                .map(|i| i.params().address)
                .collect();
            datapath.peer_resync_end(peer, &theirs);
        }
    }
}

/// How the sync stands, for the status.
fn sync_status(sync: &Syncing, p: crate::datapath::PeerCounters) -> status::SyncStatus {
    let core = &sync.core;
    let c = core.counters();
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
    status::SyncStatus {
        enabled: true,
        peers: core
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
                name: core.peer_name(peer.address).map(str::to_owned),
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
        authenticated: sync.authenticated,
        previous_key: c.previous_key,
        drops,
        queue_overflow: c.queue_overflow,
        socket_errors: sync.socket_errors,
    }
}

#[cfg(test)]
mod tests;
