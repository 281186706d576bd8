use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// PostgreSQL WAL archiving, base backups and point-in-time recovery into a
/// bk repository.
///
/// A stanza names one cluster's archive; it is bound to the cluster's
/// system identifier by the first segment pushed. `push` is the
/// archive_command, `fetch` the restore_command:
///
///   archive_command = 'bk-wal push --stanza main %p'
///   restore_command = 'bk-wal fetch --stanza main %f %p'
///
/// with BK_REPO and BK_IDENTITY_FILE (or BK_PASSWORD_FILE) in the server's
/// environment.
#[derive(Parser, Debug)]
#[command(name = "bk-wal", version)]
pub struct Cli {
    /// The stanza: one cluster's archive in the repository
    ///
    /// 1 to 64 letters, digits, - or _. The first segment pushed (or the
    /// first base backup) binds the stanza to the cluster's system
    /// identifier; WAL of any other cluster is refused from then on (exit
    /// 14), so two clusters never mix their WAL under one name.
    #[arg(long, env = "BK_WAL_STANZA", value_name = "NAME", global = true)]
    pub stanza: Option<String>,
    #[command(flatten)]
    pub output: bk::cli::OutputArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Archive one WAL file (archive_command): exits 0 only once it is
    /// durable in the repository
    Push {
        /// The file PostgreSQL hands over (%p, relative to the data directory)
        #[arg(value_name = "WAL_PATH")]
        path: PathBuf,
        /// After each push, write Prometheus metrics to FILE (atomically):
        /// the last successful push and the .ready backlog
        ///
        /// The backlog is the number of files PostgreSQL has marked .ready;
        /// when it grows, archiving falls behind and pg_wal fills. Alert
        /// rules are in docs/ALERTS.md.
        #[arg(long, env = "BK_WAL_METRICS", value_name = "FILE")]
        metrics: Option<PathBuf>,
        /// A helper process pushes the files PostgreSQL has marked .ready,
        /// N at a time, through one open repository, so that these calls
        /// find theirs already archived (0: every call pushes its own file)
        ///
        /// The first call that finds no helper starts one, detached (bk-wal
        /// push-helper, one per spool under a lock). It pushes every .ready
        /// file, oldest first, and notes each success in the spool as
        /// FILE.ok once the object is durable, with the file's device,
        /// inode, size and modification and change times as they were
        /// before and after it was read. PostgreSQL's call waits for that
        /// note and returns without opening the repository. It pushes the
        /// file itself when the note is missing or does not match the file,
        /// when the helper failed on it (its FILE.error note, whose message
        /// the call repeats on stderr), is gone, or takes more than 120
        /// seconds.
        ///
        /// The helper works only while PostgreSQL calls: it exits 10 seconds
        /// after the last call (so turning archive_command off stops it), or
        /// on SIGTERM. The .ready files are only read.
        #[arg(long, env = "BK_WAL_PUSH_AHEAD", default_value_t = 4, value_name = "N")]
        ahead: usize,
        /// Where the helper's notes are kept (default: pg_wal/bk-wal.spool
        /// beside the file)
        ///
        /// The helper's lock and its FILE.ok and FILE.error notes live here.
        #[arg(long, env = "BK_WAL_SPOOL", value_name = "DIR")]
        spool: Option<PathBuf>,
        /// zstd level for WAL files (0: none; default 1, which archives
        /// pgbench WAL 1.6x faster than level 3 for 9% more bytes)
        ///
        /// Speed wins over the last bytes here: archive_command holds up
        /// PostgreSQL's WAL recycling, and WAL lives only until its base
        /// backups expire.
        #[arg(long, env = "BK_WAL_COMPRESSION", value_name = "LEVEL")]
        compression: Option<i32>,
    },
    /// (internal) The push helper: pushes the .ready files of WAL_DIR until
    /// none has appeared for a while
    #[command(hide = true)]
    PushHelper {
        #[arg(value_name = "WAL_DIR")]
        wal_dir: PathBuf,
        #[arg(long)]
        spool: PathBuf,
        #[arg(long)]
        workers: usize,
        #[arg(long)]
        compression: Option<i32>,
        /// Seconds without new .ready files before the helper exits
        #[arg(long, default_value_t = 10.0)]
        idle_secs: f64,
    },
    /// Restore one WAL file (restore_command): exits 0 once it is written,
    /// 1 only when the repository says it does not exist, 200 + the bk exit
    /// code on any other failure (PostgreSQL then stops instead of ending
    /// recovery early)
    Fetch {
        /// The file PostgreSQL asks for (%f)
        #[arg(value_name = "WAL_FILE")]
        file: String,
        /// Where to write it (%p)
        #[arg(value_name = "DEST")]
        dest: PathBuf,
        /// Keep retrying an unreachable repository for this many seconds
        ///
        /// With backoff from 100 ms to 5 s. After that the call exits 201
        /// (200 + 1), which stops PostgreSQL instead of letting it end
        /// recovery early.
        #[arg(
            long,
            env = "BK_WAL_RETRY_SECS",
            default_value_t = 60.0,
            value_name = "SECS"
        )]
        retry_secs: f64,
        /// After a segment, fetch the next N in the background into a
        /// private spool (0: no prefetching)
        ///
        /// Recovery asks for one segment at a time; prefetching keeps the
        /// next ones coming while it replays. The spool (mode 0700, checked)
        /// holds up to N segments, 256 MiB at the default 16. The first call
        /// starts a prefetcher, detached (bk-wal prefetch, one per spool
        /// under a lock), which fetches on several threads through one open
        /// repository while calls keep coming and exits 10 seconds after the
        /// last. A later call moves its segment from the spool, or waits up
        /// to 60 seconds for the prefetcher to bring it. Whatever the
        /// prefetcher could not bring is fetched from the repository by the
        /// call itself: only the repository can answer "not in the archive".
        #[arg(long, env = "BK_WAL_PREFETCH", default_value_t = 16, value_name = "N")]
        prefetch: usize,
        /// The directory under which the prefetch spool is made (default:
        /// the system's temporary directory)
        ///
        /// The spool itself is private (mode 0700), one per repository,
        /// stanza and key source, so a call configured with another key
        /// never takes what one with the right key prepared.
        #[arg(long, env = "BK_WAL_FETCH_SPOOL", value_name = "DIR")]
        spool: Option<PathBuf>,
    },
    /// (internal) The prefetcher: keeps the segments after the one last
    /// asked for fetched into the spool while fetch calls come
    #[command(hide = true)]
    Prefetch {
        #[arg(long)]
        count: usize,
        #[arg(long)]
        spool: PathBuf,
        /// Seconds without a fetch call before the prefetcher exits
        #[arg(long, default_value_t = 10.0)]
        idle_secs: f64,
    },
    /// Take a base backup (pg_backup_start/pg_backup_stop on one session,
    /// connected as libpq's PG* variables say) and print its snapshot
    /// record once its WAL is archived
    Backup {
        /// The data directory (default: the server's data_directory)
        #[arg(long, env = "PGDATA", value_name = "DIR")]
        pgdata: Option<PathBuf>,
        /// The psql program that holds the backup's session
        #[arg(long, env = "BK_WAL_PSQL", default_value = "psql", value_name = "PATH")]
        psql: PathBuf,
        /// Checkpoint immediately instead of spreading it (pg_backup_start's fast)
        ///
        /// The backup starts at once, at the cost of a burst of writes on
        /// the server; without it the checkpoint is spread as
        /// checkpoint_completion_target says.
        #[arg(long)]
        fast: bool,
        /// Give up when the backup's WAL is not archived within this many seconds
        ///
        /// The snapshot is committed only once every WAL file from the
        /// backup's start to its stop is in the archive, since a base backup
        /// without its WAL restores nothing. On timeout the backup fails and
        /// commits nothing; look at archive_command.
        #[arg(long, default_value_t = 600, value_name = "SECS")]
        archive_timeout: u64,
    },
    /// Restore a base backup into DIR and set it up to recover to a point
    /// in time through bk-wal fetch; start PostgreSQL on DIR afterwards
    Restore {
        /// The new data directory (empty or absent)
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
        /// Recover to this time (RFC 3339, e.g. 2026-12-03T10:00:00Z)
        #[arg(long, value_name = "TIME", group = "target_kind")]
        target_time: Option<String>,
        /// Recover to this WAL position (e.g. 0/3000060)
        #[arg(long, value_name = "LSN", group = "target_kind")]
        target_lsn: Option<String>,
        /// Recover to this restore point (pg_create_restore_point)
        #[arg(long, value_name = "NAME", group = "target_kind")]
        target_name: Option<String>,
        /// Recover to this transaction id
        #[arg(long, value_name = "XID", group = "target_kind")]
        target_xid: Option<String>,
        /// end-of-archive (default): the last archived record; immediate:
        /// as soon as consistent; until-missing: PostgreSQL's own default,
        /// which a gap in the archive ends early and silently
        #[arg(long, value_name = "TARGET", group = "target_kind")]
        target: Option<String>,
        /// What the server does at the target: promote, pause or shutdown
        #[arg(long, value_name = "ACTION")]
        target_action: Option<String>,
        /// latest (default), current, or a timeline number
        #[arg(long, default_value = "latest", value_name = "TIMELINE")]
        target_timeline: String,
        /// Restore this base backup (a snapshot id or prefix) instead of
        /// the newest that ends before the target
        #[arg(long, value_name = "ID")]
        backup: Option<String>,
        /// The restore_command to write (default: this bk-wal with this
        /// repository; secrets are never written, give them to the server)
        ///
        /// The default runs this bk-wal with BK_REPO and the identity or
        /// password file of this process. A passphrase in BK_PASSWORD is
        /// never written into the configuration, so put it in the server's
        /// environment.
        #[arg(long, value_name = "COMMAND")]
        restore_command: Option<String>,
        /// Replace the contents of a non-empty DIR
        ///
        /// A directory with postmaster.pid is refused even then: a running
        /// server's data directory is never overwritten.
        #[arg(long)]
        force: bool,
    },
    /// The stanza's archive as JSON lines: the stanza, each timeline
    /// (range, gaps), each base backup (what it can recover to)
    Info,
    /// Keep the newest N base backups and the WAL they need; forget the
    /// rest (their data goes with bk-prune's next GC). WAL is deleted in
    /// two phases: marked now, deleted by a run after the grace period
    Expire {
        /// Base backups to keep (the runbook's retention-full)
        #[arg(long, value_name = "N")]
        keep_last: usize,
        /// How long marked WAL stays for recoveries already running
        #[arg(long, default_value = "1h", value_name = "DURATION")]
        grace: String,
        /// Print the plan; change nothing
        #[arg(long)]
        dry_run: bool,
    },
}
