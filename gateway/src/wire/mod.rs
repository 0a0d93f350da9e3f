//! Our own wire formats, written the way `smoltcp::wire` writes its own: a `Packet<T>` view
//! checked once with `new_checked`, getters that cannot panic afterwards, and a small `Repr`.
//! Standard headers (Ethernet, ARP, IPv4, UDP, TCP, ICMP) come from `smoltcp::wire`. The
//! VRRPv3 advert is small and fixed enough to be read and written whole, as a validated
//! [`vrrp::Advert`].

pub mod vrrp;
pub mod vxlan;

pub use vxlan::{VxlanPacket, VxlanRepr};
