//! egret-gateway and keepalived share one VRRPv3 virtual router: keepalived (the Debian
//! package, `vrrp_version 3`, the same VRID, advert interval and floating IP) runs in gw2's
//! namespace of the failover lab ([`egret_lab::HaLab`]) in place of the second egret, and
//! the two must behave as one VRRP implementation would with itself. That proves egret's
//! adverts are standard on the wire (keepalived accepts them: header, TTL 255, checksum over
//! the IPv4 pseudo-header, address list) and that egret accepts keepalived's.
//!
//! For each arrangement — egret preferred or keepalived preferred, multicast or unicast
//! adverts — the tests check that:
//! - the higher priority becomes master and the other stays backup (each can only stay
//!   backup by accepting the other's adverts: otherwise it would take over after
//!   Master_Down_Interval);
//! - neither floods: over a few seconds about one advert per interval, from the master
//!   only, counted on the bridge ports;
//! - neither flaps: egret's transition counter and keepalived's log of state changes stay
//!   put while they run side by side;
//! - when the master is killed, the other takes over, and then holds the address steadily.
//!
//! keepalived adds the floating IP to its own `eth0` when master, as it always does; that is
//! how the lab tells that it is master. Needs root, keepalived (`scripts/setup` installs it)
//! and a built gateway.

use std::{
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, ensure};
use egret_lab::{
    HaLab,
    ha::{
        Capture, HaConfig, Mac, Member, Role, VRID, about_one_per_interval, adverts,
        expected_adverts, millis, one_lab_at_a_time, sent_by,
    },
    require_root,
};

/// How long the advert counts run.
const WINDOW: Duration = Duration::from_secs(3);

/// Both sides' state-change counts: egret's `transitions`, keepalived's MASTER and BACKUP
/// entries in its log.
fn transitions(lab: &HaLab) -> Result<(u64, (usize, usize))> {
    let egret = if lab.running(Member::Gw1) {
        lab.election(Member::Gw1)?.transitions
    } else {
        0
    };
    let keepalived = lab.keepalived().map_or((0, 0), |k| k.transitions());
    Ok((egret, keepalived))
}

fn name(member: Member) -> &'static str {
    match member {
        Member::Gw1 => "egret",
        Member::Gw2 => "keepalived",
    }
}

/// Counts adverts over [`WINDOW`] on both bridge ports and checks that only `master` sent
/// them, about one per interval, and that nobody changed state meanwhile.
fn steady(lab: &HaLab, captures: &[Capture; 2], macs: [Mac; 2], master: Member) -> Result<()> {
    let interval = lab.config().advert_interval;
    let before = transitions(lab)?;
    let from = SystemTime::now();
    thread::sleep(WINDOW);
    let to = SystemTime::now();
    let after = transitions(lab)?;
    let count = |member: Member| {
        adverts(
            &captures[member.index()].frames(),
            macs[member.index()],
            from,
            to,
        )
    };
    let (by_master, by_backup) = (count(master), count(master.other()));
    let expected = expected_adverts(WINDOW, interval);
    eprintln!(
        "   {WINDOW:?} steady: {} sent {} adverts (about {expected} expected), {} sent {}; \
         transitions (egret, keepalived master/backup) {before:?} → {after:?}",
        name(master),
        by_master.len(),
        name(master.other()),
        by_backup.len()
    );
    ensure!(
        by_backup.is_empty(),
        "the backup ({}) sent {} adverts",
        name(master.other()),
        by_backup.len()
    );
    ensure!(
        about_one_per_interval(by_master.len(), WINDOW, interval),
        "{} sent {} adverts in {WINDOW:?}, expected about {expected}",
        name(master),
        by_master.len()
    );
    ensure!(
        by_master.iter().all(|(version, _)| *version == 3),
        "{} sent adverts other than VRRPv3: {by_master:?}",
        name(master)
    );
    ensure!(
        before == after,
        "state changes while steady: {before:?} → {after:?}\n{}",
        lab.evidence()
    );
    Ok(())
}

/// Runs one arrangement: egret in gw1, keepalived in gw2, `preferred` with priority 200
/// and the other with 100.
fn interop(tag: &str, preferred: Member, unicast: bool) -> Result<()> {
    let priorities = match preferred {
        Member::Gw1 => [200, 100],
        Member::Gw2 => [100, 200],
    };
    let config = HaConfig {
        priorities,
        unicast,
        // keepalived speaks no flow sync.
        sync: false,
        ..HaConfig::default()
    };
    let mut lab = HaLab::new(tag, config)?;
    let macs = [lab.mac(Member::Gw1)?, lab.mac(Member::Gw2)?];
    let captures = [
        Capture::start(lab.base().lan(), Member::Gw1.lan_port())?,
        Capture::start(lab.base().lan(), Member::Gw2.lan_port())?,
    ];
    lab.start_keepalived(priorities[1])?;
    lab.start(Member::Gw1)?;
    let master = lab.wait_converged(Duration::from_secs(30))?;
    eprintln!(
        "   {} is master; egret: {:?}",
        name(master),
        lab.election(Member::Gw1)?
    );
    ensure!(
        master == preferred,
        "{} won, but {} has the higher priority\n{}",
        name(master),
        name(preferred),
        lab.evidence()
    );
    let egret = lab.election(Member::Gw1)?;
    ensure!(
        egret.adverts_rejected == 0,
        "egret refused some of keepalived's adverts: {egret:?}"
    );
    if master == Member::Gw2 {
        ensure!(
            egret.master_address == Some(Member::Gw2.address()) && egret.adverts_received > 0,
            "egret, backup, does not follow keepalived: {egret:?}"
        );
    }
    steady(&lab, &captures, macs, master)?;

    // The master dies; the other takes over, and holds.
    let successor = master.other();
    let at = match master {
        Member::Gw1 => lab.kill(Member::Gw1)?,
        Member::Gw2 => lab.kill_keepalived()?,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.role(successor)? != Role::Master {
        ensure!(
            Instant::now() < deadline,
            "{} did not take over within 5 s of {}'s death\n{}",
            name(successor),
            name(master),
            lab.evidence()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let adverts_so_far = adverts(
        &captures[successor.index()].frames(),
        macs[successor.index()],
        at,
        SystemTime::now(),
    )
    .len();
    let frames = captures[successor.index()].frames();
    let takeover = sent_by(&frames, macs[successor.index()])
        .filter(|frame| frame.at > at)
        .find(|frame| frame.vrrp().is_some_and(|(_, vrid, _)| vrid == VRID))
        .and_then(|frame| frame.at.duration_since(at).ok())
        .context("no advert from the successor on the wire")?;
    eprintln!(
        "   {} killed; {} advertised {} later ({adverts_so_far} adverts so far); \
         Master_Down_Interval {}",
        name(master),
        name(successor),
        millis(Some(takeover)),
        millis(Some(lab.config().master_down_interval(successor)))
    );
    steady(&lab, &captures, macs, successor)
}

#[test]
fn egret_preferred_over_keepalived_multicast() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    interop("kam1", Member::Gw1, false)
}

#[test]
fn keepalived_preferred_over_egret_multicast() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    interop("kam2", Member::Gw2, false)
}

#[test]
fn egret_preferred_over_keepalived_unicast() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    interop("kau1", Member::Gw1, true)
}

#[test]
fn keepalived_preferred_over_egret_unicast() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    interop("kau2", Member::Gw2, true)
}
