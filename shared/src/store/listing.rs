//! Reading a snapshot's listing back: its metadata chunks, fetched one at a
//! time, concatenated into the JSON-lines they were cut from.

use crate::error::Result;
use crate::format::id::ChunkId;
use crate::format::index::Index;
use crate::format::wire::{Entry, Record, RecordReader};
use crate::store::repo::Repository;
use std::io::{BufReader, Read};

/// A `Read` over the concatenation of chunks, fetched lazily.
pub struct ChunkStream<'a> {
    reader: crate::store::reader::ChunkReader<'a>,
    ids: &'a [ChunkId],
    next: usize,
    cur: Vec<u8>,
    pos: usize,
}

impl<'a> ChunkStream<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index, ids: &'a [ChunkId]) -> Self {
        ChunkStream {
            reader: crate::store::reader::ChunkReader::new(repo, index),
            ids,
            next: 0,
            cur: Vec::new(),
            pos: 0,
        }
    }
}

impl std::fmt::Debug for ChunkStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkStream({}/{})", self.next, self.ids.len())
    }
}

impl Read for ChunkStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            let Some(id) = self.ids.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.cur = self
                .reader
                .read(id)
                .map_err(|e| std::io::Error::other(ListingError(e)))?;
            self.pos = 0;
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Carries a repository error through `std::io::Read`.
#[derive(Debug)]
struct ListingError(crate::Error);

impl std::fmt::Display for ListingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ListingError {}

/// Iterates the records of a snapshot listing.
pub struct ListingRecords<'a> {
    reader: RecordReader<BufReader<ChunkStream<'a>>>,
}

impl std::fmt::Debug for ListingRecords<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListingRecords")
    }
}

impl<'a> ListingRecords<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index, ids: &'a [ChunkId]) -> Self {
        ListingRecords {
            reader: RecordReader::new(BufReader::with_capacity(
                1 << 16,
                ChunkStream::new(repo, index, ids),
            )),
        }
    }
}

/// A listing read through an `io::Read` adaptor comes back wrapped in an
/// I/O error; hand the caller the typed error inside.
fn unwrap_io(e: crate::Error) -> crate::Error {
    match e {
        crate::Error::Io { path, source }
            if source.get_ref().is_some_and(|i| i.is::<ListingError>()) =>
        {
            match source.into_inner().map(|i| i.downcast::<ListingError>()) {
                Some(Ok(inner)) => inner.0,
                _ => crate::Error::internal("reading a listing", path.display()),
            }
        }
        e => e,
    }
}

impl Iterator for ListingRecords<'_> {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        self.reader.next_record().map_err(unwrap_io).transpose()
    }
}

/// Whether `path` is one of `filters` or lies below one (no filters: all).
pub fn matches_filters(path: &[u8], filters: &[Vec<u8>]) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| {
            let f = f.strip_suffix(b"/").unwrap_or(f);
            f == b"."
                || path == f
                || (path.len() > f.len() && path.starts_with(f) && path[f.len()] == b'/')
        })
}

/// Only the entries of a record stream.
pub fn entries(
    records: impl Iterator<Item = Result<Record>>,
) -> impl Iterator<Item = Result<Entry>> {
    records.filter_map(|r| match r {
        Ok(Record::Entry(e)) => Some(Ok(e)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_paths_and_subtrees_only() {
        let f = vec![b"a/b".to_vec()];
        assert!(matches_filters(b"a/b", &f));
        assert!(matches_filters(b"a/b/c", &f));
        assert!(!matches_filters(b"a/bc", &f));
        assert!(!matches_filters(b"a", &f));
        assert!(matches_filters(b"anything", &[]));
        assert!(matches_filters(b"x", &[b".".to_vec()]));
    }
}
