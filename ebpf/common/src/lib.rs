//! Map keys and values shared by egret's eBPF programs and the agent.
//!
//! Owns the byte layout of every map value: the kernel copies these values byte for byte between
//! the programs and user space, so both sides compile them from this one crate. Invariants:
//! every type is `#[repr(C)]` and has no padding (checked at compile time below), so no
//! uninitialised byte ever reaches the kernel or user space; every counter field is a `u64`
//! that only grows, wrapping on overflow, so no increment can panic inside a program.
//!
//! Built `no_std` for the eBPF target; the `user` feature adds `aya::Pod` for the agent.
#![no_std]

use core::{iter::Sum, mem::size_of, ops::AddAssign};

pub mod gateway;
pub mod node;

/// Name of the TC classifier program in the object (its entry point's function name).
pub const CLASSIFIER_PROGRAM: &str = "egret_classify";

/// Name of the classifier's counters map: a per-CPU array holding one [`ClassifierStats`].
///
/// Kept within 15 bytes, the longest map name the kernel stores in full.
pub const CLASSIFIER_STATS_MAP: &str = "EGRET_CLS_STATS";

/// The one index of [`CLASSIFIER_STATS_MAP`].
pub const CLASSIFIER_STATS_INDEX: u32 = 0;

/// Why the classifier could not read a frame's headers. Each reason has its own counter in
/// [`ClassifierStats`]; a frame that fails to parse is counted and passed on untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParseError {
    /// Shorter than an Ethernet header (14 bytes).
    TruncatedEthernet,
    /// EtherType IPv4, but the IPv4 header (20 bytes, or IHL × 4 with options) is cut short.
    TruncatedIpv4,
    /// EtherType IPv4, but the version field is not 4.
    BadIpVersion,
    /// IHL below 5: a header shorter than the fixed 20 bytes.
    BadIhl,
}

impl ParseError {
    /// Every reason, in the order the agent reports them.
    pub const ALL: [Self; 4] = [
        Self::TruncatedEthernet,
        Self::TruncatedIpv4,
        Self::BadIpVersion,
        Self::BadIhl,
    ];

    /// Stable `snake_case` name, for metric labels and `probe` output.
    pub const fn label(self) -> &'static str {
        match self {
            Self::TruncatedEthernet => "truncated_ethernet",
            Self::TruncatedIpv4 => "truncated_ipv4",
            Self::BadIpVersion => "bad_ip_version",
            Self::BadIhl => "bad_ihl",
        }
    }
}

/// What the TC classifier has seen on one CPU (the map value), or summed over all CPUs (in the
/// agent). Packets are socket buffers as tc sees them: a GSO super-packet counts once, with all
/// its bytes; bytes include the Ethernet header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifierStats {
    /// IPv4 packets whose headers parsed.
    pub ipv4_packets: u64,
    /// Bytes of those packets.
    pub ipv4_bytes: u64,
    /// Frames with another EtherType (ARP, IPv6, ...).
    pub non_ipv4_packets: u64,
    /// Frames counted under [`ParseError::TruncatedEthernet`].
    pub truncated_ethernet: u64,
    /// Frames counted under [`ParseError::TruncatedIpv4`].
    pub truncated_ipv4: u64,
    /// Frames counted under [`ParseError::BadIpVersion`].
    pub bad_ip_version: u64,
    /// Frames counted under [`ParseError::BadIhl`].
    pub bad_ihl: u64,
}

// No padding: the size is exactly the sum of the fields.
const _: () = assert!(size_of::<ClassifierStats>() == 7 * size_of::<u64>());

// SAFETY: `#[repr(C)]`, only `u64` fields, no padding (asserted above): every bit pattern is a
// valid value and every byte is initialised.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ClassifierStats {}

impl ClassifierStats {
    /// Counts one IPv4 packet of `bytes` bytes.
    #[inline(always)]
    pub fn record_ipv4(&mut self, bytes: u32) {
        self.ipv4_packets = self.ipv4_packets.wrapping_add(1);
        self.ipv4_bytes = self.ipv4_bytes.wrapping_add(u64::from(bytes));
    }

    /// Counts one frame that is not IPv4.
    #[inline(always)]
    pub fn record_non_ipv4(&mut self) {
        self.non_ipv4_packets = self.non_ipv4_packets.wrapping_add(1);
    }

    /// Counts one frame that failed to parse for `reason`.
    #[inline(always)]
    pub fn record_error(&mut self, reason: ParseError) {
        let counter = self.error_counter_mut(reason);
        *counter = counter.wrapping_add(1);
    }

    /// Frames that failed to parse for `reason`.
    pub const fn errors(&self, reason: ParseError) -> u64 {
        match reason {
            ParseError::TruncatedEthernet => self.truncated_ethernet,
            ParseError::TruncatedIpv4 => self.truncated_ipv4,
            ParseError::BadIpVersion => self.bad_ip_version,
            ParseError::BadIhl => self.bad_ihl,
        }
    }

