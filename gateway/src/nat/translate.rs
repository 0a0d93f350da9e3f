//! Translating packets in place: parse → conntrack → rewrite.
//!
//! Input is one IPv4 packet (the inner packet of the tunnel on the way out, the packet from
//! the outside world on the way back), borrowed mutably. Headers are read through
//! `smoltcp::wire` views; addresses, ports and ICMP identifiers are rewritten in place and
//! every checksum that covers them is patched incrementally (RFC 1624), so the cost does not
//! depend on the payload size.
//!
//! What is not translated is refused with a [`NatError`], never a panic: the caller counts
//! it by [`NatError::label`] and drops the packet.
//!
//! - The IPv4 header checksum is verified; transport checksums are not (a bad one stays bad
//!   after the incremental update, and the receiver drops the segment).
//! - Fragments are refused: only the first fragment carries the ports.
//! - ICMP errors about a flow (destination unreachable, including fragmentation needed, time
//!   exceeded, parameter problem) are translated in both directions together with the
//!   packet they quote (RFC 5508 REQ-3, REQ-4); they do not refresh the flow.

use core::net::Ipv4Addr;

use smoltcp::time::Instant;
use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use super::checksum::{ChecksumDelta, get16, set16};
use super::flow::{Direction, FlowState, InsideKey, OutsideKey, Proto, TcpFlags};
use super::table::{FlowId, FlowTable, Prefetch};
use super::{BuildError, NatError, NatParams};

/// Offsets inside an IPv4 header, for the quoted header of an ICMP error.
const IP_CHECKSUM: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
/// Offsets inside an ICMP message.
const ICMP_CHECKSUM: usize = 2;
const ICMP_ECHO_IDENT: usize = 4;
const ICMP_ERROR_QUOTE: usize = 8;
/// Packets whose lookups a batch overlaps: enough to cover a memory latency.
const PREFETCH_CHUNK: usize = 16;
/// Below this many flows the table fits in the caches (about 70 bytes a flow against a few
/// MiB of L2/L3), and batches skip fetching ahead.
const PREFETCH_MIN_FLOWS: usize = 32 * 1024;
/// Bytes of the quoted transport header that RFC 792 guarantees.
const QUOTED_L4_LEN: usize = 8;

/// What happened to a packet that was translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translated {
    pub flow: FlowId,
    /// The node the flow came from: where a reply is tunnelled back to.
    pub node: Ipv4Addr,
    /// Whether this packet created the flow.
    pub created: bool,
    /// Whether this packet moved an existing flow to another state (TCP).
    pub state_changed: bool,
}

/// The NAT: a flow table and the packet translation around it.
#[derive(Debug)]
pub struct Nat {
    table: FlowTable,
}

/// An IPv4 header, checked once: version, lengths, header checksum, not a fragment.
/// Bytes after the total length (Ethernet padding) are allowed. The data path parses each
/// header once with [`Ipv4Header::parse`] and hands it to the translation with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Header length in bytes.
    pub ihl: usize,
    /// Total length in bytes.
    pub total: usize,
    pub proto: IpProtocol,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    /// Don't Fragment.
    pub dont_frag: bool,
}

impl Ipv4Header {
    #[inline(always)]
    pub fn parse(packet: &[u8]) -> Result<Ipv4Header, NatError> {
        if packet.first().is_some_and(|b| b >> 4 != 4) {
            return Err(NatError::NotIpv4);
        }
        let ip = Ipv4Packet::new_checked(packet).map_err(|_| NatError::Malformed)?;
        if ip.header_len() < 20 {
            return Err(NatError::Malformed);
        }
        if !ip.verify_checksum() {
            return Err(NatError::BadChecksum);
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            return Err(NatError::Fragment);
        }
        Ok(Ipv4Header {
            ihl: usize::from(ip.header_len()),
            total: usize::from(ip.total_len()),
            proto: ip.next_header(),
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            ttl: ip.hop_limit(),
            dont_frag: ip.dont_frag(),
        })
    }

    /// IPv4 plus the smallest transport header: what a segment of a super-packet repeats.
    pub fn headers(&self) -> usize {
        self.ihl + if self.proto == IpProtocol::Tcp { 20 } else { 8 }
    }
}

/// Which address of a packet the NAT rewrites.
#[derive(Clone, Copy)]
enum Side {
    Src,
    Dst,
}

impl Side {
    fn ip_offset(self) -> usize {
        match self {
            Side::Src => IP_SRC,
            Side::Dst => IP_DST,
        }
    }
    fn port_offset(self) -> usize {
        match self {
            Side::Src => 0,
            Side::Dst => 2,
        }
    }
}

/// Rewrites one address of an IPv4 header and patches its checksum. Returns the change,
/// which the transport checksum's pseudo-header also needs.
#[inline(always)]
fn rewrite_ip(header: &mut [u8], side: Side, new: Ipv4Addr) -> ChecksumDelta {
    let at = side.ip_offset();
    let mut old = [0; 4];
    old.copy_from_slice(&header[at..at + 4]);
    let mut delta = ChecksumDelta::default();
    delta.addr(old, new.octets());
    header[at..at + 4].copy_from_slice(&new.octets());
    let sum = delta.apply(get16(header, IP_CHECKSUM));
    set16(header, IP_CHECKSUM, sum);
    delta
}

fn tcp_flags<T: AsRef<[u8]>>(tcp: &TcpPacket<T>) -> TcpFlags {
    TcpFlags {
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
    }
}

