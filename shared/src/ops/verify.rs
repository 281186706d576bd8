//! Integrity checks, restore drills and metrics (the library side of
//! `bk-verify`).
//!
//! * **Structure** (always): every key file, index object and snapshot
//!   authenticates and carries its name; every snapshot's listing chunks and
//!   every file chunk the listings name resolve through the index; every
//!   index entry lies inside an existing pack. Packs no index names are
//!   reported as garbage (`info`). Listings of successive snapshots share
//!   most of their chunks, so each distinct listing chunk is read and parsed
//!   once: results are memoized per (partial line carried in, chunk id).
//! * **Read data** (`--read-data`, or a subset): every selected pack is
//!   downloaded whole, its name (SHA-256) checked, its header parsed and
//!   compared with the index, and every blob decrypted, decompressed and
//!   re-hashed.
//! * **Against** (`--against DIR SNAPSHOT`): a snapshot compared with a live
//!   directory; file content is re-chunked with the repository's chunker and
//!   compared by chunk id, so nothing is downloaded unless the chunking is
//!   not comparable.
//!
//! Every problem becomes one [`Finding`]; damaged or missing data is mapped
//! back to the snapshots and paths it affects.

use crate::error::{Error, ExitCode, Result};
use crate::format::chunker::Chunker;
use crate::format::id::{ChunkId, ObjectId};
use crate::format::index::{Index, IndexFile};
use crate::format::pack::{read_header, BlobEntry, BlobKind};
use crate::format::wire::{
    self, Entry, Finding, Kind, Record, Severity, VerifyResult, VerifySummary,
};
use crate::ops::metrics::{IdentityMetrics, RepositoryMetrics};
use crate::store::backend::{ObjectInfo, ObjectKind};
use crate::store::keys::{authenticate_key_file, KeyAuth};
use crate::store::reader::ChunkReader;
use crate::store::repo::{check_name, parallel_map, Repository, Snapshot};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Affected paths listed per finding; the rest are counted in `more_paths`.
const MAX_PATHS: usize = 100;
/// Bound on pack bytes held in memory at once by `--read-data`.
const READ_MEMORY: u64 = 1 << 30;

/// Which packs `--read-data` downloads.
#[derive(Debug, Clone, PartialEq)]
pub enum PackSelection {
    All,
    /// The `n`-th (1-based) of `m` slices: packs whose id's first 8 bytes
    /// (big-endian) are `n - 1` modulo `m`. Stable across runs, so `m` runs
    /// with `n = 1..=m` read every pack exactly once.
    Slice {
        n: u32,
        m: u32,
    },
    /// A random share of the packs (percent, 0 < p ≤ 100).
    Percent(f64),
    /// Random packs until this many bytes.
    Bytes(u64),
}

impl std::str::FromStr for PackSelection {
    type Err = String;

    /// `N/M`, `P%`, or a size such as `500M`, `2G`, `1.5T` (binary units;
    /// `K`, `M`, `G`, `T`, optionally followed by `iB` or `B`; a plain
    /// number is bytes).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not N/M, P% or a size such as 500M or 2G");
        if let Some((n, m)) = s.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| bad())?;
            let m: u32 = m.trim().parse().map_err(|_| bad())?;
            if m == 0 || n == 0 || n > m {
                return Err(format!("{s:?}: need 1 <= N <= M"));
            }
            return Ok(PackSelection::Slice { n, m });
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "{s:?}: the percentage must be above 0 and at most 100"
                ));
            }
            return Ok(PackSelection::Percent(p));
        }
        let upper = s.to_ascii_uppercase();
        let num = upper
            .strip_suffix("IB")
            .or_else(|| upper.strip_suffix('B'))
            .unwrap_or(&upper);
        let (digits, mult) = match num.chars().last() {
            Some('K') => (&num[..num.len() - 1], 1u64 << 10),
            Some('M') => (&num[..num.len() - 1], 1 << 20),
            Some('G') => (&num[..num.len() - 1], 1 << 30),
            Some('T') => (&num[..num.len() - 1], 1 << 40),
            _ => (num, 1),
        };
        let v: f64 = digits.trim().parse().map_err(|_| bad())?;
        if !(v > 0.0 && v.is_finite()) {
            return Err(bad());
        }
        Ok(PackSelection::Bytes((v * mult as f64) as u64))
    }
}

impl PackSelection {
    /// The slice (1-based, of `m`) that holds pack `id`.
    pub fn slice_of(id: &ObjectId, m: u32) -> u32 {
        let first = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
        (first % m as u64) as u32 + 1
    }

    /// Indices into `packs` (id, size) to read, in the order to read them.
    pub fn select(&self, packs: &[(ObjectId, u64)]) -> Vec<usize> {
        use rand::seq::SliceRandom;
        let mut all: Vec<usize> = (0..packs.len()).collect();
        match *self {
            PackSelection::All => all,
            PackSelection::Slice { n, m } => all
                .into_iter()
                .filter(|&i| Self::slice_of(&packs[i].0, m) == n)
                .collect(),
            PackSelection::Percent(p) => {
                all.shuffle(&mut rand::thread_rng());
                let want = ((packs.len() as f64) * p / 100.0).ceil() as usize;
                all.truncate(want.min(packs.len()));
                all.sort_unstable();
                all
            }
            PackSelection::Bytes(budget) => {
                all.shuffle(&mut rand::thread_rng());
                let mut used = 0u64;
                let mut out: Vec<usize> = all
                    .into_iter()
                    .filter(|&i| {
                        let fits = used.saturating_add(packs[i].1) <= budget;
                        if fits {
                            used += packs[i].1;
                        }
                        fits
                    })
                    .collect();
                out.sort_unstable();
                out
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// `None`: structure only.
    pub read_data: Option<PackSelection>,
    /// Compare this snapshot (`latest`, an id or prefix) with a directory.
    pub against: Option<(PathBuf, String)>,
    /// Threads downloading and checking packs (0: twice the CPUs, 2 to 8).
    pub threads: usize,
}

/// The result of [`verify`].
#[derive(Debug, Clone)]
pub struct Outcome {
    pub summary: VerifySummary,
    pub exit: ExitCode,
    pub metrics: RepositoryMetrics,
}

/// A finding, plus the chunks whose snapshots and paths it should name.
struct Pending {
    finding: Finding,
    chunks: Vec<ChunkId>,
    /// A storage failure kept something from being checked (exit 1, not 13).
    unreadable: bool,
    /// Set for errors a concurrent prune or backup can cause: they are
    /// looked at again before they are reported.
    recheck: Option<Recheck>,
}

/// An error finding that the repository changing under verify can cause,
/// and what to look at again to tell that from damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Recheck {
    /// Index objects name this pack, and the pack listing lacked it.
    PackMissing(ObjectId),
    /// This snapshot's listing could not be read to its end, or names
    /// chunks that no index object or mark has.
    Listing(ObjectId),
}

/// Rounds of fresh listings a recheckable error must survive. A round in
/// which every remaining finding still holds ends the rechecking.
const RECHECK_ROUNDS: usize = 3;

/// The repository listed afresh for [`Verifier::recheck`], in the same
/// order as the first look: snapshots, marks, index objects, packs.
struct FreshView {
    snapshots: HashSet<ObjectId>,
    /// Live index objects and marks, merged.
    index: Index,
    /// Packs that a live index object names.
    named: HashSet<ObjectId>,
    packs: HashSet<ObjectId>,
}

#[derive(Default)]
struct Report {
    items: Mutex<Vec<Pending>>,
}

impl Report {
    fn add(
        &self,
        severity: Severity,
        check: &str,
        object: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(
            severity,
            check,
            object,
            message,
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        severity: Severity,
        check: &str,
        object: impl Into<String>,
        message: impl Into<String>,
        chunks: Vec<ChunkId>,
        snapshots: Vec<ObjectId>,
        paths: Vec<String>,
    ) {
        let (paths, more) = cap_paths(paths);
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                finding: Finding {
                    v: wire::VERSION,
                    severity,
                    check: check.into(),
                    object: object.into(),
                    message: message.into(),
                    snapshots,
                    paths,
                    more_paths: more,
                },
                chunks,
                unreadable: false,
                recheck: None,
            });
    }

    /// Adds an error finding that is re-checked before it is reported.
    fn push_rechecked(
        &self,
        recheck: Recheck,
        finding: Finding,
        chunks: Vec<ChunkId>,
        unreadable: bool,
    ) {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                finding,
                chunks,
                unreadable,
                recheck: Some(recheck),
            });
    }

    /// An error reading `object`: missing and damaged objects are errors of
    /// `check`; other storage failures are `read` errors (not damage).
    fn failure(&self, check: &str, object: &str, e: &Error) {
        let (check, message, unreadable) = match e {
            Error::Integrity { message, .. } => (check, message.clone(), false),
            e if e.is_not_found() => (check, "missing".to_string(), false),
            e => ("read", format!("could not be read: {e}"), true),
        };
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.push(Pending {
            finding: Finding {
                v: wire::VERSION,
                severity: Severity::Error,
                check: check.into(),
                object: object.into(),
                message,
                snapshots: Vec::new(),
                paths: Vec::new(),
                more_paths: 0,
            },
            chunks: Vec::new(),
            unreadable,
            recheck: None,
        });
    }
}

