//! bk-prune: apply a retention policy, forget what it does not keep, and
//! collect the garbage (gc.rs). The policy step is pure (policy.rs) and
//! also runs on snapshot records from stdin without any repository.

use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use crate::format::wire::{
    self, DecisionRecord, PruneSummary, Record, RecordReader, SnapshotRecord,
};
use crate::ops::gc::{self, GcOptions};
use crate::ops::policy::{self, GroupBy, Policy, Selection};
use crate::store::locks::{LockGuard, LockMode};
use crate::store::repo::snapshot_record;
use crate::store::repo::Repository;
use std::io::{BufRead, Write};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    pub policy: Policy,
    pub group_by: GroupBy,
    pub selection: Selection,
    pub allow_empty_group: bool,
    /// Snapshots to forget by id (or unique prefix), whatever the policy.
    pub forget: Vec<String>,
    /// `None`: forget only, collect no garbage.
    pub gc: Option<GcOptions>,
    pub dry_run: bool,
}

fn decision_record(d: policy::Decision) -> DecisionRecord {
    DecisionRecord {
        v: wire::VERSION,
        id: d.id,
        time: d.time,
        identity: d.identity,
        group: d.group,
        keep: d.keep,
        reasons: d.reasons,
    }
}

fn io(e: std::io::Error) -> Error {
    crate::error::stdout_error(e)
}

/// The policy applied to snapshot records read from `input` (what `bk-ls`
/// prints); decisions go to `out`. Touches no repository.
pub fn plan(input: impl BufRead, out: &mut impl Write, opts: &PruneOptions) -> Result<()> {
    let mut reader = RecordReader::new(input);
    let mut snaps = Vec::new();
    while let Some(rec) = reader.next_record()? {
        if let Record::Snapshot(s) = rec {
            snaps.push(s);
        }
    }
    for d in decide(&snaps, opts)? {
        wire::write_record(out, &Record::Decision(d)).map_err(io)?;
    }
    Ok(())
}

/// Policy decisions plus explicit `--forget` ids.
fn decide(snaps: &[SnapshotRecord], opts: &PruneOptions) -> Result<Vec<DecisionRecord>> {
    let mut out: Vec<DecisionRecord> = policy::decide(
        snaps,
        &opts.policy,
        &opts.group_by,
        &opts.selection,
        opts.allow_empty_group || !opts.forget.is_empty(),
    )?
    .into_iter()
    .map(decision_record)
    .collect();
    for spec in &opts.forget {
        let spec_l = spec.to_ascii_lowercase();
        let matches: Vec<&SnapshotRecord> = snaps
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&spec_l))
            .collect();
        let id = match matches.as_slice() {
            [one] if !spec.is_empty() => one.id,
            [] => return Err(Error::Usage(format!("--forget {spec:?}: no such snapshot"))),
            _ => {
                return Err(Error::Usage(format!(
                    "--forget {spec:?} is ambiguous ({} matches); give more of the id",
                    matches.len()
                )))
            }
        };
        match out.iter_mut().find(|d| d.id == id) {
            Some(d) => {
                d.keep = false;
                d.reasons.clear();
            }
            None => {
                let s = matches[0];
                out.push(DecisionRecord {
                    v: wire::VERSION,
                    id,
                    time: s.time,
                    identity: s.identity.clone(),
                    group: "forget".into(),
                    keep: false,
                    reasons: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

/// The whole run against a repository: decisions, forgetting, garbage
/// collection, one JSON line each, then the summary.
pub fn prune(repo: &Repository, opts: &PruneOptions, out: &mut impl Write) -> Result<PruneSummary> {
    let lock = LockGuard::acquire(
        repo.backend().clone(),
        repo.keys(),
        LockMode::Prune,
        "bk-prune",
    )?;
    let snaps: Vec<SnapshotRecord> = repo
        .snapshots()?
        .iter()
        .map(|(id, s)| snapshot_record(id, s))
        .collect();
    let decisions = decide(&snaps, opts)?;
    let forget: Vec<ObjectId> = decisions.iter().filter(|d| !d.keep).map(|d| d.id).collect();
    for d in decisions {
        wire::write_record(out, &Record::Decision(d)).map_err(io)?;
    }
    let mut emit = |a: &wire::GcRecord| -> Result<()> {
        wire::write_record(out, &Record::Gc(a.clone())).map_err(io)
    };
    let mut summary = match &opts.gc {
        Some(g) => {
            let g = GcOptions {
                dry_run: opts.dry_run,
                ..g.clone()
            };
            gc::collect(repo, &lock, &forget, &g, &mut emit)?
        }
        None => {
            let g = GcOptions {
                dry_run: opts.dry_run,
                ..Default::default()
            };
            gc::forget_only(repo, &forget, &g, &mut emit)?
        }
    };
    summary.snapshots_kept = snaps.len() as u64 - forget.len() as u64;
    wire::write_record(out, &Record::PruneSummary(summary.clone())).map_err(io)?;
    Ok(summary)
}

/// `--grace`: `0`, `90s`, `30min`, `1h30min`, `2d` (`format::duration`).
/// One line for people when a run marked packs but freed less than it
/// marked: the grace period keeps them for writers that may still refer to
/// them, so a first prune frees nothing and says when the space comes back.
pub fn space_note(summary: &PruneSummary, gc: &GcOptions) -> Option<String> {
    use crate::format::human;
    if summary.dry_run || summary.packs_marked == 0 || gc.grace.is_zero() {
        return None;
    }
    Some(format!(
        "{} in {} pack(s) marked for deletion, freed {} now; the marked space comes back \
         when a prune runs {} or more from now (--grace {}); `--grace 0` frees it at once, \
         safe only while no backup is writing",
        human::bytes(summary.bytes_marked),
        summary.packs_marked,
        human::bytes(summary.bytes_freed),
        human::duration(gc.grace),
        human::duration(gc.grace),
    ))
}

pub fn parse_grace(s: &str) -> Result<Duration> {
    crate::format::duration::parse_duration("--grace", s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_forms() {
        assert_eq!(parse_grace("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_grace("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_grace("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_grace("2d").unwrap(), Duration::from_secs(172800));
        assert_eq!(parse_grace("1h30min").unwrap(), Duration::from_secs(5400));
        for bad in ["", "h", "1", "30m", "1mo", "-1h", "1.5h"] {
            assert!(parse_grace(bad).is_err(), "{bad}");
        }
    }
}
