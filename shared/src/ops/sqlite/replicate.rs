//! Continuous replication of one database: sync, checkpoint, snapshot.
//!
//! Every `sync_interval` the log is read from where the replica stands;
//! the frames up to its last commit become one segment (one PUT), and a
//! new pin is taken once it is stored. Nothing is read or written when
//! nothing was committed. The replicator runs the checkpoints itself
//! (PASSIVE, under a writer barrier of a few milliseconds, never RESTART)
//! and TRUNCATEs only past `max_wal_bytes`, followed by a snapshot.
//! Snapshots go through the chunk store every `snapshot_interval` when
//! the database changed, so an hourly snapshot costs its changed chunks.
//!
//! On start the replica's head is compared with the database: it resumes
//! only when the log still shows the head's last frame where it was and
//! the pages add up to the head's page sum, or when the log is empty and
//! the database file alone does. Otherwise (the database was restored
//! from elsewhere, lost writes to a power cut, or went on while nobody
//! replicated it) a new lineage starts with a snapshot, and the old one
//! stays restorable within retention.

use super::live::{Image, LiveDb, Tail, TailFrame};
use super::replica::{self, tag, Catalog, Lease, LineageId, LineageObjects};
use crate::error::{Error, Result};
use crate::format::sqlite::{
    CommitMark, FrameCursor, PageSums, SegmentHeader, ShippedFrame, WalHeader, WalPos,
};
use crate::format::time::Timestamp;
use crate::format::wire::SqliteEventRecord;
use crate::ops::metrics::SqliteMetrics;
use crate::ops::put::{put_stream, PutOptions};
use crate::store::repo::Repository;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct ReplicateOptions {
    pub sync_interval: Duration,
    pub snapshot_interval: Duration,
    /// A PASSIVE checkpoint once the log holds this many frames …
    pub checkpoint_frames: u64,
    /// … or this long after the last one, if the log holds any.
    pub checkpoint_interval: Duration,
    /// TRUNCATE (and snapshot) once the `-wal` file is larger than this.
    pub max_wal_bytes: u64,
    pub holder: String,
    pub takeover: bool,
    /// Retention applied after every snapshot (expire.rs), so no separate
    /// cleanup job is needed.
    pub keep_within: Option<Duration>,
}

impl Default for ReplicateOptions {
    fn default() -> Self {
        ReplicateOptions {
            sync_interval: Duration::from_secs(1),
            snapshot_interval: Duration::from_secs(3600),
            checkpoint_frames: 1000,
            checkpoint_interval: Duration::from_secs(60),
            max_wal_bytes: 256 << 20,
            holder: crate::sys::hostname().unwrap_or_else(|| "unknown".into()),
            takeover: false,
            keep_within: None,
        }
    }
}

/// A segment read but not yet stored, and the state once it is.
struct Unshipped {
    header: SegmentHeader,
    frames: Vec<ShippedFrame>,
    sums: PageSums,
    cursor: Option<FrameCursor>,
    pages: u32,
}

/// Replicates one database into one repository.
pub struct Replicator<'r> {
    repo: &'r Repository,
    name: String,
    live: LiveDb,
    opts: ReplicateOptions,
    lease: Lease,
    lineage: LineageId,
    /// The last object written to the lineage.
    seq: u64,
    /// After the last commit the replica holds, in the current log.
    cursor: Option<FrameCursor>,
    sums: PageSums,
    page_size: u32,
    pages: u32,
    unshipped: Option<Box<Unshipped>>,
    last_snapshot: Instant,
    last_snapshot_time: Timestamp,
    changed_since_snapshot: bool,
    last_checkpoint: Instant,
    /// Where the log stood at the last checkpoint: none is due again
    /// until something is committed after it.
    checkpointed_at: Option<WalPos>,
    caught_up_at: Timestamp,
    /// The last round failed.
    failing: bool,
    last_sync: Option<Timestamp>,
    errors: u64,
}

/// What the replica's newest object says about the state it ends at.
struct Head {
    lineage: LineageId,
    seq: u64,
    pos: Option<WalPos>,
    pages: u32,
    page_size: u32,
    sum: u64,
}

fn event(name: &str, what: &str) -> SqliteEventRecord {
    SqliteEventRecord::new(what, name)
}

