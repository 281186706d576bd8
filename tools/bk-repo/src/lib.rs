//! bk-repo as a library: the `bk-repo` binary and the multi-call `bk` binary both
//! run [`main_from`]; [`cli::Cli`] is what the man page and the shell
//! completions are generated from.

pub mod cli;

use bk::keys::{NewKey, Secret};
use bk::locks::{list_lock_objects, remove_stale_locks};
use bk::repo::{InitOptions, Repository};
use bk::wire::{self, KeyRecord, Record};
use bk::{Error, ExitCode, Result};
use cli::{Command, KeyCommand};
use std::io::Write;

/// Runs bk-repo with these arguments (the first is the program name) and
/// exits with the documented code.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ! {
    let cli: cli::Cli = bk::cli::parse_from(args);
    bk::cli::run("bk-repo", || run(cli));
}

fn emit(record: Record) -> Result<()> {
    wire::write_record(&mut std::io::stdout().lock(), &record).map_err(bk::error::stdout_error)
}

fn run(cli: cli::Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init {
            compression,
            pack_size_mib,
            label,
        } => {
            let location = cli.repo.location()?;
            let secret = cli.repo.secret(true)?;
            let opts = InitOptions {
                compression,
                pack_size: pack_size_mib.saturating_mul(1 << 20),
                label,
                ..InitOptions::default()
            };
            let repo = Repository::init(bk::backend::open(location)?, &secret, opts)?;
            let record = repo.record();
            eprintln!(
                "bk-repo: created repository {} at {}\n\
                 bk-repo: keep its key safe: the data cannot be recovered if every key \
                 (passphrase or identity file) is lost; `bk-repo key add` adds another",
                short_id(&record.id),
                record.location
            );
            emit(Record::Repository(record))?;
        }
        Command::Key { command } => return key(&cli.repo, command),
        Command::Locks => {
            let repo = cli.repo.open()?;
            let now = std::time::SystemTime::now();
            for l in list_lock_objects(&**repo.backend(), repo.keys())? {
                emit(Record::Lock(l.record(now)))?;
            }
        }
        Command::Unlock { all } => {
            let repo = cli.repo.open()?;
            let removed = remove_stale_locks(&**repo.backend(), repo.keys(), all)?;
            if removed.is_empty() {
                eprintln!("bk-repo: no lock removed (`bk-repo locks` lists the live ones)");
            }
            for lock in removed {
                eprintln!("bk-repo: removed {}", describe_lock(&lock));
                emit(Record::Unlocked(lock))?;
            }
        }
        Command::Benchmark {
            seconds,
            compression,
            sample_mib,
        } => {
            if !(seconds.is_finite() && seconds > 0.0) || sample_mib == 0 {
                return Err(Error::Usage(
                    "--seconds and --sample-mib must be positive".into(),
                ));
            }
            let data = bk::speed::sample_data(sample_mib << 20);
            let budget = std::time::Duration::from_secs_f64(seconds);
            for b in bk::speed::measure(&data, budget, compression) {
                emit(Record::Speed(b.record()))?;
            }
        }
        Command::Stats => emit(Record::Stats(bk::stats::stats(&cli.repo.open()?)?))?,
        Command::Chunks => {
            let repo = cli.repo.open()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            bk::copy::chunk_ids(&repo, &mut out)?;
        }
    }
    Ok(ExitCode::Success)
}

fn key(args: &bk::cli::RepoArgs, command: KeyCommand) -> Result<ExitCode> {
    let repo = args.open()?;
    match command {
        KeyCommand::List => {
            for (name, kf) in repo.key_files()? {
                emit(Record::Key(kf.record(&name, name == repo.key_name())))?;
            }
        }
        KeyCommand::Add {
            new_password_file,
            recipient,
            new_identity_file,
            generate_identity,
            label,
        } => {
            let new = if let Some(r) = recipient {
                NewKey::Recipient(r.parse().map_err(|e| {
                    Error::Usage(format!("--recipient: not an age X25519 recipient: {e}"))
                })?)
            } else if let Some(f) = new_identity_file {
                NewKey::from(&Secret::from_identity_file(&f)?)
            } else if let Some(f) = generate_identity {
                let (text, public) = bk::keys::generate_identity();
                write_private(&f, age_text(&text))?;
                eprintln!(
                    "bk-repo: wrote a new identity to {} (public key {public})",
                    f.display()
                );
                NewKey::Recipient(public.parse().map_err(|_| {
                    Error::internal(
                        "adding an identity key",
                        "the generated recipient did not parse",
                    )
                })?)
            } else if let Some(f) = new_password_file
                .or_else(|| std::env::var_os("BK_NEW_PASSWORD_FILE").map(Into::into))
            {
                NewKey::from(&Secret::passphrase(
                    bk::cli::read_password_file(&f)?.to_string(),
                ))
            } else {
                let p = bk::cli::prompt_passphrase("bk: new passphrase: ", true)?;
                NewKey::from(&Secret::passphrase(p.to_string()))
            };
            let name = repo.add_key(&new, label)?;
            emit(Record::Key(KeyRecord {
                id: name,
                added: true,
                v: bk::wire::VERSION,
                ..KeyRecord::default()
            }))?;
        }
        KeyCommand::Remove { key, force } => {
            let name = repo.remove_key(&key, force)?;
            emit(Record::Key(KeyRecord {
                id: name,
                removed: true,
                v: bk::wire::VERSION,
                ..KeyRecord::default()
            }))?;
        }
    }
    Ok(ExitCode::Success)
}

/// The first 8 hex digits, as every human line shows an id.
fn short_id(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// `lock 0123abcd (exclusive, bk-prune pid 42 on host, stale)`.
fn describe_lock(l: &bk::wire::LockRecord) -> String {
    let mut parts = Vec::new();
    if let Some(m) = &l.mode {
        parts.push(format!("{m:?}").to_lowercase());
    }
    match (&l.tool, l.pid, &l.host) {
        (Some(t), Some(p), Some(h)) => parts.push(format!("{t} pid {p} on {h}")),
        (Some(t), _, _) => parts.push(t.clone()),
        _ => {}
    }
    parts.push(if l.unreadable {
        "unreadable".into()
    } else if l.stale {
        "stale".into()
    } else {
        "live".into()
    });
    format!("lock {} ({})", short_id(&l.id), parts.join(", "))
}

fn age_text(s: &bk::keys::SecretText) -> &str {
    bk::keys::expose(s)
}

fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(path, e))
}
