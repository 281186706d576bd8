//! Torture (issue 32): a crash at every durable step of a backup and of a
//! prune, a writer suspended for longer than its lock lives, signals, and
//! secrets that must never show. The real binaries stop at exact storage
//! calls through the library's fault-injecting backend (`BK_TEST_FAULT`,
//! read by debug builds); lock timing is shortened with
//! `BK_TEST_LOCK_SCALE`. `BK_TORTURE_LONG=1` (scripts/torture) tries every
//! side of every write and more of each kind.

use crate::common::*;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Output;

/// A repository with 1 MiB packs and a tree `src` of `files` noise files
/// of `size` bytes (seeds from `seed`).
fn repo_and_tree(files: u64, size: usize, seed: u64) -> (Env, std::path::PathBuf) {
    let env = Env::bare();
    env.ok("bk-repo init --pack-size-mib 1");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        std::fs::write(src.join(format!("f{i:02}")), noise(size, seed + i)).unwrap();
    }
    (env, src)
}

fn long_mode() -> bool {
    std::env::var_os("BK_TORTURE_LONG").is_some()
}

/// One digest over every file's relative path and bytes.
fn tree_digest(dir: &Path) -> String {
    let mut all = Vec::new();
    for f in walk_files(dir) {
        all.extend_from_slice(f.strip_prefix(dir).unwrap().to_string_lossy().as_bytes());
        all.push(0);
        all.extend_from_slice(
            bk::id::ObjectId::digest(&std::fs::read(&f).unwrap())
                .to_hex()
                .as_bytes(),
        );
        all.push(b'\n');
    }
    bk::id::ObjectId::digest(&all).to_hex()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?} signal {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        o.status.signal(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn killed(o: &Output) -> bool {
    o.status.signal() == Some(nix::sys::signal::Signal::SIGKILL as i32)
}

/// Restores snapshot `id` into a fresh directory and requires `digest`.
fn assert_restores(env: &Env, id: &str, digest: &str) {
    let into = env.path("restored");
    let _ = std::fs::remove_dir_all(&into);
    env.ok(&format!("bk-get {id} --into '{}'", into.display()));
    assert_eq!(
        tree_digest(&into),
        digest,
        "snapshot {id} restored different content"
    );
}

/// `bk-verify` (metadata, or with `--read-data`) must find nothing wrong.
fn assert_verifies(env: &Env, read_data: bool, after: &str) {
    let out = env.run(if read_data {
        "bk-verify --read-data"
    } else {
        "bk-verify"
    });
    assert_eq!(
        out.status.code(),
        Some(0),
        "bk-verify after {after}: {}",
        text(&out)
    );
}

fn objects(env: &Env, dir: &str) -> usize {
    walk_files(&env.repo.join(dir)).len()
}

/// A crash point: the process kills itself at the `nth` `op` of `kind`,
/// `when` (before the call reaches the storage, or after it returned: the
/// object is durable).
#[derive(Clone, Copy, Debug)]
struct Point {
    op: &'static str,
    kind: &'static str,
    when: &'static str,
}

impl Point {
    fn spec(&self, nth: u64) -> String {
        format!("{}:{}:{nth}:{}:kill", self.op, self.kind, self.when)
    }
}

fn points(list: &[(&'static str, &'static str)], long: bool) -> Vec<Point> {
    let mut out = Vec::new();
    for &(op, kind) in list {
        // The durable step itself (after a write, before a deletion) in
        // the short mode; both sides in the long mode.
        let first = if op == "put" { "after" } else { "before" };
        out.push(Point {
            op,
            kind,
            when: first,
        });
        if long {
            let other = if first == "after" { "before" } else { "after" };
            out.push(Point {
                op,
                kind,
                when: other,
            });
        }
    }
    out
}

#[test]
fn a_backup_killed_at_each_durable_step_loses_nothing_and_the_rerun_resends_only_unindexed_data() {
    let env = Env::bare();
    env.ok("bk-repo init --pack-size-mib 1");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("base"), noise(300 << 10, 1)).unwrap();
    let put = |fault: Option<&str>| {
        let mut c = env.tool("bk-put");
        c.arg("--from")
            .arg(&src)
            .args(["--identity", "t@torture:/src"]);
        if let Some(f) = fault {
            c.env("BK_TEST_FAULT", f);
        }
        c.output().unwrap()
    };
    let first = put(None);
    assert!(first.status.success(), "{}", text(&first));
    let mut committed = vec![(
        json_line(&String::from_utf8_lossy(&first.stdout))["id"]
            .as_str()
            .unwrap()
            .to_string(),
        tree_digest(&src),
    )];
    let long = long_mode();
    let max_nth = if long { 4 } else { 2 };
    let list = [
        ("put", "lock"),
        ("put", "pack"),
        ("put", "index"),
        ("put", "snapshot"),
        ("delete", "lock"),
    ];
    let (mut kills, mut round) = (0u64, 0u64);
    for point in points(&list, long) {
        for nth in 1..=max_nth {
            round += 1;
            let new_len = (2 << 20) + (round as usize * 4099);
            std::fs::write(src.join("new"), noise(new_len, 1000 + round)).unwrap();
            let digest = tree_digest(&src);
            let (snaps, indexes) = (env.snapshots().len(), objects(&env, "index"));
            let spec = point.spec(nth);
            let out = put(Some(&spec));
            if out.status.success() {
                // No nth such call in a backup: the point is past its end.
                let rec = json_line(&String::from_utf8_lossy(&out.stdout));
                committed.push((rec["id"].as_str().unwrap().to_string(), digest));
                break;
            }
            assert!(
                killed(&out),
                "bk-put with {spec} should have been killed: {}",
                text(&out)
            );
            kills += 1;
            let after = format!("bk-put killed at {spec}");
            assert_verifies(&env, false, &after);
            // Killed once the snapshot was durable, it is committed (only
            // not reported); killed anywhere before, there is none.
            let durable =
                (point.kind == "snapshot" && point.when == "after") || point.op == "delete";
            let now = env.snapshots();
            assert_eq!(
                now.len(),
                snaps + usize::from(durable),
                "{after}: snapshots"
            );
            if durable {
                let id = now
                    .iter()
                    .map(|s| s["id"].as_str().unwrap())
                    .find(|id| committed.iter().all(|(c, _)| c != id))
                    .unwrap();
                assert_restores(&env, id, &digest);
                committed.push((id.to_string(), digest.clone()));
            }
            let (id, d) = committed.last().unwrap();
            assert_restores(&env, id, d);
            // The rerun succeeds, and sends again only what no index named.
            let indexed = objects(&env, "index") > indexes;
            let rerun = put(None);
            assert!(
                rerun.status.success(),
                "rerun after {after}: {}",
                text(&rerun)
            );
            let rec = json_line(&String::from_utf8_lossy(&rerun.stdout));
            let stored = rec["stored_bytes"].as_u64().unwrap();
            let unindexed = if indexed || durable {
                0
            } else {
                new_len as u64
            };
            assert!(
                stored as f64 <= 1.1 * unindexed as f64 + (64 << 10) as f64,
                "{after}: the rerun stored {stored} bytes, {unindexed} were not indexed"
            );
            committed.push((rec["id"].as_str().unwrap().to_string(), digest));
        }
    }
    assert!(kills >= 6, "only {kills} crash points were reached");
    assert_verifies(&env, true, "every crash point");
    for (id, d) in &committed {
        assert_restores(&env, id, d);
    }
    eprintln!(
        "torture: bk-put killed at {kills} crash points, {} snapshots restored",
        committed.len()
    );
}

#[test]
fn a_prune_killed_at_each_durable_step_loses_nothing_and_the_next_run_finishes() {
    let env = Env::bare();
    env.ok("bk-repo init --pack-size-mib 1");
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let digests = std::cell::RefCell::new(std::collections::HashMap::<String, String>::new());
    let mut round = 0u64;
    let mut backup = |env: &Env| {
        round += 1;
        // Half the tree stays, half changes: packs end up partly used.
        std::fs::write(src.join("stays"), noise(600 << 10, round / 3)).unwrap();
        std::fs::write(src.join("changes"), noise(600 << 10, 500 + round)).unwrap();
        let rec = json_line(&env.ok(&format!(
            "bk-put --from '{}' --identity t@torture:/src",
            src.display()
        )));
        digests
            .borrow_mut()
            .insert(rec["id"].as_str().unwrap().to_string(), tree_digest(&src));
    };
    let prune_args = ["--keep-last", "2", "--grace", "0", "--max-unused", "0%"];
    let long = long_mode();
    let list = [
        ("delete", "snapshot"),
        ("put", "pack"),
        ("put", "gc"),
        ("put", "index"),
        ("delete", "pack"),
        ("delete", "index"),
        ("delete", "gc"),
        ("delete", "lock"),
    ];
    let max_nth = if long { 3 } else { 1 };
    let (mut kills, mut reached) = (0u64, std::collections::BTreeSet::new());
    for point in points(&list, long) {
        for nth in 1..=max_nth {
            // A few tries: a sweep's deletions come one run after its mark.
            let mut hit = false;
            for _ in 0..3 {
                backup(&env);
                backup(&env);
                let spec = point.spec(nth);
                let out = env
                    .tool("bk-prune")
                    .args(prune_args)
                    .env("BK_TEST_FAULT", &spec)
                    .output()
                    .unwrap();
                if out.status.success() {
                    continue;
                }
                assert!(
                    killed(&out),
                    "bk-prune with {spec} should have been killed: {}",
                    text(&out)
                );
                hit = true;
                kills += 1;
                reached.insert(format!("{}:{}:{}", point.op, point.kind, point.when));
                let after = format!("bk-prune killed at {spec}");
                assert_verifies(&env, false, &after);
                let snaps = env.snapshots();
                assert!(snaps.len() >= 2, "{after}: the policy keeps two snapshots");
                for s in &snaps {
                    let id = s["id"].as_str().unwrap();
                    assert_restores(&env, id, &digests.borrow()[id]);
                }
                let rerun = env.tool("bk-prune").args(prune_args).output().unwrap();
                assert!(
                    rerun.status.success(),
                    "prune after {after}: {}",
                    text(&rerun)
                );
                assert_verifies(&env, false, &format!("the prune after {after}"));
                break;
            }
            if !hit {
                break;
            }
        }
    }
    // Once no writer is left, everything pending is swept and what the
    // policy keeps is whole.
    env.ok("bk-prune --keep-last 2 --grace 0 --max-unused 0%");
    env.ok("bk-prune --keep-last 2 --grace 0 --max-unused 0%");
    assert_verifies(&env, true, "every prune crash point");
    for s in env.snapshots() {
        let id = s["id"].as_str().unwrap();
        assert_restores(&env, id, &digests.borrow()[id]);
    }
    for must in [
        "delete:snapshot:before",
        "put:gc:after",
        "put:index:after",
        "delete:pack:before",
    ] {
        assert!(
            reached.contains(must),
            "crash point {must} was never reached: {reached:?}"
        );
    }
    eprintln!("torture: bk-prune killed at {kills} crash points: {reached:?}");
}

/// Regression: a bk-put stopped (SIGSTOP) for longer than its lock's
/// staleness, while a prune judged the lock stale and deleted the packs the
/// backup had uploaded, used to resume, refresh its lock at once (which
/// made it look held again) and commit a snapshot whose data was gone.
#[test]
fn regression_a_writer_resumed_after_its_lock_went_stale_commits_nothing_that_is_missing() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};
    let (env, src) = repo_and_tree(24, 1 << 20, 70);
    // Lock timing / 300: refresh 1 s, lost after 4 s, stale after 6 s.
    let scale = "300";
    let put = env
        .tool("bk-put")
        .arg("--from")
        .arg(&src)
        .args(["--threads", "1"])
        .env("BK_TEST_LOCK_SCALE", scale)
        // Slow enough to be caught half-way.
        .env(
            "BK_TEST_FAULT",
            "put:pack:1:after:stall,put:pack:2:after:stall",
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(put.id() as i32);
    let t0 = Instant::now();
    while objects(&env, "data") < 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "bk-put wrote no pack"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(pid, Signal::SIGSTOP).unwrap();
    let packs_at_stop = objects(&env, "data");
    std::thread::sleep(Duration::from_secs(8));
    // Its lock is stale now: prunes mark its unindexed packs and, not
    // waiting for a stale holder, sweep them.
    for _ in 0..2 {
        let out = env
            .tool("bk-prune")
            .args(["--keep-last", "1", "--grace", "0"])
            .env("BK_TEST_LOCK_SCALE", scale)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let swept = objects(&env, "data") < packs_at_stop;
    kill(pid, Signal::SIGCONT).unwrap();
    let out = put.wait_with_output().unwrap();
    match out.status.code() {
        Some(11) => assert!(env.snapshots().is_empty(), "exit 11 but a snapshot exists"),
        Some(0) => {
            let id = json_line(&String::from_utf8_lossy(&out.stdout))["id"]
                .as_str()
                .unwrap()
                .to_string();
            assert_verifies(&env, true, "a resumed backup");
            assert_restores(&env, &id, &tree_digest(&src));
        }
        _ => panic!("the resumed bk-put: {}", text(&out)),
    }
    assert!(
        swept,
        "the prunes deleted none of the stopped writer's packs: the test proves nothing"
    );
    assert_verifies(&env, true, "a resumed writer");
    // Nothing of it is left in the way: the next backup succeeds.
    let again = env.tool("bk-put").arg("--from").arg(&src).output().unwrap();
    assert!(again.status.success(), "{}", text(&again));
}

/// Every read of a pack, whichever way it is made, sleeps 2 s the first
/// time: a window in which a signal finds the tool half-way.
const STALL_PACK_READS: &str =
    "get:pack:1:after:stall,get_range:pack:1:after:stall,get_upto:pack:1:after:stall";

/// Issue 32, item 7: SIGINT or SIGTERM half-way through any tool leaves no
/// lock, no partial snapshot and no temporary file, and exits 130.
#[test]
fn a_signal_half_way_through_any_tool_leaves_no_lock_no_snapshot_and_no_temporary_file() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::{Duration, Instant};
    let (env, src) = repo_and_tree(8, 1 << 20, 300);
    let first = json_line(&env.ok(&format!("bk-put --from '{}'", src.display())));
    let snap = first["id"].as_str().unwrap().to_string();
    // A second snapshot: the prune below has one to forget.
    std::fs::write(src.join("f00"), noise(1 << 20, 999)).unwrap();
    env.ok(&format!("bk-put --from '{}'", src.display()));
    let into = env.path("into");
    let fresh = env.path("fresh");
    std::fs::create_dir_all(&fresh).unwrap();
    for i in 0..8 {
        std::fs::write(fresh.join(format!("f{i}")), noise(1 << 20, 400 + i)).unwrap();
    }
    struct Case<'a> {
        name: &'a str,
        args: Vec<String>,
        fault: &'a str,
        signal: Signal,
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let cases = [
        Case {
            name: "bk-put",
            args: s(&["--from", &fresh.display().to_string()]),
            fault: "put:pack:1:after:stall",
            signal: Signal::SIGTERM,
        },
        Case {
            name: "bk-get",
            args: s(&[&snap, "--into", &into.display().to_string()]),
            fault: STALL_PACK_READS,
            signal: Signal::SIGINT,
        },
        Case {
            name: "bk-verify",
            args: s(&["--read-data"]),
            fault: STALL_PACK_READS,
            signal: Signal::SIGINT,
        },
        Case {
            name: "bk-prune",
            args: s(&["--keep-last", "1", "--grace", "0"]),
            fault: "list:snapshot:1:after:stall",
            signal: Signal::SIGTERM,
        },
        Case {
            name: "bk-ls",
            args: s(&[&snap]),
            fault: STALL_PACK_READS,
            signal: Signal::SIGTERM,
        },
    ];
    let snapshots = env.snapshots().len();
    for case in &cases {
        let child = env
            .tool(case.name)
            .args(&case.args)
            .env("BK_TEST_FAULT", case.fault)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        // Half-way: the stalled storage call has begun.
        std::thread::sleep(Duration::from_millis(900));
        kill(Pid::from_raw(child.id() as i32), case.signal).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(30));
        assert_eq!(
            out.status.code(),
            Some(130),
            "{} after {:?}: {}",
            case.name,
            case.signal,
            text(&out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("interrupted"), "{}: {err}", case.name);
        assert_eq!(objects(&env, "locks"), 0, "{} left a lock", case.name);
        assert_eq!(
            objects(&env, "tmp"),
            0,
            "{} left a temporary object",
            case.name
        );
        assert_eq!(
            env.snapshots().len(),
            snapshots,
            "{} changed the snapshots",
            case.name
        );
        let leftovers: Vec<_> = walk_files(&into)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".bk-restore-")
            })
            .collect();
        assert!(leftovers.is_empty(), "{} left {leftovers:?}", case.name);
    }
    assert_verifies(&env, true, "the signals");
}

