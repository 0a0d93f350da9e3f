//! The gateway lab: egret's data path between a pod and an outside server, in namespaces.
//!
//! ```text
//!  pod 10.10.1.5 ── pod0 10.10.1.1  node 192.168.50.21 ─┐            ┌─ gw 192.168.50.11
//!                   (vxlan0 → 192.168.50.100:4800)       │ lan: br0   │  (egret-gateway owns
//!                                                        ├────────────┤   192.168.50.100)
//!                         stranger 192.168.50.40 ────────┘            └─ router 192.168.50.1
//!                                                                          │ 198.51.100.1
//!                                                                     outside 198.51.100.10
//! ```
//!
//! [`GatewayLab`] owns every namespace (`lan` holds the bridge), the gateway's config and log
//! in a work directory, and the gateway process; dropping it stops the process and then
//! removes everything, also during a panic. Links are not held as [`crate::Link`] guards: a
//! struct cannot hold guards borrowing its own fields, and deleting a namespace deletes every
//! interface in it (and the peer of every veth), so the namespace guards are enough.
//!
//! The router forwards without NAT and has no route to the pod network, so a reply can only
//! come back when the pod's traffic left with a source the router can reach: the floating IP
//! (egret mode) or the gw address (kernel mode). Two ways through the gw namespace:
//!
//! - [`Mode::Egret`]: the node tunnels the pod's traffic with the kernel's VXLAN to the
//!   floating IP, which no kernel holds as an address: `egret-gateway` answers for it in
//!   user space, and the gw kernel does not forward.
//! - [`Mode::Kernel`]: the baseline. The node routes the pod's traffic to the gw address and
//!   the gw kernel forwards it with nftables masquerade, as a Linux NAT router would.
//! - [`Mode::KernelTunnel`]: the node tunnels as in egret mode; the gw kernel holds the
//!   floating IP, ends the tunnel with its own VXLAN device (`vxgw`, 169.254.100.1, the
//!   node's `vxlan0` then 169.254.100.2) and forwards with the same masquerade.
//!
//! IPv6 is disabled in every lab namespace so that no router solicitation or neighbour
//! discovery frame reaches the gateway: the tests count the gateway's drops exactly.

use std::{
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    ops::{Deref, DerefMut},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Once,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{NetNs, check_output, ha::Snapshot, run_prefix};

/// The LAN between the gateway, the node, the router and the stranger.
pub const LAN_PREFIX_LEN: u8 = 24;
/// The gw namespace's own address on the LAN (`eth0`).
pub const GW_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 11);
/// The node's address on the LAN: the outer source of its tunnel, inside `allowed_sources`.
pub const NODE_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 21);
/// The router's LAN address, the gw namespace's default route.
pub const ROUTER_LAN_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// A LAN host outside `allowed_sources`.
pub const STRANGER_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 40);
/// The floating IP: the egress source address and the tunnel endpoint, held by no kernel.
pub const FLOATING_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 100);
/// The router's address towards the outside server.
pub const ROUTER_OUTSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The outside server.
pub const OUTSIDE_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The pod.
pub const POD_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 5);
/// The node's side of the pod's veth, the pod's default route.
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 1);
/// The next hop the node uses inside the tunnel; the gateway answers ARP for it (proxy ARP).
pub const TUNNEL_NEXT_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 100, 1);
/// VXLAN UDP port and VNI of the lab's tunnel.
pub const TUNNEL_PORT: u16 = 4800;
pub const VNI: u32 = 1;
/// The gateway API, on the gw namespace's own loopback.
pub const API_LISTEN: &str = "127.0.0.1:9477";
/// The pod network (all nodes).
pub const POD_NETWORK: &str = "10.10.0.0/16";
/// The routing table the node uses for the pod's traffic.
const POD_TABLE: &str = "100";

/// The Debian interpreter, which has python3-scapy: a `python3` earlier in `PATH` (pyenv, a
/// virtualenv) may not.
pub const PYTHON: &str = "/usr/bin/python3";

/// How long the gateway may take to own its floating IP after it starts. Without
/// `advert_interval` in the config VRRP's master-down interval is about 3.6 s.
const GATEWAY_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the gateway may take to exit after SIGTERM.
pub const GATEWAY_STOP_GRACE: Duration = Duration::from_secs(5);

/// The lab's gateway config: one floating IP, the node's /28 allowed, the API on loopback.
pub const GATEWAY_CONFIG: &str = r#"[gateway]
name = "gw1"
interface = "eth0"

[tunnel]
port = 4800
vni = 1
allowed_sources = ["192.168.50.16/28"]

[election]
priority = 100

[[floating_ip]]
address = "192.168.50.100"
vrid = 10

[nat]
port_range = "20000-60000"

[api]
listen = "127.0.0.1:9477"
"#;

/// The kernel baseline's NAT: masquerade what leaves the gw namespace from the pod network.
const BASELINE_RULESET: &str = "table ip egret_baseline {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"eth0\" ip saddr 10.10.0.0/16 masquerade
    }
}
";

/// Which way the pod's traffic crosses the gw namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Tunnelled to the floating IP, translated by `egret-gateway`.
    Egret,
    /// Routed to the gw address, masqueraded by the gw kernel (nftables).
    Kernel,
    /// Tunnelled to the floating IP as in egret mode, but the gw kernel holds the floating
    /// IP, ends the tunnel with a VXLAN device of its own, and masquerades (nftables): the
    /// same job as egret-gateway's, done by the kernel. Measurements only.
    KernelTunnel,
}

/// The path of the `egret-gateway` binary the lab runs: `$EGRET_GATEWAY_BIN`, else
/// `target/release/egret-gateway` of this workspace (`$CARGO_TARGET_DIR` if set).
///
/// Cargo offers `CARGO_BIN_EXE_*` only for binaries of the package under test, and the
/// gateway is another package, so the caller builds it first (`scripts/test` does).
///
/// # Errors
///
/// When the file does not exist, with the command that builds it.
pub fn gateway_binary() -> Result<PathBuf> {
    static WARNED: Once = Once::new();
    lab_binary(
        "egret-gateway",
        "EGRET_GATEWAY_BIN",
        &["gateway/src"],
        &WARNED,
    )
}

/// The path of the release binary `program` (also its package's name) that the lab runs:
/// `$<env>`, else `target/release/<program>` of this workspace (`$CARGO_TARGET_DIR` if set).
/// Warns once (`warned`) when it is older than the files under `sources` (directories of the
/// workspace).
///
/// # Errors
///
/// When the file does not exist, with the command that builds it.
pub(crate) fn lab_binary(
    program: &str,
    env: &str,
    sources: &[&str],
    warned: &Once,
) -> Result<PathBuf> {
    let path = match std::env::var_os(env) {
        Some(path) => PathBuf::from(path),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || workspace_root().join("target"),
                |dir| workspace_root().join(dir),
            );
            target.join("release").join(program)
        }
    };
    ensure!(
        path.is_file(),
        "no {program} binary at {}: build it with `cargo build --release -p {program}` \
         (scripts/test does), or point {env} at one",
        path.display()
    );
    // A plain `cargo test` does not rebuild it: say so rather than test old code unawares.
    let built = fs::metadata(&path).and_then(|meta| meta.modified()).ok();
    let edited = sources
        .iter()
        .filter_map(|dir| newest_modification(&workspace_root().join(dir)))
        .max();
    if let (Some(built), Some(edited)) = (built, edited)
        && edited > built
    {
        warned.call_once(|| {
            eprintln!(
                "egret-lab: warning: {} is older than the {}'s sources; rebuild it with \
                 `cargo build --release -p {program}`",
                path.display(),
                program.trim_start_matches("egret-")
            );
        });
    }
    Ok(path)
}

