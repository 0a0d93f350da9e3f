//! One VRRPv3 virtual router (RFC 5798 section 6), for one floating IP.
//!
//! A pure state machine: the shell feeds it adverts for its VRID and the time, and carries
//! out the [`Action`]s it returns. Timers are values ([`Instance::poll_at`]), never sleeps.
//!
//! - **Backup** listens. Each accepted advert re-arms the Master_Down_Timer
//!   (3 × Master_Adver_Interval + Skew_Time); when it runs out, the instance becomes master.
//!   With preemption on, an advert of lower priority than ours does not re-arm it, so its
//!   sender is overthrown when the timer runs out.
//! - **Master** owns the address and advertises every Advertisement_Interval. It yields to
//!   an advert of higher priority, or of equal priority from a higher primary address
//!   (which is also how two masters resolve after a partition heals: the loser yields at
//!   the winner's first advert, nothing flaps). Yielding, it sends a priority-0 advert,
//!   so that the winner reasserts (below) even when the loser never advertised to it
//!   first, and the LAN, which followed the loser's announcements, points back to the
//!   winner.
//! - **Leaving** (shutdown) as master sends an advert of priority 0, on which a backup
//!   waits only Skew_Time before taking over.
//!
//! Within what the RFC allows a receiver, this instance is stricter than its letter, so
//! that a host on the LAN cannot take the address away by advertising:
//! - an advert whose address list does not hold the floating IP is refused
//!   ([`AdvertError::AddressMismatch`]; the RFC says a receiver MAY check it, keepalived
//!   does);
//! - Master_Adver_Interval learned from an advert is at most our own Advertisement_Interval,
//!   so no advert stretches our Master_Down_Interval beyond that of our own configuration
//!   (a 4095 cs advert would otherwise leave the address unanswered for about two minutes
//!   once its sender goes quiet);
//! - a backup honours priority 0 (wait Skew_Time only) from the current master alone
//!   ([`AdvertError::ZeroNotFromMaster`]);
//! - a master that hears an advert it does not yield to (lower priority, equal priority
//!   from a lower address, or priority 0) reasserts at once: it advertises and asks the
//!   shell to announce the address again by gratuitous ARP ([`Action::Reannounce`]), as
//!   keepalived's `garp_lower_prio_repeat` does, so that switches and the router point
//!   back to it. It does so at most once per Advertisement_Interval; one more heard within
//!   that time is answered with the next regular advert.
//!
//! [`Instance::master`] is the source of the latest accepted advert of priority > 0 (only
//! a master advertises one), whether or not it re-armed the timer; our own address while
//! master.
//!
//! A gateway never owns the address in the RFC's sense (priority 255), so the instance
//! always starts as backup and waits a whole Master_Down_Interval before claiming it.

use core::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};

use crate::wire::vrrp::{Advert, AdvertError};

/// What an instance is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub vrid: u8,
    /// The floating IP, carried in the adverts.
    pub address: Ipv4Addr,
    /// 1..=254.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds, 1..=4095.
    pub interval_centis: u16,
    pub preempt: bool,
    /// This gateway's primary address: the adverts' source, and the tie-breaker.
    pub primary: Ipv4Addr,
}

/// RFC 5798's three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Initialize,
    Backup,
    Master,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
        }
    }
}

/// What the shell must do for an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this advert now.
    Advertise(Advert),
    /// Became master: answer ARP for the address, forward its traffic, announce it by
    /// gratuitous ARP.
    Own,
    /// No longer master: go silent for the address at once.
    Release,
    /// Still master, but another gateway believed it was: announce the address again by
    /// gratuitous ARP at once (a new burst), so that the LAN points back to this gateway.
    Reannounce,
}

/// Counters of one instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
}

/// One virtual router.
#[derive(Debug, Clone)]
pub struct Instance {
    params: Params,
    state: State,
    /// The master's advert interval as last heard (ours while master), centiseconds.
    master_interval: u16,
    /// Master_Down_Timer (backup) or Adver_Timer (master).
    timer: Option<Instant>,
    /// The current master's primary address, when known.
    master: Option<Ipv4Addr>,
    /// As master: when it last reasserted itself, and whether it owes a reassertion with
    /// its next advert (one more lower advert heard within an interval of the last).
    reasserted: Option<Instant>,
    reassert_pending: bool,
    last_transition: Option<Instant>,
    counters: Counters,
}

fn centis(c: u64) -> Duration {
    Duration::from_millis(c * 10)
}

