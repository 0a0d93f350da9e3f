//! Split brain (issue 18): the two gateways of the agent lab ([`egret_lab::AgentLab`]: gw1
//! preferred for 192.168.50.100, gw2 for .101, 100 ms adverts, preemption, sealed flow sync)
//! are cut off from each other while both still reach the nodes and the router, then the cut
//! heals.
//!
//! The cut is [`Partition`]: nftables in the bridge's namespace drops every frame between
//! the two gateways' bridge ports (adverts, sync, ARP), nothing else. While a pod (pod-a1,
//! alice, egress .100) keeps a TCP connection to the outside host messaging every 10 ms,
//! the test holds:
//!
//! - **Split**: each gateway's `/status` reports both addresses `master` and owned.
//! - **Heal, one owner per address**: the preferred gateway keeps each address without a
//!   single transition of its own, and the other yields — once — within two advert
//!   intervals of the healing, by its own record (`last_transition_unix_ms`). RFC 5798
//!   resolves two masters at the first advert either hears, and the winner advertises at
//!   most one interval after the heal (at once if it hears the loser first); the second
//!   interval is margin for the `nft` command itself (the healing instant is taken before
//!   it runs), the millisecond records and two shared cores.
//! - **No ARP flapping**, from captures on both gateways' bridge ports (what each sends,
//!   cut or not) and on the router's LAN interface (what it receives), from the healing to
//!   the end (at least 1 s later, after 100 more echoes), per address:
//!   - the loser sends no ARP frame for the address (gratuitous ARP or reply) after it
//!     yielded (its record, plus 5 ms for the record's resolution and the wire);
//!   - the winner sends gratuitous ARPs for it only as announcement bursts answering the
//!     loser: at most `garp_count` (3) per advert the loser sent for that VRID after the
//!     healing, its priority-0 advert as it yields included (docs/failover.md: a master
//!     hearing an advert it does not yield to sends a new burst, at most once per
//!     interval);
//!   - the ARP frames for the address that the router receives come from the loser and then
//!     from the winner, never back: their source MAC changes at most once, and the last
//!     one is the winner's;
//!   - the router's neighbour entry for the address ends at the winner's MAC (it had one
//!     for each address before the cut: the router pinged both), and so does node1's for
//!     .100, the tunnel endpoint of its agent.
//! - **Established flows continue**: the connection carries on during the split and after
//!   the heal (100 more echoes each time, 10 s allowed) and in the end every message was
//!   echoed, in order, without a reset; the longest gap between echoes is printed, not
//!   asserted.
//!
//! Needs root and built gateway and agent binaries (`EGRET_GATEWAY_BIN`,
//! `EGRET_AGENT_BIN`, or `cargo build --release -p egret-gateway -p egret-agent`). The lab's
//! namespaces (per-run prefix) go when it drops, also on failure.

use std::{
    borrow::Borrow,
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, anyhow, ensure};
use egret_lab::{
    AgentLab,
    egress::{
        ADVERT_INTERVAL, EGRESS_IP, FLOATING_IPS, FloatingIp, FloatingIpRole, Member, Node, Pod,
    },
    ha::{
        Capture, Frame, Mac, Partition, format_mac, millis, neighbour, one_lab_at_a_time,
        parse_mac, sent_by,
    },
    require_root,
    topology::interface_mac,
};

/// How long after the healing the loser of an address may record its yielding: one advert
/// interval for the winner's advert, one more of margin (see the module documentation).
const YIELD_BOUND: Duration = ADVERT_INTERVAL.saturating_mul(2);
/// After its recorded yielding, how long a loser's ARP frame already on its way may still
/// reach a capture: the record's millisecond resolution and the veth.
const SILENT_SLACK: Duration = Duration::from_millis(5);
/// `[election].garp_count` of the lab's gateways.
const GARP_COUNT: usize = 3;
/// How long the test waits for a state it expects (both masters, one owner per address);
/// the bounds on time are asserted on the gateways' own records, not on this.
const STATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Echoes the connection must complete during the split and after the heal (10 ms apart).
const ECHOES: usize = 100;
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one named step; on failure, the cause and then the lab's evidence. `lab` is the
/// lab or a shared reference to it (the cut borrows the lab's bridge namespace).
fn step<L: Borrow<AgentLab>, T>(
    lab: &mut L,
    name: &str,
    check: impl FnOnce(&mut L) -> Result<T>,
) -> Result<T> {
    egret_lab::step(lab, name, check, |lab, err| {
        let lab: &AgentLab = (*lab).borrow();
        anyhow!("step \"{name}\" failed: {err:#}\n{}", lab.evidence())
    })
}

/// Both gateways' view of every floating IP, gw1 first.
type Views = [Vec<FloatingIpRole>; 2];

