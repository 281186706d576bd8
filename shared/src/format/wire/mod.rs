//! The JSON-lines records every bk tool reads and writes (see `bk-stream(5)`).
//!
//! One record per line, tagged by `type`, each carrying the stream format
//! version `v`. Readers skip record types and fields they do not know, so a
//! newer producer can add information without breaking older consumers; a
//! record whose `v` is newer than [`VERSION`] is refused, because its meaning
//! may have changed.

use crate::error::{Error, Result};
use crate::format::id::{ChunkId, ObjectId};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};

/// Stream format version written by this build.
pub const VERSION: u32 = 1;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn v1() -> u32 {
    VERSION
}

pub use crate::format::time::Timestamp;

mod admin;
mod sqlite;
mod wal;
pub use admin::*;
pub use sqlite::*;
pub use wal::*;

/// What kind of filesystem object an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// One filesystem object of a listing. Paths are relative to the source root
/// with `/` separators; the root itself is `.`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(default = "v1")]
    pub v: u32,
    /// The path as UTF-8 (lossy when the name is not UTF-8).
    pub path: String,
    /// The exact path bytes, base64, present only when `path` is lossy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_b64: Option<String>,
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub mtime: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctime: Option<Timestamp>,
    #[serde(default)]
    pub size: u64,
    /// Source device and inode: with `nlink` they identify hard links, and
    /// with size/mtime/ctime they let `bk-chunk --parent` skip unchanged files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlink: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_b64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Extended attributes, name → value as base64: user attributes,
    /// POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`)
    /// and file capabilities (`security.capability`). Absent in listings
    /// written before bk captured them, which restore without any.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkId>,
}

fn lossless(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(B64.encode(bytes)),
        ),
    }
}

fn raw_bytes(text: &str, b64: &Option<String>) -> Result<Vec<u8>> {
    match b64 {
        Some(b) => B64
            .decode(b)
            .map_err(|e| Error::Usage(format!("invalid base64 name for {text:?}: {e}"))),
        None => Ok(text.as_bytes().to_vec()),
    }
}

impl Entry {
    /// An entry with only the fields every kind has; the optional ones
    /// (owner names, ctime, device and inode, target, chunks) are empty.
    pub fn new(kind: Kind, path: &[u8], mode: u32, mtime: Timestamp) -> Self {
        let (path, path_b64) = lossless(path);
        Entry {
            v: VERSION,
            path,
            path_b64,
            kind,
            mode,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            mtime,
            ctime: None,
            size: 0,
            dev: None,
            ino: None,
            nlink: None,
            target: None,
            target_b64: None,
            rdev: None,
            xattrs: BTreeMap::new(),
            chunks: Vec::new(),
        }
    }

    /// The extended attributes as (name, value bytes).
    pub fn xattr_values(&self) -> Result<Vec<(&str, Vec<u8>)>> {
        self.xattrs
            .iter()
            .map(|(name, v)| {
                B64.decode(v)
                    .map(|bytes| (name.as_str(), bytes))
                    .map_err(|e| {
                        Error::Usage(format!("{}: xattr {name}: invalid base64: {e}", self.path))
                    })
            })
            .collect()
    }

    /// Stores extended attributes read from the filesystem.
    pub fn set_xattrs(&mut self, attrs: impl IntoIterator<Item = (String, Vec<u8>)>) {
        self.xattrs = xattr_map(attrs);
    }
}

/// Extended attributes as an entry's `xattrs` holds them (values base64).
pub fn xattr_map(attrs: impl IntoIterator<Item = (String, Vec<u8>)>) -> BTreeMap<String, String> {
    attrs.into_iter().map(|(n, v)| (n, B64.encode(v))).collect()
}

impl Entry {
    /// A regular file of `size` bytes made of `chunks`, mode 0644.
    pub fn file(path: &str, size: u64, mtime: Timestamp, chunks: Vec<ChunkId>) -> Self {
        Entry {
            size,
            chunks,
            ..Entry::new(Kind::File, path.as_bytes(), 0o644, mtime)
        }
    }

