//! Repository administration, keys, errors and exit codes.

use crate::common::*;

#[test]
fn init_prints_one_line_and_refuses_to_overwrite() {
    let env = Env::bare();
    let info = json_line(&env.ok("bk-repo init"));
    assert_eq!(info["type"], "repository");
    assert_eq!(info["cipher"], "aes-256-gcm");
    assert!(info["id"].as_str().unwrap().len() == 32);
    let err = env.fails("bk-repo init", 2);
    assert!(err.contains("already exists"), "{err}");
    // The passphrase never appears in output or errors.
    let secret = std::fs::read_to_string(&env.pw).unwrap();
    assert!(!err.contains(secret.trim()));
}

#[test]
fn exit_codes_for_missing_repository_wrong_passphrase_and_usage() {
    let env = Env::new();
    let err = env.fails("bk-ls -r ./nothing-here", 10);
    assert!(err.contains("no bk repository at"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    std::fs::write(env.path("wrong"), "not the passphrase\n").unwrap();
    let err = env.fails("bk-ls --password-file wrong", 12);
    assert!(err.contains("wrong passphrase"), "{err}");
    assert!(!err.contains("not the passphrase"));
    // The wrong passphrase must never be reported as a missing repository.
    assert!(!err.contains("no bk repository"));
    env.fails("BK_PASSWORD='also wrong' BK_PASSWORD_FILE= bk-ls", 12);
    env.fails("bk-ls --no-such-flag", 2);
    env.fails("bk-put --tag novalue < /dev/null", 2);
    env.fails("bk-put --time yesterday < /dev/null", 2);
    env.fails("BK_REPO= bk-ls", 2);
    env.fails("bk-ls -r s3x://bucket", 2);
    // No TTY and no secret: a usage error naming the ways to give one.
    let err = env.fails(
        "BK_PASSWORD_FILE= bk-ls 2>&1 >/dev/null </dev/null | cat >&2; exit ${PIPESTATUS[0]}",
        2,
    );
    assert!(err.contains("--password-file"), "{err}");
    env.fails("bk-ls nonexistentsnapshot", 2);
}

#[test]
fn keys_add_list_remove_and_identity_fast_path() {
    let env = Env::new();
    std::fs::write(env.path("pw2"), "second passphrase\n").unwrap();
    let added = json_line(&env.ok("bk-repo key add --new-password-file pw2 --label ops"));
    let second = added["id"].as_str().unwrap().to_string();
    env.ok("bk-ls --password-file pw2");
    let gen = json_line(&env.ok("bk-repo key add --generate-identity id.txt --label cron"));
    assert_eq!(gen["added"], true);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(env.path("id.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // The identity opens the repository without any passphrase.
    env.ok("BK_PASSWORD_FILE= bk-ls --identity-file id.txt");
    let keys = json_lines(&env.ok("bk-repo key list"));
    assert_eq!(keys.len(), 3);
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1);
    assert!(keys
        .iter()
        .any(|k| k["kind"] == "age" && k["label"] == "cron"));
    env.ok(&format!("bk-repo key remove {}", &second[..8]));
    env.fails("bk-ls --password-file pw2", 12);
    // An identity that belongs to another repository is a wrong key.
    let env2 = Env::new();
    env2.ok("bk-repo key add --generate-identity foreign.txt");
    let foreign = env2.path("foreign.txt");
    let err = env.fails(
        &format!(
            "BK_PASSWORD_FILE= bk-ls --identity-file '{}'",
            foreign.display()
        ),
        12,
    );
    assert!(err.contains("wrong passphrase or identity"), "{err}");
    // Removing the last key is refused.
    let env2 = Env::new();
    let k = json_line(&env2.ok("bk-repo key list"));
    let err = env2.fails(
        &format!("bk-repo key remove {}", k["id"].as_str().unwrap()),
        2,
    );
    assert!(err.contains("last key"), "{err}");
}

#[test]
fn lock_conflict_and_stale_lock_cleanup() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    // Hold an exclusive lock from this (live) process through the library.
    let backend = open_backend(&env);
    let repo = open_repo(backend.clone());
    let guard =
        bk::locks::LockGuard::acquire(backend, repo.keys(), bk::locks::LockMode::Exclusive, "test")
            .unwrap();
    let err = env.fails(&format!("bk-chunk '{}' | bk-put", src.display()), 11);
    assert!(err.contains("exclusive lock by test"), "{err}");
    let locks = json_lines(&env.ok("bk-repo locks"));
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0]["stale"], false);
    // unlock without --all leaves a live lock alone.
    assert!(env.ok("bk-repo unlock").trim().is_empty());
    drop(guard);
    env.backup(&src, "");
    assert!(json_lines(&env.ok("bk-repo locks")).is_empty());
}

#[test]
fn corrupt_or_missing_objects_are_named() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("data"), noise(2 << 20, 5)).unwrap();
    env.backup(&src, "");
    let packs = walk_files(&env.repo.join("data"));
    // Flip a byte in every pack: restore fails with an integrity error naming a pack.
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        b[100] ^= 1;
        std::fs::write(p, b).unwrap();
    }
    let err = env.fails("bk-get latest data > /dev/null", 13);
    assert!(err.contains("pack "), "{err}");
    let out = env.path("out");
    let err = env.fails(&format!("bk-get latest --into '{}'", out.display()), 13);
    assert!(err.contains("integrity error"), "{err}");
    assert!(
        !out.join("data").exists(),
        "a damaged file must not appear at its final path"
    );
    // A damaged snapshot object is named.
    let snap = walk_files(&env.repo.join("snapshots")).pop().unwrap();
    let mut b = std::fs::read(&snap).unwrap();
    b[20] ^= 1;
    std::fs::write(&snap, b).unwrap();
    let err = env.fails("bk-ls", 13);
    assert!(
        err.contains(&format!(
            "snapshots/{}",
            snap.file_name().unwrap().to_string_lossy()
        )),
        "{err}"
    );
    // A damaged config says so (not "wrong passphrase").
    let cfg = env.repo.join("config");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("\\\"compression\\\":3", "\\\"compression\\\":4");
    std::fs::write(&cfg, text).unwrap();
    let err = env.fails("bk-ls", 13);
    assert!(err.contains("config"), "{err}");
}

#[test]
fn stats_report_index_memory_per_chunk() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..2000 {
        std::fs::write(src.join(format!("f{i}")), noise(1000, i)).unwrap();
    }
    env.backup(&src, "");
    let stats = json_line(&env.ok("bk-repo stats"));
    assert!(stats["chunks"].as_u64().unwrap() >= 2000);
    let per = stats["index_bytes_per_chunk"].as_f64().unwrap();
    assert!(per < 40.0, "index uses {per} bytes per chunk");
    assert_eq!(stats["snapshots"], 1);
}

#[test]
fn broken_pipe_ends_quietly() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("file-{i:05}")), format!("{i}")).unwrap();
    }
    env.backup(&src, "");
    let out = env.run("bk-ls latest | head -n 1 >/dev/null; echo ${PIPESTATUS[0]}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    // Only the note naming the snapshot `latest` chose; no error.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .all(|l| l.starts_with("bk-ls: latest is snapshot ")),
        "{stderr}"
    );
    let out = env.run(&format!(
        "bk-chunk '{}' | head -c 100 >/dev/null; echo ${{PIPESTATUS[0]}}",
        src.display()
    ));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
