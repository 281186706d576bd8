//! WAL archives (bk-wal), per stanza: no gap between the oldest base
//! backup's start and the newest segment of any timeline, a `.history`
//! file for every timeline after the first, every base backup's own WAL
//! complete; with `--read-data`, every WAL object opened and checked
//! against its name and its stanza's cluster.

use super::*;
use crate::format::wal::WalFile;
use crate::ops::metrics::WalMetrics;
use crate::ops::wal::archive;
use crate::ops::wal::info::Archive;

impl Verifier<'_> {
    /// Returns the WAL files checked and each stanza's metrics.
    pub(super) fn check_wal(
        &self,
        listed: &[ObjectInfo],
        snapshots: &[(ObjectId, Snapshot)],
        read_data: bool,
    ) -> Result<(u64, Vec<WalMetrics>)> {
        let mut files = 0;
        let mut metrics = Vec::new();
        for stanza in listed.iter().filter_map(|o| o.name.strip_suffix(".stanza")) {
            let object = format!("wal/{stanza}");
            let record = match archive::load_stanza(self.repo, stanza) {
                Ok(Some(r)) => r,
                Ok(None) => continue, // removed since the listing
                Err(e) => {
                    self.report.failure("wal", &object, &e);
                    continue;
                }
            };
            let archive = Archive::of(record, listed, snapshots.iter().cloned());
            let gaps = self.check_continuity(&archive, &object);
            if read_data {
                self.read_wal(&archive, &object)?;
            }
            files += archive.files.len() as u64;
            let prefix = format!("{stanza}.");
            let newest = listed
                .iter()
                .filter(|o| o.name.starts_with(&prefix))
                .filter_map(|o| o.modified)
                .max();
            metrics.push(WalMetrics {
                stanza: stanza.to_string(),
                files: archive.files.len() as u64,
                bytes: archive.files.iter().map(|f| f.2).sum(),
                gaps,
                newest_archived: newest.and_then(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs_f64())
                }),
                base_backups: archive.backups.len() as u64,
                newest_base_backup: archive.backups.last().map(|b| b.snapshot.time.secs as f64),
            });
        }
        Ok((files, metrics))
    }

    /// Reports what would stop a recovery; returns the number of gaps that
    /// matter (those after the oldest base backup's start).
    fn check_continuity(&self, a: &Archive, object: &str) -> u64 {
        let seg = u64::from(a.stanza.segment_size);
        let oldest_start = a.backups.iter().map(|b| b.start_lsn / seg).min();
        let mut gaps = 0;
        for &timeline in a.segments.keys() {
            for (first, last) in a.gaps(timeline) {
                let name = |n| WalFile::Segment { timeline, segno: n }.name(a.stanza.segment_size);
                if oldest_start.is_some_and(|s| last >= s) {
                    gaps += 1;
                    self.report.add(
                        Severity::Error,
                        "wal",
                        object,
                        format!(
                            "timeline {timeline}: {} to {} are missing; a recovery across them stops there",
                            name(first),
                            name(last)
                        ),
                    );
                } else {
                    self.report.add(
                        Severity::Info,
                        "wal",
                        object,
                        format!(
                            "timeline {timeline}: {} to {} are missing, before every base backup (no recovery needs them)",
                            name(first),
                            name(last)
                        ),
                    );
                }
            }
            if timeline > 1 && !a.histories.contains(&timeline) {
                self.report.add(
                    Severity::Error,
                    "wal",
                    object,
                    format!("timeline {timeline} has no .history file; recovery cannot follow it"),
                );
            }
        }
        for b in &a.backups {
            if !a.wal_complete(b) {
                self.report.add(
                    Severity::Error,
                    "wal",
                    format!("snapshots/{}", b.id),
                    "the WAL from this base backup's start to its stop is not all archived: it cannot be recovered",
                );
            }
        }
        gaps
    }

    /// Opens every WAL object of the stanza and checks its content.
    fn read_wal(&self, a: &Archive, object: &str) -> Result<()> {
        let stanza = a.stanza.stanza.as_str();
        let results = parallel_map(&a.files, self.meta_threads, |(_, name, _)| {
            Ok((name.clone(), archive::fetch(self.repo, stanza, name)))
        })?;
        for (name, result) in results {
            match result {
                Ok(_) => {} // read, authenticated, checked; or expired meanwhile
                Err(e) => self.report.failure("wal", &format!("{object}.{name}"), &e),
            }
        }
        Ok(())
    }
}
