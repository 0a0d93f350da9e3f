//! Kubernetes mode's figures, measured on the Kubernetes-mode lab
//! ([`egret_lab::cluster::ClusterLab`]: the test API server, both gateways and both agents in
//! Kubernetes mode, the real data path); needs root and built binaries (`EGRET_GATEWAY_BIN`,
//! `EGRET_AGENT_BIN`, `EGRET_APISERVER_BIN`, or `target/release`).
//!
//! 1. **A cluster change to the data path**: `ROUNDS` relabels of pod-a2 (in, out, …) and
//!    `ROUNDS` creations of its Pod object (deleted, then created with the label and its
//!    address), each timed from just before `kubectl` starts to the first UDP probe from the
//!    pod (one every 2 ms, each a new flow) that leaves with the new source, every later one
//!    too. `kubectl`'s own start-up is inside the figure; its time for a plain `get` is
//!    printed beside it.
//! 2. **A takeover to the EgressGateway status**: `kill -9` of .100's master, until
//!    `status.floatingIPs` names the other gateway; the killed one is started again and
//!    takes the address back between rounds.
//! 3. **A steady cluster's API requests per minute**, from the server's request counters.
//! 4. **The agents at scale**: 10,000 pods (110 on each lab node, the rest on 89 other
//!    nodes) in 100 namespaces and 1,000 policies; each agent's resident memory and CPU
//!    time, the status writer's (which watches every pod) and the other's.
//!
//! ```text
//! cluster_figures [ROUNDS]      (env EGRET_ROUNDS, default 20)
//! ```

