//! The lab's cluster: the test API server (`egret-test-apiserver`) in one of the lab's
//! namespaces, and `kubectl` against it, as a cluster user drives a real one.
//!
//! [`ApiServer`] runs the server inside a namespace the lab made (the router, on the LAN the
//! nodes and gateways share), waits for its `ready` line, and keeps its state in a file so
//! an outage is a stop and a start that keep the cluster. Dropping it kills the server.
//! [`Kubectl`] runs the real client with the server's kubeconfig in that namespace.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddrV4,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::Value;

use crate::{
    AgentLab, NetNs, check_output,
    egress::{Member, Node, OUTSIDE_ADDRESS, Pod, gateway_config},
};
use std::net::Ipv4Addr;

/// The lab's API server binary: `$EGRET_APISERVER_BIN`, else `target/release` of this
/// workspace (`cargo build --release -p egret-lab --bin egret-test-apiserver`). Tests use
/// cargo's own path to it instead.
///
/// # Errors
///
/// When there is none.
pub fn apiserver_binary() -> Result<PathBuf> {
    static WARNED: std::sync::Once = std::sync::Once::new();
    crate::topology::lab_binary(
        "egret-test-apiserver",
        "EGRET_APISERVER_BIN",
        &["tests/src/apiserver", "tests/src/bin"],
        &WARNED,
    )
}

/// How long the server may take to listen.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The test API server, running in a lab namespace.
pub struct ApiServer {
    binary: PathBuf,
    namespace: String,
    listen: SocketAddrV4,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl ApiServer {
    /// Starts `binary` in `ns` listening on `listen`, its certificates, token, kubeconfig,
    /// state and logs in `dir`; returns once it listens.
    ///
    /// # Errors
    ///
    /// When it cannot start or is not ready within 20 s.
    pub fn start(ns: &NetNs, binary: &Path, dir: &Path, listen: SocketAddrV4) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut server = Self {
            binary: binary.to_owned(),
            namespace: ns.name().to_owned(),
            listen,
            dir: dir.to_owned(),
            child: None,
            starts: 0,
        };
        server.spawn(ns)?;
        Ok(server)
    }

    fn spawn(&mut self, ns: &NetNs) -> Result<()> {
        ensure!(
            ns.name() == self.namespace,
            "the server runs in {}",
            self.namespace
        );
        ensure!(self.child.is_none(), "the API server already runs");
        self.starts += 1;
        let log = self.dir.join(format!("apiserver-{}.log", self.starts));
        let stderr =
            fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = ns
            .command(&self.binary)
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--dir")
            .arg(&self.dir)
            .arg("--state")
            .arg(self.dir.join("state.json"))
            .args(["--bookmark-interval", "1s"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let stdout = child.stdout.take().context("the server's stdout")?;
        self.child = Some(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("ready ") {
                    let _ = tx.send(line);
                }
            }
        });
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(_) => Ok(()),
            Err(_) => bail!(
                "the API server did not print its ready line within {READY_TIMEOUT:?}:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            ),
        }
    }

    /// The kubeconfig clients use (server, CA, token).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Where it listens.
    pub fn listen(&self) -> SocketAddrV4 {
        self.listen
    }

    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Stops it with SIGTERM (it writes its state) and waits for it: an API outage.
    ///
    /// # Errors
    ///
    /// When it does not run or does not exit within 10 s.
    pub fn stop(&mut self) -> Result<()> {
        let mut child = self.child.take().context("the API server does not run")?;
        let pid = libc::pid_t::try_from(child.id())?;
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait()?.is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                bail!("the API server did not exit within 10 s of SIGTERM");
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Starts it again in `ns` with the state it wrote when it stopped.
    ///
    /// # Errors
    ///
    /// When it cannot start.
    pub fn restart(&mut self, ns: &NetNs) -> Result<()> {
        self.spawn(ns)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `kubectl` with the server's kubeconfig, run in the server's namespace.
pub struct Kubectl<'a> {
    ns: &'a NetNs,
    kubeconfig: PathBuf,
}

impl<'a> Kubectl<'a> {
    /// kubectl in `ns` with `kubeconfig`.
    pub fn new(ns: &'a NetNs, kubeconfig: &Path) -> Self {
        Self {
            ns,
            kubeconfig: kubeconfig.to_owned(),
        }
    }

    /// Runs `kubectl <args>` and returns its standard output.
    ///
    /// # Errors
    ///
    /// When kubectl fails; with its standard error.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        check_output(
            self.ns
                .command("kubectl")
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(args),
        )
    }

    /// Starts `kubectl <args>` without waiting for it (as the kubelet writes a pod's status
    /// while the pod already runs); its output is discarded, [`Child::wait`] says how it
    /// ended.
    ///
    /// # Errors
    ///
    /// When kubectl cannot start.
    pub fn spawn(&self, args: &[&str]) -> Result<Child> {
        self.ns
            .command("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting kubectl")
    }

