//! Packet sockets on the gateway interface: a memory-mapped receive ring (`TPACKET_V3`)
//! and batched transmission (`sendmmsg`), both with virtio-net headers so that super-packets
//! and partial checksums pass through instead of being cut up or computed by the kernel.
//!
//! The ring hands over whole blocks of frames; the data path rewrites them in place, and a
//! block goes back to the kernel only after everything pointing into it has been sent.
//! `PACKET_RESERVE` leaves headroom in front of each frame for the VXLAN headers of the
//! return path, so that encapsulation copies nothing.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;

use crate::datapath::Offload;

use super::vnet;

const SOL_PACKET: libc::c_int = 263;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_RESERVE: libc::c_int = 12;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_STATISTICS: libc::c_int = 6;
/// Fanout by flow hash: every packet of a flow reaches the same ring, in order.
const PACKET_FANOUT_HASH: u32 = 0;
const TPACKET_V3: libc::c_int = 2;
const ETH_P_ALL: u16 = 0x0003;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;

/// Bytes of the per-frame header before the headroom: `tpacket3_hdr` and `sockaddr_ll`.
const TPACKET3_HDRLEN: usize = 48 + 20;
/// Headroom asked for in front of every frame (the VXLAN headers need 50).
const RESERVE: usize = 64;

/// Size of a ring block: large enough for several 64 KiB super-packets.
const BLOCK_SIZE: usize = 1 << 18;
/// Blocks in the ring.
const BLOCK_COUNT: usize = 64;
/// A block is handed over when full or after this many milliseconds: the added latency
/// when traffic is light.
const BLOCK_TIMEOUT_MS: u32 = 1;

/// `struct tpacket_req3`.
#[repr(C)]
struct TpacketReq3 {
    block_size: u32,
    block_nr: u32,
    frame_size: u32,
    frame_nr: u32,
    retire_blk_tov: u32,
    sizeof_priv: u32,
    feature_req_word: u32,
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
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

/// A receive ring on one interface.
pub struct RxRing {
    fd: OwnedFd,
    map: *mut u8,
    len: usize,
    next: usize,
}

// SAFETY: the mapping is owned by the ring and only touched through `&mut self`.
unsafe impl Send for RxRing {}

/// One frame of a ready block.
pub struct RxFrame {
    /// The frame with its headroom: `headroom..` is the Ethernet frame as far as captured.
    pub buf: *mut u8,
    pub len: usize,
    pub headroom: usize,
    /// The frame's length on the wire, which is more than captured when the ring cut it.
    pub wire_len: usize,
    pub vnet: [u8; vnet::LEN],
}

impl RxRing {
    /// Opens a ring receiving every frame of `ifindex` except those this host sends. With
    /// a `fanout` group, the rings of the group share the frames by flow hash.
    pub fn open(ifindex: u32, fanout: Option<u16>) -> io::Result<RxRing> {
        let fd = packet_socket(ETH_P_ALL)?;
        setsockopt(&fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V3)?;
        setsockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, &1i32)?;
        setsockopt(&fd, SOL_PACKET, PACKET_RESERVE, &(RESERVE as u32))?;
        setsockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &1i32)?;
        let req = TpacketReq3 {
            block_size: BLOCK_SIZE as u32,
            block_nr: BLOCK_COUNT as u32,
            frame_size: 2048,
            frame_nr: (BLOCK_SIZE * BLOCK_COUNT / 2048) as u32,
            retire_blk_tov: BLOCK_TIMEOUT_MS,
            sizeof_priv: 0,
            feature_req_word: 0,
        };
        setsockopt(&fd, SOL_PACKET, PACKET_RX_RING, &req)?;
        let len = BLOCK_SIZE * BLOCK_COUNT;
        // SAFETY: mapping the ring the kernel just allocated for this socket.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = RxRing {
            fd,
            map: map.cast(),
            len,
            next: 0,
        };
        bind(&ring.fd, ifindex, ETH_P_ALL)?;
        if let Some(group) = fanout {
            let arg = u32::from(group) | (PACKET_FANOUT_HASH << 16);
            setsockopt(&ring.fd, SOL_PACKET, PACKET_FANOUT, &arg)?;
        }
        Ok(ring)
    }

    fn block(&self, i: usize) -> *mut u8 {
        // SAFETY: `i < BLOCK_COUNT`, inside the mapping.
        unsafe { self.map.add(i * BLOCK_SIZE) }
    }

    fn status(&self, i: usize) -> *mut u32 {
        // SAFETY: block_status is at offset 8 of the block descriptor.
        unsafe { self.block(i).add(8).cast() }
    }

    /// Frames the kernel dropped because the ring was full, since the last call (reading
    /// the socket's statistics resets them).
    pub fn take_drops(&self) -> io::Result<u64> {
        // `struct tpacket_stats_v3`: packets, drops, freeze_q_cnt.
        let mut stats = [0u32; 3];
        let mut len = std::mem::size_of_val(&stats) as libc::socklen_t;
        // SAFETY: `stats` is writable for `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
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

    /// Whether the next block is ready for us.
    pub fn ready(&self) -> bool {
        // SAFETY: reading the status word the kernel writes; volatile because it does so
        // behind our back.
        unsafe { ptr::read_volatile(self.status(self.next)) & TP_STATUS_USER != 0 }
    }

    /// Waits up to `timeout_ms` for the next block.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<()> {
        if self.ready() {
            return Ok(());
        }
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The frames of the next block if it is ready; [`release`](Self::release) it after.
    pub fn frames(&self, out: &mut Vec<RxFrame>) -> bool {
        out.clear();
        if !self.ready() {
            return false;
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        let block = self.block(self.next);
        // SAFETY: the kernel handed this block to us; its descriptor and packet headers
        // lie inside it, at the offsets it wrote. Offsets are checked against the block.
        unsafe {
            let num = ptr::read(block.add(12).cast::<u32>()) as usize;
            let mut off = ptr::read(block.add(16).cast::<u32>()) as usize;
            for _ in 0..num {
                if off + TPACKET3_HDRLEN > BLOCK_SIZE {
                    break;
                }
                let h = block.add(off);
                let next = ptr::read(h.cast::<u32>()) as usize;
                let snaplen = ptr::read(h.add(12).cast::<u32>()) as usize;
                let wire_len = ptr::read(h.add(16).cast::<u32>()) as usize;
                let mac = usize::from(ptr::read(h.add(24).cast::<u16>()));
                if mac < TPACKET3_HDRLEN + vnet::LEN || off + mac + snaplen > BLOCK_SIZE {
                    break;
                }
                let mut vnet = [0u8; vnet::LEN];
                ptr::copy_nonoverlapping(h.add(mac - vnet::LEN), vnet.as_mut_ptr(), vnet::LEN);
                out.push(RxFrame {
                    buf: h.add(TPACKET3_HDRLEN),
                    len: mac - TPACKET3_HDRLEN + snaplen,
                    headroom: mac - TPACKET3_HDRLEN,
                    wire_len,
                    vnet,
                });
                if next == 0 {
                    break;
                }
                off += next;
            }
        }
        true
    }

    /// Gives the current block back to the kernel and moves on to the next.
    pub fn release(&mut self) {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        // SAFETY: the status word of a block we hold.
        unsafe { ptr::write_volatile(self.status(self.next), TP_STATUS_KERNEL) };
        self.next = (self.next + 1) % BLOCK_COUNT;
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once.
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
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
