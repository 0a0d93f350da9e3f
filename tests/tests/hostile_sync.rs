//! A hostile host on the gateways' LAN attacks the flow sync ([`egret_lab::HaLab`], its
//! `stranger` at 192.168.50.40): it records the sync between gw1 and gw2 as an eavesdropper
//! can (tcpdump on gw2's port of the LAN bridge), then replays, alters and forges sync
//! datagrams spoofing one gateway's sync address to the other. None of it may change a
//! gateway's flow table, open a mapping, start a resync or cut short a failover.
//!
//! The datagrams come from `tests/scripts/sync_forge.py` in the stranger's namespace (a
//! packet socket, so any source address): recorded ones as they were, with a byte flipped,
//! and forged ones in the old version 1 format, in version 2 unsealed, and sealed under a
//! wrong key, their clear headers filled with what the recording shows (the sender's epoch
//! and token, the receiver's token it echoes, counters above any seen), so that the key is
//! all that refuses them. Each attack is counted under the reason its clear headers predict,
//! exactly: `auth` (altered, unsealed, another key), `unconfirmed` (echoing no current
//! token of the receiver's), `replay` (a counter seen), and for version 1 `version`, or
//! `length` when shorter than a version 2 header. As a control that the script seals as
//! the gateways do, datagrams sealed with the gateways' own key but echoing no token pass
//! authentication and are refused as `unconfirmed`.
//!
//! - Forged and replayed datagrams to the master (gw1), spoofing gw2: port forwards (a node
//!   record binding the node to the stranger's MAC and upserts of an outside → floating IP
//!   flow to the pod), a flood of immortal flows, every NAT port toward one destination.
//!   gw1's flow table, node bindings and sync stay as they were; the outside server's
//!   probes to the forged mappings reach neither the stranger nor the node; the pod still
//!   opens flows to the destination whose ports were claimed.
//! - Forged and replayed datagrams to the backup (gw2), spoofing gw1 (forged restarts,
//!   empty full resyncs that would sweep every flow), while a failover runs: gw1 is killed
//!   and every connection survives.
//! - Resync requests spoofing gw2, forged and replayed, thousands over five seconds: gw1
//!   starts no resync, and sends a fraction of what it receives.
//! - A sync outage longer than gw1's retransmission ring (nftables drops UDP 4801 in gw2's
//!   namespace while a churn of short UDP flows streams more than 4096 batches): the
//!   connections gw1 closed (RST) meanwhile are swept from gw2 at the end of the full
//!   resync that follows, and after a failover an outside packet to their old NAT ports
//!   reaches no pod.
//!
//! Each attack prints a line of figures, and each test a `figure:` line with what the issue
//! measured before the fix for comparison. Needs root, python3-scapy,
//! python3-cryptography, tcpdump and a built gateway (`EGRET_GATEWAY_BIN`, or
//! `cargo build --release -p egret-gateway`). The lab's namespaces go when it drops, also
//! on failure; every generator runs in a lab namespace.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};
use egret_lab::{
    HaLab, SYNC_KEY,
    ha::{
        Capture, EchoServer, Failure, FlowSet, Frame, HaConfig, Load, Mac, Member, NAT_PORT_RANGE,
        SYNC_PORT, Snapshot, UdpFlows, endpoint, format_mac, one_lab_at_a_time,
    },
    require_root,
    topology::{
        Background, FLOATING_IP, Generator, NODE_ADDRESS, OUTSIDE_ADDRESS, POD_ADDRESS, PYTHON,
        Sent, scripts_dir,
    },
};

/// Datagrams a second of a generator: far below what the sync loop reads, so that the
/// kernel drops none before the gateway counts it (checked: `Udp RcvbufErrors`).
const RATE: u32 = 2500;
/// How long the gateway may take to count what a generator sent.
const SETTLE: Duration = Duration::from_secs(10);
/// The outside server's echo port of the connections the lab keeps open.
const ECHO_PORT: u16 = 7300;
/// The forged port forwards: the outside's (remote) port, and the NAT port the forger
/// claims, for UDP and for TCP; the pod's port behind them.
const FORWARD_UDP: (u16, u16) = (9999, 45000);
const FORWARD_TCP: (u16, u16) = (9998, 45001);
const FORWARD_POD_PORT: u16 = 7777;
/// The destination port every NAT port is claimed toward.
const CLAIMED_PORT: u16 = 7800;
/// The tunnel MAC the forged node record gives the node.
const EVIL_TUNNEL_MAC: &str = "02:66:66:66:66:66";
/// The forged flood: batches of distinct immortal flows, as the issue measured.
const FLOOD_BATCHES: u32 = 4700;

/// A recording of the sync as seen on a gateway's port of the LAN bridge (tcpdump in the
/// LAN namespace): what an eavesdropper on the segment has.
struct Recording {
    tcpdump: Option<Background>,
    path: PathBuf,
}

impl Recording {
    /// Starts recording sync datagrams to and from `member`; returns once tcpdump writes.
    fn start(lab: &HaLab, member: Member) -> Result<Self> {
        let path = lab
            .base()
            .workdir()
            .join(format!("sync-{}.pcap", member.name()));
        let tcpdump = Background::spawn(
            lab.base()
                .lan()
                .command("tcpdump")
                .args([
                    "-i",
                    member.lan_port(),
                    "-n",
                    "-U",
                    "-s",
                    "0",
                    "-Z",
                    "root",
                    "-w",
                ])
                .arg(&path)
                .args(["udp", "port", &SYNC_PORT.to_string()]),
        )?;
        // tcpdump writes the file's header once its capture is active.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fs::metadata(&path).map_or(0, |m| m.len()) < 24 {
            ensure!(
                Instant::now() < deadline,
                "tcpdump on {} wrote nothing within 10 s",
                member.lan_port()
            );
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            tcpdump: Some(tcpdump),
            path,
        })
    }

    /// Stops tcpdump (SIGTERM: it writes out what it holds).
    fn stop(&mut self) {
        drop(self.tcpdump.take());
    }

    /// Sync datagrams recorded from `from` to `to`.
    fn count(&self, from: Member, to: Member) -> Result<usize> {
        let pcap = fs::read(&self.path).with_context(|| format!("{}", self.path.display()))?;
        Ok(pcap_udp(&pcap)?
            .iter()
            .filter(|(s, d)| *s == from.address() && *d == to.address())
            .count())
    }
}

