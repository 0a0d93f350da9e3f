//! A deterministic simulation of whole gateways: three [`Gateway`] cores (election, NAT,
//! sync) exchanging real frames, adverts and sync datagrams on one virtual clock, with a
//! model LAN (the router, one node and its pods, the outside server), seeded loss,
//! partitions between the gateways, and crashes and restarts.
//!
//! Invariants checked while it runs:
//! - **translation**: a flow established on a master at least [`SETTLE`] before a
//!   disruption, while the group was whole, translates with the same egress IP and port on
//!   whichever gateway owns the address after it; a reply never reaches another pod port;
//! - **one master**: once the group has been whole (no cut, no loss) for one
//!   Master_Down_Interval, no floating IP has two masters;
//! - **convergence** (at each checkpoint, when the sync is idle): every other gateway
//!   holds exactly the master's flows of the master's addresses, and the ports each
//!   gateway counts in use are exactly those of the flows it holds: no port is held by a
//!   flow its owner deleted.

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress,
    IpProtocol, Ipv4Cidr, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use super::{Gateway, Outbox, Params};
use crate::datapath::{Announce, FloatingIp, Frame, Setup, Verdict};
use crate::nat::{NatParams, Timeouts};
use crate::testing::Rng;

const N: usize = 3;
const FIPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(192, 168, 1, 100),
    Ipv4Addr::new(192, 168, 1, 101),
];
/// A floating IP a reload adds.
const EXTRA: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 102);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const ROUTER_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 1]);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 21);
const NODE_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 0, 0x21]);
const NODE_VX_MAC: EthernetAddress = EthernetAddress([2, 0, 0, 0, 1, 0x21]);
const POD: Ipv4Addr = Ipv4Addr::new(10, 10, 1, 5);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const TUNNEL_PORT: u16 = 4789;
const SYNC_PORT: u16 = 4790;
const VNI: u32 = 1;
const HEADROOM: usize = 64;
/// A flow established this long before a disruption, while the group was whole, is in
/// every gateway's table.
const SETTLE: Duration = Duration::from_secs(1);
/// How long a flow lives without traffic: short, so that flows die during the run.
const UDP_TIMEOUT: Duration = Duration::from_secs(5);

fn gw_ip(g: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 1, 11 + g as u8)
}

fn gw_mac(g: usize) -> EthernetAddress {
    EthernetAddress([2, 0, 0, 0, 0, 0x11 + g as u8])
}

fn sync_addr(g: usize) -> SocketAddr {
    SocketAddr::new(gw_ip(g).into(), SYNC_PORT)
}

/// What every gateway is configured with; a reload changes it.
#[derive(Debug, Clone)]
struct Layout {
    /// Each floating IP, its VRID, and each gateway's priority for it.
    fips: Vec<(Ipv4Addr, u8, [u8; N])>,
    key: &'static [u8],
    previous_key: Option<&'static [u8]>,
}

impl Layout {
    fn initial() -> Layout {
        Layout {
            fips: vec![
                (FIPS[0], 10, [200, 150, 100]),
                (FIPS[1], 11, [100, 200, 150]),
            ],
            key: b"sim-key",
            previous_key: None,
        }
    }
}

fn params(g: usize, seed: u64, layout: &Layout) -> Params {
    let setup = Setup {
        name: format!("gw{g}"),
        interface: "eth0".into(),
        mac: gw_mac(g),
        address: gw_ip(g),
        prefix_len: 24,
        gateways: (0..N).filter(|h| *h != g).map(gw_ip).collect(),
        mtu: 1500,
        next_hop: ROUTER,
        floating_ips: layout
            .fips
            .iter()
            .map(|&(address, vrid, priorities)| FloatingIp {
                address,
                vrid,
                priority: priorities[g],
            })
            .collect(),
        announce: Announce::default(),
        tunnel_port: TUNNEL_PORT,
        vni: VNI,
        allowed_sources: vec![Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 16), 28)],
        nat: NatParams {
            port_range: 20000..=29999,
            max_flows: 1 << 14,
            timeouts: Timeouts {
                udp: UDP_TIMEOUT,
                ..Timeouts::default()
            },
            ..NatParams::default()
        },
        seed,
    };
    let peers = (0..N).filter(|h| *h != g).map(sync_addr).collect();
    Params {
        setup,
        interval_centis: 10,
        preempt: true,
        election_peers: Vec::new(),
        sync: Some(crate::sync::Params {
            primary: gw_ip(g),
            name: format!("gw{g}"),
            keys: Some(crate::sync::Keys::derive(layout.key, layout.previous_key)),
            // A short history, so that a partition outgrows it and heals by a full resync.
            ring: 8,
            ..crate::sync::Params::new(seed.max(1), peers)
        }),
        fast_path: false,
    }
}

