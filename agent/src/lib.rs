//! egret's node agent.
//!
//! For now it holds only the eBPF side: [`ebpf`] loads the embedded eBPF object, attaches the
//! TC classifier to an interface and reads its counters. The classifier counts packets; it does
//! not select traffic yet.

pub mod ebpf;
