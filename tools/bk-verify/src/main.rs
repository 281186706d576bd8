mod cli;

use bk::verify::{PackSelection, VerifyOptions};
use std::io::BufWriter;

fn main() {
    let cli: cli::Cli = bk::cli::parse();
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
        };
        let mut out = BufWriter::new(std::io::stdout().lock());
        bk::verify::run_tool(
            &cli.repo,
            &opts,
            cli.metrics.as_deref(),
            !cli.no_lock,
            &mut out,
        )
    });
}
