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
