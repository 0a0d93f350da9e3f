//! egret-cni end to end: new pods start on node1 of the Kubernetes-mode lab
//! (`egret_lab::cluster`) the way a container runtime starts them. The cluster's own CNI is
//! the lab's plain wiring (a new namespace, a veth, the pod's /32); then the runtime runs
//! `egret-cni` as the last plugin of the chain, with the `CNI_*` environment and the network
//! config with `prevResult` on stdin, and the pod sends its first packets the moment ADD
//! returns. A capture on the outside host sees the source of every one.
//!
//! The pods' objects are in the API server before their sandbox exists (as the scheduler
//! binds them before the kubelet starts them), without an address; the kubelet's status
//! update with the address follows ADD, while the pod already sends. Some objects are
//! created right before their ADD, so the agent may not have seen them yet.
//!
//! Needs root and the built binaries: `egret-agent`, `egret-gateway` and `egret-cni` in
//! `target/release` (or `$EGRET_AGENT_BIN`, `$EGRET_GATEWAY_BIN`, `$EGRET_CNI_BIN`).
//!
//! Figures (ADD latency, the window without the plugin) are printed; the tests hold them
//! within generous bounds only.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use egret_lab::{
    AgentLab,
    cluster::{ClusterLab, Kubectl, READY},
    cni::{Arrival, Invocation, Plugin, Probes, Sandbox, percentile},
    egress::{EGRESS_IP, NODE1_ADDRESS, Node, OUTSIDE_ADDRESS},
    ha::{median, millis, one_lab_at_a_time},
    require_root,
};

/// Pod starts with the plugin whose pods a policy selects, and without the plugin.
const SELECTED_STARTS: u32 = 100;
/// Pod starts with the plugin whose pods no policy selects, interleaved with the others.
const UNSELECTED_STARTS: u32 = 20;
/// Probes each pod sends the moment ADD returns.
const FIRST_PROBES: u32 = 3;
/// The outside host's port the probes go to (inside the policy's destination).
const PROBE_TO: SocketAddrV4 = SocketAddrV4::new(OUTSIDE_ADDRESS, 7450);
/// How long probes may take to arrive.
const ARRIVAL_BOUND: Duration = Duration::from_secs(5);
/// How long a pod started without the plugin may leave with the node's address: the
/// kubelet's status update, the watch event and the reconcile, with room for a slow machine.
const SWITCH_BOUND: Duration = Duration::from_secs(15);
/// The ADD of a pod no policy selects is answered from the agent's state, with no API read
/// and no wait; any bound far below the plugin's timeout (5 s) shows it never waited for one.
const UNSELECTED_ADD_BOUND: Duration = Duration::from_secs(1);
/// The pod network's node side on node1, every pod's default route.
const NODE1_POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 1);

fn api_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_egret-test-apiserver"))
}

/// The address of pod start `index`: 10.10.1.10 and up, in node1's pod range.
fn pod_address(index: u32) -> Ipv4Addr {
    let host = u8::try_from(10 + index).expect("at most 245 pod starts");
    Ipv4Addr::new(10, 10, 1, host)
}

/// Pod objects on node1 in namespace alice; `frontend` ones are selected by the lab's policy.
fn pods(names: impl IntoIterator<Item = (String, bool)>) -> String {
    names
        .into_iter()
        .map(|(name, frontend)| {
            let labels = if frontend { "{role: frontend}" } else { "{}" };
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: alice, labels: \
                 {labels}}}\nspec: {{nodeName: node1, containers: [{{name: app, image: app}}]}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The kubelet's status update for a pod that runs with `address`, started, not awaited.
fn kubelet_reports(kubectl: &Kubectl<'_>, name: &str, address: Ipv4Addr) -> Result<Child> {
    let patch = serde_json::json!({"status": {
        "phase": "Running", "podIP": address.to_string(), "podIPs": [{"ip": address.to_string()}]}})
    .to_string();
    kubectl.spawn(&[
        "patch",
        "pod",
        name,
        "-n",
        "alice",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ])
}

/// The uids of alice's pods, by name, as the kubelet hands them to the runtime.
fn uids(kubectl: &Kubectl<'_>) -> Result<HashMap<String, String>> {
    let pods = kubectl.get_json(&["pods", "-n", "alice"])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|pod| {
            let meta = &pod["metadata"];
            Some((
                meta["name"].as_str()?.to_owned(),
                meta["uid"].as_str()?.to_owned(),
            ))
        })
        .collect())
}