/// The (source, destination) of every IPv4 UDP datagram in a pcap file of Ethernet
/// frames.
fn pcap_udp(pcap: &[u8]) -> Result<Vec<(Ipv4Addr, Ipv4Addr)>> {
    ensure!(pcap.len() >= 24, "not a pcap file");
    let little = matches!(
        pcap[..4],
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]
    );
    let word = |b: &[u8]| {
        let b = [b[0], b[1], b[2], b[3]];
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let mut at = 24;
    let mut out = Vec::new();
    while at + 16 <= pcap.len() {
        let caplen = usize::try_from(word(&pcap[at + 8..at + 12]))?;
        let frame = pcap
            .get(at + 16..at + 16 + caplen)
            .context("truncated pcap")?;
        at += 16 + caplen;
        if frame.len() >= 34 && frame[12..14] == [8, 0] && frame[23] == 17 {
            let address =
                |i: usize| Ipv4Addr::new(frame[i], frame[i + 1], frame[i + 2], frame[i + 3]);
            out.push((address(26), address(30)));
        }
    }
    Ok(out)
}

/// One run of `sync_forge.py` in the stranger's namespace: datagrams from `from`'s sync
/// address to `to`'s.
#[derive(Debug, Clone)]
struct Forgery {
    what: String,
    from: Member,
    to: Member,
    rate: u32,
    duration: Option<Duration>,
    /// The source and its options (`replay --pcap …`, `forge --format …`).
    source: Vec<String>,
}

impl Forgery {
    fn new(what: &str, from: Member, to: Member, source: &[&str]) -> Self {
        Self {
            what: what.to_owned(),
            from,
            to,
            rate: RATE,
            duration: None,
            source: source.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn arg(mut self, arg: impl Into<String>) -> Self {
        self.source.push(arg.into());
        self
    }

    fn paced(mut self, rate: u32, duration: Duration) -> Self {
        self.rate = rate;
        self.duration = Some(duration);
        self
    }

    fn command(&self, lab: &HaLab) -> Result<Command> {
        let mut command = lab.base().stranger().command(PYTHON);
        command
            .arg(scripts_dir().join("sync_forge.py"))
            .args(["--iface", "eth0"])
            .args(["--src-ip", &self.from.address().to_string()])
            .args(["--dst-ip", &self.to.address().to_string()])
            .args(["--dst-mac", &format_mac(&lab.mac(self.to)?)])
            .args(["--rate", &self.rate.to_string()]);
        if let Some(duration) = self.duration {
            command.args(["--duration", &duration.as_secs_f64().to_string()]);
        }
        command.args(&self.source);
        Ok(command)
    }

    fn start(&self, lab: &HaLab) -> Result<Running> {
        launch(&mut self.command(lab)?, &self.what)
    }
}

/// Starts a forgery's command; returns once it is about to send.
fn launch(command: &mut Command, what: &str) -> Result<Running> {
    let generator = Generator::start(command, what)?;
    let expect = generator
        .preamble
        .iter()
        .find_map(|line| parse_expect(line))
        .with_context(|| format!("`{what}` said {:?}", generator.preamble))?;
    Ok(Running {
        generator,
        per_round: expect,
        what: what.to_owned(),
    })
}

/// Forgeries run one after another on a thread of their own, round after round, until
/// stopped: an attack that goes on while a test does something else (a failover).
struct Barrage {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<Vec<Forged>>>>,
}

impl Barrage {
    /// Runs the forgeries of each round in turn (`rounds` of them, each forgery's command
    /// made beforehand: the thread has no lab).
    fn start(rounds: Vec<Vec<(String, Command)>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut done = Vec::new();
                for round in rounds {
                    for (what, mut command) in round {
                        if stop.load(Ordering::Relaxed) {
                            return Ok(done);
                        }
                        done.push(launch(&mut command, &what)?.finish()?);
                    }
                }
                Ok(done)
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops it after the forgery under way; returns every forgery it ran, in order.
    fn stop(mut self) -> Result<Vec<Forged>> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(done)) => done,
            Some(Err(_)) => bail!("the forgeries' thread panicked"),
            None => Ok(Vec::new()),
        }
    }
}

