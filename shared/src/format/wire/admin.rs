//! The records bk-repo prints about the repository itself: its config, key
//! files, locks, storage use and the machine's speed. Typed here, like the
//! stream records, so scripts can rely on their fields and tests on their
//! shape.

use super::{v1, Timestamp};
use crate::format::chunker::ChunkerParams;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a lock holder uses the repository (see store/locks.rs for who
/// takes which).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    Shared,
    Prune,
    Exclusive,
}

impl LockMode {
    /// Shared locks never conflict with each other, so backups run at
    /// once; two prunes must never both delete; exclusive excludes all.
    pub fn conflicts_with(self, other: LockMode) -> bool {
        use LockMode::*;
        matches!(
            (self, other),
            (Exclusive, _) | (_, Exclusive) | (Prune, Prune)
        )
    }
}

/// What a key file is unlocked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Passphrase,
    Age,
}

/// A repository's identity and parameters, printed by `bk-repo init`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepositoryRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub location: String,
    pub id: String,
    /// On-disk format version.
    pub format: u32,
    pub created: Timestamp,
    pub chunker: ChunkerParams,
    pub compression: i32,
    pub pack_size: u32,
    pub cipher: String,
    /// The key file created with the repository.
    pub key: String,
}

/// A key file: listed (with its metadata), added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KeyRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<KeyKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The public half of an identity key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// The key this process opened the repository with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub added: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// A lock object. `unreadable` locks (another key, or damaged) carry only
/// their name and staleness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LockRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// When the holder last refreshed it, by the holder's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
    pub stale: bool,
}

/// One block of the pipeline and its rate on this machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub block: String,
    /// MB (10^6 bytes) of input per second, one decimal.
    pub mb_per_s: f64,
    pub detail: String,
}

/// Objects of one kind: how many and how many bytes they occupy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectCount {
    pub count: u64,
    pub bytes: u64,
}

/// What a repository holds and what its index costs in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StatsRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: String,
    pub snapshots: u64,
    pub chunks: u64,
    pub packs: u64,
    /// Bytes stored, all kinds together.
    pub bytes: u64,
    /// By kind: `config`, `key`, `pack`, `index`, `snapshot`, `lock`, `gc`.
    pub objects: BTreeMap<String, ObjectCount>,
    pub index_memory_bytes: u64,
    pub index_bytes_per_chunk: f64,
}

#[cfg(test)]
mod tests {
    use super::super::{parse_line, write_record, Record};
    use super::*;

    fn line(rec: &Record) -> String {
        let mut buf = Vec::new();
        write_record(&mut buf, rec).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn admin_records_have_exact_shapes() {
        let removed = Record::Key(KeyRecord {
            v: 1,
            id: "k1".into(),
            removed: true,
            ..KeyRecord::default()
        });
        assert_eq!(
            line(&removed),
            "{\"type\":\"key\",\"v\":1,\"id\":\"k1\",\"removed\":true}\n"
        );
        let unreadable = Record::Unlocked(LockRecord {
            v: 1,
            id: "l1".into(),
            unreadable: true,
            stale: true,
            ..LockRecord::default()
        });
        assert_eq!(
            line(&unreadable),
            "{\"type\":\"unlocked\",\"v\":1,\"id\":\"l1\",\"unreadable\":true,\"stale\":true}\n"
        );
        let lock = Record::Lock(LockRecord {
            v: 1,
            id: "l2".into(),
            mode: Some(LockMode::Prune),
            pid: Some(7),
            ..LockRecord::default()
        });
        assert_eq!(
            line(&lock),
            "{\"type\":\"lock\",\"v\":1,\"id\":\"l2\",\"mode\":\"prune\",\"pid\":7,\"stale\":false}\n"
        );
    }

    #[test]
    fn admin_records_round_trip() {
        let mut objects = BTreeMap::new();
        objects.insert("pack".to_string(), ObjectCount { count: 2, bytes: 9 });
        let recs = [
            Record::Stats(StatsRecord {
                v: 1,
                id: "r".into(),
                snapshots: 1,
                chunks: 3,
                packs: 2,
                bytes: 9,
                objects,
                index_memory_bytes: 120,
                index_bytes_per_chunk: 40.0,
            }),
            Record::Speed(SpeedRecord {
                v: 1,
                block: "zstd".into(),
                mb_per_s: 512.5,
                detail: "level 3".into(),
            }),
            Record::Key(KeyRecord {
                v: 1,
                id: "k".into(),
                kind: Some(KeyKind::Age),
                current: Some(true),
                ..KeyRecord::default()
            }),
        ];
        for rec in recs {
            let text = line(&rec);
            assert_eq!(
                parse_line(text.trim_end().as_bytes(), 1).unwrap(),
                rec,
                "{text}"
            );
        }
    }

    #[test]
    fn lock_modes_conflict_as_documented() {
        use LockMode::*;
        assert!(!Shared.conflicts_with(Shared));
        assert!(!Shared.conflicts_with(Prune));
        assert!(Prune.conflicts_with(Prune));
        assert!(Exclusive.conflicts_with(Shared));
        assert!(Shared.conflicts_with(Exclusive));
    }
}
