//! Structure verify at scale: 1,000 snapshots naming 1M chunks.
//!
//! Ignored by default (it builds a ~0.6 GB repository). Run it optimized:
//!
//! ```text
//! BK_SCALE_DIR=/dev/shm cargo test --profile fastrel -p bk-shared --test verify_scale -- --ignored --nocapture
//! ```
//!
//! The repository is built through the library, not the tools: four
//! identities, 250 snapshots each; every identity's tree has 45,000 files
//! of 5 chunks (900k chunks), and each later snapshot rewrites 21
//! neighbouring files (5 new chunks each, another ~100k chunks). Listings
//! are cut with the repository's listing chunker exactly as bk-put cuts
//! them; since a rewritten file's line keeps its length, only the listing
//! chunks around the change are cut again.

use bk::backend::local::LocalBackend;
use bk::chunker::Chunker;
use bk::id::ChunkId;
use bk::index::IndexFile;
use bk::keys::Secret;
use bk::pack::{blob_aad, BlobEntry, BlobKind, PackBuilder};
use bk::repo::{InitOptions, Repository, Snapshot};
use bk::verify::{verify, VerifyOptions};
use bk::wire::{self, Entry, Record, Timestamp};
use std::sync::Arc;
use std::time::Instant;

const IDENTITIES: usize = 4;
const SNAPSHOTS_PER_IDENTITY: usize = 250;
const FILES: usize = 45_000;
const CHUNKS_PER_FILE: usize = 5;
const CHANGED_FILES: usize = 21;

struct Packer<'a> {
    repo: &'a Repository,
    kind: BlobKind,
    pack: PackBuilder,
    index: IndexFile,
}

impl<'a> Packer<'a> {
    fn new(repo: &'a Repository, kind: BlobKind) -> Self {
        Packer {
            repo,
            kind,
            pack: PackBuilder::default(),
            index: IndexFile::default(),
        }
    }

