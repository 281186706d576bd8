//! Copying a snapshot to another repository (the off-site copy of the
//! 3-2-1 rule) as a pipeline of the usual tools:
//!
//! ```text
//! bk-repo -r DEST chunks | bk-get -r SRC SNAPSHOT --stream --have - | bk-put -r DEST
//! ```
//!
//! The source writes the snapshot as a chunk stream whose header carries
//! the original identity, time and tags (bk-put keeps them); the receiving
//! bk-put encrypts under its own keys and deduplicates against its own
//! index. The destination first says which chunks it holds (`--have`):
//! a file all of whose chunks it holds is sent as its chunk ids, a chunk it
//! holds inside a changed file as a reference with its size, and only the
//! rest as data. Chunk boundaries stay the source's: a copy never re-chunks.

use crate::error::{Error, Result};
use crate::format::id::ChunkId;
use crate::format::index::Index;
use crate::format::wire::{self, Header, Kind, Record, Trailer};
use crate::store::listing::ListingRecords;
use crate::store::reader::ChunkReader;
use crate::store::repo::{Repository, Snapshot};
use std::collections::HashSet;
use std::io::{BufRead, Write};

/// What a copy stream carried.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopySummary {
    pub entries: u64,
    /// Chunks sent as data.
    pub chunks_sent: u64,
    pub bytes_sent: u64,
    /// Chunks the destination holds, sent as references.
    pub chunks_known: u64,
}

/// Reads the chunk ids a destination holds (`bk-repo chunks`: one hex id
/// per line).
pub fn read_have(input: impl BufRead) -> Result<HashSet<ChunkId>> {
    let mut have = HashSet::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| Error::io("--have", e))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let id = ChunkId::from_hex(line).ok_or_else(|| {
            Error::usage_hint(
                format!("--have line {}: {line:?} is not a chunk id", n + 1),
                "--have reads what `bk-repo -r DEST chunks` prints",
            )
        })?;
        have.insert(id);
    }
    Ok(have)
}

/// Every data chunk id of `repo`, for a copy's `--have`.
pub fn chunk_ids(repo: &Repository, out: &mut impl Write) -> Result<u64> {
    let files = repo.index_files()?;
    let mut seen = HashSet::new();
    for (_, file) in &files.live {
        crate::sys::check_interrupted()?;
        for (_, entries) in &file.packs {
            for e in entries {
                if e.kind == crate::format::pack::BlobKind::Data && seen.insert(e.id) {
                    writeln!(out, "{}", e.id).map_err(crate::error::stdout_error)?;
                }
            }
        }
    }
    out.flush().map_err(crate::error::stdout_error)?;
    Ok(seen.len() as u64)
}

/// Writes `snap` as a chunk stream for another repository's bk-put,
/// leaving out the data of chunks in `have`.
pub fn snapshot_stream(
    repo: &Repository,
    index: &Index,
    snap: &Snapshot,
    have: &HashSet<ChunkId>,
    out: &mut impl Write,
) -> Result<CopySummary> {
    let io = crate::error::stdout_error;
    let header = Header {
        v: wire::VERSION,
        source: snap.source.clone(),
        chunker: repo.chunker_name(),
        identity: Some(snap.identity.clone()),
        time: Some(snap.time),
        tags: snap.tags.clone(),
        xattrs: snap.xattrs,
        ..Header::default()
    };
    wire::write_record(out, &Record::Header(header)).map_err(io)?;
    let reader = ChunkReader::new(repo, index);
    let mut sent: HashSet<ChunkId> = HashSet::new();
    let mut summary = CopySummary::default();
    let mut trailer = Trailer {
        v: wire::VERSION,
        excluded: snap.excluded,
        ..Trailer::default()
    };
    for rec in ListingRecords::new(repo, index, &snap.listing) {
        crate::sys::check_interrupted()?;
        match rec? {
            Record::Entry(mut e) => {
                trailer.entries += 1;
                trailer.bytes += e.size;
                summary.entries += 1;
                let whole = e.kind != Kind::File || e.chunks.iter().all(|c| have.contains(c));
                if whole {
                    summary.chunks_known += e.chunks.len() as u64;
                    wire::write_record(out, &Record::Entry(e)).map_err(io)?;
                    continue;
                }
                let chunks = std::mem::take(&mut e.chunks);
                wire::write_record(out, &Record::Entry(e)).map_err(io)?;
                for id in chunks {
                    if sent.contains(&id) {
                        wire::write_chunk_ref(out, &id).map_err(io)?;
                        continue;
                    }
                    // A held chunk's length is read here, not sent there.
                    let data = reader.read(&id)?;
                    sent.insert(id);
                    if have.contains(&id) {
                        summary.chunks_known += 1;
                        wire::write_known_chunk(out, &id, data.len() as u32).map_err(io)?;
                    } else {
                        summary.chunks_sent += 1;
                        summary.bytes_sent += data.len() as u64;
                        wire::write_data(out, &id, &data).map_err(io)?;
                    }
                }
            }
            Record::Error(er) => {
                trailer.errors += 1;
                wire::write_record(out, &Record::Error(er)).map_err(io)?;
            }
            _ => {}
        }
    }
    wire::write_record(out, &Record::Trailer(trailer)).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(summary)
}
