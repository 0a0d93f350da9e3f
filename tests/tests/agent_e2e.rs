//! End to end through `egret-agent` and `egret-gateway`: pods on two nodes, the agents in
//! static mode selecting flows and tunnelling them to the floating IPs, two gateways
//! translating them, an outside host and an internal host that report the source they see
//! (see `egret_lab::egress`). Needs root, and built binaries: `cargo build --release -p
//! egret-gateway` and `-p egret-agent` (scripts/test does both), or `EGRET_GATEWAY_BIN` and
//! `EGRET_AGENT_BIN`.
//!
//! The first test needs no agent and proves the lab itself (routing, both elections, the
//! cleanup), so that a failure of the others points at the agent. Timings (a reload, a
//! takeover) are printed, not asserted: speed is measured by `examples/agent_reload.rs`
//! and `examples/failover.rs`, the tests only hold the behaviour within generous bounds. The
//! tests run one at a time ([`one_lab_at_a_time`]): each lab runs two gateways and two
//! agents on the machine's two cores.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::Path,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use egret_lab::{
    AgentLab, NetNs,
    egress::{
        EGRESS_IP, EXCLUDED_OUTSIDE_ADDRESS, FLOATING_IPS, INTERNAL_ADDRESS, LiveConnection,
        Member, NODE1_ADDRESS, Node, OUTSIDE_ADDRESS, Pod, Policy, SECOND_EGRESS_IP, Seen,
        UNKNOWN_EGRESS_IP,
    },
    ha::{Snapshot, millis, one_lab_at_a_time},
    require_root,
    topology::{Direction, PeerSources},
};

const LARGE_TRANSFER: u64 = 50 * 1024 * 1024;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);
/// One probe's patience: a TCP connection (SYN retransmits at 1 s and 3 s), a UDP flow (a
/// datagram every 200 ms).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs one named check and says which one failed, with the gateways' roles, the agents'
/// status and the end of every log.
fn step<T>(
    lab: &mut AgentLab,
    name: &str,
    check: impl FnOnce(&mut AgentLab) -> Result<T>,
) -> Result<T> {
    egret_lab::step(lab, name, check, |lab, err| {
        if let Some(seconds) = std::env::var("EGRET_LAB_PAUSE_ON_FAILURE")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            eprintln!("!! {name} failed; the lab stays up for {seconds} s: {err:#}");
            std::thread::sleep(std::time::Duration::from_secs(seconds));
        }
        // The cause first, then the evidence, which is long.
        anyhow!("step \"{name}\" failed: {err:#}\n{}", lab.evidence())
    })
}

/// A lab with both gateways converged (gw1 owns .100, gw2 .101) and both agents ready.
fn running_lab(tag: &str) -> Result<AgentLab> {
    let mut lab = AgentLab::new(tag)?;
    step(
        &mut lab,
        "start the gateways and the agents",
        AgentLab::start_all,
    )?;
    Ok(lab)
}

/// The outside (or internal) host saw TCP, UDP and ICMP echo from `pod` with `expected` as
/// source.
fn sources_are(lab: &AgentLab, pod: Pod, destination: Ipv4Addr, expected: Ipv4Addr) -> Result<()> {
    let seen = lab.sources_seen(pod, destination)?;
    eprintln!(
        "   {} → {destination}: tcp {:?}, udp {:?}, icmp {:?}",
        pod.name(),
        seen.tcp,
        seen.udp,
        seen.icmp
    );
    all_from(&seen, expected).with_context(|| format!("{} → {destination}", pod.name()))
}

fn all_from(seen: &PeerSources, expected: Ipv4Addr) -> Result<()> {
    for (protocol, source) in [
        ("TCP", seen.tcp),
        ("UDP", seen.udp),
        ("ICMP echo", seen.icmp),
    ] {
        ensure!(
            source == Some(expected),
            "{protocol} arrived from {source:?}, expected {expected} (all: {seen:?})"
        );
    }
    Ok(())
}

