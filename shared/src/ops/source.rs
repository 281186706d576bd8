//! Producing a chunk stream from a directory tree or a byte stream
//! (the library side of `bk-chunk`).
//!
//! Stream shape (see `bk-stream(5)`): a header, then per filesystem object
//! an entry; a regular file's entry is followed by its content as data
//! records in order (a chunk already sent in this stream is sent again as a
//! bare reference); files unchanged since `--parent`, and later names of a
//! hard-linked file, carry their chunk ids in the entry and no data. A final
//! trailer says the stream is complete.

use crate::error::{Error, Result};
use crate::format::chunker::Chunker;
use crate::format::id::ChunkId;
use crate::format::wire::{
    self, Entry, ErrorRecord, Header, Kind, Record, RecordReader, Timestamp, Trailer,
};
pub use crate::ops::exclude::{ExcludeOptions, ExcludeRules, Place, Sources, Verdict};
use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io::{BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// What an earlier snapshot knew about a file, for `--parent`.
#[derive(Debug, Clone)]
struct ParentFile {
    size: u64,
    mtime: Timestamp,
    ctime: Option<Timestamp>,
    ino: Option<u64>,
    chunks: Vec<ChunkId>,
    /// Setting an attribute changes the ctime, so an unchanged file's
    /// attributes are the parent's: no llistxattr for it.
    xattrs: std::collections::BTreeMap<String, String>,
}

/// An earlier listing (as printed by `bk-ls SNAPSHOT`).
#[derive(Debug, Default)]
pub struct ParentListing {
    files: HashMap<Vec<u8>, ParentFile>,
    /// The listing's entries carry their extended attributes (its snapshot
    /// says so): an unchanged file's are taken from it instead of read.
    pub xattrs_known: bool,
}

impl ParentListing {
    /// Reads a listing as JSON lines (`bk-ls SNAPSHOT` output).
    pub fn read(input: impl BufRead) -> Result<Self> {
        let mut r = RecordReader::new(input);
        Self::from_records(std::iter::from_fn(|| r.next_record().transpose()))
    }

    /// Collects a listing's file entries, e.g. straight from a snapshot in
    /// the repository (no JSON round trip through another process).
    pub fn from_records(records: impl Iterator<Item = Result<Record>>) -> Result<Self> {
        let mut files = HashMap::new();
        for rec in records {
            if let Record::Entry(e) = rec? {
                if e.kind == Kind::File && (!e.chunks.is_empty() || e.size == 0) {
                    files.insert(
                        e.path_bytes()?,
                        ParentFile {
                            size: e.size,
                            mtime: e.mtime,
                            ctime: e.ctime,
                            ino: e.ino,
                            chunks: e.chunks,
                            xattrs: e.xattrs,
                        },
                    );
                }
            }
        }
        Ok(ParentListing {
            files,
            xattrs_known: false,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Keeps only the files whose chunk list satisfies `keep`.
    pub fn retain_files(&mut self, mut keep: impl FnMut(&[ChunkId]) -> bool) {
        self.files.retain(|_, f| keep(&f.chunks));
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn unchanged(&self, path: &[u8], e: &Entry) -> Option<&ParentFile> {
        let p = self.files.get(path)?;
        (p.size == e.size && p.mtime == e.mtime && p.ctime == e.ctime && p.ino == e.ino)
            .then_some(p)
    }
}

pub struct ChunkOptions {
    pub chunker: Chunker,
    /// Recorded in the header (`default` or `repo:<id>`).
    pub chunker_name: String,
    pub parent: Option<ParentListing>,
    pub parent_name: Option<String>,
    /// Which paths of a tree to take (everything when `None`).
    pub filter: Option<TreeFilter>,
    /// The tree is a live database's (a base backup between
    /// pg_backup_start and pg_backup_stop): files that vanish are left out
    /// and files that change while read are stored as read, silently —
    /// WAL replay makes them consistent.
    pub live_source: bool,
    /// Several sources in one snapshot (the walk's root is their deepest
    /// common directory); `None`: everything under the root.
    pub sources: Option<Sources>,
    /// The exclusion rules (`--exclude` and friends).
    pub exclude: Option<ExcludeRules>,
    /// Counts entries and bytes as the walk goes.
    pub progress: Option<std::sync::Arc<crate::ops::progress::Progress>>,
}

/// Decides, for a path relative to the tree's root (`/`-separated) and
/// whether it is a directory, what of it a backup takes.
pub type TreeFilter = Box<dyn Fn(&[u8], bool) -> Take + Send + Sync>;

/// Files added at the end of a tree: (name relative to the root, content).
pub type EndFiles = Vec<(String, Vec<u8>)>;

/// What a [`TreeFilter`] takes of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    All,
    /// Nothing: the path (and a directory's contents) is left out.
    Nothing,
    /// The directory itself, none of its contents (`pg_wal/`).
    DirOnly,
}

impl ChunkOptions {
    /// The repository's keyed chunker, no parent.
    pub fn for_repo(repo: &crate::store::repo::Repository) -> Self {
        ChunkOptions {
            chunker: repo.chunker(),
            chunker_name: repo.chunker_name(),
            parent: None,
            parent_name: None,
            filter: None,
            live_source: false,
            sources: None,
            exclude: None,
            progress: None,
        }
    }

    /// Takes `paths` (one or more sources) with `rules`, and returns the
    /// root to walk: the source, or the sources' deepest common directory.
    pub fn select(
        &mut self,
        paths: &[std::path::PathBuf],
        rules: &ExcludeOptions,
    ) -> Result<std::path::PathBuf> {
        let (root, sources, exclude) = crate::ops::exclude::select(paths, rules)?;
        (self.sources, self.exclude) = (sources, exclude);
        Ok(root)
    }
}

impl std::fmt::Debug for ChunkOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkOptions({})", self.chunker_name)
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ChunkSummary {
    pub entries: u64,
    pub errors: u64,
    pub bytes: u64,
    pub bytes_read: u64,
    pub files_reused: u64,
    pub chunks_sent: u64,
    /// Paths the exclusion rules left out.
    pub excluded: u64,
}

/// Where a chunk stream goes: serialized for a bk-put in another process
/// ([`JsonLines`]), or straight into an in-process put, which skips the
/// base64/JSON round trip and the second hash of every chunk.
pub trait StreamSink {
    /// Header, entry, error and trailer records, in stream order.
    fn record(&mut self, rec: Record) -> Result<()>;
    /// The content of the current file's next chunk, first time in this
    /// stream; `id` is its [`ChunkId::digest`].
    fn data(&mut self, id: ChunkId, chunk: &[u8]) -> Result<()>;
    /// The current file's next chunk, whose data this stream already sent.
    fn chunk_ref(&mut self, id: ChunkId) -> Result<()>;
    /// Called once after the trailer.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The stream as JSON lines (`bk-stream(5)`), as bk-chunk writes it.
#[derive(Debug)]
pub struct JsonLines<W: Write>(pub W);

impl<W: Write> StreamSink for JsonLines<W> {
    fn record(&mut self, rec: Record) -> Result<()> {
        wire::write_record(&mut self.0, &rec).map_err(out_err)
    }
    fn data(&mut self, id: ChunkId, chunk: &[u8]) -> Result<()> {
        wire::write_data(&mut self.0, &id, chunk).map_err(out_err)
    }
    fn chunk_ref(&mut self, id: ChunkId) -> Result<()> {
        wire::write_chunk_ref(&mut self.0, &id).map_err(out_err)
    }
    fn flush(&mut self) -> Result<()> {
        self.0.flush().map_err(out_err)
    }
}

fn ts(secs: i64, nanos: i64) -> Timestamp {
    Timestamp {
        secs,
        nanos: nanos.clamp(0, 999_999_999) as u32,
    }
}

/// Builds the listing entry for a path's metadata (no chunks yet).
pub fn entry_from_metadata(rel: &[u8], md: &Metadata) -> Entry {
    let ft = md.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_socket() {
        Kind::Socket
    } else if ft.is_char_device() {
        Kind::CharDevice
    } else {
        Kind::BlockDevice
    };
    let mut e = Entry::new(
        kind,
        rel,
        md.mode() & 0o7777,
        ts(md.mtime(), md.mtime_nsec()),
    );
    (e.uid, e.gid) = (md.uid(), md.gid());
    e.user = crate::sys::user_name(md.uid());
    e.group = crate::sys::group_name(md.gid());
    e.ctime = Some(ts(md.ctime(), md.ctime_nsec()));
    e.size = if kind == Kind::File { md.size() } else { 0 };
    (e.dev, e.ino, e.nlink) = (Some(md.dev()), Some(md.ino()), Some(md.nlink()));
    e.rdev = matches!(kind, Kind::CharDevice | Kind::BlockDevice).then(|| md.rdev());
    e
}

struct Emitter<'a, S: StreamSink + ?Sized> {
    out: &'a mut S,
    opts: &'a ChunkOptions,
    sent: HashSet<ChunkId>,
    hardlinks: HashMap<(u64, u64), Vec<ChunkId>>,
    buf: Vec<u8>,
    summary: ChunkSummary,
}

/// A failure while chunking one file's content: reading the source (the
/// file is dropped with an error record) or anything else (fatal).
enum ContentError {
    Read(std::io::Error),
    Fatal(Error),
}

impl From<std::io::Error> for ContentError {
    fn from(e: std::io::Error) -> Self {
        ContentError::Read(e)
    }
}

impl From<Error> for ContentError {
    fn from(e: Error) -> Self {
        ContentError::Fatal(e)
    }
}

fn out_err(e: std::io::Error) -> Error {
    crate::error::stdout_error(e)
}

impl<S: StreamSink + ?Sized> Emitter<'_, S> {
    fn record(&mut self, rec: Record) -> Result<()> {
        self.out.record(rec)
    }

    fn error(&mut self, path: &[u8], message: String) -> Result<()> {
        log::warn!("{}: {message}", String::from_utf8_lossy(path));
        self.summary.errors += 1;
        let rec = ErrorRecord {
            v: wire::VERSION,
            path: String::from_utf8_lossy(path).into_owned(),
            message,
        };
        self.record(Record::Error(rec))
    }

    /// Chunks `reader` into data records; returns chunk ids and bytes read.
    fn content(&mut self, reader: impl Read) -> Result<(Vec<ChunkId>, u64), ContentError> {
        let mut ids = Vec::new();
        let mut buf = std::mem::take(&mut self.buf);
        let chunker = &self.opts.chunker;
        let out = &mut *self.out;
        let sent = &mut self.sent;
        let progress = self.opts.progress.as_deref();
        let mut chunks_sent = 0;
        let res = chunker.chunk_reader_with(
            &mut buf,
            reader,
            |chunk: &[u8]| -> Result<(), ContentError> {
                crate::sys::check_interrupted()?;
                if let Some(p) = progress {
                    p.add_bytes(chunk.len() as u64);
                }
                let id = ChunkId::digest(chunk);
                if sent.insert(id) {
                    chunks_sent += 1;
                    out.data(id, chunk)?;
                } else {
                    out.chunk_ref(id)?;
                }
                ids.push(id);
                Ok(())
            },
        );
        self.buf = buf;
        self.summary.chunks_sent += chunks_sent;
        let n = res?;
        self.summary.bytes_read += n;
        Ok((ids, n))
    }

    fn file(&mut self, full: &Path, mut entry: Entry, rel: &[u8]) -> Result<()> {
        if let Some((same, xattrs_known)) = self
            .opts
            .parent
            .as_ref()
            .and_then(|p| Some((p.unchanged(rel, &entry)?, p.xattrs_known)))
        {
            entry.chunks = same.chunks.clone();
            if xattrs_known {
                entry.xattrs = same.xattrs.clone();
            } else if !capture_xattrs(full, &mut entry, rel, self.opts.live_source)? {
                return Ok(());
            }
            self.summary.files_reused += 1;
            return self.emit_entry(entry);
        }
        if !capture_xattrs(full, &mut entry, rel, self.opts.live_source)? {
            return Ok(());
        }
        let link_key = (entry.nlink.unwrap_or(1) > 1)
            .then(|| (entry.dev.unwrap_or(0), entry.ino.unwrap_or(0)));
        if let Some(chunks) = link_key.and_then(|k| self.hardlinks.get(&k)) {
            entry.chunks = chunks.clone();
            return self.emit_entry(entry);
        }
        let file = match std::fs::File::open(full) {
            Ok(f) => f,
            Err(e) if self.opts.live_source && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(())
            }
            Err(e) => return self.error(rel, format!("cannot open: {e}")),
        };
        let before = (entry.size, entry.mtime);
        self.emit_entry(entry)?;
        match self.content(&file) {
            Ok((ids, n)) => {
                if let Some(md) = file.metadata().ok().filter(|_| !self.opts.live_source) {
                    if (n, ts(md.mtime(), md.mtime_nsec())) != before || md.size() != n {
                        log::warn!(
                            "{}: file changed while it was read; stored as read ({n} bytes)",
                            String::from_utf8_lossy(rel)
                        );
                    }
                }
                if let Some(k) = link_key {
                    self.hardlinks.insert(k, ids);
                }
                Ok(())
            }
            // The error record tells bk-put to drop the partial file.
            Err(ContentError::Read(e)) => self.error(rel, format!("read failed: {e}")),
            Err(ContentError::Fatal(e)) => Err(e),
        }
    }

    /// A file given as bytes, owned by this process, mode 0600.
    fn extra_file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut entry = Entry::new(Kind::File, name.as_bytes(), 0o600, Timestamp::now());
        (entry.uid, entry.gid) = (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        );
        entry.size = bytes.len() as u64;
        self.emit_entry(entry)?;
        self.content(bytes).map(|_| ()).map_err(|e| match e {
            ContentError::Read(io) => Error::io(name, io),
            ContentError::Fatal(e) => e,
        })
    }

    fn emit_entry(&mut self, entry: Entry) -> Result<()> {
        if let Some(p) = &self.opts.progress {
            p.add_entry(&entry);
        }
        self.summary.entries += 1;
        self.summary.bytes += entry.size;
        self.record(Record::Entry(entry))
    }

    fn trailer(&mut self) -> Result<()> {
        let t = Trailer {
            v: wire::VERSION,
            entries: self.summary.entries,
            errors: self.summary.errors,
            bytes: self.summary.bytes,
            excluded: self.summary.excluded,
        };
        self.record(Record::Trailer(t))?;
        self.out.flush()
    }
}

/// The header a stream of the tree at `root` starts with (its source is
/// the absolute path), so a caller can learn the default identity first.
pub fn tree_header(root: &Path, opts: &ChunkOptions) -> Result<Header> {
    let abs = source_path(root)?;
    let mut h = header(abs.to_string_lossy().into_owned(), None, opts);
    h.xattrs = true;
    if let Some(s) = &opts.sources {
        h.paths = s
            .absolute
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
    }
    Ok(h)
}

/// The one spelling of a tree's root that identities and parents are
/// keyed by: absolute, without `.` components or a trailing slash, so
/// `/data/`, `/data/.` and `/data` are one source. `..` is kept: with
/// symlinks it cannot be resolved without reading the filesystem.
pub fn source_path(root: &Path) -> Result<std::path::PathBuf> {
    let abs = std::path::absolute(root).map_err(|e| Error::io(root, e))?;
    Ok(abs.components().collect())
}

fn header(source: String, name: Option<String>, opts: &ChunkOptions) -> Header {
    Header {
        v: wire::VERSION,
        source,
        name,
        chunker: opts.chunker_name.clone(),
        host: crate::sys::hostname(),
        user: crate::sys::username(),
        parent: opts.parent_name.clone(),
        ..Header::default()
    }
}

fn new_emitter<'a, S: StreamSink + ?Sized>(
    out: &'a mut S,
    opts: &'a ChunkOptions,
) -> Emitter<'a, S> {
    Emitter {
        out,
        opts,
        sent: HashSet::new(),
        hardlinks: HashMap::new(),
        buf: Vec::new(),
        summary: ChunkSummary::default(),
    }
}

