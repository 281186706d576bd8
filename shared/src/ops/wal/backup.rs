//! Base backups: the data directory between `pg_backup_start` and
//! `pg_backup_stop` on one held session, stored as an ordinary bk snapshot
//! through the chunk store (so a second backup stores only what changed),
//! with `backup_label` and `tablespace_map` added byte for byte and the
//! backup's WAL range in its tags.
//!
//! The snapshot is committed only after pg_backup_stop returned and every
//! WAL file from the start segment to the stop segment is in the archive:
//! a base backup that cannot be made consistent is never reported, and
//! never left behind as one.

use super::archive::{self, object_name};
use super::session::PgSession;
use crate::error::{Error, Result};
use crate::format::time::Timestamp;
use crate::format::wal::{lsn, parse_lsn, StanzaRecord, WalFile};
use crate::layout::ObjectKind;
use crate::ops::put::{put_tree_with, ParentChoice, PutOptions, PutOutcome};
use crate::ops::source::{EndFiles, Take};
use crate::store::repo::Repository;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tag keys of a base backup's snapshot.
pub mod tag {
    pub const STANZA: &str = "bk-wal.stanza";
    pub const TIMELINE: &str = "pg.timeline";
    pub const START_LSN: &str = "pg.start_lsn";
    pub const STOP_LSN: &str = "pg.stop_lsn";
    pub const START_WAL: &str = "pg.start_wal";
    pub const STOP_WAL: &str = "pg.stop_wal";
    pub const STOP_TIME: &str = "pg.stop_time";
    pub const SYSTEM_IDENTIFIER: &str = "pg.system_identifier";
    pub const VERSION: &str = "pg.version";
}

pub struct BackupOptions {
    pub stanza: String,
    /// The data directory; by default the server's own `data_directory`.
    pub pgdata: Option<PathBuf>,
    pub psql: PathBuf,
    /// Ask for an immediate checkpoint instead of a spread one.
    pub fast: bool,
    /// How long to wait for the backup's WAL to reach the archive.
    pub archive_timeout: Duration,
    /// Counts the data directory's files and bytes, for a progress bar.
    pub progress: Option<Arc<crate::ops::progress::Progress>>,
}

/// What the server says about itself.
struct Cluster {
    system_identifier: u64,
    version_num: u32,
    segment_size: u32,
    block_size: u32,
    data_directory: PathBuf,
}

fn cluster(session: &mut PgSession) -> Result<Cluster> {
    let bad = |what: &str, v: &str| {
        Error::internal("asking PostgreSQL about itself", format!("{what}: {v:?}"))
    };
    let sysid = session.value("SELECT system_identifier FROM pg_control_system()")?;
    let version = session.value("SELECT current_setting('server_version_num')")?;
    let seg = session.value("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'")?;
    let unit = session
        .value("SELECT coalesce(unit, '') FROM pg_settings WHERE name = 'wal_segment_size'")?;
    let block = session.value("SELECT current_setting('block_size')")?;
    let dir = session.value("SELECT current_setting('data_directory')")?;
    let seg: u64 = seg.parse().map_err(|_| bad("wal_segment_size", &seg))?;
    // PostgreSQL 11+ reports bytes ("B"); older versions 8 kB blocks.
    let seg = if unit == "8kB" { seg * 8192 } else { seg };
    Ok(Cluster {
        system_identifier: sysid
            .parse()
            .map_err(|_| bad("system_identifier", &sysid))?,
        version_num: version
            .parse()
            .map_err(|_| bad("server_version_num", &version))?,
        segment_size: u32::try_from(seg).map_err(|_| bad("wal_segment_size", "too large"))?,
        block_size: block.parse().map_err(|_| bad("block_size", &block))?,
        data_directory: PathBuf::from(dir),
    })
}

/// What pg_basebackup leaves out of a data directory, for the same
/// reasons: runtime state rebuilt at start, and WAL, which comes from the
/// archive.
pub fn data_directory_filter(rel: &[u8], is_dir: bool) -> Take {
    const DIR_CONTENTS: &[&[u8]] = &[
        b"pg_wal",
        b"pg_dynshmem",
        b"pg_notify",
        b"pg_replslot",
        b"pg_serial",
        b"pg_snapshots",
        b"pg_stat_tmp",
        b"pg_subtrans",
    ];
    const FILES: &[&[u8]] = &[
        b"postmaster.pid",
        b"postmaster.opts",
        b"backup_label",
        b"tablespace_map",
        b"backup_manifest",
        b"postgresql.auto.conf.tmp",
        b"current_logfiles.tmp",
    ];
    let name = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
    if name.starts_with(b"pgsql_tmp") || name.starts_with(b"pg_internal.init") {
        return Take::Nothing;
    }
    if is_dir && DIR_CONTENTS.contains(&rel) {
        return Take::DirOnly;
    }
    if !is_dir && FILES.contains(&rel) {
        return Take::Nothing;
    }
    // pg_wal/archive_status stays (empty), as pg_basebackup leaves it.
    Take::All
}

