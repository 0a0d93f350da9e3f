//! `GET /metrics`: a [`Snapshot`] as Prometheus text exposition format 0.0.4.
//!
//! Every family is written with its `# HELP` and `# TYPE` lines exactly once, even when it
//! has no samples (no floating IP configured, no drop reason known yet), so dashboards and
//! alerts can rely on the names. Label values are escaped as the format requires; samples of
//! one family are contiguous. Rendering is pure: the same snapshot gives the same text.

use std::fmt::Write as _;

use crate::status::{FloatingIpStatus, Snapshot};

/// The content type of [`render_prometheus`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `s` as Prometheus text exposition format 0.0.4.
pub fn render_prometheus(s: &Snapshot) -> String {
    let mut out = Exposition::default();

    out.per_direction(
        "egret_gateway_packets_total",
        "Packets translated; outbound is node to outside, inbound is outside to node.",
        (s.outbound.packets, s.inbound.packets),
    );
    out.per_direction(
        "egret_gateway_bytes_total",
        "IPv4 bytes of translated packets, without tunnel headers; outbound is node to outside.",
        (s.outbound.bytes, s.inbound.bytes),
    );

    out.family("egret_gateway_flows", "gauge", "Live NAT flows.");
    out.sample(&[], s.flows.live);
    out.family(
        "egret_gateway_flows_max",
        "gauge",
        "Live NAT flows at most ([nat].max_flows); new flows beyond it are dropped.",
    );
    out.sample(&[], s.flows.max);
    out.family(
        "egret_gateway_flows_created_total",
        "counter",
        "NAT flows created.",
    );
    out.sample(&[], s.flows.created);
    out.family(
        "egret_gateway_flows_expired_total",
        "counter",
        "NAT flows removed after their idle timeout.",
    );
    out.sample(&[], s.flows.expired);

    out.family(
        "egret_gateway_drops_total",
        "counter",
        "Packets the gateway refused, by reason.",
    );
    for (reason, count) in &s.drops {
        out.sample(&[("reason", reason)], *count);
    }

    // Per floating IP. Addresses are unique (the config refuses duplicates), so each family
    // has at most one series per address.
    let per_ip: [(&str, &str, PerIp); 3] = [
        (
            "egret_gateway_nat_ports_in_use",
            "NAT ports in use on an egress IP, a port counted once however many destinations it serves.",
            |ip| ip.ports_in_use.into(),
        ),
        (
            "egret_gateway_nat_port_range_size",
            "NAT ports available on an egress IP ([nat].port_range).",
            |ip| ip.port_range_size.into(),
        ),
        (
            "egret_gateway_nat_flows",
            "Live NAT flows leaving through an egress IP.",
            |ip| ip.flows,
        ),
    ];
    for (name, help, value) in per_ip {
        out.family(name, "gauge", help);
        for ip in &s.floating_ips {
            out.sample(&[("egress_ip", &ip.address.to_string())], value(ip));
        }
    }
    out.family(
        "egret_gateway_floating_ip_master",
        "gauge",
        "1 when this gateway is the election master of the floating IP, else 0.",
    );
    for ip in &s.floating_ips {
        let (address, vrid) = (ip.address.to_string(), ip.vrid.to_string());
        let master = u64::from(ip.state == "master");
        out.sample(&[("address", &address), ("vrid", &vrid)], master);
    }

    // The election, per floating IP (labelled like egret_gateway_floating_ip_master).
    let per_vrid: [(&str, &str, &str, PerIp); 4] = [
        (
            "egret_gateway_vrrp_priority",
            "gauge",
            "This gateway's VRRP priority for the floating IP.",
            |ip| ip.priority.into(),
        ),
        (
            "egret_gateway_vrrp_transitions_total",
            "counter",
            "VRRP state changes of the floating IP's instance on this gateway.",
            |ip| ip.transitions,
        ),
        (
            "egret_gateway_vrrp_adverts_sent_total",
            "counter",
            "VRRP adverts this gateway sent for the floating IP.",
            |ip| ip.adverts_sent,
        ),
        (
            "egret_gateway_vrrp_adverts_received_total",
            "counter",
            "VRRP adverts for the floating IP accepted from other gateways.",
            |ip| ip.adverts_received,
        ),
    ];
    for (name, kind, help, value) in per_vrid {
        out.family(name, kind, help);
        for ip in &s.floating_ips {
            let (address, vrid) = (ip.address.to_string(), ip.vrid.to_string());
            out.sample(&[("address", &address), ("vrid", &vrid)], value(ip));
        }
    }
    out.family(
        "egret_gateway_vrrp_last_transition_timestamp_seconds",
        "gauge",
        "Unix time of the floating IP's last VRRP state change on this gateway.",
    );
    for ip in &s.floating_ips {
        let (address, vrid) = (ip.address.to_string(), ip.vrid.to_string());
        let at = ip.last_transition_unix_ms as f64 / 1000.0;
        out.sample_f64(&[("address", &address), ("vrid", &vrid)], at);
    }
    out.family(
        "egret_gateway_vrrp_adverts_drop_total",
        "counter",
        "VRRP adverts refused, by reason (unknown_vrid: well-formed, for a VRID not configured here).",
    );
    for (reason, count) in &s.election.adverts_rejected {
        out.sample(&[("reason", reason)], *count);
    }
    out.sample(
        &[("reason", "unknown_vrid")],
        s.election.adverts_unknown_vrid,
    );
    out.family(
        "egret_gateway_vrrp_advert_send_errors_total",
        "counter",
        "VRRP adverts the kernel refused to send.",
    );
    out.sample(&[], s.election.send_errors);

    let sync = &s.sync;
    for (name, help, (sent, received)) in [
        (
            "egret_gateway_sync_datagrams_total",
            "Flow sync datagrams, sent to and received from the peer gateways.",
            (sync.sent.datagrams, sync.received.datagrams),
        ),
        (
            "egret_gateway_sync_bytes_total",
            "Flow sync UDP payload bytes, sent and received.",
            (sync.sent.bytes, sync.received.bytes),
        ),
        (
            "egret_gateway_sync_changes_total",
            "Flow changes streamed to the peers (sent) and applied from them (received).",
            (sync.sent.changes, sync.received.changes),
        ),
        (
            "egret_gateway_sync_nacks_total",
            "Flow sync Nacks: sent for gaps seen here, received for gaps a peer saw.",
            (sync.nacks_sent, sync.nacks_received),
        ),
        (
            "egret_gateway_sync_resyncs_total",
            "Full flow tables: sent to a peer, and asked of the peers (received).",
            (sync.resyncs_sent, sync.resyncs_requested),
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(&[("direction", "sent")], sent);
        out.sample(&[("direction", "received")], received);
    }
    out.family(
        "egret_gateway_sync_retransmits_total",
        "counter",
        "Flow sync batches sent again after a peer's Nack.",
    );
    out.sample(&[], sync.retransmits);
    out.family(
        "egret_gateway_sync_flows_total",
        "counter",
        "Peer flows installed (or updated), removed, refused (egret_gateway_sync_refused_total has the reasons), and swept at the end of a peer's full resync.",
    );
    for (outcome, n) in [
        ("installed", sync.flows_installed),
        ("removed", sync.flows_removed),
        ("refused", sync.flows_refused),
        ("swept", sync.flows_swept),
    ] {
        out.sample(&[("outcome", outcome)], n);
    }
    out.family(
        "egret_gateway_sync_refused_total",
        "counter",
        "Peer changes refused, by reason: own_address, not_master (stale: another gateway is master), unknown_address, disallowed_source, port_range, lifetime (longer than the state's timeout), conflict (NAT port taken here, table full), node_verified (would replace a node binding confirmed here).",
    );
    for (reason, count) in &sync.refused {
        out.sample(&[("reason", reason)], *count);
    }
    out.family(
        "egret_gateway_sync_authenticated",
        "gauge",
        "1 when the flow sync seals and checks every datagram with [sync].key_file, else 0.",
    );
    out.sample(&[], u64::from(sync.authenticated));
    out.family(
        "egret_gateway_sync_previous_key_total",
        "counter",
        "Flow sync datagrams opened with [sync].previous_key_file: a peer still seals with the old key.",
    );
    out.sample(&[], sync.previous_key);
    out.family(
        "egret_gateway_sync_drops_total",
        "counter",
        "Flow sync datagrams refused, by reason (auth: not sealed with the group's key; unconfirmed: not bound to this gateway's current session, a replay or the first round trip after a restart; replay: seen already); queue_overflow counts local changes dropped (a full resync follows), socket_error errors the sync socket reported.",
    );
    for (reason, count) in &sync.drops {
        out.sample(&[("reason", reason)], *count);
    }
    out.sample(&[("reason", "queue_overflow")], sync.queue_overflow);
    out.sample(&[("reason", "socket_error")], sync.socket_errors);
    out.family(
        "egret_gateway_sync_lag_seconds",
        "gauge",
        "Age of the oldest flow change not yet sent to a peer (0 when none waits).",
    );
    for peer in &sync.peers {
        out.sample_f64(&[("peer", &peer.address)], peer.lag_seconds);
    }
    out.family(
        "egret_gateway_sync_queue_depth",
        "gauge",
        "Flow changes and datagrams waiting to be sent to a peer.",
    );
    for peer in &sync.peers {
        out.sample(&[("peer", &peer.address)], peer.queue_depth);
    }
    out.family(
        "egret_gateway_sync_peer_up",
        "gauge",
        "1 when the peer was heard from within three heartbeats (3 s), else 0.",
    );
    for peer in &sync.peers {
        out.sample(&[("peer", &peer.address)], u64::from(peer.alive));
    }

    let control = &s.control;
    for (name, help, value) in [
        (
            "egret_gateway_arp_requests_answered_total",
            "ARP requests for a floating IP answered.",
            control.arp_requests_answered,
        ),
        (
            "egret_gateway_arp_requests_sent_total",
            "ARP requests sent, for the next hop or a node.",
            control.arp_requests_sent,
        ),
        (
            "egret_gateway_gratuitous_arps_sent_total",
            "Gratuitous ARPs sent to announce a floating IP.",
            control.gratuitous_arps_sent,
        ),
        (
            "egret_gateway_icmp_echo_replies_total",
            "ICMP echo requests to a floating IP answered.",
            control.icmp_echo_replies_sent,
        ),
        (
            "egret_gateway_icmp_errors_sent_total",
            "ICMP errors the gateway generated itself (time exceeded, fragmentation needed).",
            control.icmp_errors_sent,
        ),
        (
            "egret_gateway_icmp_errors_rate_limited_total",
            "ICMP errors not sent because of the rate limit (1000/s, bursts of 50).",
            control.icmp_errors_rate_limited,
        ),
        (
            "egret_gateway_tx_errors_total",
            "Frames the kernel refused to send.",
            control.tx_errors,
        ),
        (
            "egret_gateway_frames_read_total",
            "Frames user space read from the interface (the fast path's never reach it).",
            control.frames_read,
        ),
        (
            "egret_gateway_node_probes_sent_total",
            "ARP probes of a node's address, sent before a new MAC for it is believed.",
            control.node_probes.sent,
        ),
    ] {
        out.family(name, "counter", help);
        out.sample(&[], value);
    }
    out.family(
        "egret_gateway_node_probes_total",
        "counter",
        "Node probes decided, by outcome: confirmed (only the bound MAC answered), moved (only another one: rebound), conflict (several answered: binding kept), unanswered.",
    );
    let p = &control.node_probes;
    for (outcome, n) in [
        ("confirmed", p.confirmed),
        ("moved", p.moved),
        ("conflict", p.conflict),
        ("unanswered", p.unanswered),
    ] {
        out.sample(&[("outcome", outcome)], n);
    }

    let fast = &s.fast_path;
    out.family(
        "egret_gateway_fast_path_enabled",
        "gauge",
        "1 when the kernel fast path for established flows is loaded and attached, else 0.",
    );
    out.sample(&[], u64::from(fast.enabled));
    out.family(
        "egret_gateway_fast_path_flows",
        "gauge",
        "Flows the kernel fast path forwards.",
    );
    out.sample(&[], fast.flows);
    out.per_direction(
        "egret_gateway_fast_path_packets_total",
        "Packets the kernel fast path forwarded (also counted in egret_gateway_packets_total).",
        (fast.outbound.packets, fast.inbound.packets),
    );
    out.per_direction(
        "egret_gateway_fast_path_bytes_total",
        "IPv4 bytes the kernel fast path forwarded (also counted in egret_gateway_bytes_total).",
        (fast.outbound.bytes, fast.inbound.bytes),
    );
    out.family(
        "egret_gateway_fast_path_errors_total",
        "counter",
        "Packets the kernel fast path took but could not rewrite, and dropped.",
    );
    out.sample(&[], fast.errors);
    out.family(
        "egret_gateway_fast_path_install_failures_total",
        "counter",
        "Flows the kernel fast path could not take (its maps were full); they stay in user space.",
    );
    out.sample(&[], fast.install_failures);

    out.family(
        "egret_gateway_api_connections_open",
        "gauge",
        "Connections to this API open now, the one answering this scrape included.",
    );
    out.sample(&[], s.api.connections_open);
    out.family(
        "egret_gateway_api_connections_refused_total",
        "counter",
        "Connections to this API closed as soon as accepted, by reason: client_limit (the client address had its maximum open), total_limit (the server had).",
    );
    for (reason, count) in &s.api.connections_refused {
        out.sample(&[("reason", reason)], *count);
    }

    let k = &s.kubernetes;
    out.family(
        "egret_gateway_kubernetes_applies_total",
        "counter",
        "Successful server-side applies of this gateway's keys of the EgressGateway status ([kubernetes]).",
    );
    out.sample(&[], k.applies);
    out.family(
        "egret_gateway_kubernetes_apply_errors_total",
        "counter",
        "Failed applies of the EgressGateway status, by reason: client, timeout, transport, not_found, forbidden, refused, server.",
    );
    for (reason, count) in &k.errors {
        out.sample(&[("reason", reason)], *count);
    }
    out.family(
        "egret_gateway_kubernetes_last_apply_timestamp_seconds",
        "gauge",
        "When the EgressGateway status was last applied successfully, in seconds since the Unix epoch.",
    );
    if let Some(ms) = k.last_apply_unix_ms {
        out.sample_f64(&[], ms as f64 / 1000.0);
    }
    out.family(
        "egret_gateway_kubernetes_pending",
        "gauge",
        "1 while what this gateway reports differs from its last successful apply (waiting, in flight or retrying), else 0.",
    );
    out.sample(&[], u64::from(k.pending));

    out.family(
        "egret_gateway_next_hop_resolved",
        "gauge",
        "1 when the next hop's MAC address is known, else 0.",
    );
    out.sample(&[], u64::from(s.next_hop.mac.is_some()));

    out.family(
        "egret_gateway_uptime_seconds",
        "gauge",
        "Seconds since the data path started.",
    );
    out.sample_f64(&[], s.uptime_seconds);

    out.family(
        "egret_gateway_info",
        "gauge",
        "Always 1; labels name the gateway, its interface and the egret version.",
    );
    out.sample(
        &[
            ("name", &s.name),
            ("interface", &s.interface),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1u64,
    );

    out.text
}

/// Reads one per-floating-IP value.
type PerIp = fn(&FloatingIpStatus) -> u64;

/// The text being built and the family its samples belong to.
#[derive(Default)]
struct Exposition {
    text: String,
    family: &'static str,
}

impl Exposition {
    /// Starts a family; the samples written next belong to it.
    fn family(&mut self, name: &'static str, kind: &str, help: &str) {
        self.family = name;
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// A counter family with an `outbound` and an `inbound` sample.
    fn per_direction(&mut self, name: &'static str, help: &str, (outbound, inbound): (u64, u64)) {
        self.family(name, "counter", help);
        self.sample(&[("direction", "outbound")], outbound);
        self.sample(&[("direction", "inbound")], inbound);
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<u64>) {
        let value = value.into();
        self.labels(labels);
        let _ = writeln!(self.text, " {value}");
    }

    fn sample_f64(&mut self, labels: &[(&str, &str)], value: f64) {
        self.labels(labels);
        // The format spells the special values its own way; Rust's `inf` is not one of them.
        let _ = match value {
            v if v.is_nan() => writeln!(self.text, " NaN"),
            v if v == f64::INFINITY => writeln!(self.text, " +Inf"),
            v if v == f64::NEG_INFINITY => writeln!(self.text, " -Inf"),
            v => writeln!(self.text, " {v}"),
        };
    }

    /// Writes the family name and `{labels}` (nothing when there are none).
    fn labels(&mut self, labels: &[(&str, &str)]) {
        self.text.push_str(self.family);
        if labels.is_empty() {
            return;
        }
        self.text.push('{');
        for (i, (name, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            let _ = write!(self.text, "{name}=\"{}\"", escape_label_value(value));
        }
        self.text.push('}');
    }
}

/// Escapes a label value: `\`, `"` and line feed, as format 0.0.4 requires.
fn escape_label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `# HELP` text: `\` and line feed (quotes need no escaping there).
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::api::fixtures::snapshot as sample_snapshot;

    /// One parsed sample line: name, labels in order, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// A strict reader of the subset of format 0.0.4 the renderer writes. Panics, naming the
    /// line, on anything else.
    fn parse(text: &str) -> (HashMap<String, (String, String)>, Vec<Sample>) {
        assert!(text.ends_with('\n'), "the last line ends with a line feed");
        let mut families: HashMap<String, (String, String)> = HashMap::new();
        let mut helps: HashMap<String, String> = HashMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect(line);
                assert!(
                    helps.insert(name.to_owned(), help.to_owned()).is_none(),
                    "HELP twice: {line}"
                );
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect(line);
                assert!(["counter", "gauge"].contains(&kind), "type: {line}");
                assert!(helps.contains_key(name), "TYPE before HELP: {line}");
                let help = helps[name].clone();
                assert!(
                    families
                        .insert(name.to_owned(), (kind.to_owned(), help))
                        .is_none(),
                    "TYPE twice: {line}"
                );
            } else {
                samples.push(parse_sample(line));
            }
        }
        assert_eq!(helps.len(), families.len(), "every HELP has a TYPE");
        (families, samples)
    }

    fn parse_sample(line: &str) -> Sample {
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .expect(line);
        let name = &line[..name_end];
        assert!(!name.is_empty(), "sample without a name: {line}");
        let mut rest = &line[name_end..];
        let mut labels = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            rest = inner;
            loop {
                let (label, after) = rest.split_once("=\"").expect(line);
                assert!(
                    label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "label name: {line}"
                );
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    let (i, c) = chars.next().expect(line);
                    match c {
                        '"' => break i,
                        '\\' => match chars.next().expect(line).1 {
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            'n' => value.push('\n'),
                            other => panic!("bad escape \\{other}: {line}"),
                        },
                        '\n' => panic!("raw line feed: {line}"),
                        c => value.push(c),
                    }
                };
                labels.push((label.to_owned(), value));
                rest = &after[end + 1..];
                if let Some(more) = rest.strip_prefix(',') {
                    rest = more;
                } else {
                    rest = rest.strip_prefix('}').expect(line);
                    break;
                }
            }
        }
        let value = rest.strip_prefix(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().expect(line),
        };
        (name.to_owned(), labels, value)
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && l.iter().zip(labels).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
            })
            .map(|s| s.2)
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
        found[0]
    }

    #[test]
    fn every_line_parses_and_every_family_is_declared_once() {
        let text = render_prometheus(&sample_snapshot());
        let (families, samples) = parse(&text);
        for (name, _, _) in &samples {
            let (kind, _) = families.get(name).expect(name);
            assert_eq!(kind == "counter", name.ends_with("_total"), "{name}");
        }
        for name in families.keys() {
            assert!(name.starts_with("egret_gateway_"), "{name}");
        }
        // Samples of one family are contiguous.
        let mut seen = Vec::new();
        for (name, _, _) in &samples {
            if seen.last() != Some(name) {
                assert!(!seen.contains(name), "{name} is split");
                seen.push(name.clone());
            }
        }
    }

    #[test]
    fn required_families_carry_the_snapshot() {
        let text = render_prometheus(&sample_snapshot());
        let (families, samples) = parse(&text);
        for name in [
            "egret_gateway_packets_total",
            "egret_gateway_bytes_total",
            "egret_gateway_flows",
            "egret_gateway_flows_max",
            "egret_gateway_flows_created_total",
            "egret_gateway_flows_expired_total",
            "egret_gateway_drops_total",
            "egret_gateway_nat_ports_in_use",
            "egret_gateway_nat_port_range_size",
            "egret_gateway_nat_flows",
            "egret_gateway_floating_ip_master",
            "egret_gateway_vrrp_priority",
            "egret_gateway_vrrp_transitions_total",
            "egret_gateway_vrrp_adverts_sent_total",
            "egret_gateway_vrrp_adverts_received_total",
            "egret_gateway_vrrp_last_transition_timestamp_seconds",
            "egret_gateway_vrrp_adverts_drop_total",
            "egret_gateway_vrrp_advert_send_errors_total",
            "egret_gateway_sync_datagrams_total",
            "egret_gateway_sync_bytes_total",
            "egret_gateway_sync_changes_total",
            "egret_gateway_sync_nacks_total",
            "egret_gateway_sync_resyncs_total",
            "egret_gateway_sync_retransmits_total",
            "egret_gateway_sync_flows_total",
            "egret_gateway_sync_refused_total",
            "egret_gateway_sync_authenticated",
            "egret_gateway_sync_previous_key_total",
            "egret_gateway_sync_drops_total",
            "egret_gateway_sync_lag_seconds",
            "egret_gateway_sync_queue_depth",
            "egret_gateway_sync_peer_up",
            "egret_gateway_arp_requests_answered_total",
            "egret_gateway_arp_requests_sent_total",
            "egret_gateway_gratuitous_arps_sent_total",
            "egret_gateway_icmp_echo_replies_total",
            "egret_gateway_icmp_errors_sent_total",
            "egret_gateway_icmp_errors_rate_limited_total",
            "egret_gateway_tx_errors_total",
            "egret_gateway_frames_read_total",
            "egret_gateway_node_probes_sent_total",
            "egret_gateway_node_probes_total",
            "egret_gateway_api_connections_open",
            "egret_gateway_api_connections_refused_total",
            "egret_gateway_kubernetes_applies_total",
            "egret_gateway_kubernetes_apply_errors_total",
            "egret_gateway_kubernetes_last_apply_timestamp_seconds",
            "egret_gateway_kubernetes_pending",
            "egret_gateway_next_hop_resolved",
            "egret_gateway_uptime_seconds",
            "egret_gateway_info",
        ] {
            assert!(families.contains_key(name), "{name} missing");
        }
        let v = |name, labels: &[(&str, &str)]| value(&samples, name, labels);
        assert_eq!(
            v("egret_gateway_packets_total", &[("direction", "outbound")]),
            10.0
        );
        assert_eq!(
            v("egret_gateway_packets_total", &[("direction", "inbound")]),
            9.0
        );
        assert_eq!(
            v("egret_gateway_bytes_total", &[("direction", "outbound")]),
            1000.0
        );
        assert_eq!(
            v("egret_gateway_bytes_total", &[("direction", "inbound")]),
            900.0
        );
        assert_eq!(v("egret_gateway_flows", &[]), 4.0);
        assert_eq!(v("egret_gateway_flows_max", &[]), 1e6);
        assert_eq!(v("egret_gateway_flows_created_total", &[]), 6.0);
        assert_eq!(v("egret_gateway_flows_expired_total", &[]), 2.0);
        // Zero reasons are present too: a rate() over them must not start from nothing.
        assert_eq!(
            v("egret_gateway_drops_total", &[("reason", "malformed")]),
            0.0
        );
        assert_eq!(
            v(
                "egret_gateway_drops_total",
                &[("reason", "disallowed_source")]
            ),
            7.0
        );
        let ip = [("egress_ip", "192.168.1.100")];
        assert_eq!(v("egret_gateway_nat_ports_in_use", &ip), 3.0);
        assert_eq!(v("egret_gateway_nat_port_range_size", &ip), 49152.0);
        assert_eq!(v("egret_gateway_nat_flows", &ip), 4.0);
        let master = |address, vrid| {
            v(
                "egret_gateway_floating_ip_master",
                &[("address", address), ("vrid", vrid)],
            )
        };
        assert_eq!(master("192.168.1.100", "10"), 1.0);
        assert_eq!(master("192.168.1.101", "11"), 0.0);
        let vrrp = |name, address, vrid| v(name, &[("address", address), ("vrid", vrid)]);
        assert_eq!(
            vrrp("egret_gateway_vrrp_priority", "192.168.1.101", "11"),
            90.0
        );
        assert_eq!(
            vrrp(
                "egret_gateway_vrrp_transitions_total",
                "192.168.1.100",
                "10"
            ),
            2.0
        );
        assert_eq!(
            vrrp(
                "egret_gateway_vrrp_adverts_sent_total",
                "192.168.1.100",
                "10"
            ),
            120.0
        );
        assert_eq!(
            vrrp(
                "egret_gateway_vrrp_adverts_received_total",
                "192.168.1.101",
                "11"
            ),
            118.0
        );
        assert_eq!(
            vrrp(
                "egret_gateway_vrrp_last_transition_timestamp_seconds",
                "192.168.1.100",
                "10"
            ),
            1_700_000_000.0
        );
        let refused = |reason| {
            v(
                "egret_gateway_vrrp_adverts_drop_total",
                &[("reason", reason)],
            )
        };
        assert_eq!(refused("ttl"), 2.0);
        assert_eq!(refused("checksum"), 0.0);
        assert_eq!(refused("unknown_vrid"), 5.0);
        assert_eq!(v("egret_gateway_vrrp_advert_send_errors_total", &[]), 1.0);
        let sent = [("direction", "sent")];
        let received = [("direction", "received")];
        assert_eq!(v("egret_gateway_sync_datagrams_total", &sent), 40.0);
        assert_eq!(v("egret_gateway_sync_bytes_total", &received), 2600.0);
        assert_eq!(v("egret_gateway_sync_changes_total", &sent), 300.0);
        assert_eq!(v("egret_gateway_sync_nacks_total", &received), 2.0);
        assert_eq!(v("egret_gateway_sync_resyncs_total", &sent), 1.0);
        assert_eq!(v("egret_gateway_sync_retransmits_total", &[]), 3.0);
        assert_eq!(
            v("egret_gateway_sync_flows_total", &[("outcome", "refused")]),
            4.0
        );
        assert_eq!(
            v("egret_gateway_sync_drops_total", &[("reason", "bad_magic")]),
            6.0
        );
        assert_eq!(
            v(
                "egret_gateway_sync_drops_total",
                &[("reason", "queue_overflow")]
            ),
            0.0
        );
        let peer = [("peer", "192.168.1.12:4801")];
        assert_eq!(v("egret_gateway_sync_lag_seconds", &peer), 0.004);
        assert_eq!(v("egret_gateway_sync_queue_depth", &peer), 12.0);
        assert_eq!(v("egret_gateway_sync_peer_up", &peer), 1.0);
        assert_eq!(v("egret_gateway_arp_requests_answered_total", &[]), 1.0);
        assert_eq!(v("egret_gateway_arp_requests_sent_total", &[]), 2.0);
        assert_eq!(v("egret_gateway_gratuitous_arps_sent_total", &[]), 3.0);
        assert_eq!(v("egret_gateway_icmp_echo_replies_total", &[]), 4.0);
        assert_eq!(v("egret_gateway_icmp_errors_sent_total", &[]), 5.0);
        assert_eq!(v("egret_gateway_icmp_errors_rate_limited_total", &[]), 7.0);
        assert_eq!(v("egret_gateway_tx_errors_total", &[]), 6.0);
        assert_eq!(v("egret_gateway_frames_read_total", &[]), 8.0);
        assert_eq!(v("egret_gateway_node_probes_sent_total", &[]), 9.0);
        assert_eq!(
            v(
                "egret_gateway_node_probes_total",
                &[("outcome", "conflict")]
            ),
            1.0
        );
        assert_eq!(
            v(
                "egret_gateway_sync_refused_total",
                &[("reason", "not_master")]
            ),
            3.0
        );
        assert_eq!(
            v("egret_gateway_sync_flows_total", &[("outcome", "swept")]),
            2.0
        );
        assert_eq!(v("egret_gateway_sync_authenticated", &[]), 1.0);
        assert_eq!(v("egret_gateway_sync_previous_key_total", &[]), 3.0);
        assert_eq!(v("egret_gateway_api_connections_open", &[]), 3.0);
        assert_eq!(
            v(
                "egret_gateway_api_connections_refused_total",
                &[("reason", "client_limit")]
            ),
            284.0
        );
        assert_eq!(
            v(
                "egret_gateway_api_connections_refused_total",
                &[("reason", "total_limit")]
            ),
            0.0
        );
        assert_eq!(v("egret_gateway_kubernetes_applies_total", &[]), 3.0);
        assert_eq!(
            v(
                "egret_gateway_kubernetes_apply_errors_total",
                &[("reason", "timeout")]
            ),
            1.0
        );
        assert_eq!(
            v(
                "egret_gateway_kubernetes_apply_errors_total",
                &[("reason", "forbidden")]
            ),
            0.0
        );
        assert_eq!(
            v("egret_gateway_kubernetes_last_apply_timestamp_seconds", &[]),
            1_699_999_998.0
        );
        assert_eq!(v("egret_gateway_kubernetes_pending", &[]), 0.0);
        assert_eq!(v("egret_gateway_next_hop_resolved", &[]), 1.0);
        assert_eq!(v("egret_gateway_uptime_seconds", &[]), 12.5);
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            v(
                "egret_gateway_info",
                &[("name", "gw1"), ("interface", "eth1"), ("version", version)]
            ),
            1.0
        );
    }

    #[test]
    fn an_empty_snapshot_still_declares_every_family() {
        let full = parse(&render_prometheus(&sample_snapshot())).0;
        let (empty, samples) = parse(&render_prometheus(&Snapshot::default()));
        let mut full: Vec<_> = full.keys().collect();
        let mut empty: Vec<_> = empty.keys().collect();
        full.sort();
        empty.sort();
        assert_eq!(full, empty);
        assert_eq!(value(&samples, "egret_gateway_next_hop_resolved", &[]), 0.0);
        assert!(
            !samples
                .iter()
                .any(|(name, _, _)| name == "egret_gateway_nat_flows")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = sample_snapshot();
        let name = "g\"w\\1\nx";
        s.name = name.to_owned();
        s.drops.insert("odd \"reason\"\\\n".to_owned(), 1);
        let text = render_prometheus(&s);
        assert!(
            text.contains(r#"name="g\"w\\1\nx""#),
            "escaped name in:\n{text}"
        );
        let (_, samples) = parse(&text);
        let info = samples
            .iter()
            .find(|(n, _, _)| n == "egret_gateway_info")
            .expect("info");
        assert_eq!(info.1[0], ("name".to_owned(), name.to_owned()));
        assert_eq!(
            value(
                &samples,
                "egret_gateway_drops_total",
                &[("reason", "odd \"reason\"\\\n")]
            ),
            1.0
        );
    }

    #[test]
    fn special_float_values_use_the_format_spelling() {
        let mut s = Snapshot {
            uptime_seconds: f64::INFINITY,
            ..Snapshot::default()
        };
        assert!(render_prometheus(&s).contains("\negret_gateway_uptime_seconds +Inf\n"));
        s.uptime_seconds = f64::NAN;
        assert!(render_prometheus(&s).contains("\negret_gateway_uptime_seconds NaN\n"));
    }

    #[test]
    fn help_text_is_escaped() {
        assert_eq!(escape_help("a\\b\nc\"d"), "a\\\\b\\nc\"d");
    }
}
