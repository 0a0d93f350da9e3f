//! The status writer's decisions: each policy's desired status, whether it needs a write, and
//! which Warning events to emit; and the per-node report the agents publish.
//!
//! - **Node reports.** Each agent, once it has programmed a [`super::NodeDesired`], stores
//!   [`NodeReport::from_desired`] as compact JSON in the annotation [`REPORT_ANNOTATION`] of
//!   its own `coordination.k8s.io/v1` Lease (renewed as a heartbeat). A report lists only the
//!   policies that select pods on that node, with the generation programmed:
//!   `{"v":1,"p":{"team-a":3}}`, about 20 bytes plus the name per policy, so 1,000 policies
//!   with 200-character names stay under the 256 KiB annotation limit.
//! - **Accepted**: True (reason `Accepted`), or False with the rejection's reason
//!   (`Invalid`, `UnknownEgressIP`, `Conflict`) and message.
//! - **Programmed**: for an accepted gateway policy, True (reason `Programmed`) once every
//!   node running selected pods has a fresh Lease whose report holds the policy's current
//!   generation or a newer one; else False, reason `Pending`, naming how many nodes lag and
//!   the first few. A policy that selects no pods is Programmed: nothing is left to do, and
//!   it makes `kubectl wait --for=condition=Programmed` end. A NoSNAT policy is Programmed
//!   once accepted: it is merged into every node's masquerade exceptions, and reports do not
//!   track it (it would grow every report with every node). A rejected policy is False,
//!   reason `NotAccepted`.
//! - [`next_status`] keeps a condition's `lastTransitionTime` while its status stays the
//!   same, and returns `None` when the status would not change, so a steady cluster costs no
//!   writes.
//! - [`warning_events`]: one event per policy each time it enters a rejection, identified by
//!   (uid, generation, reason): a resync emits nothing, a new generation that is still
//!   rejected emits again, and so does a new writer (it starts with no previous outcomes;
//!   the API server's event series absorb that).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use egret_crd::EgressNATPolicyStatus;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::admission::{Outcome, Reason};
use super::desired::{ClusterSelection, NodeDesired, PolicyOutcome, PolicySelection};

/// The Lease annotation holding a node's [`NodeReport`].
pub const REPORT_ANNOTATION: &str = "egret.dev/programmed";
/// The condition type saying whether the policy is accepted.
pub const ACCEPTED: &str = "Accepted";
/// The condition type saying whether the nodes run the policy's current generation.
pub const PROGRAMMED: &str = "Programmed";
/// How many lagging nodes a `Programmed` message names.
pub const NODES_NAMED: usize = 5;

/// What one node has programmed: policy name → generation, for the policies selecting pods
/// on that node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The format's version, so a newer agent can change it.
    #[serde(rename = "v")]
    pub version: u32,
    /// Policy name → the generation programmed.
    #[serde(rename = "p")]
    pub programmed: BTreeMap<String, i64>,
}

/// Why a report annotation was not understood (the node then counts as not reporting).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Not the JSON of a report.
    #[error("not a node report: {0}")]
    Syntax(String),
    /// A version this agent does not know.
    #[error("node report version {0} is not supported (this agent knows 1)")]
    Version(u32),
}

impl ReportError {
    /// Stable `snake_case` name, for metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            ReportError::Syntax(_) => "syntax",
            ReportError::Version(_) => "version",
        }
    }
}

impl NodeReport {
    /// The current format.
    pub const VERSION: u32 = 1;

    /// What a node reports once `desired` is programmed: each accepted gateway policy with
    /// local pods, at its generation.
    pub fn from_desired(desired: &NodeDesired) -> NodeReport {
        NodeReport {
            version: NodeReport::VERSION,
            programmed: desired
                .selections
                .iter()
                .filter(|s| !s.pods.is_empty())
                .map(|s| (s.policy.clone(), s.generation))
                .collect(),
        }
    }

