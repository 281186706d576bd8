//! Which paths of a tree a backup takes: the sources and the exclusion
//! rules restic and Borg users bring (`--exclude`, `--iexclude`,
//! `--exclude-file`, `--exclude-if-present`, `--exclude-caches`,
//! `--exclude-larger-than`, `--one-file-system`, `--files-from`).
//!
//! Patterns are gitignore's, matched by ripgrep's `ignore` crate rather than
//! a home-made matcher: a pattern without a slash matches a name at any
//! depth (`*.tmp`, `node_modules`), one with a slash is anchored at the
//! root being walked (`/cache`, `var/tmp`), a trailing slash matches only
//! directories, `**` spans directories and `!` re-includes. An absolute
//! pattern under the source (`/home/me/.cache` when backing up `/home`) is
//! taken as that path, which is how restic users write them.
//!
//! bk-verify `--against` applies the same rules, so a drill does not report
//! excluded files as missing from the snapshot.

use crate::error::{Error, Result};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::fs::Metadata;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `CACHEDIR.TAG`'s name and the signature its first bytes must carry
/// (<https://bford.info/cachedir/>).
const CACHEDIR_TAG: &str = "CACHEDIR.TAG";
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The rules as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct ExcludeOptions {
    pub exclude: Vec<String>,
    pub iexclude: Vec<String>,
    pub exclude_files: Vec<PathBuf>,
    pub iexclude_files: Vec<PathBuf>,
    /// `NAME` or `NAME:HEADER`: a directory holding NAME (whose content
    /// starts with HEADER) is left out, all but the directory itself.
    pub exclude_if_present: Vec<String>,
    pub exclude_caches: bool,
    pub exclude_larger_than: Option<u64>,
    pub one_file_system: bool,
}

impl ExcludeOptions {
    pub fn is_empty(&self) -> bool {
        self.exclude.is_empty()
            && self.iexclude.is_empty()
            && self.exclude_files.is_empty()
            && self.iexclude_files.is_empty()
            && self.exclude_if_present.is_empty()
            && !self.exclude_caches
            && self.exclude_larger_than.is_none()
            && !self.one_file_system
    }
}

/// What the rules say of one walked path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Take,
    /// Left out (a directory with everything below it).
    Exclude,
    /// The directory itself, not its contents: a mount point under
    /// `--one-file-system` (as restic keeps it), or a tagged directory.
    DirOnly,
}

/// The compiled rules for one walk.
pub struct ExcludeRules {
    /// Case-sensitive and case-insensitive patterns.
    globs: Vec<Gitignore>,
    if_present: Vec<(String, Option<Vec<u8>>)>,
    larger_than: Option<u64>,
    /// With `--one-file-system`: each source (relative to the root) and
    /// the device it is on, deepest first.
    source_devs: Vec<(Vec<u8>, u64)>,
}

impl std::fmt::Debug for ExcludeRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExcludeRules")
            .field(
                "patterns",
                &self.globs.iter().map(Gitignore::num_ignores).sum::<u64>(),
            )
            .field("if_present", &self.if_present)
            .field("larger_than", &self.larger_than)
            .field("source_devs", &self.source_devs)
            .finish()
    }
}

impl ExcludeRules {
    /// Compiles `opts` for a walk of `root` (absolute, normalized) whose
    /// only source is the root.
    pub fn new(opts: &ExcludeOptions, root: &Path) -> Result<Self> {
        Self::for_sources(opts, root, &[(b".".to_vec(), root.to_path_buf())])
    }

