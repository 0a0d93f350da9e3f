//! A soak of failovers and failbacks under load, on the failover lab ([`egret_lab::HaLab`]:
//! gw1 at priority 200 and gw2 at 100 sharing 192.168.50.100, 100 ms adverts, preemption,
//! sealed flow sync). Run it through `tests/measure/soak`, which builds the gateway first;
//! needs root. Nothing is asserted but the return to the baseline at the end: it prints
//! figures.
//!
//! The load, from the pod to the outside host, all through the floating IP:
//! - LONG long TCP connections (default 120), each a ping-pong of 8-byte messages every
//!   250 ms ([`egret_lab::ha::FlowSet`]), open from before the first round to the end;
//! - RATE new flows a second (default 50), alternately UDP and TCP, each one message and its
//!   echo, then closed ([`egret_lab::ha::Churn`]).
//!
//! Each of ROUNDS rounds (default 100) is a failover and a failback: gw1, the master, is
//! killed with SIGKILL and gw2 takes over; then gw1 starts again, learns the flows from
//! gw2 by the sync, and takes the address back (preemption). For each, one line:
//! - takeover: from the kill (or the start) to the new master's own record of its
//!   transition (`/status`, once both agree who is master);
//! - long connections kept / live: of those still without an error before it, the ones
//!   that completed a round trip sent after the new master took over (each gets up to
//!   15 s: TCP retransmits with backoff);
//! - worst gap: the longest time between two echoes in any long connection during it (a
//!   steady connection shows its 250 ms period plus the round trip);
//! - new flows begun during it (from the failure until every long connection resumed):
//!   completed / begun, failed (no echo within 1 s), and left out (due while every worker
//!   still waited for a flow: the rate dipped). The next failure waits until each of them
//!   has ended.
//!
//! Then the summary, and the gateways' resident memory (VmRSS) and NAT state before the
//! load and after it: NAT ports in use on the floating IP and live flows, per gateway. The
//! baseline is what each gateway's `/status` shows once both agree, before the first
//! packet of the load. After the load stops (long connections closed, no new flows), the
//! soak polls both `/status` until each is back at its baseline, up to the longest NAT
//! timeout (20 s, the soak's `tcp_established_timeout`; the others are 2 to 5 s) plus the
//! 30 s a backup's copy outlives it plus 30 s; it fails when they are not. gw2 runs from
//! start to end; gw1's figures after the soak are those of its last process (restarted in
//! the last round).
//!
//! ```text
//! soak [ROUNDS [LONG [RATE]]]      (env EGRET_ROUNDS, EGRET_LONG, EGRET_RATE)
//! ```

use std::{
    fs,
    net::SocketAddrV4,
    process::ExitCode,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};
use egret_lab::{
    HaLab,
    egress::{check_interrupted, program_main},
    ha::{
        Churn, ChurnCounts, EchoServer, FlowSet, HaConfig, Member, Snapshot, endpoint, median,
        millis,
    },
    setting,
    topology::{OUTSIDE_ADDRESS, POD_ADDRESS, gateway_binary},
};

/// The long connections' ping-pong period.
const LONG_PERIOD: Duration = Duration::from_millis(250);
/// The long connections' pod ports: LONG from here, below the NAT range and the pod's
/// ephemeral ports (the churn's).
const LONG_FIRST_PORT: u16 = 21_000;
const LONG_PORT: u16 = 7500;
const CHURN_UDP_PORT: u16 = 7701;
const CHURN_TCP_PORT: u16 = 7702;
/// Short NAT timeouts, so that the flows expire soon after the load. The long connections
/// talk every 250 ms, far inside the established timeout.
const NAT_TIMEOUTS: [(&str, &str); 6] = [
    ("tcp_established_timeout", "20s"),
    ("tcp_transitory_timeout", "5s"),
    ("tcp_time_wait_timeout", "5s"),
    ("tcp_closed_timeout", "2s"),
    ("udp_timeout", "5s"),
    ("icmp_timeout", "5s"),
];
/// How long the flows may take to expire after the load: the longest timeout above, the
/// 30 s a backup's copy outlives its master's, and 30 s of margin.
const EXPIRY_LIMIT: Duration = Duration::from_secs(20 + 30 + 30);
/// How long the gateways may take to agree after a kill or a start.
const AGREE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each long connection gets to complete a round trip after a takeover.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

fn main() -> ExitCode {
    program_main("soak", run)
}

/// A failover (gw1 killed) or a failback (gw1 started again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failover,
    Failback,
}

/// What one failover or failback did.
struct Transition {
    kind: Kind,
    takeover: Option<Duration>,
    live: usize,
    kept: usize,
    worst_gap: Duration,
    churn: ChurnCounts,
}

/// One gateway's resources, from its `/status` and `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    /// NAT ports in use on the floating IP.
    ports: u64,
    /// Live flows in its table.
    flows: u64,
    rss_kib: Option<u64>,
}

