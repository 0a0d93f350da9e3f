//! The client side of the API, for `egret-gateway status`: fetch `/status` from the running
//! daemon and print it readably.
//!
//! Blocking and dependency-free on purpose: the command makes one request and exits, so a
//! runtime would only add start-up time. Parsing the response ([`parse_status_response`])
//! and rendering ([`render_text`]) are pure; only [`fetch_status`] touches a socket.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::status::Snapshot;

/// Largest status response read. Far above any real gateway's (a few hundred bytes per
/// floating IP and node), so that only something that is not the gateway API hits it.
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Why `egret-gateway status` could not get the daemon's status. Each message says what
/// the operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "cannot connect to the gateway API at {addr}: {}; is egret-gateway running, and is \
         [api].listen this address?",
        describe(.cause)
    )]
    Connect { addr: SocketAddr, cause: io::Error },

    #[error(
        "the gateway API at {addr} did not answer within {timeout:?}; the gateway may be \
         overloaded or stuck: see its log (journalctl -u egret-gateway)"
    )]
    Timeout { addr: SocketAddr, timeout: Duration },

    #[error(
        "lost the connection to the gateway API at {addr}: {}; if this repeats, see the \
         gateway's log (journalctl -u egret-gateway)",
        describe(.cause)
    )]
    Io { addr: SocketAddr, cause: io::Error },

    #[error(
        "the gateway API at {addr} answered GET /status with {status} {reason}{}; {}",
        body_excerpt(.body),
        status_hint(*.status)
    )]
    Status {
        addr: SocketAddr,
        status: u16,
        reason: String,
        /// The start of the response body, which says why.
        body: String,
    },

    #[error(
        "the service at {addr} does not answer as the gateway API does ({detail}); is \
         [api].listen the address of egret-gateway and not of another service?"
    )]
    Malformed { addr: SocketAddr, detail: String },

    #[error(
        "the gateway at {addr} sent a status this command cannot read ({cause}); are the \
         daemon and this command the same version? Restart egret-gateway after an upgrade"
    )]
    Json {
        addr: SocketAddr,
        cause: serde_json::Error,
    },
}

/// What an operator recognises: "connection refused" rather than the OS error number.
fn describe(error: &io::Error) -> String {
    use io::ErrorKind::*;
    match error.kind() {
        kind @ (ConnectionRefused | ConnectionReset | ConnectionAborted | TimedOut
        | HostUnreachable | NetworkUnreachable | AddrNotAvailable | PermissionDenied
        | BrokenPipe | UnexpectedEof) => kind.to_string(),
        WouldBlock => TimedOut.to_string(),
        _ => error.to_string(),
    }
}

fn body_excerpt(body: &str) -> String {
    let first = body.lines().next().unwrap_or_default().trim();
    if first.is_empty() {
        return String::new();
    }
    let excerpt: String = first.chars().take(200).collect();
    format!(" ({excerpt})")
}

fn status_hint(status: u16) -> &'static str {
    if status >= 500 {
        "see the gateway's log (journalctl -u egret-gateway)"
    } else {
        "is [api].listen the address of egret-gateway and not of another service?"
    }
}

/// Asks the gateway API at `addr` for its status, giving up after `timeout` overall.
pub fn fetch_status(addr: SocketAddr, timeout: Duration) -> Result<Snapshot, ApiError> {
    // A zero timeout is refused by the socket calls below; treat it as "as short as can be".
    let timeout = timeout.max(Duration::from_millis(1));
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|cause| ApiError::Connect { addr, cause })?;
    let failed = |cause: io::Error| match cause.kind() {
        // Timed-out reads report WouldBlock on Unix and TimedOut on Windows.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ApiError::Timeout { addr, timeout },
        _ => ApiError::Io { addr, cause },
    };
    let left = |deadline: Instant| {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(ApiError::Timeout { addr, timeout })
        } else {
            Ok(left)
        }
    };

    let request = format!(
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
         User-Agent: egret-gateway/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream
        .set_write_timeout(Some(left(deadline)?))
        .map_err(failed)?;
    stream.write_all(request.as_bytes()).map_err(failed)?;

    // The server closes the connection after its response, so read to the end; the
    // deadline bounds the whole exchange, not each read.
    let mut response = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left(deadline)?))
            .map_err(failed)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if response.len() + n > MAX_RESPONSE => {
                return Err(ApiError::Malformed {
                    addr,
                    detail: "the response is larger than 16 MiB".to_owned(),
                });
            }
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(failed(error)),
        }
    }
    parse_status_response(addr, &response)
}

