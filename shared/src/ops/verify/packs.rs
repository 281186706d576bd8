//! Packs: every index entry lies inside a stored pack, and (`--read-data`)
//! every selected pack's bytes, header and blobs check out.

use super::*;

impl Verifier<'_> {
    /// Every index entry lies inside an existing pack; unreferenced packs
    /// are garbage.
    pub(super) fn check_pack_references(
        &self,
        packs: &[(ObjectId, u64)],
        idx: &IndexObjects,
        index: &Index,
    ) {
        let sizes: HashMap<ObjectId, u64> = packs.iter().copied().collect();
        let resolved_here = |id: &ChunkId, pack: &ObjectId, offset: u32| {
            index
                .get(id)
                .is_some_and(|l| l.pack == *pack && l.offset == offset)
        };
        for (pack, places) in &idx.by_pack {
            let names: BTreeSet<&str> = places
                .iter()
                .map(|(fi, _)| idx.active[*fi].0.as_str())
                .collect();
            let named_by = names
                .iter()
                .map(|n| format!("index/{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let entries = places
                .iter()
                .flat_map(|(fi, pi)| idx.active[*fi].1.packs[*pi].1.iter());
            match sizes.get(pack) {
                None => {
                    let entries: Vec<&BlobEntry> = entries.collect();
                    let chunks = entries
                        .iter()
                        .filter(|e| resolved_here(&e.id, pack, e.offset))
                        .map(|e| e.id)
                        .collect();
                    self.report.push_rechecked(
                        Recheck::PackMissing(*pack),
                        error_finding(
                            "pack",
                            pack_path(pack),
                            format!("missing: {named_by} lists {} blob(s) in it", entries.len()),
                        ),
                        chunks,
                        false,
                    );
                }
                Some(&size) => {
                    let beyond: Vec<&BlobEntry> = entries
                        .filter(|e| e.offset as u64 + e.len as u64 + 8 > size)
                        .collect();
                    if !beyond.is_empty() {
                        self.report.push(
                            Severity::Error,
                            "pack",
                            pack_path(pack),
                            format!(
                                "truncated or replaced: {} blob(s) that {named_by} lists end beyond its size ({size} bytes)",
                                beyond.len()
                            ),
                            beyond
                                .iter()
                                .filter(|e| resolved_here(&e.id, pack, e.offset))
                                .map(|e| e.id)
                                .collect(),
                            Vec::new(),
                            Vec::new(),
                        );
                    }
                }
            }
        }
        for (pack, size) in packs {
            if !idx.by_pack.contains_key(pack) {
                self.report.add(
                    Severity::Info,
                    "pack",
                    pack_path(pack),
                    format!("garbage: no index object names this pack ({size} bytes)"),
                );
            }
        }
    }

    /// Downloads the selected packs and checks everything in them. Returns
    /// (packs, bytes, blobs) checked.
    pub(super) fn read_data(
        &self,
        sel: &PackSelection,
        packs: &[(ObjectId, u64)],
        idx: &IndexObjects,
        index: &Index,
        threads: usize,
        progress: Option<&crate::ops::progress::Progress>,
    ) -> Result<(u64, u64, u64)> {
        let chosen: Vec<(ObjectId, u64)> =
            sel.select(packs).into_iter().map(|i| packs[i]).collect();
        let largest = chosen.iter().map(|p| p.1).max().unwrap_or(1).max(1);
        let threads = if threads == 0 {
            // Twice the CPUs, like restores: reading a pack and checking
            // the previous one overlap.
            std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4)
                .clamp(2, 8)
        } else {
            threads
        };
        // Whole packs are held in memory: bound the total.
        let threads = threads.min((READ_MEMORY / largest).max(1) as usize);
        let bytes = AtomicU64::new(0);
        let blobs = AtomicU64::new(0);
        if let Some(p) = progress {
            p.set_totals(chosen.len() as u64, chosen.iter().map(|c| c.1).sum());
        }
        parallel_map(&chosen, threads, |(id, size)| {
            crate::sys::check_interrupted()?;
            let (b, n) = self.check_pack(id, *size, idx, index);
            bytes.fetch_add(b, Ordering::Relaxed);
            blobs.fetch_add(n, Ordering::Relaxed);
            if let Some(p) = progress {
                p.add_item();
                p.add_bytes(*size);
            }
            Ok(())
        })?;
        Ok((chosen.len() as u64, bytes.into_inner(), blobs.into_inner()))
    }

    /// Checks one whole pack; returns (bytes read, blobs checked).
    pub(super) fn check_pack(
        &self,
        id: &ObjectId,
        size: u64,
        idx: &IndexObjects,
        index: &Index,
    ) -> (u64, u64) {
        let hex = id.to_hex();
        let object = pack_path(id);
        let backend = self.repo.backend();
        let raw = match backend.get(ObjectKind::Pack, &hex) {
            Ok(r) => r,
            // Backends that check names on whole reads (S3) refuse a
            // damaged pack; read it by range to find out which blobs are
            // damaged and what they affect (the name is checked below).
            Err(e @ Error::Integrity { .. }) => {
                match backend.get_range_upto(ObjectKind::Pack, &hex, 0, size) {
                    Ok(r) if size > 0 && !r.is_empty() => r,
                    _ => {
                        self.report.failure("pack", &object, &e);
                        return (0, 0);
                    }
                }
            }
            // Listed moments ago: a missing pack that an index names is
            // already reported by the structure check.
            Err(e) if e.is_not_found() => return (0, 0),
            Err(e) => {
                self.report.failure("pack", &object, &e);
                return (0, 0);
            }
        };
        let referenced = idx.by_pack.get(id);
        let severity = if referenced.is_some() {
            Severity::Error
        } else {
            Severity::Warning
        };
        let garbage_note = if referenced.is_some() {
            ""
        } else {
            " (an unreferenced pack: no snapshot is affected)"
        };
        if ObjectId::digest(&raw) != *id {
            self.report.add(
                severity,
                "pack",
                object.clone(),
                format!("content does not match its name (damaged or replaced){garbage_note}"),
            );
        }
        let header = match read_header(self.repo.keys(), &hex, &raw) {
            Ok(h) => Some(h),
            Err(e) => {
                let msg = match e {
                    Error::Integrity { message, .. } => message,
                    e => e.to_string(),
                };
                self.report.add(
                    severity,
                    "pack",
                    object.clone(),
                    format!("pack header unreadable: {msg}{garbage_note}"),
                );
                None
            }
        };
        type Key = (u8, ChunkId, u32, u32, u32);
        let key = |e: &BlobEntry| (e.kind as u8, e.id, e.offset, e.len, e.raw_len);
        let mut indexed: Vec<BlobEntry> = Vec::new();
        let mut index_names = BTreeSet::new();
        if let Some(places) = referenced {
            let mut seen: HashSet<Key> = HashSet::new();
            for (fi, pi) in places {
                index_names.insert(format!("index/{}", idx.active[*fi].0));
                for e in &idx.active[*fi].1.packs[*pi].1 {
                    if seen.insert(key(e)) {
                        indexed.push(*e);
                    }
                }
            }
        }
        let mut blobs: Vec<BlobEntry> = indexed.clone();
        if let Some(h) = &header {
            let in_header: HashSet<Key> = h.iter().map(key).collect();
            let in_index: HashSet<Key> = indexed.iter().map(key).collect();
            if referenced.is_some() {
                let absent: Vec<&BlobEntry> = indexed
                    .iter()
                    .filter(|e| !in_header.contains(&key(e)))
                    .collect();
                if let Some(first) = absent.first() {
                    self.report.add(
                        Severity::Error,
                        "pack",
                        object.clone(),
                        format!(
                            "the index ({}) lists {} blob(s) the pack header does not have (first: chunk {} at offset {})",
                            index_names.iter().cloned().collect::<Vec<_>>().join(", "),
                            absent.len(),
                            first.id,
                            first.offset
                        ),
                    );
                }
                let extra = h.iter().filter(|e| !in_index.contains(&key(e))).count();
                if extra > 0 {
                    self.report.add(
                        Severity::Warning,
                        "pack",
                        object.clone(),
                        format!("{extra} blob(s) in the pack header are in no index object"),
                    );
                }
            }
            blobs.extend(h.iter().filter(|e| !in_index.contains(&key(e))).copied());
        }
        let mut damaged: Vec<(BlobEntry, String)> = Vec::new();
        for e in &blobs {
            let (start, end) = (e.offset as usize, e.offset as usize + e.len as usize);
            let Some(sealed) = raw.get(start..end) else {
                damaged.push((
                    *e,
                    format!("lies beyond the pack's end ({} bytes)", raw.len()),
                ));
                continue;
            };
            match self.repo.open_blob(&e.id, e.kind, &hex, sealed) {
                Ok(data) if data.len() != e.raw_len as usize => damaged.push((
                    *e,
                    format!("{} bytes, its entry says {}", data.len(), e.raw_len),
                )),
                Ok(_) => {}
                Err(Error::Integrity { message, .. }) => damaged.push((
                    *e,
                    message
                        .strip_prefix(&format!("chunk {}: ", e.id))
                        .unwrap_or(&message)
                        .to_string(),
                )),
                Err(err) => damaged.push((*e, err.to_string())),
            }
        }
        if !damaged.is_empty() {
            let detail: Vec<String> = damaged
                .iter()
                .take(3)
                .map(|(e, m)| {
                    let kind = if e.kind == BlobKind::Meta {
                        "listing chunk"
                    } else {
                        "chunk"
                    };
                    format!("{kind} {} at offset {}: {m}", e.id, e.offset)
                })
                .collect();
            let chunks = damaged
                .iter()
                .filter(|(e, _)| {
                    index
                        .get(&e.id)
                        .is_some_and(|l| l.pack == *id && l.offset == e.offset)
                })
                .map(|(e, _)| e.id)
                .collect();
            self.report.push(
                severity,
                "pack",
                object,
                format!(
                    "{} of {} blob(s) damaged{garbage_note}: {}{}",
                    damaged.len(),
                    blobs.len(),
                    detail.join("; "),
                    if damaged.len() > 3 { "; …" } else { "" }
                ),
                chunks,
                Vec::new(),
                Vec::new(),
            );
        }
        (raw.len() as u64, blobs.len() as u64)
    }
}
