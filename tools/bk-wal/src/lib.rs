//! bk-wal as a library: the `bk-wal` binary and the multi-call `bk` binary both
//! run [`main_from`]; [`cli::Cli`] is what the man page and the shell
//! completions are generated from.

pub mod cli;

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

/// Runs bk-wal with these arguments (the first is the program name) and
/// exits with the documented code.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let cli: cli::Cli = bk::cli::parse_from(args);
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
        progress: None,
    })
}

/// This bk-wal, with the repository and key file of this process: the
/// paths are not secrets; a passphrase given in BK_PASSWORD is, and is
/// never written (the server's environment must carry it).
fn default_restore_command(cli: &cli::Cli, stanza: &str) -> Result<String> {
    let (exe, tool_arg) = this_command().map_err(|e| Error::io("bk-wal", e))?;
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
        "{}{} fetch --stanza {stanza} %f %p",
        quote(&exe.display().to_string()),
        tool_arg.map(|t| format!(" {t}")).unwrap_or_default()
    ));
    Ok(cmd)
}

/// This bk-wal as a command to run again: the `bk-wal` binary, or the
/// multi-call `bk` with `wal` (the running executable is the binary, not
/// the `bk-wal` link it was started through).
fn this_command() -> std::io::Result<(std::path::PathBuf, Option<&'static str>)> {
    let exe = std::env::current_exe()?;
    let standalone = exe.file_name().is_some_and(|n| n == "bk-wal");
    Ok((exe, (!standalone).then_some("wal")))
}

/// Starts this bk-wal with `args`, detached (its own process group, no
/// output): PostgreSQL waits for the calling process only. The repository
/// settings go by environment, never argv.
fn spawn_detached(cli: &cli::Cli, args: &[std::ffi::OsString]) -> Option<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let (exe, tool_arg) = this_command().ok()?;
    let location = cli.repo.location().ok()?;
    let mut child = std::process::Command::new(exe);
    child
        .args(tool_arg)
        .args(args)
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
    // Secrets from the environment go on a pipe: the helper lives long,
    // and its environment is readable in /proc as long as it does.
    let secrets = bk::cli::hand_over_secrets();
    for v in bk::cli::SECRET_ENV {
        child.env_remove(v);
    }
    if secrets.is_some() {
        child
            .env("BK_SECRETS_STDIN", "1")
            .stdin(std::process::Stdio::piped());
    }
    let mut spawned = child.spawn().ok()?;
    if let (Some(line), Some(mut stdin)) = (secrets, spawned.stdin.take()) {
        use std::io::Write;
        let _ = stdin.write_all(line.as_bytes());
    }
    Some(spawned)
}

/// How long a fetch waits for the prefetcher to bring its segment before
/// reading the repository itself.
const PREFETCH_WAIT: Duration = Duration::from_secs(60);

/// The segment `file` from the prefetch spool: moved there already, or
/// brought by the running prefetcher (started now when none runs: this
/// call then reads the repository itself, the prefetcher goes on after
/// it). `false`: read the repository.
fn from_prefetcher(
    cli: &cli::Cli,
    stanza: &str,
    file: &str,
    dest: &std::path::Path,
    spool: &std::path::Path,
    count: usize,
) -> bool {
    let is_segment =
        !prefetch::following(file, bk::format::wal::SMALLEST_SEGMENT_SIZE, 1).is_empty();
    if !is_segment {
        return false; // history files and the like: asked once each
    }
    prefetch::ask(spool, file);
    if prefetch::take(spool, file, dest) {
        return true;
    }
    if prefetch::running(spool) {
        let waited = prefetch::wait_for(spool, file, dest, PREFETCH_WAIT, || {
            prefetch::running(spool)
        });
        return waited == prefetch::Waited::Taken;
    }
    let args = [
        "--stanza".into(),
        stanza.into(),
        "prefetch".into(),
        "--count".into(),
        count.to_string().into(),
        "--spool".into(),
        spool.as_os_str().to_owned(),
    ];
    let _ = spawn_detached(cli, &args);
    false
}

/// How long a call waits for the push helper before pushing its file
/// itself.
const HELPER_WAIT: Duration = Duration::from_secs(120);

/// archive_command. With `ahead`, the file is left to the push helper
/// (started when none runs) and the call returns once the helper noted
/// it; without a note it is pushed here.
fn push(cli: &cli::Cli, stanza: &str, path: &std::path::Path, opts: &PushArgs) -> Result<i32> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Usage(format!("{}: not a WAL file path", path.display())))?;
    let wal_dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let spool = opts
        .spool
        .clone()
        .unwrap_or_else(|| wal_ahead::default_spool(wal_dir));
    if opts.ahead > 0 {
        wal_ahead::ask(&spool);
    }
    if wal_ahead::pushed_before(&spool, name, path) {
        return Ok(0);
    }
    if opts.ahead > 0 && wal_ahead::is_ready(wal_dir, name) {
        match wait_for_helper(cli, stanza, wal_dir, &spool, name, path, opts) {
            wal_ahead::Waited::Pushed => return Ok(0),
            wal_ahead::Waited::Failed(e) => {
                eprintln!(
                    "bk-wal: warning: the push helper failed on {name} ({e}); pushing it here"
                )
            }
            wal_ahead::Waited::NoHelper => {}
        }
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let repo = cli.repo.open()?;
    let pushed = archive::Archiver::new(&repo, stanza, opts.compression)?.push(name, &bytes)?;
    if pushed == Pushed::AlreadyArchived {
        eprintln!("bk-wal: {name} was already archived with the same content; nothing to do");
    }
    Ok(0)
}

