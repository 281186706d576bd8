//! A database's replica in the repository: what bk-sqlite writes and how
//! it is found again.
//!
//! * Snapshots are ordinary bk snapshots of one file (the database image),
//!   through the chunk store, tagged `bk-sqlite.db`, `.lineage`, `.seq`,
//!   `.pages`, `.page-size` and `.sum`; retention and GC treat them like
//!   any other snapshot.
//! * Segments are sealed objects `sqlite/<db>.<lineage>.<seq>`: the
//!   committed frames between two positions of the log, with each commit's
//!   time, size and page sum (format/sqlite.rs). One PUT per sync.
//! * A lineage is one unbroken history of the database: it starts with a
//!   snapshot (seq 1) and goes on with segments and later snapshots, all
//!   numbered by one counter. Object `n` applies to the state after `n-1`;
//!   a snapshot `n` *is* the state after `n-1`. Lineage ids start with
//!   their start time, so they sort by it.
//! * The lease `sqlite/<db>.lease` names the replicator writing the
//!   database's history; a second one is refused.

use crate::error::{Error, Result, Subject};
use crate::format::id::ObjectId;
use crate::format::sqlite::{decode_segment, encode_segment, SegmentHeader, ShippedFrame};
use crate::format::time::Timestamp;
use crate::layout::ObjectKind;
use crate::store::repo::{Repository, Snapshot};
use std::collections::BTreeMap;

const SEGMENT_AAD: &[u8] = b"bk sqlite segment v1\0";
const LEASE_AAD: &[u8] = b"bk sqlite lease v1\0";
const LEASE_SUFFIX: &str = ".lease";
/// zstd level for segments: pages of a B-tree compress well at 1 already.
const SEGMENT_COMPRESSION: i32 = 1;

/// Snapshot tags.
pub mod tag {
    pub const DB: &str = "bk-sqlite.db";
    pub const LINEAGE: &str = "bk-sqlite.lineage";
    pub const SEQ: &str = "bk-sqlite.seq";
    pub const PAGES: &str = "bk-sqlite.pages";
    pub const PAGE_SIZE: &str = "bk-sqlite.page-size";
    pub const SUM: &str = "bk-sqlite.sum";
    /// Where in the log the snapshot's state ends (JSON `WalPos`, or
    /// `null` when the log was empty): a restarted replicator resumes from
    /// a snapshot only if the log still shows it.
    pub const POS: &str = "bk-sqlite.pos";
}

/// A replicated database's name in the repository (by default the file's
/// name): letters, digits, `.`, `_` and `-`.
pub fn check_db_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.ends_with(LEASE_SUFFIX)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{name:?} cannot name a replica: use letters, digits, '.', '_' and '-' \
             (give --name to choose one)"
        )))
    }
}

/// One unbroken history of a database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LineageId(String);

impl LineageId {
    /// `20261203T160058Z-1a2b3c4d`: sorts by start time.
    pub fn new(start: Timestamp) -> LineageId {
        let t = start.to_rfc3339();
        let digits: String = t[..19].chars().filter(|c| c.is_ascii_digit()).collect();
        let random: u32 = rand::random();
        LineageId(format!("{}T{}Z-{random:08x}", &digits[..8], &digits[8..14]))
    }

