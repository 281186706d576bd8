//! Snapshot listings: every chunk they name resolves, and the damage found
//! elsewhere is mapped back to the snapshots and paths it affects.

use super::*;

impl Verifier<'_> {
    /// Reads every snapshot's listing (each distinct chunk once) and checks
    /// that every file chunk it names is in the index. Returns the number of
    /// listing chunks read.
    pub(super) fn check_listings(
        &self,
        snapshots: &[(ObjectId, Snapshot)],
        index: &Index,
        reader: &ChunkReader,
    ) -> Result<u64> {
        #[derive(Clone)]
        enum Issue {
            Missing(String, ChunkId),
            UnsafePath(String, String),
        }
        let visit = |e: &Listed, found: &mut Vec<Issue>| {
            let unsafe_path = match e.path_bytes() {
                Ok(p) => wire::check_relative_path(&p).err(),
                Err(m) => Some(m),
            };
            if let Some(m) = unsafe_path {
                found.push(Issue::UnsafePath(e.path.to_string(), m));
            }
            for c in &e.chunks {
                if !index.contains(c) {
                    found.push(Issue::Missing(e.path.to_string(), *c));
                }
            }
        };
        let walker = ListingWalker::<Issue>::new(reader);
        // Neighbours in time share the most chunks: walk them in that order.
        let mut order: Vec<usize> = (0..snapshots.len()).collect();
        order.sort_by(|&a, &b| {
            (&snapshots[a].1.identity, snapshots[a].1.time)
                .cmp(&(&snapshots[b].1.identity, snapshots[b].1.time))
        });
        let results = parallel_map(&order, self.meta_threads.min(4), |&i| {
            walker.walk(&snapshots[i].1.listing, &visit).map(|r| (i, r))
        })?;
        for (i, (issues, problem)) in results {
            let sid = snapshots[i].0;
            let object = format!("snapshots/{sid}");
            if let Some(p) = problem {
                let check = if p.unreadable { "read" } else { "listing" };
                let mut finding = error_finding(check, object.clone(), p.message);
                finding.snapshots = vec![sid];
                self.report.push_rechecked(
                    Recheck::Listing(sid),
                    finding,
                    Vec::new(),
                    p.unreadable,
                );
            }
            let mut missing_paths = Vec::new();
            let mut missing_chunks = HashSet::new();
            for issue in issues {
                match issue {
                    Issue::Missing(path, c) => {
                        missing_paths.push(path);
                        missing_chunks.insert(c);
                    }
                    Issue::UnsafePath(path, m) => self.report.push(
                        Severity::Error,
                        "listing",
                        object.clone(),
                        format!("unsafe path {path:?} ({m}); bk-get refuses to restore it"),
                        Vec::new(),
                        vec![sid],
                        vec![path],
                    ),
                }
            }
            if !missing_chunks.is_empty() {
                let mut first: Vec<&ChunkId> = missing_chunks.iter().collect();
                first.sort();
                let files = {
                    let mut p = missing_paths.clone();
                    p.sort();
                    p.dedup();
                    p.len()
                };
                let mut finding = error_finding(
                    "listing",
                    object,
                    format!(
                        "{} chunk(s) of {files} file(s) are in no index object (first: {})",
                        missing_chunks.len(),
                        first[0]
                    ),
                );
                finding.snapshots = vec![sid];
                (finding.paths, finding.more_paths) = cap_paths(missing_paths);
                self.report
                    .push_rechecked(Recheck::Listing(sid), finding, Vec::new(), false);
            }
        }
        Ok(walker.chunks_read.load(Ordering::Relaxed))
    }

    /// Fills in the snapshots and paths that damaged chunks affect.
    pub(super) fn map_affected(
        &self,
        snapshots: &[(ObjectId, Snapshot)],
        reader: &ChunkReader,
    ) -> Result<()> {
        let mut items = self.report.items.lock().unwrap_or_else(|p| p.into_inner());
        let wanted: HashSet<ChunkId> = items
            .iter()
            .flat_map(|p| p.chunks.iter().copied())
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // Listing chunks: the snapshots whose listing they belong to.
        let mut in_listing: HashMap<ChunkId, BTreeSet<usize>> = HashMap::new();
        for (i, (_, s)) in snapshots.iter().enumerate() {
            for c in &s.listing {
                if wanted.contains(c) {
                    in_listing.entry(*c).or_default().insert(i);
                }
            }
        }
        // File chunks: walk the listings.
        let visit = |e: &Listed, found: &mut Vec<(String, ChunkId)>| {
            for c in &e.chunks {
                if wanted.contains(c) {
                    found.push((e.path.to_string(), *c));
                }
            }
        };
        let walker = ListingWalker::new(reader);
        let order: Vec<usize> = (0..snapshots.len()).collect();
        let results = parallel_map(&order, self.meta_threads.min(4), |&i| {
            walker
                .walk(&snapshots[i].1.listing, &visit)
                .map(|(f, _)| (i, f))
        })?;
        let mut by_chunk: HashMap<ChunkId, Vec<(usize, String)>> = HashMap::new();
        for (i, found) in results {
            for (path, c) in found {
                by_chunk.entry(c).or_default().push((i, path));
            }
        }
        for p in items.iter_mut() {
            if p.chunks.is_empty() {
                continue;
            }
            let mut snaps: BTreeSet<usize> = BTreeSet::new();
            let mut paths = Vec::new();
            let mut listing_damage = false;
            for c in &p.chunks {
                if let Some(s) = in_listing.get(c) {
                    snaps.extend(s.iter().copied());
                    listing_damage = true;
                }
                for (i, path) in by_chunk.get(c).into_iter().flatten() {
                    snaps.insert(*i);
                    paths.push(path.clone());
                }
            }
            let mut ids: Vec<ObjectId> = p.finding.snapshots.clone();
            ids.extend(snaps.iter().map(|&i| snapshots[i].0));
            ids.sort();
            ids.dedup();
            p.finding.snapshots = ids;
            paths.append(&mut p.finding.paths);
            let (paths, more) = cap_paths(paths);
            p.finding.paths = paths;
            p.finding.more_paths += more;
            if listing_damage {
                p.finding.message.push_str(
                    " (affects snapshot listings: those snapshots cannot be listed or restored)",
                );
            }
        }
        Ok(())
    }
}
