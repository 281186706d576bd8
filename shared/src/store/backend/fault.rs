//! A backend that wraps another and lets tests step into its calls.
//!
//! Races and crashes between two storage calls are rare in a real run and
//! impossible to hit on purpose from outside a process. Tests wrap the
//! real backend (local or S3) in a [`FaultBackend`] and register hooks
//! that run before or after chosen calls: a hook can fail the call with an
//! I/O error, or act on the repository itself (a concurrent backup, a
//! prune's deletion) at exactly the instant between a listing and the
//! reads that follow it. Every method of [`Backend`] is forwarded, so code
//! under test takes the same paths it takes in production.

use super::{Backend, ObjectInfo, ObjectKind, Staged};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The storage operations a hook can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `put`, `put_owned`, and the publication of a staged object.
    Put,
    /// `get`: a whole object.
    Get,
    /// `get_range`: an exact range.
    GetRange,
    /// `get_range_upto`: a range that may end short at the object's end
    /// (the windows readers fetch ahead).
    GetUpto,
    List,
    Delete,
}

/// Whether a hook runs before the call reaches the wrapped backend or
/// after it returned successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Before,
    After,
}

/// One storage call, as a hook sees it.
#[derive(Debug, Clone)]
pub struct Call {
    pub op: Op,
    pub kind: ObjectKind,
    /// The object's name (empty for listings).
    pub name: String,
    pub when: When,
    /// 1 for the first call of this `op` on this `kind` since the backend
    /// was wrapped, 2 for the second, …
    pub nth: u64,
    /// After a read: how many bytes it returned; after a listing: how many
    /// objects. 0 otherwise.
    pub len: u64,
}

/// What the call does after a hook ran.
#[derive(Debug)]
pub enum Action {
    Proceed,
    /// The call fails with this error (kind and message of the I/O error).
    Fail(std::io::ErrorKind, String),
    /// Sleeps this long, then goes on (a slow store).
    Delay(std::time::Duration),
    /// After a read: the byte at this offset of what was read (clamped to
    /// the last one) is flipped, as a bit rotting in transit would.
    FlipByte(usize),
    /// After a read: only this many bytes of it are returned.
    Truncate(usize),
}

type Hook = Box<dyn Fn(&Call, &dyn Backend) -> Action + Send + Sync>;

/// See the module documentation.
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    hooks: Vec<(Op, ObjectKind, When, Hook)>,
    counts: Mutex<HashMap<(Op, ObjectKind), u64>>,
    /// `Some`: overrides the wrapped backend's read window (a local
    /// repository dressed as a remote one).
    read_window: Option<Option<u64>>,
    /// Objects are staged in memory and published with one hooked put,
    /// as a backend without streaming writes (S3) does.
    stage_in_memory: bool,
}