/// The index readers resolve chunks through: live index objects plus the
/// entries of marks not yet swept (see `Repository::load_index`).
fn merged_index<'f>(
    live: impl Iterator<Item = &'f IndexFile>,
    marks: &[crate::store::marks::StoredMark],
) -> Index {
    let mut index = Index::default();
    for f in live {
        index.add_file(f);
    }
    for m in marks {
        index.add_file(&m.mark.entries);
    }
    index.finish();
    index
}

/// An error finding with no snapshots or paths yet.
fn error_finding(check: &str, object: String, message: String) -> Finding {
    Finding {
        v: wire::VERSION,
        severity: Severity::Error,
        check: check.into(),
        object,
        message,
        snapshots: Vec::new(),
        paths: Vec::new(),
        more_paths: 0,
    }
}

fn cap_paths(mut paths: Vec<String>) -> (Vec<String>, u64) {
    paths.sort();
    paths.dedup();
    let more = paths.len().saturating_sub(MAX_PATHS) as u64;
    paths.truncate(MAX_PATHS);
    (paths, more)
}

fn pack_path(id: &ObjectId) -> String {
    ObjectKind::Pack.path(&id.to_hex())
}

fn is_object_name(name: &str) -> bool {
    name.len() == 64 && ObjectId::from_hex(name).is_some()
}

// ---------------------------------------------------------------------------
// Listings, memoized.

/// Why a listing could not be read to its end.
#[derive(Debug, Clone)]
struct ListingProblem {
    message: String,
    /// A storage failure, not damage.
    unreadable: bool,
}

/// One listing chunk parsed after a given partial line: what the complete
/// records in it yielded, and the partial line it leaves for the next chunk.
struct Segment<T> {
    found: Vec<T>,
    carry: Arc<Vec<u8>>,
    carry_hash: [u8; 32],
    problem: Option<ListingProblem>,
}

/// (SHA-256 of the partial line carried in, or zeros; listing chunk id).
type SegmentKey = ([u8; 32], ChunkId);

type Visit<'v, T> = &'v (dyn Fn(&Listed, &mut Vec<T>) + Sync);

/// What the listing walk needs of an entry, parsed straight from the line:
/// `wire::parse_line` goes through serde's buffering of internally tagged
/// enums, several times slower on listings of millions of chunk ids.
#[derive(serde::Deserialize)]
struct Listed<'a> {
    #[serde(default = "version_1")]
    v: u32,
    #[serde(borrow)]
    path: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    path_b64: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    chunks: Vec<ChunkId>,
}

fn version_1() -> u32 {
    wire::VERSION
}

impl Listed<'_> {
    fn path_bytes(&self) -> std::result::Result<Vec<u8>, String> {
        use base64::Engine;
        match &self.path_b64 {
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|e| format!("invalid base64 name: {e}")),
            None => Ok(self.path.as_bytes().to_vec()),
        }
    }
}

const ENTRY_PREFIX: &[u8] = br#"{"type":"entry","#;

/// Parses one listing line: `Ok(None)` for records other than entries.
fn parse_listed(line: &[u8]) -> std::result::Result<Option<Listed<'_>>, String> {
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
struct ListingWalker<'a, T> {
    reader: &'a ChunkReader<'a>,
    /// `None` while some thread is reading that segment: others wait for
    /// it instead of reading the same chunk again.
    memo: Mutex<HashMap<SegmentKey, Option<Arc<Segment<T>>>>>,
    done: Condvar,
    chunks_read: AtomicU64,
}

impl<'a, T: Clone + Send + Sync> ListingWalker<'a, T> {
    fn new(reader: &'a ChunkReader<'a>) -> Self {
        ListingWalker {
            reader,
            memo: Mutex::new(HashMap::new()),
            done: Condvar::new(),
            chunks_read: AtomicU64::new(0),
        }
    }

