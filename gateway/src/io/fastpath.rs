//! The kernel fast path: loads the TC program, and writes what the core decides into its
//! maps.
//!
//! `egret_gw_forward` runs at the ingress of the gateway interface, before the nftables
//! guard. For a frame of a flow the core handed over it rewrites the frame in the kernel
//! (decapsulate and SNAT, or DNAT and encapsulate, keeping super-packets whole) and sends
//! it back out of the interface; every other frame passes on to user space as before. The
//! receiving packet sockets are bound to IPv4 and ARP, which the kernel serves after TC
//! ingress ([`super::packet`]), so they never see the frames the program takes: the
//! program alone decides.
//!
//! The programs and maps live as long as the process: after a crash the kernel detaches
//! them, and the nftables guard (which stays) keeps dropping the floating IPs' traffic.

use anyhow::{Context as _, anyhow, bail};
use aya::Ebpf;
use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TcAttachType, tc};
use egret_ebpf_common::gateway::{
    CONFIG_MAP, Config, FORWARD_PROGRAM, IN_MAP, InKey, InValue, OUT_MAP, OutKey, OutValue,
    STATS_MAP, Stats,
};
use smoltcp::time::{Duration, Instant};

use crate::datapath::FastChange;
use crate::nat::Flow;

/// egret-gateway's eBPF object, built from `ebpf/programs` by `build.rs`; empty when the gateway
/// was built with `EGRET_SKIP_EBPF_BUILD=1`.
fn embedded_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egret-gateway-ebpf"))
}

/// The loaded fast path.
pub struct FastPath {
    /// Owns the program and its link: dropping it detaches the program.
    _ebpf: Ebpf,
    config: Array<MapData, Config>,
    out: HashMap<MapData, OutKey, OutValue>,
    inbound: HashMap<MapData, InKey, InValue>,
    stats: PerCpuArray<MapData, Stats>,
    ifindex: u32,
    written: Option<Config>,
    /// Changes the kernel refused (a full map): those flows stay in user space.
    pub install_failures: u64,
}

impl FastPath {
    /// Loads the programs, attaches the TC program to `interface` (index `ifindex`), and
    /// leaves the fast path disabled until [`configure`](Self::configure).
    pub fn load(interface: &str, ifindex: u32) -> anyhow::Result<FastPath> {
        // With tcx links (Linux 6.6) the program goes with the process, even after kill -9;
        // an older kernel's netlink filter would stay attached and keep forwarding.
        let tcx = aya::util::KernelVersion::new(6, 6, 0);
        match aya::util::KernelVersion::current() {
            Ok(v) if v >= tcx => {}
            Ok(v) => bail!("needs Linux 6.6 or later (tcx links); this kernel is {v:?}"),
            Err(e) => bail!("cannot read the kernel version: {e}"),
        }
        let object = embedded_object();
        if object.is_empty() {
            bail!("this gateway was built with EGRET_SKIP_EBPF_BUILD=1: no eBPF object");
        }
        let mut ebpf = Ebpf::load(object).context("loading the eBPF object")?;
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("the eBPF object has no map {name}"))
        };
        let config = Array::try_from(take(&mut ebpf, CONFIG_MAP)?)?;
        let out = HashMap::try_from(take(&mut ebpf, OUT_MAP)?)?;
        let inbound = HashMap::try_from(take(&mut ebpf, IN_MAP)?)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, STATS_MAP)?)?;
        let forward: &mut SchedClassifier = program(&mut ebpf, FORWARD_PROGRAM)?.try_into()?;
        forward.load().context("loading the TC program")?;
        match tc::qdisc_add_clsact(interface) {
            Ok(()) => {}
            Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e).context(format!("adding the clsact qdisc to {interface}")),
        }
        // The link belongs to the program: it goes when `ebpf` is dropped.
        forward
            .attach(interface, TcAttachType::Ingress)
            .with_context(|| format!("attaching the TC program to {interface} ingress"))?;
        Ok(FastPath {
            _ebpf: ebpf,
            config,
            out,
            inbound,
            stats,
            ifindex,
            written: None,
            install_failures: 0,
        })
    }

    /// Writes the settings when they changed (`cfg` from `Datapath::fast_config`).
    pub fn configure(&mut self, mut cfg: Config) -> anyhow::Result<()> {
        cfg.ifindex = self.ifindex;
        if self.written == Some(cfg) {
            return Ok(());
        }
        self.config
            .set(0, cfg, 0)
            .context("writing the fast path's settings")?;
        self.written = Some(cfg);
        Ok(())
    }

    /// Turns the fast path off: every frame goes to user space again.
    pub fn disable(&mut self) -> anyhow::Result<()> {
        let cfg = Config {
            enabled: 0,
            ..self.written.unwrap_or_default()
        };
        self.config.set(0, cfg, 0)?;
        self.written = Some(cfg);
        Ok(())
    }

    /// Applies the core's changes in order, leaving `changes` empty.
    pub fn apply(&mut self, changes: &mut Vec<FastChange>) {
        for change in changes.drain(..) {
            match change {
                FastChange::Install { out, inbound } => {
                    let ok = self.out.insert(out.0, out.1, 0).is_ok()
                        && self.inbound.insert(inbound.0, inbound.1, 0).is_ok();
                    if !ok {
                        // Half an entry would forward one way only: take both out.
                        let _ = self.out.remove(&out.0);
                        self.install_failures += 1;
                    }
                }
                FastChange::Remove { out, inbound } => {
                    // A flow whose install failed has nothing to remove.
                    let _ = self.out.remove(&out);
                    let _ = self.inbound.remove(&inbound);
                }
            }
        }
    }

    /// When the fast path last forwarded a packet of `flow`, as a time of the caller's
    /// clock, which reads `now`.
    pub fn last_seen(&self, flow: &Flow, now: Instant) -> Option<Instant> {
        let (out, inbound) = crate::datapath::fast::keys(flow);
        let a = self.out.get(&out, 0).map_or(0, |v| v.last_seen_ns);
        let b = self.inbound.get(&inbound, 0).map_or(0, |v| v.last_seen_ns);
        let seen = a.max(b);
        if seen == 0 {
            return None;
        }
        let ago = monotonic_ns().saturating_sub(seen);
        Some(now - Duration::from_micros(ago / 1000))
    }

    /// What the fast path forwarded, summed over the CPUs.
    pub fn stats(&self) -> Stats {
        let mut sum = Stats::default();
        if let Ok(per_cpu) = self.stats.get(&0, 0) {
            for s in per_cpu.iter() {
                sum += *s;
            }
        }
        sum
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Loads the kernel fast path, unless the configuration turns it off. A gateway that
/// cannot load it runs without it, and says why.
pub fn load_wanted(
    wanted: bool,
    interface: &str,
    ifindex: u32,
) -> Result<std::sync::Mutex<FastPath>, String> {
    if !wanted {
        return Err("off in the configuration ([gateway].fast_path = false)".into());
    }
    match FastPath::load(interface, ifindex) {
        Ok(fast) => Ok(std::sync::Mutex::new(fast)),
        Err(e) => {
            let reason = format!("{e:#}");
            tracing::warn!(error = %reason, "kernel fast path unavailable: every packet goes through user space");
            Err(reason)
        }
    }
}