/// The state of a packet's TCP or UDP checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Checksum {
    /// The checksum field holds the finished checksum.
    Complete,
    /// The sender's checksum offload has not run yet (Linux `CHECKSUM_PARTIAL`, a virtio-net
    /// header with `NEEDS_CSUM`): the field holds the plain, not complemented, sum of the
    /// pseudo-header, and whoever finishes it adds the transport header and payload. Only
    /// the addresses are in that sum, so only their change is folded in; the ports are
    /// summed later with the rest of the segment.
    Partial,
}

impl L4Checksum {
    /// The checksum after the address change `ip` and the port change `old -> new`.
    #[inline]
    fn patch(self, sum: u16, ip: ChecksumDelta, old: u16, new: u16) -> u16 {
        match self {
            L4Checksum::Complete => {
                let mut delta = ip;
                delta.word(old, new);
                delta.apply(sum)
            }
            L4Checksum::Partial => ip.apply_partial(sum),
        }
    }

    /// As [`patch`](Self::patch) for UDP, where a complete zero means "no checksum".
    #[inline]
    fn patch_udp(self, sum: u16, ip: ChecksumDelta, old: u16, new: u16) -> u16 {
        match self {
            L4Checksum::Complete => {
                let mut delta = ip;
                delta.word(old, new);
                delta.apply_udp(sum)
            }
            L4Checksum::Partial => ip.apply_partial(sum),
        }
    }
}

/// One packet of an outbound batch, with where it came from.
#[derive(Debug)]
pub struct OutboundPacket<'a> {
    pub node: Ipv4Addr,
    pub egress: Ipv4Addr,
    pub packet: &'a mut [u8],
}

/// Protocol, source, destination and the two ports (ICMP echo: the identifier as the
/// port of the side that sent the request) of a packet, read without any validation.
/// Only good for prefetching: the translation parses the packet properly.
fn peek(packet: &[u8], echo_type: u8) -> Option<(Proto, Ipv4Addr, Ipv4Addr, u16, u16)> {
    let header = packet.get(..20)?;
    let l4 = packet.get(usize::from(header[0] & 0x0f) * 4..)?.get(..8)?;
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    match header[9] {
        6 => Some((Proto::Tcp, src, dst, get16(l4, 0), get16(l4, 2))),
        17 => Some((Proto::Udp, src, dst, get16(l4, 0), get16(l4, 2))),
        1 if l4[0] == echo_type => Some((Proto::Icmp, src, dst, get16(l4, ICMP_ECHO_IDENT), 0)),
        _ => None,
    }
}

fn peek_inside(p: &OutboundPacket<'_>) -> Option<InsideKey> {
    let (proto, pod, remote, pod_port, remote_port) = peek(p.packet, 8)?;
    Some(InsideKey {
        node: p.node,
        egress: p.egress,
        pod,
        remote,
        pod_port,
        remote_port,
        proto,
    })
}

fn peek_outside(packet: &[u8]) -> Option<OutsideKey> {
    let (proto, remote, egress, remote_port, nat_port) = peek(packet, 0)?;
    // For an echo reply the identifier is the NAT side's.
    let (nat_port, remote_port) = if proto == Proto::Icmp {
        (remote_port, 0)
    } else {
        (nat_port, remote_port)
    };
    Some(OutsideKey {
        egress,
        remote,
        nat_port,
        remote_port,
        proto,
    })
}

impl Nat {
    /// A NAT with an empty flow table; `seed` seeds its hashes and port choices.
    pub fn new(params: &NatParams, seed: u64) -> Result<Nat, BuildError> {
        Ok(Nat {
            table: FlowTable::new(params, seed)?,
        })
    }

    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    pub fn table_mut(&mut self) -> &mut FlowTable {
        &mut self.table
    }

    /// Translates a packet from a pod on its way out: its source becomes `egress` and a
    /// NAT port. `node` is the tunnel's outer source, `egress` the floating IP the node
    /// tunnelled to. A TCP flow is only created by a SYN.
    pub fn outbound(
        &mut self,
        now: Instant,
        node: Ipv4Addr,
        egress: Ipv4Addr,
        packet: &mut [u8],
    ) -> Result<Translated, NatError> {
        self.outbound_with(now, node, egress, packet, L4Checksum::Complete)
    }

    /// As [`outbound`](Self::outbound), for a packet whose TCP or UDP checksum may be left
    /// for the sender's offload to finish (see [`L4Checksum`]).
    pub fn outbound_with(
        &mut self,
        now: Instant,
        node: Ipv4Addr,
        egress: Ipv4Addr,
        packet: &mut [u8],
        l4sum: L4Checksum,
    ) -> Result<Translated, NatError> {
        let h = Ipv4Header::parse(packet)?;
        self.outbound_parsed(now, node, egress, &h, packet, l4sum)
    }