/// Something on its way between two hosts.
enum Packet {
    /// An Ethernet frame on the LAN, to the gateway `to`.
    Frame { to: usize, bytes: Vec<u8> },
    /// A VRRP advert from gateway `from` to gateway `to`.
    Advert {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    /// A sync datagram from gateway `from` to gateway `to`.
    Datagram {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
}

/// A pod flow as the model sees it.
#[derive(Debug, Clone, Copy)]
struct FlowRecord {
    fip: usize,
    /// The NAT port it left with, once it left.
    nat_port: Option<u16>,
    established: Instant,
    /// Established early enough before a disruption that every gateway holds it.
    protected: bool,
    /// Still sending (a dead flow expires).
    live: bool,
}

struct Sim {
    now: Instant,
    rng: Rng,
    gateways: Vec<Option<Gateway>>,
    /// Each gateway's configuration.
    layouts: Vec<Layout>,
    in_flight: Vec<(Instant, Packet)>,
    /// Control traffic (adverts and sync) between these gateways is dropped.
    cut: [[bool; N]; N],
    /// Loss of control traffic, per mille.
    loss: u64,
    /// Since when the group has been whole: no cut, no loss, no crash.
    whole_since: Instant,
    /// The LAN's ARP view of the floating IPs (the node's and the router's).
    arp: BTreeMap<Ipv4Addr, EthernetAddress>,
    /// By pod port.
    flows: BTreeMap<u16, FlowRecord>,
    next_pod_port: u16,
    /// Gratuitous ARPs and ARP replies seen on the LAN for each floating IP.
    announcements: BTreeMap<Ipv4Addr, u64>,
    violations: Vec<String>,
    restarts: u64,
    outbox: Outbox,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let now = Instant::ZERO;
        let mut rng = Rng(seed | 1);
        let layout = Layout::initial();
        let gateways = (0..N)
            .map(|g| Some(Gateway::new(params(g, rng.next(), &layout), now).unwrap()))
            .collect();
        Sim {
            now,
            rng,
            gateways,
            layouts: vec![layout; N],
            in_flight: Vec::new(),
            cut: [[false; N]; N],
            loss: 0,
            whole_since: now,
            arp: BTreeMap::new(),
            flows: BTreeMap::new(),
            next_pod_port: 30000,
            announcements: BTreeMap::new(),
            violations: Vec::new(),
            restarts: 0,
            outbox: Outbox::default(),
        }
    }

    fn without_sweep(mut self) -> Sim {
        for g in self.gateways.iter_mut().flatten() {
            g.sweep = false;
        }
        self
    }

    fn violation(&mut self, what: String) {
        if self.violations.len() < 20 {
            self.violations.push(format!("at {}: {what}", self.now));
        }
    }

    /// The group is no longer whole from now: flows settled before it are protected.
    fn disrupt(&mut self) {
        let settled = self.now - SETTLE;
        let since = self.whole_since;
        for f in self.flows.values_mut() {
            if f.live && f.nat_port.is_some() && f.established >= since && f.established <= settled
            {
                f.protected = true;
            }
        }
        self.whole_since = Instant::from_secs(i64::MAX / 2_000_000);
    }

    /// The group is whole again from now.
    fn heal(&mut self) {
        self.cut = [[false; N]; N];
        self.loss = 0;
        self.whole_since = self.now;
    }

    fn crash(&mut self, g: usize) {
        self.disrupt();
        self.gateways[g] = None;
    }

    fn restart(&mut self, g: usize) {
        self.restarts += 1;
        let seed = self.rng.next();
        let params = params(g, seed, &self.layouts[g]);
        self.gateways[g] = Some(Gateway::new(params, self.now).unwrap());
        self.in_flight.retain(|(_, p)| match p {
            Packet::Frame { to, .. } | Packet::Advert { to, .. } | Packet::Datagram { to, .. } => {
                *to != g
            }
        });
    }

    fn partition(&mut self, g: usize) {
        self.disrupt();
        for h in 0..N {
            if h != g {
                self.cut[g][h] = true;
                self.cut[h][g] = true;
            }
        }
    }

    /// The gateways that own `address`.
    fn master_of(&self, address: Ipv4Addr) -> Vec<usize> {
        (0..N)
            .filter(|&g| {
                self.gateways[g]
                    .as_ref()
                    .is_some_and(|gw| gw.datapath().owns(address))
            })
            .collect()
    }

    /// Every floating IP some gateway is configured with.
    fn addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.layouts
            .iter()
            .flat_map(|l| l.fips.iter().map(|f| f.0))
            .collect()
    }

