//! `--against DIR`: a snapshot compared with a live directory.

use super::*;

impl Verifier<'_> {
    /// Compares a snapshot with a directory. Returns (entries, bytes) compared.
    pub(super) fn against(
        &self,
        dir: &Path,
        sid: &ObjectId,
        snap: &Snapshot,
        reader: &ChunkReader,
        rules: &crate::ops::exclude::ExcludeOptions,
    ) -> Result<(u64, u64)> {
        let cmp = Against {
            report: &self.report,
            sid: *sid,
            chunker: self.repo.chunker(),
            reader,
            comparable: AtomicU8::new(UNKNOWN),
            bytes: AtomicU64::new(0),
        };
        let mut expected: HashMap<Vec<u8>, Entry> = HashMap::new();
        for e in crate::store::listing::entries(crate::store::listing::ListingRecords::new(
            self.repo,
            reader.index(),
            &snap.listing,
        )) {
            match e {
                Ok(e) => {
                    expected.insert(e.path_bytes()?, e);
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    self.report.push(
                        Severity::Error,
                        "against",
                        format!("snapshots/{sid}"),
                        format!("the listing cannot be read, so nothing was compared: {e}"),
                        Vec::new(),
                        vec![*sid],
                        Vec::new(),
                    );
                    return Ok((0, 0));
                }
            }
        }
        let root_md = std::fs::symlink_metadata(dir).map_err(|e| Error::io(dir, e))?;
        // A snapshot of one file or of stdin has no directory entry: the
        // directory it was restored into is only its container, not an
        // extra (regression: reported as an extra ".").
        let container_only = !expected.contains_key(b".".as_slice());
        let single: Option<Vec<u8>> = (!root_md.is_dir()).then(|| {
            dir.file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_else(|| b"file".to_vec())
        });
        let rules = if rules.is_empty() {
            None
        } else {
            Some(crate::ops::exclude::ExcludeRules::new(
                rules,
                &crate::ops::source::source_path(dir)?,
            )?)
        };
        // Paths the rules leave out, on both sides: what lies below them in
        // the snapshot is not reported missing.
        let mut left_out: Vec<Vec<u8>> = Vec::new();
        let mut compared = 0u64;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        std::thread::scope(|s| -> Result<()> {
            let (tx, rx) = crossbeam_channel::bounded::<(PathBuf, Entry)>(threads * 4);
            let mut workers = Vec::new();
            for _ in 0..threads {
                let rx = rx.clone();
                let cmp = &cmp;
                workers.push(s.spawn(move || -> Result<()> {
                    for (full, e) in rx {
                        cmp.content(&full, &e)?;
                    }
                    Ok(())
                }));
            }
            drop(rx);
            let walked = (|| -> Result<()> {
                let mut walker = walkdir::WalkDir::new(dir)
                    .follow_links(false)
                    .sort_by(|a, b| a.file_name().cmp(b.file_name()))
                    .into_iter();
                while let Some(item) = walker.next() {
                    crate::sys::check_interrupted()?;
                    let item = match item {
                        Ok(i) => i,
                        Err(err) => {
                            let p = err
                                .path()
                                .map(|p| p.strip_prefix(dir).unwrap_or(p).display().to_string())
                                .unwrap_or_default();
                            cmp.diff(&p, format!("cannot be read in {}: {err}", dir.display()));
                            continue;
                        }
                    };
                    if item.depth() == 0 && single.is_none() && container_only {
                        continue;
                    }
                    let rel: Vec<u8> = match &single {
                        Some(n) => n.clone(),
                        None => crate::ops::source::listing_path(dir, item.path()),
                    };
                    let shown = String::from_utf8_lossy(&rel).into_owned();
                    let md = match item.metadata() {
                        Ok(m) => m,
                        Err(err) => {
                            cmp.diff(
                                &shown,
                                format!("cannot be read in {}: {err}", dir.display()),
                            );
                            continue;
                        }
                    };
                    if let (Some(r), None) = (&rules, &single) {
                        use crate::ops::exclude::Verdict;
                        match r.verdict(&rel, item.path(), &md) {
                            Verdict::Take => {}
                            Verdict::Exclude => {
                                expected.remove(&rel);
                                if md.is_dir() {
                                    walker.skip_current_dir();
                                    left_out.push(rel);
                                }
                                continue;
                            }
                            Verdict::DirOnly => {
                                walker.skip_current_dir();
                                left_out.push(rel.clone());
                            }
                        }
                    }
                    compared += 1;
                    let Some(want) = expected.remove(&rel) else {
                        cmp.diff(
                            &shown,
                            format!(
                                "extra: a {} in {} that the snapshot does not have",
                                kind_name(&md),
                                dir.display()
                            ),
                        );
                        continue;
                    };
                    if let Some(content) = cmp.metadata(item.path(), &shown, &md, &want) {
                        if tx.send((item.path().to_path_buf(), content)).is_err() {
                            break;
                        }
                    }
                }
                Ok(())
            })();
            drop(tx);
            let mut worker_result = Ok(());
            for w in workers {
                match w.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => worker_result = Err(e),
                    Err(_) => {
                        worker_result = Err(Error::internal(
                            "comparing with --against",
                            "a comparison thread panicked",
                        ))
                    }
                }
            }
            walked?;
            worker_result
        })?;
        let mut missing: Vec<Entry> = expected
            .into_iter()
            .filter(|(p, _)| {
                !left_out
                    .iter()
                    .any(|d| p.len() > d.len() && p.starts_with(d) && p[d.len()] == b'/')
            })
            .map(|(_, e)| e)
            .collect();
        missing.sort_by(|a, b| a.path.cmp(&b.path));
        for e in missing {
            compared += 1;
            cmp.diff(
                &e.path,
                format!(
                    "missing: the snapshot has a {} that {} does not",
                    kind_label(e.kind),
                    dir.display()
                ),
            );
        }
        Ok((compared, cmp.bytes.into_inner()))
    }
}

