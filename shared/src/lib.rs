//! bk: deduplicated, compressed, encrypted backups as small composable tools.
//!
//! This crate holds everything the `bk-*` binaries share; the binaries only
//! parse arguments and call into it. Start with docs/ARCHITECTURE.md for the
//! repository format, the stream format and the invariants.
#![deny(unsafe_code)]

pub mod backend;
pub mod chunker;
pub mod cli;
pub mod crypto;
pub mod error;
pub mod gc;
pub mod id;
pub mod index;
pub mod keys;
pub mod listing;
pub mod locks;
pub mod metrics;
pub mod pack;
pub mod policy;
pub mod prune;
pub mod put;
pub mod reader;
pub mod repo;
pub mod restore;
pub mod source;
pub mod speed;
pub mod sys;
pub mod verify;
pub mod wire;

pub use error::{Error, ExitCode, Result};
