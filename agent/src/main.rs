//! `egret-agent`: the node agent's command line.
//!
//! Exit codes, egret-gateway's too ([`Exit`]): 0 success, 1 an operational failure (for
//! example an unreadable config file), 2 an invalid config.

use std::{path::Path, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use clap::Parser as _;
use egret_agent::api::{self, SharedRecorded};
use egret_agent::cli::{Cli, Command};
use egret_agent::config::{Config, ConfigError, Exit, HostFacts, Mode};
use egret_agent::kubernetes::node::{Follower, SharedClusterState};
use egret_agent::kubernetes::watch::Watches;
use egret_agent::kubernetes::{self, writer};
use egret_agent::node::{self, Node};
use egret_agent::status::Location;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { config, quiet } => check(&config, quiet),
        Command::Status { config, json } => status(&config, json),
        Command::Uninstall { config } => uninstall(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("egret-agent: {err:#}");
            let exit = err
                .downcast_ref::<ConfigError>()
                .map_or(Exit::Failure, ConfigError::exit);
            exit.into()
        }
    }
}

/// Loads and checks `path`, printing warnings. On errors it prints each diagnostic as a
/// `FILE:LINE:COL: error: ...` line on stderr and fails with their count (which exits 2).
fn load(path: &Path) -> anyhow::Result<Config> {
    let checked = match Config::load(path, &HostFacts::from_system()) {
        Ok(checked) => checked,
        Err(err @ ConfigError::Invalid(_)) => {
            // Compiler style, one `FILE:LINE:COL: error: ...` line each, for editors.
            eprintln!("{}", err.located(path));
            return Err(anyhow::Error::new(err).context(path.display().to_string()));
        }
        Err(err) => return Err(err.into()),
    };
    for warning in &checked.warnings {
        eprintln!("{}", warning.in_file(path));
    }
    Ok(checked.config)
}

fn check(path: &Path, quiet: bool) -> anyhow::Result<()> {
    let config = load(path)?;
    if !quiet {
        print!("{}", config.to_toml());
    }
    Ok(())
}

fn status(path: &Path, json: bool) -> anyhow::Result<()> {
    let location = match load(path) {
        Ok(config) => Location::of(&config),
        Err(err) => {
            // The agent keeps its previous config when the file breaks; say where it is.
            eprintln!("egret-agent: {err:#}; reading the state it names anyway");
            let text = std::fs::read_to_string(path).unwrap_or_default();
            Location::salvage(&text)
        }
    };
    let report = egret_agent::status::gather(&location).map_err(anyhow::Error::msg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", egret_agent::status::render(&report));
    }
    Ok(())
}

fn uninstall(path: &Path) -> anyhow::Result<()> {
    let config = load(path)?;
    let errors = node::uninstall(&config);
    if !errors.is_empty() {
        bail!("uninstall incomplete:\n{}", errors.join("\n"));
    }
    eprintln!(
        "removed the masquerade table, policy routing, tunnel device, eBPF programs and maps"
    );
    Ok(())
}

fn run(path: &Path) -> anyhow::Result<()> {
    raise_memlock_rlimit();
    let config = load(path)?;
    let mode = config.agent.mode;
    let (listen, location) = (config.api.listen, Location::of(&config));
    let mut node = Node::start(config, path)
        .map_err(|err| anyhow::anyhow!("{}", egret_agent::error_chain(&err)))?;
    let recorded = SharedRecorded::default();
    if let Some(listen) = listen {
        start_api(listen, location, recorded.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if mode == Mode::Kubernetes {
        return runtime.block_on(follow_cluster(node, path, recorded));
    }
    tracing::info!(config = %path.display(), "node programmed; SIGHUP reloads the config");
    notify(&[NotifyState::Ready]);
    runtime.block_on(async {
        let mut hangup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
        let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    if let Err(err) = node.tick() {
                        tracing::warn!(error = %egret_agent::error_chain(&err), "interface scan");
                    }
                }
                _ = hangup.recv() => reload(&mut node, path),
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
            }
        }
        notify(&[NotifyState::Stopping]);
        tracing::info!("exiting; the data path stays in place");
        anyhow::Ok(())
    })
}

/// Serves `/metrics` and `/status` on `listen`. A port that cannot be had is logged and the
/// agent runs on without its API: the data path matters more than its metrics.
fn start_api(listen: std::net::SocketAddr, location: Location, recorded: SharedRecorded) {
    let started = api::bind(listen).and_then(|socket| api::spawn(socket, location, recorded));
    match started {
        Ok(_) => tracing::info!(%listen, "API listening: GET /metrics, GET /status"),
        Err(error) => {
            tracing::error!(%listen, %error, "cannot listen on [api].listen; running without /metrics and /status");
        }
    }
}

