//! The records bk-sqlite prints.

use super::v1;
use crate::format::time::Timestamp;
use serde::{Deserialize, Serialize};

/// `bk-sqlite replicate`: something that happened to one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqliteEventRecord {
    #[serde(default = "v1")]
    pub v: u32,
    /// `waiting` (for the database to be created), `start`, `lineage`,
    /// `sync`, `snapshot`, `checkpoint`, `retention`, `error` or `stop`;
    /// readers skip events they do not know.
    pub event: String,
    pub db: String,
    pub time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lineage: Option<String>,
    /// The replica object the event wrote (segments and snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Log frames shipped (sync) or in the log (checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<u64>,
    /// Bytes stored in the repository by this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<u64>,
    /// Why (a new lineage, an error, a checkpoint's mode and outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl SqliteEventRecord {
    pub fn new(event: &str, db: &str) -> SqliteEventRecord {
        SqliteEventRecord {
            v: super::VERSION,
            event: event.to_string(),
            db: db.to_string(),
            time: Timestamp::now(),
            lineage: None,
            seq: None,
            frames: None,
            commits: None,
            stored: None,
            message: None,
        }
    }
}

/// `bk-sqlite ls`: one lineage of a replicated database, and what can be
/// restored from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqliteLineageRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub db: String,
    pub lineage: String,
    /// The earliest state a restore can reach (its oldest snapshot).
    pub restorable_from: Timestamp,
    /// The latest state a restore can reach (its last commit).
    pub restorable_to: Timestamp,
    /// Whether a timestamp restore after `restorable_to` lands here (the
    /// newest lineage).
    pub current: bool,
    pub snapshots: u64,
    pub segments: u64,
    /// Bytes of its segments plus its snapshots' logical size.
    pub bytes: u64,
    /// The database's size at its last commit.
    pub db_bytes: u64,
    /// Seconds from its last commit to now.
    pub age_seconds: f64,
    /// The replicator holding the database's lease, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicator: Option<String>,
}

/// `bk-sqlite restore`: what was restored and how it was checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SqliteRestoreRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub db: String,
    pub output: String,
    pub lineage: String,
    /// The state restored: its commit time.
    pub state_time: Timestamp,
    pub snapshot: crate::format::id::ObjectId,
    pub segments: u64,
    pub commits: u64,
    pub bytes: u64,
    /// The page checksum of the result, equal to the recorded one.
    pub sum: String,
    /// `PRAGMA integrity_check` said "ok".
    pub integrity_check: bool,
}
