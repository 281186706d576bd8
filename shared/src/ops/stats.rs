//! What a repository holds: objects by kind, chunks, packs, and what its
//! index costs in memory (the figure that bounds how large a repository a
//! small machine can back up into).

use crate::error::Result;
use crate::format::wire::{ObjectCount, StatsRecord, VERSION};
use crate::store::backend::ObjectKind;
use crate::store::repo::Repository;

pub fn stats(repo: &Repository) -> Result<StatsRecord> {
    let backend = repo.backend();
    let mut out = StatsRecord {
        v: VERSION,
        id: repo.config().id.clone(),
        ..StatsRecord::default()
    };
    for kind in ObjectKind::ALL {
        let list = backend.list(kind)?;
        let count = ObjectCount {
            count: list.len() as u64,
            bytes: list.iter().map(|o| o.size).sum(),
        };
        out.bytes += count.bytes;
        if kind == ObjectKind::Snapshot {
            out.snapshots = count.count;
        }
        out.objects
            .insert(format!("{kind:?}").to_lowercase(), count);
    }
    let index = repo.load_index()?;
    out.chunks = index.chunk_count() as u64;
    out.packs = index.pack_count() as u64;
    out.index_memory_bytes = index.memory_bytes() as u64;
    if out.chunks > 0 {
        let per_chunk = out.index_memory_bytes as f64 / out.chunks as f64;
        out.index_bytes_per_chunk = (per_chunk * 10.0).round() / 10.0;
    }
    Ok(out)
}
