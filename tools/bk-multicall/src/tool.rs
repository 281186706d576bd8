//! The tools the multi-call binary carries: each one's name, its clap
//! definition and its entry point, in one table.

use clap::CommandFactory;
use std::ffi::OsString;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Chunk,
    Put,
    Get,
    Ls,
    Repo,
    Prune,
    Verify,
    Wal,
    Sqlite,
}

impl Tool {
    /// In the order bk(7) introduces them.
    pub const ALL: [Tool; 9] = [
        Tool::Chunk,
        Tool::Put,
        Tool::Get,
        Tool::Ls,
        Tool::Repo,
        Tool::Prune,
        Tool::Verify,
        Tool::Wal,
        Tool::Sqlite,
    ];

    /// The command name, which is also the link name and the man page's.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Chunk => "bk-chunk",
            Tool::Put => "bk-put",
            Tool::Get => "bk-get",
            Tool::Ls => "bk-ls",
            Tool::Repo => "bk-repo",
            Tool::Prune => "bk-prune",
            Tool::Verify => "bk-verify",
            Tool::Wal => "bk-wal",
            Tool::Sqlite => "bk-sqlite",
        }
    }

    /// `bk-put` or, as in `bk put`, `put`.
    pub fn named(name: &str) -> Option<Tool> {
        let name = name.strip_prefix("bk-").unwrap_or(name);
        Tool::ALL
            .into_iter()
            .find(|t| t.name().strip_prefix("bk-") == Some(name))
    }

    /// The clap definition the tool parses its arguments with.
    pub fn command(self) -> clap::Command {
        match self {
            Tool::Chunk => bk_chunk::cli::Cli::command(),
            Tool::Put => bk_put::cli::Cli::command(),
            Tool::Get => bk_get::cli::Cli::command(),
            Tool::Ls => bk_ls::cli::Cli::command(),
            Tool::Repo => bk_repo::cli::Cli::command(),
            Tool::Prune => bk_prune::cli::Cli::command(),
            Tool::Verify => bk_verify::cli::Cli::command(),
            Tool::Wal => bk_wal::cli::Cli::command(),
            Tool::Sqlite => bk_sqlite::cli::Cli::command(),
        }
    }

    /// Runs the tool with `args` (the first is the program name).
    pub fn run(self, args: Vec<OsString>) -> ! {
        match self {
            Tool::Chunk => bk_chunk::main_from(args),
            Tool::Put => bk_put::main_from(args),
            Tool::Get => bk_get::main_from(args),
            Tool::Ls => bk_ls::main_from(args),
            Tool::Repo => bk_repo::main_from(args),
            Tool::Prune => bk_prune::main_from(args),
            Tool::Verify => bk_verify::main_from(args),
            Tool::Wal => bk_wal::main_from(args),
            Tool::Sqlite => bk_sqlite::main_from(args),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_is_found_by_its_command_name_or_its_short_name_only() {
        assert_eq!(Tool::named("bk-put"), Some(Tool::Put));
        assert_eq!(Tool::named("sqlite"), Some(Tool::Sqlite));
        assert_eq!(Tool::named("bk"), None);
        assert_eq!(Tool::named("bk-bk-put"), None);
        assert_eq!(Tool::named("generate"), None);
    }

    #[test]
    fn every_tool_names_itself_as_its_command() {
        for tool in Tool::ALL {
            assert_eq!(tool.command().get_name(), tool.name());
        }
    }
}
