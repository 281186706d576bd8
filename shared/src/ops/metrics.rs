//! Prometheus text-format metrics for node_exporter's textfile collector
//! (`bk-verify --metrics FILE`).
//!
//! The file is replaced atomically (a temporary file in the same directory,
//! fsynced, then renamed over the old one), so the collector never reads a
//! half-written file. Every series carries a `repository` label so several
//! repositories can be verified on one node without colliding series.

use crate::error::{Error, Result};
use crate::format::wire::Severity;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// Per-identity snapshot figures.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityMetrics {
    pub identity: String,
    /// Time of the newest snapshot (its `time` field), Unix seconds.
    pub newest_timestamp: f64,
    /// Logical bytes (sum of file sizes) of the newest snapshot.
    pub newest_bytes: u64,
    pub snapshots: u64,
}

/// Per-stanza WAL archive figures (bk-wal).
#[derive(Debug, Clone, PartialEq)]
pub struct WalMetrics {
    pub stanza: String,
    pub files: u64,
    pub bytes: u64,
    /// Gaps a recovery from a base backup would meet.
    pub gaps: u64,
    /// When the newest WAL object was stored (storage clock), Unix seconds.
    pub newest_archived: Option<f64>,
    pub base_backups: u64,
    pub newest_base_backup: Option<f64>,
}

/// Figures about the repository, known once it could be opened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepositoryMetrics {
    /// (kind, object count, bytes) for every object kind listed.
    pub objects: Vec<(String, u64, u64)>,
    pub identities: Vec<IdentityMetrics>,
    pub wal: Vec<WalMetrics>,
}

/// Everything one bk-verify run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyMetrics {
    /// The `repository` label: the address as printed by the backend.
    pub repository: String,
    /// When the run started, Unix seconds.
    pub last_run: f64,
    pub success: bool,
    pub duration_s: f64,
    /// Findings per severity (error, warning, info).
    pub findings: [u64; 3],
    pub packs_read: u64,
    pub bytes_read: u64,
    /// `None` when the repository could not be opened.
    pub repo: Option<RepositoryMetrics>,
}

/// Escapes a label value for the Prometheus text format: backslash,
/// double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Formats a sample value (integers without a fraction).
fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

struct Out {
    text: String,
    repo: String,
}

impl Out {
    fn head(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} gauge");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.text, "{name}{{repository=\"{}\"", self.repo);
        for (k, v) in labels {
            let _ = write!(self.text, ",{k}=\"{}\"", escape_label(v));
        }
        let _ = writeln!(self.text, "}} {}", num(value));
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.head(name, help);
        self.sample(name, &[], value);
    }
}

/// The metrics file's content.
pub fn render(m: &VerifyMetrics) -> String {
    let mut o = Out {
        text: String::new(),
        repo: escape_label(&m.repository),
    };
    o.gauge(
        "bk_verify_last_run_timestamp_seconds",
        "Start time of the last bk-verify run.",
        m.last_run,
    );
    o.gauge(
        "bk_verify_success",
        "1 if the last bk-verify run completed without error findings, else 0.",
        if m.success { 1.0 } else { 0.0 },
    );
    o.gauge(
        "bk_verify_duration_seconds",
        "Duration of the last bk-verify run.",
        m.duration_s,
    );
    o.head(
        "bk_verify_findings",
        "Findings of the last bk-verify run by severity.",
    );
    for (i, s) in Severity::ALL.iter().enumerate() {
        o.sample(
            "bk_verify_findings",
            &[("severity", s.as_str())],
            m.findings[i] as f64,
        );
    }
    o.gauge(
        "bk_verify_packs_read",
        "Packs downloaded and checked by the last run (--read-data).",
        m.packs_read as f64,
    );
    o.gauge(
        "bk_verify_read_bytes",
        "Pack bytes downloaded and checked by the last run (--read-data).",
        m.bytes_read as f64,
    );
    let Some(r) = &m.repo else {
        return o.text;
    };
    let total: u64 = r.objects.iter().map(|(_, _, b)| b).sum();
    o.gauge(
        "bk_repository_size_bytes",
        "Bytes of all objects in the repository.",
        total as f64,
    );
    o.head(
        "bk_repository_objects",
        "Objects in the repository by kind.",
    );
    for (kind, count, _) in &r.objects {
        o.sample("bk_repository_objects", &[("kind", kind)], *count as f64);
    }
    o.head(
        "bk_repository_object_bytes",
        "Bytes of the repository's objects by kind.",
    );
    for (kind, _, bytes) in &r.objects {
        o.sample(
            "bk_repository_object_bytes",
            &[("kind", kind)],
            *bytes as f64,
        );
    }
    let snapshots: u64 = r.identities.iter().map(|i| i.snapshots).sum();
    o.gauge(
        "bk_repository_snapshots",
        "Snapshots in the repository (readable ones).",
        snapshots as f64,
    );
    o.head(
        "bk_snapshot_newest_timestamp_seconds",
        "Time of the newest snapshot per identity.",
    );
    for i in &r.identities {
        o.sample(
            "bk_snapshot_newest_timestamp_seconds",
            &[("identity", &i.identity)],
            i.newest_timestamp,
        );
    }
    o.head(
        "bk_snapshot_newest_size_bytes",
        "Bytes of file content in the newest snapshot per identity.",
    );
    for i in &r.identities {
        o.sample(
            "bk_snapshot_newest_size_bytes",
            &[("identity", &i.identity)],
            i.newest_bytes as f64,
        );
    }
    o.head("bk_snapshot_count", "Snapshots per identity.");
    for i in &r.identities {
        o.sample(
            "bk_snapshot_count",
            &[("identity", &i.identity)],
            i.snapshots as f64,
        );
    }
    render_wal(&mut o, &r.wal);
    o.text
}