impl Instance {
    pub fn new(params: Params) -> Instance {
        let master_interval = params.interval_centis;
        Instance {
            params,
            state: State::Initialize,
            master_interval,
            timer: None,
            master: None,
            reasserted: None,
            reassert_pending: false,
            last_transition: None,
            counters: Counters::default(),
        }
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The master's primary address as this instance knows it (its own when master).
    pub fn master(&self) -> Option<Ipv4Addr> {
        self.master
    }

    pub fn last_transition(&self) -> Option<Instant> {
        self.last_transition
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Skew_Time: ((256 − Priority) × Master_Adver_Interval) / 256.
    fn skew(&self) -> Duration {
        let p = u64::from(self.params.priority);
        Duration::from_micros((256 - p) * u64::from(self.master_interval) * 10_000 / 256)
    }

    /// Advertisement_Interval: how often a master advertises.
    fn advert_interval(&self) -> Duration {
        centis(u64::from(self.params.interval_centis))
    }

    /// Master_Down_Interval: 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        centis(3 * u64::from(self.master_interval)) + self.skew()
    }

    /// The next time [`poll`](Self::poll) has something to do.
    pub fn poll_at(&self) -> Option<Instant> {
        self.timer
    }

    /// The Startup event: become backup and wait for a master.
    pub fn start(&mut self, now: Instant) {
        if self.state == State::Initialize {
            self.master_interval = self.params.interval_centis;
            self.become_backup(now, None);
            self.timer = Some(now + self.master_down_interval());
        }
    }

    /// The Shutdown event: a master hands over at once with a priority-0 advert.
    pub fn shutdown(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.state == State::Master {
            self.advertise(0, out);
            out.push(Action::Release);
        }
        if self.state != State::Initialize {
            self.transition(now, State::Initialize);
        }
        self.timer = None;
        self.master = None;
    }

    /// Runs the timer that is due, if any.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Action>) {
        let Some(at) = self.timer else { return };
        if now < at {
            return;
        }
        match self.state {
            State::Backup => {
                // Master_Down_Timer: nobody better is advertising.
                self.advertise(self.params.priority, out);
                self.master_interval = self.params.interval_centis;
                self.transition(now, State::Master);
                self.master = Some(self.params.primary);
                self.timer = Some(now + self.advert_interval());
                out.push(Action::Own);
            }
            State::Master => {
                self.advertise(self.params.priority, out);
                self.timer = Some(now + self.advert_interval());
                if self.reassert_pending {
                    self.reassert_pending = false;
                    self.reasserted = Some(now);
                    out.push(Action::Reannounce);
                }
            }
            State::Initialize => self.timer = None,
        }
    }

    /// An advert for this instance's VRID, already checked on the wire (and against the
    /// peers, by [`crate::election::Election`]), from `source`. Refused adverts change
    /// nothing and say why.
    ///
    /// # Errors
    ///
    /// [`AdvertError::AddressMismatch`] when the advert does not list the floating IP,
    /// [`AdvertError::ZeroNotFromMaster`] for priority 0 at a backup from another than
    /// the master it follows.
    pub fn handle_advert(
        &mut self,
        now: Instant,
        source: Ipv4Addr,
        advert: &Advert,
        out: &mut Vec<Action>,
    ) -> Result<(), AdvertError> {
        if advert.vrid != self.params.vrid || source == self.params.primary {
            return Ok(());
        }
        if !advert.addresses.contains(&self.params.address) {
            return Err(AdvertError::AddressMismatch);
        }
        if advert.priority == 0 && self.state == State::Backup && self.master != Some(source) {
            return Err(AdvertError::ZeroNotFromMaster);
        }
        self.counters.adverts_received += 1;
        match self.state {
            State::Initialize => {}
            State::Backup => {
                if advert.priority == 0 {
                    // The master is leaving: take over after Skew_Time only.
                    self.timer = Some(now + self.skew());
                } else {
                    // Only a master advertises: whether or not we let it be.
                    self.master = Some(source);
                    if !self.params.preempt || advert.priority >= self.params.priority {
                        self.master_interval = self.learnt_interval(advert);
                        self.timer = Some(now + self.master_down_interval());
                    }
                    // Else preempting a lower priority: let the timer run out.
                }
            }
            State::Master => {
                if advert.priority > self.params.priority
                    || (advert.priority == self.params.priority
                        && u32::from(source) > u32::from(self.params.primary))
                {
                    // Leaving master state, it says so as on shutdown (priority 0): the
                    // winner hears an advert it does not yield to and announces the address
                    // again. Without it, when the winner's advert arrives first (a
                    // partition healing), nobody corrects the ARP entries the LAN took from
                    // this gateway's own announcements, and the address's traffic keeps
                    // coming to a backup. Priority 0, not its own (keepalived's
                    // vrrp_higher_prio_send_advert): other backups refuse it from anyone
                    // but their master, so none starts following the gateway that yields.
                    self.advertise(0, out);
                    self.master_interval = self.learnt_interval(advert);
                    self.become_backup(now, Some(source));
                    self.timer = Some(now + self.master_down_interval());
                    out.push(Action::Release);
                } else {
                    // Someone believes it is master, or left believing so: it yields at
                    // our advert, and the LAN follows our gratuitous ARP.
                    self.reassert(now, out);
                }
            }
        }
        Ok(())
    }

