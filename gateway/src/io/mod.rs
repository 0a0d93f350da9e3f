//! Everything that touches a socket or the host: the receive and transmit batches, the
//! nftables guard that keeps the kernel out, interface facts, and the loop that drives the
//! pure [`Datapath`] with real frames and real time.

pub mod fastpath;
pub mod guard;
pub mod host;
pub mod kube;
pub mod packet;
pub mod sync;
pub mod vnet;
pub mod vrrp;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use smoltcp::time::Instant;

use crate::datapath::{Datapath, FastChange, Frame, Verdict};
use crate::status::SharedSnapshot;
use fastpath::FastPath;
use packet::{RxFrame, RxSocket, Tx};

/// How often the status snapshot is refreshed.
const PUBLISH_EVERY: StdDuration = StdDuration::from_millis(250);
/// The longest the loop sleeps, so that a stop request is noticed quickly.
const MAX_SLEEP_MS: i32 = 100;

/// What each peer gateway announced of its election over the authenticated sync: its
/// priority per VRID, believed until `fresh_until`. The sync thread writes it, the
/// election thread checks adverts against it ([`crate::election::Election::note_claims`]).
/// Only an authenticated sync writes it: an unauthenticated claim would let any host
/// silence a real peer's adverts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The peer's election address.
    pub peer: std::net::Ipv4Addr,
    pub fresh_until: Instant,
    /// `(vrid, priority)`.
    pub priorities: Vec<(u8, u8)>,
}

/// The peers' latest claims, shared between the sync and the election threads.
pub type SharedClaims = Arc<Mutex<Vec<Claim>>>;

/// A monotonic clock in the cores' time type, counted from a start every thread shares.
#[derive(Debug, Clone, Copy)]
pub struct Clock(std::time::Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(std::time::Instant::now())
    }

    pub fn now(&self) -> Instant {
        Instant::from_micros(self.0.elapsed().as_micros() as i64)
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// One worker's sockets: its share of the IPv4 frames, and for the leader the ARP frames.
pub struct Sockets {
    pub ipv4: RxSocket,
    pub arp: Option<RxSocket>,
    pub tx: Tx,
}

impl Sockets {
    fn receiving(&self) -> impl Iterator<Item = &RxSocket> {
        std::iter::once(&self.ipv4).chain(self.arp.as_ref())
    }
}

/// Runs one worker of the data path until `stop` is set: receive a batch of frames from
/// each of this worker's sockets, hand each to the shared core, send what it returns in one
/// batch. The core is locked once per batch, and only while it decides: the sends,
/// where the kernel does most of the work, run unlocked and in parallel across workers.
/// The `leader` (the worker with the ARP socket) also runs the timers and publishes the
/// status snapshot.
///
/// With a kernel fast path, the changes the core decides for it are written into its maps
/// while the core is locked, so they reach the kernel in the order they were decided.
pub fn run(
    dp: Arc<Mutex<Datapath>>,
    mut sockets: Sockets,
    stop: Arc<AtomicBool>,
    snapshot: SharedSnapshot,
    fast: Result<Arc<Mutex<FastPath>>, String>,
    clock: Clock,
) -> std::io::Result<()> {
    let leader = sockets.arp.is_some();
    let mut batch = Batch {
        frames: Vec::with_capacity(4096),
        transmit: Vec::with_capacity(4096),
        generated: Vec::new(),
        changes: Vec::new(),
    };
    let mut published = std::time::Instant::now() - PUBLISH_EVERY;
    let mut counted_losses = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        if counted_losses.elapsed() >= PUBLISH_EVERY {
            // Each worker counts its own sockets' losses, before the leader publishes.
            let mut drops = 0;
            for rx in sockets.receiving() {
                drops += rx.take_drops()?;
            }
            if drops > 0 {
                lock(&dp).count_rx_buffer_drops(drops);
            }
            counted_losses = std::time::Instant::now();
        }
        let mut next_timer = now + smoltcp::time::Duration::from_millis(MAX_SLEEP_MS as u64);
        if leader {
            let mut core = lock(&dp);
            if now >= core.poll_at() {
                match &fast {
                    Ok(fast) => {
                        let fast = lock(fast);
                        core.poll_with(now, |flow| fast.last_seen(flow, now));
                    }
                    Err(_) => core.poll(now),
                }
                core.take_generated(&mut batch.generated);
            }
            if published.elapsed() >= PUBLISH_EVERY {
                let mut s = core.snapshot(now, wall_ms());
                match &fast {
                    Ok(fast) => {
                        let mut fast = lock(fast);
                        if let Err(e) = fast.configure(core.fast_config()) {
                            tracing::warn!(error = %format!("{e:#}"), "fast path settings not written");
                        }
                        report(&fast, core.offloaded(), &mut s);
                    }
                    Err(reason) => s.fast_path.reason = Some(reason.clone()),
                }
                if let Ok(mut shared) = snapshot.lock() {
                    *shared = s;
                }
                published = std::time::Instant::now();
            }
            next_timer = next_timer.min(core.poll_at());
            apply(&mut core, fast.as_deref().ok(), &mut batch.changes);
            drop(core);
            send(&dp, &mut sockets.tx, &[], &mut batch.generated);
        }
        let fast = fast.as_deref().ok();
        let mut received = false;
        if let Some(arp) = sockets.arp.as_mut() {
            received |= batch.serve(&dp, now, arp, &mut sockets.tx, fast);
        }
        received |= batch.serve(&dp, now, &mut sockets.ipv4, &mut sockets.tx, fast);
        if !received {
            let until = ((next_timer - now).total_millis() as i32).clamp(0, MAX_SLEEP_MS);
            match &sockets.arp {
                Some(arp) => packet::wait([&sockets.ipv4, arp], until)?,
                None => packet::wait([&sockets.ipv4], until)?,
            }
        }
    }
    Ok(())
}

