//! bk-sqlite as a library: the `bk-sqlite` binary and the multi-call `bk` binary both
//! run [`main_from`]; [`cli::Cli`] is what the man page and the shell
//! completions are generated from.

pub mod cli;

use bk::format::duration::parse_duration;
use bk::ops::sqlite::{expire, info, live::LiveDb, replica, replicate, restore};
use bk::sys::AllocatorProfile;
use bk::wire::{self, Record, Timestamp};
use bk::{Error, ExitCode, Result};
use cli::Command;
use std::path::Path;

/// Runs bk-sqlite with these arguments (the first is the program name) and
/// exits with the documented code.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let cli: cli::Cli = bk::cli::parse_from(args);
    bk::cli::run_mapped(
        "bk-sqlite",
        AllocatorProfile::FewArenas,
        || run(cli),
        |e| e.exit_code().code(),
    )
}

fn emit(record: Record) -> Result<()> {
    wire::write_record(&mut std::io::stdout().lock(), &record).map_err(bk::error::stdout_error)
}

/// A database's name in the repository: `--name`, else its file name.
fn replica_name(path: &Path, name: Option<&str>) -> Result<String> {
    let name = match name {
        Some(n) => n.to_string(),
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::Usage(format!("{}: not a file name", path.display())))?,
    };
    replica::check_db_name(&name)?;
    Ok(name)
}

fn run(cli: cli::Cli) -> Result<i32> {
    match &cli.command {
        Command::Replicate { .. } => replicate_command(&cli),
        Command::Restore {
            db,
            name,
            timestamp,
            output,
            if_db_not_exists,
            if_replica_exists,
            force,
        } => {
            let name = replica_name(db, name.as_deref())?;
            let at = timestamp
                .as_deref()
                .map(|t| {
                    Timestamp::parse(t).ok_or_else(|| {
                        Error::Usage(format!(
                            "--timestamp {t:?}: give an RFC 3339 time, e.g. 2026-12-03T10:00:00Z"
                        ))
                    })
                })
                .transpose()?;
            let output = output.clone().unwrap_or_else(|| db.clone());
            if *if_db_not_exists && output.exists() {
                eprintln!(
                    "bk-sqlite: {} exists; nothing restored (--if-db-not-exists)",
                    output.display()
                );
                return Ok(0);
            }
            let repo = cli.repo.open()?;
            let opts = restore::SqliteRestoreOptions {
                name: name.clone(),
                output,
                at,
                force: *force,
                progress: Some(std::sync::Arc::new(bk::progress::Progress::counting(
                    "segments",
                ))),
            };
            let reporter = opts
                .progress
                .as_ref()
                .and_then(|p| cli.output.report("restoring", p));
            let restored = restore::restore(&repo, &opts);
            drop(reporter);
            match restored {
                Ok(done) => {
                    eprintln!(
                        "bk-sqlite: restored {} as of {} (lineage {}, {} commits after the \
                         snapshot), page sum and integrity_check verified",
                        done.output, done.state_time, done.lineage, done.commits
                    );
                    emit(Record::SqliteRestore(done))?;
                    Ok(0)
                }
                Err(Error::NoReplica { .. }) if *if_replica_exists => {
                    eprintln!(
                        "bk-sqlite: no replica of {name}; nothing restored (--if-replica-exists)"
                    );
                    Ok(0)
                }
                Err(e) => Err(e),
            }
        }
        Command::Ls { db } => {
            let repo = cli.repo.open()?;
            let name = db
                .as_deref()
                .map(|d| replica_name(Path::new(d), None))
                .transpose()?;
            for record in info::lineages(&repo, name.as_deref())? {
                emit(Record::SqliteLineage(record))?;
            }
            Ok(0)
        }
        Command::Prune {
            keep_within,
            dbs,
            dry_run,
        } => {
            let window = parse_duration("--keep-within", keep_within)?;
            let names = dbs
                .iter()
                .map(|d| replica_name(Path::new(d), None))
                .collect::<Result<Vec<_>>>()?;
            let repo = cli.repo.open()?;
            let catalog = replica::Catalog::load(&repo)?;
            let newest = expire::newest_states(&repo, &catalog)?;
            let steps = expire::plan(&catalog, &names, window, &newest);
            if *dry_run {
                for step in &steps {
                    emit(Record::Gc(step.record()))?;
                }
                return Ok(0);
            }
            expire::execute(&repo, &steps, &mut |step| emit(Record::Gc(step.record())))?;
            if steps
                .iter()
                .any(|s| matches!(s, expire::Step::Forget { .. }))
            {
                eprintln!("bk-sqlite: snapshots forgotten; bk-prune reclaims their data");
            }
            Ok(0)
        }
    }
}

fn replicate_command(cli: &cli::Cli) -> Result<i32> {
    let Command::Replicate {
        dbs,
        name,
        sync_interval,
        snapshot_interval,
        checkpoint_interval,
        checkpoint_frames,
        max_wal_mib,
        keep_within,
        metrics,
        holder,
        takeover,
        set_wal,
    } = &cli.command
    else {
        return Err(Error::internal(
            "reading replicate options",
            "not replicate",
        ));
    };
    if name.is_some() && dbs.len() > 1 {
        return Err(Error::Usage(
            "--name names one database; with several, each is replicated under its file name"
                .into(),
        ));
    }
    let mut targets = Vec::new();
    for db in dbs {
        if *set_wal {
            LiveDb::set_wal_mode(db)?;
        }
        targets.push(replicate::Target {
            path: db.clone(),
            name: replica_name(db, name.as_deref())?,
        });
    }
    let defaults = replicate::ReplicateOptions::default();
    let opts = replicate::ReplicateOptions {
        sync_interval: parse_duration("--sync-interval", sync_interval)?,
        snapshot_interval: parse_duration("--snapshot-interval", snapshot_interval)?,
        checkpoint_interval: parse_duration("--checkpoint-interval", checkpoint_interval)?,
        checkpoint_frames: *checkpoint_frames,
        max_wal_bytes: max_wal_mib.saturating_mul(1 << 20),
        holder: holder
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or(defaults.holder),
        takeover: *takeover,
        keep_within: keep_within
            .as_deref()
            .map(|k| parse_duration("--keep-within", k))
            .transpose()?,
    };
    if opts.sync_interval.is_zero() {
        return Err(Error::Usage("--sync-interval must be above 0".into()));
    }
    let repo = cli.repo.open()?;
    replicate::run(&repo, &targets, &opts, metrics.as_deref(), &mut |e| {
        if e.event == "error" {
            eprintln!(
                "bk-sqlite: {}: {}",
                e.db,
                e.message.as_deref().unwrap_or("error")
            );
        }
        emit(Record::SqliteEvent(e.clone()))
    })?;
    Ok(ExitCode::Success.code())
}
