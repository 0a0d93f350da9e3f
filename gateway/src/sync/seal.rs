//! Authentication of sync datagrams: AES-256-GCM (RustCrypto's `aes-gcm`, AES-NI and CLMUL
//! detected at run time) under keys derived from a secret every gateway of the group shares
//! (`[sync].key_file`).
//!
//! A sealed datagram is its [`wire`](super::wire) header in clear, authenticated as
//! associated data, then its body encrypted, then the 16-byte tag.
//!
//! **Keys and nonces.** The secret (the key file's bytes, at least [`MIN_SECRET`]) goes
//! through HKDF-SHA256 once; each sender's boot (its epoch, random) then gets a key of its
//! own, expanded from that with the epoch as context, and the nonce of a datagram is its
//! counter in that boot. So a nonce never repeats under a key: the counter only grows, and
//! two boots share a key only if they draw the same 64-bit epoch. A receiver derives the key
//! of a peer's epoch when that epoch's first datagram comes, and keeps the keys of epochs
//! that authenticated (a handful); a forged datagram in an unknown epoch costs it one
//! derivation (about a microsecond), like reading the datagram does.
//!
//! A second, previous secret is accepted on receipt while a new one is rolled out; the
//! shell counts its use.
//!
//! Nothing here decides freshness: replayed datagrams open fine. The session tokens and
//! the replay window of the `session` module refuse them.

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use super::wire::{self, HEADER_LEN, TAG_LEN};

/// The fewest bytes a key file may hold: 256 bits when they are random.
pub const MIN_SECRET: usize = 32;

/// Domain separation: another protocol or version using the same file gets other keys.
const INFO: &[u8] = b"egret flow sync v2 aes-256-gcm epoch ";

/// Keys of epochs kept per secret: the peers' current boots and our own.
const CACHED: usize = 8;

/// Which secret opened a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    Current,
    /// The previous secret (`[sync].previous_key_file`): the sender has not moved to the
    /// current one yet.
    Previous,
}

/// The datagram does not authenticate under any key held here (forged, corrupted, or
/// sealed under another secret). A unit error: a routine, counted refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

/// One secret: its HKDF state and the keys of the epochs met so far, latest first.
#[derive(Clone)]
struct Root {
    hkdf: Hkdf<Sha256>,
    epochs: Vec<(u64, Aes256Gcm)>,
}

impl Root {
    fn new(secret: &[u8]) -> Root {
        Root {
            hkdf: Hkdf::new(None, secret),
            epochs: Vec::with_capacity(CACHED),
        }
    }

    /// The key of `epoch`, derived.
    fn derive(&self, epoch: u64) -> Aes256Gcm {
        let mut info = [0u8; INFO.len() + 8];
        info[..INFO.len()].copy_from_slice(INFO);
        info[INFO.len()..].copy_from_slice(&epoch.to_be_bytes());
        let mut key = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
        let _ = self.hkdf.expand(&info, &mut key);
        let cipher = Aes256Gcm::new(&key.into());
        key.fill(0);
        cipher
    }

    /// The key of `epoch`, from the cache (moved to its front) or derived and cached.
    fn key(&mut self, epoch: u64) -> &Aes256Gcm {
        self.remember(epoch, None);
        &self.epochs[0].1
    }

    /// Puts `epoch`'s key at the front of the cache: `derived` when given, else found there
    /// or derived now.
    fn remember(&mut self, epoch: u64, derived: Option<Aes256Gcm>) {
        let entry = match self.epochs.iter().position(|(e, _)| *e == epoch) {
            Some(i) => self.epochs.remove(i),
            None => (epoch, derived.unwrap_or_else(|| self.derive(epoch))),
        };
        self.epochs.truncate(CACHED - 1);
        self.epochs.insert(0, entry);
    }