/// bk-wal's series, one per stanza; nothing when no stanza exists.
fn render_wal(o: &mut Out, wal: &[WalMetrics]) {
    type Figure = fn(&WalMetrics) -> Option<f64>;
    let series: [(&str, &str, Figure); 6] = [
        (
            "bk_wal_last_archived_timestamp_seconds",
            "When the stanza's newest WAL file was stored (storage clock).",
            |w| w.newest_archived,
        ),
        ("bk_wal_files", "WAL files archived for the stanza.", |w| {
            Some(w.files as f64)
        }),
        (
            "bk_wal_bytes",
            "Stored bytes of the stanza's WAL files.",
            |w| Some(w.bytes as f64),
        ),
        (
            "bk_wal_gaps",
            "Gaps in the stanza's WAL that a recovery from a base backup would meet.",
            |w| Some(w.gaps as f64),
        ),
        ("bk_wal_base_backups", "Base backups of the stanza.", |w| {
            Some(w.base_backups as f64)
        }),
        (
            "bk_wal_newest_base_backup_timestamp_seconds",
            "Time of the stanza's newest base backup.",
            |w| w.newest_base_backup,
        ),
    ];
    if wal.is_empty() {
        return;
    }
    for (name, help, figure) in series {
        o.head(name, help);
        for w in wal {
            if let Some(v) = figure(w) {
                o.sample(name, &[("stanza", &w.stanza)], v);
            }
        }
    }
}

/// What `bk-wal push --metrics FILE` writes after each push: when the
/// last push succeeded (kept from the previous file when this one failed)
/// and how many WAL files PostgreSQL has marked `.ready` and not yet
/// archived — the backlog a stalled or slow archive builds.
pub fn render_push(
    repository: &str,
    stanza: &str,
    last_success: Option<f64>,
    ready_files: u64,
    ok: bool,
) -> String {
    let mut o = Out {
        text: String::new(),
        repo: escape_label(repository),
    };
    let label = [("stanza", stanza)];
    if let Some(t) = last_success {
        o.head(
            "bk_wal_push_last_success_timestamp_seconds",
            "When bk-wal push last archived a file.",
        );
        o.sample("bk_wal_push_last_success_timestamp_seconds", &label, t);
    }
    o.head(
        "bk_wal_push_success",
        "1 if the last bk-wal push succeeded, else 0.",
    );
    o.sample("bk_wal_push_success", &label, if ok { 1.0 } else { 0.0 });
    o.head(
        "bk_wal_ready_files",
        "WAL files marked .ready in pg_wal/archive_status at the last push.",
    );
    o.sample("bk_wal_ready_files", &label, ready_files as f64);
    o.text
}

/// One replicated database's figures, as `bk-sqlite replicate --metrics`
/// writes them after every sync.
#[derive(Debug, Clone, Default)]
pub struct SqliteMetrics {
    pub db: String,
    /// Seconds since the replica last held every committed transaction
    /// (0 while it does).
    pub lag_seconds: f64,
    /// When a sync last succeeded (Unix seconds).
    pub last_sync: Option<f64>,
    /// The database's `-wal` file now.
    pub wal_bytes: u64,
    /// Seconds since the last snapshot.
    pub snapshot_age_seconds: Option<f64>,
    pub errors_total: u64,
}

