//! The WAL archive: what `archive_command` and `restore_command` call.
//!
//! Each WAL file is one sealed object `wal/<stanza>.<file>`: compressed,
//! encrypted and authenticated with its own name as associated data, so an
//! object copied under another name fails to open. One object per file
//! keeps a push at one PUT and a fetch at one GET (no listing, no index):
//! PostgreSQL calls these once per 16 MiB segment, serially, and waits.
//! WAL does not deduplicate against itself or file backups (every segment
//! is new history), so the chunk store would add requests and buy nothing.
//!
//! Names are write-once: a push of a name already archived succeeds only
//! with the same bytes; other bytes are a [`Error::Conflict`] and nothing is
//! overwritten. A fetch answers "does not exist" only when the repository
//! itself says so, after it opened and the stanza was found; every other
//! failure is an error, which bk-wal turns into an exit status PostgreSQL
//! treats as fatal instead of as the end of the archive.

use crate::error::{Error, Result, Subject};
use crate::format::time::Timestamp;
// Names are classified with the smallest segment size (see there); the
// header's own size decides the segment number (`check_segment`).
use crate::format::wal::{
    check_segment, check_stanza_name, SegmentProblem, StanzaRecord, WalFile, SMALLEST_SEGMENT_SIZE,
};
use crate::layout::ObjectKind;
use crate::store::repo::Repository;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const WAL_AAD: &[u8] = b"bk wal v1\0";
const STANZA_AAD: &[u8] = b"bk wal stanza v1\0";

/// The object holding `file` of `stanza`.
pub fn object_name(stanza: &str, file: &str) -> String {
    format!("{stanza}.{file}")
}

fn stanza_object(stanza: &str) -> String {
    format!("{stanza}.stanza")
}

fn aad(prefix: &[u8], object: &str) -> Vec<u8> {
    [prefix, object.as_bytes()].concat()
}

fn subject(object: &str) -> Subject {
    Subject::object(ObjectKind::Wal, object)
}