/// Reads a complete HTTP response to `GET /status` (everything received until the server
/// closed the connection) into a [`Snapshot`]. `addr` is only used in error messages.
pub fn parse_status_response(addr: SocketAddr, response: &[u8]) -> Result<Snapshot, ApiError> {
    let malformed = |detail: &str| ApiError::Malformed {
        addr,
        detail: detail.to_owned(),
    };
    if response.is_empty() {
        return Err(malformed("it closed the connection without answering"));
    }
    let end = find_head_end(response)
        .ok_or_else(|| malformed("the response ends before its headers do"))?;
    let head = std::str::from_utf8(&response[..end])
        .map_err(|_| malformed("the response headers are not UTF-8"))?;
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let (status, reason) = parse_status_line(status_line)
        .ok_or_else(|| malformed("the response does not start with an HTTP/1.x status line"))?;

    let mut content_length = None;
    for line in lines.take_while(|line| !line.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed("a response header line has no colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let length: usize = value
                .parse()
                .map_err(|_| malformed("the Content-Length header is not a number"))?;
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The gateway never sends one; framing by connection close is all it uses.
            return Err(malformed("the response uses a transfer encoding"));
        }
    }
    let rest = &response[end..];
    let body = match content_length {
        Some(length) if rest.len() < length => {
            return Err(ApiError::Malformed {
                addr,
                detail: format!(
                    "the response stops after {} of its {length} body bytes",
                    rest.len()
                ),
            });
        }
        Some(length) => &rest[..length],
        None => rest,
    };

    if status != 200 {
        return Err(ApiError::Status {
            addr,
            status,
            reason: reason.to_owned(),
            body: String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned(),
        });
    }
    serde_json::from_slice(body).map_err(|cause| ApiError::Json { addr, cause })
}

/// The length of the head at the start of `bytes`, its final empty line included, if the
/// head is complete. Lines may end in CRLF or a bare LF (RFC 9112 lets a recipient accept
/// both).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .find_map(|(i, _)| {
            let rest = &bytes[i + 1..];
            if rest.starts_with(b"\n") {
                Some(i + 2)
            } else if rest.starts_with(b"\r\n") {
                Some(i + 3)
            } else {
                None
            }
        })
}

/// `HTTP/1.1 200 OK` → `(200, "OK")`.
fn parse_status_line(line: &str) -> Option<(u16, &str)> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((code.parse().ok()?, reason))
}

/// The snapshot as `egret-gateway status` prints it: plain aligned columns, no colour,
/// drop reasons only when non-zero.
/// The kernel fast path in one line: on with its flows, or off and why (the first line of
/// the reason: a verifier's refusal runs to thousands of lines; `--json` has them all).
fn fast_path(f: &crate::status::FastPathStatus) -> String {
    const MAX: usize = 160;
    match (f.enabled, &f.reason) {
        (true, _) => format!("on, {} flows", f.flows),
        (false, Some(reason)) => {
            let first = reason.lines().next().unwrap_or_default();
            let mut shown: String = first.chars().take(MAX).collect();
            if shown.len() < reason.len() {
                shown.push_str(" …");
            }
            format!("off: {shown}")
        }
        (false, None) => "off".to_owned(),
    }
}