impl std::fmt::Debug for FaultBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultBackend")
            .field("inner", &self.inner)
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl FaultBackend {
    pub fn new(inner: Arc<dyn Backend>) -> FaultBackend {
        FaultBackend {
            inner,
            hooks: Vec::new(),
            counts: Mutex::new(HashMap::new()),
            read_window: None,
            stage_in_memory: false,
        }
    }

    /// Reports `window` as the read window instead of the wrapped
    /// backend's, so readers plan ranged reads as they do against S3.
    pub fn with_read_window(mut self, window: Option<u64>) -> FaultBackend {
        self.read_window = Some(window);
        self
    }

    /// Stages objects in memory (the trait's default) instead of in the
    /// wrapped backend, so every publication is one hooked put.
    pub fn with_staging_in_memory(mut self) -> FaultBackend {
        self.stage_in_memory = true;
        self
    }

    /// Runs `hook` at `when` of every `op` on objects of `kind`. The hook
    /// gets the wrapped backend, so what it does there is not hooked.
    pub fn on(
        mut self,
        op: Op,
        kind: ObjectKind,
        when: When,
        hook: impl Fn(&Call, &dyn Backend) -> Action + Send + Sync + 'static,
    ) -> FaultBackend {
        self.hooks.push((op, kind, when, Box::new(hook)));
        self
    }

    /// Fails the `nth` `op` on `kind` (before it reaches the storage) with
    /// an I/O error of `error`'s kind whose message says it was injected.
    pub fn fail_nth(self, op: Op, kind: ObjectKind, nth: u64, error: std::io::ErrorKind) -> Self {
        self.on(op, kind, When::Before, move |call, _| {
            if call.nth == nth {
                Action::Fail(error, format!("injected failure of {op:?} #{nth}"))
            } else {
                Action::Proceed
            }
        })
    }

    /// A backend with the faults `spec` describes, for processes under
    /// test: `OP:KIND:NTH:WHEN:ACTION`, several separated by commas, where
    /// OP is put, get, get_range, get_upto, list or delete; KIND an object kind as in
    /// [`ObjectKind::parse`] (pack, index, snapshot, lock, gc, wal, sqlite,
    /// key, config); NTH counts from 1; WHEN is before or after; and
    /// ACTION is `kill` (the process sends itself SIGKILL: the crash at
    /// exactly that durable step), `fail` (an I/O error), or `stall` (the
    /// call sleeps 2 s). Debug builds read it from `BK_TEST_FAULT`
    /// ([`super::open`]).
    pub fn from_spec(inner: Arc<dyn Backend>, spec: &str) -> Result<FaultBackend> {
        let mut fb = FaultBackend::new(inner);
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || {
                Error::Usage(format!(
                    "BK_TEST_FAULT: {part:?} is not OP:KIND:NTH:WHEN:ACTION"
                ))
            };
            let f: Vec<&str> = part.split(':').collect();
            let [op, kind, nth, when, action] = f[..] else {
                return Err(bad());
            };
            let op = match op {
                "put" => Op::Put,
                "get" => Op::Get,
                "get_range" => Op::GetRange,
                "get_upto" => Op::GetUpto,
                "list" => Op::List,
                "delete" => Op::Delete,
                _ => return Err(bad()),
            };
            let kind = ObjectKind::parse(kind).ok_or_else(bad)?;
            let nth: u64 = nth.parse().map_err(|_| bad())?;
            let when = match when {
                "before" => When::Before,
                "after" => When::After,
                _ => return Err(bad()),
            };
            let action = match action {
                "kill" | "fail" | "stall" => action.to_string(),
                _ => return Err(bad()),
            };
            fb = fb.on(op, kind, when, move |call, _| {
                if call.nth != nth {
                    return Action::Proceed;
                }
                match action.as_str() {
                    "kill" => {
                        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
                        Action::Proceed
                    }
                    "stall" => Action::Delay(std::time::Duration::from_secs(2)),
                    _ => Action::Fail(
                        std::io::ErrorKind::Other,
                        format!("injected failure of {:?} #{nth}", call.op),
                    ),
                }
            });
        }
        Ok(fb)
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &Arc<dyn Backend> {
        &self.inner
    }

    /// How many calls of `op` on `kind` were made so far.
    pub fn calls(&self, op: Op, kind: ObjectKind) -> u64 {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(op, kind))
            .unwrap_or(&0)
    }

    fn count(&self, op: Op, kind: ObjectKind) -> u64 {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry((op, kind)).or_insert(0);
        *n += 1;
        *n
    }

    /// Runs the matching hooks in order. A failure ends the call; a delay
    /// is slept; flips and truncations are applied to `data` (reads).
    fn run_hooks(&self, call: &Call, mut data: Option<&mut Vec<u8>>) -> Result<()> {
        for (o, k, w, hook) in &self.hooks {
            if (*o, *k, *w) != (call.op, call.kind, call.when) {
                continue;
            }
            match hook(call, &*self.inner) {
                Action::Proceed => {}
                Action::Fail(error, message) => {
                    return Err(Error::storage(
                        call.kind.path(&call.name),
                        std::io::Error::new(error, message),
                    ))
                }
                Action::Delay(d) => std::thread::sleep(d),
                Action::FlipByte(at) => {
                    if let Some(d) = data.as_deref_mut().filter(|d| !d.is_empty()) {
                        let at = at.min(d.len() - 1);
                        d[at] ^= 0x40;
                    }
                }
                Action::Truncate(len) => {
                    if let Some(d) = data.as_deref_mut() {
                        d.truncate(len);
                    }
                }
            }
        }
        Ok(())
    }

    fn call(&self, op: Op, kind: ObjectKind, name: &str) -> Call {
        Call {
            op,
            kind,
            name: name.to_string(),
            when: When::Before,
            nth: self.count(op, kind),
            len: 0,
        }
    }

    /// Counts the call, runs the `Before` hooks, the call itself, then the
    /// `After` hooks.
    fn around<T>(
        &self,
        op: Op,
        kind: ObjectKind,
        name: &str,
        call: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let mut c = self.call(op, kind, name);
        self.run_hooks(&c, None)?;
        let out = call()?;
        c.when = When::After;
        self.run_hooks(&c, None)?;
        Ok(out)
    }

    /// [`FaultBackend::around`] for reads, whose `After` hooks may alter
    /// the bytes read.
    fn read(
        &self,
        op: Op,
        kind: ObjectKind,
        name: &str,
        call: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let mut c = self.call(op, kind, name);
        self.run_hooks(&c, None)?;
        let mut data = call()?;
        c.when = When::After;
        c.len = data.len() as u64;
        self.run_hooks(&c, Some(&mut data))?;
        Ok(data)
    }
}

