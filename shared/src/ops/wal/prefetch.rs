//! Prefetching during recovery: PostgreSQL asks restore_command for one
//! segment at a time and replays it before asking for the next, so each
//! fetch's round trips add up. After a fetch, a background `bk-wal
//! prefetch` (one at a time, under a lock) fetches the next segments of
//! the same timeline into a private spool, and the calls for them take
//! the file from there.
//!
//! The spool is this user's own directory (mode 0700, checked), outside
//! the data directory, keyed by stanza and cluster; a file appears in it
//! under its name only once it was fetched whole, authenticated and
//! checked (a temporary name, then rename). Without it — full, removed,
//! not ours — fetch reads the repository as always. A file not in the
//! spool is never taken for "does not exist": only the repository answers
//! that.

use super::archive;
use crate::error::{Error, Result};
use crate::format::wal::{StanzaRecord, WalFile};
use crate::store::repo::Repository;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The spool for `stanza` of the repository at `location`, under `base`
/// (default: the system's temporary directory), created 0700; `None` when
/// it exists but is not this user's alone. Keyed by the repository's
/// address, so a call can take its file before opening the repository.
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

/// Takes `name` from the spool: its bytes, and the file is gone from it.
pub fn take(spool: &Path, name: &str) -> Option<Vec<u8>> {
    let path = spool.join(name);
    let bytes = std::fs::read(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    Some(bytes)
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

/// Fetches the segments after `name` into `spool` (those not there yet),
/// on `threads` threads, under the spool's lock (another prefetcher
/// running: nothing to do). Stops at the end of the archive. Removes
/// spooled segments of this timeline older than `name`, which recovery
/// has passed. Returns how many it fetched.
pub fn prefetch(
    repo: &Repository,
    stanza: &StanzaRecord,
    spool: &Path,
    name: &str,
    count: usize,
    threads: usize,
) -> Result<usize> {
    let lock_path = spool.join(".lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(&lock_path, e))?;
    let Ok(_lock) = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    else {
        return Ok(0); // another prefetcher is at work
    };
    remove_passed(spool, name, stanza.segment_size);
    let wanted: Vec<String> = following(name, stanza.segment_size, count)
        .into_iter()
        .filter(|n| !spool.join(n).exists())
        .collect();
    let fetched = crate::sys::parallel_map(&wanted, threads.max(1), |n| {
        match archive::fetch(repo, &stanza.stanza, n)? {
            Some(bytes) => {
                let tmp = spool.join(format!(".{n}.{}", std::process::id()));
                std::fs::write(&tmp, &bytes)
                    .and_then(|_| std::fs::rename(&tmp, spool.join(n)))
                    .map_err(|e| Error::io(&tmp, e))?;
                Ok(true)
            }
            None => Ok(false), // past the end of the archive
        }
    })?;
    Ok(fetched.into_iter().filter(|&f| f).count())
}

/// Spooled segments of `name`'s timeline that sort before it.
fn remove_passed(spool: &Path, name: &str, segment_size: u32) {
    let Some(WalFile::Segment { timeline, .. }) = WalFile::parse(name, segment_size) else {
        return;
    };
    let Ok(rd) = std::fs::read_dir(spool) else {
        return;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let n = e.file_name().to_string_lossy().to_string();
        let same_timeline = matches!(
            WalFile::parse(&n, segment_size),
            Some(WalFile::Segment { timeline: t, .. }) if t == timeline
        );
        if same_timeline && n.as_str() < name {
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
        assert_eq!(take(&dir, "000000010000000000000003").unwrap(), b"wal");
        assert!(take(&dir, "000000010000000000000003").is_none());
        std::fs::write(dir.join("000000010000000000000002"), b"old").unwrap();
        std::fs::write(dir.join("000000020000000000000001"), b"other").unwrap();
        remove_passed(&dir, "000000010000000000000004", 16 << 20);
        assert!(!dir.join("000000010000000000000002").exists());
        assert!(dir.join("000000020000000000000001").exists());
    }
}
