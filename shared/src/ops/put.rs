//! Committing a snapshot from a chunk stream (the library side of `bk-put`).
//!
//! The main thread parses the stream; worker threads re-hash each chunk
//! (the stream is not trusted), skip chunks the repository already has,
//! compress and seal the rest; one packer thread fills packs and writes
//! them. Commit order is the repository's core invariant:
//!
//! 1. packs (each durable before it is named anywhere),
//! 2. index objects naming those packs,
//! 3. the snapshot, written last and only after the stream's trailer
//!    arrived and every chunk the listing names is known to be stored.
//!
//! A crash or interruption at any point leaves a valid repository plus
//! unreferenced packs that garbage collection removes later.

use crate::error::{Error, Result};
use crate::format::chunker::Chunker;
use crate::format::id::{ChunkId, ObjectId};
use crate::format::index::{Index, IndexFile};
use crate::format::pack::{blob_aad, BlobEntry, BlobKind};
use crate::format::wire::{
    self, Entry, ErrorRecord, Header, Kind, Record, RecordReader, SnapshotRecord, Timestamp,
};
use crate::ops::source::{self, ChunkOptions, ParentListing, StreamSink};
use crate::store::listing::ListingRecords;
use crate::store::locks::{LockGuard, LockMode};
use crate::store::packer::{PackStream, StreamedPack};
use crate::store::repo::{snapshot_record, Repository, Snapshot};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Packs written between intermediate index objects, so an interrupted
/// backup's data can be reused by the next run.
const INDEX_EVERY_PACKS: usize = 32;

#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub identity: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Tags known only once the stream has ended (a base backup's stop
    /// LSN), added to `tags` when the snapshot is written.
    pub late_tags: Option<std::sync::Arc<Mutex<BTreeMap<String, String>>>>,
    pub time: Option<Timestamp>,
    /// Worker threads (0: one per CPU).
    pub threads: usize,
    /// [`put_stream`]: cut the stream into chunks of exactly this many
    /// bytes instead of content-defined ones (bk-sqlite: a database's
    /// pages).
    pub fixed_chunks: Option<u32>,
    /// Counts entries and bytes as the walk goes.
    pub progress: Option<std::sync::Arc<crate::ops::progress::Progress>>,
}

#[derive(Debug, Clone)]
pub struct PutOutcome {
    pub snapshot: SnapshotRecord,
    /// Some source items could not be read (exit code "partial").
    pub problems: bool,
}

struct Sealed {
    kind: BlobKind,
    id: ChunkId,
    sealed: Vec<u8>,
    raw_len: u32,
}

#[derive(Default)]
struct Counters {
    new_bytes: AtomicU64,
    new_chunks: AtomicU64,
    stored_bytes: AtomicU64,
}

/// Shared dedup state: the loaded index plus chunks claimed by this run.
struct Dedup<'a> {
    index: &'a Index,
    claimed: Mutex<HashSet<ChunkId>>,
}

impl Dedup<'_> {
    /// True when this caller must store the chunk (nobody has it yet).
    fn claim(&self, id: &ChunkId) -> bool {
        !self.index.contains(id)
            && self
                .claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*id)
    }

    fn known(&self, id: &ChunkId) -> bool {
        self.index.contains(id)
            || self
                .claimed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(id)
    }
}

fn first_error(slot: &Mutex<Option<Error>>, e: Error) {
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    if s.is_none() {
        *s = Some(e);
    }
}

