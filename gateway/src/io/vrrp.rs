//! The election's shell: a raw IPv4 socket for protocol 112 and the loop that drives the
//! pure [`Election`] with real adverts and real time, and makes the [`Datapath`] follow it.
//!
//! Adverts leave with the header we write (`IP_HDRINCL`): the interface's primary address
//! as source, TTL 255 and DSCP CS6, to 224.0.0.18 (joined on the interface, never looped
//! back to ourselves) or to each of `[election].peers`. The kernel delivers adverts to this
//! socket with their IPv4 header, so the core checks the TTL itself, and, with
//! `[election].peers`, refuses adverts from any other source (the core got the peers).
//!
//! The data path follows the election as soon as any instance's state or master changes
//! ([`Election::generation`]), and a master that reasserts itself announces its address
//! again at once ([`Action::Reannounce`]).

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use smoltcp::time::{Duration, Instant};

use super::packet::{Tx, setsockopt};
use super::{Clock, SharedClaims, lock};
use crate::datapath::Datapath;
use crate::election::{Action, Election};
use crate::wire::vrrp::{MULTICAST_GROUP, PROTOCOL};

/// The longest the loop sleeps, so that a stop request is noticed quickly.
const MAX_SLEEP: Duration = Duration::from_millis(10);
/// How often the data path's view of the election is refreshed when nothing happens
/// (counters for the status).
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// A raw socket that sends and receives VRRP adverts on one interface.
pub struct VrrpSocket {
    fd: OwnedFd,
}

impl VrrpSocket {
    /// Opens the socket on `ifname`, joining 224.0.0.18 there when `multicast`.
    pub fn open(ifname: &str, ifindex: u32, multicast: bool) -> io::Result<VrrpSocket> {
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(PROTOCOL),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, libc::IPPROTO_IP, libc::IP_HDRINCL, &1i32)?;
        let name = ifname.as_bytes();
        // SAFETY: `name` is valid for its length.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.len() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mreqn = libc::ip_mreqn {
            imr_multiaddr: in_addr(MULTICAST_GROUP),
            imr_address: in_addr(Ipv4Addr::UNSPECIFIED),
            imr_ifindex: ifindex as i32,
        };
        setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn)?;
        setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &0i32)?;
        if multicast {
            setsockopt(&fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreqn)?;
        }
        Ok(VrrpSocket { fd })
    }

    /// Sends one whole IPv4 packet (header included) to `destination`.
    pub fn send(&self, destination: Ipv4Addr, packet: &[u8]) -> io::Result<()> {
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: in_addr(destination),
            sin_zero: [0; 8],
        };
        // SAFETY: `packet` and `to` are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::from_ref(&to).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one IPv4 packet, if one is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(r as usize))
    }

    /// Waits up to `timeout_ms` for a packet.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from_ne_bytes(a.octets()),
    }
}

/// Where adverts go and where they come from.
pub struct Advertising {
    /// The interface's primary address: the adverts' source.
    pub primary: Ipv4Addr,
    /// `[election].peers`; empty for multicast.
    pub peers: Vec<Ipv4Addr>,
    /// The peers' priorities as the authenticated sync announces them: an advert from a
    /// peer at another priority is refused. `None` without an authenticated sync.
    pub claims: Option<SharedClaims>,
}

impl Advertising {
    fn destinations(&self) -> &[Ipv4Addr] {
        if self.peers.is_empty() {
            std::slice::from_ref(&MULTICAST_GROUP)
        } else {
            &self.peers
        }
    }

    fn mode(&self) -> &'static str {
        if self.peers.is_empty() {
            "multicast"
        } else {
            "unicast"
        }
    }
}