/// The latest modification time of the files under `dir`.
fn newest_modification(dir: &Path) -> Option<std::time::SystemTime> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            if meta.is_dir() {
                newest_modification(&entry.path())
            } else {
                meta.modified().ok()
            }
        })
        .max()
}

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// The helper scripts the lab runs inside namespaces (`tests/scripts`).
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

/// The gateway lab. Fields drop in order: the gateway process first (a process inside a
/// namespace keeps its interfaces alive), then the work directory, then the namespaces.
pub struct GatewayLab {
    gateway: Option<Gateway>,
    mode: Mode,
    workdir: WorkDir,
    config: PathBuf,
    /// `[gateway].fast_path` when set, else the default.
    fast_path: Option<bool>,
    /// `[api].listen`.
    api_listen: SocketAddr,
    starts: u32,
    lan: NetNs,
    gw: NetNs,
    node: NetNs,
    pod: NetNs,
    router: NetNs,
    outside: NetNs,
    stranger: NetNs,
}

impl GatewayLab {
    /// Builds the topology in namespaces `<run prefix>-<tag>-<name>`, in egret mode with the
    /// gateway not started. `tag` tells apart labs of one process (tests run in parallel).
    ///
    /// # Errors
    ///
    /// When a namespace, link, address, route or sysctl cannot be set up; whatever was made
    /// is removed again.
    pub fn new(tag: &str) -> Result<Self> {
        let workdir = WorkDir::new(tag)?;
        let config = workdir.path().join("gateway.toml");
        fs::write(&config, GATEWAY_CONFIG)
            .with_context(|| format!("writing {}", config.display()))?;
        let ns = |name: &str| NetNs::new(&format!("{tag}-{name}"));
        // Should one of these fail, the namespaces already made drop with this expression.
        let lab = Self {
            gateway: None,
            mode: Mode::Egret,
            workdir,
            config,
            fast_path: None,
            api_listen: API_LISTEN.parse().context("API_LISTEN")?,
            starts: 0,
            lan: ns("lan")?,
            gw: ns("gw")?,
            node: ns("node")?,
            pod: ns("pod")?,
            router: ns("router")?,
            outside: ns("outside")?,
            stranger: ns("stranger")?,
        };
        lab.wire().context("building the gateway lab")?;
        lab.apply_mode(Mode::Egret)?;
        Ok(lab)
    }

    fn all(&self) -> [&NetNs; 7] {
        [
            &self.lan,
            &self.gw,
            &self.node,
            &self.pod,
            &self.router,
            &self.outside,
            &self.stranger,
        ]
    }

    fn wire(&self) -> Result<()> {
        for ns in self.all() {
            disable_ipv6(ns)?;
        }
        // Before any link exists, so that every interface of the node starts with it off.
        sysctl(&self.node, "net.ipv4.conf.all.rp_filter", "0")?;
        sysctl(&self.node, "net.ipv4.conf.default.rp_filter", "0")?;

        lan_switch(&self.lan)?;
        for (host, port, host_address) in [
            (&self.gw, "gw", GW_ADDRESS),
            (&self.node, "node", NODE_ADDRESS),
            (&self.router, "router", ROUTER_LAN_ADDRESS),
            (&self.stranger, "stranger", STRANGER_ADDRESS),
        ] {
            join_lan(&self.lan, port, host, host_address)?;
        }
        cable(&self.router, "eth1", &self.outside, "eth0")?;
        cable(&self.node, "pod0", &self.pod, "eth0")?;

        address(
            &self.router,
            "eth1",
            &format!("{ROUTER_OUTSIDE_ADDRESS}/24"),
        )?;
        address(&self.outside, "eth0", &format!("{OUTSIDE_ADDRESS}/24"))?;
        address(&self.node, "pod0", &format!("{POD_GATEWAY}/24"))?;
        address(&self.pod, "eth0", &format!("{POD_ADDRESS}/24"))?;

        default_route(&self.gw, ROUTER_LAN_ADDRESS)?;
        default_route(&self.outside, ROUTER_OUTSIDE_ADDRESS)?;
        default_route(&self.pod, POD_GATEWAY)?;
        // The router forwards, without NAT and without a route to the pod network.
        sysctl(&self.router, "net.ipv4.ip_forward", "1")?;

        // The node: forwards the pod's traffic, tunnel or not, and takes the replies from
        // vxlan0 although its main table has no route back to their sources.
        sysctl(&self.node, "net.ipv4.ip_forward", "1")?;
        self.node.ip([
            "link",
            "add",
            "vxlan0",
            "type",
            "vxlan",
            "id",
            "1",
            "dstport",
            "4800",
            "remote",
            "192.168.50.100",
            "local",
            "192.168.50.21",
            "dev",
            "eth0",
        ])?;
        self.node.ip(["link", "set", "dev", "vxlan0", "up"])?;
        for interface in ["eth0", "pod0", "vxlan0"] {
            sysctl(
                &self.node,
                &format!("net.ipv4.conf.{interface}.rp_filter"),
                "0",
            )?;
        }
        self.node
            .ip(["rule", "add", "iif", "pod0", "lookup", POD_TABLE])?;
        Ok(())
    }

    /// Switches the way the pod's traffic takes; see [`Mode`]. Stop the gateway before
    /// measuring kernel mode: it would compete for the CPUs (and may own `eth0`'s traffic).
    ///
    /// # Errors
    ///
    /// When `ip`, `sysctl` or `nft` fails.
    pub fn set_mode(&mut self, mode: Mode) -> Result<()> {
        self.apply_mode(mode)?;
        self.mode = mode;
        Ok(())
    }

    fn apply_mode(&self, mode: Mode) -> Result<()> {
        let has_baseline = self
            .gw
            .exec("nft", ["list", "table", "ip", "egret_baseline"])
            .is_ok();
        if self.mode == Mode::KernelTunnel && mode != Mode::KernelTunnel {
            self.leave_kernel_tunnel()?;
        }
        match mode {
            Mode::Egret => {
                self.set_gw_forwarding(false)?;
                if has_baseline {
                    self.gw
                        .exec("nft", ["delete", "table", "ip", "egret_baseline"])?;
                }
                // Nothing in the gw kernel knows the pod network; should it forward anyway
                // (a test turns forwarding on), its redirects show in its ICMP counters.
                self.gw.ip(["route", "flush", "exact", POD_NETWORK])?;
                self.set_gw_redirects(true)?;
                let next_hop = TUNNEL_NEXT_HOP.to_string();
                self.node.ip([
                    "route", "replace", "default", "via", &next_hop, "dev", "vxlan0", "onlink",
                    "table", POD_TABLE,
                ])?;
            }
            Mode::Kernel | Mode::KernelTunnel => {
                if !has_baseline {
                    let rules = self.workdir.path().join("baseline.nft");
                    fs::write(&rules, BASELINE_RULESET)
                        .with_context(|| format!("writing {}", rules.display()))?;
                    self.gw.exec("nft", [Path::new("-f"), rules.as_path()])?;
                }
                if mode == Mode::KernelTunnel {
                    return self.enter_kernel_tunnel();
                }
                // The way back to the pods, which a NAT router in front of a cluster has.
                let node = NODE_ADDRESS.to_string();
                self.gw
                    .ip(["route", "replace", POD_NETWORK, "via", &node, "dev", "eth0"])?;
                // The gw forwards out of the interface the traffic came in by; its redirects
                // would teach the node to bypass it, and the NAT with it.
                self.set_gw_redirects(false)?;
                self.set_gw_forwarding(true)?;
                let gw = GW_ADDRESS.to_string();
                self.node.ip([
                    "route", "replace", "default", "via", &gw, "dev", "eth0", "table", POD_TABLE,
                ])?;
            }
        }
        Ok(())
    }

