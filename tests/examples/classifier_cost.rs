//! What the node classifier (`egret_node_classify`, TC ingress of the pod interfaces) costs
//! the traffic it does not tunnel, measured side by side on the agent lab
//! ([`egret_lab::AgentLab`]: node1's agent only, no gateway); needs root and a built agent
//! (`EGRET_AGENT_BIN`, or `target/release`).
//!
//! node1's agent runs one large static config ([`egret_lab::egress::scale_config`]): 1,000
//! policies selecting 10,000 source /32s between them, pod-a1 (10.10.1.5) among them, none
//! toward the outside host. pod-a1 sends 64-byte IPv4 packets (36 bytes of UDP payload) to
//! the outside host (198.51.100.10): the classifier finds the source in its first LPM trie
//! and the (class, destination) pair in neither the second nor anywhere (counted as
//! `classify_skipped`), so the packet goes on untouched; node1 forwards it and masquerades
//! it to its own address, the router forwards it to the outside host. Three kinds of run:
//!
//! - **baseline**: the same config with `pod_interfaces = ["nomatch*"]`: the same maps, the
//!   same masquerade table, the tunnel device and its programs, but no classifier on any pod
//!   interface (checked: no link pinned for veth-a1, `classify_packets` does not move);
//! - **classifier**: `pod_interfaces = ["veth-*"]` (checked: veth-a1's link is pinned, and
//!   `classify_skipped` counts every packet);
//! - **classifier+stats**: the same with the kernel's BPF run-time statistics on
//!   (`BPF_ENABLE_STATS`, what `kernel.bpf_stats_enabled=1` does, held by a file descriptor
//!   so that it ends with this program whatever happens); the program's `run_time_ns` and
//!   `run_cnt` over the window give its own cost per packet. These runs pay for the
//!   statistics themselves (two clock reads per run), so they are kept out of the ratio.
//!
//! Switching between baseline and classifier runs `egret-agent uninstall` and starts the
//! agent afresh on the other config. Rounds alternate the order (baseline, classifier,
//! classifier+stats, then the reverse). Each run sends for 0.5 s before and during a window
//! of SECONDS, and counts the packets the outside host's interface received in the window
//! (`/proc/net/dev` there): packets/s delivered. An unread UDP socket there takes them (no
//! ICMP errors back). The sender: SENDERS threads (default 2, one per CPU here), each with
//! its own connected socket (its own flow) in pod-a1, `sendmmsg` 64 packets at a time; the
//! kernel forwards every hop of the lab on the sending CPU, inside the send call, so the
//! rate is what the path costs. This pushes the most packets here: about 330k/s with two
//! threads, 165k/s with one, 118k/s with `EGRET_SENDER=iperf3` (one `iperf3 -u -b 0 -l 36`
//! instead, which also makes its server read every packet).
//!
//! Prints every run, the medians, classifier/baseline (of the medians, and per round), the
//! extra CPU time per packet that the rates imply, the program's own ns per packet, and the
//! value of `kernel.bpf_stats_enabled` before and after.
//!
//! ```text
//! classifier_cost [ROUNDS] [SECONDS] [SENDERS]
//!     (env EGRET_ROUNDS, EGRET_SECONDS, EGRET_SENDERS; defaults 5 rounds, 5 s, 2 senders)
//! ```

use std::{
    fs,
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};
use egret_lab::{
    AgentLab, NetNs,
    egress::{
        AgentConfig, NODE1_ADDRESS, Node, OUTSIDE_ADDRESS, Pod, check_interrupted, program_main,
        scale_config, sleep_unless_interrupted,
    },
    setting,
    topology::iperf3_server,
};

/// UDP payload of a 64-byte IPv4 packet: 64 - 20 (IPv4) - 8 (UDP).
const PAYLOAD: usize = 36;
/// The outside port of the unread socket.
const PORT: u16 = 9000;
const IPERF_PORT: u16 = 5201;
/// Packets per `sendmmsg`.
const BATCH: usize = 64;
/// Sending before the window opens.
const WARM_UP: Duration = Duration::from_millis(500);
const POLICIES: usize = 1000;
const SOURCES: usize = 10_000;
const POD: Pod = Pod::A1;
const NODE: Node = Node::Node1;
const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Baseline,
    Classifier,
    ClassifierStats,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Classifier => "classifier",
            Kind::ClassifierStats => "classifier+stats",
        }
    }

    fn classifier(self) -> bool {
        self != Kind::Baseline
    }
}

