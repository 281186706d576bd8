//! PostgreSQL's write-ahead log as bk-wal meets it: the names PostgreSQL
//! gives WAL files and the header at the start of every segment. No I/O.
//!
//! A segment is refused before it is archived when its first page does not
//! say what its name says: a file from another cluster (system identifier),
//! a misnamed file (page address), or not WAL at all (magic). Archiving such
//! a file would make a later recovery replay the wrong history, which
//! PostgreSQL detects only when it is too late to fetch the right one.

use nom::bytes::complete::take_while_m_n;
use nom::combinator::{all_consuming, map_res};
use nom::number::complete::{le_u16, le_u32, le_u64};
use nom::sequence::tuple;
use nom::IResult;
use std::fmt;

/// The kinds of file PostgreSQL hands to `archive_command` and asks of
/// `restore_command`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WalFile {
    /// `TTTTTTTTXXXXXXXXYYYYYYYY`: a whole segment.
    Segment { timeline: u32, segno: u64 },
    /// `<segment>.partial`: the last, incomplete segment of a timeline
    /// that a promotion ended.
    Partial { timeline: u32, segno: u64 },
    /// `TTTTTTTT.history`: how timeline T branched from its parents.
    History { timeline: u32 },
    /// `<segment>.XXXXXXXX.backup`: the label of a base backup that
    /// started in that segment at that offset.
    Backup {
        timeline: u32,
        segno: u64,
        offset: u32,
    },
}

/// Segment numbers per "log id" in file names, for a segment size.
fn segs_per_xlogid(seg_size: u32) -> u64 {
    0x1_0000_0000 / u64::from(seg_size)
}

fn hex8(input: &str) -> IResult<&str, u32> {
    map_res(
        take_while_m_n(8, 8, |c: char| {
            c.is_ascii_hexdigit() && !c.is_ascii_lowercase()
        }),
        |s| u32::from_str_radix(s, 16),
    )(input)
}

/// (timeline, log id, segment within log id) of a 24-digit segment name.
fn segment_parts(input: &str) -> IResult<&str, (u32, u32, u32)> {
    tuple((hex8, hex8, hex8))(input)
}

/// The smallest segment size PostgreSQL allows (`initdb --wal-segsize=1`).
/// A name is classified with it before the segment's header (or the
/// stanza's binding) gives the real size: it allows the widest names (up
/// to 0xFFF segments per log file; at 16 MiB only 0xFF), so no valid name
/// of any cluster is refused. The segment number it yields is not used.
pub const SMALLEST_SEGMENT_SIZE: u32 = 1 << 20;

impl WalFile {
    /// Parses a file name as PostgreSQL writes it (upper-case hex);
    /// `seg_size` turns the name's two halves into one segment number.
    pub fn parse(name: &str, seg_size: u32) -> Option<WalFile> {
        let per = segs_per_xlogid(seg_size);
        let segno = |log: u32, seg: u32| {
            (u64::from(seg) < per).then(|| u64::from(log) * per + u64::from(seg))
        };
        if let Some(tli) = name.strip_suffix(".history") {
            let (_, timeline) = all_consuming(hex8)(tli).ok()?;
            return Some(WalFile::History { timeline });
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            let (_, (timeline, log, s)) = all_consuming(segment_parts)(seg).ok()?;
            return Some(WalFile::Partial {
                timeline,
                segno: segno(log, s)?,
            });
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            let (seg, off) = rest.split_once('.')?;
            let (_, (timeline, log, s)) = all_consuming(segment_parts)(seg).ok()?;
            let (_, offset) = all_consuming(hex8)(off).ok()?;
            return Some(WalFile::Backup {
                timeline,
                segno: segno(log, s)?,
                offset,
            });
        }
        let (_, (timeline, log, s)) = all_consuming(segment_parts)(name).ok()?;
        Some(WalFile::Segment {
            timeline,
            segno: segno(log, s)?,
        })
    }

    /// The file name PostgreSQL uses.
    pub fn name(&self, seg_size: u32) -> String {
        let per = segs_per_xlogid(seg_size);
        let seg = |tli: u32, segno: u64| format!("{tli:08X}{:08X}{:08X}", segno / per, segno % per);
        match *self {
            WalFile::Segment { timeline, segno } => seg(timeline, segno),
            WalFile::Partial { timeline, segno } => format!("{}.partial", seg(timeline, segno)),
            WalFile::History { timeline } => format!("{timeline:08X}.history"),
            WalFile::Backup {
                timeline,
                segno,
                offset,
            } => format!("{}.{offset:08X}.backup", seg(timeline, segno)),
        }
    }

