//! The live database, as bk-sqlite sees it beside the application: its own
//! connections (never the application's), and the `-wal` file read
//! directly.
//!
//! Three connections. Two take turns holding a *pin*: a read transaction
//! that keeps SQLite from checkpointing past the frames it saw and from
//! starting the log over while it reads from the log. A new pin is always
//! taken before the old one is let go, so from the moment replication
//! starts there is never an instant without one. The third, `ctl`, is the
//! *writer barrier*: `BEGIN IMMEDIATE` holds SQLite's write lock for the
//! few milliseconds it takes to read the log's tail and checkpoint, so
//! nothing commits in between.
//!
//! Why the pin makes a restarted log safe: SQLite starts the log over only
//! when every frame in it is in the database file and no reader holds a
//! read mark into the log. A pin taken while unshipped frames exist holds
//! such a mark, so the log cannot restart before the next pin; a pin that
//! holds none was taken when every frame had been checkpointed — and the
//! previous pin, still held then, had kept the checkpoint from passing
//! frames the replicator had not read. So whenever the log restarts, the
//! replicator had read the old one to its end.

use crate::error::{Error, Result};
use crate::format::sqlite::{
    FrameCursor, FrameHeader, WalHeader, FRAME_HEADER_LEN, WAL_HEADER_LEN,
};
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a pin or checkpoint waits on SQLite's locks.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the writer barrier waits for SQLite's write lock.
pub const BARRIER_WAIT: Duration = Duration::from_millis(100);

/// The SQLite bk-sqlite is built with must not have the WAL-reset bug of
/// 3.51.2 and earlier, which a checkpointing sidecar triggers.
pub const MIN_SQLITE_VERSION: i32 = 3_051_003;

fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    Error::io(path, std::io::Error::other(e.to_string()))
}

/// One database being replicated.
pub struct LiveDb {
    path: PathBuf,
    wal_path: PathBuf,
    pins: [Connection; 2],
    /// Which of `pins` holds the pin now.
    pinned: Option<usize>,
    ctl: Connection,
    /// `ctl` holds the write lock.
    barrier: bool,
    /// The database file, opened once and closed only after the
    /// connections (fields drop in order): closing *any* descriptor of a
    /// file drops every POSIX lock this process holds on it, SQLite's
    /// included, and without its SHARED lock an application closing its
    /// last connection checkpoints and deletes the log under the pin. A
    /// test caught exactly that: the last commit lost with the `-wal`.
    db_file: std::fs::File,
}

/// What a checkpoint did (SQLite's `wal_checkpoint` row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    pub busy: bool,
    pub log_frames: i64,
    pub checkpointed_frames: i64,
}

impl Checkpointed {
    /// Every frame of the log is in the database file.
    pub fn complete(&self) -> bool {
        !self.busy && self.log_frames == self.checkpointed_frames
    }
}

fn open_connection(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sql_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error(path, e))?;
    Ok(conn)
}