/// Takes a base backup; returns the committed snapshot.
pub fn backup(repo: &Repository, opts: &BackupOptions) -> Result<PutOutcome> {
    let mut session = PgSession::connect(&opts.psql)?;
    let c = cluster(&mut session)?;
    let stanza = bind_or_check(repo, &opts.stanza, &c)?;
    let pgdata = opts
        .pgdata
        .clone()
        .unwrap_or_else(|| c.data_directory.clone());
    refuse_tablespaces(&pgdata)?;
    let label = format!("bk-wal {} {}", opts.stanza, Timestamp::now());
    let start = if c.version_num >= 150000 {
        session.value(&format!("SELECT pg_backup_start('{label}', {})", opts.fast))?
    } else {
        session.value(&format!(
            "SELECT pg_start_backup('{label}', {}, false)",
            opts.fast
        ))?
    };
    let start_lsn =
        parse_lsn(&start).ok_or_else(|| Error::internal("starting a base backup", &start))?;
    let timeline: u32 = session
        .value("SELECT timeline_id FROM pg_control_checkpoint()")?
        .parse()
        .map_err(|_| Error::internal("starting a base backup", "timeline"))?;
    let start_wal = WalFile::Segment {
        timeline,
        segno: start_lsn / u64::from(c.segment_size),
    };
    let mut tags = BTreeMap::new();
    tags.insert(tag::STANZA.to_string(), opts.stanza.clone());
    tags.insert(tag::TIMELINE.to_string(), timeline.to_string());
    tags.insert(tag::START_LSN.to_string(), lsn(start_lsn));
    tags.insert(tag::START_WAL.to_string(), start_wal.name(c.segment_size));
    tags.insert(
        tag::SYSTEM_IDENTIFIER.to_string(),
        c.system_identifier.to_string(),
    );
    tags.insert(tag::VERSION.to_string(), c.version_num.to_string());
    let late = Arc::new(Mutex::new(BTreeMap::new()));
    let put_opts = PutOptions {
        identity: Some(format!(
            "postgres@{}:{}",
            crate::sys::hostname().unwrap_or_else(|| "localhost".into()),
            pgdata.display()
        )),
        tags,
        late_tags: Some(Arc::clone(&late)),
        progress: opts.progress.clone(),
        ..PutOptions::default()
    };
    let stop = StopContext {
        repo,
        stanza: &stanza,
        version_num: c.version_num,
        timeline,
        start_wal,
        timeout: opts.archive_timeout,
    };
    put_tree_with(
        repo,
        &pgdata,
        &ParentChoice::Latest,
        &put_opts,
        |chunk| {
            chunk.filter = Some(Box::new(data_directory_filter));
            chunk.live_source = true;
        },
        move || {
            let (files, tags) = stop.finish(&mut session)?;
            late.lock().unwrap_or_else(|p| p.into_inner()).extend(tags);
            Ok(files)
        },
    )
}

/// The stanza's binding, made now from the server's own identity when no
/// WAL was archived yet; another cluster's stanza is refused.
fn bind_or_check(repo: &Repository, stanza: &str, c: &Cluster) -> Result<StanzaRecord> {
    let record = StanzaRecord {
        v: 1,
        stanza: stanza.to_string(),
        system_identifier: c.system_identifier,
        segment_size: c.segment_size,
        block_size: c.block_size,
        pg_version: c.version_num / 10000,
        created: Timestamp::now(),
    };
    let bound = match archive::load_stanza(repo, stanza)? {
        Some(b) => b,
        None => archive::bind_stanza(repo, stanza, record)?,
    };
    if bound.system_identifier != c.system_identifier {
        return Err(Error::Conflict {
            subject: crate::error::Subject::object(ObjectKind::Wal, format!("{stanza}.stanza")),
            message: format!(
                "stanza {stanza} belongs to cluster {}, this server is cluster {}",
                bound.system_identifier, c.system_identifier
            ),
        });
    }
    Ok(bound)
}

