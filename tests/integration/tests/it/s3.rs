//! S3-specific behaviour against the real S3 test server that scripts/test
//! starts (run with BK_TEST_BACKEND=s3; skipped otherwise).

use crate::common::{faultproxy, tlsfront};

use crate::common::*;
use std::collections::HashMap;

fn s3() -> Option<(String, std::path::PathBuf, String)> {
    let m = s3_mode();
    if m.is_none() {
        eprintln!("skipped: set BK_TEST_BACKEND=s3 (scripts/test does)");
    }
    m
}

fn tree(env: &Env, name: &str, files: usize, seed: u64) -> std::path::PathBuf {
    let src = env.path(name);
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..files {
        std::fs::write(
            src.join(format!("f{i}")),
            noise(200_000 + i * 1000, seed * 1000 + i as u64),
        )
        .unwrap();
    }
    src
}

/// The S3 test server's socket address, from its `http://` endpoint.
fn server_addr(endpoint: &str) -> std::net::SocketAddr {
    endpoint.trim_start_matches("http://").parse().unwrap()
}

/// Backs up a new `tree` of `files` files and restores it into `out`, every
/// command preceded by `setup` (shell statements such as exports), and
/// checks the restored bytes.
fn backup_and_restore(env: &Env, setup: &str, files: usize, seed: u64, what: &str) {
    let src = tree(env, "src", files, seed);
    env.ok(&format!("{setup} bk-chunk '{}' | bk-put", src.display()));
    let out = env.path("out");
    env.ok(&format!("{setup} bk-get latest --into '{}'", out.display()));
    assert_restored(&src, &out, files, what);
}

/// Every file `tree` wrote into `src` came back in `out` byte for byte.
fn assert_restored(src: &std::path::Path, out: &std::path::Path, files: usize, what: &str) {
    for i in 0..files {
        let name = format!("f{i}");
        assert!(
            std::fs::read(out.join(&name)).unwrap() == std::fs::read(src.join(&name)).unwrap(),
            "{what}: {name} differs"
        );
    }
}

#[test]
fn prefixes_are_directories_and_isolated() {
    let Some((_, root, bucket)) = s3() else {
        return;
    };
    let env = Env::bare();
    let base = format!(
        "s3://{bucket}/iso-{}",
        env.dir.path().file_name().unwrap().to_string_lossy()
    );
    env.ok(&format!("bk-repo init -r {base}/app"));
    // With and without the trailing slash: the same repository.
    env.ok(&format!("bk-ls -r {base}/app/"));
    let src = tree(&env, "src", 3, 1);
    env.ok(&format!(
        "bk-chunk -r {base}/app '{}' | bk-put -r {base}/app/",
        src.display()
    ));
    assert_eq!(
        json_lines(&env.ok(&format!("bk-ls -r {base}/app"))).len(),
        1
    );
    // A sibling prefix sharing the name's beginning is another repository.
    env.fails(&format!("bk-ls -r {base}/app2"), 10);
    env.ok(&format!("bk-repo init -r {base}/app2"));
    assert!(json_lines(&env.ok(&format!("bk-ls -r {base}/app2"))).is_empty());
    assert_eq!(
        json_lines(&env.ok(&format!("bk-ls -r {base}/app"))).len(),
        1
    );
    // Objects live below PREFIX/ and nowhere else.
    let dir = root.join(&bucket);
    let prefix_dir = base.rsplit('/').next().unwrap();
    assert!(dir.join(prefix_dir).join("app/config").exists());
    assert!(dir.join(prefix_dir).join("app2/config").exists());
    let stray: Vec<_> = walk_files(&dir.join(prefix_dir))
        .into_iter()
        .filter(|p| {
            // Whole components: app2/… does not start with app.
            !p.starts_with(dir.join(prefix_dir).join("app"))
                && !p.starts_with(dir.join(prefix_dir).join("app2"))
        })
        .collect();
    assert!(stray.is_empty(), "objects outside the prefixes: {stray:?}");
    // A non-empty prefix that is not a repository is refused by init.
    env.fails(&format!("bk-repo init -r {base}"), 2);
}

