//! The agent's metrics as Prometheus text (`GET /metrics`): a pure function of a
//! [`Snapshot`], encoded with `prometheus-client` (the Prometheus project's Rust client).
//!
//! Two kinds of numbers go in:
//! - what the data path and the status file say, read at scrape time into a
//!   [`Report`](crate::status::Report), the same one `egret-agent status --json` prints:
//!   per-policy packets and bytes, node counters (drops by reason), map entries, selected
//!   pods, watch health;
//! - what only the running loop sees, kept in [`Recorded`]: CNI requests by command and
//!   outcome, and the programming latency histograms.
//!
//! Conventions are the gateway's: `egret_agent_` prefix, counters end in `_total`, every
//! packet the data path refused is in `egret_agent_drops_total{reason}`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use egret_api::ApiStatus;
use egret_ebpf_common::node::NodeCounter;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::status::Report;

/// The `Content-Type` of the text this renders (the Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the programming latency buckets: from half a millisecond (a
/// map write for one pod) to 5 s (a reconcile after a large relist, or an ADD that had to
/// read its pod from a slow API server); the promise is a second.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// What made the agent program the data path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// A watch event from the API server (pod, namespace, policy, gateway, ConfigMap).
    Api,
    /// An ADD from egret-cni.
    Cni,
}

impl Trigger {
    pub const ALL: [Trigger; 2] = [Trigger::Api, Trigger::Cni];

    /// The `trigger` label.
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Cni => "cni",
        }
    }
}

/// A classic histogram over [`LATENCY_BUCKETS`]: a count per bucket (not cumulative; the
/// last is above the largest bound), the sum and the count.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; LATENCY_BUCKETS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket] += 1;
        self.sum += seconds;
        self.count += 1;
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// `(upper bound, count in that bucket)`, the last bound +Inf, as the encoder takes them.
    fn buckets(&self) -> Vec<(f64, u64)> {
        LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets)
            .collect()
    }
}

/// What the agent's loop records for the API: written by the loop under a lock held for one
/// update, copied by a scrape under the same lock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// CNI requests answered, by (command, outcome).
    pub cni: BTreeMap<(&'static str, &'static str), u64>,
    /// Time from a trigger to the maps written, by trigger.
    pub latency: BTreeMap<Trigger, Histogram>,
}

impl Recorded {
    /// A CNI request of `command` answered with `outcome`.
    pub fn cni(&mut self, command: &'static str, outcome: &'static str) {
        *self.cni.entry((command, outcome)).or_default() += 1;
    }

    /// The data path obeys what `trigger` asked for, `elapsed` after it arrived.
    pub fn programmed(&mut self, trigger: Trigger, elapsed: Duration) {
        self.latency.entry(trigger).or_default().observe(elapsed);
    }
}

/// Everything one scrape shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The status report, or why it could not be read (the maps or the status file): the
    /// families it feeds are then left out and `egret_agent_datapath_readable` is 0.
    pub report: Result<Report, String>,
    pub recorded: Recorded,
    /// The API server's own connections.
    pub api: ApiStatus,
}

/// The snapshot as Prometheus text.
pub fn render(snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(snapshot.clone())));
    let mut text = String::new();
    // Writing into a String cannot fail, and the collector only fails when the writer does.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// The snapshot as a `prometheus-client` collector: every family written at scrape time.
#[derive(Debug)]
struct Scrape(Snapshot);

/// Writes one family after another into a collector's encoder.
struct Families<'e> {
    encoder: DescriptorEncoder<'e>,
}

impl Families<'_> {
    /// A family of `kind` with one sample per `(labels, value)`.
    fn family<V>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (Vec<(&'static str, String)>, V)>,
    ) -> fmt::Result
    where
        V: prometheus_client::encoding::EncodeGaugeValue
            + prometheus_client::encoding::EncodeCounterValue,
    {
        let mut metric = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, value) in samples {
            let mut sample = metric.encode_family(&labels)?;
            match kind {
                MetricType::Counter => {
                    sample.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
                }
                _ => sample.encode_gauge(&value)?,
            }
        }
        Ok(())
    }
}

