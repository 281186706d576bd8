//! Garbage-collection objects in `gc/`: marks (packs scheduled for
//! deletion, with their index entries) and their arms (the writers a
//! sweep waits for). Readers need the marks' entries as much as the GC
//! does (`Repository::load_index`), so the objects live in the store; the
//! algorithm that writes and sweeps them is `ops::gc` (ARCHITECTURE §24).

use crate::error::{Error, Result};
use crate::format::crypto::Keys;
use crate::format::id::ObjectId;
use crate::format::index::IndexFile;
use crate::format::time::Timestamp;
use crate::store::backend::{check_name, Backend, ObjectInfo, ObjectKind, GC_ARM_PREFIX};
use crate::sys::parallel_map;
use serde::{Deserialize, Serialize};
use std::time::SystemTime;

pub const MARK_AAD: &[u8] = b"bk gc mark v1";
pub const ARM_AAD: &[u8] = b"bk gc arm v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkReason {
    /// No remaining snapshot refers to any chunk in the pack.
    Unreferenced,
    /// Its chunks still in use were copied into new packs.
    Repacked,
    /// No index object names the pack (left by a killed writer).
    Unindexed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarkedPack {
    pub id: ObjectId,
    pub size: u64,
    pub reason: MarkReason,
}

#[derive(Serialize, Deserialize)]
struct MarkHeader {
    v: u32,
    created: Timestamp,
    packs: Vec<MarkedPack>,
    superseded: Vec<ObjectId>,
}

/// Packs scheduled for deletion, with their index entries (for readers
/// and for recovery) and the index objects a compaction replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub created: Timestamp,
    pub packs: Vec<MarkedPack>,
    pub superseded: Vec<ObjectId>,
    pub entries: IndexFile,
}

impl Mark {
    pub fn encode(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&MarkHeader {
            v: 1,
            created: self.created,
            packs: self.packs.clone(),
            superseded: self.superseded.clone(),
        })
        .expect("serializable");
        let mut out = (header.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.entries.encode());
        out
    }

    pub fn decode(b: &[u8]) -> Option<Mark> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let header: MarkHeader = serde_json::from_slice(b.get(4..4 + n)?).ok()?;
        let entries = IndexFile::decode(&b[4 + n..])?;
        Some(Mark {
            created: header.created,
            packs: header.packs,
            superseded: header.superseded,
            entries,
        })
    }

    pub fn seal(&self, keys: &Keys) -> Vec<u8> {
        keys.seal(MARK_AAD, &self.encode(), Some(3))
    }
}

#[derive(Debug, Clone)]
pub struct StoredMark {
    pub name: String,
    pub mark: Mark,
}

/// A mark's arm: the writers its sweep waits for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Arm {
    pub v: u32,
    /// The name of the mark it arms.
    pub mark: String,
    /// Lock holder ids live when the arm's lock listing ran.
    pub waiting_for: Vec<String>,
    pub created: Timestamp,
}

impl Arm {
    /// The sealed arm and the name it is stored under (`arm-<sha256>`).
    pub fn seal(&self, keys: &Keys) -> (String, Vec<u8>) {
        let sealed = keys.seal(
            ARM_AAD,
            &serde_json::to_vec(self).expect("serializable"),
            None,
        );
        let name = format!("{GC_ARM_PREFIX}{}", ObjectId::digest(&sealed).to_hex());
        (name, sealed)
    }
}

#[derive(Debug, Clone)]
pub struct StoredArm {
    pub name: String,
    pub arm: Arm,
    /// Its age is measured from this, on the storage's clock.
    pub modified: Option<SystemTime>,
}

/// Every mark in the repository. A mark that disappears while being read
/// was swept meanwhile: its packs are deleted or back in the index.
pub fn load_marks(backend: &dyn Backend, keys: &Keys) -> Result<Vec<StoredMark>> {
    read_marks(backend, keys, &backend.list(ObjectKind::Gc)?)
}

/// The marks among `listed` (a listing of gc/ the caller took, arms and
/// other names aside), read as [`load_marks`] reads them.
pub fn read_marks(
    backend: &dyn Backend,
    keys: &Keys,
    listed: &[ObjectInfo],
) -> Result<Vec<StoredMark>> {
    let names: Vec<&String> = listed
        .iter()
        .map(|o| &o.name)
        .filter(|n| ObjectId::from_hex(n).is_some())
        .collect();
    let marks = parallel_map(&names, 4, |name| {
        let raw = match backend.get(ObjectKind::Gc, name) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        check_name(ObjectKind::Gc, name, &raw)?;
        let plain = keys
            .open(MARK_AAD, &raw)
            .map_err(|e| Error::damaged(ObjectKind::Gc, name.to_string(), e.to_string()))?;
        let mark = Mark::decode(&plain)
            .ok_or_else(|| Error::damaged(ObjectKind::Gc, name.to_string(), "malformed mark"))?;
        Ok(Some(StoredMark {
            name: (*name).clone(),
            mark,
        }))
    })?;
    Ok(marks.into_iter().flatten().collect())
}

/// Every arm in the repository; one that disappears while being read was
/// swept meanwhile.
pub fn load_arms(backend: &dyn Backend, keys: &Keys) -> Result<Vec<StoredArm>> {
    let mut out = Vec::new();
    for obj in backend.list(ObjectKind::Gc)? {
        if !obj.name.starts_with(GC_ARM_PREFIX) {
            continue;
        }
        let raw = match backend.get(ObjectKind::Gc, &obj.name) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        check_name(ObjectKind::Gc, &obj.name, &raw)?;
        let arm: Arm = keys
            .open(ARM_AAD, &raw)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or_else(|| Error::damaged(ObjectKind::Gc, obj.name.clone(), "unreadable arm"))?;
        out.push(StoredArm {
            name: obj.name,
            arm,
            modified: obj.modified,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::ChunkId;
    use crate::format::pack::{BlobEntry, BlobKind};

    #[test]
    fn mark_round_trip() {
        let keys = crate::format::crypto::MasterKey::generate().derive();
        let m = Mark {
            created: Timestamp::now(),
            packs: vec![MarkedPack {
                id: ObjectId::digest(b"p"),
                size: 10,
                reason: MarkReason::Repacked,
            }],
            superseded: vec![ObjectId::digest(b"i")],
            entries: IndexFile {
                supersedes: vec![],
                packs: vec![(
                    ObjectId::digest(b"p"),
                    vec![BlobEntry {
                        kind: BlobKind::Data,
                        id: ChunkId::digest(b"c"),
                        offset: 0,
                        len: 5,
                        raw_len: 4,
                    }],
                )],
            },
        };
        let sealed = m.seal(&keys);
        let plain = keys.open(MARK_AAD, &sealed).unwrap();
        assert_eq!(Mark::decode(&plain).unwrap(), m);
        assert!(Mark::decode(&plain[..plain.len() - 1]).is_none());
    }
}
