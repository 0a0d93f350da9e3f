//! The flow sync's shell: one UDP socket on `[sync].listen`, and the loop that carries the
//! data path's changes to the pure [`Sync`] core and the peers' changes back.
//!
//! The loop wakes when a datagram arrives or the core has something due (a batch to flush
//! 10 ms after its first change, a retransmit, a heartbeat), and at least every
//! [`TICK`] to collect the data path's new changes.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use smoltcp::time::{Duration, Instant};

use super::{Claim, Clock, SharedClaims, lock};
use crate::datapath::{Datapath, Export};
use crate::sync::{Change, MAX_DATAGRAM, ResyncEdge, ResyncMark, Sync};

/// The longest the loop sleeps: how late a local change may be collected.
const TICK: Duration = Duration::from_millis(5);
/// Most datagrams read before the loop turns to sending: a flood on the sync port must not
/// starve the stream to the peers.
const READ_BUDGET: usize = 1024;
/// How often the status is refreshed.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Binds the sync socket.
pub fn bind(listen: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(listen)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// What the peers' datagrams asked the data path to do, in order.
enum Step {
    /// A change from the peer with this election address.
    Change(Ipv4Addr, Change),
    /// That peer's full resync begins: the flows it mentions until its end are its table.
    ResyncBegin(Ipv4Addr),
    /// That peer's full resync ends: what it did not mention of its addresses goes.
    ResyncEnd(Ipv4Addr),
}

/// Runs the sync until `stop` is set. `claims`: where the peers' election claims go, when
/// the core seals with a key (`None` without one: they could be forged).
pub fn run(
    mut sync: Sync,
    socket: UdpSocket,
    dp: Arc<Mutex<Datapath>>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    claims: Option<SharedClaims>,
) -> io::Result<()> {
    let authenticated = claims.is_some();
    let mut ours = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut applied = Vec::new();
    let mut steps = Vec::new();
    let mut exports = Vec::new();
    let mut full = Vec::new();
    let mut out = Vec::new();
    let mut send_errors = 0u64;
    let mut recv_errors = 0u64;
    let mut reported = clock.now();
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        let heard = sync.counters().datagrams_received;
        for _ in 0..READ_BUDGET {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => {
                    sync.handle_datagram(now, from, &buf[..n], &mut applied);
                    collect(&sync, from, &mut applied, &mut steps);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Errors a peer's ICMP reported (refused, unreachable): the core notices the
                // silence on its own, and the sync goes on.
                Err(e) => {
                    recv_errors += 1;
                    tracing::debug!(error = %e, "sync receive error");
                    break;
                }
            }
            if steps.len() >= 4096 {
                apply(&dp, now, &mut steps);
            }
        }
        apply(&dp, now, &mut steps);
        if let Some(shared) = &claims
            && sync.counters().datagrams_received != heard
        {
            publish_claims(&sync, shared);
        }
        let complete = {
            let mut core = lock(&dp);
            let complete = core.take_exports(&mut exports);
            for export in exports.drain(..) {
                sync.queue(now, export.into());
            }
            // What the peers' heartbeats announce of this gateway's election.
            core.election_claims(&mut ours);
            sync.set_claims(&ours);
            // A peer that asked for the whole table, or all of them when changes were lost.
            let mut wanting: Vec<SocketAddr> =
                std::iter::from_fn(|| sync.wants_full_table()).collect();
            if !complete {
                wanting = sync.peers().map(|p| p.address).collect();
            }
            if !wanting.is_empty() {
                core.export_all(now, &mut full);
            }
            for &peer in &wanting {
                sync.queue_resync(now, peer, full.iter().filter_map(flow_of));
            }
            // The nodes follow as live changes (a resync carries flows), to every peer:
            // a node record is idempotent.
            if !wanting.is_empty() {
                for node in full.drain(..).filter(|e| matches!(e, Export::Node { .. })) {
                    sync.queue(now, node.into());
                }
            }
            full.clear();
            complete
        };
        if !complete {
            tracing::warn!("flow changes were lost before reaching the sync; resyncing every peer");
        }
        sync.poll(now, &mut out);
        for (to, datagram) in out.drain(..) {
            if socket.send_to(&datagram, to).is_err() {
                send_errors += 1;
            }
        }
        if now >= reported + REPORT_EVERY {
            lock(&dp).note_sync(&sync, authenticated, send_errors + recv_errors);
            reported = now;
        }
        let now = clock.now();
        let until = sync
            .poll_at()
            .map_or(TICK, |at| if at > now { at - now } else { Duration::ZERO })
            .min(TICK);
        wait(&socket, until)?;
    }
    Ok(())
}

/// Hands the peers' latest authenticated claims to the election, fresh for three
/// heartbeats after each arrived (as long as the peer counts as alive).
fn publish_claims(sync: &Sync, shared: &SharedClaims) {
    let latest: Vec<Claim> = sync
        .peer_claims()
        .map(|c| Claim {
            peer: c.primary,
            fresh_until: c.heard_at + sync.heartbeat() * 3,
            priorities: c.priorities.iter().map(|[v, p]| (*v, *p)).collect(),
        })
        .collect();
    let mut shared = lock(shared);
    if *shared != latest {
        *shared = latest;
    }
}

/// Turns what the core applied from one datagram of `from`, and where a resync began or
/// ended among it, into steps tagged with the peer's election address.
fn collect(sync: &Sync, from: SocketAddr, applied: &mut Vec<Change>, steps: &mut Vec<Step>) {
    let marks = sync.resync_marks();
    if applied.is_empty() && marks.is_empty() {
        return;
    }
    // A datagram that applied anything was fresh, so the peer's address is known.
    let Some(peer) = sync.peer_primary(from) else {
        applied.clear();
        return;
    };
    let edge = |m: &ResyncMark| match m.edge {
        ResyncEdge::Begin => Step::ResyncBegin(peer),
        ResyncEdge::End => Step::ResyncEnd(peer),
    };
    let mut marks = marks.iter().peekable();
    for (i, change) in applied.drain(..).enumerate() {
        while let Some(m) = marks.next_if(|m| m.at <= i) {
            steps.push(edge(m));
        }
        steps.push(Step::Change(peer, change));
    }
    steps.extend(marks.map(edge));
}

/// Applies what the peers sent.
fn apply(dp: &Mutex<Datapath>, now: Instant, steps: &mut Vec<Step>) {
    if steps.is_empty() {
        return;
    }
    let mut core = lock(dp);
    for step in steps.drain(..) {
        match step {
            Step::Change(peer, change) => core.apply_peer(now, peer, change.into()),
            Step::ResyncBegin(peer) => core.peer_resync_begin(peer),
            Step::ResyncEnd(peer) => core.peer_resync_end(peer),
        }
    }
}

fn flow_of(export: &Export) -> Option<(crate::nat::Flow, Duration)> {
    match *export {
        Export::Flow { flow, remaining } => Some((flow, remaining)),
        _ => None,
    }
}

fn wait(socket: &UdpSocket, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.total_millis() as i32) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
