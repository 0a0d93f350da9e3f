//! Failover between two `egret-gateway`s on one LAN ([`egret_lab::HaLab`]): VRRPv3 elects
//! one owner of the floating IP, only the owner answers ARP for it and forwards its
//! traffic, and when the owner fails — SIGKILL, SIGTERM or its LAN link down — the other
//! takes over quickly enough, with flow state synced, that the pod's connections carry on.
//! Needs root, and a built gateway: `cargo build --release -p egret-gateway` (scripts/test
//! does it), or `EGRET_GATEWAY_BIN`.
//!
//! What these tests hold the gateways to (the targets of the failover work):
//! - one master per VRID, the higher priority; the backup stays silent on ARP;
//! - at 100 ms adverts a takeover within 400 ms of the failure, measured from the failure to
//!   the first frame the new master forwards (captured on the router, kernel timestamps);
//!   at 10 ms adverts within 50 ms, without flapping under load;
//! - across the takeover, a connection messaging every 10 ms sees no reset and loses
//!   nothing, 200 of 200 parallel connections carry on, and UDP flows receive a packet the
//!   outside sends first after the takeover.
//!
//! Other figures (the longest gap in the messaging, the election's own takeover time) are
//! printed, not asserted. The tests run one at a time ([`egret_lab::ha::one_lab_at_a_time`]): they share the
//! machine's two cores, and a timing test beside another lab would measure the neighbour.

use std::{
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, ensure};
use egret_lab::{
    HaLab,
    ha::{
        Capture, Election, FailoverReport, Failure, Frame, HaConfig, Load, Mac, Member,
        about_one_per_interval, adverts, arp_request, expected_adverts, format_mac, millis,
        one_lab_at_a_time, sent_by,
    },
    require_root,
    topology::{
        Background, FLOATING_IP, OUTSIDE_ADDRESS, POD_ADDRESS, ROUTER_LAN_ADDRESS, run_with_timeout,
    },
};

/// The takeover target at 100 ms adverts.
const TAKEOVER_AT_100MS: Duration = Duration::from_millis(400);
/// The takeover target at 10 ms adverts.
const TAKEOVER_AT_10MS: Duration = Duration::from_millis(50);

/// ARP frames about the floating IP that `mac` sent (announcements and answers).
fn arp_for_floating_ip(frames: &[Frame], mac: Mac) -> usize {
    sent_by(frames, mac)
        .filter_map(Frame::arp)
        .filter(|arp| arp.sender_ip == FLOATING_IP)
        .count()
}