    /// Opens `buf` if it was sealed in `epoch` under this secret. A key derived for an
    /// epoch not met before is kept only when it opens the datagram.
    fn open(
        &mut self,
        epoch: u64,
        nonce: &Nonce<aes_gcm::aead::consts::U12>,
        header: &[u8],
        body: &mut [u8],
        tag: &Tag,
    ) -> bool {
        if let Some(i) = self.epochs.iter().position(|(e, _)| *e == epoch) {
            let opened = self.epochs[i]
                .1
                .decrypt_inout_detached(nonce, header, body.into(), tag)
                .is_ok();
            if opened {
                self.remember(epoch, None);
            }
            return opened;
        }
        let cipher = self.derive(epoch);
        let opened = cipher
            .decrypt_inout_detached(nonce, header, body.into(), tag)
            .is_ok();
        if opened {
            self.remember(epoch, Some(cipher));
        }
        opened
    }
}

/// The keys of a gateway: the current secret seals and opens, the previous one only opens.
#[derive(Clone)]
pub struct Keys {
    current: Root,
    previous: Option<Root>,
}

impl core::fmt::Debug for Keys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Keys from the key files' contents (at least [`MIN_SECRET`] bytes each; the config
    /// check refuses shorter files).
    pub fn derive(secret: &[u8], previous: Option<&[u8]>) -> Keys {
        Keys {
            current: Root::new(secret),
            previous: previous.map(Root::new),
        }
    }

    /// Seals the datagram in `buf`: a whole plaintext datagram whose header names the
    /// sealed suite, its sender's epoch and its counter. Encrypts the body in place and
    /// appends the tag.
    pub fn seal(&mut self, buf: &mut Vec<u8>) {
        if buf.len() < HEADER_LEN {
            return;
        }
        let (epoch, nonce) = nonce(buf);
        let (header, body) = buf.split_at_mut(HEADER_LEN);
        // Encryption only fails for bodies longer than GCM's 64 GiB.
        if let Ok(tag) = self
            .current
            .key(epoch)
            .encrypt_inout_detached(&nonce, header, body.into())
        {
            buf.extend_from_slice(&tag);
        }
    }

    /// Opens a sealed datagram in place: checks the tag against the header and the body,
    /// and decrypts the body. Returns the plaintext datagram's length (the tag dropped).
    pub fn open(&mut self, buf: &mut [u8]) -> Result<(usize, KeyUsed), AuthError> {
        let Some(len) = buf.len().checked_sub(TAG_LEN).filter(|l| *l >= HEADER_LEN) else {
            return Err(AuthError);
        };
        let (epoch, nonce) = nonce(buf);
        let (datagram, tag) = buf.split_at_mut(len);
        let Ok(tag) = Tag::try_from(&tag[..]) else {
            return Err(AuthError);
        };
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        // A failed check leaves the body as it was, so the previous secret can try again.
        if self.current.open(epoch, &nonce, header, body, &tag) {
            return Ok((len, KeyUsed::Current));
        }
        let previous = self.previous.as_mut();
        if previous.is_some_and(|p| p.open(epoch, &nonce, header, body, &tag)) {
            return Ok((len, KeyUsed::Previous));
        }
        Err(AuthError)
    }
}