    pub fn timeline(&self) -> u32 {
        match *self {
            WalFile::Segment { timeline, .. }
            | WalFile::Partial { timeline, .. }
            | WalFile::History { timeline }
            | WalFile::Backup { timeline, .. } => timeline,
        }
    }

    /// Files whose content is WAL pages (checked against their header).
    pub fn is_segment_data(&self) -> bool {
        matches!(self, WalFile::Segment { .. } | WalFile::Partial { .. })
    }
}

/// `XLP_LONG_HEADER`: the first page of a segment carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;

/// `XLOG_PAGE_MAGIC` of each PostgreSQL major version bk knows.
const PAGE_MAGICS: &[(u16, u32)] = &[
    (0xD101, 12),
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
];

/// The long page header at the start of every segment
/// (`XLogLongPageHeaderData`, little-endian on every platform bk runs on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub magic: u16,
    pub info: u16,
    pub timeline: u32,
    /// WAL position of this page: the segment's start.
    pub page_address: u64,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

impl SegmentHeader {
    pub const LEN: usize = 40;

    pub fn parse(bytes: &[u8]) -> Option<SegmentHeader> {
        let (_, h) = header(bytes).ok()?;
        Some(h)
    }

    /// The PostgreSQL major version that writes this page magic.
    pub fn major_version(&self) -> Option<u32> {
        PAGE_MAGICS
            .iter()
            .find(|(m, _)| *m == self.magic)
            .map(|(_, v)| *v)
    }
}

fn header(input: &[u8]) -> IResult<&[u8], SegmentHeader> {
    let (rest, (magic, info, timeline, page_address, _rem_len, _pad)) =
        tuple((le_u16, le_u16, le_u32, le_u64, le_u32, le_u32))(input)?;
    let (rest, (system_identifier, segment_size, block_size)) =
        tuple((le_u64, le_u32, le_u32))(rest)?;
    Ok((
        rest,
        SegmentHeader {
            magic,
            info,
            timeline,
            page_address,
            system_identifier,
            segment_size,
            block_size,
        },
    ))
}

/// Why a file is not the WAL segment its name says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentProblem {
    /// Too short, unknown magic, or no long header: not a WAL segment.
    NotWal(String),
    /// The header's system identifier is another cluster's.
    OtherCluster { expected: u64, found: u64 },
    /// The page address or timeline does not match the file name.
    Misnamed(String),
}

impl fmt::Display for SegmentProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentProblem::NotWal(m) => write!(f, "not a PostgreSQL WAL segment: {m}"),
            SegmentProblem::OtherCluster { expected, found } => write!(
                f,
                "WAL of another cluster: system identifier {found}, the stanza belongs to {expected}"
            ),
            SegmentProblem::Misnamed(m) => write!(f, "the file's content does not match its name: {m}"),
        }
    }
}

/// Checks a segment's (or `.partial`'s) bytes against its file name and,
/// when the stanza is bound, its cluster. The name is read with the
/// segment size the header gives. Returns the file and its header.
pub fn check_segment(
    name: &str,
    bytes: &[u8],
    system_identifier: Option<u64>,
) -> Result<(WalFile, SegmentHeader), SegmentProblem> {
    let h = SegmentHeader::parse(bytes).ok_or_else(|| {
        SegmentProblem::NotWal(format!("{} bytes, shorter than a page header", bytes.len()))
    })?;
    if h.major_version().is_none() {
        return Err(SegmentProblem::NotWal(format!(
            "unknown page magic {:#06X}",
            h.magic
        )));
    }
    if h.info & XLP_LONG_HEADER == 0 {
        return Err(SegmentProblem::NotWal(
            "the first page has no long header".into(),
        ));
    }
    let size_ok = h.segment_size.is_power_of_two() && (1 << 20..=1 << 30).contains(&h.segment_size);
    let block_ok = h.block_size.is_power_of_two() && (1 << 10..=1 << 15).contains(&h.block_size);
    if !size_ok || !block_ok {
        return Err(SegmentProblem::NotWal(format!(
            "segment size {} / block size {} are not PostgreSQL's",
            h.segment_size, h.block_size
        )));
    }
    if bytes.len() as u64 != u64::from(h.segment_size) {
        return Err(SegmentProblem::NotWal(format!(
            "{} bytes, the header says segments are {}",
            bytes.len(),
            h.segment_size
        )));
    }
    if let Some(expected) = system_identifier {
        if h.system_identifier != expected {
            return Err(SegmentProblem::OtherCluster {
                expected,
                found: h.system_identifier,
            });
        }
    }
    let file = WalFile::parse(name, h.segment_size)
        .filter(WalFile::is_segment_data)
        .ok_or_else(|| SegmentProblem::Misnamed(format!("{name:?} is not a segment name")))?;
    let (WalFile::Segment { timeline, segno } | WalFile::Partial { timeline, segno }) = file else {
        return Err(SegmentProblem::Misnamed(format!(
            "{name:?} is not a segment name"
        )));
    };
    let named_address = segno * u64::from(h.segment_size);
    if h.page_address != named_address {
        return Err(SegmentProblem::Misnamed(format!(
            "the first page is at {}, the name says {}",
            lsn(h.page_address),
            lsn(named_address)
        )));
    }
    // A new timeline's first segment is a copy of its parent's up to the
    // switch point, so its first page may carry an older timeline.
    if h.timeline > timeline || h.timeline == 0 {
        return Err(SegmentProblem::Misnamed(format!(
            "the first page is on timeline {}, the name says {timeline}",
            h.timeline
        )));
    }
    Ok((file, h))
}

