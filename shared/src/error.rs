//! Typed errors and the exit-code table shared by every bk tool.
//!
//! Every failure a user can meet maps to exactly one [`ExitCode`], so shell
//! scripts and CronJobs can tell "the repository is not there" from "the
//! passphrase is wrong" from "the data is damaged" without parsing messages.

use std::fmt;
use std::path::PathBuf;

use crate::layout::ObjectKind;

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
    /// The repository already holds something else under the name being
    /// written (a WAL file with other content, a stanza of another
    /// cluster); nothing was overwritten.
    Conflict = 14,
    /// bk-sqlite restore: the repository holds no replica of the database.
    NoReplica = 15,
    /// bk-sqlite restore: the output database exists (nothing was changed).
    Exists = 16,
    /// Interrupted by SIGINT/SIGTERM; nothing was committed.
    Interrupted = 130,
}

impl ExitCode {
    /// Every code, in the order the man pages list them: their EXIT STATUS
    /// sections are generated from this table and [`ExitCode::meaning`].
    pub const ALL: [ExitCode; 12] = [
        ExitCode::Success,
        ExitCode::Failure,
        ExitCode::Usage,
        ExitCode::Partial,
        ExitCode::NoRepository,
        ExitCode::Locked,
        ExitCode::WrongKey,
        ExitCode::Integrity,
        ExitCode::Conflict,
        ExitCode::NoReplica,
        ExitCode::Exists,
        ExitCode::Interrupted,
    ];

    pub fn code(self) -> i32 {
        self as i32
    }

    /// What the code tells a script or an alert rule, in a sentence.
    pub fn meaning(self) -> &'static str {
        match self {
            ExitCode::Success => "Everything asked for was done.",
            ExitCode::Failure => {
                "An unexpected failure that fits no other class (I/O, storage); \
                 nothing was committed that is not complete."
            }
            ExitCode::Usage => "The command line or an input record was invalid.",
            ExitCode::Partial => {
                "The command finished but some items failed (for example unreadable \
                 source files); the result is usable and says what is missing."
            }
            ExitCode::NoRepository => "No repository exists at the given address.",
            ExitCode::Locked => {
                "The repository is locked by another process in a conflicting mode."
            }
            ExitCode::WrongKey => "The passphrase or identity opens none of the repository's keys.",
            ExitCode::Integrity => "An object is corrupt, missing, or fails authentication.",
            ExitCode::Conflict => {
                "The repository already holds something else under the name being \
                 written (a WAL file with other content, a stanza of another cluster); \
                 nothing was overwritten."
            }
            ExitCode::NoReplica => {
                "bk-sqlite restore: the repository holds no replica of the database."
            }
            ExitCode::Exists => {
                "bk-sqlite restore: the output database exists (nothing was changed)."
            }
            ExitCode::Interrupted => "Interrupted by SIGINT or SIGTERM; nothing was committed.",
        }
    }
}

/// What an integrity error is about, typed so that a caller (verify's
/// report, a repair script reading the message) knows which object to look
/// at without parsing prose.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// A stored object, by kind and name (a digest, or a key file's id).
    Object { kind: ObjectKind, name: String },
    /// A chunk, by its id, wherever it is stored.
    Chunk(String),
    /// An entry of a snapshot's listing, by path.
    Entry(String),
}

impl Subject {
    pub fn object(kind: ObjectKind, name: impl Into<String>) -> Self {
        Subject::Object {
            kind,
            name: name.into(),
        }
    }

