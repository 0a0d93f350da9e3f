//! Property tests of the NAT core's invariants, against a plain model.
//!
//! - no mapping is handed out twice;
//! - reverse lookup always finds the forward entry;
//! - expiry frees exactly the flows whose deadline passed;
//! - each pod's count of live flows equals a recount, whatever frees or installs flows, and
//!   creation never takes a pod past its share (a peer's installs may);
//! - translate-then-reverse is the identity, byte for byte.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use proptest::prelude::*;
use smoltcp::time::{Duration, Instant};

use super::checksum;
use super::table::FlowId;
use super::{
    Flow, FlowState, FlowTable, InsideKey, InstallError, Nat, NatError, NatParams, Proto, Timeouts,
};

const PORTS: core::ops::RangeInclusive<u16> = 100..=103;
const MAX_FLOWS: u32 = 24;
/// Four pods with seven flows each would overflow the table: both limits are reached.
const SHARE: u32 = 7;
const PODS: u8 = 4;

fn params() -> NatParams {
    NatParams {
        port_range: PORTS,
        max_flows: MAX_FLOWS,
        max_flows_per_pod: SHARE,
        timeouts: Timeouts::default(),
    }
}

fn proto_of(sel: u8) -> Proto {
    match sel % 3 {
        0 => Proto::Tcp,
        1 => Proto::Udp,
        _ => Proto::Icmp,
    }
}

/// Keys come from small domains so that collisions, reuse and exhaustion all happen.
fn inside_key(pod: u8, pod_port: u16, remote: u8, remote_port: u8, proto: u8) -> InsideKey {
    let proto = proto_of(proto);
    InsideKey {
        node: Ipv4Addr::new(192, 168, 1, 20 + pod % 2),
        egress: Ipv4Addr::new(192, 168, 1, 100),
        pod: Ipv4Addr::new(10, 10, 1, pod % PODS),
        remote: Ipv4Addr::new(198, 51, 100, remote % 2),
        pod_port: 98 + pod_port % 10,
        remote_port: if proto == Proto::Icmp {
            0
        } else {
            u16::from(remote_port % 2) + 1
        },
        proto,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Create {
        pod: u8,
        pod_port: u16,
        remote: u8,
        remote_port: u8,
        proto: u8,
    },
    Touch {
        pick: usize,
        state: u8,
    },
    Remove {
        pick: usize,
    },
    /// A flow from a peer gateway, as flow sync installs it: any NAT port of the range,
    /// never refused for its pod's share.
    Install {
        pod: u8,
        pod_port: u16,
        remote: u8,
        remote_port: u8,
        proto: u8,
        nat_port: u16,
        remaining: u16,
    },
    Advance {
        secs: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), any::<u16>(), any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(pod, pod_port, remote, remote_port, proto)| Op::Create { pod, pod_port, remote, remote_port, proto }),
        3 => (any::<usize>(), 0u8..8).prop_map(|(pick, state)| Op::Touch { pick, state }),
        1 => any::<usize>().prop_map(|pick| Op::Remove { pick }),
        3 => (any::<u8>(), any::<u16>(), any::<u8>(), any::<u8>(), any::<u8>(), PORTS, any::<u16>())
            .prop_map(|(pod, pod_port, remote, remote_port, proto, nat_port, remaining)| {
                Op::Install { pod, pod_port, remote, remote_port, proto, nat_port, remaining }
            }),
        2 => (0u16..5).prop_map(|secs| Op::Advance { secs }),
        1 => (0u16..400).prop_map(|secs| Op::Advance { secs }),
    ]
}

fn timeout_secs(t: &Timeouts, flow: &Flow) -> u32 {
    let d = match (flow.proto, flow.state) {
        (Proto::Udp, _) => t.udp,
        (Proto::Icmp, _) => t.icmp,
        (Proto::Tcp, FlowState::TcpEstablished) => t.tcp_established,
        (Proto::Tcp, FlowState::TcpTimeWait) => t.tcp_time_wait,
        (Proto::Tcp, FlowState::TcpClosed) => t.tcp_closed,
        (Proto::Tcp, _) => t.tcp_transitory,
    };
    d.secs() as u32
}