impl Drop for Barrage {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A forgery on its way.
struct Running {
    generator: Generator,
    /// Per round of its datagrams, how the receiver must count them.
    per_round: (BTreeMap<String, u64>, u64),
    what: String,
}

/// What a forgery sent, and how the receiver must count it.
#[derive(Debug, Clone)]
struct Forged {
    what: String,
    sent: Sent,
    expect: BTreeMap<String, u64>,
}

impl Running {
    fn finish(self) -> Result<Forged> {
        let sent = self.generator.finish(Duration::from_secs(120))?;
        let (per_round, round) = self.per_round;
        ensure!(
            round > 0 && sent.count % round == 0,
            "`{}` sent {} datagrams, not whole rounds of {round}",
            self.what,
            sent.count
        );
        let rounds = sent.count / round;
        Ok(Forged {
            what: self.what,
            sent,
            expect: per_round
                .into_iter()
                .map(|(reason, n)| (reason, n * rounds))
                .collect(),
        })
    }
}

/// `expect auth 3 replay 2 per round of 5`.
fn parse_expect(line: &str) -> Option<(BTreeMap<String, u64>, u64)> {
    let rest = line.strip_prefix("expect ")?;
    let (pairs, round) = rest.split_once(" per round of ")?;
    let words: Vec<&str> = pairs.split_whitespace().collect();
    let mut expect = BTreeMap::new();
    for pair in words.chunks(2) {
        let [reason, n] = pair else { return None };
        expect.insert((*reason).to_owned(), n.parse().ok()?);
    }
    Some((expect, round.trim().parse().ok()?))
}

/// Adds `more` to `total`, reason by reason.
fn add(total: &mut BTreeMap<String, u64>, more: &BTreeMap<String, u64>) {
    for (reason, n) in more {
        *total.entry(reason.clone()).or_default() += n;
    }
}

/// `Udp RcvbufErrors` of `member`'s namespace: datagrams its kernel dropped on a full socket.
fn rcvbuf_errors(lab: &HaLab, member: Member) -> Result<i64> {
    lab.base().snmp(lab.ns(member))?.get("Udp", "RcvbufErrors")
}

/// `member`'s status once it counted everything the forgeries in `forged` sent after
/// `before`: a snapshot newer than the last datagram, whose received count grew by at least
/// as many (the real peer's come on top). Checks that its kernel dropped none of them.
fn counted(
    lab: &HaLab,
    member: Member,
    before: &Snapshot,
    rcvbuf_before: i64,
    forged: &[&Forged],
) -> Result<Snapshot> {
    let sent: u64 = forged.iter().map(|f| f.sent.count).sum();
    let last = forged
        .iter()
        .map(|f| f.sent.last)
        .max()
        .unwrap_or_else(SystemTime::now);
    let after = lab.wait_snapshot(member, &format!("{sent} datagrams counted"), SETTLE, |s| {
        s.taken > last + egret_lab::ha::COUNTERS_LAG
            && s.grew(before, "/sync/received/datagrams") >= sent
    })?;
    let dropped = rcvbuf_errors(lab, member)? - rcvbuf_before;
    ensure!(
        dropped == 0,
        "{}'s kernel dropped {dropped} sync datagrams (full socket buffer)",
        member.name()
    );
    Ok(after)
}

/// The reasons a forged, replayed or altered datagram is refused under: the counts of these
/// must be exactly what the forgeries predict (the real peer's datagrams are never refused
/// so). Others (`duplicate`, `beyond_window`, `stale_epoch`) can come of the real stream.
const FORGERY_REASONS: [&str; 9] = [
    "auth",
    "unconfirmed",
    "replay",
    "version",
    "length",
    "bad_magic",
    "kind",
    "field",
    "unknown_peer",
];

/// Checks that the refusals `grown` over an attack are `expected` for every reason of
/// [`FORGERY_REASONS`].
fn refusals_match(
    member: Member,
    what: &str,
    grown: &BTreeMap<String, u64>,
    expected: &BTreeMap<String, u64>,
) -> Result<()> {
    for reason in FORGERY_REASONS {
        let (got, want) = (
            grown.get(reason).copied().unwrap_or(0),
            expected.get(reason).copied().unwrap_or(0),
        );
        ensure!(
            got == want,
            "`{what}`: {} refused {grown:?}, expected {expected:?}",
            member.name()
        );
    }
    Ok(())
}

/// Runs `forgery` against its target and checks that the target refused every datagram for
/// exactly the reasons its clear headers predict; prints the figure.
fn refused(lab: &HaLab, forgery: &Forgery) -> Result<Forged> {
    let target = forgery.to;
    let before = lab.snapshot(target)?;
    let rcvbuf = rcvbuf_errors(lab, target)?;
    let forged = forgery.start(lab)?.finish()?;
    let after = counted(lab, target, &before, rcvbuf, &[&forged])?;
    let grown: BTreeMap<String, u64> = after.grown(&before, "/sync/drops").into_iter().collect();
    let acted = after.grew(&before, "/sync/received/changes");
    eprintln!(
        "   {}: {} datagrams to {}, 0 acted on: refused {grown:?}; changes applied +{acted}",
        forged.what,
        forged.sent.count,
        target.name(),
    );
    refusals_match(target, &forged.what, &grown, &forged.expect)?;
    ensure!(acted == 0, "{} applied {acted} changes", target.name());
    Ok(forged)
}

/// The figures of a gateway's sync and table that no forgery may move.
const STEADY: [&str; 9] = [
    "/flows/live",
    "/sync/received/changes",
    "/sync/flows_installed",
    "/sync/flows_removed",
    "/sync/flows_refused",
    "/sync/flows_swept",
    "/sync/resyncs_sent",
    "/sync/peers/0/restarts",
    "/floating_ips/0/ports_in_use",
];

/// Checks that none of [`STEADY`] moved between two snapshots of `member`, and that its peer
/// is still confirmed and alive.
fn steady(member: Member, before: &Snapshot, after: &Snapshot) -> Result<()> {
    for pointer in STEADY {
        ensure!(
            after.count(pointer) == before.count(pointer),
            "{}'s {pointer} moved: {} → {}",
            member.name(),
            before.count(pointer),
            after.count(pointer)
        );
    }
    let peer = after.body.pointer("/sync/peers/0");
    let flag = |key: &str| {
        peer.and_then(|p| p.get(key))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    };
    ensure!(
        flag("confirmed") && flag("alive"),
        "{}'s sync peer is no longer confirmed and alive: {peer:?}",
        member.name()
    );
    Ok(())
}

/// A converged lab with unicast adverts, the sync sealed, gw1 master, its sync recorded on
/// gw2's port of the bridge from before either gateway started.
fn recorded_lab(tag: &str, config: HaConfig) -> Result<(HaLab, Recording)> {
    let mut lab = HaLab::new(
        tag,
        HaConfig {
            unicast: true,
            ..config
        },
    )?;
    let recording = Recording::start(&lab, Member::Gw2)?;
    let master = lab.start_both()?;
    ensure!(
        master == Member::Gw1,
        "{} is master; gw1 has the higher priority\n{}",
        master.name(),
        lab.evidence()
    );
    Ok((lab, recording))
}

/// `pod` connections to the outside's echo server, pinging every 250 ms, once gw2 holds
/// all their flows (and so the recording holds the batches that carried them).
fn synced_connections(lab: &HaLab, first_port: u16, count: u16) -> Result<(EchoServer, FlowSet)> {
    let server = EchoServer::start(lab.base().outside(), endpoint(OUTSIDE_ADDRESS, ECHO_PORT))?;
    let locals: Vec<SocketAddrV4> = (0..count)
        .map(|i| endpoint(POD_ADDRESS, first_port + i))
        .collect();
    let before = lab.snapshot(Member::Gw2)?;
    let flows = FlowSet::start(
        lab.base().pod(),
        &locals,
        endpoint(OUTSIDE_ADDRESS, ECHO_PORT),
        Duration::from_millis(250),
    )?;
    lab.wait_snapshot(
        Member::Gw2,
        "the connections' flows installed from gw1",
        Duration::from_secs(10),
        |s| s.count("/flows/live") >= before.count("/flows/live") + u64::from(count),
    )?;
    Ok((server, flows))
}

/// Frames in `frames` that carry a packet from one of `ports` of the outside server
/// (`198.51.100.10`): plain, or inside VXLAN.
fn carrying(frames: &[Frame], ports: &[u16]) -> usize {
    frames
        .iter()
        .filter(|frame| {
            inner_source(&frame.bytes)
                .is_some_and(|(source, port)| source == OUTSIDE_ADDRESS && ports.contains(&port))
        })
        .count()
}

/// The source address and port of the (inner, when it is VXLAN) TCP or UDP packet of an
/// Ethernet frame.
fn inner_source(bytes: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let ip = |at: usize| -> Option<(Ipv4Addr, usize, u8)> {
        if bytes.get(at - 2..at)? != [8, 0] {
            return None;
        }
        let ihl = usize::from(bytes.get(at)? & 0x0f) * 4;
        let s = bytes.get(at + 12..at + 16)?;
        Some((
            Ipv4Addr::new(s[0], s[1], s[2], s[3]),
            at + ihl,
            *bytes.get(at + 9)?,
        ))
    };
    let port = |at: usize| Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]));
    let (source, l4, proto) = ip(14)?;
    if proto == 17 && port(l4 + 2)? == egret_lab::topology::TUNNEL_PORT {
        let (source, l4, proto) = ip(l4 + 8 + 8 + 14)?;
        return matches!(proto, 6 | 17).then_some((source, port(l4)?));
    }
    matches!(proto, 6 | 17).then_some((source, port(l4)?))
}

/// Frames sent to `mac` (not flooded) from the floating IP.
fn to_mac_from_floating_ip(frames: &[Frame], mac: Mac) -> usize {
    frames
        .iter()
        .filter(|f| f.bytes.get(..6) == Some(&mac[..]))
        .filter(|f| f.ipv4().is_some_and(|ip| ip.source == FLOATING_IP))
        .count()
}