/// A new UDP flow from `pod` to the outside host's `port` arrives from `expected`.
fn udp_from(lab: &AgentLab, pod: Pod, port: u16, expected: Ipv4Addr) -> Result<()> {
    let destination = SocketAddrV4::new(OUTSIDE_ADDRESS, port);
    let seen = lab.udp_source(pod, destination, PROBE_TIMEOUT)?;
    ensure!(
        seen.source() == Some(expected),
        "a new UDP flow {} → {destination} arrived as {seen:?}, expected from {expected}",
        pod.name()
    );
    Ok(())
}

/// Pings from `ns`, all answered.
fn ping_all(ns: &NetNs, to: Ipv4Addr) -> Result<()> {
    let count = 3;
    let replies = ns.ping("eth0", to.into(), count)?;
    ensure!(
        replies == count,
        "{} → {to}: {replies} of {count} pings answered",
        ns.name()
    );
    Ok(())
}

fn transfer_exact(lab: &AgentLab, pod: Pod, direction: Direction, port: u16) -> Result<()> {
    let transfer = lab.tcp_transfer(pod, direction, LARGE_TRANSFER, port, TRANSFER_TIMEOUT)?;
    ensure!(
        transfer.exact(),
        "{direction:?}: sent {} bytes (sha256 {}), received {} bytes (sha256 {})",
        transfer.bytes,
        transfer.sent_sha256,
        transfer.received,
        transfer.received_sha256
    );
    let seconds = transfer.elapsed.as_secs_f64();
    eprintln!(
        "   {} {direction:?}: {} MiB in {seconds:.2} s ({:.0} Mbit/s), byte-exact",
        pod.name(),
        LARGE_TRANSFER >> 20,
        LARGE_TRANSFER as f64 * 8.0 / seconds / 1e6
    );
    Ok(())
}

#[test]
fn the_lab_without_agents_routes_pods_and_elects_both_floating_ips() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let (namespaces, workdir) = {
        let mut lab = AgentLab::new("topo")?;
        let namespaces: Vec<String> = Pod::ALL
            .iter()
            .map(|pod| lab.pod(*pod).name().to_owned())
            .chain(
                Node::BOTH
                    .iter()
                    .map(|node| lab.node(*node).name().to_owned()),
            )
            .chain(
                Member::BOTH
                    .iter()
                    .map(|member| lab.gateway_ns(*member).name().to_owned()),
            )
            .chain(
                [lab.lan(), lab.router(), lab.outside(), lab.internal()]
                    .iter()
                    .map(|ns| ns.name().to_owned()),
            )
            .collect();
        let workdir = lab.workdir().to_owned();
        step(&mut lab, "the gateways converge", AgentLab::start_gateways)?;
        step(
            &mut lab,
            "each floating IP has its preferred owner",
            |lab| {
                for ip in FLOATING_IPS {
                    let owner = lab.owner(ip.address);
                    ensure!(
                        owner == Some(ip.preferred),
                        "{} is owned by {owner:?}, expected {}",
                        ip.address,
                        ip.preferred.name()
                    );
                }
                Ok(())
            },
        )?;
        step(&mut lab, "pods reach their node", |lab| {
            for pod in Pod::ALL {
                ping_all(lab.pod(pod), pod.gateway())?;
            }
            Ok(())
        })?;
        step(&mut lab, "nodes reach both floating IPs", |lab| {
            for node in Node::BOTH {
                for ip in FLOATING_IPS {
                    ping_all(lab.node(node), ip.address)?;
                }
            }
            Ok(())
        })?;
        step(
            &mut lab,
            "pods reach the internal host with their own address",
            |lab| {
                for pod in Pod::ALL {
                    sources_are(lab, pod, INTERNAL_ADDRESS, pod.address())?;
                }
                Ok(())
            },
        )?;
        step(
            &mut lab,
            "without an agent, nothing is translated: the outside host sees the pod",
            |lab| sources_are(lab, Pod::A1, OUTSIDE_ADDRESS, Pod::A1.address()),
        )?;
        step(&mut lab, "the lab's bpffs is mounted", |lab| {
            let bpffs = lab.workdir().join("bpf");
            ensure!(bpf_mounted_at(&bpffs)?, "no bpffs at {}", bpffs.display());
            Ok(())
        })?;
        (namespaces, workdir)
    };
    let listed = egret_lab::check_output(std::process::Command::new("ip").args(["netns", "list"]))?;
    let left: Vec<&String> = namespaces
        .iter()
        .filter(|name| {
            listed
                .lines()
                .any(|line| line.split_whitespace().next() == Some(name.as_str()))
        })
        .collect();
    ensure!(left.is_empty(), "namespaces left behind: {left:?}");
    ensure!(
        !bpf_mounted_at(&workdir.join("bpf"))?,
        "the lab's bpffs is still mounted"
    );
    ensure!(!workdir.exists(), "{} is left behind", workdir.display());
    Ok(())
}

