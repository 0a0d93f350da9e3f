//! A hostile host on the gateways' LAN sends VRRPv3 adverts ([`egret_lab::HaLab`] with its
//! `stranger`, 192.168.50.40): it must not take the floating IP away from its master, nor
//! stretch how long a backup waits for a dead master beyond its own Master_Down_Interval.
//!
//! The adverts come from `tests/scripts/vrrp_adverts.py` (scapy, a packet socket on the
//! stranger's `eth0`, inside the stranger's namespace): well-formed VRRPv3 with TTL 255 and
//! a right checksum, so that every refusal is the election's, never the wire checks'.
//!
//! - With `[election].peers` (100 ms adverts, gw1 master at priority 200): the stranger at
//!   priority 254 and Max Adver Int 4095 cs, by multicast and unicast to the master, with
//!   and without the floating IP; adverts spoofing gw2 at priority 254 (refused as
//!   `unverified`: gw2 announces its priority over the sealed flow sync); adverts spoofing
//!   gw2 at its own priority, without the floating IP (refused) and with it (a lower
//!   advert: the master reasserts); priority 0 spoofing gw1 to gw2
//!   (gw2 may take over after Skew_Time; gw1 reasserts at once). Throughout, the master's
//!   `/status` stays master — sampled while each attack runs and read again from a
//!   snapshot taken after it ended — with no transition at all, each refusal is counted
//!   under its reason, and the router's pings to the floating IP never go unanswered for
//!   1 s.
//! - With `[election].peers`: adverts in the dead master's name at 4095 cs keep gw2 waiting
//!   while they come (the one thing VRRPv3 without authentication cannot refuse), and once
//!   they stop gw2 takes over within its own Master_Down_Interval (361 ms) instead of
//!   3 × 40.95 s + Skew_Time.
//! - Without peers (multicast), what the rules still refuse: adverts without the floating
//!   IP, priority 0 from a non-master; and the limit of that mode: the stranger at 254 takes
//!   the address while it advertises, and gw1 claims it back within its own
//!   Master_Down_Interval once it stops.
//!
//! Needs root, python3-scapy and a built gateway (`EGRET_GATEWAY_BIN`, or
//! `cargo build --release -p egret-gateway`). The lab's namespaces go when it drops, also on
//! failure; every generator runs in a lab namespace.

use std::{
    collections::BTreeMap,
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, ensure};
use egret_lab::{
    HaLab, NetNs,
    ha::{GW2_ADDRESS, HaConfig, Member, VRID, format_mac, millis, one_lab_at_a_time},
    require_root,
    topology::{Background, FLOATING_IP, GW_ADDRESS, PYTHON, STRANGER_ADDRESS, scripts_dir},
};
use serde_json::Value;

const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// An address on the LAN that is no floating IP: the list of the adverts without it.
const NOT_FLOATING: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 99);
/// The longest the router may go without an answer from the floating IP.
const MAX_OUTAGE: Duration = Duration::from_secs(1);
/// How much later than its Master_Down_Interval after the last advert a gateway may record
/// its takeover: the LAN, the election loop's wake-up, millisecond records.
const TIMER_SLACK: Duration = Duration::from_millis(30);

