//! Node masquerade with ip-masq-agent's semantics, in one nftables table owned by the agent.
//!
//! Pod traffic leaving the node is masqueraded to the address of the interface it leaves by
//! (the node IP), except:
//! - packets the node data path selected for a gateway (they carry the agent's mark, and
//!   leave by the tunnel device): the gateway translates them to their egress IP;
//! - packets toward `non_masquerade_cidrs`, which keep the pod's address;
//! - packets toward link-local 169.254.0.0/16, unless `masquerade_link_local`;
//! - the node's own traffic (a local source address), which needs no translation.
//!
//! The whole table is written in one `nft -f` transaction that creates it if missing, flushes
//! it and fills it again, so the rules are never half-applied and no other table is touched.
//! [`remove`] deletes it (on `egret-agent uninstall`). CNI masquerade rules elsewhere still
//! apply: disable them where the agent manages masquerade, as with ip-masq-agent.

use super::{HostError, run};
use crate::prefix::Prefix;

/// The table's family and name: `table ip egret`.
pub const TABLE: &str = "egret";

/// Link-local IPv4, never masqueraded unless asked for.
pub const LINK_LOCAL: &str = "169.254.0.0/16";

/// What the masquerade table must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    /// Destinations toward which pods keep their own address.
    pub non_masquerade: Vec<Prefix>,
    /// Masquerade toward 169.254.0.0/16 too.
    pub masquerade_link_local: bool,
    /// The data path's mark bits: marked packets go to a gateway untranslated.
    pub mark: u32,
    /// The tunnel device: nothing leaving by it is masqueraded.
    pub tunnel_device: String,
}

impl Masquerade {
    /// The nftables script that replaces the table atomically.
    pub fn ruleset(&self) -> String {
        let mut exceptions: Vec<String> =
            self.non_masquerade.iter().map(Prefix::to_string).collect();
        if !self.masquerade_link_local {
            exceptions.push(LINK_LOCAL.to_owned());
        }
        let elements = if exceptions.is_empty() {
            String::new()
        } else {
            format!("\t\telements = {{ {} }}\n", exceptions.join(", "))
        };
        let mark = self.mark;
        let device = &self.tunnel_device;
        // `add table` + `delete table` + the table again, in one transaction: the new table
        // replaces the old one atomically. (`flush table` would empty the chains but keep
        // the set's elements, and a destination taken out of the list would stay.)
        format!(
            "add table ip {TABLE}\n\
             delete table ip {TABLE}\n\
             table ip {TABLE} {{\n\
             \tcomment \"egret-agent: node masquerade (ip-masq-agent semantics); managed, do not edit\"\n\
             \tset no_masquerade {{\n\
             \t\ttype ipv4_addr\n\
             \t\tflags interval\n\
             \t\tauto-merge\n\
             {elements}\
             \t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tmeta mark & {mark:#010x} == {mark:#010x} return comment \"selected for a gateway\"\n\
             \t\toifname \"{device}\" return comment \"the tunnel to the gateways\"\n\
             \t\tfib saddr type local return comment \"the node's own traffic\"\n\
             \t\tfib daddr type local return\n\
             \t\tip daddr @no_masquerade return comment \"non_masquerade_cidrs\"\n\
             \t\tmasquerade\n\
             \t}}\n\
             }}\n"
        )
    }
}

/// Replaces the table with `masquerade`'s, in one transaction.
pub fn apply(masquerade: &Masquerade) -> Result<(), HostError> {
    run("nft", ["-f", "-"], Some(&masquerade.ruleset())).map(drop)
}

/// Deletes the table; a missing one is fine.
pub fn remove() -> Result<(), HostError> {
    if run("nft", ["list", "table", "ip", TABLE], None).is_err() {
        return Ok(());
    }
    run("nft", ["delete", "table", "ip", TABLE], None).map(drop)
}

/// The table as nftables holds it now, if it exists.
pub fn current() -> Option<String> {
    run("nft", ["list", "table", "ip", TABLE], None).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masquerade(cidrs: &[&str], link_local: bool) -> Masquerade {
        Masquerade {
            non_masquerade: cidrs.iter().map(|c| c.parse().expect("prefix")).collect(),
            masquerade_link_local: link_local,
            mark: 0x0010_0000,
            tunnel_device: "egret0".into(),
        }
    }

    #[test]
    fn exceptions_come_before_the_masquerade() {
        let rules = masquerade(&["10.0.0.0/8", "172.16.0.0/12"], false).ruleset();
        assert!(
            rules.contains("elements = { 10.0.0.0/8, 172.16.0.0/12, 169.254.0.0/16 }"),
            "{rules}"
        );
        let order = [
            "meta mark & 0x00100000 == 0x00100000 return",
            "oifname \"egret0\" return",
            "fib saddr type local return",
            "ip daddr @no_masquerade return",
            "masquerade\n",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|rule| {
                rules
                    .find(rule)
                    .unwrap_or_else(|| panic!("{rule} missing:\n{rules}"))
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{rules}");
        assert!(rules.starts_with("add table ip egret\ndelete table ip egret\n"));
    }

    #[test]
    fn link_local_is_masqueraded_only_when_asked() {
        let rules = masquerade(&["10.0.0.0/8"], true).ruleset();
        assert!(!rules.contains("169.254.0.0/16"), "{rules}");
        // Nothing left out: everything leaving is masqueraded, and the set has no elements
        // line (nft refuses `elements = { }`).
        let rules = masquerade(&[], true).ruleset();
        assert!(!rules.contains("elements"), "{rules}");
        assert!(rules.contains("masquerade\n"));
    }
}
