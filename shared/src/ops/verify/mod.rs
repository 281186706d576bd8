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

//! One check per file over the shared [`report`]: `structure` (config,
//! keys, index and snapshot objects), `packs` (references and
//! `--read-data`), `listings` (chunks resolve; damage mapped to snapshots
//! and paths, through `walker`), `recheck` (what changed under the run),
//! `against` (a live directory), `selection` (which packs are read),
//! `wal` (bk-wal's archives: continuity, history files, `--read-data`).

mod against;
mod listings;
mod packs;
mod recheck;
mod report;
mod selection;
mod structure;
mod wal;
mod walker;

use recheck::Recheck;
use report::Report;
pub use selection::PackSelection;
use walker::{Listed, ListingWalker};

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
use crate::store::marks::{read_marks, StoredMark};
use crate::store::reader::ChunkReader;
use crate::store::repo::{merged_index, parallel_map, Repository, Snapshot};
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

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// `None`: structure only.
    pub read_data: Option<PackSelection>,
    /// Compare this snapshot (`latest`, an id or prefix) with a directory.
    pub against: Option<(PathBuf, String)>,
    /// The exclusion rules the backup used, applied to `against`'s
    /// directory (and to the snapshot) so excluded paths are not reported.
    pub exclude: crate::ops::exclude::ExcludeOptions,
    /// Threads downloading and checking packs (0: twice the CPUs, 2 to 8).
    pub threads: usize,
    /// Counts the packs read (`read_data`), for a progress bar.
    pub progress: Option<std::sync::Arc<crate::ops::progress::Progress>>,
}

/// The result of [`verify`].
#[derive(Debug, Clone)]
pub struct Outcome {
    pub summary: VerifySummary,
    pub exit: ExitCode,
    pub metrics: RepositoryMetrics,
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

/// The snapshot `--against DIR SPEC` compares with. `latest` is the newest
/// snapshot of DIR's own identity when there is one (what bk-put --from DIR
/// would make its parent), so a drill in a repository shared by many
/// applications compares like with like; otherwise the usual resolution.
fn against_snapshot(
    repo: &Repository,
    dir: &std::path::Path,
    spec: &str,
) -> Result<(ObjectId, Snapshot)> {
    let none = std::collections::BTreeMap::new();
    if spec == "latest" {
        let chunk_opts = crate::ops::source::ChunkOptions::for_repo(repo);
        let own =
            crate::ops::put::default_identity(&crate::ops::source::tree_header(dir, &chunk_opts)?);
        match repo.choose_snapshot(spec, Some(&own), &none) {
            Err(Error::Usage(_)) => {}
            found => return found,
        }
    }
    // bk-verify has no --identity: the hint that suggests one (for a
    // directory that is not where the snapshot was taken, such as a
    // restore) names what works here instead.
    repo.choose_snapshot(spec, None, &none)
        .map_err(|e| match e {
            Error::UsageHint { message, .. } if spec == "latest" => Error::usage_hint(
                message,
                format!(
                    "{} is not where a snapshot was taken, so its identity does not choose one: \
                     name the snapshot by id or prefix (`bk-ls` lists them)",
                    dir.display()
                ),
            ),
            e => e,
        })
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
        Some((dir, spec)) => Some((dir.clone(), against_snapshot(repo, dir, spec)?)),
        None => None,
    };
    let mut summary = VerifySummary {
        v: wire::VERSION,
        ..Default::default()
    };

    let (listed, marks) = list_in_commit_order(repo)?;
    // Regression: a damaged mark was skipped here ("readers go without
    // it") while every reader's index load fails on it (bk-ls SNAPSHOT,
    // bk-get and bk-prune exit 13): verify said ok. It is damage; the
    // rest of the check goes on without the mark.
    let marks = marks.unwrap_or_else(|e| {
        let object = match &e {
            Error::Integrity {
                subject: crate::error::Subject::Object { kind, name },
                ..
            } => kind.path(name),
            _ => "gc/".to_string(),
        };
        v.report.failure("gc", &object, &e);
        Vec::new()
    });
    let metrics_objects = ObjectKind::ALL
        .iter()
        .map(|k| {
            let l = listed.get(k).map_or(&[][..], Vec::as_slice);
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
        let (n, bytes, blobs) = v.read_data(
            sel,
            &packs,
            &index_objects,
            &index,
            opts.threads,
            opts.progress.as_deref(),
        )?;
        summary.packs_read = n;
        summary.bytes_read = bytes;
        summary.blobs_checked = blobs;
    }
    v.recheck(&index_objects)?;
    drop(index_objects);

    if let Some((dir, (id, snap))) = &against {
        let (entries, bytes) = v.against(dir, id, snap, &reader, &opts.exclude)?;
        summary.entries_compared = Some(entries);
        summary.bytes_compared = Some(bytes);
    }

    v.map_affected(&snapshots, &reader)?;
    let (wal_files, wal_metrics) = v.check_wal(
        &listed[&ObjectKind::Wal],
        &snapshots,
        opts.read_data.is_some(),
    )?;
    summary.wal_files = wal_files;

    let items = v
        .report
        .items
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let exit = write_report(items, &mut summary, started, out)?;
    Ok(Outcome {
        summary,
        exit,
        metrics: RepositoryMetrics {
            objects: metrics_objects,
            identities: identity_metrics(&snapshots),
            wal: wal_metrics,
        },
    })
}

/// Each kind's listing, taken once per run.
type Listings = HashMap<ObjectKind, Vec<ObjectInfo>>;

/// Lists every kind of object in the reverse of the commit order (packs →
/// index → snapshot, marks before the compacted index that drops their
/// packs): what a listed object names was durable before the next listing
/// began, so it is in that listing unless a prune deleted it meanwhile
/// (ARCHITECTURE.md §15). Errors such a deletion can cause are re-checked
/// before they are reported (`Verifier::recheck`).
fn list_in_commit_order(repo: &Repository) -> Result<(Listings, Result<Vec<StoredMark>>)> {
    let mut listed = Listings::new();
    for kind in [ObjectKind::Snapshot, ObjectKind::Gc] {
        listed.insert(kind, repo.backend().list(kind)?);
    }
    let marks = read_marks(&**repo.backend(), repo.keys(), &listed[&ObjectKind::Gc]);
    for kind in [
        ObjectKind::Index,
        ObjectKind::Pack,
        ObjectKind::Key,
        ObjectKind::Lock,
        ObjectKind::Config,
        ObjectKind::Wal,
        ObjectKind::Sqlite,
    ] {
        listed.insert(kind, repo.backend().list(kind)?);
    }
    Ok((listed, marks))
}

/// Writes the findings, most severe first, then the summary line; returns
/// the exit code they call for (damage 13 before unreadable 1).
fn write_report(
    mut items: Vec<report::Pending>,
    summary: &mut VerifySummary,
    started: Instant,
    out: &mut impl Write,
) -> Result<ExitCode> {
    fn order(p: &report::Pending) -> (Severity, &str, &str, &str) {
        let f = &p.finding;
        (f.severity, &f.check, &f.object, &f.message)
    }
    items.sort_by(|a, b| order(a).cmp(&order(b)));
    let (mut damage, mut unreadable) = (false, false);
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
    Ok(if damage {
        ExitCode::Integrity
    } else if unreadable {
        ExitCode::Failure
    } else {
        ExitCode::Success
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
