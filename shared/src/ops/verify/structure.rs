//! The structure checks: config, key files, index objects and snapshot
//! objects each authenticate and carry their names.

use super::*;

impl Verifier<'_> {
    pub(super) fn check_config(&self) {
        let c = self.repo.config();
        if let Err(e) = c.chunker.validate() {
            self.report.add(Severity::Error, "config", "config", e);
        }
        if c.cipher != "aes-256-gcm" {
            self.report.add(
                Severity::Error,
                "config",
                "config",
                format!("unknown cipher {:?}", c.cipher),
            );
        }
    }

    /// Every key file parses and its MAC matches (the config was
    /// authenticated when the repository was opened).
    pub(super) fn check_keys(&self, listed: &[ObjectInfo]) -> Result<u64> {
        let results = parallel_map(listed, self.meta_threads, |o| {
            Ok((
                o.name.clone(),
                self.repo.backend().get(ObjectKind::Key, &o.name),
            ))
        })?;
        for (name, raw) in results {
            let object = format!("keys/{name}");
            let raw = match raw {
                Ok(r) => r,
                Err(e) if e.is_not_found() => continue, // removed since the listing
                Err(e) => {
                    self.report.failure("key", &object, &e);
                    continue;
                }
            };
            match authenticate_key_file(self.repo.keys(), &name, &raw) {
                Ok(KeyAuth::Authentic) => {}
                Ok(KeyAuth::Unsigned) => self.report.add(
                    Severity::Warning,
                    "key",
                    object,
                    "the key file has no MAC (written before bk signed key files), so it \
                     cannot be authenticated; add a new key and remove this one to fix",
                ),
                Err(m) => self.report.add(Severity::Error, "key", object, m),
            }
        }
        Ok(listed.len() as u64)
    }

    /// The listed names that are object ids; others are reported (info)
    /// and skipped, as every reader skips them.
    pub(super) fn object_names<'l>(
        &self,
        listed: &'l [ObjectInfo],
        check: &str,
        kind: ObjectKind,
    ) -> Vec<&'l str> {
        listed
            .iter()
            .map(|o| o.name.as_str())
            .filter(|n| {
                let ok = is_object_name(n);
                if !ok {
                    self.report.add(
                        Severity::Info,
                        check,
                        kind.path(n),
                        "not a bk object name; ignored by bk",
                    );
                }
                ok
            })
            .collect()
    }

    /// Loads and authenticates every index object; names that are not ids
    /// are reported and skipped (readers ignore them too).
    pub(super) fn load_index_objects(&self, listed: &[ObjectInfo]) -> Result<IndexObjects> {
        let names = self.object_names(listed, "index", ObjectKind::Index);
        let loaded = parallel_map(&names, self.meta_threads, |name| {
            crate::sys::check_interrupted()?;
            let id = ObjectId::from_hex(name).expect("object_names keeps ids");
            Ok((name.to_string(), self.repo.read_index_object(&id)))
        })?;
        let mut good = Vec::new();
        for (name, r) in loaded {
            match r {
                Ok(Some(f)) => good.push((name, f)),
                Ok(None) => {} // removed since the listing
                Err(e) => self.report.failure("index", &format!("index/{name}"), &e),
            }
        }
        let superseded: HashSet<ObjectId> = good
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut active = Vec::new();
        for (name, f) in good {
            if ObjectId::from_hex(&name).is_some_and(|id| superseded.contains(&id)) {
                self.report.add(
                    Severity::Info,
                    "index",
                    format!("index/{name}"),
                    "superseded by another index object; not used",
                );
            } else {
                active.push((name, f));
            }
        }
        let mut by_pack: HashMap<ObjectId, Vec<(usize, usize)>> = HashMap::new();
        for (fi, (_, f)) in active.iter().enumerate() {
            for (pi, (pack, _)) in f.packs.iter().enumerate() {
                by_pack.entry(*pack).or_default().push((fi, pi));
            }
        }
        Ok(IndexObjects { active, by_pack })
    }

    /// Loads every snapshot (authenticated, name checked), oldest first.
    pub(super) fn load_snapshots(
        &self,
        listed: &[ObjectInfo],
    ) -> Result<Vec<(ObjectId, Snapshot)>> {
        let names = self.object_names(listed, "snapshot", ObjectKind::Snapshot);
        let loaded = parallel_map(&names, self.meta_threads, |name| {
            crate::sys::check_interrupted()?;
            let r = self
                .repo
                .backend()
                .get(ObjectKind::Snapshot, name)
                .and_then(|raw| self.repo.open_snapshot(name, &raw));
            Ok((name.to_string(), r))
        })?;
        let mut out = Vec::new();
        for (name, r) in loaded {
            match r {
                Ok(s) => out.push((ObjectId::from_hex(&name).expect("checked above"), s)),
                Err(e) if e.is_not_found() => {} // removed since the listing
                Err(e) => self
                    .report
                    .failure("snapshot", &format!("snapshots/{name}"), &e),
            }
        }
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }
}
