//! bk: deduplicated, compressed, encrypted backups as small composable tools.
//!
//! This crate holds everything the `bk-*` binaries share; the binaries only
//! parse arguments and call into it. Start with docs/ARCHITECTURE.md for the
//! repository format, the stream format and the invariants.
//!
//! The modules are layers, and imports only point down (a test below
//! checks it):
//!
//! * [`error`], [`layout`], [`sys`]: the error type and exit codes; the
//!   kinds of repository object and where they live; facts about the
//!   operating system (host, users, signals).
//! * [`format`]: bytes at rest and on the wire, with no I/O: ids, the
//!   chunker, sealing, packs, index objects, stream records.
//! * [`store`]: where objects live and how they are read and written
//!   consistently: backends, the repository, keys, locks, GC marks,
//!   chunk and listing readers.
//! * [`ops`]: what the tools do: backup, restore, verify, retention and
//!   garbage collection.
//! * [`cli`]: what the binaries share on their command lines.
#![deny(unsafe_code)]

pub mod cli;
pub mod error;
pub mod format;
pub mod layout;
pub mod ops;
pub mod store;
pub mod sys;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, ExitCode, Result, Subject};

// The paths tools, tests and docs have used since before the layers
// (`bk::repo::Repository`, `bk::backend::open`, …).
pub use format::{chunker, crypto, id, index, pack, wire};
pub use ops::{
    copy, gc, metrics, policy, progress, prune, put, restore, source, speed, stats, verify,
};
pub use store::{backend, keys, listing, locks, reader, repo};

#[cfg(test)]
mod layers;