    /// As [`outbound_with`](Self::outbound_with), for a packet whose header `h` the caller
    /// already parsed (and so checked) with [`Ipv4Header::parse`].
    #[inline(always)]
    pub fn outbound_parsed(
        &mut self,
        now: Instant,
        node: Ipv4Addr,
        egress: Ipv4Addr,
        h: &Ipv4Header,
        packet: &mut [u8],
        l4sum: L4Checksum,
    ) -> Result<Translated, NatError> {
        let (header, rest) = packet.split_at_mut(h.ihl);
        let l4 = &mut rest[..h.total - h.ihl];
        let mut key = InsideKey {
            node,
            egress,
            pod: h.src,
            remote: h.dst,
            pod_port: 0,
            remote_port: 0,
            proto: Proto::Udp,
        };
        match h.proto {
            IpProtocol::Tcp => {
                let mut tcp = TcpPacket::new_checked(&mut *l4).map_err(|_| NatError::Malformed)?;
                let flags = tcp_flags(&tcp);
                key.proto = Proto::Tcp;
                key.pod_port = tcp.src_port();
                key.remote_port = tcp.dst_port();
                let opens = flags.syn && !flags.ack && !flags.rst;
                let t = self.track_outbound(
                    now,
                    key,
                    |state| state.on_tcp(Direction::Outbound, flags),
                    opens,
                )?;
                let nat_port = self.table.flow(t.flow).nat_port;
                let ip = rewrite_ip(header, Side::Src, egress);
                tcp.set_src_port(nat_port);
                tcp.set_checksum(l4sum.patch(tcp.checksum(), ip, key.pod_port, nat_port));
                Ok(t)
            }
            IpProtocol::Udp => {
                let mut udp = UdpPacket::new_checked(&mut *l4).map_err(|_| NatError::Malformed)?;
                key.pod_port = udp.src_port();
                key.remote_port = udp.dst_port();
                let t = self.track_outbound(now, key, |s| s, true)?;
                let nat_port = self.table.flow(t.flow).nat_port;
                let ip = rewrite_ip(header, Side::Src, egress);
                udp.set_src_port(nat_port);
                udp.set_checksum(l4sum.patch_udp(udp.checksum(), ip, key.pod_port, nat_port));
                Ok(t)
            }
            IpProtocol::Icmp => {
                let mut icmp =
                    Icmpv4Packet::new_checked(&mut *l4).map_err(|_| NatError::Malformed)?;
                match icmp.msg_type() {
                    Icmpv4Message::EchoRequest => {
                        key.proto = Proto::Icmp;
                        key.pod_port = icmp.echo_ident();
                        let t = self.track_outbound(now, key, |s| s, true)?;
                        let nat_id = self.table.flow(t.flow).nat_port;
                        let mut delta = ChecksumDelta::default();
                        delta.word(key.pod_port, nat_id);
                        icmp.set_echo_ident(nat_id);
                        icmp.set_checksum(delta.apply(icmp.checksum()));
                        rewrite_ip(header, Side::Src, egress);
                        Ok(t)
                    }
                    msg if is_icmp_error(msg) => {
                        // The pod reports a problem with a packet it got from the outside:
                        // the quote carries remote -> pod, so the pod side is its destination.
                        let q = parse_quote(l4)?;
                        if q.dst != h.src {
                            return Err(NatError::Malformed);
                        }
                        let key = InsideKey {
                            node,
                            egress,
                            pod: q.dst,
                            remote: q.src,
                            pod_port: q.dst_port,
                            remote_port: q.src_port,
                            proto: q.proto,
                        };
                        let id = self.table.lookup_inside(&key).ok_or(NatError::NoFlow)?;
                        if self.table.is_expired(id, now) {
                            return Err(NatError::NoFlow);
                        }
                        let nat_port = self.table.flow(id).nat_port;
                        rewrite_quote(l4, &q, Side::Dst, egress, nat_port);
                        rewrite_ip(header, Side::Src, egress);
                        Ok(Translated {
                            flow: id,
                            node,
                            created: false,
                            state_changed: false,
                        })
                    }
                    _ => Err(NatError::UnsupportedIcmp),
                }
            }
            _ => Err(NatError::UnsupportedProtocol),
        }
    }

    /// Translates a packet from the outside world addressed to an egress IP back to the pod
    /// of its flow. Only replies to existing flows pass.
    pub fn inbound(&mut self, now: Instant, packet: &mut [u8]) -> Result<Translated, NatError> {
        self.inbound_with(now, packet, L4Checksum::Complete)
    }

    /// As [`inbound`](Self::inbound), for a packet whose TCP or UDP checksum may be left for
    /// the sender's offload to finish (see [`L4Checksum`]).
    pub fn inbound_with(
        &mut self,
        now: Instant,
        packet: &mut [u8],
        l4sum: L4Checksum,
    ) -> Result<Translated, NatError> {
        let h = Ipv4Header::parse(packet)?;
        self.inbound_parsed(now, &h, packet, l4sum)
    }

