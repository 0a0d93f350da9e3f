//! egret-agent's eBPF object (`egret-agent-ebpf`): the programs egret-agent attaches on a node, and
//! their maps. Entry points, maps and helper calls only; the decisions are in
//! `egret_ebpf_programs::node`, and the map layouts in `egret_ebpf_common::node`, which also
//! tells how a selected packet moves through the three programs.
//!
//! Every outcome is counted in `EGRET_NODE_STATS`, drops by reason. The classifier never drops
//! or changes a packet; it only sets mark bits. The tunnel programs drop what must not cross
//! the tunnel, and otherwise change nothing but the MSS of SYNs and, on the way out, clear
//! those mark bits again.
//!
//! No map is declared pinned: the agent pins them itself, by path, so that they outlive it.
//!
//! As with `gateway_main.rs`, the object only exists for the BPF target; on the host this file builds
//! as a stub program, so that `cargo clippy --workspace` checks it too.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

use core::mem::size_of;

use aya_ebpf::{
    bindings::{__sk_buff, BPF_NOEXIST, TC_ACT_PIPE, TC_ACT_SHOT, bpf_tunnel_key},
    helpers::{bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    macros::{classifier, map},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap},
    programs::TcContext,
};
use egret_ebpf_common::node::{
    DestKey, DestValue, FLAG_CHECK_GATEWAYS, MAX_DESTINATIONS, MAX_GATEWAYS, MAX_POLICIES,
    MAX_SOURCES, NodeConfig, NodeCounter, NodeStats, PolicyStats, SourceValue,
};
use egret_ebpf_programs::classify::{Classified, Ipv4Header, try_classify};
use egret_ebpf_programs::node::{
    MssRewrite, Selection, TCP_CHECKSUM, TUNNEL_KEY_FLAGS, clamp, empty_tunnel_key, inner_bytes,
    select, syn_mss, tunnel_key, tunnel_remote,
};

/// Pod addresses and prefixes → their class.
#[map]
static EGRET_SOURCES: LpmTrie<[u8; 4], SourceValue> = LpmTrie::with_max_entries(MAX_SOURCES, 0);

/// (class, destination prefix) → the resolved decision.
#[map]
static EGRET_DESTS: LpmTrie<DestKey, DestValue> = LpmTrie::with_max_entries(MAX_DESTINATIONS, 0);

/// The gateways' addresses, the only outer sources the tunnel's ingress accepts.
#[map]
static EGRET_GATEWAYS: HashMap<[u8; 4], u32> = HashMap::with_max_entries(MAX_GATEWAYS, 0);

/// What the tunnel sent, per policy and CPU.
#[map]
static EGRET_POL_STATS: PerCpuHashMap<u64, PolicyStats> =
    PerCpuHashMap::with_max_entries(MAX_POLICIES, 0);

/// The settings, written by the agent.
#[map]
static EGRET_NODE_CFG: Array<NodeConfig> = Array::with_max_entries(1, 0);

/// The counters, per CPU.
#[map]
static EGRET_NODE_STATS: PerCpuArray<NodeStats> = PerCpuArray::with_max_entries(1, 0);

// TC_ACT_PIPE is "no verdict": with tcx it means TCX_NEXT and with cls_bpf direct-action it
// maps to TC_ACT_UNSPEC, so the next program or filter still runs, and the packet goes on as
// if we were absent; on the tunnel's egress the device then sends it. TC_ACT_OK would end the
// chain and skip the programs after ours.
const PASS: i32 = TC_ACT_PIPE;
const DROP: i32 = TC_ACT_SHOT;

/// Ingress of pod interfaces: marks the packets a policy tunnels, passes every packet on.
#[classifier]
pub fn egret_node_classify(ctx: TcContext) -> i32 {
    match try_classify(&ctx) {
        Ok(Classified::Ipv4(ip)) => {
            count(NodeCounter::ClassifyPackets, 1);
            match lookup(&ip) {
                Selection::Unselected => {}
                Selection::Skip => count(NodeCounter::ClassifySkipped, 1),
                Selection::Tunnel { .. } => {
                    if let Some(cfg) = EGRET_NODE_CFG.get(0) {
                        set_mark_bits(&ctx, cfg.mark, 0);
                        count(NodeCounter::ClassifySelected, 1);
                    }
                }
            }
        }
        Ok(Classified::NotIpv4 { .. }) => count(NodeCounter::ClassifyNotIpv4, 1),
        Err(reason) => count(NodeCounter::of_parse_error(reason), 1),
    }
    PASS
}

