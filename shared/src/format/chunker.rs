//! Content-defined chunking: FastCDC (2020) with normalized chunking.
//!
//! The gear table is derived from a seed. A repository's keyed seed (derived
//! from its master key) makes chunk boundaries unpredictable to anyone without
//! the key, which blunts the chunk-size fingerprinting attack (an observer
//! confirming a known file from the sizes of its chunks). Without a
//! repository the public default seed is used; the stream header records which
//! one, so bk-put can warn when dedup against the repository will suffer.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;

/// Chunk size bounds. Chosen by measurement (see docs/ARCHITECTURE.md): a
/// 1 MiB average keeps the index small (about 1 entry per MiB) while a 1%
/// change in a tree still costs about 1% of new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.min >= 64 && self.min < self.avg && self.avg < self.max) {
            return Err(format!(
                "chunker sizes must satisfy 64 <= min < avg < max, got {self:?}"
            ));
        }
        if !self.avg.is_power_of_two() {
            return Err("chunker avg must be a power of two".into());
        }
        if self.max > 16 * 1024 * 1024 {
            return Err("chunker max must be at most 16 MiB".into());
        }
        Ok(())
    }
}

/// Seed of the public gear table used when no repository key is available.
pub const DEFAULT_SEED: [u8; 32] = *b"bk default gear table, version 1";

#[derive(Clone)]
pub struct Chunker {
    gear: Box<[u64; 256]>,
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("params", &self.params)
            .finish()
    }
}

