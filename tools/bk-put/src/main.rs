mod cli;

use bk::put::{self, PutOptions};
use bk::wire::{self, Record, Timestamp};
use bk::{Error, ExitCode, Result};
use std::io::BufReader;

fn main() {
    let cli: cli::Cli = bk::cli::parse();
    bk::cli::run("bk-put", || run(cli));
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    let time = match &cli.time {
        Some(t) => Some(
            Timestamp::parse(t)
                .ok_or_else(|| Error::Usage(format!("--time {t:?} is not an RFC 3339 time")))?,
        ),
        None => None,
    };
    if let Some(i) = &cli.identity {
        if !i.contains(':') {
            return Err(Error::Usage(format!(
                "--identity {i:?} must look like user@host:/path"
            )));
        }
    }
    let opts = PutOptions {
        identity: cli.identity.clone(),
        tags: bk::cli::parse_tags(&cli.tags)?,
        time,
        threads: cli.threads,
    };
    let repo = cli.repo.open()?;
    bk::sys::widen_pipe(&std::io::stdin());
    let stdin = BufReader::with_capacity(1 << 20, std::io::stdin().lock());
    let outcome = put::put(&repo, stdin, &opts)?;
    let mut out = std::io::stdout().lock();
    wire::write_record(&mut out, &Record::Snapshot(outcome.snapshot))
        .map_err(bk::error::stdout_error)?;
    Ok(if outcome.problems {
        ExitCode::Partial
    } else {
        ExitCode::Success
    })
}
