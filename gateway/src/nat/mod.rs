//! NAT and connection tracking: pure Rust, no I/O, the clock passed in.
//!
//! An *inside* flow (tunnel source node, pod address and port or ICMP identifier,
//! destination, protocol, and the egress IP it was tunnelled to) maps to an *outside* flow
//! (egress IP, NAT port, destination). Both directions are indexed, so a lookup is O(1)
//! either way.

use std::ops::RangeInclusive;

use smoltcp::time::Duration;

/// Idle timeouts per protocol and TCP state.
///
/// Defaults follow the NAT behaviour RFCs; see [`Timeouts::default`] for each value and
/// where it deviates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the three-way handshake (RFC 5382 REQ-5: at least 2 h 4 min).
    pub tcp_established: Duration,
    /// TCP while opening or closing (RFC 5382 REQ-5: at least 4 min).
    pub tcp_transitory: Duration,
    /// TCP after both sides sent FIN (2 MSL; RFC 5382 counts it as transitory).
    pub tcp_time_wait: Duration,
    /// TCP after a RST. Not covered by RFC 5382; kept short, as Linux does, so a port held
    /// by a reset connection is freed quickly while segments still in flight get through.
    pub tcp_closed: Duration,
    /// UDP mappings (RFC 4787 REQ-5: at least 2 min, 5 min recommended).
    pub udp: Duration,
    /// ICMP query (echo) mappings (RFC 5508 REQ-1: at least 60 s).
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_established: Duration::from_secs(2 * 3600 + 4 * 60),
            tcp_transitory: Duration::from_secs(4 * 60),
            tcp_time_wait: Duration::from_secs(4 * 60),
            tcp_closed: Duration::from_secs(10),
            udp: Duration::from_secs(5 * 60),
            icmp: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// The idle timeout of a flow of `proto` in `state`.
    pub fn of(&self, proto: Proto, state: FlowState) -> Duration {
        match (proto, state) {
            (Proto::Udp, _) => self.udp,
            (Proto::Icmp, _) => self.icmp,
            (Proto::Tcp, FlowState::TcpEstablished) => self.tcp_established,
            (Proto::Tcp, FlowState::TcpTimeWait) => self.tcp_time_wait,
            (Proto::Tcp, FlowState::TcpClosed) => self.tcp_closed,
            (Proto::Tcp, _) => self.tcp_transitory,
        }
    }
}

/// Everything the NAT core needs from `[nat]` in `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatParams {
    /// NAT ports (and ICMP query identifiers) handed out on each egress IP.
    pub port_range: RangeInclusive<u16>,
    /// Live flows at most; new flows beyond it are refused and counted.
    pub max_flows: u32,
    /// Live flows of one pod (inner source address) at most: a new flow of a pod at its
    /// share is refused ([`NatError::PodQuota`]). Flows installed from a peer count but are
    /// never refused. Values below 1 are taken as 1.
    pub max_flows_per_pod: u32,
    pub timeouts: Timeouts,
}

impl Default for NatParams {
    fn default() -> Self {
        NatParams {
            port_range: 16384..=65535,
            max_flows: 1_000_000,
            max_flows_per_pod: 65_536,
            timeouts: Timeouts::default(),
        }
    }
}

pub mod checksum;
mod flow;
mod index;
mod memory;
mod table;
mod translate;

pub use checksum::ChecksumDelta;
pub use flow::{Direction, Flow, FlowState, InsideKey, OutsideKey, Proto, TcpFlags};
pub use table::{FlowId, FlowTable, MAX_FLOWS_LIMIT, Prefetch, TableCounters, WHEEL_SLOTS};
pub use translate::{Ipv4Header, L4Checksum, Nat, OutboundPacket, Translated};

/// Why the NAT refused a packet or the new flow it would open. Every variant can happen to
/// any packet and is a drop reason in the metrics; what can only go wrong while building the
/// table is a [`BuildError`], and a peer's flow that cannot be installed an [`InstallError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum NatError {
    #[error("truncated or inconsistent headers")]
    Malformed,
    #[error("not an IPv4 packet")]
    NotIpv4,
    #[error("bad IPv4 header checksum")]
    BadChecksum,
    #[error("IPv4 fragment")]
    Fragment,
    #[error("transport protocol not translated")]
    UnsupportedProtocol,
    #[error("ICMP message type not translated")]
    UnsupportedIcmp,
    #[error("TCP segment without a flow is not a SYN")]
    NotSyn,
    #[error("no flow for this packet")]
    NoFlow,
    #[error("no NAT port left towards this destination")]
    PortsExhausted,
    #[error("flow table full")]
    TableFull,
    #[error("the pod holds its share of the flow table")]
    PodQuota,
    /// The table's memory for per-pod counts could not grow for a new pod.
    #[error("not enough memory for the flow table")]
    OutOfMemory,
}

impl NatError {
    /// Every variant, for metrics that list all reasons from the start.
    pub const ALL: [NatError; 12] = [
        NatError::Malformed,
        NatError::NotIpv4,
        NatError::BadChecksum,
        NatError::Fragment,
        NatError::UnsupportedProtocol,
        NatError::UnsupportedIcmp,
        NatError::NotSyn,
        NatError::NoFlow,
        NatError::PortsExhausted,
        NatError::TableFull,
        NatError::PodQuota,
        NatError::OutOfMemory,
    ];

    /// The `reason` label of the drop counter.
    pub fn label(self) -> &'static str {
        match self {
            NatError::Malformed => "malformed",
            NatError::NotIpv4 => "not_ipv4",
            NatError::BadChecksum => "bad_checksum",
            NatError::Fragment => "fragment",
            NatError::UnsupportedProtocol => "unsupported_protocol",
            NatError::UnsupportedIcmp => "unsupported_icmp",
            NatError::NotSyn => "tcp_not_syn",
            NatError::NoFlow => "no_flow",
            NatError::PortsExhausted => "ports_exhausted",
            NatError::TableFull => "table_full",
            NatError::PodQuota => "pod_quota",
            NatError::OutOfMemory => "out_of_memory",
        }
    }
}

/// Why a flow table could not be made ([`Nat::new`], [`FlowTable::new`]): only at start,
/// never for a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum BuildError {
    #[error("empty NAT port range")]
    BadPortRange,
    #[error("not enough memory for the flow table")]
    OutOfMemory,
}

/// Why a flow a peer exported was not installed ([`FlowTable::install`]). Not a drop: the
/// sync counts it as a refused change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum InstallError {
    /// Its inside key is live here with another NAT port, or its outside key is taken.
    #[error("flow clashes with a live flow")]
    Conflict,
    #[error("flow table full")]
    TableFull,
    #[error("not enough memory for the flow table")]
    OutOfMemory,
}

#[cfg(test)]
#[rustfmt::skip]
pub(crate) mod fixtures;

#[cfg(test)]
mod properties;
