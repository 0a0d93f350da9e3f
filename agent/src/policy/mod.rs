//! The policy core: egress policies in, the node programs' map contents out ([`compile`]), and
//! the ordered map changes from what the maps hold to what they should hold ([`plan`]). Pure:
//! no I/O, no clock, no randomness.
//!
//! # Semantics
//!
//! Policies come as a slice in age order (index 0 is the oldest), with the gateways' floating
//! IPs (`known_gateways`; empty means "not checked").
//!
//! - **Admission**, in age order: a policy whose name an older policy already has is rejected
//!   ([`Rejection::DuplicateName`]); one whose egress IP is not in a non-empty
//!   `known_gateways` is rejected ([`Rejection::UnknownEgressIp`]); one whose egress IP an
//!   older *admitted* policy already uses is rejected ([`Rejection::EgressIpConflict`]: the
//!   older wins). Rejected policies are not programmed at all.
//! - **Selection**: policy P selects a packet from S to D iff S is in one of P's sources, D is
//!   in one of P's destinations and D is in none of P's excluded prefixes (set semantics:
//!   destinations minus excluded, whatever the prefix lengths).
//! - **Choice**: among the admitted policies selecting (S, D), the one whose longest
//!   destination prefix containing D is longest wins; a tie goes to the older policy. The
//!   packet is tunnelled to the winner's egress IP; if no policy selects it, it is left alone.
//!
//! [`reference_decision`] states these rules by brute force; the tests hold [`compile`]'s
//! output to it.
//!
//! # Compilation
//!
//! The node programs look the source up in an LPM trie that yields a *class* (the set of
//! policies selecting that source), then `(class, destination)` in a second LPM trie whose
//! entries are already resolved (see `egret_ebpf_common::node`). [`compile`] fills both:
//!
//! - Every source prefix of an admitted policy is a *source boundary*. The addresses under a
//!   boundary Y and under no longer boundary inside Y are selected by exactly the policies
//!   with a source prefix covering Y: Y's class. A class is named by
//!   `class_id(sorted policy ids)`, so a class whose policy set does not change keeps its id.
//! - For each class in use, every destination and excluded prefix of its policies is a
//!   *destination boundary*; the decision is constant over the addresses under a boundary X
//!   and under no longer boundary inside X, and follows from the prefixes covering X alone.
//!
//! Both are stack walks over sorted prefixes (a pre-order of the prefix tree), so the work is
//! O(n log n) in the source prefixes plus, per class, in its destination prefixes.
//!
//! Invariants of a [`Program`]:
//! - the two tries, looked up as the programs do ([`Program::decide`]), give exactly the
//!   decisions of the semantics above, for every source and destination;
//! - no entry is redundant in the tree order: an entry differs from what the nearest covering
//!   entry would give (no entry at all counts as "not selected"), and no entry is emitted for
//!   a boundary whose own region is empty (fully covered by longer boundaries);
//! - every destination entry's class is the value of some source entry;
//! - ids never collide: two policy names with one policy id, or two policy sets with one class
//!   id, are a [`CompileError`], never wrong entries;
//! - the entry counts fit the maps (`MAX_SOURCES`, `MAX_DESTINATIONS`, `MAX_GATEWAYS`).

mod compile;
mod plan;
mod reference;

#[doc(hidden)]
pub mod fixtures;
#[cfg(test)]
mod properties;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use egret_ebpf_common::node::DestValue;

use crate::prefix::Prefix;

pub use compile::compile;
pub use plan::{Contents, Step, plan};
pub use reference::reference_decision;

/// An egress policy as the policy core takes it (the config module converts to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySpec {
    /// Unique among the policies; hashed into the policy id.
    pub name: String,
    /// The pods (or other sources) whose packets the policy may select.
    pub sources: Vec<Prefix>,
    /// Where those packets must go to be selected.
    pub destinations: Vec<Prefix>,
    /// Destinations taken out of `destinations`, whatever their lengths.
    pub excluded: Vec<Prefix>,
    /// The gateway's floating IP the selected packets are tunnelled to.
    pub egress: Ipv4Addr,
}

