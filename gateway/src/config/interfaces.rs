//! What validation needs to know about the host: its name and its interfaces' IPv4
//! addresses.
//!
//! [`HostFacts`] is a plain snapshot, so validation stays a pure function: the daemon and
//! `check` read the real host once with [`HostFacts::from_system`]; tests build a fake host
//! with [`HostFacts::new`] and [`HostFacts::with_interface`].

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::io;
use std::net::Ipv4Addr;

use smoltcp::wire::Ipv4Cidr;

/// The host's name and its interfaces, each with its IPv4 addresses and prefix lengths
/// (for example `eth1` → `[192.168.1.10/24]`). An interface without IPv4 addresses is
/// present with an empty list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostFacts {
    pub hostname: String,
    pub interfaces: BTreeMap<String, Vec<Ipv4Cidr>>,
    /// Secret files, when the facts are made up (tests); `None` reads the real files.
    files: Option<BTreeMap<std::path::PathBuf, KeyFile>>,
    /// `$KUBECONFIG`, the default of `[kubernetes].kubeconfig`.
    pub kubeconfig_env: Option<String>,
}

/// A key file as the check sees it: its permission bits and its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "KeyFile {{ mode: {:o}, {} bytes }}",
            self.mode,
            self.bytes.len()
        )
    }
}

impl HostFacts {
    /// A host with no interfaces.
    pub fn new(hostname: &str) -> HostFacts {
        HostFacts {
            hostname: hostname.to_owned(),
            interfaces: BTreeMap::new(),
            files: Some(BTreeMap::new()),
            kubeconfig_env: None,
        }
    }

    /// Sets a made-up `$KUBECONFIG`.
    pub fn with_kubeconfig_env(mut self, value: &str) -> HostFacts {
        self.kubeconfig_env = Some(value.to_owned());
        self
    }

    /// Adds (or replaces) a made-up secret file.
    pub fn with_key_file(mut self, path: &str, mode: u32, bytes: &[u8]) -> HostFacts {
        self.files.get_or_insert_with(BTreeMap::new).insert(
            path.into(),
            KeyFile {
                mode,
                bytes: bytes.to_vec(),
            },
        );
        self
    }

    /// Reads secret files from the file system, even for made-up facts.
    pub fn reading_real_files(mut self) -> HostFacts {
        self.files = None;
        self
    }

    /// Reads a secret file (a sync key, a kubeconfig): a regular file's permission bits
    /// and contents.
    pub fn key_file(&self, path: &std::path::Path) -> Result<KeyFile, String> {
        if let Some(files) = &self.files {
            return files
                .get(path)
                .cloned()
                .ok_or_else(|| "cannot read it: No such file or directory".to_owned());
        }
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
        if !meta.is_file() {
            return Err("not a regular file".to_owned());
        }
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        Ok(KeyFile {
            mode: meta.permissions().mode() & 0o7777,
            bytes,
        })
    }

    /// Adds (or replaces) an interface and its addresses.
    pub fn with_interface(mut self, name: &str, addresses: &[Ipv4Cidr]) -> HostFacts {
        self.interfaces.insert(name.to_owned(), addresses.to_vec());
        self
    }

    /// Reads the running host: `gethostname` and `getifaddrs`. Needs no privileges.
    pub fn from_system() -> io::Result<HostFacts> {
        Ok(HostFacts {
            hostname: hostname()?,
            interfaces: interfaces()?,
            files: None,
            kubeconfig_env: std::env::var("KUBECONFIG").ok(),
        })
    }

    /// IPv4 addresses of `name`, or `None` when the host has no such interface.
    pub fn interface(&self, name: &str) -> Option<&[Ipv4Cidr]> {
        self.interfaces.get(name).map(Vec::as_slice)
    }

    /// The interface holding `address` as a local address, if any.
    pub fn holder_of(&self, address: Ipv4Addr) -> Option<&str> {
        self.interfaces
            .iter()
            .find(|(_, cidrs)| cidrs.iter().any(|c| c.address() == address))
            .map(|(name, _)| name.as_str())
    }
}

fn hostname() -> io::Result<String> {
    // HOST_NAME_MAX is 64 on Linux; leave room for other systems and the NUL.
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let name = CStr::from_bytes_until_nul(&buf)
        .map_err(|_| io::Error::other("host name is not NUL-terminated"))?;
    Ok(name.to_string_lossy().into_owned())
}

/// Frees the `getifaddrs` list when dropped, also on an early return.
struct IfAddrs(*mut libc::ifaddrs);

impl Drop for IfAddrs {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful getifaddrs and is freed only here.
        unsafe { libc::freeifaddrs(self.0) };
    }
}

fn interfaces() -> io::Result<BTreeMap<String, Vec<Ipv4Cidr>>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `head`; the guard below frees it.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let list = IfAddrs(head);
    let mut out: BTreeMap<String, Vec<Ipv4Cidr>> = BTreeMap::new();
    let mut cursor = list.0;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the live list owned by `list`.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_name.is_null() {
            continue;
        }
        // SAFETY: getifaddrs gives each entry a NUL-terminated name that lives with the list.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // Every interface appears (Linux lists an AF_PACKET entry for each), so an
        // interface without IPv4 still exists, with no addresses.
        let addresses = out.entry(name).or_default();
        if let Some(cidr) = ipv4_cidr(entry) {
            addresses.push(cidr);
        }
    }
    Ok(out)
}

/// The IPv4 address and prefix of an `ifaddrs` entry, if it is an IPv4 one.
fn ipv4_cidr(entry: &libc::ifaddrs) -> Option<Ipv4Cidr> {
    if entry.ifa_addr.is_null() || entry.ifa_netmask.is_null() {
        return None;
    }
    // SAFETY: ifa_addr points to a sockaddr at least as large as its family requires.
    if i32::from(unsafe { (*entry.ifa_addr).sa_family }) != libc::AF_INET {
        return None;
    }
    // SAFETY: the family is AF_INET, so both are sockaddr_in (the netmask shares the
    // address's family). read_unaligned: the C struct gives no alignment promise to Rust.
    let (addr, mask) = unsafe {
        (
            std::ptr::read_unaligned(entry.ifa_addr.cast::<libc::sockaddr_in>()),
            std::ptr::read_unaligned(entry.ifa_netmask.cast::<libc::sockaddr_in>()),
        )
    };
    let address = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
    let prefix_len = u32::from_be(mask.sin_addr.s_addr).leading_ones();
    // A prefix of a 32-bit mask is at most 32, which is what Ipv4Cidr::new asserts.
    Some(Ipv4Cidr::new(address, prefix_len as u8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_host_has_loopback() {
        let host = HostFacts::from_system().expect("getifaddrs");
        assert!(!host.hostname.is_empty());
        let lo = host.interface("lo").expect("every Linux host has lo");
        assert!(
            lo.contains(&Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 8)),
            "lo addresses: {lo:?}"
        );
        assert_eq!(host.holder_of(Ipv4Addr::LOCALHOST), Some("lo"));
    }

    #[test]
    fn a_fake_host_answers_from_its_table() {
        let host = HostFacts::new("gw1")
            .with_interface("eth1", &[Ipv4Cidr::new(Ipv4Addr::new(192, 168, 1, 10), 24)])
            .with_interface("eth2", &[]);
        assert_eq!(host.interface("eth2"), Some(&[][..]));
        assert_eq!(host.interface("eth9"), None);
        assert_eq!(host.holder_of(Ipv4Addr::new(192, 168, 1, 10)), Some("eth1"));
        assert_eq!(host.holder_of(Ipv4Addr::new(192, 168, 1, 11)), None);
    }
}
