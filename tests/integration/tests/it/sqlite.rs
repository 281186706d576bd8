//! bk-sqlite against real SQLite writers: replication, point-in-time
//! restore, lineages, retention, and the contracts with their exit codes.
//!
//! The writers are rusqlite connections in this process (SQLite 3.5x,
//! bundled), the replicator the real binary, stopped with SIGTERM or
//! killed with SIGKILL.

use crate::common::{json_lines, last_progress, Env};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// A state the writer committed: when, how many rows, and a hash of them.
#[derive(Debug, Clone)]
struct Logged {
    after: SystemTime,
    rows: i64,
    hash: String,
}

/// Hash of every row, in order: equal hashes, equal contents.
fn content(conn: &Connection) -> (i64, String) {
    let mut stmt = conn.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut n = 0;
    let mut text = String::new();
    while let Some(r) = rows.next().unwrap() {
        let id: i64 = r.get(0).unwrap();
        let v: String = r.get(1).unwrap();
        text.push_str(&format!("{id}:{v}\n"));
        n += 1;
    }
    let digest = bk::id::ObjectId::digest(text.as_bytes()).to_hex();
    (n, digest)
}

fn content_of(path: &Path) -> (i64, String) {
    content(&Connection::open(path).unwrap())
}

fn integrity_ok(path: &Path) -> bool {
    let conn = Connection::open(path).unwrap();
    let v: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    v == "ok"
}

/// A database in WAL mode with table `t`.
fn create_db(path: &Path, page_size: u32) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&format!(
        "PRAGMA page_size={page_size}; PRAGMA journal_mode=WAL;
         CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL);"
    ))
    .unwrap();
}

/// A writer committing inserts, updates and deletes at a steady rate,
/// checkpointing now and then as applications do, logging every state.
struct Writer {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Logged>>>,
    /// The longest the application's own TRUNCATE checkpoint took.
    longest_truncate: Arc<Mutex<Duration>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(path: &Path, every: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let longest_truncate = Arc::new(Mutex::new(Duration::ZERO));
        let (s, l, p) = (stop.clone(), log.clone(), path.to_path_buf());
        let lt = longest_truncate.clone();
        let thread = std::thread::spawn(move || {
            let conn = Connection::open(&p).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut i: u64 = 0;
            while !s.load(Ordering::Relaxed) {
                i += 1;
                let pad = "x".repeat((i % 7 * 300) as usize);
                let sql = match i % 10 {
                    3 => "UPDATE t SET v = v || '+' WHERE id % 5 = 0".to_string(),
                    7 => "DELETE FROM t WHERE id IN (SELECT id FROM t ORDER BY id LIMIT 2)".into(),
                    _ => format!("INSERT INTO t (v) VALUES ('row {i} {pad}')"),
                };
                conn.execute_batch(&format!("BEGIN; {sql}; COMMIT;"))
                    .unwrap();
                let (rows, hash) = content(&conn);
                l.lock().unwrap().push(Logged {
                    after: SystemTime::now(),
                    rows,
                    hash,
                });
                match i % 40 {
                    13 => {
                        let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)");
                    }
                    29 => {
                        let started = Instant::now();
                        let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
                        let took = started.elapsed();
                        let mut longest = lt.lock().unwrap();
                        *longest = (*longest).max(took);
                    }
                    _ => {}
                }
                std::thread::sleep(every);
            }
        });
        Writer {
            stop,
            log,
            longest_truncate,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Logged> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.log.lock().unwrap().clone()
    }
}

/// The replicator, as a sidecar runs it.
fn replicator(env: &Env, db: &Path, extra: &str) -> Child {
    replicator_with_fault(env, db, extra, None)
}

