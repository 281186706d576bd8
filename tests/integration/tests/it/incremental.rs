//! Incremental backups, cross-identity dedup and snapshot selection.

use crate::common::*;

fn tree(env: &Env, files: usize, size: usize) -> std::path::PathBuf {
    let src = env.path("src");
    for i in 0..files {
        let d = src.join(format!("dir{}", i % 10));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("file{i:04}")), noise(size, i as u64)).unwrap();
    }
    src
}

#[test]
fn unchanged_tree_with_parent_reads_nothing_and_stores_no_pack() {
    let env = Env::new();
    let src = tree(&env, 300, 40_000);
    let first = env.backup(&src, "");
    let total = first["bytes"].as_u64().unwrap();
    assert_eq!(total, 300 * 40_000);
    let packs = env.pack_count();

    env.ok("bk-ls latest > parent.jsonl");
    let stream = env.ok(&format!(
        "bk-chunk --parent parent.jsonl '{}'",
        src.display()
    ));
    assert!(
        !stream.contains("\"type\":\"data\""),
        "an unchanged tree must send no data"
    );
    std::fs::write(env.path("s.jsonl"), &stream).unwrap();
    let second = json_line(&env.ok("bk-put < s.jsonl"));
    assert_eq!(second["new_bytes"], 0);
    assert_eq!(second["new_chunks"], 0);
    assert_eq!(second["bytes"], total);
    assert_eq!(env.pack_count(), packs, "no new pack for an unchanged tree");

    // Change 1% of the files (3 of 300) and add nothing else.
    for i in [5usize, 150, 299] {
        let p = src
            .join(format!("dir{}", i % 10))
            .join(format!("file{i:04}"));
        std::fs::write(&p, noise(40_000, 10_000 + i as u64)).unwrap();
    }
    env.ok("bk-ls latest > parent2.jsonl");
    let third = json_line(&env.ok(&format!(
        "bk-chunk --parent parent2.jsonl '{}' | bk-put",
        src.display()
    )));
    let new = third["new_bytes"].as_u64().unwrap();
    // 3 files of data plus the changed listing chunks.
    assert!(new >= 3 * 40_000, "{third}");
    assert!(
        (new as f64) < total as f64 * 0.02,
        "stored {new} new bytes of {total}: {third}"
    );

    // Every snapshot still restores bit-identical content.
    let out = env.path("restored");
    env.ok(&format!("bk-get latest --into '{}'", out.display()));
    for i in 0..300usize {
        let rel = format!("dir{}/file{i:04}", i % 10);
        assert_eq!(
            std::fs::read(out.join(&rel)).unwrap(),
            std::fs::read(src.join(&rel)).unwrap()
        );
    }
}

#[test]
fn parent_with_missing_chunks_is_refused() {
    // A listing that names chunks the repository does not have must not
    // become a snapshot (e.g. a parent from another repository).
    let env = Env::new();
    let other = Env::new();
    let src = tree(&env, 5, 10_000);
    other.backup(&src, "");
    other.ok("bk-ls latest > /tmp/.bk-foreign-parent.jsonl");
    std::fs::rename("/tmp/.bk-foreign-parent.jsonl", env.path("foreign.jsonl")).unwrap();
    let err = env.fails(
        &format!(
            "bk-chunk --parent foreign.jsonl '{}' | bk-put",
            src.display()
        ),
        13,
    );
    assert!(err.contains("does not have"), "{err}");
    assert!(env.snapshots().is_empty());
}

#[test]
fn identities_share_deduplicated_data() {
    let env = Env::new();
    let src = tree(&env, 50, 100_000);
    let a = env.backup(&src, "--identity prowlarr@media:/data --tag app=prowlarr");
    let b = env.backup(&src, "--identity radarr@media:/data --tag app=radarr");
    assert!(a["new_bytes"].as_u64().unwrap() >= 5_000_000);
    assert_eq!(b["new_chunks"], 0, "second identity stored data again: {b}");
    let c = env.backup(
        &src,
        "--identity radarr@media:/data --tag app=radarr --time 2020-01-01T00:00:00Z",
    );

    let all = env.snapshots();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0]["id"], c["id"], "sorted oldest first");
    let radarr = json_lines(&env.ok("bk-ls --identity radarr@media:/data"));
    assert_eq!(radarr.len(), 2);
    let tagged = json_lines(&env.ok("bk-ls --tag app=prowlarr"));
    assert_eq!(tagged.len(), 1);
    assert_eq!(tagged[0]["id"], a["id"]);
    // latest within an identity, and id prefixes.
    let latest_radarr = env.ok("bk-ls latest --identity radarr@media:/data dir0 | head -n 1");
    assert!(
        latest_radarr.contains("\"path\":\"dir0\""),
        "{latest_radarr}"
    );
    let id = a["id"].as_str().unwrap();
    let listing = json_lines(&env.ok(&format!("bk-ls {}", &id[..10])));
    assert_eq!(listing.last().unwrap()["type"], "trailer");
    assert_eq!(listing.last().unwrap()["entries"], listing.len() as u64 - 1);
    // Default identity is user@host:/absolute/source.
    let d = env.backup(&src, "");
    assert!(
        d["identity"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", src.display())),
        "{d}"
    );
}

