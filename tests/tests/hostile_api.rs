//! The gateway's status API under a slowloris attack from the LAN, through `egret-gateway run`
//! with the limits it ships with. Needs root, and a built gateway:
//! `cargo build --release -p egret-gateway` (scripts/test does it), or `EGRET_GATEWAY_BIN`.
//!
//! `[api].listen` is the gateway's LAN address. The stranger (192.168.50.40) holds 300 slow
//! connections to it (`scripts/slowloris.py`: partial request heads, one more header line a
//! second, reopened as soon as the gateway closes them) while the router (192.168.50.1)
//! scrapes `/metrics` 40 times with curl, in four groups with a round of the attack between
//! each two: every scrape must be answered. What held the line shows in the gateway's
//! counters and the attack's rounds: 16 of the stranger's connections admitted (until the
//! header timeout cuts them and they are reopened), every other one refused at once, round
//! after round, while the scrapes went through.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use egret_lab::{
    GatewayLab, require_root,
    topology::{
        Background, GW_ADDRESS, Metrics, PYTHON, ROUTER_LAN_ADDRESS, STRANGER_ADDRESS,
        gateway_binary, scripts_dir,
    },
};

const API_PORT: u16 = 9477;
/// The slow connections the stranger holds.
const SLOW_CONNECTIONS: u64 = 300;
/// The gateway's connections per client address (`MAX_CONNECTIONS_PER_CLIENT`).
const PER_CLIENT: u64 = 16;
/// Scrapes from the router, in groups with an attack round between each two.
const SCRAPES: usize = 40;
const GROUPS: usize = 4;
/// Seconds between the attack's rounds, and the longest it may run.
const ROUND_SECONDS: &str = "1";
const ATTACK_SECONDS: &str = "120";

const REFUSED: &str = "egret_gateway_api_connections_refused_total";

fn step<T>(
    lab: &mut GatewayLab,
    name: &str,
    check: impl FnOnce(&mut GatewayLab) -> Result<T>,
) -> Result<T> {
    egret_lab::step(lab, name, check, |lab, err| {
        let log = lab
            .gateway_mut()
            .map(|gateway| gateway.log_tail(30))
            .unwrap_or_default();
        err.context(format!(
            "step \"{name}\" failed\n--- gateway log (end) ---\n{log}"
        ))
    })
}

/// Connections refused because their client address was at its limit, as `metrics` says.
fn refused_over_client_limit(metrics: &Metrics) -> Result<u64> {
    let value = metrics
        .value(REFUSED, &[("reason", "client_limit")])
        .with_context(|| format!("no {REFUSED}{{reason=\"client_limit\"}}"))?;
    Ok(value as u64)
}