/// [`replicator`] that stops itself at a crash point (`BK_TEST_FAULT`).
fn replicator_with_fault(env: &Env, db: &Path, extra: &str, fault: Option<&str>) -> Child {
    let mut c = env.tool("bk-sqlite");
    if let Some(f) = fault {
        c.env("BK_TEST_FAULT", f);
    }
    c.arg("replicate")
        .arg(db)
        .args(extra.split_whitespace())
        .stdout(std::fs::File::create(env.path(&format!("events-{}.jsonl", now_nanos()))).unwrap())
        .stderr(Stdio::piped());
    c.spawn().unwrap()
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// SIGTERM, and the exit status.
fn terminate(child: Child) -> (i32, String) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn events(env: &Env) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events-")
        })
        .collect();
    files.sort();
    for f in files {
        all.extend(json_lines(&std::fs::read_to_string(f).unwrap()));
    }
    all
}

fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    bk::wire::Timestamp {
        secs: d.as_secs() as i64,
        nanos: d.subsec_nanos(),
    }
    .to_rfc3339()
}

/// Restores `name` as of `at` (or the latest) into a fresh file.
fn restore(env: &Env, name: &str, at: Option<SystemTime>) -> PathBuf {
    let out = env.path(&format!("restored-{}.db", now_nanos()));
    let when = at.map_or(String::new(), |t| format!("--timestamp {}", rfc3339(t)));
    env.ok(&format!(
        "bk-sqlite restore {name} -o {} {when}",
        out.display()
    ));
    out
}

/// Restores at `samples` times spread over the log; each must equal a
/// logged state committed at or before T and no older than T - `slack`.
fn check_restores_by_time(env: &Env, name: &str, log: &[Logged], samples: usize, slack: Duration) {
    check_restores_from(env, name, log, log.first().unwrap().after, samples, slack);
}

/// [`check_restores_by_time`] at times from `first` on (where the replica
/// begins), against every logged state.
fn check_restores_from(
    env: &Env,
    name: &str,
    log: &[Logged],
    first: SystemTime,
    samples: usize,
    slack: Duration,
) {
    let last = log.last().unwrap().after;
    let span = last.duration_since(first).unwrap();
    for k in 1..=samples {
        let t = first + span.mul_f64(k as f64 / (samples + 1) as f64);
        let restored = restore(env, name, Some(t));
        assert!(integrity_ok(&restored));
        let (rows, hash) = content_of(&restored);
        let candidates: Vec<&Logged> = log
            .iter()
            .filter(|l| l.after <= t + Duration::from_millis(50) && l.after + slack >= t)
            .collect();
        assert!(
            candidates.iter().any(|l| l.hash == hash),
            "restore at {} ({rows} rows) equals no state logged in the {slack:?} before it \
             (those had {:?} rows)",
            rfc3339(t),
            candidates.iter().map(|l| l.rows).collect::<Vec<_>>()
        );
    }
}

#[test]
fn sqlite_restores_the_latest_state_and_every_sampled_time_exactly() {
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 4096);
    let rep = replicator(
        &env,
        &db,
        "--sync-interval 200ms --checkpoint-frames 40 --checkpoint-interval 1s",
    );
    std::thread::sleep(Duration::from_millis(500));
    let writer = Writer::start(&db, Duration::from_millis(15));
    std::thread::sleep(Duration::from_secs(4));
    let longest_truncate = *writer.longest_truncate.lock().unwrap();
    let log = writer.finish();
    // The application's TRUNCATE waits for the pin to move on, which it
    // does every sync (200 ms): not for a busy timeout (5-10 s).
    assert!(
        longest_truncate < Duration::from_secs(3),
        "the application's TRUNCATE checkpoint was held up {longest_truncate:?}"
    );
    std::thread::sleep(Duration::from_millis(400));
    let (code, err) = terminate(rep);
    assert_eq!(code, 0, "SIGTERM ends replication with 0: {err}");
    let ev = events(&env);
    let kinds: Vec<&str> = ev.iter().map(|e| e["event"].as_str().unwrap()).collect();
    for k in ["start", "lineage", "sync", "checkpoint", "snapshot", "stop"] {
        assert!(kinds.contains(&k), "no {k} event in {kinds:?}");
    }
    assert!(!kinds.contains(&"error"), "{ev:?}");

    let latest = restore(&env, "app.db", None);
    assert!(integrity_ok(&latest));
    assert_eq!(
        content_of(&latest),
        content_of(&db),
        "latest = the database now"
    );
    check_restores_by_time(&env, "app.db", &log, 6, Duration::from_millis(1500));
    // No -wal/-shm left beside a restored file, nor temporary files.
    let leftovers: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| {
            n.starts_with("restored-") && (n.ends_with("-wal") || n.ends_with("-shm"))
                || n.contains("bk-sqlite-restore")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn sqlite_replicator_killed_with_sigkill_and_restarted_loses_nothing() {
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 4096);
    let writer = Writer::start(&db, Duration::from_millis(10));
    let extra = "--sync-interval 100ms --checkpoint-frames 30 --snapshot-interval 1s";
    for round in 0..4 {
        let mut rep = replicator(&env, &db, extra);
        std::thread::sleep(Duration::from_millis(700 + 230 * round));
        rep.kill().unwrap();
        rep.wait().unwrap();
    }
    let log = finish_replicated(&env, &db, writer, extra);
    // Each restart either resumed or began a lineage; either way every
    // restore is one of the states the writer committed.
    check_restores_by_time(&env, "app.db", &log, 5, Duration::from_secs(3));
}

