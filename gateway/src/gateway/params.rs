//! A gateway's [`Params`] from its checked configuration and the facts of its host: what
//! `egret-gateway run` starts with, and what a reload hands to [`Gateway::reconfigure`].
//!
//! [`Gateway::reconfigure`]: super::Gateway::reconfigure

use core::net::Ipv4Addr;

use smoltcp::wire::EthernetAddress;

use super::Params;
use crate::config::{Config, Priority};
use crate::datapath::{Announce, FloatingIp, Setup};
use crate::{election, sync};

/// What the gateway takes from its host: its interface's facts, and the next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub mac: EthernetAddress,
    /// The interface's primary address and its prefix length.
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u16,
    /// `[gateway].next_hop`, or the default route's gateway through the interface.
    pub next_hop: Ipv4Addr,
}

impl Params {
    /// The parameters `config` gives a gateway on `host`. `seed` seeds the NAT's port
    /// allocator; `epoch` is the sync's boot id (random, never 0).
    pub fn from_config(config: &Config, host: &Host, seed: u64, epoch: u64) -> Params {
        let primary = host.address;
        Params {
            setup: Setup {
                name: config.gateway.name.clone(),
                interface: config.gateway.interface.clone(),
                mac: host.mac,
                address: primary,
                prefix_len: host.prefix_len,
                gateways: other_gateways(config, primary),
                mtu: host.mtu,
                next_hop: host.next_hop,
                floating_ips: floating_ips(config, primary),
                announce: Announce {
                    count: config.election.garp_count,
                    interval: duration(config.election.garp_interval),
                    refresh: config.election.garp_refresh.map(duration),
                },
                tunnel_port: config.tunnel.port,
                vni: config.tunnel.vni,
                allowed_sources: config.tunnel.allowed_sources.clone(),
                nat: config.nat_params(),
                seed,
            },
            interval_centis: config.election.advert_interval_centis(),
            preempt: config.election.preempt,
            election_peers: config.election.peers.clone(),
            sync: config.sync.as_ref().map(|s| sync::Params {
                primary,
                name: config.gateway.name.clone(),
                keys: s.key.as_ref().map(|(_, secret)| {
                    sync::Keys::derive(
                        &secret.0,
                        s.previous_key.as_ref().map(|(_, p)| p.0.as_slice()),
                    )
                }),
                ..sync::Params::new(epoch, s.peers.clone())
            }),
            fast_path: config.gateway.fast_path,
        }
    }
}

impl Params {
    /// The floating IPs.
    pub fn addresses(&self) -> Vec<Ipv4Addr> {
        self.setup.floating_ips.iter().map(|f| f.address).collect()
    }
}

fn duration(d: std::time::Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(d.as_micros() as u64)
}

/// The other gateways' addresses, as the config names them (election and sync peers, and
/// this gateway's own sync address when it is not the interface's).
fn other_gateways(config: &Config, primary: Ipv4Addr) -> Vec<Ipv4Addr> {
    let mut all: Vec<Ipv4Addr> = config.election.peers.clone();
    if let Some(sync) = &config.sync {
        let ips = sync.peers.iter().chain([&sync.listen]).map(|a| a.ip());
        all.extend(ips.filter_map(|ip| match ip {
            std::net::IpAddr::V4(v4) if !v4.is_unspecified() => Some(v4),
            _ => None,
        }));
    }
    all.retain(|a| *a != primary);
    all.sort();
    all.dedup();
    all
}

/// The floating IPs with this gateway's priority for each: fixed, or from the `auto` table.
fn floating_ips(config: &Config, primary: Ipv4Addr) -> Vec<FloatingIp> {
    let (me, members) = config.auto_members(primary);
    let vrids: Vec<u8> = config.floating_ips.iter().map(|f| f.vrid).collect();
    let auto = election::auto::priorities(me, &members, &vrids);
    config
        .floating_ips
        .iter()
        .zip(auto)
        .map(|(f, auto)| FloatingIp {
            address: f.address,
            vrid: f.vrid,
            priority: match f.effective_priority(&config.election) {
                Priority::Fixed(p) => p,
                Priority::Auto => auto,
            },
        })
        .collect()
}
