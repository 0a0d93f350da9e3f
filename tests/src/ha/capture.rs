//! Frames seen on one interface of a lab namespace, each with the kernel's receive time.
//!
//! A packet socket (`AF_PACKET`, every protocol) is opened from a thread inside the
//! namespace and bound to the interface, then read on a thread of its own until the capture
//! stops. Each frame carries the kernel's `SO_TIMESTAMPNS` stamp, which is CLOCK_REALTIME,
//! the clock [`SystemTime::now`] reads: the instant a test kills a gateway and the instant a
//! frame crossed the wire compare directly (one machine, one clock). Only the first
//! [`KEPT_BYTES`] of a frame are kept, enough for the Ethernet, ARP, IPv4 and VRRP headers.
//! The socket only listens: nothing is ever sent through it.

use std::{
    ffi::CString,
    io, mem,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::NetNs;

/// Bytes kept of each frame.
pub const KEPT_BYTES: usize = 128;
/// How often the reader notices a stop request.
const POLL: Duration = Duration::from_millis(50);
/// The socket's receive buffer, so that bursts are not lost while the reader sleeps.
const RECEIVE_BUFFER: i32 = 8 << 20;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
/// IP protocol number of VRRP.
pub const PROTOCOL_VRRP: u8 = 112;

/// A MAC address.
pub type Mac = [u8; 6];

/// Parses `aa:bb:cc:dd:ee:ff`.
///
/// # Errors
///
/// When it is not six hex bytes separated by colons.
pub fn parse_mac(text: &str) -> Result<Mac> {
    let mut mac = [0_u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        let part = parts
            .next()
            .with_context(|| format!("MAC {text:?}: too short"))?;
        *byte = u8::from_str_radix(part, 16).with_context(|| format!("MAC {text:?}"))?;
    }
    ensure!(parts.next().is_none(), "MAC {text:?}: too long");
    Ok(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Frame {
    /// When the kernel received (or, for `outgoing`, sent) it.
    pub at: SystemTime,
    /// Sent by this interface's own namespace rather than received from the wire.
    pub outgoing: bool,
    /// The frame's whole length.
    pub len: usize,
    /// Its first [`KEPT_BYTES`] bytes.
    pub bytes: Vec<u8>,
}

/// The IPv4 header fields a test looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Summary {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
}

/// An ARP packet (Ethernet, IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub operation: u16,
    pub sender_mac: Mac,
    pub sender_ip: Ipv4Addr,
    pub target_ip: Ipv4Addr,
}

impl Frame {
    /// The Ethernet source address.
    pub fn source_mac(&self) -> Option<Mac> {
        self.bytes.get(6..12)?.try_into().ok()
    }

    fn ethertype(&self) -> Option<u16> {
        let bytes = self.bytes.get(12..14)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// The IPv4 header, when the frame is IPv4.
    pub fn ipv4(&self) -> Option<Ipv4Summary> {
        if self.ethertype()? != ETHERTYPE_IPV4 {
            return None;
        }
        let header = self.bytes.get(14..34)?;
        let address =
            |at: usize| Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3]);
        Some(Ipv4Summary {
            source: address(12),
            destination: address(16),
            protocol: header[9],
            ttl: header[8],
        })
    }

    /// The VRRP advert's (version, VRID, priority), when the frame is one.
    pub fn vrrp(&self) -> Option<(u8, u8, u8)> {
        if self.ipv4()?.protocol != PROTOCOL_VRRP {
            return None;
        }
        let ihl = usize::from(self.bytes.get(14)? & 0x0f) * 4;
        let advert = self.bytes.get(14 + ihl..14 + ihl + 3)?;
        Some((advert[0] >> 4, advert[1], advert[2]))
    }

    /// The ARP packet, when the frame is one.
    pub fn arp(&self) -> Option<Arp> {
        if self.ethertype()? != ETHERTYPE_ARP {
            return None;
        }
        let arp = self.bytes.get(14..42)?;
        let ip = |at: usize| Ipv4Addr::new(arp[at], arp[at + 1], arp[at + 2], arp[at + 3]);
        Some(Arp {
            operation: u16::from_be_bytes([arp[6], arp[7]]),
            sender_mac: arp[8..14].try_into().ok()?,
            sender_ip: ip(14),
            target_ip: ip(24),
        })
    }
}

