//! Authentication of sync datagrams: XChaCha20-Poly1305 under a key every gateway of the
//! group shares (`[sync].key_file`), from RustCrypto's `chacha20poly1305`.
//!
//! A sealed datagram is its [`wire`](super::wire) header in clear, authenticated as
//! associated data, then its body encrypted, then the 16-byte tag. The nonce is the
//! header's epoch and counter (the sender's boot id, random, and the number of the
//! datagram in that boot): unique for every datagram any gateway ever seals under the key,
//! as long as no two boots draw the same 64-bit epoch.
//!
//! The key is derived from the key file's bytes with HKDF-SHA256, so any file of at least
//! [`MIN_SECRET`] random bytes works (raw bytes, hex or base64 alike), and the key used on
//! the wire is bound to this protocol. A second, previous key is accepted on receipt while
//! a new key is rolled out; the shell counts its use.
//!
//! Nothing here decides freshness: replayed datagrams open fine. The session tokens and
//! the replay window of the `session` module refuse them.

use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use super::wire::{self, HEADER_LEN, TAG_LEN};

/// The fewest bytes a key file may hold: 256 bits when they are random.
pub const MIN_SECRET: usize = 32;

/// Domain separation for the derived key: another protocol or version using the same file
/// gets another key.
const INFO: &[u8] = b"egret flow sync v2 xchacha20poly1305";

/// Which key opened a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsed {
    Current,
    /// The previous key (`[sync].previous_key_file`): the sender has not moved to the
    /// current one yet.
    Previous,
}

/// The datagram does not authenticate under any key held here (forged, corrupted, or
/// sealed under another key). A unit error: a routine, counted refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

/// The keys of a gateway: the current one seals and opens, the previous one only opens.
#[derive(Clone)]
pub struct Keys {
    current: XChaCha20Poly1305,
    previous: Option<XChaCha20Poly1305>,
}

impl core::fmt::Debug for Keys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keys")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Keys derived from the key files' contents (at least [`MIN_SECRET`] bytes each; the
    /// config check refuses shorter files).
    pub fn derive(secret: &[u8], previous: Option<&[u8]>) -> Keys {
        Keys {
            current: cipher(secret),
            previous: previous.map(cipher),
        }
    }

    /// Seals the datagram in `buf`: a whole plaintext datagram whose header names the
    /// sealed suite. Encrypts the body in place and appends the tag.
    pub fn seal(&self, buf: &mut Vec<u8>) {
        if buf.len() < HEADER_LEN {
            return;
        }
        let nonce = nonce(buf);
        let (header, body) = buf.split_at_mut(HEADER_LEN);
        // Encryption only fails for bodies longer than ChaCha20's 256 GiB keystream.
        if let Ok(tag) = self
            .current
            .encrypt_inout_detached(&nonce, header, body.into())
        {
            buf.extend_from_slice(&tag);
        }
    }

    /// Opens a sealed datagram in place: checks the tag against the header and the body,
    /// and decrypts the body. Returns the plaintext datagram's length (the tag dropped).
    pub fn open(&self, buf: &mut [u8]) -> Result<(usize, KeyUsed), AuthError> {
        let Some(len) = buf.len().checked_sub(TAG_LEN).filter(|l| *l >= HEADER_LEN) else {
            return Err(AuthError);
        };
        let nonce = nonce(buf);
        let (datagram, tag) = buf.split_at_mut(len);
        let Ok(tag) = Tag::try_from(&tag[..]) else {
            return Err(AuthError);
        };
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        // A failed check leaves the body as it was, so the previous key can try again.
        if self
            .current
            .decrypt_inout_detached(&nonce, header, body.into(), &tag)
            .is_ok()
        {
            return Ok((len, KeyUsed::Current));
        }
        match &self.previous {
            Some(previous)
                if previous
                    .decrypt_inout_detached(&nonce, header, body.into(), &tag)
                    .is_ok() =>
            {
                Ok((len, KeyUsed::Previous))
            }
            _ => Err(AuthError),
        }
    }
}

fn cipher(secret: &[u8]) -> XChaCha20Poly1305 {
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, secret).expand(INFO, &mut key);
    let cipher = XChaCha20Poly1305::new(&key.into());
    key.fill(0);
    cipher
}

/// The nonce of a datagram: its epoch and counter, then zeros.
fn nonce(datagram: &[u8]) -> XNonce {
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(&datagram[wire::NONCE_FIELDS]);
    n.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::wire::{Message, Session, Suite};

    fn sealed_heartbeat(keys: &Keys, counter: u64) -> Vec<u8> {
        let mut d = Message::Heartbeat {
            last_seq: 7,
            claims: &[],
        }
        .to_vec(0xe1);
        wire::set_session(
            &mut d,
            Suite::XChaCha20Poly1305,
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
        let keys = Keys::derive(&[7; 32], None);
        let plain = {
            let mut d = sealed_heartbeat(&keys, 1);
            let (len, used) = keys.open(&mut d).expect("opens");
            assert_eq!(used, KeyUsed::Current);
            d.truncate(len);
            d
        };
        let sealed = sealed_heartbeat(&keys, 1);
        assert_eq!(sealed.len(), plain.len() + TAG_LEN);
        assert_eq!(sealed[..HEADER_LEN], plain[..HEADER_LEN]);
        assert_ne!(sealed[HEADER_LEN..plain.len()], plain[HEADER_LEN..]);
        // Another counter, another nonce: another ciphertext for the same body.
        assert_ne!(
            sealed_heartbeat(&keys, 2)[HEADER_LEN..],
            sealed[HEADER_LEN..]
        );
    }

    #[test]
    fn every_bit_of_header_body_and_tag_is_covered() {
        let keys = Keys::derive(b"0123456789abcdef0123456789abcdef", None);
        let good = sealed_heartbeat(&keys, 9);
        for i in 0..good.len() {
            let mut d = good.clone();
            d[i] ^= 0x10;
            assert_eq!(keys.open(&mut d), Err(AuthError), "byte {i} flipped");
        }
        for n in 0..good.len() {
            assert_eq!(keys.open(&mut good[..n].to_vec()), Err(AuthError));
        }
    }

    #[test]
    fn the_previous_key_opens_during_a_rotation_and_a_stranger_key_never() {
        let old = Keys::derive(&[1; 40], None);
        let rotating = Keys::derive(&[2; 32], Some(&[1; 40]));
        let new = Keys::derive(&[2; 32], None);
        let mut d = sealed_heartbeat(&old, 5);
        assert_eq!(
            rotating.open(&mut d.clone()).map(|r| r.1),
            Ok(KeyUsed::Previous)
        );
        assert_eq!(new.open(&mut d), Err(AuthError));
        let mut d = sealed_heartbeat(&rotating, 6);
        assert_eq!(new.open(&mut d).map(|r| r.1), Ok(KeyUsed::Current));
        // A file that differs in one byte is another key.
        let mut other = [2u8; 32];
        other[31] = 3;
        let mut d = sealed_heartbeat(&new, 7);
        assert_eq!(Keys::derive(&other, None).open(&mut d), Err(AuthError));
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let text = format!("{:?}", Keys::derive(&[0x41; 32], Some(&[0x42; 32])));
        assert_eq!(text, "Keys { previous: true, .. }");
    }
}
