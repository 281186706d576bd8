//! What a user coming from restic or Borg expects of the everyday
//! commands (issue 33): one identity per source however it is spelled,
//! no `latest` that picks another application's data, absolute paths,
//! errors that say what is wrong, no silent wait on a terminal, restic
//! 0.17's retention rule, and a private repository.

use crate::common::{json_line, json_lines, last_progress, noise, s3_mode, Env};
use std::os::unix::fs::PermissionsExt;

/// A small tree: `a.txt` and `sub/b.txt`.
fn tree(env: &Env, name: &str) -> std::path::PathBuf {
    let dir = env.path(name);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.txt"), format!("{name} a\n")).unwrap();
    std::fs::write(dir.join("sub/b.txt"), format!("{name} b\n")).unwrap();
    dir
}

#[test]
fn a_trailing_slash_or_dot_keeps_one_identity_and_finds_the_parent() {
    let env = Env::new();
    let src = tree(&env, "data");
    let first = json_line(&env.ok(&format!("bk-put --from '{}/'", src.display())));
    for spelling in [
        format!("{}", src.display()),
        format!("{}/./", src.display()),
    ] {
        let again = json_line(&env.ok(&format!("bk-put --from '{spelling}'")));
        assert_eq!(again["identity"], first["identity"], "{spelling}");
        // The parent was found: neither file was read again.
        assert_eq!(again["unmodified_files"], 2, "{spelling}: {again}");
    }
    assert!(
        !first["identity"].as_str().unwrap().ends_with('/'),
        "{}",
        first["identity"]
    );
    // A typed --identity with a trailing slash names the same snapshots.
    let id = first["identity"].as_str().unwrap();
    let listed = json_lines(&env.ok(&format!("bk-ls --identity '{id}/'")));
    assert_eq!(listed.len(), 3);
}

#[test]
fn latest_is_refused_in_a_shared_repository_unless_an_identity_says_whose() {
    let env = Env::new();
    let app1 = tree(&env, "app1");
    let app2 = tree(&env, "app2");
    let s1 = json_line(&env.ok(&format!("bk-put --from '{}'", app1.display())));
    let s2 = json_line(&env.ok(&format!("bk-put --from '{}'", app2.display())));
    let into = env.path("restore");
    let err = env.fails(&format!("bk-get latest --into '{}'", into.display()), 2);
    assert!(err.contains("\"latest\" is ambiguous"), "{err}");
    assert!(err.contains(s1["identity"].as_str().unwrap()), "{err}");
    assert!(err.contains(s2["identity"].as_str().unwrap()), "{err}");
    assert!(!into.exists(), "nothing may be restored");
    env.fails("bk-ls latest", 2);

    // With the identity, the tool says on stderr which snapshot it took.
    let id1 = s1["identity"].as_str().unwrap();
    let out = env.run(&format!(
        "bk-get latest --identity '{id1}' --into '{}'",
        into.display()
    ));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let short = &s1["id"].as_str().unwrap()[..8];
    assert!(
        stderr.contains(&format!("latest is snapshot {short} of {id1}")),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(into.join("a.txt")).unwrap(),
        b"app1 a\n",
        "app1's data, not app2's (which backed up last)"
    );
    // An id prefix is resolved and named too.
    let out = env.run(&format!("bk-ls {short} a.txt"));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{short} is snapshot {short}")));

    // bk-verify --against DIR latest takes DIR's own identity; a restore
    // directory has none of its own, and the hint names what bk-verify
    // takes (it has no --identity).
    env.ok(&format!("bk-verify --against '{}' latest", app1.display()));
    let err = env.fails(
        &format!("bk-verify --against '{}' latest", into.display()),
        2,
    );
    assert!(err.contains("\"latest\" is ambiguous"), "{err}");
    assert!(err.contains("name the snapshot by id or prefix"), "{err}");
    assert!(!err.contains("--identity"), "{err}");
}