/// Whether a bpffs is mounted at `point` (in this process's mount namespace).
fn bpf_mounted_at(point: &Path) -> Result<bool> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let point = point.to_string_lossy();
    Ok(mountinfo.lines().any(|line| {
        line.split_once(" - ").is_some_and(|(before, after)| {
            after.starts_with("bpf ") && before.split_whitespace().nth(4) == Some(&*point)
        })
    }))
}

/// Drops ICMP "fragmentation needed" arriving at a host: path MTU discovery off.
const NO_PMTUD: &str = "table inet no_pmtud {
    chain input {
        type filter hook input priority 0; policy accept;
        icmp type destination-unreachable icmp code frag-needed counter drop
    }
}
";

#[test]
fn selected_pod_leaves_with_the_egress_ip() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = running_lab("sel")?;
    step(
        &mut lab,
        "pod-a1 (alice) → outside: TCP, UDP, ping from the egress IP",
        |lab| sources_are(lab, Pod::A1, OUTSIDE_ADDRESS, EGRESS_IP),
    )?;
    step(
        &mut lab,
        "pod-b1 (alice, the other node) → outside from the egress IP",
        |lab| sources_are(lab, Pod::B1, OUTSIDE_ADDRESS, EGRESS_IP),
    )?;
    // Without path MTU discovery, only the MSS clamp keeps the segments within the tunnel:
    // both ends drop every "fragmentation needed".
    step(
        &mut lab,
        "pod-a1 and the outside host ignore \"fragmentation needed\"",
        |lab| {
            let rules = lab.workdir().join("no-pmtud.nft");
            fs::write(&rules, NO_PMTUD)?;
            for ns in [lab.pod(Pod::A1), lab.outside()] {
                ns.exec("nft", [Path::new("-f"), rules.as_path()])?;
            }
            Ok(())
        },
    )?;
    step(&mut lab, "50 MiB pod-a1 → outside, byte-exact", |lab| {
        transfer_exact(lab, Pod::A1, Direction::PodToOutside, 7100)
    })?;
    step(&mut lab, "50 MiB outside → pod-a1, byte-exact", |lab| {
        transfer_exact(lab, Pod::A1, Direction::OutsideToPod, 7101)
    })?;
    step(
        &mut lab,
        "the agents and the gateway counted the tunnelled traffic",
        |lab| {
            let node1 = lab.agent_status(Node::Node1)?;
            let alice = node1.policy("alice")?;
            let tunnelled = node1.counter("tunnel_out_packets")?;
            let flows = lab.gateway_total("egret_gateway_flows_created_total", &[])?;
            eprintln!(
                "   node1: alice {} packets, {} bytes; tunnel_out_packets {tunnelled}; \
                 gateways: {flows} flows created",
                alice.packets, alice.bytes
            );
            ensure!(
                alice.bytes >= LARGE_TRANSFER,
                "alice counted {} bytes on node1 after a {LARGE_TRANSFER}-byte transfer",
                alice.bytes
            );
            ensure!(tunnelled > 0, "node1 tunnelled no packet");
            let clamped = node1.counter("mss_clamped")?;
            ensure!(
                clamped >= 4,
                "node1 clamped {clamped} MSS options; each transfer's SYN and SYN-ACK need it"
            );
            ensure!(
                lab.agent_status(Node::Node2)?
                    .counter("tunnel_out_packets")?
                    > 0,
                "node2 tunnelled no packet for pod-b1"
            );
            ensure!(flows > 0, "the gateways created no flow");
            Ok(())
        },
    )?;
    Ok(())
}