    /// As [`inbound_with`](Self::inbound_with), for a packet whose header `h` the caller
    /// already parsed (and so checked) with [`Ipv4Header::parse`].
    #[inline(always)]
    pub fn inbound_parsed(
        &mut self,
        now: Instant,
        h: &Ipv4Header,
        packet: &mut [u8],
        l4sum: L4Checksum,
    ) -> Result<Translated, NatError> {
        let (header, rest) = packet.split_at_mut(h.ihl);
        let l4 = &mut rest[..h.total - h.ihl];
        let mut key = OutsideKey {
            egress: h.dst,
            remote: h.src,
            nat_port: 0,
            remote_port: 0,
            proto: Proto::Udp,
        };
        match h.proto {
            IpProtocol::Tcp => {
                let mut tcp = TcpPacket::new_checked(&mut *l4).map_err(|_| NatError::Malformed)?;
                let flags = tcp_flags(&tcp);
                key.proto = Proto::Tcp;
                key.nat_port = tcp.dst_port();
                key.remote_port = tcp.src_port();
                let (id, pod, pod_port, state_changed) =
                    self.track_inbound(now, &key, |s| s.on_tcp(Direction::Inbound, flags))?;
                let ip = rewrite_ip(header, Side::Dst, pod);
                tcp.set_dst_port(pod_port);
                tcp.set_checksum(l4sum.patch(tcp.checksum(), ip, key.nat_port, pod_port));
                Ok(Translated {
                    state_changed,
                    ..self.translated(id)
                })
            }
            IpProtocol::Udp => {
                let mut udp = UdpPacket::new_checked(&mut *l4).map_err(|_| NatError::Malformed)?;
                key.nat_port = udp.dst_port();
                key.remote_port = udp.src_port();
                let (id, pod, pod_port, _) = self.track_inbound(now, &key, |s| s)?;
                let ip = rewrite_ip(header, Side::Dst, pod);
                udp.set_dst_port(pod_port);
                udp.set_checksum(l4sum.patch_udp(udp.checksum(), ip, key.nat_port, pod_port));
                Ok(self.translated(id))
            }
            IpProtocol::Icmp => {
                let mut icmp =
                    Icmpv4Packet::new_checked(&mut *l4).map_err(|_| NatError::Malformed)?;
                match icmp.msg_type() {
                    Icmpv4Message::EchoReply => {
                        key.proto = Proto::Icmp;
                        key.nat_port = icmp.echo_ident();
                        let (id, pod, pod_id, _) = self.track_inbound(now, &key, |s| s)?;
                        let mut delta = ChecksumDelta::default();
                        delta.word(key.nat_port, pod_id);
                        icmp.set_echo_ident(pod_id);
                        icmp.set_checksum(delta.apply(icmp.checksum()));
                        rewrite_ip(header, Side::Dst, pod);
                        Ok(self.translated(id))
                    }
                    msg if is_icmp_error(msg) => {
                        // The quote is our own translated packet: egress:nat -> remote.
                        let q = parse_quote(l4)?;
                        if q.src != h.dst {
                            return Err(NatError::Malformed);
                        }
                        let key = OutsideKey {
                            egress: q.src,
                            remote: q.dst,
                            nat_port: q.src_port,
                            remote_port: q.dst_port,
                            proto: q.proto,
                        };
                        let id = self.table.lookup_outside(&key).ok_or(NatError::NoFlow)?;
                        if self.table.is_expired(id, now) {
                            return Err(NatError::NoFlow);
                        }
                        let flow = *self.table.flow(id);
                        rewrite_quote(l4, &q, Side::Src, flow.pod, flow.pod_port);
                        rewrite_ip(header, Side::Dst, flow.pod);
                        Ok(self.translated(id))
                    }
                    _ => Err(NatError::UnsupportedIcmp),
                }
            }
            _ => Err(NatError::UnsupportedProtocol),
        }
    }