    /// Reloads each running gateway with `layout`, one after another, `apart`.
    fn rolling_reload(&mut self, layout: &Layout, apart: Duration) {
        for g in 0..N {
            let seed = self.rng.next();
            if let Some(gw) = &mut self.gateways[g] {
                gw.reconfigure(self.now, params(g, seed, layout)).unwrap();
            }
            self.layouts[g] = layout.clone();
            self.carry(g);
            self.run(apart, true);
        }
    }

    /// Runs for `d`, one millisecond at a time; with `traffic`, the pods keep their flows
    /// busy and open new ones.
    fn run(&mut self, d: Duration, traffic: bool) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(1);
            self.step(traffic);
        }
    }

    fn step(&mut self, traffic: bool) {
        let now = self.now;
        let mut due = Vec::new();
        let mut k = 0;
        while k < self.in_flight.len() {
            if self.in_flight[k].0 <= now {
                due.push(self.in_flight.swap_remove(k).1);
            } else {
                k += 1;
            }
        }
        for p in due {
            self.deliver(p);
        }
        for g in 0..N {
            if let Some(gw) = &mut self.gateways[g]
                && now >= gw.poll_at()
            {
                gw.poll(now);
            }
            self.carry(g);
        }
        if traffic {
            self.traffic();
        }
        self.check_one_master();
    }

    fn deliver(&mut self, p: Packet) {
        let now = self.now;
        match p {
            Packet::Frame { to, mut bytes } => {
                let Some(gw) = &mut self.gateways[to] else {
                    return;
                };
                let mut buf = vec![0u8; HEADROOM];
                buf.append(&mut bytes);
                let mut frame = Frame::new(&mut buf, HEADROOM);
                if gw.handle_frame(now, &mut frame) == Verdict::Transmit {
                    let out = frame.bytes().to_vec();
                    self.on_lan(to, &out);
                }
                self.carry(to);
            }
            Packet::Advert { to, bytes, .. } => {
                if let Some(gw) = &mut self.gateways[to] {
                    gw.handle_advert(now, &bytes);
                }
                self.carry(to);
            }
            Packet::Datagram { from, to, bytes } => {
                if let Some(gw) = &mut self.gateways[to] {
                    gw.handle_sync_datagram(now, sync_addr(from), &bytes);
                }
                self.carry(to);
            }
        }
    }

    /// Carries gateway `g`'s output.
    fn carry(&mut self, g: usize) {
        let Some(gw) = &mut self.gateways[g] else {
            return;
        };
        let mut out = std::mem::take(&mut self.outbox);
        gw.take_output(&mut out);
        for f in &out.frames {
            self.on_lan(g, &f.frame);
        }
        for (_, bytes) in &out.adverts {
            for h in (0..N).filter(|h| *h != g) {
                self.control(Packet::Advert {
                    from: g,
                    to: h,
                    bytes: bytes.clone(),
                });
            }
        }
        for (to, bytes) in &out.datagrams {
            let Some(h) = (0..N).find(|h| sync_addr(*h) == *to) else {
                continue;
            };
            self.control(Packet::Datagram {
                from: g,
                to: h,
                bytes: bytes.clone(),
            });
        }
        if let Some(gw) = &mut self.gateways[g] {
            gw.recycle(&mut out);
        }
        self.outbox = out;
    }

    /// Adverts and sync datagrams: cut, lost (seeded) or delayed by 0 to 2 ms, so that
    /// they may arrive out of order.
    fn control(&mut self, p: Packet) {
        let (Packet::Advert { from, to, .. } | Packet::Datagram { from, to, .. }) = &p else {
            return;
        };
        if self.cut[*from][*to] || (self.loss > 0 && self.rng.chance(self.loss)) {
            return;
        }
        let delay = Duration::from_millis(self.rng.below(3));
        self.in_flight.push((self.now + delay, p));
    }

    fn frame_to(&mut self, to: usize, bytes: Vec<u8>) {
        self.in_flight.push((self.now, Packet::Frame { to, bytes }));
    }

    /// A frame gateway `from` put on the LAN: what the router, the node and the other
    /// gateways make of it.
    fn on_lan(&mut self, from: usize, bytes: &[u8]) {
        let Ok(eth) = EthernetFrame::new_checked(bytes) else {
            return;
        };
        let dst = eth.dst_addr();
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                if dst == EthernetAddress::BROADCAST {
                    for h in (0..N).filter(|h| *h != from) {
                        if self.gateways[h].is_some() {
                            self.frame_to(h, bytes.to_vec());
                        }
                    }
                }
                self.arp_on_lan(from, eth.payload());
            }
            EthernetProtocol::Ipv4 if dst == ROUTER_MAC => self.at_router(from, eth.payload()),
            EthernetProtocol::Ipv4 if dst == NODE_MAC => self.at_node(eth.payload()),
            _ => {}
        }
    }

    fn arp_on_lan(&mut self, from: usize, payload: &[u8]) {
        let Ok(packet) = ArpPacket::new_checked(payload) else {
            return;
        };
        let Ok(ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        }) = ArpRepr::parse(&packet)
        else {
            return;
        };
        if self.addresses().contains(&source_protocol_addr) {
            // A gratuitous ARP or an answer for a floating IP: the LAN follows it.
            *self.announcements.entry(source_protocol_addr).or_default() += 1;
            self.arp.insert(source_protocol_addr, source_hardware_addr);
            return;
        }
        if operation != ArpOperation::Request {
            return;
        }
        let answer = |mac, ip| {
            let mut f = vec![0u8; 42];
            crate::datapath::encap::write_arp(
                &mut f,
                source_hardware_addr,
                ArpOperation::Reply,
                (mac, ip),
                (source_hardware_addr, source_protocol_addr),
            );
            f
        };
        if target_protocol_addr == ROUTER {
            let f = answer(ROUTER_MAC, ROUTER);
            self.frame_to(from, f);
        } else if target_protocol_addr == NODE {
            let f = answer(NODE_MAC, NODE);
            self.frame_to(from, f);
        }
    }

    /// A translated packet reaches the outside: check its source, answer it.
    fn at_router(&mut self, from: usize, ip: &[u8]) {
        let Some((src, sport, dst, dport, id)) = udp_of(ip) else {
            self.violation(format!("gw{from} sent the router something unreadable"));
            return;
        };
        if dst != REMOTE || dport != 53 {
            self.violation(format!("gw{from} sent {dst}:{dport} out"));
            return;
        }
        let Some(record) = self.flows.get(&id).copied() else {
            return;
        };
        if src != FIPS[record.fip] {
            self.violation(format!("flow {id} left gw{from} from {src}"));
            return;
        }
        match record.nat_port {
            Some(port) if port != sport => {
                if record.protected {
                    self.violation(format!(
                        "flow {id} established with port {port} left gw{from} with {sport}"
                    ));
                }
                let f = self.flows.get_mut(&id).unwrap();
                f.nat_port = Some(sport);
                f.established = self.now;
                f.protected = false;
            }
            Some(_) => {}
            None => self.flows.get_mut(&id).unwrap().nat_port = Some(sport),
        }
        // The server answers at once.
        let Some(&mac) = self.arp.get(&src) else {
            return;
        };
        let Some(to) = (0..N).find(|g| gw_mac(*g) == mac) else {
            return;
        };
        let reply = udp_packet((REMOTE, 53), (src, sport), &id.to_be_bytes());
        self.frame_to(to, ethernet(mac, ROUTER_MAC, &reply));
    }

    /// A tunnelled reply reaches the node: it must be for the pod port it names.
    fn at_node(&mut self, ip: &[u8]) {
        let Some((_, _, _, port, payload)) = udp_of(ip) else {
            return;
        };
        if port != TUNNEL_PORT {
            return;
        }
        let outer = Ipv4Packet::new_unchecked(ip);
        let udp = UdpPacket::new_unchecked(outer.payload());
        let inner = &udp.payload()[8..];
        let Ok(eth) = EthernetFrame::new_checked(inner) else {
            return;
        };
        let Some((_, _, dst, dport, id)) = udp_of(eth.payload()) else {
            self.violation("a tunnelled reply the node cannot read".into());
            return;
        };
        let _ = payload;
        if dst != POD || dport != id {
            self.violation(format!("the reply of flow {id} reached {dst}:{dport}"));
        }
    }

    /// The pods: every flow sends about every 500 ms while live; new flows open at 20 a
    /// second; one in 200 live flows goes quiet each round (and expires later).
    fn traffic(&mut self) {
        if self.rng.chance(20) {
            let id = self.next_pod_port;
            self.next_pod_port += 1;
            let fip = (id % 2) as usize;
            self.flows.insert(
                id,
                FlowRecord {
                    fip,
                    nat_port: None,
                    established: self.now,
                    protected: false,
                    live: true,
                },
            );
            self.send(id);
        }
        let live: Vec<u16> = self
            .flows
            .iter()
            .filter(|(_, f)| f.live)
            .map(|(id, _)| *id)
            .collect();
        for id in live {
            if self.rng.chance(2) {
                self.send(id);
            }
            if self.rng.chance(1) && self.rng.chance(100) {
                self.flows.get_mut(&id).unwrap().live = false;
            }
        }
    }

    /// The pod's packet of flow `id`, tunnelled to whoever the LAN says owns its address.
    fn send(&mut self, id: u16) {
        let fip = FIPS[self.flows[&id].fip];
        let Some(&mac) = self.arp.get(&fip) else {
            return;
        };
        let Some(to) = (0..N).find(|g| gw_mac(*g) == mac) else {
            return;
        };
        let inner_ip = udp_packet((POD, id), (REMOTE, 53), &id.to_be_bytes());
        let inner = ethernet(gw_mac(to), NODE_VX_MAC, &inner_ip);
        let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 0, 0];
        vxlan[4..7].copy_from_slice(&VNI.to_be_bytes()[1..]);
        vxlan.extend_from_slice(&inner);
        let outer = udp_packet((NODE, 51000), (fip, TUNNEL_PORT), &vxlan);
        self.frame_to(to, ethernet(mac, NODE_MAC, &outer));
    }

    fn check_one_master(&mut self) {
        let settle = self
            .gateways
            .iter()
            .flatten()
            .flat_map(|g| g.election().instances())
            .map(|i| i.master_down_interval())
            .max()
            .unwrap_or(Duration::ZERO);
        if self.now < self.whole_since + settle {
            return;
        }
        for address in self.addresses() {
            let masters = self.master_of(address);
            if masters.len() > 1 {
                self.violation(format!("{address} has masters {masters:?}"));
            }
        }
    }

    /// Waits (without traffic) until no sync data is queued or in flight, then checks that
    /// every gateway holds exactly the master's flows of each address, and counts exactly
    /// the ports of the flows it holds.
    fn checkpoint(&mut self) {
        for _ in 0..2000 {
            if self.sync_idle() {
                break;
            }
            self.run(Duration::from_millis(1), false);
        }
        if !self.sync_idle() {
            self.violation("the sync never went idle".into());
            return;
        }
        let now = self.now;
        for address in self.addresses() {
            let masters = self.master_of(address);
            let [m] = masters[..] else {
                self.violation(format!("{address} has masters {masters:?}"));
                continue;
            };
            let theirs = flows_of(self.gateways[m].as_ref().unwrap(), now, address);
            for g in (0..N).filter(|g| *g != m) {
                let Some(gw) = &self.gateways[g] else {
                    continue;
                };
                let held = flows_of(gw, now, address);
                if held != theirs {
                    let extra = held.difference(&theirs).count();
                    let missing = theirs.difference(&held).count();
                    self.violation(format!(
                        "gw{g} holds {} flows of {} whose master gw{m} holds {}: {extra} stale, {missing} missing",
                        held.len(),
                        address,
                        theirs.len()
                    ));
                }
            }
        }
        let mut miscounted = Vec::new();
        for (g, gw) in self.gateways.iter().enumerate() {
            let Some(gw) = gw else {
                continue;
            };
            let configured: Vec<Ipv4Addr> = self.layouts[g].fips.iter().map(|f| f.0).collect();
            let strays = gw
                .datapath()
                .nat()
                .table()
                .export(now)
                .filter(|(f, _)| !configured.contains(&f.egress))
                .count();
            if strays > 0 {
                miscounted.push(format!(
                    "gw{g} holds {strays} flows of addresses it no longer has"
                ));
            }
        }
        for (g, gw) in self.gateways.iter().enumerate() {
            let Some(gw) = gw else {
                continue;
            };
            let s = gw.snapshot(now, 0);
            for status in &s.floating_ips {
                let fip = status.address;
                let ports: BTreeSet<u16> = flows_of(gw, now, fip).iter().map(|f| f.1).collect();
                if status.ports_in_use as usize != ports.len() {
                    miscounted.push(format!(
                        "gw{g} counts {} ports in use on {fip} for {} held",
                        status.ports_in_use,
                        ports.len()
                    ));
                }
            }
        }
        for what in miscounted {
            self.violation(what);
        }
    }

    fn sync_idle(&self) -> bool {
        !self
            .in_flight
            .iter()
            .any(|(_, p)| matches!(p, Packet::Datagram { .. }))
            && self.gateways.iter().flatten().all(|g| {
                g.sync().unwrap().peers().all(|p| {
                    p.queued_changes == 0
                        && p.queued_datagrams == 0
                        && p.resync_pending == 0
                        && p.held == 0
                })
            })
    }
}

