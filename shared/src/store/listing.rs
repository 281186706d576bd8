//! Reading a snapshot's listing back: its metadata chunks, fetched one at a
//! time, concatenated into the JSON-lines they were cut from.

use crate::error::{Error, Result};
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

/// A path the user typed, as the snapshot's listing names it: relative to
/// the backed-up root. An absolute path under the snapshot's `source`
/// (`/srv/app/config.yml` of a backup of `/srv/app`, what a restic user
/// types) is made relative; one outside it is refused with what to type.
pub fn listing_filter(typed: &str, source: &str) -> Result<Vec<u8>> {
    let Some(abs) = typed.strip_prefix('/') else {
        let rel = typed.trim_start_matches("./");
        return Ok(if rel.is_empty() {
            b".".to_vec()
        } else {
            rel.as_bytes().to_vec()
        });
    };
    let root = source.trim_end_matches('/').trim_start_matches('/');
    let abs = abs.trim_end_matches('/');
    if source.starts_with('/') {
        if abs == root {
            return Ok(b".".to_vec());
        }
        if let Some(rest) = abs.strip_prefix(root).and_then(|r| r.strip_prefix('/')).or(
            // A backup of `/` itself.
            root.is_empty().then_some(abs),
        ) {
            return Ok(rest.as_bytes().to_vec());
        }
    }
    Err(Error::usage_hint(
        format!("{typed} is not under the snapshot's source {source}"),
        format!(
            "paths name files relative to the backed-up root, as `bk-ls SNAPSHOT` prints them{}",
            if source.starts_with('/') {
                format!(" (for {source}/a/b type a/b)")
            } else {
                String::new()
            }
        ),
    ))
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

/// How many chunked files [`of_this_repository`] looks at before it
/// decides.
const BELONGS_SAMPLE: usize = 64;

/// Entries read from outside (`bk-get -`), refused up front when they come
/// from another repository: when none of the first files' chunks is in
/// this repository's index, the listing was made elsewhere (or its
/// snapshot was pruned long ago), and reporting every file as damaged data
/// would send the operator looking for corruption that is not there.
/// Entries pass through unchanged otherwise; a missing chunk among
/// present ones stays an integrity error.
pub fn of_this_repository<'a>(
    index: &'a Index,
    mut entries: impl Iterator<Item = Result<Entry>> + 'a,
) -> Result<impl Iterator<Item = Result<Entry>> + 'a> {
    let mut head = Vec::new();
    let (mut sampled, mut present) = (0, false);
    while sampled < BELONGS_SAMPLE && !present {
        let Some(e) = entries.next() else { break };
        let e = e?;
        if !e.chunks.is_empty() {
            sampled += 1;
            present = e.chunks.iter().any(|c| index.contains(c));
        }
        head.push(Ok(e));
    }
    if sampled > 0 && !present {
        return Err(Error::usage_hint(
            format!(
                "none of the chunks of the first {sampled} listed file(s) is in this repository: \
                 the listing comes from another repository, or from a snapshot pruned since"
            ),
            "run bk-ls against the repository you restore from (-r/--repo, BK_REPO); nothing was written",
        ));
    }
    Ok(head.into_iter().chain(entries))
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
    #[test]
    fn typed_paths_become_listing_paths() {
        use super::listing_filter as f;
        assert_eq!(f("etc/x", "/srv/app").unwrap(), b"etc/x");
        assert_eq!(f("./etc/x", "/srv/app").unwrap(), b"etc/x");
        assert_eq!(f("/srv/app/config.yml", "/srv/app").unwrap(), b"config.yml");
        assert_eq!(f("/srv/app/", "/srv/app").unwrap(), b".");
        assert_eq!(f("/etc/hosts", "/").unwrap(), b"etc/hosts");
        let outside = f("/srv/application/x", "/srv/app").unwrap_err();
        assert!(
            outside.hint().unwrap().contains("type a/b"),
            "{:?}",
            outside.hint()
        );
        assert!(f("/x", "-").is_err());
    }

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
