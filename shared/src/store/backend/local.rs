//! A repository in a local (or network-mounted) directory.

use super::{Backend, ObjectInfo, ObjectKind, Staged};
use crate::error::{Error, Result};
use rand::RngCore;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Pack files kept open for ranged reads. A restore reads a pack's blobs
/// one at a time, and opening the pack for each (a path walk, open, seek,
/// close: four syscalls per blob, 53k of them for a 1.3 GB tree) cost more
/// than the read itself. Packs are write-once under content-derived
/// names, so an open handle reads exactly what its name stands for.
const OPEN_PACKS: usize = 16;

#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    /// Most recently used last; see [`OPEN_PACKS`].
    open_packs: Mutex<VecDeque<(String, Arc<File>)>>,
    /// The modes new files and directories get ([`LocalBackend::modes`]).
    modes: std::sync::OnceLock<(u32, u32)>,
}

impl LocalBackend {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalBackend {
            root: root.into(),
            open_packs: Mutex::new(VecDeque::with_capacity(OPEN_PACKS)),
            modes: std::sync::OnceLock::new(),
        }
    }

    /// (file mode, directory mode) for what this process creates: private
    /// (0600 and 0700) unless the owner shared the repository by making its
    /// `config` group- or world-readable (as restic does), when new files
    /// are readable and new directories usable by the same class of
    /// users — a PostgreSQL server's user archiving into root's repository
    /// must read the objects root wrote.
    fn modes(&self) -> (u32, u32) {
        *self.modes.get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let shared = fs::metadata(self.root.join("config"))
                .map(|m| m.permissions().mode())
                .unwrap_or(0o600);
            let (mut file, mut dir) = (0o600, 0o700);
            if shared & 0o040 != 0 {
                (file, dir) = (file | 0o040, dir | 0o070);
            }
            if shared & 0o004 != 0 {
                (file, dir) = (file | 0o004, dir | 0o007);
            }
            (file, dir)
        })
    }

    fn make_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(self.modes().1)
            .create(dir)
    }

    fn open_packs(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Arc<File>)>> {
        self.open_packs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A handle for positional reads: packs from [`OPEN_PACKS`], anything
    /// else opened afresh.
    fn open_for_reads(&self, kind: ObjectKind, name: &str) -> std::io::Result<Arc<File>> {
        if kind != ObjectKind::Pack {
            return File::open(self.path(kind, name)).map(Arc::new);
        }
        let cached = |open: &mut VecDeque<(String, Arc<File>)>| {
            let i = open.iter().position(|(n, _)| n == name)?;
            let entry = open.remove(i)?;
            let file = Arc::clone(&entry.1);
            open.push_back(entry);
            Some(file)
        };
        if let Some(file) = cached(&mut self.open_packs()) {
            return Ok(file);
        }
        let file = Arc::new(File::open(self.path(kind, name))?);
        let mut open = self.open_packs();
        if let Some(other) = cached(&mut open) {
            return Ok(other); // another reader opened it meanwhile
        }
        if open.len() >= OPEN_PACKS {
            open.pop_front();
        }
        open.push_back((name.to_owned(), Arc::clone(&file)));
        Ok(file)
    }

    fn path(&self, kind: ObjectKind, name: &str) -> PathBuf {
        self.root.join(kind.path(name))
    }

    fn err(&self, kind: ObjectKind, name: &str, e: std::io::Error) -> Error {
        Error::storage(format!("{} ({})", kind.path(name), self.root.display()), e)
    }

    /// A fresh name under tmp/, where writes are assembled; what a killed
    /// writer leaves there is listed by [`Backend::incomplete`].
    fn tmp_path(&self, stem: &str) -> PathBuf {
        let mut rnd = [0u8; 8];
        rand::thread_rng().fill_bytes(&mut rnd);
        self.root
            .join("tmp")
            .join(format!("{}.{}.tmp", stem, hex::encode(rnd)))
    }

    /// Publishes a complete, synced temp file under its final name and
    /// removes the temp name.
    fn publish(&self, kind: ObjectKind, name: &str, tmp: &Path) -> Result<()> {
        let final_path = self.path(kind, name);
        // link(2) publishes atomically and refuses to replace an existing
        // object: write-once is enforced by the filesystem, not by care.
        if kind.may_be_absent() {
            // Repositories made before gc/ or wal/ existed lack the directory.
            let dir = final_path.parent().unwrap_or(&self.root);
            if !dir.exists() {
                let _ = self.make_dir_all(dir);
            }
        }
        let linked = fs::hard_link(tmp, &final_path);
        let _ = fs::remove_file(tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if kind.claims_names() {
                    return Err(self.err(kind, name, e));
                }
            }
            Err(e) => return Err(self.err(kind, name, e)),
        }
        let dir = final_path.parent().unwrap_or(&self.root);
        sync_dir(dir).map_err(|e| self.err(kind, name, e))
    }
}

