//! The node data path: map keys and values shared by the node programs and egret-agent.
//!
//! How a selected packet moves on a node:
//!
//! 1. `egret_node_classify` (TC ingress of every pod interface) looks the packet's source up
//!    in [`SOURCES_MAP`], an LPM trie of pod addresses and prefixes that yields a *class*: the
//!    set of policies selecting that source, named by a 64-bit id. It then looks
//!    `(class, destination)` up in [`DESTINATIONS_MAP`], a second LPM trie whose entries the
//!    agent has already resolved (longest destination prefix, then the older policy, minus
//!    excluded CIDRs). A [`ACTION_TUNNEL`] answer sets the [`NodeConfig::mark`] bits on the
//!    packet and nothing else: the packet continues into the node's stack.
//! 2. Policy routing sends marked packets to the agent's collect-metadata VXLAN device, so
//!    the node's forward filtering (a CNI's NetworkPolicy) runs before the tunnel.
//! 3. `egret_tunnel_out` (TC egress of that device) repeats the lookup, sets the tunnel key
//!    (remote = the policy's egress IP, VNI), clamps the MSS of SYNs, and counts the packet
//!    for its policy in [`POLICY_STATS_MAP`].
//! 4. `egret_tunnel_in` (TC ingress of that device) accepts decapsulated replies only from a
//!    known gateway address ([`GATEWAYS_MAP`]) with the right VNI, and clamps SYN-ACKs.
//!
//! Addresses are kept as on the wire (network byte order, as bytes). Every type is
//! `#[repr(C)]` without padding (checked below).

use core::mem::size_of;

/// TC program for the ingress of pod interfaces: classify and mark.
pub const CLASSIFY_PROGRAM: &str = "egret_node_classify";
/// TC program for the egress of the tunnel device: tunnel key, MSS clamp, policy counters.
pub const TUNNEL_OUT_PROGRAM: &str = "egret_tunnel_out";
/// TC program for the ingress of the tunnel device: source and VNI check, MSS clamp.
pub const TUNNEL_IN_PROGRAM: &str = "egret_tunnel_in";

/// LPM trie: key `Key<[u8; 4]>` (prefix length, source address) → [`SourceValue`].
pub const SOURCES_MAP: &str = "EGRET_SOURCES";
/// LPM trie: key `Key<DestKey>` (prefix length = [`CLASS_BITS`] + destination prefix
/// length) → [`DestValue`].
pub const DESTINATIONS_MAP: &str = "EGRET_DESTS";
/// Hash map: gateway (egress) address → `u32` (1). Tunnel packets from other outer sources
/// are dropped at the tunnel device's ingress.
pub const GATEWAYS_MAP: &str = "EGRET_GATEWAYS";
/// Per-CPU hash map: policy id ([`policy_id`]) → [`PolicyStats`].
pub const POLICY_STATS_MAP: &str = "EGRET_POL_STATS";
/// Single-entry array holding the [`NodeConfig`].
pub const NODE_CONFIG_MAP: &str = "EGRET_NODE_CFG";
/// Per-CPU single-entry array holding the [`NodeStats`].
pub const NODE_STATS_MAP: &str = "EGRET_NODE_STATS";

/// Every map the agent pins, so that they outlive an agent restart.
pub const PINNED_MAPS: [&str; 6] = [
    SOURCES_MAP,
    DESTINATIONS_MAP,
    GATEWAYS_MAP,
    POLICY_STATS_MAP,
    NODE_CONFIG_MAP,
    NODE_STATS_MAP,
];

/// Entries of [`SOURCES_MAP`] at most.
pub const MAX_SOURCES: u32 = 65_536;
/// Entries of [`DESTINATIONS_MAP`] at most.
pub const MAX_DESTINATIONS: u32 = 262_144;
/// Policies counted at most ([`POLICY_STATS_MAP`]).
pub const MAX_POLICIES: u32 = 4096;
/// Gateway addresses at most ([`GATEWAYS_MAP`]).
pub const MAX_GATEWAYS: u32 = 1024;

/// Bits of a [`DestKey`] taken by the class id: an LPM entry's prefix length is this plus the
/// destination prefix length, so the class always matches in full.
pub const CLASS_BITS: u32 = 64;

/// [`DestValue::action`]: tunnel to [`DestValue::egress`].
pub const ACTION_TUNNEL: u32 = 1;
/// [`DestValue::action`]: leave the packet alone (an excluded CIDR, or a more specific prefix
/// where no policy of the class applies).
pub const ACTION_SKIP: u32 = 2;

/// A source entry's value: the class of the matching sources.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceValue {
    /// The class id ([`class_id`]).
    pub class: u64,
}

/// The data of a destination entry's LPM key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestKey {
    /// The class id, big-endian, matched in full.
    pub class: [u8; 8],
    /// The destination address (or prefix, zero-padded), network byte order.
    pub addr: [u8; 4],
}

impl DestKey {
    /// The key of `class` and `addr`.
    pub const fn new(class: u64, addr: [u8; 4]) -> Self {
        Self {
            class: class.to_be_bytes(),
            addr,
        }
    }
}

