//! What a gateway takes from its tunnel ([`egret_lab::HaLab`]: gw1 master, gw2 backup, the
//! sync sealed, unicast adverts).
//!
//! - **MAC poisoning**: the `stranger` (192.168.50.40) sends VXLAN with the node's address
//!   (192.168.50.21) as outer source from its own MAC: a packet of the pod's own flow, a
//!   new flow, and a tunnel ARP asking for the next hop, each with a tunnel MAC of its
//!   choosing. While it does, the outside server pushes 300 datagrams to the pod's flow:
//!   the pod gets them all, the stranger none; both gateways keep the node's real MACs,
//!   gw1 counts every stranger frame as `node_mismatch` and its ARP probes of the node's
//!   address conclude `confirmed`, or `conflict` once the stranger also answers ARP for the
//!   node's address (it holds it on its interface), which does not win either. Nothing the
//!   stranger sends reaches the outside server: neither packets that would open flows, nor
//!   big packets of the pod's established flow, which the kernel fast path would forward
//!   itself did it not check the node's MAC (it forwarded all of them before it did); the
//!   pod's own such packets still take the fast path.
//! - **Martian inner destinations**: from the node, pod packets through the real tunnel
//!   toward gw1's and gw2's addresses, their sync port and the floating IP, and crafted
//!   VXLAN toward 127.0.0.1, 255.255.255.255, 224.0.0.18, 0.0.0.1, 169.254.100.1 and the
//!   same gateway addresses, are dropped as `martian`, and the router's LAN interface
//!   sees none of them; a crafted packet to the outside server (the control) arrives.
//!
//! The frames come from `tests/scripts/vxlan_frames.py` (scapy; a packet socket on `eth0`
//! of the stranger's or the node's namespace). Needs root, python3-scapy and a built
//! gateway (`EGRET_GATEWAY_BIN`, or `cargo build --release -p egret-gateway`). The lab's
//! namespaces go when it drops, also on failure.

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use egret_lab::{
    HaLab,
    ha::{
        Capture, Frame, GW2_ADDRESS, HaConfig, Member, SYNC_PORT, Snapshot, endpoint, format_mac,
        one_lab_at_a_time, parse_mac,
    },
    require_root,
    topology::{
        FLOATING_IP, GW_ADDRESS, Generator, NODE_ADDRESS, OUTSIDE_ADDRESS, POD_ADDRESS, PYTHON,
        Sent, scripts_dir,
    },
};

/// The outside server's port of the pushed flow, and the pod's.
const PUSH_PORT: u16 = 7700;
const POD_PUSH_PORT: u16 = 31_000;
/// Datagrams the outside server pushes to the pod while the stranger poisons, 10 ms apart.
const PUSHES: u32 = 300;
const PUSH_PERIOD: Duration = Duration::from_millis(10);
/// The outside port a flow the stranger tries to open goes to.
const NEW_FLOW_PORT: u16 = 7701;
/// The tunnel MAC the stranger's frames carry.
const EVIL_TUNNEL_MAC: &str = "02:66:66:66:66:66";
/// Frames a second the stranger sends.
const POISON_RATE: u32 = 200;

/// A converged lab, gw1 master.
fn lab(tag: &str) -> Result<HaLab> {
    let mut lab = HaLab::new(
        tag,
        HaConfig {
            unicast: true,
            ..HaConfig::default()
        },
    )?;
    let master = lab.start_both()?;
    ensure!(
        master == Member::Gw1,
        "{} is master\n{}",
        master.name(),
        lab.evidence()
    );
    Ok(lab)
}

/// `vxlan_frames.py` in `ns`: `frames` in turn with the node's address as outer source, to
/// the floating IP at gw1's MAC, their inner frames from `inner_mac`.
fn vxlan_frames(
    lab: &HaLab,
    ns: &egret_lab::NetNs,
    inner_mac: &str,
    rounds: Rounds,
    frames: &[String],
) -> Result<Generator> {
    let mut command = ns.command(PYTHON);
    command
        .arg(scripts_dir().join("vxlan_frames.py"))
        .args(["--outer-src", &NODE_ADDRESS.to_string()])
        .args(["--outer-dst", &FLOATING_IP.to_string()])
        .args(["--dst-mac", &format_mac(&lab.mac(Member::Gw1)?)])
        .args(["--inner-src-mac", inner_mac])
        .args(["--rate", &POISON_RATE.to_string()]);
    match rounds {
        Rounds::Count(n) => command.args(["--count", &n.to_string()]),
        Rounds::For(d) => command.args(["--duration", &d.as_secs_f64().to_string()]),
    };
    command.args(frames);
    Generator::start(&mut command, "vxlan_frames.py")
}

