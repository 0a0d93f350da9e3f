//! Kubernetes mode end to end: both agents and both gateways talk to the lab's API server
//! (`egret-test-apiserver`, in the router's namespace on the LAN), a cluster user drives it
//! with the real `kubectl`, and the real data path answers: the outside host reports the
//! source it sees. Needs root and the built binaries (as `agent_e2e.rs`).
//!
//! The pods of the lab (`egret_lab::egress`) are mirrored as Pod objects: pod-a1
//! (`role=frontend`) and pod-a2 in namespace `alice` (`user=alice`) on node1, pod-b1
//! (`role=frontend`) in `paul` (`user=paul`) on node2. The policy is the seed's
//! (`role=frontend` pods of the namespaces of users alice and paul), toward the outside
//! network without its upper half, leaving with 192.168.50.100.
//!
//! Times (a relabel reaching the data path, a takeover reaching the status) are printed;
//! the tests hold them within generous bounds only. The figures come from repeated runs of
//! the lab, not from here.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use egret_lab::{
    cluster::{CHANGE_BOUND, ClusterLab, PROBE, READY, condition},
    egress::{
        EGRESS_IP, INTERNAL_ADDRESS, Member, NODE1_ADDRESS, NODE2_ADDRESS, Node, Pod,
        SECOND_EGRESS_IP,
    },
    ha::{millis, one_lab_at_a_time},
    require_root,
    topology::Metrics,
};
use serde_json::Value;

fn api_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_egret-test-apiserver"))
}

fn cluster_lab(tag: &str) -> Result<ClusterLab> {
    ClusterLab::start(tag, &api_binary())
}

fn policy_is(object: &Value, accepted: (&str, &str)) -> bool {
    condition(object, "Accepted") == Some((accepted.0.to_owned(), accepted.1.to_owned()))
}

