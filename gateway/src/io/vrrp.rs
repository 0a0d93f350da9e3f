//! The election's socket: a raw IPv4 socket for protocol 112, on which the workers
//! ([`super::run`]) read adverts for the core and send the ones it writes.
//!
//! Adverts leave with the header we write (`IP_HDRINCL`): the interface's primary address
//! as source, TTL 255 and DSCP CS6, to 224.0.0.18 (joined on the interface, never looped
//! back to ourselves) or to each of `[election].peers`. The kernel delivers adverts to this
//! socket with their IPv4 header, so the core checks the TTL itself, and, with
//! `[election].peers`, refuses adverts from any other source (the core got the peers).

use std::io;
use std::mem::size_of;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::packet::setsockopt;
use crate::wire::vrrp::{MULTICAST_GROUP, PROTOCOL};

/// A raw socket that sends and receives VRRP adverts on one interface.
pub struct VrrpSocket {
    fd: OwnedFd,
}

impl VrrpSocket {
    /// Opens the socket on `ifname`, joining 224.0.0.18 there when `multicast`.
    pub fn open(ifname: &str, ifindex: u32, multicast: bool) -> io::Result<VrrpSocket> {
        // SAFETY: plain socket(2).
        let raw = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                i32::from(PROTOCOL),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, libc::IPPROTO_IP, libc::IP_HDRINCL, &1i32)?;
        let name = ifname.as_bytes();
        // SAFETY: `name` is valid for its length.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BINDTODEVICE,
                name.as_ptr().cast(),
                name.len() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let mreqn = libc::ip_mreqn {
            imr_multiaddr: in_addr(MULTICAST_GROUP),
            imr_address: in_addr(Ipv4Addr::UNSPECIFIED),
            imr_ifindex: ifindex as i32,
        };
        setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn)?;
        setsockopt(&fd, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &0i32)?;
        if multicast {
            setsockopt(&fd, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreqn)?;
        }
        Ok(VrrpSocket { fd })
    }

    /// Sends one whole IPv4 packet (header included) to `destination`.
    pub fn send(&self, destination: Ipv4Addr, packet: &[u8]) -> io::Result<()> {
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: in_addr(destination),
            sin_zero: [0; 8],
        };
        // SAFETY: `packet` and `to` are valid for the lengths given.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                std::ptr::from_ref(&to).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one IPv4 packet, if one is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(r as usize))
    }
}

fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from_ne_bytes(a.octets()),
    }
}

impl AsRawFd for VrrpSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}