/// Runs the election until `stop` is set, then leaves it: every address this gateway is
/// master of is handed over with a priority-0 advert, and released.
pub fn run(
    mut election: Election,
    socket: VrrpSocket,
    advertising: Advertising,
    dp: Arc<Mutex<Datapath>>,
    stop: Arc<AtomicBool>,
    clock: Clock,
    mut tx: Tx,
) -> io::Result<()> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 2048];
    let mut send_errors = 0u64;
    let mut followed = clock.now();
    let mut garps = Vec::new();
    let mut reannounce = Vec::new();
    election.start(followed);
    let mut generation = election.generation();
    // Makes the data path follow the election; a new master's first gratuitous ARP (or a
    // reasserting master's) leaves from here at once rather than at the data path's next
    // timer.
    let mut follow =
        |election: &Election, now: Instant, send_errors: u64, reannounce: &mut Vec<Ipv4Addr>| {
            let mut core = lock(&dp);
            core.follow(now, election);
            for address in reannounce.drain(..) {
                core.reannounce(now, address);
            }
            core.note_election_io(advertising.mode(), send_errors);
            core.announce(now);
            core.take_generated(&mut garps);
            drop(core);
            if !garps.is_empty() {
                let mut failed = 0;
                for g in &garps {
                    failed += tx.push(&g.frame, &g.offload);
                }
                failed += tx.flush();
                let mut core = lock(&dp);
                for _ in 0..failed {
                    core.count_tx_error();
                }
                core.recycle_generated(&mut garps);
            }
        };
    follow(&election, followed, send_errors, &mut reannounce);
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        if let Some(claims) = &advertising.claims {
            for c in lock(claims).iter() {
                election.note_claims(c.peer, c.fresh_until, &c.priorities);
            }
        }
        election.poll(now, &mut out);
        while let Some(n) = socket.recv(&mut buf)? {
            election.handle_packet(clock.now(), &buf[..n], &mut out);
        }
        let changed = carry_out(
            &mut out,
            &socket,
            &advertising,
            &mut send_errors,
            &mut reannounce,
        );
        let now = clock.now();
        if changed || election.generation() != generation || now >= followed + FOLLOW_EVERY {
            follow(&election, now, send_errors, &mut reannounce);
            followed = now;
            generation = election.generation();
        }
        let until = election
            .poll_at()
            .map_or(
                MAX_SLEEP,
                |at| if at > now { at - now } else { Duration::ZERO },
            )
            .min(MAX_SLEEP);
        socket.wait(until.total_millis() as i32)?;
    }
    let now = clock.now();
    election.shutdown(now, &mut out);
    carry_out(
        &mut out,
        &socket,
        &advertising,
        &mut send_errors,
        &mut reannounce,
    );
    follow(&election, now, send_errors, &mut reannounce);
    Ok(())
}

/// Sends the adverts among `actions`, collects the addresses to announce again into
/// `reannounce`, and empties `actions`. Returns whether the data path must follow now.
fn carry_out(
    actions: &mut Vec<(Ipv4Addr, Action)>,
    socket: &VrrpSocket,
    advertising: &Advertising,
    send_errors: &mut u64,
    reannounce: &mut Vec<Ipv4Addr>,
) -> bool {
    let mut changed = false;
    for (address, action) in actions.drain(..) {
        match action {
            Action::Advertise(advert) => {
                for &to in advertising.destinations() {
                    let packet = advert.emit_ipv4(advertising.primary, to);
                    if let Err(e) = socket.send(to, &packet) {
                        *send_errors += 1;
                        tracing::debug!(%address, %to, error = %e, "advert not sent");
                    }
                }
            }
            Action::Own => {
                tracing::info!(%address, "master: owning the address");
                changed = true;
            }
            Action::Release => {
                tracing::info!(%address, "backup: releasing the address");
                changed = true;
            }
            Action::Reannounce => {
                // At most once per advert interval, but during an attack that is often:
                // not worth a line each time.
                tracing::debug!(
                    %address,
                    "master: another gateway believed it was master; announcing the address again"
                );
                reannounce.push(address);
                changed = true;
            }
        }
    }
    changed
}