/// Live flows of `pod` in the model.
fn pod_count(model: &[(FlowId, Flow, u32)], pod: Ipv4Addr) -> u32 {
    model.iter().filter(|(_, f, _)| f.pod == pod).count() as u32
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn table_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
        let timeouts = Timeouts::default();
        let mut table = FlowTable::new(&params(), 7).unwrap();
        // The model: every live flow with the deadline it must expire at.
        let mut model: Vec<(FlowId, Flow, u32)> = Vec::new();
        let mut now: u32 = 0;
        for op in ops {
            match op {
                Op::Create { pod, pod_port, remote, remote_port, proto } => {
                    let key = inside_key(pod, pod_port, remote, remote_port, proto);
                    if model.iter().any(|(_, f, _)| f.inside_key() == key) {
                        prop_assert!(table.lookup_inside(&key).is_some());
                        continue;
                    }
                    prop_assert!(table.lookup_inside(&key).is_none());
                    let first = if key.proto == Proto::Tcp { FlowState::TcpSynSent } else { FlowState::Open };
                    let held = pod_count(&model, key.pod);
                    match table.create(Instant::from_secs(i64::from(now)), key, first) {
                        Ok(id) => {
                            prop_assert!(held < SHARE, "created a flow for {} holding {held}", key.pod);
                            let flow = *table.flow(id);
                            prop_assert_eq!(flow.inside_key(), key);
                            prop_assert!(PORTS.contains(&flow.nat_port));
                            prop_assert!(
                                !model.iter().any(|(_, f, _)| f.outside_key() == flow.outside_key()),
                                "mapping handed out twice: {:?}", flow
                            );
                            if PORTS.contains(&key.pod_port)
                                && !model.iter().any(|(_, f, _)| {
                                    let mut o = flow.outside_key();
                                    o.nat_port = key.pod_port;
                                    f.outside_key() == o
                                })
                            {
                                prop_assert_eq!(flow.nat_port, key.pod_port, "a free pod port is kept");
                            }
                            model.push((id, flow, now + timeout_secs(&timeouts, &flow)));
                        }
                        Err(NatError::PodQuota) => prop_assert!(held >= SHARE, "refused {} holding {held}", key.pod),
                        Err(NatError::TableFull) => prop_assert!(model.len() >= MAX_FLOWS as usize && held < SHARE),
                        Err(NatError::PortsExhausted) => {
                            prop_assert!(held < SHARE && model.len() < MAX_FLOWS as usize);
                            // The range is small, so the allocator searched all of it.
                            let used: HashSet<u16> = model
                                .iter()
                                .filter(|(_, f, _)| {
                                    (f.egress, f.remote, f.remote_port, f.proto)
                                        == (key.egress, key.remote, key.remote_port, key.proto)
                                })
                                .map(|(_, f, _)| f.nat_port)
                                .collect();
                            prop_assert_eq!(used.len(), PORTS.len(), "refused while a port was free");
                        }
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
                Op::Touch { pick, state } => {
                    if model.is_empty() {
                        continue;
                    }
                    let i = pick % model.len();
                    let (id, ref mut flow, ref mut deadline) = model[i];
                    let state = if flow.proto == Proto::Tcp {
                        FlowState::from_u8(state.max(1)).unwrap()
                    } else {
                        FlowState::Open
                    };
                    table.touch(id, Instant::from_secs(i64::from(now)), state);
                    flow.state = state;
                    *deadline = now + timeout_secs(&timeouts, flow);
                    prop_assert_eq!(table.flow(id), &*flow);
                }
                Op::Remove { pick } => {
                    if model.is_empty() {
                        continue;
                    }
                    let (id, flow, _) = model.swap_remove(pick % model.len());
                    prop_assert_eq!(table.remove(id), flow);
                }
                Op::Install { pod, pod_port, remote, remote_port, proto, nat_port, remaining } => {
                    let key = inside_key(pod, pod_port, remote, remote_port, proto);
                    let state = if key.proto == Proto::Tcp { FlowState::TcpEstablished } else { FlowState::Open };
                    let flow = Flow::new(key, nat_port, state);
                    // At most the state's timeout: a packet then never moves the deadline
                    // back, which the model (expiry exactly at the deadline) relies on.
                    let remaining = 1 + u32::from(remaining) % timeout_secs(&timeouts, &flow);
                    let deadline = now + remaining;
                    let result = table.install(
                        Instant::from_secs(i64::from(now)),
                        flow,
                        Duration::from_secs(u64::from(remaining)),
                    );
                    let same_inside = model.iter().position(|(_, f, _)| f.inside_key() == key);
                    let clash = model.iter().any(|(_, f, _)| f.outside_key() == flow.outside_key());
                    match (same_inside, result) {
                        // The peer's newer copy of a flow this table has: refreshed in place.
                        (Some(i), Ok(id)) => {
                            prop_assert_eq!(model[i].1.nat_port, nat_port);
                            prop_assert_eq!(model[i].0, id);
                            model[i].1.state = state;
                            model[i].2 = deadline;
                        }
                        (Some(i), Err(InstallError::Conflict)) => {
                            prop_assert_ne!(model[i].1.nat_port, nat_port);
                        }
                        (None, Ok(id)) => {
                            prop_assert!(!clash && model.len() < MAX_FLOWS as usize);
                            model.push((id, flow, deadline));
                        }
                        (None, Err(InstallError::Conflict)) => prop_assert!(clash),
                        (None, Err(InstallError::TableFull)) => {
                            prop_assert!(!clash && model.len() >= MAX_FLOWS as usize);
                        }
                        (_, other) => prop_assert!(false, "install gave {other:?}"),
                    }
                }
                Op::Advance { secs } => {
                    now += u32::from(secs);
                    let mut expired = Vec::new();
                    table.expire(Instant::from_secs(i64::from(now)), |f| expired.push(*f));
                    let mut due: Vec<Flow> = model.iter().filter(|(_, _, d)| *d <= now).map(|(_, f, _)| *f).collect();
                    model.retain(|(_, _, d)| *d > now);
                    let key = |f: &Flow| (f.inside_key().pod, f.pod_port, f.remote, f.remote_port, f.proto, f.node);
                    expired.sort_by_key(key);
                    due.sort_by_key(key);
                    prop_assert_eq!(expired, due, "expiry freed exactly the expired flows");
                }
            }
            prop_assert_eq!(table.len(), model.len());
            // Every pod's count is a recount of its live flows (check_invariants below also
            // sees that no pod without flows keeps an entry).
            for pod in 0..PODS {
                let pod = Ipv4Addr::new(10, 10, 1, pod);
                prop_assert_eq!(table.pod_flows(pod), pod_count(&model, pod), "count of {}", pod);
            }
            prop_assert_eq!(
                table.pods(),
                model.iter().map(|(_, f, _)| f.pod).collect::<HashSet<_>>().len()
            );
            // Reverse lookup always finds the forward entry, and both find the model's flow.
            for (id, flow, _) in &model {
                prop_assert_eq!(table.lookup_inside(&flow.inside_key()), Some(*id));
                prop_assert_eq!(table.lookup_outside(&flow.outside_key()), Some(*id));
            }
            table.check_invariants();
        }
    }
}

/// One packet's endpoints and contents, from the pod's side.
#[derive(Debug, Clone)]
struct Spec {
    proto: Proto,
    pod: Ipv4Addr,
    remote: Ipv4Addr,
    pod_port: u16,
    remote_port: u16,
    payload: Vec<u8>,
}

const EGRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 21);