#[test]
fn unselected_and_excluded_leave_with_the_node_ip_and_non_masquerade_keeps_the_pod_ip() -> Result<()>
{
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = running_lab("uns")?;
    step(
        &mut lab,
        "pod-a2 (no policy) → outside from node1's address",
        |lab| sources_are(lab, Pod::A2, OUTSIDE_ADDRESS, NODE1_ADDRESS),
    )?;
    step(
        &mut lab,
        "pod-a1 → 198.51.100.200 (alice's excluded /25) from node1's address",
        |lab| sources_are(lab, Pod::A1, EXCLUDED_OUTSIDE_ADDRESS, NODE1_ADDRESS),
    )?;
    step(
        &mut lab,
        "pod-a1 → internal host (non-masquerade) from its own address",
        |lab| sources_are(lab, Pod::A1, INTERNAL_ADDRESS, Pod::A1.address()),
    )?;
    step(
        &mut lab,
        "pod-b1 → internal host (non-masquerade) from its own address",
        |lab| sources_are(lab, Pod::B1, INTERNAL_ADDRESS, Pod::B1.address()),
    )?;
    Ok(())
}

/// The node's network policy: pod-a1's TCP to the outside host's port 5201 is dropped in
/// the forward hook, and counted. (Not `chain fwd`: nft reads `fwd` as a keyword.)
const NETWORK_POLICY: &str = "table inet np {
    chain np_forward {
        type filter hook forward priority 0; policy accept;
        ip saddr 10.10.1.5 ip daddr 198.51.100.10 tcp dport 5201 counter drop
    }
}
";

/// The packets the network policy's rule counted.
fn network_policy_drops(lab: &AgentLab) -> Result<u64> {
    let listed = lab
        .node(Node::Node1)
        .exec("nft", ["list", "table", "inet", "np"])?;
    listed
        .split_whitespace()
        .skip_while(|word| *word != "packets")
        .nth(1)
        .and_then(|count| count.parse().ok())
        .with_context(|| format!("no counter in:\n{listed}"))
}

/// What moves when a selected flow reaches a gateway: flows created and outbound packets of
/// both gateways, and node1's tunnelled packets.
fn translated(lab: &AgentLab) -> Result<[u64; 3]> {
    Ok([
        lab.gateway_total("egret_gateway_flows_created_total", &[])?,
        lab.gateway_total("egret_gateway_packets_total", &[("direction", "outbound")])?,
        lab.agent_status(Node::Node1)?
            .counter("tunnel_out_packets")?,
    ])
}

#[test]
fn forward_drop_on_the_node_stops_the_selected_flow_before_the_gateway() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = running_lab("fwd")?;
    let port = 5201;
    let destination = SocketAddrV4::new(OUTSIDE_ADDRESS, port);
    step(
        &mut lab,
        "before the network policy: pod-a1 → outside:5201 from the egress IP",
        |lab| {
            let seen = lab.tcp_source(Pod::A1, destination, PROBE_TIMEOUT)?;
            ensure!(
                seen.source() == Some(EGRESS_IP),
                "the connection arrived as {seen:?}"
            );
            Ok(())
        },
    )?;
    step(
        &mut lab,
        "the node drops pod-a1's TCP to port 5201",
        |lab| {
            let rules = lab.workdir().join("network-policy.nft");
            fs::write(&rules, NETWORK_POLICY)?;
            lab.node(Node::Node1)
                .exec("nft", [Path::new("-f"), rules.as_path()])?;
            Ok(())
        },
    )?;
    step(
        &mut lab,
        "the dropped connection fails and never reaches a gateway",
        |lab| {
            // The first connection closed in order (every segment of it arrived); the
            // gateways' metrics count all of it once they publish a snapshot taken after.
            lab.wait_gateways_counted(SystemTime::now())?;
            let before = translated(lab)?;
            let classified = lab
                .agent_status(Node::Node1)?
                .counter("classify_selected")?;
            let seen = lab.tcp_source(Pod::A1, destination, PROBE_TIMEOUT)?;
            ensure!(
                matches!(seen, Seen::Nothing(_)),
                "the connection went through the network policy: {seen:?}"
            );
            // Whatever of it got past the node is counted in a snapshot taken after it gave up.
            lab.wait_gateways_counted(SystemTime::now())?;
            let after = translated(lab)?;
            let dropped = network_policy_drops(lab)?;
            let classified_since = lab
                .agent_status(Node::Node1)?
                .counter("classify_selected")?
                - classified;
            eprintln!(
                "   {seen:?}; the rule dropped {dropped} packets; the classifier selected \
                 {classified_since} meanwhile; (flows created, outbound packets, \
                 tunnel_out_packets) {before:?} → {after:?}"
            );
            ensure!(dropped > 0, "the network policy's rule counted nothing");
            ensure!(
                after == before,
                "(flows created, outbound packets, tunnel_out_packets) moved from {before:?} \
                 to {after:?}: the dropped SYNs got past the node's filtering"
            );
            Ok(())
        },
    )?;
    step(
        &mut lab,
        "pod-a1's UDP still leaves from the egress IP",
        |lab| udp_from(lab, Pod::A1, port, EGRESS_IP),
    )?;
    Ok(())
}