    /// The gw kernel ends the node's tunnel at the floating IP and masquerades (the
    /// baseline's ruleset is in place).
    fn enter_kernel_tunnel(&self) -> Result<()> {
        let floating = FLOATING_IP.to_string();
        let node = NODE_ADDRESS.to_string();
        self.gw
            .ip(["addr", "replace", &format!("{floating}/32"), "dev", "eth0"])?;
        if self.gw.ip(["link", "show", "dev", "vxgw"]).is_err() {
            let (vni, port) = (VNI.to_string(), TUNNEL_PORT.to_string());
            self.gw.ip([
                "link", "add", "vxgw", "type", "vxlan", "id", &vni, "dstport", &port, "remote",
                &node, "local", &floating, "dev", "eth0",
            ])?;
        }
        self.gw.ip([
            "addr",
            "replace",
            &format!("{TUNNEL_NEXT_HOP}/24"),
            "dev",
            "vxgw",
        ])?;
        self.gw.ip(["link", "set", "dev", "vxgw", "up"])?;
        self.node
            .ip(["addr", "replace", "169.254.100.2/24", "dev", "vxlan0"])?;
        self.node.ip(["neigh", "flush", "dev", "vxlan0"])?;
        self.gw.ip([
            "route",
            "replace",
            POD_NETWORK,
            "via",
            "169.254.100.2",
            "dev",
            "vxgw",
        ])?;
        self.set_gw_redirects(false)?;
        self.set_gw_forwarding(true)?;
        let next_hop = TUNNEL_NEXT_HOP.to_string();
        self.node.ip([
            "route", "replace", "default", "via", &next_hop, "dev", "vxlan0", "onlink", "table",
            POD_TABLE,
        ])?;
        Ok(())
    }

    /// Undoes [`Self::enter_kernel_tunnel`] but for the ruleset and the routes the next
    /// mode sets.
    fn leave_kernel_tunnel(&self) -> Result<()> {
        self.gw.ip(["route", "flush", "exact", POD_NETWORK])?;
        self.gw.ip(["link", "del", "vxgw"])?;
        let floating = format!("{FLOATING_IP}/32");
        self.gw.ip(["addr", "del", &floating, "dev", "eth0"])?;
        self.node.ip(["addr", "flush", "dev", "vxlan0"])?;
        self.node.ip(["neigh", "flush", "dev", "vxlan0"])?;
        Ok(())
    }