/// Adds a new identity key to `env`'s repository, written to `path`;
/// returns its secret line (`AGE-SECRET-KEY-…`).
fn add_identity(env: &Env, path: &Path) -> String {
    env.ok(&format!(
        "bk-repo key add --generate-identity '{}'",
        path.display()
    ));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string()
}

/// Issue 32, item 8: a canary passphrase, identity key and S3 secret never
/// show in any tool's output, on success or failure (wrong key,
/// unreachable endpoint, access denied).
#[test]
fn canary_secrets_never_appear_in_any_output_on_success_or_failure() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), noise(100 << 10, 5)).unwrap();
    let identity = env.path("identity");
    let identity_secret = add_identity(&env, &identity);
    // A key that is not one of this repository's: another repository's.
    let stranger = env.path("stranger");
    let stranger_secret = add_identity(&Env::new(), &stranger);
    let wrong_pass = "CANARY-WRONG-PASSPHRASE-9c41";
    let s3_canary = "CANARY-S3-SECRET-7e0b22";
    let canaries = [
        PASSPHRASE,
        identity_secret.as_str(),
        stranger_secret.as_str(),
        wrong_pass,
        s3_canary,
    ];
    let id = json_line(&env.ok(&format!("bk-put --from '{}'", src.display())))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let runs = [
        // success, with each kind of key
        format!("bk-ls && bk-ls {id} && bk-verify && bk-repo key list"),
        format!("BK_PASSWORD=\"$(cat $BK_PASSWORD_FILE)\" BK_PASSWORD_FILE= bk-ls {id}"),
        format!("BK_PASSWORD_FILE= BK_IDENTITY_FILE='{}' bk-get {id} --into '{}'", identity.display(), env.path("out").display()),
        // wrong keys
        format!("BK_PASSWORD_FILE= BK_PASSWORD={wrong_pass} bk-ls"),
        format!("echo {wrong_pass} > wrongpw; BK_PASSWORD_FILE=wrongpw bk-verify"),
        format!("BK_PASSWORD_FILE= BK_IDENTITY_FILE='{}' bk-put --from '{}'", stranger.display(), src.display()),
        format!("BK_PASSWORD_FILE= BK_IDENTITY_FILE='{}' bk-sqlite ls", stranger.display()),
        // an unreachable endpoint, and (S3 mode) a refused signature
        format!("BK_S3_MAX_ATTEMPTS=1 AWS_ACCESS_KEY_ID=canary AWS_SECRET_ACCESS_KEY={s3_canary} AWS_ENDPOINT_URL=http://127.0.0.1:9 BK_REPO=s3://bucket/p bk-ls"),
        format!("BK_S3_MAX_ATTEMPTS=1 AWS_SECRET_ACCESS_KEY={s3_canary} bk-ls"),
        format!("BK_S3_MAX_ATTEMPTS=1 AWS_SECRET_ACCESS_KEY={s3_canary} bk-prune --keep-last 1 --dry-run"),
        format!("BK_PASSWORD_FILE= BK_PASSWORD={wrong_pass} bk-wal --stanza main fetch 000000010000000000000001 x"),
    ];
    let mut failures = 0;
    for script in &runs {
        let out = env.run(script);
        failures += usize::from(!out.status.success());
        for c in &canaries {
            for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                assert!(
                    !String::from_utf8_lossy(stream).contains(c),
                    "`{script}` printed a secret on {name}: {}",
                    text(&out)
                );
            }
        }
    }
    assert!(
        failures >= 6,
        "only {failures} of the runs failed: the failure paths were not taken"
    );
}