fn label(name: &'static str, value: impl ToString) -> (&'static str, String) {
    (name, value.to_string())
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        let mut out = Families { encoder };
        out.family(
            "egret_agent_datapath_readable",
            "1 when this scrape could read the pinned maps and the status file, else 0 (the data path families are then missing).",
            MetricType::Gauge,
            [(vec![], u64::from(s.report.is_ok()))],
        )?;
        if let Ok(report) = &s.report {
            datapath(&mut out, report)?;
        }
        let cni = |(command, outcome): &(&'static str, &'static str), n: &u64| {
            (
                vec![label("command", command), label("outcome", outcome)],
                *n,
            )
        };
        out.family(
            "egret_agent_cni_requests",
            "Requests of egret-cni answered, by command (add, del, check, status) and outcome (programmed, not_selected, done, refused).",
            MetricType::Counter,
            s.recorded.cni.iter().map(|(k, n)| cni(k, n)),
        )?;
        let mut latency = out.encoder.encode_descriptor(
            "egret_agent_programming_latency_seconds",
            "Time from a trigger arriving (trigger=api: the oldest watch event not yet programmed; trigger=cni: a CNI ADD read off the socket) to the data path's maps written for it.",
            None,
            MetricType::Histogram,
        )?;
        for trigger in Trigger::ALL {
            let histogram = s
                .recorded
                .latency
                .get(&trigger)
                .cloned()
                .unwrap_or_default();
            let labels = [label("trigger", trigger.label())];
            latency
                .encode_family(&labels.as_slice())?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum,
                    histogram.count,
                    &histogram.buckets(),
                    None,
                )?;
        }
        out.family(
            "egret_agent_api_connections_open",
            "Connections to this API open now, the one answering this scrape included.",
            MetricType::Gauge,
            [(vec![], s.api.connections_open)],
        )?;
        out.family(
            "egret_agent_api_connections_refused",
            "Connections to this API closed as soon as accepted, by reason: client_limit (the client address had its maximum open), total_limit (the server had).",
            MetricType::Counter,
            s.api
                .connections_refused
                .iter()
                .map(|(reason, n)| (vec![label("reason", reason)], *n)),
        )
    }
}

