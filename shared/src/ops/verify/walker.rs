//! Walking snapshot listings with each (partial line, chunk) read and
//! parsed once.

use super::*;

// Listings, memoized.

/// Why a listing could not be read to its end.
#[derive(Debug, Clone)]
pub(super) struct ListingProblem {
    pub(super) message: String,
    /// A storage failure, not damage.
    pub(super) unreadable: bool,
}

/// One listing chunk parsed after a given partial line: what the complete
/// records in it yielded, and the partial line it leaves for the next chunk.
pub(super) struct Segment<T> {
    pub(super) found: Vec<T>,
    pub(super) carry: Arc<Vec<u8>>,
    pub(super) carry_hash: [u8; 32],
    pub(super) problem: Option<ListingProblem>,
}

/// (SHA-256 of the partial line carried in, or zeros; listing chunk id).
pub(super) type SegmentKey = ([u8; 32], ChunkId);

pub(super) type Visit<'v, T> = &'v (dyn Fn(&Listed, &mut Vec<T>) + Sync);

/// What the listing walk needs of an entry, parsed straight from the line:
/// `wire::parse_line` goes through serde's buffering of internally tagged
/// enums, several times slower on listings of millions of chunk ids.
#[derive(serde::Deserialize)]
pub(super) struct Listed<'a> {
    #[serde(default = "version_1")]
    pub(super) v: u32,
    #[serde(borrow)]
    pub(super) path: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    pub(super) path_b64: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub(super) chunks: Vec<ChunkId>,
}

pub(super) fn version_1() -> u32 {
    wire::VERSION
}

impl Listed<'_> {
    pub(super) fn path_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        use base64::Engine;
        match &self.path_b64 {
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|e| format!("invalid base64 name: {e}")),
            None => Ok(self.path.as_bytes().to_vec()),
        }
    }
}

pub(super) const ENTRY_PREFIX: &[u8] = br#"{"type":"entry","#;

/// Parses one listing line: `Ok(None)` for records other than entries.
pub(super) fn parse_listed(line: &[u8]) -> std::result::Result<Option<Listed<'_>>, String> {
    if line.starts_with(ENTRY_PREFIX) {
        let e: Listed = serde_json::from_slice(line).map_err(|e| e.to_string())?;
        if e.v > wire::VERSION {
            return Err(format!(
                "record version {} is newer than this bk understands",
                e.v
            ));
        }
        return Ok(Some(e));
    }
    match wire::parse_line(line, 0) {
        // An entry written with another key order.
        Ok(Record::Entry(e)) => Ok(Some(Listed {
            v: e.v,
            path: std::borrow::Cow::Owned(e.path),
            path_b64: e.path_b64.map(std::borrow::Cow::Owned),
            chunks: e.chunks,
        })),
        Ok(_) => Ok(None),
        Err(Error::Stream { message, .. }) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

/// Walks snapshot listings. Successive snapshots share most listing chunks,
/// and a chunk read after the same partial line yields the same records, so
/// each (partial line, chunk) pair is read and parsed once.
pub(super) struct ListingWalker<'a, T> {
    pub(super) reader: &'a ChunkReader<'a>,
    /// `None` while some thread is reading that segment: others wait for
    /// it instead of reading the same chunk again.
    pub(super) memo: Mutex<HashMap<SegmentKey, Option<Arc<Segment<T>>>>>,
    pub(super) done: Condvar,
    pub(super) chunks_read: AtomicU64,
}

impl<'a, T: Clone + Send + Sync> ListingWalker<'a, T> {
    pub(super) fn new(reader: &'a ChunkReader<'a>) -> Self {
        ListingWalker {
            reader,
            memo: Mutex::new(HashMap::new()),
            done: Condvar::new(),
            chunks_read: AtomicU64::new(0),
        }
    }

    pub(super) fn walk(
        &self,
        listing: &[ChunkId],
        visit: Visit<'_, T>,
    ) -> Result<(Vec<T>, Option<ListingProblem>)> {
        let mut found = Vec::new();
        let mut carry = Arc::new(Vec::new());
        let mut hash = [0u8; 32];
        for id in listing {
            crate::sys::check_interrupted()?;
            let seg = self.segment_cached((hash, *id), &carry, visit);
            found.extend_from_slice(&seg.found);
            if let Some(p) = &seg.problem {
                return Ok((found, Some(p.clone())));
            }
            carry = seg.carry.clone();
            hash = seg.carry_hash;
        }
        if carry.iter().any(|b| !b.is_ascii_whitespace()) {
            return Ok((
                found,
                Some(ListingProblem {
                    message: "the listing ends in the middle of a record".into(),
                    unreadable: false,
                }),
            ));
        }
        Ok((found, None))
    }

    pub(super) fn segment_cached(
        &self,
        key: ([u8; 32], ChunkId),
        carry: &[u8],
        visit: Visit<'_, T>,
    ) -> Arc<Segment<T>> {
        let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match memo.get(&key) {
                Some(Some(seg)) => return seg.clone(),
                Some(None) => memo = self.done.wait(memo).unwrap_or_else(|p| p.into_inner()),
                None => break,
            }
        }
        memo.insert(key, None);
        drop(memo);
        // Should this thread unwind, the waiting ones must not hang.
        struct Busy<'w, 'a, T>(&'w ListingWalker<'a, T>, Option<([u8; 32], ChunkId)>);
        impl<T> Drop for Busy<'_, '_, T> {
            fn drop(&mut self) {
                if let Some(key) = self.1.take() {
                    self.0
                        .memo
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&key);
                    self.0.done.notify_all();
                }
            }
        }
        let mut busy = Busy(self, Some(key));
        let seg = Arc::new(self.segment(carry, &key.1, visit));
        busy.1 = None;
        self.memo
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, Some(seg.clone()));
        self.done.notify_all();
        seg
    }

    pub(super) fn segment(&self, carry: &[u8], id: &ChunkId, visit: Visit<'_, T>) -> Segment<T> {
        let mut seg = Segment {
            found: Vec::new(),
            carry: Arc::new(Vec::new()),
            carry_hash: [0u8; 32],
            problem: None,
        };
        let data = match self.reader.read(id) {
            Ok(d) => d,
            Err(e) => {
                let unreadable = !matches!(e, Error::Integrity { .. }) && !e.is_not_found();
                seg.problem = Some(ListingProblem {
                    message: format!("listing chunk {id} unreadable: {e}"),
                    unreadable,
                });
                return seg;
            }
        };
        self.chunks_read.fetch_add(1, Ordering::Relaxed);
        let joined;
        let buf: &[u8] = if carry.is_empty() {
            &data
        } else {
            joined = [carry, &data[..]].concat();
            &joined
        };
        let (complete, rest) = match buf.iter().rposition(|&b| b == b'\n') {
            Some(p) => buf.split_at(p + 1),
            None => (&[][..], buf),
        };
        for line in complete.split(|&b| b == b'\n') {
            let line = line.trim_ascii();
            if line.is_empty() {
                continue;
            }
            match parse_listed(line) {
                Ok(Some(e)) => visit(&e, &mut seg.found),
                Ok(None) => {}
                Err(msg) => {
                    seg.problem = Some(ListingProblem {
                        message: format!("malformed listing record in chunk {id}: {msg}"),
                        unreadable: false,
                    });
                    return seg;
                }
            }
        }
        if !rest.is_empty() {
            seg.carry_hash = ChunkId::digest(rest).0;
            seg.carry = Arc::new(rest.to_vec());
        }
        seg
    }
}
