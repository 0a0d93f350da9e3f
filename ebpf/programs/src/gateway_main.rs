//! egret-gateway's eBPF object (`egret-gateway-ebpf`): entry points and maps only.
//!
//! `egret_gw_forward` (TC, ingress of the gateway interface) is egret-gateway's fast path for
//! established flows; see `egret_ebpf_common::gateway` and `egret_ebpf_programs::gateway`.
//!
//! The object only exists for the BPF target. On the host this file builds as a stub program,
//! so that `cargo clippy --workspace` and `cargo build --workspace` check it too: a `no_std`
//! host binary would clash with the `std` that the agent's `user` feature of
//! `egret-ebpf-common` brings into the workspace-wide feature set.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_FIXED_GSO,
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_PIPE, TC_ACT_SHOT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    },
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_redirect},
    macros::{classifier, map},
    maps::{Array, HashMap, PerCpuArray},
    programs::TcContext,
};
use egret_ebpf_common::gateway::{
    Config, InKey, InValue, MAX_FLOWS, OutKey, OutValue, Stats as GwStats,
};
use egret_ebpf_programs::gateway::{
    Candidate, ENCAP_LEN, INNER_IP, INNER_L4, IP, L4, PROTO_UDP, candidate, encap_headers,
};

/// The gateway fast path's settings, written by egret-gateway.
#[map]
static EGRET_GW_CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Established flows, node → outside.
#[map]
static EGRET_GW_OUT: HashMap<OutKey, OutValue> = HashMap::with_max_entries(MAX_FLOWS, 0);

/// Established flows, outside → node.
#[map]
static EGRET_GW_IN: HashMap<InKey, InValue> = HashMap::with_max_entries(MAX_FLOWS, 0);

/// What the fast path forwarded, per CPU, so that counting needs no atomics.
#[map]
static EGRET_GW_STATS: PerCpuArray<GwStats> = PerCpuArray::with_max_entries(1, 0);

/// `BPF_F_ADJ_ROOM_DECAP_L4_UDP` (newer kernels): also clears the tunnel offload marks of a
/// decapsulated super-packet. Older kernels refuse the flag, and the program retries without.
const BPF_F_ADJ_ROOM_DECAP_L4_UDP: u64 = 1 << 10;

/// How often at most a flow's `last_seen_ns` is rewritten: user space only needs it to
/// the second, and fewer writes keep the entry's cache line from bouncing between CPUs.
const SEEN_EVERY_NS: u64 = 100_000_000;

#[inline(always)]
fn gso_size(skb: *mut __sk_buff) -> u32 {
    // SAFETY: the context pointer the kernel passed to this run.
    unsafe { (*skb).gso_size }
}

/// Packets on the wire: the segments of a super-packet, else one.
#[inline(always)]
fn wire_packets(skb: *mut __sk_buff) -> u64 {
    // SAFETY: as above.
    let segs = unsafe { (*skb).gso_segs };
    u64::from(segs.max(1))
}

/// Forwards the ordinary packets of established flows; passes every other frame on
/// (`TC_ACT_PIPE`, no verdict: see `PASS` in node_main.rs).
#[classifier]
pub fn egret_gw_forward(ctx: TcContext) -> i32 {
    let Some(cfg) = EGRET_GW_CONFIG.get(0) else {
        return TC_ACT_PIPE;
    };
    // Read before the rewrite, which resets the segment count of a super-packet.
    let packets = wire_packets(ctx.skb.skb);
    let forwarded = match candidate(&ctx, gso_size(ctx.skb.skb), cfg) {
        Some(Candidate::Out { key, inner_len }) => match EGRET_GW_OUT.get_ptr_mut(key) {
            Some(v) => {
                // SAFETY: a value of a map that outlives the run; only `last_seen_ns` is
                // written.
                let v = unsafe { &mut *v };
                // Only from the node's bound MAC: a host spoofing the node's address is
                // user space's to refuse (and to count, and to probe the node for).
                if !from_mac(&ctx, &v.node_mac) {
                    return TC_ACT_PIPE;
                }
                forward_out(&ctx, cfg, &key, v, inner_len, packets)
            }
            None => return TC_ACT_PIPE,
        },
        Some(Candidate::In { key, len }) => match EGRET_GW_IN.get_ptr_mut(key) {
            // SAFETY: as above.
            Some(v) => forward_in(&ctx, cfg, &key, unsafe { &mut *v }, len, packets),
            None => return TC_ACT_PIPE,
        },
        None => return TC_ACT_PIPE,
    };
    match forwarded {
        // SAFETY: a helper call with plain arguments.
        Ok(()) => unsafe { bpf_redirect(cfg.ifindex, 0) as i32 },
        Err(()) => {
            count(|s| s.errors = s.errors.wrapping_add(1));
            TC_ACT_SHOT
        }
    }
}

/// Whether the frame's Ethernet source is `mac`.
#[inline(always)]
fn from_mac(ctx: &TcContext, mac: &[u8; 6]) -> bool {
    let Ok(source) = ctx.load::<[u8; 6]>(6) else {
        return false;
    };
    // Byte by byte: no call to memcmp, which eBPF has not.
    let mut differ = 0;
    let mut i = 0;
    while i < 6 {
        differ |= source[i] ^ mac[i];
        i += 1;
    }
    differ == 0
}

