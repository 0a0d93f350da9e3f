//! The gateway's kernel fast path: map keys and values shared by the TC program and
//! egret-gateway.
//!
//! egret-gateway decides every flow in user space. Once a flow is established it writes the
//! flow's translation into two hash maps, one per direction, and the TC program on the
//! gateway interface forwards that flow's ordinary packets itself: decapsulate and SNAT
//! towards the outside, DNAT and encapsulate towards the node. Anything else (a first
//! packet, TCP SYN, FIN or RST, a TTL about to run out, a packet too big for the tunnel,
//! ICMP, options, fragments) passes on to user space. egret-gateway's packet sockets are
//! bound to IPv4 and ARP, so the kernel hands them frames only after TC: user space never
//! sees a packet the program forwarded.
//!
//! Addresses and ports are kept as they are on the wire (network byte order, as bytes), so
//! neither side converts them on the packet path. Every type is `#[repr(C)]` without padding.

use core::mem::size_of;

/// The TC program (ingress of the gateway interface).
pub const FORWARD_PROGRAM: &str = "egret_gw_forward";
/// Single-entry array holding a [`Config`].
pub const CONFIG_MAP: &str = "EGRET_GW_CONFIG";
/// Hash map [`OutKey`] → [`OutValue`]: node → outside.
pub const OUT_MAP: &str = "EGRET_GW_OUT";
/// Hash map [`InKey`] → [`InValue`]: outside → node.
pub const IN_MAP: &str = "EGRET_GW_IN";
/// Per-CPU array holding one [`Stats`].
pub const STATS_MAP: &str = "EGRET_GW_STATS";
/// Entries each flow map holds at most. A flow that does not fit stays in user space.
pub const MAX_FLOWS: u32 = 262_144;

/// What the programs need besides the flows. The fast path is off while `enabled` is 0
/// (no next hop MAC known yet, or the gateway stopping).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The gateway interface's MAC.
    pub mac: [u8; 6],
    /// The next hop's MAC: destination of translated packets to the outside.
    pub next_hop_mac: [u8; 6],
    /// `[tunnel].port`, network byte order.
    pub tunnel_port: [u8; 2],
    /// The largest inner IPv4 packet that fits the tunnel (interface MTU − 50).
    pub room: u16,
    /// The VXLAN header's second word as on the wire: VNI << 8, network byte order.
    pub vni_word: [u8; 4],
    /// The gateway interface's index: where translated packets are sent.
    pub ifindex: u32,
    pub enabled: u16,
    /// The smallest UDP packet (outer IPv4 total length) the fast path takes, super-packets
    /// aside. Smaller ones go through user space: copying them costs little, and there a
    /// second CPU forwards them while the receiving CPU goes on receiving, where in the
    /// kernel one CPU would do both. Large packets and super-packets are where copies cost
    /// most, and the kernel forwards them without any. TCP packets of every size are taken:
    /// a stream's small packets are its ACKs, and a detour through user space delays every
    /// one of them, which slows the stream.
    pub min_len: u16,
}

/// A flow as it arrives from a node (the NAT's inside key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OutKey {
    /// Outer source: the node.
    pub node: [u8; 4],
    /// Outer destination: the floating IP.
    pub egress: [u8; 4],
    pub pod: [u8; 4],
    pub remote: [u8; 4],
    pub pod_port: [u8; 2],
    pub remote_port: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}

/// How to translate a flow towards the outside.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutValue {
    pub nat_port: [u8; 2],
    /// The MAC the node's frames come from (its binding): a frame of the flow from any
    /// other MAC is left to user space, which refuses it, whatever its outer source address
    /// says.
    pub node_mac: [u8; 6],
    /// `bpf_ktime_get_ns` of the last packet the fast path forwarded (0: none yet), so that
    /// user space does not expire a flow that only the kernel saw.
    pub last_seen_ns: u64,
}

/// A reply as it arrives from the outside (the NAT's outside key).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InKey {
    pub remote: [u8; 4],
    pub egress: [u8; 4],
    pub remote_port: [u8; 2],
    pub nat_port: [u8; 2],
    pub proto: u8,
    pub pad: [u8; 3],
}

/// How to translate and tunnel a reply.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InValue {
    pub pod: [u8; 4],
    /// The node the flow came from: the outer destination.
    pub node: [u8; 4],
    /// The node's MAC on the LAN.
    pub node_mac: [u8; 6],
    /// The MAC of the node's VXLAN device: the inner destination.
    pub tunnel_mac: [u8; 6],
    pub pod_port: [u8; 2],
    /// The outer UDP source port (the flow's entropy), network byte order.
    pub src_port: [u8; 2],
    /// As in [`OutValue`].
    pub last_seen_ns: u64,
}

/// What the fast path did, on one CPU (the map value) or summed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Node → outside: packets on the wire (segments of a super-packet each count) and bytes
    /// of the inner IPv4 packets.
    pub out_packets: u64,
    pub out_bytes: u64,
    /// Outside → node, likewise.
    pub in_packets: u64,
    pub in_bytes: u64,
    /// Packets the fast path took but could not rewrite (a helper failed): dropped.
    pub errors: u64,
}

impl core::ops::AddAssign for Stats {
    fn add_assign(&mut self, o: Self) {
        self.out_packets = self.out_packets.wrapping_add(o.out_packets);
        self.out_bytes = self.out_bytes.wrapping_add(o.out_bytes);
        self.in_packets = self.in_packets.wrapping_add(o.in_packets);
        self.in_bytes = self.in_bytes.wrapping_add(o.in_bytes);
        self.errors = self.errors.wrapping_add(o.errors);
    }
}

const _: () = assert!(size_of::<Config>() == 28);
const _: () = assert!(size_of::<OutKey>() == 24);
const _: () = assert!(size_of::<OutValue>() == 16);
const _: () = assert!(size_of::<InKey>() == 16);
const _: () = assert!(size_of::<InValue>() == 32);
const _: () = assert!(size_of::<Stats>() == 5 * size_of::<u64>());

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` structs of integers and byte arrays without padding (sizes
    // checked above): every byte pattern is a valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::OutKey {}
    unsafe impl aya::Pod for super::OutValue {}
    unsafe impl aya::Pod for super::InKey {}
    unsafe impl aya::Pod for super::InValue {}
    unsafe impl aya::Pod for super::Stats {}
}
