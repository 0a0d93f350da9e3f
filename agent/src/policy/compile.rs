//! [`compile`]: admission, then the source classes, then each class's destination decisions.
//!
//! Both tries are built the same way: the boundary prefixes are sorted by (address, length),
//! which is a pre-order of the prefix tree, so a stack of the prefixes covering the current
//! one gives its nearest covering boundary (its *parent*) and every covering boundary. A
//! boundary's own *region* (its addresses under no longer boundary) is empty when its direct
//! children cover it; its entry would never be the longest match, so none is emitted.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::ops::Range;

use egret_ebpf_common::node::{
    ACTION_SKIP, ACTION_TUNNEL, DESTINATIONS_MAP, DestValue, GATEWAYS_MAP, MAX_DESTINATIONS,
    MAX_GATEWAYS, MAX_SOURCES, SOURCES_MAP, class_id, policy_id,
};

use super::{CompileError, PolicySpec, PolicyState, PolicyStatus, Program, Rejection};
use crate::prefix::Prefix;

/// Compiles `policies` (oldest first) into the node programs' map contents, as the module
/// documentation states. `known_gateways` are the gateways' floating IPs; when not empty,
/// a policy with another egress IP is rejected.
pub fn compile(
    policies: &[PolicySpec],
    known_gateways: &[Ipv4Addr],
) -> Result<Program, CompileError> {
    let (mut statuses, admitted) = admit(policies, known_gateways)?;

    let sources = source_entries(&admitted);
    let mut classes = Vec::with_capacity(sources.classes.len());
    let mut class_ids: HashMap<u64, usize> = HashMap::with_capacity(sources.classes.len());
    for (index, members) in sources.classes.iter().enumerate() {
        let mut ids: Vec<u64> = members.iter().map(|&r| admitted[r as usize].id).collect();
        ids.sort_unstable();
        let id = class_id(&ids);
        if let Some(&other) = class_ids.get(&id) {
            let names = |members: &[u32]| -> Vec<String> {
                members
                    .iter()
                    .map(|&r| admitted[r as usize].spec.name.clone())
                    .collect()
            };
            return Err(CompileError::ClassIdCollision {
                id,
                first: names(&sources.classes[other]),
                second: names(members),
            });
        }
        class_ids.insert(id, index);
        classes.push(id);
    }

    let mut program = Program::default();
    let mut source_count = vec![0usize; admitted.len()];
    for &(prefix, class) in &sources.entries {
        program.sources.insert(prefix, classes[class]);
        for &rank in &sources.classes[class] {
            source_count[rank as usize] += 1;
        }
    }

    let mut tunnel_count = vec![0usize; admitted.len()];
    let mut walk = DestinationWalk::default();
    for (class, members) in classes.iter().zip(&sources.classes) {
        for &(prefix, winner) in walk.run(members, &admitted) {
            let value = match winner {
                Some(rank) => {
                    tunnel_count[rank as usize] += 1;
                    let policy = &admitted[rank as usize];
                    DestValue {
                        policy: policy.id,
                        egress: policy.spec.egress.octets(),
                        action: ACTION_TUNNEL,
                    }
                }
                None => DestValue {
                    policy: 0,
                    egress: [0; 4],
                    action: ACTION_SKIP,
                },
            };
            program.destinations.insert((*class, prefix), value);
        }
    }

    program.gateways = known_gateways.iter().copied().collect();
    for (rank, policy) in admitted.iter().enumerate() {
        if tunnel_count[rank] > 0 {
            program.gateways.insert(policy.spec.egress);
        }
        statuses[policy.status].state = PolicyState::Programmed {
            sources: source_count[rank],
            destinations: tunnel_count[rank],
        };
    }
    program.policies = statuses;

    fits(SOURCES_MAP, program.sources.len(), MAX_SOURCES)?;
    fits(
        DESTINATIONS_MAP,
        program.destinations.len(),
        MAX_DESTINATIONS,
    )?;
    fits(GATEWAYS_MAP, program.gateways.len(), MAX_GATEWAYS)?;
    Ok(program)
}

