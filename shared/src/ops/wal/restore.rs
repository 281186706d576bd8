//! Point-in-time recovery: pick the base backup, restore it, and write the
//! recovery settings that make PostgreSQL replay archived WAL to the
//! target through `bk-wal fetch`.
//!
//! Without a target from the user, the target is the last whole record of
//! the archive on the chosen timeline (found by reading that segment), not
//! "replay until a file is missing": with a target set, PostgreSQL stops
//! with FATAL when the archive has a gap before it, instead of promoting a
//! cluster that silently lacks every transaction after the gap.

use super::archive::{self, object_name};
use super::backup::tag;
use super::info::Archive;
use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use crate::format::time::Timestamp;
use crate::format::wal::{last_whole_record, lsn, parse_lsn, StanzaRecord, WalFile};
use crate::layout::ObjectKind;
use crate::ops::restore::{restore, RestoreOptions, RestoreSummary};
use crate::store::listing::{entries, ListingRecords};
use crate::store::repo::{Repository, Snapshot};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The last whole record archived on the target timeline (default).
    EndOfArchive,
    /// PostgreSQL's own default: replay until a file is not found. A gap
    /// in the archive then ends recovery early, silently.
    UntilMissing,
    /// As soon as the backup is consistent.
    Immediate,
    Time(Timestamp),
    Lsn(u64),
    Name(String),
    Xid(String),
}

#[derive(Debug, Clone)]
pub struct WalRestoreOptions {
    pub stanza: String,
    pub into: PathBuf,
    pub target: Target,
    /// promote, pause or shutdown (PostgreSQL's recovery_target_action);
    /// `None`: promote for the end of the archive, PostgreSQL's default
    /// (pause) otherwise.
    pub action: Option<String>,
    /// latest, current, or a number.
    pub timeline: String,
    /// A base backup's snapshot id (or prefix); default: chosen by target.
    pub backup: Option<String>,
    /// The restore_command to write (default: this bk-wal with the
    /// repository settings of this process that are not secrets).
    pub restore_command: String,
    /// Restore into a non-empty directory (its contents are replaced).
    pub force: bool,
    /// Counts the base backup's files and bytes restored, for a progress bar.
    pub progress: Option<std::sync::Arc<crate::ops::progress::Progress>>,
}

/// A base backup as its snapshot's tags describe it.
#[derive(Debug, Clone)]
pub struct BaseBackup {
    pub id: ObjectId,
    pub snapshot: Snapshot,
    pub timeline: u32,
    pub start_lsn: u64,
    pub stop_lsn: u64,
    pub stop_time: Option<Timestamp>,
}

/// The complete base backups of `stanza` among `snapshots`, oldest first.
pub fn base_backups(
    stanza: &str,
    snapshots: impl IntoIterator<Item = (ObjectId, Snapshot)>,
) -> Vec<BaseBackup> {
    let mut out = Vec::new();
    for (id, snapshot) in snapshots {
        let tags = &snapshot.tags;
        if tags.get(tag::STANZA).map(String::as_str) != Some(stanza) {
            continue;
        }
        let lsn_of = |k: &str| tags.get(k).and_then(|v| parse_lsn(v));
        let (Some(timeline), Some(start_lsn), Some(stop_lsn)) = (
            tags.get(tag::TIMELINE).and_then(|t| t.parse().ok()),
            lsn_of(tag::START_LSN),
            lsn_of(tag::STOP_LSN),
        ) else {
            continue;
        };
        let stop_time = tags.get(tag::STOP_TIME).and_then(|t| Timestamp::parse(t));
        out.push(BaseBackup {
            id,
            snapshot,
            timeline,
            start_lsn,
            stop_lsn,
            stop_time,
        });
    }
    out.sort_by_key(|b| (b.snapshot.time, b.stop_lsn));
    out
}

