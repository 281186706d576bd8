//! An opened repository: backend, config and keys, and the operations every
//! tool shares (index loading, blob reads, snapshots).
//!
//! Layout (see docs/ARCHITECTURE.md):
//!
//! ```text
//! config               plaintext JSON + HMAC: format version, id, parameters
//! keys/<random>        the master key wrapped by age (one per passphrase/identity)
//! data/<xx>/<sha256>   pack files
//! index/<sha256>       index objects
//! snapshots/<sha256>   snapshot objects
//! locks/<sha256>       lock objects
//! tmp/                 local backend only: files being written
//! ```

use crate::store::backend::{Backend, ObjectKind};
// Re-exported: their users predate the move to the layers below.
use crate::error::{Error, Result};
use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::crypto::{Keys, MasterKey};
use crate::format::id::{ChunkId, ObjectId};
use crate::format::index::{BlobLocation, Index, IndexFile};
use crate::format::pack::{blob_aad, BlobKind};
use crate::format::time::Timestamp;
pub use crate::store::backend::check_name;
use crate::store::keys::{KeyFile, NewKey, Secret, Unwrapped};
use crate::store::marks::{load_marks, StoredMark};
pub use crate::sys::parallel_map;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Repository format version written by this build.
pub const FORMAT_VERSION: u32 = 1;
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
pub const DEFAULT_COMPRESSION: i32 = 3;
const SNAPSHOT_AAD: &[u8] = b"bk snapshot v1";

/// Repository parameters, fixed at init.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigBody {
    pub bk_repository: u32,
    pub id: String,
    pub created: Timestamp,
    pub chunker: ChunkerParams,
    /// zstd level for new blobs (0 disables compression).
    pub compression: i32,
    pub pack_size: u32,
    pub cipher: String,
}

/// The stored config: the body as an exact string plus its HMAC, so the
/// MAC covers exactly the bytes written, whatever fields later versions add.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigFile {
    body: String,
    mac: String,
}

#[derive(Debug, Clone)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub compression: i32,
    pub pack_size: u32,
    pub label: Option<String>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            compression: DEFAULT_COMPRESSION,
            pack_size: DEFAULT_PACK_SIZE,
            label: None,
        }
    }
}

/// A snapshot as stored (sealed JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub v: u32,
    pub time: Timestamp,
    pub identity: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub source: String,
    /// The listing (JSON-lines entries), chunked into metadata blobs.
    pub listing: Vec<ChunkId>,
    pub files: u64,
    pub dirs: u64,
    pub entries: u64,
    pub bytes: u64,
    pub errors: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Paths the exclusion rules left out.
    #[serde(default, skip_serializing_if = "crate::format::wire::is_zero")]
    pub excluded: u64,
    /// Its entries carry their extended attributes (see `Header::xattrs`):
    /// only then may a backup take an unchanged file's from it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub xattrs: bool,
    pub created: Timestamp,
    pub program: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Every index object, split into live ones and ones a compacted index
/// object replaces (kept until garbage collection deletes them).
#[derive(Debug, Default)]
pub struct IndexFiles {
    pub live: Vec<(ObjectId, IndexFile)>,
    pub superseded: Vec<ObjectId>,
}

/// Listings of index/ that [`Repository::index_files`] takes before it
/// gives up on a prune that deletes what it lists faster than it reads.
const INDEX_RELIST_ROUNDS: u32 = 30;
const INDEX_RELIST_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);
const INDEX_RELIST_MAX_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

impl IndexFiles {
    /// The objects of one listing (in its order), split by whether another
    /// of them supersedes them.
    fn split(listed: Vec<ObjectId>, mut read: HashMap<ObjectId, IndexFile>) -> IndexFiles {
        let files: Vec<(ObjectId, IndexFile)> = listed
            .into_iter()
            .filter_map(|id| read.remove(&id).map(|f| (id, f)))
            .collect();
        let superseded: HashSet<ObjectId> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut out = IndexFiles::default();
        for (id, f) in files {
            if superseded.contains(&id) {
                out.superseded.push(id);
            } else {
                out.live.push((id, f));
            }
        }
        out
    }
}

