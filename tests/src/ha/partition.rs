//! A partition between two hosts on a lab's LAN bridge: the frames one sends to the other
//! are dropped in the bridge, while both still reach every other host.
//!
//! The cut is an nftables table of the bridge family in the namespace that holds the bridge
//! (`lan`): its forward hook drops what enters from one of the two ports and would leave by
//! the other, in both directions. The bridge floods multicast and broadcast to each port
//! separately, so VRRP adverts (multicast), ARP (broadcast) and the flow sync (unicast)
//! between the two are all dropped, and all of it still reaches the router and the nodes.
//! A capture on either port still sees what that host sends: the cut is behind it.
//!
//! Dropping a [`Partition`] that was not healed removes the table; so does removing the
//! namespace, whatever happens.

use std::time::SystemTime;

use anyhow::{Context as _, Result, ensure};

use crate::NetNs;

/// The nftables table of the cut.
const TABLE: &str = "egret_partition";

/// Two bridge ports cut off from each other; see the module documentation.
pub struct Partition<'a> {
    lan: &'a NetNs,
    ports: [String; 2],
    healed: bool,
}

impl<'a> Partition<'a> {
    /// Cuts the bridge ports `ports` of `lan` off from each other; returns once the rules
    /// are in the kernel.
    ///
    /// # Errors
    ///
    /// When `nft` fails (a cut already in place, say).
    pub fn cut(lan: &'a NetNs, ports: [&str; 2]) -> Result<Self> {
        let [a, b] = ports;
        // One nft command line: one transaction, all rules or none.
        let rules = format!(
            "add table bridge {TABLE}; \
             add chain bridge {TABLE} forward {{ type filter hook forward priority 0; policy accept; }}; \
             add rule bridge {TABLE} forward iifname \"{a}\" oifname \"{b}\" counter drop; \
             add rule bridge {TABLE} forward iifname \"{b}\" oifname \"{a}\" counter drop"
        );
        lan.exec("nft", [rules.as_str()])
            .with_context(|| format!("cutting {a} off from {b} in {}", lan.name()))?;
        Ok(Self {
            lan,
            ports: [a.to_owned(), b.to_owned()],
            healed: false,
        })
    }

    /// Frames dropped so far, both directions.
    ///
    /// # Errors
    ///
    /// When `nft` fails.
    pub fn dropped(&self) -> Result<u64> {
        let listed = self.lan.exec("nft", ["list", "table", "bridge", TABLE])?;
        Ok(dropped_frames(&listed))
    }

    /// Removes the cut; returns the instant just before the command, so that everything
    /// after it counts as after the healing (the rules may have gone a little later).
    ///
    /// # Errors
    ///
    /// When `nft` fails.
    pub fn heal(mut self) -> Result<SystemTime> {
        let at = SystemTime::now();
        self.lan
            .exec("nft", ["delete", "table", "bridge", TABLE])
            .with_context(|| {
                format!(
                    "healing the cut between {} and {}",
                    self.ports[0], self.ports[1]
                )
            })?;
        self.healed = true;
        let left = self.lan.exec("nft", ["list", "tables", "bridge"])?;
        ensure!(!left.contains(TABLE), "the cut is still there: {left}");
        Ok(at)
    }
}

impl Drop for Partition<'_> {
    fn drop(&mut self) {
        if !self.healed {
            let _ = self.lan.exec("nft", ["delete", "table", "bridge", TABLE]);
        }
    }
}

/// The packets counted by every `counter` of an `nft list` output.
fn dropped_frames(listed: &str) -> u64 {
    listed
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().skip_while(|w| *w != "packets");
            words.next()?;
            words.next()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed() {
        let listed = "table bridge egret_partition {\n\tchain forward {\n\t\ttype filter hook \
                      forward priority filter; policy accept;\n\t\tiifname \"gw1\" oifname \
                      \"gw2\" counter packets 12 bytes 840 drop\n\t\tiifname \"gw2\" oifname \
                      \"gw1\" counter packets 3 bytes 180 drop\n\t}\n}\n";
        assert_eq!(dropped_frames(listed), 15);
        assert_eq!(dropped_frames("table bridge egret_partition {\n}\n"), 0);
    }
}
