use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Continuous SQLite replication into a bk repository, and point-in-time
/// restore.
///
/// A sidecar runs `bk-sqlite replicate DB...` beside the application; an
/// init container runs `bk-sqlite restore DB --if-db-not-exists
/// --if-replica-exists` before it starts. The repository and key come
/// from BK_REPO and BK_IDENTITY_FILE (or BK_PASSWORD_FILE), as for every
/// bk tool.
#[derive(Parser, Debug)]
#[command(name = "bk-sqlite", version)]
pub struct Cli {
    #[command(flatten)]
    pub output: bk::cli::OutputArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Replicate databases until SIGTERM: JSON-lines events on stdout
    /// (start, lineage, sync, checkpoint, snapshot, error, stop)
    ///
    /// SIGTERM or SIGINT ships what is committed and exits 0. Each database
    /// is replicated under its file name, or --name (one database only).
    /// The events, one JSON line each: start; lineage (a new lineage, and
    /// why); sync (a segment stored: frames, commits, bytes); checkpoint;
    /// snapshot; retention (what --keep-within removed); error (also
    /// printed on stderr; the round is retried next interval); stop.
    ///
    /// A database that does not exist yet is waited for (a waiting event),
    /// as a sidecar may start before its application creates it. A database
    /// that cannot be replicated (not in WAL mode, leased by another
    /// replicator) ends the command with its exit status.
    Replicate {
        /// The databases (each in WAL mode); each is replicated under its
        /// file name unless --name is given
        #[arg(value_name = "DB", required = true)]
        dbs: Vec<PathBuf>,
        /// The name in the repository (with one DB only)
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// How often committed transactions are shipped (one upload per
        /// database at most per interval; none while nothing commits)
        ///
        /// The replica is at most about one interval behind the database;
        /// a restore by time lands at most one interval before the time
        /// asked for. DURATION is one or more terms of a number and a unit
        /// (ms, s, min, h, d, w; for example 1h30min), as in every bk tool;
        /// a bare m is refused (minutes or months? write min or, for
        /// retention in bk-prune, mo).
        #[arg(
            long,
            env = "BK_SQLITE_SYNC_INTERVAL",
            default_value = "1s",
            value_name = "DURATION"
        )]
        sync_interval: String,
        /// How often a changed database is snapshotted (through the chunk
        /// store: a snapshot stores only changed chunks)
        ///
        /// An hourly snapshot of a large database stores only the chunks
        /// that changed in that hour. A database that did not change is not
        /// snapshotted again.
        #[arg(
            long,
            env = "BK_SQLITE_SNAPSHOT_INTERVAL",
            default_value = "1h",
            value_name = "DURATION"
        )]
        snapshot_interval: String,
        /// A PASSIVE checkpoint at most this long after a commit
        ///
        /// Or earlier, once the log holds --checkpoint-frames frames.
        #[arg(long, default_value = "1min", value_name = "DURATION")]
        checkpoint_interval: String,
        /// … or once the log holds this many frames
        ///
        /// A PASSIVE checkpoint once the -wal file holds N frames, or
        /// --checkpoint-interval after a commit, whichever comes first.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        checkpoint_frames: u64,
        /// TRUNCATE the log (then snapshot) once the -wal file is larger
        /// than this many MiB
        #[arg(long, default_value_t = 256, value_name = "MIB")]
        max_wal_mib: u64,
        /// Apply retention after every snapshot: keep every state of this
        /// long ago and later restorable, remove the rest (e.g. 168h)
        ///
        /// As `bk-sqlite prune --keep-within` does, so that no separate
        /// cleanup job is needed; the retention event says what was removed.
        /// bk-prune still reclaims the forgotten snapshots' data.
        #[arg(long, env = "BK_SQLITE_KEEP_WITHIN", value_name = "DURATION")]
        keep_within: Option<String>,
        /// Rewrite Prometheus metrics to FILE after every sync (for
        /// node_exporter's textfile collector)
        ///
        /// Written atomically. The series (replication lag, last sync, -wal
        /// size, snapshot age, errors) are listed under METRICS in
        /// bk-sqlite(1).
        #[arg(long, env = "BK_SQLITE_METRICS", value_name = "FILE")]
        metrics: Option<PathBuf>,
        /// Who replicates: a replicator started again under the same
        /// holder (a restarted pod) takes the lease over; default: the host
        /// name
        ///
        /// A replicator under another holder is refused with exit 11, so two
        /// replicators never ship one database. Pod names change when a
        /// Deployment replaces a pod: give such a sidecar a stable holder
        /// (BK_SQLITE_HOLDER=paperless).
        #[arg(long, env = "BK_SQLITE_HOLDER", value_name = "NAME")]
        holder: Option<String>,
        /// Take the lease from another holder (only when that replicator is
        /// gone)
        #[arg(long)]
        takeover: bool,
        /// Switch a database not in WAL mode to WAL mode (the only change
        /// bk-sqlite ever makes to a database, and only with this flag)
        #[arg(long)]
        set_wal: bool,
    },
    /// Restore a database: the latest state, or the state as of a time,
    /// verified (page checksum, integrity_check) before it gets its name
    ///
    /// Restores the replica named by DB's file name (or --name) to DB (or
    /// -o). Without --timestamp, the latest state; with it, the last state
    /// committed at or before TIME, at most one sync interval earlier than
    /// TIME.
    ///
    /// The result is written to a temporary file beside the output, its
    /// page checksum compared with the one recorded when the state was
    /// replicated, PRAGMA integrity_check run on it, and fsynced; stale
    /// -wal and -shm files beside the output are removed, the file is
    /// renamed into place and the directory fsynced. Nothing appears under
    /// the output's name unless all of that succeeded.
    Restore {
        /// Where the database goes (and, by its file name, which replica
        /// unless --name is given)
        #[arg(value_name = "DB")]
        db: PathBuf,
        /// The replica's name in the repository
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// The state as of this time (RFC 3339, e.g. 2026-12-03T10:00:00Z)
        ///
        /// The last state committed at or before TIME, from the newest
        /// lineage that started at or before it. A time before the
        /// replica's first state is refused (exit 2).
        #[arg(long, value_name = "TIME")]
        timestamp: Option<String>,
        /// Write here instead of DB
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: Option<PathBuf>,
        /// Succeed without restoring when the output already exists
        ///
        /// Exit 0. For an init container: a restarted pod keeps the
        /// database it has, and only an empty volume gets the replica.
        #[arg(long)]
        if_db_not_exists: bool,
        /// Succeed without restoring when the repository holds no replica
        ///
        /// Exit 0 (without it: 15). For an init container, so that a first
        /// deployment, which has no replica yet, starts normally.
        #[arg(long)]
        if_replica_exists: bool,
        /// Replace an existing output
        ///
        /// Without it (and without --if-db-not-exists) an existing output is
        /// refused with exit 16, so a restore never overwrites a live
        /// database by accident.
        #[arg(long)]
        force: bool,
    },
    /// List replicated databases and their lineages (JSON lines): what can
    /// be restored, how old the last state is, the replicator holding each
    ///
    /// One line per lineage: the database, the lineage, the earliest and
    /// latest state it can restore to (restorable_from, restorable_to),
    /// whether it is the current one, snapshots, segments, bytes, the
    /// database's size, the age of its last state in seconds, and the
    /// replicator holding the lease.
    Ls {
        /// Only this database (a name, or a path whose file name is one)
        #[arg(value_name = "DB")]
        db: Option<String>,
    },
    /// Retention: keep every state from DURATION before each database's
    /// newest replicated state restorable and remove everything else
    /// (bk-prune then reclaims the forgotten snapshots' data)
    ///
    /// Segments are deleted and snapshots forgotten, one JSON gc line each.
    /// The window ends at the newest replicated state, not at the clock, so
    /// a stopped replicator's history does not expire under it. bk-prune
    /// then reclaims the forgotten snapshots' data in its two phases, as
    /// for every snapshot.
    Prune {
        /// Keep every state this long before the newest (e.g. 168h or 7d)
        ///
        /// DURATION is one or more terms of a number and a unit (ms, s, min,
        /// h, d, w), as in every bk tool; a bare m is refused.
        #[arg(long, value_name = "DURATION")]
        keep_within: String,
        /// Only these databases (default: all)
        #[arg(value_name = "DB")]
        dbs: Vec<String>,
        /// Print the plan, remove nothing
        ///
        /// The same gc lines a real run prints.
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}
