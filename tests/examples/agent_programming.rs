//! How long `egret-agent` takes to program a node with a large static config, measured on the
//! agent lab ([`egret_lab::AgentLab`], node1's agent only, no gateway needed); needs root and
//! a built agent (`EGRET_AGENT_BIN`, or `target/release`).
//!
//! The config ([`egret_lab::egress::scale_config`]): 1,000 policies selecting 10,000 source
//! /32s between them, each with its own floating IP and two destination CIDRs, one with an
//! excluded half: about 10,000 source entries, 3,000 destination entries and 1,000 gateway
//! entries in the maps. Each round measures three things, in this order:
//!
//! - **fresh**: after `egret-agent uninstall` (no pins, no tunnel device, no masquerade
//!   table), from spawning `ip netns exec node1 egret-agent run` to its log line "node
//!   programmed" (the tunnel device, the programs loaded and their maps created and pinned,
//!   every map entry written, the masquerade table, the programs attached);
//! - **SIGHUP**: one policy changed (an extra destination /24 added or taken away again),
//!   from the signal to the log line "config reloaded";
//! - **restart**: the agent killed and started again against its pinned maps, nothing to
//!   change, from spawning it to "node programmed". (SIGKILL, not SIGTERM: on SIGTERM the
//!   agent only exits too, leaving the data path, and a child of a lab program starts with
//!   SIGTERM blocked, since std no longer empties the signal mask that
//!   [`egret_lab::egress::handle_interrupts`] sets.)
//!
//! Beside each it prints the map changes the agent made and its own `elapsed_ms` of the
//! "maps reconciled" line (compile, read the maps, plan, write them), and for SIGHUP the
//! agent's own `elapsed` of "config reloaded" (read and check the file, then the same). The
//! log file is polled every millisecond: the resolution of the outside figures. Every fresh
//! and restarted agent is waited for until `egret-agent status` shows all 1,000 policies
//! programmed. Then the medians and maxima. Nothing is asserted.
//!
//! ```text
//! agent_programming [ROUNDS] [POLICIES] [SOURCES]
//!     (env EGRET_ROUNDS, default 5; 1000 policies; 10000 sources)
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail, ensure};
use egret_lab::{
    AgentLab,
    egress::{Node, Pod, check_interrupted, program_main, scale_config, sleep_unless_interrupted},
    ha::millis,
    setting,
};

/// How long a start or a reload may take before the round fails.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How long `egret-agent status` may take to show every policy after "node programmed".
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    program_main("agent_programming", run)
}

/// One measurement: the time seen from outside, and what the agent's log said.
#[derive(Debug, Clone)]
struct Timing {
    outside: Duration,
    changes: Option<u64>,
    /// `elapsed_ms` of "maps reconciled".
    maps_ms: Option<f64>,
    /// `elapsed` of "config reloaded" (SIGHUP only).
    reload: Option<Duration>,
    /// When the agent logged each step, after the spawn or the signal (by its timestamps).
    stages: Vec<(&'static str, Option<Duration>)>,
}

/// The steps of a start, by their log lines: the short name printed, the line.
const START_STAGES: [(&str, &str); 4] = [
    ("tunnel", "tunnel device ready"),
    ("loaded", "eBPF programs loaded"),
    ("maps", "maps reconciled"),
    ("programmed", "node programmed"),
];
/// The steps of a reload.
const RELOAD_STAGES: [(&str, &str); 2] =
    [("maps", "maps reconciled"), ("reloaded", "config reloaded")];

fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root: it builds network namespaces and loads eBPF programs"
    );
    let rounds: usize = setting(1, Some("EGRET_ROUNDS"), 5, 1..=100_000)?;
    let policies: usize = setting(2, None, 1000, 1..=100_000)?;
    let sources: usize = setting(3, None, 10_000, 1..=100_000)?;
    ensure!(policies <= sources, "more policies than sources");
    let node = Node::Node1;
    let mut lab = AgentLab::new("prog")?;
    let config = scale_config(lab.agent_config(node), policies, sources, Pod::A1);
    lab.set_agent_config(config)?;
    println!(
        "{policies} policies, {sources} source /32s, {policies} floating IPs; node1's agent \
         only; {rounds} rounds; {} CPUs, nothing pinned",
        thread::available_parallelism().map_or(0, usize::from)
    );

    let (mut fresh, mut reload, mut restart) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        check_interrupted()?;
        if round > 1 {
            lab.agent_uninstall(node)?;
        }
        ensure!(
            !lab.pin_path(node).exists(),
            "{} still exists after uninstall",
            lab.pin_path(node).display()
        );
        let timing = start(&mut lab, node).with_context(|| format!("round {round}, fresh"))?;
        print_timing(round, "fresh  ", &timing);
        fresh.push(timing);
        sleep_unless_interrupted(Duration::from_millis(500))?;

        let timing = change_one_policy(&mut lab, node, round)
            .with_context(|| format!("round {round}, SIGHUP"))?;
        print_timing(round, "SIGHUP ", &timing);
        reload.push(timing);

        // SIGKILL: the agent does nothing on SIGTERM but exit either (the data path stays),
        // and a lab program's children start with SIGTERM blocked (see the report).
        lab.kill_agent(node)?;
        sleep_unless_interrupted(Duration::from_millis(300))?;
        let timing = start(&mut lab, node).with_context(|| format!("round {round}, restart"))?;
        print_timing(round, "restart", &timing);
        restart.push(timing);
        lab.kill_agent(node)?;
        sleep_unless_interrupted(Duration::from_millis(300))?;
    }

    println!();
    println!(
        "medians (max) over {rounds} rounds; outside: spawn or SIGHUP → the log line; maps: \
         the agent's elapsed_ms of \"maps reconciled\""
    );
    for (label, timings) in [
        ("fresh start ", &fresh),
        ("SIGHUP, 1 policy changed", &reload),
        ("restart, nothing to change", &restart),
    ] {
        let outside: Vec<Duration> = timings.iter().map(|t| t.outside).collect();
        let maps: Vec<f64> = timings.iter().filter_map(|t| t.maps_ms).collect();
        let agent: Vec<Duration> = timings.iter().filter_map(|t| t.reload).collect();
        let mut line = format!(
            "  {label:<27} outside {} (max {})   maps {:.1} ms (max {:.1} ms)",
            millis(median_duration(&outside)),
            millis(outside.iter().max().copied()),
            median_f64(&maps),
            maps.iter().copied().fold(f64::NAN, f64::max),
        );
        if !agent.is_empty() {
            line.push_str(&format!(
                "   agent's \"config reloaded\" {}",
                millis(median_duration(&agent))
            ));
        }
        println!("{line}");
    }
    Ok(())
}