impl<'r> Replicator<'r> {
    /// Opens the database, takes its lease and finds where the replica
    /// stands: resumes the newest lineage or starts one with a snapshot.
    pub fn start(
        repo: &'r Repository,
        path: &Path,
        name: &str,
        opts: ReplicateOptions,
        events: &mut dyn FnMut(SqliteEventRecord),
    ) -> Result<Replicator<'r>> {
        replica::check_db_name(name)?;
        let mut live = LiveDb::open(path)?;
        live.pin()?;
        let lease = Lease {
            v: 1,
            db: name.to_string(),
            holder: opts.holder.clone(),
            host: crate::sys::hostname().unwrap_or_default(),
            pid: std::process::id(),
            path: std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.to_path_buf())
                .display()
                .to_string(),
            since: Timestamp::now(),
        };
        replica::take_lease(repo, &lease, opts.takeover)?;
        let (page_size, pages) = live.file_pages()?;
        let mut r = Replicator {
            repo,
            name: name.to_string(),
            live,
            opts,
            lease,
            lineage: LineageId::new(Timestamp::now()),
            seq: 0,
            cursor: None,
            sums: PageSums::default(),
            page_size,
            pages,
            unshipped: None,
            last_snapshot: Instant::now(),
            last_snapshot_time: Timestamp::now(),
            changed_since_snapshot: false,
            last_checkpoint: Instant::now(),
            checkpointed_at: None,
            caught_up_at: Timestamp::now(),
            failing: false,
            last_sync: None,
            errors: 0,
        };
        let catalog = Catalog::load(repo)?;
        let newest = catalog
            .lineages(name)
            .and_then(|l| l.iter().next_back())
            .map(|(id, objects)| (id.clone(), objects.clone()));
        let why = match newest {
            None => "no replica yet".to_string(),
            Some((id, objects)) => {
                let resumed = match r.resume(&id, &objects)? {
                    Ok(()) => r.hold_resumed()?,
                    Err(why) => Err(why),
                };
                match resumed {
                    Ok(()) => {
                        let mut e = event(name, "start");
                        e.lineage = Some(id.to_string());
                        e.seq = Some(r.seq);
                        e.message =
                            Some(format!("{}: resumed the replica's lineage", path.display()));
                        events(e);
                        return Ok(r);
                    }
                    Err(why) => why,
                }
            }
        };
        r.new_lineage(&why, events)?;
        let mut e = event(name, "start");
        e.lineage = Some(r.lineage.to_string());
        e.seq = Some(r.seq);
        e.message = Some(format!("{}: a new lineage", path.display()));
        events(e);
        Ok(r)
    }

    fn head(&self, id: &LineageId, objects: &LineageObjects) -> Result<Option<Head>> {
        let seq = objects.last_seq();
        if let Some(seg) = objects.segments.get(&seq) {
            let (header, _) = replica::get_segment(self.repo, &seg.name)?;
            let Some(last) = header.commits.last() else {
                return Ok(None);
            };
            return Ok(Some(Head {
                lineage: id.clone(),
                seq,
                pos: Some(header.to),
                pages: last.pages,
                page_size: header.page_size,
                sum: last.sum,
            }));
        }
        let Some(snap) = objects.snapshots.get(&seq) else {
            return Ok(None);
        };
        let s = self.repo.load_snapshot(&snap.id.to_hex())?;
        let pos = s
            .tags
            .get(tag::POS)
            .and_then(|p| serde_json::from_str::<Option<WalPos>>(p).ok())
            .flatten();
        Ok(Some(Head {
            lineage: id.clone(),
            seq,
            pos,
            pages: snap.pages,
            page_size: snap.page_size,
            sum: snap.sum,
        }))
    }

    /// Resumes lineage `id` when the database provably continues it;
    /// `Ok(Err(why))` when it does not.
    fn resume(
        &mut self,
        id: &LineageId,
        objects: &LineageObjects,
    ) -> Result<std::result::Result<(), String>> {
        let Some(head) = self.head(id, objects)? else {
            return Ok(Err(format!("lineage {id} has no usable head")));
        };
        let wal = super::live::wal_path(self.live.path());
        let current = super::live::read_wal_header(&wal)?;
        // The log still shows the head's last frame where it was.
        let cursor = match (head.pos, current) {
            (Some(p), Some(h)) if p.salt == h.salt && head_frame_in_place(&wal, &h, &p)? => {
                Some(FrameCursor {
                    header: h,
                    frames: p.frames,
                    checksum: p.checksum,
                })
            }
            // No committed frame in the log: the database file is the state.
            (_, h) if !log_has_commits(&wal)? => h.map(FrameCursor::new),
            _ => {
                return Ok(Err(
                    "the database's log does not continue the replica".into()
                ))
            }
        };
        let pages = match &cursor {
            Some(c) if c.frames > 0 => head.pages,
            _ => self.live.file_pages()?.1,
        };
        let mut image = self.live.image(cursor.as_ref(), pages)?;
        std::io::copy(&mut image, &mut std::io::sink())
            .map_err(|e| Error::io(self.live.path(), e))?;
        if pages != head.pages || image.sums().sum() != head.sum {
            return Ok(Err(
                "the database is not in the state the replica ends at (restored from elsewhere, \
                 lost writes, or changed while not replicated)"
                    .into(),
            ));
        }
        self.lineage = head.lineage;
        self.seq = head.seq;
        self.cursor = cursor;
        self.sums = image.sums().clone();
        self.page_size = head.page_size;
        self.pages = pages;
        Ok(Ok(()))
    }

    /// After a resume: until a pin is taken with everything read, a log
    /// restarted meanwhile may have taken frames after the head with it
    /// (the pin taken at open held no read mark if every frame was in the
    /// database file). Under the barrier nothing commits and nothing
    /// restarts: the head must still be in place, the tail is read and a
    /// new pin taken; from then on the pin covers what was read.
    fn hold_resumed(&mut self) -> Result<std::result::Result<(), String>> {
        let mut waited = Duration::ZERO;
        loop {
            let held = self.at_barrier(|r| match r.live.read_tail(r.cursor.as_ref())? {
                Tail::Frames { frames, cursor, .. } => {
                    r.live.pin()?;
                    let tail = if frames.is_empty() {
                        None
                    } else {
                        Some(Box::new(r.segment(frames, cursor)?))
                    };
                    Ok(Some(tail))
                }
                Tail::Restarted(_) | Tail::Broken(_) => Ok(None),
            })?;
            match held {
                Some(Some(tail)) => {
                    self.unshipped = tail;
                    return Ok(Ok(()));
                }
                Some(None) => {
                    return Ok(Err(
                        "the log started over while the replicator was starting".into(),
                    ))
                }
                // The check above runs again afterwards.
                None => self.let_writer_through(&mut waited, " at start")?,
            }
        }
    }

    /// The write lock stayed taken, perhaps by the application's own
    /// FULL/RESTART/TRUNCATE checkpoint waiting for the pin: let the pin go
    /// for a moment so it gets through (only where nothing relies on the
    /// pin: a resync snapshot, or a start that checks again). Gives up
    /// after 30 s.
    fn let_writer_through(&mut self, waited: &mut Duration, during: &str) -> Result<()> {
        if *waited >= Duration::from_secs(30) {
            return Err(Error::Locked {
                lock: None,
                holder: format!(
                    "{}: SQLite's write lock stayed taken for {} s{during}",
                    self.name,
                    waited.as_secs()
                ),
            });
        }
        self.live.unpin();
        std::thread::sleep(Duration::from_millis(50));
        self.live.pin()?;
        *waited += Duration::from_millis(50) + super::live::BARRIER_WAIT;
        Ok(())
    }

    fn new_lineage(&mut self, why: &str, events: &mut dyn FnMut(SqliteEventRecord)) -> Result<()> {
        self.lineage = LineageId::new(Timestamp::now());
        self.seq = 0;
        self.unshipped = None;
        let mut e = event(&self.name, "lineage");
        e.lineage = Some(self.lineage.to_string());
        e.message = Some(why.to_string());
        events(e);
        self.snapshot(true, events)
    }

    /// One round: retry what is unshipped, ship new commits, then
    /// checkpoint or snapshot when due.
    pub fn tick(&mut self, events: &mut dyn FnMut(SqliteEventRecord)) -> Result<()> {
        let result = self.tick_inner(events);
        self.failing = result.is_err();
        // An interrupted round is the stop, not an error: it is retried.
        let reported = match &result {
            Ok(()) | Err(Error::Interrupted) => None,
            Err(e) => Some(e),
        };
        if let Some(e) = reported {
            self.errors += 1;
            let mut ev = event(&self.name, "error");
            ev.lineage = Some(self.lineage.to_string());
            ev.message = Some(e.to_string());
            events(ev);
        }
        result
    }

    fn tick_inner(&mut self, events: &mut dyn FnMut(SqliteEventRecord)) -> Result<()> {
        if !self.ship_unshipped(events)? {
            return Ok(());
        }
        match self.live.read_tail(self.cursor.as_ref())? {
            Tail::Frames {
                frames,
                cursor,
                pending,
            } => {
                if !frames.is_empty() {
                    self.unshipped = Some(Box::new(self.segment(frames, cursor)?));
                    if !self.ship_unshipped(events)? {
                        return Ok(());
                    }
                }
                // Frames after the last commit belong to a transaction
                // still open in the application: not lag.
                let _ = pending;
                self.caught_up_at = Timestamp::now();
                self.live.pin()?;
                self.last_sync = Some(Timestamp::now());
            }
            Tail::Restarted(header) => {
                // Proven safe by the pin (see live.rs): the old log was
                // read to its end. Go on in the new one at once.
                self.cursor = header.map(FrameCursor::new);
                return self.tick_inner(events);
            }
            Tail::Broken(why) => {
                let mut e = event(&self.name, "snapshot");
                e.message = Some(format!("continuity in doubt: {why}"));
                events(e);
                return self.snapshot(true, events);
            }
        }
        self.maintain(events)
    }

    fn maintain(&mut self, events: &mut dyn FnMut(SqliteEventRecord)) -> Result<()> {
        let wal_bytes = self.live.wal_len();
        if wal_bytes > self.opts.max_wal_bytes {
            // Commits since the last read may be gone from the log with
            // it: the snapshot, not a segment, carries them.
            let done = self.live.checkpoint_truncate()?;
            self.checkpoint_event("TRUNCATE", done, events);
            return self.snapshot(true, events);
        }
        let frames = self.cursor.map_or(0, |c| c.frames);
        let moved = self.cursor.as_ref().map(WalPos::of) != self.checkpointed_at;
        let due = moved
            && (frames >= self.opts.checkpoint_frames
                || (frames > 0 && self.last_checkpoint.elapsed() >= self.opts.checkpoint_interval));
        if self.changed_since_snapshot
            && self.last_snapshot.elapsed() >= self.opts.snapshot_interval
        {
            return self.snapshot(false, events);
        }
        if due {
            self.barrier_checkpoint(events)?;
        }
        Ok(())
    }

    fn checkpoint_event(
        &mut self,
        mode: &str,
        done: super::live::Checkpointed,
        events: &mut dyn FnMut(SqliteEventRecord),
    ) {
        self.last_checkpoint = Instant::now();
        let mut e = event(&self.name, "checkpoint");
        e.frames = Some(done.log_frames.max(0) as u64);
        e.message = Some(format!(
            "{mode}: {} of {} frames copied{}",
            done.checkpointed_frames,
            done.log_frames,
            if done.busy { " (busy)" } else { "" }
        ));
        events(e);
    }

    /// Reads the tail and checkpoints under the barrier; the tail is
    /// stored after the barrier is gone.
    fn barrier_checkpoint(&mut self, events: &mut dyn FnMut(SqliteEventRecord)) -> Result<()> {
        let Some((tail, done)) = self.at_barrier(|r| {
            let tail = r.read_at_barrier()?;
            let done = r.live.checkpoint_passive()?;
            Ok((tail, done))
        })?
        else {
            return Ok(());
        };
        self.checkpoint_event("PASSIVE", done, events);
        match tail {
            AtBarrier::Tail(Some(ref u)) => {
                self.checkpointed_at = u.cursor.as_ref().map(WalPos::of)
            }
            AtBarrier::Tail(None) => self.checkpointed_at = self.cursor.as_ref().map(WalPos::of),
            AtBarrier::Lost(_) => {}
        }
        match tail {
            AtBarrier::Tail(u) => {
                self.unshipped = u;
                self.ship_unshipped(events)?;
                Ok(())
            }
            AtBarrier::Lost(why) => {
                let mut e = event(&self.name, "snapshot");
                e.message = Some(format!("continuity in doubt: {why}"));
                events(e);
                self.snapshot(false, events)
            }
        }
    }

    /// Runs `f` while nothing can commit; `None` when the write lock could
    /// not be had at once (see [`LiveDb::raise_barrier`]): the caller tries
    /// again next round, and the pin moves on meanwhile.
    fn at_barrier<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<Option<T>> {
        if !self.live.raise_barrier()? {
            return Ok(None);
        }
        let result = f(self);
        self.live.lift_barrier();
        result.map(Some)
    }

    /// Everything committed, read under the barrier.
    fn read_at_barrier(&mut self) -> Result<AtBarrier> {
        let mut cursor = self.cursor;
        for _ in 0..2 {
            match self.live.read_tail(cursor.as_ref())? {
                Tail::Frames {
                    frames,
                    cursor: end,
                    ..
                } => {
                    if frames.is_empty() {
                        self.cursor = end.or(self.cursor);
                        return Ok(AtBarrier::Tail(None));
                    }
                    self.cursor = cursor;
                    return Ok(AtBarrier::Tail(Some(Box::new(self.segment(frames, end)?))));
                }
                Tail::Restarted(h) => cursor = h.map(FrameCursor::new),
                Tail::Broken(why) => return Ok(AtBarrier::Lost(why)),
            }
        }
        Ok(AtBarrier::Lost(
            "the log restarted twice under the barrier".into(),
        ))
    }

    /// Stores what is unshipped; `false` when it could not be (it stays
    /// for the next round, and the pin stays where it is).
    fn ship_unshipped(&mut self, events: &mut dyn FnMut(SqliteEventRecord)) -> Result<bool> {
        let Some(u) = self.unshipped.take() else {
            return Ok(true);
        };
        match replica::put_segment(self.repo, &u.header, &u.frames) {
            Ok(stored) => {
                let mut e = event(&self.name, "sync");
                e.lineage = Some(self.lineage.to_string());
                e.seq = Some(u.header.seq);
                e.frames = Some(u.frames.len() as u64);
                e.commits = Some(u.header.commits.len() as u64);
                e.stored = Some(stored);
                events(e);
                self.seq = u.header.seq;
                self.sums = u.sums;
                self.cursor = u.cursor;
                self.pages = u.pages;
                self.changed_since_snapshot = true;
                Ok(true)
            }
            Err(err) => {
                self.unshipped = Some(u);
                Err(err)
            }
        }
    }

    /// The next segment: `frames` (up to a commit) after the cursor.
    fn segment(&self, frames: Vec<TailFrame>, end: Option<FrameCursor>) -> Result<Unshipped> {
        let end = end.ok_or_else(|| Error::internal("building a segment", "no end position"))?;
        let from = match self.cursor {
            Some(c) if c.header.salt == end.header.salt => WalPos::of(&c),
            _ => WalPos::of(&FrameCursor::new(end.header)),
        };
        let page_size = end.header.page_size;
        let mut sums = self.sums.clone();
        let mut pages = self.pages;
        let mut commits = Vec::new();
        let mut shipped = Vec::with_capacity(frames.len());
        let now = Timestamp::now();
        for (i, f) in frames.into_iter().enumerate() {
            sums.set(f.header.page, &f.data);
            if f.header.is_commit() {
                pages = f.header.commit_size;
                sums.truncate(pages, page_size);
                commits.push(CommitMark {
                    end: i as u32 + 1,
                    time: now,
                    pages,
                    sum: sums.sum(),
                });
            }
            shipped.push(ShippedFrame {
                page: f.header.page,
                data: f.data,
            });
        }
        Ok(Unshipped {
            header: SegmentHeader {
                v: 1,
                db: self.name.clone(),
                lineage: self.lineage.to_string(),
                seq: self.seq + 1,
                page_size,
                from,
                to: WalPos::of(&end),
                commits,
            },
            frames: shipped,
            sums,
            cursor: Some(end),
            pages,
        })
    }

    /// A snapshot of the state at a barrier: the tail is read, the log's
    /// end and size noted and the log checkpointed under it; the tail is
    /// stored and the image streamed after it. With `resync` (a new
    /// lineage, or continuity lost) the tail is not shipped: the image
    /// holds it, and its page sum becomes the lineage's from here on.
    fn snapshot(&mut self, resync: bool, events: &mut dyn FnMut(SqliteEventRecord)) -> Result<()> {
        let first = resync;
        let started = Instant::now();
        let mut waited = Duration::ZERO;
        let (tail, done, end, pages) = loop {
            let attempt = self.at_barrier(|r| {
                if first {
                    // A new lineage: every frame of the log is in the image.
                    r.cursor = None;
                }
                let tail = r.read_at_barrier()?;
                let end = match &tail {
                    AtBarrier::Tail(Some(u)) => u.cursor,
                    AtBarrier::Tail(None) => r.cursor,
                    AtBarrier::Lost(_) => match r.live.read_tail(None)? {
                        Tail::Frames { cursor, .. } => cursor,
                        _ => None,
                    },
                };
                let pages = match (&tail, end) {
                    (AtBarrier::Tail(Some(u)), _) => u.pages,
                    (_, Some(c)) if c.frames > 0 => last_commit_size(r.live.path(), &c)?,
                    _ => r.live.file_pages()?.1,
                };
                let done = r.live.checkpoint_passive()?;
                Ok((tail, done, end, pages))
            })?;
            match attempt {
                Some(done) => break done,
                // A resync snapshot needs no pin held: let the application's
                // checkpoint through, then try again.
                None if resync => {
                    self.let_writer_through(&mut waited, "; no snapshot was taken")?
                }
                None => return Ok(()),
            }
        };
        self.checkpoint_event("PASSIVE", done, events);
        let trusted = !first && matches!(tail, AtBarrier::Tail(_));
        if let (AtBarrier::Tail(u), false) = (tail, first) {
            self.unshipped = u;
            self.ship_unshipped(events)?;
        }
        self.cursor = end;
        self.checkpointed_at = end.as_ref().map(WalPos::of);
        // Every frame in the database file: the file alone is the state
        // (and the pin, holding no read mark, keeps checkpoints out of it).
        // Otherwise the pin holds the log's frames up to `end` in place.
        let whole = done.log_frames == done.checkpointed_frames;
        let image_upto = if whole { None } else { end };
        let mut image = self.live.image(image_upto.as_ref(), pages)?;
        let page_size = image.page_size();
        let seq = self.seq + 1;
        let late = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tags = BTreeMap::new();
        tags.insert(tag::DB.to_string(), self.name.clone());
        tags.insert(tag::LINEAGE.to_string(), self.lineage.to_string());
        tags.insert(tag::SEQ.to_string(), seq.to_string());
        tags.insert(tag::PAGES.to_string(), pages.to_string());
        tags.insert(tag::PAGE_SIZE.to_string(), page_size.to_string());
        tags.insert(
            tag::POS.to_string(),
            serde_json::to_string(&self.cursor.as_ref().map(WalPos::of))
                .map_err(|e| Error::internal("tagging a snapshot", e))?,
        );
        let time = Timestamp::now();
        let opts = PutOptions {
            identity: Some(format!("sqlite:{}", self.name)),
            tags,
            late_tags: Some(Arc::clone(&late)),
            time: Some(time),
            threads: 2,
            // One chunk per page: scattered page changes then cost their
            // pages, not the ~1 MiB content-defined chunks around them.
            fixed_chunks: Some(page_size),
            progress: None,
        };
        // The sum is known once the image has been read.
        let outcome = {
            let summed = SumTagging {
                image: &mut image,
                late: &late,
            };
            put_stream(self.repo, &self.name, summed, &opts)?
        };
        let sums = image.sums().clone();
        if trusted && (sums.sum() != self.sums.sum() || pages != self.pages) {
            return Err(Error::integrity(
                crate::error::Subject::object(
                    crate::layout::ObjectKind::Sqlite,
                    self.name.as_str(),
                ),
                "the snapshot's pages do not add up to the replicated state",
            ));
        }
        self.seq = seq;
        self.sums = sums;
        self.pages = pages;
        self.page_size = page_size;
        self.last_snapshot = Instant::now();
        self.last_snapshot_time = time;
        self.changed_since_snapshot = false;
        self.caught_up_at = Timestamp::now();
        let mut e = event(&self.name, "snapshot");
        e.lineage = Some(self.lineage.to_string());
        e.seq = Some(seq);
        e.stored = outcome.snapshot.stored_bytes;
        e.message = Some(format!(
            "{} pages of {page_size} bytes in {:.2} s",
            pages,
            started.elapsed().as_secs_f64()
        ));
        events(e);
        match self.opts.keep_within {
            Some(window) => self.apply_retention(window, events),
            None => Ok(()),
        }
    }

    fn apply_retention(
        &mut self,
        window: Duration,
        events: &mut dyn FnMut(SqliteEventRecord),
    ) -> Result<()> {
        let catalog = Catalog::load(self.repo)?;
        // Replicating now: the newest state is now.
        let newest = BTreeMap::from([(self.name.clone(), Timestamp::now())]);
        let steps =
            super::expire::plan(&catalog, std::slice::from_ref(&self.name), window, &newest);
        if steps.is_empty() {
            return Ok(());
        }
        super::expire::execute(self.repo, &steps, &mut |_| Ok(()))?;
        let deleted = steps
            .iter()
            .filter(|s| matches!(s, super::expire::Step::Delete { .. }))
            .count();
        let mut e = event(&self.name, "retention");
        e.lineage = Some(self.lineage.to_string());
        e.message = Some(format!(
            "removed {deleted} segments and {} snapshots outside the last {} s",
            steps.len() - deleted,
            window.as_secs()
        ));
        events(e);
        Ok(())
    }

    /// Ships what is committed (a clean stop), then gives the lease back.
    pub fn stop(mut self, events: &mut dyn FnMut(SqliteEventRecord)) -> Result<()> {
        let mut last = Ok(());
        for _ in 0..3 {
            last = self.tick_inner(events);
            if last.is_ok() && self.unshipped.is_none() {
                break;
            }
        }
        replica::release_lease(self.repo, &self.lease)?;
        let mut e = event(&self.name, "stop");
        e.lineage = Some(self.lineage.to_string());
        e.seq = Some(self.seq);
        events(e);
        last
    }

    pub fn metrics(&self) -> SqliteMetrics {
        let now = Timestamp::now();
        let secs = |t: Timestamp| (now.as_nanos() - t.as_nanos()) as f64 / 1e9;
        let behind = self.unshipped.is_some() || self.failing;
        SqliteMetrics {
            db: self.name.clone(),
            lag_seconds: if behind {
                secs(self.caught_up_at).max(0.0)
            } else {
                0.0
            },
            last_sync: self.last_sync.map(|t| t.as_nanos() as f64 / 1e9),
            wal_bytes: self.live.wal_len(),
            snapshot_age_seconds: Some(secs(self.last_snapshot_time)),
            errors_total: self.errors,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

enum AtBarrier {
    Tail(Option<Box<Unshipped>>),
    Lost(String),
}

/// Adds the page sum to the snapshot's tags once the image is read.
struct SumTagging<'a, 'i> {
    image: &'a mut Image<'i>,
    late: &'a Arc<Mutex<BTreeMap<String, String>>>,
}

impl std::io::Read for SumTagging<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.image.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.late.lock().unwrap_or_else(|p| p.into_inner()).insert(
                tag::SUM.to_string(),
                format!("{:016x}", self.image.sums().sum()),
            );
        }
        Ok(n)
    }
}

