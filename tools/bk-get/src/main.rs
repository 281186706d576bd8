mod cli;

use bk::listing::{entries, ListingRecords};
use bk::restore::{self, RestoreOptions};
use bk::wire::{self, Kind, RecordReader};
use bk::{Error, ExitCode, Result};
use std::io::{BufReader, BufWriter};

fn main() {
    let cli: cli::Cli = bk::cli::parse();
    bk::cli::run("bk-get", || run(cli));
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    let filters: Vec<Vec<u8>> = cli
        .paths
        .iter()
        .map(|p| p.trim_start_matches("./").as_bytes().to_vec())
        .collect();
    let Some(into) = cli.into.clone() else {
        return to_stdout(&cli);
    };
    let repo = cli.repo.open()?;
    let index = repo.load_index()?;
    let opts = RestoreOptions {
        into,
        filters,
        threads: cli.threads,
    };
    let summary = if cli.snapshot == "-" {
        let mut reader = RecordReader::new(BufReader::new(std::io::stdin().lock()));
        let records = std::iter::from_fn(move || reader.next_record().transpose());
        restore::restore(&repo, &index, entries(records), &opts)?
    } else {
        let (_, snap) = repo.find_snapshot(&cli.snapshot, cli.identity.as_deref())?;
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

fn to_stdout(cli: &cli::Cli) -> Result<ExitCode> {
    let [path] = cli.paths.as_slice() else {
        return Err(Error::Usage(
            "without --into, give exactly one file PATH to write to stdout".into(),
        ));
    };
    if cli.snapshot == "-" {
        return Err(Error::Usage(
            "reading entries from stdin (-) needs --into DIR".into(),
        ));
    }
    let repo = cli.repo.open()?;
    let (_, snap) = repo.find_snapshot(&cli.snapshot, cli.identity.as_deref())?;
    let index = repo.load_index()?;
    let want = path.trim_start_matches("./").as_bytes();
    for e in entries(ListingRecords::new(&repo, &index, &snap.listing)) {
        let e = e?;
        if e.path_bytes()? == want {
            if e.kind != Kind::File {
                return Err(Error::Usage(format!("{path} is not a regular file")));
            }
            let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            restore::write_file_to(&repo, &index, &e, &mut out)?;
            return Ok(ExitCode::Success);
        }
    }
    Err(Error::Usage(format!(
        "no file {path:?} in snapshot {}",
        cli.snapshot
    )))
}
