//! Builds a large synthetic repository for the prune benchmark
//! (scripts/bench-prune): SNAPSHOTS snapshots of FILES one-chunk files
//! each, of which NEW are new in every snapshot (a sliding window), so the
//! repository holds about SNAPSHOTS × NEW distinct chunks. Written through
//! the library's own pack, index and snapshot code, which is what bk-put
//! does, minus the stream parsing that would make building a million
//! chunks take many minutes.
//!
//! usage: synth_repo DIR SNAPSHOTS FILES NEW   (passphrase from BK_PASSWORD)

use bk::backend::{local::LocalBackend, Backend, ObjectKind};
use bk::id::ChunkId;
use bk::index::IndexFile;
use bk::keys::Secret;
use bk::pack::{blob_aad, BlobKind, PackBuilder};
use bk::repo::{InitOptions, Repository, Snapshot};
use bk::wire::{self, Entry, Record, Timestamp};
use std::collections::HashSet;
use std::sync::Arc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: synth_repo DIR SNAPSHOTS FILES NEW");
        std::process::exit(2);
    }
    let dir = &args[1];
    let (snapshots, files, new): (u64, u64, u64) = (
        args[2].parse().expect("SNAPSHOTS"),
        args[3].parse().expect("FILES"),
        args[4].parse().expect("NEW"),
    );
    let pw = std::env::var("BK_PASSWORD").expect("BK_PASSWORD");
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::new(dir));
    let repo = Repository::init(
        backend.clone(),
        &Secret::passphrase(pw),
        InitOptions::default(),
    )
    .expect("init");
    let keys = repo.keys().clone();
    let pack_size = repo.config().pack_size as usize;
    let listing_chunker = repo.listing_chunker();
    let mut packs: [PackBuilder; 2] = Default::default();
    let mut stored_meta: HashSet<ChunkId> = HashSet::new();
    let flush = |b: &mut PackBuilder| {
        let full = std::mem::take(b);
        let (id, bytes, entries) = full.finish(&keys);
        backend
            .put_owned(ObjectKind::Pack, &id.to_hex(), bytes)
            .expect("pack");
        repo.write_index(&IndexFile {
            supersedes: Vec::new(),
            packs: vec![(id, entries)],
        })
        .expect("index");
    };
    let chunk_data = |k: u64| format!("synthetic chunk {k:012} {}", "x".repeat(40)).into_bytes();
    let base = 1_700_000_000i64;
    for s in 0..snapshots {
        // Files [s*NEW, s*NEW + FILES): the first NEW are new in this one.
        let first = s * new;
        for k in first.max(if s == 0 { 0 } else { first + files - new })..first + files {
            let data = chunk_data(k);
            let id = ChunkId::digest(&data);
            let sealed = keys.seal(&blob_aad(BlobKind::Data, &id), &data, None);
            packs[0].add(BlobKind::Data, id, &sealed, data.len() as u32);
            if packs[0].len() >= pack_size {
                flush(&mut packs[0]);
            }
        }
        let mut listing = Vec::new();
        for k in first..first + files {
            let data = chunk_data(k);
            let mtime = Timestamp {
                secs: base + k as i64,
                nanos: 0,
            };
            let path = format!("d{:05}/f{k:09}", k / 1000);
            let mut e = Entry::file(
                &path,
                data.len() as u64,
                mtime,
                vec![ChunkId::digest(&data)],
            );
            (e.uid, e.gid) = (1000, 1000);
            wire::write_record(&mut listing, &Record::Entry(e)).expect("vec");
        }
        let mut ids = Vec::new();
        let mut start = 0;
        while start < listing.len() {
            let n = listing_chunker.cut(&listing[start..]);
            let bytes = &listing[start..start + n];
            let id = ChunkId::digest(bytes);
            if stored_meta.insert(id) {
                let sealed = keys.seal(&blob_aad(BlobKind::Meta, &id), bytes, Some(3));
                packs[1].add(BlobKind::Meta, id, &sealed, n as u32);
                if packs[1].len() >= pack_size {
                    flush(&mut packs[1]);
                }
            }
            ids.push(id);
            start += n;
        }
        // Snapshots are committed after their data, as bk-put does.
        for b in packs.iter_mut() {
            if !b.is_empty() {
                flush(b);
            }
        }
        let time = Timestamp {
            secs: base + s as i64 * 3600,
            nanos: 0,
        };
        repo.save_snapshot(&Snapshot {
            v: 1,
            time,
            identity: "synth@host:/data".into(),
            tags: Default::default(),
            source: "/data".into(),
            listing: ids,
            files,
            dirs: 0,
            entries: files,
            bytes: files * 60,
            errors: 0,
            parent: None,
            excluded: 0,
            xattrs: false,
            created: time,
            program: "synth_repo".into(),
            host: Some("host".into()),
        })
        .expect("snapshot");
    }
    eprintln!(
        "synth_repo: {snapshots} snapshots, {} distinct data chunks",
        (snapshots - 1) * new + files
    );
}