/// The textfile of `bk-sqlite replicate --metrics FILE`.
pub fn render_sqlite(repository: &str, dbs: &[SqliteMetrics]) -> String {
    let mut o = Out {
        text: String::new(),
        repo: escape_label(repository),
    };
    type Figure = fn(&SqliteMetrics) -> Option<f64>;
    let series: [(&str, &str, Figure); 5] = [
        (
            "bk_sqlite_replication_lag_seconds",
            "Seconds since the replica last held every committed transaction of the database.",
            |m| Some(m.lag_seconds),
        ),
        (
            "bk_sqlite_last_sync_timestamp_seconds",
            "When bk-sqlite last synced the database successfully.",
            |m| m.last_sync,
        ),
        (
            "bk_sqlite_wal_bytes",
            "Size of the database's -wal file.",
            |m| Some(m.wal_bytes as f64),
        ),
        (
            "bk_sqlite_snapshot_age_seconds",
            "Seconds since the database's last snapshot.",
            |m| m.snapshot_age_seconds,
        ),
        (
            "bk_sqlite_errors_total",
            "Failed syncs, snapshots and checkpoints since the replicator started.",
            |m| Some(m.errors_total as f64),
        ),
    ];
    for (name, help, figure) in series {
        o.head(name, help);
        for m in dbs {
            if let Some(v) = figure(m) {
                o.sample(name, &[("db", &m.db)], v);
            }
        }
    }
    o.text
}

/// The last-success time in a file [`render_push`] wrote.
pub fn previous_push_success(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("bk_wal_push_last_success_timestamp_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Replaces `path` with `content` atomically: a temporary file in the same
/// directory, written and fsynced, then renamed over `path`.
pub fn write_atomic(path: &Path, content: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("--metrics {}: not a file name", path.display())))?;
    let mut random = [0u8; 6];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random);
    // A leading dot and no .prom suffix: the textfile collector reads only
    // *.prom files, so it never picks up the temporary file.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        hex::encode(random)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VerifyMetrics {
        VerifyMetrics {
            repository: "s3://b/p/ (http://x)".into(),
            last_run: 1_700_000_000.5,
            success: false,
            duration_s: 2.25,
            findings: [2, 1, 0],
            packs_read: 3,
            bytes_read: 4096,
            repo: Some(RepositoryMetrics {
                wal: Vec::new(),
                objects: vec![("pack".into(), 3, 4096), ("snapshot".into(), 2, 200)],
                identities: vec![IdentityMetrics {
                    identity: "we\"ird\\user@host:/pa\nth".into(),
                    newest_timestamp: 1_699_999_000.0,
                    newest_bytes: 123,
                    snapshots: 2,
                }],
            }),
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        assert_eq!(escape_label("plain user@host:/p"), "plain user@host:/p");
        let text = render(&sample());
        assert!(
            text.contains(r#"identity="we\"ird\\user@host:/pa\nth"} 1699999000"#),
            "{text}"
        );
        // Every line is a comment or `name{labels} value`, one per line.
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(
                series.ends_with('}') && series.contains("{repository=\""),
                "{line}"
            );
        }
    }

    #[test]
    fn render_has_every_series() {
        let text = render(&sample());
        for want in [
            "bk_verify_success{repository=\"s3://b/p/ (http://x)\"} 0",
            "bk_verify_last_run_timestamp_seconds{repository=\"s3://b/p/ (http://x)\"} 1700000000.5",
            "bk_verify_findings{repository=\"s3://b/p/ (http://x)\",severity=\"error\"} 2",
            "bk_repository_size_bytes{repository=\"s3://b/p/ (http://x)\"} 4296",
            "bk_repository_objects{repository=\"s3://b/p/ (http://x)\",kind=\"pack\"} 3",
            "bk_snapshot_count{",
            "bk_snapshot_newest_size_bytes{",
            "# TYPE bk_verify_duration_seconds gauge",
        ] {
            assert!(text.contains(want), "missing {want}:\n{text}");
        }
        let mut m = sample();
        m.repo = None;
        let text = render(&m);
        assert!(text.contains("bk_verify_success"));
        assert!(!text.contains("bk_repository_size_bytes"));
    }

    #[test]
    fn write_atomic_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bk.prom");
        write_atomic(&p, "a 1\n").unwrap();
        write_atomic(&p, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files left behind");
    }
}