pub fn render_text(s: &Snapshot) -> String {
    let mut out = String::new();

    let mut interface = s.interface.clone();
    if let Some(address) = s.interface_address {
        let _ = write!(interface, ", {address}");
    }
    if !s.interface_mac.is_empty() {
        let _ = write!(interface, ", {}", s.interface_mac);
    }
    let next_hop = match (&s.next_hop.address, &s.next_hop.mac) {
        (None, _) => "unknown".to_owned(),
        (Some(address), Some(mac)) => format!("{address} at {mac}"),
        (Some(address), None) => format!("{address}, MAC not resolved yet"),
    };
    table(
        &mut out,
        "",
        &[
            vec!["gateway".into(), s.name.clone()],
            vec!["interface".into(), interface],
            vec!["uptime".into(), uptime(s.uptime_seconds)],
            vec!["next hop".into(), next_hop],
            vec!["fast path".into(), fast_path(&s.fast_path)],
        ],
        &[],
    );

    out.push_str("\nfloating IPs\n");
    if s.floating_ips.is_empty() {
        out.push_str("  none configured\n");
    } else {
        let mut rows = vec![
            [
                "ADDRESS",
                "VRID",
                "STATE",
                "MASTER",
                "PRIORITY",
                "SINCE",
                "PORTS IN USE",
                "FLOWS",
            ]
            .map(String::from)
            .to_vec(),
        ];
        rows.extend(s.floating_ips.iter().map(|ip| {
            let ago = s.taken_unix_ms.saturating_sub(ip.last_transition_unix_ms);
            vec![
                ip.address.to_string(),
                ip.vrid.to_string(),
                ip.state.clone(),
                if ip.master.is_empty() {
                    "?".into()
                } else {
                    ip.master.clone()
                },
                ip.priority.to_string(),
                format!("{} ago", uptime(ago as f64 / 1000.0)),
                format!("{}/{}", ip.ports_in_use, ip.port_range_size),
                ip.flows.to_string(),
            ]
        }));
        table(&mut out, "  ", &rows, &[1, 4, 5, 6, 7]);

        let e = &s.election;
        out.push_str(&format!("\nelection ({} adverts)\n", e.mode));
        let mut rows = vec![
            ["ADDRESS", "TRANSITIONS", "ADVERTS SENT", "ADVERTS RECEIVED"]
                .map(String::from)
                .to_vec(),
        ];
        rows.extend(s.floating_ips.iter().map(|ip| {
            vec![
                ip.address.to_string(),
                ip.transitions.to_string(),
                ip.adverts_sent.to_string(),
                ip.adverts_received.to_string(),
            ]
        }));
        table(&mut out, "  ", &rows, &[1, 2, 3]);
        let refused: Vec<String> = e
            .adverts_rejected
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(reason, n)| format!("{reason} {n}"))
            .chain(
                (e.adverts_unknown_vrid > 0)
                    .then(|| format!("unknown VRID {}", e.adverts_unknown_vrid)),
            )
            .collect();
        if !refused.is_empty() {
            out.push_str(&format!("  adverts refused: {}\n", refused.join(", ")));
        }
        if e.send_errors > 0 {
            out.push_str(&format!("  adverts not sent: {}\n", e.send_errors));
        }
    }

    out.push_str("\ntraffic\n");
    table(
        &mut out,
        "  ",
        &[
            vec!["".into(), "PACKETS".into(), "BYTES".into()],
            vec![
                "outbound (node to outside)".into(),
                s.outbound.packets.to_string(),
                s.outbound.bytes.to_string(),
            ],
            vec![
                "inbound (outside to node)".into(),
                s.inbound.packets.to_string(),
                s.inbound.bytes.to_string(),
            ],
        ],
        &[1, 2],
    );

    out.push_str("\nflows\n");
    let flows = &s.flows;
    table(
        &mut out,
        "  ",
        &[
            vec!["live".into(), flows.live.to_string()],
            vec!["max".into(), flows.max.to_string()],
            vec!["created".into(), flows.created.to_string()],
            vec!["expired".into(), flows.expired.to_string()],
        ],
        &[1],
    );

    out.push_str("\ndrops\n");
    let drops: Vec<Vec<String>> = s
        .drops
        .iter()
        .filter(|&(_, &count)| count > 0)
        .map(|(reason, count)| vec![reason.clone(), count.to_string()])
        .collect();
    if drops.is_empty() {
        out.push_str("  none\n");
    } else {
        table(&mut out, "  ", &drops, &[1]);
    }

    out.push_str("\ncontrol\n");
    let c = &s.control;
    table(
        &mut out,
        "  ",
        &[
            ("ARP requests answered", c.arp_requests_answered),
            ("ARP requests sent", c.arp_requests_sent),
            ("gratuitous ARPs sent", c.gratuitous_arps_sent),
            ("ICMP echo replies sent", c.icmp_echo_replies_sent),
            ("ICMP errors sent", c.icmp_errors_sent),
            ("ICMP errors rate-limited", c.icmp_errors_rate_limited),
            ("send errors", c.tx_errors),
            ("frames read by user space", c.frames_read),
        ]
        .map(|(name, count)| vec![name.to_owned(), count.to_string()]),
        &[1],
    );

    sync(&mut out, &s.sync);
    kubernetes(&mut out, s);

    out.push_str("\nnodes\n");
    if s.nodes.is_empty() {
        out.push_str("  none seen recently\n");
    } else {
        let mut rows = vec![
            ["ADDRESS", "MAC", "TUNNEL MAC", "VERIFIED"]
                .map(String::from)
                .to_vec(),
        ];
        rows.extend(s.nodes.iter().map(|node| {
            vec![
                node.address.to_string(),
                node.mac.clone(),
                node.tunnel_mac.clone(),
                if node.verified { "yes" } else { "no" }.into(),
            ]
        }));
        table(&mut out, "  ", &rows, &[]);
    }
    let p = &s.control.node_probes;
    if p.sent > 0 {
        out.push_str(&format!(
            "  ARP probes {}: confirmed {}, moved {}, conflict {}, unanswered {}\n",
            p.sent, p.confirmed, p.moved, p.conflict, p.unanswered
        ));
    }
    out
}

