//! Everything that touches a socket or the host: the packet ring and transmit batches, the
//! nftables guard that keeps the kernel out, interface facts, and the loop that drives the
//! pure [`Datapath`] with real frames and real time.

pub mod guard;
pub mod host;
pub mod packet;
pub mod vnet;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration as StdDuration, SystemTime, UNIX_EPOCH};

use smoltcp::time::Instant;

use crate::datapath::{Datapath, Frame, Verdict};
use crate::status::SharedSnapshot;
use packet::{RxFrame, RxRing, Tx};

/// How often the status snapshot is refreshed.
const PUBLISH_EVERY: StdDuration = StdDuration::from_millis(250);
/// The longest the loop sleeps, so that a stop request is noticed quickly.
const MAX_SLEEP_MS: i32 = 100;

/// A monotonic clock in the data path's time type.
struct Clock(std::time::Instant);

impl Clock {
    fn now(&self) -> Instant {
        Instant::from_micros(self.0.elapsed().as_micros() as i64)
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Runs the data path until `stop` is set: receive a block of frames, hand each to the
/// core, send what it returns in one batch, give the block back.
pub fn run(
    mut dp: Datapath,
    mut rx: RxRing,
    mut tx: Tx,
    stop: Arc<AtomicBool>,
    snapshot: SharedSnapshot,
) -> std::io::Result<()> {
    let clock = Clock(std::time::Instant::now());
    let mut frames: Vec<RxFrame> = Vec::with_capacity(4096);
    let mut transmit: Vec<usize> = Vec::with_capacity(4096);
    let mut offloads = Vec::with_capacity(4096);
    let mut published = std::time::Instant::now() - PUBLISH_EVERY;
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        if now >= dp.poll_at() {
            dp.poll(now);
            send_generated(&mut dp, &mut tx);
        }
        if published.elapsed() >= PUBLISH_EVERY {
            let s = dp.snapshot(now, wall_ms());
            if let Ok(mut shared) = snapshot.lock() {
                *shared = s;
            }
            published = std::time::Instant::now();
        }
        if !rx.frames(&mut frames) {
            let until = (dp.poll_at() - now).total_millis() as i32;
            rx.wait(until.clamp(0, MAX_SLEEP_MS))?;
            continue;
        }
        transmit.clear();
        offloads.clear();
        for (i, f) in frames.iter().enumerate() {
            if f.wire_len + f.headroom > f.len {
                dp.count_truncated();
                continue;
            }
            let Ok(offload) = vnet::parse(&f.vnet) else {
                dp.count_truncated();
                continue;
            };
            // SAFETY: the frame lies inside the block we hold until `release`, and frames
            // of a block never overlap.
            let buf = unsafe { std::slice::from_raw_parts_mut(f.buf, f.len) };
            let mut frame = Frame::new(buf, f.headroom);
            frame.offload = offload;
            if dp.handle(now, &mut frame) == Verdict::Transmit {
                transmit.push(i);
                offloads.push((frame.start, frame.end, frame.offload));
            }
        }
        for (&i, &(start, end, offload)) in transmit.iter().zip(&offloads) {
            let f = &frames[i];
            // SAFETY: as above; the bytes stay put until the flush below.
            let bytes = unsafe { std::slice::from_raw_parts(f.buf.add(start), end - start) };
            let failed = tx.push(bytes, &offload);
            for _ in 0..failed {
                dp.count_tx_error();
            }
        }
        send_generated(&mut dp, &mut tx);
        rx.release();
    }
    Ok(())
}

/// Sends the frames the data path made itself, and everything queued before them.
fn send_generated(dp: &mut Datapath, tx: &mut Tx) {
    let mut failed = 0;
    for g in dp.generated() {
        failed += tx.push(&g.frame, &g.offload);
    }
    failed += tx.flush();
    for _ in 0..failed {
        dp.count_tx_error();
    }
    dp.clear_generated();
}
