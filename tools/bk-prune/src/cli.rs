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
    ///
    /// Per group (see --group-by). 0 is the same as leaving the option out;
    /// counts below -1 are refused. Each --keep option is one rule, and a
    /// snapshot is kept when any rule keeps it (see POLICY in bk-prune(1)).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the last N hours that have one
    ///
    /// Hours without a snapshot are skipped and do not count, so a machine
    /// that was switched off loses no history. Buckets are taken in UTC.
    /// -1: every hour; 0: no rule.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the last N days that have one
    ///
    /// Days without a snapshot do not count: --keep-daily 7 means seven
    /// days that have backups. UTC days; -1: every day; 0: no rule.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one
    ///
    /// ISO 8601 weeks start on Monday, and the days around New Year belong
    /// to the week-year of their Thursday (Monday 2025-12-29 is in
    /// 2026-W01). Weeks without a snapshot do not count. -1: every week;
    /// 0: no rule.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest snapshot of each of the last N months that have one
    ///
    /// Calendar months in UTC; months without a snapshot do not count. -1:
    /// every month; 0: no rule.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest snapshot of each of the last N years that have one
    ///
    /// Calendar years in UTC; years without a snapshot do not count. -1:
    /// every year; 0: no rule.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot within DURATION of the group's newest (36h, 7d, 2w, 1y2mo; a bare m is refused: mo or min)
    ///
    /// Measured back from the group's newest snapshot, not from now, so a
    /// host whose backups stopped keeps its last stretch of history instead
    /// of watching it expire day by day. DURATION is one or more terms
    /// number+unit, each unit at most once, with the units y, mo, w, d and
    /// h (1y2mo3d4h). Retention counts whole hours: minutes and seconds are
    /// refused, and so is a bare m, which restic reads as months and other
    /// flags as minutes. A total of zero is refused, since it would keep
    /// nothing. Years and months are calendar units, with the day clamped
    /// to the target month (2026-03-31 minus 1mo is 2026-02-28).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep every snapshot carrying this tag (repeatable)
    ///
    /// Each tag is its own rule, so a snapshot is kept if it carries any of
    /// them. Not to be confused with --tag, which selects the snapshots
    /// judged at all. A policy of --keep-tag rules alone is the only one
    /// that can empty a group, which --allow-empty-group must then allow.
    #[arg(long = "keep-tag", value_name = "KEY=VALUE")]
    pub keep_tags: Vec<String>,
    /// Group snapshots by these fields before applying the policy
    ///
    /// A comma-separated list of identity, host, path and tags; each group
    /// is judged on its own. The default, identity, gives each backup
    /// source its own history. Grouping by host judges all identities of a
    /// host together (--group-by host --keep-last 1 keeps one snapshot per
    /// host), which is seldom what a shared repository wants. See GROUPS in
    /// bk-prune(1).
    #[arg(
        long,
        value_name = "identity,host,path,tags",
        default_value = "identity"
    )]
    pub group_by: String,
    /// Consider only snapshots of this identity
    ///
    /// An exact match. Snapshots outside the selection get no decision and
    /// are left alone (except those named by --forget), so applications in
    /// one repository can have different policies, with one run each.
    #[arg(long, value_name = "USER@HOST:/PATH")]
    pub identity: Option<String>,
    /// Consider only snapshots carrying this tag (repeatable: all must match)
    ///
    /// Snapshots outside the selection get no decision and are left alone.
    /// Not to be confused with --keep-tag, which is a rule that keeps
    /// snapshots.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Allow a policy to forget every snapshot of a group
    ///
    /// Without it such a policy is refused with exit 2 and nothing changes:
    /// every count rule and --keep-within keep a group's newest snapshot,
    /// so only --keep-tag rules alone can empty a group, and that is far
    /// more often a mistyped tag than an intent.
    #[arg(long)]
    pub allow_empty_group: bool,
    /// Forget this snapshot (id or unique prefix; repeatable)
    ///
    /// Whatever the policy says. ID is a full snapshot id or a unique prefix
    /// of one, taken from all snapshots, selected or not; an id that
    /// matches no snapshot, or more than one, is refused (exit 2). --forget
    /// implies --allow-empty-group. Without any --keep option only the
    /// named snapshots are forgotten.
    #[arg(long = "forget", value_name = "ID")]
    pub forget: Vec<String>,
    /// Read snapshot records (bk-ls output) on stdin and print decisions;
    /// touches no repository
    ///
    /// Opens no repository, takes no lock and needs no secret, so a policy
    /// can be tried on a copy of `bk-ls` output anywhere; a run against the
    /// repository with the same options decides the same. Records of other
    /// types are ignored; a snapshot id that occurs twice is refused (exit
    /// 2). Not with --dry-run, --no-gc or --forget.
    #[arg(long, conflicts_with_all = ["dry_run", "no_gc", "forget"])]
    pub plan: bool,
    /// Show every decision and every object that would be deleted or
    /// repacked; change nothing
    ///
    /// A dry run still takes the prune lock, and it reads every pack it
    /// would repack (to check the pack). Packs this run would mark are shown
    /// as `mark` lines; only the packs of earlier marks that are already due
    /// are shown as `delete`.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Forget snapshots only; collect no garbage
    ///
    /// Forgetting is quick; the space is reclaimed by a later run without
    /// this flag.
    #[arg(long)]
    pub no_gc: bool,
    /// Unused space tolerated in partly used packs before they are
    /// repacked: a share of the used bytes (5%), a size (200M) or unlimited
    ///
    /// A percentage of the bytes still in use (5%, 2.5%; 0 to 100), a size
    /// in bytes with an optional binary suffix K, M, G or T (200M, where 1M
    /// is 1048576 bytes; 0 repacks every partly used pack), or unlimited
    /// (never repack). The packs with the largest share of unused bytes are
    /// repacked first, as restic's prune --max-unused does. See GARBAGE
    /// COLLECTION in bk-prune(1).
    #[arg(long, value_name = "LIMIT", default_value = "5%")]
    pub max_unused: String,
    /// How long marked packs wait (on the storage's clock) before a later
    /// run may delete them: 0 deletes in the same run when no backup is
    /// running
    ///
    /// The grace protects restores that loaded the index before a repack,
    /// and backups on storage whose listings are only eventually
    /// consistent; running backups are waited for in any case. With 0 a
    /// mark is swept in the run that wrote it, unless it must wait for
    /// running backups. Abandoned temporary files and multipart uploads
    /// are removed only when older than the longer of DURATION and one
    /// hour.
    ///
    /// DURATION is 0, or one or more terms number+unit, each unit at most
    /// once, with the units ms, s, min, h, d and w (90min, 1h30min). Every
    /// bk tool reads durations this way; a bare m is refused, because
    /// restic reads it as months in --keep-within.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub grace: String,
    #[command(flatten)]
    pub output: bk::cli::OutputArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
