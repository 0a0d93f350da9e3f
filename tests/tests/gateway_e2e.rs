//! End to end through `egret-gateway run`: a pod's traffic tunnelled by its node's kernel VXLAN
//! to the floating IP, translated by the gateway, and answered by an outside server that can
//! only reach the floating IP (see `egret_lab::topology`). Needs root, and a built gateway:
//! `cargo build --release -p egret-gateway` (scripts/test does it), or `EGRET_GATEWAY_BIN`.
//!
//! Two more tests need no gateway and prove the lab itself, so that a failure of the gateway
//! test points at the gateway: the same traffic checks through the kernel baseline (nftables
//! masquerade in the gw namespace), and the malformed burst captured on the wire unchanged.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, ensure};
use egret_lab::{
    GatewayLab, Mode, NetNs, require_root,
    topology::{
        self, Background, Direction, FLOATING_IP, GW_ADDRESS, Metrics, NODE_ADDRESS,
        OUTSIDE_ADDRESS, POD_ADDRESS, PYTHON, STRANGER_ADDRESS, Snmp, TUNNEL_NEXT_HOP, TUNNEL_PORT,
        VNI, run_with_timeout, scripts_dir,
    },
};

const LARGE_TRANSFER: u64 = 50 * 1024 * 1024;
const SMALL_TRANSFER: u64 = 5 * 1024 * 1024;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one named check and says which one failed, with the gateway's drop counters and the
/// end of its log when it runs; after each step, the gw kernel must still not hold the
/// floating IP.
fn step<T>(
    lab: &mut GatewayLab,
    name: &str,
    check: impl FnOnce(&mut GatewayLab) -> Result<T>,
) -> Result<T> {
    egret_lab::step(
        lab,
        name,
        |lab| {
            let value = check(lab)?;
            ensure!(
                !lab.gw_kernel_holds_floating_ip()?,
                "the gw namespace's kernel holds {FLOATING_IP} as an address:\n{}",
                lab.gw().ip(["-4", "addr", "show"])?
            );
            Ok(value)
        },
        |lab, err| {
            let mut evidence = String::new();
            if lab.gateway_started() {
                let drops = lab
                    .metrics()
                    .map(|metrics| format!("{:?}", metrics.all_drops()))
                    .unwrap_or_else(|err| format!("(no metrics: {err:#})"));
                let log = lab
                    .gateway_mut()
                    .map(|gateway| gateway.log_tail(30))
                    .unwrap_or_default();
                evidence =
                    format!("\ngateway drops now: {drops}\n--- gateway log (end) ---\n{log}");
            }
            err.context(format!("step \"{name}\" failed{evidence}"))
        },
    )
}

/// Five pings from `ns`, all answered.
fn ping_all(ns: &NetNs, interface: &str, to: Ipv4Addr) -> Result<()> {
    let count = 5;
    let replies = ns.ping(interface, to.into(), count)?;
    ensure!(
        replies == count,
        "{} ({interface}) → {to}: {replies} of {count} pings answered",
        ns.name()
    );
    Ok(())
}

fn sources_are(lab: &GatewayLab, expected: Ipv4Addr) -> Result<()> {
    let seen = lab.outside_view_of_pod(Duration::from_secs(10))?;
    for (protocol, source) in [
        ("TCP", seen.tcp),
        ("UDP", seen.udp),
        ("ICMP echo", seen.icmp),
    ] {
        ensure!(
            source == Some(expected),
            "the outside server saw {protocol} from the pod with source {source:?}, expected \
             {expected} (all: {seen:?})"
        );
    }
    Ok(())
}

/// Sends UDP from the pod to the outside server's `port` (with `ttl`, if given) and checks
/// the ICMP error its socket reports.
fn icmp_error_reaches_the_pod(
    lab: &GatewayLab,
    port: u16,
    ttl: Option<u8>,
    expected: &str,
) -> Result<()> {
    let report = run_with_timeout(
        lab.pod()
            .command(PYTHON)
            .arg(scripts_dir().join("udp_refused.py"))
            .args([
                POD_ADDRESS.to_string(),
                OUTSIDE_ADDRESS.to_string(),
                port.to_string(),
                "5".to_owned(),
            ])
            .args(ttl.map(|ttl| ttl.to_string())),
        Duration::from_secs(15),
    )
    .with_context(|| format!("no ICMP error reached the pod's UDP socket (expected {expected})"))?;
    ensure!(
        report.trim() == expected,
        "the pod's socket reported {report:?}, expected {expected:?}"
    );
    Ok(())
}

