//! The command-line contract every tool keeps: `--help` works and says
//! what the tool does, an unknown flag is a usage error (exit 2) with a
//! hint, and a repository that is not there is exit 10.

use crate::common::*;

/// Each tool, the words its `--help` starts with, and the arguments that
/// make it open the repository.
const TOOLS: &[(&str, &str, &str)] = &[
    ("bk-chunk", "Walk a directory tree", ""),
    ("bk-put", "Read a chunk stream", "--from src"),
    (
        "bk-get",
        "Restore files from a snapshot",
        "latest --into out",
    ),
    ("bk-ls", "List snapshots", ""),
    ("bk-prune", "Forget snapshots", "--keep-last 1"),
    ("bk-verify", "Check a repository's integrity", ""),
    ("bk-repo", "Create and administer a bk repository", "stats"),
    ("bk-wal", "PostgreSQL WAL archiving", "--stanza main info"),
];

#[test]
fn every_tool_has_help_refuses_unknown_flags_and_reports_a_missing_repository() {
    let env = Env::bare();
    std::fs::create_dir_all(env.path("src")).unwrap();
    for (tool, help, opening) in TOOLS {
        let out = env.ok(&format!("{tool} --help"));
        assert!(out.starts_with(help), "{tool} --help: {out}");
        assert!(out.contains("Usage:"), "{tool} --help: {out}");

        let err = env.fails(&format!("{tool} --no-such-flag"), 2);
        assert!(err.contains("--no-such-flag"), "{tool}: {err}");

        if *tool == "bk-chunk" {
            continue; // needs no repository
        }
        let err = env.fails(&format!("{tool} {opening}"), 10);
        assert!(err.contains("no bk repository"), "{tool}: {err}");
        assert!(err.contains("hint:"), "{tool}: {err}");
    }
}
