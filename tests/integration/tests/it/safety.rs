//! Incomplete or hostile input must never produce a snapshot or write
//! outside the restore target.

use crate::common::*;
use std::io::Write;
use std::process::Stdio;

fn small_tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("d/f{i}")), noise(300_000, i)).unwrap();
    }
    src
}

#[test]
fn stream_without_trailer_commits_nothing() {
    let env = Env::new();
    let src = small_tree(&env);
    let stream = env.ok(&format!("bk-chunk '{}'", src.display()));
    let lines: Vec<&str> = stream.lines().collect();
    assert!(lines.last().unwrap().contains("\"type\":\"trailer\""));
    let truncated = lines[..lines.len() - 1].join("\n") + "\n";
    let cut = env.path("cut.jsonl");
    std::fs::write(&cut, truncated).unwrap();
    let err = env.fails(&format!("bk-put < '{}'", cut.display()), 1);
    assert!(err.contains("without its trailer"), "{err}");
    assert!(env.snapshots().is_empty());

    // A trailer whose counts disagree with the stream is refused too.
    let mut bad = lines[..lines.len() - 1].join("\n");
    bad.push_str("\n{\"type\":\"trailer\",\"v\":1,\"entries\":1,\"errors\":0,\"bytes\":0}\n");
    std::fs::write(&cut, bad).unwrap();
    let err = env.fails(&format!("bk-put < '{}'", cut.display()), 2);
    assert!(err.contains("trailer says"), "{err}");
    assert!(env.snapshots().is_empty());
}

#[test]
fn producer_killed_mid_stream_commits_nothing() {
    // No pipefail: the shell would report bk-put's status only.
    let env = Env::new();
    let src = small_tree(&env);
    let mut put = env
        .sh("bk-put")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut chunk = env
        .sh(&format!("exec bk-chunk '{}'", src.display()))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Forward part of the stream, then kill -9 the producer.
    let mut from = chunk.stdout.take().unwrap();
    let mut to = put.stdin.take().unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut forwarded = 0;
    while forwarded < 2 << 20 {
        let n = std::io::Read::read(&mut from, &mut buf).unwrap();
        assert!(n > 0);
        to.write_all(&buf[..n]).unwrap();
        forwarded += n;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(chunk.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = chunk.wait();
    drop(to);
    let out = put.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    assert!(env.snapshots().is_empty());
}

#[test]
fn corrupted_chunk_data_is_rejected() {
    let env = Env::new();
    let src = small_tree(&env);
    let stream = env.ok(&format!("bk-chunk '{}'", src.display()));
    // Change one base64 character inside a data record.
    let idx = stream.find("\"data\":\"").unwrap() + 20;
    let mut bytes = stream.into_bytes();
    bytes[idx] = if bytes[idx] == b'A' { b'B' } else { b'A' };
    let f = env.path("bad.jsonl");
    std::fs::write(&f, bytes).unwrap();
    let err = env.fails(&format!("bk-put < '{}'", f.display()), 2);
    assert!(err.contains("does not match its id"), "{err}");
    assert!(env.snapshots().is_empty());
}

#[test]
fn hostile_listing_writes_nothing_outside_the_target() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("payload"), b"evil").unwrap();
    env.backup(&src, "");
    let listing = env.ok("bk-ls latest");
    let payload = json_lines(&listing)
        .into_iter()
        .find(|v| v["path"] == "payload")
        .unwrap();
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    let mk = |path: &str| {
        let mut e = payload.clone();
        e["path"] = path.into();
        e.to_string()
    };
    let mut link = payload.clone();
    link["path"] = "escape".into();
    link["kind"] = "symlink".into();
    link["target"] = outside.display().to_string().into();
    link.as_object_mut().unwrap().remove("chunks");
    let hostile = [
        mk("../outside/dotdot"),
        mk(&format!("{}/absolute", outside.display())),
        mk("a/../../outside/mid"),
        link.to_string(),
        mk("escape/through-link"),
    ]
    .join("\n");
    let f = env.path("hostile.jsonl");
    std::fs::write(&f, hostile + "\n").unwrap();
    let target = env.path("target");
    let out = env.run(&format!(
        "bk-get - --into '{}' < '{}'",
        target.display(),
        f.display()
    ));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "something was written outside --into"
    );
    // The file through the symlink path was written inside the target as a
    // real directory; the symlink was then refused.
    assert!(std::fs::symlink_metadata(target.join("escape"))
        .unwrap()
        .is_dir());

    // bk-put refuses such listings as well.
    let err = env.fails(
        &format!(
            "(cat '{}'; echo '{{\"type\":\"trailer\",\"v\":1,\"entries\":5}}') | bk-put",
            f.display()
        ),
        2,
    );
    assert!(err.contains("unsafe path"), "{err}");

    // A symlink already inside the target is never followed.
    let t2 = env.path("t2");
    std::fs::create_dir(&t2).unwrap();
    std::os::unix::fs::symlink(&outside, t2.join("pre")).unwrap();
    let f2 = env.path("pre.jsonl");
    std::fs::write(&f2, mk("pre/file") + "\n").unwrap();
    env.fails(
        &format!("bk-get - --into '{}' < '{}'", t2.display(), f2.display()),
        3,
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn unreadable_file_becomes_an_error_record_and_partial_exit() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok"), b"fine").unwrap();
    std::fs::write(src.join("secret"), b"no access").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    // Root reads everything: drop privileges for bk-chunk when we are root.
    let as_nobody = if nix::unistd::geteuid().is_root() {
        for p in [env.dir.path(), &src] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // bk-chunk reads the repository's chunker key: let the other user
        // into the (private) repository.
        env.ok(&format!("chmod -R go+rX '{}'", env.repo.display()));
        "setpriv --reuid=65534 --regid=65534 --clear-groups "
    } else {
        ""
    };
    let out = env.run(&format!("{as_nobody}bk-chunk '{}' | bk-put", src.display()));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snap = json_line(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(snap["errors"], 1);
    let listing = json_lines(&env.ok("bk-ls latest"));
    assert!(listing
        .iter()
        .any(|r| r["type"] == "error" && r["path"] == "secret"));
    assert!(listing
        .iter()
        .any(|r| r["type"] == "entry" && r["path"] == "ok"));
    assert!(!listing
        .iter()
        .any(|r| r["type"] == "entry" && r["path"] == "secret"));
}

#[test]
fn interrupted_put_commits_nothing_and_exits_130() {
    let env = Env::new();
    let src = small_tree(&env);
    let stream = env.ok(&format!("bk-chunk '{}'", src.display()));
    let mut put = env
        .sh("exec bk-put")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = put.stdin.take().unwrap();
    let lines: Vec<&str> = stream.lines().collect();
    for l in &lines[..lines.len() / 2] {
        writeln!(stdin, "{l}").unwrap();
    }
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(put.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    for l in &lines[lines.len() / 2..] {
        if writeln!(stdin, "{l}").is_err() {
            break;
        }
    }
    drop(stdin);
    let out = put.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(env.snapshots().is_empty());
    // The lock was released.
    assert_eq!(
        std::fs::read_dir(env.repo.join("locks")).unwrap().count(),
        0
    );
}
