//! The lab's test API server (`egret-test-apiserver`), checked as a cluster's users check
//! one: with the real kubectl, with raw HTTP requests of the protocol, and with kube-rs'
//! client and runtime (watchers, metadata watchers, the events recorder, leases).
//!
//! Each test starts its own server on 127.0.0.1 with an ephemeral port and waits for its
//! `ready` line; nothing leaves loopback and no root is needed. Waits are on output lines and
//! events, each bounded by a deadline so a broken server fails the test instead of hanging it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use futures::{AsyncBufReadExt as _, StreamExt as _, TryStreamExt as _};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

const CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/apiserver/fixtures/egret-crds.yaml"
);
const DEADLINE: Duration = Duration::from_secs(30);

/// A running server; `Drop` stops it and removes its directory.
struct Server {
    child: Child,
    dir: PathBuf,
    url: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "egret-apiserver-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl Server {
    fn start(name: &str, extra: &[&str]) -> Self {
        Self::start_in(fresh_dir(name), extra)
    }

    fn start_in(dir: PathBuf, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_egret-test-apiserver"))
            .args(["--listen", "127.0.0.1:0", "--dir"])
            .arg(dir.join("server"))
            .args(["--bookmark-interval", "300ms"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("starts egret-test-apiserver");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reads the ready line");
        let url = line
            .trim()
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("not a ready line: {line:?}"))
            .to_owned();
        Self { child, dir, url }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("server/kubeconfig")
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("server/token")).expect("token file")
    }

    fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(args);
        cmd
    }

    /// Runs kubectl (with `stdin` as its input) and returns its stdout; fails the test when it fails.
    fn kubectl_with(&self, args: &[&str], stdin: &str) -> String {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("writes stdin");
        let out = child.wait_with_output().expect("kubectl finishes");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {stderr}\n{stdout}"
        );
        stdout
    }

    fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with(args, "")
    }

    /// Runs kubectl expecting it to fail; returns its stderr.
    fn kubectl_fails(&self, args: &[&str], stdin: &str) -> String {
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runs kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("writes stdin");
        let out = child.wait_with_output().expect("kubectl finishes");
        assert!(!out.status.success(), "kubectl {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("reads the kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube accepts the kubeconfig");
        kube::Client::try_from(config).expect("builds a client")
    }

    /// Stops the server with SIGTERM (it writes its state file) and waits for it.
    fn terminate(&mut self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        assert!(self.child.wait().expect("waits").success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads lines from a child's stdout until one satisfies `want` (on a thread, bounded).
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, want: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the line arrives before the deadline");
        if want(&line) {
            return line;
        }
    }
}

fn line_reader(stdout: ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

const OBJECTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: alice
  labels: {team: alice}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: alice
  labels: {app: web}
spec:
  nodeName: node1
  containers: [{name: web, image: nginx}]
status:
  podIPs: [{ip: 10.10.1.5}]
---
apiVersion: v1
kind: Pod
metadata:
  name: db-1
  namespace: alice
  labels: {app: db}
spec:
  nodeName: node2
  containers: [{name: db, image: postgres}]
---
apiVersion: egret.dev/v1alpha1
kind: EgressNATPolicy
metadata:
  name: alice-frontend
spec:
  egress:
  - namespaceSelector: {matchLabels: {team: alice}}
    podSelector: {matchLabels: {app: web}}
  destinationCIDRs: [8.8.8.0/24]
  egressSourceIP: 192.168.1.100
---
apiVersion: egret.dev/v1alpha1
kind: EgressGateway
metadata:
  name: default
spec:
  floatingIPs: [192.168.1.100, 192.168.1.101]
"#;

#[test]
fn kubectl_applies_gets_labels_watches_patches_and_deletes() {
    let server = Server::start("kubectl", &[]);
    assert!(
        server
            .kubectl(&["apply", "-f", CRDS])
            .contains("egressnatpolicies.egret.dev created")
    );
    let applied = server.kubectl_with(&["apply", "-f", "-"], OBJECTS);
    assert!(
        applied.contains("egressnatpolicy.egret.dev/alice-frontend created"),
        "{applied}"
    );
    // Applying again changes nothing.
    assert!(
        server
            .kubectl_with(&["apply", "-f", "-"], OBJECTS)
            .contains("pod/web-1 unchanged")
    );

    let table = server.kubectl(&["get", "egressnatpolicies"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .expect("a header")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "EGRESS",
            "IP",
            "SELECTED",
            "ACCEPTED",
            "PROGRAMMED",
            "AGE"
        ]
    );
    assert!(
        table.contains("alice-frontend") && table.contains("192.168.1.100"),
        "{table}"
    );
    assert!(server.kubectl(&["get", "enp"]).contains("alice-frontend"));
    assert!(
        server
            .kubectl(&["get", "egret"])
            .contains("egressgateway.egret.dev/default")
    );

    server.kubectl(&[
        "label",
        "pod",
        "-n",
        "alice",
        "web-1",
        "app=x",
        "--overwrite",
    ]);
    server.kubectl(&["label", "namespace", "alice", "env=prod"]);
    let pods = server.kubectl(&["get", "pods", "-A", "-l", "app=x", "-o", "name"]);
    assert_eq!(pods.trim(), "pod/web-1");
    let on_node1 = server.kubectl(&[
        "get",
        "pods",
        "-n",
        "alice",
        "--field-selector",
        "spec.nodeName=node1",
        "-o",
        "name",
    ]);
    assert_eq!(on_node1.trim(), "pod/web-1");
    assert!(
        server
            .kubectl(&["get", "ns", "alice", "--show-labels"])
            .contains("env=prod,team=alice")
    );
    let in_set = server.kubectl(&[
        "get",
        "pods",
        "-n",
        "alice",
        "-l",
        "app in (db,x)",
        "-o",
        "name",
    ]);
    assert_eq!(in_set.lines().count(), 2, "{in_set}");

    // Status through the subresource; the printer columns follow.
    server.kubectl(&["patch", "egressnatpolicy", "alice-frontend", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"selectedPods":1,"conditions":[{"type":"Accepted","status":"True"},{"type":"Programmed","status":"False"}]}}"#]);
    let row = server.kubectl(&["get", "enp", "alice-frontend", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..5],
        ["alice-frontend", "192.168.1.100", "1", "True", "False"],
        "{row}"
    );

    // Two gateways report into one map with server-side apply.
    for (gw, ip) in [("gw1", "192.168.1.100"), ("gw2", "192.168.1.101")] {
        let status = format!(
            "apiVersion: egret.dev/v1alpha1\nkind: EgressGateway\nmetadata:\n  name: default\nstatus:\n  nodes:\n    {gw}: Up\n  floatingIPs:\n    \"{ip}\": {gw}\n"
        );
        server.kubectl_with(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                &format!("--field-manager=egret-gateway-{gw}"),
                "--subresource=status",
                "-f",
                "-",
            ],
            &status,
        );
    }
    let yaml = server.kubectl(&["get", "egressgateway", "default", "-o", "yaml"]);
    for want in [
        "gw1: Up",
        "gw2: Up",
        "192.168.1.100: gw1",
        "192.168.1.101: gw2",
        "- 192.168.1.100",
    ] {
        assert!(yaml.contains(want), "{want:?} missing in\n{yaml}");
    }
    let spec_apply = "apiVersion: egret.dev/v1alpha1\nkind: EgressNATPolicy\nmetadata:\n  name: ssa\nspec:\n  egress: [{podSelector: {}}]\n  destinationCIDRs: [1.1.1.0/24]\n  egressSourceIP: 192.168.1.101\n";
    assert!(
        server
            .kubectl_with(
                &[
                    "apply",
                    "--server-side",
                    "--field-manager=egret-test",
                    "-f",
                    "-"
                ],
                spec_apply
            )
            .contains("serverside-applied")
    );
    let conflict = server.kubectl_fails(
        &[
            "apply",
            "--server-side",
            "--field-manager=someone-else",
            "-f",
            "-",
        ],
        &spec_apply.replace("192.168.1.101", "192.168.1.102"),
    );
    assert!(
        conflict.contains("conflict") && conflict.contains("egret-test"),
        "{conflict}"
    );

    // Invalid objects are refused with the field's path.
    let invalid = server.kubectl_fails(&["apply", "-f", "-"], "apiVersion: egret.dev/v1alpha1\nkind: EgressNATPolicy\nmetadata:\n  name: bad\nspec:\n  egress: []\n");
    assert!(
        invalid.contains("spec.egress") && invalid.contains("is invalid"),
        "{invalid}"
    );

    // A watch prints a change made meanwhile.
    let mut watch = server
        .kubectl_command(&["get", "enp", "-w"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl get -w");
    let lines = line_reader(watch.stdout.take().expect("stdout"));
    wait_for_line(&lines, |l| l.contains("alice-frontend"));
    server.kubectl(&[
        "patch",
        "enp",
        "alice-frontend",
        "--type=merge",
        "-p",
        r#"{"spec":{"egressSourceIP":"192.168.1.101"}}"#,
    ]);
    wait_for_line(&lines, |l| {
        l.contains("alice-frontend") && l.contains("192.168.1.101")
    });
    watch.kill().expect("stops the watch");
    let _ = watch.wait();
    let generation = server.kubectl(&[
        "get",
        "enp",
        "alice-frontend",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(generation, "2");

    assert!(
        server
            .kubectl(&["delete", "enp", "alice-frontend"])
            .contains("deleted")
    );
    assert!(!server.kubectl(&["get", "enp"]).contains("alice-frontend"));
    server.kubectl(&["delete", "namespace", "alice"]);
    let left = server.kubectl(&["get", "pods", "-A", "-o", "name"]);
    assert_eq!(left.trim(), "", "the namespace's pods go with it");
}

/// Raw requests through kube's client (which brings TLS and the token).
async fn request(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &Value,
    accept: Option<&str>,
) -> (u16, Value) {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type);
    if let Some(accept) = accept {
        builder = builder.header("accept", accept);
    }
    let bytes = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(body).expect("encodes")
    };
    let response = client
        .send(
            builder
                .body(kube::client::Body::from(bytes))
                .expect("request"),
        )
        .await
        .expect("sends");
    let code = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("reads the body")
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn get(client: &kube::Client, path: &str) -> Value {
    let (code, body) = request(client, "GET", path, "application/json", &Value::Null, None).await;
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// A watch's lines, one JSON event each.
async fn watch(
    client: &kube::Client,
    path: &str,
    accept: Option<&str>,
) -> impl futures::Stream<Item = Value> + Unpin + use<> {
    let mut builder = hyper::Request::builder().uri(path);
    if let Some(accept) = accept {
        builder = builder.header("accept", accept);
    }
    let reader = client
        .request_stream(builder.body(Vec::new()).expect("request"))
        .await
        .expect("watch starts");
    Box::pin(
        reader.lines().map(|l| {
            serde_json::from_str::<Value>(&l.expect("reads a line")).expect("a JSON event")
        }),
    )
}

async fn next_event(
    events: &mut (impl futures::Stream<Item = Value> + Unpin),
    skip_bookmarks: bool,
) -> Value {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let event = events.next().await.expect("the stream goes on");
            if !(skip_bookmarks && event["type"] == "BOOKMARK") {
                return event;
            }
        }
    })
    .await
    .expect("an event before the deadline")
}

#[tokio::test]
async fn the_protocol_lists_watches_applies_and_expires() {
    let server = Server::start("raw", &["--crd", CRDS]);
    let client = server.client().await;

    // Bearer token required.
    let mut anonymous = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    anonymous.auth_info.token = None;
    let anonymous = kube::Client::try_from(anonymous).expect("client");
    let (code, status) = request(
        &anonymous,
        "GET",
        "/api/v1/namespaces",
        "application/json",
        &Value::Null,
        None,
    )
    .await;
    assert_eq!(
        (code, &status["kind"], &status["reason"]),
        (401, &json!("Status"), &json!("Unauthorized"))
    );

    // Discovery lists the CRDs preloaded with --crd.
    let egret = get(&client, "/apis/egret.dev/v1alpha1").await;
    let mut names: Vec<&str> = egret["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "egressgateways",
            "egressgateways/status",
            "egressnatpolicies",
            "egressnatpolicies/status"
        ]
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    // Create, list with pagination, watch from the list's version.
    let cms = "/api/v1/namespaces/default/configmaps";
    for i in 0..5 {
        let (code, _) = request(&client, "POST", cms, "application/json", &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}"), "labels": {"i": i.to_string()}}}), None).await;
        assert_eq!(code, 201);
    }
    let first = get(&client, &format!("{cms}?limit=2")).await;
    assert_eq!(first["items"].as_array().expect("items").len(), 2);
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token");
    let rest = get(&client, &format!("{cms}?limit=10&continue={token}")).await;
    assert_eq!(rest["items"][0]["metadata"]["name"], "cm-2");
    assert!(rest["metadata"].get("continue").is_none());
    let list_rv = first["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();

    let mut events = watch(&client, &format!("{cms}?watch=true&resourceVersion={list_rv}&allowWatchBookmarks=true&labelSelector=i%20in%20(1,2)"), None).await;
    let (_, changed) = request(
        &client,
        "PATCH",
        &format!("{cms}/cm-1"),
        "application/merge-patch+json",
        &json!({"data": {"k": "v"}}),
        None,
    )
    .await;
    let event = next_event(&mut events, true).await;
    assert_eq!(
        (&event["type"], &event["object"]["metadata"]["name"]),
        (&json!("MODIFIED"), &json!("cm-1"))
    );
    assert_eq!(
        event["object"]["metadata"]["resourceVersion"],
        changed["metadata"]["resourceVersion"]
    );
    // Relabelled out of the selector: DELETED; into it: ADDED.
    request(
        &client,
        "PATCH",
        &format!("{cms}/cm-1"),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"i": "9"}}}),
        None,
    )
    .await;
    assert_eq!(next_event(&mut events, true).await["type"], "DELETED");
    request(
        &client,
        "PATCH",
        &format!("{cms}/cm-4"),
        "application/json-patch+json",
        &json!([{"op": "replace", "path": "/metadata/labels/i", "value": "2"}]),
        None,
    )
    .await;
    let added = next_event(&mut events, true).await;
    assert_eq!(
        (&added["type"], &added["object"]["metadata"]["name"]),
        (&json!("ADDED"), &json!("cm-4"))
    );
    // Bookmarks carry only the resourceVersion.
    let bookmark = next_event(&mut events, false).await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert!(
        bookmark["object"]["metadata"]
            .as_object()
            .expect("metadata")
            .keys()
            .eq(["resourceVersion"])
    );

    // Expiry: the open watch ends with 410, and so does a new one from the old version.
    request(
        &client,
        "POST",
        "/_test/expire",
        "application/json",
        &Value::Null,
        None,
    )
    .await;
    let gone = next_event(&mut events, true).await;
    assert_eq!(
        (
            &gone["type"],
            &gone["object"]["code"],
            &gone["object"]["reason"]
        ),
        (&json!("ERROR"), &json!(410), &json!("Expired"))
    );
    let mut stale = watch(
        &client,
        &format!("{cms}?watch=true&resourceVersion={list_rv}"),
        None,
    )
    .await;
    assert_eq!(next_event(&mut stale, true).await["object"]["code"], 410);

    // Streaming list: initial ADDED events, then the initial-events-end bookmark.
    let mut streaming = watch(&client, &format!("{cms}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion="), None).await;
    for _ in 0..5 {
        assert_eq!(next_event(&mut streaming, false).await["type"], "ADDED");
    }
    let end = next_event(&mut streaming, false).await;
    assert_eq!(
        end["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );

    // Metadata only.
    let partial = request(
        &client,
        "GET",
        cms,
        "application/json",
        &Value::Null,
        Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
    )
    .await
    .1;
    assert_eq!(partial["kind"], "PartialObjectMetadataList");
    assert!(
        partial["items"][0].get("data").is_none()
            && partial["items"][0]["metadata"]["name"] == "cm-0"
    );

    // Status subresource: the main resource ignores status, the status endpoint ignores the rest.
    let gws = "/apis/egret.dev/v1alpha1/egressgateways";
    let (code, created) = request(&client, "POST", gws, "application/json", &json!({"apiVersion": "egret.dev/v1alpha1", "kind": "EgressGateway", "metadata": {"name": "default"}, "spec": {"floatingIPs": ["192.168.1.100"]}, "status": {"nodes": {"x": "Up"}}}), None).await;
    assert_eq!(
        (
            code,
            created.get("status"),
            &created["metadata"]["generation"]
        ),
        (201, None, &json!(1))
    );
    let apply = |gw: &str, body: Value| {
        let client = client.clone();
        let path = format!("{gws}/default/status?fieldManager={gw}&force=true");
        async move {
            request(
                &client,
                "PATCH",
                &path,
                "application/apply-patch+yaml",
                &body,
                None,
            )
            .await
        }
    };
    let kind = |status: Value| json!({"apiVersion": "egret.dev/v1alpha1", "kind": "EgressGateway", "metadata": {"name": "default"}, "status": status});
    assert_eq!(
        apply(
            "gw1",
            kind(json!({"nodes": {"gw1": "Up"}, "floatingIPs": {"192.168.1.100": "gw1"}}))
        )
        .await
        .0,
        200
    );
    let (_, both) = apply("gw2", kind(json!({"nodes": {"gw2": "Up"}}))).await;
    assert_eq!(both["status"]["nodes"], json!({"gw1": "Up", "gw2": "Up"}));
    let (_, after) = apply("gw1", kind(json!({"nodes": {"gw1": "Down"}}))).await;
    assert_eq!(
        after["status"],
        json!({"nodes": {"gw1": "Down", "gw2": "Up"}}),
        "gw1's stale floatingIPs key goes"
    );
    assert_eq!(
        after["metadata"]["generation"], 1,
        "status writes leave the generation"
    );
    let managers: Vec<&str> = after["metadata"]["managedFields"]
        .as_array()
        .expect("managed fields")
        .iter()
        .filter_map(|e| e["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"gw1") && managers.contains(&"gw2"),
        "{managers:?}"
    );
    let (_, spec_write) = request(
        &client,
        "PATCH",
        &format!("{gws}/default"),
        "application/merge-patch+json",
        &json!({"spec": {"floatingIPs": ["192.168.1.101"]}, "status": {"nodes": null}}),
        None,
    )
    .await;
    assert_eq!(
        (
            &spec_write["metadata"]["generation"],
            &spec_write["status"]["nodes"]["gw2"]
        ),
        (&json!(2), &json!("Up"))
    );
    // An invalid status value is refused with its path.
    let (code, invalid) = apply("gw3", kind(json!({"nodes": {"gw3": "Sideways"}}))).await;
    assert_eq!((code, &invalid["reason"]), (422, &json!("Invalid")));
    assert!(
        invalid["message"]
            .as_str()
            .expect("message")
            .contains("status.nodes.gw3"),
        "{invalid}"
    );

    // Optimistic concurrency, bad bodies, huge bodies, unknown resources.
    let mut stale_put = created.clone();
    stale_put["metadata"]["resourceVersion"] = json!("2");
    assert_eq!(
        request(
            &client,
            "PUT",
            &format!("{gws}/default"),
            "application/json",
            &stale_put,
            None
        )
        .await
        .0,
        409
    );
    assert_eq!(
        request(
            &client,
            "POST",
            gws,
            "application/json",
            &json!("not an object"),
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        request(
            &client,
            "POST",
            cms,
            "application/json",
            &json!({"metadata": {"name": "cm-0"}}),
            None
        )
        .await
        .0,
        409
    );
    let huge = json!({"metadata": {"name": "huge"}, "data": {"k": "x".repeat(4 << 20)}});
    assert_eq!(
        request(&client, "POST", cms, "application/json", &huge, None)
            .await
            .0,
        413
    );
    assert_eq!(
        request(
            &client,
            "GET",
            "/apis/nope.dev/v1/things",
            "application/json",
            &Value::Null,
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        request(
            &client,
            "GET",
            &format!("{cms}/missing"),
            "application/json",
            &Value::Null,
            None
        )
        .await
        .1["reason"],
        "NotFound"
    );

    // Pause answers 503 until resumed; stats count requests.
    let mut impatient = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig"),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("config");
    impatient.default_retry = false;
    let impatient = kube::Client::try_from(impatient).expect("client");
    request(
        &client,
        "POST",
        "/_test/pause",
        "application/json",
        &Value::Null,
        None,
    )
    .await;
    let paused = hyper::Request::get(cms)
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let response = impatient.send(paused).await.expect("an answer");
    assert_eq!(
        (
            response.status().as_u16(),
            response.headers().get("retry-after").map(|v| v.as_bytes())
        ),
        (503, Some(&b"1"[..]))
    );
    request(
        &client,
        "POST",
        "/_test/resume",
        "application/json",
        &Value::Null,
        None,
    )
    .await;
    let stats = get(&client, "/_test/stats").await;
    assert!(
        stats["byVerbResource"]["apply egressgateways.egret.dev/status"].as_u64() >= Some(3),
        "{stats}"
    );
    assert!(
        stats["byFieldManager"]["gw1"].as_u64() >= Some(2),
        "{stats}"
    );
}

async fn next<K>(
    s: &mut futures::stream::BoxStream<
        'static,
        Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>,
    >,
) -> kube::runtime::watcher::Event<K> {
    tokio::time::timeout(DEADLINE, s.try_next())
        .await
        .expect("an event before the deadline")
        .expect("no watch error")
        .expect("the stream goes on")
}

#[tokio::test]
async fn kube_runtime_watchers_recorder_and_leases_work_against_it() {
    use k8s_openapi::api::{
        coordination::v1::Lease,
        core::v1::{Namespace, Pod},
    };
    use kube::{
        Api, ResourceExt as _,
        api::{Patch, PatchParams, PostParams},
        core::PartialObjectMeta,
        runtime::{events, watcher},
    };

    let server = Server::start("kube", &[]);
    let client = server.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let pod = |name: &str, node: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}})).expect("a pod")
    };
    pods.create(&PostParams::default(), &pod("on-node1", "node1"))
        .await
        .expect("creates");
    pods.create(&PostParams::default(), &pod("on-node2", "node2"))
        .await
        .expect("creates");

    let mut pod_events = watcher(
        pods.clone(),
        watcher::Config::default().fields("spec.nodeName=node1"),
    )
    .boxed();
    let metadata: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let mut ns_events = watcher(metadata, watcher::Config::default().labels("team")).boxed();
    let mut streaming = watcher(pods.clone(), watcher::Config::default().streaming_lists()).boxed();
    // The initial list: only node1's pod.
    let mut initial = Vec::new();
    loop {
        match next(&mut pod_events).await {
            watcher::Event::InitApply(p) => initial.push(p.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["on-node1"]);
    let mut streamed = Vec::new();
    loop {
        match next(&mut streaming).await {
            watcher::Event::InitApply(p) => streamed.push(p.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(streamed.len(), 2);
    loop {
        if matches!(next(&mut ns_events).await, watcher::Event::InitDone) {
            break;
        }
    }

    // A relabel reaches the pod watcher; a namespace labelled `team` appears in the metadata watcher.
    pods.patch(
        "on-node1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .expect("relabels");
    let relabelled = loop {
        if let watcher::Event::Apply(p) = next(&mut pod_events).await {
            break p;
        }
    };
    assert_eq!(relabelled.labels()["app"], "db");
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "alice", "labels": {"team": "alice"}}}),
            )
            .expect("ns"),
        )
        .await
        .expect("creates");
    let seen = loop {
        if let watcher::Event::Apply(m) = next(&mut ns_events).await {
            break m;
        }
    };
    assert_eq!(seen.name_any(), "alice");

    // The events recorder: a create, then a repeat patched as a series.
    let recorder = events::Recorder::new(
        client.clone(),
        events::Reporter {
            controller: "egret-agent".into(),
            instance: Some("node1".into()),
        },
    );
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        kind: Some("Pod".into()),
        api_version: Some("v1".into()),
        name: Some("on-node1".into()),
        namespace: Some("default".into()),
        ..Default::default()
    };
    let event = events::Event {
        type_: events::EventType::Warning,
        reason: "UnknownEgressIP".into(),
        note: Some("not a floating IP".into()),
        action: "Validate".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &reference)
        .await
        .expect("publishes");
    recorder
        .publish(&event, &reference)
        .await
        .expect("publishes the repeat");
    let recorded: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let list = recorded
        .list(&Default::default())
        .await
        .expect("lists events");
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));

    // Leases: create, then a stale replace conflicts.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "egret"}, "spec": {"holderIdentity": "gw1", "leaseDurationSeconds": 3}})).expect("lease");
    let created = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("creates");
    let mut taken = created.clone();
    taken.spec.as_mut().expect("spec").holder_identity = Some("gw2".into());
    leases
        .replace("egret", &PostParams::default(), &taken)
        .await
        .expect("replaces");
    let err = leases
        .replace("egret", &PostParams::default(), &created)
        .await
        .expect_err("stale");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    let applied = leases.patch("egret", &PatchParams::apply("egret-gateway").force(), &Patch::Apply(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "gw1"}}))).await.expect("applies");
    assert_eq!(
        applied.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("gw1")
    );
}

#[test]
fn the_state_file_carries_the_cluster_across_a_restart() {
    let dir = fresh_dir("state");
    let state = dir.join("state.json");
    let state_arg = state.to_str().expect("utf-8 path").to_owned();
    let mut first = Server::start_in(dir.clone(), &["--state", &state_arg, "--crd", CRDS]);
    first.kubectl_with(&["apply", "-f", "-"], OBJECTS);
    let before: u64 = first
        .kubectl(&[
            "get",
            "enp",
            "alice-frontend",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .parse()
        .expect("a number");
    first.terminate();
    assert!(Path::new(&state).exists());
    let token = first.token();
    std::mem::forget(first);
    let second = Server::start_in(dir, &["--state", &state_arg]);
    assert_eq!(
        second.token(),
        token,
        "the token stays, so clients keep working"
    );
    assert!(second.kubectl(&["get", "enp"]).contains("alice-frontend"));
    // (`kubectl create namespace` would send protobuf, which this server refuses with 415.)
    let ns = second.kubectl_with(
        &[
            "apply",
            "-f",
            "-",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: after\n",
    );
    assert!(
        ns.parse::<u64>().expect("a number") > before,
        "resourceVersions stay monotonic"
    );
}