    /// Compiles `opts` for a walk of `root` taking `sources` (each relative
    /// to the root, and absolute): `--one-file-system` keeps each source to
    /// its own file system.
    pub fn for_sources(
        opts: &ExcludeOptions,
        root: &Path,
        sources: &[(Vec<u8>, PathBuf)],
    ) -> Result<Self> {
        let mut globs = Vec::new();
        for (patterns, files, nocase) in [
            (&opts.exclude, &opts.exclude_files, false),
            (&opts.iexclude, &opts.iexclude_files, true),
        ] {
            let mut lines: Vec<(String, String)> = patterns
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        format!("--{}exclude", if nocase { "i" } else { "" }),
                    )
                })
                .collect();
            for f in files {
                let text = std::fs::read_to_string(f).map_err(|e| {
                    Error::usage_hint(
                        format!("cannot read the exclude file {}: {e}", f.display()),
                        "--exclude-file names a file of patterns, one per line",
                    )
                })?;
                lines.extend(
                    text.lines()
                        .map(str::trim_end)
                        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                        .map(|l| (l.to_string(), f.display().to_string())),
                );
            }
            if lines.is_empty() {
                continue;
            }
            let mut b = GitignoreBuilder::new(root);
            b.case_insensitive(nocase)
                .map_err(|e| Error::Usage(format!("--iexclude: {e}")))?;
            for (line, from) in lines {
                let line = anchor_absolute(&line, root);
                b.add_line(None, &line)
                    .map_err(|e| Error::Usage(format!("{from}: pattern {line:?}: {e}")))?;
            }
            globs.push(
                b.build()
                    .map_err(|e| Error::Usage(format!("exclude patterns: {e}")))?,
            );
        }
        let mut if_present: Vec<(String, Option<Vec<u8>>)> = opts
            .exclude_if_present
            .iter()
            .map(|s| match s.split_once(':') {
                Some((name, header)) => (name.to_string(), Some(header.as_bytes().to_vec())),
                None => (s.clone(), None),
            })
            .collect();
        if let Some((bad, _)) = if_present
            .iter()
            .find(|(n, _)| n.is_empty() || n.contains('/'))
        {
            return Err(Error::Usage(format!(
                "--exclude-if-present {bad:?}: give a file name (NAME or NAME:HEADER)"
            )));
        }
        if opts.exclude_caches {
            if_present.push((CACHEDIR_TAG.into(), Some(CACHEDIR_SIGNATURE.to_vec())));
        }
        let mut source_devs = Vec::new();
        if opts.one_file_system {
            for (rel, abs) in sources {
                let dev = std::fs::metadata(abs).map_err(|e| Error::io(abs, e))?.dev();
                source_devs.push((rel.clone(), dev));
            }
            source_devs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.len()));
        }
        Ok(ExcludeRules {
            globs,
            if_present,
            larger_than: opts.exclude_larger_than,
            source_devs,
        })
    }

    /// The verdict for `rel` (relative to the root, `/`-separated), found
    /// at `full` with metadata `md`. The root itself is always taken.
    pub fn verdict(&self, rel: &[u8], full: &Path, md: &Metadata) -> Verdict {
        if rel == b"." {
            return Verdict::Take;
        }
        let is_dir = md.is_dir();
        let path = Path::new(std::ffi::OsStr::from_bytes(rel));
        for g in &self.globs {
            if g.matched_path_or_any_parents(path, is_dir).is_ignore() {
                return Verdict::Exclude;
            }
        }
        if let Some(limit) = self.larger_than {
            if md.is_file() && md.len() > limit {
                return Verdict::Exclude;
            }
        }
        if is_dir {
            let own = self
                .source_devs
                .iter()
                .find(|(src, _)| src.as_slice() == b"." || within(rel, src));
            if own.is_some_and(|(_, dev)| *dev != md.dev()) {
                return Verdict::DirOnly;
            }
            if self
                .if_present
                .iter()
                .any(|(name, header)| tagged(full, name, header.as_deref()))
            {
                return Verdict::DirOnly;
            }
        }
        Verdict::Take
    }
}

/// Whether directory `dir` holds `name`, starting with `header` if given.
fn tagged(dir: &Path, name: &str, header: Option<&[u8]>) -> bool {
    let p = dir.join(name);
    match header {
        None => p.symlink_metadata().is_ok(),
        Some(h) => {
            let mut buf = vec![0u8; h.len()];
            std::fs::File::open(&p)
                .and_then(|mut f| f.read_exact(&mut buf))
                .is_ok_and(|()| buf == h)
        }
    }
}

/// `/home/me/.cache` with root `/home` becomes `/me/.cache` (anchored at
/// the root); other patterns are gitignore's as written.
fn anchor_absolute(pattern: &str, root: &Path) -> String {
    let (neg, body) = match pattern.strip_prefix('!') {
        Some(b) => ("!", b),
        None => ("", pattern),
    };
    let root = root.to_string_lossy();
    let root = root.trim_end_matches('/');
    if !root.is_empty() {
        if let Some(rest) = body.strip_prefix(root) {
            if rest.starts_with('/') {
                return format!("{neg}{rest}");
            }
        }
    }
    pattern.to_string()
}

/// The sources of one snapshot, walked as one tree: the deepest directory
/// holding them all is the listing's root, and only the sources, what lies
/// below them, and the directories leading to them are taken.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The listing's root (absolute, normalized).
    pub root: PathBuf,
    /// Each source relative to `root` (`.` when a source is the root).
    pub relative: Vec<Vec<u8>>,
    /// Each source as given, absolute and normalized.
    pub absolute: Vec<PathBuf>,
}

