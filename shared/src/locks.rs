//! Repository locks: advisory objects under `locks/` that say who is using
//! the repository and how.
//!
//! Writers (bk-put) and readers take *shared* locks, which never conflict
//! with each other, so any number of backups run at once. An *exclusive*
//! lock (taken by maintenance that must not overlap anything) conflicts
//! with every other lock. Locks are write-once like everything else: a
//! holder refreshes by writing a new lock object and deleting its old one
//! every [`REFRESH`]; a lock not refreshed for [`STALE_AFTER`], or whose
//! process is gone on this same host, is stale and ignored (and removable
//! with `bk-repo unlock`), so a killed process never blocks others forever.
//!
//! Two processes that take conflicting locks at the same moment both see
//! each other and both back off: safe, never both proceed.

use crate::backend::{Backend, ObjectKind};
use crate::crypto::Keys;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::wire::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const REFRESH: Duration = Duration::from_secs(5 * 60);
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
const LOCK_AAD: &[u8] = b"bk lock v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    Shared,
    Exclusive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub mode: LockMode,
    pub time: Timestamp,
    pub host: Option<String>,
    pub user: Option<String>,
    pub pid: u32,
    pub tool: String,
}

impl LockInfo {
    pub fn is_stale(&self, now: Timestamp) -> bool {
        if now.secs - self.time.secs > STALE_AFTER.as_secs() as i64 {
            return true;
        }
        self.host.is_some()
            && self.host == crate::sys::hostname()
            && !crate::sys::process_alive(self.pid)
    }

    pub fn describe(&self) -> String {
        format!(
            "{:?} lock by {} (pid {}) on {} as {}, refreshed {}",
            self.mode,
            self.tool,
            self.pid,
            self.host.as_deref().unwrap_or("?"),
            self.user.as_deref().unwrap_or("?"),
            self.time
        )
        .to_lowercase()
    }
}

fn write_lock(backend: &dyn Backend, keys: &Keys, info: &LockInfo) -> Result<String> {
    let sealed = keys.seal(
        LOCK_AAD,
        &serde_json::to_vec(info).expect("serializable"),
        None,
    );
    let name = ObjectId::digest(&sealed).to_hex();
    backend.put(ObjectKind::Lock, &name, &sealed)?;
    Ok(name)
}

/// Every lock in the repository; unreadable ones are reported as `None`.
pub fn list_locks(backend: &dyn Backend, keys: &Keys) -> Result<Vec<(String, Option<LockInfo>)>> {
    let mut out = Vec::new();
    for obj in backend.list(ObjectKind::Lock)? {
        let info = match backend.get(ObjectKind::Lock, &obj.name) {
            Ok(raw) => keys
                .open(LOCK_AAD, &raw)
                .ok()
                .and_then(|p| serde_json::from_slice(&p).ok()),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        out.push((obj.name, info));
    }
    Ok(out)
}

/// A held lock; released (deleted) on drop.
pub struct LockGuard {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LockGuard({})",
            self.name.lock().map(|n| n.clone()).unwrap_or_default()
        )
    }
}

impl LockGuard {
    pub fn acquire(
        backend: Arc<dyn Backend>,
        keys: &Keys,
        mode: LockMode,
        tool: &str,
    ) -> Result<LockGuard> {
        let info = LockInfo {
            mode,
            time: Timestamp::now(),
            host: crate::sys::hostname(),
            user: crate::sys::username(),
            pid: std::process::id(),
            tool: tool.to_string(),
        };
        let mine = write_lock(&*backend, keys, &info)?;
        let now = Timestamp::now();
        let conflict = list_locks(&*backend, keys).map(|locks| {
            locks.into_iter().find_map(|(name, other)| {
                let other = other?;
                (name != mine
                    && !other.is_stale(now)
                    && (mode == LockMode::Exclusive || other.mode == LockMode::Exclusive))
                    .then(|| other.describe())
            })
        });
        match conflict {
            Ok(None) => {}
            Ok(Some(desc)) => {
                let _ = backend.delete(ObjectKind::Lock, &mine);
                return Err(Error::Locked(desc));
            }
            Err(e) => {
                let _ = backend.delete(ObjectKind::Lock, &mine);
                return Err(e);
            }
        }
        let name = Arc::new(Mutex::new(mine));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (backend, name, stop, keys) = (
                Arc::clone(&backend),
                Arc::clone(&name),
                Arc::clone(&stop),
                keys.clone(),
            );
            std::thread::Builder::new()
                .name("bk-lock-refresh".into())
                .spawn(move || refresh_loop(&*backend, &keys, info, &name, &stop))
                .ok()
        };
        Ok(LockGuard {
            backend,
            name,
            stop,
            thread,
        })
    }
}

fn refresh_loop(
    backend: &dyn Backend,
    keys: &Keys,
    mut info: LockInfo,
    name: &Mutex<String>,
    stop: &AtomicBool,
) {
    let tick = Duration::from_millis(200);
    let mut waited = Duration::ZERO;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        waited += tick;
        if waited < REFRESH {
            continue;
        }
        waited = Duration::ZERO;
        info.time = Timestamp::now();
        match write_lock(backend, keys, &info) {
            Ok(new) => {
                let mut cur = name.lock().unwrap_or_else(|e| e.into_inner());
                let old = std::mem::replace(&mut *cur, new);
                let _ = backend.delete(ObjectKind::Lock, &old);
            }
            Err(e) => eprintln!("warning: could not refresh lock: {e}"),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let name = self.name.lock().map(|n| n.clone()).unwrap_or_default();
        if let Err(e) = self.backend.delete(ObjectKind::Lock, &name) {
            eprintln!("warning: could not remove lock {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::crypto::MasterKey;

    #[test]
    fn shared_locks_coexist_exclusive_conflicts_and_stale_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        backend.create().unwrap();
        let keys = MasterKey::generate().derive();
        let a = LockGuard::acquire(Arc::clone(&backend), &keys, LockMode::Shared, "t").unwrap();
        let b = LockGuard::acquire(Arc::clone(&backend), &keys, LockMode::Shared, "t").unwrap();
        let err =
            LockGuard::acquire(Arc::clone(&backend), &keys, LockMode::Exclusive, "t").unwrap_err();
        assert!(matches!(err, Error::Locked(_)));
        assert_eq!(list_locks(&*backend, &keys).unwrap().len(), 2);
        drop((a, b));
        assert!(list_locks(&*backend, &keys).unwrap().is_empty());
        // A lock from a dead process on this host does not block.
        let dead = LockInfo {
            mode: LockMode::Exclusive,
            time: Timestamp::now(),
            host: crate::sys::hostname(),
            user: None,
            pid: 0x3fff_fff0,
            tool: "dead".into(),
        };
        write_lock(&*backend, &keys, &dead).unwrap();
        let _c = LockGuard::acquire(Arc::clone(&backend), &keys, LockMode::Shared, "t").unwrap();
        let old = LockInfo {
            time: Timestamp { secs: 0, nanos: 0 },
            host: Some("elsewhere".into()),
            ..dead
        };
        assert!(old.is_stale(Timestamp::now()));
    }
}
