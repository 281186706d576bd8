mod cli;

use bk::backend::ObjectKind;
use bk::keys::{NewKey, Secret};
use bk::locks::{list_lock_objects, LockObject};
use bk::repo::{InitOptions, Repository};
use bk::wire;
use bk::{Error, ExitCode, Result};
use cli::{Command, KeyCommand};
use serde_json::json;
use std::io::Write;

fn main() {
    let cli: cli::Cli = bk::cli::parse();
    bk::cli::run("bk-repo", || run(cli));
}

fn emit(value: &serde_json::Value) -> Result<()> {
    wire::write_json(&mut std::io::stdout().lock(), value).map_err(bk::error::stdout_error)
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
            let c = repo.config();
            emit(&json!({
                "type": "repository", "v": wire::VERSION, "location": repo.backend().location(),
                "id": c.id, "format": c.bk_repository, "created": c.created,
                "chunker": c.chunker, "compression": c.compression, "pack_size": c.pack_size,
                "cipher": c.cipher, "key": repo.key_name(),
            }))?;
        }
        Command::Key { command } => return key(&cli.repo, command),
        Command::Locks => {
            let repo = cli.repo.open()?;
            let now = std::time::SystemTime::now();
            for l in list_lock_objects(&**repo.backend(), repo.keys())? {
                emit(&lock_json(&l, now))?;
            }
        }
        Command::Unlock { all } => {
            let repo = cli.repo.open()?;
            let now = std::time::SystemTime::now();
            for l in list_lock_objects(&**repo.backend(), repo.keys())? {
                if l.is_stale_at(now) || all {
                    repo.backend().delete(ObjectKind::Lock, &l.name)?;
                    let mut j = lock_json(&l, now);
                    j["type"] = "unlocked".into();
                    emit(&j)?;
                }
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
                emit(&json!({
                    "type": "speed", "v": wire::VERSION, "block": b.block,
                    "mb_per_s": (b.mb_per_s * 10.0).round() / 10.0, "detail": b.detail,
                }))?;
            }
        }
        Command::Stats => {
            let repo = cli.repo.open()?;
            let b = repo.backend();
            let mut objects = serde_json::Map::new();
            let mut total = 0u64;
            for kind in ObjectKind::ALL {
                let list = b.list(kind)?;
                let bytes: u64 = list.iter().map(|o| o.size).sum();
                total += bytes;
                objects.insert(
                    format!("{kind:?}").to_lowercase(),
                    json!({"count": list.len(), "bytes": bytes}),
                );
            }
            let index = repo.load_index()?;
            let snapshots = b.list(ObjectKind::Snapshot)?.len();
            let per_chunk = if index.chunk_count() > 0 {
                index.memory_bytes() as f64 / index.chunk_count() as f64
            } else {
                0.0
            };
            emit(&json!({
                "type": "stats", "v": wire::VERSION, "id": repo.config().id,
                "snapshots": snapshots, "chunks": index.chunk_count(), "packs": index.pack_count(),
                "bytes": total, "objects": objects,
                "index_memory_bytes": index.memory_bytes(),
                "index_bytes_per_chunk": (per_chunk * 10.0).round() / 10.0,
            }))?;
        }
    }
    Ok(ExitCode::Success)
}

fn lock_json(l: &LockObject, now: std::time::SystemTime) -> serde_json::Value {
    let (name, stale) = (&l.name, l.is_stale_at(now));
    match &l.info {
        Some(i) => {
            json!({"type": "lock", "v": wire::VERSION, "id": name, "mode": i.mode, "tool": i.tool,
            "host": i.host, "user": i.user, "pid": i.pid, "time": i.time, "stale": stale})
        }
        None => {
            json!({"type": "lock", "v": wire::VERSION, "id": name, "unreadable": true, "stale": stale})
        }
    }
}

fn key(args: &bk::cli::RepoArgs, command: KeyCommand) -> Result<ExitCode> {
    let repo = args.open()?;
    match command {
        KeyCommand::List => {
            for (name, kf) in repo.key_files()? {
                emit(
                    &json!({"type": "key", "v": wire::VERSION, "id": name, "kind": kf.kind, "created": kf.created,
                    "host": kf.host, "user": kf.user, "label": kf.label, "recipient": kf.recipient,
                    "current": name == repo.key_name()}),
                )?;
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
                NewKey::Recipient(
                    public
                        .parse()
                        .map_err(|_| Error::Other("generated recipient did not parse".into()))?,
                )
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
            emit(&json!({"type": "key", "v": wire::VERSION, "id": name, "added": true}))?;
        }
        KeyCommand::Remove { key } => {
            let name = repo.remove_key(&key)?;
            emit(&json!({"type": "key", "v": wire::VERSION, "id": name, "removed": true}))?;
        }
    }
    Ok(ExitCode::Success)
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