/// Walks `root` and writes its chunk stream to `out` as JSON lines.
pub fn chunk_tree<W: Write>(root: &Path, opts: &ChunkOptions, out: &mut W) -> Result<ChunkSummary> {
    walk_tree(root, opts, &mut JsonLines(out))
}

/// Walks `root` and feeds its chunk stream to `sink`.
pub fn walk_tree<S: StreamSink + ?Sized>(
    root: &Path,
    opts: &ChunkOptions,
    sink: &mut S,
) -> Result<ChunkSummary> {
    walk_tree_ending(root, opts, sink, || Ok(Vec::new()))
}

/// [`walk_tree`], then the files `end` returns, called once when the walk
/// is over and before the trailer: files not on disk that belong to the
/// snapshot (a base backup's `backup_label`, known only once
/// pg_backup_stop returns). An error from `end` ends the stream without a
/// trailer, so nothing is committed.
pub fn walk_tree_ending<S: StreamSink + ?Sized>(
    root: &Path,
    opts: &ChunkOptions,
    sink: &mut S,
    end: impl FnOnce() -> Result<EndFiles>,
) -> Result<ChunkSummary> {
    // A root given as a symlink to a directory is walked as that directory
    // (walkdir always follows its root), so it is one, not a single file.
    let root_md = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
    let abs = source_path(root)?;
    let mut em = new_emitter(sink, opts);
    em.record(Record::Header(tree_header(root, opts)?))?;
    let single_name: Option<Vec<u8>> = (!root_md.is_dir()).then(|| {
        abs.file_name()
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_else(|| b"file".to_vec())
    });
    let mut walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()))
        .into_iter();
    while let Some(item) = walker.next() {
        crate::sys::check_interrupted()?;
        let item = match item {
            Ok(i) => i,
            Err(e) if opts.live_source && is_vanished(&e) => continue,
            Err(e) => {
                let p = e
                    .path()
                    .map(|p| {
                        p.strip_prefix(root)
                            .unwrap_or(p)
                            .as_os_str()
                            .as_bytes()
                            .to_vec()
                    })
                    .unwrap_or_default();
                let msg = e
                    .io_error()
                    .map(|io| io.to_string())
                    .unwrap_or_else(|| e.to_string());
                em.error(&p, format!("cannot read: {msg}"))?;
                continue;
            }
        };
        let rel: Vec<u8> = match &single_name {
            Some(n) => n.clone(),
            None => listing_path(root, item.path()),
        };
        if let (Some(filter), None) = (&opts.filter, &single_name) {
            let is_dir = item.file_type().is_dir();
            match filter(&rel, is_dir) {
                Take::All => {}
                Take::Nothing => {
                    if is_dir {
                        walker.skip_current_dir();
                    }
                    continue;
                }
                Take::DirOnly => {
                    if is_dir {
                        walker.skip_current_dir();
                    }
                }
            }
        }
        // The root's own entry describes the directory it leads to.
        let md = match if item.depth() == 0 {
            std::fs::metadata(item.path())
        } else {
            item.metadata().map_err(std::io::Error::from)
        } {
            Ok(m) => m,
            Err(e) if opts.live_source && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                em.error(&rel, format!("cannot stat: {e}"))?;
                continue;
            }
        };
        // None: outside every source, never selected, so not counted.
        let verdict = selected(opts, &rel, item.path(), &md);
        match verdict {
            Some(Verdict::Take) => {}
            Some(Verdict::DirOnly) => {
                if md.is_dir() {
                    walker.skip_current_dir();
                }
            }
            Some(Verdict::Exclude) | None => {
                if md.is_dir() {
                    walker.skip_current_dir();
                }
                if verdict.is_some() {
                    em.summary.excluded += 1;
                }
                continue;
            }
        }
        let mut entry = entry_from_metadata(&rel, &md);
        // A file's are read in Emitter::file, unless its parent has them.
        if entry.kind != Kind::File
            && !capture_xattrs(item.path(), &mut entry, &rel, opts.live_source)?
        {
            continue;
        }
        match entry.kind {
            Kind::File => em.file(item.path(), entry, &rel)?,
            Kind::Symlink => match std::fs::read_link(item.path()) {
                Ok(t) => {
                    entry.set_target_bytes(t.as_os_str().as_bytes());
                    em.emit_entry(entry)?;
                }
                Err(e) => em.error(&rel, format!("cannot read link: {e}"))?,
            },
            _ => em.emit_entry(entry)?,
        }
    }
    for (name, bytes) in end()? {
        em.extra_file(&name, &bytes)?;
    }
    em.trailer()?;
    Ok(em.summary)
}