fn finish_kubelet(mut child: Child, name: &str) -> Result<()> {
    let status = child.wait()?;
    ensure!(
        status.success(),
        "the status update of {name} failed: {status}"
    );
    Ok(())
}

/// The socket node1's agent listens on for egret-cni.
fn agent_socket(c: &ClusterLab) -> PathBuf {
    c.lab.agent_config(Node::Node1).state_dir.join("cni.sock")
}

/// The sandbox of pod start `index` (address [`pod_address`]) on node1, for pod
/// `alice/NAME` with `UID`.
fn node1_sandbox(
    lab: &AgentLab,
    tag: &str,
    index: u32,
    (name, uid): (&str, &str),
) -> Result<Sandbox> {
    Sandbox::create(
        lab.node(Node::Node1),
        tag,
        index,
        pod_address(index),
        NODE1_POD_GATEWAY,
        ("alice", name, uid),
    )
}

fn ensure_added(add: &Invocation, sandbox: &Sandbox) -> Result<()> {
    ensure!(add.succeeded(), "ADD of {}: {add}", sandbox.pod_name);
    // prevResult passes through unchanged (in the config's version).
    ensure!(
        add.json()? == sandbox.prev_result(),
        "ADD of {} changed prevResult: {add}",
        sandbox.pod_name
    );
    Ok(())
}

fn summary(values: &[Duration]) -> String {
    format!(
        "median {}, p99 {}, max {}",
        millis(median(values)),
        millis(percentile(values, 99)),
        millis(values.iter().max().copied())
    )
}

