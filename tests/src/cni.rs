//! The container runtime's side of CNI in the lab: new pod sandboxes on node1, wired as the
//! cluster's own CNI would wire them, `egret-cni` run exactly as a runtime runs a chained
//! plugin, and the outside host's capture of the probes the pods send the moment their
//! network is up.
//!
//! - [`Sandbox`]: a fresh network namespace for one pod, its `eth0` the peer of a `veth-c*`
//!   on the node, the pod's /32 and its default route to the node side (the lab's plain
//!   CNI, as in [`crate::egress`]); [`Sandbox::prev_result`] is what that CNI returned.
//! - [`Plugin`]: `egret-cni` with the `CNI_*` environment and the network config (with
//!   `prevResult`) on stdin; each [`Invocation`] keeps the exit status, stdout, stderr and
//!   how long the plugin took.
//! - [`Probes`]: numbered UDP probes from a sandbox to the outside host, each from a fresh
//!   socket (a new flow), and a packet capture on the outside host's interface that reports
//!   the source each probe arrived with.

use std::{
    cell::RefCell,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::Once,
    thread,
    time::{Duration, Instant},
};

use std::io::Write as _;

use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

use crate::{
    NetNs,
    ha::{Capture, Frame},
    topology::{self, cable, disable_ipv6, lab_binary},
};

/// The plugin binary: `$EGRET_CNI_BIN`, else `target/release/egret-cni` of this workspace
/// (`cargo build --release -p egret-cni`; scripts/test builds it).
///
/// # Errors
///
/// When there is none.
pub fn cni_binary() -> Result<PathBuf> {
    static WARNED: Once = Once::new();
    lab_binary("egret-cni", "EGRET_CNI_BIN", &["cni/src"], &WARNED)
}

/// The interface name runtimes give the pod's side (`CNI_IFNAME`).
pub const POD_INTERFACE: &str = "eth0";

/// One pod's sandbox on a node.
pub struct Sandbox {
    ns: NetNs,
    /// The node's end of the pod's veth (`veth-c<index>`, which the lab's agents watch).
    pub veth: String,
    /// The pod's address.
    pub address: Ipv4Addr,
    /// The node side's address: the pod's default route.
    pub gateway: Ipv4Addr,
    /// The runtime's id of the sandbox (`CNI_CONTAINERID`).
    pub container_id: String,
    /// The pod object's namespace, name and uid (`CNI_ARGS`).
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
}

impl Sandbox {
    /// Makes the sandbox of pod `(namespace, name, uid)` in a new namespace `<tag>-c<index>`
    /// and wires it to `node` with `address` (a /32, routed by the node to the veth) and the
    /// default route via `gateway`: what the cluster's CNI does before the chain reaches
    /// egret-cni.
    ///
    /// # Errors
    ///
    /// When a namespace, link, address or route cannot be set up.
    pub fn create(
        node: &NetNs,
        tag: &str,
        index: u32,
        address: Ipv4Addr,
        gateway: Ipv4Addr,
        pod: (&str, &str, &str),
    ) -> Result<Self> {
        let ns = NetNs::new(&format!("{tag}-c{index}"))?;
        disable_ipv6(&ns)?;
        let veth = format!("veth-c{index}");
        ensure!(veth.len() <= 15, "interface name {veth} is too long");
        cable(node, &veth, &ns, POD_INTERFACE)?;
        let gateway_text = gateway.to_string();
        topology::address(node, &veth, &format!("{gateway_text}/32"))?;
        node.ip(["route", "add", &format!("{address}/32"), "dev", &veth])?;
        topology::address(&ns, POD_INTERFACE, &format!("{address}/32"))?;
        ns.ip([
            "route",
            "add",
            &gateway_text,
            "dev",
            POD_INTERFACE,
            "scope",
            "link",
        ])?;
        ns.ip([
            "route",
            "add",
            "default",
            "via",
            &gateway_text,
            "dev",
            POD_INTERFACE,
            "onlink",
        ])?;
        Ok(Self {
            container_id: format!(
                "{:064x}",
                u128::from(index) << 32 | u128::from(address.to_bits())
            ),
            ns,
            veth,
            address,
            gateway,
            pod_namespace: pod.0.to_owned(),
            pod_name: pod.1.to_owned(),
            pod_uid: pod.2.to_owned(),
        })
    }

