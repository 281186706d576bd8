//! Authenticated encryption of everything bk stores.
//!
//! One random 256-bit master key per repository, wrapped by age in each key
//! file (see [`crate::store::keys`]). Sub-keys are derived with HKDF-SHA256 so each
//! purpose has its own key:
//!
//! * `data`: AES-256-GCM for blobs, index objects, snapshots and locks.
//!   Chosen by measurement: with AES-NI/VAES it runs several GB/s per core,
//!   faster than ChaCha20-Poly1305 here and never the pipeline's bottleneck.
//!   Nonces are random 96-bit values; the documented bound is 2^32 sealed
//!   messages per repository key (at 1 MiB chunks, petabytes of unique data).
//! * `mac`: HMAC-SHA256 that authenticates the plaintext config.
//! * `gear`: the seed of the repository's keyed chunker.
//!
//! Every sealed message binds associated data (a chunk id, or the object
//! kind) so a blob or object cannot be swapped for another one unnoticed.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed message adds to its plaintext (nonce, tag, format byte).
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN + 1;

thread_local! {
    /// One zstd context per thread and level. Creating a context per call
    /// cost 8% of bk-put's CPU on a tree of small files (perf, 117k files).
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress_into(payload: &[u8], out: &mut [u8], level: i32) -> Option<usize> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, comp) = c.as_mut()?;
        comp.compress_to_buffer(payload, out).ok()
    })
}

fn decompress(frame: &[u8], size: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("set above").decompress(frame, size)
    })
}

const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;

/// The repository master key. Never written anywhere unwrapped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        MasterKey(k)
    }

    pub fn from_bytes(b: [u8; 32]) -> Self {
        MasterKey(b)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn derive(&self) -> Keys {
        let hk = Hkdf::<Sha256>::new(Some(b"bk repository v1"), &self.0);
        let mut data = [0u8; 32];
        let mut mac = [0u8; 32];
        let mut gear = [0u8; 32];
        hk.expand(b"bk data key", &mut data)
            .expect("32 bytes is a valid HKDF length");
        hk.expand(b"bk config mac key", &mut mac)
            .expect("valid length");
        hk.expand(b"bk chunker gear seed", &mut gear)
            .expect("valid length");
        let keys = Keys {
            cipher: LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, &data).expect("32 bytes is an AES-256 key"),
            ),
            mac_key: mac,
            gear_seed: gear,
        };
        data.zeroize();
        keys
    }
}

/// Working keys derived from the master key.
#[derive(Clone)]
pub struct Keys {
    /// ring's AES-256-GCM: 6.0 GB/s per core here against 1.25 GB/s for
    /// the aes-gcm crate (VAES + VPCLMULQDQ assembly), same wire format,
    /// and 3.2 GB/s for aws-lc-rs (ARCHITECTURE.md §6), which is why ring
    /// is built beside the aws-lc the S3 client needs.
    cipher: LessSafeKey,
    mac_key: [u8; 32],
    pub gear_seed: [u8; 32],
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.mac_key.zeroize();
        self.gear_seed.zeroize();
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(<redacted>)")
    }
}

/// Why opening a sealed message failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    TooShort,
    UnknownFormat(u8),
    Authentication,
    Decompress(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::TooShort => f.write_str("truncated (shorter than its encryption envelope)"),
            OpenError::UnknownFormat(b) => write!(f, "unknown content format {b}"),
            OpenError::Authentication => f.write_str(
                "authentication failed (corrupt, or not sealed by this repository's key)",
            ),
            OpenError::Decompress(e) => write!(f, "decompression failed: {e}"),
        }
    }
}

