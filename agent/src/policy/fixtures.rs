//! Policy sets for tests and benchmarks (`agent/benches/policy.rs`): not part of the agent's
//! behaviour.

use std::net::Ipv4Addr;

use super::PolicySpec;
use crate::prefix::Prefix;

/// `policies` policies of `per_policy` pod addresses each, numbered from 10.64.0.0; each with
/// two or three destinations and an exclusion inside the first.
pub fn fleet(policies: u32, per_policy: u32) -> Vec<PolicySpec> {
    (0..policies)
        .map(|i| {
            let pods = (0..per_policy)
                .map(|k| Prefix::host(Ipv4Addr::from_bits(0x0a40_0000 + i * per_policy + k)))
                .collect();
            let mut destinations = vec![
                Prefix::new(Ipv4Addr::new(198, 18, 0, 0), 15),
                Prefix::new(Ipv4Addr::new(192, 0, 2, 0), 24),
            ];
            if i % 3 == 0 {
                destinations.push(Prefix::new(Ipv4Addr::new(203, 0, 113, 0), 24));
            }
            PolicySpec {
                name: format!("team-{i:04}"),
                sources: pods,
                destinations,
                excluded: vec![Prefix::new(Ipv4Addr::new(198, 18, (i % 256) as u8, 0), 24)],
                egress: Ipv4Addr::from_bits(0xc0a8_6400 + i),
            }
        })
        .collect()
}
