//! The failover lab: two egret gateways on one LAN sharing the floating IP, and the traffic
//! and measurements that show what a failover does to it.
//!
//! ```text
//!  pod ── node 192.168.50.21 ─┐             ┌─ gw1 192.168.50.11 (egret-gateway, priority 200)
//!        (vxlan0 → .100)      ├── lan: br0 ─┼─ gw2 192.168.50.12 (egret-gateway, priority 100,
//!                             │             │        or keepalived in its place)
//!                 (stranger) ─┘             └─ router 192.168.50.1 ── outside 198.51.100.10
//! ```
//!
//! [`HaLab`] is the gateway lab of [`crate::topology`] (its `gw` namespace is gw1) plus a
//! second gateway namespace, `gw2`, on the same bridge. Both run `egret-gateway` with their
//! own config and log in the lab's work directory and their API on their own loopback
//! (127.0.0.1:9477); VRRPv3 decides which of them owns 192.168.50.100 (VRID 10), and
//! `[sync]` streams flow state between them (each listens on its LAN address, port 4801, and
//! sends to the other). Advert interval, priorities, preemption and multicast or unicast
//! adverts come from [`HaConfig`]. keepalived can stand in for gw2 ([`HaLab::start_keepalived`])
//! to show that egret interoperates with another VRRPv3 implementation.
//!
//! Dropping the lab stops every process in it (gateways, keepalived) and then removes the
//! namespaces and the work directory, also during a panic; namespaces carry the per-run
//! prefix of [`crate::run_prefix`].
//!
//! [`HaLab::failover`] is the experiment the tests and `tests/measure/failover` share: with
//! the pod talking to the outside server (a 10 ms messaging connection, a set of slow TCP
//! ping-pongs, UDP flows, a fast UDP ticker; see [`traffic`]), the master fails (SIGKILL,
//! SIGTERM or its LAN link down), and the report says how long the takeover took — from the
//! failure to the first frame the new master forwarded, captured on the router's LAN
//! interface with kernel timestamps on the same clock as the failure instant — and what
//! survived.

mod capture;
mod partition;
mod service;
mod snapshot;
mod traffic;

use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use self::service::{SERVICE_CONFIG_DIR, Service};
pub(crate) use self::traffic::idle;
pub use self::{
    capture::{
        Arp, Capture, Frame, Ipv4Summary, Mac, PROTOCOL_VRRP, arp_request, format_mac, parse_mac,
        sent_by,
    },
    partition::Partition,
    snapshot::{COUNTERS_LAG, NodeEntry, Snapshot},
    traffic::{
        Churn, ChurnCounts, EchoServer, FlowSet, FlowState, Messenger, MessengerReport, Ticker,
        UdpFlows, endpoint,
    },
};
use crate::{
    GatewayLab, NetNs,
    topology::{
        API_LISTEN, FLOATING_IP, GW_ADDRESS, Gateway, OUTSIDE_ADDRESS, POD_ADDRESS,
        ROUTER_LAN_ADDRESS, Stopped, api_request, default_route, disable_ipv6, gateway_binary,
        join_lan, lladdr, tail, terminate,
    },
};

/// gw2's address on the LAN.
pub const GW2_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 12);
/// The VRRP virtual router id of the floating IP.
pub const VRID: u8 = 10;
/// The UDP port of the flow state sync, on each gateway's LAN address.
pub const SYNC_PORT: u16 = 4801;
/// `[nat].port_range`: it leaves out the pod ports below 40000 that the traffic binds, so
/// those flows get a NAT port that differs from the pod's.
pub const NAT_PORT_RANGE: &str = "40000-60000";

/// How long both gateways may take to agree after they start.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Outside server ports of the failover traffic.
const MESSENGER_PORT: u16 = 7300;
const UDP_PORT: u16 = 7400;
const FLOWS_PORT: u16 = 7500;
const TICKER_PORT: u16 = 7600;

/// One of the two gateway hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Member {
    Gw1,
    Gw2,
}

impl Member {
    /// Both, gw1 first.
    pub const BOTH: [Member; 2] = [Member::Gw1, Member::Gw2];

    /// The other one.
    pub fn other(self) -> Member {
        match self {
            Member::Gw1 => Member::Gw2,
            Member::Gw2 => Member::Gw1,
        }
    }

    /// Its address on the LAN: the source of its adverts.
    pub fn address(self) -> Ipv4Addr {
        match self {
            Member::Gw1 => GW_ADDRESS,
            Member::Gw2 => GW2_ADDRESS,
        }
    }

    /// `gw1` or `gw2`: the gateway's `[gateway].name`.
    pub fn name(self) -> &'static str {
        match self {
            Member::Gw1 => "gw1",
            Member::Gw2 => "gw2",
        }
    }

    /// The bridge port in the lan namespace its `eth0` is cabled to.
    pub fn lan_port(self) -> &'static str {
        match self {
            Member::Gw1 => "gw",
            Member::Gw2 => "gw2",
        }
    }

    /// 0 for gw1, 1 for gw2: its place in per-member arrays.
    pub fn index(self) -> usize {
        match self {
            Member::Gw1 => 0,
            Member::Gw2 => 1,
        }
    }
}

/// How the two gateways are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    /// `[election].advert_interval`, a multiple of 10 ms.
    pub advert_interval: Duration,
    /// `[election].priority` of gw1 and gw2.
    pub priorities: [u8; 2],
    /// `[election].preempt`.
    pub preempt: bool,
    /// Unicast adverts to the other gateway (`[election].peers`) instead of multicast.
    pub unicast: bool,
    /// A `[sync]` table in both configs.
    pub sync: bool,
    /// The sync seals its datagrams with a key the lab writes (`[sync].key_file`); false
    /// runs it unauthenticated, as a gateway without a key does.
    pub sync_key: bool,
    /// More `[nat]` keys for both gateways, each a key and its TOML value as written
    /// (`("udp_timeout", "\"2s\"")`), after the lab's `port_range`.
    pub nat: Vec<(String, String)>,
}

impl Default for HaConfig {
    /// 100 ms adverts, gw1 preferred (200 against 100), preemption, multicast, flow sync.
    fn default() -> Self {
        Self {
            advert_interval: Duration::from_millis(100),
            priorities: [200, 100],
            preempt: true,
            unicast: false,
            sync: true,
            sync_key: true,
            nat: Vec::new(),
        }
    }
}

impl HaConfig {
    /// The priority of `member`.
    pub fn priority(&self, member: Member) -> u8 {
        self.priorities[member.index()]
    }

    /// RFC 5798 Skew_Time of `member`: (256 − priority) × Advertisement_Interval / 256.
    pub fn skew_time(&self, member: Member) -> Duration {
        self.advert_interval * (256 - u32::from(self.priority(member))) / 256
    }

    /// RFC 5798 Master_Down_Interval of `member`: 3 × Advertisement_Interval + Skew_Time,
    /// how long it waits in silence before it takes over.
    pub fn master_down_interval(&self, member: Member) -> Duration {
        self.advert_interval * 3 + self.skew_time(member)
    }

