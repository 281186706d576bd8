//! Storage backends: where repository objects live.
//!
//! # Durability contract
//!
//! Every backend must provide, for each object:
//!
//! * **Write-once, atomic publication.** [`Backend::put`] makes an object
//!   visible under its final name only when it is complete; readers never
//!   observe a partial object. bk never rewrites an object in place: every
//!   name is new (content-addressed or random), so two writers cannot
//!   corrupt each other's objects.
//! * **Durable on return.** When `put` returns `Ok`, the object survives a
//!   crash or power loss of this machine (local: fsync of the file and of
//!   its directory; S3: a successful PUT response).
//! * **Ordered visibility.** An object written after another's `put`
//!   returned is never visible before it. bk relies on this to publish packs
//!   before the index that names them and the index before the snapshot.
//! * **Complete listings.** [`Backend::list`] returns every object that was
//!   durable before the call started, or fails. A partial listing is an
//!   error, never a short answer: a short listing could make garbage
//!   collection delete live data.
//! * **Read-after-write**: `get` of an object whose `put` returned succeeds.
//!
//! Errors carry a retryable flag ([`crate::Error::is_retryable`]); backends
//! retry transient failures themselves within a bounded budget.

#[cfg(any(test, debug_assertions, feature = "testing"))]
pub mod fault;
pub mod local;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
mod quickack_http;
pub mod s3;
mod s3_tls;

use crate::error::Result;

/// The first error of type `E` in `err`'s chain. The walk also enters the
/// error a `std::io::Error` carries, which its own `source()` skips: hyper
/// and tokio-rustls hand their causes up inside I/O errors.
pub(crate) fn find_cause<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    std::iter::successors(Some(err), |e| e.source()).find_map(|e| {
        e.downcast_ref::<E>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| find_cause::<E>(inner))
        })
    })
}

pub use crate::layout::{ObjectKind, GC_ARM_PREFIX};