impl LiveDb {
    /// Opens `path`, which must exist and be in WAL mode. Nothing is
    /// written to it.
    pub fn open(path: &Path) -> Result<LiveDb> {
        if rusqlite::version_number() < MIN_SQLITE_VERSION {
            return Err(Error::internal(
                "opening a database",
                format!(
                    "built with SQLite {}, need 3.51.3 or later",
                    rusqlite::version()
                ),
            ));
        }
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!("{} is not a file", path.display())));
        }
        let db_file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let ctl = open_connection(path)?;
        ctl.busy_timeout(BARRIER_WAIT)
            .map_err(|e| sql_error(path, e))?;
        let mode: String = ctl
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| sql_error(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Usage(format!(
                "{} is in journal_mode {mode}, not WAL: bk-sqlite replicates the write-ahead log \
                 (switch it once with `sqlite3 {} 'PRAGMA journal_mode=WAL'` while no application \
                 has it open, or pass --set-wal)",
                path.display(),
                path.display()
            )));
        }
        Ok(LiveDb {
            path: path.to_path_buf(),
            wal_path: wal_path(path),
            pins: [open_connection(path)?, open_connection(path)?],
            pinned: None,
            ctl,
            barrier: false,
            db_file,
        })
    }

    /// Switches a database to WAL mode (`--set-wal`): the one change to a
    /// user's database bk-sqlite makes, and only when asked.
    pub fn set_wal_mode(path: &Path) -> Result<()> {
        let conn = open_connection(path)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| sql_error(path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Usage(format!(
                "{} stayed in journal_mode {mode} (another process has it open?)",
                path.display()
            )));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes a new pin, then lets the old one go.
    pub fn pin(&mut self) -> Result<()> {
        let next = match self.pinned {
            Some(i) => 1 - i,
            None => 0,
        };
        let conn = &self.pins[next];
        conn.execute_batch("BEGIN")
            .map_err(|e| sql_error(&self.path, e))?;
        let read = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        });
        if let Err(e) = read {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(sql_error(&self.path, e));
        }
        if let Some(old) = self.pinned.replace(next) {
            let _ = self.pins[old].execute_batch("ROLLBACK");
        }
        Ok(())
    }

    /// Lets every pin go: under the barrier before a checkpoint, or when
    /// the replicator gives up its place in the log and resynchronizes.
    pub fn unpin(&mut self) {
        if let Some(old) = self.pinned.take() {
            let _ = self.pins[old].execute_batch("ROLLBACK");
        }
    }

    /// Takes SQLite's write lock: nothing commits until
    /// [`LiveDb::lift_barrier`]. `false` when the lock stays taken for
    /// [`BARRIER_WAIT`]: the application is writing, or its own FULL,
    /// RESTART or TRUNCATE checkpoint holds the lock and waits for the
    /// pin to move on — waiting longer here, pinned, would stall it (and
    /// every writer behind it) until one side's timeout.
    pub fn raise_barrier(&mut self) -> Result<bool> {
        match self.ctl.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                self.barrier = true;
                Ok(true)
            }
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy =>
            {
                Ok(false)
            }
            Err(e) => Err(sql_error(&self.path, e)),
        }
    }

    pub fn lift_barrier(&mut self) {
        if std::mem::take(&mut self.barrier) {
            let _ = self.ctl.execute_batch("ROLLBACK");
        }
    }

    /// A PASSIVE checkpoint under the barrier the caller holds: the pins
    /// are let go (nothing can commit), the log is copied into the
    /// database as far as the application's readers allow, and a new pin
    /// is taken before the barrier goes.
    pub fn checkpoint_passive(&mut self) -> Result<Checkpointed> {
        if !self.barrier {
            return Err(Error::internal("checkpointing", "no writer barrier"));
        }
        self.unpin();
        let done = self.checkpoint("PASSIVE", 0);
        self.pin()?;
        done
    }

    /// A TRUNCATE checkpoint (the log grew past its maximum): it waits for
    /// the application's readers and writer, so it runs without the
    /// barrier, and the caller takes a snapshot after it.
    pub fn checkpoint_truncate(&mut self) -> Result<Checkpointed> {
        self.unpin();
        let done = self.checkpoint("TRUNCATE", 0);
        self.pin()?;
        done
    }

    fn checkpoint(&self, mode: &str, conn: usize) -> Result<Checkpointed> {
        self.pins[conn]
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok(Checkpointed {
                    busy: r.get::<_, i64>(0)? != 0,
                    log_frames: r.get(1)?,
                    checkpointed_frames: r.get(2)?,
                })
            })
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Bytes in the `-wal` file now (0 when there is none).
    pub fn wal_len(&self) -> u64 {
        std::fs::metadata(&self.wal_path).map_or(0, |m| m.len())
    }

    /// Reads the log from `cursor` (or from its start, `None`): the frames
    /// up to the last commit, in order.
    pub fn read_tail(&self, cursor: Option<&FrameCursor>) -> Result<Tail> {
        read_tail(&self.wal_path, cursor)
    }

    /// The database's state under the current pin, for a snapshot: the
    /// database file with the log's frames up to `upto` laid over it.
    pub fn image(&self, upto: Option<&FrameCursor>, pages: u32) -> Result<Image<'_>> {
        Image::open(&self.db_file, &self.path, &self.wal_path, upto, pages)
    }

    /// Page size and pages of the database file (see [`db_file_pages`]).
    pub fn file_pages(&self) -> Result<(u32, u32)> {
        db_file_pages(&self.db_file, &self.path)
    }
}

/// The `-wal` file beside a database.
pub fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// A committed frame read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailFrame {
    pub header: FrameHeader,
    pub data: Vec<u8>,
}