/// The timelines of `stanza`'s archive: for each, its parent and the LSN
/// where it branched off, read from the `.history` files.
#[derive(Debug, Default, Clone)]
pub struct Timelines {
    /// timeline → (parent, switch point), from its history file.
    pub parents: BTreeMap<u32, (u32, u64)>,
    /// timeline → the highest whole segment archived on it.
    pub last_segment: BTreeMap<u32, u64>,
}

impl Timelines {
    /// From the archive's segments and its `.history` files (read here).
    pub fn of(repo: &Repository, archive: &Archive) -> Result<Timelines> {
        let stanza = &archive.stanza.stanza;
        let mut t = Timelines {
            last_segment: archive
                .segments
                .iter()
                .filter_map(|(&tl, segs)| Some((tl, *segs.last()?)))
                .collect(),
            ..Timelines::default()
        };
        for &timeline in &archive.histories {
            let file = WalFile::History { timeline }.name(archive.stanza.segment_size);
            let bytes = archive::fetch(repo, stanza, &file)?.unwrap_or_default();
            // The last line names the direct parent and the switch point.
            let last = String::from_utf8_lossy(&bytes)
                .lines()
                .rev()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .find_map(|l| {
                    let mut f = l.split_whitespace();
                    Some((f.next()?.parse::<u32>().ok()?, parse_lsn(f.next()?)?))
                });
            if let Some(parent) = last {
                t.parents.insert(timeline, parent);
            }
        }
        Ok(t)
    }

    /// The highest timeline known (from segments or history files).
    pub fn latest(&self) -> u32 {
        let a = self.last_segment.keys().max().copied().unwrap_or(1);
        let b = self.parents.keys().max().copied().unwrap_or(1);
        a.max(b)
    }

    /// Whether WAL at `pos` on timeline `from` lies on the history of
    /// `target` (the same timeline, or an ancestor before it branched).
    pub fn on_history(&self, from: u32, pos: u64, target: u32) -> bool {
        let mut tl = target;
        let mut limit = u64::MAX;
        loop {
            if tl == from {
                return pos <= limit;
            }
            match self.parents.get(&tl) {
                Some(&(parent, switch)) => {
                    limit = limit.min(switch);
                    tl = parent;
                }
                None => return false,
            }
        }
    }
}

/// What a restore did, for its JSON line.
#[derive(Debug, Clone)]
pub struct WalRestored {
    pub backup: BaseBackup,
    pub timeline: u32,
    /// The settings written to postgresql.auto.conf.
    pub settings: Vec<(String, String)>,
    pub summary: RestoreSummary,
}

pub fn restore_cluster(repo: &Repository, opts: &WalRestoreOptions) -> Result<WalRestored> {
    let wal = Archive::load(repo, &opts.stanza)?;
    let stanza = &wal.stanza;
    let timelines = Timelines::of(repo, &wal)?;
    let timeline = match opts.timeline.as_str() {
        "latest" => timelines.latest(),
        "current" => 0, // the backup's own, resolved below
        n => n.parse().map_err(|_| {
            Error::Usage(format!(
                "--target-timeline {n:?}: latest, current or a number"
            ))
        })?,
    };
    let backup = choose_backup(repo, opts, &wal.backups, &timelines, timeline)?;
    let timeline = if timeline == 0 {
        backup.timeline
    } else {
        timeline
    };
    prepare_directory(opts)?;
    if let Some(p) = &opts.progress {
        p.set_totals(backup.snapshot.files, backup.snapshot.bytes);
    }
    let index = repo.load_index()?;
    let records = ListingRecords::new(repo, &index, &backup.snapshot.listing);
    let restore_opts = RestoreOptions {
        into: opts.into.clone(),
        filters: Vec::new(),
        threads: 0,
        progress: opts.progress.clone(),
    };
    let summary = restore(repo, &index, entries(records), &restore_opts)?;
    if summary.errors > 0 || summary.integrity_errors > 0 {
        return Err(Error::integrity(
            crate::error::Subject::object(ObjectKind::Snapshot, backup.id.to_hex()),
            format!(
                "{} files of the base backup could not be restored; {} is not a usable cluster",
                summary.errors,
                opts.into.display()
            ),
        ));
    }
    let settings = recovery_settings(repo, opts, stanza, &timelines, timeline, &backup)?;
    write_recovery(opts, &settings)?;
    Ok(WalRestored {
        backup,
        timeline,
        settings,
        summary,
    })
}

