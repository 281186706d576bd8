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
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::Config,
        ObjectKind::Key,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
        ObjectKind::Lock,
        ObjectKind::Gc,
    ];

    pub fn dir(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Key => "keys",
            ObjectKind::Pack => "data",
            ObjectKind::Index => "index",
            ObjectKind::Snapshot => "snapshots",
            ObjectKind::Lock => "locks",
            ObjectKind::Gc => "gc",
        }
    }

    /// The part of an object's name that must equal the SHA-256 of its
    /// bytes: the whole name, except `arm-<sha256>` in gc/ (an arm beside
    /// the mark it names) and config and key files, which are not
    /// content-addressed (`None`).
    pub fn digest_name(self, name: &str) -> Option<&str> {
        match self {
            ObjectKind::Config | ObjectKind::Key => None,
            ObjectKind::Gc => Some(name.strip_prefix(GC_ARM_PREFIX).unwrap_or(name)),
            _ => Some(name),
        }
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
