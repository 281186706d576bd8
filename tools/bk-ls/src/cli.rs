use clap::Parser;

/// List snapshots, or the entries of one snapshot: JSON lines, or a table
/// when stdout is a terminal.
///
/// Without SNAPSHOT: one line per snapshot, oldest first. With SNAPSHOT
/// (`latest`, an id, or a unique id prefix): the snapshot's listing
/// entries, optionally only those at or below PATHs, then a trailer.
#[derive(Parser, Debug)]
#[command(name = "bk-ls", version)]
pub struct Cli {
    /// `latest`, a snapshot id or a unique prefix: list its entries
    /// (without it: list the snapshots)
    ///
    /// `latest` is the newest snapshot among those --identity and --tag
    /// select; when they belong to more than one identity and no
    /// --identity is given, bk-ls refuses (exit 2) rather than name
    /// whichever application backed up last.
    #[arg(value_name = "SNAPSHOT")]
    pub snapshot: Option<String>,
    /// Only these paths and what lies below them (relative as listed, or
    /// absolute under the snapshot's source)
    ///
    /// Repeatable. A leading `./` and a trailing `/` are ignored, and `.`
    /// selects everything. `etc` matches etc and etc/passwd, but not
    /// etcetera. For a backup of /srv, /srv/etc is etc; an absolute path
    /// outside the source is refused (exit 2) with a hint. Error records
    /// are matched by their path too.
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,
    /// Only snapshots of this identity (also selects `latest`)
    ///
    /// Without SNAPSHOT: only snapshots of this identity are listed. With
    /// `latest`: the newest of them. With an id: the snapshot must have
    /// this identity (exit 2 otherwise). A trailing slash and `.`
    /// components in the path part are ignored: root@web1:/srv/ selects the
    /// snapshots of root@web1:/srv. Snapshots made by earlier versions from
    /// a source typed with a trailing slash keep that spelling in their
    /// identity, and --identity does not select them; name them by id.
    #[arg(long, value_name = "USER@HOST:/PATH")]
    pub identity: Option<String>,
    /// Only snapshots carrying this tag (repeatable: all must match)
    ///
    /// Without SNAPSHOT: only snapshots that carry every tag given are
    /// listed. With `latest`: the newest that carries them. With an id:
    /// the snapshot must carry them (exit 2 otherwise).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// JSON lines even on a terminal (elsewhere they are the default;
    /// on a terminal the default is a table)
    ///
    /// Pipelines never see the table: output that is not a terminal is
    /// always JSON lines, with or without this flag.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
