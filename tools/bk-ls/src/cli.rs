use clap::Parser;

/// List snapshots, or the entries of one snapshot: JSON lines, or a table
/// when stdout is a terminal.
///
/// Without SNAPSHOT: one line per snapshot, oldest first. With SNAPSHOT
/// (`latest`, an id, or a unique id prefix): the snapshot's listing
/// entries, optionally only those at or below PATHs, then a trailer.
#[derive(Parser, Debug)]
#[command(name = "bk-ls", version)]
pub struct Cli {
    /// `latest`, a snapshot id or a unique prefix: list its entries
    /// (without it: list the snapshots)
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
    /// Only these paths and what lies below them (relative as listed, or
    /// absolute under the snapshot's source)
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
    /// Only snapshots of this identity (also selects `latest`)
    #[arg(long, value_name = "USER@HOST:/PATH")]
    pub identity: Option<String>,
    /// Only snapshots carrying this tag (repeatable: all must match)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// JSON lines even on a terminal (elsewhere they are the default;
    /// on a terminal the default is a table)
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
