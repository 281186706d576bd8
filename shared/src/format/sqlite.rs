//! SQLite's write-ahead log and database header, as bk-sqlite reads them
//! directly from the files beside a live database. No I/O.
//!
//! A `-wal` file is a 32-byte header and then frames: a 24-byte frame
//! header and one page. A frame counts only when its salts equal the
//! header's and its checksum — cumulative over every frame before it —
//! matches; the first frame that fails ends the log, whatever follows it
//! (SQLite reuses the file after a checkpoint and leaves old frames in
//! place behind new salts). A frame whose header carries a database size
//! ends a transaction; frames after the last such one belong to a
//! transaction still being written and may yet be rewritten, so they are
//! never shipped. See <https://www.sqlite.org/fileformat2.html#walformat>.

use nom::number::complete::be_u32;
use nom::sequence::tuple;
use nom::IResult;
use std::fmt;

pub const WAL_HEADER_LEN: usize = 32;
pub const FRAME_HEADER_LEN: usize = 24;
/// Checksums in little-endian words (written by little-endian hosts).
const MAGIC_LE: u32 = 0x377f_0682;
/// Checksums in big-endian words.
const MAGIC_BE: u32 = 0x377f_0683;
const WAL_VERSION: u32 = 3_007_000;
/// The start of every SQLite database file.
pub const DB_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// What a `-wal` file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub big_endian_checksums: bool,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    /// Changed by SQLite whenever it starts the log over: frames under
    /// other salts are left over from before.
    pub salt: [u32; 2],
    pub checksum: [u32; 2],
}

/// Why bytes are not a usable WAL header or database header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqliteProblem {
    TooShort { len: usize, need: usize },
    BadMagic(u32),
    UnknownVersion(u32),
    BadPageSize(u32),
    BadChecksum,
    NotADatabase,
}

impl fmt::Display for SqliteProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqliteProblem::TooShort { len, need } => {
                write!(f, "{len} bytes, a header needs {need}")
            }
            SqliteProblem::BadMagic(m) => write!(f, "not a SQLite WAL file (magic {m:#010x})"),
            SqliteProblem::UnknownVersion(v) => write!(f, "unknown WAL format version {v}"),
            SqliteProblem::BadPageSize(p) => write!(f, "page size {p} is not one SQLite uses"),
            SqliteProblem::BadChecksum => write!(f, "the WAL header's checksum does not match"),
            SqliteProblem::NotADatabase => write!(f, "not a SQLite 3 database file"),
        }
    }
}

fn be_u32x8(i: &[u8]) -> IResult<&[u8], [u32; 8]> {
    let (i, (a, b, c, d)) = tuple((be_u32, be_u32, be_u32, be_u32))(i)?;
    let (i, (e, f, g, h)) = tuple((be_u32, be_u32, be_u32, be_u32))(i)?;
    Ok((i, [a, b, c, d, e, f, g, h]))
}

/// Page sizes SQLite can use: powers of two from 512 to 65536.
pub fn valid_page_size(size: u32) -> bool {
    (512..=65536).contains(&size) && size.is_power_of_two()
}

impl WalHeader {
    /// Reads and checks the header at the start of a `-wal` file.
    pub fn parse(bytes: &[u8]) -> Result<WalHeader, SqliteProblem> {
        let (_, w) = be_u32x8(bytes).map_err(|_| SqliteProblem::TooShort {
            len: bytes.len(),
            need: WAL_HEADER_LEN,
        })?;
        let big_endian_checksums = match w[0] {
            MAGIC_LE => false,
            MAGIC_BE => true,
            m => return Err(SqliteProblem::BadMagic(m)),
        };
        if w[1] != WAL_VERSION {
            return Err(SqliteProblem::UnknownVersion(w[1]));
        }
        if !valid_page_size(w[2]) {
            return Err(SqliteProblem::BadPageSize(w[2]));
        }
        let header = WalHeader {
            big_endian_checksums,
            page_size: w[2],
            checkpoint_seq: w[3],
            salt: [w[4], w[5]],
            checksum: [w[6], w[7]],
        };
        if checksum(big_endian_checksums, [0, 0], &bytes[..24]) != header.checksum {
            return Err(SqliteProblem::BadChecksum);
        }
        Ok(header)
    }