/// The outside server answers the pod with 1500-byte datagrams with DF set, which do not fit
/// the tunnel: the gateway must say so with ICMP fragmentation needed, from which the
/// server's kernel learns a path MTU of 1450 towards the floating IP.
fn path_mtu_is_learnt_from_the_gateway(lab: &GatewayLab) -> Result<()> {
    let script = scripts_dir().join("pmtu_probe.py");
    let port = "7300";
    let before = lab.metrics()?;
    let mut server = Background::spawn(
        lab.outside()
            .command(PYTHON)
            .arg(&script)
            .args(["server", port, "10"]),
    )?;
    // Bound before the pod's datagrams arrive.
    server.ready(Duration::from_secs(10))?;
    run_with_timeout(
        lab.pod().command(PYTHON).arg(&script).args([
            "client",
            &POD_ADDRESS.to_string(),
            &OUTSIDE_ADDRESS.to_string(),
            port,
            "10",
        ]),
        Duration::from_secs(15),
    )?;
    let finished = server.wait(Duration::from_secs(15))?;
    let report = finished.stdout.join("\n");
    ensure!(
        finished.status.success() && report.trim() == "path mtu=1450",
        "the outside server reported {report:?} ({}), expected \"path mtu=1450\"; stderr: {}",
        finished.status,
        finished.stderr
    );
    // The gateway counted its ICMP error before the server learnt from it.
    let after = lab.metrics_after(SystemTime::now())?;
    let errors = |m: &Metrics| {
        m.value("egret_gateway_icmp_errors_sent_total", &[])
            .unwrap_or(0.0)
    };
    ensure!(
        errors(&after) > errors(&before) && after.drops("too_big")? > before.drops("too_big")?,
        "icmp_errors_sent and too_big did not grow: {} → {}, {} → {}",
        errors(&before),
        errors(&after),
        before.drops("too_big")?,
        after.drops("too_big")?
    );
    Ok(())
}

fn transfer_exact(lab: &GatewayLab, direction: Direction, bytes: u64, port: u16) -> Result<()> {
    let transfer = lab.tcp_transfer(direction, bytes, port, TRANSFER_TIMEOUT)?;
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
        "   {direction:?}: {} MB in {seconds:.2} s ({:.0} Mbit/s), sha256 {}",
        bytes >> 20,
        bytes as f64 * 8.0 / seconds / 1e6,
        transfer.sent_sha256
    );
    Ok(())
}