/// The frames in `frames` that `mac` sent to the capturing interface (received there, not
/// sent by it): on a bridge port, what the host behind it sent into the bridge.
pub fn sent_by(frames: &[Frame], mac: Mac) -> impl Iterator<Item = &Frame> {
    frames
        .iter()
        .filter(move |frame| !frame.outgoing && frame.source_mac() == Some(mac))
}

/// An Ethernet frame with an ARP request from `sender_mac`/`sender_ip` for `target`,
/// broadcast.
pub fn arp_request(sender_mac: Mac, sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&sender_mac);
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    // Ethernet, IPv4, 6- and 4-byte addresses, request.
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&sender_mac);
    frame.extend_from_slice(&sender_ip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// A running capture; [`Capture::stop`] ends it. Dropping it stops the reader too.
pub struct Capture {
    what: String,
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Frame>>>,
    reader: Option<thread::JoinHandle<io::Result<()>>>,
}

impl Capture {
    /// Starts capturing every frame on `interface` of `ns`.
    ///
    /// # Errors
    ///
    /// When the interface does not exist there or the socket cannot be set up.
    pub fn start(ns: &NetNs, interface: &str) -> Result<Self> {
        let what = format!("{}:{interface}", ns.name());
        let socket = ns
            .run(|| open(interface))?
            .with_context(|| format!("capturing on {what}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let (stop, frames) = (Arc::clone(&stop), Arc::clone(&frames));
            thread::Builder::new()
                .name(format!("capture {interface}"))
                .spawn(move || read(&socket, &stop, &frames))
                .context("starting the capture thread")?
        };
        Ok(Self {
            what,
            stop,
            frames,
            reader: Some(reader),
        })
    }

    /// A copy of the frames captured so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames
            .lock()
            .map(|frames| frames.clone())
            .unwrap_or_default()
    }

    /// A copy of the frames captured so far but the first `skip`, for a reader that keeps up
    /// with a long capture.
    pub fn frames_after(&self, skip: usize) -> Vec<Frame> {
        self.frames
            .lock()
            .map(|frames| {
                frames
                    .get(skip..)
                    .map(<[Frame]>::to_vec)
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Stops capturing and returns every frame, in the order the kernel delivered them.
    ///
    /// # Errors
    ///
    /// When reading failed.
    pub fn stop(mut self) -> Result<Vec<Frame>> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            match reader.join() {
                Ok(result) => result.with_context(|| format!("capturing on {}", self.what))?,
                Err(_) => bail!("the capture thread on {} panicked", self.what),
            }
        }
        Ok(self.frames())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn last_error(what: &str) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(err.kind(), format!("{what}: {err}"))
}

fn set_option<T>(socket: &OwnedFd, level: i32, name: i32, value: &T, what: &str) -> io::Result<()> {
    // SAFETY: `value` is valid for reads of its size for the whole call.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if done < 0 {
        return Err(last_error(what));
    }
    Ok(())
}

/// Opens the packet socket on `interface` of the calling thread's namespace.
fn open(interface: &str) -> io::Result<OwnedFd> {
    let name = CString::new(interface).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string for the whole call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(last_error(&format!("no interface {interface}")));
    }
    // Protocol 0: nothing arrives before the bind below picks the protocol and interface, so
    // no frame of another interface slips in.
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_error("packet socket"));
    }
    // SAFETY: a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    set_option(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        &RECEIVE_BUFFER,
        "SO_RCVBUFFORCE",
    )?;
    set_option(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_TIMESTAMPNS,
        &1_i32,
        "SO_TIMESTAMPNS",
    )?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: libc::suseconds_t::try_from(POLL.as_micros()).map_err(io::Error::other)?,
    };
    set_option(
        &socket,
        libc::SOL_SOCKET,
        libc::SO_RCVTIMEO,
        &timeout,
        "SO_RCVTIMEO",
    )?;
    // SAFETY: all zeroes is a valid sockaddr_ll.
    let mut address: libc::sockaddr_ll = unsafe { mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    address.sll_ifindex = i32::try_from(ifindex).map_err(io::Error::other)?;
    // SAFETY: `address` is valid for its size.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound < 0 {
        return Err(last_error(&format!("binding to {interface}")));
    }
    Ok(socket)
}