/// The step that opens a live connection pod-a1 → outside, talking.
fn open_live_connection(lab: &mut AgentLab) -> Result<LiveConnection> {
    step(
        lab,
        "a live connection pod-a1 → outside (10 ms messages)",
        |lab| {
            let live = lab.live_connection(Pod::A1, 7300)?;
            still_talking(&live, 50)?;
            Ok(live)
        },
    )
}

/// Waits until the live connection has `more` further echoes, and says how far it got.
fn still_talking(live: &LiveConnection, more: usize) -> Result<()> {
    live.wait_echoes(more, Duration::from_secs(10))?;
    let (sent, echoed) = live.progress();
    eprintln!("   live connection: {sent} sent, {echoed} echoed");
    Ok(())
}

#[test]
fn agent_restart_keeps_flows_and_converges() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = running_lab("rst")?;
    let live = open_live_connection(&mut lab)?;
    step(&mut lab, "kill -9 node1's agent", |lab| {
        lab.kill_agent(Node::Node1)?;
        Ok(())
    })?;
    step(
        &mut lab,
        "without its agent, node1 keeps the connection and selects new flows",
        |lab| {
            still_talking(&live, 100)?;
            let seen = lab.tcp_source(
                Pod::A1,
                SocketAddrV4::new(OUTSIDE_ADDRESS, 7301),
                PROBE_TIMEOUT,
            )?;
            ensure!(
                seen.source() == Some(EGRESS_IP),
                "a new connection from pod-a1 arrived as {seen:?}"
            );
            udp_from(lab, Pod::A1, 7302, EGRESS_IP)?;
            // pod-a2 is still unselected.
            udp_from(lab, Pod::A2, 7303, NODE1_ADDRESS)
        },
    )?;
    // One egress IP per policy: bob takes pod-a2 through the second floating IP; alice
    // stays as she was.
    let bob = Policy::new("bob", SECOND_EGRESS_IP)
        .select(Pod::A2)
        .to("198.51.100.0/24");
    step(
        &mut lab,
        "restart node1's agent with a new policy bob (pod-a2 → .101)",
        |lab| {
            lab.set_policies(Node::Node1, vec![Policy::alice(), bob])?;
            lab.start_agent(Node::Node1)
        },
    )?;
    step(&mut lab, "the live connection carries on", |_| {
        still_talking(&live, 100)
    })?;
    step(&mut lab, "pod-a2 now leaves with bob's egress IP", |lab| {
        sources_are(lab, Pod::A2, OUTSIDE_ADDRESS, SECOND_EGRESS_IP)
    })?;
    step(&mut lab, "pod-a1 still leaves with alice's", |lab| {
        udp_from(lab, Pod::A1, 7304, EGRESS_IP)
    })?;
    step(&mut lab, "status: alice and bob programmed", |lab| {
        let status = lab.agent_status(Node::Node1)?;
        for name in ["alice", "bob"] {
            let policy = status.policy(name)?;
            ensure!(
                policy.state == "programmed",
                "{name} is {} ({:?})",
                policy.state,
                policy.reason
            );
        }
        Ok(())
    })?;
    // And back: bob's entries are now stale in the pinned maps; a new agent must remove them.
    step(
        &mut lab,
        "kill -9 again; restart with alice only: bob's stale entries go",
        |lab| {
            lab.kill_agent(Node::Node1)?;
            lab.set_policies(Node::Node1, vec![Policy::alice()])?;
            lab.start_agent(Node::Node1)
        },
    )?;
    step(
        &mut lab,
        "pod-a2 leaves with node1's address again",
        |lab| udp_from(lab, Pod::A2, 7305, NODE1_ADDRESS),
    )?;
    step(&mut lab, "status: alice only", |lab| {
        let status = lab.agent_status(Node::Node1)?;
        ensure!(
            status.policy("bob").is_err(),
            "bob is still reported: {status:?}"
        );
        ensure!(status.policy("alice")?.state == "programmed");
        Ok(())
    })?;
    let report = live.finish(Duration::from_secs(5));
    eprintln!("   live connection: {}", report.summary());
    ensure!(
        report.survived(),
        "the live connection did not survive the agent's restarts: {}\n{}",
        report.summary(),
        lab.evidence()
    );
    Ok(())
}