    fn walk(
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

    fn segment_cached(
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

    fn segment(&self, carry: &[u8], id: &ChunkId, visit: Visit<'_, T>) -> Segment<T> {
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

// ---------------------------------------------------------------------------

/// Index objects as loaded one by one.
struct IndexObjects {
    /// Authenticated index objects that no other one supersedes.
    active: Vec<(String, IndexFile)>,
    /// Every pack named by an active index object: (object, pack position).
    by_pack: HashMap<ObjectId, Vec<(usize, usize)>>,
}

struct Verifier<'a> {
    repo: &'a Repository,
    report: Report,
    meta_threads: usize,
}

/// Runs the checks `opts` asks for and writes one JSON line per finding,
/// then a `verify_summary` line, to `out`.
pub fn verify(repo: &Repository, opts: &VerifyOptions, out: &mut impl Write) -> Result<Outcome> {
    let started = Instant::now();
    let v = Verifier {
        repo,
        report: Report::default(),
        meta_threads: repo.backend().write_concurrency().max(4),
    };
    // Resolve the snapshot to compare first: a usage error should not wait
    // for the other checks.
    let against = match &opts.against {
        Some((dir, spec)) => Some((dir.clone(), repo.find_snapshot(spec, None)?)),
        None => None,
    };
    let mut summary = VerifySummary {
        v: wire::VERSION,
        ..Default::default()
    };

    // Listed in the reverse of the commit order (packs → index →
    // snapshot, marks before the compacted index that drops their packs):
    // what a listed object names was durable before the next listing
    // began, so it is in that listing unless a prune deleted it meanwhile
    // (ARCHITECTURE.md §15). Errors such a deletion can cause are
    // re-checked before they are reported (`Verifier::recheck`).
    let mut listed: HashMap<ObjectKind, Vec<ObjectInfo>> = HashMap::new();
    listed.insert(
        ObjectKind::Snapshot,
        repo.backend().list(ObjectKind::Snapshot)?,
    );
    // A damaged mark is prune's to report; readers then go without it.
    let marks = repo.marks().unwrap_or_default();
    for kind in [
        ObjectKind::Index,
        ObjectKind::Pack,
        ObjectKind::Gc,
        ObjectKind::Key,
        ObjectKind::Lock,
        ObjectKind::Config,
    ] {
        listed.insert(kind, repo.backend().list(kind)?);
    }
    let metrics_objects = ObjectKind::ALL
        .iter()
        .map(|k| {
            let l = &listed[k];
            (
                format!("{k:?}").to_lowercase(),
                l.len() as u64,
                l.iter().map(|o| o.size).sum(),
            )
        })
        .collect();
    v.check_config();
    summary.keys = v.check_keys(&listed[&ObjectKind::Key])?;

    let index_objects = v.load_index_objects(&listed[&ObjectKind::Index])?;
    summary.index_objects = listed[&ObjectKind::Index].len() as u64;
    // What readers resolve chunks through (`Repository::load_index`),
    // from the objects listed above; damaged ones are left out (and
    // reported).
    let index = merged_index(index_objects.active.iter().map(|(_, f)| f), &marks);
    drop(marks);
    summary.chunks = index.chunk_count() as u64;

    let packs: Vec<(ObjectId, u64)> = listed[&ObjectKind::Pack]
        .iter()
        .filter_map(|o| match ObjectId::from_hex(&o.name) {
            Some(id) if o.name.len() == 64 => Some((id, o.size)),
            _ => {
                v.report.add(
                    Severity::Info,
                    "pack",
                    format!("data/{}", o.name),
                    "not a bk object name; ignored by bk",
                );
                None
            }
        })
        .collect();
    summary.packs = packs.len() as u64;
    v.check_pack_references(&packs, &index_objects, &index);
    let snapshots = v.load_snapshots(&listed[&ObjectKind::Snapshot])?;
    summary.snapshots = snapshots.len() as u64;
    let reader = ChunkReader::new(repo, &index);
    let listing_chunks = v.check_listings(&snapshots, &index, &reader)?;
    summary.listing_chunks = listing_chunks;

    if let Some(sel) = &opts.read_data {
        let (n, bytes, blobs) = v.read_data(sel, &packs, &index_objects, &index, opts.threads)?;
        summary.packs_read = n;
        summary.bytes_read = bytes;
        summary.blobs_checked = blobs;
    }
    v.recheck(&index_objects)?;
    drop(index_objects);

    if let Some((dir, (id, snap))) = &against {
        let (entries, bytes) = v.against(dir, id, snap, &reader)?;
        summary.entries_compared = Some(entries);
        summary.bytes_compared = Some(bytes);
    }

    v.map_affected(&snapshots, &reader)?;

    let mut items = v
        .report
        .items
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    items.sort_by(|a, b| {
        (
            a.finding.severity,
            &a.finding.check,
            &a.finding.object,
            &a.finding.message,
        )
            .cmp(&(
                b.finding.severity,
                &b.finding.check,
                &b.finding.object,
                &b.finding.message,
            ))
    });
    let mut damage = false;
    let mut unreadable = false;
    for p in &items {
        match p.finding.severity {
            Severity::Error => {
                summary.errors += 1;
                if p.unreadable {
                    unreadable = true;
                } else {
                    damage = true;
                }
            }
            Severity::Warning => summary.warnings += 1,
            Severity::Info => summary.infos += 1,
        }
        wire::write_record(out, &Record::Finding(p.finding.clone()))
            .map_err(crate::error::stdout_error)?;
    }
    summary.result = if summary.errors > 0 {
        VerifyResult::Problems
    } else {
        VerifyResult::Ok
    };
    summary.duration_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    wire::write_record(out, &Record::VerifySummary(summary.clone()))
        .map_err(crate::error::stdout_error)?;
    out.flush().map_err(crate::error::stdout_error)?;

    let exit = if damage {
        ExitCode::Integrity
    } else if unreadable {
        ExitCode::Failure
    } else {
        ExitCode::Success
    };
    Ok(Outcome {
        summary,
        exit,
        metrics: RepositoryMetrics {
            objects: metrics_objects,
            identities: identity_metrics(&snapshots),
        },
    })
}

fn identity_metrics(snapshots: &[(ObjectId, Snapshot)]) -> Vec<IdentityMetrics> {
    let mut by: std::collections::BTreeMap<&str, IdentityMetrics> = Default::default();
    for (_, s) in snapshots {
        let m = by.entry(&s.identity).or_insert_with(|| IdentityMetrics {
            identity: s.identity.clone(),
            newest_timestamp: f64::MIN,
            newest_bytes: 0,
            snapshots: 0,
        });
        m.snapshots += 1;
        let t = s.time.secs as f64 + s.time.nanos as f64 / 1e9;
        if t >= m.newest_timestamp {
            m.newest_timestamp = t;
            m.newest_bytes = s.bytes;
        }
    }
    by.into_values().collect()
}

impl Verifier<'_> {
    fn check_config(&self) {
        let c = self.repo.config();
        if let Err(e) = c.chunker.validate() {
            self.report.add(Severity::Error, "config", "config", e);
        }
        if c.cipher != "aes-256-gcm" {
            self.report.add(
                Severity::Error,
                "config",
                "config",
                format!("unknown cipher {:?}", c.cipher),
            );
        }
    }

    /// Every key file parses and its MAC matches (the config was
    /// authenticated when the repository was opened).
    fn check_keys(&self, listed: &[ObjectInfo]) -> Result<u64> {
        let results = parallel_map(listed, self.meta_threads, |o| {
            Ok((
                o.name.clone(),
                self.repo.backend().get(ObjectKind::Key, &o.name),
            ))
        })?;
        for (name, raw) in results {
            let object = format!("keys/{name}");
            let raw = match raw {
                Ok(r) => r,
                Err(e) if e.is_not_found() => continue, // removed since the listing
                Err(e) => {
                    self.report.failure("key", &object, &e);
                    continue;
                }
            };
            match authenticate_key_file(self.repo.keys(), &name, &raw) {
                Ok(KeyAuth::Authentic) => {}
                Ok(KeyAuth::Unsigned) => self.report.add(
                    Severity::Warning,
                    "key",
                    object,
                    "the key file has no MAC (written before bk signed key files), so it \
                     cannot be authenticated; add a new key and remove this one to fix",
                ),
                Err(m) => self.report.add(Severity::Error, "key", object, m),
            }
        }
        Ok(listed.len() as u64)
    }

    /// The listed names that are object ids; others are reported (info)
    /// and skipped, as every reader skips them.
    fn object_names<'l>(
        &self,
        listed: &'l [ObjectInfo],
        check: &str,
        kind: ObjectKind,
    ) -> Vec<&'l str> {
        listed
            .iter()
            .map(|o| o.name.as_str())
            .filter(|n| {
                let ok = is_object_name(n);
                if !ok {
                    self.report.add(
                        Severity::Info,
                        check,
                        kind.path(n),
                        "not a bk object name; ignored by bk",
                    );
                }
                ok
            })
            .collect()
    }

    /// Loads and authenticates every index object; names that are not ids
    /// are reported and skipped (readers ignore them too).
    fn load_index_objects(&self, listed: &[ObjectInfo]) -> Result<IndexObjects> {
        let names = self.object_names(listed, "index", ObjectKind::Index);
        let loaded = parallel_map(&names, self.meta_threads, |name| {
            crate::sys::check_interrupted()?;
            let r = self
                .repo
                .backend()
                .get(ObjectKind::Index, name)
                .and_then(|raw| {
                    check_name(ObjectKind::Index, name, &raw)?;
                    IndexFile::open(self.repo.keys(), name, &raw)
                });
            Ok((name.to_string(), r))
        })?;
        let mut good = Vec::new();
        for (name, r) in loaded {
            match r {
                Ok(f) => good.push((name, f)),
                Err(e) if e.is_not_found() => {} // removed since the listing
                Err(e) => self.report.failure("index", &format!("index/{name}"), &e),
            }
        }
        let superseded: HashSet<ObjectId> = good
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut active = Vec::new();
        for (name, f) in good {
            if ObjectId::from_hex(&name).is_some_and(|id| superseded.contains(&id)) {
                self.report.add(
                    Severity::Info,
                    "index",
                    format!("index/{name}"),
                    "superseded by another index object; not used",
                );
            } else {
                active.push((name, f));
            }
        }
        let mut by_pack: HashMap<ObjectId, Vec<(usize, usize)>> = HashMap::new();
        for (fi, (_, f)) in active.iter().enumerate() {
            for (pi, (pack, _)) in f.packs.iter().enumerate() {
                by_pack.entry(*pack).or_default().push((fi, pi));
            }
        }
        Ok(IndexObjects { active, by_pack })
    }