fn fits(map: &'static str, entries: usize, max: u32) -> Result<(), CompileError> {
    if entries > max as usize {
        return Err(CompileError::TooManyEntries { map, entries, max });
    }
    Ok(())
}

/// An admitted policy. Its position in the admitted list is its *rank*: lower is older.
struct Admitted<'a> {
    spec: &'a PolicySpec,
    id: u64,
    /// Its index in the input (and in the statuses).
    status: usize,
}

/// Every policy's status (admitted ones as `Programmed` with zero counts, filled in later)
/// and the admitted policies, oldest first.
fn admit<'a>(
    policies: &'a [PolicySpec],
    known_gateways: &[Ipv4Addr],
) -> Result<(Vec<PolicyStatus>, Vec<Admitted<'a>>), CompileError> {
    let known: HashSet<Ipv4Addr> = known_gateways.iter().copied().collect();
    let mut names: HashSet<&str> = HashSet::with_capacity(policies.len());
    let mut ids: HashMap<u64, &str> = HashMap::with_capacity(policies.len());
    let mut egress_owners: HashMap<Ipv4Addr, &str> = HashMap::with_capacity(policies.len());
    let mut statuses = Vec::with_capacity(policies.len());
    let mut admitted = Vec::with_capacity(policies.len());
    for (index, spec) in policies.iter().enumerate() {
        let id = policy_id(&spec.name);
        let state = if !names.insert(&spec.name) {
            PolicyState::Rejected(Rejection::DuplicateName)
        } else {
            if let Some(first) = ids.insert(id, &spec.name) {
                return Err(CompileError::PolicyIdCollision {
                    first: first.to_owned(),
                    second: spec.name.clone(),
                    id,
                });
            }
            if !known.is_empty() && !known.contains(&spec.egress) {
                PolicyState::Rejected(Rejection::UnknownEgressIp)
            } else if let Some(older) = egress_owners.get(&spec.egress) {
                PolicyState::Rejected(Rejection::EgressIpConflict {
                    older: (*older).to_owned(),
                })
            } else {
                egress_owners.insert(spec.egress, &spec.name);
                admitted.push(Admitted {
                    spec,
                    id,
                    status: index,
                });
                PolicyState::Programmed {
                    sources: 0,
                    destinations: 0,
                }
            }
        };
        statuses.push(PolicyStatus {
            name: spec.name.clone(),
            id,
            egress: spec.egress,
            state,
        });
    }
    Ok((statuses, admitted))
}

/// The number of addresses under `prefix`.
fn size(prefix: Prefix) -> u64 {
    1 << (32 - u32::from(prefix.len()))
}

/// The prefix tree of sorted, distinct prefixes.
struct Tree {
    /// The nearest covering prefix's index.
    parent: Vec<Option<usize>>,
    /// Whether the prefix's own region is empty: its direct children cover it.
    hollow: Vec<bool>,
}

impl Tree {
    fn new(prefixes: &[Prefix]) -> Tree {
        let mut parent = Vec::with_capacity(prefixes.len());
        let mut covered = vec![0u64; prefixes.len()];
        let mut stack: Vec<usize> = Vec::new();
        for (i, &prefix) in prefixes.iter().enumerate() {
            while let Some(&top) = stack.last() {
                if prefixes[top].covers(prefix) {
                    break;
                }
                stack.pop();
            }
            let up = stack.last().copied();
            if let Some(up) = up {
                // Direct children are disjoint, so their sizes add up.
                covered[up] += size(prefix);
            }
            parent.push(up);
            stack.push(i);
        }
        let hollow = prefixes
            .iter()
            .zip(&covered)
            .map(|(&prefix, &covered)| covered == size(prefix))
            .collect();
        Tree { parent, hollow }
    }
}

