//! A gateway's `/status` as the hostile-host labs read it: counters by JSON pointer, as of
//! the snapshot's own time, so that a test can ask for a snapshot taken after an attack
//! ended and compare it with one from before.
//!
//! The gateway takes a snapshot of its data path every 250 ms, and its sync notes its
//! counters into the data path every 250 ms: a snapshot taken [`COUNTERS_LAG`] after an
//! instant holds every counter as of that instant or later.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{HaLab, Member};

/// How much later than an instant a snapshot must be taken to show everything counted up
/// to that instant: a publication period of the data path's snapshot and of the sync's
/// counters, and some slack.
pub const COUNTERS_LAG: Duration = Duration::from_millis(600);

/// One `/status` body.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When the gateway took it (`taken_unix_ms`).
    pub taken: SystemTime,
    pub body: Value,
}

/// A node as `/status` lists it, its MACs written as `ip link` does (`aa:bb:cc:dd:ee:ff`;
/// the gateway writes `aa-bb-…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    pub address: Ipv4Addr,
    pub mac: String,
    pub tunnel_mac: String,
    pub verified: bool,
}

impl Snapshot {
    /// Parses a `/status` body.
    ///
    /// # Errors
    ///
    /// When it is not JSON.
    pub fn parse(text: &str) -> Result<Self> {
        let body: Value = serde_json::from_str(text).context("/status is not JSON")?;
        let ms = body
            .get("taken_unix_ms")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        Ok(Self {
            taken: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
            body,
        })
    }

    /// The number at `pointer` (`/sync/drops/auth`), 0 when there is none.
    pub fn count(&self, pointer: &str) -> u64 {
        self.body
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or(0)
    }

    /// How much the number at `pointer` grew since `before` (0 when it did not).
    pub fn grew(&self, before: &Snapshot, pointer: &str) -> u64 {
        self.count(pointer).saturating_sub(before.count(pointer))
    }

    /// The numbers of the map at `pointer` (`/sync/drops`) that grew since `before`, by how
    /// much.
    pub fn grown(&self, before: &Snapshot, pointer: &str) -> Vec<(String, u64)> {
        let Some(map) = self.body.pointer(pointer).and_then(Value::as_object) else {
            return Vec::new();
        };
        map.keys()
            .filter_map(|key| {
                let path = format!("{pointer}/{key}");
                let grown = self.grew(before, &path);
                (grown > 0).then(|| (key.clone(), grown))
            })
            .collect()
    }

    /// The first sync peer's entry, number at `field` (`resyncs_received`).
    pub fn peer(&self, field: &str) -> u64 {
        self.count(&format!("/sync/peers/0/{field}"))
    }