    /// Bytes per frame: its header and one page.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.page_size as usize
    }

    /// Where frame `index` (from 0) starts in the file.
    pub fn frame_offset(&self, index: u64) -> u64 {
        WAL_HEADER_LEN as u64 + index * self.frame_len() as u64
    }

    /// The header's 32 bytes, its checksum computed (tests build logs with
    /// it; a restore never writes a `-wal`).
    pub fn encode(&self) -> [u8; WAL_HEADER_LEN] {
        let magic = if self.big_endian_checksums {
            MAGIC_BE
        } else {
            MAGIC_LE
        };
        let mut out = [0u8; WAL_HEADER_LEN];
        let words = [
            magic,
            WAL_VERSION,
            self.page_size,
            self.checkpoint_seq,
            self.salt[0],
            self.salt[1],
        ];
        for (i, w) in words.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        let sum = checksum(self.big_endian_checksums, [0, 0], &out[..24]);
        out[24..28].copy_from_slice(&sum[0].to_be_bytes());
        out[28..32].copy_from_slice(&sum[1].to_be_bytes());
        out
    }
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing
/// from `init`: pairs of 32-bit words in the byte order the magic chose.
pub fn checksum(big_endian: bool, init: [u32; 2], data: &[u8]) -> [u32; 2] {
    let word = |b: &[u8]| {
        let b: [u8; 4] = b.try_into().expect("4 bytes");
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let [mut s0, mut s1] = init;
    for pair in data.chunks_exact(8) {
        s0 = s0.wrapping_add(word(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..])).wrapping_add(s0);
    }
    [s0, s1]
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The page this frame holds (from 1).
    pub page: u32,
    /// For the last frame of a transaction, the database's size in pages
    /// after it; 0 for the others.
    pub commit_size: u32,
    pub salt: [u32; 2],
    pub checksum: [u32; 2],
}

impl FrameHeader {
    pub fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let parsed: IResult<&[u8], _> =
            tuple((be_u32, be_u32, be_u32, be_u32, be_u32, be_u32))(bytes);
        let (_, (page, commit_size, s0, s1, c0, c1)) = parsed.ok()?;
        Some(FrameHeader {
            page,
            commit_size,
            salt: [s0, s1],
            checksum: [c0, c1],
        })
    }

    pub fn is_commit(&self) -> bool {
        self.commit_size > 0
    }
}

/// Walks a log frame by frame, carrying the cumulative checksum: where a
/// replicator stands in a `-wal` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCursor {
    pub header: WalHeader,
    /// Frames accepted so far.
    pub frames: u64,
    /// The checksum after the last accepted frame.
    pub checksum: [u32; 2],
}

impl FrameCursor {
    /// At the first frame of the log `header` starts.
    pub fn new(header: WalHeader) -> FrameCursor {
        FrameCursor {
            header,
            frames: 0,
            checksum: header.checksum,
        }
    }

    /// Where the next frame starts in the file.
    pub fn offset(&self) -> u64 {
        self.header.frame_offset(self.frames)
    }

    /// Checks `frame` (header and page) as the next frame: `Some` and one
    /// frame further when it belongs to this log, `None` (unchanged) when
    /// the log ends before it.
    pub fn accept(&mut self, frame: &[u8]) -> Option<FrameHeader> {
        if frame.len() != self.header.frame_len() {
            return None;
        }
        let fh = FrameHeader::parse(frame)?;
        if fh.salt != self.header.salt || fh.page == 0 {
            return None;
        }
        let be = self.header.big_endian_checksums;
        let sum = checksum(be, self.checksum, &frame[..8]);
        let sum = checksum(be, sum, &frame[FRAME_HEADER_LEN..]);
        if sum != fh.checksum {
            return None;
        }
        self.checksum = sum;
        self.frames += 1;
        Some(fh)
    }

    /// Builds the next frame for `page` holding `data` and accepts it
    /// (tests build logs with it).
    pub fn encode_frame(&mut self, page: u32, commit_size: u32, data: &[u8]) -> Vec<u8> {
        assert_eq!(data.len(), self.header.page_size as usize);
        let mut frame = Vec::with_capacity(self.header.frame_len());
        for w in [page, commit_size, self.header.salt[0], self.header.salt[1]] {
            frame.extend_from_slice(&w.to_be_bytes());
        }
        let be = self.header.big_endian_checksums;
        let sum = checksum(be, self.checksum, &frame[..8]);
        let sum = checksum(be, sum, data);
        frame.extend_from_slice(&sum[0].to_be_bytes());
        frame.extend_from_slice(&sum[1].to_be_bytes());
        frame.extend_from_slice(data);
        let accepted = self.accept(&frame);
        debug_assert!(accepted.is_some());
        frame
    }
}

/// What the first 100 bytes of a database file say that a replicator needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbHeader {
    pub page_size: u32,
    /// Bytes 18 and 19 are 2 and 2 for a database in WAL mode.
    pub wal_mode: bool,
    /// Pages in the database, as of the last checkpoint.
    pub pages: u32,
}

