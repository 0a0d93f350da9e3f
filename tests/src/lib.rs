//! egret's lab: network namespaces, links and traffic for end-to-end tests on one Linux host.
//!
//! Every namespace and link a test makes is a guard whose `Drop` removes it, also when the test
//! panics: [`NetNs`] for namespaces (named with a per-run prefix so parallel and leftover runs
//! never collide), [`Link`] for interfaces inside them, [`veth_pair`] to join two namespaces.
//! Links live only inside lab namespaces, never in the caller's namespace, and traffic is only
//! ever sent from inside a lab namespace, bound to one of its interfaces ([`NetNs::ping`],
//! [`NetNs::send_frames`], commands through [`NetNs::command`]): nothing a test sends can leave
//! the machine. Code that must run inside a namespace (loading eBPF, netlink) uses
//! [`NetNs::run`], which runs a closure on a thread that has entered it.
//!
//! [`topology`] builds egret's own topology on top of these: a pod, its node, the gateway, a
//! router and an outside server ([`GatewayLab`]), with the gateway process and the kernel
//! NAT baseline to compare it with. [`ha`] adds a second gateway (or keepalived) on the same
//! LAN, and the traffic and captures that measure a failover between them ([`HaLab`]).
//! [`egress`] is the whole product: two nodes with pods and `egret-agent`, two gateways
//! sharing two floating IPs, an outside and an internal host ([`AgentLab`]).
//!
//! The lab needs root. Lab tests call [`require_root`] first, which fails them with a clear
//! message otherwise: a lab test that silently passes without root would prove nothing.

mod command;
pub mod egress;
pub mod ha;
mod link;
mod netns;
mod packet;
pub mod topology;

pub use command::check_output;
pub use egress::AgentLab;
pub use ha::HaLab;
pub use link::{Link, veth_pair};
pub use netns::{NetNs, reap_stale_namespaces, run_prefix};
pub use topology::{GatewayLab, Mode};

/// Fails the calling test unless it runs as root (effective uid 0).
///
/// # Panics
///
/// When not root, with a message that says how to run the lab.
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root: it creates network namespaces and loads eBPF programs (effective \
         uid is {euid}); run the tests as root, e.g. `sudo -E cargo test`"
    );
}