    fn set_gw_redirects(&self, on: bool) -> Result<()> {
        let value = if on { "1" } else { "0" };
        sysctl(&self.gw, "net.ipv4.conf.all.send_redirects", value)?;
        sysctl(&self.gw, "net.ipv4.conf.eth0.send_redirects", value)
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Sets `net.ipv4.ip_forward` in the gw namespace. Egret mode leaves it off; a test turns
    /// it on to show that the gateway keeps the kernel out of the floating IP's traffic.
    ///
    /// # Errors
    ///
    /// When `sysctl` fails.
    pub fn set_gw_forwarding(&self, on: bool) -> Result<()> {
        sysctl(&self.gw, "net.ipv4.ip_forward", if on { "1" } else { "0" })
    }

    /// The namespace holding the bridge `br0`.
    pub fn lan(&self) -> &NetNs {
        &self.lan
    }
    /// The gateway host.
    pub fn gw(&self) -> &NetNs {
        &self.gw
    }
    /// The Kubernetes node with the pod's veth and the VXLAN device.
    pub fn node(&self) -> &NetNs {
        &self.node
    }
    /// The pod.
    pub fn pod(&self) -> &NetNs {
        &self.pod
    }
    /// The router between the LAN and the outside server.
    pub fn router(&self) -> &NetNs {
        &self.router
    }
    /// The outside server.
    pub fn outside(&self) -> &NetNs {
        &self.outside
    }
    /// A LAN host whose address is not in `allowed_sources`.
    pub fn stranger(&self) -> &NetNs {
        &self.stranger
    }

    /// The lab's scratch directory, removed with the lab.
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// Turns the gateway's kernel fast path on or off (`[gateway].fast_path`) for its next
    /// start.
    ///
    /// # Errors
    ///
    /// When the config cannot be written.
    pub fn set_fast_path(&mut self, on: bool) -> Result<()> {
        self.fast_path = Some(on);
        self.write_config()
    }

    /// Sets the gateway's `[api].listen` (default [`API_LISTEN`]) for its next start; the
    /// lab's own API requests ([`GatewayLab::api_get`]) go there, from the gw namespace.
    ///
    /// # Errors
    ///
    /// When the config cannot be written.
    pub fn set_api_listen(&mut self, listen: SocketAddr) -> Result<()> {
        self.api_listen = listen;
        self.write_config()
    }

    /// Writes [`GATEWAY_CONFIG`] with the settings made to the lab.
    fn write_config(&self) -> Result<()> {
        let mut text = GATEWAY_CONFIG.replacen(
            &format!("listen = \"{API_LISTEN}\"\n"),
            &format!("listen = \"{}\"\n", self.api_listen),
            1,
        );
        if let Some(on) = self.fast_path {
            text = text.replacen(
                "interface = \"eth0\"\n",
                &format!("interface = \"eth0\"\nfast_path = {on}\n"),
                1,
            );
        }
        fs::write(&self.config, text).with_context(|| format!("writing {}", self.config.display()))
    }

    /// The gateway config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Starts `egret-gateway run` in the gw namespace (RUST_LOG=info, output to a log file
    /// in the work directory) and waits until its API reports every floating IP as `master`.
    ///
    /// # Errors
    ///
    /// When the binary is missing, the gateway exits, or it is not ready in time; the error
    /// carries the end of its log and its last `/status`.
    pub fn start_gateway(&mut self) -> Result<()> {
        ensure!(self.gateway.is_none(), "the gateway is already running");
        let binary = gateway_binary()?;
        self.starts += 1;
        let log = self
            .workdir
            .path()
            .join(format!("gateway-{}.log", self.starts));
        let gateway = Gateway::start(&self.gw, &binary, &self.config, &log)?;
        self.gateway = Some(gateway);
        self.wait_gateway_ready(GATEWAY_READY_TIMEOUT)
    }

    fn wait_gateway_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.gateway_mut()?.ensure_running()?;
            let last = match self.api_get("/status") {
                Ok(body) if all_floating_ips_master(&body) => return Ok(()),
                Ok(body) => body,
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() >= deadline {
                let log = self.gateway_mut()?.log_tail(40);
                bail!(
                    "egret-gateway did not own its floating IP within {timeout:?}; last \
                     /status: {last}\n--- gateway log (end) ---\n{log}"
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The running gateway.
    ///
    /// # Errors
    ///
    /// When it was not started.
    pub fn gateway_mut(&mut self) -> Result<&mut Gateway> {
        self.gateway
            .as_mut()
            .context("the gateway is not running (start_gateway)")
    }

    /// Whether the gateway was started and not stopped.
    pub fn gateway_started(&self) -> bool {
        self.gateway.is_some()
    }

    /// Stops the gateway with SIGTERM (SIGKILL after [`GATEWAY_STOP_GRACE`]); see
    /// [`Gateway::stop`].
    ///
    /// # Errors
    ///
    /// When it was not running, or did not exit in time.
    pub fn stop_gateway(&mut self) -> Result<Stopped> {
        let gateway = self.gateway.take().context("the gateway is not running")?;
        gateway.stop()
    }

    /// Stops the gateway with SIGTERM and checks that it exited with status 0.
    ///
    /// # Errors
    ///
    /// When it was not running, or exited otherwise (with the end of its log).
    pub fn stop_gateway_cleanly(&mut self) -> Result<Stopped> {
        let stopped = self.stop_gateway()?;
        ensure!(
            stopped.status.code() == Some(0),
            "egret-gateway exited with {} after SIGTERM\n--- gateway log (end) ---\n{}",
            stopped.status,
            stopped.log
        );
        Ok(stopped)
    }

    /// `GET http://<[api].listen><path>` from inside the gw namespace.
    ///
    /// # Errors
    ///
    /// When curl fails (no answer, HTTP error status).
    pub fn api_get(&self, path: &str) -> Result<String> {
        api_get(&self.gw, self.api_listen, path)
    }

    /// The gateway's `/metrics`, parsed.
    ///
    /// # Errors
    ///
    /// When the API does not answer or the text is not Prometheus exposition format.
    pub fn metrics(&self) -> Result<Metrics> {
        Metrics::parse(&self.api_get("/metrics")?)
    }

    /// The gateway's `/metrics` once it published a snapshot taken after `action` ended
    /// ([`Snapshot::taken_after`]): they count everything the action caused. (`/metrics`
    /// renders the same snapshot as `/status`, or a newer one.)
    ///
    /// # Errors
    ///
    /// When the API does not answer or no such snapshot comes.
    pub fn metrics_after(&self, action: SystemTime) -> Result<Metrics> {
        Snapshot::taken_after("egret-gateway", action, || {
            Snapshot::parse(&self.api_get("/status")?)
        })?;
        self.metrics()
    }

    /// `/proc/net/snmp` of a namespace, parsed.
    ///
    /// # Errors
    ///
    /// When it cannot be read or parsed.
    pub fn snmp(&self, ns: &NetNs) -> Result<Snmp> {
        Snmp::parse(&ns.exec("cat", ["/proc/net/snmp"])?)
    }

    /// The MAC `ns` has learnt for `address` on `interface` after one ping (answered or not:
    /// the ARP exchange is what matters), e.g. the MAC the gateway answers for the floating
    /// IP with.
    ///
    /// # Errors
    ///
    /// When the address does not resolve.
    pub fn resolve_mac(&self, ns: &NetNs, interface: &str, address: Ipv4Addr) -> Result<String> {
        let mut last = String::new();
        for _ in 0..3 {
            let _replies = ns.ping(interface, address.into(), 1)?;
            last = ns.ip(["neigh", "show", &address.to_string(), "dev", interface])?;
            if let Some(mac) = lladdr(&last) {
                return Ok(mac);
            }
        }
        bail!(
            "{address} does not resolve on {interface} of {}: {}",
            ns.name(),
            last.trim()
        )
    }

    /// The MAC of `interface` in `ns`.
    ///
    /// # Errors
    ///
    /// When `ip` fails or shows no MAC.
    pub fn mac_of(&self, ns: &NetNs, interface: &str) -> Result<String> {
        interface_mac(ns, interface)
    }

    /// Whether the floating IP appears among the gw namespace's kernel addresses.
    ///
    /// # Errors
    ///
    /// When `ip` fails.
    pub fn gw_kernel_holds_floating_ip(&self) -> Result<bool> {
        let shown = self.gw.ip(["-4", "addr", "show"])?;
        Ok(shown.contains(&format!("inet {FLOATING_IP}/")))
    }

    /// Which source addresses the outside server sees for a TCP connection, a UDP datagram
    /// and an ICMP echo from the pod (`tests/scripts/peer_sources.py` listens).
    ///
    /// # Errors
    ///
    /// When the listener sees nothing for one of them within `timeout`.
    pub fn outside_view_of_pod(&self, timeout: Duration) -> Result<PeerSources> {
        peer_sources(self.pod_end(), self.outside_end(), 1, 1, timeout)
    }

    /// Sends `bytes` of pseudo-random data over one TCP connection (socat on both ends) and
    /// returns both ends' SHA-256.
    ///
    /// # Errors
    ///
    /// When either end fails or the transfer takes longer than `timeout`.
    pub fn tcp_transfer(
        &self,
        direction: Direction,
        bytes: u64,
        port: u16,
        timeout: Duration,
    ) -> Result<Transfer> {
        socat_transfer(
            self.pod_end(),
            self.outside_end(),
            self.workdir.path(),
            direction,
            bytes,
            port,
            timeout,
        )
    }

    fn pod_end(&self) -> End<'_> {
        End::new(&self.pod, POD_ADDRESS)
    }

    fn outside_end(&self) -> End<'_> {
        End::new(&self.outside, OUTSIDE_ADDRESS)
    }
}

/// One end of the lab's test traffic: a namespace and the address its sockets bind to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct End<'a> {
    pub(crate) ns: &'a NetNs,
    pub(crate) address: Ipv4Addr,
}

impl<'a> End<'a> {
    pub(crate) fn new(ns: &'a NetNs, address: Ipv4Addr) -> Self {
        Self { ns, address }
    }
}

/// The ports `tests/scripts/peer_sources.py` listens on for [`peer_sources`]: TCP, UDP.
const PEER_SOURCES_PORTS: (u16, u16) = (7001, 7002);

/// Which source addresses `listener` sees for a TCP connection, `datagrams` UDP datagrams
/// (100 ms apart) and `pings` ICMP echoes from `pod` (`tests/scripts/peer_sources.py` listens
/// on the listener's address, ports 7001 and 7002).
///
/// # Errors
///
/// When the listener sees nothing for one of them within `timeout`.
pub(crate) fn peer_sources(
    pod: End<'_>,
    listener: End<'_>,
    datagrams: u32,
    pings: u32,
    timeout: Duration,
) -> Result<PeerSources> {
    let (tcp_port, udp_port) = PEER_SOURCES_PORTS;
    let (source, destination) = (pod.address, listener.address);
    let mut script = Background::spawn(
        listener
            .ns
            .command(PYTHON)
            .arg(scripts_dir().join("peer_sources.py"))
            .args([
                destination.to_string(),
                tcp_port.to_string(),
                udp_port.to_string(),
                timeout.as_secs().max(1).to_string(),
            ]),
    )?;
    script.ready(Duration::from_secs(10))?;
    // Each in its own way: a failure here shows in the listener's report below.
    let tcp = run_with_timeout(
        pod.ns.command("socat").args([
            "-u".to_owned(),
            "STDIN".to_owned(),
            format!("TCP:{destination}:{tcp_port},bind={source},connect-timeout=5"),
        ]),
        Duration::from_secs(10),
    );
    let udp = run_with_timeout(
        pod.ns.command(PYTHON).args([
            "-c".to_owned(),
            format!(
                "import socket, time\n\
                 s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                 s.bind(('{source}', 0))\n\
                 for _ in range({datagrams}):\n    \
                     s.sendto(b'egret', ('{destination}', {udp_port}))\n    \
                     time.sleep(0.1)\n"
            ),
        ]),
        Duration::from_secs(10),
    );
    let icmp = pod.ns.ping("eth0", destination.into(), pings);
    let finished = script.wait(timeout + Duration::from_secs(5))?;
    let mut seen = PeerSources::default();
    for line in &finished.stdout {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(address)) = (words.next(), words.next()) else {
            continue;
        };
        let address: Ipv4Addr = address
            .parse()
            .with_context(|| format!("peer_sources.py printed {line:?}"))?;
        match kind {
            "tcp" => seen.tcp = Some(address),
            "udp" => seen.udp = Some(address),
            "icmp" => seen.icmp = Some(address),
            _ => {}
        }
    }
    if seen.tcp.is_none() || seen.udp.is_none() || seen.icmp.is_none() {
        bail!(
            "{destination} did not see every probe from {source}: {seen:?}; senders: tcp \
             {tcp:?}, udp {udp:?}, icmp (replies) {icmp:?}; listener stderr: {}",
            finished.stderr.trim()
        );
    }
    Ok(seen)
}

