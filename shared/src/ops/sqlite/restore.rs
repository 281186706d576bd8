//! Restoring a replicated database: the latest state or the state as of a
//! time, checked before it appears under its name.
//!
//! The lineage is chosen deterministically: for a time T, the newest
//! lineage that started at or before T (a new lineage supersedes the old
//! from its start on); for the latest state, the newest lineage. In it,
//! the newest snapshot at or before T, then its segments in order, each
//! commit up to T. A missing segment where later history exists stops the
//! restore: it never ends early and calls it success. The result is
//! written to a temporary file beside the output, its page sum compared
//! with the one recorded at that commit, `PRAGMA integrity_check` run on
//! it, fsynced, stale `-wal`/`-shm` beside the output removed, renamed
//! into place and the directory fsynced.

use super::replica::{self, Catalog, DbSnapshot, LineageId, LineageObjects, SegmentObject};
use crate::error::{Error, Result, Subject};
use crate::format::sqlite::PageSums;
use crate::format::time::Timestamp;
use crate::format::wire::{Kind, SqliteRestoreRecord};
use crate::layout::ObjectKind;
use crate::store::repo::Repository;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct SqliteRestoreOptions {
    /// The database's name in the repository.
    pub name: String,
    pub output: PathBuf,
    /// The state as of this time; `None` for the latest.
    pub at: Option<Timestamp>,
    /// Replace an existing output.
    pub force: bool,
    /// Counts the segments applied, for a progress bar.
    pub progress: Option<std::sync::Arc<crate::ops::progress::Progress>>,
}

/// What a restore will read.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    pub lineage: LineageId,
    pub snapshot: DbSnapshot,
    pub segments: Vec<SegmentObject>,
    pub at: Option<Timestamp>,
}

fn no_replica(name: &str) -> Error {
    Error::NoReplica {
        db: name.to_string(),
    }
}

/// The lineage, snapshot and segments that reach the asked state.
pub fn plan(catalog: &Catalog, name: &str, at: Option<Timestamp>) -> Result<RestorePlan> {
    let lineages = catalog.lineages(name).ok_or_else(|| no_replica(name))?;
    let start = |objects: &LineageObjects| objects.snapshots.values().map(|s| s.time).min();
    let usable = lineages
        .iter()
        .filter_map(|(id, objects)| start(objects).map(|t| (id, objects, t)));
    let chosen = match at {
        None => usable.max_by(|a, b| a.0.cmp(b.0)),
        Some(t) => usable
            .filter(|(_, _, s)| *s <= t)
            .max_by(|a, b| a.0.cmp(b.0)),
    };
    let Some((id, objects, _)) = chosen else {
        return Err(match at {
            Some(t) if lineages.values().any(|o| !o.snapshots.is_empty()) => Error::Usage(format!(
                "{name}: the replica holds no state as early as {t} (see `bk-sqlite ls {name}`)"
            )),
            _ => no_replica(name),
        });
    };
    let snapshot = objects
        .snapshots
        .values()
        .filter(|s| at.is_none_or(|t| s.time <= t))
        .max_by_key(|s| s.seq)
        .expect("the lineage starts at or before the time")
        .clone();
    let mut segments = Vec::new();
    let mut seq = snapshot.seq + 1;
    while let Some(seg) = objects.segments.get(&seq) {
        segments.push(seg.clone());
        seq += 1;
    }
    // A gap: later objects exist, but not the next one. A later snapshot
    // (taken after T, or it would have been chosen) ends what T can need.
    let last = objects.last_seq();
    if seq <= last && !objects.snapshots.contains_key(&seq) {
        return Err(Error::integrity(
            Subject::object(ObjectKind::Sqlite, replica::segment_name(name, id, seq)),
            format!(
                "segment {seq} of lineage {id} is missing and later history exists: \
                 the state cannot be reached exactly"
            ),
        ));
    }
    Ok(RestorePlan {
        lineage: id.clone(),
        snapshot,
        segments,
        at,
    })
}