/// One run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    round: usize,
    kind: Kind,
    /// Delivered to the outside host per second, in the window.
    pps: f64,
    /// Sent per second (the send loop only), in the window.
    sent_pps: Option<f64>,
    /// `classify_packets` and `classify_skipped` over the whole run (warm-up included).
    classified: u64,
    skipped: u64,
    /// The program's own cost: run_time_ns / run_cnt over the window (stats runs only).
    ns_per_run: Option<f64>,
    runs: Option<u64>,
}

fn main() -> ExitCode {
    program_main("classifier_cost", || {
        let before = fs::read_to_string(STATS_SYSCTL).unwrap_or_default();
        let result = run();
        let after = fs::read_to_string(STATS_SYSCTL).unwrap_or_default();
        println!(
            "kernel.bpf_stats_enabled: {} before, {} after",
            before.trim(),
            after.trim()
        );
        result
    })
}

fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root: it builds network namespaces and loads eBPF programs"
    );
    let rounds: usize = setting(1, Some("EGRET_ROUNDS"), 5, 1..=1000)?;
    let seconds: usize = setting(2, Some("EGRET_SECONDS"), 5, 1..=1000)?;
    let senders: usize = setting(3, Some("EGRET_SENDERS"), 2, 1..=1000)?;
    let iperf = match std::env::var("EGRET_SENDER").as_deref() {
        Ok("iperf3") => true,
        Ok("mmsg") | Err(_) => false,
        Ok(other) => bail!("EGRET_SENDER: {other:?} is neither mmsg nor iperf3"),
    };
    let window = Duration::from_secs(u64::try_from(seconds)?);
    let cpus = thread::available_parallelism().map_or(1, usize::from);

    let mut lab = AgentLab::new("clscost")?;
    let big = scale_config(lab.agent_config(NODE), POLICIES, SOURCES, POD);
    let classifier_config = AgentConfig {
        pod_interfaces: vec!["veth-*".to_owned()],
        ..big.clone()
    };
    let baseline_config = AgentConfig {
        pod_interfaces: vec!["nomatch*".to_owned()],
        ..big
    };
    let destination = SocketAddrV4::new(OUTSIDE_ADDRESS, PORT);
    // Takes the packets without reading them: no ICMP errors, the least work there.
    let _sink = lab
        .outside()
        .run(|| UdpSocket::bind(destination))?
        .context("binding the sink in the outside namespace")?;
    let _iperf_server = if iperf {
        Some(iperf3_server(lab.outside(), OUTSIDE_ADDRESS, IPERF_PORT)?)
    } else {
        None
    };
    let sender = if iperf {
        "one iperf3 -u -b 0 -l 36".to_owned()
    } else {
        format!("{senders} sendmmsg thread(s), {BATCH} packets per call")
    };
    println!(
        "node1's agent: {POLICIES} policies, {SOURCES} source /32s ({} among them); \
         64-byte IPv4 packets {} → {destination}, masqueraded to {NODE1_ADDRESS}; \
         sender: {sender}; {rounds} rounds of {seconds} s windows; {} CPUs, nothing pinned",
        POD.address(),
        POD.address(),
        cpus
    );

    let mut runs: Vec<Run> = Vec::new();
    let mut current: Option<Kind> = None;
    for round in 1..=rounds {
        let order = if round % 2 == 1 {
            [Kind::Baseline, Kind::Classifier, Kind::ClassifierStats]
        } else {
            [Kind::ClassifierStats, Kind::Classifier, Kind::Baseline]
        };
        for kind in order {
            check_interrupted()?;
            if current.map(Kind::classifier) != Some(kind.classifier()) {
                let config = if kind.classifier() {
                    &classifier_config
                } else {
                    &baseline_config
                };
                switch(&mut lab, config.clone())
                    .with_context(|| format!("switching to {}", kind.name()))?;
                current = Some(kind);
            }
            check_classifier(&lab, kind.classifier())?;
            let run = measure(&lab, round, kind, window, senders, iperf)
                .with_context(|| format!("round {round}, {}", kind.name()))?;
            print_run(&run);
            runs.push(run);
            sleep_unless_interrupted(Duration::from_millis(500))?;
        }
    }
    if lab.agent_running(NODE) {
        lab.kill_agent(NODE)?;
    }
    summary(&runs, if iperf { 1 } else { senders.min(cpus) });
    Ok(())
}

