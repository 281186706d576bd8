//! Continuous SQLite replication with point-in-time restore (bk-sqlite).
//!
//! * [`live`]: the database beside the application — bk-sqlite's own
//!   connections, the pin, the writer barrier, checkpoints, and the `-wal`
//!   file read directly.
//! * [`replica`]: what lives in the repository — snapshots through the
//!   chunk store, sealed segments of shipped frames, lineages, the lease.
//! * [`replicate`]: the sidecar loop: sync, checkpoint, snapshot, resume
//!   or a new lineage on start.
//! * [`restore`]: the latest state or the state as of a time, verified
//!   before it gets its name.
//! * [`expire`]: retention by time window, planned then executed.
//! * [`info`]: `bk-sqlite ls`.

pub mod expire;
pub mod info;
pub mod live;
pub mod replica;
pub mod replicate;
pub mod restore;