    fn add(&mut self, id: ChunkId, data: &[u8]) {
        let sealed = self.repo.keys().seal(&blob_aad(self.kind, &id), data, None);
        self.pack.add(self.kind, id, &sealed, data.len() as u32);
        if self.pack.len() >= 16 << 20 {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pack.is_empty() {
            return;
        }
        let pack = std::mem::take(&mut self.pack);
        let (id, bytes, entries): (_, _, Vec<BlobEntry>) = pack.finish(self.repo.keys());
        self.repo
            .backend()
            .put(bk::backend::ObjectKind::Pack, &id.to_hex(), &bytes)
            .unwrap();
        self.index.packs.push((id, entries));
        if self.index.packs.len() >= 8 {
            self.repo.write_index(&self.index).unwrap();
            self.index = IndexFile::default();
        }
    }

    fn finish(mut self) {
        self.flush();
        if !self.index.packs.is_empty() {
            self.repo.write_index(&self.index).unwrap();
        }
    }
}

/// One identity's listing text, its chunk boundaries and ids.
struct Listing {
    text: Vec<u8>,
    /// Byte offset where each file's line starts.
    line_start: Vec<usize>,
    /// (end offset, id) of every listing chunk.
    chunks: Vec<(usize, ChunkId)>,
}

fn entry(ident: usize, i: usize, chunks: Vec<ChunkId>, mtime: Timestamp) -> Entry {
    let path = format!("srv/app{ident}/d{:03}/file-{i:06}.dat", i / 1000);
    let mut e = Entry::file(&path, 5 << 20, mtime, chunks);
    (e.uid, e.gid) = (1000, 1000);
    (e.user, e.group) = (Some("app".into()), Some("app".into()));
    e.ctime = Some(mtime);
    (e.dev, e.ino, e.nlink) = (Some(2049), Some(1_000_000 + i as u64), Some(1));
    e
}

fn line(e: &Entry) -> Vec<u8> {
    let mut out = Vec::new();
    wire::write_record(&mut out, &Record::Entry(e.clone())).unwrap();
    out
}

/// Cuts `text` from `start` on; stops once a cut lands on an old boundary
/// at or after `until` (from there on the old chunks are unchanged).
fn cut_from(
    chunker: &Chunker,
    text: &[u8],
    start: usize,
    until: usize,
    old: &[(usize, ChunkId)],
    meta: &mut Packer,
    seen: &mut std::collections::HashSet<ChunkId>,
) -> Vec<(usize, ChunkId)> {
    let mut out = Vec::new();
    let mut at = start;
    while at < text.len() {
        let n = chunker.cut(&text[at..]);
        let id = ChunkId::digest(&text[at..at + n]);
        if seen.insert(id) {
            meta.add(id, &text[at..at + n]);
        }
        at += n;
        out.push((at, id));
        if at >= until {
            if let Ok(k) = old.binary_search_by(|(e, _)| e.cmp(&at)) {
                out.extend_from_slice(&old[k + 1..]);
                return out;
            }
        }
    }
    out
}

#[test]
#[ignore]
fn structure_verify_of_1000_snapshots_and_1m_chunks() {
    let base = std::env::var("BK_SCALE_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::Builder::new()
        .prefix("bk-scale-")
        .tempdir_in(base)
        .unwrap();
    let t0 = Instant::now();
    let repo = Repository::init(
        Arc::new(LocalBackend::new(dir.path().join("repo"))),
        &Secret::passphrase("scale".into()),
        InitOptions::default(),
    )
    .unwrap();
    let chunker = repo.listing_chunker();
    let mut data = Packer::new(&repo, BlobKind::Data);
    let mut meta = Packer::new(&repo, BlobKind::Meta);
    let mut seen_meta = std::collections::HashSet::new();
    let mut counter = 0u64;
    let mut new_chunk = |data: &mut Packer| {
        counter += 1;
        let content = counter.to_le_bytes();
        let id = ChunkId::digest(&content);
        data.add(id, &content);
        id
    };
    let start_time = 1_800_000_000i64;
    let mut total_chunks = 0usize;
    for ident in 0..IDENTITIES {
        let mut l = Listing {
            text: Vec::new(),
            line_start: Vec::new(),
            chunks: Vec::new(),
        };
        for i in 0..FILES {
            let ids = (0..CHUNKS_PER_FILE).map(|_| new_chunk(&mut data)).collect();
            total_chunks += CHUNKS_PER_FILE;
            l.line_start.push(l.text.len());
            l.text.extend(line(&entry(
                ident,
                i,
                ids,
                Timestamp {
                    secs: start_time,
                    nanos: 1,
                },
            )));
        }
        l.chunks = cut_from(
            &chunker,
            &l.text,
            0,
            usize::MAX,
            &[],
            &mut meta,
            &mut seen_meta,
        );
        for s in 0..SNAPSHOTS_PER_IDENTITY {
            let time = Timestamp {
                secs: start_time + (s as i64) * 86_400,
                nanos: ident as u32,
            };
            if s > 0 {
                // Rewrite CHANGED_FILES neighbouring files (same line length).
                let first = (s * 7919 + ident * 104_729) % (FILES - CHANGED_FILES);
                for i in first..first + CHANGED_FILES {
                    let ids = (0..CHUNKS_PER_FILE).map(|_| new_chunk(&mut data)).collect();
                    total_chunks += CHUNKS_PER_FILE;
                    let new = line(&entry(ident, i, ids, time));
                    let at = l.line_start[i];
                    assert_eq!(
                        l.text[at..].iter().position(|&b| b == b'\n').unwrap() + 1,
                        new.len()
                    );
                    l.text[at..at + new.len()].copy_from_slice(&new);
                }
                let from = l.line_start[first];
                let until = l.line_start[first + CHANGED_FILES];
                let k = l.chunks.partition_point(|(end, _)| *end <= from);
                let start = if k == 0 { 0 } else { l.chunks[k - 1].0 };
                let mut chunks = l.chunks[..k].to_vec();
                chunks.extend(cut_from(
                    &chunker,
                    &l.text,
                    start,
                    until,
                    &l.chunks,
                    &mut meta,
                    &mut seen_meta,
                ));
                l.chunks = chunks;
            }
            let snap = Snapshot {
                v: 1,
                time,
                identity: format!("app{ident}@host:/srv"),
                tags: Default::default(),
                source: "/srv".into(),
                listing: l.chunks.iter().map(|(_, id)| *id).collect(),
                files: FILES as u64,
                dirs: 0,
                entries: FILES as u64,
                bytes: (FILES as u64) * (5 << 20),
                errors: 0,
                parent: None,
                excluded: 0,
                xattrs: false,
                created: time,
                program: "scale test".into(),
                host: None,
            };
            repo.save_snapshot(&snap).unwrap();
        }
    }
    data.finish();
    meta.finish();
    let built = t0.elapsed();
    let repo = Repository::open(
        Arc::new(LocalBackend::new(dir.path().join("repo"))),
        &Secret::passphrase("scale".into()),
    )
    .unwrap();
    let t1 = Instant::now();
    let mut out = Vec::new();
    let outcome = verify(&repo, &VerifyOptions::default(), &mut out).unwrap();
    let took = t1.elapsed();
    let text = String::from_utf8(out).unwrap();
    eprintln!(
        "built {} snapshots, {total_chunks} data chunks, {} listing chunks in {built:.1?}; structure verify took {took:.2?}\n{}",
        IDENTITIES * SNAPSHOTS_PER_IDENTITY,
        seen_meta.len(),
        text.lines().last().unwrap()
    );
    assert_eq!(outcome.exit, bk::ExitCode::Success, "{text}");
    assert_eq!(
        outcome.summary.snapshots,
        (IDENTITIES * SNAPSHOTS_PER_IDENTITY) as u64
    );
    assert!(outcome.summary.chunks as usize >= total_chunks);
    assert!(total_chunks >= 1_000_000, "{total_chunks}");
    assert!(took.as_secs() < 60, "structure verify took {took:?}");
}