    /// The annotation's value.
    pub fn to_json(&self) -> String {
        // A map of strings to integers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an annotation's value.
    pub fn from_json(text: &str) -> Result<NodeReport, ReportError> {
        let report: NodeReport =
            serde_json::from_str(text).map_err(|e| ReportError::Syntax(e.to_string()))?;
        if report.version != NodeReport::VERSION {
            return Err(ReportError::Version(report.version));
        }
        Ok(report)
    }
}

/// What the status writer knows of one node's agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeObservation {
    /// Its report; `None` when its Lease is missing or the annotation unreadable.
    pub report: Option<NodeReport>,
    /// Whether its Lease was renewed recently ([`lease_is_fresh`]): a stale report says
    /// nothing about what the node runs now.
    pub fresh: bool,
}

impl NodeObservation {
    /// What a node's Lease says at `now`: its report (from [`REPORT_ANNOTATION`]) and
    /// whether it is fresh. An unreadable report counts as none; its error is returned too,
    /// for a log line.
    pub fn from_lease(lease: &Lease, now: Timestamp) -> (NodeObservation, Option<ReportError>) {
        let spec = lease.spec.as_ref();
        let fresh = lease_is_fresh(
            spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            spec.and_then(|s| s.lease_duration_seconds),
            now,
        );
        let text = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REPORT_ANNOTATION));
        let (report, error) = match text.map(|t| NodeReport::from_json(t)) {
            None => (None, None),
            Some(Ok(report)) => (Some(report), None),
            Some(Err(error)) => (None, Some(error)),
        };
        (NodeObservation { report, fresh }, error)
    }
}

/// Whether a Lease renewed at `renew` with `duration_seconds` still holds at `now`.
pub fn lease_is_fresh(
    renew: Option<Timestamp>,
    duration_seconds: Option<i32>,
    now: Timestamp,
) -> bool {
    match (renew, duration_seconds) {
        (Some(renew), Some(seconds)) if seconds > 0 => {
            now.as_second() - renew.as_second() <= i64::from(seconds)
        }
        _ => false,
    }
}

/// A condition's desired status, reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    /// `True` or `False`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// For humans.
    pub message: String,
}

/// A policy's desired status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredStatus {
    /// The `Accepted` condition.
    pub accepted: DesiredCondition,
    /// The `Programmed` condition.
    pub programmed: DesiredCondition,
    /// `status.selectedPods`.
    pub selected_pods: u32,
    /// `status.observedGeneration`.
    pub observed_generation: i64,
}

/// Every policy's desired status, by name.
pub fn desired_statuses(
    cluster: &ClusterSelection,
    nodes: &BTreeMap<String, NodeObservation>,
) -> Vec<(String, DesiredStatus)> {
    cluster
        .outcomes
        .iter()
        .zip(&cluster.selections)
        .map(|(outcome, selection)| {
            (
                outcome.name.clone(),
                desired_status(outcome, selection, nodes),
            )
        })
        .collect()
}

/// One policy's desired status, as the module documentation states.
pub fn desired_status(
    outcome: &PolicyOutcome,
    selection: &PolicySelection,
    nodes: &BTreeMap<String, NodeObservation>,
) -> DesiredStatus {
    let condition = |status, reason: &str, message: String| DesiredCondition {
        status,
        reason: reason.to_owned(),
        message,
    };
    let (accepted, programmed) = match &outcome.outcome {
        Outcome::Rejected(rejection) => (
            condition(false, rejection.reason.as_str(), rejection.message.clone()),
            condition(
                false,
                "NotAccepted",
                format!(
                    "not programmed: the policy is not accepted ({})",
                    rejection.reason
                ),
            ),
        ),
        Outcome::Accepted if outcome.no_snat => (
            condition(true, "Accepted", "the NoSNAT policy is valid".into()),
            condition(
                true,
                "Programmed",
                "the destinations are merged into every node's masquerade exceptions".into(),
            ),
        ),
        Outcome::Accepted => (
            condition(
                true,
                "Accepted",
                "the policy is valid and its egress IP is free".into(),
            ),
            programmed(&outcome.name, outcome.generation, selection, nodes),
        ),
    };
    DesiredStatus {
        accepted,
        programmed,
        selected_pods: selection.selected_pods,
        observed_generation: outcome.generation,
    }
}