#[test]
fn a_hundred_pod_starts_send_nothing_with_the_nodes_address_with_egret_cni_and_leak_without()
-> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut c = ClusterLab::start("cni-race", &api_binary())?;
    let probes = Probes::start(c.lab.outside(), "eth0", PROBE_TO)?;
    let plugin = Plugin::new(&agent_socket(&c), &[])?;
    let total = SELECTED_STARTS + UNSELECTED_STARTS;
    // Every sixth start is a pod no policy selects; every tenth selected one is created
    // right before its ADD (the agent's store may not have it yet).
    let selected = |index: u32| index % 6 != 5;
    let late = |index: u32| selected(index) && index.is_multiple_of(10);
    let name = |index: u32| {
        if selected(index) {
            format!("cni-s{index}")
        } else {
            format!("cni-u{index}")
        }
    };
    let without = |index: u32| format!("raw-{index}");

    c.step(
        "the pods' objects, scheduled on node1, without addresses",
        |c| {
            let early = (0..total)
                .filter(|i| !late(*i))
                .map(|i| (name(i), selected(i)));
            let raw = (total..total + SELECTED_STARTS).map(|i| (without(i), true));
            c.kubectl().apply(&pods(early.chain(raw)))?;
            Ok(())
        },
    )?;

    let mut uid = uids(&c.kubectl())?;
    let mut sandboxes = Vec::new();
    let (mut add_selected, mut add_unselected) = (Vec::new(), Vec::new());
    let mut lost = 0_usize;
    c.step(
        "with egret-cni: ADD, the first packets at once, then the kubelet's status update",
        |c| {
            for index in 0..total {
                let pod = name(index);
                if late(index) {
                    let created = c.kubectl().stdin(
                        &["apply", "-f", "-", "-o", "jsonpath={.metadata.uid}"],
                        &pods([(pod.clone(), true)]),
                    )?;
                    uid.insert(pod.clone(), created);
                }
                let sandbox = node1_sandbox(&c.lab, "cni", index, (&pod, &uid[&pod]))?;
                let add = plugin.run("ADD", &sandbox)?;
                for number in 0..FIRST_PROBES {
                    probes.send(&sandbox, index, number)?;
                }
                ensure_added(&add, &sandbox)?;
                let kubelet = kubelet_reports(&c.kubectl(), &pod, sandbox.address)?;
                let arrived = probes.wait_for(index, FIRST_PROBES as usize, ARRIVAL_BOUND);
                ensure!(
                    !arrived.is_empty(),
                    "no probe of {pod} reached the outside host within {ARRIVAL_BOUND:?}"
                );
                lost += FIRST_PROBES as usize - arrived.len();
                finish_kubelet(kubelet, &pod)?;
                if selected(index) {
                    add_selected.push(add.elapsed);
                } else {
                    add_unselected.push(add.elapsed);
                }
                sandboxes.push(sandbox);
            }
            Ok(())
        },
    )?;

    c.step(
        "selected pods: not one packet with the node's address; unselected: the node's",
        |_| {
            let arrivals = probes.arrivals();
            let of = |want: bool| -> Vec<&Arrival> {
                arrivals
                    .iter()
                    .filter(|a| a.start < total && selected(a.start) == want)
                    .collect()
            };
            let leaked: Vec<&Arrival> = of(true)
                .into_iter()
                .filter(|a| a.source != EGRESS_IP)
                .collect();
            let starts_leaked: std::collections::BTreeSet<u32> =
                leaked.iter().map(|a| a.start).collect();
            eprintln!(
                "   with egret-cni: {} of {} probes of {SELECTED_STARTS} selected pod starts \
                 arrived, {} with another source than {EGRESS_IP} ({} starts leaked); \
                 {lost} probes lost in all",
                of(true).len(),
                SELECTED_STARTS * FIRST_PROBES,
                leaked.len(),
                starts_leaked.len()
            );
            eprintln!(
                "   ADD latency: selected pods {}; unselected pods {}",
                summary(&add_selected),
                summary(&add_unselected)
            );
            ensure!(
                leaked.is_empty(),
                "probes of selected pods left with another source: {leaked:?}"
            );
            // The capture does see the node's address: the unselected pods' probes have it.
            ensure!(
                !of(false).is_empty() && of(false).iter().all(|a| a.source == NODE1_ADDRESS),
                "unselected pods' probes: {:?}",
                of(false)
            );
            let slowest = add_unselected.iter().max().copied().unwrap_or_default();
            ensure!(
                slowest < UNSELECTED_ADD_BOUND,
                "an unselected pod's ADD took {slowest:?}"
            );
            Ok(())
        },
    )?;

    c.step(
        "the agent's metrics count the ADDs and their time to the data path",
        |c| {
            let (text, metrics) = c.lab.agent_metrics(Node::Node1)?;
            let families = [
                "egret_agent_cni_requests_total",
                "egret_agent_programming_latency_seconds",
                "egret_agent_policy_",
                "egret_agent_map_entries",
                "egret_agent_watch_",
            ];
            for line in text
                .lines()
                .filter(|l| families.iter().any(|f| l.starts_with(f)))
            {
                eprintln!("   {line}");
            }
            let count =
                |name: &str, labels: &[(&str, &str)]| metrics.value(name, labels).unwrap_or(0.0);
            let programmed = count(
                "egret_agent_cni_requests_total",
                &[("command", "add"), ("outcome", "programmed")],
            );
            let not_selected = count(
                "egret_agent_cni_requests_total",
                &[("command", "add"), ("outcome", "not_selected")],
            );
            let timed = count(
                "egret_agent_programming_latency_seconds_count",
                &[("trigger", "cni")],
            );
            ensure!(
                programmed == f64::from(SELECTED_STARTS)
                    && not_selected == f64::from(UNSELECTED_STARTS)
                    && timed == f64::from(total),
                "ADDs counted: {programmed} programmed, {not_selected} not selected, {timed} timed"
            );
            Ok(())
        },
    )?;

    c.step("CHECK of a programmed pod and DEL of every pod", |_| {
        for sandbox in [&sandboxes[0], &sandboxes[5]] {
            let check = plugin.run("CHECK", sandbox)?;
            ensure!(check.succeeded(), "CHECK of {}: {check}", sandbox.pod_name);
        }
        for sandbox in &sandboxes {
            let del = plugin.run("DEL", sandbox)?;
            ensure!(
                del.succeeded() && del.stdout.trim().is_empty(),
                "DEL of {}: {del}",
                sandbox.pod_name
            );
        }
        Ok(())
    })?;
    drop(sandboxes);

    c.step(
        "without egret-cni: the pod sends at once, the agent learns of it from the API",
        |c| {
            let mut windows = Vec::new();
            let mut leaked_starts = 0_u32;
            for index in total..total + SELECTED_STARTS {
                let pod = without(index);
                let sandbox = node1_sandbox(&c.lab, "cni", index, (&pod, &uid[&pod]))?;
                let kubelet = kubelet_reports(&c.kubectl(), &pod, sandbox.address)?;
                // A new flow every 2 ms until one arrives with the egress IP.
                let mut sent = Vec::new();
                let deadline = Instant::now() + SWITCH_BOUND;
                let switched = loop {
                    let number = u32::try_from(sent.len())?;
                    sent.push(probes.send(&sandbox, index, number)?);
                    if let Some(first) = probes
                        .arrivals_of(index)
                        .iter()
                        .filter(|a| a.source == EGRESS_IP)
                        .map(|a| a.number)
                        .min()
                    {
                        break first;
                    }
                    ensure!(
                        Instant::now() < deadline,
                        "{pod} started without the plugin never left with {EGRESS_IP}"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                };
                finish_kubelet(kubelet, &pod)?;
                // The probes still under way when the loop ended.
                let arrivals = probes.wait_for(index, sent.len(), Duration::from_millis(200));
                let leaked = arrivals
                    .iter()
                    .filter(|a| a.source == NODE1_ADDRESS)
                    .count();
                if leaked > 0 {
                    leaked_starts += 1;
                    windows.push(sent[switched as usize].duration_since(sent[0]));
                }
            }
            eprintln!(
                "   without egret-cni: {leaked_starts} of {SELECTED_STARTS} pod starts sent \
                 packets with the node's address {NODE1_ADDRESS}; the window (first packet to \
                 the first with {EGRESS_IP}): {}",
                summary(&windows)
            );
            Ok(())
        },
    )?;
    Ok(())
}

