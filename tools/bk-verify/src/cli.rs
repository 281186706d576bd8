use bk::verify::PackSelection;
use clap::Parser;
use std::path::PathBuf;

/// Check a repository's integrity: structure (default), all or some data,
/// a snapshot against a directory; optionally write Prometheus metrics.
///
/// Prints one JSON line per finding and a final verify_summary line. Exit
/// status 0: no error findings; 13: something is damaged, missing or (with
/// --against) different; 1, 2, 10, 12: verify could not run.
#[derive(Parser, Debug)]
#[command(name = "bk-verify", version)]
pub struct Cli {
    /// Also download every pack and check every blob in it
    #[arg(long)]
    pub read_data: bool,
    /// Like --read-data for some packs: N/M (the N-th of M stable slices),
    /// P% (a random share) or a byte budget such as 500M or 2G
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    pub read_data_subset: Option<PackSelection>,
    /// Compare SNAPSHOT (latest, an id or a unique prefix) with the directory DIR
    #[arg(long, num_args = 2, value_names = ["DIR", "SNAPSHOT"])]
    pub against: Option<Vec<String>>,
    /// Write Prometheus metrics to FILE (atomically), for node_exporter's textfile collector
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Threads that download and check packs (default: twice the CPUs, 2 to 8)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// Take no lock (for read-only access to the storage)
    #[arg(long)]
    pub no_lock: bool,
    /// With --against: the exclusion rules the backup used, so what they
    /// leave out is not reported
    #[command(flatten, next_help_heading = "Exclusion rules (with --against)")]
    pub exclude: bk::cli::ExcludeArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