/// Starts both gateways, the expected winner first, and checks who won, and that only the
/// winner speaks for the floating IP: its adverts alone, its gratuitous ARP alone, its ARP answer alone.
fn check_convergence(config: HaConfig, expected: Member) -> Result<()> {
    let mut lab = HaLab::new("conv", config.clone())?;
    let macs = [lab.mac(Member::Gw1)?, lab.mac(Member::Gw2)?];
    let mac = |member: Member| macs[member.index()];
    // From before the start: every frame either gateway sends into the bridge.
    let captures = [
        Capture::start(lab.base().lan(), Member::Gw1.lan_port())?,
        Capture::start(lab.base().lan(), Member::Gw2.lan_port())?,
    ];
    let router_capture = Capture::start(lab.base().router(), "eth0")?;
    // The preferred gateway runs its election before the other starts; the restart tests
    // cover the other order.
    let master = lab.start_ahead(expected)?;
    let backup = master.other();
    ensure!(
        master == expected,
        "{} won with priorities {:?}; expected {}\n{}",
        master.name(),
        config.priorities,
        expected.name(),
        lab.evidence()
    );

    let master_view = lab.election(master)?;
    let backup_view = lab.election(backup)?;
    eprintln!(
        "   master {}: {master_view:?}\n   backup {}: {backup_view:?}",
        master.name(),
        backup.name()
    );
    ensure!(
        backup_view.state == "backup" && !backup_view.owned,
        "the backup reports {backup_view:?}"
    );
    ensure!(
        backup_view.master_address == Some(master.address()),
        "the backup names {:?} as master, expected {}",
        backup_view.master_address,
        master.address()
    );
    ensure!(
        backup_view.gratuitous_arps_sent == 0,
        "the backup sent {} gratuitous ARPs",
        backup_view.gratuitous_arps_sent
    );
    ensure!(
        master_view.gratuitous_arps_sent > 0,
        "the master sent no gratuitous ARP: {master_view:?}"
    );
    ensure!(
        backup_view.adverts_rejected == 0 && master_view.adverts_rejected == 0,
        "adverts were refused: master {master_view:?}, backup {backup_view:?}"
    );

    // The router learns the master's MAC for the floating IP.
    let learnt = lab
        .base()
        .resolve_mac(lab.base().router(), "eth0", FLOATING_IP)?;
    ensure!(
        learnt == format_mac(&mac(master)),
        "the router resolved {FLOATING_IP} to {learnt}; the master {} has {}, the backup {}",
        master.name(),
        format_mac(&mac(master)),
        format_mac(&mac(backup))
    );

    // An ARP request from the router: only the master answers.
    let router_mac = egret_lab::ha::parse_mac(&lab.base().mac_of(lab.base().router(), "eth0")?)?;
    let probe = arp_request(router_mac, ROUTER_LAN_ADDRESS, FLOATING_IP);
    let probed = SystemTime::now();
    let probes: [&[u8]; 3] = [&probe, &probe, &probe];
    lab.base().router().send_frames("eth0", &probes)?;
    let answers = |frames: &[Frame], member: Member| {
        frames
            .iter()
            .filter(|frame| !frame.outgoing && frame.at >= probed)
            .filter_map(Frame::arp)
            .filter(|arp| {
                arp.operation == 2 && arp.sender_ip == FLOATING_IP && arp.sender_mac == mac(member)
            })
            .count()
    };
    // Until the master has answered every probe: a backup that answered at all would
    // have answered by then, as both read the same probes.
    let deadline = Instant::now() + Duration::from_secs(3);
    while answers(&router_capture.frames(), master) < probes.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let router_frames = router_capture.stop()?;
    let (from_master, from_backup) = (
        answers(&router_frames, master),
        answers(&router_frames, backup),
    );
    ensure!(
        from_master == probes.len() && from_backup == 0,
        "ARP answers for {FLOATING_IP} to {} probes: master {} {from_master}, backup {} \
         {from_backup}",
        probes.len(),
        master.name(),
        backup.name(),
    );

    // Adverts over the last stretch: about one per interval, from the master only.
    let window = Duration::from_secs(2);
    let since = SystemTime::now();
    thread::sleep(window);
    let [first, second] = captures;
    let frames = [first.stop()?, second.stop()?];
    let frames_of = |member: Member| &frames[member.index()];
    let until = SystemTime::now();
    let from_master = adverts(frames_of(master), mac(master), since, until).len();
    let from_backup = adverts(frames_of(backup), mac(backup), since, until).len();
    let expected = expected_adverts(window, config.advert_interval);
    eprintln!(
        "   adverts in {window:?}: master {from_master} (about {expected} expected), \
         backup {from_backup}; ARP for {FLOATING_IP} sent: master {}, backup {}",
        arp_for_floating_ip(frames_of(master), mac(master)),
        arp_for_floating_ip(frames_of(backup), mac(backup))
    );
    ensure!(from_backup == 0, "the backup sent {from_backup} adverts");
    ensure!(
        about_one_per_interval(from_master, window, config.advert_interval),
        "the master sent {from_master} adverts in {window:?}, expected about {expected}"
    );
    // Since the start: the backup never announced or answered for the floating IP.
    let backup_arp = arp_for_floating_ip(frames_of(backup), mac(backup));
    ensure!(
        backup_arp == 0,
        "the backup sent {backup_arp} ARP frames for {FLOATING_IP}"
    );
    ensure!(
        arp_for_floating_ip(frames_of(master), mac(master)) > 0,
        "no gratuitous ARP from the master on the wire"
    );
    Ok(())
}

#[test]
fn the_higher_priority_gateway_is_the_only_one_speaking_for_the_floating_ip() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    eprintln!("== multicast adverts, gw1 preferred");
    check_convergence(HaConfig::default(), Member::Gw1)?;
    eprintln!("== unicast adverts, gw2 preferred");
    check_convergence(
        HaConfig {
            priorities: [100, 200],
            unicast: true,
            ..HaConfig::default()
        },
        Member::Gw2,
    )
}

/// Checks a failover's report against the targets: the takeover within `target` (when
/// given) and everything surviving. Every shortfall is listed, with the figures.
fn judge(lab: &HaLab, report: &FailoverReport, target: Option<Duration>) -> Result<()> {
    eprintln!("   {}", report.summary());
    let mut shortfalls = Vec::new();
    if let Some(target) = target {
        match report.takeover {
            Some(takeover) if takeover <= target => {}
            Some(takeover) => shortfalls.push(format!(
                "takeover took {} (target {})",
                millis(Some(takeover)),
                millis(Some(target))
            )),
            None => shortfalls.push(format!(
                "{} never forwarded a frame from {FLOATING_IP}",
                report.successor.name()
            )),
        }
    }
    shortfalls.extend(report.survival_shortfalls());
    ensure!(
        shortfalls.is_empty(),
        "{:?} of {}: {}\n{}\n{}",
        report.failure,
        report.failed.name(),
        shortfalls.join("; "),
        report.summary(),
        lab.evidence()
    );
    Ok(())
}

