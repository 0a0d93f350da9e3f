//! How long `egret-agent` takes from SIGHUP to a data path that obeys the new config,
//! measured on the agent lab ([`egret_lab::AgentLab`]); needs root and built binaries
//! (`EGRET_GATEWAY_BIN`, `EGRET_AGENT_BIN`, or `target/release`).
//!
//! One lab, gateways and agents started once. Each round rewrites node1's config — alice
//! alternately selecting pod-a2 too and not — sends SIGHUP, and probes from pod-a2 to the
//! outside host with a UDP datagram every 2 ms, each from a fresh socket (a new flow): the
//! figure is the time from the signal to the sending of the first probe that arrived with
//! the new source (192.168.50.100 when selected, node1's 192.168.50.21 when not), every
//! later probe arriving with it too. Resolution: the probe interval. Prints every round,
//! then the medians. Nothing is asserted here; `tests/agent_e2e.rs` holds the behaviour.
//!
//! ```text
//! agent_reload [ROUNDS]      (env EGRET_ROUNDS, default 10)
//! ```

use std::{net::SocketAddrV4, process::ExitCode, time::Duration};

use anyhow::{Context as _, Result};
use egret_lab::{
    AgentLab,
    egress::{
        EGRESS_IP, NODE1_ADDRESS, Node, OUTSIDE_ADDRESS, Pod, Policy, check_interrupted,
        program_main, sleep_unless_interrupted,
    },
    ha::{median, millis},
    setting,
};

fn main() -> ExitCode {
    program_main("agent_reload", run)
}

fn run() -> Result<()> {
    let rounds: u32 = setting(1, Some("EGRET_ROUNDS"), 10, 1..=1000)?;
    let mut lab = AgentLab::new("reload")?;
    lab.start_all()?;
    let destination = SocketAddrV4::new(OUTSIDE_ADDRESS, 7600);
    let (mut selecting, mut releasing) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        check_interrupted()?;
        let select = round % 2 == 1;
        let (policies, expected) = if select {
            (vec![Policy::alice().select(Pod::A2)], EGRESS_IP)
        } else {
            (vec![Policy::alice()], NODE1_ADDRESS)
        };
        lab.set_policies(Node::Node1, policies)?;
        let at = lab.reload_agent(Node::Node1)?;
        let switch = lab
            .measure_switch(Pod::A2, destination, expected, at, Duration::from_secs(10))
            .with_context(|| format!("round {round}\n{}", lab.evidence()))?;
        println!(
            "round {round:>3}: pod-a2 {} → leaves with {expected}: {} after SIGHUP ({} probes)",
            if select { "selected" } else { "released" },
            millis(Some(switch.after)),
            switch.probes
        );
        if select {
            selecting.push(switch.after);
        } else {
            releasing.push(switch.after);
        }
        sleep_unless_interrupted(Duration::from_millis(300))?;
    }
    let all = [selecting.clone(), releasing.clone()].concat();
    println!();
    println!("SIGHUP → data path obeys, median over {rounds} rounds (probe every 2 ms):");
    println!("  all:       {}", millis(median(&all)));
    println!("  selecting: {}", millis(median(&selecting)));
    println!("  releasing: {}", millis(median(&releasing)));
    Ok(())
}
