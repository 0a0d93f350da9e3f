//! One pod cannot take more than `[nat].max_flows_per_pod` of the flow table: through
//! `egret-gateway run` in the gateway lab (see `egret_lab::topology`), one pod address floods
//! new UDP flows while another pod address keeps opening new flows that reach the outside
//! server, during the flood and after it. Needs root, and a built gateway:
//! `cargo build --release -p egret-gateway` (scripts/test does it), or `EGRET_GATEWAY_BIN`.
//!
//! The lab has one pod namespace; the second pod is a second address on its interface. The
//! node sends everything that arrives from the pod's veth into the tunnel (a policy rule on
//! the incoming interface), and its connected route to 10.10.1.0/24 takes the replies back to
//! either address.
//!
//! Without the share (as measured before it existed), the flood filled the 5,000-flow table
//! and the other pod could open no flow until the flood's mappings idled out, 5 minutes
//! after it stopped.

use std::{
    fs,
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use egret_lab::{
    GatewayLab, Mode, require_root,
    topology::{
        Background, FLOATING_IP, GATEWAY_CONFIG, Metrics, OUTSIDE_ADDRESS, POD_ADDRESS, PYTHON,
        scripts_dir,
    },
};

/// `[nat].max_flows` and `[nat].max_flows_per_pod` of this test's gateway.
const MAX_FLOWS: u64 = 5000;
const MAX_FLOWS_PER_POD: u64 = 1000;
/// The well-behaved pod: a second address on the pod namespace's interface.
const OTHER_POD: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 6);
/// Source ports the flood cycles through (three times its share, in a new random order each
/// round) and its rate. Modest, so that a busy two-core machine keeps up and what is
/// measured is the share, not overload.
const FLOOD_FIRST_PORT: u16 = 21000;
const FLOOD_PORTS: u16 = 3000;
const FLOOD_RATE: u32 = 4000;
/// The outside server's sink for the flood and its echo for the probes.
const FLOOD_PORT: u16 = 7401;
const PROBE_PORT: u16 = 7402;
/// New flows the other pod opens each time; during the flood, this far apart, so that they
/// span a good part of one of the flood's rounds.
const PROBES: u16 = 50;
const PROBE_PAUSE_DURING: Duration = Duration::from_millis(10);
/// How long a counter may take to show what happened (snapshots are published a few times
/// a second; the machine may be busy).
const SETTLE: Duration = Duration::from_secs(20);

/// Runs one named check; a failure carries the gateway's drop counters, flow gauge and the
/// end of its log.
fn step<T>(
    lab: &mut GatewayLab,
    name: &str,
    check: impl FnOnce(&mut GatewayLab) -> Result<T>,
) -> Result<T> {
    egret_lab::step(lab, name, check, |lab, err| {
        let mut evidence = String::new();
        if lab.gateway_started() {
            let now = lab
                .metrics()
                .map(|m| format!("flows {:?}, drops {:?}", flows(&m), m.all_drops()))
                .unwrap_or_else(|err| format!("(no metrics: {err:#})"));
            let log = lab
                .gateway_mut()
                .map(|gateway| gateway.log_tail(30))
                .unwrap_or_default();
            evidence = format!("\ngateway now: {now}\n--- gateway log (end) ---\n{log}");
        }
        err.context(format!("step \"{name}\" failed{evidence}"))
    })
}

/// `egret_gateway_flows`: live flows.
fn flows(metrics: &Metrics) -> Result<u64> {
    let live = metrics
        .value("egret_gateway_flows", &[])
        .context("no egret_gateway_flows")?;
    Ok(live as u64)
}

