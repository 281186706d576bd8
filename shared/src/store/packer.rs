//! Writing packs to the store as they fill (see [`crate::format::pack`] for
//! the format).

use crate::error::{Error, Result};
use crate::format::crypto::Keys;
use crate::format::id::{ChunkId, ObjectId};
use crate::format::pack::{trailer, BlobEntry, BlobKind};
use crate::store::backend::{Backend, ObjectKind, Staged};
use sha2::{Digest, Sha256};
use std::io::Write;

/// A pack written out blob by blob as it fills, to an object the backend
/// stages ([`crate::store::backend::Backend::stage`]): the same bytes as
/// [`PackBuilder`] produces, and on a local repository without holding them
/// in memory (a writer used to keep three 16 MiB packs alive: one filling,
/// two uploading). The name is hashed as the bytes go out.
pub struct PackStream<'a> {
    out: Box<dyn Staged + 'a>,
    hasher: Sha256,
    len: usize,
    entries: Vec<BlobEntry>,
}

impl std::fmt::Debug for PackStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackStream")
            .field("len", &self.len)
            .field("blobs", &self.entries.len())
            .finish()
    }
}

impl<'a> PackStream<'a> {
    /// A new pack of `kind` blobs, staged by `backend`. Staging in memory
    /// (S3) reserves a whole data pack up front (`pack_size` plus room for
    /// the last blob); metadata packs stay small.
    pub fn stage(backend: &'a dyn Backend, kind: BlobKind, pack_size: usize) -> Result<Self> {
        let size_hint = match kind {
            BlobKind::Data => pack_size + (1 << 20),
            BlobKind::Meta => 0,
        };
        Ok(PackStream::new(backend.stage(ObjectKind::Pack, size_hint)?))
    }

    pub fn new(out: Box<dyn Staged + 'a>) -> Self {
        PackStream {
            out,
            hasher: Sha256::new(),
            len: 0,
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, kind: BlobKind, id: ChunkId, sealed: &[u8], raw_len: u32) -> Result<()> {
        self.write(sealed)?;
        self.entries.push(BlobEntry {
            kind,
            id,
            offset: (self.len - sealed.len()) as u32,
            len: sealed.len() as u32,
            raw_len,
        });
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::storage("staged pack", e))?;
        self.hasher.update(bytes);
        self.len += bytes.len();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the sealed header; the pack is then ready to publish under
    /// its name.
    pub fn finish(mut self, keys: &Keys) -> Result<StreamedPack<'a>> {
        let trailer = trailer(keys, &self.entries);
        self.write(&trailer)?;
        Ok(StreamedPack {
            id: ObjectId(self.hasher.finalize().into()),
            object: self.out,
            len: self.len,
            entries: self.entries,
        })
    }
}

/// A finished [`PackStream`]: `object` is still to be published as `id`.
pub struct StreamedPack<'a> {
    pub id: ObjectId,
    pub object: Box<dyn Staged + 'a>,
    pub len: usize,
    pub entries: Vec<BlobEntry>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::MasterKey;
    use crate::format::pack::{blob_aad, read_header};
    use crate::store::backend::local::LocalBackend;

    #[test]
    fn a_streamed_pack_reads_back_like_a_built_one_and_an_abandoned_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = LocalBackend::new(dir.path().join("repo"));
        backend.create().unwrap();
        let keys = MasterKey::generate().derive();
        let mut p = PackStream::new(backend.stage(ObjectKind::Pack, 0).unwrap());
        let mut blobs = Vec::new();
        for i in 0..5u32 {
            let data = vec![i as u8; 300_000 + i as usize];
            let id = ChunkId::digest(&data);
            let sealed = keys.seal(&blob_aad(BlobKind::Data, &id), &data, Some(3));
            p.add(BlobKind::Data, id, &sealed, data.len() as u32)
                .unwrap();
            blobs.push((id, data));
        }
        let StreamedPack {
            id: name,
            object,
            len,
            entries,
        } = p.finish(&keys).unwrap();
        // Nothing is visible before publication.
        assert!(backend.list(ObjectKind::Pack).unwrap().is_empty());
        object.publish(&name.to_hex()).unwrap();
        let bytes = backend.get(ObjectKind::Pack, &name.to_hex()).unwrap();
        assert_eq!((bytes.len(), ObjectId::digest(&bytes)), (len, name));
        assert_eq!(read_header(&keys, "p", &bytes).unwrap(), entries);
        for (e, (id, data)) in entries.iter().zip(&blobs) {
            let blob = &bytes[e.offset as usize..(e.offset + e.len) as usize];
            assert_eq!(
                &keys.open(&blob_aad(BlobKind::Data, id), blob).unwrap(),
                data
            );
        }
        // A pack dropped before publication (a failed backup) leaves no
        // temp file behind, and tmp/ is empty after a publication too.
        let mut abandoned = PackStream::new(backend.stage(ObjectKind::Pack, 0).unwrap());
        abandoned
            .add(BlobKind::Data, blobs[0].0, &[1, 2, 3], 3)
            .unwrap();
        drop(abandoned);
        assert!(backend.incomplete().unwrap().is_empty());
        assert_eq!(backend.list(ObjectKind::Pack).unwrap().len(), 1);
    }
}
