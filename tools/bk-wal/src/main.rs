mod cli;

use bk::format::wal::parse_lsn;
use bk::ops::wal::ahead as wal_ahead;
use bk::ops::wal::archive::{self, Pushed};
use bk::ops::wal::backup::{self, BackupOptions};
use bk::ops::wal::expire::{self, ExpireOptions};
use bk::ops::wal::info::Archive;
use bk::ops::wal::prefetch;
use bk::ops::wal::restore::{self, Target, WalRestoreOptions};
use bk::sys::AllocatorProfile;
use bk::wire::Timestamp;
use bk::wire::{self, Record};
use bk::{Error, ExitCode, Result};
use cli::Command;
use std::time::Duration;

/// `fetch` exits with this plus the bk exit code on any failure but "not
/// found": PostgreSQL treats a restore_command status above 125 as fatal.
const FETCH_FAILURE_BASE: i32 = 200;

fn main() {
    let cli: cli::Cli = bk::cli::parse();
    let fetching = matches!(cli.command, Command::Fetch { .. });
    bk::cli::run_mapped(
        "bk-wal",
        AllocatorProfile::FewArenas,
        || run(cli),
        |e| {
            let code = e.exit_code().code();
            if fetching && code != ExitCode::Interrupted.code() {
                FETCH_FAILURE_BASE + code
            } else {
                code
            }
        },
    )
}

fn restore_options(cli: &cli::Cli, stanza: String) -> Result<WalRestoreOptions> {
    let Command::Restore {
        into,
        target_time,
        target_lsn,
        target_name,
        target_xid,
        target,
        target_action,
        target_timeline,
        backup,
        restore_command,
        force,
    } = &cli.command
    else {
        return Err(Error::internal("reading restore options", "not a restore"));
    };
    let target = if let Some(t) = target_time {
        Target::Time(Timestamp::parse(t).ok_or_else(|| {
            Error::Usage(format!(
                "--target-time {t:?}: give an RFC 3339 time, e.g. 2026-12-03T10:00:00Z"
            ))
        })?)
    } else if let Some(l) = target_lsn {
        Target::Lsn(
            parse_lsn(l)
                .ok_or_else(|| Error::Usage(format!("--target-lsn {l:?}: e.g. 0/3000060")))?,
        )
    } else if let Some(n) = target_name {
        Target::Name(n.clone())
    } else if let Some(x) = target_xid {
        Target::Xid(x.clone())
    } else {
        match target.as_deref() {
            None | Some("end-of-archive") => Target::EndOfArchive,
            Some("immediate") => Target::Immediate,
            Some("until-missing") => Target::UntilMissing,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--target {other:?}: end-of-archive, immediate or until-missing"
                )))
            }
        }
    };
    let restore_command = match restore_command {
        Some(c) => c.clone(),
        None => default_restore_command(cli, &stanza)?,
    };
    Ok(WalRestoreOptions {
        stanza,
        into: into.clone(),
        target,
        action: target_action.clone(),
        timeline: target_timeline.clone(),
        backup: backup.clone(),
        restore_command,
        force: *force,
    })
}

/// This bk-wal, with the repository and key file of this process: the
/// paths are not secrets; a passphrase given in BK_PASSWORD is, and is
/// never written (the server's environment must carry it).
fn default_restore_command(cli: &cli::Cli, stanza: &str) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::io("bk-wal", e))?;
    let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut cmd = String::new();
    cmd.push_str(&format!("BK_REPO={} ", quote(cli.repo.location()?)));
    if let Some(f) = &cli.repo.identity_file {
        cmd.push_str(&format!(
            "BK_IDENTITY_FILE={} ",
            quote(&f.display().to_string())
        ));
    } else if let Some(f) = &cli.repo.password_file {
        cmd.push_str(&format!(
            "BK_PASSWORD_FILE={} ",
            quote(&f.display().to_string())
        ));
    }
    cmd.push_str(&format!(
        "{} fetch --stanza {stanza} %f %p",
        quote(&exe.display().to_string())
    ));
    Ok(cmd)
}