/// Polls `/metrics` until `ready` holds for a snapshot, and returns that snapshot.
fn wait_metrics(
    lab: &GatewayLab,
    what: &str,
    mut ready: impl FnMut(&Metrics) -> Result<bool>,
) -> Result<Metrics> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let metrics = lab.metrics()?;
        if ready(&metrics)? {
            return Ok(metrics);
        }
        if Instant::now() >= deadline {
            bail!(
                "{what}: not seen within {SETTLE:?}; flows {:?}, drops {:?}",
                flows(&metrics),
                metrics.all_drops()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The outside server's end: `udp_flows.py sink`, whose lines tell what reached it.
struct Sink(Background);

/// One probe datagram as the outside server first saw it.
#[derive(Debug)]
struct Seen {
    source: Ipv4Addr,
    payload: String,
    /// Distinct sources (flows) of the flood the server had seen by then, and its datagrams.
    flood_sources: u64,
    flood_datagrams: u64,
}

impl Sink {
    fn start(lab: &GatewayLab) -> Result<Self> {
        let mut sink = Background::spawn(
            lab.outside()
                .command(PYTHON)
                .arg(scripts_dir().join("udp_flows.py"))
                .args([
                    "sink".to_owned(),
                    OUTSIDE_ADDRESS.to_string(),
                    FLOOD_PORT.to_string(),
                    PROBE_PORT.to_string(),
                ]),
        )?;
        sink.ready(Duration::from_secs(10))?;
        Ok(Self(sink))
    }

    /// The next `count` probe payloads the server saw, in order.
    fn seen(&mut self, count: usize) -> Result<Vec<Seen>> {
        let mut seen = Vec::with_capacity(count);
        while seen.len() < count {
            let line = self
                .0
                .line(Duration::from_secs(10))?
                .context("the outside sink exited")?;
            let words: Vec<&str> = line.split_whitespace().collect();
            let parsed = match words.as_slice() {
                ["probe", source, payload, sources, datagrams] => (|| {
                    Some(Seen {
                        source: source.parse().ok()?,
                        payload: (*payload).to_owned(),
                        flood_sources: sources.parse().ok()?,
                        flood_datagrams: datagrams.parse().ok()?,
                    })
                })(),
                _ => None,
            };
            seen.push(parsed.with_context(|| format!("udp_flows.py sink printed {line:?}"))?);
        }
        Ok(seen)
    }
}

/// `count` new flows from `source` (ports from `first_port`), one after the other and
/// `pause` apart, each sending `<tag>-<i>` until the outside server echoes it; returns how
/// many were echoed.
fn probe(
    lab: &GatewayLab,
    source: Ipv4Addr,
    first_port: u16,
    count: u16,
    tag: &str,
    pause: Duration,
) -> Result<usize> {
    let finished = Background::spawn(
        lab.pod()
            .command(PYTHON)
            .arg(scripts_dir().join("udp_flows.py"))
            .args([
                "probe".to_owned(),
                source.to_string(),
                OUTSIDE_ADDRESS.to_string(),
                PROBE_PORT.to_string(),
                first_port.to_string(),
                count.to_string(),
                tag.to_owned(),
                pause.as_secs_f64().to_string(),
            ]),
    )?
    .wait(Duration::from_secs(60))?;
    ensure!(
        finished.status.code().is_some_and(|code| code <= 1),
        "udp_flows.py probe failed ({}): {}",
        finished.status,
        finished.stderr.trim()
    );
    Ok(finished
        .stdout
        .iter()
        .filter(|line| line.starts_with("ok "))
        .count())
}

/// [`PROBES`] new flows from the other pod all came back, and the outside server saw each
/// one, from the floating IP, while it had seen the flood from no more flows than the share;
/// returns what it saw.
fn other_pod_opens_new_flows(
    lab: &GatewayLab,
    sink: &mut Sink,
    first_port: u16,
    tag: &str,
    pause: Duration,
) -> Result<Vec<Seen>> {
    let answered = probe(lab, OTHER_POD, first_port, PROBES, tag, pause)?;
    ensure!(
        answered == usize::from(PROBES),
        "only {answered} of {PROBES} new flows from {OTHER_POD} were answered by the outside \
         server"
    );
    let seen = sink.seen(answered)?;
    for (i, s) in seen.iter().enumerate() {
        ensure!(
            s.source == FLOATING_IP && s.payload == format!("{tag}-{i}"),
            "the outside server saw {s:?}, expected {tag}-{i} from {FLOATING_IP}"
        );
        ensure!(
            s.flood_sources <= MAX_FLOWS_PER_POD,
            "the outside server saw the flood from {} flows, more than the pod's share of \
             {MAX_FLOWS_PER_POD}",
            s.flood_sources
        );
    }
    Ok(seen)
}

#[test]
fn a_flooding_pod_gets_its_share_and_other_pods_still_open_flows() -> Result<()> {
    require_root();
    let mut lab = GatewayLab::new("quota")?;
    lab.set_mode(Mode::Egret)?;
    let config = GATEWAY_CONFIG.replacen(
        "[nat]\n",
        &format!("[nat]\nmax_flows = {MAX_FLOWS}\nmax_flows_per_pod = {MAX_FLOWS_PER_POD}\n"),
        1,
    );
    ensure!(
        config != GATEWAY_CONFIG,
        "the lab config has no [nat] table"
    );
    fs::write(lab.config_path(), config)?;
    lab.pod()
        .ip(["addr", "add", &format!("{OTHER_POD}/24"), "dev", "eth0"])?;

    step(
        &mut lab,
        "the gateway starts with max_flows 5000, max_flows_per_pod 1000",
        |lab| lab.start_gateway(),
    )?;
    let mut sink = step(&mut lab, "the outside server listens", |lab| {
        Sink::start(lab)
    })?;
    let start = lab.metrics()?;
    step(
        &mut lab,
        "before the flood, the other pod opens new flows",
        |lab| other_pod_opens_new_flows(lab, &mut sink, 30000, "before", Duration::ZERO).map(drop),
    )?;

    let flood = step(
        &mut lab,
        "10.10.1.5 floods new UDP flows until pod_quota drops are counted",
        |lab| {
            let flood = Background::spawn(
                lab.pod()
                    .command(PYTHON)
                    .arg(scripts_dir().join("udp_flows.py"))
                    .args([
                        "flood".to_owned(),
                        POD_ADDRESS.to_string(),
                        OUTSIDE_ADDRESS.to_string(),
                        FLOOD_PORT.to_string(),
                        FLOOD_FIRST_PORT.to_string(),
                        FLOOD_PORTS.to_string(),
                        FLOOD_RATE.to_string(),
                    ]),
            )?;
            // Two rounds' worth of refusals: past the first round, in which the pod reached
            // its share, refreshes of its flows and refusals alternate.
            let quota = start.drops("pod_quota")?;
            let refused_per_round = u64::from(FLOOD_PORTS) - MAX_FLOWS_PER_POD;
            let full = wait_metrics(lab, "the pod at its share and refused", |m| {
                Ok(m.drops("pod_quota")? >= quota + 2 * refused_per_round
                    && flows(m)? >= MAX_FLOWS_PER_POD + u64::from(PROBES))
            })?;
            eprintln!(
                "   flows {}, pod_quota drops {}",
                flows(&full)?,
                full.drops("pod_quota")?
            );
            Ok(flood)
        },
    )?;

    step(
        &mut lab,
        "during the flood, the other pod opens new flows that reach the outside server",
        |lab| {
            let before = lab.metrics()?;
            let seen =
                other_pod_opens_new_flows(lab, &mut sink, 31000, "during", PROBE_PAUSE_DURING)?;
            // The flood went on while the probes went through: its admitted flows reached
            // the outside server between the first probe and the last, and the gateway kept
            // refusing the rest.
            let (first, last) = (
                seen.first().context("no probe")?,
                seen.last().context("no probe")?,
            );
            ensure!(
                last.flood_datagrams > first.flood_datagrams,
                "no datagram of the flood reached the outside server while the other pod's \
                 probes did ({} before the first, {} before the last)",
                first.flood_datagrams,
                last.flood_datagrams
            );
            let after = wait_metrics(lab, "pod_quota growing across the probes", |m| {
                Ok(m.drops("pod_quota")? > before.drops("pod_quota")?)
            })?;
            eprintln!(
                "   {PROBES} new flows answered; meanwhile the outside got {} datagrams of the \
                 flood, from {} flows in all; pod_quota drops {} → {}",
                last.flood_datagrams - first.flood_datagrams,
                last.flood_sources,
                before.drops("pod_quota")?,
                after.drops("pod_quota")?,
            );
            Ok(())
        },
    )?;

    step(&mut lab, "the flood stops", |_| {
        drop(flood);
        Ok(())
    })?;

    step(
        &mut lab,
        "after the flood, while its flows are still live, the other pod opens new flows",
        |lab| {
            let now = lab.metrics()?;
            ensure!(
                flows(&now)? >= MAX_FLOWS_PER_POD,
                "the flood's flows are gone already ({} live): this would prove nothing",
                flows(&now)?
            );
            other_pod_opens_new_flows(lab, &mut sink, 32000, "after", Duration::ZERO).map(drop)
        },
    )?;

    step(
        &mut lab,
        "the flooding pod is still refused new flows: pod_quota, never table_full",
        |lab| {
            let before = lab.metrics()?;
            let answered = probe(lab, POD_ADDRESS, 33000, 1, "hostile", Duration::ZERO)?;
            ensure!(
                answered == 0,
                "a new flow from {POD_ADDRESS}, at its share, was answered"
            );
            let after = wait_metrics(lab, "the refusal counted", |m| {
                Ok(m.drops("pod_quota")? > before.drops("pod_quota")?)
            })?;
            let grown =
                |reason: &str| -> Result<u64> { Ok(after.drops(reason)? - start.drops(reason)?) };
            ensure!(
                grown("table_full")? == 0 && grown("ports_exhausted")? == 0,
                "drops other than pod_quota grew: {:?}",
                after.all_drops()
            );
            let live = flows(&after)?;
            ensure!(
                live <= MAX_FLOWS_PER_POD + 3 * u64::from(PROBES),
                "{live} flows live: the flooding pod holds more than its share of \
                 {MAX_FLOWS_PER_POD}"
            );
            eprintln!(
                "   flows {live} of {MAX_FLOWS}; pod_quota drops {}",
                after.drops("pod_quota")?
            );
            Ok(())
        },
    )?;

    step(
        &mut lab,
        "the gateway still runs and stops cleanly",
        |lab| {
            lab.gateway_mut()?.ensure_running()?;
            lab.stop_gateway_cleanly().map(drop)
        },
    )?;
    Ok(())
}
