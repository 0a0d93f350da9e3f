//! Map keys and values shared by egret's eBPF programs and user space (the agent, the gateway).
//!
//! Owns the byte layout of every map value: the kernel copies these values byte for byte between
//! the programs and user space, so both sides compile them from this one crate. Invariants:
//! every type is `#[repr(C)]` and has no padding (checked at compile time in each module), so no
//! uninitialised byte ever reaches the kernel or user space; every counter field is a `u64`
//! that only grows, wrapping on overflow, so no increment can panic inside a program.
//!
//! Built `no_std` for the eBPF target; the `user` feature adds `aya::Pod` for user space.
#![no_std]

pub mod gateway;
pub mod node;

/// Why a program could not read a frame's Ethernet and IPv4 headers. Each reason has its own
/// counter in the node programs' [`node::NodeStats`] ([`node::NodeCounter::of_parse_error`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Shorter than an Ethernet header (14 bytes).
    TruncatedEthernet,
    /// EtherType IPv4, but the IPv4 header (20 bytes, or IHL × 4 with options) is cut short.
    TruncatedIpv4,
    /// EtherType IPv4, but the version field is not 4.
    BadIpVersion,
    /// IHL below 5: a header shorter than the fixed 20 bytes.
    BadIhl,
}