    /// Translates a batch of outbound packets exactly as [`outbound`](Self::outbound) would
    /// one by one, reporting each result with its position. With many flows the table does
    /// not fit in the CPU caches; the batch first starts fetching every packet's index
    /// bucket, then every packet's flow, so the memory latencies overlap instead of adding up.
    pub fn outbound_batch(
        &mut self,
        now: Instant,
        batch: &mut [OutboundPacket<'_>],
        done: impl FnMut(usize, Result<Translated, NatError>),
    ) {
        self.batch(
            batch,
            |table, p| peek_inside(p).map(|k| table.prefetch_inside(&k)),
            |nat, p| nat.outbound(now, p.node, p.egress, p.packet),
            done,
        );
    }

    /// Translates a batch of inbound packets exactly as [`inbound`](Self::inbound) would
    /// one by one; see [`outbound_batch`](Self::outbound_batch).
    pub fn inbound_batch(
        &mut self,
        now: Instant,
        batch: &mut [&mut [u8]],
        done: impl FnMut(usize, Result<Translated, NatError>),
    ) {
        self.batch(
            batch,
            |table, p| peek_outside(p).map(|k| table.prefetch_outside(&k)),
            |nat, p| nat.inbound(now, p),
            done,
        );
    }

    /// Runs `translate` over a batch in chunks: first `start` fetches every packet's index
    /// bucket, then every packet's flow is fetched, then the packets are translated in order.
    fn batch<P>(
        &mut self,
        batch: &mut [P],
        start: impl Fn(&FlowTable, &P) -> Option<Prefetch>,
        mut translate: impl FnMut(&mut Nat, &mut P) -> Result<Translated, NatError>,
        mut done: impl FnMut(usize, Result<Translated, NatError>),
    ) {
        if self.table.len() < PREFETCH_MIN_FLOWS {
            // A small table stays in the caches; fetching ahead would only cost time.
            for (i, p) in batch.iter_mut().enumerate() {
                done(i, translate(self, p));
            }
            return;
        }
        for (c, chunk) in batch.chunks_mut(PREFETCH_CHUNK).enumerate() {
            let mut started = [None; PREFETCH_CHUNK];
            for (s, p) in started.iter_mut().zip(chunk.iter()) {
                *s = start(&self.table, p);
            }
            for s in started.iter().flatten() {
                self.table.prefetch_flow(*s);
            }
            for (i, p) in chunk.iter_mut().enumerate() {
                done(c * PREFETCH_CHUNK + i, translate(self, p));
            }
        }
    }

    /// Finds or creates the flow of an outbound packet and records the packet.
    #[inline(always)]
    fn track_outbound(
        &mut self,
        now: Instant,
        key: InsideKey,
        next_state: impl FnOnce(FlowState) -> FlowState,
        may_create: bool,
    ) -> Result<Translated, NatError> {
        if let Some(id) = self.table.lookup_inside(&key) {
            // An outbound packet revives a flow whose deadline passed but that the wheel
            // has not reaped yet: the pod is clearly still using it.
            let old = self.table.flow(id).state;
            let state = next_state(old);
            self.table.touch(id, now, state);
            return Ok(Translated {
                flow: id,
                node: key.node,
                created: false,
                state_changed: state != old,
            });
        }
        if !may_create {
            return Err(NatError::NotSyn);
        }
        let first = match key.proto {
            Proto::Tcp => FlowState::TcpSynSent,
            Proto::Udp | Proto::Icmp => FlowState::Open,
        };
        let id = self.table.create(now, key, first)?;
        Ok(Translated {
            flow: id,
            node: key.node,
            created: true,
            state_changed: false,
        })
    }

    /// Finds the live flow of an inbound packet and records the packet. Returns the flow
    /// and where the packet goes: pod address and port.
    #[inline(always)]
    fn track_inbound(
        &mut self,
        now: Instant,
        key: &OutsideKey,
        next_state: impl FnOnce(FlowState) -> FlowState,
    ) -> Result<(FlowId, Ipv4Addr, u16, bool), NatError> {
        let id = self.table.lookup_outside(key).ok_or(NatError::NoFlow)?;
        if self.table.is_expired(id, now) {
            return Err(NatError::NoFlow);
        }
        let flow = *self.table.flow(id);
        let state = next_state(flow.state);
        self.table.touch(id, now, state);
        Ok((id, flow.pod, flow.pod_port, state != flow.state))
    }

    fn translated(&self, id: FlowId) -> Translated {
        Translated {
            flow: id,
            node: self.table.flow(id).node,
            created: false,
            state_changed: false,
        }
    }
}

fn is_icmp_error(msg: Icmpv4Message) -> bool {
    matches!(
        msg,
        Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded | Icmpv4Message::ParamProblem
    )
}

/// The packet quoted by an ICMP error: its header and the first 8 bytes of its transport
/// header (RFC 792).
struct Quote {
    /// Offset of the quoted transport header inside the ICMP message.
    l4_at: usize,
    proto: Proto,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    /// Ports; for a quoted ICMP echo the identifier is the port of whichever side sent it.
    src_port: u16,
    dst_port: u16,
}

fn parse_quote(icmp: &[u8]) -> Result<Quote, NatError> {
    let quoted = icmp.get(ICMP_ERROR_QUOTE..).ok_or(NatError::Malformed)?;
    if quoted.len() < 20 || quoted[0] >> 4 != 4 {
        return Err(NatError::Malformed);
    }
    // The quote is truncated by design: check lengths here instead of `new_checked`.
    let ip = Ipv4Packet::new_unchecked(quoted);
    let ihl = usize::from(ip.header_len());
    if ihl < 20 || quoted.len() < ihl + QUOTED_L4_LEN {
        return Err(NatError::Malformed);
    }
    if ip.frag_offset() != 0 {
        return Err(NatError::Fragment);
    }
    let l4 = &quoted[ihl..];
    let (proto, src_port, dst_port) = match ip.next_header() {
        IpProtocol::Tcp => (Proto::Tcp, get16(l4, 0), get16(l4, 2)),
        IpProtocol::Udp => (Proto::Udp, get16(l4, 0), get16(l4, 2)),
        IpProtocol::Icmp => {
            let ident = get16(l4, ICMP_ECHO_IDENT);
            match Icmpv4Message::from(l4[0]) {
                // Our echo request went out from the egress side ...
                Icmpv4Message::EchoRequest => (Proto::Icmp, ident, 0),
                // ... and a pod's reply to an echo reply names the pod side.
                Icmpv4Message::EchoReply => (Proto::Icmp, 0, ident),
                _ => return Err(NatError::UnsupportedIcmp),
            }
        }
        _ => return Err(NatError::UnsupportedProtocol),
    };
    Ok(Quote {
        l4_at: ICMP_ERROR_QUOTE + ihl,
        proto,
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        src_port,
        dst_port,
    })
}

/// Rewrites one side of the packet quoted in an ICMP error: its address (and the quoted
/// header checksum), its port or echo identifier (and the quoted transport checksum when
/// the quote holds it), then patches the ICMP checksum for every word that changed.
fn rewrite_quote(icmp: &mut [u8], q: &Quote, side: Side, addr: Ipv4Addr, port: u16) {
    let quoted = &mut icmp[ICMP_ERROR_QUOTE..];
    let old_ip_sum = get16(quoted, IP_CHECKSUM);
    let pseudo = rewrite_ip(quoted, side, addr);
    let mut outer = pseudo;
    outer.word(old_ip_sum, get16(quoted, IP_CHECKSUM));

    let (port_at, l4_sum_at) = match q.proto {
        Proto::Tcp => (q.l4_at + side.port_offset(), Some(q.l4_at + 16)),
        Proto::Udp => (q.l4_at + side.port_offset(), Some(q.l4_at + 6)),
        Proto::Icmp => (q.l4_at + ICMP_ECHO_IDENT, Some(q.l4_at + ICMP_CHECKSUM)),
    };
    let old_port = get16(icmp, port_at);
    set16(icmp, port_at, port);
    outer.word(old_port, port);

    let mut inner = ChecksumDelta::default();
    if q.proto != Proto::Icmp {
        inner.merge(pseudo);
    }
    inner.word(old_port, port);
    // A TCP quote usually stops before the checksum (RFC 792 quotes 8 bytes).
    if let Some(at) = l4_sum_at.filter(|&at| at + 2 <= icmp.len()) {
        let old_sum = get16(icmp, at);
        let new_sum = match q.proto {
            Proto::Udp => inner.apply_udp(old_sum),
            Proto::Tcp | Proto::Icmp => inner.apply(old_sum),
        };
        set16(icmp, at, new_sum);
        outer.word(old_sum, new_sum);
    }

    let sum = outer.apply(get16(icmp, ICMP_CHECKSUM));
    set16(icmp, ICMP_CHECKSUM, sum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::checksum;
    use crate::nat::fixtures::*;

    const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 21);
    const EGRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
    const POD: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 5);

    fn nat() -> Nat {
        nat_with(16384..=65535)
    }

    fn nat_with(ports: core::ops::RangeInclusive<u16>) -> Nat {
        let params = NatParams {
            port_range: ports,
            max_flows: 2 * PREFETCH_MIN_FLOWS as u32,
            ..NatParams::default()
        };
        Nat::new(&params, 42).unwrap()
    }