/// A stanza: the name under which one cluster's WAL and base backups are
/// kept, bound on first use to the cluster's system identifier so that no
/// other cluster's WAL can ever be mixed into its history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StanzaRecord {
    pub v: u32,
    pub stanza: String,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
    /// PostgreSQL major version of the first segment archived.
    pub pg_version: u32,
    pub created: crate::format::time::Timestamp,
}

/// Stanza names are object-name parts and appear in shell commands:
/// letters, digits, `-` and `_`, 1 to 64 of them.
pub fn check_stanza_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "stanza name {name:?} must be 1-64 letters, digits, '-' or '_'"
        ))
    }
}

/// `XLP_FIRST_IS_CONTRECORD`: the page starts with the rest of a record
/// begun on an earlier page.
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const SHORT_PAGE_HEADER: usize = 24;
const RECORD_HEADER: usize = 24;
const RM_XLOG_ID: u8 = 0;
const XLOG_SWITCH: u8 = 0x40;

/// The start of the last record that lies whole in this segment, found by
/// following the records from the first one that starts in it (each
/// record's `xl_prev` must name the one before, which tells the end of the
/// WAL from stale bytes of a recycled segment). `None` when no record
/// starts and ends in the segment.
///
/// bk-wal restore uses it as the default recovery target: recovery that
/// cannot reach the last archived record stops with FATAL instead of
/// promoting early.
pub fn last_whole_record(segment: &[u8]) -> Option<u64> {
    let h = SegmentHeader::parse(segment)?;
    let page = h.block_size as usize;
    // PostgreSQL's block sizes (check_segment): anything else is not a
    // segment, and a page shorter than its own header cannot be walked
    // (the fuzzer's first find: a slice past the end of such a page).
    let block_ok = page.is_power_of_two() && (1 << 10..=1 << 15).contains(&page);
    if !block_ok || !segment.len().is_multiple_of(page) {
        return None;
    }
    // Record bytes without page headers, and where each run of them is.
    let mut data = Vec::with_capacity(segment.len());
    let mut runs = Vec::with_capacity(segment.len() / page);
    for (i, p) in segment.chunks(page).enumerate() {
        let header = if i == 0 {
            SegmentHeader::LEN
        } else {
            SHORT_PAGE_HEADER
        };
        runs.push((data.len(), i * page + header));
        data.extend_from_slice(&p[header..]);
    }
    let physical = |logical: usize| -> Option<u64> {
        let run = runs.partition_point(|(start, _)| *start <= logical) - 1;
        h.page_address
            .checked_add((runs[run].1 + logical - runs[run].0) as u64)
    };
    let align = |n: usize| (n + 7) & !7;
    let mut pos = if h.info & XLP_FIRST_IS_CONTRECORD != 0 {
        let rem_len = u32::from_le_bytes(segment[16..20].try_into().ok()?) as usize;
        align(rem_len)
    } else {
        0
    };
    let (mut last, mut prev): (Option<u64>, Option<u64>) = (None, None);
    while pos + RECORD_HEADER <= data.len() {
        let field = |at: usize, n: usize| &data[pos + at..pos + at + n];
        let tot_len = u32::from_le_bytes(field(0, 4).try_into().ok()?) as usize;
        let xl_prev = u64::from_le_bytes(field(8, 8).try_into().ok()?);
        let (info, rmid) = (field(16, 1)[0], field(17, 1)[0]);
        if tot_len < RECORD_HEADER || prev.is_some_and(|p| p != xl_prev) {
            break; // the end of the WAL, or stale bytes after it
        }
        if pos + tot_len > data.len() {
            break; // continues in the next segment
        }
        let start = physical(pos)?;
        last = Some(start);
        prev = Some(start);
        if rmid == RM_XLOG_ID && info & 0xF0 == XLOG_SWITCH {
            break; // the rest of the segment is unused
        }
        pos = align(pos + tot_len);
    }
    last
}

