//! Facts about the gateway host the data path needs: the interface's MAC, MTU and index,
//! and the kernel's default route through it.

use std::fs;
use std::io;
use std::net::Ipv4Addr;

use smoltcp::wire::EthernetAddress;

/// What the data path needs to know about `[gateway].interface`.
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: EthernetAddress,
    pub mtu: u16,
}

impl Interface {
    /// Reads `name` from the kernel of this process's network namespace (ioctls on a socket,
    /// not `/sys/class/net`: in a container the mounted sysfs may show another namespace's
    /// interfaces under the same name).
    pub fn read(name: &str) -> io::Result<Interface> {
        let socket = Socket::datagram()?;
        let mut request = ifreq(name)?;
        socket.ioctl(libc::SIOCGIFHWADDR, &mut request)?;
        // SAFETY: SIOCGIFHWADDR filled the hardware address member of the union.
        let hwaddr = unsafe { request.ifr_ifru.ifru_hwaddr };
        if hwaddr.sa_family != libc::ARPHRD_ETHER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: no Ethernet address"),
            ));
        }
        let mut mac = [0u8; 6];
        for (byte, data) in mac.iter_mut().zip(hwaddr.sa_data) {
            *byte = data as u8;
        }
        let mut request = ifreq(name)?;
        socket.ioctl(libc::SIOCGIFMTU, &mut request)?;
        // SAFETY: SIOCGIFMTU filled the MTU member of the union.
        let mtu = unsafe { request.ifr_ifru.ifru_mtu };
        let mtu = u16::try_from(mtu).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: MTU {mtu}: {e}"),
            )
        })?;
        Ok(Interface {
            name: name.to_string(),
            index: super::packet::ifindex(name)?,
            mac: EthernetAddress::from_bytes(&mac),
            mtu,
        })
    }
}

/// An `ifreq` naming `name`.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= request.ifr_name.len() || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    Ok(request)
}

/// A socket to ask the kernel about interfaces with, closed on drop.
struct Socket(libc::c_int);

impl Socket {
    fn datagram() -> io::Result<Socket> {
        // SAFETY: plain syscall; the descriptor is owned by the returned value.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket(fd))
    }

    fn ioctl(&self, request: libc::c_ulong, ifreq: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: `ifreq` is a valid, writable ifreq for the duration of the call.
        if unsafe { libc::ioctl(self.0, request, ifreq as *mut libc::ifreq) } < 0 {
            let error = io::Error::last_os_error();
            let name: String = ifreq
                .ifr_name
                .iter()
                .take_while(|c| **c != 0)
                .map(|c| *c as u8 as char)
                .collect();
            return Err(io::Error::new(error.kind(), format!("{name}: {error}")));
        }
        Ok(())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// The gateway of the kernel's default route through `interface`, from the routing table
/// of this process's network namespace (`/proc/self/net/route`: the service's `ProcSubset=pid`
/// hides the `/proc/net` link).
pub fn default_gateway(interface: &str) -> io::Result<Option<Ipv4Addr>> {
    Ok(default_gateway_in(
        &fs::read_to_string("/proc/self/net/route")?,
        interface,
    ))
}

/// Parses the text of `/proc/net/route`: fields are hexadecimal in host byte order.
fn default_gateway_in(table: &str, interface: &str) -> Option<Ipv4Addr> {
    const RTF_GATEWAY: u32 = 0x2;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] != interface {
            return None;
        }
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (dst, gw, flags, mask) = (hex(f[1])?, hex(f[2])?, hex(f[3])?, hex(f[7])?);
        // The kernel prints the address's bytes as a host-order (little-endian) word.
        (dst == 0 && mask == 0 && flags & RTF_GATEWAY != 0)
            .then(|| Ipv4Addr::from(gw.to_le_bytes()))
    })
}

/// The sync's boot id: 64 random bits from the kernel, never 0. With the frame counter it
/// is the AEAD nonce, so two boots must never draw the same one: the clock is not enough.
pub fn epoch() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    let random = if n == 8 {
        u64::from_ne_bytes(bytes)
    } else {
        // getrandom(2) only fails on kernels older than 3.17: fall back to the seed.
        seed()
    };
    random.max(1)
}

/// A seed for the NAT's port allocator, different at every start.
pub fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    t ^ u64::from(std::process::id()).rotate_left(32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t00000000\t0102A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0032A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t0132A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
";

    #[test]
    fn finds_the_default_route_of_the_interface() {
        assert_eq!(
            default_gateway_in(ROUTES, "eth0"),
            Some(Ipv4Addr::new(192, 168, 50, 1))
        );
        assert_eq!(
            default_gateway_in(ROUTES, "eth1"),
            Some(Ipv4Addr::new(192, 168, 2, 1))
        );
        assert_eq!(default_gateway_in(ROUTES, "eth2"), None);
        assert_eq!(default_gateway_in("garbage\nline", "eth0"), None);
    }

    #[test]
    fn interfaces_are_read_from_the_kernel_with_clear_errors() {
        // Loopback has an address of its own kind, not an Ethernet one.
        let error = Interface::read("lo").expect_err("lo is not Ethernet");
        assert_eq!(error.to_string(), "lo: no Ethernet address");
        let error = Interface::read("egret-nonesuch").expect_err("no such interface");
        assert!(error.to_string().starts_with("egret-nonesuch: "), "{error}");
        for bad in ["", "a-name-far-too-long-for-linux", "nul\0"] {
            let error = Interface::read(bad).expect_err("not a name");
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
