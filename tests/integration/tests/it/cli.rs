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

/// Issue 33, item 6: one duration grammar for every flag of every tool.
/// `30m` (minutes to some, months to restic's --keep-within) is refused
/// everywhere with a hint naming both readings; `1h30min`, `90s`, `7d` and
/// `1y2mo` (retention) are read the same way everywhere.
#[test]
fn every_duration_flag_reads_one_grammar_and_refuses_a_bare_m() {
    let env = Env::new();
    let db = env.path("app.db");
    std::fs::write(&db, b"").unwrap();
    for cmd in [
        "bk-prune --keep-last 1 --grace 30m --dry-run".to_string(),
        "bk-prune --keep-within 30m --dry-run".to_string(),
        "bk-wal --stanza s expire --keep-last 1 --grace 30m --dry-run".to_string(),
        format!("bk-sqlite replicate '{}' --sync-interval 30m", db.display()),
        "bk-sqlite prune --keep-within 30m --dry-run".to_string(),
    ] {
        let err = env.fails(&cmd, 2);
        assert!(
            err.contains("\"m\" is ambiguous") && err.contains("min") && err.contains("mo"),
            "{cmd}: {err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{cmd}: {err}");
    }
    env.ok("bk-prune --keep-last 1 --grace 1h30min --dry-run");
    env.ok("bk-prune --keep-within 1y2mo --dry-run");
    let err = env.fails("bk-prune --keep-within 90min --dry-run", 2);
    assert!(err.contains("retention counts whole hours"), "{err}");
    let err = env.fails("bk-prune --keep-last 1 --grace 1mo --dry-run", 2);
    assert!(err.contains("no fixed length"), "{err}");
}

#[test]
fn argument_errors_are_one_prefixed_line_and_a_hint() {
    let env = Env::new();
    for (cmd, tool, says) in [
        ("bk-get --bogus", "bk-get", "unexpected argument '--bogus'"),
        ("bk-get", "bk-get", "<SNAPSHOT>"),
        ("bk-prune --keep-last x", "bk-prune", "invalid value 'x'"),
        (
            "bk-wal --stanza s expire --keep-last",
            "bk-wal",
            "--keep-last",
        ),
    ] {
        let err = env.fails(cmd, 2);
        let lines: Vec<&str> = err.trim_end().lines().collect();
        assert_eq!(lines.len(), 2, "{cmd}: {err}");
        assert!(
            lines[0].starts_with(&format!("{tool}: error: ")),
            "{cmd}: {err}"
        );
        assert!(lines[0].contains(says), "{cmd}: {err}");
        assert!(
            lines[1].starts_with(&format!("{tool}: hint: ")),
            "{cmd}: {err}"
        );
    }
}