    /// The sandbox's namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The result the cluster's CNI handed on (CNI 1.0): the pod's interface in its
    /// sandbox, its address and gateway.
    pub fn prev_result(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": self.veth, "mac": "02:00:00:00:00:01"},
                {"name": POD_INTERFACE, "mac": "02:00:00:00:00:02",
                 "sandbox": self.ns.path().to_string_lossy()},
            ],
            "ips": [{"address": format!("{}/32", self.address), "gateway": self.gateway.to_string(),
                     "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": self.gateway.to_string()}],
            "dns": {},
        })
    }

    /// The runtime's environment for `command` on this sandbox (`CNI_ARGS` as the kubelet
    /// writes it).
    pub fn environment(&self, command: &str) -> Vec<(String, String)> {
        vec![
            ("CNI_COMMAND".into(), command.into()),
            ("CNI_CONTAINERID".into(), self.container_id.clone()),
            (
                "CNI_NETNS".into(),
                self.ns.path().to_string_lossy().into_owned(),
            ),
            ("CNI_IFNAME".into(), POD_INTERFACE.into()),
            (
                "CNI_ARGS".into(),
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};\
                     K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
                    self.pod_namespace, self.pod_name, self.container_id, self.pod_uid
                ),
            ),
        ]
    }
}

/// `egret-cni`, as a runtime runs the last plugin of a chain.
pub struct Plugin {
    binary: PathBuf,
    /// The plugin's entry of the conflist, as the runtime hands it over: `name` and
    /// `cniVersion` of the list, the entry's keys.
    pub conf: Value,
}

/// One run of the plugin.
#[derive(Debug)]
pub struct Invocation {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// From start to exit.
    pub elapsed: Duration,
}

impl Invocation {
    /// Exit status 0.
    pub fn succeeded(&self) -> bool {
        self.status.success()
    }

    /// Its stdout as JSON (a result or an error result).
    ///
    /// # Errors
    ///
    /// When stdout is not one JSON value.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(self.stdout.trim())
            .with_context(|| format!("the plugin's stdout is not JSON: {:?}", self.stdout))
    }

    /// The error result's code, when it failed with one.
    pub fn error_code(&self) -> Option<u64> {
        if self.succeeded() {
            return None;
        }
        self.json().ok()?["code"].as_u64()
    }
}

impl std::fmt::Display for Invocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "egret-cni exited {} after {:?}; stdout {:?}; stderr {:?}",
            self.status,
            self.elapsed,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

impl Plugin {
    /// The plugin of [`cni_binary`] talking to the agent at `socket`, with `extra` keys in
    /// its conflist entry (`timeout`, `failure_policy`).
    ///
    /// # Errors
    ///
    /// When there is no binary.
    pub fn new(socket: &Path, extra: &[(&str, &str)]) -> Result<Self> {
        let plugin = Self {
            binary: cni_binary()?,
            conf: json!({
                "cniVersion": "1.0.0",
                "name": "lab",
                "type": "egret-cni",
                "socket": socket.to_string_lossy(),
            }),
        };
        Ok(plugin.with(extra))
    }

    /// The same plugin with `extra` keys set in its entry.
    pub fn with(&self, extra: &[(&str, &str)]) -> Self {
        let mut conf = self.conf.clone();
        for (key, value) in extra {
            conf[*key] = Value::from(*value);
        }
        Self {
            binary: self.binary.clone(),
            conf,
        }
    }

    /// Runs `command` (`ADD`, `DEL`, `CHECK`) for `sandbox` with its `prevResult`.
    ///
    /// # Errors
    ///
    /// When the plugin cannot be run.
    pub fn run(&self, command: &str, sandbox: &Sandbox) -> Result<Invocation> {
        let mut conf = self.conf.clone();
        conf["prevResult"] = sandbox.prev_result();
        let env = sandbox.environment(command);
        self.run_raw(&env, conf.to_string().as_bytes())
    }

    /// Runs the plugin with exactly `env` (plus `CNI_PATH`) and `stdin`: what a runtime
    /// does, in the runtime's (the host's) namespace; the plugin only needs the socket.
    ///
    /// # Errors
    ///
    /// When the plugin cannot be run.
    pub fn run_raw(&self, env: &[(String, String)], stdin: &[u8]) -> Result<Invocation> {
        let dir = self.binary.parent().unwrap_or(Path::new("/"));
        let started = Instant::now();
        let mut child = Command::new(&self.binary)
            .env_clear()
            .env("CNI_PATH", dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", self.binary.display()))?;
        // The plugin may exit before reading (VERSION, a bad environment): a broken pipe
        // is part of what is being watched.
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin);
        }
        let output = child.wait_with_output()?;
        Ok(Invocation {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
        })
    }
}

/// The payload's first bytes, so the capture knows a probe from anything else.
const MAGIC: &[u8; 8] = b"egretcni";
/// Bytes before the UDP payload in a captured frame without IP options: Ethernet, IPv4, UDP.
const UDP_PAYLOAD: usize = 14 + 20 + 8;

