//! A snapshot with every field set, for the API's tests.

use std::collections::BTreeMap;

use crate::status::{
    ApiStatus, ControlCounters, ElectionStatus, FastPathStatus, FloatingIpStatus, FlowStatus,
    KubernetesStatus, NextHopStatus, NodeStatus, Snapshot, SyncPeerStatus, SyncStatus, SyncTraffic,
    Traffic,
};

/// Gateway gw1 owning 192.168.1.100 and backing up 192.168.1.101, with traffic, one
/// non-zero drop reason and one node.
pub(crate) fn snapshot() -> Snapshot {
    let mut drops = BTreeMap::new();
    drops.insert("malformed".to_owned(), 0);
    drops.insert("disallowed_source".to_owned(), 7);
    Snapshot {
        name: "gw1".to_owned(),
        interface: "eth1".to_owned(),
        interface_address: Some("192.168.1.11".parse().expect("address")),
        interface_mac: "02:00:00:00:00:11".to_owned(),
        taken_unix_ms: 1_700_000_000_000,
        uptime_seconds: 12.5,
        floating_ips: vec![
            FloatingIpStatus {
                address: "192.168.1.100".parse().expect("address"),
                vrid: 10,
                state: "master".to_owned(),
                master: "gw1".to_owned(),
                master_address: Some("192.168.1.11".parse().expect("address")),
                owned: true,
                priority: 100,
                last_transition_unix_ms: 1_700_000_000_000,
                transitions: 2,
                adverts_sent: 120,
                adverts_received: 3,
                ports_in_use: 3,
                port_range_size: 49152,
                flows: 4,
            },
            FloatingIpStatus {
                address: "192.168.1.101".parse().expect("address"),
                vrid: 11,
                state: "backup".to_owned(),
                master: "192.168.1.12".to_owned(),
                master_address: Some("192.168.1.12".parse().expect("address")),
                owned: false,
                priority: 90,
                last_transition_unix_ms: 1_700_000_000_000,
                transitions: 1,
                adverts_sent: 0,
                adverts_received: 118,
                ports_in_use: 0,
                port_range_size: 49152,
                flows: 0,
            },
        ],
        next_hop: NextHopStatus {
            address: Some("192.168.1.1".parse().expect("address")),
            mac: Some("02:00:00:00:00:01".to_owned()),
        },
        outbound: Traffic {
            packets: 10,
            bytes: 1000,
        },
        inbound: Traffic {
            packets: 9,
            bytes: 900,
        },
        flows: FlowStatus {
            live: 4,
            max: 1_000_000,
            created: 6,
            expired: 2,
        },
        drops,
        control: ControlCounters {
            arp_requests_answered: 1,
            arp_requests_sent: 2,
            gratuitous_arps_sent: 3,
            icmp_echo_replies_sent: 4,
            icmp_errors_sent: 5,
            icmp_errors_rate_limited: 7,
            tx_errors: 6,
            frames_read: 8,
            node_probes: crate::status::NodeProbes {
                sent: 9,
                confirmed: 7,
                moved: 1,
                conflict: 1,
                unanswered: 0,
            },
        },
        nodes: vec![NodeStatus {
            address: "192.168.1.21".parse().expect("address"),
            mac: "02:00:00:00:00:21".to_owned(),
            tunnel_mac: "02:00:00:00:01:21".to_owned(),
            verified: true,
        }],
        fast_path: FastPathStatus {
            enabled: true,
            reason: None,
            flows: 3,
            outbound: Traffic {
                packets: 900,
                bytes: 90_000,
            },
            inbound: Traffic {
                packets: 1800,
                bytes: 2_000_000,
            },
            errors: 2,
            install_failures: 1,
        },
        election: ElectionStatus {
            mode: "multicast".to_owned(),
            adverts_rejected: [("ttl".to_owned(), 2), ("checksum".to_owned(), 0)]
                .into_iter()
                .collect(),
            adverts_unknown_vrid: 5,
            send_errors: 1,
        },
        sync: SyncStatus {
            enabled: true,
            peers: vec![SyncPeerStatus {
                address: "192.168.1.12:4801".to_owned(),
                alive: true,
                lag_seconds: 0.004,
                queue_depth: 12,
                last_sent_seq: 41,
                last_applied_seq: 39,
                resyncs_sent: 1,
                resyncs_received: 1,
                restarts: 0,
                confirmed: true,
                primary: Some(std::net::Ipv4Addr::new(192, 168, 1, 12)),
                name: Some("gw2".to_owned()),
                silent_ms: Some(400),
            }],
            sent: SyncTraffic {
                datagrams: 40,
                bytes: 3000,
                changes: 300,
            },
            received: SyncTraffic {
                datagrams: 38,
                bytes: 2600,
                changes: 250,
            },
            nacks_sent: 1,
            nacks_received: 2,
            retransmits: 3,
            resyncs_sent: 1,
            resyncs_requested: 1,
            authenticated: true,
            previous_key: 3,
            flows_installed: 250,
            flows_removed: 10,
            flows_refused: 4,
            flows_swept: 2,
            refused: [("not_master".to_owned(), 3), ("lifetime".to_owned(), 1)]
                .into_iter()
                .collect(),
            drops: [("bad_magic".to_owned(), 6), ("unknown_peer".to_owned(), 0)]
                .into_iter()
                .collect(),
            queue_overflow: 0,
            socket_errors: 0,
        },
        api: ApiStatus {
            connections_open: 3,
            connections_refused: [
                ("client_limit".to_owned(), 284),
                ("total_limit".to_owned(), 0),
            ]
            .into_iter()
            .collect(),
        },
        kubernetes: KubernetesStatus {
            enabled: true,
            object: "default".to_owned(),
            field_manager: "egret-gateway/gw1".to_owned(),
            nodes: [("gw1", "Up"), ("gw2", "Up")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            floating_ips: [("192.168.1.100", "gw1"), ("192.168.1.101", "gw2")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            applies: 3,
            last_apply_unix_ms: Some(1_699_999_998_000),
            pending: false,
            errors: crate::io::kube::KubeError::LABELS
                .iter()
                .map(|l| ((*l).to_owned(), u64::from(*l == "timeout")))
                .collect(),
            last_error: None,
        },
    }
}
