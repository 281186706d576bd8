//! PostgreSQL continuous archiving and point-in-time recovery (bk-wal).
//!
//! * [`archive`]: `archive_command` and `restore_command` — WAL files as
//!   write-once sealed objects under `wal/`, bound per stanza to one
//!   cluster.
//! * [`ahead`]: archive_command pushes the segments marked `.ready` after
//!   its own in parallel, so PostgreSQL's next calls return at once.
//! * [`prefetch`]: during recovery, the next segments fetched in the
//!   background into a private spool.
//! * [`backup`]: base backups through the chunk store, between
//!   pg_backup_start and pg_backup_stop on one [`session`].
//! * [`restore`]: point-in-time recovery: the base backup, the timeline
//!   path and the recovery target.
//! * [`info`]: timelines, gaps and what each base backup can recover to.
//! * [`expire`]: retention of base backups and the WAL they need, planned
//!   then executed, WAL deleted in two phases.

pub mod ahead;
pub mod archive;
pub mod backup;
pub mod expire;
pub mod helper;
pub mod info;
pub mod prefetch;
pub mod restore;
pub mod session;
