//! Throughput of the pod's traffic through `egret-gateway` beside the kernel baseline
//! (nftables masquerade in the gw namespace), measured in the same run on the same lab
//! ([`egret_lab::GatewayLab`]). Run it through `tests/measure/gateway-throughput`, which
//! builds the gateway first; needs root.
//!
//! Three modes ([`egret_lab::Mode`]): `egret`; `kernel`, the baseline, where the node routes
//! plainly and the gw kernel masquerades; and `kernel+vxlan`, where the node tunnels as in
//! egret mode and the gw kernel ends the tunnel with its own VXLAN device and masquerades.
//! The baseline leaves out the node's VXLAN encapsulation and decapsulation, which the
//! egret path pays on the same two CPUs; `kernel+vxlan` does the gateway's whole job in the
//! kernel, so egret / kernel+vxlan compares the gateways alone.
//!
//! For each of N rounds (default 3) it measures every mode, in rotating order, with iperf3
//! from the pod to a server in the outside namespace:
//!
//! - small UDP packets: `-u -l 36 -b 0`, so the pod's IPv4 packets are 64 bytes (20 IPv4 +
//!   8 UDP + 36 payload); packets per second **delivered** to the outside host (its
//!   interface's receive counter), which is what the path forwarded, and beside it those the
//!   iperf3 server application received. The same packets also come from a plain `send` loop
//!   in this program ("udp64 loop", iperf3 adds a `select` per packet), delivered and
//!   received likewise; its sent rate shows whether the sender or the path was the limit.
//!   Both figures matter because the lab's two CPUs are shared: the kernel forwards every
//!   hop of the lab (node, bridge, router, and the gw in kernel mode) on the sending CPU, in
//!   the `send` call, while egret-gateway's worker forwards small UDP packets on the other
//!   CPU, the one the receiving application also needs. What the application then misses,
//!   the outside host's UDP layer counts as receive-buffer drops: the path delivered them;
//! - one TCP stream pod → outside, Gbit/s received by the server;
//! - one TCP stream outside → pod (`-R`), Gbit/s received by the pod;
//! - the round trip at light load: the average of 50 pings from the pod to the server, 20 ms
//!   apart, before the other tests.
//!
//! Then it prints every round, the medians, egret/kernel and egret/kernel+vxlan per metric.
//! The gateway runs only while egret mode is measured, so that the kernel modes do not share
//! the CPUs with it; nothing is pinned to a CPU.
//!
//! ```text
//! gateway_throughput [ROUNDS] [SECONDS]      (env EGRET_ROUNDS, EGRET_SECONDS)
//! ```

use std::{
    io,
    net::UdpSocket,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use egret_lab::{
    GatewayLab, Mode, setting,
    topology::{OUTSIDE_ADDRESS, POD_ADDRESS, gateway_binary, iperf3_server, run_with_timeout},
};
use serde_json::Value;

/// UDP payload that makes a 64-byte IPv4 packet: 64 - 20 (IPv4) - 8 (UDP).
const SMALL_UDP_PAYLOAD: u32 = 36;
const IPERF_PORT: u16 = 5201;

#[derive(Debug, Clone, Copy)]
struct Figures {
    /// Small UDP packets from iperf3 delivered to the outside host, and received by the
    /// iperf3 server, per second.
    udp_pps: f64,
    udp_app_pps: f64,
    /// Small UDP packets from the send loop delivered to the outside host, received by the
    /// socket there, and sent, per second.
    blast_pps: f64,
    blast_app_pps: f64,
    blast_sent_pps: f64,
    /// TCP pod → outside, Gbit/s received.
    tcp_up_gbps: f64,
    /// TCP outside → pod, Gbit/s received.
    tcp_down_gbps: f64,
    /// Average ping round trip, milliseconds.
    rtt_ms: f64,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gateway-throughput: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "needs root: it builds network namespaces"
    );
    let rounds: u32 = setting(1, Some("EGRET_ROUNDS"), 3, 1..=u32::MAX)?;
    let seconds: u32 = setting(2, Some("EGRET_SECONDS"), 5, 1..=u32::MAX)?;
    let binary = gateway_binary()?;
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "egret-gateway: {}\n{rounds} rounds of {seconds} s per test, {cpus} CPUs, nothing pinned",
        binary.display()
    );

    let mut lab = GatewayLab::new("tput")?;
    let _server = iperf3_server(lab.outside(), OUTSIDE_ADDRESS, IPERF_PORT)?;

    let mut results: Vec<(u32, Mode, Figures)> = Vec::new();
    for round in 1..=rounds {
        // Rotate which mode goes first, so that none always runs on a warmer machine.
        let mut order = MODES;
        order.rotate_left((round as usize - 1) % MODES.len());
        for mode in order {
            switch(&mut lab, mode)?;
            let figures = measure(&lab, seconds)
                .with_context(|| format!("round {round}, {} mode", name(mode)))?;
            if mode == Mode::Egret {
                lab.gateway_mut()?.ensure_running()?;
            }
            println!(
                "round {round} {:<13}  udp64 iperf3 {:>7.0} pkt/s delivered ({:>7.0} to the app), \
                 loop {:>7.0} delivered ({:>7.0} to the app) of {:>7.0} sent   \
                 tcp up {:>6.2} Gbit/s   tcp down {:>6.2} Gbit/s   rtt {:.3} ms",
                name(mode),
                figures.udp_pps,
                figures.udp_app_pps,
                figures.blast_pps,
                figures.blast_app_pps,
                figures.blast_sent_pps,
                figures.tcp_up_gbps,
                figures.tcp_down_gbps,
                figures.rtt_ms
            );
            results.push((round, mode, figures));
        }
    }
    if lab.gateway_started() {
        lab.stop_gateway()?;
    }
    print_table(&results);
    Ok(())
}