    /// As master, on an advert it does not yield to: advertise and announce at once, at
    /// most once per Advertisement_Interval; within it, with the next regular advert.
    fn reassert(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self
            .reasserted
            .is_some_and(|at| now < at + self.advert_interval())
        {
            self.reassert_pending = true;
            return;
        }
        self.reasserted = Some(now);
        self.reassert_pending = false;
        self.advertise(self.params.priority, out);
        self.timer = Some(now + self.advert_interval());
        out.push(Action::Reannounce);
    }

    /// Master_Adver_Interval from an advert: never longer than our own interval, so that
    /// no advert stretches our Master_Down_Interval; never 0.
    fn learnt_interval(&self, advert: &Advert) -> u16 {
        advert
            .interval_centis
            .clamp(1, self.params.interval_centis.max(1))
    }

    /// Takes new settings (priority, advert interval, preemption) and keeps its state: a
    /// master stays master until a better advert says otherwise, and advertises its new
    /// priority and interval from its next advert.
    pub fn set_params(&mut self, params: Params) {
        debug_assert_eq!(params.vrid, self.params.vrid);
        self.params = params;
        self.params.priority = self.params.priority.clamp(1, 254);
        if self.state == State::Master {
            self.master_interval = self.params.interval_centis;
        }
    }

    /// Changes this instance's priority (from `priority = "auto"` when the set of gateways
    /// changes). A master that is no longer the best learns it from the next better advert;
    /// a backup that now outranks the master takes over when its timer runs out.
    pub fn set_priority(&mut self, priority: u8) {
        self.params.priority = priority.clamp(1, 254);
    }

    fn advertise(&mut self, priority: u8, out: &mut Vec<Action>) {
        self.counters.adverts_sent += 1;
        out.push(Action::Advertise(Advert {
            vrid: self.params.vrid,
            priority,
            interval_centis: self.params.interval_centis,
            addresses: vec![self.params.address],
        }));
    }

    fn become_backup(&mut self, now: Instant, master: Option<Ipv4Addr>) {
        self.transition(now, State::Backup);
        self.master = master;
        self.reasserted = None;
        self.reassert_pending = false;
    }