use futures::StreamExt as _;
use serde_json::{Value, json};
use std::{
    fmt::Write as _,
    net::SocketAddrV4,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use egret_lab::{
    cluster::{ClusterLab, apiserver_binary},
    egress::{
        EGRESS_IP, Member, NODE1_ADDRESS, Node, OUTSIDE_ADDRESS, Pod, check_interrupted,
        program_main,
    },
    ha::{median, millis},
    setting,
};

fn main() -> ExitCode {
    program_main("cluster_figures", run)
}

fn summary(name: &str, values: &[Duration]) {
    println!(
        "{name}: median {}, worst {}, best {} ({} rounds)",
        millis(median(values)),
        millis(values.iter().max().copied()),
        millis(values.iter().min().copied()),
        values.len()
    );
}

fn run() -> Result<()> {
    let rounds: u32 = setting(1, Some("EGRET_ROUNDS"), 20, 1..=1000)?;
    let mut c = ClusterLab::start("figures", &apiserver_binary()?)?;
    let destination = SocketAddrV4::new(OUTSIDE_ADDRESS, 7600);

    // kubectl's own start-up, for reference.
    let mut kubectl_alone = Vec::new();
    for _ in 0..5 {
        let at = Instant::now();
        c.kubectl()
            .run(&["get", "namespace", "alice", "-o", "name"])?;
        kubectl_alone.push(at.elapsed());
    }
    summary(
        "kubectl get (its own start-up and one request)",
        &kubectl_alone,
    );

    // 1. Relabels and creations.
    let mut relabels = Vec::new();
    for round in 1..=rounds {
        check_interrupted()?;
        let select = round % 2 == 1;
        let (label, expected) = if select {
            ("role=frontend", EGRESS_IP)
        } else {
            ("role-", NODE1_ADDRESS)
        };
        let at = Instant::now();
        c.kubectl()
            .run(&["label", "pod", "pod-a2", "-n", "alice", label])?;
        let switch = c
            .lab
            .measure_switch(Pod::A2, destination, expected, at, Duration::from_secs(10))
            .with_context(|| format!("relabel round {round}"))?;
        println!("relabel {round:>3}: {}", millis(Some(switch.after)));
        relabels.push(switch.after);
    }
    // Leave pod-a2 unselected.
    if rounds % 2 == 1 {
        c.kubectl()
            .run(&["label", "pod", "pod-a2", "-n", "alice", "role-"])?;
        c.lab.measure_switch(
            Pod::A2,
            destination,
            NODE1_ADDRESS,
            Instant::now(),
            Duration::from_secs(10),
        )?;
    }
    let mut creations = Vec::new();
    let created = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-a2, namespace: alice, labels: {{role: frontend}}}}\n\
         spec: {{nodeName: node1, containers: [{{name: app, image: app}}]}}\n\
         status: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n",
        ip = Pod::A2.address()
    );
    for round in 1..=rounds {
        check_interrupted()?;
        c.kubectl()
            .run(&["delete", "pod", "pod-a2", "-n", "alice"])?;
        c.lab.measure_switch(
            Pod::A2,
            destination,
            NODE1_ADDRESS,
            Instant::now(),
            Duration::from_secs(10),
        )?;
        let at = Instant::now();
        c.kubectl().stdin(&["create", "-f", "-"], &created)?;
        let switch = c
            .lab
            .measure_switch(Pod::A2, destination, EGRESS_IP, at, Duration::from_secs(10))
            .with_context(|| format!("creation round {round}"))?;
        println!("creation {round:>3}: {}", millis(Some(switch.after)));
        creations.push(switch.after);
    }

    // 2. Takeovers to the status.
    let mut takeovers = Vec::new();
    for round in 1..=rounds.min(5) {
        check_interrupted()?;
        c.kubectl().wait_for(
            &["egressgateway", "default"],
            Duration::from_secs(30),
            |g| {
                g["status"]["floatingIPs"][EGRESS_IP.to_string()] == "gw1"
                    && g["status"]["nodes"]["gw2"] == "Up"
            },
        )?;
        let killed = Instant::now();
        c.lab.kill_gateway(Member::Gw1)?;
        let (_, named) = c.kubectl().wait_for(
            &["egressgateway", "default"],
            Duration::from_secs(10),
            |g| g["status"]["floatingIPs"][EGRESS_IP.to_string()] == "gw2",
        )?;
        let took = named.duration_since(killed);
        println!(
            "takeover {round}: status names gw2 {} after the kill",
            millis(Some(took))
        );
        takeovers.push(took);
        c.lab.start_gateway(Member::Gw1)?;
        c.lab.wait_gateways_converged(Duration::from_secs(30))?;
    }

    // 3. A steady minute.
    let stats = |c: &ClusterLab| -> Result<serde_json::Value> {
        let text = c.kubectl().run(&["get", "--raw", "/_test/stats"])?;
        Ok(serde_json::from_str(&text)?)
    };
    let before = stats(&c)?;
    std::thread::sleep(Duration::from_secs(60));
    let after = stats(&c)?;

    // 4. Scale.
    let agents_before = agent_usage(&mut c)?;
    let loaded = Instant::now();
    create_all(&c, scale_objects())?;
    println!(
        "10,000 pods and 1,000 policies created in {:.1?}",
        loaded.elapsed()
    );
    for node in Node::BOTH {
        c.wait_agent(node, |cluster| {
            cluster["policies"]
                .as_array()
                .is_some_and(|p| p.len() >= 1001)
        })?;
    }
    println!(
        "both agents programmed them {:.1?} after the first create",
        loaded.elapsed()
    );
    // The status writer's first round at scale, and the agents' answers to its writes.
    c.kubectl().wait_for(
        &["egressnatpolicy", "scale-999"],
        Duration::from_secs(60),
        |p| p["status"]["selectedPods"] == 10,
    )?;
    println!(
        "the status writer wrote every policy's status {:.1?} after the first create",
        loaded.elapsed()
    );
    std::thread::sleep(Duration::from_secs(5));
    let settled = agent_usage(&mut c)?;
    let scaled_before = stats(&c)?;
    std::thread::sleep(Duration::from_secs(60));
    let steady = agent_usage(&mut c)?;
    let scaled_after = stats(&c)?;

    println!("\n== figures");
    summary(
        "kubectl get (its own start-up and one request)",
        &kubectl_alone,
    );
    summary("pod relabel to the data path (kubectl included)", &relabels);
    summary(
        "pod creation to the data path (kubectl included)",
        &creations,
    );
    summary(
        "kill -9 of the master to the EgressGateway status naming the new one",
        &takeovers,
    );
    println!(
        "steady cluster, API requests in 60 s:\n{}",
        diff_stats(&before, &after)
    );
    println!(
        "steady cluster of 10,000 pods and 1,000 policies, API requests in 60 s:\n{}",
        diff_stats(&scaled_before, &scaled_after)
    );
    for (i, node) in Node::BOTH.iter().enumerate() {
        println!(
            "{} agent ({}): before {} MiB; with 10,000 pods and 1,000 policies {} MiB, \
             CPU {:.2} s to take them in (and the statuses' writes), {:.2} s over the next \
             60 s",
            node.name(),
            if settled[i].writer {
                "status writer: every pod"
            } else {
                "its node's pods"
            },
            agents_before[i].rss_kib / 1024,
            steady[i].rss_kib / 1024,
            settled[i].cpu_s - agents_before[i].cpu_s,
            steady[i].cpu_s - settled[i].cpu_s,
        );
    }
    Ok(())
}

struct Usage {
    rss_kib: u64,
    cpu_s: f64,
    writer: bool,
}

/// Each agent's resident memory and CPU time so far, and whether it writes the status.
fn agent_usage(c: &mut ClusterLab) -> Result<Vec<Usage>> {
    let mut out = Vec::new();
    for node in Node::BOTH {
        let pid = c.lab.agent_mut(node)?.pid().context("agent pid")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields
            .get(11)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
        // SAFETY: sysconf has no memory preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let writer = c.lab.agent_status_json(node)?["cluster"]["status_writer"] == true;
        out.push(Usage {
            rss_kib,
            cpu_s: ticks / hz,
            writer,
        });
    }
    Ok(out)
}

