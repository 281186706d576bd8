//! Helpers: a scratch directory with a repository, and the real binaries
//! run through `bash -c` so pipelines use real pipes.
#![allow(dead_code)]

pub mod faultproxy;
pub mod pg;
pub mod tlsfront;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub fn bin_dir() -> PathBuf {
    let exe = assert_cmd::cargo::cargo_bin("bk-put");
    assert!(
        exe.exists(),
        "{} not built: run `cargo build --workspace` first",
        exe.display()
    );
    exe.parent().unwrap().to_path_buf()
}

/// The checkout the tests run in: scripts/, man/ and docs/ are read from it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Every tool, by the command name it is installed as.
pub const TOOLS: [&str; 9] = [
    "bk-chunk",
    "bk-put",
    "bk-get",
    "bk-ls",
    "bk-repo",
    "bk-prune",
    "bk-verify",
    "bk-wal",
    "bk-sqlite",
];

/// A finished process's exit code (-1 when a signal ended it).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// A finished process for an assertion message: its code and both outputs.
pub fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Writes `data` to `path`, creating its directories.
pub fn write_file(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Two applications' identities in a shared repository (the seeds' *arr
/// apps): entrypoints and drills must pick APP's snapshots, never OTHER's.
pub const APP: &str = "radarr@media:/data";
pub const OTHER: &str = "prowlarr@media:/data";

/// A small application volume: a few files in nested directories, one of
/// them private (0600) and one hidden.
pub fn app_volume(dir: &Path, seed: u64) {
    write_file(
        &dir.join("config.xml"),
        format!("<config seed={seed}/>\n").as_bytes(),
    );
    write_file(&dir.join("db/app.db"), &noise(300_000, seed));
    write_file(&dir.join("logs/.hidden"), b"dotfile\n");
    std::fs::set_permissions(
        dir.join("config.xml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}

pub struct Env {
    pub dir: tempfile::TempDir,
    /// Where the repository's objects are on disk: the repository directory,
    /// or (S3 mode) the S3 test server's directory for this prefix.
    pub repo: PathBuf,
    /// The address the tools get (`BK_REPO`).
    pub repo_url: String,
    pub pw: PathBuf,
}

/// S3 mode: `BK_TEST_BACKEND=s3` with the server that scripts/test starts
/// (`BK_TEST_S3_ENDPOINT`, `BK_TEST_S3_ROOT`, `BK_TEST_S3_BUCKET`, and the
/// usual AWS_* credentials). Every Env gets its own prefix in the bucket.
pub fn s3_mode() -> Option<(String, PathBuf, String)> {
    if std::env::var("BK_TEST_BACKEND").ok().as_deref() != Some("s3") {
        return None;
    }
    let endpoint = std::env::var("BK_TEST_S3_ENDPOINT").expect("BK_TEST_S3_ENDPOINT");
    let root = PathBuf::from(std::env::var("BK_TEST_S3_ROOT").expect("BK_TEST_S3_ROOT"));
    let bucket = std::env::var("BK_TEST_S3_BUCKET").unwrap_or_else(|_| "bk-test".into());
    Some((endpoint, root, bucket))
}

impl Env {
    /// A new scratch directory with an initialized repository.
    pub fn new() -> Env {
        let env = Env::bare();
        env.ok("bk-repo init");
        env
    }

    /// A scratch directory and a passphrase file, no repository yet.
    pub fn bare() -> Env {
        let dir = tempfile::Builder::new().prefix("bk-it-").tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, format!("{PASSPHRASE}\n")).unwrap();
        let (repo, repo_url) = match s3_mode() {
            Some((_, root, bucket)) => {
                let prefix = dir
                    .path()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string();
                (
                    root.join(&bucket).join(&prefix),
                    format!("s3://{bucket}/{prefix}"),
                )
            }
            None => {
                let repo = dir.path().join("repo");
                let url = repo.display().to_string();
                (repo, url)
            }
        };
        Env {
            dir,
            repo,
            repo_url,
            pw,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A bash command (with pipefail) with the binaries on PATH and the repository set.
    pub fn sh(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg("-c").arg(format!("set -o pipefail; {script}"));
        let path = format!(
            "{}:{}",
            bin_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("PATH", path);
        self.repository_env(&mut c);
        c
    }

    /// One bk tool run directly (no shell), with the same environment as
    /// [`Env::sh`], so a test can signal the tool's own process.
    pub fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(bin_dir().join(name));
        self.repository_env(&mut c);
        c
    }

    /// The repository, its secret and (S3 mode) the endpoint, in this
    /// scratch directory, with nothing on stdin.
    fn repository_env(&self, c: &mut Command) {
        c.env("BK_REPO", &self.repo_url)
            .env("BK_PASSWORD_FILE", &self.pw)
            .env_remove("BK_PASSWORD")
            .env_remove("BK_IDENTITY_FILE")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some((endpoint, _, _)) = s3_mode() {
            c.env("AWS_ENDPOINT_URL", endpoint);
        }
    }

    pub fn run(&self, script: &str) -> Output {
        self.sh(script).output().unwrap()
    }

    /// Runs and requires exit 0; returns stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.run(script);
        assert!(
            out.status.success(),
            "`{script}` failed with {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires the given exit code; returns stderr.
    pub fn fails(&self, script: &str, code: i32) -> String {
        let out = self.run(script);
        assert_eq!(
            out.status.code(),
            Some(code),
            "`{script}`\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// `bk-put --from DIR --identity IDENTITY`; returns its stdout.
    pub fn put_as(&self, dir: &Path, identity: &str) -> String {
        self.ok(&format!(
            "bk-put --from '{}' --identity '{identity}'",
            dir.display()
        ))
    }

    /// Backs up `src` and returns bk-put's snapshot record.
    pub fn backup(&self, src: &Path, extra: &str) -> serde_json::Value {
        let out = self.ok(&format!("bk-chunk '{}' | bk-put {extra}", src.display()));
        json_line(&out)
    }

    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        json_lines(&self.ok("bk-ls"))
    }

    pub fn pack_count(&self) -> usize {
        walk_files(&self.repo.join("data")).len()
    }
}

/// The last `progress` record a tool wrote on stderr (`--progress json`).
pub fn last_progress(stderr: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .rfind(|l| l.starts_with("{\"type\":\"progress\""))
        .map(json_line)
        .unwrap_or_else(|| panic!("no progress record: {text}"))
}

pub fn json_line(s: &str) -> serde_json::Value {
    let lines = json_lines(s);
    assert_eq!(lines.len(), 1, "expected one JSON line, got: {s}");
    lines.into_iter().next().unwrap()
}

pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

pub fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub use bk::testing::noise;

/// The passphrase every [`Env`] repository is created with.
pub const PASSPHRASE: &str = "it's a secret passphrase";

/// The repository's storage as the library opens it in this process
/// (local or, in S3 mode, the test server), for tests that drive the
/// library directly or wrap the storage in a fault-injecting backend.
pub fn open_backend(env: &Env) -> std::sync::Arc<dyn bk::backend::Backend> {
    if let Some((endpoint, _, _)) = s3_mode() {
        std::env::set_var("AWS_ENDPOINT_URL", endpoint);
    }
    bk::backend::open(&env.repo_url).unwrap()
}

/// The repository opened over `backend` with the test passphrase.
pub fn open_repo(backend: std::sync::Arc<dyn bk::backend::Backend>) -> bk::repo::Repository {
    let secret = bk::keys::Secret::passphrase(PASSPHRASE.into());
    bk::repo::Repository::open(backend, &secret).unwrap()
}

/// Commits `data` as a one-file snapshot from this process; returns its id.
pub fn put_bytes(repo: &bk::repo::Repository, name: &str, data: &[u8]) -> String {
    let out = bk::put::put_stream(repo, name, data, &Default::default()).unwrap();
    out.snapshot.id.to_hex()
}

/// A WAL segment of 1 MiB that bk-wal push accepts: a PostgreSQL 15 long page
/// header naming segment `segno` of timeline 1 (cluster 0x5EED), then noise.
pub fn wal_segment(segno: u64) -> (String, Vec<u8>) {
    let size = 1u32 << 20;
    let mut b = noise(size as usize, 77_000 + segno);
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    b[8..16].copy_from_slice(&(segno * u64::from(size)).to_le_bytes());
    b[16..24].fill(0);
    b[24..32].copy_from_slice(&0x5EEDu64.to_le_bytes());
    b[32..36].copy_from_slice(&size.to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    let per = 0x1_0000_0000u64 / u64::from(size);
    (format!("00000001{:08X}{:08X}", segno / per, segno % per), b)
}
