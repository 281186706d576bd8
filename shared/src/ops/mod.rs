//! What the tools do, built on the store: backup (`put`, from `source`,
//! which `exclude` selects),
//! `restore`, `verify` (with its `metrics`), retention (`policy`, `prune`)
//! and garbage collection (`gc`), the building-block `speed` check and repository `stats`.

pub mod copy;
pub mod exclude;
pub mod gc;
pub mod metrics;
pub mod policy;
pub mod progress;
pub mod prune;
pub mod put;
pub mod restore;
pub mod source;
pub mod speed;
pub mod sqlite;
pub mod stats;
pub mod verify;
pub mod wal;
