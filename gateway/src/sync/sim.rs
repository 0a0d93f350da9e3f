//! A deterministic simulation of gateways syncing flows: the real [`Sync`] of each gateway,
//! real datagram bytes, a virtual clock, and a network that delays, reorders, loses
//! (seeded) and partitions. Each gateway keeps a model flow table and applies what its
//! sync hands out as a shell would: only the changes of the master of the flows' egress
//! IPs, and sweeping what the master's full resync did not mention.

use core::net::Ipv4Addr;
use std::collections::BTreeMap;
use std::net::SocketAddr;

use smoltcp::time::{Duration, Instant};

use super::{Change, Op, Params, ResyncEdge, Sync};
use crate::nat::{Flow, FlowState, Proto};
use crate::testing::Rng;

/// A flow's inside key, ordered.
type Key = (u32, u32, u32, u32, u16, u16, u8);

fn key(f: &Flow) -> Key {
    (
        f.node.to_bits(),
        f.egress.to_bits(),
        f.pod.to_bits(),
        f.remote.to_bits(),
        f.pod_port,
        f.remote_port,
        f.proto.number(),
    )
}

#[derive(Clone, Copy)]
struct Entry {
    flow: Flow,
    remaining: Duration,
    /// The peer it was last learned from; `None` when changed here.
    origin: Option<SocketAddr>,
    /// The generation it was last written in (see [`Gateway::apply`]).
    generation: u64,
}

struct Gateway {
    address: SocketAddr,
    sync: Sync,
    table: BTreeMap<Key, Entry>,
    /// Bumped at each resync begin, so a sweep finds what a resync did not mention.
    generation: u64,
    /// Per peer, the generation its resync under way began in.
    resync_from: BTreeMap<SocketAddr, u64>,
    /// Every change applied from a peer, in order (resyncs included).
    log: Vec<(SocketAddr, Change)>,
    alive: bool,
}

impl Gateway {
    /// What a shell does with a received datagram's output.
    fn apply(&mut self, from: SocketAddr, applied: &[Change]) {
        let marks = self.sync.resync_marks().to_vec();
        let mut marks = marks.into_iter().peekable();
        for i in 0..=applied.len() {
            while let Some(m) = marks.next_if(|m| m.at == i) {
                match m.edge {
                    ResyncEdge::Begin => {
                        self.generation += 1;
                        self.resync_from.insert(from, self.generation);
                    }
                    ResyncEdge::End => {
                        if let Some(g) = self.resync_from.remove(&from) {
                            self.table
                                .retain(|_, e| e.origin != Some(from) || e.generation >= g);
                        }
                    }
                }
            }
            let Some(c) = applied.get(i) else { break };
            self.log.push((from, *c));
            match c.op {
                Op::Upsert => {
                    self.table.insert(
                        key(&c.flow),
                        Entry {
                            flow: c.flow,
                            remaining: c.remaining,
                            origin: Some(from),
                            generation: self.generation,
                        },
                    );
                }
                Op::Delete => {
                    self.table.remove(&key(&c.flow));
                }
                // Nodes are not flows: the simulation's tables hold flows only.
                Op::Node { .. } => {}
            }
        }
    }

    /// The table as the shell exports it for a resync.
    fn export(&self) -> Vec<(Flow, Duration)> {
        self.table.values().map(|e| (e.flow, e.remaining)).collect()
    }

    fn flows(&self) -> Vec<Flow> {
        self.table.values().map(|e| e.flow).collect()
    }
}

struct InFlight {
    at: Instant,
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

struct Net {
    gateways: Vec<Gateway>,
    in_flight: Vec<InFlight>,
    latency: Duration,
    /// Extra delay, uniform in 0..jitter: reorders datagrams.
    jitter: Duration,
    loss_per_mille: u64,
    /// `side[g]`: gateways reach each other only on the same side.
    side: Vec<u8>,
    /// Drops the next so many batches gateway 0 sends.
    drop_batches: usize,
    rng: Rng,
    now: Instant,
    /// Every change queued at each gateway, in order.
    queued: Vec<Vec<Change>>,
    /// When a change of gateway 0 was last applied by each gateway.
    last_applied_at: Vec<Option<Instant>>,
    epochs: u64,
    params: Params,
    /// The gateway that is master of every egress IP. The others apply only its changes,
    /// as the shell does: a peer's change is applied only when that peer owns the flow's
    /// egress IP, since a full table from anyone else may carry stale copies of flows it
    /// learned from the master.
    master: usize,
}

const LATENCY: Duration = Duration::from_micros(300);

fn address(g: usize) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(192, 168, 1, 11 + g as u8), 7946))
}