/// Sends `bytes` of pseudo-random data over one TCP connection between `pod` and `outside`
/// (socat on both ends, `port` on the outside end, the files in `workdir`) and returns both
/// ends' SHA-256.
///
/// # Errors
///
/// When either end fails or the transfer takes longer than `timeout`.
pub(crate) fn socat_transfer(
    pod: End<'_>,
    outside: End<'_>,
    workdir: &Path,
    direction: Direction,
    bytes: u64,
    port: u16,
    timeout: Duration,
) -> Result<Transfer> {
    let name = format!("{}-{direction:?}-{port}", pod.address).to_lowercase();
    let source = workdir.join(format!("{name}.sent"));
    let sink = workdir.join(format!("{name}.received"));
    write_pseudo_random(&source, bytes, u64::from(port))?;
    let listen = format!("TCP-LISTEN:{port},bind={},reuseaddr", outside.address);
    let connect = format!(
        "TCP:{}:{port},bind={},connect-timeout=5",
        outside.address, pod.address
    );
    let file = |path: &Path| format!("FILE:{}", path.display());
    let create = |path: &Path| format!("CREATE:{}", path.display());
    let started = Instant::now();
    let (server_args, client_args) = match direction {
        Direction::PodToOutside => ([listen, create(&sink)], [file(&source), connect]),
        Direction::OutsideToPod => ([file(&source), listen], [connect, create(&sink)]),
    };
    let server = Background::spawn(outside.ns.command("socat").arg("-u").args(&server_args))?;
    wait_listening(outside.ns, "tcp", port, Duration::from_secs(5))?;
    let client = run_with_timeout(
        pod.ns.command("socat").arg("-u").args(&client_args),
        timeout,
    );
    let server = server.wait(Duration::from_secs(10));
    let elapsed = started.elapsed();
    client.context("the pod's end of the transfer")?;
    let server = server?;
    ensure!(
        server.status.success(),
        "the outside end of the transfer: {}: {}",
        server.status,
        server.stderr.trim()
    );
    let received = fs::metadata(&sink)
        .with_context(|| format!("reading {}", sink.display()))?
        .len();
    let transfer = Transfer {
        bytes,
        received,
        sent_sha256: sha256(&source)?,
        received_sha256: sha256(&sink)?,
        elapsed,
    };
    // The data is of no further use, and 50 MB files add up over a run.
    let _ = fs::remove_file(&source);
    let _ = fs::remove_file(&sink);
    Ok(transfer)
}

/// Which way a [`GatewayLab::tcp_transfer`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The pod connects and sends.
    PodToOutside,
    /// The pod connects and receives.
    OutsideToPod,
}

/// The outcome of a [`GatewayLab::tcp_transfer`].
#[derive(Debug, Clone)]
pub struct Transfer {
    pub bytes: u64,
    pub received: u64,
    pub sent_sha256: String,
    pub received_sha256: String,
    pub elapsed: Duration,
}

impl Transfer {
    /// Whether every byte arrived unchanged.
    pub fn exact(&self) -> bool {
        self.received == self.bytes && self.sent_sha256 == self.received_sha256
    }
}

/// Source addresses the outside server saw, per protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerSources {
    pub tcp: Option<Ipv4Addr>,
    pub udp: Option<Ipv4Addr>,
    pub icmp: Option<Ipv4Addr>,
}

/// A lab daemon, `egret-<role> run` in a namespace, its stdout and stderr in a log file:
/// what [`Gateway`] and [`crate::egress::Agent`] are. Dropping it kills it (SIGKILL) and
/// reaps it, unless it was stopped before; a [`Gateway`] stops its own gently first.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    /// `gateway` or `agent`: the program is `egret-<role>`.
    role: &'static str,
}

impl Daemon {
    /// Starts `<binary> run --config <config>` in `ns` (RUST_LOG=info), its stdout and stderr
    /// into `log`.
    pub(crate) fn start(
        ns: &NetNs,
        binary: &Path,
        config: &Path,
        log: &Path,
        role: &'static str,
    ) -> Result<Self> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        // `ip netns exec` execs the program without forking, so the child is the daemon
        // itself and signals reach it directly.
        let child = ns
            .command(binary)
            .args([Path::new("run"), Path::new("--config"), config])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} in {}", binary.display(), ns.name()))?;
        Ok(Self {
            child: Some(child),
            log: log.to_owned(),
            role,
        })
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log file (its stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Fails when the process has exited, with its status and the end of its log.
    ///
    /// # Errors
    ///
    /// When it has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        let role = self.role;
        let child = self
            .child
            .as_mut()
            .with_context(|| format!("the {role} was stopped"))?;
        if let Some(status) = child.try_wait()? {
            bail!(
                "egret-{role} exited ({status})\n--- {role} log (end) ---\n{}",
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`).
    ///
    /// # Errors
    ///
    /// When it does not run.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        self.ensure_running()?;
        let pid = self
            .pid()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .context("no pid")?;
        // SAFETY: kill has no memory preconditions; the pid is our own unreaped child, which
        // `ensure_running` just saw alive.
        let sent = unsafe { libc::kill(pid, signal) };
        ensure!(
            sent == 0,
            "signalling the {}: {}",
            self.role,
            std::io::Error::last_os_error()
        );
        Ok(())
    }

    /// SIGKILL, and reaps it.
    ///
    /// # Errors
    ///
    /// When it was already stopped.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        let mut child = self.take()?;
        child.kill()?;
        Ok(child.wait()?)
    }

    /// SIGTERM; SIGKILL after `grace`. Returns its exit status, how long it took and whether
    /// it had to be killed.
    ///
    /// # Errors
    ///
    /// When it was already stopped.
    pub fn terminate(&mut self, grace: Duration) -> Result<(ExitStatus, Duration, bool)> {
        let mut child = self.take()?;
        terminate(&mut child, grace)
    }

    /// The process, to stop: the daemon counts as stopped from now on.
    fn take(&mut self) -> Result<Child> {
        self.child
            .take()
            .with_context(|| format!("the {} was stopped", self.role))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `egret-gateway run` in a namespace (see [`Daemon`] for what else it does). Dropping it
/// stops it like [`Gateway::stop`].
pub struct Gateway(Daemon);

impl Gateway {
    /// Starts `egret-gateway run --config <config>` in `gw` (RUST_LOG=info), its stdout and
    /// stderr into `log`.
    pub(crate) fn start(gw: &NetNs, binary: &Path, config: &Path, log: &Path) -> Result<Self> {
        Daemon::start(gw, binary, config, log, "gateway").map(Self)
    }

    /// Sends SIGTERM and waits up to [`GATEWAY_STOP_GRACE`] for the gateway to exit; kills it
    /// after that.
    ///
    /// # Errors
    ///
    /// When it had to be killed.
    pub fn stop(mut self) -> Result<Stopped> {
        let (status, elapsed, killed) = self.terminate(GATEWAY_STOP_GRACE)?;
        ensure!(
            !killed,
            "egret-gateway did not exit within {GATEWAY_STOP_GRACE:?} of SIGTERM and was \
             killed\n--- gateway log (end) ---\n{}",
            self.log_tail(40)
        );
        Ok(Stopped {
            status,
            elapsed,
            log: self.log_tail(40),
        })
    }
}

impl Deref for Gateway {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.0
    }
}

impl DerefMut for Gateway {
    fn deref_mut(&mut self) -> &mut Daemon {
        &mut self.0
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.child.take()
            && let Err(err) = terminate(&mut child, GATEWAY_STOP_GRACE)
        {
            eprintln!("egret-lab: stopping egret-gateway: {err:#}");
        }
    }
}

/// How a stopped gateway ended.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// From SIGTERM to exit.
    pub elapsed: Duration,
    /// The end of its log.
    pub log: String,
}

/// SIGTERM, then SIGKILL after `grace`; returns the exit status, how long it took and whether
/// it had to be killed.
pub(crate) fn terminate(
    child: &mut Child,
    grace: Duration,
) -> Result<(ExitStatus, Duration, bool)> {
    let started = Instant::now();
    if let Some(status) = child.try_wait()? {
        return Ok((status, Duration::ZERO, false));
    }
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    // SAFETY: kill has no memory preconditions; the pid is our own unreaped child, so it
    // cannot have been reused by another process.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    while started.elapsed() < grace {
        if let Some(status) = child.try_wait()? {
            return Ok((status, started.elapsed(), false));
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.kill()?;
    Ok((child.wait()?, started.elapsed(), true))
}

/// A process running alongside a test (listener, server), stopped when dropped. Its stdout and
/// its stderr are read line by line as they come; its stderr is also collected.
pub struct Background {
    child: Option<Child>,
    what: String,
    lines: Receiver<String>,
    stderr_lines: Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
}

impl Background {
    /// Spawns `command` (stdin from /dev/null, stdout and stderr piped).
    ///
    /// # Errors
    ///
    /// When it cannot start.
    pub fn spawn(command: &mut Command) -> Result<Self> {
        let what = crate::command::command_line(command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{what}`"))?;
        let stdout = child.stdout.take().context("stdout not piped")?;
        let stderr = child.stderr.take().context("stderr not piped")?;
        let (sender, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let (sender, stderr_lines) = mpsc::channel();
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                text.push_str(&line);
                text.push('\n');
                // Nobody need be waiting for it: the text keeps it.
                let _ = sender.send(line);
            }
            text
        });
        Ok(Self {
            child: Some(child),
            what,
            lines,
            stderr_lines,
            stderr: Some(stderr),
        })
    }

    /// Waits for the next line of its stdout to be `ready`, which the lab's scripts print once
    /// they listen (or are about to send).
    ///
    /// # Errors
    ///
    /// When another line comes first, or none within `timeout`.
    pub fn ready(&mut self, timeout: Duration) -> Result<()> {
        let line = self.line(timeout)?;
        ensure!(
            line.as_deref() == Some("ready"),
            "`{}` did not start: it said {line:?}",
            self.what
        );
        Ok(())
    }

    /// Waits for a line of its stderr that contains `text` (tcpdump says `listening on` there
    /// once its capture runs) and returns it; lines before it are skipped.
    ///
    /// # Errors
    ///
    /// When it closes its stderr first, or says no such line within `timeout`.
    pub fn stderr_line(&mut self, text: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => return Ok(line),
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("`{}` closed its stderr without saying {text:?}", self.what)
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("`{}` did not say {text:?} within {timeout:?}", self.what)
                }
            }
        }
    }

    /// The next line of its stdout; `None` when stdout closed.
    ///
    /// # Errors
    ///
    /// When no line comes within `timeout`.
    pub fn line(&mut self, timeout: Duration) -> Result<Option<String>> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Ok(Some(line)),
            Err(RecvTimeoutError::Disconnected) => Ok(None),
            Err(RecvTimeoutError::Timeout) => {
                bail!("`{}` printed nothing within {timeout:?}", self.what)
            }
        }
    }

    /// Waits for it to exit by itself.
    ///
    /// # Errors
    ///
    /// When it is still running after `timeout` (it is stopped then).
    pub fn wait(mut self, timeout: Duration) -> Result<Finished> {
        let mut child = self.child.take().context("already waited for")?;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = terminate(&mut child, Duration::from_secs(1));
                bail!("`{}` still running after {timeout:?}", self.what);
            }
            thread::sleep(Duration::from_millis(20));
        };
        Ok(self.finished(status))
    }

    /// What it left once it exited with `status`: its output, all of it.
    fn finished(&mut self, status: std::process::ExitStatus) -> Finished {
        let stderr = self
            .stderr
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let stdout = self.lines.iter().collect();
        Finished {
            status,
            stdout,
            stderr,
        }
    }

    /// Stops it (SIGTERM, SIGKILL after `grace`) and returns what it left: a process that
    /// runs until told to stop, and then reports.
    ///
    /// # Errors
    ///
    /// When it was already waited for.
    pub fn stop(mut self, grace: Duration) -> Result<Finished> {
        let mut child = self.child.take().context("already waited for")?;
        let (status, _, _) = terminate(&mut child, grace)?;
        Ok(self.finished(status))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(err) = terminate(&mut child, Duration::from_secs(2))
        {
            eprintln!("egret-lab: stopping `{}`: {err:#}", self.what);
        }
    }
}

