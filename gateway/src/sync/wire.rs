//! The flow sync datagram: one UDP payload, big-endian, at most [`MAX_DATAGRAM`] bytes.
//!
//! Every datagram starts with the same 48-byte header, sent in clear:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 |                         magic "EGSY"                          |
//!  4 |  version = 2  |     kind      |     suite     |  reserved (0) |
//!  8 |              epoch (64 bits): the sender's boot id             |
//! 16 |        counter (64 bits): the datagram's number in the epoch   |
//! 24 |   token (64 bits): the sender's session token for the receiver |
//! 32 |    echo (64 bits): the receiver's token, as last heard fresh    |
//! 40 |         primary: the sender's election address (IPv4)         |
//! 44 |                          reserved (0)                         |
//! ```
//!
//! then the body by kind, then, when `suite` is 1 (AES-256-GCM, [`super::seal`]),
//! the 16-byte tag: the header is authenticated, the body encrypted. Suite 0 carries no
//! tag and is only spoken between gateways configured without a key. The epoch picks the
//! sender's key and the counter is the nonce; the token and echo bind a datagram to the receiver's current session
//! with the sender ([`super::session`]), so a datagram recorded before either side
//! restarted is never fresh again.
//!
//! ```text
//! Batch (1), 56 + 32 × count bytes
//! 48 |                        seq (low 32 bits)                      |
//! 52 |     flags     |     count     |          reserved (0)         |
//! 56 |                 count change records of 32 bytes              |
//!
//! Change record
//!  0 |      op       |     proto     |     state     |  reserved (0) |
//!  4 |                           node                                |
//!  8 |                          egress                               |
//! 12 |                            pod                                |
//! 16 |                          remote                               |
//! 20 |           pod_port            |          remote_port          |
//! 24 |           nat_port            |          reserved (0)         |
//! 28 |                    remaining (seconds)                        |
//!
//! Node record (op 3): how to reach a node
//!  0 |    op = 3     |  proto = 17   |       0       |       0       |
//!  4 |                        node address                          |
//!  8 |                  MAC (6 bytes): outer source                 |
//! 12 |                               |  tunnel device MAC (6 bytes) |
//! 16 |                                                               |
//! 20 |                            0 …                                |
//!
//! Nack (2), 64 bytes
//! 48 |      stream_epoch (64 bits): the stream the missing seqs are in |
//! 52 |                                                               |
//! 56 |                       from (inclusive)                        |
//! 60 |                        to (inclusive)                         |
//!
//! Heartbeat (3), 56 + 2 × count + name_len bytes
//! 48 |             last_seq: the last seq sent, 0 when none          |
//! 52 |     count     |   name_len    |          reserved (0)         |
//! 56 |     vrid      |   priority    |      … count claims           |
//!    |   name: name_len bytes of UTF-8, after the claims              |
//!
//! ResyncRequest (4), 56 bytes
//! 48 |   stream_epoch (64 bits): the stream wanted in full, 0 = any   |
//! 52 |                                                               |
//! ```
//!
//! A change record carries 29 bytes of information; the three reserved bytes keep every
//! field on its natural alignment. A batch holds at most [`MAX_CHANGES`] (41) records,
//! which with the tag fill a datagram of 1384 bytes.
//!
//! A heartbeat's claims are the sender's election priority for each of its VRIDs: the
//! election refuses an advert that claims a peer's address with another priority. Its name
//! is the sender's `[gateway].name` (empty: not announced), at most [`MAX_NAME`] bytes of
//! UTF-8 without control characters: what the Kubernetes status calls the sender
//! (`crate::report`). The name length sits in a byte that was reserved (sent as 0), so a
//! heartbeat without a name is byte for byte the one sent before names existed.
//!
//! Batch flags: bit 0 marks a batch of a full resync; bit 1 its first batch and bit 2 its
//! last (both set for a resync that fits in one batch, possibly empty). Bits 1 and 2 let a
//! receiver find where a resync starts, so it can skip what the resync supersedes, and
//! where it ends, so the shell can drop the flows the resync did not mention.
//!
//! Sequence numbers are the low 32 bits of a 64-bit counter that starts at 1 for each
//! epoch; [`expand`] recovers the full value from the one a receiver expects, as QUIC does
//! with packet numbers, so a stream never wraps.
//!
//! Reserved bytes are sent as zero and ignored on receipt. Parsing never panics: every
//! length is checked before a field is read, and each refusal has its [`SyncWireError`].

use core::net::Ipv4Addr;

use smoltcp::time::Duration;

use super::{Change, Op};
use crate::nat::{Flow, FlowState, Proto};