impl DbHeader {
    pub fn parse(bytes: &[u8]) -> Result<DbHeader, SqliteProblem> {
        if bytes.len() < 100 {
            return Err(SqliteProblem::TooShort {
                len: bytes.len(),
                need: 100,
            });
        }
        if &bytes[..16] != DB_MAGIC {
            return Err(SqliteProblem::NotADatabase);
        }
        let raw = u16::from_be_bytes([bytes[16], bytes[17]]);
        let page_size = if raw == 1 { 65536 } else { u32::from(raw) };
        if !valid_page_size(page_size) {
            return Err(SqliteProblem::BadPageSize(page_size));
        }
        Ok(DbHeader {
            page_size,
            wal_mode: bytes[18] == 2 && bytes[19] == 2,
            pages: u32::from_be_bytes(bytes[28..32].try_into().expect("4 bytes")),
        })
    }
}

/// Where a replicator stands in a database's `-wal` file: which log
/// (salts, checkpoint sequence), how many frames of it, and the checksum
/// after them. A replicator that restarts resumes only when the file still
/// shows the same frames there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalPos {
    pub salt: [u32; 2],
    pub checkpoint_seq: u32,
    pub frames: u64,
    pub checksum: [u32; 2],
}

impl WalPos {
    pub fn of(cursor: &FrameCursor) -> WalPos {
        WalPos {
            salt: cursor.header.salt,
            checkpoint_seq: cursor.header.checkpoint_seq,
            frames: cursor.frames,
            checksum: cursor.checksum,
        }
    }
}

/// A sum over a database's pages that changes when any page does, kept up
/// to date frame by frame (subtract the page's old term, add its new one)
/// so that a replicator knows the checksum of every state it ships without
/// reading the database again, and a restore can check its result. Each
/// term is the first 8 bytes of SHA-256 over the page number and content;
/// the sum wraps. Not a defence against forgery (the objects are
/// authenticated), a check that replay produced the state it should.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageSums {
    terms: Vec<u64>,
    sum: u64,
}

impl PageSums {
    pub fn term(page: u32, data: &[u8]) -> u64 {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(page.to_be_bytes());
        h.update(data);
        u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
    }

    /// Page `page` (from 1) now holds `data`.
    pub fn set(&mut self, page: u32, data: &[u8]) {
        let i = page as usize - 1;
        if self.terms.len() <= i {
            self.terms.resize(i + 1, 0);
        }
        let term = Self::term(page, data);
        self.sum = self.sum.wrapping_sub(self.terms[i]).wrapping_add(term);
        self.terms[i] = term;
    }

    /// The database now has `pages` pages (a commit's size): pages past it
    /// are gone; pages never written up to it count as zero-filled.
    pub fn truncate(&mut self, pages: u32, page_size: u32) {
        let n = pages as usize;
        for t in self.terms.iter().skip(n) {
            self.sum = self.sum.wrapping_sub(*t);
        }
        self.terms.truncate(n);
        if self.terms.len() < n {
            let zero = vec![0u8; page_size as usize];
            for p in self.terms.len()..n {
                self.set(p as u32 + 1, &zero);
            }
        }
    }

    pub fn pages(&self) -> u32 {
        self.terms.len() as u32
    }

    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// The sums of a whole database image.
    pub fn of_image(image: &[u8], page_size: u32) -> PageSums {
        let mut sums = PageSums::default();
        for (i, page) in image.chunks(page_size as usize).enumerate() {
            sums.set(i as u32 + 1, page);
        }
        sums
    }
}

/// One transaction in a shipped segment: its frames end at `end` (frames
/// counted from the segment's start), and the replicator saw it committed
/// at `time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitMark {
    pub end: u32,
    pub time: crate::format::time::Timestamp,
    /// The database's size in pages after it.
    pub pages: u32,
    /// [`PageSums::sum`] of the database after it.
    pub sum: u64,
}

/// What a segment object says about itself, ahead of its frames.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentHeader {
    pub v: u32,
    pub db: String,
    pub lineage: String,
    /// 1 for the first segment after the lineage's snapshot with `seq` 0.
    pub seq: u64,
    pub page_size: u32,
    pub from: WalPos,
    pub to: WalPos,
    pub commits: Vec<CommitMark>,
}

/// A frame as shipped: the page it writes and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShippedFrame {
    pub page: u32,
    pub data: Vec<u8>,
}

const SEGMENT_MAGIC: &[u8] = b"bk-sqlite segment 1\n";