/// The end of a replication test: a replicator runs while the writer
/// stops, a SIGTERM makes it ship the rest, and the latest restore must be
/// the database exactly. Returns the writer's log.
fn finish_replicated(env: &Env, db: &Path, writer: Writer, extra: &str) -> Vec<Logged> {
    let rep = replicator(env, db, extra);
    std::thread::sleep(Duration::from_millis(800));
    let log = writer.finish();
    std::thread::sleep(Duration::from_millis(400));
    let (code, err) = terminate(rep);
    assert_eq!(code, 0, "{err}");
    let latest = restore(env, "app.db", None);
    assert!(integrity_ok(&latest));
    assert_eq!(content_of(&latest), content_of(db));
    log
}

/// Issue 32's crash points for SQLite sync: the replicator kills itself
/// right after (or before) each kind of durable write — its lease, WAL
/// segments, the snapshot's packs, index object and snapshot object — and
/// a restarted one continues without a gap.
#[test]
fn sqlite_replicator_killed_at_each_durable_step_resumes_without_a_gap() {
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 4096);
    let writer = Writer::start(&db, Duration::from_millis(10));
    let extra = "--sync-interval 100ms --checkpoint-frames 30 --snapshot-interval 1s";
    let points = [
        "put:sqlite:1:after",
        "put:sqlite:2:after",
        "put:sqlite:3:before",
        "put:sqlite:5:after",
        "put:pack:1:after",
        "put:index:1:after",
        "put:snapshot:1:before",
        "put:snapshot:1:after",
        "put:snapshot:2:after",
    ];
    let mut killed = 0;
    for spec in points {
        let mut rep = replicator_with_fault(&env, &db, extra, Some(&format!("{spec}:kill")));
        let t0 = std::time::Instant::now();
        let status = loop {
            if let Some(st) = rep.try_wait().unwrap() {
                break Some(st);
            }
            if t0.elapsed() > Duration::from_secs(8) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match status {
            Some(st) => {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(
                    st.signal(),
                    Some(9),
                    "replicator with {spec} ended otherwise: {st:?}"
                );
                killed += 1;
            }
            None => {
                let (code, err) = terminate(rep);
                assert_eq!(code, 0, "{spec} never reached; the replicator: {err}");
            }
        }
    }
    assert!(
        killed >= 7,
        "only {killed} of {} crash points were reached",
        points.len()
    );
    let log = finish_replicated(&env, &db, writer, extra);
    // From the first state the replica holds (the first crash points came
    // before the initial snapshot) to the end, with no gap.
    let from = json_lines(&env.ok("bk-sqlite ls app.db"))
        .iter()
        .filter(|r| r["type"] == "sqlite_lineage")
        .map(|r| {
            bk::format::time::Timestamp::parse(r["restorable_from"].as_str().unwrap())
                .unwrap()
                .as_nanos()
        })
        .min()
        .unwrap();
    let from = SystemTime::UNIX_EPOCH + Duration::from_nanos(from as u64);
    let replicated = log.iter().filter(|l| l.after >= from).count();
    assert!(
        replicated > 50,
        "the replica starts too late: {replicated} states after it"
    );
    // Each of the nine restarts unlocks the repository (scrypt, in a debug
    // build, beside the rest of the suite), and a replicator killed before
    // its first sync ships nothing: a restore may be a few seconds behind
    // (the state the initial snapshot took, committed before `from`, is a
    // right answer until the next sync), never a state never committed.
    check_restores_from(&env, "app.db", &log, from, 8, Duration::from_secs(10));
    env.ok("bk-verify");
}

