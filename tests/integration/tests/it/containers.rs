//! The container entrypoints (scripts/container/) run as a CronJob, Job or
//! sidecar would run them, configured by environment variables, against a
//! local or (BK_TEST_BACKEND=s3) S3 repository; and the Kubernetes
//! manifests in docs/examples/, parsed and checked with python3 + PyYAML.

use crate::common::{
    app_volume, code, json_lines, show, stderr, stdout, walk_files, workspace_root, write_file,
    Env, APP, OTHER,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

fn scripts() -> PathBuf {
    workspace_root().join("scripts/container")
}

/// `script` with the entrypoints on PATH ahead of the tools, and `vars`
/// (NAME=VALUE, shell-quoted here) in its environment.
fn entry(env: &Env, vars: &[(&str, &str)], script: &str) -> Output {
    let mut c = env.sh(&format!(
        "PATH='{}':\"$PATH\"; {script}",
        scripts().display()
    ));
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// The last JSON line of the output whose `type` is `kind`.
fn last_of(out: &Output, kind: &str) -> serde_json::Value {
    json_lines(&stdout(out))
        .into_iter()
        .rev()
        .find(|v| v["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} line:\n{}", show(out)))
}

/// Relative path → (mode, bytes) of every file below `dir`, `skip` left out.
fn tree(dir: &Path, skip: &[&str]) -> BTreeMap<String, (u32, Vec<u8>)> {
    walk_files(dir)
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().to_string();
            if skip.contains(&rel.as_str()) {
                return None;
            }
            let mode = std::fs::symlink_metadata(&p).unwrap().permissions().mode() & 0o7777;
            Some((rel, (mode, std::fs::read(&p).unwrap())))
        })
        .collect()
}

fn snapshots_of(env: &Env, identity: &str) -> Vec<serde_json::Value> {
    json_lines(&env.ok(&format!("bk-ls --identity '{identity}'")))
}

/// Parses a Prometheus text file: (name, labels) → value; panics on a line
/// that is neither a comment nor `name{labels} value`.
fn prom(path: &Path) -> BTreeMap<(String, String), f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut m = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("{}: bad line {line}", path.display()));
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                assert!(rest.ends_with('}'), "{}: bad line {line}", path.display());
                (n, rest.trim_end_matches('}'))
            }
            None => (series, ""),
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{}: bad metric name in {line}",
            path.display()
        );
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{}: bad value in {line}", path.display()));
        m.insert((name.to_string(), labels.to_string()), v);
    }
    assert!(!m.is_empty(), "{}: no samples", path.display());
    m
}

fn metric(m: &BTreeMap<(String, String), f64>, name: &str, label_part: &str) -> f64 {
    let hits: Vec<f64> = m
        .iter()
        .filter(|((n, l), _)| n == name && l.contains(label_part))
        .map(|(_, v)| *v)
        .collect();
    assert_eq!(hits.len(), 1, "{name}{{…{label_part}…}} in {m:?}");
    hits[0]
}

