//! The demo of the README, run by `scripts/demo`: egret's whole path in network namespaces
//! on this host, driven as a cluster user would ([`egret_lab::cluster::ClusterLab`]). A
//! Kubernetes API server of the lab's own runs beside two gateways sharing two floating IPs
//! and two nodes running pods and `egret-agent` in Kubernetes mode; `kubectl` applies the
//! seed's EgressNATPolicy (the `role=frontend` pods of the namespaces of users alice and paul,
//! toward 198.51.100.0/24 but its upper half, leaving with 192.168.50.100). The demo shows
//! `kubectl get egressnatpolicies` and the EgressGateway, the source address an outside host
//! sees for a selected pod, an unselected pod and a non-masquerade destination, then kills
//! the gateway that owns 192.168.50.100 while pod-a1 talks to the outside host, and shows
//! the takeover, what the connection lost and the EgressGateway again. Everything it made is
//! removed at the end, also on Ctrl-C or SIGTERM. Needs root and built binaries
//! (`EGRET_GATEWAY_BIN`, `EGRET_AGENT_BIN`, `EGRET_APISERVER_BIN`, or `target/release`).
//!
//! Exits 0 when every address was the expected one and the connection survived, 1
//! otherwise, 130 when interrupted.

use std::{net::Ipv4Addr, process::ExitCode, time::Duration};

use anyhow::{Result, bail};
use egret_lab::{
    cluster::{ClusterLab, apiserver_binary},
    egress::{
        EGRESS_IP, INTERNAL_ADDRESS, Member, NODE1_ADDRESS, NODE2_ADDRESS, OUTSIDE_ADDRESS, Pod,
        SECOND_EGRESS_IP, check_interrupted, handle_interrupts, interrupted,
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
        "building the lab: an API server, gw1, gw2, node1 (pod-a1, pod-a2), node2 (pod-b1), \
         router, outside, internal;\napplying the CRDs, the pods and the seed's policy with \
         kubectl; starting egret-gateway on gw1 and gw2 and egret-agent (Kubernetes mode) on \
         node1 and node2 ..."
    );
    let cluster = ClusterLab::start("demo", &apiserver_binary()?)?;
    check_interrupted()?;
    println!("  gw1 owns {EGRESS_IP}, gw2 owns {SECOND_EGRESS_IP}\n");
    let show = |cluster: &ClusterLab, args: &[&str]| -> Result<()> {
        println!("$ kubectl {}", args.join(" "));
        print!("{}", cluster.kubectl().run(args)?);
        println!();
        Ok(())
    };
    // The status as the gateways and the status writer have it once they have reported.
    cluster.kubectl().wait_for(
        &["egressgateway", "default"],
        Duration::from_secs(30),
        |g| {
            g["status"]["floatingIPs"][EGRESS_IP.to_string()] == "gw1"
                && g["status"]["floatingIPs"][SECOND_EGRESS_IP.to_string()] == "gw2"
        },
    )?;
    cluster.kubectl().wait_for(
        &["egressnatpolicy", "egress"],
        Duration::from_secs(30),
        |p| p["status"]["selectedPods"] == 2,
    )?;
    show(&cluster, &["get", "pods", "-A", "--show-labels"])?;
    show(&cluster, &["get", "egressnatpolicies"])?;
    show(&cluster, &["get", "egressgateway", "default", "-o", "yaml"])?;
    let mut lab = cluster.lab;
    let _api = cluster.api;

    let mut all_as_expected = true;
    let views = [
        (
            "outside host sees, for pod-a1 (selected: role=frontend, user=alice):",
            Pod::A1,
            OUTSIDE_ADDRESS,
            EGRESS_IP,
        ),
        (
            "outside host sees, for pod-a2 (not selected: no role):",
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
    let cluster = ClusterLab { lab, api: _api };
    cluster.kubectl().wait_for(
        &["egressgateway", "default"],
        Duration::from_secs(10),
        |g| g["status"]["nodes"]["gw1"] == "Down",
    )?;
    show(&cluster, &["get", "egressgateway", "default", "-o", "yaml"])?;
    println!("removing the lab ...");
    drop(cluster);
    println!("done");
    Ok(all_as_expected)
}