    /// `kubectl apply -f -` with `yaml` on its standard input.
    ///
    /// # Errors
    ///
    /// When kubectl fails.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.stdin(&["apply", "-f", "-"], yaml)
    }

    /// Runs `kubectl <args>` with `input` on its standard input.
    ///
    /// # Errors
    ///
    /// When kubectl fails.
    pub fn stdin(&self, args: &[&str], input: &str) -> Result<String> {
        let mut child = self
            .ns
            .command("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl get <what> -o json`, parsed.
    ///
    /// # Errors
    ///
    /// When kubectl fails or prints something else than JSON.
    pub fn get_json(&self, what: &[&str]) -> Result<Value> {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        args.extend_from_slice(&["-o", "json"]);
        let text = self.run(&args)?;
        serde_json::from_str(&text).with_context(|| format!("kubectl get output: {text}"))
    }

    /// Polls `kubectl get <what> -o json` until `done` holds of it; returns it and when it
    /// was first seen to hold.
    ///
    /// # Errors
    ///
    /// When it does not hold within `timeout`; with the last object.
    pub fn wait_for(
        &self,
        what: &[&str],
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Result<(Value, Instant)> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.get_json(what);
            if let Ok(value) = &last
                && done(value)
            {
                return Ok((value.clone(), Instant::now()));
            }
            if Instant::now() >= deadline {
                bail!(
                    "kubectl get {} did not reach the expected state within {timeout:?}; last: {}",
                    what.join(" "),
                    match last {
                        Ok(value) => serde_json::to_string_pretty(&value).unwrap_or_default(),
                        Err(err) => format!("{err:#}"),
                    }
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The status of condition `type_` in an object's `status.conditions`, and its reason.
pub fn condition(object: &Value, type_: &str) -> Option<(String, String)> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

// --- the Kubernetes-mode lab ---------------------------------------------------------

/// Where the API server listens: the router's LAN address, which nodes and gateways reach.
pub const API_LISTEN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 50, 1), 6443);
/// A destination the policy covers.
pub const OUTSIDE: SocketAddrV4 = SocketAddrV4::new(OUTSIDE_ADDRESS, 7400);
/// How long a probe may take.
pub const PROBE: Duration = Duration::from_secs(3);
/// The behaviour's bound for a cluster change to reach the data path (the target is 1 s;
/// the figure is printed).
pub const CHANGE_BOUND: Duration = Duration::from_secs(5);
/// How long the agents may take to program the cluster's state after they start.
pub const READY: Duration = Duration::from_secs(30);

/// The committed CRD manifests.
pub fn crds() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/kubernetes/crds.yaml")
}

/// The cluster as the lab mirrors it.
pub const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: egret-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: alice, labels: {user: alice}}
---
apiVersion: v1
kind: Namespace
metadata: {name: paul, labels: {user: paul}}
---
apiVersion: egret.dev/v1alpha1
kind: EgressGateway
metadata: {name: default}
spec:
  floatingIPs: [192.168.50.100, 192.168.50.101]
---
apiVersion: v1
kind: Pod
metadata: {name: pod-a1, namespace: alice, labels: {role: frontend}}
spec: {nodeName: node1, containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pod-a2, namespace: alice}
spec: {nodeName: node1, containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pod-b1, namespace: paul, labels: {role: frontend}}
spec: {nodeName: node2, containers: [{name: app, image: app}]}
"#;

/// The seed's policy, toward the outside network but its upper half.
pub const POLICY: &str = r#"
apiVersion: egret.dev/v1alpha1
kind: EgressNATPolicy
metadata: {name: egress}
spec:
  egress:
  - namespaceSelector: {matchLabels: {user: alice}}
    podSelector: {matchLabels: {role: frontend}}
  - namespaceSelector: {matchLabels: {user: paul}}
    podSelector: {matchLabels: {role: frontend}}
  destinationCIDRs: [198.51.100.0/24]
  excludedCIDRs: [198.51.100.128/25]
  egressSourceIP: 192.168.50.100
"#;

/// The lab with its API server.
pub struct ClusterLab {
    /// The agent lab.
    pub lab: AgentLab,
    /// Its API server.
    pub api: ApiServer,
}

impl ClusterLab {
    /// kubectl against the lab's API server.
    pub fn kubectl(&self) -> Kubectl<'_> {
        Kubectl::new(self.lab.router(), &self.api.kubeconfig())
    }

    /// Fails with the evidence of the lab, the API server's view and the agents' logs.
    /// The evidence of a failed step.
    pub fn explain(&mut self, name: &str, err: anyhow::Error) -> anyhow::Error {
        let policies = self
            .kubectl()
            .run(&["get", "egressnatpolicies", "-o", "yaml"])
            .unwrap_or_else(|e| format!("{e:#}"));
        let gateway = self
            .kubectl()
            .run(&["get", "egressgateways", "-o", "yaml"])
            .unwrap_or_else(|e| format!("{e:#}"));
        anyhow!(
            "step \"{name}\" failed: {err:#}\n--- policies ---\n{policies}\n--- gateways ---\n\
             {gateway}\n{}",
            self.lab.evidence()
        )
    }

    /// Runs one named check; on failure says which, with the evidence.
    ///
    /// # Errors
    ///
    /// When the check fails.
    pub fn step<T>(&mut self, name: &str, check: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        crate::step(self, name, check, |c, err| c.explain(name, err))
    }

    /// The pods' status as the kubelet would write it: running, with the lab's address.
    ///
    /// # Errors
    ///
    /// When kubectl fails.
    pub fn pods_running(&self) -> Result<()> {
        for (pod, ns) in [(Pod::A1, "alice"), (Pod::A2, "alice"), (Pod::B1, "paul")] {
            let ip = pod.address().to_string();
            let patch = serde_json::json!({"status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
            .to_string();
            self.kubectl().run(&[
                "patch",
                "pod",
                pod.name(),
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ])?;
        }
        Ok(())
    }

    /// Waits until `node`'s agent has programmed the cluster's state and `done` holds of its
    /// `cluster` status.
    /// # Errors
    ///
    /// When it does not happen within [`READY`].
    pub fn wait_agent(&mut self, node: Node, done: impl Fn(&Value) -> bool) -> Result<()> {
        let deadline = Instant::now() + READY;
        loop {
            let status = self.lab.agent_status_json(node);
            if let Ok(status) = &status
                && status["cluster"]["programmed_at"].is_u64()
                && done(&status["cluster"])
            {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "{}'s agent did not program the cluster's state within {READY:?}; status: {}\n\
                 --- agent log ---\n{}",
                node.name(),
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| format!("{e:#}")),
                self.lab.agent_log_tail(node, 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `pod`'s new UDP flows to the outside host leave with `expected`; returns how long
    /// after `since` that began.
    /// # Errors
    ///
    /// When it does not happen within [`CHANGE_BOUND`].
    pub fn switches(&self, pod: Pod, expected: Ipv4Addr, since: Instant) -> Result<Duration> {
        let switch = self
            .lab
            .measure_switch(pod, OUTSIDE, expected, since, CHANGE_BOUND)?;
        Ok(switch.after)
    }

    /// The source the outside host sees for a new UDP flow of `pod`.
    ///
    /// # Errors
    ///
    /// When the probe cannot be set up.
    pub fn source(&self, pod: Pod) -> Result<Option<Ipv4Addr>> {
        Ok(self.lab.udp_source(pod, OUTSIDE, PROBE)?.source())
    }
}

impl ClusterLab {
    /// Both gateways (reporting into `default`) and both agents in Kubernetes mode, the cluster
    /// mirrored, the seed's policy applied and programmed; the API server is `binary`.
    ///
    /// # Errors
    ///
    /// When a part does not start or get ready.
    pub fn start(tag: &str, binary: &Path) -> Result<ClusterLab> {
        let lab = AgentLab::new(tag)?;
        let api = ApiServer::start(lab.router(), binary, &lab.workdir().join("api"), API_LISTEN)?;
        let kubeconfig = api.kubeconfig();
        let mut cluster = ClusterLab { lab, api };
        cluster.step("the cluster, its pods and the seed's policy", |c| {
            let crds = crds();
            c.kubectl().run(&["apply", "-f", &crds.to_string_lossy()])?;
            c.kubectl().apply(CLUSTER)?;
            c.pods_running()?;
            c.kubectl().apply(POLICY)?;
            Ok(())
        })?;
        for member in Member::BOTH {
            let path = cluster.lab.gateway_config_path(member);
            let text = format!(
                "{}\n[kubernetes]\nkubeconfig = {:?}\ngateway = \"default\"\n",
                gateway_config(member, cluster.lab.workdir()),
                kubeconfig.to_string_lossy()
            );
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        for node in Node::BOTH {
            let mut config = cluster.lab.agent_config(node).clone();
            config.kubeconfig = Some(kubeconfig.clone());
            cluster.lab.set_agent_config(config)?;
        }
        cluster.step(
            "start the gateways and the agents in Kubernetes mode",
            |c| {
                c.lab.start_gateways()?;
                for node in Node::BOTH {
                    c.lab.spawn_agent(node)?;
                }
                for node in Node::BOTH {
                    c.wait_agent(node, |cluster| {
                        cluster["policies"].as_array().is_some_and(|p| {
                            p.iter()
                                .any(|p| p["name"] == "egress" && p["verdict"] == "Accepted")
                        })
                    })?;
                }
                Ok(())
            },
        )?;
        Ok(cluster)
    }
}
