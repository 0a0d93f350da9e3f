//! What the gateway reports about itself: one [`Snapshot`] of counters and state.
//!
//! The data path owns plain counters and publishes a snapshot a few times a second; the API
//! renders the latest one as Prometheus text (`GET /metrics`) or JSON (`GET /status`), and
//! `egret-gateway status` prints the JSON readably. Nothing here touches a socket.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Everything `/metrics` and `/status` show, as of `taken_unix_ms`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `[gateway].name`.
    pub name: String,
    /// `[gateway].interface`.
    pub interface: String,
    /// The interface's own primary address and MAC.
    pub interface_address: Option<Ipv4Addr>,
    pub interface_mac: String,
    /// Wall-clock time of the snapshot, milliseconds since the Unix epoch.
    pub taken_unix_ms: u64,
    /// Seconds since the data path started.
    pub uptime_seconds: f64,
    /// One entry per `[[floating_ip]]`, in config order.
    pub floating_ips: Vec<FloatingIpStatus>,
    /// The next hop towards the outside world and whether its MAC is resolved.
    pub next_hop: NextHopStatus,
    /// Node → outside (decapsulated and SNATed) traffic.
    pub outbound: Traffic,
    /// Outside → node (DNATed and encapsulated) traffic.
    pub inbound: Traffic,
    pub flows: FlowStatus,
    /// Refused packets by reason (`malformed`, `wrong_vni`, `disallowed_source`, …). Every
    /// known reason is present from the start, with 0.
    pub drops: BTreeMap<String, u64>,
    /// Frames the gateway answered or generated itself.
    pub control: ControlCounters,
    /// Nodes that sent tunnelled traffic recently (outer source address), with their MACs.
    pub nodes: Vec<NodeStatus>,
    /// The kernel fast path; its packets are also in `outbound` and `inbound`.
    #[serde(default)]
    pub fast_path: FastPathStatus,
    /// The VRRP adverts this gateway refused, and how it advertises.
    #[serde(default)]
    pub election: ElectionStatus,
    /// Flow state sync with the peer gateways (`[sync]`).
    #[serde(default)]
    pub sync: SyncStatus,
    /// The status API's own connections. The API server fills this in when it answers; the
    /// data path leaves it empty.
    #[serde(default)]
    pub api: ApiStatus,
    /// Reporting into the cluster (`[kubernetes]`). The API server fills this in from the
    /// reporter when it answers; the data path leaves it empty.
    #[serde(default)]
    pub kubernetes: KubernetesStatus,
}

/// How reporting into the `EgressGateway` status goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubernetesStatus {
    /// A `[kubernetes]` table is configured.
    pub enabled: bool,
    /// The `EgressGateway` reported into, and this gateway's field manager there.
    pub object: String,
    pub field_manager: String,
    /// What the last successful apply said: `nodes` (`Up`/`Down`) and `floatingIPs`.
    pub nodes: BTreeMap<String, String>,
    pub floating_ips: BTreeMap<String, String>,
    /// Successful applies, and the wall-clock time of the last one (ms since the epoch).
    pub applies: u64,
    pub last_apply_unix_ms: Option<u64>,
    /// What this gateway would report differs from the last apply: one is waiting, in
    /// flight, or backing off after an error.
    pub pending: bool,
    /// Failed applies by reason (`timeout`, `transport`, `not_found`, `forbidden`,
    /// `refused`, `server`, `client`), every reason present from the start.
    pub errors: BTreeMap<String, u64>,
    /// The last error, while the status is pending because of it.
    pub last_error: Option<String>,
}

/// The reporter's state, written by the reporter and read by the API.
pub type SharedKubernetes = std::sync::Arc<std::sync::Mutex<KubernetesStatus>>;

/// The connections of the status API (`[api].listen`): the shared server's counters.
pub use egret_api::ApiStatus;

/// Flow state sync with the peer gateways.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// A `[sync]` table is configured.
    pub enabled: bool,
    pub peers: Vec<SyncPeerStatus>,
    /// Datagrams, bytes and flow changes sent to and received from the peers (all of them).
    pub sent: SyncTraffic,
    pub received: SyncTraffic,
    /// Nacks sent (gaps seen here) and received (gaps a peer saw), batches sent again.
    pub nacks_sent: u64,
    pub nacks_received: u64,
    pub retransmits: u64,
    /// Full tables sent to peers, and asked of them.
    pub resyncs_sent: u64,
    pub resyncs_requested: u64,
    /// Datagrams are sealed and checked with `[sync].key_file`.
    #[serde(default)]
    pub authenticated: bool,
    /// Datagrams opened with `[sync].previous_key_file`: a peer still seals with it.
    #[serde(default)]
    pub previous_key: u64,
    /// Peer flows installed or updated, removed, refused (every reason), and dropped at
    /// the end of a peer's full resync because the peer no longer had them.
    pub flows_installed: u64,
    pub flows_removed: u64,
    pub flows_refused: u64,
    #[serde(default)]
    pub flows_swept: u64,
    /// Peer changes refused, by reason (`own_address`, `not_master`, `lifetime`, …), every
    /// reason present from the start.
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
    /// Datagrams refused, by reason (`bad_magic`, `version`, `length`, `unknown_peer`, …),
    /// every reason present from the start.
    pub drops: BTreeMap<String, u64>,
    /// Local changes dropped because a queue was full (a full resync follows), and errors
    /// the sync socket reported (a datagram the kernel refused to send, an ICMP error a
    /// peer's host sent back).
    pub queue_overflow: u64,
    pub socket_errors: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncTraffic {
    pub datagrams: u64,
    pub bytes: u64,
    pub changes: u64,
}

