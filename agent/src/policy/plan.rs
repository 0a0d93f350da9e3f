//! [`plan`]: the ordered map changes from what the maps hold to what they should hold, such
//! that a packet whose decision is the same before and after never sees another decision in
//! between (each step is one map update; the programs may look up between any two).
//!
//! # Order
//!
//! 1. put new gateways;
//! 2. put new and changed destination entries (so a new class is complete before any source
//!    names it);
//! 3. put new and changed source entries;
//! 4. delete stale source entries;
//! 5. delete stale destination entries;
//! 6. delete stale gateways.
//!
//! Unchanged entries produce no step. Within a trie (a class's destinations, or the sources),
//! puts go longest prefix first and deletes shortest prefix first. Then, for every address,
//! the longest matching entry during the puts is either the old one or the new one, never a
//! shorter new entry while a longer new one is still missing; and during the deletes either
//! the old longest match or the new one, never a shorter stale entry uncovered by deleting a
//! longer one first.
//!
//! # Classes whose entries change under moving sources
//!
//! Class ids name policy *sets*, so a class keeps its id when one of its policies changes its
//! destinations, and its entries are updated in place. Between steps 2 and 5 such a class
//! holds the new entries and the stale ones together. That is right for the sources that stay
//! in the class, but not for a source that leaves it (it must see the old entries until it
//! moves) or joins it (it must see no stale entry once it has moved). Example: a source moves
//! from `{P}` to `{Q}` while P gains the destination D and `{P}` keeps other sources; (source,
//! D) is left alone before and after, but between steps 2 and 3 it would go to P's gateway.
//!
//! Such a class X is *detoured*: the new entries are first written under a staging class id
//! (an id no class uses), the six steps run toward a state where X's sources name the staging
//! class and X keeps its old entries, then X is updated while no source names it, its sources
//! are put back, and the staging entries are deleted. Each of these phases follows the order
//! above and is safe on its own; their states decide exactly as the old or the new contents.
//!
//! The maps hold the old and the new entries together at the peak (plus the staging entries of
//! detoured classes), so they need room for both.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use egret_ebpf_common::node::{ACTION_TUNNEL, DestValue, FNV_BASIS, fnv1a};

use crate::prefix::Prefix;

/// What the node programs' maps hold (or should hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contents {
    /// `EGRET_SOURCES`: source prefix → class id.
    pub sources: BTreeMap<Prefix, u64>,
    /// `EGRET_DESTS`: (class id, destination prefix) → decision.
    pub destinations: BTreeMap<(u64, Prefix), DestValue>,
    /// `EGRET_GATEWAYS`.
    pub gateways: BTreeSet<Ipv4Addr>,
}

/// One map update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Insert a gateway address.
    PutGateway(Ipv4Addr),
    /// Insert or overwrite a destination entry: class id, prefix, value.
    PutDestination(u64, Prefix, DestValue),
    /// Insert or overwrite a source entry: prefix, class id.
    PutSource(Prefix, u64),
    /// Delete a source entry.
    DeleteSource(Prefix),
    /// Delete a destination entry: class id, prefix.
    DeleteDestination(u64, Prefix),
    /// Delete a gateway address.
    DeleteGateway(Ipv4Addr),
}

