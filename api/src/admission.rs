//! Who may hold a connection to the API: the limits of the server, and the pure bookkeeping
//! that enforces the connection counts.
//!
//! The accept loop asks [`Admission::admit`] about each connection it accepts and hands the
//! [`Client`] back with [`Admission::release`] when the connection ends. Nothing here waits,
//! reads a clock or touches a socket: a decision is a map update.
//!
//! Invariants: a client address has an entry exactly while it has an open connection, so the
//! map never holds more than [`Limits::total`] entries however many addresses connect; the
//! open counts never exceed the limits; every refusal is counted under its reason.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Connections one client address may have open at once. A Prometheus server holds one
/// connection per scrape and an operator's `egret-gateway status` or curl one more; 16
/// leaves room for an HA pair of scrapers and several people behind one NAT address, while
/// one slow or abusive host can only ever take 16 slots.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 16;

/// Connections open at once, all clients together. Each one is a file descriptor, and a
/// service's soft descriptor limit is commonly 1024 (systemd's default): 512 leaves the rest
/// of the daemon (packet sockets, eBPF maps, the `nft` it runs) the descriptors it needs,
/// and is still 32 clients at their own limit.
pub const MAX_CONNECTIONS: usize = 512;

/// How long a client may take to send its whole request head, from the moment it connects.
/// A scraper sends its request at once; 3 s is ample even over a congested management
/// network, and frees a slot held by a slow client within seconds.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a connection may live, from accept to close, whatever it is doing: the head
/// within [`HEADER_READ_TIMEOUT`], then the answer, which is rendered at once and small.
/// 10 s matches Prometheus's default scrape timeout; a client that has not read its answer
/// by then is cut.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// Largest request head accepted, request line and headers included; hyper answers 431
/// beyond it. A scraper's head is a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;

/// The limits a server enforces. [`Limits::default`] is what the daemons run with; tests
/// use shorter times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once per client ([`Client`]).
    pub per_client: usize,
    /// Connections open at once in all.
    pub total: usize,
    /// Time from accept to a complete request head.
    pub header_read_timeout: Duration,
    /// Time from accept to close.
    pub lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_client: MAX_CONNECTIONS_PER_CLIENT,
            total: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            lifetime: CONNECTION_LIFETIME,
        }
    }
}

/// Why a connection was closed as soon as it was accepted. Not a failure of the daemon: the
/// limits working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its client already had [`Limits::per_client`] connections open.
    ClientLimit,
    /// [`Limits::total`] connections were open.
    TotalLimit,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::ClientLimit, Refusal::TotalLimit];

    /// The `reason` label of `egret_gateway_api_connections_refused_total` and
    /// `egret_agent_api_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::ClientLimit => "client_limit",
            Refusal::TotalLimit => "total_limit",
        }
    }
}

/// The connections of an API server, as its `/metrics` and `/status` show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiStatus {
    /// Connections open now: being read, answered, or waiting for their request head.
    pub connections_open: u64,
    /// Connections closed as soon as they were accepted because a limit was reached, by
    /// reason (`client_limit`, `total_limit`), every reason present from the start.
    pub connections_refused: BTreeMap<String, u64>,
}

/// What the per-client limit counts: one IPv4 address, or one IPv6 /64 (a host is commonly
/// given a whole /64 and can pick any address in it). An IPv4 client of a dual-stack socket
/// (`::ffff:a.b.c.d`) counts as its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client(IpAddr);

