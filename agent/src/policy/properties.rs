//! Property tests of the policy core against the brute-force semantics, and a scale test.
//!
//! - the compiled tries, looked up as the node programs do, decide every probe exactly as
//!   [`reference_decision`];
//! - every destination entry's class is named by a source entry;
//! - applying [`plan`]'s steps to the current contents gives exactly the desired ones, and
//!   no intermediate state decides a probe otherwise when before and after agree on it.
//!
//! Prefixes come from a small universe (10.0.0.0/24 and 8.8.0.0/24, a dozen last bytes,
//! lengths 20 to 32, and sometimes 0.0.0.0/0), so that they nest and overlap a lot; probes
//! are the first and last addresses of the prefixes and their neighbours, plus a few random
//! ones.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;

use egret_ebpf_common::node::{ACTION_SKIP, ACTION_TUNNEL, policy_id};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;

use super::fixtures::fleet;
use super::{Contents, PolicySpec, PolicyState, Program, Step, compile, plan, reference_decision};
use crate::prefix::Prefix;

const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const GATEWAYS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(192, 0, 2, 1),
    Ipv4Addr::new(192, 0, 2, 2),
    Ipv4Addr::new(192, 0, 2, 3),
    Ipv4Addr::new(192, 0, 2, 4),
];

/// Last bytes of prefix addresses: few, and aligned in many ways, so that prefixes coincide,
/// nest and abut often.
const LOW: [u8; 12] = [0, 1, 2, 4, 7, 8, 16, 32, 64, 128, 192, 255];

fn prefix() -> impl Strategy<Value = Prefix> {
    let universe =
        (any::<bool>(), prop::sample::select(&LOW[..]), 20u8..=32).prop_map(|(ten, low, len)| {
            let base: u32 = if ten { 0x0a00_0000 } else { 0x0808_0000 };
            Prefix::new(Ipv4Addr::from_bits(base | u32::from(low)), len)
        });
    prop_oneof![12 => universe, 1 => Just(Prefix::ANY)]
}

fn policy() -> impl Strategy<Value = PolicySpec> {
    (
        0..NAMES.len(),
        prop::collection::vec(prefix(), 0..3),
        prop::collection::vec(prefix(), 0..4),
        prop::collection::vec(prefix(), 0..3),
        0..GATEWAYS.len(),
    )
        .prop_map(
            |(name, sources, destinations, excluded, egress)| PolicySpec {
                name: NAMES[name].into(),
                sources,
                destinations,
                excluded,
                egress: GATEWAYS[egress],
            },
        )
}

fn policies() -> impl Strategy<Value = Vec<PolicySpec>> {
    prop::collection::vec(policy(), 0..6)
}

/// Empty (not checked) half of the time, else some of the gateways.
fn known_gateways() -> impl Strategy<Value = Vec<Ipv4Addr>> {
    prop_oneof![
        Just(Vec::new()),
        prop::sample::subsequence(GATEWAYS.to_vec(), 1..=GATEWAYS.len())
    ]
}

/// The first and last address of each prefix and their neighbours.
fn edges<'a>(prefixes: impl Iterator<Item = &'a Prefix>) -> BTreeSet<Ipv4Addr> {
    let mut addrs = BTreeSet::new();
    for prefix in prefixes {
        let first = prefix.addr().to_bits();
        let last = first | u32::MAX.checked_shr(u32::from(prefix.len())).unwrap_or(0);
        for a in [first, last, first.wrapping_sub(1), last.wrapping_add(1)] {
            addrs.insert(Ipv4Addr::from_bits(a));
        }
    }
    addrs
}

/// Source and destination probe addresses for some policy sets, plus `extra` ones.
fn probe_addresses(sets: &[&[PolicySpec]], extra: &[Ipv4Addr]) -> (Vec<Ipv4Addr>, Vec<Ipv4Addr>) {
    let policies = || sets.iter().flat_map(|set| set.iter());
    let mut sources = edges(policies().flat_map(|p| &p.sources));
    let mut destinations = edges(policies().flat_map(|p| p.destinations.iter().chain(&p.excluded)));
    sources.extend(extra);
    destinations.extend(extra);
    (
        sources.into_iter().collect(),
        destinations.into_iter().collect(),
    )
}

fn random_address() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        (any::<bool>(), any::<u16>()).prop_map(|(ten, low)| {
            let base: u32 = if ten { 0x0a00_0000 } else { 0x0808_0000 };
            Ipv4Addr::from_bits(base | u32::from(low >> 4))
        }),
        any::<u32>().prop_map(Ipv4Addr::from_bits),
    ]
}

