//! What a flow is: its keys in both directions, its protocol state, and how TCP moves
//! between states.
//!
//! A [`Flow`] is a small plain value (24 bytes) so that it can be exported to a peer gateway
//! and installed there as it is.

use core::hash::{Hash, Hasher};
use core::net::Ipv4Addr;

/// The transport protocols the NAT translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Proto {
    /// ICMP query (echo); the identifier plays the role of the port.
    Icmp = 1,
    Tcp = 6,
    Udp = 17,
}

impl Proto {
    /// The IPv4 protocol number.
    pub fn number(self) -> u8 {
        self as u8
    }
}

/// Which way a packet travels through the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a pod, through the tunnel, to the outside world.
    Outbound,
    /// From the outside world back to a pod.
    Inbound,
}

/// Connection-tracking state. UDP and ICMP flows are always [`FlowState::Open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum FlowState {
    /// A UDP or ICMP query mapping.
    Open = 0,
    /// The pod sent a SYN; no answer yet.
    TcpSynSent = 1,
    /// The outside answered with SYN+ACK; waiting for the pod's ACK.
    TcpSynReceived = 2,
    /// Three-way handshake complete.
    TcpEstablished = 3,
    /// The pod sent FIN.
    TcpFinOut = 4,
    /// The outside sent FIN.
    TcpFinIn = 5,
    /// Both sides sent FIN.
    TcpTimeWait = 6,
    /// Either side sent RST.
    TcpClosed = 7,
}

/// The TCP flags the state machine looks at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

impl FlowState {
    /// All states, indexed by their discriminant.
    pub const ALL: [FlowState; 8] = [
        FlowState::Open,
        FlowState::TcpSynSent,
        FlowState::TcpSynReceived,
        FlowState::TcpEstablished,
        FlowState::TcpFinOut,
        FlowState::TcpFinIn,
        FlowState::TcpTimeWait,
        FlowState::TcpClosed,
    ];

    /// Decodes a state number (as found in exported flows).
    pub fn from_u8(v: u8) -> Option<FlowState> {
        FlowState::ALL.get(usize::from(v)).copied()
    }

    /// The state after a TCP segment with `flags` travelling `dir`.
    ///
    /// Deliberately lenient, like Linux without window tracking: segments that do not fit
    /// the expected sequence leave the state unchanged; they are still translated.
    pub fn on_tcp(self, dir: Direction, flags: TcpFlags) -> FlowState {
        use Direction::*;
        use FlowState::*;
        if flags.rst {
            return TcpClosed;
        }
        match (self, dir) {
            // The pod reuses its port for a new connection: the mapping starts over.
            (TcpTimeWait | TcpClosed, Outbound) if flags.syn && !flags.ack => TcpSynSent,
            (TcpSynSent, Inbound) if flags.syn && flags.ack => TcpSynReceived,
            (TcpSynReceived, Outbound) if flags.ack && !flags.syn && !flags.fin => TcpEstablished,
            (TcpSynReceived | TcpEstablished, Outbound) if flags.fin => TcpFinOut,
            (TcpSynReceived | TcpEstablished, Inbound) if flags.fin => TcpFinIn,
            (TcpFinIn, Outbound) if flags.fin => TcpTimeWait,
            (TcpFinOut, Inbound) if flags.fin => TcpTimeWait,
            (state, _) => state,
        }
    }
}

/// The inside view of a flow: everything that identifies it as it arrives from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsideKey {
    /// Outer source address of the tunnel: the node the pod runs on.
    pub node: Ipv4Addr,
    /// The floating IP the node tunnelled the packet to; it becomes the source address.
    pub egress: Ipv4Addr,
    pub pod: Ipv4Addr,
    pub remote: Ipv4Addr,
    /// The pod's source port, or its ICMP echo identifier.
    pub pod_port: u16,
    /// The remote port; zero for ICMP.
    pub remote_port: u16,
    pub proto: Proto,
}

/// The outside view of a flow: what a reply from the outside world carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutsideKey {
    pub egress: Ipv4Addr,
    pub remote: Ipv4Addr,
    /// The NAT port (or ICMP identifier) on the egress IP.
    pub nat_port: u16,
    /// The remote port; zero for ICMP.
    pub remote_port: u16,
    pub proto: Proto,
}

// Keys hash as two or three machine words rather than byte by byte: hashing sits on every
// packet's path.
impl Hash for InsideKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.node.to_bits()) << 32 | u64::from(self.egress.to_bits()));
        state.write_u64(u64::from(self.pod.to_bits()) << 32 | u64::from(self.remote.to_bits()));
        state.write_u64(
            u64::from(self.pod_port) << 24
                | u64::from(self.remote_port) << 8
                | u64::from(self.proto.number()),
        );
    }
}

