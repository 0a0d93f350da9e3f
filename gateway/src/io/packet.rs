//! Packet sockets on the gateway interface: batched reception (`recvmmsg`) and
//! transmission (`sendmmsg`), both with virtio-net headers so that super-packets and partial
//! checksums pass through instead of being cut up or computed by the kernel.
//!
//! The receiving sockets are bound to one protocol each, IPv4 or ARP, never to all
//! (`ETH_P_ALL`). The kernel serves a socket bound to a protocol after the interface's TC
//! ingress, where the fast path takes its frames away, so user space reads only what the
//! fast path left; an all-protocol tap would see every frame before TC, and every frame the
//! host sends as well.
//!
//! Each received frame lands in a slot behind `RESERVE` bytes of headroom, where the return
//! path writes its VXLAN headers: encapsulation copies nothing. The data path rewrites the
//! frames in place, and the slots are reused only after everything pointing into them has
//! been sent.
//!
//! Why not a `TPACKET_V3` ring: it hands frames over a block at a time, when the block is
//! full or its timer runs out, which added about 2 ms to every round trip through the
//! gateway at light load (0.2 ms with `recvmmsg`) for no gain in throughput: the kernel
//! copies each frame once either way.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

use crate::datapath::Offload;

use super::vnet;

const SOL_PACKET: libc::c_int = 263;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
/// Fanout by flow hash: every packet of a flow reaches the same socket, in order.
const PACKET_FANOUT_HASH: u32 = 0;

/// What a receiving socket takes from the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Ipv4,
    Arp,
}

impl Protocol {
    fn ethertype(self) -> u16 {
        match self {
            Protocol::Ipv4 => 0x0800,
            Protocol::Arp => 0x0806,
        }
    }
}

/// Headroom in front of every received frame (the VXLAN headers need 50).
const RESERVE: usize = 64;

pub(crate) fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the length given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn packet_socket(protocol: u16) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a valid sockaddr_ll of the length given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            ptr::from_ref(&sll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The index of a network interface.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i)
}

/// One received frame.
pub struct RxFrame {
    /// The frame with its headroom: `headroom..` is the Ethernet frame as far as captured.
    pub buf: *mut u8,
    pub len: usize,
    pub headroom: usize,
    /// The frame's length on the wire, which is more than captured when the ring cut it.
    pub wire_len: usize,
    pub vnet: [u8; vnet::LEN],
}

/// Most frames one `recvmmsg` call takes.
const RX_BATCH: usize = 64;
/// Room for one received frame: headroom, then the largest super-packet with its Ethernet
/// header.
const RX_SLOT: usize = RESERVE + 65536 + 64;
/// The socket's receive buffer: what queues while the worker is busy.
const RX_BUFFER: i32 = 32 << 20;

/// A packet socket read with `recvmmsg`, into slots of its own.
pub struct RxSocket {
    fd: OwnedFd,
    slots: Vec<u8>,
    vnet: Vec<[u8; vnet::LEN]>,
    iov: Vec<[libc::iovec; 2]>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in `iov` and `msgs` point into the socket's own buffers.
unsafe impl Send for RxSocket {}

impl RxSocket {
    /// Opens a socket receiving the frames of `protocol` that arrive on `ifindex` and that
    /// TC ingress lets through (a socket bound to one protocol never sees what the host
    /// sends). With a `fanout` group, the sockets of the group share the frames by flow hash.
    pub fn open(ifindex: u32, protocol: Protocol, fanout: Option<u16>) -> io::Result<RxSocket> {
        let ethertype = protocol.ethertype();
        let fd = packet_socket(ethertype)?;
        setsockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, &1i32)?;
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RX_BUFFER).is_err() {
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RX_BUFFER)?;
        }
        bind(&fd, ifindex, ethertype)?;
        if let Some(group) = fanout {
            let arg = u32::from(group) | (PACKET_FANOUT_HASH << 16);
            setsockopt(&fd, SOL_PACKET, PACKET_FANOUT, &arg)?;
        }
        let mut rx = RxSocket {
            fd,
            slots: vec![0; RX_BATCH * RX_SLOT],
            vnet: vec![[0; vnet::LEN]; RX_BATCH],
            iov: Vec::with_capacity(RX_BATCH),
            msgs: Vec::with_capacity(RX_BATCH),
        };
        for i in 0..RX_BATCH {
            rx.iov.push([
                libc::iovec {
                    iov_base: rx.vnet[i].as_mut_ptr().cast(),
                    iov_len: vnet::LEN,
                },
                libc::iovec {
                    // SAFETY: inside `slots`, which is never resized.
                    iov_base: unsafe { rx.slots.as_mut_ptr().add(i * RX_SLOT + RESERVE) }.cast(),
                    iov_len: RX_SLOT - RESERVE,
                },
            ]);
        }
        for i in 0..RX_BATCH {
            // SAFETY: mmsghdr is plain data; all-zero is valid.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = rx.iov[i].as_mut_ptr();
            m.msg_hdr.msg_iovlen = 2;
            rx.msgs.push(m);
        }
        Ok(rx)
    }

    /// Appends the frames waiting now, up to a batch, to `out`; they are valid until the
    /// next call. Returns whether there were any.
    pub fn frames(&mut self, out: &mut Vec<RxFrame>) -> bool {
        // The kernel writes `msg_len` and `msg_flags` of every message it fills.
        // SAFETY: every msghdr points to live iovecs over our own buffers.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                RX_BATCH as u32,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if n <= 0 {
            return false;
        }
        for i in 0..n as usize {
            let m = &self.msgs[i];
            let captured = (m.msg_len as usize).saturating_sub(vnet::LEN);
            let truncated = m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            out.push(RxFrame {
                // SAFETY: slot `i` of `slots`.
                buf: unsafe { self.slots.as_mut_ptr().add(i * RX_SLOT) },
                len: RESERVE + captured,
                headroom: RESERVE,
                wire_len: captured + usize::from(truncated),
                vnet: self.vnet[i],
            });
        }
        true
    }

    /// Frames the kernel dropped because the socket's buffer was full, since the last call.
    pub fn take_drops(&self) -> io::Result<u64> {
        take_drops(&self.fd)
    }
}

