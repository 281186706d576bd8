//! Pushing ahead: PostgreSQL calls archive_command once per file,
//! serially, and waits for each, so one process per segment leaves the
//! other cores idle and opens the repository every time. A helper
//! (`bk-wal push-helper`, started detached by a call that finds none
//! running) pushes every `.ready` file, oldest first, on several threads
//! through one open repository, and notes each success in a spool
//! directory as `<file>.ok`. PostgreSQL's call for a file waits for the
//! helper's note and returns without opening the repository.
//!
//! Correctness never depends on the helper. A note is written only after
//! its object is durable, and it is trusted only for the very file it was
//! made from: its device, inode, size, and modification and change times,
//! taken before the file was read and again after (any write or rename
//! sets the change time, and nothing can set it back). Without a note —
//! the helper failed, is gone or too slow, or the spool is unusable — the
//! call pushes the file itself, which finds an object already stored and
//! compares it. The `.ready` files are PostgreSQL's and are only read.
//! Notes are removed by the helper once PostgreSQL has marked their file
//! `.done`, so a call repeated after a crash still finds its note.

use super::archive::Archiver;
use super::helper;
use crate::error::{Error, Result};
use crate::format::wal::WalFile;
use std::collections::{BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const OK: &str = ".ok";
const ERROR: &str = ".error";
/// How often the helper looks for new `.ready` files when it has none.
const RESCAN: Duration = Duration::from_millis(10);
/// How often a waiting call looks for its note.
const POLL: Duration = Duration::from_millis(2);

/// Where the notes live: a directory of ours inside pg_wal (excluded from
/// base backups with the rest of pg_wal; PostgreSQL ignores directories it
/// did not make there).
pub fn default_spool(wal_dir: &Path) -> PathBuf {
    wal_dir.join("bk-wal.spool")
}

/// The identity of a file's current content, as the kernel keeps it.
fn stamp(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{} {} {} {}.{:09} {}.{:09}",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec()
    ))
}

/// The call for `path` (named `name`) can return at once: the helper
/// pushed this very file.
pub fn pushed_before(spool: &Path, name: &str, path: &Path) -> bool {
    match (
        std::fs::read_to_string(spool.join(format!("{name}{OK}"))),
        stamp(path),
    ) {
        (Ok(note), Some(now)) => note.trim() == now,
        _ => false,
    }
}

/// Tells the helper that PostgreSQL is archiving: it takes new files only
/// while calls keep coming (an archive_command turned off stops it).
pub fn ask(spool: &Path) {
    helper::ask(spool, "");
}

/// `name` is marked `.ready` in `wal_dir`: the helper will take it.
pub fn is_ready(wal_dir: &Path, name: &str) -> bool {
    wal_dir
        .join("archive_status")
        .join(format!("{name}.ready"))
        .exists()
}

/// A helper holds the spool's lock.
pub fn helper_running(spool: &Path) -> bool {
    helper::running(spool)
}

/// What became of a file a call waited for.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// The helper pushed it: the call is done.
    Pushed,
    /// The helper failed to push it (its error); the call pushes it itself.
    Failed(String),
    /// No helper at work, or it took longer than the call waits.
    NoHelper,
}

/// Waits for the helper's word on `name` while `running` says it is at
/// work, at most `limit`. A failure note is consumed: the caller takes
/// the file over.
pub fn wait_for_helper(
    spool: &Path,
    name: &str,
    path: &Path,
    limit: Duration,
    mut running: impl FnMut() -> bool,
) -> Waited {
    let started = Instant::now();
    let error_note = spool.join(format!("{name}{ERROR}"));
    loop {
        if pushed_before(spool, name, path) {
            return Waited::Pushed;
        }
        if let Ok(message) = std::fs::read_to_string(&error_note) {
            let _ = std::fs::remove_file(&error_note);
            return Waited::Failed(message.trim().to_string());
        }
        if started.elapsed() > limit || !running() {
            return Waited::NoHelper;
        }
        std::thread::sleep(POLL);
    }
}

/// What a helper run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HelperRun {
    pub pushed: usize,
    pub failed: usize,
}