/// The stanza's binding to its cluster, if anything was archived yet.
pub fn load_stanza(repo: &Repository, stanza: &str) -> Result<Option<StanzaRecord>> {
    check_stanza_name(stanza).map_err(Error::Usage)?;
    let object = stanza_object(stanza);
    let sealed = match repo.backend().get(ObjectKind::Wal, &object) {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let plain = repo
        .keys()
        .open(&aad(STANZA_AAD, &object), &sealed)
        .map_err(|e| Error::damaged(ObjectKind::Wal, object.as_str(), e.to_string()))?;
    serde_json::from_slice(&plain).map(Some).map_err(|e| {
        Error::damaged(
            ObjectKind::Wal,
            object.as_str(),
            format!("malformed stanza: {e}"),
        )
    })
}

/// Binds `stanza` to the cluster of `header`'s segment (first push wins;
/// a push that loses the race reads the winner's binding).
pub(super) fn bind_stanza(
    repo: &Repository,
    stanza: &str,
    record: StanzaRecord,
) -> Result<StanzaRecord> {
    let object = stanza_object(stanza);
    let plain = serde_json::to_vec(&record).map_err(|e| Error::internal("binding a stanza", e))?;
    let sealed = repo.keys().seal(&aad(STANZA_AAD, &object), &plain, None);
    match repo.backend().put(ObjectKind::Wal, &object, &sealed) {
        Ok(()) => {
            log::info!(
                "stanza {stanza} is now bound to cluster {} (PostgreSQL {})",
                record.system_identifier,
                record.pg_version
            );
            Ok(record)
        }
        Err(e) if e.is_already_there() => load_stanza(repo, stanza)?
            .ok_or_else(|| Error::internal("binding a stanza", "the stanza vanished after a race")),
        Err(e) => Err(e),
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Stored now: the file's size and the object's.
    Stored { bytes: u64, stored: u64 },
    /// The same bytes were archived before; nothing was written.
    AlreadyArchived,
}

/// zstd level for WAL objects unless told otherwise: on pgbench WAL, level
/// 1 compresses 1.6x faster than 3 for 9% more bytes (BENCHMARKS §7.1),
/// and archiving speed decides whether PostgreSQL's backlog grows, while
/// the bytes last only until the next base backup expires them.
pub const WAL_COMPRESSION: i32 = 1;

/// Pushes into one stanza. The stanza's binding to its cluster never
/// changes once made, so a long-lived pusher reads it once.
pub struct Archiver<'r> {
    repo: &'r Repository,
    stanza: String,
    compression: Option<i32>,
    bound: std::sync::OnceLock<StanzaRecord>,
}

impl<'r> Archiver<'r> {
    /// `compression`: a zstd level, 0 for none, `None` for [`WAL_COMPRESSION`].
    pub fn new(repo: &'r Repository, stanza: &str, compression: Option<i32>) -> Result<Self> {
        check_stanza_name(stanza).map_err(Error::Usage)?;
        let level = compression.unwrap_or(WAL_COMPRESSION);
        if !(0..=22).contains(&level) {
            return Err(Error::Usage(format!(
                "compression level {level} is out of range (0 for none, 1 to 22)"
            )));
        }
        Ok(Archiver {
            repo,
            stanza: stanza.to_string(),
            compression: (level > 0).then_some(level),
            bound: std::sync::OnceLock::new(),
        })
    }

    pub fn repository(&self) -> &'r Repository {
        self.repo
    }

    /// The binding, read once; `None` before the stanza's first segment.
    fn binding(&self) -> Result<Option<StanzaRecord>> {
        if let Some(b) = self.bound.get() {
            return Ok(Some(b.clone()));
        }
        let loaded = load_stanza(self.repo, &self.stanza)?;
        if let Some(b) = &loaded {
            let _ = self.bound.set(b.clone());
        }
        Ok(loaded)
    }

    /// Archives `bytes` as WAL file `name`. Returns once the object is
    /// durable in the repository.
    pub fn push(&self, name: &str, bytes: &[u8]) -> Result<Pushed> {
        self.push_with(name, bytes, &mut Vec::new())
    }

    /// [`Archiver::push`] sealing into `scratch`, a buffer the caller
    /// recycles: a fresh 16 MiB buffer per segment costs a page fault per
    /// 4 KiB, a fifth of a push helper's time.
    pub fn push_with(&self, name: &str, bytes: &[u8], scratch: &mut Vec<u8>) -> Result<Pushed> {
        let (repo, stanza) = (self.repo, self.stanza.as_str());
        let file = WalFile::parse(name, SMALLEST_SEGMENT_SIZE).ok_or_else(|| {
            Error::Usage(format!(
                "{name:?} is not a WAL file name (a segment, .partial, .history or .backup file)"
            ))
        })?;
        if file.is_segment_data() {
            self.check_and_bind(name, bytes)?;
        } else {
            check_text_file(&file, name, bytes)?;
        }
        // No read first: the name is claimed (link(2) locally, a check
        // inside the S3 backend), so a put of an archived name fails and
        // only then is the archived content compared.
        let object = object_name(stanza, name);
        repo.keys()
            .seal_into(&aad(WAL_AAD, &object), bytes, self.compression, scratch);
        match repo.backend().put(ObjectKind::Wal, &object, scratch) {
            Ok(()) => Ok(Pushed::Stored {
                bytes: bytes.len() as u64,
                stored: scratch.len() as u64,
            }),
            // Archived before (or by a push that won the race): compare.
            Err(e) if e.is_already_there() => match read_object(repo, &object)? {
                Some(existing) => same_or_conflict(&object, &existing, bytes),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Checks a segment's header against its name and the stanza's cluster;
    /// the first segment binds the stanza.
    fn check_and_bind(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let stanza = self.stanza.as_str();
        let bound = self.binding()?;
        let sysid = bound.as_ref().map(|s| s.system_identifier);
        let (_, header) =
            check_segment(name, bytes, sysid).map_err(|p| refused(stanza, name, p))?;
        if bound.is_none() {
            let record = StanzaRecord {
                v: 1,
                stanza: stanza.to_string(),
                system_identifier: header.system_identifier,
                segment_size: header.segment_size,
                block_size: header.block_size,
                pg_version: header.major_version().unwrap_or(0),
                created: Timestamp::now(),
            };
            let record = bind_stanza(self.repo, stanza, record)?;
            let _ = self.bound.set(record.clone());
            // Lost a race to another cluster's first push: check again.
            check_segment(name, bytes, Some(record.system_identifier))
                .map_err(|p| refused(stanza, name, p))?;
        }
        Ok(())
    }
}

/// Archives `bytes` as WAL file `name` of `stanza` at the WAL compression
/// level. Returns once the object is durable in the repository.
pub fn push(repo: &Repository, stanza: &str, name: &str, bytes: &[u8]) -> Result<Pushed> {
    Archiver::new(repo, stanza, None)?.push(name, bytes)
}

fn same_or_conflict(object: &str, existing: &[u8], bytes: &[u8]) -> Result<Pushed> {
    if existing == bytes {
        return Ok(Pushed::AlreadyArchived);
    }
    Err(Error::Conflict {
        subject: subject(object),
        message: format!(
            "already archived with different content ({} bytes archived, {} bytes offered); \
             two clusters may be archiving into one stanza",
            existing.len(),
            bytes.len()
        ),
    })
}

fn refused(stanza: &str, name: &str, problem: SegmentProblem) -> Error {
    match problem {
        SegmentProblem::OtherCluster { .. } => Error::Conflict {
            subject: subject(&object_name(stanza, name)),
            message: format!("refused: {problem}"),
        },
        _ => Error::Usage(format!("{name}: refused: {problem}")),
    }
}

/// `.history` and `.backup` files are short text files PostgreSQL writes;
/// anything else under those names is not theirs.
fn check_text_file(file: &WalFile, name: &str, bytes: &[u8]) -> Result<()> {
    let bad = |m: &str| Error::Usage(format!("{name}: refused: {m}"));
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not a text file"))?;
    match file {
        WalFile::History { .. } => {
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let mut fields = line.split_whitespace();
                let parent = fields.next().and_then(|t| t.parse::<u32>().ok());
                let switch = fields.next().and_then(crate::format::wal::parse_lsn);
                if parent.is_none() || switch.is_none() {
                    return Err(bad(
                        "not a timeline history file (expected `TLI<tab>LSN<tab>reason` lines)",
                    ));
                }
            }
        }
        WalFile::Backup { .. } if !text.contains("START WAL LOCATION:") => {
            return Err(bad("not a backup history file (no START WAL LOCATION)"));
        }
        _ => {}
    }
    Ok(())
}

/// The plain bytes of a WAL object, `None` when the repository says it does
/// not exist.
fn read_object(repo: &Repository, object: &str) -> Result<Option<Vec<u8>>> {
    let sealed = match repo.backend().get(ObjectKind::Wal, object) {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    repo.keys()
        .open(&aad(WAL_AAD, object), &sealed)
        .map(Some)
        .map_err(|e| Error::damaged(ObjectKind::Wal, object, format!("cannot be opened: {e}")))
}

/// Reads WAL file `name` of `stanza`: `Ok(None)` only when the stanza
/// exists and the repository says the file does not. The content is
/// checked again (a segment against its name and the stanza's cluster).
pub fn fetch(repo: &Repository, stanza: &str, name: &str) -> Result<Option<Vec<u8>>> {
    let file = WalFile::parse(name, SMALLEST_SEGMENT_SIZE)
        .ok_or_else(|| Error::Usage(format!("{name:?} is not a WAL file name")))?;
    let bound = load_stanza(repo, stanza)?.ok_or_else(|| {
        Error::Usage(format!(
            "no stanza {stanza:?} in this repository (nothing was ever archived under it): \
             check --stanza / BK_WAL_STANZA"
        ))
    })?;
    let object = object_name(stanza, name);
    let Some(bytes) = read_object(repo, &object)? else {
        return Ok(None);
    };
    if file.is_segment_data() {
        check_segment(name, &bytes, Some(bound.system_identifier))
            .map_err(|p| Error::damaged(ObjectKind::Wal, object.as_str(), p.to_string()))?;
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to `dest` through a temporary name in the same directory,
/// then renamed: PostgreSQL never sees a partial file under the name it
/// asked for, even if this process is killed. Not synced: PostgreSQL
/// fsyncs a restored file it keeps (durable_rename) and, after a crash,
/// asks again for what it had not kept; a sync here cost 9 ms a segment.
pub fn write_whole(dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_beside(dest)?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        std::fs::rename(&tmp, dest)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(dest, e)
    })
}

/// A temporary name in `dest`'s directory, this process's own.
pub(super) fn temporary_beside(dest: &Path) -> Result<std::path::PathBuf> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = dest
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file path", dest.display())))?;
    Ok(dir.join(format!(
        ".{}.bk-wal.{}",
        file_name.to_string_lossy(),
        std::process::id()
    )))
}

/// Whether a failure may pass if tried again: storage errors other than
/// "not there" and "not allowed" (unreachable, timeouts, 5xx, refused).
pub fn is_transient(e: &Error) -> bool {
    match e {
        Error::Storage { source, .. } => !matches!(
            source.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
        ),
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `budget` is spent
/// on transient failures (backoff from 100 ms, doubling, at most 5 s).
pub fn within_budget<T>(budget: Duration, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + budget;
    let mut pause = Duration::from_millis(100);
    loop {
        match attempt() {
            Err(e) if is_transient(&e) && Instant::now() + pause < deadline => {
                log::warn!("{e}; retrying in {} ms", pause.as_millis());
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;
    use crate::store::keys::Secret;
    use crate::store::repo::InitOptions;
    use std::sync::Arc;

    const SEG: u32 = 1 << 20;

    fn repo() -> Repository {
        let backend = Arc::new(MemoryBackend::new());
        Repository::init(
            backend,
            &Secret::passphrase("pw".into()),
            InitOptions::default(),
        )
        .unwrap()
    }

    fn segment(timeline: u32, segno: u64, sysid: u64) -> (String, Vec<u8>) {
        let mut b = crate::testing::noise(SEG as usize, segno);
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&2u16.to_le_bytes());
        b[4..8].copy_from_slice(&timeline.to_le_bytes());
        b[8..16].copy_from_slice(&(segno * u64::from(SEG)).to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&SEG.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        (WalFile::Segment { timeline, segno }.name(SEG), b)
    }

    #[test]
    fn push_then_fetch_returns_the_bytes_and_binds_the_stanza() {
        let repo = repo();
        let (name, bytes) = segment(1, 3, 77);
        assert!(matches!(
            push(&repo, "main", &name, &bytes).unwrap(),
            Pushed::Stored { .. }
        ));
        assert_eq!(fetch(&repo, "main", &name).unwrap(), Some(bytes.clone()));
        assert_eq!(
            load_stanza(&repo, "main")
                .unwrap()
                .unwrap()
                .system_identifier,
            77
        );
        let (other, _) = segment(1, 4, 77);
        assert_eq!(fetch(&repo, "main", &other).unwrap(), None);
        assert_eq!(fetch(&repo, "main", "00000002.history").unwrap(), None);
    }

    #[test]
    fn pushing_again_is_idempotent_and_different_bytes_conflict() {
        let repo = repo();
        let (name, bytes) = segment(1, 3, 77);
        push(&repo, "main", &name, &bytes).unwrap();
        assert_eq!(
            push(&repo, "main", &name, &bytes).unwrap(),
            Pushed::AlreadyArchived
        );
        let mut changed = bytes.clone();
        changed[SEG as usize - 1] ^= 1;
        let err = push(&repo, "main", &name, &changed).unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Conflict, "{err}");
        assert!(err.to_string().contains("different content"), "{err}");
        assert_eq!(fetch(&repo, "main", &name).unwrap(), Some(bytes));
    }

    #[test]
    fn another_clusters_segment_and_misnamed_files_are_refused() {
        let repo = repo();
        let (name, bytes) = segment(1, 3, 77);
        push(&repo, "main", &name, &bytes).unwrap();
        let (name2, foreign) = segment(1, 4, 78);
        let err = push(&repo, "main", &name2, &foreign).unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Conflict);
        assert!(err.to_string().contains("another cluster"), "{err}");
        let (_, fifth) = segment(1, 5, 77);
        let err = push(&repo, "main", &name2, &fifth).unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Usage);
        assert!(err.to_string().contains("does not match its name"), "{err}");
        let err = push(&repo, "main", "000000010000000000000004.ready", &fifth).unwrap_err();
        assert!(err.to_string().contains("not a WAL file name"), "{err}");
        assert_eq!(fetch(&repo, "main", &name2).unwrap(), None);
    }

    #[test]
    fn history_files_are_checked_and_never_overwritten() {
        let repo = repo();
        let (name, bytes) = segment(1, 3, 77);
        push(&repo, "main", &name, &bytes).unwrap();
        let history = b"1\t0/3000000\tno recovery target specified\n";
        push(&repo, "main", "00000002.history", history).unwrap();
        let err = push(&repo, "main", "00000002.history", b"1\t0/4000000\tother\n").unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Conflict);
        let err = push(&repo, "main", "00000003.history", b"garbage").unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Usage);
        assert_eq!(
            fetch(&repo, "main", "00000002.history").unwrap().unwrap(),
            history
        );
    }

    #[test]
    fn a_fetch_from_an_unknown_stanza_is_an_error_not_a_missing_file() {
        let repo = repo();
        let err = fetch(&repo, "nope", "000000010000000000000001").unwrap_err();
        assert!(err.to_string().contains("no stanza"), "{err}");
    }

    #[test]
    fn an_object_copied_under_another_name_does_not_open() {
        let repo = repo();
        let (name, bytes) = segment(1, 3, 77);
        push(&repo, "main", &name, &bytes).unwrap();
        let sealed = repo
            .backend()
            .get(ObjectKind::Wal, &object_name("main", &name))
            .unwrap();
        let (other, _) = segment(1, 4, 77);
        repo.backend()
            .put(ObjectKind::Wal, &object_name("main", &other), &sealed)
            .unwrap();
        let err = fetch(&repo, "main", &other).unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Integrity, "{err}");
    }

    #[test]
    fn the_budget_retries_transient_failures_only() {
        let mut calls = 0;
        let r: Result<()> = within_budget(Duration::from_millis(350), || {
            calls += 1;
            Err(Error::storage(
                "x",
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            ))
        });
        assert!(r.is_err());
        assert!((2..=4).contains(&calls), "{calls}");
        let mut calls = 0;
        let _ = within_budget(Duration::from_secs(5), || -> Result<()> {
            calls += 1;
            Err(Error::storage(
                "x",
                std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            ))
        });
        assert_eq!(calls, 1);
    }
}