/// Runs the plugin on `sandbox` with its environment changed by `edit` and `stdin` as the
/// network config.
fn run_edited(
    plugin: &Plugin,
    sandbox: &Sandbox,
    edit: impl FnOnce(&mut Vec<(String, String)>),
    stdin: &str,
) -> Result<Invocation> {
    let mut env = sandbox.environment("ADD");
    edit(&mut env);
    plugin.run_raw(&env, stdin.as_bytes())
}

/// Sets `key` in a runtime's environment `env`.
fn set_var(env: &mut [(String, String)], key: &str, value: &str) {
    for (k, v) in env.iter_mut() {
        if k == key {
            *v = value.to_owned();
        }
    }
}

/// A CNI error result with `code`, a message, exit status 1 (not a panic's 101).
fn ensure_error(run: &Invocation, code: u64, what: &str) -> Result<()> {
    ensure!(run.status.code() == Some(1), "{what}: {run}");
    let result = run.json()?;
    ensure!(
        result["code"] == code && result["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: expected error code {code} with a message: {run}"
    );
    Ok(())
}

/// Waits until the agent answers STATUS: it listens and has the cluster's first listing.
fn wait_status(plugin: &Plugin, sandbox: &Sandbox) -> Result<()> {
    let deadline = Instant::now() + READY;
    loop {
        let status = plugin.run("STATUS", sandbox)?;
        if status.succeeded() {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the agent does not answer STATUS: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn egret_cni_fails_as_configured_when_the_agent_or_the_api_is_away_and_refuses_garbage()
-> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut c = ClusterLab::start("cni-fault", &api_binary())?;
    let probes = Probes::start(c.lab.outside(), "eth0", PROBE_TO)?;
    // A short timeout for the slow agent; Fail is the default policy.
    let plugin = Plugin::new(&agent_socket(&c), &[("timeout", "1s")])?;
    let ignore = plugin.with(&[("failure_policy", "Ignore")]);
    let names: Vec<String> = (0..5).map(|i| format!("fault-{i}")).collect();
    c.kubectl()
        .apply(&pods(names.iter().map(|n| (n.clone(), true))))?;
    let uid = uids(&c.kubectl())?;
    let mut sandboxes = Vec::new();
    for (index, name) in (0_u32..).zip(&names) {
        sandboxes.push(node1_sandbox(&c.lab, "cnif", index, (name, &uid[name]))?);
    }
    // Pod start `index` is programmed: its first packets leave with the egress IP.
    let leaves_with_egress_ip = |sandbox: &Sandbox, index: u32| -> Result<()> {
        for number in 0..FIRST_PROBES {
            probes.send(sandbox, index, number)?;
        }
        let arrived = probes.wait_for(index, FIRST_PROBES as usize, ARRIVAL_BOUND);
        ensure!(
            !arrived.is_empty() && arrived.iter().all(|a| a.source == EGRESS_IP),
            "{}'s first packets: {arrived:?}",
            sandbox.pod_name
        );
        Ok(())
    };

    c.step(
        "a malformed network config or CNI_ARGS is a CNI error result, never a panic",
        |_| {
            let sandbox = &sandboxes[0];
            let mut good = plugin.conf.clone();
            good["prevResult"] = sandbox.prev_result();
            let with = |key: &str, value: serde_json::Value| {
                let mut conf = good.clone();
                conf[key] = value;
                conf.to_string()
            };
            let cases: Vec<(&str, Invocation, u64)> = vec![
                (
                    "not JSON",
                    run_edited(&plugin, sandbox, |_| {}, "{not json")?,
                    6,
                ),
                (
                    "an unknown cniVersion",
                    run_edited(
                        &plugin,
                        sandbox,
                        |_| {},
                        &with("cniVersion", "9.9.9".into()),
                    )?,
                    1,
                ),
                (
                    "a timeout that is no duration",
                    run_edited(&plugin, sandbox, |_| {}, &with("timeout", "soon".into()))?,
                    7,
                ),
                (
                    "a failure_policy that is neither Fail nor Ignore",
                    run_edited(
                        &plugin,
                        sandbox,
                        |_| {},
                        &with("failure_policy", "Maybe".into()),
                    )?,
                    7,
                ),
                (
                    "no prevResult",
                    run_edited(&plugin, sandbox, |_| {}, &plugin.conf.to_string())?,
                    7,
                ),
                (
                    "CNI_ARGS without the pod's name",
                    run_edited(
                        &plugin,
                        sandbox,
                        |env| set_var(env, "CNI_ARGS", "K8S_POD_NAMESPACE=alice;garbage"),
                        &good.to_string(),
                    )?,
                    4,
                ),
                (
                    "an unknown CNI_COMMAND",
                    run_edited(
                        &plugin,
                        sandbox,
                        |env| set_var(env, "CNI_COMMAND", "ATTACH"),
                        &good.to_string(),
                    )?,
                    4,
                ),
            ];
            for (what, run, code) in &cases {
                ensure_error(run, *code, what)?;
            }
            // Without CNI_COMMAND no runtime is calling: the operator's command line says
            // how it is used (clap's usage error), and nothing is written to stdout.
            let by_hand = run_edited(
                &plugin,
                sandbox,
                |env| env.retain(|(key, _)| key != "CNI_COMMAND"),
                &good.to_string(),
            )?;
            ensure!(
                by_hand.status.code() == Some(2)
                    && by_hand.stdout.is_empty()
                    && by_hand.stderr.contains("Usage: egret-cni"),
                "no CNI_COMMAND: {by_hand}"
            );
            Ok(())
        },
    )?;

    c.step(
        "DEL of a pod that was never added succeeds and changes nothing",
        |c| {
            let entries = |c: &mut ClusterLab| -> Result<serde_json::Value> {
                Ok(c.lab.agent_status_json(Node::Node1)?["entries"].clone())
            };
            let before = entries(c)?;
            let del = plugin.run("DEL", &sandboxes[1])?;
            ensure!(del.succeeded(), "DEL: {del}");
            // A runtime may DEL a sandbox whose ADD never ran, without prevResult or pod.
            let bare = plugin.run_raw(
                &[
                    ("CNI_COMMAND".into(), "DEL".into()),
                    ("CNI_CONTAINERID".into(), "never-added".into()),
                    ("CNI_IFNAME".into(), "eth0".into()),
                ],
                plugin.conf.to_string().as_bytes(),
            )?;
            ensure!(bare.succeeded(), "a bare DEL: {bare}");
            ensure!(entries(c)? == before, "the entries changed");
            Ok(())
        },
    )?;

    c.step(
        "the agent is slow: ADD gives up at the timeout; Fail fails it, Ignore starts the pod",
        |c| {
            let sandbox = &sandboxes[1];
            c.lab.agent_mut(Node::Node1)?.signal(libc::SIGSTOP)?;
            let failed = plugin.run("ADD", sandbox);
            let ignored = ignore.run("ADD", sandbox);
            c.lab.agent_mut(Node::Node1)?.signal(libc::SIGCONT)?;
            let (failed, ignored) = (failed?, ignored?);
            ensure_error(&failed, 11, "Fail with a stopped agent")?;
            for run in [&failed, &ignored] {
                ensure!(
                    run.elapsed >= Duration::from_secs(1)
                        && run.elapsed < Duration::from_secs(1) + UNSELECTED_ADD_BOUND,
                    "the timeout is 1s: {run}"
                );
            }
            ensure_added(&ignored, sandbox)?;
            ensure!(
                ignored.stderr.contains("unprogrammed"),
                "Ignore says the pod starts unprogrammed: {ignored}"
            );
            eprintln!(
                "   stopped agent: Fail after {}, Ignore after {}",
                millis(Some(failed.elapsed)),
                millis(Some(ignored.elapsed))
            );
            // The runtime's retry once the agent answers again.
            ensure_added(&plugin.run("ADD", sandbox)?, sandbox)?;
            leaves_with_egress_ip(sandbox, 1)
        },
    )?;

    c.step(
        "the agent is down: Fail fails at once, Ignore starts the pod, STATUS says not available",
        |c| {
            let sandbox = &sandboxes[2];
            c.lab.kill_agent(Node::Node1)?;
            let failed = plugin.run("ADD", sandbox)?;
            ensure_error(&failed, 11, "Fail without an agent")?;
            ensure!(
                failed.elapsed < Duration::from_secs(1),
                "nobody listens: no need to wait for the timeout: {failed}"
            );
            ensure_added(&ignore.run("ADD", sandbox)?, sandbox)?;
            ensure_error(
                &plugin.run("STATUS", sandbox)?,
                50,
                "STATUS without an agent",
            )?;
            c.lab.spawn_agent(Node::Node1)?;
            wait_status(&plugin, sandbox)?;
            ensure_added(&plugin.run("ADD", sandbox)?, sandbox)?;
            leaves_with_egress_ip(sandbox, 2)
        },
    )?;

    c.step(
        "the API is down: a pod the agent has seen is programmed from its cache; one it has \
         not is refused",
        |c| {
            c.api.stop()?;
            let sandbox = &sandboxes[3];
            let add = plugin.run("ADD", sandbox)?;
            ensure_added(&add, sandbox)?;
            leaves_with_egress_ip(sandbox, 3)?;
            // A pod whose object the agent never saw: it cannot know its labels.
            let unseen = node1_sandbox(
                &c.lab,
                "cnif",
                9,
                ("unseen", "0f0f0f0f-0000-4000-8000-000000000000"),
            )?;
            let patient = plugin.with(&[("timeout", "5s")]);
            let refused = patient.run("ADD", &unseen)?;
            ensure_error(&refused, 11, "an unseen pod during an outage")?;
            ensure!(
                refused.json()?["details"]
                    .as_str()
                    .is_some_and(|d| d.contains("reading pod alice/unseen")),
                "the refusal says why: {refused}"
            );
            c.api.restart(c.lab.router())?;
            Ok(())
        },
    )?;
    Ok(())
}