/// The helper: pushes the `.ready` files of `wal_dir` oldest first
/// (timeline history files before segments, as PostgreSQL does) on
/// `workers` threads, noting each in `spool`, until no archive_command
/// call has come ([`ask`]) for `idle`, or the process is told to stop.
/// Returns `None` when another helper holds the spool.
pub fn run_helper(
    archiver: &Archiver,
    wal_dir: &Path,
    spool: &Path,
    workers: usize,
    idle: Duration,
) -> Result<Option<HelperRun>> {
    std::fs::create_dir_all(spool).map_err(|e| Error::io(spool, e))?;
    let Some(_lock) = helper::take_lock(spool)? else {
        return Ok(None);
    };
    let queue = Mutex::new(Queue {
        in_flight: HashSet::new(),
    });
    let run = Mutex::new(HelperRun::default());
    std::thread::scope(|s| {
        for _ in 0..workers.max(1) {
            s.spawn(|| {
                let mut buffers = (Vec::new(), Vec::new());
                while let Some(name) = next_file(&queue, wal_dir, spool, idle) {
                    let ok = push_one(archiver, wal_dir, spool, &name, &mut buffers);
                    let mut r = run.lock().unwrap_or_else(|p| p.into_inner());
                    if ok {
                        r.pushed += 1;
                    } else {
                        r.failed += 1;
                    }
                    drop(r);
                    let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                    q.in_flight.remove(&name);
                }
            });
        }
    });
    Ok(Some(run.into_inner().unwrap_or_else(|p| p.into_inner())))
}

struct Queue {
    in_flight: HashSet<String>,
}

/// The oldest `.ready` file nobody has pushed or is pushing, waiting for
/// one while archive_command calls come; `None` once they stopped for
/// `idle`.
fn next_file(queue: &Mutex<Queue>, wal_dir: &Path, spool: &Path, idle: Duration) -> Option<String> {
    loop {
        if crate::sys::check_interrupted().is_err() {
            return None; // SIGTERM: finish what is in flight, take nothing new
        }
        helper::asked_within(spool, idle)?;
        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
        let ready = ready_files(wal_dir);
        let noted = forget_finished(spool, &ready);
        let next = ready
            .iter()
            .find(|n| !noted.contains(*n) && !q.in_flight.contains(*n))
            .cloned();
        if let Some(name) = next {
            q.in_flight.insert(name.clone());
            return Some(name);
        }
        drop(q);
        std::thread::sleep(RESCAN);
    }
}

/// Removes the notes of files no longer `.ready` (archived, or gone);
/// returns the names that still have a note (success or failure).
fn forget_finished(spool: &Path, ready: &[String]) -> HashSet<String> {
    let ready: HashSet<&str> = ready.iter().map(String::as_str).collect();
    let mut noted = HashSet::new();
    let Ok(rd) = std::fs::read_dir(spool) else {
        return noted;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let file = e.file_name().to_string_lossy().to_string();
        let Some(name) = file.strip_suffix(OK).or_else(|| file.strip_suffix(ERROR)) else {
            continue;
        };
        if ready.contains(name) {
            noted.insert(name.to_string());
        } else {
            let _ = std::fs::remove_file(e.path());
        }
    }
    noted
}

/// Pushes one file and notes the outcome; `true` when it is archived.
/// `buffers` (file, sealed object) are the worker's, recycled.
fn push_one(
    archiver: &Archiver,
    wal_dir: &Path,
    spool: &Path,
    name: &str,
    buffers: &mut (Vec<u8>, Vec<u8>),
) -> bool {
    let path = wal_dir.join(name);
    let (bytes, scratch) = buffers;
    let outcome = read_unchanged(&path, bytes).and_then(|before| {
        archiver.push_with(name, bytes, scratch)?;
        Ok(before)
    });
    match outcome {
        Ok(before) => note(spool, &format!("{name}{OK}"), &before).is_ok(),
        Err(e) => {
            log::warn!("pushing {name} ahead: {e}; PostgreSQL's own call pushes it");
            let _ = note(spool, &format!("{name}{ERROR}"), &e.to_string());
            false
        }
    }
}