#[test]
fn a_listing_recommits_without_data() {
    // `bk-ls SNAPSHOT | bk-put` makes a new snapshot of the same content.
    let env = Env::new();
    let src = tree(&env, 20, 50_000);
    let a = env.backup(&src, "");
    let b = json_line(&env.ok("bk-ls latest | bk-put --tag copy=yes --identity copy@host:/x"));
    assert_eq!(b["bytes"], a["bytes"]);
    assert_eq!(b["new_chunks"], 0);
    let out = env.path("o");
    env.ok(&format!(
        "bk-get latest --identity copy@host:/x --into '{}'",
        out.display()
    ));
    assert_eq!(
        std::fs::read(out.join("dir3/file0003")).unwrap(),
        noise(50_000, 3)
    );
}

#[test]
fn put_from_tree_commits_what_the_pipeline_commits_and_reads_only_changes() {
    let env = Env::new();
    let src = tree(&env, 200, 30_000);
    std::fs::write(src.join("dir1/same-as-0000"), noise(30_000, 0)).unwrap();
    std::os::unix::fs::symlink("file0001", src.join("dir1/link")).unwrap();
    std::fs::hard_link(src.join("dir2/file0002"), src.join("dir2/hard")).unwrap();

    let piped = env.backup(&src, "");
    let direct = json_line(&env.ok(&format!(
        "bk-put --from '{}' --parent none --tag via=from",
        src.display()
    )));
    assert_eq!(direct["identity"], piped["identity"], "{direct}");
    assert_eq!(
        (direct["files"].clone(), direct["bytes"].clone()),
        (piped["files"].clone(), piped["bytes"].clone())
    );
    assert_eq!(
        direct["new_chunks"], 0,
        "same chunks as the pipeline's: {direct}"
    );
    // Only the hard link's second name came with chunk ids.
    assert_eq!(direct["unmodified_files"], 1, "{direct}");
    let listing = |id: &serde_json::Value| env.ok(&format!("bk-ls {}", id.as_str().unwrap()));
    assert_eq!(listing(&piped["id"]), listing(&direct["id"]));

    // The default parent is the latest snapshot of this identity: an
    // unchanged tree is not read, a changed file is.
    let again = json_line(&env.ok(&format!("bk-put --from '{}'", src.display())));
    assert_eq!(again["unmodified_files"], 202, "{again}");
    assert_eq!(again["new_bytes"], 0, "{again}");
    std::fs::write(src.join("dir7/file0007"), noise(30_000, 777)).unwrap();
    std::fs::write(src.join("dir9/added"), noise(5_000, 778)).unwrap();
    let changed = json_line(&env.ok(&format!("bk-put --from '{}'", src.display())));
    assert_eq!(changed["unmodified_files"], 201, "{changed}");
    assert_eq!(changed["new_bytes"], 35_000, "{changed}");

    let out = env.path("restored");
    env.ok(&format!("bk-get latest --into '{}'", out.display()));
    for f in walk_files(&src) {
        let rel = f.strip_prefix(&src).unwrap();
        assert_eq!(
            std::fs::read(out.join(rel)).unwrap(),
            std::fs::read(&f).unwrap(),
            "{}",
            rel.display()
        );
    }
    assert_eq!(
        std::fs::read_link(out.join("dir1/link")).unwrap(),
        std::path::Path::new("file0001")
    );
}

#[test]
fn put_from_stdin_stores_one_named_file_and_bad_flags_are_usage_errors() {
    let env = Env::new();
    std::fs::write(env.path("dump.sql"), noise(3_000_000, 5)).unwrap();
    let snap = json_line(&env.ok("bk-put --from - --name db/dump.sql < dump.sql"));
    assert_eq!(snap["files"], 1);
    assert!(
        snap["identity"].as_str().unwrap().ends_with(":db/dump.sql"),
        "{snap}"
    );
    let back = env.run("bk-get latest db/dump.sql");
    assert!(back.status.success());
    assert_eq!(back.stdout, std::fs::read(env.path("dump.sql")).unwrap());

    let err = env.fails("bk-put --from - < dump.sql", 2);
    assert!(err.contains("--name"), "{err}");
    let err = env.fails("bk-put --from . --name x", 2);
    assert!(err.contains("--name applies only"), "{err}");
    let err = env.fails("bk-put --from . --parent 0000", 2);
    assert!(err.contains("0000"), "{err}");
    let err = env.fails("bk-put --from does-not-exist", 1);
    assert!(err.contains("does-not-exist"), "{err}");
}