    /// Frames that failed to parse, whatever the reason.
    pub fn total_errors(&self) -> u64 {
        ParseError::ALL
            .iter()
            .fold(0, |sum, &reason| sum.wrapping_add(self.errors(reason)))
    }

    #[inline(always)]
    fn error_counter_mut(&mut self, reason: ParseError) -> &mut u64 {
        match reason {
            ParseError::TruncatedEthernet => &mut self.truncated_ethernet,
            ParseError::TruncatedIpv4 => &mut self.truncated_ipv4,
            ParseError::BadIpVersion => &mut self.bad_ip_version,
            ParseError::BadIhl => &mut self.bad_ihl,
        }
    }
}

/// Adds the counters of another CPU (or snapshot), wrapping like the counters themselves.
impl AddAssign for ClassifierStats {
    fn add_assign(&mut self, other: Self) {
        let Self {
            ipv4_packets,
            ipv4_bytes,
            non_ipv4_packets,
            truncated_ethernet,
            truncated_ipv4,
            bad_ip_version,
            bad_ihl,
        } = other;
        self.ipv4_packets = self.ipv4_packets.wrapping_add(ipv4_packets);
        self.ipv4_bytes = self.ipv4_bytes.wrapping_add(ipv4_bytes);
        self.non_ipv4_packets = self.non_ipv4_packets.wrapping_add(non_ipv4_packets);
        self.truncated_ethernet = self.truncated_ethernet.wrapping_add(truncated_ethernet);
        self.truncated_ipv4 = self.truncated_ipv4.wrapping_add(truncated_ipv4);
        self.bad_ip_version = self.bad_ip_version.wrapping_add(bad_ip_version);
        self.bad_ihl = self.bad_ihl.wrapping_add(bad_ihl);
    }
}

/// Sums per-CPU values into one total.
impl Sum for ClassifierStats {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), |mut total, cpu| {
            total += cpu;
            total
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_land_in_their_own_counters() {
        let mut stats = ClassifierStats::default();
        stats.record_ipv4(98);
        stats.record_ipv4(1514);
        stats.record_non_ipv4();
        stats.record_error(ParseError::BadIhl);
        stats.record_error(ParseError::BadIhl);
        stats.record_error(ParseError::TruncatedIpv4);
        assert_eq!(
            stats,
            ClassifierStats {
                ipv4_packets: 2,
                ipv4_bytes: 1612,
                non_ipv4_packets: 1,
                truncated_ipv4: 1,
                bad_ihl: 2,
                ..ClassifierStats::default()
            }
        );
        assert_eq!(stats.errors(ParseError::BadIhl), 2);
        assert_eq!(stats.errors(ParseError::TruncatedEthernet), 0);
        assert_eq!(stats.total_errors(), 3);
    }

    #[test]
    fn every_reason_has_its_own_counter_and_label() {
        for (i, &reason) in ParseError::ALL.iter().enumerate() {
            let mut stats = ClassifierStats::default();
            stats.record_error(reason);
            assert_eq!(stats.errors(reason), 1);
            assert_eq!(
                stats.total_errors(),
                1,
                "{reason:?} touched another counter"
            );
            for &other in &ParseError::ALL[i + 1..] {
                assert_ne!(reason.label(), other.label());
            }
        }
    }

    #[test]
    fn per_cpu_values_sum_field_by_field() {
        let cpu = |n: u64| ClassifierStats {
            ipv4_packets: n,
            ipv4_bytes: 100 * n,
            non_ipv4_packets: n + 1,
            truncated_ethernet: n + 2,
            truncated_ipv4: n + 3,
            bad_ip_version: n + 4,
            bad_ihl: n + 5,
        };
        let total: ClassifierStats = [cpu(1), cpu(2), ClassifierStats::default()]
            .into_iter()
            .sum();
        assert_eq!(
            total,
            ClassifierStats {
                ipv4_packets: 3,
                ipv4_bytes: 300,
                non_ipv4_packets: 5,
                truncated_ethernet: 7,
                truncated_ipv4: 9,
                bad_ip_version: 11,
                bad_ihl: 13,
            }
        );
    }

    #[test]
    fn counters_wrap_instead_of_panicking() {
        let mut stats = ClassifierStats {
            ipv4_packets: u64::MAX,
            ipv4_bytes: u64::MAX,
            bad_ihl: u64::MAX,
            ..ClassifierStats::default()
        };
        stats.record_ipv4(2);
        stats.record_error(ParseError::BadIhl);
        assert_eq!(
            (stats.ipv4_packets, stats.ipv4_bytes, stats.bad_ihl),
            (0, 1, 0)
        );
    }
}
