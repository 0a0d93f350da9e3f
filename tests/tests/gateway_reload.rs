//! `systemctl reload` of two gateways under traffic (issue 18): both gateways of the agent
//! lab ([`egret_lab::AgentLab`]: flow sync sealed with a key, two floating IPs, agents and
//! pods) get a rewritten `gateway.toml` and a SIGHUP, one after the other as a rolling
//! reload does, while pods talk to the outside host every 10 ms through the floating IPs:
//!
//! 1. a floating IP is added: it shows on both, the higher priority owns it, the other is its
//!    backup, and a pod whose policy egresses there gets through;
//! 2. a file that does not check, and one that changes what only a restart can, are refused:
//!    the gateway says so in its log and goes on with the previous config;
//! 3. priorities are swapped so that the other gateway takes the second floating IP, whose
//!    connection carries on over the handover (flow sync);
//! 4. the sync key is rotated (the new key with the old one as `previous_key_file`, then
//!    the old one dropped): the sync keeps its peers, refuses nothing once both have the new
//!    key, and flows made after the rotation reach the backup;
//! 5. the added floating IP is removed again: its master hands it over with a priority-0
//!    advert and nobody takes it, nobody answers ARP or ping for it, the others carry on.
//!
//! Each reload is waited on by the gateway's log line (`config reloaded`, or `reload failed,
//! the previous config stays applied`) and then by `/status` snapshots taken after it
//! showing the new state. Throughout, two TCP connections and a UDP conversation through the
//! first floating IP, which no step touches, must lose nothing (the longest pause is
//! printed, not asserted), and neither gateway restarts (same process ids, uptime as long as
//! the test).
//!
//! Needs root and release binaries of the gateway and the agent (`EGRET_GATEWAY_BIN`,
//! `EGRET_AGENT_BIN`, or `cargo build --release -p egret-gateway -p egret-agent`).

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use egret_lab::{
    AgentLab, NetNs,
    egress::{
        AgentConfig, EGRESS_IP, FloatingIpEntry, GatewayGroup, LiveConnection, LiveReport, Member,
        Node, OUTSIDE_ADDRESS, Pod, Policy, ROUTER_ADDRESS, SECOND_EGRESS_IP,
    },
    ha::{
        COUNTERS_LAG, Capture, Frame, Mac, Snapshot, arp_request, format_mac, millis,
        one_lab_at_a_time, parse_mac,
    },
    require_root,
};

/// The floating IP the test adds and removes again (VRID 12, gw2 preferred).
const ADDED_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 102);
const ADDED_VRID: u8 = 12;
/// The log lines of a reload applied and of one refused (gateway/src/main.rs).
const APPLIED: &str = "config reloaded";
const REFUSED: &str = "reload failed, the previous config stays applied";
/// How long a gateway may take to log the outcome of a SIGHUP: it reads and checks one
/// small file; seconds on a loaded machine.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the status may take to show a reloaded state. An election change takes one
/// Master_Down_Interval (about 0.36 s at the lab's 100 ms adverts), a snapshot is
/// published every 250 ms, sync heartbeats go every second: 15 s is ample.
const STATE_TIMEOUT: Duration = Duration::from_secs(15);
/// A gateway answers an ARP request for an address it owns at once; a second without an
/// answer (to three requests) means nobody does.
const ARP_WINDOW: Duration = Duration::from_secs(1);
/// New flows made after the key rotation, per floating IP checked.
const NEW_FLOWS: u64 = 5;
/// Sync datagrams each gateway must receive between two counter readings for "the counter
/// stayed still" to mean something (a heartbeat goes every second, flow batches as flows
/// change).
const QUIET_DATAGRAMS: u64 = 3;
/// Adverts of a new master the router must hear before an election counts as settled:
/// after its second, any advert of the other gateway is a second master; the third
/// leaves an advert interval for one to show.
const SETTLED_ADVERTS: usize = 3;
/// How long finished connections may take to get their last echoes.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs one named step; a failure names it and adds the lab's evidence.
fn step<T>(
    lab: &mut AgentLab,
    name: &str,
    check: impl FnOnce(&mut AgentLab) -> Result<T>,
) -> Result<T> {
    egret_lab::step(lab, name, check, |lab, err| {
        anyhow!("step \"{name}\" failed: {err:#}\n{}", lab.evidence())
    })
}

// --- reloads ---------------------------------------------------------------------------

/// How a gateway took a SIGHUP, from its log.
#[derive(Debug)]
enum Outcome {
    /// Applied, with the line that says so.
    Applied(String),
    /// Refused, with what the gateway logged about it.
    Refused(String),
}

