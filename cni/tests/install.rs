//! `egret-cni install` and `uninstall` run as the DaemonSet runs them, against a node's CNI
//! directories made in a scratch directory: the binary copied, the conflist edited, a
//! one-plugin .conf converted and restored, garbage refused, and `--watch` putting the entry
//! back when the primary CNI rewrites its file.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const FLANNEL: &str = include_str!("fixtures/10-flannel.conflist");

const BRIDGE_CONF: &str = include_str!("fixtures/10-bridge.conf");

struct Node {
    _root: tempfile::TempDir,
    bin: PathBuf,
    conf: PathBuf,
}

fn node() -> Node {
    let root = tempfile::tempdir().expect("scratch dir");
    let bin = root.path().join("opt/cni/bin");
    let conf = root.path().join("etc/cni/net.d");
    fs::create_dir_all(&bin).expect("bin dir");
    fs::create_dir_all(&conf).expect("conf dir");
    Node {
        _root: root,
        bin,
        conf,
    }
}

fn command(node: &Node, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_egret-cni"));
    command
        .env_remove("CNI_COMMAND")
        .args(args)
        .arg("--bin-dir")
        .arg(&node.bin)
        .arg("--conf-dir")
        .arg(&node.conf);
    command
}

fn run(node: &Node, args: &[&str]) -> Output {
    command(node, args).output().expect("egret-cni runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn chain(path: &Path) -> Vec<String> {
    let value: Value =
        serde_json::from_str(&fs::read_to_string(path).expect("read")).expect("json");
    value["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Every file of a directory: no temporary file is ever left behind.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn install_chains_the_plugin_once_and_uninstall_gives_the_node_back() {
    let node = node();
    let conflist = node.conf.join("10-flannel.conflist");
    fs::write(&conflist, FLANNEL).expect("write");
    fs::set_permissions(&conflist, fs::Permissions::from_mode(0o640)).expect("chmod");
    fs::write(node.conf.join("calico-kubeconfig"), "not a config").expect("write");

    let output = run(&node, &["install", "--failure-policy", "Ignore"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("chained in"), "{}", text(&output));
    let binary = node.bin.join("egret-cni");
    assert_eq!(
        fs::read(&binary).expect("binary"),
        fs::read(env!("CARGO_BIN_EXE_egret-cni")).expect("built binary")
    );
    assert_eq!(
        fs::metadata(&binary).expect("meta").permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(chain(&conflist), ["flannel", "portmap", "egret-cni"]);
    assert_eq!(
        fs::metadata(&conflist).expect("meta").permissions().mode() & 0o777,
        0o640,
        "the conflist keeps its mode"
    );
    let installed = fs::read_to_string(&conflist).expect("read");
    assert!(
        installed.contains(r#""failure_policy": "Ignore""#),
        "{installed}"
    );

    let output = run(&node, &["install", "--failure-policy", "Ignore"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("already chains"),
        "{}",
        text(&output)
    );
    assert_eq!(fs::read_to_string(&conflist).expect("read"), installed);
    assert_eq!(
        names(&node.conf),
        ["10-flannel.conflist", "calico-kubeconfig"]
    );
    assert_eq!(names(&node.bin), ["egret-cni"]);

    let output = run(&node, &["uninstall"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(fs::read_to_string(&conflist).expect("read"), FLANNEL);
    assert!(!binary.exists());
    let output = run(&node, &["uninstall"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("nothing to remove"),
        "{}",
        text(&output)
    );
    assert_eq!(
        names(&node.conf),
        ["10-flannel.conflist", "calico-kubeconfig"]
    );
    assert!(names(&node.bin).is_empty());
}

#[test]
fn a_single_plugin_conf_is_converted_and_restored() {
    let node = node();
    let conf = node.conf.join("10-bridge.conf");
    fs::write(&conf, BRIDGE_CONF).expect("write");
    // Later in the order: the runtime does not use it, neither does install.
    fs::write(node.conf.join("99-loopback.conf"), BRIDGE_CONF).expect("write");

    let output = run(&node, &["install"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("converted"), "{}", text(&output));
    assert!(!conf.exists());
    let conflist = node.conf.join("10-bridge.conflist");
    assert_eq!(chain(&conflist), ["bridge", "egret-cni"]);
    assert_eq!(
        fs::read_to_string(node.conf.join("99-loopback.conf")).expect("read"),
        BRIDGE_CONF
    );

    let output = run(&node, &["uninstall"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(fs::read_to_string(&conf).expect("restored"), BRIDGE_CONF);
    assert_eq!(names(&node.conf), ["10-bridge.conf", "99-loopback.conf"]);
}

#[test]
fn garbage_and_an_unsupported_version_are_refused_and_left_untouched() {
    let node = node();
    let conflist = node.conf.join("10-broken.conflist");
    for (content, says) in [
        ("{\"plugins\": [", "not JSON"),
        (
            r#"{"cniVersion": "0.3.1", "name": "n"}"#,
            "no plugins array",
        ),
        (&*FLANNEL.replace("0.3.1", "0.2.0"), "0.2.0 is not one"),
    ] {
        fs::write(&conflist, content).expect("write");
        let output = run(&node, &["install"]);
        assert_eq!(output.status.code(), Some(1), "{}", text(&output));
        assert!(text(&output).contains(says), "{says}: {}", text(&output));
        assert!(
            text(&output).contains("10-broken.conflist"),
            "{}",
            text(&output)
        );
        assert_eq!(fs::read_to_string(&conflist).expect("read"), content);
        assert_eq!(names(&node.conf), ["10-broken.conflist"]);
    }
    // Uninstall warns and carries on.
    fs::write(&conflist, "{\"plugins\": [").expect("write");
    let output = run(&node, &["uninstall"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(text(&output).contains("warning"), "{}", text(&output));
}

#[test]
fn without_a_configuration_install_places_the_binary_and_says_so() {
    let node = node();
    let output = run(&node, &["install"]);
    assert!(output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("no CNI configuration yet"),
        "{}",
        text(&output)
    );
    assert_eq!(names(&node.bin), ["egret-cni"]);
    let output = run(&node, &["install", "--timeout", "10m"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("timeout"), "{}", text(&output));
}

/// Waits until `path` holds the egret-cni entry (or not), for at most ten seconds.
fn wait_for_entry(path: &Path, present: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let has = fs::read_to_string(path).is_ok_and(|t| t.contains("\"egret-cni\""));
        if has == present {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never {} the entry",
            path.display(),
            if present { "got" } else { "lost" }
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn watch_puts_the_entry_back_when_the_primary_cni_rewrites_its_file_and_sigterm_leaves_it() {
    let node = node();
    let conflist = node.conf.join("10-calico.conflist");
    let mut watcher = Killed(
        command(&node, &["install", "--watch"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("egret-cni runs"),
    );
    // No configuration yet: the entry comes once the primary CNI writes one.
    fs::write(&conflist, FLANNEL).expect("write");
    wait_for_entry(&conflist, true);
    for _ in 0..3 {
        // The primary CNI's install container rewrites its file in place, and by rename.
        fs::write(&conflist, FLANNEL).expect("rewrite");
        wait_for_entry(&conflist, true);
        let temp = node.conf.join("calico.tmp");
        fs::write(&temp, FLANNEL).expect("write");
        fs::rename(&temp, &conflist).expect("rename");
        wait_for_entry(&conflist, true);
    }
    assert_eq!(chain(&conflist), ["flannel", "portmap", "egret-cni"]);

    let status = Command::new("kill")
        .args(["-TERM", &watcher.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let status = watcher.0.wait().expect("exits");
    assert!(status.success(), "{status:?}");
    assert_eq!(chain(&conflist), ["flannel", "portmap", "egret-cni"]);
    assert!(node.bin.join("egret-cni").exists());
    assert_eq!(names(&node.conf), ["10-calico.conflist"]);
}