    pub fn path_bytes(&self) -> Result<Vec<u8>> {
        raw_bytes(&self.path, &self.path_b64)
    }

    pub fn set_path_bytes(&mut self, bytes: &[u8]) {
        (self.path, self.path_b64) = lossless(bytes);
    }

    pub fn target_bytes(&self) -> Result<Option<Vec<u8>>> {
        match &self.target {
            Some(t) => raw_bytes(t, &self.target_b64).map(Some),
            None => Ok(None),
        }
    }

    pub fn set_target_bytes(&mut self, bytes: &[u8]) {
        let (t, b) = lossless(bytes);
        self.target = Some(t);
        self.target_b64 = b;
    }
}

/// Checks that a listing path is relative and stays inside its root:
/// `.` (the root itself) or `/`-separated components that are not empty,
/// `.` or `..`, with no NUL byte. Both bk-put and bk-get enforce it.
pub fn check_relative_path(p: &[u8]) -> std::result::Result<(), String> {
    if p == b"." {
        return Ok(());
    }
    if p.is_empty() {
        return Err("empty path".into());
    }
    if p[0] == b'/' {
        return Err("absolute path".into());
    }
    if p.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" => return Err("empty path component".into()),
            b"." | b".." => return Err(format!("path component {:?}", String::from_utf8_lossy(c))),
            _ => {}
        }
    }
    Ok(())
}

/// Chunk bytes following the entry that references them. Each chunk appears
/// at most once per stream; later references carry only its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    pub id: ChunkId,
    pub data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct DataWire<'a> {
    #[serde(default = "v1")]
    v: u32,
    id: ChunkId,
    #[serde(borrow, default)]
    data: Option<std::borrow::Cow<'a, str>>,
    /// Only on a reference to a chunk the receiving repository holds
    /// already (a copy): its plaintext length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u32>,
}

/// First record of a chunk stream: where it came from and how it was chunked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Header {
    #[serde(default = "v1")]
    pub v: u32,
    /// Absolute source path, or `-` for stdin.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `default` or `repo:<repository id>` (the keyed chunker).
    pub chunker: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// With several sources in one snapshot: each, absolute (`source` is
    /// then the deepest directory holding them all, the listing's root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// A copy of a snapshot (`bk-get SNAPSHOT --stream`): the original's
    /// identity, time and tags, which the receiving bk-put keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The entries carry their extended attributes (an entry without
    /// `xattrs` has none); false from producers older than that.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub xattrs: bool,
}

/// A source object that could not be read; bk-put keeps it in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub path: String,
    pub message: String,
}

/// Last record: the stream is complete. Without it nothing is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Trailer {
    #[serde(default = "v1")]
    pub v: u32,
    pub entries: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub bytes: u64,
    /// Paths the exclusion rules left out (not counted in `entries`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub excluded: u64,
}

/// An identity (`user@host:/path`) in its one spelling: the path without
/// a trailing slash or `.` components, as bk-put derives it from a tree's
/// root, so a typed `--identity user@host:/data/` names the same snapshots.
pub fn normalize_identity(identity: &str) -> String {
    match identity.split_once(":/") {
        Some((who, path)) => {
            let parts: Vec<&str> = path
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            format!("{who}:/{}", parts.join("/"))
        }
        None => identity.to_string(),
    }
}

