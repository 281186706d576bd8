use clap::Parser;
use std::path::PathBuf;

/// Read a chunk stream (or a listing with chunk ids) on stdin and commit
/// exactly one snapshot; or, with --from, back up a tree or a byte stream
/// in this one process.
///
/// Nothing is committed unless the stream ends with its trailer record, so
/// a producer killed mid-way never yields a snapshot. Prints one JSON line
/// describing the snapshot.
#[derive(Parser, Debug)]
#[command(name = "bk-put", version)]
pub struct Cli {
    /// Back up this directory or file (or - for stdin's bytes, with
    /// --name) directly, as `bk-chunk PATH | bk-put` would, but without the
    /// stream between two processes; repeatable: several sources make one
    /// snapshot
    ///
    /// This is the fast way to back up a tree: nothing is base64-encoded,
    /// parsed back or hashed twice, and the key is unlocked once. Several
    /// sources (with the paths of --files-from) are walked from their
    /// deepest common directory, and their order does not matter (see
    /// Several sources in bk-put(1)).
    ///
    /// `-` reads a byte stream (for example pg_dump's output) and stores it
    /// as one file named by --name. It cannot be combined with other
    /// sources or with exclusion rules, and a terminal on stdin is refused
    /// (exit 2), since waiting there silently would look like a hang.
    #[arg(long, value_name = "PATH")]
    pub from: Vec<PathBuf>,
    /// Name of the file when --from is - (e.g. db.sql)
    ///
    /// The relative file name the bytes are stored under. Required with
    /// `--from -` and a usage error (exit 2) anywhere else.
    #[arg(long, value_name = "NAME", requires = "from")]
    pub name: Option<String>,
    /// With --from DIR: the snapshot whose unchanged files (same size,
    /// mtime, ctime, inode) are not read again; `none` reads every file
    /// (default: the latest snapshot of the same identity)
    ///
    /// SNAPSHOT is an id, a unique id prefix, or `latest`. The default
    /// parent is always a snapshot of the identity being written, never
    /// another application's, however many share the repository. Files of
    /// the parent whose data a prune has marked for deletion are read
    /// again. `none` is for when a file may have changed without its size,
    /// times or inode showing it.
    #[arg(long, value_name = "SNAPSHOT", requires = "from")]
    pub parent: Option<String>,
    /// Snapshot identity: whose snapshot this is, a label and no secret
    /// (default: the stream's user@host:/path)
    ///
    /// The key that opens the repository is `--identity-file` (or a
    /// passphrase); this names the snapshot's group.
    ///
    /// It must contain a colon. By default it is the header's identity (a
    /// copy), or else user@host:path from the stream header, where path is
    /// the absolute source path, the sources joined with commas, or the
    /// --name given to bk-chunk for stdin. Give it explicitly when host
    /// names change from run to run (Kubernetes pods), so that an
    /// application's snapshots stay one group for --parent, `latest` and
    /// retention.
    ///
    /// The path part is written in one spelling, without a trailing slash
    /// or `.` components: root@web1:/srv/ and root@web1:/srv name the same
    /// snapshots. Snapshots made by earlier versions from a source typed
    /// with a trailing slash keep that spelling in their identity, which
    /// --identity no longer selects; they form a group of their own, and
    /// backups under the new spelling start without a parent.
    ///
    /// A stream without a header (such as bk-ls output) has no identity of
    /// its own, so --identity is required for it (exit 2 otherwise).
    #[arg(long, value_name = "USER@HOST:/PATH")]
    pub identity: Option<String>,
    /// Tag the snapshot (repeatable)
    ///
    /// KEY must not be empty. A later value for the same KEY replaces an
    /// earlier one, and replaces the value of a tag the header carries (a
    /// copy). Tags select snapshots in bk-ls, bk-prune --tag and
    /// --keep-tag.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Snapshot time (default: now)
    ///
    /// Any RFC 3339 form (2026-12-03T10:00:00Z, 2026-12-03T11:00:00+01:00).
    /// The default is the header's time for a copy, else now. Snapshots are
    /// ordered by this time, `latest` is the one with the newest time, and
    /// retention buckets are chosen by it.
    #[arg(long, value_name = "RFC3339")]
    pub time: Option<String>,
    /// Worker threads (default: one per CPU)
    ///
    /// The threads that hash, compress and encrypt chunks; 0, the default,
    /// is one per CPU.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    #[command(flatten)]
    pub output: bk::cli::OutputArgs,
    #[command(flatten)]
    pub exclude: bk::cli::ExcludeArgs,
    #[command(flatten)]
    pub files_from: bk::cli::FilesFromArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
