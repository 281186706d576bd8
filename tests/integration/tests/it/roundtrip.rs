//! Backup → restore fidelity through the real binaries and real pipes.

use crate::common::*;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

fn set_mtime(p: &Path, secs: i64, nanos: u32) {
    let t = filetime::FileTime::from_unix_time(secs, nanos);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

/// Everything we promise to restore, keyed by relative path.
#[derive(Debug, PartialEq)]
struct Node {
    kind: String,
    mode: u32,
    mtime: (i64, i64),
    size: u64,
    content_hash: Option<u64>,
    target: Option<Vec<u8>>,
    link_group: Option<usize>,
}

fn hash_file(p: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(p).unwrap().hash(&mut h);
    h.finish()
}

fn snapshot_tree(root: &Path, skip_big: &[&str]) -> HashMap<Vec<u8>, Node> {
    let mut out = HashMap::new();
    let mut inode_groups: HashMap<u64, usize> = HashMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = std::fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        let is_big = skip_big
            .iter()
            .any(|b| rel.as_os_str().as_bytes() == b.as_bytes());
        let link_group = (ft.is_file() && md.nlink() > 1).then(|| {
            let n = inode_groups.len();
            *inode_groups.entry(md.ino()).or_insert(n)
        });
        out.insert(
            rel.as_os_str().as_bytes().to_vec(),
            Node {
                kind: kind.into(),
                // Symlink modes are not meaningful on Linux.
                mode: if ft.is_symlink() {
                    0
                } else {
                    md.mode() & 0o7777
                },
                // Directory mtimes at the root are the restore target's; skip.
                mtime: if rel.as_os_str().is_empty() {
                    (0, 0)
                } else {
                    (md.mtime(), md.mtime_nsec())
                },
                size: if ft.is_file() { md.len() } else { 0 },
                content_hash: (ft.is_file() && !is_big).then(|| hash_file(&full)),
                target: ft.is_symlink().then(|| {
                    std::fs::read_link(&full)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                link_group,
            },
        );
        if ft.is_dir() {
            for e in std::fs::read_dir(&full).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    out
}

#[test]
fn restore_is_faithful_including_special_cases() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("dir/sub")).unwrap();
    std::fs::create_dir(src.join("empty")).unwrap();
    std::fs::write(src.join("small.txt"), b"hello world\n").unwrap();
    std::fs::write(src.join("empty-file"), b"").unwrap();
    std::fs::write(src.join("dir/big.bin"), noise(9 << 20, 1)).unwrap();
    let mut compressible = Vec::new();
    for i in 0..200_000 {
        compressible.extend_from_slice(format!("line {i} of a log file\n").as_bytes());
    }
    std::fs::write(src.join("dir/sub/log.txt"), &compressible).unwrap();
    // Same content twice: stored once.
    std::fs::write(src.join("dir/copy.bin"), noise(9 << 20, 1)).unwrap();
    // Modes, including setuid and a read-only file.
    std::fs::write(src.join("setuid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(src.join("setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(src.join("readonly"), b"ro").unwrap();
    std::fs::set_permissions(src.join("readonly"), std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::set_permissions(src.join("dir/sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
    // Symlinks: relative, absolute, dangling.
    std::os::unix::fs::symlink("small.txt", src.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", src.join("dir/dangling")).unwrap();
    // Hard links.
    std::fs::write(src.join("hl-a"), b"linked content").unwrap();
    std::fs::hard_link(src.join("hl-a"), src.join("dir/hl-b")).unwrap();
    std::fs::hard_link(src.join("hl-a"), src.join("hl-c")).unwrap();
    // Non-UTF-8 name, long name, long path.
    let weird = src.join(OsStr::from_bytes(b"caf\xe9-\xff\xfe.txt"));
    std::fs::write(&weird, b"latin-1 name").unwrap();
    let long_name = "n".repeat(255);
    std::fs::write(src.join(&long_name), b"long name").unwrap();
    let mut deep = src.join("deep");
    for i in 0..30 {
        deep = deep.join(format!("level-{i:02}-{}", "x".repeat(40)));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf.txt"), b"far down").unwrap();
    assert!(deep.as_os_str().len() > 1500);
    // A FIFO.
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    // A sparse file larger than 4 GiB: data at the start, middle and end.
    let sparse = src.join("sparse.img");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(&noise(100_000, 7), 3 << 30).unwrap();
        f.write_all_at(b"end", (5 << 30) - 3).unwrap();
    }
    assert!(
        std::fs::metadata(&sparse).unwrap().blocks() * 512 < 10 << 20,
        "test file system does not keep holes"
    );
    // Files ending in a hole, which restore gives their size without
    // writing it: data then 40 MiB of zeros (enough chunks for the
    // parallel decoder), and a file of zeros only.
    {
        let f = std::fs::File::create(src.join("tail-hole.img")).unwrap();
        use std::io::Write;
        (&f).write_all(&noise(1 << 20, 8)).unwrap();
        f.set_len(41 << 20).unwrap();
        std::fs::File::create(src.join("zeros.bin"))
            .unwrap()
            .set_len(300_000)
            .unwrap();
    }
    // Nanosecond mtimes everywhere (set last, deepest first).
    let mut all: Vec<PathBuf> = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        all.push(d.clone());
        if std::fs::symlink_metadata(&d).unwrap().is_dir() {
            for e in std::fs::read_dir(&d).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64, 123_456_789 + i as u32);
    }

    let snap = env.backup(&src, "--tag kind=fidelity");
    assert_eq!(snap["errors"], 0);
    assert!(
        snap["new_bytes"].as_u64().unwrap() < (5 << 30) / 100,
        "zeros and duplicates are stored once: {snap}"
    );

    let out = env.path("out");
    let res = json_line(&env.ok(&format!("bk-get latest --into '{}'", out.display())));
    assert_eq!(res["errors"], 0, "{res}");

    let before = snapshot_tree(&src, &["sparse.img"]);
    let after = snapshot_tree(&out, &["sparse.img"]);
    let mut keys: Vec<_> = before.keys().collect();
    keys.sort();
    for k in keys {
        assert_eq!(
            after.get(k),
            before.get(k),
            "difference at {:?}",
            String::from_utf8_lossy(k)
        );
    }
    assert_eq!(before.len(), after.len());

    // Sparse and correct.
    let r = out.join("sparse.img");
    let md = std::fs::metadata(&r).unwrap();
    assert_eq!(md.len(), 5 << 30);
    assert!(
        md.blocks() * 512 < 64 << 20,
        "restored sparse file uses {} bytes",
        md.blocks() * 512
    );
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&r).unwrap();
        let mut b = vec![0u8; 100_000];
        f.read_exact_at(&mut b, 3 << 30).unwrap();
        assert_eq!(b, noise(100_000, 7));
        let mut e = [0u8; 3];
        f.read_exact_at(&mut e, (5 << 30) - 3).unwrap();
        assert_eq!(&e, b"end");
    }
    // No temporary files left behind.
    assert!(walk_files(&out)
        .iter()
        .all(|p| !p.to_string_lossy().contains(".bk-restore-")));
}

#[test]
fn single_file_to_stdout_and_selected_paths() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("a/b")).unwrap();
    std::fs::create_dir_all(src.join("c")).unwrap();
    let data = noise(3 << 20, 9);
    std::fs::write(src.join("a/b/data.bin"), &data).unwrap();
    std::fs::write(src.join("c/other"), b"other").unwrap();
    env.backup(&src, "");
    let out = env.run("bk-get latest a/b/data.bin");
    assert!(out.status.success());
    assert_eq!(out.stdout, data);

    let dest = env.path("sel");
    env.ok(&format!("bk-get latest --into '{}' a", dest.display()));
    assert!(dest.join("a/b/data.bin").exists());
    assert!(!dest.join("c").exists());

    // Filtered selection through jq-like filtering of bk-ls output.
    let dest2 = env.path("sel2");
    env.ok(&format!(
        "bk-ls latest | grep '\"path\":\"c/other\"' | bk-get - --into '{}'",
        dest2.display()
    ));
    assert_eq!(std::fs::read(dest2.join("c/other")).unwrap(), b"other");
    assert!(!dest2.join("a").exists());

    let err = env.fails("bk-get latest no/such/file", 2);
    assert!(err.contains("no file"), "{err}");
}

/// A backup given a symlink to a directory (as ~/.rustup/toolchains/1.95.0
/// is) stored every entry under the symlink's own name, so the restore
/// wrote one file over and over and failed.
#[test]
fn regression_a_symlink_to_a_directory_as_the_root_is_backed_up_as_the_directory() {
    let env = Env::new();
    let src = env.path("real");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"content").unwrap();
    std::fs::write(src.join("g"), b"other").unwrap();
    let link = env.path("link");
    std::os::unix::fs::symlink(&src, &link).unwrap();
    env.backup(&link, "");
    let dest = env.path("out");
    env.ok(&format!("bk-get latest --into '{}'", dest.display()));
    assert_eq!(std::fs::read(dest.join("d/f")).unwrap(), b"content");
    assert_eq!(std::fs::read(dest.join("g")).unwrap(), b"other");
}

#[test]
fn stdin_stream_round_trip() {
    let env = Env::new();
    let dump = env.path("dump.sql");
    let mut text = Vec::new();
    for i in 0..300_000 {
        text.extend_from_slice(format!("INSERT INTO t VALUES ({i}, 'row {i}');\n").as_bytes());
    }
    std::fs::write(&dump, &text).unwrap();
    let snap = json_line(&env.ok(&format!(
        "cat '{}' | bk-chunk - --name db.sql | bk-put --identity postgres@db1:/mydb --tag kind=dump",
        dump.display()
    )));
    assert_eq!(snap["identity"], "postgres@db1:/mydb");
    assert_eq!(snap["bytes"].as_u64().unwrap(), text.len() as u64);
    assert!(
        snap["stored_bytes"].as_u64().unwrap() < text.len() as u64 / 3,
        "compressed: {snap}"
    );
    let out = env.run("bk-get latest --identity postgres@db1:/mydb db.sql");
    assert_eq!(out.stdout, text);
    env.fails("bk-chunk - < /dev/null", 2);
}

/// The library reports warnings through the log facade and the tools
/// print them on stderr as `TOOL: warning: …`, prefixed like their errors;
/// the snapshot is still committed.
#[test]
fn library_warnings_reach_stderr_through_the_tools() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"some bytes").unwrap();
    let out = env.run("BK_REPO= bk-chunk src | bk-put");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("bk-put: warning: the stream was chunked with the \"default\" chunker"),
        "{stderr}"
    );
    assert_eq!(env.snapshots().len(), 1);
}