/// Egress of the tunnel device: addresses each packet to its policy's egress IP, or drops it.
#[classifier]
pub fn egret_tunnel_out(ctx: TcContext) -> i32 {
    match try_tunnel_out(&ctx) {
        Ok(()) => PASS,
        Err(reason) => {
            count(reason, 1);
            DROP
        }
    }
}

/// Ingress of the tunnel device: accepts decapsulated packets from gateways on our VNI.
#[classifier]
pub fn egret_tunnel_in(ctx: TcContext) -> i32 {
    match try_tunnel_in(&ctx) {
        Ok(()) => PASS,
        Err(reason) => {
            count(reason, 1);
            DROP
        }
    }
}

/// Sets the tunnel key, clamps a SYN's MSS and counts the packet; the error is the drop's
/// counter. A frame that does not parse cannot be looked up, so it is dropped under its
/// parse error's counter.
#[inline(always)]
fn try_tunnel_out(ctx: &TcContext) -> Result<(), NodeCounter> {
    let ip = match try_classify(ctx) {
        Ok(Classified::Ipv4(ip)) => ip,
        Ok(Classified::NotIpv4 { .. }) => return Err(NodeCounter::DropNotIpv4),
        Err(reason) => return Err(NodeCounter::of_parse_error(reason)),
    };
    let Selection::Tunnel { policy, egress } = lookup(&ip) else {
        return Err(NodeCounter::DropNoPolicy);
    };
    // An array's entry always exists; without it there is no VNI to send with.
    let cfg = EGRET_NODE_CFG.get(0).ok_or(NodeCounter::DropNoPolicy)?;
    let mut key = tunnel_key(cfg, egress);
    // SAFETY: the context pointer of this run and a fully written key of the size given.
    let rc = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            size_of::<bpf_tunnel_key>() as u32,
            TUNNEL_KEY_FLAGS,
        )
    };
    if rc != 0 {
        return Err(NodeCounter::DropTunnelKey);
    }
    // The mark has routed the packet here. Left on, it would route the outer packet too,
    // whose route lookup (remote = the egress IP) takes the skb's mark: back into this
    // device, which the VXLAN driver refuses as a circular route.
    set_mark_bits(ctx, 0, cfg.mark);
    clamp_mss(ctx, &ip, cfg);
    let (packets, bytes) = (wire_packets(ctx.skb.skb), inner_bytes(ctx.len()));
    count(NodeCounter::TunnelOutPackets, packets);
    count(NodeCounter::TunnelOutBytes, bytes);
    count_policy(policy, packets, bytes);
    Ok(())
}

/// Checks the tunnel metadata of a received packet, counts it and clamps a SYN-ACK's MSS;
/// the error is the drop's counter. What is behind the tunnel metadata is the gateway's
/// business: other EtherTypes and unparsable frames pass (the latter counted).
#[inline(always)]
fn try_tunnel_in(ctx: &TcContext) -> Result<(), NodeCounter> {
    let mut key = empty_tunnel_key();
    // SAFETY: the context pointer of this run and a key of the size given, for the kernel
    // to fill in.
    let rc = unsafe {
        bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, size_of::<bpf_tunnel_key>() as u32, 0)
    };
    if rc != 0 {
        return Err(NodeCounter::DropNoTunnelInfo);
    }
    // An array's entry always exists; without it there is no VNI to compare with.
    let cfg = EGRET_NODE_CFG.get(0).ok_or(NodeCounter::DropWrongVni)?;
    if key.tunnel_id != cfg.vni {
        return Err(NodeCounter::DropWrongVni);
    }
    if cfg.flags & FLAG_CHECK_GATEWAYS != 0 && EGRET_GATEWAYS.get_ptr(tunnel_remote(&key)).is_none()
    {
        return Err(NodeCounter::DropUnknownGateway);
    }
    count(NodeCounter::TunnelInPackets, wire_packets(ctx.skb.skb));
    count(NodeCounter::TunnelInBytes, inner_bytes(ctx.len()));
    match try_classify(ctx) {
        Ok(Classified::Ipv4(ip)) => clamp_mss(ctx, &ip, cfg),
        Ok(Classified::NotIpv4 { .. }) => {}
        Err(reason) => count(NodeCounter::of_parse_error(reason), 1),
    }
    Ok(())
}