/// A destination entry's value: what to do with the packets of one class toward one prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DestValue {
    /// The winning policy's id ([`policy_id`]); 0 for [`ACTION_SKIP`].
    pub policy: u64,
    /// The policy's egress IP: the tunnel's remote end. Zero for [`ACTION_SKIP`].
    pub egress: [u8; 4],
    /// [`ACTION_TUNNEL`] or [`ACTION_SKIP`].
    pub action: u32,
}

/// Per-policy counters of what the tunnel device sent: after the node's filtering, so a
/// packet that the node dropped is never counted here.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyStats {
    /// Packets on the wire (the segments of a super-packet count one each).
    pub packets: u64,
    /// Bytes of the inner IPv4 packets.
    pub bytes: u64,
}

/// The node programs' settings, written by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeConfig {
    /// Bits set on a selected packet's `skb->mark`; policy routing matches `mark/mark`.
    pub mark: u32,
    /// `[tunnel].vni`.
    pub vni: u32,
    /// The largest TCP MSS that fits the tunnel: the tunnel device's MTU − 40.
    pub mss: u16,
    /// TTL of the outer IPv4 header.
    pub ttl: u8,
    /// [`FLAG_CHECK_GATEWAYS`] and future switches.
    pub flags: u8,
}

/// [`NodeConfig::flags`]: drop tunnel packets whose outer source is not in [`GATEWAYS_MAP`].
pub const FLAG_CHECK_GATEWAYS: u8 = 1;

/// The counters of the node programs, by [`NodeCounter`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeStats {
    /// Indexed by `NodeCounter as usize`.
    pub counters: [u64; NodeCounter::COUNT],
}

impl Default for NodeStats {
    fn default() -> Self {
        Self {
            counters: [0; NodeCounter::COUNT],
        }
    }
}

impl NodeStats {
    /// Adds `n` to `counter`, wrapping.
    #[inline(always)]
    pub fn add(&mut self, counter: NodeCounter, n: u64) {
        let slot = &mut self.counters[counter as usize];
        *slot = slot.wrapping_add(n);
    }

    /// The value of `counter`.
    pub const fn get(&self, counter: NodeCounter) -> u64 {
        self.counters[counter as usize]
    }
}

impl core::ops::AddAssign for NodeStats {
    fn add_assign(&mut self, other: Self) {
        for (mine, theirs) in self.counters.iter_mut().zip(other.counters) {
            *mine = mine.wrapping_add(theirs);
        }
    }
}

impl core::iter::Sum for NodeStats {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |mut total, cpu| {
            total += cpu;
            total
        })
    }
}

/// One counter of [`NodeStats`]. The `Drop*` ones are drops, each a reason; the `Error*` ones
/// are packets passed on untouched because they could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum NodeCounter {
    /// IPv4 packets the classifier looked at.
    ClassifyPackets,
    /// Of those, packets marked for the tunnel.
    ClassifySelected,
    /// Of those, packets from a selected source toward an excluded (or unselected) place.
    ClassifySkipped,
    /// Frames of another EtherType seen by the classifier.
    ClassifyNotIpv4,
    /// Packets the tunnel device sent (super-packets count their segments).
    TunnelOutPackets,
    /// Bytes of the inner packets the tunnel device sent.
    TunnelOutBytes,
    /// Packets the tunnel device received from a gateway.
    TunnelInPackets,
    /// Bytes of those packets.
    TunnelInBytes,
    /// SYNs and SYN-ACKs whose MSS was lowered.
    MssClamped,
    /// Dropped at the tunnel's egress: no policy selects the packet (any more).
    DropNoPolicy,
    /// Dropped at the tunnel's egress: not IPv4.
    DropNotIpv4,
    /// Dropped at the tunnel's egress: the kernel refused the tunnel key.
    DropTunnelKey,
    /// Dropped at the tunnel's ingress: no tunnel metadata.
    DropNoTunnelInfo,
    /// Dropped at the tunnel's ingress: another VNI.
    DropWrongVni,
    /// Dropped at the tunnel's ingress: an outer source that is no gateway.
    DropUnknownGateway,
    /// Rewriting the MSS option failed; the packet was passed on unchanged.
    ErrorMssRewrite,
    /// A frame too short for its Ethernet header.
    ErrorTruncatedEthernet,
    /// An IPv4 header cut short.
    ErrorTruncatedIpv4,
    /// A version other than 4 behind the IPv4 EtherType.
    ErrorBadIpVersion,
    /// An IHL below 5.
    ErrorBadIhl,
}

impl NodeCounter {
    /// How many counters there are.
    pub const COUNT: usize = 20;