/// Regression: a SIGTERM while the replicator took its first snapshot (a
/// pod stopped right after it started) ended it with exit 130 and nothing
/// replicated; it now finishes the start, ships and exits 0.
#[test]
fn regression_sigterm_during_the_first_snapshot_finishes_it_ships_and_exits_0() {
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 4096);
    {
        let c = Connection::open(&db).unwrap();
        c.execute_batch("BEGIN").unwrap();
        for i in 0..5000 {
            c.execute(
                "INSERT INTO t (v) VALUES (?1)",
                [format!("{i:04}{}", "x".repeat(4000))],
            )
            .unwrap();
        }
        c.execute_batch("COMMIT; PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    // The snapshot's first pack upload stalls 2 s: its thousands of page
    // chunks back up behind it, and the signal comes while they do.
    let rep = replicator_with_fault(
        &env,
        &db,
        "--sync-interval 100ms",
        Some("put:pack:1:before:stall"),
    );
    let t0 = std::time::Instant::now();
    while !events(&env).iter().any(|e| e["event"] == "lineage") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the replicator never started a lineage"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, err) = terminate(rep);
    assert_eq!(code, 0, "{err}");
    let latest = restore(&env, "app.db", None);
    assert_eq!(content_of(&latest), content_of(&db));
}

#[test]
fn sqlite_second_replicator_of_a_database_is_refused() {
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 4096);
    let first = replicator(&env, &db, "--sync-interval 100ms");
    std::thread::sleep(Duration::from_millis(800));
    let err = env.fails(&format!("bk-sqlite replicate {}", db.display()), 11);
    assert!(err.contains("already replicated by"), "{err}");
    assert!(err.contains("--takeover"), "{err}");
    let (code, _) = terminate(first);
    assert_eq!(code, 0);
    // Stopped cleanly, the lease is given back: a new replicator starts.
    let again = replicator(&env, &db, "--sync-interval 100ms");
    std::thread::sleep(Duration::from_millis(800));
    let (code, err) = terminate(again);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn sqlite_refuses_a_database_not_in_wal_mode_and_changes_nothing() {
    let env = Env::new();
    let db = env.path("rollback.db");
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            .unwrap();
    }
    let err = env.fails(&format!("bk-sqlite replicate {}", db.display()), 2);
    assert!(err.contains("journal_mode delete, not WAL"), "{err}");
    assert!(err.contains("--set-wal"), "{err}");
    let conn = Connection::open(&db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1, "nothing written into the user's schema");
}

