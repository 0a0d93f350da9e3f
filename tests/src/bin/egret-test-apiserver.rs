//! `egret-test-apiserver`: the lab's Kubernetes API server (see `egret_lab::apiserver`).
//!
//! Prints `ready https://ADDR:PORT` on stdout once it listens; on SIGTERM or SIGINT it writes
//! the state file (when `--state` is given) and exits.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use clap::Parser;
use egret_lab::apiserver::{self, Config};

/// A test Kubernetes API server that speaks the real protocol (for the lab).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address and port to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Directory for ca.crt, ca.key, token and kubeconfig.
    #[arg(long)]
    dir: PathBuf,
    /// The bearer token clients must send (default: DIR/token, else a random one).
    #[arg(long)]
    token: Option<String>,
    /// State file: loaded at start, written on SIGTERM.
    #[arg(long)]
    state: Option<PathBuf>,
    /// CRD manifests (YAML) to serve from the start; may repeat.
    #[arg(long = "crd")]
    crds: Vec<PathBuf>,
    /// Interval of watch bookmarks ("1s", "500ms").
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    bookmark_interval: Duration,
    /// Changes kept for watches to resume from.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Largest request body in bytes (413 beyond).
    #[arg(long, default_value_t = 3 * 1024 * 1024)]
    max_body: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let config = Config {
        listen: args.listen,
        dir: args.dir,
        token: args.token,
        state: args.state.clone(),
        crds: args.crds,
        bookmark_interval: args.bookmark_interval,
        history: args.history,
        max_body: args.max_body,
    };
    let bound = apiserver::bind(config)
        .await
        .context("starting the test API server")?;
    let shared = bound.shared.clone();
    println!("ready {}", shared.url);
    use std::io::Write as _;
    std::io::stdout().flush().context("stdout")?;
    let server = tokio::spawn(apiserver::http::serve(
        bound.shared,
        bound.listener,
        bound.tls,
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    server.abort();
    if let Some(path) = args.state {
        shared
            .cluster()
            .store
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("state written to {}", path.display());
    }
    Ok(())
}
