//! Errors a concurrent prune or backup can cause, looked at again on fresh
//! listings before they are reported (ARCHITECTURE §25, "Changed under
//! me").

use super::*;

/// An error finding that the repository changing under verify can cause,
/// and what to look at again to tell that from damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Recheck {
    /// Index objects name this pack, and the pack listing lacked it.
    PackMissing(ObjectId),
    /// This snapshot's listing could not be read to its end, or names
    /// chunks that no index object or mark has.
    Listing(ObjectId),
}

/// Rounds of fresh listings a recheckable error must survive. A round in
/// which every remaining finding still holds ends the rechecking.
pub(super) const RECHECK_ROUNDS: usize = 3;

/// The repository listed afresh for [`Verifier::recheck`], in the same
/// order as the first look: snapshots, marks, index objects, packs.
pub(super) struct FreshView {
    pub(super) snapshots: HashSet<ObjectId>,
    /// Live index objects and marks, merged.
    pub(super) index: Index,
    /// Packs that a live index object names.
    pub(super) named: HashSet<ObjectId>,
    pub(super) packs: HashSet<ObjectId>,
}

impl Verifier<'_> {
    /// Looks again, on fresh listings, at every error a concurrent prune
    /// or backup can cause, and drops those that no longer hold: verify
    /// reports what a second run would report too, not what changed under
    /// it. A real deletion or damage holds in every round.
    pub(super) fn recheck(&self, first_look: &IndexObjects) -> Result<()> {
        let known: HashMap<&str, &IndexFile> = first_look
            .active
            .iter()
            .map(|(name, f)| (name.as_str(), f))
            .collect();
        let mut dropped = 0;
        for _ in 0..RECHECK_ROUNDS {
            let pending: Vec<Recheck> = {
                let items = self.report.items.lock().unwrap_or_else(|p| p.into_inner());
                items.iter().filter_map(|p| p.recheck).collect()
            };
            if pending.is_empty() {
                break;
            }
            let view = self.fresh_view(&known)?;
            let mut gone = HashSet::new();
            for r in pending {
                if !self.still_holds(r, &view)? {
                    gone.insert(r);
                }
            }
            if gone.is_empty() {
                break;
            }
            let mut items = self.report.items.lock().unwrap_or_else(|p| p.into_inner());
            let before = items.len();
            items.retain(|p| p.recheck.is_none_or(|r| !gone.contains(&r)));
            dropped += before - items.len();
        }
        if dropped > 0 {
            self.report.add(
                Severity::Info,
                "concurrency",
                "repository",
                format!(
                    "{dropped} error(s) seen during the run no longer held on a fresh look: \
                     the repository changed meanwhile (a concurrent prune or backup)"
                ),
            );
        }
        Ok(())
    }

    /// Lists snapshots, marks, index objects and packs again, in the order
    /// of the first look. Index objects already read are not read again
    /// (objects never change); damaged ones are left out (reported once).
    pub(super) fn fresh_view(&self, known: &HashMap<&str, &IndexFile>) -> Result<FreshView> {
        let backend = self.repo.backend();
        let snapshots = backend
            .list(ObjectKind::Snapshot)?
            .iter()
            .filter_map(|o| ObjectId::from_hex(&o.name))
            .collect();
        let marks = self.repo.marks().unwrap_or_default();
        let listed = backend.list(ObjectKind::Index)?;
        let unread: Vec<&str> = listed
            .iter()
            .map(|o| o.name.as_str())
            .filter(|n| is_object_name(n) && !known.contains_key(n))
            .collect();
        // Gone or damaged ones are left out (damage is reported once).
        let read = parallel_map(&unread, self.meta_threads, |name| {
            let file = ObjectId::from_hex(name)
                .and_then(|id| self.repo.read_index_object(&id).ok().flatten());
            Ok((*name, file))
        })?;
        let mut files: Vec<(&str, &IndexFile)> = listed
            .iter()
            .filter_map(|o| known.get(o.name.as_str()).map(|f| (o.name.as_str(), *f)))
            .collect();
        files.extend(read.iter().filter_map(|(n, f)| f.as_ref().map(|f| (*n, f))));
        let superseded: HashSet<ObjectId> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        files.retain(|(n, _)| ObjectId::from_hex(n).is_none_or(|id| !superseded.contains(&id)));
        let named = files
            .iter()
            .flat_map(|(_, f)| f.packs.iter().map(|(p, _)| *p))
            .collect();
        let index = merged_index(files.iter().map(|(_, f)| *f), &marks);
        let packs = backend
            .list(ObjectKind::Pack)?
            .iter()
            .filter_map(|o| ObjectId::from_hex(&o.name))
            .collect();
        Ok(FreshView {
            snapshots,
            index,
            named,
            packs,
        })
    }

    /// Whether the error `r` stands for is still there in `view`.
    pub(super) fn still_holds(&self, r: Recheck, view: &FreshView) -> Result<bool> {
        match r {
            Recheck::PackMissing(pack) => {
                Ok(!view.packs.contains(&pack) && view.named.contains(&pack))
            }
            Recheck::Listing(sid) => {
                if !view.snapshots.contains(&sid) {
                    return Ok(false);
                }
                let name = sid.to_hex();
                let snap = match self.repo.backend().get(ObjectKind::Snapshot, &name) {
                    Ok(raw) => match self.repo.open_snapshot(&name, &raw) {
                        Ok(s) => s,
                        Err(_) => return Ok(true),
                    },
                    Err(e) if e.is_not_found() => return Ok(false),
                    Err(_) => return Ok(true),
                };
                let reader = ChunkReader::new(self.repo, &view.index);
                let walker = ListingWalker::<ChunkId>::new(&reader);
                let visit = |e: &Listed, found: &mut Vec<ChunkId>| {
                    found.extend(e.chunks.iter().filter(|c| !view.index.contains(c)));
                };
                let (missing, problem) = walker.walk(&snap.listing, &visit)?;
                Ok(problem.is_some() || !missing.is_empty())
            }
        }
    }
}
