//! Everything that touches a socket or the host: the receive and transmit batches, the
//! VRRP and sync sockets, the nftables guard that keeps the kernel out, interface facts,
//! and the workers that carry bytes and time to the pure [`Gateway`] core and carry its
//! output back.

pub mod fastpath;
pub mod guard;
pub mod host;
pub mod kube;
pub mod packet;
pub mod reload;
pub mod sync;
pub mod vnet;
pub mod vrrp;

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use smoltcp::time::Instant;

use crate::datapath::{Frame, Offload, Verdict};
use crate::gateway::{Gateway, IoCounts, Outbox};
use crate::status::SharedSnapshot;
use fastpath::FastPath;
use packet::{RxFrame, RxSocket, Tx};
use vrrp::VrrpSocket;

/// How often the status snapshot is refreshed.
const PUBLISH_EVERY: StdDuration = StdDuration::from_millis(250);
/// The longest a worker sleeps, so that a stop request is noticed quickly.
const MAX_SLEEP_MS: i32 = 100;
/// Most adverts or sync datagrams read in one turn: a flood on either socket must not
/// starve the rest.
const READ_BUDGET: usize = 1024;
/// How often a busy leader looks for adverts and sync datagrams. An idle one waits on
/// their sockets and reads them as they arrive; one busy with frames would otherwise pay
/// two empty reads for every batch, most of a small batch's cost. At the shortest advert
/// interval (10 ms) this delays an advert by a tenth of it at most.
const CONTROL_EVERY: StdDuration = StdDuration::from_millis(1);

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

/// What every worker shares: the core, the sockets the core's output may go to, the
/// kernel fast path, and the published status.
pub struct Shell {
    pub core: Mutex<Gateway>,
    pub vrrp: VrrpSocket,
    pub sync: Option<UdpSocket>,
    /// The kernel fast path, or why there is none.
    pub fast: Result<Mutex<FastPath>, String>,
    pub snapshot: SharedSnapshot,
    pub clock: Clock,
    /// Set to stop the workers; a worker that fails sets it too.
    pub stop: AtomicBool,
}

/// One worker's sockets: its share of the IPv4 frames, its sender, and for the leader the
/// ARP frames, the adverts and the sync datagrams.
pub struct Sockets {
    pub ipv4: RxSocket,
    /// For the leader: the ARP frames.
    pub arp: Option<RxSocket>,
    pub tx: Tx,
}

/// Runs one worker until `shell.stop` is set: each turn it reads what waits on its
/// sockets, hands it to the core under one lock together with the timers due, takes the
/// core's output, and sends it unlocked (where the kernel does most of the work, in
/// parallel across workers). Any worker runs the core's timers when they are due; the
/// leader also reads ARP, adverts and sync datagrams, and publishes the status.
///
/// Changes for the kernel fast path are written into its maps while the core is locked,
/// so they reach the kernel in the order they were decided.
pub fn run(shell: &Shell, mut sockets: Sockets) -> std::io::Result<()> {
    let mut worker = Worker {
        frames: Vec::with_capacity(4096),
        transmit: Vec::with_capacity(4096),
        out: Outbox::default(),
        counts: IoCounts::default(),
        buf: vec![0u8; crate::sync::MAX_DATAGRAM + 1],
        adverts: Vec::new(),
        datagrams: Vec::new(),
    };
    let leader = sockets.arp.is_some();
    let mut published = std::time::Instant::now() - PUBLISH_EVERY;
    let mut counted_losses = std::time::Instant::now();
    // Whether the last wait saw an advert or a sync datagram, and when they were read.
    let mut control_ready = true;
    let mut control_read = std::time::Instant::now();
    while !shell.stop.load(Ordering::Relaxed) {
        // One reading of the clock for the turn's periodic chores.
        let started = std::time::Instant::now();
        if started - counted_losses >= PUBLISH_EVERY {
            // Each worker counts its own sockets' losses.
            worker.counts.rx_buffer_drops += sockets.ipv4.take_drops()?;
            if let Some(arp) = &sockets.arp {
                worker.counts.rx_buffer_drops += arp.take_drops()?;
            }
            counted_losses = started;
        }
        let mut received = false;
        if leader && (control_ready || started - control_read >= CONTROL_EVERY) {
            received |= worker.read_control(shell)?;
            control_read = started;
            control_ready = false;
        }
        if let Some(arp) = sockets.arp.as_mut() {
            received |= arp.frames(&mut worker.frames);
        }
        received |= sockets.ipv4.frames(&mut worker.frames);
        let next = worker.turn(shell, &mut sockets.tx);
        if leader && started - published >= PUBLISH_EVERY {
            publish(shell);
            published = started;
        }
        if !received {
            let now = shell.clock.now();
            let until = ((next - now).total_millis() as i32).clamp(0, MAX_SLEEP_MS);
            let frames =
                [Some(&sockets.ipv4), sockets.arp.as_ref()].map(|s| s.map(AsRawFd::as_raw_fd));
            let control = if leader {
                [
                    Some(shell.vrrp.as_raw_fd()),
                    shell.sync.as_ref().map(AsRawFd::as_raw_fd),
                ]
            } else {
                [None; 2]
            };
            control_ready = wait(frames, control, until)?;
        }
    }
    Ok(())
}

