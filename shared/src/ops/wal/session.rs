//! One held connection to PostgreSQL, through `psql` as a coprocess.
//!
//! A non-exclusive base backup must start and stop on the same session,
//! and psql takes its connection from libpq's environment exactly as
//! PostgreSQL's own tools do (PGHOST, PGPORT, PGUSER, PGDATABASE,
//! PGPASSFILE, PGSERVICE, sslmode …), which no Rust client reproduces
//! whole. If this process dies, psql's stdin closes, the session ends and
//! PostgreSQL aborts the backup by itself.

use crate::error::{Error, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

pub struct PgSession {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    queries: u64,
}

impl PgSession {
    /// Connects with `psql` (a path, or a name on PATH).
    pub fn connect(psql: &Path) -> Result<PgSession> {
        let mut cmd = Command::new(psql);
        // psql needs libpq's PG* settings, none of bk's secrets.
        for v in crate::sys::SECRET_ENV {
            cmd.env_remove(v);
        }
        let mut child = cmd
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Usage(format!(
                    "cannot run {} ({e}): install PostgreSQL's client or give --psql",
                    psql.display()
                ))
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::internal(
                "connecting to PostgreSQL",
                "psql has no pipes",
            ));
        };
        let mut session = PgSession {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            queries: 0,
        };
        session.query("SELECT 1")?;
        Ok(session)
    }

    /// Runs one statement; returns its rows, fields separated by `|`.
    pub fn query(&mut self, sql: &str) -> Result<Vec<String>> {
        self.queries += 1;
        let marker = format!(
            "bk-wal-end-of-result-{}-{}",
            std::process::id(),
            self.queries
        );
        let sent = writeln!(self.stdin, "{sql};\n\\echo {marker}").and_then(|_| self.stdin.flush());
        if sent.is_err() {
            return Err(self.failed(sql));
        }
        let mut rows = Vec::new();
        loop {
            let mut line = String::new();
            match self.stdout.read_line(&mut line) {
                Ok(0) | Err(_) => return Err(self.failed(sql)),
                Ok(_) => {}
            }
            let line = line.trim_end_matches(['\n', '\r']);
            if line == marker {
                return Ok(rows);
            }
            if !line.is_empty() {
                rows.push(line.to_string());
            }
        }
    }

    /// The single value of a one-row, one-column query.
    pub fn value(&mut self, sql: &str) -> Result<String> {
        let rows = self.query(sql)?;
        match rows.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(Error::internal(
                "querying PostgreSQL",
                format!("{sql:?} returned {} rows, not one", rows.len()),
            )),
        }
    }

    /// psql stopped (a failed statement, a lost connection): its last
    /// words become the error.
    fn failed(&mut self, sql: &str) -> Error {
        let _ = self.child.wait();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let last = err
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("psql ended without a message")
            .trim()
            .to_string();
        let what = sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        Error::io(
            format!("PostgreSQL ({what} …)"),
            std::io::Error::other(last),
        )
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "\\q");
        let _ = self.child.wait();
    }
}
