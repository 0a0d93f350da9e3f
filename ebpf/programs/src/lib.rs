//! Everything egret's eBPF programs do besides being entry points: bounds-checked frame reads,
//! header parsers and the node programs' decisions. The entry points live in `gateway_main.rs`
//! (egret-gateway's eBPF object) and `node_main.rs` (egret-agent's); this library keeps the code generic
//! over [`frame::Frame`] so unit tests run it on byte slices on the host.
#![cfg_attr(not(test), no_std)]

pub mod classify;
pub mod frame;
pub mod gateway;
pub mod node;
