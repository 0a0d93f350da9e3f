//! egret's eBPF object: entry points and maps only. Each entry point matches on its `try_*`
//! function from the library and counts every outcome, errors included, in a per-CPU map.
//!
//! `egret_classify` (TC, ingress and egress) is a counting pass-through for now: it parses
//! Ethernet + IPv4 and counts what it saw. It selects nothing and never changes, redirects or
//! drops a packet; flow selection comes later.
//!
//! The object only exists for the BPF target. On the host this file builds as a stub program,
//! so that `cargo clippy --workspace` and `cargo build --workspace` check it too: a `no_std`
//! host binary would clash with the `std` that the agent's `user` feature of
//! `egret-ebpf-common` brings into the workspace-wide feature set.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]

use aya_ebpf::{
    bindings::TC_ACT_PIPE,
    macros::{classifier, map},
    maps::PerCpuArray,
    programs::TcContext,
};
use egret_ebpf_common::{CLASSIFIER_STATS_INDEX, ClassifierStats};
use egret_ebpf_programs::classify::{Classified, try_classify};

/// The classifier's counters: one [`ClassifierStats`] per CPU, so that counting needs no atomics.
/// The agent finds it by this name (`egret_ebpf_common::CLASSIFIER_STATS_MAP`).
#[map]
static EGRET_CLS_STATS: PerCpuArray<ClassifierStats> = PerCpuArray::with_max_entries(1, 0);

/// Counts every frame crossing the interface by outcome, then hands it on unchanged.
#[classifier]
pub fn egret_classify(ctx: TcContext) -> i32 {
    let outcome = try_classify(&ctx);
    if let Some(stats) = EGRET_CLS_STATS.get_ptr_mut(CLASSIFIER_STATS_INDEX) {
        // SAFETY: the pointer is this CPU's slot of a map that outlives the program run, and a
        // run does not migrate between CPUs. Only a run preempted by another on the same CPU
        // (PREEMPT_RT) could interleave with it, which may lose an increment, never memory.
        let stats = unsafe { &mut *stats };
        match outcome {
            Ok(Classified::Ipv4(_)) => stats.record_ipv4(ctx.len()),
            Ok(Classified::NotIpv4 { .. }) => stats.record_non_ipv4(),
            Err(reason) => stats.record_error(reason),
        }
    }
    // TC_ACT_PIPE is "no verdict": with tcx it means TCX_NEXT and with cls_bpf direct-action it
    // maps to TC_ACT_UNSPEC, so the next program or filter still runs and the packet continues
    // as if we were absent. TC_ACT_OK would end the chain and skip the programs after ours.
    TC_ACT_PIPE
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Nothing in the programs may panic: a reachable panic is an endless loop, which the
    // verifier refuses to load.
    loop {}
}

/// Host stub: the programs run in the kernel, loaded by egret-agent.
#[cfg(not(target_arch = "bpf"))]
fn main() -> std::process::ExitCode {
    eprintln!("egret-ebpf is an eBPF object for egret-agent to load; it does not run on the host");
    std::process::ExitCode::FAILURE
}

/// No GPL-only helper is used, so the object carries the workspace's own license.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 11] = *b"Apache-2.0\0";