/// Packs above `BK_S3_MULTIPART_THRESHOLD` go up in parts of
/// `BK_S3_PART_SIZE`, each with its `Content-MD5` (seen by a proxy that
/// injects no fault), and come back whole.
#[test]
fn multipart_uploads_round_trip() {
    let Some((endpoint, _, _)) = s3() else { return };
    let env = Env::bare();
    let proxy = faultproxy::FaultProxy::start(server_addr(&endpoint), 1, 0);
    let mp = format!(
        "AWS_ENDPOINT_URL={} BK_S3_MULTIPART_THRESHOLD=5242880 BK_S3_PART_SIZE=5242880",
        proxy.endpoint()
    );
    env.ok(&format!("{mp} bk-repo init --pack-size-mib 12"));
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let data = noise(30 << 20, 77);
    std::fs::write(src.join("big"), &data).unwrap();
    env.ok(&format!("{mp} bk-chunk '{}' | {mp} bk-put", src.display()));
    // 30 MiB of noise in packs of up to 12 MiB: at least two packs above
    // the threshold, in parts of at most 5 MiB.
    let created = proxy.requests_matching("?uploads");
    let parts = proxy.requests_matching("partNumber=");
    assert!(created.len() >= 2, "{created:?}");
    assert!(parts.len() >= 6, "{parts:?}");
    assert!(parts.iter().all(|p| p.content_md5), "{parts:?}");
    let packs = walk_files(&env.repo.join("data"));
    assert!(
        packs
            .iter()
            .filter(|p| std::fs::metadata(p).unwrap().len() > 5 << 20)
            .count()
            >= 2,
        "{packs:?}"
    );
    let out = env.run(&format!("{mp} bk-get latest big"));
    assert!(out.status.success());
    assert!(out.stdout == data);
}