impl Keys {
    /// Encrypts `payload` (compressing it first when `level` is set and it
    /// pays off) bound to `aad`. Output: nonce ‖ ciphertext ‖ tag, where the
    /// first plaintext byte says whether the rest is zstd.
    pub fn seal(&self, aad: &[u8], payload: &[u8], level: Option<i32>) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + SEAL_OVERHEAD);
        self.seal_into(aad, payload, level, &mut out);
        out
    }

    /// [`Keys::seal`] into a buffer the caller recycles (its contents are
    /// replaced): a backup seals a chunk per megabyte, and fresh buffers
    /// that size cost a page fault per 4 KiB.
    pub fn seal_into(&self, aad: &[u8], payload: &[u8], level: Option<i32>, out: &mut Vec<u8>) {
        out.clear();
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        out.extend_from_slice(&nonce);
        out.push(FLAG_RAW);
        let mut stored_raw = true;
        if let Some(level) = level {
            let bound = zstd::zstd_safe::compress_bound(payload.len());
            out.resize(NONCE_LEN + 1 + bound, 0);
            if let Some(n) = compress_into(payload, &mut out[NONCE_LEN + 1..], level) {
                // Only keep compression that saves at least 1/64.
                if n + n / 64 < payload.len() {
                    out.truncate(NONCE_LEN + 1 + n);
                    out[NONCE_LEN] = FLAG_ZSTD;
                    stored_raw = false;
                }
            }
        }
        if stored_raw {
            out.truncate(NONCE_LEN + 1);
            out.extend_from_slice(payload);
        }
        let tag = self
            .cipher
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[NONCE_LEN..],
            )
            .expect("AES-GCM accepts messages below 64 GiB");
        out.extend_from_slice(tag.as_ref());
    }

    /// Reverses [`Keys::seal`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError::TooShort);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let mut buf = rest.to_vec();
        let plain_len = self
            .cipher
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| OpenError::Authentication)?
            .len();
        buf.truncate(plain_len);
        match buf[0] {
            FLAG_RAW => {
                buf.remove(0);
                Ok(buf)
            }
            FLAG_ZSTD => {
                let size = zstd::zstd_safe::get_frame_content_size(&buf[1..])
                    .ok()
                    .flatten()
                    .ok_or_else(|| OpenError::Decompress("frame without content size".into()))?;
                if size > 1 << 32 {
                    return Err(OpenError::Decompress(format!("implausible size {size}")));
                }
                decompress(&buf[1..], size as usize)
                    .map_err(|e| OpenError::Decompress(e.to_string()))
            }
            other => Err(OpenError::UnknownFormat(other)),
        }
    }

    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key length");
        m.update(data);
        m.finalize().into_bytes().into()
    }

    pub fn verify_mac(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).expect("any key length");
        m.update(data);
        m.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sealed by the aes-gcm crate before the cipher moved to ring: old
    /// repositories must still open.
    #[test]
    fn regression_ring_opens_what_aes_gcm_sealed() {
        let keys = MasterKey::from_bytes([0x42; 32]).derive();
        let sealed = hex::decode(
            "090909090909090909090909fef14f802030c3964f1cdde171e61dd5297c0876\
             580dd9bd903fc699cd79d7a9a8381660e702761c6c0411b2fd2c3489b4",
        )
        .unwrap();
        assert_eq!(
            keys.open(b"bk-kat", &sealed).unwrap(),
            b"sealed before the switch to ring"
        );
        assert_eq!(
            keys.open(b"bk-kaT", &sealed),
            Err(OpenError::Authentication)
        );
    }

    #[test]
    fn seal_open_round_trip_with_and_without_compression() {
        let keys = MasterKey::generate().derive();
        let text = b"hello hello hello hello hello hello hello hello".repeat(100);
        for level in [None, Some(3)] {
            let sealed = keys.seal(b"aad", &text, level);
            assert_eq!(keys.open(b"aad", &sealed).unwrap(), text);
        }
        assert!(keys.seal(b"a", &text, Some(3)).len() < text.len() / 4);
        assert_eq!(
            keys.open(b"a", &keys.seal(b"a", b"", Some(3))).unwrap(),
            b""
        );
    }

    #[test]
    fn tampering_and_wrong_aad_and_wrong_key_fail() {
        let keys = MasterKey::generate().derive();
        let mut sealed = keys.seal(b"chunk-1", b"payload", Some(3));
        assert_eq!(
            keys.open(b"chunk-2", &sealed),
            Err(OpenError::Authentication)
        );
        let other = MasterKey::generate().derive();
        assert_eq!(
            other.open(b"chunk-1", &sealed),
            Err(OpenError::Authentication)
        );
        let mid = sealed.len() / 2;
        sealed[mid] ^= 1;
        assert_eq!(
            keys.open(b"chunk-1", &sealed),
            Err(OpenError::Authentication)
        );
        assert_eq!(
            keys.open(b"chunk-1", &sealed[..5]),
            Err(OpenError::TooShort)
        );
    }

    #[test]
    fn mac_verifies() {
        let keys = MasterKey::generate().derive();
        let tag = keys.mac(b"config");
        assert!(keys.verify_mac(b"config", &tag));
        assert!(!keys.verify_mac(b"config2", &tag));
    }
}
