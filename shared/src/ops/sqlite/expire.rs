//! Retention for replicated databases: keep every state of the last
//! `keep_within` restorable, and nothing else — planned first, so
//! `--dry-run` prints the very plan a real run carries out.
//!
//! The window ends at the database's newest replicated state, not at the
//! clock (as `bk-prune --keep-within` counts from a group's newest
//! snapshot): a replicator that stopped weeks ago does not see its
//! history expire under it, and a plan does not change between a dry run
//! and the run.
//!
//! For a time T inside the window a restore uses the newest lineage that
//! started at or before T, its newest snapshot at or before T and the
//! segments after it (restore.rs). So in each lineage that some T in the
//! window lands in, the newest snapshot at or before the window's start
//! (or the lineage's start) is the *base*: it and everything after it
//! stay; older snapshots are forgotten and older segments deleted. A
//! lineage no T in the window lands in (a newer one started before the
//! window) goes whole. Forgotten snapshots' chunks are reclaimed by the
//! repository's GC (bk-prune), in two phases like every snapshot's. A
//! restore outside the window that runs while its segments go fails with
//! a missing segment; it never ends early.

use super::replica::{Catalog, LineageObjects};
use crate::error::Result;
use crate::format::time::Timestamp;
use crate::format::wire::{GcRecord, VERSION};
use crate::layout::ObjectKind;
use crate::store::repo::Repository;
use std::collections::BTreeMap;
use std::time::Duration;

/// One step of the plan, in the order it is carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Delete {
        segment: String,
        bytes: u64,
        db: String,
    },
    Forget {
        snapshot: String,
        db: String,
    },
}

impl Step {
    pub fn record(&self) -> GcRecord {
        let (action, object, bytes, db) = match self {
            Step::Delete { segment, bytes, db } => {
                ("delete", ObjectKind::Sqlite.path(segment), *bytes, db)
            }
            Step::Forget { snapshot, db } => ("forget", ObjectKind::Snapshot.path(snapshot), 0, db),
        };
        GcRecord {
            v: VERSION,
            action: action.to_string(),
            object,
            bytes,
            reason: Some(format!("{db}: outside the retention window")),
        }
    }
}

/// Each database's newest replicated state: the last commit of its
/// newest lineage (one read of that lineage's last segment).
pub fn newest_states(repo: &Repository, catalog: &Catalog) -> Result<BTreeMap<String, Timestamp>> {
    let mut out = BTreeMap::new();
    for (db, lineages) in &catalog.dbs {
        let Some(objects) = lineages.values().next_back() else {
            continue;
        };
        let last = objects.last_seq();
        let time = match objects.segments.get(&last) {
            Some(seg) => super::replica::get_segment(repo, &seg.name)?
                .0
                .commits
                .last()
                .map(|c| c.time),
            None => objects.snapshots.get(&last).map(|s| s.time),
        };
        if let Some(t) = time {
            out.insert(db.clone(), t);
        }
    }
    Ok(out)
}

/// What to remove so that exactly the states from `keep_within` before
/// each database's newest state (`newest`) on stay restorable (`dbs`:
/// only these databases; empty: all).
pub fn plan(
    catalog: &Catalog,
    dbs: &[String],
    keep_within: Duration,
    newest: &BTreeMap<String, Timestamp>,
) -> Vec<Step> {
    let mut segments = Vec::new();
    let mut snapshots = Vec::new();
    for (db, lineages) in &catalog.dbs {
        if !dbs.is_empty() && !dbs.contains(db) {
            continue;
        }
        let Some(end) = newest.get(db) else { continue };
        let window = Timestamp {
            secs: end.secs - keep_within.as_secs() as i64,
            nanos: end.nanos,
        };
        let list: Vec<(&LineageObjects, Option<Timestamp>)> = lineages
            .values()
            .map(|o| (o, o.snapshots.values().map(|s| s.time).min()))
            .collect();
        for (i, (objects, start)) in list.iter().enumerate() {
            let next_start = list[i + 1..].iter().find_map(|(_, s)| *s);
            let superseded = next_start.is_some_and(|n| n <= window);
            // Keep from the base on; a lineage without any snapshot cannot
            // be restored and is left for the replicator still writing it.
            let keep_from = match start {
                None => continue,
                Some(_) if superseded => u64::MAX,
                Some(s) => {
                    let from = window.max(*s);
                    objects
                        .snapshots
                        .values()
                        .filter(|snap| snap.time <= from)
                        .map(|snap| snap.seq)
                        .max()
                        .unwrap_or(0)
                }
            };
            for seg in objects.segments.values().filter(|g| g.seq <= keep_from) {
                segments.push(Step::Delete {
                    segment: seg.name.clone(),
                    bytes: seg.size,
                    db: db.clone(),
                });
            }
            for snap in objects.snapshots.values().filter(|s| s.seq < keep_from) {
                snapshots.push(Step::Forget {
                    snapshot: snap.id.to_hex(),
                    db: db.clone(),
                });
            }
        }
    }
    // Segments first: a snapshot forgotten before the segments after it
    // would leave them unreachable for a moment, not the other way round.
    segments.extend(snapshots);
    segments
}