impl Client {
    pub fn of(peer: IpAddr) -> Client {
        match peer.to_canonical() {
            IpAddr::V4(v4) => Client(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Client(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

/// The open connections per client and in all, and the refusals so far.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    open: HashMap<Client, usize>,
    open_total: usize,
    refused: [u64; Refusal::ALL.len()],
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Admission {
            limits,
            open: HashMap::new(),
            open_total: 0,
            refused: [0; Refusal::ALL.len()],
        }
    }

    /// Decides about a connection just accepted from `peer`: admitted (give the [`Client`]
    /// back to [`Admission::release`] when it closes) or refused, and counted. A client at
    /// its own limit is refused for that reason even when the total is reached too, so that
    /// `total_limit` counts only pressure no single client explains.
    pub fn admit(&mut self, peer: IpAddr) -> Result<Client, Refusal> {
        let client = Client::of(peer);
        let open = self.open.get(&client).copied().unwrap_or(0);
        let refusal = if open >= self.limits.per_client {
            Refusal::ClientLimit
        } else if self.open_total >= self.limits.total {
            Refusal::TotalLimit
        } else {
            self.open.insert(client, open + 1);
            self.open_total += 1;
            return Ok(client);
        };
        self.refused[refusal as usize] += 1;
        Err(refusal)
    }

    /// A connection of `client` closed.
    pub fn release(&mut self, client: Client) {
        let Some(open) = self.open.get_mut(&client) else {
            debug_assert!(false, "released a connection never admitted: {client:?}");
            return;
        };
        *open -= 1;
        if *open == 0 {
            self.open.remove(&client);
        }
        self.open_total -= 1;
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open_total
    }

    /// Client addresses with a connection open now.
    pub fn clients(&self) -> usize {
        self.open.len()
    }

    /// The counters as `/metrics` and `/status` show them.
    pub fn status(&self) -> ApiStatus {
        ApiStatus {
            connections_open: self.open_total as u64,
            connections_refused: Refusal::ALL
                .iter()
                .map(|&r| (r.label().to_owned(), self.refused[r as usize]))
                .collect::<BTreeMap<_, _>>(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn limits(per_client: usize, total: usize) -> Limits {
        Limits {
            per_client,
            total,
            ..Limits::default()
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn refused(admission: &Admission, reason: &str) -> u64 {
        admission.status().connections_refused[reason]
    }

    #[test]
    fn a_client_at_its_limit_is_refused_and_others_are_not() {
        let mut admission = Admission::new(limits(2, 10));
        let a = admission.admit(ip("10.0.0.1")).expect("first");
        admission.admit(ip("10.0.0.1")).expect("second");
        assert_eq!(admission.admit(ip("10.0.0.1")), Err(Refusal::ClientLimit));
        admission.admit(ip("10.0.0.2")).expect("another client");
        assert_eq!(admission.open(), 3);
        assert_eq!(refused(&admission, "client_limit"), 1);
        // A slot given back can be taken again.
        admission.release(a);
        admission.admit(ip("10.0.0.1")).expect("after a release");
        assert_eq!(refused(&admission, "client_limit"), 1);
    }

    #[test]
    fn the_total_is_capped_for_every_client() {
        let mut admission = Admission::new(limits(2, 3));
        let first = admission.admit(ip("10.0.0.1")).expect("1");
        admission.admit(ip("10.0.0.1")).expect("2");
        admission.admit(ip("10.0.0.2")).expect("3");
        assert_eq!(admission.admit(ip("10.0.0.3")), Err(Refusal::TotalLimit));
        // A client at its own limit is refused for that reason, total reached or not.
        assert_eq!(admission.admit(ip("10.0.0.1")), Err(Refusal::ClientLimit));
        assert_eq!(refused(&admission, "total_limit"), 1);
        assert_eq!(refused(&admission, "client_limit"), 1);
        admission.release(first);
        admission.admit(ip("10.0.0.3")).expect("a slot freed");
    }

    #[test]
    fn every_reason_is_counted_from_the_start() {
        let status = Admission::new(Limits::default()).status();
        assert_eq!(status.connections_open, 0);
        assert_eq!(
            status.connections_refused,
            [
                ("client_limit".to_owned(), 0),
                ("total_limit".to_owned(), 0)
            ]
            .into_iter()
            .collect()
        );
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            Client::of(ip("2001:db8:1:2:aaaa::1")),
            Client::of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Client::of(ip("2001:db8:1:2::1")),
            Client::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Client::of(ip("::ffff:192.0.2.7")),
            Client::of(ip("192.0.2.7"))
        );
        let mut admission = Admission::new(limits(1, 10));
        admission.admit(ip("2001:db8::1")).expect("first");
        assert_eq!(
            admission.admit(ip("2001:db8::2")),
            Err(Refusal::ClientLimit)
        );
    }

    #[test]
    fn the_production_limits_are_the_documented_constants() {
        let limits = Limits::default();
        assert_eq!(limits.per_client, MAX_CONNECTIONS_PER_CLIENT);
        assert_eq!(limits.total, MAX_CONNECTIONS);
        assert!(limits.header_read_timeout < limits.lifetime);
        assert!(limits.per_client < limits.total);
    }

    proptest! {
        /// Whatever the order of connections and closes, the counts match the connections
        /// admitted and not yet released, stay within the limits, and only clients with an
        /// open connection are remembered.
        #[test]
        fn counts_follow_admits_and_releases(
            steps in proptest::collection::vec((any::<bool>(), 0u8..6, any::<prop::sample::Index>()), 0..400)
        ) {
            let limits = limits(3, 8);
            let mut admission = Admission::new(limits);
            let mut held: Vec<(IpAddr, Client)> = Vec::new();
            let mut refusals = 0;
            for (connect, host, pick) in steps {
                if connect || held.is_empty() {
                    let peer = IpAddr::from([10, 0, 0, host]);
                    let same = held.iter().filter(|(p, _)| *p == peer).count();
                    match admission.admit(peer) {
                        Ok(client) => {
                            prop_assert!(same < limits.per_client && held.len() < limits.total);
                            held.push((peer, client));
                        }
                        Err(Refusal::ClientLimit) => {
                            prop_assert_eq!(same, limits.per_client);
                            refusals += 1;
                        }
                        Err(Refusal::TotalLimit) => {
                            prop_assert_eq!(held.len(), limits.total);
                            refusals += 1;
                        }
                    }
                } else {
                    let (_, client) = held.swap_remove(pick.index(held.len()));
                    admission.release(client);
                }
                prop_assert_eq!(admission.open(), held.len());
                let mut peers: Vec<_> = held.iter().map(|(p, _)| *p).collect();
                peers.sort();
                peers.dedup();
                prop_assert_eq!(admission.clients(), peers.len());
                let status = admission.status();
                prop_assert_eq!(status.connections_refused.values().sum::<u64>(), refusals);
            }
        }
    }
}
