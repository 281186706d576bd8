//! Findings as they are found: each with the chunks whose snapshots and
//! paths it should name, and whether it is re-checked before it is
//! reported.

use super::*;

/// A finding, plus the chunks whose snapshots and paths it should name.
pub(super) struct Pending {
    pub(super) finding: Finding,
    pub(super) chunks: Vec<ChunkId>,
    /// A storage failure kept something from being checked (exit 1, not 13).
    pub(super) unreadable: bool,
    /// Set for errors a concurrent prune or backup can cause: they are
    /// looked at again before they are reported.
    pub(super) recheck: Option<Recheck>,
}

#[derive(Default)]
pub(super) struct Report {
    pub(super) items: Mutex<Vec<Pending>>,
}

impl Report {
    pub(super) fn add(
        &self,
        severity: Severity,
        check: &str,
        object: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.push(
            severity,
            check,
            object,
            message,
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn push(
        &self,
        severity: Severity,
        check: &str,
        object: impl Into<String>,
        message: impl Into<String>,
        chunks: Vec<ChunkId>,
        snapshots: Vec<ObjectId>,
        paths: Vec<String>,
    ) {
        let (paths, more) = cap_paths(paths);
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                finding: Finding {
                    v: wire::VERSION,
                    severity,
                    check: check.into(),
                    object: object.into(),
                    message: message.into(),
                    snapshots,
                    paths,
                    more_paths: more,
                },
                chunks,
                unreadable: false,
                recheck: None,
            });
    }

    /// Adds an error finding that is re-checked before it is reported.
    pub(super) fn push_rechecked(
        &self,
        recheck: Recheck,
        finding: Finding,
        chunks: Vec<ChunkId>,
        unreadable: bool,
    ) {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                finding,
                chunks,
                unreadable,
                recheck: Some(recheck),
            });
    }

    /// An error reading `object`: missing and damaged objects are errors of
    /// `check`; other storage failures are `read` errors (not damage).
    pub(super) fn failure(&self, check: &str, object: &str, e: &Error) {
        let (check, message, unreadable) = match e {
            Error::Integrity { message, .. } => (check, message.clone(), false),
            e if e.is_not_found() => (check, "missing".to_string(), false),
            e => ("read", format!("could not be read: {e}"), true),
        };
        let mut items = self.items.lock().unwrap_or_else(|p| p.into_inner());
        items.push(Pending {
            finding: Finding {
                v: wire::VERSION,
                severity: Severity::Error,
                check: check.into(),
                object: object.into(),
                message,
                snapshots: Vec::new(),
                paths: Vec::new(),
                more_paths: 0,
            },
            chunks: Vec::new(),
            unreadable,
            recheck: None,
        });
    }
}