fn choose_backup(
    repo: &Repository,
    opts: &WalRestoreOptions,
    backups: &[BaseBackup],
    timelines: &Timelines,
    timeline: u32,
) -> Result<BaseBackup> {
    if let Some(spec) = &opts.backup {
        let (id, _) = repo.choose_snapshot(spec, None, &Default::default())?;
        return backups.iter().find(|b| b.id == id).cloned().ok_or_else(|| {
            Error::Usage(format!(
                "snapshot {spec} is not a base backup of stanza {}",
                opts.stanza
            ))
        });
    }
    let usable = |b: &BaseBackup| {
        let on_path = timeline == 0 || timelines.on_history(b.timeline, b.stop_lsn, timeline);
        let before = match &opts.target {
            Target::Time(t) => b.stop_time.is_some_and(|s| s <= *t),
            Target::Lsn(l) => b.stop_lsn <= *l,
            _ => true,
        };
        on_path && before
    };
    backups
        .iter()
        .rev()
        .find(|b| usable(b))
        .cloned()
        .ok_or_else(|| {
            Error::Usage(format!(
                "no base backup of stanza {} ends before the target on timeline {timeline} \
             (`bk-wal info` lists them)",
                opts.stanza
            ))
        })
}

/// The target directory must be empty (or absent) unless `force`; a
/// running server's directory is refused even then.
fn prepare_directory(opts: &WalRestoreOptions) -> Result<()> {
    let dir = &opts.into;
    let entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    if entries.is_empty() {
        return Ok(());
    }
    if dir.join("postmaster.pid").exists() {
        return Err(Error::Usage(format!(
            "{}: a server may be running here (postmaster.pid); stop it first",
            dir.display()
        )));
    }
    if !opts.force {
        return Err(Error::Usage(format!(
            "{} is not empty: restore into an empty directory, or give --force to replace its contents",
            dir.display()
        )));
    }
    for e in entries {
        let p = e.path();
        let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|err| Error::io(&p, err))?;
    }
    Ok(())
}

fn recovery_settings(
    repo: &Repository,
    opts: &WalRestoreOptions,
    stanza: &StanzaRecord,
    timelines: &Timelines,
    timeline: u32,
    backup: &BaseBackup,
) -> Result<Vec<(String, String)>> {
    let mut s = vec![("restore_command".to_string(), opts.restore_command.clone())];
    let mut action = opts.action.clone();
    match &opts.target {
        Target::EndOfArchive => {
            let end = end_of_archive(repo, stanza, timelines, timeline)?;
            // Never before the backup's own end: recovery needs that much.
            let end = end.max(backup.stop_lsn);
            s.push(("recovery_target_lsn".into(), lsn(end)));
            action.get_or_insert_with(|| "promote".into());
        }
        Target::UntilMissing => {}
        Target::Immediate => s.push(("recovery_target".into(), "immediate".into())),
        Target::Time(t) => s.push(("recovery_target_time".into(), pg_time(*t))),
        Target::Lsn(l) => s.push(("recovery_target_lsn".into(), lsn(*l))),
        Target::Name(n) => s.push(("recovery_target_name".into(), n.clone())),
        Target::Xid(x) => s.push(("recovery_target_xid".into(), x.clone())),
    }
    if let Some(a) = action {
        if !matches!(a.as_str(), "promote" | "pause" | "shutdown") {
            return Err(Error::Usage(format!(
                "--target-action {a:?}: promote, pause or shutdown"
            )));
        }
        if opts.target != Target::UntilMissing {
            s.push(("recovery_target_action".into(), a));
        }
    }
    let tl = match opts.timeline.as_str() {
        "latest" | "current" => opts.timeline.clone(),
        _ => timeline.to_string(),
    };
    s.push(("recovery_target_timeline".into(), tl));
    Ok(s)
}