fn head_frame_in_place(wal: &Path, h: &WalHeader, p: &WalPos) -> Result<bool> {
    if p.frames == 0 {
        return Ok(true);
    }
    let f = std::fs::File::open(wal).map_err(|e| Error::io(wal, e))?;
    let last = super::live::frame_header_at(&f, h, p.frames - 1).map_err(|e| Error::io(wal, e))?;
    Ok(last.is_some_and(|fh| fh.salt == p.salt && fh.checksum == p.checksum && fh.is_commit()))
}

fn log_has_commits(wal: &Path) -> Result<bool> {
    Ok(match super::live::read_tail_at(wal)? {
        Tail::Frames { frames, .. } => !frames.is_empty(),
        _ => false,
    })
}

/// The database's size after the commit `c` ends at.
fn last_commit_size(db: &Path, c: &FrameCursor) -> Result<u32> {
    let wal = super::live::wal_path(db);
    let f = std::fs::File::open(&wal).map_err(|e| Error::io(&wal, e))?;
    super::live::frame_header_at(&f, &c.header, c.frames - 1)
        .map_err(|e| Error::io(&wal, e))?
        .filter(|h| h.is_commit())
        .map(|h| h.commit_size)
        .ok_or_else(|| Error::io(&wal, std::io::Error::other("the log changed under the pin")))
}

