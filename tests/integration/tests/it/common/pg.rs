//! A real PostgreSQL for the bk-wal tests: Debian's server binaries, run as
//! an unprivileged user (`postgres` when the tests run as root) on a
//! private Unix socket directory and no TCP port, with bk-wal as its
//! archive_command and restore_command.

use super::{bin_dir, Env};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The directory of PostgreSQL's server binaries (`BK_TEST_PG_BIN`, else
/// the newest /usr/lib/postgresql/*/bin), or `None` when there is none.
pub fn pg_bin_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("BK_TEST_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// Whether the PostgreSQL tests can run here; they fail (not skip) in CI,
/// where scripts/test installs PostgreSQL first.
pub fn required() -> PathBuf {
    match pg_bin_dir() {
        Some(d) => d,
        None => panic!(
            "PostgreSQL server binaries not found (install Debian's postgresql, or set BK_TEST_PG_BIN)"
        ),
    }
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Makes `path` usable by the server's user: owned by it when we are root.
pub fn hand_over(path: &Path) {
    if running_as_root() {
        let st = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "chown {}", path.display());
    }
}

pub struct Pg {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub socket_dir: PathBuf,
    pub port: u16,
    pub log: PathBuf,
}

impl Pg {
    /// initdb a new cluster in `env`'s directory under `name`, configured
    /// to listen only on its private socket.
    pub fn init(env: &Env, name: &str) -> Pg {
        let bin = required();
        let root = env.path(name);
        std::fs::create_dir_all(&root).unwrap();
        // The server's user must reach the scratch directory.
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let pg = Pg {
            bin,
            data: root.join("data"),
            socket_dir: root.join("sock"),
            port: free_port(),
            log: root.join("server.log"),
        };
        std::fs::create_dir_all(&pg.socket_dir).unwrap();
        hand_over(&root);
        let out = pg.as_server_user("initdb", |c| {
            c.args(["-D"]).arg(&pg.data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]);
        });
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.configure(&format!(
            "listen_addresses = ''\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n\
             wal_level = replica\nmax_wal_senders = 4\nlog_min_messages = info\n",
            pg.port,
            pg.socket_dir.display()
        ));
        pg
    }

    /// A cluster directory restored by some other means (bk-wal restore):
    /// same layout, a new port.
    pub fn at(env: &Env, name: &str, data: PathBuf) -> Pg {
        let root = env.path(name);
        std::fs::create_dir_all(root.join("sock")).unwrap();
        hand_over(&root);
        Pg {
            bin: required(),
            data,
            socket_dir: root.join("sock"),
            port: free_port(),
            log: root.join("server.log"),
        }
    }

    /// Runs one PostgreSQL program as the server's user.
    pub fn as_server_user(&self, program: &str, args: impl FnOnce(&mut Command)) -> Output {
        let exe = self.bin.join(program);
        let mut c = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        c.current_dir("/");
        args(&mut c);
        c.output().unwrap()
    }

    /// Appends settings to postgresql.conf (later lines win).
    pub fn configure(&self, lines: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .unwrap();
        writeln!(f, "{lines}").unwrap();
    }

    /// Starts the server and waits until it accepts connections; returns
    /// pg_ctl's output (failure included) for tests that expect one.
    pub fn try_start(&self) -> Output {
        // The server rewrites port and socket on every start of a copy.
        self.configure(&format!(
            "port = {}\nunix_socket_directories = '{}'",
            self.port,
            self.socket_dir.display()
        ));
        self.as_server_user("pg_ctl", |c| {
            c.args(["-D"])
                .arg(&self.data)
                .args(["-l"])
                .arg(&self.log)
                .args(["-w", "-t", "120", "start"]);
        })
    }

    pub fn start(&self) {
        let out = self.try_start();
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
    }

    pub fn stop(&self) {
        let _ = self.as_server_user("pg_ctl", |c| {
            c.args(["-D"])
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"]);
        });
    }

    /// Starts a server that is expected to stop by itself (FATAL during
    /// recovery): pg_ctl may report success first, when a hot standby
    /// accepts read-only connections before recovery reaches its end.
    /// Returns whether it stopped within `timeout`.
    pub fn start_expecting_it_to_stop(&self, timeout: Duration) -> bool {
        let _ = self.try_start();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if !self.data.join("postmaster.pid").exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One SQL statement (or several) through psql; its unaligned output.
    pub fn try_sql(&self, sql: &str) -> Output {
        self.as_server_user("psql", |c| {
            c.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(&self.socket_dir)
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                    sql,
                ]);
        })
    }

    pub fn sql(&self, sql: &str) -> String {
        let out = self.try_sql(sql);
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Waits until `sql` returns `want` (the archiver and recovery work
    /// in the background).
    pub fn wait_for(&self, sql: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.try_sql(sql);
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sql:?} still gives {got:?}, not {want:?}, after {timeout:?}\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Forces a new WAL segment and returns the name of the one it closed.
    pub fn switch_wal(&self) -> String {
        self.sql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// Waits until the archiver has archived `name` (or a later file).
    pub fn wait_archived(&self, name: &str) {
        let sql =
            format!("SELECT coalesce(last_archived_wal >= '{name}', false) FROM pg_stat_archiver");
        self.wait_for(&sql, "t", Duration::from_secs(60));
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let _ = self.as_server_user("pg_ctl", |c| {
                c.args(["-D"])
                    .arg(&self.data)
                    .args(["-m", "immediate", "-w", "stop"]);
            });
        }
    }
}

fn free_port() -> u16 {
    // Only names the socket file; the server listens on no TCP port.
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A script that runs bk-wal with this Env's repository, an identity key
/// (no passphrase: every archive_command call would pay scrypt) and, in S3
/// mode, the endpoint and credentials: what a server's environment holds
/// in production. Returns its path, for archive_command/restore_command.
pub fn bk_wal_wrapper(env: &Env) -> PathBuf {
    let identity = env.path("wal.identity");
    if !identity.exists() {
        env.ok(&format!(
            "bk-repo key add --generate-identity {}",
            identity.display()
        ));
    }
    // Push metrics go where the server's user may write.
    let metrics = env.path("metrics");
    std::fs::create_dir_all(&metrics).unwrap();
    hand_over(&metrics);
    // The prefetch spool goes away with the scratch directory.
    let spool = env.path("fetch-spool");
    std::fs::create_dir_all(&spool).unwrap();
    hand_over(&spool);
    let mut exports = vec![
        (
            "BK_WAL_FETCH_SPOOL".to_string(),
            spool.display().to_string(),
        ),
        (
            "BK_WAL_METRICS".to_string(),
            metrics.join("push.prom").display().to_string(),
        ),
        ("BK_REPO".to_string(), env.repo_url.clone()),
        (
            "BK_IDENTITY_FILE".to_string(),
            identity.display().to_string(),
        ),
    ];
    if let Some((endpoint, _, _)) = super::s3_mode() {
        exports.push(("AWS_ENDPOINT_URL".into(), endpoint));
        for k in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
        ] {
            if let Ok(v) = std::env::var(k) {
                exports.push((k.to_string(), v));
            }
        }
    }
    let mut script = String::from("#!/bin/sh\nunset BK_PASSWORD BK_PASSWORD_FILE\n");
    for (k, v) in exports {
        script.push_str(&format!("export {k}='{v}'\n"));
    }
    // A copy beside the script: the build directory may be where the
    // server's user cannot reach (a checkout under /root). The installed
    // form, the multi-call `bk` behind a `bk-wal` link: the server runs
    // it, and the push and fetch helpers it starts must start `bk wal`.
    let exe = env.path("bk-wal");
    if !exe.exists() {
        let multicall = env.path("bk");
        std::fs::copy(bin_dir().join("bk"), &multicall).unwrap();
        hand_over(&multicall);
        std::os::unix::fs::symlink("bk", &exe).unwrap();
    }
    script.push_str(&format!("exec {} \"$@\"\n", exe.display()));
    let path = env.path("bk-wal.sh");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    hand_over(&identity);
    hand_over(&path);
    if super::s3_mode().is_none() {
        // The server's user writes WAL objects into the repository, and
        // reads what bk-wal backup (this user) writes: a world-readable
        // config shares the objects written from now on (bk-repo(1)).
        hand_over(&env.repo);
        std::fs::set_permissions(
            env.repo.join("config"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
    }
    path
}