/// `GET /metrics` from the router with curl, bound to the router's LAN address: the parsed
/// metrics, after checking the status line and content type.
fn scrape_from_router(lab: &GatewayLab, api: SocketAddr) -> Result<Metrics> {
    let response = lab.router().exec(
        "curl",
        [
            "-sS",
            "--include",
            "--fail",
            "--max-time",
            "5",
            "--interface",
            &ROUTER_LAN_ADDRESS.to_string(),
            &format!("http://{api}/metrics"),
        ],
    )?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of head in {response:?}"))?;
    ensure!(head.starts_with("HTTP/1.1 200 OK\r\n"), "answered {head}");
    ensure!(
        head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "content type: {head}"
    );
    let metrics = Metrics::parse(body)?;
    ensure!(
        metrics.value(
            "egret_gateway_info",
            &[
                ("name", "gw1"),
                ("interface", "eth0"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ) == Some(1.0),
        "no egret_gateway_info for gw1 in:\n{body}"
    );
    Ok(metrics)
}

/// The next round line of the attack: how many connections it had to reopen (the gateway
/// closed them) in that round.
fn next_round(attack: &mut Background) -> Result<u64> {
    let line = attack
        .line(Duration::from_secs(10))?
        .context("the attack ended early")?;
    let reopened = line
        .strip_prefix("round ")
        .and_then(|rest| rest.split_once(" reopened "))
        .and_then(|(_, n)| n.parse().ok())
        .with_context(|| format!("not a round line: {line:?}"))?;
    Ok(reopened)
}

#[test]
fn scrapes_are_answered_while_a_lan_host_holds_300_slow_connections() -> Result<()> {
    require_root();
    let mut lab = GatewayLab::new("hapi")?;
    let api = SocketAddr::from((GW_ADDRESS, API_PORT));
    lab.set_api_listen(api)?;
    step(
        &mut lab,
        "the gateway starts with [api].listen on its LAN address",
        GatewayLab::start_gateway,
    )?;

    let mut attack = step(
        &mut lab,
        "the stranger opens 300 slow connections to the API",
        |lab| {
            let mut attack = Background::spawn(
                lab.stranger()
                    .command(PYTHON)
                    .arg(scripts_dir().join("slowloris.py"))
                    .args([
                        &STRANGER_ADDRESS.to_string(),
                        &GW_ADDRESS.to_string(),
                        &API_PORT.to_string(),
                        &SLOW_CONNECTIONS.to_string(),
                        ROUND_SECONDS,
                        ATTACK_SECONDS,
                    ]),
            )?;
            let first = attack.line(Duration::from_secs(30))?;
            ensure!(
                first.as_deref() == Some(&format!("holding {SLOW_CONNECTIONS}")),
                "the attack said {first:?}"
            );
            Ok(attack)
        },
    )?;

    step(
        &mut lab,
        "the gateway admits 16 of them and refuses the other 284 at once",
        |lab| {
            // Each of the 300 is admitted or refused as it is accepted: once 284 refusals
            // are counted, all of them were seen and 16 are held.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let refused = refused_over_client_limit(&lab.metrics()?)?;
                if refused >= SLOW_CONNECTIONS - PER_CLIENT {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!("{refused} connections refused over the client limit after 10 s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        },
    )?;

    step(
        &mut lab,
        "40 scrapes from the router are all answered while the attack goes on",
        |lab| {
            // Forget the rounds that went before: each round read below ended after this.
            while let Ok(Some(_)) = attack.line(Duration::from_millis(1)) {}
            let mut answered = 0;
            let mut refused_seen = Vec::new();
            for group in 0..GROUPS {
                for _ in 0..SCRAPES / GROUPS {
                    let metrics = scrape_from_router(lab, api)
                        .with_context(|| format!("scrape {} of {SCRAPES}", answered + 1))?;
                    refused_seen.push(refused_over_client_limit(&metrics)?);
                    answered += 1;
                }
                if group + 1 < GROUPS {
                    // A round of the attack between this group and the next: the gateway
                    // closed all but its 16 again, so the stranger had to reopen them.
                    let reopened = next_round(&mut attack)?;
                    ensure!(
                        reopened >= SLOW_CONNECTIONS - PER_CLIENT,
                        "the attack reopened only {reopened} connections in a round"
                    );
                }
            }
            // The rounds between the groups were refused while the scrapes went on.
            let (first, last) = (refused_seen[0], refused_seen[refused_seen.len() - 1]);
            ensure!(
                last > first,
                "the refusals did not grow during the scrapes: {first} → {last}"
            );
            eprintln!(
                "   {answered}/{SCRAPES} scrapes answered; connections refused over the client \
                 limit, as the scrapes saw them: {first} → {last}"
            );
            Ok(())
        },
    )?;

    step(
        &mut lab,
        "`egret-gateway status` from the router reads the gateway under attack",
        |lab| {
            let text = lab
                .router()
                .exec(gateway_binary()?, ["status", "--api", &api.to_string()])?;
            ensure!(
                text.lines()
                    .any(|line| line.split_whitespace().eq(["gateway", "gw1"])),
                "the status printed:\n{text}"
            );
            Ok(())
        },
    )?;
    // The attack was still running: its next round is due.
    next_round(&mut attack)?;

    drop(attack);
    step(&mut lab, "SIGTERM stops the gateway with status 0", |lab| {
        lab.stop_gateway_cleanly().map(drop)
    })?;
    Ok(())
}