/// Frames a packet socket lost (buffer full) since the last call: reading the statistics
/// resets them.
fn take_drops(fd: &OwnedFd) -> io::Result<u64> {
    // `struct tpacket_stats`: packets, drops.
    let mut stats = [0u32; 2];
    let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
    // SAFETY: `stats` is writable for `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_PACKET,
            PACKET_STATISTICS,
            stats.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from(stats[1]))
}

/// Most frames one `sendmmsg` call carries.
const TX_BATCH: usize = 256;

/// Sends frames on one interface in batches, each with its virtio-net header.
pub struct Tx {
    fd: OwnedFd,
    vnet: Vec<[u8; vnet::LEN]>,
    iov: Vec<[libc::iovec; 2]>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in the queues only live between `push` and `flush` on one thread.
unsafe impl Send for Tx {}

impl Tx {
    pub fn open(ifindex: u32) -> io::Result<Tx> {
        // Protocol 0: this socket sends and receives nothing.
        let fd = packet_socket(0)?;
        setsockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, &1i32)?;
        // Straight to the driver: the data path does its own batching.
        setsockopt(&fd, SOL_PACKET, PACKET_QDISC_BYPASS, &1i32)?;
        bind(&fd, ifindex, 0)?;
        Ok(Tx {
            fd,
            vnet: Vec::with_capacity(TX_BATCH),
            iov: Vec::with_capacity(TX_BATCH),
            msgs: Vec::with_capacity(TX_BATCH),
        })
    }

    /// Queues a frame. The bytes must stay valid and unchanged until [`flush`](Self::flush).
    pub fn push(&mut self, frame: &[u8], offload: &Offload) -> usize {
        let mut failed = 0;
        if self.vnet.len() == TX_BATCH {
            failed = self.flush();
        }
        self.vnet.push(vnet::emit(offload));
        self.iov.push([
            libc::iovec {
                iov_base: ptr::null_mut(),
                iov_len: vnet::LEN,
            },
            libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            },
        ]);
        failed
    }

    /// Sends everything queued. Returns how many frames the kernel refused.
    pub fn flush(&mut self) -> usize {
        let n = self.vnet.len();
        if n == 0 {
            return 0;
        }
        self.msgs.clear();
        for i in 0..n {
            self.iov[i][0].iov_base = self.vnet[i].as_mut_ptr().cast();
            // SAFETY: mmsghdr is plain data; all-zero is valid.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = self.iov[i].as_mut_ptr();
            m.msg_hdr.msg_iovlen = 2;
            self.msgs.push(m);
        }
        let mut failed = 0;
        let mut sent = 0;
        while sent < n {
            // SAFETY: every msghdr points to live iovecs over live frames (see `push`).
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    self.msgs.as_mut_ptr().add(sent),
                    (n - sent) as u32,
                    0,
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The first frame failed: count it and go on with the rest.
                failed += 1;
                sent += 1;
                tracing::debug!(error = %e, "frame refused by the kernel");
            } else {
                sent += r as usize;
            }
        }
        self.vnet.clear();
        self.iov.clear();
        failed
    }
}

impl AsRawFd for RxSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}
