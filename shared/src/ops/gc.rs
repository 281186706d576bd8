//! Garbage collection: reclaiming the space of data no snapshot needs,
//! without ever deleting data that a running backup may still commit.
//!
//! # Protocol (two-phase deletion; docs/ARCHITECTURE.md §24 has the proofs)
//!
//! A backup (bk-put) takes a shared lock, *then* loads the index it
//! deduplicates against ([`Repository::load_index_for_write`]), uploads
//! packs, writes index objects and finally its snapshot, then drops its
//! lock. It may refer to any chunk that was in the index it loaded.
//!
//! Prune (holding a *prune* lock, which only other prunes respect) works in
//! two phases that are separated in time:
//!
//! 1. **Mark.** It decides which packs no snapshot needs (and which to
//!    repack), then writes, in this order: the new packs of a repack; a
//!    *mark* object in `gc/` naming the packs to delete together with their
//!    index entries and the index objects about to be replaced; a compacted
//!    index that no longer names the marked packs and supersedes every
//!    index object it read; then it lists the locks and writes an *arm*
//!    object naming the live lock holders it saw (`waiting_for`). Nothing
//!    is deleted.
//! 2. **Sweep** (a later run, or the same one with `--grace 0`). An armed
//!    mark may be swept once the arm is older than the grace period on the
//!    storage's clock and none of the holders it waits for holds a live
//!    lock. The sweep then — after that check — lists the snapshots and the
//!    index afresh, and for each marked pack: if a live index object names
//!    it, it is left alone (a backup indexed it); if a snapshot refers to a
//!    chunk in it that no live index has elsewhere, the pack is
//!    *recovered* (a new index object names it again); otherwise it is
//!    deleted. Then the superseded index objects, the arm and the mark go.
//!
//! Why this is safe: a backup whose lock was visible when the arm's lock
//! listing ran is waited for, and its snapshot (written before its lock
//! went away) is seen by the sweep's listing and recovers what it uses. A
//! backup whose lock was not yet visible took it after the compacted index
//! was written, so its index load excludes the marked packs and it cannot
//! refer to them. A backup that lost its lock (could not refresh it for
//! [`crate::store::locks::LOST_AFTER`]) refuses to commit. Readers resolve chunks
//! through [`Repository::load_index`], which includes the marks' entries,
//! so a snapshot that raced a mark stays readable until it is recovered.

use crate::error::{Error, Result};
use crate::format::id::{ChunkId, ObjectId};
use crate::format::index::{Index, IndexFile};
use crate::format::pack::{BlobEntry, BlobKind};
use crate::format::time::Timestamp;
use crate::format::wire::{GcRecord, PruneSummary};
use crate::store::backend::{ObjectKind, Staged};
use crate::store::locks::{list_lock_objects, storage_now, LockGuard};
use crate::store::marks::{load_arms, Arm, Mark, MarkReason, MarkedPack, StoredArm, StoredMark};
use crate::store::packer::PackStream;
use crate::store::reader::ChunkReader;
use crate::store::repo::{check_name, parallel_map, IndexFiles, Repository, Snapshot};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Compacted index objects hold at most this many blobs each, so loading
/// stays parallel and no single object becomes huge.
const INDEX_PART_BLOBS: usize = 250_000;
/// Temp files and multipart uploads are never younger than this when
/// removed, whatever the grace period: nothing tells us who writes them.
const MIN_INCOMPLETE_AGE: Duration = Duration::from_secs(3600);

/// How much unused space in partly used packs is tolerated before
/// repacking (restic's `--max-unused`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxUnused {
    /// A share of the bytes still in use.
    Fraction(f64),
    Bytes(u64),
    Unlimited,
}

impl MaxUnused {
    /// `5%`, `200M`/`1G` (binary units), `0` or `unlimited`.
    pub fn parse(s: &str) -> Result<MaxUnused> {
        let bad = || {
            Error::Usage(format!(
                "invalid --max-unused {s:?}: use a percentage (5%), a size (200M, 1G) or \"unlimited\""
            ))
        };
        let s = s.trim();
        if s == "unlimited" {
            return Ok(MaxUnused::Unlimited);
        }
        if let Some(p) = s.strip_suffix('%') {
            let v: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&v) {
                return Err(bad());
            }
            return Ok(MaxUnused::Fraction(v / 100.0));
        }
        let (num, mult) = match s.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let m = match c.to_ascii_uppercase() {
                    'K' => 1u64 << 10,
                    'M' => 1 << 20,
                    'G' => 1 << 30,
                    'T' => 1 << 40,
                    _ => return Err(bad()),
                };
                (&s[..i], m)
            }
            _ => (s, 1),
        };
        let n: u64 = num.trim().parse().map_err(|_| bad())?;
        Ok(MaxUnused::Bytes(n.checked_mul(mult).ok_or_else(bad)?))
    }

    fn limit(self, used: u64) -> u64 {
        match self {
            MaxUnused::Fraction(f) => (used as f64 * f) as u64,
            MaxUnused::Bytes(b) => b,
            MaxUnused::Unlimited => u64::MAX,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GcOptions {
    /// How long an armed mark waits (storage clock) before its sweep.
    pub grace: Duration,
    pub max_unused: MaxUnused,
    pub dry_run: bool,
    /// Counts the packs repacked and deleted, for a progress bar.
    pub progress: Option<std::sync::Arc<crate::ops::progress::Progress>>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            grace: Duration::from_secs(3600),
            max_unused: MaxUnused::Fraction(0.05),
            dry_run: false,
            progress: None,
        }
    }
}

/// One thing garbage collection did (or, in a dry run, would do).
fn action(action: &str, object: String, bytes: u64) -> GcRecord {
    GcRecord {
        v: crate::format::wire::VERSION,
        action: action.to_string(),
        object,
        bytes,
        reason: None,
    }
}

/// A pack and the blobs it holds.
type PackEntries = (ObjectId, Vec<BlobEntry>);