/// "EGSY": egret sync.
pub const MAGIC: [u8; 4] = *b"EGSY";
/// The protocol version this code speaks.
pub const VERSION: u8 = 2;
/// The largest datagram ever sent: fits a 1500-byte MTU with room for tunnels.
pub const MAX_DATAGRAM: usize = 1400;
/// Length of the header every message starts with.
pub const HEADER_LEN: usize = field::BODY;
/// Length of the authentication tag of a sealed datagram.
pub const TAG_LEN: usize = 16;
/// Length of a batch before its change records.
pub const BATCH_HEADER_LEN: usize = field::CHANGES;
/// Length of one change record.
pub const CHANGE_LEN: usize = 32;
/// Most change records in one batch: a sealed batch fits in [`MAX_DATAGRAM`].
pub const MAX_CHANGES: usize = (MAX_DATAGRAM - TAG_LEN - BATCH_HEADER_LEN) / CHANGE_LEN;
/// Length of a Nack.
pub const NACK_LEN: usize = field::NACK_TO.end;
/// Length of a Heartbeat without claims and without a name.
pub const HEARTBEAT_LEN: usize = field::CLAIMS;
/// The longest gateway name a heartbeat carries, in bytes.
pub const MAX_NAME: usize = 255;
/// Length of a ResyncRequest.
pub const RESYNC_REQUEST_LEN: usize = field::STREAM_EPOCH.end;
/// The header bytes that choose the AEAD key and nonce: the epoch (the sender's key) and the
/// counter (the nonce).
pub const NONCE_FIELDS: core::ops::Range<usize> = 8..24;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION: usize = 4;
    pub const KIND: usize = 5;
    pub const SUITE: usize = 6;
    pub const EPOCH: Range<usize> = 8..16;
    pub const COUNTER: Range<usize> = 16..24;
    pub const TOKEN: Range<usize> = 24..32;
    pub const ECHO: Range<usize> = 32..40;
    pub const PRIMARY: Range<usize> = 40..44;
    pub const BODY: usize = 48;

    // Batch.
    pub const SEQ: Range<usize> = 48..52;
    pub const FLAGS: usize = 52;
    pub const COUNT: usize = 53;
    pub const CHANGES: usize = 56;

    // Nack and ResyncRequest.
    pub const STREAM_EPOCH: Range<usize> = 48..56;
    pub const NACK_FROM: Range<usize> = 56..60;
    pub const NACK_TO: Range<usize> = 60..64;

    // Heartbeat.
    pub const LAST_SEQ: Range<usize> = 48..52;
    pub const CLAIM_COUNT: usize = 52;
    pub const NAME_LEN: usize = 53;
    pub const CLAIMS: usize = 56;

    /// Offsets within one change record.
    pub mod change {
        use core::ops::Range;
        pub const OP: usize = 0;
        pub const PROTO: usize = 1;
        pub const STATE: usize = 2;
        pub const NODE: Range<usize> = 4..8;
        pub const EGRESS: Range<usize> = 8..12;
        pub const POD: Range<usize> = 12..16;
        pub const REMOTE: Range<usize> = 16..20;
        pub const POD_PORT: Range<usize> = 20..22;
        pub const REMOTE_PORT: Range<usize> = 22..24;
        pub const NAT_PORT: Range<usize> = 24..26;
        pub const REMAINING: Range<usize> = 28..32;
        // A node record (op 3): NODE, then its MACs where the flow's addresses go.
        pub const MAC: Range<usize> = 8..14;
        pub const TUNNEL_MAC: Range<usize> = 14..20;
    }
}

const KIND_BATCH: u8 = 1;
const KIND_NACK: u8 = 2;
const KIND_HEARTBEAT: u8 = 3;
const KIND_RESYNC_REQUEST: u8 = 4;

const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;
const OP_NODE: u8 = 3;

const FLAG_RESYNC: u8 = 1 << 0;
const FLAG_RESYNC_BEGIN: u8 = 1 << 1;
const FLAG_RESYNC_END: u8 = 1 << 2;

/// Why a received datagram was refused; each is counted under its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SyncWireError {
    #[error("not a sync datagram: the magic is not \"EGSY\"")]
    BadMagic,
    #[error("sync protocol version is not 2")]
    Version,
    #[error("unknown sync message kind")]
    Kind,
    #[error("length does not match the message kind or its change count")]
    Length,
    #[error(
        "a field holds a value outside its range (op, protocol, state, flags, nack range, suite)"
    )]
    Field,
}

impl SyncWireError {
    /// Every reason, in a fixed order (metrics list them all from the start).
    pub const ALL: [SyncWireError; 5] = [
        SyncWireError::BadMagic,
        SyncWireError::Version,
        SyncWireError::Kind,
        SyncWireError::Length,
        SyncWireError::Field,
    ];

    /// The `reason` label of the rejected-datagrams counter.
    pub fn label(self) -> &'static str {
        match self {
            SyncWireError::BadMagic => "bad_magic",
            SyncWireError::Version => "version",
            SyncWireError::Kind => "kind",
            SyncWireError::Length => "length",
            SyncWireError::Field => "field",
        }
    }

    /// The position of this reason in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// How a datagram is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// Not at all: gateways without a sync key.
    None = 0,
    /// Sealed with AES-256-GCM under a key of the group; a 16-byte tag follows.
    Aes256Gcm = 1,
}

/// The fields that bind a datagram to a session, written when it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The datagram's number in the sender's epoch, from 1.
    pub counter: u64,
    /// The sender's token for the receiver.
    pub token: u64,
    /// The receiver's token as the sender last heard it fresh (0 when never).
    pub echo: u64,
    /// The sender's election address.
    pub primary: Ipv4Addr,
}

/// A datagram's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub suite: Suite,
    /// The sender's boot id.
    pub epoch: u64,
    pub session: Session,
}

/// Writes the session fields and the suite of a datagram about to be sent (whole, before
/// it is sealed).
pub fn set_session(datagram: &mut [u8], suite: Suite, session: &Session) {
    if datagram.len() < HEADER_LEN {
        return;
    }
    datagram[field::SUITE] = suite as u8;
    datagram[field::COUNTER].copy_from_slice(&session.counter.to_be_bytes());
    datagram[field::TOKEN].copy_from_slice(&session.token.to_be_bytes());
    datagram[field::ECHO].copy_from_slice(&session.echo.to_be_bytes());
    datagram[field::PRIMARY].copy_from_slice(&session.primary.octets());
}