#[test]
fn an_absolute_path_under_the_source_is_accepted_and_a_directory_needs_into() {
    let env = Env::new();
    let src = tree(&env, "srv");
    env.ok(&format!("bk-put --from '{}'", src.display()));
    let abs = src.join("sub/b.txt");
    assert_eq!(
        env.ok(&format!("bk-get latest '{}'", abs.display())),
        "srv b\n"
    );
    let listed = json_lines(&env.ok(&format!("bk-ls latest '{}'", src.join("sub").display())));
    let paths: Vec<&str> = listed.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!(paths, ["sub", "sub/b.txt"]);

    let err = env.fails("bk-get latest /etc/hostname", 2);
    assert!(err.contains("is not under the snapshot's source"), "{err}");
    assert!(err.contains("hint:") && err.contains("type a/b"), "{err}");

    // `bk-get latest DIR`, as cp would be typed: say to use --into.
    let dest = env.path("dest");
    std::fs::create_dir(&dest).unwrap();
    let err = env.fails(&format!("bk-get latest '{}'", dest.display()), 2);
    assert!(err.contains(&format!("--into {}", dest.display())), "{err}");
    let err = env.fails("bk-get latest sub", 2);
    assert!(
        err.contains("is a directory in the snapshot") && err.contains("--into DIR sub"),
        "{err}"
    );
}

#[test]
fn misleading_errors_name_what_is_wrong_with_the_right_code() {
    let env = Env::bare();
    let file = env.path("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    if s3_mode().is_none() {
        // A repository path that is a regular file: 10, not a raw errno.
        let err = env.fails(&format!("bk-ls -r '{}'", file.display()), 10);
        assert!(err.contains("no bk repository at"), "{err}");
        // init on it: a usage error that says why.
        let err = env.fails(&format!("bk-repo init -r '{}'", file.display()), 2);
        assert!(err.contains("exists and is not a directory"), "{err}");
        assert!(!err.contains("os error"), "{err}");
    }
    env.ok("bk-repo init");
    let err = env.fails("bk-repo init", 2);
    assert!(
        err.contains("already exists") && err.contains("hint:"),
        "{err}"
    );

    // A missing password file is named as the password file.
    let err = env.fails("BK_PASSWORD_FILE=/nonexistent/pw bk-ls", 2);
    assert!(
        err.contains("cannot read the password file /nonexistent/pw"),
        "{err}"
    );
    assert!(err.contains("BK_PASSWORD_FILE"), "{err}");

    // A --password-file flag beats an exported BK_IDENTITY_FILE (the
    // other repository of a copy pipeline).
    let key = env.path("unrelated.key");
    std::fs::write(
        &key,
        "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQSQ9SHE\n",
    )
    .unwrap();
    env.ok(&format!(
        "unset BK_PASSWORD_FILE; BK_IDENTITY_FILE='{}' bk-ls --password-file '{}'",
        key.display(),
        env.pw.display()
    ));

    // A listing from another repository is not "damaged data".
    let other = Env::new();
    let src = tree(&other, "elsewhere");
    other.ok(&format!("bk-put --from '{}'", src.display()));
    let listing = other.path("listing.jsonl");
    std::fs::write(&listing, other.ok("bk-ls latest")).unwrap();
    let into = env.path("r");
    let err = env.fails(
        &format!(
            "bk-get - --into '{}' < '{}'",
            into.display(),
            listing.display()
        ),
        2,
    );
    assert!(err.contains("comes from another repository"), "{err}");
    assert!(!err.contains("integrity"), "{err}");
    assert!(!into.exists(), "nothing may be written");

    // An unreadable file: one warning, with the tool's prefix. Root reads
    // everything, so a root run drops to nobody with the repository (and
    // the passphrase) opened up to it.
    let src = tree(&env, "mixed");
    let secret = src.join("secret");
    std::fs::write(&secret, b"s").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o000)).unwrap();
    let as_nobody = if nix::unistd::geteuid().is_root() {
        for p in [env.dir.path(), &src, &env.pw] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        env.ok(&format!("chmod -R a+rwX '{}'", env.repo.display()));
        "setpriv --reuid=65534 --regid=65534 --clear-groups "
    } else {
        ""
    };
    let err = env.fails(&format!("{as_nobody}bk-put --from '{}'", src.display()), 3);
    assert_eq!(err.matches("secret").count(), 1, "{err}");
    assert!(err.starts_with("bk-put: warning: secret:"), "{err}");
}