/// A time as PostgreSQL reads it: microseconds at most, explicit UTC.
fn pg_time(t: Timestamp) -> String {
    let text = t.to_rfc3339(); // 2026-12-03T10:00:00.123456789Z
    let (date_time, nanos) = text
        .trim_end_matches('Z')
        .split_once('.')
        .unwrap_or((&text, "0"));
    format!(
        "{} {}.{:0<6.6}+00",
        &date_time[..10],
        &date_time[11..],
        nanos
    )
}

/// The start of the last whole record archived on `timeline`.
fn end_of_archive(
    repo: &Repository,
    stanza: &StanzaRecord,
    timelines: &Timelines,
    timeline: u32,
) -> Result<u64> {
    let segno = timelines
        .last_segment
        .get(&timeline)
        .copied()
        .ok_or_else(|| {
            Error::Usage(format!(
            "timeline {timeline} has no archived segment, so the end of the archive is unknown: \
             give a target, or --target until-missing"
        ))
        })?;
    let name = WalFile::Segment { timeline, segno }.name(stanza.segment_size);
    let bytes = archive::fetch(repo, &stanza.stanza, &name)?.ok_or_else(|| {
        Error::damaged(
            ObjectKind::Wal,
            object_name(&stanza.stanza, &name),
            "listed but gone",
        )
    })?;
    last_whole_record(&bytes).ok_or_else(|| {
        Error::damaged(
            ObjectKind::Wal,
            object_name(&stanza.stanza, &name),
            "no whole WAL record in the last archived segment",
        )
    })
}

/// recovery.signal, and the settings appended to postgresql.auto.conf
/// (read last, so they win over postgresql.conf).
fn write_recovery(opts: &WalRestoreOptions, settings: &[(String, String)]) -> Result<()> {
    use std::io::Write;
    let signal = opts.into.join("recovery.signal");
    std::fs::write(&signal, b"").map_err(|e| Error::io(&signal, e))?;
    let conf = opts.into.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&conf)
        .map_err(|e| Error::io(&conf, e))?;
    let mut text = format!(
        "\n# Recovery settings written by bk-wal restore (stanza {}, {})\n",
        opts.stanza,
        Timestamp::now()
    );
    for (k, v) in settings {
        text.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
    }
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&conf, e))?;
    // The files are the server's, like the restored ones around them.
    if let Ok(md) = std::fs::metadata(&opts.into) {
        use std::os::unix::fs::MetadataExt;
        for p in [&signal, &conf] {
            let _ = std::os::unix::fs::chown(p, Some(md.uid()), Some(md.gid()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_postgresql_reads_them() {
        let t = Timestamp::parse("2026-12-03T11:01:39.272576123Z").unwrap();
        assert_eq!(pg_time(t), "2026-12-03 11:01:39.272576+00");
        let t = Timestamp::parse("2026-12-03T11:01:39+01:00").unwrap();
        assert_eq!(pg_time(t), "2026-12-03 10:01:39.000000+00");
    }

    #[test]
    fn history_follows_parents_up_to_their_switch_points() {
        let mut t = Timelines::default();
        t.parents.insert(2, (1, 0x500));
        t.parents.insert(3, (2, 0x900));
        assert!(t.on_history(1, 0x400, 3));
        assert!(!t.on_history(1, 0x600, 3), "after timeline 2 branched off");
        assert!(t.on_history(2, 0x800, 3));
        assert!(!t.on_history(2, 0x800, 1), "not an ancestor");
        assert_eq!(t.latest(), 3);
    }
}