/// What a [`Background`] process left when it exited.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Its stdout lines not yet read with [`Background::line`].
    pub stdout: Vec<String>,
    pub stderr: String,
}

/// A generator script of the lab (`tests/scripts`) running in the background. It prints
/// what it is about to send, then `ready` just before its first packet leaves, and at the
/// end `sent N ... last T`: how many it sent, and T the wall-clock time (Unix seconds) its
/// last one left.
pub struct Generator {
    background: Background,
    what: String,
    /// The lines it printed before `ready`.
    pub preamble: Vec<String>,
}

/// What a [`Generator`] reported at its end.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Packets sent.
    pub count: u64,
    /// When the last one left.
    pub last: SystemTime,
    /// Every line it printed after `ready`.
    pub lines: Vec<String>,
}

impl Generator {
    /// Spawns `command` and returns once it printed `ready` (importing scapy takes a
    /// while); `what` names it in errors.
    ///
    /// # Errors
    ///
    /// When it cannot start, or ends or says nothing for 30 s before `ready`.
    pub fn start(command: &mut Command, what: &str) -> Result<Self> {
        let mut background = Background::spawn(command)?;
        let mut preamble = Vec::new();
        loop {
            match background.line(Duration::from_secs(30))? {
                Some(line) if line == "ready" => break,
                Some(line) => preamble.push(line),
                None => {
                    let finished = background.wait(Duration::from_secs(5))?;
                    bail!(
                        "`{what}` ended before it was ready ({}): {preamble:?} {}",
                        finished.status,
                        finished.stderr.trim()
                    );
                }
            }
        }
        Ok(Self {
            background,
            what: what.to_owned(),
            preamble,
        })
    }

    /// Waits for it to end by itself, within `timeout`, and reads its report.
    ///
    /// # Errors
    ///
    /// When it fails, runs longer, or reports no `sent N ... last T`.
    pub fn finish(self, timeout: Duration) -> Result<Sent> {
        let done = self.background.wait(timeout)?;
        let report = done
            .stdout
            .iter()
            .find_map(|line| parse_sent(line))
            .filter(|_| done.status.success());
        let Some((count, last)) = report else {
            bail!(
                "`{}`: {} {:?} {}",
                self.what,
                done.status,
                done.stdout,
                done.stderr.trim()
            );
        };
        Ok(Sent {
            count,
            last,
            lines: done.stdout,
        })
    }
}

/// `sent N ... last T` (other words between): N and T.
fn parse_sent(line: &str) -> Option<(u64, SystemTime)> {
    let mut words = line.split_whitespace();
    if words.next() != Some("sent") {
        return None;
    }
    let count = words.next()?.parse().ok()?;
    let seconds: f64 = words
        .skip_while(|word| *word != "last")
        .nth(1)?
        .parse()
        .ok()?;
    Some((
        count,
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(seconds),
    ))
}

/// Runs `command` to completion within `timeout` and returns its stdout.
///
/// # Errors
///
/// When it fails, or runs longer than `timeout` (it is stopped then).
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<String> {
    let what = crate::command::command_line(command);
    let finished = Background::spawn(command)?.wait(timeout)?;
    ensure!(
        finished.status.success(),
        "`{what}` failed ({}): {}",
        finished.status,
        finished.stderr.trim()
    );
    Ok(finished.stdout.join("\n"))
}

/// An `iperf3` server in `ns` on `address`, port `port`, listening when this returns;
/// stopped when dropped.
///
/// # Errors
///
/// When it cannot start or does not listen within 5 s.
pub fn iperf3_server(ns: &NetNs, address: Ipv4Addr, port: u16) -> Result<Background> {
    let server = Background::spawn(ns.command("iperf3").args([
        "-s",
        "-B",
        &address.to_string(),
        "-p",
        &port.to_string(),
    ]))?;
    wait_listening(ns, "tcp", port, Duration::from_secs(5))?;
    Ok(server)
}

