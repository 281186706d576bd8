//! PostgreSQL WAL segment headers, names and LSNs (bk-wal push and fetch),
//! and SQLite WAL headers and frame headers (bk-sqlite).
#![no_main]
use bk::format::{sqlite, wal};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wal::SegmentHeader::parse(data);
    let _ = wal::last_whole_record(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wal::WalFile::parse(text, 16 << 20);
        let _ = wal::parse_lsn(text);
        let _ = wal::check_stanza_name(text);
        let name = text.lines().next().unwrap_or_default();
        let _ = wal::check_segment(name, data, Some(42));
    }
    if let Ok(h) = sqlite::WalHeader::parse(data) {
        let _ = h.frame_len();
        let _ = h.frame_offset(u32::MAX as u64);
    }
    let _ = sqlite::FrameHeader::parse(data);
    let _ = sqlite::checksum(data.first().is_some_and(|b| b & 1 == 1), [1, 2], data);
});
