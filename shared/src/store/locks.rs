//! Repository locks: advisory objects under `locks/` that say who is using
//! the repository and how.
//!
//! Writers (bk-put) take *shared* locks, which never conflict with each
//! other, so any number of backups run at once. bk-prune takes a *prune*
//! lock, which conflicts only with another prune (two prunes must never
//! both delete) and with *exclusive* locks; backups never wait for prune —
//! garbage collection is made safe by its two-phase protocol (gc.rs), which
//! uses these locks only to learn which writers were running. An
//! *exclusive* lock conflicts with every other lock.
//!
//! Locks are write-once like everything else: a holder refreshes by writing
//! a new lock object (same stable `id`) and deleting its old one every
//! [`REFRESH`]. A lock is stale when its newest object is older than
//! [`STALE_AFTER`] *on the storage's clock* (the listing's modification
//! times, compared with the time of an object we just wrote), so clock skew
//! between hosts does not matter; or when its process is gone — judged only
//! when the lock was taken in this same boot and PID namespace, since a pid
//! means nothing across containers that share a host name. A holder that
//! could not refresh for long enough that others may judge it stale knows
//! it has lost its lock ([`LockGuard::ensure_held`]) and must not commit.
//!
//! Two processes that take conflicting locks at the same moment both see
//! each other and both back off: safe, never both proceed.

use crate::error::{Error, Result};
use crate::format::crypto::Keys;
use crate::format::id::ObjectId;
use crate::format::time::Timestamp;
use crate::format::wire::LockRecord;
use crate::store::backend::{Backend, ObjectKind};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub const REFRESH: Duration = Duration::from_secs(5 * 60);
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// A holder whose last successful refresh is older than this must assume
/// others may already treat its lock as stale.
pub const LOST_AFTER: Duration = Duration::from_secs(20 * 60);
const LOCK_AAD: &[u8] = b"bk lock v1";

/// `d` divided by `BK_TEST_LOCK_SCALE` in debug builds, so tests can
/// suspend a process for longer than a lock's staleness in seconds instead
/// of half an hour. Release builds always use the real durations.
fn scaled(d: Duration) -> Duration {
    #[cfg(debug_assertions)]
    {
        // Read once: staleness is judged for every lock of every listing.
        static SCALE: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
        let scale = SCALE.get_or_init(|| {
            std::env::var("BK_TEST_LOCK_SCALE")
                .ok()
                .and_then(|s| s.parse::<u32>().ok())
                .filter(|n| *n > 0)
        });
        if let Some(n) = scale {
            return d / *n;
        }
    }
    d
}

/// [`REFRESH`], as this process uses it (see [`scaled`]).
pub fn refresh_interval() -> Duration {
    scaled(REFRESH)
}

/// [`STALE_AFTER`], as this process uses it (see [`scaled`]).
pub fn stale_after() -> Duration {
    scaled(STALE_AFTER)
}

/// [`LOST_AFTER`], as this process uses it (see [`scaled`]).
pub fn lost_after() -> Duration {
    scaled(LOST_AFTER)
}

/// Time since `mono`/`wall` by both clocks, whichever says more: the
/// monotonic clock misses a suspended machine, the wall clock can jump.
fn elapsed_since(mono: Instant, wall: SystemTime) -> Duration {
    mono.elapsed()
        .max(SystemTime::now().duration_since(wall).unwrap_or_default())
}

pub use crate::format::wire::LockMode;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub mode: LockMode,
    pub time: Timestamp,
    pub host: Option<String>,
    pub user: Option<String>,
    pub pid: u32,
    pub tool: String,
    /// Stable across refreshes (the object name changes each refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Boot id and PID namespace of the holder: a pid is only meaningful to
    /// a process in the same ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidns: Option<String>,
}

/// This process's boot id and PID namespace, as recorded in locks.
pub fn pid_namespace() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

impl LockInfo {
    /// Staleness by the holder's own clock; used only when the storage
    /// gave no modification time.
    pub fn is_stale(&self, now: Timestamp) -> bool {
        now.secs - self.time.secs > stale_after().as_secs() as i64 || self.holder_gone()
    }

    /// Staleness on the storage's clock: `modified` is the lock object's
    /// modification time from the listing, `storage_now` the storage's
    /// idea of now.
    pub fn is_stale_at(&self, modified: Option<SystemTime>, storage_now: SystemTime) -> bool {
        match modified {
            Some(m) => {
                storage_now.duration_since(m).unwrap_or_default() > stale_after()
                    || self.holder_gone()
            }
            None => self.is_stale(Timestamp::now()),
        }
    }

