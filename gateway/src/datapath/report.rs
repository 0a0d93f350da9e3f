//! What the packet path reports: its counters, what the I/O shell counted for it, and its
//! part of the status snapshot.

use super::*;

impl Datapath {
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Counts frames the I/O shell read from the interface (the fast path's frames never
    /// reach it).
    pub fn count_frames_read(&mut self, count: u64) {
        self.counters.frames_read += count;
    }

    /// Counts a frame the I/O shell could not send.
    pub fn count_tx_error(&mut self) {
        self.counters.tx_errors += 1;
    }

    /// Counts frames the kernel dropped because a receiving socket's buffer was full.
    pub fn count_rx_buffer_drops(&mut self, count: u64) {
        self.counters.drop_many(DropReason::RxBufferFull, count);
    }

    /// Counts a frame cut short on receipt.
    pub fn count_truncated(&mut self) {
        self.counters.drop(DropReason::Truncated);
    }

    /// What `/status` and `/metrics` show of the packet path. `wall_ms` maps `now` to
    /// wall-clock time. The floating IPs carry what the data path knows (owned, ports,
    /// flows); the gateway core adds the election's view of each, and the election's and
    /// the sync's own sections.
    pub fn snapshot(&self, now: Instant, wall_ms: u64) -> status::Snapshot {
        let range = &self.setup.nat.port_range;
        let range_size = u32::from(*range.end()) - u32::from(*range.start()) + 1;
        let table = self.nat.table();
        status::Snapshot {
            name: self.setup.name.clone(),
            interface: self.setup.interface.clone(),
            interface_address: Some(self.setup.address),
            interface_mac: self.setup.mac.to_string(),
            taken_unix_ms: wall_ms,
            uptime_seconds: (now - self.started).total_millis() as f64 / 1000.0,
            floating_ips: self
                .owned
                .iter()
                .map(|o| status::FloatingIpStatus {
                    address: o.ip.address,
                    vrid: o.ip.vrid,
                    master: if o.owning {
                        self.setup.name.clone()
                    } else {
                        String::new()
                    },
                    owned: o.owning,
                    priority: o.ip.priority,
                    ports_in_use: o.ports.ports_in_use(),
                    port_range_size: range_size,
                    flows: o.ports.flows(),
                    state: String::new(),
                    master_address: None,
                    last_transition_unix_ms: 0,
                    transitions: 0,
                    adverts_sent: 0,
                    adverts_received: 0,
                })
                .collect(),
            next_hop: status::NextHopStatus {
                address: Some(self.next_hop.address),
                mac: self.next_hop.mac.map(|m| m.to_string()),
            },
            outbound: self.counters.outbound,
            inbound: self.counters.inbound,
            flows: status::FlowStatus {
                live: table.len() as u64,
                max: u64::from(table.max_flows()),
                created: self.counters.flows_created,
                expired: self.counters.flows_expired,
            },
            drops: DropReason::all()
                .map(|r| (r.label().to_string(), self.counters.drops(r)))
                .collect(),
            control: status::ControlCounters {
                arp_requests_answered: self.counters.arp_requests_answered,
                arp_requests_sent: self.counters.arp_requests_sent,
                gratuitous_arps_sent: self.counters.gratuitous_arps_sent,
                icmp_echo_replies_sent: self.counters.icmp_echo_replies_sent,
                icmp_errors_sent: self.counters.icmp_errors_sent,
                icmp_errors_rate_limited: self.counters.icmp_errors_rate_limited,
                tx_errors: self.counters.tx_errors,
                frames_read: self.counters.frames_read,
                node_probes: status::NodeProbes {
                    sent: self.counters.node_probes,
                    confirmed: self.counters.node_verdicts[NodeVerdict::Confirmed as usize],
                    moved: self.counters.node_verdicts[NodeVerdict::Moved as usize],
                    conflict: self.counters.node_verdicts[NodeVerdict::Conflict as usize],
                    unanswered: self.counters.node_verdicts[NodeVerdict::Unanswered as usize],
                },
            },
            nodes: self
                .nodes
                .iter()
                .map(|(address, b)| status::NodeStatus {
                    address,
                    mac: b.node.mac.to_string(),
                    tunnel_mac: b.node.tunnel_mac.to_string(),
                    verified: b.verified,
                })
                .collect(),
            fast_path: status::FastPathStatus {
                flows: self.offloaded.len() as u64,
                ..Default::default()
            },
            election: status::ElectionStatus::default(),
            sync: status::SyncStatus::default(),
            // Filled in by the API server, which owns those connections.
            api: status::ApiStatus::default(),
            kubernetes: status::KubernetesStatus::default(),
        }
    }
}
