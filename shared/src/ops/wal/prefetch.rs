//! Prefetching during recovery: PostgreSQL asks restore_command for one
//! segment at a time and replays it before asking for the next, so each
//! fetch's round trips and decompression add up. A prefetcher (`bk-wal
//! prefetch`, detached, one per spool under an flock) keeps the segments
//! after the one PostgreSQL last asked for fetched into a private spool on
//! several threads through one open repository, while the calls keep
//! coming; a call moves its file from there, or waits for the prefetcher
//! to bring it.
//!
//! The spool is this user's own directory (mode 0700, checked), outside
//! the data directory, keyed by stanza and repository; a file appears in
//! it under its name only once it was fetched whole, authenticated and
//! checked (a temporary name, then rename). Without it — full, removed,
//! not ours, the prefetcher failed or is gone — a call reads the
//! repository as always. The spool is never trusted for absence: when the
//! prefetcher finds no such file (`<name>.missing`), the call asks the
//! repository itself, and only its answer ends recovery.

use super::{archive, helper};
use crate::error::Result;
use crate::format::wal::{StanzaRecord, WalFile};
use crate::store::repo::Repository;
use std::collections::HashSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The spool for `stanza` of the repository at `location`, under `base`
/// (default: the system's temporary directory), created 0700; `None` when
/// it exists but is not this user's alone. Keyed by the repository's
/// address and the key's source (`location`), so a call can take its file
/// before opening the repository, and a call configured otherwise cannot.
pub fn spool_dir(base: Option<&Path>, stanza: &str, location: &str) -> Option<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let repo = crate::format::id::ObjectId::digest(location.as_bytes()).to_hex();
    let dir = base.join(format!("bk-wal-{stanza}-{}-{uid}", &repo[..16]));
    let _ = std::fs::create_dir(&dir);
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    let md = std::fs::symlink_metadata(&dir).ok()?;
    (md.is_dir() && md.uid() == uid && md.mode() & 0o077 == 0).then_some(dir)
}

/// Moves `name` from the spool to `dest`: renamed when both are on one
/// file system, else copied through a temporary name (the kernel copies;
/// nothing passes through this process). `false` when the spool does not
/// have it (or it cannot be moved: the repository is asked instead).
pub fn take(spool: &Path, name: &str, dest: &Path) -> bool {
    let path = spool.join(name);
    if std::fs::rename(&path, dest).is_ok() {
        return true;
    }
    let Ok(tmp) = archive::temporary_beside(dest) else {
        return false;
    };
    let copied = std::fs::copy(&path, &tmp).and_then(|_| std::fs::rename(&tmp, dest));
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return false;
    }
    let _ = std::fs::remove_file(&path);
    true
}

/// The segments after `name` on its timeline, `count` of them.
pub fn following(name: &str, segment_size: u32, count: usize) -> Vec<String> {
    match WalFile::parse(name, segment_size) {
        Some(WalFile::Segment { timeline, segno }) => (1..=count as u64)
            .map(|i| {
                WalFile::Segment {
                    timeline,
                    segno: segno + i,
                }
                .name(segment_size)
            })
            .collect(),
        _ => Vec::new(),
    }
}

const MISSING: &str = ".missing";
const FAILED: &str = ".error";
const GOT: &str = "got";
/// How often the prefetcher looks again when it has nothing to fetch, and
/// a waiting call for its file.
const POLL: Duration = Duration::from_millis(2);

/// What became of a segment a call waited for.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited {
    /// Moved into place.
    Taken,
    /// Not brought (not in the archive as far as the prefetcher saw, its
    /// error, no prefetcher, or too long): the call asks the repository.
    NotBrought,
}

/// Tells the prefetcher PostgreSQL now asks for `name`.
pub fn ask(spool: &Path, name: &str) {
    helper::ask(spool, name);
}

/// Tells the prefetcher the call for `name` has its file (from the spool,
/// or the repository): the window starts after it.
pub fn got(spool: &Path, name: &str) {
    helper::ask(spool, &format!("{name} {GOT}"));
}

/// A prefetcher holds the spool.
pub fn running(spool: &Path) -> bool {
    helper::running(spool)
}

/// Waits for the prefetcher to bring `name` and moves it to `dest`, while
/// `running` says it is at work, at most `limit`.
pub fn wait_for(
    spool: &Path,
    name: &str,
    dest: &Path,
    limit: Duration,
    mut running: impl FnMut() -> bool,
) -> Waited {
    let started = std::time::Instant::now();
    loop {
        if take(spool, name, dest) {
            return Waited::Taken;
        }
        let given_up = [MISSING, FAILED]
            .iter()
            .any(|m| spool.join(format!("{name}{m}")).exists());
        if given_up || started.elapsed() > limit || !running() {
            return Waited::NotBrought;
        }
        std::thread::sleep(POLL);
    }
}

