//! Our own wire formats, written the way `smoltcp::wire` writes its own: a `Packet<T>` view
//! checked once with `new_checked`, getters that cannot panic afterwards, and a small `Repr`.
//! Standard headers (Ethernet, ARP, IPv4, UDP, TCP, ICMP) come from `smoltcp::wire`.

pub mod vxlan;

pub use vxlan::{VxlanPacket, VxlanRepr};
