//! Which `EgressNATPolicy` objects are accepted, and why the others are not.
//!
//! [`admit`] reads only the policies and the gateways' floating IPs, never the pods, so every
//! node and the status writer reach the same verdicts. In age order (creationTimestamp, then
//! name), each policy is checked in this order, the first failure deciding:
//!
//! 1. **Invalid**: anything the CRD schema should have caught but an object may still carry
//!    (it predates the CRD, or came from an apiserver without CEL): a CIDR that does not
//!    parse, a CIDR with host bits set (`10.0.0.1/8`: refused rather than masked, as
//!    `agent.toml` and upstream ip-masq-agent do, because it is far more often a typo), an
//!    egress IP that is not an IPv4 address, the two forms mixed, a form missing a required
//!    field or with an empty required list, a label selector that does not compile.
//! 2. **UnknownEgressIP** (gateway policies): the egress IP is in no `EgressGateway`'s
//!    `spec.floatingIPs`. With no `EgressGateway` at all, every egress IP is unknown: there
//!    is nobody to hand the traffic to, and tunnelling it to an address nobody owns would
//!    black-hole it.
//! 3. **Conflict** (gateway policies): an older *accepted* policy has the same egress IP; the
//!    older one keeps working. A rejected older policy holds nothing, so it never causes a
//!    conflict.
//!
//! NoSNAT policies can only be `Invalid`; they hold no egress IP.
//!
//! Invariants: [`Admission::policies`] is in age order with one entry per input object; the
//! accepted gateway policies have distinct egress IPs, all among the known gateways, which
//! is exactly what `policy::compile`'s own admission then finds (it rejects nothing more).

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use egret_crd::{EgressNATPolicySpec, PolicyAction};

use super::selector::{Selector, SelectorError};
use super::view::{GatewayObject, PolicyObject, known_gateways};
use crate::prefix::{Prefix, PrefixError};

/// The verdict on every policy, and the gateways it was reached with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Admission {
    /// Every policy, oldest first.
    pub policies: Vec<AdmittedPolicy>,
    /// All floating IPs of all gateways, sorted, each once.
    pub known_gateways: Vec<Ipv4Addr>,
}

/// One policy and its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmittedPolicy {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.generation` the verdict is about.
    pub generation: i64,
    /// The parsed spec; `None` when it is invalid.
    pub form: Option<Form>,
    /// Accepted, or why not.
    pub outcome: Outcome,
}

impl AdmittedPolicy {
    /// The gateway form, when the policy is an accepted gateway policy.
    pub fn accepted_gateway(&self) -> Option<&GatewayPolicy> {
        match (&self.outcome, &self.form) {
            (Outcome::Accepted, Some(Form::Gateway(g))) => Some(g),
            _ => None,
        }
    }

    /// The destinations, when the policy is an accepted NoSNAT policy.
    pub fn accepted_no_snat(&self) -> Option<&[Prefix]> {
        match (&self.outcome, &self.form) {
            (Outcome::Accepted, Some(Form::NoSnat { destinations })) => Some(destinations),
            _ => None,
        }
    }

    /// Whether the policy is a NoSNAT policy (as far as its spec says, valid or not).
    pub fn is_no_snat(&self) -> bool {
        matches!(self.form, Some(Form::NoSnat { .. }))
    }
}

/// A valid policy spec.
#[derive(Debug, Clone, PartialEq)]
pub enum Form {
    /// Pods selected by the rules leave through the egress IP toward the destinations.
    Gateway(GatewayPolicy),
    /// Pods keep their own address toward these destinations (sorted, each once).
    NoSnat {
        /// The destinations.
        destinations: Vec<Prefix>,
    },
}

/// A valid gateway policy.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayPolicy {
    /// At least one rule; a pod matching any is selected.
    pub rules: Vec<Rule>,
    /// `destinationCIDRs`: sorted, each once, never empty.
    pub destinations: Vec<Prefix>,
    /// `excludedCIDRs`: sorted, each once.
    pub excluded: Vec<Prefix>,
    /// `egressSourceIP`.
    pub egress: Ipv4Addr,
}