/// Recycled chunk and sealed-blob buffers. A backup moves every byte
/// through two buffers of about a chunk's size (the chunk, then its sealed
/// blob); allocating them afresh either faults in new pages for each
/// (glibc maps allocations this large) or, once glibc raises its mapping
/// threshold, leaves freed megabytes in every thread's arena. Measured on a
/// 2 GiB file, recycling kept peak RSS at the in-flight working set.
struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    /// Buffers smaller than this are cheap to allocate and not kept.
    const MIN_CAPACITY: usize = 64 << 10;
    /// Nor are buffers grown past this by a rare large chunk: kept, they
    /// would each hold that much for the rest of the run.
    const MAX_CAPACITY: usize = 2 << 20;
    /// At most this many idle buffers are kept (the pipeline's channels
    /// bound how many are in flight, so more would only sit idle).
    const MAX_IDLE: usize = 8;

    fn new() -> Self {
        BufferPool {
            free: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Vec<u8> {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn give(&self, mut buf: Vec<u8>) {
        if !(Self::MIN_CAPACITY..=Self::MAX_CAPACITY).contains(&buf.capacity()) {
            return;
        }
        buf.clear();
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < Self::MAX_IDLE {
            free.push(buf);
        }
    }
}

/// A chunk on its way to the workers; `line` locates it in a JSON stream.
struct ChunkJob {
    id: ChunkId,
    data: Vec<u8>,
    line: u64,
}

/// Chunks travel to the workers, and sealed blobs to the packer, in
/// batches of up to this many bytes (or [`BATCH_CHUNKS`] chunks): a tree of
/// small files is mostly one small chunk per file, and a channel hand-off
/// per chunk spent ~12% of a backup's CPU in wakeups and context switches
/// (perf, 52k-file tree).
const BATCH_BYTES: usize = 1 << 20;
const BATCH_CHUNKS: usize = 64;

struct WorkerShared<'a> {
    repo: &'a Repository,
    /// Checked before every index object: see [`packer`].
    lock: &'a LockGuard,
    dedup: &'a Dedup<'a>,
    pool: &'a BufferPool,
    counters: &'a Counters,
    failed: &'a Mutex<Option<Error>>,
    /// Re-hash chunks: their ids came from outside the process.
    verify: bool,
}

fn worker(w: &WorkerShared<'_>, rx: Receiver<Vec<ChunkJob>>, tx: Sender<Vec<Sealed>>) {
    for batch in rx {
        let mut out = Vec::with_capacity(batch.len());
        if !seal_batch(w, batch, &mut out) {
            return;
        }
        if !out.is_empty() && tx.send(out).is_err() {
            return;
        }
    }
}

/// Seals the chunks of one batch nobody has stored yet; false after a
/// failure (recorded in `failed`).
fn seal_batch(w: &WorkerShared<'_>, batch: Vec<ChunkJob>, out: &mut Vec<Sealed>) -> bool {
    let level = w.repo.compression();
    for ChunkJob { id, data, line } in batch {
        if w.verify && ChunkId::digest(&data) != id {
            first_error(
                w.failed,
                Error::Stream {
                    line,
                    message: format!("chunk data does not match its id {id}"),
                },
            );
            return false;
        }
        if w.dedup.claim(&id) {
            let mut sealed = w.pool.take();
            w.repo
                .keys()
                .seal_into(&blob_aad(BlobKind::Data, &id), &data, level, &mut sealed);
            w.counters
                .new_bytes
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            w.counters.new_chunks.fetch_add(1, Ordering::Relaxed);
            out.push(Sealed {
                kind: BlobKind::Data,
                id,
                sealed,
                raw_len: data.len() as u32,
            });
        }
        w.pool.give(data);
    }
    true
}

/// Fills packs (data and metadata separately) and hands each full pack to
/// uploader threads (as many as the backend says are worth running, at
/// most 4, so memory stays bounded). Index objects name only packs whose
/// upload has completed; one is written every few packs and one at the end.
/// Returns after the channel closes and everything is durable.
///
/// Long on purpose: one loop owns the open packs, the uploader pool and
/// the list of uploads not yet reported back; the invariant "an index
/// object names only packs whose upload completed" is checked by reading
/// that loop whole, which splitting would scatter across functions sharing
/// the same mutable state.
///
/// An index object makes its packs' chunks available to every later
/// backup, so it is written only under a lock that is still held: a
/// process resumed after its lock went stale may find its packs deleted
/// by a prune, and an index naming them would let other backups commit
/// references to data that is gone.
fn packer<'r>(
    repo: &'r Repository,
    lock: &LockGuard,
    rx: Receiver<Vec<Sealed>>,
    pool: &BufferPool,
    counters: &Counters,
) -> Result<()> {
    let target = repo.config().pack_size as usize;
    let uploaders = repo.backend().write_concurrency().clamp(1, 4);
    std::thread::scope(|scope| {
        let (up_tx, up_rx) = bounded::<StreamedPack<'r>>(1);
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<Result<ObjectId>>();
        for _ in 0..uploaders {
            let (up_rx, done_tx) = (up_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                for pack in up_rx {
                    let (id, len) = (pack.id, pack.len as u64);
                    let r = pack.object.publish(&id.to_hex());
                    if r.is_ok() {
                        counters.stored_bytes.fetch_add(len, Ordering::Relaxed);
                    }
                    if done_tx.send(r.map(|_| id)).is_err() {
                        return;
                    }
                }
            });
        }
        drop((up_rx, done_tx));

        let mut waiting: HashMap<ObjectId, Vec<BlobEntry>> = HashMap::new();
        let mut unindexed: Vec<(ObjectId, Vec<BlobEntry>)> = Vec::new();
        // Moves uploaded packs to `unindexed`; writes an index object when
        // enough have gathered (or `all` at the end).
        let mut settle = |waiting: &mut HashMap<ObjectId, Vec<BlobEntry>>,
                          block: bool,
                          all: bool|
         -> Result<()> {
            loop {
                let next = if block && !waiting.is_empty() {
                    done_rx.recv().ok()
                } else {
                    done_rx.try_recv().ok()
                };
                let Some(r) = next else { break };
                let id = r?;
                if let Some(entries) = waiting.remove(&id) {
                    unindexed.push((id, entries));
                }
            }
            if unindexed.len() >= INDEX_EVERY_PACKS || (all && !unindexed.is_empty()) {
                let file = IndexFile {
                    supersedes: vec![],
                    packs: std::mem::take(&mut unindexed),
                };
                write_under_lock(repo, lock, crate::layout::ObjectKind::Index, || {
                    repo.write_index(&file)
                })?;
            }
            Ok(())
        };
        let send =
            |p: PackStream<'r>, waiting: &mut HashMap<ObjectId, Vec<BlobEntry>>| -> Result<()> {
                let mut p = p.finish(repo.keys())?;
                waiting.insert(p.id, std::mem::take(&mut p.entries));
                up_tx
                    .send(p)
                    .map_err(|_| Error::internal("uploading packs", "the uploaders stopped"))
            };
        let result = (|| -> Result<()> {
            let (mut data, mut meta) = (None::<PackStream<'r>>, None::<PackStream<'r>>);
            for s in rx.iter().flatten() {
                let slot = if s.kind == BlobKind::Meta {
                    &mut meta
                } else {
                    &mut data
                };
                let pack = match slot {
                    Some(p) => p,
                    None => slot.insert(PackStream::stage(&**repo.backend(), s.kind, target)?),
                };
                pack.add(s.kind, s.id, &s.sealed, s.raw_len)?;
                pool.give(s.sealed);
                if pack.len() >= target {
                    let full = slot.take().expect("a pack is filling");
                    if let Err(e) = send(full, &mut waiting) {
                        // An uploader failed; its error is in the done channel.
                        settle(&mut waiting, true, false)?;
                        return Err(e);
                    }
                    settle(&mut waiting, false, false)?;
                }
            }
            for p in [data.take(), meta.take()].into_iter().flatten() {
                if !p.is_empty() {
                    send(p, &mut waiting)?;
                }
            }
            Ok(())
        })();
        drop(up_tx);
        // Wait for every upload; report the first failure.
        let finished = settle(&mut waiting, true, false);
        result?;
        finished?;
        if !waiting.is_empty() {
            return Err(Error::internal(
                "uploading packs",
                format!("{} pack uploads did not report back", waiting.len()),
            ));
        }
        settle(&mut waiting, false, true)?;
        Ok(())
    })
}

