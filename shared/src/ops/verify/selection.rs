//! Which packs `--read-data` reads: all, a stable slice, or a random share
//! or byte budget.

use super::*;

/// Which packs `--read-data` downloads.
#[derive(Debug, Clone, PartialEq)]
pub enum PackSelection {
    All,
    /// The `n`-th (1-based) of `m` slices: packs whose id's first 8 bytes
    /// (big-endian) are `n - 1` modulo `m`. Stable across runs, so `m` runs
    /// with `n = 1..=m` read every pack exactly once.
    Slice {
        n: u32,
        m: u32,
    },
    /// A random share of the packs (percent, 0 < p ≤ 100).
    Percent(f64),
    /// Random packs until this many bytes.
    Bytes(u64),
}

impl std::str::FromStr for PackSelection {
    type Err = String;

    /// `N/M`, `P%`, or a size such as `500M`, `2G`, `1.5T` (binary units;
    /// `K`, `M`, `G`, `T`, optionally followed by `iB` or `B`; a plain
    /// number is bytes).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        let bad = || format!("{s:?} is not N/M, P% or a size such as 500M or 2G");
        if let Some((n, m)) = s.split_once('/') {
            let n: u32 = n.trim().parse().map_err(|_| bad())?;
            let m: u32 = m.trim().parse().map_err(|_| bad())?;
            if m == 0 || n == 0 || n > m {
                return Err(format!("{s:?}: need 1 <= N <= M"));
            }
            return Ok(PackSelection::Slice { n, m });
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(format!(
                    "{s:?}: the percentage must be above 0 and at most 100"
                ));
            }
            return Ok(PackSelection::Percent(p));
        }
        match crate::format::human::parse_size(s) {
            Some(n) if n > 0 => Ok(PackSelection::Bytes(n)),
            _ => Err(bad()),
        }
    }
}

impl PackSelection {
    /// The slice (1-based, of `m`) that holds pack `id`.
    pub fn slice_of(id: &ObjectId, m: u32) -> u32 {
        let first = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
        (first % m as u64) as u32 + 1
    }

    /// Indices into `packs` (id, size) to read, in the order to read them.
    pub fn select(&self, packs: &[(ObjectId, u64)]) -> Vec<usize> {
        use rand::seq::SliceRandom;
        let mut all: Vec<usize> = (0..packs.len()).collect();
        match *self {
            PackSelection::All => all,
            PackSelection::Slice { n, m } => all
                .into_iter()
                .filter(|&i| Self::slice_of(&packs[i].0, m) == n)
                .collect(),
            PackSelection::Percent(p) => {
                all.shuffle(&mut rand::thread_rng());
                let want = ((packs.len() as f64) * p / 100.0).ceil() as usize;
                all.truncate(want.min(packs.len()));
                all.sort_unstable();
                all
            }
            PackSelection::Bytes(budget) => {
                all.shuffle(&mut rand::thread_rng());
                let mut used = 0u64;
                let mut out: Vec<usize> = all
                    .into_iter()
                    .filter(|&i| {
                        let fits = used.saturating_add(packs[i].1) <= budget;
                        if fits {
                            used += packs[i].1;
                        }
                        fits
                    })
                    .collect();
                out.sort_unstable();
                out
            }
        }
    }
}
