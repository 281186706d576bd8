//! bk-verify against real damage: every kind of object flipped, truncated,
//! emptied, deleted and swapped; subsets; --against; metrics. After every
//! fault, bk-get must fail or restore the right bytes, never wrong ones.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A small repository: two snapshots, several 1 MiB packs, a passphrase
/// key and an identity key, with copies of both source trees.
struct Fixture {
    env: Env,
    /// (snapshot id, copy of the tree it was made from), oldest first.
    snaps: Vec<(String, PathBuf)>,
    /// Object paths (relative to the repository) written by the first backup.
    first_index: String,
    pass_key: String,
    id_key: String,
}

fn fill(src: &Path, seed: u64) {
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    for i in 0..6 {
        std::fs::write(src.join(format!("d/f{i}")), noise(400_000, seed + i)).unwrap();
    }
    std::fs::write(src.join("d/e/small"), b"small file\n").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("d/f1", src.join("link")).unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

fn rel(env: &Env, p: &Path) -> String {
    p.strip_prefix(&env.repo)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn objects(env: &Env, dir: &str) -> Vec<String> {
    walk_files(&env.repo.join(dir))
        .iter()
        .map(|p| rel(env, p))
        .collect()
}

fn fixture() -> Fixture {
    let env = Env::bare();
    env.ok("bk-repo init --pack-size-mib 1");
    env.ok("bk-repo key add --generate-identity id.txt --label second");
    let src = env.path("src");
    fill(&src, 1);
    let s1 = env.backup(&src, "")["id"].as_str().unwrap().to_string();
    let first_index = objects(&env, "index");
    assert_eq!(first_index.len(), 1, "{first_index:?}");
    copy_tree(&src, &env.path("src1"));
    std::fs::write(src.join("d/f2"), noise(400_000, 99)).unwrap();
    std::fs::write(src.join("d/f6"), noise(500_000, 100)).unwrap();
    let s2 = env.backup(&src, "")["id"].as_str().unwrap().to_string();
    copy_tree(&src, &env.path("src2"));
    let keys = json_lines(&env.ok("bk-repo key list"));
    let key = |kind: &str| {
        let k = keys.iter().find(|k| k["kind"] == kind).unwrap();
        format!("keys/{}", k["id"].as_str().unwrap())
    };
    Fixture {
        snaps: vec![(s1, env.path("src1")), (s2, env.path("src2"))],
        first_index: first_index[0].clone(),
        pass_key: key("passphrase"),
        id_key: key("age"),
        env,
    }
}

/// Packs by size, largest first (data packs hold ~400 KB blobs; the
/// metadata packs hold only listings and are the smallest).
fn packs_by_size(env: &Env) -> Vec<String> {
    let mut p: Vec<(u64, String)> = objects(env, "data")
        .into_iter()
        .map(|r| (std::fs::metadata(env.repo.join(&r)).unwrap().len(), r))
        .collect();
    p.sort_by(|a, b| b.cmp(a));
    p.into_iter().map(|(_, r)| r).collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Flip,
    Truncate,
    Zero,
    Delete,
    Swap,
}

const FAULTS: [Fault; 5] = [
    Fault::Flip,
    Fault::Truncate,
    Fault::Zero,
    Fault::Delete,
    Fault::Swap,
];

fn writable(p: &Path) {
    let mut perm = std::fs::metadata(p).unwrap().permissions();
    perm.set_mode(perm.mode() | 0o200);
    std::fs::set_permissions(p, perm).unwrap();
}

/// Applies `fault` to `victim` (and, for a swap, `other`).
fn damage(env: &Env, fault: Fault, victim: &str, other: &str) {
    let p = env.repo.join(victim);
    writable(&p);
    match fault {
        Fault::Flip => {
            let mut b = std::fs::read(&p).unwrap();
            let i = b.len() / 2;
            b[i] ^= 0x01;
            std::fs::write(&p, b).unwrap();
        }
        Fault::Truncate => {
            let n = std::fs::metadata(&p).unwrap().len();
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(n / 2)
                .unwrap();
        }
        Fault::Zero => {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(0)
                .unwrap();
        }
        Fault::Delete => std::fs::remove_file(&p).unwrap(),
        Fault::Swap => {
            let q = env.repo.join(other);
            writable(&q);
            let (a, b) = (std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
            assert_ne!(a, b);
            std::fs::write(&p, b).unwrap();
            std::fs::write(&q, a).unwrap();
        }
    }
}

/// The object name inside a relative path (`data/ab/<id>` → `<id>`).
fn name_of(obj: &str) -> &str {
    obj.rsplit('/').next().unwrap()
}

struct Expect<'a> {
    /// Exit status of `bk-verify --read-data`.
    read_data: i32,
    /// Exit status of the structure check, where it must catch the fault.
    structure: Option<i32>,
    /// Strings the output (stdout and stderr) must contain.
    mention: Vec<&'a str>,
}

/// Runs bk-verify (with `prefix`, e.g. other credentials) and the restore
/// checks on a damaged repository.
fn check(f: &Fixture, label: &str, prefix: &str, e: Expect) {
    let mut runs = vec![("--read-data", e.read_data)];
    if let Some(code) = e.structure {
        runs.push(("", code));
    }
    for (args, code) in runs {
        let out = f.env.run(&format!("{prefix} bk-verify {args}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let all = format!("{stdout}{stderr}");
        assert_eq!(
            out.status.code(),
            Some(code),
            "{label}: bk-verify {args}\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{label}: {stderr}");
        for m in &e.mention {
            assert!(
                all.contains(m),
                "{label}: bk-verify {args} does not mention {m}\n{all}"
            );
        }
        if code == 13 && !stdout.is_empty() {
            let lines = json_lines(&stdout);
            let last = lines.last().unwrap();
            assert_eq!(last["type"], "verify_summary", "{label}");
            assert_eq!(last["result"], "problems", "{label}");
            assert!(last["errors"].as_u64().unwrap() > 0, "{label}");
            assert!(
                lines
                    .iter()
                    .any(|l| l["type"] == "finding" && l["severity"] == "error"),
                "{label}"
            );
        } else if code != 0 && code != 13 {
            // Could not run: one error line, nothing on stdout.
            assert!(stdout.is_empty(), "{label}: {stdout}");
            assert!(stderr.contains("bk-verify: error:"), "{label}: {stderr}");
        }
    }
    restores_are_right_or_fail(f, label, prefix);
}

/// bk-get never returns wrong data: every file it leaves behind has the
/// right bytes, and when it succeeds, every file is there.
fn restores_are_right_or_fail(f: &Fixture, label: &str, prefix: &str) {
    for (n, (sid, src)) in f.snaps.iter().enumerate() {
        let into = f.env.path(&format!("restore-{n}"));
        let out = f.env.run(&format!(
            "{prefix} bk-get {sid} --into '{}'",
            into.display()
        ));
        let ok = out.status.success();
        let mut restored = 0;
        for p in walk_files(&into) {
            let md = std::fs::symlink_metadata(&p).unwrap();
            if !md.is_file() {
                continue;
            }
            let r = p.strip_prefix(&into).unwrap();
            let want = std::fs::read(src.join(r)).unwrap_or_else(|_| {
                panic!(
                    "{label}: bk-get left {} which the source lacks",
                    r.display()
                )
            });
            assert!(
                std::fs::read(&p).unwrap() == want,
                "{label}: bk-get restored wrong bytes for {} (exit {:?})",
                r.display(),
                out.status.code()
            );
            restored += 1;
        }
        if ok {
            let want = walk_files(src)
                .iter()
                .filter(|p| std::fs::symlink_metadata(p).unwrap().is_file())
                .count();
            assert_eq!(restored, want, "{label}: bk-get exit 0 but files missing");
        }
        let one = f.env.path(&format!("one-{n}"));
        let out = f
            .env
            .run(&format!("{prefix} bk-get {sid} d/f1 > '{}'", one.display()));
        if out.status.success() {
            assert!(
                std::fs::read(&one).unwrap() == std::fs::read(src.join("d/f1")).unwrap(),
                "{label}: bk-get to stdout gave wrong bytes with exit 0"
            );
        }
        let _ = std::fs::remove_dir_all(&into);
    }
}

#[test]
fn clean_repository_verifies_with_exit_0() {
    let f = fixture();
    for args in ["", "--read-data", "--read-data-subset 50%"] {
        let out = f.env.ok(&format!("bk-verify {args}"));
        let lines = json_lines(&out);
        let summary = lines.last().unwrap();
        assert_eq!(summary["type"], "verify_summary");
        assert_eq!(summary["result"], "ok", "{out}");
        assert_eq!(summary["errors"], 0, "{out}");
        assert_eq!(summary["snapshots"], 2);
        assert_eq!(summary["keys"], 2);
        assert!(
            lines[..lines.len() - 1]
                .iter()
                .all(|l| l["type"] == "finding" && l["severity"] != "error"),
            "{out}"
        );
    }
    let s = json_lines(&f.env.ok("bk-verify --read-data"));
    let s = s.last().unwrap();
    assert_eq!(s["packs_read"], s["packs"]);
    assert_eq!(
        s["packs"].as_u64().unwrap() as usize,
        f.env.pack_count(),
        "every pack read"
    );
    assert!(s["blobs_checked"].as_u64().unwrap() >= 9);
}

#[test]
fn damaged_data_packs() {
    for fault in FAULTS {
        let f = fixture();
        let packs = packs_by_size(&f.env);
        let (victim, other) = (packs[0].clone(), packs[1].clone());
        damage(&f.env, fault, &victim, &other);
        let label = format!("data pack {fault:?}");
        let mut mention = vec![victim.as_str()];
        if fault == Fault::Swap {
            mention.push(&other);
        }
        // Flipped bits and swapped content keep the size: only reading the
        // data finds them.
        let structure = match fault {
            Fault::Flip | Fault::Swap => None,
            _ => Some(13),
        };
        check(
            &f,
            &label,
            "",
            Expect {
                read_data: 13,
                structure,
                mention,
            },
        );
        if fault != Fault::Swap {
            // The finding names the snapshots and files the damage affects.
            let out = f.env.run("bk-verify --read-data");
            let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
            let hit = lines
                .iter()
                .find(|l| {
                    l["object"] == victim.as_str() && !l["paths"].as_array().unwrap().is_empty()
                })
                .unwrap_or_else(|| panic!("{label}: no finding names files: {lines:?}"));
            let paths: Vec<&str> = hit["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            // Only files with content, each present in a snapshot's tree.
            assert!(
                paths.iter().all(|p| f
                    .snaps
                    .iter()
                    .any(|(_, src)| std::fs::metadata(src.join(p)).is_ok_and(|m| m.len() > 0))),
                "{label}: {paths:?}"
            );
            assert!(!hit["snapshots"].as_array().unwrap().is_empty(), "{label}");
        }
    }
}

#[test]
fn damaged_metadata_packs() {
    for fault in FAULTS {
        let f = fixture();
        let packs = packs_by_size(&f.env);
        let victim = packs[packs.len() - 1].clone();
        let other = packs[packs.len() - 2].clone();
        damage(&f.env, fault, &victim, &other);
        // Listings are read by the structure check: it catches every fault
        // of a metadata pack.
        check(
            &f,
            &format!("metadata pack {fault:?}"),
            "",
            Expect {
                read_data: 13,
                structure: Some(13),
                mention: vec![name_of(&victim)],
            },
        );
    }
}

#[test]
fn damaged_index_objects() {
    for fault in FAULTS {
        let f = fixture();
        let victim = f.first_index.clone();
        let other = objects(&f.env, "index")
            .into_iter()
            .find(|i| *i != victim)
            .unwrap();
        damage(&f.env, fault, &victim, &other);
        let label = format!("index {fault:?}");
        let mention = match fault {
            // A deleted index object cannot be named: what is lost are the
            // chunks only it listed, and the snapshots that need them.
            Fault::Delete => vec!["in no index object", f.snaps[0].0.as_str()],
            Fault::Swap => vec![victim.as_str(), other.as_str()],
            _ => vec![victim.as_str()],
        };
        check(
            &f,
            &label,
            "",
            Expect {
                read_data: 13,
                structure: Some(13),
                mention,
            },
        );
    }
}

#[test]
fn damaged_snapshots() {
    for fault in FAULTS {
        let f = fixture();
        let victim = format!("snapshots/{}", f.snaps[1].0);
        let other = format!("snapshots/{}", f.snaps[0].0);
        damage(&f.env, fault, &victim, &other);
        let label = format!("snapshot {fault:?}");
        if fault == Fault::Delete {
            // Nothing refers to a snapshot: deleting one is what forgetting
            // it does, and verify cannot tell the two apart.
            let out = f.env.ok("bk-verify --read-data");
            assert_eq!(json_lines(&out).last().unwrap()["snapshots"], 1);
            restores_are_right_or_fail(&f, &label, "");
            continue;
        }
        let mut mention = vec![victim.as_str()];
        if fault == Fault::Swap {
            mention.push(&other);
        }
        check(
            &f,
            &label,
            "",
            Expect {
                read_data: 13,
                structure: Some(13),
                mention,
            },
        );
    }
}

#[test]
fn damaged_key_files() {
    let with_identity = "BK_PASSWORD_FILE= BK_IDENTITY_FILE=id.txt";
    for fault in FAULTS {
        let f = fixture();
        let (victim, other) = (f.pass_key.clone(), f.id_key.clone());
        damage(&f.env, fault, &victim, &other);
        let label = format!("key {fault:?}");
        if fault == Fault::Delete {
            // Removing a key file is what `bk-repo key remove` does: the
            // rest of the repository is intact, and the deleted key's
            // passphrase no longer opens it (exit 12).
            f.env.ok(&format!("{with_identity} bk-verify --read-data"));
            let err = f.env.fails("bk-verify", 12);
            assert!(err.contains("no passphrase key"), "{label}: {err}");
            continue;
        }
        let mut mention = vec![victim.as_str()];
        if fault == Fault::Swap {
            mention.push(&other);
        }
        // Verify opens with the other key and authenticates this one by its MAC.
        check(
            &f,
            &label,
            with_identity,
            Expect {
                read_data: 13,
                structure: Some(13),
                mention,
            },
        );
        // With the damaged key's own passphrase the repository cannot be
        // opened: 13 when the damage shows, 12 when it looks like a wrong
        // passphrase (age cannot tell those apart).
        let out = f.env.run("bk-verify");
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if fault == Fault::Swap {
            // The key file content is intact, only under another name.
            assert_eq!(code, Some(13), "{label}: {stderr}");
        } else {
            assert!(
                code == Some(12) || code == Some(13),
                "{label}: {code:?} {stderr}"
            );
            assert!(out.stdout.is_empty(), "{label}");
        }
        if code == Some(13) && fault != Fault::Swap {
            assert!(stderr.contains(name_of(&victim)), "{label}: {stderr}");
        }
    }
}

#[test]
fn damaged_config() {
    for fault in FAULTS {
        let f = fixture();
        let label = format!("config {fault:?}");
        if fault == Fault::Swap {
            // There is one config per repository: swap in another
            // repository's. The key opens but names another repository.
            let foreign = Env::bare();
            foreign.ok("bk-repo init");
            let theirs = std::fs::read(foreign.repo.join("config")).unwrap();
            let p = f.env.repo.join("config");
            writable(&p);
            std::fs::write(&p, theirs).unwrap();
        } else {
            damage(&f.env, fault, "config", "");
        }
        let code = if fault == Fault::Delete { 10 } else { 13 };
        check(
            &f,
            &label,
            "",
            Expect {
                read_data: code,
                structure: Some(code),
                mention: vec![if code == 10 {
                    "no bk repository"
                } else {
                    "config"
                }],
            },
        );
    }
}

#[test]
fn subset_slices_cover_every_pack_once() {
    let f = fixture();
    let packs = objects(&f.env, "data");
    assert!(packs.len() >= 4, "{packs:?}");
    // Damage every pack, so each run names exactly the packs it read.
    for p in &packs {
        damage(&f.env, Fault::Flip, p, "");
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for n in 1..=3 {
        let out = f.env.run(&format!("bk-verify --read-data-subset {n}/3"));
        let lines = json_lines(&String::from_utf8_lossy(&out.stdout));
        let read = lines.last().unwrap()["packs_read"].as_u64().unwrap();
        total += read;
        let named: BTreeSet<String> = lines
            .iter()
            .filter(|l| {
                l["type"] == "finding"
                    && l["message"]
                        .as_str()
                        .unwrap()
                        .contains("does not match its name")
            })
            .map(|l| l["object"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(named.len() as u64, read, "slice {n}/3: {lines:?}");
        for p in named {
            *seen.entry(p).or_default() += 1;
        }
        // The same slice again reads the same packs.
        let again = f.env.run(&format!("bk-verify --read-data-subset {n}/3"));
        let again = json_lines(&String::from_utf8_lossy(&again.stdout));
        assert_eq!(again.last().unwrap()["packs_read"].as_u64().unwrap(), read);
    }
    assert_eq!(total as usize, packs.len());
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), packs);
    assert!(seen.values().all(|&c| c == 1), "{seen:?}");
    // A byte budget never reads more than it allows.
    let out = f.env.run("bk-verify --read-data-subset 1M");
    let s = json_lines(&String::from_utf8_lossy(&out.stdout));
    assert!(s.last().unwrap()["bytes_read"].as_u64().unwrap() <= 1 << 20);
    f.env.fails("bk-verify --read-data-subset 4/3", 2);
    f.env.fails("bk-verify --read-data-subset 120%", 2);
}

fn against_findings(env: &Env, dir: &Path, snap: &str, code: i32) -> Vec<serde_json::Value> {
    let out = env.run(&format!("bk-verify --against '{}' {snap}", dir.display()));
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json_lines(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|l| l["type"] == "finding" && l["check"] == "against")
        .collect()
}

#[test]
fn against_reports_each_difference_once() {
    let f = fixture();
    let (s2, src2) = (&f.snaps[1].0, &f.snaps[1].1);
    // The tree the snapshot was made from: no differences.
    assert!(against_findings(&f.env, &f.env.path("src"), s2, 0).is_empty());
    // A restored copy: no differences either.
    let live = f.env.path("live");
    f.env
        .ok(&format!("bk-get {s2} --into '{}'", live.display()));
    assert!(against_findings(&f.env, &live, s2, 0).is_empty());
    // The older snapshot differs from the newer tree in d/f2 and d/f6.
    let old = against_findings(&f.env, src2, &f.snaps[0].0, 13);
    let objs: BTreeSet<&str> = old.iter().map(|l| l["object"].as_str().unwrap()).collect();
    assert!(objs.contains("d/f2") && objs.contains("d/f6"), "{old:?}");

    // Change one file's content (same size, same mtime), one file's mode,
    // one file's mtime; delete one and add one. Keep the directory's mtime.
    let d = live.join("d");
    let dir_mtime =
        filetime::FileTime::from_last_modification_time(&std::fs::metadata(&d).unwrap());
    let f0 = d.join("f0");
    let m0 = filetime::FileTime::from_last_modification_time(&std::fs::metadata(&f0).unwrap());
    let mut b = std::fs::read(&f0).unwrap();
    b[200_000] ^= 0xff;
    std::fs::write(&f0, b).unwrap();
    filetime::set_file_mtime(&f0, m0).unwrap();
    std::fs::set_permissions(d.join("f1"), std::fs::Permissions::from_mode(0o600)).unwrap();
    filetime::set_file_mtime(
        d.join("f3"),
        filetime::FileTime::from_unix_time(1_000_000_000, 5),
    )
    .unwrap();
    std::fs::remove_file(d.join("f4")).unwrap();
    std::fs::write(d.join("new"), b"new").unwrap();
    filetime::set_file_mtime(&d, dir_mtime).unwrap();

    let found = against_findings(&f.env, &live, s2, 13);
    let mut got: Vec<(String, String)> = found
        .iter()
        .map(|l| {
            let msg = l["message"].as_str().unwrap();
            let what = msg.split(':').next().unwrap().split(' ').next().unwrap();
            (l["object"].as_str().unwrap().to_string(), what.to_string())
        })
        .collect();
    got.sort();
    let want: Vec<(String, String)> = [
        ("d/f0", "content"),
        ("d/f1", "mode"),
        ("d/f3", "mtime"),
        ("d/f4", "missing"),
        ("d/new", "extra"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "{found:?}");
    for l in &found {
        assert_eq!(l["severity"], "error");
        assert_eq!(l["snapshots"][0], s2.as_str());
        assert_eq!(l["paths"][0], l["object"]);
    }
    // Content is compared by chunk id: nothing is downloaded.
    let out = f
        .env
        .run(&format!("bk-verify --against '{}' {s2}", live.display()));
    let summary = json_lines(&String::from_utf8_lossy(&out.stdout))
        .pop()
        .unwrap();
    assert!(
        summary["bytes_compared"].as_u64().unwrap() > 2_000_000,
        "{summary}"
    );
}

#[test]
fn against_falls_back_to_bytes_when_chunked_without_the_key() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big"), noise(9 << 20, 5)).unwrap();
    std::fs::write(src.join("small"), noise(1000, 6)).unwrap();
    // Chunked with the public table (no repository given to bk-chunk).
    let snap = env.ok(&format!(
        "env -u BK_REPO bk-chunk '{}' | bk-put",
        src.display()
    ));
    let sid = json_line(&snap)["id"].as_str().unwrap().to_string();
    let ids: Vec<String> = json_lines(&env.ok(&format!("bk-ls {sid} big")))
        .into_iter()
        .filter(|l| l["type"] == "entry")
        .flat_map(|l| l["chunks"].as_array().unwrap().clone())
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let keyed: Vec<String> = json_lines(&env.ok(&format!("bk-chunk '{}/big'", src.display())))
        .into_iter()
        .filter(|l| l["type"] == "data")
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        ids.len() > 1 && ids != keyed,
        "the test needs different chunkings"
    );
    assert!(against_findings(&env, &src, &sid, 0).is_empty());
    let mut b = std::fs::read(src.join("big")).unwrap();
    b[7 << 20] ^= 1;
    let m = filetime::FileTime::from_last_modification_time(
        &std::fs::metadata(src.join("big")).unwrap(),
    );
    std::fs::write(src.join("big"), b).unwrap();
    filetime::set_file_mtime(src.join("big"), m).unwrap();
    let found = against_findings(&env, &src, &sid, 13);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["object"], "big");
    assert!(
        found[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("from byte {}", 7 << 20)),
        "{found:?}"
    );
}

/// Every metrics line is a comment or `name{labels} value`.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line:?}");
            // label="value" pairs, values with \\ \" \n escapes only
            let mut rest = &labels[1..labels.len() - 1];
            while !rest.is_empty() {
                let eq = rest.find("=\"").unwrap_or_else(|| panic!("{line:?}"));
                assert!(rest[..eq]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'));
                let mut chars = rest[eq + 2..].char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            let (_, e) = chars.next().unwrap();
                            assert!(matches!(e, '\\' | '"' | 'n'), "{line:?}");
                        }
                        '"' => {
                            end = Some(eq + 2 + i);
                            break;
                        }
                        '\n' => panic!("raw newline"),
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated label in {line:?}"));
                rest = rest[end + 1..]
                    .strip_prefix(',')
                    .unwrap_or(&rest[end + 1..]);
            }
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        out.insert(series.to_string(), v);
    }
    out
}

fn metric(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    let hits: Vec<_> = m.iter().filter(|(k, _)| k.starts_with(prefix)).collect();
    assert_eq!(hits.len(), 1, "{prefix}: {m:#?}");
    *hits[0].1
}

#[test]
fn metrics_file_is_written_atomically_also_on_failure() {
    let f = fixture();
    let prom_dir = f.env.path("textfile");
    std::fs::create_dir(&prom_dir).unwrap();
    let prom = prom_dir.join("bk.prom");
    f.env
        .ok(&format!("bk-verify --metrics '{}'", prom.display()));
    let m = parse_metrics(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(metric(&m, "bk_verify_success{"), 1.0);
    assert_eq!(metric(&m, "bk_repository_snapshots{"), 2.0);
    assert_eq!(metric(&m, "bk_snapshot_count{"), 2.0);
    let newest = metric(&m, "bk_snapshot_newest_timestamp_seconds{");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(newest <= now && newest > now - 600.0, "{newest}");
    assert!(metric(&m, "bk_snapshot_newest_size_bytes{") >= 2_400_000.0);
    let kinds: Vec<&String> = m
        .keys()
        .filter(|k| k.starts_with("bk_repository_objects{"))
        .collect();
    assert!(
        kinds.iter().any(|k| k.contains("kind=\"pack\"")),
        "{kinds:?}"
    );
    assert!(metric(&m, "bk_repository_size_bytes{") > 2_000_000.0);
    assert!(m.keys().any(|k| k.contains("identity=\"")));
    let ino = std::fs::metadata(&prom).unwrap().ino();

    // Damage: success 0, findings counted, the file replaced (new inode).
    let packs = packs_by_size(&f.env);
    damage(&f.env, Fault::Flip, &packs[0], "");
    f.env.fails(
        &format!("bk-verify --read-data --metrics '{}'", prom.display()),
        13,
    );
    let m = parse_metrics(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(metric(&m, "bk_verify_success{"), 0.0);
    let errors = m
        .iter()
        .find(|(k, _)| k.starts_with("bk_verify_findings{") && k.contains("severity=\"error\""))
        .unwrap()
        .1;
    assert!(*errors >= 1.0);
    assert!(metric(&m, "bk_verify_read_bytes{") > 1_000_000.0);
    assert_ne!(
        std::fs::metadata(&prom).unwrap().ino(),
        ino,
        "not replaced by rename"
    );
    assert_eq!(
        std::fs::read_dir(&prom_dir).unwrap().count(),
        1,
        "temp file left"
    );

    // Cannot open (wrong passphrase): success 0, still written.
    std::fs::write(f.env.path("bad-pw"), "wrong\n").unwrap();
    f.env.fails(
        &format!(
            "bk-verify --password-file bad-pw --metrics '{}'",
            prom.display()
        ),
        12,
    );
    let m = parse_metrics(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(metric(&m, "bk_verify_success{"), 0.0);
    assert!(!m.keys().any(|k| k.starts_with("bk_repository_size_bytes")));
    // No repository at all: exit 10, success 0.
    f.env.fails(
        &format!(
            "bk-verify -r '{}' --metrics '{}'",
            f.env.path("nothing").display(),
            prom.display()
        ),
        10,
    );
    let m = parse_metrics(&std::fs::read_to_string(&prom).unwrap());
    assert_eq!(metric(&m, "bk_verify_success{"), 0.0);
}

/// Regression (issue 34): bk-verify listed packs before index objects and
/// snapshots, so a backup committing between those listings left an
/// index object naming a pack the listing lacked, reported as "missing"
/// (exit 13) on a healthy repository. A backup now commits right after
/// each of verify's listings; every one must verify clean.
#[test]
fn regression_verify_reports_packs_of_a_backup_committed_during_the_run_as_missing() {
    use bk::backend::fault::{Action, FaultBackend, Op, When};
    use bk::backend::ObjectKind;
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(300_000, 5)).unwrap();
    env.backup(&src, "");
    let inner = open_backend(&env);
    let side = std::sync::Arc::new(open_repo(inner.clone()));
    let mut fault = FaultBackend::new(inner);
    for kind in [
        ObjectKind::Snapshot,
        ObjectKind::Gc,
        ObjectKind::Index,
        ObjectKind::Pack,
    ] {
        let side = side.clone();
        fault = fault.on(Op::List, kind, When::After, move |call, _| {
            if call.nth == 1 {
                let seed = 100 + kind as u64;
                put_bytes(&side, "during-verify", &noise(200_000, seed));
            }
            Action::Proceed
        });
    }
    let repo = open_repo(std::sync::Arc::new(fault));
    let mut out = Vec::new();
    let outcome = bk::verify::verify(&repo, &Default::default(), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(outcome.summary.errors, 0, "{out}");
    assert_eq!(outcome.exit, bk::ExitCode::Success, "{out}");
    assert_eq!(env.snapshots().len(), 5);
    env.ok("bk-verify --read-data");
}

/// Regression (issue 34): a prune's sweep deletes packs first and the
/// index objects that named them after; a verify that read such an index
/// object (listed before the prune compacted the index) and listed packs
/// after the deletion reported the packs "missing". Here the prune runs
/// between verify's index and pack listings and is stopped after its pack
/// deletions. The finding is re-checked on a fresh listing and dropped;
/// a pack deleted for real is still an error (the fault tests above).
#[test]
fn regression_verify_reports_packs_a_concurrent_prune_swept_as_missing() {
    use bk::backend::fault::{Action, FaultBackend, Op, When};
    use bk::backend::ObjectKind;
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), noise(600_000, 6)).unwrap();
    let old = env.backup(&src, "")["id"].as_str().unwrap().to_string();
    std::fs::write(src.join("a"), noise(600_000, 7)).unwrap();
    env.backup(&src, "");
    let inner = open_backend(&env);
    // The prune's storage fails its first index deletion: the sweep has
    // deleted the packs and stops before the index objects that name them.
    let pruning = open_repo(std::sync::Arc::new(
        FaultBackend::new(inner.clone()).fail_nth(
            Op::Delete,
            ObjectKind::Index,
            1,
            std::io::ErrorKind::Other,
        ),
    ));
    let swept = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = swept.clone();
    let pruning = std::sync::Mutex::new(pruning);
    let fault =
        FaultBackend::new(inner).on(Op::List, ObjectKind::Pack, When::Before, move |call, _| {
            if call.nth == 1 {
                let opts = bk::prune::PruneOptions {
                    forget: vec![old.clone()],
                    gc: Some(bk::gc::GcOptions {
                        grace: std::time::Duration::ZERO,
                        max_unused: bk::gc::MaxUnused::Fraction(0.0),
                        dry_run: false,
                        progress: None,
                    }),
                    ..Default::default()
                };
                let repo = pruning.lock().unwrap();
                let err = bk::prune::prune(&repo, &opts, &mut Vec::new()).unwrap_err();
                assert!(err.to_string().contains("injected"), "{err}");
                flag.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Action::Proceed
        });
    let repo = open_repo(std::sync::Arc::new(fault));
    let mut out = Vec::new();
    let outcome = bk::verify::verify(&repo, &Default::default(), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(swept.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(outcome.summary.errors, 0, "{out}");
    assert_eq!(outcome.exit, bk::ExitCode::Success, "{out}");
    assert!(
        out.contains("\"check\":\"concurrency\""),
        "the missing packs were seen and re-checked: {out}"
    );
    // What the prune left is a valid repository, and a second run agrees.
    env.ok("bk-prune --grace 0");
    env.ok("bk-verify --read-data");
}

/// Regression: verify skipped a damaged mark ("readers go without it")
/// and said ok, while every reader's index load fails on it (`bk-ls
/// SNAPSHOT`, bk-get and bk-prune exit 13). Found writing bk-repository(5).
#[test]
fn regression_a_damaged_mark_is_damage_to_verify_as_to_every_reader() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for seed in [1, 2] {
        std::fs::write(src.join("big"), noise(600_000, seed)).unwrap();
        env.ok(&format!("bk-put --from '{}'", src.display()));
    }
    // The first snapshot forgotten, its pack marked (deleted after 1h).
    env.ok("bk-prune --keep-last 1 --max-unused 0%");
    let marks: Vec<String> = objects(&env, "gc")
        .into_iter()
        .filter(|o| !name_of(o).starts_with("arm-"))
        .collect();
    assert_eq!(marks.len(), 1, "one pending mark: {marks:?}");
    env.ok("bk-verify");

    damage(&env, Fault::Flip, &marks[0], "");
    let out = env.run("bk-verify");
    assert_eq!(code(&out), 13, "{}", show(&out));
    let findings = json_lines(&stdout(&out));
    assert!(
        findings
            .iter()
            .any(|f| f["type"] == "finding" && f["object"] == marks[0].as_str()),
        "{}",
        show(&out)
    );
    // What a reader meets, for comparison.
    env.fails("bk-ls latest", 13);
}
