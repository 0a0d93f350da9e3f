//! Long-lived traffic from the pod that a failover must not break, and the outside end of it.
//!
//! Every socket is made by a thread inside its namespace ([`NetNs::run`]) and bound to an
//! address of that namespace (the pod's, the outside server's), so the traffic goes only
//! where the lab's routes take it; the sockets are then driven from ordinary threads of this
//! process, which timestamp everything with [`SystemTime`] (CLOCK_REALTIME, the clock of
//! the packet captures).
//!
//! The TCP exchanges speak one protocol: each message is a sequence number (`u64`, big
//! endian), counting from 0 on each connection; the [`EchoServer`] checks that every number
//! is the next one and sends it back, and the client checks the echoes the same way. A
//! reset, a closed connection or a number out of place is recorded as an error on the side
//! that saw it, so data lost, duplicated or delivered to the wrong connection shows. Both
//! ends set `TCP_NODELAY`, as a messaging application would: segments sent while a
//! gateway is down are not held back behind an unacknowledged one, and after a takeover
//! the first new segment triggers the retransmission of what was lost.
//!
//! - [`Messenger`]: one connection sending every few milliseconds whatever the replies do,
//!   recording when each message went and each echo came.
//! - [`FlowSet`]: many connections, each a slow ping-pong (send, wait for the echo, pause).
//! - [`UdpFlows`]: UDP flows from the pod whose mapping the outside server learns, so that it
//!   can send first later (after a takeover).
//! - [`Ticker`]: small UDP datagrams at a high rate, so that a capture sees the first packet
//!   a new gateway forwards within a couple of milliseconds of its takeover.

use std::{
    collections::BTreeMap,
    io::{self, Read as _, Write as _},
    mem,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::NetNs;

/// How often blocked reads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Bytes per message: one sequence number.
const MESSAGE: usize = 8;

/// Locks a mutex, also when a panicking thread poisoned it (the data is plain records).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a read of one message ended.
enum Read {
    Message(u64),
    /// The stop flag was set.
    Stopped,
}

/// Reads one whole message, waiting as long as it takes unless `stop` is set. The stream
/// must have a read timeout (of [`POLL`]) so that `stop` is noticed.
fn read_message(stream: &mut TcpStream, stop: &AtomicBool) -> io::Result<Read> {
    let mut buffer = [0_u8; MESSAGE];
    let mut filled = 0;
    while filled < MESSAGE {
        match stream.read(&mut buffer[filled..]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed by the peer ({filled} bytes into a message)"),
                ));
            }
            Ok(n) => filled += n,
            Err(err) if idle(&err) => {
                // A message started is finished: the stop is for idle moments.
                if filled == 0 && stop.load(Ordering::Relaxed) {
                    return Ok(Read::Stopped);
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(Read::Message(u64::from_be_bytes(buffer)))
}

/// Whether a socket error only says that nothing happened before its timeout (or, on a
/// non-blocking socket, that nothing was there).
pub(crate) fn idle(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Writes one whole message unless `stop` is set first; returns whether it was written.
/// The stream must have a write timeout (of [`POLL`]): a connection stalled by a failover
/// fills its send buffer, and a blocked writer must still notice `stop`.
fn write_message(stream: &mut TcpStream, number: u64, stop: &AtomicBool) -> io::Result<bool> {
    let bytes = number.to_be_bytes();
    let mut written = 0;
    while written < MESSAGE {
        match stream.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(err) if idle(&err) => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(true)
}

/// Read and write timeouts of [`POLL`] and no Nagle delay.
fn set_timeouts(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(POLL))
}

fn describe(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionReset => format!("reset ({err})"),
        _ => err.to_string(),
    }
}

fn sockaddr(address: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

fn last_error(what: &str) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

/// A TCP connection from `local` to `remote`, made in the calling thread's namespace:
/// bound first (std cannot bind before connecting), connected within `timeout`.
fn connect_from(
    local: SocketAddrV4,
    remote: SocketAddrV4,
    timeout: Duration,
) -> io::Result<TcpStream> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(last_error("TCP socket"));
    }
    // SAFETY: a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let length = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let from = sockaddr(local);
    // SAFETY: `from` is valid for `length` bytes.
    if unsafe { libc::bind(socket.as_raw_fd(), (&raw const from).cast(), length) } < 0 {
        return Err(last_error(&format!("binding {local}")));
    }
    let to = sockaddr(remote);
    // SAFETY: `to` is valid for `length` bytes.
    let started = unsafe { libc::connect(socket.as_raw_fd(), (&raw const to).cast(), length) };
    if started < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(io::Error::new(
                err.kind(),
                format!("connecting {local} → {remote}: {err}"),
            ));
        }
    }
    let mut poll = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&raw mut poll, 1, millis) };
    if ready < 0 {
        return Err(last_error(&format!("connecting {local} → {remote}")));
    }
    if ready == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connecting {local} → {remote}: no answer within {timeout:?}"),
        ));
    }
    let stream = TcpStream::from(socket);
    if let Some(err) = stream.take_error()? {
        return Err(io::Error::new(
            err.kind(),
            format!("connecting {local} → {remote}: {err}"),
        ));
    }
    stream.set_nonblocking(false)?;
    set_timeouts(&stream)?;
    Ok(stream)
}

