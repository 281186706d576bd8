//! `bk-sqlite ls`: the replicated databases, their lineages and what each
//! can be restored to. One listing of `sqlite/`, the snapshots, and one
//! read per lineage (its last segment, for the last commit).

use super::replica::{self, Catalog};
use crate::error::Result;
use crate::format::time::Timestamp;
use crate::format::wire::{SqliteLineageRecord, VERSION};
use crate::store::repo::Repository;

/// A record per lineage of `db` (or of every database), oldest first.
pub fn lineages(repo: &Repository, db: Option<&str>) -> Result<Vec<SqliteLineageRecord>> {
    let catalog = Catalog::load(repo)?;
    let now = Timestamp::now();
    let mut out = Vec::new();
    for (name, lineages) in &catalog.dbs {
        if db.is_some_and(|d| d != name) {
            continue;
        }
        let lease = replica::read_lease(repo, name)?;
        let newest = lineages.keys().next_back().cloned();
        for (id, objects) in lineages {
            let Some(first) = objects.snapshots.values().next() else {
                continue;
            };
            let last_seq = objects.last_seq();
            let (end, pages, page_size) = match objects.segments.get(&last_seq) {
                Some(seg) => {
                    let (header, _) = replica::get_segment(repo, &seg.name)?;
                    let last = header.commits.last();
                    (
                        last.map_or(first.time, |c| c.time),
                        last.map_or(0, |c| c.pages),
                        header.page_size,
                    )
                }
                None => {
                    let s = &objects.snapshots[&last_seq];
                    (s.time, s.pages, s.page_size)
                }
            };
            let bytes = objects.segments.values().map(|s| s.size).sum::<u64>()
                + objects.snapshots.values().map(|s| s.bytes).sum::<u64>();
            out.push(SqliteLineageRecord {
                v: VERSION,
                db: name.clone(),
                lineage: id.to_string(),
                restorable_from: objects
                    .snapshots
                    .values()
                    .map(|s| s.time)
                    .min()
                    .unwrap_or(first.time),
                restorable_to: end,
                current: newest.as_ref() == Some(id),
                snapshots: objects.snapshots.len() as u64,
                segments: objects.segments.len() as u64,
                bytes,
                db_bytes: pages as u64 * page_size as u64,
                age_seconds: ((now.as_nanos() - end.as_nanos()) as f64 / 1e9).max(0.0),
                replicator: lease
                    .as_ref()
                    .filter(|_| newest.as_ref() == Some(id))
                    .map(|l| l.describe()),
            });
        }
    }
    Ok(out)
}