/// The modes measured: egret's, the issue's baseline, and the kernel doing egret's job.
const MODES: [Mode; 3] = [Mode::Egret, Mode::Kernel, Mode::KernelTunnel];

fn name(mode: Mode) -> &'static str {
    match mode {
        Mode::Egret => "egret",
        Mode::Kernel => "kernel",
        Mode::KernelTunnel => "kernel+vxlan",
    }
}

/// Puts the lab in `mode`: the gateway runs in egret mode only.
fn switch(lab: &mut GatewayLab, mode: Mode) -> Result<()> {
    match mode {
        Mode::Egret => {
            lab.set_mode(Mode::Egret)?;
            if !lab.gateway_started() {
                lab.start_gateway()?;
            }
        }
        Mode::Kernel | Mode::KernelTunnel => {
            if lab.gateway_started() {
                lab.stop_gateway()?;
            }
            lab.set_mode(mode)?;
        }
    }
    // The path works before it is measured (and every neighbour on it is resolved).
    let replies = lab.pod().ping("eth0", OUTSIDE_ADDRESS.into(), 3)?;
    ensure!(
        replies > 0,
        "{} mode: the pod cannot ping the outside server",
        name(mode)
    );
    Ok(())
}

fn measure(lab: &GatewayLab, seconds: u32) -> Result<Figures> {
    let rtt_ms = ping_rtt_ms(lab)?;
    let delivered = outside_rx_packets(lab)?;
    let udp = iperf(
        lab,
        seconds,
        &["-u", "-b", "0", "-l", &SMALL_UDP_PAYLOAD.to_string()],
    )?;
    let udp_delivered = outside_rx_packets(lab)? - delivered;
    let udp_seconds = number(&udp, &["end", "sum", "seconds"])?;
    ensure!(udp_seconds > 0.0, "iperf3 ran for 0 s");
    let delivered = outside_rx_packets(lab)?;
    let (blast_sent_pps, blast_app_pps, blast_seconds) = udp_blast(lab, seconds)?;
    let blast_delivered = outside_rx_packets(lab)? - delivered;
    let tcp_up = iperf(lab, seconds, &[])?;
    let tcp_down = iperf(lab, seconds, &["-R"])?;
    Ok(Figures {
        udp_pps: udp_delivered as f64 / udp_seconds,
        udp_app_pps: udp_received_pps(&udp)?,
        blast_pps: blast_delivered as f64 / blast_seconds,
        blast_app_pps,
        blast_sent_pps,
        tcp_up_gbps: tcp_received_bps(&tcp_up)? / 1e9,
        tcp_down_gbps: tcp_received_bps(&tcp_down)? / 1e9,
        rtt_ms,
    })
}