/// The outside end of the TCP exchanges: accepts connections and echoes every message,
/// checking that each is the next number of its connection. Stopped when dropped.
pub struct EchoServer {
    address: SocketAddrV4,
    shared: Arc<ServerShared>,
    listener: TcpListener,
    acceptor: Option<thread::JoinHandle<()>>,
}

#[derive(Default)]
struct ServerShared {
    stop: AtomicBool,
    accepted: AtomicU64,
    errors: Mutex<Vec<String>>,
    workers: Mutex<Vec<thread::JoinHandle<()>>>,
}

impl EchoServer {
    /// Listens on `address` in `ns`.
    ///
    /// # Errors
    ///
    /// When it cannot bind there.
    pub fn start(ns: &NetNs, address: SocketAddrV4) -> Result<Self> {
        let listener = ns
            .run(|| TcpListener::bind(address))?
            .with_context(|| format!("listening on {address} in {}", ns.name()))?;
        let shared = Arc::new(ServerShared::default());
        let acceptor = {
            let (listener, shared) = (listener.try_clone()?, Arc::clone(&shared));
            thread::Builder::new()
                .name(format!("echo {}", address.port()))
                .spawn(move || accept(&listener, &shared))?
        };
        Ok(Self {
            address,
            shared,
            listener,
            acceptor: Some(acceptor),
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddrV4 {
        self.address
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// What went wrong on its side so far: resets, numbers out of place.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.shared.errors).clone()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wakes the blocked accept; connections notice the flag within POLL.
        // SAFETY: shutdown on a descriptor this struct owns.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let workers = mem::take(&mut *lock(&self.shared.workers));
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn accept(listener: &TcpListener, shared: &Arc<ServerShared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        let Ok((stream, peer)) = listener.accept() else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let worker = {
            let shared = Arc::clone(shared);
            thread::spawn(move || echo(stream, peer, &shared))
        };
        lock(&shared.workers).push(worker);
    }
}

fn echo(mut stream: TcpStream, peer: SocketAddr, shared: &ServerShared) {
    let record =
        |message: String| lock(&shared.errors).push(format!("server, from {peer}: {message}"));
    if let Err(err) = set_timeouts(&stream) {
        record(err.to_string());
        return;
    }
    let mut expected = 0_u64;
    loop {
        match read_message(&mut stream, &shared.stop) {
            Ok(Read::Stopped) => return,
            Ok(Read::Message(number)) => {
                if number != expected {
                    record(format!("message {number} arrived where {expected} was due"));
                    return;
                }
                match write_message(&mut stream, number, &shared.stop) {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(err) => {
                        record(format!("echoing {number}: {}", describe(&err)));
                        return;
                    }
                }
                expected += 1;
            }
            // The client closes when it is done: not a failure of the path.
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return,
            Err(err) => {
                record(format!("after {expected} messages: {}", describe(&err)));
                return;
            }
        }
    }
}

/// One connection sending a message every `period` regardless of the echoes, recording
/// when each went and each echo came back.
pub struct Messenger {
    local: SocketAddrV4,
    stream: TcpStream,
    shared: Arc<MessengerShared>,
    writer: Option<thread::JoinHandle<()>>,
    reader: Option<thread::JoinHandle<()>>,
}

#[derive(Default)]
struct MessengerShared {
    stop_writing: AtomicBool,
    stop_reading: AtomicBool,
    sent: Mutex<Vec<SystemTime>>,
    echoed: Mutex<Vec<SystemTime>>,
    errors: Mutex<Vec<String>>,
}

impl Messenger {
    /// Connects from `local` in `ns` to `server` and starts sending every `period`.
    ///
    /// # Errors
    ///
    /// When the connection cannot be made.
    pub fn start(
        ns: &NetNs,
        local: SocketAddrV4,
        server: SocketAddrV4,
        period: Duration,
    ) -> Result<Self> {
        let stream = ns.run(|| connect_from(local, server, Duration::from_secs(5)))??;
        let shared = Arc::new(MessengerShared::default());
        let writer = {
            let (stream, shared) = (stream.try_clone()?, Arc::clone(&shared));
            thread::Builder::new()
                .name("messenger tx".into())
                .spawn(move || send_every(stream, period, &shared))?
        };
        let reader = {
            let (stream, shared) = (stream.try_clone()?, Arc::clone(&shared));
            thread::Builder::new()
                .name("messenger rx".into())
                .spawn(move || receive_echoes(stream, &shared))?
        };
        Ok(Self {
            local,
            stream,
            shared,
            writer: Some(writer),
            reader: Some(reader),
        })
    }

    /// Messages sent and echoes received so far.
    pub fn progress(&self) -> (usize, usize) {
        (
            lock(&self.shared.sent).len(),
            lock(&self.shared.echoed).len(),
        )
    }

    /// Whether an error was seen so far.
    pub fn failed(&self) -> bool {
        !lock(&self.shared.errors).is_empty()
    }

    /// Stops sending, waits up to `drain` for the echoes still due, and reports.
    pub fn finish(mut self, drain: Duration) -> MessengerReport {
        self.shared.stop_writing.store(true, Ordering::Relaxed);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline {
            let (sent, echoed) = self.progress();
            if echoed >= sent || self.failed() {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let ended = SystemTime::now();
        self.stop();
        let sent = lock(&self.shared.sent).clone();
        let echoed = lock(&self.shared.echoed).clone();
        let mut errors = lock(&self.shared.errors).clone();
        if errors.is_empty() && echoed.len() < sent.len() {
            errors.push(format!(
                "{} of {} messages not echoed within {drain:?} of the last one",
                sent.len() - echoed.len(),
                sent.len()
            ));
        }
        MessengerReport {
            local: self.local,
            sent,
            echoed,
            errors,
            ended,
        }
    }

    fn stop(&mut self) {
        self.shared.stop_writing.store(true, Ordering::Relaxed);
        self.shared.stop_reading.store(true, Ordering::Relaxed);
        for thread in [self.writer.take(), self.reader.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl Drop for Messenger {
    fn drop(&mut self) {
        self.stop();
    }
}

fn send_every(mut stream: TcpStream, period: Duration, shared: &MessengerShared) {
    let mut next = Instant::now();
    let mut number = 0_u64;
    while !shared.stop_writing.load(Ordering::Relaxed) {
        lock(&shared.sent).push(SystemTime::now());
        match write_message(&mut stream, number, &shared.stop_writing) {
            Ok(true) => {}
            Ok(false) => {
                // Stopped part-way: the message does not count as sent.
                lock(&shared.sent).pop();
                return;
            }
            Err(err) => {
                lock(&shared.sent).pop();
                lock(&shared.errors).push(format!("sending message {number}: {}", describe(&err)));
                return;
            }
        }
        number += 1;
        next += period;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            // Late (the machine was busy): keep the pace from now rather than burst.
            next = now;
        }
    }
}

fn receive_echoes(mut stream: TcpStream, shared: &MessengerShared) {
    let mut expected = 0_u64;
    loop {
        match read_message(&mut stream, &shared.stop_reading) {
            Ok(Read::Stopped) => return,
            Ok(Read::Message(number)) => {
                let at = SystemTime::now();
                if number != expected {
                    lock(&shared.errors)
                        .push(format!("echo {number} arrived where {expected} was due"));
                    return;
                }
                lock(&shared.echoed).push(at);
                expected += 1;
            }
            Err(err) => {
                lock(&shared.errors).push(format!("after {expected} echoes: {}", describe(&err)));
                return;
            }
        }
    }
}

/// What a [`Messenger`] saw.
#[derive(Debug, Clone)]
pub struct MessengerReport {
    pub local: SocketAddrV4,
    /// When each message was sent, by number.
    pub sent: Vec<SystemTime>,
    /// When each echo arrived, by number (echoes come in order or not at all).
    pub echoed: Vec<SystemTime>,
    /// Resets, closes, numbers out of place, echoes missing at the end.
    pub errors: Vec<String>,
    /// When it stopped waiting for echoes.
    pub ended: SystemTime,
}

impl MessengerReport {
    /// Every message echoed, in order, without a reset.
    pub fn survived(&self) -> bool {
        self.errors.is_empty() && !self.sent.is_empty() && self.echoed.len() == self.sent.len()
    }

    /// The longest time between two consecutive echoes; when echoes stopped for good
    /// (some never came), the time from the last one to the end counts as a gap too.
    pub fn longest_gap(&self) -> Duration {
        let between = self
            .echoed
            .windows(2)
            .filter_map(|pair| pair[1].duration_since(pair[0]).ok())
            .max()
            .unwrap_or_default();
        let last = self.echoed.last().or(self.sent.first());
        let trailing = match last {
            Some(last) if self.echoed.len() < self.sent.len() => {
                self.ended.duration_since(*last).unwrap_or_default()
            }
            _ => Duration::ZERO,
        };
        between.max(trailing)
    }

    /// From `at` to the echo of the first message sent after `at`: how long the
    /// conversation stood still because of what happened at `at`.
    pub fn first_echo_after(&self, at: SystemTime) -> Option<Duration> {
        let first = self.sent.iter().position(|sent| *sent > at)?;
        self.echoed.get(first)?.duration_since(at).ok()
    }
}

/// Many connections, each a ping-pong: send the next number, wait for its echo, pause
/// `period`, again. Stopped when dropped.
pub struct FlowSet {
    shared: Arc<FlowShared>,
    threads: Vec<thread::JoinHandle<()>>,
}

struct FlowShared {
    stop: AtomicBool,
    flows: Vec<Mutex<FlowState>>,
}

/// One connection of a [`FlowSet`].
#[derive(Debug, Clone)]
pub struct FlowState {
    pub local: SocketAddrV4,
    /// Echoes received.
    pub round_trips: u64,
    /// When the message of the last completed round trip was sent.
    pub last_completed: Option<SystemTime>,
    /// The reset, close or number out of place that ended it.
    pub error: Option<String>,
    /// When the last echo arrived.
    pub last_echo: Option<SystemTime>,
    /// The longest time between two echoes (the first counted from the first message)
    /// since the start or the last [`FlowSet::take_longest_gaps`].
    pub longest_gap: Duration,
}

impl FlowState {
    /// Whether it completed a round trip whose message was sent after `at`, without error.
    pub fn alive_after(&self, at: SystemTime) -> bool {
        self.error.is_none() && self.last_completed.is_some_and(|sent| sent > at)
    }
}

impl FlowSet {
    /// Connects from each of `locals` in `ns` to `server`, then starts the ping-pongs,
    /// spread evenly over `period`.
    ///
    /// # Errors
    ///
    /// When a connection cannot be made.
    pub fn start(
        ns: &NetNs,
        locals: &[SocketAddrV4],
        server: SocketAddrV4,
        period: Duration,
    ) -> Result<Self> {
        let streams = ns.run(|| {
            locals
                .iter()
                .map(|local| connect_from(*local, server, Duration::from_secs(5)))
                .collect::<io::Result<Vec<_>>>()
        })??;
        let shared = Arc::new(FlowShared {
            stop: AtomicBool::new(false),
            flows: locals
                .iter()
                .map(|local| {
                    Mutex::new(FlowState {
                        local: *local,
                        round_trips: 0,
                        last_completed: None,
                        error: None,
                        last_echo: None,
                        longest_gap: Duration::ZERO,
                    })
                })
                .collect(),
        });
        let count = u32::try_from(streams.len()).context("too many flows")?;
        let mut threads = Vec::with_capacity(streams.len());
        for (index, stream) in streams.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let offset = period * u32::try_from(index)? / count.max(1);
            let thread = thread::Builder::new()
                .name(format!("flow {index}"))
                .stack_size(64 * 1024)
                .spawn(move || ping_pong(stream, index, offset, period, &shared))?;
            threads.push(thread);
        }
        Ok(Self { shared, threads })
    }

    /// Every flow's state now.
    pub fn states(&self) -> Vec<FlowState> {
        self.shared
            .flows
            .iter()
            .map(|flow| lock(flow).clone())
            .collect()
    }

    /// Waits until every flow has either completed a round trip sent after `at` or failed,
    /// or until `deadline`; returns the states then.
    pub fn wait_all_after(&self, at: SystemTime, deadline: Instant) -> Vec<FlowState> {
        loop {
            let states = self.states();
            let settled = states
                .iter()
                .all(|state| state.error.is_some() || state.alive_after(at));
            if settled || Instant::now() >= deadline {
                return states;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Each flow's longest gap between echoes since the start or the last call, a gap
    /// still open (no echo since) counted up to now; then starts counting afresh (an open
    /// gap goes on counting from its last echo).
    pub fn take_longest_gaps(&self) -> Vec<Duration> {
        let now = SystemTime::now();
        self.shared
            .flows
            .iter()
            .map(|flow| {
                let mut state = lock(flow);
                let open = state
                    .last_echo
                    .and_then(|echo| now.duration_since(echo).ok())
                    .unwrap_or_default();
                mem::take(&mut state.longest_gap).max(open)
            })
            .collect()
    }

    /// Stops every flow and returns their final states.
    pub fn finish(mut self) -> Vec<FlowState> {
        self.stop();
        self.states()
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for FlowSet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sleeps `duration` in steps, returning early (false) when `stop` is set.
fn pause(duration: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + duration;
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        thread::sleep((until - now).min(POLL));
    }
}

fn ping_pong(
    mut stream: TcpStream,
    index: usize,
    offset: Duration,
    period: Duration,
    shared: &FlowShared,
) {
    let flow = &shared.flows[index];
    let fail = |message: String| lock(flow).error = Some(message);
    if !pause(offset, &shared.stop) {
        return;
    }
    let mut number = 0_u64;
    let started = SystemTime::now();
    loop {
        let sent = SystemTime::now();
        match write_message(&mut stream, number, &shared.stop) {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                fail(format!("sending message {number}: {}", describe(&err)));
                return;
            }
        }
        match read_message(&mut stream, &shared.stop) {
            Ok(Read::Stopped) => return,
            Ok(Read::Message(echo)) if echo == number => {
                let now = SystemTime::now();
                let mut state = lock(flow);
                state.round_trips += 1;
                state.last_completed = Some(sent);
                let gap = now
                    .duration_since(state.last_echo.unwrap_or(started))
                    .unwrap_or_default();
                state.longest_gap = state.longest_gap.max(gap);
                state.last_echo = Some(now);
            }
            Ok(Read::Message(echo)) => {
                fail(format!("echo {echo} arrived where {number} was due"));
                return;
            }
            Err(err) => {
                fail(format!("waiting for echo {number}: {}", describe(&err)));
                return;
            }
        }
        number += 1;
        if !pause(period, &shared.stop) {
            return;
        }
    }
}

/// UDP flows from the pod to an outside server, which learns each flow's translated
/// source (floating IP and NAT port) from its first datagram, so that it can later send
/// first to that mapping.
pub struct UdpFlows {
    pod: Vec<UdpSocket>,
    server: UdpSocket,
    mapped: Vec<SocketAddrV4>,
}

impl UdpFlows {
    /// Binds a socket to each of `locals` in `pod`, and the server to `server` in
    /// `outside`; each pod socket sends its index until the server has heard it (one
    /// datagram normally) and the server notes where it came from.
    ///
    /// # Errors
    ///
    /// When a socket cannot be bound, or the server hears nothing from a flow within
    /// `timeout`.
    pub fn open(
        pod: &NetNs,
        locals: &[SocketAddrV4],
        outside: &NetNs,
        server: SocketAddrV4,
        timeout: Duration,
    ) -> Result<Self> {
        let sockets = pod.run(|| {
            locals
                .iter()
                .map(UdpSocket::bind)
                .collect::<io::Result<Vec<_>>>()
        })??;
        let listener = outside.run(|| UdpSocket::bind(server))??;
        listener.set_read_timeout(Some(POLL))?;
        for socket in &sockets {
            socket.set_read_timeout(Some(POLL))?;
        }
        let mut mapped: Vec<Option<SocketAddrV4>> = vec![None; sockets.len()];
        let deadline = Instant::now() + timeout;
        while mapped.iter().any(Option::is_none) {
            ensure!(
                Instant::now() < deadline,
                "the outside server heard no datagram from the pod's UDP flows {:?} within \
                 {timeout:?}",
                mapped
                    .iter()
                    .zip(locals)
                    .filter(|(seen, _)| seen.is_none())
                    .map(|(_, local)| local.port())
                    .collect::<Vec<_>>()
            );
            for (index, socket) in sockets.iter().enumerate() {
                if mapped[index].is_none() {
                    socket.send_to(&flow_datagram(b'o', index), server)?;
                }
            }
            let listen_until = Instant::now() + Duration::from_millis(200);
            while Instant::now() < listen_until {
                let mut buffer = [0_u8; 64];
                match listener.recv_from(&mut buffer) {
                    Ok((len, SocketAddr::V4(from))) => {
                        if let Some(index) = parse_flow_datagram(&buffer[..len], b'o')
                            && index < mapped.len()
                        {
                            mapped[index] = Some(from);
                        }
                    }
                    Ok(_) => {}
                    Err(err) if idle(&err) => {}
                    Err(err) => return Err(err).context("the outside UDP server"),
                }
            }
        }
        Ok(Self {
            pod: sockets,
            server: listener,
            mapped: mapped.into_iter().flatten().collect(),
        })
    }

    /// Each flow's source as the outside server saw it: floating IP and NAT port.
    pub fn mapped(&self) -> &[SocketAddrV4] {
        &self.mapped
    }

    /// The pod's end of each flow.
    ///
    /// # Errors
    ///
    /// When a socket's address cannot be read.
    pub fn locals(&self) -> Result<Vec<SocketAddr>> {
        Ok(self
            .pod
            .iter()
            .map(UdpSocket::local_addr)
            .collect::<io::Result<_>>()?)
    }

    /// The outside server sends one datagram to each flow's mapping; returns, per flow,
    /// whether the pod's socket received it within `timeout`.
    ///
    /// # Errors
    ///
    /// When sending or receiving fails for another reason than silence.
    pub fn outside_sends_first(&self, timeout: Duration) -> Result<Vec<bool>> {
        for (index, to) in self.mapped.iter().enumerate() {
            self.server.send_to(&flow_datagram(b'i', index), to)?;
        }
        let deadline = Instant::now() + timeout;
        let mut received = vec![false; self.pod.len()];
        while Instant::now() < deadline && received.iter().any(|seen| !seen) {
            for (index, socket) in self.pod.iter().enumerate() {
                if received[index] {
                    continue;
                }
                let mut buffer = [0_u8; 64];
                match socket.recv_from(&mut buffer) {
                    Ok((len, _)) => {
                        received[index] = parse_flow_datagram(&buffer[..len], b'i') == Some(index);
                    }
                    Err(err) if idle(&err) => {}
                    Err(err) => bail!("the pod's UDP flow {index}: {err}"),
                }
            }
        }
        Ok(received)
    }
}

/// `egret <kind> <index>`.
fn flow_datagram(kind: u8, index: usize) -> Vec<u8> {
    let mut datagram = b"egret ".to_vec();
    datagram.push(kind);
    datagram.extend_from_slice(format!(" {index}").as_bytes());
    datagram
}

fn parse_flow_datagram(datagram: &[u8], kind: u8) -> Option<usize> {
    let rest = datagram.strip_prefix(b"egret ")?;
    let (&found, number) = rest.split_first()?;
    if found != kind {
        return None;
    }
    std::str::from_utf8(number.strip_prefix(b" ")?)
        .ok()?
        .parse()
        .ok()
}

/// A UDP datagram from the pod every `period` to a sink in the outside namespace (a bound
/// socket nobody reads: once its buffer is full the kernel drops the rest quietly, no ICMP
/// error). Stopped when dropped.
pub struct Ticker {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
    _sink: UdpSocket,
}

impl Ticker {
    /// Starts sending from `local` in `pod` to `sink` in `outside`.
    ///
    /// # Errors
    ///
    /// When a socket cannot be bound.
    pub fn start(
        pod: &NetNs,
        local: SocketAddrV4,
        outside: &NetNs,
        sink: SocketAddrV4,
        period: Duration,
    ) -> Result<Self> {
        let sink_socket = outside.run(|| UdpSocket::bind(sink))??;
        let socket = pod.run(|| UdpSocket::bind(local))??;
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            thread::Builder::new()
                .name("ticker".into())
                .spawn(move || {
                    let mut next = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let number = sent.fetch_add(1, Ordering::Relaxed);
                        // Refusals (no route for a moment) are part of what a failover does.
                        let _ = socket.send_to(&number.to_be_bytes(), sink);
                        next += period;
                        let now = Instant::now();
                        if next > now {
                            thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                })?
        };
        Ok(Self {
            stop,
            sent,
            thread: Some(thread),
            _sink: sink_socket,
        })
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// New flows from the pod at a steady rate, alternately UDP and TCP, each one message and
/// its echo, then closed: the load of short connections that keeps the gateways creating
/// and expiring NAT flows. The outside end is this struct's own: a UDP echo and a TCP echo
/// (one short-lived thread per connection, detached) on two ports of the outside host.
/// Stopped when dropped.
pub struct Churn {
    shared: Arc<ChurnShared>,
    threads: Vec<thread::JoinHandle<Result<()>>>,
}

#[derive(Default)]
struct ChurnShared {
    stop: AtomicBool,
    /// Every flow by when it began (or, left out, when it was due), and how it ended.
    log: Mutex<Vec<(SystemTime, Outcome)>>,
    /// When each worker's flow under way began.
    under_way: Mutex<BTreeMap<u32, SystemTime>>,
}

/// How one flow of a [`Churn`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    Failed,
    /// Left out: every worker was still waiting for a flow when it was due.
    Skipped,
}

/// What a [`Churn`] did with the flows due within some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChurnCounts {
    /// Flows begun.
    pub attempted: u64,
    /// Flows whose echo came back within [`Churn::FLOW_TIMEOUT`].
    pub completed: u64,
    /// Flows refused, reset or unanswered within it.
    pub failed: u64,
    /// Flows left out because every worker was busy waiting (the rate dipped).
    pub skipped: u64,
}

impl Churn {
    /// How long a flow waits for its echo.
    pub const FLOW_TIMEOUT: Duration = Duration::from_secs(1);
    /// Workers, each opening every sixteenth flow: a flow stalled by a failover holds up
    /// only its own worker, so that flows go on beginning through the outage.
    const WORKERS: u32 = 16;

    /// Starts the echoes on `udp_server` and `tcp_server` in `outside`, then `rate` new
    /// flows a second from `pod_address` (an ephemeral port each) in `pod` to them.
    ///
    /// # Errors
    ///
    /// When a server cannot bind or a thread cannot start.
    pub fn start(
        pod: &NetNs,
        pod_address: Ipv4Addr,
        outside: &NetNs,
        udp_server: SocketAddrV4,
        tcp_server: SocketAddrV4,
        rate: u32,
    ) -> Result<Self> {
        ensure!(rate > 0, "a churn of 0 flows a second");
        let shared = Arc::new(ChurnShared::default());
        let udp = outside.run(|| UdpSocket::bind(udp_server))??;
        udp.set_read_timeout(Some(POLL))?;
        let tcp = outside.run(|| TcpListener::bind(tcp_server))??;
        tcp.set_nonblocking(true)?;
        let mut threads = Vec::new();
        {
            let shared = Arc::clone(&shared);
            threads.push(thread::Builder::new().name("churn udp echo".into()).spawn(
                move || {
                    udp_echo(&udp, &shared);
                    Ok::<_, anyhow::Error>(())
                },
            )?);
        }
        {
            let shared = Arc::clone(&shared);
            threads.push(
                thread::Builder::new()
                    .name("churn tcp echo".into())
                    .spawn(move || tcp_echo(&tcp, &shared))?,
            );
        }
        let period = Duration::from_secs(1) / rate;
        let first = Instant::now();
        for worker in 0..Self::WORKERS {
            let shared = Arc::clone(&shared);
            let local = SocketAddrV4::new(pod_address, 0);
            let handle = pod.spawn(&format!("churn {worker}"), move || {
                open_flows(
                    worker,
                    local,
                    [udp_server, tcp_server],
                    first + period * worker,
                    period * Self::WORKERS,
                    &shared,
                );
            })?;
            threads.push(handle);
        }
        Ok(Self { shared, threads })
    }

    /// The flows due from `from` until `to`, by how they ended; those still under way
    /// count as neither completed nor failed (see [`Churn::wait_ended`]).
    pub fn counts(&self, from: SystemTime, to: SystemTime) -> ChurnCounts {
        let mut counts = ChurnCounts::default();
        for (_, outcome) in lock(&self.shared.log)
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
        {
            match outcome {
                Outcome::Completed => counts.completed += 1,
                Outcome::Failed => counts.failed += 1,
                Outcome::Skipped => counts.skipped += 1,
            }
        }
        let under_way = lock(&self.shared.under_way)
            .values()
            .filter(|at| **at >= from && **at < to)
            .count();
        counts.attempted = counts.completed + counts.failed + under_way as u64;
        counts
    }

    /// Waits until every flow begun before `before` has ended (within about
    /// [`Churn::FLOW_TIMEOUT`]).
    ///
    /// # Errors
    ///
    /// When one is still under way after `timeout`.
    pub fn wait_ended(&self, before: SystemTime, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while lock(&self.shared.under_way).values().any(|at| *at < before) {
            ensure!(
                Instant::now() < deadline,
                "a new flow begun before the end of the window still runs after {timeout:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Stops opening flows, lets those under way finish, and returns the counts of all.
    ///
    /// # Errors
    ///
    /// When a thread could not enter its namespace or failed.
    pub fn finish(mut self) -> Result<ChurnCounts> {
        self.stop()?;
        Ok(self.counts(SystemTime::UNIX_EPOCH, SystemTime::now()))
    }

    fn stop(&mut self) -> Result<()> {
        self.shared.stop.store(true, Ordering::Relaxed);
        let mut result = Ok(());
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => result = Err(err),
                Err(_) => result = Err(anyhow::anyhow!("a churn thread panicked")),
            }
        }
        result
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// One worker: a flow at `next`, then every `period`, alternately to each of `servers`
/// (UDP, TCP), until stopped.
fn open_flows(
    worker: u32,
    local: SocketAddrV4,
    servers: [SocketAddrV4; 2],
    mut next: Instant,
    period: Duration,
    shared: &ChurnShared,
) {
    let mut number = 0_u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            thread::sleep((next - now).min(POLL));
            continue;
        }
        let begun = SystemTime::now();
        lock(&shared.under_way).insert(worker, begun);
        let done = if number.is_multiple_of(2) {
            udp_flow(local, servers[0], number)
        } else {
            tcp_flow(local, servers[1])
        };
        let outcome = if done.is_ok() {
            Outcome::Completed
        } else {
            Outcome::Failed
        };
        lock(&shared.log).push((begun, outcome));
        lock(&shared.under_way).remove(&worker);
        number += 1;
        next += period;
        // Late by more than a period (a flow waited for its timeout): leave the missed
        // flows out rather than burst.
        let now = Instant::now();
        while next + period < now {
            let due = SystemTime::now() - (now - next);
            lock(&shared.log).push((due, Outcome::Skipped));
            next += period;
        }
    }
}

/// One UDP flow: a datagram and its echo.
fn udp_flow(local: SocketAddrV4, server: SocketAddrV4, number: u64) -> io::Result<()> {
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(Churn::FLOW_TIMEOUT))?;
    let message = number.to_be_bytes();
    socket.send_to(&message, server)?;
    let mut buffer = [0_u8; MESSAGE];
    let (len, _) = socket.recv_from(&mut buffer)?;
    if buffer[..len] == message {
        Ok(())
    } else {
        Err(io::Error::other("a wrong echo"))
    }
}

/// One TCP flow: connect, one message and its echo, close.
fn tcp_flow(local: SocketAddrV4, server: SocketAddrV4) -> io::Result<()> {
    let mut stream = connect_from(local, server, Churn::FLOW_TIMEOUT)?;
    stream.set_read_timeout(Some(Churn::FLOW_TIMEOUT))?;
    stream.set_write_timeout(Some(Churn::FLOW_TIMEOUT))?;
    stream.write_all(&7_u64.to_be_bytes())?;
    let mut buffer = [0_u8; MESSAGE];
    stream.read_exact(&mut buffer)?;
    if u64::from_be_bytes(buffer) == 7 {
        Ok(())
    } else {
        Err(io::Error::other("a wrong echo"))
    }
}

fn udp_echo(socket: &UdpSocket, shared: &ChurnShared) {
    let mut buffer = [0_u8; 64];
    while !shared.stop.load(Ordering::Relaxed) {
        if let Ok((len, from)) = socket.recv_from(&mut buffer) {
            let _ = socket.send_to(&buffer[..len], from);
        }
    }
}

/// Accepts until stopped; each connection echoes one message in a detached thread of its
/// own, which ends with it.
fn tcp_echo(listener: &TcpListener, shared: &ChurnShared) -> Result<()> {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, _)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Churn::FLOW_TIMEOUT))?;
                stream.set_write_timeout(Some(Churn::FLOW_TIMEOUT))?;
                thread::Builder::new()
                    .name("churn echo".into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let mut buffer = [0_u8; MESSAGE];
                        if stream.read_exact(&mut buffer).is_ok() {
                            let _ = stream.write_all(&buffer);
                        }
                    })?;
            }
            Err(err) if idle(&err) => thread::sleep(Duration::from_millis(5)),
            Err(err) => return Err(err).context("the churn's TCP echo"),
        }
    }
    Ok(())
}

/// `address:port`, for building endpoints.
pub fn endpoint(address: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(address, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn flow_datagrams_round_trip() {
        assert_eq!(
            parse_flow_datagram(&flow_datagram(b'o', 17), b'o'),
            Some(17)
        );
        assert_eq!(parse_flow_datagram(&flow_datagram(b'o', 17), b'i'), None);
        assert_eq!(parse_flow_datagram(b"egret o", b'o'), None);
        assert_eq!(parse_flow_datagram(b"other o 1", b'o'), None);
    }

    #[test]
    fn messenger_figures() {
        let report = MessengerReport {
            local: endpoint(Ipv4Addr::LOCALHOST, 1),
            sent: vec![at(0), at(10), at(20), at(30), at(40)],
            echoed: vec![at(1), at(11), at(305), at(306), at(307)],
            errors: Vec::new(),
            ended: at(400),
        };
        assert!(report.survived());
        assert_eq!(report.longest_gap(), Duration::from_millis(294));
        // Killed at 15: the first message after it is number 2 (sent at 20), echoed at 305.
        assert_eq!(
            report.first_echo_after(at(15)),
            Some(Duration::from_millis(290))
        );
        assert_eq!(report.first_echo_after(at(45)), None);

        let short = MessengerReport {
            echoed: vec![at(1)],
            ..report.clone()
        };
        assert!(!short.survived());
        // Echoes stopped after the first: the stall up to the end is the gap.
        assert_eq!(short.longest_gap(), Duration::from_millis(399));
        let reset = MessengerReport {
            errors: vec!["reset".into()],
            ..report
        };
        assert!(!reset.survived());
    }

    #[test]
    fn flows_are_alive_only_after_a_later_round_trip() {
        let mut state = FlowState {
            local: endpoint(Ipv4Addr::LOCALHOST, 1),
            round_trips: 3,
            last_completed: Some(at(100)),
            error: None,
            last_echo: Some(at(101)),
            longest_gap: Duration::ZERO,
        };
        assert!(state.alive_after(at(50)));
        assert!(!state.alive_after(at(100)));
        state.error = Some("reset".into());
        assert!(!state.alive_after(at(50)));
    }
}