/// Starts `bk-wal prefetch` for the segments after `file`, detached (its
/// own process group, no output): PostgreSQL waits for this process only.
/// The repository settings go by environment, never argv.
fn start_prefetcher(
    cli: &cli::Cli,
    stanza: &str,
    file: &str,
    count: usize,
    spool: Option<&std::path::Path>,
) {
    use std::os::unix::process::CommandExt;
    let (Some(spool), Ok(exe), Ok(location)) =
        (spool, std::env::current_exe(), cli.repo.location())
    else {
        return;
    };
    if prefetch::following(file, 16 << 20, 1).is_empty() {
        return; // history files and the like: nothing follows them
    }
    let mut child = std::process::Command::new(exe);
    child
        .args(["--stanza", stanza, "prefetch", file, "--count"])
        .arg(count.to_string())
        .arg("--spool")
        .arg(spool)
        .env("BK_REPO", location)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    if let Some(f) = &cli.repo.identity_file {
        child.env("BK_IDENTITY_FILE", f);
    }
    if let Some(f) = &cli.repo.password_file {
        child.env("BK_PASSWORD_FILE", f);
    }
    let _ = child.spawn();
}

/// archive_command: this file, and (`ahead`) the segments already marked
/// .ready after it, at once; a file pushed ahead before returns at once.
fn push(
    cli: &cli::Cli,
    stanza: &str,
    path: &std::path::Path,
    ahead: usize,
    spool: Option<&std::path::Path>,
) -> Result<i32> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("{}: not a WAL file path", path.display())))?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let wal_dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let spool = spool.map_or_else(|| wal_ahead::default_spool(wal_dir), |s| s.to_path_buf());
    if wal_ahead::pushed_before(&spool, name, &bytes) {
        wal_ahead::forget(&spool, name);
        return Ok(0);
    }
    let repo = cli.repo.open()?;
    let later = wal_ahead::ready_after(wal_dir, name, ahead);
    let threads = repo.backend().write_concurrency();
    let pushed = std::thread::scope(|scope| {
        let ahead =
            scope.spawn(|| wal_ahead::push_ahead(&repo, stanza, wal_dir, &spool, &later, threads));
        let pushed = archive::push(&repo, stanza, name, &bytes);
        if let Ok(Err(e)) = ahead.join() {
            eprintln!("bk-wal: warning: pushing ahead: {e}");
        }
        pushed
    })?;
    if pushed == Pushed::AlreadyArchived {
        eprintln!("bk-wal: {name} was already archived with the same content; nothing to do");
    }
    Ok(0)
}

/// The push metrics: the backlog is the `.ready` files beside the pushed
/// one's `archive_status` (PostgreSQL's own bookkeeping, only read).
fn write_push_metrics(
    file: &std::path::Path,
    location: &str,
    stanza: &str,
    pushed: &std::path::Path,
    ok: bool,
) -> Result<()> {
    let status = pushed
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .join("archive_status");
    let ready = std::fs::read_dir(&status)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".ready"))
                .count() as u64
        })
        .unwrap_or(0);
    let last_success = if ok {
        Some(bk::wire::Timestamp::now().as_nanos() as f64 / 1e9)
    } else {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| bk::metrics::previous_push_success(&t))
    };
    let text = bk::metrics::render_push(location, stanza, last_success, ready, ok);
    bk::metrics::write_atomic(file, &text)
}

fn emit(record: Record) -> Result<()> {
    wire::write_record(&mut std::io::stdout().lock(), &record).map_err(bk::error::stdout_error)
}

fn stanza(cli: &cli::Cli) -> Result<String> {
    cli.stanza.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
        Error::Usage("no stanza given: use --stanza NAME or set BK_WAL_STANZA".into())
    })
}