type Emit<'e> = dyn FnMut(&GcRecord) -> Result<()> + 'e;

/// Forgets `forget` (snapshot ids), sweeps marks that are due, and marks
/// what is no longer needed. `lock` must be this process's prune lock.
pub fn collect(
    repo: &Repository,
    lock: &LockGuard,
    forget: &[ObjectId],
    opts: &GcOptions,
    emit: &mut Emit<'_>,
) -> Result<PruneSummary> {
    let started = Instant::now();
    let mut gc = Gc {
        repo,
        lock,
        opts,
        forget: forget.iter().copied().collect(),
        scanner: RefScanner::default(),
        summary: forget_only(repo, forget, opts, emit)?,
        index_deletes: HashSet::new(),
    };
    gc.sweep(emit)?;
    crate::sys::check_interrupted()?;
    let marked = gc.mark(emit)?;
    if marked && !opts.dry_run && opts.grace.is_zero() {
        gc.sweep(emit)?;
    }
    gc.clean_incomplete(emit)?;
    gc.summary.marks_pending = if opts.dry_run {
        0
    } else {
        repo.marks()?.len() as u64
    };
    gc.summary.duration_s = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(gc.summary)
}

/// Forgets snapshots without collecting garbage (`bk-prune --no-gc`).
pub fn forget_only(
    repo: &Repository,
    forget: &[ObjectId],
    opts: &GcOptions,
    emit: &mut Emit<'_>,
) -> Result<PruneSummary> {
    // A signal that came while the plan was made stops the run before its
    // first deletion, not after it.
    crate::sys::check_interrupted()?;
    let mut summary = PruneSummary {
        v: crate::format::wire::VERSION,
        dry_run: opts.dry_run,
        ..Default::default()
    };
    for id in forget {
        if !opts.dry_run {
            repo.backend().delete(ObjectKind::Snapshot, &id.to_hex())?;
            summary.objects_deleted += 1;
        }
        summary.snapshots_forgotten += 1;
        emit(&action(
            "forget",
            ObjectKind::Snapshot.path(&id.to_hex()),
            0,
        ))?;
    }
    Ok(summary)
}

/// What the mark phase decides before it writes anything: computed from
/// listings alone by [`plan_mark`], carried out by `Gc::mark` (or, in a
/// dry run, only printed).
#[derive(Debug, Clone, PartialEq)]
pub struct MarkPlan {
    /// Packs to mark now: unreferenced, or in no index.
    pub marked: Vec<MarkedPack>,
    /// Partly used packs whose used chunks are copied into new packs (and
    /// which are then marked `repacked`), emptiest first.
    pub to_repack: Vec<ObjectId>,
    /// More than one live index object, or superseded ones that no
    /// pending mark will delete: the index is compacted.
    pub compact: bool,
    /// Packs a live index names that are not stored.
    pub missing: Vec<ObjectId>,
}

impl MarkPlan {
    pub fn is_empty(&self) -> bool {
        self.marked.is_empty() && self.to_repack.is_empty() && !self.compact
    }
}

/// The live index objects as the mark phase uses them, built once per
/// run: every pack they name with all its entries, and the location a
/// reader uses for each chunk (other copies of a chunk are unused).
pub struct LiveIndex {
    pub indexed: HashMap<ObjectId, Vec<BlobEntry>>,
    pub canonical: Index,
}

impl LiveIndex {
    pub fn of(files: &IndexFiles) -> LiveIndex {
        let mut indexed: HashMap<ObjectId, Vec<BlobEntry>> = HashMap::new();
        for (_, f) in &files.live {
            for (p, e) in &f.packs {
                indexed.entry(*p).or_default().extend_from_slice(e);
            }
        }
        LiveIndex {
            indexed,
            canonical: Repository::read_index(files, &[]),
        }
    }

    /// The index entries of `packs`, as a mark stores them.
    fn entries_of(&self, packs: &[MarkedPack]) -> IndexFile {
        IndexFile {
            supersedes: Vec::new(),
            packs: packs
                .iter()
                .filter_map(|p| Some((p.id, self.indexed.get(&p.id)?.clone())))
                .collect(),
        }
    }
}

/// The mark phase's decisions (ARCHITECTURE §24.3, steps 2–5), from the
/// referenced set, the index objects, the pending marks and the pack
/// listing. Pure: the same inputs give the same plan.
///
/// Long on purpose: steps 2 to 5 share running tallies (bytes unused per
/// pack, the repack budget) and must be read in order to check that no
/// chunk the referenced set needs is left without a live copy.
pub fn plan_mark(
    referenced: &HashSet<ChunkId>,
    files: &IndexFiles,
    live: &LiveIndex,
    pending_marks: &[StoredMark],
    pack_sizes: &HashMap<ObjectId, u64>,
    max_unused: MaxUnused,
) -> MarkPlan {
    let pending: HashSet<ObjectId> = pending_marks
        .iter()
        .flat_map(|m| m.mark.packs.iter().map(|p| p.id))
        .collect();
    let (canonical, indexed) = (&live.canonical, &live.indexed);
    let mut plan = MarkPlan {
        marked: Vec::new(),
        to_repack: Vec::new(),
        compact: false,
        missing: Vec::new(),
    };
    let mut partial: Vec<(ObjectId, u64, u64)> = Vec::new(); // pack, used, unused
    let (mut used_total, mut unused_total) = (0u64, 0u64);
    for (pack, entries) in indexed {
        // A pack a pending mark holds is still in the live index only
        // when that mark's compacted index was never written (a prune
        // died): that mark's sweep keeps it, and a later run marks it
        // properly. Marking it again here would let the older mark's
        // sweep delete it without waiting for this mark's writers.
        if pending.contains(pack) {
            continue;
        }
        let Some(&size) = pack_sizes.get(pack) else {
            plan.missing.push(*pack);
            continue;
        };
        let used: u64 = entries
            .iter()
            .filter(|e| {
                referenced.contains(&e.id) && canonical.get(&e.id).is_some_and(|l| l.pack == *pack)
            })
            .map(|e| u64::from(e.len))
            .sum();
        if used == 0 {
            plan.marked.push(MarkedPack {
                id: *pack,
                size,
                reason: MarkReason::Unreferenced,
            });
        } else {
            let blobs: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
            let unused = blobs.saturating_sub(used);
            used_total += used;
            unused_total += unused;
            if unused > 0 {
                partial.push((*pack, used, unused));
            }
        }
    }
    // Repack the emptiest packs until the unused space left is within
    // the limit (restic's --max-unused semantics).
    partial.sort_by(|a, b| {
        let ra = a.2 as f64 / (a.1 + a.2) as f64;
        let rb = b.2 as f64 / (b.1 + b.2) as f64;
        rb.total_cmp(&ra).then(a.0.cmp(&b.0))
    });
    let limit = max_unused.limit(used_total);
    for (pack, _, unused) in partial {
        if unused_total <= limit {
            break;
        }
        unused_total -= unused;
        plan.to_repack.push(pack);
    }
    for (name, size) in pack_sizes {
        if !indexed.contains_key(name) && !pending.contains(name) {
            plan.marked.push(MarkedPack {
                id: *name,
                size: *size,
                reason: MarkReason::Unindexed,
            });
        }
    }
    plan.marked.sort_by_key(|p| p.id);
    plan.missing.sort();
    // Superseded objects that no pending mark will delete (left by a
    // prune that died) also call for a new mark.
    let pending_superseded: HashSet<ObjectId> = pending_marks
        .iter()
        .flat_map(|m| m.mark.superseded.iter().copied())
        .collect();
    let orphans = files
        .superseded
        .iter()
        .any(|s| !pending_superseded.contains(s));
    plan.compact = files.live.len() > 1 || orphans;
    plan
}