/// A wrong key: 32 random bytes in a file of the lab's work directory.
fn wrong_key(lab: &HaLab) -> Result<PathBuf> {
    let path = lab.base().workdir().join("wrong.key");
    let mut key = [0_u8; 32];
    fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    fs::write(&path, key)?;
    Ok(path)
}

/// The source options of a forgery from scratch in `format` (`v1`, `plain`, `sealed`),
/// its headers sniffed from the recording.
fn scratch(format: &str, key: &std::path::Path, recording: &Recording) -> Vec<String> {
    let mut args = vec![
        "forge".to_owned(),
        "--format".to_owned(),
        format.to_owned(),
        "--sniff".to_owned(),
        recording.path.display().to_string(),
    ];
    if format == "sealed" {
        args.extend(["--key".to_owned(), key.display().to_string()]);
    }
    args
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// Waits until `member` has received five more sync datagrams from its peer (heartbeats at
/// least): a recording running meanwhile holds that much more of both streams.
fn more_heartbeats(lab: &HaLab, member: Member) -> Result<()> {
    let seen = lab.snapshot(member)?;
    lab.wait_snapshot(
        member,
        "five more heartbeats from its peer",
        Duration::from_secs(10),
        |s| s.grew(&seen, "/sync/received/datagrams") >= 5,
    )?;
    Ok(())
}

#[test]
fn forged_and_replayed_sync_datagrams_change_nothing_on_the_master() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let (gw1, gw2) = (Member::Gw1, Member::Gw2);
    let (lab, mut recording) = recorded_lab("hsync", HaConfig::default())?;
    let (_server, flows) = synced_connections(&lab, 20_000, 4)?;
    // A few heartbeats more of both, then the recording is what an eavesdropper holds.
    more_heartbeats(&lab, gw1)?;
    recording.stop();
    eprintln!(
        "== recorded on gw2's port: {} datagrams gw2 → gw1, {} gw1 → gw2",
        recording.count(gw2, gw1)?,
        recording.count(gw1, gw2)?
    );

    let wrong = wrong_key(&lab)?;
    let right = lab.base().workdir().join(SYNC_KEY);
    let pcap = path(&recording.path);
    let stranger_mac = lab.base().mac_of(lab.base().stranger(), "eth0")?;
    let node_mac = lab.base().mac_of(lab.base().node(), "eth0")?;
    let udp_flow = format!(
        "udp:{POD_ADDRESS}:{FORWARD_POD_PORT}:{OUTSIDE_ADDRESS}:{}:{}",
        FORWARD_UDP.0, FORWARD_UDP.1
    );
    let tcp_flow = format!(
        "tcp:{POD_ADDRESS}:{}:{OUTSIDE_ADDRESS}:{}:{}",
        FORWARD_POD_PORT + 1,
        FORWARD_TCP.0,
        FORWARD_TCP.1
    );
    let port_forward = |format: &str, key: &std::path::Path, what: &str| {
        Forgery {
            source: scratch(format, key, &recording),
            ..Forgery::new(&format!("port forward, {format}{what}"), gw2, gw1, &[])
        }
        .arg("--message")
        .arg("portforward")
        .arg("--count")
        .arg("100")
        .arg("--node-mac")
        .arg(stranger_mac.clone())
        .arg("--tunnel-mac")
        .arg(EVIL_TUNNEL_MAC)
        .arg("--flow")
        .arg(udp_flow.clone())
        .arg("--flow")
        .arg(tcp_flow.clone())
    };
    let claimed = format!("udp:{POD_ADDRESS}:1:{OUTSIDE_ADDRESS}:{CLAIMED_PORT}:0");
    let every_port = |format: &str, key: &std::path::Path| {
        Forgery {
            source: scratch(format, key, &recording),
            ..Forgery::new(
                &format!("every NAT port toward {OUTSIDE_ADDRESS}:{CLAIMED_PORT}, {format}"),
                gw2,
                gw1,
                &[],
            )
        }
        .arg("--message")
        .arg("ports")
        .arg("--port-range")
        .arg(NAT_PORT_RANGE)
        .arg("--flow")
        .arg(claimed.clone())
    };
    let flood = |format: &str, key: &std::path::Path| {
        Forgery {
            source: scratch(format, key, &recording),
            ..Forgery::new(&format!("flood of immortal flows, {format}"), gw2, gw1, &[])
        }
        .arg("--message")
        .arg("flood")
        .arg("--count")
        .arg(FLOOD_BATCHES.to_string())
    };

    // Snapshots newer than anything done so far: the figures no forgery may move.
    let start = [
        lab.snapshot_after(gw1, SystemTime::now())?,
        lab.snapshot_after(gw2, SystemTime::now())?,
    ];
    let attacks = vec![
        Forgery::new(
            "recorded gw2 → gw1, replayed",
            gw2,
            gw1,
            &["replay", "--pcap", &pcap],
        ),
        Forgery::new(
            "recorded gw1 → gw2, sent back to gw1",
            gw2,
            gw1,
            &[
                "replay",
                "--pcap",
                &pcap,
                "--from",
                "192.168.50.11",
                "--to",
                "192.168.50.12",
            ],
        ),
        Forgery::new(
            "recorded gw2 → gw1, a byte flipped in the header, the body, the tag",
            gw2,
            gw1,
            &[
                "replay", "--pcap", &pcap, "--flip", "20", "--flip", "60", "--flip", "-1",
            ],
        ),
        port_forward("v1", &wrong, ""),
        port_forward("plain", &wrong, ""),
        port_forward("sealed", &wrong, " under a wrong key"),
        // The control: sealed with the gateways' own key, these pass authentication; they
        // echo no token, so they are refused as unconfirmed, not as forged.
        port_forward(
            "sealed",
            &right,
            " with the right key, echoing no token (control)",
        )
        .arg("--echo")
        .arg("zero")
        .arg("--expect")
        .arg("unconfirmed")
        .arg("--count")
        .arg("10"),
        flood("v1", &wrong),
        flood("sealed", &wrong),
        every_port("v1", &wrong),
        every_port("plain", &wrong),
        every_port("sealed", &wrong),
    ];
    let mut totals = BTreeMap::new();
    let mut datagrams = 0;
    for attack in &attacks {
        let forged = refused(&lab, attack)?;
        add(&mut totals, &forged.expect);
        datagrams += forged.sent.count;
    }
    let control = totals.get("unconfirmed").copied().unwrap_or(0);
    let after = [
        lab.snapshot_after(gw1, SystemTime::now())?,
        lab.snapshot(gw2)?,
    ];
    steady(gw1, &start[0], &after[0])?;
    steady(gw2, &start[1], &after[1])?;
    for (member, snapshot) in [(gw1, &after[0]), (gw2, &after[1])] {
        let node = snapshot
            .node(NODE_ADDRESS)
            .with_context(|| format!("{} lists no node {NODE_ADDRESS}", member.name()))?;
        ensure!(
            node.mac == node_mac && node.tunnel_mac != EVIL_TUNNEL_MAC,
            "{}'s binding of the node moved: {node:?} (the node's MAC is {node_mac})",
            member.name()
        );
    }
    // Upserts forged: port forwards (2 per datagram, 3 × 100 and the control's 10), the
    // floods (43 and 41 per batch), every port 3 times.
    let ports = 20_001;
    let upserts = 2 * 310 + u64::from(FLOOD_BATCHES) * (43 + 41) + 3 * ports;
    eprintln!(
        "   forged and replayed to gw1: {datagrams} datagrams, {upserts} upserts: 0 installed \
         (flows.live {} → {}, sync changes applied +{}, flows installed +{}); refused {totals:?} \
         (unconfirmed, {control}: those echoing no current token of gw1's: gw2's first \
         datagrams, gw1's own sent back, the control)",
        start[0].count("/flows/live"),
        after[0].count("/flows/live"),
        after[0].grew(&start[0], "/sync/received/changes"),
        after[0].grew(&start[0], "/sync/flows_installed"),
    );

    // The outside server probes the forged mappings: the port forwards, and three of the
    // ports claimed toward one destination.
    let outside = lab.base().outside();
    let at_stranger = Capture::start(lab.base().stranger(), "eth0")?;
    let at_node = Capture::start(lab.base().node(), "eth0")?;
    let before = lab.snapshot(gw1)?;
    let udp_probes: Vec<(u16, u16)> = vec![
        (FORWARD_UDP.0, FORWARD_UDP.1),
        (FORWARD_UDP.0, FORWARD_UDP.1),
        (FORWARD_UDP.0, FORWARD_UDP.1),
        (CLAIMED_PORT, 40_000),
        (CLAIMED_PORT, 50_000),
        (CLAIMED_PORT, 60_000),
    ];
    for (from, to) in &udp_probes {
        let socket = outside.run(|| UdpSocket::bind(endpoint(OUTSIDE_ADDRESS, *from)))??;
        socket.send_to(b"egret probe", endpoint(FLOATING_IP, *to))?;
    }
    let tcp = Generator::start(
        outside
            .command(PYTHON)
            .arg(scripts_dir().join("tcp_segments.py"))
            .args(["--src-ip", &OUTSIDE_ADDRESS.to_string()])
            .args(["--sport", &FORWARD_TCP.0.to_string()])
            .args(["--dst-ip", &FLOATING_IP.to_string()])
            .args(["--dport", &FORWARD_TCP.1.to_string()]),
        "tcp_segments.py",
    )?
    .finish(Duration::from_secs(30))?;
    let tcp_sent = tcp.count;
    let probes = udp_probes.len() as u64 + tcp_sent;
    let probed = lab.wait_snapshot(gw1, "the probes refused", SETTLE, |s| {
        s.grew(&before, "/drops/no_flow") >= probes
    })?;
    let (stranger_frames, node_frames) = (at_stranger.stop()?, at_node.stop()?);
    let stranger = egret_lab::ha::parse_mac(&stranger_mac)?;
    let delivered = carrying(
        &stranger_frames,
        &[FORWARD_UDP.0, FORWARD_TCP.0, CLAIMED_PORT],
    ) + carrying(&node_frames, &[FORWARD_UDP.0, FORWARD_TCP.0, CLAIMED_PORT]);
    let to_stranger = to_mac_from_floating_ip(&stranger_frames, stranger);
    eprintln!(
        "   probes to the forged mappings: {delivered} of {probes} delivered (no_flow +{}), \
         frames from the floating IP to the stranger: {to_stranger}",
        probed.grew(&before, "/drops/no_flow")
    );
    ensure!(
        delivered == 0 && to_stranger == 0 && probed.grew(&before, "/drops/no_flow") == probes,
        "probes went through forged mappings: {delivered} delivered, {to_stranger} frames to \
         the stranger, no_flow +{}",
        probed.grew(&before, "/drops/no_flow")
    );

    // The pod still opens flows to the destination whose every port was claimed.
    let before = lab.snapshot(gw1)?;
    let locals: Vec<SocketAddrV4> = (0..20).map(|i| endpoint(POD_ADDRESS, 30_000 + i)).collect();
    let opened = UdpFlows::open(
        lab.base().pod(),
        &locals,
        outside,
        endpoint(OUTSIDE_ADDRESS, CLAIMED_PORT),
        Duration::from_secs(5),
    )
    .context("the pod opening flows to the claimed destination")?;
    let after = lab.snapshot_after(gw1, SystemTime::now())?;
    let exhausted = after.grew(&before, "/drops/ports_exhausted");
    eprintln!(
        "   new flows to {OUTSIDE_ADDRESS}:{CLAIMED_PORT} after every port was claimed: {} of \
         {} opened, ports_exhausted +{exhausted} (NAT ports {:?}…)",
        opened.mapped().len(),
        locals.len(),
        opened
            .mapped()
            .iter()
            .take(3)
            .map(SocketAddrV4::port)
            .collect::<Vec<_>>()
    );
    ensure!(exhausted == 0, "ports_exhausted grew by {exhausted}");
    eprintln!(
        "figure: forged sync to the master: 0 of {upserts} forged upserts installed \
         ({datagrams} datagrams: {totals:?}), 0 of {probes} probes through forged mappings \
         delivered, {}/{} new flows to the claimed destination (before: an inbound port \
         forward opened with its replies tunnelled to the attacker; 1,200 datagrams took every \
         port toward one destination; 4,700 filled the table with immortal flows)",
        opened.mapped().len(),
        locals.len()
    );
    let broken: Vec<_> = flows
        .states()
        .into_iter()
        .filter(|f| f.error.is_some())
        .collect();
    ensure!(broken.is_empty(), "connections broke: {broken:?}");
    Ok(())
}

