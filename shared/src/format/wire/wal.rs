//! The records bk-wal prints.

use super::v1;
use crate::format::id::ObjectId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `bk-wal restore`: which base backup went where, and the recovery
/// settings written beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRestoreRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub stanza: String,
    pub into: String,
    /// The base backup's snapshot.
    pub backup: ObjectId,
    /// The timeline recovery follows.
    pub timeline: u32,
    pub files: u64,
    pub bytes: u64,
    /// postgresql.auto.conf settings (restore_command, recovery_target_*).
    pub settings: BTreeMap<String, String>,
}

/// `bk-wal info`, first line: the stanza and its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalStanzaRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub stanza: String,
    /// As text: JSON readers lose precision on 64-bit integers.
    pub system_identifier: String,
    pub pg_version: u32,
    pub segment_size: u32,
    /// WAL files archived and their stored bytes.
    pub files: u64,
    pub bytes: u64,
    pub backups: u64,
}

/// `bk-wal info`: one timeline's archived segments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalTimelineRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub stanza: String,
    pub timeline: u32,
    pub first: String,
    pub last: String,
    pub segments: u64,
    /// Whether its `.history` file is archived (every timeline after 1
    /// needs one to be followed).
    pub history: bool,
    /// Missing runs of segments, first and last missing file.
    #[serde(default)]
    pub gaps: Vec<(String, String)>,
}

/// `bk-wal info`: one base backup and what it can recover to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalBackupRecord {
    #[serde(default = "v1")]
    pub v: u32,
    pub stanza: String,
    pub id: ObjectId,
    pub time: crate::format::time::Timestamp,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    /// The earliest point a recovery from it reaches (consistency).
    pub recoverable_from: String,
    /// The last segment of unbroken WAL from its start on its timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recoverable_to_wal: Option<String>,
    /// Every segment from its start to its stop is archived.
    pub wal_complete: bool,
}
