//! bk-put as a library: the `bk-put` binary and the multi-call `bk` binary both
//! run [`main_from`]; [`cli::Cli`] is what the man page and the shell
//! completions are generated from.

pub mod cli;

use bk::put::{self, ParentChoice, PutOptions};
use bk::sys::AllocatorProfile;
use bk::wire::{self, Record, Timestamp};
use bk::{Error, ExitCode, Result};
use std::io::BufReader;

/// Runs bk-put with these arguments (the first is the program name) and
/// exits with the documented code.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let cli: cli::Cli = bk::cli::parse_from(args);
    bk::cli::run_with_allocator("bk-put", AllocatorProfile::MapLarge, || run(cli));
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
        identity: cli.identity.as_deref().map(bk::wire::normalize_identity),
        tags: bk::cli::parse_tags(&cli.tags)?,
        time,
        threads: cli.threads,
        late_tags: None,
        fixed_chunks: None,
        progress: Some(Default::default()),
    };
    let from = cli.files_from.paths(&cli.from)?;
    let from_stdin = from.iter().any(|p| p.as_os_str() == "-");
    if from_stdin && from.len() > 1 {
        return Err(Error::Usage(
            "--from - (stdin) cannot be combined with other sources".into(),
        ));
    }
    if from_stdin && cli.name.is_none() {
        return Err(Error::Usage(
            "--from - needs --name NAME (the file name to store)".into(),
        ));
    }
    if cli.name.is_some() && !from_stdin {
        return Err(Error::Usage("--name applies only with --from -".into()));
    }
    if cli.parent.is_some() && (from_stdin || from.is_empty()) {
        return Err(Error::Usage("--parent applies only with --from DIR".into()));
    }
    let rules = cli.exclude.options();
    if !rules.is_empty() && (from_stdin || from.is_empty()) {
        return Err(Error::usage_hint(
            "exclusion rules apply to a tree (--from DIR)",
            "give them to bk-chunk in a pipeline: `bk-chunk --exclude '*.tmp' DIR | bk-put`",
        ));
    }
    match (from.is_empty(), from_stdin) {
        (true, _) => bk::cli::refuse_terminal_stdin(
            "a chunk stream",
            "`bk-chunk DIR | bk-put` or `bk-put --from DIR` backs up a directory",
        )?,
        (false, true) => bk::cli::refuse_terminal_stdin(
            "the bytes to back up (--from -)",
            "pipe them in: `pg_dump db | bk-put --from - --name db.sql`",
        )?,
        _ => {}
    }
    let repo = cli.repo.open()?;
    let reporter = opts
        .progress
        .as_ref()
        .and_then(|p| cli.output.report("backing up", p));
    bk::sys::widen_pipe(&std::io::stdin());
    let outcome = match (from.is_empty(), &cli.name) {
        (false, Some(name)) => put::put_stream(&repo, name, std::io::stdin().lock(), &opts)?,
        (false, None) => {
            let parent = match cli.parent.as_deref() {
                None => ParentChoice::Latest,
                Some("none") => ParentChoice::None,
                Some(spec) => ParentChoice::Snapshot(spec.to_string()),
            };
            put::put_sources(&repo, &from, &rules, &parent, &opts)?
        }
        (true, _) => {
            let stdin = BufReader::with_capacity(1 << 20, std::io::stdin().lock());
            put::put(&repo, stdin, &opts)?
        }
    };
    drop(reporter);
    let mut out = std::io::stdout().lock();
    wire::write_record(&mut out, &Record::Snapshot(outcome.snapshot))
        .map_err(bk::error::stdout_error)?;
    Ok(if outcome.problems {
        ExitCode::Partial
    } else {
        ExitCode::Success
    })
}