    /// The config file of `member`; its sync key, when it has one, is `<workdir>/sync.key`.
    pub fn gateway_config(&self, member: Member, workdir: &Path) -> String {
        let (me, other) = (member.address(), member.other().address());
        let peers = if self.unicast {
            format!("\"{other}\"")
        } else {
            String::new()
        };
        let key = if self.sync_key {
            format!(
                "key_file = \"{}\"\n",
                workdir.join(crate::SYNC_KEY).display()
            )
        } else {
            String::new()
        };
        let sync = if self.sync {
            format!(
                "\n[sync]\nlisten = \"{me}:{SYNC_PORT}\"\npeers = [\"{other}:{SYNC_PORT}\"]\n{key}"
            )
        } else {
            String::new()
        };
        let nat: String = self
            .nat
            .iter()
            .map(|(key, value)| format!("{key} = {value}\n"))
            .collect();
        format!(
            r#"[gateway]
name = "{name}"
interface = "eth0"

[tunnel]
port = 4800
vni = 1
allowed_sources = ["192.168.50.16/28"]

[election]
priority = {priority}
advert_interval = "{interval}ms"
preempt = {preempt}
peers = [{peers}]
garp_count = 3
garp_interval = "100ms"
garp_refresh = "60s"

[[floating_ip]]
address = "{FLOATING_IP}"
vrid = {VRID}

[nat]
port_range = "{NAT_PORT_RANGE}"
{nat}{sync}
[api]
listen = "{API_LISTEN}"
"#,
            name = member.name(),
            priority = self.priority(member),
            interval = self.advert_interval.as_millis(),
            preempt = self.preempt,
        )
    }

    /// A keepalived config in the same VRID, VRRPv3, with this advert interval, preemption
    /// and multicast or unicast (to gw1) as the gateways, for gw2's namespace.
    pub fn keepalived_config(&self, priority: u8) -> String {
        let preempt = if self.preempt { "" } else { "    nopreempt\n" };
        let unicast = if self.unicast {
            format!(
                "    unicast_src_ip {GW2_ADDRESS}\n    unicast_peer {{\n        {GW_ADDRESS}\n    }}\n"
            )
        } else {
            String::new()
        };
        format!(
            "global_defs {{\n    router_id egret-lab\n    vrrp_version 3\n}}\n\n\
             vrrp_instance egret {{\n    state BACKUP\n    interface eth0\n    \
             virtual_router_id {VRID}\n    priority {priority}\n    advert_int {interval}\n\
             {preempt}{unicast}    virtual_ipaddress {{\n        {FLOATING_IP}/32 dev eth0\n    }}\n}}\n",
            interval = self.advert_interval.as_secs_f64(),
        )
    }
}

/// A gateway's view of the floating IP's election, from its `/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Election {
    /// `master`, `backup` or `initialize`.
    pub state: String,
    /// Whether it answers ARP for the floating IP and forwards its traffic.
    pub owned: bool,
    pub master_address: Option<Ipv4Addr>,
    pub priority: u8,
    pub transitions: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub last_transition: SystemTime,
    /// `control.gratuitous_arps_sent`.
    pub gratuitous_arps_sent: u64,
    /// `drops.not_master`.
    pub not_master_drops: u64,
    /// Every reason of `election.adverts_rejected`, summed.
    pub adverts_rejected: u64,
    pub send_errors: u64,
}

impl Election {
    /// Reads the floating IP's entry and the election counters of a `/status` body.
    ///
    /// # Errors
    ///
    /// When the body is not JSON or lacks the floating IP.
    pub fn parse(status: &str) -> Result<Self> {
        let status: Value = serde_json::from_str(status).context("/status is not JSON")?;
        let entry = floating_ip_status(&status)?;
        let FloatingIpRole {
            state,
            owned,
            master_address,
            last_transition,
            ..
        } = FloatingIpRole::parse(entry)?;
        let number = |value: Option<&Value>| value.and_then(Value::as_u64).unwrap_or(0);
        let field = |name: &str| number(entry.get(name));
        let election = status.get("election");
        Ok(Self {
            state,
            owned,
            master_address,
            priority: u8::try_from(field("priority")).unwrap_or(0),
            transitions: field("transitions"),
            adverts_sent: field("adverts_sent"),
            adverts_received: field("adverts_received"),
            last_transition,
            gratuitous_arps_sent: number(status.pointer("/control/gratuitous_arps_sent")),
            not_master_drops: number(status.pointer("/drops/not_master")),
            adverts_rejected: election
                .and_then(|e| e.get("adverts_rejected"))
                .and_then(Value::as_object)
                .map_or(0, |reasons| {
                    reasons.values().filter_map(Value::as_u64).sum()
                }),
            send_errors: number(election.and_then(|e| e.get("send_errors"))),
        })
    }

    /// Master and owning the address.
    pub fn is_master(&self) -> bool {
        self.state == "master" && self.owned
    }
}

/// The lab floating IP's entry in a gateway's `/status` (parsed).
///
/// # Errors
///
/// When the status lists no such floating IP.
pub fn floating_ip_status(status: &Value) -> Result<&Value> {
    let floating = FLOATING_IP.to_string();
    status
        .get("floating_ips")
        .and_then(Value::as_array)
        .and_then(|ips| {
            ips.iter()
                .find(|ip| ip.get("address").and_then(Value::as_str) == Some(&floating))
        })
        .with_context(|| format!("/status lists no floating IP {floating}"))
}

/// A floating IP as one gateway's `/status` shows it (of many, see [`parse_roles`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIpRole {
    pub address: Ipv4Addr,
    /// `master`, `backup` or `initialize`.
    pub state: String,
    /// Whether it answers ARP for the address and forwards its traffic.
    pub owned: bool,
    pub master_address: Option<Ipv4Addr>,
    /// When it last changed state, as it recorded (millisecond resolution).
    pub last_transition: SystemTime,
    /// State changes so far.
    pub transitions: u64,
    /// Live flows of the address in its table (its own as master, its master's as backup),
    /// and the distinct NAT ports they hold.
    pub flows: u64,
    pub ports_in_use: u64,
}

impl FloatingIpRole {
    /// Reads one entry of `/status`'s `floating_ips`.
    ///
    /// # Errors
    ///
    /// When it has no address.
    fn parse(ip: &Value) -> Result<Self> {
        let text = |key: &str| ip.get(key).and_then(Value::as_str);
        let number = |key: &str| ip.get(key).and_then(Value::as_u64).unwrap_or(0);
        Ok(Self {
            address: text("address")
                .context("a floating IP without address")?
                .parse()?,
            state: text("state").unwrap_or_default().to_owned(),
            owned: ip.get("owned").and_then(Value::as_bool).unwrap_or(false),
            master_address: text("master_address").and_then(|text| text.parse().ok()),
            last_transition: SystemTime::UNIX_EPOCH
                + Duration::from_millis(number("last_transition_unix_ms")),
            transitions: number("transitions"),
            flows: number("flows"),
            ports_in_use: number("ports_in_use"),
        })
    }

    /// Master and owning the address.
    pub fn is_master(&self) -> bool {
        self.state == "master" && self.owned
    }
}

/// The floating IPs of a gateway's `/status` body.
///
/// # Errors
///
/// When it is not JSON with a `floating_ips` list.
pub fn parse_roles(status: &str) -> Result<Vec<FloatingIpRole>> {
    let status: Value = serde_json::from_str(status).context("/status is not JSON")?;
    status
        .get("floating_ips")
        .and_then(Value::as_array)
        .context("/status has no floating_ips")?
        .iter()
        .map(FloatingIpRole::parse)
        .collect()
}

/// What one member is doing about the floating IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Owns it.
    Master,
    /// Follows the master at `master_address` (keepalived does not say which).
    Backup { master_address: Option<Ipv4Addr> },
    /// Running but not (yet) master or backup, or its API does not answer.
    Starting(String),
    /// Nothing runs there.
    Down,
}