/// The average round trip of 50 pings from the pod to the outside server, 20 ms apart.
fn ping_rtt_ms(lab: &GatewayLab) -> Result<f64> {
    let out = run_with_timeout(
        lab.pod().command("ping").args([
            "-q",
            "-c",
            "50",
            "-i",
            "0.02",
            "-W",
            "1",
            &OUTSIDE_ADDRESS.to_string(),
        ]),
        Duration::from_secs(20),
    )?;
    // "rtt min/avg/max/mdev = 0.159/0.211/0.715/0.085 ms"
    let summary = out
        .lines()
        .find_map(|line| line.split_once(" = ").filter(|(k, _)| k.starts_with("rtt")))
        .with_context(|| format!("no rtt summary in ping's output: {out:?}"))?;
    summary
        .1
        .split('/')
        .nth(1)
        .and_then(|avg| avg.parse().ok())
        .with_context(|| format!("cannot read the average rtt in {:?}", summary.1))
}

/// One iperf3 client run in the pod, bound to the pod's address; its JSON report.
fn iperf(lab: &GatewayLab, seconds: u32, extra: &[&str]) -> Result<Value> {
    let out = run_with_timeout(
        lab.pod()
            .command("iperf3")
            .args(["-c", &OUTSIDE_ADDRESS.to_string()])
            .args(["-B", &POD_ADDRESS.to_string()])
            .args(["-p", &IPERF_PORT.to_string()])
            .args(["-t", &seconds.to_string(), "-J"])
            .args(extra),
        Duration::from_secs(u64::from(seconds) + 30),
    )?;
    let report: Value = serde_json::from_str(&out).context("iperf3 -J printed no JSON")?;
    if let Some(error) = report.get("error") {
        bail!("iperf3 {extra:?}: {error}");
    }
    Ok(report)
}

fn number(report: &Value, path: &[&str]) -> Result<f64> {
    let mut value = report;
    for key in path {
        value = value
            .get(key)
            .with_context(|| format!("iperf3 report has no {}", path.join(".")))?;
    }
    value
        .as_f64()
        .with_context(|| format!("iperf3 {} is not a number", path.join(".")))
}

/// Packets the outside host's interface has received so far.
fn outside_rx_packets(lab: &GatewayLab) -> Result<u64> {
    let out = lab
        .outside()
        .exec("ip", ["-s", "-j", "link", "show", "dev", "eth0"])?;
    let links: Value = serde_json::from_str(&out).context("ip -j printed no JSON")?;
    links
        .get(0)
        .and_then(|link| link.pointer("/stats64/rx/packets"))
        .and_then(Value::as_u64)
        .with_context(|| format!("no stats64.rx.packets in {out}"))
}

/// Packets the server received per second: the packets sent less those the server found
/// missing, over the test's duration, as the server reports them.
fn udp_received_pps(report: &Value) -> Result<f64> {
    let path = |key| ["end", "sum_received", key];
    let packets = number(report, &path("packets"))?;
    let lost = number(report, &path("lost_packets"))?;
    let seconds = number(report, &path("seconds"))?;
    ensure!(seconds > 0.0, "iperf3 ran for 0 s");
    Ok((packets - lost) / seconds)
}