fn programmed(
    policy: &str,
    generation: i64,
    selection: &PolicySelection,
    nodes: &BTreeMap<String, NodeObservation>,
) -> DesiredCondition {
    let with_pods = selection.nodes.len();
    if with_pods == 0 {
        return DesiredCondition {
            status: true,
            reason: "Programmed".into(),
            message: "no pods selected".into(),
        };
    }
    let lagging: Vec<(&str, String)> = selection
        .nodes
        .keys()
        .filter_map(|node| {
            let why = match nodes.get(node) {
                None | Some(NodeObservation { report: None, .. }) => "not reporting".to_owned(),
                Some(NodeObservation { fresh: false, .. }) => {
                    "agent not renewing its Lease".to_owned()
                }
                Some(NodeObservation {
                    report: Some(report),
                    ..
                }) => match report.programmed.get(policy) {
                    // A newer generation than the writer's snapshot: the node is ahead.
                    Some(&at) if at >= generation => return None,
                    Some(&at) => format!("at generation {at}"),
                    None => "not programmed yet".to_owned(),
                },
            };
            Some((node.as_str(), why))
        })
        .collect();
    if lagging.is_empty() {
        return DesiredCondition {
            status: true,
            reason: "Programmed".into(),
            message: format!(
                "generation {generation} runs on all {with_pods} nodes with selected pods"
            ),
        };
    }
    let mut message = format!(
        "{} of {with_pods} nodes with selected pods have not programmed generation {generation}: ",
        lagging.len()
    );
    for (i, (node, why)) in lagging.iter().take(NODES_NAMED).enumerate() {
        if i > 0 {
            message.push_str(", ");
        }
        let _ = write!(message, "{node} ({why})");
    }
    if lagging.len() > NODES_NAMED {
        let _ = write!(message, ", and {} more", lagging.len() - NODES_NAMED);
    }
    DesiredCondition {
        status: false,
        reason: "Pending".into(),
        message,
    }
}

/// The status to write, or `None` when `current` already says it all. `now` stamps the
/// conditions whose status changed (whole seconds, as the API stores them).
pub fn next_status(
    current: Option<&EgressNATPolicyStatus>,
    desired: &DesiredStatus,
    now: Timestamp,
) -> Option<EgressNATPolicyStatus> {
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let condition = |type_: &str, want: &DesiredCondition| {
        let status = if want.status { "True" } else { "False" };
        let since = current
            .and_then(|c| c.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .map_or(Time(now), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: want.reason.clone(),
            message: want.message.clone(),
            observed_generation: Some(desired.observed_generation),
            last_transition_time: since,
        }
    };
    let next = EgressNATPolicyStatus {
        conditions: vec![
            condition(ACCEPTED, &desired.accepted),
            condition(PROGRAMMED, &desired.programmed),
        ],
        selected_pods: Some(desired.selected_pods),
        observed_generation: Some(desired.observed_generation),
    };
    (current != Some(&next)).then_some(next)
}

/// A Warning event about a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarningEvent {
    /// The policy's name.
    pub policy: String,
    /// Its uid (the event's involved object).
    pub uid: String,
    /// The generation rejected.
    pub generation: i64,
    /// The event's reason.
    pub reason: Reason,
    /// The event's note.
    pub message: String,
}