/// Reads the file into `bytes`; returns its stamp, the same before and
/// after the read.
fn read_unchanged(path: &Path, bytes: &mut Vec<u8>) -> Result<String> {
    use std::io::Read;
    let changed = || Error::Usage(format!("{}: changed while it was read", path.display()));
    let before = stamp(path).ok_or_else(changed)?;
    bytes.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(bytes))
        .map_err(|e| Error::io(path, e))?;
    if stamp(path).as_deref() != Some(before.as_str()) {
        return Err(changed());
    }
    Ok(before)
}

fn note(spool: &Path, file: &str, text: &str) -> Result<()> {
    helper::write_whole(spool, file, text.as_bytes())
}

/// WAL files marked `.ready` in `wal_dir`, in PostgreSQL's order:
/// timeline history files first, then by name.
pub fn ready_files(wal_dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(wal_dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut history = BTreeSet::new();
    let mut rest = BTreeSet::new();
    for e in rd.filter_map(|e| e.ok()) {
        let file = e.file_name().to_string_lossy().to_string();
        let Some(name) = file.strip_suffix(".ready") else {
            continue;
        };
        match WalFile::parse(name, crate::format::wal::SMALLEST_SEGMENT_SIZE) {
            Some(WalFile::History { .. }) => history.insert(name.to_string()),
            Some(_) => rest.insert(name.to_string()),
            None => false,
        };
    }
    history.into_iter().chain(rest).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: &str = "000000010000000000000003";

    #[test]
    fn a_note_is_trusted_only_for_the_file_it_was_made_from() {
        let dir = tempfile::tempdir().unwrap();
        let spool = default_spool(dir.path());
        std::fs::create_dir_all(&spool).unwrap();
        let path = dir.path().join(SEG);
        std::fs::write(&path, b"segment").unwrap();
        let before = read_unchanged(&path, &mut Vec::new()).unwrap();
        note(&spool, &format!("{SEG}{OK}"), &before).unwrap();
        assert!(pushed_before(&spool, SEG, &path));
        assert!(!pushed_before(&spool, "000000010000000000000004", &path));
        // Rewritten in place with bytes of the same size: not trusted.
        std::thread::sleep(Duration::from_millis(10));
        std::fs::write(&path, b"SEGMENT").unwrap();
        assert!(!pushed_before(&spool, SEG, &path));
        // Replaced by another file under the name: not trusted either.
        std::fs::write(&path, b"segment").unwrap();
        let again = read_unchanged(&path, &mut Vec::new()).unwrap();
        note(&spool, &format!("{SEG}{OK}"), &again).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"segment").unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(!pushed_before(&spool, SEG, &path));
    }

    #[test]
    fn ready_files_come_in_postgresql_order() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("archive_status");
        std::fs::create_dir_all(&status).unwrap();
        for n in [
            "000000010000000000000005.ready",
            "000000010000000000000004.ready",
            "000000010000000000000006.done",
            "00000002.history.ready",
            "not-wal.ready",
        ] {
            std::fs::write(status.join(n), b"").unwrap();
        }
        assert_eq!(
            ready_files(dir.path()),
            vec![
                "00000002.history",
                "000000010000000000000004",
                "000000010000000000000005"
            ]
        );
    }

    #[test]
    fn notes_of_archived_files_are_forgotten_and_failures_handed_over() {
        let dir = tempfile::tempdir().unwrap();
        let spool = default_spool(dir.path());
        std::fs::create_dir_all(&spool).unwrap();
        note(&spool, "000000010000000000000001.ok", "x").unwrap();
        note(&spool, "000000010000000000000002.error", "no space").unwrap();
        let ready = vec!["000000010000000000000002".to_string()];
        let noted = forget_finished(&spool, &ready);
        assert!(!spool.join("000000010000000000000001.ok").exists());
        assert_eq!(noted.len(), 1);
        let path = dir.path().join("000000010000000000000002");
        let waited = wait_for_helper(
            &spool,
            "000000010000000000000002",
            &path,
            Duration::from_secs(5),
            || true,
        );
        assert_eq!(waited, Waited::Failed("no space".into()));
        assert!(!spool.join("000000010000000000000002.error").exists());
        let waited = wait_for_helper(&spool, "x", &path, Duration::from_secs(5), || false);
        assert_eq!(waited, Waited::NoHelper);
    }
}