    fn t(s: i64) -> Instant {
        Instant::from_secs(s)
    }

    /// Verifies every checksum of a packet by full recomputation.
    fn assert_checksums_valid(packet: &[u8]) {
        let ip = Ipv4Packet::new_checked(packet).unwrap();
        assert!(ip.verify_checksum(), "IPv4 header checksum");
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let l4 = ip.payload();
        match ip.next_header() {
            IpProtocol::Tcp => assert!(
                TcpPacket::new_checked(l4)
                    .unwrap()
                    .verify_checksum(&src.into(), &dst.into())
            ),
            IpProtocol::Udp => {
                let udp = UdpPacket::new_checked(l4).unwrap();
                assert!(
                    udp.checksum() == 0 || udp.verify_checksum(&src.into(), &dst.into()),
                    "UDP checksum"
                );
            }
            IpProtocol::Icmp => assert_eq!(checksum::full(l4), 0, "ICMP checksum"),
            p => panic!("unexpected protocol {p}"),
        }
    }

    #[test]
    fn tcp_handshake_matches_scapy() {
        let mut n = nat();
        let mut p = TCP_SYN_OUT;
        let out = n.outbound(t(0), NODE, EGRESS, &mut p).unwrap();
        assert!(out.created);
        assert_eq!(p, TCP_SYN_OUT_NAT);
        assert_eq!(n.table().flow(out.flow).state, FlowState::TcpSynSent);

        let mut p = TCP_SYNACK_IN;
        let back = n.inbound(t(0), &mut p).unwrap();
        assert_eq!(p, TCP_SYNACK_IN_NAT);
        assert_eq!(back.flow, out.flow);
        assert_eq!(back.node, NODE);
        assert_eq!(n.table().flow(out.flow).state, FlowState::TcpSynReceived);

        let mut p = TCP_ACK_DATA_OUT;
        n.outbound(t(1), NODE, EGRESS, &mut p).unwrap();
        assert_checksums_valid(&p);
        assert_eq!(&p[12..16], &EGRESS.octets());
        assert_eq!(n.table().flow(out.flow).state, FlowState::TcpEstablished);
    }

    /// Turns the finished checksum of a TCP or UDP packet into the partial one an offload
    /// would be handed, and back: finishing sums the segment with the pseudo-header in place.
    fn make_partial(packet: &mut [u8]) {
        let ip = Ipv4Packet::new_checked(&*packet).unwrap();
        let (ihl, total) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
        let at = ihl
            + if ip.next_header() == IpProtocol::Tcp {
                16
            } else {
                6
            };
        let sum = checksum::pseudo_header_sum(
            ip.src_addr().octets(),
            ip.dst_addr().octets(),
            ip.next_header().into(),
            (total - ihl) as u16,
        );
        set16(packet, at, sum);
    }

    fn finish_partial(packet: &mut [u8]) {
        let ip = Ipv4Packet::new_checked(&*packet).unwrap();
        let (ihl, total) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
        let at = ihl
            + if ip.next_header() == IpProtocol::Tcp {
                16
            } else {
                6
            };
        let sum = checksum::full(&packet[ihl..total]);
        set16(packet, at, sum);
    }

    #[test]
    fn partial_checksums_come_out_as_the_offload_expects() {
        // The same packets as the scapy fixtures, handed over with the checksum left to the
        // offload: once finished, the result must equal scapy's full recompute.
        let cases: [(&[u8], &[u8], bool); 3] = [
            (&TCP_SYN_OUT, &TCP_SYN_OUT_NAT, true),
            (&UDP_OUT, &UDP_OUT_NAT, true),
            (&TCP_SYNACK_IN, &TCP_SYNACK_IN_NAT, false),
        ];
        let mut n = nat();
        for (input, expected, outbound) in cases {
            let mut p = input.to_vec();
            make_partial(&mut p);
            if outbound {
                n.outbound_with(t(0), NODE, EGRESS, &mut p, L4Checksum::Partial)
                    .unwrap();
            } else {
                n.inbound_with(t(0), &mut p, L4Checksum::Partial).unwrap();
            }
            let mut want = expected.to_vec();
            make_partial(&mut want);
            assert_eq!(p, want, "partial sum of the translated pseudo-header");
            finish_partial(&mut p);
            assert_eq!(p, expected, "finished by the offload, as scapy computes it");
        }
    }

    #[test]
    fn udp_and_its_port_unreachable_match_scapy() {
        let mut n = nat();
        let mut p = UDP_OUT;
        n.outbound(t(0), NODE, EGRESS, &mut p).unwrap();
        assert_eq!(p, UDP_OUT_NAT);
        let mut p = PORT_UNREACH_IN;
        let back = n.inbound(t(1), &mut p).unwrap();
        assert_eq!(p, PORT_UNREACH_IN_NAT);
        assert_eq!(back.node, NODE);
    }

    #[test]
    fn udp_without_checksum_keeps_none() {
        let mut n = nat();
        let mut p = UDP_NOCSUM_OUT;
        n.outbound(t(0), NODE, EGRESS, &mut p).unwrap();
        assert_eq!(&p[26..28], &[0, 0], "zero UDP checksum stays zero");
        assert_checksums_valid(&p);
    }

    #[test]
    fn echo_and_reply_match_scapy() {
        let mut n = nat();
        let mut p = ECHO_OUT;
        n.outbound(t(0), NODE, EGRESS, &mut p).unwrap();
        assert_eq!(p, ECHO_OUT_NAT);
        let mut p = ECHO_REPLY_IN;
        n.inbound(t(0), &mut p).unwrap();
        assert_eq!(p, ECHO_REPLY_IN_NAT);
    }