/// What a sweep does with one pack of a due mark.
#[derive(Debug, Clone, PartialEq)]
pub enum SweepAction {
    /// A live index names it: a writer indexed it after the mark.
    Keep,
    /// It holds a referenced chunk that no live index has: it is named by
    /// a recovery index instead of being deleted.
    Recover(Vec<BlobEntry>),
    Delete,
}

/// The sweep's decision for each pack of a due mark (ARCHITECTURE §24.4).
/// `entries` are the blobs each pack holds (from the mark, or for an
/// unindexed pack from its own header); `live_pack` and `live_chunk` say
/// what the live index objects name. Pure.
pub fn plan_sweep(
    packs: &[MarkedPack],
    entries: &HashMap<ObjectId, Vec<BlobEntry>>,
    referenced: &HashSet<ChunkId>,
    live_pack: impl Fn(&ObjectId) -> bool,
    live_chunk: impl Fn(&ChunkId) -> bool,
) -> Vec<(MarkedPack, SweepAction)> {
    let needed = |e: &BlobEntry| referenced.contains(&e.id) && !live_chunk(&e.id);
    packs
        .iter()
        .map(|p| {
            let action = if live_pack(&p.id) {
                SweepAction::Keep
            } else {
                let pack_entries = entries.get(&p.id).cloned().unwrap_or_default();
                if pack_entries.iter().any(needed) {
                    SweepAction::Recover(pack_entries)
                } else {
                    SweepAction::Delete
                }
            };
            (p.clone(), action)
        })
        .collect()
}

struct Gc<'a> {
    repo: &'a Repository,
    lock: &'a LockGuard,
    opts: &'a GcOptions,
    forget: HashSet<ObjectId>,
    scanner: RefScanner,
    summary: PruneSummary,
    /// Index objects whose deletion this run already reported (a dry run
    /// reports them for each mark that would delete them; once is enough).
    index_deletes: HashSet<ObjectId>,
}