/// Objects are named by the SHA-256 of their stored bytes; check it.
pub fn check_name(kind: ObjectKind, name: &str, raw: &[u8]) -> Result<()> {
    if kind
        .digest_name(name)
        .is_some_and(|d| crate::format::id::ObjectId::digest(raw).to_hex() != d)
    {
        return Err(crate::Error::damaged(
            kind,
            name,
            "content does not match its name (corrupt or replaced)",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    /// Last modification as seen by the storage's own clock.
    pub modified: Option<std::time::SystemTime>,
}

/// A place that stores repository objects. See the module documentation
/// for the durability contract every implementation must keep.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Human-readable address, safe to print (credentials redacted).
    fn location(&self) -> String;
    /// Prepares an empty location for a new repository.
    fn create(&self) -> Result<()>;
    /// Publishes a complete object atomically and durably. Writing a name
    /// that exists leaves the existing object in place and succeeds when the
    /// name is content-addressed (same name, same bytes).
    fn put(&self, kind: ObjectKind, name: &str, data: &[u8]) -> Result<()>;
    /// The whole object. A missing object is an error whose
    /// [`crate::Error::is_not_found`] is true.
    fn get(&self, kind: ObjectKind, name: &str) -> Result<Vec<u8>>;
    /// `len` bytes at `offset`; short objects are an error.
    fn get_range(&self, kind: ObjectKind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    /// Up to `max_len` bytes at `offset`: fewer only at the object's end.
    fn get_range_upto(
        &self,
        kind: ObjectKind,
        name: &str,
        offset: u64,
        max_len: u64,
    ) -> Result<Vec<u8>>;
    /// Every object of `kind`, or an error; never a partial list. An object
    /// present throughout the listing is in it; one deleted while it ran
    /// may be left out (as from an S3 LIST), not turned into an error.
    fn list(&self, kind: ObjectKind) -> Result<Vec<ObjectInfo>>;
    fn delete(&self, kind: ObjectKind, name: &str) -> Result<()>;
    /// [`Backend::put`] for a buffer the caller no longer needs, so a
    /// backend that must own the bytes (S3) does not copy them.
    fn put_owned(&self, kind: ObjectKind, name: &str, data: Vec<u8>) -> Result<()> {
        self.put(kind, name, &data)
    }
    /// Reading many small neighbouring ranges costs a round trip each:
    /// backends where that matters return the window size worth fetching
    /// at once (see [`crate::store::reader`]).
    fn read_window(&self) -> Option<u64> {
        None
    }
    /// Starts an object that is written as it is produced. Backends that
    /// can write to the storage medium itself (local: a file in tmp/) do,
    /// so a writer need not hold a whole pack in memory; the default
    /// gathers the bytes in memory (`size_hint` sizes that buffer) and
    /// publishes them with [`Backend::put_owned`].
    fn stage(&self, kind: ObjectKind, size_hint: usize) -> Result<Box<dyn Staged + '_>> {
        Ok(stage_in_memory(self, kind, size_hint))
    }
    /// How many object writes are worth running at once.
    fn write_concurrency(&self) -> usize {
        2
    }
    /// Writes that never completed: temp files of killed writers (local),
    /// multipart uploads never completed or aborted (S3). They hold space
    /// but no data anyone can read; `modified` is when they were started,
    /// on the storage's clock.
    fn incomplete(&self) -> Result<Vec<ObjectInfo>> {
        Ok(Vec::new())
    }
    /// Removes one item returned by [`Backend::incomplete`].
    fn remove_incomplete(&self, _name: &str) -> Result<()> {
        Ok(())
    }
}

/// An object being written by [`Backend::stage`]. Nothing is visible under
/// any name until [`Staged::publish`], which keeps [`Backend::put`]'s
/// contract (atomic, durable on return, write-once). Dropping it
/// unpublished discards what was written.
pub trait Staged: std::io::Write + Send {
    fn publish(self: Box<Self>, name: &str) -> Result<()>;
}

/// [`Backend::stage`]'s default: the object gathers in memory and is
/// published with one [`Backend::put_owned`] (which backends that wrap
/// another and override `put` keep using).
pub fn stage_in_memory<B: Backend + ?Sized>(
    backend: &B,
    kind: ObjectKind,
    size_hint: usize,
) -> Box<dyn Staged + '_> {
    Box::new(InMemory {
        backend,
        kind,
        buf: Vec::with_capacity(size_hint),
    })
}

struct InMemory<'a, B: ?Sized> {
    backend: &'a B,
    kind: ObjectKind,
    buf: Vec<u8>,
}

impl<B: ?Sized> std::io::Write for InMemory<'_, B> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<B: Backend + ?Sized> Staged for InMemory<'_, B> {
    fn publish(self: Box<Self>, name: &str) -> Result<()> {
        self.backend.put_owned(self.kind, name, self.buf)
    }
}

/// Opens the backend for a repository address: a path, a `file://` URL or
/// `s3://BUCKET[/PREFIX]`.
///
/// Debug builds (the binaries the integration tests drive) wrap it in the
/// faults `BK_TEST_FAULT` describes ([`fault::FaultBackend::from_spec`]):
/// that is how the torture tests stop a real process at an exact durable
/// step. Release builds do not read the variable.
pub fn open(location: &str) -> Result<std::sync::Arc<dyn Backend>> {
    let backend = open_plain(location)?;
    #[cfg(debug_assertions)]
    if let Some(spec) = std::env::var_os("BK_TEST_FAULT") {
        let fb = fault::FaultBackend::from_spec(backend, &spec.to_string_lossy())?;
        return Ok(std::sync::Arc::new(fb));
    }
    Ok(backend)
}

fn open_plain(location: &str) -> Result<std::sync::Arc<dyn Backend>> {
    if location.starts_with("s3://") {
        return Ok(std::sync::Arc::new(s3::S3Backend::open(location)?));
    }
    if let Some(rest) = location.strip_prefix("file://") {
        return Ok(std::sync::Arc::new(local::LocalBackend::new(rest)));
    }
    if let Some((scheme, _)) = location.split_once("://") {
        return Err(crate::Error::Usage(format!(
            "unsupported repository scheme {scheme:?} in {location:?}: use a path, file:// or s3://"
        )));
    }
    if location.is_empty() {
        return Err(crate::Error::Usage("empty repository address".into()));
    }
    Ok(std::sync::Arc::new(local::LocalBackend::new(location)))
}