/// The flows `gw` holds of `fip`: inside key and NAT port.
fn flows_of(gw: &Gateway, now: Instant, fip: Ipv4Addr) -> BTreeSet<(u16, u16)> {
    gw.datapath()
        .nat()
        .table()
        .export(now)
        .filter(|(f, _)| f.egress == fip)
        .map(|(f, _)| (f.pod_port, f.nat_port))
        .collect()
}

fn ethernet(dst: EthernetAddress, src: EthernetAddress, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(dst.as_bytes());
    f.extend_from_slice(src.as_bytes());
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

fn udp_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let ip = Ipv4Repr {
        src_addr: src.0,
        dst_addr: dst.0,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload.len(),
        hop_limit: 64,
    };
    let mut b = vec![0; 20 + 8 + payload.len()];
    let caps = ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]), &caps);
    UdpRepr {
        src_port: src.1,
        dst_port: dst.1,
    }
    .emit(
        &mut UdpPacket::new_unchecked(&mut b[20..]),
        &IpAddress::Ipv4(src.0),
        &IpAddress::Ipv4(dst.0),
        payload.len(),
        |p| p.copy_from_slice(payload),
        &caps,
    );
    b
}

/// Source, source port, destination, destination port, and the flow id the model writes
/// as the first two payload bytes.
fn udp_of(ip: &[u8]) -> Option<(Ipv4Addr, u16, Ipv4Addr, u16, u16)> {
    let p = Ipv4Packet::new_checked(ip).ok()?;
    if p.next_header() != IpProtocol::Udp {
        return None;
    }
    let u = UdpPacket::new_checked(p.payload()).ok()?;
    let id = u
        .payload()
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    Some((p.src_addr(), u.src_port(), p.dst_addr(), u.dst_port(), id))
}