/// A worker's buffers for one batch, kept from batch to batch.
struct Batch {
    frames: Vec<RxFrame>,
    transmit: Vec<(*mut u8, usize, crate::datapath::Offload)>,
    generated: Vec<crate::datapath::Generated>,
    changes: Vec<FastChange>,
}

impl Batch {
    /// Reads the frames waiting on `rx` (up to a batch), hands them to the core, and sends
    /// what it returns. Returns whether there were any.
    fn serve(
        &mut self,
        dp: &Mutex<Datapath>,
        now: Instant,
        rx: &mut RxSocket,
        tx: &mut Tx,
        fast: Option<&Mutex<FastPath>>,
    ) -> bool {
        if !rx.frames(&mut self.frames) {
            return false;
        }
        self.transmit.clear();
        {
            let mut core = lock(dp);
            core.count_frames_read(self.frames.len() as u64);
            for f in &self.frames {
                if f.wire_len + f.headroom > f.len {
                    core.count_truncated();
                    continue;
                }
                let Ok(offload) = vnet::parse(&f.vnet) else {
                    core.count_truncated();
                    continue;
                };
                // SAFETY: the frame lies in its own slot of the socket's buffer, which
                // the next `frames` call reuses, after this batch was sent.
                let buf = unsafe { std::slice::from_raw_parts_mut(f.buf, f.len) };
                let mut frame = Frame::new(buf, f.headroom);
                frame.offload = offload;
                if core.handle(now, &mut frame) == Verdict::Transmit {
                    // SAFETY: as above; the bytes stay put until the batch is sent.
                    let bytes = unsafe { f.buf.add(frame.start) };
                    self.transmit
                        .push((bytes, frame.end - frame.start, frame.offload));
                }
            }
            core.take_generated(&mut self.generated);
            apply(&mut core, fast, &mut self.changes);
        }
        send(dp, tx, &self.transmit, &mut self.generated);
        true
    }
}

/// Writes the fast path changes the core decided into the kernel's maps.
fn apply(core: &mut Datapath, fast: Option<&Mutex<FastPath>>, changes: &mut Vec<FastChange>) {
    core.take_fast_changes(changes);
    if let Some(fast) = fast
        && !changes.is_empty()
    {
        lock(fast).apply(changes);
    }
    changes.clear();
}

/// Adds the fast path's figures to a snapshot: its own, and its packets into the totals.
fn report(fast: &FastPath, flows: usize, s: &mut crate::status::Snapshot) {
    let stats = fast.stats();
    let f = &mut s.fast_path;
    f.enabled = true;
    f.flows = flows as u64;
    f.outbound.packets = stats.out_packets;
    f.outbound.bytes = stats.out_bytes;
    f.inbound.packets = stats.in_packets;
    f.inbound.bytes = stats.in_bytes;
    f.errors = stats.errors;
    f.install_failures = fast.install_failures;
    s.outbound.packets += stats.out_packets;
    s.outbound.bytes += stats.out_bytes;
    s.inbound.packets += stats.in_packets;
    s.inbound.bytes += stats.in_bytes;
}

/// Locks the shared core. A worker that panicked while holding it left it consistent
/// enough to count and send with (the panic itself stops the gateway).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends rewritten received frames and frames the core generated, then gives the generated
/// buffers back to the core for reuse.
fn send(
    dp: &Mutex<Datapath>,
    tx: &mut Tx,
    frames: &[(*mut u8, usize, crate::datapath::Offload)],
    generated: &mut Vec<crate::datapath::Generated>,
) {
    if frames.is_empty() && generated.is_empty() {
        return;
    }
    let mut failed = 0;
    for &(at, len, offload) in frames {
        // SAFETY: `at..at + len` lies in a receive slot not reused before this returns
        // (see `run`).
        let bytes = unsafe { std::slice::from_raw_parts(at, len) };
        failed += tx.push(bytes, &offload);
    }
    for g in generated.iter() {
        failed += tx.push(&g.frame, &g.offload);
    }
    failed += tx.flush();
    let mut core = lock(dp);
    for _ in 0..failed {
        core.count_tx_error();
    }
    core.recycle_generated(generated);
}
