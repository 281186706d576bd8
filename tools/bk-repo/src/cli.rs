use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Create and administer a bk repository: init, keys, locks, stats.
#[derive(Parser, Debug)]
#[command(name = "bk-repo", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub repo: bk::cli::RepoArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a repository; its first key is the given passphrase or identity
    Init {
        /// zstd level for stored data (0 turns compression off)
        #[arg(long, default_value_t = bk::repo::DEFAULT_COMPRESSION)]
        compression: i32,
        /// Target pack size in MiB
        #[arg(long, default_value_t = 16)]
        pack_size_mib: u32,
        /// A note stored with the first key (e.g. who holds it)
        #[arg(long)]
        label: Option<String>,
    },
    /// Manage the keys (passphrases and age identities) that open the repository
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// List the repository's locks
    Locks,
    /// Remove stale locks (or all locks with --all)
    Unlock {
        /// Also remove locks that are not stale (only when no bk process is running)
        #[arg(long)]
        all: bool,
    },
    /// Object counts and sizes, and the index's memory use per chunk
    Stats,
    /// Print the id of every data chunk the repository holds, one per line
    /// (what `bk-get --stream --have` reads, so a copy sends only the rest)
    Chunks,
    /// Single-core speed of the chunker, SHA-256, zstd and AES-GCM on this
    /// machine (needs no repository): the ceiling for backup throughput
    Benchmark {
        /// Seconds to spend on each building block
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// zstd level to measure (the repository default unless given)
        #[arg(long, default_value_t = bk::repo::DEFAULT_COMPRESSION)]
        compression: i32,
        /// MiB of sample data (half text-like, half incompressible)
        #[arg(long, default_value_t = 64)]
        sample_mib: usize,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Print one JSON line per key
    List,
    /// Add a key: a new passphrase (default), an age recipient, or an identity file
    Add {
        /// Read the new passphrase from FILE (default: BK_NEW_PASSWORD_FILE, or a prompt)
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// Lock the new key to this age public key (age1…)
        #[arg(long, value_name = "AGE1…", conflicts_with_all = ["new_password_file", "new_identity_file", "generate_identity"])]
        recipient: Option<String>,
        /// Lock the new key to the identity in this existing age identity file
        #[arg(long, value_name = "FILE", conflicts_with_all = ["new_password_file", "generate_identity"])]
        new_identity_file: Option<PathBuf>,
        /// Generate a new age identity into FILE (mode 0600) and add it
        #[arg(long, value_name = "FILE", conflicts_with = "new_password_file")]
        generate_identity: Option<PathBuf>,
        /// A note stored with the key
        #[arg(long)]
        label: Option<String>,
    },
    /// Remove a key by id (or unique prefix); the last key cannot be removed
    Remove {
        /// The key's id or a unique prefix (`bk-repo key list`)
        #[arg(value_name = "KEY")]
        key: String,
        /// Also remove the key this command is unlocked with
        #[arg(long)]
        force: bool,
    },
}