/// A seeded run: elections settle, traffic flows, then rounds of a crash and restart of a
/// master, a partition of one gateway past the sync's history, and a lossy spell, each
/// followed by a checkpoint once healed.
fn run(seed: u64, rounds: usize, sweep: bool) -> Sim {
    let mut sim = Sim::new(seed);
    if !sweep {
        sim = sim.without_sweep();
    }
    sim.run(Duration::from_secs(3), true);
    sim.checkpoint();
    for round in 0..rounds {
        match (round + seed as usize) % 3 {
            0 => {
                let fip = sim.rng.below(2) as usize;
                let Some(&m) = sim.master_of(FIPS[fip]).first() else {
                    continue;
                };
                sim.crash(m);
                let down = Duration::from_millis(1500 + sim.rng.below(1000));
                sim.run(down, true);
                sim.restart(m);
            }
            1 => {
                let g = sim.rng.below(N as u64) as usize;
                sim.partition(g);
                let cut = Duration::from_millis(6000 + sim.rng.below(2000));
                sim.run(cut, true);
            }
            _ => {
                sim.disrupt();
                sim.loss = 50 + sim.rng.below(100);
                sim.run(Duration::from_millis(2000), true);
            }
        }
        sim.heal();
        sim.run(Duration::from_secs(3), true);
        sim.checkpoint();
        sim.run(Duration::from_secs(1), true);
    }
    sim
}