#[test]
fn a_terminal_on_stdin_is_refused_instead_of_waited_on() {
    let env = Env::new();
    // script(1) gives the command a pseudo-terminal as stdin.
    for (cmd, what) in [
        ("bk-put", "a chunk stream"),
        ("bk-prune --plan --keep-last 1", "snapshot records"),
        ("bk-get - --into r", "listing entries"),
        ("bk-put --from - --name x", "the bytes to back up"),
    ] {
        let out = env
            .sh(&format!(
                "timeout 20 script -qec '{cmd}' /dev/null < /dev/null; echo \"exit=$?\""
            ))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("expected {what}")), "{cmd}: {text}");
        assert!(
            text.contains("on stdin, which is a terminal"),
            "{cmd}: {text}"
        );
        assert!(text.contains("hint:"), "{cmd}: {text}");
        assert!(text.contains("exit=2"), "{cmd}: {text}");
    }
}

#[test]
fn retention_keeps_the_oldest_while_counts_are_left_as_restic_0_17_does() {
    let env = Env::new();
    // Three months of nightly snapshot records, through --plan.
    let mut records = String::new();
    for (n, day) in [
        "2026-01-01",
        "2026-01-20",
        "2026-02-14",
        "2026-03-02",
        "2026-03-30",
    ]
    .iter()
    .enumerate()
    {
        records.push_str(&format!(
            "{{\"type\":\"snapshot\",\"v\":1,\"id\":\"{:064x}\",\"time\":\"{day}T03:00:00Z\",\
             \"identity\":\"u@h:/data\",\"tags\":{{}},\"source\":\"/data\",\"files\":1,\"dirs\":1,\
             \"entries\":2,\"bytes\":1,\"errors\":0}}\n",
            n + 1
        ));
    }
    let input = env.path("snaps.jsonl");
    std::fs::write(&input, records).unwrap();
    let decisions = json_lines(&env.ok(&format!(
        "bk-prune --plan --keep-monthly 12 < '{}'",
        input.display()
    )));
    let kept: Vec<(String, Vec<String>)> = decisions
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| {
            (
                d["time"].as_str().unwrap()[..10].to_string(),
                serde_json::from_value(d["reasons"].clone()).unwrap(),
            )
        })
        .collect();
    let want = |t: &str, r: &str| (t.to_string(), vec![r.to_string()]);
    assert_eq!(
        kept,
        [
            want("2026-03-30", "monthly"),
            want("2026-02-14", "monthly"),
            want("2026-01-20", "monthly"),
            want("2026-01-01", "oldest monthly"),
        ]
    );
}

#[test]
fn human_feedback_after_init_unlock_prune_and_key_removal() {
    let env = Env::bare();
    let out = env.run("bk-repo init");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bk-repo: created repository"), "{stderr}");
    assert!(
        stderr.contains("cannot be recovered if every key"),
        "{stderr}"
    );
    json_line(&String::from_utf8_lossy(&out.stdout));

    // The first prune with the default grace frees nothing: it says when.
    let src = tree(&env, "p");
    env.ok(&format!("bk-put --from '{}'", src.display()));
    std::fs::write(src.join("a.txt"), b"changed\n").unwrap();
    env.ok(&format!("bk-put --from '{}'", src.display()));
    let out = env.run("bk-prune --keep-last 1 --max-unused 0%");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("marked for deletion") && stderr.contains("--grace 1h"),
        "{stderr}"
    );

    // unlock says what it did.
    let err = String::from_utf8(env.run("bk-repo unlock").stderr).unwrap();
    assert!(err.contains("bk-repo: no lock removed"), "{err}");

    // Removing the key this command is unlocked with needs --force.
    let mine = json_lines(&env.ok("bk-repo key list"))
        .into_iter()
        .find(|k| k["current"] == true)
        .expect("the current key is marked");
    let second = env.path("pw2");
    std::fs::write(&second, "another passphrase\n").unwrap();
    env.ok(&format!(
        "bk-repo key add --new-password-file '{}'",
        second.display()
    ));
    let id = mine["id"].as_str().unwrap();
    let err = env.fails(&format!("bk-repo key remove {id}"), 2);
    assert!(
        err.contains("unlocked with") && err.contains("--force"),
        "{err}"
    );
    env.ok(&format!(
        "BK_PASSWORD_FILE='{}' bk-repo key remove {id}",
        second.display()
    ));
}

