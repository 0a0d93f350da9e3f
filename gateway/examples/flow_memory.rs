//! Measures the memory one live flow costs, whole table included, at 1M flows.
//!
//! `cargo run --release -p egret-gateway --example flow_memory [FLOWS]`
//!
//! Three views: bytes the table's mappings hold (slab and both indexes at capacity), bytes
//! allocated on the heap besides (counted by a wrapping allocator; the table itself is mapped
//! straight from the kernel), and growth of the resident set.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use egret_gateway::nat::{FlowState, InsideKey, Nat, NatParams, Proto};
use smoltcp::time::Instant;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as is to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with the same layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let flows: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let rss_before = resident_bytes();
    let heap_before = LIVE.load(Ordering::Relaxed);
    let mut nat = match Nat::new(
        &NatParams {
            max_flows: flows,
            ..NatParams::default()
        },
        1,
    ) {
        Ok(nat) => nat,
        Err(e) => {
            eprintln!("flow_memory: {e}");
            std::process::exit(1);
        }
    };
    let now = Instant::from_secs(0);
    for i in 0..flows {
        let key = InsideKey {
            node: Ipv4Addr::new(192, 168, 1, 21 + (i % 8) as u8),
            egress: Ipv4Addr::new(192, 168, 1, 100),
            pod: Ipv4Addr::from_bits(0x0a00_0000 + i / 28_000),
            remote: Ipv4Addr::from_bits(0xc633_0000 + (i % 4096)),
            pod_port: 32768 + (i % 28_000) as u16,
            remote_port: 443,
            proto: Proto::Tcp,
        };
        if let Err(e) = nat.table_mut().create(now, key, FlowState::TcpSynSent) {
            eprintln!("flow_memory: flow {i}: {e}");
            std::process::exit(1);
        }
    }
    let heap = LIVE.load(Ordering::Relaxed) - heap_before;
    let rss = resident_bytes().saturating_sub(rss_before);
    let table = nat.table().heap_bytes();
    let per = |b: usize| b as f64 / f64::from(flows);
    println!("live flows:                 {}", nat.table().len());
    println!(
        "table mappings:             {table} bytes = {:.1} bytes/flow",
        per(table)
    );
    println!(
        "other heap allocations:     {heap} bytes = {:.1} bytes/flow",
        per(heap)
    );
    println!(
        "resident set growth:        {rss} bytes = {:.1} bytes/flow",
        per(rss)
    );
    println!("per flow, whole table:      {:.1} bytes", per(table + heap));
}
