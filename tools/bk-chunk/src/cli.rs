use clap::Parser;
use std::path::PathBuf;

/// Walk a directory tree (or read stdin) and write its chunk stream to stdout.
///
/// The stream (see bk-stream(5)) is meant for bk-put:
/// `bk-chunk /data | bk-put`. With a repository configured (-r or
/// BK_REPO), chunk boundaries use that repository's keyed chunker.
#[derive(Parser, Debug)]
#[command(name = "bk-chunk", version)]
pub struct Cli {
    /// Directories or files to read (several go into one stream, rooted at
    /// their deepest common directory), or - for stdin
    ///
    /// Several paths make one stream and one snapshot, and their order does
    /// not matter (see Several sources in bk-chunk(1)). A single file is
    /// stored under its own name. `-` stores stdin as one file named by
    /// --name; it cannot be combined with other paths, and a terminal on
    /// stdin is refused (exit 2).
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Name of the file when reading stdin (e.g. db.sql)
    ///
    /// Required with `-` and refused otherwise. It must be a relative path
    /// without empty, `.` or `..` components, since it becomes the path of
    /// the file in the listing and in every restore.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Earlier listing (from `bk-ls SNAPSHOT`): files whose size, mtime,
    /// ctime and inode are unchanged reuse its chunk ids without being read
    ///
    /// The path of FILE is recorded in the stream's header and in the
    /// snapshot, so a snapshot shows which listing its unread files came
    /// from. Use the listing of the newest snapshot of the same source:
    /// `bk-put --from` picks that parent by itself.
    #[arg(long, value_name = "FILE")]
    pub parent: Option<PathBuf>,
    #[command(flatten)]
    pub exclude: bk::cli::ExcludeArgs,
    #[command(flatten)]
    pub files_from: bk::cli::FilesFromArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