#[test]
fn forged_restarts_and_sweeps_to_the_backup_do_not_cost_a_connection_at_failover() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let (gw1, gw2) = (Member::Gw1, Member::Gw2);
    let (mut lab, mut recording) = recorded_lab("hsyncfo", HaConfig::default())?;
    {
        // Clear of the pod ports the failover's traffic binds (20000 and up, 41000 and up).
        let (_server, _flows) = synced_connections(&lab, 36_000, 4)?;
        more_heartbeats(&lab, gw2)?;
    }
    recording.stop();
    eprintln!(
        "== recorded on gw2's port: {} datagrams gw1 → gw2",
        recording.count(gw1, gw2)?
    );
    let wrong = wrong_key(&lab)?;
    let pcap = path(&recording.path);
    // In gw1's name to gw2: its datagrams replayed and altered, and forged restarts (a new
    // epoch) announcing an empty full table, which would sweep every flow of gw1's from
    // gw2, or claiming priority 254.
    let sweep = |format: &str| {
        Forgery {
            source: scratch(format, &wrong, &recording),
            ..Forgery::new(
                &format!("a restart of gw1 with an empty full resync, {format}"),
                gw1,
                gw2,
                &[],
            )
        }
        .arg("--epoch")
        .arg("new")
        .arg("--message")
        .arg("sweep")
        .arg("--count")
        .arg("50")
    };
    let forgeries = [
        Forgery::new(
            "recorded gw1 → gw2, replayed",
            gw1,
            gw2,
            &["replay", "--pcap", &pcap],
        ),
        Forgery::new(
            "recorded gw1 → gw2, a byte flipped",
            gw1,
            gw2,
            &[
                "replay", "--pcap", &pcap, "--flip", "20", "--flip", "60", "--flip", "-1",
            ],
        ),
        sweep("v1"),
        sweep("plain"),
        sweep("sealed"),
        Forgery {
            source: scratch("sealed", &wrong, &recording),
            ..Forgery::new(
                "a restart of gw1 claiming priority 254, sealed",
                gw1,
                gw2,
                &[],
            )
        }
        .arg("--epoch")
        .arg("new")
        .arg("--message")
        .arg("heartbeat")
        .arg("--count")
        .arg("50"),
    ];
    let rounds = (0..20)
        .map(|_| {
            forgeries
                .iter()
                .map(|f| {
                    let paced = Forgery {
                        rate: 500,
                        ..f.clone()
                    };
                    Ok((paced.what.clone(), paced.command(&lab)?))
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    let before = lab.snapshot(gw2)?;
    let rcvbuf = rcvbuf_errors(&lab, gw2)?;
    let barrage = Barrage::start(rounds);
    let load = Load {
        flows: 60,
        warmup: Duration::from_secs(3),
        ..Load::default()
    };
    let report = lab.failover(Failure::Kill, &load);
    let forged = barrage.stop()?;
    let report = report?;
    eprintln!("   {}", report.summary());
    // Every kind of forgery reached gw2 while it held gw1's flows, before the kill.
    let first_round_done = forged
        .get(forgeries.len() - 1)
        .map(|f| f.sent.last)
        .context("not one round of forgeries ran")?;
    ensure!(
        first_round_done < report.at,
        "the first round of forgeries ended after gw1 was killed"
    );
    let before_kill = forged.iter().filter(|f| f.sent.last < report.at).count();
    let all: Vec<&Forged> = forged.iter().collect();
    let after = counted(&lab, gw2, &before, rcvbuf, &all)?;
    let mut expect = BTreeMap::new();
    for f in &forged {
        add(&mut expect, &f.expect);
    }
    let grown: BTreeMap<String, u64> = after.grown(&before, "/sync/drops").into_iter().collect();
    let datagrams: u64 = forged.iter().map(|f| f.sent.count).sum();
    eprintln!(
        "   spoofing gw1 to gw2 during the failover: {} forgeries ({before_kill} before the \
         kill), {datagrams} datagrams; gw2 refused {grown:?}; restarts of gw1 seen +{}, flows \
         swept +{}; connections alive {}/{}",
        forged.len(),
        after.grew(&before, "/sync/peers/0/restarts"),
        after.grew(&before, "/sync/flows_swept"),
        report.flows_alive(),
        report.flows.len()
    );
    refusals_match(gw2, "spoofing gw1 during the failover", &grown, &expect)?;
    ensure!(
        after.grew(&before, "/sync/peers/0/restarts") == 0
            && after.grew(&before, "/sync/flows_swept") == 0,
        "gw2 followed a forged restart or sweep: {}",
        after.body["sync"]
    );
    let shortfalls = report.survival_shortfalls();
    ensure!(
        shortfalls.is_empty(),
        "the failover under forgery lost: {shortfalls:?}\n{}",
        lab.evidence()
    );
    eprintln!(
        "figure: forged restarts, sweeps and replays to the backup ({datagrams} datagrams, all \
         refused): {}/{} connections survived the failover, messaging survived {} (before: 0/20 \
         survived)",
        report.flows_alive(),
        report.flows.len(),
        report.messenger_survived()
    );
    Ok(())
}

#[test]
fn spoofed_resync_requests_start_no_resync() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let (gw1, gw2) = (Member::Gw1, Member::Gw2);
    let (lab, mut recording) = recorded_lab("hresync", HaConfig::default())?;
    // A table worth resyncing: TABLE UDP flows (5 minutes to live), synced to gw2.
    let table = 3000;
    {
        let _sink = drop_udp(&lab, "20000-59999")?;
        let before = [lab.snapshot(gw1)?, lab.snapshot(gw2)?];
        let churn = udp_churn(&lab, 33_000, 20_000, table, 3000)?;
        lab.wait_snapshot(gw2, "gw1's table installed", Duration::from_secs(20), |s| {
            s.grew(&before[1], "/flows/live") >= u64::from(table)
        })?;
        churn.stop(Duration::from_secs(2))?;
    }
    recording.stop();
    let wrong = wrong_key(&lab)?;
    let pcap = path(&recording.path);
    let flood = Duration::from_secs(5);
    let resync = |format: &str, rate: u32| {
        Forgery {
            source: scratch(format, &wrong, &recording),
            ..Forgery::new(&format!("ResyncRequests, {format}"), gw2, gw1, &[])
        }
        .arg("--message")
        .arg("resync")
        .arg("--count")
        .arg("100")
        .paced(rate, flood)
    };
    let forgeries = [
        Forgery::new(
            "ResyncRequests recorded from gw2, replayed",
            gw2,
            gw1,
            &["replay", "--pcap", &pcap, "--kind", "4"],
        )
        .paced(1000, flood),
        resync("plain", 1500),
        resync("sealed", 1500),
        resync("v1", 500),
    ];
    let before = [lab.snapshot(gw1)?, lab.snapshot(gw2)?];
    let rcvbuf = rcvbuf_errors(&lab, gw1)?;
    let running = forgeries
        .iter()
        .map(|f| f.start(&lab))
        .collect::<Result<Vec<_>>>()?;
    let forged = running
        .into_iter()
        .map(Running::finish)
        .collect::<Result<Vec<_>>>()?;
    let all: Vec<&Forged> = forged.iter().collect();
    let after = [
        counted(&lab, gw1, &before[0], rcvbuf, &all)?,
        lab.snapshot(gw2)?,
    ];
    let requests: u64 = forged.iter().map(|f| f.sent.count).sum();
    let mut expect = BTreeMap::new();
    for f in &forged {
        add(&mut expect, &f.expect);
    }
    let grown: BTreeMap<String, u64> = after[0]
        .grown(&before[0], "/sync/drops")
        .into_iter()
        .collect();
    let sent = after[0].grew(&before[0], "/sync/sent/bytes");
    let received = after[0].grew(&before[0], "/sync/received/bytes");
    let window = after[0]
        .taken
        .duration_since(before[0].taken)
        .unwrap_or_default();
    let resyncs = after[0].grew(&before[0], "/sync/resyncs_sent");
    // What one full resync of this table costs: its batches of 41 flows, sealed.
    let resync_bytes = u64::from(table).div_ceil(41) * (56 + 41 * 32 + 16);
    eprintln!(
        "   spoofed ResyncRequests: {requests} in {:.1?} → {resyncs} resyncs started (one would \
         be about {} KiB); gw1 sent {} KiB for {} KiB received over {:.1?} (ratio {:.3}); refused \
         {grown:?}",
        flood,
        resync_bytes / 1024,
        sent / 1024,
        received / 1024,
        window,
        sent as f64 / received.max(1) as f64
    );
    refusals_match(gw1, "spoofed ResyncRequests", &grown, &expect)?;
    ensure!(
        !grown.contains_key("resync_rate_limited"),
        "ResyncRequests reached the rate limit: {grown:?}"
    );
    ensure!(
        resyncs == 0
            && after[0].grew(&before[0], "/sync/peers/0/resyncs_sent") == 0
            && after[1].grew(&before[1], "/sync/peers/0/resyncs_received") == 0,
        "gw1 resynced: {}",
        after[0].body["sync"]
    );
    ensure!(
        sent * 10 < received,
        "gw1 sent {sent} bytes for {received} received: more than a tenth"
    );
    eprintln!(
        "figure: {requests} spoofed ResyncRequests in {:.0?}: {resyncs} resyncs, gw1 sent {} KiB \
         for {} KiB received, ratio {:.3} (before: 24,650 in 20 s caused 108 full resyncs, 510 \
         MiB, about 300 times what was received)",
        flood,
        sent / 1024,
        received / 1024,
        sent as f64 / received.max(1) as f64
    );
    Ok(())
}

/// nftables in the outside server's namespace drops UDP to `ports` without an answer (the
/// churn's destinations): no ICMP error comes back through the gateways. Removed when the
/// guard drops.
fn drop_udp<'a>(lab: &'a HaLab, ports: &str) -> Result<NftTable<'a>> {
    NftTable::add(
        lab,
        lab.base().outside(),
        "egret_lab_sink",
        &[("input", &format!("udp dport {ports} drop"))],
    )
}