/// Refusals a gateway must count over an attack, by reason: exactly these.
type Refusals = Vec<(&'static str, u64)>;

/// One gateway's `/status`, as of the snapshot's own time.
#[derive(Debug, Clone)]
struct Seen {
    state: String,
    owned: bool,
    master_address: Option<Ipv4Addr>,
    transitions: u64,
    last_transition: SystemTime,
    adverts_sent: u64,
    gratuitous_arps_sent: u64,
    /// `election.adverts_rejected`, every reason.
    rejected: BTreeMap<String, u64>,
}

fn unix_ms(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

impl Seen {
    fn parse(body: &str) -> Result<Self> {
        let status: Value = serde_json::from_str(body).context("/status is not JSON")?;
        Self::from_status(&status)
    }

    fn from_status(status: &Value) -> Result<Self> {
        let ip = egret_lab::ha::floating_ip_status(status)?;
        let number = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
        Ok(Self {
            state: ip
                .get("state")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            owned: ip.get("owned").and_then(Value::as_bool).unwrap_or(false),
            master_address: ip
                .get("master_address")
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok()),
            transitions: number(ip.get("transitions")),
            last_transition: unix_ms(number(ip.get("last_transition_unix_ms"))),
            adverts_sent: number(ip.get("adverts_sent")),
            gratuitous_arps_sent: number(status.pointer("/control/gratuitous_arps_sent")),
            rejected: status
                .pointer("/election/adverts_rejected")
                .and_then(Value::as_object)
                .map(|reasons| {
                    reasons
                        .iter()
                        .map(|(reason, n)| (reason.clone(), n.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    fn is_master(&self) -> bool {
        self.state == "master" && self.owned
    }

    /// The refusal reasons that grew since `before`, by how much.
    fn refused_since(&self, before: &Seen) -> BTreeMap<String, u64> {
        self.rejected
            .iter()
            .filter_map(|(reason, n)| {
                let was = before.rejected.get(reason).copied().unwrap_or(0);
                (*n > was).then(|| (reason.clone(), n - was))
            })
            .collect()
    }
}

fn seen(lab: &HaLab, member: Member) -> Result<Seen> {
    Seen::parse(&lab.api_get(member, "/status")?)
}

/// `member`'s status from a snapshot taken after `after`, its refusal counters included.
fn seen_after(lab: &HaLab, member: Member, after: SystemTime) -> Result<Seen> {
    Seen::from_status(&lab.snapshot_after(member, after)?.body)
}

/// Where an attack's adverts go.
#[derive(Debug, Clone, Copy)]
enum To {
    Multicast,
    Unicast(Member),
}

/// A stream of identical adverts from the stranger's namespace.
#[derive(Debug, Clone)]
struct Attack {
    what: &'static str,
    /// The stranger's own address, or a spoofed one.
    source: Ipv4Addr,
    to: To,
    priority: u8,
    interval_centis: u16,
    addresses: Vec<Ipv4Addr>,
    count: u32,
    period: Duration,
}

impl Attack {
    /// 100 adverts 20 ms apart, with the floating IP.
    fn new(what: &'static str, source: Ipv4Addr, to: To, priority: u8, interval: u16) -> Self {
        Self {
            what,
            source,
            to,
            priority,
            interval_centis: interval,
            addresses: vec![FLOATING_IP],
            count: 100,
            period: Duration::from_millis(20),
        }
    }

    fn without_floating_ip(mut self) -> Self {
        self.addresses = vec![NOT_FLOATING];
        self
    }

    fn paced(mut self, count: u32, period: Duration) -> Self {
        self.count = count;
        self.period = period;
        self
    }

    fn duration(&self) -> Duration {
        self.period * self.count
    }

    /// The generator, in the stranger's namespace.
    fn command(&self, lab: &HaLab) -> Result<Command> {
        let (destination, mac) = match self.to {
            To::Multicast => (MULTICAST_GROUP, None),
            To::Unicast(member) => (member.address(), Some(format_mac(&lab.mac(member)?))),
        };
        let mut command = lab.base().stranger().command(PYTHON);
        command
            .arg(scripts_dir().join("vrrp_adverts.py"))
            .args(["--iface", "eth0"])
            .args(["--src-ip", &self.source.to_string()])
            .args(["--dst-ip", &destination.to_string()])
            .args(["--vrid", &VRID.to_string()])
            .args(["--priority", &self.priority.to_string()])
            .args(["--interval", &self.interval_centis.to_string()])
            .args(["--count", &self.count.to_string()])
            .args(["--period", &self.period.as_secs_f64().to_string()]);
        if let Some(mac) = mac {
            command.args(["--dst-mac", &mac]);
        }
        for address in &self.addresses {
            command.args(["--address", &address.to_string()]);
        }
        Ok(command)
    }

    /// Starts it in the background; returns once its first advert is about to leave.
    fn start(&self, lab: &HaLab) -> Result<Background> {
        let mut generator = Background::spawn(&mut self.command(lab)?)?;
        let first = generator.line(Duration::from_secs(20))?;
        ensure!(
            first.as_deref() == Some("ready"),
            "`{}`: the generator said {first:?}",
            self.what
        );
        Ok(generator)
    }
}

/// Waits for a generator to finish, checks it sent everything, and returns when its last
/// advert left.
fn finished(generator: Background, attack: &Attack) -> Result<SystemTime> {
    let done = generator.wait(attack.duration() + Duration::from_secs(10))?;
    let prefix = format!("sent {} last ", attack.count);
    let last = done
        .stdout
        .iter()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|seconds| seconds.parse::<f64>().ok());
    match last {
        Some(seconds) if done.status.success() => {
            Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds))
        }
        _ => anyhow::bail!(
            "`{}`: {} {:?} {}",
            attack.what,
            done.status,
            done.stdout,
            done.stderr
        ),
    }
}

/// Runs `attack` while sampling `master`'s status (every sample must show it master);
/// returns the number of samples and when its last advert left.
fn under_attack(lab: &HaLab, attack: &Attack, master: Member) -> Result<(usize, SystemTime)> {
    let generator = attack.start(lab)?;
    let until = Instant::now() + attack.duration();
    let mut samples = 0;
    while Instant::now() < until {
        let s = seen(lab, master)?;
        ensure!(
            s.is_master(),
            "during `{}`, {} reports {s:?}\n{}",
            attack.what,
            master.name(),
            lab.evidence()
        );
        samples += 1;
        thread::sleep(Duration::from_millis(25));
    }
    let last = finished(generator, attack)?;
    Ok((samples, last))
}

/// `ping` from the router to the floating IP every 20 ms, each reply timestamped (`-D`) into
/// a file. Stopped with SIGINT (ping then writes out everything); killed if dropped.
struct Pinger {
    child: Option<Child>,
    out: PathBuf,
}

impl Pinger {
    fn start(router: &NetNs, out: &Path) -> Result<Self> {
        let file = fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let child = router
            .command("ping")
            .args(["-n", "-D", "-i", "0.02", "-W", "1", "-I", "eth0"])
            .arg(FLOATING_IP.to_string())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .context("starting ping in the router's namespace")?;
        Ok(Self {
            child: Some(child),
            out: out.to_owned(),
        })
    }

    /// Waits for its first reply: the router reaches the floating IP.
    fn wait_reply(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while !fs::read_to_string(&self.out)?.contains("bytes from") {
            ensure!(
                Instant::now() < deadline,
                "the router got no reply from the floating IP within {timeout:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Stops it and returns the times of the replies.
    fn stop(mut self) -> Result<Vec<SystemTime>> {
        let mut child = self.child.take().context("already stopped")?;
        // `ip netns exec` execs ping: the child is ping itself.
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: kill has no memory preconditions; the pid is our own running child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        child.wait()?;
        let text = fs::read_to_string(&self.out)?;
        Ok(text
            .lines()
            .filter(|line| line.contains("bytes from"))
            .filter_map(|line| {
                let stamp = line.strip_prefix('[')?.split(']').next()?;
                let seconds: f64 = stamp.parse().ok()?;
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds))
            })
            .collect())
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The longest time within `[from, to]` without a reply.
fn longest_silence(replies: &[SystemTime], from: SystemTime, to: SystemTime) -> Duration {
    let mut points = vec![from];
    points.extend(replies.iter().copied().filter(|t| *t > from && *t < to));
    points.push(to);
    points
        .windows(2)
        .filter_map(|w| w[1].duration_since(w[0]).ok())
        .max()
        .unwrap_or_default()
}

/// A converged lab with gw1 (priority 200) master.
fn converged(tag: &str, unicast: bool) -> Result<HaLab> {
    let mut lab = HaLab::new(
        tag,
        HaConfig {
            unicast,
            ..HaConfig::default()
        },
    )?;
    let master = lab.start_both()?;
    ensure!(
        master == Member::Gw1,
        "{} is master; gw1 has the higher priority\n{}",
        master.name(),
        lab.evidence()
    );
    Ok(lab)
}

/// Checks the refusals `member` counted over an attack: exactly `expected` (reason, count),
/// nothing else.
fn refusals(
    member: Member,
    attack: &Attack,
    before: &Seen,
    after: &Seen,
    expected: &[(&str, u64)],
) -> Result<()> {
    let grown = after.refused_since(before);
    let expected: BTreeMap<String, u64> = expected
        .iter()
        .map(|(reason, n)| ((*reason).to_owned(), *n))
        .collect();
    eprintln!("   {} refused {grown:?}", member.name());
    ensure!(
        grown == expected,
        "`{}`: {} refused {grown:?}, expected {expected:?}",
        attack.what,
        member.name()
    );
    Ok(())
}

#[test]
fn with_peers_a_stranger_never_takes_the_floating_ip_from_the_master() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let lab = converged("hostile", true)?;
    let (gw1, gw2) = (Member::Gw1, Member::Gw2);
    let start = seen(&lab, gw1)?;
    let pinger = Pinger::start(lab.base().router(), &lab.base().workdir().join("ping.txt"))?;
    pinger.wait_reply(Duration::from_secs(5))?;
    let attacked_at = SystemTime::now();

    // (attack, the refusals gw1 and gw2 must count: exactly these.)
    let n = 100;
    let attacks: Vec<(Attack, Refusals, Refusals)> = vec![
        (
            Attack::new(
                "the stranger at priority 254, 4095 cs, unicast to the master",
                STRANGER_ADDRESS,
                To::Unicast(gw1),
                254,
                4095,
            ),
            vec![("not_peer", n)],
            vec![],
        ),
        (
            Attack::new(
                "the stranger at priority 254, 4095 cs, without the floating IP, unicast to \
                 the master",
                STRANGER_ADDRESS,
                To::Unicast(gw1),
                254,
                4095,
            )
            .without_floating_ip(),
            vec![("not_peer", n)],
            vec![],
        ),
        (
            Attack::new(
                "the stranger at priority 254, 4095 cs, unicast to the backup",
                STRANGER_ADDRESS,
                To::Unicast(gw2),
                254,
                4095,
            ),
            vec![],
            vec![("not_peer", n)],
        ),
        (
            // With peers the gateways join no multicast group: the kernel drops these
            // before the election sees them.
            Attack::new(
                "the stranger at priority 254, 4095 cs, multicast",
                STRANGER_ADDRESS,
                To::Multicast,
                254,
                4095,
            ),
            vec![],
            vec![],
        ),
        (
            Attack::new(
                "the stranger at priority 254, 4095 cs, without the floating IP, multicast",
                STRANGER_ADDRESS,
                To::Multicast,
                254,
                4095,
            )
            .without_floating_ip(),
            vec![],
            vec![],
        ),
        // gw2 announces its priority (100) over the sealed sync: an advert in its name at
        // any other priority is not gw2's.
        (
            Attack::new(
                "spoofing gw2 at priority 254, unicast to the master",
                GW2_ADDRESS,
                To::Unicast(gw1),
                254,
                10,
            ),
            vec![("unverified", n)],
            vec![],
        ),
        (
            Attack::new(
                "spoofing gw2 at priority 254 without the floating IP, unicast to the master",
                GW2_ADDRESS,
                To::Unicast(gw1),
                254,
                10,
            )
            .without_floating_ip(),
            vec![("unverified", n)],
            vec![],
        ),
        (
            Attack::new(
                "spoofing gw2 at its own priority without the floating IP, unicast to the \
                 master",
                GW2_ADDRESS,
                To::Unicast(gw1),
                100,
                10,
            )
            .without_floating_ip(),
            vec![("address_mismatch", n)],
            vec![],
        ),
        (
            Attack::new(
                "spoofing gw2 at its own priority, unicast to the master",
                GW2_ADDRESS,
                To::Unicast(gw1),
                100,
                10,
            ),
            vec![],
            vec![],
        ),
    ];
    for (attack, at_gw1, at_gw2) in &attacks {
        eprintln!("== {}", attack.what);
        let before = [seen(&lab, gw1)?, seen(&lab, gw2)?];
        let (samples, ended) = under_attack(&lab, attack, gw1)?;
        let after = [seen_after(&lab, gw1, ended)?, seen_after(&lab, gw2, ended)?];
        eprintln!(
            "   gw1 master in {samples} samples during it and after it; adverts sent {}, \
             gratuitous ARPs {}",
            after[0].adverts_sent - before[0].adverts_sent,
            after[0].gratuitous_arps_sent - before[0].gratuitous_arps_sent
        );
        ensure!(
            after[0].is_master(),
            "after `{}` gw1 reports {:?}\n{}",
            attack.what,
            after[0],
            lab.evidence()
        );
        ensure!(
            after[1].state == "backup" && after[1].master_address == Some(GW_ADDRESS),
            "after `{}` gw2 reports {:?}",
            attack.what,
            after[1]
        );
        refusals(gw1, attack, &before[0], &after[0], at_gw1)?;
        refusals(gw2, attack, &before[1], &after[1], at_gw2)?;
        if attack.priority < 200 && at_gw1.is_empty() {
            // A lower advert at the master: it reasserts, at most once per 100 ms, with a
            // fresh gratuitous ARP each time: about 20 in these 2 s, against 2 s / 1 s of
            // an undisturbed burst (none at all once the first burst is over).
            let garps = after[0].gratuitous_arps_sent - before[0].gratuitous_arps_sent;
            ensure!(
                garps >= 10,
                "gw1 sent only {garps} gratuitous ARPs while a lower advert came every 20 ms"
            );
        }
    }

    eprintln!("== priority 0 spoofing the master, unicast to the backup");
    // The one advert the rules cannot tell from gw1's own: gw2 takes over after Skew_Time
    // (when no advert of gw1 re-arms its timer first); gw1 hears it, reasserts at once, and
    // gw2 yields.
    let zero = Attack::new(
        "priority 0 spoofing the master, unicast to the backup",
        GW_ADDRESS,
        To::Unicast(gw2),
        0,
        10,
    )
    .paced(30, Duration::from_millis(130));
    let before = [seen(&lab, gw1)?, seen(&lab, gw2)?];
    let (samples, ended) = under_attack(&lab, &zero, gw1)?;
    let after = [seen_after(&lab, gw1, ended)?, seen_after(&lab, gw2, ended)?];
    eprintln!(
        "   gw1 master in {samples} samples; gw2 transitions {} → {}; gw1 gratuitous ARPs +{}",
        before[1].transitions,
        after[1].transitions,
        after[0].gratuitous_arps_sent - before[0].gratuitous_arps_sent
    );
    ensure!(after[0].is_master(), "gw1 reports {:?}", after[0]);
    refusals(gw1, &zero, &before[0], &after[0], &[])?;
    refusals(gw2, &zero, &before[1], &after[1], &[])?;

    // A last look after a full Master_Down_Interval: gw2 follows gw1 again.
    thread::sleep(Duration::from_millis(500));
    let attack_ended = SystemTime::now();
    let replies = pinger.stop()?;
    let end = [
        seen_after(&lab, gw1, attack_ended)?,
        seen_after(&lab, gw2, attack_ended)?,
    ];
    ensure!(
        end[0].is_master() && end[1].state == "backup" && end[1].master_address == Some(GW_ADDRESS),
        "at the end: gw1 {:?}, gw2 {:?}",
        end[0],
        end[1]
    );
    // gw1 never changed state: not one transition since before the first attack. (Each
    // snapshot turns the monotonic time of the last transition into wall time anew, so
    // that may move by a millisecond of rounding.)
    let moved = end[0]
        .last_transition
        .duration_since(start.last_transition)
        .or_else(|e| Ok::<_, anyhow::Error>(e.duration()))?;
    ensure!(
        end[0].transitions == start.transitions && moved <= Duration::from_millis(2),
        "gw1 changed state during the attacks: {start:?} → {:?}",
        end[0]
    );
    let silence = longest_silence(&replies, attacked_at, attack_ended);
    eprintln!(
        "   the router's pings: {} replies over {:.1?}, longest silence {}",
        replies
            .iter()
            .filter(|t| **t > attacked_at && **t < attack_ended)
            .count(),
        attack_ended.duration_since(attacked_at).unwrap_or_default(),
        millis(Some(silence))
    );
    ensure!(
        silence < MAX_OUTAGE,
        "the floating IP went unanswered for {} (limit {})",
        millis(Some(silence)),
        millis(Some(MAX_OUTAGE))
    );
    Ok(())
}

#[test]
fn no_advert_stretches_the_wait_for_a_dead_master() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut lab = converged("stretch", true)?;
    let (gw1, gw2) = (Member::Gw1, Member::Gw2);
    let down = lab.config().master_down_interval(gw2);
    // In gw1's name, at its own priority, claiming a 40.95 s interval: gw2 accepts them.
    let stretch = Attack::new(
        "spoofing the master at its priority with Max Adver Int 4095 cs, unicast to the backup",
        GW_ADDRESS,
        To::Unicast(gw2),
        200,
        4095,
    )
    .paced(150, Duration::from_millis(20));
    eprintln!("== {}", stretch.what);
    let before = lab.snapshot(gw2)?;
    let generator = stretch.start(&lab)?;
    lab.wait_snapshot(
        gw2,
        "accepting the stretched adverts",
        Duration::from_secs(5),
        |s| s.grew(&before, "/floating_ips/0/adverts_received") >= 20,
    )?;
    let killed_at = lab.kill(gw1)?;
    // While they come, gw2 cannot tell them from gw1's: it waits (VRRPv3 has no
    // authentication; see docs/failover.md).
    thread::sleep(Duration::from_secs(1));
    let waiting = seen_after(&lab, gw2, killed_at + Duration::from_millis(500))?;
    ensure!(
        waiting.state == "backup",
        "gw2 took over while adverts in gw1's name still came: {waiting:?}"
    );
    let last = finished(generator, &stretch)?;
    lab.wait_master(gw2, Duration::from_secs(10))?;
    let view = seen(&lab, gw2)?;
    let after = view
        .last_transition
        .duration_since(last)
        .unwrap_or_default();
    eprintln!(
        "   gw1 killed; gw2 waited while the adverts came, and took over {} after the last \
         (its Master_Down_Interval {}; unclamped it would be about 147.8 s)",
        millis(Some(after)),
        millis(Some(down))
    );
    // Give or take the LAN, the election loop's wake-up and the millisecond of the record.
    ensure!(
        after <= down + TIMER_SLACK,
        "gw2 took over {} after the last advert, beyond its Master_Down_Interval {}\n{}",
        millis(Some(after)),
        millis(Some(down)),
        lab.evidence()
    );
    Ok(())
}

#[test]
fn without_peers_the_rules_still_refuse_and_no_outage_outlasts_our_own_interval() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let lab = converged("hostmc", false)?;
    let (gw1, gw2) = (Member::Gw1, Member::Gw2);
    let n = 100;

    let without = Attack::new(
        "the stranger at priority 254, 4095 cs, without the floating IP, multicast",
        STRANGER_ADDRESS,
        To::Multicast,
        254,
        4095,
    )
    .without_floating_ip();
    let zero = Attack::new(
        "the stranger at priority 0, multicast",
        STRANGER_ADDRESS,
        To::Multicast,
        0,
        10,
    );
    for (attack, at_gw1, at_gw2) in [
        (
            &without,
            vec![("address_mismatch", n)],
            vec![("address_mismatch", n)],
        ),
        // The master reasserts against it; the backup refuses it.
        (&zero, vec![], vec![("zero_not_from_master", n)]),
    ] {
        eprintln!("== {}", attack.what);
        let before = [seen(&lab, gw1)?, seen(&lab, gw2)?];
        let (samples, ended) = under_attack(&lab, attack, gw1)?;
        let after = [seen_after(&lab, gw1, ended)?, seen_after(&lab, gw2, ended)?];
        eprintln!("   gw1 master in {samples} samples during it and after it");
        ensure!(after[0].is_master(), "gw1 reports {:?}", after[0]);
        ensure!(
            after[1].state == "backup" && after[1].master_address == Some(GW_ADDRESS),
            "gw2 reports {:?}",
            after[1]
        );
        refusals(gw1, attack, &before[0], &after[0], &at_gw1)?;
        refusals(gw2, attack, &before[1], &after[1], &at_gw2)?;
    }

    // The limit of multicast mode: a host at priority 254 with the floating IP is as good
    // as a gateway. It holds the address while it advertises; once it stops, gw1 claims it
    // back within its own Master_Down_Interval, whatever interval the host advertised.
    let taken = Attack::new(
        "the stranger at priority 254, 4095 cs, with the floating IP, multicast",
        STRANGER_ADDRESS,
        To::Multicast,
        254,
        4095,
    );
    eprintln!("== {}", taken.what);
    let down = lab.config().master_down_interval(gw1);
    let generator = taken.start(&lab)?;
    lab.wait_snapshot(gw1, "yielding to the stranger", taken.duration(), |s| {
        s.body
            .pointer("/floating_ips/0/state")
            .and_then(Value::as_str)
            == Some("backup")
    })?;
    let during = seen(&lab, gw1)?;
    ensure!(
        !during.is_master() && during.master_address == Some(STRANGER_ADDRESS),
        "gw1 did not yield to the stranger, as multicast mode must: {during:?}"
    );
    let last = finished(generator, &taken)?;
    lab.wait_master(gw1, Duration::from_secs(10))?;
    let back = seen(&lab, gw1)?;
    let after = back
        .last_transition
        .duration_since(last)
        .unwrap_or_default();
    eprintln!(
        "   gw1 yielded while the stranger advertised, and claimed the address {} after its \
         last advert (its Master_Down_Interval {}; the advertised interval would make it \
         about 131.8 s)",
        millis(Some(after)),
        millis(Some(down))
    );
    ensure!(
        after <= down + TIMER_SLACK,
        "gw1 claimed the address {} after the stranger's last advert; its own \
         Master_Down_Interval is {}",
        millis(Some(after)),
        millis(Some(down))
    );
    Ok(())
}