/// The sync with one peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncPeerStatus {
    /// Its `[sync].peers` entry.
    pub address: String,
    /// Heard from within three heartbeats (3 s).
    pub alive: bool,
    /// Age of the oldest change not yet sent to it, in seconds (0 when none waits).
    pub lag_seconds: f64,
    /// Changes and datagrams waiting to be sent to it (a resync in progress included).
    pub queue_depth: u64,
    /// The last sequence number sent to it, and the last of its stream applied here.
    pub last_sent_seq: u64,
    pub last_applied_seq: u64,
    /// Full tables sent to it, and received from it.
    pub resyncs_sent: u64,
    pub resyncs_received: u64,
    /// Times it restarted (a new epoch in its stream).
    pub restarts: u64,
    /// It echoes this gateway's current token: its datagrams are acted on.
    #[serde(default)]
    pub confirmed: bool,
    /// Its election address, as it announces it.
    #[serde(default)]
    pub primary: Option<std::net::Ipv4Addr>,
    /// Its `[gateway].name`, as its heartbeats announce it.
    #[serde(default)]
    pub name: Option<String>,
    /// Milliseconds since its last fresh datagram, as of the sync's latest report (`None`:
    /// never heard).
    #[serde(default)]
    pub silent_ms: Option<u64>,
}

/// The election as a whole (each floating IP's own state is in [`FloatingIpStatus`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionStatus {
    /// `multicast` (224.0.0.18) or `unicast` (to `[election].peers`).
    pub mode: String,
    /// Adverts refused, by reason (`ttl`, `checksum`, `version`, `length`, …). Every reason
    /// is present from the start, with 0.
    pub adverts_rejected: BTreeMap<String, u64>,
    /// Well-formed adverts for a VRID this gateway does not run.
    pub adverts_unknown_vrid: u64,
    /// Adverts the kernel refused to send.
    pub send_errors: u64,
}

/// What the kernel fast path did for established flows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FastPathStatus {
    /// Loaded and attached.
    pub enabled: bool,
    /// Why not, when it is not.
    pub reason: Option<String>,
    /// Flows it holds.
    pub flows: u64,
    pub outbound: Traffic,
    pub inbound: Traffic,
    /// Packets it took but could not rewrite.
    pub errors: u64,
    /// Flows the kernel refused to take (a full map); they stay in user space.
    pub install_failures: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatingIpStatus {
    pub address: Ipv4Addr,
    pub vrid: u8,
    /// Election state: `master`, `backup` or `initialize`.
    pub state: String,
    /// The gateway that owns the address, as far as this one knows: its own name when it
    /// is the master, else the master's primary address (empty while unknown).
    pub master: String,
    /// The master's primary address (the source of its adverts), when known.
    #[serde(default)]
    pub master_address: Option<Ipv4Addr>,
    /// Whether this gateway answers ARP for the address and forwards its traffic now.
    #[serde(default)]
    pub owned: bool,
    /// This gateway's priority for the address (1..=254).
    pub priority: u8,
    /// Wall-clock time of the last state change, milliseconds since the Unix epoch.
    pub last_transition_unix_ms: u64,
    /// Election state changes, adverts sent and adverts accepted for this address.
    #[serde(default)]
    pub transitions: u64,
    #[serde(default)]
    pub adverts_sent: u64,
    #[serde(default)]
    pub adverts_received: u64,
    /// NAT ports in use on this address (distinct ports, counting a port once even when it
    /// serves several destinations), and the size of `[nat].port_range`.
    pub ports_in_use: u32,
    pub port_range_size: u32,
    /// Live flows whose egress address this is.
    pub flows: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NextHopStatus {
    pub address: Option<Ipv4Addr>,
    /// `None` while unresolved.
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets: u64,
    /// IPv4 bytes of the translated packet (the inner packet, without tunnel headers).
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStatus {
    pub live: u64,
    pub max: u64,
    pub created: u64,
    pub expired: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlCounters {
    pub arp_requests_answered: u64,
    pub arp_requests_sent: u64,
    pub gratuitous_arps_sent: u64,
    pub icmp_echo_replies_sent: u64,
    /// ICMP errors the gateway generated itself (time exceeded, fragmentation needed).
    pub icmp_errors_sent: u64,
    /// ICMP errors not sent because more were due than the rate limit allows.
    #[serde(default)]
    pub icmp_errors_rate_limited: u64,
    /// Frames the kernel refused to send.
    pub tx_errors: u64,
    /// Frames user space read from the interface: all it handled, none of the fast path's.
    #[serde(default)]
    pub frames_read: u64,
    /// ARP probes of nodes' addresses, and what they concluded.
    #[serde(default)]
    pub node_probes: NodeProbes,
}

/// ARP probes that confirm a node's MAC before traffic from another MAC is believed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProbes {
    pub sent: u64,
    /// Only the bound MAC answered.
    pub confirmed: u64,
    /// Only another MAC answered: the node moved there.
    pub moved: u64,
    /// Several MACs answered: someone else claims a node's address; the binding stayed.
    pub conflict: u64,
    pub unanswered: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub address: Ipv4Addr,
    /// Outer MAC the node's traffic came from, and the inner MAC of its tunnel device.
    pub mac: String,
    pub tunnel_mac: String,
    /// The outer MAC is confirmed (by ARP, or as our next hop's for a node behind it).
    #[serde(default)]
    pub verified: bool,
}

/// The latest snapshot, written by the data path and read by the API.
pub type SharedSnapshot = std::sync::Arc<std::sync::Mutex<Snapshot>>;