/// Starts node1's agent afresh on `config`: the old one killed, everything it made removed.
fn switch(lab: &mut AgentLab, config: AgentConfig) -> Result<()> {
    if lab.agent_running(NODE) {
        lab.kill_agent(NODE)?;
        lab.agent_uninstall(NODE)?;
    }
    lab.set_agent_config(config)?;
    lab.start_agent(NODE)?;
    // The path works (and every neighbour on it is resolved) before it is measured.
    let replies = lab.pod(POD).ping("eth0", OUTSIDE_ADDRESS.into(), 3)?;
    ensure!(replies > 0, "{} cannot ping the outside host", POD.name());
    Ok(())
}

/// The pinned link of the classifier on the pod's veth, if there is one.
fn classifier_link(lab: &AgentLab) -> Result<Option<std::path::PathBuf>> {
    let ifindex = lab.node(NODE).run(|| {
        let name = std::ffi::CString::new(POD.veth()).expect("no NUL");
        // SAFETY: a NUL-terminated string that outlives the call.
        unsafe { libc::if_nametoindex(name.as_ptr()) }
    })?;
    ensure!(ifindex != 0, "{} has no {}", NODE.name(), POD.veth());
    let prefix = format!("{ifindex}-ingress-egret_node_classify-");
    let links = lab.pin_path(NODE).join("links");
    let mut found = Vec::new();
    for entry in fs::read_dir(&links).with_context(|| format!("reading {}", links.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            found.push(entry.path());
        }
    }
    ensure!(found.len() <= 1, "more than one classifier link: {found:?}");
    Ok(found.pop())
}

fn check_classifier(lab: &AgentLab, expected: bool) -> Result<()> {
    let link = classifier_link(lab)?;
    ensure!(
        link.is_some() == expected,
        "the classifier is {} on {} but should {}be: {link:?}",
        if link.is_some() { "attached" } else { "absent" },
        POD.veth(),
        if expected { "" } else { "not " }
    );
    Ok(())
}

/// The classifier program's (run_time_ns, run_cnt), found through its link on the pod veth.
fn program_stats(link: &Path) -> Result<(u64, u64)> {
    let link: FdLink = PinnedLink::from_pin(link)
        .with_context(|| format!("opening {}", link.display()))?
        .into();
    let id = link.info()?.program_id();
    for info in loaded_programs() {
        let info = info?;
        if info.id() == id {
            let nanos = u64::try_from(info.run_time().as_nanos())?;
            return Ok((nanos, info.run_count()));
        }
    }
    bail!("no loaded program with id {id}")
}

/// Packets the outside host's `eth0` received so far (`/proc/net/dev` of its namespace).
fn rx_packets(ns: &NetNs) -> Result<u64> {
    let text = ns.run(|| fs::read_to_string("/proc/thread-self/net/dev"))??;
    let line = text
        .lines()
        .find(|line| line.trim_start().starts_with("eth0:"))
        .context("no eth0 in /proc/net/dev")?;
    // "eth0: bytes packets errs drop ..." (receive side first).
    let fields: Vec<&str> = line
        .split_once(':')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    fields
        .get(1)
        .and_then(|packets| packets.parse().ok())
        .with_context(|| format!("cannot read {line:?}"))
}

fn counters(lab: &AgentLab) -> Result<(u64, u64, u64)> {
    let status = lab.agent_status(NODE)?;
    Ok((
        status.counter("classify_packets")?,
        status.counter("classify_skipped")?,
        status.counter("tunnel_out_packets")?,
    ))
}