/// One egress rule: both selectors must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// On the pod's namespace's labels; absent in the spec: everything.
    pub namespace: Selector,
    /// On the pod's labels; absent in the spec: everything.
    pub pod: Selector,
}

impl Rule {
    /// Whether a pod with `labels` in a namespace with `namespace` labels matches; `None`
    /// for a namespace not in the view (yet): then only a namespace selector that matches
    /// everything matches, since the namespace's labels are unknown.
    pub fn matches(&self, namespace: Option<&super::Labels>, labels: &super::Labels) -> bool {
        let namespace_ok = match namespace {
            Some(ns) => self.namespace.matches(ns),
            None => self.namespace.is_everything(),
        };
        namespace_ok && self.pod.matches(labels)
    }
}

/// A policy's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Programmed on the nodes.
    Accepted,
    /// Not programmed anywhere.
    Rejected(Rejection),
}

impl Outcome {
    /// Whether the policy is accepted.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Outcome::Accepted)
    }
}

/// Why a policy is not programmed: its `Accepted=False` condition and its Warning event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The condition's (and the event's) reason.
    pub reason: Reason,
    /// For humans: what is wrong and what would be right.
    pub message: String,
}

/// The reasons of PRODUCT.md, in the order they are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// The spec cannot be understood.
    Invalid,
    /// The egress IP is no gateway's floating IP.
    UnknownEgressIp,
    /// An older accepted policy has the same egress IP.
    Conflict,
}