impl Hash for OutsideKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.egress.to_bits()) << 32 | u64::from(self.remote.to_bits()));
        state.write_u64(
            u64::from(self.nat_port) << 24
                | u64::from(self.remote_port) << 8
                | u64::from(self.proto.number()),
        );
    }
}

/// One flow: its inside key, the NAT port it was given, and its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub node: Ipv4Addr,
    pub egress: Ipv4Addr,
    pub pod: Ipv4Addr,
    pub remote: Ipv4Addr,
    pub pod_port: u16,
    pub remote_port: u16,
    pub nat_port: u16,
    pub proto: Proto,
    pub state: FlowState,
}

impl Flow {
    pub fn new(key: InsideKey, nat_port: u16, state: FlowState) -> Flow {
        Flow {
            node: key.node,
            egress: key.egress,
            pod: key.pod,
            remote: key.remote,
            pod_port: key.pod_port,
            remote_port: key.remote_port,
            nat_port,
            proto: key.proto,
            state,
        }
    }

    pub fn inside_key(&self) -> InsideKey {
        InsideKey {
            node: self.node,
            egress: self.egress,
            pod: self.pod,
            remote: self.remote,
            pod_port: self.pod_port,
            remote_port: self.remote_port,
            proto: self.proto,
        }
    }

    pub fn outside_key(&self) -> OutsideKey {
        OutsideKey {
            egress: self.egress,
            remote: self.remote,
            nat_port: self.nat_port,
            remote_port: self.remote_port,
            proto: self.proto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::*;
    use FlowState::*;

    const SYN: TcpFlags = TcpFlags {
        syn: true,
        ack: false,
        fin: false,
        rst: false,
    };
    const SYNACK: TcpFlags = TcpFlags {
        syn: true,
        ack: true,
        fin: false,
        rst: false,
    };
    const ACK: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: false,
        rst: false,
    };
    const FIN: TcpFlags = TcpFlags {
        syn: false,
        ack: true,
        fin: true,
        rst: false,
    };
    const RST: TcpFlags = TcpFlags {
        syn: false,
        ack: false,
        fin: false,
        rst: true,
    };

    #[test]
    fn handshake_then_close_from_pod() {
        let mut s = TcpSynSent;
        s = s.on_tcp(Inbound, SYNACK);
        assert_eq!(s, TcpSynReceived);
        s = s.on_tcp(Outbound, ACK);
        assert_eq!(s, TcpEstablished);
        s = s.on_tcp(Outbound, FIN);
        assert_eq!(s, TcpFinOut);
        s = s.on_tcp(Inbound, ACK);
        assert_eq!(s, TcpFinOut);
        s = s.on_tcp(Inbound, FIN);
        assert_eq!(s, TcpTimeWait);
    }

    #[test]
    fn close_from_outside() {
        let s = TcpEstablished.on_tcp(Inbound, FIN);
        assert_eq!(s, TcpFinIn);
        assert_eq!(s.on_tcp(Outbound, FIN), TcpTimeWait);
    }

    #[test]
    fn rst_closes_from_any_state() {
        for s in FlowState::ALL.into_iter().skip(1) {
            assert_eq!(s.on_tcp(Inbound, RST), TcpClosed);
            assert_eq!(s.on_tcp(Outbound, RST), TcpClosed);
        }
    }

    #[test]
    fn new_syn_reopens_a_closed_mapping() {
        assert_eq!(TcpTimeWait.on_tcp(Outbound, SYN), TcpSynSent);
        assert_eq!(TcpClosed.on_tcp(Outbound, SYN), TcpSynSent);
        // A SYN from the outside never reopens: the gateway does not accept inbound flows.
        assert_eq!(TcpClosed.on_tcp(Inbound, SYN), TcpClosed);
    }

    #[test]
    fn out_of_order_segments_leave_state_alone() {
        assert_eq!(TcpSynSent.on_tcp(Outbound, ACK), TcpSynSent);
        assert_eq!(TcpSynSent.on_tcp(Inbound, ACK), TcpSynSent);
        assert_eq!(TcpEstablished.on_tcp(Inbound, SYNACK), TcpEstablished);
    }

    #[test]
    fn flow_is_small() {
        assert_eq!(core::mem::size_of::<Flow>(), 24);
    }

    #[test]
    fn state_round_trips_through_u8() {
        for s in FlowState::ALL {
            assert_eq!(FlowState::from_u8(s as u8), Some(s));
        }
        assert_eq!(FlowState::from_u8(8), None);
    }
}