fn run(cli: cli::Cli) -> Result<i32> {
    let stanza = stanza(&cli)?;
    match &cli.command {
        Command::Push {
            path,
            metrics,
            ahead,
            spool,
        } => {
            let result = push(&cli, &stanza, path, *ahead, spool.as_deref());
            if let Some(file) = metrics {
                let location = cli.repo.location().unwrap_or("").to_string();
                write_push_metrics(file, &location, &stanza, path, result.is_ok())?;
            }
            result
        }
        Command::Fetch {
            file,
            dest,
            retry_secs,
            prefetch,
            spool,
        } => {
            if !(retry_secs.is_finite() && *retry_secs >= 0.0) {
                return Err(Error::Usage(
                    "--retry-secs must be a number of seconds".into(),
                ));
            }
            let location = cli.repo.location()?.to_string();
            let spool = (*prefetch > 0)
                .then(|| prefetch::spool_dir(spool.as_deref(), &stanza, &location))
                .flatten();
            if let Some(bytes) = spool.as_deref().and_then(|s| prefetch::take(s, file)) {
                archive::write_durably(dest, &bytes)?;
                start_prefetcher(&cli, &stanza, file, *prefetch, spool.as_deref());
                return Ok(0);
            }
            let budget = Duration::from_secs_f64(*retry_secs);
            let found = archive::within_budget(budget, || {
                let repo = cli.repo.open()?;
                archive::fetch(&repo, &stanza, file)
            })?;
            match found {
                Some(bytes) => {
                    archive::write_durably(dest, &bytes)?;
                    start_prefetcher(&cli, &stanza, file, *prefetch, spool.as_deref());
                    Ok(0)
                }
                None => {
                    eprintln!("bk-wal: {file} is not in the archive of stanza {stanza}");
                    Ok(1)
                }
            }
        }
        Command::Prefetch { file, count, spool } => {
            let repo = cli.repo.open()?;
            let record = archive::load_stanza(&repo, &stanza)?
                .ok_or_else(|| Error::Usage(format!("no stanza {stanza:?}")))?;
            let threads = repo.backend().write_concurrency();
            prefetch::prefetch(&repo, &record, spool, file, *count, threads)?;
            Ok(0)
        }
        Command::Backup {
            pgdata,
            psql,
            fast,
            archive_timeout,
        } => {
            let repo = cli.repo.open()?;
            let opts = BackupOptions {
                stanza,
                pgdata: pgdata.clone(),
                psql: psql.clone(),
                fast: *fast,
                archive_timeout: Duration::from_secs(*archive_timeout),
            };
            let outcome = backup::backup(&repo, &opts)?;
            emit(Record::Snapshot(outcome.snapshot))?;
            Ok(0)
        }
        Command::Info => {
            let repo = cli.repo.open()?;
            let (stanza, timelines, backups) = Archive::load(&repo, &stanza)?.records();
            emit(Record::WalStanza(stanza))?;
            for t in timelines {
                emit(Record::WalTimeline(t))?;
            }
            for b in backups {
                emit(Record::WalBackup(b))?;
            }
            Ok(0)
        }
        Command::Expire {
            keep_last,
            grace,
            dry_run,
        } => {
            let repo = cli.repo.open()?;
            let opts = ExpireOptions {
                stanza,
                keep_last: *keep_last,
                grace: bk::prune::parse_grace(grace)?,
                dry_run: *dry_run,
            };
            let steps = expire::plan(&repo, &opts)?;
            expire::execute(&repo, &opts, &steps, &mut |step| {
                emit(Record::Gc(step.record()))
            })?;
            Ok(0)
        }
        Command::Restore { .. } => {
            let opts = restore_options(&cli, stanza)?;
            let repo = cli.repo.open()?;
            let done = restore::restore_cluster(&repo, &opts)?;
            emit(Record::WalRestore(wire::WalRestoreRecord {
                v: wire::VERSION,
                stanza: opts.stanza,
                into: opts.into.display().to_string(),
                backup: done.backup.id,
                timeline: done.timeline,
                files: done.summary.files,
                bytes: done.summary.bytes,
                settings: done.settings.into_iter().collect(),
            }))?;
            eprintln!(
                "bk-wal: restored; start PostgreSQL on {} to recover (recovery.signal is set)",
                opts.into.display()
            );
            Ok(0)
        }
    }
}
