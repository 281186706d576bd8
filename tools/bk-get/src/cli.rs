use clap::Parser;
use std::path::PathBuf;

/// Restore files from a snapshot.
///
/// `bk-get SNAPSHOT --into DIR [PATH…]` restores everything or the chosen
/// paths; `bk-get SNAPSHOT PATH` writes one file's bytes to stdout;
/// `bk-get - --into DIR` restores the listing entries read from stdin
/// (e.g. `bk-ls latest | jq -c 'select(…)' | bk-get - --into DIR`).
#[derive(Parser, Debug)]
#[command(name = "bk-get", version)]
pub struct Cli {
    /// `latest`, a snapshot id or unique prefix, or - for entries on stdin
    ///
    /// `-` reads listing entries as bk-ls prints them (filtered with jq,
    /// for instance) and needs --into. `latest` needs --identity when the
    /// repository holds snapshots of more than one identity, so a restore
    /// never takes another application's newest snapshot (exit 2 and a hint
    /// listing some identities otherwise).
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: String,
    /// Only these paths (and what lies below them), as bk-ls prints them
    /// or absolute under the snapshot's source; without --into, one file
    /// to write to stdout
    ///
    /// With --into, repeatable; a leading `./` and a trailing `/` are
    /// ignored. A path is relative to the backed-up root (`etc/hosts`), or
    /// absolute under the snapshot's source: for a backup of /srv/app,
    /// /srv/app/config.yml is config.yml. An absolute path outside the
    /// source is refused (exit 2) with a hint saying what to type.
    ///
    /// Without --into exactly one PATH is given, and it must be a regular
    /// file: a directory is refused (exit 2) with a hint to use --into.
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
    /// Directory to restore into (created if missing)
    ///
    /// Nothing is written outside DIR, whatever the listing says. The
    /// snapshot's root entry `.` gives DIR its mode and mtime.
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
    /// With `latest`: the newest snapshot of this identity
    ///
    /// With an id: the snapshot must have this identity (exit 2 otherwise),
    /// a guard against restoring the wrong application's data. A trailing
    /// slash or `.` components in the path part are ignored
    /// (root@web1:/srv/ is root@web1:/srv).
    #[arg(long, value_name = "USER@HOST:/PATH")]
    pub identity: Option<String>,
    /// Write the snapshot as a chunk stream on stdout, for another
    /// repository's bk-put (a copy keeping its identity, time and tags)
    ///
    /// Takes one SNAPSHOT and no PATH, and not --into. Nothing is restored;
    /// see Copying a snapshot to another repository in bk-get(1).
    #[arg(long, conflicts_with = "into")]
    pub stream: bool,
    /// With --stream: the chunk ids the destination holds (`bk-repo -r DEST
    /// chunks`, or - for stdin); their data is not sent
    ///
    /// One id per line, as `bk-repo chunks` prints them. Without --have
    /// every chunk is sent.
    #[arg(long, value_name = "FILE", requires = "stream")]
    pub have: Option<PathBuf>,
    /// Parallel file writers (default: two per CPU)
    ///
    /// Files restored in parallel; each file is written by one thread. 0,
    /// the default, is two per CPU.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    #[command(flatten)]
    pub output: bk::cli::OutputArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