impl Reason {
    /// The reason as the API shows it (`Invalid`, `UnknownEgressIP`, `Conflict`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Invalid => "Invalid",
            Reason::UnknownEgressIp => "UnknownEgressIP",
            Reason::Conflict => "Conflict",
        }
    }

    /// Stable `snake_case` name, for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Invalid => "invalid",
            Reason::UnknownEgressIp => "unknown_egress_ip",
            Reason::Conflict => "conflict",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a policy spec is `Invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPolicy {
    /// `action: NoSNAT` with gateway fields, or a gateway policy with `destinations`.
    #[error("{0}")]
    MixedForms(String),
    /// A gateway policy without a required field, or with an empty required list.
    #[error("a gateway policy needs {0}")]
    Incomplete(String),
    /// A NoSNAT policy without destinations.
    #[error("a NoSNAT policy needs at least one entry in spec.destinations")]
    NoDestinations,
    /// A CIDR that is not a canonical IPv4 prefix.
    #[error("{field}: {value:?} is not a valid CIDR: {source}")]
    Cidr {
        /// Where: `spec.destinationCIDRs[2]`.
        field: String,
        /// The value as written.
        value: String,
        /// Why.
        source: PrefixError,
    },
    /// An egress IP that is not an IPv4 address.
    #[error("spec.egressSourceIP: {0:?} is not an IPv4 address")]
    EgressIp(String),
    /// A label selector the apiserver would refuse.
    #[error("{field}: {source}")]
    Selector {
        /// Where: `spec.egress[0].podSelector`.
        field: String,
        /// Why.
        source: SelectorError,
    },
}

impl InvalidPolicy {
    /// Stable `snake_case` name, for metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            InvalidPolicy::MixedForms(_) => "mixed_forms",
            InvalidPolicy::Incomplete(_) => "incomplete",
            InvalidPolicy::NoDestinations => "no_destinations",
            InvalidPolicy::Cidr { .. } => "cidr",
            InvalidPolicy::EgressIp(_) => "egress_ip",
            InvalidPolicy::Selector { .. } => "selector",
        }
    }
}

/// The verdict on every policy, as the module documentation states.
pub fn admit(policies: &[PolicyObject], gateways: &[GatewayObject]) -> Admission {
    let known_gateways = known_gateways(gateways);
    let mut ordered: Vec<&PolicyObject> = policies.iter().collect();
    ordered.sort_by(|a, b| a.age_key().cmp(&b.age_key()));
    let mut owners: HashMap<Ipv4Addr, &str> = HashMap::new();
    let mut out = Vec::with_capacity(ordered.len());
    for policy in ordered {
        let (form, outcome) = match parse(&policy.spec) {
            Err(invalid) => (
                None,
                Outcome::Rejected(Rejection {
                    reason: Reason::Invalid,
                    message: invalid.to_string(),
                }),
            ),
            Ok(form) => {
                let outcome = match &form {
                    Form::NoSnat { .. } => Outcome::Accepted,
                    Form::Gateway(g) => {
                        if known_gateways.binary_search(&g.egress).is_err() {
                            Outcome::Rejected(Rejection {
                                reason: Reason::UnknownEgressIp,
                                message: unknown_message(g.egress, &known_gateways),
                            })
                        } else if let Some(older) = owners.get(&g.egress) {
                            Outcome::Rejected(Rejection {
                                reason: Reason::Conflict,
                                message: format!(
                                    "egressSourceIP {} is already used by the older policy {older}, which keeps it",
                                    g.egress
                                ),
                            })
                        } else {
                            owners.insert(g.egress, &policy.name);
                            Outcome::Accepted
                        }
                    }
                };
                (Some(form), outcome)
            }
        };
        out.push(AdmittedPolicy {
            name: policy.name.clone(),
            uid: policy.uid.clone(),
            generation: policy.generation,
            form,
            outcome,
        });
    }
    Admission {
        policies: out,
        known_gateways,
    }
}

fn unknown_message(egress: Ipv4Addr, known: &[Ipv4Addr]) -> String {
    if known.is_empty() {
        return format!(
            "egressSourceIP {egress} is not a floating IP of any EgressGateway (there is no EgressGateway with floating IPs)"
        );
    }
    // Enough to spot a typo without flooding the condition.
    const SHOWN: usize = 8;
    let mut list: Vec<String> = known.iter().take(SHOWN).map(Ipv4Addr::to_string).collect();
    if known.len() > SHOWN {
        list.push(format!("and {} more", known.len() - SHOWN));
    }
    format!(
        "egressSourceIP {egress} is not a floating IP of any EgressGateway (known: {})",
        list.join(", ")
    )
}

/// Parses a spec into its form, or says why it is invalid.
pub fn parse(spec: &EgressNATPolicySpec) -> Result<Form, InvalidPolicy> {
    match spec.action {
        Some(PolicyAction::NoSNAT) => {
            let gateway_fields: Vec<&str> = [
                ("egress", spec.egress.is_some()),
                ("destinationCIDRs", spec.destination_cidrs.is_some()),
                ("excludedCIDRs", spec.excluded_cidrs.is_some()),
                ("egressSourceIP", spec.egress_source_ip.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, present)| present.then_some(name))
            .collect();
            if !gateway_fields.is_empty() {
                return Err(InvalidPolicy::MixedForms(format!(
                    "a NoSNAT policy has destinations only, not {}",
                    gateway_fields.join(", ")
                )));
            }
            let destinations = spec.destinations.as_deref().unwrap_or_default();
            if destinations.is_empty() {
                return Err(InvalidPolicy::NoDestinations);
            }
            let destinations = prefixes(
                "spec.destinations",
                destinations.iter().map(|d| d.cidr.as_str()),
                ".cidr",
            )?;
            Ok(Form::NoSnat { destinations })
        }
        None => {
            if spec.destinations.is_some() {
                return Err(InvalidPolicy::MixedForms(
                    "spec.destinations belongs to a NoSNAT policy (action: NoSNAT); a gateway policy uses destinationCIDRs".into(),
                ));
            }
            let rules = spec.egress.as_deref().unwrap_or_default();
            let destinations = spec.destination_cidrs.as_deref().unwrap_or_default();
            let missing: Vec<&str> = [
                ("at least one egress rule", rules.is_empty()),
                (
                    "at least one destinationCIDRs entry",
                    destinations.is_empty(),
                ),
                ("egressSourceIP", spec.egress_source_ip.is_none()),
            ]
            .into_iter()
            .filter_map(|(what, missing)| missing.then_some(what))
            .collect();
            if !missing.is_empty() {
                return Err(InvalidPolicy::Incomplete(missing.join(", ")));
            }
            let destinations = prefixes(
                "spec.destinationCIDRs",
                destinations.iter().map(String::as_str),
                "",
            )?;
            let excluded = prefixes(
                "spec.excludedCIDRs",
                spec.excluded_cidrs.iter().flatten().map(String::as_str),
                "",
            )?;
            let text = spec.egress_source_ip.as_deref().unwrap_or_default();
            let egress: Ipv4Addr = text
                .parse()
                .map_err(|_| InvalidPolicy::EgressIp(text.to_owned()))?;
            let rules = rules
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let compile = |which: &str, s| {
                        Selector::compile_optional(s).map_err(|source| InvalidPolicy::Selector {
                            field: format!("spec.egress[{i}].{which}"),
                            source,
                        })
                    };
                    Ok(Rule {
                        namespace: compile("namespaceSelector", rule.namespace_selector.as_ref())?,
                        pod: compile("podSelector", rule.pod_selector.as_ref())?,
                    })
                })
                .collect::<Result<Vec<_>, InvalidPolicy>>()?;
            Ok(Form::Gateway(GatewayPolicy {
                rules,
                destinations,
                excluded,
                egress,
            }))
        }
    }
}

fn prefixes<'a>(
    field: &str,
    texts: impl Iterator<Item = &'a str>,
    suffix: &str,
) -> Result<Vec<Prefix>, InvalidPolicy> {
    let mut out = texts
        .enumerate()
        .map(|(i, text)| {
            text.parse::<Prefix>()
                .map_err(|source| InvalidPolicy::Cidr {
                    field: format!("{field}[{i}]{suffix}"),
                    value: text.to_owned(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use egret_crd::{Destination, EgressRule};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    use super::*;
    use crate::cluster::fixtures::{gateway, gateway_spec, no_snat_spec, policy};

    fn reasons(admission: &Admission) -> Vec<(&str, Option<Reason>)> {
        admission
            .policies
            .iter()
            .map(|p| {
                let reason = match &p.outcome {
                    Outcome::Accepted => None,
                    Outcome::Rejected(r) => Some(r.reason),
                };
                (p.name.as_str(), reason)
            })
            .collect()
    }

    fn message(admission: &Admission, name: &str) -> String {
        let policy = admission
            .policies
            .iter()
            .find(|p| p.name == name)
            .expect("policy present");
        match &policy.outcome {
            Outcome::Rejected(r) => r.message.clone(),
            Outcome::Accepted => panic!("{name} accepted"),
        }
    }

    #[test]
    fn a_valid_gateway_policy_is_accepted_and_parsed() {
        let admission = admit(
            &[policy(
                "p",
                1,
                gateway_spec("192.0.2.1", &["8.8.8.0/24", "1.1.1.0/24", "8.8.8.0/24"]),
            )],
            &[gateway(&["192.0.2.1"])],
        );
        assert_eq!(reasons(&admission), [("p", None)]);
        let g = admission.policies[0]
            .accepted_gateway()
            .expect("gateway form");
        assert_eq!(g.egress, Ipv4Addr::new(192, 0, 2, 1));
        let d: Vec<String> = g.destinations.iter().map(Prefix::to_string).collect();
        assert_eq!(d, ["1.1.1.0/24", "8.8.8.0/24"], "sorted, each once");
        assert_eq!(g.rules.len(), 1);
        assert_eq!(admission.known_gateways, [Ipv4Addr::new(192, 0, 2, 1)]);
    }

    #[test]
    fn age_order_decides_conflicts_and_rejected_policies_hold_nothing() {
        let gws = [gateway(&["192.0.2.1", "192.0.2.2"])];
        let policies = [
            // Created last: conflicts with "older".
            policy("newest", 30, gateway_spec("192.0.2.1", &["8.8.8.0/24"])),
            policy("older", 10, gateway_spec("192.0.2.1", &["8.8.8.0/24"])),
            // Same timestamp as "older", but its name sorts after it.
            policy("other", 10, gateway_spec("192.0.2.1", &["8.8.8.0/24"])),
            // Invalid, older than "b-valid": holds nothing.
            policy("a-invalid", 5, gateway_spec("192.0.2.2", &["300.1.2.0/24"])),
            policy("b-valid", 6, gateway_spec("192.0.2.2", &["8.8.8.0/24"])),
        ];
        let admission = admit(&policies, &gws);
        assert_eq!(
            reasons(&admission),
            [
                ("a-invalid", Some(Reason::Invalid)),
                ("b-valid", None),
                ("older", None),
                ("other", Some(Reason::Conflict)),
                ("newest", Some(Reason::Conflict)),
            ]
        );
        assert_eq!(
            message(&admission, "newest"),
            "egressSourceIP 192.0.2.1 is already used by the older policy older, which keeps it"
        );
    }

    #[test]
    fn unknown_egress_ips_and_no_gateway_at_all() {
        let policies = [policy("p", 1, gateway_spec("192.0.2.9", &["8.8.8.0/24"]))];
        let admission = admit(&policies, &[gateway(&["192.0.2.1"])]);
        assert_eq!(reasons(&admission), [("p", Some(Reason::UnknownEgressIp))]);
        assert_eq!(
            message(&admission, "p"),
            "egressSourceIP 192.0.2.9 is not a floating IP of any EgressGateway (known: 192.0.2.1)"
        );
        let admission = admit(&policies, &[]);
        assert_eq!(reasons(&admission), [("p", Some(Reason::UnknownEgressIp))]);
        assert!(message(&admission, "p").contains("there is no EgressGateway"));
        // Unknown comes before Conflict: an unknown IP holds nothing either.
        let two = [
            policy("a", 1, gateway_spec("192.0.2.9", &["8.8.8.0/24"])),
            policy("b", 2, gateway_spec("192.0.2.9", &["8.8.8.0/24"])),
        ];
        let admission = admit(&two, &[]);
        assert_eq!(
            reasons(&admission),
            [
                ("a", Some(Reason::UnknownEgressIp)),
                ("b", Some(Reason::UnknownEgressIp))
            ]
        );
        // Many known IPs are cut short in the message.
        let many: Vec<String> = (10..20).map(|i| format!("192.0.2.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let admission = admit(&policies[..], &[gateway(&many)]);
        assert!(
            message(&admission, "p").ends_with("192.0.2.17, and 2 more)"),
            "{}",
            message(&admission, "p")
        );
    }

    #[test]
    fn invalid_specs_name_what_is_wrong() {
        let gws = [gateway(&["192.0.2.1"])];
        let check = |spec: EgressNATPolicySpec, label: &str, text: &str| {
            let invalid = parse(&spec).expect_err("invalid");
            assert_eq!(invalid.label(), label);
            assert_eq!(invalid.to_string(), text);
            let admission = admit(&[policy("p", 1, spec)], &gws);
            assert_eq!(message(&admission, "p"), text);
            assert_eq!(admission.policies[0].form, None);
        };
        check(
            gateway_spec("192.0.2.1", &["300.1.2.0/24"]),
            "cidr",
            "spec.destinationCIDRs[0]: \"300.1.2.0/24\" is not a valid CIDR: not an IPv4 prefix (expected ADDRESS/LENGTH, e.g. 10.0.0.0/8)",
        );
        check(
            gateway_spec("192.0.2.1", &["8.8.8.0/24", "10.0.0.1/8"]),
            "cidr",
            "spec.destinationCIDRs[1]: \"10.0.0.1/8\" is not a valid CIDR: host bits are set; the prefix is 10.0.0.0/8",
        );
        let mut spec = gateway_spec("192.0.2.1", &["8.8.8.0/24"]);
        spec.excluded_cidrs = Some(vec!["8.8.8.0/33".into()]);
        check(
            spec,
            "cidr",
            "spec.excludedCIDRs[0]: \"8.8.8.0/33\" is not a valid CIDR: prefix length 33 is above 32",
        );
        check(
            gateway_spec("192.0.2.256", &["8.8.8.0/24"]),
            "egress_ip",
            "spec.egressSourceIP: \"192.0.2.256\" is not an IPv4 address",
        );
        let mut spec = gateway_spec("192.0.2.1", &["8.8.8.0/24"]);
        spec.destinations = Some(vec![Destination {
            cidr: "1.1.1.0/24".into(),
        }]);
        check(
            spec,
            "mixed_forms",
            "spec.destinations belongs to a NoSNAT policy (action: NoSNAT); a gateway policy uses destinationCIDRs",
        );
        let mut spec = no_snat_spec(&["10.0.0.0/8"]);
        spec.egress_source_ip = Some("192.0.2.1".into());
        spec.excluded_cidrs = Some(vec![]);
        check(
            spec,
            "mixed_forms",
            "a NoSNAT policy has destinations only, not excludedCIDRs, egressSourceIP",
        );
        check(
            EgressNATPolicySpec::default(),
            "incomplete",
            "a gateway policy needs at least one egress rule, at least one destinationCIDRs entry, egressSourceIP",
        );
        let mut spec = gateway_spec("192.0.2.1", &["8.8.8.0/24"]);
        spec.egress = Some(vec![]);
        check(
            spec,
            "incomplete",
            "a gateway policy needs at least one egress rule",
        );
        check(
            no_snat_spec(&[]),
            "no_destinations",
            "a NoSNAT policy needs at least one entry in spec.destinations",
        );
        check(
            no_snat_spec(&["10.0.0.0/8", "1.2.3.4/8"]),
            "cidr",
            "spec.destinations[1].cidr: \"1.2.3.4/8\" is not a valid CIDR: host bits are set; the prefix is 1.0.0.0/8",
        );
        let mut spec = gateway_spec("192.0.2.1", &["8.8.8.0/24"]);
        spec.egress = Some(vec![
            EgressRule::default(),
            EgressRule {
                namespace_selector: None,
                pod_selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "a".into(),
                        operator: "Exists".into(),
                        values: Some(vec!["x".into()]),
                    }]),
                    ..LabelSelector::default()
                }),
            },
        ]);
        check(
            spec,
            "selector",
            "spec.egress[1].podSelector: matchExpressions[0]: values may not be given with operator Exists",
        );
    }

    #[test]
    fn no_snat_policies_are_accepted_without_gateways_and_never_conflict() {
        let policies = [
            policy("n1", 1, no_snat_spec(&["10.0.0.0/8", "1.1.0.0/16"])),
            policy("n2", 2, no_snat_spec(&["10.0.0.0/8"])),
        ];
        let admission = admit(&policies, &[]);
        assert_eq!(reasons(&admission), [("n1", None), ("n2", None)]);
        assert!(admission.policies[0].is_no_snat());
        let d: Vec<String> = admission.policies[0]
            .accepted_no_snat()
            .expect("no snat")
            .iter()
            .map(Prefix::to_string)
            .collect();
        assert_eq!(d, ["1.1.0.0/16", "10.0.0.0/8"]);
    }

    #[test]
    fn reasons_have_api_names_and_labels() {
        let all = [Reason::Invalid, Reason::UnknownEgressIp, Reason::Conflict];
        let names: Vec<_> = all.iter().map(|r| (r.as_str(), r.label())).collect();
        assert_eq!(
            names,
            [
                ("Invalid", "invalid"),
                ("UnknownEgressIP", "unknown_egress_ip"),
                ("Conflict", "conflict")
            ]
        );
        assert_eq!(Reason::Conflict.to_string(), "Conflict");
    }
}