/// The `egret-gateway` processes of a lab with two gateway hosts, by [`Member`]: what
/// [`HaLab`] and [`crate::AgentLab`] run. Dropping it stops them.
pub(crate) struct GatewayPair {
    processes: [Option<Gateway>; 2],
    /// The log of each member's latest gateway process, also once it has stopped.
    logs: [Option<PathBuf>; 2],
    /// Processes started so far (also a keepalived in a gateway's place): numbers the logs.
    starts: u32,
}

impl GatewayPair {
    pub(crate) fn new() -> Self {
        Self {
            processes: [None, None],
            logs: [None, None],
            starts: 0,
        }
    }

    /// Counts one more process started in the lab and returns its number.
    pub(crate) fn next_start(&mut self) -> u32 {
        self.starts += 1;
        self.starts
    }

    /// Starts `member`'s gateway in `ns` with `config` (without waiting for anything); its
    /// log is `<workdir>/<member>-<n>.log`.
    ///
    /// # Errors
    ///
    /// When it already runs or cannot start.
    pub(crate) fn start(
        &mut self,
        member: Member,
        ns: &NetNs,
        config: &Path,
        workdir: &Path,
    ) -> Result<()> {
        ensure!(
            !self.running(member),
            "{} is already running",
            member.name()
        );
        let binary = gateway_binary()?;
        let log = workdir.join(format!("{}-{}.log", member.name(), self.next_start()));
        let gateway = Gateway::start(ns, &binary, config, &log)?;
        self.processes[member.index()] = Some(gateway);
        self.logs[member.index()] = Some(log);
        Ok(())
    }

    /// Whether `member`'s gateway was started and not stopped or killed.
    pub(crate) fn running(&self, member: Member) -> bool {
        self.processes[member.index()].is_some()
    }

    /// The process id of `member`'s gateway, while it runs.
    pub(crate) fn pid(&self, member: Member) -> Option<u32> {
        self.process(member).and_then(|gateway| gateway.pid())
    }

    /// `member`'s gateway process, while it runs.
    pub(crate) fn process(&self, member: Member) -> Option<&Gateway> {
        self.processes[member.index()].as_ref()
    }

    /// `member`'s gateway process, to signal, while it runs.
    pub(crate) fn process_mut(&mut self, member: Member) -> Option<&mut Gateway> {
        self.processes[member.index()].as_mut()
    }

    /// Fails when a gateway that was started has exited.
    ///
    /// # Errors
    ///
    /// When one has, with the end of its log.
    pub(crate) fn ensure_running(&mut self) -> Result<()> {
        for gateway in self.processes.iter_mut().flatten() {
            gateway.ensure_running()?;
        }
        Ok(())
    }

    /// `member`'s gateway, to stop: it counts as not running from now on.
    ///
    /// # Errors
    ///
    /// When it is not running.
    pub(crate) fn take(&mut self, member: Member) -> Result<Gateway> {
        self.processes[member.index()]
            .take()
            .with_context(|| format!("{} is not running", member.name()))
    }

    /// Kills `member`'s gateway with SIGKILL; returns the instant just before the signal.
    ///
    /// # Errors
    ///
    /// When it is not running.
    pub(crate) fn kill(&mut self, member: Member) -> Result<SystemTime> {
        let mut gateway = self.take(member)?;
        let at = SystemTime::now();
        gateway.kill()?;
        Ok(at)
    }

    /// Stops every gateway that runs ([`Gateway`]'s drop).
    pub(crate) fn stop_all(&mut self) {
        for gateway in &mut self.processes {
            drop(gateway.take());
        }
    }

    /// The end of `member`'s latest gateway log ("" when it never ran).
    pub(crate) fn log_tail(&self, member: Member, lines: usize) -> String {
        self.logs[member.index()]
            .as_deref()
            .map(|log| tail(log, lines))
            .unwrap_or_default()
    }
}

/// The two-gateway lab; see the module documentation. Fields drop in order: the processes
/// first, then gw2's namespace, then the gateway lab (its namespaces and work directory).
pub struct HaLab {
    gateways: GatewayPair,
    keepalived: Option<Keepalived>,
    /// The members whose gateway is the installed package's service ([`HaLab::install_package`]).
    services: [Option<Service>; 2],
    config: HaConfig,
    /// Failovers run so far; each uses its own pod ports.
    rounds: u16,
    /// The lab's tag, for the names of what it makes.
    tag: String,
    gw2: NetNs,
    base: GatewayLab,
}

impl HaLab {
    /// Builds the lab in namespaces `<run prefix>-<tag>-<name>` with both configs written and
    /// nothing started.
    ///
    /// # Errors
    ///
    /// When a namespace, link, address or route cannot be set up; whatever was made is
    /// removed again.
    pub fn new(tag: &str, config: HaConfig) -> Result<Self> {
        let base = GatewayLab::new(tag)?;
        let gw2 = NetNs::new(&format!("{tag}-gw2"))?;
        disable_ipv6(&gw2)?;
        join_lan(base.lan(), Member::Gw2.lan_port(), &gw2, GW2_ADDRESS)?;
        default_route(&gw2, ROUTER_LAN_ADDRESS)?;
        let lab = Self {
            gateways: GatewayPair::new(),
            keepalived: None,
            services: [None, None],
            config,
            rounds: 0,
            tag: tag.to_owned(),
            gw2,
            base,
        };
        if lab.config.sync && lab.config.sync_key {
            crate::write_sync_key(lab.base.workdir())?;
        }
        for member in Member::BOTH {
            let path = lab.config_path(member);
            let text = lab.config.gateway_config(member, lab.base.workdir());
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(lab)
    }

    /// The gateway lab underneath: pod, node, router, outside, the bridge, and gw1's
    /// namespace (`gw`).
    pub fn base(&self) -> &GatewayLab {
        &self.base
    }

    /// The namespace of `member`.
    pub fn ns(&self, member: Member) -> &NetNs {
        match member {
            Member::Gw1 => self.base.gw(),
            Member::Gw2 => &self.gw2,
        }
    }

    /// The configuration both gateways were given.
    pub fn config(&self) -> &HaConfig {
        &self.config
    }

    /// The config file of `member`'s gateway.
    pub fn config_path(&self, member: Member) -> PathBuf {
        self.base.workdir().join(format!("{}.toml", member.name()))
    }

    /// The MAC of `member`'s `eth0`.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn mac(&self, member: Member) -> Result<Mac> {
        parse_mac(&self.base.mac_of(self.ns(member), "eth0")?)
    }

    /// Starts `member`'s gateway (without waiting for anything).
    ///
    /// # Errors
    ///
    /// When it already runs, keepalived holds its place, or it cannot start.
    pub fn start(&mut self, member: Member) -> Result<()> {
        ensure!(
            member == Member::Gw1 || self.keepalived.is_none(),
            "keepalived runs in gw2's place"
        );
        if let Some(service) = &mut self.services[member.index()] {
            return service.start();
        }
        let config = self.config_path(member);
        // `self.ns(member)`, borrowing only the namespaces.
        let ns = match member {
            Member::Gw1 => self.base.gw(),
            Member::Gw2 => &self.gw2,
        };
        self.gateways
            .start(member, ns, &config, self.base.workdir())
    }

    /// Starts both gateways at once and waits until they agree ([`Self::wait_converged`]);
    /// returns the master.
    ///
    /// # Errors
    ///
    /// When either cannot start or they do not agree in time.
    pub fn start_both(&mut self) -> Result<Member> {
        self.start(Member::Gw1)?;
        self.start(Member::Gw2)?;
        self.wait_converged(CONVERGE_TIMEOUT)
    }