/// A [`LARGE_TRANSFER`] that must also show in the gateway's metrics: at least that many
/// bytes in the direction the data went, and one flow more. With the kernel fast path on,
/// most of those bytes must have gone through it (all but the handshake and the packets
/// before the flow was handed over); with it off, none.
fn counted_transfer(lab: &GatewayLab, direction: Direction, port: u16, fast: bool) -> Result<()> {
    let label = match direction {
        Direction::PodToOutside => "outbound",
        Direction::OutsideToPod => "inbound",
    };
    let value = |metrics: &Metrics, name: &str, labels: &[(&str, &str)]| {
        metrics
            .value(name, labels)
            .with_context(|| format!("no {name} {labels:?}"))
    };
    let bytes = |m: &Metrics| value(m, "egret_gateway_bytes_total", &[("direction", label)]);
    let fast_bytes = |m: &Metrics| {
        value(
            m,
            "egret_gateway_fast_path_bytes_total",
            &[("direction", label)],
        )
    };
    let flows = |m: &Metrics| value(m, "egret_gateway_flows_created_total", &[]);
    let before = lab.metrics()?;
    ensure!(
        value(&before, "egret_gateway_fast_path_enabled", &[])? == f64::from(u8::from(fast)),
        "egret_gateway_fast_path_enabled is not {}",
        u8::from(fast)
    );
    transfer_exact(lab, direction, LARGE_TRANSFER, port)?;
    // Every byte has crossed the gateway once the receiver has it.
    let after = lab.metrics_after(SystemTime::now())?;
    let large = LARGE_TRANSFER as f64;
    let (counted, by_kernel, new_flows) = (
        bytes(&after)? - bytes(&before)?,
        fast_bytes(&after)? - fast_bytes(&before)?,
        flows(&after)? - flows(&before)?,
    );
    let share_ok = if fast {
        by_kernel >= 0.9 * large
    } else {
        by_kernel == 0.0
    };
    ensure!(
        counted >= large && new_flows >= 1.0 && share_ok,
        "after {} MiB {direction:?}, bytes_total{{direction=\"{label}\"}} grew by {counted}, \
         fast_path_bytes_total by {by_kernel} (fast path {}) and flows_created_total by \
         {new_flows}",
        LARGE_TRANSFER >> 20,
        if fast { "on" } else { "off" }
    );
    let packets = |m: &Metrics, name: &str, dir: &str| {
        value(m, name, &[("direction", dir)]).unwrap_or(f64::NAN)
    };
    let grown = |name: &str, dir: &str| packets(&after, name, dir) - packets(&before, name, dir);
    let both = grown("egret_gateway_packets_total", "outbound")
        + grown("egret_gateway_packets_total", "inbound");
    let read = value(&after, "egret_gateway_frames_read_total", &[])?
        - value(&before, "egret_gateway_frames_read_total", &[])?;
    eprintln!(
        "   {label}: {:.1} MiB counted, {:.1} MiB of it by the kernel fast path; \
         packets out/in {}/{}, by the fast path {}/{}; frames read by user space {read}",
        counted / 1048576.0,
        by_kernel / 1048576.0,
        grown("egret_gateway_packets_total", "outbound"),
        grown("egret_gateway_packets_total", "inbound"),
        grown("egret_gateway_fast_path_packets_total", "outbound"),
        grown("egret_gateway_fast_path_packets_total", "inbound"),
    );
    // The fast path's frames, those it receives and those it sends, never reach user space.
    // Without it, user space reads every frame: at least one per 64 KiB (the largest
    // super-packet).
    if fast {
        ensure!(
            read <= 0.05 * both,
            "user space read {read} frames while the fast path carried the transfer \
             ({both} packets both ways)"
        );
    } else {
        ensure!(
            read >= large / 65536.0,
            "user space read only {read} frames of {} MiB without the fast path",
            LARGE_TRANSFER >> 20
        );
    }
    Ok(())
}

#[test]
fn kernel_baseline_masquerades_pod_traffic_through_the_gw_namespace() -> Result<()> {
    require_root();
    let mut lab = GatewayLab::new("base")?;
    lab.set_mode(Mode::Kernel)?;
    step(&mut lab, "pod pings the outside server", |lab| {
        ping_all(lab.pod(), "eth0", OUTSIDE_ADDRESS)
    })?;
    step(&mut lab, "the outside server sees the gw address", |lab| {
        sources_are(lab, GW_ADDRESS)
    })?;
    step(&mut lab, "UDP to a closed port: port unreachable", |lab| {
        let expected = format!("refused origin=icmp type=3 code=3 offender={OUTSIDE_ADDRESS}");
        icmp_error_reaches_the_pod(lab, 9, None, &expected)
    })?;
    step(&mut lab, "TCP both ways byte-exact", |lab| {
        transfer_exact(lab, Direction::PodToOutside, SMALL_TRANSFER, 7100)?;
        transfer_exact(lab, Direction::OutsideToPod, SMALL_TRANSFER, 7101)
    })?;
    Ok(())
}

fn snmp_growth(before: &Snmp, after: &Snmp, group: &str, name: &str) -> Result<i64> {
    Ok(after.get(group, name)? - before.get(group, name)?)
}

