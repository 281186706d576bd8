//! Pushing ahead: PostgreSQL calls archive_command once per segment,
//! serially, and waits for each. When it is called for one segment, the
//! segments PostgreSQL has already marked `.ready` after it are pushed too,
//! in parallel, and each success is noted in a spool directory as
//! `<file>.ok` holding the SHA-256 of the bytes stored. The later call for
//! such a file hashes the file it is given and, when the note matches,
//! returns at once without opening the repository.
//!
//! Correctness never depends on the spool: a note is written only after
//! its object is durable, it is trusted only for the very same bytes, and
//! without it (deleted, another host, a crash before it was written) the
//! call pushes as usual, which finds the object and compares it. The
//! `.ready` files are PostgreSQL's and are only read.

use super::archive::{self, Pushed};
use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use crate::format::wal::WalFile;
use crate::store::repo::Repository;
use std::path::{Path, PathBuf};

/// Where the notes live: a directory of ours inside pg_wal (excluded from
/// base backups with the rest of pg_wal; PostgreSQL ignores directories it
/// did not make there).
pub fn default_spool(wal_dir: &Path) -> PathBuf {
    wal_dir.join("bk-wal.spool")
}

/// The call for `name` can return at once: it was pushed ahead with these
/// very bytes.
pub fn pushed_before(spool: &Path, name: &str, bytes: &[u8]) -> bool {
    std::fs::read_to_string(spool.join(format!("{name}.ok")))
        .is_ok_and(|note| note.trim() == ObjectId::digest(bytes).to_hex())
}

/// Forgets the note of a file PostgreSQL has now seen archived.
pub fn forget(spool: &Path, name: &str) {
    let _ = std::fs::remove_file(spool.join(format!("{name}.ok")));
}

/// Segments marked `.ready` after `name` in `wal_dir`, oldest first, at
/// most `limit`.
pub fn ready_after(wal_dir: &Path, name: &str, limit: usize) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(wal_dir.join("archive_status")) else {
        return Vec::new();
    };
    let mut ready: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
            let is_segment = matches!(WalFile::parse(&n, 16 << 20), Some(WalFile::Segment { .. }));
            (is_segment && n.as_str() > name).then_some(n)
        })
        .collect();
    ready.sort();
    ready.truncate(limit);
    ready
}

/// Pushes `names` from `wal_dir` on `threads` threads and notes each
/// success in `spool`. Failures are left for PostgreSQL's own call, which
/// reports them; a file that vanished was archived and removed meanwhile.
pub fn push_ahead(
    repo: &Repository,
    stanza: &str,
    wal_dir: &Path,
    spool: &Path,
    names: &[String],
    threads: usize,
) -> Result<usize> {
    if names.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(spool).map_err(|e| Error::io(spool, e))?;
    let results = crate::sys::parallel_map(names, threads.max(1), |name| {
        let path = wal_dir.join(name);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(false);
        };
        if pushed_before(spool, name, &bytes) {
            return Ok(false);
        }
        match archive::push(repo, stanza, name, &bytes) {
            Ok(Pushed::Stored { .. } | Pushed::AlreadyArchived) => {
                note(spool, name, &bytes)?;
                Ok(true)
            }
            Err(e) => {
                log::warn!("pushing {name} ahead: {e}; it is pushed when PostgreSQL asks");
                Ok(false)
            }
        }
    })?;
    Ok(results.into_iter().filter(|&done| done).count())
}

/// Writes the note through a temporary name, so a reader never sees half
/// a digest.
fn note(spool: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = spool.join(format!(".{name}.ok.{}", std::process::id()));
    let path = spool.join(format!("{name}.ok"));
    std::fs::write(&tmp, ObjectId::digest(bytes).to_hex())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_trusted_only_for_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let spool = default_spool(dir.path());
        std::fs::create_dir_all(&spool).unwrap();
        note(&spool, "000000010000000000000003", b"segment").unwrap();
        assert!(pushed_before(
            &spool,
            "000000010000000000000003",
            b"segment"
        ));
        assert!(!pushed_before(&spool, "000000010000000000000003", b"other"));
        assert!(!pushed_before(
            &spool,
            "000000010000000000000004",
            b"segment"
        ));
        forget(&spool, "000000010000000000000003");
        assert!(!pushed_before(
            &spool,
            "000000010000000000000003",
            b"segment"
        ));
    }

    #[test]
    fn only_later_ready_segments_are_taken_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("archive_status");
        std::fs::create_dir_all(&status).unwrap();
        for n in [
            "000000010000000000000002.ready",
            "000000010000000000000005.ready",
            "000000010000000000000004.ready",
            "000000010000000000000006.done",
            "00000002.history.ready",
            "000000010000000000000007.ready",
        ] {
            std::fs::write(status.join(n), b"").unwrap();
        }
        assert_eq!(
            ready_after(dir.path(), "000000010000000000000003", 2),
            vec!["000000010000000000000004", "000000010000000000000005"]
        );
    }
}