/// An nftables table in a lab namespace, deleted when dropped.
struct NftTable<'a> {
    ns: &'a egret_lab::NetNs,
    name: String,
}

impl<'a> NftTable<'a> {
    /// Adds table `ip <name>` to `ns` with a filter chain per `(hook, rule)`: `rule` on that
    /// hook, every other packet accepted.
    fn add(
        lab: &HaLab,
        ns: &'a egret_lab::NetNs,
        name: &str,
        chains: &[(&str, &str)],
    ) -> Result<Self> {
        let mut ruleset = format!("table ip {name} {{\n");
        for (hook, rule) in chains {
            ruleset.push_str(&format!(
                "    chain {hook} {{\n        type filter hook {hook} priority 0; policy accept;\n        {rule}\n    }}\n"
            ));
        }
        ruleset.push_str("}\n");
        let file = lab.base().workdir().join(format!("{name}.nft"));
        fs::write(&file, ruleset)?;
        ns.exec("nft", [std::ffi::OsStr::new("-f"), file.as_os_str()])?;
        Ok(Self {
            ns,
            name: name.to_owned(),
        })
    }
}

impl Drop for NftTable<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.ns.exec("nft", ["delete", "table", "ip", &self.name]) {
            eprintln!("egret-lab: deleting nft table {}: {err:#}", self.name);
        }
    }
}

