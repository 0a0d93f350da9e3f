//! The flow table: flows in a slab, two hash indexes, a timer wheel and the port allocator.
//!
//! Layout, chosen for memory per flow and for cache misses per packet:
//! - `entries` is a slab of 36-byte [`Entry`]s, preallocated for `max_flows` so the packet
//!   path never reallocates. A flow is named by its slab index (a `u32`).
//! - `inside` and `outside` are open-addressing tables of slab indexes only (4 bytes plus
//!   one control byte per bucket). Keys are not stored twice: a probe compares against the
//!   flow in the slab.
//! - The first [`WHEEL_SLOTS`] entries of the slab are the sentinels of a hashed timer wheel
//!   with one-second slots. Every flow sits in exactly one slot's circular list, which makes
//!   unlinking O(1) without storing the slot.
//! - `pods` counts the live flows of each pod (inner source address) for
//!   [`NatParams::max_flows_per_pod`]: a 4-byte key, a 4-byte count and a control byte per
//!   pod with live flows, nothing per flow. A pod has an entry exactly while it has live
//!   flows. The map has room for `POD_MAP_START` pods from the start and never shrinks, so
//!   with a steady number of pods the packet path does not allocate (and when it must grow
//!   and cannot, the new flow is refused as [`NatError::OutOfMemory`], not a crash). Counts
//!   change in one place each way: `insert` (a created or a newly installed flow) and
//!   `release` (removal and expiry); an install that refreshes a flow keeps its pod, and so
//!   its count.
//!
//! Expiry is lazy: a packet only moves a flow's deadline forward; the flow stays in the slot
//! it was linked into, which is never later than its deadline. When the wheel reaches that
//! slot, flows past their deadline are freed and the others are relinked at their new
//! deadline. The work done is the number of flows that expire plus at most one relink per
//! live flow per timeout period, never a scan of the table. A state change (which may
//! shorten the deadline) relinks at once.
//!
//! Invariants (checked by the property tests):
//! - every live flow is in both indexes, exactly once, and in exactly one wheel slot;
//! - no two live flows share an outside key, so a reply always finds one flow;
//! - the wheel slot a flow is linked into is not later than its deadline, nor behind the
//!   wheel's cursor (a deadline already passed is linked into the next slot to process);
//! - each pod's count is the number of its live flows, and only pods with live flows have one;
//! - [`FlowTable::create`] never takes a pod past its share (installs from a peer may).

use core::hash::BuildHasher;
use core::net::Ipv4Addr;

use foldhash::fast::FixedState;
use hashbrown::HashMap;
use smoltcp::time::{Duration, Instant};

use super::flow::{Flow, FlowState, InsideKey, OutsideKey, Proto};
use super::index::{Index, prefetch};
use super::memory::HugeVec;
use super::{BuildError, InstallError, NatError, NatParams, Timeouts};

/// Slots of the timer wheel, one second each. Timeouts longer than this are handled by
/// relinking when the wheel comes round; the defaults (up to 2 h 4 min) relink once.
pub const WHEEL_SLOTS: u32 = 4096;

/// `prev` of a slab entry that is on the free list.
const FREE: u32 = u32::MAX;

/// The largest `max_flows` the slab can index.
pub const MAX_FLOWS_LIMIT: u32 = u32::MAX - WHEEL_SLOTS - 1;

/// Pods the per-pod counts have room for from the start (about 18 KiB): a gateway serving up
/// to this many pods at once never allocates on the packet path.
const POD_MAP_START: u32 = 1024;

/// Linux's `nf_nat_l4proto_unique_tuple` budget: up to 128 probes from a random offset, then
/// rounds of half as many from new random offsets while a round has at least 16.
const FIRST_ROUND_PROBES: u32 = 128;
const LAST_ROUND_PROBES: u32 = 16;

const DUMMY_FLOW: Flow = Flow {
    node: Ipv4Addr::UNSPECIFIED,
    egress: Ipv4Addr::UNSPECIFIED,
    pod: Ipv4Addr::UNSPECIFIED,
    remote: Ipv4Addr::UNSPECIFIED,
    pod_port: 0,
    remote_port: 0,
    nat_port: 0,
    proto: Proto::Udp,
    state: FlowState::Open,
};

/// A lookup started by [`FlowTable::prefetch_inside`] or [`FlowTable::prefetch_outside`].
#[derive(Debug, Clone, Copy)]
pub struct Prefetch {
    hash: u64,
    outside: bool,
}

/// A flow's handle in the table. Valid until the flow is removed or expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(u32);

#[derive(Debug, Clone, Copy)]
struct Entry {
    flow: Flow,
    /// Whole seconds of the table clock after which the flow is expired.
    deadline: u32,
    /// Circular wheel-slot list links; `prev == FREE` marks a free entry, whose `next`
    /// links the free list.
    prev: u32,
    next: u32,
}

/// What the table has done since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounters {
    pub created: u64,
    pub installed: u64,
    pub expired: u64,
    pub removed: u64,
    pub ports_exhausted: u64,
    pub table_full: u64,
    /// New flows refused because their pod held its share ([`NatError::PodQuota`]).
    pub pod_quota: u64,
    /// Flows the wheel looked at (expired or relinked): the cost of expiry.
    pub wheel_visits: u64,
}

/// Seeded SplitMix64: deterministic in tests and simulations, seeded from the OS in the
/// daemon.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Per-state idle timeouts in whole seconds.
#[derive(Debug, Clone, Copy)]
struct TimeoutSecs {
    tcp: [u32; 8],
    udp: u32,
    icmp: u32,
}