impl Gc<'_> {
    /// Snapshots that remain (in a dry run: minus those it would forget).
    fn snapshots(&self) -> Result<Vec<(ObjectId, Snapshot)>> {
        Ok(self
            .repo
            .snapshots()?
            .into_iter()
            .filter(|(id, _)| !self.forget.contains(id))
            .collect())
    }

    /// Every chunk a remaining snapshot refers to, with the index objects
    /// and marks it was resolved through (for the caller to reuse).
    /// Snapshots are listed first: a snapshot is written after the index
    /// objects and marks that name its data, so all of them are seen.
    fn referenced(&mut self) -> Result<(HashSet<ChunkId>, IndexFiles, Vec<StoredMark>)> {
        let snaps = self.snapshots()?;
        let marks = self.repo.marks()?;
        let files = self.repo.index_files()?;
        let index = Repository::read_index(&files, &marks);
        let referenced = self.scanner.referenced(self.repo, &index, &snaps)?;
        Ok((referenced, files, marks))
    }

    /// Lock holders that are alive now, and the storage's clock.
    fn live_holders(&self) -> Result<(HashSet<String>, SystemTime)> {
        let locks = list_lock_objects(&**self.repo.backend(), self.repo.keys())?;
        let now = storage_now(&locks, &self.lock.name());
        let live = locks
            .iter()
            .filter(|l| !l.is_stale_at(now) && l.holder_id() != self.lock.id())
            .map(|l| l.holder_id())
            .collect();
        Ok((live, now))
    }

    fn arm(&mut self, mark: &str, emit: &mut Emit<'_>) -> Result<()> {
        let (live, _) = self.live_holders()?;
        let arm = Arm {
            v: 1,
            mark: mark.to_string(),
            waiting_for: live
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            created: Timestamp::now(),
        };
        let (name, sealed) = arm.seal(self.repo.keys());
        self.repo.backend().put(ObjectKind::Gc, &name, &sealed)?;
        let reason = if arm.waiting_for.is_empty() {
            "no backup was running".to_string()
        } else {
            format!("waiting for {} running writer(s)", arm.waiting_for.len())
        };
        emit(&action("arm", format!("gc/{mark}"), 0).with_reason(reason))
    }

    /// Sweeps every armed mark that is due.
    fn sweep(&mut self, emit: &mut Emit<'_>) -> Result<()> {
        let marks = self.repo.marks()?;
        if marks.is_empty() {
            return Ok(());
        }
        let mut arms = load_arms(&**self.repo.backend(), self.repo.keys())?;
        // A mark without an arm was left by a prune that died after
        // writing it: arm it now (every writer still running is waited for).
        if !self.opts.dry_run {
            let unarmed: Vec<String> = marks
                .iter()
                .filter(|m| !arms.iter().any(|a| a.arm.mark == m.name))
                .map(|m| m.name.clone())
                .collect();
            if !unarmed.is_empty() {
                for m in &unarmed {
                    self.arm(m, emit)?;
                }
                arms = load_arms(&**self.repo.backend(), self.repo.keys())?;
            }
        }
        let (live, now) = self.live_holders()?;
        let mut due = Vec::new();
        for m in &marks {
            let Some(arm) = arms.iter().find(|a| a.arm.mark == m.name) else {
                emit(
                    &action("postpone", format!("gc/{}", m.name), 0).with_reason("not armed yet"),
                )?;
                continue;
            };
            let age = arm
                .modified
                .map(|t| now.duration_since(t).unwrap_or_default())
                .unwrap_or_default();
            let waiting = arm
                .arm
                .waiting_for
                .iter()
                .filter(|h| live.contains(*h))
                .count();
            if age < self.opts.grace {
                emit(
                    &action("postpone", format!("gc/{}", m.name), 0).with_reason(format!(
                        "grace period: armed {}s ago, sweep after {}s",
                        age.as_secs(),
                        self.opts.grace.as_secs()
                    )),
                )?;
            } else if waiting > 0 {
                emit(
                    &action("postpone", format!("gc/{}", m.name), 0).with_reason(format!(
                        "{waiting} writer(s) that were running when it was marked still hold locks"
                    )),
                )?;
            } else {
                due.push((m, arm.clone()));
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        // Only now, after the lock check, look at snapshots and index: every
        // snapshot that may use a marked pack is visible from here on.
        let (referenced, files, _) = self.referenced()?;
        let mut live_index = Index::default();
        let mut live_packs = HashSet::new();
        for (_, f) in &files.live {
            live_index.add_file(f);
            live_packs.extend(f.packs.iter().map(|(p, _)| *p));
        }
        live_index.finish();
        for (m, arm) in due {
            self.sweep_one(m, &arm, &referenced, &live_index, &live_packs, emit)?;
        }
        Ok(())
    }

    fn sweep_one(
        &mut self,
        m: &StoredMark,
        arm: &StoredArm,
        referenced: &HashSet<ChunkId>,
        live_index: &Index,
        live_packs: &HashSet<ObjectId>,
        emit: &mut Emit<'_>,
    ) -> Result<()> {
        let backend = self.repo.backend();
        let live_pack = |p: &ObjectId| live_packs.contains(p);
        let entries = self.pack_entries(&m.mark.packs, &m.mark.entries, live_pack)?;
        let decisions = plan_sweep(&m.mark.packs, &entries, referenced, live_pack, |c| {
            live_index.contains(c)
        });
        let (recovered, delete) = self.report_sweep(decisions, emit)?;
        if !self.opts.dry_run {
            let _ = self.lock.ensure_held()?;
            if !recovered.packs.is_empty() {
                self.summary.packs_recovered += recovered.packs.len() as u64;
                self.repo.write_index(&recovered)?;
                self.summary.index_objects_written += 1;
            }
            let threads = backend.write_concurrency().max(2);
            let progress = self.opts.progress.as_deref();
            parallel_map(&delete, threads, |p| {
                backend.delete(ObjectKind::Pack, &p.id.to_hex())?;
                if let Some(progress) = progress {
                    progress.add_item();
                    progress.add_bytes(p.size);
                }
                Ok(())
            })?;
        }
        self.report_deletions(&delete, emit)?;
        self.delete_superseded(&m.mark.superseded, emit)?;
        if self.opts.dry_run {
            return Ok(());
        }
        backend.delete(ObjectKind::Gc, &arm.name)?;
        backend.delete(ObjectKind::Gc, &m.name)?;
        emit(&action("swept", format!("gc/{}", m.name), 0))?;
        Ok(())
    }

    /// The blobs each marked pack holds, for the sweep's recovery check:
    /// from the mark's entries, or for an unindexed pack from its own
    /// header (it may hold something a snapshot uses). Packs a live index
    /// names are kept whatever they hold, and not read.
    fn pack_entries(
        &self,
        packs: &[MarkedPack],
        mark_entries: &IndexFile,
        live_pack: impl Fn(&ObjectId) -> bool,
    ) -> Result<HashMap<ObjectId, Vec<BlobEntry>>> {
        let backend = self.repo.backend();
        let in_mark: HashMap<ObjectId, &Vec<BlobEntry>> =
            mark_entries.packs.iter().map(|(p, e)| (*p, e)).collect();
        let mut out = HashMap::new();
        for p in packs.iter().filter(|p| !live_pack(&p.id)) {
            let name = p.id.to_hex();
            let entries = match in_mark.get(&p.id) {
                Some(e) => (*e).clone(),
                None => match backend.get(ObjectKind::Pack, &name) {
                    Ok(raw) => crate::format::pack::read_header(self.repo.keys(), &name, &raw)
                        .unwrap_or_default(),
                    Err(e) if e.is_not_found() => Vec::new(),
                    Err(e) => return Err(e),
                },
            };
            out.insert(p.id, entries);
        }
        Ok(out)
    }

    /// Prints the sweep's keep and recover decisions; returns the recovery
    /// index to write and the packs to delete.
    fn report_sweep(
        &mut self,
        decisions: Vec<(MarkedPack, SweepAction)>,
        emit: &mut Emit<'_>,
    ) -> Result<(IndexFile, Vec<MarkedPack>)> {
        let mut recovered = IndexFile::default();
        let mut delete = Vec::new();
        for (p, decision) in decisions {
            let path = ObjectKind::Pack.path(&p.id.to_hex());
            match decision {
                SweepAction::Keep => emit(
                    &action("keep", path, p.size)
                        .with_reason("a backup indexed it after it was marked"),
                )?,
                SweepAction::Recover(entries) => {
                    emit(
                        &action("recover", path, p.size)
                            .with_reason("a snapshot committed after the mark uses it"),
                    )?;
                    recovered.packs.push((p.id, entries));
                }
                SweepAction::Delete => delete.push(p),
            }
        }
        Ok((recovered, delete))
    }

    /// Prints (and counts) the pack deletions of a sweep.
    fn report_deletions(&mut self, delete: &[MarkedPack], emit: &mut Emit<'_>) -> Result<()> {
        for p in delete {
            emit(&action(
                "delete",
                ObjectKind::Pack.path(&p.id.to_hex()),
                p.size,
            ))?;
            self.summary.packs_deleted += 1;
            self.summary.bytes_freed += p.size;
            if !self.opts.dry_run {
                self.summary.objects_deleted += 1;
            }
        }
        Ok(())
    }

    /// Deletes (in a dry run: prints) the index objects a mark's compacted
    /// index replaced that still exist.
    fn delete_superseded(&mut self, superseded: &[ObjectId], emit: &mut Emit<'_>) -> Result<()> {
        let backend = self.repo.backend();
        let index_sizes: HashMap<String, u64> = backend
            .list(ObjectKind::Index)?
            .into_iter()
            .map(|o| (o.name, o.size))
            .collect();
        for s in superseded {
            let name = s.to_hex();
            if !self.index_deletes.insert(*s) {
                continue;
            }
            if let Some(size) = index_sizes.get(&name) {
                if !self.opts.dry_run {
                    backend.delete(ObjectKind::Index, &name)?;
                    self.summary.objects_deleted += 1;
                }
                emit(
                    &action("delete", ObjectKind::Index.path(&name), *size)
                        .with_reason("replaced by a compacted index"),
                )?;
                self.summary.bytes_freed += size;
            }
        }
        Ok(())
    }

    /// A dry run with `--grace 0`: what the sweep right after this run's
    /// mark would do, so the dry run shows every deletion the real run
    /// makes. The real sweep lists snapshots and index afresh; with no
    /// writer running they are what this run read, the live index being
    /// the compacted one (every unmarked pack plus the repacked copies).
    fn dry_sweep(
        &mut self,
        marked: &[MarkedPack],
        live: &LiveIndex,
        referenced: &HashSet<ChunkId>,
        copied: &HashSet<ChunkId>,
        superseded: &[ObjectId],
        emit: &mut Emit<'_>,
    ) -> Result<()> {
        if !self.opts.grace.is_zero() {
            return Ok(());
        }
        let (holders, _) = self.live_holders()?;
        if !holders.is_empty() {
            return emit(
                &action("postpone", "gc/(this run's mark)".into(), 0).with_reason(format!(
                    "{} writer(s) running now would be waited for",
                    holders.len()
                )),
            );
        }
        let marked_ids: HashSet<ObjectId> = marked.iter().map(|p| p.id).collect();
        let kept: HashSet<ChunkId> = live
            .indexed
            .iter()
            .filter(|(p, _)| !marked_ids.contains(p))
            .flat_map(|(_, e)| e.iter().map(|e| e.id))
            .collect();
        let entries = self.pack_entries(marked, &live.entries_of(marked), |_| false)?;
        let decisions = plan_sweep(
            marked,
            &entries,
            referenced,
            |_| false,
            |c| kept.contains(c) || copied.contains(c),
        );
        let (_, delete) = self.report_sweep(decisions, emit)?;
        self.report_deletions(&delete, emit)?;
        self.delete_superseded(superseded, emit)
    }

    /// Plans and writes a new mark (and the compacted index). Returns
    /// whether a mark was written (or, in a dry run, would be).
    ///
    /// Long on purpose: it is the mark phase's write order (repacked packs,
    /// then the compacted index, then the mark, then its arm), and the
    /// safety argument of ARCHITECTURE §24.3 is that order; it stays in one
    /// function so that it can be checked against the document line by line.
    fn mark(&mut self, emit: &mut Emit<'_>) -> Result<bool> {
        let backend = self.repo.backend().clone();
        let (referenced, files, pending_marks) = self.referenced()?;
        self.summary.index_objects_before = (files.live.len() + files.superseded.len()) as u64;
        let pack_sizes: HashMap<ObjectId, u64> = backend
            .list(ObjectKind::Pack)?
            .into_iter()
            .filter_map(|o| Some((ObjectId::from_hex(&o.name)?, o.size)))
            .collect();
        let live = LiveIndex::of(&files);
        let plan = plan_mark(
            &referenced,
            &files,
            &live,
            &pending_marks,
            &pack_sizes,
            self.opts.max_unused,
        );
        for pack in &plan.missing {
            emit(
                &action("missing", ObjectKind::Pack.path(&pack.to_hex()), 0)
                    .with_reason("the index names a pack that is not stored; run bk-verify"),
            )?;
        }
        if plan.is_empty() {
            return Ok(false);
        }
        let mut marked = plan.marked;
        let to_repack = plan.to_repack;

        // Repack: copy the chunks still used out of the packs to repack.
        let mut new_packs: Vec<PackEntries> = Vec::new();
        let mut copied = HashSet::new();
        if !to_repack.is_empty() {
            let keep = |pack: &ObjectId, e: &BlobEntry| {
                referenced.contains(&e.id)
                    && live.canonical.get(&e.id).is_some_and(|l| l.pack == *pack)
            };
            let (written, repacked, copies) =
                self.repack(&to_repack, &live.indexed, &pack_sizes, keep, emit)?;
            new_packs = written;
            copied = copies;
            for p in repacked {
                marked.push(MarkedPack {
                    id: p,
                    size: pack_sizes[&p],
                    reason: MarkReason::Repacked,
                });
            }
        }
        marked.sort_by_key(|p| p.id);
        let marked_ids: HashSet<ObjectId> = marked.iter().map(|p| p.id).collect();
        for p in &marked {
            let reason = match p.reason {
                MarkReason::Unreferenced => "no snapshot uses it",
                MarkReason::Repacked => "its used chunks were repacked",
                MarkReason::Unindexed => "no index names it",
            };
            emit(
                &action("mark", ObjectKind::Pack.path(&p.id.to_hex()), p.size).with_reason(reason),
            )?;
            self.summary.packs_marked += 1;
            self.summary.bytes_marked += p.size;
        }
        let mut all_index: Vec<ObjectId> = files.live.iter().map(|(id, _)| *id).collect();
        all_index.extend(files.superseded.iter().copied());
        all_index.sort();
        if self.opts.dry_run {
            self.dry_sweep(&marked, &live, &referenced, &copied, &all_index, emit)?;
            return Ok(true);
        }

        let mark = Mark {
            created: Timestamp::now(),
            packs: marked.clone(),
            superseded: all_index.clone(),
            entries: live.entries_of(&marked),
        };
        let _ = self.lock.ensure_held()?;
        let sealed = mark.seal(self.repo.keys());
        let mark_name = ObjectId::digest(&sealed).to_hex();
        backend.put_owned(ObjectKind::Gc, &mark_name, sealed)?;

        // The compacted index: every live pack except the marked ones, plus
        // the repacked ones; the last part supersedes everything read.
        let mut keep: Vec<PackEntries> = live
            .indexed
            .into_iter()
            .filter(|(p, _)| !marked_ids.contains(p))
            .collect();
        keep.sort_by_key(|(p, _)| *p);
        keep.extend(new_packs);
        let mut parts: Vec<IndexFile> = vec![IndexFile::default()];
        let mut in_part = 0usize;
        for (p, e) in keep {
            if in_part + e.len() > INDEX_PART_BLOBS && in_part > 0 {
                parts.push(IndexFile::default());
                in_part = 0;
            }
            in_part += e.len();
            parts.last_mut().expect("one part").packs.push((p, e));
        }
        parts.last_mut().expect("one part").supersedes = all_index;
        for part in &parts {
            let id = self.repo.write_index(part)?;
            self.summary.index_objects_written += 1;
            emit(
                &action("write", ObjectKind::Index.path(&id.to_hex()), 0)
                    .with_reason("compacted index"),
            )?;
        }
        self.arm(&mark_name, emit)?;
        Ok(true)
    }

    /// Copies the used blobs of `packs` into new packs. Returns the new
    /// packs, the old packs fully copied (damaged ones are left alone) and
    /// the chunks copied.
    ///
    /// Long on purpose: one streaming loop fills, flushes and uploads new
    /// packs while reading old ones, and records which old packs were
    /// copied whole; the "delete only what was copied whole" rule needs
    /// that loop read as one.
    fn repack(
        &mut self,
        packs: &[ObjectId],
        indexed: &HashMap<ObjectId, Vec<BlobEntry>>,
        sizes: &HashMap<ObjectId, u64>,
        keep: impl Fn(&ObjectId, &BlobEntry) -> bool,
        emit: &mut Emit<'_>,
    ) -> Result<(Vec<PackEntries>, Vec<ObjectId>, HashSet<ChunkId>)> {
        let repo = self.repo;
        let pack_size = repo.config().pack_size as usize;
        // New packs stream out as they fill, through the backend's staging
        // (a file in tmp/ locally), as bk-put writes them; a dry run writes
        // them nowhere but still counts their bytes.
        let mut filling: HashMap<u8, PackStream<'_>> = HashMap::new();
        let mut written = Vec::new();
        let mut done = Vec::new();
        let mut copied: HashSet<ChunkId> = HashSet::new();
        let dry_run = self.opts.dry_run;
        let start = |kind: BlobKind| -> Result<PackStream<'_>> {
            if dry_run {
                return Ok(PackStream::new(Box::new(std::io::sink())));
            }
            PackStream::stage(&**repo.backend(), kind, pack_size)
        };
        let flush = |p: PackStream<'_>, written: &mut Vec<PackEntries>| {
            let pack = p.finish(repo.keys())?;
            let n = pack.len as u64;
            if dry_run {
                return Ok::<u64, Error>(n);
            }
            pack.object.publish(&pack.id.to_hex())?;
            written.push((pack.id, pack.entries));
            Ok(n)
        };
        let progress = self.opts.progress.clone();
        for pack in packs {
            crate::sys::check_interrupted()?;
            let name = pack.to_hex();
            let raw = repo.backend().get(ObjectKind::Pack, &name)?;
            if let Some(p) = &progress {
                p.add_item();
                p.add_bytes(raw.len() as u64);
            }
            if let Err(e) = check_name(ObjectKind::Pack, &name, &raw) {
                emit(
                    &action("skip", ObjectKind::Pack.path(&name), sizes[pack])
                        .with_reason(format!("not repacked: {e}")),
                )?;
                continue;
            }
            let mut staged = Vec::new();
            let mut ok = true;
            for e in &indexed[pack] {
                if !keep(pack, e) || copied.contains(&e.id) {
                    continue;
                }
                let Some(sealed) = raw.get(e.offset as usize..(e.offset + e.len) as usize) else {
                    ok = false;
                    break;
                };
                if repo.open_blob(&e.id, e.kind, &name, sealed).is_err() {
                    ok = false;
                    break;
                }
                staged.push((e, sealed));
            }
            if !ok {
                emit(
                    &action("skip", ObjectKind::Pack.path(&name), sizes[pack]).with_reason(
                        "not repacked: a blob in it fails authentication; run bk-verify",
                    ),
                )?;
                continue;
            }
            let mut kept = 0u64;
            for (e, sealed) in staged {
                let slot = e.kind as u8;
                let p = match filling.entry(slot) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => v.insert(start(e.kind)?),
                };
                p.add(e.kind, e.id, sealed, e.raw_len)?;
                copied.insert(e.id);
                kept += u64::from(e.len);
                if p.len() >= pack_size {
                    let full = filling.remove(&slot).expect("filling");
                    flush(full, &mut written)?;
                }
            }
            emit(
                &action("repack", ObjectKind::Pack.path(&name), sizes[pack])
                    .with_reason(format!("{kept} bytes still used are copied")),
            )?;
            self.summary.packs_repacked += 1;
            self.summary.bytes_repacked += kept;
            done.push(*pack);
        }
        for kind in [BlobKind::Data as u8, BlobKind::Meta as u8] {
            if let Some(p) = filling.remove(&kind) {
                if !p.is_empty() {
                    flush(p, &mut written)?;
                }
            }
        }
        Ok((written, done, copied))
    }

    /// Temp files and multipart uploads of killed writers; stale locks.
    fn clean_incomplete(&mut self, emit: &mut Emit<'_>) -> Result<()> {
        let backend = self.repo.backend();
        let locks = list_lock_objects(&**backend, self.repo.keys())?;
        let now = storage_now(&locks, &self.lock.name());
        let min_age = self.opts.grace.max(MIN_INCOMPLETE_AGE);
        for item in backend.incomplete()? {
            let old = item
                .modified
                .is_some_and(|m| now.duration_since(m).unwrap_or_default() > min_age);
            if !old {
                continue;
            }
            if !self.opts.dry_run {
                backend.remove_incomplete(&item.name)?;
            }
            self.summary.incomplete_removed += 1;
            emit(
                &action("delete", format!("tmp/{}", item.name), item.size)
                    .with_reason("incomplete write abandoned by a killed writer"),
            )?;
        }
        for l in locks {
            if l.is_stale_at(now) && l.name != self.lock.name() {
                if !self.opts.dry_run {
                    backend.delete(ObjectKind::Lock, &l.name)?;
                }
                self.summary.locks_removed += 1;
                emit(
                    &action("delete", ObjectKind::Lock.path(&l.name), 0).with_reason("stale lock"),
                )?;
            }
        }
        Ok(())
    }
}