#[test]
fn sqlite_restore_contracts_exit_codes_and_messages() {
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 4096);
    let rep = replicator(&env, &db, "--sync-interval 100ms");
    let writer = Writer::start(&db, Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(1));
    writer.finish();
    std::thread::sleep(Duration::from_millis(300));
    terminate(rep);

    // No replica: 15, or 0 with --if-replica-exists.
    let err = env.fails("bk-sqlite restore other.db", 15);
    assert!(err.contains("no replica of database other.db"), "{err}");
    env.ok("bk-sqlite restore other.db --if-replica-exists");
    assert!(!env.path("other.db").exists());
    // The output exists: 16, or 0 with --if-db-not-exists, unchanged.
    let before = std::fs::read(&db).unwrap();
    let err = env.fails(&format!("bk-sqlite restore {}", db.display()), 16);
    assert!(err.contains("exists"), "{err}");
    env.ok(&format!(
        "bk-sqlite restore {} --if-db-not-exists --if-replica-exists",
        db.display()
    ));
    assert_eq!(std::fs::read(&db).unwrap(), before);
    // A time before the replica began.
    let err = env.fails(
        "bk-sqlite restore app.db -o early.db --timestamp 2001-01-01T00:00:00Z",
        2,
    );
    assert!(err.contains("no state as early as"), "{err}");
    // Into a directory that does not exist yet (a new volume's subdirectory),
    // with a wrapper's progress records on stderr.
    let out = env.run("bk-sqlite restore app.db -o new/dir/app.db --progress json");
    assert!(out.status.success(), "{out:?}");
    assert!(env.path("new/dir/app.db").exists());
    let last = last_progress(&out.stderr);
    assert_eq!(last["unit"], "segments", "{last}");
    assert_eq!(last["done"], true, "{last}");
    assert_eq!(last["items"], last["total_items"], "{last}");
    // A damaged segment: verification fails (13) and nothing appears.
    let seg_dir = env.repo.join("sqlite");
    let seg = std::fs::read_dir(&seg_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with(".lease"))
        .max()
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let _ = std::fs::remove_file(&seg);
    std::fs::write(&seg, bytes).unwrap();
    let err = env.fails("bk-sqlite restore app.db -o damaged.db", 13);
    assert!(err.contains("integrity error"), "{err}");
    assert!(!env.path("damaged.db").exists());
}

#[test]
fn sqlite_replica_ahead_of_a_restored_database_starts_a_new_lineage() {
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 4096);
    let rep = replicator(&env, &db, "--sync-interval 100ms");
    let writer = Writer::start(&db, Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(1500));
    let log = writer.finish();
    std::thread::sleep(Duration::from_millis(300));
    terminate(rep);
    // The application's database is restored to an earlier time (the
    // replica is now ahead of it), and the application goes on.
    let mid = &log[log.len() / 2];
    let t_mid = mid.after + Duration::from_millis(1);
    std::fs::remove_file(&db).unwrap();
    env.ok(&format!(
        "bk-sqlite restore app.db -o {} --timestamp {}",
        db.display(),
        rfc3339(t_mid)
    ));
    let back = content_of(&db).1;
    assert!(log[..=log.len() / 2].iter().any(|l| l.hash == back));
    let rep = replicator(&env, &db, "--sync-interval 100ms");
    std::thread::sleep(Duration::from_millis(500));
    let writer = Writer::start(&db, Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(800));
    writer.finish();
    std::thread::sleep(Duration::from_millis(300));
    terminate(rep);

    let lineages = json_lines(&env.ok("bk-sqlite ls app.db"));
    assert_eq!(lineages.len(), 2, "{lineages:?}");
    assert_eq!(lineages[1]["current"], true);
    let latest = restore(&env, "app.db", None);
    assert_eq!(
        content_of(&latest),
        content_of(&db),
        "the new history, not the old"
    );
    // The old history stays restorable: the state before the restore.
    let old_end = log.last().unwrap().clone();
    let before_new = restore(
        &env,
        "app.db",
        Some(old_end.after + Duration::from_millis(150)),
    );
    assert_eq!(content_of(&before_new).1, old_end.hash);
}

