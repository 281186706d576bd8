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
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Name of the file when reading stdin (e.g. db.sql)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Earlier listing (from `bk-ls SNAPSHOT`): files whose size, mtime,
    /// ctime and inode are unchanged reuse its chunk ids without being read
    #[arg(long, value_name = "FILE")]
    pub parent: Option<PathBuf>,
    #[command(flatten)]
    pub exclude: bk::cli::ExcludeArgs,
    #[command(flatten)]
    pub files_from: bk::cli::FilesFromArgs,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}