/// A lab with both gateways up and gw1, the preferred one, master.
fn converged_lab(tag: &str, config: HaConfig) -> Result<HaLab> {
    let mut lab = HaLab::new(tag, config)?;
    let master = lab.start_both()?;
    ensure!(
        master == Member::Gw1,
        "{} is master; gw1 has the higher priority\n{}",
        master.name(),
        lab.evidence()
    );
    Ok(lab)
}

#[test]
fn killed_master_is_replaced_within_400ms_and_connections_survive() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = converged_lab("kill", HaConfig::default())?;
    let report = lab.failover(Failure::Kill, &Load::default())?;
    judge(&lab, &report, Some(TAKEOVER_AT_100MS))
}

#[test]
fn terminated_master_hands_over_at_once_and_connections_survive() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let config = HaConfig::default();
    let mut lab = converged_lab("term", config.clone())?;
    let report = lab.failover(Failure::Terminate, &Load::default())?;
    let skew = config.skew_time(Member::Gw2);
    eprintln!("   gw2's Skew_Time: {}", millis(Some(skew)));
    judge(&lab, &report, Some(TAKEOVER_AT_100MS))?;
    // After a priority-0 advert the backup waits Skew_Time, not Master_Down_Interval: a
    // takeover after silence cannot come sooner than Master_Down_Interval less one interval.
    let silence = config.master_down_interval(Member::Gw2) - config.advert_interval;
    let takeover = report.takeover.context("no takeover")?;
    ensure!(
        takeover < silence,
        "takeover after SIGTERM took {} (Skew_Time {}): no faster than after silence ({}), so \
         the priority-0 advert was not acted on",
        millis(Some(takeover)),
        millis(Some(skew)),
        millis(Some(silence))
    );
    Ok(())
}

#[test]
fn master_losing_its_link_is_replaced_and_connections_survive() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = converged_lab("link", HaConfig::default())?;
    let report = lab.failover(Failure::LinkDown, &Load::default())?;
    let judged = judge(&lab, &report, Some(TAKEOVER_AT_100MS));
    // Back on the LAN, gw1 (higher priority, preemption) takes the address back.
    ensure!(
        lab.running(Member::Gw1),
        "gw1 exited while its link was down"
    );
    let during = lab.election(Member::Gw1)?;
    eprintln!("   gw1 with its link down: {during:?}");
    lab.link_up(Member::Gw1)?;
    let master = lab.wait_converged(Duration::from_secs(20))?;
    eprintln!("   link back up: {} is master", master.name());
    judged?;
    ensure!(
        master == Member::Gw1,
        "with its link back, gw1 (priority 200, preempt) did not take over: {} is master",
        master.name()
    );
    Ok(())
}

/// Election view of both, for the flapping check.
fn views(lab: &HaLab) -> Result<[Election; 2]> {
    Ok([lab.election(Member::Gw1)?, lab.election(Member::Gw2)?])
}

#[test]
fn ten_ms_adverts_hand_over_within_50ms_without_flapping_under_load() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let config = HaConfig {
        advert_interval: Duration::from_millis(10),
        ..HaConfig::default()
    };
    let mut lab = converged_lab("fast", config)?;

    // The status is a snapshot the gateway publishes every 250 ms, and at 10 ms adverts
    // the lab converges faster than that: count from snapshots that show the last
    // transition.
    let converged = SystemTime::now();
    for member in [Member::Gw1, Member::Gw2] {
        lab.snapshot_after(member, converged)?;
    }
    // Five seconds of a TCP stream through the gateway, as fast as it goes.
    let before = views(&lab)?;
    let server = Background::spawn(lab.base().outside().command("iperf3").args([
        "-s",
        "-1",
        "-B",
        &OUTSIDE_ADDRESS.to_string(),
        "-p",
        "5211",
    ]))?;
    egret_lab::topology::wait_listening(lab.base().outside(), "tcp", 5211, Duration::from_secs(5))?;
    let started = Instant::now();
    let client = run_with_timeout(
        lab.base().pod().command("iperf3").args([
            "-c",
            &OUTSIDE_ADDRESS.to_string(),
            "-B",
            &POD_ADDRESS.to_string(),
            "-p",
            "5211",
            "-t",
            "5",
        ]),
        Duration::from_secs(20),
    )
    .context("iperf3 through the gateway")?;
    let _ = server.wait(Duration::from_secs(5));
    let after = views(&lab)?;
    let rate = client
        .lines()
        .rev()
        .find(|line| line.contains("receiver"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "   {:.1?} of load: {}; transitions gw1 {} → {}, gw2 {} → {}",
        started.elapsed(),
        rate.trim(),
        before[0].transitions,
        after[0].transitions,
        before[1].transitions,
        after[1].transitions
    );
    ensure!(
        before[0].transitions == after[0].transitions
            && before[1].transitions == after[1].transitions
            && after[0].is_master()
            && after[1].state == "backup",
        "the election flapped under load: before {before:?}, after {after:?}\n{}",
        lab.evidence()
    );

    let report = lab.failover(Failure::Kill, &Load::default())?;
    judged_with_flapping(&lab, &report)
}