/// What the sources and the exclusion rules take of a walked path; `None`
/// for a path outside every source.
fn selected(opts: &ChunkOptions, rel: &[u8], full: &Path, md: &Metadata) -> Option<Verdict> {
    match opts.sources.as_ref().map(|s| s.place(rel)) {
        Some(Place::Outside) => return None,
        Some(Place::Leading) => return Some(Verdict::Take),
        Some(Place::Inside) | None => {}
    }
    Some(match &opts.exclude {
        Some(rules) => rules.verdict(rel, full, md),
        None => Verdict::Take,
    })
}

/// Reads `full`'s extended attributes into `entry`; false when the path
/// vanished from a live source (leave it out). A failure is a warning:
/// the entry is still worth keeping.
fn capture_xattrs(full: &Path, entry: &mut Entry, rel: &[u8], live_source: bool) -> Result<bool> {
    match crate::sys::read_xattrs(full) {
        Ok(attrs) => entry.set_xattrs(attrs),
        Err(e) if live_source && e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => log::warn!(
            "{}: extended attributes not read: {e}",
            String::from_utf8_lossy(rel)
        ),
    }
    Ok(true)
}

fn is_vanished(e: &walkdir::Error) -> bool {
    e.io_error()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
}

/// Chunks a byte stream (e.g. `pg_dump` output) as one file called `name`,
/// written to `out` as JSON lines.
pub fn chunk_stream<W: Write>(
    name: &str,
    input: impl Read,
    opts: &ChunkOptions,
    out: &mut W,
) -> Result<ChunkSummary> {
    walk_stream(name, input, opts, &mut JsonLines(out))
}

