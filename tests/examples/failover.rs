//! How long a failover between two `egret-gateway`s takes and what it breaks, measured on
//! the failover lab ([`egret_lab::HaLab`]). Run it through `tests/measure/failover`, which
//! builds the gateway first; needs root.
//!
//! For each advert interval (100 ms and 1 s) it runs ROUNDS rounds (default 5), each on a
//! fresh lab: both gateways start and agree (gw1 master, priority 200 against 100), the pod
//! starts talking to the outside server — a connection messaging every 10 ms, 200 parallel
//! TCP connections, 4 UDP flows, a UDP datagram every 2 ms — and after 2 s gw1 is killed
//! with SIGKILL. Per round it prints:
//!
//! - takeover: from the kill to the first frame gw2 forwarded with the floating IP as
//!   source, captured on the router's LAN interface (kernel timestamps, the same clock as
//!   the kill);
//! - election: from the kill to gw2's own record of becoming master (its `/status`, ms);
//! - gratuitous ARP: from the kill to gw2's first gratuitous ARP on the wire;
//! - connections alive: of the 200, those that completed an echo round trip sent after the
//!   takeover, without a reset;
//! - the 10 ms connection: whether every message came back in order without a reset, and
//!   the longest time between two echoes;
//! - UDP: flows that received the datagram the outside server sent first after the
//!   takeover.
//!
//! Then a table of the medians per interval. Nothing is asserted here: the tests
//! (`tests/tests/ha_e2e.rs`) hold the targets.
//!
//! ```text
//! failover [ROUNDS]      (env EGRET_ROUNDS)
//! ```

use std::{process::ExitCode, time::Duration};

use anyhow::{Result, ensure};
use egret_lab::{
    HaLab,
    ha::{FailoverReport, Failure, HaConfig, Load, Member, median, millis},
    setting,
    topology::gateway_binary,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("failover: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// A table cell in milliseconds: [`millis`] without the unit.
fn figure(duration: Option<Duration>) -> String {
    millis(duration).trim_end_matches(" ms").to_owned()
}

/// One round on a fresh lab.
fn round(tag: &str, interval: Duration) -> Result<FailoverReport> {
    let mut lab = HaLab::new(
        tag,
        HaConfig {
            advert_interval: interval,
            ..HaConfig::default()
        },
    )?;
    let master = lab.start_both()?;
    ensure!(
        master == Member::Gw1,
        "{} became master, expected gw1",
        master.name()
    );
    lab.failover(Failure::Kill, &Load::default())
}

/// What one interval's rounds gave.
struct Row {
    interval: Duration,
    reports: Vec<FailoverReport>,
    failed_rounds: usize,
}

fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root: it builds network namespaces"
    );
    let rounds: u32 = setting(1, Some("EGRET_ROUNDS"), 5, 1..=50)?;
    let binary = gateway_binary()?;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "egret-gateway: {}\n{rounds} rounds per advert interval, kill -9 of the master, {cpus} CPUs",
        binary.display()
    );
    let mut rows = Vec::new();
    for (index, interval) in [Duration::from_millis(100), Duration::from_secs(1)]
        .into_iter()
        .enumerate()
    {
        println!("\n== advert interval {} ms", interval.as_millis());
        println!(
            "{:>5} {:>12} {:>12} {:>12} {:>12} {:>10} {:>16} {:>6}",
            "round",
            "takeover ms",
            "election ms",
            "GARP ms",
            "connections",
            "10ms conn",
            "longest gap ms",
            "UDP"
        );
        let mut row = Row {
            interval,
            reports: Vec::new(),
            failed_rounds: 0,
        };
        for number in 1..=rounds {
            match round(&format!("fo{index}{number}"), interval) {
                Ok(report) => {
                    println!(
                        "{number:>5} {:>12} {:>12} {:>12} {:>12} {:>10} {:>16} {:>6}",
                        figure(report.takeover),
                        figure(report.election_takeover),
                        figure(report.garp),
                        format!("{}/{}", report.flows_alive(), report.flows.len()),
                        if report.messenger_survived() {
                            "intact"
                        } else {
                            "broken"
                        },
                        figure(Some(report.messenger.longest_gap())),
                        format!(
                            "{}/{}",
                            report.udp_received.iter().filter(|seen| **seen).count(),
                            report.udp_received.len()
                        )
                    );
                    row.reports.push(report);
                }
                Err(err) => {
                    println!("{number:>5} failed: {err:#}");
                    row.failed_rounds += 1;
                }
            }
        }
        rows.push(row);
    }

    println!("\n== medians (kill -9 of the master, 200 connections, a 10 ms connection)");
    println!(
        "{:>9} {:>8} {:>12} {:>12} {:>10} {:>14} {:>14} {:>16}",
        "interval",
        "rounds",
        "takeover ms",
        "election ms",
        "GARP ms",
        "connections",
        "10ms intact",
        "longest gap ms"
    );
    for row in &rows {
        let takeovers: Vec<Duration> = row.reports.iter().filter_map(|r| r.takeover).collect();
        let elections: Vec<Duration> = row
            .reports
            .iter()
            .filter_map(|r| r.election_takeover)
            .collect();
        let garps: Vec<Duration> = row.reports.iter().filter_map(|r| r.garp).collect();
        let alive: Vec<usize> = row
            .reports
            .iter()
            .map(FailoverReport::flows_alive)
            .collect();
        let gaps: Vec<Duration> = row
            .reports
            .iter()
            .map(|r| r.messenger.longest_gap())
            .collect();
        let intact = row
            .reports
            .iter()
            .filter(|r| r.messenger_survived())
            .count();
        println!(
            "{:>7}ms {:>8} {:>12} {:>12} {:>10} {:>14} {:>14} {:>16}",
            row.interval.as_millis(),
            format!(
                "{}/{}",
                row.reports.len(),
                row.reports.len() + row.failed_rounds
            ),
            figure(median(&takeovers)),
            figure(median(&elections)),
            figure(median(&garps)),
            median(&alive).map_or_else(|| "-".to_owned(), |n| format!("{n}/200")),
            format!("{intact}/{}", row.reports.len()),
            figure(median(&gaps)),
        );
    }
    Ok(())
}