/// Writes `rows` as columns two spaces apart, each line starting with `indent`. Columns
/// listed in `right` are right-aligned (numbers); trailing spaces are trimmed.
fn table(out: &mut String, indent: &str, rows: &[Vec<String>], right: &[usize]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|row| row.get(i))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = indent.to_owned();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            // Padded by hand: a format width is at most u16::MAX, and a cell (an error
            // message from the kernel) may be longer.
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            if right.contains(&i) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// `93784.2` → `1d 2h 3m 4s`.
/// The flow sync section.
fn sync(out: &mut String, sync: &crate::status::SyncStatus) {
    out.push_str("\nsync\n");
    if !sync.enabled {
        out.push_str("  off (no [sync] table)\n");
        return;
    }
    out.push_str(if sync.authenticated {
        "  sealed with [sync].key_file\n"
    } else {
        "  NOT AUTHENTICATED: no [sync].key_file; any host on the segment can forge flows\n"
    });
    let mut rows = vec![
        [
            "PEER",
            "NAME",
            "UP",
            "LAG",
            "QUEUE",
            "SENT SEQ",
            "APPLIED SEQ",
            "RESYNCS OUT/IN",
        ]
        .map(String::from)
        .to_vec(),
    ];
    rows.extend(sync.peers.iter().map(|p| {
        vec![
            p.address.clone(),
            p.name.clone().unwrap_or_else(|| "?".into()),
            if p.alive { "yes" } else { "no" }.into(),
            format!("{:.0}ms", p.lag_seconds * 1000.0),
            p.queue_depth.to_string(),
            p.last_sent_seq.to_string(),
            p.last_applied_seq.to_string(),
            format!("{}/{}", p.resyncs_sent, p.resyncs_received),
        ]
    }));
    table(out, "  ", &rows, &[3, 4, 5, 6]);
    out.push_str(&format!(
        "  changes sent {}, applied {}; peer flows installed {}, removed {}, refused {}\n",
        sync.sent.changes,
        sync.received.changes,
        sync.flows_installed,
        sync.flows_removed,
        sync.flows_refused
    ));
    out.push_str(&format!(
        "  nacks sent {}, received {}; retransmits {}\n",
        sync.nacks_sent, sync.nacks_received, sync.retransmits
    ));
    let refused: Vec<String> = sync
        .drops
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if !refused.is_empty() {
        out.push_str(&format!("  datagrams refused: {}\n", refused.join(", ")));
    }
    let changes: Vec<String> = sync
        .refused
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if !changes.is_empty() {
        out.push_str(&format!("  peer changes refused: {}\n", changes.join(", ")));
    }
    if sync.flows_swept + sync.previous_key > 0 {
        out.push_str(&format!(
            "  flows swept after resyncs {}; datagrams under the previous key {}\n",
            sync.flows_swept, sync.previous_key
        ));
    }
    if sync.queue_overflow + sync.socket_errors > 0 {
        out.push_str(&format!(
            "  changes lost to full queues {}, socket errors {}\n",
            sync.queue_overflow, sync.socket_errors
        ));
    }
}