fn high_mask(bits: u32) -> u64 {
    // Ones in the top `bits` positions: with a left-shifting gear hash the top
    // bits depend on the most recent 64 bytes, the widest window available.
    !0u64 << (64 - bits)
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: &[u8; 32]) -> Self {
        let mut gear = Box::new([0u64; 256]);
        for (block, out) in gear.chunks_mut(4).enumerate() {
            let mut h = Sha256::new();
            h.update(seed);
            h.update((block as u32).to_le_bytes());
            let d = h.finalize();
            for (i, g) in out.iter_mut().enumerate() {
                *g = u64::from_le_bytes(d[i * 8..i * 8 + 8].try_into().unwrap());
            }
        }
        let bits = params.avg.trailing_zeros();
        Chunker {
            gear,
            params,
            // Normalization level 2: harder to cut before avg, easier after.
            mask_s: high_mask(bits + 2),
            mask_l: high_mask(bits.saturating_sub(2).max(1)),
        }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Chunks of exactly `size` bytes from the start of the input (the
    /// last one shorter): for a SQLite database image, whose changes fall
    /// on its pages, content-defined cuts let scattered page changes
    /// rewrite nearly every ~1 MiB chunk (BENCHMARKS §8.1: 1% of rows
    /// updated made 100% of a 256 MiB database new with CDC, 2.4% with
    /// 4 KiB pages). With min = avg = max, [`Chunker::cut`] cuts at `size`.
    pub fn fixed(size: u32) -> Chunker {
        Chunker::new(
            ChunkerParams {
                min: size,
                avg: size,
                max: size,
            },
            &DEFAULT_SEED,
        )
    }

    /// Length of the first chunk of `src`. `src` must hold at least `max`
    /// bytes unless it is the end of the input.
    pub fn cut(&self, src: &[u8]) -> usize {
        let n = src.len();
        let min = self.params.min as usize;
        if n <= min {
            return n;
        }
        let max = n.min(self.params.max as usize);
        let normal = max.min(self.params.avg as usize);
        let gear = &*self.gear;
        let mut h: u64 = 0;
        let mut i = min;
        while i < normal {
            h = (h << 1).wrapping_add(gear[src[i] as usize]);
            if h & self.mask_s == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < max {
            h = (h << 1).wrapping_add(gear[src[i] as usize]);
            if h & self.mask_l == 0 {
                return i + 1;
            }
            i += 1;
        }
        max
    }

    /// Splits everything `reader` yields, calling `sink` with each chunk in
    /// order. Returns the number of bytes read.
    pub fn chunk_reader<R: Read, E: From<std::io::Error>>(
        &self,
        reader: R,
        sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        self.chunk_reader_with(&mut Vec::new(), reader, sink)
    }

    /// Like [`Chunker::chunk_reader`], reusing `buf` across calls (trees of
    /// small files would otherwise allocate a large buffer per file).
    pub fn chunk_reader_with<R: Read, E: From<std::io::Error>>(
        &self,
        buf: &mut Vec<u8>,
        mut reader: R,
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max as usize;
        let cap = max * 2;
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let mut start = 0usize;
        let mut end = 0usize;
        let mut eof = false;
        let mut total = 0u64;
        loop {
            // Refill until we hold a full max-size window or reach EOF.
            while !eof && end - start < max {
                if end == cap {
                    buf.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                }
                match reader.read(&mut buf[end..]) {
                    Ok(0) => eof = true,
                    Ok(k) => {
                        end += k;
                        total += k as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if start == end {
                return Ok(total);
            }
            let len = self.cut(&buf[start..end]);
            sink(&buf[start..start + len])?;
            start += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fixed_chunks_are_exactly_their_size_and_aligned() {
        let data = pseudo_random(10 * 4096 + 100, 7);
        let mut lens = Vec::new();
        Chunker::fixed(4096)
            .chunk_reader::<_, std::io::Error>(&data[..], |c| {
                lens.push(c.len());
                Ok(())
            })
            .unwrap();
        assert_eq!(lens, [vec![4096; 10], vec![100]].concat());
    }

    fn small() -> ChunkerParams {
        ChunkerParams {
            min: 64,
            avg: 256,
            max: 1024,
        }
    }

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn chunks_of(c: &Chunker, data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        c.chunk_reader::<_, std::io::Error>(data, |ch| {
            out.push(ch.to_vec());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn boundaries_resync_after_an_insertion() {
        let c = Chunker::new(ChunkerParams::default(), &DEFAULT_SEED);
        let data = pseudo_random(16 << 20, 7);
        let mut edited = data.clone();
        edited.splice(5_000_000..5_000_000, b"inserted bytes".iter().copied());
        let a: std::collections::HashSet<_> = chunks_of(&c, &data).into_iter().collect();
        let b = chunks_of(&c, &edited);
        let shared = b.iter().filter(|ch| a.contains(*ch)).count();
        assert!(b.len() >= 8, "expected several chunks, got {}", b.len());
        assert!(
            shared + 2 >= b.len(),
            "only {shared} of {} chunks survived an insertion",
            b.len()
        );
    }

    #[test]
    fn keyed_seed_changes_boundaries() {
        let data = pseudo_random(8 << 20, 3);
        let a = chunks_of(
            &Chunker::new(ChunkerParams::default(), &DEFAULT_SEED),
            &data,
        );
        let b = chunks_of(&Chunker::new(ChunkerParams::default(), &[9u8; 32]), &data);
        assert_ne!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            b.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_input_and_respect_bounds(len in 0usize..20_000, seed in any::<u64>()) {
            let c = Chunker::new(small(), &DEFAULT_SEED);
            let data = pseudo_random(len, seed);
            let chunks = chunks_of(&c, &data);
            let joined: Vec<u8> = chunks.concat();
            prop_assert_eq!(&joined, &data);
            for (i, ch) in chunks.iter().enumerate() {
                prop_assert!(ch.len() <= 1024);
                if i + 1 < chunks.len() { prop_assert!(ch.len() >= 64); }
                prop_assert!(!ch.is_empty());
            }
        }

        #[test]
        fn reader_block_size_does_not_change_chunks(len in 0usize..20_000, seed in any::<u64>(), step in 1usize..3000) {
            struct Dribble<'a>(&'a [u8], usize);
            impl std::io::Read for Dribble<'_> {
                fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                    let n = self.0.len().min(buf.len()).min(self.1);
                    buf[..n].copy_from_slice(&self.0[..n]);
                    self.0 = &self.0[n..];
                    Ok(n)
                }
            }
            let c = Chunker::new(small(), &DEFAULT_SEED);
            let data = pseudo_random(len, seed);
            let whole = chunks_of(&c, &data);
            let mut dribbled = Vec::new();
            c.chunk_reader::<_, std::io::Error>(Dribble(&data, step), |ch| { dribbled.push(ch.to_vec()); Ok(()) }).unwrap();
            prop_assert_eq!(whole, dribbled);
        }
    }
}
