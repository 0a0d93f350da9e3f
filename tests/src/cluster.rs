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

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::{NetNs, check_output};

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