/// A segment's plain bytes: magic, the header's length and JSON, then per
/// frame the page number and the page.
pub fn encode_segment(header: &SegmentHeader, frames: &[ShippedFrame]) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("a segment header serializes");
    let mut out = Vec::with_capacity(
        SEGMENT_MAGIC.len() + 4 + json.len() + frames.len() * (4 + header.page_size as usize),
    );
    out.extend_from_slice(SEGMENT_MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    for f in frames {
        out.extend_from_slice(&f.page.to_be_bytes());
        out.extend_from_slice(&f.data);
    }
    out
}

/// Reverses [`encode_segment`], checking that the frames are whole and as
/// many as the last commit says.
pub fn decode_segment(bytes: &[u8]) -> Result<(SegmentHeader, Vec<ShippedFrame>), String> {
    let rest = bytes
        .strip_prefix(SEGMENT_MAGIC)
        .ok_or("not a bk-sqlite segment")?;
    let parsed: IResult<&[u8], u32> = be_u32(rest);
    let (rest, len) = parsed.map_err(|_| "truncated segment header")?;
    let (json, mut rest) = rest
        .split_at_checked(len as usize)
        .ok_or("truncated segment header")?;
    let header: SegmentHeader =
        serde_json::from_slice(json).map_err(|e| format!("malformed segment header: {e}"))?;
    if !valid_page_size(header.page_size) {
        return Err(format!("segment page size {}", header.page_size));
    }
    let step = 4 + header.page_size as usize;
    if rest.len() % step != 0 {
        return Err("a frame of the segment is cut short".into());
    }
    let mut frames = Vec::with_capacity(rest.len() / step);
    while !rest.is_empty() {
        let (frame, tail) = rest.split_at(step);
        let page = u32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
        frames.push(ShippedFrame {
            page,
            data: frame[4..].to_vec(),
        });
        rest = tail;
    }
    let expected = header.commits.last().map_or(0, |c| c.end as usize);
    if frames.len() != expected || header.commits.windows(2).any(|w| w[0].end >= w[1].end) {
        return Err(format!(
            "{} frames, the commits account for {expected}",
            frames.len()
        ));
    }
    Ok((header, frames))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(page_size: u32, be: bool) -> WalHeader {
        let h = WalHeader {
            big_endian_checksums: be,
            page_size,
            checkpoint_seq: 7,
            salt: [0x1234_5678, 0x9abc_def0],
            checksum: [0, 0],
        };
        WalHeader::parse(&h.encode()).unwrap()
    }

    /// A log of transactions of the given sizes; the last one's commit
    /// frame is left out when `open_tail` (a transaction being written).
    /// Returns the bytes and the frames up to the last commit.
    fn build(h: WalHeader, txs: &[usize], open_tail: bool) -> (Vec<u8>, u64) {
        let mut out = h.encode().to_vec();
        let mut cur = FrameCursor::new(h);
        let mut committed = 0;
        for (t, &n) in txs.iter().enumerate() {
            for i in 0..n {
                let last = i + 1 == n && !(open_tail && t + 1 == txs.len());
                let data = vec![(t * 31 + i) as u8; h.page_size as usize];
                out.extend(cur.encode_frame(i as u32 + 1, if last { 99 } else { 0 }, &data));
                if last {
                    committed = cur.frames;
                }
            }
        }
        (out, committed)
    }

    /// Frames up to the last commit, as a replicator finds them.
    fn scan(bytes: &[u8]) -> u64 {
        let h = WalHeader::parse(bytes).unwrap();
        let mut cur = FrameCursor::new(h);
        let mut committed = 0;
        for frame in bytes[WAL_HEADER_LEN..].chunks(h.frame_len()) {
            match cur.accept(frame) {
                Some(fh) if fh.is_commit() => committed = cur.frames,
                Some(_) => {}
                None => break,
            }
        }
        committed
    }

    #[test]
    fn a_header_round_trips_and_a_flipped_bit_is_refused() {
        for be in [false, true] {
            let h = header(4096, be);
            let mut enc = h.encode();
            assert_eq!(WalHeader::parse(&enc).unwrap(), h);
            enc[13] ^= 1;
            assert_eq!(WalHeader::parse(&enc), Err(SqliteProblem::BadChecksum));
        }
        assert!(matches!(
            WalHeader::parse(b"short"),
            Err(SqliteProblem::TooShort { .. })
        ));
        let mut enc = header(4096, false).encode();
        enc[8..12].copy_from_slice(&3000u32.to_be_bytes());
        assert_eq!(
            WalHeader::parse(&enc),
            Err(SqliteProblem::BadPageSize(3000))
        );
    }

    #[test]
    fn frames_under_old_salts_end_the_log() {
        let h = header(512, false);
        let (mut bytes, committed) = build(h, &[2, 3], false);
        assert_eq!(scan(&bytes), committed);
        // A restarted log: new salts in the header, old frames behind it.
        let mut h2 = h;
        h2.salt[0] = h.salt[0].wrapping_add(1);
        bytes[..WAL_HEADER_LEN].copy_from_slice(&h2.encode());
        assert_eq!(scan(&bytes), 0);
    }

    #[test]
    fn the_database_header_says_page_size_and_wal_mode() {
        let mut db = vec![0u8; 100];
        db[..16].copy_from_slice(DB_MAGIC);
        db[16..18].copy_from_slice(&1u16.to_be_bytes());
        db[18] = 2;
        db[19] = 2;
        db[28..32].copy_from_slice(&5u32.to_be_bytes());
        let h = DbHeader::parse(&db).unwrap();
        assert_eq!((h.page_size, h.wal_mode, h.pages), (65536, true, 5));
        db[0] = b's';
        assert_eq!(DbHeader::parse(&db), Err(SqliteProblem::NotADatabase));
    }

    #[test]
    fn page_sums_follow_writes_and_truncation() {
        let ps = 512u32;
        let mut image = vec![0u8; 3 * ps as usize];
        image[ps as usize] = 7;
        let mut sums = PageSums::of_image(&image, ps);
        sums.set(3, &[9u8; 512]);
        image[2 * ps as usize..].fill(9);
        assert_eq!(sums, PageSums::of_image(&image, ps));
        sums.truncate(2, ps);
        assert_eq!(
            sums.sum(),
            PageSums::of_image(&image[..2 * ps as usize], ps).sum()
        );
        sums.truncate(4, ps);
        let mut grown = image[..2 * ps as usize].to_vec();
        grown.resize(4 * ps as usize, 0);
        assert_eq!(sums.sum(), PageSums::of_image(&grown, ps).sum());
    }

    #[test]
    fn a_segment_round_trips_and_refuses_missing_frames() {
        let pos = WalPos {
            salt: [1, 2],
            checkpoint_seq: 3,
            frames: 0,
            checksum: [4, 5],
        };
        let header = SegmentHeader {
            v: 1,
            db: "app.db".into(),
            lineage: "0123456789abcdef".into(),
            seq: 1,
            page_size: 512,
            from: pos,
            to: WalPos { frames: 2, ..pos },
            commits: vec![CommitMark {
                end: 2,
                time: crate::format::time::Timestamp { secs: 5, nanos: 0 },
                pages: 2,
                sum: 42,
            }],
        };
        let frames = vec![
            ShippedFrame {
                page: 1,
                data: vec![1; 512],
            },
            ShippedFrame {
                page: 2,
                data: vec![2; 512],
            },
        ];
        let bytes = encode_segment(&header, &frames);
        assert_eq!(
            decode_segment(&bytes).unwrap(),
            (header.clone(), frames.clone())
        );
        assert!(decode_segment(&bytes[..bytes.len() - 1]).is_err());
        let short = encode_segment(&header, &frames[..1]);
        assert!(decode_segment(&short)
            .unwrap_err()
            .contains("commits account for 2"));
    }

    proptest! {
        #[test]
        fn only_frames_up_to_the_last_commit_are_taken(
            txs in proptest::collection::vec(1usize..5, 1..6),
            open_tail in any::<bool>(),
            be in any::<bool>(),
            page_pow in 9u32..13,
        ) {
            let (bytes, committed) = build(header(1 << page_pow, be), &txs, open_tail);
            prop_assert_eq!(scan(&bytes), committed);
        }

        #[test]
        fn a_damaged_frame_ends_the_log_before_it(
            txs in proptest::collection::vec(1usize..4, 2..6),
            at in any::<proptest::sample::Index>(),
            within in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let h = header(512, false);
            let (mut bytes, _) = build(h, &txs, false);
            let frames = (bytes.len() - WAL_HEADER_LEN) / h.frame_len();
            let frame = at.index(frames);
            bytes[WAL_HEADER_LEN + frame * h.frame_len() + within.index(h.frame_len())] ^= 1 << bit;
            // Only the transactions that ended before the damaged frame.
            let ends = txs.iter().scan(0usize, |n, &t| { *n += t; Some(*n) });
            let expected = ends.filter(|&end| end <= frame).max().unwrap_or(0);
            prop_assert_eq!(scan(&bytes), expected as u64);
        }
    }
}