impl Backend for FaultBackend {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn create(&self) -> Result<()> {
        self.inner.create()
    }

    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()> {
        self.around(Op::Put, kind, name, || self.inner.put(kind, name, data))
    }

    fn put_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<()> {
        self.around(Op::Put, kind, name, || {
            self.inner.put_owned(kind, name, data)
        })
    }

    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>> {
        self.read(Op::Get, kind, name, || self.inner.get(kind, name))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read(Op::GetRange, kind, name, || {
            self.inner.get_range(kind, name, offset, len)
        })
    }

    fn get_range_upto(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>> {
        self.read(Op::GetUpto, kind, name, || {
            self.inner.get_range_upto(kind, name, offset, max_len)
        })
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        let mut c = self.call(Op::List, kind, "");
        self.run_hooks(&c, None)?;
        let listed = self.inner.list(kind)?;
        c.when = When::After;
        c.len = listed.len() as u64;
        self.run_hooks(&c, None)?;
        Ok(listed)
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.around(Op::Delete, kind, name, || self.inner.delete(kind, name))
    }

    fn read_window(&self) -> Option<u64> {
        self.read_window.unwrap_or_else(|| self.inner.read_window())
    }

    fn stage(&self, kind: ObjectKind, size_hint: usize) -> Result<Box<dyn Staged + '_>> {
        if self.stage_in_memory {
            return Ok(super::stage_in_memory(self, kind, size_hint));
        }
        Ok(Box::new(FaultStaged {
            backend: self,
            kind,
            inner: self.inner.stage(kind, size_hint)?,
        }))
    }

    fn write_concurrency(&self) -> usize {
        self.inner.write_concurrency()
    }

    fn incomplete(&self) -> Result<Vec<ObjectInfo>> {
        self.inner.incomplete()
    }

    fn remove_incomplete(&self, name: &str) -> Result<()> {
        self.inner.remove_incomplete(name)
    }
}

/// A staged object of the wrapped backend whose publication is a hooked
/// [`Op::Put`].
struct FaultStaged<'a> {
    backend: &'a FaultBackend,
    kind: ObjectKind,
    inner: Box<dyn Staged + 'a>,
}

impl std::io::Write for FaultStaged<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Staged for FaultStaged<'_> {
    fn publish(self: Box<Self>, name: &str) -> Result<()> {
        let FaultStaged {
            backend,
            kind,
            inner,
        } = *self;
        backend.around(Op::Put, kind, name, || inner.publish(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::local::LocalBackend;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn local() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let dir = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir.path().join("r")));
        b.create().unwrap();
        (dir, b)
    }

    #[test]
    fn fails_only_the_chosen_call() {
        let (_d, inner) = local();
        let b = FaultBackend::new(inner).fail_nth(
            Op::Put,
            ObjectKind::Index,
            2,
            std::io::ErrorKind::TimedOut,
        );
        b.put(ObjectKind::Index, "a", b"1").unwrap();
        let err = b.put(ObjectKind::Index, "b", b"2").unwrap_err();
        assert!(err.is_retryable(), "{err}");
        assert!(err.to_string().contains("injected"), "{err}");
        b.put(ObjectKind::Index, "c", b"3").unwrap();
        b.put(ObjectKind::Snapshot, "d", b"4").unwrap();
        let names: Vec<String> = b
            .list(ObjectKind::Index)
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(!names.contains(&"b".to_string()));
        assert_eq!(b.calls(Op::Put, ObjectKind::Index), 3);
    }

    #[test]
    fn hooks_act_between_a_listing_and_the_reads_after_it() {
        let (_d, inner) = local();
        inner.put(ObjectKind::Snapshot, "s1", b"x").unwrap();
        let b = FaultBackend::new(inner).on(Op::List, ObjectKind::Snapshot, When::After, |_, b| {
            b.delete(ObjectKind::Snapshot, "s1").unwrap();
            Action::Proceed
        });
        let listed = b.list(ObjectKind::Snapshot).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(b
            .get(ObjectKind::Snapshot, "s1")
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn staged_publication_is_a_hooked_put() {
        let (_d, inner) = local();
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        let b = FaultBackend::new(inner).on(Op::Put, ObjectKind::Pack, When::After, move |c, _| {
            assert_eq!(c.name, "ab01");
            s.fetch_add(1, Ordering::Relaxed);
            Action::Proceed
        });
        let mut staged = b.stage(ObjectKind::Pack, 4).unwrap();
        std::io::Write::write_all(&mut staged, b"pack").unwrap();
        staged.publish("ab01").unwrap();
        assert_eq!(seen.load(Ordering::Relaxed), 1);
        assert_eq!(b.get(ObjectKind::Pack, "ab01").unwrap(), b"pack");
    }
}