    /// The holder provably no longer exists: same host, same boot and PID
    /// namespace, and no such process.
    fn holder_gone(&self) -> bool {
        self.host.is_some()
            && self.host == crate::sys::hostname()
            && self.pidns.is_some()
            && self.pidns == pid_namespace()
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

    /// The holder's stable id (older locks without one: the object name).
    pub fn holder_id(&self, object_name: &str) -> String {
        self.id.clone().unwrap_or_else(|| object_name.to_string())
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

/// One lock object as listed.
#[derive(Debug, Clone)]
pub struct LockObject {
    pub name: String,
    /// `None` when the object cannot be read or authenticated.
    pub info: Option<LockInfo>,
    pub modified: Option<SystemTime>,
}

impl LockObject {
    /// The lock as `bk-repo locks` prints it.
    pub fn record(&self, storage_now: SystemTime) -> LockRecord {
        let stale = self.is_stale_at(storage_now);
        match &self.info {
            Some(i) => LockRecord {
                v: crate::format::wire::VERSION,
                id: self.name.clone(),
                mode: Some(i.mode),
                tool: Some(i.tool.clone()),
                host: i.host.clone(),
                user: i.user.clone(),
                pid: Some(i.pid),
                time: Some(i.time),
                stale,
                ..LockRecord::default()
            },
            None => LockRecord {
                v: crate::format::wire::VERSION,
                id: self.name.clone(),
                unreadable: true,
                stale,
                ..LockRecord::default()
            },
        }
    }

    pub fn is_stale_at(&self, storage_now: SystemTime) -> bool {
        match &self.info {
            Some(i) => i.is_stale_at(self.modified, storage_now),
            // Unreadable: stale only by age.
            None => self
                .modified
                .is_some_and(|m| storage_now.duration_since(m).unwrap_or_default() > stale_after()),
        }
    }

    pub fn holder_id(&self) -> String {
        match &self.info {
            Some(i) => i.holder_id(&self.name),
            None => self.name.clone(),
        }
    }
}

/// Every lock object with its storage modification time.
/// Removes the locks whose holders are gone (`all`: every lock, for when
/// the operator knows no bk process runs), returning what it removed.
pub fn remove_stale_locks(
    backend: &dyn Backend,
    keys: &Keys,
    all: bool,
) -> Result<Vec<LockRecord>> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for lock in list_lock_objects(backend, keys)? {
        if all || lock.is_stale_at(now) {
            backend.delete(ObjectKind::Lock, &lock.name)?;
            removed.push(lock.record(now));
        }
    }
    Ok(removed)
}

pub fn list_lock_objects(backend: &dyn Backend, keys: &Keys) -> Result<Vec<LockObject>> {
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
        out.push(LockObject {
            name: obj.name,
            info,
            modified: obj.modified,
        });
    }
    Ok(out)
}

/// The storage's current time, read off the listing entry of an object we
/// just wrote (our own lock); the local clock if the storage gives none.
pub fn storage_now(locks: &[LockObject], own_lock_name: &str) -> SystemTime {
    locks
        .iter()
        .find(|l| l.name == own_lock_name)
        .and_then(|l| l.modified)
        .unwrap_or_else(SystemTime::now)
}

/// A held lock; released (deleted) on drop.
/// When the lock object was last written successfully, by both clocks,
/// and whether it was ever left unrefreshed for [`lost_after`]: once lost,
/// a lock stays lost. A process resumed after a long SIGSTOP would
/// otherwise refresh at once and look held again, although a prune may
/// have judged it stale and deleted what the process still means to refer
/// to.
#[derive(Debug, Clone, Copy)]
struct Held {
    mono: Instant,
    wall: SystemTime,
    lost: bool,
}

/// The instant [`LockGuard::ensure_held`] found the lock held; what the
/// caller writes after it must be done within the margin
/// [`LockGuard::confirm`] checks.
#[derive(Debug, Clone, Copy)]
#[must_use = "confirm the lock after the writes it covers"]
pub struct HeldCheck {
    mono: Instant,
    wall: SystemTime,
}

pub struct LockGuard {
    backend: Arc<dyn Backend>,
    name: Arc<Mutex<String>>,
    id: String,
    last_ok: Arc<Mutex<Held>>,
    /// Dropping it wakes and ends the refresh thread at once (a sleeping
    /// poll here once added up to 200 ms to every command).
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockGuard({})", self.name())
    }
}