/// How long a [`vxlan_frames`] generator runs.
#[derive(Debug, Clone, Copy)]
enum Rounds {
    Count(u32),
    For(Duration),
}

/// How many frames of `kind` a generator said it sent.
fn sent_of(sent: &Sent, kind: &str) -> u64 {
    sent.lines
        .iter()
        .find_map(|line| line.strip_prefix(&format!("sent {kind} ")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The pod's UDP flow to the outside server, its mapping learnt by the server.
struct PushFlow {
    pod: UdpSocket,
    server: UdpSocket,
    mapping: SocketAddrV4,
}

impl PushFlow {
    fn open(lab: &HaLab) -> Result<Self> {
        let pod = lab
            .base()
            .pod()
            .run(|| UdpSocket::bind(endpoint(POD_ADDRESS, POD_PUSH_PORT)))??;
        let server = lab
            .base()
            .outside()
            .run(|| UdpSocket::bind(endpoint(OUTSIDE_ADDRESS, PUSH_PORT)))??;
        server.set_read_timeout(Some(Duration::from_millis(100)))?;
        pod.set_read_timeout(Some(Duration::from_millis(50)))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            pod.send_to(b"hello", endpoint(OUTSIDE_ADDRESS, PUSH_PORT))?;
            let mut buf = [0_u8; 64];
            if let Ok((n, SocketAddr::V4(from))) = server.recv_from(&mut buf)
                && &buf[..n] == b"hello"
            {
                return Ok(Self {
                    pod,
                    server,
                    mapping: from,
                });
            }
            ensure!(
                Instant::now() < deadline,
                "the outside server heard nothing from the pod"
            );
        }
    }

    /// The server pushes `count` datagrams, `period` apart; returns how many the pod got and
    /// how many datagrams of the stranger's (payload `egret-vxlan…`) reached the server
    /// meanwhile.
    fn push(&self, count: u32, period: Duration) -> Result<(u32, u32)> {
        let done = Arc::new(AtomicBool::new(false));
        let got = Arc::new(AtomicU32::new(0));
        let receiver = {
            let (pod, done, got) = (self.pod.try_clone()?, Arc::clone(&done), Arc::clone(&got));
            thread::spawn(move || {
                let mut seen = std::collections::BTreeSet::new();
                let mut buf = [0_u8; 2048];
                while !done.load(Ordering::Relaxed) {
                    if let Ok((n, _)) = pod.recv_from(&mut buf)
                        && let Some(i) = std::str::from_utf8(&buf[..n])
                            .ok()
                            .and_then(|t| t.strip_prefix("push "))
                            .and_then(|t| t.parse::<u32>().ok())
                        && seen.insert(i)
                    {
                        got.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        let mut poison = 0;
        let mut buf = [0_u8; 2048];
        self.server.set_nonblocking(true)?;
        let start = Instant::now();
        for i in 0..count {
            let due = start + period * i;
            while Instant::now() < due {
                poison += self.drain(&mut buf);
                thread::sleep(Duration::from_millis(1));
            }
            self.server
                .send_to(format!("push {i}").as_bytes(), self.mapping)?;
        }
        // Until the last ones are through (a round trip), or a second.
        let settle = Instant::now() + Duration::from_secs(1);
        while got.load(Ordering::Relaxed) < count && Instant::now() < settle {
            poison += self.drain(&mut buf);
            thread::sleep(Duration::from_millis(5));
        }
        poison += self.drain(&mut buf);
        self.server.set_nonblocking(false)?;
        done.store(true, Ordering::Relaxed);
        receiver
            .join()
            .map_err(|_| anyhow::anyhow!("the pod's receiver panicked"))?;
        Ok((got.load(Ordering::Relaxed), poison))
    }

    /// The pod sends `count` datagrams of `len` bytes (IPv4) on its flow; returns how many
    /// the server received.
    fn pod_sends(&self, count: u32, len: usize) -> Result<u32> {
        let payload = vec![b'p'; len - 28];
        for _ in 0..count {
            self.pod
                .send_to(&payload, endpoint(OUTSIDE_ADDRESS, PUSH_PORT))?;
            thread::sleep(Duration::from_millis(2));
        }
        let mut received = 0;
        let mut buf = [0_u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(2);
        while received < count && Instant::now() < deadline {
            if let Ok((n, _)) = self.server.recv_from(&mut buf)
                && n == payload.len()
            {
                received += 1;
            }
        }
        Ok(received)
    }

    /// Reads what waits at the server; returns how many were the stranger's.
    fn drain(&self, buf: &mut [u8]) -> u32 {
        let mut poison = 0;
        while let Ok((n, _)) = self.server.recv_from(buf) {
            if buf[..n].starts_with(b"egret-vxlan") {
                poison += 1;
            }
        }
        poison
    }
}

/// Frames in `frames` addressed to `mac` (not flooded) and sent from the floating IP.
fn to_mac_from_floating_ip(frames: &[Frame], mac: [u8; 6]) -> usize {
    frames
        .iter()
        .filter(|f| f.bytes.get(..6) == Some(&mac[..]))
        .filter(|f| f.ipv4().is_some_and(|ip| ip.source == FLOATING_IP))
        .count()
}

/// Frames in `frames` with an IPv4 packet from the floating IP to the outside port `port`
/// (the stranger's packets, translated).
fn to_outside_port(frames: &[Frame], port: u16) -> usize {
    frames
        .iter()
        .filter(|f| f.ipv4().is_some_and(|ip| ip.destination == OUTSIDE_ADDRESS))
        .filter(|f| {
            let l4 = 14 + usize::from(f.bytes[14] & 0x0f) * 4;
            f.bytes.get(l4 + 2..l4 + 4) == Some(&port.to_be_bytes()[..])
        })
        .count()
}

/// The node's real MACs: its `eth0` and its tunnel device `vxlan0`.
fn node_macs(lab: &HaLab) -> Result<(String, String)> {
    let node = lab.base().node();
    Ok((
        lab.base().mac_of(node, "eth0")?,
        lab.base().mac_of(node, "vxlan0")?,
    ))
}

/// Checks that `member` binds the node to its real MACs (and, for gw1, verified).
fn binds_the_node(member: Member, snapshot: &Snapshot, real: &(String, String)) -> Result<()> {
    let node = snapshot
        .node(NODE_ADDRESS)
        .with_context(|| format!("{} lists no node {NODE_ADDRESS}", member.name()))?;
    ensure!(
        (&node.mac, &node.tunnel_mac) == (&real.0, &real.1)
            && (member == Member::Gw2 || node.verified),
        "{}'s binding of the node is {node:?}; the node is at {real:?}",
        member.name()
    );
    Ok(())
}

#[test]
fn a_stranger_spoofing_the_node_never_takes_its_replies() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let (gw1, gw2) = (Member::Gw1, Member::Gw2);
    let lab = lab("hnode")?;
    let real = node_macs(&lab)?;
    let stranger_mac = parse_mac(&lab.base().mac_of(lab.base().stranger(), "eth0")?)?;
    let flow = PushFlow::open(&lab)?;
    // The node is bound and its MAC confirmed by ARP on gw1, and gw2 has it from the sync.
    lab.wait_snapshot(gw1, "the node verified", Duration::from_secs(5), |s| {
        s.node(NODE_ADDRESS).is_some_and(|n| n.verified)
    })?;
    lab.wait_snapshot(gw2, "the node synced", Duration::from_secs(5), |s| {
        s.node(NODE_ADDRESS).is_some()
    })?;
    let frames = [
        format!("udp:{POD_ADDRESS}:{POD_PUSH_PORT}:{OUTSIDE_ADDRESS}:{PUSH_PORT}"),
        format!("udp:10.10.1.66:5555:{OUTSIDE_ADDRESS}:{NEW_FLOW_PORT}"),
        "arp:169.254.100.2:169.254.100.1".to_owned(),
    ];
    let push_time = PUSH_PERIOD * PUSHES + Duration::from_secs(1);

    for answers_arp in [false, true] {
        let phase = if answers_arp {
            "the stranger also answers ARP for the node's address"
        } else {
            "the stranger does not answer ARP"
        };
        eprintln!("== {phase}");
        if answers_arp {
            lab.base().stranger().ip([
                "addr",
                "add",
                &format!("{NODE_ADDRESS}/32"),
                "dev",
                "eth0",
            ])?;
        }
        let before = [lab.snapshot(gw1)?, lab.snapshot(gw2)?];
        let at_stranger = Capture::start(lab.base().stranger(), "eth0")?;
        let at_outside = Capture::start(lab.base().outside(), "eth0")?;
        let poison = vxlan_frames(
            &lab,
            lab.base().stranger(),
            EVIL_TUNNEL_MAC,
            Rounds::For(push_time),
            &frames,
        )?;
        let (got, egressed) = flow.push(PUSHES, PUSH_PERIOD)?;
        let sent = poison.finish(Duration::from_secs(30))?;
        let after = [
            lab.snapshot_after(gw1, sent.last)?,
            lab.snapshot_after(gw2, sent.last)?,
        ];
        let (stranger_frames, outside_frames) = (at_stranger.stop()?, at_outside.stop()?);
        let to_stranger = to_mac_from_floating_ip(&stranger_frames, stranger_mac);
        let out = to_outside_port(&outside_frames, NEW_FLOW_PORT);
        let mismatch = after[0].grew(&before[0], "/drops/node_mismatch");
        let probes = |key: &str| after[0].grew(&before[0], &format!("/control/node_probes/{key}"));
        eprintln!(
            "   pushed {PUSHES} while the stranger sent {} spoofed frames ({} of the pod's flow, \
             {} of a new flow, {} tunnel ARPs): pod got {got}/{PUSHES}, stranger 0+{to_stranger} \
             frames; node_mismatch +{mismatch}; probes sent +{}, confirmed +{}, conflict +{}, \
             moved +{}, unanswered +{}; the stranger's packets at the outside: {} (+{out} to its \
             new flow)",
            sent.count,
            sent_of(&sent, &frames[0]),
            sent_of(&sent, &frames[1]),
            sent_of(&sent, &frames[2]),
            probes("sent"),
            probes("confirmed"),
            probes("conflict"),
            probes("moved"),
            probes("unanswered"),
            egressed,
        );
        ensure!(
            got == PUSHES && to_stranger == 0,
            "the pod got {got} of {PUSHES} pushed datagrams; {to_stranger} frames from the \
             floating IP went to the stranger"
        );
        ensure!(
            egressed == 0 && out == 0,
            "the stranger's packets reached the outside server: {egressed} of the pod's flow, \
             {out} of a new flow"
        );
        ensure!(
            mismatch == sent.count,
            "gw1 counted {mismatch} node mismatches for {} spoofed frames",
            sent.count
        );
        binds_the_node(gw1, &after[0], &real)?;
        binds_the_node(gw2, &after[1], &real)?;
        ensure!(
            probes("sent") >= 1 && probes("moved") == 0,
            "probes: {}",
            after[0].body["control"]
        );
        if answers_arp {
            ensure!(
                probes("conflict") >= 1 && probes("confirmed") == 0,
                "with two answers the probes must conclude conflict: {}",
                after[0].body["control"]
            );
        } else {
            ensure!(
                probes("confirmed") >= 1 && probes("conflict") == 0,
                "with the node alone answering the probes must confirm it: {}",
                after[0].body["control"]
            );
        }
        eprintln!(
            "figure: MAC poisoning, {phase}: the pod got {got}/{PUSHES} pushed datagrams, the \
             stranger 0, node_mismatch {mismatch} of {} spoofed frames, probes {} (before: pod \
             97/300, attacker 203)",
            sent.count,
            if answers_arp { "conflict" } else { "confirmed" }
        );
    }
    Ok(())
}

#[test]
fn a_stranger_spoofing_the_node_cannot_ride_an_established_flow_out() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let gw1 = Member::Gw1;
    let lab = lab("hnodefp")?;
    let flow = PushFlow::open(&lab)?;
    // The flow's packets of 256 bytes and more are the kernel fast path's (smaller UDP
    // packets go through user space): the stranger sends big ones of the pod's own flow.
    let before = lab.snapshot(gw1)?;
    let at_outside = Capture::start(lab.base().outside(), "eth0")?;
    let big = format!("udp:{POD_ADDRESS}:{POD_PUSH_PORT}:{OUTSIDE_ADDRESS}:{PUSH_PORT}:400");
    let poison = vxlan_frames(
        &lab,
        lab.base().stranger(),
        EVIL_TUNNEL_MAC,
        Rounds::Count(100),
        std::slice::from_ref(&big),
    )?;
    let sent = poison.finish(Duration::from_secs(30))?;
    let (got, egressed) = flow.push(10, PUSH_PERIOD)?;
    let after = lab.snapshot_after(gw1, sent.last)?;
    let frames = at_outside.stop()?;
    let out = to_outside_port(&frames, PUSH_PORT);
    // The control: the node's own packets of that size, on the same flow, still go out
    // through the fast path.
    let own = 50;
    let received = flow.pod_sends(own, 400)?;
    let control = lab.snapshot_after(gw1, std::time::SystemTime::now())?;
    eprintln!(
        "   {} spoofed packets of 400 bytes in the pod's established flow: {egressed} reached \
         the outside server ({out} on its wire); node_mismatch +{}, fast path packets out +{}; \
         the pod still got {got}/10; the pod's own {own} such packets: {received} arrived, fast \
         path packets out +{}",
        sent.count,
        after.grew(&before, "/drops/node_mismatch"),
        after.grew(&before, "/fast_path/outbound/packets"),
        control.grew(&after, "/fast_path/outbound/packets"),
    );
    ensure!(
        egressed == 0 && out == 0,
        "{egressed} of the stranger's {} packets reached the outside server through the \
         pod's flow",
        sent.count
    );
    ensure!(
        after.grew(&before, "/drops/node_mismatch") == sent.count,
        "gw1 counted {} node mismatches for {} spoofed packets",
        after.grew(&before, "/drops/node_mismatch"),
        sent.count
    );
    ensure!(got == 10, "the pod got {got} of 10");
    ensure!(
        received == own && control.grew(&after, "/fast_path/outbound/packets") >= u64::from(own),
        "the pod's own packets: {received} of {own} arrived, {} through the fast path",
        control.grew(&after, "/fast_path/outbound/packets")
    );
    eprintln!(
        "figure: the stranger spoofing the node in an established flow: {egressed} of {} \
         packets reached the outside server (before the fast path checked the node's MAC, in \
         this lab: 100 of 100, forwarded by the kernel fast path)",
        sent.count
    );
    Ok(())
}

#[test]
fn pods_cannot_reach_martians_through_the_nat() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let (gw1, gw2) = (Member::Gw1, Member::Gw2);
    let lab = lab("hmartian")?;
    let (_, tunnel_mac) = node_macs(&lab)?;
    let control_port = 7901;
    let control = lab
        .base()
        .outside()
        .run(|| UdpSocket::bind(endpoint(OUTSIDE_ADDRESS, control_port)))??;
    control.set_read_timeout(Some(Duration::from_millis(100)))?;
    // From the pod, through the node's kernel and its real tunnel.
    let through_tunnel: Vec<SocketAddrV4> = vec![
        endpoint(GW_ADDRESS, 9),
        endpoint(GW2_ADDRESS, 9),
        endpoint(GW_ADDRESS, SYNC_PORT),
        endpoint(GW2_ADDRESS, SYNC_PORT),
        endpoint(FLOATING_IP, 9),
    ];
    // Crafted in the node's namespace: what a pod's packet cannot be routed to.
    let crafted: Vec<SocketAddrV4> = vec![
        endpoint(Ipv4Addr::LOCALHOST, 9),
        endpoint(Ipv4Addr::BROADCAST, 9),
        endpoint(Ipv4Addr::new(224, 0, 0, 18), 9),
        endpoint(Ipv4Addr::new(0, 0, 0, 1), 9),
        endpoint(Ipv4Addr::new(169, 254, 100, 1), 9),
        endpoint(GW_ADDRESS, SYNC_PORT),
        endpoint(GW2_ADDRESS, SYNC_PORT),
        endpoint(FLOATING_IP, 9),
    ];
    let martians: Vec<Ipv4Addr> = through_tunnel
        .iter()
        .chain(&crafted)
        .map(|a| *a.ip())
        .collect();
    let before = [lab.snapshot(gw1)?, lab.snapshot(gw2)?];
    let at_router = Capture::start(lab.base().router(), "eth0")?;
    let rounds = 3;
    let pod = lab
        .base()
        .pod()
        .run(|| UdpSocket::bind(endpoint(POD_ADDRESS, 32_000)))??;
    for _ in 0..rounds {
        for to in &through_tunnel {
            pod.send_to(b"egret martian", to)?;
        }
    }
    let mut frames: Vec<String> = crafted
        .iter()
        .map(|to| format!("udp:{POD_ADDRESS}:32001:{}:{}", to.ip(), to.port()))
        .collect();
    frames.push(format!(
        "udp:{POD_ADDRESS}:32001:{OUTSIDE_ADDRESS}:{control_port}"
    ));
    let count = u32::try_from(frames.len())? * rounds;
    let sent = vxlan_frames(
        &lab,
        lab.base().node(),
        &tunnel_mac,
        Rounds::Count(count),
        &frames,
    )?
    .finish(Duration::from_secs(30))?;
    let expected = u64::try_from(through_tunnel.len() + crafted.len())? * u64::from(rounds);
    let after = lab.wait_snapshot(gw1, "every martian dropped", Duration::from_secs(10), |s| {
        s.taken > sent.last + egret_lab::ha::COUNTERS_LAG
            && s.grew(&before[0], "/drops/martian") >= expected
    })?;
    let mut controls = 0;
    let mut buf = [0_u8; 2048];
    while let Ok((n, _)) = control.recv_from(&mut buf) {
        if buf[..n].starts_with(b"egret-vxlan") {
            controls += 1;
        }
        if controls == rounds {
            break;
        }
    }
    let gw2_after = lab.snapshot(gw2)?;
    let frames_seen = at_router.stop()?;
    let leaked: Vec<_> = frames_seen
        .iter()
        .filter_map(Frame::ipv4)
        .filter(|ip| {
            martians.contains(&ip.destination)
                || ip.source == FLOATING_IP && ip.destination != OUTSIDE_ADDRESS
        })
        .collect();
    let martian = after.grew(&before[0], "/drops/martian");
    let unknown = [
        after.grew(&before[0], "/sync/drops/unknown_peer"),
        gw2_after.grew(&before[1], "/sync/drops/unknown_peer"),
    ];
    eprintln!(
        "   martian inner destinations: {} through the tunnel and {} crafted, {rounds} rounds: \
         martian +{martian} of {expected}; to the router: {} (control to the outside: \
         {controls}/{rounds} arrived); sync unknown_peer +{unknown:?}",
        through_tunnel.len(),
        crafted.len(),
        leaked.len()
    );
    ensure!(
        martian == expected,
        "gw1 counted {martian} martians for {expected} sent: {:?}",
        after.grown(&before[0], "/drops")
    );
    ensure!(leaked.is_empty(), "the router saw {leaked:?}");
    ensure!(
        controls == rounds,
        "the control reached the outside {controls}/{rounds} times"
    );
    ensure!(
        unknown == [0, 0],
        "the gateways' sync heard from unknown peers: {unknown:?}"
    );
    if sent.count != u64::from(count) {
        bail!("vxlan_frames.py sent {} of {count}", sent.count);
    }
    eprintln!(
        "figure: martian inner destinations: {martian} of {expected} dropped, 0 sent to the \
         router (before: translated and sent to the router)"
    );
    Ok(())
}