/// Sends SIGHUP to `member` and waits for the log line that says how it ended; returns it
/// and the instant the line was seen.
fn reload(lab: &mut AgentLab, member: Member) -> Result<(Outcome, SystemTime)> {
    let before = lab.gateway_log(member).len();
    lab.reload_gateway(member)?;
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    loop {
        lab.ensure_gateways_running()?;
        let log = lab.gateway_log(member);
        let new = log.get(before..).unwrap_or_default();
        if let Some(line) = new.lines().find(|line| line.contains(APPLIED)) {
            return Ok((Outcome::Applied(line.to_owned()), SystemTime::now()));
        }
        if new.contains(REFUSED) {
            return Ok((Outcome::Refused(new.to_owned()), SystemTime::now()));
        }
        ensure!(
            Instant::now() < deadline,
            "{} logged neither {APPLIED:?} nor {REFUSED:?} within {RELOAD_TIMEOUT:?} of its \
             SIGHUP; since then: {new}",
            member.name()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reloads `member`, which must apply `group` (written already): its log line lists
/// exactly the group's floating IPs. Returns when the line was seen.
fn reload_applied(lab: &mut AgentLab, member: Member, group: &GatewayGroup) -> Result<SystemTime> {
    let (line, at) = match reload(lab, member)? {
        (Outcome::Applied(line), at) => (line, at),
        (Outcome::Refused(log), _) => bail!("{} refused the reload:\n{log}", member.name()),
    };
    eprintln!(
        "   {}: {}",
        member.name(),
        line.get(line.find(APPLIED).unwrap_or(0)..).unwrap_or(&line)
    );
    let listed = logged_addresses(&line)
        .with_context(|| format!("{}: no floating_ips in {line:?}", member.name()))?;
    let (listed, wanted) = (sorted(listed), addresses_of(group));
    ensure!(
        listed == wanted,
        "{} reloaded with {listed:?}, the file has {wanted:?}",
        member.name()
    );
    Ok(at)
}

/// The group's floating IPs, sorted.
fn addresses_of(group: &GatewayGroup) -> Vec<Ipv4Addr> {
    sorted(group.floating_ips.iter().map(|ip| ip.address).collect())
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort_unstable();
    items
}

/// The addresses of the `floating_ips=[a, b]` field of a log line.
fn logged_addresses(line: &str) -> Option<Vec<Ipv4Addr>> {
    let list = line.split("floating_ips=[").nth(1)?.split(']').next()?;
    list.split(", ")
        .filter(|item| !item.is_empty())
        .map(|item| item.parse().ok())
        .collect()
}

/// Reloads `member`, which must refuse the file; returns what it logged.
fn reload_refused(lab: &mut AgentLab, member: Member) -> Result<(String, SystemTime)> {
    match reload(lab, member)? {
        (Outcome::Refused(log), at) => Ok((log, at)),
        (Outcome::Applied(_), _) => bail!("{} applied a file it should refuse", member.name()),
    }
}

/// Writes `group` for both gateways and reloads them one after the other in `order`, as a
/// rolling `systemctl reload`; returns when the last one logged that it applied it.
fn roll(lab: &mut AgentLab, group: &GatewayGroup, order: [Member; 2]) -> Result<SystemTime> {
    lab.write_gateway_configs(group)?;
    let mut at = SystemTime::now();
    for member in order {
        at = reload_applied(lab, member, group)?;
    }
    Ok(at)
}

// --- status ----------------------------------------------------------------------------

/// Both gateways' `/status`, gw1 first.
fn snapshots(lab: &AgentLab) -> Result<[Snapshot; 2]> {
    let [gw1, gw2] = Member::BOTH.map(|member| {
        lab.api_get(member, "/status")
            .and_then(|text| Snapshot::parse(&text))
    });
    Ok([gw1?, gw2?])
}

/// Polls both gateways' `/status` every 50 ms until a pair taken after `after` satisfies
/// `ready` (which says what is missing otherwise), and returns it.
///
/// # Errors
///
/// When none does within `timeout`: with the last reason and both gateways' floating IPs.
fn wait_both(
    lab: &mut AgentLab,
    what: &str,
    after: SystemTime,
    timeout: Duration,
    mut ready: impl FnMut(&[Snapshot; 2]) -> Result<(), String>,
) -> Result<[Snapshot; 2]> {
    let deadline = Instant::now() + timeout;
    loop {
        lab.ensure_gateways_running()?;
        let pair = snapshots(lab)?;
        let missing = if pair.iter().all(|s| s.taken > after) {
            ready(&pair)
        } else {
            Err("no snapshot newer than the action yet".to_owned())
        };
        match missing {
            Ok(()) => return Ok(pair),
            Err(reason) if Instant::now() >= deadline => bail!(
                "{what}: not within {timeout:?}: {reason}\n  gw1: {}\n  gw2: {}",
                pair[0].body["floating_ips"],
                pair[1].body["floating_ips"]
            ),
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One floating IP as a gateway's `/status` shows it: what a refused reload must leave as
/// it was.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shown {
    address: Ipv4Addr,
    vrid: u64,
    state: String,
    owned: bool,
    priority: u64,
    master_address: Option<Ipv4Addr>,
    transitions: u64,
}

/// The floating IPs of `snapshot`, in its order.
fn shown(snapshot: &Snapshot) -> Vec<Shown> {
    let list = snapshot.body["floating_ips"].as_array().cloned();
    list.unwrap_or_default()
        .iter()
        .filter_map(|ip| {
            let text = |key: &str| ip[key].as_str().unwrap_or_default().to_owned();
            Some(Shown {
                address: text("address").parse().ok()?,
                vrid: ip["vrid"].as_u64().unwrap_or(0),
                state: text("state"),
                owned: ip["owned"].as_bool().unwrap_or(false),
                priority: ip["priority"].as_u64().unwrap_or(0),
                master_address: text("master_address").parse().ok(),
                transitions: ip["transitions"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// The gateway with the higher priority for `ip`: its master once the election settled.
fn preferred(ip: &FloatingIpEntry) -> Member {
    if ip.priorities[0] > ip.priorities[1] {
        Member::Gw1
    } else {
        Member::Gw2
    }
}

/// Whether the pair shows `group` in force: on each gateway exactly the group's floating
/// IPs with its priorities, each owned by its preferred gateway and the other that one's
/// backup.
fn in_force(pair: &[Snapshot; 2], group: &GatewayGroup) -> Result<(), String> {
    for member in Member::BOTH {
        let listed = shown(&pair[member.index()]);
        let addresses = sorted(listed.iter().map(|ip| ip.address).collect());
        let wanted = addresses_of(group);
        if addresses != wanted {
            return Err(format!(
                "{} lists {addresses:?}, the config {wanted:?}",
                member.name()
            ));
        }
        for ip in &group.floating_ips {
            let master = preferred(ip);
            let Some(view) = listed.iter().find(|view| view.address == ip.address) else {
                continue;
            };
            let priority = u64::from(ip.priorities[member.index()]);
            let role_ok = if member == master {
                view.state == "master" && view.owned
            } else {
                view.state == "backup"
                    && !view.owned
                    && view.master_address == Some(master.address())
            };
            if view.priority != priority || !role_ok {
                return Err(format!(
                    "{} shows {view:?}; expected priority {priority}, {} master",
                    member.name(),
                    master.name()
                ));
            }
        }
    }
    Ok(())
}

/// Waits until both gateways show `group` in force in snapshots taken after `after`.
fn wait_in_force(
    lab: &mut AgentLab,
    group: &GatewayGroup,
    after: SystemTime,
) -> Result<[Snapshot; 2]> {
    wait_both(
        lab,
        "both gateways showing the reloaded config",
        after,
        STATE_TIMEOUT,
        |pair| in_force(pair, group),
    )
}

/// The live flows of `address` that `snapshot` counts (the master's own, the backup's
/// synced copies).
fn flows_of(snapshot: &Snapshot, address: Ipv4Addr) -> u64 {
    let list = snapshot.body["floating_ips"].as_array().cloned();
    list.unwrap_or_default()
        .iter()
        .find(|ip| ip["address"].as_str() == Some(&address.to_string()))
        .and_then(|ip| ip["flows"].as_u64())
        .unwrap_or(0)
}

/// Whether the first sync peer of each gateway is alive.
fn sync_alive(pair: &[Snapshot; 2]) -> Result<(), String> {
    for member in Member::BOTH {
        let peer = &pair[member.index()].body["sync"]["peers"][0];
        if peer["alive"].as_bool() != Some(true) {
            return Err(format!("{}'s sync peer: {peer}", member.name()));
        }
    }
    Ok(())
}

/// From snapshots that hold everything counted up to `after` (the last reload), waits
/// until each gateway has received [`QUIET_DATAGRAMS`] more sync datagrams with its peer
/// alive, and checks that neither refused one as unauthenticated nor opened one with the
/// previous key meanwhile: the sync runs on the current key alone.
fn sync_quiet(lab: &mut AgentLab, what: &str, after: SystemTime) -> Result<()> {
    let from = wait_both(
        lab,
        "counters after the reloads",
        after + COUNTERS_LAG,
        STATE_TIMEOUT,
        sync_alive,
    )?;
    let received = "/sync/received/datagrams";
    let now = wait_both(
        lab,
        what,
        from[0].taken.max(from[1].taken),
        STATE_TIMEOUT,
        |pair| {
            sync_alive(pair)?;
            match Member::BOTH
                .into_iter()
                .find(|m| pair[m.index()].grew(&from[m.index()], received) < QUIET_DATAGRAMS)
            {
                Some(member) => Err(format!(
                    "{} received fewer than {QUIET_DATAGRAMS} sync datagrams so far",
                    member.name()
                )),
                None => Ok(()),
            }
        },
    )?;
    for member in Member::BOTH {
        let (was, is) = (&from[member.index()], &now[member.index()]);
        let grown: Vec<(String, u64)> = is.grown(was, "/sync/drops");
        eprintln!(
            "   {}: {} sync datagrams received, drops grown {grown:?}, previous key used {} \
             times (total {})",
            member.name(),
            is.grew(was, received),
            is.grew(was, "/sync/previous_key"),
            is.count("/sync/previous_key")
        );
        ensure!(
            is.grew(was, "/sync/drops/auth") == 0,
            "{}: {what}: sync datagrams refused as unauthenticated: {grown:?}",
            member.name()
        );
        ensure!(
            is.grew(was, "/sync/previous_key") == 0,
            "{}: {what}: datagrams still opened with the previous key",
            member.name()
        );
    }
    Ok(())
}

// --- traffic ---------------------------------------------------------------------------

/// A UDP conversation from a pod to the outside host: a numbered datagram every 10 ms,
/// each echoed by the outside host, so a datagram lost either way shows as a missing echo
/// (TCP would hide it by retransmitting). Stopped by [`UdpEcho::finish`] or when dropped.
struct UdpEcho {
    stop_sender: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// Each echo's number and arrival, in arrival order.
    echoes: Arc<Mutex<Vec<(u64, SystemTime)>>>,
    errors: Arc<Mutex<Vec<String>>>,
    sender: Option<thread::JoinHandle<()>>,
    /// The echo server and the pod's receiver.
    threads: Vec<thread::JoinHandle<()>>,
}

/// What a [`UdpEcho`] saw.
#[derive(Debug)]
struct UdpReport {
    sent: u64,
    /// Numbers sent and never echoed.
    lost: Vec<u64>,
    /// Echoes of a number already echoed.
    duplicates: usize,
    longest_gap: Duration,
    errors: Vec<String>,
}

const UDP_PERIOD: Duration = Duration::from_millis(10);
const UDP_POLL: Duration = Duration::from_millis(50);

impl UdpEcho {
    fn start(
        pod: &NetNs,
        local: SocketAddrV4,
        outside: &NetNs,
        server: SocketAddrV4,
    ) -> Result<Self> {
        let echo = outside
            .run(|| UdpSocket::bind(server))?
            .with_context(|| format!("binding {server} in {}", outside.name()))?;
        let socket = pod
            .run(|| UdpSocket::bind(local))?
            .with_context(|| format!("binding {local} in {}", pod.name()))?;
        for s in [&echo, &socket] {
            s.set_read_timeout(Some(UDP_POLL))?;
        }
        socket.connect(server)?;
        let mut this = Self {
            stop_sender: Arc::default(),
            stop: Arc::default(),
            sent: Arc::default(),
            echoes: Arc::default(),
            errors: Arc::default(),
            sender: None,
            threads: Vec::new(),
        };
        let record = |errors: &Mutex<Vec<String>>, what: String| {
            errors.lock().unwrap_or_else(|e| e.into_inner()).push(what);
        };
        let (stop, errors) = (Arc::clone(&this.stop), Arc::clone(&this.errors));
        this.threads.push(thread::spawn(move || {
            let mut buffer = [0_u8; 64];
            while !stop.load(Ordering::Relaxed) {
                match echo.recv_from(&mut buffer) {
                    Ok((len, from)) => {
                        if let Err(err) = echo.send_to(&buffer[..len], from) {
                            record(&errors, format!("echoing to {from}: {err}"));
                        }
                    }
                    Err(err) if is_idle(&err) => {}
                    Err(err) => record(&errors, format!("the echo server: {err}")),
                }
            }
        }));
        let receiver = socket.try_clone()?;
        let (stop, echoes, errors) = (
            Arc::clone(&this.stop),
            Arc::clone(&this.echoes),
            Arc::clone(&this.errors),
        );
        this.threads.push(thread::spawn(move || {
            let mut buffer = [0_u8; 64];
            while !stop.load(Ordering::Relaxed) {
                match receiver.recv(&mut buffer) {
                    Ok(8) => {
                        let number = u64::from_be_bytes(buffer[..8].try_into().unwrap_or([0; 8]));
                        let mut echoes = echoes.lock().unwrap_or_else(|e| e.into_inner());
                        echoes.push((number, SystemTime::now()));
                    }
                    Ok(len) => record(&errors, format!("an echo of {len} bytes")),
                    Err(err) if is_idle(&err) => {}
                    Err(err) => record(&errors, format!("receiving echoes: {err}")),
                }
            }
        }));
        let (stop, sent, errors) = (
            Arc::clone(&this.stop_sender),
            Arc::clone(&this.sent),
            Arc::clone(&this.errors),
        );
        this.sender = Some(thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let number = sent.load(Ordering::Relaxed);
                match socket.send(&number.to_be_bytes()) {
                    Ok(_) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => record(&errors, format!("sending {number}: {err}")),
                }
                next += UDP_PERIOD;
                let now = Instant::now();
                if next > now {
                    thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        }));
        Ok(this)
    }

    /// Datagrams sent and echoes received so far.
    fn progress(&self) -> (u64, usize) {
        let echoes = self.echoes.lock().map_or(0, |echoes| echoes.len());
        (self.sent.load(Ordering::Relaxed), echoes)
    }

    /// Stops sending, waits up to `drain` for the echoes still due, and reports.
    fn finish(mut self, drain: Duration) -> UdpReport {
        self.stop_sending();
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline {
            let (sent, echoed) = self.progress();
            if echoed as u64 >= sent {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        let sent = self.sent.load(Ordering::Relaxed);
        let echoes = self.echoes.lock().map(|e| e.clone()).unwrap_or_default();
        let mut seen = vec![false; usize::try_from(sent).unwrap_or(0)];
        let mut duplicates = 0;
        for (number, _) in &echoes {
            match usize::try_from(*number).ok().and_then(|n| seen.get_mut(n)) {
                Some(flag) if *flag => duplicates += 1,
                Some(flag) => *flag = true,
                None => duplicates += 1,
            }
        }
        let lost = (0..sent)
            .filter(|n| !seen[usize::try_from(*n).unwrap_or(0)])
            .collect();
        let longest_gap = echoes
            .windows(2)
            .filter_map(|pair| pair[1].1.duration_since(pair[0].1).ok())
            .max()
            .unwrap_or_default();
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        UdpReport {
            sent,
            lost,
            duplicates,
            longest_gap,
            errors,
        }
    }

    /// Stops the sender and waits for it: from then on `sent` is final.
    fn stop_sending(&mut self) {
        self.stop_sender.store(true, Ordering::Relaxed);
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }

    fn stop(&mut self) {
        self.stop_sending();
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_idle(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The long-lived traffic, by floating IP.
struct Traffic {
    /// Through the first floating IP, which no step touches: must lose nothing.
    untouched: Vec<LiveConnection>,
    untouched_udp: UdpEcho,
    /// pod-a2 through the second floating IP, whose master changes in the priority step.
    handed_over: LiveConnection,
    /// pod-b1 through the added floating IP, from its addition to just before its removal.
    added: Option<LiveConnection>,
}

impl Traffic {
    /// Waits until every running connection has `more` further echoes: the traffic goes
    /// on.
    fn still_talking(&self, more: usize) -> Result<()> {
        let timeout = Duration::from_secs(10);
        for live in self
            .untouched
            .iter()
            .chain([&self.handed_over])
            .chain(&self.added)
        {
            live.wait_echoes(more, timeout)?;
        }
        let (_, start) = self.untouched_udp.progress();
        let deadline = Instant::now() + timeout;
        while self.untouched_udp.progress().1 < start + more {
            ensure!(
                Instant::now() < deadline,
                "the UDP conversation got fewer than {more} echoes in {timeout:?}: {:?}",
                self.untouched_udp.progress()
            );
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

/// A new UDP flow from `pod` to the outside host's `port` arrives from `expected`.
fn new_udp_flow(lab: &AgentLab, pod: Pod, port: u16, expected: Ipv4Addr) -> Result<()> {
    let destination = SocketAddrV4::new(OUTSIDE_ADDRESS, port);
    let seen = lab.udp_source(pod, destination, Duration::from_secs(3))?;
    ensure!(
        seen.source() == Some(expected),
        "a new UDP flow {} → {destination} arrived as {seen:?}, expected from {expected}",
        pod.name()
    );
    Ok(())
}

/// The MACs that answered ARP requests from the router for `address` within
/// [`ARP_WINDOW`] (an absence needs a window; a gateway answers within milliseconds).
fn arp_answerers(lab: &AgentLab, address: Ipv4Addr) -> Result<Vec<Mac>> {
    let router = lab.router();
    let capture = Capture::start(router, "eth0")?;
    let probe = arp_request(mac_of(router)?, ROUTER_ADDRESS, address);
    router.send_frames("eth0", &[&probe, &probe, &probe])?;
    thread::sleep(ARP_WINDOW);
    let frames = capture.stop()?;
    let mut answerers = sorted(
        frames
            .iter()
            .filter(|frame| !frame.outgoing)
            .filter_map(Frame::arp)
            .filter(|arp| arp.operation == 2 && arp.sender_ip == address)
            .map(|arp| arp.sender_mac)
            .collect(),
    );
    answerers.dedup();
    Ok(answerers)
}

/// The VRRP adverts for `vrid` in `frames` that came in, in order: when, their sender and
/// priority.
fn adverts_for(frames: &[Frame], vrid: u8) -> Vec<(SystemTime, Mac, u8)> {
    frames
        .iter()
        .filter(|frame| !frame.outgoing)
        .filter_map(|frame| {
            let (_, id, priority) = frame.vrrp()?;
            Some((frame.at, frame.source_mac()?, priority)).filter(|_| id == vrid)
        })
        .collect()
}

/// The adverts for one VRID as the router received them: when, from which gateway (`gw1`,
/// `gw2`, else the MAC), at which priority.
struct Adverts(Vec<(SystemTime, String, u8)>);

impl Adverts {
    /// Those for `vrid` in `frames`.
    fn of(lab: &AgentLab, frames: &[Frame], vrid: u8) -> Result<Self> {
        let gw1 = mac_of(lab.gateway_ns(Member::Gw1))?;
        let gw2 = mac_of(lab.gateway_ns(Member::Gw2))?;
        let name = |mac: Mac| match mac {
            mac if mac == gw1 => "gw1".to_owned(),
            mac if mac == gw2 => "gw2".to_owned(),
            mac => format_mac(&mac),
        };
        Ok(Self(
            adverts_for(frames, vrid)
                .into_iter()
                .map(|(at, mac, priority)| (at, name(mac), priority))
                .collect(),
        ))
    }

    /// Waits until `capture` holds [`SETTLED_ADVERTS`] adverts for `vrid` from `winner`,
    /// then stops it and returns them all.
    fn settled(lab: &AgentLab, capture: Capture, vrid: u8, winner: &str) -> Result<Self> {
        let deadline = Instant::now() + STATE_TIMEOUT;
        while Self::of(lab, &capture.frames(), vrid)?.sent_by(winner) < SETTLED_ADVERTS {
            ensure!(
                Instant::now() < deadline,
                "the router heard fewer than {SETTLED_ADVERTS} adverts for VRID {vrid} from \
                 {winner} within {STATE_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Self::of(lab, &capture.stop()?, vrid)
    }

    fn sent_by(&self, who: &str) -> usize {
        self.0.iter().filter(|(_, from, _)| from == who).count()
    }

    /// Who sent them, in turn: a run of one sender's adverts counts once.
    fn turns(&self) -> Vec<&str> {
        let mut turns: Vec<&str> = self.0.iter().map(|(_, from, _)| from.as_str()).collect();
        turns.dedup();
        turns
    }

    /// Whether they settle on `winner` alone: at least two of its adverts, and no claim
    /// from anyone else after its second. A gateway yields at the first better advert it
    /// hears, and one of its own may cross that one on the wire; any later is two masters.
    /// The priority-0 advert a yielding master sends is a resignation, not a claim, and may
    /// reach the wire after the winner's answer to the crossed advert.
    fn settle_on(&self, winner: &str) -> bool {
        let mut won = 0;
        for (_, from, priority) in &self.0 {
            if from == winner {
                won += 1;
            } else if won >= 2 && *priority > 0 {
                return false;
            }
        }
        won >= 2
    }

    /// All of them, from `since`, for messages.
    fn timeline(&self, since: SystemTime) -> String {
        self.0
            .iter()
            .map(|(at, from, priority)| {
                let after = millis(at.duration_since(since).ok());
                format!("+{after} {from} {priority}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The MAC of `eth0` in `ns`.
fn mac_of(ns: &NetNs) -> Result<Mac> {
    let shown = ns.ip(["-br", "link", "show", "dev", "eth0"])?;
    parse_mac(
        shown
            .split_whitespace()
            .nth(2)
            .context("no MAC in `ip -br link`")?,
    )
}

/// Writes a new sync key into `dir` (created), as [`egret_lab::write_sync_key`] does.
fn new_key(dir: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    egret_lab::write_sync_key(dir)
}

#[test]
fn rolling_reloads_change_the_group_live_without_touching_other_flows() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let started = Instant::now();
    let mut lab = AgentLab::new("reload")?;
    let mut group = GatewayGroup::lab(lab.workdir());
    let bob = Policy::new("bob", SECOND_EGRESS_IP)
        .select(Pod::A2)
        .to("198.51.100.0/24")
        .except("198.51.100.128/25");
    lab.set_policies(Node::Node1, vec![Policy::alice(), bob])?;
    step(
        &mut lab,
        "start both gateways (gw1 owns .100, gw2 .101) and both agents",
        AgentLab::start_all,
    )?;
    let up_since = Instant::now();
    let pids = Member::BOTH.map(|member| lab.gateway_pid(member));
    eprintln!("   gateway pids: {pids:?}");

    let mut traffic = step(
        &mut lab,
        "pod-a1: two TCP connections and a UDP conversation through .100, pod-a2 one \
         through .101, every 10 ms",
        |lab| {
            let traffic = Traffic {
                untouched: vec![
                    lab.live_connection(Pod::A1, 7300)?,
                    lab.live_connection(Pod::A1, 7301)?,
                ],
                untouched_udp: UdpEcho::start(
                    lab.pod(Pod::A1),
                    SocketAddrV4::new(Pod::A1.address(), 7350),
                    lab.outside(),
                    SocketAddrV4::new(OUTSIDE_ADDRESS, 7350),
                )?,
                handed_over: lab.live_connection(Pod::A2, 7310)?,
                added: None,
            };
            traffic.still_talking(50)?;
            wait_in_force(lab, &group, SystemTime::now())?;
            Ok(traffic)
        },
    )?;

    add_floating_ip(&mut lab, &mut group, &mut traffic)?;
    refuse_bad_files(&mut lab, &group, &traffic)?;
    hand_over_by_priority(&mut lab, &mut group, &traffic)?;
    rotate_sync_key(&mut lab, &mut group)?;
    remove_floating_ip(&mut lab, &mut group, &mut traffic)?;

    // What the connections saw, and no restart.
    let Traffic {
        untouched,
        untouched_udp,
        handed_over,
        added: _,
    } = traffic;
    let untouched: Vec<LiveReport> = untouched
        .into_iter()
        .map(|live| live.finish(DRAIN))
        .collect();
    let udp = untouched_udp.finish(DRAIN);
    let handed_over = handed_over.finish(DRAIN);
    step(
        &mut lab,
        "nothing lost on the untouched .100; no restart",
        |lab| {
            for (index, report) in untouched.iter().enumerate() {
                eprintln!("   TCP {index} through .100: {}", report.summary());
            }
            eprintln!(
                "   UDP through .100: {} sent, {} lost, {} duplicated, longest gap between \
                 echoes {}, errors {:?}",
                udp.sent,
                udp.lost.len(),
                udp.duplicates,
                millis(Some(udp.longest_gap)),
                udp.errors
            );
            eprintln!(
                "   TCP through .101 (handed over): {}",
                handed_over.summary()
            );
            for report in &untouched {
                ensure!(
                    report.survived(),
                    "a connection through .100 broke: {}",
                    report.summary()
                );
            }
            ensure!(
                udp.sent > 0 && udp.lost.is_empty() && udp.errors.is_empty(),
                "the UDP conversation through .100 lost {} of {} ({:?}…), errors {:?}",
                udp.lost.len(),
                udp.sent,
                udp.lost.iter().take(10).collect::<Vec<_>>(),
                udp.errors
            );
            ensure!(
                handed_over.survived(),
                "the connection through .101 did not survive its handover: {}",
                handed_over.summary()
            );
            let now = Member::BOTH.map(|member| lab.gateway_pid(member));
            ensure!(now == pids, "gateway pids changed: {pids:?} → {now:?}");
            let pair = snapshots(lab)?;
            for member in Member::BOTH {
                let uptime = pair[member.index()].body["uptime_seconds"]
                    .as_f64()
                    .unwrap_or(0.0);
                // The snapshot may be a publication period (250 ms) old.
                let running = up_since.elapsed().as_secs_f64() - 1.0;
                ensure!(
                    uptime >= running,
                    "{}'s uptime is {uptime:.1} s; it has run for {running:.1} s at least",
                    member.name()
                );
            }
            Ok(())
        },
    )?;
    let longest = untouched
        .iter()
        .map(|report| report.messenger.longest_gap())
        .chain([udp.longest_gap])
        .max()
        .unwrap_or_default();
    eprintln!(
        "   longest pause on .100: {}; on .101 across its handover: {}; run time {:.1?}",
        millis(Some(longest)),
        millis(Some(handed_over.messenger.longest_gap())),
        started.elapsed()
    );
    Ok(())
}

/// Stage 1: a floating IP added (gw2 preferred): in force on both, answering, carrying a new
/// flow and then a connection of pod-b1 (policy carol).
fn add_floating_ip(
    lab: &mut AgentLab,
    group: &mut GatewayGroup,
    traffic: &mut Traffic,
) -> Result<()> {
    group.floating_ips.push(FloatingIpEntry {
        address: ADDED_IP,
        vrid: ADDED_VRID,
        priorities: [100, 200],
    });
    step(
        lab,
        "add .102 (VRID 12, gw2 200, gw1 100) to both, reload gw1 then gw2",
        |lab| {
            let capture = Capture::start(lab.router(), "eth0")?;
            let since = SystemTime::now();
            let at = roll(lab, group, Member::BOTH)?;
            wait_in_force(lab, group, at)?;
            // gw1, reloaded first, may claim it before gw2 has it (or at the same moment),
            // and yields to gw2's first advert.
            let adverts = Adverts::settled(lab, capture, ADDED_VRID, "gw2")?;
            ensure!(
                adverts.settle_on("gw2"),
                "adverts for VRID {ADDED_VRID} do not settle on gw2: {}",
                adverts.timeline(since)
            );
            eprintln!(
                "   adverts for VRID {ADDED_VRID} in turn {:?}: {}",
                adverts.turns(),
                adverts.timeline(since)
            );
            Ok(())
        },
    )?;
    step(lab, ".102 answers: ARP from gw2 alone, ping", |lab| {
        let answerers = arp_answerers(lab, ADDED_IP)?;
        let gw2 = mac_of(lab.gateway_ns(Member::Gw2))?;
        ensure!(
            answerers == [gw2],
            "ARP for {ADDED_IP} answered by {:?}; gw2 is {}",
            answerers.iter().map(format_mac).collect::<Vec<_>>(),
            format_mac(&gw2)
        );
        let replies = lab.router().ping("eth0", ADDED_IP.into(), 3)?;
        ensure!(replies == 3, "{replies} of 3 pings to {ADDED_IP} answered");
        Ok(())
    })?;
    let carol = Policy::new("carol", ADDED_IP)
        .select(Pod::B1)
        .to("198.51.100.0/24")
        .except("198.51.100.128/25");
    step(
        lab,
        "node2's agent takes .102 (policy carol for pod-b1); a new flow leaves from .102",
        |lab| {
            let mut config: AgentConfig = lab.agent_config(Node::Node2).clone();
            config.floating_ips.push(ADDED_IP);
            config.policies = vec![carol];
            lab.set_agent_config(config)?;
            lab.reload_agent(Node::Node2)?;
            lab.wait_agent_ready(Node::Node2, Duration::from_secs(10))?;
            let seen = lab.tcp_source(
                Pod::B1,
                SocketAddrV4::new(OUTSIDE_ADDRESS, 7321),
                Duration::from_secs(3),
            )?;
            ensure!(
                seen.source() == Some(ADDED_IP),
                "a new connection from pod-b1 arrived as {seen:?}"
            );
            new_udp_flow(lab, Pod::B1, 7322, ADDED_IP)?;
            let live = lab.live_connection(Pod::B1, 7320)?;
            live.wait_echoes(50, Duration::from_secs(10))?;
            traffic.added = Some(live);
            Ok(())
        },
    )?;

    Ok(())
}

/// Stage 2: files gw1 must refuse; its status stays as it was.
fn refuse_bad_files(lab: &mut AgentLab, group: &GatewayGroup, traffic: &Traffic) -> Result<()> {
    step(
        lab,
        "gw1 refuses a file that does not check, and one that only a restart could apply; \
         its status stays as it was",
        |lab| {
            let before = snapshots(lab)?;
            let good = group.render(Member::Gw1);
            let typo = good.replace(
                "address = \"192.168.50.102\"",
                "address = \"192.168.5.102\"",
            );
            ensure!(typo != good, "the typo did not apply");
            let vrid = good.replace("vrid = 10\n", "vrid = 20\n");
            ensure!(vrid != good, "the VRID change did not apply");
            let mut last = SystemTime::now();
            for (what, text, says) in [
                ("an address outside the subnet", typo, "floating_ip"),
                ("another VRID for .100", vrid, "only a restart changes"),
            ] {
                lab.write_gateway_config_text(Member::Gw1, &text)?;
                let (log, at) = reload_refused(lab, Member::Gw1)?;
                let reason = log
                    .lines()
                    .filter(|line| line.contains("ERROR"))
                    .collect::<Vec<_>>()
                    .join("\n");
                eprintln!("   {what}: refused:\n{reason}");
                ensure!(
                    reason.contains(says),
                    "{what}: the refusal does not say {says:?}:\n{log}"
                );
                last = at;
            }
            lab.write_gateway_configs(group)?;
            let after = wait_both(
                lab,
                "a status after the refusals",
                last,
                STATE_TIMEOUT,
                |_| Ok(()),
            )?;
            for member in Member::BOTH {
                let (was, is) = (
                    shown(&before[member.index()]),
                    shown(&after[member.index()]),
                );
                ensure!(
                    was == is,
                    "{}'s floating IPs changed across refused reloads: {was:?} → {is:?}",
                    member.name()
                );
            }
            in_force(&after, group).map_err(|reason| anyhow!(reason))?;
            traffic.still_talking(20)
        },
    )?;

    Ok(())
}

/// Stage 3: the second floating IP changes hands by a priority swap.
fn hand_over_by_priority(
    lab: &mut AgentLab,
    group: &mut GatewayGroup,
    traffic: &Traffic,
) -> Result<()> {
    group.floating_ips[1].priorities = [200, 100];
    step(
        lab,
        "swap the priorities of .101 (gw1 200, gw2 100), reload gw1 then gw2: gw1 takes it",
        |lab| {
            let before = snapshots(lab)?;
            let capture = Capture::start(lab.router(), "eth0")?;
            let since = SystemTime::now();
            let at = roll(lab, group, Member::BOTH)?;
            let after = wait_in_force(lab, group, at)?;
            // One handover, no flapping: the adverts come from gw2, then from gw1 alone.
            let vrid = group.floating_ips[1].vrid;
            let adverts = Adverts::settled(lab, capture, vrid, "gw1")?;
            ensure!(
                adverts.turns().first() == Some(&"gw2") && adverts.settle_on("gw1"),
                "adverts for VRID {vrid} do not go from gw2 to gw1 once: {}; adverts refused \
                 meanwhile: gw1 {:?}, gw2 {:?}",
                adverts.timeline(since),
                after[0].grown(&before[0], "/election/adverts_rejected"),
                after[1].grown(&before[1], "/election/adverts_rejected")
            );
            traffic.still_talking(50)
        },
    )?;

    Ok(())
}

/// Stage 4: the sync key rotated, then the old one dropped; flows made after it still sync.
fn rotate_sync_key(lab: &mut AgentLab, group: &mut GatewayGroup) -> Result<()> {
    step(
        lab,
        "rotate the sync key: the new key with the old one as previous_key_file, gw2 first",
        |lab| {
            let old = group.key_file.clone();
            group.key_file = new_key(&lab.workdir().join("next"))?;
            group.previous_key_file = Some(old);
            lab.write_gateway_configs(group)?;
            let before = snapshots(lab)?;
            let at = reload_applied(lab, Member::Gw2, group)?;
            // gw2 opens gw1's datagrams with the previous key; gw1 refuses gw2's new ones.
            wait_both(
                lab,
                "gw2 reading gw1 with the previous key, gw1 refusing gw2's new key",
                at,
                STATE_TIMEOUT,
                |pair| {
                    let [gw1, gw2] = pair;
                    if gw2.grew(&before[1], "/sync/previous_key") == 0 {
                        return Err("gw2 opened nothing with the previous key yet".into());
                    }
                    if gw1.grew(&before[0], "/sync/drops/auth") == 0 {
                        return Err("gw1 refused nothing of gw2's yet".into());
                    }
                    Ok(())
                },
            )?;
            let at = reload_applied(lab, Member::Gw1, group)?;
            sync_quiet(lab, "both on the new key, the old one as previous", at)
        },
    )?;
    step(
        lab,
        "drop previous_key_file, gw2 first: the sync stays alive and refuses nothing",
        |lab| {
            group.previous_key_file = None;
            let at = roll(lab, group, [Member::Gw2, Member::Gw1])?;
            sync_quiet(lab, "both on the new key alone", at)?;
            wait_in_force(lab, group, at)?;
            Ok(())
        },
    )?;
    step(
        lab,
        "flows made after the rotation reach the backups (.100 gw1 → gw2, .102 gw2 → gw1)",
        |lab| {
            let before = snapshots(lab)?;
            let made = SystemTime::now();
            let flows = [(Pod::A1, EGRESS_IP, 7400), (Pod::B1, ADDED_IP, 7410)];
            for (pod, address, base) in flows {
                for port in (base..).take(NEW_FLOWS as usize) {
                    new_udp_flow(lab, pod, port, address)?;
                }
            }
            wait_both(
                lab,
                "the new flows on the backups",
                made,
                STATE_TIMEOUT,
                |pair| {
                    for (backup, address) in [(Member::Gw2, EGRESS_IP), (Member::Gw1, ADDED_IP)] {
                        let (was, is) = (
                            flows_of(&before[backup.index()], address),
                            flows_of(&pair[backup.index()], address),
                        );
                        if is < was + NEW_FLOWS {
                            return Err(format!(
                                "{} holds {is} flows of {address}, {was} before {NEW_FLOWS} \
                                 new ones",
                                backup.name()
                            ));
                        }
                    }
                    Ok(())
                },
            )?;
            Ok(())
        },
    )?;

    Ok(())
}

/// Stage 5: the added floating IP removed again: handed over to nobody; the others carry on.
fn remove_floating_ip(
    lab: &mut AgentLab,
    group: &mut GatewayGroup,
    traffic: &mut Traffic,
) -> Result<()> {
    let added_report = traffic
        .added
        .take()
        .context("no connection through .102")?
        .finish(DRAIN);
    eprintln!(
        "   pod-b1 through .102 (added, then until its removal): {}",
        added_report.summary()
    );
    ensure!(
        added_report.survived(),
        "the connection through the added floating IP broke: {}",
        added_report.summary()
    );
    group.floating_ips.retain(|ip| ip.address != ADDED_IP);
    step(
        lab,
        "remove .102 from both, reload its backup gw1 then its master gw2: nobody owns it",
        |lab| {
            lab.write_gateway_configs(group)?;
            let at = reload_applied(lab, Member::Gw1, group)?;
            wait_both(
                lab,
                "gw1 without .102, gw2 still its master",
                at,
                STATE_TIMEOUT,
                |pair| {
                    let on_gw1 = shown(&pair[0]).into_iter().any(|ip| ip.address == ADDED_IP);
                    let gw2 = shown(&pair[1])
                        .into_iter()
                        .find(|ip| ip.address == ADDED_IP);
                    match (on_gw1, &gw2) {
                        (false, Some(ip)) if ip.state == "master" && ip.owned => Ok(()),
                        _ => Err(format!("gw1 lists .102: {on_gw1}; gw2 shows {gw2:?}")),
                    }
                },
            )?;
            let capture = Capture::start(lab.router(), "eth0")?;
            let gw2_mac = mac_of(lab.gateway_ns(Member::Gw2))?;
            let at = reload_applied(lab, Member::Gw2, group)?;
            wait_in_force(lab, group, at)?;
            let answerers = arp_answerers(lab, ADDED_IP)?;
            let frames = capture.stop()?;
            let adverts: Vec<(Mac, u8)> = adverts_for(&frames, ADDED_VRID)
                .into_iter()
                .map(|(_, mac, priority)| (mac, priority))
                .collect();
            eprintln!(
                "   adverts for VRID {ADDED_VRID} from gw2's reload on: {}",
                adverts
                    .iter()
                    .map(|(mac, priority)| format!("{} {priority}", format_mac(mac)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            ensure!(
                adverts.last() == Some(&(gw2_mac, 0)),
                "the last advert for VRID {ADDED_VRID} was not gw2's priority 0: {adverts:?}"
            );
            ensure!(
                answerers.is_empty(),
                "ARP for the removed {ADDED_IP} answered by {:?}",
                answerers.iter().map(format_mac).collect::<Vec<_>>()
            );
            let replies = lab.router().ping("eth0", ADDED_IP.into(), 3)?;
            ensure!(
                replies == 0,
                "{replies} of 3 pings to the removed {ADDED_IP} answered"
            );
            Ok(())
        },
    )?;
    step(
        lab,
        "the other floating IPs carry on: new flows from .100 and .101, the connections talk",
        |lab| {
            new_udp_flow(lab, Pod::A1, 7420, EGRESS_IP)?;
            new_udp_flow(lab, Pod::A2, 7421, SECOND_EGRESS_IP)?;
            traffic.still_talking(50)
        },
    )?;

    Ok(())
}

#[test]
fn adverts_settle_on_one_master_that_the_other_yields_to_at_once() {
    let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    let adverts = |list: &[(u64, &str, u8)]| {
        Adverts(
            list.iter()
                .map(|(ms, from, priority)| (at(*ms), (*from).to_owned(), *priority))
                .collect(),
        )
    };
    // Both claimed at once, gw1's advert crossed gw2's, then gw1 yielded (a lab run).
    let crossed = adverts(&[
        (378, "gw2", 200),
        (378, "gw1", 100),
        (379, "gw2", 200),
        (479, "gw2", 200),
    ]);
    assert!(crossed.settle_on("gw2"));
    assert_eq!(crossed.turns(), ["gw2", "gw1", "gw2"]);
    // gw1 claimed first; gw2 claimed and answered gw1's claim at once, then gw1's
    // resignation (priority 0) reached the wire (a CI run).
    let resigned = adverts(&[
        (375, "gw1", 100),
        (376, "gw2", 200),
        (376, "gw2", 200),
        (376, "gw1", 0),
        (476, "gw2", 200),
    ]);
    assert!(resigned.settle_on("gw2"));
    // A claim, not a resignation, after the winner's second advert is two masters.
    let claimed = adverts(&[
        (375, "gw1", 100),
        (376, "gw2", 200),
        (376, "gw2", 200),
        (377, "gw1", 100),
        (476, "gw2", 200),
    ]);
    assert!(!claimed.settle_on("gw2"));
    // A handover by priority: the old master until the new one's first advert.
    let handover = adverts(&[
        (37, "gw2", 200),
        (137, "gw2", 100),
        (359, "gw1", 200),
        (459, "gw1", 200),
    ]);
    assert!(handover.settle_on("gw1"));
    // Two masters, each refusing the other's adverts (the fault ef12cbe fixed).
    let both = adverts(&[
        (337, "gw2", 100),
        (359, "gw1", 200),
        (437, "gw2", 100),
        (459, "gw1", 200),
        (537, "gw2", 100),
    ]);
    assert!(!both.settle_on("gw1"));
    assert!(!both.settle_on("gw2"));
    // One advert proves nothing.
    assert!(!adverts(&[(359, "gw1", 200)]).settle_on("gw1"));
    assert_eq!(
        handover.timeline(at(0)),
        "+37.0 ms gw2 200, +137.0 ms gw2 100, +359.0 ms gw1 200, +459.0 ms gw1 200"
    );
}

#[test]
fn reload_lines_name_the_floating_ips() {
    let line = "2026-12-07T19:14:28.508185Z  INFO egret_gateway: config reloaded \
                floating_ips=[192.168.50.100, 192.168.50.101]";
    assert_eq!(
        logged_addresses(line),
        Some(vec![EGRESS_IP, SECOND_EGRESS_IP])
    );
    assert_eq!(
        logged_addresses("INFO egret_gateway: config reloaded floating_ips=[]"),
        Some(vec![])
    );
    assert_eq!(
        logged_addresses("INFO egret_gateway: config reloaded"),
        None
    );
    assert_eq!(logged_addresses("floating_ips=[192.168.50]"), None);
}