/// What reading the log from a position found.
#[derive(Debug)]
pub enum Tail {
    /// The same log, perhaps with new committed frames; `cursor` stands
    /// after the last commit read. `pending` counts frames after it that
    /// belong to a transaction still being written.
    Frames {
        frames: Vec<TailFrame>,
        cursor: Option<FrameCursor>,
        pending: u64,
    },
    /// The log was started over (new salts, or emptied): the new log's
    /// header, if it has one yet.
    Restarted(Option<WalHeader>),
    /// The log is the same one but no longer shows the frames already
    /// read where they were: continuity cannot be proven.
    Broken(String),
}

fn read_header(file: &mut std::fs::File) -> std::io::Result<Option<WalHeader>> {
    let mut buf = [0u8; WAL_HEADER_LEN];
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..])? {
            0 => return Ok(None),
            n => got += n,
        }
    }
    Ok(WalHeader::parse(&buf).ok())
}

/// The whole log's committed frames (no pin needed: a check, not a copy).
pub fn read_tail_at(wal: &Path) -> Result<Tail> {
    read_tail(wal, None)
}

fn read_tail(wal: &Path, cursor: Option<&FrameCursor>) -> Result<Tail> {
    let mut file = match std::fs::File::open(wal) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(match cursor {
                Some(_) => Tail::Restarted(None),
                None => Tail::Frames {
                    frames: Vec::new(),
                    cursor: None,
                    pending: 0,
                },
            })
        }
        Err(e) => return Err(Error::io(wal, e)),
    };
    let header = read_header(&mut file).map_err(|e| Error::io(wal, e))?;
    let mut at = match (cursor, header) {
        (Some(c), Some(h)) if h.salt == c.header.salt => *c,
        (Some(_), h) => return Ok(Tail::Restarted(h)),
        (None, Some(h)) => FrameCursor::new(h),
        (None, None) => {
            return Ok(Tail::Frames {
                frames: Vec::new(),
                cursor: None,
                pending: 0,
            })
        }
    };
    if at.frames > 0 {
        if let Some(problem) = last_frame_moved(&file, &at).map_err(|e| Error::io(wal, e))? {
            return Ok(Tail::Broken(problem));
        }
    }
    let frame_len = at.header.frame_len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(at.offset()))
        .map_err(|e| Error::io(wal, e))?;
    let mut frames = Vec::new();
    let mut committed = at;
    let mut committed_len = 0;
    let mut buf = vec![0u8; frame_len];
    loop {
        match reader.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(Error::io(wal, e)),
        }
        let Some(header) = at.accept(&buf) else { break };
        frames.push(TailFrame {
            header,
            data: buf[FRAME_HEADER_LEN..].to_vec(),
        });
        if header.is_commit() {
            committed = at;
            committed_len = frames.len();
        }
    }
    let pending = (frames.len() - committed_len) as u64;
    frames.truncate(committed_len);
    Ok(Tail::Frames {
        frames,
        cursor: Some(committed),
        pending,
    })
}

/// The header of frame `index` (from 0) of the log `header` starts, as
/// the file holds it now; `None` past the file's end.
pub fn frame_header_at(
    file: &std::fs::File,
    header: &WalHeader,
    index: u64,
) -> std::io::Result<Option<FrameHeader>> {
    let mut head = [0u8; FRAME_HEADER_LEN];
    let n = crate::sys::read_at_most(file, &mut head, header.frame_offset(index))?;
    Ok(if n < FRAME_HEADER_LEN {
        None
    } else {
        FrameHeader::parse(&head)
    })
}

/// The header of the log in `wal`, if the file has a valid one.
pub fn read_wal_header(wal: &Path) -> Result<Option<WalHeader>> {
    match std::fs::File::open(wal) {
        Ok(mut f) => read_header(&mut f).map_err(|e| Error::io(wal, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(wal, e)),
    }
}

/// Whether the last frame read before is no longer where it was (the file
/// shrank, or the frame there now carries another checksum).
fn last_frame_moved(file: &std::fs::File, at: &FrameCursor) -> std::io::Result<Option<String>> {
    let Some(h) = frame_header_at(file, &at.header, at.frames - 1)? else {
        return Ok(Some(format!(
            "the log is shorter than the {} frames already read",
            at.frames
        )));
    };
    if h.salt == at.header.salt && h.checksum == at.checksum {
        Ok(None)
    } else {
        Ok(Some(format!(
            "frame {} of the log is not the one read before",
            at.frames
        )))
    }
}

/// A database image streamed page by page: the database file with the
/// newest log frame of each page (up to a position) laid over it, cut to
/// the committed size. Read under a pin, so neither file changes under it
/// where it matters: a checkpoint copies only frames the pin can see (the
/// same bytes the overlay gives), and the log cannot start over while the
/// pin reads from it.
pub struct Image<'a> {
    db: &'a std::fs::File,
    wal: Option<std::fs::File>,
    page_size: u32,
    pages: u32,
    overlay: HashMap<u32, u64>,
    next_page: u32,
    page: Vec<u8>,
    in_page: usize,
    sums: crate::format::sqlite::PageSums,
}