/// Kubernetes mode: the node follows the cluster until SIGTERM. Nothing is programmed until
/// every watch has listed once, so an agent started while the API is away leaves the node as
/// it was.
async fn follow_cluster(node: Node, path: &Path, recorded: SharedRecorded) -> anyhow::Result<()> {
    let config = node.config().clone();
    let client = kubernetes::client(config.kubernetes.kubeconfig.as_deref())
        .await
        .map_err(|err| anyhow::anyhow!("{}", egret_agent::error_chain(&err)))?;
    let watches = Watches::start(&client, &config.agent.node_name);
    let state: SharedClusterState = Arc::default();
    tokio::spawn(writer::run(
        client.clone(),
        watches.clone(),
        config.kubernetes.namespace.clone(),
        config.agent.node_name.clone(),
        state.clone(),
    ));
    let mut changes = watches.subscribe();
    let mut follower = Follower::new(node, watches.clone(), &client, state, recorded.clone());
    tracing::info!(config = %path.display(), node = %config.agent.node_name, "waiting for the cluster; the node keeps its state meanwhile");
    let mut hangup = signal(SignalKind::hangup()).context("handling SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    // Where egret-cni asks for new pods to be programmed before they run.
    let socket = config.agent.state_dir.join("cni.sock");
    let mut requests = kubernetes::cni::Requests::new(client.clone(), recorded.clone());
    let mut cni = match kubernetes::cni::serve(&socket) {
        Ok(requests) => {
            tracing::info!(socket = %socket.display(), "CNI socket listening");
            Some(requests)
        }
        Err(error) => {
            tracing::warn!(socket = %socket.display(), %error, "no CNI socket: egret-cni cannot reach this agent");
            None
        }
    };
    let ready = watches.ready();
    tokio::pin!(ready);
    let mut synced = false;
    // Ready for systemd once the node is programmed from the cluster the first time.
    let mut programmed = false;
    loop {
        tokio::select! {
            () = &mut ready, if !synced => {
                synced = true;
                follower.listed();
                tracing::info!("the cluster is listed; programming the node");
            }
            changed = changes.changed(), if synced => {
                if changed.is_err() {
                    break;
                }
                // A burst of events (a rollout, a relist) makes one reconcile.
                tokio::time::sleep(RECONCILE_COALESCE).await;
                changes.borrow_and_update();
            }
            _ = ticks.tick() => {
                if let Err(err) = follower.node().tick() {
                    tracing::warn!(error = %egret_agent::error_chain(&err), "interface scan");
                }
                if let Err(err) = follower.refresh_status() {
                    tracing::warn!(error = %egret_agent::error_chain(&err), "status file");
                }
                // The ip-masq-agent config's resyncInterval: write the node's state again.
                if !follower.resync_due() {
                    continue;
                }
            }
            Some(request) = next_cni(&mut cni) => {
                requests.handle(&mut follower, synced, request);
                continue;
            }
            read = requests.next_read() => {
                requests.finish(&mut follower, read);
                continue;
            }
            _ = hangup.recv() => reload(follower.node(), path),
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
        if !synced {
            continue;
        }
        match follower.reconcile() {
            Ok(()) if !programmed => {
                programmed = true;
                tracing::info!("node programmed from the cluster");
                notify(&[NotifyState::Ready]);
            }
            Ok(()) => {}
            Err(err) => {
                tracing::error!(error = %egret_agent::error_chain(&err), "could not program the cluster's state; the node keeps the previous one");
            }
        }
    }
    notify(&[NotifyState::Stopping]);
    tracing::info!("exiting; the data path stays in place");
    Ok(())
}

/// The next request on the CNI socket, if there is one.
async fn next_cni(
    requests: &mut Option<tokio::sync::mpsc::Receiver<kubernetes::cni::CniRequest>>,
) -> Option<kubernetes::cni::CniRequest> {
    match requests {
        Some(requests) => requests.recv().await,
        None => std::future::pending().await,
    }
}

/// How long the agent waits after a cluster event for more before it reconciles.
const RECONCILE_COALESCE: Duration = Duration::from_millis(10);

fn reload(node: &mut Node, path: &Path) {
    let started = std::time::Instant::now();
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
    let result = match Config::load(path, &HostFacts::from_system()) {
        Ok(checked) => {
            for warning in &checked.warnings {
                tracing::warn!("{}: {warning}", path.display());
            }
            node.reload(checked.config)
                .map_err(|err| egret_agent::error_chain(&err))
        }
        Err(err) => {
            let message = err.located(path);
            let _ = node.reload_failed(message.clone());
            Err(message)
        }
    };
    match result {
        Ok(()) => tracing::info!(elapsed = ?started.elapsed(), "config reloaded"),
        Err(err) => tracing::error!("reload failed, the previous config stays applied: {err}"),
    }
    notify(&[NotifyState::Ready]);
}

/// Tells systemd (when it started us with `Type=notify`) how the agent is doing.
fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot notify systemd");
    }
}

/// Kernels before 5.11 charge eBPF maps and programs to RLIMIT_MEMLOCK, whose default is too low
/// for them; newer kernels ignore it. Best effort: a failure shows up as a load error later.
fn raise_memlock_rlimit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on a valid, initialised struct.
    let ret = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if ret != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "could not remove the memlock limit"
        );
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