/// The class the source trie gives `s`.
fn class_of(contents: &Contents, s: Ipv4Addr) -> Option<u64> {
    (0..=32u8)
        .rev()
        .find_map(|len| contents.sources.get(&Prefix::new(s, len)).copied())
}

/// The reference decision as the maps name it: (policy id, egress).
fn reference(
    policies: &[PolicySpec],
    known: &[Ipv4Addr],
    s: Ipv4Addr,
    d: Ipv4Addr,
) -> Option<(u64, Ipv4Addr)> {
    reference_decision(policies, known, s, d).map(|(name, egress)| (policy_id(&name), egress))
}

fn check_program(program: &Program, policies: &[PolicySpec], known: &[Ipv4Addr]) {
    let classes: BTreeSet<u64> = program.sources.values().copied().collect();
    for ((class, _), value) in &program.destinations {
        assert!(classes.contains(class), "orphan class {class:#x}");
        match value.action {
            ACTION_TUNNEL => assert!(program.gateways.contains(&Ipv4Addr::from(value.egress))),
            ACTION_SKIP => assert_eq!((value.policy, value.egress), (0, [0; 4])),
            other => panic!("action {other}"),
        }
    }
    for gateway in known {
        assert!(program.gateways.contains(gateway));
    }
    assert_eq!(program.policies.len(), policies.len());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x0065_6772_6574),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn compiled_tries_decide_as_the_reference(
        policies in policies(),
        known in known_gateways(),
        extra in prop::collection::vec(random_address(), 4),
    ) {
        let program = compile(&policies, &known).expect("no collisions in a small universe");
        check_program(&program, &policies, &known);
        let (sources, destinations) = probe_addresses(&[&policies], &extra);
        for &s in &sources {
            for &d in &destinations {
                prop_assert_eq!(
                    program.decide(s, d),
                    reference(&policies, &known, s, d),
                    "{} -> {}", s, d
                );
            }
        }
    }

    #[test]
    fn plans_reach_the_desired_contents_without_wrong_decisions_in_between(
        old in policies(),
        edit in edit(),
        known in known_gateways(),
        extra in prop::collection::vec(random_address(), 4),
    ) {
        let new = edit.apply(&old);
        let from = compile(&old, &known).expect("compiles").contents();
        let to = compile(&new, &known).expect("compiles").contents();
        let (sources, destinations) = probe_addresses(&[&old, &new], &extra);
        let mut probes = Vec::new();
        for &s in &sources {
            for &d in &destinations {
                let before = from.decide(s, d);
                if before == to.decide(s, d) {
                    probes.push((s, d, before));
                }
            }
        }

        let steps = plan(&from, &to);
        let direct = steps.iter().all(|step| match step {
            Step::PutSource(_, class) => to.sources.values().any(|c| c == class),
            _ => true,
        });
        let mut state = from.clone();
        for (n, step) in steps.iter().enumerate() {
            state.apply(step);
            // The state before this step was right; only the probes under the changed entry
            // can have moved.
            let touched = |s: Ipv4Addr, d: Ipv4Addr| match *step {
                Step::PutSource(prefix, _) | Step::DeleteSource(prefix) => prefix.contains(s),
                Step::PutDestination(_, prefix, _) | Step::DeleteDestination(_, prefix) => {
                    prefix.contains(d)
                }
                Step::PutGateway(_) | Step::DeleteGateway(_) => false,
            };
            for &(s, d, decision) in probes.iter().filter(|&&(s, d, _)| touched(s, d)) {
                prop_assert_eq!(state.decide(s, d), decision, "{} -> {} after step {} {:?}", s, d, n, step);
            }
            // Sharper, without staging classes: a source only ever names its old or new class.
            if direct && let Step::PutSource(prefix, _) | Step::DeleteSource(prefix) = *step {
                for &s in sources.iter().filter(|&&s| prefix.contains(s)) {
                    let now = class_of(&state, s);
                    prop_assert!(
                        now == class_of(&from, s) || now == class_of(&to, s),
                        "{} in {:?} after step {} {:?}", s, now, n, step
                    );
                }
            }
        }
        prop_assert_eq!(&state, &to);
        prop_assert!(plan(&to, &to).is_empty());
    }
}

