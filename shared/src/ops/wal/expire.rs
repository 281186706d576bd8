//! Retention for a stanza: keep the newest N base backups, forget the
//! others, and expire the WAL no kept backup can use — planned first, so
//! `--dry-run` prints the very plan a real run carries out.
//!
//! WAL goes in two phases, like packs in the repository's GC: a run writes
//! an *expiry mark* (`wal/<stanza>.expire-<cutoff>`) naming the segment
//! number below which WAL is no longer needed, and deletes WAL
//! only under marks older than the grace period. A recovery that started
//! from a backup just before it was forgotten has that long to fetch its
//! WAL. Every kept backup starts at or after the cutoff, whatever its
//! timeline, so nothing below it is ever replayed from a kept backup;
//! `.history` files are always kept (they are tiny, and recovery needs
//! them to follow timelines). Forgotten backups' data is reclaimed by the
//! repository's own GC (bk-prune), like any snapshot's.

use super::info::Archive;
use crate::error::{Error, Result};
use crate::format::time::Timestamp;
use crate::format::wal::WalFile;
use crate::format::wire::{GcRecord, VERSION};
use crate::layout::ObjectKind;
use crate::store::repo::Repository;
use std::time::Duration;

const MARK_AAD: &[u8] = b"bk wal expiry mark v1\0";
const MARK_INFIX: &str = ".expire-";

#[derive(Debug, Clone)]
pub struct ExpireOptions {
    pub stanza: String,
    pub keep_last: usize,
    pub grace: Duration,
    pub dry_run: bool,
}

/// One step of the plan, in the order it is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Forget a base backup's snapshot.
    Forget { snapshot: String },
    /// Delete a WAL object under an expiry mark older than the grace.
    Delete { object: String, bytes: u64 },
    /// Remove an expiry mark whose WAL is all gone.
    Unmark { object: String },
    /// Write an expiry mark for WAL below `cutoff` (a segment number).
    Mark { object: String, cutoff: u64 },
}