/// The reporting into the EgressGateway status: where, how recent, what it said.
fn kubernetes(out: &mut String, s: &Snapshot) {
    let k = &s.kubernetes;
    out.push_str("\nkubernetes\n");
    if !k.enabled {
        out.push_str("  off (no [kubernetes] table)\n");
        return;
    }
    let last = match k.last_apply_unix_ms {
        Some(ms) => format!(
            "last applied {} ago",
            uptime(s.taken_unix_ms.saturating_sub(ms) as f64 / 1000.0)
        ),
        None => "never applied".to_owned(),
    };
    out.push_str(&format!(
        "  EgressGateway {} as {}: {last}, {} applies, {}\n",
        k.object,
        k.field_manager,
        k.applies,
        if k.pending {
            "changes pending"
        } else {
            "up to date"
        }
    ));
    if let Some(error) = &k.last_error {
        out.push_str(&format!("  last error: {error}\n"));
    }
    if !k.nodes.is_empty() {
        let mut rows = vec![vec!["GATEWAY".to_owned(), "STATE".to_owned()]];
        rows.extend(k.nodes.iter().map(|(n, st)| vec![n.clone(), st.clone()]));
        table(out, "  ", &rows, &[]);
    }
    if !k.floating_ips.is_empty() {
        let mut rows = vec![vec!["FLOATING IP".to_owned(), "HOLDER".to_owned()]];
        rows.extend(
            k.floating_ips
                .iter()
                .map(|(a, n)| vec![a.clone(), n.clone()]),
        );
        table(out, "  ", &rows, &[]);
    }
    let errors: Vec<String> = k
        .errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    if !errors.is_empty() {
        out.push_str(&format!("  apply errors: {}\n", errors.join(", ")));
    }
}

