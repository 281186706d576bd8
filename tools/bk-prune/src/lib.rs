//! bk-prune as a library: the `bk-prune` binary and the multi-call `bk` binary both
//! run [`main_from`]; [`cli::Cli`] is what the man page and the shell
//! completions are generated from.

pub mod cli;

use bk::gc::{GcOptions, MaxUnused};
use bk::policy::{self, GroupBy, Policy, Selection};
use bk::prune::{self, PruneOptions};
use bk::{ExitCode, Result};
use std::io::{BufReader, BufWriter, Write};

/// Runs bk-prune with these arguments (the first is the program name) and
/// exits with the documented code.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let cli: cli::Cli = bk::cli::parse_from(args);
    bk::cli::run("bk-prune", || run(cli));
}

fn pairs(tags: &[String]) -> Result<Vec<(String, String)>> {
    tags.iter().map(|t| bk::cli::parse_tag(t)).collect()
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    let policy = Policy {
        last: cli.keep_last,
        hourly: cli.keep_hourly,
        daily: cli.keep_daily,
        weekly: cli.keep_weekly,
        monthly: cli.keep_monthly,
        yearly: cli.keep_yearly,
        within: cli
            .keep_within
            .as_deref()
            .map(policy::parse_within)
            .transpose()?,
        tags: pairs(&cli.keep_tags)?,
        ..Default::default()
    };
    let opts = PruneOptions {
        policy,
        group_by: GroupBy::parse(&cli.group_by)?,
        selection: Selection {
            identity: cli.identity.as_deref().map(bk::wire::normalize_identity),
            tags: pairs(&cli.tags)?,
        },
        allow_empty_group: cli.allow_empty_group,
        forget: cli.forget.clone(),
        gc: (!cli.no_gc)
            .then(|| -> Result<GcOptions> {
                Ok(GcOptions {
                    grace: prune::parse_grace(&cli.grace)?,
                    max_unused: MaxUnused::parse(&cli.max_unused)?,
                    dry_run: cli.dry_run,
                    progress: Some(std::sync::Arc::new(bk::progress::Progress::counting(
                        "packs",
                    ))),
                })
            })
            .transpose()?,
        dry_run: cli.dry_run,
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    if cli.plan {
        bk::cli::refuse_terminal_stdin(
            "snapshot records (--plan)",
            "`bk-ls | bk-prune --plan --keep-daily 7` prints the plan for the listed snapshots",
        )?;
        let stdin = BufReader::new(std::io::stdin().lock());
        prune::plan(stdin, &mut out, &opts)?;
    } else {
        let repo = cli.repo.open()?;
        let _reporter = opts
            .gc
            .as_ref()
            .and_then(|g| g.progress.as_ref())
            .and_then(|p| cli.output.report("pruning", p));
        let summary = prune::prune(&repo, &opts, &mut out)?;
        if let Some(note) = opts
            .gc
            .as_ref()
            .and_then(|g| prune::space_note(&summary, g))
        {
            eprintln!("bk-prune: {note}");
        }
    }
    out.flush().map_err(bk::error::stdout_error)?;
    Ok(ExitCode::Success)
}
