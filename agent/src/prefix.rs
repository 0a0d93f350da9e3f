//! IPv4 prefixes (`10.0.0.0/8`) as policies, masquerade exceptions and eBPF LPM keys use them.
//!
//! A [`Prefix`] is always canonical: the bits after its length are zero. Parsing refuses a
//! prefix with host bits set instead of silently masking it, because `10.1.2.3/8` is far more
//! often a typo than a wish for `10.0.0.0/8`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A canonical IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: Ipv4Addr,
    len: u8,
}

/// Why a prefix did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No `/`, or not an IPv4 address before it.
    #[error("not an IPv4 prefix (expected ADDRESS/LENGTH, e.g. 10.0.0.0/8)")]
    Syntax,
    /// A length above 32.
    #[error("prefix length {0} is above 32")]
    Length(String),
    /// Bits set after the prefix length.
    #[error("host bits are set; the prefix is {0}")]
    HostBits(Prefix),
}

impl Prefix {
    /// `0.0.0.0/0`.
    pub const ANY: Prefix = Prefix {
        addr: Ipv4Addr::UNSPECIFIED,
        len: 0,
    };

    /// The prefix of `addr` with `len` bits, host bits cleared; `len` is capped at 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Prefix {
        let len = len.min(32);
        Prefix {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len,
        }
    }

    /// A single address, `/32`.
    pub fn host(addr: Ipv4Addr) -> Prefix {
        Prefix { addr, len: 32 }
    }

    /// The first address.
    pub fn addr(self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, 0 to 32. (A length in bits, not a size: there is no "empty" prefix.)
    #[allow(clippy::len_without_is_empty)]
    pub fn len(self) -> u8 {
        self.len
    }

    /// Whether this is `/0`: every address.
    pub fn is_any(self) -> bool {
        self.len == 0
    }

    /// Whether `addr` is inside.
    pub fn contains(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.len) == u32::from(self.addr)
    }

    /// Whether `other` lies entirely inside this prefix (or is equal to it).
    pub fn covers(self, other: Prefix) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }

    /// Whether the two share any address.
    pub fn overlaps(self, other: Prefix) -> bool {
        self.covers(other) || other.covers(self)
    }
}

fn mask(len: u8) -> u32 {
    match len {
        0 => 0,
        n => u32::MAX << (32 - u32::from(n.min(32))),
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(text: &str) -> Result<Prefix, PrefixError> {
        let (addr, len) = text.split_once('/').ok_or(PrefixError::Syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| PrefixError::Syntax)?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PrefixError::Syntax);
        }
        let len: u8 = match len.parse() {
            Ok(n) if n <= 32 => n,
            _ => return Err(PrefixError::Length(len.to_owned())),
        };
        let prefix = Prefix::new(addr, len);
        if prefix.addr != addr {
            return Err(PrefixError::HostBits(prefix));
        }
        Ok(prefix)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Prefix {
        text.parse().expect("valid prefix")
    }

    #[test]
    fn parses_canonical_prefixes() {
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("0.0.0.0/0"), Prefix::ANY);
        assert_eq!(p("192.0.2.7/32"), Prefix::host(Ipv4Addr::new(192, 0, 2, 7)));
    }

    #[test]
    fn refuses_what_is_not_a_canonical_prefix() {
        assert_eq!("10.0.0.0".parse::<Prefix>(), Err(PrefixError::Syntax));
        assert_eq!("10.0.0/8".parse::<Prefix>(), Err(PrefixError::Syntax));
        assert_eq!("10.0.0.0/".parse::<Prefix>(), Err(PrefixError::Syntax));
        assert_eq!("10.0.0.0/+8".parse::<Prefix>(), Err(PrefixError::Syntax));
        assert_eq!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::Length("33".into()))
        );
        assert_eq!(
            "10.1.2.3/8".parse::<Prefix>(),
            Err(PrefixError::HostBits(p("10.0.0.0/8")))
        );
    }

    #[test]
    fn containment() {
        let net = p("10.10.0.0/16");
        assert!(net.contains(Ipv4Addr::new(10, 10, 255, 1)));
        assert!(!net.contains(Ipv4Addr::new(10, 11, 0, 0)));
        assert!(net.covers(p("10.10.1.0/24")));
        assert!(!p("10.10.1.0/24").covers(net));
        assert!(p("10.10.1.0/24").overlaps(net));
        assert!(!p("10.10.1.0/24").overlaps(p("10.10.2.0/24")));
        assert!(Prefix::ANY.covers(net));
        assert!(Prefix::ANY.contains(Ipv4Addr::BROADCAST));
    }
}