    /// The kind of stored object, when the subject is one.
    pub fn kind(&self) -> Option<ObjectKind> {
        match self {
            Subject::Object { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Object {
                kind: ObjectKind::Pack,
                name,
            } => write!(f, "pack {name}"),
            Subject::Object { kind, name } => f.write_str(&kind.path(name)),
            Subject::Chunk(id) => write!(f, "chunk {id}"),
            Subject::Entry(path) => write!(f, "listing entry {path}"),
        }
    }
}

/// Library error. Each variant carries enough context to print a one-line
/// message that names the thing that failed, plus an optional hint.
/// Non-exhaustive: the WAL and SQLite tools add their own failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line or an input the user gave is invalid.
    #[error("{0}")]
    Usage(String),
    /// A usage error that knows what to type instead.
    #[error("{message}")]
    UsageHint { message: String, hint: String },
    #[error("no bk repository at {location}")]
    NoRepository { location: String },
    #[error("a repository already exists at {location}")]
    RepositoryExists { location: String },
    #[error("wrong passphrase or identity: {}", wrong_key_detail(*.tried, .kind))]
    WrongKey { tried: usize, kind: &'static str },
    /// Another process holds a conflicting lock (`lock` names it, when one
    /// lock object is to blame), or this process lost its own.
    #[error("repository is locked: {holder}")]
    Locked {
        lock: Option<String>,
        holder: String,
    },
    #[error("integrity error in {subject}: {message}")]
    Integrity { subject: Subject, message: String },
    /// What is being written contradicts what the repository holds.
    #[error("{subject}: {message}")]
    Conflict { subject: Subject, message: String },
    #[error("interrupted")]
    Interrupted,
    #[error("the repository holds no replica of database {db}")]
    NoReplica { db: String },
    #[error("{} exists", path.display())]
    Exists { path: PathBuf },
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
    /// A state the program should never reach (a worker thread that
    /// panicked, a channel closed early): a bug, named by the step it broke.
    #[error("internal error while {step}: {detail}")]
    Internal { step: &'static str, detail: String },
}

impl Error {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_)
            | Error::UsageHint { .. }
            | Error::Stream { .. }
            | Error::RepositoryExists { .. } => ExitCode::Usage,
            Error::NoRepository { .. } => ExitCode::NoRepository,
            Error::WrongKey { .. } => ExitCode::WrongKey,
            Error::Locked { .. } => ExitCode::Locked,
            Error::Integrity { .. } => ExitCode::Integrity,
            Error::Conflict { .. } => ExitCode::Conflict,
            Error::Interrupted => ExitCode::Interrupted,
            Error::NoReplica { .. } => ExitCode::NoReplica,
            Error::Exists { .. } => ExitCode::Exists,
            Error::Storage { .. }
            | Error::Io { .. }
            | Error::Internal { .. }
            | Error::IncompleteStream(_) => ExitCode::Failure,
        }
    }

    /// A short suggestion shown under the error message; it names the lock
    /// or object involved when the error knows it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Error::UsageHint { hint, .. } => hint.clone(),
            Error::RepositoryExists { .. } => "nothing was changed; choose another -r/--repo (an existing repository is opened, never re-initialized)".into(),
            Error::NoRepository { .. } => "check -r/--repo or BK_REPO, or create one with `bk-repo init`".into(),
            Error::WrongKey { kind: "identity", .. } => "check --identity-file / BK_IDENTITY_FILE (`bk-repo key list` lists the repository's keys)".into(),
            Error::WrongKey { .. } => "check --password-file / BK_PASSWORD_FILE / BK_PASSWORD or --identity-file / BK_IDENTITY_FILE".into(),
            Error::Locked { lock: Some(lock), .. } => format!("`bk-repo locks` lists locks; if {lock} is stale (its process is gone), `bk-repo unlock` removes it"),
            Error::Locked { .. } => "`bk-repo locks` lists locks; `bk-repo unlock` removes stale ones".into(),
            Error::Integrity { subject: Subject::Object { kind: ObjectKind::Key | ObjectKind::Config, .. }, .. } => "the repository's key or config object is damaged; another key file may still open it (`bk-repo key list`)".into(),
            Error::Integrity { .. } => "the named object is damaged or missing; nothing was written from it".into(),
            Error::Conflict { .. } => "nothing was overwritten: archived files are write-once (see bk-wal(1) on a stanza's cluster)".into(),
            Error::Stream { .. } => "the stream must come from bk-chunk or bk-ls (see bk-stream(5))".into(),
            Error::NoReplica { .. } => "`bk-sqlite ls` lists the replicated databases; --name chooses one, --if-replica-exists makes this a success".into(),
            Error::Exists { .. } => "nothing was changed; -o chooses another output, --if-db-not-exists makes this a success, --force replaces it".into(),
            Error::Internal { .. } => "this is a bug in bk; please report it with the command that failed".into(),
            _ => return None,
        })
    }

    /// A usage error with the hint that says what to do instead.
    pub fn usage_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::UsageHint {
            message: message.into(),
            hint: hint.into(),
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

    pub fn integrity(subject: Subject, message: impl Into<String>) -> Self {
        Error::Integrity {
            subject,
            message: message.into(),
        }
    }

    /// An integrity error about a stored object.
    pub fn damaged(kind: ObjectKind, name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::integrity(Subject::object(kind, name), message)
    }

    pub fn internal(step: &'static str, detail: impl fmt::Display) -> Self {
        Error::Internal {
            step,
            detail: detail.to_string(),
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

    /// A local path ran through a regular file (ENOTDIR).
    pub fn is_not_a_directory(&self) -> bool {
        matches!(self, Error::Storage { source, .. } if source.kind() == std::io::ErrorKind::NotADirectory)
    }

    /// A put of a claimed name found it taken (link(2) locally, the check
    /// first on S3): nothing was overwritten.
    pub fn is_already_there(&self) -> bool {
        matches!(self, Error::Storage { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists)
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
    fn exit_codes_are_distinct_and_listed_in_order() {
        let codes: Vec<i32> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]), "{codes:?}");
        // A variant missing from ALL would be missing from every man page:
        // the match below stops compiling when a variant is added.
        for code in ExitCode::ALL {
            let listed = match code {
                ExitCode::Success
                | ExitCode::Failure
                | ExitCode::Usage
                | ExitCode::Partial
                | ExitCode::NoRepository
                | ExitCode::Locked
                | ExitCode::WrongKey
                | ExitCode::Integrity
                | ExitCode::Conflict
                | ExitCode::NoReplica
                | ExitCode::Exists
                | ExitCode::Interrupted => 12,
            };
            assert_eq!(listed, ExitCode::ALL.len());
            assert!(code.meaning().ends_with('.'));
        }
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
            Error::damaged(ObjectKind::Pack, "ab", "bad").exit_code(),
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

    #[test]
    fn integrity_errors_name_their_object_typed() {
        let e = Error::damaged(ObjectKind::Pack, "ab12", "truncated");
        assert_eq!(e.to_string(), "integrity error in pack ab12: truncated");
        match &e {
            Error::Integrity { subject, .. } => assert_eq!(subject.kind(), Some(ObjectKind::Pack)),
            other => panic!("{other:?}"),
        }
        let key = Error::damaged(ObjectKind::Key, "k1", "unreadable");
        assert_eq!(key.to_string(), "integrity error in keys/k1: unreadable");
        assert!(key.hint().unwrap().contains("bk-repo key list"));
        let chunk = Error::integrity(Subject::Chunk("cd".into()), "missing");
        assert_eq!(chunk.to_string(), "integrity error in chunk cd: missing");
    }

    #[test]
    fn lock_hints_name_the_lock() {
        let e = Error::Locked {
            lock: Some("0123abcd".into()),
            holder: "exclusive lock by bk-prune".into(),
        };
        assert!(e.hint().unwrap().contains("0123abcd"), "{:?}", e.hint());
        let internal = Error::internal("packing chunks", "the packer stopped");
        assert_eq!(
            internal.to_string(),
            "internal error while packing chunks: the packer stopped"
        );
        assert_eq!(internal.exit_code(), ExitCode::Failure);
    }
}
