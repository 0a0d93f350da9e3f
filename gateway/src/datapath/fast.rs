//! Which flows the kernel fast path forwards, decided here with the rest of the data path.
//!
//! A flow is handed to the fast path once it is *established*: a UDP mapping as soon as it
//! exists, a TCP connection once the three-way handshake is complete. It is taken back
//! when its state moves on (FIN or RST, which the fast path never forwards, so user space
//! always sees them) and when it expires. The core only emits [`FastChange`]s; the I/O
//! shell writes them into the kernel's maps (see `io::fastpath`) in the order they came.
//!
//! Expiry: the fast path stamps each flow with the time of its last packet. Before the
//! core expires a flow it handed over, it asks the shell for that stamp, and keeps the
//! flow if the kernel saw it within its timeout (see [`super::Datapath::poll_with`]).

use std::net::Ipv4Addr;

use super::{TUNNEL_OVERHEAD, encap};
use crate::nat::FlowId;
use egret_ebpf_common::gateway::{Config, InKey, InValue, OutKey, OutValue};
use smoltcp::wire::EthernetAddress;

use super::neighbors::Node;
use crate::nat::{Flow, FlowState, Proto};

/// A change to the fast path's flow maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastChange {
    /// Forward this flow in the kernel from now on, both ways.
    Install {
        out: (OutKey, OutValue),
        inbound: (InKey, InValue),
    },
    /// Stop forwarding this flow in the kernel.
    Remove { out: OutKey, inbound: InKey },
}

/// Whether a flow in this state is forwarded by the fast path.
pub fn offloadable(flow: &Flow) -> bool {
    matches!(
        (flow.proto, flow.state),
        (Proto::Udp, FlowState::Open) | (Proto::Tcp, FlowState::TcpEstablished)
    )
}

/// The flow's keys in the two maps.
pub fn keys(flow: &Flow) -> (OutKey, InKey) {
    let proto = flow.proto.number();
    (
        OutKey {
            node: flow.node.octets(),
            egress: flow.egress.octets(),
            pod: flow.pod.octets(),
            remote: flow.remote.octets(),
            pod_port: flow.pod_port.to_be_bytes(),
            remote_port: flow.remote_port.to_be_bytes(),
            proto,
            pad: [0; 3],
        },
        InKey {
            remote: flow.remote.octets(),
            egress: flow.egress.octets(),
            remote_port: flow.remote_port.to_be_bytes(),
            nat_port: flow.nat_port.to_be_bytes(),
            proto,
            pad: [0; 3],
        },
    )
}

/// The map entries that forward `flow`, whose node is `node`; `src_port` is the outer UDP
/// source port of its tunnelled replies.
pub fn install(flow: &Flow, node: Node, src_port: u16) -> FastChange {
    let (out_key, in_key) = keys(flow);
    FastChange::Install {
        out: (
            out_key,
            OutValue {
                nat_port: flow.nat_port.to_be_bytes(),
                node_mac: node.mac.0,
                ..OutValue::default()
            },
        ),
        inbound: (
            in_key,
            InValue {
                pod: flow.pod.octets(),
                node: flow.node.octets(),
                node_mac: node.mac.0,
                tunnel_mac: node.tunnel_mac.0,
                pod_port: flow.pod_port.to_be_bytes(),
                src_port: src_port.to_be_bytes(),
                last_seen_ns: 0,
            },
        ),
    }
}

/// The entries that stop forwarding `flow`.
pub fn remove(flow: &Flow) -> FastChange {
    let (out, inbound) = keys(flow);
    FastChange::Remove { out, inbound }
}

/// The smallest UDP packet the fast path takes (see `Config::min_len`): on the namespace
/// lab's two CPUs, 64-byte UDP packets forward faster through user space, and 1500-byte ones
/// and super-packets through the kernel. TCP packets of every size go through the kernel.
pub const MIN_LEN: u16 = 256;

/// The fast path's settings for a gateway; disabled until the next hop's MAC is known.
/// The shell fills in the interface index.
pub fn config(
    mac: EthernetAddress,
    next_hop: Option<EthernetAddress>,
    tunnel_port: u16,
    vni: u32,
    room: usize,
) -> Config {
    Config {
        mac: mac.0,
        next_hop_mac: next_hop.map_or([0; 6], |m| m.0),
        tunnel_port: tunnel_port.to_be_bytes(),
        room: room.min(usize::from(u16::MAX)) as u16,
        vni_word: (vni << 8).to_be_bytes(),
        ifindex: 0,
        enabled: u16::from(next_hop.is_some()),
        min_len: MIN_LEN,
    }
}

impl super::Datapath {
    /// Hands established flows to the kernel fast path from now on (see this module).
    pub fn enable_fast_path(&mut self) {
        self.fast = true;
    }

    /// How many flows the fast path holds.
    pub fn offloaded(&self) -> usize {
        self.offloaded.len()
    }

    /// The fast path's settings as they stand (they change when the next hop's MAC does).
    pub fn fast_config(&self) -> egret_ebpf_common::gateway::Config {
        let room = usize::from(self.setup.mtu).saturating_sub(TUNNEL_OVERHEAD);
        config(
            self.setup.mac,
            self.next_hop.mac,
            self.setup.tunnel_port,
            self.setup.vni,
            room,
        )
    }

    /// Moves the fast path changes decided so far into `out` (empty), in order.
    pub fn take_fast_changes(&mut self, out: &mut Vec<FastChange>) {
        debug_assert!(out.is_empty());
        std::mem::swap(&mut self.fast_changes, out);
    }

    /// Hands a flow to the fast path, or takes it back, as its state now requires.
    pub(super) fn sync_fast(&mut self, id: FlowId) {
        if !self.fast {
            return;
        }
        let flow = *self.nat.table().flow(id);
        let key = flow.inside_key();
        if offloadable(&flow) {
            if self.offloaded.contains(&key) {
                return;
            }
            let Some(node) = self.nodes.get(flow.node) else {
                return;
            };
            let src_port =
                encap::flow_entropy_port(flow.remote, flow.pod, flow.remote_port, flow.pod_port);
            self.fast_changes.push(install(&flow, node, src_port));
            self.offloaded.insert(key);
        } else if self.offloaded.remove(&key) {
            self.fast_changes.push(remove(&flow));
        }
    }

    /// Takes back from the fast path every flow of a node whose MACs changed, so that
    /// replies are tunnelled with the new ones.
    pub(super) fn forget_node(&mut self, node: Ipv4Addr) {
        let table = self.nat.table();
        let changes = &mut self.fast_changes;
        self.offloaded.retain(|key| {
            if key.node != node {
                return true;
            }
            if let Some(id) = table.lookup_inside(key) {
                changes.push(remove(table.flow(id)));
            }
            false
        });
    }
}