#[test]
fn mover_backs_up_applies_retention_verifies_and_writes_metrics() {
    let env = Env::new();
    let src = env.path("volume");
    app_volume(&src, 1);
    // Another app's snapshot in the same repository: retention must not touch it.
    let other = env.path("other");
    app_volume(&other, 2);
    env.put_as(&other, OTHER);
    let metrics = env.path("textfile");
    std::fs::create_dir(&metrics).unwrap();
    let m = metrics.to_str().unwrap();
    let vars = [
        ("BK_MOVER_SOURCE", src.to_str().unwrap()),
        ("BK_SNAPSHOT_IDENTITY", APP),
        ("BK_KEEP_LAST", "1"),
        ("BK_PRUNE_GRACE", "0"),
        ("BK_VERIFY_SLICES", "1"),
        ("BK_METRICS_DIR", m),
        ("BK_MOVER_TAGS", "app=radarr kind=hourly"),
    ];

    let first = entry(&env, &vars, "bk-mover");
    assert_eq!(code(&first), 0, "{}", show(&first));
    let s1 = last_of(&first, "mover");
    assert_eq!(s1["exit"], 0, "{s1}");
    assert_eq!(s1["backup_exit"], 0, "{s1}");
    assert_eq!(s1["prune_exit"], 0, "{s1}");
    assert_eq!(s1["verify_exit"], 0, "{s1}");
    assert_eq!(s1["verify_subset"], "1/1", "{s1}");
    let first_id = s1["snapshot"].as_str().unwrap().to_string();
    // The verify step really read the data (one slice of one = every pack).
    let v1 = last_of(&first, "verify_summary");
    assert_eq!(v1["result"], "ok", "{v1}");
    assert!(v1["packs_read"].as_u64().unwrap() > 0, "{v1}");

    // The second run: changed data, and retention (keep-last 1) forgets the first.
    write_file(&src.join("config.xml"), b"<config seed=changed/>\n");
    write_file(&src.join("new-file"), b"added between runs\n");
    let second = entry(&env, &vars, "bk-mover");
    assert_eq!(code(&second), 0, "{}", show(&second));
    let s2 = last_of(&second, "mover");
    let second_id = s2["snapshot"].as_str().unwrap().to_string();
    assert_ne!(first_id, second_id);
    let decisions: Vec<_> = json_lines(&stdout(&second))
        .into_iter()
        .filter(|v| v["type"] == "decision")
        .collect();
    assert!(
        decisions
            .iter()
            .any(|d| d["id"] == first_id.as_str() && d["keep"] == false),
        "the first snapshot was not forgotten: {decisions:?}"
    );
    let mine = snapshots_of(&env, APP);
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["id"], second_id.as_str());
    assert_eq!(mine[0]["tags"]["app"], "radarr", "{mine:?}");
    assert_eq!(mine[0]["tags"]["kind"], "hourly", "{mine:?}");
    assert_eq!(
        snapshots_of(&env, OTHER).len(),
        1,
        "the other app's snapshot"
    );
    // The snapshot is the volume.
    let out = env.path("check");
    env.ok(&format!("bk-get {second_id} --into '{}'", out.display()));
    assert_eq!(tree(&out, &[]), tree(&src, &[]));

    // Metrics: both files parse; they say what happened.
    let mover = prom(&metrics.join("bk-mover-radarr_media__data.prom"));
    assert_eq!(metric(&mover, "bk_mover_success", APP), 1.0);
    for step in ["backup", "prune", "verify"] {
        let v = metric(&mover, "bk_mover_exit_code", &format!("step=\"{step}\""));
        assert_eq!(v, 0.0, "{step}");
    }
    assert_eq!(metric(&mover, "bk_mover_verify_slice", "of=\"1\""), 1.0);
    assert_eq!(metric(&mover, "bk_mover_snapshot_files", APP), 4.0);
    let verify = prom(&metrics.join("bk-verify.prom"));
    assert_eq!(metric(&verify, "bk_verify_success", ""), 1.0);
    assert!(metric(&verify, "bk_verify_packs_read", "") > 0.0);
    assert_eq!(
        metric(&verify, "bk_snapshot_count", &format!("identity=\"{APP}\"")),
        1.0
    );
    // No temporary metrics file left behind.
    let names: Vec<_> = std::fs::read_dir(&metrics)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn mover_refuses_bad_settings_and_an_empty_source_and_writes_nothing() {
    let env = Env::new();
    let src = env.path("volume");
    app_volume(&src, 3);
    let s = src.to_str().unwrap();
    for (vars, says) in [
        (
            vec![("BK_SNAPSHOT_IDENTITY", APP)],
            "BK_MOVER_SOURCE is not set",
        ),
        (
            vec![("BK_MOVER_SOURCE", s)],
            "BK_SNAPSHOT_IDENTITY is not set",
        ),
        (
            vec![("BK_MOVER_SOURCE", s), ("BK_SNAPSHOT_IDENTITY", "radarr")],
            "is not USER@HOST:/PATH",
        ),
        (
            vec![
                ("BK_MOVER_SOURCE", s),
                ("BK_SNAPSHOT_IDENTITY", APP),
                ("BK_KEEP_DAILY", "seven"),
            ],
            "BK_KEEP_DAILY 'seven' is not a number",
        ),
        (
            vec![
                ("BK_MOVER_SOURCE", s),
                ("BK_SNAPSHOT_IDENTITY", APP),
                ("BK_VERIFY_SLICE", "25"),
            ],
            "BK_VERIFY_SLICE '25' is not between 1 and 24",
        ),
        (
            vec![
                ("BK_MOVER_SOURCE", "/nonexistent/x"),
                ("BK_SNAPSHOT_IDENTITY", APP),
            ],
            "is not a directory",
        ),
    ] {
        let out = entry(&env, &vars, "bk-mover");
        assert_eq!(code(&out), 2, "{vars:?}: {}", show(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("bk-mover: ") && err.contains(says),
            "{vars:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // An empty volume (only an empty lost+found) is refused: an unmounted
    // volume looks like that, and its snapshot would displace good ones.
    let empty = env.path("empty");
    std::fs::create_dir_all(empty.join("lost+found")).unwrap();
    let vars = [
        ("BK_MOVER_SOURCE", empty.to_str().unwrap()),
        ("BK_SNAPSHOT_IDENTITY", APP),
    ];
    let out = entry(&env, &vars, "bk-mover");
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(stderr(&out).contains("is empty"), "{}", show(&out));
    assert!(env.snapshots().is_empty(), "nothing was committed");
    // ... unless allowed.
    let vars = [
        ("BK_MOVER_SOURCE", empty.to_str().unwrap()),
        ("BK_SNAPSHOT_IDENTITY", APP),
        ("BK_MOVER_ALLOW_EMPTY", "1"),
        ("BK_VERIFY_SLICES", "0"),
    ];
    let out = entry(&env, &vars, "bk-mover");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let s = last_of(&out, "mover");
    assert_eq!(
        s["verify_exit"], -1,
        "no verify with BK_VERIFY_SLICES=0: {s}"
    );
    assert_eq!(s["prune_exit"], -1, "no prune without BK_KEEP_*: {s}");
    assert_eq!(env.snapshots().len(), 1);
}

const MARKER: &str = ".bk-restore-once";

#[test]
fn restore_once_restores_once_refuses_foreign_data_and_can_be_forced() {
    let env = Env::new();
    let src = env.path("volume");
    app_volume(&src, 4);
    env.put_as(&src, APP);
    // The other identity's snapshot is newer: `latest` must still pick APP's.
    let other = env.path("other");
    app_volume(&other, 5);
    env.put_as(&other, OTHER);
    let expected = tree(&src, &[]);

    // 1. An empty volume (a fresh ext4 one has an empty lost+found).
    let target = env.path("pvc");
    std::fs::create_dir_all(target.join("lost+found")).unwrap();
    let t = target.to_str().unwrap();
    let vars = [("BK_RESTORE_TARGET", t), ("BK_SNAPSHOT_IDENTITY", APP)];
    let out = entry(&env, &vars, "bk-restore-once");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r = last_of(&out, "restore_once");
    assert_eq!(r["result"], "restored", "{r}");
    let id = r["snapshot"].as_str().unwrap().to_string();
    assert_eq!(snapshots_of(&env, APP)[0]["id"], id.as_str());
    assert_eq!(tree(&target, &[MARKER]), expected);
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join(MARKER)).unwrap()).unwrap();
    assert_eq!(marker["snapshot"], id.as_str());
    assert!(!target.join(format!("{MARKER}.incomplete")).exists());

    // 2. Again: a success that does nothing (the app may have changed files since).
    write_file(&target.join("config.xml"), b"changed by the app\n");
    let before = tree(&target, &[]);
    let out = entry(&env, &vars, "bk-restore-once");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let r = last_of(&out, "restore_once");
    assert_eq!(r["result"], "skipped", "{r}");
    assert_eq!(r["reason"], "already-restored", "{r}");
    assert_eq!(tree(&target, &[]), before, "the second run changed nothing");
    assert!(
        !stdout(&out).contains("\"type\":\"restore\","),
        "bk-get ran"
    );

    // 3. A volume holding other data: refused, exit 2, nothing changed.
    let foreign = env.path("foreign");
    write_file(&foreign.join("precious.txt"), b"not from any backup\n");
    let f = foreign.to_str().unwrap();
    let fvars = [("BK_RESTORE_TARGET", f), ("BK_SNAPSHOT_IDENTITY", APP)];
    let before = tree(&foreign, &[]);
    let out = entry(&env, &fvars, "bk-restore-once");
    assert_eq!(code(&out), 2, "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.starts_with("bk-restore-once: ") && err.contains("BK_RESTORE_FORCE=1"),
        "{err}"
    );
    assert_eq!(tree(&foreign, &[]), before);
    assert!(!foreign.join(MARKER).exists());

    // 3b. ... or left alone with success (Litestream's -if-db-not-exists).
    let mut skip = fvars.to_vec();
    skip.push(("BK_RESTORE_IF_NOT_EMPTY", "skip"));
    let out = entry(&env, &skip, "bk-restore-once");
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(last_of(&out, "restore_once")["reason"], "not-empty");
    assert_eq!(tree(&foreign, &[]), before);

    // 4. Forced: the contents are replaced by the snapshot's.
    let mut forced = fvars.to_vec();
    forced.push(("BK_RESTORE_FORCE", "1"));
    let out = entry(&env, &forced, "bk-restore-once");
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(last_of(&out, "restore_once")["result"], "restored");
    assert_eq!(tree(&foreign, &[MARKER]), expected);

    // 5. A restore that was killed midway is redone from scratch.
    let killed = env.path("killed");
    write_file(&killed.join(format!("{MARKER}.incomplete")), b"{}\n");
    write_file(&killed.join("db/half-written"), b"partial");
    let k = killed.to_str().unwrap();
    let out = entry(
        &env,
        &[("BK_RESTORE_TARGET", k), ("BK_SNAPSHOT_IDENTITY", APP)],
        "bk-restore-once",
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(tree(&killed, &[MARKER]), expected);

    // 6. A chosen snapshot by id prefix; and one of another identity is refused.
    let other_id = snapshots_of(&env, OTHER)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let chosen = env.path("chosen");
    let c = chosen.to_str().unwrap();
    let out = entry(
        &env,
        &[
            ("BK_RESTORE_TARGET", c),
            ("BK_SNAPSHOT", &other_id[..12]),
            ("BK_SNAPSHOT_IDENTITY", APP),
        ],
        "bk-restore-once",
    );
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(!chosen.exists() || tree(&chosen, &[]).is_empty());
    let out = entry(
        &env,
        &[("BK_RESTORE_TARGET", c), ("BK_SNAPSHOT", &other_id[..12])],
        "bk-restore-once",
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(tree(&chosen, &[MARKER]), tree(&other, &[]));

    // 7. `latest` needs an identity; an identity with no snapshot is exit 2,
    // or a success that restores nothing when asked to be.
    let none = env.path("none");
    let n = none.to_str().unwrap();
    let out = entry(&env, &[("BK_RESTORE_TARGET", n)], "bk-restore-once");
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(stderr(&out).contains("BK_SNAPSHOT_IDENTITY is not set"));
    let vars = [
        ("BK_RESTORE_TARGET", n),
        ("BK_SNAPSHOT_IDENTITY", "sonarr@media:/data"),
    ];
    let out = entry(&env, &vars, "bk-restore-once");
    assert_eq!(code(&out), 2, "{}", show(&out));
    let mut if_exists = vars.to_vec();
    if_exists.push(("BK_RESTORE_IF_SNAPSHOT_EXISTS", "1"));
    let out = entry(&env, &if_exists, "bk-restore-once");
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(last_of(&out, "restore_once")["reason"], "no-snapshot");
    assert!(!none.join(MARKER).exists());

    // 8. A wrong key: bk-ls's exit 12, passed on.
    let wrong = env.path("wrong-pw");
    std::fs::write(&wrong, "not the passphrase\n").unwrap();
    let out = entry(
        &env,
        &[
            ("BK_RESTORE_TARGET", n),
            ("BK_SNAPSHOT_IDENTITY", APP),
            ("BK_PASSWORD_FILE", wrong.to_str().unwrap()),
        ],
        "bk-restore-once",
    );
    assert_eq!(code(&out), 12, "{}", show(&out));
}

#[test]
fn sqlite_sidecar_replicates_until_sigterm_and_restores_once() {
    let env = Env::new();
    let data = env.path("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("app.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);",
    )
    .unwrap();
    let dbs = db.to_str().unwrap();

    // Without a holder the sidecar refuses to start (exit 2).
    let out = entry(
        &env,
        &[("BK_SQLITE_DBS", dbs)],
        "bk-sqlite-sidecar replicate",
    );
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(
        stderr(&out).contains("BK_SQLITE_HOLDER is not set"),
        "{}",
        show(&out)
    );

    // `exec`: the signalled pid is bk-sqlite's own.
    let events = env.path("events.jsonl");
    let mut c = env.sh(&format!(
        "PATH='{}':\"$PATH\"; exec bk-sqlite-sidecar",
        scripts().display()
    ));
    c.env("BK_SQLITE_DBS", dbs)
        .env("BK_SQLITE_HOLDER", "app")
        .env("BK_SQLITE_SYNC_INTERVAL", "200ms")
        .stdout(std::fs::File::create(&events).unwrap())
        .stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let wait_for = |event: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&events).unwrap_or_default();
            // (a line may be half-written yet)
            let mut seen = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok());
            if seen.any(|e| e["event"] == event) {
                return;
            }
            assert!(Instant::now() < deadline, "no {event} event: {text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("start");
    for i in 0..50 {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
    wait_for("sync");
    for i in 50..60 {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [format!("row {i}")])
            .unwrap();
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        code(&out),
        0,
        "SIGTERM ends the sidecar with 0: {}",
        show(&out)
    );
    let want: Vec<String> = conn
        .prepare("SELECT v FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(want.len(), 60);

    // The init container on a new, empty volume: the latest state.
    let fresh = env.path("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let restored = fresh.join("app.db");
    let vars = [("BK_SQLITE_DBS", restored.to_str().unwrap())];
    let out = entry(&env, &vars, "bk-sqlite-sidecar restore");
    assert_eq!(code(&out), 0, "{}", show(&out));
    let got: Vec<String> = rusqlite::Connection::open(&restored)
        .unwrap()
        .prepare("SELECT v FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(got, want, "the restored database is the one written");
    // Again: the database exists, nothing is done.
    let before = std::fs::read(&restored).unwrap();
    let out = entry(&env, &vars, "bk-sqlite-sidecar restore");
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert_eq!(std::fs::read(&restored).unwrap(), before);
    // A database with no replica yet (a first deployment): success, nothing written.
    let other = fresh.join("other.db");
    let out = entry(
        &env,
        &[("BK_SQLITE_DBS", other.to_str().unwrap())],
        "bk-sqlite-sidecar restore",
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(!other.exists());
    // Usage errors.
    for (vars, arg) in [
        (vec![], "restore"),
        (vec![("BK_SQLITE_DBS", "/nonexistent/dir/x.db")], "restore"),
        (vec![("BK_SQLITE_DBS", dbs)], "frobnicate"),
    ] {
        let out = entry(&env, &vars, &format!("bk-sqlite-sidecar {arg}"));
        assert_eq!(code(&out), 2, "{vars:?} {arg}: {}", show(&out));
        assert!(
            stderr(&out).starts_with("bk-sqlite-sidecar: "),
            "{}",
            show(&out)
        );
    }
}

#[test]
fn pg_sidecar_validates_installs_configures_and_restores_only_into_an_empty_directory() {
    let env = Env::new();
    let stanza = [("BK_WAL_STANZA", "main")];
    // Usage errors: no command, an unknown one, no stanza, two targets.
    for (vars, arg, says) in [
        (vec![], "", "usage:"),
        (stanza.to_vec(), "frob", "unknown command 'frob'"),
        (vec![], "config", "BK_WAL_STANZA is not set"),
        (
            vec![("BK_WAL_STANZA", "a b")],
            "config",
            "is not a plain name",
        ),
        (
            vec![
                ("BK_WAL_STANZA", "main"),
                ("PGDATA", "/nonexistent/pgdata"),
                ("BK_PG_TARGET_TIME", "2026-12-03T10:00:00Z"),
                ("BK_PG_TARGET_LSN", "0/3000060"),
            ],
            "restore",
            "at most one",
        ),
        (
            vec![("BK_WAL_STANZA", "main")],
            "restore",
            "PGDATA) is not set",
        ),
        (
            vec![("BK_WAL_STANZA", "main"), ("BK_PG_KEEP_BASE_BACKUPS", "0")],
            "backup",
            "BK_PG_KEEP_BASE_BACKUPS '0'",
        ),
    ] {
        let out = entry(&env, &vars, &format!("bk-pg-sidecar {arg}"));
        assert_eq!(code(&out), 2, "{vars:?} {arg}: {}", show(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("bk-pg-sidecar: ") && err.contains(says),
            "{err}"
        );
    }

    // config: the archive_command PostgreSQL runs, quoted for postgresql.conf.
    let out = entry(
        &env,
        &[
            ("BK_WAL_STANZA", "main"),
            ("BK_PG_BK_WAL", "/bk/bin/bk-wal"),
        ],
        "bk-pg-sidecar config",
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    let conf = stdout(&out);
    assert!(
        conf.contains("archive_command = '/bk/bin/bk-wal push --stanza main %p'"),
        "{conf}"
    );
    assert!(conf.contains("archive_mode = on"), "{conf}");

    // install: a runnable copy of bk-wal.
    let bin = env.path("bk-bin");
    let out = entry(
        &env,
        &[],
        &format!("bk-pg-sidecar install '{}'", bin.display()),
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    let copy = bin.join("bk-wal");
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(crate::common::bin_dir().join("bk-wal")).unwrap()
    );
    let v = env.ok(&format!("'{}' --version", copy.display()));
    assert!(v.starts_with("bk-wal "), "{v}");

    // restore: a directory holding a cluster is left alone (exit 0); other
    // contents are refused (exit 2); neither is touched.
    let cluster = env.path("pgdata");
    write_file(&cluster.join("PG_VERSION"), b"16\n");
    write_file(&cluster.join("base/1/1259"), b"pages");
    let before = tree(&cluster, &[]);
    let out = entry(
        &env,
        &[
            ("BK_WAL_STANZA", "main"),
            ("PGDATA", cluster.to_str().unwrap()),
        ],
        "bk-pg-sidecar restore",
    );
    assert_eq!(code(&out), 0, "{}", show(&out));
    assert!(
        stderr(&out).contains("holds a cluster already"),
        "{}",
        show(&out)
    );
    assert_eq!(tree(&cluster, &[]), before);
    let junk = env.path("junk");
    write_file(&junk.join("notes.txt"), b"mine");
    let out = entry(
        &env,
        &[
            ("BK_WAL_STANZA", "main"),
            ("BK_PG_RESTORE_INTO", junk.to_str().unwrap()),
        ],
        "bk-pg-sidecar restore",
    );
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(stderr(&out).contains("refused"), "{}", show(&out));
    assert_eq!(std::fs::read(junk.join("notes.txt")).unwrap(), b"mine");
    // An empty directory goes to bk-wal restore, whose status is passed on:
    // this repository has no stanza `main` (bk-wal: exit 2).
    let empty = env.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = entry(
        &env,
        &[
            ("BK_WAL_STANZA", "main"),
            ("PGDATA", empty.to_str().unwrap()),
        ],
        "bk-pg-sidecar restore",
    );
    assert_eq!(code(&out), 2, "{}", show(&out));
    assert!(stderr(&out).contains("bk-wal"), "{}", show(&out));
}

/// The checker the manifests must pass: every document parses, has
/// apiVersion, kind and metadata.name; CronJobs have a schedule and a
/// jobTemplate; every container (and init container) has an image, and a
/// command when it runs the bk image (an application's image brings its
/// own); every Secret a pod uses (envFrom secretRef, env secretKeyRef,
/// secret volume) is defined in the same file or named in its header
/// comment. Prints one line per problem and exits 1 if there is any.
const CHECK_MANIFESTS: &str = r#"
import re, sys, yaml

def header(text):
    lines = []
    for line in text.splitlines():
        if line.startswith('#'):
            lines.append(line)
        elif line.strip() == '':
            if lines: continue
        else:
            break
    return '\n'.join(lines)

def pod_specs(doc):
    kind = doc.get('kind')
    spec = doc.get('spec') or {}
    if kind == 'CronJob':
        yield ((spec.get('jobTemplate') or {}).get('spec') or {}).get('template', {}).get('spec') or {}
    elif kind in ('Job', 'Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet'):
        yield (spec.get('template') or {}).get('spec') or {}
    elif kind == 'Pod':
        yield spec

def used_secrets(pod):
    for c in (pod.get('containers') or []) + (pod.get('initContainers') or []):
        for ef in c.get('envFrom') or []:
            if 'secretRef' in ef: yield ef['secretRef'].get('name')
        for e in c.get('env') or []:
            ref = (e.get('valueFrom') or {}).get('secretKeyRef')
            if ref is not None: yield ref.get('name')
    for v in pod.get('volumes') or []:
        if 'secret' in v: yield v['secret'].get('secretName')
        for src in (v.get('projected') or {}).get('sources') or []:
            if 'secret' in src: yield src['secret'].get('name')

problems = []
files = sys.argv[1:]
for path in files:
    text = open(path).read()
    head = header(text)
    if not head:
        problems.append(f'{path}: no header comment on how to use it')
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        problems.append(f'{path}: does not parse: {e}')
        continue
    if not docs:
        problems.append(f'{path}: no documents')
    defined = {d.get('metadata', {}).get('name') for d in docs
               if isinstance(d, dict) and d.get('kind') == 'Secret'}
    for i, d in enumerate(docs):
        where = f'{path}: document {i + 1}'
        if not isinstance(d, dict):
            problems.append(f'{where}: not a mapping'); continue
        for field in ('apiVersion', 'kind'):
            if not d.get(field): problems.append(f'{where}: no {field}')
        name = (d.get('metadata') or {}).get('name')
        if not name: problems.append(f'{where}: no metadata.name')
        where = f'{path}: {d.get("kind")} {name}'
        if d.get('kind') == 'CronJob':
            spec = d.get('spec') or {}
            if not spec.get('schedule'): problems.append(f'{where}: no schedule')
            if not spec.get('jobTemplate'): problems.append(f'{where}: no jobTemplate')
        for pod in pod_specs(d):
            containers = pod.get('containers') or []
            if not containers: problems.append(f'{where}: no containers')
            for c in containers + (pod.get('initContainers') or []):
                if not c.get('image'): problems.append(f'{where}: container {c.get("name")} has no image')
                # the bk image has no useful default command; an application's image has its own
                if re.search(r'(^|/)bk[:@]', c.get('image') or '') and not c.get('command'):
                    problems.append(f'{where}: container {c.get("name")} runs the bk image without a command')
            for s in used_secrets(pod):
                if not s:
                    problems.append(f'{where}: a secret reference without a name')
                elif s not in defined and s not in head:
                    problems.append(f'{where}: uses Secret {s}, neither defined in the file nor named in its header')
for p in problems: print(p)
print(f'checked {len(files)} files', file=sys.stderr)
sys.exit(1 if problems else 0)
"#;

fn check_manifests(files: &[PathBuf]) -> Output {
    let mut c = std::process::Command::new("python3");
    c.arg("-c").arg(CHECK_MANIFESTS).args(files);
    c.output().expect("python3 (with PyYAML) is needed")
}

#[test]
fn manifests_parse_and_name_what_they_use() {
    let dir = workspace_root().join("docs/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    // One per seed scenario (001, 002, 003 = the SQLite sidecar, 004).
    for want in [
        "seed-001-hourly-mover.yaml",
        "seed-002-shared-repository.yaml",
        "bk-sqlite-sidecar.yaml",
        "seed-004-postgres-pitr.yaml",
    ] {
        assert!(files.iter().any(|f| f.ends_with(want)), "{want} missing");
    }
    let out = check_manifests(&files);
    assert_eq!(code(&out), 0, "{}", show(&out));

    // The entrypoints the manifests run exist and are executable, and the
    // Containerfile installs each of them.
    let containerfile = std::fs::read_to_string(workspace_root().join("Containerfile")).unwrap();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for script in [
            "bk-mover",
            "bk-restore-once",
            "bk-sqlite-sidecar",
            "bk-pg-sidecar",
        ] {
            if text.contains(&format!("[\"{script}\"")) {
                let p = scripts().join(script);
                let mode = std::fs::metadata(&p).unwrap().permissions().mode();
                assert!(mode & 0o111 != 0, "{} is not executable", p.display());
                assert!(
                    containerfile.contains(&format!("scripts/container/{script}")),
                    "Containerfile does not install {script}"
                );
            }
        }
    }

    // The checker itself fails on what it must catch.
    let scratch = tempfile::tempdir().unwrap();
    let cases = [
        (
            "# a header\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{name: c, image: i, command: [a]}]\n",
            "no schedule",
        ),
        (
            "# a header\napiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n        - {name: c, image: i, command: [a], envFrom: [{secretRef: {name: undefined-secret}}]}\n",
            "uses Secret undefined-secret",
        ),
        (
            "# a header\napiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: c, command: [a]}]\n",
            "has no image",
        ),
        (
            "# a header\napiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: registry.example.org/bk:0.1.0}]\n",
            "runs the bk image without a command",
        ),
        ("# a header\nkind: Secret\nmetadata: {name: x}\n", "no apiVersion"),
        ("# a header\napiVersion: v1\nkind: Secret\nmetadata: [unclosed\n", "does not parse"),
        ("apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n", "no header comment"),
    ];
    for (i, (text, says)) in cases.iter().enumerate() {
        let p = scratch.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        let out = check_manifests(&[p]);
        assert_eq!(code(&out), 1, "case {i} passed: {}", show(&out));
        assert!(stdout(&out).contains(says), "case {i}: {}", show(&out));
    }
    // A Secret named in the header comment is accepted.
    let p = scratch.path().join("documented.yaml");
    std::fs::write(
        &p,
        "# kubectl create secret generic documented-secret ...\napiVersion: batch/v1\nkind: Job\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers:\n        - {name: c, image: i, command: [a], envFrom: [{secretRef: {name: documented-secret}}]}\n",
    )
    .unwrap();
    let out = check_manifests(&[p]);
    assert_eq!(code(&out), 0, "{}", show(&out));
}