#[inline(always)]
fn count(f: impl FnOnce(&mut GwStats)) {
    if let Some(s) = EGRET_GW_STATS.get_ptr_mut(0) {
        // SAFETY: the pointer is this CPU's slot of a map that outlives the program run, and a
        // run does not migrate between CPUs. Only a run preempted by another on the same CPU
        // (PREEMPT_RT) could interleave with it, which may lose an increment, never memory.
        f(unsafe { &mut *s });
    }
}

#[inline(always)]
fn seen(last: &mut u64) {
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(*last) > SEEN_EVERY_NS {
        *last = now;
    }
}

/// The transport checksum's offset and the checksum helper's extra flags for `proto`.
#[inline(always)]
fn l4_checksum(l4: usize, proto: u8) -> (usize, u64) {
    if proto == PROTO_UDP {
        // A UDP checksum of zero means none, and must stay zero.
        (l4 + 6, u64::from(BPF_F_MARK_MANGLED_0))
    } else {
        (l4 + 16, 0)
    }
}

/// Replaces the address at `ip + at` and the port at `l4 + port_at`, keeping both
/// checksums right, and decrements the TTL.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    ip: usize,
    l4: usize,
    proto: u8,
    at: usize,
    addr: ([u8; 4], [u8; 4]),
    port_at: usize,
    port: ([u8; 2], [u8; 2]),
) -> Result<(), ()> {
    let (sum_at, mangled) = l4_checksum(l4, proto);
    let (old, new) = (u32::from_ne_bytes(addr.0), u32::from_ne_bytes(addr.1));
    ctx.store(ip + at, &addr.1, 0).map_err(drop)?;
    ctx.l3_csum_replace(ip + 10, u64::from(old), u64::from(new), 4)
        .map_err(drop)?;
    let pseudo = u64::from(BPF_F_PSEUDO_HDR) | mangled | 4;
    ctx.l4_csum_replace(sum_at, u64::from(old), u64::from(new), pseudo)
        .map_err(drop)?;
    let (old, new) = (u16::from_ne_bytes(port.0), u16::from_ne_bytes(port.1));
    ctx.store(l4 + port_at, &port.1, 0).map_err(drop)?;
    ctx.l4_csum_replace(sum_at, u64::from(old), u64::from(new), mangled | 2)
        .map_err(drop)?;
    let word: [u8; 2] = ctx.load(ip + 8).map_err(drop)?;
    let new_word = [word[0].wrapping_sub(1), word[1]];
    ctx.store(ip + 8, &new_word, 0).map_err(drop)?;
    let (old, new) = (u16::from_ne_bytes(word), u16::from_ne_bytes(new_word));
    ctx.l3_csum_replace(ip + 10, u64::from(old), u64::from(new), 2)
        .map_err(drop)
}

/// Node → outside: SNAT the inner packet, drop the tunnel headers, address the next hop.
#[inline(always)]
fn forward_out(
    ctx: &TcContext,
    cfg: &Config,
    key: &OutKey,
    v: &mut OutValue,
    inner_len: u16,
    packets: u64,
) -> Result<(), ()> {
    rewrite(
        ctx,
        INNER_IP,
        INNER_L4,
        key.proto,
        12,
        (key.pod, key.egress),
        0,
        (key.pod_port, v.nat_port),
    )?;
    let flags = u64::from(BPF_F_ADJ_ROOM_FIXED_GSO);
    let shrink = -(ENCAP_LEN as i32);
    if ctx
        .adjust_room(
            shrink,
            BPF_ADJ_ROOM_MAC,
            flags | BPF_F_ADJ_ROOM_DECAP_L4_UDP,
        )
        .is_err()
    {
        ctx.adjust_room(shrink, BPF_ADJ_ROOM_MAC, flags)
            .map_err(drop)?;
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&cfg.next_hop_mac);
    macs[6..].copy_from_slice(&cfg.mac);
    ctx.store(0, &macs, 0).map_err(drop)?;
    seen(&mut v.last_seen_ns);
    count(|s| {
        s.out_packets = s.out_packets.wrapping_add(packets);
        s.out_bytes = s.out_bytes.wrapping_add(u64::from(inner_len));
    });
    Ok(())
}

/// Outside → node: DNAT, put the tunnel headers in front, address the node.
#[inline(always)]
fn forward_in(
    ctx: &TcContext,
    cfg: &Config,
    key: &InKey,
    v: &mut InValue,
    len: u16,
    packets: u64,
) -> Result<(), ()> {
    rewrite(
        ctx,
        IP,
        L4,
        key.proto,
        16,
        (key.egress, v.pod),
        2,
        (key.nat_port, v.pod_port),
    )?;
    let flags = u64::from(
        BPF_F_ADJ_ROOM_FIXED_GSO
            | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
            | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
            | BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
    ) | (14u64 << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);
    ctx.adjust_room(ENCAP_LEN as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(drop)?;
    // SAFETY: a helper call without arguments.
    let ip_id = unsafe { bpf_get_prandom_u32() } as u16;
    let headers = encap_headers(
        cfg,
        v.node_mac,
        v.tunnel_mac,
        key.egress,
        v.node,
        v.src_port,
        len,
        ip_id,
    );
    ctx.store(0, &headers, 0).map_err(drop)?;
    seen(&mut v.last_seen_ns);
    count(|s| {
        s.in_packets = s.in_packets.wrapping_add(packets);
        s.in_bytes = s.in_bytes.wrapping_add(u64::from(len));
    });
    Ok(())
}

egret_ebpf_programs::object_root!("egret-gateway-ebpf", "egret-gateway");