#[test]
fn sighup_applies_a_change_within_a_second() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = running_lab("hup")?;
    step(&mut lab, "pod-a2 leaves with node1's address", |lab| {
        udp_from(lab, Pod::A2, 7400, NODE1_ADDRESS)
    })?;
    let destination = SocketAddrV4::new(OUTSIDE_ADDRESS, 7401);
    step(
        &mut lab,
        "alice also selects pod-a2; SIGHUP; new flows of pod-a2 leave with .100",
        |lab| {
            lab.set_policies(Node::Node1, vec![Policy::alice().select(Pod::A2)])?;
            let at = lab.reload_agent(Node::Node1)?;
            let switch =
                lab.measure_switch(Pod::A2, destination, EGRESS_IP, at, Duration::from_secs(10))?;
            // Printed, not asserted: examples/agent_reload.rs measures it.
            eprintln!(
                "   the data path obeyed {} after SIGHUP (probes every {}, {} sent)",
                millis(Some(switch.after)),
                millis(Some(switch.interval)),
                switch.probes
            );
            Ok(())
        },
    )?;
    step(
        &mut lab,
        "back: alice without pod-a2; SIGHUP; pod-a2 leaves with node1's address",
        |lab| {
            lab.set_policies(Node::Node1, vec![Policy::alice()])?;
            let at = lab.reload_agent(Node::Node1)?;
            let switch = lab.measure_switch(
                Pod::A2,
                destination,
                NODE1_ADDRESS,
                at,
                Duration::from_secs(10),
            )?;
            eprintln!(
                "   the data path obeyed {} after SIGHUP",
                millis(Some(switch.after))
            );
            Ok(())
        },
    )?;
    step(&mut lab, "the agent still runs, alice programmed", |lab| {
        lab.agent_mut(Node::Node1)?.ensure_running()?;
        lab.wait_agent_ready(Node::Node1, Duration::from_secs(10))
    })?;
    step(
        &mut lab,
        "a source routed through an interface without the classifier is reported loudly",
        |lab| {
            // node1 routes 10.10.9.0/24 by its default route (eth0): no pod interface.
            lab.set_policies(Node::Node1, vec![Policy::alice().source("10.10.9.0/24")])?;
            lab.reload_agent(Node::Node1)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let expected = "10.10.9.0/24 via eth0".to_owned();
            loop {
                let status = lab.agent_status_json(Node::Node1)?;
                if status["unwatched_sources"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| *s == expected.as_str()))
                {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "no unwatched source {expected} in {status}"
                );
                thread::sleep(Duration::from_millis(100));
            }
            let text = lab.agent_status_text(Node::Node1)?;
            ensure!(
                text.contains(&format!("NOT TUNNELLED: {expected}")),
                "{text}"
            );
            ensure!(
                lab.agent_log_tail(Node::Node1, 20)
                    .contains("NOT tunnelled"),
                "the log does not say it"
            );
            Ok(())
        },
    )?;
    Ok(())
}