/// A committed snapshot, as printed by bk-put and bk-ls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: ObjectId,
    pub time: Timestamp,
    pub identity: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub files: u64,
    #[serde(default)]
    pub dirs: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_chunks: Option<u64>,
    /// Files whose entry came with its chunk ids (unchanged since the
    /// parent snapshot, or another name of a hard link): not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmodified_files: Option<u64>,
    /// Paths the exclusion rules left out of the snapshot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub excluded: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// bk-prune's verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: ObjectId,
    pub time: Timestamp,
    pub identity: String,
    /// The rendered group key, e.g. `identity=alice@db1:/var/lib/pg`.
    pub group: String,
    pub keep: bool,
    /// Every rule that keeps the snapshot, in the order `last`, `hourly`,
    /// `daily`, `weekly`, `monthly`, `yearly`, `within <D>`, then
    /// `tag <K=V>` in policy order; `no policy` for an empty policy; empty
    /// when the snapshot is forgotten.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// One garbage-collection step (done, or in a dry run planned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcRecord {
    #[serde(default = "v1")]
    pub v: u32,
    /// forget, mark, arm, postpone, repack, recover, keep, delete, write,
    /// swept, skip, missing.
    pub action: String,
    /// Repository-relative object path (`data/ab/…`, `index/…`, `gc/…`).
    pub object: String,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl GcRecord {
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// bk-prune's last line: totals of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneSummary {
    #[serde(default = "v1")]
    pub v: u32,
    pub dry_run: bool,
    pub snapshots_kept: u64,
    pub snapshots_forgotten: u64,
    pub packs_deleted: u64,
    pub bytes_freed: u64,
    pub objects_deleted: u64,
    pub packs_recovered: u64,
    pub packs_marked: u64,
    pub bytes_marked: u64,
    pub packs_repacked: u64,
    pub bytes_repacked: u64,
    pub index_objects_before: u64,
    pub index_objects_written: u64,
    pub marks_pending: u64,
    pub incomplete_removed: u64,
    pub locks_removed: u64,
    pub duration_s: f64,
}

/// How bad a [`Finding`] is. Only `error` findings make bk-verify fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Damaged, missing or unreadable data, or a difference found by `--against`.
    Error,
    /// Something that cannot be checked or looks wrong but loses no data.
    Warning,
    /// Worth knowing, harmless (e.g. unreferenced packs).
    Info,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Error, Severity::Warning, Severity::Info];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One problem found by bk-verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    #[serde(default = "v1")]
    pub v: u32,
    pub severity: Severity,
    /// Which check found it: `pack`, `index`, `snapshot`, `listing`, `key`,
    /// `config`, `read` (a storage error kept it from being checked), `against`.
    pub check: String,
    /// The object concerned: `data/ab/<id>`, `index/<id>`, `snapshots/<id>`,
    /// `keys/<name>`, `config`, or (with `--against`) a path in the snapshot.
    pub object: String,
    pub message: String,
    /// Snapshot ids whose data the problem affects.
    #[serde(default)]
    pub snapshots: Vec<ObjectId>,
    /// Paths (in those snapshots) whose data the problem affects.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Affected paths left out of `paths` to keep the line short.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more_paths: u64,
}

/// For `skip_serializing_if`: counts that are zero are left out.
pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Overall verdict of a bk-verify run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VerifyResult {
    #[default]
    Ok,
    Problems,
}

/// Last line of bk-verify's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct VerifySummary {
    #[serde(default = "v1")]
    pub v: u32,
    /// `ok` when there is no error finding.
    pub result: VerifyResult,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub warnings: u64,
    #[serde(default)]
    pub infos: u64,
    #[serde(default)]
    pub snapshots: u64,
    #[serde(default)]
    pub index_objects: u64,
    #[serde(default)]
    pub packs: u64,
    #[serde(default)]
    pub keys: u64,
    #[serde(default)]
    pub chunks: u64,
    /// Distinct listing chunks read and parsed.
    #[serde(default)]
    pub listing_chunks: u64,
    /// bk-wal's archived WAL files (history and backup labels included).
    #[serde(default)]
    pub wal_files: u64,
    /// `--read-data`: packs downloaded and checked, their bytes and blobs.
    #[serde(default)]
    pub packs_read: u64,
    #[serde(default)]
    pub bytes_read: u64,
    #[serde(default)]
    pub blobs_checked: u64,
    /// `--against`: entries compared and file bytes hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_compared: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_compared: Option<u64>,
    #[serde(default)]
    pub duration_s: f64,
}

