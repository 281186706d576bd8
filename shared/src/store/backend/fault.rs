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
    /// `get`, `get_range` and `get_range_upto`.
    Get,
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
}

/// What the call does after a hook ran.
#[derive(Debug)]
pub enum Action {
    Proceed,
    /// The call fails with this error (kind and message of the I/O error).
    Fail(std::io::ErrorKind, String),
}

type Hook = Box<dyn Fn(&Call, &dyn Backend) -> Action + Send + Sync>;

/// See the module documentation.
pub struct FaultBackend {
    inner: Arc<dyn Backend>,
    hooks: Vec<(Op, ObjectKind, When, Hook)>,
    counts: Mutex<HashMap<(Op, ObjectKind), u64>>,
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
        }
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

    fn run_hooks(&self, op: Op, kind: ObjectKind, name: &str, when: When, nth: u64) -> Result<()> {
        let call = Call {
            op,
            kind,
            name: name.to_string(),
            when,
            nth,
        };
        for (o, k, w, hook) in &self.hooks {
            if (*o, *k, *w) != (op, kind, when) {
                continue;
            }
            if let Action::Fail(error, message) = hook(&call, &*self.inner) {
                return Err(Error::storage(
                    kind.path(name),
                    std::io::Error::new(error, message),
                ));
            }
        }
        Ok(())
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
        let nth = self.count(op, kind);
        self.run_hooks(op, kind, name, When::Before, nth)?;
        let out = call()?;
        self.run_hooks(op, kind, name, When::After, nth)?;
        Ok(out)
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
        self.around(Op::Get, kind, name, || self.inner.get(kind, name))
    }

    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.around(Op::Get, kind, name, || {
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
        self.around(Op::Get, kind, name, || {
            self.inner.get_range_upto(kind, name, offset, max_len)
        })
    }

    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>> {
        self.around(Op::List, kind, "", || self.inner.list(kind))
    }

    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()> {
        self.around(Op::Delete, kind, name, || self.inner.delete(kind, name))
    }

    fn read_window(&self) -> Option<u64> {
        self.inner.read_window()
    }

    fn stage(&self, kind: ObjectKind, size_hint: usize) -> Result<Box<dyn Staged + '_>> {
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