#[test]
fn pods_follow_their_labels_and_the_policy_status_and_events_say_why() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut c = cluster_lab("k8s-sel")?;

    c.step(
        "selected pods leave with the egress IP, others with their node's",
        |c| {
            ensure!(c.source(Pod::A1)? == Some(EGRESS_IP), "pod-a1");
            ensure!(c.source(Pod::B1)? == Some(EGRESS_IP), "pod-b1");
            ensure!(
                c.source(Pod::A2)? == Some(NODE1_ADDRESS),
                "pod-a2 is not selected"
            );
            Ok(())
        },
    )?;

    c.step("the policy's status: accepted, programmed, two pods", |c| {
        let (policy, _) = c
            .kubectl()
            .wait_for(&["egressnatpolicy", "egress"], READY, |p| {
                policy_is(p, ("True", "Accepted"))
                    && condition(p, "Programmed").is_some_and(|(s, _)| s == "True")
                    && p["status"]["selectedPods"] == 2
            })?;
        ensure!(policy["status"]["observedGeneration"] == policy["metadata"]["generation"]);
        let table = c.kubectl().run(&["get", "enp"])?;
        eprintln!("{table}");
        for column in [
            "EGRESS IP",
            "SELECTED",
            "ACCEPTED",
            "PROGRAMMED",
            "AGE",
            "192.168.50.100",
        ] {
            ensure!(
                table.contains(column),
                "kubectl get enp lacks {column}:\n{table}"
            );
        }
        Ok(())
    })?;

    c.step("relabelling a pod moves it in and out", |c| {
        let since = Instant::now();
        c.kubectl()
            .run(&["label", "pod", "pod-a2", "-n", "alice", "role=frontend"])?;
        let into = c.switches(Pod::A2, EGRESS_IP, since)?;
        let since = Instant::now();
        c.kubectl()
            .run(&["label", "pod", "pod-a2", "-n", "alice", "role-"])?;
        let out = c.switches(Pod::A2, NODE1_ADDRESS, since)?;
        eprintln!(
            "   relabel to the data path: in {}, out {}",
            millis(Some(into)),
            millis(Some(out))
        );
        Ok(())
    })?;

    c.step(
        "the agent's /metrics: the policy's packets and the API latency histogram grow",
        |c| {
            let scrape = |c: &ClusterLab| -> Result<Metrics> {
                Ok(c.lab.agent_metrics(Node::Node1)?.1)
            };
            let packets = |m: &Metrics| {
                m.value(
                    "egret_agent_policy_tunnelled_packets_total",
                    &[("policy", "egress")],
                )
                .unwrap_or(0.0)
            };
            let api_events = |m: &Metrics| {
                m.value(
                    "egret_agent_programming_latency_seconds_count",
                    &[("trigger", "api")],
                )
                .unwrap_or(0.0)
            };
            let before = scrape(c)?;
            ensure!(c.source(Pod::A1)? == Some(EGRESS_IP), "pod-a1");
            let since = Instant::now();
            c.kubectl()
                .run(&["label", "pod", "pod-a2", "-n", "alice", "metrics=1"])?;
            // A label no policy looks at: the agent reprograms (nothing changes) all the same,
            // and measures it.
            let deadline = Instant::now() + CHANGE_BOUND;
            let after = loop {
                let after = scrape(c)?;
                if api_events(&after) > api_events(&before) {
                    break after;
                }
                ensure!(
                    Instant::now() < deadline,
                    "no API event measured within {CHANGE_BOUND:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            c.kubectl()
                .run(&["label", "pod", "pod-a2", "-n", "alice", "metrics-"])?;
            eprintln!(
                "   egret_agent_policy_tunnelled_packets_total {} -> {}, api programming count {} -> {} ({} ms)",
                packets(&before),
                packets(&after),
                api_events(&before),
                api_events(&after),
                since.elapsed().as_millis()
            );
            ensure!(packets(&after) > packets(&before), "no tunnelled packet counted");
            Ok(())
        },
    )?;

    c.step("relabelling a namespace moves its pods", |c| {
        let since = Instant::now();
        c.kubectl()
            .run(&["label", "namespace", "paul", "user=bob", "--overwrite"])?;
        let out = c.switches(Pod::B1, NODE2_ADDRESS, since)?;
        let since = Instant::now();
        c.kubectl()
            .run(&["label", "namespace", "paul", "user=paul", "--overwrite"])?;
        let into = c.switches(Pod::B1, EGRESS_IP, since)?;
        eprintln!(
            "   namespace relabel to the data path: out {}, in {}",
            millis(Some(out)),
            millis(Some(into))
        );
        Ok(())
    })?;

    c.step(
        "Conflict, UnknownEgressIP and Invalid: condition and event each; the older policy goes on",
        |c| {
            c.kubectl().apply(
                r#"
apiVersion: egret.dev/v1alpha1
kind: EgressNATPolicy
metadata: {name: late}
spec:
  egress: [{podSelector: {}}]
  destinationCIDRs: [198.51.100.0/24]
  egressSourceIP: 192.168.50.100
---
apiVersion: egret.dev/v1alpha1
kind: EgressNATPolicy
metadata: {name: unknown}
spec:
  egress: [{podSelector: {}}]
  destinationCIDRs: [203.0.113.0/24]
  egressSourceIP: 192.168.50.199
---
apiVersion: egret.dev/v1alpha1
kind: EgressNATPolicy
metadata: {name: broken}
spec:
  egress: [{podSelector: {}}]
  destinationCIDRs: [300.1.2.0/24]
  egressSourceIP: 192.168.50.101
"#,
            )?;
            for (name, reason) in [
                ("late", "Conflict"),
                ("unknown", "UnknownEgressIP"),
                ("broken", "Invalid"),
            ] {
                c.kubectl()
                    .wait_for(&["egressnatpolicy", name], READY, |p| {
                        policy_is(p, ("False", reason))
                    })?;
                c.kubectl().wait_for(
                    &["events.events.k8s.io", "-n", "default"],
                    READY,
                    |events| {
                        events["items"].as_array().is_some_and(|items| {
                            items.iter().any(|e| {
                                e["reason"] == reason
                                    && e["type"] == "Warning"
                                    && (e["regarding"]["name"] == name
                                        || e["involvedObject"]["name"] == name)
                            })
                        })
                    },
                )?;
            }
            // The older policy goes on; pod-a2 is still not selected by anyone.
            ensure!(
                c.source(Pod::A1)? == Some(EGRESS_IP),
                "pod-a1 after the conflict"
            );
            ensure!(
                c.source(Pod::A2)? == Some(NODE1_ADDRESS),
                "pod-a2 after the conflict"
            );
            Ok(())
        },
    )?;

    c.step("a pod without an address breaks nothing", |c| {
        c.kubectl().apply(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: pending, namespace: alice, labels: {role: frontend}}\n\
             spec: {nodeName: node1, containers: [{name: app, image: app}]}\n",
        )?;
        c.kubectl().wait_for(&["egressnatpolicy", "egress"], READY, |p| {
            p["status"]["selectedPods"] == 2
        })?;
        ensure!(c.source(Pod::A1)? == Some(EGRESS_IP), "pod-a1");
        Ok(())
    })?;

    c.step("the ip-masq-agent ConfigMap and a NoSNAT policy decide who keeps its address", |c| {
        let internal = SocketAddrV4::new(INTERNAL_ADDRESS, 7401);
        let seen = |c: &ClusterLab| -> Result<Option<Ipv4Addr>> {
            Ok(c.lab.udp_source(Pod::A2, internal, PROBE)?.source())
        };
        ensure!(seen(c)? == Some(Pod::A2.address()), "172.16/12 is not masqueraded by default");
        c.kubectl().apply(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-system}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ip-masq-agent, namespace: kube-system}\n\
             data:\n  config: |\n    nonMasqueradeCIDRs: [10.0.0.0/8]\n    resyncInterval: 60s\n",
        )?;
        let deadline = Instant::now() + CHANGE_BOUND;
        while seen(c)? != Some(NODE1_ADDRESS) {
            ensure!(
                Instant::now() < deadline,
                "the ConfigMap did not make 172.16/12 masqueraded; node1's table:\n{}",
                c.lab
                    .node(Node::Node1)
                    .exec("nft", ["list", "table", "ip", "egret"])
                    .unwrap_or_else(|e| format!("{e:#}"))
            );
        }
        c.kubectl().apply(
            "apiVersion: egret.dev/v1alpha1\nkind: EgressNATPolicy\nmetadata: {name: keep-internal}\n\
             spec:\n  action: NoSNAT\n  destinations: [{cidr: 172.16.0.0/12}]\n",
        )?;
        let deadline = Instant::now() + CHANGE_BOUND;
        while seen(c)? != Some(Pod::A2.address()) {
            ensure!(Instant::now() < deadline, "the NoSNAT policy did not keep the pod's address");
        }
        Ok(())
    })?;
    Ok(())
}