impl Net {
    /// `n` gateways, all started at time zero with `params` (epoch and peers filled in).
    fn new(n: usize, params: Params) -> Net {
        let mut net = Net {
            gateways: Vec::new(),
            in_flight: Vec::new(),
            latency: LATENCY,
            jitter: Duration::ZERO,
            loss_per_mille: 0,
            side: vec![0; n],
            drop_batches: 0,
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            now: Instant::ZERO,
            queued: vec![Vec::new(); n],
            last_applied_at: vec![None; n],
            epochs: 0,
            params,
            master: 0,
        };
        for g in 0..n {
            let sync = net.new_sync(g, n);
            net.gateways.push(Gateway {
                address: address(g),
                sync,
                table: BTreeMap::new(),
                generation: 0,
                resync_from: BTreeMap::new(),
                log: Vec::new(),
                alive: true,
            });
        }
        net
    }

    fn new_sync(&mut self, g: usize, n: usize) -> Sync {
        self.epochs += 1;
        let params = Params {
            // A different boot id at every start.
            epoch: 0x5eed_0000_0000 + self.epochs,
            peers: (0..n).filter(|p| *p != g).map(address).collect(),
            ..self.params.clone()
        };
        Sync::new(params, self.now)
    }

    /// Restarts gateway `g` with a new epoch and an empty table.
    fn restart(&mut self, g: usize) {
        self.in_flight.retain(|p| p.to != g);
        let n = self.gateways.len();
        let sync = self.new_sync(g, n);
        let gw = &mut self.gateways[g];
        gw.sync = sync;
        gw.table.clear();
        gw.resync_from.clear();
        gw.alive = true;
    }

    /// A local change at gateway `g`: its table first, then the stream.
    fn change(&mut self, g: usize, change: Change) {
        let gw = &mut self.gateways[g];
        match change.op {
            Op::Upsert => {
                gw.table.insert(
                    key(&change.flow),
                    Entry {
                        flow: change.flow,
                        remaining: change.remaining,
                        origin: None,
                        generation: gw.generation,
                    },
                );
            }
            Op::Delete => {
                gw.table.remove(&key(&change.flow));
            }
            Op::Node { .. } => {}
        }
        gw.sync.queue(self.now, change);
        self.queued[g].push(change);
    }

    /// `count` random changes at gateway `g`: creates, state changes, deletes.
    fn workload(&mut self, g: usize, count: usize, spread: Duration) {
        let step = spread / count.max(1) as u32;
        let mut keys: Vec<Key> = self.gateways[g].table.keys().copied().collect();
        for _ in 0..count {
            let roll = self.rng.below(10);
            let change = if keys.is_empty() || roll < 5 {
                let flow = self.random_flow();
                if self.gateways[g].table.contains_key(&key(&flow)) {
                    continue;
                }
                keys.push(key(&flow));
                Change {
                    op: Op::Upsert,
                    flow,
                    remaining: Duration::from_secs(240),
                }
            } else {
                let i = self.rng.below(keys.len() as u64) as usize;
                let Some(e) = self.gateways[g].table.get(&keys[i]).copied() else {
                    keys.swap_remove(i);
                    continue;
                };
                if roll < 8 {
                    let state = FlowState::ALL[1 + self.rng.below(7) as usize];
                    let flow = Flow {
                        state: if e.flow.proto == Proto::Tcp {
                            state
                        } else {
                            FlowState::Open
                        },
                        ..e.flow
                    };
                    Change {
                        op: Op::Upsert,
                        flow,
                        remaining: Duration::from_secs(7440),
                    }
                } else {
                    keys.swap_remove(i);
                    Change {
                        op: Op::Delete,
                        flow: e.flow,
                        remaining: Duration::ZERO,
                    }
                }
            };
            self.change(g, change);
            if step > Duration::ZERO {
                self.run_for(step);
            }
        }
    }

