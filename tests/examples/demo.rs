//! The demo of the README, run by `scripts/demo`: egret's whole path in network namespaces
//! on this host ([`egret_lab::AgentLab`]). Two gateways share two floating IPs, two nodes run
//! pods and `egret-agent` in static mode (policy alice selects pod-a1 and pod-b1 toward
//! 198.51.100.0/24 and leaves with 192.168.50.100). The demo shows the source address an
//! outside host sees for a selected pod, an unselected pod and a non-masquerade destination,
//! then kills the gateway that owns 192.168.50.100 while pod-a1 talks to the outside host,
//! and shows the takeover and what the connection lost. Everything it made is removed at the
//! end, also on Ctrl-C or SIGTERM. Needs root and built binaries (`EGRET_GATEWAY_BIN`,
//! `EGRET_AGENT_BIN`, or `target/release`).
//!
//! Exits 0 when every address was the expected one and the connection survived, 1
//! otherwise, 130 when interrupted.

use std::{net::Ipv4Addr, process::ExitCode, time::Duration};

use anyhow::{Result, bail};
use egret_lab::{
    AgentLab,
    egress::{
        EGRESS_IP, INTERNAL_ADDRESS, Member, NODE1_ADDRESS, NODE2_ADDRESS, Node, OUTSIDE_ADDRESS,
        Pod, SECOND_EGRESS_IP, check_interrupted, handle_interrupts, interrupted,
        sleep_unless_interrupted,
    },
};

fn main() -> ExitCode {
    if let Err(err) = handle_interrupts() {
        eprintln!("demo: error: {err:#}");
        return ExitCode::FAILURE;
    }
    // The lab is dropped, and so removed, before `run` returns.
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(_) if interrupted() => {
            eprintln!("demo: interrupted; the lab is removed");
            ExitCode::from(130)
        }
        Err(err) => {
            eprintln!("demo: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// What an address is, in the lab.
fn describe(address: Ipv4Addr) -> String {
    match address {
        EGRESS_IP | SECOND_EGRESS_IP => "(egress IP)".to_owned(),
        NODE1_ADDRESS => "(node1's IP)".to_owned(),
        NODE2_ADDRESS => "(node2's IP)".to_owned(),
        _ => match Pod::ALL.iter().find(|pod| pod.address() == address) {
            Some(_) => "(the pod's own IP)".to_owned(),
            None => String::new(),
        },
    }
}

fn run() -> Result<bool> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo needs root: it creates network namespaces and loads eBPF programs");
    }
    println!(
        "building the lab: gw1, gw2, node1 (pod-a1, pod-a2), node2 (pod-b1), router, outside, internal ..."
    );
    let mut lab = AgentLab::new("demo")?;
    check_interrupted()?;
    println!("starting egret-gateway on gw1 and gw2 ...");
    lab.start_gateways()?;
    println!("  gw1 owns {EGRESS_IP}, gw2 owns {SECOND_EGRESS_IP}");
    for node in Node::BOTH {
        check_interrupted()?;
        println!("starting egret-agent on {} ...", node.name());
        lab.start_agent(node)?;
    }
    println!();

    let mut all_as_expected = true;
    let views = [
        (
            "outside host sees, for pod-a1 (selected, policy alice):",
            Pod::A1,
            OUTSIDE_ADDRESS,
            EGRESS_IP,
        ),
        (
            "outside host sees, for pod-a2 (not selected):",
            Pod::A2,
            OUTSIDE_ADDRESS,
            NODE1_ADDRESS,
        ),
        (
            "internal host 172.16.0.10 sees, for pod-a1 (non-masquerade):",
            Pod::A1,
            INTERNAL_ADDRESS,
            Pod::A1.address(),
        ),
    ];
    let width = views.iter().map(|view| view.0.len()).max().unwrap_or(0) + 1;
    for (label, pod, destination, expected) in views {
        check_interrupted()?;
        let seen = lab.sources_seen(pod, destination)?;
        check_interrupted()?;
        let line = match (seen.tcp, seen.udp, seen.icmp) {
            (Some(tcp), Some(udp), Some(icmp)) if tcp == udp && udp == icmp => {
                if tcp != expected {
                    all_as_expected = false;
                }
                let mark = if tcp == expected {
                    String::new()
                } else {
                    format!("   <- expected {expected}")
                };
                format!("{tcp} {}{mark}", describe(tcp))
            }
            _ => {
                all_as_expected = false;
                format!(
                    "tcp {:?}, udp {:?}, icmp {:?}   <- expected {expected} for all",
                    seen.tcp, seen.udp, seen.icmp
                )
            }
        };
        println!("{label:<width$}{line}");
    }
    println!();

    check_interrupted()?;
    let live = lab.live_connection(Pod::A1, 7300)?;
    live.wait_echoes(50, Duration::from_secs(10))?;
    // Long enough for the connection's state to reach gw2.
    sleep_unless_interrupted(Duration::from_secs(1))?;
    println!("killing gw1 (master of {EGRESS_IP}) ...");
    let at = lab.kill_gateway(Member::Gw1)?;
    let takeover = lab.wait_owner(EGRESS_IP, Member::Gw2, at, Duration::from_secs(10))?;
    // Whatever happens to the connection is reported below.
    let _ = live.wait_echoes(100, Duration::from_secs(10));
    sleep_unless_interrupted(Duration::from_secs(1))?;
    let report = live.finish(Duration::from_secs(5));
    let survived = report.survived();
    let outcome = if survived {
        format!("survived ({} messages, none lost)", report.messages())
    } else {
        all_as_expected = false;
        format!("BROKEN: {}", report.summary())
    };
    println!(
        "{EGRESS_IP} taken over by gw2 in {} ms; live connection from pod-a1: {outcome}",
        takeover.as_millis()
    );
    if let Some(stall) = report.messenger.first_echo_after(at) {
        println!(
            "  (the first message sent after the kill came back {} ms after the kill)",
            stall.as_millis()
        );
    }
    println!();
    println!("removing the lab ...");
    drop(lab);
    println!("done");
    Ok(all_as_expected)
}