    /// The nodes it knows.
    pub fn nodes(&self) -> Vec<NodeEntry> {
        self.body
            .get("nodes")
            .and_then(Value::as_array)
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|node| {
                        let text = |key: &str| node.get(key).and_then(Value::as_str);
                        let mac = |key: &str| Some(text(key)?.replace('-', ":").to_lowercase());
                        Some(NodeEntry {
                            address: text("address")?.parse().ok()?,
                            mac: mac("mac")?,
                            tunnel_mac: mac("tunnel_mac")?,
                            verified: node
                                .get("verified")
                                .and_then(Value::as_bool)
                                .unwrap_or(false),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The node at `address`, if known.
    pub fn node(&self, address: Ipv4Addr) -> Option<NodeEntry> {
        self.nodes()
            .into_iter()
            .find(|node| node.address == address)
    }

    /// The first snapshot `read` returns for which `ready` holds, read every 50 ms; the
    /// error names `whose` (a gateway) and `what`, and shows the last one.
    ///
    /// # Errors
    ///
    /// When `read` fails, or no snapshot is ready within `timeout`.
    pub fn wait(
        whose: &str,
        what: &str,
        timeout: Duration,
        mut read: impl FnMut() -> Result<Snapshot>,
        mut ready: impl FnMut(&Snapshot) -> bool,
    ) -> Result<Snapshot> {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = read()?;
            if ready(&snapshot) {
                return Ok(snapshot);
            }
            if Instant::now() >= deadline {
                bail!(
                    "{whose}: {what}: not within {timeout:?}; its last /status: {}",
                    snapshot.body
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first snapshot `read` returns that was taken [`COUNTERS_LAG`] after `after`, or
    /// later: it shows everything counted up to `after`.
    ///
    /// # Errors
    ///
    /// When `read` fails, or the gateway publishes none within 5 s.
    pub fn taken_after(
        whose: &str,
        after: SystemTime,
        read: impl FnMut() -> Result<Snapshot>,
    ) -> Result<Snapshot> {
        let after = after + COUNTERS_LAG;
        Snapshot::wait(
            whose,
            "a status snapshot newer than the action",
            COUNTERS_LAG + Duration::from_secs(5),
            read,
            |s| s.taken > after,
        )
    }
}

impl HaLab {
    /// `member`'s `/status` now.
    ///
    /// # Errors
    ///
    /// When its API does not answer.
    pub fn snapshot(&self, member: Member) -> Result<Snapshot> {
        Snapshot::parse(&self.api_get(member, "/status")?)
    }

    /// The first snapshot of `member` for which `ready` holds, polled every 50 ms; the
    /// error names `what` and shows the last one.
    ///
    /// # Errors
    ///
    /// When none does within `timeout`.
    pub fn wait_snapshot(
        &self,
        member: Member,
        what: &str,
        timeout: Duration,
        ready: impl FnMut(&Snapshot) -> bool,
    ) -> Result<Snapshot> {
        Snapshot::wait(
            member.name(),
            what,
            timeout,
            || self.snapshot(member),
            ready,
        )
    }

    /// A snapshot of `member` taken [`COUNTERS_LAG`] after `after`, or later: it shows
    /// everything counted up to `after`.
    ///
    /// # Errors
    ///
    /// When the gateway publishes none within 5 s.
    pub fn snapshot_after(&self, member: Member, after: SystemTime) -> Result<Snapshot> {
        Snapshot::taken_after(member.name(), after, || self.snapshot(member))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_by_pointer_and_growth() {
        let before = Snapshot::parse(
            r#"{"taken_unix_ms":1000,"sync":{"drops":{"auth":2,"replay":0},
                "peers":[{"resyncs_received":1}]},
                "nodes":[{"address":"192.168.50.21","mac":"02-00-00-00-00-01",
                "tunnel_mac":"02-00-00-00-0A-02","verified":true}]}"#,
        )
        .expect("valid");
        let after = Snapshot::parse(
            r#"{"taken_unix_ms":2000,"sync":{"drops":{"auth":7,"replay":3},
                "peers":[{"resyncs_received":2}]}}"#,
        )
        .expect("valid");
        assert_eq!(after.taken, SystemTime::UNIX_EPOCH + Duration::from_secs(2));
        assert_eq!(after.count("/sync/drops/auth"), 7);
        assert_eq!(after.count("/sync/drops/missing"), 0);
        assert_eq!(after.grew(&before, "/sync/drops/auth"), 5);
        assert_eq!(before.grew(&after, "/sync/drops/auth"), 0);
        assert_eq!(
            after.grown(&before, "/sync/drops"),
            vec![("auth".to_owned(), 5), ("replay".to_owned(), 3)]
        );
        assert_eq!(after.peer("resyncs_received"), 2);
        let node = before
            .node(Ipv4Addr::new(192, 168, 50, 21))
            .expect("listed");
        assert!(node.verified);
        assert_eq!(node.mac, "02:00:00:00:00:01");
        assert_eq!(node.tunnel_mac, "02:00:00:00:0a:02");
        assert!(after.nodes().is_empty());
    }
}