fn print_timing(round: usize, what: &str, timing: &Timing) {
    let changes = timing
        .changes
        .map_or_else(|| "?".to_owned(), |c| c.to_string());
    let maps = timing
        .maps_ms
        .map_or_else(|| "?".to_owned(), |ms| format!("{ms:.1} ms"));
    let mut line = format!(
        "round {round:>2} {what}  {:>9}   map changes {changes:>6}, maps reconciled in {maps}",
        millis(Some(timing.outside))
    );
    if let Some(reload) = timing.reload {
        line.push_str(&format!(
            ", \"config reloaded\" after {}",
            millis(Some(reload))
        ));
    }
    let stages: Vec<String> = timing
        .stages
        .iter()
        .map(|(name, at)| format!("{name} {}", millis(*at)))
        .collect();
    line.push_str(&format!("; log: {}", stages.join(", ")));
    println!("{line}");
}

/// Spawns the agent and times it to "node programmed"; then waits until its status shows
/// every policy.
fn start(lab: &mut AgentLab, node: Node) -> Result<Timing> {
    let started = Instant::now();
    let wall = SystemTime::now();
    lab.spawn_agent(node)?;
    let log = lab.agent_mut(node)?.log_path().to_owned();
    let line = wait_line(lab, node, &log, "node programmed", 1, started)?;
    let outside = line.at.saturating_duration_since(started);
    let text = read_log(&log);
    let reconciled = text
        .lines()
        .find(|l| l.contains("maps reconciled"))
        .context("no \"maps reconciled\" line before \"node programmed\"")?;
    lab.wait_agent_ready(node, READY_TIMEOUT)?;
    Ok(Timing {
        outside,
        changes: field(reconciled, "changes").and_then(|v| v.parse().ok()),
        maps_ms: field(reconciled, "elapsed_ms").and_then(|v| v.parse().ok()),
        reload: None,
        stages: START_STAGES
            .iter()
            .map(|(name, needle)| {
                let line = text.lines().find(|l| l.contains(needle));
                (*name, line.and_then(|l| logged_after(l, wall)))
            })
            .collect(),
    })
}