    pub fn parse(s: &str) -> Option<LineageId> {
        let b = s.as_bytes();
        let ok = b.len() == 25
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[16] == b'-'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
            && b[17..]
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        ok.then(|| LineageId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LineageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn segment_name(db: &str, lineage: &LineageId, seq: u64) -> String {
    format!("{db}.{lineage}.{seq:016x}")
}

/// `(db, lineage, seq)` of a segment object's name.
pub fn parse_segment_name(name: &str) -> Option<(&str, LineageId, u64)> {
    let mut parts = name.rsplitn(3, '.');
    let seq = parts.next()?;
    let lineage = LineageId::parse(parts.next()?)?;
    let db = parts.next()?;
    if seq.len() != 16 || db.is_empty() {
        return None;
    }
    Some((db, lineage, u64::from_str_radix(seq, 16).ok()?))
}

fn aad(prefix: &[u8], object: &str) -> Vec<u8> {
    [prefix, object.as_bytes()].concat()
}

/// Writes a segment; returns the stored bytes. The name is claimed: a
/// segment is never overwritten.
pub fn put_segment(
    repo: &Repository,
    header: &SegmentHeader,
    frames: &[ShippedFrame],
) -> Result<u64> {
    let lineage = LineageId::parse(&header.lineage)
        .ok_or_else(|| Error::internal("writing a segment", "bad lineage id"))?;
    let object = segment_name(&header.db, &lineage, header.seq);
    let plain = encode_segment(header, frames);
    let sealed = repo.keys().seal(
        &aad(SEGMENT_AAD, &object),
        &plain,
        Some(SEGMENT_COMPRESSION),
    );
    match repo.backend().put(ObjectKind::Sqlite, &object, &sealed) {
        Ok(()) => Ok(sealed.len() as u64),
        // A retry after a put whose answer was lost: the same bytes are
        // there if they open to the same plain text.
        Err(e) if e.is_already_there() => match get_segment_plain(repo, &object) {
            Ok(existing) if existing == plain => Ok(sealed.len() as u64),
            _ => Err(Error::Conflict {
                subject: Subject::object(ObjectKind::Sqlite, object),
                message: "another replicator wrote this segment of the lineage".into(),
            }),
        },
        Err(e) => Err(e),
    }
}

fn get_segment_plain(repo: &Repository, object: &str) -> Result<Vec<u8>> {
    let sealed = repo.backend().get(ObjectKind::Sqlite, object)?;
    repo.keys()
        .open(&aad(SEGMENT_AAD, object), &sealed)
        .map_err(|e| Error::damaged(ObjectKind::Sqlite, object, format!("cannot be opened: {e}")))
}

/// Reads and checks a segment: it must open, decode, and say it is the
/// segment its name says.
pub fn get_segment(repo: &Repository, object: &str) -> Result<(SegmentHeader, Vec<ShippedFrame>)> {
    let plain = get_segment_plain(repo, object)?;
    let (header, frames) =
        decode_segment(&plain).map_err(|m| Error::damaged(ObjectKind::Sqlite, object, m))?;
    let named = parse_segment_name(object);
    let agrees = named.is_some_and(|(db, lineage, seq)| {
        db == header.db && lineage.as_str() == header.lineage && seq == header.seq
    });
    if !agrees {
        return Err(Error::damaged(
            ObjectKind::Sqlite,
            object,
            "the segment says it is another segment",
        ));
    }
    Ok((header, frames))
}

/// Who replicates a database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub v: u32,
    pub db: String,
    /// `--holder`, by default the host name: a replicator started again
    /// under the same holder (a restarted pod of one Deployment) takes the
    /// lease over; another holder is refused.
    pub holder: String,
    pub host: String,
    pub pid: u32,
    pub path: String,
    pub since: Timestamp,
}

impl Lease {
    pub fn describe(&self) -> String {
        format!(
            "holder {} (pid {} on {}, replicating {} since {})",
            self.holder, self.pid, self.host, self.path, self.since
        )
    }

    /// A lease of this very host whose process is gone.
    fn is_dead_here(&self) -> bool {
        let here = crate::sys::hostname().unwrap_or_default();
        self.host == here && self.pid != std::process::id() && !crate::sys::process_alive(self.pid)
    }

    /// A lease of this host whose process is alive (and not us).
    fn is_alive_here(&self) -> bool {
        let here = crate::sys::hostname().unwrap_or_default();
        self.host == here && self.pid != std::process::id() && crate::sys::process_alive(self.pid)
    }
}

fn lease_object(db: &str) -> String {
    format!("{db}{LEASE_SUFFIX}")
}

pub fn read_lease(repo: &Repository, db: &str) -> Result<Option<Lease>> {
    let object = lease_object(db);
    let sealed = match repo.backend().get(ObjectKind::Sqlite, &object) {
        Ok(s) => s,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e),
    };
    let plain = repo
        .keys()
        .open(&aad(LEASE_AAD, &object), &sealed)
        .map_err(|e| Error::damaged(ObjectKind::Sqlite, object.as_str(), e.to_string()))?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|e| Error::damaged(ObjectKind::Sqlite, object.as_str(), e.to_string()))
}

/// Claims the database's lease. Refused when another holder has it, or a
/// live process on this host, unless `takeover`.
pub fn take_lease(repo: &Repository, lease: &Lease, takeover: bool) -> Result<()> {
    let object = lease_object(&lease.db);
    let plain = serde_json::to_vec(lease).map_err(|e| Error::internal("writing a lease", e))?;
    let sealed = repo.keys().seal(&aad(LEASE_AAD, &object), &plain, None);
    for _ in 0..3 {
        match repo.backend().put(ObjectKind::Sqlite, &object, &sealed) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_already_there() => {}
            Err(e) => return Err(e),
        }
        if let Some(held) = read_lease(repo, &lease.db)? {
            let ours = held.holder == lease.holder && !held.is_alive_here();
            if !(takeover || ours || held.is_dead_here()) {
                return Err(Error::Locked {
                    lock: None,
                    holder: format!(
                        "database {} is already replicated by {}; two replicators must not \
                         interleave one database's history (stop the other; if it is gone, \
                         start this one with --takeover)",
                        lease.db,
                        held.describe()
                    ),
                });
            }
            log::info!(
                "{}: taking the lease over from {}",
                lease.db,
                held.describe()
            );
        }
        match repo.backend().delete(ObjectKind::Sqlite, &object) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Err(Error::Locked {
        lock: None,
        holder: format!(
            "database {}: another replicator keeps taking its lease",
            lease.db
        ),
    })
}