/// After a 10 ms failover: the target, survival, and the successor changed state once.
fn judged_with_flapping(lab: &HaLab, report: &FailoverReport) -> Result<()> {
    let judged = judge(lab, report, Some(TAKEOVER_AT_10MS));
    let view = &report.successor_view;
    let settled = lab.election(report.successor)?;
    ensure!(
        settled.is_master() && settled.transitions == view.transitions,
        "{} did not stay master after the takeover: {view:?}, then {settled:?}",
        report.successor.name()
    );
    judged
}

#[test]
fn restarted_preferred_gateway_takes_back_the_address_and_connections_survive() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = converged_lab("back", HaConfig::default())?;
    let at = lab.kill(Member::Gw1)?;
    lab.wait_master(Member::Gw2, Duration::from_secs(5))?;
    eprintln!(
        "   gw1 killed, gw2 master {:.1?} later",
        at.elapsed().unwrap_or_default()
    );
    // gw2 owns the address alone; gw1 starts again and preempts it, under load.
    let report = lab.failover(Failure::Preempted, &Load::default())?;
    let judged = judge(&lab, &report, None);
    let master = lab.wait_converged(Duration::from_secs(20))?;
    judged?;
    ensure!(
        master == Member::Gw1,
        "after the restart gw1 (priority 200, preempt) did not take back the address: {} \
         is master",
        master.name()
    );
    Ok(())
}

#[test]
fn without_preemption_a_restarted_gateway_stays_backup() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = HaLab::new(
        "nopre",
        HaConfig {
            preempt: false,
            ..HaConfig::default()
        },
    )?;
    let first = lab.start_both()?;
    lab.kill(first)?;
    lab.wait_master(first.other(), Duration::from_secs(5))?;
    lab.start(first)?;
    // wait_converged holds the agreement for a Master_Down_Interval and an interval more:
    // long enough for a preempting gateway to have taken over.
    let master = lab.wait_converged(Duration::from_secs(20))?;
    ensure!(
        master == first.other(),
        "{} took the address back without preemption\n{}",
        master.name(),
        lab.evidence()
    );
    Ok(())
}

/// The gateways as the package installs them: each a Debian system booted in its namespace
/// (systemd-nspawn), `egret-gateway` installed with dpkg and started with systemctl. Traffic
/// from the pod leaves with the egress IP; `systemctl kill -s KILL` on the master moves the
/// address within the usual bound with every connection surviving; systemd restarts the killed
/// daemon, which rejoins as backup (preemption off here, so it does not take the address back
/// in the middle of the measurement; the preempting case is the test above).
#[test]
fn packaged_gateways_fail_over_and_systemd_restarts_the_killed_one() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let deb = egret_lab::packages::Packages::get()?.deb("egret-gateway")?;
    let config = HaConfig {
        preempt: false,
        ..HaConfig::default()
    };
    let mut lab = HaLab::new("pkg", config)?;
    lab.install_package(&deb)?;
    let master = lab.start_ahead(Member::Gw1)?;
    ensure!(
        master == Member::Gw1,
        "{} is master\n{}",
        master.name(),
        lab.evidence()
    );
    let seen = lab.base().outside_view_of_pod(Duration::from_secs(5))?;
    ensure!(
        seen.tcp == Some(FLOATING_IP) && seen.udp == Some(FLOATING_IP),
        "the outside host sees the pod as {seen:?}, not {FLOATING_IP}"
    );

    let report = lab.failover(Failure::Kill, &Load::default())?;
    judge(&lab, &report, Some(TAKEOVER_AT_100MS))?;

    let restarts = lab.wait_service_restarted(Member::Gw1, Duration::from_secs(20))?;
    ensure!(restarts == 1, "NRestarts {restarts}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let roles = (lab.role(Member::Gw1)?, lab.role(Member::Gw2)?);
        if matches!(
            roles,
            (
                egret_lab::ha::Role::Backup { .. },
                egret_lab::ha::Role::Master
            )
        ) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the restarted gw1 did not rejoin as backup: {roles:?}\n{}",
            lab.evidence()
        );
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("   gw1 restarted by systemd (NRestarts 1) and rejoined as backup; gw2 master");
    Ok(())
}