impl TimeoutSecs {
    fn new(t: &Timeouts) -> TimeoutSecs {
        let s = |d: Duration| {
            u32::try_from(d.total_millis().div_ceil(1000))
                .unwrap_or(u32::MAX)
                .max(1)
        };
        let mut tcp = [s(t.tcp_transitory); 8];
        tcp[FlowState::TcpEstablished as usize] = s(t.tcp_established);
        tcp[FlowState::TcpTimeWait as usize] = s(t.tcp_time_wait);
        tcp[FlowState::TcpClosed as usize] = s(t.tcp_closed);
        TimeoutSecs {
            tcp,
            udp: s(t.udp),
            icmp: s(t.icmp),
        }
    }

    #[inline]
    fn get(&self, proto: Proto, state: FlowState) -> u32 {
        match proto {
            Proto::Tcp => self.tcp[state as usize],
            Proto::Udp => self.udp,
            Proto::Icmp => self.icmp,
        }
    }
}

/// Whole seconds of `now`, the resolution of flow deadlines.
#[inline]
fn secs(now: Instant) -> u32 {
    u32::try_from(now.secs().max(0)).unwrap_or(u32::MAX)
}

/// The flow table. See the module documentation for its layout and invariants.
pub struct FlowTable {
    entries: HugeVec<Entry>,
    free: u32,
    live: u32,
    max_flows: u32,
    inside: Index,
    outside: Index,
    /// Live flows per pod, keyed by the pod's address bits; no zero counts.
    pods: HashMap<u32, u32, FixedState>,
    max_per_pod: u32,
    hasher: FixedState,
    rng: Rng,
    port_lo: u16,
    port_span: u32,
    timeouts: TimeoutSecs,
    /// The next wheel second to process; every slot before it has been processed.
    cursor: u32,
    counters: TableCounters,
}