/// The prefetcher: keeps the `count` segments after the one last asked for
/// (and that one) fetched into `spool` on `threads` threads, until no call
/// has come for `idle` or the process is told to stop. Returns `None` when
/// another prefetcher holds the spool.
pub fn run_prefetcher(
    repo: &Repository,
    stanza: &StanzaRecord,
    spool: &Path,
    count: usize,
    threads: usize,
    idle: Duration,
) -> Result<Option<usize>> {
    let Some(_lock) = helper::take_lock(spool)? else {
        return Ok(None);
    };
    let in_flight = Mutex::new(HashSet::new());
    let fetched = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                while let Some(name) = next_wanted(&in_flight, spool, stanza, count, idle) {
                    if fetch_one(repo, stanza, spool, &name) {
                        fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    lock(&in_flight).remove(&name);
                }
            });
        }
    });
    Ok(Some(fetched.into_inner()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first segment of the window after the last asked one that is not
/// spooled, given up on or being fetched; `None` once calls stopped.
fn next_wanted(
    in_flight: &Mutex<HashSet<String>>,
    spool: &Path,
    stanza: &StanzaRecord,
    count: usize,
    idle: Duration,
) -> Option<String> {
    loop {
        if crate::sys::check_interrupted().is_err() {
            return None;
        }
        let asked = helper::asked_within(spool, idle)?;
        let mut words = asked.split_whitespace();
        let asked = words.next().unwrap_or_default().to_string();
        let got = words.next() == Some(GOT);
        let mut flight = lock(in_flight);
        let window = std::iter::once(asked.clone())
            .filter(|_| !got)
            .chain(following(&asked, stanza.segment_size, count))
            .filter(|n| {
                matches!(
                    WalFile::parse(n, stanza.segment_size),
                    Some(WalFile::Segment { .. })
                )
            });
        for name in window {
            let done = ["", MISSING, FAILED]
                .iter()
                .any(|m| spool.join(format!("{name}{m}")).exists());
            if !done && !flight.contains(&name) {
                flight.insert(name.clone());
                return Some(name);
            }
        }
        drop(flight);
        remove_passed(spool, &asked, stanza.segment_size);
        std::thread::sleep(POLL);
    }
}

/// Fetches one segment into the spool, or leaves a note why not.
fn fetch_one(repo: &Repository, stanza: &StanzaRecord, spool: &Path, name: &str) -> bool {
    match archive::fetch(repo, &stanza.stanza, name) {
        Ok(Some(bytes)) => helper::write_whole(spool, name, &bytes).is_ok(),
        Ok(None) => {
            let _ = helper::write_whole(spool, &format!("{name}{MISSING}"), b"");
            false
        }
        Err(e) => {
            log::warn!("prefetching {name}: {e}");
            let _ =
                helper::write_whole(spool, &format!("{name}{FAILED}"), e.to_string().as_bytes());
            false
        }
    }
}

/// Removes what the spool holds for segments of `name`'s timeline that
/// sort before it (recovery has passed them), and every `.missing` note
/// (the archive may have grown since).
fn remove_passed(spool: &Path, name: &str, segment_size: u32) {
    let Some(WalFile::Segment { timeline, .. }) = WalFile::parse(name, segment_size) else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(spool) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let file = e.file_name().to_string_lossy().to_string();
        let base = file
            .strip_suffix(MISSING)
            .or_else(|| file.strip_suffix(FAILED))
            .unwrap_or(&file);
        let same_timeline = matches!(
            WalFile::parse(base, segment_size),
            Some(WalFile::Segment { timeline: t, .. }) if t == timeline
        );
        if same_timeline && base < name {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_segments_cross_a_log_boundary() {
        let seg = 16 << 20;
        assert_eq!(
            following("0000000100000000000000FE", seg, 3),
            vec![
                "0000000100000000000000FF",
                "000000010000000100000000",
                "000000010000000100000001"
            ]
        );
        assert!(following("00000002.history", seg, 3).is_empty());
    }

    #[test]
    fn the_spool_is_private_and_taking_a_file_removes_it() {
        let base = tempfile::tempdir().unwrap();
        let dir = spool_dir(Some(base.path()), "main", "/repo").unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::write(dir.join("000000010000000000000003"), b"wal").unwrap();
        let dest = base.path().join("RECOVERYXLOG");
        assert!(take(&dir, "000000010000000000000003", &dest));
        assert_eq!(std::fs::read(&dest).unwrap(), b"wal");
        assert!(!take(&dir, "000000010000000000000003", &dest));
        std::fs::write(dir.join("000000010000000000000002"), b"old").unwrap();
        std::fs::write(dir.join("000000020000000000000001"), b"other").unwrap();
        remove_passed(&dir, "000000010000000000000004", 16 << 20);
        assert!(!dir.join("000000010000000000000002").exists());
        assert!(dir.join("000000020000000000000001").exists());
    }
}