/// Cuts the listing bytes into metadata chunks as they are produced.
struct ListingChunks {
    chunker: Chunker,
    buf: Vec<u8>,
    ids: Vec<ChunkId>,
}

impl ListingChunks {
    fn push(
        &mut self,
        rec: &Record,
        sink: &mut impl FnMut(ChunkId, &[u8]) -> Result<()>,
    ) -> Result<()> {
        wire::write_record(&mut self.buf, rec).expect("writing to a Vec");
        let max = self.chunker.params().max as usize;
        if self.buf.len() >= 2 * max {
            let mut start = 0;
            while self.buf.len() - start >= max {
                let n = self.chunker.cut(&self.buf[start..]);
                let id = ChunkId::digest(&self.buf[start..start + n]);
                sink(id, &self.buf[start..start + n])?;
                self.ids.push(id);
                start += n;
            }
            self.buf.drain(..start);
        }
        Ok(())
    }

    fn finish(
        mut self,
        sink: &mut impl FnMut(ChunkId, &[u8]) -> Result<()>,
    ) -> Result<Vec<ChunkId>> {
        let mut start = 0;
        while start < self.buf.len() {
            let n = self.chunker.cut(&self.buf[start..]);
            let id = ChunkId::digest(&self.buf[start..start + n]);
            sink(id, &self.buf[start..start + n])?;
            self.ids.push(id);
            start += n;
        }
        Ok(self.ids)
    }
}

struct PendingFile {
    entry: Entry,
    size: u64,
}

#[derive(Default)]
struct StreamState {
    header: Option<Header>,
    entries: u64,
    errors: u64,
    files: u64,
    dirs: u64,
    bytes: u64,
    sizes: HashMap<ChunkId, u32>,
    reused: Vec<ChunkId>,
    unmodified_files: u64,
    excluded: u64,
    trailer_seen: bool,
}

/// Reads a chunk stream (or a listing with chunk ids) as JSON lines and
/// commits one snapshot. Nothing is committed unless the stream ends with
/// its trailer. The stream is not trusted: every chunk is hashed again.
pub fn put(repo: &Repository, input: impl BufRead, opts: &PutOptions) -> Result<PutOutcome> {
    let progress = opts.progress.as_deref();
    put_with(repo, opts, true, |_, consumer| {
        let mut reader = RecordReader::new(input);
        while let Some(rec) = reader.next_record()? {
            consumer.line = reader.line();
            if let Some(p) = progress {
                count_progress(p, &rec);
            }
            consumer.accept(rec)?;
        }
        Ok(())
    })
}

/// What a stream's records add to a backup's progress: entries as the walk
/// counts them in process, bytes as their data arrives.
fn count_progress(progress: &crate::ops::progress::Progress, rec: &Record) {
    match rec {
        Record::Entry(e) => progress.add_entry(e),
        Record::Data(d) => progress.add_bytes(d.data.len() as u64),
        Record::KnownChunk { size, .. } => progress.add_bytes(u64::from(*size)),
        _ => {}
    }
}

/// Which earlier snapshot a tree backup may take unchanged files from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ParentChoice {
    /// The latest snapshot of the same identity, if there is one.
    #[default]
    Latest,
    /// Read every file.
    None,
    /// This snapshot (an id or prefix, or `latest` of any identity).
    Snapshot(String),
}

/// Backs up the tree at `root` in this process: the chunker feeds the
/// workers directly, so nothing is serialized, base64-encoded or hashed
/// twice, and one key unlock serves the whole backup. The snapshot is the
/// same as `bk-chunk ROOT | bk-put` would commit.
pub fn put_tree(
    repo: &Repository,
    root: &Path,
    parent: &ParentChoice,
    opts: &PutOptions,
) -> Result<PutOutcome> {
    put_tree_with(repo, root, parent, opts, |_| {}, || Ok(Vec::new()))
}