    fn random_flow(&mut self) -> Flow {
        let proto = [Proto::Tcp, Proto::Tcp, Proto::Udp, Proto::Icmp][self.rng.below(4) as usize];
        Flow {
            node: Ipv4Addr::new(10, 0, 1, 1 + self.rng.below(8) as u8),
            egress: Ipv4Addr::new(192, 168, 1, 100 + self.rng.below(3) as u8),
            pod: Ipv4Addr::from_bits(0x0af4_0000 | self.rng.below(1 << 16) as u32),
            remote: Ipv4Addr::from_bits(0x5db8_0000 | self.rng.below(1 << 16) as u32),
            pod_port: 1024 + self.rng.below(60_000) as u16,
            remote_port: if proto == Proto::Icmp { 0 } else { 443 },
            nat_port: 16384 + self.rng.below(49_152) as u16,
            proto,
            state: if proto == Proto::Tcp {
                FlowState::TcpSynSent
            } else {
                FlowState::Open
            },
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut same_instant = 0;
        loop {
            let next_packet = self.in_flight.iter().map(|p| p.at).min();
            let next_timer = self
                .gateways
                .iter()
                .filter(|g| g.alive)
                .filter_map(|g| g.sync.poll_at())
                .min()
                .map(|t| t.max(self.now));
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                break;
            };
            if next > end {
                break;
            }
            same_instant = if next == self.now {
                same_instant + 1
            } else {
                0
            };
            assert!(same_instant < 10_000, "no progress at {}", self.now);
            self.now = next;
            let mut due: Vec<InFlight> = Vec::new();
            let mut i = 0;
            while i < self.in_flight.len() {
                if self.in_flight[i].at <= next {
                    due.push(self.in_flight.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            due.sort_by_key(|p| p.at);
            for p in due {
                self.deliver(p);
            }
            for g in 0..self.gateways.len() {
                if self.gateways[g].alive {
                    self.answer_resyncs(g);
                    let mut out = Vec::new();
                    self.gateways[g].sync.poll(self.now, &mut out);
                    self.send(g, out);
                    let at = self.gateways[g].sync.poll_at();
                    assert!(at.is_none_or(|t| t > self.now), "gateway {g} still due");
                }
            }
        }
        self.now = end;
    }

    fn deliver(&mut self, p: InFlight) {
        if !self.gateways[p.to].alive {
            return;
        }
        let from = address(p.from);
        let gw = &mut self.gateways[p.to];
        let mut applied = Vec::new();
        gw.sync
            .handle_datagram(self.now, from, &p.bytes, &mut applied);
        if p.from == self.master {
            gw.apply(from, &applied);
        }
        if p.from == 0 && !applied.is_empty() {
            self.last_applied_at[p.to] = Some(self.now);
        }
        self.answer_resyncs(p.to);
    }

    fn answer_resyncs(&mut self, g: usize) {
        let gw = &mut self.gateways[g];
        while let Some(peer) = gw.sync.wants_full_table() {
            let flows = gw.export();
            gw.sync.queue_resync(self.now, peer, flows);
        }
    }

    fn send(&mut self, g: usize, out: Vec<(SocketAddr, Vec<u8>)>) {
        for (to, bytes) in out {
            let Some(to) = (0..self.gateways.len()).find(|t| address(*t) == to) else {
                panic!("datagram to {to}, not a gateway");
            };
            if self.side[to] != self.side[g] || self.rng.chance(self.loss_per_mille) {
                continue;
            }
            if g == 0 && self.drop_batches > 0 && bytes[5] == 1 {
                self.drop_batches -= 1;
                continue;
            }
            let jitter = if self.jitter > Duration::ZERO {
                Duration::from_micros(self.rng.below(self.jitter.total_micros()))
            } else {
                Duration::ZERO
            };
            self.in_flight.push(InFlight {
                at: self.now + self.latency + jitter,
                from: g,
                to,
                bytes,
            });
        }
    }

    /// Gateway `g`'s table equals gateway 0's.
    fn assert_same_table(&self, g: usize) {
        let a = self.gateways[0].flows();
        let b = self.gateways[g].flows();
        assert!(!a.is_empty());
        assert_eq!(a.len(), b.len(), "gateway {g} has another number of flows");
        assert!(a == b, "gateway {g} holds other flows than gateway 0");
    }

    /// The changes gateway `g` applied from gateway 0, in order.
    fn applied_from_0(&self, g: usize) -> Vec<Change> {
        self.gateways[g]
            .log
            .iter()
            .filter(|(from, _)| *from == address(0))
            .map(|(_, c)| *c)
            .collect()
    }
}

fn params() -> Params {
    Params::new(0, Vec::new())
}

fn started(n: usize, params: Params) -> Net {
    let mut net = Net::new(n, params);
    // Everyone asks everyone for a table and gets an empty one.
    net.run_for(Duration::from_millis(100));
    for g in &net.gateways {
        for p in g.sync.peers() {
            assert_eq!(p.resyncs_received, 1, "{} from {}", g.address, p.address);
            assert!(p.alive);
        }
    }
    net
}

fn resyncs_sent(net: &Net, from: usize, to: usize) -> u64 {
    net.gateways[from]
        .sync
        .peers()
        .find(|p| p.address == address(to))
        .map_or(0, |p| p.resyncs_sent)
}

#[test]
fn lossless_ten_thousand_changes_arrive_in_order_and_the_tables_match() {
    let mut net = started(2, params());
    net.workload(0, 10_000, Duration::from_secs(1));
    net.run_for(Duration::from_millis(100));
    net.assert_same_table(1);
    assert_eq!(net.applied_from_0(1), net.queued[0]);
    let b = net.gateways[1].sync.counters();
    assert_eq!(b.changes_received, 10_000);
    assert_eq!((b.nacks_sent, b.duplicates, b.out_of_order), (0, 0, 0));
    let a = net.gateways[0].sync.counters();
    assert_eq!(a.retransmits, 0);
    assert_eq!(a.changes_sent, 10_000);
    assert_eq!(resyncs_sent(&net, 0, 1), 1);
    // Batching at 10 changes per ms and 10 ms flushes: full batches, roughly.
    let batches = net.gateways[0].sync.peers().next().map(|p| p.last_sent_seq);
    assert!(batches.is_some_and(|n| n < 10_000 / 40 + 10), "{batches:?}");
    let status = net.gateways[0].sync.peers().next().expect("one peer");
    assert_eq!((status.queued_changes, status.lag), (0, Duration::ZERO));
}

#[test]
fn ten_percent_loss_with_reordering_ends_in_the_same_order_and_table() {
    let mut net = started(2, params());
    net.loss_per_mille = 100;
    // A batch every 2 ms or so, delays spread over 5 ms: reordered often.
    net.jitter = Duration::from_millis(5);
    net.workload(0, 10_000, Duration::from_millis(500));
    net.run_for(Duration::from_millis(500));
    net.loss_per_mille = 0;
    net.run_for(Duration::from_secs(3));
    net.assert_same_table(1);
    // No resync was needed: the stream itself arrived whole and in order.
    assert_eq!(resyncs_sent(&net, 0, 1), 1);
    assert_eq!(net.applied_from_0(1), net.queued[0]);
    let (a, b) = (
        net.gateways[0].sync.counters(),
        net.gateways[1].sync.counters(),
    );
    assert!(b.nacks_sent > 0 && a.nacks_received > 0);
    assert!(a.retransmits > 0);
    assert!(b.out_of_order > 0);
    // Late batches nacked before they arrived, then retransmitted too.
    assert!(b.duplicates > 0);
}

#[test]
fn a_lost_last_batch_is_recovered_at_the_next_heartbeat() {
    let mut net = started(2, params());
    net.workload(0, 100, Duration::ZERO);
    net.run_for(Duration::from_millis(50));
    net.assert_same_table(1);
    net.drop_batches = 1;
    let t = net.now;
    net.workload(0, 10, Duration::ZERO);
    net.run_for(Duration::from_millis(500));
    assert_ne!(net.gateways[0].flows(), net.gateways[1].flows());
    net.run_for(Duration::from_secs(1));
    net.assert_same_table(1);
    assert_eq!(net.applied_from_0(1), net.queued[0]);
    // Recovered after the heartbeat (1 s after the start) revealed the loss.
    let recovered = net.last_applied_at[1].expect("applied");
    assert!(recovered > t + Duration::from_millis(500), "{recovered}");
    assert_eq!(net.gateways[1].sync.counters().nacks_sent, 1);
    assert_eq!(net.gateways[0].sync.counters().retransmits, 1);
}

#[test]
fn a_partition_longer_than_the_ring_heals_by_a_full_resync_that_drops_deleted_flows() {
    let mut net = started(
        2,
        Params {
            ring: 8,
            ..params()
        },
    );
    net.workload(0, 1000, Duration::from_millis(200));
    net.run_for(Duration::from_millis(50));
    net.assert_same_table(1);
    net.side = vec![0, 1];
    net.workload(0, 2000, Duration::from_secs(2));
    net.run_for(Duration::from_secs(3));
    let peer = net.gateways[0].sync.peers().next().expect("peer");
    assert!(!peer.alive);
    // Flows B holds that A deleted meanwhile: the resync must take them away.
    let stale = net.gateways[1]
        .table
        .keys()
        .filter(|k| !net.gateways[0].table.contains_key(k))
        .count();
    assert!(stale > 100, "{stale}");
    net.side = vec![0, 0];
    // Some live changes while the resync runs.
    net.workload(0, 500, Duration::from_millis(500));
    net.run_for(Duration::from_secs(2));
    net.assert_same_table(1);
    assert_eq!(resyncs_sent(&net, 0, 1), 2);
    assert!(net.gateways[0].sync.peers().all(|p| p.alive));
}

#[test]
fn a_restarted_backup_gets_the_whole_table_even_while_changes_go_on() {
    // A slow resync (about 0.2 s for 4000 flows) so that live changes interleave with it,
    // deleting and changing flows the snapshot holds.
    let mut net = started(
        2,
        Params {
            resync_rate: 500,
            ..params()
        },
    );
    net.workload(0, 8000, Duration::from_millis(400));
    net.run_for(Duration::from_millis(50));
    net.assert_same_table(1);
    let snapshot = net.gateways[0].table.len() as u64;
    net.restart(1);
    net.workload(0, 3000, Duration::from_millis(500));
    net.run_for(Duration::from_secs(2));
    net.assert_same_table(1);
    // Some snapshot entries were left out: live changes had overtaken them.
    let in_resync = net.gateways[0].sync.counters().changes_sent - 11_000;
    assert!(in_resync < snapshot, "{in_resync} of {snapshot}");
    assert_eq!(resyncs_sent(&net, 0, 1), 2);
    let b = net.gateways[1].sync.peers().next().expect("peer");
    assert_eq!(b.resyncs_received, 1);
    assert_eq!(b.their_epoch, Some(net.gateways[0].sync.epoch()));
}

#[test]
fn a_restarted_master_takes_the_table_back_and_the_backup_follows_its_new_stream() {
    let mut net = started(2, params());
    net.workload(0, 3000, Duration::from_millis(300));
    net.run_for(Duration::from_millis(50));
    net.assert_same_table(1);
    let old_epoch = net.gateways[0].sync.epoch();
    // B takes over while A is away; A comes back and gets its flows from B, then takes
    // its addresses back.
    net.master = 1;
    net.restart(0);
    net.run_for(Duration::from_millis(100));
    net.assert_same_table(1);
    net.master = 0;
    assert_eq!(resyncs_sent(&net, 1, 0), 2);
    net.workload(0, 3000, Duration::from_millis(300));
    net.run_for(Duration::from_millis(100));
    net.assert_same_table(1);
    let b = net.gateways[1].sync.peers().next().expect("peer");
    assert_ne!(b.their_epoch, Some(old_epoch));
    assert_eq!(b.their_epoch, Some(net.gateways[0].sync.epoch()));
    assert_eq!(b.restarts, 1);
}

#[test]
fn three_gateways_one_cut_off_past_the_ring_only_that_one_is_resynced() {
    let mut net = started(
        3,
        Params {
            ring: 16,
            ..params()
        },
    );
    net.loss_per_mille = 20;
    net.jitter = Duration::from_millis(1);
    net.workload(0, 2000, Duration::from_millis(500));
    net.side = vec![0, 0, 1];
    net.workload(0, 2000, Duration::from_millis(500));
    net.run_for(Duration::from_secs(2));
    net.side = vec![0, 0, 0];
    net.workload(0, 1000, Duration::from_millis(200));
    net.loss_per_mille = 0;
    net.run_for(Duration::from_secs(3));
    net.assert_same_table(1);
    net.assert_same_table(2);
    assert_eq!(resyncs_sent(&net, 0, 1), 1);
    // One resync, even though it is larger than the ring and lossy: its batches are
    // rebuilt from the snapshot when nacked.
    assert_eq!(resyncs_sent(&net, 0, 2), 2);
    assert!(net.gateways[0].sync.counters().retransmits > 0);
    assert_eq!(net.applied_from_0(1), net.queued[0]);
}

#[test]
fn a_restarted_gateway_that_also_hears_a_stale_peer_ends_with_the_masters_table() {
    let mut net = started(
        3,
        Params {
            ring: 16,
            resync_rate: 2000,
            ..params()
        },
    );
    net.loss_per_mille = 100;
    net.jitter = Duration::from_millis(5);
    net.workload(0, 5000, Duration::from_millis(500));
    net.side = vec![0, 0, 1];
    net.workload(0, 3000, Duration::from_millis(300));
    // C missed a lot; B restarts just as C comes back, and gets the tables of both.
    net.side = vec![0, 0, 0];
    net.restart(1);
    net.workload(0, 3000, Duration::from_millis(300));
    net.loss_per_mille = 0;
    net.run_for(Duration::from_secs(5));
    net.assert_same_table(1);
    net.assert_same_table(2);
    let from_c = net.gateways[1]
        .sync
        .peers()
        .find(|p| p.address == address(2));
    assert_eq!(from_c.map(|p| p.resyncs_received), Some(1));
}