/// Removes a file if it is there.
fn remove_if_there(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Restores as `opts` asks. Fails with [`Error::Exists`] when the output
/// exists (unless `force`) and [`Error::NoReplica`] when the repository
/// holds nothing for the name.
pub fn restore(repo: &Repository, opts: &SqliteRestoreOptions) -> Result<SqliteRestoreRecord> {
    replica::check_db_name(&opts.name)?;
    if !opts.force && opts.output.exists() {
        return Err(Error::Exists {
            path: opts.output.clone(),
        });
    }
    let catalog = Catalog::load(repo)?;
    let plan = plan(&catalog, &opts.name, opts.at)?;
    let dir = match opts.output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = opts
        .output
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file name", opts.output.display())))?;
    // As Litestream does: a restore into a new volume's subdirectory
    // creates it.
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let tmp = dir.join(format!(
        ".{}.bk-sqlite-restore-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = restore_into(repo, &plan, opts, &tmp);
    let cleanup = || {
        let _ = std::fs::remove_file(&tmp);
        let _ = std::fs::remove_file(sibling(&tmp, "-wal"));
        let _ = std::fs::remove_file(sibling(&tmp, "-shm"));
    };
    let mut record = match result {
        Ok(r) => r,
        Err(e) => {
            cleanup();
            return Err(e);
        }
    };
    let placed = (|| {
        remove_if_there(&sibling(&opts.output, "-wal"))?;
        remove_if_there(&sibling(&opts.output, "-shm"))?;
        std::fs::rename(&tmp, &opts.output).map_err(|e| Error::io(&opts.output, e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(&dir, e))
    })();
    if let Err(e) = placed {
        cleanup();
        return Err(e);
    }
    record.output = opts.output.display().to_string();
    Ok(record)
}

/// The plan's state in `tmp`, checked and synced.
fn restore_into(
    repo: &Repository,
    plan: &RestorePlan,
    opts: &SqliteRestoreOptions,
    tmp: &Path,
) -> Result<SqliteRestoreRecord> {
    let name = opts.name.as_str();
    let snap = &plan.snapshot;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(tmp)
        .map_err(|e| Error::io(tmp, e))?;
    write_snapshot(repo, snap, name, &file, tmp)?;
    let mut expected = (snap.pages, snap.sum, snap.time);
    let mut commits = 0u64;
    let mut segments = 0u64;
    let page_size = snap.page_size as u64;
    let progress = opts.progress.as_deref();
    if let Some(p) = progress {
        let bytes = plan.segments.iter().map(|s| s.size).sum();
        p.set_totals(plan.segments.len() as u64, bytes);
    }
    'segments: for seg in &plan.segments {
        crate::sys::check_interrupted()?;
        let (header, frames) = replica::get_segment(repo, &seg.name)?;
        if let Some(p) = progress {
            p.add_item();
            p.add_bytes(seg.size);
        }
        if header.page_size != snap.page_size {
            return Err(Error::damaged(
                ObjectKind::Sqlite,
                seg.name.as_str(),
                "its page size differs from the snapshot's",
            ));
        }
        segments += 1;
        let mut from = 0usize;
        for commit in &header.commits {
            if plan.at.is_some_and(|t| commit.time > t) {
                break 'segments;
            }
            for f in &frames[from..commit.end as usize] {
                file.write_all_at(&f.data, (f.page as u64 - 1) * page_size)
                    .map_err(|e| Error::io(tmp, e))?;
            }
            file.set_len(commit.pages as u64 * page_size)
                .map_err(|e| Error::io(tmp, e))?;
            from = commit.end as usize;
            expected = (commit.pages, commit.sum, commit.time);
            commits += 1;
        }
    }
    let sums = sums_of(&file, snap.page_size, tmp)?;
    let subject = || {
        Subject::object(
            ObjectKind::Sqlite,
            format!("{name} (lineage {})", plan.lineage),
        )
    };
    if sums.pages() != expected.0 || sums.sum() != expected.1 {
        return Err(Error::integrity(
            subject(),
            format!(
                "verification failed: the restored pages sum to {:016x} over {} pages, \
                 the replica recorded {:016x} over {}",
                sums.sum(),
                sums.pages(),
                expected.1,
                expected.0
            ),
        ));
    }
    file.sync_all().map_err(|e| Error::io(tmp, e))?;
    drop(file);
    let checked = integrity_check(tmp);
    remove_if_there(&sibling(tmp, "-wal"))?;
    remove_if_there(&sibling(tmp, "-shm"))?;
    checked.map_err(|m| Error::integrity(subject(), format!("verification failed: {m}")))?;
    Ok(SqliteRestoreRecord {
        v: crate::format::wire::VERSION,
        db: name.to_string(),
        output: String::new(),
        lineage: plan.lineage.to_string(),
        state_time: expected.2,
        snapshot: snap.id,
        segments,
        commits,
        bytes: expected.0 as u64 * page_size,
        sum: format!("{:016x}", expected.1),
        integrity_check: true,
    })
}

/// The snapshot's one file, written at the start of `file`.
fn write_snapshot(
    repo: &Repository,
    snap: &DbSnapshot,
    name: &str,
    file: &File,
    tmp: &Path,
) -> Result<()> {
    let s = repo.load_snapshot(&snap.id.to_hex())?;
    let index = repo.load_index()?;
    let records = crate::store::listing::ListingRecords::new(repo, &index, &s.listing);
    for e in crate::store::listing::entries(records) {
        let e = e?;
        if e.kind == Kind::File && e.path == name {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            let n =
                crate::ops::restore::write_file_to(repo, &index, &e, &mut out).map_err(|err| {
                    match err {
                        Error::Io { .. } => Error::io(tmp, std::io::Error::other(err.to_string())),
                        other => other,
                    }
                })?;
            out.flush().map_err(|err| Error::io(tmp, err))?;
            if n != snap.pages as u64 * snap.page_size as u64 {
                return Err(Error::damaged(
                    ObjectKind::Snapshot,
                    snap.id.to_hex(),
                    format!(
                        "{n} bytes, its tags say {} pages of {}",
                        snap.pages, snap.page_size
                    ),
                ));
            }
            return Ok(());
        }
    }
    Err(Error::damaged(
        ObjectKind::Snapshot,
        snap.id.to_hex(),
        format!("holds no file {name:?}"),
    ))
}

fn sums_of(file: &File, page_size: u32, path: &Path) -> Result<PageSums> {
    let mut sums = PageSums::default();
    let mut file = file;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut page = vec![0u8; page_size as usize];
    let mut n = 0u32;
    loop {
        match reader.read_exact(&mut page) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(Error::io(path, e)),
        }
        n += 1;
        sums.set(n, &page);
    }
    Ok(sums)
}

/// `PRAGMA integrity_check` on the restored file; `Err` with SQLite's
/// first complaint.
fn integrity_check(path: &Path) -> std::result::Result<(), String> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    drop(conn);
    if verdict == "ok" {
        Ok(())
    } else {
        Err(format!("PRAGMA integrity_check: {verdict}"))
    }
}