#[test]
fn a_local_repository_is_private_unless_its_config_is_shared() {
    if s3_mode().is_some() {
        return; // modes are a local storage matter
    }
    let env = Env::new();
    let src = tree(&env, "priv");
    env.ok(&format!("bk-put --from '{}'", src.display()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.repo), 0o700);
    for dir in ["data", "data/00", "keys", "snapshots", "index", "locks"] {
        assert_eq!(mode(&env.repo.join(dir)), 0o700, "{dir}");
    }
    let mut files = crate::common::walk_files(&env.repo);
    assert!(files.len() > 4);
    for f in &files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    // Shared on purpose (restic's rule): a group-readable config makes
    // what is written from then on group-readable.
    std::fs::set_permissions(
        env.repo.join("config"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(src.join("new.txt"), b"new\n").unwrap();
    let snap = json_line(&env.ok(&format!("bk-put --from '{}'", src.display())));
    let id = snap["id"].as_str().unwrap();
    assert_eq!(mode(&env.repo.join("snapshots").join(id)), 0o640);
    files = crate::common::walk_files(&env.repo.join("keys"));
    assert!(
        files.iter().all(|f| mode(f) == 0o600),
        "earlier files are left as they were"
    );
}

/// A tree with something for every exclusion rule.
fn tree_to_exclude(env: &Env) -> std::path::PathBuf {
    let src = env.path("ex");
    for d in [
        "node_modules/pkg",
        "cache",
        "tagged",
        "src/build",
        "Logs",
        "abs/skip",
    ] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    let files: &[(&str, &[u8])] = &[
        ("a.tmp", b"t"),
        ("keep.tmp", b"kept by !"),
        ("node_modules/pkg/index.js", b"js"),
        (
            "cache/CACHEDIR.TAG",
            b"Signature: 8a477f597d28d172789f06886806bc55\n",
        ),
        ("cache/blob", b"cached"),
        ("tagged/.nobackup", b""),
        ("tagged/inside", b"i"),
        ("src/main.rs", b"fn main() {}"),
        ("src/build/out.o", b"o"),
        ("Logs/app.LOG", b"log"),
        ("abs/skip/x", b"x"),
        ("abs/keep", b"k"),
    ];
    for (p, c) in files {
        std::fs::write(src.join(p), c).unwrap();
    }
    std::fs::write(src.join("big.bin"), vec![7u8; 3000]).unwrap();
    src
}

fn entry_paths(listing: &str) -> Vec<String> {
    json_lines(listing)
        .iter()
        .filter(|r| r["type"] == "entry")
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn exclusion_rules_leave_out_what_restic_would_in_put_chunk_and_verify() {
    let env = Env::new();
    let src = tree_to_exclude(&env);
    let patterns = env.path("patterns");
    std::fs::write(&patterns, "# build output\nsrc/build/\n").unwrap();
    let rules = format!(
        "--exclude '*.tmp' --exclude '!keep.tmp' --exclude node_modules/ \
         --exclude '{}/abs/skip' --exclude-file '{}' --iexclude '*.log' \
         --exclude-caches --exclude-if-present .nobackup --exclude-larger-than 2K",
        src.display(),
        patterns.display()
    );
    let snap = json_line(&env.ok(&format!("bk-put --from '{}' {rules}", src.display())));
    let listed = entry_paths(&env.ok("bk-ls latest"));
    assert_eq!(
        listed,
        [
            ".",
            "Logs",
            "abs",
            "abs/keep",
            "cache",
            "keep.tmp",
            "src",
            "src/main.rs",
            "tagged"
        ],
        "tagged directories are kept empty, as restic keeps them"
    );
    // a.tmp, node_modules, abs/skip, src/build, Logs/app.LOG, big.bin.
    assert_eq!(snap["excluded"], 6, "{snap}");

    // The pipeline with the same rules stores the same listing.
    let piped = json_line(&env.ok(&format!(
        "bk-chunk '{}' {rules} | bk-put --identity u@h:/piped",
        src.display()
    )));
    assert_eq!(piped["excluded"], 6);
    assert_eq!(
        entry_paths(&env.ok("bk-ls latest --identity u@h:/piped")),
        listed
    );

    // A drill with the same rules finds nothing missing; without them it
    // reports the excluded files as extra.
    let id = snap["identity"].as_str().unwrap();
    env.ok(&format!(
        "bk-verify --against '{}' latest {rules}",
        src.display()
    ));
    let out = env.run(&format!("bk-verify --against '{}' latest", src.display()));
    assert_eq!(out.status.code(), Some(13), "{id}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("extra"));

    // A stream filtered with jq is refused, and says what to do instead.
    let err = env.fails(
        &format!(
            "bk-chunk '{}' | jq -c 'select(.path != \"a.tmp\")' | bk-put --identity u@h:/jq",
            src.display()
        ),
        2,
    );
    assert!(err.contains("--exclude rules instead"), "{err}");
    // Rules where they cannot apply are refused.
    let err = env.fails("printf x | bk-put --from - --name x --exclude '*.tmp'", 2);
    assert!(err.contains("exclusion rules apply to a tree"), "{err}");
}

#[test]
fn several_sources_and_files_from_make_one_snapshot() {
    let env = Env::new();
    let a = tree(&env, "etc/app");
    let b = tree(&env, "home/me");
    tree(&env, "home/other");
    let snap = json_line(&env.ok(&format!(
        "bk-put --from '{}' --from '{}/'",
        a.display(),
        b.display()
    )));
    let identity = snap["identity"].as_str().unwrap();
    assert!(
        identity.ends_with(&format!(":{},{}", a.display(), b.display())),
        "{identity}"
    );
    let listed = entry_paths(&env.ok(&format!("bk-ls latest --identity '{identity}'")));
    assert_eq!(
        listed,
        [
            ".",
            "etc",
            "etc/app",
            "etc/app/a.txt",
            "etc/app/sub",
            "etc/app/sub/b.txt",
            "home",
            "home/me",
            "home/me/a.txt",
            "home/me/sub",
            "home/me/sub/b.txt"
        ],
        "home/other is not a source"
    );
    // Again, unchanged, the sources in another order and one spelled
    // with `..`: the same identity, so nothing is read.
    let again = json_line(&env.ok(&format!(
        "bk-put --from '{}/../me' --from '{}'",
        b.display(),
        a.display()
    )));
    assert_eq!(again["identity"], snap["identity"]);
    assert_eq!(again["unmodified_files"], 4);

    // --files-from with NUL separators, through bk-chunk.
    let list = env.path("list0");
    std::fs::write(
        &list,
        format!(
            "{}\0{}\0",
            a.join("a.txt").display(),
            b.join("sub").display()
        ),
    )
    .unwrap();
    let out = env.ok(&format!("bk-chunk --files-from '{}' -0", list.display()));
    assert_eq!(
        entry_paths(&out),
        [
            ".",
            "etc",
            "etc/app",
            "etc/app/a.txt",
            "home",
            "home/me",
            "home/me/sub",
            "home/me/sub/b.txt"
        ]
    );
    // A restore puts both back under the common directory.
    let into = env.path("restored");
    env.ok(&format!(
        "bk-get latest --identity '{identity}' --into '{}'",
        into.display()
    ));
    assert_eq!(
        std::fs::read(into.join("home/me/sub/b.txt")).unwrap(),
        b"home/me b\n"
    );
}

#[test]
fn one_file_system_keeps_a_mount_point_empty() {
    let env = Env::new();
    let src = tree(&env, "fs");
    let mnt = src.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("one_file_system_keeps_a_mount_point_empty: cannot mount a tmpfs here; skipped");
        return;
    }
    std::fs::write(mnt.join("other-fs"), b"x").unwrap();
    let one = entry_paths(&env.ok(&format!("bk-chunk -x '{}'", src.display())));
    let all = entry_paths(&env.ok(&format!("bk-chunk '{}'", src.display())));
    // Each source keeps to its own file system: the mount given as a
    // source of its own is taken whole.
    let both = entry_paths(&env.ok(&format!(
        "bk-chunk -x '{}' '{}'",
        mnt.display(),
        src.display()
    )));
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    assert!(both.contains(&"mnt/other-fs".to_string()), "{both:?}");
    assert!(one.contains(&"mnt".to_string()), "{one:?}");
    assert!(!one.contains(&"mnt/other-fs".to_string()), "{one:?}");
    assert!(all.contains(&"mnt/other-fs".to_string()), "{all:?}");
}

/// A POSIX access ACL in the kernel's xattr form (version 2): owner rw,
/// user 4242 r, group r, mask r, other r.
fn acl_user_4242() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 4242),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn xattrs_acls_and_capabilities_are_backed_up_restored_and_compared() {
    let env = Env::new();
    let src = tree(&env, "meta");
    let file = src.join("a.txt");
    let dir = src.join("sub");
    xattr::set(&file, "user.comment", b"hello\0binary").unwrap();
    xattr::set(&dir, "user.project", b"bk").unwrap();
    let acl = xattr::set(&file, "system.posix_acl_access", &acl_user_4242()).is_ok();
    let root = nix::unistd::geteuid().is_root();
    let cap = root
        && std::process::Command::new("setcap")
            .arg("cap_net_bind_service=+ep")
            .arg(src.join("sub/b.txt"))
            .status()
            .is_ok_and(|s| s.success());
    let read = |p: &std::path::Path, name: &str| xattr::get(p, name).unwrap();
    let before_mode = std::fs::metadata(&file).unwrap().permissions().mode();

    env.ok(&format!("bk-put --from '{}'", src.display()));
    let listing = env.ok("bk-ls latest a.txt");
    assert!(listing.contains("user.comment"), "{listing}");
    env.ok(&format!("bk-verify --against '{}' latest", src.display()));

    let into = env.path("restored");
    env.ok(&format!("bk-get latest --into '{}'", into.display()));
    assert_eq!(
        read(&into.join("a.txt"), "user.comment").unwrap(),
        b"hello\0binary"
    );
    assert_eq!(read(&into.join("sub"), "user.project").unwrap(), b"bk");
    if acl {
        assert_eq!(
            read(&into.join("a.txt"), "system.posix_acl_access").unwrap(),
            acl_user_4242()
        );
        assert_eq!(
            std::fs::metadata(into.join("a.txt"))
                .unwrap()
                .permissions()
                .mode(),
            before_mode
        );
    }
    if cap {
        let caps = |p: &std::path::Path| read(p, "security.capability");
        assert!(caps(&src.join("sub/b.txt")).is_some());
        assert_eq!(caps(&into.join("sub/b.txt")), caps(&src.join("sub/b.txt")));
    }
    eprintln!("xattrs test: acl {acl}, capability {cap}");

    // A changed attribute is a difference for a drill.
    xattr::set(&file, "user.comment", b"changed").unwrap();
    let out = env.run(&format!("bk-verify --against '{}' latest", src.display()));
    assert_eq!(out.status.code(), Some(13));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("values differ: user.comment"), "{report}");

    // A listing written before bk captured attributes still restores.
    let old = env.path("old-listing.jsonl");
    env.ok(&format!(
        "bk-ls latest | jq -c 'del(.xattrs)' > '{}'",
        old.display()
    ));
    let into_old = env.path("restored-old");
    env.ok(&format!(
        "bk-get - --into '{}' < '{}'",
        into_old.display(),
        old.display()
    ));
    assert_eq!(std::fs::read(into_old.join("a.txt")).unwrap(), b"meta a\n");
    assert!(read(&into_old.join("a.txt"), "user.comment").is_none());

    // Unchanged files take their attributes from the parent only when the
    // parent recorded them: after a backup by a producer that did not
    // (its stream stripped of them here), the next one still reads them.
    let fresh = Env::new();
    fresh.ok(&format!(
        "bk-chunk '{}' | jq -c 'del(.xattrs)' | bk-put",
        src.display()
    ));
    assert!(!fresh.ok("bk-ls latest a.txt").contains("user.comment"));
    for round in ["after an old parent", "after a parent with attributes"] {
        let snap = json_line(&fresh.ok(&format!("bk-put --from '{}'", src.display())));
        assert_eq!(snap["unmodified_files"], 2, "{round}");
        let listed = fresh.ok("bk-ls latest a.txt");
        assert!(listed.contains("user.comment"), "{round}: {listed}");
    }
}

/// The copy pipeline of bk-get(1): the destination says which chunks it
/// holds, the source streams the rest, the destination commits.
fn copy_cmd(dest: &std::path::Path, dest_pw: &std::path::Path, snapshot: &str) -> String {
    let d = format!(
        "-r '{}' --password-file '{}'",
        dest.display(),
        dest_pw.display()
    );
    format!("bk-repo {d} chunks | bk-get {snapshot} --stream --have - | bk-put {d}")
}

#[test]
fn a_snapshot_copies_to_a_second_repository_keeping_time_identity_and_tags() {
    // The environment's repository is the source (S3 in the S3 pass); a
    // local one is the destination, with its own passphrase.
    let env = Env::new();
    let dest = env.path("offsite");
    let dest_pw = env.path("offsite-pw");
    std::fs::write(&dest_pw, "another secret\n").unwrap();
    env.ok(&format!(
        "bk-repo init -r '{}' --password-file '{}'",
        dest.display(),
        dest_pw.display()
    ));
    let src = tree(&env, "copyme");
    std::fs::write(src.join("big"), vec![3u8; 3 << 20]).unwrap();
    let first = json_line(&env.ok(&format!(
        "bk-put --from '{}' --tag app=one --time 2026-01-02T03:04:05Z",
        src.display()
    )));
    let id = first["id"].as_str().unwrap();
    let out = env.run(&copy_cmd(&dest, &dest_pw, id));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = json_line(&String::from_utf8_lossy(&out.stdout));
    for field in ["identity", "time", "tags", "files", "bytes"] {
        assert_eq!(copied[field], first[field], "{field}");
    }
    assert_ne!(
        copied["id"], first["id"],
        "sealed under the destination's keys"
    );
    let d = format!(
        "-r '{}' --password-file '{}'",
        dest.display(),
        dest_pw.display()
    );
    env.ok(&format!("bk-verify {d} --read-data"));
    let into = env.path("from-offsite");
    env.ok(&format!("bk-get {d} latest --into '{}'", into.display()));
    assert!(env
        .run(&format!("diff -r '{}' '{}'", src.display(), into.display()))
        .status
        .success());

    // A later snapshot sends only what the destination lacks.
    std::fs::write(src.join("a.txt"), b"changed\n").unwrap();
    let second = json_line(&env.ok(&format!("bk-put --from '{}'", src.display())));
    let out = env.run(&copy_cmd(&dest, &dest_pw, second["id"].as_str().unwrap()));
    assert!(out.status.success());
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains(": 1 chunks sent"), "{note}");

    // The pipeline that copies every snapshot of an identity the
    // destination lacks (bk-get(1)): nothing the second time.
    let identity = first["identity"].as_str().unwrap();
    let all = format!(
        "have=$(bk-ls {d} --identity '{identity}' | jq -r .time); \
         bk-ls --identity '{identity}' | jq -r --arg have \"$have\" \
         'select(.time as $t | ($have | split(\"\\n\") | index($t)) | not) | .id' | \
         while read -r id; do {} || exit 1; done",
        copy_cmd(&dest, &dest_pw, "\"$id\"")
    );
    std::fs::write(src.join("third"), b"3").unwrap();
    env.ok(&format!("bk-put --from '{}'", src.display()));
    env.ok(&all);
    assert_eq!(json_lines(&env.ok(&format!("bk-ls {d}"))).len(), 3);
    env.ok(&all);
    assert_eq!(
        json_lines(&env.ok(&format!("bk-ls {d}"))).len(),
        3,
        "nothing copied twice"
    );

    // And back from the local copy into another environment repository
    // (local -> S3 in the S3 pass).
    let back = Env::new();
    let out = back.ok(&format!(
        "bk-repo chunks | bk-get {d} {} --stream --have - | bk-put",
        copied["id"].as_str().unwrap()
    ));
    let returned = json_line(&out);
    for field in ["identity", "time", "tags", "files", "bytes"] {
        assert_eq!(returned[field], first[field], "{field}");
    }
    let into = back.path("back");
    back.ok(&format!("bk-get latest --into '{}'", into.display()));
    assert_eq!(std::fs::read(into.join("big")).unwrap(), vec![3u8; 3 << 20]);
}

