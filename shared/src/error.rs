//! Typed errors and the exit-code table shared by every bk tool.
//!
//! Every failure a user can meet maps to exactly one [`ExitCode`], so shell
//! scripts and CronJobs can tell "the repository is not there" from "the
//! passphrase is wrong" from "the data is damaged" without parsing messages.

use std::fmt;
use std::path::PathBuf;

/// The documented process exit codes (see `bk(7)` and docs/ARCHITECTURE.md §17).
///
/// The numbers follow restic where restic has the same meaning (10, 11, 12,
/// 130), so operators' existing alert rules keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything asked for was done.
    Success = 0,
    /// An unexpected failure that fits no other class (I/O, storage).
    Failure = 1,
    /// The command line or an input record was invalid.
    Usage = 2,
    /// The command finished but some items failed (e.g. unreadable source
    /// files); the result is usable and says what is missing.
    Partial = 3,
    /// No repository exists at the given address.
    NoRepository = 10,
    /// The repository is locked by another process in a conflicting mode.
    Locked = 11,
    /// The passphrase or identity opens none of the repository's keys.
    WrongKey = 12,
    /// An object is corrupt, missing, or fails authentication.
    Integrity = 13,
    /// Interrupted by SIGINT/SIGTERM; nothing was committed.
    Interrupted = 130,
}

impl ExitCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// Library error. Each variant carries enough context to print a one-line
/// message that names the thing that failed, plus an optional hint.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("no bk repository at {location}")]
    NoRepository { location: String },
    #[error("a repository already exists at {location}")]
    RepositoryExists { location: String },
    #[error("wrong passphrase or identity: {}", wrong_key_detail(*.tried, .kind))]
    WrongKey { tried: usize, kind: &'static str },
    #[error("repository is locked: {0}")]
    Locked(String),
    #[error("integrity error in {object}: {message}")]
    Integrity { object: String, message: String },
    #[error("interrupted")]
    Interrupted,
    #[error("storage error on {object}: {source}")]
    Storage {
        object: String,
        #[source]
        source: std::io::Error,
        /// Whether retrying the same operation may succeed (timeouts, 5xx).
        retryable: bool,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid input stream, line {line}: {message}")]
    Stream { line: u64, message: String },
    #[error("incomplete input: {0}")]
    IncompleteStream(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::Stream { .. } | Error::RepositoryExists { .. } => {
                ExitCode::Usage
            }
            Error::NoRepository { .. } => ExitCode::NoRepository,
            Error::WrongKey { .. } => ExitCode::WrongKey,
            Error::Locked(_) => ExitCode::Locked,
            Error::Integrity { .. } => ExitCode::Integrity,
            Error::Interrupted => ExitCode::Interrupted,
            Error::Storage { .. }
            | Error::Io { .. }
            | Error::Other(_)
            | Error::IncompleteStream(_) => ExitCode::Failure,
        }
    }

    /// A short suggestion shown under the error message.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::NoRepository { .. } => Some("check -r/--repo or BK_REPO, or create one with `bk-repo init`"),
            Error::WrongKey { .. } => Some("check --password-file / BK_PASSWORD_FILE / BK_PASSWORD or --identity-file / BK_IDENTITY_FILE"),
            Error::Locked(_) => Some("`bk-repo locks` lists locks; `bk-repo unlock` removes stale ones"),
            Error::Integrity { .. } => Some("the named object is damaged or missing; nothing was written from it"),
            Error::Stream { .. } => Some("the stream must come from bk-chunk or bk-ls (see bk-stream(5))"),
            _ => None,
        }
    }

    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Error::Io { source, .. } | Error::Storage { source, .. } => {
                source.kind() == std::io::ErrorKind::BrokenPipe
            }
            _ => false,
        }
    }

    pub fn integrity(object: impl fmt::Display, message: impl Into<String>) -> Self {
        Error::Integrity {
            object: object.to_string(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn storage(object: impl fmt::Display, source: std::io::Error) -> Self {
        let retryable = matches!(
            source.kind(),
            std::io::ErrorKind::TimedOut
                | std::io::ErrorKind::Interrupted
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::WouldBlock
        );
        Error::Storage {
            object: object.to_string(),
            source,
            retryable,
        }
    }

    /// True when a storage object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Storage { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                retryable: true,
                ..
            }
        )
    }
}

fn wrong_key_detail(tried: usize, kind: &str) -> String {
    if tried == 0 {
        format!("the repository has no {kind} key")
    } else {
        format!("none of the repository's {tried} {kind} key(s) opens with it")
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Writes to stdout that fail with EPIPE become this, so tools end quietly.
pub fn stdout_error(e: std::io::Error) -> Error {
    Error::io("<stdout>", e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        let all = [
            ExitCode::Success,
            ExitCode::Failure,
            ExitCode::Usage,
            ExitCode::Partial,
            ExitCode::NoRepository,
            ExitCode::Locked,
            ExitCode::WrongKey,
            ExitCode::Integrity,
            ExitCode::Interrupted,
        ];
        let mut codes: Vec<i32> = all.iter().map(|c| c.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn errors_map_to_codes() {
        assert_eq!(
            Error::NoRepository {
                location: "x".into()
            }
            .exit_code(),
            ExitCode::NoRepository
        );
        assert_eq!(
            Error::WrongKey {
                tried: 1,
                kind: "passphrase"
            }
            .exit_code(),
            ExitCode::WrongKey
        );
        assert_eq!(
            Error::integrity("pack", "bad").exit_code(),
            ExitCode::Integrity
        );
        assert_eq!(Error::Interrupted.exit_code(), ExitCode::Interrupted);
        assert!(
            Error::storage("o", std::io::Error::from(std::io::ErrorKind::TimedOut)).is_retryable()
        );
        assert!(!Error::storage(
            "o",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied)
        )
        .is_retryable());
    }
}