    /// Starts `first`, waits until its election runs (its API reports backup or master),
    /// then starts the other one and waits until they agree; returns the master.
    ///
    /// Started at once, either gateway's setup (nft, the eBPF fast path) can outlast the
    /// ~40 ms by which the preferred one's Master_Down_Interval is shorter, and the other then
    /// holds the address until the first advert preempts it, as RFC 5798 allows.
    ///
    /// # Errors
    ///
    /// When either cannot start or they do not agree in time.
    pub fn start_ahead(&mut self, first: Member) -> Result<Member> {
        self.start(first)?;
        let deadline = Instant::now() + CONVERGE_TIMEOUT;
        loop {
            self.gateways.ensure_running()?;
            match self.role(first)? {
                Role::Master | Role::Backup { .. } => break,
                role => ensure!(
                    Instant::now() < deadline,
                    "{}'s election did not start within {CONVERGE_TIMEOUT:?} (now {role:?})",
                    first.name()
                ),
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.start(first.other())?;
        self.wait_converged(CONVERGE_TIMEOUT)
    }

    /// Whether `member`'s gateway process was started and not stopped or killed.
    pub fn running(&self, member: Member) -> bool {
        if let Some(service) = &self.services[member.index()] {
            return service.running;
        }
        self.gateways.running(member)
    }

    /// The process id of `member`'s gateway process, while it runs (not for a service).
    pub fn pid(&self, member: Member) -> Option<u32> {
        self.gateways.pid(member)
    }

    /// `GET <path>` from `member`'s API, without a process per request (the failover polls
    /// it while measuring).
    ///
    /// # Errors
    ///
    /// When nothing answers or the answer is not 200.
    pub fn api_get(&self, member: Member, path: &str) -> Result<String> {
        api_request(self.ns(member), path)
            .with_context(|| format!("asking {}'s API", member.name()))
    }

    /// `member`'s election view, from its `/status`.
    ///
    /// # Errors
    ///
    /// When its API does not answer.
    pub fn election(&self, member: Member) -> Result<Election> {
        Election::parse(&self.api_get(member, "/status")?)
    }

    /// What `member` does about the floating IP now.
    ///
    /// # Errors
    ///
    /// When keepalived's namespace cannot be read.
    pub fn role(&self, member: Member) -> Result<Role> {
        if member == Member::Gw2 && self.keepalived.as_ref().is_some_and(Keepalived::running) {
            return Ok(if self.keepalived_holds_vip()? {
                Role::Master
            } else {
                Role::Backup {
                    master_address: None,
                }
            });
        }
        if !self.running(member) {
            return Ok(Role::Down);
        }
        Ok(match self.election(member) {
            Ok(election) if election.is_master() => Role::Master,
            Ok(election) if election.state == "backup" && !election.owned => Role::Backup {
                master_address: election.master_address,
            },
            Ok(election) => Role::Starting(format!("{election:?}")),
            Err(err) => Role::Starting(format!("{err:#}")),
        })
    }

    /// The member that owns the floating IP, when exactly one does and every other running
    /// member is a backup of it.
    ///
    /// # Errors
    ///
    /// When a role cannot be read.
    pub fn agreed_master(&self) -> Result<Option<Member>> {
        let roles = [self.role(Member::Gw1)?, self.role(Member::Gw2)?];
        let masters: Vec<Member> = Member::BOTH
            .into_iter()
            .filter(|member| roles[member.index()] == Role::Master)
            .collect();
        let [master] = masters[..] else {
            return Ok(None);
        };
        let other = &roles[master.other().index()];
        let follows = match other {
            Role::Down => true,
            Role::Backup { master_address } => {
                master_address.is_none_or(|address| address == master.address())
            }
            Role::Master | Role::Starting(_) => false,
        };
        Ok(follows.then_some(master))
    }

    /// Waits until [`Self::agreed_master`] names the same member for Master_Down_Interval
    /// plus one advert interval (long enough for a higher-priority backup to preempt), and
    /// returns it.
    ///
    /// # Errors
    ///
    /// When a gateway exits, or they do not agree within `timeout`.
    pub fn wait_converged(&mut self, timeout: Duration) -> Result<Member> {
        let settle = self
            .config
            .master_down_interval(Member::Gw2)
            .max(self.config.master_down_interval(Member::Gw1))
            + self.config.advert_interval;
        let deadline = Instant::now() + timeout;
        let mut held: Option<(Member, Instant)> = None;
        loop {
            self.gateways.ensure_running()?;
            match (self.agreed_master()?, held) {
                (Some(master), Some((previous, since))) if master == previous => {
                    if since.elapsed() >= settle {
                        return Ok(master);
                    }
                }
                (Some(master), _) => held = Some((master, Instant::now())),
                (None, _) => held = None,
            }
            if Instant::now() >= deadline {
                bail!(
                    "the gateways did not agree on one master within {timeout:?}\n{}",
                    self.evidence()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `member` is master (whatever the other one thinks).
    ///
    /// # Errors
    ///
    /// When it is not within `timeout`.
    pub fn wait_master(&self, member: Member, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let role = self.role(member)?;
            if role == Role::Master {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not become master within {timeout:?} (now {role:?})\n{}",
                    member.name(),
                    self.evidence()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills `member`'s gateway with SIGKILL; returns the instant just before the signal.
    ///
    /// # Errors
    ///
    /// When it is not running.
    pub fn kill(&mut self, member: Member) -> Result<SystemTime> {
        if let Some(service) = &mut self.services[member.index()] {
            return service.kill();
        }
        self.gateways.kill(member)
    }

    /// Stops `member`'s gateway with SIGTERM (it hands over with a priority-0 advert) and
    /// waits for it to exit; returns the instant just before the signal and how it ended.
    ///
    /// # Errors
    ///
    /// When it is not running or does not exit in time.
    pub fn terminate(&mut self, member: Member) -> Result<(SystemTime, Stopped)> {
        ensure!(
            self.services[member.index()].is_none(),
            "{}'s gateway is a service: stop it with systemctl",
            member.name()
        );
        let gateway = self.gateways.take(member)?;
        let at = SystemTime::now();
        let stopped = gateway.stop()?;
        Ok((at, stopped))
    }

    /// Takes `member`'s LAN link down (`ip link set eth0 down` in its namespace); returns the
    /// instant just before the command. The gateway keeps running.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn link_down(&self, member: Member) -> Result<SystemTime> {
        let at = SystemTime::now();
        self.ns(member).ip(["link", "set", "dev", "eth0", "down"])?;
        Ok(at)
    }

    /// Brings `member`'s LAN link back up.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn link_up(&self, member: Member) -> Result<()> {
        self.ns(member).ip(["link", "set", "dev", "eth0", "up"])?;
        Ok(())
    }

    /// Makes `member` lose the floating IP the way `failure` says; returns the instant it
    /// happened.
    ///
    /// # Errors
    ///
    /// When it cannot be done.
    pub fn fail(&mut self, member: Member, failure: Failure) -> Result<SystemTime> {
        match failure {
            Failure::Kill => self.kill(member),
            Failure::Terminate => self.terminate(member).map(|(at, _)| at),
            Failure::LinkDown => self.link_down(member),
            Failure::Preempted => {
                let at = SystemTime::now();
                self.start(member.other())?;
                Ok(at)
            }
        }
    }

    /// The end of `member`'s latest log (its gateway's, or keepalived's for gw2).
    pub fn log_tail(&self, member: Member, lines: usize) -> String {
        match (&self.keepalived, member) {
            (Some(keepalived), Member::Gw2) => tail(&keepalived.log, lines),
            _ => match &self.services[member.index()] {
                Some(service) => service.log_tail(lines),
                None => self.gateways.log_tail(member, lines),
            },
        }
    }

    /// Installs the gateway package `deb` on a Debian system booted (systemd-nspawn) in each
    /// member's namespace, and gives its service the lab's config and sync key: from then on
    /// [`HaLab::start`] is `systemctl start egret-gateway` in `member`'s system, and
    /// [`HaLab::kill`] `systemctl kill -s KILL egret-gateway`, after which systemd restarts
    /// it ([`HaLab::service`] to watch that).
    ///
    /// # Errors
    ///
    /// When a system does not boot, the package does not install or the files cannot be
    /// written.
    pub fn install_package(&mut self, deb: &Path) -> Result<()> {
        for member in Member::BOTH {
            ensure!(
                !self.gateways.running(member),
                "{}'s gateway already runs as a process",
                member.name()
            );
            let name = format!("{}-{}", self.tag, member.name());
            let service = Service::install(
                &name,
                self.ns(member),
                deb,
                self.config_for_service(member)?,
            )?;
            self.services[member.index()] = Some(service);
        }
        Ok(())
    }

    /// The config of `member` with the sync key where the service reads it.
    fn config_for_service(&self, member: Member) -> Result<(String, Option<Vec<u8>>)> {
        let text = self
            .config
            .gateway_config(member, Path::new(SERVICE_CONFIG_DIR));
        let key = if self.config.sync && self.config.sync_key {
            let path = self.base.workdir().join(crate::SYNC_KEY);
            Some(fs::read(&path).with_context(|| format!("reading {}", path.display()))?)
        } else {
            None
        };
        Ok((text, key))
    }

    /// Waits until systemd has restarted `member`'s killed service (`Restart=on-failure`):
    /// the unit is active again with one more restart in `NRestarts`. From then on the lab
    /// counts it as running. Returns `NRestarts`.
    ///
    /// # Errors
    ///
    /// When `member`'s gateway is not a killed service, or systemd does not restart it
    /// within `timeout`.
    pub fn wait_service_restarted(&mut self, member: Member, timeout: Duration) -> Result<u32> {
        let service = self.services[member.index()]
            .as_mut()
            .with_context(|| format!("{}'s gateway is not a service", member.name()))?;
        ensure!(
            !service.running,
            "{}'s service was not killed",
            member.name()
        );
        let deadline = Instant::now() + timeout;
        loop {
            let (restarts, state) = service.restarts()?;
            if restarts > service.restarts_seen && state == "active" {
                service.restarts_seen = restarts;
                service.running = true;
                return Ok(restarts);
            }
            ensure!(
                Instant::now() < deadline,
                "systemd did not restart {}'s gateway within {timeout:?}: NRestarts {restarts}, \
                 {state}\n{}",
                member.name(),
                service.log_tail(20)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The booted system of `member` whose service is its gateway, if it is one.
    pub fn service(&self, member: Member) -> Option<&crate::nspawn::Container> {
        self.services[member.index()].as_ref().map(|s| &s.container)
    }

    /// Both members' roles and the end of their logs, for failure messages.
    pub fn evidence(&self) -> String {
        let mut text = String::new();
        for member in Member::BOTH {
            let role = self.role(member).map_or_else(
                |err| format!("(unknown: {err:#})"),
                |role| format!("{role:?}"),
            );
            let election = self
                .election(member)
                .map_or_else(|_| String::new(), |election| format!("\n  {election:?}"));
            text.push_str(&format!(
                "--- {} ({}): {role}{election}\n{}\n",
                member.name(),
                member.address(),
                self.log_tail(member, 15)
            ));
        }
        text
    }

    /// The MAC the router's neighbour table holds for the floating IP, if any.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn router_neighbour(&self) -> Result<Option<Mac>> {
        neighbour(self.base.router(), "eth0", FLOATING_IP)
    }

    /// Starts keepalived in gw2's namespace (gw2's gateway must not run) with `priority`, in
    /// the floating IP's VRID with the lab's advert interval, preemption and advert mode.
    ///
    /// # Errors
    ///
    /// When gw2's gateway runs or keepalived cannot start.
    pub fn start_keepalived(&mut self, priority: u8) -> Result<()> {
        ensure!(!self.running(Member::Gw2), "gw2's gateway runs");
        ensure!(
            self.keepalived.as_ref().is_none_or(|k| !k.running()),
            "keepalived already runs"
        );
        let keepalived = Keepalived::start(
            &self.gw2,
            self.base.workdir(),
            self.gateways.next_start(),
            &self.config.keepalived_config(priority),
        )?;
        self.keepalived = Some(keepalived);
        Ok(())
    }

    /// The running keepalived, if any.
    pub fn keepalived(&self) -> Option<&Keepalived> {
        self.keepalived.as_ref()
    }

    /// Kills keepalived (its VRRP process, then its parent) with SIGKILL and returns the
    /// instant before. Then it removes the floating IP that keepalived had added to gw2's
    /// `eth0`, as the death of that host would: a killed keepalived leaves it there.
    ///
    /// # Errors
    ///
    /// When keepalived does not run.
    pub fn kill_keepalived(&mut self) -> Result<SystemTime> {
        let keepalived = self
            .keepalived
            .as_mut()
            .context("keepalived does not run")?;
        let at = keepalived.kill()?;
        let vip = format!("{FLOATING_IP}/32");
        let _ = self.gw2.ip(["addr", "del", &vip, "dev", "eth0"]);
        Ok(at)
    }

    /// Whether gw2's kernel holds the floating IP: keepalived adds it when it is master.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn keepalived_holds_vip(&self) -> Result<bool> {
        let shown = self.gw2.ip(["-4", "addr", "show", "dev", "eth0"])?;
        Ok(shown.contains(&format!("inet {FLOATING_IP}/32")))
    }

    /// Runs one failover under load; see [`Failure`] and [`FailoverReport`]. The master
    /// must be agreed on first; `failure` hits it.
    ///
    /// # Errors
    ///
    /// When the traffic cannot be set up or did not work before the failure, or the other
    /// gateway never becomes master. What survived the failure is in the report, not an
    /// error.
    pub fn failover(&mut self, failure: Failure, load: &Load) -> Result<FailoverReport> {
        let failed = self.wait_converged(CONVERGE_TIMEOUT)?;
        let successor = failed.other();
        let successor_mac = self.mac(successor)?;
        let failed_mac = self.mac(failed)?;
        let ports = PodPorts::of_round(self.rounds, load)?;
        self.rounds += 1;
        let (pod, outside) = (self.base.pod(), self.base.outside());
        let server = |port| endpoint(OUTSIDE_ADDRESS, port);

        let capture = Capture::start(self.base.router(), "eth0")?;
        let messenger_server = EchoServer::start(outside, server(MESSENGER_PORT))?;
        let flow_server = EchoServer::start(outside, server(FLOWS_PORT))?;
        let udp = UdpFlows::open(
            pod,
            &ports.udp,
            outside,
            server(UDP_PORT),
            Duration::from_secs(5),
        )
        .context("opening the UDP flows")?;
        let _ticker = Ticker::start(pod, ports.ticker, outside, server(TICKER_PORT), load.tick)?;
        let messenger = Messenger::start(
            pod,
            ports.messenger,
            server(MESSENGER_PORT),
            load.message_period,
        )
        .context("connecting the messaging connection")?;
        let flows = FlowSet::start(pod, &ports.flows, server(FLOWS_PORT), load.flow_period)
            .context("connecting the parallel connections")?;
        thread::sleep(load.warmup);

        let warm = flows.states();
        let idle = warm
            .iter()
            .filter(|flow| flow.round_trips == 0 || flow.error.is_some())
            .count();
        ensure!(
            idle == 0 && !messenger.failed() && messenger.progress().1 > 0,
            "before the failover: {idle} of {} connections without a round trip, messenger \
             {:?} (sent, echoed), server errors {:?}\n{}",
            warm.len(),
            messenger.progress(),
            [messenger_server.errors(), flow_server.errors()].concat(),
            self.evidence()
        );

        let at = self.fail(failed, failure)?;
        let takeover_limit =
            self.config.master_down_interval(successor) * 3 + Duration::from_secs(5);
        self.wait_master(successor, takeover_limit)?;
        // The router sends the outside's packets to the new master once its gratuitous ARP
        // has arrived; the outside-first datagrams go after that.
        let neighbour_deadline = Instant::now() + Duration::from_secs(3);
        while self.router_neighbour()? != Some(successor_mac) && Instant::now() < neighbour_deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        let router_neighbour = self.router_neighbour()?;
        // The ticker's next datagram follows within a couple of milliseconds.
        let forwarded_deadline = Instant::now() + Duration::from_secs(2);
        while first_forwarded(&capture.frames(), at, successor_mac).is_none()
            && Instant::now() < forwarded_deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        // Survival counts from the successor's first forwarded frame: until the failed
        // gateway's process is gone (a few milliseconds after SIGKILL) it may still carry a
        // round trip or two.
        let resumed = first_forwarded(&capture.frames(), at, successor_mac)
            .map_or_else(SystemTime::now, |takeover| at + takeover);
        let udp_received = udp.outside_sends_first(Duration::from_secs(3))?;

        // TCP retransmits with backoff: a segment lost at the failure is sent again up to
        // a few Master_Down_Intervals after the takeover.
        let deadline = Instant::now()
            + self.config.master_down_interval(successor) * 4
            + Duration::from_secs(8);
        let _ = flows.wait_all_after(resumed, deadline);
        // A last stretch of steady messaging after recovery.
        thread::sleep(Duration::from_secs(1));
        let messenger = messenger.finish(Duration::from_secs(5));
        let flows = flows.finish();
        let frames = capture.stop()?;

        let takeover = first_forwarded(&frames, at, successor_mac);
        let garp = sent_by(&frames, successor_mac)
            .filter(|frame| frame.at > at)
            .filter(|frame| frame.arp().is_some_and(|arp| arp.sender_ip == FLOATING_IP))
            .find_map(|frame| frame.at.duration_since(at).ok());
        let priority_zero = sent_by(&frames, failed_mac)
            .filter(|frame| frame.at > at)
            .find(|frame| {
                frame
                    .vrrp()
                    .is_some_and(|(_, vrid, priority)| vrid == VRID && priority == 0)
            })
            .and_then(|frame| frame.at.duration_since(at).ok());
        let successor_view = self.election(successor)?;
        let election_takeover = successor_view.last_transition.duration_since(at).ok();
        Ok(FailoverReport {
            failure,
            advert_interval: self.config.advert_interval,
            failed,
            successor,
            at,
            resumed,
            takeover,
            garp,
            priority_zero,
            election_takeover,
            messenger,
            messenger_server_errors: messenger_server.errors(),
            flows,
            flow_server_errors: flow_server.errors(),
            udp_mapped: udp.mapped().to_vec(),
            udp_received,
            router_neighbour_moved: router_neighbour == Some(successor_mac),
            successor_view,
        })
    }
}

/// From `at` to the first frame in `frames` that `mac` sent with the floating IP as source:
/// one the new master forwarded.
fn first_forwarded(frames: &[Frame], at: SystemTime, mac: Mac) -> Option<Duration> {
    sent_by(frames, mac)
        .filter(|frame| frame.at > at && frame.ipv4().is_some_and(|ip| ip.source == FLOATING_IP))
        .filter_map(|frame| frame.at.duration_since(at).ok())
        .min()
}

/// How the master loses the floating IP in a [`HaLab::failover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The other gateway, with a higher priority and preemption, was stopped and starts
    /// again: it takes the address back after its Master_Down_Interval (fail-back).
    Preempted,
    /// SIGKILL: silence, the backup takes over after Master_Down_Interval.
    Kill,
    /// SIGTERM: the gateway sends a priority-0 advert, the backup takes over after
    /// Skew_Time.
    Terminate,
    /// Its LAN link goes down: silence, as with a kill, while the process lives on.
    LinkDown,
}

/// The traffic a [`HaLab::failover`] runs through the gateways.
#[derive(Debug, Clone)]
pub struct Load {
    /// The messaging connection sends every `message_period`.
    pub message_period: Duration,
    /// Parallel TCP connections, each a ping-pong every `flow_period`. The first half
    /// bind pod ports below [`NAT_PORT_RANGE`], so the gateway must give them another NAT
    /// port; the second half bind ports inside it.
    pub flows: usize,
    pub flow_period: Duration,
    /// UDP flows the outside server sends to first after the takeover.
    pub udp_flows: usize,
    /// The ticker's period.
    pub tick: Duration,
    /// Traffic before the failure, so that every flow exists and is synced.
    pub warmup: Duration,
}

impl Default for Load {
    /// 10 ms messages, 200 connections every 250 ms, 4 UDP flows, a 2 ms ticker, 2 s of
    /// warm-up.
    fn default() -> Self {
        Self {
            message_period: Duration::from_millis(10),
            flows: 200,
            flow_period: Duration::from_millis(250),
            udp_flows: 4,
            tick: Duration::from_millis(2),
            warmup: Duration::from_secs(2),
        }
    }
}

/// The pod's ports for one failover round: fresh ones each round, so that a connection of
/// an earlier round in TIME_WAIT never collides.
struct PodPorts {
    messenger: SocketAddrV4,
    ticker: SocketAddrV4,
    udp: Vec<SocketAddrV4>,
    flows: Vec<SocketAddrV4>,
}

impl PodPorts {
    fn of_round(round: u16, load: &Load) -> Result<Self> {
        ensure!(
            round < 15 && load.flows <= 1800 && load.udp_flows <= 40,
            "too many rounds or flows"
        );
        // Below the NAT range: 20000 + 1000 × round; inside it: 41000 + 1000 × round.
        let below = 20_000 + 1000 * round;
        let inside = 41_000 + 1000 * round;
        let pod = |port: u16| endpoint(POD_ADDRESS, port);
        let flows = (0..load.flows)
            .map(|index| {
                let index = u16::try_from(index)?;
                let half = u16::try_from(load.flows / 2)?;
                Ok(if index < half {
                    pod(below + index)
                } else {
                    pod(inside + index - half)
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            messenger: pod(below + 900),
            ticker: pod(below + 950),
            udp: (0..load.udp_flows)
                .map(|index| Ok(pod(below + 910 + u16::try_from(index)?)))
                .collect::<Result<_>>()?,
            flows,
        })
    }
}

/// What a [`HaLab::failover`] measured.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    pub failure: Failure,
    pub advert_interval: Duration,
    pub failed: Member,
    pub successor: Member,
    /// The instant of the failure (CLOCK_REALTIME).
    pub at: SystemTime,
    /// When the successor forwarded its first frame (`at + takeover`; the end of the wait
    /// when it never did). Connections count as alive when they completed a round trip
    /// sent after it.
    pub resumed: SystemTime,
    /// From the failure to the first frame the successor forwarded with the floating IP as
    /// source, as the router's LAN interface received it.
    pub takeover: Option<Duration>,
    /// From the failure to the successor's first gratuitous ARP on the router's interface.
    pub garp: Option<Duration>,
    /// From the failure to the failed master's priority-0 advert (SIGTERM) on the router's
    /// interface, which sees adverts in multicast mode only.
    pub priority_zero: Option<Duration>,
    /// From the failure to the successor's own record of becoming master (its status,
    /// millisecond resolution).
    pub election_takeover: Option<Duration>,
    pub messenger: MessengerReport,
    pub messenger_server_errors: Vec<String>,
    pub flows: Vec<FlowState>,
    pub flow_server_errors: Vec<String>,
    /// Each UDP flow's mapping as the outside server saw it, and whether the pod got the
    /// datagram the server sent to it after the takeover.
    pub udp_mapped: Vec<SocketAddrV4>,
    pub udp_received: Vec<bool>,
    /// Whether the router's neighbour entry for the floating IP had moved to the
    /// successor's MAC before the outside-first datagrams were sent.
    pub router_neighbour_moved: bool,
    /// The successor's election view at the end.
    pub successor_view: Election,
}

impl FailoverReport {
    /// Connections that completed a round trip sent after the takeover, without a reset.
    pub fn flows_alive(&self) -> usize {
        self.flows
            .iter()
            .filter(|flow| flow.alive_after(self.resumed))
            .count()
    }

    /// The messaging connection kept every message, in order, without a reset, on both
    /// ends.
    pub fn messenger_survived(&self) -> bool {
        self.messenger.survived() && self.messenger_server_errors.is_empty()
    }

    /// What fell short of the survival targets: no reset and no loss on the messaging
    /// connection, every parallel connection alive, every outside-first UDP datagram
    /// received. Empty when all were met.
    pub fn survival_shortfalls(&self) -> Vec<String> {
        let mut shortfalls = Vec::new();
        if !self.messenger_survived() {
            shortfalls.push(format!(
                "the messaging connection did not survive: {} sent, {} echoed, errors {:?}",
                self.messenger.sent.len(),
                self.messenger.echoed.len(),
                [
                    self.messenger.errors.clone(),
                    self.messenger_server_errors.clone()
                ]
                .concat()
            ));
        }
        let alive = self.flows_alive();
        if alive < self.flows.len() {
            let failed: Vec<String> = self
                .flows
                .iter()
                .filter(|flow| !flow.alive_after(self.resumed))
                .take(3)
                .map(|flow| {
                    format!(
                        "{}: {}",
                        flow.local.port(),
                        flow.error
                            .clone()
                            .unwrap_or_else(|| "no round trip after the takeover (stalled)".into())
                    )
                })
                .collect();
            let ended = self
                .flows
                .iter()
                .filter(|flow| flow.error.is_some())
                .count();
            shortfalls.push(format!(
                "{alive}/{} connections survived ({ended} ended with an error, {} stalled); \
                 e.g. {failed:?}; server errors: {:?}",
                self.flows.len(),
                self.flows.len() - alive - ended,
                self.flow_server_errors.iter().take(3).collect::<Vec<_>>()
            ));
        }
        let received = self.udp_received.iter().filter(|seen| **seen).count();
        if received < self.udp_received.len() {
            shortfalls.push(format!(
                "{received}/{} UDP flows received the outside's first datagram after the \
                 takeover (mappings {:?}; router's neighbour entry moved: {})",
                self.udp_received.len(),
                self.udp_mapped,
                self.router_neighbour_moved
            ));
        }
        shortfalls
    }

    /// One paragraph of figures.
    pub fn summary(&self) -> String {
        format!(
            "{:?} of {} at {} ms adverts: takeover (first forwarded frame) {}, election {}, \
             first gratuitous ARP {}{}; \
             messaging: {} sent, {} echoed, longest gap {}, first echo after the failure {}, \
             survived {}; connections alive {}/{}; UDP outside-first {}/{}",
            self.failure,
            self.failed.name(),
            self.advert_interval.as_millis(),
            millis(self.takeover),
            millis(self.election_takeover),
            millis(self.garp),
            self.priority_zero
                .map(|d| format!(", priority-0 advert {}", millis(Some(d))))
                .unwrap_or_default(),
            self.messenger.sent.len(),
            self.messenger.echoed.len(),
            millis(Some(self.messenger.longest_gap())),
            millis(self.messenger.first_echo_after(self.at)),
            self.messenger_survived(),
            self.flows_alive(),
            self.flows.len(),
            self.udp_received.iter().filter(|seen| **seen).count(),
            self.udp_received.len(),
        )
    }
}

/// keepalived in a lab namespace: config, pid files and log in the work directory, run in
/// the foreground (`--dont-fork`), VRRP only, logging to its console (the log file).
/// Dropping it stops it (SIGTERM, then SIGKILL for whatever is left).
pub struct Keepalived {
    child: Option<Child>,
    log: PathBuf,
    vrrp_pid: PathBuf,
}

impl Keepalived {
    fn start(ns: &NetNs, workdir: &Path, run: u32, config: &str) -> Result<Self> {
        let path = |suffix: &str| workdir.join(format!("keepalived-{run}.{suffix}"));
        let (conf, pid, vrrp_pid, log) = (path("conf"), path("pid"), path("vrrp.pid"), path("log"));
        fs::write(&conf, config).with_context(|| format!("writing {}", conf.display()))?;
        let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = ns
            .command("keepalived")
            .args([
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
                "--vrrp",
                "--dont-respawn",
            ])
            .arg("--use-file")
            .arg(&conf)
            .arg("--pid")
            .arg(&pid)
            .arg("--vrrp_pid")
            .arg(&vrrp_pid)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting keepalived in {}", ns.name()))?;
        let mut keepalived = Self {
            child: Some(child),
            log,
            vrrp_pid,
        };
        // Its VRRP process writes its pid file once it runs.
        let deadline = Instant::now() + Duration::from_secs(10);
        while keepalived.vrrp_process().is_none() {
            if let Some(child) = keepalived.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("keepalived exited ({status}):\n{}", keepalived.log());
            }
            ensure!(
                Instant::now() < deadline,
                "keepalived's VRRP process did not start within 10 s:\n{}",
                keepalived.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        Ok(keepalived)
    }

    /// Whether it was started and not killed.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How often it entered MASTER and BACKUP state, from its log.
    pub fn transitions(&self) -> (usize, usize) {
        let log = self.log();
        (
            log.matches("Entering MASTER STATE").count(),
            log.matches("Entering BACKUP STATE").count(),
        )
    }

    /// The pid of its VRRP process, while that runs.
    fn vrrp_process(&self) -> Option<libc::pid_t> {
        let pid: libc::pid_t = fs::read_to_string(&self.vrrp_pid)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim() == "keepalived").then_some(pid)
    }

    fn kill(&mut self) -> Result<SystemTime> {
        let mut child = self.child.take().context("keepalived does not run")?;
        let vrrp = self.vrrp_process();
        let at = SystemTime::now();
        if let Some(pid) = vrrp {
            // SAFETY: kill has no memory preconditions; the pid was checked to be keepalived.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        child.kill()?;
        child.wait()?;
        Ok(at)
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(err) = terminate(&mut child, Duration::from_secs(3))
        {
            eprintln!("egret-lab: stopping keepalived: {err:#}");
        }
        // The parent stops its VRRP process on SIGTERM; should it not have, that goes too.
        if let Some(pid) = self.vrrp_process() {
            // SAFETY: as in `kill`.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The MAC `ns`'s neighbour table holds for `address` on `interface`, if any.
///
/// # Errors
///
/// When `ip` fails.
pub fn neighbour(ns: &NetNs, interface: &str, address: Ipv4Addr) -> Result<Option<Mac>> {
    let shown = ns.ip(["neigh", "show", &address.to_string(), "dev", interface])?;
    lladdr(&shown).map(|mac| parse_mac(&mac)).transpose()
}

/// The VRRP adverts for [`VRID`] that `mac` sent within `[from, to)` (see [`sent_by`]), as
/// (version, priority).
pub fn adverts(frames: &[Frame], mac: Mac, from: SystemTime, to: SystemTime) -> Vec<(u8, u8)> {
    sent_by(frames, mac)
        .filter(|frame| frame.at >= from && frame.at < to)
        .filter_map(Frame::vrrp)
        .filter(|(_, vrid, _)| *vrid == VRID)
        .map(|(version, _, priority)| (version, priority))
        .collect()
}

/// The adverts one master sends over `window` at `interval`.
pub fn expected_adverts(window: Duration, interval: Duration) -> usize {
    (window.as_secs_f64() / interval.as_secs_f64()).round() as usize
}

/// Whether `count` adverts over `window` are about one per `interval`: within 20 %, give or
/// take two for where the window cuts the rhythm. Fewer means a lost master, more a flood.
pub fn about_one_per_interval(count: usize, window: Duration, interval: Duration) -> bool {
    let expected = expected_adverts(window, interval);
    count * 10 >= expected * 8 && count * 10 <= expected * 12 + 20
}

/// A duration in milliseconds with a tenth, `-` for none.
pub fn millis(duration: Option<Duration>) -> String {
    duration.map_or_else(
        || "-".to_owned(),
        |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
    )
}

/// Holds every other lab of this process off while the guard lives: failover timings on
/// two shared cores would measure the neighbouring lab too. Test binaries run their tests
/// in parallel threads; each lab test takes this first.
pub fn one_lab_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The median of `values` (the lower middle one for an even count), `None` when empty.
pub fn median<T: Ord + Copy>(values: &[T]) -> Option<T> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_follow_rfc_5798() {
        let config = HaConfig::default();
        // Priority 100 at 100 ms: skew (156 × 100 ms) / 256 = 60.9375 ms.
        assert_eq!(
            config.skew_time(Member::Gw2),
            Duration::from_nanos(60_937_500)
        );
        assert_eq!(
            config.master_down_interval(Member::Gw2),
            Duration::from_nanos(360_937_500)
        );
        assert_eq!(config.skew_time(Member::Gw1), Duration::from_micros(21_875));
    }

    #[test]
    fn configs_name_each_gateway_and_its_peer() {
        let config = HaConfig {
            unicast: true,
            ..HaConfig::default()
        };
        let gw2 = config.gateway_config(Member::Gw2, Path::new("/run/lab"));
        assert!(gw2.contains("name = \"gw2\""), "{gw2}");
        assert!(gw2.contains("key_file = \"/run/lab/sync.key\""), "{gw2}");
        assert!(gw2.contains("priority = 100"), "{gw2}");
        assert!(gw2.contains("peers = [\"192.168.50.11\"]"), "{gw2}");
        assert!(gw2.contains("listen = \"192.168.50.12:4801\""), "{gw2}");
        assert!(gw2.contains("peers = [\"192.168.50.11:4801\"]"), "{gw2}");
        assert!(gw2.contains("advert_interval = \"100ms\""), "{gw2}");
        let short = HaConfig {
            nat: vec![("udp_timeout".into(), "\"2s\"".into())],
            ..HaConfig::default()
        }
        .gateway_config(Member::Gw1, Path::new("/run/lab"));
        assert!(
            short.contains("port_range = \"40000-60000\"\nudp_timeout = \"2s\"\n"),
            "{short}"
        );
        let multicast = HaConfig {
            sync: false,
            ..HaConfig::default()
        }
        .gateway_config(Member::Gw1, Path::new("/run/lab"));
        assert!(multicast.contains("peers = []"), "{multicast}");
        assert!(!multicast.contains("[sync]"), "{multicast}");
        let keepalived = config.keepalived_config(150);
        assert!(keepalived.contains("advert_int 0.1"), "{keepalived}");
        assert!(keepalived.contains("virtual_router_id 10"), "{keepalived}");
        assert!(
            keepalived.contains("unicast_peer {\n        192.168.50.11"),
            "{keepalived}"
        );
    }

    #[test]
    fn status_bodies_give_the_election() {
        let body = r#"{"floating_ips":[{"address":"192.168.50.100","vrid":10,"state":"backup",
            "master":"192.168.50.11","master_address":"192.168.50.11","owned":false,
            "priority":100,"last_transition_unix_ms":1700000000123,"transitions":1,
            "adverts_sent":0,"adverts_received":42}],
            "election":{"mode":"multicast","adverts_rejected":{"ttl":1,"checksum":2},
            "adverts_unknown_vrid":0,"send_errors":0},
            "drops":{"not_master":7},"control":{"gratuitous_arps_sent":0}}"#;
        let election = Election::parse(body).expect("valid");
        assert_eq!(election.state, "backup");
        assert!(!election.is_master());
        assert_eq!(election.master_address, Some(GW_ADDRESS));
        assert_eq!(election.adverts_received, 42);
        assert_eq!(election.adverts_rejected, 3);
        assert_eq!(election.not_master_drops, 7);
        assert_eq!(
            election.last_transition,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
        assert!(Election::parse(r#"{"floating_ips":[]}"#).is_err());
    }

    #[test]
    fn gateway_roles_per_address() {
        let body = r#"{"floating_ips":[
            {"address":"192.168.50.100","state":"master","owned":true,"transitions":3,
             "flows":5,"ports_in_use":4},
            {"address":"192.168.50.101","state":"backup","owned":false,
             "master_address":"192.168.50.12"}]}"#;
        let roles = parse_roles(body).expect("valid");
        assert!(roles[0].is_master());
        assert_eq!(
            (roles[0].transitions, roles[0].flows, roles[0].ports_in_use),
            (3, 5, 4)
        );
        assert_eq!((roles[1].transitions, roles[1].flows), (0, 0));
        assert!(!roles[1].is_master());
        assert_eq!(roles[1].master_address, Some(GW2_ADDRESS));
        assert!(parse_roles("{}").is_err());
    }

    #[test]
    fn pod_ports_differ_per_round_and_straddle_the_nat_range() {
        let load = Load::default();
        let first = PodPorts::of_round(0, &load).expect("round 0");
        let second = PodPorts::of_round(1, &load).expect("round 1");
        assert_eq!(first.flows.len(), 200);
        assert!(first.flows[..100].iter().all(|a| a.port() < 40_000));
        assert!(
            first.flows[100..]
                .iter()
                .all(|a| (40_000..=60_000).contains(&a.port()))
        );
        let mut all: Vec<u16> = [&first, &second]
            .iter()
            .flat_map(|ports| {
                ports
                    .flows
                    .iter()
                    .chain(&ports.udp)
                    .chain([&ports.messenger, &ports.ticker])
                    .map(SocketAddrV4::port)
            })
            .collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "every port once");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3, 1, 2]), Some(2));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median::<u32>(&[]), None);
    }
}
