//! Pack files: many sealed blobs in one storage object.
//!
//! ```text
//! blob_0 ‖ blob_1 ‖ … ‖ blob_n-1 ‖ sealed header ‖ header length (u32 LE) ‖ "BKP1"
//! ```
//!
//! Each blob is sealed on its own (AAD: blob kind and chunk id) so a restore
//! can fetch and authenticate one chunk with a ranged read. The header lists
//! every blob (kind, id, offset, stored and raw length) and is itself sealed,
//! so the storage owner sees only the pack's total size: chunk boundaries,
//! and with them chunk-size fingerprints, stay hidden. The index repeats
//! the header so writers never need to read packs; the header lets
//! `bk-verify`/repair rebuild the index from packs alone.

use crate::error::{Error, Result};
use crate::format::crypto::Keys;
use crate::format::id::{ChunkId, ObjectId};

pub const PACK_MAGIC: &[u8; 4] = b"BKP1";
const HEADER_AAD: &[u8] = b"bk pack header v1";
const ENTRY_LEN: usize = 1 + 32 + 4 + 4 + 4;

/// What a blob holds: file content, or listing (metadata) bytes. They are
/// kept in separate packs so metadata reads never download file data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobKind {
    Data = 0,
    Meta = 1,
}

impl BlobKind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Meta),
            _ => None,
        }
    }
}

pub fn blob_aad(kind: BlobKind, id: &ChunkId) -> [u8; 33] {
    let mut a = [0u8; 33];
    a[0] = kind as u8;
    a[1..].copy_from_slice(id.as_bytes());
    a
}

/// Where one blob lives inside its pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    pub kind: BlobKind,
    pub id: ChunkId,
    pub offset: u32,
    pub len: u32,
    pub raw_len: u32,
}

pub fn encode_entries(entries: &[BlobEntry], out: &mut Vec<u8>) {
    for e in entries {
        out.push(e.kind as u8);
        out.extend_from_slice(e.id.as_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
    }
}

pub fn decode_entries(mut b: &[u8], count: usize) -> Option<(Vec<BlobEntry>, &[u8])> {
    if b.len() < count.checked_mul(ENTRY_LEN)? {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let kind = BlobKind::from_u8(b[0])?;
        let id = ChunkId(b[1..33].try_into().ok()?);
        let u = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        out.push(BlobEntry {
            kind,
            id,
            offset: u(33),
            len: u(37),
            raw_len: u(41),
        });
        b = &b[ENTRY_LEN..];
    }
    Some((out, b))
}

/// Accumulates sealed blobs until the pack is big enough to upload.
#[derive(Debug, Default)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl PackBuilder {
    pub fn with_capacity(cap: usize) -> Self {
        PackBuilder {
            buf: Vec::with_capacity(cap),
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, kind: BlobKind, id: ChunkId, sealed: &[u8], raw_len: u32) {
        self.entries.push(BlobEntry {
            kind,
            id,
            offset: self.buf.len() as u32,
            len: sealed.len() as u32,
            raw_len,
        });
        self.buf.extend_from_slice(sealed);
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seals the header and returns the pack's name, bytes and entries.
    pub fn finish(mut self, keys: &Keys) -> (ObjectId, Vec<u8>, Vec<BlobEntry>) {
        let trailer = trailer(keys, &self.entries);
        self.buf.extend_from_slice(&trailer);
        let id = ObjectId::digest(&self.buf);
        (id, self.buf, self.entries)
    }
}

/// The sealed header, its length and the magic that end every pack.
/// The sealed header, its length and the magic that end every pack.
pub fn trailer(keys: &Keys, entries: &[BlobEntry]) -> Vec<u8> {
    let mut header = Vec::with_capacity(4 + entries.len() * ENTRY_LEN);
    header.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    encode_entries(entries, &mut header);
    let mut out = keys.seal(HEADER_AAD, &header, Some(3));
    let sealed_len = out.len() as u32;
    out.extend_from_slice(&sealed_len.to_le_bytes());
    out.extend_from_slice(PACK_MAGIC);
    out
}

/// Reads a pack's own header (for verify and index rebuild).
pub fn read_header(keys: &Keys, name: &str, pack: &[u8]) -> Result<Vec<BlobEntry>> {
    let bad = |m: &str| {
        Error::damaged(
            crate::layout::ObjectKind::Pack,
            name.to_string(),
            m.to_string(),
        )
    };
    if pack.len() < 8 || &pack[pack.len() - 4..] != PACK_MAGIC {
        return Err(bad("not a bk pack (missing trailer)"));
    }
    let hlen =
        u32::from_le_bytes(pack[pack.len() - 8..pack.len() - 4].try_into().unwrap()) as usize;
    if hlen + 8 > pack.len() {
        return Err(bad("header length out of range"));
    }
    let start = pack.len() - 8 - hlen;
    let header = keys
        .open(HEADER_AAD, &pack[start..pack.len() - 8])
        .map_err(|e| bad(&format!("header: {e}")))?;
    if header.len() < 4 {
        return Err(bad("header too short"));
    }
    let count = u32::from_le_bytes(header[..4].try_into().unwrap()) as usize;
    let (entries, rest) =
        decode_entries(&header[4..], count).ok_or_else(|| bad("header truncated"))?;
    if !rest.is_empty() {
        return Err(bad("header has trailing bytes"));
    }
    if entries
        .iter()
        .any(|e| e.offset as usize + e.len as usize > start)
    {
        return Err(bad("blob outside the pack"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::MasterKey;

    #[test]
    fn pack_round_trip_and_header_authentication() {
        let keys = MasterKey::generate().derive();
        let mut b = PackBuilder::default();
        let mut ids = Vec::new();
        for i in 0..10u32 {
            let data = vec![i as u8; 1000 + i as usize];
            let id = ChunkId::digest(&data);
            let sealed = keys.seal(&blob_aad(BlobKind::Data, &id), &data, Some(3));
            b.add(BlobKind::Data, id, &sealed, data.len() as u32);
            ids.push((id, data));
        }
        let (name, bytes, entries) = b.finish(&keys);
        assert_eq!(name, ObjectId::digest(&bytes));
        let header = read_header(&keys, "p", &bytes).unwrap();
        assert_eq!(header, entries);
        for (e, (id, data)) in header.iter().zip(&ids) {
            let blob = &bytes[e.offset as usize..(e.offset + e.len) as usize];
            assert_eq!(
                &keys.open(&blob_aad(BlobKind::Data, id), blob).unwrap(),
                data
            );
        }
        let mut bad = bytes.clone();
        let n = bad.len();
        bad[n - 20] ^= 1;
        assert!(read_header(&keys, "p", &bad).is_err());
        assert!(read_header(&keys, "p", &bytes[..n - 1]).is_err());
    }
}
