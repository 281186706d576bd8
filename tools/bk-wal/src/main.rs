mod cli;

use bk::ops::wal::archive::{self, Pushed};
use bk::ops::wal::backup::{self, BackupOptions};
use bk::sys::AllocatorProfile;
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
        Command::Push { path } => {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::Usage(format!("{}: not a WAL file path", path.display())))?;
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let repo = cli.repo.open()?;
            if archive::push(&repo, &stanza, name, &bytes)? == Pushed::AlreadyArchived {
                eprintln!(
                    "bk-wal: {name} was already archived with the same content; nothing to do"
                );
            }
            Ok(0)
        }
        Command::Fetch {
            file,
            dest,
            retry_secs,
        } => {
            if !(retry_secs.is_finite() && *retry_secs >= 0.0) {
                return Err(Error::Usage(
                    "--retry-secs must be a number of seconds".into(),
                ));
            }
            let budget = Duration::from_secs_f64(*retry_secs);
            let found = archive::within_budget(budget, || {
                let repo = cli.repo.open()?;
                archive::fetch(&repo, &stanza, file)
            })?;
            match found {
                Some(bytes) => {
                    archive::write_durably(dest, &bytes)?;
                    Ok(0)
                }
                None => {
                    eprintln!("bk-wal: {file} is not in the archive of stanza {stanza}");
                    Ok(1)
                }
            }
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
    }
}