/// `udp_churn.py` in the pod's namespace: from the pod's `source_port` to `ports`
/// destination ports of the outside server from `first_port`, `rate` datagrams a second.
fn udp_churn(
    lab: &HaLab,
    source_port: u16,
    first_port: u16,
    ports: u16,
    rate: u32,
) -> Result<Background> {
    let mut churn = Background::spawn(
        lab.base()
            .pod()
            .command(PYTHON)
            .arg(scripts_dir().join("udp_churn.py"))
            .args([
                POD_ADDRESS.to_string(),
                source_port.to_string(),
                OUTSIDE_ADDRESS.to_string(),
                first_port.to_string(),
                ports.to_string(),
                rate.to_string(),
            ]),
    )?;
    churn.ready(Duration::from_secs(10))?;
    Ok(churn)
}

/// Closes a connection with a reset (`SO_LINGER` 0, then close), as an application that
/// aborts it does.
fn reset(stream: TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid descriptor and a linger struct of the size given.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    ensure!(set == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    drop(stream);
    Ok(())
}

/// The retransmission ring of a gateway's sync: live batches kept per peer.
const RING: u64 = 4096;

#[test]
fn a_full_resync_sweeps_the_flows_the_master_closed_while_the_sync_was_cut() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let (gw1, gw2) = (Member::Gw1, Member::Gw2);
    let mut lab = HaLab::new(
        "hsweep",
        HaConfig {
            unicast: true,
            nat: vec![
                ("udp_timeout".into(), "\"1s\"".into()),
                ("tcp_closed_timeout".into(), "\"1s\"".into()),
            ],
            ..HaConfig::default()
        },
    )?;
    let master = lab.start_both()?;
    ensure!(
        master == gw1,
        "{} is master\n{}",
        master.name(),
        lab.evidence()
    );

    // Survivors: connections that live through everything. Doomed: connections gw1 closes
    // while gw2 cannot hear of it.
    let survivors = 5_u16;
    let doomed = 20_usize;
    let (_echo, survivor_flows) = synced_connections(&lab, 21_000, survivors)?;
    let doomed_port = 7310;
    let listener = lab
        .base()
        .outside()
        .run(|| TcpListener::bind(endpoint(OUTSIDE_ADDRESS, doomed_port)))??;
    let held = lab.snapshot(gw2)?;
    let pod_ends = lab.base().pod().run(|| {
        (0..doomed)
            .map(|_| {
                TcpStream::connect_timeout(
                    &SocketAddr::from(endpoint(OUTSIDE_ADDRESS, doomed_port)),
                    Duration::from_secs(5),
                )
            })
            .collect::<std::io::Result<Vec<_>>>()
    })??;
    let mut outside_ends = Vec::new();
    let mut nat_ports = Vec::new();
    for _ in 0..doomed {
        let (mut stream, peer) = listener.accept()?;
        ensure!(
            peer.ip() == std::net::IpAddr::V4(FLOATING_IP),
            "a doomed connection came from {peer}"
        );
        stream.write_all(b"hello")?;
        nat_ports.push(peer.port());
        outside_ends.push(stream);
    }
    let doomed_u64 = u64::try_from(doomed)?;
    lab.wait_snapshot(gw2, "the doomed connections installed", SETTLE, |s| {
        s.grew(&held, "/flows/live") >= doomed_u64
    })?;
    // gw1 publishes its status every 250 ms: wait for one that holds them all.
    let live = lab
        .wait_snapshot(gw1, "the doomed connections' flows", SETTLE, |s| {
            s.count("/flows/live") >= u64::from(survivors) + doomed_u64
        })?
        .count("/flows/live");

    // The outage: gw2's namespace drops the sync both ways.
    let cut = NftTable::add(
        &lab,
        lab.ns(gw2),
        "egret_lab_cut",
        &[
            ("input", "udp dport 4801 drop"),
            ("output", "udp dport 4801 drop"),
        ],
    )?;
    let at_cut = [lab.snapshot(gw1)?, lab.snapshot(gw2)?];
    for stream in pod_ends {
        reset(stream)?;
    }
    lab.wait_snapshot(gw1, "the reset connections deleted", SETTLE, |s| {
        s.count("/flows/live") + doomed_u64 <= live
    })?;
    // The churn: more batches than the ring holds.
    let seq = at_cut[0].peer("last_sent_seq");
    let sink = drop_udp(&lab, "20000-59999")?;
    let churn_started = Instant::now();
    let churn = udp_churn(&lab, 33_000, 20_000, 30_000, 8000)?;
    let churned = lab.wait_snapshot(
        gw1,
        "more batches than the ring holds streamed into the outage",
        Duration::from_secs(120),
        |s| s.peer("last_sent_seq") >= seq + RING + RING / 8,
    );
    let sent = churn.stop(Duration::from_secs(2))?;
    let churned = churned?;
    let churn_time = churn_started.elapsed();
    // Every one of them, with its 1 s timeout: one linked behind the expiry wheel's cursor
    // would stay a whole turn of the wheel (4096 s).
    lab.wait_snapshot(gw1, "the churn's flows expired", SETTLE, |s| {
        s.count("/flows/live") + doomed_u64 <= live
    })?;
    drop(sink);
    let in_outage = lab.snapshot(gw2)?;
    ensure!(
        in_outage.count("/flows/live") == at_cut[1].count("/flows/live"),
        "gw2's table changed during the outage: {} → {}",
        at_cut[1].count("/flows/live"),
        in_outage.count("/flows/live")
    );
    drop(cut);

    let swept = lab.wait_snapshot(
        gw2,
        "the full resync and its sweep",
        Duration::from_secs(30),
        |s| {
            s.grew(&at_cut[1], "/sync/peers/0/resyncs_received") >= 1
                && s.grew(&at_cut[1], "/sync/flows_swept") >= doomed_u64
        },
    )?;
    let now_gw1 = lab.snapshot(gw1)?;
    let (held_gw2, kept) = (at_cut[1].count("/flows/live"), swept.count("/flows/live"));
    eprintln!(
        "   sync cut for {:.1?}: gw1 streamed {} batches ({} changes, ring {RING}; churn {}) \
         and reset {doomed} connections; after the outage gw2 took {} full resync(s) and swept \
         {} flows: its table {held_gw2} → {kept} (gw1 {})",
        churn_time,
        churned.peer("last_sent_seq") - seq,
        churned.grew(&at_cut[0], "/sync/sent/changes"),
        sent.stdout.join(" "),
        swept.grew(&at_cut[1], "/sync/peers/0/resyncs_received"),
        swept.grew(&at_cut[1], "/sync/flows_swept"),
        now_gw1.count("/flows/live"),
    );
    ensure!(
        swept.grew(&at_cut[1], "/sync/flows_swept") == doomed_u64
            && kept == now_gw1.count("/flows/live"),
        "gw2 swept {} flows (expected {doomed}) and holds {kept} (gw1 {})",
        swept.grew(&at_cut[1], "/sync/flows_swept"),
        now_gw1.count("/flows/live")
    );

    // Failover: the old NAT ports lead nowhere on the new master.
    lab.kill(gw1)?;
    lab.wait_master(gw2, Duration::from_secs(10))?;
    let gw2_mac = lab.mac(gw2)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.router_neighbour()? != Some(gw2_mac) {
        ensure!(
            Instant::now() < deadline,
            "the router still sends the floating IP to gw1"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let at_pod = Capture::start(lab.base().pod(), "eth0")?;
    let at_node = Capture::start(lab.base().node(), "eth0")?;
    let before = lab.snapshot(gw2)?;
    let mut probe = lab.base().outside().command(PYTHON);
    probe
        .arg(scripts_dir().join("tcp_segments.py"))
        .args(["--src-ip", &OUTSIDE_ADDRESS.to_string()])
        .args(["--sport", &doomed_port.to_string()])
        .args(["--dst-ip", &FLOATING_IP.to_string()]);
    for port in nat_ports.iter().take(3) {
        probe.args(["--dport", &port.to_string()]);
    }
    let probes =
        Generator::start(&mut probe, "tcp_segments.py")?.finish(Duration::from_secs(30))?;
    let refused = lab.wait_snapshot(gw2, "the probes refused", SETTLE, |s| {
        s.grew(&before, "/drops/no_flow") >= probes.count
    })?;
    let (pod_frames, node_frames) = (at_pod.stop()?, at_node.stop()?);
    let reached = carrying(&pod_frames, &[doomed_port]) + carrying(&node_frames, &[doomed_port]);
    let answered = pod_frames
        .iter()
        .filter(|f| f.outgoing && f.ipv4().is_some_and(|ip| ip.destination == OUTSIDE_ADDRESS))
        .filter(|f| {
            let l4 = 14 + usize::from(f.bytes[14] & 0x0f) * 4;
            f.bytes.get(l4 + 2..l4 + 4) == Some(&doomed_port.to_be_bytes()[..])
        })
        .count();
    let survivors_now = survivor_flows.states();
    eprintln!(
        "   after the failover: outside segments to {} old NAT ports: {reached} of {} reached \
         the pod, {answered} answers (no_flow +{}); survivors without error: {}/{survivors}",
        nat_ports.len().min(3),
        probes.count,
        refused.grew(&before, "/drops/no_flow"),
        survivors_now.iter().filter(|f| f.error.is_none()).count()
    );
    ensure!(
        reached == 0 && answered == 0,
        "{reached} segments to old NAT ports reached the pod, which answered {answered}"
    );
    eprintln!(
        "figure: {doomed} connections reset during a sync outage of {} batches (ring {RING}): \
         {} swept from the backup by the full resync; after failover 0 of {} outside segments \
         to their old NAT ports reached the pod (before: the closed flow stayed on the backup \
         holding its port, and after failover an outside packet reached the old pod, which \
         answered RST)",
        churned.peer("last_sent_seq") - seq,
        swept.grew(&at_cut[1], "/sync/flows_swept"),
        probes.count
    );
    drop(outside_ends);
    Ok(())
}