/// A WAL position as PostgreSQL prints it (`16/B374D848`).
pub fn lsn(pos: u64) -> String {
    format!("{:X}/{:X}", pos >> 32, pos & 0xFFFF_FFFF)
}

/// Parses `16/B374D848`.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

#[cfg(test)]
mod tests {

    /// Regression (fuzzer, tests/fuzz wal): a header whose block size is
    /// shorter than a page header made the page walk slice past its end.
    #[test]
    fn regression_a_block_size_shorter_than_a_page_header_is_not_walked() {
        let bytes: &[u8] = &[
            65, 47, 97, 97, 68, 97, 97, 97, 69, 68, 47, 69, 68, 97, 97, 97, 97, 97, 0, 0, 0, 0, 0,
            0, 0, 0, 69, 68, 47, 69, 68, 67, 67, 67, 67, 67, 10, 0, 0, 0, 67, 67, 67, 67, 67, 0, 0,
            0, 0, 10,
        ];
        assert_eq!(last_whole_record(bytes), None);
    }
    use super::*;
    use proptest::prelude::*;

    const SEG: u32 = 16 << 20;

    fn segment(timeline: u32, segno: u64, sysid: u64) -> Vec<u8> {
        let mut b = vec![0u8; SEG as usize];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&timeline.to_le_bytes());
        b[8..16].copy_from_slice(&(segno * u64::from(SEG)).to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&SEG.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn names_parse_as_postgresql_writes_them() {
        assert_eq!(
            WalFile::parse("000000010000000000000003", SEG),
            Some(WalFile::Segment {
                timeline: 1,
                segno: 3
            })
        );
        assert_eq!(
            WalFile::parse("0000000200000001000000FF", SEG),
            Some(WalFile::Segment {
                timeline: 2,
                segno: 256 + 255
            })
        );
        assert_eq!(
            WalFile::parse("00000002.history", SEG),
            Some(WalFile::History { timeline: 2 })
        );
        assert_eq!(
            WalFile::parse("000000010000000000000002.00000028.backup", SEG),
            Some(WalFile::Backup {
                timeline: 1,
                segno: 2,
                offset: 0x28
            })
        );
        assert_eq!(
            WalFile::parse("000000010000000000000009.partial", SEG),
            Some(WalFile::Partial {
                timeline: 1,
                segno: 9
            })
        );
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000030",
            "00000001000000000000000g",
            "000000010000000000000100",
            "00000001.History",
            "../000000010000000000000003",
            "000000010000000000000003.ready",
            "00000001000000000000000a",
        ] {
            assert_eq!(WalFile::parse(bad, SEG), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn names_round_trip(timeline in 1u32.., segno in 0u64..(1 << 40), offset: u32, kind in 0..4) {
            let f = match kind {
                0 => WalFile::Segment { timeline, segno },
                1 => WalFile::Partial { timeline, segno },
                2 => WalFile::History { timeline },
                _ => WalFile::Backup { timeline, segno, offset },
            };
            prop_assert_eq!(WalFile::parse(&f.name(SEG), SEG), Some(f));
        }

        #[test]
        fn any_bytes_parse_or_refuse_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = SegmentHeader::parse(&bytes);
            let _ = check_segment("000000010000000000000001", &bytes, Some(7));
        }
    }

    #[test]
    fn segments_are_checked_against_name_and_cluster() {
        let name = "000000010000000000000005";
        let good = segment(1, 5, 42);
        let (file, h) = check_segment(name, &good, Some(42)).unwrap();
        assert_eq!(
            file,
            WalFile::Segment {
                timeline: 1,
                segno: 5
            }
        );
        assert_eq!((h.system_identifier, h.major_version()), (42, Some(15)));
        assert!(check_segment(name, &good, None).is_ok());
        assert_eq!(
            check_segment(name, &good, Some(43)),
            Err(SegmentProblem::OtherCluster {
                expected: 43,
                found: 42
            })
        );
        let misnamed = "000000010000000000000006";
        assert!(matches!(
            check_segment(misnamed, &good, Some(42)),
            Err(SegmentProblem::Misnamed(_))
        ));
        assert!(matches!(
            check_segment("00000001.history", &good, Some(42)),
            Err(SegmentProblem::Misnamed(_))
        ));
        // A new timeline's first segment starts with its parent's pages.
        assert!(check_segment("000000020000000000000005", &good, Some(42)).is_ok());
        assert!(check_segment("000000020000000000000005.partial", &good, Some(42)).is_ok());
        assert!(check_segment(name, &segment(2, 5, 42), Some(42)).is_err());
        let mut bad_magic = good.clone();
        bad_magic[0] = 0;
        assert!(matches!(
            check_segment(name, &bad_magic, None),
            Err(SegmentProblem::NotWal(_))
        ));
        assert!(matches!(
            check_segment(name, &good[..8192], None),
            Err(SegmentProblem::NotWal(_))
        ));
        assert!(matches!(
            check_segment(name, b"hello", None),
            Err(SegmentProblem::NotWal(_))
        ));
    }

    /// A 3-page segment (page 1 KiB) holding records of `lens` bytes,
    /// chained by xl_prev, written across page headers as PostgreSQL does.
    fn records_segment(lens: &[usize], switch_last: bool) -> (Vec<u8>, Vec<u64>) {
        let page = 1024usize;
        let mut seg = vec![0u8; 3 * page];
        let base = 7 * 3 * page as u64;
        seg[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        seg[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        seg[4..8].copy_from_slice(&1u32.to_le_bytes());
        seg[8..16].copy_from_slice(&base.to_le_bytes());
        seg[32..36].copy_from_slice(&((3 * page) as u32).to_le_bytes());
        seg[36..40].copy_from_slice(&(page as u32).to_le_bytes());
        for p in 1..3 {
            let h = &mut seg[p * page..];
            h[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
            h[8..16].copy_from_slice(&(base + (p * page) as u64).to_le_bytes());
        }
        // Logical writer that skips page headers.
        let mut phys = SegmentHeader::LEN;
        let mut starts = Vec::new();
        let mut prev = 0xABCDu64;
        let put = |seg: &mut Vec<u8>, phys: &mut usize, bytes: &[u8]| {
            for b in bytes {
                if (*phys).is_multiple_of(page) {
                    *phys += SHORT_PAGE_HEADER;
                }
                seg[*phys] = *b;
                *phys += 1;
            }
        };
        for (i, len) in lens.iter().enumerate() {
            let start = base + phys as u64;
            starts.push(start);
            let mut rec = vec![0x5Au8; *len];
            rec[0..4].copy_from_slice(&(*len as u32).to_le_bytes());
            rec[8..16].copy_from_slice(&prev.to_le_bytes());
            rec[16] = if switch_last && i == lens.len() - 1 {
                XLOG_SWITCH
            } else {
                0x10
            };
            rec[17] = if switch_last && i == lens.len() - 1 {
                RM_XLOG_ID
            } else {
                3
            };
            put(&mut seg, &mut phys, &rec);
            phys = (phys + 7) & !7;
            prev = start;
        }
        (seg, starts)
    }

    #[test]
    fn the_last_whole_record_is_found_across_page_headers() {
        let (seg, starts) = records_segment(&[100, 900, 60, 24], false);
        assert_eq!(last_whole_record(&seg), Some(*starts.last().unwrap()));
        // A record that runs past the segment's end is not whole.
        let (seg, starts) = records_segment(&[100, 900, 60, 1500], false);
        assert!(starts[3] < 7 * 3 * 1024 + 3 * 1024);
        let mut cut = seg.clone();
        // Pretend the last record is longer than what is left.
        let at = (starts[3] - 7 * 3 * 1024) as usize;
        cut[at..at + 4].copy_from_slice(&5000u32.to_le_bytes());
        assert_eq!(last_whole_record(&cut), Some(starts[2]));
        // Stale bytes after the end do not chain to it.
        let (mut stale, starts) = records_segment(&[100, 200, 300], false);
        let end = ((starts[2] - 7 * 3 * 1024) as usize + 300 + 7) & !7;
        stale[end..end + 4].copy_from_slice(&64u32.to_le_bytes());
        stale[end + 8..end + 16].copy_from_slice(&12345u64.to_le_bytes());
        assert_eq!(last_whole_record(&stale), Some(starts[2]));
        // A switch record ends the segment.
        let (seg, starts) = records_segment(&[100, 40], true);
        assert_eq!(last_whole_record(&seg), Some(starts[1]));
    }

    #[test]
    fn lsns_print_and_parse_as_postgresql_does() {
        assert_eq!(lsn(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/3000028"), Some(0x300_0028));
        assert_eq!(parse_lsn("x/1"), None);
    }
}