#[test]
fn auth_and_bucket_errors_are_clear_and_leak_no_secret() {
    let Some((endpoint, _, bucket)) = s3() else {
        return;
    };
    let env = Env::new();
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    let err = env.fails("AWS_SECRET_ACCESS_KEY=wrong-secret-value bk-ls", 1);
    assert!(
        err.contains("access denied") && err.contains(&format!("bucket {bucket}")),
        "{err}"
    );
    assert!(
        !err.contains("wrong-secret-value") && !err.contains(&secret),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("error:")).count(),
        1,
        "{err}"
    );
    let err = env.fails("bk-ls -r s3://no-such-bucket-here/x", 10);
    assert!(err.contains("no-such-bucket-here"), "{err}");
    // init: a missing bucket is the user's to create; a refusal is named.
    let err = env.fails("bk-repo init -r s3://no-such-bucket-here/x", 2);
    assert!(err.contains("create the bucket first"), "{err}");
    let err = env.fails(
        &format!("AWS_SECRET_ACCESS_KEY=wrong-secret-value bk-repo init -r s3://{bucket}/denied"),
        1,
    );
    assert!(err.contains("access denied"), "{err}");
    assert!(
        !err.contains("wrong-secret-value") && !err.contains(&secret),
        "{err}"
    );
    // An endpoint written with credentials in it is a usage error that
    // prints it redacted (S3 signs with the access key; the SDK would sign
    // the userinfo into the host and report a signature mismatch).
    let with_user = endpoint.replacen("http://", "http://someuser:hunter2@", 1);
    let err = env.fails(
        &format!("AWS_ENDPOINT_URL='{with_user}' bk-repo init -r s3://{bucket}/redact"),
        2,
    );
    assert!(
        !err.contains("hunter2") && !err.contains("someuser"),
        "{err}"
    );
    let printed = endpoint.replacen("http://", "http://***@", 1);
    assert!(
        err.contains(&format!(
            "AWS_ENDPOINT_URL {printed}: an S3 endpoint takes no user"
        )),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn faults_never_yield_a_snapshot_without_its_data() {
    let Some((endpoint, _, _)) = s3() else { return };
    let upstream = server_addr(&endpoint);
    let env = Env::bare();
    env.ok("bk-repo init --pack-size-mib 1");
    let proxy = faultproxy::FaultProxy::start(upstream, 0x5eed, 12);
    let via = format!(
        "AWS_ENDPOINT_URL={} BK_S3_ATTEMPT_TIMEOUT=2 BK_S3_MAX_ATTEMPTS=5",
        proxy.endpoint()
    );
    let mut committed: HashMap<String, std::path::PathBuf> = HashMap::new();
    let (mut ok, mut failed, mut restored_through_faults) = (0, 0, 0);
    for round in 0..8u64 {
        // Half the rounds under a heavy storm, where some runs fail.
        proxy.rate.store(
            if round < 4 { 12 } else { 45 },
            std::sync::atomic::Ordering::SeqCst,
        );
        let src = tree(&env, &format!("src{round}"), 6, round + 10);
        let out = env.run(&format!(
            "{via} bk-chunk '{}' | {via} bk-put --tag round={round}",
            src.display()
        ));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!stderr.contains("panicked"), "{stderr}");
        if out.status.success() {
            let snap = json_line(&String::from_utf8_lossy(&out.stdout));
            committed.insert(snap["id"].as_str().unwrap().to_string(), src);
            ok += 1;
        } else {
            assert!(
                stderr
                    .lines()
                    .any(|l| l.starts_with("bk-") && l.contains("error:")),
                "unclear failure: {stderr}"
            );
            assert!(out.stdout.is_empty());
            failed += 1;
        }
        // A restore through the faults gives the right bytes or fails.
        if let Some((id, src)) = committed.iter().next() {
            let out = env.run(&format!("{via} bk-get {id} f3"));
            if out.status.success() {
                assert!(
                    out.stdout == std::fs::read(src.join("f3")).unwrap(),
                    "restore through faults returned wrong bytes"
                );
                restored_through_faults += 1;
            }
        }
    }
    let counts = proxy.counts.lock().unwrap().clone();
    eprintln!(
        "fault proxy: {counts:?}; backups ok {ok}, failed {failed}; \
         restores through faults ok {restored_through_faults}"
    );
    let injected = |f| counts.get(&f).copied().unwrap_or(0);
    assert!(
        counts
            .iter()
            .filter(|(f, _)| **f != faultproxy::Fault::None)
            .map(|(_, n)| n)
            .sum::<u64>()
            >= 10,
        "{counts:?}"
    );
    // Every kind of response fault reached bk at least once.
    for f in [
        faultproxy::Fault::InternalError,
        faultproxy::Fault::SlowDown,
        faultproxy::Fault::Reset,
        faultproxy::Fault::Stall,
    ] {
        assert!(injected(f) >= 1, "{f:?} never injected: {counts:?}");
    }
    assert!(
        ok >= 4,
        "retries should carry most backups through: ok {ok}, failed {failed}, {counts:?}"
    );
    assert!(restored_through_faults >= 1, "{counts:?}");
    // A server that only fails: the backup fails with one clear error line,
    // prints no snapshot and commits none.
    proxy.rate.store(100, std::sync::atomic::Ordering::SeqCst);
    *proxy.faults.lock().unwrap() = vec![
        faultproxy::Fault::InternalError,
        faultproxy::Fault::SlowDown,
    ];
    let src = tree(&env, "src-down", 6, 99);
    let out = env.run(&format!(
        "{via} BK_S3_MAX_ATTEMPTS=2 bk-chunk '{}' | {via} BK_S3_MAX_ATTEMPTS=2 bk-put --tag round=down",
        src.display()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("bk-") && l.contains("error:") && l.contains("bucket")),
        "unclear failure: {stderr}"
    );
    // Without faults: every snapshot in the repository, including any
    // committed by a run that then failed, restores completely and holds
    // exactly what its round backed up.
    drop(proxy);
    for snap in env.snapshots() {
        let id = snap["id"].as_str().unwrap();
        let round = snap["tags"]["round"].as_str().unwrap();
        let out = env.path(&format!("restore-{id}"));
        env.ok(&format!("bk-get {id} --into '{}'", out.display()));
        assert_restored(&env.path(&format!("src{round}")), &out, 6, id);
    }
    assert!(committed
        .keys()
        .all(|id| env.snapshots().iter().any(|s| s["id"] == id.as_str())));
}