/// How the new policy set comes from the old one.
#[derive(Debug, Clone)]
enum Edit {
    /// An unrelated set.
    Replace(Vec<PolicySpec>),
    /// One policy takes some fields of another: bit 0 its sources, 1 its destinations, 2 its
    /// exclusions, 3 its egress IP.
    Change(Index, PolicySpec, u8),
    /// One policy goes.
    Remove(Index),
    /// A new one comes, at some age.
    Insert(Index, PolicySpec),
    /// One prefix of one policy gets longer or shorter (keeping its first address): field 0
    /// sources, 1 destinations, 2 exclusions.
    Resize(Index, u8, Index, i8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        policies().prop_map(Edit::Replace),
        (any::<Index>(), policy(), 1u8..16).prop_map(|(at, p, mask)| Edit::Change(at, p, mask)),
        any::<Index>().prop_map(Edit::Remove),
        (any::<Index>(), policy()).prop_map(|(at, p)| Edit::Insert(at, p)),
        (any::<Index>(), 0u8..3, any::<Index>(), -4i8..=4)
            .prop_map(|(at, field, which, by)| Edit::Resize(at, field, which, by)),
    ]
}

impl Edit {
    fn apply(self, old: &[PolicySpec]) -> Vec<PolicySpec> {
        let mut new = old.to_vec();
        match self {
            Edit::Replace(policies) => return policies,
            Edit::Change(_, policy, _) | Edit::Insert(_, policy) if new.is_empty() => {
                new.push(policy)
            }
            Edit::Change(at, policy, mask) => {
                let target = &mut new[at.index(old.len())];
                if mask & 1 != 0 {
                    target.sources = policy.sources;
                }
                if mask & 2 != 0 {
                    target.destinations = policy.destinations;
                }
                if mask & 4 != 0 {
                    target.excluded = policy.excluded;
                }
                if mask & 8 != 0 {
                    target.egress = policy.egress;
                }
            }
            Edit::Remove(at) => {
                if !new.is_empty() {
                    new.remove(at.index(old.len()));
                }
            }
            Edit::Insert(at, policy) => new.insert(at.index(old.len() + 1), policy),
            Edit::Resize(at, field, which, by) => {
                if let Some(target) = new.get_mut(at.index(old.len().max(1))) {
                    let prefixes = match field {
                        0 => &mut target.sources,
                        1 => &mut target.destinations,
                        _ => &mut target.excluded,
                    };
                    if !prefixes.is_empty() {
                        let which = which.index(prefixes.len());
                        let prefix = &mut prefixes[which];
                        let len = prefix.len().saturating_add_signed(by).min(32);
                        *prefix = Prefix::new(prefix.addr(), len);
                    }
                }
            }
        }
        new
    }
}

#[test]
fn ten_thousand_pods_in_a_thousand_policies() {
    let policies = fleet(1000, 10);
    let program = compile(&policies, &[]).expect("compiles");
    let with_third = (0..1000).filter(|i| i % 3 == 0).count();
    assert_eq!(program.sources.len(), 10_000);
    let classes: BTreeSet<u64> = program.sources.values().copied().collect();
    assert_eq!(classes.len(), 1000);
    // Per policy: a tunnel entry per destination and a skip entry for the exclusion.
    assert_eq!(program.destinations.len(), 1000 * 3 + with_third);
    assert_eq!(program.gateways.len(), 1000);
    for (i, status) in program.policies.iter().enumerate() {
        let destinations = if i % 3 == 0 { 3 } else { 2 };
        assert_eq!(
            status.state,
            PolicyState::Programmed {
                sources: 10,
                destinations
            }
        );
    }

    let steps = plan(&Contents::default(), &program.contents());
    assert_eq!(steps.len(), 10_000 + 1000 * 3 + with_third + 1000);
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for step in &steps {
        let kind = match step {
            Step::PutGateway(_) => "gateway",
            Step::PutDestination(..) => "destination",
            Step::PutSource(..) => "source",
            _ => "delete",
        };
        *kinds.entry(kind).or_default() += 1;
    }
    assert_eq!(kinds.get("delete"), None);
    assert_eq!(kinds["source"], 10_000);

    // One policy changes its destinations: only its class's entries change.
    let mut changed = policies.clone();
    changed[500].destinations = vec![Prefix::new(Ipv4Addr::new(203, 0, 113, 0), 24)];
    let next = compile(&changed, &[]).expect("compiles");
    let steps = plan(&program.contents(), &next.contents());
    let class = program.sources[&policies[500].sources[0]];
    let net = |a, b, c, len| Prefix::new(Ipv4Addr::new(a, b, c, 0), len);
    assert_eq!(
        steps,
        [
            Step::PutDestination(
                class,
                net(203, 0, 113, 24),
                next.destinations[&(class, net(203, 0, 113, 24))]
            ),
            Step::DeleteDestination(class, net(198, 18, 0, 15)),
            Step::DeleteDestination(class, net(192, 0, 2, 24)),
            Step::DeleteDestination(class, net(198, 18, 244, 24)),
        ]
    );
}