/// Waits until something listens on `port` (`proto` is `tcp` or `udp`) in `ns`.
///
/// # Errors
///
/// When nothing does within `timeout`.
pub fn wait_listening(ns: &NetNs, proto: &str, port: u16, timeout: Duration) -> Result<()> {
    let flags = match proto {
        "tcp" => "-Hltn",
        "udp" => "-Hlun",
        other => bail!("wait_listening: protocol {other:?}"),
    };
    let deadline = Instant::now() + timeout;
    loop {
        let shown = ns.exec("ss", [flags, "sport", "=", &format!(":{port}")])?;
        if !shown.trim().is_empty() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "nothing listens on {proto} port {port} in {} after {timeout:?}",
            ns.name()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Samples of a Prometheus text exposition.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
}

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Metrics {
    /// Parses the text format (comments and blank lines skipped, optional timestamps).
    ///
    /// # Errors
    ///
    /// On a line that is not a sample, naming it.
    pub fn parse(text: &str) -> Result<Self> {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_sample(line).with_context(|| format!("metrics line {line:?}")))
            .collect::<Result<_>>()?;
        Ok(Self { samples })
    }

    /// All samples.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The value of the series `name` with exactly the labels `labels` (in any order).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|sample| {
                sample.name == name
                    && sample.labels.len() == labels.len()
                    && labels.iter().all(|(key, value)| {
                        sample.labels.iter().any(|(k, v)| k == key && v == value)
                    })
            })
            .map(|sample| sample.value)
    }

    /// `egret_gateway_drops_total{reason}`.
    ///
    /// # Errors
    ///
    /// When the series is absent (the gateway exports every reason from the start).
    pub fn drops(&self, reason: &str) -> Result<u64> {
        let value = self
            .value("egret_gateway_drops_total", &[("reason", reason)])
            .with_context(|| format!("no egret_gateway_drops_total{{reason=\"{reason}\"}}"))?;
        // Counters are whole numbers; the text format prints them as floats.
        Ok(value as u64)
    }

    /// Every `egret_gateway_drops_total` series by reason.
    pub fn all_drops(&self) -> Vec<(String, u64)> {
        self.samples
            .iter()
            .filter(|sample| sample.name == "egret_gateway_drops_total")
            .filter_map(|sample| {
                let reason = sample.labels.iter().find(|(key, _)| key == "reason")?;
                Some((reason.1.clone(), sample.value as u64))
            })
            .collect()
    }
}

fn parse_sample(line: &str) -> Result<Sample> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .context("no value")?;
    let name = line[..name_end].to_owned();
    ensure!(!name.is_empty(), "no metric name");
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let (i, c) = chars.next().context("unterminated labels")?;
            match c {
                '}' => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    let (_, quote) = chars.next().context("label without value")?;
                    ensure!(quote == '"', "label value not quoted");
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next().context("unterminated label value")?;
                        match c {
                            '"' => break,
                            '\\' => match chars.next().context("dangling escape")?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
    }
    let value = rest
        .split_whitespace()
        .next()
        .context("no value after the name")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .with_context(|| format!("value {other:?} is not a number"))?,
    };
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// `/proc/net/snmp`: counters by group (`Ip`, `Icmp`, `Tcp`, ...) and name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snmp {
    values: Vec<(String, String, i64)>,
}

impl Snmp {
    /// Parses the file: pairs of lines, names then values, both starting `<Group>:`.
    ///
    /// # Errors
    ///
    /// When a header has no matching value line.
    pub fn parse(text: &str) -> Result<Self> {
        let mut values = Vec::new();
        let mut lines = text.lines();
        while let Some(header) = lines.next() {
            let numbers = lines
                .next()
                .with_context(|| format!("no values after {header:?}"))?;
            let (group, names) = header.split_once(':').context("no group")?;
            let (group2, numbers) = numbers.split_once(':').context("no group")?;
            ensure!(
                group == group2,
                "{group:?} names followed by {group2:?} values"
            );
            let names: Vec<&str> = names.split_whitespace().collect();
            let numbers: Vec<&str> = numbers.split_whitespace().collect();
            ensure!(
                names.len() == numbers.len(),
                "{group}: names and values differ"
            );
            for (name, number) in names.into_iter().zip(numbers) {
                let number = number
                    .parse()
                    .with_context(|| format!("{group} {name} = {number:?}"))?;
                values.push((group.to_owned(), name.to_owned(), number));
            }
        }
        Ok(Self { values })
    }

    /// The counter `group`/`name`, e.g. `("Ip", "ForwDatagrams")`.
    ///
    /// # Errors
    ///
    /// When there is none.
    pub fn get(&self, group: &str, name: &str) -> Result<i64> {
        self.values
            .iter()
            .find(|(g, n, _)| g == group && n == name)
            .map(|(_, _, value)| *value)
            .with_context(|| format!("no {group} {name} in /proc/net/snmp"))
    }
}

/// A scratch directory, removed with everything in it when dropped.
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// A new directory in the temporary directory, named with the run prefix and `tag`.
    ///
    /// # Errors
    ///
    /// When it cannot be created.
    pub fn new(tag: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{}-{tag}", run_prefix()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("egret-lab: removing {}: {err}", self.path.display());
        }
    }
}

/// The last `lines` lines of a file ("" when it cannot be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `GET http://<api><path>` (curl) from inside `ns`, where a gateway's API listens.
pub(crate) fn api_get(ns: &NetNs, api: SocketAddr, path: &str) -> Result<String> {
    ns.exec(
        "curl",
        [
            "-sS",
            "--fail",
            "--max-time",
            "5",
            &format!("http://{api}{path}"),
        ],
    )
}

/// `GET <path>` from the gateway API of `ns` (127.0.0.1:9477 there), in-process: without a
/// process per request.
pub(crate) fn api_request(ns: &NetNs, path: &str) -> Result<String> {
    ns.run(|| -> Result<String> {
        let address: SocketAddr = API_LISTEN.parse()?;
        let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: egret\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response
            .split_once("\r\n\r\n")
            .context("the response has no end of head")?;
        let status_line = head.lines().next().unwrap_or_default();
        ensure!(
            status_line.starts_with("HTTP/1.1 200"),
            "GET {path}: {status_line}"
        );
        Ok(body.to_owned())
    })?
}

/// Turns IPv6 off in `ns`, so that no router solicitation or neighbour discovery frame of its
/// interfaces reaches the gateway (the tests count the gateway's drops exactly).
pub(crate) fn disable_ipv6(ns: &NetNs) -> Result<()> {
    sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
    sysctl(ns, "net.ipv6.conf.default.disable_ipv6", "1")
}

/// Makes the LAN's switch in `lan`: the bridge `br0`, up, that [`join_lan`] plugs hosts into.
pub(crate) fn lan_switch(lan: &NetNs) -> Result<()> {
    // With br_netfilter in the kernel, a bridge hands IPv4 frames to netfilter and drops
    // those with bad headers first: the lab's malformed frames would never reach the
    // gateway. A plain switch forwards frames without looking into them.
    for key in [
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
        "net.bridge.bridge-nf-call-arptables",
    ] {
        if lan.exec("sysctl", ["-n", key]).is_ok() {
            sysctl(lan, key, "0")?;
        }
    }
    lan.ip(["link", "add", "br0", "type", "bridge"])?;
    lan.ip(["link", "set", "dev", "br0", "up"])?;
    Ok(())
}

/// Plugs `host` into the LAN: its `eth0` with `host_address`/[`LAN_PREFIX_LEN`], cabled to
/// port `port` of the bridge `br0` in `lan`.
pub(crate) fn join_lan(
    lan: &NetNs,
    port: &str,
    host: &NetNs,
    host_address: Ipv4Addr,
) -> Result<()> {
    cable(lan, port, host, "eth0")?;
    lan.ip(["link", "set", "dev", port, "master", "br0"])?;
    address(host, "eth0", &format!("{host_address}/{LAN_PREFIX_LEN}"))
}

