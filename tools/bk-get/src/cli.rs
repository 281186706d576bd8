use clap::Parser;
use std::path::PathBuf;

/// Restore files from a snapshot.
///
/// `bk-get SNAPSHOT --into DIR [PATH…]` restores everything or the chosen
/// paths; `bk-get SNAPSHOT PATH` writes one file's bytes to stdout;
/// `bk-get - --into DIR` restores the listing entries read from stdin
/// (e.g. `bk-ls latest | jq -c 'select(…)' | bk-get - --into DIR`).
#[derive(Parser, Debug)]
#[command(name = "bk-get", version)]
pub struct Cli {
    /// `latest`, a snapshot id or unique prefix, or - for entries on stdin
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Only these paths (and what lies below them), as bk-ls prints them
    /// or absolute under the snapshot's source; without --into, one file
    /// to write to stdout
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
    /// Directory to restore into (created if missing)
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
    /// With `latest`: the newest snapshot of this identity
    #[arg(long, value_name = "USER@HOST:/PATH")]
    pub identity: Option<String>,
    /// Write the snapshot as a chunk stream on stdout, for another
    /// repository's bk-put (a copy keeping its identity, time and tags)
    #[arg(long, conflicts_with = "into")]
    pub stream: bool,
    /// With --stream: the chunk ids the destination holds (`bk-repo -r DEST
    /// chunks`, or - for stdin); their data is not sent
    #[arg(long, value_name = "FILE", requires = "stream")]
    pub have: Option<PathBuf>,
    /// Parallel file writers (default: two per CPU)
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    #[command(flatten)]
    pub output: bk::cli::OutputArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
