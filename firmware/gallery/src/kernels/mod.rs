//! Hamming distance kernels, one per instruction set, picked at run time.
//!
//! Every kernel computes the same thing: for each row of `words` 64-bit words, the number of
//! differing bits with the query. Rows are padded with zeros, and so is the query, so padding
//! never counts.

#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

use crate::error::{GalleryError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

/// A distance kernel that this CPU can run (only constructible when it can).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel(Isa);

/// Queries one call of [`Kernel::distances_many`] handles together.
pub(crate) const QUERY_TILE: usize = 4;

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn best() -> Kernel {
        *Kernel::available()
            .first()
            .expect("portable is always available")
    }

    /// Every kernel this CPU supports, fastest first.
    pub fn available() -> Vec<Kernel> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
                && std::arch::is_x86_feature_detected!("avx512ifma")
            {
                out.push(Kernel(Isa::Avx512));
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("popcnt")
            {
                out.push(Kernel(Isa::Avx2));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            out.push(Kernel(Isa::Neon));
        }
        out.push(Kernel(Isa::Portable));
        out
    }

    /// The portable kernel (plain Rust, any CPU).
    pub fn portable() -> Kernel {
        Kernel(Isa::Portable)
    }

    /// A kernel by name (`avx512-vpopcntdq`, `avx2`, `neon`, `portable`), if this CPU runs it.
    pub fn from_name(name: &str) -> Result<Kernel> {
        Kernel::available()
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Kernel::available().iter().map(|k| k.name()).collect();
                GalleryError::KernelUnavailable {
                    name: name.to_string(),
                    available: names.join(", "),
                }
            })
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            Isa::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512-vpopcntdq",
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => "neon",
        }
    }

    /// `out[r]` = Hamming distance between `query` and row `r` of `rows`
    /// (`rows.len() == out.len() * query.len()`).
    pub fn distances(self, query: &[u64], rows: &[u64], out: &mut [u32]) {
        assert_eq!(rows.len(), out.len() * query.len(), "rows do not match out");
        match self.0 {
            Isa::Portable => portable::distances(query, rows, out),
            // SAFETY: a Kernel of this Isa exists only when the CPU reported the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::avx2_distances(query, rows, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::avx512_distances(query, rows, out) },
            // SAFETY: as above.
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => unsafe { neon::distances(query, rows, out) },
        }
    }

    /// The smallest distance of a group (the top-K update skips groups above its threshold).
    #[inline]
    pub(crate) fn min(self, distances: &[u32]) -> u32 {
        match self.0 {
            // SAFETY: a Kernel of this Isa exists only when the CPU reported the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::avx2_min(distances) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { x86::avx512_min(distances) },
            _ => distances.iter().copied().fold(u32::MAX, u32::min),
        }
    }

    /// For up to [`QUERY_TILE`] queries (`queries.len() == nq * words`) against the same rows:
    /// `out[q * nrows + r]` = distance of query `q` to row `r`. Each row is loaded once for all
    /// queries of the tile.
    pub fn distances_many(self, queries: &[u64], words: usize, rows: &[u64], out: &mut [u32]) {
        let nq = queries.len() / words;
        assert!(
            nq <= QUERY_TILE && queries.len() == nq * words,
            "bad query tile"
        );
        let nrows = rows.len() / words;
        assert_eq!(out.len(), nq * nrows, "out does not match queries x rows");
        match self.0 {
            // SAFETY: a Kernel of this Isa exists only when the CPU reported the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if nq == QUERY_TILE => unsafe {
                x86::avx512_distances_tile(queries, words, rows, out)
            },
            _ => {
                for (q, o) in queries.chunks_exact(words).zip(out.chunks_exact_mut(nrows)) {
                    self.distances(q, rows, o);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    /// Every kernel of this CPU agrees with the portable one, on every supported width.
    #[test]
    fn every_kernel_matches_portable() {
        let mut rng = StdRng::seed_from_u64(7);
        let kernels = Kernel::available();
        println!(
            "kernels on this CPU: {:?}",
            kernels.iter().map(|k| k.name()).collect::<Vec<_>>()
        );
        for bits in (64..=4096).step_by(8) {
            let words = (bits as usize).div_ceil(64);
            let mask_last = if bits % 64 == 0 {
                u64::MAX
            } else {
                (1u64 << (bits % 64)) - 1
            };
            let nrows = 37;
            let gen_row = |rng: &mut StdRng| {
                let mut v: Vec<u64> = (0..words).map(|_| rng.random()).collect();
                *v.last_mut().unwrap() &= mask_last;
                v
            };
            let queries: Vec<u64> = (0..QUERY_TILE).flat_map(|_| gen_row(&mut rng)).collect();
            let rows: Vec<u64> = (0..nrows).flat_map(|_| gen_row(&mut rng)).collect();
            let mut want = vec![0u32; QUERY_TILE * nrows];
            Kernel::portable().distances_many(&queries, words, &rows, &mut want);
            // The portable kernel against the definition.
            let q0 = &queries[..words];
            let r0 = &rows[..words];
            let by_def: u32 = q0.iter().zip(r0).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert_eq!(want[0], by_def);
            for k in &kernels {
                let mut got = vec![0u32; QUERY_TILE * nrows];
                k.distances_many(&queries, words, &rows, &mut got);
                assert_eq!(got, want, "{} tile, {bits} bits", k.name());
                let mut one = vec![0u32; nrows];
                k.distances(&queries[..words], &rows, &mut one);
                assert_eq!(one, want[..nrows], "{} single, {bits} bits", k.name());
            }
        }
    }

    #[test]
    fn extreme_distances() {
        for k in Kernel::available() {
            for words in [1usize, 4, 12, 32, 64] {
                let q = vec![0u64; words];
                let rows = [vec![0u64; words], vec![u64::MAX; words]].concat();
                let mut out = [0u32; 2];
                k.distances(&q, &rows, &mut out);
                assert_eq!(out, [0, 64 * words as u32], "{}", k.name());
            }
        }
    }

    #[test]
    fn unknown_kernel_is_an_error() {
        let err = Kernel::from_name("sse9").unwrap_err().to_string();
        assert!(err.contains("sse9") && err.contains("portable"), "{err}");
    }
}