/// Sends 36-byte UDP payloads (64-byte IPv4 packets) from the pod to the outside server as
/// fast as one `send` loop goes for `seconds`, and counts what a socket there receives.
/// Returns packets sent and received per second of sending, and the seconds it sent for.
///
/// Both sockets are made inside their namespaces (a socket stays in the namespace it was
/// made in), then used from ordinary threads: the sender here, the receiver beside it.
fn udp_blast(lab: &GatewayLab, seconds: u32) -> Result<(f64, f64, f64)> {
    const PORT: u16 = 9000;
    let receiver = lab
        .outside()
        .run(|| UdpSocket::bind((OUTSIDE_ADDRESS, PORT)))?
        .context("binding the receiver in the outside namespace")?;
    let sender = lab
        .pod()
        .run(|| -> io::Result<UdpSocket> {
            let socket = UdpSocket::bind((POD_ADDRESS, 0))?;
            socket.connect((OUTSIDE_ADDRESS, PORT))?;
            Ok(socket)
        })?
        .context("making the sender in the pod namespace")?;
    receiver.set_read_timeout(Some(Duration::from_millis(200)))?;
    let sending = AtomicBool::new(true);
    let duration = Duration::from_secs(u64::from(seconds));
    thread::scope(|scope| -> Result<(f64, f64, f64)> {
        let counter = scope.spawn(|| -> io::Result<u64> {
            let mut buffer = [0_u8; 2048];
            let mut received = 0_u64;
            loop {
                match receiver.recv(&mut buffer) {
                    Ok(_) => received += 1,
                    Err(err)
                        if matches!(
                            err.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        // Nothing for 200 ms after the sender stopped: all arrived.
                        if !sending.load(Ordering::Relaxed) {
                            return Ok(received);
                        }
                    }
                    Err(err) => return Err(err),
                }
            }
        });
        let payload = [0x65_u8; 36];
        let mut sent = 0_u64;
        let started = Instant::now();
        while started.elapsed() < duration {
            for _ in 0..256 {
                match sender.send(&payload) {
                    Ok(_) => sent += 1,
                    // A full queue on the way drops the packet, as on a wire.
                    Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => {}
                    Err(err) => {
                        sending.store(false, Ordering::Relaxed);
                        return Err(err).context("sending from the pod");
                    }
                }
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        sending.store(false, Ordering::Relaxed);
        let received = counter
            .join()
            .map_err(|_| anyhow::anyhow!("the receiving thread panicked"))?
            .context("receiving in the outside namespace")?;
        Ok((sent as f64 / elapsed, received as f64 / elapsed, elapsed))
    })
}

fn tcp_received_bps(report: &Value) -> Result<f64> {
    number(report, &["end", "sum_received", "bits_per_second"])
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A column of the table: heading, the figure, decimals.
type Column = (&'static str, fn(&Figures) -> f64, usize);

const COLUMNS: [Column; 7] = [
    ("udp64 iperf3 pkt/s", |f| f.udp_pps, 0),
    ("(app rx)", |f| f.udp_app_pps, 0),
    ("udp64 loop pkt/s", |f| f.blast_pps, 0),
    ("(app rx)", |f| f.blast_app_pps, 0),
    ("tcp up Gbit/s", |f| f.tcp_up_gbps, 2),
    ("tcp down Gbit/s", |f| f.tcp_down_gbps, 2),
    ("rtt ms", |f| f.rtt_ms, 3),
];

fn print_table(results: &[(u32, Mode, Figures)]) {
    let line = |label: &str, cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .zip(COLUMNS)
            .map(|(cell, (heading, _, _))| format!("{cell:>width$}", width = heading.len().max(9)))
            .collect();
        println!("{label:<20} {}", cells.join("  "));
    };
    let row = |label: &str, figures: &Figures| {
        let cells = COLUMNS
            .iter()
            .map(|(_, pick, decimals)| format!("{:.*}", decimals, pick(figures)))
            .collect();
        line(label, cells);
    };
    println!();
    println!("pkt/s: delivered to the outside host; (app rx): received by the application there");
    line(
        "",
        COLUMNS
            .iter()
            .map(|(heading, _, _)| heading.to_string())
            .collect(),
    );
    for (round, mode, figures) in results {
        row(&format!("round {round} {}", name(*mode)), figures);
    }
    let median_of = |mode: Mode, pick: fn(&Figures) -> f64| {
        median(
            results
                .iter()
                .filter(|(_, m, _)| *m == mode)
                .map(|(_, _, figures)| pick(figures))
                .collect(),
        )
    };
    for mode in MODES {
        let cells = COLUMNS
            .iter()
            .map(|(_, pick, decimals)| format!("{:.*}", decimals, median_of(mode, *pick)))
            .collect();
        line(&format!("median {}", name(mode)), cells);
    }
    for baseline in [Mode::Kernel, Mode::KernelTunnel] {
        let ratios = COLUMNS
            .iter()
            .map(|(_, pick, _)| {
                format!(
                    "{:.2}",
                    median_of(Mode::Egret, *pick) / median_of(baseline, *pick)
                )
            })
            .collect();
        line(&format!("egret / {}", name(baseline)), ratios);
    }
}