/// Finds the chunk ids a set of snapshots refers to. Listings of
/// successive snapshots share most of their listing chunks, so each
/// distinct listing chunk is read and scanned once per process: chunk ids
/// appear in listings as `"` + 64 hex digits + `"`, and a scan for that
/// shape (at worst finding a file name that looks like an id, which only
/// keeps more) avoids parsing the JSON at all. Ids cut by a listing chunk
/// boundary are found by scanning each adjacent pair's joint.
#[derive(Default)]
struct RefScanner {
    chunks: HashMap<ChunkId, Arc<ScannedChunk>>,
    joints: HashMap<(ChunkId, ChunkId), Vec<ChunkId>>,
}

struct ScannedChunk {
    ids: Vec<ChunkId>,
    head: Vec<u8>,
    tail: Vec<u8>,
}

const TOKEN: usize = 66;

impl RefScanner {
    fn referenced(
        &mut self,
        repo: &Repository,
        index: &Index,
        snaps: &[(ObjectId, Snapshot)],
    ) -> Result<HashSet<ChunkId>> {
        let mut todo: Vec<ChunkId> = Vec::new();
        let mut seen = HashSet::new();
        for (_, s) in snaps {
            for c in &s.listing {
                if !self.chunks.contains_key(c) && seen.insert(*c) {
                    todo.push(*c);
                }
            }
        }
        let reader = ChunkReader::new(repo, index);
        let scanned = Mutex::new(Vec::new());
        parallel_map(&todo, 2, |id| {
            let data = reader.read(id)?;
            let mut ids = Vec::new();
            scan_ids(&data, &mut ids);
            let head = data[..data.len().min(TOKEN)].to_vec();
            let tail = data[data.len().saturating_sub(TOKEN)..].to_vec();
            scanned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((*id, ScannedChunk { ids, head, tail }));
            Ok(())
        })?;
        for (id, c) in scanned.into_inner().unwrap_or_else(|e| e.into_inner()) {
            self.chunks.insert(id, Arc::new(c));
        }
        let mut out = HashSet::new();
        for (_, s) in snaps {
            out.extend(s.listing.iter().copied());
            for c in &s.listing {
                out.extend(self.chunks[c].ids.iter().copied());
            }
            for w in s.listing.windows(2) {
                let key = (w[0], w[1]);
                if !self.joints.contains_key(&key) {
                    let mut joint = self.chunks[&w[0]].tail.clone();
                    joint.extend_from_slice(&self.chunks[&w[1]].head);
                    let mut ids = Vec::new();
                    scan_ids(&joint, &mut ids);
                    self.joints.insert(key, ids);
                }
                out.extend(self.joints[&key].iter().copied());
            }
        }
        Ok(out)
    }
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// Appends every `"<64 lowercase hex>"` token in `buf` as a chunk id.
fn scan_ids(buf: &[u8], out: &mut Vec<ChunkId>) {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'"') {
        let start = i + p;
        let end = start + TOKEN - 1;
        if end < buf.len() && buf[end] == b'"' && buf[start + 1..end].iter().all(|&b| is_hex(b)) {
            let hex = std::str::from_utf8(&buf[start + 1..end]).expect("ascii");
            if let Some(id) = ChunkId::from_hex(hex) {
                out.push(id);
            }
            i = end + 1;
        } else {
            i = start + 1;
        }
    }
}