#[test]
fn bk_ls_prints_a_table_on_a_terminal_and_json_lines_elsewhere() {
    let env = Env::new();
    let src = tree(&env, "tbl");
    let snap = json_line(&env.ok(&format!("bk-put --from '{}' --tag app=web", src.display())));
    let short = &snap["id"].as_str().unwrap()[..8];
    // script(1) gives bk-ls a terminal as stdout.
    let on_tty = |args: &str| -> String {
        let out = env
            .sh(&format!("script -qec 'bk-ls {args}' /dev/null < /dev/null"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).replace('\r', "")
    };
    let table = on_tty("");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("IDENTITY"),
        "{table}"
    );
    assert!(
        lines[1].starts_with(short) && lines[1].contains("app=web"),
        "{table}"
    );
    assert!(table.contains("1 snapshot(s)"), "{table}");
    // The short id goes back into any tool.
    let entries = on_tty(short);
    assert!(
        entries.contains("drwx") && entries.contains("sub/b.txt"),
        "{entries}"
    );
    assert!(entries.contains("4 entries, 12 B"), "{entries}");
    assert!(on_tty("--json").starts_with("{\"type\":\"snapshot\""));
    // Not a terminal: JSON lines as ever.
    assert_eq!(json_lines(&env.ok("bk-ls"))[0]["id"], snap["id"]);
}