    #[test]
    fn icmp_errors_from_outside_match_scapy() {
        let mut n = nat();
        n.outbound(t(0), NODE, EGRESS, &mut TCP_SYN_OUT.clone())
            .unwrap();
        n.outbound(t(0), NODE, EGRESS, &mut ECHO_OUT.clone())
            .unwrap();
        for (input, expected) in [
            (&FRAG_NEEDED_IN[..], &FRAG_NEEDED_IN_NAT[..]),
            (&TCP_LONG_QUOTE_IN[..], &TCP_LONG_QUOTE_IN_NAT[..]),
            (&TTL_EXCEEDED_ECHO_IN[..], &TTL_EXCEEDED_ECHO_IN_NAT[..]),
        ] {
            let mut p = input.to_vec();
            let back = n.inbound(t(1), &mut p).unwrap();
            assert_eq!(p, expected);
            assert_eq!(back.node, NODE);
        }
    }

    #[test]
    fn icmp_errors_do_not_refresh_the_flow() {
        let mut n = nat();
        let out = n
            .outbound(t(0), NODE, EGRESS, &mut UDP_OUT.clone())
            .unwrap();
        let before = n.table().remaining(out.flow, t(100));
        n.inbound(t(100), &mut PORT_UNREACH_IN.clone()).unwrap();
        assert_eq!(n.table().remaining(out.flow, t(100)), before);
    }

    #[test]
    fn pod_icmp_error_goes_out_translated() {
        let mut n = nat();
        n.outbound(t(0), NODE, EGRESS, &mut UDP_OUT.clone())
            .unwrap();
        let mut p = POD_PORT_UNREACH_OUT;
        n.outbound(t(1), NODE, EGRESS, &mut p).unwrap();
        assert_eq!(p, POD_PORT_UNREACH_OUT_NAT);
    }

    #[test]
    fn a_port_outside_the_range_is_replaced_and_checksums_hold() {
        let mut n = nat_with(50000..=50010);
        for fixture in [&UDP_OUT[..], &TCP_SYN_OUT[..], &ECHO_OUT[..]] {
            let mut p = fixture.to_vec();
            let out = n.outbound(t(0), NODE, EGRESS, &mut p).unwrap();
            let nat_port = n.table().flow(out.flow).nat_port;
            assert!((50000..=50010).contains(&nat_port));
            assert_checksums_valid(&p);
        }
        // The reply to the rewritten UDP flow finds its way back, byte for byte.
        let udp = n.table().lookup_inside(&InsideKey {
            node: NODE,
            egress: EGRESS,
            pod: POD,
            remote: Ipv4Addr::new(198, 51, 100, 7),
            pod_port: 40001,
            remote_port: 53,
            proto: Proto::Udp,
        });
        let nat_port = n.table().flow(udp.unwrap()).nat_port;
        let mut err = PORT_UNREACH_IN;
        // Make the quote name the rewritten port, as the outside would see it.
        let quoted_sport = ICMP_ERROR_QUOTE + 20 + 20;
        let quoted_udp_sum = quoted_sport + 6;
        let old = get16(&err, quoted_sport);
        set16(&mut err, quoted_sport, nat_port);
        let mut port = ChecksumDelta::default();
        port.word(old, nat_port);
        let old_udp_sum = get16(&err, quoted_udp_sum);
        let new_udp_sum = port.apply_udp(old_udp_sum);
        set16(&mut err, quoted_udp_sum, new_udp_sum);
        let mut d = port;
        d.word(old_udp_sum, new_udp_sum);
        let icmp_sum = 20 + ICMP_CHECKSUM;
        let sum = d.apply(get16(&err, icmp_sum));
        set16(&mut err, icmp_sum, sum);
        assert_checksums_valid(&err);
        n.inbound(t(0), &mut err).unwrap();
        assert_eq!(err, PORT_UNREACH_IN_NAT);
    }

    #[test]
    fn tcp_without_a_flow_must_open_with_syn() {
        let mut n = nat();
        assert_eq!(
            n.outbound(t(0), NODE, EGRESS, &mut TCP_ACK_DATA_OUT.clone()),
            Err(NatError::NotSyn)
        );
        assert!(n.table().is_empty());
    }

    #[test]
    fn replies_without_a_flow_are_refused() {
        let mut n = nat();
        for fixture in [
            &TCP_SYNACK_IN[..],
            &ECHO_REPLY_IN[..],
            &PORT_UNREACH_IN[..],
            &FRAG_NEEDED_IN[..],
        ] {
            let mut p = fixture.to_vec();
            assert_eq!(n.inbound(t(0), &mut p), Err(NatError::NoFlow));
            assert_eq!(p, fixture, "a refused packet is left as it was");
        }
    }

    #[test]
    fn replies_after_expiry_are_refused() {
        let mut n = nat();
        n.outbound(t(0), NODE, EGRESS, &mut ECHO_OUT.clone())
            .unwrap();
        assert!(n.inbound(t(59), &mut ECHO_REPLY_IN.clone()).is_ok());
        // The reply refreshed the flow at 59 s; 60 s of silence later it is gone.
        assert_eq!(
            n.inbound(t(119), &mut ECHO_REPLY_IN.clone()),
            Err(NatError::NoFlow)
        );
    }

    #[test]
    fn every_truncation_is_refused_without_panic() {
        let fixtures: [&[u8]; 8] = [
            &TCP_SYN_OUT,
            &UDP_OUT,
            &ECHO_OUT,
            &PORT_UNREACH_IN,
            &FRAG_NEEDED_IN,
            &TTL_EXCEEDED_ECHO_IN,
            &TCP_SYNACK_IN,
            &POD_PORT_UNREACH_OUT,
        ];
        let mut n = nat();
        n.outbound(t(0), NODE, EGRESS, &mut UDP_OUT.clone())
            .unwrap();
        for f in fixtures {
            for len in 0..f.len() {
                let mut p = f[..len].to_vec();
                assert!(n.outbound(t(0), NODE, EGRESS, &mut p).is_err(), "len {len}");
                let mut p = f[..len].to_vec();
                assert!(n.inbound(t(0), &mut p).is_err(), "len {len}");
            }
        }
    }