/// The server's request counters' growth, one line per key that moved (keys may hold dots:
/// the path is kept as a list).
fn diff_stats(before: &Value, after: &Value) -> String {
    let mut out = String::new();
    let mut walk: Vec<(Vec<String>, &Value)> = vec![(Vec::new(), after)];
    while let Some((path, value)) = walk.pop() {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let mut deeper = path.clone();
                    deeper.push(k.clone());
                    walk.push((deeper, v));
                }
            }
            Value::Number(n) => {
                let old = path
                    .iter()
                    .try_fold(before, |v, k| v.get(k))
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let new = n.as_u64().unwrap_or(0);
                if new > old {
                    let _ = writeln!(out, "  {}: {}", path.join(" / "), new - old);
                }
            }
            _ => {}
        }
    }
    out
}

/// 100 namespaces, 10,000 pods (110 on node1, 110 on node2, the rest on node-3..node-91),
/// 4 EgressGateways holding 1,000 egress IPs, 1,000 policies each selecting the 10 pods of
/// one app label in the namespaces of one team: (collection path, object) to create, in order.
fn scale_objects() -> Vec<(String, Value)> {
    let mut objects = Vec::new();
    for ns in 0..100 {
        objects.push((
            "/api/v1/namespaces".to_owned(),
            json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": format!("scale-{ns}"), "labels": {"team": format!("t{}", ns % 10)}}}),
        ));
    }
    for pod in 0..10_000u32 {
        let node = match pod {
            0..110 => "node1".to_owned(),
            110..220 => "node2".to_owned(),
            n => format!("node-{}", 3 + (n - 220) / 110),
        };
        let ip = format!(
            "10.{}.{}.{}",
            100 + pod / 65536,
            (pod / 256) % 256,
            pod % 256
        );
        let ns = format!("scale-{}", pod % 100);
        objects.push((
            format!("/api/v1/namespaces/{ns}/pods"),
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("p{pod}"), "namespace": ns,
                    "labels": {"app": format!("a{}", pod % 1000)}},
                "spec": {"nodeName": node, "containers": [{"name": "app", "image": "app"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}}),
        ));
    }
    for g in 0..4u32 {
        let ips: Vec<String> = (0..250u32)
            .map(|i| format!("192.169.{g}.{}", i + 1))
            .collect();
        objects.push((
            "/apis/egret.dev/v1alpha1/egressgateways".to_owned(),
            json!({"apiVersion": "egret.dev/v1alpha1", "kind": "EgressGateway",
                "metadata": {"name": format!("scale-{g}")}, "spec": {"floatingIPs": ips}}),
        ));
    }
    for p in 0..1000u32 {
        objects.push((
            "/apis/egret.dev/v1alpha1/egressnatpolicies".to_owned(),
            json!({"apiVersion": "egret.dev/v1alpha1", "kind": "EgressNATPolicy",
                "metadata": {"name": format!("scale-{p}")},
                "spec": {
                    "egress": [{"namespaceSelector": {"matchLabels": {"team": format!("t{}", p % 10)}},
                                "podSelector": {"matchLabels": {"app": format!("a{p}")}}}],
                    "destinationCIDRs": [format!("203.0.{}.0/24", p % 256)],
                    "egressSourceIP": format!("192.169.{}.{}", p / 250, p % 250 + 1)}}),
        ));
    }
    objects
}

/// Creates `objects` through the lab's API server with kube's client, 32 requests in flight
/// (kubectl throttles itself to a few requests a second), from inside the namespace the
/// server listens in.
fn create_all(c: &ClusterLab, objects: Vec<(String, Value)>) -> Result<()> {
    let kubeconfig = c.api.kubeconfig();
    c.lab.router().run(move || -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let file = kube::config::Kubeconfig::read_from(&kubeconfig)?;
            let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
            let client = kube::Client::try_from(config)?;
            // Namespaces and gateways first: policies and pods refer to them.
            let (first, rest): (Vec<_>, Vec<_>) = objects.into_iter().partition(|(path, _)| {
                path.ends_with("/namespaces") || path.ends_with("/egressgateways")
            });
            for batch in [first, rest] {
                let results: Vec<Result<()>> = futures::stream::iter(batch)
                    .map(|(path, object)| {
                        let client = client.clone();
                        async move {
                            let request = http::Request::post(path)
                                .header("content-type", "application/json")
                                .body(serde_json::to_vec(&object)?)?;
                            client.request::<Value>(request).await?;
                            Ok(())
                        }
                    })
                    .buffer_unordered(32)
                    .collect()
                    .await;
                results.into_iter().collect::<Result<Vec<()>>>()?;
            }
            Ok(())
        })
    })?
}