impl Sources {
    pub fn new(paths: &[PathBuf]) -> Result<Self> {
        if paths.is_empty() {
            return Err(Error::Usage("no source path given".into()));
        }
        let mut absolute = Vec::with_capacity(paths.len());
        for p in paths {
            let mut abs = crate::ops::source::source_path(p)?;
            std::fs::symlink_metadata(&abs).map_err(|e| Error::io(&abs, e))?;
            // `..` cannot be compared lexically with the other sources.
            if abs
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                abs = std::fs::canonicalize(&abs).map_err(|e| Error::io(&abs, e))?;
            }
            absolute.push(abs);
        }
        // One order (restic sorts too): the sources' order on the command
        // line does not make another identity.
        absolute.sort();
        absolute.dedup();
        let mut root = absolute[0].clone();
        if absolute.len() > 1 {
            // Descend while every source lies below.
            while !absolute.iter().all(|a| a.starts_with(&root)) {
                root = match root.parent() {
                    Some(p) => p.to_path_buf(),
                    None => break,
                };
            }
        }
        let relative = absolute
            .iter()
            .map(|a| crate::ops::source::listing_path(&root, a))
            .collect();
        Ok(Sources {
            root,
            relative,
            absolute,
        })
    }

    /// A single source (the common case: the walk takes everything).
    pub fn is_single(&self) -> bool {
        self.absolute.len() == 1
    }

    /// For a path relative to the root: under a source (apply the rules),
    /// on the way to one (take the directory, walk on), or neither.
    pub fn place(&self, rel: &[u8]) -> Place {
        let mut leads = false;
        for s in &self.relative {
            if s.as_slice() == b"." || within(rel, s) {
                return Place::Inside;
            }
            if rel == b"." || within(s, rel) {
                leads = true;
            }
        }
        if leads {
            Place::Leading
        } else {
            Place::Outside
        }
    }

    /// The path part of the default identity: the source, or the sources
    /// joined with commas.
    pub fn identity_path(&self) -> String {
        self.absolute
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The walk's root for `paths`, the sources to restrict it to (`None`
/// with one source: everything under the root) and the compiled `rules`
/// (`None` when there are none).
pub fn select(
    paths: &[PathBuf],
    rules: &ExcludeOptions,
) -> Result<(PathBuf, Option<Sources>, Option<ExcludeRules>)> {
    let sources = Sources::new(paths)?;
    let root = sources.root.clone();
    let exclude = if rules.is_empty() {
        None
    } else {
        let each: Vec<_> = sources
            .relative
            .iter()
            .cloned()
            .zip(sources.absolute.iter().cloned())
            .collect();
        Some(ExcludeRules::for_sources(rules, &root, &each)?)
    };
    Ok((root, (!sources.is_single()).then_some(sources), exclude))
}

/// Where a walked path lies with respect to the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Inside,
    Leading,
    Outside,
}

/// `path` is `base` or lies below it.
fn within(path: &[u8], base: &[u8]) -> bool {
    path == base || (path.len() > base.len() && path.starts_with(base) && path[base.len()] == b'/')
}

