//! `priority = "auto"`: priorities that spread the floating IPs evenly over the gateways,
//! and spread a failed gateway's addresses over the survivors, with nothing hand-tuned.
//!
//! Every gateway computes the same table from the same facts: the sorted set of gateway
//! identities (its own and its peers') and the sorted VRIDs. For the VRID at index `i`
//! among `n` gateways, the preferred owner is gateway `i mod n`; the others follow in
//! cyclic order after it, rotated by `i / n`, so the addresses one gateway prefers have
//! different second choices. Ranks become priorities 254, 253, …: distinct, so no tie
//! is left to the addresses.
//!
//! The table is static: a failed gateway keeps its ranks, and VRRP hands each of its
//! addresses to the best-ranked survivor, then back when it returns (with preemption).

use core::net::Ipv4Addr;

/// The highest priority a gateway takes (255 is the address owner's).
const TOP: u8 = 254;

/// This gateway's priority for each of `vrids` (in the order given). `me` must be among
/// `members`; duplicates are ignored.
pub fn priorities(me: Ipv4Addr, members: &[Ipv4Addr], vrids: &[u8]) -> Vec<u8> {
    let mut members: Vec<Ipv4Addr> = members.to_vec();
    members.sort_unstable();
    members.dedup();
    let n = members.len();
    let Some(mine) = members.iter().position(|m| *m == me) else {
        return vec![TOP; vrids.len()];
    };
    let mut sorted = vrids.to_vec();
    sorted.sort_unstable();
    vrids
        .iter()
        .map(|vrid| {
            let i = sorted.binary_search(vrid).unwrap_or_default();
            let rank = rank(mine, i, n);
            TOP.saturating_sub(rank.min(usize::from(TOP - 1)) as u8)
        })
        .collect()
}

/// The rank (0 = preferred) of gateway `g` among `n` for the VRID at index `i`.
fn rank(g: usize, i: usize, n: usize) -> usize {
    let first = i % n;
    if g == first {
        return 0;
    }
    // The others in cyclic order after `first`, rotated by i / n.
    let position = (g + n - first) % n - 1;
    let rotation = (i / n) % (n - 1);
    1 + (position + (n - 1) - rotation) % (n - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw(k: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 1, k)
    }

    /// Priorities of every gateway for every VRID: table[g][v].
    fn table(n: u8, vrids: &[u8]) -> Vec<Vec<u8>> {
        let members: Vec<Ipv4Addr> = (1..=n).map(gw).collect();
        members
            .iter()
            .map(|m| priorities(*m, &members, vrids))
            .collect()
    }

    fn owner(t: &[Vec<u8>], v: usize, alive: &[bool]) -> usize {
        (0..t.len())
            .filter(|g| alive[*g])
            .max_by_key(|g| t[*g][v])
            .expect("someone alive")
    }

    #[test]
    fn every_vrid_gets_distinct_priorities_one_of_them_the_top() {
        for n in 1..=6u8 {
            let vrids: Vec<u8> = (10..22).collect();
            let t = table(n, &vrids);
            for v in 0..vrids.len() {
                let mut column: Vec<u8> = t.iter().map(|row| row[v]).collect();
                column.sort_unstable();
                column.dedup();
                assert_eq!(column.len(), usize::from(n));
                assert_eq!(column.last(), Some(&TOP));
                assert!(column[0] >= 1);
            }
        }
    }

    #[test]
    fn addresses_spread_evenly_and_a_failed_gateways_addresses_spread_over_the_survivors() {
        for n in 2..=5usize {
            for count in [n, 2 * n, 3 * n, 2 * n + 1] {
                let vrids: Vec<u8> = (0..count as u8).map(|k| 50 + 3 * k).collect();
                let t = table(n as u8, &vrids);
                let all = vec![true; n];
                let mut load = vec![0; n];
                for v in 0..count {
                    load[owner(&t, v, &all)] += 1;
                }
                assert!(load.iter().max().unwrap() - load.iter().min().unwrap() <= 1);
                for dead in 0..n {
                    let mut alive = all.clone();
                    alive[dead] = false;
                    // Where the failed gateway's addresses go: to different survivors,
                    // none taking more than its share.
                    let mut taken = vec![0; n];
                    let mut orphans = 0usize;
                    for v in (0..count).filter(|v| owner(&t, *v, &all) == dead) {
                        taken[owner(&t, v, &alive)] += 1;
                        orphans += 1;
                    }
                    let share = orphans.div_ceil(n - 1);
                    assert!(
                        taken.iter().all(|k| *k <= share),
                        "{n} gateways, {count} addresses, {dead} failed: {taken:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_table_does_not_depend_on_the_order_of_peers_or_vrids() {
        let members = [gw(3), gw(1), gw(2), gw(1)];
        let p = priorities(gw(2), &members, &[30, 10, 20]);
        let q = priorities(gw(2), &[gw(1), gw(2), gw(3)], &[10, 20, 30]);
        assert_eq!(p, vec![q[2], q[0], q[1]]);
    }
}
