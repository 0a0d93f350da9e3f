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
    pub fn read(name: &str) -> io::Result<Interface> {
        let sys = |file: &str| fs::read_to_string(format!("/sys/class/net/{name}/{file}"));
        let mac = sys("address")?;
        let mac = EthernetAddress::from_bytes(&parse_mac(mac.trim()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{name}: no Ethernet address"),
            )
        })?);
        let mtu = sys("mtu")?
            .trim()
            .parse::<u16>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{name}: MTU: {e}")))?;
        Ok(Interface {
            name: name.to_string(),
            index: super::packet::ifindex(name)?,
            mac,
            mtu,
        })
    }
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
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
    fn parses_sysfs_macs() {
        assert_eq!(parse_mac("02:00:0a:0B:00:ff"), Some([2, 0, 10, 11, 0, 255]));
        assert_eq!(parse_mac("02:00:0a:0b:00"), None);
        assert_eq!(parse_mac("02:00:0a:0b:00:ff:01"), None);
    }
}