/// Issue 32, item 5: two processes racing for the prune lock never both
/// get it (both may back off), 1,000 times over (5,000 in the long mode).
#[test]
fn the_prune_lock_never_has_two_holders_in_1000_races() {
    use bk::locks::{LockGuard, LockMode};
    let env = Env::new();
    let backend = open_backend(&env);
    let repo = open_repo(backend.clone());
    let trials = if long_mode() { 5000 } else { 1000 };
    let (mut one, mut none) = (0, 0);
    for trial in 0..trials {
        let barrier = std::sync::Barrier::new(2);
        let got: Vec<_> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (backend, barrier, keys) = (backend.clone(), &barrier, repo.keys());
                    s.spawn(move || {
                        barrier.wait();
                        LockGuard::acquire(backend, keys, LockMode::Prune, "race")
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        let holders = got.iter().filter(|g| g.is_ok()).count();
        assert!(holders <= 1, "trial {trial}: two holders of the prune lock");
        for g in &got {
            if let Err(e) = g {
                assert!(matches!(e, bk::Error::Locked { .. }), "trial {trial}: {e}");
                assert_eq!(e.exit_code() as i32, 11);
            }
        }
        if holders == 1 {
            one += 1;
        } else {
            none += 1;
        }
        drop(got);
    }
    assert!(one > 0, "no trial had a holder");
    eprintln!(
        "torture: {trials} prune-lock races: {one} with one holder, {none} where both backed off"
    );
}

/// Issue 32, item 5: a prune lock whose holder stopped refreshing it (a
/// SIGSTOPped bk-prune, lock timing shortened) is taken over with a
/// warning that names the holder; a live one is a conflict, exit 11, that
/// says who holds it; `bk-repo unlock` removes only stale locks.
#[test]
fn a_stale_prune_lock_is_taken_over_with_a_warning_and_a_live_one_is_a_conflict() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::Duration;
    let env = Env::new();
    let scale = "300"; // stale after 6 s
    let holder = env
        .tool("bk-prune")
        .args(["--keep-last", "1", "--grace", "0"])
        .env("BK_TEST_LOCK_SCALE", scale)
        .env("BK_TEST_FAULT", "list:snapshot:1:after:stall")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(holder.id() as i32);
    let prune = || {
        env.tool("bk-prune")
            .args(["--keep-last", "1"])
            .env("BK_TEST_LOCK_SCALE", scale)
            .output()
            .unwrap()
    };
    std::thread::sleep(Duration::from_millis(500));
    // Live: a conflict naming the holder.
    let out = prune();
    assert_eq!(out.status.code(), Some(11), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prune lock by bk-prune") && err.contains(&format!("pid {}", holder.id())),
        "{err}"
    );
    // `bk-repo unlock` leaves a live lock alone.
    env.ok("bk-repo unlock");
    assert_eq!(objects(&env, "locks"), 1);
    kill(pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(8));
    let out = prune();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("taking over a stale lock") && err.contains(&format!("pid {}", holder.id())),
        "{err}"
    );
    // The stopped holder, resumed, finds its lock lost and stops (exit 11)
    // or finishes having deleted nothing it should not: either way the
    // repository verifies.
    kill(pid, Signal::SIGCONT).unwrap();
    let out = holder.wait_with_output().unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(11)),
        "{}",
        text(&out)
    );
    assert_verifies(&env, false, "a stale prune lock taken over");
}

