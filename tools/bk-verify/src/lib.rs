//! bk-verify as a library: the `bk-verify` binary and the multi-call `bk` binary both
//! run [`main_from`]; [`cli::Cli`] is what the man page and the shell
//! completions are generated from.

pub mod cli;

use bk::repo::Repository;
use bk::verify::{Outcome, PackSelection, VerifyOptions};
use bk::ExitCode;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

/// Runs bk-verify with these arguments (the first is the program name) and
/// exits with the documented code.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let cli: cli::Cli = bk::cli::parse_from(args);
    bk::cli::run("bk-verify", || {
        let opts = VerifyOptions {
            read_data: if cli.read_data {
                Some(PackSelection::All)
            } else {
                cli.read_data_subset.clone()
            },
            against: cli
                .against
                .as_ref()
                .map(|a| (a[0].clone().into(), a[1].clone())),
            threads: cli.threads,
            exclude: cli.exclude.options(),
            progress: Some(std::sync::Arc::new(bk::progress::Progress::counting(
                "packs",
            ))),
        };
        let _reporter = opts
            .progress
            .as_ref()
            .filter(|_| opts.read_data.is_some() || cli.output.quiet)
            .and_then(|p| cli.output.report("reading data", p));
        let mut out = BufWriter::new(std::io::stdout().lock());
        run_tool(
            &cli.repo,
            &opts,
            cli.metrics.as_deref(),
            !cli.no_lock,
            &mut out,
        )
    });
}

/// bk-verify's whole run: opens the repository (taking a shared lock
/// unless `lock` is false), runs [`verify`], and writes the metrics file
/// if asked, also when the repository could not be opened or verified.
fn run_tool(
    args: &bk::cli::RepoArgs,
    opts: &VerifyOptions,
    metrics: Option<&Path>,
    lock: bool,
    out: &mut impl Write,
) -> bk::Result<ExitCode> {
    let last_run = bk::wire::Timestamp::now();
    let started = Instant::now();
    let mut label = args.repo.clone().unwrap_or_default();
    let result = (|| -> bk::Result<Outcome> {
        let backend = bk::backend::open(args.location()?)?;
        label = backend.location();
        let repo = Repository::open(backend, &args.secret(false)?)?;
        let _lock = if lock {
            Some(bk::locks::LockGuard::acquire(
                repo.backend().clone(),
                repo.keys(),
                bk::locks::LockMode::Shared,
                "bk-verify",
            )?)
        } else {
            None
        };
        bk::verify::verify(&repo, opts, out)
    })();
    let Some(path) = metrics else {
        return result.map(|o| o.exit);
    };
    let m = match &result {
        Ok(o) => bk::metrics::VerifyMetrics {
            repository: label,
            last_run: last_run.secs as f64 + last_run.nanos as f64 / 1e9,
            success: o.exit == ExitCode::Success,
            duration_s: started.elapsed().as_secs_f64(),
            findings: [o.summary.errors, o.summary.warnings, o.summary.infos],
            packs_read: o.summary.packs_read,
            bytes_read: o.summary.bytes_read,
            repo: Some(o.metrics.clone()),
        },
        Err(_) => bk::metrics::VerifyMetrics {
            repository: label,
            last_run: last_run.secs as f64 + last_run.nanos as f64 / 1e9,
            success: false,
            duration_s: started.elapsed().as_secs_f64(),
            findings: [0; 3],
            packs_read: 0,
            bytes_read: 0,
            repo: None,
        },
    };
    let written = bk::metrics::write_atomic(path, &bk::metrics::render(&m));
    match (result, written) {
        (Ok(o), Ok(())) => Ok(o.exit),
        (Ok(o), Err(e)) if o.exit == ExitCode::Success => Err(e),
        (Ok(o), Err(e)) => {
            eprintln!("bk-verify: error: {e}");
            Ok(o.exit)
        }
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(m)) => {
            eprintln!("bk-verify: error: {m}");
            Err(e)
        }
    }
}