#[test]
fn sqlite_vacuum_small_and_large_pages_and_a_long_reader() {
    let env = Env::new();
    for (name, page_size) in [("small.db", 512u32), ("large.db", 65536)] {
        let db = env.path(name);
        create_db(&db, page_size);
        let rep = replicator(&env, &db, "--sync-interval 100ms --checkpoint-frames 20");
        let conn = Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        for i in 0..200 {
            conn.execute(
                "INSERT INTO t (v) VALUES (?1)",
                [format!("{i} {}", "y".repeat(900))],
            )
            .unwrap();
        }
        // A reader holding its snapshot while the replicator checkpoints.
        let reader = Connection::open(&db).unwrap();
        reader.execute_batch("BEGIN").unwrap();
        let seen: i64 = reader
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        conn.execute("DELETE FROM t WHERE id > 20", []).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(
            reader
                .query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .unwrap(),
            seen
        );
        reader.execute_batch("COMMIT").unwrap();
        conn.execute_batch("VACUUM").unwrap();
        std::thread::sleep(Duration::from_millis(600));
        drop(conn);
        let (code, err) = terminate(rep);
        assert_eq!(code, 0, "{err}");
        let restored = restore(&env, name, None);
        assert!(integrity_ok(&restored), "{name}");
        assert_eq!(content_of(&restored), content_of(&db), "{name}");
        let got: i64 = Connection::open(&restored)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(got, page_size as i64);
    }
}

#[test]
fn sqlite_an_idle_database_costs_no_requests_and_metrics_say_so() {
    let env = Env::new();
    let db = env.path("idle.db");
    create_db(&db, 4096);
    let metrics = env.path("bk-sqlite.prom");
    let rep = replicator(
        &env,
        &db,
        &format!("--sync-interval 50ms --metrics {}", metrics.display()),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let count = |dir: &Path| walk(dir);
    let before = count(&env.repo);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count(&env.repo), before, "nothing written while idle");
    let text = std::fs::read_to_string(&metrics).unwrap();
    for series in [
        "bk_sqlite_replication_lag_seconds{",
        "bk_sqlite_last_sync_timestamp_seconds{",
        "bk_sqlite_wal_bytes{",
        "bk_sqlite_snapshot_age_seconds{",
        "bk_sqlite_errors_total{",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(
        text.contains("bk_sqlite_replication_lag_seconds{repository=")
            && text.contains("db=\"idle.db\"} 0"),
        "{text}"
    );
    let (code, _) = terminate(rep);
    assert_eq!(code, 0);
    let syncs = events(&env).iter().filter(|e| e["event"] == "sync").count();
    assert_eq!(syncs, 0);
}

fn walk(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len());
            out.push((p, len));
        }
    }
    out.sort();
    out
}

#[test]
fn sqlite_prune_keeps_every_state_in_the_window_and_dry_run_shows_the_plan() {
    let env = Env::new();
    let db = env.path("app.db");
    create_db(&db, 4096);
    let rep = replicator(&env, &db, "--sync-interval 100ms --snapshot-interval 1s");
    let writer = Writer::start(&db, Duration::from_millis(30));
    std::thread::sleep(Duration::from_secs(5));
    let log = writer.finish();
    std::thread::sleep(Duration::from_millis(300));
    terminate(rep);
    // The window ends at the newest state, so the plan does not move
    // with the clock between the dry run and the run.
    let plan = env.ok("bk-sqlite prune --keep-within 2s --dry-run");
    std::thread::sleep(Duration::from_millis(1200));
    let done = env.ok("bk-sqlite prune --keep-within 2s");
    let (plan, done) = (json_lines(&plan), json_lines(&done));
    assert!(!plan.is_empty(), "five seconds of history, two kept");
    assert_eq!(
        plan, done,
        "the dry run prints the plan the real run carries out"
    );
    assert!(plan.iter().any(|r| r["action"] == "forget"));
    assert!(plan.iter().any(|r| r["action"] == "delete"));
    // Every state of the last two seconds is still restorable.
    let window: Vec<Logged> = log
        .iter()
        .filter(|l| l.after + Duration::from_millis(1700) >= log.last().unwrap().after)
        .cloned()
        .collect();
    check_restores_by_time(&env, "app.db", &window, 3, Duration::from_millis(1500));
    // And nothing from before it: the oldest restorable state is newer.
    let early = rfc3339(log[0].after + Duration::from_millis(100));
    let err = env.fails(
        &format!("bk-sqlite restore app.db -o gone.db --timestamp {early}"),
        2,
    );
    assert!(err.contains("no state as early as"), "{err}");
}

/// Sync events the replicator has printed so far.
fn sync_count(env: &Env) -> usize {
    events(env).iter().filter(|e| e["event"] == "sync").count()
}

