//! Hand-made frames onto the wire, through a packet socket. Crate-private: it sends in the
//! calling thread's namespace, so only [`crate::NetNs::send_frames`] calls it, from a thread
//! inside a lab namespace.

use std::{
    ffi::CString,
    io, mem,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, Result, ensure};

/// Sends each frame, unchanged, out of `interface` of the current network namespace.
pub(crate) fn send_frames(interface: &str, frames: &[&[u8]]) -> Result<()> {
    let c_name = CString::new(interface).context("interface name contains NUL")?;
    // SAFETY: `c_name` is a valid NUL-terminated string for the whole call.
    let ifindex = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    ensure!(ifindex != 0, "no interface {interface} in this namespace");

    // Protocol 0: the socket sends but receives nothing.
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    ensure!(fd >= 0, "packet socket: {}", io::Error::last_os_error());
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };

    // SAFETY: sockaddr_ll is plain data for which all zeroes is a valid value.
    let mut address: libc::sockaddr_ll = unsafe { mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = i32::try_from(ifindex).context("interface index out of range")?;
    let address_len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;

    for frame in frames {
        // SAFETY: the buffer and address are valid for their given lengths during the call.
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const address).cast(),
                address_len,
            )
        };
        ensure!(
            sent >= 0,
            "sending a {}-byte frame: {}",
            frame.len(),
            io::Error::last_os_error()
        );
        ensure!(
            sent.unsigned_abs() == frame.len(),
            "sent {sent} of {} bytes",
            frame.len()
        );
    }
    Ok(())
}
