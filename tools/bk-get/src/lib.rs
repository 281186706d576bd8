//! bk-get as a library: the `bk-get` binary and the multi-call `bk` binary both
//! run [`main_from`]; [`cli::Cli`] is what the man page and the shell
//! completions are generated from.

pub mod cli;

use bk::listing::{entries, ListingRecords};
use bk::restore::{self, RestoreOptions};
use bk::wire::{self, Kind, RecordReader};
use bk::{Error, ExitCode, Result};
use std::io::{BufReader, BufWriter};

/// Runs bk-get with these arguments (the first is the program name) and
/// exits with the documented code.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let cli: cli::Cli = bk::cli::parse_from(args);
    bk::cli::run("bk-get", || run(cli));
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    if cli.stream {
        return copy_stream(&cli);
    }
    let Some(into) = cli.into.clone() else {
        return to_stdout(&cli);
    };
    let repo = cli.repo.open()?;
    let progress = std::sync::Arc::new(bk::progress::Progress::default());
    let mut opts = RestoreOptions {
        into,
        filters: Vec::new(),
        threads: cli.threads,
        progress: Some(std::sync::Arc::clone(&progress)),
    };
    let summary = if cli.snapshot == "-" {
        bk::cli::refuse_terminal_stdin(
            "listing entries (SNAPSHOT is -)",
            "`bk-ls SNAPSHOT PATH | bk-get - --into DIR` restores the listed entries",
        )?;
        opts.filters = filters(&cli.paths, "-")?;
        let index = repo.load_index()?;
        let _reporter = cli.output.report("restoring", &progress);
        let mut reader = RecordReader::new(BufReader::new(std::io::stdin().lock()));
        let records = std::iter::from_fn(move || reader.next_record().transpose());
        let listed = bk::listing::of_this_repository(&index, entries(records))?;
        restore::restore(&repo, &index, listed, &opts)?
    } else {
        let (_, snap) = choose(&repo, &cli)?;
        opts.filters = filters(&cli.paths, &snap.source)?;
        if opts.filters.is_empty() {
            progress.set_totals(snap.files, snap.bytes);
        }
        let index = repo.load_index()?;
        let _reporter = cli.output.report("restoring", &progress);
        restore::restore(
            &repo,
            &index,
            entries(ListingRecords::new(&repo, &index, &snap.listing)),
            &opts,
        )?
    };
    let record = serde_json::json!({
        "type": "restore", "v": wire::VERSION,
        "files": summary.files, "dirs": summary.dirs, "links": summary.links,
        "bytes": summary.bytes, "skipped": summary.skipped, "errors": summary.errors,
        "integrity_errors": summary.integrity_errors,
    });
    wire::write_json(&mut std::io::stdout().lock(), &record).map_err(bk::error::stdout_error)?;
    Ok(if summary.integrity_errors > 0 {
        ExitCode::Integrity
    } else if summary.errors > 0 || summary.skipped > 0 {
        ExitCode::Partial
    } else {
        ExitCode::Success
    })
}

/// `bk-get SNAPSHOT --stream [--have FILE]`: the snapshot as a chunk
/// stream for another repository (see bk::copy).
fn copy_stream(cli: &cli::Cli) -> Result<ExitCode> {
    if cli.snapshot == "-" || !cli.paths.is_empty() {
        return Err(Error::Usage(
            "--stream copies one whole snapshot: give SNAPSHOT and no PATH".into(),
        ));
    }
    let have = match &cli.have {
        None => Default::default(),
        Some(p) if p.as_os_str() == "-" => {
            bk::cli::refuse_terminal_stdin(
                "chunk ids (--have -)",
                "pipe them in: `bk-repo -r DEST chunks | bk-get SNAPSHOT --stream --have -`",
            )?;
            bk::copy::read_have(std::io::stdin().lock())?
        }
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            bk::copy::read_have(BufReader::new(f))?
        }
    };
    let repo = cli.repo.open()?;
    let (_, snap) = choose(&repo, cli)?;
    let index = repo.load_index()?;
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let sent = bk::copy::snapshot_stream(&repo, &index, &snap, &have, &mut out)?;
    eprintln!(
        "bk-get: streamed {} entries: {} chunks sent ({}), {} the destination holds",
        sent.entries,
        sent.chunks_sent,
        bk::format::human::bytes(sent.bytes_sent),
        sent.chunks_known
    );
    Ok(ExitCode::Success)
}

fn choose(
    repo: &bk::repo::Repository,
    cli: &cli::Cli,
) -> Result<(bk::id::ObjectId, bk::repo::Snapshot)> {
    repo.choose_snapshot(&cli.snapshot, cli.identity.as_deref(), &Default::default())
}

fn filters(paths: &[String], source: &str) -> Result<Vec<Vec<u8>>> {
    paths
        .iter()
        .map(|p| bk::listing::listing_filter(p, source))
        .collect()
}

fn to_stdout(cli: &cli::Cli) -> Result<ExitCode> {
    let [path] = cli.paths.as_slice() else {
        return Err(Error::usage_hint(
            if cli.paths.is_empty() {
                "nothing to restore to: no --into DIR and no file PATH".to_string()
            } else {
                format!("without --into, give exactly one file PATH (got {})", cli.paths.len())
            },
            "`bk-get SNAPSHOT --into DIR [PATH…]` restores into DIR; `bk-get SNAPSHOT FILE` writes one file to stdout",
        ));
    };
    if cli.snapshot == "-" {
        return Err(Error::Usage(
            "reading entries from stdin (-) needs --into DIR".into(),
        ));
    }
    let repo = cli.repo.open()?;
    let (_, snap) = choose(&repo, cli)?;
    let index = repo.load_index()?;
    let into_hint = || {
        format!(
            "to restore into a directory: bk-get {} --into {path}",
            cli.snapshot
        )
    };
    // `bk-get latest /restore`, as cp would be typed: the user meant --into.
    let local_dir = std::path::Path::new(path).is_dir() || path.ends_with('/');
    let want = match bk::listing::listing_filter(path, &snap.source) {
        Ok(want) => want,
        Err(e) if local_dir => return Err(Error::usage_hint(e.to_string(), into_hint())),
        Err(e) => return Err(e),
    };
    for e in entries(ListingRecords::new(&repo, &index, &snap.listing)) {
        let e = e?;
        if e.path_bytes()? == want {
            if e.kind == Kind::Dir {
                return Err(Error::usage_hint(
                    format!(
                        "{path} is a directory in the snapshot, and only a file can go to stdout"
                    ),
                    format!("bk-get {} --into DIR {path} restores it", cli.snapshot),
                ));
            }
            if e.kind != Kind::File {
                return Err(Error::Usage(format!("{path} is not a regular file")));
            }
            let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            restore::write_file_to(&repo, &index, &e, &mut out)?;
            return Ok(ExitCode::Success);
        }
    }
    let message = format!("no file {path:?} in snapshot {}", cli.snapshot);
    if local_dir {
        return Err(Error::usage_hint(message, into_hint()));
    }
    Err(Error::usage_hint(
        message,
        format!(
            "`bk-ls {} | jq -r 'select(.type==\"entry\").path'` lists its paths",
            cli.snapshot
        ),
    ))
}