/// The events due when the verdicts go from `previous` to `next`, as the module
/// documentation states.
pub fn warning_events(previous: &[PolicyOutcome], next: &[PolicyOutcome]) -> Vec<WarningEvent> {
    // By uid (a re-created policy is a new object) and name (objects built without a uid).
    let before: HashMap<(&str, &str), &PolicyOutcome> = previous
        .iter()
        .map(|o| ((o.uid.as_str(), o.name.as_str()), o))
        .collect();
    next.iter()
        .filter_map(|o| {
            let Outcome::Rejected(rejection) = &o.outcome else {
                return None;
            };
            let already = before.get(&(o.uid.as_str(), o.name.as_str())).is_some_and(|p| {
                p.generation == o.generation
                    && matches!(&p.outcome, Outcome::Rejected(r) if r.reason == rejection.reason)
            });
            (!already).then(|| WarningEvent {
                policy: o.name.clone(),
                uid: o.uid.clone(),
                generation: o.generation,
                reason: rejection.reason,
                message: rejection.message.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::cluster::admission::Rejection;

    fn ts(second: i64) -> Timestamp {
        Timestamp::from_second(second).expect("valid timestamp")
    }

    fn accepted(name: &str, generation: i64) -> PolicyOutcome {
        PolicyOutcome {
            name: name.into(),
            uid: format!("uid-{name}"),
            generation,
            no_snat: false,
            outcome: Outcome::Accepted,
        }
    }

    fn rejected(name: &str, generation: i64, reason: Reason, message: &str) -> PolicyOutcome {
        PolicyOutcome {
            outcome: Outcome::Rejected(Rejection {
                reason,
                message: message.into(),
            }),
            ..accepted(name, generation)
        }
    }

    fn selection(nodes: &[&str]) -> PolicySelection {
        PolicySelection {
            selected_pods: nodes.len() as u32 * 2,
            nodes: nodes.iter().map(|n| ((*n).to_owned(), 2)).collect(),
        }
    }

    /// (node, fresh, [(policy, generation)]).
    type Reports<'a> = [(&'a str, bool, &'a [(&'a str, i64)])];

    fn observed(reports: &Reports<'_>) -> BTreeMap<String, NodeObservation> {
        reports
            .iter()
            .map(|(node, fresh, programmed)| {
                let report = NodeReport {
                    version: NodeReport::VERSION,
                    programmed: programmed
                        .iter()
                        .map(|(p, g)| ((*p).to_owned(), *g))
                        .collect(),
                };
                (
                    (*node).to_owned(),
                    NodeObservation {
                        report: Some(report),
                        fresh: *fresh,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn reports_are_compact_json_and_refuse_other_versions() {
        let report = NodeReport {
            version: 1,
            programmed: BTreeMap::from([("team-a".into(), 3), ("team-b".into(), 1)]),
        };
        let json = report.to_json();
        assert_eq!(json, r#"{"v":1,"p":{"team-a":3,"team-b":1}}"#);
        assert_eq!(NodeReport::from_json(&json), Ok(report));
        assert_eq!(
            NodeReport::from_json(r#"{"v":2,"p":{}}"#),
            Err(ReportError::Version(2))
        );
        assert_eq!(
            NodeReport::from_json("nope").map_err(|e| e.label()),
            Err("syntax")
        );
        // 1,000 policies with long names fit the 256 KiB annotation limit with room to spare.
        let big = NodeReport {
            version: 1,
            programmed: (0..1000)
                .map(|i| (format!("{i:0>200}"), i64::MAX))
                .collect(),
        };
        assert!(big.to_json().len() < 256 * 1024, "{}", big.to_json().len());
    }

    #[test]
    fn a_lease_gives_the_report_and_freshness() {
        use k8s_openapi::api::coordination::v1::LeaseSpec;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
        let mut lease = Lease::default();
        assert_eq!(
            NodeObservation::from_lease(&lease, ts(100)),
            (NodeObservation::default(), None)
        );
        lease.spec = Some(LeaseSpec {
            renew_time: Some(MicroTime(ts(100))),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        });
        lease.metadata.annotations = Some(BTreeMap::from([(
            REPORT_ANNOTATION.to_owned(),
            r#"{"v":1,"p":{"a":2}}"#.to_owned(),
        )]));
        let (observed, error) = NodeObservation::from_lease(&lease, ts(110));
        assert_eq!(error, None);
        assert!(observed.fresh);
        assert_eq!(
            observed.report.map(|r| r.programmed),
            Some(BTreeMap::from([("a".to_owned(), 2)]))
        );
        lease.metadata.annotations = Some(BTreeMap::from([(
            REPORT_ANNOTATION.to_owned(),
            "{".to_owned(),
        )]));
        let (observed, error) = NodeObservation::from_lease(&lease, ts(200));
        assert_eq!((observed.report, observed.fresh), (None, false));
        assert_eq!(error.map(|e| e.label()), Some("syntax"));
    }

    #[test]
    fn leases_are_fresh_for_their_duration() {
        assert!(lease_is_fresh(Some(ts(100)), Some(15), ts(115)));
        assert!(!lease_is_fresh(Some(ts(100)), Some(15), ts(116)));
        assert!(!lease_is_fresh(None, Some(15), ts(100)));
        assert!(!lease_is_fresh(Some(ts(100)), None, ts(100)));
    }

    #[test]
    fn programmed_waits_for_every_node_with_pods() {
        let policy = accepted("p", 3);
        let nodes = observed(&[
            ("n1", true, &[("p", 3)]),
            ("n2", true, &[("p", 2)]),
            ("n3", false, &[("p", 3)]),
            ("n4", true, &[]),
            ("n5", true, &[("p", 4)]),
        ]);
        let s = desired_status(
            &policy,
            &selection(&["n1", "n2", "n3", "n4", "n5", "n6"]),
            &nodes,
        );
        assert!(s.accepted.status);
        assert_eq!(s.accepted.reason, "Accepted");
        assert!(!s.programmed.status);
        assert_eq!(s.programmed.reason, "Pending");
        assert_eq!(
            s.programmed.message,
            "4 of 6 nodes with selected pods have not programmed generation 3: n2 (at generation 2), n3 (agent not renewing its Lease), n4 (not programmed yet), n6 (not reporting)"
        );
        assert_eq!((s.selected_pods, s.observed_generation), (12, 3));

        let s = desired_status(&policy, &selection(&["n1", "n5"]), &nodes);
        assert!(s.programmed.status);
        assert_eq!(
            s.programmed.message,
            "generation 3 runs on all 2 nodes with selected pods"
        );

        let s = desired_status(&policy, &selection(&[]), &nodes);
        assert!(s.programmed.status);
        assert_eq!(s.programmed.message, "no pods selected");

        // The message names a few nodes, then counts the rest.
        let many: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let s = desired_status(&policy, &selection(&many), &BTreeMap::new());
        assert!(
            s.programmed
                .message
                .ends_with("m4 (not reporting), and 3 more"),
            "{}",
            s.programmed.message
        );
    }

    #[test]
    fn rejected_and_no_snat_policies() {
        let policy = rejected(
            "p",
            2,
            Reason::UnknownEgressIp,
            "egressSourceIP 1.2.3.4 is unknown",
        );
        let s = desired_status(&policy, &PolicySelection::default(), &BTreeMap::new());
        assert_eq!(
            (
                s.accepted.status,
                s.accepted.reason.as_str(),
                s.accepted.message.as_str()
            ),
            (
                false,
                "UnknownEgressIP",
                "egressSourceIP 1.2.3.4 is unknown"
            )
        );
        assert_eq!(
            (s.programmed.status, s.programmed.reason.as_str()),
            (false, "NotAccepted")
        );
        let no_snat = PolicyOutcome {
            no_snat: true,
            ..accepted("n", 1)
        };
        let s = desired_status(&no_snat, &PolicySelection::default(), &BTreeMap::new());
        assert!(s.accepted.status && s.programmed.status);
        assert_eq!(s.selected_pods, 0);
    }

    #[test]
    fn next_status_keeps_transition_times_and_skips_idle_writes() {
        let policy = accepted("p", 1);
        let nodes = observed(&[("n1", true, &[])]);
        let pending = desired_status(&policy, &selection(&["n1"]), &nodes);
        let first = next_status(None, &pending, ts(100)).expect("first write");
        assert_eq!(first.selected_pods, Some(2));
        assert_eq!(first.observed_generation, Some(1));
        let types: Vec<(&str, &str)> = first
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(types, [("Accepted", "True"), ("Programmed", "False")]);
        assert!(
            first
                .conditions
                .iter()
                .all(|c| c.last_transition_time == Time(ts(100)))
        );
        assert!(
            first
                .conditions
                .iter()
                .all(|c| c.observed_generation == Some(1))
        );

        // Nothing changed: nothing to write, whatever the time.
        assert_eq!(next_status(Some(&first), &pending, ts(200)), None);

        // Programmed flips: only its time moves.
        let nodes = observed(&[("n1", true, &[("p", 1)])]);
        let done = desired_status(&policy, &selection(&["n1"]), &nodes);
        let second = next_status(Some(&first), &done, ts(300)).expect("a change");
        assert_eq!(second.conditions[0].last_transition_time, Time(ts(100)));
        assert_eq!(second.conditions[1].last_transition_time, Time(ts(300)));
        assert_eq!(second.conditions[1].status, "True");

        // A new message with the same status keeps the time, but is written.
        let mut more = done.clone();
        more.selected_pods = 5;
        more.programmed.message = "generation 1 runs on all 3 nodes with selected pods".into();
        let third = next_status(Some(&second), &more, ts(400)).expect("a change");
        assert_eq!(third.conditions[1].last_transition_time, Time(ts(300)));
        assert_eq!(third.selected_pods, Some(5));

        // Sub-second clocks are cut to what the API stores, so the comparison holds later.
        let precise = Timestamp::new(500, 123_456_789).expect("valid");
        let fourth = next_status(None, &done, precise).expect("first write");
        assert_eq!(fourth.conditions[0].last_transition_time, Time(ts(500)));
    }

    #[test]
    fn events_fire_once_per_generation_and_reason() {
        let conflict = |generation| rejected("p", generation, Reason::Conflict, "taken by q");
        // A writer starting up reports what is rejected now.
        assert_eq!(
            warning_events(&[], &[conflict(1), accepted("q", 1)]).len(),
            1
        );
        // Steady: nothing.
        assert!(warning_events(&[conflict(1)], &[conflict(1)]).is_empty());
        // Same generation, another reason: an event.
        let unknown = rejected("p", 1, Reason::UnknownEgressIp, "unknown");
        let events = warning_events(&[conflict(1)], &[unknown]);
        assert_eq!(
            events,
            [WarningEvent {
                policy: "p".into(),
                uid: "uid-p".into(),
                generation: 1,
                reason: Reason::UnknownEgressIp,
                message: "unknown".into(),
            }]
        );
        // A new generation still in conflict: an event.
        assert_eq!(warning_events(&[conflict(1)], &[conflict(2)]).len(), 1);
        // Accepted again, then rejected again: an event each time it enters a rejection.
        assert!(warning_events(&[conflict(1)], &[accepted("p", 1)]).is_empty());
        assert_eq!(warning_events(&[accepted("p", 1)], &[conflict(1)]).len(), 1);
        // A re-created policy (new uid) is a new object.
        let mut recreated = conflict(1);
        recreated.uid = "uid-p-2".into();
        assert_eq!(warning_events(&[conflict(1)], &[recreated]).len(), 1);
    }

    fn desired() -> impl Strategy<Value = DesiredStatus> {
        let condition = (any::<bool>(), 0..3usize).prop_map(|(status, n)| DesiredCondition {
            status,
            reason: ["A", "B", "C"][n].to_owned(),
            message: format!("m{n}"),
        });
        (condition.clone(), condition, 0u32..3, 1i64..3).prop_map(
            |(accepted, programmed, selected_pods, observed_generation)| DesiredStatus {
                accepted,
                programmed,
                selected_pods,
                observed_generation,
            },
        )
    }

    proptest! {
        /// Over any sequence of desired statuses: what is written is always the latest
        /// desire, writing it again is never needed, and each condition's transition time is
        /// the time its status last flipped (brute force: replay the sequence).
        #[test]
        fn next_status_writes_only_changes_and_tracks_flips(
            sequence in prop::collection::vec(desired(), 1..12),
        ) {
            let mut current: Option<EgressNATPolicyStatus> = None;
            // (status, since) per condition, by brute force.
            let mut flips: [Option<(bool, i64)>; 2] = [None, None];
            for (step, want) in sequence.iter().enumerate() {
                let now = ts(1000 + step as i64);
                if let Some(next) = next_status(current.as_ref(), want, now) {
                    prop_assert_ne!(Some(&next), current.as_ref());
                    current = Some(next);
                }
                for (flip, c) in flips.iter_mut().zip([&want.accepted, &want.programmed]) {
                    if flip.is_none_or(|(status, _)| status != c.status) {
                        *flip = Some((c.status, now.as_second()));
                    }
                }
                let status = current.as_ref().expect("written at least once");
                prop_assert_eq!(next_status(Some(status), want, ts(5000)), None);
                prop_assert_eq!(status.selected_pods, Some(want.selected_pods));
                prop_assert_eq!(status.observed_generation, Some(want.observed_generation));
                for (c, flip) in status.conditions.iter().zip(flips) {
                    let (flag, since) = flip.expect("set above");
                    prop_assert_eq!(c.status.as_str(), if flag { "True" } else { "False" });
                    prop_assert_eq!(c.last_transition_time.0.as_second(), since);
                }
            }
        }
    }
}