/// Where a dry run's repacked packs go: nowhere (their size is counted).
impl Staged for std::io::Sink {
    fn publish(self: Box<Self>, _name: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_ids_and_nothing_shorter_or_longer() {
        let a = ChunkId::digest(b"a");
        let b = ChunkId::digest(b"b");
        let text = format!(
            r#"{{"path":"x","chunks":["{a}","{b}"]}}
{{"path":"{a}0","note":"{}"}}"#,
            &b.to_hex()[..63]
        );
        let mut ids = Vec::new();
        scan_ids(text.as_bytes(), &mut ids);
        assert_eq!(ids, vec![a, b]);
    }

    #[test]
    fn scan_joints_find_ids_cut_by_a_chunk_boundary() {
        let a = ChunkId::digest(b"a");
        let text = format!(r#"xxxxxxxx["{a}"]yyyyyyyy"#);
        for cut in 1..text.len() {
            let (l, r) = text.as_bytes().split_at(cut);
            let mut ids = Vec::new();
            scan_ids(l, &mut ids);
            scan_ids(r, &mut ids);
            let mut joint = l[l.len().saturating_sub(TOKEN)..].to_vec();
            joint.extend_from_slice(&r[..r.len().min(TOKEN)]);
            scan_ids(&joint, &mut ids);
            assert!(ids.contains(&a), "cut at {cut}");
        }
    }

    fn entry(c: &ChunkId, offset: u32, len: u32) -> BlobEntry {
        BlobEntry {
            kind: BlobKind::Data,
            id: *c,
            offset,
            len,
            raw_len: len,
        }
    }

    fn pack_id(n: u8) -> ObjectId {
        ObjectId::digest(&[n])
    }

    #[test]
    fn the_mark_plan_marks_repacks_skips_pending_and_reports_missing() {
        let (a, b, c, d) = (
            ChunkId::digest(b"a"),
            ChunkId::digest(b"b"),
            ChunkId::digest(b"c"),
            ChunkId::digest(b"d"),
        );
        let file = IndexFile {
            supersedes: Vec::new(),
            packs: vec![
                (pack_id(1), vec![entry(&a, 0, 100)]), // unreferenced
                (pack_id(2), vec![entry(&b, 0, 100), entry(&c, 100, 300)]), // partly used
                (pack_id(3), vec![entry(&d, 0, 100)]), // in a pending mark
                (pack_id(4), vec![entry(&b, 0, 100)]), // not stored
            ],
        };
        let files = IndexFiles {
            live: vec![(ObjectId::digest(b"i1"), file)],
            superseded: Vec::new(),
        };
        let pending = StoredMark {
            name: "m".into(),
            mark: Mark {
                created: Timestamp::now(),
                packs: vec![MarkedPack {
                    id: pack_id(3),
                    size: 108,
                    reason: MarkReason::Unreferenced,
                }],
                superseded: Vec::new(),
                entries: IndexFile::default(),
            },
        };
        let sizes: HashMap<ObjectId, u64> = [
            (pack_id(1), 108),
            (pack_id(2), 408),
            (pack_id(3), 108),
            (pack_id(5), 50),
        ]
        .into();
        let referenced: HashSet<ChunkId> = [b].into();
        let live = LiveIndex::of(&files);
        let plan = plan_mark(
            &referenced,
            &files,
            &live,
            &[pending],
            &sizes,
            MaxUnused::Fraction(0.0),
        );
        let marked: Vec<(ObjectId, MarkReason)> =
            plan.marked.iter().map(|p| (p.id, p.reason)).collect();
        let mut want = vec![
            (pack_id(1), MarkReason::Unreferenced),
            (pack_id(5), MarkReason::Unindexed),
        ];
        want.sort_by_key(|(id, _)| *id);
        assert_eq!(marked, want);
        assert_eq!(plan.to_repack, vec![pack_id(2)]);
        assert_eq!(plan.missing, vec![pack_id(4)]);
        assert!(!plan.compact);
        // With the default 5%, 300 unused bytes of 100 used are still too
        // many; unlimited repacks nothing.
        let lax = plan_mark(
            &referenced,
            &files,
            &live,
            &[],
            &sizes,
            MaxUnused::Unlimited,
        );
        assert!(lax.to_repack.is_empty());
    }

    #[test]
    fn the_sweep_plan_keeps_recovers_and_deletes() {
        let (used, unused) = (ChunkId::digest(b"used"), ChunkId::digest(b"unused"));
        let packs: Vec<MarkedPack> = (1..=3)
            .map(|n| MarkedPack {
                id: pack_id(n),
                size: 10,
                reason: MarkReason::Unreferenced,
            })
            .collect();
        let entries: HashMap<ObjectId, Vec<BlobEntry>> = [
            (pack_id(1), vec![entry(&used, 0, 10)]),
            (pack_id(2), vec![entry(&used, 0, 10)]),
            (pack_id(3), vec![entry(&unused, 0, 10)]),
        ]
        .into();
        let referenced: HashSet<ChunkId> = [used].into();
        let plan = plan_sweep(
            &packs,
            &entries,
            &referenced,
            |p| *p == pack_id(1),
            |_| false,
        );
        let actions: Vec<&SweepAction> = plan.iter().map(|(_, a)| a).collect();
        assert_eq!(
            actions,
            vec![
                &SweepAction::Keep,
                &SweepAction::Recover(vec![entry(&used, 0, 10)]),
                &SweepAction::Delete
            ]
        );
        // A live copy of the chunk elsewhere: nothing to recover.
        let plan = plan_sweep(&packs, &entries, &referenced, |_| false, |c| *c == used);
        assert!(plan.iter().all(|(_, a)| *a == SweepAction::Delete));
    }

    #[test]
    fn max_unused_forms() {
        assert_eq!(MaxUnused::parse("5%").unwrap(), MaxUnused::Fraction(0.05));
        assert_eq!(
            MaxUnused::parse("200M").unwrap(),
            MaxUnused::Bytes(200 << 20)
        );
        assert_eq!(MaxUnused::parse("0").unwrap(), MaxUnused::Bytes(0));
        assert_eq!(MaxUnused::parse("unlimited").unwrap(), MaxUnused::Unlimited);
        for bad in ["", "5x", "-1%", "101%", "M"] {
            assert!(MaxUnused::parse(bad).is_err(), "{bad}");
        }
    }
}