#[test]
fn the_gateway_object_names_the_master_before_and_after_a_kill() -> Result<()> {
    require_root();
    let _serial = one_lab_at_a_time();
    let mut c = cluster_lab("k8s-gw")?;
    c.step("both gateways up, each naming the address it holds", |c| {
        c.kubectl()
            .wait_for(&["egressgateway", "default"], READY, |g| {
                let s = &g["status"];
                s["nodes"]["gw1"] == "Up"
                    && s["nodes"]["gw2"] == "Up"
                    && s["floatingIPs"][EGRESS_IP.to_string()] == "gw1"
                    && s["floatingIPs"][SECOND_EGRESS_IP.to_string()] == "gw2"
            })?;
        eprintln!(
            "{}",
            c.kubectl()
                .run(&["get", "egressgateway", "default", "-o", "yaml"])?
        );
        Ok(())
    })?;
    c.step(
        "kill -9 the master of .100: the status names gw2, then marks gw1 Down",
        |c| {
            let killed = c.lab.kill_gateway(Member::Gw1)?;
            let (_, named) = c.kubectl().wait_for(
                &["egressgateway", "default"],
                Duration::from_secs(10),
                |g| g["status"]["floatingIPs"][EGRESS_IP.to_string()] == "gw2",
            )?;
            let (_, down) = c.kubectl().wait_for(
                &["egressgateway", "default"],
                Duration::from_secs(10),
                |g| g["status"]["nodes"]["gw1"] == "Down",
            )?;
            let since = |at: Instant| {
                let elapsed = killed.elapsed().unwrap_or_default();
                elapsed.saturating_sub(at.elapsed())
            };
            eprintln!(
                "   kill to the status naming gw2: {}; to gw1 Down: {}",
                millis(Some(since(named))),
                millis(Some(since(down)))
            );
            ensure!(
                c.source(Pod::A1)? == Some(EGRESS_IP),
                "pod-a1 after the failover"
            );
            Ok(())
        },
    )?;
    Ok(())
}