impl Usage {
    fn read(lab: &HaLab, member: Member) -> Result<Self> {
        let status = lab.snapshot(member)?;
        Ok(Self::of(&status, lab.pid(member)))
    }

    fn of(status: &Snapshot, pid: Option<u32>) -> Self {
        Self {
            ports: status.count("/floating_ips/0/ports_in_use"),
            flows: status.count("/flows/live"),
            rss_kib: pid.and_then(rss_kib),
        }
    }

    /// The NAT state is back where `baseline` had it.
    fn at_baseline(&self, baseline: &Usage) -> bool {
        self.ports == baseline.ports && self.flows == baseline.flows
    }
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "-".into(),
        |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
    )
}

/// Waits until both agree that `master` owns the address (the other down or following
/// it); returns `master`'s own record of its transition.
fn agreed(lab: &HaLab, master: Member) -> Result<SystemTime> {
    let deadline = Instant::now() + AGREE_TIMEOUT;
    while lab.agreed_master()? != Some(master) {
        check_interrupted()?;
        ensure!(
            Instant::now() < deadline,
            "{} did not become the agreed master within {AGREE_TIMEOUT:?}\n{}",
            master.name(),
            lab.evidence()
        );
        thread::sleep(Duration::from_millis(10));
    }
    Ok(lab.election(master)?.last_transition)
}

/// Runs one failover or failback and measures it.
fn transition(lab: &mut HaLab, kind: Kind, flows: &FlowSet, churn: &Churn) -> Result<Transition> {
    let live = flows
        .states()
        .iter()
        .filter(|flow| flow.error.is_none())
        .count();
    // Gaps from here on.
    let _ = flows.take_longest_gaps();
    let (at, successor) = match kind {
        Kind::Failover => (lab.kill(Member::Gw1)?, Member::Gw2),
        Kind::Failback => {
            let at = SystemTime::now();
            lab.start(Member::Gw1)?;
            (at, Member::Gw1)
        }
    };
    let took_over = agreed(lab, successor)?;
    let states = flows.wait_all_after(took_over, Instant::now() + SETTLE_TIMEOUT);
    let kept = states
        .iter()
        .filter(|flow| flow.alive_after(took_over))
        .count();
    let worst_gap = flows
        .take_longest_gaps()
        .into_iter()
        .max()
        .unwrap_or_default();
    // The new flows begun from the failure to here, once each has ended.
    let end = SystemTime::now();
    churn.wait_ended(end, Churn::FLOW_TIMEOUT * 3)?;
    Ok(Transition {
        kind,
        takeover: took_over.duration_since(at).ok(),
        live,
        kept,
        worst_gap,
        churn: churn.counts(at, end),
    })
}

fn print_row(round: u32, t: &Transition) {
    println!(
        "{round:>5} {:<9} {:>12} {:>10} {:>13} {:>14} {:>7} {:>8}",
        match t.kind {
            Kind::Failover => "failover",
            Kind::Failback => "failback",
        },
        millis(t.takeover).trim_end_matches(" ms"),
        format!("{}/{}", t.kept, t.live),
        millis(Some(t.worst_gap)).trim_end_matches(" ms"),
        format!("{}/{}", t.churn.completed, t.churn.attempted),
        t.churn.failed,
        t.churn.skipped,
    );
}

fn summarise(kind: Kind, all: &[Transition]) {
    let of: Vec<&Transition> = all.iter().filter(|t| t.kind == kind).collect();
    let intact = of.iter().filter(|t| t.kept == t.live).count();
    let lost: usize = of.iter().map(|t| t.live - t.kept).sum();
    let gaps: Vec<Duration> = of.iter().map(|t| t.worst_gap).collect();
    let takeovers: Vec<Duration> = of.iter().filter_map(|t| t.takeover).collect();
    let failed: u64 = of.iter().map(|t| t.churn.failed).sum();
    let attempted: u64 = of.iter().map(|t| t.churn.attempted).sum();
    println!(
        "{:?}s: {} of {} kept every live long connection ({lost} connections lost in all); \
         takeover median {}, max {}; worst gap median {}, max {}; new flows during them: \
         {failed} of {attempted} failed",
        kind,
        intact,
        of.len(),
        millis(median(&takeovers)),
        millis(takeovers.iter().max().copied()),
        millis(median(&gaps)),
        millis(gaps.iter().max().copied()),
    );
}

fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root: it builds network namespaces"
    );
    let rounds: u32 = setting(1, Some("EGRET_ROUNDS"), 100, 1..=100_000)?;
    let long: u16 = setting(2, Some("EGRET_LONG"), 120, 1..=2000)?;
    let rate: u32 = setting(3, Some("EGRET_RATE"), 50, 1..=2000)?;
    let started = Instant::now();
    println!(
        "egret-gateway: {}\n{rounds} rounds (kill -9 of gw1, then its restart), {long} long \
         connections (a message every {} ms), {rate} new flows/s, {} CPUs",
        gateway_binary()?.display(),
        LONG_PERIOD.as_millis(),
        thread::available_parallelism().map_or(0, usize::from)
    );
    let config = HaConfig {
        nat: NAT_TIMEOUTS
            .iter()
            .map(|(key, value)| ((*key).to_owned(), format!("\"{value}\"")))
            .collect(),
        ..HaConfig::default()
    };
    let mut lab = HaLab::new("soak", config)?;
    let master = lab.start_ahead(Member::Gw1)?;
    ensure!(
        master == Member::Gw1,
        "{} is master, expected gw1",
        master.name()
    );
    let baseline = [
        Usage::read(&lab, Member::Gw1)?,
        Usage::read(&lab, Member::Gw2)?,
    ];

    let (pod, outside) = (lab.base().pod(), lab.base().outside());
    let server = EchoServer::start(outside, endpoint(OUTSIDE_ADDRESS, LONG_PORT))?;
    let locals: Vec<SocketAddrV4> = (0..long)
        .map(|i| endpoint(POD_ADDRESS, LONG_FIRST_PORT + i))
        .collect();
    let flows = FlowSet::start(pod, &locals, server.address(), LONG_PERIOD)
        .context("connecting the long connections")?;
    let churn = Churn::start(
        pod,
        POD_ADDRESS,
        outside,
        endpoint(OUTSIDE_ADDRESS, CHURN_UDP_PORT),
        endpoint(OUTSIDE_ADDRESS, CHURN_TCP_PORT),
        rate,
    )?;
    // Every long connection talks, and gw2 holds each of their flows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while flows.states().iter().any(|flow| flow.round_trips == 0) {
        check_interrupted()?;
        ensure!(
            Instant::now() < deadline,
            "not every long connection completed a round trip within 10 s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    lab.wait_snapshot(
        Member::Gw2,
        "holding the long connections' flows",
        Duration::from_secs(10),
        |status| status.count("/floating_ips/0/flows") >= u64::from(long),
    )?;
    ensure!(
        flows.states().iter().all(|flow| flow.error.is_none()),
        "a long connection failed before the first round: {:?}",
        flows.states().iter().find_map(|flow| flow.error.clone())
    );

    println!(
        "\n{:>5} {:<9} {:>12} {:>10} {:>13} {:>14} {:>7} {:>8}",
        "round",
        "",
        "takeover ms",
        "kept/live",
        "worst gap ms",
        "new flows ok",
        "failed",
        "skipped"
    );
    let mut transitions = Vec::new();
    for round in 1..=rounds {
        for kind in [Kind::Failover, Kind::Failback] {
            check_interrupted()?;
            let t = transition(&mut lab, kind, &flows, &churn)?;
            print_row(round, &t);
            transitions.push(t);
        }
    }

    let churned = churn.finish()?;
    let end = flows.finish();
    let load_stopped = Instant::now();
    let alive = end.iter().filter(|flow| flow.error.is_none()).count();
    println!();
    summarise(Kind::Failover, &transitions);
    summarise(Kind::Failback, &transitions);
    println!(
        "long connections without an error at the end: {alive}/{long}{}; new flows in all: \
         {} of {} completed, {} failed, {} left out; server errors: {:?}",
        end.iter()
            .find_map(|flow| flow.error.as_ref())
            .map(|error| format!(" (e.g. {error})"))
            .unwrap_or_default(),
        churned.completed,
        churned.attempted,
        churned.failed,
        churned.skipped,
        server.errors().iter().take(3).collect::<Vec<_>>()
    );
    drop(server);

    // Back to the baseline once the flows expired.
    let mut after = [
        Usage::read(&lab, Member::Gw1)?,
        Usage::read(&lab, Member::Gw2)?,
    ];
    while !(after[0].at_baseline(&baseline[0]) && after[1].at_baseline(&baseline[1]))
        && load_stopped.elapsed() < EXPIRY_LIMIT
    {
        check_interrupted()?;
        thread::sleep(Duration::from_millis(500));
        after = [
            Usage::read(&lab, Member::Gw1)?,
            Usage::read(&lab, Member::Gw2)?,
        ];
    }
    let expired_in = load_stopped.elapsed();
    println!(
        "\n{:<5} {:>22} {:>22} {:>22}",
        "", "RSS", "NAT ports in use", "live flows"
    );
    for member in Member::BOTH {
        let (b, a) = (baseline[member.index()], after[member.index()]);
        println!(
            "{:<5} {:>22} {:>22} {:>22}",
            member.name(),
            format!("{} → {}", mib(b.rss_kib), mib(a.rss_kib)),
            format!("{} → {}", b.ports, a.ports),
            format!("{} → {}", b.flows, a.flows),
        );
    }
    println!("(before the load → {:.1?} after it stopped)", expired_in);
    println!("total runtime {:.1?}", started.elapsed());
    if !(after[0].at_baseline(&baseline[0]) && after[1].at_baseline(&baseline[1])) {
        bail!(
            "the NAT state did not return to the baseline within {EXPIRY_LIMIT:?} of the \
             load's end: {after:?}, baseline {baseline:?}"
        );
    }
    Ok(())
}
