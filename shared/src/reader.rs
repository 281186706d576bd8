//! Reading chunks with few storage requests.
//!
//! Restores and listings read chunks in roughly the order bk-put packed
//! them, so neighbouring blobs sit side by side in the same pack. One
//! request per blob costs a round trip each on S3 (a tree of 100k small
//! files became 100k GETs); on backends that say so
//! ([`crate::backend::Backend::read_window`]) a read fetches a window of the
//! pack starting at the blob and later reads are served from the windows
//! kept in memory (bounded). Local reads go straight to the blob.
//! Every blob is still authenticated and re-hashed when it is served.

use crate::backend::ObjectKind;
use crate::error::{Error, Result};
use crate::id::{ChunkId, ObjectId};
use crate::index::{BlobLocation, Index};
use crate::repo::Repository;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Blobs this small are read through windows; larger ones (most of a big
/// file's chunks) are worth a request of their own, which keeps memory low.
const SMALL_BLOB: u64 = 512 * 1024;
/// Windows kept (memory bound: MAX_WINDOWS × the backend's window).
const MAX_WINDOWS: usize = 8;

struct Window {
    pack: ObjectId,
    start: u64,
    data: Arc<Vec<u8>>,
}

/// A chunk reader shared by the threads of one restore or listing.
pub struct ChunkReader<'a> {
    repo: &'a Repository,
    index: &'a Index,
    windows: Mutex<VecDeque<Window>>,
}

impl std::fmt::Debug for ChunkReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkReader")
    }
}

impl<'a> ChunkReader<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index) -> Self {
        ChunkReader {
            repo,
            index,
            windows: Mutex::new(VecDeque::new()),
        }
    }

    pub fn repo(&self) -> &'a Repository {
        self.repo
    }

    pub fn index(&self) -> &'a Index {
        self.index
    }

    fn cached(&self, loc: &BlobLocation) -> Option<Vec<u8>> {
        let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let (off, len) = (loc.offset as u64, loc.len as u64);
        w.iter().rev().find_map(|win| {
            (win.pack == loc.pack
                && win.start <= off
                && off + len <= win.start + win.data.len() as u64)
                .then(|| {
                    let s = (off - win.start) as usize;
                    win.data[s..s + len as usize].to_vec()
                })
        })
    }

    /// The chunk's plaintext, authenticated and re-hashed.
    pub fn read(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let loc = self.index.get(id).ok_or_else(|| {
            Error::integrity(format!("chunk {id}"), "not in any index (missing data)")
        })?;
        let window = match self.repo.backend().read_window() {
            Some(w) if (loc.len as u64) < SMALL_BLOB => w,
            _ => return self.repo.read_blob(id, &loc),
        };
        let pack = loc.pack.to_hex();
        let sealed = match self.cached(&loc) {
            Some(s) => s,
            None => {
                let data = self.repo.backend().get_range_upto(
                    ObjectKind::Pack,
                    &pack,
                    loc.offset as u64,
                    window,
                )?;
                if data.len() < loc.len as usize {
                    // Short pack: let the direct read report it properly.
                    return self.repo.read_blob(id, &loc);
                }
                let blob = data[..loc.len as usize].to_vec();
                let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
                if w.len() >= MAX_WINDOWS {
                    w.pop_front();
                }
                w.push_back(Window {
                    pack: loc.pack,
                    start: loc.offset as u64,
                    data: Arc::new(data),
                });
                blob
            }
        };
        match self.repo.open_blob(id, loc.kind, &pack, &sealed) {
            Ok(d) => Ok(d),
            // A damaged window (or transfer): read this blob directly, which
            // retries once and reports the object if it is really damaged.
            Err(Error::Integrity { .. }) => {
                self.forget(&loc.pack);
                self.repo.read_blob(id, &loc)
            }
            Err(e) => Err(e),
        }
    }

    fn forget(&self, pack: &ObjectId) {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|w| w.pack != *pack);
    }
}