/// Issue 32, item 6: prunes and WAL pushes and fetches through a store
/// that fails (5xx, SlowDown, resets, stalls, flipped and truncated bodies,
/// listings failing between their pages: BK_TEST_S3_LIST_PAGE=2 makes every
/// listing several pages) either succeed with correct data or fail with
/// one clear line; a fetch never answers "not in the archive" (exit 1,
/// which would end PostgreSQL's recovery) for a segment that is there; and
/// once the faults stop, nothing the policy keeps is missing.
#[test]
fn faults_during_prune_and_wal_traffic_delete_nothing_that_should_stay() {
    let Some((endpoint, _, _)) = s3() else { return };
    let upstream = server_addr(&endpoint);
    let env = Env::bare();
    env.ok("bk-repo init --pack-size-mib 1");
    let mut sources = HashMap::new();
    for round in 0..6u64 {
        let src = tree(&env, &format!("src{round}"), 6, round + 40);
        let snap = json_line(&env.ok(&format!(
            "bk-put --from '{}' --identity t@faults:/src",
            src.display()
        )));
        sources.insert(snap["id"].as_str().unwrap().to_string(), src);
    }
    let proxy = faultproxy::FaultProxy::start(upstream, 0xbeef, 20);
    let via = format!(
        "AWS_ENDPOINT_URL={} BK_S3_ATTEMPT_TIMEOUT=2 BK_S3_MAX_ATTEMPTS=4 BK_TEST_S3_LIST_PAGE=2",
        proxy.endpoint()
    );
    let clean_failure = |what: &str, out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("bk-") && l.contains("error:")),
            "{what}: unclear failure: {stderr}"
        );
    };
    let dir = env.path("pg_wal");
    std::fs::create_dir_all(&dir).unwrap();
    let mut pushed = Vec::new();
    let (mut prunes_ok, mut fetches_ok, mut failures) = (0, 0, 0);
    for i in 1..=10u64 {
        let (name, bytes) = wal_segment(i);
        std::fs::write(dir.join(&name), &bytes).unwrap();
        let out = env.run(&format!(
            "{via} bk-wal --stanza f push '{}'",
            dir.join(&name).display()
        ));
        if out.status.success() {
            pushed.push(i);
        } else {
            clean_failure("push", &out);
            failures += 1;
        }
        let out = env.run(&format!(
            "{via} bk-prune --keep-last 3 --grace 0 --max-unused 0%"
        ));
        if out.status.success() {
            prunes_ok += 1;
        } else {
            clean_failure("prune", &out);
            failures += 1;
        }
        if let Some(&seg) = pushed.first() {
            let (name, bytes) = wal_segment(seg);
            let dest = env.path("fetched");
            let _ = std::fs::remove_file(&dest);
            let out = env.run(&format!(
                "{via} bk-wal --stanza f fetch --retry-secs 0 {name} '{}'",
                dest.display()
            ));
            assert_ne!(
                out.status.code(),
                Some(1),
                "a fault made fetch say {name} is not archived"
            );
            if out.status.success() {
                assert_eq!(
                    std::fs::read(&dest).unwrap(),
                    bytes,
                    "fetch through faults: wrong bytes"
                );
                fetches_ok += 1;
            } else {
                clean_failure("fetch", &out);
                failures += 1;
            }
        }
    }
    let counts = proxy.counts.lock().unwrap().clone();
    drop(proxy);
    eprintln!(
        "fault proxy: {counts:?}; pushes ok {}, prunes ok {prunes_ok}, fetches ok {fetches_ok}, clean failures {failures}",
        pushed.len()
    );
    assert!(
        prunes_ok >= 1 && fetches_ok >= 1 && !pushed.is_empty(),
        "{counts:?}"
    );
    // Without faults: the prune finishes, everything verifies, the policy's
    // three snapshots restore exactly, every pushed segment comes back.
    env.ok("bk-prune --keep-last 3 --grace 0 --max-unused 0%");
    env.ok("bk-prune --keep-last 3 --grace 0 --max-unused 0%");
    let verify = env.run("bk-verify --read-data");
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 3);
    for snap in &snaps {
        let id = snap["id"].as_str().unwrap();
        let out = env.path(&format!("restore-{id}"));
        env.ok(&format!("bk-get {id} --into '{}'", out.display()));
        assert_restored(&sources[id], &out, 6, id);
    }
    for seg in pushed {
        let (name, bytes) = wal_segment(seg);
        let dest = env.path(&format!("final-{name}"));
        env.ok(&format!(
            "bk-wal --stanza f fetch {name} '{}'",
            dest.display()
        ));
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    }
}

