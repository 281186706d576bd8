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
    ///
    /// Each pack's SHA-256 must equal its name, its sealed header must
    /// authenticate and agree with the index, and every blob must decrypt,
    /// decompress to its length and hash to its chunk id. This reads the
    /// whole repository; --read-data-subset spreads it over several runs.
    #[arg(long)]
    pub read_data: bool,
    /// Like --read-data for some packs: N/M (the N-th of M stable slices),
    /// P% (a random share) or a byte budget such as 500M or 2G
    ///
    /// N/M (1 <= N <= M) takes the packs whose id's first eight bytes, read
    /// as a big-endian number, are N - 1 modulo M. The slices are stable
    /// across runs, so 1/7 to 7/7, one per weekday, read every pack exactly
    /// once a week.
    ///
    /// P% takes a random share of the packs, rounded up. SIZE takes random
    /// packs until SIZE bytes are read, never more: a number of bytes, or
    /// one with a binary unit K, M, G or T, optionally followed by B or iB
    /// (500M, 2G, 1.5T).
    #[arg(long, value_name = "SUBSET", conflicts_with = "read_data")]
    pub read_data_subset: Option<PackSelection>,
    /// Compare SNAPSHOT (latest, an id or a unique prefix) with the directory DIR
    ///
    /// A restore drill without a restore: DIR is the live tree or a restore
    /// of it, and every difference is a finding. `latest` is the newest
    /// snapshot of DIR's own identity when there is one. Give the exclusion
    /// rules the backup used, or every path they left out is reported as
    /// extra. See Comparing with a directory in bk-verify(1).
    #[arg(long, num_args = 2, value_names = ["DIR", "SNAPSHOT"])]
    pub against: Option<Vec<String>>,
    /// Write Prometheus metrics to FILE (atomically), for node_exporter's textfile collector
    ///
    /// Written after every run, also when the repository cannot be opened
    /// (then with bk_verify_success 0), so an alert sees a verify that
    /// failed to run. Name it *.prom for the collector. The series are
    /// listed under METRICS in bk-verify(1).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// Threads that download and check packs (default: twice the CPUs, 2 to 8)
    ///
    /// 0, the default, is twice the number of CPUs, at least 2 and at most
    /// 8. Fewer run when packs are large, so that at most 1 GiB is held.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// Take no lock (for read-only access to the storage)
    ///
    /// By default bk-verify holds a shared lock, so it runs beside backups
    /// but not beside a process holding an exclusive lock. Without write
    /// access to the storage it cannot create its lock object: give
    /// --no-lock then.
    #[arg(long)]
    pub no_lock: bool,
    /// With --against: the exclusion rules the backup used, so what they
    /// leave out is not reported
    #[command(flatten, next_help_heading = "Exclusion rules (with --against)")]
    pub exclude: bk::cli::ExcludeArgs,
    #[command(flatten)]
    pub output: bk::cli::OutputArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