#[cfg(test)]
mod contract {
    //! Every backend (and the fault backend wrapping one with no hooks)
    //! answers the same calls the same way.
    use super::fault::FaultBackend;
    use super::local::LocalBackend;
    use super::memory::MemoryBackend;
    use super::*;
    use std::sync::Arc;

    /// Every method of [`Backend`] on a fresh location, as a transcript of
    /// results (error kinds, not messages: those name the location).
    fn transcript(b: &dyn Backend) -> Vec<String> {
        let r = |x: Result<Vec<u8>>| match x {
            Ok(d) => format!("ok {d:?}"),
            Err(e) => format!("err {:?}", io_kind(&e)),
        };
        let u = |x: Result<()>| match x {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("err {:?}", io_kind(&e)),
        };
        let pack = "ab".repeat(32);
        let mut t = vec![
            u(b.create()),
            u(b.put(ObjectKind::Config, "config", b"c")),
            u(b.put(ObjectKind::Config, "config", b"c")),
            u(b.put(ObjectKind::Key, "k1", b"key")),
            u(b.put(ObjectKind::Key, "k1", b"key")),
            u(b.put(ObjectKind::Lock, "l1", b"lock")),
            u(b.put(ObjectKind::Lock, "l1", b"lock")),
            u(b.put(ObjectKind::Pack, &pack, b"0123456789")),
            u(b.put(ObjectKind::Pack, &pack, b"0123456789")),
            u(b.put_owned(ObjectKind::Index, "i1", b"index".to_vec())),
            r(b.get(ObjectKind::Index, "i1")),
            r(b.get(ObjectKind::Index, "nope")),
            r(b.get_range(ObjectKind::Pack, &pack, 2, 3)),
            r(b.get_range(ObjectKind::Pack, &pack, 8, 5)),
            r(b.get_range(ObjectKind::Pack, "cd", 0, 1)),
            r(b.get_range_upto(ObjectKind::Pack, &pack, 8, 5)),
            r(b.get_range_upto(ObjectKind::Pack, &pack, 20, 5)),
        ];
        let mut staged = b.stage(ObjectKind::Snapshot, 3).unwrap();
        std::io::Write::write_all(&mut staged, b"snap").unwrap();
        t.push(u(staged.publish("s1")));
        let dropped = b.stage(ObjectKind::Snapshot, 3).unwrap();
        drop(dropped);
        t.push(r(b.get(ObjectKind::Snapshot, "s1")));
        for kind in ObjectKind::ALL {
            let mut l: Vec<(String, u64, bool)> = b
                .list(kind)
                .unwrap()
                .into_iter()
                .map(|o| (o.name, o.size, o.modified.is_some()))
                .collect();
            l.sort();
            t.push(format!("{kind:?} {l:?}"));
        }
        t.push(u(b.delete(ObjectKind::Index, "i1")));
        t.push(u(b.delete(ObjectKind::Index, "i1")));
        t.push(r(b.get(ObjectKind::Index, "i1")));
        t.push(format!("incomplete {}", b.incomplete().unwrap().len()));
        t.push(u(b.remove_incomplete("none")));
        t.push(u(b.create()));
        t
    }

    fn io_kind(e: &crate::Error) -> Option<std::io::ErrorKind> {
        match e {
            crate::Error::Storage { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    #[test]
    fn every_backend_answers_every_method_alike() {
        let dir = tempfile::tempdir().unwrap();
        let local = || -> Arc<dyn Backend> {
            Arc::new(LocalBackend::new(
                tempfile::tempdir_in(dir.path()).unwrap().keep(),
            ))
        };
        let memory = || -> Arc<dyn Backend> { Arc::new(MemoryBackend::new()) };
        let reference = transcript(&*local());
        assert_eq!(transcript(&*memory()), reference);
        for inner in [local(), memory()] {
            let wrapped = FaultBackend::new(inner.clone());
            assert_eq!(transcript(&wrapped), reference);
            assert_eq!(wrapped.location(), inner.location());
            assert_eq!(wrapped.read_window(), inner.read_window());
            assert_eq!(wrapped.write_concurrency(), inner.write_concurrency());
        }
    }
}