/// Defines [`Record`] and its serde twins from one list, so a record type
/// is added in one place (its struct and one line below).
macro_rules! records {
    ($($(#[$doc:meta])* $variant:ident($ty:ty)),* $(,)?) => {
        /// Every record type. Unknown types read as [`Record::Unknown`].
        #[derive(Debug, Clone, PartialEq)]
        pub enum Record {
            Data(Data),
            /// A chunk already sent earlier in this stream: `data` without bytes.
            ChunkRef(ChunkId),
            /// A chunk the receiving repository already holds (a copy that
            /// asked first): `data` without bytes, with its `size`.
            KnownChunk { id: ChunkId, size: u32 },
            $($(#[$doc])* $variant($ty),)*
            Unknown,
        }

        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Tagged {
            $($variant($ty),)*
            #[serde(other)]
            Unknown,
        }

        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum TaggedRef<'a> {
            $($variant(&'a $ty),)*
        }

        impl Record {
            fn version(&self) -> u32 {
                match self {
                    $(Record::$variant(r) => r.v,)*
                    Record::Data(_) | Record::ChunkRef(_) | Record::KnownChunk { .. } | Record::Unknown => VERSION,
                }
            }

            fn from_tagged(t: Tagged) -> Option<Record> {
                match t {
                    $(Tagged::$variant(r) => Some(Record::$variant(r)),)*
                    Tagged::Unknown => None,
                }
            }

            fn tagged(&self) -> Option<TaggedRef<'_>> {
                match self {
                    $(Record::$variant(r) => Some(TaggedRef::$variant(r)),)*
                    Record::Data(_) | Record::ChunkRef(_) | Record::KnownChunk { .. } | Record::Unknown => None,
                }
            }
        }
    };
}

records! {
    Header(Header),
    Entry(Entry),
    Error(ErrorRecord),
    Trailer(Trailer),
    Snapshot(SnapshotRecord),
    Decision(DecisionRecord),
    Gc(GcRecord),
    PruneSummary(PruneSummary),
    Finding(Finding),
    VerifySummary(VerifySummary),
    /// bk-repo init: the new repository.
    Repository(RepositoryRecord),
    /// bk-repo key list/add/remove.
    Key(KeyRecord),
    /// bk-repo locks.
    Lock(LockRecord),
    /// bk-repo unlock: a lock it removed.
    Unlocked(LockRecord),
    /// bk-repo benchmark: one block's rate.
    Speed(SpeedRecord),
    /// bk-repo stats.
    Stats(StatsRecord),
    /// bk-wal restore.
    WalRestore(WalRestoreRecord),
    /// bk-wal info: the stanza.
    WalStanza(WalStanzaRecord),
    /// bk-wal info: a timeline.
    WalTimeline(WalTimelineRecord),
    /// bk-wal info: a base backup.
    WalBackup(WalBackupRecord),
    /// bk-sqlite replicate: an event of one database.
    SqliteEvent(SqliteEventRecord),
    /// bk-sqlite ls: a lineage of a database.
    SqliteLineage(SqliteLineageRecord),
    /// bk-sqlite restore.
    SqliteRestore(SqliteRestoreRecord),
    /// `--progress json`: how far a long operation has come (stderr).
    Progress(ProgressRecord),
}

/// One reading of a long operation's counters, written on stderr about
/// once a second with `--progress json`, and once more with `done` at the
/// end. Totals are 0 while unknown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProgressRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub tool: String,
    /// `backing up`, `restoring`, …
    pub operation: String,
    /// What `items` counts: `files`, `packs`, `segments`, …
    pub unit: String,
    pub items: u64,
    pub bytes: u64,
    #[serde(default)]
    pub total_items: u64,
    #[serde(default)]
    pub total_bytes: u64,
    pub elapsed_s: f64,
    #[serde(default)]
    pub done: bool,
}

const DATA_PREFIX: &[u8] = br#"{"type":"data""#;

/// Parses one line. Data records take a fast path that borrows the base64
/// text instead of copying it.
pub fn parse_line(line: &[u8], line_no: u64) -> Result<Record> {
    let bad = |e: String| Error::Stream {
        line: line_no,
        message: e,
    };
    let rec = if line.starts_with(DATA_PREFIX) {
        return data_record(line, line_no);
    } else {
        let value: Tagged = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
        match Record::from_tagged(value) {
            Some(r) => r,
            None => {
                // `{"type":"data"...}` written with other key order lands here.
                let v: serde_json::Value =
                    serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
                if v.get("type").and_then(|t| t.as_str()) == Some("data") {
                    data_record(line, line_no)?
                } else {
                    Record::Unknown
                }
            }
        }
    };
    if rec.version() > VERSION {
        return Err(bad(format!(
            "record version {} is newer than this bk understands ({VERSION})",
            rec.version()
        )));
    }
    Ok(rec)
}

fn data_record(line: &[u8], line_no: u64) -> Result<Record> {
    let bad = |e: String| Error::Stream {
        line: line_no,
        message: e,
    };
    let w: DataWire = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
    if w.v > VERSION {
        return Err(bad(format!(
            "record version {} is newer than this bk understands ({VERSION})",
            w.v
        )));
    }
    match (w.data, w.size) {
        (None, Some(size)) => Ok(Record::KnownChunk { id: w.id, size }),
        (None, None) => Ok(Record::ChunkRef(w.id)),
        (Some(_), Some(_)) => Err(bad("a data record with both data and size".into())),
        (Some(text), None) => {
            let data = B64
                .decode(text.as_bytes())
                .map_err(|e| bad(format!("chunk data is not base64: {e}")))?;
            Ok(Record::Data(Data { id: w.id, data }))
        }
    }
}

/// The longest line a stream may have: a data record with the largest
/// chunk (16 MiB, base64 about 21.4 MiB) and its fields fits with room to
/// spare. A longer one is refused before it is read whole, so a hostile or
/// broken producer cannot make a reader buffer without bound.
pub const MAX_LINE: u64 = 32 << 20;

/// Reads records line by line, reusing one buffer.
pub struct RecordReader<R> {
    inner: R,
    buf: Vec<u8>,
    line: u64,
}

impl<R: BufRead> RecordReader<R> {
    pub fn new(inner: R) -> Self {
        RecordReader {
            inner,
            buf: Vec::with_capacity(1 << 16),
            line: 0,
        }
    }

    pub fn line(&self) -> u64 {
        self.line
    }

    /// Next record, or `None` at end of input. Blank lines are skipped.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            self.buf.clear();
            let n = (&mut self.inner)
                .take(MAX_LINE + 1)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| Error::io("<stdin>", e))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if n as u64 > MAX_LINE {
                return Err(Error::Usage(format!(
                    "line {} is longer than {} MiB: not a bk stream (a data record holds at most one 16 MiB chunk); nothing was committed",
                    self.line,
                    MAX_LINE >> 20
                )));
            }
            if self.buf.last() != Some(&b'\n') && !trim_ascii(&self.buf).is_empty() {
                return Err(Error::IncompleteStream(format!(
                    "the input ends in the middle of line {} (was the producer killed?); nothing was committed",
                    self.line
                )));
            }
            let line = trim_ascii(&self.buf);
            if line.is_empty() {
                continue;
            }
            return parse_line(line, self.line).map(Some);
        }
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &b[start..end]
}

/// Writes one record and its newline.
pub fn write_record<W: Write>(w: &mut W, rec: &Record) -> std::io::Result<()> {
    match rec {
        Record::Data(d) => write_data(w, &d.id, &d.data),
        Record::ChunkRef(id) => write_chunk_ref(w, id),
        Record::KnownChunk { id, size } => write_known_chunk(w, id, *size),
        r => match r.tagged() {
            Some(t) => write_json(w, &t),
            None => Ok(()),
        },
    }
}

/// Writes any serializable value as one JSON line.
pub fn write_json<W: Write, T: Serialize + ?Sized>(w: &mut W, value: &T) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, value).map_err(std::io::Error::from)?;
    w.write_all(b"\n")
}