impl Step {
    pub fn record(&self) -> GcRecord {
        let (action, object, bytes, reason) = match self {
            Step::Forget { snapshot } => ("forget", ObjectKind::Snapshot.path(snapshot), 0, None),
            Step::Delete { object, bytes } => {
                ("delete", ObjectKind::Wal.path(object), *bytes, None)
            }
            Step::Unmark { object } => (
                "delete",
                ObjectKind::Wal.path(object),
                0,
                Some("expiry mark done".to_string()),
            ),
            Step::Mark { object, cutoff } => (
                "mark",
                ObjectKind::Wal.path(object),
                0,
                Some(format!("WAL below segment {cutoff:X} is no longer needed")),
            ),
        };
        GcRecord {
            v: VERSION,
            action: action.to_string(),
            object,
            bytes,
            reason,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ExpiryMark {
    v: u32,
    stanza: String,
    /// WAL with a segment number below this is not needed.
    cutoff: u64,
    created: Timestamp,
}

/// Decides what to forget, delete and mark; changes nothing.
pub fn plan(repo: &Repository, opts: &ExpireOptions) -> Result<Vec<Step>> {
    if opts.keep_last == 0 {
        return Err(Error::Usage(
            "--keep-last must be at least 1: WAL is kept for the base backups that remain".into(),
        ));
    }
    let archive = Archive::load(repo, &opts.stanza)?;
    let mut steps = Vec::new();
    let backups = &archive.backups; // oldest first
    let forget = backups.len().saturating_sub(opts.keep_last);
    for b in &backups[..forget] {
        steps.push(Step::Forget {
            snapshot: b.id.to_hex(),
        });
    }
    let seg = u64::from(archive.stanza.segment_size);
    let cutoff = backups[forget..].iter().map(|b| b.start_lsn / seg).min();
    let marks = read_marks(repo, &opts.stanza)?;
    let now = Timestamp::now();
    let ripe = |m: &ExpiryMark| now.secs - m.created.secs >= opts.grace.as_secs() as i64;
    let swept = marks
        .iter()
        .filter(|(_, m)| ripe(m))
        .map(|(_, m)| m.cutoff)
        .max();
    if let Some(limit) = swept {
        for (file, name, size) in &archive.files {
            if below(file, limit) {
                steps.push(Step::Delete {
                    object: super::archive::object_name(&opts.stanza, name),
                    bytes: *size,
                });
            }
        }
        for (object, m) in &marks {
            if ripe(m) && m.cutoff <= limit {
                steps.push(Step::Unmark {
                    object: object.clone(),
                });
            }
        }
    }
    // A new mark when kept backups let more WAL go than any mark says.
    let marked = marks.iter().map(|(_, m)| m.cutoff).max().unwrap_or(0);
    if let Some(cutoff) = cutoff.filter(|&c| c > marked) {
        if archive.files.iter().any(|(f, _, _)| below(f, cutoff)) {
            steps.push(Step::Mark {
                object: format!("{}{MARK_INFIX}{cutoff:016X}", opts.stanza),
                cutoff,
            });
        }
    }
    Ok(steps)
}

/// Files a cutoff lets go: segments, partial segments and backup labels
/// below it; never history files.
fn below(file: &WalFile, cutoff: u64) -> bool {
    match *file {
        WalFile::Segment { segno, .. }
        | WalFile::Partial { segno, .. }
        | WalFile::Backup { segno, .. } => segno < cutoff,
        WalFile::History { .. } => false,
    }
}

fn read_marks(repo: &Repository, stanza: &str) -> Result<Vec<(String, ExpiryMark)>> {
    let prefix = format!("{stanza}{MARK_INFIX}");
    let mut out = Vec::new();
    for obj in repo.backend().list(ObjectKind::Wal)? {
        if !obj.name.starts_with(&prefix) {
            continue;
        }
        let sealed = match repo.backend().get(ObjectKind::Wal, &obj.name) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => continue, // swept meanwhile
            Err(e) => return Err(e),
        };
        let aad = [MARK_AAD, obj.name.as_bytes()].concat();
        let plain = repo
            .keys()
            .open(&aad, &sealed)
            .map_err(|e| Error::damaged(ObjectKind::Wal, obj.name.as_str(), e.to_string()))?;
        let mark: ExpiryMark = serde_json::from_slice(&plain).map_err(|e| {
            Error::damaged(
                ObjectKind::Wal,
                obj.name.as_str(),
                format!("malformed expiry mark: {e}"),
            )
        })?;
        out.push((obj.name, mark));
    }
    Ok(out)
}

/// Carries out a plan, step by step, reporting each as it is done.
pub fn execute(
    repo: &Repository,
    opts: &ExpireOptions,
    steps: &[Step],
    report: &mut dyn FnMut(&Step) -> Result<()>,
) -> Result<()> {
    for step in steps {
        if !opts.dry_run {
            match step {
                Step::Forget { snapshot } => {
                    repo.backend().delete(ObjectKind::Snapshot, snapshot)?
                }
                Step::Delete { object, .. } | Step::Unmark { object } => {
                    match repo.backend().delete(ObjectKind::Wal, object) {
                        Err(e) if !e.is_not_found() => return Err(e),
                        _ => {}
                    }
                }
                Step::Mark { object, cutoff } => {
                    let mark = ExpiryMark {
                        v: 1,
                        stanza: opts.stanza.clone(),
                        cutoff: *cutoff,
                        created: Timestamp::now(),
                    };
                    let plain = serde_json::to_vec(&mark)
                        .map_err(|e| Error::internal("writing an expiry mark", e))?;
                    let aad = [MARK_AAD, object.as_bytes()].concat();
                    let sealed = repo.keys().seal(&aad, &plain, None);
                    repo.backend().put(ObjectKind::Wal, object, &sealed)?;
                }
            }
        }
        report(step)?;
    }
    Ok(())
}
