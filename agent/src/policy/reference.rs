//! The policy semantics by brute force: every policy is checked against the packet, with no
//! tries, classes or boundaries. Slow and obviously right, it is what [`super::compile`] is
//! tested against.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use super::PolicySpec;

/// What the semantics in the module documentation decide for a packet from `src` to `dst`:
/// the winning policy's name and egress IP, or `None` when no admitted policy selects it.
pub fn reference_decision(
    policies: &[PolicySpec],
    known_gateways: &[Ipv4Addr],
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Option<(String, Ipv4Addr)> {
    let mut names = HashSet::new();
    let mut egress_ips = HashSet::new();
    // (longest matching destination length, policy); only a strictly longer match replaces
    // the best so far, so a tie stays with the older policy.
    let mut best: Option<(u8, &PolicySpec)> = None;
    for policy in policies {
        let admitted = names.insert(policy.name.as_str())
            && (known_gateways.is_empty() || known_gateways.contains(&policy.egress))
            && egress_ips.insert(policy.egress);
        if !admitted
            || !policy.sources.iter().any(|p| p.contains(src))
            || policy.excluded.iter().any(|p| p.contains(dst))
        {
            continue;
        }
        let longest = policy
            .destinations
            .iter()
            .filter(|p| p.contains(dst))
            .map(|p| p.len())
            .max();
        if let Some(len) = longest
            && best.is_none_or(|(best_len, _)| len > best_len)
        {
            best = Some((len, policy));
        }
    }
    best.map(|(_, policy)| (policy.name.clone(), policy.egress))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefix::Prefix;

    fn policy(name: &str, destination: &str, egress: [u8; 4]) -> PolicySpec {
        PolicySpec {
            name: name.into(),
            sources: vec![Prefix::ANY],
            destinations: vec![destination.parse().expect("valid prefix")],
            excluded: vec![],
            egress: Ipv4Addr::from(egress),
        }
    }

    #[test]
    fn rejected_policies_select_nothing() {
        let policies = [
            policy("a", "8.0.0.0/8", [192, 0, 2, 1]),
            policy("a", "8.8.0.0/16", [192, 0, 2, 2]),
            policy("b", "8.8.8.0/24", [192, 0, 2, 1]),
            policy("c", "8.8.8.8/32", [198, 51, 100, 1]),
        ];
        let known = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
        let src = Ipv4Addr::new(10, 0, 0, 1);
        let dst = Ipv4Addr::new(8, 8, 8, 8);
        assert_eq!(
            reference_decision(&policies, &known, src, dst),
            Some(("a".into(), Ipv4Addr::new(192, 0, 2, 1)))
        );
        assert_eq!(
            reference_decision(&policies, &[], src, dst),
            Some(("c".into(), Ipv4Addr::new(198, 51, 100, 1)))
        );
    }
}