/// The 1-based line and column of the first `needle` in `text`.
fn position(text: &str, needle: &str) -> Result<(usize, usize)> {
    text.lines()
        .enumerate()
        .find_map(|(index, line)| {
            line.find(needle)
                .map(|at| (index + 1, line[..at].chars().count() + 1))
        })
        .with_context(|| format!("{needle:?} is not in the text"))
}

#[test]
fn garbage_config_and_unknown_egress_ip() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = running_lab("bad")?;
    let valid = lab.agent_config(Node::Node1).render();
    let bad_prefix = valid.replacen("\"10.10.1.5/32\"", "\"10.10.1.5/33\"", 1);
    let unknown_key = valid.replacen("[agent]\n", "[agent]\nbogus = 1\n", 1);
    step(
        &mut lab,
        "check refuses broken files with the key and its place",
        |lab| {
            let (line, column) = position(&bad_prefix, "\"10.10.1.5/33\"")?;
            for (name, text, expected) in [
                (
                    "bad-prefix.toml",
                    &bad_prefix,
                    format!(":{line}:{column}: error: policy[0].sources[0]: "),
                ),
                (
                    "unknown-key.toml",
                    &unknown_key,
                    ":2:1: error: agent.bogus: ".to_owned(),
                ),
            ] {
                let path = lab.workdir().join(name);
                fs::write(&path, text)?;
                let outcome = lab.agent_check(Node::Node1, &path)?;
                eprintln!("   {name}: {:?}: {}", outcome.code(), outcome.stderr.trim());
                let expected = format!("{}{expected}", path.display());
                ensure!(
                    outcome.code() == Some(2),
                    "check {name} exited {:?}, expected 2 (an invalid config); stderr: {}",
                    outcome.code(),
                    outcome.stderr
                );
                ensure!(
                    outcome.stderr.lines().any(|l| l.starts_with(&expected)),
                    "check {name}: no line starting {expected:?} in:\n{}",
                    outcome.stderr
                );
            }
            let path = lab.agent_config_path(Node::Node1);
            let outcome = lab.agent_check(Node::Node1, &path)?;
            ensure!(
                outcome.code() == Some(0),
                "check of the running config exited {:?}: {}",
                outcome.code(),
                outcome.stderr
            );
            Ok(())
        },
    )?;
    step(
        &mut lab,
        "SIGHUP with a broken file: the old config stays, the error is reported",
        |lab| {
            lab.write_agent_config_text(Node::Node1, &bad_prefix)?;
            lab.reload_agent(Node::Node1)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                let status = lab.agent_status(Node::Node1)?;
                if status.last_error.is_some() {
                    break status;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the status reports no reload error 10 s after SIGHUP: {:?}",
                    status.json
                );
                thread::sleep(Duration::from_millis(100));
            };
            eprintln!("   reload error: {:?}", status.last_error);
            lab.agent_mut(Node::Node1)?.ensure_running()?;
            let alice = status.policy("alice")?;
            ensure!(
                alice.state == "programmed",
                "alice is {} after a failed reload",
                alice.state
            );
            udp_from(lab, Pod::A1, 7500, EGRESS_IP)
        },
    )?;
    let mallory = Policy::new("mallory", UNKNOWN_EGRESS_IP)
        .select(Pod::A2)
        .to("198.51.100.0/24");
    step(
        &mut lab,
        "a policy egressing from a non-floating IP is rejected, alice keeps working",
        |lab| {
            lab.set_policies(Node::Node1, vec![Policy::alice(), mallory])?;
            lab.reload_agent(Node::Node1)?;
            lab.wait_agent_ready(Node::Node1, Duration::from_secs(10))?;
            let status = lab.agent_status(Node::Node1)?;
            let rejected = status.policy("mallory")?;
            ensure!(
                rejected.state == "rejected"
                    && rejected.reason.as_deref() == Some("unknown_egress_ip"),
                "mallory: {rejected:?}"
            );
            ensure!(
                status.last_error.is_none(),
                "a good reload left the error {:?}",
                status.last_error
            );
            udp_from(lab, Pod::A1, 7501, EGRESS_IP)?;
            // Not programmed: pod-a2 is masqueraded as before.
            udp_from(lab, Pod::A2, 7502, NODE1_ADDRESS)
        },
    )?;
    step(
        &mut lab,
        "the gateways kept running and their addresses",
        |lab| {
            lab.ensure_gateways_running()?;
            for ip in FLOATING_IPS {
                let owner = lab.owner(ip.address);
                ensure!(
                    owner == Some(ip.preferred),
                    "{} is owned by {owner:?}",
                    ip.address
                );
            }
            Ok(())
        },
    )?;
    Ok(())
}