impl Contents {
    /// What the node programs decide for a packet from `src` to `dst` with these contents:
    /// the winning policy's id and egress IP, or `None` when the packet is left alone.
    pub fn decide(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<(u64, Ipv4Addr)> {
        lookup(&self.sources, &self.destinations, src, dst)
    }

    /// Carries out one step, as the map update would.
    pub fn apply(&mut self, step: &Step) {
        match *step {
            Step::PutGateway(ip) => {
                self.gateways.insert(ip);
            }
            Step::PutDestination(class, prefix, value) => {
                self.destinations.insert((class, prefix), value);
            }
            Step::PutSource(prefix, class) => {
                self.sources.insert(prefix, class);
            }
            Step::DeleteSource(prefix) => {
                self.sources.remove(&prefix);
            }
            Step::DeleteDestination(class, prefix) => {
                self.destinations.remove(&(class, prefix));
            }
            Step::DeleteGateway(ip) => {
                self.gateways.remove(&ip);
            }
        }
    }
}

/// The node programs' lookups: the source's longest match gives the class, then the longest
/// match of (class, destination) gives the decision; only a tunnel entry selects the packet.
pub(super) fn lookup(
    sources: &BTreeMap<Prefix, u64>,
    destinations: &BTreeMap<(u64, Prefix), DestValue>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Option<(u64, Ipv4Addr)> {
    let class = (0..=32u8)
        .rev()
        .find_map(|len| sources.get(&Prefix::new(src, len)))?;
    let value = (0..=32u8)
        .rev()
        .find_map(|len| destinations.get(&(*class, Prefix::new(dst, len))))?;
    (value.action == ACTION_TUNNEL).then(|| (value.policy, Ipv4Addr::from(value.egress)))
}

/// The steps that take the maps from `current` to `desired`, in an order that never shows a
/// packet whose decision is the same in both another decision in between (see the module
/// documentation).
pub fn plan(current: &Contents, desired: &Contents) -> Vec<Step> {
    let detours = detours(current, desired);
    if detours.is_empty() {
        let mut steps = Vec::new();
        direct(current, desired, &mut steps);
        return steps;
    }

    // The states between the phases; `current` to `staged` and `staged` to `desired` each
    // keep every gateway of both.
    let mut gateways = current.gateways.clone();
    gateways.extend(desired.gateways.iter().copied());
    let staging_entries = |contents: &mut Contents| {
        for (&(class, prefix), &value) in &desired.destinations {
            if let Some(&staging) = detours.get(&class) {
                contents.destinations.insert((staging, prefix), value);
            }
        }
    };
    // The new classes, the detoured ones built under their staging ids.
    let mut built = current.clone();
    built.gateways.clone_from(&gateways);
    staging_entries(&mut built);
    // Everything as desired, except that the detoured classes keep their old entries and
    // their sources name the staging classes.
    let mut staged = Contents {
        sources: desired.sources.clone(),
        destinations: desired.destinations.clone(),
        gateways,
    };
    for class in staged.sources.values_mut() {
        if let Some(&staging) = detours.get(class) {
            *class = staging;
        }
    }
    for &class in detours.keys() {
        let (old, new) = (class_range(current, class), class_range(desired, class));
        for (key, _) in new {
            staged.destinations.remove(key);
        }
        staged.destinations.extend(old.map(|(&k, &v)| (k, v)));
    }
    staging_entries(&mut staged);
    // The detoured classes updated while no source names them.
    let mut updated = staged.clone();
    updated
        .destinations
        .retain(|&(class, _), _| !detours.contains_key(&class));
    updated.destinations.extend(
        desired
            .destinations
            .iter()
            .filter(|((class, _), _)| detours.contains_key(class)),
    );
    // Their sources back.
    let mut restored = updated.clone();
    restored.sources.clone_from(&desired.sources);

    let mut steps = Vec::new();
    direct(current, &built, &mut steps);
    direct(&built, &staged, &mut steps);
    direct(&staged, &updated, &mut steps);
    direct(&updated, &restored, &mut steps);
    direct(&restored, desired, &mut steps);
    steps
}

/// The entries of `class` in `contents`.
fn class_range(
    contents: &Contents,
    class: u64,
) -> impl Iterator<Item = (&(u64, Prefix), &DestValue)> {
    contents
        .destinations
        .range((class, Prefix::ANY)..)
        .take_while(move |((c, _), _)| *c == class)
}

/// The six phases of the module documentation, from `current` to `desired`, onto `steps`.
fn direct(current: &Contents, desired: &Contents, steps: &mut Vec<Step>) {
    steps.extend(
        desired
            .gateways
            .difference(&current.gateways)
            .map(|&ip| Step::PutGateway(ip)),
    );

    let mut puts: Vec<_> = desired
        .destinations
        .iter()
        .filter(|(key, value)| current.destinations.get(key) != Some(value))
        .map(|(&(class, prefix), &value)| (class, prefix, value))
        .collect();
    puts.sort_by_key(|&(class, prefix, _)| (class, Reverse(prefix.len()), prefix));
    steps.extend(
        puts.into_iter()
            .map(|(c, p, v)| Step::PutDestination(c, p, v)),
    );

    let mut puts: Vec<_> = desired
        .sources
        .iter()
        .filter(|(prefix, class)| current.sources.get(prefix) != Some(class))
        .map(|(&prefix, &class)| (prefix, class))
        .collect();
    puts.sort_by_key(|&(prefix, _)| (Reverse(prefix.len()), prefix));
    steps.extend(puts.into_iter().map(|(p, c)| Step::PutSource(p, c)));

    let mut deletes: Vec<Prefix> = current
        .sources
        .keys()
        .filter(|prefix| !desired.sources.contains_key(prefix))
        .copied()
        .collect();
    deletes.sort_by_key(|&prefix| (prefix.len(), prefix));
    steps.extend(deletes.into_iter().map(Step::DeleteSource));

    let mut deletes: Vec<(u64, Prefix)> = current
        .destinations
        .keys()
        .filter(|key| !desired.destinations.contains_key(key))
        .copied()
        .collect();
    deletes.sort_by_key(|&(class, prefix)| (class, prefix.len(), prefix));
    steps.extend(
        deletes
            .into_iter()
            .map(|(c, p)| Step::DeleteDestination(c, p)),
    );

    steps.extend(
        current
            .gateways
            .difference(&desired.gateways)
            .map(|&ip| Step::DeleteGateway(ip)),
    );
}

/// The classes that must be detoured, each with its staging id: those with new or changed
/// entries that some address leaves, and those with stale entries that some address joins.
fn detours(current: &Contents, desired: &Contents) -> BTreeMap<u64, u64> {
    let mut puts = BTreeSet::new();
    for (key, value) in &desired.destinations {
        if current.destinations.get(key) != Some(value) {
            puts.insert(key.0);
        }
    }
    let mut stale = BTreeSet::new();
    for key in current.destinations.keys() {
        if !desired.destinations.contains_key(key) {
            stale.insert(key.0);
        }
    }
    if puts.is_empty() && stale.is_empty() {
        return BTreeMap::new();
    }

    // Sweep both source partitions together; wherever the class differs, addresses leave one
    // class and join the other.
    let (old, new) = (runs(&current.sources), runs(&desired.sources));
    let mut detoured = BTreeSet::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() && j < new.len() {
        let (left, joined) = (old[i].1, new[j].1);
        if left != joined {
            if let Some(class) = left
                && puts.contains(&class)
            {
                detoured.insert(class);
            }
            if let Some(class) = joined
                && stale.contains(&class)
            {
                detoured.insert(class);
            }
        }
        // Step past whichever run ends first (both when they end together).
        let end_old = old.get(i + 1).map_or(1 << 32, |r| r.0);
        let end_new = new.get(j + 1).map_or(1 << 32, |r| r.0);
        if end_old <= end_new {
            i += 1;
        }
        if end_new <= end_old {
            j += 1;
        }
    }
    if detoured.is_empty() {
        return BTreeMap::new();
    }

    let mut used: BTreeSet<u64> = current.sources.values().copied().collect();
    used.extend(desired.sources.values().copied());
    used.extend(current.destinations.keys().map(|&(class, _)| class));
    used.extend(desired.destinations.keys().map(|&(class, _)| class));
    let mut staging = fnv1a(b"staging", FNV_BASIS);
    detoured
        .into_iter()
        .map(|class| {
            staging = fnv1a(&class.to_be_bytes(), staging);
            while staging == 0 || !used.insert(staging) {
                staging = fnv1a(&staging.to_be_bytes(), staging);
            }
            (class, staging)
        })
        .collect()
}

/// The source trie as a partition of the address space: runs of (first address, class or
/// none), in address order, each lasting up to the next one's first address.
fn runs(sources: &BTreeMap<Prefix, u64>) -> Vec<(u64, Option<u64>)> {
    fn start(runs: &mut Vec<(u64, Option<u64>)>, at: u64, class: Option<u64>) {
        match runs.last_mut() {
            Some(last) if last.0 == at => last.1 = class,
            _ => runs.push((at, class)),
        }
    }
    let mut runs = vec![(0, None)];
    // The entries covering the current one: (end, class). Keys come in tree pre-order.
    let mut stack: Vec<(u64, u64)> = Vec::new();
    for (&prefix, &class) in sources {
        let first = u64::from(prefix.addr().to_bits());
        while let Some(&(end, _)) = stack.last() {
            if end > first {
                break;
            }
            stack.pop();
            start(&mut runs, end, stack.last().map(|&(_, c)| c));
        }
        start(&mut runs, first, Some(class));
        stack.push((first + (1 << (32 - u32::from(prefix.len()))), class));
    }
    while let Some((end, _)) = stack.pop() {
        if end < 1 << 32 {
            start(&mut runs, end, stack.last().map(|&(_, c)| c));
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use egret_ebpf_common::node::ACTION_SKIP;

    use super::*;
    use crate::policy::{PolicySpec, compile};

    fn p(text: &str) -> Prefix {
        text.parse().expect("valid prefix")
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("valid address")
    }

    fn tunnel(policy: u64, egress: [u8; 4]) -> DestValue {
        DestValue {
            policy,
            egress,
            action: ACTION_TUNNEL,
        }
    }

    const SKIP: DestValue = DestValue {
        policy: 0,
        egress: [0; 4],
        action: ACTION_SKIP,
    };

    /// Applies `steps` to `from`, checking every intermediate state on `probes` whose
    /// decision `from` and `to` share; returns the final state.
    fn apply_checked(
        from: &Contents,
        to: &Contents,
        steps: &[Step],
        probes: &[(Ipv4Addr, Ipv4Addr)],
    ) -> Contents {
        let mut state = from.clone();
        for (n, step) in steps.iter().enumerate() {
            state.apply(step);
            for &(s, d) in probes {
                let before = from.decide(s, d);
                if before == to.decide(s, d) {
                    assert_eq!(
                        state.decide(s, d),
                        before,
                        "{s} -> {d} after step {n} {step:?}"
                    );
                }
            }
        }
        state
    }

    #[test]
    fn runs_partition_the_address_space() {
        let sources = BTreeMap::from([
            (p("0.0.0.0/1"), 1),
            (p("10.0.0.0/8"), 2),
            (p("10.1.0.0/16"), 3),
            (p("10.255.0.0/16"), 4),
            (p("255.255.255.255/32"), 5),
        ]);
        assert_eq!(
            runs(&sources),
            [
                (0, Some(1)),
                (0x0a00_0000, Some(2)),
                (0x0a01_0000, Some(3)),
                (0x0a02_0000, Some(2)),
                (0x0aff_0000, Some(4)),
                (0x0b00_0000, Some(1)),
                (0x8000_0000, None),
                (0xffff_ffff, Some(5)),
            ]
        );
        assert_eq!(runs(&BTreeMap::from([(Prefix::ANY, 7)])), [(0, Some(7))]);
        assert_eq!(runs(&BTreeMap::new()), [(0, None)]);
    }

    #[test]
    fn steps_come_in_phase_order_and_unchanged_entries_make_none() {
        let current = Contents {
            sources: BTreeMap::from([
                (p("10.0.0.1/32"), 1),
                (p("10.0.0.2/32"), 1),
                (p("10.0.0.0/24"), 1),
            ]),
            destinations: BTreeMap::from([
                ((1, p("8.0.0.0/8")), tunnel(11, [192, 0, 2, 1])),
                ((1, p("8.8.0.0/16")), SKIP),
                ((1, p("8.8.8.0/24")), tunnel(11, [192, 0, 2, 1])),
            ]),
            gateways: BTreeSet::from([ip("192.0.2.1"), ip("192.0.2.9")]),
        };
        let desired = Contents {
            sources: BTreeMap::from([
                (p("10.0.0.1/32"), 1),
                (p("10.0.0.2/32"), 2),
                (p("10.0.1.0/24"), 2),
            ]),
            destinations: BTreeMap::from([
                ((1, p("8.0.0.0/8")), tunnel(11, [192, 0, 2, 1])),
                ((2, p("8.0.0.0/8")), tunnel(12, [192, 0, 2, 2])),
                ((2, p("8.8.8.0/24")), SKIP),
            ]),
            gateways: BTreeSet::from([ip("192.0.2.1"), ip("192.0.2.2")]),
        };
        let steps = plan(&current, &desired);
        assert_eq!(
            steps,
            [
                Step::PutGateway(ip("192.0.2.2")),
                Step::PutDestination(2, p("8.8.8.0/24"), SKIP),
                Step::PutDestination(2, p("8.0.0.0/8"), tunnel(12, [192, 0, 2, 2])),
                Step::PutSource(p("10.0.0.2/32"), 2),
                Step::PutSource(p("10.0.1.0/24"), 2),
                Step::DeleteSource(p("10.0.0.0/24")),
                Step::DeleteDestination(1, p("8.8.0.0/16")),
                Step::DeleteDestination(1, p("8.8.8.0/24")),
                Step::DeleteGateway(ip("192.0.2.9")),
            ]
        );
        let probes: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.1.1"]
            .iter()
            .flat_map(|s| ["8.1.1.1", "8.8.1.1", "8.8.8.8"].map(|d| (ip(s), ip(d))))
            .collect();
        assert_eq!(apply_checked(&current, &desired, &steps, &probes), desired);
        assert!(plan(&desired, &desired).is_empty());
    }

    #[test]
    fn puts_go_longest_first_and_deletes_shortest_first() {
        // The /8 changes hands and a /16 inside keeps the old winner: putting the /8 first
        // would send 8.8.x.x to policy 12 for a moment.
        let current = Contents {
            sources: BTreeMap::from([(p("10.0.0.0/24"), 1)]),
            destinations: BTreeMap::from([
                ((1, p("8.0.0.0/8")), tunnel(11, [192, 0, 2, 1])),
                ((1, p("9.0.0.0/8")), tunnel(11, [192, 0, 2, 1])),
                ((1, p("9.9.0.0/16")), SKIP),
                ((1, p("9.9.9.0/24")), tunnel(11, [192, 0, 2, 1])),
            ]),
            gateways: BTreeSet::new(),
        };
        let desired = Contents {
            sources: current.sources.clone(),
            destinations: BTreeMap::from([
                ((1, p("8.0.0.0/8")), tunnel(12, [192, 0, 2, 2])),
                ((1, p("8.8.0.0/16")), tunnel(11, [192, 0, 2, 1])),
                ((1, p("9.0.0.0/8")), tunnel(11, [192, 0, 2, 1])),
            ]),
            gateways: BTreeSet::new(),
        };
        let steps = plan(&current, &desired);
        assert_eq!(
            steps[0],
            Step::PutDestination(1, p("8.8.0.0/16"), tunnel(11, [192, 0, 2, 1]))
        );
        assert_eq!(steps[2], Step::DeleteDestination(1, p("9.9.0.0/16")));
        let probes = [
            (ip("10.0.0.1"), ip("8.8.8.8")),
            (ip("10.0.0.1"), ip("9.9.9.9")),
        ];
        assert_eq!(apply_checked(&current, &desired, &steps, &probes), desired);
    }

    #[test]
    fn source_puts_go_longest_first_and_deletes_shortest_first() {
        // Q narrows its sources from the /24 to a /28 inside: the /24 now names {P} and the
        // /28 {P, Q}. Putting the /24 first would hand the /28 to {P} for a moment.
        let spec = |name: &str, source: &str, destination: &str, egress: [u8; 4]| PolicySpec {
            name: name.into(),
            sources: vec![p(source)],
            destinations: vec![p(destination)],
            excluded: vec![],
            egress: Ipv4Addr::from(egress),
        };
        let wide = [
            spec("p", "10.0.0.0/24", "8.0.0.0/8", [192, 0, 2, 1]),
            spec("q", "10.0.0.0/24", "8.8.8.0/24", [192, 0, 2, 2]),
        ];
        let mut narrow = wide.clone();
        narrow[1].sources = vec![p("10.0.0.16/28")];
        let wide = compile(&wide, &[]).expect("compiles").contents();
        let narrow = compile(&narrow, &[]).expect("compiles").contents();
        let probes = [
            (ip("10.0.0.17"), ip("8.8.8.8")),
            (ip("10.0.0.1"), ip("8.1.1.1")),
        ];
        for (from, to) in [(&wide, &narrow), (&narrow, &wide)] {
            let steps = plan(from, to);
            assert_eq!(apply_checked(from, to, &steps, &probes), *to);
        }
        let steps = plan(&wide, &narrow);
        assert!(
            matches!(steps[..], [Step::PutDestination(..), Step::PutSource(a, _), Step::PutSource(b, _)]
            if a == p("10.0.0.16/28") && b == p("10.0.0.0/24")),
            "{steps:?}"
        );
        let steps = plan(&narrow, &wide);
        assert!(
            matches!(steps[..], [Step::PutSource(a, _), Step::DeleteSource(b), Step::DeleteDestination(..)]
            if a == p("10.0.0.0/24") && b == p("10.0.0.16/28")),
            "{steps:?}"
        );
    }

    #[test]
    fn a_class_changing_under_a_moving_source_is_detoured() {
        // Source .1 moves from class 1 ({P}) to class 2 ({Q}); .2 stays in class 1 while P
        // gains 1.1.1.0/24. (.1, 1.1.1.1) is left alone before and after.
        let p_old = tunnel(11, [192, 0, 2, 1]);
        let q = tunnel(12, [192, 0, 2, 2]);
        let current = Contents {
            sources: BTreeMap::from([
                (p("10.0.0.1/32"), 1),
                (p("10.0.0.2/32"), 1),
                (p("10.0.0.3/32"), 2),
            ]),
            destinations: BTreeMap::from([
                ((1, p("8.8.8.0/24")), p_old),
                ((2, p("8.8.8.0/24")), q),
            ]),
            gateways: BTreeSet::new(),
        };
        let desired = Contents {
            sources: BTreeMap::from([
                (p("10.0.0.1/32"), 2),
                (p("10.0.0.2/32"), 1),
                (p("10.0.0.3/32"), 2),
            ]),
            destinations: BTreeMap::from([
                ((1, p("1.1.1.0/24")), p_old),
                ((1, p("8.8.8.0/24")), p_old),
                ((2, p("8.8.8.0/24")), q),
            ]),
            gateways: BTreeSet::new(),
        };
        let probes: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .flat_map(|s| ["1.1.1.1", "8.8.8.8"].map(|d| (ip(s), ip(d))))
            .collect();

        // The plain six phases show the hazard.
        let mut naive = Vec::new();
        direct(&current, &desired, &mut naive);
        let mut state = current.clone();
        state.apply(&naive[0]);
        assert_eq!(naive[0], Step::PutDestination(1, p("1.1.1.0/24"), p_old));
        assert_eq!(
            state.decide(ip("10.0.0.1"), ip("1.1.1.1")),
            Some((11, ip("192.0.2.1")))
        );

        let detours = detours(&current, &desired);
        assert_eq!(detours.keys().copied().collect::<Vec<_>>(), [1]);
        let steps = plan(&current, &desired);
        assert_eq!(apply_checked(&current, &desired, &steps, &probes), desired);
        let staging = detours[&1];
        assert!(steps.contains(&Step::PutSource(p("10.0.0.2/32"), staging)));
        assert_eq!(
            steps.last(),
            Some(&Step::DeleteDestination(staging, p("8.8.8.0/24")))
        );
    }
}