pub struct Repository {
    backend: Arc<dyn Backend>,
    config: ConfigBody,
    keys: Keys,
    /// Kept (zeroized on drop) only so `bk-repo key add` can wrap it again.
    master: MasterKey,
    key_name: String,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Repository({} id {})",
            self.backend.location(),
            self.config.id
        )
    }
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Repository {
    /// Creates a repository: key file first, config last, so a crash
    /// mid-way never leaves something that looks like a repository.
    pub fn init(
        backend: Arc<dyn Backend>,
        secret: &Secret,
        opts: InitOptions,
    ) -> Result<Repository> {
        opts.chunker.validate().map_err(Error::Usage)?;
        if !(1 << 20..=1 << 30).contains(&opts.pack_size) {
            return Err(Error::Usage(
                "pack size must be between 1 MiB and 1 GiB".into(),
            ));
        }
        if !(0..=22).contains(&opts.compression) {
            return Err(Error::Usage(
                "compression level must be 0 (off) to 22".into(),
            ));
        }
        backend.create()?;
        let master = MasterKey::generate();
        let keys = master.derive();
        let config = ConfigBody {
            bk_repository: FORMAT_VERSION,
            id: random_hex(16),
            created: Timestamp::now(),
            chunker: opts.chunker,
            compression: opts.compression,
            pack_size: opts.pack_size,
            cipher: "aes-256-gcm".into(),
        };
        let key_name = random_hex(16);
        let mut kf = KeyFile::seal(&master, &config.id, &NewKey::from(secret), opts.label)?;
        kf.sign(&keys, &key_name);
        backend.put(
            ObjectKind::Key,
            &key_name,
            &serde_json::to_vec_pretty(&kf).expect("serializable"),
        )?;
        let body = serde_json::to_string(&config).expect("serializable");
        let file = ConfigFile {
            mac: hex::encode(keys.mac(body.as_bytes())),
            body,
        };
        backend.put(
            ObjectKind::Config,
            "config",
            &serde_json::to_vec(&file).expect("serializable"),
        )?;
        Ok(Repository {
            backend,
            config,
            keys,
            master,
            key_name,
        })
    }

    /// Reads the config and unwraps the master key with `secret`.
    pub fn open(backend: Arc<dyn Backend>, secret: &Secret) -> Result<Repository> {
        let raw = match backend.get(ObjectKind::Config, "config") {
            Ok(r) => r,
            // A local path that is a file, or runs through one.
            Err(e) if e.is_not_found() || e.is_not_a_directory() => {
                return Err(Error::NoRepository {
                    location: backend.location(),
                });
            }
            Err(e) => return Err(e),
        };
        let file: ConfigFile = serde_json::from_slice(&raw)
            .map_err(|e| Error::damaged(ObjectKind::Config, "", format!("not a bk config: {e}")))?;
        let config: ConfigBody = serde_json::from_str(&file.body)
            .map_err(|e| Error::damaged(ObjectKind::Config, "", format!("malformed: {e}")))?;
        if config.bk_repository > FORMAT_VERSION {
            return Err(Error::Usage(format!(
                "repository format {} is newer than this bk supports ({FORMAT_VERSION}); upgrade bk",
                config.bk_repository
            )));
        }
        let key_objects = backend.list(ObjectKind::Key)?;
        let mut tried = 0;
        // Why no key opened, when it is not simply a wrong secret.
        let mut unreadable: Option<Error> = None;
        let mut damaged: Option<Error> = None;
        let mut foreign: Option<(String, String)> = None;
        for obj in &key_objects {
            let raw = backend.get(ObjectKind::Key, &obj.name)?;
            let kf: KeyFile = match serde_json::from_slice(&raw) {
                Ok(k) => k,
                Err(e) => {
                    log::warn!("keys/{}: unreadable key file ({e}), skipped", obj.name);
                    unreadable.get_or_insert(Error::damaged(
                        ObjectKind::Key,
                        obj.name.clone(),
                        format!("unreadable key file ({e})"),
                    ));
                    continue;
                }
            };
            if !kf.matches_kind(secret) {
                continue;
            }
            tried += 1;
            let opened = match kf.unwrap(secret, &obj.name, &config.id) {
                Ok(Unwrapped::Master(m)) => Some(m),
                Ok(Unwrapped::NotThisSecret) => None,
                Ok(Unwrapped::OtherRepository(other)) => {
                    log::warn!(
                        "keys/{}: key belongs to repository {other}, not {}; skipped",
                        obj.name,
                        config.id
                    );
                    foreign.get_or_insert((obj.name.clone(), other));
                    None
                }
                Err(e) => {
                    log::warn!("{e}; skipped");
                    damaged.get_or_insert(e);
                    None
                }
            };
            if let Some(master) = opened {
                let keys = master.derive();
                let tag = hex::decode(&file.mac).unwrap_or_default();
                if !keys.verify_mac(file.body.as_bytes(), &tag) {
                    return Err(Error::damaged(
                        ObjectKind::Config,
                        "",
                        "authentication failed: the config was modified",
                    ));
                }
                return Ok(Repository {
                    backend,
                    config,
                    keys,
                    master,
                    key_name: obj.name.clone(),
                });
            }
        }
        if key_objects.is_empty() {
            return Err(Error::damaged(
                ObjectKind::Key,
                "",
                "the repository has no key files",
            ));
        }
        // The secret is right for some key file, but no usable key opened:
        // say what is damaged instead of "wrong passphrase".
        if let Some((name, other)) = foreign {
            return Err(Error::damaged(
                ObjectKind::Config,
                "",
                format!(
                    "the secret opens keys/{name}, which belongs to repository {other}, but the config \
                     says {}: the config was changed, or that key file was copied from another repository",
                    config.id
                ),
            ));
        }
        if let Some(Error::Integrity { subject, message }) = damaged {
            return Err(Error::Integrity {
                subject,
                message: format!("{message}; no other key opens with this secret"),
            });
        }
        if let (0, Some(Error::Integrity { subject, message })) = (tried, unreadable) {
            return Err(Error::Integrity {
                subject,
                message: format!("{message}; no other key of this kind exists"),
            });
        }
        let kind = match secret {
            Secret::Passphrase(_) => "passphrase",
            Secret::Identities(_) => "identity",
        };
        Err(Error::WrongKey { tried, kind })
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn config(&self) -> &ConfigBody {
        &self.config
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The repository's identity and parameters, as `bk-repo init` prints them.
    pub fn record(&self) -> crate::format::wire::RepositoryRecord {
        let c = self.config();
        crate::format::wire::RepositoryRecord {
            v: crate::format::wire::VERSION,
            location: self.backend().location(),
            id: c.id.clone(),
            format: c.bk_repository,
            created: c.created,
            chunker: c.chunker,
            compression: c.compression,
            pack_size: c.pack_size,
            cipher: c.cipher.clone(),
            key: self.key_name().to_string(),
        }
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    pub fn chunker_name(&self) -> String {
        format!("repo:{}", self.config.id)
    }

    /// The repository's keyed chunker for file data.
    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, &self.keys.gear_seed)
    }

    /// Chunker for listings: smaller chunks, since listings change in
    /// small places and are read whole.
    pub fn listing_chunker(&self) -> Chunker {
        Chunker::new(
            ChunkerParams {
                min: 16 * 1024,
                avg: 64 * 1024,
                max: 256 * 1024,
            },
            &self.keys.gear_seed,
        )
    }

    pub fn compression(&self) -> Option<i32> {
        (self.config.compression > 0).then_some(self.config.compression)
    }

    /// The index as readers need it: every live index object plus the
    /// packs that garbage collection has marked but not yet deleted, so a
    /// snapshot committed by a backup that raced a prune stays readable
    /// until the sweep has recovered its packs (see gc.rs).
    pub fn load_index(&self) -> Result<Index> {
        // Marks first: a sweep writes a recovered pack's index object
        // before deleting the mark, so one of the two names it.
        let marks = self.marks()?;
        let files = self.index_files()?;
        Ok(Repository::read_index(&files, &marks))
    }

    /// The index a backup deduplicates against: live index objects only.
    /// Packs marked for deletion are not in it, so a backup started after
    /// a prune marked them never refers to them (gc.rs relies on this).
    pub fn load_index_for_write(&self) -> Result<Index> {
        Ok(Repository::read_index(&self.index_files()?, &[]))
    }

    /// Every garbage-collection mark not yet swept (see `store::marks`).
    pub fn marks(&self) -> Result<Vec<StoredMark>> {
        load_marks(&*self.backend, &self.keys)
    }

    /// The merged index of the live index objects plus the entries of
    /// `marks` (see [`Repository::load_index`]).
    pub fn read_index(files: &IndexFiles, marks: &[StoredMark]) -> Index {
        merged_index(files.live.iter().map(|(_, f)| f), marks)
    }

    /// Reads every index object; those superseded by a compacted object
    /// are set aside.
    ///
    /// A prune's sweep deletes superseded index objects, possibly between
    /// this listing and the reads that follow it. The object that
    /// supersedes them was written before they were deleted, so a fresh
    /// listing names it: the load re-lists and reads only what it has not
    /// read yet (objects never change), until one listing has been read
    /// whole. The result is that listing's objects, as if it had been
    /// taken after the sweep. A prune compacting in a tight loop can make
    /// a round miss again, hence the backoff and the bound.
    pub fn index_files(&self) -> Result<IndexFiles> {
        let mut read: HashMap<ObjectId, IndexFile> = HashMap::new();
        let mut pause = INDEX_RELIST_FIRST_PAUSE;
        for _ in 0..INDEX_RELIST_ROUNDS {
            let listed: Vec<ObjectId> = self
                .backend
                .list(ObjectKind::Index)?
                .iter()
                .filter_map(|o| ObjectId::from_hex(&o.name))
                .collect();
            let unread: Vec<ObjectId> = listed
                .iter()
                .filter(|id| !read.contains_key(id))
                .copied()
                .collect();
            let loaded = parallel_map(&unread, self.backend.write_concurrency().max(4), |id| {
                Ok((*id, self.read_index_object(id)?))
            })?;
            let mut complete = true;
            for (id, file) in loaded {
                match file {
                    Some(f) => {
                        read.insert(id, f);
                    }
                    None => complete = false,
                }
            }
            if complete {
                return Ok(IndexFiles::split(listed, read));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(INDEX_RELIST_MAX_PAUSE);
        }
        Err(Error::Storage {
            object: "index/".into(),
            source: std::io::Error::other(format!(
                "index objects were deleted before they could be read in {INDEX_RELIST_ROUNDS} \
                 listings in a row (a prune compacting the index without pause?); run again"
            )),
            retryable: true,
        })
    }

    /// One index object, authenticated; `None` if it no longer exists.
    pub fn read_index_object(&self, id: &ObjectId) -> Result<Option<IndexFile>> {
        let name = id.to_hex();
        let raw = match self.backend.get(ObjectKind::Index, &name) {
            Ok(raw) => raw,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        check_name(ObjectKind::Index, &name, &raw)?;
        Ok(Some(IndexFile::open(&self.keys, &name, &raw)?))
    }

    pub fn write_index(&self, file: &IndexFile) -> Result<ObjectId> {
        let sealed = file.seal(&self.keys);
        let id = ObjectId::digest(&sealed);
        self.backend.put(ObjectKind::Index, &id.to_hex(), &sealed)?;
        Ok(id)
    }

    /// Reads, authenticates, decompresses and re-hashes one blob. A blob
    /// that fails its check is read once more (a flipped bit in transit is
    /// not damage at rest) before the failure is reported.
    pub fn read_blob(&self, id: &ChunkId, loc: &BlobLocation) -> Result<Vec<u8>> {
        match self.read_blob_once(id, loc) {
            Err(Error::Integrity { .. }) => self.read_blob_once(id, loc),
            r => r,
        }
    }

    fn read_blob_once(&self, id: &ChunkId, loc: &BlobLocation) -> Result<Vec<u8>> {
        let pack = loc.pack.to_hex();
        let sealed =
            match self
                .backend
                .get_range(ObjectKind::Pack, &pack, loc.offset as u64, loc.len as u64)
            {
                Ok(s) => s,
                Err(e) if e.is_not_found() => {
                    return Err(Error::damaged(
                        ObjectKind::Pack,
                        pack.to_string(),
                        format!("missing (needed for chunk {id})"),
                    ))
                }
                Err(Error::Storage { source, .. })
                    if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Err(Error::damaged(
                        ObjectKind::Pack,
                        pack.to_string(),
                        format!("truncated (chunk {id} lies beyond its end)"),
                    ))
                }
                Err(e) => return Err(e),
            };
        self.open_blob(id, loc.kind, &pack, &sealed)
    }

    pub fn open_blob(
        &self,
        id: &ChunkId,
        kind: BlobKind,
        pack: &str,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let data = self.keys.open(&blob_aad(kind, id), sealed).map_err(|e| {
            Error::damaged(
                ObjectKind::Pack,
                pack.to_string(),
                format!("chunk {id}: {e}"),
            )
        })?;
        if ChunkId::digest(&data) != *id {
            return Err(Error::damaged(
                ObjectKind::Pack,
                pack.to_string(),
                format!("chunk {id}: content hash mismatch"),
            ));
        }
        Ok(data)
    }

    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<ObjectId> {
        let json = serde_json::to_vec(snap).expect("serializable");
        let sealed = self.keys.seal(SNAPSHOT_AAD, &json, Some(3));
        let id = ObjectId::digest(&sealed);
        self.backend
            .put(ObjectKind::Snapshot, &id.to_hex(), &sealed)?;
        Ok(id)
    }

    pub fn load_snapshot(&self, name: &str) -> Result<Snapshot> {
        let raw = match self.backend.get(ObjectKind::Snapshot, name) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Err(Error::Usage(format!("no snapshot {name}"))),
            Err(e) => return Err(e),
        };
        self.open_snapshot(name, &raw)
    }

    /// Checks a stored snapshot object's name, authenticates and parses it.
    pub fn open_snapshot(&self, name: &str, raw: &[u8]) -> Result<Snapshot> {
        check_name(ObjectKind::Snapshot, name, raw)?;
        let plain = self
            .keys
            .open(SNAPSHOT_AAD, raw)
            .map_err(|e| Error::damaged(ObjectKind::Snapshot, name.to_string(), e.to_string()))?;
        serde_json::from_slice(&plain)
            .map_err(|e| Error::damaged(ObjectKind::Snapshot, name.to_string(), e.to_string()))
    }

    /// Every snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(ObjectId, Snapshot)>> {
        let ids: Vec<ObjectId> = self
            .backend
            .list(ObjectKind::Snapshot)?
            .iter()
            .filter_map(|o| ObjectId::from_hex(&o.name))
            .collect();
        // A snapshot deleted between the listing and its read was
        // forgotten by a prune meanwhile: leave it out, as a listing taken
        // a moment later would.
        let loaded = parallel_map(
            &ids,
            self.backend.write_concurrency().max(4),
            |id| match self.backend.get(ObjectKind::Snapshot, &id.to_hex()) {
                Ok(raw) => Ok(Some((*id, self.open_snapshot(&id.to_hex(), &raw)?))),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            },
        )?;
        let mut out: Vec<(ObjectId, Snapshot)> = loaded.into_iter().flatten().collect();
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Resolves `latest` (optionally within an identity), a full id or a
    /// unique id prefix.
    pub fn find_snapshot(
        &self,
        spec: &str,
        identity: Option<&str>,
    ) -> Result<(ObjectId, Snapshot)> {
        self.find_snapshot_tagged(spec, identity, &BTreeMap::new())
    }

    /// Like [`Repository::find_snapshot`]; `latest` also honours `tags`
    /// (all must match), and an explicit id must match the filters too.
    /// `latest` without an identity is refused when the snapshots it would
    /// choose from belong to several identities: in a repository shared by
    /// many applications it would name whichever backed up last.
    pub fn find_snapshot_tagged(
        &self,
        spec: &str,
        identity: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<(ObjectId, Snapshot)> {
        let identity = identity.map(crate::format::wire::normalize_identity);
        let wanted = |s: &Snapshot| {
            identity.as_deref().is_none_or(|i| s.identity == i)
                && tags.iter().all(|(k, v)| s.tags.get(k) == Some(v))
        };
        if spec != "latest" {
            let found = self.find_snapshot_by_id(spec)?;
            if !wanted(&found.1) {
                return Err(Error::Usage(format!(
                    "snapshot {spec} does not match the given --identity/--tag"
                )));
            }
            return Ok(found);
        }
        let candidates: Vec<_> = self
            .snapshots()?
            .into_iter()
            .filter(|(_, s)| wanted(s))
            .collect();
        if identity.is_none() {
            let identities: std::collections::BTreeSet<&str> = candidates
                .iter()
                .map(|(_, s)| s.identity.as_str())
                .collect();
            if identities.len() > 1 {
                let shown: Vec<&str> = identities.iter().take(5).copied().collect();
                let more = identities.len().saturating_sub(shown.len());
                return Err(Error::usage_hint(
                    format!(
                        "\"latest\" is ambiguous: the repository holds snapshots of {} identities",
                        identities.len()
                    ),
                    format!(
                        "add --identity {}{} (`bk-ls` lists them), or name a snapshot id",
                        shown
                            .iter()
                            .map(|i| shell_word(i))
                            .collect::<Vec<_>>()
                            .join(" or --identity "),
                        if more > 0 {
                            format!(" or one of {more} more")
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        candidates.into_iter().next_back().ok_or_else(|| {
            Error::Usage(match identity {
                Some(i) => format!("no matching snapshot of identity {i}"),
                None if !tags.is_empty() => "no snapshot has the given tags".into(),
                None => "the repository has no snapshots".into(),
            })
        })
    }

    /// [`Repository::find_snapshot_tagged`] for a snapshot the user named:
    /// when `spec` is `latest` or a prefix, says on stderr (a log note)
    /// which snapshot it chose, so a restore never silently takes another.
    pub fn choose_snapshot(
        &self,
        spec: &str,
        identity: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<(ObjectId, Snapshot)> {
        let (id, snap) = self.find_snapshot_tagged(spec, identity, tags)?;
        if spec.len() != 64 {
            log::info!(
                "{spec} is snapshot {} of {} from {}",
                id.short(),
                snap.identity,
                snap.time.to_human()
            );
        }
        Ok((id, snap))
    }

    fn find_snapshot_by_id(&self, spec: &str) -> Result<(ObjectId, Snapshot)> {
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Usage(format!(
                "{spec:?} is not a snapshot id, id prefix or \"latest\""
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let matches: Vec<_> = self
            .backend
            .list(ObjectKind::Snapshot)?
            .into_iter()
            .filter(|o| o.name.starts_with(&spec))
            .collect();
        match matches.as_slice() {
            [one] => {
                let snap = self.load_snapshot(&one.name)?;
                Ok((
                    ObjectId::from_hex(&one.name).expect("listed names are ids"),
                    snap,
                ))
            }
            [] => Err(Error::Usage(format!("no snapshot matches {spec:?}"))),
            _ => Err(Error::Usage(format!(
                "snapshot prefix {spec:?} is ambiguous ({} matches)",
                matches.len()
            ))),
        }
    }

    /// Every key file, by name. A key file that does not parse is an
    /// integrity error: listing must not hide a key from its owner.
    pub fn key_files(&self) -> Result<Vec<(String, KeyFile)>> {
        let mut out = Vec::new();
        for obj in self.backend.list(ObjectKind::Key)? {
            let raw = match self.backend.get(ObjectKind::Key, &obj.name) {
                Ok(raw) => raw,
                // Removed since the listing (bk-repo key remove elsewhere).
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            let kf: KeyFile = serde_json::from_slice(&raw)
                .map_err(|e| Error::damaged(ObjectKind::Key, obj.name.clone(), e.to_string()))?;
            out.push((obj.name, kf));
        }
        Ok(out)
    }

    /// Removes the one key file whose name starts with `prefix`; returns
    /// its name. The repository's last key is never removed: nothing could
    /// open the repository again. The key this process opened the repository with is
    /// removed only with `even_mine` (whoever runs the command would lock
    /// themselves out if they hold no other key).
    pub fn remove_key(&self, prefix: &str, even_mine: bool) -> Result<String> {
        let keys = self.key_files()?;
        let matches: Vec<&String> = keys
            .iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(prefix))
            .collect();
        let name = match matches.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(Error::Usage(format!(
                    "no key {prefix:?} (see `bk-repo key list`)"
                )))
            }
            _ => return Err(Error::Usage(format!("key prefix {prefix:?} is ambiguous"))),
        };
        if keys.len() == 1 {
            return Err(Error::Usage(
                "refusing to remove the repository's last key: nothing could open it again".into(),
            ));
        }
        if name == self.key_name && !even_mine {
            return Err(Error::usage_hint(
                format!(
                    "refusing to remove key {name}: it is the key this command was unlocked with"
                ),
                "unlock with another key to remove it, or add --force if you hold another key",
            ));
        }
        self.backend.delete(ObjectKind::Key, &name)?;
        Ok(name)
    }

    pub fn add_key(&self, new: &NewKey, label: Option<String>) -> Result<String> {
        let mut kf = KeyFile::seal(&self.master, &self.config.id, new, label)?;
        let name = random_hex(16);
        kf.sign(&self.keys, &name);
        self.backend.put(
            ObjectKind::Key,
            &name,
            &serde_json::to_vec_pretty(&kf).expect("serializable"),
        )?;
        Ok(name)
    }
}

/// The index readers resolve chunks through: the given live index objects
/// plus the entries of marks not yet swept, so a snapshot that raced a
/// prune stays readable until the sweep has recovered its packs.
pub fn merged_index<'f>(live: impl Iterator<Item = &'f IndexFile>, marks: &[StoredMark]) -> Index {
    let mut index = Index::default();
    for f in live {
        index.add_file(f);
    }
    for m in marks {
        index.add_file(&m.mark.entries);
    }
    index.finish();
    index
}

/// `word` as a shell reads it back: quoted when it holds anything but
/// the characters identities usually have.
fn shell_word(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "@:/._-+,=".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The record tools print for a stored snapshot (without the figures only
/// the backup that wrote it knows).
pub fn snapshot_record(id: &ObjectId, s: &Snapshot) -> crate::format::wire::SnapshotRecord {
    crate::format::wire::SnapshotRecord {
        v: crate::format::wire::VERSION,
        id: *id,
        time: s.time,
        identity: s.identity.clone(),
        tags: s.tags.clone(),
        files: s.files,
        dirs: s.dirs,
        bytes: s.bytes,
        errors: s.errors,
        new_bytes: None,
        stored_bytes: None,
        new_chunks: None,
        unmodified_files: None,
        excluded: s.excluded,
        duration_s: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::memory::MemoryBackend;

    #[test]
    fn the_last_key_is_never_removed() {
        let me = age::x25519::Identity::generate();
        let secret = Secret::Identities(vec![me.clone()]);
        let repo = Repository::init(
            Arc::new(MemoryBackend::new()),
            &secret,
            InitOptions::default(),
        )
        .unwrap();
        let other = age::x25519::Identity::generate();
        let added = repo
            .add_key(&NewKey::Recipient(other.to_public()), Some("spare".into()))
            .unwrap();
        assert_eq!(repo.key_files().unwrap().len(), 2);
        let ambiguous = repo.remove_key("", false).unwrap_err();
        assert!(ambiguous.to_string().contains("ambiguous"), "{ambiguous}");
        assert!(repo
            .remove_key("zz-no-such", false)
            .unwrap_err()
            .to_string()
            .contains("no key"));
        let mine = repo.remove_key(repo.key_name(), false).unwrap_err();
        assert!(mine.to_string().contains("unlocked with"), "{mine}");
        assert_eq!(
            repo.remove_key(repo.key_name(), true).unwrap(),
            repo.key_name()
        );
        let last = repo.remove_key(&added, true).unwrap_err();
        assert_eq!(last.exit_code(), crate::ExitCode::Usage);
        assert!(last.to_string().contains("last key"), "{last}");
        let left: Vec<String> = repo
            .key_files()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(left, vec![added.clone()]);
        // The spare key opens the repository.
        let backend = repo.backend().clone();
        let reopened = Repository::open(backend, &Secret::Identities(vec![other])).unwrap();
        assert_eq!(reopened.key_name(), added);
    }
}
