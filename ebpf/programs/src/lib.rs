//! Everything egret's eBPF programs do besides being entry points: bounds-checked frame reads
//! and header parsers. The entry points live in `main.rs` (the eBPF object); this library keeps
//! the parsers generic over [`frame::Frame`] so unit tests run them on byte slices on the host.
#![cfg_attr(not(test), no_std)]

pub mod classify;
pub mod frame;
pub mod gateway;