#[test]
fn three_gateways_through_crashes_partitions_and_loss_keep_every_invariant() {
    for seed in [1, 2, 3] {
        let sim = run(seed, 6, true);
        assert!(
            sim.violations.is_empty(),
            "seed {seed}: {:#?}",
            sim.violations
        );
        let protected = sim.flows.values().filter(|f| f.protected).count();
        assert!(
            protected > 50,
            "seed {seed}: only {protected} flows were tested across a disruption"
        );
        assert!(sim.restarts >= 2, "seed {seed}");
        assert!(FIPS.iter().all(|a| sim.announcements.get(a) > Some(&0)));
    }
}

#[test]
fn without_the_resync_sweep_a_backup_keeps_flows_the_master_deleted() {
    // The shell before the core: nothing swept at the end of a peer's resync. A partition
    // past the sync's history, during which the master's idle flows expire, leaves their
    // copies (and ports) on the cut-off gateway.
    let sim = run(1, 6, false);
    assert!(
        sim.violations.iter().any(|v| v.contains("stale")),
        "{:#?}",
        sim.violations
    );
}

#[test]
fn a_rolling_reload_under_traffic_adds_removes_rotates_and_reprioritises_without_a_gap() {
    let mut sim = Sim::new(7);
    sim.run(Duration::from_secs(3), true);
    sim.checkpoint();
    assert_eq!(sim.master_of(FIPS[0]), [0]);
    // One reload, gateway after gateway: a new address for gw2, gw1 now outranks gw0 for
    // the first one, and a new sync key (the old one still opens the others' datagrams).
    let mut next = Layout::initial();
    next.fips.push((EXTRA, 12, [100, 120, 200]));
    next.fips[0].2 = [120, 150, 100];
    next.key = b"sim-key-2";
    next.previous_key = Some(b"sim-key");
    // The handover by priority is a takeover: flows settled before it must survive it.
    sim.disrupt();
    sim.rolling_reload(&next, Duration::from_millis(200));
    sim.heal();
    sim.run(Duration::from_secs(3), true);
    sim.checkpoint();
    assert_eq!(sim.master_of(FIPS[0]), [1], "the priority change moved it");
    assert_eq!(sim.master_of(EXTRA), [2], "the new address has its master");
    assert!(sim.announcements.get(&EXTRA) > Some(&0));
    let auth = |sim: &Sim| -> u64 {
        sim.gateways
            .iter()
            .flatten()
            .map(|g| g.snapshot(sim.now, 0).sync.drops["auth"])
            .sum()
    };
    let before = auth(&sim);
    sim.run(Duration::from_secs(2), true);
    assert_eq!(auth(&sim), before, "every gateway speaks the new key");
    // Another: the second address goes. Its master hands it over with a priority-0
    // advert, and nobody keeps it or its flows.
    let mut last = next.clone();
    last.fips.remove(1);
    last.previous_key = None;
    sim.disrupt();
    sim.rolling_reload(&last, Duration::from_millis(200));
    sim.heal();
    sim.run(Duration::from_secs(3), true);
    sim.checkpoint();
    assert!(sim.master_of(FIPS[1]).is_empty());
    let protected = sim.flows.values().filter(|f| f.protected).count();
    assert!(
        protected > 20,
        "only {protected} flows were tested across the reloads"
    );
    assert!(sim.violations.is_empty(), "{:#?}", sim.violations);
}
