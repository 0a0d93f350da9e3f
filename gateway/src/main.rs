//! `egret-gateway`: the command line of the egress NAT gateway.
//!
//! Exit codes, egret-agent's too ([`Exit`]): 0 success, 1 an I/O or other operational
//! failure (for example an unreadable config file), 2 an invalid config.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser as _;
use egret_gateway::cli::{Cli, Command};
use egret_gateway::config::{Config, ConfigError, Exit, HostFacts};
use egret_gateway::gateway::Gateway;
use egret_gateway::io::vrrp::VrrpSocket;
use egret_gateway::io::{self, guard::KernelGuard, host::Interface, lock, packet};
use egret_gateway::{api, status};

/// How long a stopping gateway tries to report itself `Down` into the cluster.
const KUBERNETES_STOP_DEADLINE: Duration = Duration::from_millis(1500);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { config, quiet } => check(&config, quiet),
        Command::Run { config } => run(&config),
        Command::Status { config, api, json } => status(&config, api, json),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("egret-gateway: error: {error:#}");
            Exit::Failure.into()
        }
    }
}

fn check(path: &Path, quiet: bool) -> anyhow::Result<ExitCode> {
    let host = HostFacts::from_system().context("cannot read this host's interfaces")?;
    let config = match load(path, &host)? {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    if quiet {
        return Ok(ExitCode::SUCCESS);
    }
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(config.to_toml().as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write the effective config")?;
    Ok(ExitCode::SUCCESS)
}

/// Loads the config, printing warnings, or every problem and the exit code of an invalid
/// config.
fn load(path: &Path, host: &HostFacts) -> anyhow::Result<Result<Config, ExitCode>> {
    match Config::load(path, host) {
        Ok(checked) => {
            for warning in &checked.warnings {
                eprintln!("{}", warning.in_file(path));
            }
            Ok(Ok(checked.config))
        }
        Err(error @ ConfigError::Invalid(_)) => {
            eprintln!("{}", error.located(path));
            Ok(Err(error.exit().into()))
        }
        Err(error) => Err(error.into()),
    }
}

fn run(path: &Path) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let facts = HostFacts::from_system().context("cannot read this host's interfaces")?;
    let config = match load(path, &facts)? {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let ifname = &config.gateway.interface;
    let interface =
        Interface::read(ifname).with_context(|| format!("cannot read interface {ifname}"))?;
    let host = io::reload::host(&config, &facts, &interface)?;
    let fast = io::fastpath::load_wanted(config.gateway.fast_path, ifname, interface.index);
    let params = io::reload::params(&config, &host, fast.is_ok());
    let addresses = params.addresses();
    // One worker per core, each with its own IPv4 socket in a fanout group and its own
    // sender; the first one (the leader) also reads ARP, adverts and sync datagrams.
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let fanout = (workers > 1).then(|| std::process::id() as u16);
    let receiving = |protocol, fanout| {
        packet::RxSocket::open(interface.index, protocol, fanout)
            .with_context(|| format!("cannot open a packet socket on {ifname} (needs CAP_NET_RAW)"))
    };
    let sender = || {
        packet::Tx::open(interface.index)
            .with_context(|| format!("cannot open a packet socket on {ifname}"))
    };
    let mut sockets = Vec::with_capacity(workers);
    for i in 0..workers {
        sockets.push(io::Sockets {
            ipv4: receiving(packet::Protocol::Ipv4, fanout)?,
            arp: (i == 0)
                .then(|| receiving(packet::Protocol::Arp, None))
                .transpose()?,
            tx: sender()?,
        });
    }
    // The main thread's own sender: what a reload or the stop decides goes at once.
    let mut tx = sender()?;
    let multicast = config.election.peers.is_empty();
    let vrrp = VrrpSocket::open(ifname, interface.index, multicast)
        .with_context(|| format!("cannot open the VRRP socket on {ifname} (needs CAP_NET_RAW)"))?;
    let sync_socket = match &config.sync {
        Some(sync) => Some(
            io::sync::bind(sync.listen)
                .with_context(|| format!("cannot listen on [sync].listen = {}", sync.listen))?,
        ),
        None => None,
    };
    let guard = KernelGuard::install(ifname, &addresses).context(
        "cannot keep the kernel out of the floating IPs' traffic (needs nft and CAP_NET_ADMIN)",
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.api.listen))
        .with_context(|| format!("cannot listen on [api].listen = {}", config.api.listen))?;
    let clock = io::Clock::start();
    let core = Gateway::new(params, clock.now())
        .context("cannot allocate the flow table ([nat].max_flows)")?;
    let snapshot: status::SharedSnapshot = Arc::new(Mutex::new(status::Snapshot::default()));
    let shell = Arc::new(io::Shell {
        core: Mutex::new(core),
        vrrp,
        sync: sync_socket,
        fast,
        snapshot: snapshot.clone(),
        clock,
        stop: AtomicBool::new(false),
    });
    let mut threads = Vec::with_capacity(workers);
    for (i, sockets) in sockets.into_iter().enumerate() {
        let shell = shell.clone();
        let thread = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || {
                let result = io::run(&shell, sockets);
                // One worker failing stops them all: a half-working gateway is worse.
                shell.stop.store(true, Ordering::Relaxed);
                result
            })
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    tracing::info!(
        name = %config.gateway.name,
        interface = %ifname,
        next_hop = %host.next_hop,
        floating_ips = ?addresses,
        adverts = if multicast { "multicast" } else { "unicast" },
        sync = ?config.sync.as_ref().map(|s| &s.peers),
        api = %config.api.listen,
        kubernetes = ?config.kubernetes.as_ref().map(|k| &k.gateway),
        workers,
        fast_path = shell.fast.is_ok(),
        "gateway running"
    );
    // Sockets open, the workers running: ready for systemd (Type=notify).
    io::reload::notify(&[sd_notify::NotifyState::Ready]);
    let (mut term, mut hup) = {
        let _runtime = runtime.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        )
    };
    // With [kubernetes], a task on this runtime reports into the EgressGateway status; it
    // only reads the published snapshot, so the data path never waits for the API.
    let kubernetes = config.kubernetes.as_ref().map(|_| io::kube::shared());
    let mut running = io::reload::Running {
        path,
        config: config.clone(),
        addresses,
        interface,
    };
    let reporting = runtime.block_on(async {
        let reporting = match (&config.kubernetes, &kubernetes) {
            (Some(k), Some(shared)) => Some(io::kube::start(
                k.kubeconfig.clone(),
                &k.gateway,
                &config.gateway.name,
                snapshot.clone(),
                shared.clone(),
            )),
            _ => None,
        };
        let shutdown = async {
            loop {
                tokio::select! {
                    _ = term.recv() => break tracing::info!("SIGTERM: stopping"),
                    _ = tokio::signal::ctrl_c() => break tracing::info!("SIGINT: stopping"),
                    _ = io::stopped(&shell) => break,
                    _ = hup.recv() => running.reload(&shell, &guard, &mut tx),
                }
            }
        };
        api::serve(listener, snapshot, kubernetes, shutdown).await;
        reporting
    });
    io::reload::notify(&[sd_notify::NotifyState::Stopping]);
    // Hand the addresses over (priority 0) while the data path still runs, then stop it.
    lock(&shell.core).shutdown(shell.clock.now());
    io::carry(&shell, &mut tx);
    if let Some(reporting) = reporting {
        // The addresses are handed over: report this gateway Down, briefly.
        if runtime.block_on(reporting.stop(KUBERNETES_STOP_DEADLINE)) {
            tracing::info!("reported Down into the EgressGateway status");
        } else {
            tracing::warn!(
                "could not report Down into the EgressGateway status within {KUBERNETES_STOP_DEADLINE:?}; the peers will mark this gateway Down"
            );
        }
    }
    shell.stop.store(true, Ordering::Relaxed);
    if let Ok(fast) = &shell.fast {
        // Everything back to user space (which stops) before the program goes.
        let _ = lock(fast).disable();
    }
    let mut result = Ok(());
    for thread in threads {
        let r = thread
            .join()
            .map_err(|_| anyhow::anyhow!("a worker thread panicked"))?;
        result = result.and(r);
    }
    guard
        .remove()
        .context("cannot remove the nftables table egret_gateway")?;
    result.context("the data path failed")?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn status(path: &Path, api: Option<SocketAddr>, json: bool) -> anyhow::Result<ExitCode> {
    let addr = match api {
        Some(addr) => addr,
        None => {
            let host = HostFacts::from_system().context("cannot read this host's interfaces")?;
            match load(path, &host)? {
                Ok(config) => config.api.listen,
                Err(code) => return Ok(code),
            }
        }
    };
    let snapshot = api::fetch_status(addr, Duration::from_secs(5))?;
    let text = if json {
        serde_json::to_string_pretty(&snapshot).context("cannot print the status")? + "\n"
    } else {
        api::render_text(&snapshot)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write the status")?;
    Ok(ExitCode::SUCCESS)
}