/// Every database to replicate: its path and its name in the repository.
#[derive(Debug, Clone)]
pub struct Target {
    pub path: PathBuf,
    pub name: String,
}

/// What the replicator threads tell the one that prints.
enum Report {
    Event(SqliteEventRecord),
    Metrics(SqliteMetrics),
    Done(Result<()>),
}

/// Replicates `targets` until SIGINT/SIGTERM (or `stop` is set), one
/// thread per database; every event goes to `emit` and, with `metrics`,
/// the figures of every database are rewritten after each round. A clean
/// stop ships what is committed and returns `Ok`. A database that cannot
/// be started stops them all: a sidecar with a wrong argument should fail
/// at once, not run half its job.
pub fn run(
    repo: &Repository,
    targets: &[Target],
    opts: &ReplicateOptions,
    metrics: Option<&Path>,
    emit: &mut dyn FnMut(&SqliteEventRecord) -> Result<()>,
) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for t in targets {
        replica::check_db_name(&t.name)?;
        if !names.insert(t.name.as_str()) {
            return Err(Error::Usage(format!(
                "two databases would be replicated as {:?}: give each a --name",
                t.name
            )));
        }
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = crossbeam_channel::unbounded::<Report>();
    let location = repo.backend().location();
    std::thread::scope(|scope| {
        for t in targets {
            let tx = tx.clone();
            let stop = &stop;
            scope.spawn(move || {
                let result = replicate_one(repo, t, opts, stop, &tx);
                let _ = tx.send(Report::Done(result));
            });
        }
        drop(tx);
        let mut figures: BTreeMap<String, SqliteMetrics> = BTreeMap::new();
        let mut first_error = None;
        let mut last_write = Instant::now() - Duration::from_secs(60);
        for report in rx {
            match report {
                Report::Event(e) => {
                    if let Err(err) = emit(&e) {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        first_error.get_or_insert(err);
                    }
                }
                Report::Metrics(m) => {
                    figures.insert(m.db.clone(), m);
                    if let Some(path) =
                        metrics.filter(|_| last_write.elapsed() >= Duration::from_millis(500))
                    {
                        let all: Vec<_> = figures.values().cloned().collect();
                        let text = crate::ops::metrics::render_sqlite(&location, &all);
                        if let Err(e) = crate::ops::metrics::write_atomic(path, &text) {
                            log::warn!("writing metrics: {e}");
                        }
                        last_write = Instant::now();
                    }
                }
                Report::Done(Err(e)) => {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
                Report::Done(Ok(())) => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    })
}

fn replicate_one(
    repo: &Repository,
    target: &Target,
    opts: &ReplicateOptions,
    stop: &std::sync::atomic::AtomicBool,
    tx: &crossbeam_channel::Sender<Report>,
) -> Result<()> {
    use std::sync::atomic::Ordering;
    let mut emit = |e: SqliteEventRecord| {
        let _ = tx.send(Report::Event(e));
    };
    let stopping =
        || stop.load(Ordering::Relaxed) || crate::sys::interrupted().load(Ordering::Relaxed);
    // A sidecar may start before its application has created the
    // database: wait for it (as the application's first start would).
    if !target.path.exists() {
        let mut e = SqliteEventRecord::new("waiting", &target.name);
        e.message = Some(format!("{} does not exist yet", target.path.display()));
        emit(e);
        while !target.path.exists() {
            if stopping() {
                return Ok(());
            }
            std::thread::sleep(opts.sync_interval.min(Duration::from_secs(1)));
        }
    }
    // A SIGTERM during the start (a Kubernetes pod stopped while its
    // sidecar takes the first snapshot) finishes the start once more with
    // the flag cleared, then ships and stops like any other SIGTERM; a
    // second signal during that retry is obeyed at once.
    let mut retried = false;
    let mut r = loop {
        match Replicator::start(repo, &target.path, &target.name, opts.clone(), &mut emit) {
            Err(Error::Interrupted)
                if !retried && crate::sys::interrupted().swap(false, Ordering::Relaxed) =>
            {
                retried = true;
                stop.store(true, Ordering::Relaxed);
            }
            started => break started?,
        }
    };
    while !stopping() {
        let next = Instant::now() + opts.sync_interval;
        // A failed round is reported as an event and retried next round.
        let _ = r.tick(&mut emit);
        let _ = tx.send(Report::Metrics(r.metrics()));
        while !stopping() {
            let left = next.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
    // SIGTERM asks the replicator to ship what is committed and stop: the
    // flag that makes every library call give up is cleared for that last
    // round (a second signal sets it again, and that one is obeyed).
    if crate::sys::interrupted().swap(false, Ordering::Relaxed) {
        stop.store(true, Ordering::Relaxed);
    }
    r.stop(&mut emit)
}
