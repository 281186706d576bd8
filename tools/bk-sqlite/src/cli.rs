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
    pub repo: bk::cli::RepoArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Replicate databases until SIGTERM: JSON-lines events on stdout
    /// (start, lineage, sync, checkpoint, snapshot, error, stop)
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
        #[arg(
            long,
            env = "BK_SQLITE_SYNC_INTERVAL",
            default_value = "1s",
            value_name = "DURATION"
        )]
        sync_interval: String,
        /// How often a changed database is snapshotted (through the chunk
        /// store: a snapshot stores only changed chunks)
        #[arg(
            long,
            env = "BK_SQLITE_SNAPSHOT_INTERVAL",
            default_value = "1h",
            value_name = "DURATION"
        )]
        snapshot_interval: String,
        /// A PASSIVE checkpoint at most this long after a commit
        #[arg(long, default_value = "1min", value_name = "DURATION")]
        checkpoint_interval: String,
        /// … or once the log holds this many frames
        #[arg(long, default_value_t = 1000, value_name = "N")]
        checkpoint_frames: u64,
        /// TRUNCATE the log (then snapshot) once the -wal file is larger
        /// than this many MiB
        #[arg(long, default_value_t = 256, value_name = "MIB")]
        max_wal_mib: u64,
        /// Apply retention after every snapshot: keep every state of this
        /// long ago and later restorable, remove the rest (e.g. 168h)
        #[arg(long, env = "BK_SQLITE_KEEP_WITHIN", value_name = "DURATION")]
        keep_within: Option<String>,
        /// Rewrite Prometheus metrics to FILE after every sync (for
        /// node_exporter's textfile collector)
        #[arg(long, env = "BK_SQLITE_METRICS", value_name = "FILE")]
        metrics: Option<PathBuf>,
        /// Who replicates: a replicator started again under the same
        /// holder (a restarted pod) takes the lease over; default: the host
        /// name
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
    Restore {
        /// Where the database goes (and, by its file name, which replica
        /// unless --name is given)
        #[arg(value_name = "DB")]
        db: PathBuf,
        /// The replica's name in the repository
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// The state as of this time (RFC 3339, e.g. 2026-12-03T10:00:00Z)
        #[arg(long, value_name = "TIME")]
        timestamp: Option<String>,
        /// Write here instead of DB
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: Option<PathBuf>,
        /// Succeed without restoring when the output already exists
        #[arg(long)]
        if_db_not_exists: bool,
        /// Succeed without restoring when the repository holds no replica
        #[arg(long)]
        if_replica_exists: bool,
        /// Replace an existing output
        #[arg(long)]
        force: bool,
    },
    /// List replicated databases and their lineages (JSON lines): what can
    /// be restored, how old the last state is, the replicator holding each
    Ls {
        /// Only this database (a name, or a path whose file name is one)
        #[arg(value_name = "DB")]
        db: Option<String>,
    },
    /// Retention: keep every state from DURATION before each database's
    /// newest replicated state restorable and remove everything else
    /// (bk-prune then reclaims the forgotten snapshots' data)
    Prune {
        /// e.g. 168h or 7d
        #[arg(long, value_name = "DURATION")]
        keep_within: String,
        /// Only these databases (default: all)
        #[arg(value_name = "DB")]
        dbs: Vec<String>,
        /// Print the plan, remove nothing
        #[arg(long, short = 'n')]
        dry_run: bool,
    },
}