/// A veth pair, `a_name` in `a` and `b_name` in `b`, both up; made inside `a` with its peer
/// moved straight into `b`, so it never appears in the caller's namespace.
pub(crate) fn cable(a: &NetNs, a_name: &str, b: &NetNs, b_name: &str) -> Result<()> {
    a.ip([
        "link",
        "add",
        a_name,
        "type",
        "veth",
        "peer",
        "name",
        b_name,
        "netns",
        b.name(),
    ])?;
    a.ip(["link", "set", "dev", a_name, "up"])?;
    b.ip(["link", "set", "dev", b_name, "up"])?;
    Ok(())
}

pub(crate) fn address(ns: &NetNs, interface: &str, address: &str) -> Result<()> {
    ns.ip(["address", "add", address, "dev", interface])?;
    Ok(())
}

pub(crate) fn default_route(ns: &NetNs, via: Ipv4Addr) -> Result<()> {
    ns.ip(["route", "add", "default", "via", &via.to_string()])?;
    Ok(())
}

pub(crate) fn sysctl(ns: &NetNs, key: &str, value: &str) -> Result<()> {
    ns.exec("sysctl", ["-qw", &format!("{key}={value}")])?;
    Ok(())
}

/// The MAC of `interface` in `ns`, as `ip` writes it (`aa:bb:cc:dd:ee:ff`).
///
/// # Errors
///
/// When `ip` fails or shows no MAC.
pub fn interface_mac(ns: &NetNs, interface: &str) -> Result<String> {
    let shown = ns.ip(["-o", "link", "show", "dev", interface])?;
    shown
        .split_whitespace()
        .skip_while(|word| *word != "link/ether")
        .nth(1)
        .map(str::to_owned)
        .with_context(|| format!("no MAC in: {shown}"))
}

/// The `lladdr` of an `ip neigh show` line that has one.
pub(crate) fn lladdr(shown: &str) -> Option<String> {
    shown
        .split_whitespace()
        .skip_while(|word| *word != "lladdr")
        .nth(1)
        .map(str::to_owned)
}

/// Whether a `/status` body lists floating IPs and every one is `master`.
fn all_floating_ips_master(status: &str) -> bool {
    let Ok(status) = serde_json::from_str::<serde_json::Value>(status) else {
        return false;
    };
    let Some(ips) = status
        .get("floating_ips")
        .and_then(serde_json::Value::as_array)
    else {
        return false;
    };
    !ips.is_empty()
        && ips
            .iter()
            .all(|ip| ip.get("state").and_then(serde_json::Value::as_str) == Some("master"))
}

/// Writes `bytes` of deterministic pseudo-random data (xorshift64*, seeded): incompressible,
/// and different for each seed so that a mixed-up stream does not compare equal.
pub(crate) fn write_pseudo_random(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    let mut file = std::io::BufWriter::new(
        File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut left = bytes;
    let mut block = [0_u8; 8192];
    while left > 0 {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = usize::try_from(left.min(block.len() as u64))?;
        file.write_all(&block[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(())
}

/// SHA-256 of a file, by coreutils' `sha256sum`.
pub(crate) fn sha256(path: &Path) -> Result<String> {
    let out = check_output(Command::new("sha256sum").arg(path))?;
    out.split_whitespace()
        .next()
        .map(str::to_owned)
        .context("sha256sum printed nothing")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_samples_by_name_and_exact_labels() {
        let text = "# HELP egret_gateway_drops_total Refused packets.\n\
                    # TYPE egret_gateway_drops_total counter\n\
                    egret_gateway_drops_total{reason=\"wrong_vni\"} 3\n\
                    egret_gateway_drops_total{reason=\"disallowed_source\"} 12 1700000000000\n\
                    egret_gateway_packets_total{direction=\"outbound\",x=\"a\\\"b\"} 7.5e3\n\
                    egret_gateway_flows 2\n";
        let metrics = Metrics::parse(text).expect("valid text");
        assert_eq!(metrics.drops("wrong_vni").expect("present"), 3);
        assert_eq!(metrics.drops("disallowed_source").expect("present"), 12);
        assert!(metrics.drops("malformed").is_err());
        assert_eq!(metrics.value("egret_gateway_flows", &[]), Some(2.0));
        assert_eq!(
            metrics.value(
                "egret_gateway_packets_total",
                &[("x", "a\"b"), ("direction", "outbound")]
            ),
            Some(7500.0)
        );
        // A subset of the labels names no series.
        assert_eq!(
            metrics.value("egret_gateway_packets_total", &[("direction", "outbound")]),
            None
        );
        assert_eq!(metrics.all_drops().len(), 2);
        assert!(Metrics::parse("egret_gateway_flows{reason=\"x\" 1").is_err());
        assert!(Metrics::parse("egret_gateway_flows many").is_err());
    }

    #[test]
    fn snmp_counters_by_group_and_name() {
        let text = "Ip: Forwarding DefaultTTL InReceives ForwDatagrams\n\
                    Ip: 2 64 100 7\n\
                    Icmp: InMsgs OutMsgs\n\
                    Icmp: 4 5\n\
                    IcmpMsg: InType3 OutType3\n\
                    IcmpMsg: 1 2\n\
                    Tcp: RtoAlgorithm MaxConn OutRsts\n\
                    Tcp: 1 -1 9\n";
        let snmp = Snmp::parse(text).expect("valid text");
        assert_eq!(snmp.get("Ip", "ForwDatagrams").expect("present"), 7);
        assert_eq!(snmp.get("Icmp", "OutMsgs").expect("present"), 5);
        assert_eq!(snmp.get("Tcp", "MaxConn").expect("present"), -1);
        assert_eq!(snmp.get("Tcp", "OutRsts").expect("present"), 9);
        assert!(snmp.get("Udp", "InDatagrams").is_err());
        assert!(Snmp::parse("Ip: Forwarding\n").is_err());
        assert!(Snmp::parse("Ip: Forwarding\nTcp: 1\n").is_err());
    }

    #[test]
    fn status_readiness() {
        let master = r#"{"floating_ips":[{"address":"192.168.50.100","state":"master"}]}"#;
        let backup = r#"{"floating_ips":[{"state":"master"},{"state":"backup"}]}"#;
        assert!(all_floating_ips_master(master));
        assert!(!all_floating_ips_master(backup));
        assert!(!all_floating_ips_master(r#"{"floating_ips":[]}"#));
        assert!(!all_floating_ips_master("not json"));
    }

    #[test]
    fn generator_reports() {
        let (count, last) = parse_sent("sent 300 rounds 2 last 1700000000.250000").expect("report");
        assert_eq!(count, 300);
        assert_eq!(
            last,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)
        );
        assert_eq!(parse_sent("sent 3 last 12.5").map(|(n, _)| n), Some(3));
        assert!(parse_sent("sent udp:1 3").is_none());
        assert!(parse_sent("expect auth 3").is_none());
    }

    #[test]
    fn neighbour_lines() {
        assert_eq!(
            lladdr("192.168.50.100 lladdr 00:00:5e:00:01:0a REACHABLE\n").as_deref(),
            Some("00:00:5e:00:01:0a")
        );
        assert_eq!(lladdr("192.168.50.100  FAILED\n"), None);
    }

    #[test]
    fn pseudo_random_data_depends_on_the_seed() {
        let dir = std::env::temp_dir().join(format!("{}-prng", run_prefix()));
        fs::create_dir_all(&dir).expect("temp dir");
        let (a, b) = (dir.join("a"), dir.join("b"));
        write_pseudo_random(&a, 10_000, 1).expect("write a");
        write_pseudo_random(&b, 10_000, 2).expect("write b");
        let (a, b) = (fs::read(&a).expect("read a"), fs::read(&b).expect("read b"));
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(a.len(), 10_000);
        assert_ne!(a, b);
    }
}