/// A read/write view of a sync datagram's header and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, SyncWireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole header: the getters cannot panic afterwards.
    pub fn check_len(&self) -> Result<(), SyncWireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(SyncWireError::Length)
        } else {
            Ok(())
        }
    }

    pub fn magic(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::MAGIC];
        [b[0], b[1], b[2], b[3]]
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }

    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }

    pub fn suite(&self) -> u8 {
        self.buffer.as_ref()[field::SUITE]
    }

    /// The sender's boot id.
    pub fn epoch(&self) -> u64 {
        be_u64(&self.buffer.as_ref()[field::EPOCH])
    }

    pub fn session(&self) -> Session {
        let b = self.buffer.as_ref();
        Session {
            counter: be_u64(&b[field::COUNTER]),
            token: be_u64(&b[field::TOKEN]),
            echo: be_u64(&b[field::ECHO]),
            primary: ipv4(&b[field::PRIMARY]),
        }
    }

    /// Everything after the header.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes the header: magic, version, `kind`, `epoch`; the suite, session fields and
    /// reserved bytes zero (the session is written when the datagram is sent).
    pub fn set_header(&mut self, kind: u8, epoch: u64) {
        let b = self.buffer.as_mut();
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[field::VERSION] = VERSION;
        b[field::KIND] = kind;
        b[field::SUITE..field::EPOCH.start].fill(0);
        b[field::EPOCH].copy_from_slice(&epoch.to_be_bytes());
        b[field::COUNTER.start..field::BODY].fill(0);
    }
}

impl Header {
    /// Reads and checks the header of a datagram as received (sealed or not).
    pub fn parse(bytes: &[u8]) -> Result<Header, SyncWireError> {
        let packet = Packet::new_checked(bytes)?;
        if packet.magic() != MAGIC {
            return Err(SyncWireError::BadMagic);
        }
        if packet.version() != VERSION {
            return Err(SyncWireError::Version);
        }
        let suite = match packet.suite() {
            0 => Suite::None,
            1 => Suite::Aes256Gcm,
            _ => return Err(SyncWireError::Field),
        };
        Ok(Header {
            kind: packet.kind(),
            suite,
            epoch: packet.epoch(),
            session: packet.session(),
        })
    }
}

/// Which part of a stream a batch is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchFlags {
    /// Part of a full resync (bit 0).
    pub resync: bool,
    /// The first batch of a full resync (bit 1).
    pub resync_begin: bool,
    /// The last batch of a full resync (bit 2).
    pub resync_end: bool,
}

impl BatchFlags {
    /// A batch of live changes.
    pub const LIVE: BatchFlags = BatchFlags {
        resync: false,
        resync_begin: false,
        resync_end: false,
    };

    fn to_u8(self) -> u8 {
        (if self.resync { FLAG_RESYNC } else { 0 })
            | (if self.resync_begin {
                FLAG_RESYNC_BEGIN
            } else {
                0
            })
            | (if self.resync_end { FLAG_RESYNC_END } else { 0 })
    }

    fn from_u8(v: u8) -> Result<BatchFlags, SyncWireError> {
        let known = FLAG_RESYNC | FLAG_RESYNC_BEGIN | FLAG_RESYNC_END;
        let resync = v & FLAG_RESYNC != 0;
        // A begin or an end outside a resync means nothing: refuse rather than guess.
        if v & !known != 0 || (!resync && v != 0) {
            return Err(SyncWireError::Field);
        }
        Ok(BatchFlags {
            resync,
            resync_begin: v & FLAG_RESYNC_BEGIN != 0,
            resync_end: v & FLAG_RESYNC_END != 0,
        })
    }
}

/// A batch of changes, its records checked and kept as they are on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch<'a> {
    /// Low 32 bits of the batch's sequence number.
    pub seq: u32,
    pub flags: BatchFlags,
    records: &'a [u8],
}