/// Writes a reference to a chunk whose data this stream already carried.
pub fn write_chunk_ref<W: Write>(w: &mut W, id: &ChunkId) -> std::io::Result<()> {
    writeln!(w, "{{\"type\":\"data\",\"v\":1,\"id\":\"{id}\"}}")
}

/// Writes a reference to a chunk the receiving repository holds.
pub fn write_known_chunk<W: Write>(w: &mut W, id: &ChunkId, size: u32) -> std::io::Result<()> {
    writeln!(
        w,
        "{{\"type\":\"data\",\"v\":1,\"id\":\"{id}\",\"size\":{size}}}"
    )
}

/// Writes a data record, encoding base64 straight into the writer.
pub fn write_data<W: Write>(w: &mut W, id: &ChunkId, data: &[u8]) -> std::io::Result<()> {
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + 120);
    out.extend_from_slice(br#"{"type":"data","v":1,"id":""#);
    out.extend_from_slice(id.to_hex().as_bytes());
    out.extend_from_slice(br#"","data":""#);
    let start = out.len();
    out.resize(
        start + base64::encoded_len(data.len(), true).unwrap_or(0),
        0,
    );
    let n = B64
        .encode_slice(data, &mut out[start..])
        .expect("buffer sized by encoded_len");
    out.truncate(start + n);
    out.extend_from_slice(b"\"}\n");
    w.write_all(&out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn identities_have_one_spelling() {
        for (typed, want) in [
            ("u@h:/data/", "u@h:/data"),
            ("u@h:/data/./x//", "u@h:/data/x"),
            ("u@h:/", "u@h:/"),
            ("u@h:/data", "u@h:/data"),
            ("u@h:db.sql", "u@h:db.sql"),
        ] {
            assert_eq!(normalize_identity(typed), want, "{typed}");
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn entry(path: &[u8]) -> Entry {
        let mtime = Timestamp {
            secs: 1_700_000_000,
            nanos: 123_456_789,
        };
        let mut e = Entry::file("", 5, mtime, vec![ChunkId::digest(b"hello")]);
        (e.uid, e.gid, e.user) = (1000, 1000, Some("alice".into()));
        (e.dev, e.ino, e.nlink) = (Some(1), Some(2), Some(1));
        e.set_path_bytes(path);
        e
    }

    fn round_trip(rec: &Record) -> Record {
        let mut buf = Vec::new();
        write_record(&mut buf, rec).unwrap();
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1);
        RecordReader::new(&buf[..]).next_record().unwrap().unwrap()
    }

    #[test]
    fn exact_wire_shapes() {
        let mut buf = Vec::new();
        write_data(&mut buf, &ChunkId::digest(b"hi"), b"hi").unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"type\":\"data\",\"v\":1,\"id\":\"8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4\",\"data\":\"aGk=\"}\n"
        );
        let mut buf = Vec::new();
        write_record(
            &mut buf,
            &Record::Trailer(Trailer {
                v: 1,
                entries: 3,
                errors: 0,
                bytes: 9,
                excluded: 0,
            }),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "{\"type\":\"trailer\",\"v\":1,\"entries\":3,\"errors\":0,\"bytes\":9}\n",
            "a count of 0 excluded is left out: older readers see the same line"
        );
        let e = serde_json::to_value(entry(b"a/b")).unwrap();
        assert_eq!(e["mtime"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(e["kind"], "file");
        assert!(e.get("path_b64").is_none());
    }

    #[test]
    fn records_round_trip() {
        let recs = [
            Record::Entry(entry(b"dir/file")),
            Record::Entry(entry(b"bad\xffname")),
            Record::Data(Data {
                id: ChunkId::digest(b"x"),
                data: b"x".to_vec(),
            }),
            Record::ChunkRef(ChunkId::digest(b"x")),
            Record::Error(ErrorRecord {
                v: 1,
                path: "p".into(),
                message: "denied".into(),
            }),
            Record::Header(Header {
                v: 1,
                source: "/src".into(),
                name: None,
                chunker: "default".into(),
                host: None,
                user: None,
                parent: Some("ab".into()),
                paths: vec!["/src/a".into(), "/src/b".into()],
                identity: Some("u@h:/src".into()),
                time: Some(Timestamp { secs: 5, nanos: 6 }),
                tags: [("k".to_string(), "v".to_string())].into(),
                xattrs: true,
            }),
            Record::KnownChunk {
                id: ChunkId::digest(b"y"),
                size: 7,
            },
        ];
        for r in &recs {
            assert_eq!(&round_trip(r), r);
        }
        let Record::Entry(e) = round_trip(&recs[1]) else {
            panic!()
        };
        assert_eq!(e.path_bytes().unwrap(), b"bad\xffname");
        assert_eq!(e.path, "bad\u{fffd}name");
    }

    #[test]
    fn unknown_types_and_fields_are_tolerated() {
        let mut r = RecordReader::new(&b"{\"type\":\"future\",\"v\":1,\"x\":1}\n\n{\"type\":\"trailer\",\"v\":1,\"entries\":0,\"new_field\":[1,2]}\n{\"v\":1,\"data\":\"aGk=\",\"type\":\"data\",\"id\":\"8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4\"}\n"[..]);
        assert_eq!(r.next_record().unwrap(), Some(Record::Unknown));
        assert!(matches!(r.next_record().unwrap(), Some(Record::Trailer(t)) if t.entries == 0));
        assert!(matches!(r.next_record().unwrap(), Some(Record::Data(d)) if d.data == b"hi"));
        assert_eq!(r.next_record().unwrap(), None);
    }

    #[test]
    fn newer_versions_and_garbage_are_refused_with_line_numbers() {
        let err = RecordReader::new(&b"{\"type\":\"trailer\",\"v\":2,\"entries\":0}\n"[..])
            .next_record()
            .unwrap_err();
        assert!(
            err.to_string().contains("line 1") && err.to_string().contains("newer"),
            "{err}"
        );
        let mut r = RecordReader::new(&b"\n{\"type\":\"entry\"\n"[..]);
        let err = r.next_record().unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_line(br#"{"type":"data","v":1,"id":"00","data":"aGk="}"#, 1).unwrap_err();
        assert!(err.to_string().contains("hex"), "{err}");
    }

    #[test]
    fn relative_path_check() {
        for ok in [&b"."[..], b"a", b"a/b", b"a/.b", b"a/b..", b"\xff/x"] {
            assert!(check_relative_path(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"/etc/passwd",
            b"../x",
            b"a/../../x",
            b"a//b",
            b"a/./b",
            b"a/",
            b"a\0b",
            b"./a",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn data_records_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let rec = Record::Data(Data { id: ChunkId::digest(&data), data });
            prop_assert_eq!(round_trip(&rec), rec);
        }

        #[test]
        fn entries_round_trip(path in proptest::collection::vec(any::<u8>(), 1..64), secs in -10_000_000_000i64..10_000_000_000, nanos in 0u32..1_000_000_000) {
            let mut e = entry(&path);
            e.mtime = Timestamp { secs, nanos };
            let Record::Entry(back) = round_trip(&Record::Entry(e.clone())) else { panic!() };
            prop_assert_eq!(back.path_bytes().unwrap(), path);
            prop_assert_eq!(back, e);
        }
    }
}

#[cfg(test)]
mod line_bound {
    use super::*;

    /// Regression: a line without a newline was read whole into memory,
    /// however long (issue 32: no unbounded memory from hostile input).
    #[test]
    fn regression_a_line_longer_than_the_bound_is_refused_before_it_is_read_whole() {
        struct Endless(u64);
        impl std::io::Read for Endless {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                buf.fill(b'a');
                self.0 += buf.len() as u64;
                Ok(buf.len())
            }
        }
        let mut src = std::io::BufReader::new(Endless(0));
        let mut r = RecordReader::new(&mut src);
        let e = r.next_record().unwrap_err();
        assert!(e.to_string().contains("longer than 32 MiB"), "{e}");
        drop(r);
        assert!(
            src.get_ref().0 <= MAX_LINE + (1 << 20),
            "read {} bytes",
            src.get_ref().0
        );
    }
}
