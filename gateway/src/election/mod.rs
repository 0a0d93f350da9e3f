//! The election of each floating IP's owner: VRRPv3 (RFC 5798, IPv4), one virtual router
//! per `[[floating_ip]]` (its `vrid`), as a pure core.
//!
//! [`Election`] holds the instances of one gateway. The shell hands it every VRRP packet
//! received (whole IPv4 packets) and the time; it checks them ([`crate::wire::vrrp`]),
//! counts the refused ones by reason, dispatches the rest by VRID, runs the timers, and
//! returns what to do as [`Action`]s tagged with the floating IP they concern: send an
//! advert, own the address, release it, announce it again. It never touches a socket or a
//! clock, so a simulation of several gateways on a virtual clock drives the very same code.

pub mod auto;
pub mod instance;

#[cfg(test)]
mod sim;

use core::net::Ipv4Addr;

use smoltcp::time::Instant;

pub use instance::{Action, Counters, Instance, Params, State};

use crate::wire::vrrp::{Advert, AdvertError};

/// The instances of one gateway, and what it refused.
#[derive(Debug, Clone)]
pub struct Election {
    instances: Vec<Instance>,
    rejected: [u64; AdvertError::ALL.len()],
    /// Well-formed adverts for a VRID this gateway does not run.
    unknown_vrid: u64,
    scratch: Vec<Action>,
}

impl Election {
    /// One instance per floating IP; VRIDs are unique (the configuration checks it).
    pub fn new(params: Vec<Params>) -> Election {
        Election {
            instances: params.into_iter().map(Instance::new).collect(),
            rejected: [0; AdvertError::ALL.len()],
            unknown_vrid: 0,
            scratch: Vec::new(),
        }
    }

    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// Adverts refused, by reason.
    pub fn rejected(&self) -> impl Iterator<Item = (AdvertError, u64)> + '_ {
        AdvertError::ALL
            .iter()
            .enumerate()
            .map(|(i, e)| (*e, self.rejected[i]))
    }

    pub fn unknown_vrid(&self) -> u64 {
        self.unknown_vrid
    }

    fn refuse(&mut self, e: AdvertError) {
        if let Some(k) = AdvertError::ALL.iter().position(|x| *x == e) {
            self.rejected[k] += 1;
        }
    }

    /// Whether this gateway owns `address` now.
    pub fn owns(&self, address: Ipv4Addr) -> bool {
        self.instances
            .iter()
            .any(|i| i.params().address == address && i.state() == State::Master)
    }

    /// Starts every instance (as backup).
    pub fn start(&mut self, now: Instant) {
        for i in &mut self.instances {
            i.start(now);
        }
    }

    /// Leaves every election: masters hand over with a priority-0 advert.
    pub fn shutdown(&mut self, now: Instant, out: &mut Vec<(Ipv4Addr, Action)>) {
        for k in 0..self.instances.len() {
            self.instances[k].shutdown(now, &mut self.scratch);
            self.flush(k, out);
        }
    }

    /// A received IPv4 packet of protocol 112.
    pub fn handle_packet(
        &mut self,
        now: Instant,
        packet: &[u8],
        out: &mut Vec<(Ipv4Addr, Action)>,
    ) {
        match Advert::parse_ipv4(packet) {
            Ok(r) => self.handle_advert(now, r.source, &r.advert, out),
            Err(e) => self.refuse(e),
        }
    }

    /// A checked advert from `source`.
    pub fn handle_advert(
        &mut self,
        now: Instant,
        source: Ipv4Addr,
        advert: &Advert,
        out: &mut Vec<(Ipv4Addr, Action)>,
    ) {
        let Some(k) = self
            .instances
            .iter()
            .position(|i| i.params().vrid == advert.vrid)
        else {
            self.unknown_vrid += 1;
            return;
        };
        let refused = self.instances[k].handle_advert(now, source, advert, &mut self.scratch);
        self.flush(k, out);
        if let Err(e) = refused {
            self.refuse(e);
        }
    }

    /// Runs the timers that are due.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<(Ipv4Addr, Action)>) {
        for k in 0..self.instances.len() {
            self.instances[k].poll(now, &mut self.scratch);
            self.flush(k, out);
        }
    }

    /// The next time [`poll`](Self::poll) has something to do.
    pub fn poll_at(&self) -> Option<Instant> {
        self.instances.iter().filter_map(Instance::poll_at).min()
    }

    fn flush(&mut self, k: usize, out: &mut Vec<(Ipv4Addr, Action)>) {
        let address = self.instances[k].params().address;
        out.extend(self.scratch.drain(..).map(|a| (address, a)));
    }
}