fn measure(
    lab: &AgentLab,
    round: usize,
    kind: Kind,
    window: Duration,
    senders: usize,
    iperf: bool,
) -> Result<Run> {
    let link = classifier_link(lab)?;
    let before = counters(lab)?;
    let stats = if kind == Kind::ClassifierStats {
        Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?)
    } else {
        None
    };
    let read_program = || -> Result<Option<(u64, u64)>> {
        match (&stats, &link) {
            (Some(_), Some(link)) => Ok(Some(program_stats(link)?)),
            _ => Ok(None),
        }
    };
    let outside = lab.outside();
    let Window {
        delivered,
        elapsed,
        sent,
        program,
    } = if iperf {
        let seconds = (WARM_UP + window).as_secs() + 2;
        let client = lab
            .pod(POD)
            .command("iperf3")
            .args(["-c", &OUTSIDE_ADDRESS.to_string()])
            .args(["-B", &POD.address().to_string()])
            .args(["-p", &IPERF_PORT.to_string()])
            .args(["-u", "-b", "0", "-l", &PAYLOAD.to_string()])
            .args(["-t", &seconds.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting iperf3")?;
        let mut client = ChildGuard(client);
        sleep_unless_interrupted(WARM_UP)?;
        let (rx0, p0, t0) = (rx_packets(outside)?, read_program()?, Instant::now());
        sleep_unless_interrupted(window)?;
        let (rx1, p1, t1) = (rx_packets(outside)?, read_program()?, Instant::now());
        let status = client.0.wait()?;
        ensure!(status.success(), "iperf3 failed: {status}");
        let program = p0.zip(p1).map(|(a, b)| (b.0 - a.0, b.1 - a.1));
        Window {
            delivered: rx1 - rx0,
            elapsed: t1 - t0,
            sent: None,
            program,
        }
    } else {
        blast(lab, senders, window, &read_program)?
    };
    drop(stats);
    let after = counters(lab)?;
    let run = Run {
        round,
        kind,
        pps: delivered as f64 / elapsed.as_secs_f64(),
        sent_pps: sent.map(|sent| sent as f64 / elapsed.as_secs_f64()),
        classified: after.0 - before.0,
        skipped: after.1 - before.1,
        ns_per_run: program
            .filter(|(_, count)| *count > 0)
            .map(|(nanos, count)| nanos as f64 / count as f64),
        runs: program.map(|(_, count)| count),
    };
    ensure!(
        after.2 == before.2,
        "{} packets were tunnelled",
        after.2 - before.2
    );
    if kind.classifier() {
        ensure!(
            run.skipped >= delivered,
            "the classifier skipped {} packets, fewer than the {delivered} delivered",
            run.skipped
        );
    } else {
        ensure!(
            run.classified == 0,
            "the classifier saw {} packets in a baseline run",
            run.classified
        );
    }
    Ok(run)
}

/// What one window saw.
struct Window {
    /// Packets the outside host received.
    delivered: u64,
    elapsed: Duration,
    /// Packets sent (the send loops only).
    sent: Option<u64>,
    /// The classifier program's (run_time_ns, run_cnt) over the window (stats runs only).
    program: Option<(u64, u64)>,
}

/// Kills the child when dropped (an iperf3 client that outlives a failure).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The send loops: `senders` threads, each its own connected socket made in the pod,
/// `sendmmsg` of [`BATCH`] packets in a loop, for the warm-up and the window.
fn blast(
    lab: &AgentLab,
    senders: usize,
    window: Duration,
    read_program: &dyn Fn() -> Result<Option<(u64, u64)>>,
) -> Result<Window> {
    let sockets: Vec<UdpSocket> = (0..senders)
        .map(|_| {
            lab.pod(POD)
                .run(|| -> std::io::Result<UdpSocket> {
                    let socket = UdpSocket::bind((POD.address(), 0))?;
                    socket.connect((OUTSIDE_ADDRESS, PORT))?;
                    Ok(socket)
                })?
                .context("making a sender in the pod")
        })
        .collect::<Result<_>>()?;
    let sending = AtomicBool::new(true);
    let counting = AtomicBool::new(false);
    thread::scope(|scope| {
        let threads: Vec<_> = sockets
            .iter()
            .map(|socket| scope.spawn(|| send_loop(socket, &sending, &counting)))
            .collect();
        let measured = (|| -> Result<_> {
            sleep_unless_interrupted(WARM_UP)?;
            counting.store(true, Ordering::Relaxed);
            let (rx0, p0, t0) = (rx_packets(lab.outside())?, read_program()?, Instant::now());
            sleep_unless_interrupted(window)?;
            let (rx1, p1, t1) = (rx_packets(lab.outside())?, read_program()?, Instant::now());
            counting.store(false, Ordering::Relaxed);
            Ok((
                rx1 - rx0,
                t1 - t0,
                p0.zip(p1).map(|(a, b)| (b.0 - a.0, b.1 - a.1)),
            ))
        })();
        sending.store(false, Ordering::Relaxed);
        let mut sent = 0;
        for thread in threads {
            sent += thread
                .join()
                .map_err(|_| anyhow::anyhow!("a sender panicked"))??;
        }
        let (delivered, elapsed, program) = measured?;
        Ok(Window {
            delivered,
            elapsed,
            sent: Some(sent),
            program,
        })
    })
}

/// Sends until `sending` drops; returns the packets sent while `counting`.
fn send_loop(socket: &UdpSocket, sending: &AtomicBool, counting: &AtomicBool) -> Result<u64> {
    let payload = [0x65_u8; PAYLOAD];
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // SAFETY: an all-zero mmsghdr is valid (no name, no control data).
    let mut messages: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for message in &mut messages {
        message.msg_hdr.msg_iov = &raw mut iov;
        message.msg_hdr.msg_iovlen = 1;
    }
    let fd = socket.as_raw_fd();
    let mut sent = 0_u64;
    while sending.load(Ordering::Relaxed) {
        // SAFETY: `messages` holds BATCH valid headers whose single iovec points at
        // `payload`; all outlive the call, which only reads them (and writes msg_len).
        let n = unsafe { libc::sendmmsg(fd, messages.as_mut_ptr(), BATCH as libc::c_uint, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            // A full queue on the way drops the packet, as on a wire.
            if err.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(err).context("sendmmsg from the pod");
            }
        } else if counting.load(Ordering::Relaxed) {
            sent += n as u64;
        }
    }
    Ok(sent)
}

fn print_run(run: &Run) {
    let mut line = format!(
        "round {:>2} {:<16} {:>9.0} pkt/s delivered",
        run.round,
        run.kind.name(),
        run.pps
    );
    if let Some(sent) = run.sent_pps {
        line.push_str(&format!(" ({sent:.0} sent)"));
    }
    line.push_str(&format!(
        "   classify_packets +{}, classify_skipped +{}",
        run.classified, run.skipped
    ));
    if let (Some(ns), Some(runs)) = (run.ns_per_run, run.runs) {
        line.push_str(&format!(
            "   egret_node_classify: {ns:.1} ns/run over {runs} runs"
        ));
    }
    println!("{line}");
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// `cpus`: the CPUs the senders kept busy (the sender threads; iperf3: one).
fn summary(runs: &[Run], cpus: usize) {
    let pps = |kind: Kind| {
        median(
            runs.iter()
                .filter(|run| run.kind == kind)
                .map(|run| run.pps)
                .collect(),
        )
    };
    let (baseline, classifier, with_stats) = (
        pps(Kind::Baseline),
        pps(Kind::Classifier),
        pps(Kind::ClassifierStats),
    );
    let ns = median(runs.iter().filter_map(|run| run.ns_per_run).collect());
    println!();
    println!("medians:");
    println!("  baseline          {baseline:>9.0} pkt/s");
    println!(
        "  classifier        {classifier:>9.0} pkt/s   classifier / baseline = {:.3} ({:+.1} %)",
        classifier / baseline,
        (classifier / baseline - 1.0) * 100.0
    );
    println!(
        "  classifier+stats  {with_stats:>9.0} pkt/s   / baseline = {:.3}, / classifier = {:.3}",
        with_stats / baseline,
        with_stats / classifier
    );
    // Pairs within a round: the same minute of a noisy machine.
    let mut pairs = Vec::new();
    let last = runs.iter().map(|run| run.round).max().unwrap_or(0);
    for round in 1..=last {
        let of = |kind: Kind| {
            runs.iter()
                .find(|run| run.round == round && run.kind == kind)
                .map(|run| run.pps)
        };
        if let (Some(b), Some(c)) = (of(Kind::Baseline), of(Kind::Classifier)) {
            pairs.push(c / b);
        }
    }
    println!(
        "  classifier / baseline per round: {}; their median {:.3}",
        pairs
            .iter()
            .map(|ratio| format!("{ratio:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        median(pairs.clone())
    );
    println!(
        "  CPU time per packet: baseline {:.0} ns, classifier {:.0} ns ({cpus} CPU(s) busy): \
         the classifier adds {:.0} ns",
        cpus as f64 * 1e9 / baseline,
        cpus as f64 * 1e9 / classifier,
        cpus as f64 * 1e9 * (1.0 / classifier - 1.0 / baseline)
    );
    println!(
        "  egret_node_classify (kernel statistics): {ns:.1} ns per packet (median of the \
         stats runs); at the baseline rate a packet takes {:.0} ns of a sending CPU \
         ({cpus} busy), so the program alone would cost {:.1} %",
        cpus as f64 * 1e9 / baseline,
        ns * baseline / (cpus as f64 * 1e9) * 100.0
    );
}