#[test]
fn progress_shows_on_a_terminal_as_json_for_wrappers_and_not_in_pipes() {
    let env = Env::new();
    let src = tree(&env, "prog");
    std::fs::write(src.join("big"), vec![5u8; 2 << 20]).unwrap();
    // A wrapper asks for JSON progress lines on stderr.
    let out = env.run(&format!(
        "bk-put --from '{}' --progress json",
        src.display()
    ));
    assert!(out.status.success());
    let last = last_progress(&out.stderr);
    assert_eq!(last["done"], true);
    assert_eq!(last["operation"], "backing up");
    assert_eq!(last["unit"], "files", "{last}");
    assert_eq!(last["items"], 3, "files, not directories: {last}");
    assert_eq!(last["bytes"], (2 << 20) + 14, "{last}");
    // The same backup as a pipeline counts the same, from the stream.
    let out = env.run(&format!(
        "bk-chunk '{}' | bk-put --progress json",
        src.display()
    ));
    assert!(out.status.success());
    let piped = last_progress(&out.stderr);
    assert_eq!(piped["items"], 3, "{piped}");
    assert_eq!(piped["bytes"], (2 << 20) + 14, "{piped}");
    // Not a terminal, not asked: nothing but the record on stdout.
    let out = env.run(&format!("bk-put --from '{}'", src.display()));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A terminal gets a bar while the work lasts (a slow producer here),
    // a restore its share and ETA; --quiet gets nothing.
    let slow = "(for i in 1 2 3; do head -c 1000000 /dev/zero; sleep 0.4; done)";
    let on_tty = |cmd: &str| -> String {
        let out = env
            .sh(&format!("script -qec \"{cmd}\" /dev/null < /dev/null"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_tty(&format!("{slow} | bk-put --from - --name z > /dev/null"));
    assert!(shown.contains("bk-put: backing up 1 files"), "{shown:?}");
    let quiet = on_tty(&format!("{slow} | bk-put -q --from - --name z > /dev/null"));
    assert!(!quiet.contains("backing up"), "{quiet:?}");
    let into = env.path("restored");
    let shown = on_tty(&format!(
        "bk-get latest --identity \\$(bk-ls | jq -r .identity | grep prog | head -1) --into '{}' > /dev/null",
        into.display()
    ));
    assert!(into.join("big").exists(), "{shown:?}");
    assert!(shown.contains("bk-get: restoring ["), "{shown:?}");
    assert!(shown.contains("3/3 files"), "{shown:?}");
}

#[test]
fn verify_and_prune_report_their_progress_in_packs() {
    let env = Env::new();
    let src = tree(&env, "packs");
    // Incompressible, so the packs hold about as many bytes as the file.
    std::fs::write(src.join("big"), noise(3 << 20, 7)).unwrap();
    env.ok(&format!("bk-put --from '{}'", src.display()));

    let out = env.run("bk-verify --read-data --progress json");
    assert!(out.status.success());
    let last = last_progress(&out.stderr);
    assert_eq!(last["operation"], "reading data", "{last}");
    assert_eq!(last["unit"], "packs", "{last}");
    assert_eq!(last["done"], true, "{last}");
    assert!(
        last["items"].as_u64().unwrap() >= 2,
        "data and metadata: {last}"
    );
    assert_eq!(last["items"], last["total_items"], "{last}");
    assert_eq!(last["bytes"], last["total_bytes"], "{last}");
    // -q: nothing on stderr, the summary on stdout as ever.
    let out = env.run("bk-verify --read-data -q");
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");

    // A second backup without the big file; the prune that forgets the
    // first deletes its packs and counts them.
    std::fs::remove_file(src.join("big")).unwrap();
    env.ok(&format!("bk-put --from '{}'", src.display()));
    let out = env.run("bk-prune --keep-last 1 --grace 0 --max-unused 0% --progress json");
    assert!(out.status.success(), "{out:?}");
    let last = last_progress(&out.stderr);
    assert_eq!(last["operation"], "pruning", "{last}");
    assert_eq!(last["unit"], "packs", "{last}");
    assert!(last["items"].as_u64().unwrap() >= 1, "{last}");
    assert!(last["bytes"].as_u64().unwrap() >= 3 << 20, "{last}");
}