/// Tablespaces live outside the data directory; a backup that silently
/// left them out would restore a cluster missing tables.
fn refuse_tablespaces(pgdata: &Path) -> Result<()> {
    let dir = pgdata.join("pg_tblspc");
    let count = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.count(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(Error::io(dir, e)),
    };
    if count > 0 {
        return Err(Error::Usage(format!(
            "{}: the cluster has {count} tablespace(s); bk-wal backs up the data directory only, \
             so it refuses rather than leave them out",
            dir.display()
        )));
    }
    Ok(())
}

struct StopContext<'a> {
    repo: &'a Repository,
    stanza: &'a StanzaRecord,
    version_num: u32,
    timeline: u32,
    start_wal: WalFile,
    timeout: Duration,
}

impl StopContext<'_> {
    /// pg_backup_stop, then the wait for the backup's WAL in the archive.
    /// Returns the files to add (backup_label, tablespace_map) and the
    /// tags known now.
    fn finish(&self, session: &mut PgSession) -> Result<(EndFiles, BTreeMap<String, String>)> {
        let stop_sql = if self.version_num >= 150000 {
            "SELECT lsn, translate(encode(convert_to(labelfile, 'UTF8'), 'base64'), E'\\n', ''), \
             coalesce(translate(encode(convert_to(spcmapfile, 'UTF8'), 'base64'), E'\\n', ''), '') \
             FROM pg_backup_stop(true)"
        } else {
            "SELECT lsn, translate(encode(convert_to(labelfile, 'UTF8'), 'base64'), E'\\n', ''), \
             coalesce(translate(encode(convert_to(spcmapfile, 'UTF8'), 'base64'), E'\\n', ''), '') \
             FROM pg_stop_backup(false, true)"
        };
        let row = session.value(stop_sql)?;
        let fields: Vec<&str> = row.split('|').collect();
        let bad = || {
            Error::internal(
                "stopping a base backup",
                format!("unexpected reply {row:?}"),
            )
        };
        let [stop, label, spcmap] = fields.as_slice() else {
            return Err(bad());
        };
        let stop_lsn = parse_lsn(stop).ok_or_else(bad)?;
        let b64 = |t: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(|_| bad())
        };
        let label = b64(label)?;
        let spcmap = b64(spcmap)?;
        let seg = self.stanza.segment_size;
        // The stop LSN is the end of the backup's last record: the segment
        // holding the byte before it is the last one recovery needs.
        let stop_wal = WalFile::Segment {
            timeline: self.timeline,
            segno: stop_lsn.saturating_sub(1) / u64::from(seg),
        };
        self.wait_for_archive(stop_wal)?;
        let mut files = vec![("backup_label".to_string(), label)];
        if !spcmap.is_empty() {
            files.push(("tablespace_map".to_string(), spcmap));
        }
        let mut tags = BTreeMap::new();
        tags.insert(tag::STOP_LSN.to_string(), lsn(stop_lsn));
        tags.insert(tag::STOP_WAL.to_string(), stop_wal.name(seg));
        tags.insert(tag::STOP_TIME.to_string(), Timestamp::now().to_string());
        Ok((files, tags))
    }

    /// Waits until every segment from the start to `stop` is archived.
    fn wait_for_archive(&self, stop: WalFile) -> Result<()> {
        let (WalFile::Segment { segno: first, .. }, WalFile::Segment { segno: last, .. }) =
            (self.start_wal, stop)
        else {
            return Err(Error::internal("waiting for WAL", "not segments"));
        };
        let seg = self.stanza.segment_size;
        let deadline = Instant::now() + self.timeout;
        let mut missing: Vec<String> = (first..=last)
            .map(|segno| {
                WalFile::Segment {
                    timeline: self.timeline,
                    segno,
                }
                .name(seg)
            })
            .collect();
        loop {
            let listed: std::collections::HashSet<String> = self
                .repo
                .backend()
                .list(ObjectKind::Wal)?
                .into_iter()
                .map(|o| o.name)
                .collect();
            missing.retain(|name| !listed.contains(&object_name(&self.stanza.stanza, name)));
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Usage(format!(
                    "the backup's WAL is not in the archive after {} s ({} missing, first {}): \
                     is archive_command set to bk-wal push --stanza {}? nothing was committed",
                    self.timeout.as_secs(),
                    missing.len(),
                    missing[0],
                    self.stanza.stanza
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