/// Uploads go with `UNSIGNED-PAYLOAD`, so only their checksum header
/// protects the body in transit: a server that verifies it must refuse a
/// damaged upload, bk must send it again, and what is stored must be
/// exactly what was backed up. A server that does not echo the SHA-256
/// checksum (taken as one that ignores it) gets `Content-MD5` on every
/// upload instead.
#[test]
fn damaged_uploads_are_refused_by_their_checksum_and_sent_again() {
    let Some((endpoint, _, _)) = s3() else { return };
    let upstream = server_addr(&endpoint);
    for hide_echo in [false, true] {
        let env = Env::bare();
        env.ok("bk-repo init --pack-size-mib 1");
        let proxy = faultproxy::FaultProxy::start(upstream, 0xd16e57, 50);
        *proxy.faults.lock().unwrap() = vec![faultproxy::Fault::FlipRequestByte];
        // Two damaged bodies at most: even both on one upload leave it
        // a third attempt.
        proxy
            .request_flips_left
            .store(2, std::sync::atomic::Ordering::SeqCst);
        proxy
            .hide_checksum_echo
            .store(hide_echo, std::sync::atomic::Ordering::SeqCst);
        let via = format!("AWS_ENDPOINT_URL={}", proxy.endpoint());
        let src = tree(&env, "src", 12, 3);
        let out = env.run(&format!(
            "{via} bk-chunk '{}' | {via} bk-put",
            src.display()
        ));
        let uploads = *proxy.uploads.lock().unwrap();
        drop(proxy);
        assert!(
            out.status.success(),
            "hide_echo {hide_echo}: {}; {uploads:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(uploads.flipped, 2, "{uploads:?}");
        assert_eq!(uploads.unsigned_payload, uploads.total, "{uploads:?}");
        assert_eq!(uploads.with_sha256_checksum, uploads.total, "{uploads:?}");
        if hide_echo {
            assert_eq!(uploads.with_content_md5, uploads.total, "{uploads:?}");
        } else {
            // bk-put's first upload (its lock, alone) learns that the
            // server verifies the SHA-256; only it and its re-sends carry
            // Content-MD5.
            assert!(uploads.total >= 2 + uploads.flipped, "{uploads:?}");
            assert!(
                (1..=1 + uploads.flipped).contains(&uploads.with_content_md5),
                "{uploads:?}"
            );
        }
        // Straight from the server: every byte as it was backed up.
        let out = env.path("out");
        env.ok(&format!("bk-get latest --into '{}'", out.display()));
        assert_restored(&src, &out, 12, &format!("hide_echo {hide_echo}"));
        env.ok("bk-verify --read-data");
    }
}

/// HTTPS through a TLS front (as nginx before a Garage node) whose
/// certificate comes from a private CA. Trusted through `AWS_CA_BUNDLE`,
/// every tool works; untrusted, the first handshake fails with a hint and
/// is not retried; `https://` to a plain-HTTP server says so; a bundle that
/// is not one is a usage error, not a panic.
#[test]
fn https_endpoints_trust_a_private_ca_from_aws_ca_bundle() {
    let Some((endpoint, _, _)) = s3() else { return };
    let upstream = server_addr(&endpoint);
    let front = tlsfront::start(upstream);
    let env = Env::bare();
    std::fs::write(env.path("ca.pem"), &front.ca_pem).unwrap();
    let https = format!("export AWS_ENDPOINT_URL=https://localhost:{};", front.port);

    let err = env.fails(&format!("{https} bk-repo init"), 1);
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(err.contains("set AWS_CA_BUNDLE"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert_eq!(front.handshakes(), 1, "a failed handshake was retried");

    let tls = format!("{https} export AWS_CA_BUNDLE=ca.pem;");
    env.ok(&format!("{tls} bk-repo init"));
    backup_and_restore(&env, &tls, 4, 9, "over HTTPS");
    env.ok(&format!("{tls} bk-verify --read-data"));
    // The certificate names the address too.
    let by_ip = format!(
        "export AWS_ENDPOINT_URL=https://127.0.0.1:{} AWS_CA_BUNDLE=ca.pem;",
        front.port
    );
    assert_eq!(json_lines(&env.ok(&format!("{by_ip} bk-ls"))).len(), 1);

    let err = env.fails(&format!("AWS_ENDPOINT_URL=https://{upstream} bk-ls"), 1);
    assert!(
        err.contains("for a plain-HTTP server write http://"),
        "{err}"
    );

    std::fs::write(env.path("bad.pem"), "not a certificate\n").unwrap();
    let err = env.fails(&format!("{https} AWS_CA_BUNDLE=bad.pem bk-ls"), 2);
    assert!(
        err.contains("AWS_CA_BUNDLE bad.pem: holds no PEM certificate"),
        "{err}"
    );
    let err = env.fails(&format!("{https} AWS_CA_BUNDLE=missing.pem bk-ls"), 2);
    assert!(
        err.contains("cannot read AWS_CA_BUNDLE missing.pem"),
        "{err}"
    );
}

/// A profile in the shared config and credentials files (`AWS_PROFILE`,
/// `AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`) supplies the keys, the
/// region and the endpoint when no AWS_* variable does, as for the AWS CLI.
/// An endpoint in the environment goes before the profile's, and
/// `AWS_ENDPOINT_URL_S3` before `AWS_ENDPOINT_URL` (bk(7)).
#[test]
fn a_profile_supplies_keys_region_and_endpoint() {
    let Some((endpoint, _, _)) = s3() else { return };
    let key_id = std::env::var("AWS_ACCESS_KEY_ID").unwrap();
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap();
    let env = Env::bare();
    // Nothing listens here: a request sent to it fails.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let profiles = |endpoint: &str, secret: &str| {
        std::fs::write(
            env.path("aws-config"),
            format!("[default]\nregion = eu-west-3\n\n[profile nightly]\nregion = eu-central-1\nendpoint_url = {endpoint}\n"),
        )
        .unwrap();
        std::fs::write(
            env.path("aws-credentials"),
            format!("[default]\naws_access_key_id = AKIDEFAULTWRONG\naws_secret_access_key = default-wrong\n\n[nightly]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"),
        )
        .unwrap();
    };
    let only_profile = "unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN \
         AWS_REGION AWS_DEFAULT_REGION AWS_ENDPOINT_URL AWS_ENDPOINT_URL_S3; \
         export AWS_PROFILE=nightly AWS_CONFIG_FILE=aws-config \
         AWS_SHARED_CREDENTIALS_FILE=aws-credentials;";

    // Through a proxy that records each request's credential scope: the
    // profile's region signs them (the server here accepts any region).
    let proxy = faultproxy::FaultProxy::start(server_addr(&endpoint), 1, 0);
    profiles(&proxy.endpoint(), &secret);
    env.ok(&format!("{only_profile} bk-repo init"));
    backup_and_restore(&env, only_profile, 3, 21, "through a profile");
    let seen = proxy.seen.lock().unwrap().clone();
    assert!(seen.len() >= 5, "{seen:?}");
    assert!(
        seen.iter()
            .all(|s| s.region.as_deref() == Some("eu-central-1")),
        "{seen:?}"
    );
    drop(proxy);

    // The profile's keys are the ones used: a wrong secret there is refused
    // and not printed.
    profiles(&endpoint, "profile-secret-that-is-wrong");
    let err = env.fails(&format!("{only_profile} bk-ls"), 1);
    assert!(err.contains("access denied"), "{err}");
    assert!(!err.contains("profile-secret-that-is-wrong"), "{err}");

    // The environment's endpoint goes before the profile's, and the
    // S3-specific variable before the general one.
    profiles(&dead, &secret);
    assert_eq!(
        json_lines(&env.ok(&format!("{only_profile} AWS_ENDPOINT_URL={endpoint} bk-ls"))).len(),
        1
    );
    assert_eq!(
        json_lines(&env.ok(&format!(
            "{only_profile} AWS_ENDPOINT_URL={dead} AWS_ENDPOINT_URL_S3={endpoint} bk-ls"
        )))
        .len(),
        1
    );
}

/// `BK_S3_ADDRESSING` switches the style: with an endpoint named
/// `localhost`, path-style requests (the default with an endpoint) reach the
/// server, while virtual-hosted ones put the bucket into the host name
/// (`BUCKET.localhost`), which nothing here resolves. A tunable that does
/// not parse is a usage error naming it, never silently the default; an
/// empty one counts as unset.
#[test]
fn addressing_style_switches_and_bad_tunables_are_refused() {
    let Some((endpoint, _, _)) = s3() else { return };
    let env = Env::new();
    let port = server_addr(&endpoint).port();
    let by_name = format!("export AWS_ENDPOINT_URL=http://localhost:{port} BK_S3_MAX_ATTEMPTS=1;");
    env.ok(&format!("{by_name} bk-ls"));
    env.ok(&format!("{by_name} BK_S3_ADDRESSING=path bk-ls"));
    let err = env.fails(&format!("{by_name} BK_S3_ADDRESSING=virtual bk-ls"), 1);
    assert!(err.contains("dns error"), "{err}");
    assert!(
        err.contains("BK_S3_ADDRESSING=path does not need it"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    for (var, value) in [
        ("BK_S3_ADDRESSING", "virutal"),
        ("BK_S3_CONCURRENCY", "eight"),
        ("BK_S3_PART_SIZE", "16M"),
    ] {
        let err = env.fails(&format!("{var}={value} bk-ls"), 2);
        assert!(err.contains(var) && err.contains(value), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    env.ok("BK_S3_CONCURRENCY= BK_S3_ADDRESSING= bk-ls");
}