impl<'a> Batch<'a> {
    /// A batch over `records`, a whole number of valid change records (at most
    /// [`MAX_CHANGES`]).
    pub fn new(seq: u32, flags: BatchFlags, records: &'a [u8]) -> Result<Batch<'a>, SyncWireError> {
        if !records.len().is_multiple_of(CHANGE_LEN) || records.len() / CHANGE_LEN > MAX_CHANGES {
            return Err(SyncWireError::Length);
        }
        for r in records.chunks_exact(CHANGE_LEN) {
            check_change(r)?;
        }
        Ok(Batch {
            seq,
            flags,
            records,
        })
    }

    /// How many changes the batch carries.
    pub fn len(&self) -> usize {
        self.records.len() / CHANGE_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The changes, in the order they were made.
    pub fn changes(&self) -> impl Iterator<Item = Change> + 'a {
        // Checked by `new`: no record fails here.
        self.records
            .chunks_exact(CHANGE_LEN)
            .filter_map(|r| parse_change(r).ok())
    }
}

/// One sync message, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Changes of the sender's stream.
    Batch(Batch<'a>),
    /// The receiver misses seqs `from..=to` of the stream `stream_epoch` (the receiver of
    /// the Nack's own).
    Nack {
        stream_epoch: u64,
        from: u32,
        to: u32,
    },
    /// The sender is alive and has sent up to `last_seq` on its stream (0: nothing yet);
    /// `claims` are its election priority for each of its VRIDs, `[vrid, priority]`;
    /// `name` its `[gateway].name` (empty when not announced; see [`valid_name`]).
    Heartbeat {
        last_seq: u32,
        claims: &'a [[u8; 2]],
        name: &'a str,
    },
    /// The sender wants the whole table; `stream_epoch` is the receiver's stream it last
    /// followed (0 when none).
    ResyncRequest { stream_epoch: u64 },
}

impl<'a> Message<'a> {
    /// Reads and checks a plaintext datagram (opened, its tag removed): the header and
    /// the message.
    pub fn parse(bytes: &'a [u8]) -> Result<(Header, Message<'a>), SyncWireError> {
        let header = Header::parse(bytes)?;
        let message = match header.kind {
            KIND_BATCH => {
                if bytes.len() < BATCH_HEADER_LEN {
                    return Err(SyncWireError::Length);
                }
                let count = usize::from(bytes[field::COUNT]);
                if count > MAX_CHANGES || bytes.len() != BATCH_HEADER_LEN + count * CHANGE_LEN {
                    return Err(SyncWireError::Length);
                }
                let flags = BatchFlags::from_u8(bytes[field::FLAGS])?;
                Message::Batch(Batch::new(
                    be_u32(&bytes[field::SEQ]),
                    flags,
                    &bytes[field::CHANGES..],
                )?)
            }
            KIND_NACK => {
                if bytes.len() != NACK_LEN {
                    return Err(SyncWireError::Length);
                }
                let (from, to) = (
                    be_u32(&bytes[field::NACK_FROM]),
                    be_u32(&bytes[field::NACK_TO]),
                );
                // Seqs wrap, so `to` may be below `from`; a range over half the space is
                // never sent and could not be read back unambiguously.
                if to.wrapping_sub(from) >= 1 << 31 {
                    return Err(SyncWireError::Field);
                }
                Message::Nack {
                    stream_epoch: be_u64(&bytes[field::STREAM_EPOCH]),
                    from,
                    to,
                }
            }
            KIND_HEARTBEAT => {
                if bytes.len() < HEARTBEAT_LEN {
                    return Err(SyncWireError::Length);
                }
                let count = usize::from(bytes[field::CLAIM_COUNT]);
                let name_len = usize::from(bytes[field::NAME_LEN]);
                if bytes.len() != HEARTBEAT_LEN + 2 * count + name_len {
                    return Err(SyncWireError::Length);
                }
                let (claims, name) = bytes[field::CLAIMS..].split_at(2 * count);
                let (claims, _) = claims.as_chunks::<2>();
                let name = core::str::from_utf8(name).map_err(|_| SyncWireError::Field)?;
                if !valid_name(name) {
                    return Err(SyncWireError::Field);
                }
                Message::Heartbeat {
                    last_seq: be_u32(&bytes[field::LAST_SEQ]),
                    claims,
                    name,
                }
            }
            KIND_RESYNC_REQUEST => {
                if bytes.len() != RESYNC_REQUEST_LEN {
                    return Err(SyncWireError::Length);
                }
                Message::ResyncRequest {
                    stream_epoch: be_u64(&bytes[field::STREAM_EPOCH]),
                }
            }
            _ => return Err(SyncWireError::Kind),
        };
        Ok((header, message))
    }

    /// Length of the emitted datagram (before any tag).
    pub fn buffer_len(&self) -> usize {
        match self {
            Message::Batch(b) => BATCH_HEADER_LEN + b.records.len(),
            Message::Nack { .. } => NACK_LEN,
            Message::Heartbeat { claims, name, .. } => {
                HEARTBEAT_LEN + 2 * claims.len().min(255) + sent_name(name).len()
            }
            Message::ResyncRequest { .. } => RESYNC_REQUEST_LEN,
        }
    }

    /// Writes the datagram of sender `epoch` into `buf` (at least
    /// [`buffer_len`](Self::buffer_len) bytes), its session fields zero. At most 255
    /// claims are written, and a name only when [`valid_name`].
    pub fn emit(&self, epoch: u64, buf: &mut [u8]) {
        let buf = &mut buf[..self.buffer_len()];
        match *self {
            Message::Batch(b) => {
                emit_batch_header(buf, epoch, b.seq, b.flags, b.len());
                buf[field::CHANGES..].copy_from_slice(b.records);
            }
            Message::Nack {
                stream_epoch,
                from,
                to,
            } => {
                Packet::new_unchecked(&mut *buf).set_header(KIND_NACK, epoch);
                buf[field::STREAM_EPOCH].copy_from_slice(&stream_epoch.to_be_bytes());
                buf[field::NACK_FROM].copy_from_slice(&from.to_be_bytes());
                buf[field::NACK_TO].copy_from_slice(&to.to_be_bytes());
            }
            Message::Heartbeat {
                last_seq,
                claims,
                name,
            } => {
                let claims = &claims[..claims.len().min(255)];
                let name = sent_name(name).as_bytes();
                Packet::new_unchecked(&mut *buf).set_header(KIND_HEARTBEAT, epoch);
                buf[field::LAST_SEQ].copy_from_slice(&last_seq.to_be_bytes());
                buf[field::CLAIM_COUNT] = claims.len() as u8;
                buf[field::NAME_LEN] = name.len() as u8;
                buf[field::NAME_LEN + 1..field::CLAIMS].fill(0);
                let (c, n) = buf[field::CLAIMS..].split_at_mut(2 * claims.len());
                c.copy_from_slice(claims.as_flattened());
                n.copy_from_slice(name);
            }
            Message::ResyncRequest { stream_epoch } => {
                Packet::new_unchecked(&mut *buf).set_header(KIND_RESYNC_REQUEST, epoch);
                buf[field::STREAM_EPOCH].copy_from_slice(&stream_epoch.to_be_bytes());
            }
        }
    }

    /// The datagram as a new vector.
    pub fn to_vec(&self, epoch: u64) -> Vec<u8> {
        let mut v = vec![0; self.buffer_len()];
        self.emit(epoch, &mut v);
        v
    }
}

/// Whether a heartbeat may carry `name`: at most [`MAX_NAME`] bytes, no control
/// character (it ends up in a Kubernetes object and in logs). Empty means "not announced".
pub fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME && !name.chars().any(char::is_control)
}

/// The name a heartbeat carries for `name`: itself when valid, else none.
fn sent_name(name: &str) -> &str {
    if valid_name(name) { name } else { "" }
}

