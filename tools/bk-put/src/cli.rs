use clap::Parser;

/// Read a chunk stream (or a listing with chunk ids) on stdin and commit
/// exactly one snapshot.
///
/// Nothing is committed unless the stream ends with its trailer record, so
/// a producer killed mid-way never yields a snapshot. Prints one JSON line
/// describing the snapshot.
#[derive(Parser, Debug)]
#[command(name = "bk-put", version)]
pub struct Cli {
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
    pub repo: bk::cli::RepoArgs,
}