/// Reads `--files-from` lists: one path per line (blank lines and `#`
/// comments skipped, surrounding spaces kept only with `verbatim`), or
/// NUL-separated with `nul` (`find -print0`). Relative paths are taken
/// from the current directory.
pub fn read_files_from(file: &Path, verbatim: bool, nul: bool) -> Result<Vec<PathBuf>> {
    let bytes = if file.as_os_str() == "-" {
        let mut v = Vec::new();
        std::io::stdin()
            .read_to_end(&mut v)
            .map_err(|e| Error::io("<stdin>", e))?;
        v
    } else {
        std::fs::read(file).map_err(|e| {
            Error::usage_hint(
                format!("cannot read the list of files {}: {e}", file.display()),
                "--files-from names a file with one path per line",
            )
        })?
    };
    let sep = if nul { b'\0' } else { b'\n' };
    let mut out = Vec::new();
    for item in bytes.split(|b| *b == sep) {
        let item = if nul || verbatim {
            item
        } else {
            let s = item.trim_ascii();
            if s.starts_with(b"#") {
                continue;
            }
            s
        };
        let item = if !nul && item.ends_with(b"\r") {
            &item[..item.len() - 1]
        } else {
            item
        };
        if !item.is_empty() {
            out.push(PathBuf::from(std::ffi::OsStr::from_bytes(item)));
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "{}: the list of files is empty",
            file.display()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(opts: ExcludeOptions, root: &Path) -> ExcludeRules {
        ExcludeRules::new(&opts, root).unwrap()
    }

    #[test]
    fn gitignore_patterns_anchor_as_git_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["a/node_modules/x", "cache", "src/cache", "Logs"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["a/x.tmp", "keep.txt", "src/cache/y", "Logs/z.LOG"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let r = rules(
            ExcludeOptions {
                exclude: vec![
                    "*.tmp".into(),
                    "node_modules/".into(),
                    "/cache".into(),
                    format!("{}/src/cache", root.display()),
                ],
                iexclude: vec!["*.log".into()],
                ..Default::default()
            },
            root,
        );
        let v = |rel: &str| {
            let full = root.join(rel);
            r.verdict(rel.as_bytes(), &full, &std::fs::metadata(&full).unwrap())
        };
        assert_eq!(v("a/x.tmp"), Verdict::Exclude, "unanchored: any depth");
        assert_eq!(v("a/node_modules"), Verdict::Exclude, "directory only");
        assert_eq!(v("cache"), Verdict::Exclude, "anchored at the root");
        assert_eq!(v("src/cache"), Verdict::Exclude, "absolute under the root");
        assert_eq!(v("src/cache/y"), Verdict::Exclude, "below an excluded dir");
        assert_eq!(v("Logs/z.LOG"), Verdict::Exclude, "--iexclude ignores case");
        assert_eq!(v("keep.txt"), Verdict::Take);
        assert_eq!(v("src"), Verdict::Take);
    }

    #[test]
    fn tagged_and_large_and_negated() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("c")).unwrap();
        std::fs::create_dir_all(root.join("fake")).unwrap();
        std::fs::write(
            root.join("c/CACHEDIR.TAG"),
            [CACHEDIR_SIGNATURE, b"\n"].concat(),
        )
        .unwrap();
        std::fs::write(root.join("fake/CACHEDIR.TAG"), b"not a tag").unwrap();
        std::fs::write(root.join("big"), vec![0u8; 2048]).unwrap();
        std::fs::write(root.join("keep.tmp"), b"x").unwrap();
        let r = rules(
            ExcludeOptions {
                exclude: vec!["*.tmp".into(), "!keep.tmp".into()],
                exclude_caches: true,
                exclude_larger_than: Some(1024),
                ..Default::default()
            },
            root,
        );
        let v = |rel: &str| {
            let full = root.join(rel);
            r.verdict(rel.as_bytes(), &full, &std::fs::metadata(&full).unwrap())
        };
        assert_eq!(v("c"), Verdict::DirOnly);
        assert_eq!(v("fake"), Verdict::Take, "a tag without the signature");
        assert_eq!(v("big"), Verdict::Exclude);
        assert_eq!(v("keep.tmp"), Verdict::Take, "! re-includes");
    }

    #[test]
    fn sources_share_their_deepest_common_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for d in ["etc/app", "home/me", "var"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let s = Sources::new(&[
            root.join("etc/app"),
            root.join("home/me/"),
            root.join("etc/app"),
        ])
        .unwrap();
        assert_eq!(s.root, root);
        assert_eq!(s.relative, [b"etc/app".to_vec(), b"home/me".to_vec()]);
        assert_eq!(s.place(b"."), Place::Leading);
        assert_eq!(s.place(b"etc"), Place::Leading);
        assert_eq!(s.place(b"etc/app/x"), Place::Inside);
        assert_eq!(s.place(b"etc/other"), Place::Outside);
        assert_eq!(s.place(b"var"), Place::Outside);
        assert_eq!(s.place(b"home/mex"), Place::Outside);
        let one = Sources::new(&[root.join("var")]).unwrap();
        assert!(one.is_single());
        assert_eq!(one.place(b"."), Place::Inside);
    }

    #[test]
    fn files_from_reads_lines_or_nul_separated_names() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, "# comment\n/etc/hosts\n\n  /srv/a b  \r\n").unwrap();
        assert_eq!(
            read_files_from(&list, false, false).unwrap(),
            [PathBuf::from("/etc/hosts"), PathBuf::from("/srv/a b")]
        );
        std::fs::write(&list, " odd name \n").unwrap();
        assert_eq!(
            read_files_from(&list, true, false).unwrap(),
            [PathBuf::from(" odd name ")]
        );
        std::fs::write(&list, b"a\nb\0c\0").unwrap();
        assert_eq!(
            read_files_from(&list, false, true).unwrap(),
            [PathBuf::from("a\nb"), PathBuf::from("c")]
        );
    }
}