    /// Every index entry lies inside an existing pack; unreferenced packs
    /// are garbage.
    fn check_pack_references(&self, packs: &[(ObjectId, u64)], idx: &IndexObjects, index: &Index) {
        let sizes: HashMap<ObjectId, u64> = packs.iter().copied().collect();
        let resolved_here = |id: &ChunkId, pack: &ObjectId, offset: u32| {
            index
                .get(id)
                .is_some_and(|l| l.pack == *pack && l.offset == offset)
        };
        for (pack, places) in &idx.by_pack {
            let names: BTreeSet<&str> = places
                .iter()
                .map(|(fi, _)| idx.active[*fi].0.as_str())
                .collect();
            let named_by = names
                .iter()
                .map(|n| format!("index/{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let entries = places
                .iter()
                .flat_map(|(fi, pi)| idx.active[*fi].1.packs[*pi].1.iter());
            match sizes.get(pack) {
                None => {
                    let entries: Vec<&BlobEntry> = entries.collect();
                    let chunks = entries
                        .iter()
                        .filter(|e| resolved_here(&e.id, pack, e.offset))
                        .map(|e| e.id)
                        .collect();
                    self.report.push_rechecked(
                        Recheck::PackMissing(*pack),
                        error_finding(
                            "pack",
                            pack_path(pack),
                            format!("missing: {named_by} lists {} blob(s) in it", entries.len()),
                        ),
                        chunks,
                        false,
                    );
                }
                Some(&size) => {
                    let beyond: Vec<&BlobEntry> = entries
                        .filter(|e| e.offset as u64 + e.len as u64 + 8 > size)
                        .collect();
                    if !beyond.is_empty() {
                        self.report.push(
                            Severity::Error,
                            "pack",
                            pack_path(pack),
                            format!(
                                "truncated or replaced: {} blob(s) that {named_by} lists end beyond its size ({size} bytes)",
                                beyond.len()
                            ),
                            beyond
                                .iter()
                                .filter(|e| resolved_here(&e.id, pack, e.offset))
                                .map(|e| e.id)
                                .collect(),
                            Vec::new(),
                            Vec::new(),
                        );
                    }
                }
            }
        }
        for (pack, size) in packs {
            if !idx.by_pack.contains_key(pack) {
                self.report.add(
                    Severity::Info,
                    "pack",
                    pack_path(pack),
                    format!("garbage: no index object names this pack ({size} bytes)"),
                );
            }
        }
    }

    /// Loads every snapshot (authenticated, name checked), oldest first.
    fn load_snapshots(&self, listed: &[ObjectInfo]) -> Result<Vec<(ObjectId, Snapshot)>> {
        let names = self.object_names(listed, "snapshot", ObjectKind::Snapshot);
        let loaded = parallel_map(&names, self.meta_threads, |name| {
            crate::sys::check_interrupted()?;
            let r = self
                .repo
                .backend()
                .get(ObjectKind::Snapshot, name)
                .and_then(|raw| self.repo.open_snapshot(name, &raw));
            Ok((name.to_string(), r))
        })?;
        let mut out = Vec::new();
        for (name, r) in loaded {
            match r {
                Ok(s) => out.push((ObjectId::from_hex(&name).expect("checked above"), s)),
                Err(e) if e.is_not_found() => {} // removed since the listing
                Err(e) => self
                    .report
                    .failure("snapshot", &format!("snapshots/{name}"), &e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Reads every snapshot's listing (each distinct chunk once) and checks
    /// that every file chunk it names is in the index. Returns the number of
    /// listing chunks read.
    fn check_listings(
        &self,
        snapshots: &[(ObjectId, Snapshot)],
        index: &Index,
        reader: &ChunkReader,
    ) -> Result<u64> {
        #[derive(Clone)]
        enum Issue {
            Missing(String, ChunkId),
            UnsafePath(String, String),
        }
        let visit = |e: &Listed, found: &mut Vec<Issue>| {
            let unsafe_path = match e.path_bytes() {
                Ok(p) => wire::check_relative_path(&p).err(),
                Err(m) => Some(m),
            };
            if let Some(m) = unsafe_path {
                found.push(Issue::UnsafePath(e.path.to_string(), m));
            }
            for c in &e.chunks {
                if !index.contains(c) {
                    found.push(Issue::Missing(e.path.to_string(), *c));
                }
            }
        };
        let walker = ListingWalker::<Issue>::new(reader);
        // Neighbours in time share the most chunks: walk them in that order.
        let mut order: Vec<usize> = (0..snapshots.len()).collect();
        order.sort_by(|&a, &b| {
            (&snapshots[a].1.identity, snapshots[a].1.time)
                .cmp(&(&snapshots[b].1.identity, snapshots[b].1.time))
        });
        let results = parallel_map(&order, self.meta_threads.min(4), |&i| {
            walker.walk(&snapshots[i].1.listing, &visit).map(|r| (i, r))
        })?;
        for (i, (issues, problem)) in results {
            let sid = snapshots[i].0;
            let object = format!("snapshots/{sid}");
            if let Some(p) = problem {
                let check = if p.unreadable { "read" } else { "listing" };
                let mut finding = error_finding(check, object.clone(), p.message);
                finding.snapshots = vec![sid];
                self.report.push_rechecked(
                    Recheck::Listing(sid),
                    finding,
                    Vec::new(),
                    p.unreadable,
                );
            }
            let mut missing_paths = Vec::new();
            let mut missing_chunks = HashSet::new();
            for issue in issues {
                match issue {
                    Issue::Missing(path, c) => {
                        missing_paths.push(path);
                        missing_chunks.insert(c);
                    }
                    Issue::UnsafePath(path, m) => self.report.push(
                        Severity::Error,
                        "listing",
                        object.clone(),
                        format!("unsafe path {path:?} ({m}); bk-get refuses to restore it"),
                        Vec::new(),
                        vec![sid],
                        vec![path],
                    ),
                }
            }
            if !missing_chunks.is_empty() {
                let mut first: Vec<&ChunkId> = missing_chunks.iter().collect();
                first.sort();
                let files = {
                    let mut p = missing_paths.clone();
                    p.sort();
                    p.dedup();
                    p.len()
                };
                let mut finding = error_finding(
                    "listing",
                    object,
                    format!(
                        "{} chunk(s) of {files} file(s) are in no index object (first: {})",
                        missing_chunks.len(),
                        first[0]
                    ),
                );
                finding.snapshots = vec![sid];
                (finding.paths, finding.more_paths) = cap_paths(missing_paths);
                self.report
                    .push_rechecked(Recheck::Listing(sid), finding, Vec::new(), false);
            }
        }
        Ok(walker.chunks_read.load(Ordering::Relaxed))
    }

    /// Looks again, on fresh listings, at every error a concurrent prune
    /// or backup can cause, and drops those that no longer hold: verify
    /// reports what a second run would report too, not what changed under
    /// it. A real deletion or damage holds in every round.
    fn recheck(&self, first_look: &IndexObjects) -> Result<()> {
        let known: HashMap<&str, &IndexFile> = first_look
            .active
            .iter()
            .map(|(name, f)| (name.as_str(), f))
            .collect();
        let mut dropped = 0;
        for _ in 0..RECHECK_ROUNDS {
            let pending: Vec<Recheck> = {
                let items = self.report.items.lock().unwrap_or_else(|p| p.into_inner());
                items.iter().filter_map(|p| p.recheck).collect()
            };
            if pending.is_empty() {
                break;
            }
            let view = self.fresh_view(&known)?;
            let mut gone = HashSet::new();
            for r in pending {
                if !self.still_holds(r, &view)? {
                    gone.insert(r);
                }
            }
            if gone.is_empty() {
                break;
            }
            let mut items = self.report.items.lock().unwrap_or_else(|p| p.into_inner());
            let before = items.len();
            items.retain(|p| p.recheck.is_none_or(|r| !gone.contains(&r)));
            dropped += before - items.len();
        }
        if dropped > 0 {
            self.report.add(
                Severity::Info,
                "concurrency",
                "repository",
                format!(
                    "{dropped} error(s) seen during the run no longer held on a fresh look: \
                     the repository changed meanwhile (a concurrent prune or backup)"
                ),
            );
        }
        Ok(())
    }

    /// Lists snapshots, marks, index objects and packs again, in the order
    /// of the first look. Index objects already read are not read again
    /// (objects never change); damaged ones are left out (reported once).
    fn fresh_view(&self, known: &HashMap<&str, &IndexFile>) -> Result<FreshView> {
        let backend = self.repo.backend();
        let snapshots = backend
            .list(ObjectKind::Snapshot)?
            .iter()
            .filter_map(|o| ObjectId::from_hex(&o.name))
            .collect();
        let marks = self.repo.marks().unwrap_or_default();
        let listed = backend.list(ObjectKind::Index)?;
        let unread: Vec<&str> = listed
            .iter()
            .map(|o| o.name.as_str())
            .filter(|n| is_object_name(n) && !known.contains_key(n))
            .collect();
        let read = parallel_map(&unread, self.meta_threads, |name| {
            let file = backend.get(ObjectKind::Index, name).and_then(|raw| {
                check_name(ObjectKind::Index, name, &raw)?;
                IndexFile::open(self.repo.keys(), name, &raw)
            });
            Ok((*name, file.ok()))
        })?;
        let mut files: Vec<(&str, &IndexFile)> = listed
            .iter()
            .filter_map(|o| known.get(o.name.as_str()).map(|f| (o.name.as_str(), *f)))
            .collect();
        files.extend(read.iter().filter_map(|(n, f)| f.as_ref().map(|f| (*n, f))));
        let superseded: HashSet<ObjectId> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        files.retain(|(n, _)| ObjectId::from_hex(n).is_none_or(|id| !superseded.contains(&id)));
        let named = files
            .iter()
            .flat_map(|(_, f)| f.packs.iter().map(|(p, _)| *p))
            .collect();
        let index = merged_index(files.iter().map(|(_, f)| *f), &marks);
        let packs = backend
            .list(ObjectKind::Pack)?
            .iter()
            .filter_map(|o| ObjectId::from_hex(&o.name))
            .collect();
        Ok(FreshView {
            snapshots,
            index,
            named,
            packs,
        })
    }

    /// Whether the error `r` stands for is still there in `view`.
    fn still_holds(&self, r: Recheck, view: &FreshView) -> Result<bool> {
        match r {
            Recheck::PackMissing(pack) => {
                Ok(!view.packs.contains(&pack) && view.named.contains(&pack))
            }
            Recheck::Listing(sid) => {
                if !view.snapshots.contains(&sid) {
                    return Ok(false);
                }
                let name = sid.to_hex();
                let snap = match self.repo.backend().get(ObjectKind::Snapshot, &name) {
                    Ok(raw) => match self.repo.open_snapshot(&name, &raw) {
                        Ok(s) => s,
                        Err(_) => return Ok(true),
                    },
                    Err(e) if e.is_not_found() => return Ok(false),
                    Err(_) => return Ok(true),
                };
                let reader = ChunkReader::new(self.repo, &view.index);
                let walker = ListingWalker::<ChunkId>::new(&reader);
                let visit = |e: &Listed, found: &mut Vec<ChunkId>| {
                    found.extend(e.chunks.iter().filter(|c| !view.index.contains(c)));
                };
                let (missing, problem) = walker.walk(&snap.listing, &visit)?;
                Ok(problem.is_some() || !missing.is_empty())
            }
        }
    }

    /// Downloads the selected packs and checks everything in them. Returns
    /// (packs, bytes, blobs) checked.
    fn read_data(
        &self,
        sel: &PackSelection,
        packs: &[(ObjectId, u64)],
        idx: &IndexObjects,
        index: &Index,
        threads: usize,
    ) -> Result<(u64, u64, u64)> {
        let chosen: Vec<(ObjectId, u64)> =
            sel.select(packs).into_iter().map(|i| packs[i]).collect();
        let largest = chosen.iter().map(|p| p.1).max().unwrap_or(1).max(1);
        let threads = if threads == 0 {
            // Twice the CPUs, like restores: reading a pack and checking
            // the previous one overlap.
            std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4)
                .clamp(2, 8)
        } else {
            threads
        };
        // Whole packs are held in memory: bound the total.
        let threads = threads.min((READ_MEMORY / largest).max(1) as usize);
        let bytes = AtomicU64::new(0);
        let blobs = AtomicU64::new(0);
        parallel_map(&chosen, threads, |(id, size)| {
            crate::sys::check_interrupted()?;
            let (b, n) = self.check_pack(id, *size, idx, index);
            bytes.fetch_add(b, Ordering::Relaxed);
            blobs.fetch_add(n, Ordering::Relaxed);
            Ok(())
        })?;
        Ok((chosen.len() as u64, bytes.into_inner(), blobs.into_inner()))
    }

    /// Checks one whole pack; returns (bytes read, blobs checked).
    fn check_pack(
        &self,
        id: &ObjectId,
        size: u64,
        idx: &IndexObjects,
        index: &Index,
    ) -> (u64, u64) {
        let hex = id.to_hex();
        let object = pack_path(id);
        let backend = self.repo.backend();
        let raw = match backend.get(ObjectKind::Pack, &hex) {
            Ok(r) => r,
            // Backends that check names on whole reads (S3) refuse a
            // damaged pack; read it by range to find out which blobs are
            // damaged and what they affect (the name is checked below).
            Err(e @ Error::Integrity { .. }) => {
                match backend.get_range_upto(ObjectKind::Pack, &hex, 0, size) {
                    Ok(r) if size > 0 && !r.is_empty() => r,
                    _ => {
                        self.report.failure("pack", &object, &e);
                        return (0, 0);
                    }
                }
            }
            // Listed moments ago: a missing pack that an index names is
            // already reported by the structure check.
            Err(e) if e.is_not_found() => return (0, 0),
            Err(e) => {
                self.report.failure("pack", &object, &e);
                return (0, 0);
            }
        };
        let referenced = idx.by_pack.get(id);
        let severity = if referenced.is_some() {
            Severity::Error
        } else {
            Severity::Warning
        };
        let garbage_note = if referenced.is_some() {
            ""
        } else {
            " (an unreferenced pack: no snapshot is affected)"
        };
        if ObjectId::digest(&raw) != *id {
            self.report.add(
                severity,
                "pack",
                object.clone(),
                format!("content does not match its name (damaged or replaced){garbage_note}"),
            );
        }
        let header = match read_header(self.repo.keys(), &hex, &raw) {
            Ok(h) => Some(h),
            Err(e) => {
                let msg = match e {
                    Error::Integrity { message, .. } => message,
                    e => e.to_string(),
                };
                self.report.add(
                    severity,
                    "pack",
                    object.clone(),
                    format!("pack header unreadable: {msg}{garbage_note}"),
                );
                None
            }
        };
        type Key = (u8, ChunkId, u32, u32, u32);
        let key = |e: &BlobEntry| (e.kind as u8, e.id, e.offset, e.len, e.raw_len);
        let mut indexed: Vec<BlobEntry> = Vec::new();
        let mut index_names = BTreeSet::new();
        if let Some(places) = referenced {
            let mut seen: HashSet<Key> = HashSet::new();
            for (fi, pi) in places {
                index_names.insert(format!("index/{}", idx.active[*fi].0));
                for e in &idx.active[*fi].1.packs[*pi].1 {
                    if seen.insert(key(e)) {
                        indexed.push(*e);
                    }
                }
            }
        }
        let mut blobs: Vec<BlobEntry> = indexed.clone();
        if let Some(h) = &header {
            let in_header: HashSet<Key> = h.iter().map(key).collect();
            let in_index: HashSet<Key> = indexed.iter().map(key).collect();
            if referenced.is_some() {
                let absent: Vec<&BlobEntry> = indexed
                    .iter()
                    .filter(|e| !in_header.contains(&key(e)))
                    .collect();
                if let Some(first) = absent.first() {
                    self.report.add(
                        Severity::Error,
                        "pack",
                        object.clone(),
                        format!(
                            "the index ({}) lists {} blob(s) the pack header does not have (first: chunk {} at offset {})",
                            index_names.iter().cloned().collect::<Vec<_>>().join(", "),
                            absent.len(),
                            first.id,
                            first.offset
                        ),
                    );
                }
                let extra = h.iter().filter(|e| !in_index.contains(&key(e))).count();
                if extra > 0 {
                    self.report.add(
                        Severity::Warning,
                        "pack",
                        object.clone(),
                        format!("{extra} blob(s) in the pack header are in no index object"),
                    );
                }
            }
            blobs.extend(h.iter().filter(|e| !in_index.contains(&key(e))).copied());
        }
        let mut damaged: Vec<(BlobEntry, String)> = Vec::new();
        for e in &blobs {
            let (start, end) = (e.offset as usize, e.offset as usize + e.len as usize);
            let Some(sealed) = raw.get(start..end) else {
                damaged.push((
                    *e,
                    format!("lies beyond the pack's end ({} bytes)", raw.len()),
                ));
                continue;
            };
            match self.repo.open_blob(&e.id, e.kind, &hex, sealed) {
                Ok(data) if data.len() != e.raw_len as usize => damaged.push((
                    *e,
                    format!("{} bytes, its entry says {}", data.len(), e.raw_len),
                )),
                Ok(_) => {}
                Err(Error::Integrity { message, .. }) => damaged.push((
                    *e,
                    message
                        .strip_prefix(&format!("chunk {}: ", e.id))
                        .unwrap_or(&message)
                        .to_string(),
                )),
                Err(err) => damaged.push((*e, err.to_string())),
            }
        }
        if !damaged.is_empty() {
            let detail: Vec<String> = damaged
                .iter()
                .take(3)
                .map(|(e, m)| {
                    let kind = if e.kind == BlobKind::Meta {
                        "listing chunk"
                    } else {
                        "chunk"
                    };
                    format!("{kind} {} at offset {}: {m}", e.id, e.offset)
                })
                .collect();
            let chunks = damaged
                .iter()
                .filter(|(e, _)| {
                    index
                        .get(&e.id)
                        .is_some_and(|l| l.pack == *id && l.offset == e.offset)
                })
                .map(|(e, _)| e.id)
                .collect();
            self.report.push(
                severity,
                "pack",
                object,
                format!(
                    "{} of {} blob(s) damaged{garbage_note}: {}{}",
                    damaged.len(),
                    blobs.len(),
                    detail.join("; "),
                    if damaged.len() > 3 { "; …" } else { "" }
                ),
                chunks,
                Vec::new(),
                Vec::new(),
            );
        }
        (raw.len() as u64, blobs.len() as u64)
    }

    /// Fills in the snapshots and paths that damaged chunks affect.
    fn map_affected(&self, snapshots: &[(ObjectId, Snapshot)], reader: &ChunkReader) -> Result<()> {
        let mut items = self.report.items.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: HashSet<ChunkId> = items
            .iter()
            .flat_map(|p| p.chunks.iter().copied())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // Listing chunks: the snapshots whose listing they belong to.
        let mut in_listing: HashMap<ChunkId, BTreeSet<usize>> = HashMap::new();
        for (i, (_, s)) in snapshots.iter().enumerate() {
            for c in &s.listing {
                if wanted.contains(c) {
                    in_listing.entry(*c).or_default().insert(i);
                }
            }
        }
        // File chunks: walk the listings.
        let visit = |e: &Listed, found: &mut Vec<(String, ChunkId)>| {
            for c in &e.chunks {
                if wanted.contains(c) {
                    found.push((e.path.to_string(), *c));
                }
            }
        };
        let walker = ListingWalker::new(reader);
        let order: Vec<usize> = (0..snapshots.len()).collect();
        let results = parallel_map(&order, self.meta_threads.min(4), |&i| {
            walker
                .walk(&snapshots[i].1.listing, &visit)
                .map(|(f, _)| (i, f))
        })?;
        let mut by_chunk: HashMap<ChunkId, Vec<(usize, String)>> = HashMap::new();
        for (i, found) in results {
            for (path, c) in found {
                by_chunk.entry(c).or_default().push((i, path));
            }
        }
        for p in items.iter_mut() {
            if p.chunks.is_empty() {
                continue;
            }
            let mut snaps: BTreeSet<usize> = BTreeSet::new();
            let mut paths = Vec::new();
            let mut listing_damage = false;
            for c in &p.chunks {
                if let Some(s) = in_listing.get(c) {
                    snaps.extend(s.iter().copied());
                    listing_damage = true;
                }
                for (i, path) in by_chunk.get(c).into_iter().flatten() {
                    snaps.insert(*i);
                    paths.push(path.clone());
                }
            }
            let mut ids: Vec<ObjectId> = p.finding.snapshots.clone();
            ids.extend(snaps.iter().map(|&i| snapshots[i].0));
            ids.sort();
            ids.dedup();
            p.finding.snapshots = ids;
            paths.append(&mut p.finding.paths);
            let (paths, more) = cap_paths(paths);
            p.finding.paths = paths;
            p.finding.more_paths += more;
            if listing_damage {
                p.finding.message.push_str(
                    " (affects snapshot listings: those snapshots cannot be listed or restored)",
                );
            }
        }
        Ok(())
    }

    /// Compares a snapshot with a directory. Returns (entries, bytes) compared.
    fn against(
        &self,
        dir: &Path,
        sid: &ObjectId,
        snap: &Snapshot,
        reader: &ChunkReader,
    ) -> Result<(u64, u64)> {
        let cmp = Against {
            report: &self.report,
            sid: *sid,
            chunker: self.repo.chunker(),
            reader,
            comparable: AtomicU8::new(UNKNOWN),
            bytes: AtomicU64::new(0),
        };
        let mut expected: HashMap<Vec<u8>, Entry> = HashMap::new();
        for e in crate::store::listing::entries(crate::store::listing::ListingRecords::new(
            self.repo,
            reader.index(),
            &snap.listing,
        )) {
            match e {
                Ok(e) => {
                    expected.insert(e.path_bytes()?, e);
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    self.report.push(
                        Severity::Error,
                        "against",
                        format!("snapshots/{sid}"),
                        format!("the listing cannot be read, so nothing was compared: {e}"),
                        Vec::new(),
                        vec![*sid],
                        Vec::new(),
                    );
                    return Ok((0, 0));
                }
            }
        }
        let root_md = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
        let single: Option<Vec<u8>> = (!root_md.is_dir()).then(|| {
            dir.file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_else(|| b"file".to_vec())
        });
        let mut compared = 0u64;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        std::thread::scope(|s| -> Result<()> {
            let (tx, rx) = crossbeam_channel::bounded::<(PathBuf, Entry)>(threads * 4);
            let mut workers = Vec::new();
            for _ in 0..threads {
                let rx = rx.clone();
                let cmp = &cmp;
                workers.push(s.spawn(move || -> Result<()> {
                    for (full, e) in rx {
                        cmp.content(&full, &e)?;
                    }
                    Ok(())
                }));
            }
            drop(rx);
            let walked = (|| -> Result<()> {
                let walker = walkdir::WalkDir::new(dir)
                    .follow_links(false)
                    .sort_by(|a, b| a.file_name().cmp(b.file_name()));
                for item in walker {
                    crate::sys::check_interrupted()?;
                    let item = match item {
                        Ok(i) => i,
                        Err(err) => {
                            let p = err
                                .path()
                                .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
                                .unwrap_or_default();
                            cmp.diff(&p, format!("cannot be read in {}: {err}", dir.display()));
                            continue;
                        }
                    };
                    let rel: Vec<u8> = match &single {
                        Some(n) => n.clone(),
                        None => crate::ops::source::listing_path(dir, item.path()),
                    };
                    let shown = String::from_utf8_lossy(&rel).into_owned();
                    let md = match item.metadata() {
                        Ok(m) => m,
                        Err(err) => {
                            cmp.diff(
                                &shown,
                                format!("cannot be read in {}: {err}", dir.display()),
                            );
                            continue;
                        }
                    };
                    compared += 1;
                    let Some(want) = expected.remove(&rel) else {
                        cmp.diff(
                            &shown,
                            format!(
                                "extra: a {} in {} that the snapshot does not have",
                                kind_name(&md),
                                dir.display()
                            ),
                        );
                        continue;
                    };
                    if let Some(content) = cmp.metadata(item.path(), &shown, &md, &want) {
                        if tx.send((item.path().to_path_buf(), content)).is_err() {
                            break;
                        }
                    }
                }
                Ok(())
            })();
            drop(tx);
            let mut worker_result = Ok(());
            for w in workers {
                match w.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => worker_result = Err(e),
                    Err(_) => {
                        worker_result = Err(Error::Other("comparison thread panicked".into()))
                    }
                }
            }
            walked?;
            worker_result
        })?;
        let mut missing: Vec<Entry> = expected.into_values().collect();
        missing.sort_by(|a, b| a.path.cmp(&b.path));
        for e in missing {
            compared += 1;
            cmp.diff(
                &e.path,
                format!(
                    "missing: the snapshot has a {} that {} does not",
                    kind_label(e.kind),
                    dir.display()
                ),
            );
        }
        Ok((compared, cmp.bytes.into_inner()))
    }
}

const UNKNOWN: u8 = 0;
const COMPARABLE: u8 = 1;
const NOT_COMPARABLE: u8 = 2;

struct Against<'a> {
    report: &'a Report,
    sid: ObjectId,
    chunker: Chunker,
    reader: &'a ChunkReader<'a>,
    /// Whether the snapshot was chunked like this repository's chunker does.
    comparable: AtomicU8,
    bytes: AtomicU64,
}

fn kind_label(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "directory",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
        Kind::CharDevice => "character device",
        Kind::BlockDevice => "block device",
    }
}

fn kind_name(md: &std::fs::Metadata) -> &'static str {
    kind_label(crate::ops::source::entry_from_metadata(b"x", md).kind)
}

/// Why comparing a file's content stopped.
enum Stop {
    Io(std::io::Error),
    Mismatch,
    Fatal(Error),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Io(e)
    }
}