impl core::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FlowTable")
            .field("live", &self.live)
            .field("max_flows", &self.max_flows)
            .field("max_flows_per_pod", &self.max_per_pod)
            .field("pods", &self.pods.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl FlowTable {
    /// Makes an empty table with room for `params.max_flows` flows, allocated up front.
    /// `seed` seeds the hash functions and the port allocator.
    pub fn new(params: &NatParams, seed: u64) -> Result<FlowTable, BuildError> {
        let max_flows = params.max_flows.clamp(1, MAX_FLOWS_LIMIT);
        let (lo, hi) = (*params.port_range.start(), *params.port_range.end());
        if lo > hi {
            return Err(BuildError::BadPortRange);
        }
        let mut rng = Rng(seed);
        let hasher = FixedState::with_seed(rng.next_u64());

        let mut entries = HugeVec::with_capacity(WHEEL_SLOTS as usize + max_flows as usize)?;
        for i in 0..WHEEL_SLOTS {
            entries.push(Entry {
                flow: DUMMY_FLOW,
                deadline: 0,
                prev: i,
                next: i,
            });
        }
        let inside = Index::new(max_flows as usize)?;
        let outside = Index::new(max_flows as usize)?;
        let mut pods = HashMap::with_hasher(hasher.clone());
        pods.try_reserve(POD_MAP_START.min(max_flows) as usize)
            .map_err(|_| BuildError::OutOfMemory)?;

        Ok(FlowTable {
            entries,
            free: FREE,
            live: 0,
            max_flows,
            inside,
            outside,
            pods,
            max_per_pod: params.max_flows_per_pod.max(1),
            hasher,
            rng,
            port_lo: lo,
            port_span: u32::from(hi - lo) + 1,
            timeouts: TimeoutSecs::new(&params.timeouts),
            cursor: 0,
            counters: TableCounters::default(),
        })
    }

    /// Live flows.
    pub fn len(&self) -> usize {
        self.live as usize
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn max_flows(&self) -> u32 {
        self.max_flows
    }

    /// One pod's share: [`NatParams::max_flows_per_pod`].
    pub fn max_flows_per_pod(&self) -> u32 {
        self.max_per_pod
    }

    /// Live flows whose inner source address is `pod`.
    #[inline]
    pub fn pod_flows(&self, pod: Ipv4Addr) -> u32 {
        self.pods.get(&pod.to_bits()).copied().unwrap_or(0)
    }

    /// Pods with live flows.
    pub fn pods(&self) -> usize {
        self.pods.len()
    }

    pub fn counters(&self) -> TableCounters {
        self.counters
    }

    /// Bytes the table holds on the heap: slab and both indexes at their capacity.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * core::mem::size_of::<Entry>()
            + self.inside.heap_bytes()
            + self.outside.heap_bytes()
    }

    /// The flow behind `id`.
    #[inline]
    pub fn flow(&self, id: FlowId) -> &Flow {
        &self.entries[id.0 as usize].flow
    }

    /// Whether the flow's idle timeout has run out at `now` (it is reaped by the next
    /// [`expire`](Self::expire)).
    #[inline]
    pub fn is_expired(&self, id: FlowId, now: Instant) -> bool {
        self.entries[id.0 as usize].deadline <= secs(now)
    }

    /// How long the flow has left at `now`.
    pub fn remaining(&self, id: FlowId, now: Instant) -> Duration {
        let d = self.entries[id.0 as usize]
            .deadline
            .saturating_sub(secs(now));
        Duration::from_secs(u64::from(d))
    }

    /// Finds a flow by its inside key.
    #[inline]
    pub fn lookup_inside(&self, key: &InsideKey) -> Option<FlowId> {
        let entries = &self.entries;
        self.inside
            .find(self.hasher.hash_one(key), |i| {
                entries[i as usize].flow.inside_key() == *key
            })
            .map(FlowId)
    }

    /// Finds a flow by its outside key.
    #[inline]
    pub fn lookup_outside(&self, key: &OutsideKey) -> Option<FlowId> {
        let entries = &self.entries;
        self.outside
            .find(self.hasher.hash_one(key), |i| {
                entries[i as usize].flow.outside_key() == *key
            })
            .map(FlowId)
    }

    /// Starts fetching what a lookup of `key` reads first, its index bucket, and returns
    /// the handle for [`prefetch_flow`](Self::prefetch_flow). Used to overlap
    /// memory latency across a batch of packets.
    #[inline]
    pub fn prefetch_inside(&self, key: &InsideKey) -> Prefetch {
        let hash = self.hasher.hash_one(key);
        self.inside.prefetch(hash);
        Prefetch {
            hash,
            outside: false,
        }
    }

    /// As [`prefetch_inside`](Self::prefetch_inside) for an outside key.
    #[inline]
    pub fn prefetch_outside(&self, key: &OutsideKey) -> Prefetch {
        let hash = self.hasher.hash_one(key);
        self.outside.prefetch(hash);
        Prefetch {
            hash,
            outside: true,
        }
    }

    /// Starts fetching the flow the lookup will most likely find. Call once the index
    /// bucket had time to arrive (after the other packets of a batch were started).
    #[inline]
    pub fn prefetch_flow(&self, p: Prefetch) {
        let index = if p.outside {
            &self.outside
        } else {
            &self.inside
        };
        if let Some(i) = index.likely(p.hash) {
            prefetch(&self.entries[i as usize]);
        }
    }

    /// Creates a flow for `key`: picks a NAT port and starts the flow in `state`.
    ///
    /// Refused, in this order, when the pod holds its share ([`NatError::PodQuota`]: its own
    /// doing, even if the table is full too), when the table is full, and when no NAT port
    /// is free toward the destination.
    pub fn create(
        &mut self,
        now: Instant,
        key: InsideKey,
        state: FlowState,
    ) -> Result<FlowId, NatError> {
        if self.pod_flows(key.pod) >= self.max_per_pod {
            self.counters.pod_quota += 1;
            return Err(NatError::PodQuota);
        }
        if self.live >= self.max_flows {
            self.counters.table_full += 1;
            return Err(NatError::TableFull);
        }
        debug_assert!(
            self.lookup_inside(&key).is_none(),
            "create on an existing inside key"
        );
        // Room for a new pod's count before anything changes, so `insert` cannot fail.
        self.reserve_pod()?;
        let nat_port = self.allocate_port(&key)?;
        let deadline = secs(now).saturating_add(self.timeouts.get(key.proto, state));
        let id = self.insert(Flow::new(key, nat_port, state), deadline);
        self.counters.created += 1;
        Ok(id)
    }

    /// Installs a flow exported by a peer, as it is, with `remaining` time to live.
    ///
    /// A flow with the same inside key is replaced when it holds the same NAT port (the
    /// peer's copy is newer); any other clash with a live flow is refused.
    ///
    /// The flow counts toward its pod's share but is never refused for it: the peer that
    /// owns the floating IP admitted it, and refusing would break a live connection at
    /// failover. A pod taken past its share this way opens no new flow until it is below.
    pub fn install(
        &mut self,
        now: Instant,
        flow: Flow,
        remaining: Duration,
    ) -> Result<FlowId, InstallError> {
        let deadline =
            secs(now).saturating_add(u32::try_from(remaining.secs()).unwrap_or(u32::MAX));
        if let Some(id) = self.lookup_inside(&flow.inside_key()) {
            if self.flow(id).nat_port != flow.nat_port {
                return Err(InstallError::Conflict);
            }
            let e = &mut self.entries[id.0 as usize];
            e.flow.state = flow.state;
            e.deadline = deadline;
            self.unlink(id.0);
            self.link(id.0, deadline);
            return Ok(id);
        }
        if self.lookup_outside(&flow.outside_key()).is_some() {
            return Err(InstallError::Conflict);
        }
        if self.live >= self.max_flows {
            self.counters.table_full += 1;
            return Err(InstallError::TableFull);
        }
        self.reserve_pod().map_err(|_| InstallError::OutOfMemory)?;
        let id = self.insert(flow, deadline);
        self.counters.installed += 1;
        Ok(id)
    }

    /// New idle timeouts, for packets from now on: a flow's deadline moves by the new
    /// timeout at its next packet.
    pub fn set_timeouts(&mut self, timeouts: &super::Timeouts) {
        self.timeouts = TimeoutSecs::new(timeouts);
    }

    /// Records a packet of the flow at `now`, which moves it to `state`, and pushes its
    /// deadline out by that state's idle timeout.
    #[inline]
    pub fn touch(&mut self, id: FlowId, now: Instant, state: FlowState) {
        let e = &mut self.entries[id.0 as usize];
        let deadline = secs(now).saturating_add(self.timeouts.get(e.flow.proto, state));
        e.deadline = deadline;
        if e.flow.state != state {
            e.flow.state = state;
            // The new state's timeout may be shorter than the slot the flow sits in.
            self.unlink(id.0);
            self.link(id.0, deadline);
        }
    }

    /// Removes a flow now (a peer deleted it, or an operator flushed it).
    pub fn remove(&mut self, id: FlowId) -> Flow {
        self.unlink(id.0);
        let flow = self.drop_indexes(id.0);
        self.release(id.0);
        self.counters.removed += 1;
        flow
    }

    /// Frees every flow whose deadline has passed at `now`, calling `on_expired` for each.
    /// Returns how many expired.
    pub fn expire(&mut self, now: Instant, on_expired: impl FnMut(&Flow)) -> usize {
        self.expire_with(now, |_| None, on_expired, |_, _| {})
    }

    /// [`expire`](Self::expire), where `seen` may report a later packet of a flow past its
    /// deadline that the table did not see (one forwarded elsewhere): the flow then lives
    /// on, until that packet's time plus its state's timeout.
    ///
    /// `on_renewed` hears of every flow the wheel found still alive, with its time left:
    /// about once per timeout for a busy flow (a peer's copy of it needs renewing as often).
    pub fn expire_with(
        &mut self,
        now: Instant,
        mut seen: impl FnMut(&Flow) -> Option<Instant>,
        mut on_expired: impl FnMut(&Flow),
        mut on_renewed: impl FnMut(&Flow, Duration),
    ) -> usize {
        let now_s = secs(now);
        if self.cursor > now_s {
            return 0;
        }
        // After a long pause every slot is due once; checking deadlines against `now`
        // makes one pass enough.
        let steps = (now_s - self.cursor).saturating_add(1).min(WHEEL_SLOTS);
        let mut expired = 0;
        for k in 0..steps {
            let slot = self.cursor.wrapping_add(k) % WHEEL_SLOTS;
            expired += self.process_slot(slot, now_s, &mut seen, &mut on_expired, &mut on_renewed);
        }
        self.cursor = now_s.saturating_add(1);
        expired
    }

    /// When [`expire`](Self::expire) next has work to do, if any flow is live.
    pub fn poll_at(&self) -> Option<Instant> {
        (self.live > 0).then(|| Instant::from_secs(i64::from(self.cursor)))
    }

    /// Every live flow with its remaining time at `now`: the export for a peer.
    pub fn export(&self, now: Instant) -> impl Iterator<Item = (Flow, Duration)> + '_ {
        let now_s = secs(now);
        self.entries[WHEEL_SLOTS as usize..]
            .iter()
            .filter(|e| e.prev != FREE)
            .map(move |e| {
                (
                    e.flow,
                    Duration::from_secs(u64::from(e.deadline.saturating_sub(now_s))),
                )
            })
    }

    fn process_slot(
        &mut self,
        slot: u32,
        now_s: u32,
        seen: &mut impl FnMut(&Flow) -> Option<Instant>,
        on_expired: &mut impl FnMut(&Flow),
        on_renewed: &mut impl FnMut(&Flow, Duration),
    ) -> usize {
        let first = self.entries[slot as usize].next;
        if first == slot {
            return 0;
        }
        // Detach the whole ring, then relink survivors: a survivor relinked into this same
        // slot is not visited twice.
        let last = self.entries[slot as usize].prev;
        self.entries[slot as usize].next = slot;
        self.entries[slot as usize].prev = slot;
        self.entries[last as usize].next = slot;
        let mut expired = 0;
        let mut cur = first;
        while cur != slot {
            let e = self.entries[cur as usize];
            self.counters.wheel_visits += 1;
            let deadline = if e.deadline <= now_s {
                seen(&e.flow).map_or(e.deadline, |t| {
                    let later =
                        secs(t).saturating_add(self.timeouts.get(e.flow.proto, e.flow.state));
                    e.deadline.max(later)
                })
            } else {
                e.deadline
            };
            if deadline <= now_s {
                let flow = self.drop_indexes(cur);
                self.release(cur);
                self.counters.expired += 1;
                expired += 1;
                on_expired(&flow);
            } else {
                self.entries[cur as usize].deadline = deadline;
                self.link(cur, deadline);
                on_renewed(&e.flow, Duration::from_secs(u64::from(deadline - now_s)));
            }
            cur = e.next;
        }
        expired
    }

    fn insert(&mut self, flow: Flow, deadline: u32) -> FlowId {
        let entry = Entry {
            flow,
            deadline,
            prev: FREE,
            next: FREE,
        };
        let id = if self.free != FREE {
            let id = self.free;
            self.free = self.entries[id as usize].next;
            self.entries[id as usize] = entry;
            id
        } else {
            let id = self.entries.len() as u32;
            // `live < max_flows` leaves a free slab entry or room to push one.
            let pushed = self.entries.push(entry);
            debug_assert!(pushed);
            id
        };
        self.inside
            .insert(self.hasher.hash_one(flow.inside_key()), id);
        self.outside
            .insert(self.hasher.hash_one(flow.outside_key()), id);
        self.link(id, deadline);
        self.live += 1;
        // `reserve_pod` made room for a new pod: this never allocates.
        *self.pods.entry(flow.pod.to_bits()).or_insert(0) += 1;
        FlowId(id)
    }

    /// Makes sure a new pod's count can be inserted without allocating: fails instead of
    /// aborting when memory runs out. Free unless the map is at its capacity.
    #[inline]
    fn reserve_pod(&mut self) -> Result<(), NatError> {
        self.pods.try_reserve(1).map_err(|_| NatError::OutOfMemory)
    }

    /// Removes the flow from both indexes and returns it.
    fn drop_indexes(&mut self, id: u32) -> Flow {
        let flow = self.entries[id as usize].flow;
        self.inside
            .remove(self.hasher.hash_one(flow.inside_key()), id);
        self.outside
            .remove(self.hasher.hash_one(flow.outside_key()), id);
        flow
    }

    /// Puts a flow's entry on the free list and takes the flow off its pod's count: the one
    /// way out for every flow (removal and expiry).
    fn release(&mut self, id: u32) {
        let e = &mut self.entries[id as usize];
        e.prev = FREE;
        e.next = self.free;
        self.free = id;
        self.live -= 1;
        // Every live flow's pod has a count (checked by `check_invariants`).
        if let hashbrown::hash_map::Entry::Occupied(mut count) =
            self.pods.entry(e.flow.pod.to_bits())
        {
            if *count.get() > 1 {
                *count.get_mut() -= 1;
            } else {
                count.remove();
            }
        }
    }

    fn link(&mut self, id: u32, deadline: u32) {
        // A deadline the wheel has passed already (the clock was read before the last
        // expiry, and the timeout is shorter than that lag) goes into the next slot to be
        // processed: its own slot comes round again only a whole turn later.
        let slot = deadline.max(self.cursor) % WHEEL_SLOTS;
        let tail = self.entries[slot as usize].prev;
        self.entries[id as usize].prev = tail;
        self.entries[id as usize].next = slot;
        self.entries[tail as usize].next = id;
        self.entries[slot as usize].prev = id;
    }

    fn unlink(&mut self, id: u32) {
        let Entry { prev, next, .. } = self.entries[id as usize];
        self.entries[prev as usize].next = next;
        self.entries[next as usize].prev = prev;
    }

    /// Picks the NAT port for a new flow. The port only has to be unique per outside
    /// endpoint (endpoint-dependent mapping), so the same port serves many destinations.
    ///
    /// The pod's own port is kept when it lies in the range and is free, as Linux does.
    /// Otherwise ports are probed from a random offset, in Linux's budget: the whole range
    /// when it has at most 128 ports (so exhaustion is exact), else 128 probes, then rounds
    /// of 64, 32, 16 and 8 from new random offsets. Live mappings are never taken over.
    fn allocate_port(&mut self, key: &InsideKey) -> Result<u16, NatError> {
        let mut probe = OutsideKey {
            egress: key.egress,
            remote: key.remote,
            nat_port: key.pod_port,
            remote_port: key.remote_port,
            proto: key.proto,
        };
        let in_range = u32::from(key.pod_port.wrapping_sub(self.port_lo)) < self.port_span;
        if in_range && self.lookup_outside(&probe).is_none() {
            return Ok(key.pod_port);
        }
        let span = self.port_span;
        let mut attempts = span.min(FIRST_ROUND_PROBES);
        loop {
            let offset = (self.rng.next_u64() % u64::from(span)) as u32;
            for i in 0..attempts {
                let port = self.port_lo + ((offset + i) % span) as u16;
                probe.nat_port = port;
                if self.lookup_outside(&probe).is_none() {
                    return Ok(port);
                }
            }
            if attempts >= span || attempts < LAST_ROUND_PROBES {
                break;
            }
            attempts /= 2;
        }
        self.counters.ports_exhausted += 1;
        Err(NatError::PortsExhausted)
    }

    /// Checks every structural invariant; for tests.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        use std::collections::HashSet;
        let mut in_wheel = HashSet::new();
        for slot in 0..WHEEL_SLOTS {
            let mut cur = self.entries[slot as usize].next;
            let mut prev = slot;
            while cur != slot {
                let e = &self.entries[cur as usize];
                assert_eq!(e.prev, prev, "broken back link");
                assert!(
                    cur >= WHEEL_SLOTS && e.prev != FREE,
                    "free or sentinel entry in a slot"
                );
                assert!(in_wheel.insert(cur), "flow {cur} linked twice");
                prev = cur;
                cur = e.next;
            }
        }
        let live: Vec<u32> = (WHEEL_SLOTS..self.entries.len() as u32)
            .filter(|&i| self.entries[i as usize].prev != FREE)
            .collect();
        assert_eq!(live.len(), self.live as usize);
        assert_eq!(
            in_wheel.len(),
            live.len(),
            "live flows missing from the wheel"
        );
        assert_eq!(self.inside.len(), live.len());
        assert_eq!(self.outside.len(), live.len());
        let mut outside_keys = HashSet::new();
        let mut per_pod = std::collections::HashMap::new();
        for &i in &live {
            let f = self.entries[i as usize].flow;
            assert_eq!(self.lookup_inside(&f.inside_key()), Some(FlowId(i)));
            assert_eq!(self.lookup_outside(&f.outside_key()), Some(FlowId(i)));
            let k = f.outside_key();
            assert!(outside_keys.insert((k.egress, k.remote, k.nat_port, k.remote_port, k.proto)));
            *per_pod.entry(f.pod.to_bits()).or_insert(0u32) += 1;
        }
        let counted: std::collections::HashMap<u32, u32> =
            self.pods.iter().map(|(&pod, &n)| (pod, n)).collect();
        assert_eq!(counted, per_pod, "per-pod counts differ from a recount");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(ports: core::ops::RangeInclusive<u16>, max_flows: u32) -> NatParams {
        NatParams {
            port_range: ports,
            max_flows,
            ..NatParams::default()
        }
    }

    fn key(pod_port: u16, remote_port: u16) -> InsideKey {
        InsideKey {
            node: Ipv4Addr::new(192, 168, 1, 21),
            egress: Ipv4Addr::new(192, 168, 1, 100),
            pod: Ipv4Addr::new(10, 10, 1, 5),
            remote: Ipv4Addr::new(203, 0, 113, 7),
            pod_port,
            remote_port,
            proto: Proto::Udp,
        }
    }

    fn at(s: i64) -> Instant {
        Instant::from_secs(s)
    }

    #[test]
    fn keeps_the_pods_port_when_free_and_in_range() {
        let mut t = FlowTable::new(&params(16384..=65535, 100), 1).unwrap();
        let id = t.create(at(0), key(40000, 53), FlowState::Open).unwrap();
        assert_eq!(t.flow(id).nat_port, 40000);
        // Out of range: a port from the range instead.
        let id = t.create(at(0), key(1000, 53), FlowState::Open).unwrap();
        assert!((16384..=65535).contains(&t.flow(id).nat_port));
        t.check_invariants();
    }

    #[test]
    fn same_port_reused_towards_different_destinations() {
        let mut t = FlowTable::new(&params(20000..=20000, 100), 1).unwrap();
        let mut k = key(20000, 53);
        for i in 0..50u8 {
            k.remote = Ipv4Addr::new(198, 51, 100, i);
            let id = t.create(at(0), k, FlowState::Open).unwrap();
            assert_eq!(t.flow(id).nat_port, 20000);
        }
        assert_eq!(t.len(), 50);
        t.check_invariants();
    }

    #[test]
    fn exhaustion_is_refused_and_counted_never_stolen() {
        let mut t = FlowTable::new(&params(30000..=30009, 100), 7).unwrap();
        let mut ids = Vec::new();
        for p in 0..10 {
            ids.push(
                t.create(at(0), key(1000 + p, 443), FlowState::Open)
                    .unwrap(),
            );
        }
        let before: Vec<Flow> = ids.iter().map(|&i| *t.flow(i)).collect();
        assert_eq!(
            t.create(at(0), key(2000, 443), FlowState::Open),
            Err(NatError::PortsExhausted)
        );
        assert_eq!(t.counters().ports_exhausted, 1);
        let after: Vec<Flow> = ids.iter().map(|&i| *t.flow(i)).collect();
        assert_eq!(before, after, "live mappings untouched");
        // Another destination port is another endpoint: ports are free there.
        assert!(t.create(at(0), key(2000, 80), FlowState::Open).is_ok());
        t.check_invariants();
    }

    #[test]
    fn max_flows_is_enforced() {
        let mut t = FlowTable::new(&params(16384..=65535, 3), 1).unwrap();
        for p in 0..3 {
            t.create(at(0), key(40000 + p, 53), FlowState::Open)
                .unwrap();
        }
        assert_eq!(
            t.create(at(0), key(50000, 53), FlowState::Open),
            Err(NatError::TableFull)
        );
        assert_eq!(t.counters().table_full, 1);
        // Expiry makes room again.
        assert_eq!(t.expire(at(301), |_| {}), 3);
        assert!(t.create(at(301), key(50000, 53), FlowState::Open).is_ok());
    }

    #[test]
    fn expiry_frees_only_expired_flows() {
        let mut t = FlowTable::new(&params(16384..=65535, 100), 1).unwrap();
        let a = t.create(at(0), key(40000, 53), FlowState::Open).unwrap();
        let b = t.create(at(100), key(40001, 53), FlowState::Open).unwrap();
        let mut gone = Vec::new();
        assert_eq!(t.expire(at(299), |f| gone.push(f.pod_port)), 0);
        assert_eq!(t.expire(at(300), |f| gone.push(f.pod_port)), 1);
        assert_eq!(gone, vec![40000]);
        assert!(t.lookup_inside(&key(40000, 53)).is_none());
        assert_eq!(t.lookup_inside(&key(40001, 53)), Some(b));
        let _ = a;
        t.check_invariants();
    }

    #[test]
    fn a_refreshed_flow_lives_on_and_is_relinked_once() {
        let mut t = FlowTable::new(&params(16384..=65535, 100), 1).unwrap();
        let a = t.create(at(0), key(40000, 53), FlowState::Open).unwrap();
        for s in 1..=290 {
            t.touch(a, at(s), FlowState::Open);
        }
        assert_eq!(t.expire(at(300), |_| {}), 0);
        assert_eq!(
            t.counters().wheel_visits,
            1,
            "one relink, not one per packet"
        );
        assert_eq!(t.expire(at(589), |_| {}), 0);
        assert_eq!(t.expire(at(590), |_| {}), 1);
        t.check_invariants();
    }

    #[test]
    fn expiry_work_is_proportional_to_what_expires() {
        let mut t = FlowTable::new(&params(1..=65535, 20_000), 1).unwrap();
        let mut k = key(0, 443);
        k.proto = Proto::Tcp;
        for i in 0..10_000u32 {
            k.pod_port = (i % 60000) as u16 + 1;
            k.remote = Ipv4Addr::from_bits(0xcb00_7100 + (i / 60000));
            let id = t.create(at(0), k, FlowState::TcpSynSent).unwrap();
            t.touch(id, at(0), FlowState::TcpEstablished);
        }
        k.proto = Proto::Udp;
        k.remote = Ipv4Addr::new(198, 51, 100, 1);
        for p in 1..=10 {
            k.pod_port = p;
            t.create(at(0), k, FlowState::Open).unwrap();
        }
        let visits_before = t.counters().wheel_visits;
        // Walk the clock second by second past the UDP timeout.
        for s in 1..=300 {
            t.expire(at(s), |_| {});
        }
        assert_eq!(t.len(), 10_000);
        assert_eq!(
            t.counters().wheel_visits - visits_before,
            10,
            "only the expiring flows were visited"
        );
        t.check_invariants();
    }

    #[test]
    fn state_change_to_a_shorter_timeout_expires_on_time() {
        let mut t = FlowTable::new(&params(16384..=65535, 100), 1).unwrap();
        let mut k = key(40000, 443);
        k.proto = Proto::Tcp;
        let id = t.create(at(0), k, FlowState::TcpSynSent).unwrap();
        t.touch(id, at(1), FlowState::TcpEstablished);
        t.touch(id, at(2), FlowState::TcpClosed);
        assert_eq!(t.expire(at(11), |_| {}), 0);
        assert_eq!(t.expire(at(12), |_| {}), 1);
    }

    #[test]
    fn a_flow_due_before_the_wheel_s_cursor_expires_at_the_next_pass() {
        let mut t = FlowTable::new(&params(16384..=65535, 100), 1).unwrap();
        // The expiry ran at second 400 (a worker's clock is read before it waits for the
        // table, so another can expire in between) ...
        assert_eq!(t.expire(at(400), |_| {}), 0);
        // ... and a flow comes in with a clock read earlier, due before 400 already.
        t.create(at(0), key(40000, 53), FlowState::Open).unwrap();
        t.check_invariants();
        assert_eq!(
            t.expire(at(401), |_| {}),
            1,
            "expired at the next pass, not a turn of the wheel later"
        );
        assert!(t.is_empty());
    }

    #[test]
    fn long_pause_expires_everything_due_in_one_pass() {
        let mut t = FlowTable::new(&params(16384..=65535, 100), 1).unwrap();
        t.create(at(0), key(40000, 53), FlowState::Open).unwrap();
        let mut k = key(40001, 53);
        k.proto = Proto::Tcp;
        let id = t.create(at(0), k, FlowState::TcpSynSent).unwrap();
        t.touch(id, at(0), FlowState::TcpEstablished);
        assert_eq!(t.expire(at(7000), |_| {}), 1);
        assert_eq!(t.len(), 1);
        t.check_invariants();
        assert_eq!(t.expire(at(7440), |_| {}), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn export_then_install_reproduces_the_flows() {
        let mut a = FlowTable::new(&params(16384..=65535, 100), 1).unwrap();
        for p in 0..20 {
            a.create(at(10), key(1000 + p, 53), FlowState::Open)
                .unwrap();
        }
        let mut b = FlowTable::new(&params(16384..=65535, 100), 2).unwrap();
        for (flow, left) in a.export(at(20)) {
            assert_eq!(left, Duration::from_secs(290));
            b.install(at(20), flow, left).unwrap();
        }
        for (flow, _) in a.export(at(20)) {
            let id = b.lookup_outside(&flow.outside_key()).unwrap();
            assert_eq!(*b.flow(id), flow);
        }
        assert_eq!(b.expire(at(309), |_| {}), 0);
        assert_eq!(b.expire(at(310), |_| {}), 20);
    }

    #[test]
    fn install_refuses_a_clashing_mapping() {
        let mut t = FlowTable::new(&params(16384..=65535, 100), 1).unwrap();
        let id = t.create(at(0), key(40000, 53), FlowState::Open).unwrap();
        let mut other = *t.flow(id);
        other.pod_port = 40001; // another pod flow wanting the same outside mapping
        assert_eq!(
            t.install(at(0), other, Duration::from_secs(60)),
            Err(InstallError::Conflict)
        );
        let mut moved = *t.flow(id);
        moved.nat_port = 50000;
        assert_eq!(
            t.install(at(0), moved, Duration::from_secs(60)),
            Err(InstallError::Conflict)
        );
    }

    #[test]
    fn removed_slots_are_reused() {
        let mut t = FlowTable::new(&params(16384..=65535, 2), 1).unwrap();
        let a = t.create(at(0), key(40000, 53), FlowState::Open).unwrap();
        t.create(at(0), key(40001, 53), FlowState::Open).unwrap();
        t.remove(a);
        let c = t.create(at(0), key(40002, 53), FlowState::Open).unwrap();
        assert_eq!(c, a);
        t.check_invariants();
    }

    fn share(max_flows: u32, per_pod: u32) -> NatParams {
        NatParams {
            max_flows_per_pod: per_pod,
            ..params(16384..=65535, max_flows)
        }
    }

    fn of_pod(pod: u8, pod_port: u16) -> InsideKey {
        InsideKey {
            pod: Ipv4Addr::new(10, 10, 1, pod),
            ..key(pod_port, 53)
        }
    }

    #[test]
    fn a_pod_at_its_share_is_refused_exactly_there() {
        let mut t = FlowTable::new(&share(100, 3), 1).unwrap();
        for p in 0..3 {
            t.create(at(0), of_pod(5, 40000 + p), FlowState::Open)
                .unwrap();
        }
        assert_eq!(t.pod_flows(Ipv4Addr::new(10, 10, 1, 5)), 3);
        assert_eq!(
            t.create(at(0), of_pod(5, 40003), FlowState::Open),
            Err(NatError::PodQuota)
        );
        assert_eq!(t.counters().pod_quota, 1);
        assert_eq!(t.counters().created, 3);
        assert_eq!(t.len(), 3, "nothing created, nothing taken over");
        assert!(t.lookup_inside(&of_pod(5, 40003)).is_none());
        // Its live flows carry on.
        let id = t.lookup_inside(&of_pod(5, 40000)).unwrap();
        t.touch(id, at(1), FlowState::Open);
        t.check_invariants();
    }

    #[test]
    fn other_pods_are_unaffected_by_one_at_its_share() {
        let mut t = FlowTable::new(&share(100, 2), 1).unwrap();
        for p in 0..2 {
            t.create(at(0), of_pod(5, 40000 + p), FlowState::Open)
                .unwrap();
        }
        for p in 0..50 {
            let _ = t.create(at(0), of_pod(5, 41000 + p), FlowState::Open);
        }
        assert_eq!(t.counters().pod_quota, 50);
        for pod in 6..=9 {
            for p in 0..2 {
                t.create(at(0), of_pod(pod, 40000 + p), FlowState::Open)
                    .unwrap();
            }
        }
        assert_eq!(t.len(), 10);
        assert_eq!(t.pods(), 5);
        // The same port of the same pod toward another destination is another flow.
        let mut k = of_pod(6, 40000);
        k.remote = Ipv4Addr::new(198, 51, 100, 99);
        assert_eq!(t.create(at(0), k, FlowState::Open), Err(NatError::PodQuota));
        t.check_invariants();
    }

    #[test]
    fn a_share_is_freed_by_removal_and_by_expiry() {
        let pod = Ipv4Addr::new(10, 10, 1, 5);
        let mut t = FlowTable::new(&share(100, 2), 1).unwrap();
        let a = t.create(at(0), of_pod(5, 40000), FlowState::Open).unwrap();
        let mut tcp = of_pod(5, 40001);
        tcp.proto = Proto::Tcp;
        let b = t.create(at(0), tcp, FlowState::TcpSynSent).unwrap();
        assert_eq!(
            t.create(at(0), of_pod(5, 40002), FlowState::Open),
            Err(NatError::PodQuota)
        );
        t.remove(a);
        assert_eq!(t.pod_flows(pod), 1);
        let c = t.create(at(0), of_pod(5, 40002), FlowState::Open).unwrap();
        // A reset closes the TCP flow soon; the UDP one idles out after 5 minutes.
        t.touch(b, at(1), FlowState::TcpClosed);
        assert_eq!(t.expire(at(11), |_| {}), 1);
        assert_eq!(t.pod_flows(pod), 1);
        t.create(at(11), of_pod(5, 40003), FlowState::Open).unwrap();
        t.check_invariants();
        let _ = c;
        assert_eq!(t.expire(at(400), |_| {}), 2);
        assert_eq!(t.pod_flows(pod), 0);
        assert_eq!(t.pods(), 0, "no entry is kept for a pod without flows");
        t.check_invariants();
    }

    #[test]
    fn a_peers_flows_count_but_are_never_refused() {
        let pod = Ipv4Addr::new(10, 10, 1, 5);
        let mut master = FlowTable::new(&share(100, 10), 1).unwrap();
        for p in 0..5 {
            master
                .create(at(0), of_pod(5, 40000 + p), FlowState::Open)
                .unwrap();
        }
        // The backup's share is smaller: every flow of the master is installed anyway.
        let mut backup = FlowTable::new(&share(100, 3), 2).unwrap();
        for (flow, left) in master.export(at(0)) {
            backup.install(at(0), flow, left).unwrap();
        }
        assert_eq!(backup.pod_flows(pod), 5);
        assert_eq!(backup.counters().pod_quota, 0);
        // A refresh of a flow it holds replaces it in place: still five.
        for (flow, left) in master.export(at(10)) {
            backup.install(at(10), flow, left).unwrap();
        }
        assert_eq!((backup.pod_flows(pod), backup.len()), (5, 5));
        // Past its share, the pod opens no new flow here until it is below again.
        assert_eq!(
            backup.create(at(10), of_pod(5, 40100), FlowState::Open),
            Err(NatError::PodQuota)
        );
        for p in 0..3 {
            let id = backup.lookup_inside(&of_pod(5, 40000 + p)).unwrap();
            backup.remove(id);
        }
        assert_eq!(backup.pod_flows(pod), 2);
        backup
            .create(at(10), of_pod(5, 40100), FlowState::Open)
            .unwrap();
        backup.check_invariants();
    }

    #[test]
    fn a_pod_at_its_share_hears_pod_quota_even_when_the_table_is_full() {
        let mut t = FlowTable::new(&share(4, 2), 1).unwrap();
        for (pod, p) in [(5, 0), (5, 1), (6, 0), (6, 1)] {
            t.create(at(0), of_pod(pod, 40000 + p), FlowState::Open)
                .unwrap();
        }
        assert_eq!(
            t.create(at(0), of_pod(5, 40002), FlowState::Open),
            Err(NatError::PodQuota)
        );
        assert_eq!(
            t.create(at(0), of_pod(7, 40000), FlowState::Open),
            Err(NatError::TableFull)
        );
        assert_eq!((t.counters().pod_quota, t.counters().table_full), (1, 1));
    }

    #[test]
    fn a_zero_share_is_taken_as_one() {
        let mut t = FlowTable::new(&share(100, 0), 1).unwrap();
        assert_eq!(t.max_flows_per_pod(), 1);
        t.create(at(0), of_pod(5, 40000), FlowState::Open).unwrap();
        assert_eq!(
            t.create(at(0), of_pod(5, 40001), FlowState::Open),
            Err(NatError::PodQuota)
        );
    }

    #[test]
    fn entry_is_36_bytes() {
        assert_eq!(core::mem::size_of::<Entry>(), 36);
    }
}
