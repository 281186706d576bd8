use clap::Parser;

/// Forget snapshots a retention policy does not keep, then reclaim the
/// space their data used — safely while backups keep running.
///
/// Prints one JSON line per snapshot (`decision`: id, keep, reasons), one
/// per garbage-collection step (`gc`) and a final `prune_summary`. Deletion
/// is two-phase: packs no snapshot needs are first marked, and deleted by a
/// later run once the grace period has passed and every backup that was
/// running at marking time has finished (see bk-prune(1)).
#[derive(Parser, Debug)]
#[command(name = "bk-prune", version)]
pub struct Cli {
    /// Keep the N newest snapshots (-1: all)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the last N days that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest snapshot of each of the last N months that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest snapshot of each of the last N years that have one
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot within DURATION of the group's newest (36h, 7d, 2w, 1y2mo; a bare m is refused: mo or min)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep every snapshot carrying this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "KEY=VALUE")]
    pub keep_tags: Vec<String>,
    /// Group snapshots by these fields before applying the policy
    #[arg(
        long,
        value_name = "identity,host,path,tags",
        default_value = "identity"
    )]
    pub group_by: String,
    /// Consider only snapshots of this identity
    #[arg(long, value_name = "USER@HOST:/PATH")]
    pub identity: Option<String>,
    /// Consider only snapshots carrying this tag (repeatable: all must match)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Allow a policy to forget every snapshot of a group
    #[arg(long)]
    pub allow_empty_group: bool,
    /// Forget this snapshot (id or unique prefix; repeatable)
    #[arg(long = "forget", value_name = "ID")]
    pub forget: Vec<String>,
    /// Read snapshot records (bk-ls output) on stdin and print decisions;
    /// touches no repository
    #[arg(long, conflicts_with_all = ["dry_run", "no_gc", "forget"])]
    pub plan: bool,
    /// Show every decision and every object that would be deleted or
    /// repacked; change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Forget snapshots only; collect no garbage
    #[arg(long)]
    pub no_gc: bool,
    /// Unused space tolerated in partly used packs before they are
    /// repacked: a share of the used bytes (5%), a size (200M) or unlimited
    #[arg(long, value_name = "LIMIT", default_value = "5%")]
    pub max_unused: String,
    /// How long marked packs wait (on the storage's clock) before a later
    /// run may delete them: 0 deletes in the same run when no backup is
    /// running
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub grace: String,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