fn views(lab: &AgentLab) -> Result<Views> {
    Ok([lab.roles(Member::Gw1)?, lab.roles(Member::Gw2)?])
}

/// `member`'s view of `address`.
fn role(views: &Views, member: Member, address: Ipv4Addr) -> Result<&FloatingIpRole> {
    views[member.index()]
        .iter()
        .find(|role| role.address == address)
        .with_context(|| format!("{} lists no {address}", member.name()))
}

/// Polls both views every 20 ms until `ready` holds; returns them.
fn wait_views(
    lab: &AgentLab,
    what: &str,
    mut ready: impl FnMut(&Views) -> Result<bool>,
) -> Result<Views> {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let seen = views(lab)?;
        if ready(&seen)? {
            return Ok(seen);
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: not within {STATE_TIMEOUT:?}; last seen {seen:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Every address owned by its preferred gateway, the other its backup following it.
fn one_owner_each(seen: &Views) -> Result<bool> {
    for ip in FLOATING_IPS {
        let (winner, loser) = (ip.preferred, ip.preferred.other());
        let lost = role(seen, loser, ip.address)?;
        if !role(seen, winner, ip.address)?.is_master()
            || lost.state != "backup"
            || lost.owned
            || lost.master_address != Some(winner.address())
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The ARP frames for `address` in `frames` (gratuitous ARPs and replies alike).
fn arp_for(frames: &[Frame], address: Ipv4Addr) -> impl Iterator<Item = (&Frame, bool)> {
    frames.iter().filter_map(move |frame| {
        let arp = frame.arp()?;
        // A gratuitous ARP (RFC 5227 announcement) names the address as sender and target.
        (arp.sender_ip == address).then_some((frame, arp.target_ip == address))
    })
}

/// What one address's ARP looked like after the healing.
#[derive(Debug)]
struct ArpAfterHeal {
    address: Ipv4Addr,
    winner: Member,
    /// The loser's yielding, as it recorded it, from the healing.
    yielded_after: Duration,
    /// ARP frames for the address the loser sent from the healing to its yielding (+ slack),
    /// and after.
    loser_before_yield: usize,
    loser_after_yield: usize,
    /// Gratuitous ARPs for the address the winner sent after the healing, and the adverts
    /// for its VRID the loser sent after the healing, of any priority (each may earn one
    /// burst).
    winner_garps: usize,
    loser_adverts: usize,
    /// The source MACs of the ARP frames for the address the router received after the
    /// healing, consecutive repeats folded.
    router_sequence: Vec<Mac>,
    router_entry: Option<Mac>,
}

impl ArpAfterHeal {
    fn describe(&self, macs: &[Mac; 2]) -> String {
        let name = |mac: &Mac| {
            Member::BOTH
                .into_iter()
                .find(|m| macs[m.index()] == *mac)
                .map_or_else(|| format_mac(mac), |m| m.name().to_owned())
        };
        format!(
            "{}: {} yielded {} after the heal, sent {} ARP frames for it before and {} after; \
             {} (winner) sent {} gratuitous ARPs answering {} adverts of the loser; the \
             router heard ARP for it from {:?} and points it at {}",
            self.address,
            self.winner.other().name(),
            millis(Some(self.yielded_after)),
            self.loser_before_yield,
            self.loser_after_yield,
            self.winner.name(),
            self.winner_garps,
            self.loser_adverts,
            self.router_sequence.iter().map(name).collect::<Vec<_>>(),
            self.router_entry
                .as_ref()
                .map_or_else(|| "nothing".into(), name),
        )
    }

    fn check(&self, macs: &[Mac; 2], out: &mut Vec<String>) {
        let (winner, loser) = (self.winner, self.winner.other());
        let mut shortfall = |ok: bool, what: String| {
            if !ok {
                out.push(format!("{}: {what}", self.address));
            }
        };
        shortfall(
            self.yielded_after <= YIELD_BOUND,
            format!(
                "{} yielded {} after the heal (bound {})",
                loser.name(),
                millis(Some(self.yielded_after)),
                millis(Some(YIELD_BOUND))
            ),
        );
        shortfall(
            self.loser_after_yield == 0,
            format!(
                "{} sent {} ARP frames for it after it yielded",
                loser.name(),
                self.loser_after_yield
            ),
        );
        shortfall(
            self.winner_garps <= GARP_COUNT * self.loser_adverts.max(1),
            format!(
                "{} sent {} gratuitous ARPs, more than a burst of {GARP_COUNT} per advert of \
                 the loser ({})",
                winner.name(),
                self.winner_garps,
                self.loser_adverts
            ),
        );
        let flapped = self.router_sequence.len() > 2
            || (self.router_sequence.len() == 2 && self.router_sequence[0] != macs[loser.index()]);
        shortfall(
            !flapped,
            format!(
                "the router heard ARP for it from alternating gateways: {:?}",
                self.router_sequence
                    .iter()
                    .map(format_mac)
                    .collect::<Vec<_>>()
            ),
        );
        shortfall(
            self.router_sequence
                .last()
                .is_none_or(|mac| *mac == macs[winner.index()]),
            format!(
                "the last ARP frame for it the router heard was not {}'s",
                winner.name()
            ),
        );
        shortfall(
            self.router_entry == Some(macs[winner.index()]),
            format!(
                "the router's neighbour entry points at {}, not at {} ({})",
                self.router_entry
                    .as_ref()
                    .map_or_else(|| "nothing".into(), format_mac),
                winner.name(),
                format_mac(&macs[winner.index()])
            ),
        );
    }
}

/// Reads one address's ARP after the healing out of the captures.
fn arp_after_heal(
    ip: FloatingIp,
    healed_at: SystemTime,
    yielded: SystemTime,
    ports: &[Vec<Frame>; 2],
    router: &[Frame],
    macs: &[Mac; 2],
    router_entry: Option<Mac>,
) -> ArpAfterHeal {
    let (winner, loser) = (ip.preferred, ip.preferred.other());
    let silent_from = yielded + SILENT_SLACK;
    let after = |frames: &[Frame], member: Member| -> Vec<Frame> {
        sent_by(frames, macs[member.index()])
            .filter(|frame| frame.at >= healed_at)
            .cloned()
            .collect()
    };
    let from_loser = after(&ports[loser.index()], loser);
    let from_winner = after(&ports[winner.index()], winner);
    let loser_arp: Vec<SystemTime> = arp_for(&from_loser, ip.address)
        .map(|(frame, _)| frame.at)
        .collect();
    let mut router_sequence: Vec<Mac> = Vec::new();
    for (frame, _) in arp_for(router, ip.address) {
        if frame.outgoing || frame.at < healed_at {
            continue;
        }
        if let Some(arp) = frame.arp()
            && router_sequence.last() != Some(&arp.sender_mac)
        {
            router_sequence.push(arp.sender_mac);
        }
    }
    ArpAfterHeal {
        address: ip.address,
        winner,
        yielded_after: yielded.duration_since(healed_at).unwrap_or_default(),
        loser_before_yield: loser_arp.iter().filter(|at| **at < silent_from).count(),
        loser_after_yield: loser_arp.iter().filter(|at| **at >= silent_from).count(),
        winner_garps: arp_for(&from_winner, ip.address)
            .filter(|(_, gratuitous)| *gratuitous)
            .count(),
        loser_adverts: from_loser
            .iter()
            .filter_map(Frame::vrrp)
            .filter(|(_, vrid, _)| *vrid == ip.vrid)
            .count(),
        router_sequence,
        router_entry,
    }
}

#[test]
fn after_a_split_brain_each_address_has_one_owner_without_arp_flapping_or_lost_messages()
-> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = AgentLab::new("split")?;
    step(
        &mut lab,
        "start the gateways and the agents",
        AgentLab::start_all,
    )?;
    let mut lab = &lab;
    let macs = [
        parse_mac(&interface_mac(lab.gateway_ns(Member::Gw1), "eth0")?)?,
        parse_mac(&interface_mac(lab.gateway_ns(Member::Gw2), "eth0")?)?,
    ];
    step(&mut lab, "the router resolves both floating IPs", |lab| {
        for ip in FLOATING_IPS {
            let replies = lab.router().ping("eth0", ip.address.into(), 1)?;
            ensure!(replies == 1, "no answer from {}", ip.address);
            let entry = neighbour(lab.router(), "eth0", ip.address)?;
            ensure!(
                entry == Some(macs[ip.preferred.index()]),
                "the router resolved {} to {:?}, not to {}",
                ip.address,
                entry.as_ref().map(format_mac),
                ip.preferred.name()
            );
        }
        Ok(())
    })?;
    // The lab names the gateways' bridge ports after them. What each gateway sends, and
    // what the router receives, from before the cut to the end.
    let captures = [
        Capture::start(lab.lan(), Member::Gw1.name())?,
        Capture::start(lab.lan(), Member::Gw2.name())?,
    ];
    let router_capture = Capture::start(lab.router(), "eth0")?;
    let before = views(lab)?;

    let live = step(
        &mut lab,
        "pod-a1 talks to the outside through .100",
        |lab| {
            let synced_before = role(&before, Member::Gw2, EGRESS_IP)?.flows;
            let live = lab.live_connection(Pod::A1, 7300)?;
            live.wait_echoes(50, ECHO_TIMEOUT)?;
            // The flow reaches gw2 by the sync before the cut.
            wait_views(lab, "gw2 holds the connection's flow", |seen| {
                Ok(role(seen, Member::Gw2, EGRESS_IP)?.flows > synced_before)
            })?;
            Ok(live)
        },
    )?;

    let cut_at = SystemTime::now();
    let partition = Partition::cut(lab.lan(), [Member::Gw1.name(), Member::Gw2.name()])?;
    step(
        &mut lab,
        "cut: both gateways become master of both addresses",
        |lab| {
            wait_views(lab, "both masters of both", |seen| {
                Ok(FLOATING_IPS.iter().all(|ip| {
                    Member::BOTH.into_iter().all(|member| {
                        role(seen, member, ip.address).is_ok_and(FloatingIpRole::is_master)
                    })
                }))
            })?;
            let dropped = partition.dropped()?;
            eprintln!("   the cut dropped {dropped} frames between the gateways so far");
            ensure!(dropped > 0, "the cut dropped nothing: no partition at all");
            Ok(())
        },
    )?;
    step(
        &mut lab,
        "the connection carries on during the split",
        |_| live.wait_echoes(ECHOES, ECHO_TIMEOUT),
    )?;

    let healed_at = partition.heal()?;
    let settled = step(&mut lab, "healed: one owner per address again", |lab| {
        wait_views(lab, "each address with its preferred owner", one_owner_each)
    })?;
    // Not a step: what follows is judged with the captures, whatever it gives.
    let after_heal = live.wait_echoes(ECHOES, ECHO_TIMEOUT);
    let ended = SystemTime::now();
    let end = views(lab)?;
    let [gw1_capture, gw2_capture] = captures;
    let frames = [gw1_capture.stop()?, gw2_capture.stop()?];
    let router_frames = router_capture.stop()?;
    let report = live.finish(Duration::from_secs(5));

    let mut shortfalls = Vec::new();
    let mut figures = Vec::new();
    for ip in FLOATING_IPS {
        let (winner, loser) = (ip.preferred, ip.preferred.other());
        let yielded = role(&settled, loser, ip.address)?.last_transition;
        let analysis = arp_after_heal(
            ip,
            healed_at,
            yielded,
            &frames,
            &router_frames,
            &macs,
            neighbour(lab.router(), "eth0", ip.address)?,
        );
        eprintln!("   {}", analysis.describe(&macs));
        analysis.check(&macs, &mut shortfalls);
        figures.push(analysis);
        // The winner never changed state; the loser twice (master at the cut, backup at
        // the heal), and not again until the end.
        let transitions =
            |seen: &Views, member| role(seen, member, ip.address).map(|r| r.transitions);
        let winner_moves = transitions(&end, winner)?.saturating_sub(transitions(&before, winner)?);
        let loser_moves = transitions(&end, loser)?.saturating_sub(transitions(&before, loser)?);
        if winner_moves != 0 || loser_moves != 2 {
            shortfalls.push(format!(
                "{}: transitions from before the cut to the end: {} {winner_moves} (winner), \
                 {} {loser_moves} (loser), expected 0 and 2",
                ip.address,
                winner.name(),
                loser.name()
            ));
        }
        if !role(&end, winner, ip.address)?.is_master() {
            shortfalls.push(format!(
                "{}: {} no longer owns it at the end",
                ip.address,
                winner.name()
            ));
        }
    }
    let node1_entry = neighbour(lab.node(Node::Node1), "eth0", EGRESS_IP)?;
    if node1_entry != Some(macs[Member::Gw1.index()]) {
        shortfalls.push(format!(
            "node1's neighbour entry for {EGRESS_IP} points at {}, not at gw1",
            node1_entry
                .as_ref()
                .map_or_else(|| "nothing".into(), format_mac)
        ));
    }
    eprintln!(
        "   the connection: {}; the split lasted {}, the window after the heal {}",
        report.summary(),
        millis(healed_at.duration_since(cut_at).ok()),
        millis(ended.duration_since(healed_at).ok())
    );
    match after_heal {
        // The ARP frames above were counted over at least a second after the heal.
        Ok(()) if ended.duration_since(healed_at).unwrap_or_default() < Duration::from_secs(1) => {
            shortfalls.push("the window after the heal was shorter than 1 s".into());
        }
        Ok(()) => {}
        Err(err) => shortfalls.push(format!("after the heal: {err:#}")),
    }
    if !report.survived() {
        shortfalls.push(format!(
            "the connection did not survive: {}",
            report.summary()
        ));
    }
    ensure!(
        shortfalls.is_empty(),
        "{}\n{}",
        shortfalls.join("\n"),
        lab.evidence()
    );
    Ok(())
}