impl Against<'_> {
    fn diff(&self, path: &str, message: String) {
        self.report.push(
            Severity::Error,
            "against",
            path.to_string(),
            message,
            Vec::new(),
            vec![self.sid],
            vec![path.to_string()],
        );
    }

    /// Compares metadata; returns the entry when the file's content must
    /// be compared too.
    fn metadata(
        &self,
        full: &Path,
        path: &str,
        md: &std::fs::Metadata,
        want: &Entry,
    ) -> Option<Entry> {
        let have = crate::ops::source::entry_from_metadata(b"x", md);
        if have.kind != want.kind {
            self.diff(
                path,
                format!(
                    "type: the snapshot has a {}, the directory a {}",
                    kind_label(want.kind),
                    kind_label(have.kind)
                ),
            );
            return None;
        }
        if have.mode != want.mode && want.kind != Kind::Symlink {
            self.diff(
                path,
                format!(
                    "mode: snapshot {:04o}, directory {:04o}",
                    want.mode, have.mode
                ),
            );
        }
        if have.mtime != want.mtime {
            self.diff(
                path,
                format!("mtime: snapshot {}, directory {}", want.mtime, have.mtime),
            );
        }
        match want.kind {
            Kind::Symlink => {
                let target = std::fs::read_link(full).map(|t| t.as_os_str().as_bytes().to_vec());
                match (target, want.target_bytes()) {
                    (Ok(t), Ok(Some(w))) if t == w => {}
                    (Ok(t), Ok(w)) => self.diff(
                        path,
                        format!(
                            "symlink target: snapshot {:?}, directory {:?}",
                            String::from_utf8_lossy(&w.unwrap_or_default()),
                            String::from_utf8_lossy(&t)
                        ),
                    ),
                    (Err(e), _) => self.diff(path, format!("symlink cannot be read: {e}")),
                    (_, Err(e)) => self.diff(path, format!("snapshot entry has a bad target: {e}")),
                }
                None
            }
            Kind::CharDevice | Kind::BlockDevice => {
                if have.rdev != want.rdev {
                    self.diff(
                        path,
                        format!(
                            "device number: snapshot {:?}, directory {:?}",
                            want.rdev, have.rdev
                        ),
                    );
                }
                None
            }
            Kind::File => {
                if have.size != want.size {
                    self.diff(
                        path,
                        format!(
                            "size: snapshot {} bytes, directory {} bytes",
                            want.size, have.size
                        ),
                    );
                    None
                } else {
                    Some(want.clone())
                }
            }
            _ => None,
        }
    }

    /// Compares a file's content with the snapshot's chunks: by chunk id
    /// when the chunking is comparable, else by the blobs' bytes.
    fn content(&self, full: &Path, want: &Entry) -> Result<()> {
        crate::sys::check_interrupted()?;
        let file = match std::fs::File::open(full) {
            Ok(f) => f,
            Err(e) => {
                self.diff(&want.path, format!("cannot be read: {e}"));
                return Ok(());
            }
        };
        if self.comparable.load(Ordering::Relaxed) != NOT_COMPARABLE {
            let mut i = 0usize;
            let mut offset = 0u64;
            let mut matched_cut = false;
            let r =
                self.chunker
                    .chunk_reader(&file, |chunk: &[u8]| -> std::result::Result<(), Stop> {
                        crate::sys::check_interrupted().map_err(Stop::Fatal)?;
                        if want.chunks.get(i) != Some(&ChunkId::digest(chunk)) {
                            return Err(Stop::Mismatch);
                        }
                        if i + 1 < want.chunks.len() {
                            matched_cut = true; // a cut both chunkers made before the end
                        }
                        i += 1;
                        offset += chunk.len() as u64;
                        Ok(())
                    });
            if matched_cut {
                self.comparable.store(COMPARABLE, Ordering::Relaxed);
            }
            match r {
                Ok(n) if i == want.chunks.len() => {
                    self.bytes.fetch_add(n, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(_) | Err(Stop::Mismatch) => {
                    if self.comparable.load(Ordering::Relaxed) == COMPARABLE {
                        self.bytes.fetch_add(offset, Ordering::Relaxed);
                        self.diff(
                            &want.path,
                            format!("content differs from the snapshot's (from byte {offset})"),
                        );
                        return Ok(());
                    }
                    // Maybe chunked differently (e.g. without the
                    // repository's key): compare the bytes from here.
                    return self.compare_bytes(&file, want, i, offset, true);
                }
                Err(Stop::Io(e)) => {
                    self.diff(&want.path, format!("cannot be read: {e}"));
                    return Ok(());
                }
                Err(Stop::Fatal(e)) => return Err(e),
            }
        }
        self.compare_bytes(&file, want, 0, 0, false)
    }

    /// Compares the file from `offset` with the snapshot's chunks from
    /// `first` on, reading the blobs. `id_mismatch`: chunk `first` had
    /// another id than the repository's chunker gave the same place.
    fn compare_bytes(
        &self,
        file: &std::fs::File,
        want: &Entry,
        first: usize,
        mut offset: u64,
        id_mismatch: bool,
    ) -> Result<()> {
        let mut buf = Vec::new();
        for (n, id) in want.chunks.iter().enumerate().skip(first) {
            crate::sys::check_interrupted()?;
            let data = match self.reader.read(id) {
                Ok(d) => d,
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    self.diff(
                        &want.path,
                        format!("content cannot be compared from byte {offset}: the snapshot's data is unreadable: {e}"),
                    );
                    return Ok(());
                }
            };
            buf.resize(data.len(), 0);
            let got = crate::sys::read_at_most(file, &mut buf, offset)
                .map_err(|e| Error::io(&want.path, e))?;
            if got != data.len() || buf[..got] != data[..] {
                let at = offset
                    + buf[..got]
                        .iter()
                        .zip(&data)
                        .position(|(a, b)| a != b)
                        .unwrap_or(got.min(data.len())) as u64;
                self.bytes.fetch_add(at, Ordering::Relaxed);
                self.diff(
                    &want.path,
                    format!("content differs from the snapshot's (from byte {at})"),
                );
                return Ok(());
            }
            if n == first && id_mismatch {
                // The snapshot's chunk holds the file's bytes, yet the
                // repository's chunker cut elsewhere: the snapshot was
                // chunked differently (e.g. without the repository's key).
                // Compare bytes from now on.
                let _ = self.comparable.compare_exchange(
                    UNKNOWN,
                    NOT_COMPARABLE,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            offset += data.len() as u64;
        }
        // The file must not be longer than the snapshot's content.
        let mut one = [0u8; 1];
        if crate::sys::read_at_most(file, &mut one, offset).map_err(|e| Error::io(&want.path, e))?
            > 0
        {
            self.diff(
                &want.path,
                format!("content differs: the file is longer than the snapshot's {offset} bytes"),
            );
            return Ok(());
        }
        self.bytes.fetch_add(offset, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u64) -> ObjectId {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&first.to_be_bytes());
        b[31] = 7;
        ObjectId(b)
    }

    #[test]
    fn subset_specs_parse() {
        assert_eq!("2/7".parse(), Ok(PackSelection::Slice { n: 2, m: 7 }));
        assert_eq!("10%".parse(), Ok(PackSelection::Percent(10.0)));
        assert_eq!("500M".parse(), Ok(PackSelection::Bytes(500 << 20)));
        assert_eq!("2G".parse(), Ok(PackSelection::Bytes(2 << 30)));
        assert_eq!("2GiB".parse(), Ok(PackSelection::Bytes(2 << 30)));
        assert_eq!("1.5k".parse(), Ok(PackSelection::Bytes(1536)));
        assert_eq!("4096".parse(), Ok(PackSelection::Bytes(4096)));
        for bad in ["0/3", "4/3", "1/0", "0%", "101%", "x", "", "-5M", "1/x"] {
            assert!(bad.parse::<PackSelection>().is_err(), "{bad}");
        }
    }

    #[test]
    fn slices_partition_the_packs_and_are_stable() {
        let packs: Vec<(ObjectId, u64)> = (0..200u64)
            .map(|i| (ObjectId::digest(&i.to_le_bytes()), 1000))
            .collect();
        let mut seen = vec![0; packs.len()];
        for n in 1..=7 {
            let s = PackSelection::Slice { n, m: 7 };
            let chosen = s.select(&packs);
            assert_eq!(chosen, s.select(&packs), "not stable");
            assert!(!chosen.is_empty());
            for i in chosen {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
        // The slice depends on the id's first bytes only.
        assert_eq!(PackSelection::slice_of(&id(14), 7), 1);
        assert_eq!(PackSelection::slice_of(&id(15), 7), 2);
        assert_eq!(PackSelection::slice_of(&id(u64::MAX), 1), 1);
    }

    #[test]
    fn random_subsets_respect_share_and_budget() {
        let packs: Vec<(ObjectId, u64)> = (0..100u64)
            .map(|i| (ObjectId::digest(&i.to_le_bytes()), 10 + i))
            .collect();
        assert_eq!(PackSelection::Percent(10.0).select(&packs).len(), 10);
        assert_eq!(PackSelection::Percent(0.5).select(&packs).len(), 1);
        assert_eq!(PackSelection::Percent(100.0).select(&packs).len(), 100);
        let chosen = PackSelection::Bytes(500).select(&packs);
        let total: u64 = chosen.iter().map(|&i| packs[i].1).sum();
        assert!(total <= 500 && total > 400, "{total}");
        assert!(PackSelection::Bytes(5).select(&packs).is_empty());
        assert_eq!(PackSelection::All.select(&packs).len(), 100);
    }

    #[test]
    fn findings_serialize_as_documented() {
        let f = Finding {
            v: 1,
            severity: Severity::Error,
            check: "pack".into(),
            object: "data/ab/abcd".into(),
            message: "missing".into(),
            snapshots: vec![ObjectId::digest(b"s")],
            paths: vec!["etc/hosts".into()],
            more_paths: 0,
        };
        let mut buf = Vec::new();
        wire::write_record(&mut buf, &Record::Finding(f.clone())).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"type":"finding","v":1,"severity":"error","check":"pack","object":"data/ab/abcd","message":"missing","snapshots":[""#),
            "{text}"
        );
        assert!(text.ends_with("\"paths\":[\"etc/hosts\"]}\n"), "{text}");
        let back = wire::RecordReader::new(&buf[..])
            .next_record()
            .unwrap()
            .unwrap();
        assert_eq!(back, Record::Finding(f));
        let s = VerifySummary {
            v: 1,
            result: VerifyResult::Problems,
            errors: 1,
            ..Default::default()
        };
        let mut buf = Vec::new();
        wire::write_record(&mut buf, &Record::VerifySummary(s.clone())).unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"type":"verify_summary","v":1,"result":"problems","errors":1,"#),
            "{text}"
        );
        assert_eq!(
            wire::RecordReader::new(&buf[..]).next_record().unwrap(),
            Some(Record::VerifySummary(s))
        );
        // Severity orders errors first.
        assert!(Severity::Error < Severity::Warning && Severity::Warning < Severity::Info);
    }
}