/// Carries out `steps`, calling `done` after each.
pub fn execute(
    repo: &Repository,
    steps: &[Step],
    done: &mut dyn FnMut(&Step) -> Result<()>,
) -> Result<()> {
    for step in steps {
        crate::sys::check_interrupted()?;
        let result = match step {
            Step::Delete { segment, .. } => repo.backend().delete(ObjectKind::Sqlite, segment),
            Step::Forget { snapshot, .. } => repo.backend().delete(ObjectKind::Snapshot, snapshot),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        done(step)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::id::ObjectId;
    use crate::ops::sqlite::replica::{DbSnapshot, LineageId, SegmentObject};

    fn at(secs: i64) -> Timestamp {
        Timestamp { secs, nanos: 0 }
    }

    fn newest(secs: i64) -> BTreeMap<String, Timestamp> {
        BTreeMap::from([("app.db".to_string(), at(secs))])
    }

    fn snap(lineage: &LineageId, seq: u64, time: i64) -> DbSnapshot {
        DbSnapshot {
            id: ObjectId::digest(format!("{lineage}{seq}").as_bytes()),
            time: at(time),
            lineage: lineage.clone(),
            seq,
            pages: 1,
            page_size: 4096,
            sum: 0,
            bytes: 4096,
        }
    }

    fn lineage(catalog: &mut Catalog, id: &LineageId, snaps: &[(u64, i64)], segs: &[u64]) {
        let o = catalog
            .dbs
            .entry("app.db".into())
            .or_default()
            .entry(id.clone())
            .or_default();
        for (seq, t) in snaps {
            o.snapshots.insert(*seq, snap(id, *seq, *t));
        }
        for seq in segs {
            o.segments.insert(
                *seq,
                SegmentObject {
                    name: crate::ops::sqlite::replica::segment_name("app.db", id, *seq),
                    seq: *seq,
                    size: 10,
                },
            );
        }
    }

    #[test]
    fn keeps_the_base_before_the_window_and_everything_after_it() {
        let mut c = Catalog::default();
        let l = LineageId::new(at(1000));
        // Snapshots at 1000 (seq 1), 2000 (seq 5), 3000 (seq 9).
        lineage(
            &mut c,
            &l,
            &[(1, 1000), (5, 2000), (9, 3000)],
            &[2, 3, 4, 6, 7, 8, 10],
        );
        // Window from 2500: base is seq 5 (2000).
        let steps = plan(&c, &[], Duration::from_secs(1000), &newest(3500));
        let deleted: Vec<u64> = steps
            .iter()
            .filter_map(|s| match s {
                Step::Delete { segment, .. } => {
                    crate::ops::sqlite::replica::parse_segment_name(segment).map(|(_, _, q)| q)
                }
                _ => None,
            })
            .collect();
        assert_eq!(deleted, vec![2, 3, 4]);
        let forgotten = steps
            .iter()
            .filter(|s| matches!(s, Step::Forget { .. }))
            .count();
        assert_eq!(forgotten, 1);
    }

    #[test]
    fn a_lineage_superseded_before_the_window_goes_whole_and_the_current_one_stays() {
        let mut c = Catalog::default();
        let old = LineageId::new(at(1000));
        let new = LineageId::new(at(2000));
        lineage(&mut c, &old, &[(1, 1000)], &[2, 3]);
        lineage(&mut c, &new, &[(1, 2000)], &[2]);
        let steps = plan(&c, &[], Duration::from_secs(500), &newest(3000));
        assert_eq!(steps.len(), 3, "{steps:?}");
        assert!(steps.iter().all(|s| match s {
            Step::Delete { segment, .. } => segment.contains(old.as_str()),
            Step::Forget { snapshot, .. } => *snapshot == snap(&old, 1, 1000).id.to_hex(),
        }));
        // A window reaching back before the new lineage keeps the old one
        // from its base on (its one snapshot).
        assert!(plan(&c, &[], Duration::from_secs(1500), &newest(3000)).is_empty());
    }
}