/// The families read from the report: the data path's counters and the agent's decisions.
fn datapath(out: &mut Families<'_>, report: &Report) -> fmt::Result {
    let policy = |name: &str| vec![label("policy", name)];
    out.family(
        "egret_agent_policy_tunnelled_packets",
        "Packets each policy sent into the tunnel to its gateway (a super-packet's segments count one each).",
        MetricType::Counter,
        report.policies.iter().map(|p| (policy(&p.name), p.packets)),
    )?;
    out.family(
        "egret_agent_policy_tunnelled_bytes",
        "Bytes of the inner IPv4 packets each policy sent into the tunnel.",
        MetricType::Counter,
        report.policies.iter().map(|p| (policy(&p.name), p.bytes)),
    )?;
    out.family(
        "egret_agent_policy_programmed",
        "1 when the policy is in the data path, 0 when it was rejected (egret-agent status says why); egress_ip is its egress IP.",
        MetricType::Gauge,
        report.policies.iter().map(|p| {
            (
                vec![label("policy", &p.name), label("egress_ip", &p.egress)],
                u64::from(p.state == "programmed"),
            )
        }),
    )?;
    if let Some(cluster) = &report.cluster {
        out.family(
            "egret_agent_policy_selected_pods",
            "Pods on this node each accepted policy selects (Kubernetes mode).",
            MetricType::Gauge,
            cluster
                .selected
                .iter()
                .map(|(name, pods)| (policy(name), pods.len() as u64)),
        )?;
        watches(out, &cluster.watches)?;
    }
    out.family(
        "egret_agent_map_entries",
        "Entries programmed in each of the data path's maps: sources (pod prefixes), destinations ((class, prefix) pairs), gateways (egress IPs the tunnel accepts replies from).",
        MetricType::Gauge,
        [
            ("sources", report.entries.sources),
            ("destinations", report.entries.destinations),
            ("gateways", report.entries.gateways),
        ]
        .map(|(map, n)| (vec![label("map", map)], n as u64)),
    )?;
    let counter = |c: NodeCounter| report.counters.get(c.label()).copied().unwrap_or(0);
    let by = |name: &'static str, counters: &[(NodeCounter, &'static str)]| {
        counters
            .iter()
            .map(|&(c, value)| (vec![label(name, value)], counter(c)))
            .collect::<Vec<_>>()
    };
    use NodeCounter::*;
    out.family(
        "egret_agent_classifier_packets",
        "Packets the classifier on the pod interfaces looked at, by result: ipv4 (every IPv4 packet), selected and skipped (of those: marked for the tunnel, or from a selected pod toward an excluded place), not_ipv4.",
        MetricType::Counter,
        by(
            "result",
            &[
                (ClassifyPackets, "ipv4"),
                (ClassifySelected, "selected"),
                (ClassifySkipped, "skipped"),
                (ClassifyNotIpv4, "not_ipv4"),
            ],
        ),
    )?;
    out.family(
        "egret_agent_tunnel_packets",
        "Packets through the tunnel device, by direction: out (to the gateways), in (replies from them).",
        MetricType::Counter,
        by(
            "direction",
            &[(TunnelOutPackets, "out"), (TunnelInPackets, "in")],
        ),
    )?;
    out.family(
        "egret_agent_tunnel_bytes",
        "Bytes of the inner packets through the tunnel device, by direction.",
        MetricType::Counter,
        by(
            "direction",
            &[(TunnelOutBytes, "out"), (TunnelInBytes, "in")],
        ),
    )?;
    out.family(
        "egret_agent_mss_clamped",
        "TCP SYNs and SYN-ACKs whose MSS the tunnel lowered.",
        MetricType::Counter,
        [(vec![], counter(MssClamped))],
    )?;
    out.family(
        "egret_agent_drops",
        "Packets the data path dropped, by reason: no_policy, not_ipv4, tunnel_key (tunnel egress); no_tunnel_info, wrong_vni, unknown_gateway (tunnel ingress).",
        MetricType::Counter,
        by(
            "reason",
            &[
                (DropNoPolicy, "no_policy"),
                (DropNotIpv4, "not_ipv4"),
                (DropTunnelKey, "tunnel_key"),
                (DropNoTunnelInfo, "no_tunnel_info"),
                (DropWrongVni, "wrong_vni"),
                (DropUnknownGateway, "unknown_gateway"),
            ],
        ),
    )?;
    out.family(
        "egret_agent_packet_errors",
        "Packets the data path could not read or rewrite and passed on unchanged (not dropped), by reason.",
        MetricType::Counter,
        by(
            "reason",
            &[
                (ErrorMssRewrite, "mss_rewrite"),
                (ErrorTruncatedEthernet, "truncated_ethernet"),
                (ErrorTruncatedIpv4, "truncated_ipv4"),
                (ErrorBadIpVersion, "bad_ip_version"),
                (ErrorBadIhl, "bad_ihl"),
            ],
        ),
    )
}