/// The byte-stream header's default identity source (`-`, named `name`).
pub fn stream_header(name: &str, opts: &ChunkOptions) -> Header {
    header("-".into(), Some(name.to_string()), opts)
}

/// Chunks a byte stream as one file called `name` into `sink`.
pub fn walk_stream<S: StreamSink + ?Sized>(
    name: &str,
    input: impl Read,
    opts: &ChunkOptions,
    sink: &mut S,
) -> Result<ChunkSummary> {
    if name.is_empty()
        || name.starts_with('/')
        || name
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        return Err(Error::Usage(format!(
            "--name {name:?} must be a relative path without '.' or '..' components"
        )));
    }
    let mut em = new_emitter(sink, opts);
    em.record(Record::Header(stream_header(name, opts)))?;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let mut entry = Entry::new(Kind::File, name.as_bytes(), 0o600, Timestamp::now());
    (entry.uid, entry.gid) = (uid, gid);
    entry.user = crate::sys::user_name(uid);
    entry.group = crate::sys::group_name(gid);
    em.summary.entries += 1;
    if let Some(p) = &opts.progress {
        p.add_item();
    }
    em.record(Record::Entry(entry))?;
    let (_, n) = match em.content(input) {
        Ok(r) => r,
        Err(ContentError::Read(e)) => return Err(Error::io("<stdin>", e)),
        Err(ContentError::Fatal(e)) => return Err(e),
    };
    em.summary.bytes = n;
    em.trailer()?;
    Ok(em.summary)
}

/// A walked path as listings name it: relative to the walk's root, `.` for
/// the root itself.
pub(crate) fn listing_path(root: &Path, path: &Path) -> Vec<u8> {
    let r = path
        .strip_prefix(root)
        .unwrap_or(path)
        .as_os_str()
        .as_bytes();
    if r.is_empty() {
        b".".to_vec()
    } else {
        r.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn a_trailing_slash_or_dot_names_the_same_source() {
        let one = super::source_path(Path::new("/data")).unwrap();
        for other in ["/data/", "/data/.", "/./data//", "/data/./"] {
            assert_eq!(
                super::source_path(Path::new(other)).unwrap(),
                one,
                "{other}"
            );
        }
        assert_eq!(super::source_path(Path::new("/")).unwrap(), Path::new("/"));
    }
}
