//! bk-ls as a library: the `bk-ls` binary and the multi-call `bk` binary both
//! run [`main_from`]; [`cli::Cli`] is what the man page and the shell
//! completions are generated from.

pub mod cli;

use bk::listing::{matches_filters, ListingRecords};
use bk::repo::snapshot_record;
use bk::wire::{self, Record, Trailer};
use bk::{ExitCode, Result};
use std::io::{BufWriter, IsTerminal, Write};

/// Runs bk-ls with these arguments (the first is the program name) and
/// exits with the documented code.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let cli: cli::Cli = bk::cli::parse_from(args);
    bk::cli::run("bk-ls", || run(cli));
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    let tags = bk::cli::parse_tags(&cli.tags)?;
    let identity = cli.identity.as_deref().map(wire::normalize_identity);
    let repo = cli.repo.open()?;
    // People at a terminal get a table; pipelines get JSON lines, as ever.
    let table = !cli.json && std::io::stdout().is_terminal();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let io = bk::error::stdout_error;
    match &cli.snapshot {
        None => {
            let mut rows = Vec::new();
            for (id, s) in repo.snapshots()? {
                bk::sys::check_interrupted()?;
                if identity.as_ref().is_some_and(|i| *i != s.identity) {
                    continue;
                }
                if !tags.iter().all(|(k, v)| s.tags.get(k) == Some(v)) {
                    continue;
                }
                rows.push(snapshot_record(&id, &s));
            }
            if table {
                out.write_all(bk::format::human::snapshot_table(&rows).as_bytes())
                    .map_err(io)?;
            } else {
                for r in rows {
                    wire::write_record(&mut out, &Record::Snapshot(r)).map_err(io)?;
                }
            }
        }
        Some(spec) => {
            let (_, snap) = repo.choose_snapshot(spec, cli.identity.as_deref(), &tags)?;
            let filters = cli
                .paths
                .iter()
                .map(|p| bk::listing::listing_filter(p, &snap.source))
                .collect::<Result<Vec<_>>>()?;
            let index = repo.load_index()?;
            let mut trailer = Trailer {
                v: wire::VERSION,
                ..Default::default()
            };
            for rec in ListingRecords::new(&repo, &index, &snap.listing) {
                // The handlers bk::cli::run installs turn SIGINT/SIGTERM
                // into a flag: a listing of millions of entries polls it.
                bk::sys::check_interrupted()?;
                match rec? {
                    Record::Entry(e) if matches_filters(&e.path_bytes()?, &filters) => {
                        trailer.entries += 1;
                        trailer.bytes += e.size;
                        if table {
                            writeln!(out, "{}", bk::format::human::entry_line(&e)).map_err(io)?;
                        } else {
                            wire::write_record(&mut out, &Record::Entry(e)).map_err(io)?;
                        }
                    }
                    Record::Error(e) if matches_filters(e.path.as_bytes(), &filters) => {
                        trailer.errors += 1;
                        if table {
                            writeln!(out, "?????????? {}: not backed up: {}", e.path, e.message)
                                .map_err(io)?;
                        } else {
                            wire::write_record(&mut out, &Record::Error(e)).map_err(io)?;
                        }
                    }
                    _ => {}
                }
            }
            if table {
                writeln!(
                    out,
                    "{} entries, {}{}",
                    trailer.entries,
                    bk::format::human::bytes(trailer.bytes),
                    if trailer.errors > 0 {
                        format!(", {} not backed up", trailer.errors)
                    } else {
                        String::new()
                    }
                )
                .map_err(io)?;
            } else {
                wire::write_record(&mut out, &Record::Trailer(trailer)).map_err(io)?;
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(ExitCode::Success)
}
