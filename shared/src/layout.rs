//! The repository's namespace: the kinds of object it holds and where each
//! lives. Every layer names objects this way (errors say which object is
//! damaged, backends store by it, verify reports by it), so it sits at the
//! bottom beside the error type and depends on nothing.

/// Name prefix of the arm objects beside marks in gc/ (see store/marks.rs).
pub const GC_ARM_PREFIX: &str = "arm-";

/// The classes of repository objects; each lives in its own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Lock,
    /// Garbage-collection marks: packs scheduled for deletion (see store/marks.rs).
    Gc,
    /// PostgreSQL WAL files archived by bk-wal, named `<stanza>.<file>`,
    /// and each stanza's binding to its cluster (see ops/wal).
    Wal,
    /// SQLite databases replicated by bk-sqlite: each database's WAL
    /// segments `<db>.<lineage>.<seq>` and its replicator's lease (see
    /// ops/sqlite).
    Sqlite,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 9] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
        ObjectKind::Gc,
        ObjectKind::Wal,
        ObjectKind::Sqlite,
    ];

    /// The kind a lower-case word names: its directory (`data` for packs),
    /// or pack, snapshot, config.
    pub fn parse(word: &str) -> Option<ObjectKind> {
        match word {
            "pack" => Some(ObjectKind::Pack),
            "snapshot" => Some(ObjectKind::Snapshot),
            "config" => Some(ObjectKind::Config),
            "key" => Some(ObjectKind::Key),
            "lock" => Some(ObjectKind::Lock),
            _ => ObjectKind::ALL
                .into_iter()
                .find(|k| !k.dir().is_empty() && k.dir() == word),
        }
    }

    pub fn dir(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Key => "keys",
            ObjectKind::Pack => "data",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Lock => "locks",
            ObjectKind::Gc => "gc",
            ObjectKind::Wal => "wal",
            ObjectKind::Sqlite => "sqlite",
        }
    }

    /// The part of an object's name that must equal the SHA-256 of its
    /// bytes: the whole name, except `arm-<sha256>` in gc/ (an arm beside
    /// the mark it names) and config and key files, which are not
    /// content-addressed (`None`).
    pub fn digest_name(self, name: &str) -> Option<&str> {
        match self {
            ObjectKind::Config | ObjectKind::Key | ObjectKind::Wal | ObjectKind::Sqlite => None,
            ObjectKind::Gc => Some(name.strip_prefix(GC_ARM_PREFIX).unwrap_or(name)),
            _ => Some(name),
        }
    }

    /// Kinds whose names are claimed, not derived from content: writing an
    /// existing name fails instead of keeping the first copy, so nothing
    /// is ever silently replaced (link(2) locally, a check first on S3).
    pub fn claims_names(self) -> bool {
        matches!(
            self,
            ObjectKind::Config
                | ObjectKind::Key
                | ObjectKind::Lock
                | ObjectKind::Wal
                | ObjectKind::Sqlite
        )
    }

    /// Kinds that a repository made by an older bk may lack a directory for.
    pub fn may_be_absent(self) -> bool {
        matches!(self, ObjectKind::Gc | ObjectKind::Wal | ObjectKind::Sqlite)
    }

    /// Path of an object relative to the repository root.
    pub fn path(self, name: &str) -> String {
        match self {
            ObjectKind::Config => "config".to_string(),
            ObjectKind::Pack => format!("data/{}/{}", &name[..2.min(name.len())], name),
            k => format!("{}/{}", k.dir(), name),
        }
    }
}
