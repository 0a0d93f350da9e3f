//! The flow sync's socket: one UDP socket on `[sync].listen`, on which the workers
//! ([`super::run`]) read the peers' datagrams for the core and send the ones it writes.

use std::io;
use std::net::{SocketAddr, UdpSocket};

/// Binds the sync socket.
pub fn bind(listen: SocketAddr) -> io::Result<UdpSocket> {
    let socket = UdpSocket::bind(listen)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}
