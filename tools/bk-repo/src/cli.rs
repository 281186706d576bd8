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
    ///
    /// REPO must be a new or empty directory, or an S3 prefix with no
    /// objects under it in a bucket that exists (bk does not create
    /// buckets). The first key is the secret given in the usual way: with
    /// --identity-file, an age key for the first identity in the file;
    /// otherwise a passphrase from --password-file, BK_PASSWORD, or a prompt
    /// that asks twice. The repository id and a new master key are generated
    /// at random; the chunker parameters are fixed at min 256 KiB, avg 1 MiB,
    /// max 4 MiB.
    ///
    /// A path that exists and is not a directory is refused (exit 2, with
    /// the reason), and so is a location that already holds a repository,
    /// which is never initialized again (exit 2, with a hint; nothing is
    /// changed). On success init prints a `repository` line and says on
    /// stderr where the repository is and that its data cannot be recovered
    /// once every key is lost: add a second key with `bk-repo key add`.
    ///
    /// A local repository is private: directories get mode 0700 and files
    /// 0600, since object names, sizes and times say something about the
    /// data. To share it with another user (the PostgreSQL server's user
    /// that runs `bk-wal push`, say), make `config` group- or
    /// world-readable: every bk process that writes to the repository then
    /// creates files 0640 or 0644 and directories 0770 or 0777, as restic
    /// does. Files and directories that exist keep their modes, and the
    /// process's umask still applies (see EXAMPLES in bk-repo(1)).
    Init {
        /// zstd level for stored data (0 turns compression off)
        ///
        /// From 0 to 22. Higher levels trade backup speed for space;
        /// `bk-repo benchmark --compression N` measures a level on this
        /// machine. Index objects, snapshots and pack headers are compressed
        /// even at 0. Stored in the repository's config, for every later
        /// writer.
        #[arg(long, default_value_t = bk::repo::DEFAULT_COMPRESSION)]
        compression: i32,
        /// Target pack size in MiB
        ///
        /// From 1 to 1024. Stored in the repository's config, for every
        /// later writer.
        #[arg(long, default_value_t = 16)]
        pack_size_mib: u32,
        /// A note stored with the first key (e.g. who holds it)
        ///
        /// Shown by `bk-repo key list`, so that the key to remove can be
        /// told apart later.
        #[arg(long)]
        label: Option<String>,
    },
    /// Manage the keys (passphrases and age identities) that open the repository
    ///
    /// Every key wraps the same master key, so any key opens the whole
    /// repository: give each job or person its own key, to remove one
    /// without touching the others.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// List the repository's locks
    ///
    /// One JSON line per lock object: its mode (shared, prune or exclusive),
    /// the tool, host, user and pid holding it, the time the holder last
    /// refreshed it (by the holder's clock), and whether it is stale. A lock
    /// that cannot be decrypted is shown with `"unreadable":true`.
    ///
    /// A lock is stale when it has not been refreshed for 30 minutes, or
    /// when its process no longer exists; a process is judged gone only
    /// when the lock was taken on this host, in the same boot and PID
    /// namespace. bk-repo judges the age against this machine's clock,
    /// bk-put and bk-prune against the storage's, so a host with a wrong
    /// clock can disagree with them. See LOCKS in bk-repo(1).
    Locks,
    /// Remove stale locks (or all locks with --all)
    ///
    /// Locks that cannot be decrypted are removed too, once they are stale.
    /// Each removed lock is printed like a `locks` line, with type
    /// `unlocked`, and described on stderr (`bk-repo: removed lock 0123abcd
    /// (prune, bk-prune pid 42 on db1, stale)`); when nothing was removed,
    /// stderr says `bk-repo: no lock removed`. (Stale locks are ignored,
    /// and bk-prune removes them at the end of each run.)
    Unlock {
        /// Also remove locks that are not stale (only when no bk process is running)
        ///
        /// A running bk-put whose lock is removed is not waited for by
        /// bk-prune, which can then delete data that the backup is about to
        /// commit a snapshot of.
        #[arg(long)]
        all: bool,
    },
    /// Object counts and sizes, and the index's memory use per chunk
    ///
    /// One JSON line: the snapshots; the chunks and packs the index knows;
    /// bytes, the total size of all objects; count and bytes per object
    /// kind (config, key, pack, index, snapshot, lock); and
    /// index_memory_bytes, the memory the in-memory index uses, with
    /// index_bytes_per_chunk, to size the memory of machines that back up
    /// into the repository.
    Stats,
    /// Print the id of every data chunk the repository holds, one per line
    /// (what `bk-get --stream --have` reads, so a copy sends only the rest)
    ///
    /// 64 hexadecimal digits each, in no particular order, as the live index
    /// objects name them (see bk-get(1) for the copy). Chunks in packs that
    /// a prune has marked for deletion are not listed, so a copy sends them
    /// again. The list names content by its SHA-256: treat it like a
    /// listing, not like public data.
    Chunks,
    /// Single-core speed of the chunker, SHA-256, zstd and AES-GCM on this
    /// machine (needs no repository): the ceiling for backup throughput
    ///
    /// Measures, on one core, each building block a backup passes every byte
    /// through, on deterministic sample data (half text-like, half
    /// incompressible): the chunker, SHA-256 chunk ids, zstd at
    /// --compression, AES-256-GCM sealing, and all of them in sequence
    /// (`pipeline`). Prints one `speed` line per block: its name, mb_per_s
    /// and a detail such as the compression ratio.
    ///
    /// A backup cannot run faster than the number of cores times the
    /// pipeline rate, nor faster than the source can be read; scripts/bench
    /// reports bk's throughput as a share of that ceiling.
    Benchmark {
        /// Seconds to spend on each building block
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// zstd level to measure (the repository default unless given)
        ///
        /// The level to try before giving it to `init --compression`.
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
    ///
    /// Each line has the key's id, kind (passphrase or age), creation time,
    /// host, user and label, recipient (the age public key of an age key)
    /// and current, which marks the key that opened the repository for this
    /// command.
    List,
    /// Add a key: a new passphrase (default), an age recipient, or an identity file
    ///
    /// The new key wraps the same master key, so adding one needs an
    /// existing key to open the repository. It is locked with exactly one of
    /// --new-password-file, --recipient, --new-identity-file and
    /// --generate-identity; without any, with a passphrase from
    /// BK_NEW_PASSWORD_FILE or, if that is unset, asked twice on the
    /// terminal.
    ///
    /// Identity keys suit unattended jobs: a passphrase key runs scrypt
    /// (N=2^16, 64 MiB) in every bk process that opens the repository, about
    /// 0.13 s and 70 MiB of peak memory, while an identity key unlocks in
    /// milliseconds and a few MiB.
    Add {
        /// Read the new passphrase from FILE (default: BK_NEW_PASSWORD_FILE, or a prompt)
        ///
        /// The first line of FILE. BK_NEW_PASSWORD_FILE is read only when
        /// none of the other kinds of key is given.
        #[arg(long, value_name = "FILE")]
        new_password_file: Option<PathBuf>,
        /// Lock the new key to this age public key (age1…)
        ///
        /// The matching identity file stays with its owner; bk-repo never
        /// sees it, so only the public key travels.
        #[arg(long, value_name = "AGE1…", conflicts_with_all = ["new_password_file", "new_identity_file", "generate_identity"])]
        recipient: Option<String>,
        /// Lock the new key to the identity in this existing age identity file
        ///
        /// The first identity in the file is used.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["new_password_file", "generate_identity"])]
        new_identity_file: Option<PathBuf>,
        /// Generate a new age identity into FILE (mode 0600) and add it
        ///
        /// FILE must not exist. The public key is printed on stderr. The
        /// quickest way to give a job a key of its own (see EXAMPLES in
        /// bk-repo(1)).
        #[arg(long, value_name = "FILE", conflicts_with = "new_password_file")]
        generate_identity: Option<PathBuf>,
        /// A note stored with the key
        ///
        /// Who or what holds it (e.g. radarr@media), as `key list` shows it.
        #[arg(long)]
        label: Option<String>,
    },
    /// Remove a key by id (or unique prefix); the last key cannot be removed
    ///
    /// The key this command was unlocked with is removed only with --force
    /// (exit 2 otherwise): whoever holds no other key would lock themselves
    /// out. Unlock with another key to remove it, or give --force if you
    /// hold another key.
    ///
    /// This deletes the key file only. The master key does not change, so
    /// anyone who kept a copy of the key file (or of the master key) can
    /// still open the repository.
    Remove {
        /// The key's id or a unique prefix (`bk-repo key list`)
        #[arg(value_name = "KEY")]
        key: String,
        /// Also remove the key this command is unlocked with
        ///
        /// Only when you hold another key: without one you are locked out.
        #[arg(long)]
        force: bool,
    },
}