/// Waits for the running helper, or one started now, to push `name`.
fn wait_for_helper(
    cli: &cli::Cli,
    stanza: &str,
    wal_dir: &std::path::Path,
    spool: &std::path::Path,
    name: &str,
    path: &std::path::Path,
    opts: &PushArgs,
) -> wal_ahead::Waited {
    if wal_ahead::helper_running(spool) {
        return wal_ahead::wait_for_helper(spool, name, path, HELPER_WAIT, || {
            wal_ahead::helper_running(spool)
        });
    }
    let mut args: Vec<std::ffi::OsString> = vec![
        "--stanza".into(),
        stanza.into(),
        "push-helper".into(),
        wal_dir.as_os_str().to_owned(),
        "--spool".into(),
        spool.as_os_str().to_owned(),
        "--workers".into(),
        opts.ahead.to_string().into(),
    ];
    if let Some(level) = opts.compression {
        args.extend(["--compression".into(), level.to_string().into()]);
    }
    let Some(mut helper) = spawn_detached(cli, &args) else {
        return wal_ahead::Waited::NoHelper;
    };
    wal_ahead::wait_for_helper(spool, name, path, HELPER_WAIT, || {
        matches!(helper.try_wait(), Ok(None))
    })
}

/// What `push` is told besides the file.
struct PushArgs {
    ahead: usize,
    spool: Option<std::path::PathBuf>,
    compression: Option<i32>,
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
            compression,
        } => {
            let opts = PushArgs {
                ahead: *ahead,
                spool: spool.clone(),
                compression: *compression,
            };
            let result = push(&cli, &stanza, path, &opts);
            if let Some(file) = metrics {
                let location = cli.repo.location().unwrap_or("").to_string();
                write_push_metrics(file, &location, &stanza, path, result.is_ok())?;
            }
            result
        }
        Command::PushHelper {
            wal_dir,
            spool,
            workers,
            compression,
            idle_secs,
        } => {
            let repo = cli.repo.open()?;
            let archiver = archive::Archiver::new(&repo, &stanza, *compression)?;
            let idle = Duration::try_from_secs_f64(*idle_secs).unwrap_or(Duration::from_secs(10));
            wal_ahead::run_helper(&archiver, wal_dir, spool, *workers, idle)?;
            Ok(0)
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
            // The spool is keyed by the repository and where the key comes
            // from: a call with another key opens the repository itself.
            let keyed = format!("{}\0{}", cli.repo.location()?, cli.repo.key_source());
            let spool = (*prefetch > 0)
                .then(|| prefetch::spool_dir(spool.as_deref(), &stanza, &keyed))
                .flatten();
            if let Some(spool) = &spool {
                if from_prefetcher(&cli, &stanza, file, dest, spool, *prefetch) {
                    prefetch::got(spool, file);
                    return Ok(0);
                }
            }
            let budget = Duration::from_secs_f64(*retry_secs);
            let found = archive::within_budget(budget, || {
                let repo = cli.repo.open()?;
                archive::fetch(&repo, &stanza, file)
            })?;
            match found {
                Some(bytes) => {
                    archive::write_whole(dest, &bytes)?;
                    if let Some(spool) = &spool {
                        prefetch::got(spool, file);
                    }
                    Ok(0)
                }
                None => {
                    eprintln!("bk-wal: {file} is not in the archive of stanza {stanza}");
                    Ok(1)
                }
            }
        }
        Command::Prefetch {
            count,
            spool,
            idle_secs,
        } => {
            let repo = cli.repo.open()?;
            let record = archive::load_stanza(&repo, &stanza)?
                .ok_or_else(|| Error::Usage(format!("no stanza {stanza:?}")))?;
            let threads = repo.backend().write_concurrency();
            let idle = Duration::try_from_secs_f64(*idle_secs).unwrap_or(Duration::from_secs(10));
            prefetch::run_prefetcher(&repo, &record, spool, *count, threads, idle)?;
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
                progress: Some(Default::default()),
            };
            let _reporter = opts
                .progress
                .as_ref()
                .and_then(|p| cli.output.report("backing up", p));
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
            let mut opts = restore_options(&cli, stanza)?;
            let repo = cli.repo.open()?;
            let progress = std::sync::Arc::new(bk::progress::Progress::default());
            opts.progress = Some(std::sync::Arc::clone(&progress));
            let reporter = cli.output.report("restoring", &progress);
            let done = restore::restore_cluster(&repo, &opts)?;
            drop(reporter);
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