/// Sorts `tagged` and groups it by prefix: the distinct prefixes, in tree pre-order, and for
/// each the range of its tags in `tagged`.
fn group<T: Ord>(tagged: &mut Vec<(Prefix, T)>) -> (Vec<Prefix>, Vec<Range<usize>>) {
    tagged.sort_unstable();
    tagged.dedup();
    let mut prefixes: Vec<Prefix> = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for (i, (prefix, _)) in tagged.iter().enumerate() {
        match (prefixes.last(), ranges.last_mut()) {
            (Some(last), Some(range)) if last == prefix => range.end = i + 1,
            _ => {
                prefixes.push(*prefix);
                ranges.push(i..i + 1);
            }
        }
    }
    (prefixes, ranges)
}

/// The source entries and the classes they name.
struct SourceEntries {
    /// (prefix, index into `classes`), in prefix order.
    entries: Vec<(Prefix, usize)>,
    /// The classes in use: sorted, distinct ranks of their policies.
    classes: Vec<Vec<u32>>,
}

fn source_entries(admitted: &[Admitted<'_>]) -> SourceEntries {
    let mut tagged: Vec<(Prefix, u32)> = admitted
        .iter()
        .zip(0u32..)
        .flat_map(|(policy, rank)| policy.spec.sources.iter().map(move |&p| (p, rank)))
        .collect();
    let (prefixes, ranges) = group(&mut tagged);
    let tree = Tree::new(&prefixes);

    // Every boundary's class, interned; only the classes of emitted entries are kept.
    let mut sets: Vec<Vec<u32>> = Vec::new();
    let mut interned: HashMap<Vec<u32>, usize> = HashMap::new();
    let mut class: Vec<usize> = Vec::with_capacity(prefixes.len());
    // What the trie gives for the boundary's region without its own entry, then with it.
    let mut effective: Vec<Option<usize>> = Vec::with_capacity(prefixes.len());
    let mut entries = Vec::new();
    for (i, range) in ranges.into_iter().enumerate() {
        let own = tagged[range].iter().map(|&(_, rank)| rank);
        let parent = tree.parent[i];
        let inherited = parent.and_then(|p| effective[p]);
        let set = match parent {
            Some(p)
                if own
                    .clone()
                    .all(|r| sets[class[p]].binary_search(&r).is_ok()) =>
            {
                class[p]
            }
            _ => {
                let mut set: Vec<u32> = parent.map(|p| sets[class[p]].clone()).unwrap_or_default();
                set.extend(own);
                set.sort_unstable();
                set.dedup();
                *interned.entry(set).or_insert_with_key(|set| {
                    sets.push(set.clone());
                    sets.len() - 1
                })
            }
        };
        class.push(set);
        if tree.hollow[i] || inherited == Some(set) {
            effective.push(inherited);
        } else {
            entries.push((prefixes[i], set));
            effective.push(Some(set));
        }
    }

    // Renumber the classes in use densely.
    let mut used: Vec<Option<usize>> = vec![None; sets.len()];
    let mut classes = Vec::new();
    for (_, set) in &mut entries {
        *set = *used[*set].get_or_insert_with(|| {
            classes.push(std::mem::take(&mut sets[*set]));
            classes.len() - 1
        });
    }
    SourceEntries { entries, classes }
}

/// A destination boundary's tag: an excluded prefix (`true`) or a destination (`false`, sorted
/// first) of the class member at an index of the class.
type Tag = (bool, u32);

/// Reusable buffers for the destination entries of one class after another.
#[derive(Default)]
struct DestinationWalk {
    tagged: Vec<(Prefix, Tag)>,
    excluded: Vec<u32>,
    path: Vec<usize>,
    effective: Vec<Option<u32>>,
    out: Vec<(Prefix, Option<u32>)>,
}

impl DestinationWalk {
    /// The destination entries of the class of `members` (ranks, oldest first): each
    /// boundary whose decision differs from what it inherits, with the winning rank, or `None`
    /// for "leave alone".
    fn run(&mut self, members: &[u32], admitted: &[Admitted<'_>]) -> &[(Prefix, Option<u32>)] {
        self.tagged.clear();
        for (&rank, member) in members.iter().zip(0u32..) {
            let spec = admitted[rank as usize].spec;
            let destinations = spec.destinations.iter().map(|&p| (p, (false, member)));
            let excluded = spec.excluded.iter().map(|&p| (p, (true, member)));
            self.tagged.extend(destinations.chain(excluded));
        }
        let (prefixes, ranges) = group(&mut self.tagged);
        let tree = Tree::new(&prefixes);

        // How many boundaries on the path exclude each member.
        self.excluded.clear();
        self.excluded.resize(members.len(), 0);
        self.path.clear();
        self.effective.clear();
        self.out.clear();
        for (i, prefix) in prefixes.iter().enumerate() {
            let parent = tree.parent[i];
            while let Some(&top) = self.path.last() {
                if Some(top) == parent {
                    break;
                }
                self.path.pop();
                for &(_, (excluded, member)) in &self.tagged[ranges[top].clone()] {
                    if excluded {
                        self.excluded[member as usize] -= 1;
                    }
                }
            }
            self.path.push(i);
            for &(_, (excluded, member)) in &self.tagged[ranges[i].clone()] {
                if excluded {
                    self.excluded[member as usize] += 1;
                }
            }

            // The longest covering destination prefix of a member not excluded here wins;
            // within one prefix, members are in age order.
            let winner = self.path.iter().rev().find_map(|&node| {
                self.tagged[ranges[node].clone()]
                    .iter()
                    .find(|&&(_, (excluded, member))| {
                        !excluded && self.excluded[member as usize] == 0
                    })
                    .map(|&(_, (_, member))| members[member as usize])
            });

            // No entry at all reads as "leave alone", like a SKIP entry.
            let inherited = parent.and_then(|p| self.effective[p]);
            if tree.hollow[i] || winner == inherited {
                self.effective.push(inherited);
            } else {
                self.out.push((*prefix, winner));
                self.effective.push(winner);
            }
        }
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use egret_ebpf_common::node::policy_id;

    use super::*;

    fn p(text: &str) -> Prefix {
        text.parse().expect("valid prefix")
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("valid address")
    }

    fn policy(
        name: &str,
        sources: &[&str],
        destinations: &[&str],
        excluded: &[&str],
        egress: &str,
    ) -> PolicySpec {
        PolicySpec {
            name: name.into(),
            sources: sources.iter().map(|s| p(s)).collect(),
            destinations: destinations.iter().map(|s| p(s)).collect(),
            excluded: excluded.iter().map(|s| p(s)).collect(),
            egress: ip(egress),
        }
    }

    /// The decision as (policy name, egress), checked against the reference semantics.
    fn decide(policies: &[PolicySpec], src: &str, dst: &str) -> Option<(String, Ipv4Addr)> {
        let program = compile(policies, &[]).expect("compiles");
        let decision = program.decide(ip(src), ip(dst)).map(|(id, egress)| {
            let name = policies
                .iter()
                .find(|p| policy_id(&p.name) == id)
                .expect("known id");
            (name.name.clone(), egress)
        });
        let reference = super::super::reference_decision(policies, &[], ip(src), ip(dst));
        assert_eq!(decision, reference, "{src} -> {dst}");
        decision
    }

    fn winner(policies: &[PolicySpec], src: &str, dst: &str) -> Option<String> {
        decide(policies, src, dst).map(|(name, _)| name)
    }

    const POD: &str = "10.10.1.5";

    #[test]
    fn longest_destination_prefix_wins_over_an_older_policy() {
        let policies = [
            policy("old", &["10.10.1.0/24"], &["8.0.0.0/8"], &[], "192.0.2.1"),
            policy("new", &["10.10.1.0/24"], &["8.8.8.0/24"], &[], "192.0.2.2"),
        ];
        assert_eq!(
            decide(&policies, POD, "8.8.8.8"),
            Some(("new".into(), ip("192.0.2.2")))
        );
        assert_eq!(
            decide(&policies, POD, "8.8.4.4"),
            Some(("old".into(), ip("192.0.2.1")))
        );
        assert_eq!(decide(&policies, POD, "9.9.9.9"), None);
        assert_eq!(decide(&policies, "10.10.2.5", "8.8.8.8"), None);
    }

    #[test]
    fn a_tie_goes_to_the_older_policy() {
        let policies = [
            policy("old", &["10.10.1.0/24"], &["8.8.8.0/24"], &[], "192.0.2.1"),
            policy(
                "new",
                &["10.10.0.0/16"],
                &["8.8.8.0/24", "1.1.1.1/32"],
                &[],
                "192.0.2.2",
            ),
        ];
        assert_eq!(winner(&policies, POD, "8.8.8.8").as_deref(), Some("old"));
        assert_eq!(winner(&policies, POD, "1.1.1.1").as_deref(), Some("new"));
        assert_eq!(
            winner(&policies, "10.10.2.5", "8.8.8.8").as_deref(),
            Some("new")
        );
    }

    #[test]
    fn an_exclusion_does_not_hide_another_policys_match() {
        let policies = [
            policy(
                "wide",
                &["10.10.1.0/24"],
                &["8.0.0.0/8"],
                &["8.8.0.0/16"],
                "192.0.2.1",
            ),
            policy(
                "narrow",
                &["10.10.1.0/24"],
                &["8.8.8.0/24"],
                &[],
                "192.0.2.2",
            ),
            policy("same", &["10.10.1.0/24"], &["8.8.0.0/16"], &[], "192.0.2.3"),
        ];
        assert_eq!(winner(&policies, POD, "8.8.8.8").as_deref(), Some("narrow"));
        assert_eq!(winner(&policies, POD, "8.8.4.4").as_deref(), Some("same"));
        assert_eq!(winner(&policies, POD, "8.1.1.1").as_deref(), Some("wide"));
        // Without "same", the excluded /16 outside "narrow" is left alone.
        assert_eq!(winner(&policies[..2], POD, "8.8.4.4"), None);
    }

    #[test]
    fn an_exclusion_inside_a_longer_destination_of_the_same_policy_still_excludes() {
        let policies = [
            policy(
                "a",
                &["10.10.1.0/24"],
                &["8.0.0.0/8", "8.8.0.0/16"],
                &["8.8.8.0/24"],
                "192.0.2.1",
            ),
            policy("b", &["10.10.1.0/24"], &["0.0.0.0/0"], &[], "192.0.2.2"),
        ];
        assert_eq!(winner(&policies, POD, "8.8.4.4").as_deref(), Some("a"));
        assert_eq!(winner(&policies, POD, "8.8.8.8").as_deref(), Some("b"));
        assert_eq!(winner(&policies[..1], POD, "8.8.8.8"), None);
        assert_eq!(winner(&policies[..1], POD, "8.8.9.9").as_deref(), Some("a"));
    }

    #[test]
    fn overlapping_sources_make_three_regions() {
        let policies = [
            policy("a", &["10.10.1.0/24"], &["8.8.8.0/24"], &[], "192.0.2.1"),
            policy("b", &["10.10.1.0/28"], &["1.1.1.0/24"], &[], "192.0.2.2"),
        ];
        let program = compile(&policies, &[]).expect("compiles");
        let (a, b) = (policy_id("a"), policy_id("b"));
        let mut ab = [a, b];
        ab.sort_unstable();
        assert_eq!(
            program.sources,
            BTreeMap::from([
                (p("10.10.1.0/24"), class_id(&[a])),
                (p("10.10.1.0/28"), class_id(&ab))
            ])
        );
        // Inside the /28: both policies.
        assert_eq!(
            winner(&policies, "10.10.1.1", "8.8.8.8").as_deref(),
            Some("a")
        );
        assert_eq!(
            winner(&policies, "10.10.1.15", "1.1.1.1").as_deref(),
            Some("b")
        );
        // The rest of the /24: a only.
        assert_eq!(
            winner(&policies, "10.10.1.16", "8.8.8.8").as_deref(),
            Some("a")
        );
        assert_eq!(winner(&policies, "10.10.1.100", "1.1.1.1"), None);
        // Outside: nothing.
        assert_eq!(winner(&policies, "10.10.2.1", "8.8.8.8"), None);
        assert_eq!(program.destinations.len(), 3);
        assert_eq!(
            program
                .policies
                .iter()
                .map(|s| s.state.clone())
                .collect::<Vec<_>>(),
            [
                PolicyState::Programmed {
                    sources: 2,
                    destinations: 2
                },
                PolicyState::Programmed {
                    sources: 1,
                    destinations: 1
                },
            ]
        );
    }

    #[test]
    fn rejected_policies_are_not_programmed_and_the_others_are() {
        let known = [ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3")];
        let policies = [
            policy(
                "unknown",
                &["10.10.1.0/24"],
                &["0.0.0.0/0"],
                &[],
                "198.51.100.1",
            ),
            policy(
                "first",
                &["10.10.1.0/24"],
                &["8.8.8.0/24"],
                &[],
                "192.0.2.1",
            ),
            policy(
                "second",
                &["10.10.1.0/24"],
                &["8.8.0.0/16"],
                &[],
                "192.0.2.1",
            ),
            policy(
                "first",
                &["10.10.1.0/24"],
                &["1.1.1.0/24"],
                &[],
                "192.0.2.2",
            ),
            policy(
                "third",
                &["10.10.1.0/24"],
                &["1.1.1.0/24"],
                &[],
                "192.0.2.2",
            ),
        ];
        let program = compile(&policies, &known).expect("compiles");
        let states: Vec<_> = program
            .policies
            .iter()
            .map(|s| (s.name.as_str(), s.state.clone()))
            .collect();
        assert_eq!(
            states,
            [
                ("unknown", PolicyState::Rejected(Rejection::UnknownEgressIp)),
                (
                    "first",
                    PolicyState::Programmed {
                        sources: 1,
                        destinations: 1
                    }
                ),
                (
                    "second",
                    PolicyState::Rejected(Rejection::EgressIpConflict {
                        older: "first".into()
                    })
                ),
                ("first", PolicyState::Rejected(Rejection::DuplicateName)),
                (
                    "third",
                    PolicyState::Programmed {
                        sources: 1,
                        destinations: 1
                    }
                ),
            ]
        );
        assert_eq!(program.policies[4].id, policy_id("third"));
        assert_eq!(program.policies[4].egress, ip("192.0.2.2"));
        assert_eq!(program.decide(ip(POD), ip("8.8.4.4")), None);
        assert_eq!(
            program.decide(ip(POD), ip("8.8.8.8")),
            Some((policy_id("first"), ip("192.0.2.1")))
        );
        assert_eq!(
            program.decide(ip(POD), ip("1.1.1.1")),
            Some((policy_id("third"), ip("192.0.2.2")))
        );
        assert_eq!(program.gateways, known.into_iter().collect());

        let labels: Vec<_> = [
            Rejection::UnknownEgressIp,
            Rejection::EgressIpConflict {
                older: "first".into(),
            },
            Rejection::DuplicateName,
        ]
        .iter()
        .map(|r| (r.label(), r.to_string()))
        .collect();
        assert_eq!(
            labels,
            [
                (
                    "unknown_egress_ip",
                    "the egress IP is not a known gateway address".to_owned()
                ),
                (
                    "egress_ip_conflict",
                    "the egress IP is already used by the older policy first".to_owned()
                ),
                (
                    "duplicate_name",
                    "an older policy has the same name".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn gateways_are_the_egress_ips_that_tunnel_something_and_the_known_ones() {
        let policies = [
            policy(
                "tunnels",
                &["10.10.1.0/24"],
                &["8.8.8.0/24"],
                &[],
                "192.0.2.1",
            ),
            policy("no-destination", &["10.10.1.0/24"], &[], &[], "192.0.2.2"),
            policy(
                "shadowed",
                &["10.10.1.0/24"],
                &["8.8.8.0/24"],
                &[],
                "192.0.2.3",
            ),
        ];
        let program = compile(&policies, &[]).expect("compiles");
        assert_eq!(program.gateways, BTreeSet::from([ip("192.0.2.1")]));
        let known = [
            ip("192.0.2.1"),
            ip("192.0.2.2"),
            ip("192.0.2.3"),
            ip("192.0.2.4"),
        ];
        let program = compile(&policies, &known).expect("compiles");
        assert_eq!(program.gateways, known.into_iter().collect());
        assert_eq!(
            program.policies[2].state,
            PolicyState::Programmed {
                sources: 1,
                destinations: 0
            }
        );
    }

    #[test]
    fn no_policies_make_an_empty_program() {
        assert_eq!(compile(&[], &[]), Ok(Program::default()));
        let program = compile(&[], &[ip("192.0.2.1")]).expect("compiles");
        assert_eq!(program.gateways, BTreeSet::from([ip("192.0.2.1")]));
        assert!(program.sources.is_empty() && program.destinations.is_empty());
    }

    #[test]
    fn redundant_and_hidden_boundaries_get_no_entry() {
        let policies = [policy(
            "a",
            // The /25 adds nothing to the /24; the /24 itself is fully covered by its halves'
            // children in the destination trie.
            &["10.10.1.0/24", "10.10.1.0/25"],
            &["8.8.8.0/24", "8.8.8.0/25", "8.8.8.128/25", "9.0.0.0/8"],
            &["8.8.8.0/25", "9.9.0.0/16", "9.9.9.0/24"],
            "192.0.2.1",
        )];
        let program = compile(&policies, &[]).expect("compiles");
        let class = class_id(&[policy_id("a")]);
        assert_eq!(
            program.sources,
            BTreeMap::from([(p("10.10.1.0/24"), class)])
        );
        let tunnel = DestValue {
            policy: policy_id("a"),
            egress: [192, 0, 2, 1],
            action: ACTION_TUNNEL,
        };
        let skip = DestValue {
            policy: 0,
            egress: [0; 4],
            action: ACTION_SKIP,
        };
        assert_eq!(
            program.destinations,
            BTreeMap::from([
                ((class, p("8.8.8.128/25")), tunnel),
                ((class, p("9.0.0.0/8")), tunnel),
                ((class, p("9.9.0.0/16")), skip),
            ])
        );
        assert_eq!(winner(&policies, POD, "8.8.8.1"), None);
        assert_eq!(winner(&policies, POD, "8.8.8.129").as_deref(), Some("a"));
        assert_eq!(winner(&policies, POD, "9.9.9.9"), None);
    }

    #[test]
    fn the_tree_finds_parents_and_hollow_prefixes() {
        let prefixes = [
            p("10.0.0.0/8"),
            p("10.0.0.0/9"),
            p("10.0.0.0/10"),
            p("10.64.0.0/10"),
            p("10.128.0.0/9"),
            p("11.0.0.0/8"),
        ];
        let tree = Tree::new(&prefixes);
        assert_eq!(
            tree.parent,
            [None, Some(0), Some(1), Some(1), Some(0), None]
        );
        assert_eq!(tree.hollow, [true, true, false, false, false, false]);
    }

    #[test]
    fn errors_have_labels() {
        let collision = CompileError::ClassIdCollision {
            id: 7,
            first: vec!["a".into()],
            second: vec!["b".into(), "c".into()],
        };
        assert_eq!(collision.label(), "class_id_collision");
        assert_eq!(
            collision.to_string(),
            "policy sets [a] and [b, c] have the same class id 0x0000000000000007; rename a policy"
        );
        let full = CompileError::TooManyEntries {
            map: SOURCES_MAP,
            entries: 70_000,
            max: MAX_SOURCES,
        };
        assert_eq!(full.label(), "too_many_entries");
        assert_eq!(
            full.to_string(),
            "70000 entries for EGRET_SOURCES, which holds 65536"
        );
    }

    #[test]
    fn too_many_sources_are_refused() {
        let sources = (0..=MAX_SOURCES)
            .map(|i| Prefix::host(Ipv4Addr::from_bits(0x0a00_0000 + i)))
            .collect();
        let policies = [PolicySpec {
            name: "big".into(),
            sources,
            destinations: vec![],
            excluded: vec![],
            egress: ip("192.0.2.1"),
        }];
        assert_eq!(
            compile(&policies, &[]),
            Err(CompileError::TooManyEntries {
                map: SOURCES_MAP,
                entries: MAX_SOURCES as usize + 1,
                max: MAX_SOURCES
            })
        );
    }
}