/// One probe as the outside host saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// The pod start it belongs to.
    pub start: u32,
    /// Its number within that start, from 0.
    pub number: u32,
    /// The source address it arrived with.
    pub source: Ipv4Addr,
}

/// The outside host's end of the probes: a socket that takes them in (so no port
/// unreachable goes back) and a capture of its interface that sees every one.
pub struct Probes {
    destination: SocketAddrV4,
    capture: Capture,
    /// The frames read so far, and the probes among them.
    seen: RefCell<(usize, Vec<Arrival>)>,
    _sink: UdpSocket,
}

impl Probes {
    /// Starts capturing on `interface` of `host`, where `destination` is.
    ///
    /// # Errors
    ///
    /// When the socket or the capture cannot be set up.
    pub fn start(host: &NetNs, interface: &str, destination: SocketAddrV4) -> Result<Self> {
        let sink = host
            .run(|| UdpSocket::bind(destination))?
            .with_context(|| format!("binding {destination} in {}", host.name()))?;
        let capture = Capture::start(host, interface)?;
        Ok(Self {
            destination,
            capture,
            seen: RefCell::default(),
            _sink: sink,
        })
    }

    /// Sends probe `number` of pod start `start` from `sandbox`, from a fresh socket;
    /// returns when it left.
    ///
    /// # Errors
    ///
    /// When the socket cannot be made (a refused send is part of what is watched).
    pub fn send(&self, sandbox: &Sandbox, start: u32, number: u32) -> Result<Instant> {
        let mut payload = [0_u8; 16];
        payload[..8].copy_from_slice(MAGIC);
        payload[8..12].copy_from_slice(&start.to_be_bytes());
        payload[12..].copy_from_slice(&number.to_be_bytes());
        let destination = self.destination;
        let address = sandbox.address;
        sandbox
            .ns()
            .run(move || -> std::io::Result<Instant> {
                let socket = UdpSocket::bind((address, 0))?;
                let at = Instant::now();
                let _ = socket.send_to(&payload, destination);
                Ok(at)
            })?
            .context("a probe socket in the sandbox")
    }

    /// Every probe that arrived so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.read_new();
        self.seen.borrow().1.clone()
    }

    /// The probes of pod start `start` that arrived so far.
    pub fn arrivals_of(&self, start: u32) -> Vec<Arrival> {
        self.read_new();
        let seen = self.seen.borrow();
        seen.1
            .iter()
            .filter(|a| a.start == start)
            .copied()
            .collect()
    }

    /// Takes in the frames captured since the last call.
    fn read_new(&self) {
        let mut seen = self.seen.borrow_mut();
        let (read, arrivals) = &mut *seen;
        let frames = self.capture.frames_after(*read);
        *read += frames.len();
        arrivals.extend(frames.iter().filter_map(|frame| self.arrival(frame)));
    }

    /// Waits until `count` probes of pod start `start` arrived, or `timeout` passed;
    /// returns those that did.
    pub fn wait_for(&self, start: u32, count: usize, timeout: Duration) -> Vec<Arrival> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = self.arrivals_of(start);
            if arrived.len() >= count || Instant::now() >= deadline {
                return arrived;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    fn arrival(&self, frame: &Frame) -> Option<Arrival> {
        let ip = frame.ipv4()?;
        if frame.outgoing || ip.protocol != 17 || ip.destination != *self.destination.ip() {
            return None;
        }
        // Probes carry no IP options: the payload sits right after a 20-byte header.
        if frame.bytes.get(14)? & 0x0f != 5 {
            return None;
        }
        let port = frame.bytes.get(36..38)?;
        if u16::from_be_bytes([port[0], port[1]]) != self.destination.port() {
            return None;
        }
        let payload = frame.bytes.get(UDP_PAYLOAD..UDP_PAYLOAD + 16)?;
        if &payload[..8] != MAGIC {
            return None;
        }
        let word = |at: usize| {
            u32::from_be_bytes([
                payload[at],
                payload[at + 1],
                payload[at + 2],
                payload[at + 3],
            ])
        };
        Some(Arrival {
            start: word(8),
            number: word(12),
            source: ip.source,
        })
    }
}

/// The `p`-th percentile (0–100, nearest rank) of `values`; `None` when empty.
pub fn percentile(values: &[Duration], p: u32) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = (sorted.len() * p as usize).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&values, 99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&values, 100), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&values[..1], 99), Some(Duration::from_millis(1)));
        assert_eq!(percentile(&[], 50), None);
    }
}
