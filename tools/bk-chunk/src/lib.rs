//! bk-chunk as a library: the `bk-chunk` binary and the multi-call `bk` binary both
//! run [`main_from`]; [`cli::Cli`] is what the man page and the shell
//! completions are generated from.

pub mod cli;

use bk::chunker::{Chunker, DEFAULT_SEED};
use bk::source::{self, ChunkOptions, ParentListing};
use bk::{Error, ExitCode, Result};
use std::io::{BufReader, BufWriter};

/// Runs bk-chunk with these arguments (the first is the program name) and
/// exits with the documented code.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let cli: cli::Cli = bk::cli::parse_from(args);
    bk::cli::run("bk-chunk", || run(cli));
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    let (chunker, chunker_name) = if cli.repo.repo.as_deref().is_some_and(|r| !r.is_empty()) {
        let repo = cli.repo.open()?;
        (repo.chunker(), repo.chunker_name())
    } else {
        (
            Chunker::new(Default::default(), &DEFAULT_SEED),
            "default".to_string(),
        )
    };
    let parent = match &cli.parent {
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            Some(ParentListing::read(BufReader::new(f))?)
        }
        None => None,
    };
    let mut opts = ChunkOptions {
        chunker,
        chunker_name,
        parent,
        parent_name: cli.parent.as_ref().map(|p| p.display().to_string()),
        filter: None,
        live_source: false,
        sources: None,
        exclude: None,
        progress: None,
    };
    let paths = cli.files_from.paths(&cli.paths)?;
    let from_stdin = paths.len() == 1 && paths[0].as_os_str() == "-";
    bk::sys::widen_pipe(&std::io::stdout());
    let stdout = std::io::stdout().lock();
    let mut out = BufWriter::with_capacity(1 << 20, stdout);
    let summary = if from_stdin {
        let name = cli.name.as_deref().ok_or_else(|| {
            Error::Usage("reading stdin needs --name NAME (the file name to store)".into())
        })?;
        bk::cli::refuse_terminal_stdin(
            "the bytes to chunk (PATH is -)",
            "pipe them in: `pg_dump db | bk-chunk - --name db.sql`",
        )?;
        source::chunk_stream(name, std::io::stdin().lock(), &opts, &mut out)?
    } else {
        if cli.name.is_some() {
            return Err(Error::Usage(
                "--name applies only when PATH is - (stdin)".into(),
            ));
        }
        if paths.is_empty() {
            return Err(Error::usage_hint(
                "no PATH to read",
                "give a directory (`bk-chunk /data | bk-put`), --files-from FILE, or - for stdin",
            ));
        }
        if paths.iter().any(|p| p.as_os_str() == "-") {
            return Err(Error::Usage(
                "- (stdin) cannot be combined with other paths".into(),
            ));
        }
        let root = opts.select(&paths, &cli.exclude.options())?;
        source::chunk_tree(&root, &opts, &mut out)?
    };
    Ok(if summary.errors > 0 {
        ExitCode::Partial
    } else {
        ExitCode::Success
    })
}
