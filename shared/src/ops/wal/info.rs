//! What a stanza's archive holds: its timelines with their WAL ranges and
//! gaps, and each base backup with the span of time it can recover to.
//! `bk-wal info` prints it; expiry and verification read the same view.

use super::archive;
use super::restore::{base_backups, BaseBackup};
use crate::error::{Error, Result};
use crate::format::id::ObjectId;
use crate::format::wal::{lsn, StanzaRecord, WalFile};
use crate::format::wire::{WalBackupRecord, WalStanzaRecord, WalTimelineRecord, VERSION};
use crate::layout::ObjectKind;
use crate::store::backend::ObjectInfo;
use crate::store::repo::{Repository, Snapshot};
use std::collections::{BTreeMap, BTreeSet};

/// The archive of one stanza, from one listing.
#[derive(Debug, Clone)]
pub struct Archive {
    pub stanza: StanzaRecord,
    /// timeline → its whole segments.
    pub segments: BTreeMap<u32, BTreeSet<u64>>,
    /// Timelines with a `.history` file.
    pub histories: BTreeSet<u32>,
    /// Every WAL file's object name (without the stanza) and size.
    pub files: Vec<(WalFile, String, u64)>,
    pub backups: Vec<BaseBackup>,
}

impl Archive {
    pub fn load(repo: &Repository, stanza: &str) -> Result<Archive> {
        let record = archive::load_stanza(repo, stanza)?
            .ok_or_else(|| Error::Usage(format!("no stanza {stanza:?} in this repository")))?;
        let listed = repo.backend().list(ObjectKind::Wal)?;
        Ok(Archive::of(record, &listed, repo.snapshots()?))
    }

    /// From a listing of `wal/` and the repository's snapshots, which a
    /// caller that has them already (bk-verify) does not read again.
    pub fn of(
        stanza: StanzaRecord,
        listed: &[ObjectInfo],
        snapshots: impl IntoIterator<Item = (ObjectId, Snapshot)>,
    ) -> Archive {
        let prefix = format!("{}.", stanza.stanza);
        let mut a = Archive {
            backups: base_backups(&stanza.stanza, snapshots),
            stanza,
            segments: BTreeMap::new(),
            histories: BTreeSet::new(),
            files: Vec::new(),
        };
        for obj in listed {
            let Some(name) = obj.name.strip_prefix(&prefix) else {
                continue;
            };
            let Some(file) = WalFile::parse(name, a.stanza.segment_size) else {
                continue; // the stanza record, expiry marks
            };
            match file {
                WalFile::Segment { timeline, segno } => {
                    a.segments.entry(timeline).or_default().insert(segno);
                }
                WalFile::History { timeline } => {
                    a.histories.insert(timeline);
                }
                _ => {}
            }
            a.files.push((file, name.to_string(), obj.size));
        }
        a
    }

    /// Every segment from the backup's start to its stop is archived.
    pub fn wal_complete(&self, b: &BaseBackup) -> bool {
        let seg = u64::from(self.stanza.segment_size);
        self.contiguous_from(b.timeline, b.start_lsn / seg)
            .is_some_and(|end| (end + 1) * seg >= b.stop_lsn)
    }

    /// Missing runs `(first, last)` between a timeline's first and last
    /// archived segment.
    pub fn gaps(&self, timeline: u32) -> Vec<(u64, u64)> {
        let mut gaps = Vec::new();
        let Some(segs) = self.segments.get(&timeline) else {
            return gaps;
        };
        let mut prev: Option<u64> = None;
        for &s in segs {
            if let Some(p) = prev {
                if s > p + 1 {
                    gaps.push((p + 1, s - 1));
                }
            }
            prev = Some(s);
        }
        gaps
    }

    /// The last segment of the unbroken run of segments that starts at
    /// `segno` on `timeline` (`None` when `segno` itself is missing).
    pub fn contiguous_from(&self, timeline: u32, segno: u64) -> Option<u64> {
        let segs = self.segments.get(&timeline)?;
        if !segs.contains(&segno) {
            return None;
        }
        let mut last = segno;
        while segs.contains(&(last + 1)) {
            last += 1;
        }
        Some(last)
    }

    fn name(&self, timeline: u32, segno: u64) -> String {
        WalFile::Segment { timeline, segno }.name(self.stanza.segment_size)
    }

    /// The records `bk-wal info` prints: the stanza, each timeline, each
    /// base backup.
    pub fn records(
        &self,
    ) -> (
        WalStanzaRecord,
        Vec<WalTimelineRecord>,
        Vec<WalBackupRecord>,
    ) {
        let s = &self.stanza;
        let stanza = WalStanzaRecord {
            v: VERSION,
            stanza: s.stanza.clone(),
            system_identifier: s.system_identifier.to_string(),
            pg_version: s.pg_version,
            segment_size: s.segment_size,
            files: self.files.len() as u64,
            bytes: self.files.iter().map(|f| f.2).sum(),
            backups: self.backups.len() as u64,
        };
        let timelines = self
            .segments
            .iter()
            .map(|(&tl, segs)| WalTimelineRecord {
                v: VERSION,
                stanza: s.stanza.clone(),
                timeline: tl,
                first: segs.first().map(|&n| self.name(tl, n)).unwrap_or_default(),
                last: segs.last().map(|&n| self.name(tl, n)).unwrap_or_default(),
                segments: segs.len() as u64,
                history: self.histories.contains(&tl),
                gaps: self
                    .gaps(tl)
                    .into_iter()
                    .map(|(a, b)| (self.name(tl, a), self.name(tl, b)))
                    .collect(),
            })
            .collect();
        let seg = u64::from(s.segment_size);
        let backups = self
            .backups
            .iter()
            .map(|b| {
                let start = b.start_lsn / seg;
                let end = self.contiguous_from(b.timeline, start);
                WalBackupRecord {
                    v: VERSION,
                    stanza: s.stanza.clone(),
                    id: b.id,
                    time: b.snapshot.time,
                    timeline: b.timeline,
                    start_lsn: lsn(b.start_lsn),
                    stop_lsn: lsn(b.stop_lsn),
                    // Consistent from its stop; replayable to the end of
                    // the unbroken WAL after its start.
                    recoverable_from: lsn(b.stop_lsn),
                    recoverable_to_wal: end.map(|e| self.name(b.timeline, e)),
                    wal_complete: self.wal_complete(b),
                }
            })
            .collect();
        (stanza, timelines, backups)
    }
}
