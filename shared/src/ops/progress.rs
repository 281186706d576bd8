//! How far a long operation has come, for people (a bar on a terminal)
//! and wrappers (`--progress=json`). The library only counts, with relaxed
//! atomics a hot loop can afford; the binaries read the counters and print
//! (bk::cli::OutputArgs).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one operation: items of one unit (files of a backup, packs
/// of a verify, segments of a WAL restore) and their bytes. Totals are 0
/// while unknown (a backup does not walk its tree twice to learn its size).
#[derive(Debug)]
pub struct Progress {
    unit: &'static str,
    items: AtomicU64,
    bytes: AtomicU64,
    total_items: AtomicU64,
    total_bytes: AtomicU64,
}

/// One reading of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub items: u64,
    pub bytes: u64,
    pub total_items: u64,
    pub total_bytes: u64,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::counting("files")
    }
}

impl Progress {
    /// Counters of items called `unit` (plural: "files", "packs").
    pub fn counting(unit: &'static str) -> Self {
        Progress {
            unit,
            items: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total_items: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
        }
    }

    pub fn unit(&self) -> &'static str {
        self.unit
    }

    pub fn add_item(&self) {
        self.items.fetch_add(1, Ordering::Relaxed);
    }

    /// A backup's entry: files are counted (as a restore counts them, not
    /// directories or links), and an unchanged file, done without a read
    /// because it came with its chunk ids, adds its size at once.
    pub fn add_entry(&self, entry: &crate::format::wire::Entry) {
        if entry.kind == crate::format::wire::Kind::File {
            self.add_item();
            if !entry.chunks.is_empty() {
                self.add_bytes(entry.size);
            }
        }
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// What the whole operation covers, when known before it starts.
    pub fn set_totals(&self, items: u64, bytes: u64) {
        self.total_items.store(items, Ordering::Relaxed);
        self.total_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn read(&self) -> Snapshot {
        Snapshot {
            items: self.items.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            total_items: self.total_items.load(Ordering::Relaxed),
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
        }
    }
}