/// Reads frames into `frames` until `stop` is set.
fn read(socket: &OwnedFd, stop: &AtomicBool, frames: &Mutex<Vec<Frame>>) -> io::Result<()> {
    let mut buffer = [0_u8; KEPT_BYTES];
    // u64 for the alignment cmsghdr needs.
    let mut control = [0_u64; 16];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: all zeroes is a valid sockaddr_ll and msghdr.
        let mut from: libc::sockaddr_ll = unsafe { mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: buffer.len(),
        };
        // SAFETY: as above.
        let mut message: libc::msghdr = unsafe { mem::zeroed() };
        message.msg_name = (&raw mut from).cast();
        message.msg_namelen = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        message.msg_iov = &raw mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = mem::size_of_val(&control);
        // MSG_TRUNC: the return value is the frame's whole length even when longer than the
        // buffer.
        // SAFETY: every pointer in `message` is valid for its length during the call.
        let len = unsafe { libc::recvmsg(socket.as_raw_fd(), &raw mut message, libc::MSG_TRUNC) };
        if len < 0 {
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => {
                    continue;
                }
                _ => return Err(err),
            }
        }
        let len = len.unsigned_abs();
        let at = timestamp(&message).unwrap_or_else(SystemTime::now);
        let frame = Frame {
            at,
            outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
            len,
            bytes: buffer[..len.min(KEPT_BYTES)].to_vec(),
        };
        if let Ok(mut frames) = frames.lock() {
            frames.push(frame);
        }
    }
    Ok(())
}

/// The `SCM_TIMESTAMPNS` time in a received message's control data.
fn timestamp(message: &libc::msghdr) -> Option<SystemTime> {
    // SAFETY: `message` was filled by recvmsg; the CMSG macros stay within msg_controllen.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET
                && (*header).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let time = libc::CMSG_DATA(header)
                    .cast::<libc::timespec>()
                    .read_unaligned();
                let seconds = u64::try_from(time.tv_sec).ok()?;
                let nanos = u32::try_from(time.tv_nsec).ok()?;
                return Some(SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos));
            }
            header = libc::CMSG_NXTHDR(message, header);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> Frame {
        Frame {
            at: SystemTime::UNIX_EPOCH,
            outgoing: false,
            len: bytes.len(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn macs_round_trip() {
        let mac = parse_mac("02:aB:00:10:ff:09").expect("valid");
        assert_eq!(mac, [0x02, 0xab, 0x00, 0x10, 0xff, 0x09]);
        assert_eq!(format_mac(&mac), "02:ab:00:10:ff:09");
        assert!(parse_mac("02:ab:00:10:ff").is_err());
        assert!(parse_mac("02:ab:00:10:ff:09:01").is_err());
        assert!(parse_mac("02:ab:00:10:ff:zz").is_err());
    }

    #[test]
    fn arp_requests_parse_back() {
        let mac = [2, 0, 0, 0, 0, 1];
        let request = arp_request(
            mac,
            Ipv4Addr::new(192, 168, 50, 1),
            Ipv4Addr::new(192, 168, 50, 100),
        );
        assert_eq!(request.len(), 42);
        let parsed = frame(&request).arp().expect("an ARP frame");
        assert_eq!(parsed.operation, 1);
        assert_eq!(parsed.sender_mac, mac);
        assert_eq!(parsed.sender_ip, Ipv4Addr::new(192, 168, 50, 1));
        assert_eq!(parsed.target_ip, Ipv4Addr::new(192, 168, 50, 100));
        assert_eq!(frame(&request).ipv4(), None);
    }

    #[test]
    fn vrrp_adverts_parse() {
        // A VRRPv3 advert from 192.168.50.11 to 224.0.0.18: VRID 10, priority 200,
        // 100 ms, one address.
        let mut bytes = vec![
            0x01, 0x00, 0x5e, 0x00, 0x00, 0x12, 2, 0, 0, 0, 0, 0x11, 0x08, 0x00,
        ];
        bytes.extend_from_slice(&[
            0x45, 0xc0, 0x00, 0x20, 0, 0, 0, 0, 255, 112, 0, 0, 192, 168, 50, 11, 224, 0, 0, 18,
        ]);
        bytes.extend_from_slice(&[0x31, 10, 200, 1, 0x00, 0x0a, 0, 0, 192, 168, 50, 100]);
        let advert = frame(&bytes);
        assert_eq!(advert.source_mac(), Some([2, 0, 0, 0, 0, 0x11]));
        let ip = advert.ipv4().expect("IPv4");
        assert_eq!(ip.source, Ipv4Addr::new(192, 168, 50, 11));
        assert_eq!(ip.ttl, 255);
        assert_eq!(advert.vrrp(), Some((3, 10, 200)));
        assert_eq!(advert.arp(), None);
    }
}