/// Issue 32, item 4, for WAL: a bk-wal push stopped (SIGSTOP) half-way for
/// longer than any lock lives, while prunes and an expiry run, either
/// finishes with its segment whole and fetchable or fails cleanly.
#[test]
fn a_wal_push_suspended_while_prune_and_expiry_run_stores_its_segment_whole_or_nothing() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::time::Duration;
    let env = Env::new();
    let scale = "300";
    let dir = env.path("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let (first, first_bytes) = wal_segment(1);
    std::fs::write(dir.join(&first), &first_bytes).unwrap();
    env.ok(&format!(
        "bk-wal --stanza s push '{}'",
        dir.join(&first).display()
    ));
    let (name, bytes) = wal_segment(2);
    std::fs::write(dir.join(&name), &bytes).unwrap();
    let push = env
        .tool("bk-wal")
        .args(["--stanza", "s", "push"])
        .arg(dir.join(&name))
        .env("BK_TEST_LOCK_SCALE", scale)
        .env("BK_TEST_FAULT", "put:wal:1:before:stall")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let pid = Pid::from_raw(push.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    std::thread::sleep(Duration::from_secs(7));
    for cmd in [
        "bk-prune --keep-last 1 --grace 0",
        "bk-prune --keep-last 1 --grace 0",
        "bk-wal --stanza s expire --keep-last 1 --grace 0s",
    ] {
        let out = env
            .sh(cmd)
            .env("BK_TEST_LOCK_SCALE", scale)
            .output()
            .unwrap();
        // No base backup yet: expiry has nothing to do, or says so.
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "{cmd}: {}",
            text(&out)
        );
    }
    kill(pid, Signal::SIGCONT).unwrap();
    let out = push.wait_with_output().unwrap();
    let dest = env.path("fetched");
    let fetch = env.run(&format!(
        "bk-wal --stanza s fetch --retry-secs 0 {name} '{}'",
        dest.display()
    ));
    if out.status.success() {
        assert!(fetch.status.success(), "{}", text(&fetch));
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    } else {
        assert_eq!(
            fetch.status.code(),
            Some(1),
            "a failed push left something: {}",
            text(&fetch)
        );
    }
    let dest = env.path("first");
    env.ok(&format!(
        "bk-wal --stanza s fetch {first} '{}'",
        dest.display()
    ));
    assert_eq!(std::fs::read(&dest).unwrap(), first_bytes);
    assert_verifies(&env, true, "a suspended WAL push");
}