/// What [`compile`] made of the policies: the contents of the node programs' maps, and the
/// status of every policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Program {
    /// `EGRET_SOURCES`: source prefix → class id.
    pub sources: BTreeMap<Prefix, u64>,
    /// `EGRET_DESTS`: (class id, destination prefix) → decision.
    pub destinations: BTreeMap<(u64, Prefix), DestValue>,
    /// `EGRET_GATEWAYS`: the egress IPs of the admitted policies that tunnel anything, plus
    /// every known gateway.
    pub gateways: BTreeSet<Ipv4Addr>,
    /// One status per input policy, in input order.
    pub policies: Vec<PolicyStatus>,
}

impl Program {
    /// What the node programs decide for a packet from `src` to `dst`, looking the two tries
    /// up as they do: the winning policy's id and its egress IP, or `None` when the packet is
    /// left alone.
    pub fn decide(&self, src: Ipv4Addr, dst: Ipv4Addr) -> Option<(u64, Ipv4Addr)> {
        plan::lookup(&self.sources, &self.destinations, src, dst)
    }

    /// The map contents, as [`plan`] takes them.
    pub fn contents(&self) -> Contents {
        Contents {
            sources: self.sources.clone(),
            destinations: self.destinations.clone(),
            gateways: self.gateways.clone(),
        }
    }
}

/// The outcome of one policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// The policy's name.
    pub name: String,
    /// Its id (`policy_id(name)`), as in the destination entries and the per-policy counters.
    pub id: u64,
    /// Its egress IP.
    pub egress: Ipv4Addr,
    /// Programmed or rejected.
    pub state: PolicyState,
}

/// Whether a policy made it into the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyState {
    /// Admitted.
    Programmed {
        /// Source entries whose class includes the policy.
        sources: usize,
        /// Tunnel destination entries the policy won.
        destinations: usize,
    },
    /// Not admitted, and so not programmed.
    Rejected(Rejection),
}

/// Why a policy was not admitted. Not an error of the agent: an outcome to report.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// An older policy has the same name.
    DuplicateName,
    /// The egress IP is not one of the known gateway addresses.
    UnknownEgressIp,
    /// An older admitted policy already uses the egress IP.
    EgressIpConflict {
        /// That policy's name.
        older: String,
    },
}

impl Rejection {
    /// Stable `snake_case` name, for status output and metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::DuplicateName => "duplicate_name",
            Rejection::UnknownEgressIp => "unknown_egress_ip",
            Rejection::EgressIpConflict { .. } => "egress_ip_conflict",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::DuplicateName => f.write_str("an older policy has the same name"),
            Rejection::UnknownEgressIp => {
                f.write_str("the egress IP is not a known gateway address")
            }
            Rejection::EgressIpConflict { older } => {
                write!(
                    f,
                    "the egress IP is already used by the older policy {older}"
                )
            }
        }
    }
}

/// Why no program could be compiled. The maps must then be left as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// Two policy names hash to one policy id.
    #[error("policies {first} and {second} have the same id {id:#018x}; rename one")]
    PolicyIdCollision {
        /// The older policy.
        first: String,
        /// The newer policy.
        second: String,
        /// The id.
        id: u64,
    },
    /// Two different policy sets hash to one class id.
    #[error("policy sets [{}] and [{}] have the same class id {id:#018x}; rename a policy",
        first.join(", "), second.join(", "))]
    ClassIdCollision {
        /// The id.
        id: u64,
        /// The policies of one set.
        first: Vec<String>,
        /// The policies of the other.
        second: Vec<String>,
    },
    /// More entries than a map holds.
    #[error("{entries} entries for {map}, which holds {max}")]
    TooManyEntries {
        /// The map's name.
        map: &'static str,
        /// Entries needed.
        entries: usize,
        /// The map's capacity.
        max: u32,
    },
}

impl CompileError {
    /// Stable `snake_case` name, for status output and metric labels.
    pub fn label(&self) -> &'static str {
        match self {
            CompileError::PolicyIdCollision { .. } => "policy_id_collision",
            CompileError::ClassIdCollision { .. } => "class_id_collision",
            CompileError::TooManyEntries { .. } => "too_many_entries",
        }
    }
}