/// Builds an IPv4 packet with every checksum computed in full.
fn build(
    proto: Proto,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    reply: bool,
    payload: &[u8],
) -> Vec<u8> {
    let l4_len = match proto {
        Proto::Tcp => 20,
        Proto::Udp | Proto::Icmp => 8,
    } + payload.len();
    let total = 20 + l4_len;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = proto.number();
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_sum = checksum::full(&p[..20]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let l4 = &mut p[20..];
    let sum_at = match proto {
        Proto::Tcp => {
            l4[0..2].copy_from_slice(&sport.to_be_bytes());
            l4[2..4].copy_from_slice(&dport.to_be_bytes());
            l4[12] = 5 << 4;
            l4[13] = if reply { 0x12 } else { 0x02 }; // SYN+ACK / SYN
            l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
            l4[20..].copy_from_slice(payload);
            16
        }
        Proto::Udp => {
            l4[0..2].copy_from_slice(&sport.to_be_bytes());
            l4[2..4].copy_from_slice(&dport.to_be_bytes());
            l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            l4[8..].copy_from_slice(payload);
            6
        }
        Proto::Icmp => {
            // Echo request from the pod side, echo reply from the outside; the identifier
            // is the port of whichever side owns the flow.
            l4[0] = if reply { 0 } else { 8 };
            let ident = if reply { dport } else { sport };
            l4[4..6].copy_from_slice(&ident.to_be_bytes());
            l4[6..8].copy_from_slice(&1u16.to_be_bytes());
            l4[8..].copy_from_slice(payload);
            2
        }
    };
    let sum = if proto == Proto::Icmp {
        checksum::full(l4)
    } else {
        let mut pseudo = Vec::with_capacity(12 + l4.len());
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, proto.number()]);
        pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(l4);
        match checksum::full(&pseudo) {
            0 if proto == Proto::Udp => 0xffff,
            s => s,
        }
    };
    l4[sum_at..sum_at + 2].copy_from_slice(&sum.to_be_bytes());
    p
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..3,
        0u8..4,
        0u8..3,
        any::<u16>(),
        prop_oneof![Just(53u16), Just(443), any::<u16>()],
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(proto, pod, remote, pod_port, remote_port, payload)| {
            let proto = proto_of(proto);
            Spec {
                proto,
                pod: Ipv4Addr::new(10, 10, 1, pod),
                remote: Ipv4Addr::new(203, 0, 113, remote),
                pod_port,
                remote_port: if proto == Proto::Icmp { 0 } else { remote_port },
                payload,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn translate_then_reverse_is_identity(specs in proptest::collection::vec(spec(), 1..40)) {
        let mut nat = Nat::new(&NatParams { port_range: 20000..=20100, max_flows: 1024, ..NatParams::default() }, 3).unwrap();
        let mut seen: HashMap<(Proto, Ipv4Addr, Ipv4Addr, u16, u16), FlowId> = HashMap::new();
        let now = Instant::from_secs(1);
        for s in specs {
            let mut out = build(s.proto, s.pod, s.remote, s.pod_port, s.remote_port, false, &s.payload);
            let original = out.clone();
            let t = nat.outbound(now, NODE, EGRESS, &mut out).unwrap();
            let flow = *nat.table().flow(t.flow);
            let key = (s.proto, s.pod, s.remote, s.pod_port, s.remote_port);
            if let Some(id) = seen.insert(key, t.flow) {
                prop_assert_eq!(id, t.flow, "the same inside flow keeps its mapping");
            }
            // The translated packet is exactly the original with source = egress:nat_port,
            // checksums computed in full.
            prop_assert_eq!(&out, &build(s.proto, EGRESS, s.remote, flow.nat_port, s.remote_port, false, &s.payload));
            // The outside answers; reversing gives exactly the pod's view of that answer.
            let mut reply = build(s.proto, s.remote, EGRESS, s.remote_port, flow.nat_port, true, &s.payload);
            let back = nat.inbound(now, &mut reply).unwrap();
            prop_assert_eq!(back.flow, t.flow, "reverse lookup finds the forward entry");
            prop_assert_eq!(back.node, NODE);
            prop_assert_eq!(&reply, &build(s.proto, s.remote, s.pod, s.remote_port, s.pod_port, true, &s.payload));
            prop_assert_ne!(&original, &reply);
        }
        nat.table().check_invariants();
    }
}