/// The policies' decision for an IPv4 packet.
#[inline(always)]
fn lookup(ip: &Ipv4Header) -> Selection {
    select(
        ip,
        |key| EGRET_SOURCES.get(key).copied(),
        |key| EGRET_DESTS.get(key).copied(),
    )
}

/// Sets the `bits` of the packet's mark and clears the `clear` ones, keeping the bits others
/// set.
#[inline(always)]
fn set_mark_bits(ctx: &TcContext, bits: u32, clear: u32) {
    // SAFETY: the context pointer the kernel passed to this run; `mark` is readable.
    let mark = unsafe { (*ctx.skb.skb).mark };
    ctx.set_mark((mark & !clear) | bits);
}

/// Lowers the MSS of a TCP SYN or SYN-ACK above the configured one.
#[inline(always)]
fn clamp_mss(ctx: &TcContext, ip: &Ipv4Header, cfg: &NodeConfig) {
    let Some(rewrite) = syn_mss(ctx, ip).and_then(|found| clamp(found, cfg.mss)) else {
        return;
    };
    match rewrite_mss(ctx, ip.l4_offset, &rewrite) {
        Ok(()) => count(NodeCounter::MssClamped, 1),
        Err(()) => count(NodeCounter::ErrorMssRewrite, 1),
    }
}

/// Writes the new MSS and patches the TCP checksum (the kernel's helper also keeps a
/// CHECKSUM_COMPLETE or CHECKSUM_PARTIAL socket buffer right).
#[inline(always)]
fn rewrite_mss(ctx: &TcContext, l4: usize, rewrite: &MssRewrite) -> Result<(), ()> {
    ctx.store(rewrite.offset, &rewrite.new, 0).map_err(drop)?;
    let (old, new) = (
        u16::from_ne_bytes(rewrite.old),
        u16::from_ne_bytes(rewrite.new),
    );
    if ctx
        .l4_csum_replace(l4 + TCP_CHECKSUM, u64::from(old), u64::from(new), 2)
        .is_err()
    {
        // Put the old value back, so the packet leaves as it came. Should that fail too, the
        // packet was unwritable after all and the error below counts it either way.
        let _ = ctx.store(rewrite.offset, &rewrite.old, 0);
        return Err(());
    }
    Ok(())
}

/// Packets on the wire: the segments of a super-packet, else one.
#[inline(always)]
fn wire_packets(skb: *mut __sk_buff) -> u64 {
    // SAFETY: the context pointer the kernel passed to this run.
    let segs = unsafe { (*skb).gso_segs };
    u64::from(segs.max(1))
}

#[inline(always)]
fn count(counter: NodeCounter, n: u64) {
    if let Some(stats) = EGRET_NODE_STATS.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a map that outlives the run, and a run does not migrate
        // between CPUs (see `count` in gateway_main.rs).
        unsafe { &mut *stats }.add(counter, n);
    }
}

/// Adds a sent packet to its policy's counters, creating them on its first packet.
#[inline(always)]
fn count_policy(policy: u64, packets: u64, bytes: u64) {
    let add = |stats: *mut PolicyStats| {
        // SAFETY: this CPU's value of a per-CPU map entry; as in `count`.
        let stats = unsafe { &mut *stats };
        stats.packets = stats.packets.wrapping_add(packets);
        stats.bytes = stats.bytes.wrapping_add(bytes);
    };
    if let Some(stats) = EGRET_POL_STATS.get_ptr_mut(policy) {
        add(stats);
        return;
    }
    let first = PolicyStats { packets, bytes };
    // The kernel zeroes the other CPUs' values of a new entry.
    if EGRET_POL_STATS
        .insert(policy, first, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU created it in between; a full map leaves the packet uncounted.
        if let Some(stats) = EGRET_POL_STATS.get_ptr_mut(policy) {
            add(stats);
        }
    }
}

egret_ebpf_programs::object_root!("egret-agent-ebpf", "egret-agent");
