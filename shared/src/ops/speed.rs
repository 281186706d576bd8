//! Single-core rates of the building blocks every backed-up byte passes
//! through (`bk-repo benchmark`).
//!
//! A benchmark that says "bk backs up at 200 MB/s" means little without the
//! machine's ceiling: how fast one core can chunk, hash, compress and seal
//! the same bytes. These figures are that ceiling, measured the same way on
//! every machine, so `scripts/bench` can report bk's throughput as a share
//! of it and a profile can be read against it. Nothing here touches a
//! repository or the disk.

use crate::format::chunker::{Chunker, ChunkerParams};
use crate::format::crypto::MasterKey;
use crate::format::id::ChunkId;
use std::time::{Duration, Instant};

/// One measured building block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSpeed {
    /// `chunker`, `sha256`, `zstd`, `aes256gcm` or `pipeline` (all of them
    /// in sequence on one core, as bk-chunk and bk-put run them).
    pub block: &'static str,
    /// Bytes of input per second, in MB (10^6).
    pub mb_per_s: f64,
    pub detail: String,
}

impl BlockSpeed {
    /// As `bk-repo benchmark` prints it, the rate rounded to 0.1 MB/s.
    pub fn record(&self) -> crate::format::wire::SpeedRecord {
        crate::format::wire::SpeedRecord {
            v: crate::format::wire::VERSION,
            block: self.block.to_string(),
            mb_per_s: (self.mb_per_s * 10.0).round() / 10.0,
            detail: self.detail.clone(),
        }
    }
}

/// Deterministic sample data like a real tree: half text-like (compressible
/// about 3-4× by zstd -3), half incompressible, alternating in 1 MiB runs
/// so chunks of either kind occur.
pub fn sample_data(len: usize) -> Vec<u8> {
    const RUN: usize = 1 << 20;
    const WORDS: [&str; 16] = [
        "fn ", "let ", "struct ", "impl ", "return ", "match ", "Some(", "None", "self.", "usize",
        "\n    ", "=> ", "{ ", "} ", "// ", "error",
    ];
    let mut out = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        // xorshift64*: fast, deterministic, good enough to defeat zstd.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut run = 0usize;
    while out.len() < len {
        let end = (out.len() + RUN).min(len);
        if run.is_multiple_of(2) {
            while out.len() < end {
                let r = next();
                out.extend_from_slice(WORDS[(r & 15) as usize].as_bytes());
                out.extend_from_slice(format!("v{}", (r >> 8) % 1000).as_bytes());
            }
            out.truncate(end);
        } else {
            while out.len() < end {
                out.extend_from_slice(&next().to_le_bytes());
            }
            out.truncate(end);
        }
        run += 1;
    }
    out
}

/// Runs `pass` over `data` until at least `budget` has elapsed (and at
/// least once); returns MB/s of input.
fn rate(data: &[u8], budget: Duration, mut pass: impl FnMut(&[u8])) -> f64 {
    let start = Instant::now();
    let mut bytes = 0u64;
    loop {
        pass(data);
        bytes += data.len() as u64;
        if start.elapsed() >= budget {
            break;
        }
    }
    bytes as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Splits `data` with the default chunker, as bk-chunk does.
fn chunks<'a>(chunker: &Chunker, mut data: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let n = chunker.cut(data);
        out.push(&data[..n]);
        data = &data[n..];
    }
    out
}

/// Measures every block on `data` for about `budget` each, compressing at
/// zstd `level` (the repository's default when the caller has none).
pub fn measure(data: &[u8], budget: Duration, level: i32) -> Vec<BlockSpeed> {
    let chunker = Chunker::new(ChunkerParams::default(), &[7u8; 32]);
    let keys = MasterKey::generate().derive();
    let pieces = chunks(&chunker, data);
    let n_chunks = pieces.len();
    let mut out = Vec::new();

    let r = rate(data, budget, |d| {
        std::hint::black_box(chunks(&chunker, d).len());
    });
    out.push(BlockSpeed {
        block: "chunker",
        mb_per_s: r,
        detail: format!("gear CDC, 1 MiB average, {n_chunks} chunks per pass"),
    });
    let r = rate(data, budget, |_| {
        for p in &pieces {
            std::hint::black_box(ChunkId::digest(p));
        }
    });
    out.push(BlockSpeed {
        block: "sha256",
        mb_per_s: r,
        detail: "chunk ids (sha2 crate)".into(),
    });
    let mut compressed = 0usize;
    let r = rate(data, budget, |_| {
        compressed = 0;
        for p in &pieces {
            compressed += zstd::bulk::compress(p, level).map(|c| c.len()).unwrap_or(0);
        }
    });
    out.push(BlockSpeed {
        block: "zstd",
        mb_per_s: r,
        detail: format!(
            "level {level}, ratio {:.2}",
            data.len() as f64 / compressed.max(1) as f64
        ),
    });
    let r = rate(data, budget, |_| {
        for p in &pieces {
            std::hint::black_box(keys.seal(b"bench", p, None).len());
        }
    });
    out.push(BlockSpeed {
        block: "aes256gcm",
        mb_per_s: r,
        detail: "seal without compression".into(),
    });
    let r = rate(data, budget, |d| {
        for p in chunks(&chunker, d) {
            let id = ChunkId::digest(p);
            std::hint::black_box(keys.seal(&id.0, p, Some(level)).len());
        }
    });
    out.push(BlockSpeed {
        block: "pipeline",
        mb_per_s: r,
        detail: format!("chunk + sha256 + zstd {level} + seal on one core"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_data_is_deterministic_and_half_compressible() {
        let a = sample_data(4 << 20);
        assert_eq!(a, sample_data(4 << 20));
        assert_eq!(a.len(), 4 << 20);
        let packed = zstd::bulk::compress(&a, 3).unwrap();
        let ratio = a.len() as f64 / packed.len() as f64;
        // Half incompressible bounds the ratio below 2; the text half must
        // still compress well.
        assert!(ratio > 1.3 && ratio < 2.0, "ratio {ratio}");
    }

    #[test]
    fn measure_reports_every_block() {
        let data = sample_data(2 << 20);
        let got = measure(&data, Duration::from_millis(1), 3);
        let names: Vec<_> = got.iter().map(|b| b.block).collect();
        assert_eq!(
            names,
            ["chunker", "sha256", "zstd", "aes256gcm", "pipeline"]
        );
        assert!(got
            .iter()
            .all(|b| b.mb_per_s.is_finite() && b.mb_per_s > 0.0));
    }
}