/// Backs up one or more sources (`bk-put --from A [--from B…]`) as one
/// snapshot, taking what `rules` select: several sources are walked from
/// their deepest common directory, and the default identity names them
/// all.
pub fn put_sources(
    repo: &Repository,
    paths: &[std::path::PathBuf],
    rules: &source::ExcludeOptions,
    parent: &ParentChoice,
    opts: &PutOptions,
) -> Result<PutOutcome> {
    let (root, sources, exclude) = crate::ops::exclude::select(paths, rules)?;
    put_tree_with(
        repo,
        &root,
        parent,
        opts,
        |chunk_opts| (chunk_opts.sources, chunk_opts.exclude) = (sources, exclude),
        || Ok(Vec::new()),
    )
}

/// [`put_tree`] with the walk's options adjusted by `adjust` (a filter)
/// and the files `end` returns added after the walk (see
/// [`source::walk_tree_ending`]): what bk-wal's base backup takes of a
/// data directory.
pub fn put_tree_with(
    repo: &Repository,
    root: &Path,
    parent: &ParentChoice,
    opts: &PutOptions,
    adjust: impl FnOnce(&mut ChunkOptions),
    end: impl FnOnce() -> Result<source::EndFiles>,
) -> Result<PutOutcome> {
    let mut chunk_opts = ChunkOptions::for_repo(repo);
    chunk_opts.progress = opts.progress.clone();
    adjust(&mut chunk_opts);
    let identity = match &opts.identity {
        Some(i) => i.clone(),
        None => default_identity(&source::tree_header(root, &chunk_opts)?),
    };
    let opts = PutOptions {
        identity: Some(identity.clone()),
        ..opts.clone()
    };
    put_with(repo, &opts, false, |index, consumer| {
        let found = match parent {
            ParentChoice::None => None,
            ParentChoice::Latest => match repo.find_snapshot("latest", Some(&identity)) {
                Ok(found) => Some(found),
                Err(Error::Usage(_)) => None, // the first backup of this identity
                Err(e) => return Err(e),
            },
            // `latest` is this identity's, as the default parent is.
            ParentChoice::Snapshot(spec) if spec == "latest" => {
                Some(repo.choose_snapshot(spec, Some(&identity), &Default::default())?)
            }
            ParentChoice::Snapshot(spec) => {
                Some(repo.choose_snapshot(spec, None, &Default::default())?)
            }
        };
        if let Some((id, snap)) = found {
            let records = ListingRecords::new(repo, index, &snap.listing);
            match ParentListing::from_records(records) {
                Ok(mut listing) => {
                    // Files whose chunks a prune has marked are read again
                    // rather than referred to.
                    listing.retain_files(|chunks| chunks.iter().all(|c| index.contains(c)));
                    listing.xattrs_known = snap.xattrs;
                    chunk_opts.parent = Some(listing);
                    chunk_opts.parent_name = Some(id.to_hex());
                }
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => log::warn!("parent snapshot {id}: {e}; reading every file"),
            }
        }
        source::walk_tree_ending(root, &chunk_opts, consumer, end).map(|_| ())
    })
}

/// How a stream header names fixed-size chunks (`fixed:4096`).
const FIXED_CHUNKER_PREFIX: &str = "fixed:";

/// Backs up a byte stream (e.g. `pg_dump` output) as one file called
/// `name`, in this process.
pub fn put_stream(
    repo: &Repository,
    name: &str,
    input: impl Read,
    opts: &PutOptions,
) -> Result<PutOutcome> {
    let mut chunk_opts = ChunkOptions::for_repo(repo);
    chunk_opts.progress = opts.progress.clone();
    if let Some(size) = opts.fixed_chunks {
        chunk_opts.chunker = crate::format::chunker::Chunker::fixed(size);
        chunk_opts.chunker_name = format!("{FIXED_CHUNKER_PREFIX}{size}");
    }
    put_with(repo, opts, false, |_, consumer| {
        source::walk_stream(name, input, &chunk_opts, consumer).map(|_| ())
    })
}