fn uptime(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "unknown".to_owned();
    }
    // Saturating conversion; fractions of a second are noise here.
    let total = seconds as u64;
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    let mut text = String::new();
    for (value, unit) in [(days, "d"), (hours, "h"), (minutes, "m")] {
        if value > 0 || !text.is_empty() {
            let _ = write!(text, "{value}{unit} ");
        }
    }
    let _ = write!(text, "{secs}s");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::fixtures;
    use crate::api::http::respond;
    use hyper::Method;

    /// `response` on the wire as the server sends it (hyper, one request per connection).
    fn wire(response: crate::api::Response) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nCache-Control: no-store\r\n\
             Content-Length: {}\r\nConnection: close\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n\r\n",
            response.status.as_str(),
            response.status.canonical_reason().unwrap_or_default(),
            response.content_type,
            response.body.len()
        )
        .into_bytes();
        head.extend_from_slice(response.body.as_bytes());
        head
    }

    fn addr() -> SocketAddr {
        "127.0.0.1:9477".parse().expect("address")
    }

    #[test]
    fn a_response_of_the_server_parses_back_to_its_snapshot() {
        let snapshot = fixtures::snapshot();
        let wire = wire(respond(&Method::GET, "/status", &snapshot));
        assert_eq!(
            parse_status_response(addr(), &wire).expect("status"),
            snapshot
        );
    }

    #[test]
    fn the_head_end_is_found_with_either_line_ending() {
        assert_eq!(
            find_head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nrest"),
            Some(25)
        );
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\n\nrest"), Some(17));
        assert_eq!(find_head_end(b"HTTP/1.1 200 OK\r\nA: b\r\n"), None);
        assert_eq!(find_head_end(b""), None);
    }

    #[test]
    fn a_canned_response_parses() {
        let body = serde_json::to_string(&Snapshot::default()).expect("JSON");
        let wire = format!(
            "HTTP/1.0 200 OK\r\ncontent-type: application/json\r\nCONTENT-LENGTH: {}\r\n\r\n{body}",
            body.len()
        );
        assert_eq!(
            parse_status_response(addr(), wire.as_bytes()).expect("status"),
            Snapshot::default()
        );
        // Without Content-Length the body runs to the end of the connection.
        let wire = format!("HTTP/1.1 200 OK\nContent-Type: application/json\n\n{body}");
        assert_eq!(
            parse_status_response(addr(), wire.as_bytes()).expect("status"),
            Snapshot::default()
        );
    }

    #[test]
    fn an_error_status_is_reported_with_its_reason() {
        let wire = wire(respond(&Method::GET, "/stat", &Snapshot::default()));
        let error = parse_status_response(addr(), &wire).expect_err("404");
        assert!(
            matches!(error, ApiError::Status { status: 404, .. }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the gateway API at 127.0.0.1:9477 answered GET /status with 404 Not Found \
             (no such path: /stat; try /metrics or /status); is [api].listen the address of \
             egret-gateway and not of another service?"
        );

        let wire = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
        let error = parse_status_response(addr(), wire).expect_err("500");
        assert!(error.to_string().ends_with("with 500 Internal Server Error; see the gateway's log (journalctl -u egret-gateway)"), "{error}");
    }

    #[test]
    fn broken_responses_say_what_is_wrong() {
        let cases: [(&[u8], &str); 8] = [
            (b"", "closed the connection without answering"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
                "ends before its headers",
            ),
            (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "HTTP/1.x status line"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "HTTP/1.x status line"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n{}",
                "not a number",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
                "after 2 of its 10",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
                "transfer encoding",
            ),
            (b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n{}", "no colon"),
        ];
        for (wire, expected) in cases {
            let error = parse_status_response(addr(), wire).expect_err(expected);
            assert!(matches!(error, ApiError::Malformed { .. }), "{error:?}");
            let message = error.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(
                message.starts_with("the service at 127.0.0.1:9477 "),
                "{message}"
            );
        }
    }

    #[test]
    fn a_foreign_json_body_asks_about_versions() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"name\": 42}\n";
        let error = parse_status_response(addr(), wire).expect_err("JSON");
        assert!(matches!(error, ApiError::Json { .. }), "{error:?}");
        assert!(error.to_string().contains("same version"), "{error}");
    }

    #[test]
    fn connection_errors_read_as_advice() {
        let error = ApiError::Connect {
            addr: addr(),
            cause: io::Error::from_raw_os_error(libc::ECONNREFUSED),
        };
        assert_eq!(
            error.to_string(),
            "cannot connect to the gateway API at 127.0.0.1:9477: connection refused; is \
             egret-gateway running, and is [api].listen this address?"
        );
        let error = ApiError::Timeout {
            addr: addr(),
            timeout: Duration::from_secs(2),
        };
        assert!(
            error.to_string().contains("did not answer within 2s"),
            "{error}"
        );
    }

    #[test]
    fn text_shows_non_zero_drops_only() {
        let text = render_text(&fixtures::snapshot());
        assert!(text.contains("\ndrops\n  disallowed_source  7\n"), "{text}");
        assert!(!text.contains("malformed"), "{text}");

        let mut quiet = fixtures::snapshot();
        quiet.drops.values_mut().for_each(|count| *count = 0);
        let text = render_text(&quiet);
        assert!(text.contains("\ndrops\n  none\n"), "{text}");
        assert!(!text.contains("disallowed_source"), "{text}");
    }

    #[test]
    fn text_lays_out_the_whole_snapshot() {
        let text = render_text(&fixtures::snapshot());
        let expected = "\
gateway    gw1
interface  eth1, 192.168.1.11, 02:00:00:00:00:11
uptime     12s
next hop   192.168.1.1 at 02:00:00:00:00:01
fast path  on, 3 flows

floating IPs
  ADDRESS        VRID  STATE   MASTER        PRIORITY   SINCE  PORTS IN USE  FLOWS
  192.168.1.100    10  master  gw1                100  0s ago       3/49152      4
  192.168.1.101    11  backup  192.168.1.12        90  0s ago       0/49152      0

election (multicast adverts)
  ADDRESS        TRANSITIONS  ADVERTS SENT  ADVERTS RECEIVED
  192.168.1.100            2           120                 3
  192.168.1.101            1             0               118
  adverts refused: ttl 2, unknown VRID 5
  adverts not sent: 1

traffic
                              PACKETS  BYTES
  outbound (node to outside)       10   1000
  inbound (outside to node)         9    900

flows
  live           4
  max      1000000
  created        6
  expired        2

drops
  disallowed_source  7

control
  ARP requests answered      1
  ARP requests sent          2
  gratuitous ARPs sent       3
  ICMP echo replies sent     4
  ICMP errors sent           5
  ICMP errors rate-limited   7
  send errors                6
  frames read by user space  8

sync
  sealed with [sync].key_file
  PEER               NAME  UP   LAG  QUEUE  SENT SEQ  APPLIED SEQ  RESYNCS OUT/IN
  192.168.1.12:4801  gw2   yes  4ms     12        41           39  1/1
  changes sent 300, applied 250; peer flows installed 250, removed 10, refused 4
  nacks sent 1, received 2; retransmits 3
  datagrams refused: bad_magic 6
  peer changes refused: lifetime 1, not_master 3
  flows swept after resyncs 2; datagrams under the previous key 3

kubernetes
  EgressGateway default as egret-gateway/gw1: last applied 2s ago, 3 applies, up to date
  GATEWAY  STATE
  gw1      Up
  gw2      Up
  FLOATING IP    HOLDER
  192.168.1.100  gw1
  192.168.1.101  gw2
  apply errors: timeout 1

nodes
  ADDRESS       MAC                TUNNEL MAC         VERIFIED
  192.168.1.21  02:00:00:00:00:21  02:00:00:00:01:21  yes
  ARP probes 9: confirmed 7, moved 1, conflict 1, unanswered 0
";
        assert_eq!(text, expected);
    }

    #[test]
    fn text_of_an_empty_snapshot_says_none() {
        let text = render_text(&Snapshot::default());
        assert!(
            text.contains("\nfloating IPs\n  none configured\n"),
            "{text}"
        );
        assert!(text.contains("\nnodes\n  none seen recently\n"), "{text}");
        assert!(text.contains("next hop   unknown\n"), "{text}");
        assert!(text.contains("fast path  off\n"), "{text}");
        // A kernel's refusal can be a verifier log of any length, over many lines.
        let mut refused = Snapshot::default();
        refused.fast_path.reason = Some(format!(
            "loading: {}\n{}",
            "x".repeat(70_000),
            "y\n".repeat(9)
        ));
        let text = render_text(&refused);
        let line = text
            .lines()
            .find(|l| l.starts_with("fast path"))
            .expect("the line");
        assert!(
            line.starts_with("fast path  off: loading: xxx") && line.ends_with(" …"),
            "{line}"
        );
        assert!(line.chars().count() < 200, "{line}");
        assert!(text.contains("uptime     0s\n"), "{text}");
    }

    #[test]
    fn uptime_reads_as_days_hours_minutes_seconds() {
        assert_eq!(uptime(0.4), "0s");
        assert_eq!(uptime(59.9), "59s");
        assert_eq!(uptime(3600.0), "1h 0m 0s");
        assert_eq!(uptime(93_784.2), "1d 2h 3m 4s");
        assert_eq!(uptime(f64::NAN), "unknown");
        assert_eq!(uptime(-1.0), "unknown");
    }
}