/// Gives the lease back (a clean stop), if it is still ours.
pub fn release_lease(repo: &Repository, lease: &Lease) -> Result<()> {
    if read_lease(repo, &lease.db)?.as_ref() == Some(lease) {
        repo.backend()
            .delete(ObjectKind::Sqlite, &lease_object(&lease.db))?;
    }
    Ok(())
}

/// A snapshot of a replicated database, as its tags describe it.
#[derive(Debug, Clone)]
pub struct DbSnapshot {
    pub id: ObjectId,
    pub time: Timestamp,
    pub lineage: LineageId,
    pub seq: u64,
    pub pages: u32,
    pub page_size: u32,
    pub sum: u64,
    pub bytes: u64,
}

impl DbSnapshot {
    fn from_snapshot(id: &ObjectId, s: &Snapshot) -> Option<(String, DbSnapshot)> {
        let t = &s.tags;
        let db = t.get(tag::DB)?.clone();
        Some((
            db,
            DbSnapshot {
                id: *id,
                time: s.time,
                lineage: LineageId::parse(t.get(tag::LINEAGE)?)?,
                seq: t.get(tag::SEQ)?.parse().ok()?,
                pages: t.get(tag::PAGES)?.parse().ok()?,
                page_size: t.get(tag::PAGE_SIZE)?.parse().ok()?,
                sum: u64::from_str_radix(t.get(tag::SUM)?, 16).ok()?,
                bytes: s.bytes,
            },
        ))
    }
}

/// A segment object as listed (its content unread).
#[derive(Debug, Clone)]
pub struct SegmentObject {
    pub name: String,
    pub seq: u64,
    pub size: u64,
}

/// One lineage of a database: its snapshots and segments by seq.
#[derive(Debug, Clone, Default)]
pub struct LineageObjects {
    pub snapshots: BTreeMap<u64, DbSnapshot>,
    pub segments: BTreeMap<u64, SegmentObject>,
}

impl LineageObjects {
    /// The highest seq written.
    pub fn last_seq(&self) -> u64 {
        let s = self.snapshots.keys().next_back().copied().unwrap_or(0);
        let g = self.segments.keys().next_back().copied().unwrap_or(0);
        s.max(g)
    }
}

/// Everything the repository holds for replicated databases: from one
/// listing of `sqlite/` and the snapshots.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub dbs: BTreeMap<String, BTreeMap<LineageId, LineageObjects>>,
}

impl Catalog {
    pub fn load(repo: &Repository) -> Result<Catalog> {
        let snapshots = repo.snapshots()?;
        let listed = repo.backend().list(ObjectKind::Sqlite)?;
        Ok(Catalog::build(&snapshots, &listed))
    }

    pub fn build(
        snapshots: &[(ObjectId, Snapshot)],
        listed: &[crate::store::backend::ObjectInfo],
    ) -> Catalog {
        let mut dbs: BTreeMap<String, BTreeMap<LineageId, LineageObjects>> = BTreeMap::new();
        for (id, s) in snapshots {
            if let Some((db, snap)) = DbSnapshot::from_snapshot(id, s) {
                let lineage = dbs
                    .entry(db)
                    .or_default()
                    .entry(snap.lineage.clone())
                    .or_default();
                lineage.snapshots.insert(snap.seq, snap);
            }
        }
        for o in listed {
            if let Some((db, lineage, seq)) = parse_segment_name(&o.name) {
                let seg = SegmentObject {
                    name: o.name.clone(),
                    seq,
                    size: o.size,
                };
                dbs.entry(db.to_string())
                    .or_default()
                    .entry(lineage)
                    .or_default()
                    .segments
                    .insert(seq, seg);
            }
        }
        Catalog { dbs }
    }

    pub fn lineages(&self, db: &str) -> Option<&BTreeMap<LineageId, LineageObjects>> {
        self.dbs.get(db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lineage_ids_sort_by_start_and_parse_back() {
        let a = LineageId::new(Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        });
        let b = LineageId::new(Timestamp {
            secs: 1_700_000_001,
            nanos: 0,
        });
        assert!(a < b);
        assert_eq!(LineageId::parse(a.as_str()), Some(a.clone()));
        assert!(a.as_str().starts_with("20231114T221320Z-"));
        assert_eq!(LineageId::parse("20231114T221320Z-XYZ"), None);
    }

    #[test]
    fn segment_names_parse_back_even_when_the_database_name_has_dots() {
        let l = LineageId::new(Timestamp::now());
        let name = segment_name("app.v2.db", &l, 42);
        let (db, lineage, seq) = parse_segment_name(&name).unwrap();
        assert_eq!((db, lineage, seq), ("app.v2.db", l, 42));
        assert!(parse_segment_name("app.db.lease").is_none());
        assert!(check_db_name("app.db").is_ok());
        assert!(check_db_name("app.lease").is_err());
        assert!(check_db_name("../x").is_err());
    }
}
