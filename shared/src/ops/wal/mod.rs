//! PostgreSQL continuous archiving and point-in-time recovery (bk-wal).
//!
//! * [`archive`]: `archive_command` and `restore_command` — WAL files as
//!   write-once sealed objects under `wal/`, bound per stanza to one
//!   cluster.

pub mod archive;
