//! The plugin binary driven as a container runtime drives it: the CNI environment, the
//! network config on stdin, the answer on stdout and the exit code; the agent is a stand-in
//! listening on a Unix socket, answering, staying silent or absent.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PREV_RESULT: &str = r#"{"cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/cni-1"}],
    "ips": [{"address": "10.244.1.7/24", "gateway": "10.244.1.1", "interface": 0}]}"#;

fn socket(tag: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("egret-cni-it-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn config(socket: &Path, extra: &str) -> String {
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "egret-cni",
             "socket": "{}"{extra}, "prevResult": {PREV_RESULT}}}"#,
        socket.display()
    )
}

/// Runs the plugin with `command`, the pod `alice/frontend`, and `stdin`.
fn plugin(command: &str, args: &str, stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_egret-cni"))
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c0ffee")
        .env("CNI_NETNS", "/var/run/netns/cni-1")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the plugin runs");
    // A plugin that refuses its environment exits without reading stdin: the write may
    // then meet a closed pipe, and the answer is what counts.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("the plugin ends")
}

const POD: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=alice;K8S_POD_NAME=frontend";

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?} / stderr {:?}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// A stand-in agent answering each request with `answer`; returns the requests it got.
fn agent(
    path: &Path,
    answer: &'static str,
    requests: usize,
) -> std::thread::JoinHandle<Vec<Value>> {
    let listener = UnixListener::bind(path).expect("bind");
    std::thread::spawn(move || {
        (0..requests)
            .map(|_| {
                let (stream, _) = listener.accept().expect("accept");
                let mut line = String::new();
                BufReader::new(&stream).read_line(&mut line).expect("read");
                (&stream).write_all(answer.as_bytes()).expect("write");
                serde_json::from_str(&line).expect("a JSON request")
            })
            .collect()
    })
}

#[test]
fn add_returns_the_previous_result_once_the_agent_has_programmed_the_pod() {
    let path = socket("add");
    let server = agent(
        &path,
        "{\"outcome\":\"programmed\",\"policies\":[\"p\"]}\n",
        1,
    );
    let output = plugin("ADD", POD, &config(&path, ""));
    assert!(output.status.success(), "{output:?}");
    let mut expected: Value = serde_json::from_str(PREV_RESULT).expect("json");
    expected["cniVersion"] = json!("1.0.0");
    assert_eq!(stdout_json(&output), expected);
    let requests = server.join().expect("agent");
    assert_eq!(
        requests[0],
        json!({"op": "add", "container_id": "c0ffee", "namespace": "alice",
               "name": "frontend", "ips": ["10.244.1.7"]})
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn without_the_agent_fail_fails_the_add_and_ignore_lets_the_pod_start() {
    let path = socket("absent");
    let output = plugin("ADD", POD, &config(&path, ""));
    assert!(!output.status.success());
    let error = stdout_json(&output);
    assert_eq!(error["code"], json!(11), "{error}");
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("alice/frontend"),
        "{error}"
    );
    let output = plugin(
        "ADD",
        POD,
        &config(&path, r#", "failure_policy": "Ignore""#),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout_json(&output)["ips"][0]["address"], "10.244.1.7/24");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("starts unprogrammed"), "{stderr}");
}

#[test]
fn a_slow_agent_fails_the_add_at_the_timeout() {
    let path = socket("slow");
    let listener = UnixListener::bind(&path).expect("bind");
    let started = Instant::now();
    let output = plugin("ADD", POD, &config(&path, r#", "timeout": "300ms""#));
    let took = started.elapsed();
    assert!(!output.status.success());
    assert_eq!(stdout_json(&output)["code"], json!(11));
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn del_succeeds_whatever_the_agent_and_whatever_was_added() {
    let path = socket("del");
    // Agent away.
    let output = plugin("DEL", POD, &config(&path, ""));
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty());
    // A sandbox whose ADD never ran: no prevResult, no pod in CNI_ARGS.
    let bare = r#"{"cniVersion": "1.0.0", "name": "n", "type": "egret-cni"}"#;
    assert!(plugin("DEL", "", bare).status.success());
    // Agent present: it is told.
    let server = agent(&path, "{\"outcome\":\"done\"}\n", 1);
    assert!(plugin("DEL", POD, &config(&path, "")).status.success());
    assert_eq!(server.join().expect("agent")[0]["op"], "del");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn check_and_status_report_what_the_agent_says() {
    let path = socket("check");
    let server = agent(
        &path,
        "{\"outcome\":\"refused\",\"reason\":\"no entry for 10.244.1.7\"}\n",
        2,
    );
    let output = plugin("CHECK", POD, &config(&path, ""));
    assert!(!output.status.success());
    assert!(
        stdout_json(&output)["details"]
            .as_str()
            .unwrap_or_default()
            .contains("no entry")
    );
    let output = plugin("STATUS", "", &config(&path, ""));
    assert!(!output.status.success());
    assert_eq!(stdout_json(&output)["code"], json!(50));
    server.join().expect("agent");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn garbage_in_gives_an_error_result_never_a_panic() {
    let path = socket("garbage");
    for (command, args, stdin, code) in [
        ("ADD", POD, "{not json".to_owned(), 6),
        ("ADD", POD, "\u{0}\u{1}binary".to_owned(), 6),
        ("ADD", "K8S_POD_NAME", config(&path, ""), 4),
        ("ADD", "", config(&path, ""), 4),
        (
            "ADD",
            POD,
            config(&path, "").replace("10.244.1.7/24", "ten"),
            7,
        ),
        ("ADD", POD, config(&path, r#", "bogus": 1"#), 2),
        ("ATTACH", POD, config(&path, ""), 4),
    ] {
        let output = plugin(command, args, &stdin);
        assert!(!output.status.success(), "{command} {args:?} {stdin:?}");
        assert_eq!(output.status.code(), Some(1));
        let error = stdout_json(&output);
        assert_eq!(error["code"], json!(code), "{stdin:?}: {error}");
        assert!(!error["msg"].as_str().unwrap_or_default().is_empty());
    }
}

#[test]
fn version_needs_no_config() {
    let output = plugin("VERSION", "", "");
    assert!(output.status.success());
    let versions = stdout_json(&output);
    assert!(
        versions["supportedVersions"]
            .as_array()
            .expect("list")
            .contains(&json!("1.0.0"))
    );
}