#[test]
fn an_api_outage_an_agent_restart_meanwhile_and_expired_watches_leave_traffic_alone() -> Result<()>
{
    require_root();
    let _serial = one_lab_at_a_time();
    let mut c = cluster_lab("k8s-out")?;
    c.step("the API goes away: traffic goes on", |c| {
        c.api.stop()?;
        ensure!(
            c.source(Pod::A1)? == Some(EGRESS_IP),
            "pod-a1 during the outage"
        );
        ensure!(
            c.source(Pod::A2)? == Some(NODE1_ADDRESS),
            "pod-a2 during the outage"
        );
        Ok(())
    })?;
    c.step(
        "node1's agent restarts while the API is away: nothing changes",
        |c| {
            c.lab.kill_agent(Node::Node1)?;
            c.lab.spawn_agent(Node::Node1)?;
            // The new agent waits for the cluster; the pinned maps keep working meanwhile.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let status = c.lab.agent_status_json(Node::Node1)?;
                if status["waiting_for_cluster"] == true
                    && status["pid"]
                        == c.lab
                            .agent_mut(Node::Node1)?
                            .pid()
                            .map_or(Value::Null, Value::from)
                {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "the restarted agent does not say it waits: {status}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            ensure!(
                c.source(Pod::A1)? == Some(EGRESS_IP),
                "pod-a1 with the agent waiting"
            );
            ensure!(
                c.source(Pod::A2)? == Some(NODE1_ADDRESS),
                "pod-a2 with the agent waiting"
            );
            Ok(())
        },
    )?;
    c.step(
        "the API comes back: the agent catches up and follows changes again",
        |c| {
            c.api.restart(c.lab.router())?;
            c.wait_agent(Node::Node1, |cluster| {
                cluster["policies"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty())
            })?;
            ensure!(
                c.source(Pod::A1)? == Some(EGRESS_IP),
                "pod-a1 after the outage"
            );
            let since = Instant::now();
            c.kubectl()
                .run(&["label", "pod", "pod-a2", "-n", "alice", "role=frontend"])?;
            let into = c.switches(Pod::A2, EGRESS_IP, since)?;
            eprintln!("   relabel after the outage: {}", millis(Some(into)));
            Ok(())
        },
    )?;
    c.step(
        "every watch expires (410 Gone): the agents relist, traffic goes on",
        |c| {
            let relists = |cluster: &Value| -> u64 {
                cluster["watches"]
                    .as_array()
                    .map_or(0, |w| w.iter().filter_map(|w| w["relists"].as_u64()).sum())
            };
            let before = relists(&c.lab.agent_status_json(Node::Node1)?["cluster"]);
            c.kubectl()
                .stdin(&["create", "--raw", "/_test/expire", "-f", "-"], "{}")?;
            c.wait_agent(Node::Node1, |cluster| relists(cluster) > before)?;
            ensure!(
                c.source(Pod::A1)? == Some(EGRESS_IP),
                "pod-a1 after the relist"
            );
            ensure!(
                c.source(Pod::A2)? == Some(EGRESS_IP),
                "pod-a2 (relabelled) after the relist"
            );
            let since = Instant::now();
            c.kubectl()
                .run(&["label", "pod", "pod-a2", "-n", "alice", "role-"])?;
            c.switches(Pod::A2, NODE1_ADDRESS, since)?;
            Ok(())
        },
    )?;
    Ok(())
}