    fn transition(&mut self, now: Instant, to: State) {
        if self.state != to {
            self.state = to;
            self.last_transition = Some(now);
            self.counters.transitions += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 11);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 12);
    const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 13);
    const FLOATING: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);

    fn params(priority: u8, preempt: bool) -> Params {
        Params {
            vrid: 10,
            address: Ipv4Addr::new(192, 168, 1, 100),
            priority,
            interval_centis: 100,
            preempt,
            primary: ME,
        }
    }

    fn advert(priority: u8) -> Advert {
        Advert {
            vrid: 10,
            priority,
            interval_centis: 100,
            addresses: vec![Ipv4Addr::new(192, 168, 1, 100)],
        }
    }

    fn at(ms: i64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn master_down_interval_follows_the_rfc() {
        // Priority 100, 1 s: 3 s + (156 × 100 / 256) cs = 3.609375 s.
        let i = Instance::new(params(100, true));
        assert_eq!(i.master_down_interval(), Duration::from_micros(3_609_375));
        // Priority 254 at 10 ms: 30 ms + 2 × 1 / 256 cs = 30.078125 ms.
        let mut p = params(254, true);
        p.interval_centis = 1;
        assert_eq!(
            Instance::new(p).master_down_interval(),
            Duration::from_micros(30_078)
        );
    }

    #[test]
    fn a_lone_backup_becomes_master_after_the_down_interval_and_then_advertises() {
        let mut i = Instance::new(params(100, true));
        let mut out = Vec::new();
        i.start(at(0));
        assert_eq!(i.state(), State::Backup);
        i.poll(at(3609), &mut out);
        assert!(out.is_empty());
        i.poll(at(3610), &mut out);
        assert_eq!(i.state(), State::Master);
        assert_eq!(out, vec![Action::Advertise(advert(100)), Action::Own]);
        assert_eq!(i.poll_at(), Some(at(4610)));
        out.clear();
        i.poll(at(4610), &mut out);
        assert_eq!(out, vec![Action::Advertise(advert(100))]);
    }

    #[test]
    fn a_backup_hearing_the_master_never_takes_over() {
        let mut i = Instance::new(params(100, true));
        let mut out = Vec::new();
        i.start(at(0));
        for t in (0..20_000).step_by(1000) {
            assert_eq!(i.handle_advert(at(t), PEER, &advert(150), &mut out), Ok(()));
            i.poll(at(t + 999), &mut out);
        }
        assert_eq!(i.state(), State::Backup);
        assert_eq!(i.master(), Some(PEER));
        assert!(out.is_empty());
    }

    #[test]
    fn preemption_overthrows_a_lower_master_and_without_it_the_master_stays() {
        let mut out = Vec::new();
        let mut pre = Instance::new(params(200, true));
        pre.start(at(0));
        assert_eq!(
            pre.handle_advert(at(100), PEER, &advert(100), &mut out),
            Ok(())
        );
        // The timer is not re-armed: the one armed at start runs out at 3 s + 56/256 s.
        assert_eq!(pre.poll_at(), Some(at(0) + pre.master_down_interval()));
        // Yet the lower gateway is master until then, and the status says so.
        assert_eq!(pre.master(), Some(PEER));
        assert_eq!(pre.counters().adverts_received, 1);
        let mut calm = Instance::new(params(200, false));
        calm.start(at(0));
        assert_eq!(
            calm.handle_advert(at(100), PEER, &advert(100), &mut out),
            Ok(())
        );
        assert_eq!(calm.poll_at(), Some(at(100) + calm.master_down_interval()));
        assert_eq!(calm.master(), Some(PEER));
        // The preempting one takes over when its timer runs out, and is master itself.
        pre.poll(at(0) + pre.master_down_interval(), &mut out);
        assert_eq!(pre.state(), State::Master);
        assert_eq!(pre.master(), Some(ME));
    }

    #[test]
    fn a_master_yields_to_higher_priority_then_to_a_higher_address_on_a_tie() {
        let mut out = Vec::new();
        let mut i = Instance::new(params(100, true));
        i.start(at(0));
        i.poll(at(4000), &mut out);
        assert_eq!(i.state(), State::Master);
        out.clear();
        // Lower priority, or equal from a lower address: not yielded to (reasserted, see
        // below).
        assert_eq!(
            i.handle_advert(at(4100), PEER, &advert(99), &mut out),
            Ok(())
        );
        assert_eq!(
            i.handle_advert(
                at(4100),
                Ipv4Addr::new(192, 168, 1, 5),
                &advert(100),
                &mut out,
            ),
            Ok(())
        );
        assert_eq!(i.state(), State::Master);
        assert!(!out.contains(&Action::Release));
        out.clear();
        // Equal from a higher address: yield.
        assert_eq!(
            i.handle_advert(at(4200), PEER, &advert(100), &mut out),
            Ok(())
        );
        assert_eq!(i.state(), State::Backup);
        assert_eq!(out, vec![Action::Advertise(advert(0)), Action::Release]);
        assert_eq!(i.master(), Some(PEER));
        assert_eq!(i.last_transition(), Some(at(4200)));
        assert_eq!(i.counters().transitions, 3);
    }

    #[test]
    fn shutdown_sends_priority_zero_and_the_backup_takes_over_after_skew_time() {
        let mut out = Vec::new();
        let mut master = Instance::new(params(100, true));
        master.start(at(0));
        master.poll(at(4000), &mut out);
        out.clear();
        master.shutdown(at(5000), &mut out);
        assert_eq!(out, vec![Action::Advertise(advert(0)), Action::Release]);
        assert_eq!(master.state(), State::Initialize);
        assert_eq!(master.poll_at(), None);

        let mut p = params(100, true);
        p.primary = PEER;
        let mut backup = Instance::new(p);
        backup.start(at(0));
        assert_eq!(
            backup.handle_advert(at(4000), ME, &advert(100), &mut out),
            Ok(())
        );
        assert_eq!(
            backup.handle_advert(at(5000), ME, &advert(0), &mut out),
            Ok(())
        );
        // Skew_Time at priority 100, 1 s: 609.375 ms.
        assert_eq!(
            backup.poll_at(),
            Some(at(5000) + Duration::from_micros(609_375))
        );
    }

    #[test]
    fn its_own_adverts_and_other_vrids_are_ignored() {
        let mut out = Vec::new();
        let mut i = Instance::new(params(100, true));
        i.start(at(0));
        assert_eq!(i.handle_advert(at(10), ME, &advert(200), &mut out), Ok(()));
        let mut other = advert(200);
        other.vrid = 11;
        assert_eq!(i.handle_advert(at(10), PEER, &other, &mut out), Ok(()));
        assert_eq!(i.master(), None);
        assert_eq!(i.counters().adverts_received, 0);
    }

    /// An instance that became master at 4 s, its actions cleared.
    fn master(priority: u8) -> (Instance, Vec<Action>) {
        let mut i = Instance::new(params(priority, true));
        let mut out = Vec::new();
        i.start(at(0));
        i.poll(at(4000), &mut out);
        assert_eq!(i.state(), State::Master);
        out.clear();
        (i, out)
    }

    /// A backup that follows PEER since `t` ms.
    fn following(t: i64) -> Instance {
        let mut i = Instance::new(params(100, true));
        let mut out = Vec::new();
        i.start(at(0));
        assert_eq!(i.handle_advert(at(t), PEER, &advert(200), &mut out), Ok(()));
        assert_eq!(i.master(), Some(PEER));
        assert!(out.is_empty());
        i
    }

    #[test]
    fn an_advert_without_the_floating_ip_is_refused_and_changes_nothing() {
        let without = Advert {
            addresses: vec![Ipv4Addr::new(192, 168, 1, 101), Ipv4Addr::new(10, 0, 0, 1)],
            ..advert(254)
        };
        // At a master: no yielding.
        let (mut m, mut out) = master(100);
        assert_eq!(
            m.handle_advert(at(4100), PEER, &without, &mut out),
            Err(AdvertError::AddressMismatch)
        );
        assert_eq!(m.state(), State::Master);
        assert!(out.is_empty());
        assert_eq!(m.counters().adverts_received, 0);
        // At a backup: neither a new master nor a re-armed timer.
        let mut b = following(1000);
        let armed = b.poll_at();
        assert_eq!(
            b.handle_advert(at(1500), OTHER, &without, &mut out),
            Err(AdvertError::AddressMismatch)
        );
        assert_eq!((b.master(), b.poll_at()), (Some(PEER), armed));
        // Other addresses beside the floating IP are fine (keepalived may carry several).
        let with = Advert {
            addresses: vec![Ipv4Addr::new(10, 0, 0, 1), FLOATING],
            ..advert(200)
        };
        assert_eq!(b.handle_advert(at(1600), PEER, &with, &mut out), Ok(()));
        assert_eq!(b.poll_at(), Some(at(1600) + b.master_down_interval()));
    }

    #[test]
    fn no_advert_stretches_the_master_down_interval_beyond_our_own() {
        let stretched = Advert {
            interval_centis: 4095,
            ..advert(254)
        };
        let mut out = Vec::new();
        let mut b = Instance::new(params(100, true));
        b.start(at(0));
        let own = b.master_down_interval();
        assert_eq!(
            b.handle_advert(at(100), OTHER, &stretched, &mut out),
            Ok(())
        );
        // 3 × 1 s + Skew_Time at 1 s, not 3 × 40.95 s + 24.95 s.
        assert_eq!(b.master_down_interval(), own);
        assert_eq!(b.poll_at(), Some(at(100) + own));
        // A shorter interval than ours is learnt as it is.
        let quick = Advert {
            interval_centis: 10,
            ..advert(254)
        };
        assert_eq!(b.handle_advert(at(200), OTHER, &quick, &mut out), Ok(()));
        assert_eq!(b.master_down_interval(), Duration::from_micros(360_937));
        // 0 is read as 1 cs, never a zero interval.
        let zero = Advert {
            interval_centis: 0,
            ..advert(254)
        };
        assert_eq!(b.handle_advert(at(300), OTHER, &zero, &mut out), Ok(()));
        assert_eq!(b.master_down_interval(), Duration::from_micros(36_093));
        // A master yielding to a stretched advert waits its own interval too.
        let (mut m, mut out) = master(100);
        assert_eq!(
            m.handle_advert(at(4100), OTHER, &stretched, &mut out),
            Ok(())
        );
        assert_eq!(out, vec![Action::Advertise(advert(0)), Action::Release]);
        assert_eq!(m.poll_at(), Some(at(4100) + own));
    }

    #[test]
    fn priority_zero_is_honoured_from_the_current_master_only() {
        let mut out = Vec::new();
        let mut b = following(1000);
        let armed = b.poll_at();
        // From another host: refused, the timer stays.
        assert_eq!(
            b.handle_advert(at(1100), OTHER, &advert(0), &mut out),
            Err(AdvertError::ZeroNotFromMaster)
        );
        assert_eq!((b.master(), b.poll_at()), (Some(PEER), armed));
        // Before any master is known: refused as well.
        let mut fresh = Instance::new(params(100, true));
        fresh.start(at(0));
        assert_eq!(
            fresh.handle_advert(at(100), PEER, &advert(0), &mut out),
            Err(AdvertError::ZeroNotFromMaster)
        );
        assert_eq!(fresh.poll_at(), Some(at(0) + fresh.master_down_interval()));
        // From the master: Skew_Time only (609.375 ms at priority 100, 1 s).
        assert_eq!(
            b.handle_advert(at(1200), PEER, &advert(0), &mut out),
            Ok(())
        );
        assert_eq!(b.poll_at(), Some(at(1200) + Duration::from_micros(609_375)));
        assert!(out.is_empty());
    }

    #[test]
    fn the_master_is_the_latest_advertiser_a_backup_accepted() {
        let mut out = Vec::new();
        let mut b = following(1000);
        assert_eq!(
            b.handle_advert(at(1100), OTHER, &advert(150), &mut out),
            Ok(())
        );
        assert_eq!(b.master(), Some(OTHER));
        // A lower one too, though a preempting backup does not re-arm its timer for it.
        let armed = b.poll_at();
        assert_eq!(
            b.handle_advert(at(1200), PEER, &advert(50), &mut out),
            Ok(())
        );
        assert_eq!((b.master(), b.poll_at()), (Some(PEER), armed));
        // Priority 0 (leaving) names no new master.
        assert_eq!(
            b.handle_advert(at(1300), PEER, &advert(0), &mut out),
            Ok(())
        );
        assert_eq!(b.master(), Some(PEER));
    }

    #[test]
    fn a_master_hearing_a_lower_advert_reasserts_at_once_at_most_once_per_interval() {
        let (mut m, mut out) = master(100);
        assert_eq!(m.poll_at(), Some(at(5000)));
        // Someone believes it is master at a lower priority: advert and gratuitous ARP now.
        assert_eq!(
            m.handle_advert(at(4300), PEER, &advert(50), &mut out),
            Ok(())
        );
        assert_eq!(
            out,
            vec![Action::Advertise(advert(100)), Action::Reannounce]
        );
        assert_eq!(m.poll_at(), Some(at(5300)));
        out.clear();
        // Within the interval: owed to the next regular advert, not sent at once.
        assert_eq!(
            m.handle_advert(at(4400), PEER, &advert(0), &mut out),
            Ok(())
        );
        // (Equal priority from a lower address.)
        let lower = Ipv4Addr::new(192, 168, 1, 5);
        assert_eq!(
            m.handle_advert(at(4500), lower, &advert(100), &mut out),
            Ok(())
        );
        assert!(out.is_empty());
        m.poll(at(5300), &mut out);
        assert_eq!(
            out,
            vec![Action::Advertise(advert(100)), Action::Reannounce]
        );
        out.clear();
        // Nothing owed any more: the next regular advert is plain.
        m.poll(at(6300), &mut out);
        assert_eq!(out, vec![Action::Advertise(advert(100))]);
        out.clear();
        // A priority-0 advert (someone left believing it was master) reasserts too.
        assert_eq!(
            m.handle_advert(at(6400), PEER, &advert(0), &mut out),
            Ok(())
        );
        assert_eq!(
            out,
            vec![Action::Advertise(advert(100)), Action::Reannounce]
        );
        assert_eq!(m.state(), State::Master);
        assert_eq!(m.master(), Some(ME));
        assert_eq!(m.counters().transitions, 2);
    }
}