impl LockGuard {
    pub fn acquire(
        backend: Arc<dyn Backend>,
        keys: &Keys,
        mode: LockMode,
        tool: &str,
    ) -> Result<LockGuard> {
        let mut rnd = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rnd);
        let id = hex::encode(rnd);
        let info = LockInfo {
            mode,
            time: Timestamp::now(),
            host: crate::sys::hostname(),
            user: crate::sys::username(),
            pid: std::process::id(),
            tool: tool.to_string(),
            id: Some(id.clone()),
            pidns: pid_namespace(),
        };
        let written = (Instant::now(), SystemTime::now());
        let mine = write_lock(&*backend, keys, &info)?;
        let conflict = list_lock_objects(&*backend, keys).map(|locks| {
            let now = storage_now(&locks, &mine);
            let conflicting = |other: &LockObject| {
                other.name != mine
                    && other
                        .info
                        .as_ref()
                        .is_some_and(|i| mode.conflicts_with(i.mode))
            };
            // A lock that would conflict but is stale is taken over; the
            // operator hears of it (a dead prune, a suspended host).
            for other in locks.iter().filter(|o| conflicting(o) && o.is_stale_at(now)) {
                if let Some(i) = &other.info {
                    log::warn!("taking over a stale lock (its holder is gone or stopped refreshing it): {}", i.describe());
                }
            }
            locks.iter().find_map(|other| {
                let info = other.info.as_ref()?;
                (conflicting(other) && !other.is_stale_at(now))
                    .then(|| (other.name.clone(), info.describe()))
            })
        });
        match conflict {
            Ok(None) => {}
            Ok(Some((lock, holder))) => {
                let _ = backend.delete(ObjectKind::Lock, &mine);
                return Err(Error::Locked {
                    lock: Some(lock),
                    holder,
                });
            }
            Err(e) => {
                let _ = backend.delete(ObjectKind::Lock, &mine);
                return Err(e);
            }
        }
        let name = Arc::new(Mutex::new(mine));
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let last_ok = Arc::new(Mutex::new(Held {
            mono: written.0,
            wall: written.1,
            lost: false,
        }));
        let thread = {
            let (backend, name, keys, last_ok) = (
                Arc::clone(&backend),
                Arc::clone(&name),
                keys.clone(),
                Arc::clone(&last_ok),
            );
            std::thread::Builder::new()
                .name("bk-lock-refresh".into())
                .spawn(move || refresh_loop(&*backend, &keys, info, &name, &stopped, &last_ok))
                .ok()
        };
        Ok(LockGuard {
            backend,
            name,
            id,
            last_ok,
            stop: Some(stop),
            thread,
        })
    }

    /// The current lock object's name.
    pub fn name(&self) -> String {
        self.name
            .lock()
            .map(|n| n.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The holder id, stable across refreshes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Fails if the lock may have been judged stale by others (refreshes
    /// failed, or the process was suspended): whoever relied on the lock
    /// (a backup about to commit) must not go on. What it writes next must
    /// then be finished within the margin [`LockGuard::confirm`] checks.
    pub fn ensure_held(&self) -> Result<HeldCheck> {
        let held = *self.last_ok.lock().unwrap_or_else(|e| e.into_inner());
        let since = elapsed_since(held.mono, held.wall);
        if held.lost || since > lost_after() {
            return Err(Error::Locked {
                lock: None,
                holder: format!(
                "this process's own lock was not refreshed for {} min (storage unreachable or process suspended); \
                 a prune may have treated it as stale, so nothing was committed — run the backup again",
                since.as_secs() / 60
            ),
            });
        }
        Ok(HeldCheck {
            mono: Instant::now(),
            wall: SystemTime::now(),
        })
    }

    /// Fails if the writes since `check` took longer than the margin
    /// between [`lost_after`] and [`stale_after`] (the process was
    /// suspended, or the storage stalled, in between): then others may have
    /// judged the lock stale while they ran, and what they refer to may be
    /// gone. The caller withdraws what it wrote.
    pub fn confirm(&self, check: HeldCheck) -> Result<()> {
        let held = *self.last_ok.lock().unwrap_or_else(|e| e.into_inner());
        let took = elapsed_since(check.mono, check.wall);
        if held.lost || took > stale_after().saturating_sub(lost_after()) {
            return Err(Error::Locked {
                lock: None,
                holder: format!(
                    "this process was stopped or stalled for {} s while it committed, so a prune may have \
                     treated its lock as stale; what it wrote was withdrawn — run it again",
                    took.as_secs()
                ),
            });
        }
        Ok(())
    }
}

fn refresh_loop(
    backend: &dyn Backend,
    keys: &Keys,
    mut info: LockInfo,
    name: &Mutex<String>,
    stopped: &crossbeam_channel::Receiver<()>,
    last_ok: &Mutex<Held>,
) {
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
        stopped.recv_timeout(refresh_interval())
    {
        {
            // Judged before the write: once this process has gone without a
            // refresh for that long, a fresh lock object cannot undo it.
            let mut held = last_ok.lock().unwrap_or_else(|e| e.into_inner());
            if !held.lost && elapsed_since(held.mono, held.wall) > lost_after() {
                held.lost = true;
                log::warn!("this process's lock went unrefreshed too long; it will not commit");
            }
        }
        info.time = Timestamp::now();
        let (mono, wall) = (Instant::now(), SystemTime::now());
        match write_lock(backend, keys, &info) {
            Ok(new) => {
                {
                    let mut held = last_ok.lock().unwrap_or_else(|e| e.into_inner());
                    held.mono = mono;
                    held.wall = wall;
                }
                let mut cur = name.lock().unwrap_or_else(|e| e.into_inner());
                let old = std::mem::replace(&mut *cur, new);
                let _ = backend.delete(ObjectKind::Lock, &old);
            }
            Err(e) => log::warn!("could not refresh lock: {e}"),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let name = self.name();
        if let Err(e) = self.backend.delete(ObjectKind::Lock, &name) {
            log::warn!("could not remove lock {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::MasterKey;
    use crate::store::backend::local::LocalBackend;

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
        assert!(matches!(err, Error::Locked { .. }));
        let listed = list_lock_objects(&*backend, &keys).unwrap();
        assert_eq!(listed.len(), 2);
        // Regression: `bk-repo locks` printed "v":0 (a record built from
        // LockRecord::default()).
        for lock in &listed {
            assert_eq!(
                lock.record(SystemTime::now()).v,
                crate::format::wire::VERSION
            );
        }
        drop((a, b));
        assert!(list_lock_objects(&*backend, &keys).unwrap().is_empty());
        // A lock from a dead process on this host does not block.
        let dead = LockInfo {
            mode: LockMode::Exclusive,
            time: Timestamp::now(),
            host: crate::sys::hostname(),
            user: None,
            pid: 0x3fff_fff0,
            tool: "dead".into(),
            id: None,
            pidns: pid_namespace(),
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

    #[test]
    fn prune_locks_exclude_each_other_but_not_backups() {
        let dir = tempfile::tempdir().unwrap();
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path()));
        backend.create().unwrap();
        let keys = MasterKey::generate().derive();
        let backup =
            LockGuard::acquire(Arc::clone(&backend), &keys, LockMode::Shared, "t").unwrap();
        let prune = LockGuard::acquire(Arc::clone(&backend), &keys, LockMode::Prune, "t").unwrap();
        let err =
            LockGuard::acquire(Arc::clone(&backend), &keys, LockMode::Prune, "t").unwrap_err();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        let _b2 = LockGuard::acquire(Arc::clone(&backend), &keys, LockMode::Shared, "t").unwrap();
        assert!(prune.ensure_held().is_ok());
        assert_ne!(backup.id(), prune.id());
        drop(prune);
        let _p2 = LockGuard::acquire(Arc::clone(&backend), &keys, LockMode::Prune, "t").unwrap();
    }

    #[test]
    fn dead_pid_in_another_pid_namespace_is_not_proof_of_death() {
        let info = LockInfo {
            mode: LockMode::Shared,
            time: Timestamp::now(),
            host: crate::sys::hostname(),
            user: None,
            pid: 0x3fff_fff0,
            tool: "elsewhere".into(),
            id: Some("x".into()),
            pidns: Some("other-boot/pid:[1]".into()),
        };
        assert!(!info.is_stale(Timestamp::now()));
        let same = LockInfo {
            pidns: pid_namespace(),
            ..info.clone()
        };
        assert!(same.is_stale(Timestamp::now()));
        // Storage clock decides age, not the holder's clock.
        let now = SystemTime::now();
        let old = now - STALE_AFTER - Duration::from_secs(1);
        assert!(info.is_stale_at(Some(old), now));
        assert!(!info.is_stale_at(Some(now - Duration::from_secs(60)), now));
    }
}