/// The commit machinery shared by every put: `produce` feeds the stream
/// to the consumer; `verify_chunks` re-hashes chunks from untrusted input.
fn put_with(
    repo: &Repository,
    opts: &PutOptions,
    verify_chunks: bool,
    produce: impl FnOnce(&Index, &mut Consumer<'_>) -> Result<()>,
) -> Result<PutOutcome> {
    let started = Instant::now();
    let lock = LockGuard::acquire(
        repo.backend().clone(),
        repo.keys(),
        LockMode::Shared,
        "bk-put",
    )?;
    let index = repo.load_index_for_write()?;
    let dedup = Dedup {
        index: &index,
        claimed: Mutex::new(HashSet::new()),
    };
    let counters = Counters::default();
    let failed = Mutex::new(None);
    let pool = BufferPool::new();
    let shared = WorkerShared {
        repo,
        lock: &lock,
        dedup: &dedup,
        pool: &pool,
        counters: &counters,
        failed: &failed,
        verify: verify_chunks,
    };
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    } else {
        opts.threads
    };

    let (state, listing) = run_pipeline(&shared, &index, threads, produce)?;

    for id in &state.reused {
        if !dedup.known(id) {
            return Err(Error::integrity(
                crate::error::Subject::Chunk(id.to_hex()),
                "the listing refers to data this repository does not have; nothing was committed",
            ));
        }
    }
    crate::sys::check_interrupted()?;

    let snapshot = build_snapshot(opts, &state, listing)?;
    // A prune may already have judged a lock this old stale and deleted
    // packs this snapshot refers to: committing now could lose data.
    let id = write_under_lock(repo, &lock, crate::layout::ObjectKind::Snapshot, || {
        repo.save_snapshot(&snapshot)
    })?;
    drop(lock);
    let mut record = snapshot_record(&id, &snapshot);
    record.new_bytes = Some(counters.new_bytes.load(Ordering::Relaxed));
    record.new_chunks = Some(counters.new_chunks.load(Ordering::Relaxed));
    record.stored_bytes = Some(counters.stored_bytes.load(Ordering::Relaxed));
    record.unmodified_files = Some(state.unmodified_files);
    record.duration_s = Some((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
    Ok(PutOutcome {
        snapshot: record,
        problems: state.errors > 0,
    })
}

/// Writes the object `write` writes (an index object or the snapshot)
/// only under a lock that is still held, and withdraws it again if the
/// write took longer than the lock's margin (the process was stopped or
/// the store stalled in between: a prune may have judged the lock stale and
/// deleted what the object names). A withdrawn object was never reported,
/// so nobody relies on it; a prune that listed it meanwhile kept its data,
/// which the next prune collects.
fn write_under_lock(
    repo: &Repository,
    lock: &LockGuard,
    kind: crate::layout::ObjectKind,
    write: impl FnOnce() -> Result<ObjectId>,
) -> Result<ObjectId> {
    let check = lock.ensure_held()?;
    let id = write()?;
    if let Err(e) = lock.confirm(check) {
        if let Err(d) = repo.backend().delete(kind, &id.to_hex()) {
            log::warn!("could not withdraw {} {id}: {d}", kind.path(&id.to_hex()));
        }
        return Err(e);
    }
    Ok(id)
}

/// The backup pipeline: `produce` feeds the consumer, which chunks files
/// out to `threads` workers (hash, compress, seal) and one packer (pack,
/// upload), then stores the listing. Returns what the stream held and the
/// listing's chunk ids once every pack is durable.
///
/// Long on purpose: the thread scope owns the channels and join handles,
/// and the shutdown order (close the chunk channel, join the workers, store
/// the listing, close the packer's channel, join it) is what makes "every
/// pack is durable before the snapshot is written" true; it reads in one
/// place.
fn run_pipeline(
    shared: &WorkerShared<'_>,
    index: &Index,
    threads: usize,
    produce: impl FnOnce(&Index, &mut Consumer<'_>) -> Result<()>,
) -> Result<(StreamState, Vec<ChunkId>)> {
    let WorkerShared {
        repo,
        lock,
        dedup,
        pool,
        counters,
        failed,
        ..
    } = *shared;
    std::thread::scope(|scope| -> Result<_> {
        let (chunk_tx, chunk_rx) = bounded::<Vec<ChunkJob>>(threads * 2);
        let (sealed_tx, sealed_rx) = bounded::<Vec<Sealed>>(threads * 2);
        let packer = scope.spawn(|| packer(repo, lock, sealed_rx, pool, counters));
        let mut workers = Vec::new();
        for _ in 0..threads {
            let (rx, tx) = (chunk_rx.clone(), sealed_tx.clone());
            workers.push(scope.spawn(move || worker(shared, rx, tx)));
        }
        drop(chunk_rx);
        let meta_tx = sealed_tx;
        let level = repo.compression();
        let mut store_meta = |id: ChunkId, bytes: &[u8]| -> Result<()> {
            if dedup.claim(&id) {
                let sealed = repo
                    .keys()
                    .seal(&blob_aad(BlobKind::Meta, &id), bytes, level);
                meta_tx
                    .send(vec![Sealed {
                        kind: BlobKind::Meta,
                        id,
                        sealed,
                        raw_len: bytes.len() as u32,
                    }])
                    .map_err(|_| Error::internal("packing chunks", "the packer stopped"))?;
            }
            Ok(())
        };
        let mut listing = ListingChunks {
            chunker: repo.listing_chunker(),
            buf: Vec::new(),
            ids: Vec::new(),
        };
        let parsed = {
            let mut consumer = Consumer {
                repo_chunker: repo.chunker_name(),
                st: StreamState::default(),
                pending: None,
                listing: &mut listing,
                store_meta: &mut store_meta,
                chunk_tx: &chunk_tx,
                pool,
                batch: Vec::new(),
                batch_bytes: 0,
                failed,
                line: 0,
            };
            produce(index, &mut consumer).and_then(|()| consumer.finish())
        };
        drop(chunk_tx);
        for w in workers {
            let _ = w.join();
        }
        let worker_failure = failed.lock().unwrap_or_else(|p| p.into_inner()).take();
        let result = match (worker_failure, parsed) {
            (Some(e), _) => Err(e),
            (None, parsed) => parsed.and_then(|state| {
                let ids = listing.finish(&mut store_meta)?;
                Ok((state, ids))
            }),
        };
        drop(meta_tx);
        let packed = packer.join().unwrap_or_else(|_| {
            Err(Error::internal(
                "packing chunks",
                "the packer thread panicked",
            ))
        });
        match (result, packed) {
            (Err(Error::Interrupted), _) => Err(Error::Interrupted),
            // A storage failure stops the pipeline; it is the root cause of
            // whatever the reading side saw afterwards.
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok((state, ids)), Ok(())) => Ok((state, ids)),
        }
    })
}

/// The snapshot of a stream whose data is all stored.
fn build_snapshot(
    opts: &PutOptions,
    state: &StreamState,
    listing: Vec<ChunkId>,
) -> Result<Snapshot> {
    if state.header.is_none() && opts.identity.is_none() {
        return Err(Error::Usage(
            "the input has no header record (a listing?): give --identity USER@HOST:/PATH".into(),
        ));
    }
    let header = state.header.clone().unwrap_or(Header {
        v: wire::VERSION,
        source: "-".into(),
        ..Header::default()
    });
    // A copy keeps the original's identity, time and tags unless the
    // command line says otherwise.
    let identity = match (&opts.identity, &header.identity) {
        (Some(i), _) | (None, Some(i)) => i.clone(),
        (None, None) => default_identity(&header),
    };
    Ok(Snapshot {
        v: 1,
        time: opts.time.or(header.time).unwrap_or_else(Timestamp::now),
        identity,
        tags: {
            let mut tags = header.tags.clone();
            tags.extend(opts.tags.clone());
            if let Some(late) = &opts.late_tags {
                tags.extend(late.lock().unwrap_or_else(|p| p.into_inner()).clone());
            }
            tags
        },
        source: header.source.clone(),
        listing,
        files: state.files,
        dirs: state.dirs,
        entries: state.entries,
        bytes: state.bytes,
        errors: state.errors,
        parent: header.parent.clone(),
        excluded: state.excluded,
        xattrs: header.xattrs,
        created: Timestamp::now(),
        program: format!("bk {}", env!("CARGO_PKG_VERSION")),
        host: crate::sys::hostname(),
    })
}

/// `user@host:/path` from the stream header, falling back to this machine.
pub fn default_identity(h: &Header) -> String {
    let user = h
        .user
        .clone()
        .or_else(crate::sys::username)
        .unwrap_or_else(|| "unknown".into());
    let host = h
        .host
        .clone()
        .or_else(crate::sys::hostname)
        .unwrap_or_else(|| "localhost".into());
    let path = match (&h.name, h.source.as_str()) {
        (Some(n), "-") => n.clone(),
        _ if !h.paths.is_empty() => h.paths.join(","),
        _ => h.source.clone(),
    };
    format!("{user}@{host}:{path}")
}

/// The receiving end of a chunk stream: checks its shape, builds the
/// listing and hands chunk data to the workers. Fed by the JSON reader
/// ([`put`]) or directly by the tree walker ([`put_tree`]).
struct Consumer<'a> {
    repo_chunker: String,
    st: StreamState,
    pending: Option<PendingFile>,
    listing: &'a mut ListingChunks,
    store_meta: &'a mut dyn FnMut(ChunkId, &[u8]) -> Result<()>,
    chunk_tx: &'a Sender<Vec<ChunkJob>>,
    pool: &'a BufferPool,
    /// Chunks not yet handed to the workers, and their bytes.
    batch: Vec<ChunkJob>,
    batch_bytes: usize,
    failed: &'a Mutex<Option<Error>>,
    /// Line of the JSON stream being read (0 in process).
    line: u64,
}

/// Returned to the producer when a worker or the packer has failed; the
/// put reports that failure instead.
fn pipeline_stopped() -> Error {
    Error::internal("backing up", "the pipeline stopped")
}

impl Consumer<'_> {
    fn bad(&self, message: String) -> Error {
        Error::Stream {
            line: self.line,
            message,
        }
    }

    fn check_running(&self) -> Result<()> {
        if self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            return Err(pipeline_stopped());
        }
        Ok(())
    }

    fn push_listing(&mut self, rec: &Record) -> Result<()> {
        let store = &mut *self.store_meta;
        self.listing.push(rec, &mut |id, b| store(id, b))
    }

    fn finish_file(&mut self) -> Result<()> {
        if let Some(p) = self.pending.take() {
            let mut e = p.entry;
            e.size = p.size;
            self.st.bytes += e.size;
            self.st.files += 1;
            self.push_listing(&Record::Entry(e))?;
        }
        Ok(())
    }

    fn data_owned(&mut self, id: ChunkId, data: Vec<u8>) -> Result<()> {
        crate::sys::check_interrupted()?;
        if self.st.trailer_seen {
            return Err(self.bad("records after the trailer".into()));
        }
        let Some(p) = self.pending.as_mut() else {
            return Err(self.bad("data record without a preceding file entry".into()));
        };
        let len = data.len() as u32;
        if len == 0 {
            return Err(self.bad("empty chunk".into()));
        }
        p.entry.chunks.push(id);
        p.size += len as u64;
        self.st.sizes.insert(id, len);
        self.batch_bytes += data.len();
        self.batch.push(ChunkJob {
            id,
            data,
            line: self.line,
        });
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_CHUNKS {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        if self.chunk_tx.send(batch).is_err() {
            return Err(pipeline_stopped());
        }
        self.check_running()
    }

    /// One arm per record type: a dispatch table, longer than 80 lines
    /// only because the stream has that many kinds of record.
    fn accept(&mut self, rec: Record) -> Result<()> {
        crate::sys::check_interrupted()?;
        if self.st.trailer_seen && !matches!(rec, Record::Unknown) {
            return Err(self.bad("records after the trailer".into()));
        }
        match rec {
            Record::Header(h) => {
                if self.st.header.is_some() || self.st.entries > 0 {
                    return Err(self.bad("a second header, or a header after entries".into()));
                }
                // A copy keeps its source's chunks, by design.
                if h.chunker != self.repo_chunker
                    && !h.chunker.starts_with(FIXED_CHUNKER_PREFIX)
                    && h.identity.is_none()
                {
                    log::warn!(
                        "the stream was chunked with the {:?} chunker, not this repository's; \
                         deduplication against earlier backups suffers (give bk-chunk -r or BK_REPO)",
                        h.chunker
                    );
                }
                self.st.header = Some(h);
            }
            Record::Entry(mut e) => {
                self.finish_file()?;
                let path = e.path_bytes()?;
                wire::check_relative_path(&path)
                    .map_err(|m| self.bad(format!("unsafe path {:?}: {m}", e.path)))?;
                self.st.entries += 1;
                e.v = wire::VERSION;
                match e.kind {
                    Kind::File if e.chunks.is_empty() => {
                        // Content follows as data records (or the file is empty).
                        self.pending = Some(PendingFile { entry: e, size: 0 });
                        return Ok(());
                    }
                    Kind::File => {
                        self.st.files += 1;
                        self.st.unmodified_files += 1;
                        self.st.bytes += e.size;
                        self.st.reused.extend_from_slice(&e.chunks);
                    }
                    Kind::Dir => self.st.dirs += 1,
                    _ if !e.chunks.is_empty() => {
                        return Err(self.bad(format!("{} entry with chunks", e.path)))
                    }
                    _ => {}
                }
                self.push_listing(&Record::Entry(e))?;
            }
            Record::Data(d) => return self.data_owned(d.id, d.data),
            Record::KnownChunk { id, size } => {
                let Some(p) = self.pending.as_mut() else {
                    return Err(self.bad("data record without a preceding file entry".into()));
                };
                // Checked against the index before the commit, like the
                // chunk ids of unchanged files.
                p.entry.chunks.push(id);
                p.size += size as u64;
                self.st.sizes.insert(id, size);
                self.st.reused.push(id);
            }
            Record::ChunkRef(id) => {
                let Some(&len) = self.st.sizes.get(&id) else {
                    return Err(self.bad(format!(
                        "reference to chunk {id} whose data was not sent earlier"
                    )));
                };
                let Some(p) = self.pending.as_mut() else {
                    return Err(self.bad("data record without a preceding file entry".into()));
                };
                p.entry.chunks.push(id);
                p.size += len as u64;
            }
            Record::Error(er) => {
                if self
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.entry.path == er.path)
                {
                    self.pending = None; // the file failed mid-read: keep only the error
                } else {
                    self.finish_file()?;
                }
                // In process, the walker has warned already.
                if self.line > 0 {
                    log::warn!("{}: {}", er.path, er.message);
                }
                self.st.errors += 1;
                self.push_listing(&Record::Error(ErrorRecord {
                    v: wire::VERSION,
                    ..er
                }))?;
            }
            Record::Trailer(t) => {
                self.finish_file()?;
                if t.entries != self.st.entries || t.errors != self.st.errors {
                    // The counts are how a lost line is told from a kept
                    // one, so a stream filtered on its way (jq) is refused
                    // like a damaged one.
                    return Err(self.bad(format!(
                        "trailer says {} entries and {} errors, the stream had {} and {} \
                         (lines were lost or filtered out: to leave paths out, give bk-chunk \
                         --exclude rules instead of filtering its stream)",
                        t.entries, t.errors, self.st.entries, self.st.errors
                    )));
                }
                self.st.excluded = t.excluded;
                self.st.trailer_seen = true;
            }
            // Other tools' records (snapshots, prune, verify, bk-repo) in
            // the stream are ignored, like unknown ones.
            _ => {}
        }
        self.check_running()
    }

    /// The stream has ended: it must have ended with its trailer.
    fn finish(mut self) -> Result<StreamState> {
        self.send_batch()?;
        if !self.st.trailer_seen {
            return Err(Error::IncompleteStream(format!(
                "the stream ended after {} entries without its trailer (was the producer killed?); nothing was committed",
                self.st.entries
            )));
        }
        Ok(self.st)
    }
}