/// A datagram's epoch, and its nonce: its counter, then zeros.
fn nonce(datagram: &[u8]) -> (u64, Nonce<aes_gcm::aead::consts::U12>) {
    let fields = &datagram[wire::NONCE_FIELDS];
    let mut epoch = [0u8; 8];
    epoch.copy_from_slice(&fields[..8]);
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&fields[8..16]);
    (u64::from_be_bytes(epoch), n.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::wire::{Message, Session, Suite};

    fn sealed_heartbeat(keys: &mut Keys, epoch: u64, counter: u64) -> Vec<u8> {
        let mut d = Message::Heartbeat {
            last_seq: 7,
            claims: &[],
            name: "gw1",
        }
        .to_vec(epoch);
        wire::set_session(
            &mut d,
            Suite::Aes256Gcm,
            &Session {
                counter,
                token: 3,
                echo: 4,
                primary: core::net::Ipv4Addr::new(192, 168, 1, 11),
            },
        );
        keys.seal(&mut d);
        d
    }

    #[test]
    fn a_sealed_datagram_opens_to_the_same_bytes_and_hides_its_body() {
        let mut keys = Keys::derive(&[7; 32], None);
        let plain = {
            let mut d = sealed_heartbeat(&mut keys, 0xe1, 1);
            let (len, used) = keys.open(&mut d).expect("opens");
            assert_eq!(used, KeyUsed::Current);
            d.truncate(len);
            d
        };
        let sealed = sealed_heartbeat(&mut keys, 0xe1, 1);
        assert_eq!(sealed.len(), plain.len() + TAG_LEN);
        assert_eq!(sealed[..HEADER_LEN], plain[..HEADER_LEN]);
        assert_ne!(sealed[HEADER_LEN..plain.len()], plain[HEADER_LEN..]);
        // Another counter, or another epoch: another ciphertext for the same body.
        assert_ne!(
            sealed_heartbeat(&mut keys, 0xe1, 2)[HEADER_LEN..],
            sealed[HEADER_LEN..]
        );
        assert_ne!(
            sealed_heartbeat(&mut keys, 0xe2, 1)[HEADER_LEN..],
            sealed[HEADER_LEN..]
        );
    }

    #[test]
    fn every_bit_of_header_body_and_tag_is_covered() {
        let mut keys = Keys::derive(b"0123456789abcdef0123456789abcdef", None);
        let good = sealed_heartbeat(&mut keys, 0xe1, 9);
        for i in 0..good.len() {
            let mut d = good.clone();
            d[i] ^= 0x10;
            assert_eq!(keys.open(&mut d), Err(AuthError), "byte {i} flipped");
        }
        for n in 0..good.len() {
            assert_eq!(keys.open(&mut good[..n].to_vec()), Err(AuthError));
        }
        assert!(keys.open(&mut good.clone()).is_ok());
    }

    #[test]
    fn the_previous_secret_opens_during_a_rotation_and_a_stranger_secret_never() {
        let mut old = Keys::derive(&[1; 40], None);
        let mut rotating = Keys::derive(&[2; 32], Some(&[1; 40]));
        let mut new = Keys::derive(&[2; 32], None);
        let mut d = sealed_heartbeat(&mut old, 5, 5);
        assert_eq!(
            rotating.open(&mut d.clone()).map(|r| r.1),
            Ok(KeyUsed::Previous)
        );
        assert_eq!(new.open(&mut d), Err(AuthError));
        let mut d = sealed_heartbeat(&mut rotating, 6, 6);
        assert_eq!(new.open(&mut d).map(|r| r.1), Ok(KeyUsed::Current));
        // A file that differs in one byte is another secret.
        let mut other = [2u8; 32];
        other[31] = 3;
        let mut d = sealed_heartbeat(&mut new, 7, 7);
        assert_eq!(Keys::derive(&other, None).open(&mut d), Err(AuthError));
    }

    #[test]
    fn forged_epochs_never_push_a_peers_key_out_of_the_cache() {
        let mut sender = Keys::derive(&[9; 32], None);
        let mut receiver = Keys::derive(&[9; 32], None);
        let mut stranger = Keys::derive(&[8; 32], None);
        assert!(
            receiver
                .open(&mut sealed_heartbeat(&mut sender, 42, 1))
                .is_ok()
        );
        for epoch in 1000..1100 {
            let mut forged = sealed_heartbeat(&mut stranger, epoch, 1);
            assert_eq!(receiver.open(&mut forged), Err(AuthError));
        }
        assert_eq!(receiver.current.epochs.len(), 1);
        assert_eq!(receiver.current.epochs[0].0, 42);
        // Epochs that authenticate are kept, the latest first, a handful at most.
        for epoch in 0..20 {
            assert!(
                receiver
                    .open(&mut sealed_heartbeat(&mut sender, epoch, 1))
                    .is_ok()
            );
        }
        let kept: Vec<u64> = receiver.current.epochs.iter().map(|(e, _)| *e).collect();
        assert_eq!(kept, (12..20).rev().collect::<Vec<_>>());
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let text = format!("{:?}", Keys::derive(&[0x41; 32], Some(&[0x42; 32])));
        assert_eq!(text, "Keys { previous: true, .. }");
    }
}