/// Writes the header of a batch of `count` records into the front of `buf` (at least
/// [`BATCH_HEADER_LEN`] bytes); the records follow at [`BATCH_HEADER_LEN`].
pub fn emit_batch_header(buf: &mut [u8], epoch: u64, seq: u32, flags: BatchFlags, count: usize) {
    Packet::new_unchecked(&mut *buf).set_header(KIND_BATCH, epoch);
    buf[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    buf[field::FLAGS] = flags.to_u8();
    buf[field::COUNT] = count.min(MAX_CHANGES) as u8;
    buf[field::COUNT + 1..field::CHANGES].fill(0);
}

/// One change as its 32-byte record. The remaining time is rounded up to whole seconds (a
/// flow with half a second left must not arrive already expired) and saturates.
pub fn emit_change(change: &Change) -> [u8; CHANGE_LEN] {
    use field::change as f;
    let flow = &change.flow;
    let mut r = [0u8; CHANGE_LEN];
    r[f::OP] = match change.op {
        Op::Upsert => OP_UPSERT,
        Op::Delete => OP_DELETE,
        Op::Node { mac, tunnel_mac } => {
            r[f::PROTO] = Proto::Udp.number();
            r[f::NODE].copy_from_slice(&flow.node.octets());
            r[f::MAC].copy_from_slice(&mac);
            r[f::TUNNEL_MAC].copy_from_slice(&tunnel_mac);
            r[f::OP] = OP_NODE;
            return r;
        }
    };
    r[f::PROTO] = flow.proto.number();
    r[f::STATE] = flow.state as u8;
    r[f::NODE].copy_from_slice(&flow.node.octets());
    r[f::EGRESS].copy_from_slice(&flow.egress.octets());
    r[f::POD].copy_from_slice(&flow.pod.octets());
    r[f::REMOTE].copy_from_slice(&flow.remote.octets());
    r[f::POD_PORT].copy_from_slice(&flow.pod_port.to_be_bytes());
    r[f::REMOTE_PORT].copy_from_slice(&flow.remote_port.to_be_bytes());
    r[f::NAT_PORT].copy_from_slice(&flow.nat_port.to_be_bytes());
    r[f::REMAINING].copy_from_slice(&remaining_secs(change.remaining).to_be_bytes());
    r
}

/// Checks the fields of a change record that can hold invalid values.
fn check_change(r: &[u8]) -> Result<(), SyncWireError> {
    use field::change as f;
    let op = matches!(r[f::OP], OP_UPSERT | OP_DELETE | OP_NODE);
    let proto = matches!(r[f::PROTO], 1 | 6 | 17);
    // TCP flows have a TCP state; UDP and ICMP mappings (and node records) are open.
    let state = match FlowState::from_u8(r[f::STATE]) {
        Some(FlowState::Open) => r[f::PROTO] != 6,
        Some(_) => r[f::PROTO] == 6,
        None => false,
    };
    if op && proto && state {
        Ok(())
    } else {
        Err(SyncWireError::Field)
    }
}

/// Reads one 32-byte change record.
pub fn parse_change(r: &[u8]) -> Result<Change, SyncWireError> {
    use field::change as f;
    if r.len() != CHANGE_LEN {
        return Err(SyncWireError::Length);
    }
    let op = match r[f::OP] {
        OP_UPSERT => Op::Upsert,
        OP_DELETE => Op::Delete,
        OP_NODE => {
            let mut mac = [0; 6];
            let mut tunnel_mac = [0; 6];
            mac.copy_from_slice(&r[f::MAC]);
            tunnel_mac.copy_from_slice(&r[f::TUNNEL_MAC]);
            return Ok(Change::node(ipv4(&r[f::NODE]), mac, tunnel_mac));
        }
        _ => return Err(SyncWireError::Field),
    };
    let proto = match r[f::PROTO] {
        1 => Proto::Icmp,
        6 => Proto::Tcp,
        17 => Proto::Udp,
        _ => return Err(SyncWireError::Field),
    };
    let state = FlowState::from_u8(r[f::STATE]).ok_or(SyncWireError::Field)?;
    Ok(Change {
        op,
        flow: Flow {
            node: ipv4(&r[f::NODE]),
            egress: ipv4(&r[f::EGRESS]),
            pod: ipv4(&r[f::POD]),
            remote: ipv4(&r[f::REMOTE]),
            pod_port: be_u16(&r[f::POD_PORT]),
            remote_port: be_u16(&r[f::REMOTE_PORT]),
            nat_port: be_u16(&r[f::NAT_PORT]),
            proto,
            state,
        },
        remaining: Duration::from_secs(u64::from(be_u32(&r[f::REMAINING]))),
    })
}

/// A remaining time as the whole seconds a record carries: rounded up, saturating.
pub fn remaining_secs(d: Duration) -> u32 {
    u32::try_from(d.total_micros().div_ceil(1_000_000)).unwrap_or(u32::MAX)
}

/// The 64-bit sequence number nearest to `near` whose low 32 bits are `low`.
pub fn expand(low: u32, near: u64) -> u64 {
    const SPAN: u64 = 1 << 32;
    const HALF: u64 = SPAN / 2;
    let candidate = (near & !(SPAN - 1)) | u64::from(low);
    if candidate.saturating_add(HALF) <= near {
        candidate.saturating_add(SPAN)
    } else if candidate > near.saturating_add(HALF) && candidate >= SPAN {
        candidate - SPAN
    } else {
        candidate
    }
}

/// The low 32 bits of a sequence number: what goes on the wire.
pub fn low32(seq: u64) -> u32 {
    seq as u32
}

fn ipv4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPOCH: u64 = 0x0123_4567_89ab_cdef;

    fn tcp_flow() -> Flow {
        Flow {
            node: Ipv4Addr::new(10, 0, 1, 5),
            egress: Ipv4Addr::new(192, 168, 1, 100),
            pod: Ipv4Addr::new(10, 244, 1, 7),
            remote: Ipv4Addr::new(93, 184, 216, 34),
            pod_port: 40000,
            remote_port: 443,
            nat_port: 20001,
            proto: Proto::Tcp,
            state: FlowState::TcpEstablished,
        }
    }

    fn upsert() -> Change {
        Change {
            op: Op::Upsert,
            flow: tcp_flow(),
            remaining: Duration::from_secs(7440),
        }
    }

    /// The header of a datagram of `kind` from epoch 0x0123456789abcdef, unsealed,
    /// session fields zero (as emitted, before sending).
    const fn header(kind: u8) -> [u8; 48] {
        let mut h = [0u8; 48];
        h[0] = b'E';
        h[1] = b'G';
        h[2] = b'S';
        h[3] = b'Y';
        h[4] = 2;
        h[5] = kind;
        let epoch = EPOCH.to_be_bytes();
        let mut i = 0;
        while i < 8 {
            h[8 + i] = epoch[i];
            i += 1;
        }
        h
    }

    const fn with<const N: usize>(kind: u8, body: &[u8]) -> [u8; N] {
        let h = header(kind);
        let mut d = [0u8; N];
        let mut i = 0;
        while i < 48 {
            d[i] = h[i];
            i += 1;
        }
        while i < N {
            d[i] = body[i - 48];
            i += 1;
        }
        d
    }

    /// A batch of seq 7 carrying the upsert of an established TCP flow with 7440 s left.
    const BATCH: [u8; 88] = with(
        1,
        &[
            0, 0, 0, 7, // seq
            0, 1, 0, 0, // flags, count, reserved
            1, 6, 3, 0, // upsert, TCP, established, reserved
            10, 0, 1, 5, // node
            192, 168, 1, 100, // egress
            10, 244, 1, 7, // pod
            93, 184, 216, 34, // remote
            0x9c, 0x40, 0x01, 0xbb, // pod port 40000, remote port 443
            0x4e, 0x21, 0, 0, // nat port 20001, reserved
            0, 0, 0x1d, 0x10, // 7440 s
        ],
    );

    const NACK: [u8; 64] = with(
        2,
        &[
            0, 0, 0, 0, 0, 0, 0, 0x2a, // stream epoch 42
            0, 0, 0, 3, 0, 0, 0, 9, // from 3 to 9
        ],
    );

    const HEARTBEAT: [u8; 60] = with(
        3,
        &[
            0, 1, 0, 0, // last seq 65536
            2, 0, 0, 0, // two claims, reserved
            10, 200, 11, 100, // VRID 10 at priority 200, VRID 11 at 100
        ],
    );

    /// The same heartbeat from a gateway that names itself "gw1".
    const NAMED_HEARTBEAT: [u8; 63] = with(
        3,
        &[
            0, 1, 0, 0, // last seq 65536
            2, 3, 0, 0, // two claims, a name of three bytes, reserved
            10, 200, 11, 100, // VRID 10 at priority 200, VRID 11 at 100
            b'g', b'w', b'1', // the name
        ],
    );

    const RESYNC_REQUEST: [u8; 56] = with(
        4,
        &[
            0, 0, 0, 0, 0, 0, 0, 0, // any stream
        ],
    );

    #[test]
    fn a_node_record_round_trips() {
        let node = Change::node(
            Ipv4Addr::new(192, 168, 1, 21),
            [2, 0, 0, 0, 0, 0x21],
            [2, 0, 0, 0, 1, 0x21],
        );
        let r = emit_change(&node);
        assert_eq!(r[0], 3);
        assert_eq!(&r[4..8], &[192, 168, 1, 21]);
        assert_eq!(&r[8..20], &[2, 0, 0, 0, 0, 0x21, 2, 0, 0, 0, 1, 0x21]);
        assert!(r[20..].iter().all(|b| *b == 0));
        assert_eq!(parse_change(&r), Ok(node));
    }

    #[test]
    fn sizes_fill_the_datagram() {
        assert_eq!(HEADER_LEN, 48);
        assert_eq!(BATCH_HEADER_LEN, 56);
        assert_eq!(MAX_CHANGES, 41);
        let sealed = BATCH_HEADER_LEN + MAX_CHANGES * CHANGE_LEN + TAG_LEN;
        assert_eq!(sealed, 1384);
        assert!(sealed <= MAX_DATAGRAM && sealed + CHANGE_LEN > MAX_DATAGRAM);
    }

    #[test]
    fn batch_fixture_parses_and_emits_the_same_bytes() {
        let (h, m) = Message::parse(&BATCH).expect("valid batch");
        assert_eq!((h.epoch, h.suite, h.kind), (EPOCH, Suite::None, 1));
        let Message::Batch(b) = m else {
            panic!("not a batch: {m:?}")
        };
        assert_eq!((b.seq, b.flags, b.len()), (7, BatchFlags::LIVE, 1));
        assert_eq!(b.changes().collect::<Vec<_>>(), vec![upsert()]);
        assert_eq!(m.to_vec(EPOCH), BATCH);
        // The record alone, from the change.
        assert_eq!(emit_change(&upsert())[..], BATCH[56..]);
    }

    #[test]
    fn control_fixtures_parse_and_emit_the_same_bytes() {
        let cases: [(&[u8], Message); 4] = [
            (
                &NACK,
                Message::Nack {
                    stream_epoch: 42,
                    from: 3,
                    to: 9,
                },
            ),
            (
                &HEARTBEAT,
                Message::Heartbeat {
                    last_seq: 65536,
                    claims: &[[10, 200], [11, 100]],
                    name: "",
                },
            ),
            (
                &NAMED_HEARTBEAT,
                Message::Heartbeat {
                    last_seq: 65536,
                    claims: &[[10, 200], [11, 100]],
                    name: "gw1",
                },
            ),
            (&RESYNC_REQUEST, Message::ResyncRequest { stream_epoch: 0 }),
        ];
        for (bytes, message) in cases {
            assert_eq!(
                Message::parse(bytes).map(|(h, m)| (h.epoch, m)),
                Ok((EPOCH, message))
            );
            assert_eq!(message.to_vec(EPOCH), bytes);
            assert_eq!(message.buffer_len(), bytes.len());
        }
    }

    #[test]
    fn a_full_resync_batch_round_trips_with_every_protocol_and_state() {
        let mut records = Vec::new();
        let mut changes = Vec::new();
        for (i, state) in FlowState::ALL.into_iter().enumerate() {
            let protos: &[Proto] = if state == FlowState::Open {
                &[Proto::Icmp, Proto::Udp]
            } else {
                &[Proto::Tcp]
            };
            for &proto in protos {
                let c = Change {
                    op: if i % 2 == 0 { Op::Upsert } else { Op::Delete },
                    flow: Flow {
                        proto,
                        state,
                        nat_port: 1000 + i as u16,
                        ..tcp_flow()
                    },
                    remaining: Duration::from_secs(u64::from(u32::MAX)),
                };
                records.extend_from_slice(&emit_change(&c));
                changes.push(c);
            }
        }
        let flags = BatchFlags {
            resync: true,
            resync_begin: true,
            resync_end: false,
        };
        let batch = Batch::new(u32::MAX, flags, &records).expect("valid records");
        let bytes = Message::Batch(batch).to_vec(1);
        assert_eq!(bytes[52], 0b011);
        let (h, m) = Message::parse(&bytes).expect("valid");
        assert_eq!(h.epoch, 1);
        let Message::Batch(b) = m else { panic!() };
        assert_eq!(b.flags, flags);
        assert_eq!(b.seq, u32::MAX);
        assert_eq!(b.changes().collect::<Vec<_>>(), changes);
    }

    #[test]
    fn a_name_that_cannot_be_carried_is_left_out() {
        let long = "g".repeat(MAX_NAME + 1);
        for name in [long.as_str(), "gw\u{7}1"] {
            let m = Message::Heartbeat {
                last_seq: 1,
                claims: &[],
                name,
            };
            let bytes = m.to_vec(EPOCH);
            assert_eq!(bytes.len(), HEARTBEAT_LEN);
            let parsed = Message::parse(&bytes).map(|(_, m)| m);
            assert!(matches!(parsed, Ok(Message::Heartbeat { name: "", .. })));
        }
        let longest = "é".repeat(MAX_NAME / 2);
        let m = Message::Heartbeat {
            last_seq: 1,
            claims: &[[1, 2]; 255],
            name: &longest,
        };
        assert_eq!(Message::parse(&m.to_vec(EPOCH)).map(|(_, m)| m), Ok(m));
    }

    #[test]
    fn remaining_time_rounds_up_and_saturates() {
        assert_eq!(remaining_secs(Duration::ZERO), 0);
        assert_eq!(remaining_secs(Duration::from_micros(1)), 1);
        assert_eq!(remaining_secs(Duration::from_secs(300)), 300);
        assert_eq!(remaining_secs(Duration::from_millis(300_001)), 301);
        assert_eq!(remaining_secs(Duration::MAX), u32::MAX);
    }

    #[test]
    fn each_malformation_is_refused_with_its_reason() {
        let refuse = |good: &[u8], f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.to_vec();
            f(&mut p);
            Message::parse(&p).map(|_| ())
        };
        use SyncWireError::*;
        assert_eq!(refuse(&BATCH, &|p| p[0] = b'X'), Err(BadMagic));
        assert_eq!(refuse(&BATCH, &|p| p[4] = 1), Err(Version));
        assert_eq!(refuse(&BATCH, &|p| p[5] = 0), Err(Kind));
        assert_eq!(refuse(&BATCH, &|p| p[5] = 5), Err(Kind));
        assert_eq!(refuse(&BATCH, &|p| p[6] = 2), Err(Field));
        assert_eq!(refuse(&BATCH, &|p| p[53] = 2), Err(Length));
        assert_eq!(refuse(&BATCH, &|p| p[53] = 42), Err(Length));
        assert_eq!(refuse(&BATCH, &|p| p.push(0)), Err(Length));
        assert_eq!(refuse(&BATCH, &|p| p.truncate(55)), Err(Length));
        assert_eq!(refuse(&BATCH, &|p| p[52] = 0b1000), Err(Field));
        assert_eq!(refuse(&BATCH, &|p| p[52] = 0b0010), Err(Field));
        assert_eq!(refuse(&BATCH, &|p| p[56] = 4), Err(Field));
        assert_eq!(refuse(&BATCH, &|p| p[57] = 2), Err(Field));
        assert_eq!(refuse(&BATCH, &|p| p[58] = 8), Err(Field));
        // A TCP flow in the open state, a UDP flow in a TCP state.
        assert_eq!(refuse(&BATCH, &|p| p[58] = 0), Err(Field));
        assert_eq!(refuse(&BATCH, &|p| p[57] = 17), Err(Field));
        assert_eq!(refuse(&NACK, &|p| p[59] = 10), Err(Field));
        assert_eq!(
            refuse(&NACK, &|p| {
                p.pop();
            }),
            Err(Length)
        );
        assert_eq!(refuse(&HEARTBEAT, &|p| p.push(0)), Err(Length));
        assert_eq!(refuse(&HEARTBEAT, &|p| p[52] = 3), Err(Length));
        assert_eq!(refuse(&HEARTBEAT, &|p| p[53] = 1), Err(Length));
        assert_eq!(refuse(&NAMED_HEARTBEAT, &|p| p.push(b'x')), Err(Length));
        // Not UTF-8; a control character.
        assert_eq!(refuse(&NAMED_HEARTBEAT, &|p| p[62] = 0xff), Err(Field));
        assert_eq!(refuse(&NAMED_HEARTBEAT, &|p| p[62] = b'\n'), Err(Field));
        assert_eq!(refuse(&RESYNC_REQUEST, &|p| p.truncate(52)), Err(Length));
        assert_eq!(refuse(&[], &|_| ()), Err(Length));
        // A node record parses whatever its flow fields held.
        assert!(
            refuse(&BATCH, &|p| {
                p[56] = 3;
                p[57] = 17;
                p[58] = 0;
            })
            .is_ok()
        );
        // Reserved bytes are ignored.
        assert!(refuse(&BATCH, &|p| p[7] = 0xff).is_ok());
        assert!(refuse(&BATCH, &|p| p[44] = 0xff).is_ok());
        assert!(refuse(&BATCH, &|p| p[55] = 0xff).is_ok());
        assert!(refuse(&BATCH, &|p| p[59] = 0xff).is_ok());
        // A nack range may wrap.
        let wrapped = Message::Nack {
            stream_epoch: 1,
            from: u32::MAX,
            to: 2,
        };
        assert_eq!(
            Message::parse(&wrapped.to_vec(5)).map(|(h, m)| (h.epoch, m)),
            Ok((5, wrapped))
        );
    }

    #[test]
    fn session_fields_are_written_at_their_place_and_read_back() {
        let mut d = RESYNC_REQUEST.to_vec();
        let session = Session {
            counter: 0x0102_0304_0506_0708,
            token: 0x1112_1314_1516_1718,
            echo: 0x2122_2324_2526_2728,
            primary: Ipv4Addr::new(192, 168, 1, 11),
        };
        set_session(&mut d, Suite::Aes256Gcm, &session);
        assert_eq!(d[6], 1);
        assert_eq!(d[16..24], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(d[24..32], [0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]);
        assert_eq!(d[32..40], [0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28]);
        assert_eq!(d[40..44], [192, 168, 1, 11]);
        assert_eq!(d[d.len() - 8..], RESYNC_REQUEST[48..]);
        let (h, m) = Message::parse(&d).expect("valid");
        assert_eq!(h.session, session);
        assert_eq!(h.suite, Suite::Aes256Gcm);
        assert_eq!(m, Message::ResyncRequest { stream_epoch: 0 });
        // The key is the epoch's, the nonce the counter.
        assert_eq!(d[NONCE_FIELDS][..8], EPOCH.to_be_bytes());
        assert_eq!(d[NONCE_FIELDS][8..], session.counter.to_be_bytes());
    }

    #[test]
    fn every_reason_has_its_own_label() {
        let labels: Vec<_> = SyncWireError::ALL.iter().map(|e| e.label()).collect();
        assert_eq!(labels, ["bad_magic", "version", "kind", "length", "field"]);
        for (i, e) in SyncWireError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
    }

    /// xorshift64*, seeded: reproducible bit flips.
    fn next(s: &mut u64) -> u64 {
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn parsing_never_panics_on_any_prefix_or_bit_flips() {
        let records: Vec<u8> = (0..MAX_CHANGES)
            .flat_map(|_| emit_change(&upsert()))
            .collect();
        let full =
            Message::Batch(Batch::new(9, BatchFlags::LIVE, &records).expect("valid")).to_vec(EPOCH);
        let goods: [&[u8]; 5] = [&BATCH, &NACK, &HEARTBEAT, &RESYNC_REQUEST, &full];
        for good in goods {
            for n in 0..good.len() {
                assert!(Message::parse(&good[..n]).is_err(), "prefix {n} accepted");
            }
            for i in 0..good.len() {
                for bit in 0..8 {
                    let mut p = good.to_vec();
                    p[i] ^= 1 << bit;
                    let _ = Message::parse(&p);
                }
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let good = goods[(next(&mut seed) % goods.len() as u64) as usize];
            let mut p = good.to_vec();
            for _ in 0..1 + next(&mut seed) % 4 {
                let bit = (next(&mut seed) % (8 * p.len() as u64)) as usize;
                p[bit / 8] ^= 1 << (bit % 8);
            }
            let len = (next(&mut seed) % (p.len() as u64 + 8)) as usize;
            p.resize(len, 0xa5);
            if let Ok((_, Message::Batch(b))) = Message::parse(&p) {
                assert_eq!(b.changes().count(), b.len());
            }
        }
    }

    #[test]
    fn sequence_numbers_expand_across_the_32_bit_wrap() {
        assert_eq!(expand(5, 1), 5);
        assert_eq!(expand(0, 1), 0);
        let near = (1u64 << 32) - 3;
        assert_eq!(expand(2, near), (1 << 32) + 2);
        assert_eq!(expand(u32::MAX, (1 << 32) + 1), (1 << 32) - 1);
        assert_eq!(expand(low32(near), near), near);
        for seq in [1u64, 1000, (1 << 32) - 1, 1 << 32, (7 << 32) + 12345] {
            for delta in [0u64, 1, 4096, 1 << 20] {
                assert_eq!(expand(low32(seq + delta), seq), seq + delta);
                if seq > delta {
                    assert_eq!(expand(low32(seq - delta), seq), seq - delta);
                }
            }
        }
    }
}
