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
    #[arg(long, value_name = "PATH")]
    pub from: Vec<PathBuf>,
    /// Name of the file when --from is - (e.g. db.sql)
    #[arg(long, value_name = "NAME", requires = "from")]
    pub name: Option<String>,
    /// With --from DIR: the snapshot whose unchanged files (same size,
    /// mtime, ctime, inode) are not read again; `none` reads every file
    /// (default: the latest snapshot of the same identity)
    #[arg(long, value_name = "SNAPSHOT", requires = "from")]
    pub parent: Option<String>,
    /// Snapshot identity (default: the stream's user@host:/path)
    #[arg(long, value_name = "USER@HOST:/PATH")]
    pub identity: Option<String>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Snapshot time (default: now)
    #[arg(long, value_name = "RFC3339")]
    pub time: Option<String>,
    /// Worker threads (default: one per CPU)
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