    /// Sets a 16-bit word of the IPv4 header and keeps the header checksum valid.
    fn set_header_word(packet: &mut [u8], at: usize, value: u16) {
        let mut d = ChecksumDelta::default();
        d.word(get16(packet, at), value);
        set16(packet, at, value);
        let sum = d.apply(get16(packet, IP_CHECKSUM));
        set16(packet, IP_CHECKSUM, sum);
    }

    #[test]
    fn refusals_name_their_reason() {
        let mut n = nat();
        let mut bad_sum = UDP_OUT;
        bad_sum[10] ^= 0xff;
        assert_eq!(
            n.outbound(t(0), NODE, EGRESS, &mut bad_sum),
            Err(NatError::BadChecksum)
        );

        let mut v6 = UDP_OUT;
        v6[0] = 0x60;
        assert_eq!(
            n.outbound(t(0), NODE, EGRESS, &mut v6),
            Err(NatError::NotIpv4)
        );

        let mut bad_ihl = UDP_OUT;
        bad_ihl[0] = 0x44;
        assert_eq!(
            n.outbound(t(0), NODE, EGRESS, &mut bad_ihl),
            Err(NatError::Malformed)
        );

        let mut frag = UDP_OUT;
        set_header_word(&mut frag, 6, get16(&UDP_OUT, 6) | 0x2000); // more fragments
        assert_eq!(
            n.outbound(t(0), NODE, EGRESS, &mut frag),
            Err(NatError::Fragment)
        );

        let mut gre = UDP_OUT;
        set_header_word(&mut gre, 8, get16(&UDP_OUT, 8) & 0xff00 | 47);
        assert_eq!(
            n.outbound(t(0), NODE, EGRESS, &mut gre),
            Err(NatError::UnsupportedProtocol)
        );

        let mut timestamp = ECHO_OUT;
        timestamp[20] = 13;
        assert_eq!(
            n.outbound(t(0), NODE, EGRESS, &mut timestamp),
            Err(NatError::UnsupportedIcmp)
        );
        assert!(n.table().is_empty(), "no refused packet made a flow");
    }

    #[test]
    fn batches_translate_exactly_like_single_packets() {
        let outbound: [&[u8]; 5] = [
            &TCP_SYN_OUT,
            &UDP_OUT,
            &ECHO_OUT,
            &TCP_ACK_DATA_OUT,
            &UDP_OUT[..20],
        ];
        let inbound: [&[u8]; 5] = [
            &TCP_SYNACK_IN,
            &ECHO_REPLY_IN,
            &PORT_UNREACH_IN,
            &FRAG_NEEDED_IN,
            &[0x45],
        ];

        // Enough other flows that batches take the fetch-ahead path.
        let crowded = || {
            let mut n = nat();
            for i in 0..PREFETCH_MIN_FLOWS as u32 {
                let key = InsideKey {
                    node: NODE,
                    egress: EGRESS,
                    pod: Ipv4Addr::from_bits(0x0a14_0000 + i),
                    remote: Ipv4Addr::new(198, 51, 100, 99),
                    pod_port: 40000,
                    remote_port: 53,
                    proto: Proto::Udp,
                };
                n.table_mut().create(t(0), key, FlowState::Open).unwrap();
            }
            n
        };
        let mut single = crowded();
        let mut one_by_one = Vec::new();
        for p in outbound {
            let mut p = p.to_vec();
            one_by_one.push((single.outbound(t(0), NODE, EGRESS, &mut p), p));
        }
        for p in inbound {
            let mut p = p.to_vec();
            one_by_one.push((single.inbound(t(0), &mut p), p));
        }

        let mut batched = crowded();
        let mut out: Vec<Vec<u8>> = outbound.iter().map(|p| p.to_vec()).collect();
        let mut batch: Vec<OutboundPacket<'_>> = out
            .iter_mut()
            .map(|p| OutboundPacket {
                node: NODE,
                egress: EGRESS,
                packet: p,
            })
            .collect();
        let mut results = Vec::new();
        batched.outbound_batch(t(0), &mut batch, |i, r| results.push((i, r)));
        let mut back: Vec<Vec<u8>> = inbound.iter().map(|p| p.to_vec()).collect();
        let mut refs: Vec<&mut [u8]> = back.iter_mut().map(|p| &mut p[..]).collect();
        batched.inbound_batch(t(0), &mut refs, |i, r| results.push((i + 5, r)));

        let indexes: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            indexes,
            (0..10).collect::<Vec<_>>(),
            "results come in order"
        );
        let packets = out.into_iter().chain(back);
        for ((expected, (_, result)), packet) in one_by_one.iter().zip(&results).zip(packets) {
            assert_eq!(&expected.0, result);
            assert_eq!(expected.1, packet);
        }
    }

    #[test]
    fn trailing_padding_is_ignored_and_kept() {
        // Ethernet pads short frames; the IPv4 total length says where the packet ends.
        let mut n = nat();
        let mut p = UDP_OUT.to_vec();
        p.extend_from_slice(&[0xee; 6]);
        n.outbound(t(0), NODE, EGRESS, &mut p).unwrap();
        assert_eq!(&p[..UDP_OUT_NAT.len()], &UDP_OUT_NAT);
        assert_eq!(&p[UDP_OUT_NAT.len()..], &[0xee; 6]);
    }
}