/// Carries what the core decided outside a worker's turn (a reload, the stop) from the
/// calling thread, at once.
pub fn carry(shell: &Shell, tx: &mut Tx) {
    let mut worker = Worker {
        frames: Vec::new(),
        transmit: Vec::new(),
        out: Outbox::default(),
        counts: IoCounts::default(),
        buf: Vec::new(),
        adverts: Vec::new(),
        datagrams: Vec::new(),
    };
    worker.turn(shell, tx);
    let mut core = lock(&shell.core);
    core.count_io(worker.counts);
    core.recycle(&mut worker.out);
}

/// A worker's buffers, kept from turn to turn.
struct Worker {
    /// Frames read and waiting for the core.
    frames: Vec<RxFrame>,
    /// The received frames to send back out, rewritten in place.
    transmit: Vec<(*mut u8, usize, Offload)>,
    /// The core's output being carried; given back at the next turn.
    out: Outbox,
    /// What this worker counted since it last told the core.
    counts: IoCounts,
    buf: Vec<u8>,
    /// Adverts and sync datagrams read and waiting for the core.
    adverts: Vec<Vec<u8>>,
    datagrams: Vec<(std::net::SocketAddr, Vec<u8>)>,
}

impl Worker {
    /// Reads the adverts and sync datagrams waiting (up to a budget each). Returns
    /// whether there were any.
    fn read_control(&mut self, shell: &Shell) -> std::io::Result<bool> {
        while self.adverts.len() < READ_BUDGET {
            let Some(n) = shell.vrrp.recv(&mut self.buf)? else {
                break;
            };
            self.adverts.push(self.buf[..n].to_vec());
        }
        if let Some(socket) = &shell.sync {
            while self.datagrams.len() < READ_BUDGET {
                match socket.recv_from(&mut self.buf) {
                    Ok((n, from)) => self.datagrams.push((from, self.buf[..n].to_vec())),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Errors a peer's ICMP reported (refused, unreachable): the core
                    // notices the silence on its own, and the sync goes on.
                    Err(e) => {
                        self.counts.sync_socket_errors += 1;
                        tracing::debug!(error = %e, "sync receive error");
                        break;
                    }
                }
            }
        }
        Ok(!self.adverts.is_empty() || !self.datagrams.is_empty())
    }

