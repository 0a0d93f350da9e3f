//! The flow sync's shell: one UDP socket on `[sync].listen`, and the loop that carries the
//! data path's changes to the pure [`Sync`] core and the peers' changes back.
//!
//! The loop wakes when a datagram arrives or the core has something due (a batch to flush
//! 10 ms after its first change, a retransmit, a heartbeat), and at least every
//! [`TICK`] to collect the data path's new changes.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use smoltcp::time::{Duration, Instant};

use super::{Clock, lock};
use crate::datapath::{Datapath, Export};
use crate::sync::{Change, MAX_DATAGRAM, Sync};

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

/// Runs the sync until `stop` is set.
pub fn run(
    mut sync: Sync,
    socket: UdpSocket,
    dp: Arc<Mutex<Datapath>>,
    stop: Arc<AtomicBool>,
    clock: Clock,
) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut applied = Vec::new();
    let mut exports = Vec::new();
    let mut full = Vec::new();
    let mut out = Vec::new();
    let mut send_errors = 0u64;
    let mut recv_errors = 0u64;
    let mut reported = clock.now();
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        for _ in 0..READ_BUDGET {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => sync.handle_datagram(now, from, &buf[..n], &mut applied),
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
            if applied.len() >= 4096 {
                apply(&dp, now, &mut applied);
            }
        }
        apply(&dp, now, &mut applied);
        let complete = {
            let mut core = lock(&dp);
            let complete = core.take_exports(&mut exports);
            for export in exports.drain(..) {
                sync.queue(now, export.into());
            }
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
            lock(&dp).note_sync(&sync, send_errors + recv_errors);
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

/// Applies what the peers sent.
fn apply(dp: &Mutex<Datapath>, now: Instant, applied: &mut Vec<Change>) {
    if applied.is_empty() {
        return;
    }
    let mut core = lock(dp);
    for change in applied.drain(..) {
        core.apply_peer(now, change.into());
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