/// The watches' health (Kubernetes mode), by watched resource.
fn watches(
    out: &mut Families<'_>,
    watches: &[crate::kubernetes::watch::WatchHealth],
) -> fmt::Result {
    let resource = |name: &str| vec![label("resource", name)];
    out.family(
        "egret_agent_watch_synced",
        "1 once the watch has listed and its store holds the cluster's state.",
        MetricType::Gauge,
        watches
            .iter()
            .map(|w| (resource(&w.name), u64::from(w.synced))),
    )?;
    out.family(
        "egret_agent_watch_last_event_timestamp_seconds",
        "Unix time of the watch's last event (a list or a change); absent before the first.",
        MetricType::Gauge,
        watches
            .iter()
            .filter_map(|w| w.last_event.map(|t| (resource(&w.name), t))),
    )?;
    out.family(
        "egret_agent_watch_restarts",
        "Times the watch listed again after its first list (an outage, an expired resourceVersion).",
        MetricType::Counter,
        watches.iter().map(|w| (resource(&w.name), w.relists)),
    )?;
    out.family(
        "egret_agent_watch_errors",
        "Errors the watch hit, each retried with backoff.",
        MetricType::Counter,
        watches.iter().map(|w| (resource(&w.name), w.errors)),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kubernetes::node::ClusterState;
    use crate::kubernetes::watch::WatchHealth;
    use crate::status::{Entries, PolicyReport};

    /// Node node1 in Kubernetes mode: one programmed policy with traffic selecting two pods,
    /// one rejected, one drop reason counted, one synced watch and one still listing.
    pub(crate) fn report() -> Report {
        let mut counters: BTreeMap<String, u64> = NodeCounter::ALL
            .iter()
            .map(|c| (c.label().to_owned(), 0))
            .collect();
        counters.insert("tunnel_out_packets".into(), 12);
        counters.insert("drop_unknown_gateway".into(), 3);
        let policy = |name: &str, state: &str, packets, bytes| PolicyReport {
            name: name.into(),
            state: state.into(),
            reason: None,
            egress: "192.168.1.100".into(),
            sources: 1,
            destinations: 1,
            packets,
            bytes,
        };
        Report {
            node_name: "node1".into(),
            running: true,
            pid: Some(42),
            last_error: None,
            policies: vec![
                policy("alice", "programmed", 12, 1008),
                policy("bob", "rejected", 0, 0),
            ],
            entries: Entries {
                sources: 2,
                destinations: 1,
                gateways: 1,
            },
            counters,
            interfaces: vec!["veth1".into()],
            tunnel_device: "egret0".into(),
            tunnel_mtu: 1450,
            failed_steps: vec![],
            unwatched_sources: vec![],
            waiting_for_cluster: false,
            cluster: Some(ClusterState {
                selected: vec![("alice".into(), vec!["a/p1".into(), "a/p2".into()])],
                watches: vec![
                    WatchHealth {
                        name: "pods".into(),
                        synced: true,
                        last_event: Some(1_700_000_000),
                        relists: 2,
                        errors: 1,
                        last_error: None,
                    },
                    WatchHealth {
                        name: "namespaces".into(),
                        ..WatchHealth::default()
                    },
                ],
                ..ClusterState::default()
            }),
        }
    }

    pub(crate) fn snapshot() -> Snapshot {
        let mut recorded = Recorded::default();
        recorded.cni("add", "programmed");
        recorded.cni("add", "programmed");
        recorded.cni("del", "done");
        recorded.programmed(Trigger::Cni, Duration::from_micros(1500));
        recorded.programmed(Trigger::Cni, Duration::from_millis(30));
        recorded.programmed(Trigger::Api, Duration::from_secs(7));
        let api = ApiStatus {
            connections_open: 1,
            connections_refused: [("client_limit".into(), 0), ("total_limit".into(), 0)].into(),
        };
        Snapshot {
            report: Ok(report()),
            recorded,
            api,
        }
    }

    #[test]
    fn the_histogram_counts_each_observation_in_its_bucket() {
        let mut h = Histogram::default();
        for ms in [0.1, 0.5, 0.6, 1.0, 3.0, 999.0, 5000.0, 6000.0] {
            h.observe(Duration::from_secs_f64(ms / 1e3));
        }
        let buckets = h.buckets();
        assert_eq!(buckets.len(), LATENCY_BUCKETS.len() + 1);
        let count = |bound: f64| {
            buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map(|(_, n)| *n)
                .expect("a bucket")
        };
        // Bounds are inclusive, as Prometheus's `le`.
        assert_eq!(count(0.0005), 2);
        assert_eq!(count(0.001), 2);
        assert_eq!(count(0.005), 1);
        assert_eq!(count(1.0), 1);
        assert_eq!(count(5.0), 1);
        assert_eq!(count(f64::INFINITY), 1);
        assert_eq!(h.count(), 8);
        assert_eq!(buckets.iter().map(|(_, n)| n).sum::<u64>(), 8);
        assert!((h.sum - 12.0042).abs() < 1e-9, "{}", h.sum);
    }

    #[test]
    fn the_fixture_renders_to_exactly_this_text() {
        let text = render(&snapshot());
        let expected = include_str!("metrics.fixture.txt");
        if text != expected {
            panic!("rendered:\n{text}");
        }
    }

    #[test]
    fn an_unreadable_data_path_leaves_its_families_out_and_says_so() {
        let snapshot = Snapshot {
            report: Err("no maps".into()),
            ..snapshot()
        };
        let text = render(&snapshot);
        assert!(
            text.contains("\negret_agent_datapath_readable 0\n"),
            "{text}"
        );
        assert!(!text.contains("egret_agent_drops_total"), "{text}");
        assert!(!text.contains("egret_agent_policy_"), "{text}");
        // What the loop recorded is still there.
        assert!(
            text.contains(
                "\negret_agent_cni_requests_total{command=\"add\",outcome=\"programmed\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("\negret_agent_programming_latency_seconds_count{trigger=\"cni\"} 2\n"),
            "{text}"
        );
    }
}