    /// One turn with the core locked once: give back what was carried last turn with its
    /// counts, hand over what was read, run the timers due, take the output (writing the
    /// fast path's changes); then, unlocked, send it. Returns when the core has work next.
    fn turn(&mut self, shell: &Shell, tx: &mut Tx) -> Instant {
        self.transmit.clear();
        let fast = shell.fast.as_ref().ok();
        let next = {
            let mut core = lock(&shell.core);
            core.recycle(&mut self.out);
            let now = shell.clock.now();
            for packet in self.adverts.drain(..) {
                core.handle_advert(now, &packet);
            }
            for (from, datagram) in self.datagrams.drain(..) {
                core.handle_sync_datagram(now, from, &datagram);
            }
            self.counts.frames_read += self.frames.len() as u64;
            for f in &self.frames {
                if f.wire_len + f.headroom > f.len {
                    self.counts.truncated += 1;
                    continue;
                }
                let Ok(offload) = vnet::parse(&f.vnet) else {
                    self.counts.truncated += 1;
                    continue;
                };
                // SAFETY: the frame lies in its own slot of the socket's buffer, which
                // the next `frames` call reuses, after this turn's sends.
                let buf = unsafe { std::slice::from_raw_parts_mut(f.buf, f.len) };
                let mut frame = Frame::new(buf, f.headroom);
                frame.offload = offload;
                if core.handle_frame(now, &mut frame) == Verdict::Transmit {
                    // SAFETY: as above; the bytes stay put until the turn's sends.
                    let bytes = unsafe { f.buf.add(frame.start) };
                    self.transmit
                        .push((bytes, frame.end - frame.start, frame.offload));
                }
            }
            core.count_io(std::mem::take(&mut self.counts));
            if now >= core.poll_at() {
                match fast {
                    Some(fast) => {
                        let fast = lock(fast);
                        core.poll_with(now, |flow| fast.last_seen(flow, now));
                    }
                    None => core.poll(now),
                }
            }
            core.take_output(&mut self.out);
            if let Some(fast) = fast
                && !self.out.fast.is_empty()
            {
                lock(fast).apply(&mut self.out.fast);
            }
            core.poll_at()
        };
        self.send(shell, tx);
        next
    }

    /// Sends the rewritten received frames and the core's output; counts what failed.
    fn send(&mut self, shell: &Shell, tx: &mut Tx) {
        if !self.transmit.is_empty() || !self.out.frames.is_empty() {
            let mut failed = 0;
            for &(at, len, offload) in &self.transmit {
                // SAFETY: `at..at + len` lies in a receive slot not reused before this
                // returns (see `turn`).
                let bytes = unsafe { std::slice::from_raw_parts(at, len) };
                failed += tx.push(bytes, &offload);
            }
            for g in &self.out.frames {
                failed += tx.push(&g.frame, &g.offload);
            }
            failed += tx.flush();
            self.counts.tx_errors += failed as u64;
        }
        for (to, packet) in &self.out.adverts {
            if let Err(e) = shell.vrrp.send(*to, packet) {
                self.counts.advert_send_errors += 1;
                tracing::debug!(%to, error = %e, "advert not sent");
            }
        }
        if let Some(socket) = &shell.sync {
            for (to, datagram) in &self.out.datagrams {
                if socket.send_to(datagram, to).is_err() {
                    self.counts.sync_socket_errors += 1;
                }
            }
        }
        self.frames.clear();
    }
}

/// Publishes the status snapshot, with the fast path's figures; writes the fast path's
/// settings as they stand.
fn publish(shell: &Shell) {
    let s = {
        let core = lock(&shell.core);
        let mut s = core.snapshot(shell.clock.now(), wall_ms());
        match &shell.fast {
            Ok(fast) => {
                let mut fast = lock(fast);
                if let Err(e) = fast.configure(core.fast_config()) {
                    tracing::warn!(error = %format!("{e:#}"), "fast path settings not written");
                }
                report(&fast, core.datapath().offloaded(), &mut s);
            }
            Err(reason) => s.fast_path.reason = Some(reason.clone()),
        }
        s
    };
    if let Ok(mut shared) = shell.snapshot.lock() {
        *shared = s;
    }
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

/// Locks a shared part. A worker that panicked while holding it left it consistent enough
/// to count and send with (the panic itself stops the gateway).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits up to `timeout_ms` for any of the frame and control sockets to be readable.
/// Returns whether a control socket (adverts, sync) is.
fn wait(
    frames: [Option<RawFd>; 2],
    control: [Option<RawFd>; 2],
    timeout_ms: i32,
) -> std::io::Result<bool> {
    // A negative descriptor is left out by poll(2).
    let fds = [frames[0], frames[1], control[0], control[1]];
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd: fd.unwrap_or(-1),
        events: libc::POLLIN | libc::POLLERR,
        revents: 0,
    });
    // SAFETY: `pfds` holds `pfds.len()` pollfds.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(pfds[2..].iter().any(|p| p.revents != 0))
}

/// Resolves once the workers have stopped by themselves (an I/O failure).
pub async fn stopped(shell: &Shell) {
    while !shell.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(StdDuration::from_millis(200)).await;
    }
}