/// The long mode (`-- --ignored`, minutes): a database larger than 1 GiB,
/// so it spans SQLite's lock-byte page, replicated and restored exactly;
/// then 1,000 cycles of write, sync, restore and integrity_check.
#[test]
#[ignore = "the long mode (minutes): cargo test -p bk-integration-tests --test it sqlite_long_mode -- --ignored"]
fn sqlite_long_mode_a_database_over_1_gib_and_1000_restore_cycles() {
    let env = Env::new();
    let big = env.path("big.db");
    create_db(&big, 4096);
    {
        let conn = Connection::open(&big).unwrap();
        let blob: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for i in 0..1100u32 {
            let mut b = blob.clone();
            b[..4].copy_from_slice(&i.to_be_bytes());
            conn.execute("INSERT INTO t (v) VALUES (hex(?1))", [&b[..(1 << 19)]])
                .unwrap();
        }
    }
    let size = std::fs::metadata(&big).unwrap().len()
        + std::fs::metadata(super_wal(&big)).map_or(0, |m| m.len());
    assert!(size > 1 << 30, "{size} bytes");
    let rep = replicator(&env, &big, "--sync-interval 200ms");
    while sync_count(&env) == 0 && !events(&env).iter().any(|e| e["event"] == "snapshot") {
        std::thread::sleep(Duration::from_millis(200));
    }
    {
        let conn = Connection::open(&big).unwrap();
        conn.execute("UPDATE t SET v = 'changed' WHERE id % 97 = 0", [])
            .unwrap();
    }
    let before = sync_count(&env);
    while sync_count(&env) == before {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, err) = terminate(rep);
    assert_eq!(code, 0, "{err}");
    let restored = restore(&env, "big.db", None);
    assert!(integrity_ok(&restored));
    assert_eq!(content_of(&restored), content_of(&big));
    std::fs::remove_file(&restored).unwrap();

    let db = env.path("cycles.db");
    create_db(&db, 4096);
    let starts = |env: &Env| events(env).iter().filter(|e| e["event"] == "start").count();
    let started = starts(&env);
    let rep = replicator(&env, &db, "--sync-interval 20ms --checkpoint-frames 50");
    // A write before the start would go into the first snapshot, not a sync.
    while starts(&env) == started {
        std::thread::sleep(Duration::from_millis(20));
    }
    let conn = Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut corrupt = 0;
    for cycle in 0..1000 {
        let before = sync_count(&env);
        conn.execute(
            "INSERT INTO t (v) VALUES (?1)",
            [format!("cycle {cycle} {}", "z".repeat(cycle % 3000))],
        )
        .unwrap();
        if cycle % 10 == 0 {
            conn.execute("DELETE FROM t WHERE id % 7 = 3", []).unwrap();
        }
        while sync_count(&env) == before {
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = restore(&env, "cycles.db", None);
        if !integrity_ok(&out) || content_of(&out) != content(&conn) {
            corrupt += 1;
        }
        std::fs::remove_file(&out).unwrap();
    }
    let (code, err) = terminate(rep);
    assert_eq!(code, 0, "{err}");
    assert_eq!(corrupt, 0, "restores that differ or fail integrity_check");
}

fn super_wal(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

#[test]
fn sqlite_replicator_waits_for_a_database_the_application_has_not_created_yet() {
    let env = Env::new();
    let db = env.path("later.db");
    let rep = replicator(&env, &db, "--sync-interval 100ms");
    std::thread::sleep(Duration::from_millis(500));
    create_db(&db, 4096);
    let writer = Writer::start(&db, Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(800));
    writer.finish();
    std::thread::sleep(Duration::from_millis(300));
    let (code, err) = terminate(rep);
    assert_eq!(code, 0, "{err}");
    let kinds: Vec<String> = events(&env)
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("waiting"),
        "{kinds:?}"
    );
    let latest = restore(&env, "later.db", None);
    assert_eq!(content_of(&latest), content_of(&db));
}