#[test]
fn failover_keeps_the_selected_connection() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = running_lab("fo")?;
    let gw2 = |lab: &AgentLab| Snapshot::parse(&lab.api_get(Member::Gw2, "/status")?);
    let before = gw2(&lab)?;
    let live = open_live_connection(&mut lab)?;
    step(&mut lab, "gw2 holds the connection's flow, synced", |lab| {
        Snapshot::wait(
            Member::Gw2.name(),
            "the live connection's flow installed from gw1",
            Duration::from_secs(5),
            || gw2(lab),
            |s| s.grew(&before, "/flows/live") >= 1,
        )?;
        Ok(())
    })?;
    let at = step(
        &mut lab,
        "kill -9 gw1, the master of 192.168.50.100",
        |lab| lab.kill_gateway(Member::Gw1),
    )?;
    step(&mut lab, "gw2 takes 192.168.50.100 over", |lab| {
        let takeover = lab.wait_owner(EGRESS_IP, Member::Gw2, at, Duration::from_secs(5))?;
        eprintln!(
            "   gw2 became master of {EGRESS_IP} {} after the kill (its own record)",
            millis(Some(takeover))
        );
        Ok(())
    })?;
    step(&mut lab, "the live connection carries on", |_| {
        still_talking(&live, 100)
    })?;
    step(
        &mut lab,
        "new flows of pod-a1 leave from .100 via gw2",
        |lab| udp_from(lab, Pod::A1, 7310, EGRESS_IP),
    )?;
    let report = live.finish(Duration::from_secs(5));
    eprintln!(
        "   live connection: {}; first echo after the kill {}",
        report.summary(),
        millis(report.messenger.first_echo_after(at))
    );
    ensure!(
        report.survived(),
        "the live connection did not survive the failover: {}\n{}",
        report.summary(),
        lab.evidence()
    );
    Ok(())
}

#[test]
fn sigterm_keeps_the_data_path_and_uninstall_removes_everything() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = running_lab("uni")?;
    step(
        &mut lab,
        "SIGTERM: the agent exits and pod-a1 still leaves from the egress IP",
        |lab| {
            let (status, _, killed) = lab.stop_agent(Node::Node1, Duration::from_secs(5))?;
            ensure!(
                !killed && status.success(),
                "the agent did not exit cleanly on SIGTERM: {status:?}, killed {killed}"
            );
            udp_from(lab, Pod::A1, 7600, EGRESS_IP)
        },
    )?;
    step(
        &mut lab,
        "uninstall removes the table, the routing, the device and the pins",
        |lab| {
            lab.agent_uninstall(Node::Node1)?;
            let node = lab.node(Node::Node1);
            ensure!(
                node.exec("nft", ["list", "table", "ip", "egret"]).is_err(),
                "the masquerade table is still there"
            );
            ensure!(
                node.ip(["link", "show", "dev", "egret0"]).is_err(),
                "egret0 is still there"
            );
            let rules = node.ip(["rule", "show"])?;
            ensure!(!rules.contains("fwmark"), "rules are left:\n{rules}");
            let pins = lab.pin_path(Node::Node1);
            ensure!(!pins.exists(), "{} is still there", pins.display());
            Ok(())
        },
    )?;
    step(
        &mut lab,
        "after uninstall pod-a1 is neither tunnelled nor masqueraded",
        |lab| udp_from(lab, Pod::A1, 7601, Pod::A1.address()),
    )?;
    Ok(())
}
