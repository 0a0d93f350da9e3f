//! Which floating IPs this gateway owns, as the election decides: answering for an
//! address, announcing it by gratuitous ARP (a burst when owned, again every refresh, and at
//! once when another gateway believed it was master), going silent when released, and the
//! floating IPs a reload adds or removes.

use super::*;

impl Datapath {
    /// The floating IP `address`, whether owned or not.
    pub(super) fn floating(&self, address: Ipv4Addr) -> Option<usize> {
        self.owned.iter().position(|o| o.ip.address == address)
    }

    /// The floating IP `address`, if this gateway owns it now.
    pub(super) fn owner(&self, address: Ipv4Addr) -> Option<usize> {
        self.floating(address).filter(|&i| self.owned[i].owning)
    }

    /// Whether this gateway owns `address` now.
    pub fn owns(&self, address: Ipv4Addr) -> bool {
        self.owner(address).is_some()
    }

    /// Takes a reloaded setup at `now`. What may change without a restart: the other
    /// gateways, gratuitous ARP, allowed sources, next hop, NAT timeouts, and the floating
    /// IPs: a new one starts unowned; a removed one goes with its flows and their ports
    /// (release it first); a kept one keeps its flows and whether it is owned. The caller
    /// checked that nothing else changed.
    pub fn reconfigure(&mut self, now: Instant, setup: &Setup) {
        let removed: Vec<Ipv4Addr> = self
            .owned
            .iter()
            .map(|o| o.ip.address)
            .filter(|a| setup.floating_ips.iter().all(|f| f.address != *a))
            .collect();
        for address in removed {
            self.release(address);
            let gone: Vec<FlowId> = self
                .nat
                .table()
                .export(now)
                .filter(|(f, _)| f.egress == address)
                .filter_map(|(f, _)| self.nat.table().lookup_inside(&f.inside_key()))
                .collect();
            for id in gone {
                self.remove_flow(id);
            }
            self.owned.retain(|o| o.ip.address != address);
        }
        for ip in &setup.floating_ips {
            match self.owned.iter_mut().find(|o| o.ip.address == ip.address) {
                Some(o) => o.ip = *ip,
                None => self.owned.push(Owned::new(*ip, now)),
            }
        }
        if setup.next_hop != self.setup.next_hop {
            self.next_hop = NextHop::new(setup.next_hop, now);
        }
        self.nat.table_mut().set_timeouts(&setup.nat.timeouts);
        self.setup = setup.clone();
    }

    /// Starts owning the floating IP `address` at `now`: answer ARP for it, forward its
    /// traffic, announce it by gratuitous ARP at once. Returns false when `address` is not a
    /// floating IP of this gateway.
    pub fn own(&mut self, now: Instant, address: Ipv4Addr) -> bool {
        let Some(i) = self.floating(address) else {
            return false;
        };
        let o = &mut self.owned[i];
        if !o.owning {
            o.owning = true;
            o.garps_left = self.setup.announce.count;
            o.garp_at = now;
            o.refresh_at = self.setup.announce.refresh.map(|r| now + r);
        }
        true
    }

    /// Announces `address` again, if owned: a new burst of gratuitous ARPs, the first at
    /// once. For a master that heard another gateway believe it was master (which may have
    /// moved the LAN's ARP entries). Returns whether it is owned.
    pub fn reannounce(&mut self, now: Instant, address: Ipv4Addr) -> bool {
        let Some(i) = self.floating(address) else {
            return false;
        };
        let o = &mut self.owned[i];
        if o.owning {
            o.garps_left = self.setup.announce.count;
            o.garp_at = now;
        }
        o.owning
    }

    /// Stops owning `address` at once: no more ARP answers, gratuitous ARP or forwarding;
    /// the fast path gives its flows back. The flows themselves stay, ready for when the
    /// address comes back.
    pub fn release(&mut self, address: Ipv4Addr) {
        let Some(i) = self.floating(address) else {
            return;
        };
        let o = &mut self.owned[i];
        o.owning = false;
        o.garps_left = 0;
        o.refresh_at = None;
        let table = self.nat.table();
        let changes = &mut self.fast_changes;
        self.offloaded.retain(|key| {
            if key.egress != address {
                return true;
            }
            if let Some(id) = table.lookup_inside(key) {
                changes.push(fast::remove(table.flow(id)));
            }
            false
        });
    }

    /// Queues the gratuitous ARPs due at `now` (part of [`poll`](Self::poll)); the
    /// election's shell calls it right after a takeover, so the first one leaves at once.
    pub fn announce(&mut self, now: Instant) {
        let announce = self.setup.announce;
        for i in 0..self.owned.len() {
            let o = &mut self.owned[i];
            if let Some(at) = o.refresh_at.filter(|at| now >= *at) {
                o.garps_left = announce.count;
                o.garp_at = at;
                o.refresh_at = announce.refresh.map(|r| at + r);
            }
            if o.garps_left == 0 || now < o.garp_at {
                continue;
            }
            o.garps_left -= 1;
            o.garp_at = now + announce.interval;
            let address = o.ip.address;
            let mac = self.setup.mac;
            // A gratuitous ARP request (RFC 5227 announcement): sender and target are the
            // floating IP, so every host and switch on the LAN updates its tables.
            self.generate_arp(
                EthernetAddress::BROADCAST,
                ArpOperation::Request,
                (mac, address),
                (EthernetAddress([0; 6]), address),
            );
            self.counters.gratuitous_arps_sent += 1;
        }
    }
}