#[test]
fn gateway_translates_pod_traffic_and_keeps_the_kernel_out() -> Result<()> {
    require_root();
    let binary = topology::gateway_binary()?;
    eprintln!("egret-gateway: {}", binary.display());
    let mut lab = GatewayLab::new("e2e")?;
    lab.set_mode(Mode::Egret)?;

    step(
        &mut lab,
        "the gateway starts and owns 192.168.50.100",
        |lab| lab.start_gateway(),
    )?;

    // On purpose: the gateway, not a switched-off sysctl, must keep the kernel out of the
    // floating IP's traffic. The counters of the gw kernel are compared at the end.
    lab.set_gw_forwarding(true)?;
    let snmp_before = lab.snmp(lab.gw())?;

    step(
        &mut lab,
        "the node's pings to the floating IP are answered",
        |lab| ping_all(lab.node(), "eth0", FLOATING_IP),
    )?;
    step(&mut lab, "the pod pings the outside server", |lab| {
        ping_all(lab.pod(), "eth0", OUTSIDE_ADDRESS)
    })?;
    step(
        &mut lab,
        "the outside server sees 192.168.50.100 as the source of TCP, UDP and ICMP",
        |lab| sources_are(lab, FLOATING_IP),
    )?;
    step(
        &mut lab,
        "UDP to a closed outside port comes back to the pod as ICMP port unreachable",
        |lab| {
            let expected = format!("refused origin=icmp type=3 code=3 offender={OUTSIDE_ADDRESS}");
            icmp_error_reaches_the_pod(lab, 9, None, &expected)
        },
    )?;
    step(
        &mut lab,
        "UDP from the pod with TTL 2 expires at the gateway: time exceeded from 192.168.50.100",
        |lab| {
            // The node's routing takes one, the gateway finds one left.
            let expected = format!("error origin=icmp type=11 code=0 offender={FLOATING_IP}");
            icmp_error_reaches_the_pod(lab, 9, Some(2), &expected)
        },
    )?;
    step(
        &mut lab,
        "1500-byte replies with DF get fragmentation needed: the outside learns MTU 1450",
        |lab| path_mtu_is_learnt_from_the_gateway(lab),
    )?;
    step(
        &mut lab,
        "50 MB pod → outside over TCP, byte-exact, in the gateway's metrics",
        |lab| counted_transfer(lab, Direction::PodToOutside, 7200, true),
    )?;
    step(
        &mut lab,
        "50 MB outside → pod over TCP, byte-exact, in the gateway's metrics",
        |lab| counted_transfer(lab, Direction::OutsideToPod, 7201, true),
    )?;

    step(
        &mut lab,
        "VXLAN from a stranger and with VNI 2 is dropped and counted exactly",
        |lab| {
            let (from_stranger, wrong_vni) = (7, 5);
            let before = lab.metrics()?;
            let send = |ns: &NetNs, source: Ipv4Addr, vni: u32, count| {
                run_with_timeout(
                    ns.command(PYTHON)
                        .arg(scripts_dir().join("vxlan_send.py"))
                        .args([
                            source.to_string(),
                            FLOATING_IP.to_string(),
                            TUNNEL_PORT.to_string(),
                            vni.to_string(),
                            u32::to_string(&count),
                        ]),
                    Duration::from_secs(10),
                )
            };
            send(lab.stranger(), STRANGER_ADDRESS, VNI, from_stranger)?;
            send(lab.node(), NODE_ADDRESS, VNI + 1, wrong_vni)?;
            // Every frame is on the wire once the senders returned.
            let after = lab.metrics_after(SystemTime::now())?;
            for (reason, sent) in [
                ("disallowed_source", from_stranger),
                ("wrong_vni", wrong_vni),
            ] {
                let counted = after.drops(reason)? - before.drops(reason)?;
                ensure!(
                    counted == u64::from(sent),
                    "drops_total{{reason=\"{reason}\"}} grew by {counted}, {sent} were sent \
                     (all drops now: {:?})",
                    after.all_drops()
                );
            }
            Ok(())
        },
    )?;

    step(
        &mut lab,
        "a burst of malformed frames is dropped and counted, and the gateway survives",
        |lab| {
            // Frames as the node's kernel would address them: outer to the MAC the gateway
            // answered ARP with, inner from vxlan0 to the MAC it answered inside the tunnel.
            let gateway_mac = lab.resolve_mac(lab.node(), "eth0", FLOATING_IP)?;
            let inner_dst = lab.resolve_mac(lab.node(), "vxlan0", TUNNEL_NEXT_HOP)?;
            let inner_src = lab.mac_of(lab.node(), "vxlan0")?;
            let before = lab.metrics()?;
            let report = run_with_timeout(
                lab.node()
                    .command(PYTHON)
                    .arg(scripts_dir().join("malformed_burst.py"))
                    .args(["--iface", "eth0", "--dst-mac", &gateway_mac])
                    .args(["--src-ip", &NODE_ADDRESS.to_string()])
                    .args(["--dst-ip", &FLOATING_IP.to_string()])
                    .args([
                        "--port",
                        &TUNNEL_PORT.to_string(),
                        "--vni",
                        &VNI.to_string(),
                    ])
                    .args(["--inner-src-mac", &inner_src, "--inner-dst-mac", &inner_dst])
                    .args(["--repeat", "20", "--fuzz", "300"]),
                Duration::from_secs(60),
            )?;
            eprintln!("   {}", report.trim());
            let after = lab.metrics_after(SystemTime::now())?;
            lab.gateway_mut()?.ensure_running()?;
            let grown: Vec<(String, u64)> = after
                .all_drops()
                .into_iter()
                .map(|(reason, now)| {
                    let was = before.drops(&reason).unwrap_or(0);
                    (reason, now.saturating_sub(was))
                })
                .filter(|(_, grew)| *grew > 0)
                .collect();
            eprintln!("   drops grown by the burst: {grown:?}");
            for reason in ["malformed", "bad_checksum", "not_ipv4"] {
                ensure!(
                    after.drops(reason)? > before.drops(reason)?,
                    "drops_total{{reason=\"{reason}\"}} did not grow; the burst grew: {grown:?}"
                );
            }
            Ok(())
        },
    )?;
    step(
        &mut lab,
        "after the burst the pod still pings and transfers over TCP",
        |lab| {
            lab.gateway_mut()?.ensure_running()?;
            ping_all(lab.pod(), "eth0", OUTSIDE_ADDRESS)?;
            transfer_exact(lab, Direction::PodToOutside, SMALL_TRANSFER, 7202)
        },
    )?;

    step(
        &mut lab,
        "the gw kernel forwarded, reset and answered nothing",
        |lab| {
            let after = lab.snmp(lab.gw())?;
            let growth = [
                ("Ip", "ForwDatagrams"),
                ("Tcp", "OutRsts"),
                ("Icmp", "OutMsgs"),
            ]
            .into_iter()
            .map(|(group, name)| {
                Ok((
                    format!("{group} {name}"),
                    snmp_growth(&snmp_before, &after, group, name)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
            ensure!(
                growth.iter().all(|(_, grew)| *grew == 0),
                "the gw kernel took part in the floating IP's traffic (ip_forward=1): growth \
                 in /proc/net/snmp: {growth:?}"
            );
            Ok(())
        },
    )?;

    step(
        &mut lab,
        "SIGTERM stops the gateway with status 0 within 5 s",
        stops_cleanly,
    )?;
    Ok(())
}

#[test]
fn without_the_fast_path_user_space_carries_everything() -> Result<()> {
    require_root();
    let mut lab = GatewayLab::new("e2e-user")?;
    lab.set_mode(Mode::Egret)?;
    lab.set_fast_path(false)?;
    step(
        &mut lab,
        "the gateway starts with [gateway].fast_path = false",
        |lab| lab.start_gateway(),
    )?;
    step(&mut lab, "the pod pings the outside server", |lab| {
        ping_all(lab.pod(), "eth0", OUTSIDE_ADDRESS)
    })?;
    step(
        &mut lab,
        "the outside server sees 192.168.50.100 as the source of TCP, UDP and ICMP",
        |lab| sources_are(lab, FLOATING_IP),
    )?;
    step(
        &mut lab,
        "50 MB pod → outside over TCP, byte-exact, none of it by the kernel fast path",
        |lab| counted_transfer(lab, Direction::PodToOutside, 7210, false),
    )?;
    step(
        &mut lab,
        "50 MB outside → pod over TCP, byte-exact, none of it by the kernel fast path",
        |lab| counted_transfer(lab, Direction::OutsideToPod, 7211, false),
    )?;
    step(
        &mut lab,
        "SIGTERM stops the gateway with status 0 within 5 s",
        stops_cleanly,
    )?;
    Ok(())
}

/// SIGTERM, then the gateway must exit with status 0 within the grace period.
fn stops_cleanly(lab: &mut GatewayLab) -> Result<()> {
    let stopped = lab.stop_gateway()?;
    ensure!(
        stopped.status.code() == Some(0),
        "egret-gateway exited with {} after SIGTERM ({:.1?})\n--- gateway log (end) ---\n{}",
        stopped.status,
        stopped.elapsed,
        stopped.log
    );
    eprintln!("   exited 0 in {:.2?}", stopped.elapsed);
    Ok(())
}

/// The frames of a classic pcap file (as tcpdump -w writes them).
fn pcap_frames(pcap: &[u8]) -> Result<Vec<Vec<u8>>> {
    ensure!(pcap.len() >= 24, "pcap shorter than its header");
    let magic = u32::from_le_bytes(pcap[..4].try_into()?);
    ensure!(
        magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d,
        "not a little-endian pcap: magic {magic:#x}"
    );
    let mut frames = Vec::new();
    let mut rest = &pcap[24..];
    while !rest.is_empty() {
        ensure!(rest.len() >= 16, "truncated pcap record header");
        let captured = usize::try_from(u32::from_le_bytes(rest[8..12].try_into()?))?;
        let original = usize::try_from(u32::from_le_bytes(rest[12..16].try_into()?))?;
        ensure!(captured == original, "frame cut by the snap length");
        ensure!(rest.len() >= 16 + captured, "truncated pcap record");
        frames.push(rest[16..16 + captured].to_vec());
        rest = &rest[16 + captured..];
    }
    Ok(frames)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn malformed_burst_puts_every_frame_on_the_wire_unchanged() -> Result<()> {
    require_root();
    let lab = GatewayLab::new("burst")?;
    let node_mac = lab.mac_of(lab.node(), "eth0")?;
    let gw_mac = lab.mac_of(lab.gw(), "eth0")?;
    let capture = lab.workdir().join("burst.pcap");
    let burst = |extra: &[&str]| {
        let mut command = lab.node().command(PYTHON);
        command
            .arg(scripts_dir().join("malformed_burst.py"))
            .args(["--iface", "eth0", "--dst-mac", &gw_mac])
            .args(["--src-ip", &NODE_ADDRESS.to_string()])
            .args(["--dst-ip", &FLOATING_IP.to_string()])
            .args(["--fuzz", "40"])
            .args(extra);
        run_with_timeout(&mut command, Duration::from_secs(30))
    };
    // The frames the script means to send, in order, as it lists them.
    let listed = burst(&["--list"])?;
    let expected: Vec<String> = listed
        .lines()
        .filter(|line| line.starts_with("  "))
        .map(|line| line.trim().to_owned())
        .collect();
    ensure!(expected.len() > 40, "the script listed only {listed}");

    let mut tcpdump = topology::Background::spawn(
        lab.gw()
            .command("tcpdump")
            .args(["-i", "eth0", "-n", "-U", "-s", "0", "-w"])
            .arg(&capture)
            .arg(format!("ether src {node_mac} and not arp")),
    )?;
    tcpdump.stderr_line("listening on", Duration::from_secs(10))?;
    burst(&[])?;
    // Every frame is on the wire once the script returned; tcpdump writes each as it
    // reads it (-U).
    let captured = || pcap_frames(&std::fs::read(&capture)?).map(|frames| frames.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while captured().unwrap_or(0) < expected.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    drop(tcpdump);

    let frames = pcap_frames(&std::fs::read(&capture)?)?;
    let seen: Vec<String> = frames.iter().map(|frame| hex(frame)).collect();
    ensure!(
        seen == expected,
        "the gw namespace captured {} frames, the script listed {}; first difference at {:?}",
        seen.len(),
        expected.len(),
        seen.iter()
            .zip(&expected)
            .position(|(seen, expected)| seen != expected)
    );
    Ok(())
}