    /// Every counter, in index order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::ClassifyPackets,
        Self::ClassifySelected,
        Self::ClassifySkipped,
        Self::ClassifyNotIpv4,
        Self::TunnelOutPackets,
        Self::TunnelOutBytes,
        Self::TunnelInPackets,
        Self::TunnelInBytes,
        Self::MssClamped,
        Self::DropNoPolicy,
        Self::DropNotIpv4,
        Self::DropTunnelKey,
        Self::DropNoTunnelInfo,
        Self::DropWrongVni,
        Self::DropUnknownGateway,
        Self::ErrorMssRewrite,
        Self::ErrorTruncatedEthernet,
        Self::ErrorTruncatedIpv4,
        Self::ErrorBadIpVersion,
        Self::ErrorBadIhl,
    ];

    /// Stable `snake_case` name, for status output and metric labels.
    pub const fn label(self) -> &'static str {
        match self {
            Self::ClassifyPackets => "classify_packets",
            Self::ClassifySelected => "classify_selected",
            Self::ClassifySkipped => "classify_skipped",
            Self::ClassifyNotIpv4 => "classify_not_ipv4",
            Self::TunnelOutPackets => "tunnel_out_packets",
            Self::TunnelOutBytes => "tunnel_out_bytes",
            Self::TunnelInPackets => "tunnel_in_packets",
            Self::TunnelInBytes => "tunnel_in_bytes",
            Self::MssClamped => "mss_clamped",
            Self::DropNoPolicy => "drop_no_policy",
            Self::DropNotIpv4 => "drop_not_ipv4",
            Self::DropTunnelKey => "drop_tunnel_key",
            Self::DropNoTunnelInfo => "drop_no_tunnel_info",
            Self::DropWrongVni => "drop_wrong_vni",
            Self::DropUnknownGateway => "drop_unknown_gateway",
            Self::ErrorMssRewrite => "error_mss_rewrite",
            Self::ErrorTruncatedEthernet => "error_truncated_ethernet",
            Self::ErrorTruncatedIpv4 => "error_truncated_ipv4",
            Self::ErrorBadIpVersion => "error_bad_ip_version",
            Self::ErrorBadIhl => "error_bad_ihl",
        }
    }

    /// The counter of a parse error.
    pub const fn of_parse_error(reason: crate::ParseError) -> Self {
        match reason {
            crate::ParseError::TruncatedEthernet => Self::ErrorTruncatedEthernet,
            crate::ParseError::TruncatedIpv4 => Self::ErrorTruncatedIpv4,
            crate::ParseError::BadIpVersion => Self::ErrorBadIpVersion,
            crate::ParseError::BadIhl => Self::ErrorBadIhl,
        }
    }
}

/// FNV-1a, 64 bits: stable across builds and versions, so ids written into pinned maps by
/// one agent are found again by the next.
pub const fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// FNV-1a's offset basis.
pub const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// A policy's id: a hash of its name, never 0.
pub const fn policy_id(name: &str) -> u64 {
    let id = fnv1a(name.as_bytes(), FNV_BASIS);
    if id == 0 { 1 } else { id }
}

/// A class's id: a hash of its policies' ids, which must be given sorted and deduplicated;
/// never 0.
pub fn class_id(sorted_policies: &[u64]) -> u64 {
    let id = sorted_policies
        .iter()
        .fold(fnv1a(b"class", FNV_BASIS), |h, p| {
            fnv1a(&p.to_be_bytes(), h)
        });
    if id == 0 { 1 } else { id }
}

const _: () = assert!(size_of::<SourceValue>() == 8);
const _: () = assert!(size_of::<DestKey>() == 12);
const _: () = assert!(size_of::<DestValue>() == 16);
const _: () = assert!(size_of::<PolicyStats>() == 16);
const _: () = assert!(size_of::<NodeConfig>() == 12);
const _: () = assert!(size_of::<NodeStats>() == 8 * NodeCounter::COUNT);
const _: () = assert!(NodeCounter::ALL.len() == NodeCounter::COUNT);

// SAFETY: `#[repr(C)]`, only integer and byte-array fields, no padding (asserted above).
#[cfg(feature = "user")]
mod pod {
    use super::*;
    unsafe impl aya::Pod for SourceValue {}
    unsafe impl aya::Pod for DestKey {}
    unsafe impl aya::Pod for DestValue {}
    unsafe impl aya::Pod for PolicyStats {}
    unsafe impl aya::Pod for NodeConfig {}
    unsafe impl aya::Pod for NodeStats {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_in_index_order_with_distinct_labels() {
        for (i, counter) in NodeCounter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, i, "{counter:?}");
            for other in &NodeCounter::ALL[i + 1..] {
                assert_ne!(counter.label(), other.label());
            }
        }
    }

    #[test]
    fn ids_are_stable_and_distinct() {
        // FNV-1a test vector: "a".
        assert_eq!(fnv1a(b"a", FNV_BASIS), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(policy_id("alice"), policy_id("bob"));
        assert_ne!(class_id(&[1, 2]), class_id(&[2]));
        assert_eq!(class_id(&[1, 2]), class_id(&[1, 2]));
    }

    #[test]
    fn per_cpu_stats_sum() {
        let mut a = NodeStats::default();
        a.add(NodeCounter::MssClamped, 2);
        let mut b = NodeStats::default();
        b.add(NodeCounter::MssClamped, u64::MAX);
        let total: NodeStats = [a, b].into_iter().sum();
        assert_eq!(total.get(NodeCounter::MssClamped), 1);
    }
}