/// Write buffer of a staged object: sealed data blobs are mostly larger and
/// pass straight through; metadata blobs are small and gather here.
const STAGE_BUFFER: usize = 256 << 10;

/// An object written into tmp/ as it is produced, published by link(2)
/// like [`Backend::put`]; dropped unpublished, its temp file is removed.
#[derive(Debug)]
struct LocalStaged<'a> {
    backend: &'a LocalBackend,
    kind: ObjectKind,
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
}

impl LocalStaged<'_> {
    /// Names the temp file in a failed write's message.
    fn context(&self, e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), format!("{}: {e}", self.tmp.display()))
    }
}

impl Write for LocalStaged<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(std::io::Error::other("staged object already published")),
        };
        r.map_err(|e| self.context(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Staged for LocalStaged<'_> {
    fn publish(mut self: Box<Self>, name: &str) -> Result<()> {
        let (kind, file) = (self.kind, self.file.take());
        let sync = || -> std::io::Result<()> {
            let file = file
                .ok_or_else(|| std::io::Error::other("staged object already published"))?
                .into_inner()
                .map_err(|e| e.into_error())?;
            file.sync_all()
        };
        if let Err(e) = sync() {
            return Err(self.backend.err(kind, name, e));
        }
        self.backend.publish(kind, name, &self.tmp)
    }
}

impl Drop for LocalStaged<'_> {
    fn drop(&mut self) {
        // After publish the temp name is gone already; this only cleans up
        // after a write that failed or was abandoned.
        self.file = None;
        let _ = fs::remove_file(&self.tmp);
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        if self.root.join("config").exists() {
            return Err(Error::RepositoryExists {
                location: self.location(),
            });
        }
        if self.root.exists() && !self.root.is_dir() {
            return Err(Error::usage_hint(
                format!("{} exists and is not a directory", self.root.display()),
                "a local repository is a directory: give -r/--repo a new or empty directory's path",
            ));
        }
        if let Ok(mut rd) = fs::read_dir(&self.root) {
            if rd.next().is_some() {
                return Err(Error::Usage(format!(
                    "{} exists and is not empty; choose an empty or new directory",
                    self.root.display()
                )));
            }
        }
        // Private: object names and sizes say something about the data,
        // so other users of the machine get nothing to list.
        let mk = |p: PathBuf| self.make_dir_all(&p).map_err(|e| Error::io(p, e));
        mk(self.root.clone())?;
        for d in ["keys", "index", "snapshots", "locks", "gc", "wal", "tmp"] {
            mk(self.root.join(d))?;
        }
        for i in 0..256 {
            mk(self.root.join("data").join(format!("{i:02x}")))?;
        }
        sync_dir(&self.root).map_err(|e| Error::io(&self.root, e))
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        let tmp = self.tmp_path(name);
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.modes().0)
                .open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(self.err(kind, name, e));
        }
        self.publish(kind, name, &tmp)
    }

    fn stage(&self, kind: ObjectKind, _size_hint: usize) -> Result<Box<dyn Staged + '_>> {
        let tmp = self.tmp_path(kind.dir());
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.modes().0)
            .open(&tmp)
            .map_err(|e| Error::storage(tmp.display(), e))?;
        Ok(Box::new(LocalStaged {
            backend: self,
            kind,
            file: Some(BufWriter::with_capacity(STAGE_BUFFER, file)),
            tmp,
        }))
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        fs::read(self.path(kind, name)).map_err(|e| self.err(kind, name, e))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let read = || -> std::io::Result<Vec<u8>> {
            let mut buf = vec![0u8; len as usize];
            self.open_for_reads(kind, name)?
                .read_exact_at(&mut buf, offset)?;
            Ok(buf)
        };
        read().map_err(|e| self.err(kind, name, e))
    }

    fn get_range_upto(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>> {
        let read = || -> std::io::Result<Vec<u8>> {
            let f = self.open_for_reads(kind, name)?;
            let mut buf = vec![0u8; max_len as usize];
            let filled = crate::sys::read_at_most(&f, &mut buf, offset)?;
            buf.truncate(filled);
            Ok(buf)
        };
        read().map_err(|e| self.err(kind, name, e))
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let info = |entry: fs::DirEntry| -> std::io::Result<Option<ObjectInfo>> {
            let name = entry.file_name().to_string_lossy().into_owned();
            // An object deleted between readdir and stat (a writer
            // releasing its lock, a prune sweeping a pack) was not there
            // when the listing ended: leave it out, as a LIST from S3
            // would. Any other failure is still an error, never a gap.
            let md = match entry.metadata() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                md => md?,
            };
            if !md.is_file() || name.starts_with('.') {
                return Ok(None);
            }
            Ok(Some(ObjectInfo {
                name,
                size: md.len(),
                modified: md.modified().ok(),
            }))
        };
        let list_dir = |dir: PathBuf, out: &mut Vec<ObjectInfo>| -> Result<()> {
            let rd = fs::read_dir(&dir).map_err(|e| Error::storage(dir.display(), e))?;
            for entry in rd {
                let entry = entry.map_err(|e| Error::storage(dir.display(), e))?;
                if let Some(i) = info(entry).map_err(|e| Error::storage(dir.display(), e))? {
                    out.push(i);
                }
            }
            Ok(())
        };
        match kind {
            ObjectKind::Config => {
                if let Ok(md) = fs::metadata(self.root.join("config")) {
                    out.push(ObjectInfo {
                        name: "config".into(),
                        size: md.len(),
                        modified: md.modified().ok(),
                    });
                }
            }
            ObjectKind::Pack => {
                let data = self.root.join("data");
                let rd = fs::read_dir(&data).map_err(|e| Error::storage(data.display(), e))?;
                for sub in rd {
                    let sub = sub.map_err(|e| Error::storage(data.display(), e))?;
                    if sub.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        list_dir(sub.path(), &mut out)?;
                    }
                }
            }
            // Repositories made before gc/ or wal/ existed lack them.
            k if k.may_be_absent() && !self.root.join(k.dir()).exists() => {}
            k => list_dir(self.root.join(k.dir()), &mut out)?,
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn incomplete(&self) -> Result<Vec<ObjectInfo>> {
        let dir = self.root.join("tmp");
        let mut out = Vec::new();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::storage(dir.display(), e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| Error::storage(dir.display(), e))?;
            let Ok(md) = entry.metadata() else { continue };
            if md.is_file() {
                out.push(ObjectInfo {
                    name: entry.file_name().to_string_lossy().into_owned(),
                    size: md.len(),
                    modified: md.modified().ok(),
                });
            }
        }
        Ok(out)
    }

    fn remove_incomplete(&self, name: &str) -> Result<()> {
        if name.contains('/') || name.starts_with('.') {
            return Err(Error::Usage(format!("not a temp file name: {name:?}")));
        }
        let p = self.root.join("tmp").join(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::storage(p.display(), e)),
        }
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        if kind == ObjectKind::Pack {
            // Reads after a delete must find it gone, as on any backend.
            self.open_packs().retain(|(n, _)| n != name);
        }
        let p = self.path(kind, name);
        match fs::remove_file(&p) {
            Ok(()) => {
                sync_dir(p.parent().unwrap_or(&self.root)).map_err(|e| self.err(kind, name, e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err(kind, name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo"));
        b.create().unwrap();
        b.put(ObjectKind::Pack, "abcdef", b"pack").unwrap();
        b.put(ObjectKind::Pack, "abcdef", b"pack").unwrap();
        assert_eq!(b.get(ObjectKind::Pack, "abcdef").unwrap(), b"pack");
        assert_eq!(
            b.get_range(ObjectKind::Pack, "abcdef", 1, 2).unwrap(),
            b"ac"
        );
        let past_end = b.get_range(ObjectKind::Pack, "abcdef", 3, 2).unwrap_err();
        assert!(
            matches!(&past_end, Error::Storage { source, .. } if source.kind() == std::io::ErrorKind::UnexpectedEof),
            "{past_end:?}"
        );
        let l = b.list(ObjectKind::Pack).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].size, 4);
        assert!(dir.path().join("repo/data/ab/abcdef").exists());
        assert_eq!(
            b.get_range_upto(ObjectKind::Pack, "abcdef", 2, 10).unwrap(),
            b"ck"
        );
        b.delete(ObjectKind::Pack, "abcdef").unwrap();
        assert!(b.list(ObjectKind::Pack).unwrap().is_empty());
        assert!(b
            .get(ObjectKind::Pack, "abcdef")
            .unwrap_err()
            .is_not_found());
        // Ranged reads keep packs open; a deleted one is still gone.
        for read in [
            b.get_range(ObjectKind::Pack, "abcdef", 1, 2),
            b.get_range_upto(ObjectKind::Pack, "abcdef", 0, 4),
        ] {
            assert!(read.unwrap_err().is_not_found());
        }
        // tmp/ holds nothing after successful writes.
        assert_eq!(
            fs::read_dir(dir.path().join("repo/tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn ranged_reads_of_more_packs_than_stay_open_return_each_packs_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        let packs = OPEN_PACKS * 2 + 1;
        let name = |i: usize| format!("{i:02x}{i:062x}");
        for i in 0..packs {
            b.put(ObjectKind::Pack, &name(i), &[i as u8; 64]).unwrap();
        }
        for round in 0..3 {
            for i in (0..packs).rev().step_by(round + 1).chain(0..packs) {
                let got = b.get_range(ObjectKind::Pack, &name(i), 8, 4).unwrap();
                assert_eq!(got, [i as u8; 4], "pack {i}");
            }
        }
        assert_eq!(b.open_packs().len(), OPEN_PACKS);
    }

    /// CI failure at f989729: bk-prune listed `locks/` while a backup
    /// released its lock, and the lock's stat after readdir failed the
    /// whole prune with "storage error on repo/locks: No such file or
    /// directory".
    #[test]
    fn regression_listing_skips_objects_deleted_during_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        b.put(ObjectKind::Lock, "kept", b"lock").unwrap();
        let locks = dir.path().join("locks");
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Writers taking and releasing locks, as fast as they can.
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for i in 0..64 {
                        fs::write(locks.join(format!("churn{i}")), b"x").unwrap();
                    }
                    for i in 0..64 {
                        fs::remove_file(locks.join(format!("churn{i}"))).unwrap();
                    }
                }
            });
            let listed = (0..3000).try_for_each(|_| {
                let l = b.list(ObjectKind::Lock)?;
                assert!(l.iter().any(|o| o.name == "kept"), "{l:?}");
                Ok::<_, Error>(())
            });
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            listed.unwrap();
        });
    }

    #[test]
    fn config_is_write_once_and_create_refuses_existing() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path());
        b.create().unwrap();
        b.put(ObjectKind::Config, "config", b"one").unwrap();
        let again = b.put(ObjectKind::Config, "config", b"two").unwrap_err();
        assert!(
            matches!(&again, Error::Storage { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{again:?}"
        );
        assert_eq!(b.get(ObjectKind::Config, "config").unwrap(), b"one");
        assert!(matches!(b.create(), Err(Error::RepositoryExists { .. })));
    }
}
