//! Keeping the host's kernel out of the floating IPs' traffic.
//!
//! The floating IPs are never local addresses of the host, so its kernel neither answers
//! ARP for them nor delivers their packets to its own sockets. But frames to them still
//! reach the kernel's IP stack, which would forward them when `ip_forward` is on (or count
//! them as errors when it is off). One nftables table, `ip egret_gateway`, drops every
//! IPv4 packet to a floating IP that arrives on the gateway interface, at the prerouting
//! hook before connection tracking (priority -500), so the kernel neither tracks, routes,
//! forwards nor answers it. The gateway's packet sockets are served beside the IP stack,
//! not after it, so they still receive those frames. (A `netdev` ingress hook would be
//! earlier still, but it runs before packet sockets bound to IPv4 are served, which the
//! gateway needs to leave the fast path's frames to TC; see [`super::packet`].)
//! The table is replaced atomically at start and deleted on a clean stop; after a crash it
//! stays, which keeps the kernel out until the gateway is back.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The nftables table the gateway owns.
pub const TABLE: &str = "egret_gateway";

/// The ruleset: the table is created if missing, deleted, and written anew in one
/// transaction, so there is no moment without it.
pub fn ruleset(interface: &str, floating_ips: &[Ipv4Addr]) -> String {
    let mut set = String::new();
    for (i, ip) in floating_ips.iter().enumerate() {
        if i > 0 {
            set.push_str(", ");
        }
        let _ = write!(set, "{ip}");
    }
    format!(
        "table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority -500; policy accept;\n\
         \t\tiifname \"{interface}\" ip daddr {{ {set} }} counter drop comment \"floating IPs are egret-gateway's, not the kernel's\"\n\
         \t}}\n\
         }}\n"
    )
}

fn nft(script: &str) -> io::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "nft refused the ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The installed table; dropping it removes the table.
pub struct KernelGuard {
    active: bool,
}

impl KernelGuard {
    pub fn install(interface: &str, floating_ips: &[Ipv4Addr]) -> io::Result<KernelGuard> {
        nft(&ruleset(interface, floating_ips))?;
        Ok(KernelGuard { active: true })
    }

    /// Replaces the set of floating IPs, atomically.
    pub fn update(&self, interface: &str, floating_ips: &[Ipv4Addr]) -> io::Result<()> {
        nft(&ruleset(interface, floating_ips))
    }

    pub fn remove(mut self) -> io::Result<()> {
        self.active = false;
        nft(&format!("delete table ip {TABLE}\n"))
    }
}

impl Drop for KernelGuard {
    fn drop(&mut self) {
        if self.active {
            let _ = nft(&format!("delete table ip {TABLE}\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_replaces_the_table_and_drops_every_floating_ip() {
        let r = ruleset(
            "eth1",
            &[
                Ipv4Addr::new(192, 168, 1, 100),
                Ipv4Addr::new(192, 168, 1, 101),
            ],
        );
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "table ip egret_gateway");
        assert_eq!(lines[1], "delete table ip egret_gateway");
        assert!(r.contains("hook prerouting priority -500"));
        assert!(
            r.contains("iifname \"eth1\" ip daddr { 192.168.1.100, 192.168.1.101 } counter drop")
        );
    }
}