impl<'a> Image<'a> {
    fn open(
        db: &'a std::fs::File,
        db_path: &Path,
        wal_path: &Path,
        upto: Option<&FrameCursor>,
        pages: u32,
    ) -> Result<Image<'a>> {
        let mut first = [0u8; 100];
        crate::sys::read_at_most(db, &mut first, 0).map_err(|e| Error::io(db_path, e))?;
        let mut page_size = crate::format::sqlite::DbHeader::parse(&first)
            .map(|h| h.page_size)
            .map_err(|p| Error::Usage(format!("{}: {p}", db_path.display())))?;
        let mut overlay = HashMap::new();
        let mut wal = None;
        if let Some(upto) = upto.filter(|c| c.frames > 0) {
            page_size = upto.header.page_size;
            let file = std::fs::File::open(wal_path).map_err(|e| Error::io(wal_path, e))?;
            for i in 0..upto.frames {
                let offset = upto.header.frame_offset(i);
                let h = frame_header_at(&file, &upto.header, i)
                    .map_err(|e| Error::io(wal_path, e))?
                    .filter(|h| h.salt == upto.header.salt)
                    .ok_or_else(|| {
                        Error::io(
                            wal_path,
                            std::io::Error::other("the log changed under the pin"),
                        )
                    })?;
                overlay.insert(h.page, offset + FRAME_HEADER_LEN as u64);
            }
            wal = Some(file);
        }
        Ok(Image {
            db,
            wal,
            page_size,
            pages,
            overlay,
            next_page: 1,
            page: Vec::new(),
            in_page: 0,
            sums: Default::default(),
        })
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The sums of the pages read so far (all of them, once read to the end).
    pub fn sums(&self) -> &crate::format::sqlite::PageSums {
        &self.sums
    }

    fn load_page(&mut self) -> std::io::Result<()> {
        let n = self.next_page;
        self.page.clear();
        self.page.resize(self.page_size as usize, 0);
        let (file, offset) = match (self.overlay.get(&n), &self.wal) {
            (Some(&offset), Some(wal)) => (wal, offset),
            _ => (self.db, (n as u64 - 1) * self.page_size as u64),
        };
        crate::sys::read_at_most(file, &mut self.page, offset)?;
        self.sums.set(n, &self.page);
        self.next_page += 1;
        self.in_page = 0;
        Ok(())
    }
}

impl Read for Image<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.in_page == self.page.len() {
            if self.next_page > self.pages {
                return Ok(0);
            }
            self.load_page()?;
        }
        let n = out.len().min(self.page.len() - self.in_page);
        out[..n].copy_from_slice(&self.page[self.in_page..self.in_page + n]);
        self.in_page += n;
        Ok(n)
    }
}

/// Pages in the database file when the log holds none of its frames: the
/// header's size when SQLite vouches for it (its "version-valid-for"
/// equals the change counter), else the file's length.
/// `file` is the database's descriptor the caller keeps open (see
/// [`LiveDb`] on why no other may be opened and closed).
pub fn db_file_pages(file: &std::fs::File, path: &Path) -> Result<(u32, u32)> {
    let mut first = [0u8; 100];
    crate::sys::read_at_most(file, &mut first, 0).map_err(|e| Error::io(path, e))?;
    let header = crate::format::sqlite::DbHeader::parse(&first)
        .map_err(|p| Error::Usage(format!("{}: {p}", path.display())))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let by_len = (len / header.page_size as u64) as u32;
    let vouched = first[24..28] == first[92..96] && header.pages > 0;
    Ok((
        header.page_size,
        if vouched { header.pages } else { by_len },
    ))
}