/// Adds (odd rounds) or removes (even rounds) one destination /24 of the policy in the
/// middle, sends SIGHUP, and times it to the next "config reloaded".
fn change_one_policy(lab: &mut AgentLab, node: Node, round: usize) -> Result<Timing> {
    const EXTRA: &str = "100.127.0.0/24";
    let mut policies = lab.agent_config(node).policies.clone();
    let middle = policies.len() / 2;
    let policy = &mut policies[middle];
    policy.destination_cidrs.retain(|cidr| cidr != EXTRA);
    if round % 2 == 1 {
        policy.destination_cidrs.push(EXTRA.to_owned());
    }
    lab.set_policies(node, policies)?;
    let log = lab.agent_mut(node)?.log_path().to_owned();
    let before = read_log(&log).matches("config reloaded").count();
    let wall = SystemTime::now();
    let signalled = lab.reload_agent(node)?;
    let line = wait_line(lab, node, &log, "config reloaded", before + 1, signalled)?;
    let reconciled = line
        .text
        .lines()
        .filter(|l| l.contains("maps reconciled"))
        .nth(before + 1)
        .context("no \"maps reconciled\" line for the reload")?
        .to_owned();
    let reloaded = line
        .text
        .lines()
        .filter(|l| l.contains("config reloaded"))
        .nth(before)
        .context("no \"config reloaded\" line")?
        .to_owned();
    Ok(Timing {
        outside: line.at.saturating_duration_since(signalled),
        changes: field(&reconciled, "changes").and_then(|v| v.parse().ok()),
        maps_ms: field(&reconciled, "elapsed_ms").and_then(|v| v.parse().ok()),
        reload: field(&reloaded, "elapsed").and_then(|v| parse_debug_duration(&v)),
        stages: RELOAD_STAGES
            .iter()
            .zip([&reconciled, &reloaded])
            .map(|((name, _), line)| (*name, logged_after(line, wall)))
            .collect(),
    })
}

/// The log as seen when the `count`th line containing `needle` appeared.
struct Seen {
    at: Instant,
    text: String,
}

/// Polls `log` every millisecond until `count` lines contain `needle`.
fn wait_line(
    lab: &mut AgentLab,
    node: Node,
    log: &Path,
    needle: &str,
    count: usize,
    since: Instant,
) -> Result<Seen> {
    let mut checked = Instant::now();
    loop {
        let text = read_log(log);
        let at = Instant::now();
        if text.matches(needle).count() >= count {
            return Ok(Seen { at, text });
        }
        if checked.elapsed() > Duration::from_millis(200) {
            lab.agent_mut(node)?.ensure_running()?;
            check_interrupted()?;
            checked = Instant::now();
        }
        if since.elapsed() > TIMEOUT {
            bail!(
                "no {needle:?} line in {} within {TIMEOUT:?}\n{}",
                log.display(),
                lab.agent_log_tail(node, 20)
            );
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// The log without terminal colours ("" when unreadable).
fn read_log(path: &Path) -> String {
    strip_ansi(&fs::read_to_string(PathBuf::from(path)).unwrap_or_default())
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// How long after `since` the agent logged `line`, by the line's UTC timestamp
/// (`2026-01-01T12:34:56.789012Z ...`); the time of day is enough.
fn logged_after(line: &str, since: SystemTime) -> Option<Duration> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.strip_suffix('Z')?;
    let mut parts = time.splitn(3, ':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    let logged = hours * 3600.0 + minutes * 60.0 + seconds;
    let since = since.duration_since(UNIX_EPOCH).ok()?.as_secs_f64() % 86_400.0;
    Some(Duration::from_secs_f64(
        (logged - since).rem_euclid(86_400.0),
    ))
}

/// The value of `key=value` in a tracing line.
fn field(line: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&prefix))
        .map(str::to_owned)
}

/// A `Duration`'s Debug text: `12.3456ms`, `1.2s`, `870µs`, `120ns`.
fn parse_debug_duration(text: &str) -> Option<Duration> {
    let units: [(&str, f64); 4] = [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)];
    units.iter().find_map(|(unit, scale)| {
        text.strip_suffix(unit)
            .and_then(|number| number.parse::<f64>().ok())
            .map(|n| Duration::from_secs_f64(n * scale))
    })
}

fn median_duration(values: &[Duration]) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[n / 2]),
        n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2),
    }
}

fn median_f64(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_and_durations() {
        let line = "\u{1b}[2m2025-01-01T00:00:00.000001Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \
                    egret_agent::node: maps reconciled \u{1b}[3mchanges\u{1b}[0m\u{1b}[2m=\
                    \u{1b}[0m14000 \u{1b}[3melapsed_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m312.5";
        let line = strip_ansi(line);
        assert_eq!(field(&line, "changes").as_deref(), Some("14000"));
        assert_eq!(field(&line, "elapsed_ms").as_deref(), Some("312.5"));
        assert_eq!(
            parse_debug_duration("12.5ms"),
            Some(Duration::from_micros(12_500))
        );
        assert_eq!(
            parse_debug_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_debug_duration("870µs"),
            Some(Duration::from_micros(870))
        );
        assert_eq!(parse_debug_duration("x"), None);
        let since = UNIX_EPOCH + Duration::from_secs(20_000 * 86_400 + 3_600);
        let logged = logged_after(
            "2024-10-04T01:00:00.250000Z  INFO egret_agent: node programmed",
            since,
        )
        .expect("a timestamp");
        assert!((logged.as_secs_f64() - 0.25).abs() < 1e-6, "{logged:?}");
    }
}
