//! What the push helper and the prefetcher share: both are detached
//! processes that PostgreSQL never waits for, one per spool under an flock,
//! working only while PostgreSQL keeps calling (each call touches
//! `helper.asked`), and talking to the calls through files that appear
//! whole (a temporary name, then rename).

use crate::error::{Error, Result};
use std::path::Path;
use std::time::Duration;

const LOCK: &str = "helper.lock";
const ASKED: &str = "helper.asked";

/// A helper holds the spool's lock.
pub fn running(spool: &Path) -> bool {
    let Ok(file) = std::fs::File::open(spool.join(LOCK)) else {
        return false;
    };
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
}

/// The spool's lock, retried briefly (a call that checks whether a helper
/// runs holds it for an instant); `None` when another helper has it.
pub fn take_lock(spool: &Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let path = spool.join(LOCK);
    for _ in 0..10 {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    Ok(None)
}

/// Tells the helper a call came, and what it asked for.
pub fn ask(spool: &Path, what: &str) {
    let _ = std::fs::create_dir_all(spool);
    let _ = write_whole(spool, ASKED, what.as_bytes());
}

/// What the last call asked for, if it came within `idle`.
pub fn asked_within(spool: &Path, idle: Duration) -> Option<String> {
    let path = spool.join(ASKED);
    let fresh = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().map_or(true, |age| age <= idle));
    fresh.then(|| std::fs::read_to_string(&path).unwrap_or_default())
}

/// Writes `file` in `spool` through a temporary name, so a reader never
/// sees half of it.
pub fn write_whole(spool: &Path, file: &str, bytes: &[u8]) -> Result<()> {
    let tmp = spool.join(format!(".{file}.{}", std::process::id()));
    let path = spool.join(file);
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(&path, e)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_helper_per_spool_and_asking_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!running(dir.path()));
        let lock = take_lock(dir.path()).unwrap().unwrap();
        assert!(running(dir.path()));
        assert!(take_lock(dir.path()).unwrap().is_none());
        drop(lock);
        assert!(!running(dir.path()));
        assert_eq!(asked_within(dir.path(), Duration::from_secs(5)), None);
        ask(dir.path(), "000000010000000000000003");
        assert_eq!(
            asked_within(dir.path(), Duration::from_secs(5)).as_deref(),
            Some("000000010000000000000003")
        );
    }
}