impl StreamSink for Consumer<'_> {
    fn record(&mut self, rec: Record) -> Result<()> {
        self.accept(rec)
    }
    fn data(&mut self, id: ChunkId, chunk: &[u8]) -> Result<()> {
        let mut data = self.pool.take();
        data.extend_from_slice(chunk);
        self.data_owned(id, data)
    }
    fn chunk_ref(&mut self, id: ChunkId) -> Result<()> {
        self.accept(Record::ChunkRef(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::source::{chunk_tree, ChunkOptions};
    use crate::store::backend::fault::{Action, FaultBackend, Op, When};
    use crate::store::backend::local::LocalBackend;
    use crate::store::backend::{Backend, ObjectKind};
    use crate::store::keys::Secret;
    use crate::store::repo::InitOptions;
    use std::sync::Arc;

    /// The real local backend whose pack writes fail after `allowed`
    /// successes, as on a full disk. `staged`: packs are staged in the
    /// local backend's tmp/ (the path local backups take) and the failure
    /// comes at publication, as fsync(2) fails on a full disk; otherwise
    /// they are built in memory and put whole.
    fn failing_packs(repo_dir: &std::path::Path, allowed: u64, staged: bool) -> FaultBackend {
        let inner: Arc<dyn Backend> = Arc::new(LocalBackend::new(repo_dir));
        let backend =
            FaultBackend::new(inner).on(Op::Put, ObjectKind::Pack, When::Before, move |call, _| {
                if call.nth > allowed {
                    Action::Fail(
                        std::io::ErrorKind::Other,
                        "injected: no space left on device".into(),
                    )
                } else {
                    Action::Proceed
                }
            });
        if staged {
            backend
        } else {
            backend.with_staging_in_memory()
        }
    }

    fn setup(allowed: u64, staged: bool) -> (tempfile::TempDir, Repository, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for i in 0..6u8 {
            let data = crate::testing::noise(1_500_000, i as u64);
            std::fs::write(src.join(format!("f{i}")), data).unwrap();
        }
        let backend = Arc::new(failing_packs(&dir.path().join("repo"), allowed, staged));
        let secret = Secret::Identities(vec![age::x25519::Identity::generate()]);
        let opts = InitOptions {
            pack_size: 1 << 20,
            compression: 0,
            ..InitOptions::default()
        };
        let repo = Repository::init(backend, &secret, opts).unwrap();
        let copts = ChunkOptions::for_repo(&repo);
        let mut stream = Vec::new();
        chunk_tree(&src, &copts, &mut stream).unwrap();
        (dir, repo, stream)
    }

    #[test]
    fn storage_failure_is_reported_as_the_cause_and_nothing_is_committed() {
        for staged in [false, true] {
            let (_dir, repo, stream) = setup(2, staged);
            let err = put(&repo, &stream[..], &PutOptions::default()).unwrap_err();
            assert!(err.to_string().contains("injected: no space left"), "{err}");
            assert!(repo.snapshots().unwrap().is_empty());
            // Staged packs that were never published leave no temp file.
            assert!(
                repo.backend().incomplete().unwrap().is_empty(),
                "staged {staged}"
            );
        }
    }

    /// A parent whose data packs left the write index (as when a prune has
    /// marked them) must not be referred to: its files are read again
    /// instead of failing the backup or naming data that may be deleted.
    #[test]
    fn regression_put_tree_rereads_parent_files_whose_data_left_the_index() {
        let (dir, repo, _) = setup(u64::MAX, true);
        let src = dir.path().join("src");
        let opts = PutOptions::default();
        let first = put_tree(&repo, &src, &ParentChoice::Latest, &opts).unwrap();
        assert_eq!(first.snapshot.unmodified_files, Some(0));
        let again = put_tree(&repo, &src, &ParentChoice::Latest, &opts).unwrap();
        assert_eq!(again.snapshot.unmodified_files, Some(6));
        assert_eq!(again.snapshot.new_chunks, Some(0));

        // Keep only the packs holding listing (meta) blobs in the index.
        let files = repo.index_files().unwrap();
        let packs = files
            .live
            .iter()
            .flat_map(|(_, f)| f.packs.iter().cloned())
            .filter(|(_, entries)| entries.iter().all(|e| e.kind == BlobKind::Meta))
            .collect();
        repo.write_index(&IndexFile {
            supersedes: files.live.iter().map(|(id, _)| *id).collect(),
            packs,
        })
        .unwrap();

        let third = put_tree(&repo, &src, &ParentChoice::Latest, &opts).unwrap();
        assert_eq!(
            third.snapshot.unmodified_files,
            Some(0),
            "{:?}",
            third.snapshot
        );
        assert_eq!(third.snapshot.new_bytes, Some(6 * 1_500_000));
        assert_eq!(third.snapshot.files, 6);
    }

    #[test]
    fn put_and_restore_in_process() {
        let (dir, repo, stream) = setup(u64::MAX, true);
        let out = put(
            &repo,
            &stream[..],
            &PutOptions {
                identity: Some("a@b:/c".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(out.snapshot.files, 6);
        let packs = repo.backend().list(ObjectKind::Pack).unwrap().len();
        assert!(
            packs >= 5,
            "1 MiB packs expected, got {packs}: {:?}",
            out.snapshot
        );
        let index = repo.load_index().unwrap();
        let (_, snap) = repo.find_snapshot("latest", Some("a@b:/c")).unwrap();
        let into = dir.path().join("out");
        let records = crate::store::listing::ListingRecords::new(&repo, &index, &snap.listing);
        let opts = crate::ops::restore::RestoreOptions {
            into: into.clone(),
            filters: vec![],
            threads: 2,
            progress: None,
        };
        let summary = crate::ops::restore::restore(
            &repo,
            &index,
            crate::store::listing::entries(records),
            &opts,
        )
        .unwrap();
        assert_eq!((summary.files, summary.errors), (6, 0));
        for i in 0..6 {
            let name = format!("f{i}");
            assert_eq!(
                std::fs::read(into.join(&name)).unwrap(),
                std::fs::read(dir.path().join("src").join(&name)).unwrap()
            );
        }
    }
}
