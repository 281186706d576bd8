//! The README's recipes: scripts/restore-drill run as cron would run it,
//! against a local or (BK_TEST_BACKEND=s3) S3 repository, passing and
//! failing, with the record it leaves; and every bk command in README.md's
//! code blocks checked against the tool's --help (and every file the
//! README names, and every variable it gives a script, against the tree),
//! so that the recipes name nothing that does not exist.

use crate::common::{
    app_volume, bin_dir, code, json_lines, show, stderr, walk_files, Env, APP, OTHER, TOOLS,
};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn drill_script() -> PathBuf {
    repo_root().join("scripts/restore-drill")
}

/// scripts/restore-drill with `vars` in its environment, after the shell
/// code `prefix` (e.g. a PATH change).
fn drill_with(env: &Env, prefix: &str, vars: &[(&str, &str)]) -> Output {
    let mut c = env.sh(&format!("{prefix} '{}'", drill_script().display()));
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn drill(env: &Env, vars: &[(&str, &str)]) -> Output {
    drill_with(env, "", vars)
}

/// The record the drill printed: its last stdout line, of type restore_drill.
fn printed_record(out: &Output) -> serde_json::Value {
    let mut lines = json_lines(&String::from_utf8(out.stdout.clone()).unwrap());
    let last = lines
        .pop()
        .unwrap_or_else(|| panic!("no output:\n{}", show(out)));
    assert_eq!(last["type"], "restore_drill", "{}", show(out));
    last
}

/// The record file's lines.
fn records(path: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(path) {
        Ok(text) => json_lines(&text),
        Err(_) => Vec::new(),
    }
}

/// The shared application volume (three files, one of 300 kB) plus a
/// symlink and an empty directory. Returns its files' total size.
fn drill_volume(dir: &Path, seed: u64) -> u64 {
    app_volume(dir, seed);
    std::os::unix::fs::symlink("config.xml", dir.join("current")).unwrap();
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    walk_files(dir)
        .iter()
        .map(|p| std::fs::symlink_metadata(p).unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// The id of the only snapshot of `identity`.
fn snapshot_of(env: &Env, identity: &str) -> String {
    let snaps = json_lines(&env.ok(&format!("bk-ls --identity '{identity}'")));
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    snaps[0]["id"].as_str().unwrap().to_string()
}

/// YYYY-MM-DDTHH:MM:SSZ
fn is_utc_second(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn restore_drill_passes_and_appends_a_dated_record() {
    let env = Env::new();
    let src = env.path("volume");
    let bytes = drill_volume(&src, 1);
    env.put_as(&src, APP);
    let other = env.path("other");
    drill_volume(&other, 2);
    env.put_as(&other, OTHER);
    let id = snapshot_of(&env, APP);
    let other_id = snapshot_of(&env, OTHER);
    let scratch = env.path("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let metrics = env.path("textfile");
    std::fs::create_dir(&metrics).unwrap();
    let record = env.path("drills.jsonl");
    let (r, s, m) = (
        record.to_str().unwrap(),
        scratch.to_str().unwrap(),
        metrics.to_str().unwrap(),
    );

    // 1. `latest` in a repository of two identities: which one? A failed
    // drill, recorded, exit 2.
    let out = drill(&env, &[("BK_DRILL_RECORD", r), ("BK_DRILL_DIR", s)]);
    assert_eq!(code(&out), 2, "{}", show(&out));
    let rec = printed_record(&out);
    assert_eq!(rec["result"], "failed", "{rec}");
    assert_eq!(rec["stage"], "resolve", "{rec}");
    assert_eq!(rec["exit"], 2, "{rec}");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("BK_SNAPSHOT_IDENTITY"),
        "{rec}"
    );
    assert_eq!(records(&record), vec![rec]);

    // 2. The latest snapshot of APP: restored, compared, smoke-tested in the
    // restored directory, timed, recorded.
    let out = drill(
        &env,
        &[
            ("BK_SNAPSHOT_IDENTITY", APP),
            ("BK_DRILL_RECORD", r),
            ("BK_DRILL_DIR", s),
            ("BK_DRILL_LABEL", "BT-K8-01 app-owner"),
            ("BK_METRICS_DIR", m),
            (
                "BK_DRILL_CHECK",
                "test -f config.xml && test -f \"$BK_DRILL_RESTORED/db/app.db\"",
            ),
        ],
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    let rec = printed_record(&out);
    for field in [
        "date",
        "repository",
        "identity",
        "snapshot",
        "snapshot_time",
        "label",
        "result",
        "stage",
        "exit",
        "reason",
        "files",
        "dirs",
        "bytes",
        "seconds",
        "restore_seconds",
        "compare_seconds",
        "differences",
        "host",
        "dir",
    ] {
        assert!(rec.get(field).is_some(), "no {field}: {rec}");
    }
    assert_eq!(rec["v"], 1, "{rec}");
    assert_eq!(rec["result"], "ok", "{rec}");
    assert_eq!(rec["exit"], 0, "{rec}");
    assert!(rec["stage"].is_null() && rec["reason"].is_null(), "{rec}");
    assert_eq!(rec["repository"], env.repo_url.as_str(), "{rec}");
    assert_eq!(rec["identity"], APP, "{rec}");
    assert_eq!(rec["snapshot"], id.as_str(), "{rec}");
    assert_eq!(rec["label"], "BT-K8-01 app-owner", "{rec}");
    assert_eq!(rec["files"], 3, "{rec}");
    assert_eq!(rec["bytes"], bytes, "{rec}");
    assert_eq!(rec["differences"], 0, "{rec}");
    assert!(rec["dir"].is_null(), "{rec}");
    let date = rec["date"].as_str().unwrap();
    assert!(is_utc_second(date), "{rec}");
    let snap_time = rec["snapshot_time"].as_str().unwrap();
    assert!(
        date[..19] >= snap_time[..19],
        "drilled before the backup? {rec}"
    );
    let seconds = rec["seconds"].as_f64().unwrap();
    let restore = rec["restore_seconds"].as_f64().unwrap();
    let compare = rec["compare_seconds"].as_f64().unwrap();
    assert!(
        restore >= 0.0 && compare >= 0.0 && seconds >= restore && seconds >= compare,
        "{rec}"
    );
    // The comparison ran and saw every entry.
    let summary = json_lines(&String::from_utf8(out.stdout.clone()).unwrap())
        .into_iter()
        .find(|v| v["type"] == "verify_summary")
        .unwrap_or_else(|| panic!("no verify_summary:\n{}", show(&out)));
    assert_eq!(summary["result"], "ok", "{summary}");
    assert!(
        summary["entries_compared"].as_u64().unwrap() >= 7,
        "{summary}"
    );
    // Appended, the same line as printed; the scratch directory is gone.
    let all = records(&record);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1], rec);
    assert_eq!(std::fs::read_dir(scratch.as_path()).unwrap().count(), 0);
    let prom =
        std::fs::read_to_string(metrics.join("bk-restore-drill-radarr_media__data.prom")).unwrap();
    assert!(
        prom.contains(&format!(
            "bk_restore_drill_success{{identity=\"{APP}\"}} 1\n"
        )),
        "{prom}"
    );
    assert!(
        prom.contains(&format!(
            "bk_restore_drill_bytes{{identity=\"{APP}\"}} {bytes}\n"
        )),
        "{prom}"
    );

    // 3. A given snapshot, by id prefix: the other identity's (which needs
    // no BK_SNAPSHOT_IDENTITY); with APP's identity it is not one of its
    // snapshots (exit 2, recorded).
    let out = drill(
        &env,
        &[
            ("BK_SNAPSHOT", &other_id[..12]),
            ("BK_DRILL_RECORD", r),
            ("BK_DRILL_DIR", s),
        ],
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    let rec = printed_record(&out);
    assert_eq!(rec["snapshot"], other_id.as_str(), "{rec}");
    assert_eq!(rec["identity"], OTHER, "{rec}");
    let out = drill(
        &env,
        &[
            ("BK_SNAPSHOT", &other_id[..12]),
            ("BK_SNAPSHOT_IDENTITY", APP),
            ("BK_DRILL_RECORD", r),
            ("BK_DRILL_DIR", s),
        ],
    );
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert_eq!(printed_record(&out)["stage"], "resolve");
    let all = records(&record);
    assert_eq!(all.len(), 4, "{all:?}");
    assert_eq!(
        all.iter().filter(|r| r["result"] == "ok").count(),
        2,
        "{all:?}"
    );

    // 4. A one-file snapshot (stdin, as pg_dump | bk-put) has no directory
    // entry; its drill passes all the same.
    env.ok("printf 'dump\\n' | bk-put --from - --name app.sql --identity 'postgres@db1:/app.sql'");
    let out = drill(
        &env,
        &[
            ("BK_SNAPSHOT_IDENTITY", "postgres@db1:/app.sql"),
            ("BK_DRILL_DIR", s),
        ],
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    let rec = printed_record(&out);
    assert_eq!(rec["files"], 1, "{rec}");
    assert_eq!(rec["bytes"], 5, "{rec}");
    assert_eq!(
        records(&record).len(),
        4,
        "no BK_DRILL_RECORD, nothing appended"
    );
}

#[test]
fn restore_drill_fails_on_a_difference_damaged_or_missing_data_and_a_failed_check() {
    let env = Env::new();
    let src = env.path("volume");
    drill_volume(&src, 3);
    env.put_as(&src, APP);
    let id = snapshot_of(&env, APP);
    let scratch = env.path("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let record = env.path("drills.jsonl");
    let (r, s) = (record.to_str().unwrap(), scratch.to_str().unwrap());
    let base = [
        ("BK_SNAPSHOT_IDENTITY", APP),
        ("BK_DRILL_RECORD", r),
        ("BK_DRILL_DIR", s),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v: Vec<(&str, &str)> = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let failed = |out: &Output, code_want: i32, stage: &str| -> serde_json::Value {
        assert_eq!(code(out), code_want, "{}", show(out));
        let rec = printed_record(out);
        assert_eq!(rec["result"], "failed", "{rec}");
        assert_eq!(rec["stage"], stage, "{rec}");
        assert_eq!(rec["exit"], code_want, "{rec}");
        assert_eq!(rec["snapshot"], id.as_str(), "{rec}");
        assert!(
            rec["reason"].as_str().is_some_and(|s| !s.is_empty()),
            "{rec}"
        );
        assert!(
            stderr(out).contains("restore-drill: FAILED"),
            "{}",
            show(out)
        );
        rec
    };

    // 1. A smoke test that fails: exit 13; with BK_DRILL_KEEP=failed the
    // restored tree stays for inspection, and the record says where.
    let out = drill(
        &env,
        &with(&[
            ("BK_DRILL_CHECK", "test -f config.xml && exit 7"),
            ("BK_DRILL_KEEP", "failed"),
        ]),
    );
    let rec = failed(&out, 13, "check");
    assert!(rec["reason"].as_str().unwrap().contains('7'), "{rec}");
    assert_eq!(rec["differences"], 0, "the comparison passed first: {rec}");
    let kept = PathBuf::from(rec["dir"].as_str().unwrap());
    assert!(kept.starts_with(scratch.as_path()), "{rec}");
    assert_eq!(
        std::fs::read(kept.join("db/app.db")).unwrap(),
        std::fs::read(src.join("db/app.db")).unwrap()
    );
    std::fs::remove_dir_all(kept.parent().unwrap()).unwrap();

    // 2. A restore that does not match the snapshot (a bk-get that alters a
    // file after restoring): the comparison catches it, exit 13.
    let shim = env.path("shim");
    std::fs::create_dir(&shim).unwrap();
    let fake = shim.join("bk-get");
    std::fs::write(
        &fake,
        format!(
            "#!/usr/bin/env bash\nset -e\n'{}' \"$@\"\ninto=\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --into ]; then into=$2; fi\n  shift\ndone\necho tampered >> \"$into/config.xml\"\n",
            bin_dir().join("bk-get").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = drill_with(
        &env,
        &format!("PATH='{}':\"$PATH\";", shim.display()),
        &base,
    );
    let rec = failed(&out, 13, "compare");
    assert!(rec["differences"].as_u64().unwrap() >= 1, "{rec}");
    assert!(
        rec["reason"].as_str().unwrap().contains("config.xml"),
        "{rec}"
    );
    assert!(rec["files"].as_u64().is_some(), "the restore ran: {rec}");
    assert!(rec["dir"].is_null(), "{rec}");

    // 3. A damaged pack (one byte flipped in the largest, the 300 kB
    // file's): the restore fails with bk-get's exit 13.
    let mut packs = walk_files(&env.repo.join("data"));
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let pack = packs.pop().expect("no pack");
    let mut perm = std::fs::metadata(&pack).unwrap().permissions();
    perm.set_mode(perm.mode() | 0o200);
    std::fs::set_permissions(&pack, perm).unwrap();
    let mut b = std::fs::read(&pack).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(&pack, b).unwrap();
    let out = drill(&env, &base);
    let rec = failed(&out, 13, "restore");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("bk-get failed (exit 13)"),
        "{rec}"
    );
    assert!(rec["compare_seconds"].is_null(), "no comparison ran: {rec}");

    // 4. The pack missing: the same.
    std::fs::remove_file(pack).unwrap();
    failed(&drill(&env, &base), 13, "restore");

    // 5. A wrong key: bk-ls's exit 12, recorded before any snapshot is known.
    std::fs::write(env.path("wrong-pw"), "not the passphrase\n").unwrap();
    let out = drill(&env, &with(&[("BK_PASSWORD_FILE", "wrong-pw")]));
    assert_eq!(code(&out), 12, "{}", show(&out));
    let rec = printed_record(&out);
    assert_eq!(rec["result"], "failed", "{rec}");
    assert_eq!(rec["stage"], "resolve", "{rec}");
    assert!(rec["snapshot"].is_null(), "{rec}");

    // Every failure was appended, in order; no scratch directory is left.
    let all = records(&record);
    let stages: Vec<&str> = all.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        ["check", "compare", "restore", "restore", "resolve"],
        "{all:?}"
    );
    assert!(all.iter().all(|r| r["result"] == "failed"), "{all:?}");
    assert_eq!(std::fs::read_dir(scratch.as_path()).unwrap().count(), 0);

    // 6. Usage errors: exit 2, one line on stderr, nothing recorded.
    for (var, says) in [
        (("BK_DRILL_KEEP", "sometimes"), "BK_DRILL_KEEP 'sometimes'"),
        (("BK_SNAPSHOT", "not-an-id"), "BK_SNAPSHOT 'not-an-id'"),
        (("BK_DRILL_DIR", "/nonexistent/dir"), "BK_DRILL_DIR"),
        (
            ("BK_DRILL_RECORD", "/nonexistent/dir/drills.jsonl"),
            "BK_DRILL_RECORD",
        ),
    ] {
        let mut v: Vec<(&str, &str)> = base.to_vec();
        v.push(var);
        let out = drill(&env, &v);
        assert_eq!(code(&out), 2, "{var:?}: {}", show(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("restore-drill: ") && err.contains(says),
            "{var:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.stdout.is_empty(), "{}", show(&out));
    }
    let out = env
        .sh(&format!("'{}'", drill_script().display()))
        .env_remove("BK_REPO")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(
        stderr(&out).contains("BK_REPO is not set"),
        "{}",
        show(&out)
    );
    assert_eq!(records(&record).len(), 5, "usage errors are not drills");
}

/// Shell-like words of one line: quotes kept in the word, a `#` that
/// starts a word ends the line (a comment).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for ch in line.chars() {
        match quote {
            Some(q) => {
                cur.push(ch);
                if ch == q {
                    quote = None;
                }
            }
            None if ch == '\'' || ch == '"' => {
                quote = Some(ch);
                cur.push(ch);
                started = true;
            }
            None if ch.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            None if ch == '#' && !started => break,
            None => {
                cur.push(ch);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

/// The lines of the fenced code blocks of a Markdown text, continuation
/// lines (ending in a backslash) joined.
fn code_lines(markdown: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut pending = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        out.push(std::mem::take(&mut pending));
    }
    out
}

fn subcommands(tool: &str) -> &'static [&'static str] {
    match tool {
        "bk-repo" => &[
            "init",
            "key",
            "locks",
            "unlock",
            "stats",
            "chunks",
            "benchmark",
        ],
        "bk-wal" => &["push", "fetch", "backup", "restore", "info", "expire"],
        "bk-sqlite" => &["replicate", "restore", "ls", "prune"],
        _ => &[],
    }
}

/// Whether `flag` stands in `help` as a whole word (not inside a longer flag).
fn help_names(help: &str, flag: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    help.match_indices(flag).any(|(i, _)| {
        let before = help[..i].chars().next_back();
        let after = help[i + flag.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// A bk command in a code block of the README.
#[derive(Debug)]
struct ReadmeCommand {
    /// The tool and its subcommands (`bk-repo key add`).
    cmd: Vec<String>,
    /// Its flags, long and short, without values.
    flags: Vec<String>,
    /// The line it is on.
    line: String,
}

/// Each bk command in the code blocks of a Markdown text.
fn readme_commands(readme: &str) -> Vec<ReadmeCommand> {
    let mut found = Vec::new();
    for line in code_lines(readme) {
        let w = words(&line);
        let mut i = 0;
        while i < w.len() {
            let tok = w[i].trim_start_matches("$(").trim_start_matches('(');
            let Some(&tool) = TOOLS.iter().find(|&&t| t == tok) else {
                i += 1;
                continue;
            };
            let mut cmd = vec![tool.to_string()];
            let mut flags = Vec::new();
            let mut j = i + 1;
            while j < w.len() {
                let a = w[j].as_str();
                if ["|", "||", "&&", ";", "|&"].contains(&a)
                    || a.starts_with('>')
                    || a.starts_with('<')
                    || a.starts_with("2>")
                {
                    break;
                }
                if a.starts_with("--") && a.len() > 2 {
                    flags.push(a.split('=').next().unwrap().to_string());
                } else if a.len() == 2
                    && a.starts_with('-')
                    && a.as_bytes()[1].is_ascii_alphanumeric()
                {
                    flags.push(a.to_string());
                } else if (cmd.len() == 1 && subcommands(tool).contains(&a))
                    || (cmd == ["bk-repo", "key"] && ["list", "add", "remove"].contains(&a))
                {
                    cmd.push(a.to_string());
                }
                let ends = a.ends_with(';') || a.ends_with(')');
                j += 1;
                if ends {
                    break;
                }
            }
            found.push(ReadmeCommand {
                cmd,
                flags,
                line: line.clone(),
            });
            i = j;
        }
    }
    found
}

#[test]
fn readme_commands_name_only_flags_files_and_variables_that_exist() {
    let root = repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();

    // The checker catches what it must.
    let bad = "```\nbk-verify --against /x latest --identity a@b:/c\nfoo | bk-wal --stanza m restore --into /x \\\n  --target-tme 1\nbk-repo key add --generate-idnetity k   # --no-such-flag in a comment\n```\n";
    let cmds = readme_commands(bad);
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert_eq!(cmds[0].flags, ["--against", "--identity"]);
    assert_eq!(cmds[1].cmd, ["bk-wal", "restore"]);
    assert_eq!(cmds[1].flags, ["--stanza", "--into", "--target-tme"]);
    assert_eq!(cmds[2].cmd, ["bk-repo", "key", "add"]);
    assert_eq!(cmds[2].flags, ["--generate-idnetity"]);
    assert!(help_names("  -o, --output <OUT>", "-o"));
    assert!(!help_names("      --output-file <F>", "--output"));
    assert!(!help_names("      --new-name <N>", "--name"));

    // Every flag of every bk command in the README is in its --help.
    let mut helps: HashMap<Vec<String>, String> = HashMap::new();
    let mut problems = Vec::new();
    let commands = readme_commands(&readme);
    assert!(
        commands.len() > 40,
        "only {} commands found",
        commands.len()
    );
    for ReadmeCommand { cmd, flags, line } in &commands {
        let help = helps.entry(cmd.clone()).or_insert_with(|| {
            let out = std::process::Command::new(bin_dir().join(&cmd[0]))
                .args(&cmd[1..])
                .arg("--help")
                .output()
                .unwrap();
            assert!(out.status.success(), "{cmd:?} --help: {}", show(&out));
            String::from_utf8(out.stdout).unwrap()
        });
        for f in flags {
            if !help_names(help, f) {
                problems.push(format!(
                    "{}: {f} is not in its --help: {line}",
                    cmd.join(" ")
                ));
            }
        }
    }

    // Every file it names exists.
    let bytes = readme.as_bytes();
    for top in ["docs/", "scripts/", "man/"] {
        for (i, _) in readme.match_indices(top) {
            if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || b"_/-.".contains(&bytes[i - 1])) {
                continue;
            }
            let rest = &readme[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._/-".contains(c)))
                .unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches(['.', '/', '-']);
            if !root.join(path).exists() {
                problems.push(format!("README names {path}, which does not exist"));
            }
        }
    }

    // Every BK_* variable it gives a script is one the script reads.
    for line in code_lines(&readme) {
        let w = words(&line);
        for (k, tok) in w.iter().enumerate() {
            let Some(at) = tok.find("scripts/") else {
                continue;
            };
            let script = root.join(&tok[at..]);
            let Ok(text) = std::fs::read_to_string(script) else {
                continue; // reported above
            };
            for v in &w[..k] {
                let Some((name, _)) = v.split_once('=') else {
                    continue;
                };
                if name.starts_with("BK_")
                    && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                    && !text.contains(name)
                {
                    problems.push(format!("{tok} does not read {name}: {line}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