pub(super) const UNKNOWN: u8 = 0;
pub(super) const COMPARABLE: u8 = 1;
pub(super) const NOT_COMPARABLE: u8 = 2;

pub(super) struct Against<'a> {
    pub(super) report: &'a Report,
    pub(super) sid: ObjectId,
    pub(super) chunker: Chunker,
    pub(super) reader: &'a ChunkReader<'a>,
    /// Whether the snapshot was chunked like this repository's chunker does.
    pub(super) comparable: AtomicU8,
    pub(super) bytes: AtomicU64,
}

pub(super) fn kind_label(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "directory",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
        Kind::CharDevice => "character device",
        Kind::BlockDevice => "block device",
    }
}

pub(super) fn kind_name(md: &std::fs::Metadata) -> &'static str {
    kind_label(crate::ops::source::entry_from_metadata(b"x", md).kind)
}

/// Why comparing a file's content stopped.
pub(super) enum Stop {
    Io(std::io::Error),
    Mismatch,
    Fatal(Error),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Io(e)
    }
}

impl Against<'_> {
    pub(super) fn diff(&self, path: &str, message: String) {
        self.report.push(
            Severity::Error,
            "against",
            path.to_string(),
            message,
            Vec::new(),
            vec![self.sid],
            vec![path.to_string()],
        );
    }

    /// Compares metadata; returns the entry when the file's content must
    /// be compared too.
    /// Extended attributes (ACLs, capabilities) differ by name or value.
    fn xattrs(&self, full: &Path, path: &str, want: &Entry) {
        let have = match crate::sys::read_xattrs(full) {
            Ok(attrs) => crate::format::wire::xattr_map(attrs),
            Err(e) => {
                self.diff(path, format!("extended attributes cannot be read: {e}"));
                return;
            }
        };
        if have != want.xattrs {
            let names = |m: &std::collections::BTreeMap<String, String>| {
                m.keys().cloned().collect::<Vec<_>>().join(",")
            };
            let changed: Vec<&str> = want
                .xattrs
                .iter()
                .filter(|(k, v)| have.get(*k).is_some_and(|h| h != *v))
                .map(|(k, _)| k.as_str())
                .collect();
            self.diff(
                path,
                format!(
                    "extended attributes: snapshot [{}], directory [{}]{}",
                    names(&want.xattrs),
                    names(&have),
                    if changed.is_empty() {
                        String::new()
                    } else {
                        format!("; values differ: {}", changed.join(","))
                    }
                ),
            );
        }
    }

    pub(super) fn metadata(
        &self,
        full: &Path,
        path: &str,
        md: &std::fs::Metadata,
        want: &Entry,
    ) -> Option<Entry> {
        let have = crate::ops::source::entry_from_metadata(b"x", md);
        if have.kind != want.kind {
            self.diff(
                path,
                format!(
                    "type: the snapshot has a {}, the directory a {}",
                    kind_label(want.kind),
                    kind_label(have.kind)
                ),
            );
            return None;
        }
        if have.mode != want.mode && want.kind != Kind::Symlink {
            self.diff(
                path,
                format!(
                    "mode: snapshot {:04o}, directory {:04o}",
                    want.mode, have.mode
                ),
            );
        }
        if have.mtime != want.mtime {
            self.diff(
                path,
                format!("mtime: snapshot {}, directory {}", want.mtime, have.mtime),
            );
        }
        self.xattrs(full, path, want);
        match want.kind {
            Kind::Symlink => {
                let target = std::fs::read_link(full).map(|t| t.as_os_str().as_bytes().to_vec());
                match (target, want.target_bytes()) {
                    (Ok(t), Ok(Some(w))) if t == w => {}
                    (Ok(t), Ok(w)) => self.diff(
                        path,
                        format!(
                            "symlink target: snapshot {:?}, directory {:?}",
                            String::from_utf8_lossy(&w.unwrap_or_default()),
                            String::from_utf8_lossy(&t)
                        ),
                    ),
                    (Err(e), _) => self.diff(path, format!("symlink cannot be read: {e}")),
                    (_, Err(e)) => self.diff(path, format!("snapshot entry has a bad target: {e}")),
                }
                None
            }
            Kind::CharDevice | Kind::BlockDevice => {
                if have.rdev != want.rdev {
                    self.diff(
                        path,
                        format!(
                            "device number: snapshot {:?}, directory {:?}",
                            want.rdev, have.rdev
                        ),
                    );
                }
                None
            }
            Kind::File => {
                if have.size != want.size {
                    self.diff(
                        path,
                        format!(
                            "size: snapshot {} bytes, directory {} bytes",
                            want.size, have.size
                        ),
                    );
                    None
                } else {
                    Some(want.clone())
                }
            }
            _ => None,
        }
    }

    /// Compares a file's content with the snapshot's chunks: by chunk id
    /// when the chunking is comparable, else by the blobs' bytes.
    pub(super) fn content(&self, full: &Path, want: &Entry) -> Result<()> {
        crate::sys::check_interrupted()?;
        let file = match std::fs::File::open(full) {
            Ok(f) => f,
            Err(e) => {
                self.diff(&want.path, format!("cannot be read: {e}"));
                return Ok(());
            }
        };
        if self.comparable.load(Ordering::Relaxed) != NOT_COMPARABLE {
            let mut i = 0usize;
            let mut offset = 0u64;
            let mut matched_cut = false;
            let r =
                self.chunker
                    .chunk_reader(&file, |chunk: &[u8]| -> std::result::Result<(), Stop> {
                        crate::sys::check_interrupted().map_err(Stop::Fatal)?;
                        if want.chunks.get(i) != Some(&ChunkId::digest(chunk)) {
                            return Err(Stop::Mismatch);
                        }
                        if i + 1 < want.chunks.len() {
                            matched_cut = true; // a cut both chunkers made before the end
                        }
                        i += 1;
                        offset += chunk.len() as u64;
                        Ok(())
                    });
            if matched_cut {
                self.comparable.store(COMPARABLE, Ordering::Relaxed);
            }
            match r {
                Ok(n) if i == want.chunks.len() => {
                    self.bytes.fetch_add(n, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(_) | Err(Stop::Mismatch) => {
                    if self.comparable.load(Ordering::Relaxed) == COMPARABLE {
                        self.bytes.fetch_add(offset, Ordering::Relaxed);
                        self.diff(
                            &want.path,
                            format!("content differs from the snapshot's (from byte {offset})"),
                        );
                        return Ok(());
                    }
                    // Maybe chunked differently (e.g. without the
                    // repository's key): compare the bytes from here.
                    return self.compare_bytes(&file, want, i, offset, true);
                }
                Err(Stop::Io(e)) => {
                    self.diff(&want.path, format!("cannot be read: {e}"));
                    return Ok(());
                }
                Err(Stop::Fatal(e)) => return Err(e),
            }
        }
        self.compare_bytes(&file, want, 0, 0, false)
    }

    /// Compares the file from `offset` with the snapshot's chunks from
    /// `first` on, reading the blobs. `id_mismatch`: chunk `first` had
    /// another id than the repository's chunker gave the same place.
    pub(super) fn compare_bytes(
        &self,
        file: &std::fs::File,
        want: &Entry,
        first: usize,
        mut offset: u64,
        id_mismatch: bool,
    ) -> Result<()> {
        let mut buf = Vec::new();
        for (n, id) in want.chunks.iter().enumerate().skip(first) {
            crate::sys::check_interrupted()?;
            let data = match self.reader.read(id) {
                Ok(d) => d,
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(e) => {
                    self.diff(
                        &want.path,
                        format!("content cannot be compared from byte {offset}: the snapshot's data is unreadable: {e}"),
                    );
                    return Ok(());
                }
            };
            buf.resize(data.len(), 0);
            let got = crate::sys::read_at_most(file, &mut buf, offset)
                .map_err(|e| Error::io(&want.path, e))?;
            if got != data.len() || buf[..got] != data[..] {
                let at = offset
                    + buf[..got]
                        .iter()
                        .zip(&data)
                        .position(|(a, b)| a != b)
                        .unwrap_or(got.min(data.len())) as u64;
                self.bytes.fetch_add(at, Ordering::Relaxed);
                self.diff(
                    &want.path,
                    format!("content differs from the snapshot's (from byte {at})"),
                );
                return Ok(());
            }
            if n == first && id_mismatch {
                // The snapshot's chunk holds the file's bytes, yet the
                // repository's chunker cut elsewhere: the snapshot was
                // chunked differently (e.g. without the repository's key).
                // Compare bytes from now on.
                let _ = self.comparable.compare_exchange(
                    UNKNOWN,
                    NOT_COMPARABLE,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            offset += data.len() as u64;
        }
        // The file must not be longer than the snapshot's content.
        let mut one = [0u8; 1];
        if crate::sys::read_at_most(file, &mut one, offset).map_err(|e| Error::io(&want.path, e))?
            > 0
        {
            self.diff(
                &want.path,
                format!("content differs: the file is longer than the snapshot's {offset} bytes"),
            );
            return Ok(());
        }
        self.bytes.fetch_add(offset, Ordering::Relaxed);
        Ok(())
    }
}
